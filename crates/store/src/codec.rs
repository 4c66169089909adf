//! Byte encodings of the dictionary records (strings, frames, stacks, label
//! sets, executables) and the sample-row key.
//!
//! Why hand-written: the records are small and numerous, so LEB128 varints
//! keep them compact (sequential ids are 1–3 bytes), and a fixed, explicit
//! layout is part of the on-disk format that must not change when a
//! serialization library does. Every decoder checks bounds and returns
//! [`CodecError`] on truncated or malformed input instead of panicking, so a
//! damaged record surfaces as a clear error.

use std::fmt;

/// A record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub &'static str);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed record: {}", self.0)
    }
}

impl std::error::Error for CodecError {}

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends an optional value as `value + 1`, with 0 standing for `None`.
pub fn put_opt(out: &mut Vec<u8>, v: Option<u64>) {
    put_varint(out, v.map_or(0, |v| v + 1));
}

/// Appends a length-prefixed byte string.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A bounds-checked reader over an encoded record.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self.buf.split_first().ok_or(CodecError("truncated"))?;
        self.buf = rest;
        Ok(b)
    }

    pub fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return Err(CodecError("varint overflows u64"));
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError("varint longer than 10 bytes"))
    }

    pub fn opt(&mut self) -> Result<Option<u64>, CodecError> {
        Ok(self.varint()?.checked_sub(1))
    }

    pub fn opt_u32(&mut self) -> Result<Option<u32>, CodecError> {
        match self.opt()? {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .map(Some)
                .map_err(|_| CodecError("value does not fit u32")),
        }
    }

    pub fn u32(&mut self) -> Result<u32, CodecError> {
        u32::try_from(self.varint()?).map_err(|_| CodecError("value does not fit u32"))
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        if self.buf.len() < N {
            return Err(CodecError("truncated"));
        }
        let (head, rest) = self.buf.split_at(N);
        self.buf = rest;
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        Ok(out)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let len = usize::try_from(self.varint()?).map_err(|_| CodecError("length"))?;
        if self.buf.len() < len {
            return Err(CodecError("truncated"));
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }

    pub fn str(&mut self) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| CodecError("invalid UTF-8"))
    }

    pub fn finish(&self) -> Result<(), CodecError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(CodecError("trailing bytes"))
        }
    }
}

/// FNV-1a, 64 bit: the hash of a record's bytes in the dedup indexes.
///
/// Why FNV: it is persisted (index keys), so it must never change with a
/// library or Rust version, and it is fast on the short records hashed here.
/// Collisions are harmless: the index maps a hash to every id with that
/// hash and the record bytes are compared.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Key of one sample row: bucket number (bucket start / bucket length),
/// stack id and label-set id packed into a `u128` so that rows sort by
/// bucket first (range scans by time, eviction from the front).
///
/// Layout: bucket in the top 32 bits, stack id in the next 48, label-set id
/// in the low 48. 32 bits of 10-second buckets reach the year 3331; 48-bit
/// ids allow 2.8e14 records, far beyond what a size-capped store holds.
pub fn row_key(bucket: u32, stack: u64, labels: u64) -> u128 {
    debug_assert!(stack < 1 << 48 && labels < 1 << 48);
    (u128::from(bucket) << 96) | (u128::from(stack) << 48) | u128::from(labels)
}

/// The inverse of [`row_key`]: (bucket, stack id, label-set id).
pub fn split_row_key(k: u128) -> (u32, u64, u64) {
    let mask = (1u128 << 48) - 1;
    ((k >> 96) as u32, ((k >> 48) & mask) as u64, (k & mask) as u64)
}

/// The first key of a bucket: `row_key(bucket, 0, 0)`.
pub fn bucket_start_key(bucket: u32) -> u128 {
    u128::from(bucket) << 96
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_garbage() {
        let values = [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX];
        let mut buf = Vec::new();
        for &v in &values {
            put_varint(&mut buf, v);
        }
        put_opt(&mut buf, None);
        put_opt(&mut buf, Some(5));
        put_bytes(&mut buf, b"hello");
        let mut r = Reader::new(&buf);
        for &v in &values {
            assert_eq!(r.varint().unwrap(), v);
        }
        assert_eq!(r.opt().unwrap(), None);
        assert_eq!(r.opt().unwrap(), Some(5));
        assert_eq!(r.str().unwrap(), "hello");
        assert!(r.finish().is_ok());

        assert!(Reader::new(&[0x80]).varint().is_err());
        assert!(Reader::new(&[0xff; 11]).varint().is_err());
        // 10th byte may only carry one bit.
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert!(Reader::new(&over).varint().is_err());
        assert!(Reader::new(&[5, b'a']).bytes().is_err());
        assert!(Reader::new(&[2, 0xff, 0xfe]).str().is_err());
        assert!(Reader::new(&[1, 2]).finish().is_err());
    }

    #[test]
    fn row_keys_sort_by_bucket_then_ids() {
        let a = row_key(7, (1 << 48) - 1, (1 << 48) - 1);
        let b = row_key(8, 0, 0);
        assert!(a < b);
        assert_eq!(b, bucket_start_key(8));
        assert_eq!(split_row_key(row_key(123, 456, 789)), (123, 456, 789));
        assert_eq!(split_row_key(a), (7, (1 << 48) - 1, (1 << 48) - 1));
    }

    #[test]
    fn fnv_is_the_reference_fnv1a64() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }
}
