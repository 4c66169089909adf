//! The query layer: merged profiles, top functions, diffs, flame graphs and
//! the values the filters can take.
//!
//! Every query is one redb read transaction (a consistent snapshot, running
//! alongside ingest) over the sample rows of the buckets in range. Rows are
//! filtered by label set and stack, with each decision cached per id: a
//! million samples share a few thousand stacks and label sets, so a query
//! decodes each of those once.

use crate::codec::{bucket_start_key, decode_chunk, Entry};
use crate::flame::{class_name, frame_name, names, parse_class, FlameGraph, FrameClass, CLASSES};
use crate::records::{self, LabelSet};
use crate::{
    Result, Store, StoreError, TimeRange, EXECUTABLES, FRAMES, LABELS, META, META_FIRST_ROLLUP,
    ROLLUPS, ROLLUP_BUCKETS, SAMPLES, STACKS, STRINGS,
};
use libpf::{FileId, Frame, FrameKind};
use profile::{Executable, Profile, Sample};
use redb::{ReadOnlyTable, ReadTransaction, ReadableDatabase};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

/// Which frames a [`Filter`] asks for: a sample is kept when its stack has
/// at least one matching frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameTypeFilter {
    /// A color class: kernel, native, interpreted or error.
    Class(FrameClass),
    /// One frame kind (`cpython`, `jvm`, `v8js`, …, or the spec names
    /// `python`, `hotspot`, `v8`, …).
    Kind(FrameKind),
}

impl FrameTypeFilter {
    fn matches(self, f: &Frame) -> bool {
        match self {
            FrameTypeFilter::Class(c) => FrameClass::of(f) == c,
            FrameTypeFilter::Kind(k) => f.frame_type.kind() == Some(k),
        }
    }

    /// The string form [`FromStr`] accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameTypeFilter::Class(c) => class_name(c),
            FrameTypeFilter::Kind(k) => k.semconv(),
        }
    }
}

impl FromStr for FrameTypeFilter {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        if let Some(c) = parse_class(s) {
            return Ok(FrameTypeFilter::Class(c));
        }
        FrameKind::ALL
            .into_iter()
            .find(|k| k.semconv() == s || k.name() == s)
            .map(FrameTypeFilter::Kind)
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "unknown frame type {s:?} (kernel, native, interpreted, error, or a kind such as cpython)"
                ))
            })
    }
}

/// Which samples a query looks at. Every field that is set must match
/// (exact string or number comparison).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub host: Option<String>,
    /// Container id.
    pub container: Option<String>,
    pub process_name: Option<String>,
    pub pid: Option<u32>,
    /// Thread name.
    pub thread: Option<String>,
    /// Thread id.
    pub tid: Option<u32>,
    pub frame_type: Option<FrameTypeFilter>,
}

impl Filter {
    /// Whether any condition is on labels (everything but the frame type):
    /// such queries cannot use the rollups, which drop labels.
    pub fn has_label_conditions(&self) -> bool {
        self.host.is_some()
            || self.container.is_some()
            || self.process_name.is_some()
            || self.pid.is_some()
            || self.thread.is_some()
            || self.tid.is_some()
    }

    fn matches_labels(&self, l: &LabelSet) -> bool {
        fn eq(want: &Option<String>, have: &str) -> bool {
            want.as_deref().is_none_or(|w| w == have)
        }
        eq(&self.host, &l.host)
            && self
                .container
                .as_deref()
                .is_none_or(|w| l.labels.container_id.as_deref() == Some(w))
            && eq(&self.process_name, &l.labels.process_name)
            && self.pid.is_none_or(|p| p == l.labels.pid)
            && eq(&self.thread, &l.labels.thread_name)
            && self.tid.is_none_or(|t| t == l.labels.tid)
    }
}

/// How [`Store::top_functions_by`] ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TopBy {
    /// Samples where the function is the leaf (on-CPU in it).
    #[default]
    SelfCount,
    /// Samples where the function is anywhere on the stack.
    Total,
}

