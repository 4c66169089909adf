//! `AddressOrLineno` and `Frame`: one entry of a stack trace.
//!
//! A frame is first what the unwinder produced (type, file, address or
//! line, header flags); symbolization may later attach a function name,
//! source file and line. Both halves live in one struct so that the agent,
//! the pprof/OTLP outputs and the Elasticsearch exporter all pass the same
//! value around. The strings are `Arc<str>` because the same names repeat
//! across millions of samples and are shared by interning caches.

use std::fmt;
use std::sync::Arc;

use crate::{FileId, FrameId, FrameType};

/// A frame's position inside its file: the ELF virtual address for native
/// and kernel frames (return addresses already minus one), a line number or
/// an interpreter-specific value for interpreted frames.
///
/// Its decimal form is part of the [`TraceHash`](crate::TraceHash) input and
/// its big-endian form part of the [`FrameId`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct AddressOrLineno(pub u64);

impl AddressOrLineno {
    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for AddressOrLineno {
    fn from(v: u64) -> Self {
        Self(v)
    }
}

impl From<AddressOrLineno> for u64 {
    fn from(v: AddressOrLineno) -> Self {
        v.0
    }
}

/// Decimal, as hashed into the TraceHash.
impl fmt::Display for AddressOrLineno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::LowerHex for AddressOrLineno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

impl fmt::Debug for AddressOrLineno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AddressOrLineno({:#x})", self.0)
    }
}

/// One frame of a stack trace.
///
/// Identity fields (`frame_type`, `file_id`, `address_or_line`) come from
/// the unwinder and feed the [`TraceHash`](crate::TraceHash) and the
/// [`FrameId`]; the symbol fields are optional and filled in later.
///
/// Inlining: when symbolization finds that an address lies in inlined code,
/// the one unwound frame becomes several `Frame`s with the same file and
/// address, innermost first; all but the last (outermost, the function that
/// was really on the stack) have `inlined` set. Consumers that need one entry
/// per unwound frame (the TraceHash, Elasticsearch `frame.ids`) skip the
/// `inlined` ones; those that show source (pprof/OTLP lines, Elasticsearch
/// stackframe arrays) keep them.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Frame {
    /// Kind of frame (native, kernel, python, ...), possibly with the error
    /// bit set.
    pub frame_type: FrameType,
    /// File the frame belongs to; `None` when unknown or not applicable
    /// (hashed as the all-zero FileID, like upstream's zero value).
    pub file_id: Option<FileId>,
    /// Address or line, see [`AddressOrLineno`].
    pub address_or_line: AddressOrLineno,
    /// Flags from the eBPF frame header (`frame_flags::*`: error,
    /// return address, PID-specific).
    pub flags: u8,
    /// Function name, if symbolized.
    pub function_name: Option<Arc<str>>,
    /// Source file name, if known.
    pub source_file: Option<Arc<str>>,
    /// Source line, if known.
    pub source_line: Option<u32>,
    /// Line offset from the function's start (Elasticsearch
    /// `function.offset`), if known.
    pub function_offset: Option<u32>,
    /// True when this frame is an inlined call inside the next frame (same
    /// file and address), see the type docs.
    pub inlined: bool,
}

impl Frame {
    /// An unsymbolized frame with no flags.
    pub fn new(
        frame_type: FrameType,
        file_id: Option<FileId>,
        address_or_line: impl Into<AddressOrLineno>,
    ) -> Self {
        Self {
            frame_type,
            file_id,
            address_or_line: address_or_line.into(),
            flags: 0,
            function_name: None,
            source_file: None,
            source_line: None,
            function_offset: None,
            inlined: false,
        }
    }

    /// Sets the eBPF header flags.
    pub fn with_flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }

    /// Sets the function name.
    pub fn with_function(mut self, name: impl Into<Arc<str>>) -> Self {
        self.function_name = Some(name.into());
        self
    }

    /// Sets the source file and line.
    pub fn with_source(mut self, file: impl Into<Arc<str>>, line: Option<u32>) -> Self {
        self.source_file = Some(file.into());
        self.source_line = line;
        self
    }

    /// Marks the frame as inlined into the next one.
    pub fn with_inlined(mut self, inlined: bool) -> Self {
        self.inlined = inlined;
        self
    }

    /// True if all bits of `mask` (a `frame_flags::*` value) are set.
    pub const fn has_flags(&self, mask: u8) -> bool {
        self.flags & mask == mask
    }

    /// True when the frame has a function or source file name: what the
    /// Elasticsearch exporter writes as a stackframe document.
    pub fn is_symbolized(&self) -> bool {
        self.function_name.is_some() || self.source_file.is_some()
    }

    /// The frame's Elasticsearch stackframe id. A frame without a file uses
    /// the all-zero FileID, as in the TraceHash.
    pub fn frame_id(&self) -> FrameId {
        FrameId::new(self.file_id.unwrap_or_default(), self.address_or_line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FrameKind;

    #[test]
    fn builder_and_helpers() {
        let f = Frame::new(
            FrameType::from_kind(FrameKind::Native),
            Some(FileId::new(1, 2)),
            0x1000u64,
        )
        .with_flags(crate::frame_flags::RETURN_ADDRESS)
        .with_function("main")
        .with_source("main.c", Some(12));
        assert!(f.is_symbolized());
        assert!(f.has_flags(crate::frame_flags::RETURN_ADDRESS));
        assert!(!f.has_flags(crate::frame_flags::ERROR));
        assert_eq!(
            f.frame_id(),
            FrameId::new(FileId::new(1, 2), AddressOrLineno(0x1000))
        );
        assert_eq!(&*f.function_name.unwrap(), "main");
        assert_eq!(AddressOrLineno(1234).to_string(), "1234");

        let bare = Frame::new(FrameType::from_kind(FrameKind::Kernel), None, 7u64);
        assert!(!bare.is_symbolized());
        assert_eq!(bare.frame_id().file_id, FileId::default());
    }
}
