//! Ingest throughput into the contract server on one core: encoding alone,
//! then end to end (enqueue → fsynced spool → drain → gzip `_bulk` → server
//! checks every document against the templates).
//!
//! `cargo bench -p exporter-elasticsearch --bench ingest`. The process pins
//! itself to one CPU and runs exporter and server on one current-thread
//! runtime (the spool's blocking calls share that CPU).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use exporter_elasticsearch::{encode, BulkConfig, Config, EncodeOptions, Exporter, Schema};
use support::request::realistic_request;
use support::ContractServer;

const PROCESSES: usize = 4;
const SAMPLES: usize = 100; // per process: 400 samples per request

fn pin_to_one_cpu() -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; we set CPU 0 and apply it to this process.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

struct Row {
    name: String,
    secs: f64,
    requests: u64,
    samples: u64,
    documents: u64,
}

fn print(rows: &[Row]) {
    println!(
        "{:<44} {:>10} {:>12} {:>14} {:>14}",
        "scenario", "seconds", "requests/s", "samples/s", "documents/s"
    );
    for r in rows {
        println!(
            "{:<44} {:>10.2} {:>12.0} {:>14.0} {:>14.0}",
            r.name,
            r.secs,
            r.requests as f64 / r.secs,
            r.samples as f64 / r.secs,
            r.documents as f64 / r.secs
        );
    }
}

fn encode_only(schema: Schema, n: u64) -> Row {
    let reqs: Vec<_> = (0..16)
        .map(|v| realistic_request("bench-host", v, PROCESSES, SAMPLES))
        .collect();
    let start = Instant::now();
    let (mut samples, mut docs) = (0, 0);
    for i in 0..n {
        let e = encode(
            &reqs[(i % 16) as usize],
            &EncodeOptions {
                schema,
                seed: i,
                ..Default::default()
            },
        );
        samples += e.events;
        docs += e.docs.len() as u64;
    }
    Row {
        name: format!("encode only ({schema:?})"),
        secs: start.elapsed().as_secs_f64(),
        requests: n,
        samples,
        documents: docs,
    }
}

/// The spool alone: durable pushes (fsync), 4 threads sharing group commits.
fn spool_only(n: u64) -> Row {
    use prost::Message as _;
    let dir = tempfile::tempdir().unwrap();
    let spool =
        std::sync::Arc::new(exporter_elasticsearch::Spool::open(dir.path(), 1 << 34).unwrap());
    let payload = realistic_request("bench-host", 0, PROCESSES, SAMPLES).encode_to_vec();
    let start = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (spool, payload) = (spool.clone(), payload.clone());
            std::thread::spawn(move || {
                for i in (t..n).step_by(4) {
                    spool.push(i, &payload).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    Row {
        name: "spool push only (fsync, 4 threads)".into(),
        secs: start.elapsed().as_secs_f64(),
        requests: n,
        samples: n * (PROCESSES * SAMPLES) as u64,
        documents: 0,
    }
}

async fn end_to_end(n: u64, gzip: bool, checks: bool) -> Row {
    let server = ContractServer::start().await;
    server.set_lenient(!checks);
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        bulk: BulkConfig {
            url: server.url(),
            gzip,
            timeout: Duration::from_secs(30),
            ..Default::default()
        },
        ..Default::default()
    };
    let exp = Exporter::new(cfg, dir.path()).unwrap();
    let reqs: Vec<_> = (0..16)
        .map(|v| realistic_request("bench-host", v, PROCESSES, SAMPLES))
        .collect();
    let start = Instant::now();
    // Four concurrent senders, as a collector serving several agents has;
    // the fsync of each enqueue runs on the blocking pool.
    let exp = std::sync::Arc::new(exp);
    let mut senders = Vec::new();
    for s in 0..4u64 {
        let (exp, reqs) = (exp.clone(), reqs.clone());
        senders.push(tokio::spawn(async move {
            for i in (s..n).step_by(4) {
                exp.enqueue_async(reqs[(i % 16) as usize].clone())
                    .await
                    .unwrap();
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }

    while exp.metrics().spool_entries > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let exp = std::sync::Arc::try_unwrap(exp).ok().expect("senders done");
    let m = exp.shutdown().await;
    assert_eq!(m.rejected, 0);
    assert!(server.errors().is_empty(), "{:?}", server.errors());
    let events = server.count(exporter_elasticsearch::encode::index::OTEL_EVENTS_ALL) as u64;
    assert_eq!(
        events,
        n * (PROCESSES * SAMPLES) as u64,
        "every sample arrived"
    );
    Row {
        name: format!(
            "end to end, gzip {}, server {}",
            if gzip { "on" } else { "off" },
            if checks { "checks docs" } else { "lenient" }
        ),
        secs,
        requests: n,
        samples: events,
        documents: m.sent,
    }
}

fn main() {
    let pinned = pin_to_one_cpu();
    println!(
        "ingest bench: {} samples per request ({PROCESSES} processes × {SAMPLES}), pinned to one CPU: {pinned}",
        PROCESSES * SAMPLES
    );
    let mut rows = vec![
        encode_only(Schema::Otel, 400),
        encode_only(Schema::Ecs, 400),
    ];
    rows.push(spool_only(200));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
        .unwrap();
    rows.push(rt.block_on(end_to_end(200, true, true)));
    rows.push(rt.block_on(end_to_end(200, false, true)));
    rows.push(rt.block_on(end_to_end(200, true, false)));
    rows.push(rt.block_on(end_to_end(200, false, false)));
    print(&rows);
}
