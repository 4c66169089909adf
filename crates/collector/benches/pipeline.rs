//! What the spooled pipeline costs the receiver: 4 concurrent gRPC clients
//! send the same realistic request (3 processes, 300 samples) for a few
//! seconds to collectors with different exporter sets, and the table shows
//! accepted requests/s and latency percentiles (each accepted request is
//! fsynced into every spool first). Store rows also show how many requests
//! the store writer stored per second meanwhile and the backlog left in its
//! spool (intake outpacing the store is what the spool absorbs).
//!
//! `cargo bench -p collector --bench pipeline` (`-- --secs N` per row).
//! The spools live under `$TMPDIR` (fsync cost depends on that filesystem).

#[path = "../../otlp/tests/common/mod.rs"]
mod common;

use collector::{Collector, Config, ExporterKind, ExporterSpec, OnFull};
use exporter_otlp::{OtlpConfig, Protocol, QueueConfig};
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_client::ProfilesServiceClient;
use otlp::{encode, ResourceInfo};
use prost::Message;
use std::time::{Duration, Instant};

fn spec(name: &str, kind: ExporterKind) -> ExporterSpec {
    ExporterSpec {
        name: name.into(),
        on_full: OnFull::Refuse,
        kind,
    }
}

fn store() -> ExporterSpec {
    spec(
        "store",
        ExporterKind::Store {
            dir: None,
            config: store::StoreConfig::default(),
            queue: QueueConfig::default(),
        },
    )
}

fn dead_otlp() -> ExporterSpec {
    spec(
        "otlp-dead",
        ExporterKind::Otlp {
            // Nothing listens on port 1: connection refused, retried with backoff.
            config: OtlpConfig {
                endpoint: "http://127.0.0.1:1".into(),
                protocol: Protocol::Grpc,
                ..OtlpConfig::default()
            },
            queue: QueueConfig::default(),
        },
    )
}

fn dead_es() -> ExporterSpec {
    let mut c = exporter_elasticsearch::Config::default();
    c.bulk.url = "http://127.0.0.1:1".into();
    spec("es-dead", ExporterKind::Elasticsearch(Box::new(c)))
}

fn main() {
    let secs: f64 = std::env::args()
        .skip_while(|a| a != "--secs")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut p = common::realistic(300, 30);
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
        let req = encode(
            &[p],
            &ResourceInfo {
                host_name: Some("bench".into()),
                host_id: None,
            },
        );
        println!(
            "request: {} B protobuf; 4 concurrent gRPC clients, {secs} s per row; spools under {}",
            req.encoded_len(),
            std::env::temp_dir().display()
        );
        println!(
            "{:<28} {:>9} {:>8} {:>8} {:>8} {:>18}",
            "exporters", "requests", "req/s", "p50 ms", "p99 ms", "stored/s / backlog"
        );
        let rows: Vec<(&str, Vec<ExporterSpec>)> = vec![
            (
                "pprof (in memory)",
                vec![spec("pprof", ExporterKind::Pprof)],
            ),
            ("store", vec![store()]),
            ("store + otlp (dead)", vec![store(), dead_otlp()]),
            ("elasticsearch (dead)", vec![dead_es()]),
        ];
        for (label, exporters) in rows {
            let dir = tempfile::tempdir().unwrap();
            let has_store = exporters
                .iter()
                .any(|e| matches!(e.kind, ExporterKind::Store { .. }));
            let c = Collector::start(Config {
                grpc_listen: Some("127.0.0.1:0".parse().unwrap()),
                http_listen: None,
                output_dir: dir.path().join("pprof"),
                data_dir: dir.path().to_path_buf(),
                flush_interval: Duration::from_secs(1),
                max_concurrent_requests: 8,
                exporters,
                ..Config::default()
            })
            .await
            .unwrap();
            let url = format!("http://{}", c.grpc_addr.unwrap());
            let t0 = Instant::now();
            let deadline = t0 + Duration::from_secs_f64(secs);
            let mut tasks = Vec::new();
            for _ in 0..4 {
                let url = url.clone();
                let req = req.clone();
                tasks.push(tokio::spawn(async move {
                    let mut cl = ProfilesServiceClient::connect(url)
                        .await
                        .unwrap()
                        .max_encoding_message_size(usize::MAX);
                    let mut lat = Vec::new();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        cl.export(req.clone()).await.unwrap();
                        lat.push(t.elapsed());
                    }
                    lat
                }));
            }
            let mut lat = Vec::new();
            for t in tasks {
                lat.extend(t.await.unwrap());
            }
            let took = t0.elapsed().as_secs_f64();
            lat.sort();
            let pct = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
            // The store writer drains its spool concurrently: how many it
            // stored while intake ran, and the backlog left at the end.
            let drain = if has_store {
                let s = &c.exporter_stats()[0];
                format!("{:.0} / {}", s.delivered as f64 / took, s.spool_entries)
            } else {
                "-".into()
            };
            println!(
                "{label:<28} {:>9} {:>8.0} {:>8.2} {:>8.2} {:>18}",
                lat.len(),
                lat.len() as f64 / took,
                pct(0.5),
                pct(0.99),
                drain
            );
            drop(c);
        }
    });
}
