//! Stack deltas: turns an x86-64 ELF file's call frame information (and a
//! Go binary's `.gopclntab`) into a sorted, merged list of [`UnwindRow`]s
//! that an eBPF unwinder can binary-search.
//!
//! Architecture invariants: pure Rust (gimli, object, memmap2, gopclntab; no
//! C in the dependency closure), never touches the kernel, never panics on
//! hostile input, output is a deterministic function of the file's bytes.
//!
//! # Sources and precedence
//! Per address, the first of these that covers it gives its rows:
//! * `.eh_frame`, found through the section headers or, when those are
//!   stripped, through `PT_GNU_EH_FRAME` → `.eh_frame_hdr` → `eh_frame_ptr`.
//! * `.gopclntab`, the Go runtime's table (through the `gopclntab` crate),
//!   for Go functions: Go's linker writes no `.eh_frame`, and `go build
//!   -ldflags='-s -w'` leaves no `.debug_frame`. `CFA = rsp + pcsp + 8`;
//!   the caller's `rbp` at `CFA - 16` where the prologue provably saved it;
//!   `TOPFRAME` and stack-switching (`SPWRITE`) functions end the stack (the
//!   `go` module documents why). A corrupt table is an error like corrupt
//!   CFI; a layout the crate does not know (Go before 1.16) is skipped and
//!   recorded in [`TableStats::go_unsupported_magic`].
//! * `.debug_frame` (also `SHF_COMPRESSED` zlib/zstd and legacy
//!   `.zdebug_frame`).
//!
//! [`UnwindTable::coverage`] records which one each address's rows came
//! from. CFI rows come from gimli's own CFI interpreter
//! ([`gimli::UnwindTable`]).
//!
//! # FDE policy
//! * FDEs of zero length are ignored, and so are FDEs that do not lie inside
//!   one executable `PT_LOAD` segment: those are the address-0 / `-1`
//!   "tombstones" linkers leave in `.debug_frame` for discarded functions, or
//!   corrupt data. Both are counted in [`TableStats`].
//! * When FDEs of one section overlap, the one that starts first wins (ties:
//!   the one first in the section); a later FDE only contributes the part
//!   past the end of everything before it. This never happens in well-formed
//!   files; it is counted in [`TableStats::fdes_overlapping`] and
//!   [`TableStats::fdes_shadowed`].
//! * After the last address of every FDE there is an
//!   `Invalid(NoUnwindInfo)` row unless the next FDE starts right there.
//! * Adjacent rows with identical rules are merged.
//!
//! # Rule classification (per gimli row), first match wins
//! 1. FDE/CIE with the `S` augmentation → [`UnwindRule::SignalFrame`] for
//!    the whole FDE (its register rules describe the `ucontext_t`, which the
//!    eBPF side reads itself).
//! 2. Return address `undefined` → [`UnwindRule::EndOfStack`], whatever the
//!    CFA (nothing is unwound past it).
//! 3. CFA: `rsp`/`rbp` + offset, or one of the PLT expressions
//!    ([`UnwindRule::Plt`]); anything else is `Invalid`.
//! 4. `rsp` must have no rule of its own (the caller's `rsp` is the CFA).
//! 5. Return address at `CFA - 8`.
//! 6. `rbp`: unchanged / `undefined` / `same_value` → [`FpRule::Unchanged`],
//!    `offset(n)` → [`FpRule::AtCfa`]; PLT rows require it unchanged.
//!
//! Other registers' rules are ignored: the eBPF unwinder recovers only
//! `rip`, `rsp` and `rbp`.
//!
//! # API notes
//! * [`InvalidReason`] is finer than "unsupported" (7 reasons, e.g.
//!   `SpRule`, `CfaOffsetOutOfRange`) so that statistics say which CFI
//!   feature would be worth supporting next.
//! * [`UnwindTable::lookup`] is "rule of the last row at or before the
//!   address": past the last FDE it returns the final
//!   `Invalid(NoUnwindInfo)` row, before the first it returns `None` — the
//!   exact semantics of the binary search the eBPF side will do.
//! * A file without any CFI or Go table is not an error (`-nostdlib` code):
//!   the table is empty and [`TableStats::sources`] says why.
//! * Corrupt CFI is an error for the whole file (never a partial table):
//!   a table that silently misses a corrupt tail would mis-unwind.

mod crt;
mod elf;
mod go;
mod rule;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Write};
use std::path::Path;

use gimli::{
    CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, FrameDescriptionEntry, LittleEndian,
    RegisterRule, UnwindContext, UnwindOffset, UnwindSection, UnwindTableRow, X86_64,
};

pub use rule::{CfaBase, FpRule, InvalidReason, UnwindRow, UnwindRule};

type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// Which section a row came from, in order of precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SectionKind {
    EhFrame,
    /// The Go runtime's table (`pcsp`), for Go functions.
    GoPclntab,
    DebugFrame,
}

impl fmt::Display for SectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SectionKind::EhFrame => ".eh_frame",
            SectionKind::GoPclntab => ".gopclntab",
            SectionKind::DebugFrame => ".debug_frame",
        })
    }
}

/// How a CFI section was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LocatedVia {
    /// By name in the section header table.
    SectionHeader,
    /// Section headers absent: `PT_GNU_EH_FRAME` → `.eh_frame_hdr`.
    EhFrameHdr,
}

/// Compression of a CFI section in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    /// `SHF_COMPRESSED` with `ELFCOMPRESS_ZLIB`.
    Zlib,
    /// `SHF_COMPRESSED` with `ELFCOMPRESS_ZSTD`.
    Zstd,
    /// Legacy GNU `.zdebug_frame` (`ZLIB` magic).
    ZlibGnu,
}

