//! Shared test support: fixture binaries compiled by the tests themselves,
//! and an independent oracle that re-derives every row with gimli.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use gimli::{
    CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, Evaluation, EvaluationResult,
    FrameDescriptionEntry, LittleEndian, Location, RegisterRule, UnwindContext, UnwindSection,
    UnwindTableRow, Value, X86_64,
};
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Object, ObjectSection};
use unwind::{CfaBase, FpRule, InvalidReason, UnwindRule, UnwindTable};

pub const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

/// A binary built by the tests.
pub struct Fixture {
    pub name: &'static str,
    pub path: PathBuf,
}

fn fixture_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn run(tool: &str, args: &[&str]) {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run `{tool}` ({e}): the unwind tests need gcc, g++ and rustc installed")
    });
    assert!(
        out.status.success(),
        "`{tool} {}` failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every fixture, compiled once per test binary (in a directory of its own,
/// so test binaries running in parallel never share files).
pub fn fixtures() -> &'static [Fixture] {
    static FIXTURES: OnceLock<Vec<Fixture>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("unwind-fixtures-{}", env!("CARGO_CRATE_NAME")));
        std::fs::create_dir_all(&dir).expect("create fixture dir");
        let c = fixture_src("prog.c");
        let cpp = fixture_src("prog.cpp");
        let rs = fixture_src("prog.rs");
        let (c, cpp, rs) = (c.to_str().unwrap(), cpp.to_str().unwrap(), rs.to_str().unwrap());
        let nodwarf_cfi = ["-fno-asynchronous-unwind-tables", "-fno-unwind-tables"];
        #[rustfmt::skip]
        let specs: Vec<(&'static str, &str, Vec<&str>)> = vec![
            // classic lazy PLT: plt(11)
            ("c-O2", "gcc", vec!["-O2", "-fomit-frame-pointer", c]),
            // IBT PLT: plt(9)
            ("c-O2-ibt", "gcc", vec!["-O2", "-fomit-frame-pointer", "-fcf-protection=full", "-Wl,-z,ibtplt", c]),
            // static glibc: its own __restore_rt, _start, hand-written asm
            ("c-O2-static", "gcc", vec!["-O2", "-fomit-frame-pointer", "-static", c]),
            ("cpp-O3", "g++", vec!["-O3", cpp]),
            // .debug_frame only (crt files still bring a little .eh_frame)
            ("c-debug-frame", "gcc", [&["-O2", "-g"][..], &nodwarf_cfi, &[c]].concat()),
            ("c-debug-frame-zlib", "gcc", [&["-O2", "-g", "-gz=zlib"][..], &nodwarf_cfi, &[c]].concat()),
            ("c-debug-frame-zstd", "gcc", [&["-O2", "-g", "-Wl,--compress-debug-sections=zstd"][..], &nodwarf_cfi, &[c]].concat()),
            ("c-debug-frame-zlib-gnu", "gcc", [&["-O2", "-g", "-Wl,--compress-debug-sections=zlib-gnu"][..], &nodwarf_cfi, &[c]].concat()),
            // every FDE in both .eh_frame and .debug_frame
            ("c-both", "gcc", vec!["-O2", "-fomit-frame-pointer", "-DBOTH_CFI_SECTIONS", "-fno-toplevel-reorder", c]),
            // rustc's default linker on 1.95 (rust-lld)
            ("rust-O3", "rustc", vec!["-C", "opt-level=3", rs]),
        ];
        specs
            .into_iter()
            .map(|(name, tool, mut args)| {
                let path = dir.join(name);
                let p = path.to_str().unwrap().to_owned();
                args.push("-o");
                args.push(&p);
                run(tool, &args);
                Fixture { name, path }
            })
            .collect()
    })
}

pub fn fixture(name: &str) -> &'static Fixture {
    fixtures()
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

pub fn read(path: impl AsRef<Path>) -> Vec<u8> {
    let path = path.as_ref();
    std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (this test requires the file; it is never skipped)",
            path.display()
        )
    })
}

/// A copy of an ELF64 file whose section header table is gone
/// (`e_shoff = e_shnum = e_shstrndx = 0`), as `sstrip`/`llvm-objcopy
/// --strip-sections` leave it.
pub fn strip_section_headers(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    out[0x28..0x30].fill(0); // e_shoff
    out[0x3c..0x40].fill(0); // e_shnum, e_shstrndx
    out
}

