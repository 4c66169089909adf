//! The exporter: `enqueue` validates a request and commits it to the disk
//! spool; a background tokio task drains the spool to Elasticsearch.
//!
//! Delivery is at-least-once at the HTTP level and exactly-once in the
//! indices: every document has a deterministic `_id` (content hashes, and for
//! events the entry's stored seed plus an ordinal), so a resend after a
//! timeout or crash gets 409 and is counted as success.

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use prost::Message as _;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::bulk::{BulkClient, BulkConfig, BulkError, ItemOutcome};
use crate::encode::{encode, Document, EncodeOptions, Rejection, Schema};
use crate::spool::{Spool, SpoolError};

/// Exporter settings. Defaults suit a collector in front of one cluster.
#[derive(Clone, Debug)]
pub struct Config {
    pub bulk: BulkConfig,
    pub schema: Schema,
    /// Disk bound of the spool; past it `enqueue` answers `Full`.
    pub spool_max_bytes: u64,
    /// Bounds of one `_bulk` request (uncompressed NDJSON bytes, items).
    pub max_batch_bytes: usize,
    pub max_batch_docs: usize,
    /// Ids of write-once documents (stacktraces, frames, executables, hosts)
    /// remembered as written, so they are not sent again.
    pub lru_capacity: usize,
    /// Exponential backoff with jitter between retries, capped.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Attempts for an item answered with 5xx before it is counted as rejected
    /// (429 and transport errors are retried without limit: the data stays
    /// in the spool, and the spool bound pushes back upstream).
    pub max_item_retries: u32,
    /// Spool entries encoded and sent together, and their payload bytes
    /// (at least one entry is always taken): bounds the drain's memory.
    pub entries_per_round: usize,
    pub round_max_bytes: u64,
    pub max_events_per_request: u64,
    /// See [`EncodeOptions::event_ids`]; on by default.
    pub event_ids: bool,
    /// How long `shutdown` keeps draining before leaving the rest on disk.
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bulk: BulkConfig::default(),
            schema: Schema::Otel,
            spool_max_bytes: 512 << 20,
            max_batch_bytes: 4 << 20,
            max_batch_docs: 5_000,
            lru_capacity: 65_536,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            max_item_retries: 8,
            entries_per_round: 64,
            round_max_bytes: 8 << 20,
            max_events_per_request: 2_000_000,
            event_ids: true,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Counters since this exporter started (spool figures are current).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Requests committed to the spool.
    pub accepted: u64,
    /// Documents Elasticsearch acknowledged (201, or 409 = already there).
    pub sent: u64,
    /// Of `sent`, those answered 409.
    pub conflicts: u64,
    /// Item attempts retried (429, 5xx, or the whole batch after a transport error).
    pub retried: u64,
    /// Documents Elasticsearch refused for good (4xx other than 409/429, or 5xx past the limit).
    pub rejected: u64,
    /// Requests refused because the spool was full.
    pub dropped: u64,
    /// Profiles refused by validation (not CPU, no frame type, bad indices…).
    pub invalid_profiles: u64,
    /// Write-once documents not sent because the LRU knew them.
    pub skipped_known: u64,
    /// `_bulk` requests made.
    pub batches: u64,
    pub spool_bytes: u64,
    pub spool_entries: u64,
}

/// Why `enqueue` refused a request.
#[derive(Debug)]
pub enum EnqueueError {
    /// Retryable: the spool is at its bound (Elasticsearch is slow or down).
    Full,
    /// Not retryable: no profile of the request is valid; one reason per profile.
    Invalid(Vec<Rejection>),
    /// Retryable: the exporter is shutting down.
    Closed,
    /// Retryable: the spool could not be written.
    Storage(String),
}

impl EnqueueError {
    pub fn retryable(&self) -> bool {
        !matches!(self, EnqueueError::Invalid(_))
    }
}

impl std::fmt::Display for EnqueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnqueueError::Full => f.write_str("exporter spool is full; retry later"),
            EnqueueError::Invalid(r) => {
                f.write_str("no valid profile in request: ")?;
                for (i, x) in r.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{x}")?;
                }
                Ok(())
            }
            EnqueueError::Closed => f.write_str("exporter is shutting down"),
            EnqueueError::Storage(e) => write!(f, "spool write failed: {e}"),
        }
    }
}

impl std::error::Error for EnqueueError {}

