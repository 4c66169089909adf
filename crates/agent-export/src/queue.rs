//! The bounded export queue between aggregation and export.
//!
//! Holds serialized requests (one per interval) up to a byte budget. When a
//! new batch does not fit, the **oldest** batches are dropped (the newest data
//! is the most useful after an outage) and counted. The batch being sent at
//! that moment is never dropped mid-request, so a batch is always counted
//! exactly once: sent, dropped, rejected by the server, or left unsent at
//! shutdown. While a request is in flight the queue may therefore hold one
//! batch over the budget; the budget is enforced again as soon as the attempt
//! ends. A batch larger than the whole budget is dropped on arrival.
//!
//! Accounting invariant (tested): `enqueued = sent + dropped + rejected +
//! unsent + queued`.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::Notify;

/// One serialized `ExportProfilesServiceRequest`.
#[derive(Clone, Debug)]
pub struct Batch {
    pub id: u64,
    pub bytes: Bytes,
    /// CPU samples in it (for the counters and logs).
    pub samples: u64,
}

/// Counters of the queue's life, readable at any time.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub enqueued: AtomicU64,
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    pub rejected: AtomicU64,
    pub unsent: AtomicU64,
    pub samples_enqueued: AtomicU64,
    pub samples_sent: AtomicU64,
    pub samples_dropped: AtomicU64,
    /// Bytes held now (gauge).
    pub bytes: AtomicU64,
    /// Batches held now (gauge).
    pub batches: AtomicU64,
}

/// How an attempt ended, for [`Queue::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered (possibly with a partial success): removed.
    Sent,
    /// Refused for good (malformed, too large): removed and counted.
    Rejected,
    /// Will be retried: stays at the head of the queue.
    Retry,
}

#[derive(Default)]
struct Inner {
    items: VecDeque<Batch>,
    bytes: u64,
    /// Id of the batch a request is carrying now (always the head).
    in_flight: Option<u64>,
    closed: bool,
    next_id: u64,
}

pub struct Queue {
    inner: Mutex<Inner>,
    notify: Notify,
    /// Set by [`Queue::close`], for waiters other than [`Queue::next`].
    closed: tokio::sync::watch::Sender<bool>,
    budget: u64,
    pub stats: QueueStats,
}

/// What a push did to make room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Older batches dropped to make room (the new one itself when it is
    /// larger than the whole budget).
    pub dropped_batches: u64,
    pub dropped_samples: u64,
}

