//! The public API on known code: every rule kind at the hand-written
//! functions of `fixtures/prog.c`, lookup semantics, text output,
//! determinism, files without CFI, separate debug files and overlapping
//! FDEs.

mod common;

use common::*;
use object::{Object, ObjectSection, ObjectSymbol};
use unwind::{
    write_rows, CfaBase, FpRule, InvalidReason, SectionKind, UnwindRow, UnwindRule, UnwindTable,
};

const CFA_SP8: UnwindRule = UnwindRule::Cfa {
    base: CfaBase::Sp,
    offset: 8,
    fp: FpRule::Unchanged,
};

fn sym_range(data: &[u8], name: &str) -> (u64, u64) {
    let file = object::File::parse(data).unwrap();
    let s = file
        .symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("no symbol {name}"));
    (s.address(), s.address() + s.size())
}

/// The rules in effect anywhere in `[start, end)`.
fn rules_in(t: &UnwindTable, (start, end): (u64, u64)) -> Vec<UnwindRule> {
    let mut v = vec![*t.lookup(start).expect("a row")];
    v.extend(
        t.rows
            .iter()
            .filter(|r| r.address > start && r.address < end)
            .map(|r| r.rule),
    );
    v
}

#[test]
fn every_rule_kind_on_hand_written_cfi() {
    for name in ["c-O2", "c-debug-frame", "c-both"] {
        let data = read(&fixture(name).path);
        let t = UnwindTable::from_elf(&data).unwrap();
        let rules = |s: &str| rules_in(&t, sym_range(&data, s));
        let inv = UnwindRule::Invalid;
        use InvalidReason::{
            CfaExpression, CfaOffsetOutOfRange, CfaRegister, NoUnwindInfo, ReturnAddress, SpRule,
        };
        let bad_fp = InvalidReason::FpRule;
        assert_eq!(
            rules("cfi_r10"),
            [CFA_SP8, inv(CfaRegister), CFA_SP8],
            "{name}"
        );
        assert_eq!(rules("cfi_expr"), [CFA_SP8, inv(CfaExpression)], "{name}");
        assert_eq!(
            rules("cfi_fp_reg"),
            [CFA_SP8, inv(bad_fp), CFA_SP8],
            "{name}"
        );
        assert_eq!(
            rules("cfi_ra_odd"),
            [CFA_SP8, inv(ReturnAddress), CFA_SP8],
            "{name}"
        );
        assert_eq!(rules("cfi_end"), [UnwindRule::EndOfStack], "{name}");
        assert_eq!(rules("cfi_signal"), [UnwindRule::SignalFrame], "{name}");
        assert_eq!(
            rules("cfi_big"),
            [CFA_SP8, inv(CfaOffsetOutOfRange), CFA_SP8],
            "{name}"
        );
        assert_eq!(rules("cfi_fp_far"), [CFA_SP8, inv(bad_fp)], "{name}");
        assert_eq!(rules("cfi_sp"), [CFA_SP8, inv(SpRule)], "{name}");
        assert_eq!(
            rules("cfi_plt7"),
            [CFA_SP8, UnwindRule::Plt { threshold: 7 }],
            "{name}"
        );
        let fp = |base, offset, fp| UnwindRule::Cfa { base, offset, fp };
        let at16 = FpRule::AtCfa(-16);
        assert_eq!(
            rules("cfi_fp"),
            [
                CFA_SP8,
                fp(CfaBase::Sp, 16, at16),
                fp(CfaBase::Fp, 16, at16),
                fp(CfaBase::Sp, 8, at16),  // after leave, before ret
                fp(CfaBase::Fp, 16, at16), // restore_state
                fp(CfaBase::Sp, 8, at16),
            ],
            "{name}"
        );
        // No CFI: a gap.
        let nocfi = sym_range(&data, "nocfi");
        assert_eq!(rules_in(&t, nocfi), [inv(NoUnwindInfo)], "{name}");
        // Back-to-back FDEs: no gap row, and the seam merges.
        let (b, _) = sym_range(&data, "adj_b");
        assert!(t.rows.iter().all(|r| r.address != b), "{name}");
        assert_eq!(t.lookup(b), Some(&CFA_SP8));
        assert_eq!(t.lookup(b + 1), Some(&fp(CfaBase::Sp, 16, at16)), "{name}");
        // Ordinary compiled code starts with CFA = rsp + 8.
        assert_eq!(t.lookup(sym_range(&data, "main").0), Some(&CFA_SP8));
    }
}

#[test]
fn plt_rows_cover_plt_stubs() {
    for (name, threshold) in [("c-O2", 11), ("c-O2-ibt", 9)] {
        let data = read(&fixture(name).path);
        let t = UnwindTable::from_elf(&data).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let plt = file.section_by_name(".plt").unwrap();
        // .plt0 pushes GOT+8 then jumps; the per-symbol stubs follow.
        assert_eq!(
            t.lookup(plt.address() + 16),
            Some(&UnwindRule::Plt { threshold }),
            "{name}"
        );
        assert_eq!(
            t.lookup(plt.address() + plt.size() - 1),
            Some(&UnwindRule::Plt { threshold }),
            "{name}"
        );
    }
}