/// What `enqueue` accepted.
#[derive(Debug, Default)]
pub struct Accepted {
    /// Profiles that will be exported.
    pub profiles: usize,
    /// Profiles of the request that were rejected (the collector reports them
    /// as a partial success).
    pub rejected: Vec<Rejection>,
    /// Documents the accepted profiles expand to (before LRU dedup).
    pub documents: usize,
}

/// Errors of `Exporter::new`.
#[derive(Debug)]
pub enum ExporterError {
    Spool(SpoolError),
    Bulk(BulkError),
    /// `new` must run inside a tokio runtime (it spawns the drain task).
    NoRuntime,
}

impl std::fmt::Display for ExporterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExporterError::Spool(e) => write!(f, "{e}"),
            ExporterError::Bulk(e) => write!(f, "{e}"),
            ExporterError::NoRuntime => {
                f.write_str("Exporter::new must be called inside a tokio runtime")
            }
        }
    }
}

impl std::error::Error for ExporterError {}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    sent: AtomicU64,
    conflicts: AtomicU64,
    retried: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
    invalid_profiles: AtomicU64,
    skipped_known: AtomicU64,
    batches: AtomicU64,
}

/// Encodings made by `enqueue`, handed to the drain task so it need not decode
/// and re-encode fresh entries. Bounded in NDJSON bytes: past it the task
/// re-encodes from disk (the spool, not memory, is what holds a backlog).
const HOT_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Hot {
    docs: HashMap<u64, (Vec<Document>, usize)>,
    bytes: usize,
}

struct Inner {
    config: Config,
    spool: Spool,
    client: BulkClient,
    counters: Counters,
    wake: Notify,
    /// Wakes the drain task out of a backoff sleep on shutdown.
    stop: Notify,
    stopping: AtomicBool,
    hot: Mutex<Hot>,
}

