//! OTLP profiles → Elasticsearch documents. Pure: no I/O, no clock, no
//! global randomness, so the same request and seed always give the same
//! documents (the spool relies on this to resend identical `_id`s after a
//! crash, and Elasticsearch then answers 409 instead of double counting).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use base64::Engine as _;
use libpf::{AddressOrLineno, FileId, FrameType, TraceHasher};
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development::{
    Location, Mapping, Profile, ProfilesDictionary,
};
use serde_json::{json, Map, Value};

use crate::time::{rfc3339_nanos, start_of_day, start_of_week};

/// Which index layout to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Schema {
    /// Data streams `profiling-*.otel-default` (Elasticsearch ≥ 9.6, Kibana's default).
    #[default]
    Otel,
    /// The legacy plain indices `profiling-*` for older clusters.
    Ecs,
}

/// Number of downsampled event levels (`5pow01` … `5pow11`).
pub const DOWNSAMPLE_LEVELS: usize = 11;
/// ECS schema version written into ECS documents.
pub const ECS_VERSION: &str = "1.12.0";

/// What kind of document (decides LRU dedup: everything but events is written once).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DocKind {
    Event,
    Stacktrace,
    Stackframe,
    Executable,
    Host,
    /// ECS symbolization queues (`profiling-sq-*`).
    SymbolizationQueue,
}

impl DocKind {
    /// Whether the document is content-addressed and therefore written once
    /// (skipped when its id is in the LRU of ids already written).
    pub fn write_once(self) -> bool {
        !matches!(self, DocKind::Event)
    }
}

/// Bulk action of a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `create` with explicit `_id` (the only action data streams accept).
    Create,
    /// `update` whose body is a scripted upsert (ECS executables only).
    Update,
}

/// One bulk item: the action line is built from `op`, `index` and `id` (an
/// empty `id` means none: Elasticsearch generates it); `source` is the JSON of
/// the second line.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub kind: DocKind,
    pub op: Op,
    pub index: &'static str,
    pub id: String,
    pub source: String,
}

impl Document {
    /// Appends the two NDJSON lines of this item to `out`.
    pub fn write_ndjson(&self, out: &mut Vec<u8>) {
        let action = match self.op {
            Op::Create => "create",
            Op::Update => "update",
        };
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(action.as_bytes());
        out.extend_from_slice(b"\":{\"_index\":");
        out.extend_from_slice(json_string(self.index).as_bytes());
        if !self.id.is_empty() {
            out.extend_from_slice(b",\"_id\":");
            out.extend_from_slice(json_string(&self.id).as_bytes());
        }
        out.extend_from_slice(b"}}\n");
        out.extend_from_slice(self.source.as_bytes());
        out.push(b'\n');
    }

    /// Size of the two NDJSON lines (used to bound request bodies).
    pub fn ndjson_len(&self) -> usize {
        40 + self.index.len() + self.id.len() + self.source.len()
    }
}

fn json_string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// Options of one encoding run.
#[derive(Clone, Debug)]
pub struct EncodeOptions {
    pub schema: Schema,
    /// Seeds the downsampling generator and the event `_id`s. The spool stores a
    /// random seed with each request so a resend yields the same documents.
    pub seed: u64,
    /// Upper bound on events (documents of `profiling-events-all`) per request:
    /// a sample value of 10^12 must give a clear error, not exhaust memory.
    pub max_events: u64,
    /// Give events an explicit `_id` (seed ‖ ordinal) so resends are
    /// idempotent. Off: events are created without `_id` (Elasticsearch
    /// generates one; a resend after a crash may then duplicate events) — for
    /// clusters whose event streams refuse caller-chosen ids.
    pub event_ids: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            schema: Schema::Otel,
            seed: 0,
            max_events: 2_000_000,
            event_ids: true,
        }
    }
}

