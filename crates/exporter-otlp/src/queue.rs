//! A spool drained into a destination, with retries.
//!
//! [`Queue::reserve`]/[`Queue::enqueue`] put payloads on disk; one tokio task
//! sends them, oldest first, one at a time (so a destination that is down
//! costs one attempt per backoff period, not one per entry, and an entry that
//! keeps failing retryably holds back the ones behind it rather than being
//! overtaken). "Oldest" is key order; keys are taken at commit, so requests
//! committed concurrently may swap places.
//! Each answer is one of [`Outcome`]:
//!
//! * `Delivered`: the entry is removed.
//! * `Retry`: the entry stays; the task sleeps for the server's delay
//!   (`Retry-After`, gRPC `RetryInfo`) when given, else the next backoff
//!   step (exponential from `backoff_initial` to `backoff_max`, equal
//!   jitter), and tries again, without limit: the spool bound, not a retry
//!   count, is what pushes back (upstream gets a retryable refusal).
//! * `Rejected`: the destination will never take it (malformed, too large,
//!   unauthorized): logged, counted in `rejected`, removed. Retrying would
//!   block every later entry for ever.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::spool::{Reservation, Spool, SpoolError};

/// What a destination did with one payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Taken. `rejected_items` counts parts it refused (OTLP partial success).
    Delivered { rejected_items: u64 },
    /// Try again later; `after` is the delay the destination asked for.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Never: drop it (counted).
    Rejected(String),
}

/// Where a queue delivers. `send` is called with one payload at a time.
pub trait Destination: Send + Sync + 'static {
    /// Short name for logs (`otlp grpc http://…`, `store`).
    fn describe(&self) -> String;
    fn send(&self, payload: Vec<u8>) -> impl Future<Output = Outcome> + Send;
}

/// Queue settings.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// Disk bound of the spool (payload bytes); past it `reserve` says `Full`.
    pub spool_max_bytes: u64,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Longest server-requested delay obeyed (a bogus `Retry-After: 86400`
    /// must not stall delivery for a day).
    pub max_retry_after: Duration,
    /// How long `shutdown` keeps delivering before leaving the rest on disk.
    pub shutdown_timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            spool_max_bytes: 512 << 20,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Counters since start (spool figures are current).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Payloads committed to the spool.
    pub accepted: u64,
    /// Payloads the destination took.
    pub delivered: u64,
    /// Failed attempts that will be retried.
    pub retried: u64,
    /// Payloads the destination refused for good (dropped, logged).
    pub rejected: u64,
    /// Parts of delivered payloads the destination refused (partial success).
    pub rejected_items: u64,
    /// Payloads not taken because the spool was full.
    pub full: u64,
    pub spool_bytes: u64,
    pub spool_entries: u64,
}

/// Why a payload was not queued.
#[derive(Debug)]
pub enum EnqueueError {
    /// The queue is shutting down (retryable elsewhere / later).
    Closed,
    Spool(SpoolError),
}

impl EnqueueError {
    pub fn retryable(&self) -> bool {
        match self {
            EnqueueError::Closed => true,
            EnqueueError::Spool(e) => e.retryable(),
        }
    }
}

impl std::fmt::Display for EnqueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnqueueError::Closed => f.write_str("exporter is shutting down"),
            EnqueueError::Spool(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for EnqueueError {}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    delivered: AtomicU64,
    retried: AtomicU64,
    rejected: AtomicU64,
    rejected_items: AtomicU64,
    full: AtomicU64,
}

struct Inner<D> {
    config: QueueConfig,
    spool: Spool,
    dest: D,
    counters: Counters,
    wake: Notify,
    stop: Notify,
    stopping: AtomicBool,
}

