//! Profile model → `ExportProfilesServiceRequest`.
//!
//! Layout (what upstream's eBPF profiler sends, so backends built for it
//! accept ours):
//! * one `ResourceProfiles` per process and input [`Profile`]: samples are
//!   grouped by (pid, process name, executable path, container id), in the
//!   order the processes first appear; each holds one `ScopeProfiles`
//!   (scope [`SCOPE_NAME`]) with one `Profile`;
//! * resource attributes `process.pid`, `process.executable.path`,
//!   `process.executable.name` (the process name, else the path's base name),
//!   `container.id` when known, and `host.name`/`host.id` when the caller
//!   gives them in [`ResourceInfo`] (upstream leaves those to a collector; the
//!   profile's own `host_name` is used when `ResourceInfo` has none);
//! * sample type `samples`/`count`, period type `cpu`/`nanoseconds`, period
//!   `1e9 / frequency` (0 when the frequency is unknown);
//! * one shared, fresh `ProfilesDictionary` per request, every table
//!   deduplicated and starting with its zero value;
//! * samples: a model sample whose timestamps number exactly its count is
//!   sent as `timestamps_unix_nano` only (each timestamp counts one); any
//!   other as `values = [count]`, its timestamps dropped (a model with a
//!   different number of timestamps than samples cannot be represented).
//!   Samples of zero count are skipped. Samples with the same stack and
//!   attributes are merged, as the spec asks: timestamps appended (and
//!   sorted) when both are timestamp-shaped, else counts added. The profile's
//!   `time_unix_nano`/`duration_nano` are widened to cover every timestamp;
//! * sample attributes `thread.name` (when non-empty), `thread.id`,
//!   `cpu.logical_number` (when known);
//! * frames: a run of `inlined` frames followed by the frame they are inlined
//!   into (same type, file and address) becomes one `Location` whose `lines`
//!   are innermost first. Every location carries `profile.frame.type`;
//! * native frames (and Go, and any frame whose file is in
//!   `Profile::executables`) point at the mapping of their file: ELF vaddr
//!   range, base name, `process.executable.build_id.htlhash` and, when known,
//!   `process.executable.build_id.gnu`. A file missing from `executables`
//!   still gets a mapping with its htlhash (range 0..0, no name). `address`
//!   is the ELF virtual address;
//! * kernel frames point at a mapping of their own: the executable's when the
//!   kernel file is in `executables`, else filename `vmlinux` with htlhash =
//!   the frame's FileId or [`FileId::UNKNOWN_KERNEL`];
//! * interpreted frames: mapping 0, the line/interpreter value as `address`,
//!   one line with function, file and line (their FileId is not sent);
//! * error frames: mapping 0, `address` = the error code, frame type
//!   `abort-marker` (the abort marker) or the kind's own string (an error of
//!   that unwinder, as upstream prints it), and one line whose function name
//!   is the error text: the frame's own name, else
//!   [`profile::error_frame_name`] of the code (`<unwinding aborted due to
//!   error native_no_mapping>`, the name every local output shows). The text
//!   starts with [`profile::ERROR_FRAME_PREFIX`], which is how
//!   [`decode`](crate::decode) recognizes an error frame again. A frame the
//!   model classifies as an error by its error flag alone is sent the same
//!   way;
//! * not carried: frame flags, `function_offset`, full paths of non-main
//!   executables (only base names), `profile_id` (optional; left empty so
//!   encoding stays deterministic).

use crate::keys;
use libpf::{FileId, Frame, FrameKind, FrameType};
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development as pb;
use opentelemetry_proto::tonic::resource::v1::Resource;
use profile::{Executable, FrameClass, Profile, Sample};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// Instrumentation scope name of the profiles we produce.
pub const SCOPE_NAME: &str = "ebpf-profiler";

/// What the exporter knows about the host, added to every resource.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceInfo {
    /// `host.name`; when `None`, the profile's `host_name` is used if set.
    pub host_name: Option<String>,
    /// `host.id` (the agent reads `/etc/machine-id`).
    pub host_id: Option<String>,
}

