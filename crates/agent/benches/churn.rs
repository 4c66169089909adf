//! Process churn: a parallel build, a shell script, a process-spawning
//! Python script — many short-lived processes — under each profiler.
//!
//! Workloads (built in a temporary directory at start):
//! * `make -jN` over small C files (`gcc -O2 -c`, N = online CPUs), `make
//!   clean` before every run;
//! * `sh -c` running `grep | sort | wc` on a small file in a loop;
//! * Debian's `/usr/bin/python3` running `subprocess.run(["/bin/true"])`
//!   in a loop.
//!
//! Profilers, whole system: none; `ebpf-profiler record -F 99` and
//! `ebpf-profiler agent -F 20` (the release binary, exporting OTLP/gRPC to
//! `ebpf-profiler collector` on 127.0.0.1); `perf record -a -g -F 99` and
//! `perf record -a --call-graph dwarf -F 99`. Runs are interleaved (every
//! workload under every profiler in each round, the profiler order rotated
//! from round to round) and medians reported.
//!
//! Each run: start the profiler, wait until it samples, run the workload
//! (its wall time, and its CPU time from `wait4`: the workload with every
//! descendant), stop the profiler with SIGINT and wait for it to write its
//! output. "Sampling" is seen, for ours, when the profiler process holds
//! BPF links of its sampling program to a perf event on every CPU (its
//! `/proc/PID/fdinfo`: `record` prints nothing when it starts, the agent's
//! metrics would only say so for the agent, and `bpftool` does not tell
//! whose program it lists — the overhead bench may run at the same time);
//! for perf, after `common::PERF_SETTLE` (perf says nothing either, as in
//! the overhead bench).
//!
//! Figures: profiler CPU while the workload ran (/proc/PID/stat before and
//! after) and over the profiler's whole life (start-up scan, writing the
//! output: `wait4`); samples per process name — ours from the folded output
//! (`record`) or from the OTLP requests the collector accepted (`agent`,
//! decoded with the `otlp` crate), perf from `perf script -F comm` (idle
//! `swapper` samples left out: ours does not sample idle CPUs); for ours the
//! share of complete chains and the drops by reason (`record`'s summary
//! line; the agent's Prometheus metrics and error frames).
//!
//! Everything else on the machine is sampled too (whole system), so busy
//! neighbours (builds, qemu VMs) add samples under their own names and noise
//! to the times: the header says what the load was.
//!
//! `cargo bench -p agent --bench churn` (5 rounds), `-- --quick` (1 round,
//! smaller workloads, CI), `-- --rounds N`. `EBPF_PROFILER_BIN=PATH` profiles
//! with another build of ours (before/after); by default
//! `<target>/release/ebpf-profiler`, built once when missing. Needs root,
//! gcc, make, python3; perf is optional (its rows say when it is missing),
//! and so is root for the baseline rows.

mod common;

use common::{CallGraph, Exited};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Ours (`record`) and perf sample at this rate on each CPU.
const RECORD_HZ: u64 = 99;
/// The agent's default rate.
const AGENT_HZ: u64 = 20;
/// Longest wait for a profiler to start sampling (it scans every process first).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a profiler to write its output after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// Set by SIGINT/SIGTERM: finish the current run, clean up, print what we have.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Workload {
    Make,
    Shell,
    Python,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Profiler {
    None,
    Record,
    Agent,
    PerfFp,
    PerfDwarf,
}

impl Profiler {
    const ALL: [Profiler; 5] = [
        Profiler::None,
        Profiler::Record,
        Profiler::Agent,
        Profiler::PerfFp,
        Profiler::PerfDwarf,
    ];

    fn label(self) -> &'static str {
        match self {
            Profiler::None => "no profiler",
            Profiler::Record => "ebpf-profiler record -F 99",
            Profiler::Agent => "ebpf-profiler agent -F 20",
            Profiler::PerfFp => "perf record -g -F 99",
            Profiler::PerfDwarf => "perf --call-graph dwarf -F 99",
        }
    }
}