/// One section that was parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceSection {
    pub kind: SectionKind,
    pub via: LocatedVia,
    pub compression: Compression,
    /// Virtual address of the section (0 for a non-allocated `.debug_frame`).
    pub address: u64,
    /// Bytes parsed (after decompression).
    pub size: u64,
    /// CIEs (0 for `.gopclntab`).
    pub cies: usize,
    /// FDEs; for `.gopclntab`, functions.
    pub fdes: usize,
}

/// A range of addresses whose rows come from one section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coverage {
    pub start: u64,
    pub end: u64,
    pub kind: SectionKind,
}

/// What `.gopclntab` gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GoStats {
    /// The table layout (`Go 1.18-1.19`...).
    pub version: String,
    /// Functions in the table.
    pub functions: usize,
    /// Functions that contribute rows.
    pub functions_used: usize,
    /// Functions with no `pcsp` table (markers, external code).
    pub functions_without_pcsp: usize,
    /// Functions not inside one executable `PT_LOAD`.
    pub functions_outside_text: usize,
    /// Functions entirely covered by `.eh_frame`.
    pub functions_superseded_by_eh_frame: usize,
    /// Functions made the end of the stack (`TOPFRAME`, `SPWRITE`).
    pub functions_outermost: usize,
    /// Go's signal restorers given a signal frame row (see the `go`
    /// module).
    pub signal_restorers: usize,
    /// Functions whose entry is a return address (signal restorers,
    /// `systemstack_switch`) given their entry's rule a byte early.
    pub functions_returned_to_at_entry: usize,
    /// Functions whose prologue proves where the caller's `rbp` is saved.
    pub functions_with_frame_pointer: usize,
}

/// What building the table saw. All counts are deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Sections parsed, in order of precedence: `.eh_frame`, `.gopclntab`,
    /// `.debug_frame`.
    pub sources: Vec<SourceSection>,
    /// FDEs parsed, all sections.
    pub fdes: usize,
    /// FDEs that contribute rows.
    pub fdes_used: usize,
    /// FDEs covering no byte.
    pub fdes_empty: usize,
    /// FDEs not inside one executable `PT_LOAD` (tombstones, corrupt data).
    pub fdes_outside_text: usize,
    /// FDEs that start inside an earlier FDE of the same section but go past it.
    pub fdes_overlapping: usize,
    /// FDEs entirely covered by earlier FDEs of the same section.
    pub fdes_shadowed: usize,
    /// `.debug_frame` FDEs entirely covered by `.eh_frame`.
    pub fdes_superseded_by_eh_frame: usize,
    /// `.debug_frame` FDEs (or what `.eh_frame` left of them) entirely
    /// covered by `.gopclntab`.
    pub fdes_superseded_by_gopclntab: usize,
    /// Set when the file has a `.gopclntab` this crate reads.
    pub go: Option<GoStats>,
    /// A `.gopclntab` whose layout is not supported (its magic): its
    /// functions get no rows from it.
    pub go_unsupported_magic: Option<u32>,
    /// Raw rows by the section they came from.
    pub rows_by_source: BTreeMap<SectionKind, usize>,
    /// FDEs with the `S` augmentation.
    pub signal_frame_fdes: usize,
    /// Rows gimli produced for the used FDEs (non-empty ones).
    pub gimli_rows: usize,
    /// Rows before merging: one per non-empty gimli row, plus the
    /// `Invalid(NoUnwindInfo)` rows after FDEs, plus one per signal FDE.
    pub rows_raw: usize,
    /// Rows after merging (`rows.len()`).
    pub rows_merged: usize,
    /// Raw rows that became `Invalid`, by reason (all reasons present,
    /// possibly with 0).
    pub invalid_raw: BTreeMap<InvalidReason, usize>,
    /// Raw `Plt` rows, by threshold.
    pub plt_raw: BTreeMap<u8, usize>,
    /// Raw `EndOfStack` rows.
    pub end_of_stack_raw: usize,
    /// The entry point, when it had no CFI and was made the end of the
    /// stack for [`ENTRY_WITHOUT_CFI_SPAN`] bytes at most (see
    /// `mark_entry_point`).
    pub entry_point_end_of_stack: Option<u64>,
    /// `.init`/`.fini` stubs without CFI given rules (see `crt`).
    pub crt_stubs: usize,
}

