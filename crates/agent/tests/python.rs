//! CPython frames unwound in the kernel, on every interpreter this machine
//! has: pyenv's builds of 3.8 to 3.13 (a `python3.X` launcher linking
//! `libpython3.X.so`) and Debian's `/usr/bin/python3.X` (the interpreter
//! linked into the executable). Each workload runs on each of them; a failure
//! names the interpreter, the workload and the stacks that missed. Root
//! only, like every test that loads the eBPF programs.

use agent::loader::LoadOptions;
use agent::record::{self, RecordOptions, Recording};
use agent::session::{SessionOptions, Target};
use libpf::{FrameKind, FrameType};
use profile::{Profile, Sample};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::Duration;
use workloads::python::{self, Interpreter};
use workloads::Reaped;

static BPF: Mutex<()> = Mutex::new(());

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests load eBPF programs and must run as root"
    );
}

/// Every CPython from 3.8 on that this machine has. Fails loudly when there
/// is none: the tests would prove nothing.
fn interpreters() -> Vec<Interpreter> {
    let all = python::supported();
    assert!(
        !all.is_empty(),
        "no CPython 3.8 to 3.13 under ~/.pyenv/versions or /usr/bin"
    );
    all
}

fn script(name: &str, body: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("python-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.py"));
    std::fs::write(&path, body).unwrap();
    path
}

/// Runs `script` on `py` and records it for `seconds` at 199 Hz, once it
/// has started (imports done).
fn record_script(py: &Interpreter, script: &Path, seconds: u64) -> Recording {
    let _g = BPF.lock().unwrap_or_else(|e| e.into_inner());
    let child = Reaped(Command::new(&py.exe).arg(script).spawn().unwrap());
    std::thread::sleep(Duration::from_millis(700));
    let opts = RecordOptions {
        session: SessionOptions {
            table_cache: None,
            target: Target::pids(vec![child.0.id()]),
            frequency: 199,
            load: LoadOptions::default(),
        },
        duration: Some(Duration::from_secs(seconds)),
        debug_info: false,
        symbolize: true,
    };
    let mut child = child;
    let rec = record::record(&opts, &AtomicBool::new(false), |_| {}).expect("recording works");
    if let Ok(Some(status)) = child.0.try_wait() {
        panic!(
            "{} {} exited during the recording: {status}",
            py.exe.display(),
            script.display()
        );
    }
    drop(child);
    rec
}

fn is_python(f: &libpf::Frame) -> bool {
    f.frame_type == FrameType::from_kind(FrameKind::Python)
}

/// Root-first names of every frame.
fn names(p: &Profile, s: &Sample) -> Vec<String> {
    s.frames
        .iter()
        .rev()
        .map(|f| p.frame_name(f).into_owned())
        .collect()
}

/// A stack for a failure message: a run of one name is written once with
/// its count (300 frames of recursion stay readable).
fn compact(names: &[String]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < names.len() {
        let run = names[i..].iter().take_while(|n| **n == names[i]).count();
        out.push(if run > 1 {
            format!("{}×{run}", names[i])
        } else {
            names[i].clone()
        });
        i += run;
    }
    out.join(";")
}

/// Root-first names of the Python frames only.
fn python_chain(p: &Profile, s: &Sample) -> Vec<String> {
    s.frames
        .iter()
        .rev()
        .filter(|f| is_python(f))
        .map(|f| p.frame_name(f).into_owned())
        .collect()
}

/// Checks that 99 % of the samples (at least 100) satisfy `ok`; returns a
/// description of the failure.
fn nearly_all(
    py: &Interpreter,
    rec: &Recording,
    ok: impl Fn(&Profile, &Sample) -> bool,
) -> Result<(), String> {
    let p = &rec.profile;
    let total: u64 = p.samples.iter().map(|s| s.count).sum();
    let good: u64 = p.samples.iter().filter(|s| ok(p, s)).map(|s| s.count).sum();
    if total >= 100 && good as f64 >= 0.99 * total as f64 {
        return Ok(());
    }
    let mut misses: Vec<(u64, String)> = p
        .samples
        .iter()
        .filter(|s| !ok(p, s))
        .map(|s| (s.count, compact(&names(p, s))))
        .collect();
    misses.sort_by_key(|m| std::cmp::Reverse(m.0));
    Err(format!(
        "{}: {good} of {total} samples ({}); misses:\n{}",
        py.label,
        rec.summary.line(),
        misses
            .iter()
            .take(5)
            .map(|(n, s)| format!("  x{n}: {s}"))
            .collect::<Vec<_>>()
            .join("\n")
    ))
}