/// Workload sizes.
#[derive(Clone, Copy)]
struct Sizes {
    c_files: usize,
    shell_loops: usize,
    spawns: usize,
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
struct Run {
    wall: f64,
    /// The workload's user + system seconds (with its descendants).
    workload_cpu: f64,
    /// The profiler's CPU seconds while the workload ran.
    profiler_cpu: f64,
    /// The profiler's CPU seconds from spawn to exit (start-up, output).
    profiler_cpu_life: f64,
    samples: Option<u64>,
    /// Samples whose chain reached the end of the stack (ours).
    complete: Option<u64>,
    /// Samples dropped, by reason (`None`: not known).
    dropped: Option<BTreeMap<String, u64>>,
    /// Samples per process name.
    by_comm: BTreeMap<String, u64>,
    /// Complete samples per process name (ours).
    complete_by_comm: BTreeMap<String, u64>,
    /// CPU seconds of the helper the profiler needs (the agent's collector).
    helper_cpu: f64,
    /// `unwind row array full` warnings of ours.
    rows_full: u64,
    /// Chains ended by an unwind error, by error (`record`'s summary).
    errors: BTreeMap<String, u64>,
}

/// Everything a run needs.
struct Ctx {
    dir: PathBuf,
    cpus: usize,
    sizes: Sizes,
    /// Ours, or why it is not available.
    ours: Result<PathBuf, String>,
    perf: Result<(), String>,
    python: PathBuf,
}

fn main() {
    let started = Instant::now();
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 })
        .max(1);
    let sizes = if quick {
        Sizes {
            c_files: 24,
            shell_loops: 200,
            spawns: 100,
        }
    } else {
        Sizes {
            c_files: 48,
            shell_loops: 500,
            spawns: 200,
        }
    };
    install_signal_handlers();
    // SAFETY: geteuid and sysconf have no preconditions.
    let (root, cpus) = unsafe {
        (
            libc::geteuid() == 0,
            libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize,
        )
    };
    for tool in ["gcc", "make", "sh", "grep", "sort", "wc"] {
        assert!(common::have(tool), "{tool} is needed for the workloads");
    }
    // Debian's, not a version manager's shim (a shell script).
    let python = if Path::new("/usr/bin/python3").exists() {
        PathBuf::from("/usr/bin/python3")
    } else {
        PathBuf::from("python3")
    };

    let ours = if !root {
        Err("needs root".to_string())
    } else {
        profiler_binary()
    };
    let perf = if !common::have("perf") {
        Err("perf is not installed (apt-get install linux-perf)".to_string())
    } else if !root {
        Err("needs root".to_string())
    } else {
        Ok(())
    };
    let scratch = Scratch::new();
    let ctx = Ctx {
        dir: scratch.0.clone(),
        cpus,
        sizes,
        ours,
        perf,
        python,
    };
    write_workloads(&ctx);
    let workloads = [Workload::Make, Workload::Shell, Workload::Python];

    print_header(&ctx, rounds, quick);
    let load_before = loadavg();
    // One untimed run of each: page cache, dynamic linker caches, pyc files.
    for &w in &workloads {
        if let Err(e) = run_workload(&ctx, w) {
            panic!("workload {w:?} failed without a profiler: {e}");
        }
    }

    let mut results: Results = HashMap::new();
    let mut neighbours: BTreeSet<String> = BTreeSet::new();
    'rounds: for round in 0..rounds {
        for &w in &workloads {
            for k in 0..Profiler::ALL.len() {
                let p = Profiler::ALL[(k + round) % Profiler::ALL.len()];
                if INTERRUPTED.load(Ordering::Relaxed) {
                    eprintln!("interrupted: stopping after the runs done so far");
                    break 'rounds;
                }
                neighbours.extend(busy_neighbours());
                eprintln!(
                    "round {}/{rounds}: {} under {}",
                    round + 1,
                    workload_label(w, &ctx),
                    p.label()
                );
                let t = Instant::now();
                let r = measure(&ctx, w, p);
                match &r {
                    Ok(run) => eprintln!(
                        "  workload {:.2} s; the run took {:.1} s",
                        run.wall,
                        t.elapsed().as_secs_f64()
                    ),
                    Err(e) => eprintln!("  failed: {e}"),
                }
                results.entry((w, p)).or_default().push(r);
            }
        }
    }

    println!(
        "\nLoad average (1, 5, 15 min) before: {load_before}; after: {}; busy neighbours seen: {}",
        loadavg(),
        if neighbours.is_empty() {
            "none".to_string()
        } else {
            neighbours.into_iter().collect::<Vec<_>>().join(", ")
        }
    );
    for &w in &workloads {
        print_workload_table(&ctx, w, &results, rounds);
    }
    for &w in &workloads {
        print_comm_table(w, &results);
    }
    println!(
        "\nchurn bench took {:.0} s ({rounds} round(s){})",
        started.elapsed().as_secs_f64(),
        if quick { ", --quick" } else { "" }
    );
    drop(scratch);
}

