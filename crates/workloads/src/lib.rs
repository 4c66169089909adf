//! Test workloads for the profiler's integration tests.
//!
//! Each [`Kind`] is a small program, built **without frame pointers**, whose
//! CPU time is spent almost entirely (well over 99 %) in a known call chain
//! from `main` to a busy leaf. The sources are plain files under `src/c`,
//! `src/cpp` and `src/rust`, embedded in this crate and compiled at test time
//! by the real toolchain (no build script):
//!
//! | kind | compiled with | expected chain(s), root first |
//! | --- | --- | --- |
//! | [`Kind::CChains`] | `gcc -O2 -fomit-frame-pointer -g` | `main chain_a chain_b chain_c`, `main chain_x chain_y` (about half the time each) |
//! | [`Kind::CppTemplates`] | `g++ -O3 -fomit-frame-pointer -g` | `main Pipeline<Xorshift64>::run` + 64 × `Pipeline<Xorshift64>::recurse` + `Spinner<Xorshift64>::spin` |
//! | [`Kind::RustRelease`] | `rustc -C opt-level=3 -C debuginfo=1 -C force-frame-pointers=no --edition 2021` (linked by rustc's default LLD) | `rust_release::main rust_chain_outer rust_chain_middle rust_chain_leaf` |
//! | [`Kind::DlopenLate`] | `gcc -O2 -fomit-frame-pointer -g`; `libdl_work.so` also `-fPIC -shared` | `main dl_work_outer dl_work_leaf` (after a 300 ms sleep, then `dlopen`) |
//! | [`Kind::Forker`] | `gcc -O2 -fomit-frame-pointer -g -Wl,-z,now` | `main child_work child_leaf` (in the forked children) |
//! | [`Kind::SyscallHeavy`] | `gcc -O2 -fomit-frame-pointer -g` | `main sys_outer sys_loop` (then libc `syscall` and kernel frames below) |
//!
//! Go programs (which keep frame pointers but have no `.eh_frame`) are in
//! [`go`]: a chain and a cgo callback, built normal, stripped and
//! `-trimpath` by Go 1.19, 1.22 and 1.24.
//!
//! Every chain function is `noinline` (C/C++: `__attribute__((noinline,
//! noipa))`, Rust: `#[inline(never)]`) and uses its callee's result after the
//! call, so no call in a chain is a tail call; [`verify_calls`] checks that in
//! the disassembly (and that no chain function sets up a frame pointer).
//!
//! Names in expected chains are in the form of [`normalize_symbol`]: demangled,
//! without parameter list, Rust hash, GCC clone suffix or symbol version. A
//! symbolizer's output is compared after normalizing it the same way, which
//! [`full_chain_share`] does.
//!
//! ```no_run
//! use std::time::Duration;
//! use workloads::{full_chain_share, spawn, Kind};
//!
//! let running = spawn(Kind::CChains, Some(Duration::from_secs(5))).unwrap();
//! let pid = running.pid();
//! // ... profile `pid`, collect (root-first frame names, count) pairs ...
//! let stacks: Vec<(Vec<String>, u64)> = Vec::new();
//! let share = full_chain_share(&stacks, &Kind::CChains.expected_chains());
//! # let _ = (pid, share);
//! drop(running); // kills the whole process group and reaps it
//! ```

pub mod go;
pub mod python;

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long [`Kind::DlopenLate`] sleeps before it `dlopen`s its library.
pub const DLOPEN_DELAY: Duration = Duration::from_millis(300);

/// Number of `Pipeline<Xorshift64>::recurse` frames in [`Kind::CppTemplates`].
pub const CPP_RECURSION_DEPTH: usize = 64;

/// One of the workload programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// C, two chains alternating: `main→chain_a→chain_b→chain_c` and
    /// `main→chain_x→chain_y`, about half the time each.
    CChains,
    /// C++ class templates and a 64-deep recursion:
    /// `main→Pipeline<Xorshift64>::run→Pipeline<Xorshift64>::recurse×64→Spinner<Xorshift64>::spin`.
    CppTemplates,
    /// Rust, compiled by `rustc` directly and linked by LLD (text segment
    /// virtual address ≠ file offset):
    /// `rust_release::main→rust_chain_outer→rust_chain_middle→rust_chain_leaf`.
    RustRelease,
    /// C; sleeps [`DLOPEN_DELAY`], then `dlopen`s `libdl_work.so` (in
    /// [`Built::extra`]) and calls into it through a function pointer:
    /// `main→dl_work_outer→dl_work_leaf`.
    DlopenLate,
    /// C; forks a short-lived child about 12 times a second (each burns
    /// ~100 ms in `main→child_work→child_leaf`, then `_exit`s). The children
    /// run the same executable, so their `comm` is [`Kind::comm`]. The parent
    /// sleeps in `waitpid`/`nanosleep` and takes almost no samples.
    Forker,
    /// C; a loop of cheap system calls (`getppid`, 256-byte `read` of
    /// `/dev/zero`, through libc `syscall(3)`): `main→sys_outer→sys_loop`,
    /// with libc `syscall` and kernel frames below in most samples.
    SyscallHeavy,
}

impl Kind {
    /// All workloads.
    pub const ALL: [Kind; 6] = [
        Kind::CChains,
        Kind::CppTemplates,
        Kind::RustRelease,
        Kind::DlopenLate,
        Kind::Forker,
        Kind::SyscallHeavy,
    ];

