//! Retention, the size cap, garbage collection and compaction.
//!
//! Sample chunks are keyed by bucket first, so "oldest data" is the front
//! of the samples table and eviction is a range delete. Dictionary records
//! (stacks, frames, label sets, strings, executables) are shared between
//! buckets, so after an eviction they are swept mark-and-sweep: whatever no
//! remaining entry reaches is deleted. A sweep reads every chunk, so it runs
//! only when data was evicted, never on a plain ingest.
//!
//! Retention runs on ingest once the oldest bucket is past the cutoff by
//! more than 1/16 of the retention period (so a store receiving data every
//! few seconds sweeps a few times per period, not every 10 seconds);
//! queries never show expired buckets either way, and [`Store::maintain`]
//! applies the exact cutoff.
//!
//! The size cap: below 4 GiB redb grows its file by doubling it, so a file
//! holding `n` live bytes may take up to `2n` on disk. The store therefore
//! keeps live data (pages in use) within **half** of `max_bytes`: once it
//! goes above, the oldest buckets are evicted until live data is at 40% of
//! the cap (the headroom spaces evictions out). Freed pages are reused by
//! later ingests, so the file itself stays put. Only if the file has grown
//! past the cap anyway (a doubling on fragmented free space, or a store
//! reopened with a smaller cap) is it compacted, which returns free pages to
//! the file system; compaction needs the database to itself, so queries
//! wait for it. Between a commit that grows the file and the maintenance
//! right after it, the file may exceed the cap for a moment.

use crate::codec::{bucket_start_key, chunk_header, decode_chunk, fnv1a64, split_chunk_key};
use crate::records;
use crate::{
    Result, Store, WriterCaches, BUCKET_NS, EXECUTABLES, FRAMES, FRAME_INDEX, LABELS, LABEL_INDEX,
    META, META_ENTRIES, META_FIRST_ROLLUP, META_TOTAL_SAMPLES, ROLLUPS, ROLLUP_BUCKETS, SAMPLES,
    STACKS, STACK_INDEX, STRINGS, STRING_INDEX,
};
use libpf::FileId;
use redb::{
    MultimapTableDefinition, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};
use std::collections::HashSet;

/// What a maintenance pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceStats {
    /// Entries and samples dropped because they were older than the
    /// retention period.
    pub expired_entries: u64,
    pub expired_samples: u64,
    /// Entries and samples evicted (oldest first) to meet the size cap.
    pub evicted_entries: u64,
    pub evicted_samples: u64,
    /// Dictionary records no longer referenced and deleted.
    pub swept_records: u64,
    /// Whether the file was compacted.
    pub compacted: bool,
    pub file_bytes_before: u64,
    pub file_bytes_after: u64,
    /// Bytes of pages in use after the pass.
    pub live_bytes: u64,
}

impl Store {
    /// Applies retention (exact cutoff) and the size cap now. The collector
    /// may call it on a timer so that limits hold while no data arrives.
    pub fn maintain(&self) -> Result<MaintenanceStats> {
        let now = self.clock.now_unix_ns();
        let mut caches = self.writer();
        self.maintain_locked(&mut caches, now)
    }

