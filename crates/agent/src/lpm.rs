//! Address ranges as LPM-trie prefixes.
//!
//! The mappings trie matches (asid, address) by longest prefix, so a range
//! `[start, end)` is stored as the minimal set of aligned power-of-two blocks
//! that covers it exactly.

use support::abi::{MappingKey, MAPPING_KEY_BITS};

/// The aligned blocks `(start, log2 size)` that exactly cover `[start, end)`.
pub fn blocks(mut start: u64, end: u64) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    while start < end {
        // Largest block aligned at `start` that does not pass `end`.
        let align = if start == 0 {
            64
        } else {
            start.trailing_zeros()
        };
        let room = 63 - (end - start).leading_zeros();
        let bits = align.min(room);
        out.push((start, bits));
        match start.checked_add(1u64 << bits) {
            Some(next) => start = next,
            None => break,
        }
    }
    out
}

/// The trie key of one block of an address space.
pub fn key(asid: u32, start: u64, size_bits: u32) -> MappingKey {
    MappingKey {
        prefixlen: MAPPING_KEY_BITS as u32 - size_bits,
        asid_be: asid.to_be(),
        address_be: start.to_be(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(blocks: &[(u64, u32)]) -> Vec<(u64, u64)> {
        blocks.iter().map(|&(s, b)| (s, s + (1u64 << b))).collect()
    }

    #[test]
    fn covers_exactly() {
        for &(s, e) in &[
            (0x1000u64, 0x2000u64),
            (0x7f1c2a428000, 0x7f1c2a5bd000),
            (0x401000, 0x402fff),
            (0x1, 0x2),
            (0x5555_5555_4000, 0x5555_5555_9000),
        ] {
            let b = blocks(s, e);
            let c = covered(&b);
            assert_eq!(c.first().unwrap().0, s);
            assert_eq!(c.last().unwrap().1, e);
            for w in c.windows(2) {
                assert_eq!(w[0].1, w[1].0, "contiguous");
            }
            for &(start, bits) in &b {
                assert_eq!(start % (1u64 << bits), 0, "aligned");
            }
            // Minimal: at most two blocks per bit of the range length.
            assert!(b.len() <= 2 * 64);
        }
    }

    #[test]
    fn key_layout() {
        let k = key(7, 0x7000, 12);
        assert_eq!(k.prefixlen, 32 + 52);
        assert_eq!(u32::from_be(k.asid_be), 7);
        assert_eq!(u64::from_be(k.address_be), 0x7000);
    }
}
