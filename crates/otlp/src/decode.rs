//! `ExportProfilesServiceRequest` → profile model, the inverse of
//! [`encode`](crate::encode) (see there for the mapping), for any producer
//! that follows the same conventions (upstream's agent, the OpenTelemetry
//! collector).
//!
//! One `(DecodedResource, Profile)` per OTLP `Profile`. Choices:
//! * Resource/Scope attributes are read inline (`key`, `string_value`) or
//!   through the string table (`key_strindex`, `string_value_strindex`);
//!   `process.pid` may be an int or a decimal string;
//! * only CPU sample profiles (sample type `samples`/`count`) fit the model;
//!   others are rejected (strict [`decode`]) or listed in
//!   [`Lenient::rejected`];
//! * a sample's count is the sum of its values, or its number of timestamps
//!   when it has no values. Its timestamps are kept when each stands for one
//!   sample (no values, or all values 1), else dropped (the model keeps one
//!   timestamp per counted sample);
//! * frequency = round(1e9 / period) when the period type is in nanoseconds
//!   and the period positive, else 0;
//! * frame types come from `profile.frame.type`: the semconv strings of
//!   libpf's kinds (`php` reads as `php`, not `php_jit`), `abort-marker`;
//!   unknown strings read as kind `unknown`. A location of mapping 0 whose
//!   only line's function starts with [`profile::ERROR_FRAME_PREFIX`]
//!   (`<unwinding aborted`) is an error frame of its kind (the error bit is
//!   set). An error frame keeps the name it was sent with (a newer agent may
//!   know codes this spec does not), except the bare-number stand-in
//!   `<unwinding aborted due to error code N>` of older encoders, which is
//!   dropped so that the model names the frame from the spec;
//! * a location with several lines becomes one frame per line, innermost
//!   first, all but the last marked `inlined`; a location with no lines one
//!   unsymbolized frame;
//! * a frame's `file_id` is its mapping's `process.executable.build_id.htlhash`
//!   (absent or unparsable: none; `FileId::UNKNOWN_KERNEL` on a kernel frame:
//!   none); non-kernel frames' mappings with an
//!   htlhash become `Profile::executables` (path = the mapping's file name);
//! * the host name is the resource's `host.name` (also copied into
//!   `Profile::host_name`).

use crate::keys;
use crate::validate::{string_value, validate, ValidationError, EMPTY_DICT};
use libpf::{FileId, Frame, FrameKind, FrameType};
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development as pb;
use profile::{Executable, Profile, Sample, SampleLabels};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What the resource of a profile says about where it came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodedResource {
    pub host_name: Option<String>,
    pub host_id: Option<String>,
    pub pid: Option<u32>,
    pub executable_path: Option<String>,
    pub executable_name: Option<String>,
    pub container_id: Option<String>,
    pub service_name: Option<String>,
    /// Every resource attribute with a scalar value, as text (keys resolved),
    /// in message order.
    pub attributes: Vec<(String, String)>,
}

/// A profile [`decode_lenient`] left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedProfile {
    /// `resource_profiles[r].scope_profiles[s].profiles[p]`.
    pub path: String,
    pub reason: String,
}

/// What [`decode_lenient`] made of a request.
#[derive(Clone, Debug, Default)]
pub struct Lenient {
    pub profiles: Vec<(DecodedResource, Profile)>,
    pub rejected: Vec<RejectedProfile>,
}

/// Validates, then decodes every profile; any profile the model cannot
/// represent fails the whole request.
pub fn decode(
    req: &ExportProfilesServiceRequest,
) -> Result<Vec<(DecodedResource, Profile)>, ValidationError> {
    let l = decode_lenient(req)?;
    if let Some(r) = l.rejected.first() {
        return Err(ValidationError::new(format!("{}: {}", r.path, r.reason)));
    }
    Ok(l.profiles)
}

