//! Hostile input: wrong file kinds give a clear `Error`; truncated and
//! corrupted real files never panic and never hang (deterministic
//! fuzz-style loops over many offsets and seeds).

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use common::*;
use object::{Object, ObjectSection};
use unwind::{Error, UnwindTable};

/// Builds a table from `data`; panics with `what` if the crate panics or
/// takes suspiciously long. Successful tables must keep their invariants.
fn no_panic(data: &[u8], what: &dyn Fn() -> String) -> Result<UnwindTable, Error> {
    let t0 = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(|| UnwindTable::from_elf(data)))
        .unwrap_or_else(|_| panic!("from_elf panicked on {}", what()));
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "from_elf took {:?} on {}",
        t0.elapsed(),
        what()
    );
    match &r {
        Ok(t) => check_invariants(t),
        // Errors must render.
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    r
}

/// Deterministic xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// File range of a section.
fn section_range(data: &[u8], name: &str) -> (usize, usize) {
    let f = object::File::parse(data).unwrap();
    let s = f
        .section_by_name(name)
        .unwrap_or_else(|| panic!("no {name}"));
    let (o, n) = s.file_range().unwrap();
    (o as usize, n as usize)
}

#[test]
fn wrong_kinds_of_file() {
    assert!(matches!(UnwindTable::from_elf(b""), Err(Error::NotElf)));
    assert!(matches!(
        UnwindTable::from_elf(b"#!/bin/sh\necho hi\n"),
        Err(Error::NotElf)
    ));
    assert!(matches!(
        UnwindTable::from_elf(b"\x7fELF"),
        Err(Error::NotElf)
    ));
    let elf = read(&fixture("c-O2").path);

    let mut x = elf.clone();
    x[4] = 1; // ELFCLASS32
    assert!(matches!(
        UnwindTable::from_elf(&x),
        Err(Error::UnsupportedClass)
    ));
    let mut x = elf.clone();
    x[5] = 2; // big endian
    assert!(matches!(UnwindTable::from_elf(&x), Err(Error::BigEndian)));
    let mut x = elf.clone();
    x[4] = 7;
    assert!(matches!(
        UnwindTable::from_elf(&x),
        Err(Error::MalformedElf { .. })
    ));
    let mut x = elf.clone();
    x[0x12..0x14].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    let e = UnwindTable::from_elf(&x).unwrap_err();
    assert!(matches!(e, Error::UnsupportedMachine(183)), "{e}");
    assert!(e.to_string().contains("x86-64"), "{e}");
    let mut x = elf.clone();
    x[0x10..0x12].copy_from_slice(&4u16.to_le_bytes()); // ET_CORE
    assert!(matches!(
        UnwindTable::from_elf(&x),
        Err(Error::UnsupportedType(4))
    ));

    // A relocatable object straight from the compiler.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let obj = dir.join("unwind-robustness-prog.o");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/prog.c");
    let out = std::process::Command::new("gcc")
        .args(["-O2", "-c", src, "-o"])
        .arg(&obj)
        .output()
        .expect("gcc is required");
    assert!(out.status.success());
    assert!(matches!(
        UnwindTable::from_elf(&read(&obj)),
        Err(Error::UnsupportedType(1))
    ));

    // A missing file is an I/O error.
    assert!(matches!(
        UnwindTable::from_path("/nonexistent/unwind-test"),
        Err(Error::Io(_))
    ));
}

#[test]
fn truncated_files_never_panic() {
    for name in ["c-O2", "c-debug-frame-zlib", "cpp-O3"] {
        let data = read(&fixture(name).path);
        let stripped = strip_section_headers(&data);
        for (variant, d) in [("full", &data), ("no-section-headers", &stripped)] {
            let (eh, eh_len) = section_range(&data, ".eh_frame");
            let mut ok = 0;
            // Every byte around .eh_frame, every 13th elsewhere.
            for len in (0..d.len()).filter(|&l| l % 13 == 0 || (l >= eh && l <= eh + eh_len)) {
                let r = no_panic(&d[..len], &|| format!("{name} ({variant}) cut at {len}"));
                ok += r.is_ok() as usize;
            }
            eprintln!("{name} ({variant}): {ok} truncations still parsed");
        }
    }
    // libc: a couple of hundred cuts, spread and around .eh_frame's end.
    let libc = read(LIBC);
    let stripped = strip_section_headers(&libc);
    let (eh, eh_len) = section_range(&libc, ".eh_frame");
    let mut rng = Rng(0x05ee_d1bc);
    for i in 0..150 {
        let len = if i % 2 == 0 {
            rng.below(libc.len())
        } else {
            eh + eh_len - rng.below(4096)
        };
        let _ = no_panic(&libc[..len], &|| format!("libc cut at {len}"));
        let _ = no_panic(&stripped[..len], &|| {
            format!("libc (no section headers) cut at {len}")
        });
    }
}

