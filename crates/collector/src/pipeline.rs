//! Fan-out: every accepted request goes to every configured exporter, each
//! behind its own bounded disk spool, so a slow or dead exporter neither
//! blocks the receivers nor the other exporters.
//!
//! # Admission (all or nothing)
//!
//! Before anything is written, every spooled exporter must have room for the
//! request ([`exporter_otlp::Spool::reserve`]; for Elasticsearch, whose
//! spool has no reservations, its current size against its bound). When an
//! exporter with `on_full = "refuse"` (the default) has no room, the whole
//! request is refused with a retryable status (gRPC `UNAVAILABLE` with a
//! `RetryInfo`, HTTP 503 with `Retry-After`) and written nowhere, so the
//! agent's retry does not duplicate data in the exporters that had room,
//! and nothing is lost: the agent keeps the data until some retry succeeds.
//! The price is that a dead exporter stops intake for all of them once its
//! spool is full (its bound is the outage it can absorb). An exporter with
//! `on_full = "drop"` instead skips the request (counted in its `dropped`)
//! and the others still get it: for best-effort destinations.
//!
//! Elasticsearch is written first; the reservations are committed after it
//! succeeded. Two Elasticsearch exporters filling up at the same moment (or
//! a disk error during a commit) may still refuse a request one of them
//! already took: the retry then duplicates it there (at-least-once).
//!
//! The pprof directory sink is not spooled: it buffers in memory and writes
//! a file per source and interval; a `kill -9` loses at most one interval.
//! Its buffer bound drops profiles as OTLP partial success.

use crate::sink::Sink;
use exporter_otlp::{
    Destination, EnqueueError, OtlpConfig, OtlpDestination, Outcome, Queue, QueueConfig,
    Reservation, SpoolError,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// What to do with a request when this exporter's spool is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnFull {
    /// Refuse the whole request retryably (nothing is lost, agents retry).
    #[default]
    Refuse,
    /// Skip this exporter for the request (counted); the others get it.
    Drop,
}

/// One exporter of the pipeline.
#[derive(Clone, Debug)]
pub struct ExporterSpec {
    /// Unique; names its spool directory `DATA_DIR/spool/NAME`.
    pub name: String,
    pub on_full: OnFull,
    pub kind: ExporterKind,
}

/// The exporter types.
#[derive(Clone, Debug)]
pub enum ExporterKind {
    /// Gzipped pprof files under [`crate::Config::output_dir`].
    Pprof,
    /// The embedded store (`DATA_DIR/store`, or `dir`), served by the web page.
    Store {
        dir: Option<PathBuf>,
        config: store::StoreConfig,
        queue: QueueConfig,
    },
    /// Elasticsearch through `exporter-elasticsearch` (its own spool).
    Elasticsearch(Box<exporter_elasticsearch::Config>),
    /// Another OTLP collector.
    Otlp {
        config: OtlpConfig,
        queue: QueueConfig,
    },
}

impl ExporterKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            ExporterKind::Pprof => "pprof",
            ExporterKind::Store { .. } => "store",
            ExporterKind::Elasticsearch(_) => "elasticsearch",
            ExporterKind::Otlp { .. } => "otlp",
        }
    }
}

/// Per-exporter counters (spool figures are current).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExporterStats {
    pub name: String,
    pub kind: &'static str,
    /// Requests written to this exporter's spool (pprof: profiles buffered).
    pub accepted: u64,
    /// Requests delivered (store: ingested; otlp: answered OK); ES:
    /// documents acknowledged; pprof: files written.
    pub delivered: u64,
    /// Requests refused upstream (retryably) because this exporter was full.
    pub refused_full: u64,
    /// Requests this exporter skipped because it was full (`on_full = "drop"`).
    pub dropped_full: u64,
    /// Entries the destination refused for good, or spool write errors.
    pub failed: u64,
    /// Profiles inside delivered requests the destination refused (OTLP
    /// partial success downstream, profiles the store or Elasticsearch
    /// found unusable).
    pub rejected_profiles: u64,
    /// Delivery attempts that will be retried.
    pub retried: u64,
    pub spool_bytes: u64,
    pub spool_entries: u64,
}

/// Writes spooled requests into the embedded store.
pub struct StoreDestination {
    store: Arc<store::Store>,
}

impl Destination for StoreDestination {
    fn describe(&self) -> String {
        format!("store {}", self.store.path().display())
    }

    async fn send(&self, payload: Vec<u8>) -> Outcome {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || ingest_into_store(&store, &payload))
            .await
            .unwrap_or_else(|e| Outcome::Retry {
                after: None,
                reason: format!("store task failed: {e}"),
            })
    }
}