/// Address of a symbol (from .symtab).
pub fn symbol(data: &[u8], name: &str) -> u64 {
    use object::ObjectSymbol;
    let file = object::File::parse(data).expect("parse");
    file.symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("no symbol {name}"))
        .address()
}

// ---------------------------------------------------------------------------
// The oracle.

type R<'a> = EndianSlice<'a, LittleEndian>;

/// Synthetic register values used to evaluate both gimli's rules and ours.
const RSP: u64 = 0x7ffd_1234_5000;
const RBP: u64 = 0x7ffd_1234_9a00;

/// What unwinding one frame at an address does, semantically.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Signal,
    End,
    /// The caller's rsp (= CFA) and where the caller's rbp lives (None: rbp
    /// unchanged). The return address is always at CFA - 8.
    Frame {
        cfa: u64,
        fp_at: Option<u64>,
    },
    /// Not expressible with the crate's rules.
    Unsupported,
}

fn reg_value(reg: gimli::Register, rip: u64) -> Option<u64> {
    match reg {
        X86_64::RSP => Some(RSP),
        X86_64::RBP => Some(RBP),
        X86_64::RA => Some(rip),
        _ => None,
    }
}

/// Evaluates a CFA expression with gimli's DWARF evaluator, knowing only
/// rsp, rbp and rip and no memory.
fn eval_cfa_expr(
    expr: gimli::Expression<R<'_>>,
    encoding: gimli::Encoding,
    rip: u64,
) -> Option<u64> {
    let mut eval = Evaluation::new(expr.0, encoding);
    let mut res = eval.evaluate().ok()?;
    loop {
        match res {
            EvaluationResult::Complete => break,
            EvaluationResult::RequiresRegister { register, .. } => {
                let v = reg_value(register, rip)?;
                res = eval.resume_with_register(Value::Generic(v)).ok()?;
            }
            _ => return None,
        }
    }
    match eval.result().as_slice() {
        [p] if p.size_in_bits.is_none() => match p.location {
            Location::Address { address } => Some(address),
            _ => None,
        },
        _ => None,
    }
}

/// gimli's view of the frame at `rip`, derived from the raw row without the
/// crate's classification code.
fn expected<'a, S: UnwindSection<R<'a>>>(
    section: &S,
    fde: &FrameDescriptionEntry<R<'a>>,
    row: &UnwindTableRow<usize>,
    rip: u64,
) -> Outcome {
    if fde.is_signal_trampoline() {
        return Outcome::Signal;
    }
    let ra = row.register(X86_64::RA);
    if ra == Some(RegisterRule::Undefined) {
        return Outcome::End;
    }
    let cfa = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            // The crate stores offsets as i32.
            if i32::try_from(*offset).is_err() {
                return Outcome::Unsupported;
            }
            match reg_value(*register, rip) {
                Some(v) if *register != X86_64::RA => v.wrapping_add(*offset as u64),
                _ => return Outcome::Unsupported,
            }
        }
        CfaRule::Expression(e) => {
            let expr = e.get(section).expect("expression in section");
            match eval_cfa_expr(expr, fde.cie().encoding(), rip) {
                Some(v) => v,
                None => return Outcome::Unsupported,
            }
        }
    };
    // The caller's rsp must be the CFA.
    match row.register(X86_64::RSP) {
        None | Some(RegisterRule::ValOffset(0)) => {}
        _ => return Outcome::Unsupported,
    }
    if ra != Some(RegisterRule::Offset(-8)) {
        return Outcome::Unsupported;
    }
    let fp_at = match row.register(X86_64::RBP) {
        None | Some(RegisterRule::Undefined) | Some(RegisterRule::SameValue) => None,
        Some(RegisterRule::Offset(n)) if i32::try_from(n).is_ok() => {
            Some(cfa.wrapping_add(n as u64))
        }
        _ => return Outcome::Unsupported,
    };
    // A PLT rule has no fp slot.
    if matches!(row.cfa(), CfaRule::Expression(_)) && fp_at.is_some() {
        return Outcome::Unsupported;
    }
    Outcome::Frame { cfa, fp_at }
}

