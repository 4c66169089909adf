//! The `ebpf-profiler collector` binary: crash safety against Elasticsearch
//! (real `kill -9`), the default web page, and configuration errors.

#[path = "../../exporter-elasticsearch/tests/support/mod.rs"]
mod support;

use prost::Message;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::request::realistic_request;
use support::ContractServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_ebpf-profiler");
const EVENTS: &str = "profiling-events-all.otel-default";
const PROCESSES: usize = 3;
const SAMPLES: usize = 40;
const PER_REQUEST: usize = PROCESSES * SAMPLES;

/// A running collector process and the lines it printed so far.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        // Keeps reading to the end so the pipe never fills.
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The rest of the first line containing `prefix` (after it).
    fn wait_line(&mut self, prefix: &str) -> String {
        let t0 = Instant::now();
        loop {
            if let Some(l) = self.seen.iter().find_map(|l| l.split_once(prefix)) {
                return l.1.to_string();
            }
            let left = Duration::from_secs(60).saturating_sub(t0.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no line with {prefix:?}; got {:?}", self.seen),
            }
        }
    }

    fn addr(&mut self, prefix: &str) -> SocketAddr {
        let rest = self.wait_line(prefix);
        let a = rest.trim_start_matches("http://");
        a.split('/').next().unwrap().parse().unwrap()
    }

    fn sigterm_and_wait(mut self) -> (std::process::ExitStatus, Vec<String>) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = self.child.wait().unwrap();
        let mut all = self.seen;
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            all.push(l);
        }
        (st, all)
    }
}

async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let method = if body.is_empty() { "GET" } else { "POST" };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    (status, text)
}

fn write_config(dir: &Path, es_url: &str) -> String {
    let f = dir.join("collector.toml");
    std::fs::write(
        &f,
        format!(
            r#"data_dir = "{}"
[receivers]
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
[web]
listen = "off"
[[exporters]]
type = "elasticsearch"
url = "{es_url}"
"#,
            dir.join("data").display()
        ),
    )
    .unwrap();
    f.to_string_lossy().into_owned()
}

/// Epoch seconds of an RFC 3339 UTC timestamp.
fn ts_secs(ts: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| ts[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)) as u64
}

