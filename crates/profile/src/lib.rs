//! An aggregated CPU profile: what the agent recorded, symbolized, with the
//! labels of each sample. Every output (pprof, folded stacks, flame graph,
//! OTLP) is written from this one model, so they all agree.
//!
//! Architecture invariant: pure data, no kernel, no C toolchain; the agent
//! fills it, writers and exporters only read it.

use libpf::{FileId, Frame};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Who was running when a sample was taken.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SampleLabels {
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Process name (`/proc/PID/comm` of the main thread).
    pub process_name: Arc<str>,
    /// Thread name (the task's comm at sample time).
    pub thread_name: Arc<str>,
    /// CPU the sample was taken on.
    pub cpu: Option<u32>,
    /// Container id from `/proc/PID/cgroup`, when the process runs in one.
    pub container_id: Option<Arc<str>>,
    /// Path of the process's main executable.
    pub executable_path: Option<Arc<str>>,
}

/// One distinct stack of one set of labels, with how often it was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Leaf first. Kernel frames, then user frames; inlined functions are
    /// separate frames marked `inlined` (innermost first), see `libpf::Frame`.
    pub frames: Arc<[Frame]>,
    pub labels: SampleLabels,
    /// Number of samples.
    pub count: u64,
    /// Unix time of each sample in nanoseconds, when kept (OTLP sends them;
    /// may be empty, else `count` entries).
    pub timestamps_unix_ns: Vec<u64>,
}

/// An executable file some native frames belong to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executable {
    pub file_id: FileId,
    /// Path as the process mapped it.
    pub path: Arc<str>,
    /// GNU build id (hex), when the file has one.
    pub gnu_build_id: Option<Arc<str>>,
    /// ELF virtual address range of the executable segment(s): `[start, end)`.
    pub vaddr_start: u64,
    pub vaddr_end: u64,
}

impl Executable {
    /// The file name without directories.
    pub fn base_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// A CPU profile over one time window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// Start of the window, Unix time in nanoseconds.
    pub start_unix_ns: u64,
    /// Length of the window in nanoseconds.
    pub duration_ns: u64,
    /// Sampling frequency per CPU; one sample stands for 1e9/frequency ns.
    pub frequency_hz: u64,
    /// Host the profile was taken on.
    pub host_name: String,
    pub samples: Vec<Sample>,
    /// Executables referenced by native frames, by FileId.
    pub executables: BTreeMap<FileId, Executable>,
}

impl Profile {
    /// Nanoseconds of CPU time one sample stands for.
    pub fn period_ns(&self) -> u64 {
        1_000_000_000 / self.frequency_hz.max(1)
    }

    /// Total number of samples.
    pub fn total_samples(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }
}