    /// File name of the executable (also the process name).
    pub fn exe_name(&self) -> &'static str {
        match self {
            Kind::CChains => "c_chains",
            Kind::CppTemplates => "cpp_templates",
            Kind::RustRelease => "rust_release",
            Kind::DlopenLate => "dlopen_late",
            Kind::Forker => "forker",
            Kind::SyscallHeavy => "syscall_heavy",
        }
    }

    /// The `comm` of the workload's processes (`/proc/PID/comm`,
    /// `bpf_get_current_comm`): the exe name cut to 15 bytes. For
    /// [`Kind::Forker`] this is also the `comm` of every forked child.
    pub fn comm(&self) -> &'static str {
        let name = self.exe_name();
        &name[..name.len().min(15)]
    }

    /// The call chains the workload spends its CPU time in, each root first
    /// (from the user `main` to the busy leaf), in [`normalize_symbol`] form.
    /// A sample is expected to contain one of them as a contiguous run of
    /// frames; frames above `main` (`_start`, `__libc_start_call_main`, Rust's
    /// `std::rt::lang_start` machinery) and below the leaf (libc `syscall`,
    /// kernel frames) may surround it.
    pub fn expected_chains(&self) -> Vec<Vec<&'static str>> {
        match self {
            Kind::CChains => vec![
                vec!["main", "chain_a", "chain_b", "chain_c"],
                vec!["main", "chain_x", "chain_y"],
            ],
            Kind::CppTemplates => {
                let mut chain = vec!["main", "Pipeline<Xorshift64>::run"];
                chain.extend(std::iter::repeat_n(
                    "Pipeline<Xorshift64>::recurse",
                    CPP_RECURSION_DEPTH,
                ));
                chain.push("Spinner<Xorshift64>::spin");
                vec![chain]
            }
            Kind::RustRelease => vec![vec![
                "rust_release::main",
                "rust_chain_outer",
                "rust_chain_middle",
                "rust_chain_leaf",
            ]],
            Kind::DlopenLate => vec![vec!["main", "dl_work_outer", "dl_work_leaf"]],
            Kind::Forker => vec![vec!["main", "child_work", "child_leaf"]],
            Kind::SyscallHeavy => vec![vec!["main", "sys_outer", "sys_loop"]],
        }
    }

    /// The calls of the expected chains, for [`verify_calls`]: every one must
    /// be a real `call` (never a `jmp`) in the caller's machine code.
    pub fn call_edges(&self) -> Vec<CallEdge> {
        let direct = |object: &'static str, caller: &'static str, callee: &'static str| CallEdge {
            object,
            caller,
            callee: Callee::Direct(callee),
        };
        let exe = self.exe_name();
        match self {
            Kind::CChains => vec![
                direct(exe, "main", "chain_a"),
                direct(exe, "chain_a", "chain_b"),
                direct(exe, "chain_b", "chain_c"),
                direct(exe, "main", "chain_x"),
                direct(exe, "chain_x", "chain_y"),
            ],
            Kind::CppTemplates => vec![
                direct(exe, "main", "Pipeline<Xorshift64>::run"),
                direct(
                    exe,
                    "Pipeline<Xorshift64>::run",
                    "Pipeline<Xorshift64>::recurse",
                ),
                direct(
                    exe,
                    "Pipeline<Xorshift64>::recurse",
                    "Pipeline<Xorshift64>::recurse",
                ),
                direct(
                    exe,
                    "Pipeline<Xorshift64>::recurse",
                    "Spinner<Xorshift64>::spin",
                ),
            ],
            Kind::RustRelease => vec![
                direct(exe, "rust_release::main", "rust_chain_outer"),
                direct(exe, "rust_chain_outer", "rust_chain_middle"),
                direct(exe, "rust_chain_middle", "rust_chain_leaf"),
            ],
            Kind::DlopenLate => vec![
                CallEdge {
                    object: exe,
                    caller: "main",
                    callee: Callee::Indirect,
                },
                direct(DL_WORK_SO, "dl_work_outer", "dl_work_leaf"),
            ],
            Kind::Forker => vec![
                direct(exe, "main", "child_work"),
                direct(exe, "child_work", "child_leaf"),
            ],
            Kind::SyscallHeavy => vec![
                direct(exe, "main", "sys_outer"),
                direct(exe, "sys_outer", "sys_loop"),
                direct(exe, "sys_loop", "syscall"),
            ],
        }
    }

    fn recipe(&self) -> Recipe {
        const C_FLAGS: &[&str] = &["-O2", "-fomit-frame-pointer", "-g"];
        let exe = self.exe_name();
        let gcc_exe = |src: &'static str, extra: &[&'static str]| {
            let mut args: Vec<&'static str> = C_FLAGS.to_vec();
            args.extend_from_slice(extra);
            args.extend(["-o", exe, src]);
            Step {
                tool: Tool::Gcc,
                args,
            }
        };
        match self {
            Kind::CChains => Recipe {
                sources: vec![COMMON_H, ("c_chains.c", C_CHAINS_C)],
                steps: vec![gcc_exe("c_chains.c", &[])],
                extra: vec![],
            },
            Kind::CppTemplates => Recipe {
                sources: vec![("cpp_templates.cpp", CPP_TEMPLATES_CPP)],
                steps: vec![Step {
                    tool: Tool::Gxx,
                    args: vec![
                        "-O3",
                        "-fomit-frame-pointer",
                        "-g",
                        "-o",
                        exe,
                        "cpp_templates.cpp",
                    ],
                }],
                extra: vec![],
            },
            Kind::RustRelease => Recipe {
                sources: vec![("rust_release.rs", RUST_RELEASE_RS)],
                steps: vec![Step {
                    tool: Tool::Rustc,
                    args: vec![
                        "-C",
                        "opt-level=3",
                        "-C",
                        "debuginfo=1",
                        "-C",
                        "force-frame-pointers=no",
                        "--edition",
                        "2021",
                        "--crate-name",
                        "rust_release",
                        "--crate-type",
                        "bin",
                        "-o",
                        exe,
                        "rust_release.rs",
                    ],
                }],
                extra: vec![],
            },
            Kind::DlopenLate => Recipe {
                sources: vec![
                    COMMON_H,
                    ("dlopen_late.c", DLOPEN_LATE_C),
                    ("libdl_work.c", LIBDL_WORK_C),
                ],
                steps: vec![
                    Step {
                        tool: Tool::Gcc,
                        args: [
                            C_FLAGS,
                            &["-fPIC", "-shared", "-o", DL_WORK_SO, "libdl_work.c"],
                        ]
                        .concat(),
                    },
                    gcc_exe("dlopen_late.c", &["-ldl"]),
                ],
                extra: vec![DL_WORK_SO],
            },
            Kind::Forker => Recipe {
                sources: vec![COMMON_H, ("forker.c", FORKER_C)],
                steps: vec![gcc_exe("forker.c", &["-Wl,-z,now"])],
                extra: vec![],
            },
            Kind::SyscallHeavy => Recipe {
                sources: vec![COMMON_H, ("syscall_heavy.c", SYSCALL_HEAVY_C)],
                steps: vec![gcc_exe("syscall_heavy.c", &[])],
                extra: vec![],
            },
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.exe_name())
    }
}

