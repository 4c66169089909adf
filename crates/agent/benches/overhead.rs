//! Overhead of ebpf-profiler next to its peers, measured in the same run.
//!
//! Two copies of a fixed-work program with a 24-frame stack keep both CPUs
//! busy; each profiler samples the whole system meanwhile. Configurations
//! are interleaved round by round and medians reported, since identical runs
//! here differ by 1–2 %. Columns: workload slowdown against no profiler, the
//! profiler's own CPU time, BPF run time per sample (kernel BPF statistics),
//! and the profiler's peak RSS. Below it, ebpf-profiler's BPF time per
//! sample on the same shape in Python (two CPython processes, 30 Python
//! frames deep) next to the native figure. A second table: start-up cost of
//! loading the unwind tables of every process on the machine.
//!
//! `cargo bench -p agent --bench overhead` (full), `-- --quick` (CI size).
//! Needs root, perf and bpftrace.

mod common;

use agent::loader::LoadOptions;
use agent::record::{self, RecordOptions};
use agent::session::{Session, SessionOptions, Target};
use common::{median, proc_cpu_secs, CallGraph};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// A fixed amount of work under a 24-frame deep stack. Built WITH frame
/// pointers (leaf included) so that the frame-pointer peers (perf -g,
/// bpftrace ustack) unwind it completely too: the BPF cost per sample is then
/// compared for the same full stacks.
const WORKLOAD: &str = r#"
#include <stdint.h>
#include <stdlib.h>
volatile uint64_t sink;
#define F __attribute__((noinline, noipa))
F uint64_t leaf(uint64_t n) { uint64_t x = n | 1; for (uint64_t i = 0; i < 2000; i++) x = x * 6364136223846793005ull + i; return x; }
F uint64_t deep(int d, uint64_t n) { uint64_t r = d == 0 ? leaf(n) : deep(d - 1, n + 1); sink = r; return r + 1; }
int main(int argc, char **argv) {
    uint64_t iters = strtoull(argv[1], 0, 10), acc = 0;
    for (uint64_t i = 0; i < iters; i++) acc += deep(20, i);
    sink = acc;
    return 0;
}
"#;

/// The same shape in Python: <module>, 28 `deep` frames and the leaf, 30
/// Python frames (and the interpreter's native frames between them).
const PY_WORKLOAD: &str = "\
import sys
def leaf(n):
    x = n | 1
    for i in range(2000):
        x = (x * 6364136223846793005 + i) & 0xffffffffffffffff
    return x
def deep(d, n):
    return leaf(n) if d == 0 else deep(d - 1, n + 1)
for i in range(int(sys.argv[1])):
    deep(27, i)
";

/// What the two busy copies run.
enum Work {
    Native(PathBuf),
    /// An interpreter and a script.
    Python(PathBuf, PathBuf),
}

impl Work {
    fn command(&self, iters: u64) -> Command {
        let mut c = match self {
            Work::Native(exe) => Command::new(exe),
            Work::Python(python, script) => {
                let mut c = Command::new(python);
                c.arg(script);
                c
            }
        };
        c.arg(iters.to_string());
        c
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Profiler {
    None,
    Ours,
    /// Ours with a filter that excludes the busy workload (`--pid 1`).
    OursFiltered,
    PerfFp,
    PerfDwarf,
    Bpftrace,
}

impl Profiler {
    fn label(self) -> &'static str {
        match self {
            Profiler::None => "no profiler",
            Profiler::Ours => "ebpf-profiler",
            Profiler::OursFiltered => "ebpf-profiler --pid 1",
            Profiler::PerfFp => "perf record -g",
            Profiler::PerfDwarf => "perf --call-graph dwarf",
            Profiler::Bpftrace => "bpftrace ustack+kstack",
        }
    }
}

#[derive(Default, Clone)]
struct Run {
    workload_secs: f64,
    profiler_cpu_secs: f64,
    bpf_ns: u64,
    bpf_runs: u64,
    peak_rss_kb: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--as-profiler") {
        let filtered = args.get(3).map(String::as_str) == Some("--exclude-workload");
        as_profiler(args[2].parse().expect("frequency"), filtered);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the overhead bench needs root"
    );
    for tool in ["perf", "bpftrace", "bpftool", "gcc"] {
        assert!(
            common::have(tool),
            "{tool} is needed (apt-get install linux-perf bpftrace bpftool gcc)"
        );
    }
    let exe = Work::Native(build_workload());
    let target_secs = if quick { 1.0 } else { 5.0 };
    let rounds = if quick { 1 } else { 5 };
    let iters = calibrate(&exe, target_secs);
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").expect("enable BPF statistics");