/// One row of the top-functions table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionStat {
    pub name: Arc<str>,
    pub class: FrameClass,
    /// Samples with the function as the leaf frame.
    pub self_count: u64,
    /// Samples with the function anywhere on the stack (counted once per
    /// sample, even when recursive).
    pub total: u64,
}

/// One stack in a [`Diff`] with its counts in both ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffStack {
    /// Leaf first.
    pub frames: Arc<[Frame]>,
    pub a: u64,
    pub b: u64,
}

/// One function in a [`Diff`].
#[derive(Clone, Debug, PartialEq)]
pub struct DiffFunction {
    pub name: Arc<str>,
    pub class: FrameClass,
    pub a_self: u64,
    pub b_self: u64,
    pub a_total: u64,
    pub b_total: u64,
    /// Change of the self share: `b_self/b_samples - a_self/a_samples`.
    pub self_delta: f64,
    /// Change of the total share.
    pub total_delta: f64,
}

/// Two ranges compared. Counts are raw; the shares (`count / total of its
/// range`) are what compare fairly when the ranges differ in length or load,
/// hence the normalized deltas.
#[derive(Clone, Debug, PartialEq)]
pub struct Diff {
    pub a_total: u64,
    pub b_total: u64,
    /// Every stack seen in either range, most changed share first.
    pub stacks: Vec<DiffStack>,
    /// Every function seen in either range, largest |total_delta| first.
    pub functions: Vec<DiffFunction>,
    pub executables: BTreeMap<FileId, Executable>,
}

impl Diff {
    /// Share of `count` in a range of `total` samples (0 when empty).
    pub fn share(count: u64, total: u64) -> f64 {
        if total == 0 {
            0.0
        } else {
            count as f64 / total as f64
        }
    }

    /// Normalized change of one stack: its share in b minus its share in a.
    pub fn stack_delta(&self, s: &DiffStack) -> f64 {
        Self::share(s.b, self.b_total) - Self::share(s.a, self.a_total)
    }

    /// A flame graph of both ranges: `total`/`self_count` are range b,
    /// `base_total`/`base_self` range a.
    pub fn flamegraph(&self) -> FlameGraph {
        let mut g = FlameGraph::new();
        let names = names(self.executables.clone());
        for s in &self.stacks {
            g.add_stack(&s.frames, &names, s.b, s.a);
        }
        g.sort();
        g
    }
}

/// Values seen in a time range, for the filter drop-downs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownValues {
    pub hosts: Vec<String>,
    pub containers: Vec<String>,
    pub processes: Vec<String>,
    /// (pid, process name)
    pub pids: Vec<(u32, String)>,
    pub threads: Vec<String>,
    /// Frame type filter strings present: classes first, then kinds.
    pub frame_types: Vec<String>,
}

/// Decoding caches of one read transaction.
pub(crate) struct View {
    dict: Dict,
    samples: ReadOnlyTable<u64, &'static [u8]>,
    rollups: ReadOnlyTable<u64, &'static [u8]>,
    first_rollup: u64,
}

/// The dictionary tables of a snapshot with their decoding caches.
struct Dict {
    strings: ReadOnlyTable<u64, &'static [u8]>,
    frames: ReadOnlyTable<u64, &'static [u8]>,
    stacks: ReadOnlyTable<u64, &'static [u8]>,
    labels: ReadOnlyTable<u64, &'static [u8]>,
    executables: ReadOnlyTable<u128, &'static [u8]>,
    string_cache: HashMap<u64, Arc<str>>,
    frame_cache: HashMap<u64, Frame>,
    stack_cache: HashMap<u64, Arc<[Frame]>>,
    label_cache: HashMap<u64, Arc<LabelSet>>,
}

fn missing(what: &str, id: u64) -> StoreError {
    StoreError::Corrupt(format!("{what} {id} is referenced but missing"))
}