/// File name of the shared library that [`Kind::DlopenLate`] loads.
pub const DL_WORK_SO: &str = "libdl_work.so";

const COMMON_H: (&str, &str) = ("workload_common.h", include_str!("c/workload_common.h"));
const C_CHAINS_C: &str = include_str!("c/c_chains.c");
const DLOPEN_LATE_C: &str = include_str!("c/dlopen_late.c");
const LIBDL_WORK_C: &str = include_str!("c/libdl_work.c");
const FORKER_C: &str = include_str!("c/forker.c");
const SYSCALL_HEAVY_C: &str = include_str!("c/syscall_heavy.c");
const CPP_TEMPLATES_CPP: &str = include_str!("cpp/cpp_templates.cpp");
const RUST_RELEASE_RS: &str = include_str!("rust/rust_release.rs");

/// One call of an expected chain, as checked by [`verify_calls`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallEdge {
    /// File name of the object that holds the caller (the exe or a library).
    pub object: &'static str,
    /// Caller, in [`normalize_symbol`] form.
    pub caller: &'static str,
    /// What the caller calls.
    pub callee: Callee,
}

/// The target of a [`CallEdge`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Callee {
    /// A direct call of this function ([`normalize_symbol`] form; a PLT
    /// stub `name@plt` counts as `name`).
    Direct(&'static str),
    /// A call through a function pointer (`call *...`).
    Indirect,
}

/// A built workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    /// The executable.
    pub exe: PathBuf,
    /// Other files it needs, in the same directory (for
    /// [`Kind::DlopenLate`]: `libdl_work.so`).
    pub extra: Vec<PathBuf>,
}

impl Built {
    /// The directory that holds the executable and its extra files.
    pub fn dir(&self) -> &Path {
        self.exe.parent().expect("exe has a parent directory")
    }

    /// The path of one of the built objects by file name (the exe's
    /// [`Kind::exe_name`] or an extra file's name).
    pub fn object(&self, name: &str) -> Option<&Path> {
        std::iter::once(&self.exe)
            .chain(&self.extra)
            .find(|p| p.file_name().is_some_and(|n| n == name))
            .map(PathBuf::as_path)
    }
}

/// Errors of building, running and checking workloads.
#[derive(Debug)]
pub enum Error {
    /// A required tool (`gcc`, `g++`, `rustc`, `objdump`, ...) could not be
    /// started. Tests must fail on this, never skip.
    ToolNotFound {
        /// The tool's name or path.
        tool: String,
        /// Why it could not be started.
        source: io::Error,
    },
    /// A tool ran and failed.
    ToolFailed {
        /// The tool.
        tool: String,
        /// The full command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its standard error (and output).
        output: String,
    },
    /// A file system or process operation failed.
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: io::Error,
    },
    /// [`verify_calls`] found a call of an expected chain missing or made as
    /// a tail call, or a frame pointer set up.
    Verify(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ToolNotFound { tool, source } => write!(
                f,
                "required tool `{tool}` could not be run ({source}); install it \
                 (gcc, g++: Debian gcc/g++; objdump: binutils; rustc: rustup; \
                 go: golang-go; Go 1.22 and 1.24: bash scripts/install-deps)"
            ),
            Error::ToolFailed {
                tool,
                command,
                status,
                output,
            } => write!(f, "`{tool}` failed ({status}): {command}\n{output}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Verify(msg) => write!(f, "workload verification failed: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ToolNotFound { source, .. } | Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

// ---------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Tool {
    Gcc,
    Gxx,
    Rustc,
}

impl Tool {
    fn program(self) -> String {
        match self {
            Tool::Gcc => "gcc".into(),
            Tool::Gxx => "g++".into(),
            // The toolchain that runs the tests (rustup sets RUSTUP_TOOLCHAIN
            // for cargo's children, so the `rustc` proxy picks the same one).
            Tool::Rustc => std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()),
        }
    }

    /// Arguments that map the temporary build directory to the final one in
    /// debug info; not part of the cache key.
    fn remap_args(self, from: &Path, to: &Path) -> Vec<String> {
        let (from, to) = (from.display(), to.display());
        match self {
            Tool::Gcc | Tool::Gxx => vec![format!("-fdebug-prefix-map={from}={to}")],
            Tool::Rustc => vec![format!("--remap-path-prefix={from}={to}")],
        }
    }
}

