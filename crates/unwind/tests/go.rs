//! Go binaries: rows from `.gopclntab` for Go text, on the workloads built
//! by Go 1.19, 1.22 and 1.24.
//!
//! * On every binary that still has `.debug_frame`, at every address of Go
//!   text, the pclntab-derived CFA and return address slot equal gimli's
//!   evaluation of the `.debug_frame` rows (which Go's linker writes from
//!   the same `pcsp`, through another encoding and another decoder).
//! * Where the rows say the caller's `rbp` is at `CFA - 16`, and only there,
//!   Go's own disassembler shows the prologue has saved it (`.debug_frame`
//!   says nothing about `rbp`).
//! * Stripped binaries (`-s -w`, no `.debug_frame`) have rows for all Go
//!   text, and the same rows as the unstripped build, function by function.
//! * Precedence: `.eh_frame` (the C code of a cgo binary) first, then
//!   `.gopclntab`, then `.debug_frame`.

mod common;

use std::collections::HashMap;

use gimli::{CfaRule, CieOrFde, DebugFrame, LittleEndian, RegisterRule, UnwindSection, X86_64};
use gopclntab::{flag, Pclntab};
use object::{Object, ObjectSection};
use unwind::{CfaBase, FpRule, SectionKind, UnwindRule, UnwindTable};
use workloads::go::{self, GoBuild, Program, Variant};

fn build(tc: &go::Toolchain, program: Program, variant: Variant) -> GoBuild {
    go::build(tc, program, variant)
        .unwrap_or_else(|e| panic!("{} {program:?} {variant}: {e}", tc.version))
}

fn toolchains() -> Vec<go::Toolchain> {
    go::toolchains().expect("Go 1.19, 1.22 and 1.24 (bash scripts/install-deps)")
}

/// `[start, end)` of every Go function's `pcsp` coverage, with its flags.
fn go_functions(data: &[u8]) -> Vec<(u64, u64, u8, String)> {
    let tab = Pclntab::parse(data).unwrap();
    tab.functions()
        .map(Result::unwrap)
        .filter_map(|f| {
            let ranges: Vec<_> = tab.pcsp(&f).map(Result::unwrap).collect();
            Some((
                ranges.first()?.start,
                ranges.last()?.end,
                f.flag,
                tab.name(&f).unwrap().into_owned(),
            ))
        })
        .collect()
}

/// The signal restorers Go installs (`sa_restorer`): 1.19, then 1.21 on.
const RESTORERS: [&str; 2] = ["runtime.sigreturn", "runtime.sigreturn__sigaction"];

/// Whether the function ends the stack: `TOPFRAME`, or `SPWRITE` (stack
/// switches), except the signal handler (unwound into the interrupted code
/// through the restorer) and `cgocallback` (unwound into the goroutine that
/// called C), as the crate documents.
fn outermost(name: &str, flags: u8) -> bool {
    (flags & flag::TOP_FRAME != 0 && name != "runtime.sigtramp")
        || (flags & flag::SP_WRITE != 0 && name != "runtime.cgocallback")
}

/// What the oracle saw.
#[derive(Debug, Default)]
struct Report {
    addresses: u64,
    outermost: u64,
    fdes: usize,
}