fn install_signal_handlers() {
    extern "C" fn on_signal(_: libc::c_int) {
        INTERRUPTED.store(true, Ordering::Relaxed);
    }
    // SAFETY: the handler only stores an atomic.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// The temporary directory of the workloads and outputs, removed on every exit path.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let d = std::env::temp_dir().join(format!("ebpf-profiler-churn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temporary directory");
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A profiler (or its collector) that is stopped — SIGINT, then SIGKILL
/// after a while — however the run ends.
struct Proc {
    child: Child,
    stderr: PathBuf,
    reaped: bool,
}

impl Proc {
    fn spawn(mut cmd: Command, stderr: PathBuf) -> Result<Proc, String> {
        let file = std::fs::File::create(&stderr).map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
        Ok(Proc {
            child,
            stderr,
            reaped: false,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error naming how it ended when it already exited.
    fn check_alive(&mut self, what: &str) -> Result<(), String> {
        let mut status = 0;
        // SAFETY: valid pointer to a local; WNOHANG never blocks.
        let r = unsafe { libc::waitpid(self.pid() as i32, &mut status, libc::WNOHANG) };
        if r == self.pid() as i32 {
            self.reaped = true;
            return Err(format!(
                "{what} exited (status {status:#x}): {}",
                tail(&self.stderr_text())
            ));
        }
        Ok(())
    }

    /// SIGINT, wait (SIGKILL after `STOP_TIMEOUT`).
    fn stop(&mut self) -> Option<Exited> {
        if self.reaped {
            return None;
        }
        self.reaped = true;
        common::interrupt_and_wait(&self.child, Some(STOP_TIMEOUT))
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.reaped {
            common::interrupt_and_wait(&self.child, Some(Duration::from_secs(10)));
        }
    }
}

/// The last lines of a profiler's stderr, for an error message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `EBPF_PROFILER_BIN`, else `<target>/release/ebpf-profiler` (target:
/// `CARGO_TARGET_DIR` or the workspace's), built when missing.
fn profiler_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("EBPF_PROFILER_BIN") {
        let p = PathBuf::from(p);
        return if p.exists() {
            Ok(p)
        } else {
            Err(format!("EBPF_PROFILER_BIN {} does not exist", p.display()))
        };
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(t) if t.is_absolute() => t,
        Some(t) => workspace().join(t),
        None => workspace().join("target"),
    };
    let bin = target.join("release/ebpf-profiler");
    if !bin.exists() {
        eprintln!(
            "{} is missing: cargo build --release -p ebpf-profiler",
            bin.display()
        );
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "--release", "-p", "ebpf-profiler"])
            .current_dir(workspace())
            .status()
            .is_ok_and(|s| s.success());
        if !ok || !bin.exists() {
            return Err("cargo build --release -p ebpf-profiler failed".into());
        }
    }
    Ok(std::fs::canonicalize(&bin).unwrap_or(bin))
}

const C_SOURCE: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rec_N { int id; char name[32]; double weight; };

static int cmp_N(const void *a, const void *b) {
    const struct rec_N *x = a, *y = b;
    if (x->weight != y->weight) return x->weight < y->weight ? -1 : 1;
    return strcmp(x->name, y->name);
}

int sort_N(struct rec_N *r, int n) { qsort(r, n, sizeof *r, cmp_N); return n; }

double mean_N(const double *v, int n) {
    double s = 0;
    for (int k = 0; k < n; k++) s += v[k] * (k % 7 + 1);
    return n ? s / n : 0;
}

int format_N(char *out, size_t len, const struct rec_N *r) {
    return snprintf(out, len, "%d:%s:%.3f", r->id, r->name, r->weight);
}

unsigned hash_N(const char *s) {
    unsigned h = 2166136261u;
    while (*s) h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}
"#;

const MAKEFILE: &str = "SRCS := $(wildcard *.c)\nOBJS := $(SRCS:.c=.o)\n\
all: $(OBJS)\n%.o: %.c\n\tgcc -O2 -c $< -o $@\nclean:\n\trm -f *.o\n.PHONY: all clean\n";

const SPAWN_PY: &str = "import subprocess, sys\n\
for _ in range(int(sys.argv[1])):\n    subprocess.run([\"/bin/true\"], check=True)\n";

fn write_workloads(ctx: &Ctx) {
    let make = ctx.dir.join("make");
    std::fs::create_dir_all(&make).unwrap();
    for i in 0..ctx.sizes.c_files {
        std::fs::write(
            make.join(format!("unit{i:03}.c")),
            C_SOURCE.replace("_N", &format!("_{i}")),
        )
        .unwrap();
    }
    std::fs::write(make.join("Makefile"), MAKEFILE).unwrap();
    let words: String = (0..300)
        .map(|i| format!("w{:05} line {i}\n", (i * 7919) % 10007))
        .collect();
    std::fs::write(ctx.dir.join("words.txt"), words).unwrap();
    std::fs::write(ctx.dir.join("spawn.py"), SPAWN_PY).unwrap();
}

fn workload_label(w: Workload, ctx: &Ctx) -> String {
    match w {
        Workload::Make => format!(
            "make -j{} of {} C files (gcc -O2 -c)",
            ctx.cpus, ctx.sizes.c_files
        ),
        Workload::Shell => format!("sh loop: grep | sort | wc, {} times", ctx.sizes.shell_loops),
        Workload::Python => format!(
            "python3: {} x subprocess.run([\"/bin/true\"])",
            ctx.sizes.spawns
        ),
    }
}

/// The process names a workload runs.
fn workload_commands(w: Workload) -> &'static [&'static str] {
    match w {
        Workload::Make => &["make", "gcc", "cc1", "as", "sh"],
        Workload::Shell => &["sh", "grep", "sort", "wc"],
        Workload::Python => &["python3", "true"],
    }
}

/// Runs a workload to its end: (wall seconds, its wait4 figures).
fn run_workload(ctx: &Ctx, w: Workload) -> Result<(f64, Exited), String> {
    let make_dir = ctx.dir.join("make");
    let mut cmd = match w {
        Workload::Make => {
            let ok = Command::new("make")
                .arg("-s")
                .arg("-C")
                .arg(&make_dir)
                .arg("clean")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err("make clean failed".into());
            }
            let mut c = Command::new("make");
            c.arg("-s")
                .arg(format!("-j{}", ctx.cpus))
                .arg("-C")
                .arg(&make_dir);
            c
        }
        Workload::Shell => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!(
                    "i=0; while [ \"$i\" -lt {} ]; do grep -v w0000 words.txt | sort | wc -l >/dev/null; i=$((i+1)); done",
                    ctx.sizes.shell_loops
                ))
                .current_dir(&ctx.dir);
            c
        }
        Workload::Python => {
            let mut c = Command::new(&ctx.python);
            c.arg(ctx.dir.join("spawn.py"))
                .arg(ctx.sizes.spawns.to_string());
            c
        }
    };
    let err = ctx.dir.join("workload.stderr");
    let file = std::fs::File::create(&err).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .map_err(|e| format!("{w:?}: {e}"))?;
    let ex = common::wait_rusage(&child, None).ok_or("workload not waited for")?;
    let wall = t.elapsed().as_secs_f64();
    if !ex.success() {
        return Err(format!(
            "{w:?} failed (status {:#x}): {}",
            ex.status,
            tail(&std::fs::read_to_string(&err).unwrap_or_default())
        ));
    }
    Ok((wall, ex))
}

