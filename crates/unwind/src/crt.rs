//! Rules for `.init` and `.fini`, which glibc's `crti.o`/`crtn.o` assemble
//! without CFI. Every executable and shared library runs them (`_init` when
//! it is loaded, `_fini` at exit), and short-lived processes are sampled
//! there often: on the page fault of their first instruction, since nothing
//! else touched that page yet.

use crate::{CfaBase, FpRule, UnwindRow, UnwindRule};

const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
/// `sub $0x8,%rsp`
const SUB_8_RSP: [u8; 4] = [0x48, 0x83, 0xec, 0x08];
/// `add $0x8,%rsp; ret`
const ADD_8_RSP_RET: [u8; 5] = [0x48, 0x83, 0xc4, 0x08, 0xc3];

fn sp(offset: i32) -> UnwindRule {
    UnwindRule::Cfa {
        base: CfaBase::Sp,
        offset,
        fp: FpRule::Unchanged,
    }
}

/// The rows of a crt stub at `address`, `[endbr64] sub $8,%rsp … add
/// $8,%rsp; ret` (`code` may go on past it), and the address where the stub
/// ends: CFA = rsp + 8 before the `sub` and at the `ret`, rsp + 16 between.
/// `None` for code of any other shape (then nothing is guessed).
pub(crate) fn stub_rows(address: u64, code: &[u8]) -> Option<(Vec<UnwindRow>, u64)> {
    let body = code.strip_prefix(&ENDBR64).unwrap_or(code);
    let prologue = code.len() - body.len() + SUB_8_RSP.len();
    if !body.starts_with(&SUB_8_RSP) {
        return None;
    }
    let epilogue = prologue
        + code[prologue..]
            .windows(ADD_8_RSP_RET.len())
            .position(|w| w == ADD_8_RSP_RET)?;
    let end = address + (epilogue + ADD_8_RSP_RET.len()) as u64;
    let ret = end - 1;
    let rows = vec![
        UnwindRow {
            address,
            rule: sp(8),
        },
        UnwindRow {
            address: address + prologue as u64,
            rule: sp(16),
        },
        UnwindRow {
            address: ret,
            rule: sp(8),
        },
    ];
    Some((rows, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fill_gap, InvalidReason};

    fn row(address: u64, rule: UnwindRule) -> UnwindRow {
        UnwindRow { address, rule }
    }

    /// glibc 2.36's `_init` (no endbr64) and an IBT `_fini`.
    const INIT: [u8; 23] = [
        0x48, 0x83, 0xec, 0x08, // sub $8,%rsp
        0x48, 0x8b, 0x05, 0xc1, 0xbf, 0x01, 0x00, // mov gmon_start,%rax
        0x48, 0x85, 0xc0, // test %rax,%rax
        0x74, 0x02, // je
        0xff, 0xd0, // call *%rax
        0x48, 0x83, 0xc4, 0x08, 0xc3, // add $8,%rsp; ret
    ];
    const FINI_IBT: [u8; 13] = [
        0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x83, 0xec, 0x08, 0x48, 0x83, 0xc4, 0x08, 0xc3,
    ];

    #[test]
    fn crt_stubs_get_rows() {
        assert_eq!(
            stub_rows(0x3000, &INIT).unwrap(),
            (
                vec![row(0x3000, sp(8)), row(0x3004, sp(16)), row(0x3016, sp(8))],
                0x3017
            )
        );
        // Whatever follows the stub (padding, the next section) is not its.
        let mut fini = FINI_IBT.to_vec();
        fini.extend_from_slice(&[0xcc, 0x48, 0x83, 0xc4, 0x08, 0xc3, 0x90]);
        assert_eq!(
            stub_rows(0x5000, &fini).unwrap(),
            (
                vec![row(0x5000, sp(8)), row(0x5008, sp(16)), row(0x500c, sp(8))],
                0x500d
            )
        );
        // Anything else is left alone.
        assert!(stub_rows(0, &INIT[1..]).is_none());
        assert!(stub_rows(0, &INIT[..22]).is_none());
        assert!(stub_rows(0, &[0x48, 0x83, 0xec, 0x08, 0xc3]).is_none());
        assert!(stub_rows(0, &[]).is_none());
    }

    #[test]
    fn stubs_fill_only_gaps() {
        let gap = UnwindRule::Invalid(InvalidReason::NoUnwindInfo);
        let stub = || stub_rows(0x3000, &INIT).unwrap().0;
        let end = 0x3017;
        // Before the first FDE (the usual layout: .init, .plt, .text).
        let mut rows = vec![row(0x3340, sp(8)), row(0x3400, gap)];
        assert!(fill_gap(&mut rows, stub(), end));
        assert_eq!(
            rows,
            vec![
                row(0x3000, sp(8)),
                row(0x3004, sp(16)),
                row(0x3016, sp(8)),
                row(0x3017, gap),
                row(0x3340, sp(8)),
                row(0x3400, gap)
            ]
        );
        // Inside a gap that starts exactly there, next row right at the end.
        let mut rows = vec![row(0x2000, sp(16)), row(0x3000, gap), row(0x3017, sp(8))];
        assert!(fill_gap(&mut rows, stub(), end));
        assert_eq!(
            rows,
            vec![
                row(0x2000, sp(16)),
                row(0x3000, sp(8)),
                row(0x3004, sp(16)),
                row(0x3016, sp(8)),
            ]
        );
        // CFI covering any part of it wins.
        let covered = vec![row(0x2ff0, sp(8)), row(0x3100, gap)];
        let mut rows = covered.clone();
        assert!(!fill_gap(&mut rows, stub(), end));
        assert_eq!(rows, covered);
        let partly = vec![row(0x2000, gap), row(0x3010, sp(8)), row(0x3100, gap)];
        let mut rows = partly.clone();
        assert!(!fill_gap(&mut rows, stub(), end));
        assert_eq!(rows, partly);
        // An empty table gets the stub alone.
        let mut rows = Vec::new();
        assert!(fill_gap(&mut rows, stub(), end));
        assert_eq!(rows.len(), 4);
    }
}
