//! `cargo xtask kernels`: the kernel matrix. Boots a list of Debian kernels
//! under qemu (TCG) and proves, in each, that the profiler loads and unwinds
//! binaries built without frame pointers.
//!
//! One boot per kernel: the VM's /init starts two workloads (C at -O2 and a
//! Rust release build linked by LLD), runs `ebpf-profiler check --json` and
//! `ebpf-profiler record`, and sends the results to the host over a second
//! serial port. The host judges them (see [`judge`]) and prints a table.
//!
//! Everything slow is cached under one directory (kernels, the private apt
//! state, initramfs images), so a second run downloads nothing.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use workloads::Kind;

/// Where kernels, apt state, initramfs images and logs are kept by default.
pub const DEFAULT_CACHE: &str = "/var/cache/ebpf-profiler/kernel-matrix";
/// Environment variable that overrides [`DEFAULT_CACHE`] (`--cache` wins).
pub const CACHE_ENV: &str = "EBPF_PROFILER_KERNEL_CACHE";
/// The kernel list, relative to the repository root.
pub const KERNEL_LIST: &str = "xtask/kernels.txt";

/// A program the verifier needed more instructions for than this is a
/// failure: the verifier's limit is 1,000,000, and a cost that grows by 10×
/// between kernels (as it did on 6.19) leaves no margin for the next one.
pub const MAX_VERIFIED_INSNS: u64 = 50_000;
/// Fewer samples of a workload than this say too little about unwinding.
pub const MIN_SAMPLES: u64 = 50;
/// Share of a workload's samples that must hold its whole expected chain
/// (the same bar as crates/agent/tests/unwinding.rs).
pub const MIN_SHARE: f64 = 0.99;
/// The workloads run in every VM.
pub const WORKLOADS: [Kind; 2] = [Kind::CChains, Kind::RustRelease];

/// Long help of `cargo xtask kernels`.
pub const HELP: &str = "\
Boot Debian kernels under qemu and prove the profiler loads and unwinds in each.

For every kernel (xtask/kernels.txt, or the kernels given as arguments):
  1. vmlinuz comes from the Debian archive through a private apt configuration
     (sources list, lists and package cache under <cache>/apt; the host's
     /etc/apt is never changed) and is kept in <cache>/vmlinuz. `apt-get update`
     runs on that private configuration only when a kernel is not cached yet.
  2. qemu boots it (TCG, 2 vCPUs, 2 GiB; nested KVM is not trusted) with an
     initramfs holding busybox, the profiler (debug info stripped), two
     workloads (c_chains: C at -O2 without frame pointers; rust_release: Rust
     release linked by LLD) and the libraries they need. /init mounts proc,
     sysfs, devtmpfs and /tmp only: bpffs and tracefs are left to the profiler.
  3. In the VM: `ebpf-profiler check --json`, then
     `ebpf-profiler record -d DURATION -F 99 -o /tmp/out.folded`; the results
     come back over a second serial port.
  4. A kernel passes when check says ok, no program needs more than 50,000
     verified instructions (reported by kernels >= 5.16), record succeeds, and
     each workload has >= 50 samples of which >= 99 % hold its whole expected
     call chain (workloads::full_chain_share).

Prints a table (kernel, loads, verified instructions per program, workload
samples, complete-chain share per workload, boot seconds, verdict) and writes
it with results.json and every VM's console and result logs to
<cache>/logs/<run>/ (<cache>/logs/latest points to the last run).
Exit status 1 when any kernel falls short.

Host tools that are missing (qemu-system-x86, busybox-static, binutils, gzip,
gcc) are installed with apt-get from the host's own sources. Needs root.

Cache: --cache DIR, else $EBPF_PROFILER_KERNEL_CACHE, else
/var/cache/ebpf-profiler/kernel-matrix.";

/// Arguments of `cargo xtask kernels`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kernels to boot (Debian ABI versions such as 6.1.0-57-amd64); default: xtask/kernels.txt.
    pub kernels: Vec<String>,
    /// Print the kernel list and exit.
    #[arg(long)]
    pub list: bool,
    /// The profiler binary to test; default: `cargo build --release -p ebpf-profiler`.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Cache directory (default: $EBPF_PROFILER_KERNEL_CACHE, else /var/cache/ebpf-profiler/kernel-matrix).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Wall-clock limit of one boot in seconds; qemu is killed after it and the kernel fails.
    #[arg(long, value_name = "SECS", default_value_t = 240, value_parser = clap::value_parser!(u64).range(10..))]
    pub timeout: u64,
    /// How long `record` records in each VM: 5s, 500ms, 1m.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Boot every kernel even after one failed (`--keep-going false` stops at the first failure).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub keep_going: bool,
}

/// Runs the matrix. Ok(true) when every kernel passed.
pub fn run(root: &Path, args: &Args) -> Result<bool, String> {
    let kernels = if args.kernels.is_empty() {
        let path = root.join(KERNEL_LIST);
        let text =
            fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        parse_kernel_list(&text)
    } else {
        args.kernels.clone()
    };
    if args.list {
        for k in &kernels {
            println!("{k}");
        }
        return Ok(true);
    }
    if kernels.is_empty() {
        return Err(format!("no kernels to boot (is {KERNEL_LIST} empty?)"));
    }
    let started = Instant::now();
    let cache = args
        .cache
        .clone()
        .or_else(|| std::env::var_os(CACHE_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE));
    for dir in ["vmlinuz", "initramfs", "logs", "apt"] {
        let d = cache.join(dir);
        fs::create_dir_all(&d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    // qemu's -serial file:PATH would split a path at a comma.
    if cache.to_string_lossy().contains(',') {
        return Err(format!(
            "cache path {} contains a comma, which qemu cannot take",
            cache.display()
        ));
    }

    ensure_host_tools()?;
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => build_profiler(root)?,
    };
    if !binary.is_file() {
        return Err(format!("profiler binary {} not found", binary.display()));
    }
    let mut built = Vec::new();
    for kind in WORKLOADS {
        progress(&format!("building workload {kind}"));
        built.push((
            kind,
            workloads::build(kind).map_err(|e| format!("building workload {kind}: {e}"))?,
        ));
    }
    let init = init_script(args.duration, Duration::from_secs(args.timeout));
    let initrd = build_initramfs(&cache.join("initramfs"), &binary, &built, &init)?;

    let run_dir = new_run_dir(&cache.join("logs"))?;
    progress(&format!(
        "{} kernel(s); logs in {}",
        kernels.len(),
        run_dir.display()
    ));
    let mut apt = PrivateApt::new(cache.join("apt"));
    let mut rows: Vec<Row> = Vec::new();
    let total = kernels.len();
    for (i, kernel) in kernels.iter().enumerate() {
        let tag = format!("kernel {} of {total}: {kernel}", i + 1);
        if !args.keep_going && rows.iter().any(|r| !r.passed) {
            rows.push(Row::not_run(kernel, "not run: an earlier kernel failed"));
            continue;
        }
        let row = run_kernel(
            kernel,
            &tag,
            &cache,
            &mut apt,
            &initrd,
            &run_dir,
            Duration::from_secs(args.timeout),
        );
        if row.passed {
            progress(&format!(
                "{tag}: pass ({:.0} s)",
                row.boot_seconds.unwrap_or(0.0)
            ));
        } else {
            progress(&format!("{tag}: FAIL: {}", row.problems.join("; ")));
        }
        rows.push(row);
    }

    let table = render_table(&rows);
    // fold, not sum: an empty f64 sum is -0.0, printed "-0".
    let downloads = rows
        .iter()
        .filter_map(|r| r.download_seconds)
        .fold(0.0, |a, b| a + b);
    let boots = rows
        .iter()
        .filter_map(|r| r.boot_seconds)
        .fold(0.0, |a, b| a + b);
    let passed = rows.iter().filter(|r| r.passed).count();
    let summary = format!(
        "{passed} of {} kernel(s) pass; downloads {downloads:.0} s, boots {boots:.0} s, total {:.0} s \
         (record {} per boot, binary {})",
        rows.len(),
        started.elapsed().as_secs_f64(),
        format_duration(args.duration),
        binary.display(),
    );
    print!("{table}");
    println!("\n{summary}");
    let md = format!("{table}\n{summary}\n");
    let _ = fs::write(run_dir.join("table.md"), md);
    let report = RunReport {
        binary: binary.display().to_string(),
        initramfs: initrd.display().to_string(),
        duration_ms: args.duration.as_millis() as u64,
        timeout_s: args.timeout,
        total_seconds: started.elapsed().as_secs_f64(),
        kernels: rows,
    };
    match serde_json::to_string_pretty(&report) {
        Ok(json) => {
            let _ = fs::write(run_dir.join("results.json"), json + "\n");
        }
        Err(e) => eprintln!("warning: results.json not written: {e}"),
    }
    println!("results: {}", run_dir.display());
    Ok(report.kernels.iter().all(|r| r.passed))
}

fn progress(msg: &str) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    eprintln!("[kernels {h:02}:{m:02}:{s:02}] {msg}");
}

