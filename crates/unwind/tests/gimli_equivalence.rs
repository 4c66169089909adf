//! The main correctness requirement: the stack deltas match gimli's
//! own CFI evaluation on every address of libc and of the test binaries.
//!
//! The oracle (`common::check_against_gimli`) parses the file again with
//! object's high-level API and gimli, walks every FDE's rows, evaluates CFA
//! expressions with gimli's DWARF evaluator, and compares the unwinding
//! outcome (caller's rsp, where the return address and rbp are) with what
//! the table's rule gives, at the first and last byte of every row (every
//! byte of expression rows), plus that the table has no boundary that is not
//! a gimli row/FDE boundary. Rules are piecewise constant, so this covers
//! every address.

mod common;

use common::*;
use unwind::{Compression, LocatedVia, SectionKind, UnwindTable};

fn check_file(name: &str, data: &[u8]) -> UnwindTable {
    let table = UnwindTable::from_elf(data).unwrap_or_else(|e| panic!("{name}: {e}"));
    check_invariants(&table);
    let report = check_against_gimli(data, &table);
    let s = &table.stats;
    eprintln!(
        "{name}: {} FDEs, {} gimli rows, {} raw / {} merged rows, {:?} invalid, plt {:?}; \
         oracle: {report:?}",
        s.fdes, s.gimli_rows, s.rows_raw, s.rows_merged, s.invalid_raw, s.plt_raw
    );
    assert!(report.fdes > 0, "{name}: no FDE checked");
    assert_eq!(report.fdes, s.fdes_used, "{name}: FDE count");
    assert_eq!(report.gimli_rows, s.gimli_rows, "{name}: gimli row count");
    assert_eq!(report.fdes_skipped, s.fdes_empty + s.fdes_outside_text);
    assert_eq!(s.fdes_overlapping + s.fdes_shadowed, 0, "{name}");
    table
}

#[test]
fn libc_matches_gimli() {
    let data = read(LIBC);
    let t = check_file("libc", &data);
    // glibc's __restore_rt carries the 'S' augmentation, _start/clone3 have
    // an undefined return address, and its .plt uses the classic PLT form.
    assert!(t.stats.signal_frame_fdes >= 1);
    assert!(t.stats.end_of_stack_raw >= 1);
    assert!(t.stats.plt_raw.contains_key(&11));
    // Without section headers the table is the same.
    let stripped = UnwindTable::from_elf(&strip_section_headers(&data)).unwrap();
    assert_rows_eq(&stripped.rows, &t.rows, "libc without section headers");
    assert_eq!(stripped.stats.sources[0].via, LocatedVia::EhFrameHdr);
}

#[test]
fn c_o2_matches_gimli() {
    let t = check_file("c-O2", &read(&fixture("c-O2").path));
    assert!(t.stats.plt_raw.contains_key(&11), "{:?}", t.stats.plt_raw);
    assert_eq!(t.stats.sources.len(), 1);
}

#[test]
fn c_ibt_plt_matches_gimli() {
    let t = check_file("c-O2-ibt", &read(&fixture("c-O2-ibt").path));
    // binutils 2.40 writes DW_OP_lit9 for the IBT .plt.
    assert!(t.stats.plt_raw.contains_key(&9), "{:?}", t.stats.plt_raw);
}

#[test]
fn c_static_matches_gimli() {
    let t = check_file("c-O2-static", &read(&fixture("c-O2-static").path));
    assert!(t.stats.signal_frame_fdes >= 2); // glibc's __restore_rt + cfi_signal
}

#[test]
fn cpp_o3_matches_gimli() {
    check_file("cpp-O3", &read(&fixture("cpp-O3").path));
}

#[test]
fn rust_o3_matches_gimli() {
    let data = read(&fixture("rust-O3").path);
    let t = check_file("rust-O3", &data);
    assert!(t.stats.fdes > 300, "std should bring hundreds of FDEs");
    // LLD-linked: .eh_frame found through PT_GNU_EH_FRAME, bounded by the
    // .eh_frame_hdr table, gives the same table.
    let stripped = UnwindTable::from_elf(&strip_section_headers(&data)).unwrap();
    assert_rows_eq(&stripped.rows, &t.rows, "rust-O3 without section headers");
}

#[test]
fn debug_frame_fixtures_match_gimli() {
    for (name, compression) in [
        ("c-debug-frame", Compression::None),
        ("c-debug-frame-zlib", Compression::Zlib),
        ("c-debug-frame-zstd", Compression::Zstd),
        ("c-debug-frame-zlib-gnu", Compression::ZlibGnu),
    ] {
        let t = check_file(name, &read(&fixture(name).path));
        let debug = t
            .stats
            .sources
            .iter()
            .find(|s| s.kind == SectionKind::DebugFrame)
            .unwrap_or_else(|| panic!("{name}: no .debug_frame used"));
        assert_eq!(debug.compression, compression, "{name}");
        assert!(debug.fdes > 10, "{name}");
    }
    // All four describe the same code.
    let plain = UnwindTable::from_elf(&read(&fixture("c-debug-frame").path)).unwrap();
    for name in [
        "c-debug-frame-zlib",
        "c-debug-frame-zstd",
        "c-debug-frame-zlib-gnu",
    ] {
        let t = UnwindTable::from_elf(&read(&fixture(name).path)).unwrap();
        assert_rows_eq(&t.rows, &plain.rows, name);
    }
}

#[test]
fn eh_frame_wins_over_debug_frame() {
    let data = read(&fixture("c-both").path);
    let t = check_file("c-both", &data);
    // Every .debug_frame FDE duplicates an .eh_frame one.
    let debug = t
        .stats
        .sources
        .iter()
        .find(|s| s.kind == SectionKind::DebugFrame)
        .expect("debug_frame");
    assert_eq!(t.stats.fdes_superseded_by_eh_frame, debug.fdes);
}

#[test]
fn stripped_fixtures_match_unstripped() {
    for f in fixtures() {
        let data = read(&f.path);
        let full = UnwindTable::from_elf(&data).unwrap();
        let stripped = UnwindTable::from_elf(&strip_section_headers(&data)).unwrap();
        if f.name == "c-O2-static" {
            // gcc links static executables without --eh-frame-hdr: without
            // section headers there is no way to find .eh_frame.
            assert!(stripped.rows.is_empty() && stripped.stats.sources.is_empty());
            continue;
        }
        let has_debug = full
            .stats
            .sources
            .iter()
            .any(|s| s.kind == SectionKind::DebugFrame);
        if has_debug {
            // Only .eh_frame is reachable without section headers.
            assert!(stripped.rows.len() <= full.rows.len(), "{}", f.name);
        } else {
            assert_rows_eq(&stripped.rows, &full.rows, f.name);
        }
        assert_eq!(stripped.stats.sources.len(), 1, "{}", f.name);
        assert_eq!(stripped.stats.sources[0].via, LocatedVia::EhFrameHdr);
    }
}

/// libLLVM is big (~860k rows); checked when present, as extra evidence.
#[test]
fn libllvm_matches_gimli_when_present() {
    let out = std::process::Command::new("ldconfig").arg("-p").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let Some(path) = text
        .lines()
        .filter(|l| l.contains("libLLVM") && l.contains("x86-64"))
        .filter_map(|l| l.split("=> ").nth(1))
        .map(str::trim)
        .min()
    else {
        eprintln!("no libLLVM on this machine: skipped (libc and fixtures are mandatory)");
        return;
    };
    check_file(path, &read(path));
}
