//! A bounded, disk-backed FIFO of opaque payloads (redb, one file).
//!
//! Why: data a collector accepted must survive a dead destination and a
//! `kill -9`. A payload is committed with fsync (`Durability::Immediate`)
//! before [`Reservation::commit`] returns, and removed (also durably) only
//! once the destination answered for good, so delivery is at-least-once:
//! a crash between the destination's answer and the removal resends one
//! entry.
//!
//! Room is taken in two steps, [`Spool::reserve`] then
//! [`Reservation::commit`], so that a caller fanning one request out to
//! several spools can make sure every one of them has room before writing to
//! any (all or nothing, no duplicates on the upstream's retry). A dropped
//! reservation gives its room back.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, Durability, ReadableDatabase as _, ReadableTable as _, TableDefinition};

/// key (insertion order) → payload.
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");

/// File name of the spool inside its directory.
pub const SPOOL_FILE: &str = "spool.redb";

/// Why the spool refused or failed.
#[derive(Debug)]
pub enum SpoolError {
    /// Retryable: the spool holds (or has reserved) too much to take `size` more bytes.
    Full {
        used: u64,
        size: u64,
        max_bytes: u64,
    },
    /// Not retryable: one payload larger than the whole spool.
    TooLarge {
        size: u64,
        max_bytes: u64,
    },
    Io(std::io::Error),
    Db(redb::Error),
}

impl SpoolError {
    /// Whether the same payload may succeed later.
    pub fn retryable(&self) -> bool {
        !matches!(self, SpoolError::TooLarge { .. })
    }
}

impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpoolError::Full {
                used,
                size,
                max_bytes,
            } => write!(
                f,
                "spool full ({used} of {max_bytes} bytes used, {size} more needed); retry later"
            ),
            SpoolError::TooLarge { size, max_bytes } => write!(
                f,
                "payload of {size} bytes is larger than the whole {max_bytes}-byte spool"
            ),
            SpoolError::Io(e) => write!(f, "spool I/O: {e}"),
            SpoolError::Db(e) => write!(f, "spool database: {e}"),
        }
    }
}

impl std::error::Error for SpoolError {}

impl<E: Into<redb::Error>> From<E> for SpoolError {
    fn from(e: E) -> Self {
        SpoolError::Db(e.into())
    }
}

#[derive(Default)]
struct Counters {
    /// Payload bytes on disk.
    bytes: u64,
    /// Bytes promised to reservations not yet committed.
    reserved: u64,
    entries: u64,
    next_key: u64,
}

struct Inner {
    db: Database,
    path: PathBuf,
    max_bytes: u64,
    counters: Mutex<Counters>,
}

/// The spool; cheap to clone (shared). Every method does synchronous disk I/O
/// except [`Spool::reserve`], [`Spool::bytes`] and [`Spool::len`].
#[derive(Clone)]
pub struct Spool(Arc<Inner>);

/// Room for one payload, held until committed or dropped.
pub struct Reservation {
    spool: Spool,
    size: u64,
    done: bool,
}

/// One queued payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: u64,
    pub payload: Vec<u8>,
}

