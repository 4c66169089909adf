//! pprof: the gzipped `perftools.profiles.Profile` protobuf that `go tool
//! pprof`, Pyroscope, Parca and most profile viewers read.
//!
//! The messages are written by hand in [`proto`] (prost derive, no build
//! script, no protoc), after `profile.proto` of github.com/google/pprof.
//!
//! # What the profile holds
//!
//! * Sample types `samples/count` and `cpu/nanoseconds` (the count times
//!   the period), period type `cpu/nanoseconds`, `period` = 1e9/frequency,
//!   `time_nanos` and `duration_nanos` of the window; `cpu` is the default
//!   sample type.
//! * One sample per [`Sample`](crate::Sample) of the model, locations leaf
//!   first, with labels `pid`, `tid`, `cpu` (numeric, unit `id`: pprof
//!   drops a numeric label whose value and unit are both zero, and pid 0,
//!   tid 0 and CPU 0 are real values; `go tool pprof` shows the unit only
//!   in `-raw`), `comm` (the process name), `thread_name` and
//!   `container_id` (strings, left out when empty or unknown). Per-sample timestamps are not kept: pprof has
//!   no field for them.
//! * One location per distinct unwound frame: (frame type, file, address)
//!   and its chain of functions. Inlined frames become extra `Line`s of the
//!   location they were inlined into, innermost first (`line[0]` is the
//!   innermost, as pprof wants); `address` is the ELF virtual address for
//!   native frames and the kernel address for kernel frames.
//! * Functions deduplicated by (name, file), named as
//!   [`Profile::frame_name`](crate::Profile::frame_name) names them (so an
//!   error frame is a function `<unwinding aborted due to error NAME>`).
//!   `system_name` is left empty: names arrive demangled, and an empty
//!   system name tells `go tool pprof` so (with `system_name == name` it
//!   would "simplify" names by cutting everything between `<` and `>`,
//!   blanking `<module>`, `<unwinding aborted …>` and Rust's
//!   `<T as Trait>::f`).
//! * Mappings. pprof has no per-location attributes, so **the frame type
//!   is carried by the location's mapping**, which `go tool pprof` shows
//!   (`-raw`) and matches with `-focus`/`-ignore`/`-show_from`:
//!   - a native frame of a known executable: one mapping per executable,
//!     `memory_start`/`memory_limit` its ELF virtual address range (the
//!     addresses are ELF vaddrs, not process addresses, so one mapping
//!     serves every process), `file_offset` 0, `filename` its path,
//!     `build_id` its GNU build id, or its FileID in hex when it has none;
//!     the FileID of an executable that does have a GNU build id is kept
//!     in a profile comment `file_id HEX PATH`, so no identity is lost;
//!   - a native frame of a file the profile has no executable for: a
//!     mapping `[unknown]` whose `build_id` is that FileID in hex;
//!   - a kernel frame: the mapping `[kernel]` (its range spans the kernel
//!     addresses seen);
//!   - an interpreted frame: the mapping `[TYPE]` with the OpenTelemetry
//!     type name, e.g. `[cpython]`, `[jvm]`, `[v8js]`;
//!   - an error frame: the mapping `[error]`.
//!
//!   Names in brackets are what pprof (like perf) treats as not files, so
//!   it never tries to symbolize them. `go tool pprof -focus='\[kernel\]'`
//!   keeps the stacks through kernel code, `-focus=cpython` those through
//!   Python code, `-tagfocus=cpu=0` the samples of CPU 0. The `has_*` flags of a mapping say
//!   what is true of all its locations: `has_functions` only when every
//!   frame was symbolized (so `go tool pprof` may still symbolize the rest
//!   from a local binary), `has_inline_frames` when any location has more
//!   than one line.
//! * Comments: `host NAME`, then the `file_id` lines above.
//!
//! Strings are deduplicated and `string_table[0]` is `""`; every id is
//! 1-based and dense ([`validate`] checks both).

use crate::{FrameClass, Profile};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use libpf::{FileId, Frame};
use prost::Message;
use std::collections::HashMap;
use std::io::{Read, Write};