impl Queue {
    pub fn new(budget: u64) -> Self {
        Queue {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            closed: tokio::sync::watch::Sender::new(false),
            budget,
            stats: QueueStats::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a batch, dropping the oldest ones that do not fit beside it.
    pub fn push(&self, bytes: Bytes, samples: u64) -> Pushed {
        let size = bytes.len() as u64;
        let mut out = Pushed::default();
        let s = &self.stats;
        s.enqueued.fetch_add(1, Ordering::Relaxed);
        s.samples_enqueued.fetch_add(samples, Ordering::Relaxed);
        let mut g = self.lock();
        if size > self.budget {
            out.dropped_batches = 1;
            out.dropped_samples = samples;
        } else {
            let id = g.next_id;
            g.next_id += 1;
            g.items.push_back(Batch { id, bytes, samples });
            g.bytes += size;
            let (b, n) = Self::enforce(&mut g, self.budget);
            out.dropped_batches = b;
            out.dropped_samples = n;
        }
        self.publish(&g);
        drop(g);
        s.dropped.fetch_add(out.dropped_batches, Ordering::Relaxed);
        s.samples_dropped
            .fetch_add(out.dropped_samples, Ordering::Relaxed);
        self.notify.notify_one();
        out
    }

    /// Drops the oldest batches not in flight until the budget holds. The
    /// batch in flight does not count while its request runs (it cannot be
    /// dropped then), so memory stays under budget + one batch.
    fn enforce(g: &mut Inner, budget: u64) -> (u64, u64) {
        let (mut batches, mut samples) = (0, 0);
        let head_in_flight = g.in_flight.is_some() && g.items.front().map(|b| b.id) == g.in_flight;
        let exempt = if head_in_flight {
            g.items.front().map_or(0, |b| b.bytes.len() as u64)
        } else {
            0
        };
        while g.bytes - exempt > budget {
            let Some(b) = g.items.remove(usize::from(head_in_flight)) else {
                break;
            };
            g.bytes -= b.bytes.len() as u64;
            batches += 1;
            samples += b.samples;
        }
        (batches, samples)
    }

    fn publish(&self, g: &Inner) {
        self.stats.bytes.store(g.bytes, Ordering::Relaxed);
        self.stats
            .batches
            .store(g.items.len() as u64, Ordering::Relaxed);
    }

    /// The oldest batch, marked in flight; waits for one. `None` once the
    /// queue is closed and empty.
    pub async fn next(&self) -> Option<Batch> {
        loop {
            let notified = self.notify.notified();
            {
                let mut g = self.lock();
                if let Some(b) = g.items.front().cloned() {
                    g.in_flight = Some(b.id);
                    return Some(b);
                }
                if g.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Ends the attempt on the batch `id` returned by [`Queue::next`].
    /// Returns how many batches (and samples) a retry had to drop to get
    /// back under the budget.
    pub fn finish(&self, id: u64, outcome: Outcome) -> Pushed {
        let mut g = self.lock();
        g.in_flight = None;
        let s = &self.stats;
        let mut out = Pushed::default();
        match outcome {
            Outcome::Sent | Outcome::Rejected => {
                if g.items.front().map(|b| b.id) == Some(id) {
                    let b = g.items.pop_front().expect("front exists");
                    g.bytes -= b.bytes.len() as u64;
                    if outcome == Outcome::Sent {
                        s.sent.fetch_add(1, Ordering::Relaxed);
                        s.samples_sent.fetch_add(b.samples, Ordering::Relaxed);
                    } else {
                        s.rejected.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Outcome::Retry => {
                let (b, n) = Self::enforce(&mut g, self.budget);
                out.dropped_batches = b;
                out.dropped_samples = n;
                s.dropped.fetch_add(b, Ordering::Relaxed);
                s.samples_dropped.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.publish(&g);
        out
    }

    /// No more pushes: [`Queue::next`] returns `None` once empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.closed.send_replace(true);
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves once the queue is closed (shutdown has begun).
    pub async fn wait_closed(&self) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Gives up on what is left (shutdown timeout); returns (batches,
    /// samples) counted as unsent.
    pub fn abandon(&self) -> (u64, u64) {
        let mut g = self.lock();
        let n = g.items.len() as u64;
        let samples = g.items.iter().map(|b| b.samples).sum();
        g.items.clear();
        g.bytes = 0;
        g.in_flight = None;
        g.closed = true;
        self.publish(&g);
        self.stats.unsent.fetch_add(n, Ordering::Relaxed);
        (n, samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    fn invariant(q: &Queue) {
        let s = &q.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(
            l(&s.enqueued),
            l(&s.sent) + l(&s.dropped) + l(&s.rejected) + l(&s.unsent) + l(&s.batches),
            "every batch is accounted for once"
        );
    }

    #[tokio::test]
    async fn oldest_batches_are_dropped_and_counted() {
        let q = Queue::new(100);
        assert_eq!(q.push(b(40), 1), Pushed::default());
        assert_eq!(q.push(b(40), 2), Pushed::default());
        // 40 + 40 + 40 > 100: the first (oldest) goes.
        let p = q.push(b(40), 3);
        assert_eq!(
            p,
            Pushed {
                dropped_batches: 1,
                dropped_samples: 1
            }
        );
        assert_eq!(q.stats.bytes.load(Ordering::Relaxed), 80);
        let head = q.next().await.unwrap();
        assert_eq!(head.samples, 2, "the oldest left is at the head");
        invariant(&q);
        // Larger than the whole budget: dropped on arrival.
        assert_eq!(q.push(b(101), 9).dropped_batches, 1);
        assert_eq!(q.stats.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(q.stats.samples_dropped.load(Ordering::Relaxed), 10);
        invariant(&q);
    }

    #[tokio::test]
    async fn the_batch_in_flight_is_not_dropped_until_its_attempt_ends() {
        let q = Queue::new(100);
        q.push(b(60), 1);
        let head = q.next().await.unwrap();
        // In flight, the head does not count: the newer one fits.
        assert_eq!(q.push(b(60), 2), Pushed::default());
        assert_eq!(q.stats.bytes.load(Ordering::Relaxed), 120);
        // Over budget: the oldest batch that is not in flight goes.
        assert_eq!(
            q.push(b(50), 3),
            Pushed {
                dropped_batches: 1,
                dropped_samples: 2
            }
        );
        // The attempt fails: the head counts again and, being the oldest, goes.
        let p = q.finish(head.id, Outcome::Retry);
        assert_eq!(
            p,
            Pushed {
                dropped_batches: 1,
                dropped_samples: 1
            }
        );
        assert_eq!(q.stats.bytes.load(Ordering::Relaxed), 50);
        q.push(b(30), 4);
        let p = q.push(b(30), 5);
        assert_eq!(
            p,
            Pushed {
                dropped_batches: 1,
                dropped_samples: 3
            }
        );
        invariant(&q);
        // Successful sends empty the queue in order.
        let mut order = Vec::new();
        q.close();
        while let Some(x) = q.next().await {
            order.push(x.samples);
            q.finish(x.id, Outcome::Sent);
        }
        assert_eq!(order, vec![4, 5]);
        assert_eq!(q.stats.sent.load(Ordering::Relaxed), 2);
        assert_eq!(q.stats.samples_sent.load(Ordering::Relaxed), 9);
        assert_eq!(q.stats.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(q.stats.bytes.load(Ordering::Relaxed), 0);
        invariant(&q);
    }

    #[tokio::test]
    async fn rejected_and_abandoned_batches_are_counted() {
        let q = Queue::new(1000);
        q.push(b(10), 1);
        q.push(b(10), 1);
        q.push(b(10), 1);
        let h = q.next().await.unwrap();
        q.finish(h.id, Outcome::Rejected);
        assert_eq!(q.stats.rejected.load(Ordering::Relaxed), 1);
        assert_eq!(q.abandon(), (2, 2));
        assert_eq!(q.next().await.map(|b| b.id), None, "closed and empty");
        invariant(&q);
    }

    #[tokio::test]
    async fn next_waits_for_a_push() {
        let q = std::sync::Arc::new(Queue::new(1000));
        let q2 = q.clone();
        let t = tokio::spawn(async move { q2.next().await.map(|b| b.samples) });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        q.push(b(5), 7);
        assert_eq!(t.await.unwrap(), Some(7));
        let q3 = q.clone();
        let h = q.next().await.unwrap();
        q.finish(h.id, Outcome::Sent);
        let t = tokio::spawn(async move { q3.next().await.map(|b| b.samples) });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!q.is_closed());
        let q4 = q.clone();
        let w = tokio::spawn(async move { q4.wait_closed().await });
        q.close();
        assert_eq!(t.await.unwrap(), None, "close wakes a waiting exporter");
        w.await.unwrap();
        assert!(q.is_closed());
    }
}
