//! What the benches share: finding tools, starting `perf record`, reading a
//! process's CPU time, asking bpftool, waiting for a child with its resource
//! usage, medians. Each bench uses a subset (`mod common;`).

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// `perf record` prints nothing when it starts sampling: this long after the
/// spawn it is taken as sampling (it has scanned /proc and enabled its
/// events by then on the machines we run on).
pub const PERF_SETTLE: Duration = Duration::from_secs(2);

/// Whether `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("which")
        .arg(tool)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// How `perf record` unwinds user stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallGraph {
    /// `-g`: frame pointers.
    FramePointers,
    /// `--call-graph dwarf`: copies of the user stack, unwound afterwards.
    Dwarf,
}

/// `perf record -a -q -F FREQ -o DATA` with the call graph option: the
/// whole system until SIGINT.
pub fn perf_record(data: &Path, frequency: u64, call_graph: CallGraph) -> Command {
    let mut c = Command::new("perf");
    c.args(["record", "-a", "-q", "-F", &frequency.to_string(), "-o"])
        .arg(data);
    match call_graph {
        CallGraph::FramePointers => c.arg("-g"),
        CallGraph::Dwarf => c.args(["--call-graph", "dwarf"]),
    };
    c
}

/// User + system CPU seconds of a live process, all its threads (from
/// /proc/PID/stat; 0 when it is gone).
pub fn proc_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 (1-based), 12 and 13 after the comm.
    let ticks: u64 = fields.get(11).and_then(|s| s.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// `bpftool ARGS --json`, parsed (`null` when bpftool fails).
pub fn bpftool_json(args: &[&str]) -> serde_json::Value {
    Command::new("bpftool")
        .args(args)
        .arg("--json")
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or_default()
}

/// What `wait4` says about a child that exited.
#[derive(Clone, Copy, Debug, Default)]
pub struct Exited {
    /// The raw wait status.
    pub status: i32,
    /// User + system CPU seconds of the child and of every descendant it
    /// waited for.
    pub cpu_secs: f64,
    /// Peak resident set of the child (or its largest waited-for descendant), KiB.
    pub max_rss_kb: u64,
}

impl Exited {
    pub fn success(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }
}

/// Waits for `child` with `wait4` (so its CPU time comes along). With a
/// `deadline`, a child still running after it is killed (SIGKILL). `None`
/// when the child was already reaped.
pub fn wait_rusage(child: &Child, deadline: Option<Duration>) -> Option<Exited> {
    let pid = child.id() as libc::pid_t;
    let started = Instant::now();
    let mut status = 0;
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        let flags = if deadline.is_some() && !killed {
            libc::WNOHANG
        } else {
            0
        };
        // SAFETY: valid pointers to locals for the duration of the call.
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut ru) };
        if r == pid {
            break;
        }
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return None;
        }
        // r == 0: still running (WNOHANG).
        if deadline.is_some_and(|d| started.elapsed() >= d) {
            // SAFETY: plain kill(2) on our own, not yet reaped, child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(Exited {
        status,
        cpu_secs: secs(ru.ru_utime) + secs(ru.ru_stime),
        max_rss_kb: ru.ru_maxrss as u64,
    })
}

/// SIGINT (profilers write what they recorded on Ctrl-C), then
/// [`wait_rusage`].
pub fn interrupt_and_wait(child: &Child, deadline: Option<Duration>) -> Option<Exited> {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    wait_rusage(child, deadline)
}

/// The median (the upper one of an even count); NaN when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}