/// Checks that at least `tenths`/10 of the samples satisfy `ok` (`what`
/// names them in the failure).
fn at_least(
    py: &Interpreter,
    rec: &Recording,
    tenths: u64,
    what: &str,
    ok: impl Fn(&[String]) -> bool,
) -> Result<(), String> {
    let p = &rec.profile;
    let total: u64 = p.samples.iter().map(|s| s.count).sum();
    let good: u64 = p
        .samples
        .iter()
        .filter(|s| ok(&python_chain(p, s)))
        .map(|s| s.count)
        .sum();
    if good * 10 < total * tenths {
        return Err(format!("{}: {what} in {good} of {total}", py.label));
    }
    Ok(())
}

/// Runs `check` on every interpreter and fails with every failure at once.
fn on_every_interpreter(
    name: &str,
    body: &str,
    check: impl Fn(&Interpreter, &Recording) -> Result<(), String>,
) {
    require_root();
    let path = script(name, body);
    let mut failures = Vec::new();
    let mut covered = Vec::new();
    for py in interpreters() {
        let rec = record_script(&py, &path, 2);
        match check(&py, &rec) {
            Ok(()) => covered.push(py.label.clone()),
            Err(e) => failures.push(e),
        }
    }
    eprintln!("{name}: passed on {}", covered.join(", "));
    assert!(failures.is_empty(), "{name}:\n{}", failures.join("\n\n"));
}

