//! Python next to py-spy: the same workload, the same rate, the same run.
//!
//! Workload: a fixed number of `a → b → c` calls (c loops over a range),
//! timed by the script itself after a 2-second pause during which the
//! profiler attaches (py-spy reads the process's memory from outside and,
//! by default, pauses it for each sample; ours unwinds in the kernel).
//! For each CPython under `~/.pyenv/versions` (3.8 to 3.13), rounds
//! interleave no profiler, `ebpf-profiler record -F 99 --pid` (the release
//! binary) and `py-spy record -r 99 --format raw -p`; medians reported.
//!
//! Columns: workload slowdown against no profiler; the share of samples
//! whose Python frames are exactly `<module>, a, b, c` (ours from its JSON
//! output, frames of type `cpython`; py-spy from its raw output).
//!
//! `cargo bench -p agent --bench python` (3 rounds, every version),
//! `-- --rounds N`, `-- --quick` (1 round, one version: CI). `EBPF_PROFILER_BIN=PATH` runs
//! another build of ours. Needs root and py-spy (`pip install py-spy`).

mod common;

use common::median;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The chain, called a fixed number of times after the pause, timed.
fn script_text() -> String {
    format!(
        "import sys, time\n{}\
         time.sleep(2)\n\
         t0 = time.perf_counter()\n\
         for _ in range(int(sys.argv[1])):\n    a(100000)\n\
         print(time.perf_counter() - t0, flush=True)\n",
        workloads::python::CHAIN_FUNCTIONS
    )
}

const CHAIN: [&str; 4] = ["<module>", "a", "b", "c"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Profiler {
    None,
    Ours,
    PySpy,
}

impl Profiler {
    fn label(self) -> &'static str {
        match self {
            Profiler::None => "no profiler",
            Profiler::Ours => "ebpf-profiler",
            Profiler::PySpy => "py-spy",
        }
    }
}

struct Run {
    secs: f64,
    /// (samples with the chain, samples).
    chains: Option<(u64, u64)>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the Python bench needs root");
    let py_spy = find_py_spy().expect("py-spy is needed: python3 -m pip install py-spy");
    let ours = ours_binary();
    let dir = std::env::temp_dir().join("ebpf-profiler-bench-python");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("chain.py");
    std::fs::write(&script, script_text()).unwrap();
    let mut pythons = pyenv_pythons();
    assert!(
        !pythons.is_empty(),
        "no CPython 3.8 to 3.13 under ~/.pyenv/versions"
    );
    if quick {
        pythons.retain(|p| p.0 == "3.11");
        pythons.truncate(1);
    }
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 });
    let target = if quick { 2.0 } else { 4.0 };
    let mut rows = Vec::new();
    for (version, python) in &pythons {
        let iters = calibrate(python, &script, target);
        let mut runs: Vec<(Profiler, Run)> = Vec::new();
        for round in 0..rounds {
            let mut order = [Profiler::None, Profiler::Ours, Profiler::PySpy];
            order.rotate_left(round % 3);
            for p in order {
                eprintln!("{version} round {}/{rounds}: {}", round + 1, p.label());
                runs.push((p, run(p, python, &script, iters, &ours, &py_spy, &dir)));
            }
        }
        rows.push((version.clone(), runs));
    }
    println!("\nCPython a → b → c, 99 Hz, one process, median of {rounds} interleaved round(s)");
    println!(
        "| {:<7} | {:<14} | {:>9} | {:>10} | {:>16} |",
        "CPython", "profiler", "wall (s)", "slowdown", "complete chains"
    );
    println!(
        "|{:-<9}|{:-<16}|{:->11}|{:->12}|{:->18}|",
        "", "", "", "", ""
    );
    for (version, runs) in &rows {
        let wall = |p: Profiler| {
            median(
                runs.iter()
                    .filter(|(q, _)| *q == p)
                    .map(|(_, r)| r.secs)
                    .collect(),
            )
        };
        let base = wall(Profiler::None);
        for p in [Profiler::None, Profiler::Ours, Profiler::PySpy] {
            let (good, total) = runs
                .iter()
                .filter(|(q, _)| *q == p)
                .filter_map(|(_, r)| r.chains)
                .fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
            println!(
                "| {:<7} | {:<14} | {:>9.2} | {:>9.1}% | {:>16} |",
                version,
                p.label(),
                wall(p),
                (wall(p) / base - 1.0) * 100.0,
                if p == Profiler::None {
                    "-".to_string()
                } else {
                    format!(
                        "{:.1}% of {total}",
                        100.0 * good as f64 / total.max(1) as f64
                    )
                }
            );
        }
    }
}