/// What the crate's rule says at `rip`. `None` for `Invalid(NoUnwindInfo)`,
/// which must never show up inside an FDE.
fn ours(rule: &UnwindRule, rip: u64) -> Option<Outcome> {
    Some(match *rule {
        UnwindRule::Cfa { base, offset, fp } => {
            let b = match base {
                CfaBase::Sp => RSP,
                CfaBase::Fp => RBP,
            };
            let cfa = b.wrapping_add(offset as i64 as u64);
            let fp_at = match fp {
                FpRule::Unchanged => None,
                FpRule::AtCfa(n) => Some(cfa.wrapping_add(n as i64 as u64)),
            };
            Outcome::Frame { cfa, fp_at }
        }
        UnwindRule::Plt { threshold } => Outcome::Frame {
            cfa: RSP
                + 8
                + if (rip & 15) >= u64::from(threshold) {
                    8
                } else {
                    0
                },
            fp_at: None,
        },
        UnwindRule::SignalFrame => Outcome::Signal,
        UnwindRule::EndOfStack => Outcome::End,
        UnwindRule::Invalid(InvalidReason::NoUnwindInfo) => return None,
        UnwindRule::Invalid(_) => Outcome::Unsupported,
    })
}

struct OFde<'a> {
    eh: bool,
    start: u64,
    end: u64,
    fde: FrameDescriptionEntry<R<'a>>,
}

fn oracle_fdes<'a, S: UnwindSection<R<'a>>>(
    section: &S,
    bases: &gimli::BaseAddresses,
    eh: bool,
    exec: &[(u64, u64)],
    out: &mut Vec<OFde<'a>>,
    skipped: &mut usize,
) {
    let mut entries = section.entries(bases);
    while let Some(entry) = entries.next().expect("oracle: CFI entries") {
        if let CieOrFde::Fde(partial) = entry {
            let fde = partial
                .parse(|s, b, o| s.cie_from_offset(b, o))
                .expect("oracle: FDE");
            let start = fde.initial_address();
            let end = start.wrapping_add(fde.len());
            if fde.len() == 0 {
                *skipped += 1;
                continue;
            }
            if !exec
                .iter()
                .any(|&(s, e)| start >= s && end <= e && end > start)
            {
                *skipped += 1;
                continue;
            }
            out.push(OFde {
                eh,
                start,
                end,
                fde,
            });
        }
    }
}

/// What the oracle checked.
#[derive(Debug, Default)]
pub struct OracleReport {
    /// FDEs that own at least one address.
    pub fdes: usize,
    pub fdes_skipped: usize,
    /// gimli rows that own at least one address.
    pub gimli_rows: usize,
    pub intervals: usize,
    pub addresses_checked: usize,
    pub expression_rows_walked: usize,
    pub outcomes_unsupported: usize,
}

/// `[s, e)` minus the sorted, disjoint `cover`.
fn uncovered(s: u64, e: u64, cover: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut cur = s;
    let i = cover.partition_point(|c| c.1 <= s);
    for &(cs, ce) in &cover[i..] {
        if cs >= e {
            break;
        }
        if cs > cur {
            out.push((cur, cs));
        }
        cur = cur.max(ce);
        if cur >= e {
            break;
        }
    }
    if cur < e {
        out.push((cur, e));
    }
    out
}