/// Validates (a structural error fails the whole request), then decodes the
/// profiles the model can represent and lists the others: what an OTLP
/// receiver reports as partial success.
pub fn decode_lenient(req: &ExportProfilesServiceRequest) -> Result<Lenient, ValidationError> {
    validate(req)?;
    let d = req.dictionary.as_ref().unwrap_or(&EMPTY_DICT);
    let mut ctx = Ctx {
        d,
        frames: vec![None; d.location_table.len()],
        stacks: vec![None; d.stack_table.len()],
        strings: HashMap::new(),
    };
    let mut out = Lenient::default();
    for (r, rp) in req.resource_profiles.iter().enumerate() {
        let res = match resource(d, rp.resource.as_ref().map_or(&[][..], |r| &r.attributes)) {
            Ok(res) => res,
            Err(reason) => {
                for (s, sp) in rp.scope_profiles.iter().enumerate() {
                    for p in 0..sp.profiles.len() {
                        out.rejected.push(RejectedProfile {
                            path: format!(
                                "resource_profiles[{r}].scope_profiles[{s}].profiles[{p}]"
                            ),
                            reason: reason.clone(),
                        });
                    }
                }
                continue;
            }
        };
        for (s, sp) in rp.scope_profiles.iter().enumerate() {
            for (p, prof) in sp.profiles.iter().enumerate() {
                match ctx.profile(&res, prof) {
                    Ok(profile) => out.profiles.push((res.clone(), profile)),
                    Err(reason) => out.rejected.push(RejectedProfile {
                        path: format!("resource_profiles[{r}].scope_profiles[{s}].profiles[{p}]"),
                        reason,
                    }),
                }
            }
        }
    }
    Ok(out)
}

/// Whether `name` is the stand-in older encoders sent for an error frame
/// without a name, `<unwinding aborted due to error code N>` with N the
/// frame's code: such a frame is read as unnamed, so that the model names
/// it from spec/errors.json ([`profile::error_frame_name`]) like every
/// other output does, rather than showing the bare number.
fn is_legacy_error_text(name: &str, code: u64) -> bool {
    name.strip_prefix(profile::ERROR_FRAME_PREFIX)
        .and_then(|r| r.strip_prefix(" due to error code "))
        .and_then(|r| r.strip_suffix('>'))
        .is_some_and(|n| n.parse() == Ok(code))
}

fn str_at(d: &pb::ProfilesDictionary, i: i32) -> &str {
    usize::try_from(i)
        .ok()
        .and_then(|i| d.string_table.get(i))
        .map_or("", String::as_str)
}

fn any_to_text(d: &pb::ProfilesDictionary, v: Option<&AnyValue>) -> Option<String> {
    match v?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::StringValueStrindex(i) => Some(str_at(d, *i).to_string()),
        any_value::Value::IntValue(n) => Some(n.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::DoubleValue(f) => Some(f.to_string()),
        _ => None,
    }
}

fn resource(d: &pb::ProfilesDictionary, attrs: &[KeyValue]) -> Result<DecodedResource, String> {
    let mut r = DecodedResource::default();
    for kv in attrs {
        let key = if kv.key.is_empty() {
            str_at(d, kv.key_strindex)
        } else {
            kv.key.as_str()
        };
        let Some(text) = any_to_text(d, kv.value.as_ref()) else {
            continue;
        };
        match key {
            keys::PROCESS_PID => {
                let pid = text.parse::<u32>().map_err(|_| {
                    format!("resource attribute process.pid {text:?} is not a valid pid")
                })?;
                r.pid = Some(pid);
            }
            keys::PROCESS_EXECUTABLE_PATH => r.executable_path = Some(text.clone()),
            keys::PROCESS_EXECUTABLE_NAME => r.executable_name = Some(text.clone()),
            keys::CONTAINER_ID => r.container_id = Some(text.clone()),
            keys::HOST_NAME => r.host_name = Some(text.clone()),
            keys::HOST_ID => r.host_id = Some(text.clone()),
            keys::SERVICE_NAME => r.service_name = Some(text.clone()),
            _ => {}
        }
        r.attributes.push((key.to_string(), text));
    }
    Ok(r)
}

/// The frames one location expands to, and the executable of its mapping.
type LocationFrames = (Vec<Frame>, Option<Executable>);

/// The frames of one stack and the executables they use.
type StackFrames = (Arc<[Frame]>, Arc<[Executable]>);

struct Ctx<'a> {
    d: &'a pb::ProfilesDictionary,
    /// location index → its frames and the executable of its mapping.
    /// By location index (validated, so in range).
    frames: Vec<Option<LocationFrames>>,
    /// By stack index: the frames and the FileIds of the executables they
    /// use.
    stacks: Vec<Option<StackFrames>>,
    /// Label strings shared across samples (one allocation per distinct
    /// thread name, not per sample).
    strings: HashMap<&'a str, Arc<str>>,
}

