//! The collector's embedded profile store.
//!
//! For one machine or a small team the collector keeps the profiles it
//! receives here and the web UI queries them, so nothing else has to be
//! installed. Everything lives in one [redb] file inside a data directory:
//! redb is pure Rust, ACID and crash safe (a committed ingest survives a
//! crash; an interrupted one leaves no trace).
//!
//! # Layout
//!
//! Profiles repeat the same few thousand stacks millions of times, so the
//! store keeps every distinct thing once and counts:
//!
//! * `strings`: function names, file names, process names, … → id;
//! * `frames`: one record per distinct [`libpf::Frame`] (type, file,
//!   address, flags, string ids) → id;
//! * `stacks`: one record per distinct list of frame ids (leaf first) → id;
//! * `labels`: one record per distinct (host, frequency, [`SampleLabels`]) → id;
//! * `executables`: [`profile::Executable`] by FileId;
//! * `samples`: per 10-second bucket, chunks of (stack id, label-set id,
//!   count) entries, delta-varint encoded (see `codec::encode_chunk`);
//! * `rollups`: per 10 minutes, samples per stack and per label set, which
//!   answer label-free queries over long ranges (see [`ROLLUP_BUCKETS`]).
//!
//! Each dictionary has a hash index (FNV-1a of the record → ids) for dedup
//! on ingest. Per-sample timestamps are reduced to their bucket: queries are
//! answered at [`BUCKET_NS`] resolution, which is what a time-range picker
//! needs, and it is what makes a sample cost a fraction of a byte.
//!
//! # Limits
//!
//! [`StoreConfig::retention`] drops buckets older than the period;
//! [`StoreConfig::max_bytes`] caps the file: when it is exceeded the oldest
//! buckets are evicted, unreferenced dictionary records are swept and the
//! file is compacted. Both run on ingest (and on [`Store::maintain`]); see
//! the `maintain` module.
//!
//! # Use
//!
//! ```no_run
//! use store::{Filter, Store, StoreConfig, TimeRange};
//! # fn demo(profile: &profile::Profile) -> store::Result<()> {
//! let store = Store::open("/var/lib/ebpf-profiler", StoreConfig::default())?;
//! store.ingest(profile)?;
//! let now = store.now_unix_ns();
//! let last_hour = TimeRange::new(now - 3_600_000_000_000, now)?;
//! let graph = store.flamegraph(last_hour, &Filter::default())?;
//! let top = store.top_functions(last_hour, &Filter::default(), 20)?;
//! # Ok(()) }
//! ```
//!
//! Every method blocks on file I/O (and ingest on an fsync): async callers
//! run them with `tokio::task::spawn_blocking`. One process opens a data
//! directory at a time (redb locks the file).
//!
//! [redb]: https://docs.rs/redb

mod codec;
pub mod flame;
mod maintain;
mod query;
mod records;
pub mod testdata;

pub use flame::{class_name, FlameGraph, FlameNode, FrameClass};
pub use maintain::MaintenanceStats;
pub use query::{
    Diff, DiffFunction, DiffStack, Filter, FrameTypeFilter, FunctionStat, KnownValues, TopBy,
};