/// Elasticsearch is down; the collector accepts 12 requests (each answered
/// 200 only once on disk) and is killed with SIGKILL. Elasticsearch comes
/// back, the collector restarts on the same data directory, and every event
/// of every accepted request arrives, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_elasticsearch_is_down_then_restart_delivers_everything() {
    let es = ContractServer::start().await;
    es.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &es.url());

    let mut first = Proc::spawn(&["collector", "--config", &config]);
    let http = first.addr("OTLP/HTTP on ");
    const N: u64 = 12;
    for v in 0..N {
        let body = realistic_request("host-a", v, PROCESSES, SAMPLES).encode_to_vec();
        let (status, text) = post(http, "/v1development/profiles", &body).await;
        assert_eq!(status, 200, "{text}");
    }
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    assert_eq!(es.count(EVENTS), 0, "Elasticsearch was down");

    es.restart().await;
    let mut second = Proc::spawn(&["collector", "--config", &config]);
    second.wait_line("OTLP/HTTP on ");
    let t0 = Instant::now();
    while es.count(EVENTS) < N as usize * PER_REQUEST {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{} of {} events delivered",
            es.count(EVENTS),
            N as usize * PER_REQUEST
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every request whole, none twice (each request's samples lie in its own 5 s window).
    let mut per_request = std::collections::HashMap::<u64, usize>::new();
    for ev in es.docs(EVENTS) {
        let secs = ts_secs(ev["@timestamp"].as_str().unwrap());
        *per_request.entry((secs - 1_700_000_000) / 5).or_default() += 1;
    }
    assert_eq!(per_request.len(), N as usize, "{per_request:?}");
    assert!(
        per_request.values().all(|&n| n == PER_REQUEST),
        "{per_request:?}"
    );
    assert!(es.errors().is_empty(), "{:?}", es.errors());

    let (status, lines) = second.sigterm_and_wait();
    assert!(status.success(), "{status:?} {lines:?}");
    let summary = lines
        .iter()
        .find(|l| l.contains("exporter elasticsearch"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(summary.contains("left in spool 0"), "{summary}");
}

/// Without a config file: the embedded store and the page, on the addresses given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_the_store_and_its_page_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_string_lossy().into_owned();
    let p = Proc::spawn(&[
        "collector",
        "--data-dir",
        &data,
        "--grpc-listen",
        "127.0.0.1:0",
        "--otlp-http-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ]);
    let mut p = p;
    let web = p.addr("web page on ");
    let (status, text) = post(web, "/", b"").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("<html"), "{text}");
    assert!(p.wait_line("exporters ").contains("store (store)"));
    let (status, _) = p.sigterm_and_wait();
    assert!(status.success());
    assert!(dir.path().join("store").join(store_file()).exists());
}

fn store_file() -> &'static str {
    "profiles.redb"
}

fn run_err(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn configuration_errors_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (code, e) = run_err(&["collector", "--config", "/nonexistent/c.toml"]);
    assert_eq!(code, 2);
    assert!(e.contains("/nonexistent/c.toml: cannot read"), "{e}");

    let f = dir.path().join("c.toml");
    std::fs::write(&f, "[[exporters]]\ntype = \"kafka\"\n").unwrap();
    let (code, e) = run_err(&["collector", "--config", f.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        e.contains(&format!(
            "{}: exporters[0].type: unknown exporter type \"kafka\"",
            f.display()
        )),
        "{e}"
    );

    std::fs::write(&f, "[[exporters]]\ntype = \"elasticsearch\"\n").unwrap();
    let (code, e) = run_err(&["collector", "--config", f.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        e.contains("exporters[0] (type = \"elasticsearch\"): missing field `url`"),
        "{e}"
    );

    let (code, e) = run_err(&[
        "collector",
        "--grpc-listen",
        "off",
        "--otlp-http-listen",
        "off",
    ]);
    assert_eq!(code, 2);
    assert!(e.contains("both receivers are off"), "{e}");

    let out = Command::new(BIN)
        .args(["collector", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--grpc-listen",
        "--otlp-http-listen",
        "--http-listen",
        "--data-dir",
        "127.0.0.1:7070",
    ] {
        assert!(help.contains(flag), "{flag} not in {help}");
    }
}

/// The same for the OTLP forwarder: a relay collector forwards to a central
/// one that is not running yet, is killed with SIGKILL after accepting, and
/// restarts; once the central collector comes up it receives every profile
/// accepted before the kill, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_relay_while_the_next_collector_is_down_loses_nothing() {
    // A free port for the central collector, which starts only later.
    let central_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("relay.toml");
    std::fs::write(
        &f,
        format!(
            r#"data_dir = "{}"
[receivers]
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
[web]
listen = "off"
[[exporters]]
type = "otlp"
name = "central"
endpoint = "http://{central_addr}"
protocol = "grpc"
timeout = "2s"
"#,
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let config = f.to_string_lossy().into_owned();
    let mut relay = Proc::spawn(&["collector", "--config", &config]);
    let http = relay.addr("OTLP/HTTP on ");
    const N: u64 = 8;
    for v in 0..N {
        let body = realistic_request("host-r", v, PROCESSES, SAMPLES).encode_to_vec();
        let (status, text) = post(http, "/v1development/profiles", &body).await;
        assert_eq!(status, 200, "{text}");
    }
    relay.child.kill().unwrap(); // SIGKILL
    relay.child.wait().unwrap();

    let mut relay = Proc::spawn(&["collector", "--config", &config]);
    relay.wait_line("OTLP/HTTP on ");
    let out = tempfile::tempdir().unwrap();
    let central = collector::Collector::start(collector::Config {
        grpc_listen: Some(central_addr),
        http_listen: None,
        output_dir: out.path().to_path_buf(),
        flush_interval: Duration::from_secs(3600),
        ..collector::Config::default()
    })
    .await
    .unwrap();
    let want = N * PROCESSES as u64;
    let t0 = Instant::now();
    while central.stats().profiles_accepted < want {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{:?}",
            central.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, lines) = relay.sigterm_and_wait();
    assert!(status.success(), "{status:?} {lines:?}");
    let s = central.stats();
    assert_eq!(
        (s.requests, s.profiles_accepted),
        (N, want),
        "every accepted request once"
    );
    let summary = lines
        .iter()
        .find(|l| l.contains("exporter central (otlp)"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(summary.contains("left in spool 0"), "{summary}");
    central.shutdown().await.unwrap();
}