/// Decodes a spooled request and stores each usable profile. A profile the
/// store refuses as invalid is counted and skipped; a storage error retries
/// the whole entry (profiles already stored from it are then stored twice:
/// at-least-once).
fn ingest_into_store(store: &store::Store, payload: &[u8]) -> Outcome {
    use prost::Message;
    let req = match otlp::ExportProfilesServiceRequest::decode(payload) {
        Ok(r) => r,
        Err(e) => return Outcome::Rejected(format!("spooled payload is not a request: {e}")),
    };
    let decoded = match otlp::decode_lenient(&req) {
        Ok(d) => d,
        Err(e) => return Outcome::Rejected(format!("invalid request: {e}")),
    };
    let mut rejected = decoded.rejected.len() as u64;
    for (_, p) in &decoded.profiles {
        match store.ingest(p) {
            Ok(_) => {}
            Err(store::StoreError::Invalid(m)) => {
                tracing::warn!("store refused a profile: {m}");
                rejected += 1;
            }
            Err(e) => {
                return Outcome::Retry {
                    after: None,
                    reason: format!("store: {e}"),
                }
            }
        }
    }
    Outcome::Delivered {
        rejected_items: rejected,
    }
}

enum Running {
    Pprof(Arc<Sink>),
    Store {
        queue: Queue<StoreDestination>,
        store: Arc<store::Store>,
    },
    Es {
        /// Taken out at shutdown (which consumes the exporter); request
        /// handlers share the read side.
        exporter: std::sync::RwLock<Option<exporter_elasticsearch::Exporter>>,
        /// Its counters at shutdown, for the final report.
        last: std::sync::Mutex<Option<exporter_elasticsearch::Metrics>>,
        max_bytes: u64,
    },
    Otlp(exporter_otlp::Exporter),
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused_full: AtomicU64,
    dropped_full: AtomicU64,
    failed: AtomicU64,
}

struct Exporter {
    name: String,
    on_full: OnFull,
    running: Running,
    counters: Counters,
}

/// Why the pipeline did not take a request.
#[derive(Debug)]
pub enum Refusal {
    /// Retryable: an exporter is full, shutting down or failed to write.
    Busy(String),
    /// Not retryable: the request is larger than an exporter's whole spool.
    TooLarge(String),
}

/// The running exporters.
pub struct Pipeline {
    exporters: Vec<Exporter>,
}

impl Pipeline {
    /// Starts every exporter (opens spools and the store). Must run inside
    /// a tokio runtime.
    pub fn start(
        specs: &[ExporterSpec],
        data_dir: &Path,
        pprof: impl FnOnce() -> Arc<Sink>,
    ) -> Result<Self, crate::Error> {
        let mut seen = std::collections::HashSet::new();
        let mut pprof = Some(pprof);
        let mut exporters = Vec::new();
        for s in specs {
            if !seen.insert(s.name.as_str()) {
                return Err(format!("two exporters are named {:?}", s.name).into());
            }
            let spool_dir = data_dir.join("spool").join(&s.name);
            let ctx = |e: &dyn std::fmt::Display| {
                format!("exporter {:?} ({}): {e}", s.name, s.kind.type_name())
            };
            let running = match &s.kind {
                ExporterKind::Pprof => match pprof.take() {
                    Some(f) => Running::Pprof(f()),
                    None => return Err("only one pprof exporter is supported".into()),
                },
                ExporterKind::Store { dir, config, queue } => {
                    let dir = dir.clone().unwrap_or_else(|| data_dir.join("store"));
                    let store = Arc::new(
                        store::Store::open(&dir, *config)
                            .map_err(|e| ctx(&format!("opening {}: {e}", dir.display())))?,
                    );
                    let queue = Queue::new(
                        queue.clone(),
                        &spool_dir,
                        StoreDestination {
                            store: store.clone(),
                        },
                    )
                    .map_err(|e| ctx(&e))?;
                    Running::Store { queue, store }
                }
                ExporterKind::Elasticsearch(config) => Running::Es {
                    last: std::sync::Mutex::new(None),
                    max_bytes: config.spool_max_bytes,
                    exporter: std::sync::RwLock::new(Some(
                        exporter_elasticsearch::Exporter::new((**config).clone(), &spool_dir)
                            .map_err(|e| ctx(&e))?,
                    )),
                },
                ExporterKind::Otlp { config, queue } => {
                    let dest = OtlpDestination::new(config.clone()).map_err(|e| ctx(&e))?;
                    Running::Otlp(Queue::new(queue.clone(), &spool_dir, dest).map_err(|e| ctx(&e))?)
                }
            };
            exporters.push(Exporter {
                name: s.name.clone(),
                on_full: s.on_full,
                running,
                counters: Counters::default(),
            });
        }
        Ok(Self { exporters })
    }

