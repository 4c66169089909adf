//! Go workloads, built at test time by Debian's Go toolchains, and the Go
//! tools the tests use as oracles (`go tool addr2line`, `go tool objdump`).
//!
//! | program | source | what it runs |
//! |---|---|---|
//! | [`Program::Chain`] | `src/go/chain` | `main.main → main.a → main.b → main.c`, `c` spinning in a loop that calls the inlined `main.mix` ([`CHAIN`]); one P, yielding between calls of `a` (with [`spawn_with`] `signals`, interrupted by `SIGPROF` 1000 times a second) |
//! | [`Program::Cgo`] | `src/go/cgo` | `main.main → main.callC → C c_middle → main.goCallback → main.spin` (Go calls C, which calls back into Go) |
//!
//! Each is built four ways ([`Variant`]): plain `go build`,
//! `-ldflags='-s -w'` (no symbol table, no DWARF: only `.gopclntab` is left),
//! `-trimpath` and `-buildmode=pie`; by each toolchain of [`MINORS`]: Go 1.19 is Debian
//! bookworm's `golang-go` (`go` on `PATH`), 1.22 and 1.24 are unpacked by
//! `scripts/install-deps` under [`TOOLCHAIN_ROOT`] (a private apt
//! configuration; never installed on the host). A missing toolchain is an
//! error that names the script, never a skip.
//!
//! Builds need no network (`GOFLAGS=-mod=mod`, `GOPROXY=off`,
//! `GOTOOLCHAIN=local`) and use a build cache under [`crate::cache_root`].
//! A build lives in `<cache root>/go-<program>-<variant>-go1.N-<hash>/`
//! (sources and executable), the hash covering the sources, the flags and
//! the toolchain's version; the executable is written to a temporary name
//! and renamed, so concurrent builds never see a partial one. Sources stay
//! where they were compiled, so file names in the binaries exist.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{cache_root, fnv1a, io_err, run_command, Error, Reaped};

/// Where `scripts/install-deps` unpacks the Go toolchains that are not
/// Debian bookworm's own.
pub const TOOLCHAIN_ROOT: &str = "/var/cache/ebpf-profiler/go/root";

/// The Go minor versions the tests build with: 1.19 (the 1.18–1.19 table
/// layout), 1.22 and 1.24 (the 1.20+ layout, and 1.21's frame pointer
/// prologue).
pub const MINORS: [u32; 3] = [19, 22, 24];

/// The chain of [`Program::Chain`] as its stacks show it, root first: the
/// main goroutine starts in `runtime.main`, whose return address is
/// `runtime.goexit`, the outermost frame of every goroutine.
pub const CHAIN: [&str; 6] = [
    "runtime.goexit",
    "runtime.main",
    "main.main",
    "main.a",
    "main.b",
    "main.c",
];

/// The function [`Program::Chain`] inlines into `main.c`.
pub const CHAIN_INLINED: &str = "main.mix";

/// A Go toolchain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toolchain {
    /// 19 for Go 1.19.
    pub minor: u32,
    /// The `go` command.
    pub go: PathBuf,
    /// What `go version` calls it: `go1.19.8`.
    pub version: String,
}

/// The toolchain of Go 1.`minor` (one of [`MINORS`]).
pub fn toolchain(minor: u32) -> Result<Toolchain, Error> {
    let go = if minor == 19 {
        PathBuf::from("go")
    } else {
        Path::new(TOOLCHAIN_ROOT).join(format!("usr/lib/go-1.{minor}/bin/go"))
    };
    let missing = |source: std::io::Error| Error::ToolNotFound {
        tool: format!(
            "{} (Go 1.{minor}; {})",
            go.display(),
            if minor == 19 {
                "Debian's golang-go"
            } else {
                "bash scripts/install-deps unpacks it"
            }
        ),
        source,
    };
    let out = Command::new(&go)
        .arg("version")
        .env("GOTOOLCHAIN", "local")
        .stdin(Stdio::null())
        .output()
        .map_err(missing)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string();
    let want = format!("go1.{minor}");
    if !out.status.success() || !(version == want || version.starts_with(&format!("{want}."))) {
        return Err(missing(std::io::Error::other(format!(
            "`go version` says {:?}, not {want}",
            text.trim()
        ))));
    }
    Ok(Toolchain { minor, go, version })
}

