//! The eBPF row array: converting unwind rows to the ABI's 8-byte form and
//! allocating ranges of the shared array.

use support::abi::{UnwindRow, UnwindRuleKind, MAX_BINARY_SEARCH_STEPS, MAX_CFA_OFFSET};
use unwind::{CfaBase, FpRule, InvalidReason, UnwindRule, UnwindTable};

/// Why a table cannot be loaded as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("address {0:#x} does not fit the 32-bit row address")]
    AddressTooHigh(u64),
    #[error("{0} rows exceed the {max} a binary search of {MAX_BINARY_SEARCH_STEPS} steps covers", max = max_rows())]
    TooManyRows(usize),
}

/// Rows an executable may have: what the eBPF binary search can cover.
pub const fn max_rows() -> usize {
    1 << MAX_BINARY_SEARCH_STEPS
}

/// The ABI form of one rule. Rules the compact form cannot express become
/// `invalid` (the eBPF side then stops with a counted error, as for any
/// unsupported rule).
pub fn convert_rule(rule: &UnwindRule) -> (UnwindRuleKind, u16, i8) {
    match *rule {
        UnwindRule::Cfa { base, offset, fp } => {
            let Ok(off) = u16::try_from(offset) else {
                return (UnwindRuleKind::Invalid, 0, 0);
            };
            if off as u64 > MAX_CFA_OFFSET {
                return (UnwindRuleKind::Invalid, 0, 0);
            }
            let fp = match fp {
                FpRule::Unchanged => 0,
                FpRule::AtCfa(n) if n % 8 == 0 && n != 0 => match i8::try_from(n / 8) {
                    Ok(v) => v,
                    Err(_) => return (UnwindRuleKind::Invalid, 0, 0),
                },
                FpRule::AtCfa(_) => return (UnwindRuleKind::Invalid, 0, 0),
            };
            let kind = match base {
                CfaBase::Sp => UnwindRuleKind::CfaSp,
                CfaBase::Fp => UnwindRuleKind::CfaFp,
            };
            (kind, off, fp)
        }
        UnwindRule::Plt { threshold } => (UnwindRuleKind::Plt, threshold as u16, 0),
        UnwindRule::SignalFrame => (UnwindRuleKind::Signal, 0, 0),
        UnwindRule::EndOfStack => (UnwindRuleKind::EndOfStack, 0, 0),
        // No CFI at all here: the kernel tries the frame pointer.
        UnwindRule::Invalid(InvalidReason::NoUnwindInfo) => (UnwindRuleKind::FramePointer, 0, 0),
        UnwindRule::Invalid(_) => (UnwindRuleKind::Invalid, 0, 0),
    }
}

/// Converts a table to ABI rows, merging rows that became identical.
pub fn convert(table: &UnwindTable) -> Result<Vec<UnwindRow>, ConvertError> {
    let mut out: Vec<UnwindRow> = Vec::with_capacity(table.rows.len());
    for r in &table.rows {
        let address =
            u32::try_from(r.address).map_err(|_| ConvertError::AddressTooHigh(r.address))?;
        let (kind, cfa_offset, fp_offset) = convert_rule(&r.rule);
        let row = UnwindRow {
            address,
            cfa_offset,
            kind: kind as u8,
            fp_offset,
        };
        if let Some(last) = out.last() {
            if (last.kind, last.cfa_offset, last.fp_offset)
                == (row.kind, row.cfa_offset, row.fp_offset)
            {
                continue;
            }
        }
        out.push(row);
    }
    if out.is_empty() {
        // A file without any CFI (a stripped Go binary, code built without
        // unwind tables): one row sends every address to the frame pointer.
        out.push(UnwindRow {
            address: 0,
            cfa_offset: 0,
            kind: UnwindRuleKind::FramePointer as u8,
            fp_offset: 0,
        });
    }
    if out.len() > max_rows() {
        return Err(ConvertError::TooManyRows(out.len()));
    }
    Ok(out)
}

/// First-fit allocator over the row array's indices.
///
/// Tables come and go with processes; first fit with coalescing keeps the
/// array compact enough for a profiler's churn, and is simple to prove.
#[derive(Debug, Clone)]
pub struct RangeAllocator {
    /// Free ranges `(start, len)`, sorted by start, never adjacent.
    free: Vec<(u32, u32)>,
    capacity: u32,
}

