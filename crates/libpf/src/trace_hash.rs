//! `TraceHash`: the identity of a stack trace (Elasticsearch `Stacktrace.id`).
//!
//! Upstream hashes, leaf first, each frame's 16-byte FileID (16 zero bytes
//! when the frame has no file) followed by its address/line as ASCII decimal
//! digits, with FNV-128a. Decimal digits without a separator look odd (frame
//! boundaries are ambiguous in principle) but that is the published
//! algorithm; changing anything here would split every stored trace from the
//! traces upstream agents report. The base64url form (22 characters) is the
//! Elasticsearch stacktrace document id.

use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;
use crate::fnv::Fnv128a;
use crate::{AddressOrLineno, FileId, Frame, Hash128};

/// Identity of a stack trace; see the module docs for the algorithm.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceHash(Hash128);

impl TraceHash {
    /// Builds a TraceHash from its two words.
    pub const fn new(hi: u64, lo: u64) -> Self {
        Self(Hash128::new(hi, lo))
    }

    /// Wraps a [`Hash128`].
    pub const fn from_hash128(h: Hash128) -> Self {
        Self(h)
    }

    /// The underlying [`Hash128`].
    pub const fn hash128(self) -> Hash128 {
        self.0
    }

    /// Hashes `(file, address_or_line)` pairs, leaf first.
    pub fn from_parts<I>(frames: I) -> Self
    where
        I: IntoIterator<Item = (Option<FileId>, AddressOrLineno)>,
    {
        let mut h = TraceHasher::new();
        for (file, addr) in frames {
            h.push(file, addr);
        }
        h.finish()
    }

    /// Hashes frames, leaf first. Frames marked [`Frame::inlined`] are
    /// skipped: they are symbolization expansions of the next physical frame
    /// (same file and address), not something the unwinder saw, and
    /// upstream's hash covers unwound frames only.
    pub fn from_frames(frames: &[Frame]) -> Self {
        Self::from_parts(
            frames
                .iter()
                .filter(|f| !f.inlined)
                .map(|f| (f.file_id, f.address_or_line)),
        )
    }

    /// base64url without padding (22 characters): the Elasticsearch
    /// stacktrace id.
    pub fn to_base64(self) -> String {
        self.0.to_base64()
    }

    /// 32 lowercase hex digits.
    pub fn to_hex(self) -> String {
        self.0.to_hex()
    }

    /// Parses the base64 form (either alphabet, padding optional).
    pub fn parse_base64(s: &str) -> Result<Self, ParseError> {
        Hash128::parse_base64(s).map(Self)
    }

    /// Parses the hex form.
    pub fn parse_hex(s: &str) -> Result<Self, ParseError> {
        Hash128::parse_hex(s).map(Self)
    }
}

/// Incremental TraceHash computation, for callers that produce frames one
/// at a time and do not want to collect them first. No allocation.
#[derive(Debug, Clone, Default)]
pub struct TraceHasher {
    fnv: Fnv128a,
}

impl TraceHasher {
    /// A hasher for an empty trace.
    pub const fn new() -> Self {
        Self {
            fnv: Fnv128a::new(),
        }
    }

    /// Adds the next frame (towards the root).
    pub fn push(&mut self, file_id: Option<FileId>, address_or_line: AddressOrLineno) {
        self.fnv
            .update(&file_id.map(FileId::to_be_bytes).unwrap_or([0; 16]));
        let mut buf = [0u8; 20]; // u64::MAX has 20 decimal digits
        self.fnv.update(decimal(address_or_line.0, &mut buf));
    }

    /// The hash of the frames pushed so far.
    pub fn finish(&self) -> TraceHash {
        TraceHash(self.fnv.finish())
    }
}

/// Writes `v` in ASCII decimal (no sign, no leading zeros) at the end of
/// `buf` and returns those digits.
fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

/// 32 lowercase hex digits, like every [`Hash128`]-based id; use
/// [`TraceHash::to_base64`] for the Elasticsearch stacktrace id.
impl fmt::Display for TraceHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::LowerHex for TraceHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

impl fmt::Debug for TraceHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceHash({:x})", self.0)
    }
}

/// Accepts base64 or hex, see [`Hash128::parse`].
impl FromStr for TraceHash {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hash128::parse(s).map(Self)
    }
}

impl From<Hash128> for TraceHash {
    fn from(h: Hash128) -> Self {
        Self(h)
    }
}

impl From<TraceHash> for Hash128 {
    fn from(t: TraceHash) -> Self {
        t.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_trace_is_offset_basis() {
        let h = TraceHash::from_parts([]);
        assert_eq!(h, TraceHash::new(0x6c62272e07bb0142, 0x62b821756295c58d));
        assert_eq!(TraceHash::from_frames(&[]), h);
    }

    #[test]
    fn three_frame_vector() {
        let h =
            TraceHash::from_parts((0..3u64).map(|i| (Some(FileId::new(i, i)), AddressOrLineno(i))));
        assert_eq!(h, TraceHash::new(0x21c6fe4c62868856, 0xcf510596eab68dc8));
        // Same through the streaming hasher.
        let mut s = TraceHasher::new();
        for i in 0..3u64 {
            s.push(Some(FileId::new(i, i)), AddressOrLineno(i));
        }
        assert_eq!(s.finish(), h);
        assert_eq!(h.to_base64().len(), 22);
        assert_eq!(h.to_string(), "21c6fe4c62868856cf510596eab68dc8");
        assert_eq!(TraceHash::parse_base64(&h.to_base64()).unwrap(), h);
    }

    #[test]
    fn missing_file_hashes_as_zero_file() {
        let a = TraceHash::from_parts([(None, AddressOrLineno(42))]);
        let b = TraceHash::from_parts([(Some(FileId::new(0, 0)), AddressOrLineno(42))]);
        assert_eq!(a, b);
    }

    #[test]
    fn decimal_digits() {
        let mut buf = [0u8; 20];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(10, &mut buf), b"10");
        assert_eq!(decimal(u64::MAX, &mut buf), b"18446744073709551615");
    }

    /// Independent reference: build the whole hashed byte string with
    /// `format!`, then FNV it in one go.
    fn reference(frames: &[(u64, u64, u64)]) -> TraceHash {
        let mut bytes = Vec::new();
        for &(hi, lo, addr) in frames {
            bytes.extend_from_slice(&hi.to_be_bytes());
            bytes.extend_from_slice(&lo.to_be_bytes());
            bytes.extend_from_slice(addr.to_string().as_bytes());
        }
        TraceHash(Fnv128a::digest(&bytes))
    }

    proptest! {
        #[test]
        fn matches_reference(frames in proptest::collection::vec(any::<(u64, u64, u64)>(), 0..20)) {
            let h = TraceHash::from_parts(
                frames.iter().map(|&(hi, lo, a)| (Some(FileId::new(hi, lo)), AddressOrLineno(a))),
            );
            prop_assert_eq!(h, reference(&frames));
        }

        #[test]
        fn text_round_trips(hi: u64, lo: u64) {
            let h = TraceHash::new(hi, lo);
            prop_assert_eq!(h.to_string().parse::<TraceHash>().unwrap(), h);
            prop_assert_eq!(h.to_base64().parse::<TraceHash>().unwrap(), h);
            prop_assert_eq!(TraceHash::parse_hex(&h.to_hex()).unwrap(), h);
        }
    }
}