/// Shrinks `.eh_frame`'s `sh_size` so gimli sees a truncated section while
/// the rest of the file is intact.
#[test]
fn truncated_eh_frame_section_never_panics() {
    let data = read(&fixture("c-O2").path);
    let f = object::read::elf::ElfFile64::<object::LittleEndian>::parse(&*data).unwrap();
    let idx = f.section_by_name(".eh_frame").unwrap().index().0;
    let shoff = u64::from_le_bytes(data[0x28..0x30].try_into().unwrap()) as usize;
    let size_field = shoff + idx * 64 + 0x20;
    let size = u64::from_le_bytes(data[size_field..size_field + 8].try_into().unwrap());
    let (mut ok, mut err) = (0, 0);
    for s in 0..size {
        let mut x = data.clone();
        x[size_field..size_field + 8].copy_from_slice(&s.to_le_bytes());
        match no_panic(&x, &|| format!(".eh_frame sh_size {s}")) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(matches!(e, Error::Cfi { .. }), "size {s}: {e}");
                err += 1
            }
        }
    }
    eprintln!(
        ".eh_frame cut at {size} sizes: {ok} parsed (cut at an entry boundary), {err} errors"
    );
    assert!(
        err > ok,
        "most cuts land inside an entry and must be reported"
    );
}

