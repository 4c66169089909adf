//! Disk-backed, bounded queue of accepted requests (redb, one file).
//!
//! Why: an accepted request must survive a dead Elasticsearch and a
//! `kill -9`. `push` commits with `Durability::Immediate` (fsync) before it
//! returns, so "accepted" means "on disk"; an entry is removed only after
//! every one of its documents got a final answer from Elasticsearch. A crash
//! between the two resends the entry: its documents carry the same `_id`s
//! (the per-entry seed is stored with it), so Elasticsearch answers 409 and
//! nothing is counted twice.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use redb::{
    Database, Durability, ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _,
    TableDefinition,
};

/// key → seed (8 bytes, BE) ‖ protobuf `ExportProfilesServiceRequest`.
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");

/// File name of the spool inside the spool directory.
pub const SPOOL_FILE: &str = "spool.redb";

/// One queued request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: u64,
    pub seed: u64,
    pub payload: Vec<u8>,
}

impl Entry {
    /// Bytes this entry counts against the spool bound.
    pub fn size(&self) -> u64 {
        8 + self.payload.len() as u64
    }
}

#[derive(Debug)]
pub enum SpoolError {
    /// The spool holds `max_bytes` already: retry later (upstream gets a retryable status).
    Full {
        bytes: u64,
        max_bytes: u64,
    },
    Io(std::io::Error),
    Db(redb::Error),
}

impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpoolError::Full { bytes, max_bytes } => {
                write!(
                    f,
                    "spool full ({bytes} of {max_bytes} bytes used); retry later"
                )
            }
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

struct Counters {
    /// Bytes and entries committed or being committed (reserved by `push`).
    bytes: u64,
    entries: u64,
    next_key: u64,
}

/// Group commit: concurrent pushes share one transaction and one fsync. The
/// first pusher to find no commit running becomes the leader and commits
/// everything queued; the others wait for their generation to be done.
#[derive(Default)]
struct Group {
    pending: Vec<(u64, Vec<u8>)>,
    /// Generation the entries in `pending` will be committed in.
    gen: u64,
    /// Every generation below this one has been committed (or failed).
    done: u64,
    committing: bool,
    /// Recent failed generations and why (bounded).
    failures: VecDeque<(u64, String)>,
}

/// The spool. Thread-safe; every method does synchronous disk I/O.
pub struct Spool {
    db: Database,
    path: PathBuf,
    max_bytes: u64,
    counters: Mutex<Counters>,
    group: Mutex<Group>,
    committed: Condvar,
}