fn measure(ctx: &Ctx, w: Workload, p: Profiler) -> Result<Run, String> {
    match p {
        Profiler::None => {
            let (wall, ex) = run_workload(ctx, w)?;
            Ok(Run {
                wall,
                workload_cpu: ex.cpu_secs,
                ..Run::default()
            })
        }
        Profiler::Record => measure_record(ctx, w),
        Profiler::Agent => measure_agent(ctx, w),
        Profiler::PerfFp => measure_perf(ctx, w, CallGraph::FramePointers),
        Profiler::PerfDwarf => measure_perf(ctx, w, CallGraph::Dwarf),
    }
}

/// Whether process `pid` samples: it holds BPF links of one program to
/// perf events (not tracepoints) on at least `cpus` CPUs
/// (`/proc/PID/fdinfo` of its `bpf_link` descriptors: `link_type: perf`,
/// `prog_id`, and `tp_name` only for a tracepoint).
fn samples_on_every_cpu(pid: u32, cpus: usize) -> bool {
    let mut per_prog: BTreeMap<u64, usize> = BTreeMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if !std::fs::read_link(e.path()).is_ok_and(|l| l == Path::new("anon_inode:bpf_link")) {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            e.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        if field("link_type") == Some("perf") && field("tp_name").is_none() {
            if let Some(id) = field("prog_id").and_then(|v| v.parse().ok()) {
                *per_prog.entry(id).or_default() += 1;
            }
        }
    }
    per_prog.values().any(|&n| n >= cpus)
}