/// Walks every row of every FDE of `data` with gimli, independently of the
/// crate, and checks that `table` gives the same unwinding outcome at the
/// start and the last byte of every row (every byte of rows whose CFA is an
/// expression, since those depend on rip), and that the table has no
/// boundary anywhere else. Together this covers every address.
pub fn check_against_gimli(data: &[u8], table: &UnwindTable) -> OracleReport {
    let elf = ElfFile64::<object::LittleEndian>::parse(data).expect("oracle: parse ELF");
    let ole = object::LittleEndian;
    let le = LittleEndian;
    let mut exec: Vec<(u64, u64)> = elf
        .elf_program_headers()
        .iter()
        .filter(|p| {
            p.p_type(ole) == object::elf::PT_LOAD && p.p_flags(ole).contains(object::elf::PF_X)
        })
        .map(|p| (p.p_vaddr(ole), p.p_vaddr(ole) + p.p_memsz(ole)))
        .collect();
    exec.sort();

    let eh_sec = elf
        .section_by_name(".eh_frame")
        .filter(|s| s.kind() != object::SectionKind::UninitializedData);
    let eh_data = eh_sec.as_ref().map(|s| s.data().expect("eh_frame data"));
    let debug_data = elf
        .section_by_name(".debug_frame")
        .map(|s| s.uncompressed_data().expect("debug_frame data"));
    let mut bases = gimli::BaseAddresses::default();
    if let Some(s) = &eh_sec {
        bases = bases.set_eh_frame(s.address());
    }
    if let Some(s) = elf.section_by_name(".text") {
        bases = bases.set_text(s.address());
    }
    if let Some(s) = elf.section_by_name(".got") {
        bases = bases.set_got(s.address());
    }
    let eh = eh_data.map(|d| {
        let mut s = EhFrame::new(d, le);
        s.set_address_size(8);
        s
    });
    let debug = debug_data.as_ref().map(|d| {
        let mut s = DebugFrame::new(d, le);
        s.set_address_size(8);
        s
    });

    let mut report = OracleReport::default();
    let mut fdes = Vec::new();
    if let Some(s) = &eh {
        oracle_fdes(s, &bases, true, &exec, &mut fdes, &mut report.fdes_skipped);
    }
    if let Some(s) = &debug {
        oracle_fdes(s, &bases, false, &exec, &mut fdes, &mut report.fdes_skipped);
    }

    // The oracle models non-overlapping FDEs within a section (true of every
    // real file seen); .eh_frame wins over .debug_frame.
    let mut eh_cover: Vec<(u64, u64)> = fdes
        .iter()
        .filter(|f| f.eh)
        .map(|f| (f.start, f.end))
        .collect();
    let mut debug_cover: Vec<(u64, u64)> = fdes
        .iter()
        .filter(|f| !f.eh)
        .map(|f| (f.start, f.end))
        .collect();
    for cover in [&mut eh_cover, &mut debug_cover] {
        cover.sort();
        for w in cover.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "FDEs {:#x?} and {:#x?} overlap: the oracle does not model this",
                w[0],
                w[1]
            );
        }
    }

    let mut boundaries: Vec<u64> = Vec::new();
    let mut ctx = Box::new(UnwindContext::<usize>::new());
    let lookup = |addr: u64| -> &UnwindRule {
        table
            .lookup(addr)
            .unwrap_or_else(|| panic!("no row for {addr:#x}"))
    };
    let check = |f: &OFde<'_>, row: &UnwindTableRow<usize>, rip: u64, report: &mut OracleReport| {
        let want = match (&eh, &debug, f.eh) {
            (Some(s), _, true) => expected(s, &f.fde, row, rip),
            (_, Some(s), false) => expected(s, &f.fde, row, rip),
            _ => unreachable!(),
        };
        let rule = lookup(rip);
        let got = ours(rule, rip);
        assert_eq!(
            got.as_ref(),
            Some(&want),
            "at {rip:#x}: table says {rule}, gimli row {row:?} of FDE {:#x}..{:#x} in {}",
            f.start,
            f.end,
            if f.eh { ".eh_frame" } else { ".debug_frame" }
        );
        report.addresses_checked += 1;
        if want == Outcome::Unsupported {
            report.outcomes_unsupported += 1;
        }
    };

    for f in &fdes {
        let mut rows = match (&eh, &debug, f.eh) {
            (Some(s), _, true) => gimli::UnwindTable::new(s, &bases, &mut ctx, &f.fde),
            (_, Some(s), false) => gimli::UnwindTable::new(s, &bases, &mut ctx, &f.fde),
            _ => unreachable!(),
        }
        .expect("oracle: unwind table");
        let pieces = if f.eh {
            vec![(f.start, f.end)]
        } else {
            uncovered(f.start, f.end, &eh_cover)
        };
        boundaries.extend(pieces.iter().flat_map(|p| [p.0, p.1]));
        if !pieces.is_empty() {
            report.fdes += 1;
        }
        while let Some(row) = rows.next_row().expect("oracle: row") {
            let (s, e) = (row.start_address(), row.end_address().min(f.end));
            if s >= e {
                continue;
            }
            let intervals = uncovered_in(&pieces, s, e);
            if !intervals.is_empty() {
                report.gimli_rows += 1;
            }
            for (ps, pe) in intervals {
                report.intervals += 1;
                boundaries.push(ps);
                if matches!(row.cfa(), CfaRule::Expression(_)) && pe - ps <= 1 << 20 {
                    report.expression_rows_walked += 1;
                    for rip in ps..pe {
                        check(f, row, rip, &mut report);
                    }
                } else {
                    check(f, row, ps, &mut report);
                    check(f, row, pe - 1, &mut report);
                }
            }
        }
    }

    // ... or of the entry point made the end of the stack where it has no CFI.
    if let Some(entry) = table.stats.entry_point_end_of_stack {
        assert_eq!(table.lookup(entry), Some(&UnwindRule::EndOfStack));
        boundaries.extend([entry, entry + unwind::ENTRY_WITHOUT_CFI_SPAN]);
    }
    // ... or of a crt stub (`.init`/`.fini` without CFI) given rules.
    let crt = crt_stubs(data, table, &eh_cover, &debug_cover);
    for &(s, e) in &crt {
        boundaries.extend(
            table
                .rows
                .iter()
                .map(|r| r.address)
                .filter(|&a| a >= s && a <= e),
        );
    }
    // Every boundary of the table is a boundary of gimli's rows or FDEs.
    boundaries.sort_unstable();
    boundaries.dedup();
    for r in &table.rows {
        assert!(
            boundaries.binary_search(&r.address).is_ok(),
            "table row {r} is not at any gimli row or FDE boundary"
        );
    }
    // Past every covered interval that is not followed by another: a gap row.
    let mut cover: Vec<(u64, u64)> = eh_cover.clone();
    for &(s, e) in &debug_cover {
        cover.extend(uncovered(s, e, &eh_cover));
    }
    cover.extend_from_slice(&crt);
    cover.sort();
    for (i, &(_, e)) in cover.iter().enumerate() {
        if cover.get(i + 1).map(|n| n.0) != Some(e)
            && table.stats.entry_point_end_of_stack != Some(e)
        {
            assert_eq!(
                table.lookup(e),
                Some(&UnwindRule::Invalid(InvalidReason::NoUnwindInfo)),
                "no gap row at {e:#x}"
            );
        }
    }
    if let Some(&(s, _)) = cover.first() {
        if s > 0 {
            assert_eq!(table.lookup(s - 1), None, "a row before the first FDE");
        }
    } else {
        assert!(table.rows.is_empty());
    }
    report
}