impl TableStats {
    /// Raw rows that became `Invalid` for any reason but `NoUnwindInfo`.
    pub fn unsupported_raw(&self) -> usize {
        self.invalid_raw
            .iter()
            .filter(|(r, _)| **r != InvalidReason::NoUnwindInfo)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Why a file could not be turned into a table.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Not an ELF file.
    NotElf,
    /// A 32-bit ELF file.
    UnsupportedClass,
    /// A big-endian ELF file.
    BigEndian,
    /// `e_machine` is not `EM_X86_64`.
    UnsupportedMachine(u16),
    /// `e_type` is neither `ET_EXEC` nor `ET_DYN` (relocatable objects carry
    /// unrelocated addresses; core files have no CFI).
    UnsupportedType(u16),
    /// Headers or section data out of bounds or inconsistent.
    MalformedElf { what: &'static str, detail: String },
    /// `PT_GNU_EH_FRAME` / `.eh_frame_hdr` unusable while section headers
    /// are absent.
    EhFrameHdr(String),
    /// A corrupt `.gopclntab`.
    GoPclntab(gopclntab::Error),
    /// Corrupt or truncated CFI.
    Cfi {
        section: SectionKind,
        /// Offset of the offending CIE/FDE in the section, when known.
        entry_offset: Option<u64>,
        error: gimli::Error,
    },
    /// Reading the file failed.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotElf => f.write_str("not an ELF file"),
            Error::UnsupportedClass => f.write_str("32-bit ELF files are not supported"),
            Error::BigEndian => f.write_str("big-endian ELF files are not supported"),
            Error::UnsupportedMachine(m) => {
                write!(f, "ELF machine {m} is not supported (only x86-64, 62)")
            }
            Error::UnsupportedType(t) => write!(
                f,
                "ELF type {t} is not supported (only executables and shared objects)"
            ),
            Error::MalformedElf { what, detail } => write!(f, "malformed ELF {what}: {detail}"),
            Error::EhFrameHdr(d) => {
                write!(f, "cannot locate .eh_frame through PT_GNU_EH_FRAME: {d}")
            }
            Error::Cfi {
                section,
                entry_offset: Some(o),
                error,
            } => write!(f, "corrupt {section} at entry {o:#x}: {error}"),
            Error::Cfi { section, error, .. } => write!(f, "corrupt {section}: {error}"),
            Error::GoPclntab(e) => write!(f, "{e}"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

/// The unwind rows of one ELF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnwindTable {
    /// Strictly increasing addresses; no two adjacent rows have the same
    /// rule; when not empty, the last row is `Invalid(NoUnwindInfo)`.
    pub rows: Vec<UnwindRow>,
    /// Which section the rows of each range come from: sorted, disjoint,
    /// adjacent ranges of one section merged. Addresses outside every range
    /// have `Invalid(NoUnwindInfo)` or a rule the crate made up (the entry
    /// point, crt stubs).
    pub coverage: Vec<Coverage>,
    pub stats: TableStats,
}

impl UnwindTable {
    /// Builds the table of an x86-64 ELF executable or shared object held in
    /// memory. A file without any CFI gives an empty table.
    pub fn from_elf(data: &[u8]) -> Result<Self, Error> {
        build(data)
    }

    /// Memory-maps `path` and builds its table.
    ///
    /// The file must not be modified while it is being read (as for any
    /// `mmap` of a file); binaries and libraries are replaced, not rewritten,
    /// by package managers and linkers.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, Error> {
        let file = std::fs::File::open(path)?;
        // SAFETY: read-only private mapping; see the doc comment for the
        // (usual) assumption that nobody truncates the file meanwhile.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        build(&map)
    }

    /// The rule for `addr` (an ELF virtual address): the rule of the last row
    /// at or before `addr`. `None` below the first row; past the last FDE this
    /// is `Invalid(NoUnwindInfo)` (the final row).
    pub fn lookup(&self, addr: u64) -> Option<&UnwindRule> {
        let i = self.rows.partition_point(|r| r.address <= addr);
        i.checked_sub(1).map(|i| &self.rows[i].rule)
    }

    /// The section the rule at `addr` came from.
    pub fn source_of(&self, addr: u64) -> Option<SectionKind> {
        let i = self.coverage.partition_point(|c| c.start <= addr);
        let c = self.coverage.get(i.checked_sub(1)?)?;
        (addr < c.end).then_some(c.kind)
    }
}

/// Writes one row per line (`0x1040 cfa=rsp+16 fp=cfa-16`), buffered.
pub fn write_rows(table: &UnwindTable, w: impl Write) -> io::Result<()> {
    let mut w = io::BufWriter::with_capacity(1 << 16, w);
    for row in &table.rows {
        writeln!(w, "{row}")?;
    }
    w.flush()
}

/// Like [`write_rows`], each row followed by the section it came from
/// (`0x1040 cfa=rsp+16 fp=cfa-16 .eh_frame`; `-` for the rows the crate
/// makes up: gaps, the entry point, crt stubs).
pub fn write_rows_with_sources(table: &UnwindTable, w: impl Write) -> io::Result<()> {
    let mut w = io::BufWriter::with_capacity(1 << 16, w);
    for row in &table.rows {
        match table.source_of(row.address) {
            Some(kind) if !matches!(row.rule, UnwindRule::Invalid(InvalidReason::NoUnwindInfo)) => {
                writeln!(w, "{row} {kind}")?
            }
            _ => writeln!(w, "{row} -")?,
        }
    }
    w.flush()
}

/// An FDE kept for row evaluation.
struct Fde<'a> {
    start: u64,
    end: u64,
    kind: SectionKind,
    fde: FrameDescriptionEntry<Slice<'a>>,
}

/// The part `[start, end)` of FDE `fde` that ends up in the table.
#[derive(Clone, Copy, Debug)]
struct Piece {
    start: u64,
    end: u64,
    fde: usize,
}

fn cfi_err(section: SectionKind, entry_offset: Option<u64>) -> impl Fn(gimli::Error) -> Error {
    move |error| Error::Cfi {
        section,
        entry_offset,
        error,
    }
}

/// Parses every CIE/FDE of `section`, appending usable FDEs to `out`.
fn collect_fdes<'a, S>(
    section: &S,
    kind: SectionKind,
    bases: &gimli::BaseAddresses,
    exec_ranges: &[(u64, u64)],
    out: &mut Vec<Fde<'a>>,
    stats: &mut TableStats,
    source: &mut SourceSection,
) -> Result<(), Error>
where
    S: UnwindSection<Slice<'a>>,
{
    let mut cies: HashMap<usize, gimli::CommonInformationEntry<Slice<'a>>> = HashMap::new();
    let mut entries = section.entries(bases);
    loop {
        let entry = entries.next().map_err(cfi_err(kind, None))?;
        let Some(entry) = entry else { break };
        match entry {
            CieOrFde::Cie(cie) => {
                source.cies += 1;
                cies.insert(cie.offset(), cie);
            }
            CieOrFde::Fde(partial) => {
                let fde = partial
                    .parse(|section, bases, offset| {
                        let o: usize = UnwindOffset::into(offset);
                        if let Some(cie) = cies.get(&o) {
                            return Ok(cie.clone());
                        }
                        let cie = section.cie_from_offset(bases, offset)?;
                        cies.insert(o, cie.clone());
                        Ok(cie)
                    })
                    .map_err(cfi_err(kind, None))?;
                source.fdes += 1;
                stats.fdes += 1;
                let start = fde.initial_address();
                let Some(end) = start.checked_add(fde.len()) else {
                    stats.fdes_outside_text += 1;
                    continue;
                };
                if start == end {
                    stats.fdes_empty += 1;
                    continue;
                }
                // exec_ranges is sorted by start: find the last range
                // starting at or before `start`.
                let i = exec_ranges.partition_point(|r| r.0 <= start);
                let inside = i > 0 && end <= exec_ranges[i - 1].1;
                if !inside {
                    stats.fdes_outside_text += 1;
                    continue;
                }
                out.push(Fde {
                    start,
                    end,
                    kind,
                    fde,
                });
            }
        }
    }
    Ok(())
}