impl View {
    pub(crate) fn new(txn: &ReadTransaction) -> Result<View> {
        Ok(View {
            dict: Dict {
                strings: txn.open_table(STRINGS)?,
                frames: txn.open_table(FRAMES)?,
                stacks: txn.open_table(STACKS)?,
                labels: txn.open_table(LABELS)?,
                executables: txn.open_table(EXECUTABLES)?,
                string_cache: HashMap::new(),
                frame_cache: HashMap::new(),
                stack_cache: HashMap::new(),
                label_cache: HashMap::new(),
            },
            samples: txn.open_table(SAMPLES)?,
            rollups: txn.open_table(ROLLUPS)?,
            first_rollup: txn
                .open_table(META)?
                .get(META_FIRST_ROLLUP)?
                .map_or(0, |v| v.value()),
        })
    }

    pub(crate) fn stack(&mut self, id: u64) -> Result<Arc<[Frame]>> {
        self.dict.stack(id)
    }

    pub(crate) fn labels(&mut self, id: u64) -> Result<Arc<LabelSet>> {
        self.dict.labels(id)
    }

    fn executables(&self, files: &BTreeSet<FileId>) -> Result<BTreeMap<FileId, Executable>> {
        self.dict.executables(files)
    }
}

impl Dict {
    fn string(
        strings: &ReadOnlyTable<u64, &'static [u8]>,
        cache: &mut HashMap<u64, Arc<str>>,
        id: u64,
    ) -> Result<Arc<str>> {
        if let Some(s) = cache.get(&id) {
            return Ok(s.clone());
        }
        let v = strings.get(id)?.ok_or_else(|| missing("string", id))?;
        let s: Arc<str> = std::str::from_utf8(v.value())
            .map_err(|_| StoreError::Corrupt(format!("string {id} is not UTF-8")))?
            .into();
        cache.insert(id, s.clone());
        Ok(s)
    }

    fn frame(&mut self, id: u64) -> Result<Frame> {
        if let Some(f) = self.frame_cache.get(&id) {
            return Ok(f.clone());
        }
        let v = self.frames.get(id)?.ok_or_else(|| missing("frame", id))?;
        let (strings, cache) = (&self.strings, &mut self.string_cache);
        let f = records::decode_frame(v.value(), |s| Self::string(strings, cache, s))?;
        self.frame_cache.insert(id, f.clone());
        Ok(f)
    }

    pub(crate) fn stack(&mut self, id: u64) -> Result<Arc<[Frame]>> {
        if let Some(s) = self.stack_cache.get(&id) {
            return Ok(s.clone());
        }
        let ids = {
            let v = self.stacks.get(id)?.ok_or_else(|| missing("stack", id))?;
            records::decode_stack(v.value())?
        };
        let frames: Arc<[Frame]> = ids
            .into_iter()
            .map(|f| self.frame(f))
            .collect::<Result<Vec<_>>>()?
            .into();
        self.stack_cache.insert(id, frames.clone());
        Ok(frames)
    }

    pub(crate) fn labels(&mut self, id: u64) -> Result<Arc<LabelSet>> {
        if let Some(l) = self.label_cache.get(&id) {
            return Ok(l.clone());
        }
        let v = self
            .labels
            .get(id)?
            .ok_or_else(|| missing("label set", id))?;
        let (strings, cache) = (&self.strings, &mut self.string_cache);
        let l = Arc::new(records::decode_labels(v.value(), |s| {
            Self::string(strings, cache, s)
        })?);
        self.label_cache.insert(id, l.clone());
        Ok(l)
    }

    /// Executables of the given files (those the store knows).
    fn executables(&self, files: &BTreeSet<FileId>) -> Result<BTreeMap<FileId, Executable>> {
        let mut out = BTreeMap::new();
        for &id in files {
            if let Some(v) = self.executables.get(id.hash128().to_u128())? {
                out.insert(id, records::decode_executable(id, v.value())?);
            }
        }
        Ok(out)
    }
}

