//! Finding the CFI sections of an x86-64 ELF file.

use std::borrow::Cow;

use gimli::{BaseAddresses, EhFrameHdr, LittleEndian as GimliLE, Pointer};
use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader, SectionHeader};
use object::{CompressedData, CompressionFormat, LittleEndian as LE};

use crate::{Compression, Error, LocatedVia, SectionKind};

type Header = elf::FileHeader64<LE>;

/// Decompressed `.debug_frame` larger than this is treated as corrupt rather
/// than trusted (the largest real ones are a few tens of MiB).
const MAX_DECOMPRESSED: u64 = 1 << 30;

/// A CFI section ready for gimli.
pub(crate) struct CfiSection<'data> {
    pub kind: SectionKind,
    pub via: LocatedVia,
    pub compression: Compression,
    /// Virtual address of the section (0 for a non-allocated `.debug_frame`).
    pub address: u64,
    pub data: Cow<'data, [u8]>,
}

pub(crate) struct ElfCfi<'data> {
    pub eh_frame: Option<CfiSection<'data>>,
    pub debug_frame: Option<CfiSection<'data>>,
    /// The code at `DT_INIT` and `DT_FINI` (address, up to
    /// [`CRT_STUB_WINDOW`] bytes): `_init` and `_fini`, which crt files build
    /// without CFI.
    pub init_fini: Vec<(u64, &'data [u8])>,
    /// `[start, end)` of every executable `PT_LOAD`, sorted.
    pub exec_ranges: Vec<(u64, u64)>,
    pub bases: BaseAddresses,
}

fn elf_err(what: &'static str) -> impl FnOnce(object::read::Error) -> Error {
    move |e| Error::MalformedElf {
        what,
        detail: e.to_string(),
    }
}

/// Checks the identification bytes and returns the parsed file header.
fn parse_header(data: &[u8]) -> Result<&Header, Error> {
    // e_ident: magic[4], class, data, ...
    if data.len() < 16 || data[..4] != elf::ELFMAG {
        return Err(Error::NotElf);
    }
    match elf::FileClass(data[4]) {
        elf::ELFCLASS64 => {}
        elf::ELFCLASS32 => return Err(Error::UnsupportedClass),
        c => {
            return Err(Error::MalformedElf {
                what: "file header",
                detail: format!("unknown ELF class {}", c.0),
            })
        }
    }
    match elf::DataEncoding(data[5]) {
        elf::ELFDATA2LSB => {}
        elf::ELFDATA2MSB => return Err(Error::BigEndian),
        d => {
            return Err(Error::MalformedElf {
                what: "file header",
                detail: format!("unknown ELF data encoding {}", d.0),
            })
        }
    }
    let header = Header::parse(data).map_err(elf_err("file header"))?;
    let machine = header.e_machine(LE);
    if machine != elf::EM_X86_64 {
        return Err(Error::UnsupportedMachine(machine.0));
    }
    let ty = header.e_type(LE);
    if ty != elf::ET_EXEC && ty != elf::ET_DYN {
        return Err(Error::UnsupportedType(ty.0));
    }
    Ok(header)
}

pub(crate) fn locate(data: &[u8]) -> Result<ElfCfi<'_>, Error> {
    let header = parse_header(data)?;
    let phdrs = header
        .program_headers(LE, data)
        .map_err(elf_err("program headers"))?;
    let sections = header
        .sections(LE, data)
        .map_err(elf_err("section headers"))?;

    let mut exec_ranges: Vec<(u64, u64)> = phdrs
        .iter()
        .filter(|p| p.p_type(LE) == elf::PT_LOAD && p.p_flags(LE).contains(elf::PF_X))
        .filter_map(|p| {
            let start = p.p_vaddr(LE);
            Some((start, start.checked_add(p.p_memsz(LE))?))
        })
        .collect();
    exec_ranges.sort_unstable();

    let init_fini = init_fini_code(data, phdrs);

    let mut bases = BaseAddresses::default();
    if let Some((_, s)) = sections.section_by_name(LE, b".text") {
        bases = bases.set_text(s.sh_addr(LE));
    }
    if let Some((_, s)) = sections.section_by_name(LE, b".got") {
        bases = bases.set_got(s.sh_addr(LE));
    }

    let eh_frame = match sections.section_by_name(LE, b".eh_frame") {
        // A separate debug file (objcopy --only-keep-debug) keeps the header
        // of .eh_frame but not its bytes.
        Some((_, s)) if s.sh_type(LE) == elf::SHT_NOBITS => None,
        Some((_, s)) => {
            let bytes = s.data(LE, data).map_err(elf_err(".eh_frame"))?;
            Some(CfiSection {
                kind: SectionKind::EhFrame,
                via: LocatedVia::SectionHeader,
                compression: Compression::None,
                address: s.sh_addr(LE),
                data: Cow::Borrowed(bytes),
            })
        }
        None => eh_frame_from_hdr(data, phdrs)?,
    };
    if let Some(eh) = &eh_frame {
        bases = bases.set_eh_frame(eh.address);
    }

    let debug_frame = if let Some((_, s)) = sections.section_by_name(LE, b".debug_frame") {
        debug_frame_section(data, s, false)?
    } else if let Some((_, s)) = sections.section_by_name(LE, b".zdebug_frame") {
        debug_frame_section(data, s, true)?
    } else {
        None
    };

    Ok(ElfCfi {
        eh_frame,
        debug_frame,
        init_fini,
        exec_ranges,
        bases,
    })
}