    let freqs: &[u64] = &[99, 999];
    let mut configs = vec![(Profiler::None, 0u64)];
    for &f in freqs {
        for p in [
            Profiler::Ours,
            Profiler::OursFiltered,
            Profiler::PerfFp,
            Profiler::PerfDwarf,
            Profiler::Bpftrace,
        ] {
            configs.push((p, f));
        }
    }
    let mut results: HashMap<(Profiler, u64), Vec<Run>> = HashMap::new();
    for round in 0..rounds {
        for &(p, f) in &configs {
            eprintln!("round {}/{rounds}: {} {f} Hz", round + 1, p.label());
            let run = measure(p, f, &exe, iters);
            results.entry((p, f)).or_default().push(run);
        }
    }
    // BPF time per sample on a 30-frame Python stack, same rounds.
    let python = python_work();
    let mut python_runs = Vec::new();
    if let Some((label, work)) = &python {
        let py_iters = calibrate(work, target_secs);
        for round in 0..rounds {
            eprintln!("round {}/{rounds}: ebpf-profiler 99 Hz, {label}", round + 1);
            python_runs.push(measure(Profiler::Ours, 99, work, py_iters));
        }
    }
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0").ok();

    let base = median(
        results[&(Profiler::None, 0)]
            .iter()
            .map(|r| r.workload_secs)
            .collect(),
    );
    println!(
        "\nOverhead, 2 CPUs busy, whole-system sampling, median of {rounds} interleaved round(s), workload {:.1} s",
        base
    );
    println!(
        "| {:<26} | {:>6} | {:>9} | {:>16} | {:>14} | {:>12} |",
        "profiler", "Hz", "slowdown", "profiler CPU", "BPF ns/sample", "peak RSS MB"
    );
    println!(
        "|{:-<28}|{:->8}|{:->11}|{:->18}|{:->16}|{:->14}|",
        "", "", "", "", "", ""
    );
    for &(p, f) in &configs {
        let runs = &results[&(p, f)];
        let wall = median(runs.iter().map(|r| r.workload_secs).collect());
        let cpu = median(
            runs.iter()
                .map(|r| r.profiler_cpu_secs / r.workload_secs)
                .collect(),
        );
        let bpf: u64 = runs.iter().map(|r| r.bpf_ns).sum();
        let cnt: u64 = runs.iter().map(|r| r.bpf_runs).sum();
        let rss = runs.iter().map(|r| r.peak_rss_kb).max().unwrap_or(0);
        println!(
            "| {:<26} | {:>6} | {:>8.2}% | {:>13.2}% | {:>14} | {:>12.1} |",
            p.label(),
            if f == 0 { "-".into() } else { f.to_string() },
            (wall / base - 1.0) * 100.0,
            cpu * 100.0,
            bpf.checked_div(cnt)
                .map_or_else(|| "-".to_string(), |v| v.to_string()),
            rss as f64 / 1024.0
        );
    }
    for &f in freqs {
        let ns = |p| {
            let r = &results[&(p, f)];
            let (t, c): (u64, u64) = r
                .iter()
                .fold((0, 0), |a, x| (a.0 + x.bpf_ns, a.1 + x.bpf_runs));
            t as f64 / c.max(1) as f64
        };
        // Rounds are interleaved, so each round's pair shares the machine's
        // state of the moment: their ratios show how steady the lead is.
        let per_round: Vec<f64> = results[&(Profiler::Ours, f)]
            .iter()
            .zip(&results[&(Profiler::Bpftrace, f)])
            .map(|(o, b)| {
                (o.bpf_ns as f64 / o.bpf_runs.max(1) as f64)
                    / (b.bpf_ns as f64 / b.bpf_runs.max(1) as f64)
            })
            .collect();
        let below = per_round.iter().filter(|r| **r < 1.0).count();
        println!(
            "BPF time per sample at {f} Hz: ebpf-profiler / bpftrace ustack = {:.2} (rounds: {}; below in {below} of {}); excluded by filter / unfiltered = {:.2}",
            ns(Profiler::Ours) / ns(Profiler::Bpftrace),
            per_round
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
            per_round.len(),
            ns(Profiler::OursFiltered) / ns(Profiler::Ours)
        );
    }
    let per_sample = |runs: &[Run]| {
        let (t, c) = runs
            .iter()
            .fold((0u64, 0u64), |a, r| (a.0 + r.bpf_ns, a.1 + r.bpf_runs));
        t as f64 / c.max(1) as f64
    };
    match &python {
        Some((label, _)) => println!(
            "BPF time per sample at 99 Hz, ebpf-profiler: 30-frame Python stack ({label}) {:.0} ns; 24-frame native stack {:.0} ns; ratio {:.2}",
            per_sample(&python_runs),
            per_sample(&results[&(Profiler::Ours, 99)]),
            per_sample(&python_runs) / per_sample(&results[&(Profiler::Ours, 99)])
        ),
        None => println!("BPF time per sample on a Python stack: no CPython 3.8+ found (pyenv or /usr/bin)"),
    }
    startup_table();
}