    fn file_len(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.path)?.len())
    }

    /// Buckets of slack before retention runs on ingest, see module docs.
    fn retention_slack(&self) -> u64 {
        let buckets = self.config.retention.as_nanos() as u64 / BUCKET_NS;
        (buckets / 16).max(1)
    }

    /// The cheap checks run after every ingest: an expired oldest bucket,
    /// a file over the cap, or entries grown by 5% since live bytes were last
    /// measured (measuring walks every page, so it is not done per ingest).
    pub(crate) fn maintain_if_needed(
        &self,
        caches: &mut WriterCaches,
        now: u64,
    ) -> Result<Option<MaintenanceStats>> {
        let first_live = self.first_live_bucket(now);
        let (oldest, rows) = {
            let db = self.db();
            let txn = db.begin_read()?;
            let samples = txn.open_table(SAMPLES)?;
            let first = samples.first()?;
            let oldest = first.map(|(k, _)| u64::from(split_chunk_key(k.value()).0));
            let meta = txn.open_table(META)?;
            let entries = meta.get(META_ENTRIES)?.map_or(0, |v| v.value());
            (oldest, entries)
        };
        let expired = oldest.is_some_and(|b| b + self.retention_slack() < first_live);
        let grown = caches.measured.is_none_or(|(r, _)| rows > r + r / 20);
        if !expired && !grown && self.file_len()? <= self.config.max_bytes {
            return Ok(None);
        }
        let m = self.maintain_locked(caches, now)?;
        Ok((m != MaintenanceStats::idle(m.file_bytes_before, m.live_bytes)).then_some(m))
    }

    /// Live bytes: pages in use, from redb's allocator. Walks every page.
    fn measure(&self, caches: &mut WriterCaches) -> Result<u64> {
        let db = self.db();
        let txn = db.begin_write()?;
        let s = txn.stats()?;
        let rows = txn
            .open_table(META)?
            .get(META_ENTRIES)?
            .map_or(0, |v| v.value());
        txn.abort()?;
        let live = s.allocated_pages() * s.page_size() as u64;
        caches.measured = Some((rows, live));
        Ok(live)
    }

    fn maintain_locked(&self, caches: &mut WriterCaches, now: u64) -> Result<MaintenanceStats> {
        let mut stats = MaintenanceStats {
            file_bytes_before: self.file_len()?,
            ..Default::default()
        };
        // Retention.
        let first_live = self.first_live_bucket(now).min(u64::from(u32::MAX));
        {
            let db = self.db();
            let txn = db.begin_write()?;
            let (entries, samples) = evict_before(&txn, first_live as u32)?;
            if entries > 0 {
                stats.expired_entries = entries;
                stats.expired_samples = samples;
                stats.swept_records += sweep(&txn)?;
                txn.commit()?;
                caches.clear();
            } else {
                txn.abort()?;
            }
        }

        // Size cap: live data within half the cap, see the module docs.
        let high = self.config.max_bytes / 2;
        let low = self.config.max_bytes / 5 * 2;
        let mut live = self.measure(caches)?;
        if live > high || self.file_len()? > self.config.max_bytes {
            for _ in 0..64 {
                if live <= low {
                    break;
                }
                let db = self.db();
                let txn = db.begin_write()?;
                let rows_total = txn.open_table(SAMPLES)?.len()?;
                if rows_total == 0 {
                    txn.abort()?;
                    break;
                }
                // Evict the share of chunks by which we are over, rounded up
                // to whole buckets; then re-measure, since dictionaries
                // shrink less than proportionally.
                let over = (live - low) as f64 / live as f64;
                let want = ((rows_total as f64 * over).ceil() as u64).max(1);
                let last = {
                    let samples = txn.open_table(SAMPLES)?;
                    let mut n = 0u64;
                    let mut last = 0u32;
                    for row in samples.iter()? {
                        let (k, _) = row?;
                        last = split_chunk_key(k.value()).0;
                        n += 1;
                        if n >= want {
                            break;
                        }
                    }
                    last
                };
                let (entries, samples) = match last.checked_add(1) {
                    Some(end) => evict_before(&txn, end)?,
                    None => evict_all(&txn)?,
                };
                stats.evicted_entries += entries;
                stats.evicted_samples += samples;
                stats.swept_records += sweep(&txn)?;
                txn.commit()?;
                caches.clear();
                drop(db);
                live = self.measure(caches)?;
            }
        }
        if self.file_len()? > self.config.max_bytes {
            let mut db = self.db_mut();
            stats.compacted = db.compact()?;
            drop(db);
            live = self.measure(caches)?;
        }
        stats.live_bytes = live;
        stats.file_bytes_after = self.file_len()?;
        Ok(stats)
    }
}

impl MaintenanceStats {
    /// A pass that only measured.
    fn idle(file_bytes: u64, live_bytes: u64) -> Self {
        MaintenanceStats {
            file_bytes_before: file_bytes,
            file_bytes_after: file_bytes,
            live_bytes,
            ..Default::default()
        }
    }
}

/// Deletes every sample chunk of buckets before `end_bucket`; returns the
/// number of entries and samples deleted and updates the totals.
fn evict_before(txn: &WriteTransaction, end_bucket: u32) -> Result<(u64, u64)> {
    let mut samples = txn.open_table(SAMPLES)?;
    let (mut entries, mut count) = (0u64, 0u64);
    for row in samples.extract_from_if(..bucket_start_key(end_bucket), |_, _| true)? {
        let (_, v) = row?;
        let (c, e) = chunk_header(v.value())?;
        count += c;
        entries += e;
    }
    drop(samples);
    subtract_totals(txn, entries, count)?;
    drop_rollups_before(txn, end_bucket.div_ceil(ROLLUP_BUCKETS))?;
    Ok((entries, count))
}