impl View {
    /// Where to read buckets `[first, end)`: raw bucket ranges and rollup
    /// ranges (in rollup numbers), see [`ROLLUP_BUCKETS`].
    pub(crate) fn plan(&self, buckets: (u64, u64), rollups_ok: bool) -> Vec<Segment> {
        let (first, end) = buckets;
        if first >= end {
            return Vec::new();
        }
        let per = u64::from(ROLLUP_BUCKETS);
        let r_lo = first.div_ceil(per).max(self.first_rollup);
        let r_hi = end / per;
        if !rollups_ok || r_lo >= r_hi {
            return vec![Segment::Raw(first, end)];
        }
        let mut plan = Vec::with_capacity(3);
        if first < r_lo * per {
            plan.push(Segment::Raw(first, r_lo * per));
        }
        plan.push(Segment::Rollup(r_lo, r_hi));
        if r_hi * per < end {
            plan.push(Segment::Raw(r_hi * per, end));
        }
        plan
    }

    /// Calls `f(chunk entries, is rollup)` for every chunk of the plan.
    fn chunks(
        samples: &ReadOnlyTable<u64, &'static [u8]>,
        rollups: &ReadOnlyTable<u64, &'static [u8]>,
        plan: &[Segment],
        mut f: impl FnMut(&[Entry], bool) -> Result<()>,
    ) -> Result<()> {
        let mut entries: Vec<Entry> = Vec::new();
        for seg in plan {
            let (table, first, end, rollup) = match *seg {
                Segment::Raw(a, b) => (samples, a, b, false),
                Segment::Rollup(a, b) => (rollups, a, b, true),
            };
            if first >= end || first > u64::from(u32::MAX) {
                continue;
            }
            let lo = bucket_start_key(first as u32);
            let rows = if end > u64::from(u32::MAX) {
                table.range(lo..)?
            } else {
                table.range(lo..bucket_start_key(end as u32))?
            };
            for row in rows {
                let (_, v) = row?;
                entries.clear();
                decode_chunk(v.value(), &mut entries)?;
                f(&entries, rollup)?;
            }
        }
        Ok(())
    }

    /// Calls `f(stack id, label-set id, count)` for every entry in `buckets`
    /// (already clamped to live buckets) that passes `filter`. With
    /// `need_labels` false and no label conditions the rollups may be used,
    /// and then the label-set id passed is 0.
    fn scan(
        &mut self,
        buckets: (u64, u64),
        filter: &Filter,
        need_labels: bool,
        mut f: impl FnMut(u64, u64, u64),
    ) -> Result<()> {
        let plan = self.plan(buckets, !need_labels && !filter.has_label_conditions());
        let mut label_ok: HashMap<u64, bool> = HashMap::new();
        let mut stack_ok: HashMap<u64, bool> = HashMap::new();
        let dict = &mut self.dict;
        Self::chunks(&self.samples, &self.rollups, &plan, |entries, rollup| {
            for &(stack, labels, count) in entries {
                if rollup {
                    if stack == 0 {
                        continue; // a per-label-set total
                    }
                } else {
                    let ok = match label_ok.get(&labels) {
                        Some(&ok) => ok,
                        None => {
                            let l = dict.labels(labels)?;
                            let ok = filter.matches_labels(&l);
                            label_ok.insert(labels, ok);
                            ok
                        }
                    };
                    if !ok {
                        continue;
                    }
                }
                if let Some(ft) = filter.frame_type {
                    let ok = match stack_ok.get(&stack) {
                        Some(&ok) => ok,
                        None => {
                            let s = dict.stack(stack)?;
                            let ok = s.iter().any(|fr| ft.matches(fr));
                            stack_ok.insert(stack, ok);
                            ok
                        }
                    };
                    if !ok {
                        continue;
                    }
                }
                f(stack, if rollup { 0 } else { labels }, count);
            }
            Ok(())
        })
    }