/// The kernels of a list file: one per line, `#` comments and blank lines
/// skipped.
pub fn parse_kernel_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A kernel version becomes part of file and package names: letters,
/// digits and `.+-_~` only.
fn valid_kernel_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with('.')
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-~".contains(&b))
}

/// `5s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: use 5s, 500ms, 2m"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s, m or h")),
    };
    if d.is_zero() {
        return Err("the duration must be more than zero".into());
    }
    Ok(d)
}

fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

// ---------------------------------------------------------------------------
// Host tools and the profiler binary
// ---------------------------------------------------------------------------

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Whether an ELF64 little-endian file has a program interpreter (is
/// dynamically linked); None when the bytes are not such an ELF file.
pub fn elf_is_dynamic(data: &[u8]) -> Option<bool> {
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let phoff = usize::try_from(u64::from_le_bytes(data[0x20..0x28].try_into().ok()?)).ok()?;
    let (phentsize, phnum) = (usize::from(u16_at(0x36)?), usize::from(u16_at(0x38)?));
    const PT_INTERP: u32 = 3;
    let mut dynamic = false;
    for i in 0..phnum {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let p_type = u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?);
        dynamic |= p_type == PT_INTERP;
    }
    Some(dynamic)
}

/// The initramfs needs a busybox that runs without any library.
fn static_busybox() -> bool {
    fs::read("/bin/busybox")
        .ok()
        .and_then(|d| elf_is_dynamic(&d))
        == Some(false)
}

/// Installs the missing host tools from the host's own apt sources.
/// (dpkg-deb, tar, ldd and apt-get are part of every Debian system.)
fn ensure_host_tools() -> Result<(), String> {
    let missing = || {
        let mut m = Vec::new();
        if which("qemu-system-x86_64").is_none() {
            m.push("qemu-system-x86");
        }
        if !static_busybox() {
            m.push("busybox-static");
        }
        if which("objcopy").is_none() {
            m.push("binutils");
        }
        if which("gzip").is_none() {
            m.push("gzip");
        }
        if which("gcc").is_none() {
            m.push("gcc");
        }
        m
    };
    let need = missing();
    if need.is_empty() {
        return Ok(());
    }
    progress(&format!("installing host tools: {}", need.join(" ")));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&need)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::from(io::stderr()))
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    // Stale host package lists are the usual reason an install fails.
    if !install() {
        let _ = Command::new("apt-get")
            .arg("update")
            .stdin(Stdio::null())
            .stdout(Stdio::from(io::stderr()))
            .status();
        if !install() {
            return Err(format!("apt-get install {} failed", need.join(" ")));
        }
    }
    let still = missing();
    if still.is_empty() {
        Ok(())
    } else {
        Err(format!("still missing after install: {}", still.join(" ")))
    }
}

/// `cargo build --release -p ebpf-profiler`; returns the binary.
fn build_profiler(root: &Path) -> Result<PathBuf, String> {
    progress("cargo build --release -p ebpf-profiler");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--release", "-p", "ebpf-profiler"])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::from(io::stderr()))
        .status()
        .map_err(|e| format!("running {cargo}: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --release -p ebpf-profiler: {status}"));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release/ebpf-profiler"))
}

// ---------------------------------------------------------------------------
// Kernels from the Debian archive, through a private apt configuration
// ---------------------------------------------------------------------------

/// Suites searched for kernels. The security suites carry the newest builds
/// of each release's kernel (bullseye's 5.10.0-46, bookworm's 6.1.0-57).
const APT_SOURCES: &[&str] = &[
    "http://deb.debian.org/debian bullseye main",
    "http://deb.debian.org/debian-security bullseye-security main",
    "http://deb.debian.org/debian bookworm main",
    "http://deb.debian.org/debian bookworm-updates main",
    "http://deb.debian.org/debian-security bookworm-security main",
    "http://deb.debian.org/debian bookworm-backports main",
    "http://deb.debian.org/debian trixie main",
    "http://deb.debian.org/debian trixie-updates main",
    "http://deb.debian.org/debian-security trixie-security main",
    "http://deb.debian.org/debian trixie-backports main",
];
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// apt with its own sources list, lists, package cache and (empty)
/// preferences, all under one directory: downloading a trixie kernel must
/// never make trixie packages installable on the host.
struct PrivateApt {
    dir: PathBuf,
    /// Result of this run's `apt-get update` (run at most once).
    updated: Option<Result<(), String>>,
}

impl PrivateApt {
    fn new(dir: PathBuf) -> Self {
        PrivateApt { dir, updated: None }
    }