/// Why one profile was rejected. Each names the offending value so the
/// collector can report it upstream (partial success).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileError {
    /// Only `samples`/`count` with period `cpu`/`nanoseconds` is a CPU profile.
    NotCpu {
        sample_type: String,
        period_type: String,
    },
    /// `sampling_frequency` = 1e9 / period needs a positive period.
    NonPositivePeriod(i64),
    /// Every location must carry `profile.frame.type` (Elastic rejects the profile otherwise).
    MissingFrameType {
        location: usize,
    },
    UnknownFrameType {
        location: usize,
        value: String,
    },
    /// A table index that points outside its table.
    IndexOutOfRange {
        table: &'static str,
        index: i64,
    },
    /// `process.executable.build_id.htlhash` that is not 32 hex characters.
    BadHtlhash {
        mapping: usize,
        value: String,
    },
    TooManyEvents {
        limit: u64,
    },
    /// The request has profiles but no dictionary.
    NoDictionary,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProfileError::NotCpu {
                sample_type,
                period_type,
            } => write!(
                f,
                "not a CPU profile: sample type {sample_type}, period type {period_type} \
                 (only samples/count with period cpu/nanoseconds is accepted)"
            ),
            ProfileError::NonPositivePeriod(p) => {
                write!(f, "period {p} is not positive (sampling frequency = 1e9/period)")
            }
            ProfileError::MissingFrameType { location } => write!(
                f,
                "location {location} has no profile.frame.type attribute; the profile is invalid"
            ),
            ProfileError::UnknownFrameType { location, value } => {
                write!(f, "location {location} has unknown profile.frame.type {value:?}")
            }
            ProfileError::IndexOutOfRange { table, index } => {
                write!(f, "index {index} is out of range of the {table}")
            }
            ProfileError::BadHtlhash { mapping, value } => write!(
                f,
                "mapping {mapping}: process.executable.build_id.htlhash {value:?} is not a 128-bit hex FileID"
            ),
            ProfileError::TooManyEvents { limit } => {
                write!(f, "request expands to more than {limit} events")
            }
            ProfileError::NoDictionary => f.write_str("request has profiles but no dictionary"),
        }
    }
}

impl std::error::Error for ProfileError {}

/// A rejected profile and where it was in the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub resource: usize,
    pub scope: usize,
    pub profile: usize,
    pub error: ProfileError,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "resource {} scope {} profile {}: {}",
            self.resource, self.scope, self.profile, self.error
        )
    }
}

/// The documents of one request, and what was rejected.
#[derive(Clone, Debug, Default)]
pub struct Encoded {
    pub docs: Vec<Document>,
    pub rejected: Vec<Rejection>,
    pub profiles: usize,
    pub samples: u64,
    /// Events written to `profiling-events-all` (downsampled copies not counted).
    pub events: u64,
}

/// Maps a `profile.frame.type` string to its type byte.
pub fn frame_type_from_semconv(s: &str) -> Option<FrameType> {
    let v = match s {
        "unknown" => 0,
        "cpython" => 1,
        "php" => 2,
        "native" => 3,
        "kernel" => 4,
        "jvm" => 5,
        "ruby" => 6,
        "perl" => 7,
        "v8js" => 8,
        "dotnet" => 10,
        "go" => 11,
        "beam" => 12,
        "luajit" => 13,
        "abort-marker" => 0x80,
        _ => return None,
    };
    Some(FrameType::from_u8(v))
}

/// Deterministic generator for downsampling: SplitMix64, fixed here rather
/// than taken from a crate so the sequence never changes with a dependency
/// update (a resend after a crash must keep the same documents).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// True with probability 1/5 (Lemire's multiply-shift, no modulo bias worth noting).
    pub fn one_in_five(&mut self) -> bool {
        ((u128::from(self.next_u64()) * 5) >> 64) == 0
    }
}

/// How many of the 11 downsampled levels keep one event: each level keeps
/// every unit of the level above with probability 1/5, stopping at 0.
pub fn downsample_depth(rng: &mut SplitMix64) -> usize {
    let mut depth = 0;
    while depth < DOWNSAMPLE_LEVELS && rng.one_in_five() {
        depth += 1;
    }
    depth
}

