//! `record`: sample for a while, aggregate identical stacks, symbolize once
//! at the end (each distinct address once), and hand back resolved stacks.

use crate::loader::LoadError;
use crate::session::{Session, SessionOptions};
use crate::symbolize::{SymFrame, Symbolizer};
use crate::tracker::Tracker;
use libpf::generated::errors::ErrorCode;
use libpf::generated::metrics::MetricId;
use libpf::{FileId, FrameKind, FrameType};
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
    comm: String,
    /// Leaf first: kernel frames, then user frames.
    frames: Vec<FrameKey>,
}

/// A resolved frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedFrame {
    pub frame_type: FrameType,
    /// Function name, `module+0xaddr` when unknown, or the error text.
    pub name: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Inlined into the next (outer) frame.
    pub inlined: bool,
    /// Executable file (native frames).
    pub module: Option<Arc<str>>,
    pub file_id: Option<FileId>,
    /// ELF virtual address (native) or kernel address.
    pub address: u64,
}

/// One distinct stack of one process with its sample count.
#[derive(Clone, Debug)]
pub struct Stack {
    pub pid: u32,
    pub comm: String,
    /// Leaf first.
    pub frames: Vec<ResolvedFrame>,
    pub count: u64,
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
    pub stacks: Vec<Stack>,
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
    let stacks = resolve(
        &session.tracker,
        agg.stacks,
        opts.symbolize,
        opts.debug_info,
    );
    Ok(Recording { stacks, summary })
}

fn dropped_samples(s: &Session) -> u64 {
    s.metric(MetricId::SamplesPidUnknown) + s.metric(MetricId::TracesDropped)
}

/// Symbolizes every distinct frame once and builds the resolved stacks.
fn resolve(
    tracker: &Tracker,
    stacks: HashMap<StackKey, u64>,
    symbolize: bool,
    debug_info: bool,
) -> Vec<Stack> {
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
    let mut modules: HashMap<u64, Arc<str>> = HashMap::new();
    for (exe_id, mut addrs) in native {
        addrs.sort_unstable();
        addrs.dedup();
        let Some(info) = tracker.file(exe_id) else {
            continue;
        };
        let module: Arc<str> = info
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .into();
        modules.insert(exe_id, module);
        if symbolize {
            let syms = symbolizer.native(&info.open_path(), &addrs, debug_info);
            for (a, s) in addrs.into_iter().zip(syms) {
                names.insert((exe_id, a), s);
            }
        }
    }
    kernel.sort_unstable();
    kernel.dedup();
    let kernel_syms: HashMap<u64, Vec<SymFrame>> = kernel
        .iter()
        .copied()
        .zip(symbolizer.kernel(&kernel))
        .collect();

    let mut out: Vec<Stack> = stacks
        .into_iter()
        .map(|(key, count)| {
            let mut frames = Vec::with_capacity(key.frames.len());
            for f in &key.frames {
                match *f {
                    FrameKey::Kernel(a) => {
                        let name = kernel_syms
                            .get(&a)
                            .and_then(|s| s.last())
                            .map(|s| s.function.clone())
                            .unwrap_or_else(|| format!("{a:#x}"));
                        frames.push(ResolvedFrame {
                            frame_type: FrameType::KERNEL,
                            name,
                            file: None,
                            line: None,
                            inlined: false,
                            module: None,
                            file_id: None,
                            address: a,
                        });
                    }
                    FrameKey::Native {
                        exe_id,
                        address,
                        return_address,
                    } => {
                        let lookup = address - u64::from(return_address);
                        let module = modules.get(&exe_id).cloned();
                        let file_id = tracker.file(exe_id).map(|i| i.file_id);
                        let base = ResolvedFrame {
                            frame_type: FrameType::NATIVE,
                            name: String::new(),
                            file: None,
                            line: None,
                            inlined: false,
                            module: module.clone(),
                            file_id,
                            address: lookup,
                        };
                        match names.get(&(exe_id, lookup)).filter(|s| !s.is_empty()) {
                            Some(syms) => {
                                for s in syms {
                                    frames.push(ResolvedFrame {
                                        name: s.function.clone(),
                                        file: s.file.clone(),
                                        line: s.line,
                                        inlined: s.inlined,
                                        ..base.clone()
                                    });
                                }
                            }
                            None => frames.push(ResolvedFrame {
                                name: format!(
                                    "{}+{lookup:#x}",
                                    module.as_deref().unwrap_or("unknown")
                                ),
                                ..base
                            }),
                        }
                    }
                    FrameKey::Error { kind, code } => frames.push(ResolvedFrame {
                        frame_type: FrameType::from_kind(kind).with_error(),
                        name: format!("<unwinding aborted due to error {}>", error_name(code)),
                        file: None,
                        line: None,
                        inlined: false,
                        module: None,
                        file_id: None,
                        address: code as u64,
                    }),
                    FrameKey::Other { kind, data } => frames.push(ResolvedFrame {
                        frame_type: FrameType::from_u8(kind),
                        name: format!("<frame type {kind} {data:#x}>"),
                        file: None,
                        line: None,
                        inlined: false,
                        module: None,
                        file_id: None,
                        address: data,
                    }),
                }
            }
            Stack {
                pid: key.pid,
                comm: key.comm,
                frames,
                count,
            }
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.comm.cmp(&b.comm)));
    out
}

/// Folded stacks: `comm;root;…;leaf count`, one line per distinct stack,
/// kernel frames suffixed `_[k]` as flame-graph tools expect.
pub fn folded(stacks: &[Stack]) -> String {
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for s in stacks {
        let mut line = sanitize(&s.comm);
        for f in s.frames.iter().rev() {
            line.push(';');
            line.push_str(&sanitize(&f.name));
            if f.frame_type == FrameType::KERNEL {
                line.push_str("_[k]");
            }
        }
        *lines.entry(line).or_default() += s.count;
    }
    let mut out = String::new();
    for (l, c) in lines {
        out.push_str(&l);
        out.push(' ');
        out.push_str(&c.to_string());
        out.push('\n');
    }
    out
}

/// Folded format uses `;` between frames and a space before the count.
fn sanitize(s: &str) -> String {
    s.replace(';', ":").replace(['\n', '\r'], " ")
}