    fn options(&self) -> Vec<String> {
        let d = |p: &str| self.dir.join(p).display().to_string();
        [
            format!("Dir::Etc::sourcelist={}", d("sources.list")),
            "Dir::Etc::sourceparts=-".into(),
            format!("Dir::State::lists={}", d("lists")),
            format!("Dir::Cache={}", d("cache")),
            // An empty directory rather than "-", which apt reads as
            // /etc/apt/- and warns about; the host's pins do not apply.
            format!("Dir::Etc::preferencesparts={}", d("preferences.d")),
            format!("Dir::Etc::preferences={}", d("preferences")),
            // Only package indices: the host's appstream hook would fetch
            // ~15 MB of DEP-11 metadata per update.
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    fn apt(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.args(self.options()).stdin(Stdio::null());
        c
    }

    /// Writes the configuration and runs `apt-get update`, once per run.
    fn update(&mut self) -> Result<(), String> {
        if let Some(r) = &self.updated {
            return r.clone();
        }
        let r = self.update_now();
        self.updated = Some(r.clone());
        r
    }

    fn update_now(&self) -> Result<(), String> {
        for sub in ["lists/partial", "cache/archives/partial", "preferences.d"] {
            let d = self.dir.join(sub);
            fs::create_dir_all(&d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        let sources: String = APT_SOURCES
            .iter()
            .map(|s| format!("deb [signed-by={KEYRING}] {s}\n"))
            .collect();
        let path = self.dir.join("sources.list");
        fs::write(&path, sources).map_err(|e| format!("writing {}: {e}", path.display()))?;
        progress("apt-get update (private configuration)");
        let log = self.dir.join("update.log");
        let out = self
            .apt("apt-get")
            .arg("update")
            .output()
            .map_err(|e| format!("running apt-get update: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = fs::write(&log, &text);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "apt-get update failed ({}), see {}: {}",
                out.status,
                log.display(),
                last_line_matching(&text, |l| l.starts_with("E:")).unwrap_or_default()
            ))
        }
    }

    /// `apt-get download PACKAGE` into `dir`; returns the .deb.
    fn download(&self, package: &str, dir: &Path) -> Result<PathBuf, String> {
        let out = self
            .apt("apt-get")
            .args(["download", package])
            .current_dir(dir)
            .output()
            .map_err(|e| format!("running apt-get download: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "{package}: {}",
                last_line_matching(&err, |l| l.starts_with("E:"))
                    .unwrap_or_else(|| format!("apt-get download: {}", out.status))
            ));
        }
        let prefix = format!("{package}_");
        fs::read_dir(dir)
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
            .ok_or_else(|| format!("{package}: apt-get download left no .deb"))
    }
}

fn last_line_matching(text: &str, pred: impl Fn(&str) -> bool) -> Option<String> {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| pred(l))
        .map(str::to_string)
}

/// The packages that may hold a kernel's vmlinuz, in the order tried: from
/// 6.19, `linux-image-K` is an empty package depending on `linux-binary-K`.
fn kernel_packages(k: &str) -> [String; 3] {
    [
        format!("linux-binary-{k}"),
        format!("linux-image-{k}"),
        format!("linux-image-{k}-unsigned"),
    ]
}

/// Where vmlinuz sits inside the package's data: /boot up to 7.1,
/// /usr/lib/modules/K from 7.2.
fn vmlinuz_members(k: &str) -> [String; 2] {
    [
        format!("./boot/vmlinuz-{k}"),
        format!("./usr/lib/modules/{k}/vmlinuz"),
    ]
}

/// Whether `data` is an x86 bzImage (the "HdrS" boot protocol magic).
fn is_bzimage(data: &[u8]) -> bool {
    data.get(0x202..0x206) == Some(b"HdrS")
}

/// Returns the cached vmlinuz of `k`, downloading it first if needed, and
/// the seconds spent downloading (None when it was cached).
fn fetch_kernel(
    k: &str,
    tag: &str,
    cache: &Path,
    apt: &mut PrivateApt,
) -> Result<(PathBuf, Option<f64>), String> {
    let out = cache.join("vmlinuz").join(format!("vmlinuz-{k}"));
    if fs::metadata(&out).is_ok_and(|m| m.len() > 0) {
        return Ok((out, None));
    }
    let t0 = Instant::now();
    // Lists from an earlier run may be stale (the .deb they name is gone
    // from the mirror), so a download is preceded by one update per run. A
    // failed update (offline mirror, a held lock) still leaves the old lists
    // worth a try.
    if let Err(e) = apt.update() {
        progress(&format!("{tag}: {e}; trying the lists as they are"));
    }
    let work = cache
        .join("debs")
        .join(format!("{k}.{}", std::process::id()));
    fs::create_dir_all(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;
    let mut errors = Vec::new();
    let mut found = None;
    for pkg in kernel_packages(k) {
        progress(&format!("{tag}: downloading {pkg}"));
        let deb = match apt.download(&pkg, &work) {
            Ok(d) => d,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        match extract_vmlinuz(&deb, k) {
            Ok(bytes) => {
                found = Some(bytes);
                break;
            }
            Err(e) => errors.push(e),
        }
    }
    // The .debs are 15-110 MB each and only vmlinuz is kept.
    let _ = fs::remove_dir_all(&work);
    let Some(bytes) = found else {
        return Err(format!(
            "no vmlinuz for {k} in the archive: {}",
            errors.join("; ")
        ));
    };
    write_atomic(&out, &bytes)?;
    Ok((out, Some(t0.elapsed().as_secs_f64())))
}

/// vmlinuz out of a kernel .deb, with dpkg-deb and tar.
fn extract_vmlinuz(deb: &Path, k: &str) -> Result<Vec<u8>, String> {
    let name = deb.file_name().unwrap_or_default().to_string_lossy();
    let list = Command::new("dpkg-deb")
        .arg("-c")
        .arg(deb)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running dpkg-deb: {e}"))?;
    if !list.status.success() {
        return Err(format!("{name}: dpkg-deb -c failed: {}", list.status));
    }
    let listing = String::from_utf8_lossy(&list.stdout);
    let members = vmlinuz_members(k);
    let Some(member) = members.iter().find(|m| {
        listing
            .lines()
            .any(|l| l.split_whitespace().last() == Some(m.as_str()))
    }) else {
        return Err(format!("{name}: holds no vmlinuz"));
    };
    let mut data = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running dpkg-deb: {e}"))?;
    let tar_in = data.stdout.take().map(Stdio::from).unwrap_or(Stdio::null());
    let tar = Command::new("tar")
        .args(["-xOf", "-", member])
        .stdin(tar_in)
        .output();
    let _ = data.wait();
    let tar = tar.map_err(|e| format!("running tar: {e}"))?;
    if !tar.status.success() || !is_bzimage(&tar.stdout) {
        return Err(format!(
            "{name}: extracting {member} failed ({})",
            tar.status
        ));
    }
    Ok(tar.stdout)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, bytes)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = fs::remove_file(&tmp);
            format!("writing {}: {e}", path.display())
        })
}

// ---------------------------------------------------------------------------
// The initramfs
// ---------------------------------------------------------------------------

/// The /init of the VM. Results go to ttyS1 (a file on the host), between
/// `@@kernels begin NAME` / `@@kernels end NAME` lines, plus
/// `@@kernels KEY VALUE` lines; see [`parse_guest_log`].
fn init_script(duration: Duration, boot_timeout: Duration) -> String {
    // Guest-side limits, so a hung command still leaves results: the boot
    // and poweroff take ~10 s under TCG, the rest of the host's limit is
    // shared between check (1/3) and record (2/3).
    let budget = boot_timeout.as_secs().saturating_sub(40).max(30);
    let check_limit = (budget / 3).max(10);
    let record_limit = (budget - budget / 3).max(duration.as_secs() + 20);
    INIT_TEMPLATE
        .replace("@DURATION@", &format!("{}ms", duration.as_millis()))
        .replace("@CHECK_LIMIT@", &check_limit.to_string())
        .replace("@RECORD_LIMIT@", &record_limit.to_string())
}

const INIT_TEMPLATE: &str = r#"#!/bin/busybox sh
# PID 1 of a `cargo xtask kernels` VM (generated by xtask/src/kernels.rs).
# bpffs and tracefs are deliberately not mounted: the profiler must mount
# what it needs itself, as on a machine where nothing else did.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t devtmpfs devtmpfs /dev
exec </dev/null >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
exec 3>/dev/ttyS1
mark() { echo "@@kernels $*" >&3; }
section() {  # NAME FILE [LAST-LINES]
    mark begin "$1"
    if [ -n "$3" ]; then tail -n "$3" "$2" >&3; else cat "$2" >&3; fi
    # a last line without a newline must not swallow the end marker
    if [ -s "$2" ] && [ -n "$(tail -c 1 "$2")" ]; then echo >&3; fi
    mark end "$1"
}
mark uname "$(uname -r)"
mark init-uptime "$(cut -d' ' -f1 /proc/uptime)"
/wl/c_chains 0 &
W1=$!
/wl/rust_release 0 &
W2=$!
sleep 1
echo "[init] ebpf-profiler check --json"
timeout -s KILL @CHECK_LIMIT@ /usr/bin/ebpf-profiler check --json >/tmp/check.json 2>/tmp/check.err
mark check-exit $?
section check-json /tmp/check.json
section check-stderr /tmp/check.err 40
echo "[init] ebpf-profiler record -d @DURATION@ -F 99"
timeout -s KILL @RECORD_LIMIT@ /usr/bin/ebpf-profiler record --quiet -d @DURATION@ -F 99 -o /tmp/out.folded >/tmp/record.log 2>&1
mark record-exit $?
tail -n 30 /tmp/record.log
section record-log /tmp/record.log 60
if [ -f /tmp/out.folded ]; then section folded /tmp/out.folded; fi
kill -9 $W1 $W2
mark done-uptime "$(cut -d' ' -f1 /proc/uptime)"
mark done
exec 3>&-
sync
echo "[init] done"
poweroff -f
"#;

