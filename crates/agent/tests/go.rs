//! Go binaries, stripped or not: frames named from `.gopclntab`, and stacks
//! unwound by the real eBPF programs through rows from it.
//!
//! The symbolization tests need no privileges; the recordings load the eBPF
//! programs and need root (CI runs as root) and fail loudly without it.

use agent::loader::LoadOptions;
use agent::record::{self, RecordOptions};
use agent::session::{SessionOptions, Target};
use agent::symbolize::{SymFrame, Symbolizer};
use profile::{Profile, Sample};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::Duration;
use workloads::go::{self, GoBuild, Program, Variant, CHAIN, CHAIN_INLINED};

/// One BPF session at a time (see unwinding.rs).
static BPF: Mutex<()> = Mutex::new(());

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests load eBPF programs and must run as root"
    );
}

fn toolchains() -> Vec<go::Toolchain> {
    go::toolchains().expect("Go 1.19, 1.22 and 1.24 (bash scripts/install-deps)")
}

/// Per function: its entry, and a pc in the middle of its code.
fn sample_addresses(b: &GoBuild) -> Vec<u64> {
    let data = std::fs::read(&b.exe).unwrap();
    let tab = gopclntab::Pclntab::parse(&data).unwrap();
    let mut out = Vec::new();
    for f in tab.functions() {
        let f = f.unwrap();
        let end = tab
            .pcsp(&f)
            .filter_map(Result::ok)
            .last()
            .map_or(f.end, |r| r.end);
        out.push(f.entry);
        if end > f.entry + 1 {
            out.push(f.entry + (end - f.entry) / 2);
        }
    }
    out
}

#[test]
fn symbolizer_names_go_frames_like_go_tool_addr2line() {
    let sym = Symbolizer::new(false);
    let mut checked = 0;
    for tc in toolchains() {
        for variant in [Variant::Normal, Variant::Stripped, Variant::Trimpath] {
            for program in Program::ALL {
                let b = go::build(&tc, program, variant).unwrap();
                let addrs = sample_addresses(&b);
                let ours = sym.native(&b.exe, &addrs, false);
                let text_start = {
                    let data = std::fs::read(&b.exe).unwrap();
                    let tab = gopclntab::Pclntab::parse(&data).unwrap();
                    let text = object::File::parse(&*data)
                        .ok()
                        .and_then(|f| {
                            use object::{Object, ObjectSection};
                            f.section_by_name(".text").map(|s| s.address())
                        })
                        .unwrap();
                    tab.text_start() - text
                };
                // debug/gosym reads a stripped cgo binary's entries from
                // `.text`, not from the table's base (see gopclntab's tests).
                let shift = if variant == Variant::Stripped {
                    text_start
                } else {
                    0
                };
                let asked: Vec<u64> = addrs.iter().map(|a| a - shift).collect();
                let want = go::addr2line(&tc, &b.exe, &asked).unwrap();
                for ((a, frames), w) in addrs.iter().zip(&ours).zip(&want) {
                    let outer = frames
                        .last()
                        .unwrap_or_else(|| panic!("{}: nothing at {a:#x}", b.label()));
                    let inner = &frames[0];
                    assert!(!outer.inlined && frames[..frames.len() - 1].iter().all(|f| f.inlined));
                    let file = if w.file.is_empty() { "?" } else { &w.file };
                    assert_eq!(
                        (
                            outer.function.as_str(),
                            inner.file.as_deref().unwrap_or("?"),
                            inner.line.unwrap_or(0)
                        ),
                        (w.function.as_str(), file, w.line),
                        "{} at {a:#x}",
                        b.label()
                    );
                }
                checked += addrs.len();
            }
        }
    }
    eprintln!("{checked} addresses equal go tool addr2line");
}

/// A frame as (function, file, line).
type Place = (String, Option<String>, Option<u32>);