/// (minor version, interpreter) of pyenv's 3.8 to 3.13.
fn pyenv_pythons() -> Vec<(String, PathBuf)> {
    (8..=13)
        .filter_map(workloads::python::pyenv)
        .map(|p| (format!("3.{}", p.minor), p.exe))
        .collect()
}

/// py-spy on the PATH, or in the scripts directory of the `python3` that
/// installed it.
fn find_py_spy() -> Option<PathBuf> {
    if common::have("py-spy") {
        return Some("py-spy".into());
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("py-spy");
    p.exists().then_some(p)
}

fn ours_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("EBPF_PROFILER_BIN") {
        return p.into();
    }
    let target = std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .to_path_buf();
    let bin = target.join("release/ebpf-profiler");
    if !bin.exists() {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "ebpf-profiler"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "building the release binary failed");
    }
    bin
}

fn start_script(python: &Path, script: &Path, iters: u64) -> Child {
    Command::new(python)
        .arg(script)
        .arg(iters.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The seconds the script printed.
fn finish_script(child: Child) -> f64 {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the workload failed");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the workload prints its time")
}

fn calibrate(python: &Path, script: &Path, secs: f64) -> u64 {
    let probe = 50;
    let t = finish_script(start_script(python, script, probe));
    ((probe as f64) * secs / t).max(10.0) as u64
}

fn run(
    p: Profiler,
    python: &Path,
    script: &Path,
    iters: u64,
    ours: &Path,
    py_spy: &Path,
    dir: &Path,
) -> Run {
    let child = start_script(python, script, iters);
    let pid = child.id().to_string();
    std::thread::sleep(Duration::from_millis(200));
    match p {
        Profiler::None => Run {
            secs: finish_script(child),
            chains: None,
        },
        Profiler::Ours => {
            let out = dir.join("ours.json");
            // Reaped by interrupt_and_wait (wait4), which clippy cannot see.
            #[allow(clippy::zombie_processes)]
            let prof = Command::new(ours)
                .args([
                    "record", "-F", "99", "-q", "--top", "0", "--pid", &pid, "-o",
                ])
                .arg(&out)
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let secs = finish_script(child);
            common::interrupt_and_wait(&prof, Some(Duration::from_secs(60)));
            Run {
                secs,
                chains: Some(ours_chains(&out)),
            }
        }
        Profiler::PySpy => {
            let out = dir.join("py-spy.txt");
            let _ = std::fs::remove_file(&out);
            let mut prof = Command::new(py_spy)
                .args(["record", "--format", "raw", "-r", "99", "-p", &pid, "-o"])
                .arg(&out)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let secs = finish_script(child);
            prof.wait().unwrap();
            Run {
                secs,
                chains: Some(py_spy_chains(&out)),
            }
        }
    }
}

fn ours_chains(json: &Path) -> (u64, u64) {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(json).expect("ours wrote its output")).unwrap();
    let (mut good, mut total) = (0, 0);
    for s in v["stacks"].as_array().into_iter().flatten() {
        let n = s["count"].as_u64().unwrap_or(0);
        let py: Vec<&str> = s["frames"]
            .as_array()
            .into_iter()
            .flatten()
            .rev()
            .filter(|f| f["type"] == "cpython")
            .filter_map(|f| f["name"].as_str())
            .collect();
        total += n;
        if py == CHAIN {
            good += n;
        }
    }
    (good, total)
}

fn py_spy_chains(raw: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(raw).unwrap_or_default();
    let (mut good, mut total) = (0, 0);
    for line in text.lines() {
        let Some((stack, n)) = line.rsplit_once(' ') else {
            continue;
        };
        let n: u64 = n.parse().unwrap_or(0);
        let names: Vec<&str> = stack
            .split(';')
            .map(|f| f.split_once(" (").map_or(f, |(name, _)| name))
            .collect();
        total += n;
        if names == CHAIN {
            good += n;
        }
    }
    (good, total)
}