/// The Elasticsearch exporter. Dropping it without `shutdown` stops the drain
/// task at once (like a crash): whatever was not acknowledged stays in the
/// spool and is sent by the next exporter opened on the same directory.
pub struct Exporter {
    inner: Arc<Inner>,
    task: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Opens the spool in `spool_dir` and starts draining it (including entries
    /// left by a previous process). Must be called inside a tokio runtime.
    pub fn new(config: Config, spool_dir: &Path) -> Result<Self, ExporterError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| ExporterError::NoRuntime)?;
        let client = BulkClient::new(&config.bulk).map_err(ExporterError::Bulk)?;
        let spool = Spool::open(spool_dir, config.spool_max_bytes).map_err(ExporterError::Spool)?;
        let inner = Arc::new(Inner {
            config,
            spool,
            client,
            counters: Counters::default(),
            wake: Notify::new(),
            stop: Notify::new(),
            stopping: AtomicBool::new(false),
            hot: Mutex::new(Hot::default()),
        });
        let task = handle.spawn(drain(inner.clone()));
        Ok(Self {
            inner,
            task: Some(task),
        })
    }

    /// Validates and encodes `req`, then commits it to the spool (fsync) before
    /// returning: `Ok` means the request survives a crash. Blocking disk I/O
    /// (an fsync, ~5 ms here): from async code prefer [`Exporter::enqueue_async`].
    pub fn enqueue(&self, req: &ExportProfilesServiceRequest) -> Result<Accepted, EnqueueError> {
        self.inner.enqueue(req)
    }

    /// `enqueue` on tokio's blocking pool, so the fsync does not stall the
    /// runtime (the drain task and the collector's other requests keep running).
    pub async fn enqueue_async(
        &self,
        req: ExportProfilesServiceRequest,
    ) -> Result<Accepted, EnqueueError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.enqueue(&req))
            .await
            .unwrap_or_else(|e| Err(EnqueueError::Storage(e.to_string())))
    }

    pub fn metrics(&self) -> Metrics {
        self.inner.metrics()
    }

    /// Stops accepting, drains the spool for up to `shutdown_timeout`, and
    /// stops. What was not acknowledged by then stays on disk for the next start.
    pub async fn shutdown(mut self) -> Metrics {
        self.inner.stopping.store(true, Relaxed);
        self.inner.wake.notify_one();
        self.inner.stop.notify_waiters();
        if let Some(task) = self.task.take() {
            let limit = self.inner.config.shutdown_timeout + Duration::from_secs(5);
            if tokio::time::timeout(limit, task).await.is_err() {
                tracing::warn!(target: "exporter_elasticsearch", "drain task did not stop in time");
            }
        }
        self.inner.metrics()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Inner {
    fn enqueue(&self, req: &ExportProfilesServiceRequest) -> Result<Accepted, EnqueueError> {
        let inner = self;
        if inner.stopping.load(Relaxed) {
            return Err(EnqueueError::Closed);
        }
        let seed = fastrand::u64(..);
        let enc = encode(req, &inner.encode_options(seed));
        inner
            .counters
            .invalid_profiles
            .fetch_add(enc.rejected.len() as u64, Relaxed);
        for r in &enc.rejected {
            tracing::warn!(target: "exporter_elasticsearch", "profile rejected: {r}");
        }
        if enc.profiles == 0 {
            if enc.rejected.is_empty() {
                return Ok(Accepted::default());
            }
            return Err(EnqueueError::Invalid(enc.rejected));
        }
        let payload = req.encode_to_vec();
        let key = match inner.spool.push(seed, &payload) {
            Ok(k) => k,
            Err(SpoolError::Full { .. }) => {
                inner.counters.dropped.fetch_add(1, Relaxed);
                return Err(EnqueueError::Full);
            }
            Err(e) => return Err(EnqueueError::Storage(e.to_string())),
        };
        inner.counters.accepted.fetch_add(1, Relaxed);
        let documents = enc.docs.len();
        {
            let size: usize = enc.docs.iter().map(Document::ndjson_len).sum();
            let mut hot = inner.hot.lock().unwrap_or_else(|e| e.into_inner());
            if hot.bytes + size <= HOT_BYTES {
                hot.bytes += size;
                hot.docs.insert(key, (enc.docs, size));
            }
        }
        inner.wake.notify_one();
        Ok(Accepted {
            profiles: enc.profiles,
            rejected: enc.rejected,
            documents,
        })
    }

    fn encode_options(&self, seed: u64) -> EncodeOptions {
        EncodeOptions {
            schema: self.config.schema,
            seed,
            max_events: self.config.max_events_per_request,
            event_ids: self.config.event_ids,
        }
    }

    fn metrics(&self) -> Metrics {
        let c = &self.counters;
        Metrics {
            accepted: c.accepted.load(Relaxed),
            sent: c.sent.load(Relaxed),
            conflicts: c.conflicts.load(Relaxed),
            retried: c.retried.load(Relaxed),
            rejected: c.rejected.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            invalid_profiles: c.invalid_profiles.load(Relaxed),
            skipped_known: c.skipped_known.load(Relaxed),
            batches: c.batches.load(Relaxed),
            spool_bytes: self.spool.bytes(),
            spool_entries: self.spool.len(),
        }
    }
}

/// Exponential backoff with "equal jitter": half fixed, half random, capped.
struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }
    fn next(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = d / 2;
        half + half.mul_f64(fastrand::f64())
    }
    fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// A document waiting for an answer, and the entry it belongs to.
struct Item {
    entry: usize,
    doc: Document,
    attempts: u32,
}

type Known = LruCache<(&'static str, String), ()>;

async fn blocking<T: Send + 'static>(
    inner: &Arc<Inner>,
    f: impl FnOnce(&Spool) -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    let inner = inner.clone();
    tokio::task::spawn_blocking(move || f(&inner.spool))
        .await
        .unwrap_or_else(|e| Err(SpoolError::Io(std::io::Error::other(e.to_string()))))
}

async fn drain(inner: Arc<Inner>) {
    let cfg = inner.config.clone();
    let mut known: Known =
        LruCache::new(NonZeroUsize::new(cfg.lru_capacity.max(1)).unwrap_or(NonZeroUsize::MIN));
    let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
    let mut deadline: Option<Instant> = None;
    loop {
        if inner.stopping.load(Relaxed) && deadline.is_none() {
            deadline = Some(Instant::now() + cfg.shutdown_timeout);
        }
        let limit = cfg.entries_per_round.max(1);
        let max_bytes = cfg.round_max_bytes;
        let entries = match blocking(&inner, move |s| s.peek_bytes(None, limit, max_bytes)).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(target: "exporter_elasticsearch", "reading the spool: {e}");
                if sleep_or_deadline(&inner, backoff.next(), deadline).await {
                    return;
                }
                continue;
            }
        };
        if entries.is_empty() {
            if deadline.is_some() {
                return;
            }
            // Wake on enqueue; the timeout covers a lost notification.
            let _ = tokio::time::timeout(Duration::from_secs(1), inner.wake.notified()).await;
            continue;
        }
        if !send_round(&inner, &cfg, entries, &mut known, &mut backoff, deadline).await {
            return;
        }
    }
}