/// pyenv's newest CPython (3.13 down to 3.8), else Debian's.
fn python_work() -> Option<(String, Work)> {
    let py = (8..=13)
        .rev()
        .find_map(workloads::python::pyenv)
        .or_else(|| (8..=13).rev().find_map(workloads::python::debian))?;
    let label = format!("CPython 3.{}", py.minor);
    let python = py.exe;
    let script = std::env::temp_dir().join("ebpf-profiler-bench/deep.py");
    std::fs::create_dir_all(script.parent()?).ok()?;
    std::fs::write(&script, PY_WORKLOAD).ok()?;
    Some((label, Work::Python(python, script)))
}

/// The profiler side of the `Ours` configuration, in its own process so
/// its CPU time and memory are its own.
fn as_profiler(frequency: u64, filtered: bool) {
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    signal_hook_register(&stop);
    let opts = RecordOptions {
        session: SessionOptions {
            table_cache: None,
            // Only init (asleep): every busy process is excluded in the
            // kernel, which is what the filtered row measures.
            target: if filtered {
                Target::pids(vec![1])
            } else {
                Target::System
            },
            frequency,
            load: LoadOptions::default(),
        },
        duration: None,
        debug_info: true,
        symbolize: true,
    };
    let mut said = false;
    let rec = record::record(&opts, &stop, |_| {
        if !said {
            println!("ready");
            said = true;
        }
    })
    .expect("record");
    let _ = profile::folded(&rec.profile);
    eprintln!("{}", rec.summary.line());
}