/// Deletes the rollups that summed evicted buckets (number below `end`):
/// a partial rollup would undercount, so queries read raw buckets there.
fn drop_rollups_before(txn: &WriteTransaction, end: u32) -> Result<()> {
    let mut rollups = txn.open_table(ROLLUPS)?;
    rollups.retain_in(..bucket_start_key(end), |_, _| false)?;
    let mut meta = txn.open_table(META)?;
    let first = meta.get(META_FIRST_ROLLUP)?.map_or(0, |v| v.value());
    meta.insert(META_FIRST_ROLLUP, first.max(u64::from(end)))?;
    Ok(())
}

fn evict_all(txn: &WriteTransaction) -> Result<(u64, u64)> {
    let mut samples = txn.open_table(SAMPLES)?;
    let (mut entries, mut count) = (0u64, 0u64);
    for row in samples.extract_if(|_, _| true)? {
        let (_, v) = row?;
        let (c, e) = chunk_header(v.value())?;
        count += c;
        entries += e;
    }
    drop(samples);
    subtract_totals(txn, entries, count)?;
    drop_rollups_before(txn, u32::MAX)?;
    Ok((entries, count))
}

fn subtract_totals(txn: &WriteTransaction, entries: u64, count: u64) -> Result<()> {
    let mut meta = txn.open_table(META)?;
    let total = meta.get(META_TOTAL_SAMPLES)?.map_or(0, |v| v.value());
    meta.insert(META_TOTAL_SAMPLES, total.saturating_sub(count))?;
    let n = meta.get(META_ENTRIES)?.map_or(0, |v| v.value());
    meta.insert(META_ENTRIES, n.saturating_sub(entries))?;
    Ok(())
}

/// Deletes the records of `table` whose id is not in `keep`, and their
/// hash-index entries; calls `mark` on the records kept.
fn sweep_table(
    txn: &WriteTransaction,
    table: TableDefinition<u64, &'static [u8]>,
    index: MultimapTableDefinition<u64, u64>,
    keep: &HashSet<u64>,
    mut mark: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let mut t = txn.open_table(table)?;
    let mut dead: Vec<(u64, u64)> = Vec::new();
    for row in t.iter()? {
        let (k, v) = row?;
        if keep.contains(&k.value()) {
            mark(v.value())?;
        } else {
            dead.push((k.value(), fnv1a64(v.value())));
        }
    }
    let mut idx = txn.open_multimap_table(index)?;
    for &(id, h) in &dead {
        t.remove(id)?;
        idx.remove(h, id)?;
    }
    Ok(dead.len() as u64)
}

/// Mark and sweep of the dictionaries from the remaining sample entries.
fn sweep(txn: &WriteTransaction) -> Result<u64> {
    let mut stacks = HashSet::new();
    let mut labels = HashSet::new();
    {
        let samples = txn.open_table(SAMPLES)?;
        let mut entries = Vec::new();
        for row in samples.iter()? {
            let (_, v) = row?;
            entries.clear();
            decode_chunk(v.value(), &mut entries)?;
            for &(s, l, _) in &entries {
                stacks.insert(s);
                labels.insert(l);
            }
        }
    }
    let mut frames = HashSet::new();
    let mut strings = HashSet::new();
    let mut files: HashSet<FileId> = HashSet::new();
    let mut swept = sweep_table(txn, STACKS, STACK_INDEX, &stacks, |rec| {
        frames.extend(records::decode_stack(rec)?);
        Ok(())
    })?;
    swept += sweep_table(txn, LABELS, LABEL_INDEX, &labels, |rec| {
        strings.extend(records::label_string_ids(rec)?);
        Ok(())
    })?;
    swept += sweep_table(txn, FRAMES, FRAME_INDEX, &frames, |rec| {
        let (file, ids) = records::frame_refs(rec)?;
        files.extend(file);
        strings.extend(ids);
        Ok(())
    })?;
    swept += sweep_table(txn, STRINGS, STRING_INDEX, &strings, |_| Ok(()))?;
    let keep: HashSet<u128> = files.iter().map(|f| f.hash128().to_u128()).collect();
    let mut exes = txn.open_table(EXECUTABLES)?;
    let before = exes.len()?;
    exes.retain(|k, _| keep.contains(&k))?;
    swept += before - exes.len()?;
    Ok(swept)
}