/// Encodes `profiles` into one request with one shared dictionary.
pub fn encode(profiles: &[Profile], resource: &ResourceInfo) -> ExportProfilesServiceRequest {
    // One dictionary for the request: a file's mapping comes from whichever
    // profile describes it (the first one that does).
    let mut exes: FxMap<FileId, &Executable> = FxMap::default();
    for p in profiles {
        for (id, e) in &p.executables {
            exes.entry(*id).or_insert(e);
        }
    }
    let mut d = Dict::new(exes);
    let mut resource_profiles = Vec::new();
    for p in profiles {
        for (key, samples) in group_by_process(p) {
            resource_profiles.push(encode_process(&mut d, p, resource, &key, &samples));
        }
    }
    ExportProfilesServiceRequest {
        resource_profiles,
        dictionary: Some(d.finish()),
    }
}

/// What makes a process a resource of its own.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ProcKey {
    pid: u32,
    process_name: Arc<str>,
    executable_path: Option<Arc<str>>,
    container_id: Option<Arc<str>>,
}

fn group_by_process(p: &Profile) -> Vec<(ProcKey, Vec<&Sample>)> {
    let mut order: Vec<(ProcKey, Vec<&Sample>)> = Vec::new();
    let mut index: FxMap<ProcKey, usize> = FxMap::default();
    for s in &p.samples {
        let key = ProcKey {
            pid: s.labels.pid,
            process_name: s.labels.process_name.clone(),
            executable_path: s.labels.executable_path.clone(),
            container_id: s.labels.container_id.clone(),
        };
        let i = *index.entry(key.clone()).or_insert_with(|| {
            order.push((key, Vec::new()));
            order.len() - 1
        });
        order[i].1.push(s);
    }
    order
}

fn str_kv(key: &str, v: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_string())),
        }),
        key_strindex: 0,
    }
}

fn int_kv(key: &str, v: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        key_strindex: 0,
    }
}

/// A sample being built: timestamps while every merged model sample had a
/// full set of them, else only the count.
struct Acc {
    stack: i32,
    attrs: Vec<i32>,
    count: u64,
    timestamps: Option<Vec<u64>>,
}