#[test]
fn lookup_bounds() {
    let data = read(&fixture("c-O2").path);
    let t = UnwindTable::from_elf(&data).unwrap();
    let first = t.rows[0].address;
    assert_eq!(t.lookup(0), None);
    assert_eq!(t.lookup(first - 1), None);
    assert_eq!(t.lookup(first), Some(&t.rows[0].rule));
    assert_eq!(
        t.lookup(u64::MAX),
        Some(&UnwindRule::Invalid(InvalidReason::NoUnwindInfo))
    );
    for w in t.rows.windows(2) {
        assert_eq!(t.lookup(w[1].address - 1), Some(&w[0].rule));
        assert_eq!(t.lookup(w[1].address), Some(&w[1].rule));
    }
}

#[test]
fn text_output_one_row_per_line() {
    let data = read(LIBC);
    let t = UnwindTable::from_elf(&data).unwrap();
    let mut out = Vec::new();
    write_rows(&t, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), t.rows.len());
    for (line, row) in lines.iter().zip(&t.rows) {
        assert_eq!(*line, row.to_string());
        assert!(line.starts_with(&format!("{:#x} ", row.address)));
    }
    assert!(lines.iter().any(|l| l.ends_with(" cfa=rsp+16 fp=cfa-16")));
    assert!(lines.iter().any(|l| l.ends_with(" plt(11)")));
    assert!(lines.iter().any(|l| l.ends_with(" signal")));
    assert!(lines.iter().any(|l| l.ends_with(" end")));
    assert!(lines.last().unwrap().ends_with(" invalid(no-unwind-info)"));
    assert_eq!(
        UnwindRow {
            address: 0x1040,
            rule: UnwindRule::Cfa {
                base: CfaBase::Sp,
                offset: 16,
                fp: FpRule::AtCfa(-16)
            }
        }
        .to_string(),
        "0x1040 cfa=rsp+16 fp=cfa-16"
    );
}

#[test]
fn deterministic_and_path_equals_bytes() {
    for path in [LIBC.into(), fixture("rust-O3").path.clone()] {
        let data = read(&path);
        let a = UnwindTable::from_elf(&data).unwrap();
        let b = UnwindTable::from_elf(&data).unwrap();
        let c = UnwindTable::from_path(&path).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
    }
}

fn build_tmp(name: &str, args: &[&str]) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("unwind-api");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    let st = std::process::Command::new(args[0])
        .args(&args[1..])
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    out
}

#[test]
fn file_without_cfi_gives_empty_table() {
    let src = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("unwind-nocfi.c");
    std::fs::write(
        &src,
        "void _start(void) { for (;;) __asm__ volatile(\"pause\"); }\n",
    )
    .unwrap();
    let src = src.to_str().unwrap();
    let exe = build_tmp(
        "nocfi",
        &[
            "gcc",
            "-O2",
            "-static",
            "-nostdlib",
            "-fno-asynchronous-unwind-tables",
            "-Wl,--no-eh-frame-hdr",
            src,
            "-o",
        ],
    );
    let t = UnwindTable::from_elf(&read(&exe)).unwrap();
    assert!(t.rows.is_empty());
    assert!(t.stats.sources.is_empty());
    assert_eq!(t.lookup(0x401000), None);
}

#[test]
fn separate_debug_file_uses_debug_frame() {
    let full = fixture("c-debug-frame-zlib").path.to_str().unwrap();
    let dbg = build_tmp(
        "c-debug-frame.debug",
        &["objcopy", "--only-keep-debug", full],
    );
    let data = read(&dbg);
    let t = UnwindTable::from_elf(&data).unwrap();
    // .eh_frame is NOBITS there; .debug_frame carries the C code's CFI.
    assert_eq!(t.stats.sources.len(), 1);
    assert_eq!(t.stats.sources[0].kind, SectionKind::DebugFrame);
    let report = check_against_gimli(&data, &t);
    assert!(report.fdes > 10);
    let fulltable = UnwindTable::from_elf(&read(full)).unwrap();
    let main = sym_range(&read(full), "main").0;
    assert_eq!(t.lookup(main), fulltable.lookup(main));
}

/// File offset of the `pc_range` field of the `.eh_frame` FDE that starts
/// at `start`.
fn fde_range_field(data: &[u8], start: u64) -> usize {
    use gimli::UnwindSection;
    let file = object::File::parse(data).unwrap();
    let eh = file.section_by_name(".eh_frame").unwrap();
    let (eh_off, _) = eh.file_range().unwrap();
    let section = gimli::EhFrame::new(eh.data().unwrap(), gimli::LittleEndian);
    let bases = gimli::BaseAddresses::default().set_eh_frame(eh.address());
    let mut entries = section.entries(&bases);
    while let Some(e) = entries.next().unwrap() {
        if let gimli::CieOrFde::Fde(p) = e {
            let f = p.parse(|s, b, o| s.cie_from_offset(b, o)).unwrap();
            if f.initial_address() == start {
                // length(4) CIE pointer(4) pc_begin(pcrel sdata4) pc_range(udata4)
                assert_eq!(
                    f.cie().fde_address_encoding(),
                    Some(gimli::DW_EH_PE_pcrel | gimli::DW_EH_PE_sdata4)
                );
                return eh_off as usize + f.offset() + 12;
            }
        }
    }
    panic!("no FDE at {start:#x}");
}

