//! `record`: sample for a while, aggregate identical stacks, symbolize once
//! at the end (each distinct address once), and hand back resolved stacks.

use crate::loader::LoadError;
use crate::session::{Session, SessionOptions};
use crate::symbolize::{SymFrame, Symbolizer};
use crate::tracker::Tracker;
use libpf::generated::errors::ErrorCode;
use libpf::generated::metrics::MetricId;
use libpf::{frame_flags, FileId, Frame, FrameKind, FrameType};
use profile::{Executable, Profile, Sample, SampleLabels};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::trace::{RawFrame, RawTrace};

/// A frame as the kernel reported it, before symbolization.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FrameKey {
    Kernel(u64),
    Native {
        exe_id: u64,
        address: u64,
        return_address: bool,
    },
    Error {
        kind: FrameKind,
        code: u32,
    },
    Other {
        kind: u8,
        data: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct StackKey {
    pid: u32,
    tid: u32,
    cpu: u32,
    /// Thread name at sample time.
    comm: String,
    /// Leaf first: kernel frames, then user frames.
    frames: Vec<FrameKey>,
}

/// What a recording saw.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub duration: Duration,
    pub cpus: usize,
    pub frequency: u64,
    pub samples: u64,
    /// Traces that reached the end of the stack (or were kernel-only).
    pub complete: u64,
    /// Traces ended by an unwind error, by error name.
    pub errors: BTreeMap<String, u64>,
    /// Samples dropped before unwinding or lost on the way, by reason.
    pub dropped: BTreeMap<String, u64>,
    pub decode_errors: u64,
    /// Process mapping scans and their failures.
    pub scans: u64,
    pub scan_errors: u64,
    pub tables_loaded: u64,
    pub rows_loaded: u64,
}

impl Summary {
    /// One line for the terminal.
    pub fn line(&self) -> String {
        let pct = if self.samples > 0 {
            100.0 * self.complete as f64 / self.samples as f64
        } else {
            0.0
        };
        let mut s = format!(
            "{} samples in {:.1}s on {} CPUs at {} Hz, {} unwound fully ({pct:.1}%)",
            self.samples,
            self.duration.as_secs_f64(),
            self.cpus,
            self.frequency,
            self.complete
        );
        if !self.errors.is_empty() {
            let e: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            s.push_str(&format!("; errors: {}", e.join(", ")));
        }
        let dropped: Vec<String> = self
            .dropped
            .iter()
            .filter(|(_, &v)| v > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if !dropped.is_empty() {
            s.push_str(&format!("; dropped: {}", dropped.join(", ")));
        }
        s
    }
}

/// Live figures for a progress display.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub elapsed: Duration,
    pub samples: u64,
    pub dropped: u64,
}

pub struct Recording {
    pub profile: Profile,
    pub summary: Summary,
}

#[derive(Default)]
struct Aggregator {
    stacks: HashMap<StackKey, u64>,
    samples: u64,
    complete: u64,
    errors: BTreeMap<String, u64>,
}

fn error_name(code: u32) -> String {
    ErrorCode::try_from(code)
        .map(|e| e.name().to_string())
        .unwrap_or_else(|_| format!("error_{code}"))
}

impl Aggregator {
    fn add(&mut self, t: RawTrace) {
        self.samples += 1;
        match t.error() {
            Some((_, code)) => *self.errors.entry(error_name(code)).or_default() += 1,
            None => self.complete += 1,
        }
        let mut frames: Vec<FrameKey> = t.kernel.iter().map(|&a| FrameKey::Kernel(a)).collect();
        frames.extend(t.frames.into_iter().map(|f| match f {
            RawFrame::Native {
                exe_id,
                address,
                return_address,
            } => FrameKey::Native {
                exe_id,
                address,
                return_address,
            },
            RawFrame::Error { kind, code } => FrameKey::Error { kind, code },
            RawFrame::Other { kind, data, .. } => FrameKey::Other { kind, data },
        }));
        let key = StackKey {
            pid: t.pid,
            tid: t.tid,
            cpu: t.cpu,
            comm: t.comm,
            frames,
        };
        *self.stacks.entry(key).or_default() += 1;
    }
}

/// Settings of one recording.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    pub session: SessionOptions,
    /// Stop after this long; `None` runs until `stop` is set.
    pub duration: Option<Duration>,
    /// Resolve file and line numbers from DWARF (else symbol tables only).
    pub debug_info: bool,
    /// Keep native frames as raw addresses.
    pub symbolize: bool,
}