/// Sleeps `d`, or until the shutdown deadline. True if the deadline has passed.
/// Without a deadline the sleep ends early when `shutdown` is called, so a
/// long backoff does not delay it.
async fn sleep_or_deadline(inner: &Inner, d: Duration, deadline: Option<Instant>) -> bool {
    match deadline {
        None => {
            let stop = inner.stop.notified();
            tokio::pin!(stop);
            // Registered before the flag is read: a shutdown in between still wakes us.
            stop.as_mut().enable();
            if inner.stopping.load(Relaxed) {
                return false;
            }
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = stop => {}
            }
            false
        }
        Some(dl) => {
            let now = Instant::now();
            if now >= dl {
                return true;
            }
            tokio::time::sleep(d.min(dl - now)).await;
            Instant::now() >= dl
        }
    }
}

/// Sends every document of `entries`; removes each entry from the spool once
/// all its documents are answered for good. False if the shutdown deadline hit.
async fn send_round(
    inner: &Arc<Inner>,
    cfg: &Config,
    entries: Vec<crate::spool::Entry>,
    known: &mut Known,
    backoff: &mut Backoff,
    mut deadline: Option<Instant>,
) -> bool {
    let c = &inner.counters;
    let mut keys = Vec::with_capacity(entries.len());
    let mut remaining = Vec::with_capacity(entries.len());
    let mut queue: VecDeque<Item> = VecDeque::new();
    let mut in_round: HashSet<(&'static str, String)> = HashSet::new();
    for (i, e) in entries.into_iter().enumerate() {
        let hot = {
            let mut h = inner.hot.lock().unwrap_or_else(|p| p.into_inner());
            let taken = h.docs.remove(&e.key);
            if let Some((_, size)) = &taken {
                h.bytes -= size;
            }
            taken
        };
        let docs = match hot {
            Some((d, _)) => d,
            None => match ExportProfilesServiceRequest::decode(e.payload.as_slice()) {
                Ok(req) => encode(&req, &inner.encode_options(e.seed)).docs,
                Err(err) => {
                    // Cannot happen with entries we wrote; drop it counted, never loop on it.
                    tracing::error!(target: "exporter_elasticsearch", "spool entry {} is corrupt: {err}", e.key);
                    c.rejected.fetch_add(1, Relaxed);
                    Vec::new()
                }
            },
        };
        let mut n = 0usize;
        for doc in docs {
            if doc.kind.write_once() {
                let k = (doc.index, doc.id.clone());
                if known.get(&k).is_some() || !in_round.insert(k) {
                    c.skipped_known.fetch_add(1, Relaxed);
                    continue;
                }
            }
            n += 1;
            queue.push_back(Item {
                entry: i,
                doc,
                attempts: 0,
            });
        }
        keys.push(e.key);
        remaining.push(n);
    }
    // Entries with nothing left to send are done already.
    let mut done: Vec<u64> = keys
        .iter()
        .zip(&remaining)
        .filter(|(_, &n)| n == 0)
        .map(|(&k, _)| k)
        .collect();

    while !queue.is_empty() {
        if inner.stopping.load(Relaxed) && deadline.is_none() {
            deadline = Some(Instant::now() + cfg.shutdown_timeout);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = remove(inner, std::mem::take(&mut done)).await;
            return false;
        }
        // Take a batch bounded in documents and bytes (at least one document).
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while let Some(item) = queue.front() {
            let len = item.doc.ndjson_len();
            if !batch.is_empty()
                && (batch.len() >= cfg.max_batch_docs || bytes + len > cfg.max_batch_bytes)
            {
                break;
            }
            bytes += len;
            batch.push(queue.pop_front().expect("front exists"));
        }
        let docs: Vec<&Document> = batch.iter().map(|i| &i.doc).collect();
        c.batches.fetch_add(1, Relaxed);
        let result = inner.client.send(&docs).await;
        let mut retry_any = false;
        match result {
            Ok(outcomes) => {
                for (mut item, outcome) in batch.into_iter().zip(outcomes) {
                    match outcome {
                        ItemOutcome::Written | ItemOutcome::Exists => {
                            c.sent.fetch_add(1, Relaxed);
                            if outcome == ItemOutcome::Exists {
                                c.conflicts.fetch_add(1, Relaxed);
                            }
                            if item.doc.kind.write_once() {
                                known.put((item.doc.index, item.doc.id.clone()), ());
                            }
                            finish(&mut remaining, &keys, &mut done, item.entry);
                        }
                        ItemOutcome::Retry { status, reason } => {
                            item.attempts += 1;
                            if status != 429 && item.attempts > cfg.max_item_retries {
                                c.rejected.fetch_add(1, Relaxed);
                                tracing::warn!(target: "exporter_elasticsearch",
                                    "giving up on {} {} after {} attempts: {status} {reason}",
                                    item.doc.index, item.doc.id, item.attempts);
                                finish(&mut remaining, &keys, &mut done, item.entry);
                            } else {
                                c.retried.fetch_add(1, Relaxed);
                                retry_any = true;
                                queue.push_back(item);
                            }
                        }
                        ItemOutcome::Rejected { status, reason } => {
                            c.rejected.fetch_add(1, Relaxed);
                            tracing::warn!(target: "exporter_elasticsearch",
                                "Elasticsearch rejected {} {}: {status} {reason}", item.doc.index, item.doc.id);
                            finish(&mut remaining, &keys, &mut done, item.entry);
                        }
                    }
                }
            }
            Err(e) if e.retryable() => {
                tracing::debug!(target: "exporter_elasticsearch", "{e}; retrying {} documents", batch.len());
                c.retried.fetch_add(batch.len() as u64, Relaxed);
                retry_any = true;
                for item in batch.into_iter().rev() {
                    queue.push_front(item);
                }
            }
            Err(e) => {
                tracing::warn!(target: "exporter_elasticsearch", "{e}; dropping {} documents", batch.len());
                c.rejected.fetch_add(batch.len() as u64, Relaxed);
                for item in batch {
                    finish(&mut remaining, &keys, &mut done, item.entry);
                }
            }
        }
        if !done.is_empty() {
            let _ = remove(inner, std::mem::take(&mut done)).await;
        }
        if retry_any {
            if sleep_or_deadline(inner, backoff.next(), deadline).await {
                return false;
            }
        } else {
            backoff.reset();
        }
    }
    let _ = remove(inner, done).await;
    true
}

fn finish(remaining: &mut [usize], keys: &[u64], done: &mut Vec<u64>, entry: usize) {
    remaining[entry] -= 1;
    if remaining[entry] == 0 {
        done.push(keys[entry]);
    }
}

async fn remove(inner: &Arc<Inner>, keys: Vec<u64>) -> Result<(), SpoolError> {
    if keys.is_empty() {
        return Ok(());
    }
    {
        // An entry the drain read from disk before `enqueue` parked its
        // encoding would otherwise keep that encoding forever.
        let mut hot = inner.hot.lock().unwrap_or_else(|p| p.into_inner());
        for k in &keys {
            if let Some((_, size)) = hot.docs.remove(k) {
                hot.bytes -= size;
            }
        }
    }
    let r = blocking(inner, move |s| s.remove(&keys)).await;
    if let Err(e) = &r {
        // The entries stay and are resent later (409s): no data lost.
        tracing::error!(target: "exporter_elasticsearch", "removing sent entries from the spool: {e}");
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut prev_max = Duration::ZERO;
        for i in 0..20 {
            let d = b.next();
            let nominal =
                (Duration::from_millis(100) * 2u32.pow(i.min(10))).min(Duration::from_secs(2));
            assert!(
                d >= nominal / 2 && d <= nominal,
                "attempt {i}: {d:?} vs {nominal:?}"
            );
            prev_max = prev_max.max(d);
        }
        assert!(prev_max <= Duration::from_secs(2));
        b.reset();
        assert!(b.next() <= Duration::from_millis(100));
        // Jitter: not every delay at the cap is the same.
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let ds: std::collections::HashSet<_> = (0..20).map(|_| b.next()).collect();
        assert!(ds.len() > 1);
    }
}