    /// Stack ids and label-set ids present in `buckets` (rollups allowed).
    fn ids(&self, buckets: (u64, u64)) -> Result<(HashSet<u64>, HashSet<u64>)> {
        let plan = self.plan(buckets, true);
        let mut stacks = HashSet::new();
        let mut labels = HashSet::new();
        Self::chunks(&self.samples, &self.rollups, &plan, |entries, rollup| {
            for &(s, l, _) in entries {
                if !rollup || s != 0 {
                    stacks.insert(s);
                }
                if !rollup || s == 0 {
                    labels.insert(l);
                }
            }
            Ok(())
        })?;
        Ok((stacks, labels))
    }
}

/// A part of a query's range: raw buckets or rollups, `[first, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    Raw(u64, u64),
    Rollup(u64, u64),
}

/// (self, total) samples per (function name, class).
type FunctionCounts = HashMap<(Arc<str>, FrameClass), (u64, u64)>;

/// Per-function self/total from stack counts.
fn function_stats(
    view: &mut View,
    stacks: &HashMap<u64, u64>,
    names: &Profile,
) -> Result<FunctionCounts> {
    let mut out: FunctionCounts = HashMap::new();
    let mut seen: HashSet<(Arc<str>, FrameClass)> = HashSet::new();
    for (&id, &count) in stacks {
        let frames = view.stack(id)?;
        seen.clear();
        for (i, f) in frames.iter().enumerate() {
            let key = (frame_name(f, names), FrameClass::of(f));
            let e = out.entry(key.clone()).or_default();
            if i == 0 {
                e.0 += count;
            }
            if seen.insert(key) {
                e.1 += count;
            }
        }
    }
    Ok(out)
}

impl Store {
    /// Runs `f` on a snapshot view of the store.
    pub(crate) fn with_view<T>(&self, f: impl FnOnce(&mut View) -> Result<T>) -> Result<T> {
        let db = self.db();
        let txn = db.begin_read()?;
        let mut view = View::new(&txn)?;
        f(&mut view)
    }

    /// Bucket numbers of `range`, without expired buckets.
    pub(crate) fn live_buckets(&self, range: TimeRange) -> (u64, u64) {
        let (first, end) = range.buckets();
        let first = first.max(self.first_live_bucket(self.clock.now_unix_ns()));
        (first.min(u64::from(u32::MAX) + 1), end)
    }

    fn stack_counts(
        &self,
        view: &mut View,
        range: TimeRange,
        filter: &Filter,
    ) -> Result<HashMap<u64, u64>> {
        let mut counts: HashMap<u64, u64> = HashMap::new();
        view.scan(self.live_buckets(range), filter, false, |s, _, c| {
            *counts.entry(s).or_default() += c
        })?;
        Ok(counts)
    }

    fn files_of(view: &mut View, stacks: impl Iterator<Item = u64>) -> Result<BTreeSet<FileId>> {
        let mut files = BTreeSet::new();
        for s in stacks {
            files.extend(view.stack(s)?.iter().filter_map(|f| f.file_id));
        }
        Ok(files)
    }

    /// All samples in `range` that pass `filter`, merged into one profile:
    /// one [`Sample`] per distinct (stack, labels), counts summed over the
    /// buckets. The profile spans the requested range; `host_name` is the
    /// host when all samples come from one, else empty; `frequency_hz` is
    /// the one most samples were taken at. Per-sample timestamps are not
    /// kept by the store (see the crate docs), so they are empty.
    pub fn merged(&self, range: TimeRange, filter: &Filter) -> Result<Profile> {
        self.with_view(|view| {
            let mut rows: HashMap<(u64, u64), u64> = HashMap::new();
            view.scan(self.live_buckets(range), filter, true, |s, l, c| {
                *rows.entry((s, l)).or_default() += c
            })?;
            let mut keys: Vec<((u64, u64), u64)> = rows.into_iter().collect();
            keys.sort_unstable();
            let mut samples = Vec::with_capacity(keys.len());
            let mut hosts: BTreeSet<Arc<str>> = BTreeSet::new();
            let mut freqs: HashMap<u64, u64> = HashMap::new();
            for ((s, l), count) in &keys {
                let frames = view.stack(*s)?;
                let labels = view.labels(*l)?;
                hosts.insert(labels.host.clone());
                *freqs.entry(labels.frequency_hz).or_default() += count;
                samples.push(Sample {
                    frames,
                    labels: labels.labels.clone(),
                    count: *count,
                    timestamps_unix_ns: Vec::new(),
                });
            }
            let files = Self::files_of(view, keys.iter().map(|((s, _), _)| *s))?;
            let frequency_hz = freqs
                .into_iter()
                .max_by_key(|&(f, n)| (n, f))
                .map_or(0, |(f, _)| f);
            Ok(Profile {
                start_unix_ns: range.start_unix_ns,
                duration_ns: range.duration_ns(),
                frequency_hz,
                host_name: if hosts.len() == 1 {
                    hosts
                        .into_iter()
                        .next()
                        .map(|h| h.to_string())
                        .unwrap_or_default()
                } else {
                    String::new()
                },
                samples,
                executables: view.executables(&files)?,
            })
        })
    }