use codec::{
    bucket_start_key, chunk_key, decode_chunk, encode_chunk, fnv1a64, merge_entries,
    split_chunk_key, CodecError, Entry,
};
use libpf::{FileId, Frame};
use profile::{Profile, SampleLabels};
use redb::{
    Database, MultimapTable, MultimapTableDefinition, ReadableDatabase, ReadableMultimapTable,
    ReadableTable, ReadableTableMetadata, Table, TableDefinition,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Length of a time bucket: samples are counted per bucket, so this is the
/// finest time resolution of every query.
pub const BUCKET_NS: u64 = 10_000_000_000;

/// The smallest accepted [`StoreConfig::max_bytes`]. An empty redb file
/// with our tables already takes a few hundred KiB; a cap below this could
/// never be met and every ingest would evict everything.
pub const MIN_MAX_BYTES: u64 = 4 << 20;

/// How far ahead of the store's clock a sample may be stamped.
pub const MAX_FUTURE_NS: u64 = 3600 * 1_000_000_000;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "profiles.redb";

/// Version of the record layouts; a file written by another layout is
/// refused rather than misread.
const FORMAT_VERSION: u64 = 2;

/// A bucket's last chunk is rewritten with new entries merged in while it
/// is smaller than this; past it, a new chunk is started. This bounds the
/// rewrite cost of an ingest while keeping a bucket in few chunks.
const CHUNK_MERGE_BYTES: usize = 64 << 10;

/// Caches above this many entries are dropped and rebuilt: they only save
/// index look-ups, and a bound keeps a long-running collector's memory flat.
const CACHE_LIMIT: usize = 1 << 20;

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const STRINGS: TableDefinition<u64, &[u8]> = TableDefinition::new("strings");
pub(crate) const STRING_INDEX: MultimapTableDefinition<u64, u64> =
    MultimapTableDefinition::new("strings_by_hash");
pub(crate) const FRAMES: TableDefinition<u64, &[u8]> = TableDefinition::new("frames");
pub(crate) const FRAME_INDEX: MultimapTableDefinition<u64, u64> =
    MultimapTableDefinition::new("frames_by_hash");
pub(crate) const STACKS: TableDefinition<u64, &[u8]> = TableDefinition::new("stacks");
pub(crate) const STACK_INDEX: MultimapTableDefinition<u64, u64> =
    MultimapTableDefinition::new("stacks_by_hash");
pub(crate) const LABELS: TableDefinition<u64, &[u8]> = TableDefinition::new("labels");
pub(crate) const LABEL_INDEX: MultimapTableDefinition<u64, u64> =
    MultimapTableDefinition::new("labels_by_hash");
pub(crate) const EXECUTABLES: TableDefinition<u128, &[u8]> = TableDefinition::new("executables");
/// Sample chunks: `chunk_key(bucket, n)` → `codec::encode_chunk` entries.
pub(crate) const SAMPLES: TableDefinition<u64, &[u8]> = TableDefinition::new("samples");
/// Rollups of [`ROLLUP_BUCKETS`] buckets: `chunk_key(bucket / 60, n)` →
/// entries `(stack, 0, count)` (samples per stack, labels dropped) and
/// `(0, labels, count)` (samples per label set). See [`ROLLUP_BUCKETS`].
pub(crate) const ROLLUPS: TableDefinition<u64, &[u8]> = TableDefinition::new("rollups");

/// Buckets per rollup (10 minutes).
///
/// Why rollups: a query reads every entry of its range, so a week-long
/// range would decode a week of per-thread entries. Most views (the
/// unfiltered flame graph, top functions, diff, the filter lists) need only
/// samples per stack and which label sets occur, which a rollup keeps for a
/// fraction of the size. Queries use the rollups for the whole 10-minute
/// spans inside their range when the filter has no label conditions, and
/// the raw buckets for the edges. A rollup is kept only while every bucket
/// it sums is stored: eviction deletes the rollups it touches and
/// `first_rollup` remembers where complete rollups start.
pub const ROLLUP_BUCKETS: u32 = 60;

const META_VERSION: &str = "format_version";
const META_NEXT_ID: &str = "next_id";
const META_TOTAL_SAMPLES: &str = "total_samples";
const META_ENTRIES: &str = "entries";
/// First rollup number whose buckets are all stored (see [`ROLLUPS`]).
pub(crate) const META_FIRST_ROLLUP: &str = "first_rollup";

/// How long data is kept and how large the file may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Buckets older than this (relative to the store's clock) are dropped.
    pub retention: Duration,
    /// Size cap of the database file in bytes (at least [`MIN_MAX_BYTES`]).
    /// Exceeding it evicts the oldest buckets first.
    pub max_bytes: u64,
}

impl Default for StoreConfig {
    /// A week, 1 GiB: a few days of a busy host at 20 Hz fit comfortably.
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 1 << 30,
        }
    }
}

/// Where the store reads "now": retention is relative to it. A trait so that
/// tests (and replays of old data) can run on a clock of their own.
pub trait Clock: Send + Sync + 'static {
    /// Current Unix time in nanoseconds.
    fn now_unix_ns(&self) -> u64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_ns(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
}