impl Spool {
    /// Opens (or creates) `dir/spool.redb`. Entries left by a previous process,
    /// including one killed mid-write, are kept and will be resent.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        std::fs::create_dir_all(dir).map_err(SpoolError::Io)?;
        let path = dir.join(SPOOL_FILE);
        let db = Database::create(&path)?;
        let tx = db.begin_write()?;
        tx.open_table(ENTRIES)?;
        tx.commit()?;
        let (mut bytes, mut entries, mut next_key) = (0u64, 0u64, 0u64);
        {
            let rtx = db.begin_read()?;
            let t = rtx.open_table(ENTRIES)?;
            for row in t.iter()? {
                let (k, v) = row?;
                bytes += v.value().len() as u64;
                entries += 1;
                next_key = next_key.max(k.value() + 1);
            }
        }
        Ok(Self {
            db,
            path,
            max_bytes,
            counters: Mutex::new(Counters {
                bytes,
                entries,
                next_key,
            }),
            group: Mutex::new(Group::default()),
            committed: Condvar::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Appends a request durably (returns after the fsync); `Full` if it
    /// would exceed the bound. Concurrent calls share one commit.
    pub fn push(&self, seed: u64, payload: &[u8]) -> Result<u64, SpoolError> {
        let size = 8 + payload.len() as u64;
        let mut value = Vec::with_capacity(size as usize);
        value.extend_from_slice(&seed.to_be_bytes());
        value.extend_from_slice(payload);
        let mut g = self.group.lock().unwrap_or_else(|e| e.into_inner());
        let key = {
            // Reserve under the group lock so keys enter `pending` in order.
            let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
            if c.bytes + size > self.max_bytes {
                return Err(SpoolError::Full {
                    bytes: c.bytes,
                    max_bytes: self.max_bytes,
                });
            }
            let key = c.next_key;
            c.next_key += 1;
            c.bytes += size;
            c.entries += 1;
            key
        };
        g.pending.push((key, value));
        let my_gen = g.gen;
        loop {
            if g.done > my_gen {
                return match g.failures.iter().find(|(gen, _)| *gen == my_gen) {
                    Some((_, e)) => Err(SpoolError::Io(std::io::Error::other(e.clone()))),
                    None => Ok(key),
                };
            }
            if g.committing {
                g = self.committed.wait(g).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Lead: commit everything queued so far as generation `gen`.
            g.committing = true;
            let batch = std::mem::take(&mut g.pending);
            let gen = g.gen;
            g.gen += 1;
            drop(g);
            let result = self.commit(&batch);
            g = self.group.lock().unwrap_or_else(|e| e.into_inner());
            g.committing = false;
            g.done = gen + 1;
            if let Err(e) = result {
                let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
                for (_, v) in &batch {
                    c.bytes -= (v.len() as u64).min(c.bytes);
                    c.entries = c.entries.saturating_sub(1);
                }
                g.failures.push_back((gen, e.to_string()));
                if g.failures.len() > 64 {
                    g.failures.pop_front();
                }
            }
            self.committed.notify_all();
        }
    }

    fn commit(&self, batch: &[(u64, Vec<u8>)]) -> Result<(), SpoolError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(ENTRIES)?;
            for (k, v) in batch {
                t.insert(*k, v.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Up to `limit` oldest entries with a key greater than `after`.
    pub fn peek(&self, after: Option<u64>, limit: usize) -> Result<Vec<Entry>, SpoolError> {
        self.peek_bytes(after, limit, u64::MAX)
    }

    /// Like `peek`, also stopping once the entries hold `max_bytes` (but
    /// always returning at least one entry if there is one).
    pub fn peek_bytes(
        &self,
        after: Option<u64>,
        limit: usize,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, SpoolError> {
        let rtx = self.db.begin_read()?;
        let t = rtx.open_table(ENTRIES)?;
        let start = after.map_or(0, |a| a.saturating_add(1));
        let mut out: Vec<Entry> = Vec::new();
        let mut bytes = 0u64;
        for row in t.range(start..)? {
            if out.len() >= limit || (!out.is_empty() && bytes >= max_bytes) {
                break;
            }
            let (k, v) = row?;
            let v = v.value();
            if v.len() < 8 {
                // Cannot happen with entries we wrote; skip rather than panic.
                continue;
            }
            let mut seed = [0u8; 8];
            seed.copy_from_slice(&v[..8]);
            bytes += v.len() as u64;
            out.push(Entry {
                key: k.value(),
                seed: u64::from_be_bytes(seed),
                payload: v[8..].to_vec(),
            });
        }
        Ok(out)
    }

    /// Removes acknowledged entries (not fsynced, see below).
    pub fn remove(&self, keys: &[u64]) -> Result<(), SpoolError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write()?;
        // No fsync for removals: if a crash loses one, the entry is sent again
        // and Elasticsearch answers 409 for every document (same ids). The next
        // durable push makes it permanent.
        tx.set_durability(Durability::None)?;
        let mut freed = 0u64;
        let mut n = 0u64;
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
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        c.bytes -= freed.min(c.bytes);
        c.entries -= n.min(c.entries);
        Ok(())
    }

    /// Bytes held (payloads and seeds).
    pub fn bytes(&self) -> u64 {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bytes
    }

    pub fn len(&self) -> u64 {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries counted from disk (for tests that check the counters).
    pub fn len_on_disk(&self) -> Result<u64, SpoolError> {
        let rtx = self.db.begin_read()?;
        Ok(rtx.open_table(ENTRIES)?.len()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_peek_remove_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Spool::open(dir.path(), 1 << 20).unwrap();
            assert!(s.is_empty());
            let a = s.push(7, b"first").unwrap();
            let b = s.push(8, b"second").unwrap();
            assert!(b > a);
            assert_eq!(s.bytes(), 8 + 5 + 8 + 6);
            let e = s.peek(None, 10).unwrap();
            assert_eq!(e.len(), 2);
            assert_eq!((e[0].seed, e[0].payload.as_slice()), (7, &b"first"[..]));
            assert_eq!(s.peek(Some(a), 10).unwrap()[0].key, b);
            s.remove(&[a]).unwrap();
            assert_eq!(s.len(), 1);
        }
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s.len_on_disk().unwrap(), 1);
        assert_eq!(s.bytes(), 8 + 6);
        let e = s.peek(None, 10).unwrap();
        assert_eq!((e[0].seed, e[0].payload.as_slice()), (8, &b"second"[..]));
        s.push(10, &[1; 100]).unwrap();
        s.push(11, &[2; 100]).unwrap();
        assert_eq!(s.peek_bytes(None, 10, 1).unwrap().len(), 1, "at least one");
        assert_eq!(s.peek_bytes(None, 10, 120).unwrap().len(), 2);
        assert_eq!(s.peek_bytes(None, 10, 10_000).unwrap().len(), 3);
        // New keys keep increasing after a reopen.
        let c = s.push(9, b"third").unwrap();
        assert!(c > e[0].key);
    }

    #[test]
    fn concurrent_pushes_all_land_with_distinct_keys() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(Spool::open(dir.path(), 1 << 30).unwrap());
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    (0..25u64)
                        .map(|i| s.push(t * 100 + i, &[t as u8; 1000]).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut keys: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 200);
        assert_eq!(s.len(), 200);
        assert_eq!(s.len_on_disk().unwrap(), 200);
        assert_eq!(s.bytes(), 200 * 1008);
        let seeds: std::collections::HashSet<u64> =
            s.peek(None, 1000).unwrap().iter().map(|e| e.seed).collect();
        assert_eq!(seeds.len(), 200);
    }

    #[test]
    fn full_is_reported_and_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 30).unwrap();
        s.push(1, &[0; 10]).unwrap();
        match s.push(2, &[0; 20]) {
            Err(SpoolError::Full { bytes, max_bytes }) => assert_eq!((bytes, max_bytes), (18, 30)),
            other => panic!("expected Full, got {other:?}"),
        }
        assert_eq!(s.len_on_disk().unwrap(), 1);
        s.remove(&[0]).unwrap();
        s.push(2, &[0; 20]).unwrap();
    }
}
