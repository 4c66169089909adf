//! The fan-out pipeline end to end on 127.0.0.1: exporters that are dead,
//! full or restarted, and forwarding from one collector to another.

#[path = "../../otlp/tests/common/mod.rs"]
mod common;

use collector::{Collector, Config, ExporterKind, ExporterSpec, OnFull};
use exporter_otlp::{OtlpConfig, Protocol, QueueConfig};
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_client::ProfilesServiceClient;
use otlp::{encode, ExportProfilesServiceRequest, ResourceInfo};
use prost::Message;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SAMPLES: usize = 60;

/// A realistic request stamped now (the store drops data older than its
/// retention), and the samples it holds.
fn request(host: &str) -> (ExportProfilesServiceRequest, u64) {
    let mut p = common::realistic(SAMPLES, 20);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        - 60_000_000_000;
    let shift = now - p.start_unix_ns;
    p.start_unix_ns += shift;
    for s in &mut p.samples {
        for t in &mut s.timestamps_unix_ns {
            *t += shift;
        }
    }
    let n = p.total_samples();
    let req = encode(
        &[p],
        &ResourceInfo {
            host_name: Some(host.into()),
            host_id: None,
        },
    );
    (req, n)
}

fn store_spec() -> ExporterSpec {
    ExporterSpec {
        name: "store".into(),
        on_full: OnFull::Refuse,
        kind: ExporterKind::Store {
            dir: None,
            config: store::StoreConfig::default(),
            queue: fast_queue(512 << 20),
        },
    }
}

fn fast_queue(max: u64) -> QueueConfig {
    QueueConfig {
        spool_max_bytes: max,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        shutdown_timeout: Duration::from_millis(500),
        ..QueueConfig::default()
    }
}

fn otlp_spec(name: &str, endpoint: String, protocol: Protocol, max: u64) -> ExporterSpec {
    ExporterSpec {
        name: name.into(),
        on_full: OnFull::Refuse,
        kind: ExporterKind::Otlp {
            config: OtlpConfig {
                endpoint,
                protocol,
                timeout: Duration::from_secs(2),
                ..OtlpConfig::default()
            },
            queue: fast_queue(max),
        },
    }
}

async fn start(dir: &Path, exporters: Vec<ExporterSpec>) -> Collector {
    start_at(dir, exporters, "127.0.0.1:0", "127.0.0.1:0").await
}

async fn start_at(dir: &Path, exporters: Vec<ExporterSpec>, grpc: &str, http: &str) -> Collector {
    Collector::start(Config {
        grpc_listen: Some(grpc.parse().unwrap()),
        http_listen: Some(http.parse().unwrap()),
        output_dir: dir.join("pprof"),
        data_dir: dir.to_path_buf(),
        flush_interval: Duration::from_secs(3600),
        retry_after: Duration::from_secs(3),
        exporters,
        ..Config::default()
    })
    .await
    .unwrap()
}

async fn grpc(c: &Collector) -> ProfilesServiceClient<tonic::transport::Channel> {
    ProfilesServiceClient::connect(format!("http://{}", c.grpc_addr.unwrap()))
        .await
        .unwrap()
        .max_encoding_message_size(usize::MAX)
}

/// A server that accepts TCP connections and never answers: the worst kind
/// of dead destination (every attempt waits for its timeout).
async fn black_hole() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