/// Index names per schema and kind.
pub mod index {
    pub const OTEL_EVENTS_ALL: &str = "profiling-events-all.otel-default";
    pub const OTEL_EVENTS_5POW: [&str; 11] = [
        "profiling-events-5pow01.otel-default",
        "profiling-events-5pow02.otel-default",
        "profiling-events-5pow03.otel-default",
        "profiling-events-5pow04.otel-default",
        "profiling-events-5pow05.otel-default",
        "profiling-events-5pow06.otel-default",
        "profiling-events-5pow07.otel-default",
        "profiling-events-5pow08.otel-default",
        "profiling-events-5pow09.otel-default",
        "profiling-events-5pow10.otel-default",
        "profiling-events-5pow11.otel-default",
    ];
    pub const OTEL_STACKTRACES: &str = "profiling-stacktraces.otel-default";
    pub const OTEL_STACKFRAMES: &str = "profiling-stackframes.otel-default";
    pub const OTEL_EXECUTABLES: &str = "profiling-executables.otel-default";
    pub const OTEL_HOSTS: &str = "profiling-hosts.otel-default";

    pub const ECS_EVENTS_ALL: &str = "profiling-events-all";
    pub const ECS_EVENTS_5POW: [&str; 11] = [
        "profiling-events-5pow01",
        "profiling-events-5pow02",
        "profiling-events-5pow03",
        "profiling-events-5pow04",
        "profiling-events-5pow05",
        "profiling-events-5pow06",
        "profiling-events-5pow07",
        "profiling-events-5pow08",
        "profiling-events-5pow09",
        "profiling-events-5pow10",
        "profiling-events-5pow11",
    ];
    pub const ECS_STACKTRACES: &str = "profiling-stacktraces";
    pub const ECS_STACKFRAMES: &str = "profiling-stackframes";
    pub const ECS_EXECUTABLES: &str = "profiling-executables";
    pub const ECS_HOSTS: &str = "profiling-hosts";
    pub const ECS_SQ_EXECUTABLES: &str = "profiling-sq-executables";
    pub const ECS_SQ_LEAFFRAMES: &str = "profiling-sq-leafframes";
}

/// Resource / sample attributes copied into events (OTel names).
const EVENT_ATTRIBUTES: [&str; 11] = [
    "host.id",
    "host.name",
    "host.ip",
    "k8s.namespace.name",
    "k8s.pod.name",
    "container.name",
    "container.id",
    "service.name",
    "process.executable.name",
    "thread.name",
    "os.version",
];

/// OTel attribute → ECS event field.
fn ecs_event_field(otel: &str) -> Option<&'static str> {
    Some(match otel {
        "host.id" => "host.id",
        "host.name" => "host.name",
        "thread.name" => "process.thread.name",
        "process.executable.name" => "process.executable.name",
        "service.name" => "service.name",
        "container.id" => "container.id",
        "container.name" => "container.name",
        "k8s.pod.name" => "orchestrator.resource.name",
        "k8s.namespace.name" => "k8s.namespace.name",
        _ => return None,
    })
}

/// Resource attribute prefixes that describe the host (go into `profiling-hosts`).
const HOST_PREFIXES: [&str; 4] = ["host.", "cloud.", "os.", "k8s.node."];

const HTLHASH: &str = "process.executable.build_id.htlhash";
const GNU_BUILD_ID: &str = "process.executable.build_id.gnu";
const FRAME_TYPE: &str = "profile.frame.type";

/// Resolves strings, attributes and tables of a dictionary with bounds checks.
struct Dict<'a> {
    d: &'a ProfilesDictionary,
}