/// Bytes read at `_init`/`_fini`: the crt stubs are 9 to 27 bytes.
pub(crate) const CRT_STUB_WINDOW: u64 = 64;

/// `_init` and `_fini` found through the dynamic section (so a file without
/// section headers gets the same table), with the bytes that follow each up
/// to [`CRT_STUB_WINDOW`] or the end of its executable segment.
fn init_fini_code<'data>(
    data: &'data [u8],
    phdrs: &'data [elf::ProgramHeader64<LE>],
) -> Vec<(u64, &'data [u8])> {
    let Some(dynamic) = phdrs
        .iter()
        .find(|p| p.p_type(LE) == elf::PT_DYNAMIC)
        .and_then(|p| p.dynamic(LE, data).ok().flatten())
    else {
        return Vec::new();
    };
    let code_at = |addr: u64| -> Option<&'data [u8]> {
        let seg = phdrs.iter().find(|p| {
            p.p_type(LE) == elf::PT_LOAD
                && p.p_flags(LE).contains(elf::PF_X)
                && addr >= p.p_vaddr(LE)
                && addr < p.p_vaddr(LE).saturating_add(p.p_filesz(LE))
        })?;
        let off = seg.p_offset(LE).checked_add(addr - seg.p_vaddr(LE))?;
        let seg_end = seg.p_offset(LE).checked_add(seg.p_filesz(LE))?;
        let end = seg_end.min(off.saturating_add(CRT_STUB_WINDOW));
        data.get(usize::try_from(off).ok()?..usize::try_from(end).ok()?)
    };
    dynamic
        .iter()
        .filter(|d| [elf::DT_INIT, elf::DT_FINI].contains(&d.d_tag(LE)))
        .filter_map(|d| {
            let addr = d.d_val(LE);
            Some((addr, code_at(addr)?))
        })
        .collect()
}

fn debug_frame_section<'data>(
    data: &'data [u8],
    s: &elf::SectionHeader64<LE>,
    gnu_zdebug: bool,
) -> Result<Option<CfiSection<'data>>, Error> {
    if s.sh_type(LE) == elf::SHT_NOBITS {
        return Ok(None);
    }
    let err = elf_err(".debug_frame");
    let (compression, compressed) = if let Some((ch, offset, size)) =
        s.compression(LE, data).map_err(elf_err(".debug_frame"))?
    {
        use object::read::elf::CompressionHeader;
        let (compression, format) = match ch.ch_type(LE) {
            elf::ELFCOMPRESS_ZLIB => (Compression::Zlib, CompressionFormat::Zlib),
            elf::ELFCOMPRESS_ZSTD => (Compression::Zstd, CompressionFormat::Zstandard),
            t => {
                return Err(Error::MalformedElf {
                    what: ".debug_frame",
                    detail: format!("unknown compression type {t}"),
                })
            }
        };
        let bytes = data
            .get(offset as usize..)
            .and_then(|d| d.get(..size as usize))
            .ok_or_else(|| Error::MalformedElf {
                what: ".debug_frame",
                detail: "compressed data out of file bounds".into(),
            })?;
        (
            compression,
            Some(CompressedData {
                format,
                data: bytes,
                uncompressed_size: ch.ch_size(LE),
            }),
        )
    } else if gnu_zdebug {
        // Legacy GNU format: "ZLIB" + big-endian u64 size + zlib stream.
        let bytes = s.data(LE, data).map_err(err)?;
        if bytes.len() < 12 || &bytes[..4] != b"ZLIB" {
            return Err(Error::MalformedElf {
                what: ".zdebug_frame",
                detail: "missing ZLIB header".into(),
            });
        }
        let size = u64::from_be_bytes(bytes[4..12].try_into().expect("8 bytes"));
        (
            Compression::ZlibGnu,
            Some(CompressedData {
                format: CompressionFormat::Zlib,
                data: &bytes[12..],
                uncompressed_size: size,
            }),
        )
    } else {
        (Compression::None, None)
    };
    let bytes = match compressed {
        None => Cow::Borrowed(s.data(LE, data).map_err(elf_err(".debug_frame"))?),
        Some(c) => {
            if c.uncompressed_size > MAX_DECOMPRESSED {
                return Err(Error::MalformedElf {
                    what: ".debug_frame",
                    detail: format!(
                        "claims {} bytes once decompressed (limit {MAX_DECOMPRESSED})",
                        c.uncompressed_size
                    ),
                });
            }
            c.decompress().map_err(elf_err(".debug_frame"))?
        }
    };
    Ok(Some(CfiSection {
        kind: SectionKind::DebugFrame,
        via: LocatedVia::SectionHeader,
        compression,
        address: s.sh_addr(LE),
        data: bytes,
    }))
}