/// `.init` and `.fini` sections no CFI covers whose start the table gives
/// `CFA = rsp + 8` (the crt stub rules), as `[start, end)`.
fn crt_stubs(
    data: &[u8],
    table: &UnwindTable,
    eh_cover: &[(u64, u64)],
    debug_cover: &[(u64, u64)],
) -> Vec<(u64, u64)> {
    use object::{Object, ObjectSection};
    let Ok(file) = object::File::parse(data) else {
        return Vec::new();
    };
    let entry_rule = UnwindRule::Cfa {
        base: unwind::CfaBase::Sp,
        offset: 8,
        fp: unwind::FpRule::Unchanged,
    };
    [".init", ".fini"]
        .iter()
        .filter_map(|name| file.section_by_name(name))
        .map(|s| (s.address(), s.address() + s.size()))
        .filter(|&(s, e)| {
            let no_cfi = |cover: &[(u64, u64)]| cover.iter().all(|&(a, b)| b <= s || a >= e);
            no_cfi(eh_cover) && no_cfi(debug_cover) && table.lookup(s) == Some(&entry_rule)
        })
        .collect()
}

/// The parts of `[s, e)` inside the (sorted, disjoint) `pieces`.
fn uncovered_in(pieces: &[(u64, u64)], s: u64, e: u64) -> Vec<(u64, u64)> {
    pieces
        .iter()
        .filter_map(|&(ps, pe)| {
            let (a, b) = (s.max(ps), e.min(pe));
            (a < b).then_some((a, b))
        })
        .collect()
}

/// Structural invariants every table must have.
pub fn check_invariants(table: &UnwindTable) {
    for w in table.rows.windows(2) {
        assert!(
            w[0].address < w[1].address,
            "rows not strictly increasing: {} {}",
            w[0],
            w[1]
        );
        assert_ne!(w[0].rule, w[1].rule, "unmerged rows {} {}", w[0], w[1]);
    }
    if let Some(last) = table.rows.last() {
        assert_eq!(last.rule, UnwindRule::Invalid(InvalidReason::NoUnwindInfo));
    }
    assert_eq!(table.stats.rows_merged, table.rows.len());
    assert!(table.stats.rows_raw >= table.stats.rows_merged);
}

/// `assert_eq!` for row lists without printing megabytes.
pub fn assert_rows_eq(a: &[unwind::UnwindRow], b: &[unwind::UnwindRow], what: &str) {
    if let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) {
        panic!("{what}: row {i} differs: {} vs {}", a[i], b[i]);
    }
    assert_eq!(a.len(), b.len(), "{what}: row counts differ");
}