/// Every toolchain of [`MINORS`]; the first missing one is an error.
pub fn toolchains() -> Result<Vec<Toolchain>, Error> {
    MINORS.iter().map(|&m| toolchain(m)).collect()
}

impl Toolchain {
    /// `go ARGS` with the environment every build and tool run uses: no
    /// network, no toolchain switching, caches under the workloads' cache.
    pub fn command(&self) -> Command {
        let root = cache_root();
        let mut c = Command::new(&self.go);
        c.env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .env("GOSUMDB", "off")
            .env("GOTELEMETRY", "off")
            .env("GO111MODULE", "on")
            .env("GOCACHE", root.join("go-build-cache"))
            .env("GOPATH", root.join("gopath"))
            .env_remove("GOROOT")
            .stdin(Stdio::null());
        c
    }
}

/// A Go program of this crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Program {
    /// `main → a → b → c`, `c` spinning ([`CHAIN`]).
    Chain,
    /// Go → C → Go.
    Cgo,
}

impl Program {
    /// Both programs.
    pub const ALL: [Program; 2] = [Program::Chain, Program::Cgo];

    /// The executable's file name (and process name).
    pub fn exe_name(self) -> &'static str {
        match self {
            Program::Chain => "go_chain",
            Program::Cgo => "go_cgo",
        }
    }

    fn sources(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Program::Chain => &[("main.go", include_str!("go/chain/main.go"))],
            Program::Cgo => &[
                ("main.go", include_str!("go/cgo/main.go")),
                ("middle.c", include_str!("go/cgo/middle.c")),
            ],
        }
    }
}

/// How a program is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// `go build`: symbol table, DWARF (with `.debug_frame`), `.gopclntab`.
    Normal,
    /// `go build -ldflags='-s -w'`: `.gopclntab` only.
    Stripped,
    /// `go build -trimpath`: file names relative to the module or `GOROOT`.
    Trimpath,
    /// `go build -buildmode=pie`: the table's pointers are relocations.
    Pie,
}

impl Variant {
    /// Every variant.
    pub const ALL: [Variant; 4] = [
        Variant::Normal,
        Variant::Stripped,
        Variant::Trimpath,
        Variant::Pie,
    ];