/// The first row of `go tool pprof -top -lines -show=SHOW` on the profile.
fn pprof_top_line(p: &Profile, show: &str) -> String {
    let dir = std::env::temp_dir().join(format!("python-pprof-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("home")).unwrap();
    let file = dir.join("profile.pb.gz");
    std::fs::write(&file, profile::pprof::encode(p)).unwrap();
    let out = Command::new("go")
        .args(["tool", "pprof", "-top", "-lines", "-nodecount=1"])
        .arg(format!("-show={show}"))
        .arg(&file)
        .env("HOME", dir.join("home"))
        .env("GOCACHE", dir.join("home/gocache"))
        .env("GOTOOLCHAIN", "local")
        .env("PPROF_TMPDIR", dir.join("home"))
        .env("PPROF_BINARY_PATH", dir.join("home"))
        .output()
        .expect("go tool pprof (Debian golang-go) is needed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    // Rows follow the "flat  flat%  sum%  cum  cum%" header.
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string()
}

fn chain_script() -> String {
    format!("{}while True:\n    a(100000)\n", python::CHAIN_FUNCTIONS)
}

#[test]
fn a_python_call_chain_is_complete_with_file_and_hot_line() {
    on_every_interpreter("chain", &chain_script(), |py, rec| {
        let want = ["<module>", "a", "b", "c"];
        nearly_all(py, rec, |p, s| python_chain(p, s) == want)?;
        // The leaf Python frame: this script, and the loop's lines as the
        // hottest (line 3: `for`, line 4: its body).
        let mut lines = std::collections::BTreeMap::<u32, u64>::new();
        for s in &rec.profile.samples {
            let leaf = s.frames.iter().find(|f| is_python(f)).unwrap();
            let file = leaf.source_file.as_deref().unwrap_or("");
            if !file.ends_with("chain.py") {
                return Err(format!("{}: c's file is {file:?}", py.label));
            }
            *lines.entry(leaf.source_line.unwrap_or(0)).or_default() += s.count;
        }
        let hot = lines.iter().max_by_key(|(_, &n)| n).map(|(&l, _)| l);
        if !matches!(hot, Some(3 | 4)) {
            return Err(format!("{}: lines of c: {lines:?}", py.label));
        }
        // The reference reader agrees: with the script's frames shown (the
        // interpreter's C functions folded into them), the top line is c's
        // loop.
        let top = pprof_top_line(&rec.profile, "chain\\.py");
        if !(top.contains(" c ") && (top.ends_with("chain.py:3") || top.ends_with("chain.py:4"))) {
            return Err(format!("{}: go tool pprof -lines top: {top:?}", py.label));
        }
        Ok(())
    });
}

const DEEP: &str = "\
import sys
sys.setrecursionlimit(5000)
def spin():
    s = 0
    for i in range(20000):
        s += i
    return s
def down(n):
    if n == 0:
        return spin()
    return down(n - 1)
while True:
    down(300)
";

#[test]
fn three_hundred_frames_of_python_recursion_are_complete() {
    on_every_interpreter("deep", DEEP, |py, rec| {
        // Every sample: <module>, then `down` frames, then maybe `spin`
        // (samples between two calls of the recursion are shallower); none
        // cut short by a limit. Most are in `spin`, 301 frames deep.
        let shape = |c: &[String]| {
            let downs = c.iter().skip(1).take_while(|n| *n == "down").count();
            c.first().is_some_and(|r| r == "<module>")
                && downs <= 301
                && match &c[1 + downs..] {
                    [] => true,
                    [leaf] => leaf == "spin" && downs == 301,
                    _ => false,
                }
        };
        nearly_all(py, rec, |p, s| {
            shape(&python_chain(p, s)) && s.frames.iter().all(|f| !f.frame_type.is_error())
        })?;
        at_least(py, rec, 8, "spin", |c| {
            c.last().is_some_and(|l| l == "spin")
        })
    });
}

const CALLBACK: &str = "\
def key(x):
    s = 0
    for i in range(3000):
        s += i ^ x
    return s
def run():
    data = list(range(500))
    return sorted(data, key=key)
while True:
    run()
";

#[test]
fn python_called_back_from_c_reads_python_native_python() {
    on_every_interpreter("callback", CALLBACK, |py, rec| {
        nearly_all(py, rec, |p, s| {
            let all = names(p, s);
            let kinds: Vec<bool> = s.frames.iter().rev().map(is_python).collect();
            let pos = |n: &str| all.iter().zip(&kinds).position(|(x, &k)| k && x == n);
            let (Some(run), Some(key)) = (pos("run"), pos("key")) else {
                return false;
            };
            // Between them, the C function that called back: sorted (named
            // where the interpreter has symbols for its static functions).
            python_chain(p, s) == ["<module>", "run", "key"]
                && all[run + 1..key]
                    .iter()
                    .zip(&kinds[run + 1..key])
                    .any(|(n, &k)| !k && (n.contains("sorted") || !py.local_symbols))
        })
    });
}

const THREADS: &str = "\
import threading
def spin():
    s = 0
    for i in range(10000):
        s += i
    return s
def work_a():
    while True:
        spin()
def work_b():
    while True:
        spin()
for f in (work_a, work_b):
    threading.Thread(target=f, daemon=True).start()
threading.Event().wait()
";

#[test]
fn each_thread_gets_its_own_python_stack() {
    on_every_interpreter("threads", THREADS, |py, rec| {
        let p = &rec.profile;
        // Root first: Thread._bootstrap (3.11+ names are qualified), ...,
        // the worker, then spin (or the worker itself, between two calls).
        let worker = |s: &Sample| {
            python_chain(p, s)
                .into_iter()
                .find(|n| n == "work_a" || n == "work_b")
        };
        nearly_all(py, rec, |_, s| {
            let c = python_chain(p, s);
            let Some(w) = worker(s) else { return false };
            c.first().is_some_and(|r| r.ends_with("_bootstrap"))
                && (c.last() == Some(&"spin".to_string()) || c.last() == Some(&w))
        })?;
        // A thread's samples never show the other thread's function.
        let mut by_tid =
            std::collections::BTreeMap::<u32, std::collections::BTreeSet<String>>::new();
        for s in &p.samples {
            if let Some(w) = worker(s) {
                by_tid.entry(s.labels.tid).or_default().insert(w);
            }
        }
        if by_tid.len() != 2 || by_tid.values().any(|w| w.len() != 1) {
            return Err(format!("{}: workers by thread: {by_tid:?}", py.label));
        }
        Ok(())
    });
}

const GENERATOR: &str = "\
def produce(n):
    for i in range(n):
        s = 0
        for j in range(200):
            s += j
        yield s
def consume():
    t = 0
    for v in produce(10000):
        t += v
    return t
while True:
    consume()
";

#[test]
fn generators_sit_above_their_consumer() {
    on_every_interpreter("generator", GENERATOR, |py, rec| {
        nearly_all(py, rec, |p, s| {
            let c = python_chain(p, s);
            c == ["<module>", "consume", "produce"] || c == ["<module>", "consume"]
        })?;
        at_least(py, rec, 8, "the generator", |c| {
            c.last().is_some_and(|l| l == "produce")
        })
    });
}

const ASYNC: &str = "\
import asyncio
async def leaf():
    s = 0
    for i in range(1000000):
        s += i
    return s
async def middle():
    return await leaf()
async def main():
    while True:
        await middle()
        await asyncio.sleep(0)
asyncio.run(main())
";

#[test]
fn asyncio_tasks_show_their_coroutines() {
    // Not asyncio.py: the script would import itself.
    on_every_interpreter("coroutines", ASYNC, |py, rec| {
        // Inside the task, the coroutines that await each other; outside
        // it, the event loop's own functions (about 1 % of the time).
        let in_leaf = |c: &[String]| c.iter().any(|n| n == "leaf");
        nearly_all(py, rec, |p, s| {
            let c = python_chain(p, s);
            c.first().is_some_and(|r| r == "<module>")
                && (!in_leaf(&c) || c.ends_with(&["main".into(), "middle".into(), "leaf".into()]))
        })?;
        at_least(py, rec, 9, "leaf", in_leaf)
    });
}

#[test]
fn interpreters_of_unsupported_versions_stay_native() {
    require_root();
    // 3.6 and 3.7 are not in spec/python.json: their loops are native
    // frames, the interpreter is counted as rejected, and no Python frame
    // (which could only be wrong) appears.
    let old: Vec<Interpreter> = (6..=7).filter_map(python::pyenv).collect();
    assert!(
        !old.is_empty(),
        "no CPython 3.6 or 3.7 under ~/.pyenv/versions"
    );
    let path = script("old", &chain_script());
    for py in old {
        let rec = record_script(&py, &path, 2);
        let p = &rec.profile;
        let total: u64 = p.samples.iter().map(|s| s.count).sum();
        assert!(total >= 100, "{}: {}", py.label, rec.summary.line());
        assert!(
            p.samples.iter().all(|s| !s.frames.iter().any(is_python)),
            "{}: Python frames from an unsupported version",
            py.label
        );
        assert!(
            rec.summary.python.interpreters_rejected >= 1,
            "{}: {:?}",
            py.label,
            rec.summary.python
        );
        assert!(py.minor < 8);
    }
}

/// A directory made a minimal root: the host's /usr bound read-only, and a
/// copy of an interpreter at a path the host does not have. Unmounted
/// however the test ends.
struct Chroot(PathBuf);

impl Chroot {
    fn new(python: &Path) -> Chroot {
        let root = std::env::temp_dir().join(format!("python-chroot-{}", std::process::id()));
        let c = Chroot(root.clone());
        for d in ["usr", "opt/ctr/bin", "work", "tmp"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        // Merged /usr: the loader and libraries are reached through these.
        for (link, to) in [
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
            ("bin", "usr/bin"),
        ] {
            let _ = std::os::unix::fs::symlink(to, root.join(link));
        }
        let ok = Command::new("mount")
            .args(["--bind", "-o", "ro", "/usr"])
            .arg(root.join("usr"))
            .status()
            .expect("mount runs");
        assert!(ok.success(), "bind-mounting /usr into {}", root.display());
        std::fs::copy(
            python,
            root.join("opt/ctr/bin").join(python.file_name().unwrap()),
        )
        .unwrap();
        c
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.0.join("usr"))
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_python_in_another_root_is_unwound_and_named() {
    require_root();
    // Debian's interpreter, copied to /opt/ctr/bin inside a chroot: the
    // profiler must reach it through the process (map_files, /proc/PID/root),
    // since no such file exists on the host.
    let host = (8..=13)
        .map(|m| PathBuf::from(format!("/usr/bin/python3.{m}")))
        .find(|p| p.exists())
        .expect("a Debian /usr/bin/python3.X");
    let root = Chroot::new(&host);
    std::fs::write(root.0.join("work/chain.py"), chain_script()).unwrap();
    let inside = Path::new("/opt/ctr/bin").join(host.file_name().unwrap());
    let _g = BPF.lock().unwrap_or_else(|e| e.into_inner());
    let mut child = Reaped(
        Command::new("chroot")
            .arg(&root.0)
            .arg(&inside)
            .arg("/work/chain.py")
            .env("PYTHONHOME", "/usr")
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(700));
    let opts = RecordOptions {
        session: SessionOptions {
            table_cache: None,
            target: Target::pids(vec![child.0.id()]),
            frequency: 199,
            load: LoadOptions::default(),
        },
        duration: Some(Duration::from_secs(2)),
        debug_info: false,
        symbolize: true,
    };
    let rec = record::record(&opts, &AtomicBool::new(false), |_| {}).expect("recording works");
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the chrooted Python exited early"
    );
    drop(child);
    let py = Interpreter {
        label: format!("chroot {}", inside.display()),
        exe: inside,
        minor: 0,
        local_symbols: false,
    };
    nearly_all(&py, &rec, |p, s| {
        python_chain(p, s) == ["<module>", "a", "b", "c"]
    })
    .unwrap();
    let leaf_files: std::collections::BTreeSet<String> = rec
        .profile
        .samples
        .iter()
        .filter_map(|s| s.frames.iter().find(|f| is_python(f)))
        .filter_map(|f| f.source_file.as_deref().map(str::to_string))
        .collect();
    assert_eq!(
        leaf_files.into_iter().collect::<Vec<_>>(),
        ["/work/chain.py"],
        "file names as the process sees them"
    );
}
