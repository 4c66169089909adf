//! The exporter against the contract server: nothing accepted is lost through
//! 429 storms, a 30 s outage or a crash; known ids are not resent.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use exporter_elasticsearch::encode::index;
use exporter_elasticsearch::{
    Auth, BulkClient, BulkConfig, Config, DocKind, Document, EnqueueError, Exporter, ExporterError,
    ItemOutcome, Op, Schema, SpoolError,
};
use support::request::{realistic_request, ReqBuilder};
use support::ContractServer;

const PROCESSES: usize = 3;
const SAMPLES: usize = 40;
const PER_REQUEST: usize = PROCESSES * SAMPLES;

fn config(server: &ContractServer) -> Config {
    Config {
        bulk: BulkConfig {
            url: server.url(),
            timeout: Duration::from_secs(5),
            ..Default::default()
        },
        max_batch_docs: 200,
        max_batch_bytes: 256 << 10,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(500),
        entries_per_round: 4,
        ..Default::default()
    }
}

/// Opens an exporter, waiting for a dropped one to release the spool file.
async fn open(cfg: Config, dir: &Path) -> Exporter {
    let start = Instant::now();
    loop {
        match Exporter::new(cfg.clone(), dir) {
            Ok(e) => return e,
            Err(ExporterError::Spool(SpoolError::Db(e)))
                if start.elapsed() < Duration::from_secs(10) =>
            {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("opening exporter: {e}"),
        }
    }
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every event accepted is in events-all exactly once, every downsampled copy
/// points at an event, and every event's stacktrace exists.
fn assert_complete(server: &ContractServer, requests: usize) {
    assert_eq!(
        server.count(index::OTEL_EVENTS_ALL),
        requests * PER_REQUEST,
        "events-all"
    );
    let all: std::collections::HashSet<String> =
        server.ids(index::OTEL_EVENTS_ALL).into_iter().collect();
    for lvl in index::OTEL_EVENTS_5POW {
        assert!(
            server.ids(lvl).iter().all(|id| all.contains(id)),
            "{lvl} ⊆ events-all"
        );
    }
    let traces: std::collections::HashSet<String> =
        server.ids(index::OTEL_STACKTRACES).into_iter().collect();
    for ev in server.docs(index::OTEL_EVENTS_ALL) {
        assert!(traces.contains(ev["stacktrace.id"].as_str().unwrap()));
    }
    assert_eq!(server.count(index::OTEL_HOSTS), 1);
    assert_eq!(server.count(index::OTEL_EXECUTABLES), 3);
    assert!(
        server.errors().is_empty(),
        "mapping errors: {:?}",
        server.errors()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_everything_once_and_lru_stops_resending_known_ids() {
    let server = ContractServer::start().await;
    server.set_auth(Some("ApiKey c2VjcmV0OmtleQ==".into()));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server);
    cfg.bulk.auth = Auth::ApiKey("c2VjcmV0OmtleQ==".into());
    let exp = open(cfg, dir.path()).await;
    let n = 20;
    for v in 0..n {
        // Variants share the native frames, executables and the host.
        let acc = exp
            .enqueue(&realistic_request("host-a", v % 5, PROCESSES, SAMPLES))
            .unwrap();
        assert_eq!(acc.profiles, PROCESSES);
        assert!(acc.rejected.is_empty());
    }
    wait_until("spool drained", Duration::from_secs(60), || {
        exp.metrics().spool_entries == 0
    })
    .await;
    assert_complete(&server, n as usize);
    let st = server.stats();
    assert_eq!(st.unauthorized, 0);
    assert_eq!(st.gzip_requests, st.requests, "every body gzipped");
    assert!(
        st.max_items <= 200,
        "batches bounded in documents: {}",
        st.max_items
    );
    assert!(st.requests > 1, "several batches");
    // Write-once documents went out once each: no 409s, one attempt per id.
    assert_eq!(st.conflicts, 0, "no known id was resent");
    for idx in [
        index::OTEL_STACKTRACES,
        index::OTEL_STACKFRAMES,
        index::OTEL_EXECUTABLES,
        index::OTEL_HOSTS,
    ] {
        assert_eq!(server.max_attempts(idx), 1, "{idx}");
    }
    let m = exp.metrics();
    assert!(m.skipped_known > 0);
    assert_eq!(m.accepted, n);
    assert_eq!(m.rejected, 0);
    assert_eq!(m.spool_bytes, 0);
    assert_eq!(m.sent as usize, st.created as usize);
    let m = exp.shutdown().await;
    assert_eq!(m.dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_bounded_in_bytes() {
    let server = ContractServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server);
    cfg.bulk.gzip = false;
    cfg.max_batch_docs = 10_000;
    cfg.max_batch_bytes = 16 << 10;
    let exp = open(cfg, dir.path()).await;
    exp.enqueue(&realistic_request("host-a", 0, PROCESSES, SAMPLES))
        .unwrap();
    wait_until("spool drained", Duration::from_secs(30), || {
        exp.metrics().spool_entries == 0
    })
    .await;
    assert_complete(&server, 1);
    let st = server.stats();
    // One document is a few hundred bytes: a batch may pass the bound by at most one.
    assert!(
        st.max_body <= (16 << 10) + 1024,
        "largest body {}",
        st.max_body
    );
    assert!(st.requests >= 4);
    exp.shutdown().await;
}

/// `shutdown` drains what it can before its timeout; what is left stays on
/// disk and the next exporter sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_or_leaves_the_rest_on_disk() {
    let server = ContractServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server);
    cfg.shutdown_timeout = Duration::from_secs(1);
    // Up: shutdown right after enqueue still delivers everything.
    let exp = open(cfg.clone(), dir.path()).await;
    for v in 0..5 {
        exp.enqueue(&realistic_request("host-a", v, PROCESSES, SAMPLES))
            .unwrap();
    }
    let m = exp.shutdown().await;
    assert_eq!(m.spool_entries, 0, "drained on shutdown: {m:?}");
    assert_complete(&server, 5);
    // Down: shutdown gives up after its timeout, keeping the data — even
    // while the drain task sleeps in a long backoff.
    server.stop().await;
    let mut slow = cfg.clone();
    slow.backoff_initial = Duration::from_secs(20);
    slow.backoff_max = Duration::from_secs(20);
    let exp = open(slow, dir.path()).await;
    for v in 5..8 {
        exp.enqueue(&realistic_request("host-a", v, PROCESSES, SAMPLES))
            .unwrap();
    }
    wait_until("a failed attempt", Duration::from_secs(10), || {
        exp.metrics().retried > 0
    })
    .await;
    let start = Instant::now();
    let m = exp.shutdown().await;
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "bounded shutdown: {:?}",
        start.elapsed()
    );
    assert_eq!(m.spool_entries, 3);
    server.restart().await;
    let exp = open(cfg, dir.path()).await;
    exp.enqueue(&realistic_request("host-a", 8, PROCESSES, SAMPLES))
        .unwrap();
    wait_until("spool drained", Duration::from_secs(30), || {
        exp.metrics().spool_entries == 0
    })
    .await;
    assert_complete(&server, 9);
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_keep_data_in_the_spool() {
    let server = ContractServer::start().await;
    server.set_auth(Some("Basic dTpw".into()));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server);
    cfg.bulk.auth = Auth::Basic {
        username: "u".into(),
        password: "wrong".into(),
    };
    let exp = open(cfg.clone(), dir.path()).await;
    exp.enqueue(&realistic_request("host-a", 0, PROCESSES, SAMPLES))
        .unwrap();
    wait_until("401s", Duration::from_secs(10), || {
        server.stats().unauthorized >= 3
    })
    .await;
    assert_eq!(server.count(index::OTEL_EVENTS_ALL), 0);
    assert_eq!(exp.metrics().spool_entries, 1, "kept, not dropped");
    drop(exp);
    // Fixed credentials ("u:p"): the same spool is delivered.
    cfg.bulk.auth = Auth::Basic {
        username: "u".into(),
        password: "p".into(),
    };
    let exp = open(cfg, dir.path()).await;
    wait_until("spool drained", Duration::from_secs(30), || {
        exp.metrics().spool_entries == 0
    })
    .await;
    assert_complete(&server, 1);
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_429_storm_without_losing_documents() {
    let server = ContractServer::start().await;
    server.set_storm(800); // 80 % of items answered 429
    let dir = tempfile::tempdir().unwrap();
    let exp = open(config(&server), dir.path()).await;
    let n = 10;
    for v in 0..n {
        exp.enqueue(&realistic_request("host-a", v, PROCESSES, SAMPLES))
            .unwrap();
    }
    wait_until("storm hits", Duration::from_secs(30), || {
        server.stats().too_many > 500
    })
    .await;
    let before = exp.metrics();
    assert!(before.retried > 0);
    server.set_storm(300);
    wait_until("spool drained", Duration::from_secs(90), || {
        exp.metrics().spool_entries == 0
    })
    .await;
    assert_complete(&server, n as usize);
    let m = exp.shutdown().await;
    assert_eq!(m.rejected, 0, "429 is never a permanent failure");
    assert!(
        m.retried >= server.stats().too_many,
        "every 429 item was retried"
    );
}

/// The issue's scenario: Elasticsearch disappears for 30 s while the agent keeps
/// sending. Everything accepted before and during the outage arrives after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_30_second_outage() {
    outage(Duration::from_secs(30)).await;
}

async fn outage(duration: Duration) {
    let server = ContractServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server);
    cfg.backoff_max = Duration::from_secs(2);
    let exp = open(cfg, dir.path()).await;
    exp.enqueue(&realistic_request("host-a", 0, PROCESSES, SAMPLES))
        .unwrap();
    wait_until("first delivery", Duration::from_secs(20), || {
        exp.metrics().spool_entries == 0
    })
    .await;
    server.stop().await;
    let start = Instant::now();
    let mut accepted = 1;
    // The agent flushes every 5 s; do it faster so the spool holds many entries.
    while start.elapsed() < duration {
        exp.enqueue(&realistic_request("host-a", accepted, PROCESSES, SAMPLES))
            .unwrap();
        accepted += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let during = exp.metrics();
    assert!(
        during.spool_entries >= accepted - 2,
        "held in the spool: {during:?}"
    );
    assert!(during.retried > 0, "the exporter kept trying: {during:?}");
    assert_eq!(
        server.count(index::OTEL_EVENTS_ALL),
        PER_REQUEST,
        "nothing arrived during the outage"
    );
    server.restart().await;
    wait_until("spool drained", Duration::from_secs(60), || {
        exp.metrics().spool_entries == 0
    })
    .await;
    assert_complete(&server, accepted as usize);
    let m = exp.shutdown().await;
    assert_eq!(m.accepted, accepted);
    assert_eq!(m.rejected, 0);
}

/// `kill -9` while Elasticsearch is down, then a 429 storm in the middle of the
/// resend, then another crash: the third exporter delivers everything, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_then_reopen_delivers_everything_accepted_before_the_kill() {
    let server = ContractServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&server);
    server.stop().await;
    let exp = open(cfg.clone(), dir.path()).await;
    let n = 12;
    for v in 0..n {
        exp.enqueue(&realistic_request("host-a", v, PROCESSES, SAMPLES))
            .unwrap();
    }
    assert_eq!(exp.metrics().spool_entries, n);
    drop(exp); // no shutdown: the drain task is killed where it stands

    server.restart().await;
    server.set_storm(500);
    let exp = open(cfg.clone(), dir.path()).await;
    assert_eq!(
        exp.metrics().spool_entries,
        n,
        "all entries survived the crash"
    );
    wait_until("partial delivery", Duration::from_secs(30), || {
        server.count(index::OTEL_EVENTS_ALL) > 0
    })
    .await;
    drop(exp); // crash again, mid-delivery

    server.set_storm(0);
    let exp = open(cfg, dir.path()).await;
    wait_until("spool drained", Duration::from_secs(60), || {
        exp.metrics().spool_entries == 0
    })
    .await;
    // Exactly once: resent events carried the same ids and got 409.
    assert_complete(&server, n as usize);
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_refuses_with_a_retryable_error_and_counts_the_drop() {
    let server = ContractServer::start().await;
    server.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let req = realistic_request("host-a", 0, PROCESSES, SAMPLES);
    let size = prost::Message::encoded_len(&req) as u64 + 8;
    let mut cfg = config(&server);
    cfg.spool_max_bytes = size * 3;
    let exp = open(cfg, dir.path()).await;
    for _ in 0..3 {
        exp.enqueue(&req).unwrap();
    }
    let mut full = 0;
    for _ in 0..4 {
        match exp.enqueue(&req) {
            Err(e @ EnqueueError::Full) => {
                assert!(e.retryable());
                full += 1;
            }
            other => panic!("expected Full, got {other:?}"),
        }
    }
    let m = exp.metrics();
    assert_eq!((full, m.dropped, m.accepted, m.spool_entries), (4, 4, 3, 3));
    assert_eq!(m.spool_bytes, size * 3);
    // Once Elasticsearch is back the spool drains and accepts again.
    server.restart().await;
    wait_until("spool drained", Duration::from_secs(30), || {
        exp.metrics().spool_entries == 0
    })
    .await;
    exp.enqueue(&req).unwrap();
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_refused_with_the_reason() {
    let server = ContractServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let exp = open(config(&server), dir.path()).await;
    let mut b = ReqBuilder::new();
    let l = b.location(0, 0x10, Some("native"), &[]);
    let st = b.stack(&[l]);
    let s = b.sample(st, None, vec![1]);
    let mut p = b.cpu_profile(0, 50_000_000, vec![s]);
    p.sample_type = Some(b.value_type("off_cpu", "nanoseconds"));
    b.add_resource(&[], vec![p]);
    match exp.enqueue(&b.build()) {
        Err(e @ EnqueueError::Invalid(_)) => {
            assert!(!e.retryable());
            assert!(e.to_string().contains("not a CPU profile"), "{e}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let m = exp.metrics();
    assert_eq!((m.invalid_profiles, m.accepted, m.spool_entries), (1, 0, 0));
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_schema_end_to_end_with_scripted_upsert() {
    let server = ContractServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server);
    cfg.schema = Schema::Ecs;
    cfg.bulk.gzip = false;
    // Also covers events without caller-chosen ids (Elasticsearch assigns them).
    cfg.event_ids = false;
    let exp = open(cfg, dir.path()).await;
    for v in 0..3 {
        exp.enqueue(&realistic_request("host-b", v, PROCESSES, SAMPLES))
            .unwrap();
    }
    wait_until("spool drained", Duration::from_secs(30), || {
        exp.metrics().spool_entries == 0
    })
    .await;
    assert_eq!(server.count(index::ECS_EVENTS_ALL), 3 * PER_REQUEST);
    assert_eq!(server.count(index::ECS_EXECUTABLES), 3);
    assert_eq!(server.count(index::ECS_HOSTS), 1);
    assert!(server.count(index::ECS_SQ_LEAFFRAMES) > 0);
    assert!(server.errors().is_empty(), "{:?}", server.errors());
    assert_eq!(server.stats().gzip_requests, 0);
    exp.shutdown().await;
}

/// The bulk client alone: per-item outcomes as the server gives them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_client_reports_each_item() {
    let server = ContractServer::start().await;
    let client = BulkClient::new(&BulkConfig {
        url: server.url(),
        ..Default::default()
    })
    .unwrap();
    let doc = |index: &'static str, id: &str, op: Op, source: &str| Document {
        kind: DocKind::Stacktrace,
        op,
        index,
        id: id.into(),
        source: source.into(),
    };
    let good = doc(
        index::OTEL_STACKTRACES,
        "a",
        Op::Create,
        r#"{"@timestamp":"2024-01-01T00:00:00.000000001Z","frame.ids":"x","frame.types":"y"}"#,
    );
    let unknown_field = doc(
        index::OTEL_STACKTRACES,
        "b",
        Op::Create,
        r#"{"@timestamp":0,"frame.idz":"x"}"#,
    );
    let wrong_type = doc(
        index::OTEL_EVENTS_ALL,
        "c",
        Op::Create,
        r#"{"@timestamp":0,"count":"one"}"#,
    );
    let alias = doc(
        index::OTEL_EVENTS_ALL,
        "d",
        Op::Create,
        r#"{"@timestamp":0,"Stacktrace.id":"x"}"#,
    );
    let no_ts = doc(
        index::OTEL_STACKTRACES,
        "e",
        Op::Create,
        r#"{"frame.ids":"x"}"#,
    );
    let update_on_stream = doc(
        index::OTEL_STACKTRACES,
        "f",
        Op::Update,
        r#"{"upsert":{"@timestamp":0}}"#,
    );
    let docs = [
        &good,
        &good,
        &unknown_field,
        &wrong_type,
        &alias,
        &no_ts,
        &update_on_stream,
    ];
    let out = client.send(&docs).await.unwrap();
    assert_eq!(out[0], ItemOutcome::Written);
    assert_eq!(out[1], ItemOutcome::Exists);
    for (i, o) in out.iter().enumerate().skip(2) {
        assert!(
            matches!(o, ItemOutcome::Rejected { status: 400, .. }),
            "item {i}: {o:?}"
        );
    }
    let reasons: Vec<String> = out.iter().skip(2).map(|o| format!("{o:?}")).collect();
    assert!(reasons[0].contains("frame.idz"));
    assert!(reasons[2].contains("alias"));
    assert!(reasons[3].contains("@timestamp"));
    assert!(reasons[4].contains("create"));
    // Transport failure is an error of the whole request, retryable.
    server.stop().await;
    let err = client.send(&[&good]).await.unwrap_err();
    assert!(err.retryable(), "{err}");
    let _ = Arc::clone(&server);
}

const KILL9_CHILD: &str = "EXPORTER_ES_KILL9_CHILD";

/// A real `kill -9`: this test re-runs itself as a child process that enqueues
/// requests (printing each one `enqueue` accepted) while Elasticsearch answers
/// 90 % of items with 429; the parent SIGKILLs it mid-delivery, reopens the
/// spool and checks that every request reported accepted arrived whole, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_kill_9_then_reopen_delivers_everything_accepted() {
    if let Ok(spec) = std::env::var(KILL9_CHILD) {
        let (dir, url) = spec.split_once('\n').expect("dir\\nurl");
        let mut cfg = Config {
            bulk: BulkConfig {
                url: url.into(),
                ..Default::default()
            },
            ..Default::default()
        };
        cfg.backoff_initial = Duration::from_millis(10);
        cfg.backoff_max = Duration::from_millis(100);
        let exp = open(cfg, Path::new(dir)).await;
        for v in 0..400 {
            exp.enqueue(&realistic_request("host-a", v, PROCESSES, SAMPLES))
                .unwrap();
            println!("ACCEPTED {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The parent kills us long before this.
        tokio::time::sleep(Duration::from_secs(60)).await;
        return;
    }
    use std::io::BufRead as _;
    let server = ContractServer::start().await;
    server.set_storm(900);
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "real_kill_9_then_reopen_delivers_everything_accepted",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            KILL9_CHILD,
            format!("{}\n{}", dir.path().display(), server.url()),
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let accepted: Vec<u64> = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(v) = line.strip_prefix("ACCEPTED ") {
                got.push(v.trim().parse().unwrap());
                if got.len() == 15 {
                    break;
                }
            }
        }
        got
    })
    .await
    .unwrap();
    assert_eq!(accepted.len(), 15, "child accepted requests");
    // Let some deliveries happen (through the storm), then SIGKILL.
    wait_until("partial delivery", Duration::from_secs(20), || {
        server.count(index::OTEL_EVENTS_ALL) > 0
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let delivered_before = server.count(index::OTEL_EVENTS_ALL);

    server.set_storm(0);
    let exp = open(config(&server), dir.path()).await;
    wait_until("spool drained", Duration::from_secs(60), || {
        exp.metrics().spool_entries == 0
    })
    .await;
    // Every reported request arrived whole: its 5 s window holds all its events.
    let t0 = 1_700_000_000u64;
    let mut per_variant = std::collections::HashMap::<u64, usize>::new();
    for ev in server.docs(index::OTEL_EVENTS_ALL) {
        let ts = ev["@timestamp"].as_str().unwrap().to_owned();
        let secs = ts_secs(&ts);
        *per_variant.entry((secs - t0) / 5).or_default() += 1;
    }
    for v in &accepted {
        assert_eq!(
            per_variant.get(v).copied().unwrap_or(0),
            PER_REQUEST,
            "request {v}"
        );
    }
    // Requests accepted after the last line we read may be there too, but only whole.
    assert!(
        per_variant.values().all(|&n| n == PER_REQUEST),
        "{per_variant:?}"
    );
    let total = server.count(index::OTEL_EVENTS_ALL);
    assert!(
        delivered_before > 0 && delivered_before < total,
        "killed mid-delivery: {delivered_before} of {total} events"
    );
    assert!(server.errors().is_empty());
    exp.shutdown().await;
}

/// Epoch seconds of an RFC 3339 UTC timestamp as the encoder writes them.
fn ts_secs(ts: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| ts[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // days_from_civil (Howard Hinnant)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)) as u64
}

/// A document Elasticsearch always answers 503 is retried a bounded number of
/// times, then counted as rejected; one answered 400 is rejected at once. The
/// rest of the request is delivered and the spool does not get stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_documents_are_bounded_and_counted() {
    for (status, attempts) in [(503u16, 4u32), (400, 1)] {
        let server = ContractServer::start().await;
        server.set_poison(index::OTEL_HOSTS, status);
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(&server);
        cfg.max_item_retries = 3;
        let exp = open(cfg, dir.path()).await;
        exp.enqueue(&realistic_request("host-a", 0, PROCESSES, SAMPLES))
            .unwrap();
        wait_until("spool drained", Duration::from_secs(30), || {
            exp.metrics().spool_entries == 0
        })
        .await;
        let m = exp.shutdown().await;
        assert_eq!(m.rejected, 1, "{status}: {m:?}");
        assert_eq!(server.max_attempts(index::OTEL_HOSTS), attempts, "{status}");
        assert_eq!(server.count(index::OTEL_EVENTS_ALL), PER_REQUEST);
        assert_eq!(server.count(index::OTEL_HOSTS), 0);
    }
}

#[test]
fn new_outside_a_runtime_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    match Exporter::new(Config::default(), dir.path()) {
        Err(e @ ExporterError::NoRuntime) => assert!(e.to_string().contains("tokio runtime")),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("expected NoRuntime"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_spool_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(exporter_elasticsearch::spool::SPOOL_FILE),
        vec![0xAB; 64 << 10],
    )
    .unwrap();
    match Exporter::new(Config::default(), dir.path()) {
        Err(ExporterError::Spool(e)) => assert!(!e.to_string().is_empty()),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a garbage spool file must not open"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_request_is_accepted_and_stores_nothing() {
    let server = ContractServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let exp = open(config(&server), dir.path()).await;
    let acc = exp.enqueue(&ReqBuilder::new().build()).unwrap();
    assert_eq!((acc.profiles, acc.documents), (0, 0));
    let m = exp.shutdown().await;
    assert_eq!((m.accepted, m.spool_entries), (0, 0));
}
