//! The parts of an x86-64 ELF file the Go tables need: the `.gopclntab`
//! section, the loaded segments (to read what the tables point at by
//! virtual address), the writable sections (where the linker puts
//! `runtime.firstmoduledata`) and, for position-independent executables,
//! the `R_X86_64_RELATIVE` relocations that hold the pointers the file
//! leaves as zero.

use std::collections::BTreeMap;

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, Rela, SectionHeader};
use object::LittleEndian as LE;

use crate::Error;

type Header = elf::FileHeader64<LE>;

/// Names the Go linker gives the table: `.gopclntab` in executables, and
/// `.data.rel.ro.gopclntab` when it links a PIE itself (the table then holds
/// pointers the dynamic loader relocates).
pub(crate) const PCLNTAB_SECTIONS: [&[u8]; 2] = [b".gopclntab", b".data.rel.ro.gopclntab"];

#[derive(Clone, Copy, Debug)]
struct Segment {
    vaddr: u64,
    filesz: u64,
    offset: u64,
}

/// A parsed ELF file, borrowing its bytes.
pub(crate) struct Image<'a> {
    data: &'a [u8],
    /// File-backed parts of the `PT_LOAD` segments.
    segments: Vec<Segment>,
    /// `R_X86_64_RELATIVE` targets → addends (empty for non-PIE files).
    relative: BTreeMap<u64, u64>,
    /// `SHF_WRITE` sections with file contents: (address, bytes).
    pub(crate) writable: Vec<(u64, &'a [u8])>,
    /// Address of `.text`, if there is one.
    pub(crate) text: Option<u64>,
    /// The table: (address, bytes).
    pub(crate) pclntab: (u64, &'a [u8]),
}

fn malformed(what: &'static str, detail: impl Into<String>) -> Error {
    Error::Malformed {
        what,
        detail: detail.into(),
    }
}

fn elf_err(what: &'static str) -> impl FnOnce(object::read::Error) -> Error {
    move |e| malformed(what, e.to_string())
}

impl<'a> Image<'a> {
    pub(crate) fn parse(data: &'a [u8]) -> Result<Self, Error> {
        if data.len() < 16 || data[..4] != elf::ELFMAG {
            return Err(Error::NotElf);
        }
        if elf::FileClass(data[4]) != elf::ELFCLASS64 {
            return Err(Error::UnsupportedElf("only 64-bit ELF files are supported"));
        }
        if elf::DataEncoding(data[5]) != elf::ELFDATA2LSB {
            return Err(Error::UnsupportedElf(
                "only little-endian ELF files are supported",
            ));
        }
        let header = Header::parse(data).map_err(elf_err("ELF file header"))?;
        if header.e_machine(LE) != elf::EM_X86_64 {
            return Err(Error::UnsupportedElf("only x86-64 ELF files are supported"));
        }
        let phdrs = header
            .program_headers(LE, data)
            .map_err(elf_err("program headers"))?;
        let segments: Vec<Segment> = phdrs
            .iter()
            .filter(|p| p.p_type(LE) == elf::PT_LOAD)
            .map(|p| Segment {
                vaddr: p.p_vaddr(LE),
                filesz: p.p_filesz(LE),
                offset: p.p_offset(LE),
            })
            .collect();
        if header.e_shoff(LE) == 0 || header.e_shnum(LE) == 0 {
            return Err(Error::NoSectionHeaders);
        }
        let sections = header
            .sections(LE, data)
            .map_err(elf_err("section headers"))?;
        let mut pclntab = None;
        for name in PCLNTAB_SECTIONS {
            if let Some((_, s)) = sections.section_by_name(LE, name) {
                if s.sh_type(LE) == elf::SHT_NOBITS {
                    continue;
                }
                let bytes = s.data(LE, data).map_err(elf_err(".gopclntab"))?;
                pclntab = Some((s.sh_addr(LE), bytes));
                break;
            }
        }
        let Some(pclntab) = pclntab.or_else(|| table_from_symbols(data, &sections, &segments))
        else {
            return Err(Error::NoPclntab);
        };
        let text = sections
            .section_by_name(LE, b".text")
            .map(|(_, s)| s.sh_addr(LE));
        let mut writable: Vec<(u64, &[u8])> = Vec::new();
        let mut relative = BTreeMap::new();
        for s in sections.iter() {
            let flags = s.sh_flags(LE);
            let ty = s.sh_type(LE);
            if ty == elf::SHT_PROGBITS
                && flags.contains(elf::SHF_WRITE)
                && flags.contains(elf::SHF_ALLOC)
            {
                // A section whose bytes lie outside the file is not one the
                // moduledata can be in; the rest of the file is still usable.
                if let Ok(bytes) = s.data(LE, data) {
                    writable.push((s.sh_addr(LE), bytes));
                }
            }
            if ty == elf::SHT_RELA {
                let Ok(Some((relas, _))) = s.rela(LE, data) else {
                    continue;
                };
                for r in relas {
                    if r.r_type(LE, false) == elf::R_X86_64_RELATIVE {
                        relative.insert(r.r_offset(LE), r.r_addend(LE) as u64);
                    }
                }
            }
        }
        writable.sort_by_key(|&(a, _)| a);
        Ok(Image {
            data,
            segments,
            relative,
            writable,
            text,
            pclntab,
        })
    }

    /// `len` bytes of the file at virtual address `vaddr`, when they lie in
    /// the file-backed part of one loaded segment.
    pub(crate) fn bytes(&self, vaddr: u64, len: u64) -> Option<&'a [u8]> {
        let seg = self
            .segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)?;
        let rel = vaddr - seg.vaddr;
        if len > seg.filesz - rel {
            return None;
        }
        let start = usize::try_from(seg.offset.checked_add(rel)?).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.data.get(start..end)
    }

    /// The pointer-sized word at `vaddr` as the program sees it once
    /// loaded: a relocated value for PIE files (where the file holds 0).
    pub(crate) fn word(&self, vaddr: u64) -> Option<u64> {
        if let Some(&v) = self.relative.get(&vaddr) {
            return Some(v);
        }
        let b = self.bytes(vaddr, 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    /// Addresses whose relocation makes them hold `value` (PIE files).
    pub(crate) fn relocated_to(&self, value: u64) -> impl Iterator<Item = u64> + '_ {
        self.relative
            .iter()
            .filter(move |(_, &v)| v == value)
            .map(|(&a, _)| a)
    }
}

/// `[runtime.pclntab, runtime.epclntab)` from the symbol table: where an
/// external linker merged the table's section into `.data.rel.ro` (a cgo
/// PIE), only these symbols say where it is (as Go's own `objfile` does).
fn table_from_symbols<'a>(
    data: &'a [u8],
    sections: &object::read::elf::SectionTable<'a, Header>,
    segments: &[Segment],
) -> Option<(u64, &'a [u8])> {
    use object::read::elf::Sym;
    let symbols = sections.symbols(LE, data, elf::SHT_SYMTAB).ok()?;
    let find = |name: &[u8]| {
        symbols
            .iter()
            .find(|s| s.name(LE, symbols.strings()).ok() == Some(name))
            .map(|s| s.st_value(LE))
    };
    let (start, end) = (find(b"runtime.pclntab")?, find(b"runtime.epclntab")?);
    let image = Image {
        data,
        segments: segments.to_vec(),
        relative: BTreeMap::new(),
        writable: Vec::new(),
        text: None,
        pclntab: (0, &[]),
    };
    let bytes = image.bytes(start, end.checked_sub(start)?)?;
    Some((start, bytes))
}