impl<'a> Dict<'a> {
    fn string(&self, idx: i32) -> Result<&'a str, ProfileError> {
        usize::try_from(idx)
            .ok()
            .and_then(|i| self.d.string_table.get(i))
            .map(String::as_str)
            .ok_or(ProfileError::IndexOutOfRange {
                table: "string table",
                index: idx.into(),
            })
    }

    fn get<'t, T>(
        &self,
        table: &'t [T],
        name: &'static str,
        idx: i32,
    ) -> Result<&'t T, ProfileError> {
        usize::try_from(idx)
            .ok()
            .and_then(|i| table.get(i))
            .ok_or(ProfileError::IndexOutOfRange {
                table: name,
                index: idx.into(),
            })
    }

    /// A scalar attribute value as a string (inline or string-table reference).
    fn value_string(&self, v: &AnyValue) -> Option<String> {
        match v.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            any_value::Value::StringValueStrindex(i) => self.string(*i).ok().map(str::to_owned),
            any_value::Value::BoolValue(b) => Some(b.to_string()),
            any_value::Value::IntValue(i) => Some(i.to_string()),
            any_value::Value::DoubleValue(d) => Some(d.to_string()),
            _ => None,
        }
    }

    /// (key, value) of attribute-table entries.
    fn attributes(&self, indices: &[i32]) -> Result<Vec<(&'a str, String)>, ProfileError> {
        let mut out = Vec::with_capacity(indices.len());
        for &i in indices {
            let kv = self.get(&self.d.attribute_table, "attribute table", i)?;
            let key = self.string(kv.key_strindex)?;
            if let Some(v) = kv.value.as_ref().and_then(|v| self.value_string(v)) {
                out.push((key, v));
            }
        }
        Ok(out)
    }

    fn attribute(&self, indices: &[i32], key: &str) -> Result<Option<String>, ProfileError> {
        for &i in indices {
            let kv = self.get(&self.d.attribute_table, "attribute table", i)?;
            if self.string(kv.key_strindex)? == key {
                return Ok(kv.value.as_ref().and_then(|v| self.value_string(v)));
            }
        }
        Ok(None)
    }

    /// Resource attributes: keys inline or by `key_strindex`.
    fn key_values(&self, kvs: &[KeyValue]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for kv in kvs {
            let key = if kv.key.is_empty() {
                match self.string(kv.key_strindex) {
                    Ok(k) => k.to_owned(),
                    Err(_) => continue,
                }
            } else {
                kv.key.clone()
            };
            if let Some(v) = kv.value.as_ref().and_then(|v| self.value_string(v)) {
                out.insert(key, v);
            }
        }
        out
    }
}

/// One resolved frame.
#[derive(Clone, Debug)]
struct ResolvedFrame {
    file_id: FileId,
    address_or_line: u64,
    frame_type: FrameType,
    /// (function name, file name, line, function offset), innermost first.
    lines: Vec<(String, String, i64, i64)>,
    /// Mapping that carried an htlhash (for executables), if any.
    executable: Option<usize>,
}

impl ResolvedFrame {
    fn symbolized(&self) -> bool {
        self.lines
            .iter()
            .any(|(f, file, _, _)| !f.is_empty() || !file.is_empty())
    }
}

/// FileID for a location without htlhash: xxhash64 over, for each line,
/// function name, file name, line (i64 BE), column (i64 BE); FileID = (h, h).
pub fn synthesize_file_id(lines: &[(&str, &str, i64, i64)]) -> FileId {
    let mut h = twox_hash::XxHash64::with_seed(0);
    use std::hash::Hasher as _;
    for (func, file, line, column) in lines {
        h.write(func.as_bytes());
        h.write(file.as_bytes());
        h.write(&line.to_be_bytes());
        h.write(&column.to_be_bytes());
    }
    let v = h.finish();
    FileId::new(v, v)
}

fn resolve_location(
    dict: &Dict<'_>,
    loc_idx: i32,
    loc: &Location,
    mapping: &Mapping,
    mapping_idx: usize,
) -> Result<ResolvedFrame, ProfileError> {
    let location = loc_idx as usize;
    let ft = dict
        .attribute(&loc.attribute_indices, FRAME_TYPE)?
        .ok_or(ProfileError::MissingFrameType { location })?;
    let frame_type = frame_type_from_semconv(&ft).ok_or(ProfileError::UnknownFrameType {
        location,
        value: ft,
    })?;

    let mut lines = Vec::with_capacity(loc.lines.len());
    let mut raw = Vec::with_capacity(loc.lines.len());
    for l in &loc.lines {
        let (name, file, start) = if l.function_index == 0 && dict.d.function_table.is_empty() {
            ("", "", 0)
        } else {
            let f = dict.get(&dict.d.function_table, "function table", l.function_index)?;
            (
                dict.string(f.name_strindex)?,
                dict.string(f.filename_strindex)?,
                f.start_line,
            )
        };
        let offset = if start > 0 && l.line >= start {
            l.line - start
        } else {
            0
        };
        raw.push((name, file, l.line, l.column));
        lines.push((name.to_owned(), file.to_owned(), l.line, offset));
    }

    let htlhash = dict.attribute(&mapping.attribute_indices, HTLHASH)?;
    let (file_id, executable) = match htlhash {
        Some(hex) if !hex.is_empty() => match FileId::parse_hex(&hex) {
            Ok(id) => (id, Some(mapping_idx)),
            Err(_) => {
                return Err(ProfileError::BadHtlhash {
                    mapping: mapping_idx,
                    value: hex,
                })
            }
        },
        _ => (synthesize_file_id(&raw), None),
    };
    let address_or_line = if loc.address != 0 {
        loc.address
    } else {
        loc.lines.last().map(|l| l.line as u64).unwrap_or(0)
    };
    Ok(ResolvedFrame {
        file_id,
        address_or_line,
        frame_type,
        lines,
        executable,
    })
}