    /// The pprof sink, if one is configured.
    pub fn pprof(&self) -> Option<&Arc<Sink>> {
        self.exporters.iter().find_map(|e| match &e.running {
            Running::Pprof(s) => Some(s),
            _ => None,
        })
    }

    /// The embedded store, if one is configured.
    pub fn store(&self) -> Option<Arc<store::Store>> {
        self.exporters.iter().find_map(|e| match &e.running {
            Running::Store { store, .. } => Some(store.clone()),
            _ => None,
        })
    }

    fn spooled(&self) -> bool {
        self.exporters
            .iter()
            .any(|e| !matches!(e.running, Running::Pprof(_)))
    }

    /// Hands `req` to every spooled exporter, all or nothing (see the module
    /// docs). Blocking disk I/O (fsyncs): call from a blocking thread. The
    /// pprof sink is fed separately by the caller.
    pub fn export(&self, req: &otlp::ExportProfilesServiceRequest) -> Result<(), Refusal> {
        if !self.spooled() {
            return Ok(());
        }
        let payload = prost::Message::encode_to_vec(req);
        let size = payload.len() as u64;
        let mut take = vec![true; self.exporters.len()];
        let mut reservations: Vec<(usize, Reservation)> = Vec::new();
        // 1. Room everywhere, or refuse before writing anything.
        for (i, e) in self.exporters.iter().enumerate() {
            let room = match &e.running {
                Running::Pprof(_) => continue,
                Running::Store { queue, .. } => {
                    queue.reserve(size).map(|r| reservations.push((i, r)))
                }
                Running::Otlp(queue) => queue.reserve(size).map(|r| reservations.push((i, r))),
                Running::Es {
                    exporter,
                    max_bytes,
                    ..
                } => {
                    // 8 bytes of seed per entry, as the ES spool counts.
                    let used = es_metrics(exporter, None).map_or(0, |m| m.spool_bytes);
                    if size + 8 > *max_bytes {
                        Err(EnqueueError::Spool(SpoolError::TooLarge {
                            size,
                            max_bytes: *max_bytes,
                        }))
                    } else if used + size + 8 > *max_bytes {
                        Err(EnqueueError::Spool(SpoolError::Full {
                            used,
                            size,
                            max_bytes: *max_bytes,
                        }))
                    } else {
                        Ok(())
                    }
                }
            };
            if let Err(err) = room {
                if !err.retryable() {
                    return Err(Refusal::TooLarge(format!("exporter {}: {err}", e.name)));
                }
                if let Some(r) = self.full(i, &err.to_string()) {
                    return Err(r);
                }
                take[i] = false;
            }
        }
        // 2. Elasticsearch (no reservations): first, so that a refusal there
        // leaves the reserved spools untouched.
        for (i, e) in self.exporters.iter().enumerate() {
            let Running::Es { exporter, .. } = &e.running else {
                continue;
            };
            if !take[i] {
                continue;
            }
            let guard = exporter.read().unwrap_or_else(|p| p.into_inner());
            let Some(exporter) = guard.as_ref() else {
                return Err(Refusal::Busy(format!(
                    "exporter {} is shutting down",
                    e.name
                )));
            };
            match exporter.enqueue(req) {
                Ok(_) => {
                    e.counters.accepted.fetch_add(1, Relaxed);
                }
                // Nothing in it for Elasticsearch (e.g. no CPU profile):
                // counted by the exporter, not a reason to refuse.
                Err(exporter_elasticsearch::EnqueueError::Invalid(_)) => {}
                Err(exporter_elasticsearch::EnqueueError::Full) => {
                    if let Some(r) = self.full(i, "exporter spool is full") {
                        return Err(r);
                    }
                }
                Err(err) => {
                    e.counters.failed.fetch_add(1, Relaxed);
                    return Err(Refusal::Busy(format!("exporter {}: {err}", e.name)));
                }
            }
        }
        // 3. Commit the reservations.
        for (i, r) in reservations {
            let e = &self.exporters[i];
            let res = match &e.running {
                Running::Store { queue, .. } => queue.commit(r, &payload),
                Running::Otlp(queue) => queue.commit(r, &payload),
                _ => continue,
            };
            match res {
                Ok(_) => {
                    e.counters.accepted.fetch_add(1, Relaxed);
                }
                Err(err) => {
                    e.counters.failed.fetch_add(1, Relaxed);
                    tracing::error!("exporter {}: {err}", e.name);
                    return Err(Refusal::Busy(format!("exporter {}: {err}", e.name)));
                }
            }
        }
        Ok(())
    }