/// A spooled destination. Dropping it without [`Queue::shutdown`] stops the
/// task where it stands (like a crash): the spool keeps everything not yet
/// delivered for the next queue opened on the same directory.
pub struct Queue<D: Destination> {
    inner: Arc<Inner<D>>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl<D: Destination> Queue<D> {
    /// Opens the spool in `spool_dir` and starts delivering (entries left by
    /// a previous process first). Must be called inside a tokio runtime.
    pub fn new(config: QueueConfig, spool_dir: &Path, dest: D) -> Result<Self, SpoolError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            SpoolError::Io(std::io::Error::other(
                "Queue::new must be called inside a tokio runtime",
            ))
        })?;
        let spool = Spool::open(spool_dir, config.spool_max_bytes)?;
        let inner = Arc::new(Inner {
            config,
            spool,
            dest,
            counters: Counters::default(),
            wake: Notify::new(),
            stop: Notify::new(),
            stopping: AtomicBool::new(false),
        });
        let task = handle.spawn(drain(inner.clone()));
        Ok(Self {
            inner,
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    pub fn destination(&self) -> &D {
        &self.inner.dest
    }

    pub fn spool(&self) -> &Spool {
        &self.inner.spool
    }

    /// Room for a payload of `size` bytes; `Full` is counted. Does no I/O.
    pub fn reserve(&self, size: u64) -> Result<Reservation, EnqueueError> {
        if self.inner.stopping.load(Relaxed) {
            return Err(EnqueueError::Closed);
        }
        self.inner.spool.reserve(size).map_err(|e| {
            if matches!(e, SpoolError::Full { .. }) {
                self.inner.counters.full.fetch_add(1, Relaxed);
            }
            EnqueueError::Spool(e)
        })
    }

    /// Writes a reserved payload (fsync) and wakes the sender. Blocking I/O.
    pub fn commit(&self, r: Reservation, payload: &[u8]) -> Result<u64, EnqueueError> {
        let key = r.commit(payload).map_err(EnqueueError::Spool)?;
        self.inner.counters.accepted.fetch_add(1, Relaxed);
        self.inner.wake.notify_one();
        Ok(key)
    }

    /// `reserve` then `commit`. Blocking I/O.
    pub fn enqueue(&self, payload: &[u8]) -> Result<u64, EnqueueError> {
        let r = self.reserve(payload.len() as u64)?;
        self.commit(r, payload)
    }

    pub fn metrics(&self) -> Metrics {
        let c = &self.inner.counters;
        Metrics {
            accepted: c.accepted.load(Relaxed),
            delivered: c.delivered.load(Relaxed),
            retried: c.retried.load(Relaxed),
            rejected: c.rejected.load(Relaxed),
            rejected_items: c.rejected_items.load(Relaxed),
            full: c.full.load(Relaxed),
            spool_bytes: self.inner.spool.bytes(),
            spool_entries: self.inner.spool.len(),
        }
    }

    /// Stops accepting, keeps delivering for up to `shutdown_timeout`, then
    /// stops; the rest stays on disk for the next start. Later `enqueue`s
    /// answer `Closed`. Takes `&self` so a queue shared by request handlers
    /// can be stopped once they are done.
    pub async fn shutdown(&self) -> Metrics {
        self.inner.stopping.store(true, Relaxed);
        self.inner.wake.notify_one();
        self.inner.stop.notify_waiters();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut task) = task {
            // The task stops by itself at the deadline, except inside one
            // send (bounded by the destination's own timeout): cut it off.
            let limit = self.inner.config.shutdown_timeout + Duration::from_secs(1);
            if tokio::time::timeout(limit, &mut task).await.is_err() {
                task.abort();
                tracing::warn!(
                    "{}: delivery still in flight at the shutdown deadline; it stays spooled",
                    self.inner.dest.describe()
                );
            }
        }
        self.metrics()
    }
}

impl<D: Destination> Drop for Queue<D> {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// Exponential backoff with "equal jitter": half of each step fixed, half
/// random, so many senders that failed together do not retry together.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The next delay: in `[step/2, step]`, the step doubling up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = d / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

async fn blocking<D: Destination, T: Send + 'static>(
    inner: &Arc<Inner<D>>,
    f: impl FnOnce(&Spool) -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    let spool = inner.spool.clone();
    tokio::task::spawn_blocking(move || f(&spool))
        .await
        .unwrap_or_else(|e| Err(SpoolError::Io(std::io::Error::other(e.to_string()))))
}