/// Patches one FDE's address range in `.eh_frame` so that it overlaps the
/// next FDE (partly, then entirely) and checks the documented policy: the
/// FDE that starts first wins; the other only contributes what lies past.
#[test]
fn overlapping_fdes_first_start_wins() {
    let data = read(&fixture("c-O2").path);
    let orig = UnwindTable::from_elf(&data).unwrap();
    let set_range = |field: usize, len: u64| {
        let mut x = data.clone();
        x[field..field + 4].copy_from_slice(&(len as u32).to_le_bytes());
        x
    };

    // Partial overlap: cfi_r10's FDE now ends 2 bytes into cfi_expr, in the
    // middle of cfi_expr's second row ([+1, +3): the CFA expression).
    let r10 = sym_range(&data, "cfi_r10");
    let expr = sym_range(&data, "cfi_expr");
    assert_eq!(r10.1, expr.0);
    let inv_expr = UnwindRule::Invalid(InvalidReason::CfaExpression);
    assert_eq!(orig.lookup(expr.0 + 1), Some(&inv_expr));
    assert_eq!(orig.lookup(expr.0 + 3), Some(&CFA_SP8));
    let t = UnwindTable::from_elf(&set_range(fde_range_field(&data, r10.0), r10.1 - r10.0 + 2))
        .unwrap();
    check_invariants(&t);
    assert_eq!((t.stats.fdes_overlapping, t.stats.fdes_shadowed), (1, 0));
    // cfi_r10's last rule extends over expr.0 .. expr.0+2 ...
    assert_eq!(t.lookup(expr.0), orig.lookup(r10.1 - 1));
    assert_eq!(t.lookup(expr.0 + 1), orig.lookup(r10.1 - 1));
    // ... then cfi_expr's rows, its straddling row clipped.
    assert_eq!(t.lookup(expr.0 + 2), Some(&inv_expr));
    assert_eq!(t.lookup(expr.0 + 3), Some(&CFA_SP8));
    assert_eq!(t.lookup(expr.1), orig.lookup(expr.1));

    // Full cover: cfi_fp's FDE swallows cfi_big (nop; nop; ret) entirely.
    let fp = sym_range(&data, "cfi_fp");
    let big = sym_range(&data, "cfi_big");
    assert_eq!(fp.1, big.0);
    let t = UnwindTable::from_elf(&set_range(fde_range_field(&data, fp.0), big.1 - fp.0)).unwrap();
    check_invariants(&t);
    assert_eq!((t.stats.fdes_overlapping, t.stats.fdes_shadowed), (0, 1));
    assert_eq!(t.lookup(big.0 + 1), orig.lookup(fp.1 - 1));
    assert_eq!(t.lookup(big.1 - 1), orig.lookup(fp.1 - 1));
    assert!(!t
        .rows
        .iter()
        .any(|r| r.rule == UnwindRule::Invalid(InvalidReason::CfaOffsetOutOfRange)));
}

#[test]
fn stats_are_consistent() {
    let data = read(LIBC);
    let t = UnwindTable::from_elf(&data).unwrap();
    let s = &t.stats;
    assert_eq!(s.sources.len(), 1);
    assert_eq!(s.sources[0].kind, SectionKind::EhFrame);
    assert_eq!(s.sources[0].fdes, s.fdes);
    assert_eq!(
        s.fdes,
        s.fdes_used
            + s.fdes_empty
            + s.fdes_outside_text
            + s.fdes_shadowed
            + s.fdes_superseded_by_eh_frame
    );
    assert_eq!(s.invalid_raw.len(), InvalidReason::ALL.len());
    let gaps = t
        .rows
        .iter()
        .filter(|r| r.rule == UnwindRule::Invalid(InvalidReason::NoUnwindInfo))
        .count();
    assert_eq!(s.invalid_raw[&InvalidReason::NoUnwindInfo], gaps);
    // raw = non-empty gimli rows + gap rows (+ signal-frame rows, whose gimli
    // rows are not pushed individually).
    assert!(s.rows_raw >= s.gimli_rows);
    assert!(s.unsupported_raw() > 0);
}

/// Every dynamically linked process starts in the loader's `_start`, which
/// has no CFI: it must end the stack, not fail it.
#[test]
fn the_dynamic_loaders_entry_point_ends_the_stack() {
    let data = std::fs::read("/lib64/ld-linux-x86-64.so.2").unwrap();
    let entry = u64::from_le_bytes(data[24..32].try_into().unwrap());
    let table = UnwindTable::from_elf(&data).unwrap();
    assert_eq!(table.stats.entry_point_end_of_stack, Some(entry));
    // The return address of its first call, minus one.
    assert_eq!(table.lookup(entry + 7), Some(&UnwindRule::EndOfStack));
}