/// Sorts the FDEs `idx` (indices into `ranges`, each `[start, end)`) by
/// (start, index) and makes them disjoint: the earliest-starting FDE wins.
fn sweep(ranges: &[(u64, u64)], mut idx: Vec<usize>, stats: &mut TableStats) -> Vec<Piece> {
    idx.sort_unstable_by_key(|&i| (ranges[i].0, i));
    let mut pieces = Vec::with_capacity(idx.len());
    let mut cursor: Option<u64> = None;
    for i in idx {
        let (fstart, fend) = ranges[i];
        let start = match cursor {
            Some(c) if fend <= c => {
                stats.fdes_shadowed += 1;
                continue;
            }
            Some(c) if fstart < c => {
                stats.fdes_overlapping += 1;
                c
            }
            _ => fstart,
        };
        pieces.push(Piece {
            start,
            end: fend,
            fde: i,
        });
        cursor = Some(fend);
    }
    pieces
}

/// `pieces` minus the (sorted, disjoint) `cover`; `superseded` counts the
/// pieces nothing is left of.
fn subtract(pieces: Vec<Piece>, cover: &[Piece], superseded: &mut usize) -> Vec<Piece> {
    let mut out = Vec::with_capacity(pieces.len());
    let mut j = 0;
    for p in pieces {
        let before = out.len();
        let mut start = p.start;
        while j < cover.len() && cover[j].end <= start {
            j += 1;
        }
        let mut k = j;
        while start < p.end {
            match cover.get(k) {
                Some(c) if c.start < p.end => {
                    if c.start > start {
                        out.push(Piece {
                            start,
                            end: c.start,
                            fde: p.fde,
                        });
                    }
                    start = start.max(c.end);
                    k += 1;
                }
                _ => {
                    out.push(Piece {
                        start,
                        end: p.end,
                        fde: p.fde,
                    });
                    break;
                }
            }
        }
        if out.len() == before {
            *superseded += 1;
        }
    }
    out
}

/// Accumulates rows, merging identical neighbours.
struct RowSink {
    rows: Vec<UnwindRow>,
    invalid: [usize; InvalidReason::ALL.len()],
    plt: BTreeMap<u8, usize>,
    end_of_stack: usize,
    raw: usize,
}

impl RowSink {
    #[inline]
    fn push(&mut self, address: u64, rule: UnwindRule) {
        self.raw += 1;
        match rule {
            UnwindRule::Invalid(r) => self.invalid[r.index()] += 1,
            UnwindRule::Plt { threshold } => *self.plt.entry(threshold).or_default() += 1,
            UnwindRule::EndOfStack => self.end_of_stack += 1,
            _ => {}
        }
        // Callers push non-decreasing addresses (gimli rows are contiguous
        // and checked for overflow; pieces are sorted and disjoint).
        if let Some(last) = self.rows.last_mut() {
            debug_assert!(address >= last.address);
            if address == last.address {
                // An earlier zero-length row: the new rule replaces it.
                last.rule = rule;
                let n = self.rows.len();
                if n >= 2 && self.rows[n - 2].rule == rule {
                    self.rows.pop();
                }
                return;
            }
            if last.rule == rule {
                return;
            }
        }
        self.rows.push(UnwindRow { address, rule });
    }
}

/// The x86-64 PLT CFA expression
/// `DW_OP_breg7 8; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_litN;
/// DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus`, returning N.
fn plt_threshold(expr: &[u8]) -> Option<u8> {
    match *expr {
        [0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, lit @ 0x30..=0x4f, 0x2a, 0x33, 0x24, 0x22] => {
            Some(lit - 0x30)
        }
        _ => None,
    }
}

fn fp_rule<T: gimli::ReaderOffset>(rule: Option<RegisterRule<T>>) -> Option<FpRule> {
    match rule {
        None | Some(RegisterRule::Undefined) | Some(RegisterRule::SameValue) => {
            Some(FpRule::Unchanged)
        }
        Some(RegisterRule::Offset(n)) => i32::try_from(n).ok().map(FpRule::AtCfa),
        Some(_) => None,
    }
}

