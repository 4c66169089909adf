//! The Go 1.16–1.17 layout (magic `0xfffffffa`). No Go that old is
//! packaged for this machine's Debian, so its table is made here: a Go 1.19
//! binary's table is re-encoded in the older layout, the way
//! `cmd/link/internal/ld/pcln.go` of Go 1.16/1.17 lays it out (no
//! `textStart`; function table entries and `_func.entry` are pointers;
//! funcdata are pointers, 8-byte aligned after the pcdata offsets), and put
//! in place of the original. The test reads the Go 1.19 table with its own
//! code, not the crate's, and checks that the crate reads the same
//! functions, tables and frames from both layouts.

use gopclntab::{Pclntab, Version};
use object::{Object, ObjectSection, ObjectSymbol};
use workloads::go::{self, Program, Variant};

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Re-encodes a Go 1.18 layout table (at virtual address `new_addr`).
fn to_go116(tab: &[u8], gofunc: u64, new_addr: u64) -> Vec<u8> {
    assert_eq!(u32_at(tab, 0), 0xffff_fff0);
    let nfunc = u64_at(tab, 8) as usize;
    let nfiles = u64_at(tab, 16);
    let text = u64_at(tab, 24);
    let offs: Vec<usize> = (0..5).map(|i| u64_at(tab, 32 + 8 * i) as usize).collect();
    // funcnametab, cutab, filetab, pctab lie one after the other, then the
    // function table: they are copied as they are, 8 bytes earlier.
    let (names, pcln) = (offs[0], offs[4]);
    let mut out = Vec::new();
    out.extend_from_slice(&0xffff_fffau32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 1, 8]);
    out.extend_from_slice(&(nfunc as u64).to_le_bytes());
    out.extend_from_slice(&nfiles.to_le_bytes());
    let shift = names - 64;
    for o in &offs[..4] {
        out.extend_from_slice(&((o - shift) as u64).to_le_bytes());
    }
    let new_pcln_at = out.len() + 8 + (pcln - names);
    let new_pcln = new_pcln_at.next_multiple_of(8);
    out.extend_from_slice(&(new_pcln as u64).to_le_bytes());
    assert_eq!(out.len(), 64);
    out.extend_from_slice(&tab[names..pcln]);
    out.resize(new_pcln, 0);

    let ftab = &tab[pcln..];
    let field = |i: usize| u32_at(ftab, 4 * i) as u64;
    // Records after the function table (2n+1 pointers).
    let mut records: Vec<u8> = Vec::new();
    let mut funcoffs = Vec::new();
    let records_base = (2 * nfunc + 1) * 8;
    for i in 0..nfunc {
        let r = &ftab[field(2 * i + 1) as usize..];
        let npcdata = u32_at(r, 28) as usize;
        let nfuncdata = r[39] as usize;
        while !records.len().is_multiple_of(8) {
            records.push(0);
        }
        funcoffs.push((records_base + records.len()) as u64);
        records.extend_from_slice(&(text + u64::from(u32_at(r, 0))).to_le_bytes());
        // nameoff .. cuOffset: 8 u32 fields.
        records.extend_from_slice(&r[4..36]);
        // funcID, flag (1.17), pad, nfuncdata.
        records.extend_from_slice(&r[36..40]);
        records.extend_from_slice(&r[40..40 + 4 * npcdata]);
        let abs = new_addr + (new_pcln + records_base + records.len()) as u64;
        if !abs.is_multiple_of(8) {
            records.extend_from_slice(&[0; 4]);
        }
        let fd = &r[40 + 4 * npcdata..];
        for k in 0..nfuncdata {
            let off = u32_at(fd, 4 * k);
            let p = if off == u32::MAX {
                0
            } else {
                gofunc + u64::from(off)
            };
            records.extend_from_slice(&p.to_le_bytes());
        }
    }
    for (i, funcoff) in funcoffs.iter().enumerate() {
        out.extend_from_slice(&(text + field(2 * i)).to_le_bytes());
        out.extend_from_slice(&funcoff.to_le_bytes());
    }
    out.extend_from_slice(&(text + field(2 * nfunc)).to_le_bytes());
    out.extend_from_slice(&records);
    out
}

