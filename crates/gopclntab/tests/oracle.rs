//! The reader against Go's own tools, on the workloads built by Go 1.19,
//! 1.22 and 1.24 in every variant (normal, `-s -w`, `-trimpath`, PIE):
//! function names, files and lines at thousands of addresses equal what
//! `go tool addr2line` (`debug/gosym`) says; the chain's functions are found
//! in stripped binaries; `moduledata.gofunc`, found by scanning, is the
//! linker's `go:func.*` symbol.

use gopclntab::{InlineInfo, Pclntab, Version};
use object::{Object, ObjectSymbol};
use workloads::go::{self, GoBuild, Program, Variant, CHAIN, CHAIN_INLINED};

fn builds() -> Vec<GoBuild> {
    let mut out = Vec::new();
    for tc in go::toolchains().expect("Go 1.19, 1.22 and 1.24 (bash scripts/install-deps)") {
        for program in Program::ALL {
            for variant in Variant::ALL {
                out.push(go::build(&tc, program, variant).unwrap());
            }
        }
    }
    out
}

fn expected_version(b: &GoBuild) -> Version {
    if b.toolchain.minor >= 20 {
        Version::Go120
    } else {
        Version::Go118
    }
}

/// Addresses to ask about: per function its entry and the start of every
/// range of its line table (where file or line changes), so every line the
/// table holds is checked once.
fn probe_addresses(tab: &Pclntab<'_>) -> Vec<u64> {
    let mut out = Vec::new();
    for f in tab.functions() {
        let f = f.unwrap();
        out.push(f.entry);
        for r in tab.pcln(&f) {
            let r = r.unwrap();
            if r.start != f.entry {
                out.push(r.start);
            }
            out.push(r.end - 1);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn text_section(data: &[u8]) -> u64 {
    use object::ObjectSection;
    object::File::parse(data)
        .unwrap()
        .section_by_name(".text")
        .unwrap()
        .address()
}

#[test]
fn names_files_and_lines_equal_go_tool_addr2line() {
    let mut total = 0;
    for b in builds() {
        let data = std::fs::read(&b.exe).unwrap();
        let tab = Pclntab::parse(&data).unwrap_or_else(|e| panic!("{}: {e}", b.label()));
        assert_eq!(tab.version(), expected_version(&b), "{}", b.label());
        assert!(tab.len() > 1000, "{}: {} functions", b.label(), tab.len());
        let addrs = probe_addresses(&tab);
        // Go 1.19's addr2line does not find the table of a PIE (Go 1.22 on
        // do, and read every older layout).
        let newest = go::toolchain(*go::MINORS.last().unwrap()).unwrap();
        let oracle = if b.variant == Variant::Pie {
            &newest
        } else {
            &b.toolchain
        };
        // debug/gosym bases a 1.18+ table's entries at `.text`, which is
        // right unless an external linker put C code first (a cgo binary)
        // and no `runtime.text` symbol says otherwise (stripped): then it
        // sees our address `pc` at `pc - shift`. Asking it there still
        // checks the table's decoding against Go's.
        let shift = if b.variant == Variant::Stripped {
            tab.text_start() - text_section(&data)
        } else {
            0
        };
        let asked: Vec<u64> = addrs.iter().map(|a| a - shift).collect();
        let want = go::addr2line(oracle, &b.exe, &asked).unwrap();
        let mut mismatches = Vec::new();
        for (&pc, w) in addrs.iter().zip(&want) {
            let frames = tab.frames(pc).unwrap();
            let outer = frames.last().expect("a function at a probed address");
            let inner = &frames[0];
            let got = (
                outer.function.to_string(),
                inner.file.as_deref().unwrap_or("?").to_string(),
                inner.line.unwrap_or(0),
            );
            // A function without a line table (Go 1.24's go:textfipsstart
            // marker) has file "" there, "?" elsewhere: both say none.
            let file = if w.file.is_empty() { "?" } else { &w.file };
            if got != (w.function.clone(), file.to_string(), w.line) && mismatches.len() < 10 {
                mismatches.push(format!("{pc:#x}: ours {got:?}, addr2line {w:?}"));
            }
        }
        assert!(
            mismatches.is_empty(),
            "{}: {} addresses, mismatches:\n{}",
            b.label(),
            addrs.len(),
            mismatches.join("\n")
        );
        eprintln!(
            "{}: {} functions, {} addresses equal addr2line",
            b.label(),
            tab.len(),
            addrs.len()
        );
        total += addrs.len();
    }
    assert!(total > 100_000, "{total}");
}

#[test]
fn the_chain_is_found_in_every_variant_with_its_inlined_call() {
    for b in builds().into_iter().filter(|b| b.program == Program::Chain) {
        let data = std::fs::read(&b.exe).unwrap();
        let tab = Pclntab::parse(&data).unwrap();
        let names: Vec<String> = tab
            .functions()
            .map(|f| tab.name(&f.unwrap()).unwrap().into_owned())
            .collect();
        for want in CHAIN {
            assert!(names.iter().any(|n| n == want), "{}: no {want}", b.label());
        }
        // Somewhere in main.c's loop the frames are mix (inlined) then c.
        let c = tab
            .functions()
            .map(Result::unwrap)
            .find(|f| tab.name(f).unwrap() == "main.c")
            .unwrap();
        let inlined = (c.entry..c.end).any(|pc| {
            let fr = tab.frames(pc).unwrap();
            fr.len() == 2
                && fr[0].function == CHAIN_INLINED
                && fr[0].inlined
                && fr[1].function == "main.c"
                && !fr[1].inlined
                && fr[0]
                    .file
                    .as_deref()
                    .is_some_and(|f| f.ends_with("main.go"))
        });
        assert!(
            inlined,
            "{}: no inlined {CHAIN_INLINED} in main.c",
            b.label()
        );
        let file = tab.frames(c.entry).unwrap()[0].file.clone().unwrap();
        if b.variant == Variant::Trimpath {
            assert_eq!(file, "go_chain/main.go", "{}", b.label());
        } else {
            assert_eq!(
                file,
                b.dir.join("main.go").to_str().unwrap(),
                "{}",
                b.label()
            );
        }
    }
}

/// The scan for moduledata finds the address the linker's symbol table
/// names (`go.func.*` up to 1.19, `go:func.*` after), also in PIEs, where
/// the moduledata's words are relocations.
#[test]
fn gofunc_is_the_linkers_symbol() {
    for b in builds() {
        let data = std::fs::read(&b.exe).unwrap();
        let tab = Pclntab::parse(&data).unwrap();
        let InlineInfo::GoFunc(found) = *tab.inline() else {
            panic!("{}: {:?}", b.label(), tab.inline());
        };
        if b.variant == Variant::Stripped {
            continue;
        }
        let obj = object::File::parse(&*data).unwrap();
        let sym = obj
            .symbols()
            .find(|s| matches!(s.name(), Ok("go.func.*" | "go:func.*")))
            .unwrap_or_else(|| panic!("{}: no go:func.* symbol", b.label()));
        assert_eq!(found, sym.address(), "{}", b.label());
    }
}

/// A stripped binary has the same functions as the normal one (the
/// linker's -s -w removes symbols and DWARF, not the table).
#[test]
fn stripping_keeps_every_function() {
    for tc in go::toolchains().unwrap() {
        for program in Program::ALL {
            let names = |v| {
                let b = go::build(&tc, program, v).unwrap();
                let data = std::fs::read(&b.exe).unwrap();
                let tab = Pclntab::parse(&data).unwrap();
                tab.functions()
                    .map(|f| tab.name(&f.unwrap()).unwrap().into_owned())
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                names(Variant::Normal),
                names(Variant::Stripped),
                "{}",
                tc.version
            );
        }
    }
}