/// What went wrong in the store.
#[derive(Debug)]
pub enum StoreError {
    /// Opening or creating the data directory failed.
    Io(std::io::Error),
    /// The database reported an error (I/O, corruption, lock held by
    /// another process, …).
    Db(redb::Error),
    /// A stored record could not be decoded: the file is damaged.
    Corrupt(String),
    /// The caller passed something unusable (bad config, bad time range,
    /// a profile that breaks the model's invariants).
    Invalid(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io(e) => write!(f, "store I/O error: {e}"),
            StoreError::Db(e) => write!(f, "store database error: {e}"),
            StoreError::Corrupt(m) => write!(f, "store is corrupt: {m}"),
            StoreError::Invalid(m) => write!(f, "invalid input: {m}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io(e) => Some(e),
            StoreError::Db(e) => Some(e),
            _ => None,
        }
    }
}

impl From<CodecError> for StoreError {
    fn from(e: CodecError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e)
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::CompactionError
);

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A half-open time range `[start, end)` in Unix nanoseconds. Queries see
/// whole buckets: every bucket that overlaps the range is included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimeRange {
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
}

impl TimeRange {
    /// A range; `start` must be before `end`.
    pub fn new(start_unix_ns: u64, end_unix_ns: u64) -> Result<Self> {
        if start_unix_ns >= end_unix_ns {
            return Err(StoreError::Invalid(format!(
                "time range start {start_unix_ns} is not before end {end_unix_ns}"
            )));
        }
        Ok(Self {
            start_unix_ns,
            end_unix_ns,
        })
    }

    /// Everything (for queries over the whole store).
    pub const ALL: TimeRange = TimeRange {
        start_unix_ns: 0,
        end_unix_ns: u64::MAX,
    };

    /// Bucket numbers `[first, end)` overlapping the range.
    pub(crate) fn buckets(&self) -> (u64, u64) {
        let first = self.start_unix_ns / BUCKET_NS;
        let end = self.end_unix_ns.div_ceil(BUCKET_NS);
        (first, end)
    }

    /// Length in nanoseconds.
    pub fn duration_ns(&self) -> u64 {
        self.end_unix_ns.saturating_sub(self.start_unix_ns)
    }
}

/// What one [`Store::ingest`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Samples stored (sum of counts).
    pub samples: u64,
    /// Samples dropped because they were already older than the retention
    /// period.
    pub dropped_expired: u64,
    /// Samples dropped because they lie more than [`MAX_FUTURE_NS`] ahead
    /// of the store's clock: a skewed agent clock would otherwise plant data
    /// that retention cannot remove for a long time.
    pub dropped_future: u64,
    /// Bucket entries (bucket, stack, labels) written, new or incremented.
    pub entries: usize,
    /// Of those, entries that did not exist before.
    pub new_entries: usize,
    /// Dictionary records created by this profile.
    pub new_frames: usize,
    pub new_stacks: usize,
    pub new_label_sets: usize,
    /// Maintenance the ingest triggered (retention, size cap), if any.
    pub maintenance: Option<MaintenanceStats>,
}

/// Sizes of the store, for monitoring and the bench.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Size of the database file on disk.
    pub file_bytes: u64,
    /// Bytes of pages in use inside the file.
    pub allocated_bytes: u64,
    /// Samples held (sum of counts).
    pub total_samples: u64,
    /// Distinct (bucket, stack, labels) entries.
    pub sample_entries: u64,
    /// Chunks they are stored in.
    pub sample_chunks: u64,
    /// Rollup chunks (see [`ROLLUP_BUCKETS`]).
    pub rollup_chunks: u64,
    pub stacks: u64,
    pub frames: u64,
    pub label_sets: u64,
    pub strings: u64,
    pub executables: u64,
    /// Covered time: start of the oldest and end of the newest bucket.
    pub time_bounds: Option<TimeRange>,
}

/// In-memory dedup caches of the writer: record → id. They hold committed
/// ids only (see [`Store::ingest`]) and are cleared whenever garbage
/// collection may have deleted records.
#[derive(Default)]
pub(crate) struct WriterCaches {
    strings: HashMap<Arc<str>, u64>,
    frames: HashMap<Frame, u64>,
    stacks: HashMap<Vec<u64>, u64>,
    labels: HashMap<(Arc<str>, u64, SampleLabels), u64>,
    executables: HashSet<FileId>,
    /// (sample entries, live bytes) when live bytes were last measured; kept
    /// across `clear`.
    pub(crate) measured: Option<(u64, u64)>,
}