/// Encodes a request. Invalid profiles are listed in `rejected` and produce no
/// documents; valid ones in the same request are still encoded.
pub fn encode(req: &ExportProfilesServiceRequest, opts: &EncodeOptions) -> Encoded {
    let mut out = Encoded::default();
    let has_profiles = req
        .resource_profiles
        .iter()
        .any(|r| r.scope_profiles.iter().any(|s| !s.profiles.is_empty()));
    let dict = match &req.dictionary {
        Some(d) => Dict { d },
        None => {
            if has_profiles {
                for (ri, r) in req.resource_profiles.iter().enumerate() {
                    for (si, s) in r.scope_profiles.iter().enumerate() {
                        for pi in 0..s.profiles.len() {
                            out.rejected.push(Rejection {
                                resource: ri,
                                scope: si,
                                profile: pi,
                                error: ProfileError::NoDictionary,
                            });
                        }
                    }
                }
            }
            return out;
        }
    };
    let mut st = State {
        opts,
        rng: SplitMix64::new(opts.seed),
        event_ordinal: 0,
        seen: HashSet::new(),
        added: Vec::new(),
        frame_cache: HashMap::new(),
    };
    for (ri, rp) in req.resource_profiles.iter().enumerate() {
        let resource = rp
            .resource
            .as_ref()
            .map(|r| dict.key_values(&r.attributes))
            .unwrap_or_default();
        for (si, sp) in rp.scope_profiles.iter().enumerate() {
            for (pi, p) in sp.profiles.iter().enumerate() {
                let mark = out.docs.len();
                let (samples, events) = (out.samples, out.events);
                st.added.clear();
                let rng_before = st.rng.clone();
                let ord_before = st.event_ordinal;
                match encode_profile(&dict, &resource, p, &mut st, &mut out) {
                    Ok(()) => out.profiles += 1,
                    Err(error) => {
                        // Roll back what the invalid profile had produced.
                        out.docs.truncate(mark);
                        out.samples = samples;
                        out.events = events;
                        for k in st.added.drain(..) {
                            st.seen.remove(&k);
                        }
                        st.rng = rng_before;
                        st.event_ordinal = ord_before;
                        out.rejected.push(Rejection {
                            resource: ri,
                            scope: si,
                            profile: pi,
                            error,
                        });
                    }
                }
            }
        }
    }
    out
}

struct State<'o> {
    opts: &'o EncodeOptions,
    rng: SplitMix64,
    event_ordinal: u64,
    /// `(index, id)` of write-once documents already emitted for this request.
    seen: HashSet<(&'static str, String)>,
    /// Keys added to `seen` by the current profile (removed again if it is rejected).
    added: Vec<(&'static str, String)>,
    frame_cache: HashMap<i32, ResolvedFrame>,
}

impl State<'_> {
    fn event_id(&mut self) -> String {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.opts.seed.to_be_bytes());
        b[8..].copy_from_slice(&self.event_ordinal.to_be_bytes());
        self.event_ordinal += 1;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    fn once(&mut self, out: &mut Encoded, doc: Document) {
        if self.seen.insert((doc.index, doc.id.clone())) {
            self.added.push((doc.index, doc.id.clone()));
            out.docs.push(doc);
        }
    }
}

