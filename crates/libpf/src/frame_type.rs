//! `FrameType`: a frame kind plus the error bit userspace adds on top.
//!
//! The eBPF header has 4 bits for the kind; userspace marks an unwinding
//! error of that kind with bit 0x80, and the error bit alone (on `unknown`) is
//! the abort marker. The byte value is what upstream stores and what the
//! Elasticsearch frame-type encoding carries, so it is kept as a raw `u8`.

use crate::generated::frame_types::{FrameKind, ABORT_MARKER, ERROR_BIT};
use std::fmt;

/// A frame type as userspace stores it: kind in the low bits, error bit 0x80.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameType(u8);

impl FrameType {
    /// The abort marker: an unwind that stopped with an error of no particular kind.
    pub const ABORT: FrameType = FrameType(ERROR_BIT);
    /// A native frame.
    pub const NATIVE: FrameType = FrameType(FrameKind::Native as u8);
    /// A kernel frame.
    pub const KERNEL: FrameType = FrameType(FrameKind::Kernel as u8);

    pub const fn from_kind(kind: FrameKind) -> Self {
        FrameType(kind as u8)
    }

    /// Any byte is accepted; `kind()` tells whether it names a known kind.
    pub const fn from_u8(value: u8) -> Self {
        FrameType(value)
    }

    pub const fn as_u8(self) -> u8 {
        self.0
    }

    /// The kind without the error bit, if it is a known one.
    pub fn kind(self) -> Option<FrameKind> {
        FrameKind::try_from(self.0 & !ERROR_BIT).ok()
    }

    pub const fn is_error(self) -> bool {
        self.0 & ERROR_BIT != 0
    }

    pub const fn is_abort(self) -> bool {
        self.0 == ERROR_BIT
    }

    /// The same kind with the error bit set.
    pub const fn with_error(self) -> Self {
        FrameType(self.0 | ERROR_BIT)
    }
}

impl From<FrameKind> for FrameType {
    fn from(kind: FrameKind) -> Self {
        FrameType::from_kind(kind)
    }
}

impl fmt::Display for FrameType {
    /// The OpenTelemetry `profile.frame.type` string: `native`, `cpython`, …;
    /// `abort-marker` for the abort marker and `<invalid>` for anything else.
    /// An error frame of a known kind prints as that kind (the error is
    /// carried separately, as upstream does).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_abort() {
            return f.write_str(ABORT_MARKER);
        }
        match self.kind() {
            Some(k) => f.write_str(k.semconv()),
            None => f.write_str("<invalid>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semconv_strings() {
        assert_eq!(FrameType::NATIVE.to_string(), "native");
        assert_eq!(
            FrameType::from_kind(FrameKind::Python).to_string(),
            "cpython"
        );
        assert_eq!(FrameType::from_kind(FrameKind::Hotspot).to_string(), "jvm");
        assert_eq!(FrameType::from_kind(FrameKind::V8).to_string(), "v8js");
        assert_eq!(FrameType::from_kind(FrameKind::PhpJit).to_string(), "php");
        assert_eq!(FrameType::ABORT.to_string(), "abort-marker");
        assert_eq!(FrameType::from_u8(0x0e).to_string(), "<invalid>");
        assert_eq!(FrameType::from_u8(0x8e).to_string(), "<invalid>");
    }

    #[test]
    fn error_bit() {
        let t = FrameType::NATIVE.with_error();
        assert!(t.is_error());
        assert!(!t.is_abort());
        assert_eq!(t.kind(), Some(FrameKind::Native));
        assert_eq!(t.as_u8(), 0x83);
        assert!(FrameType::ABORT.is_abort());
        assert_eq!(FrameType::ABORT.kind(), Some(FrameKind::Unknown));
    }

    #[test]
    fn every_kind_round_trips_through_u8() {
        for k in FrameKind::ALL {
            assert_eq!(FrameType::from_u8(k as u8).kind(), Some(k));
            assert_eq!(k.to_string().parse::<FrameKind>().unwrap(), k);
        }
    }
}