/// The `perftools.profiles` messages (`profile.proto`).
pub mod proto {
    /// A profile: samples of stacks of locations, with their tables.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        /// What each sample value measures (type and unit).
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        /// Every string; index 0 is `""`.
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        /// Regexp (string index) of frames to drop.
        #[prost(int64, tag = "7")]
        pub drop_frames: i64,
        /// Regexp (string index) of frames to keep.
        #[prost(int64, tag = "8")]
        pub keep_frames: i64,
        /// Time of collection (Unix ns).
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        /// Duration of the profile.
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        /// What one period is.
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        /// Distance between samples, in `period_type` units.
        #[prost(int64, tag = "12")]
        pub period: i64,
        /// Free-form comments (string indices).
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        /// Type (string index) of the preferred sample value.
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
        /// Documentation link (string index), newer revisions only.
        #[prost(int64, tag = "15")]
        pub doc_url: i64,
    }

    /// A (type, unit) pair of string indices.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    /// One stack with its values and labels.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// Leaf first.
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        /// One per `sample_type`.
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    /// A string (`str`) or numeric (`num`) label.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    /// A mapped file (or a bracketed pseudo-file such as `[kernel]`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    /// A code address and the functions (inline chain) at it.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// 0 when there is no mapping.
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        /// Innermost first: `line[0]` is the innermost inlined function.
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
        #[prost(bool, tag = "5")]
        pub is_folded: bool,
    }

    /// A function and a line in it.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
        #[prost(int64, tag = "3")]
        pub column: i64,
    }

    /// A function: name, system name and source file (string indices).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }

    impl Profile {
        /// The string at `index`, `""` when out of range.
        pub fn string(&self, index: i64) -> &str {
            usize::try_from(index)
                .ok()
                .and_then(|i| self.string_table.get(i))
                .map_or("", String::as_str)
        }
    }
}

/// Largest decompressed profile [`decode`] accepts (a guard against gzip
/// bombs when the collector reads profiles from the network).
pub const MAX_DECODED_BYTES: usize = 1 << 30;

/// The model as a gzipped `perftools.profiles.Profile` (see the module docs
/// for what it holds).
pub fn encode(profile: &Profile) -> Vec<u8> {
    let raw = to_proto(profile).encode_to_vec();
    let mut gz = GzEncoder::new(
        Vec::with_capacity(raw.len() / 4 + 64),
        Compression::default(),
    );
    gz.write_all(&raw).expect("writing to a Vec cannot fail");
    gz.finish().expect("writing to a Vec cannot fail")
}

/// Reads a pprof profile, gzipped or not (as `go tool pprof` accepts both).
pub fn decode(bytes: &[u8]) -> Result<proto::Profile, crate::Error> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut raw = Vec::new();
        GzDecoder::new(bytes)
            .take(MAX_DECODED_BYTES as u64 + 1)
            .read_to_end(&mut raw)?;
        if raw.len() > MAX_DECODED_BYTES {
            return Err(crate::Error::TooLarge {
                limit: MAX_DECODED_BYTES,
            });
        }
        Ok(proto::Profile::decode(raw.as_slice())?)
    } else {
        Ok(proto::Profile::decode(bytes)?)
    }
}