impl RangeAllocator {
    pub fn new(capacity: u32) -> Self {
        RangeAllocator {
            free: if capacity > 0 {
                vec![(0, capacity)]
            } else {
                vec![]
            },
            capacity,
        }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Rows not allocated.
    pub fn available(&self) -> u64 {
        self.free.iter().map(|&(_, l)| l as u64).sum()
    }

    /// Start of a free range of `len` rows, if one exists.
    pub fn alloc(&mut self, len: u32) -> Option<u32> {
        if len == 0 {
            return Some(0);
        }
        let i = self.free.iter().position(|&(_, l)| l >= len)?;
        let (start, l) = self.free[i];
        if l == len {
            self.free.remove(i);
        } else {
            self.free[i] = (start + len, l - len);
        }
        Some(start)
    }

    /// Returns a range obtained from `alloc`.
    pub fn release(&mut self, start: u32, len: u32) {
        if len == 0 {
            return;
        }
        let i = self.free.partition_point(|&(s, _)| s < start);
        self.free.insert(i, (start, len));
        // Coalesce with the next, then with the previous range.
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_rules() {
        let r = UnwindRule::Cfa {
            base: CfaBase::Sp,
            offset: 16,
            fp: FpRule::AtCfa(-16),
        };
        assert_eq!(convert_rule(&r), (UnwindRuleKind::CfaSp, 16, -2));
        let r = UnwindRule::Cfa {
            base: CfaBase::Fp,
            offset: 16,
            fp: FpRule::Unchanged,
        };
        assert_eq!(convert_rule(&r), (UnwindRuleKind::CfaFp, 16, 0));
        let big = UnwindRule::Cfa {
            base: CfaBase::Sp,
            offset: 70_000,
            fp: FpRule::Unchanged,
        };
        assert_eq!(convert_rule(&big).0, UnwindRuleKind::Invalid);
        let odd = UnwindRule::Cfa {
            base: CfaBase::Sp,
            offset: 8,
            fp: FpRule::AtCfa(-12),
        };
        assert_eq!(convert_rule(&odd).0, UnwindRuleKind::Invalid);
        assert_eq!(
            convert_rule(&UnwindRule::Plt { threshold: 11 }),
            (UnwindRuleKind::Plt, 11, 0)
        );
        assert_eq!(
            convert_rule(&UnwindRule::SignalFrame).0,
            UnwindRuleKind::Signal
        );
        assert_eq!(
            convert_rule(&UnwindRule::EndOfStack).0,
            UnwindRuleKind::EndOfStack
        );
        assert_eq!(
            convert_rule(&UnwindRule::Invalid(InvalidReason::CfaExpression)).0,
            UnwindRuleKind::Invalid
        );
        let none = convert(&UnwindTable {
            rows: Vec::new(),
            coverage: Vec::new(),
            stats: Default::default(),
        })
        .unwrap();
        assert_eq!(
            (none.len(), none[0].address, none[0].kind),
            (1, 0, UnwindRuleKind::FramePointer as u8)
        );
        // Only code with no CFI at all is left to the frame pointer: CFI
        // the unwinder cannot follow stops the trace instead.
        assert_eq!(
            convert_rule(&UnwindRule::Invalid(InvalidReason::NoUnwindInfo)).0,
            UnwindRuleKind::FramePointer
        );
    }

    #[test]
    fn converts_libc_and_merges() {
        let t = UnwindTable::from_path("/lib/x86_64-linux-gnu/libc.so.6").expect("libc");
        let rows = convert(&t).unwrap();
        assert!(rows.len() <= t.rows.len());
        assert!(rows.len() > 10_000, "libc has tens of thousands of rows");
        for w in rows.windows(2) {
            assert!(w[0].address < w[1].address);
            assert_ne!(
                (w[0].kind, w[0].cfa_offset, w[0].fp_offset),
                (w[1].kind, w[1].cfa_offset, w[1].fp_offset)
            );
        }
        // Every converted row agrees with the table at its address.
        for r in &rows {
            let (k, o, f) = convert_rule(t.lookup(r.address as u64).unwrap());
            assert_eq!((k as u8, o, f), (r.kind, r.cfa_offset, r.fp_offset));
        }
    }

    #[test]
    fn allocator_reuses_and_coalesces() {
        let mut a = RangeAllocator::new(100);
        let x = a.alloc(30).unwrap();
        let y = a.alloc(30).unwrap();
        let z = a.alloc(30).unwrap();
        assert_eq!((x, y, z), (0, 30, 60));
        assert_eq!(a.alloc(20), None);
        a.release(y, 30);
        a.release(x, 30);
        assert_eq!(a.available(), 70);
        assert_eq!(a.alloc(60), Some(0), "freed neighbours coalesced");
        a.release(0, 60);
        a.release(z, 30);
        assert_eq!(a.alloc(100), Some(0));
    }
}