    /// Exporter `i` has no room: the refusal to return, or `None` when it
    /// drops instead. Counted either way.
    fn full(&self, i: usize, why: &str) -> Option<Refusal> {
        let e = &self.exporters[i];
        match e.on_full {
            OnFull::Refuse => {
                e.counters.refused_full.fetch_add(1, Relaxed);
                Some(Refusal::Busy(format!(
                    "exporter {} cannot take more data now ({why}); retry later",
                    e.name
                )))
            }
            OnFull::Drop => {
                e.counters.dropped_full.fetch_add(1, Relaxed);
                tracing::debug!("exporter {} full, request skipped: {why}", e.name);
                None
            }
        }
    }

    /// Counters of every exporter, in configuration order.
    pub fn stats(&self, pprof_stats: &crate::StatsSnapshot) -> Vec<ExporterStats> {
        self.exporters
            .iter()
            .map(|e| {
                let c = &e.counters;
                let mut s = ExporterStats {
                    name: e.name.clone(),
                    accepted: c.accepted.load(Relaxed),
                    refused_full: c.refused_full.load(Relaxed),
                    dropped_full: c.dropped_full.load(Relaxed),
                    failed: c.failed.load(Relaxed),
                    ..ExporterStats::default()
                };
                match &e.running {
                    Running::Pprof(_) => {
                        s.kind = "pprof";
                        s.accepted = pprof_stats.profiles_accepted;
                        s.delivered = pprof_stats.files_written;
                        s.failed = pprof_stats.write_errors;
                    }
                    Running::Store { queue, .. } => {
                        s.kind = "store";
                        queue_stats(&mut s, &queue.metrics());
                    }
                    Running::Otlp(queue) => {
                        s.kind = "otlp";
                        queue_stats(&mut s, &queue.metrics());
                    }
                    Running::Es { exporter, last, .. } => {
                        s.kind = "elasticsearch";
                        let m = es_metrics(exporter, Some(last)).unwrap_or_default();
                        s.delivered = m.sent;
                        s.retried = m.retried;
                        s.failed += m.rejected;
                        s.rejected_profiles = m.invalid_profiles;
                        s.spool_bytes = m.spool_bytes;
                        s.spool_entries = m.spool_entries;
                    }
                }
                s
            })
            .collect()
    }

    /// Stops every exporter, each draining its spool for up to its shutdown
    /// timeout (in parallel); what is left stays on disk for the next start.
    pub async fn shutdown(&self) {
        let mut stops: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>> =
            Vec::new();
        for e in &self.exporters {
            match &e.running {
                Running::Pprof(_) => {}
                Running::Store { queue, .. } => stops.push(Box::pin(async move {
                    queue.shutdown().await;
                })),
                Running::Otlp(queue) => stops.push(Box::pin(async move {
                    queue.shutdown().await;
                })),
                Running::Es { exporter, last, .. } => {
                    let taken = exporter.write().unwrap_or_else(|p| p.into_inner()).take();
                    if let Some(x) = taken {
                        stops.push(Box::pin(async move {
                            let m = x.shutdown().await;
                            *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(m);
                        }));
                    }
                }
            }
        }
        futures_join_all(stops).await;
    }
}

/// The live exporter's metrics, or (after shutdown) the last ones.
fn es_metrics(
    x: &std::sync::RwLock<Option<exporter_elasticsearch::Exporter>>,
    last: Option<&std::sync::Mutex<Option<exporter_elasticsearch::Metrics>>>,
) -> Option<exporter_elasticsearch::Metrics> {
    let live = x
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|e| e.metrics());
    live.or_else(|| last.and_then(|l| l.lock().unwrap_or_else(|p| p.into_inner()).clone()))
}

/// Runs the futures concurrently on this task (no extra dependency).
async fn futures_join_all<'a>(
    futs: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>>,
) {
    let mut set: Vec<_> = futs.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for slot in set.iter_mut() {
            if let Some(f) = slot {
                if f.as_mut().poll(cx).is_pending() {
                    pending = true;
                } else {
                    *slot = None;
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
}

fn queue_stats(s: &mut ExporterStats, m: &exporter_otlp::Metrics) {
    s.delivered = m.delivered;
    s.retried = m.retried;
    s.failed += m.rejected;
    s.rejected_profiles = m.rejected_items;
    s.spool_bytes = m.spool_bytes;
    s.spool_entries = m.spool_entries;
}