/// Walks every row of every `.debug_frame` FDE with gimli and checks the
/// table at every address of it.
fn check_against_debug_frame(label: &str, data: &[u8], table: &UnwindTable) -> Report {
    let obj = object::File::parse(data).unwrap();
    let bytes = obj
        .section_by_name(".debug_frame")
        .unwrap_or_else(|| panic!("{label}: no .debug_frame"))
        .uncompressed_data()
        .unwrap();
    let mut section = DebugFrame::new(&bytes, LittleEndian);
    section.set_address_size(8);
    let bases = gimli::BaseAddresses::default();
    let mut ctx = Box::new(gimli::UnwindContext::new());
    let funcs = go_functions(data);
    let flags_at = |pc: u64| {
        let i = funcs.partition_point(|f| f.0 <= pc);
        funcs[i - 1].2
    };
    let name_at = |pc: u64| {
        let i = funcs.partition_point(|f| f.0 <= pc);
        funcs[i - 1].3.as_str()
    };
    let mut report = Report::default();
    let mut entries = section.entries(&bases);
    while let Some(entry) = entries.next().unwrap() {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let fde = partial.parse(|s, b, o| s.cie_from_offset(b, o)).unwrap();
        report.fdes += 1;
        let mut rows = fde.rows(&section, &bases, &mut ctx).unwrap();
        while let Some(row) = rows.next_row().unwrap() {
            let CfaRule::RegisterAndOffset { register, offset } = *row.cfa() else {
                panic!("{label}: Go's .debug_frame has only rsp-based CFAs: {row:?}");
            };
            assert_eq!(register, X86_64::RSP, "{label}");
            assert_eq!(
                row.register(X86_64::RA),
                Some(RegisterRule::Offset(-8)),
                "{label}"
            );
            for pc in row.start_address()..row.end_address() {
                assert_eq!(
                    table.source_of(pc),
                    Some(SectionKind::GoPclntab),
                    "{label}: {pc:#x} is Go text"
                );
                let rule = *table.lookup(pc).unwrap();
                match rule {
                    UnwindRule::Cfa {
                        base: CfaBase::Sp,
                        offset: o,
                        ..
                    } => {
                        assert_eq!(
                            i64::from(o),
                            offset,
                            "{label}: CFA at {pc:#x}: {rule}, gimli {row:?}"
                        );
                    }
                    UnwindRule::SignalFrame => {
                        assert!(
                            RESTORERS.contains(&name_at(pc)),
                            "{label}: {pc:#x} is a signal frame but not in Go's restorer"
                        );
                    }
                    UnwindRule::EndOfStack => {
                        assert_ne!(
                            flags_at(pc) & (flag::TOP_FRAME | flag::SP_WRITE),
                            0,
                            "{label}: {pc:#x} is the end of the stack but not TOPFRAME/SPWRITE"
                        );
                        report.outermost += 1;
                    }
                    other => panic!("{label}: at {pc:#x}: {other}, gimli {row:?}"),
                }
                report.addresses += 1;
            }
        }
    }
    report
}

#[test]
fn go_text_cfa_equals_debug_frame_everywhere() {
    for tc in toolchains() {
        for program in Program::ALL {
            for variant in [Variant::Normal, Variant::Trimpath, Variant::Pie] {
                let b = build(&tc, program, variant);
                let data = std::fs::read(&b.exe).unwrap();
                let table = UnwindTable::from_elf(&data).unwrap();
                common::check_invariants(&table);
                // Deterministic: the same bytes give the same table.
                assert_eq!(UnwindTable::from_elf(&data).unwrap(), table);
                let report = check_against_debug_frame(&b.label(), &data, &table);
                let go = table.stats.go.as_ref().unwrap();
                // Every byte the Go functions' pcsp tables cover was checked:
                // .debug_frame has an FDE for each of them.
                let go_text: u64 = go_functions(&data).iter().map(|f| f.1 - f.0).sum();
                assert_eq!(report.addresses, go_text, "{}", b.label());
                assert_eq!(report.fdes, go.functions_used, "{}", b.label());
                // .debug_frame lost to .gopclntab everywhere.
                assert_eq!(
                    table.stats.fdes_superseded_by_gopclntab,
                    report.fdes,
                    "{}",
                    b.label()
                );
                assert!(!table
                    .stats
                    .rows_by_source
                    .contains_key(&SectionKind::DebugFrame));
                eprintln!(
                    "{}: {} functions, {} rows; CFA equal at {} addresses ({} in outermost functions)",
                    b.label(),
                    go.functions,
                    table.rows.len(),
                    report.addresses,
                    report.outermost
                );
            }
        }
    }
}