/// Checks, in this order: return address undefined (→ `EndOfStack`), CFA,
/// `rsp` (the caller's `rsp` must be the CFA), return address at `CFA - 8`,
/// `rbp`. The first failing check names the [`InvalidReason`].
fn classify<'a, S: UnwindSection<Slice<'a>>>(
    section: &S,
    row: &UnwindTableRow<usize>,
) -> UnwindRule {
    use InvalidReason::*;
    let invalid = UnwindRule::Invalid;
    if let Some(RegisterRule::Undefined) = row.register(X86_64::RA) {
        return UnwindRule::EndOfStack;
    }
    let cfa = match *row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let base = match register {
                X86_64::RSP => CfaBase::Sp,
                X86_64::RBP => CfaBase::Fp,
                _ => return invalid(CfaRegister),
            };
            let Ok(offset) = i32::try_from(offset) else {
                return invalid(CfaOffsetOutOfRange);
            };
            Ok((base, offset))
        }
        CfaRule::Expression(e) => {
            let bytes = e.get(section).map(|e| e.0.slice());
            match bytes.ok().and_then(plt_threshold) {
                Some(t) => Err(t),
                None => return invalid(CfaExpression),
            }
        }
    };
    match row.register(X86_64::RSP) {
        None | Some(RegisterRule::ValOffset(0)) => {}
        Some(_) => return invalid(SpRule),
    }
    if row.register(X86_64::RA) != Some(RegisterRule::Offset(-8)) {
        return invalid(ReturnAddress);
    }
    let Some(fp) = fp_rule(row.register(X86_64::RBP)) else {
        return invalid(FpRule);
    };
    match cfa {
        Ok((base, offset)) => UnwindRule::Cfa { base, offset, fp },
        Err(threshold) if fp == rule::FpRule::Unchanged => UnwindRule::Plt { threshold },
        Err(_) => invalid(FpRule),
    }
}

/// Emits the rows of `fde` clipped to `piece`.
#[allow(clippy::too_many_arguments)]
fn emit_fde<'a, S: UnwindSection<Slice<'a>>>(
    section: &S,
    bases: &gimli::BaseAddresses,
    ctx: &mut UnwindContext<usize>,
    f: &Fde<'a>,
    piece: Piece,
    sink: &mut RowSink,
    gimli_rows: &mut usize,
) -> Result<(), Error> {
    let err = cfi_err(f.kind, Some(f.fde.offset() as u64));
    let signal = f.fde.is_signal_trampoline();
    if signal {
        sink.push(piece.start, UnwindRule::SignalFrame);
    }
    let mut table = gimli::UnwindTable::new(section, bases, ctx, &f.fde).map_err(&err)?;
    while let Some(row) = table.next_row().map_err(&err)? {
        let (s, e) = (row.start_address(), row.end_address());
        if s >= piece.end {
            break;
        }
        if s >= e || e <= piece.start {
            continue;
        }
        *gimli_rows += 1;
        if !signal {
            sink.push(s.max(piece.start), classify(section, row));
        }
    }
    Ok(())
}

