//! `Hash128`: the 128-bit value behind FileID and TraceHash.
//!
//! Upstream (the OpenTelemetry eBPF profiler, `libpf/basehash`) stores these
//! identities as two `u64` words and every backend keys data on their
//! external forms, so those forms are fixed here bit for bit:
//!
//! * bytes: big-endian `hi ‖ lo` (16 bytes);
//! * text: 32 lowercase hex digits, zero padded (`hi` then `lo`);
//! * base64: base64url without padding of the 16 bytes (22 characters).
//!
//! Parsing is lenient the way upstream's is: hex may carry a `0x` prefix and
//! UUID-style dashes, in either case; base64 may use the standard alphabet
//! and padding.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::codec;
use crate::error::{Encoding, ParseError};

/// A 128-bit identity value: `hi` holds the most significant 64 bits.
///
/// # Ordering
///
/// `Ord` compares `hi` as a **signed** `i64`, then `lo` as a signed `i64`.
/// That is upstream's `Hash128.Less`/`Compare`: their database stores the
/// words in signed BIGINT columns, and lock ordering (`SELECT ... FOR
/// UPDATE`) must follow the database's order to avoid deadlocks. We keep
/// the same order so that anything we sort (batches, exported lists,
/// comparisons with upstream output) comes out in the same sequence.
/// Beware: this is *not* the lexicographic order of the hex or byte forms
/// (`8000…` sorts before `0000…`); compare [`Hash128::to_bytes`] if you need
/// that.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash128 {
    /// Most significant 64 bits (bytes 0..8 of the big-endian form).
    pub hi: u64,
    /// Least significant 64 bits (bytes 8..16 of the big-endian form).
    pub lo: u64,
}

impl Hash128 {
    /// Length of the byte form.
    pub const BYTES: usize = 16;
    /// Length of the canonical hex form.
    pub const HEX_LEN: usize = 32;
    /// Length of the canonical base64url (unpadded) form.
    pub const BASE64_LEN: usize = 22;

    /// Builds a value from its two words.
    pub const fn new(hi: u64, lo: u64) -> Self {
        Self { hi, lo }
    }

    /// Builds a value from a `u128` (`hi` = upper 64 bits).
    pub const fn from_u128(v: u128) -> Self {
        Self {
            hi: (v >> 64) as u64,
            lo: v as u64,
        }
    }

    /// The value as a `u128` (`hi` = upper 64 bits).
    pub const fn to_u128(self) -> u128 {
        ((self.hi as u128) << 64) | self.lo as u128
    }

    /// Builds a value from its big-endian byte form.
    pub const fn from_bytes(b: [u8; 16]) -> Self {
        Self::from_u128(u128::from_be_bytes(b))
    }

    /// Builds a value from a slice that must be exactly 16 bytes long.
    pub fn from_slice(b: &[u8]) -> Result<Self, ParseError> {
        let arr: [u8; 16] = b.try_into().map_err(|_| ParseError::InvalidLength {
            what: "Hash128",
            encoding: Encoding::Bytes,
            expected: 16,
            actual: b.len(),
        })?;
        Ok(Self::from_bytes(arr))
    }

    /// The big-endian byte form `hi ‖ lo`.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.to_u128().to_be_bytes()
    }

    /// True when both words are zero.
    pub const fn is_zero(self) -> bool {
        self.hi == 0 && self.lo == 0
    }

    /// The value with `hi` and `lo` exchanged (its own inverse).
    pub const fn swapped(self) -> Self {
        Self {
            hi: self.lo,
            lo: self.hi,
        }
    }

    /// 32 lowercase hex digits. Same as `Display`.
    pub fn to_hex(self) -> String {
        format!("{self:x}")
    }

    /// UUID form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (lowercase).
    pub fn to_uuid_string(self) -> String {
        let h = self.to_hex();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// base64url without padding of the 16 bytes (22 characters).
    pub fn to_base64(self) -> String {
        codec::encode_base64url(&self.to_bytes())
    }

    /// Parses 32 hex digits, upper or lower case, optionally prefixed with
    /// `0x`/`0X` and with any number of `-` (UUID form) between digits.
    pub fn parse_hex(s: &str) -> Result<Self, ParseError> {
        let body = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        let base = s.len() - body.len();
        let mut value: u128 = 0;
        let mut digits = 0usize;
        for (i, c) in body.char_indices() {
            if c == '-' {
                continue;
            }
            let d = c.to_digit(16).ok_or(ParseError::InvalidHexDigit {
                found: c,
                position: base + i,
            })?;
            digits += 1;
            if digits <= Self::HEX_LEN {
                value = (value << 4) | u128::from(d);
            }
        }
        if digits != Self::HEX_LEN {
            return Err(ParseError::InvalidLength {
                what: "Hash128",
                encoding: Encoding::Hex,
                expected: Self::HEX_LEN,
                actual: digits,
            });
        }
        Ok(Self::from_u128(value))
    }

    /// Parses base64 of the 16 bytes: URL-safe or standard alphabet, with or
    /// without padding.
    pub fn parse_base64(s: &str) -> Result<Self, ParseError> {
        codec::decode_base64_array::<16>("Hash128", s).map(Self::from_bytes)
    }

    /// Parses either form: base64 when `s` is 22 or 24 characters long (the
    /// unpadded and padded base64 lengths), hex otherwise. The two cannot be
    /// confused because the hex form always has at least 32 characters.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s.len() {
            22 | 24 => Self::parse_base64(s),
            _ => Self::parse_hex(s),
        }
    }
}