/// The save point an independent reading of `go tool objdump` gives: the
/// first instruction that moves SP is `PUSHQ BP`, or `SUBQ $n, SP`
/// followed by `MOVQ BP, n-8(SP)`.
fn objdump_saves(insns: &[go::GoInsn]) -> HashMap<u64, (u64, i32)> {
    let mut by_fn: Vec<&[go::GoInsn]> = Vec::new();
    let mut start = 0;
    for i in 1..=insns.len() {
        if i == insns.len() || insns[i].function != insns[start].function {
            by_fn.push(&insns[start..i]);
            start = i;
        }
    }
    let moves_sp = |t: &str| {
        t.starts_with("PUSH")
            || t.starts_with("POP")
            || (t.ends_with(", SP") && !t.starts_with("CMP"))
            || t.starts_with("ADJSP")
    };
    let mut out = HashMap::new();
    for body in by_fn {
        let Some(k) = body.iter().position(|i| moves_sp(&i.text)) else {
            continue;
        };
        let first = &body[k];
        if first.text == "PUSHQ BP" {
            out.insert(body[0].address, (first.address + first.len, 8));
            continue;
        }
        let Some(n) = first
            .text
            .strip_prefix("SUBQ $0x")
            .and_then(|r| r.strip_suffix(", SP"))
            .and_then(|h| i32::from_str_radix(h, 16).ok())
        else {
            continue;
        };
        let Some(next) = body.get(k + 1) else {
            continue;
        };
        let slot = if n == 8 {
            "MOVQ BP, 0(SP)".to_string()
        } else {
            format!("MOVQ BP, {:#x}(SP)", n - 8)
        };
        if next.text == slot {
            out.insert(body[0].address, (next.address + next.len, n));
        }
    }
    out
}

#[test]
fn rbp_is_at_cfa_minus_16_exactly_where_the_prologue_saved_it() {
    for tc in toolchains() {
        for program in Program::ALL {
            let b = build(&tc, program, Variant::Normal);
            let data = std::fs::read(&b.exe).unwrap();
            let table = UnwindTable::from_elf(&data).unwrap();
            let saves = objdump_saves(&go::objdump(&tc, &b.exe).unwrap());
            let mut saved_addresses = 0u64;
            let mut functions_saving = 0;
            for (start, end, flags, name) in go_functions(&data) {
                let outermost = outermost(&name, flags);
                if RESTORERS.contains(&name.as_str()) {
                    continue;
                }
                let save = saves.get(&start).filter(|_| !outermost);
                functions_saving += usize::from(save.is_some());
                for pc in start..end {
                    let rule = *table.lookup(pc).unwrap();
                    let UnwindRule::Cfa { offset, fp, .. } = rule else {
                        assert!(outermost, "{}: {name} at {pc:#x}: {rule}", b.label());
                        continue;
                    };
                    let want = match save {
                        Some(&(after, min)) if pc >= after && offset - 8 >= min => {
                            FpRule::AtCfa(-16)
                        }
                        _ => FpRule::Unchanged,
                    };
                    assert_eq!(
                        fp,
                        want,
                        "{}: {name} at {pc:#x}: {rule}, save {save:?}",
                        b.label()
                    );
                    saved_addresses += u64::from(want != FpRule::Unchanged);
                }
            }
            let go = table.stats.go.as_ref().unwrap();
            assert_eq!(
                go.functions_with_frame_pointer,
                functions_saving,
                "{}",
                b.label()
            );
            assert!(
                functions_saving * 10 > go.functions * 7,
                "{}: {functions_saving}",
                b.label()
            );
            eprintln!(
                "{}: caller's rbp at CFA-16 in {functions_saving} of {} functions, {saved_addresses} addresses",
                b.label(),
                go.functions
            );
        }
    }
}