struct Step {
    tool: Tool,
    args: Vec<&'static str>,
}

struct Recipe {
    sources: Vec<(&'static str, &'static str)>,
    steps: Vec<Step>,
    extra: Vec<&'static str>,
}

/// Runs `program args` and returns its stdout; a program that cannot be
/// started is [`Error::ToolNotFound`], a failing one [`Error::ToolFailed`].
fn run_tool(program: &str, args: &[String], dir: Option<&Path>) -> Result<String, Error> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    run_command(cmd, program, args)
}

/// Runs a prepared `cmd` (`tool args`, named in errors) like [`run_tool`].
pub(crate) fn run_command(mut cmd: Command, tool: &str, args: &[String]) -> Result<String, Error> {
    let out = cmd.output().map_err(|source| Error::ToolNotFound {
        tool: tool.to_string(),
        source,
    })?;
    if !out.status.success() {
        return Err(Error::ToolFailed {
            tool: tool.to_string(),
            command: format!("{tool} {}", args.join(" ")),
            status: out.status,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `tool --version` (`rustc -vV`), memoized: part of the cache key, and the
/// point where a missing compiler is reported.
fn tool_version(program: &str) -> Result<String, Error> {
    static VERSIONS: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let versions = VERSIONS.get_or_init(Default::default);
    if let Some(v) = versions.lock().unwrap().get(program) {
        return Ok(v.clone());
    }
    let flag = if program.ends_with("rustc") {
        "-vV"
    } else {
        "--version"
    };
    let v = run_tool(program, &[flag.to_string()], None)?;
    versions
        .lock()
        .unwrap()
        .insert(program.to_string(), v.clone());
    Ok(v)
}

/// 64-bit FNV-1a: a stable hash for cache keys (unlike `DefaultHasher`).
fn fnv1a(data: &[u8], mut h: u64) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The root of the build cache: `$TMPDIR/ebpf-profiler-workloads`.
pub fn cache_root() -> PathBuf {
    std::env::temp_dir().join("ebpf-profiler-workloads")
}

/// Builds a workload (or reuses an earlier build) and returns its paths.
///
/// Builds are cached in `<temp dir>/ebpf-profiler-workloads/<exe>-<hash>/`,
/// where the hash covers the sources, the compiler command lines and the
/// compilers' versions, so repeated test runs reuse them. A build happens in a
/// private temporary directory that is renamed into place when complete, so
/// concurrent builds (threads or processes) never see a partial one. A missing
/// compiler is [`Error::ToolNotFound`] naming it.
pub fn build(kind: Kind) -> Result<Built, Error> {
    // One build at a time in this process; other processes are handled by
    // the atomic rename.
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());

    let recipe = kind.recipe();
    let mut h = fnv1a(env!("CARGO_PKG_VERSION").as_bytes(), 0xcbf2_9ce4_8422_2325);
    h = fnv1a(kind.exe_name().as_bytes(), h);
    for (name, text) in &recipe.sources {
        h = fnv1a(name.as_bytes(), h);
        h = fnv1a(&(text.len() as u64).to_le_bytes(), h);
        h = fnv1a(text.as_bytes(), h);
    }
    for step in &recipe.steps {
        let program = step.tool.program();
        h = fnv1a(program.as_bytes(), h);
        h = fnv1a(tool_version(&program)?.as_bytes(), h);
        for arg in &step.args {
            h = fnv1a(arg.as_bytes(), h);
            h = fnv1a(&[0], h);
        }
    }
    let root = cache_root();
    let dir = root.join(format!("{}-{h:016x}", kind.exe_name()));
    let built = Built {
        exe: dir.join(kind.exe_name()),
        extra: recipe.extra.iter().map(|e| dir.join(e)).collect(),
    };
    let complete = |b: &Built| b.exe.is_file() && b.extra.iter().all(|e| e.is_file());
    if complete(&built) {
        return Ok(built);
    }

    fs::create_dir_all(&root).map_err(io_err(format!("creating {}", root.display())))?;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = root.join(format!(
        ".tmp-{}-{h:016x}-{}-{}-{nanos}",
        kind.exe_name(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = build_into(&recipe, &tmp, &dir).and_then(|()| {
        for _ in 0..2 {
            match fs::rename(&tmp, &dir) {
                Ok(()) => return Ok(()),
                // Another process finished the same build first.
                Err(_) if complete(&built) => return Ok(()),
                // A damaged earlier build: replace it.
                Err(_) if dir.exists() => {
                    let _ = fs::remove_dir_all(&dir);
                }
                Err(e) => return Err(io_err(format!("renaming {} into place", tmp.display()))(e)),
            }
        }
        fs::rename(&tmp, &dir).map_err(io_err(format!("renaming {} into place", tmp.display())))
    });
    if tmp.exists() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result?;
    if !complete(&built) {
        return Err(Error::Verify(format!(
            "build of {kind} in {} is incomplete",
            dir.display()
        )));
    }
    Ok(built)
}

fn build_into(recipe: &Recipe, tmp: &Path, final_dir: &Path) -> Result<(), Error> {
    fs::create_dir(tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
    for (name, text) in &recipe.sources {
        let path = tmp.join(name);
        fs::write(&path, text).map_err(io_err(format!("writing {}", path.display())))?;
    }
    for step in &recipe.steps {
        let mut args = step.tool.remap_args(tmp, final_dir);
        args.extend(step.args.iter().map(|a| a.to_string()));
        run_tool(&step.tool.program(), &args, Some(tmp))?;
    }
    for name in &recipe.extra {
        if !tmp.join(name).is_file() {
            return Err(Error::Verify(format!("build did not produce {name}")));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

const SIGKILL: i32 = 9;

/// A running workload. Dropping it kills its whole process group (the
/// workload and, for [`Kind::Forker`], its children) with `SIGKILL` and reaps
/// the workload.
///
/// Wait for it with [`Running::wait_timeout`] or [`Running::kill`] rather
/// than through `child` directly, so that the drop knows it was reaped.
#[derive(Debug)]
pub struct Running {
    /// The workload process, leader of its own process group.
    pub child: Child,
    /// Which workload.
    pub kind: Kind,
    /// What was run.
    pub built: Built,
    status: Option<ExitStatus>,
}

impl Running {
    /// The workload's process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the workload process has not exited yet.
    pub fn is_running(&mut self) -> bool {
        matches!(self.wait_timeout(Duration::ZERO), Ok(None))
    }

    /// Waits up to `timeout` for the workload to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.status {
                return Ok(Some(status));
            }
            if let Some(status) = self.child.try_wait()? {
                self.status = Some(status);
                // Whatever the group still holds (forker children) goes too.
                return Ok(Some(status));
            }
            if Instant::now() >= end {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the whole process group and reaps the workload.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        // The leader is alive or a zombie until we reap it, so its pid still
        // names this group.
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            kill(-pgid, SIGKILL);
        }
        let _ = self.child.kill();
        let status = self.child.wait()?;
        self.status = Some(status);
        Ok(status)
    }

    /// Pids of the workload's live child processes (from `/proc`), e.g. the
    /// current children of [`Kind::Forker`].
    pub fn child_pids(&self) -> Vec<u32> {
        children_of(self.pid())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Any child killed and reaped however a test ends: a failed assertion must
/// not leave a busy process behind.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// Pids of the live processes whose parent is `pid`, from `/proc/*/stat`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may contain spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let _state = fields.next();
        if fields.next().and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            out.push(child);
        }
    }
    out.sort_unstable();
    out
}

/// Builds (or reuses) the workload and starts it.
///
/// `duration`: how long it runs before exiting by itself with status 0
/// (`None`: until killed; for [`Kind::DlopenLate`] it includes the initial
/// [`DLOPEN_DELAY`]). It runs in a new process group, with stdin and stdout
/// on `/dev/null` and stderr inherited.
pub fn spawn(kind: Kind, duration: Option<Duration>) -> Result<Running, Error> {
    let built = build(kind)?;
    spawn_built(kind, &built, duration)
}

/// Like [`spawn`], for an already [`build`]-ed workload.
pub fn spawn_built(
    kind: Kind,
    built: &Built,
    duration: Option<Duration>,
) -> Result<Running, Error> {
    let ms = duration.map_or(0, |d| d.as_millis().clamp(1, u128::from(u64::MAX)) as u64);
    let mut cmd = Command::new(&built.exe);
    cmd.arg(ms.to_string());
    if kind == Kind::DlopenLate {
        let so = built
            .object(DL_WORK_SO)
            .ok_or_else(|| Error::Verify(format!("{DL_WORK_SO} missing from build")))?;
        cmd.arg(so);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0);
    let child = cmd
        .spawn()
        .map_err(io_err(format!("starting {}", built.exe.display())))?;
    Ok(Running {
        child,
        kind,
        built: built.clone(),
        status: None,
    })
}

// ---------------------------------------------------------------------------
// Symbols and chains
// ---------------------------------------------------------------------------

/// Puts a symbolizer's function name in the form used by
/// [`Kind::expected_chains`], so names from different symbolizers compare
/// equal:
///
/// * a symbol version (`__libc_start_main@@GLIBC_2.34`) or `@plt` is cut;
/// * GCC clone suffixes are cut, raw (`f.constprop.0`, `.isra.0`, `.part.0`,
///   `.cold`, `.lto_priv.0`) or demangled (`f() [clone .constprop.0]`);
/// * a Rust legacy hash (`::h0123456789abcdef`) is cut, and v0 crate
///   disambiguators (`krate[1a2b3c]::f`) are dropped;
/// * a trailing C++ parameter list and its qualifiers are cut
///   (`Pipeline<Xorshift64>::recurse(int, unsigned long, unsigned long) const`
///   → `Pipeline<Xorshift64>::recurse`).
///
/// Demangling is not done here: pass demangled names. A function template's
/// return type (`void f<int>(int)`) is kept; the workloads' chains have none.
pub fn normalize_symbol(name: &str) -> String {
    let mut s = name.trim();
    if let Some(at) = s.find('@') {
        s = &s[..at];
    }
    let mut s = s.to_string();
    loop {
        let before = s.len();
        // Demangled clone suffix: "f(int) [clone .isra.0]".
        if s.ends_with(']') {
            if let Some(i) = s.rfind(" [clone ") {
                s.truncate(i);
            }
        }
        // Raw clone suffix: "f.isra.0", "f.cold", "f.constprop.0.isra.0".
        for suffix in [
            ".constprop",
            ".isra",
            ".part",
            ".cold",
            ".lto_priv",
            ".localalias",
        ] {
            if let Some(i) = s.rfind(suffix) {
                let rest = &s[i + suffix.len()..];
                if rest.is_empty()
                    || rest.starts_with('.')
                        && rest[1..].bytes().all(|b| b.is_ascii_digit() || b == b'.')
                {
                    s.truncate(i);
                }
            }
        }
        // Rust legacy hash.
        if let Some(i) = s.rfind("::h") {
            let hash = &s[i + 3..];
            if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                s.truncate(i);
            }
        }
        // Trailing qualifiers of a C++ member function.
        for q in [" const", " volatile", " &&", " &", " noexcept"] {
            if s.ends_with(q) && s[..s.len() - q.len()].ends_with(')') {
                s.truncate(s.len() - q.len());
            }
        }
        // Trailing parameter list.
        if let Some(open) = s.ends_with(')').then(|| matching_open_paren(&s)).flatten() {
            // Keep "operator()" itself; never cut a name to nothing.
            let is_operator_call = s[..open].ends_with("operator") && open + 2 == s.len();
            if open > 0 && !is_operator_call {
                s.truncate(open);
            }
        }
        if s.len() == before {
            break;
        }
    }
    strip_v0_disambiguators(&s)
}

/// Index of the `(` that matches the final `)` of `s`.
fn matching_open_paren(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in s.bytes().enumerate().rev() {
        match b {
            b')' => depth += 1,
            b'(' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `krate[1a2b3c4d]::f` → `krate::f` (Rust v0 demangling, verbose form).
fn strip_v0_disambiguators(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('[') {
        let after = &rest[i + 1..];
        match after.find(']') {
            Some(j) if j > 0 && after[..j].bytes().all(|b| b.is_ascii_hexdigit()) => {
                out.push_str(&rest[..i]);
                rest = &after[j + 1..];
            }
            _ => {
                out.push_str(&rest[..=i]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether `stack` (root-first frame names, already normalized) contains
/// `chain` as a contiguous run of frames.
fn contains_chain(stack: &[String], chain: &[String]) -> bool {
    !chain.is_empty() && stack.windows(chain.len()).any(|w| w == chain)
}

/// Share (0.0–1.0) of the samples whose stack contains one of `chains` in
/// full: all of its frames, in order, contiguous.
///
/// `stacks` are (root-first function names, sample count) pairs; names on
/// both sides are compared after [`normalize_symbol`]. Frames above the
/// chain's first function (`_start`, `__libc_start_call_main`, ...) and below
/// its leaf (libc, kernel frames) are allowed; any frame between its first
/// function and its leaf that is not the chain's (an `[unknown]`, a missing
/// or an extra frame) makes the sample not count. No samples: 0.0.
pub fn full_chain_share(stacks: &[(Vec<String>, u64)], chains: &[Vec<&str>]) -> f64 {
    let chains: Vec<Vec<String>> = chains
        .iter()
        .map(|c| c.iter().map(|n| normalize_symbol(n)).collect())
        .collect();
    let (mut total, mut hit) = (0u64, 0u64);
    for (stack, count) in stacks {
        total += count;
        let stack: Vec<String> = stack.iter().map(|n| normalize_symbol(n)).collect();
        if chains.iter().any(|c| contains_chain(&stack, c)) {
            hit += count;
        }
    }
    if total == 0 {
        0.0
    } else {
        hit as f64 / total as f64
    }
}

// ---------------------------------------------------------------------------
// Disassembly checks
// ---------------------------------------------------------------------------

/// One instruction of an `objdump -d -C` listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Insn {
    /// The mnemonic, without `bnd`/`notrack` prefixes (`call`, `jmp`, `jne`, ...).
    pub mnemonic: String,
    /// The operands as printed.
    pub operands: String,
}

impl Insn {
    /// For a direct branch or call: the target function in
    /// [`normalize_symbol`] form, and whether the target is its first byte.
    pub fn target(&self) -> Option<(String, bool)> {
        let open = self.operands.find('<')?;
        let close = self.operands.rfind('>')?;
        let inner = &self.operands[open + 1..close];
        let (name, at_start) = match inner.rfind("+0x") {
            Some(i) if inner[i + 3..].bytes().all(|b| b.is_ascii_hexdigit()) => {
                (&inner[..i], false)
            }
            _ => (inner, true),
        };
        Some((normalize_symbol(name), at_start))
    }

    /// `call`/`callq`.
    pub fn is_call(&self) -> bool {
        self.mnemonic == "call" || self.mnemonic == "callq"
    }

    /// Any jump, conditional or not.
    pub fn is_jump(&self) -> bool {
        self.mnemonic.starts_with('j')
    }
}

/// Disassembles `object` with `objdump -d -C` and returns its functions'
/// instructions by [`normalize_symbol`] name (same-named functions are
/// concatenated).
pub fn disassemble(object: &Path) -> Result<HashMap<String, Vec<Insn>>, Error> {
    let text = run_tool(
        "objdump",
        &[
            "-d".into(),
            "-C".into(),
            "--no-show-raw-insn".into(),
            "-M".into(),
            "att".into(),
            object.display().to_string(),
        ],
        None,
    )?;
    Ok(parse_objdump(&text))
}

fn parse_objdump(text: &str) -> HashMap<String, Vec<Insn>> {
    let mut funcs: HashMap<String, Vec<Insn>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            // "0000000000001260 <chain_b>:"
            current = line
                .find(" <")
                .filter(|_| line.ends_with(">:"))
                .map(|i| normalize_symbol(&line[i + 2..line.len() - 2]));
            continue;
        }
        let Some(name) = &current else { continue };
        // "    1264:\tcall   1210 <chain_c>"
        let Some((_, insn)) = line.split_once(":\t") else {
            continue;
        };
        let mut words = insn.split_whitespace().peekable();
        while words
            .peek()
            .is_some_and(|w| matches!(*w, "bnd" | "notrack" | "data16" | "cs" | "ds"))
        {
            words.next();
        }
        let Some(mnemonic) = words.next() else {
            continue;
        };
        let operands = words.collect::<Vec<_>>().join(" ");
        funcs.entry(name.clone()).or_default().push(Insn {
            mnemonic: mnemonic.to_string(),
            operands,
        });
    }
    funcs
}

/// Checks the machine code of a built workload: every [`Kind::call_edges`]
/// call is a real `call` and the caller never jumps to the callee (no tail
/// call), and no chain function sets up a frame pointer (`mov %rsp,%rbp`).
/// Returns one line per verified edge.
pub fn verify_calls(kind: Kind, built: &Built) -> Result<Vec<String>, Error> {
    let mut report = Vec::new();
    let mut listings: HashMap<&str, HashMap<String, Vec<Insn>>> = HashMap::new();
    let mut problems = Vec::new();
    for edge in kind.call_edges() {
        let path = built
            .object(edge.object)
            .ok_or_else(|| Error::Verify(format!("{} not among the built files", edge.object)))?;
        if !listings.contains_key(edge.object) {
            listings.insert(edge.object, disassemble(path)?);
        }
        let funcs = &listings[edge.object];
        let Some(body) = funcs.get(edge.caller) else {
            problems.push(format!("{}: no function {}", edge.object, edge.caller));
            continue;
        };
        match edge.callee {
            Callee::Direct(callee) => {
                // A jump to the callee is a tail call; for a recursive
                // function, only a jump to its own first byte is (the others
                // are its own branches).
                let to_callee = |i: &Insn| {
                    i.target()
                        .is_some_and(|(t, start)| t == callee && (start || callee != edge.caller))
                };
                let calls = body
                    .iter()
                    .filter(|i| i.is_call() && i.target() == Some((callee.to_string(), true)))
                    .count();
                let jumps: Vec<_> = body
                    .iter()
                    .filter(|i| i.is_jump() && to_callee(i))
                    .collect();
                if calls == 0 {
                    problems.push(format!(
                        "{}: {} has no call of {callee}",
                        edge.object, edge.caller
                    ));
                }
                if !jumps.is_empty() {
                    problems.push(format!(
                        "{}: {} tail-calls {callee}: {jumps:?}",
                        edge.object, edge.caller
                    ));
                }
                report.push(format!(
                    "{}: {} --call--> {callee} ({calls} call site(s), no jump)",
                    edge.object, edge.caller
                ));
            }
            Callee::Indirect => {
                let calls = body
                    .iter()
                    .filter(|i| i.is_call() && i.operands.starts_with('*'))
                    .count();
                if calls == 0 {
                    problems.push(format!(
                        "{}: {} has no indirect call",
                        edge.object, edge.caller
                    ));
                }
                report.push(format!(
                    "{}: {} --call *--> (function pointer) ({calls} call site(s))",
                    edge.object, edge.caller
                ));
            }
        }
    }
    // Frame pointers stay off in every chain function.
    for edge in kind.call_edges() {
        let funcs = &listings[edge.object];
        let mut names = vec![edge.caller];
        if let Callee::Direct(c) = edge.callee {
            if funcs.contains_key(c) && c != "syscall" {
                names.push(c);
            }
        }
        for name in names {
            let sets_fp = funcs.get(name).is_some_and(|body| {
                body.iter()
                    .any(|i| i.mnemonic.starts_with("mov") && i.operands == "%rsp,%rbp")
            });
            if sets_fp {
                problems.push(format!("{}: {name} sets up a frame pointer", edge.object));
            }
        }
    }
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(Error::Verify(problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(frames: &str) -> Vec<String> {
        frames.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn normalize_symbol_forms() {
        let cases = [
            ("main", "main"),
            ("__libc_start_main@@GLIBC_2.34", "__libc_start_main"),
            ("syscall@plt", "syscall"),
            ("chain_c.constprop.0", "chain_c"),
            ("chain_c.isra.0", "chain_c"),
            ("chain_c.part.0.isra.0", "chain_c"),
            ("chain_c.cold", "chain_c"),
            ("finish_task_switch.isra.0", "finish_task_switch"),
            ("chain_c(unsigned long) [clone .constprop.0]", "chain_c"),
            (
                "rust_release::main::h0123456789abcdef",
                "rust_release::main",
            ),
            ("rust_release[1a2b3c4d5e]::main", "rust_release::main"),
            (
                "Pipeline<Xorshift64>::recurse(int, unsigned long, unsigned long)",
                "Pipeline<Xorshift64>::recurse",
            ),
            ("Foo::bar(int) const", "Foo::bar"),
            ("Foo::operator()(int)", "Foo::operator()"),
            ("Foo::operator()", "Foo::operator()"),
            ("f(void (*)(int))", "f"),
            (
                "std::rt::lang_start::{{closure}}",
                "std::rt::lang_start::{{closure}}",
            ),
            ("[unknown]", "[unknown]"),
            ("  spaced  ", "spaced"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_symbol(raw), want, "normalize_symbol({raw:?})");
        }
    }

    #[test]
    fn share_hits() {
        let chains = Kind::CChains.expected_chains();
        let stacks = vec![
            (
                stack(
                    "_start __libc_start_main __libc_start_call_main main chain_a chain_b chain_c",
                ),
                3,
            ),
            (stack("main chain_x chain_y"), 1),
            // Kernel frames below the leaf are fine.
            (
                stack("_start main chain_x chain_y asm_sysvec_apic_timer_interrupt irq_exit"),
                1,
            ),
        ];
        assert_eq!(full_chain_share(&stacks, &chains), 1.0);
    }

    #[test]
    fn share_misses_and_weights() {
        let chains = Kind::CChains.expected_chains();
        let stacks = vec![
            (stack("main chain_a chain_b chain_c"), 6),
            // The leaf itself.
            (stack("chain_c"), 1),
            // Unrelated.
            (stack("_start main clock_gettime"), 1),
            // Broken unwind.
            (stack("[unknown] chain_b chain_c"), 2),
        ];
        assert!((full_chain_share(&stacks, &chains) - 0.6).abs() < 1e-12);
    }

    #[test]
    fn share_out_of_order() {
        let chains = vec![vec!["main", "chain_a", "chain_b", "chain_c"]];
        for s in [
            "main chain_b chain_a chain_c",
            "main chain_a chain_c chain_b",
            "chain_c chain_b chain_a main",
        ] {
            assert_eq!(full_chain_share(&[(stack(s), 1)], &chains), 0.0, "{s}");
        }
    }

    #[test]
    fn share_partial_and_gaps() {
        let chains = vec![vec!["main", "chain_a", "chain_b", "chain_c"]];
        for s in [
            // Missing leaf, missing middle, missing main.
            "main chain_a chain_b",
            "main chain_a chain_c",
            "_start chain_a chain_b chain_c",
            // An extra frame inside the chain.
            "main chain_a [unknown] chain_b chain_c",
            "main chain_a chain_b other chain_c",
        ] {
            assert_eq!(full_chain_share(&[(stack(s), 1)], &chains), 0.0, "{s}");
        }
    }

    #[test]
    fn share_normalizes_both_sides() {
        let chains = Kind::RustRelease.expected_chains();
        let s = vec![
            "main".to_string(),
            "std::rt::lang_start_internal".to_string(),
            "rust_release::main::h1234567890abcdef".to_string(),
            "rust_chain_outer".to_string(),
            "rust_chain_middle".to_string(),
            "rust_chain_leaf".to_string(),
        ];
        assert_eq!(full_chain_share(&[(s, 1)], &chains), 1.0);

        let cpp = Kind::CppTemplates.expected_chains();
        let mut s: Vec<String> = vec![
            "__libc_start_call_main".into(),
            "main".into(),
            "Pipeline<Xorshift64>::run(unsigned long, unsigned long)".into(),
        ];
        s.extend(std::iter::repeat_n(
            "Pipeline<Xorshift64>::recurse(int, unsigned long, unsigned long)".to_string(),
            CPP_RECURSION_DEPTH,
        ));
        s.push("Spinner<Xorshift64>::spin(unsigned long, unsigned long)".into());
        assert_eq!(full_chain_share(&[(s.clone(), 1)], &cpp), 1.0);
        // One recursion level short is not the full chain.
        s.remove(3);
        assert_eq!(full_chain_share(&[(s, 1)], &cpp), 0.0);
    }

    #[test]
    fn share_of_nothing_is_zero() {
        assert_eq!(full_chain_share(&[], &Kind::CChains.expected_chains()), 0.0);
        assert_eq!(
            full_chain_share(&[(stack("main"), 0)], &Kind::CChains.expected_chains()),
            0.0
        );
        assert_eq!(full_chain_share(&[(stack("main"), 5)], &[]), 0.0);
    }

    #[test]
    fn expected_chains_shape() {
        for kind in Kind::ALL {
            let chains = kind.expected_chains();
            assert!(!chains.is_empty());
            for chain in chains {
                assert!(chain.len() >= 3, "{kind}: {chain:?}");
                assert!(chain[0] == "main" || chain[0] == "rust_release::main");
                for name in &chain {
                    assert_eq!(normalize_symbol(name), *name, "{kind}: not normalized");
                }
            }
            assert!(kind.comm().len() <= 15);
        }
        let cpp = &Kind::CppTemplates.expected_chains()[0];
        assert_eq!(cpp.len(), CPP_RECURSION_DEPTH + 3);
        assert!(cpp.len() >= 60);
    }

    #[test]
    fn missing_tool_is_a_named_error() {
        let err = tool_version("definitely-not-a-compiler-xyz").unwrap_err();
        assert!(matches!(err, Error::ToolNotFound { .. }));
        assert!(
            err.to_string().contains("definitely-not-a-compiler-xyz"),
            "{err}"
        );
    }

    #[test]
    fn parse_objdump_listing() {
        let text = "\
0000000000001260 <chain_b>:
    1260:\tsub    $0x8,%rsp
    1264:\tcall   1210 <chain_c>
    1269:\tjmp    1210 <chain_c+0x10>
    1270:\tbnd jmp 1210 <chain_c>

0000000000001300 <Pipeline<Xorshift64>::recurse(int, unsigned long, unsigned long)>:
    1300:\tcall   *%rax
    1304:\tcall   1300 <Pipeline<Xorshift64>::recurse(int, unsigned long, unsigned long)>
";
        let funcs = parse_objdump(text);
        let b = &funcs["chain_b"];
        assert_eq!(b.len(), 4);
        assert!(b[1].is_call());
        assert_eq!(b[1].target(), Some(("chain_c".to_string(), true)));
        assert_eq!(b[2].target(), Some(("chain_c".to_string(), false)));
        assert!(b[3].is_jump());
        assert_eq!(b[3].mnemonic, "jmp");
        let r = &funcs["Pipeline<Xorshift64>::recurse"];
        assert_eq!(r[0].operands, "*%rax");
        assert_eq!(
            r[1].target(),
            Some(("Pipeline<Xorshift64>::recurse".to_string(), true))
        );
    }
}
