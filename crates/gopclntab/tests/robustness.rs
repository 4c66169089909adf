//! Hostile input: wrong kinds of file are clear errors; a real table
//! truncated and bit-flipped thousands of times never panics and never
//! hangs, whatever is asked of it afterwards.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use gopclntab::{Error, Pclntab};
use workloads::go::{self, Program, Variant};

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

fn chain(variant: Variant, minor: u32) -> Vec<u8> {
    let tc = go::toolchain(minor).unwrap();
    std::fs::read(go::build(&tc, Program::Chain, variant).unwrap().exe).unwrap()
}

/// File offset and size of `.gopclntab` (section headers read with object).
fn pclntab_range(data: &[u8]) -> (usize, usize) {
    use object::{Object, ObjectSection};
    let f = object::File::parse(data).unwrap();
    let s = f.section_by_name(".gopclntab").unwrap();
    let (o, n) = s.file_range().unwrap();
    (o as usize, n as usize)
}

/// Everything the crate offers, on whatever parses. Returns how many calls
/// returned an error.
fn exercise(data: &[u8], rng: &mut Rng) -> usize {
    let tab = match Pclntab::parse(data) {
        Ok(t) => t,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return 1;
        }
    };
    let mut errors = 0;
    let n = tab.len();
    // Every function's tables would take long on thousands of mutants: a
    // sample of functions, and frames at addresses in and around the text.
    for _ in 0..64.min(n) {
        let Ok(f) = tab.function(rng.below(n)) else {
            errors += 1;
            continue;
        };
        errors += tab.name(&f).is_err() as usize;
        for t in [tab.pcsp(&f), tab.pcfile(&f), tab.pcln(&f)] {
            errors += t.filter(Result::is_err).count();
        }
        let pc = f.entry + (f.end - f.entry) / 2;
        errors += tab.frames(pc).is_err() as usize;
        errors += tab.frames(f.entry).is_err() as usize;
    }
    errors += tab.frames(rng.next()).is_err() as usize;
    errors
}

fn no_panic(data: &[u8], rng: &mut Rng, what: &dyn Fn() -> String) -> usize {
    let t0 = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(|| exercise(data, rng)))
        .unwrap_or_else(|_| panic!("panicked on {}", what()));
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?} on {}",
        t0.elapsed(),
        what()
    );
    r
}

#[test]
fn wrong_kinds_of_file_are_clear_errors() {
    assert_eq!(Pclntab::parse(b"").err(), Some(Error::NotElf));
    assert_eq!(Pclntab::parse(b"#!/bin/sh\n").err(), Some(Error::NotElf));
    let libc = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
    assert_eq!(Pclntab::parse(&libc).err(), Some(Error::NoPclntab));

    let mut data = chain(Variant::Stripped, 19);
    // Section headers gone, as `sstrip` leaves a file.
    let mut no_shdr = data.clone();
    no_shdr[0x28..0x30].fill(0);
    no_shdr[0x3c..0x40].fill(0);
    let e = Pclntab::parse(&no_shdr).err().unwrap();
    assert_eq!(e, Error::NoSectionHeaders);
    assert!(e.to_string().contains("section headers"), "{e}");

    let (off, _) = pclntab_range(&data);
    // Go 1.15's magic.
    data[off..off + 4].copy_from_slice(&0xffff_fffbu32.to_le_bytes());
    let e = Pclntab::parse(&data).err().unwrap();
    assert_eq!(e, Error::UnsupportedVersion { magic: 0xffff_fffb });
    assert!(e.to_string().contains("0xfffffffb"), "{e}");

    let mut x = chain(Variant::Stripped, 24);
    x[0x12] = 183; // EM_AARCH64
    assert!(matches!(Pclntab::parse(&x), Err(Error::UnsupportedElf(_))));
    let mut x = chain(Variant::Stripped, 24);
    x[4] = 1; // ELFCLASS32
    assert!(matches!(Pclntab::parse(&x), Err(Error::UnsupportedElf(_))));
}