fn build(data: &[u8]) -> Result<UnwindTable, Error> {
    let cfi = elf::locate(data)?;
    let mut stats = TableStats::default();
    let mut fdes: Vec<Fde<'_>> = Vec::new();

    let eh_frame = cfi.eh_frame.as_ref().map(|s| {
        let mut sec = EhFrame::new(&s.data, LittleEndian);
        sec.set_address_size(8);
        sec
    });
    let debug_frame = cfi.debug_frame.as_ref().map(|s| {
        let mut sec = DebugFrame::new(&s.data, LittleEndian);
        sec.set_address_size(8);
        sec
    });

    let source = |s: &elf::CfiSection<'_>| SourceSection {
        kind: s.kind,
        via: s.via,
        compression: s.compression,
        address: s.address,
        size: s.data.len() as u64,
        cies: 0,
        fdes: 0,
    };
    if let (Some(sec), Some(s)) = (&eh_frame, &cfi.eh_frame) {
        let mut src = source(s);
        collect_fdes(
            sec,
            SectionKind::EhFrame,
            &cfi.bases,
            &cfi.exec_ranges,
            &mut fdes,
            &mut stats,
            &mut src,
        )?;
        stats.sources.push(src);
    }
    let n_eh = fdes.len();
    if let (Some(sec), Some(s)) = (&debug_frame, &cfi.debug_frame) {
        let mut src = source(s);
        collect_fdes(
            sec,
            SectionKind::DebugFrame,
            &cfi.bases,
            &cfi.exec_ranges,
            &mut fdes,
            &mut stats,
            &mut src,
        )?;
        stats.sources.push(src);
    }

    let pclntab = match gopclntab::Pclntab::parse(data) {
        Ok(t) => Some(t),
        // Not Go (or no section headers to find the table by).
        Err(gopclntab::Error::NoPclntab | gopclntab::Error::NoSectionHeaders) => None,
        Err(gopclntab::Error::UnsupportedVersion { magic }) => {
            stats.go_unsupported_magic = Some(magic);
            None
        }
        Err(e) => return Err(Error::GoPclntab(e)),
    };
    let go_functions = match &pclntab {
        Some(tab) => collect_go(tab, &cfi.exec_ranges, &mut stats)?,
        None => Vec::new(),
    };

    // One index space for the sweep: CFI FDEs first, then Go functions.
    let n_cfi = fdes.len();
    let mut ranges: Vec<(u64, u64)> = fdes.iter().map(|f| (f.start, f.end)).collect();
    ranges.extend(go_functions.iter().map(|g| (g.start, g.end)));
    let eh_pieces = sweep(&ranges, (0..n_eh).collect(), &mut stats);
    // Go functions are sorted and disjoint by construction (`collect_go`).
    let go_pieces: Vec<Piece> = (n_cfi..ranges.len())
        .map(|i| Piece {
            start: ranges[i].0,
            end: ranges[i].1,
            fde: i,
        })
        .collect();
    let mut go_superseded = 0;
    let go_pieces = subtract(go_pieces, &eh_pieces, &mut go_superseded);
    if let Some(g) = &mut stats.go {
        g.functions_superseded_by_eh_frame = go_superseded;
    }
    let mut pieces = eh_pieces.clone();
    if n_cfi > n_eh {
        let debug_pieces = sweep(&ranges, (n_eh..n_cfi).collect(), &mut stats);
        let debug_pieces = subtract(
            debug_pieces,
            &eh_pieces,
            &mut stats.fdes_superseded_by_eh_frame,
        );
        let debug_pieces = subtract(
            debug_pieces,
            &go_pieces,
            &mut stats.fdes_superseded_by_gopclntab,
        );
        pieces.extend_from_slice(&debug_pieces);
    }
    pieces.extend_from_slice(&go_pieces);
    pieces.sort_unstable_by_key(|p| p.start);
    let mut used: Vec<bool> = vec![false; ranges.len()];

    let mut sink = RowSink {
        rows: Vec::with_capacity(fdes.len() * 4 + go_functions.len() * 4 + 1),
        invalid: [0; InvalidReason::ALL.len()],
        plt: BTreeMap::new(),
        end_of_stack: 0,
        raw: 0,
    };
    let mut coverage: Vec<Coverage> = Vec::new();
    let mut ctx: Box<UnwindContext<usize>> = Box::new(UnwindContext::new());
    let mut cursor: Option<u64> = None;
    for &piece in &pieces {
        if let Some(c) = cursor {
            if c != piece.start {
                sink.push(c, UnwindRule::Invalid(InvalidReason::NoUnwindInfo));
            }
        }
        let raw_before = sink.raw;
        let kind = if piece.fde >= n_cfi {
            let g = &go_functions[piece.fde - n_cfi];
            if !used[piece.fde] {
                used[piece.fde] = true;
                if let Some(s) = &mut stats.go {
                    s.functions_used += 1;
                }
            }
            g.rows(piece.start, piece.end, |a, r| sink.push(a, r));
            SectionKind::GoPclntab
        } else {
            let f = &fdes[piece.fde];
            if !used[piece.fde] {
                used[piece.fde] = true;
                stats.fdes_used += 1;
                if f.fde.is_signal_trampoline() {
                    stats.signal_frame_fdes += 1;
                }
            }
            match f.kind {
                SectionKind::EhFrame => emit_fde(
                    eh_frame.as_ref().expect("eh_frame FDE without section"),
                    &cfi.bases,
                    &mut ctx,
                    f,
                    piece,
                    &mut sink,
                    &mut stats.gimli_rows,
                )?,
                _ => emit_fde(
                    debug_frame
                        .as_ref()
                        .expect("debug_frame FDE without section"),
                    &cfi.bases,
                    &mut ctx,
                    f,
                    piece,
                    &mut sink,
                    &mut stats.gimli_rows,
                )?,
            }
            f.kind
        };
        *stats.rows_by_source.entry(kind).or_default() += sink.raw - raw_before;
        match coverage.last_mut() {
            Some(c) if c.end == piece.start && c.kind == kind => c.end = piece.end,
            _ => coverage.push(Coverage {
                start: piece.start,
                end: piece.end,
                kind,
            }),
        }
        cursor = Some(piece.end);
    }
    if let Some(c) = cursor {
        sink.push(c, UnwindRule::Invalid(InvalidReason::NoUnwindInfo));
    }

    // Precedence order, whatever order they were read in.
    stats.sources.sort_by_key(|s| s.kind);
    stats.rows_raw = sink.raw;
    stats.rows_merged = sink.rows.len();
    stats.invalid_raw = InvalidReason::ALL
        .iter()
        .map(|&r| (r, sink.invalid[r.index()]))
        .collect();
    stats.plt_raw = sink.plt;
    stats.end_of_stack_raw = sink.end_of_stack;
    let mut rows = sink.rows;
    if let Some(entry) = elf_entry(data) {
        let before = rows.len();
        if mark_entry_point(&mut rows, entry) {
            stats.entry_point_end_of_stack = Some(entry);
            stats.end_of_stack_raw += 1;
            stats.rows_raw += rows.len().saturating_sub(before);
            stats.rows_merged = rows.len();
        }
    }
    for &(address, code) in &cfi.init_fini {
        if let Some((stub, end)) = crt::stub_rows(address, code) {
            let before = rows.len();
            if fill_gap(&mut rows, stub, end) {
                stats.crt_stubs += 1;
                stats.rows_raw += rows.len().saturating_sub(before);
                stats.rows_merged = rows.len();
            }
        }
    }
    rows.shrink_to_fit();
    Ok(UnwindTable {
        rows,
        coverage,
        stats,
    })
}