/// Checks the invariants pprof readers rely on: `string_table[0] == ""`,
/// every string index in range, mapping/location/function ids 1-based and
/// equal to their position + 1 (so dense and unique), every referenced id
/// present, one value per sample type. Returns the first violation.
pub fn validate(p: &proto::Profile) -> Result<(), String> {
    if p.string_table.first().map(String::as_str) != Some("") {
        return Err("string_table[0] is not \"\"".into());
    }
    let nstr = p.string_table.len() as i64;
    let s = |what: &str, i: i64| {
        if (0..nstr).contains(&i) {
            Ok(())
        } else {
            Err(format!("{what}: string index {i} out of range 0..{nstr}"))
        }
    };
    for (i, vt) in p.sample_type.iter().chain(&p.period_type).enumerate() {
        s(&format!("value type {i}"), vt.r#type)?;
        s(&format!("value type {i}"), vt.unit)?;
    }
    for &c in &p.comment {
        s("comment", c)?;
    }
    s("default_sample_type", p.default_sample_type)?;
    s("drop_frames", p.drop_frames)?;
    s("keep_frames", p.keep_frames)?;
    s("doc_url", p.doc_url)?;
    for (i, m) in p.mapping.iter().enumerate() {
        if m.id != i as u64 + 1 {
            return Err(format!("mapping at {i} has id {}", m.id));
        }
        s("mapping filename", m.filename)?;
        s("mapping build_id", m.build_id)?;
    }
    for (i, f) in p.function.iter().enumerate() {
        if f.id != i as u64 + 1 {
            return Err(format!("function at {i} has id {}", f.id));
        }
        s("function name", f.name)?;
        s("function system_name", f.system_name)?;
        s("function filename", f.filename)?;
    }
    let nfun = p.function.len() as u64;
    let nmap = p.mapping.len() as u64;
    for (i, l) in p.location.iter().enumerate() {
        if l.id != i as u64 + 1 {
            return Err(format!("location at {i} has id {}", l.id));
        }
        if l.mapping_id > nmap {
            return Err(format!(
                "location {}: dangling mapping {}",
                l.id, l.mapping_id
            ));
        }
        for line in &l.line {
            if line.function_id == 0 || line.function_id > nfun {
                return Err(format!(
                    "location {}: dangling function {}",
                    l.id, line.function_id
                ));
            }
        }
    }
    let nloc = p.location.len() as u64;
    for (i, smp) in p.sample.iter().enumerate() {
        if smp.value.len() != p.sample_type.len() {
            return Err(format!(
                "sample {i}: {} values for {} sample types",
                smp.value.len(),
                p.sample_type.len()
            ));
        }
        if let Some(&id) = smp.location_id.iter().find(|&&id| id == 0 || id > nloc) {
            return Err(format!("sample {i}: dangling location {id}"));
        }
        for l in &smp.label {
            s("label key", l.key)?;
            s("label str", l.str)?;
            s("label num_unit", l.num_unit)?;
        }
    }
    Ok(())
}

/// Which mapping a location belongs to.
#[derive(Clone, PartialEq, Eq, Hash)]
enum MapKey {
    /// A native frame of an executable of the profile.
    Executable(FileId),
    /// A native frame of a file the profile has no executable for.
    UnknownFile(FileId),
    /// `[kernel]`, `[error]`, `[cpython]`, `[unknown]`, ...
    Pseudo(String),
}

/// A location's identity: the unwound frame and its inline chain.
#[derive(Clone, PartialEq, Eq, Hash)]
struct LocKey {
    frame_type: u8,
    file_id: Option<FileId>,
    address: u64,
    lines: Vec<(u64, i64)>,
}

struct MappingAcc {
    mapping: proto::Mapping,
    all_functions: bool,
    all_filenames: bool,
    all_lines: bool,
    any_inline: bool,
    /// The `[kernel]` mapping, whose range is the addresses seen.
    kernel: bool,
    min: u64,
    max: u64,
}

#[derive(Default)]
struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<proto::Function>,
    function_ids: HashMap<(i64, i64), u64>,
    locations: Vec<proto::Location>,
    location_ids: HashMap<LocKey, u64>,
    mappings: Vec<MappingAcc>,
    mapping_ids: HashMap<MapKey, u64>,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.string_ids.get(s) {
            return i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), i);
        i
    }

    fn function(&mut self, name: &str, file: &str) -> u64 {
        let key = (self.string(name), self.string(file));
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        self.functions.push(proto::Function {
            id,
            name: key.0,
            system_name: 0,
            filename: key.1,
            start_line: 0,
        });
        self.function_ids.insert(key, id);
        id
    }

    fn mapping(&mut self, profile: &Profile, frame: &Frame) -> u64 {
        let key = match FrameClass::of(frame) {
            FrameClass::Native => match frame.file_id {
                Some(id) if profile.executables.contains_key(&id) => MapKey::Executable(id),
                Some(id) => MapKey::UnknownFile(id),
                None => MapKey::Pseudo("[unknown]".into()),
            },
            FrameClass::Kernel => MapKey::Pseudo("[kernel]".into()),
            FrameClass::Error => MapKey::Pseudo("[error]".into()),
            FrameClass::Interpreted => MapKey::Pseudo(format!("[{}]", frame.frame_type)),
        };
        if let Some(&id) = self.mapping_ids.get(&key) {
            return id;
        }
        let id = self.mappings.len() as u64 + 1;
        let (start, limit, filename, build_id) = match &key {
            MapKey::Executable(fid) => {
                let exe = &profile.executables[fid];
                let build_id = match &exe.gnu_build_id {
                    Some(b) => b.to_string(),
                    None => fid.to_string(),
                };
                (
                    exe.vaddr_start,
                    exe.vaddr_end,
                    exe.path.to_string(),
                    build_id,
                )
            }
            MapKey::UnknownFile(fid) => (0, 0, "[unknown]".to_string(), fid.to_string()),
            MapKey::Pseudo(name) => (0, 0, name.clone(), String::new()),
        };
        let mapping = proto::Mapping {
            id,
            memory_start: start,
            memory_limit: limit,
            file_offset: 0,
            filename: self.string(&filename),
            build_id: self.string(&build_id),
            ..Default::default()
        };
        self.mappings.push(MappingAcc {
            mapping,
            all_functions: true,
            all_filenames: true,
            all_lines: true,
            any_inline: false,
            kernel: matches!(&key, MapKey::Pseudo(n) if n == "[kernel]"),
            min: u64::MAX,
            max: 0,
        });
        self.mapping_ids.insert(key, id);
        id
    }

    /// The location of one unwound frame: `chain` is the frames at one
    /// address, innermost inlined first, the real (outermost) one last.
    fn location(&mut self, profile: &Profile, chain: &[Frame]) -> u64 {
        let outer = chain.last().expect("a chain has a frame");
        let mut lines = Vec::with_capacity(chain.len());
        for f in chain {
            let name = profile.frame_name(f);
            let file = f.source_file.as_deref().unwrap_or("");
            let fid = self.function(&name, file);
            lines.push((fid, f.source_line.map_or(0, i64::from)));
        }
        let key = LocKey {
            frame_type: outer.frame_type.as_u8(),
            file_id: outer.file_id,
            address: outer.address_or_line.get(),
            lines,
        };
        if let Some(&id) = self.location_ids.get(&key) {
            return id;
        }
        let mapping_id = self.mapping(profile, outer);
        let acc = &mut self.mappings[mapping_id as usize - 1];
        acc.all_functions &= chain.iter().all(|f| f.function_name.is_some());
        acc.all_filenames &= chain.iter().all(|f| f.source_file.is_some());
        acc.all_lines &= chain.iter().all(|f| f.source_line.is_some());
        acc.any_inline |= chain.len() > 1;
        acc.min = acc.min.min(key.address);
        acc.max = acc.max.max(key.address);
        let id = self.locations.len() as u64 + 1;
        self.locations.push(proto::Location {
            id,
            mapping_id,
            address: key.address,
            line: key
                .lines
                .iter()
                .map(|&(function_id, line)| proto::Line {
                    function_id,
                    line,
                    column: 0,
                })
                .collect(),
            is_folded: false,
        });
        self.location_ids.insert(key, id);
        id
    }
}

