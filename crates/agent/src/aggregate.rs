//! From raw traces to profiles: aggregation of identical stacks, then
//! symbolization of each distinct address once. `record` uses one batch;
//! the continuous agent one per export interval, with the symbol cache kept
//! across them.

use crate::symbolize::{SymFrame, Symbolizer};
use crate::tracker::Tracker;
use libpf::{frame_flags, FileId, Frame, FrameKind, FrameType};
use profile::{Executable, Profile, Sample, SampleLabels};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use support::trace::{RawFrame, RawTrace};

/// What a frame of JIT-written code is called (perf's name for it).
pub const JIT_FRAME_NAME: &str = "[jit]";

/// A frame as the kernel reported it, before symbolization.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FrameKey {
    Kernel(u64),
    Native {
        exe_id: u64,
        address: u64,
        return_address: bool,
    },
    /// Code a JIT wrote into anonymous memory: no file to name it from.
    Jit {
        address: u64,
        return_address: bool,
    },
    /// Named when the trace arrived: the process may be gone by the time
    /// the batch is resolved.
    Python {
        name: Arc<str>,
        file: Arc<str>,
        line: u32,
        first_line: u32,
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

/// Identical stacks of one thread on one CPU, counted (and, for OTLP, each
/// sample's time kept).
pub struct Aggregator {
    stacks: HashMap<StackKey, Entry>,
    keep_timestamps: bool,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC: bpf_ktime_get_ns() is monotonic.
    unix_offset_ns: i128,
    /// Traces seen, complete ones, and errors by name, since creation.
    pub samples: u64,
    pub complete: u64,
    pub errors: BTreeMap<String, u64>,
    python: PythonCodes,
}

/// Code objects read so far, per process and address (None: unreadable).
#[derive(Default)]
struct PythonCodes {
    codes: HashMap<(u32, u64), Option<Arc<crate::python::CodeInfo>>>,
    reads: u64,
    read_errors: u64,
}

/// Code objects remembered at most; the cache restarts empty past it.
const MAX_PYTHON_CODES: usize = 1 << 16;

/// The name of a Python frame whose code object could not be read.
pub const UNKNOWN_PYTHON_CODE: &str = "<unknown python code>";

impl PythonCodes {
    fn frame(&mut self, pid: u32, code: u64, instruction: u64, version: u16) -> FrameKey {
        if self.codes.len() >= MAX_PYTHON_CODES {
            self.codes.clear();
        }
        let info = self.codes.entry((pid, code)).or_insert_with(|| {
            self.reads += 1;
            let read = crate::python::version_of_frame(version)
                .ok_or_else(|| std::io::Error::other("unknown version"))
                .and_then(|v| {
                    crate::python::read_code(&crate::python::ProcessMemory(pid), code, v)
                });
            match read {
                Ok(info) => Some(Arc::new(info)),
                Err(e) => {
                    self.read_errors += 1;
                    tracing::debug!(pid, code, error = %e, "reading a Python code object failed");
                    None
                }
            }
        });
        match info {
            Some(c) => FrameKey::Python {
                name: c.name.clone(),
                file: c.file.clone(),
                line: c.line(instruction),
                first_line: c.first_line,
            },
            None => FrameKey::Python {
                name: Arc::from(UNKNOWN_PYTHON_CODE),
                file: Arc::from(""),
                line: 0,
                first_line: 0,
            },
        }
    }
}

#[derive(Default)]
struct Entry {
    count: u64,
    timestamps_unix_ns: Vec<u64>,
}

/// Stacks taken out of an aggregator, ready to resolve.
#[derive(Default)]
pub struct Batch {
    stacks: HashMap<StackKey, Entry>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    /// Number of samples in the batch.
    pub fn samples(&self) -> u64 {
        self.stacks.values().map(|e| e.count).sum()
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; the clocks exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl Aggregator {
    /// `keep_timestamps`: remember when each sample was taken (OTLP sends
    /// them); a local recording only needs counts.
    pub fn new(keep_timestamps: bool) -> Self {
        Aggregator {
            stacks: HashMap::new(),
            keep_timestamps,
            unix_offset_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC),
            samples: 0,
            complete: 0,
            errors: BTreeMap::new(),
            python: PythonCodes::default(),
        }
    }

    /// Code objects read from processes to name Python frames, and those
    /// that could not be read.
    pub fn python_code_reads(&self) -> (u64, u64) {
        (self.python.reads, self.python.read_errors)
    }

    pub fn add(&mut self, t: RawTrace) {
        self.samples += 1;
        match t.error() {
            Some((_, code)) => {
                *self
                    .errors
                    .entry(profile::error_name(code.into()).into_owned())
                    .or_default() += 1
            }
            None => self.complete += 1,
        }
        let ktime = t.ktime_ns;
        let mut frames: Vec<FrameKey> = t.kernel.iter().map(|&a| FrameKey::Kernel(a)).collect();
        let python = &mut self.python;
        let pid = t.pid;
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
            RawFrame::Jit {
                address,
                return_address,
            } => FrameKey::Jit {
                address,
                return_address,
            },
            RawFrame::Python {
                code,
                instruction,
                version,
            } => python.frame(pid, code, instruction, version),
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
        let e = self.stacks.entry(key).or_default();
        e.count += 1;
        if self.keep_timestamps {
            let unix = (ktime as i128 + self.unix_offset_ns).max(0) as u64;
            e.timestamps_unix_ns.push(unix);
        }
    }

    /// Takes the stacks gathered so far; the totals keep counting. What
    /// was read of processes that have exited since is forgotten (their
    /// frames already aggregated keep their names).
    pub fn take(&mut self) -> Batch {
        let mut alive: HashMap<u32, bool> = HashMap::new();
        self.python.codes.retain(|(pid, _), _| {
            *alive
                .entry(*pid)
                .or_insert_with(|| std::path::Path::new(&format!("/proc/{pid}")).exists())
        });
        Batch {
            stacks: std::mem::take(&mut self.stacks),
        }
    }
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A loaded kernel module: where its code is and its identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelModule {
    pub name: String,
    pub start: u64,
    pub size: u64,
    /// From the module's GNU build id (`/sys/module/NAME/notes`), like the
    /// kernel's; `UNKNOWN_KERNEL` when it has none.
    pub file_id: FileId,
}

impl KernelModule {
    fn contains(&self, addr: u64) -> bool {
        addr >= self.start && addr - self.start < self.size
    }
}

/// Parses `/proc/modules` (`name size refs deps state address`); a kernel
/// built without module support has no such file and no modules.
pub fn parse_modules(text: &str) -> Vec<KernelModule> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = f.first()?.to_string();
            let size = f.get(1)?.parse().ok()?;
            let start = u64::from_str_radix(f.get(5)?.trim_start_matches("0x"), 16).ok()?;
            let file_id = std::fs::read(format!("/sys/module/{name}/notes/.note.gnu.build-id"))
                .ok()
                .and_then(|n| gnu_build_id_in_notes(&n))
                .map(|id| FileId::from_kernel_build_id(&id))
                .unwrap_or(FileId::UNKNOWN_KERNEL);
            Some(KernelModule {
                name,
                start,
                size,
                file_id,
            })
        })
        .filter(|m| m.start != 0)
        .collect()
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

/// Turns batches into profiles: symbolizes each distinct address once and
/// remembers the results across batches (a continuous agent sees the same
/// hot addresses every interval).
pub struct Resolver {
    symbolizer: Symbolizer,
    symbolize: bool,
    debug_info: bool,
    kernel_id: FileId,
    /// Loaded kernel modules, for naming and identifying their frames.
    modules: Vec<KernelModule>,
    names: HashMap<(u64, u64), Vec<SymFrame>>,
    kernel_names: HashMap<u64, Vec<SymFrame>>,
    executables: HashMap<u64, Executable>,
}

/// Symbol cache entries kept at most; the cache restarts empty past it so a
/// long-running agent's memory stays bounded.
const MAX_CACHED_SYMBOLS: usize = 1 << 20;

impl Resolver {
    pub fn new(symbolize: bool, debug_info: bool) -> Self {
        Resolver {
            symbolizer: Symbolizer::new(debug_info),
            symbolize,
            debug_info,
            kernel_id: kernel_file_id(),
            modules: std::fs::read_to_string("/proc/modules")
                .map(|t| parse_modules(&t))
                .unwrap_or_default(),
            names: HashMap::new(),
            kernel_names: HashMap::new(),
            executables: HashMap::new(),
        }
    }

    /// Symbolizes what the batch needs and builds its profile (times and
    /// host are the caller's to fill in).
    pub fn resolve(&mut self, tracker: &Tracker, batch: Batch) -> Profile {
        if self.names.len() + self.kernel_names.len() > MAX_CACHED_SYMBOLS {
            self.names.clear();
            self.kernel_names.clear();
        }
        let stacks = batch.stacks;
        let symbolizer = &self.symbolizer;
        let symbolize = self.symbolize;
        let debug_info = self.debug_info;
        let kernel_id = self.kernel_id;
        let modules = &self.modules;
        let names = &mut self.names;
        let kernel_syms = &mut self.kernel_names;
        let known_exes = &mut self.executables;
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
                    } => {
                        let a = address - u64::from(return_address);
                        if !names.contains_key(&(exe_id, a)) {
                            native.entry(exe_id).or_default().push(a);
                        }
                        known_exes.entry(exe_id).or_insert_with(|| {
                            // Placeholder until the file is looked at below.
                            Executable {
                                file_id: FileId::new(0, 0),
                                path: Arc::from(""),
                                gnu_build_id: None,
                                vaddr_start: 0,
                                vaddr_end: 0,
                            }
                        });
                    }
                    FrameKey::Kernel(a) if !kernel_syms.contains_key(&a) => kernel.push(a),
                    _ => {}
                }
            }
        }
        // Executables seen for the first time: read their build id and range.
        for (exe_id, exe) in known_exes.iter_mut() {
            if exe.path.is_empty() {
                if let Some(info) = tracker.file(*exe_id) {
                    let summary = crate::tracker::elf_summary(&info.file);
                    *exe = Executable {
                        file_id: info.file_id,
                        path: info.path.to_string_lossy().into_owned().into(),
                        gnu_build_id: summary.gnu_build_id.map(Arc::from),
                        vaddr_start: summary.text_start,
                        vaddr_end: summary.text_end,
                    };
                }
            }
        }
        for (exe_id, mut addrs) in native {
            addrs.sort_unstable();
            addrs.dedup();
            let Some(info) = tracker.file(exe_id) else {
                continue;
            };
            if !symbolize {
                continue;
            }
            {
                let syms = symbolizer.native(&info.open_path(), &addrs, debug_info);
                for (a, s) in addrs.into_iter().zip(syms) {
                    names.insert((exe_id, a), s);
                }
            }
        }
        kernel.sort_unstable();
        kernel.dedup();
        if symbolize && !kernel.is_empty() {
            let found = symbolizer.kernel(&kernel);
            kernel_syms.extend(kernel.iter().copied().zip(found));
        }
        let mut executables = BTreeMap::new();

        let mut samples = Vec::with_capacity(stacks.len());
        for (key, entry) in stacks {
            let mut frames: Vec<Frame> = Vec::with_capacity(key.frames.len());
            for f in &key.frames {
                match *f {
                    FrameKey::Kernel(a) => {
                        let module = modules.iter().find(|m| m.contains(a));
                        let file_id = module.map_or(kernel_id, |m| m.file_id);
                        let mut frame = Frame::new(FrameType::KERNEL, Some(file_id), a);
                        if let Some(s) = kernel_syms.get(&a).and_then(|s| s.last()) {
                            frame = match module {
                                // perf's convention: the module after the name.
                                Some(m) => {
                                    frame.with_function(format!("{} [{}]", s.function, m.name))
                                }
                                None => frame.with_function(s.function.as_str()),
                            };
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
                        if let Some(exe) = known_exes.get(&exe_id).filter(|e| !e.path.is_empty()) {
                            executables
                                .entry(exe.file_id)
                                .or_insert_with(|| exe.clone());
                        }
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
                    FrameKey::Python {
                        ref name,
                        ref file,
                        line,
                        first_line,
                    } => {
                        // Upstream's identity for an interpreted frame: a
                        // file id for the function, the line as address.
                        let id =
                            FileId::from_bytes(format!("{file}\0{name}\0{first_line}").as_bytes());
                        let mut frame = Frame::new(
                            FrameType::from_kind(FrameKind::Python),
                            Some(id),
                            u64::from(line),
                        )
                        .with_function(name.clone());
                        if !file.is_empty() {
                            frame = frame.with_source(file.clone(), Some(line));
                        }
                        frames.push(frame);
                    }
                    FrameKey::Jit {
                        address,
                        return_address,
                    } => {
                        let flags = frame_flags::PID_SPECIFIC
                            | if return_address {
                                frame_flags::RETURN_ADDRESS
                            } else {
                                0
                            };
                        frames.push(
                            Frame::new(
                                FrameType::NATIVE,
                                None,
                                address - u64::from(return_address),
                            )
                            .with_flags(flags)
                            .with_function(JIT_FRAME_NAME),
                        );
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
                count: entry.count,
                timestamps_unix_ns: entry.timestamps_unix_ns,
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
    fn parses_proc_modules() {
        let text = "xfs 2183168 1 - Live 0xffffffffc0a2d000\n\
                    libcrc32c 12288 2 xfs,nf_tables, Live 0xffffffffc0a00000\n\
                    hidden 4096 0 - Live 0x0000000000000000\n\
                    garbage\n";
        let m = parse_modules(text);
        assert_eq!(
            m.len(),
            2,
            "unreadable lines and hidden addresses are skipped"
        );
        assert_eq!(m[0].name, "xfs");
        assert_eq!(m[0].start, 0xffffffffc0a2d000);
        assert_eq!(m[0].size, 2183168);
        assert!(m[0].contains(0xffffffffc0a2d000 + 100));
        assert!(!m[0].contains(0xffffffffc0a2d000 + 2183168));
        assert!(!m[1].contains(0xffffffffc0a2d000));
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