#[test]
fn stripped_go_text_has_rows_everywhere_and_the_same_rows() {
    for tc in toolchains() {
        for program in Program::ALL {
            let b = build(&tc, program, Variant::Stripped);
            let data = std::fs::read(&b.exe).unwrap();
            let table = UnwindTable::from_elf(&data).unwrap();
            common::check_invariants(&table);
            assert!(table
                .stats
                .sources
                .iter()
                .all(|s| s.kind != SectionKind::DebugFrame));
            let funcs = go_functions(&data);
            for (start, end, _, name) in &funcs {
                for pc in *start..*end {
                    let rule = table.lookup(pc).unwrap();
                    assert!(
                        matches!(
                            rule,
                            UnwindRule::Cfa { .. }
                                | UnwindRule::EndOfStack
                                | UnwindRule::SignalFrame
                        ),
                        "{}: {name} at {pc:#x}: {rule}",
                        b.label()
                    );
                    assert_eq!(table.source_of(pc), Some(SectionKind::GoPclntab));
                }
            }
            for chain in go::CHAIN.iter().skip(1) {
                if program == Program::Chain {
                    let (s, ..) = funcs.iter().find(|f| f.3 == *chain).unwrap();
                    assert!(matches!(table.lookup(*s), Some(UnwindRule::Cfa { .. })));
                }
            }
            let at = |name: &str| funcs.iter().find(|f| f.3 == name).unwrap().0;
            assert_eq!(
                table.lookup(at("runtime.goexit")),
                Some(&UnwindRule::EndOfStack)
            );
            // A return address to the restorer (looked up a byte early) is
            // a signal frame; the handler unwinds into it.
            let restorer = funcs
                .iter()
                .find(|f| RESTORERS.contains(&f.3.as_str()))
                .unwrap();
            assert_eq!(table.lookup(restorer.0 - 1), Some(&UnwindRule::SignalFrame));
            assert_eq!(table.lookup(restorer.1 - 1), Some(&UnwindRule::SignalFrame));
            assert!(matches!(
                table.lookup(at("runtime.sigtramp") + 8),
                Some(UnwindRule::Cfa { .. })
            ));
            // Up to Go 1.20 a goroutine that called C has the entry of
            // systemstack_switch as its saved pc: a byte before it has the
            // entry's rule.
            let switch = at("runtime.systemstack_switch");
            assert_eq!(
                table.lookup(switch - 1),
                table.lookup(switch),
                "{}",
                b.label()
            );
            assert!(matches!(
                table.lookup(switch),
                Some(UnwindRule::Cfa {
                    base: CfaBase::Sp,
                    offset: 8,
                    ..
                })
            ));
            // Function by function, the rows of the unstripped build.
            let normal = build(&tc, program, Variant::Normal);
            let ndata = std::fs::read(&normal.exe).unwrap();
            let ntable = UnwindTable::from_elf(&ndata).unwrap();
            let nfuncs = go_functions(&ndata);
            assert_eq!(funcs.len(), nfuncs.len());
            let relative = |t: &UnwindTable, s: u64, e: u64| -> Vec<(u64, UnwindRule)> {
                (s..e).map(|pc| (pc - s, *t.lookup(pc).unwrap())).collect()
            };
            for (f, n) in funcs.iter().zip(&nfuncs) {
                assert_eq!(f.3, n.3);
                assert_eq!(
                    relative(&table, f.0, f.1),
                    relative(&ntable, n.0, n.1),
                    "{}: {}",
                    b.label(),
                    f.3
                );
            }
            eprintln!(
                "{}: {} Go functions, {} rows, all Go text covered",
                b.label(),
                funcs.len(),
                table.rows.len()
            );
        }
    }
}

#[test]
fn eh_frame_wins_over_gopclntab_and_rows_name_their_source() {
    for tc in toolchains() {
        let b = build(&tc, Program::Cgo, Variant::Normal);
        let data = std::fs::read(&b.exe).unwrap();
        let table = UnwindTable::from_elf(&data).unwrap();
        let kinds: Vec<SectionKind> = table.stats.sources.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                SectionKind::EhFrame,
                SectionKind::GoPclntab,
                SectionKind::DebugFrame
            ],
            "{}",
            b.label()
        );
        // The C code (gcc's .eh_frame) keeps its rows.
        let obj = object::File::parse(&*data).unwrap();
        let eh = obj.section_by_name(".eh_frame").unwrap();
        let mut section = gimli::EhFrame::new(eh.data().unwrap(), LittleEndian);
        section.set_address_size(8);
        let bases = gimli::BaseAddresses::default().set_eh_frame(eh.address());
        let mut entries = section.entries(&bases);
        let mut c_bytes = 0;
        while let Some(entry) = entries.next().unwrap() {
            let CieOrFde::Fde(p) = entry else { continue };
            let fde = p.parse(|s, b, o| s.cie_from_offset(b, o)).unwrap();
            for pc in fde.initial_address()..fde.end_address() {
                assert_eq!(table.source_of(pc), Some(SectionKind::EhFrame), "{pc:#x}");
                c_bytes += 1;
            }
        }
        assert!(c_bytes > 100, "{}: {c_bytes}", b.label());
        assert!(table.stats.rows_by_source[&SectionKind::EhFrame] > 10);
        assert!(table.stats.rows_by_source[&SectionKind::GoPclntab] > 1000);
        let mut text = Vec::new();
        unwind::write_rows_with_sources(&table, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(text.lines().count(), table.rows.len());
        assert!(text.lines().any(|l| l.ends_with(" .eh_frame")));
        assert!(text.lines().any(|l| l.ends_with(" .gopclntab")));
        assert!(!text.lines().any(|l| l.ends_with(" .debug_frame")));
    }
}