fn encode_process(
    d: &mut Dict,
    p: &Profile,
    info: &ResourceInfo,
    key: &ProcKey,
    samples: &[&Sample],
) -> pb::ResourceProfiles {
    let mut attributes = vec![int_kv(keys::PROCESS_PID, i64::from(key.pid))];
    if let Some(path) = &key.executable_path {
        attributes.push(str_kv(keys::PROCESS_EXECUTABLE_PATH, path));
    }
    let name: &str = if !key.process_name.is_empty() {
        &key.process_name
    } else {
        key.executable_path
            .as_deref()
            .map(|p| p.rsplit('/').next().unwrap_or(p))
            .unwrap_or("")
    };
    if !name.is_empty() {
        attributes.push(str_kv(keys::PROCESS_EXECUTABLE_NAME, name));
    }
    if let Some(c) = &key.container_id {
        attributes.push(str_kv(keys::CONTAINER_ID, c));
    }
    let host = info
        .host_name
        .as_deref()
        .or((!p.host_name.is_empty()).then_some(p.host_name.as_str()));
    if let Some(h) = host {
        attributes.push(str_kv(keys::HOST_NAME, h));
    }
    if let Some(h) = &info.host_id {
        attributes.push(str_kv(keys::HOST_ID, h));
    }

    let mut accs: Vec<Acc> = Vec::new();
    let mut merge: FxMap<(i32, Vec<i32>), usize> = FxMap::default();
    // Stacks repeat across samples: remember the frames slice we encoded.
    let mut stack_cache: FxMap<*const Frame, i32> = FxMap::default();
    for s in samples {
        if s.count == 0 {
            continue;
        }
        let ptr = s.frames.as_ptr();
        let stack = match stack_cache.get(&ptr) {
            // Only trust the pointer when the slice is non-empty (empty
            // slices share dangling pointers).
            Some(&i) if !s.frames.is_empty() => i,
            _ => {
                let i = d.stack(&s.frames);
                stack_cache.insert(ptr, i);
                i
            }
        };
        let mut attrs = Vec::with_capacity(3);
        if !s.labels.thread_name.is_empty() {
            attrs.push(d.attr_str(keys::THREAD_NAME, &s.labels.thread_name));
        }
        attrs.push(d.attr_int(keys::THREAD_ID, i64::from(s.labels.tid)));
        if let Some(cpu) = s.labels.cpu {
            attrs.push(d.attr_int(keys::CPU_LOGICAL_NUMBER, i64::from(cpu)));
        }
        let ts = (!s.timestamps_unix_ns.is_empty() && s.timestamps_unix_ns.len() as u64 == s.count)
            .then(|| s.timestamps_unix_ns.clone());
        match merge.get(&(stack, attrs.clone())) {
            Some(&i) => {
                let a = &mut accs[i];
                a.count = a.count.saturating_add(s.count);
                match (&mut a.timestamps, ts) {
                    (Some(have), Some(more)) => have.extend(more),
                    (t, _) => *t = None,
                }
            }
            None => {
                merge.insert((stack, attrs.clone()), accs.len());
                accs.push(Acc {
                    stack,
                    attrs,
                    count: s.count,
                    timestamps: ts,
                });
            }
        }
    }

    let mut start = p.start_unix_ns;
    let mut end = p.start_unix_ns.saturating_add(p.duration_ns);
    let out_samples = accs
        .into_iter()
        .map(|a| {
            let (values, timestamps) = match a.timestamps {
                Some(mut t) => {
                    t.sort_unstable();
                    if let (Some(&lo), Some(&hi)) = (t.first(), t.last()) {
                        start = start.min(lo);
                        end = end.max(hi.saturating_add(1));
                    }
                    (Vec::new(), t)
                }
                None => (vec![i64::try_from(a.count).unwrap_or(i64::MAX)], Vec::new()),
            };
            pb::Sample {
                stack_index: a.stack,
                attribute_indices: a.attrs,
                link_index: 0,
                values,
                timestamps_unix_nano: timestamps,
            }
        })
        .collect();

    let period = 1_000_000_000u64
        .checked_div(p.frequency_hz)
        .and_then(|v| i64::try_from(v).ok())
        .unwrap_or(0);
    let profile = pb::Profile {
        sample_type: Some(pb::ValueType {
            type_strindex: d.string("samples"),
            unit_strindex: d.string("count"),
        }),
        samples: out_samples,
        time_unix_nano: start,
        duration_nano: end - start,
        period_type: Some(pb::ValueType {
            type_strindex: d.string("cpu"),
            unit_strindex: d.string("nanoseconds"),
        }),
        period,
        profile_id: Vec::new(),
        dropped_attributes_count: 0,
        original_payload_format: String::new(),
        original_payload: Vec::new(),
        attribute_indices: Vec::new(),
    };
    pb::ResourceProfiles {
        resource: Some(Resource {
            attributes,
            dropped_attributes_count: 0,
            entity_refs: Vec::new(),
        }),
        scope_profiles: vec![pb::ScopeProfiles {
            scope: Some(InstrumentationScope {
                name: SCOPE_NAME.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                attributes: Vec::new(),
                dropped_attributes_count: 0,
            }),
            profiles: vec![profile],
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

/// FxHash (rustc's hasher): the dictionary hashes every frame's strings, and
/// SipHash was most of the encoding time. The input is the agent's own
/// symbolized data, not a remote peer's, so hash flooding is not a concern
/// here (the decoder, which reads the network, keeps SipHash).
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Attribute values we write (the dictionary dedups on them).
#[derive(Clone, PartialEq, Eq, Hash)]
enum AttrVal {
    Str(String),
    Int(i64),
}

/// Location identity: mapping, address, lines, attributes.
type LocKey = (i32, u64, Vec<(i32, i64, i64)>, Vec<i32>);

/// Which mapping a frame belongs to, before it has an index.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum MapKey {
    File(FileId),
    Kernel(FileId),
}

/// The dictionary under construction, each table with a dedup index.
struct Dict<'p> {
    /// Executables of every profile in the request, by FileId.
    exes: FxMap<FileId, &'p Executable>,
    strings: Vec<String>,
    string_idx: FxMap<String, i32>,
    attrs: Vec<pb::KeyValueAndUnit>,
    attr_idx: FxMap<(i32, AttrVal), i32>,
    functions: Vec<pb::Function>,
    function_idx: FxMap<pb::Function, i32>,
    mappings: Vec<pb::Mapping>,
    mapping_idx: FxMap<MapKey, i32>,
    locations: Vec<pb::Location>,
    location_idx: FxMap<LocKey, i32>,
    stacks: Vec<pb::Stack>,
    stack_idx: FxMap<Vec<i32>, i32>,
    /// Location of a run of frames (an unwound frame and its inlines),
    /// so repeated frames skip building lines and attributes again.
    group_idx: FxMap<Box<[Frame]>, i32>,
}

/// Table sizes are bounded by what one request can hold; an index beyond
/// i32 would make the message invalid, so saturate loudly instead of
/// wrapping (a 2^31-entry table is far beyond any message size limit).
fn idx(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

impl<'p> Dict<'p> {
    fn new(exes: FxMap<FileId, &'p Executable>) -> Self {
        let mut d = Dict {
            exes,
            strings: vec![String::new()],
            string_idx: FxMap::default(),
            attrs: vec![pb::KeyValueAndUnit::default()],
            attr_idx: FxMap::default(),
            functions: vec![pb::Function::default()],
            function_idx: FxMap::default(),
            mappings: vec![pb::Mapping::default()],
            mapping_idx: FxMap::default(),
            locations: vec![pb::Location::default()],
            location_idx: FxMap::default(),
            stacks: vec![pb::Stack::default()],
            stack_idx: FxMap::default(),
            group_idx: FxMap::default(),
        };
        d.string_idx.insert(String::new(), 0);
        d.function_idx.insert(pb::Function::default(), 0);
        d.stack_idx.insert(Vec::new(), 0);
        d
    }

    fn finish(self) -> pb::ProfilesDictionary {
        pb::ProfilesDictionary {
            mapping_table: self.mappings,
            location_table: self.locations,
            function_table: self.functions,
            // Entry 0 is the zero value even though we never link traces.
            link_table: vec![pb::Link::default()],
            string_table: self.strings,
            attribute_table: self.attrs,
            stack_table: self.stacks,
        }
    }

    fn string(&mut self, s: &str) -> i32 {
        if let Some(&i) = self.string_idx.get(s) {
            return i;
        }
        let i = idx(self.strings.len());
        self.strings.push(s.to_string());
        self.string_idx.insert(s.to_string(), i);
        i
    }

    fn attr(&mut self, key: &str, v: AttrVal) -> i32 {
        let k = self.string(key);
        if let Some(&i) = self.attr_idx.get(&(k, v.clone())) {
            return i;
        }
        let value = match &v {
            AttrVal::Str(s) => any_value::Value::StringValue(s.clone()),
            AttrVal::Int(n) => any_value::Value::IntValue(*n),
        };
        let i = idx(self.attrs.len());
        self.attrs.push(pb::KeyValueAndUnit {
            key_strindex: k,
            value: Some(AnyValue { value: Some(value) }),
            unit_strindex: 0,
        });
        self.attr_idx.insert((k, v), i);
        i
    }

    fn attr_str(&mut self, key: &str, v: &str) -> i32 {
        self.attr(key, AttrVal::Str(v.to_string()))
    }

    fn attr_int(&mut self, key: &str, v: i64) -> i32 {
        self.attr(key, AttrVal::Int(v))
    }

    fn function(&mut self, f: &Frame) -> i32 {
        let func = pb::Function {
            name_strindex: f.function_name.as_deref().map_or(0, |n| self.string(n)),
            system_name_strindex: 0,
            filename_strindex: f.source_file.as_deref().map_or(0, |n| self.string(n)),
            start_line: 0,
        };
        if let Some(&i) = self.function_idx.get(&func) {
            return i;
        }
        let i = idx(self.functions.len());
        self.functions.push(func);
        self.function_idx.insert(func, i);
        i
    }

    fn mapping(&mut self, key: MapKey) -> i32 {
        if let Some(&i) = self.mapping_idx.get(&key) {
            return i;
        }
        let id = match key {
            MapKey::File(id) | MapKey::Kernel(id) => id,
        };
        let mut m = pb::Mapping::default();
        let mut attrs = vec![self.attr_str(keys::BUILD_ID_HTLHASH, &id.to_hex())];
        match self.exes.get(&id).copied() {
            Some(exe) => {
                m.memory_start = exe.vaddr_start;
                m.memory_limit = exe.vaddr_end;
                m.filename_strindex = self.string(exe.base_name());
                if let Some(gnu) = &exe.gnu_build_id {
                    attrs.push(self.attr_str(keys::BUILD_ID_GNU, gnu));
                }
            }
            None if matches!(key, MapKey::Kernel(_)) => {
                m.filename_strindex = self.string("vmlinux");
            }
            None => {}
        }
        m.attribute_indices = attrs;
        let i = idx(self.mappings.len());
        self.mappings.push(m);
        self.mapping_idx.insert(key, i);
        i
    }

    /// The location of one unwound frame: `group` is its inlined frames,
    /// innermost first, then the frame itself.
    fn location(&mut self, group: &[Frame]) -> i32 {
        let outer = &group[group.len() - 1];
        let ft = outer.frame_type;
        let kind = ft.kind();
        // The model's classification (error bit or error flag), so that the
        // decoder gives back an error frame wherever the local outputs show one.
        let error = FrameClass::of(outer) == FrameClass::Error;
        let mapping_index = if error {
            0
        } else if kind == Some(FrameKind::Kernel) {
            let id = outer.file_id.unwrap_or(FileId::UNKNOWN_KERNEL);
            self.mapping(MapKey::Kernel(id))
        } else {
            match outer.file_id {
                Some(id)
                    if matches!(kind, Some(FrameKind::Native) | Some(FrameKind::Go))
                        || self.exes.contains_key(&id) =>
                {
                    self.mapping(MapKey::File(id))
                }
                _ => 0,
            }
        };
        let lines: Vec<(i32, i64, i64)> = if error {
            // Named as every other output names it, from spec/errors.json.
            let name = match outer.function_name.as_deref().filter(|n| !n.is_empty()) {
                Some(n) => Arc::from(n),
                None => Arc::from(profile::error_frame_name(outer.address_or_line.get())),
            };
            let f = outer.clone().with_function(name);
            vec![(self.function(&f), 0, 0)]
        } else if group.iter().any(Frame::is_symbolized) {
            group
                .iter()
                .map(|f| (self.function(f), f.source_line.map_or(0, i64::from), 0))
                .collect()
        } else {
            Vec::new()
        };
        let attrs = vec![self.attr_str(keys::FRAME_TYPE, &frame_type_string(ft))];
        let key: LocKey = (mapping_index, outer.address_or_line.get(), lines, attrs);
        if let Some(&i) = self.location_idx.get(&key) {
            return i;
        }
        let loc = pb::Location {
            mapping_index,
            address: key.1,
            lines: key
                .2
                .iter()
                .map(|&(function_index, line, column)| pb::Line {
                    function_index,
                    line,
                    column,
                })
                .collect(),
            attribute_indices: key.3.clone(),
        };
        let i = idx(self.locations.len());
        self.locations.push(loc);
        self.location_idx.insert(key, i);
        i
    }

    fn stack(&mut self, frames: &[Frame]) -> i32 {
        let mut locs = Vec::with_capacity(frames.len());
        let mut i = 0;
        while i < frames.len() {
            let mut j = i;
            while frames[j].inlined
                && j + 1 < frames.len()
                && same_unwound_frame(&frames[j], &frames[j + 1])
            {
                j += 1;
            }
            let group = &frames[i..=j];
            let loc = match self.group_idx.get(group) {
                Some(&l) => l,
                None => {
                    let l = self.location(group);
                    self.group_idx.insert(group.into(), l);
                    l
                }
            };
            locs.push(loc);
            i = j + 1;
        }
        if let Some(&i) = self.stack_idx.get(&locs) {
            return i;
        }
        let i = idx(self.stacks.len());
        self.stacks.push(pb::Stack {
            location_indices: locs.clone(),
        });
        self.stack_idx.insert(locs, i);
        i
    }
}

fn same_unwound_frame(a: &Frame, b: &Frame) -> bool {
    a.frame_type == b.frame_type && a.file_id == b.file_id && a.address_or_line == b.address_or_line
}

/// The `profile.frame.type` string: the semconv string of the kind, also for
/// error frames (upstream's convention), `abort-marker` for the abort marker.
pub(crate) fn frame_type_string(ft: FrameType) -> String {
    ft.to_string()
}