impl Ord for Hash128 {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.hi as i64, self.lo as i64).cmp(&(other.hi as i64, other.lo as i64))
    }
}

impl PartialOrd for Hash128 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// 32 lowercase hex digits; `{:#x}` adds a `0x` prefix (as upstream's `%#x`).
impl fmt::LowerHex for Hash128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            f.write_str("0x")?;
        }
        write!(f, "{:016x}{:016x}", self.hi, self.lo)
    }
}

/// 32 uppercase hex digits; `{:#X}` adds a `0x` prefix.
impl fmt::UpperHex for Hash128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            f.write_str("0x")?;
        }
        write!(f, "{:016X}{:016X}", self.hi, self.lo)
    }
}

/// The canonical text form: 32 lowercase hex digits.
impl fmt::Display for Hash128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(self, f)
    }
}

impl fmt::Debug for Hash128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash128({:016x}{:016x})", self.hi, self.lo)
    }
}

/// Accepts hex or base64, see [`Hash128::parse`].
impl FromStr for Hash128 {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<u128> for Hash128 {
    fn from(v: u128) -> Self {
        Self::from_u128(v)
    }
}

impl From<Hash128> for u128 {
    fn from(h: Hash128) -> Self {
        h.to_u128()
    }
}

impl From<[u8; 16]> for Hash128 {
    fn from(b: [u8; 16]) -> Self {
        Self::from_bytes(b)
    }
}

impl From<Hash128> for [u8; 16] {
    fn from(h: Hash128) -> Self {
        h.to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const V: Hash128 = Hash128::new(0x12345678124397f5, 0x876543218774849e);

    #[test]
    fn published_base64_vector() {
        assert_eq!(V.to_base64(), "EjRWeBJDl_WHZUMhh3SEng");
        assert_eq!(Hash128::parse_base64("EjRWeBJDl_WHZUMhh3SEng").unwrap(), V);
        // Standard alphabet, with and without padding, as Elasticsearch
        // returns binary fields.
        assert_eq!(Hash128::parse_base64("EjRWeBJDl/WHZUMhh3SEng").unwrap(), V);
        assert_eq!(
            Hash128::parse_base64("EjRWeBJDl/WHZUMhh3SEng==").unwrap(),
            V
        );
        assert_eq!(
            Hash128::parse_base64("EjRWeBJDl_WHZUMhh3SEng==").unwrap(),
            V
        );
        assert_eq!("EjRWeBJDl_WHZUMhh3SEng".parse::<Hash128>().unwrap(), V);
    }

    #[test]
    fn hex_forms() {
        assert_eq!(V.to_hex(), "12345678124397f5876543218774849e");
        assert_eq!(V.to_string(), "12345678124397f5876543218774849e");
        assert_eq!(format!("{V:#x}"), "0x12345678124397f5876543218774849e");
        assert_eq!(format!("{V:X}"), "12345678124397F5876543218774849E");
        assert_eq!(V.to_uuid_string(), "12345678-1243-97f5-8765-43218774849e");
        for s in [
            "12345678124397f5876543218774849e",
            "12345678124397F5876543218774849E",
            "0x12345678124397f5876543218774849e",
            "0X12345678124397f5876543218774849e",
            "12345678-1243-97f5-8765-43218774849e",
            "0x12345678-1243-97F5-8765-43218774849E",
        ] {
            assert_eq!(Hash128::parse_hex(s).unwrap(), V, "{s}");
            assert_eq!(s.parse::<Hash128>().unwrap(), V, "{s}");
        }
        // Zero padding.
        assert_eq!(
            Hash128::new(1, 2).to_hex(),
            "00000000000000010000000000000002"
        );
    }

    #[test]
    fn invalid_inputs_are_errors() {
        assert_eq!(
            Hash128::parse_hex("1234"),
            Err(ParseError::InvalidLength {
                what: "Hash128",
                encoding: Encoding::Hex,
                expected: 32,
                actual: 4
            })
        );
        assert_eq!(
            Hash128::parse_hex("0x12345678124397f5876543218774849g"),
            Err(ParseError::InvalidHexDigit {
                found: 'g',
                position: 33
            })
        );
        // `u64::from_str_radix` would accept a sign; we must not.
        assert!(Hash128::parse_hex("+2345678124397f5876543218774849e").is_err());
        assert!(Hash128::parse_hex("12345678124397f5876543218774849e0").is_err());
        assert!(Hash128::parse_hex("").is_err());
        assert!(Hash128::parse_hex("0x").is_err());
        assert!(Hash128::parse_hex("é2345678124397f5876543218774849e").is_err());
        assert!(Hash128::parse_base64("EjRWeBJDl_WHZUMhh3SEn").is_err());
        assert!(Hash128::parse_base64("EjRWeBJDl_WHZUMhh3SEnh").is_err()); // trailing bits
        assert!(Hash128::parse_base64("EjRWeBJDl_WHZUMhh3SE!g").is_err());
        assert!(Hash128::parse_base64("EjRWeBJDl_WHZUMhh3SEngAAAAAAAAAAAAA").is_err());
        assert!(Hash128::parse_base64("").is_err());
        assert!(Hash128::from_slice(&[0; 15]).is_err());
        assert!("".parse::<Hash128>().is_err());
    }

    #[test]
    fn ordering_is_signed_hi_then_signed_lo() {
        let neg = Hash128::new(0x8000_0000_0000_0000, 0);
        let zero = Hash128::new(0, 0);
        let small = Hash128::new(0, 1);
        let neg_lo = Hash128::new(0, u64::MAX);
        assert!(neg < zero);
        assert!(neg_lo < zero);
        assert!(zero < small);
        let mut v = vec![small, zero, neg_lo, neg];
        v.sort();
        assert_eq!(v, vec![neg, neg_lo, zero, small]);
    }

    #[test]
    fn bytes_are_big_endian() {
        let b = V.to_bytes();
        assert_eq!(b[0], 0x12);
        assert_eq!(b[7], 0xf5);
        assert_eq!(b[8], 0x87);
        assert_eq!(b[15], 0x9e);
        assert_eq!(Hash128::from_slice(&b).unwrap(), V);
        assert_eq!(V.swapped().swapped(), V);
    }

    proptest! {
        #[test]
        fn hex_round_trip(hi: u64, lo: u64) {
            let h = Hash128::new(hi, lo);
            let s = h.to_hex();
            prop_assert_eq!(s.len(), 32);
            prop_assert_eq!(Hash128::parse_hex(&s).unwrap(), h);
            prop_assert_eq!(Hash128::parse_hex(&format!("{h:#X}")).unwrap(), h);
            prop_assert_eq!(Hash128::parse_hex(&h.to_uuid_string()).unwrap(), h);
            prop_assert_eq!(s.parse::<Hash128>().unwrap(), h);
        }

        #[test]
        fn base64_round_trip(hi: u64, lo: u64) {
            let h = Hash128::new(hi, lo);
            let s = h.to_base64();
            prop_assert_eq!(s.len(), 22);
            prop_assert_eq!(Hash128::parse_base64(&s).unwrap(), h);
            let std_form = s.replace('-', "+").replace('_', "/") + "==";
            prop_assert_eq!(Hash128::parse_base64(&std_form).unwrap(), h);
            prop_assert_eq!(s.parse::<Hash128>().unwrap(), h);
        }

        #[test]
        fn ordering_matches_signed_tuple(a: (u64, u64), b: (u64, u64)) {
            let (x, y) = (Hash128::new(a.0, a.1), Hash128::new(b.0, b.1));
            prop_assert_eq!(x.cmp(&y), (a.0 as i64, a.1 as i64).cmp(&(b.0 as i64, b.1 as i64)));
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = Hash128::parse(&s);
            let _ = Hash128::parse_hex(&s);
            let _ = Hash128::parse_base64(&s);
        }
    }
}