/// Records until the duration passes or `stop` is set (Ctrl-C); the data
/// gathered so far is returned either way.
pub fn record(
    opts: &RecordOptions,
    stop: &AtomicBool,
    mut progress: impl FnMut(&Progress),
) -> Result<Recording, LoadError> {
    let mut session = Session::new(opts.session.clone())?;
    let cpus = session.start()?;
    let started = Instant::now();
    let start_unix_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut agg = Aggregator::default();
    let mut last_progress = Instant::now();
    loop {
        let elapsed = started.elapsed();
        if stop.load(Ordering::Relaxed) || opts.duration.is_some_and(|d| elapsed >= d) {
            break;
        }
        let left = opts
            .duration
            .map(|d| d.saturating_sub(elapsed))
            .unwrap_or(Duration::MAX);
        session.wait(left.min(Duration::from_millis(100)));
        session.drain(|_, t| agg.add(t));
        if last_progress.elapsed() >= Duration::from_millis(100) {
            last_progress = Instant::now();
            progress(&Progress {
                elapsed: started.elapsed(),
                samples: agg.samples,
                dropped: dropped_samples(&session),
            });
        }
    }
    let duration = started.elapsed();
    // What the kernel wrote before we stopped is still read.
    session.drain(|_, t| agg.add(t));

    let mut dropped = BTreeMap::new();
    for (m, label) in [
        (MetricId::SamplesPidUnknown, "process not scanned yet"),
        (MetricId::TracesDropped, "trace ring buffer full"),
        (MetricId::PidEventsDropped, "process events lost"),
    ] {
        dropped.insert(label.to_string(), session.metric(m));
    }
    let ts = session.tracker.stats.clone();
    let summary = Summary {
        duration,
        cpus,
        frequency: opts.session.frequency,
        samples: agg.samples,
        complete: agg.complete,
        errors: agg.errors.clone(),
        dropped,
        decode_errors: session.stats.decode_errors,
        scans: ts.scans,
        scan_errors: ts.scan_errors,
        tables_loaded: ts.tables_loaded,
        rows_loaded: ts.rows_loaded,
    };
    let mut profile = resolve(
        &session.tracker,
        agg.stacks,
        opts.symbolize,
        opts.debug_info,
    );
    profile.start_unix_ns = start_unix_ns;
    profile.duration_ns = duration.as_nanos() as u64;
    profile.frequency_hz = opts.session.frequency;
    profile.host_name = host_name();
    Ok(Recording { profile, summary })
}

fn dropped_samples(s: &Session) -> u64 {
    s.metric(MetricId::SamplesPidUnknown) + s.metric(MetricId::TracesDropped)
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The kernel's FileID, from its GNU build id in /sys/kernel/notes.
pub fn kernel_file_id() -> FileId {
    std::fs::read("/sys/kernel/notes")
        .ok()
        .and_then(|notes| gnu_build_id_in_notes(&notes))
        .map(|id| FileId::from_kernel_build_id(&id))
        .unwrap_or(FileId::UNKNOWN_KERNEL)
}

/// The GNU build id (hex) in a raw ELF note section.
fn gnu_build_id_in_notes(mut notes: &[u8]) -> Option<String> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let word = |b: &[u8]| -> Option<u32> { Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?)) };
    let pad = |n: usize| (n + 3) & !3;
    while notes.len() >= 12 {
        let namesz = word(notes)? as usize;
        let descsz = word(&notes[4..])? as usize;
        let kind = word(&notes[8..])?;
        let name_end = 12 + pad(namesz);
        let desc_end = name_end + pad(descsz);
        let name = notes.get(12..12 + namesz)?;
        if kind == NT_GNU_BUILD_ID && name.starts_with(b"GNU") {
            let desc = notes.get(name_end..name_end + descsz)?;
            return Some(desc.iter().map(|b| format!("{b:02x}")).collect());
        }
        notes = notes.get(desc_end..)?;
    }
    None
}