fn frame_type_from_str(s: &str) -> FrameType {
    if s == libpf::generated::frame_types::ABORT_MARKER {
        return FrameType::ABORT;
    }
    // `php` is both Php and PhpJit; ALL lists Php first, so it wins.
    FrameKind::ALL
        .iter()
        .find(|k| k.semconv() == s)
        .map_or(FrameType::from_kind(FrameKind::Unknown), |&k| {
            FrameType::from_kind(k)
        })
}

impl<'a> Ctx<'a> {
    fn attr_str(&self, indices: &[i32], key: &str) -> Option<&'a str> {
        let d = self.d;
        indices.iter().find_map(|&a| {
            let kv = d.attribute_table.get(usize::try_from(a).ok()?)?;
            (str_at(d, kv.key_strindex) == key)
                .then(|| string_value(d, kv.value.as_ref()))
                .flatten()
        })
    }

    fn attr_int(&self, indices: &[i32], key: &str) -> Option<i64> {
        let d = self.d;
        indices.iter().find_map(|&a| {
            let kv = d.attribute_table.get(usize::try_from(a).ok()?)?;
            if str_at(d, kv.key_strindex) != key {
                return None;
            }
            match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::IntValue(n) => Some(*n),
                any_value::Value::StringValue(s) => s.parse().ok(),
                any_value::Value::StringValueStrindex(i) => str_at(d, *i).parse().ok(),
                _ => None,
            }
        })
    }

    fn location(&mut self, li: i32) -> &LocationFrames {
        let i = li as usize;
        if self.frames[i].is_none() {
            self.frames[i] = Some(self.build_location(li));
        }
        self.frames[i].as_ref().expect("just filled")
    }

    fn shared(&mut self, s: &'a str) -> Arc<str> {
        self.strings
            .entry(s)
            .or_insert_with(|| Arc::from(s))
            .clone()
    }

    fn build_location(&self, li: i32) -> LocationFrames {
        let d = self.d;
        // validate() checked the index.
        let loc = &d.location_table[li as usize];
        let mut ft = self
            .attr_str(&loc.attribute_indices, keys::FRAME_TYPE)
            .map_or(
                FrameType::from_kind(FrameKind::Unknown),
                frame_type_from_str,
            );
        let mapping = usize::try_from(loc.mapping_index)
            .ok()
            .filter(|&m| m > 0)
            .and_then(|m| d.mapping_table.get(m));
        let file_id = mapping
            .and_then(|m| {
                self.attr_str(&m.attribute_indices, keys::BUILD_ID_HTLHASH)
                    .and_then(|h| FileId::parse_hex(h).ok())
            })
            // The encoder's stand-in for "kernel file unknown" is no file.
            .filter(|&id| !(ft.kind() == Some(FrameKind::Kernel) && id == FileId::UNKNOWN_KERNEL));
        let exe = match (mapping, file_id) {
            (Some(m), Some(id)) if ft.kind() != Some(FrameKind::Kernel) => Some(Executable {
                file_id: id,
                path: Arc::from(str_at(d, m.filename_strindex)),
                gnu_build_id: self
                    .attr_str(&m.attribute_indices, keys::BUILD_ID_GNU)
                    .map(Arc::from),
                vaddr_start: m.memory_start,
                vaddr_end: m.memory_limit,
            }),
            _ => None,
        };
        let func = |line: &pb::Line| {
            usize::try_from(line.function_index)
                .ok()
                .and_then(|f| d.function_table.get(f))
                .copied()
                .unwrap_or_default()
        };
        if mapping.is_none() && !ft.is_abort() && loc.lines.len() == 1 {
            let name = str_at(d, func(&loc.lines[0]).name_strindex);
            if name.starts_with(profile::ERROR_FRAME_PREFIX) {
                ft = ft.with_error();
            }
        }
        let base = Frame::new(ft, file_id, loc.address);
        let n = loc.lines.len();
        let frames = if n == 0 {
            vec![base]
        } else {
            loc.lines
                .iter()
                .enumerate()
                .map(|(k, line)| {
                    let f = func(line);
                    let mut fr = base.clone().with_inlined(k + 1 < n);
                    let name = str_at(d, f.name_strindex);
                    let stand_in = ft.is_error() && is_legacy_error_text(name, loc.address);
                    if !name.is_empty() && !stand_in {
                        fr.function_name = Some(Arc::from(name));
                    }
                    let file = str_at(d, f.filename_strindex);
                    if !file.is_empty() {
                        fr.source_file = Some(Arc::from(file));
                    }
                    fr.source_line = u32::try_from(line.line).ok().filter(|&l| l > 0);
                    fr
                })
                .collect()
        };
        (frames, exe)
    }

    /// The frames of stack `si` (validated) and the executables they use,
    /// built once per request.
    fn stack(&mut self, si: i32) -> StackFrames {
        let i = si as usize;
        // Index 0 into an empty stack table is valid ("no stack").
        let Some(slot) = self.stacks.get(i) else {
            return (Arc::from(Vec::new()), Arc::from(Vec::new()));
        };
        if let Some(s) = slot {
            return s.clone();
        }
        let d = self.d;
        let mut frames = Vec::new();
        let mut exes: Vec<Executable> = Vec::new();
        for &li in &d.stack_table[i].location_indices {
            let (f, e) = self.location(li);
            frames.extend(f.iter().cloned());
            if let Some(e) = e {
                if !exes.iter().any(|x| x.file_id == e.file_id) {
                    exes.push(e.clone());
                }
            }
        }
        let v: StackFrames = (frames.into(), exes.into());
        self.stacks[i] = Some(v.clone());
        v
    }

    fn profile(&mut self, res: &DecodedResource, p: &pb::Profile) -> Result<Profile, String> {
        let d = self.d;
        let st = p.sample_type.unwrap_or_default();
        let (ty, unit) = (str_at(d, st.type_strindex), str_at(d, st.unit_strindex));
        if !p.samples.is_empty() && (ty, unit) != ("samples", "count") {
            return Err(format!(
                "sample type {ty}/{unit} is not supported (only samples/count CPU profiles)"
            ));
        }
        let pt = p.period_type.unwrap_or_default();
        let frequency_hz = if str_at(d, pt.unit_strindex) == "nanoseconds" && p.period > 0 {
            let period = p.period as u64;
            (1_000_000_000 + period / 2) / period
        } else {
            0
        };
        let mut executables = BTreeMap::new();
        let mut samples = Vec::with_capacity(p.samples.len());
        let process_name: Arc<str> = Arc::from(res.executable_name.as_deref().unwrap_or(""));
        let container_id = res.container_id.as_deref().map(Arc::from);
        let executable_path = res.executable_path.as_deref().map(Arc::from);
        for (i, s) in p.samples.iter().enumerate() {
            let count: u64 = if s.values.is_empty() {
                s.timestamps_unix_nano.len() as u64
            } else {
                // validate() rejected negative values.
                s.values
                    .iter()
                    .try_fold(0u64, |acc, &v| acc.checked_add(v as u64))
                    .ok_or_else(|| format!("samples[{i}]: sum of values overflows"))?
            };
            let timestamps = if s.values.iter().all(|&v| v == 1) {
                s.timestamps_unix_nano.clone()
            } else {
                Vec::new()
            };
            let tid = match self.attr_int(&s.attribute_indices, keys::THREAD_ID) {
                None => 0,
                Some(t) => u32::try_from(t)
                    .map_err(|_| format!("samples[{i}]: thread.id {t} is not a valid tid"))?,
            };
            let cpu = match self.attr_int(&s.attribute_indices, keys::CPU_LOGICAL_NUMBER) {
                None => None,
                Some(c) => Some(u32::try_from(c).map_err(|_| {
                    format!("samples[{i}]: cpu.logical_number {c} is not a valid cpu")
                })?),
            };
            let labels = SampleLabels {
                pid: res.pid.unwrap_or(0),
                tid,
                process_name: process_name.clone(),
                thread_name: {
                    let t = self
                        .attr_str(&s.attribute_indices, keys::THREAD_NAME)
                        .unwrap_or("");
                    self.shared(t)
                },
                cpu,
                container_id: container_id.clone(),
                executable_path: executable_path.clone(),
            };
            let (frames, exes) = self.stack(s.stack_index);
            for e in exes.iter() {
                executables.entry(e.file_id).or_insert_with(|| e.clone());
            }
            samples.push(Sample {
                frames,
                labels,
                count,
                timestamps_unix_ns: timestamps,
            });
        }
        Ok(Profile {
            start_unix_ns: p.time_unix_nano,
            duration_ns: p.duration_nano,
            frequency_hz,
            host_name: res.host_name.clone().unwrap_or_default(),
            samples,
            executables,
        })
    }
}