fn store_samples(c: &Collector) -> u64 {
    c.store().unwrap().stats().unwrap().total_samples
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct HttpResponse {
    status: u16,
    head: String,
    body: Vec<u8>,
}

async fn http_post(addr: SocketAddr, body: &[u8]) -> HttpResponse {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1development/profiles HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
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
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    HttpResponse {
        status,
        head,
        body: buf[end + 4..].to_vec(),
    }
}

#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_exporter_neither_blocks_the_receiver_nor_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (dead, _hole) = black_hole().await;
    let c = start(
        dir.path(),
        vec![
            otlp_spec("dead", format!("http://{dead}"), Protocol::Grpc, 512 << 20),
            store_spec(),
        ],
    )
    .await;
    let mut client = grpc(&c).await;
    let mut total = 0;
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let (req, n) = request(&format!("host-{}", i % 3));
        total += n;
        let t = Instant::now();
        let r = client.export(req).await.unwrap().into_inner();
        slowest = slowest.max(t.elapsed());
        assert_eq!(r.partial_success, None);
    }
    // The dead exporter's attempts take 2 s each; the receiver answers
    // after the spool fsyncs.
    assert!(
        slowest < Duration::from_secs(1),
        "slowest request {slowest:?}"
    );
    wait_until("the store got everything", Duration::from_secs(30), || {
        store_samples(&c) == total && c.exporter_stats()[1].spool_entries == 0
    })
    .await;
    let stats = c.exporter_stats();
    let (d, s) = (&stats[0], &stats[1]);
    assert_eq!((d.name.as_str(), d.kind), ("dead", "otlp"));
    assert_eq!((d.accepted, d.delivered, d.spool_entries), (20, 0, 20));
    assert_eq!((s.accepted, s.delivered, s.spool_entries), (20, 20, 0));
    assert_eq!(c.stats().requests_refused_busy, 0);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_retryably_counts_and_keeps_nothing_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (dead, _hole) = black_hole().await;
    let (req, n) = request("h");
    let size = req.encoded_len() as u64;
    // Room for two requests.
    let c = start(
        dir.path(),
        vec![
            store_spec(),
            otlp_spec(
                "dead",
                format!("http://{dead}"),
                Protocol::Http,
                size * 5 / 2,
            ),
        ],
    )
    .await;
    let body = req.encode_to_vec();
    for _ in 0..2 {
        assert_eq!(http_post(c.http_addr.unwrap(), &body).await.status, 200);
    }
    let r = http_post(c.http_addr.unwrap(), &body).await;
    assert_eq!(r.status, 503, "{}", r.head);
    assert!(r.head.contains("retry-after: 3"), "{}", r.head);
    let st = RpcStatus::decode(r.body.as_slice()).unwrap();
    assert_eq!(st.code, 14, "UNAVAILABLE");
    assert!(st.message.contains("exporter dead"), "{}", st.message);
    // gRPC: UNAVAILABLE with a RetryInfo, which our forwarder honours.
    let e = grpc(&c).await.export(req.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert_eq!(
        exporter_otlp::otlp::retry_delay(&e),
        Some(Duration::from_secs(3))
    );
    let stats = c.exporter_stats();
    assert_eq!((stats[1].accepted, stats[1].refused_full), (2, 2));
    // All or nothing: the store had room but kept only what was accepted.
    assert_eq!((stats[0].accepted, stats[0].refused_full), (2, 0));
    wait_until("store", Duration::from_secs(30), || {
        store_samples(&c) == 2 * n
    })
    .await;
    assert_eq!(c.stats().requests_refused_busy, 2);
    c.shutdown().await.unwrap();

    // on_full = "drop": the others still get everything; the drops are counted.
    let dir = tempfile::tempdir().unwrap();
    let mut dropper = otlp_spec(
        "dead",
        format!("http://{dead}"),
        Protocol::Http,
        size * 5 / 2,
    );
    dropper.on_full = OnFull::Drop;
    let c = start(dir.path(), vec![store_spec(), dropper]).await;
    for _ in 0..4 {
        assert_eq!(http_post(c.http_addr.unwrap(), &body).await.status, 200);
    }
    let stats = c.exporter_stats();
    assert_eq!(
        (
            stats[1].accepted,
            stats[1].dropped_full,
            stats[1].refused_full
        ),
        (2, 2, 0)
    );
    assert_eq!(stats[0].accepted, 4);
    wait_until("store", Duration::from_secs(30), || {
        store_samples(&c) == 4 * n
    })
    .await;
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_through_a_second_collector_over_grpc_and_http_survives_its_restart() {
    let down_dir = tempfile::tempdir().unwrap();
    let b = start(down_dir.path(), vec![store_spec()]).await;
    let (bg, bh) = (b.grpc_addr.unwrap(), b.http_addr.unwrap());
    let up_dir = tempfile::tempdir().unwrap();
    let a = start(
        up_dir.path(),
        vec![
            otlp_spec("fwd-grpc", format!("http://{bg}"), Protocol::Grpc, 64 << 20),
            otlp_spec("fwd-http", format!("http://{bh}"), Protocol::Http, 64 << 20),
        ],
    )
    .await;
    let mut client = grpc(&a).await;
    let mut sent = 0;
    for i in 0..5 {
        let (req, n) = request(&format!("host-{i}"));
        client.export(req).await.unwrap();
        sent += n;
    }
    // Each request arrives once per forwarder.
    wait_until("forwarded", Duration::from_secs(30), || {
        store_samples(&b) == 2 * sent
    })
    .await;
    let s = a.exporter_stats();
    assert!(
        s.iter().all(|e| e.delivered == 5 && e.spool_entries == 0),
        "{s:?}"
    );

    // The downstream collector goes away; the upstream keeps accepting.
    b.shutdown().await.unwrap();
    for i in 0..3 {
        let (req, n) = request(&format!("late-{i}"));
        client.export(req).await.unwrap();
        sent += n;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = a.exporter_stats();
    assert!(
        s.iter().all(|e| e.spool_entries == 3 && e.retried > 0),
        "{s:?}"
    );
    // Back on the same ports and data directory: the backlog arrives.
    let b = start_at(
        down_dir.path(),
        vec![store_spec()],
        &bg.to_string(),
        &bh.to_string(),
    )
    .await;
    wait_until("backlog forwarded", Duration::from_secs(30), || {
        store_samples(&b) == 2 * sent
    })
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_is_served_beside_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(Config {
        grpc_listen: Some("127.0.0.1:0".parse().unwrap()),
        http_listen: None,
        data_dir: dir.path().to_path_buf(),
        web_listen: Some("127.0.0.1:0".parse().unwrap()),
        exporters: vec![store_spec()],
        ..Config::default()
    })
    .await
    .unwrap();
    let (req, n) = request("web-host");
    grpc(&c).await.export(req).await.unwrap();
    wait_until("store", Duration::from_secs(30), || store_samples(&c) == n).await;
    let addr = c.web_addr.unwrap();
    let buf = http_get(addr, "/api/filters").await;
    assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    assert!(buf.contains("web-host"), "{buf}");
    c.shutdown().await.unwrap();
}

/// The path a user of the continuous agent sees: error frames as the agent
/// records them (no name, the code as data) → OTLP → collector → embedded
/// store → the page's JSON, and → Elasticsearch stackframe documents. Each
/// is named from spec/errors.json (4000: `native_no_mapping`), never by its
/// bare number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_frames_are_named_from_the_spec_on_the_page_and_in_elasticsearch() {
    let mut p = profile::testdata::errors();
    p.start_unix_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        - 60_000_000_000;
    let n = p.total_samples();
    let req = encode(&[p], &ResourceInfo::default());
    let names = profile::testdata::ERROR_FRAME_NAMES;

    // Elasticsearch: the function name of each error frame's stackframe.
    let docs =
        exporter_elasticsearch::encode(&req, &exporter_elasticsearch::EncodeOptions::default());
    let mut frame_names: Vec<String> = docs
        .docs
        .iter()
        .filter(|d| d.kind == exporter_elasticsearch::DocKind::Stackframe)
        .flat_map(|d| {
            let v: serde_json::Value = serde_json::from_str(&d.source).unwrap();
            v["function.name"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    frame_names.sort();
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.push("main".into());
    want.sort();
    assert_eq!(frame_names, want);

    // The collector's page.
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(Config {
        grpc_listen: Some("127.0.0.1:0".parse().unwrap()),
        http_listen: None,
        data_dir: dir.path().to_path_buf(),
        web_listen: Some("127.0.0.1:0".parse().unwrap()),
        exporters: vec![store_spec()],
        ..Config::default()
    })
    .await
    .unwrap();
    grpc(&c).await.export(req).await.unwrap();
    wait_until("store", Duration::from_secs(30), || store_samples(&c) == n).await;
    let addr = c.web_addr.unwrap();
    let buf = http_get(addr, "/api/flamegraph").await;
    assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    let body = &buf[buf.find("\r\n\r\n").unwrap() + 4..];
    let g: serde_json::Value = serde_json::from_str(body).unwrap();
    let main = g["root"]["c"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["n"] == "main")
        .unwrap_or_else(|| panic!("no main in {g}"));
    let mut leaves: Vec<(String, String)> = main["c"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["n"].as_str().unwrap().into(),
                c["k"].as_str().unwrap().into(),
            )
        })
        .collect();
    leaves.sort();
    let mut want: Vec<(String, String)> = names
        .iter()
        .map(|n| (n.to_string(), "error".into()))
        .collect();
    want.sort();
    assert_eq!(leaves, want);
    assert!(!body.contains("error code"), "{body}");
    c.shutdown().await.unwrap();
}

/// Backpressure crosses collectors: B is full (its forwarder is dead and
/// its spool holds two requests), so it refuses A's forwarders retryably
/// with a 1 s delay; A honours it (gRPC `RetryInfo`, HTTP `Retry-After`)
/// instead of its own 20–200 ms backoff, and keeps everything spooled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_downstream_collector_slows_the_forwarders_to_its_retry_delay() {
    let (dead, _hole) = black_hole().await;
    let (req, _) = request("h");
    let size = req.encoded_len() as u64;
    let b_dir = tempfile::tempdir().unwrap();
    let b = Collector::start(Config {
        grpc_listen: Some("127.0.0.1:0".parse().unwrap()),
        http_listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: b_dir.path().to_path_buf(),
        retry_after: Duration::from_secs(1),
        exporters: vec![otlp_spec(
            "dead",
            format!("http://{dead}"),
            Protocol::Grpc,
            size * 5 / 2,
        )],
        ..Config::default()
    })
    .await
    .unwrap();
    let a_dir = tempfile::tempdir().unwrap();
    let a = start(
        a_dir.path(),
        vec![
            otlp_spec(
                "fwd-grpc",
                format!("http://{}", b.grpc_addr.unwrap()),
                Protocol::Grpc,
                64 << 20,
            ),
            otlp_spec(
                "fwd-http",
                format!("http://{}", b.http_addr.unwrap()),
                Protocol::Http,
                64 << 20,
            ),
        ],
    )
    .await;
    let mut client = grpc(&a).await;
    for _ in 0..4 {
        client.export(req.clone()).await.unwrap();
    }
    // B takes two requests in all, then refuses.
    wait_until("B full", Duration::from_secs(10), || {
        b.stats().requests_refused_busy >= 2
    })
    .await;
    let refused_then = b.stats().requests_refused_busy;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let more = b.stats().requests_refused_busy - refused_then;
    // About one retry per forwarder per second; 20–200 ms backoff would be 20+.
    assert!((2..=8).contains(&more), "{more} refusals in 2.5 s");
    let s = a.exporter_stats();
    let entries: u64 = s.iter().map(|e| e.spool_entries).sum();
    let delivered: u64 = s.iter().map(|e| e.delivered).sum();
    assert_eq!((delivered, entries), (2, 6), "{s:?}");
    assert!(s.iter().all(|e| e.failed == 0), "{s:?}");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// The whole HTTP/1.1 response (status line, headers, body) to a GET.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    buf
}
