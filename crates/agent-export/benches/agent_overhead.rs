//! Cost of the continuous agent itself: CPU (% of one core, from
//! `/proc/PID/stat` utime+stime) and memory (peak and final RSS) of an
//! agent sampling the whole machine at 20 Hz while two busy workloads keep
//! both CPUs loaded, exporting every 5 s to the real collector (in this
//! process) over gRPC and over HTTP. Start-up (loading every process's
//! unwind tables) is reported apart from steady state.
//!
//! `cargo bench -p agent-export --bench agent_overhead` (60 s per row),
//! `-- --quick` (10 s per row). Needs root. Targets: < 1 % of one core,
//! < 100 MB.

use agent_export::config::{AgentArgs, Settings};
use collector::{Collector, Config};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use workloads::Kind;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--as-agent") {
        as_agent(
            &args[2],
            &args[3],
            &args[4],
            args.get(5).map(String::as_str) == Some("debug-info"),
        );
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let secs = if quick { 10 } else { 60 };
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the agent needs root");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let out = std::env::temp_dir().join(format!("agent-bench-{}", std::process::id()));
    let c = rt
        .block_on(Collector::start(Config {
            grpc_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            output_dir: out.clone(),
            data_dir: out.join("data"),
            ..Config::default()
        }))
        .expect("collector starts");
    let grpc = format!("http://{}", c.grpc_addr.unwrap());
    let http = format!("http://{}", c.http_addr.unwrap());

    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut busy: Vec<workloads::Running> = (0..cpus.max(2))
        .map(|_| workloads::spawn(Kind::CChains, None).expect("workload starts"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    let mut rows = Vec::new();
    for (label, protocol, endpoint, debug_info) in [
        ("gRPC", "grpc", &grpc, false),
        ("HTTP", "http", &http, false),
        ("gRPC --debug-info", "grpc", &grpc, true),
    ] {
        let before = c.stats();
        rows.push((label, measure(protocol, endpoint, secs, debug_info)));
        let after = c.stats();
        eprintln!(
            "{label}: collector accepted {} requests, {} samples",
            after.requests - before.requests,
            after.samples_accepted - before.samples_accepted
        );
    }
    for w in &mut busy {
        w.kill().ok();
    }
    rt.block_on(c.shutdown()).ok();
    std::fs::remove_dir_all(&out).ok();

    println!();
    println!("ebpf-profiler agent at 20 Hz per CPU, {cpus} CPUs busy, export every 5 s, {secs} s per row");
    println!(
        "| export | start-up CPU s | steady CPU % of one core | sampling thread % | export+other % | new processes/s on the host | peak RSS MB | final RSS MB | target |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (label, r) in rows {
        let ok = r.cpu_pct < 1.0 && r.peak_rss_mb < 100.0;
        let ok_text = if ok {
            "met (< 1 %, < 100 MB)"
        } else if label.contains("debug-info") {
            "over (opt-in DWARF)"
        } else {
            "MISSED"
        };
        println!(
            "| {label} | {:.2} | {:.3} | {:.3} | {:.3} | {:.1} | {:.1} | {:.1} | {} |",
            r.startup_cpu_s,
            r.cpu_pct,
            r.sampler_pct,
            r.other_pct,
            r.forks_per_s,
            r.peak_rss_mb,
            r.final_rss_mb,
            ok_text
        );
    }
}

struct Row {
    startup_cpu_s: f64,
    /// The sampling thread: ring draining, process scans and unwind-table
    /// loads, resolving and encoding.
    sampler_pct: f64,
    /// Everything else: export (gzip, gRPC/HTTP), metrics server, runtime.
    other_pct: f64,
    /// Processes started per second on the machine meanwhile: each new
    /// executable costs the agent a scan and, for new files, a table load.
    forks_per_s: f64,
    cpu_pct: f64,
    peak_rss_mb: f64,
    final_rss_mb: f64,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn measure(protocol: &str, endpoint: &str, secs: u64, debug_info: bool) -> Row {
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut child: Child = Command::new(std::env::current_exe().unwrap())
        .args(["--as-agent", protocol, endpoint, &metrics])
        .args(debug_info.then_some("debug-info"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let t = Instant::now();
    // Sampling has started once the metrics show eBPF samples (the port is
    // bound before the programs load).
    while !sampling(&metrics) {
        assert!(child.try_wait().unwrap().is_none(), "agent exited");
        assert!(t.elapsed() < Duration::from_secs(120), "agent start-up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let startup = cpu_secs(pid);
    let threads0 = thread_cpu(pid);
    let forks0 = forks();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let used = cpu_secs(pid) - startup;
    let wall = t0.elapsed().as_secs_f64();
    let threads1 = thread_cpu(pid);
    let forks_per_s = (forks() - forks0) as f64 / wall;
    let (peak, rss) = rss_mb(pid);
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "agent: {status}");
    Row {
        startup_cpu_s: startup,
        sampler_pct: 100.0 * (threads1.0 - threads0.0) / wall,
        other_pct: 100.0 * (threads1.1 - threads0.1) / wall,
        forks_per_s,
        cpu_pct: 100.0 * used / wall,
        peak_rss_mb: peak,
        final_rss_mb: rss,
    }
}

fn sampling(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    if write!(s, "GET /metrics HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix("ebpf_profiler_samples_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

/// Processes created since boot (/proc/stat).
fn forks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("processes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// CPU seconds of the thread named "sampler" and of all the others.
fn thread_cpu(pid: u32) -> (f64, f64) {
    let (mut sampler, mut other) = (0.0, 0.0);
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let dir = t.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        let c = stat_cpu(&stat);
        if comm.trim() == "sampler" {
            sampler += c;
        } else {
            other += c;
        }
    }
    (sampler, other)
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap())
}

fn stat_cpu(stat: &str) -> f64 {
    // Fields after the parenthesized comm: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// (VmHWM, VmRSS) in MB.
fn rss_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmHWM:") / 1024.0, kb("VmRSS:") / 1024.0)
}

fn as_agent(protocol: &str, endpoint: &str, metrics: &str, debug_info: bool) {
    let args = AgentArgs {
        otlp_endpoint: Some(endpoint.to_string()),
        otlp_protocol: Some(match protocol {
            "grpc" => agent_export::config::Protocol::Grpc,
            _ => agent_export::config::Protocol::Http,
        }),
        metrics_listen: Some(metrics.parse().unwrap()),
        debug_info: Some(debug_info),
        ..AgentArgs::default()
    };
    let settings = Settings::resolve(&args, &Default::default()).unwrap();
    let summary = agent_export::run(settings, Arc::new(AtomicBool::new(false))).unwrap();
    eprintln!("{}", summary.line());
}