fn signal_hook_register(stop: &std::sync::Arc<AtomicBool>) {
    // SIGINT sets the flag; a tiny handler without a dependency.
    static mut FLAG: Option<std::sync::Arc<AtomicBool>> = None;
    extern "C" fn on_int(_: libc::c_int) {
        // SAFETY: written once before the handler is installed.
        if let Some(f) = unsafe { (*std::ptr::addr_of!(FLAG)).as_ref() } {
            f.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    // SAFETY: single-threaded at this point; the handler only stores an atomic.
    unsafe {
        FLAG = Some(stop.clone());
        libc::signal(libc::SIGINT, on_int as *const () as libc::sighandler_t);
    }
}

fn build_workload() -> PathBuf {
    let dir = std::env::temp_dir().join("ebpf-profiler-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("fixed_work.c");
    std::fs::write(&src, WORKLOAD).unwrap();
    let exe = dir.join("fixed_work");
    let ok = Command::new("gcc")
        .args([
            "-O2",
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
            "-o",
        ])
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap()
        .success();
    assert!(ok, "gcc failed");
    exe
}

fn run_pair(work: &Work, iters: u64) -> f64 {
    let start = Instant::now();
    let mut kids: Vec<Child> = (0..2)
        .map(|_| work.command(iters).spawn().unwrap())
        .collect();
    for k in &mut kids {
        assert!(k.wait().unwrap().success());
    }
    start.elapsed().as_secs_f64()
}

fn calibrate(exe: &Work, secs: f64) -> u64 {
    let probe = match exe {
        Work::Native(_) => 20_000u64,
        Work::Python(..) => 500,
    };
    let t = run_pair(exe, probe);
    ((probe as f64) * secs / t).max(10.0) as u64
}

/// (run_time_ns, run_cnt) of every loaded perf_event program, by id.
fn bpf_stats() -> HashMap<u64, (u64, u64)> {
    let v = common::bpftool_json(&["prog", "show"]);
    let mut m = HashMap::new();
    for p in v.as_array().into_iter().flatten() {
        if p["type"] == "perf_event" {
            let id = p["id"].as_u64().unwrap_or(0);
            m.insert(
                id,
                (
                    p["run_time_ns"].as_u64().unwrap_or(0),
                    p["run_cnt"].as_u64().unwrap_or(0),
                ),
            );
        }
    }
    m
}

fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn start_profiler(p: Profiler, freq: u64) -> Option<Child> {
    let data = std::env::temp_dir().join("ebpf-profiler-bench/perf.data");
    let (mut cmd, ready): (Command, Option<&str>) = match p {
        Profiler::None => return None,
        Profiler::Ours | Profiler::OursFiltered => {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.args(["--as-profiler", &freq.to_string()]);
            if p == Profiler::OursFiltered {
                c.arg("--exclude-workload");
            }
            (c, Some("ready"))
        }
        Profiler::PerfFp | Profiler::PerfDwarf => {
            let cg = if p == Profiler::PerfFp {
                CallGraph::FramePointers
            } else {
                CallGraph::Dwarf
            };
            (common::perf_record(&data, freq, cg), None)
        }
        Profiler::Bpftrace => {
            let mut c = Command::new("bpftrace");
            c.args([
                "-e",
                &format!("profile:hz:{freq} {{ @[ustack, kstack] = count(); }}"),
            ]);
            (c, Some("Attaching"))
        }
    };
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    match ready {
        Some(word) => {
            let out = child.stdout.take().unwrap();
            let mut lines = BufReader::new(out).lines();
            loop {
                match lines.next() {
                    Some(Ok(l)) if l.contains(word) => break,
                    Some(_) => continue,
                    None => panic!("{} exited before it was ready", p.label()),
                }
            }
            // Keep draining its output so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
        }
        None => std::thread::sleep(common::PERF_SETTLE),
    }
    Some(child)
}

fn measure(p: Profiler, freq: u64, exe: &Work, iters: u64) -> Run {
    // Statistics from the moment the profiler is ready: its own start-up
    // (ours scans every process first) is not the per-sample cost.
    let child = start_profiler(p, freq);
    let before = bpf_stats();
    let pid = child.as_ref().map(|c| c.id());
    let cpu0 = pid.map(proc_cpu_secs).unwrap_or(0.0);
    let wall = run_pair(exe, iters);
    let cpu1 = pid.map(proc_cpu_secs).unwrap_or(0.0);
    let rss = pid.map(peak_rss_kb).unwrap_or(0);
    let after = bpf_stats();
    let (mut ns, mut cnt) = (0, 0);
    for (id, (t, c)) in &after {
        let (t0, c0) = before.get(id).copied().unwrap_or((0, 0));
        ns += t - t0.min(*t);
        cnt += c - c0.min(*c);
    }
    if let Some(c) = child {
        common::interrupt_and_wait(&c, None);
    }
    Run {
        workload_secs: wall,
        profiler_cpu_secs: cpu1 - cpu0,
        bpf_ns: ns,
        bpf_runs: cnt,
        peak_rss_kb: rss,
    }
}

fn startup_table() {
    let rss0 = peak_rss_kb(std::process::id());
    let t = Instant::now();
    let session = Session::new(SessionOptions {
        table_cache: None,
        target: Target::System,
        frequency: 99,
        load: LoadOptions::default(),
    })
    .expect("session");
    let took = t.elapsed();
    let (procs, spaces, keys, exes, rows) = session.tracker.footprint();
    let s = &session.tracker.stats;
    println!("\nStart-up: load the unwind tables of every process on this machine");
    println!(
        "| {:>10} | {:>9} | {:>11} | {:>10} | {:>11} | {:>12} | {:>13} |",
        "time ms", "processes", "addr spaces", "trie keys", "executables", "rows", "agent RSS MB"
    );
    println!(
        "|{:->12}|{:->11}|{:->13}|{:->12}|{:->13}|{:->14}|{:->15}|",
        "", "", "", "", "", "", ""
    );
    println!(
        "| {:>10} | {:>9} | {:>11} | {:>10} | {:>11} | {:>12} | {:>13.1} |",
        took.as_millis(),
        procs,
        spaces,
        keys,
        exes,
        rows,
        peak_rss_kb(std::process::id()).max(rss0) as f64 / 1024.0
    );
    println!(
        "(scans {}, scan errors {}, table errors {}; kernel row array {} MiB preallocated)",
        s.scans,
        s.scan_errors,
        s.table_errors,
        (LoadOptions::default().max_unwind_rows as u64 * 8) >> 20
    );
}