/// Waits until the profiler samples on every CPU.
fn wait_sampling(proc: &mut Proc, cpus: usize, what: &str) -> Result<(), String> {
    let t = Instant::now();
    loop {
        proc.check_alive(what)?;
        if samples_on_every_cpu(proc.pid(), cpus) {
            return Ok(());
        }
        if t.elapsed() > READY_TIMEOUT || INTERRUPTED.load(Ordering::Relaxed) {
            return Err(format!(
                "{what} did not start sampling within {:?}: {}",
                t.elapsed(),
                tail(&proc.stderr_text())
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the workload while `proc` samples: (wall, workload, profiler CPU meanwhile).
fn profiled_workload(ctx: &Ctx, w: Workload, proc: &Proc) -> Result<(f64, Exited, f64), String> {
    let cpu0 = common::proc_cpu_secs(proc.pid());
    let (wall, ex) = run_workload(ctx, w)?;
    let cpu1 = common::proc_cpu_secs(proc.pid());
    Ok((wall, ex, cpu1 - cpu0))
}

fn measure_record(ctx: &Ctx, w: Workload) -> Result<Run, String> {
    let bin = ctx.ours.as_ref().map_err(Clone::clone)?;
    let out = ctx.dir.join("record.folded");
    let _ = std::fs::remove_file(&out);
    let mut cmd = Command::new(bin);
    cmd.args([
        "record",
        "-F",
        &RECORD_HZ.to_string(),
        "-q",
        "--top",
        "0",
        "-o",
    ])
    .arg(&out)
    .env("EBPF_PROFILER_LOG", "warn");
    let mut proc = Proc::spawn(cmd, ctx.dir.join("record.stderr"))?;
    wait_sampling(&mut proc, ctx.cpus, "record")?;
    let (wall, ex, cpu) = profiled_workload(ctx, w, &proc)?;
    let life = proc.stop().ok_or("record was not waited for")?;
    let stderr = proc.stderr_text();
    let summary = RecordSummary::parse(&stderr)
        .ok_or_else(|| format!("no summary line from record: {}", tail(&stderr)))?;
    let folded = std::fs::read_to_string(&out)
        .map_err(|e| format!("{}: {e}: {}", out.display(), tail(&stderr)))?;
    let (by_comm, complete_by_comm) = folded_by_comm(&folded);
    Ok(Run {
        wall,
        workload_cpu: ex.cpu_secs,
        profiler_cpu: cpu,
        profiler_cpu_life: life.cpu_secs,
        samples: Some(summary.samples),
        complete: Some(summary.complete),
        dropped: Some(summary.dropped),
        errors: summary.errors,
        by_comm,
        complete_by_comm,
        rows_full: stderr
            .lines()
            .filter(|l| l.contains("unwind row array full"))
            .count() as u64,
        helper_cpu: 0.0,
    })
}

/// `record`'s summary line: "N samples in Xs on C CPUs at F Hz, M unwound
/// fully (P%); errors: NAME K, ...; dropped: REASON K, ...".
#[derive(Debug, Default, PartialEq)]
struct RecordSummary {
    samples: u64,
    complete: u64,
    errors: BTreeMap<String, u64>,
    dropped: BTreeMap<String, u64>,
}

impl RecordSummary {
    fn parse(stderr: &str) -> Option<RecordSummary> {
        let line = stderr
            .lines()
            .find(|l| l.contains(" samples in ") && l.contains(" unwound fully"))?;
        let mut parts = line.split("; ");
        let head = parts.next()?;
        let samples = head.split_whitespace().next()?.parse().ok()?;
        let complete = head
            .split(", ")
            .find(|p| p.contains(" unwound fully"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let mut s = RecordSummary {
            samples,
            complete,
            ..RecordSummary::default()
        };
        for part in parts {
            let (map, list) = if let Some(l) = part.strip_prefix("errors: ") {
                (&mut s.errors, l)
            } else if let Some(l) = part.strip_prefix("dropped: ") {
                (&mut s.dropped, l)
            } else {
                continue;
            };
            for item in list.split(", ") {
                if let Some((name, n)) = item.trim().rsplit_once(' ') {
                    if let Ok(n) = n.parse() {
                        map.insert(name.to_string(), n);
                    }
                }
            }
        }
        Some(s)
    }
}

/// How the folded output names an error frame (`profile`'s
/// `<unwinding aborted due to error NAME>`).
const ERROR_FRAME_PREFIX: &str = "<unwinding aborted";

/// Samples, and complete samples (no error frame), per process name of
/// folded stacks (`comm;root;...;leaf count`).
fn folded_by_comm(text: &str) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let (mut all, mut complete) = (BTreeMap::new(), BTreeMap::new());
    for l in text.lines() {
        let Some((stack, n)) = l.rsplit_once(' ') else {
            continue;
        };
        let n = n.parse::<u64>().unwrap_or(0);
        let mut frames = stack.split(';');
        let comm = frames.next().unwrap_or("").to_string();
        if !frames.any(|f| f.starts_with(ERROR_FRAME_PREFIX)) {
            *complete.entry(comm.clone()).or_default() += n;
        }
        *all.entry(comm).or_default() += n;
    }
    (all, complete)
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The agent's Prometheus counters that count lost samples, and the reason
/// each stands for (the same words as `record`'s summary).
const AGENT_DROP_METRICS: [(&str, &str); 4] = [
    (
        "ebpf_profiler_samples_pid_unknown_total",
        "process not scanned yet",
    ),
    (
        "ebpf_profiler_traces_dropped_total",
        "trace ring buffer full",
    ),
    (
        "ebpf_profiler_pid_events_dropped_total",
        "process events lost",
    ),
    (
        "ebpf_profiler_agent_export_samples_dropped_total",
        "export queue full",
    ),
];

fn measure_agent(ctx: &Ctx, w: Workload) -> Result<Run, String> {
    let bin = ctx.ours.as_ref().map_err(Clone::clone)?;
    let grpc = format!("127.0.0.1:{}", free_port()?);
    let mut c = Command::new(bin);
    c.args(["collector", "--grpc-listen", &grpc])
        .args(["--otlp-http-listen", "off", "--http-listen", "off"])
        .arg("--data-dir")
        .arg(ctx.dir.join("collector-data"))
        .env("EBPF_PROFILER_LOG", "warn");
    let mut collector = Proc::spawn(c, ctx.dir.join("collector.stderr"))?;
    let t = Instant::now();
    while TcpStream::connect(&grpc).is_err() {
        collector.check_alive("collector")?;
        if t.elapsed() > Duration::from_secs(30) {
            return Err(format!("collector not listening on {grpc} after 30 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let capture = ctx.dir.join("capture");
    let _ = std::fs::remove_dir_all(&capture);
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let mut cmd = Command::new(bin);
    cmd.arg("agent")
        .args(["--otlp-endpoint", &format!("http://{grpc}")])
        .args(["--frequency", &AGENT_HZ.to_string()])
        .args(["--metrics-listen", &metrics])
        .arg("--capture-dir")
        .arg(&capture)
        .env("EBPF_PROFILER_LOG", "warn");
    let mut agent = Proc::spawn(cmd, ctx.dir.join("agent.stderr"))?;
    wait_sampling(&mut agent, ctx.cpus, "agent")?;
    let (wall, ex, cpu) = profiled_workload(ctx, w, &agent)?;
    let text = fresh_metrics(&metrics);
    let life = agent.stop().ok_or("agent was not waited for")?;
    let stderr = agent.stderr_text();
    if !life.success() || !stderr.contains("agent stopped:") {
        return Err(format!("agent failed: {}", tail(&stderr)));
    }
    let helper = collector.stop().map_or(0.0, |e| e.cpu_secs);

    let mut dropped = BTreeMap::new();
    for (metric, reason) in AGENT_DROP_METRICS {
        if let Some(v) = prometheus_value(&text, metric) {
            dropped.insert(reason.to_string(), v);
        }
    }
    // Without its metrics the drops are unknown, not none.
    let dropped = (!dropped.is_empty()).then_some(dropped);
    let (by_comm, complete_by_comm) = decode_captures(&capture)?;
    let samples = by_comm.values().sum();
    let complete = complete_by_comm.values().sum();
    Ok(Run {
        wall,
        workload_cpu: ex.cpu_secs,
        profiler_cpu: cpu,
        profiler_cpu_life: life.cpu_secs,
        samples: Some(samples),
        complete: Some(complete),
        dropped,
        by_comm,
        complete_by_comm,
        helper_cpu: helper,
        errors: BTreeMap::new(),
        rows_full: stderr
            .lines()
            .filter(|l| l.contains("unwind row array full"))
            .count() as u64,
    })
}

/// The agent's metrics once they were refreshed after the workload ended:
/// it copies the eBPF counters about once a second, so a read right away
/// may miss the last second. Waits for `samples_total` to move (at most 1.5 s).
fn fresh_metrics(addr: &str) -> String {
    const SAMPLES: &str = "ebpf_profiler_samples_total";
    let first = http_get(addr, "/metrics").unwrap_or_default();
    let v0 = prometheus_value(&first, SAMPLES);
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(text) = http_get(addr, "/metrics") {
            if prometheus_value(&text, SAMPLES) != v0 {
                return text;
            }
        }
    }
    http_get(addr, "/metrics").unwrap_or(first)
}

fn prometheus_value(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// What the agent exported (the requests the collector accepted, captured
/// by `--capture-dir`): samples, and complete samples (no error frame), per
/// process name.
type ByComm = (BTreeMap<String, u64>, BTreeMap<String, u64>);

fn decode_captures(dir: &Path) -> Result<ByComm, String> {
    use prost::Message;
    let (mut by_comm, mut complete) = (BTreeMap::new(), BTreeMap::new());
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries.flatten() {
        let bytes = std::fs::read(e.path()).map_err(|e| e.to_string())?;
        let req = otlp::ExportProfilesServiceRequest::decode(bytes.as_slice())
            .map_err(|err| format!("{}: {err}", e.path().display()))?;
        let decoded =
            otlp::decode_lenient(&req).map_err(|err| format!("{}: {err}", e.path().display()))?;
        for (_, profile) in decoded.profiles {
            for s in &profile.samples {
                let comm = s.labels.process_display_name().into_owned();
                if !s
                    .frames
                    .iter()
                    .any(|f| profile::FrameClass::of(f) == profile::FrameClass::Error)
                {
                    *complete.entry(comm.clone()).or_default() += s.count;
                }
                *by_comm.entry(comm).or_default() += s.count;
            }
        }
    }
    Ok((by_comm, complete))
}

fn measure_perf(ctx: &Ctx, w: Workload, cg: CallGraph) -> Result<Run, String> {
    ctx.perf.clone()?;
    let data = ctx.dir.join("perf.data");
    let _ = std::fs::remove_file(&data);
    let mut proc = Proc::spawn(
        common::perf_record(&data, RECORD_HZ, cg),
        ctx.dir.join("perf.stderr"),
    )?;
    std::thread::sleep(common::PERF_SETTLE);
    proc.check_alive("perf record")?;
    let (wall, ex, cpu) = profiled_workload(ctx, w, &proc)?;
    let life = proc.stop().ok_or("perf was not waited for")?;
    if !data.exists() {
        return Err(format!("perf wrote no data: {}", tail(&proc.stderr_text())));
    }
    // Process names only: no symbolization, no DWARF unwinding.
    let o = Command::new("perf")
        .args(["script", "-F", "comm", "-i"])
        .arg(&data)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("perf script: {e}"))?;
    let mut by_comm: BTreeMap<String, u64> = BTreeMap::new();
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        let comm = l.trim();
        // Idle CPUs: ours does not sample them.
        if !comm.is_empty() && !comm.starts_with("swapper") {
            *by_comm.entry(comm.to_string()).or_default() += 1;
        }
    }
    // Lost samples: the LOST records perf counted.
    let stats = Command::new("perf")
        .args(["report", "--stats", "-i"])
        .arg(&data)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut dropped = BTreeMap::new();
    for l in stats.lines() {
        let l = l.trim();
        if let Some((kind, rest)) = l.split_once(" events:") {
            if kind.starts_with("LOST") {
                if let Some(n) = rest.split_whitespace().next().and_then(|n| n.parse().ok()) {
                    dropped.insert(format!("{kind} records"), n);
                }
            }
        }
    }
    let _ = std::fs::remove_file(&data);
    Ok(Run {
        wall,
        workload_cpu: ex.cpu_secs,
        profiler_cpu: cpu,
        profiler_cpu_life: life.cpu_secs,
        samples: Some(by_comm.values().sum()),
        complete: None,
        dropped: Some(dropped),
        by_comm,
        complete_by_comm: BTreeMap::new(),
        helper_cpu: 0.0,
        rows_full: 0,
        errors: BTreeMap::new(),
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The parent of process `pid` (0 when unknown).
fn parent(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Names of processes that may keep CPUs busy besides the workload: qemu
/// VMs (the kernel matrix), compilers and linkers of concurrent builds. This
/// bench and its ancestors (`cargo bench`) are not counted.
fn busy_neighbours() -> BTreeSet<String> {
    const NOISY: [&str; 5] = ["qemu-system", "rustc", "cargo", "rust-lld", "clang"];
    let mut mine = BTreeSet::new();
    let mut p = std::process::id();
    while p > 1 && mine.insert(p) {
        p = parent(p);
    }
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if mine.contains(&pid) {
            continue;
        }
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if let Some(n) = NOISY.iter().find(|n| comm.starts_with(**n)) {
            out.insert(n.to_string());
        }
    }
    out
}

fn print_header(ctx: &Ctx, rounds: usize, quick: bool) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let ours = match &ctx.ours {
        Ok(p) => {
            let age = std::fs::metadata(p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .map_or_else(String::new, |d| {
                    format!(", built {:.0} min ago", d.as_secs_f64() / 60.0)
                });
            format!("{}{age}", p.display())
        }
        Err(e) => format!("unavailable: {e}"),
    };
    // The checkout only says what was built when the binary is the workspace's.
    let head = if std::env::var_os("EBPF_PROFILER_BIN").is_some() {
        "EBPF_PROFILER_BIN".to_string()
    } else {
        Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(workspace())
            .output()
            .map(|o| format!("checkout {}", String::from_utf8_lossy(&o.stdout).trim()))
            .unwrap_or_default()
    };
    eprintln!(
        "churn: {} CPUs, kernel {}, {rounds} round(s){}; ours: {ours} ({head})",
        ctx.cpus,
        kernel.trim(),
        if quick { " (--quick)" } else { "" }
    );
    // Ours keeps built unwind tables on disk: only the first run of a
    // binary ever builds its table (say how warm the cache starts).
    let cached = std::fs::read_dir(agent::table_cache::DEFAULT_DIR)
        .map(|d| d.filter_map(|e| e.ok()).count())
        .unwrap_or(0);
    println!(
        "\n# Process churn: {} CPUs, kernel {}, {rounds} interleaved round(s){}, medians\nours: {ours} ({head}); its table cache {} held {cached} table(s) at the start",
        ctx.cpus,
        kernel.trim(),
        if quick { ", --quick sizes" } else { "" },
        agent::table_cache::DEFAULT_DIR,
    );
}

type Results = HashMap<(Workload, Profiler), Vec<Result<Run, String>>>;

/// Sum of `m` over the workload's own process names.
fn workload_sum(w: Workload, m: &BTreeMap<String, u64>) -> u64 {
    workload_commands(w)
        .iter()
        .map(|c| m.get(*c).copied().unwrap_or(0))
        .sum()
}

fn print_workload_table(ctx: &Ctx, w: Workload, results: &Results, rounds: usize) {
    let ok = |p: Profiler| -> Vec<&Run> {
        results
            .get(&(w, p))
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_ref().ok())
            .collect()
    };
    let base_runs = ok(Profiler::None);
    let base = common::median(base_runs.iter().map(|r| r.wall).collect());
    let base_cpu = common::median(base_runs.iter().map(|r| r.workload_cpu).collect());
    println!(
        "\n## {}: {base:.2} s wall, {base_cpu:.2} s CPU without a profiler\n",
        workload_label(w, ctx)
    );
    println!(
        "| profiler | wall s | slowdown % | profiler CPU s | profiler CPU % of workload CPU | profiler CPU s, whole life | samples: workload / all | complete %: workload / all | dropped (by reason) |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|---|");
    let mut notes = Vec::new();
    for p in Profiler::ALL {
        let all = results.get(&(w, p)).map_or(&[][..], Vec::as_slice);
        let runs = ok(p);
        let failures: Vec<&String> = all.iter().filter_map(|r| r.as_ref().err()).collect();
        if runs.is_empty() {
            let why = failures
                .first()
                .map_or("not run".to_string(), |e| e.to_string());
            println!("| {} | n/a: {why} | | | | | | | |", p.label());
            continue;
        }
        if !failures.is_empty() {
            notes.push(format!(
                "{}: {} of {} run(s) failed: {}",
                p.label(),
                failures.len(),
                all.len(),
                failures[0]
            ));
        }
        let m = |f: &dyn Fn(&Run) -> f64| common::median(runs.iter().map(|r| f(r)).collect());
        let wall = m(&|r| r.wall);
        let slowdown = (wall / base - 1.0) * 100.0;
        if p == Profiler::None {
            println!(
                "| {} | {wall:.2} | {slowdown:+.1} | - | - | - | - | - | - |",
                p.label()
            );
            continue;
        }
        let cpu = m(&|r| r.profiler_cpu);
        let cpu_pct = m(&|r| 100.0 * r.profiler_cpu / r.workload_cpu);
        let life = m(&|r| r.profiler_cpu_life);
        let samples = format!(
            "{:.0} / {:.0}",
            m(&|r| workload_sum(w, &r.by_comm) as f64),
            m(&|r| r.samples.unwrap_or(0) as f64)
        );
        // Over all runs pooled: per run the workload has few samples.
        let pct = |c: u64, n: u64| {
            if n == 0 {
                "-".to_string()
            } else {
                format!("{:.1}", 100.0 * c as f64 / n as f64)
            }
        };
        let complete = if runs.iter().all(|r| r.complete.is_some()) {
            let sum = |f: &dyn Fn(&Run) -> u64| runs.iter().map(|r| f(r)).sum::<u64>();
            format!(
                "{} / {}",
                pct(
                    sum(&|r| workload_sum(w, &r.complete_by_comm)),
                    sum(&|r| workload_sum(w, &r.by_comm))
                ),
                pct(
                    sum(&|r| r.complete.unwrap_or(0)),
                    sum(&|r| r.samples.unwrap_or(0))
                )
            )
        } else {
            "-".into()
        };
        let dropped = if runs.iter().any(|r| r.dropped.is_none()) {
            "? (not known)".to_string()
        } else {
            let reasons: BTreeSet<&String> = runs
                .iter()
                .flat_map(|r| r.dropped.iter().flat_map(|d| d.keys()))
                .collect();
            let parts: Vec<String> = reasons
                .into_iter()
                .filter_map(|k| {
                    let v = m(&|r| {
                        r.dropped
                            .as_ref()
                            .and_then(|d| d.get(k))
                            .copied()
                            .unwrap_or(0) as f64
                    });
                    (v > 0.0).then(|| format!("{k} {v:.0}"))
                })
                .collect();
            if parts.is_empty() {
                "0".into()
            } else {
                parts.join(", ")
            }
        };
        println!(
            "| {} | {wall:.2} | {slowdown:+.1} | {cpu:.2} | {cpu_pct:.1} | {life:.2} | {samples} | {complete} | {dropped} |",
            p.label()
        );
        if p == Profiler::Agent {
            notes.push(format!(
                "{}: its collector (not counted above) used {:.2} s CPU per run",
                p.label(),
                m(&|r| r.helper_cpu)
            ));
        }
        let mut errors: BTreeMap<&String, u64> = BTreeMap::new();
        for (k, v) in runs.iter().flat_map(|r| &r.errors) {
            *errors.entry(k).or_default() += v;
        }
        if !errors.is_empty() {
            let mut e: Vec<_> = errors.into_iter().collect();
            e.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            notes.push(format!(
                "{}: chains ended by errors, all runs, whole system: {}",
                p.label(),
                e.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let rows_full: u64 = runs.iter().map(|r| r.rows_full).sum();
        if rows_full > 0 {
            notes.push(format!(
                "{}: {rows_full} \"unwind row array full\" warning(s) over {} run(s)",
                p.label(),
                runs.len()
            ));
        }
    }
    println!(
        "\nMedians of {rounds} round(s). Profiler CPU: while the workload ran, and as % of the workload's own CPU (user+sys of it and its descendants); whole life adds start-up and writing the output. Samples per run: of the workload's commands ({}) / of everything the profiler recorded (perf: idle `swapper` left out). Complete: chains without an error frame, all runs pooled (all: `record`'s summary line; agent: the exported error frames). Drops per run, whole system (ours: `record`'s summary line or the agent's metrics; perf: LOST records).",
        workload_commands(w).join(", ")
    );
    for n in notes {
        println!("- {n}");
    }
}

fn print_comm_table(w: Workload, results: &Results) {
    let sum = |p: Profiler| -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for r in results.get(&(w, p)).into_iter().flatten().flatten() {
            for (k, v) in &r.by_comm {
                *m.entry(k.clone()).or_default() += v;
            }
        }
        m
    };
    let runs = |p: Profiler| {
        results
            .get(&(w, p))
            .into_iter()
            .flatten()
            .filter(|r| r.is_ok())
            .count()
    };
    let (perf, rec, agent, dwarf) = (
        sum(Profiler::PerfFp),
        sum(Profiler::Record),
        sum(Profiler::Agent),
        sum(Profiler::PerfDwarf),
    );
    // The workload's own commands, then the profilers themselves; the rest
    // is the machine's other work (perf names threads, ours processes, so
    // those names do not line up anyway).
    let mut names: Vec<&str> = workload_commands(w).to_vec();
    names.extend(["ebpf-profiler", "perf"]);
    let scale = RECORD_HZ as f64 / AGENT_HZ as f64;
    println!(
        "\n### Samples per command, {}: totals over the runs (record {}, perf -g {}, agent {}, perf dwarf {} run(s))\n",
        workload_commands(w).join("/"),
        runs(Profiler::Record),
        runs(Profiler::PerfFp),
        runs(Profiler::Agent),
        runs(Profiler::PerfDwarf)
    );
    println!(
        "| command | perf -g | record | record / perf -g | agent 20 Hz | agent x{scale:.2} / perf -g | perf dwarf |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|");
    let ratio = |a: f64, b: u64| {
        if b == 0 {
            "-".to_string()
        } else {
            format!("{:.2}", a / b as f64)
        }
    };
    let get = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    let row = |n: &str, p: u64, r: u64, a: u64, d: u64| {
        println!(
            "| {n} | {p} | {r} | {} | {a} | {} | {d} |",
            ratio(r as f64, p),
            ratio(a as f64 * scale, p)
        );
    };
    let mut shown = [0u64; 4];
    for (i, n) in names.iter().enumerate() {
        let v = [get(&perf, n), get(&rec, n), get(&agent, n), get(&dwarf, n)];
        if i == workload_commands(w).len() {
            row("**workload total**", shown[0], shown[1], shown[2], shown[3]);
        }
        if i < workload_commands(w).len() {
            for (s, x) in shown.iter_mut().zip(v) {
                *s += x;
            }
        }
        row(n, v[0], v[1], v[2], v[3]);
    }
    let rest = |m: &BTreeMap<String, u64>| {
        m.iter()
            .filter(|(k, _)| !names.contains(&k.as_str()))
            .map(|(_, v)| v)
            .sum::<u64>()
    };
    row(
        "(everything else)",
        rest(&perf),
        rest(&rec),
        rest(&agent),
        rest(&dwarf),
    );
    let top = |m: &BTreeMap<String, u64>| {
        let mut v: Vec<(&String, &u64)> = m
            .iter()
            .filter(|(k, _)| !names.contains(&k.as_str()))
            .collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        if v.is_empty() {
            return "none".to_string();
        }
        v.iter()
            .take(5)
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "\nEverything else, busiest: perf -g: {}; record: {}",
        top(&perf),
        top(&rec)
    );
}