/// Sleeps `d`, ending early on shutdown; true once past the shutdown deadline.
async fn pause<D: Destination>(inner: &Inner<D>, d: Duration, deadline: Option<Instant>) -> bool {
    match deadline {
        None => {
            let stop = inner.stop.notified();
            tokio::pin!(stop);
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

async fn drain<D: Destination>(inner: Arc<Inner<D>>) {
    let cfg = inner.config.clone();
    let c = &inner.counters;
    let name = inner.dest.describe();
    let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
    let mut deadline: Option<Instant> = None;
    loop {
        if inner.stopping.load(Relaxed) && deadline.is_none() {
            deadline = Some(Instant::now() + cfg.shutdown_timeout);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return;
        }
        let entry = match blocking(&inner, |s| s.peek(1, u64::MAX)).await {
            Ok(mut e) => e.pop(),
            Err(e) => {
                tracing::error!("{name}: reading the spool: {e}");
                if pause(&inner, backoff.next_delay(), deadline).await {
                    return;
                }
                continue;
            }
        };
        let Some(entry) = entry else {
            if deadline.is_some() {
                return;
            }
            // Woken by enqueue; the timeout covers a lost notification.
            let _ = tokio::time::timeout(Duration::from_secs(1), inner.wake.notified()).await;
            continue;
        };
        let key = entry.key;
        let outcome = inner.dest.send(entry.payload).await;
        let done = match outcome {
            Outcome::Delivered { rejected_items } => {
                c.delivered.fetch_add(1, Relaxed);
                c.rejected_items.fetch_add(rejected_items, Relaxed);
                backoff.reset();
                true
            }
            Outcome::Rejected(reason) => {
                c.rejected.fetch_add(1, Relaxed);
                tracing::warn!("{name}: refused for good, dropping spool entry {key}: {reason}");
                backoff.reset();
                true
            }
            Outcome::Retry { after, reason } => {
                c.retried.fetch_add(1, Relaxed);
                let step = backoff.next_delay();
                let wait = after.map_or(step, |a| a.min(cfg.max_retry_after));
                tracing::debug!("{name}: {reason}; retrying in {wait:?}");
                if pause(&inner, wait, deadline).await {
                    return;
                }
                false
            }
        };
        if done {
            if let Err(e) = blocking(&inner, move |s| s.remove(&[key])).await {
                // It stays and is sent again: at-least-once, nothing lost.
                tracing::error!("{name}: removing delivered spool entry {key}: {e}");
                if pause(&inner, backoff.next_delay(), deadline).await {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for i in 0..20u32 {
            let d = b.next_delay();
            let nominal =
                (Duration::from_millis(100) * 2u32.pow(i.min(10))).min(Duration::from_secs(2));
            assert!(
                d >= nominal / 2 && d <= nominal,
                "attempt {i}: {d:?} vs {nominal:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let ds: std::collections::HashSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(ds.len() > 1, "jitter");
    }

    /// Answers from a script, then `Delivered`; records what it was sent and when.
    struct Scripted {
        script: Mutex<Vec<Outcome>>,
        seen: Mutex<Vec<(Instant, Vec<u8>)>>,
    }

    impl Destination for Arc<Scripted> {
        fn describe(&self) -> String {
            "scripted".into()
        }
        async fn send(&self, payload: Vec<u8>) -> Outcome {
            self.seen.lock().unwrap().push((Instant::now(), payload));
            let mut s = self.script.lock().unwrap();
            if s.is_empty() {
                Outcome::Delivered { rejected_items: 0 }
            } else {
                s.remove(0)
            }
        }
    }

    #[tokio::test]
    async fn retries_honour_the_server_delay_and_rejections_are_dropped_counted() {
        let dir = tempfile::tempdir().unwrap();
        let dest = Arc::new(Scripted {
            script: Mutex::new(vec![
                Outcome::Retry {
                    after: Some(Duration::from_millis(400)),
                    reason: "503".into(),
                },
                Outcome::Rejected("400 bad".into()),
            ]),
            seen: Mutex::default(),
        });
        let q = Queue::new(
            QueueConfig {
                backoff_initial: Duration::from_millis(1),
                backoff_max: Duration::from_millis(2),
                ..QueueConfig::default()
            },
            dir.path(),
            dest.clone(),
        )
        .unwrap();
        q.enqueue(b"a").unwrap();
        q.enqueue(b"b").unwrap();
        q.enqueue(b"c").unwrap();
        let t0 = Instant::now();
        while q.metrics().spool_entries > 0 {
            assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", q.metrics());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let m = q.shutdown().await;
        assert_eq!(
            (m.accepted, m.delivered, m.retried, m.rejected),
            (3, 2, 1, 1)
        );
        let seen = dest.seen.lock().unwrap();
        let order: Vec<&[u8]> = seen.iter().map(|(_, p)| p.as_slice()).collect();
        // "a" retried, then refused for good; "b" and "c" in order.
        assert_eq!(order, [&b"a"[..], b"a", b"b", b"c"]);
        let gap = seen[1].0 - seen[0].0;
        assert!(
            gap >= Duration::from_millis(390),
            "Retry-After ignored: {gap:?}"
        );
    }

    #[tokio::test]
    async fn undelivered_entries_wait_on_disk_for_the_next_queue() {
        let dir = tempfile::tempdir().unwrap();
        let down = Arc::new(Scripted {
            script: Mutex::new(
                (0..1000)
                    .map(|_| Outcome::Retry {
                        after: None,
                        reason: "down".into(),
                    })
                    .collect(),
            ),
            seen: Mutex::default(),
        });
        let q = Queue::new(QueueConfig::default(), dir.path(), down).unwrap();
        for i in 0..5u8 {
            q.enqueue(&[i; 10]).unwrap();
        }
        drop(q); // like a crash
        let up = Arc::new(Scripted {
            script: Mutex::default(),
            seen: Mutex::default(),
        });
        // The aborted task releases the file once the runtime polls it.
        let t0 = Instant::now();
        let q = loop {
            match Queue::new(QueueConfig::default(), dir.path(), up.clone()) {
                Ok(q) => break q,
                Err(e) => {
                    assert!(t0.elapsed() < Duration::from_secs(10), "{e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        while q.metrics().delivered < 5 {
            assert!(t0.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let got: Vec<u8> = up.seen.lock().unwrap().iter().map(|(_, p)| p[0]).collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);
        // Full is counted and retryable; too large is not retryable.
        let small = tempfile::tempdir().unwrap();
        let q = Queue::new(
            QueueConfig {
                spool_max_bytes: 15,
                ..QueueConfig::default()
            },
            small.path(),
            up,
        )
        .unwrap();
        let _held = q.reserve(10).unwrap();
        let e = q.reserve(10).err().unwrap();
        assert!(e.retryable());
        assert!(!q.reserve(16).err().unwrap().retryable());
        assert_eq!(q.metrics().full, 1);
    }

    /// Never answers.
    struct Hangs;

    impl Destination for Hangs {
        fn describe(&self) -> String {
            "hangs".into()
        }
        async fn send(&self, _payload: Vec<u8>) -> Outcome {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn shutdown_is_bounded_even_when_a_send_hangs_and_the_entry_stays() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(
            QueueConfig {
                shutdown_timeout: Duration::from_millis(200),
                ..QueueConfig::default()
            },
            dir.path(),
            Hangs,
        )
        .unwrap();
        q.enqueue(b"x").unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = Instant::now();
        let m = q.shutdown().await;
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert_eq!((m.delivered, m.spool_entries), (0, 1));
        assert!(matches!(q.enqueue(b"y"), Err(EnqueueError::Closed)));
    }
}
