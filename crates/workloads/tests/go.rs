//! The Go workloads build with every toolchain in every variant, run and
//! exit, keep their chain as real calls, and the variants differ the way
//! they should (stripped: no symbols and no DWARF; trimpath: no build
//! directory in file names).

use std::time::{Duration, Instant};

use workloads::go::{self, GoBuild, Program, Variant, CHAIN};

fn all_builds() -> Vec<GoBuild> {
    let mut out = Vec::new();
    for tc in go::toolchains().expect("Go 1.19, 1.22 and 1.24 (bash scripts/install-deps)") {
        for program in Program::ALL {
            for variant in Variant::ALL {
                out.push(
                    go::build(&tc, program, variant)
                        .unwrap_or_else(|e| panic!("{} {program:?} {variant}: {e}", tc.version)),
                );
            }
        }
    }
    out
}

fn section_names(exe: &std::path::Path) -> Vec<String> {
    let out = std::process::Command::new("readelf")
        .args(["-SW"])
        .arg(exe)
        .output()
        .expect("readelf (binutils) is required");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            l.starts_with('[')
                .then(|| {
                    l.split(']')
                        .nth(1)?
                        .split_whitespace()
                        .next()
                        .map(String::from)
                })
                .flatten()
        })
        .collect()
}

#[test]
fn every_build_runs_and_exits() {
    for b in all_builds() {
        let start = Instant::now();
        let mut child = go::spawn(&b, Some(Duration::from_millis(300))).unwrap();
        let status = loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{} did not exit",
                b.label()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "{}: {status}", b.label());
        assert!(
            start.elapsed() >= Duration::from_millis(290),
            "{}",
            b.label()
        );
    }
}

#[test]
fn variants_differ_as_intended() {
    for b in all_builds() {
        let names = section_names(&b.exe);
        let has = |n: &str| names.iter().any(|s| s == n);
        let bytes = std::fs::read(&b.exe).unwrap();
        let et_dyn = u16::from_le_bytes([bytes[16], bytes[17]]) == 3;
        assert_eq!(et_dyn, b.variant == Variant::Pie, "{}", b.label());
        // A PIE the Go linker links keeps the table in a relro section; an
        // external linker (cgo) merges that into .data.rel.ro.
        let table = match (b.variant, b.program) {
            (Variant::Pie, Program::Chain) => has(".data.rel.ro.gopclntab"),
            (Variant::Pie, Program::Cgo) => !has(".gopclntab") && has(".data.rel.ro"),
            _ => has(".gopclntab"),
        };
        assert!(table, "{}: {names:?}", b.label());
        assert!(
            !has(".eh_frame") || b.program == Program::Cgo,
            "{}",
            b.label()
        );
        match b.variant {
            Variant::Stripped => {
                assert!(
                    !has(".symtab") && !has(".debug_frame"),
                    "{}: {names:?}",
                    b.label()
                );
            }
            Variant::Normal | Variant::Trimpath | Variant::Pie => {
                assert!(
                    has(".symtab") && has(".debug_frame"),
                    "{}: {names:?}",
                    b.label()
                );
            }
        }
        let dir = b.dir.to_string_lossy().into_owned();
        let mentions_dir = bytes.windows(dir.len()).any(|w| w == dir.as_bytes());
        assert_eq!(
            mentions_dir,
            b.variant != Variant::Trimpath,
            "{}: build directory in file names",
            b.label()
        );
    }
}

/// Every edge of the chain is a `CALL` in the caller (Go never makes tail
/// calls, and noinline keeps the callee a function of its own).
#[test]
fn the_chain_is_real_calls() {
    for tc in go::toolchains().unwrap() {
        let b = go::build(&tc, Program::Chain, Variant::Normal).unwrap();
        let insns = go::objdump(&tc, &b.exe).unwrap();
        for w in CHAIN[1..].windows(2) {
            let (caller, callee) = (w[0], w[1]);
            let call = format!("CALL {callee}(SB)");
            let n = insns
                .iter()
                .filter(|i| i.function == caller && i.text == call)
                .count();
            // runtime.main calls main.main through a function value.
            let indirect = caller == "runtime.main"
                && insns.iter().any(|i| {
                    i.function == caller && i.text.starts_with("CALL") && !i.text.contains("(SB)")
                });
            assert!(
                n > 0 || indirect,
                "{}: {caller} does not call {callee}",
                tc.version
            );
        }
        assert!(
            !insns.iter().any(|i| i.function == go::CHAIN_INLINED),
            "{}: {} was not inlined",
            tc.version,
            go::CHAIN_INLINED
        );
    }
}

/// The oracle works on every variant, stripped too (it reads
/// `.gopclntab`; for a PIE, from Go 1.22): the ELF entry point of an internally linked program is
/// the runtime's `_rt0_amd64_linux`.
#[test]
fn addr2line_answers_for_every_variant() {
    for tc in go::toolchains().unwrap() {
        for variant in Variant::ALL {
            let b = go::build(&tc, Program::Chain, variant).unwrap();
            let bytes = std::fs::read(&b.exe).unwrap();
            let entry = u64::from_le_bytes(bytes[24..32].try_into().unwrap());
            // Go 1.19's addr2line does not find a PIE's table; 1.24's does.
            let newest = go::toolchain(24).unwrap();
            let oracle = if variant == Variant::Pie {
                &newest
            } else {
                &tc
            };
            let got = go::addr2line(oracle, &b.exe, &[entry, 1]).unwrap();
            assert_eq!(got[0].function, "_rt0_amd64_linux", "{}", b.label());
            assert!(
                got[0].file.ends_with("rt0_linux_amd64.s") && got[0].line > 0,
                "{got:?}"
            );
            assert_eq!(got[1].function, "?");
        }
    }
}