fn check_cpu(dict: &Dict<'_>, p: &Profile) -> Result<u64, ProfileError> {
    let vt = |v: &Option<opentelemetry_proto::tonic::profiles::v1development::ValueType>| -> Result<(String, String), ProfileError> {
        match v {
            Some(v) => Ok((dict.string(v.type_strindex)?.to_owned(), dict.string(v.unit_strindex)?.to_owned())),
            None => Ok((String::new(), String::new())),
        }
    };
    let (st, su) = vt(&p.sample_type)?;
    let (pt, pu) = vt(&p.period_type)?;
    if (st.as_str(), su.as_str(), pt.as_str(), pu.as_str())
        != ("samples", "count", "cpu", "nanoseconds")
    {
        return Err(ProfileError::NotCpu {
            sample_type: format!("{st}/{su}"),
            period_type: format!("{pt}/{pu}"),
        });
    }
    if p.period <= 0 {
        return Err(ProfileError::NonPositivePeriod(p.period));
    }
    Ok(((1e9 / p.period as f64).round() as u64).max(1))
}

fn encode_profile(
    dict: &Dict<'_>,
    resource: &BTreeMap<String, String>,
    p: &Profile,
    st: &mut State<'_>,
    out: &mut Encoded,
) -> Result<(), ProfileError> {
    let freq = check_cpu(dict, p)?;
    let schema = st.opts.schema;
    let profile_attrs = dict.attributes(&p.attribute_indices)?;
    let doc_ts = rfc3339_nanos(p.time_unix_nano);
    let secs = p.time_unix_nano / 1_000_000_000;

    // Host document.
    if let Some(host_id) = resource.get("host.id") {
        let day = start_of_day(secs);
        let mut attrs: BTreeMap<String, String> = resource
            .iter()
            .filter(|(k, _)| HOST_PREFIXES.iter().any(|p| k.starts_with(p)))
            .map(|(k, v)| (k.to_lowercase(), v.to_lowercase()))
            .collect();
        // host.id keeps its case: events carry it unchanged and join on it.
        attrs.insert("host.id".into(), host_id.clone());
        let mut h = twox_hash::XxHash3_128::with_seed(0);
        for (k, v) in &attrs {
            h.write(k.as_bytes());
            h.write(&[0]);
            h.write(v.as_bytes());
            h.write(&[0]);
        }
        h.write(&day.to_be_bytes());
        let id =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finish_128().to_be_bytes());
        let mut m = Map::new();
        m.insert("@timestamp".into(), json!(day));
        let (index, prefix) = match schema {
            Schema::Otel => (index::OTEL_HOSTS, "resource.attributes."),
            Schema::Ecs => {
                m.insert("ecs.version".into(), json!(ECS_VERSION));
                (index::ECS_HOSTS, "")
            }
        };
        for (k, v) in attrs {
            m.insert(format!("{prefix}{k}"), Value::String(v));
        }
        st.once(
            out,
            Document {
                kind: DocKind::Host,
                op: Op::Create,
                index,
                id,
                source: Value::Object(m).to_string(),
            },
        );
    }

    for s in &p.samples {
        let stack = dict.get(&dict.d.stack_table, "stack table", s.stack_index)?;
        let mut frames: Vec<ResolvedFrame> = Vec::with_capacity(stack.location_indices.len());
        for &li in &stack.location_indices {
            if let Some(f) = st.frame_cache.get(&li) {
                frames.push(f.clone());
                continue;
            }
            let loc = dict.get(&dict.d.location_table, "location table", li)?;
            let Some(mapping_idx) = usize::try_from(loc.mapping_index)
                .ok()
                .filter(|&m| m < dict.d.mapping_table.len())
            else {
                continue; // the reference says: skip locations whose mapping is out of range
            };
            let mapping = &dict.d.mapping_table[mapping_idx];
            let f = resolve_location(dict, li, loc, mapping, mapping_idx)?;
            st.frame_cache.insert(li, f.clone());
            frames.push(f);
        }

        // Stacktrace id over leaf-first frames.
        let mut hasher = TraceHasher::new();
        for f in &frames {
            hasher.push(Some(f.file_id), AddressOrLineno(f.address_or_line));
        }
        let trace_id = hasher.finish().to_base64();
        let mut frame_ids = String::with_capacity(frames.len() * 32);
        for f in frames.iter().rev() {
            frame_ids.push_str(&libpf::frame_id(
                f.file_id,
                AddressOrLineno(f.address_or_line),
            ));
        }
        let types = libpf::encode_frame_types(frames.iter().rev().map(|f| f.frame_type));

        let (st_index, st_source) = match schema {
            Schema::Otel => (
                index::OTEL_STACKTRACES,
                json!({"@timestamp": doc_ts, "frame.ids": frame_ids, "frame.types": types}),
            ),
            Schema::Ecs => (
                index::ECS_STACKTRACES,
                json!({"ecs.version": ECS_VERSION, "Stacktrace.frame.ids": frame_ids,
                       "Stacktrace.frame.types": types}),
            ),
        };
        st.once(
            out,
            Document {
                kind: DocKind::Stacktrace,
                op: Op::Create,
                index: st_index,
                id: trace_id.clone(),
                source: st_source.to_string(),
            },
        );

        for (pos, f) in frames.iter().enumerate() {
            let fid = libpf::frame_id(f.file_id, AddressOrLineno(f.address_or_line));
            if f.symbolized() {
                let names: Vec<&str> = f.lines.iter().map(|l| l.0.as_str()).collect();
                let files: Vec<&str> = f.lines.iter().map(|l| l.1.as_str()).collect();
                let nums: Vec<i64> = f.lines.iter().map(|l| clamp_i32(l.2)).collect();
                let offs: Vec<i64> = f.lines.iter().map(|l| clamp_i32(l.3)).collect();
                let (index, source) = match schema {
                    Schema::Otel => (
                        index::OTEL_STACKFRAMES,
                        json!({"@timestamp": doc_ts, "function.name": names, "function.filename": files,
                               "line.number": nums, "function.offset": offs}),
                    ),
                    Schema::Ecs => (
                        index::ECS_STACKFRAMES,
                        json!({"Stackframe.function.name": names, "Stackframe.file.name": files,
                               "Stackframe.line.number": nums, "Stackframe.function.offset": offs}),
                    ),
                };
                st.once(
                    out,
                    Document {
                        kind: DocKind::Stackframe,
                        op: Op::Create,
                        index,
                        id: fid.clone(),
                        source: source.to_string(),
                    },
                );
            } else if schema == Schema::Ecs && f.frame_type == FrameType::NATIVE {
                // Unsymbolized native frames go to the symbolization queues.
                if pos == 0 {
                    st.once(
                        out,
                        Document {
                            kind: DocKind::SymbolizationQueue,
                            op: Op::Create,
                            index: index::ECS_SQ_LEAFFRAMES,
                            id: fid.clone(),
                            source: json!({"ecs.version": ECS_VERSION, "Stacktrace.frame.id": fid,
                                           "Time.created": secs, "Symbolization.retries": 0})
                            .to_string(),
                        },
                    );
                }
                if f.executable.is_some() {
                    let b64 = f.file_id.to_base64();
                    st.once(
                        out,
                        Document {
                            kind: DocKind::SymbolizationQueue,
                            op: Op::Create,
                            index: index::ECS_SQ_EXECUTABLES,
                            id: b64.clone(),
                            source: json!({"ecs.version": ECS_VERSION, "Executable.file.id": b64,
                                           "Time.created": secs, "Symbolization.retries": 0})
                            .to_string(),
                        },
                    );
                }
            }
            if let Some(mi) = f.executable {
                let mapping = &dict.d.mapping_table[mi];
                let name = dict.string(mapping.filename_strindex).unwrap_or("");
                let week = start_of_week(secs);
                let doc = match schema {
                    Schema::Otel => Document {
                        kind: DocKind::Executable,
                        op: Op::Create,
                        index: index::OTEL_EXECUTABLES,
                        id: f.file_id.to_hex(),
                        source: json!({"@timestamp": week,
                            "resource.attributes.process.executable.build_id.htlhash": f.file_id.to_hex(),
                            "resource.attributes.process.executable.name": name})
                        .to_string(),
                    },
                    Schema::Ecs => {
                        let gnu = dict
                            .attribute(&mapping.attribute_indices, GNU_BUILD_ID)?
                            .unwrap_or_default();
                        Document {
                            kind: DocKind::Executable,
                            op: Op::Update,
                            index: index::ECS_EXECUTABLES,
                            id: f.file_id.to_base64(),
                            source: json!({
                                "script": {
                                    "source": "ctx._source['@timestamp'] = params.timestamp",
                                    "params": {"timestamp": week}
                                },
                                "scripted_upsert": true,
                                "upsert": {"@timestamp": week, "Executable.build.id": gnu,
                                           "Executable.file.name": name, "ecs.version": ECS_VERSION}
                            })
                            .to_string(),
                        }
                    }
                };
                st.once(out, doc);
            }
        }

        // Event attributes: resource, then profile, then sample (later wins).
        let mut attrs: BTreeMap<&str, String> = BTreeMap::new();
        for key in EVENT_ATTRIBUTES {
            if let Some(v) = resource.get(key) {
                attrs.insert(key, v.clone());
            }
        }
        let sample_attrs = dict.attributes(&s.attribute_indices)?;
        for (k, v) in profile_attrs.iter().chain(sample_attrs.iter()) {
            if let Some(key) = EVENT_ATTRIBUTES.iter().find(|e| **e == *k) {
                attrs.insert(key, v.clone());
            }
        }
        // `host.ip` is an `ip` field: a value that is not an address would make
        // Elasticsearch refuse the whole event (400), so it is left out instead.
        if attrs
            .get("host.ip")
            .is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_err())
        {
            attrs.remove("host.ip");
        }

        let timestamps: Vec<u64> = if s.timestamps_unix_nano.is_empty() {
            let n = s.values.first().copied().unwrap_or(0).max(0) as u64;
            if out.events.saturating_add(n) > st.opts.max_events {
                return Err(ProfileError::TooManyEvents {
                    limit: st.opts.max_events,
                });
            }
            vec![p.time_unix_nano; n as usize]
        } else {
            s.timestamps_unix_nano.clone()
        };
        if out.events + timestamps.len() as u64 > st.opts.max_events {
            return Err(ProfileError::TooManyEvents {
                limit: st.opts.max_events,
            });
        }
        out.samples += timestamps.len() as u64;

        // Everything but `@timestamp` is the same for all events of a sample:
        // serialize it once, then splice each timestamp in front.
        let mut m = Map::new();
        match schema {
            Schema::Otel => {
                m.insert("stacktrace.id".into(), Value::String(trace_id.clone()));
                m.insert("count".into(), json!(1));
                m.insert("sampling_frequency".into(), json!(freq));
                for (k, v) in &attrs {
                    m.insert(format!("resource.attributes.{k}"), Value::String(v.clone()));
                }
            }
            Schema::Ecs => {
                m.insert("ecs.version".into(), json!(ECS_VERSION));
                m.insert("Stacktrace.id".into(), Value::String(trace_id.clone()));
                m.insert("Stacktrace.count".into(), json!(1));
                m.insert("Stacktrace.sampling_frequency".into(), json!(freq));
                m.insert("profiling.project.id".into(), json!(2));
                for (k, v) in &attrs {
                    if let Some(f) = ecs_event_field(k) {
                        m.insert(f.into(), Value::String(v.clone()));
                    }
                }
            }
        }
        let rest = Value::Object(m).to_string();
        // `rest` is `{…}` with at least one field; drop its opening brace.
        let rest = &rest[1..];
        for ts in timestamps {
            let mut source = String::with_capacity(rest.len() + 48);
            source.push_str("{\"@timestamp\":\"");
            source.push_str(&rfc3339_nanos(ts));
            source.push_str("\",");
            source.push_str(rest);
            let id = st.event_id();
            let id = if st.opts.event_ids { id } else { String::new() };
            let depth = downsample_depth(&mut st.rng);
            let (all, levels) = match schema {
                Schema::Otel => (index::OTEL_EVENTS_ALL, &index::OTEL_EVENTS_5POW),
                Schema::Ecs => (index::ECS_EVENTS_ALL, &index::ECS_EVENTS_5POW),
            };
            for level in levels.iter().take(depth) {
                out.docs.push(Document {
                    kind: DocKind::Event,
                    op: Op::Create,
                    index: level,
                    id: id.clone(),
                    source: source.clone(),
                });
            }
            out.docs.push(Document {
                kind: DocKind::Event,
                op: Op::Create,
                index: all,
                id,
                source,
            });
            out.events += 1;
        }
    }
    Ok(())
}

fn clamp_i32(v: i64) -> i64 {
    v.clamp(0, i64::from(i32::MAX))
}