/// The Go functions of `tab` that get rows from it, in address order.
fn collect_go(
    tab: &gopclntab::Pclntab<'_>,
    exec_ranges: &[(u64, u64)],
    stats: &mut TableStats,
) -> Result<Vec<go::GoFunction>, Error> {
    let mut g = GoStats {
        version: tab.version().to_string(),
        functions: tab.len(),
        ..GoStats::default()
    };
    let mut out: Vec<go::GoFunction> = Vec::with_capacity(tab.len());
    for f in tab.functions() {
        let f = f.map_err(Error::GoPclntab)?;
        let Some(func) = go::GoFunction::new(tab, &f).map_err(Error::GoPclntab)? else {
            g.functions_without_pcsp += 1;
            continue;
        };
        let mut func = func;
        let text = |start: u64, end: u64| {
            let i = exec_ranges.partition_point(|r| r.0 <= start);
            i > 0 && end <= exec_ranges[i - 1].1
        };
        if !text(func.start, func.end) {
            g.functions_outside_text += 1;
            continue;
        }
        // `parse` checked the entries are sorted and each table stays in
        // its function: functions are disjoint and in order.
        debug_assert!(out.last().is_none_or(|p| p.end <= func.start));
        if func.returned_to_at_entry {
            // A return address to the entry is looked up a byte early: that
            // byte must be padding for the entry's rule to start there.
            let before = func.start.checked_sub(1);
            match before {
                Some(b) if text(b, func.end) && out.last().is_none_or(|p| p.end <= b) => {
                    func.start_a_byte_early();
                    g.functions_returned_to_at_entry += 1;
                    g.signal_restorers += usize::from(func.kind == go::Kind::SignalReturn);
                }
                _ if func.kind == go::Kind::SignalReturn => func.kind = go::Kind::Frame,
                _ => {}
            }
        }
        g.functions_outermost += usize::from(func.kind == go::Kind::Outermost);
        g.functions_with_frame_pointer += usize::from(func.fp_saved.is_some());
        out.push(func);
    }
    stats.sources.push(SourceSection {
        kind: SectionKind::GoPclntab,
        via: LocatedVia::SectionHeader,
        compression: Compression::None,
        address: tab.address(),
        size: tab.bytes().len() as u64,
        cies: 0,
        fdes: tab.len(),
    });
    stats.go = Some(g);
    Ok(out)
}

/// `e_entry` of an ELF64 little-endian header (`locate` already accepted
/// the file as one); 0 (none) is `None`.
fn elf_entry(data: &[u8]) -> Option<u64> {
    let bytes = data.get(24..32)?;
    let entry = u64::from_le_bytes(bytes.try_into().ok()?);
    (entry != 0).then_some(entry)
}

/// Bytes after the entry point treated as its code when it has no CFI.
pub const ENTRY_WITHOUT_CFI_SPAN: u64 = 64;

/// The ELF entry point is where a new process starts: nothing called it, so
/// it is the outermost frame of the main thread's stack. The dynamic
/// loader's `_start` has no CFI, and every process runs it first (a
/// short-lived one is sampled there often): without this its frames end as
/// `no unwind info` instead of at the end of the stack. Only a gap with no
/// CFI at the entry becomes `EndOfStack`, for at most
/// [`ENTRY_WITHOUT_CFI_SPAN`] bytes; CFI that exists always wins. Returns
/// whether the table changed.
fn mark_entry_point(rows: &mut Vec<UnwindRow>, entry: u64) -> bool {
    if rows.is_empty() {
        return false;
    }
    let next = rows.get(rows.partition_point(|r| r.address <= entry));
    let end = next.map_or(entry + ENTRY_WITHOUT_CFI_SPAN, |n| {
        n.address.min(entry + ENTRY_WITHOUT_CFI_SPAN)
    });
    let end_of_stack = UnwindRow {
        address: entry,
        rule: UnwindRule::EndOfStack,
    };
    fill_gap(rows, vec![end_of_stack], end)
}