fn flip_bytes(data: &[u8], region: (usize, usize), seed: u64, iterations: usize, what: &str) {
    let mut rng = Rng(seed);
    let (start, len) = region;
    let (mut ok, mut err) = (0, 0);
    for i in 0..iterations {
        let mut x = data.to_vec();
        let flips = 1 + rng.below(4);
        let mut at = Vec::new();
        for _ in 0..flips {
            let p = start + rng.below(len);
            let v = match rng.below(4) {
                0 => 0,
                1 => 0xff,
                2 => x[p] ^ (1 << rng.below(8)),
                _ => rng.next() as u8,
            };
            x[p] = v;
            at.push((p, v));
        }
        match no_panic(&x, &|| format!("{what} iteration {i}: bytes {at:x?}")) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    eprintln!("{what}: {iterations} corruptions, {ok} parsed, {err} errors");
}

#[test]
fn corrupted_cfi_never_panics() {
    let c = read(&fixture("c-O2").path);
    flip_bytes(
        &c,
        section_range(&c, ".eh_frame"),
        1,
        3000,
        "c-O2 .eh_frame",
    );
    let c_stripped = strip_section_headers(&c);
    flip_bytes(
        &c_stripped,
        section_range(&c, ".eh_frame_hdr"),
        2,
        1500,
        "c-O2 .eh_frame_hdr (no section headers)",
    );
    flip_bytes(
        &c_stripped,
        section_range(&c, ".eh_frame"),
        3,
        1500,
        "c-O2 .eh_frame (no section headers)",
    );
    flip_bytes(
        &c,
        (0, 64 + 13 * 56),
        4,
        1500,
        "c-O2 ELF and program headers",
    );
    let cpp = read(&fixture("cpp-O3").path);
    flip_bytes(
        &cpp,
        section_range(&cpp, ".eh_frame"),
        5,
        1500,
        "cpp-O3 .eh_frame",
    );
    for (seed, name) in [
        (6, "c-debug-frame"),
        (7, "c-debug-frame-zlib"),
        (8, "c-debug-frame-zstd"),
    ] {
        let d = read(&fixture(name).path);
        flip_bytes(&d, section_range(&d, ".debug_frame"), seed, 1500, name);
    }
    let gnu = read(&fixture("c-debug-frame-zlib-gnu").path);
    flip_bytes(
        &gnu,
        section_range(&gnu, ".zdebug_frame"),
        9,
        1000,
        "c-debug-frame-zlib-gnu",
    );
    let libc = read(LIBC);
    flip_bytes(
        &libc,
        section_range(&libc, ".eh_frame"),
        10,
        40,
        "libc .eh_frame",
    );
}

/// Section and program headers pointing anywhere: bogus offsets and sizes
/// must be reported, not followed.
#[test]
fn bogus_header_fields_never_panic() {
    let c = read(&fixture("c-O2").path);
    let mut rng = Rng(11);
    let f = object::read::elf::ElfFile64::<object::LittleEndian>::parse(&*c).unwrap();
    let shoff = u64::from_le_bytes(c[0x28..0x30].try_into().unwrap()) as usize;
    let eh = f.section_by_name(".eh_frame").unwrap().index().0;
    let hdr = f.section_by_name(".eh_frame_hdr").unwrap().index().0;
    let phoff = u64::from_le_bytes(c[0x20..0x28].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(c[0x38..0x3a].try_into().unwrap()) as usize;
    let interesting = [
        u64::MAX,
        u64::MAX - 7,
        1 << 63,
        u32::MAX as u64,
        c.len() as u64,
        c.len() as u64 + 1,
        0,
        1,
    ];
    for i in 0..3000 {
        let mut x = c.clone();
        // a u64 field of .eh_frame's / .eh_frame_hdr's section header, or of
        // a program header (offset, vaddr, paddr, filesz, memsz)
        let field = match rng.below(3) {
            0 => shoff + eh * 64 + [0x10, 0x18, 0x20][rng.below(3)],
            1 => shoff + hdr * 64 + [0x10, 0x18, 0x20][rng.below(3)],
            _ => phoff + rng.below(phnum) * 56 + 8 + 8 * rng.below(5),
        };
        let v = if rng.below(2) == 0 {
            interesting[rng.below(interesting.len())]
        } else {
            rng.next() >> rng.below(64)
        };
        x[field..field + 8].copy_from_slice(&v.to_le_bytes());
        let _ = no_panic(&x, &|| format!("iteration {i}: field {field:#x} = {v:#x}"));
        let s = strip_section_headers(&x);
        let _ = no_panic(&s, &|| {
            format!("iteration {i} (no section headers): field {field:#x} = {v:#x}")
        });
    }
}

/// A stripped Go binary's `.gopclntab` (header and function table most
/// often, anywhere sometimes) and the cgo one's, corrupted: rows from it
/// never panic, and a table that still builds keeps its invariants.
#[test]
fn corrupted_gopclntab_never_panics() {
    use workloads::go::{self, Program, Variant};
    for (minor, program, seed) in [(19, Program::Chain, 11), (24, Program::Cgo, 12)] {
        let tc = go::toolchain(minor).unwrap();
        let b = go::build(&tc, program, Variant::Stripped).unwrap();
        let data = read(&b.exe);
        let (start, len) = section_range(&data, ".gopclntab");
        let what = b.label();
        flip_bytes(
            &data,
            (start, 4096.min(len)),
            seed,
            800,
            &format!("{what} .gopclntab head"),
        );
        flip_bytes(
            &data,
            (start, len),
            seed + 100,
            800,
            &format!("{what} .gopclntab"),
        );
    }
}

/// The section address of `.gopclntab` and its header words at extreme
/// values.
#[test]
fn extreme_gopclntab_values_never_panic() {
    use workloads::go::{self, Program, Variant};
    let tc = go::toolchain(24).unwrap();
    let data = read(
        go::build(&tc, Program::Chain, Variant::Stripped)
            .unwrap()
            .exe,
    );
    let (off, _) = section_range(&data, ".gopclntab");
    let f = object::read::elf::ElfFile64::<object::LittleEndian>::parse(&*data).unwrap();
    let idx = f.section_by_name(".gopclntab").unwrap().index().0;
    let shoff = u64::from_le_bytes(data[0x28..0x30].try_into().unwrap()) as usize;
    let mut places = vec![shoff + idx * 64 + 0x10];
    places.extend((1..9).map(|i| off + 8 * i));
    for at in places {
        for v in [0, 1, 0xffff_ffff, 1 << 63, u64::MAX - 7, u64::MAX] {
            let mut x = data.clone();
            x[at..at + 8].copy_from_slice(&v.to_le_bytes());
            let _ = no_panic(&x, &|| format!("{v:#x} at {at:#x}"));
        }
    }
}
