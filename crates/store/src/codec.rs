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

/// Key of one sample chunk: bucket number (bucket start / bucket length) in
/// the high 32 bits, chunk number within the bucket in the low 32, so that
/// chunks sort by time (range scans by time, eviction from the front).
/// 32 bits of 10-second buckets reach the year 3331.
pub fn chunk_key(bucket: u32, chunk: u32) -> u64 {
    (u64::from(bucket) << 32) | u64::from(chunk)
}

/// The inverse of [`chunk_key`]: (bucket, chunk number).
pub fn split_chunk_key(k: u64) -> (u32, u32) {
    ((k >> 32) as u32, k as u32)
}

/// The first key of a bucket.
pub fn bucket_start_key(bucket: u32) -> u64 {
    chunk_key(bucket, 0)
}

/// One counted (stack, label set) of a bucket.
pub type Entry = (u64, u64, u64);

/// Encodes a chunk: the counts of one bucket, sorted by (stack, labels).
///
/// Layout: `samples` (sum of counts, so eviction can account for a chunk
/// without decoding it), `n`, then per entry the stack id as a delta from
/// the previous entry's, the label-set id (a delta when the stack is the
/// same, else absolute) and the count, all varints. Sorted ids make the
/// deltas small: an entry typically takes 3–5 bytes, where a B-tree row
/// per entry would take 30.
pub fn encode_chunk(entries: &[Entry]) -> Vec<u8> {
    debug_assert!(entries
        .windows(2)
        .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
    let mut out = Vec::with_capacity(entries.len() * 5 + 10);
    let total: u64 = entries.iter().fold(0u64, |a, e| a.saturating_add(e.2));
    put_varint(&mut out, total);
    put_varint(&mut out, entries.len() as u64);
    let (mut ps, mut pl) = (0u64, 0u64);
    for &(s, l, c) in entries {
        put_varint(&mut out, s - ps);
        if s == ps {
            put_varint(&mut out, l - pl);
        } else {
            put_varint(&mut out, l);
        }
        put_varint(&mut out, c);
        (ps, pl) = (s, l);
    }
    out
}

/// (samples, entries) of a chunk, from its header.
pub fn chunk_header(bytes: &[u8]) -> Result<(u64, u64), CodecError> {
    let mut r = Reader::new(bytes);
    Ok((r.varint()?, r.varint()?))
}

/// Decodes a chunk, appending its entries to `out`.
pub fn decode_chunk(bytes: &[u8], out: &mut Vec<Entry>) -> Result<(), CodecError> {
    let mut r = Reader::new(bytes);
    let _total = r.varint()?;
    let n = r.varint()?;
    // Each entry takes at least three bytes: a larger count is corrupt,
    // and checking it first keeps a bad count from allocating gigabytes.
    if n > bytes.len() as u64 {
        return Err(CodecError("chunk length exceeds record"));
    }
    out.reserve(n as usize);
    let (mut ps, mut pl) = (0u64, 0u64);
    for _ in 0..n {
        let ds = r.varint()?;
        let s = ps.checked_add(ds).ok_or(CodecError("stack id overflows"))?;
        let l = if ds == 0 {
            pl.checked_add(r.varint()?)
                .ok_or(CodecError("label id overflows"))?
        } else {
            r.varint()?
        };
        let c = r.varint()?;
        out.push((s, l, c));
        (ps, pl) = (s, l);
    }
    r.finish()
}

/// Merges sorted entry lists, summing the counts of equal (stack, labels).
pub fn merge_entries(a: &[Entry], b: &[Entry]) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let take_a = j >= b.len() || (i < a.len() && (a[i].0, a[i].1) <= (b[j].0, b[j].1));
        let e = if take_a {
            i += 1;
            a[i - 1]
        } else {
            j += 1;
            b[j - 1]
        };
        match out.last_mut() {
            Some(last) if (last.0, last.1) == (e.0, e.1) => last.2 = last.2.saturating_add(e.2),
            _ => out.push(e),
        }
    }
    out
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
    fn chunk_keys_sort_by_bucket_then_chunk() {
        assert!(chunk_key(7, u32::MAX) < chunk_key(8, 0));
        assert_eq!(bucket_start_key(8), chunk_key(8, 0));
        assert_eq!(split_chunk_key(chunk_key(123, 456)), (123, 456));
    }

    #[test]
    fn chunks_round_trip_compactly_and_reject_garbage() {
        let entries = vec![
            (1, 5, 3),
            (1, 9, 1),
            (2, 1, 100_000),
            (300, 2, 1),
            (300, 70_000, 2),
        ];
        let rec = encode_chunk(&entries);
        assert_eq!(chunk_header(&rec).unwrap(), (100_007, 5));
        let mut out = vec![(0, 0, 0)];
        decode_chunk(&rec, &mut out).unwrap();
        assert_eq!(&out[1..], &entries[..]);
        // 5 entries: small deltas take one byte each.
        assert!(rec.len() <= 4 + 5 * 3 + 6, "{} bytes", rec.len());
        for cut in 0..rec.len() {
            assert!(
                decode_chunk(&rec[..cut], &mut Vec::new()).is_err(),
                "cut {cut}"
            );
        }
        assert!(decode_chunk(&[0, 0xff, 0xff, 0x03], &mut Vec::new()).is_err());
        let mut long = rec.clone();
        long.push(0);
        assert!(decode_chunk(&long, &mut Vec::new()).is_err());
    }

    #[test]
    fn merge_sums_equal_keys_and_keeps_order() {
        let a = [(1, 1, 1), (2, 2, 2), (5, 1, 1)];
        let b = [(1, 1, 10), (3, 0, 3), (5, 1, u64::MAX)];
        assert_eq!(
            merge_entries(&a, &b),
            [(1, 1, 11), (2, 2, 2), (3, 0, 3), (5, 1, u64::MAX)]
        );
        assert_eq!(merge_entries(&[], &b), b);
    }

    #[test]
    fn fnv_is_the_reference_fnv1a64() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }
}