/// What goes into the initramfs, by path (without the leading `/`).
#[derive(Default)]
struct Tree {
    entries: BTreeMap<String, Entry>,
}

enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    CharDev { major: u32, minor: u32, mode: u32 },
}

impl Tree {
    fn add_parents(&mut self, path: &str) {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            self.entries
                .entry(path[..at + i].to_string())
                .or_insert(Entry::Dir);
            at += i + 1;
        }
    }

    fn add(&mut self, path: &str, entry: Entry) {
        let path = path.trim_start_matches('/');
        self.add_parents(path);
        self.entries.insert(path.to_string(), entry);
    }

    fn add_file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.add(path, Entry::File { data, mode });
    }

    /// An executable and the shared libraries `ldd` says it loads, at the
    /// paths `ldd` names (the ELF interpreter's too).
    fn add_executable(&mut self, dest: &str, data: Vec<u8>, host: &Path) -> Result<(), String> {
        self.add_file(dest, data, 0o755);
        for lib in ldd(host)? {
            let key = lib.trim_start_matches('/').to_string();
            if self.entries.contains_key(&key) {
                continue;
            }
            let bytes = fs::read(&lib).map_err(|e| format!("reading {lib}: {e}"))?;
            self.add_file(&lib, bytes, 0o755);
        }
        Ok(())
    }

    /// The tree as a cpio archive in the "newc" format the kernel unpacks.
    /// Sorted paths put every directory before what it holds; times, owners
    /// and inode numbers are fixed, so equal inputs give equal bytes.
    fn to_newc(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut ino = 0u32;
        for (path, entry) in &self.entries {
            ino += 1;
            let (mode, nlink, rdev, data): (u32, u32, (u32, u32), &[u8]) = match entry {
                Entry::Dir => (0o040_755, 2, (0, 0), &[]),
                Entry::File { data, mode } => (0o100_000 | mode, 1, (0, 0), data),
                Entry::CharDev { major, minor, mode } => {
                    (0o020_000 | mode, 1, (*major, *minor), &[])
                }
            };
            newc_entry(&mut out, ino, mode, nlink, rdev, path, data);
        }
        newc_entry(&mut out, 0, 0, 1, (0, 0), "TRAILER!!!", &[]);
        out
    }
}