#[test]
fn truncated_tables_never_panic() {
    for minor in [19, 24] {
        let data = chain(Variant::Stripped, minor);
        let (off, len) = pclntab_range(&data);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(minor));
        let mut errors = 0;
        // The section's size shrinks (its header says less), at every size
        // near the start and at random sizes after.
        let shdr = section_header_of(&data, ".gopclntab");
        let mut cuts: Vec<usize> = (0..256).collect();
        cuts.extend((0..1500).map(|_| rng.below(len)));
        for cut in cuts {
            let mut d = data.clone();
            d[shdr + 0x20..shdr + 0x28].copy_from_slice(&(cut as u64).to_le_bytes());
            errors += no_panic(&d, &mut rng, &|| {
                format!("Go 1.{minor}, table cut to {cut}")
            });
        }
        // The file itself cut (the section runs past its end).
        for _ in 0..300 {
            let cut = off + rng.below(len);
            errors += no_panic(&data[..cut], &mut rng, &|| {
                format!("Go 1.{minor}, file cut at {cut}")
            });
        }
        assert!(
            errors > 1000,
            "Go 1.{minor}: only {errors} errors: truncation is not noticed"
        );
    }
}

#[test]
fn bit_flips_never_panic() {
    for minor in [19, 22, 24] {
        let data = chain(Variant::Stripped, minor);
        let (off, len) = pclntab_range(&data);
        let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ u64::from(minor));
        let mut errors = 0;
        for round in 0..3000 {
            let mut d = data.clone();
            // Mostly the table (the header and function table most often),
            // sometimes the data sections holding the moduledata.
            let flips = 1 + rng.below(8);
            for _ in 0..flips {
                let at = match rng.below(4) {
                    0 => off + rng.below(256.min(len)),
                    1 => off + rng.below(len / 8),
                    2 => off + rng.below(len),
                    _ => rng.below(d.len()),
                };
                d[at] ^= 1 << rng.below(8);
            }
            errors += no_panic(&d, &mut rng, &|| format!("Go 1.{minor}, round {round}"));
        }
        assert!(errors > 100, "Go 1.{minor}: only {errors} errors");
    }
}

/// File offset of the section header named `name`.
fn section_header_of(data: &[u8], name: &str) -> usize {
    let shoff = u64::from_le_bytes(data[0x28..0x30].try_into().unwrap()) as usize;
    let shnum = u16::from_le_bytes(data[0x3c..0x3e].try_into().unwrap()) as usize;
    let shstrndx = u16::from_le_bytes(data[0x3e..0x40].try_into().unwrap()) as usize;
    let sh = |i: usize| shoff + i * 64;
    let strtab = u64::from_le_bytes(
        data[sh(shstrndx) + 0x18..sh(shstrndx) + 0x20]
            .try_into()
            .unwrap(),
    ) as usize;
    (0..shnum)
        .map(sh)
        .find(|&h| {
            let n = u32::from_le_bytes(data[h..h + 4].try_into().unwrap()) as usize;
            data[strtab + n..].starts_with(name.as_bytes()) && data[strtab + n + name.len()] == 0
        })
        .unwrap()
}

/// Extreme values where addresses and offsets are read: the table's
/// section address, every header word, the function table's first entries.
#[test]
fn extreme_addresses_and_offsets_never_panic() {
    const VALUES: [u64; 8] = [
        0,
        1,
        7,
        0x7fff_ffff,
        0xffff_ffff,
        1 << 63,
        u64::MAX - 7,
        u64::MAX,
    ];
    let mut rng = Rng(0x5eed);
    for minor in [19, 24] {
        let data = chain(Variant::Stripped, minor);
        let shdr = section_header_of(&data, ".gopclntab");
        let (off, _) = pclntab_range(&data);
        let pcln = off + u64::from_le_bytes(data[off + 64..off + 72].try_into().unwrap()) as usize;
        let mut places: Vec<(usize, usize)> = vec![(shdr + 0x10, 8)]; // sh_addr
        places.extend((1..9).map(|i| (off + 8 * i, 8))); // header words
        places.extend((0..6).map(|i| (pcln + 4 * i, 4))); // functab
        for (at, width) in places {
            for v in VALUES {
                let mut d = data.clone();
                d[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
                no_panic(&d, &mut rng, &|| format!("Go 1.{minor}: {v:#x} at {at:#x}"));
            }
        }
    }
}