impl WriterCaches {
    pub(crate) fn clear(&mut self) {
        let measured = self.measured;
        *self = WriterCaches {
            measured,
            ..WriterCaches::default()
        };
    }

    fn trim(&mut self) {
        if self.strings.len() > CACHE_LIMIT
            || self.frames.len() > CACHE_LIMIT
            || self.stacks.len() > CACHE_LIMIT
            || self.labels.len() > CACHE_LIMIT
            || self.executables.len() > CACHE_LIMIT
        {
            self.clear();
        }
    }
}

/// The profile store. Cheap to share behind an `Arc`: every method takes
/// `&self`; writes are serialized, queries run concurrently with each other
/// and with ingest (redb MVCC), and wait only for a file compaction.
pub struct Store {
    path: PathBuf,
    config: StoreConfig,
    clock: Arc<dyn Clock>,
    /// Write-locked only to compact the file (redb needs `&mut Database`
    /// and no open transactions); everything else takes the read side.
    db: RwLock<Database>,
    /// Serializes writers and holds their caches.
    writer: Mutex<WriterCaches>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, on the system clock.
    pub fn open(dir: impl AsRef<Path>, config: StoreConfig) -> Result<Store> {
        Self::open_with_clock(dir, config, Arc::new(SystemClock))
    }

