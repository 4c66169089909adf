//! The pc-value tables (`pcsp`, `pcfile`, `pcln`, `pcdata`): a run of
//! (zig-zag value delta, pc delta) varint pairs starting from value -1 at the
//! function's entry, ended by a zero value delta (except on the first pair).

use crate::Error;

/// One range of a pc-value table: `value` holds for `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcRange {
    pub start: u64,
    pub end: u64,
    pub value: i32,
}

/// Iterates the ranges of one table. Every step consumes at least two bytes,
/// so a corrupt table ends (with an error) within its slice's length.
#[derive(Clone, Debug)]
pub struct PcValues<'a> {
    data: &'a [u8],
    pos: usize,
    pc: u64,
    /// Past this the table is corrupt: the function's end.
    limit: u64,
    value: i32,
    first: bool,
    done: bool,
    what: &'static str,
}

/// Reads a little-endian base-128 varint of at most 32 bits.
fn varint(data: &[u8], pos: &mut usize) -> Option<u32> {
    let mut v: u32 = 0;
    for shift in (0..35).step_by(7) {
        let b = *data.get(*pos)?;
        *pos += 1;
        v |= u32::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl<'a> PcValues<'a> {
    /// The table starting at `data[0]` for a function at `entry` whose code
    /// ends at `limit`. `quantum` is the pc delta unit (1 on x86-64).
    pub(crate) fn new(data: &'a [u8], entry: u64, limit: u64, what: &'static str) -> Self {
        PcValues {
            data,
            pos: 0,
            pc: entry,
            limit,
            value: -1,
            first: true,
            done: false,
            what,
        }
    }

    /// A table that yields nothing (offset 0: the function has none).
    pub(crate) fn empty(what: &'static str) -> Self {
        PcValues {
            data: &[],
            pos: 0,
            pc: 0,
            limit: 0,
            value: -1,
            first: false,
            done: true,
            what,
        }
    }

    fn corrupt(&mut self, detail: String) -> Option<Result<PcRange, Error>> {
        self.done = true;
        Some(Err(Error::Malformed {
            what: self.what,
            detail,
        }))
    }

    /// The value at `pc`, or `None` when the table does not cover it.
    pub fn value_at(self, pc: u64) -> Result<Option<i32>, Error> {
        for r in self {
            let r = r?;
            if pc < r.start {
                return Ok(None);
            }
            if pc < r.end {
                return Ok(Some(r.value));
            }
        }
        Ok(None)
    }
}

impl Iterator for PcValues<'_> {
    type Item = Result<PcRange, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let at = self.pos;
            let Some(uv) = varint(self.data, &mut self.pos) else {
                return self.corrupt(format!("value delta at byte {at} runs past the table"));
            };
            if uv == 0 && !self.first {
                self.done = true;
                return None;
            }
            self.first = false;
            let delta = (-((uv & 1) as i32)) ^ ((uv >> 1) as i32);
            self.value = self.value.wrapping_add(delta);
            let at = self.pos;
            let Some(pcdelta) = varint(self.data, &mut self.pos) else {
                return self.corrupt(format!("pc delta at byte {at} runs past the table"));
            };
            let start = self.pc;
            let end = start.saturating_add(u64::from(pcdelta));
            if end > self.limit {
                return self.corrupt(format!(
                    "range {start:#x}..{end:#x} runs past the function's end {:#x}",
                    self.limit
                ));
            }
            self.pc = end;
            if end > start {
                return Some(Ok(PcRange {
                    start,
                    end,
                    value: self.value,
                }));
            }
            // An empty range only changes the value.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(data: &[u8], entry: u64, limit: u64) -> Result<Vec<(u64, u64, i32)>, Error> {
        PcValues::new(data, entry, limit, "test")
            .map(|r| r.map(|r| (r.start, r.end, r.value)))
            .collect()
    }

    #[test]
    fn decodes_go_encoding() {
        // value -1 → 0 (delta +1: zig-zag 2) for 4 bytes, → 24 (delta +24:
        // 48) for 0x90 bytes (varint 0x90 0x01), → 0 (delta -24: 47) for 1.
        let t = [2, 4, 48, 0x90, 0x01, 47, 1, 0];
        assert_eq!(
            ranges(&t, 0x1000, 0x2000).unwrap(),
            [
                (0x1000, 0x1004, 0),
                (0x1004, 0x1094, 24),
                (0x1094, 0x1095, 0)
            ]
        );
        let v = |pc| PcValues::new(&t, 0x1000, 0x2000, "t").value_at(pc).unwrap();
        assert_eq!(v(0xfff), None);
        assert_eq!(v(0x1000), Some(0));
        assert_eq!(v(0x1093), Some(24));
        assert_eq!(v(0x1095), None);
    }

    #[test]
    fn first_pair_may_have_a_zero_value_delta() {
        // value stays -1 for 3 bytes, then +2 → 1.
        let t = [0, 3, 4, 2, 0];
        assert_eq!(ranges(&t, 0, 100).unwrap(), [(0, 3, -1), (3, 5, 1)]);
    }

    #[test]
    fn corrupt_tables_are_errors() {
        assert!(ranges(&[2], 0, 100).is_err(), "no pc delta");
        assert!(ranges(&[2, 0x80], 0, 100).is_err(), "unterminated varint");
        assert!(ranges(&[0x80; 9], 0, 100).is_err(), "varint too long");
        assert!(ranges(&[2, 101, 0], 0, 100).is_err(), "past the end");
        // A table without its terminator ends at its slice.
        assert!(ranges(&[2, 4], 0, 100).is_err());
        assert!(!ranges(&[], 0, 100).unwrap_err().to_string().is_empty());
    }

    #[test]
    fn big_values() {
        // zig-zag 0xffff_fffe = +0x7fff_ffff from -1.
        let t = [0xfe, 0xff, 0xff, 0xff, 0x0f, 1, 0];
        assert_eq!(ranges(&t, 0, 10).unwrap(), [(0, 1, 0x7fff_fffe)]);
    }
}