/// Splits a leaf-first stack into unwound frames: each chain is zero or
/// more `inlined` frames followed by the frame they were inlined into.
pub(crate) fn inline_chains(frames: &[Frame]) -> impl Iterator<Item = &[Frame]> {
    let mut rest = frames;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        // A malformed stack ending in an inlined frame closes its chain there.
        let end = rest
            .iter()
            .position(|f| !f.inlined)
            .map_or(rest.len(), |i| i + 1);
        let (chain, tail) = rest.split_at(end);
        rest = tail;
        Some(chain)
    })
}

/// The model as a `proto::Profile` (what [`encode`] gzips).
pub fn to_proto(profile: &Profile) -> proto::Profile {
    let mut b = Builder::default();
    b.string("");
    let samples_t = b.string("samples");
    let count_u = b.string("count");
    let cpu_t = b.string("cpu");
    let ns_u = b.string("nanoseconds");
    let keys = [
        b.string("pid"),
        b.string("tid"),
        b.string("cpu"),
        b.string("comm"),
        b.string("thread_name"),
        b.string("container_id"),
    ];
    let [k_pid, k_tid, k_cpu, k_comm, k_thread, k_container] = keys;
    let id_unit = b.string("id");
    let period = profile.period_ns();

    let mut samples = Vec::with_capacity(profile.samples.len());
    for s in &profile.samples {
        let location_id: Vec<u64> = inline_chains(&s.frames)
            .map(|chain| b.location(profile, chain))
            .collect();
        let l = &s.labels;
        let num = |key, num| proto::Label {
            key,
            num,
            num_unit: id_unit,
            ..Default::default()
        };
        let mut label = vec![num(k_pid, l.pid.into()), num(k_tid, l.tid.into())];
        if let Some(cpu) = l.cpu {
            label.push(num(k_cpu, cpu.into()));
        }
        let strs = [
            (k_comm, Some(&l.process_name)),
            (k_thread, Some(&l.thread_name)),
            (k_container, l.container_id.as_ref()),
        ];
        for (key, v) in strs {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                label.push(proto::Label {
                    key,
                    str: b.string(v),
                    ..Default::default()
                });
            }
        }
        let count = i64::try_from(s.count).unwrap_or(i64::MAX);
        samples.push(proto::Sample {
            location_id,
            value: vec![count, count.saturating_mul(period as i64)],
            label,
        });
    }

    let mut comment = Vec::new();
    if !profile.host_name.is_empty() {
        comment.push(b.string(&format!("host {}", profile.host_name)));
    }
    for (fid, exe) in &profile.executables {
        if exe.gnu_build_id.is_some() && b.mapping_ids.contains_key(&MapKey::Executable(*fid)) {
            comment.push(b.string(&format!("file_id {fid} {}", exe.path)));
        }
    }

    let mappings = std::mem::take(&mut b.mappings)
        .into_iter()
        .map(|acc| {
            let mut m = acc.mapping;
            m.has_functions = acc.all_functions;
            m.has_filenames = acc.all_filenames;
            m.has_line_numbers = acc.all_lines;
            m.has_inline_frames = acc.any_inline;
            if acc.kernel && acc.min <= acc.max {
                m.memory_start = acc.min;
                m.memory_limit = acc.max.saturating_add(1);
            }
            m
        })
        .collect();

    proto::Profile {
        sample_type: vec![
            proto::ValueType {
                r#type: samples_t,
                unit: count_u,
            },
            proto::ValueType {
                r#type: cpu_t,
                unit: ns_u,
            },
        ],
        sample: samples,
        mapping: mappings,
        location: b.locations,
        function: b.functions,
        string_table: b.strings,
        drop_frames: 0,
        keep_frames: 0,
        time_nanos: i64::try_from(profile.start_unix_ns).unwrap_or(i64::MAX),
        duration_nanos: i64::try_from(profile.duration_ns).unwrap_or(i64::MAX),
        period_type: Some(proto::ValueType {
            r#type: cpu_t,
            unit: ns_u,
        }),
        period: period as i64,
        comment,
        default_sample_type: cpu_t,
        doc_url: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{self, BLOB, SERVER};
    use std::collections::{BTreeMap, HashSet};

    /// (string labels, numeric labels, [(function, file, line)] leaf first, count)
    type Stack = (
        BTreeMap<String, String>,
        BTreeMap<String, i64>,
        Vec<(String, String, i64)>,
        i64,
    );

    /// The stacks a pprof reader sees: each location expanded into its
    /// lines, innermost first.
    fn stacks_of_proto(p: &proto::Profile) -> Vec<Stack> {
        p.sample
            .iter()
            .map(|s| {
                let mut strs = BTreeMap::new();
                let mut nums = BTreeMap::new();
                for l in &s.label {
                    if l.str != 0 {
                        strs.insert(p.string(l.key).to_string(), p.string(l.str).to_string());
                    } else {
                        nums.insert(p.string(l.key).to_string(), l.num);
                    }
                }
                let mut frames = Vec::new();
                for &id in &s.location_id {
                    let loc = &p.location[id as usize - 1];
                    for line in &loc.line {
                        let f = &p.function[line.function_id as usize - 1];
                        frames.push((
                            p.string(f.name).into(),
                            p.string(f.filename).into(),
                            line.line,
                        ));
                    }
                }
                (strs, nums, frames, s.value[0])
            })
            .collect()
    }

    /// The same stacks computed from the model directly.
    fn stacks_of_model(p: &Profile) -> Vec<Stack> {
        p.samples
            .iter()
            .map(|s| {
                let l = &s.labels;
                let mut strs = BTreeMap::new();
                for (k, v) in [
                    ("comm", Some(&l.process_name)),
                    ("thread_name", Some(&l.thread_name)),
                    ("container_id", l.container_id.as_ref()),
                ] {
                    if let Some(v) = v.filter(|v| !v.is_empty()) {
                        strs.insert(k.to_string(), v.to_string());
                    }
                }
                let mut nums = BTreeMap::from([
                    ("pid".to_string(), l.pid.into()),
                    ("tid".to_string(), l.tid.into()),
                ]);
                if let Some(cpu) = l.cpu {
                    nums.insert("cpu".into(), cpu.into());
                }
                let frames = s
                    .frames
                    .iter()
                    .map(|f| {
                        (
                            p.frame_name(f).into_owned(),
                            f.source_file.as_deref().unwrap_or("").to_string(),
                            f.source_line.map_or(0, i64::from),
                        )
                    })
                    .collect();
                (strs, nums, frames, s.count as i64)
            })
            .collect()
    }

    #[test]
    fn round_trip() {
        for p in [testdata::realistic(), testdata::small(), Profile::default()] {
            let bytes = encode(&p);
            assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzipped");
            let decoded = decode(&bytes).unwrap();
            assert_eq!(decoded, to_proto(&p));
            validate(&decoded).unwrap();
            assert_eq!(stacks_of_proto(&decoded), stacks_of_model(&p));
            // Uncompressed input is accepted too.
            assert_eq!(decode(&decoded.encode_to_vec()).unwrap(), decoded);
        }
    }

    #[test]
    fn header_fields() {
        let p = testdata::realistic();
        let pb = to_proto(&p);
        let vt = |v: &proto::ValueType| (pb.string(v.r#type), pb.string(v.unit));
        let types: Vec<_> = pb.sample_type.iter().map(vt).collect();
        assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
        assert_eq!(vt(pb.period_type.as_ref().unwrap()), ("cpu", "nanoseconds"));
        assert_eq!(pb.period, 10_000_000);
        assert_eq!(pb.time_nanos, 1_700_000_000_000_000_000);
        assert_eq!(pb.duration_nanos, 5_000_000_000);
        assert_eq!(pb.string(pb.default_sample_type), "cpu");
        for s in &pb.sample {
            assert_eq!(s.value[1], s.value[0] * 10_000_000);
        }
        let comments: Vec<_> = pb.comment.iter().map(|&c| pb.string(c)).collect();
        assert_eq!(
            comments,
            [
                "host web-1",
                "file_id 11110000000000012222000000000002 /opt/app/bin/server",
                "file_id 33330000000000034444000000000004 /lib/x86_64-linux-gnu/libc.so.6",
            ]
        );
    }

    #[test]
    fn strings_and_ids() {
        let pb = to_proto(&testdata::realistic());
        validate(&pb).unwrap();
        assert_eq!(pb.string_table[0], "");
        let unique: HashSet<_> = pb.string_table.iter().collect();
        assert_eq!(
            unique.len(),
            pb.string_table.len(),
            "strings are deduplicated"
        );
        for (i, m) in pb.mapping.iter().enumerate() {
            assert_eq!(m.id, i as u64 + 1);
        }
        for (i, l) in pb.location.iter().enumerate() {
            assert_eq!(l.id, i as u64 + 1);
            assert!(l.mapping_id >= 1 && l.mapping_id <= pb.mapping.len() as u64);
            assert!(!l.line.is_empty());
        }
        for (i, f) in pb.function.iter().enumerate() {
            assert_eq!(f.id, i as u64 + 1);
            assert_eq!(f.system_name, 0);
        }
        let names: Vec<_> = pb
            .function
            .iter()
            .map(|f| (pb.string(f.name), pb.string(f.filename)))
            .collect();
        let unique: HashSet<_> = names.iter().collect();
        assert_eq!(
            unique.len(),
            names.len(),
            "functions are deduplicated by (name, file)"
        );
        // handle_request at two addresses: one function, two locations.
        assert_eq!(names.iter().filter(|n| n.0 == "handle_request").count(), 1);
        // 24 distinct unwound frames in the realistic profile.
        assert_eq!(pb.location.len(), 24);
    }

    #[test]
    fn validate_finds_violations() {
        let good = to_proto(&testdata::small());
        validate(&good).unwrap();
        let mut p = good.clone();
        p.string_table[0] = "x".into();
        assert!(validate(&p).unwrap_err().contains("string_table[0]"));
        let mut p = good.clone();
        p.location[0].line[0].function_id = 99;
        assert!(validate(&p).unwrap_err().contains("dangling function"));
        let mut p = good.clone();
        p.sample[0].location_id.push(0);
        assert!(validate(&p).unwrap_err().contains("dangling location"));
        let mut p = good.clone();
        p.function[0].name = 1_000;
        assert!(validate(&p).unwrap_err().contains("out of range"));
        let mut p = good.clone();
        p.mapping[0].id = 2;
        assert!(validate(&p).unwrap_err().contains("mapping at 0"));
        let mut p = good;
        p.location[0].mapping_id = 9;
        assert!(validate(&p).unwrap_err().contains("dangling mapping"));
    }

    #[test]
    fn inline_chain_is_one_location_innermost_first() {
        let p = testdata::realistic();
        let pb = to_proto(&p);
        let at = |addr: u64| pb.location.iter().find(|l| l.address == addr).unwrap();
        let loc = at(0x3000);
        let lines: Vec<_> = loc
            .line
            .iter()
            .map(|l| {
                (
                    pb.string(pb.function[l.function_id as usize - 1].name),
                    l.line,
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                ("crc32_update", 7),
                ("parse_header", 12),
                ("parse_request", 40)
            ]
        );
        // Both worker samples with this stack share the locations.
        assert_eq!(pb.sample[1].location_id, pb.sample[2].location_id);
        assert_eq!(pb.sample[1].location_id.len(), 5);
        // Recursion repeats a location id.
        assert_eq!(&pb.sample[3].location_id[..3], &[13, 14, 14]);
    }

    #[test]
    fn mappings_carry_the_frame_type() {
        let p = testdata::realistic();
        let pb = to_proto(&p);
        let by_name = |n: &str| {
            pb.mapping
                .iter()
                .find(|m| pb.string(m.filename) == n)
                .unwrap()
        };
        let mapping_of = |addr: u64| {
            let l = pb.location.iter().find(|l| l.address == addr).unwrap();
            pb.string(pb.mapping[l.mapping_id as usize - 1].filename)
        };
        assert_eq!(mapping_of(0xffff_ffff_81a0_1234), "[kernel]");
        assert_eq!(mapping_of(0x2345), "/opt/app/bin/server");
        assert_eq!(mapping_of(0x11a2b0), "/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(mapping_of(0xfa1), "[error]");
        assert_eq!(mapping_of(12), "[cpython]");

        let server = by_name("/opt/app/bin/server");
        assert_eq!((server.memory_start, server.memory_limit), (0x1000, 0x9000));
        assert_eq!(
            pb.string(server.build_id),
            "4fa3c0ffee0d15ea5e5ca1ab1e0000000000beef"
        );
        assert!(
            server.has_functions
                && server.has_filenames
                && server.has_line_numbers
                && server.has_inline_frames
        );
        let libc = by_name("/lib/x86_64-linux-gnu/libc.so.6");
        assert!(
            libc.has_functions
                && !libc.has_filenames
                && !libc.has_line_numbers
                && !libc.has_inline_frames
        );
        // No GNU build id: the FileID stands in.
        let blob = by_name("/opt/vendor/blob");
        assert_eq!(pb.string(blob.build_id), BLOB.to_string());
        assert!(!blob.has_functions, "one of its frames has no symbol");
        let kernel = by_name("[kernel]");
        assert_eq!(kernel.memory_start, 0xffff_ffff_8111_2233);
        assert_eq!(kernel.memory_limit, 0xffff_ffff_8200_0069);
        assert_eq!(pb.string(kernel.build_id), "");
    }

    #[test]
    fn labels() {
        let pb = to_proto(&testdata::realistic());
        let stacks = stacks_of_proto(&pb);
        let (strs, nums, _, count) = &stacks[4];
        assert_eq!(*count, 4);
        assert_eq!(strs["comm"], "vendor");
        assert_eq!(strs["thread_name"], "blob-io");
        assert_eq!(strs["container_id"], "3f2a9c1e7b5d");
        assert_eq!((nums["pid"], nums["tid"], nums["cpu"]), (200, 201, 2));
        assert!(!stacks[0].0.contains_key("container_id"));
        // Numeric labels have the unit `id`, so zero values survive readers
        // that drop (0, no unit) labels.
        let idle = &pb.sample[6];
        assert!(idle
            .label
            .iter()
            .filter(|l| l.str == 0)
            .all(|l| pb.string(l.num_unit) == "id"));
        assert_eq!(stacks[6].1["pid"], 0);
    }

    #[test]
    fn error_frame_is_a_function() {
        let pb = to_proto(&testdata::small());
        assert!(
            pb.function
                .iter()
                .any(|f| pb.string(f.name)
                    == "<unwinding aborted due to error native_no_unwind_info>")
        );
    }

    #[test]
    fn error_frames_are_functions_named_from_the_spec() {
        let pb = to_proto(&testdata::errors());
        let names: Vec<&str> = pb.function.iter().map(|f| pb.string(f.name)).collect();
        for want in testdata::ERROR_FRAME_NAMES {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert!(
            !pb.string_table.iter().any(|s| s.contains("error code")),
            "{:?}",
            pb.string_table
        );
        // Each leaf is its error function, under main.
        let leaves: Vec<String> = stacks_of_proto(&pb)
            .into_iter()
            .map(|(_, _, frames, _)| frames[0].0.clone())
            .collect();
        assert_eq!(leaves, testdata::ERROR_FRAME_NAMES);
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(matches!(
            decode(&[0x1f, 0x8b, 0, 1, 2]),
            Err(crate::Error::Io(_))
        ));
        assert!(matches!(
            decode(&[0xff; 16]),
            Err(crate::Error::Protobuf(_))
        ));
        let e = decode(&[0xff; 16]).unwrap_err();
        assert!(e.to_string().starts_with("not a pprof profile"));
    }

    #[test]
    fn chains_split_at_non_inlined_frames() {
        let p = testdata::realistic();
        let lens: Vec<usize> = inline_chains(&p.samples[1].frames)
            .map(<[_]>::len)
            .collect();
        assert_eq!(lens, [3, 1, 1, 1, 1]);
        // A stack ending in an inlined frame closes the chain there.
        let f = testdata::inlined(SERVER, 1, "x", ("x.c", 1));
        let lens: Vec<usize> = inline_chains(&[f.clone(), f]).map(<[_]>::len).collect();
        assert_eq!(lens, [2]);
    }
}