    /// Opens (or creates) the store in `dir` with a clock of the caller's.
    ///
    /// Fails if the config is unusable, the directory cannot be created,
    /// another process holds the file, or the file has another format.
    pub fn open_with_clock(
        dir: impl AsRef<Path>,
        config: StoreConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Store> {
        if config.retention.is_zero() {
            return Err(StoreError::Invalid("retention must be positive".into()));
        }
        if config.max_bytes < MIN_MAX_BYTES {
            return Err(StoreError::Invalid(format!(
                "max_bytes {} is below the minimum of {MIN_MAX_BYTES}",
                config.max_bytes
            )));
        }
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        let path = dir.join(DB_FILE);
        let db = open_database(&path)?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let version = meta.get(META_VERSION)?.map(|v| v.value());
            match version {
                None => {
                    meta.insert(META_VERSION, FORMAT_VERSION)?;
                    meta.insert(META_NEXT_ID, 1)?;
                    meta.insert(META_TOTAL_SAMPLES, 0)?;
                    meta.insert(META_ENTRIES, 0)?;
                }
                Some(FORMAT_VERSION) => {}
                Some(v) => {
                    return Err(StoreError::Invalid(format!(
                        "{} has store format {v}, this build reads format {FORMAT_VERSION}",
                        path.display()
                    )))
                }
            }
            // Create every table so read transactions never miss one.
            txn.open_table(STRINGS)?;
            txn.open_multimap_table(STRING_INDEX)?;
            txn.open_table(FRAMES)?;
            txn.open_multimap_table(FRAME_INDEX)?;
            txn.open_table(STACKS)?;
            txn.open_multimap_table(STACK_INDEX)?;
            txn.open_table(LABELS)?;
            txn.open_multimap_table(LABEL_INDEX)?;
            txn.open_table(EXECUTABLES)?;
            txn.open_table(SAMPLES)?;
            txn.open_table(ROLLUPS)?;
        }
        txn.commit()?;
        Ok(Store {
            path,
            config,
            clock,
            db: RwLock::new(db),
            writer: Mutex::new(WriterCaches::default()),
        })
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> StoreConfig {
        self.config
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store clock's "now".
    pub fn now_unix_ns(&self) -> u64 {
        self.clock.now_unix_ns()
    }

    pub(crate) fn db(&self) -> RwLockReadGuard<'_, Database> {
        // A panic while holding the lock cannot leave the Database in a
        // bad state (redb transactions are atomic), so poison is ignored.
        self.db.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn db_mut(&self) -> std::sync::RwLockWriteGuard<'_, Database> {
        self.db.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn writer(&self) -> MutexGuard<'_, WriterCaches> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// First bucket not yet expired at `now`: bucket `b` covers
    /// `[b*B, (b+1)*B)` and expires once its end is older than the
    /// retention period.
    pub(crate) fn first_live_bucket(&self, now: u64) -> u64 {
        let cutoff = now.saturating_sub(self.config.retention.as_nanos() as u64);
        cutoff / BUCKET_NS
    }

    /// Stores one profile in a single transaction: either all of it is
    /// committed or none of it.
    ///
    /// Samples with timestamps are counted in the bucket of each timestamp;
    /// samples without in the bucket of the profile's start. Samples whose
    /// bucket has already expired are dropped (and counted in the stats).
    /// Afterwards retention and the size cap are enforced if needed.
    pub fn ingest(&self, profile: &Profile) -> Result<IngestStats> {
        validate(profile)?;
        let now = self.clock.now_unix_ns();
        let first_live = self.first_live_bucket(now);
        let latest = now.saturating_add(MAX_FUTURE_NS);

        // Reduce the profile to rows before touching the database.
        let mut per_sample: Vec<(usize, Vec<(u32, u64)>)> = Vec::new();
        let mut stats = IngestStats::default();
        for (i, s) in profile.samples.iter().enumerate() {
            let mut buckets: Vec<(u32, u64)> = Vec::new();
            let mut add = |ts: u64, n: u64, stats: &mut IngestStats| {
                let b = ts / BUCKET_NS;
                if b < first_live {
                    stats.dropped_expired += n;
                    return;
                }
                if ts > latest {
                    stats.dropped_future += n;
                    return;
                }
                // u64 nanoseconds end in 2554, 32-bit buckets in 3331.
                let b = b as u32;
                match buckets.last_mut() {
                    Some((lb, c)) if *lb == b => *c += n,
                    _ => buckets.push((b, n)),
                }
                stats.samples += n;
            };
            if s.timestamps_unix_ns.is_empty() {
                add(profile.start_unix_ns, s.count, &mut stats);
            } else {
                for &ts in &s.timestamps_unix_ns {
                    add(ts, 1, &mut stats);
                }
            }
            if !buckets.is_empty() {
                per_sample.push((i, buckets));
            }
        }

        let mut caches = self.writer();
        let result = self.ingest_rows(&mut caches, profile, &per_sample, &mut stats);
        if result.is_err() {
            // Ids handed out by the failed transaction are not committed.
            caches.clear();
        }
        result?;
        caches.trim();
        stats.maintenance = self.maintain_if_needed(&mut caches, now)?;
        Ok(stats)
    }

    fn ingest_rows(
        &self,
        caches: &mut WriterCaches,
        profile: &Profile,
        per_sample: &[(usize, Vec<(u32, u64)>)],
        stats: &mut IngestStats,
    ) -> Result<()> {
        if per_sample.is_empty() {
            return Ok(());
        }
        let db = self.db();
        let txn = db.begin_write()?;
        // New cache entries are staged and published only after commit.
        let mut staged = WriterCaches::default();
        {
            let mut meta = txn.open_table(META)?;
            let mut next_id = meta.get(META_NEXT_ID)?.map_or(1, |v| v.value());
            let total = meta.get(META_TOTAL_SAMPLES)?.map_or(0, |v| v.value());
            let mut d = Dicts {
                strings: txn.open_table(STRINGS)?,
                string_index: txn.open_multimap_table(STRING_INDEX)?,
                frames: txn.open_table(FRAMES)?,
                frame_index: txn.open_multimap_table(FRAME_INDEX)?,
                stacks: txn.open_table(STACKS)?,
                stack_index: txn.open_multimap_table(STACK_INDEX)?,
                labels: txn.open_table(LABELS)?,
                label_index: txn.open_multimap_table(LABEL_INDEX)?,
                next_id: &mut next_id,
                caches,
                staged: &mut staged,
                stats,
            };
            let host: Arc<str> = profile.host_name.as_str().into();
            let mut per_bucket: BTreeMap<u32, HashMap<(u64, u64), u64>> = BTreeMap::new();
            let mut used_files: HashSet<FileId> = HashSet::new();
            for (i, buckets) in per_sample {
                let s = &profile.samples[*i];
                let stack = d.stack(&s.frames)?;
                let labels = d.label_set(&host, profile.frequency_hz, &s.labels)?;
                for f in s.frames.iter() {
                    if let Some(id) = f.file_id {
                        used_files.insert(id);
                    }
                }
                for &(b, n) in buckets {
                    *per_bucket
                        .entry(b)
                        .or_default()
                        .entry((stack, labels))
                        .or_default() += n;
                }
            }
            drop(d);

            let mut samples = txn.open_table(SAMPLES)?;
            let mut rollups = txn.open_table(ROLLUPS)?;
            let first_rollup = meta.get(META_FIRST_ROLLUP)?.map_or(0, |v| v.value());
            let mut rollup: BTreeMap<u32, HashMap<(u64, u64), u64>> = BTreeMap::new();
            let mut added = 0u64;
            let mut new_entries = 0u64;
            for (b, counts) in per_bucket {
                let mut entries: Vec<Entry> =
                    counts.into_iter().map(|((s, l), c)| (s, l, c)).collect();
                entries.sort_unstable();
                added = entries.iter().fold(added, |a, e| a.saturating_add(e.2));
                stats.entries += entries.len();
                let r = b / ROLLUP_BUCKETS;
                if u64::from(r) >= first_rollup {
                    let m = rollup.entry(r).or_default();
                    for &(s, l, c) in &entries {
                        *m.entry((s, 0)).or_default() += c;
                        *m.entry((0, l)).or_default() += c;
                    }
                }
                let new = merge_into_bucket(&mut samples, b, entries)?;
                new_entries += new as u64;
                stats.new_entries += new;
            }
            for (r, counts) in rollup {
                let mut entries: Vec<Entry> =
                    counts.into_iter().map(|((s, l), c)| (s, l, c)).collect();
                entries.sort_unstable();
                merge_into_bucket(&mut rollups, r, entries)?;
            }

            let mut exes = txn.open_table(EXECUTABLES)?;
            for (id, e) in &profile.executables {
                if !used_files.contains(id) || caches.executables.contains(id) {
                    continue;
                }
                let key = id.hash128().to_u128();
                let rec = records::encode_executable(e);
                let same = exes.get(key)?.is_some_and(|v| v.value() == rec.as_slice());
                if !same {
                    exes.insert(key, rec.as_slice())?;
                }
                staged.executables.insert(*id);
            }

            let entries = meta.get(META_ENTRIES)?.map_or(0, |v| v.value());
            meta.insert(META_NEXT_ID, next_id)?;
            meta.insert(META_TOTAL_SAMPLES, total.saturating_add(added))?;
            meta.insert(META_ENTRIES, entries.saturating_add(new_entries))?;
        }
        txn.commit()?;
        caches.strings.extend(staged.strings);
        caches.frames.extend(staged.frames);
        caches.stacks.extend(staged.stacks);
        caches.labels.extend(staged.labels);
        caches.executables.extend(staged.executables);
        Ok(())
    }

    /// Sizes and counts of the store.
    pub fn stats(&self) -> Result<StoreStats> {
        let file_bytes = std::fs::metadata(&self.path)?.len();
        let db = self.db();
        let allocated_bytes = {
            let w = db.begin_write()?;
            let s = w.stats()?;
            w.abort()?;
            s.allocated_pages() * s.page_size() as u64
        };
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let samples = txn.open_table(SAMPLES)?;
        let time_bounds = match (samples.first()?, samples.last()?) {
            (Some((a, _)), Some((b, _))) => {
                let a = u64::from(split_chunk_key(a.value()).0);
                let b = u64::from(split_chunk_key(b.value()).0);
                Some(TimeRange {
                    start_unix_ns: a * BUCKET_NS,
                    end_unix_ns: (b + 1) * BUCKET_NS,
                })
            }
            _ => None,
        };
        Ok(StoreStats {
            file_bytes,
            allocated_bytes,
            total_samples: meta.get(META_TOTAL_SAMPLES)?.map_or(0, |v| v.value()),
            sample_entries: meta.get(META_ENTRIES)?.map_or(0, |v| v.value()),
            sample_chunks: samples.len()?,
            rollup_chunks: txn.open_table(ROLLUPS)?.len()?,
            stacks: txn.open_table(STACKS)?.len()?,
            frames: txn.open_table(FRAMES)?.len()?,
            label_sets: txn.open_table(LABELS)?.len()?,
            strings: txn.open_table(STRINGS)?.len()?,
            executables: txn.open_table(EXECUTABLES)?.len()?,
            time_bounds,
        })
    }

    /// The time covered by stored data (whole buckets), if any. The web UI
    /// uses it to offer a range that has data.
    pub fn time_bounds(&self) -> Result<Option<TimeRange>> {
        let db = self.db();
        let txn = db.begin_read()?;
        let samples = txn.open_table(SAMPLES)?;
        let first_live = self.first_live_bucket(self.clock.now_unix_ns());
        let first = samples
            .range(bucket_start_key(first_live.min(u64::from(u32::MAX)) as u32)..)?
            .next()
            .transpose()?;
        let last = samples.last()?;
        let bounds = match (first, last) {
            (Some((a, _)), Some((b, _))) => {
                let a = u64::from(split_chunk_key(a.value()).0);
                let b = u64::from(split_chunk_key(b.value()).0);
                Some(TimeRange {
                    start_unix_ns: a * BUCKET_NS,
                    end_unix_ns: (b + 1) * BUCKET_NS,
                })
            }
            _ => None,
        };
        Ok(bounds)
    }
}

/// Merges sorted `entries` into the last chunk of `bucket` in `table` (the
/// raw samples or the rollups), or starts a new chunk when that one is full.
/// Returns how many entries were new.
fn merge_into_bucket(
    table: &mut Table<'_, u64, &'static [u8]>,
    bucket: u32,
    entries: Vec<Entry>,
) -> Result<usize> {
    let last = table
        .range(chunk_key(bucket, 0)..=chunk_key(bucket, u32::MAX))?
        .next_back()
        .transpose()?
        .map(|(k, v)| (k.value(), v.value().to_vec()));
    let (key, merged, new) = match last {
        Some((k, bytes)) if bytes.len() < CHUNK_MERGE_BYTES => {
            let mut old = Vec::new();
            decode_chunk(&bytes, &mut old)?;
            let merged = merge_entries(&old, &entries);
            let new = merged.len() - old.len();
            (k, merged, new)
        }
        Some((k, _)) => {
            if split_chunk_key(k).1 == u32::MAX {
                return Err(StoreError::Invalid(format!(
                    "bucket {bucket} has no room for another chunk"
                )));
            }
            let n = entries.len();
            (k + 1, entries, n)
        }
        None => {
            let n = entries.len();
            (chunk_key(bucket, 0), entries, n)
        }
    };
    table.insert(key, encode_chunk(&merged).as_slice())?;
    Ok(new)
}

/// Opens the redb file, verifying it.
///
/// redb trusts a file it did not see damaged: a page scribbled over by a
/// disk or another program can make it panic (`unreachable!`) on first
/// read. The integrity check (checksums of every committed page) turns that
/// into [`StoreError::Corrupt`] at open, for the price of reading the file
/// once at start-up; a panic inside redb's open is caught as well.
fn open_database(path: &Path) -> Result<Database> {
    let path = path.to_path_buf();
    let opened = std::panic::catch_unwind(move || {
        Database::builder()
            // The file is the source of truth; the page cache only needs to
            // hold the hot dictionaries and the newest buckets.
            .set_cache_size(64 << 20)
            .set_check_integrity_on_open(true)
            .create(&path)
    });
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(m)))) => {
            Err(StoreError::Corrupt(m))
        }
        Ok(Err(e)) => Err(e.into()),
        Err(panic) => Err(StoreError::Corrupt(format!(
            "the database file could not be read: {}",
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "redb panicked".into())
        ))),
    }
}

