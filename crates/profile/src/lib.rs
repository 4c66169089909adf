//! An aggregated CPU profile: what the agent recorded, symbolized, with the
//! labels of each sample. Every output (pprof, folded stacks, flame graph,
//! OTLP) is written from this one model, so they all agree.
//!
//! Architecture invariant: pure data, no kernel, no C toolchain; the agent
//! fills it, writers and exporters only read it.
//!
//! The local writers live here too, one module each, and all name frames
//! the same way ([`Profile::frame_name`]):
//!
//! * [`pprof`]: gzipped `perftools.profiles.Profile` (`go tool pprof`);
//! * [`mod@folded`]: folded stacks (`comm;root;…;leaf count`);
//! * [`flamegraph`]: an interactive SVG flame graph (inferno);
//! * [`mod@json`]: aggregated stacks for scripts;
//! * [`top`]: the functions with the most samples, as rows or a table.
//!
//! [`Format`] picks one from a file name or a `--format` value.

use libpf::generated::errors::ErrorCode;
use libpf::{FileId, Frame, FrameKind};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub mod flamegraph;
pub mod folded;
mod format;
pub mod json;
pub mod pprof;
pub mod top;

pub use flamegraph::svg;
pub use folded::folded;
pub use format::{format_for_path, Format, UnknownFormat};
pub use json::json;
pub use top::{format_top, top_functions, TopRow};

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

/// What kind of code a frame is, as the outputs tell them apart (flame
/// graph colors, pprof pseudo-mappings, `top` modules).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameClass {
    /// Machine code in an ELF file (native, and Go, which is native code).
    Native,
    /// Kernel or kernel module code.
    Kernel,
    /// An interpreter or JIT frame (Python, JVM, V8, Ruby, ...).
    Interpreted,
    /// An unwinding error or the abort marker.
    Error,
}

impl FrameClass {
    /// Classifies a frame by its type (the `inlined` flag is separate).
    pub fn of(frame: &Frame) -> Self {
        let t = frame.frame_type;
        if t.is_error() || frame.has_flags(libpf::frame_flags::ERROR) {
            return FrameClass::Error;
        }
        match t.kind() {
            Some(FrameKind::Kernel) => FrameClass::Kernel,
            Some(FrameKind::Native | FrameKind::Go) | None | Some(FrameKind::Unknown) => {
                FrameClass::Native
            }
            Some(_) => FrameClass::Interpreted,
        }
    }
}

/// The name of an unwinder error code, `error_N` for an unknown one.
pub fn error_name(code: u64) -> Cow<'static, str> {
    match u32::try_from(code)
        .ok()
        .and_then(|c| ErrorCode::try_from(c).ok())
    {
        Some(e) => Cow::Borrowed(e.name()),
        None => Cow::Owned(format!("error_{code}")),
    }
}

/// How every error frame name starts; readers of other formats (OTLP
/// decode) recognize an error frame by it.
pub const ERROR_FRAME_PREFIX: &str = "<unwinding aborted";

/// The name of an error frame without a name of its own, the one every
/// output shows (local files, OTLP, the collector's store and page):
/// `<unwinding aborted due to error NAME>`, NAME from [`error_name`] (the
/// spec's name, e.g. `native_no_mapping` for 4000; `error_N` for a code
/// the spec does not know).
pub fn error_frame_name(code: u64) -> String {
    format!("{ERROR_FRAME_PREFIX} due to error {}>", error_name(code))
}

impl Profile {
    /// The executable a frame's `file_id` names, if the profile has it.
    pub fn executable_of(&self, frame: &Frame) -> Option<&Executable> {
        frame.file_id.and_then(|id| self.executables.get(&id))
    }

    /// The function name every output shows for a frame:
    ///
    /// * its symbolized `function_name` when it has a non-empty one;
    /// * for an error frame, [`error_frame_name`] of its code (the frame's
    ///   `address_or_line`): `<unwinding aborted due to error NAME>`;
    /// * for a native frame of a known executable, `base_name+0xADDR` (ELF
    ///   virtual address), the same form the agent uses for binaries
    ///   without symbols;
    /// * otherwise `[TYPE]+0xADDR`, e.g. `[kernel]+0xffffffff81000000`.
    pub fn frame_name<'a>(&'a self, frame: &'a Frame) -> Cow<'a, str> {
        if let Some(name) = frame.function_name.as_deref().filter(|n| !n.is_empty()) {
            return Cow::Borrowed(name);
        }
        let addr = frame.address_or_line.get();
        match FrameClass::of(frame) {
            FrameClass::Error => Cow::Owned(error_frame_name(addr)),
            FrameClass::Native => match self.executable_of(frame) {
                Some(exe) => Cow::Owned(format!("{}+{addr:#x}", exe.base_name())),
                None => Cow::Owned(format!("[unknown]+{addr:#x}")),
            },
            FrameClass::Kernel | FrameClass::Interpreted => {
                Cow::Owned(format!("[{}]+{addr:#x}", frame.frame_type))
            }
        }
    }

    /// Where a frame's code lives, as `top` and the JSON output show it:
    /// the executable's base name for a native frame, else `[kernel]`,
    /// `[error]`, `[TYPE]` (e.g. `[cpython]`) or `[unknown]`.
    pub fn module_name<'a>(&'a self, frame: &Frame) -> Cow<'a, str> {
        match FrameClass::of(frame) {
            FrameClass::Native => match self.executable_of(frame) {
                Some(exe) => Cow::Borrowed(exe.base_name()),
                None => Cow::Borrowed("[unknown]"),
            },
            FrameClass::Kernel => Cow::Borrowed("[kernel]"),
            FrameClass::Error => Cow::Borrowed("[error]"),
            FrameClass::Interpreted => Cow::Owned(format!("[{}]", frame.frame_type)),
        }
    }
}

impl SampleLabels {
    /// The process name, or `[pid N]` when it is empty.
    pub fn process_display_name(&self) -> Cow<'_, str> {
        if self.process_name.is_empty() {
            Cow::Owned(format!("[pid {}]", self.pid))
        } else {
            Cow::Borrowed(&self.process_name)
        }
    }
}

/// Why a writer or reader failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing bytes (gzip streams).
    Io(std::io::Error),
    /// The bytes are not a `perftools.profiles.Profile` message.
    Protobuf(prost::DecodeError),
    /// The decompressed profile is larger than [`pprof::MAX_DECODED_BYTES`].
    TooLarge { limit: usize },
    /// inferno could not draw the flame graph.
    Flamegraph(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "i/o: {e}"),
            Error::Protobuf(e) => write!(f, "not a pprof profile: {e}"),
            Error::TooLarge { limit } => {
                write!(f, "decompressed profile larger than {limit} bytes")
            }
            Error::Flamegraph(e) => write!(f, "flame graph: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Protobuf(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<prost::DecodeError> for Error {
    fn from(e: prost::DecodeError) -> Self {
        Error::Protobuf(e)
    }
}

/// Example profiles (realistic and small) for tests and demos, here and
/// in the crates that use this one.
pub mod testdata;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_code_names_its_error_frame() {
        for c in ErrorCode::ALL {
            assert_eq!(
                error_frame_name(c as u64),
                format!("<unwinding aborted due to error {}>", c.name())
            );
        }
        assert_eq!(
            error_frame_name(4000),
            "<unwinding aborted due to error native_no_mapping>"
        );
        assert_eq!(
            error_frame_name(1 << 40),
            "<unwinding aborted due to error error_1099511627776>"
        );
        assert!(error_frame_name(4000).starts_with(ERROR_FRAME_PREFIX));
    }
}
