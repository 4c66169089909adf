//! The one error type for every text/byte form this crate parses.
//!
//! Identities arrive from outside the process (Elasticsearch documents, OTLP
//! attributes, command lines, caches on disk), so malformed input is an
//! ordinary event: every parser returns [`ParseError`] and none of them
//! panics. The variants say what was wrong precisely enough to be logged and
//! acted on without the caller re-inspecting the input.

use std::fmt;

/// Which encoding a parser was reading, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Hexadecimal digits (after stripping a `0x` prefix and UUID dashes).
    Hex,
    /// Base64, URL-safe or standard alphabet.
    Base64,
    /// Raw big-endian bytes.
    Bytes,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Hex => "hex digits",
            Encoding::Base64 => "base64",
            Encoding::Bytes => "bytes",
        })
    }
}

/// Why a value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The input (or what it decodes to) has the wrong length.
    /// `expected` and `actual` count units of `encoding` (hex digits,
    /// decoded bytes, ...).
    InvalidLength {
        /// What was being parsed, e.g. `"Hash128"` or `"frame id"`.
        what: &'static str,
        /// The unit the lengths are counted in.
        encoding: Encoding,
        /// The required length.
        expected: usize,
        /// The length found.
        actual: usize,
    },
    /// A character that is not a hexadecimal digit.
    InvalidHexDigit {
        /// The offending character.
        found: char,
        /// Its byte offset in the input as given.
        position: usize,
    },
    /// The input is not valid base64 (bad symbol, bad padding, non-zero
    /// trailing bits, ...).
    InvalidBase64 {
        /// What was being parsed.
        what: &'static str,
        /// The decoder's description of the problem.
        reason: String,
    },
    /// Frame-type run-length data whose byte length is odd, so it cannot be
    /// a sequence of `[count, type]` pairs.
    RunLengthOddLength {
        /// Number of decoded bytes.
        len: usize,
    },
    /// A frame-type run with a count of zero (the encoder never writes one).
    RunLengthZeroCount {
        /// Byte offset of the zero count in the decoded data.
        offset: usize,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::InvalidLength {
                what,
                encoding,
                expected,
                actual,
            } => write!(
                f,
                "invalid {what}: expected {expected} {encoding}, found {actual}"
            ),
            ParseError::InvalidHexDigit { found, position } => {
                write!(f, "invalid hex digit {found:?} at byte {position}")
            }
            ParseError::InvalidBase64 { what, reason } => {
                write!(f, "invalid base64 {what}: {reason}")
            }
            ParseError::RunLengthOddLength { len } => write!(
                f,
                "invalid frame-type run-length data: {len} bytes is not a whole number of [count, type] pairs"
            ),
            ParseError::RunLengthZeroCount { offset } => write!(
                f,
                "invalid frame-type run-length data: zero run count at byte {offset}"
            ),
        }
    }
}

impl std::error::Error for ParseError {}
