//! `ebpf-profiler agent` end to end: the real binary (real eBPF, whole
//! system) exports to the real collector (`collector::Collector` on
//! 127.0.0.1, ephemeral ports) while test workloads run. Every request the
//! agent delivered is captured (`--capture-dir`, a hidden test aid that
//! writes the serialized request after the collector accepted it) and
//! decoded by the official Python `opentelemetry-proto` package; the stacks
//! it reads must hold the workloads' expected chains as `record` does
//! (≥ 99 %). Outages: the collector goes away for 20 s and comes back (no
//! batch lost), and a tiny queue budget drops batches, each one counted.
//!
//! Needs root, python3 with `opentelemetry-proto` ≥ 1.45 (`scripts/install-deps`).

use collector::{Collector, Config};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use workloads::Kind;

/// One eBPF session at a time: two agents would starve each other on 2 CPUs.
static BPF: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    BPF.lock().unwrap_or_else(|e| e.into_inner())
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ebpf-profiler-agent-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn start_collector(rt: &tokio::runtime::Runtime, grpc: u16, http: u16, out: &Path) -> Collector {
    let cfg = Config {
        grpc_listen: Some(SocketAddr::from(([127, 0, 0, 1], grpc))),
        http_listen: Some(SocketAddr::from(([127, 0, 0, 1], http))),
        output_dir: out.to_path_buf(),
        data_dir: out.join("data"),
        flush_interval: Duration::from_secs(2),
        ..Config::default()
    };
    // The port was just released (or the previous collector stopped): retry
    // the bind briefly.
    let started = Instant::now();
    loop {
        match rt.block_on(Collector::start(cfg.clone())) {
            Ok(c) => return c,
            Err(e) if started.elapsed() < Duration::from_secs(5) => {
                eprintln!("collector start: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("collector did not start: {e}"),
        }
    }
}

/// Requests the collector took in (not refused).
fn accepted(c: &Collector) -> u64 {
    let s = c.stats();
    s.requests - s.requests_rejected
}

struct Agent {
    child: Child,
    stderr_path: PathBuf,
}

fn start_agent(args: &[&str], dir: &Path) -> Agent {
    let stderr_path = dir.join("agent.stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_ebpf-profiler"))
        .arg("agent")
        .args(args)
        .env("EBPF_PROFILER_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    Agent { child, stderr_path }
}

/// A failed assertion must not leave an agent sampling the machine.
impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Agent {
    /// SIGTERM, then the agent's stderr once it exited.
    fn stop(&mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let t = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if t.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!(
                    "agent did not stop within 30 s of SIGTERM:\n{}",
                    std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap();
        assert!(status.success(), "agent failed ({status}):\n{stderr}");
        stderr
    }

    fn assert_alive(&mut self) {
        if let Some(s) = self.child.try_wait().unwrap() {
            panic!(
                "agent exited early ({s}):\n{}",
                std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
            );
        }
    }
}

/// The `agent stopped: ...` line's numbers, by `section.key`
/// (`batches.sent`, `samples.dropped`, ...).
fn summary(stderr: &str) -> HashMap<String, u64> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("agent stopped:"))
        .unwrap_or_else(|| panic!("no summary line in:\n{stderr}"));
    let mut out = HashMap::new();
    for part in line.trim_start_matches("agent stopped:").split(';') {
        let mut words = part.split_whitespace();
        let section = words.next().unwrap().to_string();
        for kv in words {
            let (k, v) = kv.split_once('=').unwrap();
            out.insert(format!("{section}.{k}"), v.parse().unwrap());
        }
    }
    out
}

/// Waits until the agent samples: its metrics show eBPF samples (the
/// metrics port is bound before the eBPF programs load, and served from the
/// moment sampling starts; a debug build takes seconds to scan every
/// process first).
fn wait_started(agent: &mut Agent, metrics_addr: &str) {
    let t = Instant::now();
    loop {
        agent.assert_alive();
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "agent did not start within 120 s"
        );
        if let Some(text) = try_http_get(metrics_addr, "/metrics") {
            if text
                .lines()
                .find_map(|l| l.strip_prefix("ebpf_profiler_samples_total "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0)
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn try_http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Value of a Prometheus sample line.
fn prom(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

const DECODE_PY: &str = r#"
import json, os, sys
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2 as ps

def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None

d = sys.argv[1]
out = {"requests": 0, "samples": [], "host_ids": [], "host_names": [], "periods": [],
       "sample_types": [], "locations_without_frame_type": 0}
for name in sorted(os.listdir(d)):
    if not name.endswith(".pb"):
        continue
    req = ps.ExportProfilesServiceRequest()
    req.ParseFromString(open(os.path.join(d, name), "rb").read())
    out["requests"] += 1
    dic = req.dictionary
    st = dic.string_table
    for loc in dic.location_table[1:]:
        keys = [st[dic.attribute_table[i].key_strindex] for i in loc.attribute_indices]
        if "profile.frame.type" not in keys:
            out["locations_without_frame_type"] += 1
    for rp in req.resource_profiles:
        ra = {kv.key: value(kv.value) for kv in rp.resource.attributes}
        out["host_ids"].append(ra.get("host.id"))
        out["host_names"].append(ra.get("host.name"))
        pid = int(ra.get("process.pid", -1))
        for sp in rp.scope_profiles:
            for p in sp.profiles:
                out["periods"].append(p.period)
                out["sample_types"].append(st[p.sample_type.type_strindex] + "/" + st[p.sample_type.unit_strindex])
                for s in p.samples:
                    frames = []
                    for li in dic.stack_table[s.stack_index].location_indices:
                        loc = dic.location_table[li]
                        if not loc.lines:
                            frames.append("0x%x" % loc.address)
                        for line in loc.lines:
                            frames.append(st[dic.function_table[line.function_index].name_strindex])
                    count = len(s.timestamps_unix_nano) or sum(s.values)
                    out["samples"].append({"pid": pid, "frames": frames, "count": count})
for k in ("host_ids", "host_names", "periods", "sample_types"):
    out[k] = sorted(set(x for x in out[k] if x is not None))
print(json.dumps(out))
"#;

/// What the official Python package reads from the captured requests.
fn python_decode(dir: &Path) -> serde_json::Value {
    let script = dir.with_extension("py");
    std::fs::write(&script, DECODE_PY).unwrap();
    let o = Command::new("python3")
        .arg(&script)
        .arg(dir)
        .output()
        .expect("python3 (scripts/install-deps installs it with opentelemetry-proto)");
    assert!(
        o.status.success(),
        "the Python opentelemetry-proto decoder failed (pip install 'opentelemetry-proto>=1.45'): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Root-first stacks and counts of one process in the decoded samples.
fn stacks_of(decoded: &serde_json::Value, pid: u32) -> Vec<(Vec<String>, u64)> {
    decoded["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["pid"].as_u64() == Some(pid as u64))
        .map(|s| {
            let mut frames: Vec<String> = s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string())
                .collect();
            frames.reverse();
            (frames, s["count"].as_u64().unwrap())
        })
        .collect()
}

fn captured(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "pb")
        })
        .count()
}

/// 16 s of the whole machine exported over `protocol`; the Python decoder
/// must find both workloads' chains in ≥ 99 % of their samples.
fn exports_workload_stacks(protocol: &str) {
    let _g = lock();
    let dir = scratch(protocol);
    let capture = dir.join("capture");
    let rt = runtime();
    // Ports the kernel picks while binding: a port probed free and bound
    // later can meanwhile be the source port of some connection.
    let c = start_collector(&rt, 0, 0, &dir.join("out"));
    let (gp, hp) = (c.grpc_addr.unwrap().port(), c.http_addr.unwrap().port());
    let mut c_chains = workloads::spawn(Kind::CChains, None).expect("workload starts");
    let mut rust = workloads::spawn(Kind::RustRelease, None).expect("workload starts");
    std::thread::sleep(Duration::from_millis(200));
    let endpoint = match protocol {
        "grpc" => format!("http://127.0.0.1:{gp}"),
        _ => format!("http://127.0.0.1:{hp}"),
    };
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut agent = start_agent(
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            protocol,
            "--interval",
            "2s",
            "--metrics-listen",
            &metrics_addr,
            "--header",
            "X-Test=agent",
            "--capture-dir",
            capture.to_str().unwrap(),
        ],
        &dir,
    );
    wait_started(&mut agent, &metrics_addr);
    std::thread::sleep(Duration::from_secs(16));
    agent.assert_alive();
    let text = http_get(&metrics_addr, "/metrics");
    assert!(
        text.starts_with("HTTP/1.") && text.contains(" 200 "),
        "{text}"
    );
    assert!(prom(&text, "ebpf_profiler_samples_total") > 100, "{text}");
    assert!(
        prom(&text, "ebpf_profiler_agent_traces_received_total") > 100,
        "{text}"
    );
    assert!(prom(&text, "ebpf_profiler_agent_pid_scans_total") > 0);
    assert!(prom(&text, "ebpf_profiler_agent_processes") > 0);
    assert!(
        prom(&text, "ebpf_profiler_agent_export_batches_sent_total") >= 5,
        "{text}"
    );
    let stderr = agent.stop();
    drop(agent);
    // What `record` finds for the same running workload, for comparison.
    let folded = dir.join("record.folded");
    let o = Command::new(env!("CARGO_BIN_EXE_ebpf-profiler"))
        .args(["record", "-q", "-F", "99", "-d", "4", "--top", "0", "-p"])
        .arg(c_chains.pid().to_string())
        .arg("-o")
        .arg(&folded)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let recorded = folded_stacks(&std::fs::read_to_string(&folded).unwrap());
    c_chains.kill().ok();
    rust.kill().ok();
    let s = summary(&stderr);
    assert_eq!(s["batches.dropped"], 0, "{stderr}");
    assert_eq!(s["batches.rejected"], 0, "{stderr}");
    assert_eq!(s["batches.unsent"], 0, "{stderr}");
    assert_eq!(s["batches.enqueued"], s["batches.sent"], "{stderr}");
    assert!(s["batches.sent"] >= 4, "up to 8 intervals of 2 s: {stderr}");
    assert_eq!(
        accepted(&c),
        s["batches.sent"],
        "collector saw every request once"
    );
    assert_eq!(captured(&capture) as u64, s["batches.sent"]);
    let stats = c.stats();
    assert!(
        stats.samples_accepted > 0 && stats.profiles_rejected == 0,
        "{stats:?}"
    );
    let files = rt.block_on(c.shutdown()).unwrap();
    let out_files = std::fs::read_dir(dir.join("out")).unwrap().count();
    assert!(
        out_files > 0 || !files.is_empty(),
        "collector wrote pprof files"
    );

    let decoded = python_decode(&capture);
    assert_eq!(decoded["requests"].as_u64(), Some(s["batches.sent"]));
    assert_eq!(decoded["locations_without_frame_type"].as_u64(), Some(0));
    assert_eq!(decoded["periods"], serde_json::json!([50_000_000]), "20 Hz");
    assert_eq!(
        decoded["sample_types"],
        serde_json::json!(["samples/count"])
    );
    let machine_id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    if !machine_id.trim().is_empty() {
        assert_eq!(decoded["host_ids"], serde_json::json!([machine_id.trim()]));
    }
    assert_eq!(decoded["host_names"].as_array().unwrap().len(), 1);
    let total: u64 = decoded["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, s["samples.sent"], "every sample decoded once");
    for (kind, pid) in [
        (Kind::CChains, c_chains.pid()),
        (Kind::RustRelease, rust.pid()),
    ] {
        let stacks = stacks_of(&decoded, pid);
        let n: u64 = stacks.iter().map(|x| x.1).sum();
        assert!(n >= 100, "{kind:?}: only {n} samples exported");
        let share = workloads::full_chain_share(&stacks, &kind.expected_chains());
        let misses: Vec<String> = stacks
            .iter()
            .filter(|(st, c)| {
                workloads::full_chain_share(&[(st.clone(), *c)], &kind.expected_chains()) < 1.0
            })
            .map(|(st, c)| format!("x{c}: {}", st.join(";")))
            .collect();
        assert!(
            share >= 0.99,
            "{kind:?} over {protocol}: full chains in {:.2}% of {n} samples; misses:\n{}",
            share * 100.0,
            misses.join("\n")
        );
    }
    // The agent's OTLP and `record` agree on where CChains spends its time:
    // each of its two chains takes about the same share in both.
    let exported = stacks_of(&decoded, c_chains.pid());
    let rec_share = workloads::full_chain_share(&recorded, &Kind::CChains.expected_chains());
    assert!(rec_share >= 0.99, "record: {rec_share}");
    for chain in Kind::CChains.expected_chains() {
        let one = std::slice::from_ref(&chain);
        let (a, r) = (
            workloads::full_chain_share(&exported, one),
            workloads::full_chain_share(&recorded, one),
        );
        assert!(
            (a - r).abs() < 0.2 && a > 0.2,
            "{chain:?}: {:.1}% of the agent's samples, {:.1}% of record's",
            a * 100.0,
            r * 100.0
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Root-first stacks of a folded file (`comm;root;...;leaf count`).
fn folded_stacks(text: &str) -> Vec<(Vec<String>, u64)> {
    text.lines()
        .filter_map(|l| {
            let (stack, n) = l.rsplit_once(' ')?;
            let frames = stack.split(';').skip(1).map(str::to_string).collect();
            Some((frames, n.parse().ok()?))
        })
        .collect()
}

#[test]
fn grpc_export_is_read_by_the_official_decoder() {
    exports_workload_stacks("grpc");
}

#[test]
fn http_export_is_read_by_the_official_decoder() {
    exports_workload_stacks("http");
}

/// The collector is stopped for 20 s and started again on the same port:
/// everything queued meanwhile arrives, nothing twice.
#[test]
fn collector_outage_loses_nothing_within_the_queue_budget() {
    let _g = lock();
    let dir = scratch("outage");
    let capture = dir.join("capture");
    let rt = runtime();
    let (gp, hp) = (free_port(), free_port());
    let c1 = start_collector(&rt, gp, hp, &dir.join("out1"));
    let mut w = workloads::spawn(Kind::CChains, None).unwrap();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut agent = start_agent(
        &[
            "--metrics-listen",
            &metrics_addr,
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{gp}"),
            "--interval",
            "2s",
            "--max-backoff",
            "1s",
            "--capture-dir",
            capture.to_str().unwrap(),
        ],
        &dir,
    );
    wait_started(&mut agent, &metrics_addr);
    std::thread::sleep(Duration::from_secs(7));
    agent.assert_alive();
    let before = accepted(&c1);
    assert!(before >= 2, "exports before the outage: {before}");
    rt.block_on(c1.shutdown()).unwrap();
    std::thread::sleep(Duration::from_secs(20));
    agent.assert_alive();
    let c2 = start_collector(&rt, gp, hp, &dir.join("out2"));
    std::thread::sleep(Duration::from_secs(8));
    let stderr = agent.stop();
    drop(agent);
    w.kill().ok();
    let s = summary(&stderr);
    let after = accepted(&c2);
    assert_eq!(s["batches.dropped"], 0, "{stderr}");
    assert_eq!(s["batches.unsent"], 0, "{stderr}");
    assert_eq!(s["batches.rejected"], 0, "{stderr}");
    assert_eq!(s["batches.enqueued"], s["batches.sent"], "{stderr}");
    assert_eq!(
        before + after,
        s["batches.sent"],
        "before {before} + after {after}: {stderr}"
    );
    assert!(
        after >= 10,
        "about 10 intervals were queued during the outage: {after}"
    );
    assert!(s["export.failures"] > 0, "the outage was noticed: {stderr}");
    assert!(stderr.contains("export failed, retrying"), "{stderr}");
    assert_eq!(captured(&capture) as u64, s["batches.sent"]);
    rt.block_on(c2.shutdown()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// With a budget of a few batches and no collector for a while, the oldest
/// batches are dropped; every batch is either delivered or counted dropped,
/// and the drop log lines add up to the counter.
#[test]
fn tiny_queue_drops_are_counted_exactly() {
    let _g = lock();
    let dir = scratch("tiny");
    let rt = runtime();
    let (gp, hp) = (free_port(), free_port());
    let mut w = workloads::spawn(Kind::CChains, None).unwrap();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut agent = start_agent(
        &[
            "--metrics-listen",
            &metrics_addr,
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{hp}"),
            "--otlp-protocol",
            "http",
            "--interval",
            "1s",
            "--max-backoff",
            "1s",
            "--queue-bytes",
            "8KiB",
        ],
        &dir,
    );
    wait_started(&mut agent, &metrics_addr);
    // Nothing listens yet: batches pile up and overflow the budget.
    std::thread::sleep(Duration::from_secs(10));
    agent.assert_alive();
    let c = start_collector(&rt, gp, hp, &dir.join("out"));
    std::thread::sleep(Duration::from_secs(5));
    let stderr = agent.stop();
    drop(agent);
    w.kill().ok();
    let s = summary(&stderr);
    assert!(s["batches.dropped"] >= 1, "{stderr}");
    assert!(s["batches.sent"] >= 1, "{stderr}");
    assert_eq!(
        s["batches.enqueued"],
        s["batches.sent"] + s["batches.dropped"] + s["batches.rejected"] + s["batches.unsent"],
        "{stderr}"
    );
    assert_eq!(s["batches.unsent"], 0, "{stderr}");
    assert_eq!(accepted(&c), s["batches.sent"], "{stderr}");
    let logged: u64 = stderr
        .lines()
        .filter_map(|l| l.split("export queue full: dropped ").nth(1))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(
        logged, s["batches.dropped"],
        "drop log lines add up: {stderr}"
    );
    assert_eq!(
        s["samples.enqueued"],
        s["samples.sent"] + s["samples.dropped"],
        "{stderr}"
    );
    rt.block_on(c.shutdown()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = scratch("badcfg");
    let cfg = dir.join("agent.toml");
    std::fs::write(&cfg, "otlp-endpoint = \"collector:4317\"\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ebpf-profiler"))
        .args(["agent", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("http://"), "{e}");
    let o = Command::new(env!("CARGO_BIN_EXE_ebpf-profiler"))
        .args(["agent", "--header", "no-equals-sign"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("NAME=VALUE"));
    std::fs::remove_dir_all(&dir).ok();
}

/// The deployment files say what the code accepts: the collector ConfigMap
/// loads as a collector config, `deploy/agent.toml` as agent settings, and
/// every `EBPF_PROFILER_*` variable they set is one `agent --help` documents.
#[test]
fn deployment_files_match_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let yaml = std::fs::read_to_string(root.join("deploy/kubernetes/collector.yaml")).unwrap();
    // The block scalar under `collector.toml: |`, indented four spaces.
    let start =
        yaml.find("collector.toml: |\n").expect("ConfigMap key") + "collector.toml: |\n".len();
    let toml: String = yaml[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    let dir = scratch("deploy");
    let cfg = dir.join("collector.toml");
    std::fs::write(&cfg, &toml).unwrap();
    let c = collector::config::load(&cfg).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(c.grpc_listen, Some("0.0.0.0:4317".parse().unwrap()));
    assert_eq!(c.http_listen, Some("0.0.0.0:4318".parse().unwrap()));

    let args = agent_export::config::AgentArgs {
        config: Some(root.join("deploy/agent.toml")),
        ..Default::default()
    };
    let s = agent_export::config::Settings::load(&args).unwrap();
    assert_eq!(s.frequency, 20);
    assert_eq!(s.interval, Duration::from_secs(5));
    assert_eq!(s.queue_bytes, 64 << 20);

    let help = Command::new(env!("CARGO_BIN_EXE_ebpf-profiler"))
        .args(["agent", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let daemonset =
        std::fs::read_to_string(root.join("deploy/kubernetes/agent-daemonset.yaml")).unwrap();
    let readme = std::fs::read_to_string(root.join("deploy/README.md")).unwrap();
    let mut seen = 0;
    for text in [&daemonset, &readme] {
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("EBPF_PROFILER_")
                && word != "EBPF_PROFILER_LOG"
                && !word.ends_with('_')
            {
                seen += 1;
                assert!(
                    help.contains(&format!("[env: {word}="))
                        || help.contains(&format!("Environment: {word},")),
                    "{word} is not an agent setting"
                );
            }
        }
    }
    assert!(seen >= 10, "the files name the settings");
    let unit =
        std::fs::read_to_string(root.join("deploy/systemd/ebpf-profiler-agent.service")).unwrap();
    assert!(unit.contains(
        "ExecStart=/usr/local/bin/ebpf-profiler agent --config /etc/ebpf-profiler/agent.toml"
    ));
    std::fs::remove_dir_all(&dir).ok();
}

/// SIGTERM with no collector to flush to: the agent gives up after
/// `--shutdown-timeout` and counts what it could not deliver.
#[test]
fn shutdown_is_bounded_and_counts_what_was_not_delivered() {
    let _g = lock();
    let dir = scratch("shutdown");
    let mut w = workloads::spawn(Kind::CChains, None).unwrap();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut agent = start_agent(
        &[
            "--metrics-listen",
            &metrics_addr,
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{}", free_port()),
            "--interval",
            "1s",
            "--shutdown-timeout",
            "2s",
        ],
        &dir,
    );
    wait_started(&mut agent, &metrics_addr);
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    let stderr = agent.stop();
    let took = t.elapsed();
    drop(agent);
    w.kill().ok();
    assert!(
        took < Duration::from_secs(8),
        "stopped in {took:?} with a 2 s flush deadline"
    );
    let s = summary(&stderr);
    assert!(s["batches.unsent"] >= 2, "{stderr}");
    assert_eq!(s["batches.sent"], 0, "{stderr}");
    assert_eq!(
        s["batches.enqueued"],
        s["batches.dropped"] + s["batches.unsent"],
        "{stderr}"
    );
    assert!(stderr.contains("not delivered"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}