    /// Number of samples in `range` under `filter`.
    pub fn count(&self, range: TimeRange, filter: &Filter) -> Result<u64> {
        self.with_view(|view| {
            let mut n = 0u64;
            view.scan(self.live_buckets(range), filter, false, |_, _, c| n += c)?;
            Ok(n)
        })
    }

    /// The flame graph of `range` under `filter`.
    pub fn flamegraph(&self, range: TimeRange, filter: &Filter) -> Result<FlameGraph> {
        self.with_view(|view| {
            let counts = self.stack_counts(view, range, filter)?;
            let files = Self::files_of(view, counts.keys().copied())?;
            let names = names(view.executables(&files)?);
            let mut g = FlameGraph::new();
            let mut ids: Vec<(&u64, &u64)> = counts.iter().collect();
            ids.sort_unstable();
            for (&s, &c) in ids {
                let frames = view.stack(s)?;
                g.add_stack(&frames, &names, c, 0);
            }
            g.sort();
            Ok(g)
        })
    }

    /// The `n` functions with the most self samples (see [`TopBy`]).
    pub fn top_functions(
        &self,
        range: TimeRange,
        filter: &Filter,
        n: usize,
    ) -> Result<Vec<FunctionStat>> {
        self.top_functions_by(range, filter, n, TopBy::SelfCount)
    }

    /// The `n` functions ranked by self or total samples; ties by name.
    pub fn top_functions_by(
        &self,
        range: TimeRange,
        filter: &Filter,
        n: usize,
        by: TopBy,
    ) -> Result<Vec<FunctionStat>> {
        self.with_view(|view| {
            let counts = self.stack_counts(view, range, filter)?;
            let files = Self::files_of(view, counts.keys().copied())?;
            let names = names(view.executables(&files)?);
            let stats = function_stats(view, &counts, &names)?;
            let mut out: Vec<FunctionStat> = stats
                .into_iter()
                .map(|((name, class), (self_count, total))| FunctionStat {
                    name,
                    class,
                    self_count,
                    total,
                })
                .collect();
            out.sort_by(|x, y| {
                let (kx, ky) = match by {
                    TopBy::SelfCount => ((x.self_count, x.total), (y.self_count, y.total)),
                    TopBy::Total => ((x.total, x.self_count), (y.total, y.self_count)),
                };
                ky.cmp(&kx).then_with(|| x.name.cmp(&y.name))
            });
            out.truncate(n);
            Ok(out)
        })
    }