impl Spool {
    /// Opens (or creates) `dir/spool.redb`; entries left by a previous
    /// process (one killed mid-write included) are kept, in order.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        std::fs::create_dir_all(dir).map_err(SpoolError::Io)?;
        let path = dir.join(SPOOL_FILE);
        let db = Database::create(&path)?;
        let tx = db.begin_write()?;
        tx.open_table(ENTRIES)?;
        tx.commit()?;
        let mut c = Counters::default();
        {
            let rtx = db.begin_read()?;
            let t = rtx.open_table(ENTRIES)?;
            for row in t.iter()? {
                let (k, v) = row?;
                c.bytes += v.value().len() as u64;
                c.entries += 1;
                c.next_key = c.next_key.max(k.value() + 1);
            }
        }
        Ok(Self(Arc::new(Inner {
            db,
            path,
            max_bytes,
            counters: Mutex::new(c),
        })))
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        // Counters are plain numbers: a panic elsewhere cannot break them.
        self.0.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.0.path
    }

    pub fn max_bytes(&self) -> u64 {
        self.0.max_bytes
    }

    /// Takes room for `size` bytes, or says why not.
    pub fn reserve(&self, size: u64) -> Result<Reservation, SpoolError> {
        let max_bytes = self.0.max_bytes;
        if size > max_bytes {
            return Err(SpoolError::TooLarge { size, max_bytes });
        }
        let mut c = self.counters();
        let used = c.bytes + c.reserved;
        if used + size > max_bytes {
            return Err(SpoolError::Full {
                used,
                size,
                max_bytes,
            });
        }
        c.reserved += size;
        Ok(Reservation {
            spool: self.clone(),
            size,
            done: false,
        })
    }

    /// `reserve` and `commit` in one.
    pub fn push(&self, payload: &[u8]) -> Result<u64, SpoolError> {
        self.reserve(payload.len() as u64)?.commit(payload)
    }

    /// Up to `limit` oldest entries, stopping once they hold `max_bytes`
    /// (at least one entry is returned when there is one).
    pub fn peek(&self, limit: usize, max_bytes: u64) -> Result<Vec<Entry>, SpoolError> {
        let rtx = self.0.db.begin_read()?;
        let t = rtx.open_table(ENTRIES)?;
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for row in t.iter()? {
            if out.len() >= limit || (!out.is_empty() && bytes >= max_bytes) {
                break;
            }
            let (k, v) = row?;
            bytes += v.value().len() as u64;
            out.push(Entry {
                key: k.value(),
                payload: v.value().to_vec(),
            });
        }
        Ok(out)
    }

    /// Removes answered entries, durably: the fsync costs little next to a
    /// network round trip, and it keeps resends after a crash to at most the
    /// entry in flight (a downstream OTLP collector cannot deduplicate).
    pub fn remove(&self, keys: &[u64]) -> Result<(), SpoolError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut tx = self.0.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        let (mut freed, mut n) = (0u64, 0u64);
        {
            let mut t = tx.open_table(ENTRIES)?;
            for &k in keys {
                if let Some(v) = t.remove(k)? {
                    freed += v.value().len() as u64;
                    n += 1;
                }
            }
        }
        tx.commit()?;
        let mut c = self.counters();
        c.bytes -= freed.min(c.bytes);
        c.entries -= n.min(c.entries);
        Ok(())
    }

    /// Payload bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.counters().bytes
    }

    /// Bytes on disk plus bytes reserved.
    pub fn used(&self) -> u64 {
        let c = self.counters();
        c.bytes + c.reserved
    }

    pub fn len(&self) -> u64 {
        self.counters().entries
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Reservation {
    /// Writes the payload durably (returns after the fsync) and returns its
    /// key. A payload longer than the reservation is refused (`Full`) rather
    /// than overrunning the bound.
    pub fn commit(mut self, payload: &[u8]) -> Result<u64, SpoolError> {
        let size = payload.len() as u64;
        let inner = &self.spool.0;
        if size > self.size {
            return Err(SpoolError::Full {
                used: self.spool.used(),
                size,
                max_bytes: inner.max_bytes,
            });
        }
        // Keys are taken under the counters lock; redb serializes the writes.
        let key = {
            let mut c = self.spool.counters();
            let k = c.next_key;
            c.next_key += 1;
            k
        };
        let result = (|| {
            let tx = inner.db.begin_write()?;
            {
                let mut t = tx.open_table(ENTRIES)?;
                t.insert(key, payload)?;
            }
            tx.commit()?;
            Ok::<_, SpoolError>(())
        })();
        let mut c = self.spool.counters();
        c.reserved -= self.size.min(c.reserved);
        self.done = true;
        if result.is_ok() {
            c.bytes += size;
            c.entries += 1;
        }
        result.map(|()| key)
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            let mut c = self.spool.counters();
            c.reserved -= self.size.min(c.reserved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_survives_reopen_and_keys_keep_growing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b);
        {
            let s = Spool::open(dir.path(), 1000).unwrap();
            a = s.push(b"first").unwrap();
            b = s.push(b"second").unwrap();
            assert!(b > a);
            assert_eq!((s.len(), s.bytes()), (2, 11));
            let e = s.peek(10, u64::MAX).unwrap();
            assert_eq!(e[0].payload, b"first");
            s.remove(&[a]).unwrap();
        }
        let s = Spool::open(dir.path(), 1000).unwrap();
        assert_eq!((s.len(), s.bytes()), (1, 6));
        assert_eq!(s.peek(10, u64::MAX).unwrap()[0].key, b);
        assert!(s.push(b"third").unwrap() > b);
        assert_eq!(s.peek(10, 1).unwrap().len(), 1, "at least one entry");
    }

    #[test]
    fn reservations_count_against_the_bound_and_are_returned_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 100).unwrap();
        let r1 = s.reserve(60).unwrap();
        match s.reserve(50) {
            Err(SpoolError::Full {
                used: 60,
                size: 50,
                max_bytes: 100,
            }) => {}
            other => panic!("expected Full, got {:?}", other.map(|r| r.size())),
        }
        drop(r1);
        let r2 = s.reserve(50).unwrap();
        assert_eq!(s.used(), 50);
        r2.commit(&[7; 40]).unwrap();
        assert_eq!((s.used(), s.bytes()), (40, 40));
        assert!(matches!(s.reserve(101), Err(SpoolError::TooLarge { .. })));
        assert!(!s.reserve(101).err().unwrap().retryable());
        // A payload longer than its reservation is refused, not written.
        let r3 = s.reserve(10).unwrap();
        assert!(r3.commit(&[0; 11]).is_err());
        assert_eq!((s.used(), s.len()), (40, 1));
    }
}