    fn flags(self) -> &'static [&'static str] {
        match self {
            Variant::Normal => &[],
            Variant::Stripped => &["-ldflags=-s -w"],
            Variant::Trimpath => &["-trimpath"],
            Variant::Pie => &["-buildmode=pie"],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Variant::Normal => "normal",
            Variant::Stripped => "stripped",
            Variant::Trimpath => "trimpath",
            Variant::Pie => "pie",
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A built Go program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoBuild {
    pub exe: PathBuf,
    /// The directory of its sources (and of the executable).
    pub dir: PathBuf,
    pub toolchain: Toolchain,
    pub program: Program,
    pub variant: Variant,
}

impl GoBuild {
    /// `go1.19.8 go_chain stripped`, for messages.
    pub fn label(&self) -> String {
        format!(
            "{} {} {}",
            self.toolchain.version,
            self.program.exe_name(),
            self.variant
        )
    }
}

/// Writes `text` to `path` through a temporary file, so a concurrent
/// builder never reads a half-written source.
fn write_atomically(path: &Path, text: &str, seq: u64) -> Result<(), Error> {
    if fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("tmp-{}-{seq}", std::process::id()));
    fs::write(&tmp, text).map_err(io_err(format!("writing {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(io_err(format!("renaming {}", tmp.display())))
}

/// Builds `program` with `tc` the `variant` way, or reuses an earlier
/// build.
pub fn build(tc: &Toolchain, program: Program, variant: Variant) -> Result<GoBuild, Error> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let module = format!("module {}\n\ngo 1.19\n", program.exe_name());
    let mut h = fnv1a(env!("CARGO_PKG_VERSION").as_bytes(), 0xcbf2_9ce4_8422_2325);
    h = fnv1a(tc.version.as_bytes(), h);
    h = fnv1a(module.as_bytes(), h);
    for (name, text) in program.sources() {
        h = fnv1a(name.as_bytes(), h);
        h = fnv1a(&(text.len() as u64).to_le_bytes(), h);
        h = fnv1a(text.as_bytes(), h);
    }
    for f in variant.flags() {
        h = fnv1a(f.as_bytes(), h);
        h = fnv1a(&[0], h);
    }
    let dir = cache_root().join(format!(
        "go-{}-{variant}-{}-{h:016x}",
        program.exe_name(),
        tc.version
    ));
    let built = GoBuild {
        exe: dir.join(program.exe_name()),
        dir: dir.clone(),
        toolchain: tc.clone(),
        program,
        variant,
    };
    if built.exe.is_file() {
        return Ok(built);
    }
    fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    write_atomically(&dir.join("go.mod"), &module, seq)?;
    for (name, text) in program.sources() {
        write_atomically(&dir.join(name), text, seq)?;
    }
    let tmp = format!(".{}.tmp-{}-{seq}", program.exe_name(), std::process::id());
    let mut args: Vec<String> = vec!["build".into(), "-o".into(), tmp.clone()];
    args.extend(variant.flags().iter().map(|f| f.to_string()));
    args.push(".".into());
    let mut cmd = tc.command();
    cmd.args(&args).current_dir(&dir).env(
        "CGO_ENABLED",
        if program == Program::Cgo { "1" } else { "0" },
    );
    run_command(cmd, &tc.go.display().to_string(), &args)?;
    let tmp = dir.join(tmp);
    fs::rename(&tmp, &built.exe).map_err(io_err(format!("renaming {}", tmp.display())))?;
    Ok(built)
}

/// Starts a built program for `duration` (`None`: until killed), in its
/// own process group, stdout on `/dev/null`. Dropping the result kills it.
pub fn spawn(built: &GoBuild, duration: Option<Duration>) -> Result<Reaped, Error> {
    spawn_with(built, duration, &[])
}

/// [`spawn`] with more arguments: `["signals"]` makes [`Program::Chain`]
/// run Go's own CPU profiler at 1000 Hz, so a `SIGPROF` handler interrupts
/// its chain 1000 times a second.
pub fn spawn_with(
    built: &GoBuild,
    duration: Option<Duration>,
    args: &[&str],
) -> Result<Reaped, Error> {
    use std::os::unix::process::CommandExt;
    let ms = duration.map_or(0, |d| d.as_millis().clamp(1, u128::from(u64::MAX)) as u64);
    let child = Command::new(&built.exe)
        .arg(ms.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(io_err(format!("starting {}", built.exe.display())))?;
    Ok(Reaped(child))
}

/// What `go tool addr2line` says about an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr2Line {
    /// `?` when it knows no function there.
    pub function: String,
    /// `?` when unknown.
    pub file: String,
    /// 0 when unknown.
    pub line: u32,
}

/// Asks `go tool addr2line` of `tc` (which reads the binary's
/// `.gopclntab` through `debug/gosym`: the function holding each address,
/// and the file and line of the innermost inlined call there) about `addrs`.
pub fn addr2line(tc: &Toolchain, exe: &Path, addrs: &[u64]) -> Result<Vec<Addr2Line>, Error> {
    let tool = format!("{} tool addr2line", tc.go.display());
    let mut child = tc
        .command()
        .args(["tool", "addr2line"])
        .arg(exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::ToolNotFound {
            tool: tool.clone(),
            source,
        })?;
    let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Written from a thread: addr2line answers line by line, and a full
    // stdout pipe would block it while we still write.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(io_err(format!("running {tool}")))?;
    writer
        .join()
        .expect("writer thread")
        .map_err(io_err(format!("writing to {tool}")))?;
    if !out.status.success() {
        return Err(Error::ToolFailed {
            tool: tool.clone(),
            command: format!("{tool} {}", exe.display()),
            status: out.status,
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() != 2 * addrs.len() {
        return Err(Error::Verify(format!(
            "{tool}: {} lines for {} addresses",
            lines.len(),
            addrs.len()
        )));
    }
    Ok(lines
        .chunks_exact(2)
        .map(|p| {
            let (file, line) = p[1].rsplit_once(':').unwrap_or((p[1], "0"));
            Addr2Line {
                function: p[0].to_string(),
                file: file.to_string(),
                line: line.parse().unwrap_or(0),
            }
        })
        .collect())
}

/// One instruction of a `go tool objdump` listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoInsn {
    /// The function (`TEXT` header) it belongs to.
    pub function: String,
    pub address: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Go assembler syntax: `SUBQ $0x10, SP`.
    pub text: String,
}

/// Disassembles `exe` with `go tool objdump` of `tc`.
pub fn objdump(tc: &Toolchain, exe: &Path) -> Result<Vec<GoInsn>, Error> {
    let mut cmd = tc.command();
    cmd.args(["tool", "objdump"]).arg(exe);
    let tool = format!("{} tool objdump", tc.go.display());
    let text = run_command(cmd, &tool, &[exe.display().to_string()])?;
    Ok(parse_objdump(&text))
}

fn parse_objdump(text: &str) -> Vec<GoInsn> {
    let mut out = Vec::new();
    let mut function = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("TEXT ") {
            // "TEXT main.b(SB) /tmp/x/main.go"; generic instantiations have
            // spaces in their names ("go.shape.interface {}").
            function = rest.find("(SB)").map_or(rest, |i| &rest[..i]).to_string();
            continue;
        }
        // "  main.go:15\t\t0x460846\t\t4883ec10\t\tSUBQ $0x10, SP\t"
        let fields: Vec<&str> = line.split('\t').filter(|f| !f.is_empty()).collect();
        let [_, addr, hex, insn, ..] = fields[..] else {
            continue;
        };
        let Some(address) = addr
            .strip_prefix("0x")
            .and_then(|a| u64::from_str_radix(a, 16).ok())
        else {
            continue;
        };
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        out.push(GoInsn {
            function: function.clone(),
            address,
            len: hex.len() as u64 / 2,
            text: insn.trim().to_string(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objdump_lines() {
        let text = "TEXT a.(*T[go.shape.interface {}]).F(SB) /x.go\nTEXT main.b(SB) /tmp/gotest/main.go\n  main.go:15\t\t0x460840\t\t493b6610\t\tCMPQ 0x10(R14), SP\t\t\t\n  main.go:15\t\t0x46084a\t\t48896c2408\t\tMOVQ BP, 0x8(SP)\t\t\t\n\nTEXT runtime.goexit.abi0(SB) /x/asm_amd64.s\n  asm_amd64.s:1\t0x459900\t\t90\t\tNOPL\t\n";
        let insns = parse_objdump(text);
        assert_eq!(insns.len(), 3);
        assert_eq!(insns[1].function, "main.b");
        assert_eq!((insns[1].address, insns[1].len), (0x46084a, 5));
        assert_eq!(insns[1].text, "MOVQ BP, 0x8(SP)");
        assert_eq!(insns[2].function, "runtime.goexit.abi0");
        assert_eq!(insns[2].len, 1);
    }
}