/// blazesym's frames from the DWARF Go writes (an independent reading of
/// the inlining the compiler did), outermost first.
fn dwarf_frames(path: &std::path::Path, addrs: &[u64]) -> Vec<Vec<Place>> {
    use blazesym::symbolize::source::{Elf, Source};
    use blazesym::symbolize::{CodeInfo, Input, Symbolized, Symbolizer as Blaze};
    let blaze = Blaze::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(false)
        .build();
    let mut elf = Elf::new(path);
    elf.debug_syms = true;
    let syms = blaze
        .symbolize(&Source::Elf(elf), Input::VirtOffset(addrs))
        .unwrap();
    let place = |name: &str, ci: Option<&CodeInfo<'_>>| -> Place {
        let file = ci.map(|c| match &c.dir {
            Some(d) => d.join(&*c.file).to_string_lossy().into_owned(),
            None => c.file.to_string_lossy().into_owned(),
        });
        (name.to_string(), file, ci.and_then(|c| c.line))
    };
    syms.iter()
        .map(|s| match s {
            Symbolized::Sym(sym) => std::iter::once(place(&sym.name, sym.code_info.as_deref()))
                .chain(
                    sym.inlined
                        .iter()
                        .map(|f| place(&f.name, f.code_info.as_ref())),
                )
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// Our frames, outermost first, as the agent orders blazesym's.
fn places_outermost_first(frames: &[SymFrame]) -> Vec<Place> {
    frames
        .iter()
        .rev()
        .map(|f| (f.function.clone(), f.file.clone(), f.line))
        .collect()
}

fn names_outermost_first(frames: &[SymFrame]) -> Vec<String> {
    frames.iter().rev().map(|f| f.function.clone()).collect()
}

#[test]
fn inlined_calls_equal_the_dwarf_ones() {
    let sym = Symbolizer::new(false);
    for tc in toolchains() {
        let b = go::build(&tc, Program::Chain, Variant::Normal).unwrap();
        let stripped = go::build(&tc, Program::Chain, Variant::Stripped).unwrap();
        // Every address of main.c, then a sample of the whole text; the
        // function, file and line of each frame, inlined ones too.
        let data = std::fs::read(&b.exe).unwrap();
        let tab = gopclntab::Pclntab::parse(&data).unwrap();
        let c = tab
            .functions()
            .map(Result::unwrap)
            .find(|f| tab.name(f).unwrap() == "main.c")
            .unwrap();
        let mut addrs: Vec<u64> = (c.entry..c.end).collect();
        addrs.extend(sample_addresses(&b));
        let ours = sym.native(&b.exe, &addrs, false);
        let dwarf = dwarf_frames(&b.exe, &addrs);
        let (mut with_inlined, mut generated, mut mismatched) = (0, 0, Vec::new());
        for ((a, o), d) in addrs.iter().zip(&ours).zip(&dwarf) {
            if d.is_empty() {
                continue; // assembly without DWARF
            }
            // Compiler-generated code (pointer-receiver wrappers, type
            // equality functions) has inline trees but no DWARF inlining,
            // and its table name may elide types (`type..eq.[...]T`).
            if o.last().and_then(|f| f.file.as_deref()) == Some("<autogenerated>") {
                generated += 1;
                continue;
            }
            let o = places_outermost_first(o);
            with_inlined += usize::from(o.len() > 1);
            if &o != d {
                mismatched.push(format!("{a:#x}: ours {o:?}, DWARF {d:?}"));
            }
        }
        assert!(
            mismatched.is_empty(),
            "{}: {} of {} addresses differ:\n{}",
            b.label(),
            mismatched.len(),
            addrs.len(),
            mismatched[..mismatched.len().min(10)].join("\n")
        );
        assert!(with_inlined > 100, "{}: {with_inlined}", b.label());
        // The stripped binary has no DWARF, and the same inlined calls in c.
        let sdata = std::fs::read(&stripped.exe).unwrap();
        let stab = gopclntab::Pclntab::parse(&sdata).unwrap();
        let sc = stab
            .functions()
            .map(Result::unwrap)
            .find(|f| stab.name(f).unwrap() == "main.c")
            .unwrap();
        let s_ours = sym.native(
            &stripped.exe,
            &(sc.entry..sc.end).collect::<Vec<_>>(),
            false,
        );
        let n_ours = &ours[..(c.end - c.entry) as usize];
        let names = |v: &[Vec<SymFrame>]| {
            v.iter()
                .map(|f| names_outermost_first(f))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&s_ours), names(n_ours), "{}", stripped.label());
        assert!(
            s_ours
                .iter()
                .any(|f| f.len() == 2 && f[0].function == CHAIN_INLINED),
            "{}",
            stripped.label()
        );
        eprintln!(
            "{}: {} addresses, {with_inlined} with inlined calls, equal to DWARF \
             ({generated} in compiler-generated code not compared)",
            b.label(),
            addrs.len()
        );
    }
}

fn root_first(p: &Profile, s: &Sample) -> Vec<String> {
    s.frames
        .iter()
        .rev()
        .map(|f| p.frame_name(f).into_owned())
        .collect()
}

/// The chain from the root, nothing but (inlined) frames of `main.c` and
/// kernel frames below it, and no error frame.
fn complete(p: &Profile, s: &Sample) -> bool {
    let names = root_first(p, s);
    names.len() >= CHAIN.len()
        && names[..CHAIN.len()] == CHAIN
        && !s.frames.iter().any(|f| f.frame_type.is_error())
}

#[test]
fn stripped_normal_and_trimpath_go_chains_unwind_completely() {
    require_root();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for tc in toolchains() {
        for variant in [Variant::Stripped, Variant::Normal, Variant::Trimpath] {
            let b = go::build(&tc, Program::Chain, variant).unwrap();
            let _g = BPF.lock().unwrap_or_else(|e| e.into_inner());
            let mut child = go::spawn(&b, None).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            let pid = child.0.id();
            let opts = RecordOptions {
                session: SessionOptions {
                    table_cache: None,
                    target: Target::pids(vec![pid]),
                    frequency: 199,
                    load: LoadOptions::default(),
                },
                duration: Some(Duration::from_secs(3)),
                debug_info: false,
                symbolize: true,
            };
            let rec =
                record::record(&opts, &AtomicBool::new(false), |_| {}).expect("recording works");
            assert!(
                child.0.try_wait().unwrap().is_none(),
                "{} exited",
                b.label()
            );
            drop(child);
            let p = &rec.profile;
            let total: u64 = p.samples.iter().map(|s| s.count).sum();
            let good: u64 = p
                .samples
                .iter()
                .filter(|s| complete(p, s))
                .map(|s| s.count)
                .sum();
            let inlined: u64 = p
                .samples
                .iter()
                .filter(|s| {
                    complete(p, s)
                        && root_first(p, s)
                            .get(CHAIN.len())
                            .is_some_and(|n| n == CHAIN_INLINED)
                })
                .map(|s| s.count)
                .sum();
            let in_handler: u64 = p
                .samples
                .iter()
                .filter(|s| {
                    complete(p, s) && root_first(p, s).iter().any(|n| n == "runtime.sigtramp")
                })
                .map(|s| s.count)
                .sum();
            let errors: u64 = p
                .samples
                .iter()
                .filter(|s| s.frames.iter().any(|f| f.frame_type.is_error()))
                .map(|s| s.count)
                .sum();
            let line = format!(
                "{}: complete chain in {good} of {total} samples ({:.2} %; {inlined} in the inlined \
                 {CHAIN_INLINED}, {in_handler} through a signal handler); {errors} with an error frame",
                b.label(),
                100.0 * good as f64 / total.max(1) as f64
            );
            let mut misses: Vec<(u64, String)> = p
                .samples
                .iter()
                .filter(|s| !complete(p, s))
                .map(|s| (s.count, root_first(p, s).join(";")))
                .collect();
            misses.sort_by_key(|m| std::cmp::Reverse(m.0));
            let misses = misses
                .iter()
                .take(8)
                .map(|(n, s)| format!("  x{n} {s}"))
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!("{line}\n{misses}");
            report.push(line.clone());
            if total < 300 || (good as f64) < 0.99 * total as f64 {
                failures.push(format!("{line} ({})\n{misses}", rec.summary.line()));
            }
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// With Go's own CPU profiler on, a SIGPROF handler interrupts the chain
/// 1000 times a second. Samples taken in the handler unwind through Go's
/// signal restorer into the goroutine it interrupted, so they show the
/// chain too.
#[test]
fn samples_in_the_signal_handler_show_the_interrupted_goroutine() {
    require_root();
    let mut sums = (0, 0);
    for tc in toolchains() {
        let b = go::build(&tc, Program::Chain, Variant::Stripped).unwrap();
        let _g = BPF.lock().unwrap_or_else(|e| e.into_inner());
        let child = go::spawn_with(&b, None, &["signals"]).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let opts = RecordOptions {
            session: SessionOptions {
                table_cache: None,
                target: Target::pids(vec![child.0.id()]),
                frequency: 997,
                load: LoadOptions::default(),
            },
            duration: Some(Duration::from_secs(3)),
            debug_info: false,
            symbolize: true,
        };
        let rec = record::record(&opts, &AtomicBool::new(false), |_| {}).expect("recording works");
        drop(child);
        let p = &rec.profile;
        let in_handler = |s: &Sample| root_first(p, s).iter().any(|n| n == "runtime.sigtramp");
        let handler: Vec<&Sample> = p.samples.iter().filter(|s| in_handler(s)).collect();
        let total: u64 = handler.iter().map(|s| s.count).sum();
        let through: u64 = handler
            .iter()
            .filter(|s| complete(p, s))
            .map(|s| s.count)
            .sum();
        let errors: u64 = handler
            .iter()
            .filter(|s| s.frames.iter().any(|f| f.frame_type.is_error()))
            .map(|s| s.count)
            .sum();
        let all: u64 = p.samples.iter().map(|s| s.count).sum();
        let shown: Vec<String> = handler
            .iter()
            .take(5)
            .map(|s| format!("  x{} {}", s.count, root_first(p, s).join(";")))
            .collect();
        let line = format!(
            "{}: {total} of {all} samples in the signal handler, {through} of them with the \
             complete chain below it, {errors} with an error frame\n{}",
            b.label(),
            shown.join("\n")
        );
        eprintln!("{line}");
        // About 0.3 % of the CPU time is in the handler: a few samples a
        // recording.
        assert!(total >= 1 && errors == 0, "{line}");
        sums.0 += total;
        sums.1 += through;
    }
    // The signal can arrive outside the chain (main.main between calls, the
    // clock read), rarely.
    let (total, through) = sums;
    assert!(
        total >= 10 && through * 10 >= total * 9,
        "{through} of {total} samples in the signal handler show the chain"
    );
}

/// Go → C → Go: a sample in the callback unwinds the goroutine's logical
/// stack the way Go's own traceback shows it: from the callback through
/// `runtime.cgocallback` (whose frame on the goroutine stack returns into
/// `runtime.cgocall`) to the Go code that called C, and on to
/// `runtime.goexit`. The C frames between them run on the thread's own
/// stack and are not part of that chain.
#[test]
fn cgo_callbacks_unwind_to_the_go_code_that_called_c() {
    require_root();
    for tc in toolchains() {
        let b = go::build(&tc, Program::Cgo, Variant::Stripped).unwrap();
        let _g = BPF.lock().unwrap_or_else(|e| e.into_inner());
        let child = go::spawn(&b, None).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let opts = RecordOptions {
            session: SessionOptions {
                table_cache: None,
                target: Target::pids(vec![child.0.id()]),
                frequency: 199,
                load: LoadOptions::default(),
            },
            duration: Some(Duration::from_secs(3)),
            debug_info: false,
            symbolize: true,
        };
        let rec = record::record(&opts, &AtomicBool::new(false), |_| {}).expect("recording works");
        drop(child);
        let p = &rec.profile;
        let ok = |s: &Sample| {
            let n = root_first(p, s);
            let pos = |name: &str| n.iter().position(|x| x == name);
            n.len() > 4
                && n[..4] == ["runtime.goexit", "runtime.main", "main.main", "main.callC"]
                && matches!(
                    (pos("runtime.cgocallback"), pos("main.goCallback"), pos("main.spin")),
                    (Some(c), Some(g), Some(s)) if c < g && g < s
                )
                && !s.frames.iter().any(|f| f.frame_type.is_error())
        };
        let total: u64 = p.samples.iter().map(|s| s.count).sum();
        let good: u64 = p.samples.iter().filter(|s| ok(s)).map(|s| s.count).sum();
        let example = p
            .samples
            .iter()
            .max_by_key(|s| s.count)
            .map(|s| root_first(p, s).join(";"))
            .unwrap_or_default();
        eprintln!(
            "{}: Go → C → Go chain in {good} of {total} samples ({:.2} %); most common: {example}",
            b.label(),
            100.0 * good as f64 / total.max(1) as f64
        );
        let mut misses: Vec<(u64, String)> = p
            .samples
            .iter()
            .filter(|s| !ok(s))
            .map(|s| (s.count, root_first(p, s).join(";")))
            .collect();
        misses.sort_by_key(|m| std::cmp::Reverse(m.0));
        // Outside the chain are complete stacks of other code: the
        // goroutine on its way into C (main.callC → _Cfunc_c_middle), the
        // runtime's sysmon and scheduler (rooted at runtime.mstart or
        // runtime.mcall: a locked M hands its P over). A few per 600.
        let clean: u64 = p
            .samples
            .iter()
            .filter(|s| !s.frames.iter().any(|f| f.frame_type.is_error()))
            .map(|s| s.count)
            .sum();
        assert!(
            total >= 300
                && clean as f64 >= 0.99 * total as f64
                && good as f64 >= 0.97 * total as f64,
            "{}: {clean} of {total} without an error frame, {good} with the chain; misses:\n{}",
            b.label(),
            misses
                .iter()
                .take(8)
                .map(|(n, s)| format!("  x{n} {s}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