    /// Compares two ranges under one filter, per stack and per function.
    pub fn diff(&self, a: TimeRange, b: TimeRange, filter: &Filter) -> Result<Diff> {
        self.with_view(|view| {
            let ca = self.stack_counts(view, a, filter)?;
            let cb = self.stack_counts(view, b, filter)?;
            let a_total: u64 = ca.values().sum();
            let b_total: u64 = cb.values().sum();
            let ids: BTreeSet<u64> = ca.keys().chain(cb.keys()).copied().collect();
            let files = Self::files_of(view, ids.iter().copied())?;
            let executables = view.executables(&files)?;
            let mut stacks = Vec::with_capacity(ids.len());
            for id in ids {
                stacks.push(DiffStack {
                    frames: view.stack(id)?,
                    a: ca.get(&id).copied().unwrap_or(0),
                    b: cb.get(&id).copied().unwrap_or(0),
                });
            }
            let ctx = names(executables);
            let fa = function_stats(view, &ca, &ctx)?;
            let fb = function_stats(view, &cb, &ctx)?;
            let executables = ctx.executables;
            let keys: BTreeSet<&(Arc<str>, FrameClass)> = fa.keys().chain(fb.keys()).collect();
            let mut functions: Vec<DiffFunction> = keys
                .into_iter()
                .map(|k| {
                    let (a_self, a_tot) = fa.get(k).copied().unwrap_or_default();
                    let (b_self, b_tot) = fb.get(k).copied().unwrap_or_default();
                    DiffFunction {
                        name: k.0.clone(),
                        class: k.1,
                        a_self,
                        b_self,
                        a_total: a_tot,
                        b_total: b_tot,
                        self_delta: Diff::share(b_self, b_total) - Diff::share(a_self, a_total),
                        total_delta: Diff::share(b_tot, b_total) - Diff::share(a_tot, a_total),
                    }
                })
                .collect();
            functions.sort_by(|x, y| {
                y.total_delta
                    .abs()
                    .total_cmp(&x.total_delta.abs())
                    .then_with(|| x.name.cmp(&y.name))
            });
            let mut diff = Diff {
                a_total,
                b_total,
                stacks,
                functions,
                executables,
            };
            let mut order: Vec<(f64, usize)> = diff
                .stacks
                .iter()
                .enumerate()
                .map(|(i, s)| (diff.stack_delta(s).abs(), i))
                .collect();
            order.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
            let mut sorted: Vec<Option<DiffStack>> = diff.stacks.drain(..).map(Some).collect();
            diff.stacks = order
                .into_iter()
                .filter_map(|(_, i)| sorted[i].take())
                .collect();
            Ok(diff)
        })
    }

    /// The values filters can take in `range` (all filters ignored).
    pub fn known_values(&self, range: TimeRange) -> Result<KnownValues> {
        self.with_view(|view| {
            let (stack_ids, label_ids) = view.ids(self.live_buckets(range))?;
            let mut hosts = BTreeSet::new();
            let mut containers = BTreeSet::new();
            let mut processes = BTreeSet::new();
            let mut pids = BTreeSet::new();
            let mut threads = BTreeSet::new();
            for l in label_ids {
                let l = view.labels(l)?;
                hosts.insert(l.host.to_string());
                if let Some(c) = &l.labels.container_id {
                    containers.insert(c.to_string());
                }
                processes.insert(l.labels.process_name.to_string());
                pids.insert((l.labels.pid, l.labels.process_name.to_string()));
                threads.insert(l.labels.thread_name.to_string());
            }
            let mut classes = BTreeSet::new();
            let mut kinds = BTreeSet::new();
            for s in stack_ids {
                for f in view.stack(s)?.iter() {
                    classes.insert(FrameClass::of(f));
                    if let Some(k) = f.frame_type.kind() {
                        kinds.insert(k.semconv());
                    }
                }
            }
            let mut frame_types: Vec<String> = CLASSES
                .into_iter()
                .filter(|c| classes.contains(c))
                .map(|c| class_name(c).to_string())
                .collect();
            for k in kinds {
                if !frame_types.iter().any(|t| t == k) {
                    frame_types.push(k.to_string());
                }
            }
            Ok(KnownValues {
                hosts: hosts.into_iter().collect(),
                containers: containers.into_iter().collect(),
                processes: processes.into_iter().collect(),
                pids: pids.into_iter().collect(),
                threads: threads.into_iter().collect(),
                frame_types,
            })
        })
    }
}
