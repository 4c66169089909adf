//! FNV-1a with a 128-bit state, as Go's `hash/fnv.New128a`.
//!
//! Two upstream identities are FNV-128a digests: the kernel FileID (over the
//! ASCII hex GNU build ID) and the TraceHash. We need the exact digest bytes
//! Go produces: the 128-bit state written big-endian (`Sum` appends the high
//! word first), which is also how a `u128` reads with `to_be_bytes`.
//!
//! Why hand-written: the well-kept `fnv` crate only offers 32/64-bit
//! variants; the few crates with a 128-bit variant are small and little used,
//! while the algorithm itself is a xor and a multiply per byte. The published
//! vectors (empty input = offset basis; the kernel FileID vector) pin the
//! constants and the byte order in the tests below.

use crate::Hash128;

/// FNV-128 offset basis (`144066263297769815596495629667062367629`).
const OFFSET_BASIS: u128 = 0x6c62272e_07bb0142_62b82175_6295c58d;
/// FNV-128 prime, 2^88 + 2^8 + 0x3b.
const PRIME: u128 = 0x00000000_01000000_00000000_0000013b;

/// Incremental FNV-1a 128-bit hasher.
///
/// Feeding data in several [`update`](Fnv128a::update) calls gives the same
/// digest as feeding it at once, which the TraceHash relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv128a {
    state: u128,
}

impl Default for Fnv128a {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv128a {
    /// A hasher in its initial state (the offset basis).
    pub const fn new() -> Self {
        Self {
            state: OFFSET_BASIS,
        }
    }

    /// Mixes `data` into the state.
    pub fn update(&mut self, data: &[u8]) {
        let mut state = self.state;
        for &byte in data {
            state ^= u128::from(byte);
            state = state.wrapping_mul(PRIME);
        }
        self.state = state;
    }

    /// The digest as a number; its big-endian bytes are Go's `Sum(nil)`.
    pub const fn finish_u128(&self) -> u128 {
        self.state
    }

    /// The digest as a [`Hash128`] (`hi` = first 8 digest bytes).
    pub const fn finish(&self) -> Hash128 {
        Hash128::from_u128(self.state)
    }

    /// One-shot digest of `data`.
    pub fn digest(data: &[u8]) -> Hash128 {
        let mut h = Self::new();
        h.update(data);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_is_offset_basis() {
        let h = Fnv128a::new().finish();
        assert_eq!(h.hi, 0x6c62272e07bb0142);
        assert_eq!(h.lo, 0x62b821756295c58d);
    }

    #[test]
    fn known_vectors() {
        // Reference values from the FNV authors' test suite (fnv1a128 of "a"
        // and "foobar"), independent of the identities spec.
        assert_eq!(
            Fnv128a::digest(b"a").to_u128(),
            0xd228cb696f1a8caf78912b704e4a8964
        );
        assert_eq!(
            Fnv128a::digest(b"foobar").to_u128(),
            0x343e1662793c64bf6f0d3597ba446f18
        );
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data = b"f8e1cf0f60558098edaec164ac7749df";
        let mut h = Fnv128a::new();
        h.update(&data[..7]);
        h.update(&[]);
        h.update(&data[7..]);
        assert_eq!(h.finish(), Fnv128a::digest(data));
    }
}