/// Checks the model invariants ingest relies on.
fn validate(p: &Profile) -> Result<()> {
    for (i, s) in p.samples.iter().enumerate() {
        if !s.timestamps_unix_ns.is_empty() && s.timestamps_unix_ns.len() as u64 != s.count {
            return Err(StoreError::Invalid(format!(
                "sample {i} has count {} but {} timestamps",
                s.count,
                s.timestamps_unix_ns.len()
            )));
        }
    }
    Ok(())
}

/// The dictionary tables of one write transaction plus the caches.
struct Dicts<'t, 'c> {
    strings: Table<'t, u64, &'static [u8]>,
    string_index: MultimapTable<'t, u64, u64>,
    frames: Table<'t, u64, &'static [u8]>,
    frame_index: MultimapTable<'t, u64, u64>,
    stacks: Table<'t, u64, &'static [u8]>,
    stack_index: MultimapTable<'t, u64, u64>,
    labels: Table<'t, u64, &'static [u8]>,
    label_index: MultimapTable<'t, u64, u64>,
    next_id: &'c mut u64,
    caches: &'c WriterCaches,
    staged: &'c mut WriterCaches,
    stats: &'c mut IngestStats,
}

/// Finds `rec` in a dictionary through its hash index or adds it under a
/// fresh id. Returns the id and whether it is new.
fn intern(
    table: &mut Table<'_, u64, &'static [u8]>,
    index: &mut MultimapTable<'_, u64, u64>,
    next_id: &mut u64,
    rec: &[u8],
) -> Result<(u64, bool)> {
    let h = fnv1a64(rec);
    for id in index.get(h)? {
        let id = id?.value();
        if table.get(id)?.is_some_and(|v| v.value() == rec) {
            return Ok((id, false));
        }
    }
    let id = *next_id;
    *next_id = id
        .checked_add(1)
        .ok_or_else(|| StoreError::Corrupt("the record id counter overflowed".into()))?;
    table.insert(id, rec)?;
    index.insert(h, id)?;
    Ok((id, true))
}