/// A copy of `elf` whose `.gopclntab` section header points at `table`,
/// appended to the file, at virtual address `addr` (outside every segment:
/// the reader then reads the table's pointers from the section itself).
fn with_table(elf: &[u8], table: &[u8], addr: u64) -> Vec<u8> {
    let mut out = elf.to_vec();
    out.resize(out.len().next_multiple_of(8), 0);
    let offset = out.len() as u64;
    out.extend_from_slice(table);
    let shoff = u64_at(elf, 0x28) as usize;
    let shnum = u16::from_le_bytes([elf[0x3c], elf[0x3d]]) as usize;
    let shstrndx = u16::from_le_bytes([elf[0x3e], elf[0x3f]]) as usize;
    let strtab = u64_at(elf, shoff + shstrndx * 64 + 0x18) as usize;
    let sh = (0..shnum)
        .map(|i| shoff + i * 64)
        .find(|&h| elf[strtab + u32_at(elf, h) as usize..].starts_with(b".gopclntab\0"))
        .unwrap();
    out[sh + 0x10..sh + 0x18].copy_from_slice(&addr.to_le_bytes());
    out[sh + 0x18..sh + 0x20].copy_from_slice(&offset.to_le_bytes());
    out[sh + 0x20..sh + 0x28].copy_from_slice(&(table.len() as u64).to_le_bytes());
    out
}

#[test]
fn the_go_1_16_layout_reads_like_the_go_1_18_one() {
    let tc = go::toolchain(19).unwrap();
    let b = go::build(&tc, Program::Chain, Variant::Normal).unwrap();
    let elf = std::fs::read(&b.exe).unwrap();
    let obj = object::File::parse(&*elf).unwrap();
    let orig = obj.section_by_name(".gopclntab").unwrap().data().unwrap();
    let gofunc = obj
        .symbols()
        .find(|s| s.name() == Ok("go.func.*"))
        .unwrap()
        .address();
    let addr = 0x7000_0000;
    let old = with_table(&elf, &to_go116(orig, gofunc, addr), addr);

    let new_tab = Pclntab::parse(&elf).unwrap();
    let old_tab = Pclntab::parse(&old).unwrap();
    assert_eq!(new_tab.version(), Version::Go118);
    assert_eq!(old_tab.version(), Version::Go116);
    assert_eq!(old_tab.len(), new_tab.len());
    let (mut frames, mut inlined) = (0, 0);
    for (o, n) in old_tab.functions().zip(new_tab.functions()) {
        let (o, n) = (o.unwrap(), n.unwrap());
        assert_eq!(
            (o.entry, o.end, o.func_id, o.flag),
            (n.entry, n.end, n.func_id, n.flag)
        );
        assert_eq!(old_tab.name(&o).unwrap(), new_tab.name(&n).unwrap());
        let ranges = |v: gopclntab::PcValues<'_>| v.collect::<Result<Vec<_>, _>>().unwrap();
        assert_eq!(ranges(old_tab.pcsp(&o)), ranges(new_tab.pcsp(&n)));
        assert_eq!(ranges(old_tab.pcfile(&o)), ranges(new_tab.pcfile(&n)));
        let lines = ranges(new_tab.pcln(&n));
        assert_eq!(ranges(old_tab.pcln(&o)), lines);
        for r in lines {
            let (a, b) = (
                old_tab.frames(r.start).unwrap(),
                new_tab.frames(r.start).unwrap(),
            );
            assert_eq!(a, b, "at {:#x}", r.start);
            frames += 1;
            inlined += usize::from(b.len() > 1);
        }
    }
    // The inline trees, reached through funcdata pointers, were used.
    assert!(
        inlined > 100,
        "{inlined} of {frames} frames with inlined calls"
    );
    eprintln!(
        "{} functions, {frames} line ranges, {inlined} with inlined calls: same in both layouts",
        old_tab.len()
    );
}