/// Puts `insert` (rows from its first address up to `end`) into a sorted
/// table, only where the table has no unwind info at all for that range:
/// CFI that exists always wins. Returns whether the table changed.
pub(crate) fn fill_gap(rows: &mut Vec<UnwindRow>, mut insert: Vec<UnwindRow>, end: u64) -> bool {
    let no_info = UnwindRule::Invalid(InvalidReason::NoUnwindInfo);
    let Some(start) = insert.first().map(|r| r.address) else {
        return false;
    };
    // rows[..i] start at or before `start`; rows[i..j] inside the range.
    let i = rows.partition_point(|r| r.address <= start);
    let j = rows.partition_point(|r| r.address < end);
    let covered_at_start = i > 0 && rows[i - 1].rule != no_info;
    if covered_at_start || rows[i..j].iter().any(|r| r.rule != no_info) {
        return false;
    }
    // Whatever held at `end` was "no info" (or nothing): say so again,
    // unless a row starts right there.
    if rows.get(j).map(|r| r.address) != Some(end) {
        insert.push(UnwindRow {
            address: end,
            rule: no_info,
        });
    }
    let from = if i > 0 && rows[i - 1].address == start {
        i - 1
    } else {
        i
    };
    rows.splice(from..j, insert);
    rows.dedup_by(|b, a| a.rule == b.rule);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(address: u64, rule: UnwindRule) -> UnwindRow {
        UnwindRow { address, rule }
    }

    #[test]
    fn an_entry_point_without_cfi_ends_the_stack() {
        let sp8 = UnwindRule::Invalid(InvalidReason::NoUnwindInfo);
        let cfa = rows_rule();
        // The dynamic loader's layout: a gap from 0x6f, entry at 0x70, the
        // next FDE at 0xb0.
        let mut rows = vec![
            row(0x10, cfa),
            row(0x6f, sp8),
            row(0xb0, cfa),
            row(0xc0, sp8),
        ];
        assert!(mark_entry_point(&mut rows, 0x70));
        assert_eq!(
            rows,
            vec![
                row(0x10, cfa),
                row(0x6f, sp8),
                row(0x70, UnwindRule::EndOfStack),
                row(0xb0, cfa),
                row(0xc0, sp8)
            ]
        );
        // A long gap: only the first ENTRY_WITHOUT_CFI_SPAN bytes.
        let mut rows = vec![
            row(0x10, cfa),
            row(0x20, sp8),
            row(0x1000, cfa),
            row(0x1010, sp8),
        ];
        assert!(mark_entry_point(&mut rows, 0x20));
        assert_eq!(
            rows,
            vec![
                row(0x10, cfa),
                row(0x20, UnwindRule::EndOfStack),
                row(0x20 + ENTRY_WITHOUT_CFI_SPAN, sp8),
                row(0x1000, cfa),
                row(0x1010, sp8)
            ]
        );
    }

    #[test]
    fn cfi_at_the_entry_point_is_kept() {
        let sp8 = UnwindRule::Invalid(InvalidReason::NoUnwindInfo);
        let cfa = rows_rule();
        let before = vec![row(0x10, cfa), row(0x40, sp8)];
        let mut rows = before.clone();
        assert!(!mark_entry_point(&mut rows, 0x20));
        assert_eq!(rows, before);
        assert!(!mark_entry_point(&mut Vec::new(), 0x20));
    }

    /// Any ordinary rule.
    fn rows_rule() -> UnwindRule {
        UnwindTable::from_elf(&std::fs::read("/proc/self/exe").unwrap())
            .unwrap()
            .rows
            .iter()
            .map(|r| r.rule)
            .find(|r| !matches!(r, UnwindRule::Invalid(_) | UnwindRule::EndOfStack))
            .unwrap()
    }

    fn spans(p: &[Piece]) -> Vec<(u64, u64, usize)> {
        p.iter().map(|p| (p.start, p.end, p.fde)).collect()
    }

    #[test]
    fn sweep_first_start_wins() {
        let mut st = TableStats::default();
        // 0: [10,20) 1: [15,30) overlaps 0; 2: [16,18) inside 1's claim;
        // 3: [10,12) same start as 0, later index: shadowed; 4: [40,50).
        let r = [(10, 20), (15, 30), (16, 18), (10, 12), (40, 50)];
        let p = sweep(&r, (0..r.len()).collect(), &mut st);
        assert_eq!(spans(&p), [(10, 20, 0), (20, 30, 1), (40, 50, 4)]);
        assert_eq!((st.fdes_overlapping, st.fdes_shadowed), (1, 2));
    }

    #[test]
    fn sweep_is_order_independent_for_disjoint_input() {
        let mut st = TableStats::default();
        let r = [(40, 50), (0, 8), (8, 16)];
        let p = sweep(&r, vec![0, 1, 2], &mut st);
        assert_eq!(spans(&p), [(0, 8, 1), (8, 16, 2), (40, 50, 0)]);
        assert_eq!(st, TableStats::default());
    }

    #[test]
    fn subtract_cover() {
        let mut st = TableStats::default();
        let piece = |start, end, fde| Piece { start, end, fde };
        let cover = [piece(10, 20, 100), piece(30, 40, 101), piece(50, 60, 102)];
        let debug = vec![
            piece(0, 5, 0),   // untouched
            piece(5, 35, 1),  // split around [10,20) and cut at 30
            piece(40, 50, 2), // exactly between two covers
            piece(52, 58, 3), // fully covered
            piece(55, 70, 4), // tail survives
        ];
        let out = subtract(debug, &cover, &mut st.fdes_superseded_by_eh_frame);
        assert_eq!(
            spans(&out),
            [(0, 5, 0), (5, 10, 1), (20, 30, 1), (40, 50, 2), (60, 70, 4)]
        );
        assert_eq!(st.fdes_superseded_by_eh_frame, 1);
    }

    #[test]
    fn sink_merges_and_replaces() {
        let mut s = RowSink {
            rows: Vec::new(),
            invalid: [0; InvalidReason::ALL.len()],
            plt: BTreeMap::new(),
            end_of_stack: 0,
            raw: 0,
        };
        let a = UnwindRule::EndOfStack;
        let b = UnwindRule::SignalFrame;
        s.push(0, a);
        s.push(1, a); // merged
        s.push(2, b);
        s.push(2, a); // replaces b at 2, then merges into the row at 0
        s.push(3, b);
        assert_eq!(
            s.rows,
            [
                UnwindRow {
                    address: 0,
                    rule: a
                },
                UnwindRow {
                    address: 3,
                    rule: b
                }
            ]
        );
        assert_eq!(s.raw, 5);
    }

    #[test]
    fn plt_patterns() {
        let mut e = [
            0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22,
        ];
        assert_eq!(plt_threshold(&e), Some(11));
        e[6] = 0x39;
        assert_eq!(plt_threshold(&e), Some(9));
        e[6] = 0x3a;
        assert_eq!(plt_threshold(&e), Some(10));
        e[1] = 0x10; // rsp + 16: not the PLT shape
        assert_eq!(plt_threshold(&e), None);
        assert_eq!(plt_threshold(&e[..10]), None);
        assert_eq!(plt_threshold(&[]), None);
    }
}