fn newc_entry(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1, // with the NUL
        0,                     // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        let _ = write!(out, "{f:08x}");
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Absolute paths of the shared libraries (and interpreter) of an ELF file,
/// from `ldd`. A static executable has none.
fn ldd(path: &Path) -> Result<Vec<String>, String> {
    let out = Command::new("ldd")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable" (static): nothing to copy.
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(format!("ldd {}: {}", path.display(), err.trim()));
    }
    parse_ldd(&text).map_err(|e| format!("ldd {}: {e}", path.display()))
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x…)` lines; the vDSO has no file.
fn parse_ldd(text: &str) -> Result<Vec<String>, String> {
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(format!("{} not found", name.trim()));
                }
                rest.split_whitespace().next()
            }
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(p.to_string());
        }
    }
    Ok(libs)
}

/// Builds (or finds in the cache) the initramfs; its name is a hash of its
/// content, so a changed binary, workload or /init makes a new one.
fn build_initramfs(
    dir: &Path,
    profiler: &Path,
    built: &[(Kind, workloads::Built)],
    init: &str,
) -> Result<PathBuf, String> {
    let mut tree = Tree::default();
    for d in ["proc", "sys", "dev", "tmp", "usr/bin", "wl"] {
        tree.add(d, Entry::Dir);
    }
    // The kernel opens /dev/console for /init's stdio before anything is
    // mounted.
    tree.add(
        "dev/console",
        Entry::CharDev {
            major: 5,
            minor: 1,
            mode: 0o600,
        },
    );
    let busybox = fs::read("/bin/busybox").map_err(|e| format!("reading /bin/busybox: {e}"))?;
    tree.add_file("bin/busybox", busybox, 0o755);
    tree.add_file("init", init.as_bytes().to_vec(), 0o755);

    // The release binary carries line tables (tens of MB); the profiler
    // needs none of it to run, and the VM's memory holds the whole archive.
    let stripped = dir.join(format!(".strip.{}", std::process::id()));
    let status = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(profiler)
        .arg(&stripped)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("running objcopy: {e}"))?;
    let bin = fs::read(&stripped);
    let _ = fs::remove_file(&stripped);
    if !status.success() {
        return Err(format!(
            "objcopy --strip-debug {}: {status}",
            profiler.display()
        ));
    }
    let bin = bin.map_err(|e| format!("reading the stripped profiler: {e}"))?;
    tree.add_executable("usr/bin/ebpf-profiler", bin, profiler)?;
    for (kind, b) in built {
        // The file name is the process name (comm) the results are keyed on.
        let data = fs::read(&b.exe).map_err(|e| format!("reading {}: {e}", b.exe.display()))?;
        tree.add_executable(&format!("wl/{}", kind.exe_name()), data, &b.exe)?;
    }

    let archive = tree.to_newc();
    let hash = Sha256::digest(&archive);
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    let out = dir.join(format!("initramfs-{hex}.cpio.gz"));
    if out.is_file() {
        progress(&format!("initramfs {} (cached)", out.display()));
        return Ok(out);
    }
    // gzip(1) rather than a Rust deflate: xtask is built without
    // optimization, where compressing ~40 MB would take long.
    let tmp = out.with_extension(format!("tmp.{}", std::process::id()));
    let file = fs::File::create(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    let mut gz: Child = Command::new("gzip")
        .args(["-n", "-6"])
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .map_err(|e| format!("running gzip: {e}"))?;
    let wrote = gz
        .stdin
        .take()
        .map(|mut s| s.write_all(&archive))
        .unwrap_or_else(|| Err(io::Error::other("no stdin")));
    let status = gz.wait().map_err(|e| format!("waiting for gzip: {e}"))?;
    if wrote.is_err() || !status.success() {
        let _ = fs::remove_file(&tmp);
        return Err(format!("gzip failed: {status}"));
    }
    fs::rename(&tmp, &out).map_err(|e| format!("renaming {}: {e}", tmp.display()))?;
    prune_initramfs(dir, &out);
    let size = fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    progress(&format!(
        "initramfs {} ({:.1} MB)",
        out.display(),
        size as f64 / 1e6
    ));
    Ok(out)
}

/// Keeps the newest few initramfs images (one per binary tried recently).
fn prune_initramfs(dir: &Path, keep: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut images: Vec<(SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("initramfs-") && n.ends_with(".cpio.gz"))
        })
        .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    images.sort_by_key(|i| std::cmp::Reverse(i.0));
    for (_, p) in images.into_iter().skip(4) {
        if p != keep {
            let _ = fs::remove_file(p);
        }
    }
}

// ---------------------------------------------------------------------------
// One kernel
// ---------------------------------------------------------------------------

/// One row of the table and of results.json.
#[derive(Serialize, Debug, Default)]
pub struct Row {
    pub kernel: String,
    pub passed: bool,
    /// Why not, when not.
    pub problems: Vec<String>,
    pub download_seconds: Option<f64>,
    /// qemu's wall time, boot to poweroff.
    pub boot_seconds: Option<f64>,
    pub timed_out: bool,
    /// Boots it took: more than one when the guest died before /init ran.
    pub boot_attempts: u32,
    /// `uname -r` in the VM.
    pub uname: Option<String>,
    pub check_exit: Option<i32>,
    /// The check's JSON as printed, when it parsed.
    pub check: Option<serde_json::Value>,
    /// Program costs from the check (verified_insns null below 5.16).
    pub programs: Vec<ProgramCost>,
    pub record_exit: Option<i32>,
    pub workloads: Vec<WorkloadResult>,
    /// Console, results and qemu logs.
    pub logs: Option<String>,
}

impl Row {
    fn not_run(kernel: &str, why: &str) -> Row {
        Row {
            kernel: kernel.to_string(),
            problems: vec![why.to_string()],
            ..Row::default()
        }
    }
}

fn run_kernel(
    k: &str,
    tag: &str,
    cache: &Path,
    apt: &mut PrivateApt,
    initrd: &Path,
    run_dir: &Path,
    timeout: Duration,
) -> Row {
    if !valid_kernel_name(k) {
        return Row::not_run(k, "invalid kernel name");
    }
    let (vmlinuz, download) = match fetch_kernel(k, tag, cache, apt) {
        Ok(v) => v,
        Err(e) => return Row::not_run(k, &format!("kernel not available: {e}")),
    };
    if let Some(s) = download {
        progress(&format!("{tag}: downloaded in {s:.0} s"));
    }
    let logs = KernelLogs::new(run_dir, k);
    let mut attempt = 1;
    loop {
        progress(&format!("{tag}: booting (limit {} s)", timeout.as_secs()));
        let boot = boot(&vmlinuz, initrd, &logs, timeout);
        let mut row = Row {
            kernel: k.to_string(),
            download_seconds: download,
            boot_seconds: Some(boot.seconds),
            timed_out: boot.timed_out,
            boot_attempts: attempt,
            logs: Some(logs.prefix.display().to_string() + ".*"),
            ..Row::default()
        };
        if let Some(e) = boot.error {
            row.problems.push(e);
            return row;
        }
        let read = |p: &Path| {
            fs::read(p)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        let guest = parse_guest_log(&read(&logs.results));
        let console = read(&logs.console);
        evaluate(&mut row, &guest, &console, timeout);
        // A kernel that dies before /init speaks has not run a line of the
        // profiler (TCG boots of some kernels panic now and then in early
        // text patching); boot it again, keeping the failed attempt's logs.
        // A crash once the profiler runs is never retried.
        if guest.marks.contains_key("uname") || attempt >= BOOT_ATTEMPTS {
            return row;
        }
        progress(&format!(
            "{tag}: died before /init ran ({}); booting again",
            row.problems.join("; ")
        ));
        logs.keep_as_attempt(attempt);
        attempt += 1;
    }
}

/// Boots per kernel when the guest never reached /init.
const BOOT_ATTEMPTS: u32 = 3;

struct KernelLogs {
    prefix: PathBuf,
    console: PathBuf,
    results: PathBuf,
    qemu: PathBuf,
}

impl KernelLogs {
    fn new(run_dir: &Path, k: &str) -> Self {
        let p = |ext: &str| run_dir.join(format!("{k}.{ext}"));
        KernelLogs {
            prefix: run_dir.join(k),
            console: p("console.log"),
            results: p("results.log"),
            qemu: p("qemu.log"),
        }
    }

    /// Renames this boot's logs to `K.attemptN.*` so a retry starts clean.
    fn keep_as_attempt(&self, attempt: u32) {
        for (path, ext) in [
            (&self.console, "console.log"),
            (&self.results, "results.log"),
            (&self.qemu, "qemu.log"),
        ] {
            let kept = self.prefix.with_file_name(format!(
                "{}.attempt{attempt}.{ext}",
                self.prefix
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
            ));
            let _ = fs::rename(path, kept);
        }
    }
}

struct Boot {
    seconds: f64,
    timed_out: bool,
    /// qemu could not be run at all.
    error: Option<String>,
}

/// Boots one kernel and waits for the VM to power off (or kills it after
/// `timeout`).
fn boot(vmlinuz: &Path, initrd: &Path, logs: &KernelLogs, timeout: Duration) -> Boot {
    let t0 = Instant::now();
    let failed = |e: String| Boot {
        seconds: t0.elapsed().as_secs_f64(),
        timed_out: false,
        error: Some(e),
    };
    let qemu_log = match fs::File::create(&logs.qemu) {
        Ok(f) => f,
        Err(e) => return failed(format!("creating {}: {e}", logs.qemu.display())),
    };
    let stderr = match qemu_log.try_clone() {
        Ok(f) => f,
        Err(e) => return failed(format!("{}: {e}", logs.qemu.display())),
    };
    let serial = |p: &Path| format!("file:{}", p.display());
    // TCG: nested KVM on the machines this runs on aborts on MSR 0x10a or
    // fails to emulate while the kernel decompresses itself.
    let spawned = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-machine", "q35"])
        .args(["-m", "2G", "-smp", "2"])
        .args(["-nodefaults", "-display", "none", "-monitor", "none"])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        // panic=-1 and -no-reboot: a panicking kernel ends qemu at once.
        .args(["-append", "console=ttyS0 panic=-1"])
        .arg("-serial")
        .arg(serial(&logs.console))
        .arg("-serial")
        .arg(serial(&logs.results))
        .stdin(Stdio::null())
        .stdout(qemu_log)
        .stderr(stderr)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return failed(format!("running qemu-system-x86_64: {e}")),
    };
    let mut timed_out = false;
    let status: Option<ExitStatus> = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if t0.elapsed() >= timeout => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(_) => break None,
        }
    };
    let seconds = t0.elapsed().as_secs_f64();
    let error = match status {
        Some(s) if !s.success() && !timed_out => {
            let log = fs::read_to_string(&logs.qemu).unwrap_or_default();
            Some(format!(
                "qemu failed ({s}): {}",
                log.lines().last().unwrap_or("").trim()
            ))
        }
        _ => None,
    };
    Boot {
        seconds,
        timed_out,
        error,
    }
}

// ---------------------------------------------------------------------------
// What came back from the VM
// ---------------------------------------------------------------------------

/// The VM's results log, split at its marker lines.
#[derive(Debug, Default, PartialEq)]
pub struct GuestLog {
    /// `@@kernels KEY VALUE` lines (the last value of each key).
    pub marks: BTreeMap<String, String>,
    /// `@@kernels begin NAME` … `@@kernels end NAME` blocks. A block cut off
    /// by the end of the log is kept as far as it got.
    pub sections: BTreeMap<String, String>,
}

impl GuestLog {
    fn exit_code(&self, key: &str) -> Option<i32> {
        self.marks.get(key).and_then(|v| v.trim().parse().ok())
    }
}

pub fn parse_guest_log(text: &str) -> GuestLog {
    let mut log = GuestLog::default();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        // The tty turns "\n" into "\r\n".
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("@@kernels ") {
            let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
            match key {
                "begin" => {
                    if let Some((name, body)) = open.take() {
                        log.sections.insert(name, body);
                    }
                    open = Some((value.to_string(), String::new()));
                }
                "end" => {
                    if let Some((name, body)) = open.take() {
                        log.sections.insert(name, body);
                    }
                }
                _ => {
                    log.marks.insert(key.to_string(), value.to_string());
                }
            }
            continue;
        }
        if let Some((_, body)) = &mut open {
            body.push_str(line);
            body.push('\n');
        }
    }
    if let Some((name, body)) = open {
        log.sections.insert(name, body);
    }
    log
}

/// `ebpf-profiler check --json` output (fields beyond these are kept in
/// [`Row::check`] only).
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct CheckReport {
    pub ok: bool,
    #[serde(default)]
    pub problems: Vec<String>,
    #[serde(default)]
    pub programs: Vec<ProgramCost>,
}

/// One program's verifier cost.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq)]
pub struct ProgramCost {
    pub name: String,
    /// Instructions the verifier processed (kernel >= 5.16).
    #[serde(default)]
    pub verified_insns: Option<u64>,
    #[serde(default)]
    pub load_ms: Option<f64>,
}

/// The check's report, or why there is none. Its stdout is one JSON object.
pub fn parse_check(
    stdout: Option<&str>,
    stderr: &str,
) -> Result<(CheckReport, serde_json::Value), String> {
    let text = stdout.unwrap_or("").trim();
    if text.is_empty() {
        let why = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no output");
        return Err(format!("check printed no JSON ({why})"));
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("check printed invalid JSON: {e}"))?;
    let report: CheckReport = serde_json::from_value(value.clone())
        .map_err(|e| format!("check JSON does not fit the schema: {e}"))?;
    Ok((report, value))
}

/// Samples of one workload and how many of them hold a whole expected chain.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct WorkloadResult {
    pub name: String,
    pub samples: u64,
    /// 0.0–1.0.
    pub complete_chain_share: f64,
}

/// The stacks of process `comm` in folded text (`comm;root;…;leaf count`),
/// root first, without the comm and without the `_[k]` (kernel) and `_[i]`
/// (inlined) suffixes the folded writer adds, so names compare with
/// [`Kind::expected_chains`] the way the unwinding tests compare them.
pub fn stacks_of(folded: &str, comm: &str) -> Vec<(Vec<String>, u64)> {
    let mut out = Vec::new();
    for line in folded.lines() {
        let Some((stack, count)) = line.trim_end().rsplit_once(' ') else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else {
            continue;
        };
        let mut parts = stack.split(';');
        if parts.next() != Some(comm) {
            continue;
        }
        let frames = parts
            .map(|f| {
                f.strip_suffix("_[k]")
                    .or_else(|| f.strip_suffix("_[i]"))
                    .unwrap_or(f)
                    .to_string()
            })
            .collect();
        out.push((frames, count));
    }
    out
}

pub fn workload_result(folded: &str, kind: Kind) -> WorkloadResult {
    let stacks = stacks_of(folded, kind.comm());
    WorkloadResult {
        name: kind.exe_name().to_string(),
        samples: stacks.iter().map(|(_, c)| c).sum(),
        complete_chain_share: workloads::full_chain_share(&stacks, &kind.expected_chains()),
    }
}

/// The rules a kernel must meet; returns the ways it falls short.
pub fn judge(
    check: &Result<CheckReport, String>,
    check_exit: Option<i32>,
    record_exit: Option<i32>,
    record_error: Option<&str>,
    workloads: &[WorkloadResult],
) -> Vec<String> {
    let mut problems = Vec::new();
    match check {
        Err(e) => problems.push(e.clone()),
        Ok(c) => {
            if !c.ok {
                let why = if c.problems.is_empty() {
                    "no reason given".to_string()
                } else {
                    c.problems.join("; ")
                };
                problems.push(format!("check failed: {why}"));
            } else if check_exit != Some(0) {
                problems.push(format!(
                    "check said ok but exited {}",
                    check_exit.map_or("abnormally".into(), |c| c.to_string())
                ));
            }
            for p in &c.programs {
                if let Some(n) = p.verified_insns.filter(|&n| n > MAX_VERIFIED_INSNS) {
                    problems.push(format!(
                        "{}: {} verified instructions > {}",
                        p.name,
                        thousands(n),
                        thousands(MAX_VERIFIED_INSNS)
                    ));
                }
            }
        }
    }
    match record_exit {
        None => problems.push("record did not finish".into()),
        Some(0) => {}
        Some(c) => problems.push(match record_error {
            Some(e) => format!("record exited {c}: {e}"),
            None => format!("record exited {c}"),
        }),
    }
    // Only a recording that produced something has samples to count.
    if record_exit == Some(0) {
        for w in workloads {
            if w.samples < MIN_SAMPLES {
                problems.push(format!("{}: {} samples < {MIN_SAMPLES}", w.name, w.samples));
            } else if w.complete_chain_share < MIN_SHARE {
                problems.push(format!(
                    "{}: complete chains {:.1} % < {:.0} %",
                    w.name,
                    w.complete_chain_share * 100.0,
                    MIN_SHARE * 100.0
                ));
            }
        }
    }
    problems
}

/// The line of record's output that says why it failed.
fn record_error(log: &str) -> Option<String> {
    last_line_matching(log, |l| l.starts_with("ebpf-profiler:"))
        .or_else(|| last_line_matching(log, |l| l.to_ascii_lowercase().contains("error")))
        .or_else(|| last_line_matching(log, |l| !l.is_empty()))
        .map(|l| truncate(&l, 300))
}

fn evaluate(row: &mut Row, guest: &GuestLog, console: &str, timeout: Duration) {
    row.uname = guest.marks.get("uname").cloned();
    row.check_exit = guest.exit_code("check-exit");
    row.record_exit = guest.exit_code("record-exit");
    if row.uname.is_none() {
        // /init never spoke: the kernel did not boot far enough.
        let console = console.replace('\r', "");
        let why = last_line_matching(&console, |l| {
            l.contains("Kernel panic") || l.contains("BUG:") || l.contains("Oops")
        })
        .or_else(|| last_line_matching(&console, |l| !l.is_empty()))
        .map(|l| truncate(&l, 200))
        .unwrap_or_else(|| "empty console".into());
        row.problems.push(if row.timed_out {
            format!(
                "no results: boot timed out after {} s; console: {why}",
                timeout.as_secs()
            )
        } else {
            format!("no results from the VM; console: {why}")
        });
        return;
    }
    let check = parse_check(
        guest.sections.get("check-json").map(String::as_str),
        guest
            .sections
            .get("check-stderr")
            .map_or("", String::as_str),
    );
    if let Ok((report, value)) = &check {
        row.check = Some(value.clone());
        row.programs = report.programs.clone();
    }
    let check = check.map(|(r, _)| r);
    let folded = guest.sections.get("folded").map_or("", String::as_str);
    if row.record_exit == Some(0) {
        row.workloads = WORKLOADS
            .iter()
            .map(|&k| workload_result(folded, k))
            .collect();
    }
    let rec_err = guest
        .sections
        .get("record-log")
        .and_then(|l| record_error(l));
    row.problems = judge(
        &check,
        row.check_exit,
        row.record_exit,
        rec_err.as_deref(),
        &row.workloads,
    );
    if row.timed_out {
        row.problems.push(format!(
            "boot timed out after {} s (qemu killed)",
            timeout.as_secs()
        ));
    } else if !guest.marks.contains_key("done") {
        row.problems
            .push("the VM stopped before /init finished".into());
    }
    row.passed = row.problems.is_empty();
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct RunReport {
    binary: String,
    initramfs: String,
    duration_ms: u64,
    timeout_s: u64,
    total_seconds: f64,
    kernels: Vec<Row>,
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

/// Programs that cost the verifier fewer instructions than this are
/// summed up in one "n small" entry of the table (results.json has them).
const SMALL_PROGRAM: u64 = 1_000;

/// `sample 4,733 · unwind_native 4,031 · 3 small`, costliest first; kernels
/// before 5.16 do not report the cost.
fn verified_cell(row: &Row) -> String {
    if row.programs.is_empty() {
        return "–".into();
    }
    if row.programs.iter().all(|p| p.verified_insns.is_none()) {
        return "n/a (kernel < 5.16)".into();
    }
    let mut programs: Vec<&ProgramCost> = row.programs.iter().collect();
    programs.sort_by_key(|p| std::cmp::Reverse(p.verified_insns));
    let mut parts = Vec::new();
    let mut small = 0;
    for p in programs {
        match p.verified_insns {
            Some(n) if n < SMALL_PROGRAM => small += 1,
            Some(n) => parts.push(format!("{} {}", p.name, thousands(n))),
            None => parts.push(format!("{} ?", p.name)),
        }
    }
    if small > 0 {
        parts.push(format!("{small} small"));
    }
    parts.join(" · ")
}

/// The results as a Markdown table, padded so it also reads as plain text.
pub fn render_table(rows: &[Row]) -> String {
    let mut header = vec![
        "kernel".to_string(),
        "loads".into(),
        "verified instructions".into(),
    ];
    header.push(format!(
        "samples ({})",
        WORKLOADS.map(|k| k.exe_name()).join(" / ")
    ));
    header.extend(
        WORKLOADS
            .iter()
            .map(|k| format!("{} complete", k.exe_name())),
    );
    header.push("seconds".into());
    header.push("verdict".into());
    let mut table = vec![header];
    for r in rows {
        let mut cells = vec![r.kernel.clone()];
        cells.push(match r.record_exit {
            Some(0) => "yes".into(),
            Some(_) => "no".into(),
            None => "–".into(),
        });
        cells.push(verified_cell(r));
        if r.workloads.is_empty() {
            cells.push("–".into());
            cells.extend(WORKLOADS.iter().map(|_| "–".to_string()));
        } else {
            cells.push(
                r.workloads
                    .iter()
                    .map(|w| w.samples.to_string())
                    .collect::<Vec<_>>()
                    .join(" / "),
            );
            cells.extend(
                r.workloads
                    .iter()
                    .map(|w| format!("{:.1} %", w.complete_chain_share * 100.0)),
            );
        }
        cells.push(r.boot_seconds.map_or("–".into(), |s| format!("{s:.0}")));
        cells.push(if r.passed && r.boot_attempts > 1 {
            format!(
                "pass (boot {}: earlier ones died before /init)",
                r.boot_attempts
            )
        } else if r.passed {
            "pass".into()
        } else {
            format!(
                "FAIL: {}",
                r.problems
                    .iter()
                    .map(|p| truncate(p, 120))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        });
        table.push(cells);
    }
    let cols = table[0].len();
    let table: Vec<Vec<String>> = table
        .into_iter()
        .map(|r| r.into_iter().map(|c| c.replace('|', "\\|")).collect())
        .collect();
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let mut s = String::from("|");
        for (c, w) in cells.iter().zip(&widths) {
            let _ = write!(s, " {c}{} |", " ".repeat(w - c.chars().count()));
        }
        s.push('\n');
        s
    };
    let mut out = line(&table[0]);
    out.push('|');
    for w in &widths {
        let _ = write!(out, "{}|", "-".repeat(w + 2));
    }
    out.push('\n');
    for r in &table[1..] {
        out.push_str(&line(r));
    }
    out
}

/// `<logs>/<UTC time>`, and `<logs>/latest` pointing to it.
fn new_run_dir(logs: &Path) -> Result<PathBuf, String> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = utc_stamp(secs);
    let mut dir = logs.join(&base);
    let mut n = 1;
    while dir.exists() {
        n += 1;
        dir = logs.join(format!("{base}-{n}"));
    }
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    prune_runs(logs, KEEP_RUNS);
    let latest = logs.join("latest");
    let _ = fs::remove_file(&latest);
    if let Some(name) = dir.file_name() {
        let _ = std::os::unix::fs::symlink(name, &latest);
    }
    Ok(dir)
}

/// Run directories kept under `<cache>/logs` (about 1 MB each); the cache
/// lives on a CI machine for good.
const KEEP_RUNS: usize = 30;

/// Deletes all but the newest `keep` run directories (their names sort by
/// time).
fn prune_runs(logs: &Path, keep: usize) {
    let Ok(entries) = fs::read_dir(logs) else {
        return;
    };
    let mut runs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() >= 15 && n.as_bytes()[..8].iter().all(u8::is_ascii_digit))
        })
        .collect();
    runs.sort();
    let old = runs.len().saturating_sub(keep);
    for p in &runs[..old] {
        let _ = fs::remove_dir_all(p);
    }
}

/// `YYYYMMDD-HHMMSS` (UTC) of a Unix time.
pub fn utc_stamp(secs: u64) -> String {
    // Days to civil date (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_list_skips_comments() {
        let text = "# header\n\n5.10.0-46-amd64\n  6.1.0-57-amd64  # bookworm\n#7.0\n";
        assert_eq!(
            parse_kernel_list(text),
            vec!["5.10.0-46-amd64", "6.1.0-57-amd64"]
        );
        assert!(valid_kernel_name("6.12.118+deb12-amd64"));
        assert!(!valid_kernel_name("../etc"));
        assert!(!valid_kernel_name("a b"));
        assert!(!valid_kernel_name(""));
    }

    #[test]
    fn the_shipped_list_parses() {
        let text = include_str!("../kernels.txt");
        let list = parse_kernel_list(text);
        assert!(list.len() >= 11, "{list:?}");
        assert!(list.iter().all(|k| valid_kernel_name(k)), "{list:?}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
    }

    #[test]
    fn guest_log_sections_and_marks() {
        let log = "@@kernels uname 6.1.0-57-amd64\r\n\
                   @@kernels check-exit 2\r\n\
                   @@kernels begin check-json\r\n\
                   @@kernels end check-json\r\n\
                   @@kernels begin check-stderr\r\n\
                   error: unrecognized subcommand 'check'\r\n\
                   @@kernels end check-stderr\r\n\
                   noise between sections\r\n\
                   @@kernels record-exit 0\r\n\
                   @@kernels begin folded\r\n\
                   c_chains;main;chain_x;chain_y 3\r\n";
        let g = parse_guest_log(log);
        assert_eq!(g.marks["uname"], "6.1.0-57-amd64");
        assert_eq!(g.exit_code("check-exit"), Some(2));
        assert_eq!(g.exit_code("record-exit"), Some(0));
        assert_eq!(g.exit_code("nothing"), None);
        assert_eq!(g.sections["check-json"], "");
        assert_eq!(
            g.sections["check-stderr"],
            "error: unrecognized subcommand 'check'\n"
        );
        // Cut off by the end of the log: kept as far as it got.
        assert_eq!(g.sections["folded"], "c_chains;main;chain_x;chain_y 3\n");
        assert!(!g.marks.contains_key("done"));
        let err = parse_check(Some(""), &g.sections["check-stderr"]).unwrap_err();
        assert!(err.contains("unrecognized subcommand"), "{err}");
    }

    #[test]
    fn check_json() {
        let json = r#"{"kernel":"6.1.0-57-amd64","ok":true,"problems":[],
            "programs":[{"name":"sample","verified_insns":4733,"load_ms":12.5},
                        {"name":"unwind_native","verified_insns":null,"load_ms":3.1}],
            "features":[{"name":"bpf_task_pt_regs","available":true,"needed_for":"x"}]}"#;
        let (r, v) = parse_check(Some(json), "").unwrap();
        assert!(r.ok);
        assert_eq!(r.programs[0].verified_insns, Some(4733));
        assert_eq!(r.programs[1].verified_insns, None);
        assert_eq!(v["features"][0]["name"], "bpf_task_pt_regs");
        assert!(parse_check(Some("{not json"), "").is_err());
        assert!(parse_check(Some(r#"{"problems":[]}"#), "").is_err());
        assert!(parse_check(None, "").unwrap_err().contains("no output"));
    }

    const FOLDED: &str = "\
c_chains;_start;__libc_start_call_main;main;chain_a;chain_b;chain_c 300
c_chains;_start;__libc_start_call_main;main;chain_x;chain_y 296
c_chains;_start;main;chain_x;chain_y;asm_sysvec_apic_timer_interrupt_[k];irq_exit_rcu_[k] 3
c_chains;chain_c 1
rust_release;_start;main;std::rt::lang_start_internal;rust_release::main;rust_chain_outer;rust_chain_middle;rust_chain_leaf 500
rust_release;_start;main;rust_release::main_[i];rust_chain_outer;rust_chain_middle;rust_chain_leaf 2
swapper;cpu_idle_[k] 40
not a folded line
";

    #[test]
    fn folded_stacks_per_workload() {
        let c = stacks_of(FOLDED, "c_chains");
        assert_eq!(c.len(), 4);
        assert_eq!(
            c[2].0.last().map(String::as_str),
            Some("irq_exit_rcu"),
            "kernel suffix dropped"
        );
        let c = workload_result(FOLDED, Kind::CChains);
        assert_eq!(c.samples, 600);
        assert!((c.complete_chain_share - 599.0 / 600.0).abs() < 1e-12);
        let r = workload_result(FOLDED, Kind::RustRelease);
        assert_eq!(r.samples, 502);
        assert!((r.complete_chain_share - 1.0).abs() < 1e-12);
        assert_eq!(workload_result("", Kind::CChains).samples, 0);
    }

    fn ok_check(insns: &[Option<u64>]) -> Result<CheckReport, String> {
        Ok(CheckReport {
            ok: true,
            problems: vec![],
            programs: insns
                .iter()
                .enumerate()
                .map(|(i, &n)| ProgramCost {
                    name: format!("p{i}"),
                    verified_insns: n,
                    load_ms: None,
                })
                .collect(),
        })
    }

    fn w(name: &str, samples: u64, share: f64) -> WorkloadResult {
        WorkloadResult {
            name: name.into(),
            samples,
            complete_chain_share: share,
        }
    }

    #[test]
    fn verdict_rules() {
        let good = [w("c_chains", 400, 0.995), w("rust_release", 420, 1.0)];
        let check = ok_check(&[Some(4733), Some(4031)]);
        assert!(judge(&check, Some(0), Some(0), None, &good).is_empty());
        // Below 5.16 the cost is unknown, which is no failure.
        assert!(judge(&ok_check(&[None, None]), Some(0), Some(0), None, &good).is_empty());

        let p = judge(&ok_check(&[Some(124_894)]), Some(0), Some(0), None, &good);
        assert_eq!(p, vec!["p0: 124,894 verified instructions > 50,000"]);
        // Exactly at the limit passes.
        assert!(judge(&ok_check(&[Some(50_000)]), Some(0), Some(0), None, &good).is_empty());

        let failed = Ok(CheckReport {
            ok: false,
            problems: vec!["bpf_loop missing".into()],
            programs: vec![],
        });
        let p = judge(
            &failed,
            Some(1),
            Some(1),
            Some("ebpf-profiler: load failed"),
            &[],
        );
        assert_eq!(
            p,
            vec![
                "check failed: bpf_loop missing",
                "record exited 1: ebpf-profiler: load failed"
            ]
        );

        let missing: Result<CheckReport, String> = Err("check printed no JSON (x)".into());
        let p = judge(&missing, Some(2), Some(0), None, &good);
        assert_eq!(p, vec!["check printed no JSON (x)"]);

        let few = [w("c_chains", 49, 1.0), w("rust_release", 400, 0.985)];
        let p = judge(&check, Some(0), Some(0), None, &few);
        assert_eq!(
            p,
            vec![
                "c_chains: 49 samples < 50",
                "rust_release: complete chains 98.5 % < 99 %"
            ]
        );
        assert_eq!(
            judge(&check, Some(0), None, None, &[]),
            vec!["record did not finish"]
        );
        assert_eq!(
            judge(&check, Some(1), Some(0), None, &good),
            vec!["check said ok but exited 1"]
        );
    }

    #[test]
    fn evaluate_a_whole_log() {
        let log = "@@kernels uname 7.3.4+deb13-amd64\n@@kernels check-exit 0\n\
                   @@kernels begin check-json\n\
                   {\"ok\":true,\"problems\":[],\"programs\":[{\"name\":\"sample\",\"verified_insns\":22320}]}\n\
                   @@kernels end check-json\n@@kernels record-exit 0\n@@kernels begin folded\n"
            .to_string()
            + FOLDED
            + "@@kernels end folded\n@@kernels done\n";
        let mut row = Row::default();
        evaluate(
            &mut row,
            &parse_guest_log(&log),
            "",
            Duration::from_secs(240),
        );
        assert!(row.passed, "{:?}", row.problems);
        assert_eq!(verified_cell(&row), "sample 22,320");
        row.programs.push(ProgramCost {
            name: "on_exec".into(),
            verified_insns: Some(38),
            load_ms: None,
        });
        row.programs.insert(
            0,
            ProgramCost {
                name: "unwind_native".into(),
                verified_insns: Some(4031),
                load_ms: None,
            },
        );
        assert_eq!(
            verified_cell(&row),
            "sample 22,320 · unwind_native 4,031 · 1 small"
        );
        let table = render_table(&[row]);
        assert!(table.contains("| 600 / 502 "), "{table}");
        assert!(table.contains("| 99.8 % "), "{table}");

        let mut row = Row {
            timed_out: true,
            ..Row::default()
        };
        evaluate(
            &mut row,
            &parse_guest_log(""),
            "[    1.0] Kernel panic - not syncing: VFS\n",
            Duration::from_secs(240),
        );
        assert!(!row.passed);
        assert!(row.problems[0].contains("timed out after 240 s"));
        assert!(row.problems[0].contains("Kernel panic"));
    }

    #[test]
    fn elf_and_ldd() {
        let mut elf = vec![0u8; 64 + 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20] = 64; // e_phoff
        elf[0x36] = 56; // e_phentsize
        elf[0x38] = 1; // e_phnum
        elf[64] = 1; // PT_LOAD
        assert_eq!(elf_is_dynamic(&elf), Some(false));
        elf[64] = 3; // PT_INTERP
        assert_eq!(elf_is_dynamic(&elf), Some(true));
        assert_eq!(elf_is_dynamic(b"#!/bin/sh\n"), None);

        let out = "\tlinux-vdso.so.1 (0x00007ffc)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(out).unwrap(),
            vec![
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
    }

    #[test]
    fn newc_archive() {
        let mut t = Tree::default();
        t.add_file("/usr/bin/x", b"hello".to_vec(), 0o755);
        t.add(
            "dev/console",
            Entry::CharDev {
                major: 5,
                minor: 1,
                mode: 0o600,
            },
        );
        let a = t.to_newc();
        assert_eq!(a.len() % 4, 0);
        let text = String::from_utf8_lossy(&a);
        // Parents first, then the file, then the trailer.
        let pos = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s} missing"));
        assert!(pos("usr\0") < pos("usr/bin\0"));
        assert!(pos("usr/bin\0") < pos("usr/bin/x\0"));
        assert!(pos("hello") < pos("TRAILER!!!"));
        // The first header: "dev" (ino 1, a directory).
        assert_eq!(&a[..6], b"070701");
        assert_eq!(&a[6..14], b"00000001");
        assert_eq!(&a[14..22], b"000041ed");
        // Deterministic.
        assert_eq!(a, t.to_newc());
    }

    #[test]
    fn stamps_and_numbers() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(1_796_656_245), "20261207-151045");
        assert_eq!(thousands(4733), "4,733");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_001), "1,000,001");
        assert_eq!(truncate("abcdef", 3), "abc…");
    }
}