fn hdr_err(detail: impl Into<String>) -> Error {
    Error::EhFrameHdr(detail.into())
}

/// `.eh_frame` without section headers: `PT_GNU_EH_FRAME` → `.eh_frame_hdr`
/// → `eh_frame_ptr`.
///
/// The section's end is not recorded anywhere, so it is bounded by the file
/// part of the `PT_LOAD` that holds it and, when `.eh_frame_hdr` has its
/// binary-search table, by the end of the last FDE the table lists: the
/// zero terminator comes from `crtend.o`, which not every link includes
/// (`-nostartfiles`, some hand-made toolchains), and whatever follows
/// `.eh_frame` in the segment must not be parsed as CFI. Without a table,
/// gimli stops at the zero terminator.
fn eh_frame_from_hdr<'data>(
    data: &'data [u8],
    phdrs: &[elf::ProgramHeader64<LE>],
) -> Result<Option<CfiSection<'data>>, Error> {
    let Some(hdr_ph) = phdrs.iter().find(|p| p.p_type(LE) == elf::PT_GNU_EH_FRAME) else {
        return Ok(None);
    };
    let hdr_bytes = hdr_ph
        .data(LE, data)
        .map_err(|_| hdr_err("PT_GNU_EH_FRAME is outside the file"))?;
    let hdr_addr = hdr_ph.p_vaddr(LE);
    let bases = BaseAddresses::default().set_eh_frame_hdr(hdr_addr);
    let parsed = EhFrameHdr::new(hdr_bytes, GimliLE)
        .parse(&bases, 8)
        .map_err(|e| hdr_err(format!("cannot parse .eh_frame_hdr: {e}")))?;
    let eh_addr = match parsed.eh_frame_ptr() {
        Pointer::Direct(a) => a,
        Pointer::Indirect(_) => return Err(hdr_err("indirect eh_frame_ptr")),
    };
    let load = phdrs
        .iter()
        .filter(|p| p.p_type(LE) == elf::PT_LOAD)
        .find(|p| {
            let start = p.p_vaddr(LE);
            eh_addr >= start && eh_addr - start < p.p_filesz(LE)
        })
        .ok_or_else(|| hdr_err(format!("eh_frame_ptr {eh_addr:#x} is in no PT_LOAD")))?;
    let seg = load
        .data(LE, data)
        .map_err(|_| hdr_err("PT_LOAD holding .eh_frame is outside the file"))?;
    let mut section = &seg[(eh_addr - load.p_vaddr(LE)) as usize..];

    if let Some(table) = parsed.table() {
        let mut it = table.iter(&bases);
        let mut end = 0usize;
        loop {
            let entry = it
                .next()
                .map_err(|e| hdr_err(format!("bad .eh_frame_hdr table: {e}")))?;
            let Some((_, fde)) = entry else { break };
            let off = fde
                .pointer()
                .checked_sub(eh_addr)
                .and_then(|o| usize::try_from(o).ok())
                .ok_or_else(|| hdr_err("FDE pointer before .eh_frame"))?;
            end = end.max(entry_end(section, off).ok_or_else(|| {
                hdr_err(format!("FDE at .eh_frame+{off:#x} runs past its segment"))
            })?);
        }
        section = &section[..end];
    }
    Ok(Some(CfiSection {
        kind: SectionKind::EhFrame,
        via: LocatedVia::EhFrameHdr,
        compression: Compression::None,
        address: eh_addr,
        data: Cow::Borrowed(section),
    }))
}

/// End offset of the CIE/FDE starting at `off`, if it fits in `section`.
fn entry_end(section: &[u8], off: usize) -> Option<usize> {
    let len32 = u32::from_le_bytes(section.get(off..off.checked_add(4)?)?.try_into().ok()?);
    let end = if len32 == u32::MAX {
        let len64 = u64::from_le_bytes(section.get(off + 4..off + 12)?.try_into().ok()?);
        (off as u64 + 12).checked_add(len64)?
    } else {
        off as u64 + 4 + u64::from(len32)
    };
    let end = usize::try_from(end).ok()?;
    (end <= section.len()).then_some(end)
}