/// Symbolizes every distinct frame once and builds the profile.
fn resolve(
    tracker: &Tracker,
    stacks: HashMap<StackKey, u64>,
    symbolize: bool,
    debug_info: bool,
) -> Profile {
    let symbolizer = Symbolizer::new(debug_info);
    // Distinct addresses per executable and of the kernel.
    let mut native: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut kernel: Vec<u64> = Vec::new();
    for key in stacks.keys() {
        for f in &key.frames {
            match *f {
                FrameKey::Native {
                    exe_id,
                    address,
                    return_address,
                } => native
                    .entry(exe_id)
                    .or_default()
                    .push(address - u64::from(return_address)),
                FrameKey::Kernel(a) => kernel.push(a),
                _ => {}
            }
        }
    }
    let mut names: HashMap<(u64, u64), Vec<SymFrame>> = HashMap::new();
    let mut executables = BTreeMap::new();
    for (exe_id, mut addrs) in native {
        addrs.sort_unstable();
        addrs.dedup();
        let Some(info) = tracker.file(exe_id) else {
            continue;
        };
        let summary = crate::tracker::elf_summary(&info.file);
        executables.insert(
            info.file_id,
            Executable {
                file_id: info.file_id,
                path: info.path.to_string_lossy().into_owned().into(),
                gnu_build_id: summary.gnu_build_id.map(Arc::from),
                vaddr_start: summary.text_start,
                vaddr_end: summary.text_end,
            },
        );
        if symbolize {
            let syms = symbolizer.native(&info.open_path(), &addrs, debug_info);
            for (a, s) in addrs.into_iter().zip(syms) {
                names.insert((exe_id, a), s);
            }
        }
    }
    kernel.sort_unstable();
    kernel.dedup();
    let kernel_id = kernel_file_id();
    let kernel_syms: HashMap<u64, Vec<SymFrame>> = if symbolize {
        kernel
            .iter()
            .copied()
            .zip(symbolizer.kernel(&kernel))
            .collect()
    } else {
        HashMap::new()
    };

    let mut samples = Vec::with_capacity(stacks.len());
    for (key, count) in stacks {
        let mut frames: Vec<Frame> = Vec::with_capacity(key.frames.len());
        for f in &key.frames {
            match *f {
                FrameKey::Kernel(a) => {
                    let mut frame = Frame::new(FrameType::KERNEL, Some(kernel_id), a);
                    if let Some(s) = kernel_syms.get(&a).and_then(|s| s.last()) {
                        frame = frame.with_function(s.function.as_str());
                    }
                    frames.push(frame);
                }
                FrameKey::Native {
                    exe_id,
                    address,
                    return_address,
                } => {
                    let lookup = address - u64::from(return_address);
                    let file_id = tracker.file(exe_id).map(|i| i.file_id);
                    let flags = if return_address {
                        frame_flags::RETURN_ADDRESS
                    } else {
                        0
                    };
                    let base = Frame::new(FrameType::NATIVE, file_id, lookup).with_flags(flags);
                    match names.get(&(exe_id, lookup)).filter(|s| !s.is_empty()) {
                        Some(syms) => {
                            for s in syms {
                                let mut fr = base
                                    .clone()
                                    .with_function(s.function.as_str())
                                    .with_inlined(s.inlined);
                                if let Some(file) = &s.file {
                                    fr = fr.with_source(file.as_str(), s.line);
                                }
                                frames.push(fr);
                            }
                        }
                        None => frames.push(base),
                    }
                }
                FrameKey::Error { kind, code } => frames.push(Frame::new(
                    FrameType::from_kind(kind).with_error(),
                    None,
                    code as u64,
                )),
                FrameKey::Other { kind, data } => {
                    frames.push(Frame::new(FrameType::from_u8(kind), None, data))
                }
            }
        }
        let meta = tracker.known_meta(key.pid).cloned();
        let process_name: Arc<str> = meta
            .as_ref()
            .map(|m| m.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| key.comm.as_str().into());
        samples.push(Sample {
            frames: frames.into(),
            labels: SampleLabels {
                pid: key.pid,
                tid: key.tid,
                process_name,
                thread_name: key.comm.as_str().into(),
                cpu: Some(key.cpu),
                container_id: meta.as_ref().and_then(|m| m.container_id.clone()),
                executable_path: meta.as_ref().and_then(|m| m.exe_path.clone()),
            },
            count,
            timestamps_unix_ns: Vec::new(),
        });
    }
    samples.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.labels.pid.cmp(&b.labels.pid))
    });
    Profile {
        samples,
        executables,
        ..Profile::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_gnu_build_id_note() {
        // namesz 4 "GNU\0", descsz 4, type 3, desc de ad be ef; preceded by
        // another note that must be skipped.
        let mut notes = Vec::new();
        notes.extend_from_slice(&[4, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]);
        notes.extend_from_slice(b"Xen\0");
        notes.extend_from_slice(&[7, 0, 0, 0]);
        notes.extend_from_slice(&[4, 0, 0, 0, 4, 0, 0, 0, 3, 0, 0, 0]);
        notes.extend_from_slice(b"GNU\0");
        notes.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(gnu_build_id_in_notes(&notes).as_deref(), Some("deadbeef"));
        assert_eq!(gnu_build_id_in_notes(&notes[..20]), None);
        assert_eq!(gnu_build_id_in_notes(&[]), None);
    }

    #[test]
    fn this_kernel_has_a_file_id() {
        assert_ne!(
            kernel_file_id(),
            FileId::UNKNOWN_KERNEL,
            "/sys/kernel/notes has a build id"
        );
    }
}