impl Dicts<'_, '_> {
    fn string(&mut self, s: &Arc<str>) -> Result<u64> {
        if let Some(&id) = self.caches.strings.get(s).or(self.staged.strings.get(s)) {
            return Ok(id);
        }
        let (id, _) = intern(
            &mut self.strings,
            &mut self.string_index,
            self.next_id,
            s.as_bytes(),
        )?;
        self.staged.strings.insert(s.clone(), id);
        Ok(id)
    }

    fn opt_string(&mut self, s: &Option<Arc<str>>) -> Result<Option<u64>> {
        s.as_ref().map(|s| self.string(s)).transpose()
    }

    fn frame(&mut self, f: &Frame) -> Result<u64> {
        if let Some(&id) = self.caches.frames.get(f).or(self.staged.frames.get(f)) {
            return Ok(id);
        }
        let strings = records::FrameStrings {
            function: self.opt_string(&f.function_name)?,
            source_file: self.opt_string(&f.source_file)?,
        };
        let rec = records::encode_frame(f, strings);
        let (id, new) = intern(&mut self.frames, &mut self.frame_index, self.next_id, &rec)?;
        self.stats.new_frames += usize::from(new);
        self.staged.frames.insert(f.clone(), id);
        Ok(id)
    }

    fn stack(&mut self, frames: &[Frame]) -> Result<u64> {
        let ids = frames
            .iter()
            .map(|f| self.frame(f))
            .collect::<Result<Vec<u64>>>()?;
        if let Some(&id) = self
            .caches
            .stacks
            .get(&ids)
            .or(self.staged.stacks.get(&ids))
        {
            return Ok(id);
        }
        let rec = records::encode_stack(&ids);
        let (id, new) = intern(&mut self.stacks, &mut self.stack_index, self.next_id, &rec)?;
        self.stats.new_stacks += usize::from(new);
        self.staged.stacks.insert(ids, id);
        Ok(id)
    }

    fn label_set(&mut self, host: &Arc<str>, freq: u64, l: &SampleLabels) -> Result<u64> {
        let key = (host.clone(), freq, l.clone());
        if let Some(&id) = self
            .caches
            .labels
            .get(&key)
            .or(self.staged.labels.get(&key))
        {
            return Ok(id);
        }
        let strings = records::LabelStrings {
            host: self.string(host)?,
            process_name: self.string(&l.process_name)?,
            thread_name: self.string(&l.thread_name)?,
            container_id: self.opt_string(&l.container_id)?,
            executable_path: self.opt_string(&l.executable_path)?,
        };
        let rec = records::encode_labels(freq, l, strings);
        let (id, new) = intern(&mut self.labels, &mut self.label_index, self.next_id, &rec)?;
        self.stats.new_label_sets += usize::from(new);
        self.staged.labels.insert(key, id);
        Ok(id)
    }
}

#[cfg(test)]
mod tests;
