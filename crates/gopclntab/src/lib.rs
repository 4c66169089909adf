//! The Go runtime's own symbol table, `.gopclntab`, read from an x86-64 ELF
//! file: the function table (entry, end, name), and per function its
//! pc-value tables — SP delta (`pcsp`), file (`pcfile`), line (`pcln`) —
//! and the calls the compiler inlined into it.
//!
//! Go's linker writes no `.eh_frame`, and `go build -ldflags='-s -w'` drops
//! the symbol table and DWARF (with it `.debug_frame`); the runtime's table
//! stays, because Go's own tracebacks and profiler need it. This crate reads
//! it so the profiler can unwind (`pcsp`) and name (`pcfile`, `pcln`,
//! inline tree) Go code in stripped binaries.
//!
//! Architecture invariants: pure Rust (no C, no build script); never touches
//! the kernel; never panics on hostile input — every offset is
//! bounds-checked and corrupt data is an [`Error`] naming what was wrong;
//! deterministic (a function of the file's bytes only).
//!
//! Written here because no well-kept Rust crate reads the current layouts
//! (the ones that exist stop at Go 1.16 or are unmaintained). The facts come
//! from Go's own sources (`src/debug/gosym/pclntab.go`,
//! `src/runtime/symtab.go`, `src/runtime/runtime2.go`,
//! `src/cmd/link/internal/ld/pcln.go`); no code is taken from them.
//!
//! # Layouts
//! | magic | Go | header | functab entry | `_func` |
//! |---|---|---|---|---|
//! | `0xfffffffa` | 1.16–1.17 | no `textStart` | (entry pointer, offset) | absolute entry; funcdata are pointers |
//! | `0xfffffff0` | 1.18–1.19 | `textStart` | (u32 entry offset, u32 offset) | funcdata are u32 offsets from `moduledata.gofunc` |
//! | `0xfffffff1` | 1.20–1.24 | as 1.18 | as 1.18 | adds `startLine`; smaller inline tree entries |
//!
//! Older layouts (Go 1.2–1.15) are [`Error::UnsupportedVersion`].
//!
//! # Finding the table
//! By section name: `.gopclntab`, or `.data.rel.ro.gopclntab` in a PIE the
//! Go linker linked itself; failing both, by the symbols `runtime.pclntab`
//! and `runtime.epclntab` (an external linker merges the table into
//! `.data.rel.ro` when it links a cgo PIE, so a stripped one of those is
//! [`Error::NoPclntab`]). A file without section headers is
//! [`Error::NoSectionHeaders`]: the runtime finds the table through
//! `runtime.firstmoduledata`, which only a symbol table (gone in such a file)
//! locates reliably.
//!
//! # Inlined calls
//! They need the inline tree, a funcdata (`FUNCDATA_InlTree`) indexed by a
//! pcdata table (`PCDATA_InlTreeIndex`). Up to Go 1.17 funcdata are
//! pointers. From 1.18 they are offsets from `moduledata.gofunc`, which no
//! section header names; this crate finds the `moduledata` by scanning the
//! writable sections for the one word that points at the table and whose
//! neighbours are the table's own slices (the pointers to its sub-tables,
//! the function count, `text`), so a stray match is rejected. In a PIE those
//! words are zero in the file and come from `R_X86_64_RELATIVE`
//! relocations, which are read too. When no moduledata passes,
//! [`Pclntab::inline`] says why and frames come without inlined calls
//! (names, files and lines of the real functions are unaffected).
//!
//! # Example
//! ```no_run
//! let data = std::fs::read("/usr/bin/some-go-program").unwrap();
//! let tab = gopclntab::Pclntab::parse(&data).unwrap();
//! for frame in tab.frames(0x4801a3).unwrap() {
//!     // Innermost (inlined) first, the real function last.
//!     println!("{} {:?}:{:?}", frame.function, frame.file, frame.line);
//! }
//! ```

mod elf;
mod pcvalue;

use std::borrow::Cow;
use std::fmt;

pub use pcvalue::{PcRange, PcValues};

use elf::Image;

/// Why a file's table could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Not an ELF file.
    NotElf,
    /// An ELF file of another kind (class, byte order, machine).
    UnsupportedElf(&'static str),
    /// The file has no section header table, so `.gopclntab` cannot be
    /// found by name.
    NoSectionHeaders,
    /// No `.gopclntab` section: not a Go binary (or not one of ours).
    NoPclntab,
    /// A table layout this crate does not read (Go before 1.16, or a future
    /// one).
    UnsupportedVersion { magic: u32 },
    /// Offsets out of bounds or values that cannot be.
    Malformed { what: &'static str, detail: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotElf => f.write_str("not an ELF file"),
            Error::UnsupportedElf(why) => f.write_str(why),
            Error::NoSectionHeaders => f.write_str(
                "no section headers: .gopclntab cannot be found (the file was stripped of them)",
            ),
            Error::NoPclntab => f.write_str("no .gopclntab section"),
            Error::UnsupportedVersion { magic } => write!(
                f,
                ".gopclntab magic {magic:#010x} is not a layout this reader knows \
                 (Go 1.16 to 1.24: 0xfffffffa, 0xfffffff0, 0xfffffff1)"
            ),
            Error::Malformed { what, detail } => write!(f, "corrupt .gopclntab {what}: {detail}"),
        }
    }
}

impl std::error::Error for Error {}

fn malformed(what: &'static str, detail: impl Into<String>) -> Error {
    Error::Malformed {
        what,
        detail: detail.into(),
    }
}

/// The table layout, by the first Go release that wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// Go 1.16 and 1.17 (magic `0xfffffffa`).
    Go116,
    /// Go 1.18 and 1.19 (magic `0xfffffff0`).
    Go118,
    /// Go 1.20 to at least 1.24 (magic `0xfffffff1`).
    Go120,
}

impl Version {
    /// The magic number that starts the table.
    pub fn magic(self) -> u32 {
        match self {
            Version::Go116 => 0xffff_fffa,
            Version::Go118 => 0xffff_fff0,
            Version::Go120 => 0xffff_fff1,
        }
    }

    fn from_magic(magic: u32) -> Option<Self> {
        [Version::Go116, Version::Go118, Version::Go120]
            .into_iter()
            .find(|v| v.magic() == magic)
    }

    /// Bytes of the fixed part of `_func`, before its pcdata offsets.
    fn func_header(self) -> usize {
        match self {
            Version::Go116 => 44,
            Version::Go118 => 40,
            Version::Go120 => 44,
        }
    }

    /// Bytes of one functab field.
    fn functab_field(self) -> usize {
        match self {
            Version::Go116 => 8,
            Version::Go118 | Version::Go120 => 4,
        }
    }

    /// Bytes of one inline tree entry (`runtime.inlinedCall`).
    fn inlined_call_size(self) -> u64 {
        match self {
            Version::Go116 | Version::Go118 => 20,
            Version::Go120 => 16,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::Go116 => "Go 1.16-1.17",
            Version::Go118 => "Go 1.18-1.19",
            Version::Go120 => "Go 1.20+",
        })
    }
}

/// `_func.flag` bits (Go 1.17 on; always 0 before).
pub mod flag {
    /// The function is the outermost frame of its stack (`goexit`,
    /// `mstart`, `rt0_go`): a traceback that reaches it is complete.
    pub const TOP_FRAME: u8 = 1;
    /// The function writes SP other than by adding a constant (stack
    /// switches): its pcsp table does not describe every instruction.
    pub const SP_WRITE: u8 = 2;
    /// Written in assembly.
    pub const ASM: u8 = 4;
}

const PCDATA_INL_TREE_INDEX: u32 = 2;
const FUNCDATA_INL_TREE: u8 = 3;
/// Inlining depth past which an inline tree is treated as looping.
const MAX_INLINE_DEPTH: usize = 1024;

/// One function of the table. Plain data: ask the [`Pclntab`] for its name
/// and tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    /// Index in the function table.
    pub index: usize,
    /// First instruction (ELF virtual address).
    pub entry: u64,
    /// The next function's entry (or the end of the text): the function's
    /// code and the padding after it.
    pub end: u64,
    /// `_func.funcID` (its values change between Go releases).
    pub func_id: u8,
    /// `_func.flag`: [`flag`] bits.
    pub flag: u8,
    /// Offset of the `_func` record from the start of the function table.
    record: usize,
    name_off: i32,
    pcsp: u32,
    pcfile: u32,
    pcln: u32,
    npcdata: u32,
    cu_offset: u32,
    nfuncdata: u8,
}

/// A function at an address, with where in it: one element of what
/// [`Pclntab::frames`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub function: Cow<'a, str>,
    pub file: Option<Cow<'a, str>>,
    /// Line number (Go lines start at 1; a table's 0 or negative is `None`).
    pub line: Option<u32>,
    /// Inlined into the next frame of the list (not a frame on the stack).
    pub inlined: bool,
}

/// Whether inlined calls can be listed, and if not why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InlineInfo {
    /// Go 1.16–1.17: funcdata are pointers.
    Pointers,
    /// Go 1.18+: funcdata are offsets from this `moduledata.gofunc`.
    GoFunc(u64),
    /// Go 1.18+ and no moduledata that points at this table was found.
    Unavailable(String),
}

/// A parsed `.gopclntab`, borrowing the file's bytes.
pub struct Pclntab<'a> {
    image: Image<'a>,
    version: Version,
    /// Virtual address of the table.
    addr: u64,
    data: &'a [u8],
    nfunc: usize,
    text_start: u64,
    funcnametab: &'a [u8],
    cutab: &'a [u8],
    filetab: &'a [u8],
    pctab: &'a [u8],
    /// From `pclnOffset` to the end: the function table, then the records.
    funcs: &'a [u8],
    funcs_off: usize,
    inline: InlineInfo,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

/// The NUL-terminated string at `off`.
fn c_str<'b>(b: &'b [u8], off: usize, what: &'static str) -> Result<Cow<'b, str>, Error> {
    let rest = b.get(off..).ok_or_else(|| {
        malformed(
            what,
            format!("offset {off:#x} past the end ({:#x})", b.len()),
        )
    })?;
    let n = rest
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| malformed(what, format!("string at {off:#x} is not terminated")))?;
    Ok(String::from_utf8_lossy(&rest[..n]))
}

impl<'a> Pclntab<'a> {
    /// Finds and checks the table of the ELF file `data`. Reads the header
    /// and the function table (which must be sorted); the rest is read on
    /// demand, and checked then.
    pub fn parse(data: &'a [u8]) -> Result<Self, Error> {
        let image = Image::parse(data)?;
        let (addr, tab) = image.pclntab;
        let magic = u32_at(tab, 0).ok_or_else(|| malformed("header", "shorter than its magic"))?;
        let version = Version::from_magic(magic).ok_or(Error::UnsupportedVersion { magic })?;
        let header_words = match version {
            Version::Go116 => 7,
            Version::Go118 | Version::Go120 => 8,
        };
        if tab.len() < 8 + 8 * header_words {
            return Err(malformed(
                "header",
                format!("{} bytes, shorter than its header", tab.len()),
            ));
        }
        let (pad, min_lc, ptr_size) = (u16::from_le_bytes([tab[4], tab[5]]), tab[6], tab[7]);
        if pad != 0 || min_lc != 1 || ptr_size != 8 {
            return Err(malformed(
                "header",
                format!(
                    "padding {pad}, instruction quantum {min_lc}, pointer size {ptr_size} \
                     (x86-64 tables have 0, 1, 8)"
                ),
            ));
        }
        let word = |i: usize| u64_at(tab, 8 + 8 * i).unwrap_or(0);
        let nfunc = word(0);
        let (text_start, offsets) = match version {
            Version::Go116 => (0, [word(2), word(3), word(4), word(5), word(6)]),
            Version::Go118 | Version::Go120 => {
                // The linker's value, relocated in a PIE; `.text` when the
                // file leaves it for the loader (as debug/gosym does).
                let mut t = image.word(addr.wrapping_add(8 + 8 * 2)).unwrap_or(word(2));
                if t == 0 {
                    t = image.text.unwrap_or(0);
                }
                (t, [word(3), word(4), word(5), word(6), word(7)])
            }
        };
        let sub = |i: usize, what: &'static str| -> Result<(&'a [u8], usize), Error> {
            let off = offsets[i];
            usize::try_from(off)
                .ok()
                .filter(|&o| o <= tab.len())
                .map(|o| (&tab[o..], o))
                .ok_or_else(|| {
                    malformed(
                        "header",
                        format!(
                            "{what} offset {off:#x} past the table's end ({:#x})",
                            tab.len()
                        ),
                    )
                })
        };
        let (funcnametab, _) = sub(0, "function name table")?;
        let (cutab, _) = sub(1, "compilation unit table")?;
        let (filetab, _) = sub(2, "file table")?;
        let (pctab, _) = sub(3, "pc-value tables")?;
        let (funcs, funcs_off) = sub(4, "function table")?;
        let field = version.functab_field() as u64;
        let nfunc_ok = nfunc
            .checked_mul(2)
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(field))
            .is_some_and(|size| size <= funcs.len() as u64);
        if !nfunc_ok {
            return Err(malformed(
                "function table",
                format!("{nfunc} functions do not fit in {} bytes", funcs.len()),
            ));
        }
        let mut t = Pclntab {
            image,
            version,
            addr,
            data: tab,
            nfunc: nfunc as usize,
            text_start,
            funcnametab,
            cutab,
            filetab,
            pctab,
            funcs,
            funcs_off,
            inline: InlineInfo::Pointers,
        };
        let mut prev = 0;
        for i in 0..=t.nfunc {
            let e = t.entry(i)?;
            if e < prev {
                return Err(malformed(
                    "function table",
                    format!("entry {i} at {e:#x} is below the one before ({prev:#x})"),
                ));
            }
            prev = e;
        }
        t.inline = match version {
            Version::Go116 => InlineInfo::Pointers,
            Version::Go118 | Version::Go120 => match t.find_gofunc() {
                Ok(g) => InlineInfo::GoFunc(g),
                Err(why) => InlineInfo::Unavailable(why),
            },
        };
        Ok(t)
    }

    /// The table layout.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Virtual address of the table.
    pub fn address(&self) -> u64 {
        self.addr
    }

    /// The table's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }

    /// Base of the function entry offsets (Go 1.18+; 0 before).
    pub fn text_start(&self) -> u64 {
        self.text_start
    }

    /// Number of functions.
    pub fn len(&self) -> usize {
        self.nfunc
    }

    /// Whether the table lists no function.
    pub fn is_empty(&self) -> bool {
        self.nfunc == 0
    }

    /// Whether inlined calls are listed by [`Pclntab::frames`].
    pub fn inline(&self) -> &InlineInfo {
        &self.inline
    }

    /// `len` bytes of the file at virtual address `vaddr` (machine code, for
    /// instance), when a loaded segment holds them.
    pub fn code(&self, vaddr: u64, len: u64) -> Option<&'a [u8]> {
        self.image.bytes(vaddr, len)
    }

    /// Virtual address of byte `off` of the function table. Section
    /// addresses are the file's word: hostile ones wrap rather than
    /// overflow.
    fn vaddr_of(&self, off: usize) -> u64 {
        self.addr.wrapping_add((self.funcs_off + off) as u64)
    }

    /// Field `k` (0 or 1) of functab entry `i`; entry `nfunc` has only its
    /// first field (the end of the text).
    fn functab(&self, i: usize, k: usize) -> Result<u64, Error> {
        let field = self.version.functab_field();
        let off = (2 * i + k) * field;
        let v = match field {
            4 => u32_at(self.funcs, off).map(u64::from),
            _ => {
                // A pointer: relocated in a PIE.
                let vaddr = self.vaddr_of(off);
                self.image.word(vaddr).or_else(|| u64_at(self.funcs, off))
            }
        };
        v.ok_or_else(|| malformed("function table", format!("entry {i} past its end")))
    }

    /// Entry address of function `i` (`i == len()`: the end of the text).
    fn entry(&self, i: usize) -> Result<u64, Error> {
        let v = self.functab(i, 0)?;
        Ok(match self.version {
            Version::Go116 => v,
            Version::Go118 | Version::Go120 => self.text_start.wrapping_add(v),
        })
    }

    /// Function `i` (`i < len()`).
    pub fn function(&self, i: usize) -> Result<Function, Error> {
        if i >= self.nfunc {
            return Err(malformed(
                "function table",
                format!("no function {i} (there are {})", self.nfunc),
            ));
        }
        let entry = self.entry(i)?;
        let end = self.entry(i + 1)?;
        let record = usize::try_from(self.functab(i, 1)?)
            .ok()
            .filter(|&r| r < self.funcs.len())
            .ok_or_else(|| {
                malformed(
                    "function table",
                    format!("function {i}'s record is past the table"),
                )
            })?;
        let v = self.version;
        let rec = self
            .funcs
            .get(record..record.saturating_add(v.func_header()))
            .ok_or_else(|| {
                malformed(
                    "function record",
                    format!("function {i} at {record:#x} runs past the table"),
                )
            })?;
        let u = |o: usize| u32_at(rec, o).unwrap_or(0);
        // Offsets of the fields after the entry.
        let b = match v {
            Version::Go116 => 8,
            Version::Go118 | Version::Go120 => 4,
        };
        let rec_entry = match v {
            Version::Go116 => {
                let vaddr = self.vaddr_of(record);
                self.image
                    .word(vaddr)
                    .or_else(|| u64_at(rec, 0))
                    .unwrap_or(0)
            }
            Version::Go118 | Version::Go120 => self.text_start.wrapping_add(u64::from(u(0))),
        };
        if rec_entry != entry {
            return Err(malformed(
                "function record",
                format!("function {i}: the table says entry {entry:#x}, its record {rec_entry:#x}"),
            ));
        }
        let tail = match v {
            Version::Go116 | Version::Go120 => 40,
            Version::Go118 => 36,
        };
        Ok(Function {
            index: i,
            entry,
            end,
            func_id: rec[tail],
            flag: rec[tail + 1],
            record,
            name_off: u(b) as i32,
            pcsp: u(b + 12),
            pcfile: u(b + 16),
            pcln: u(b + 20),
            npcdata: u(b + 24),
            cu_offset: u(b + 28),
            nfuncdata: rec[tail + 3],
        })
    }

    /// Every function, in address order.
    pub fn functions(&self) -> impl Iterator<Item = Result<Function, Error>> + '_ {
        (0..self.nfunc).map(|i| self.function(i))
    }

    /// The function whose `[entry, end)` holds `pc`.
    pub fn find(&self, pc: u64) -> Result<Option<Function>, Error> {
        if self.nfunc == 0 || pc < self.entry(0)? || pc >= self.entry(self.nfunc)? {
            return Ok(None);
        }
        // Entries are sorted (checked by `parse`): the last one <= pc.
        let (mut lo, mut hi) = (0, self.nfunc);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.entry(mid)? <= pc {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.function(lo).map(Some)
    }

    /// The function's name (as Go prints it: `main.main`,
    /// `net/http.(*conn).serve`).
    pub fn name(&self, f: &Function) -> Result<Cow<'a, str>, Error> {
        self.name_at(f.name_off)
    }

    fn name_at(&self, off: i32) -> Result<Cow<'a, str>, Error> {
        let off = usize::try_from(off)
            .map_err(|_| malformed("function name table", format!("negative offset {off}")))?;
        c_str(self.funcnametab, off, "function name table")
    }

    fn pc_table(&self, f: &Function, off: u32, what: &'static str) -> PcValues<'a> {
        match self.pctab.get(off as usize..) {
            Some(data) if off != 0 => PcValues::new(data, f.entry, f.end, what),
            // Offset 0 is "no table" (and the pctab's first byte is a 0
            // that no table starts at).
            _ => PcValues::empty(what),
        }
    }

    /// The function's SP delta table: bytes below the return address the
    /// function's frame occupies at each pc (0 at the entry).
    pub fn pcsp(&self, f: &Function) -> PcValues<'a> {
        self.pc_table(f, f.pcsp, "pcsp table")
    }

    /// The function's file index table (an index into its compilation
    /// unit's files; see [`Pclntab::file`]).
    pub fn pcfile(&self, f: &Function) -> PcValues<'a> {
        self.pc_table(f, f.pcfile, "pcfile table")
    }

    /// The function's line table.
    pub fn pcln(&self, f: &Function) -> PcValues<'a> {
        self.pc_table(f, f.pcln, "pcln table")
    }

    /// The function's pcdata table `k`, if it has one.
    pub fn pcdata(&self, f: &Function, k: u32) -> Result<Option<PcValues<'a>>, Error> {
        if k >= f.npcdata {
            return Ok(None);
        }
        let at = f.record + self.version.func_header() + 4 * k as usize;
        let off = u32_at(self.funcs, at).ok_or_else(|| {
            malformed(
                "function record",
                format!("pcdata {k} of function {} past the table", f.index),
            )
        })?;
        Ok((off != 0).then(|| self.pc_table(f, off, "pcdata table")))
    }

    /// File `fileno` of the function's compilation unit.
    pub fn file(&self, f: &Function, fileno: i32) -> Result<Option<Cow<'a, str>>, Error> {
        let Ok(fileno) = u32::try_from(fileno) else {
            return Ok(None);
        };
        let idx = f
            .cu_offset
            .checked_add(fileno)
            .ok_or_else(|| malformed("compilation unit table", "index overflows".to_string()))?;
        let at = (idx as usize).saturating_mul(4);
        let off = u32_at(self.cutab, at).ok_or_else(|| {
            malformed(
                "compilation unit table",
                format!("entry {idx} past the table"),
            )
        })?;
        if off == u32::MAX {
            return Ok(None);
        }
        c_str(self.filetab, off as usize, "file table").map(Some)
    }

    /// File and line of `pc` in `f` (the innermost inlined function's
    /// position when code was inlined there).
    pub fn file_line(
        &self,
        f: &Function,
        pc: u64,
    ) -> Result<(Option<Cow<'a, str>>, Option<u32>), Error> {
        let file = match self.pcfile(f).value_at(pc)? {
            Some(n) => self.file(f, n)?,
            None => None,
        };
        let line = self
            .pcln(f)
            .value_at(pc)?
            .and_then(|l| u32::try_from(l).ok())
            .filter(|&l| l > 0);
        Ok((file, line))
    }

    /// Address of the function's funcdata `k`, if it has one.
    fn funcdata(&self, f: &Function, k: u8) -> Result<Option<u64>, Error> {
        if k >= f.nfuncdata {
            return Ok(None);
        }
        let base = f.record + self.version.func_header() + 4 * f.npcdata as usize;
        let bad = || {
            malformed(
                "function record",
                format!("funcdata {k} of function {} past the table", f.index),
            )
        };
        match &self.inline {
            InlineInfo::Pointers => {
                // Pointer-aligned after the pcdata offsets.
                let mut at = base;
                if self.vaddr_of(at) & 4 != 0 {
                    at += 4;
                }
                at += 8 * k as usize;
                let vaddr = self.vaddr_of(at);
                let p = self
                    .image
                    .word(vaddr)
                    .or_else(|| u64_at(self.funcs, at))
                    .ok_or_else(bad)?;
                Ok((p != 0).then_some(p))
            }
            InlineInfo::GoFunc(gofunc) => {
                let off = u32_at(self.funcs, base + 4 * k as usize).ok_or_else(bad)?;
                Ok((off != u32::MAX).then(|| gofunc.wrapping_add(u64::from(off))))
            }
            InlineInfo::Unavailable(_) => Ok(None),
        }
    }

    /// What is at `pc`: the inlined calls there, innermost first, then the
    /// function itself (`inlined: false`, always last). Empty when no
    /// function holds `pc`.
    pub fn frames(&self, pc: u64) -> Result<Vec<Frame<'a>>, Error> {
        let Some(f) = self.find(pc)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut at = pc;
        let tree = self.funcdata(&f, FUNCDATA_INL_TREE)?;
        if let (Some(tree), Some(index)) = (tree, self.pcdata(&f, PCDATA_INL_TREE_INDEX)?) {
            let size = self.version.inlined_call_size();
            let mut depth = 0;
            while let Some(ix) = index.clone().value_at(at)?.filter(|&ix| ix >= 0) {
                depth += 1;
                if depth > MAX_INLINE_DEPTH {
                    return Err(malformed(
                        "inline tree",
                        format!(
                            "function {} nests more than {MAX_INLINE_DEPTH} calls at {pc:#x}",
                            f.index
                        ),
                    ));
                }
                let entry = tree.checked_add(u64::from(ix as u32) * size);
                let call = entry
                    .and_then(|e| self.image.bytes(e, size))
                    .ok_or_else(|| {
                        malformed(
                            "inline tree",
                            format!("entry {ix} of function {} is outside the file", f.index),
                        )
                    })?;
                let (name_off, parent_pc) = match self.version {
                    // parent i16, funcID, pad, file i32, line i32, func_ i32, parentPc i32
                    Version::Go116 | Version::Go118 => (u32_at(call, 12), u32_at(call, 16)),
                    // funcID, pad[3], nameOff i32, parentPc i32, startLine i32
                    Version::Go120 => (u32_at(call, 4), u32_at(call, 8)),
                };
                let (name_off, parent_pc) = (name_off.unwrap_or(0), parent_pc.unwrap_or(0));
                let (file, line) = self.file_line(&f, at)?;
                out.push(Frame {
                    function: self.name_at(name_off as i32)?,
                    file,
                    line,
                    inlined: true,
                });
                // The call site: an instruction of the caller whose position
                // is the call.
                let next = f.entry.wrapping_add(u64::from(parent_pc));
                if next < f.entry || next >= f.end {
                    return Err(malformed(
                        "inline tree",
                        format!(
                            "entry {ix} of function {} puts its call site at {next:#x}, outside the function",
                            f.index
                        ),
                    ));
                }
                at = next;
            }
        }
        let (file, line) = self.file_line(&f, at)?;
        out.push(Frame {
            function: self.name(&f)?,
            file,
            line,
            inlined: false,
        });
        Ok(out)
    }

    /// `moduledata.gofunc` (Go 1.18+), from the moduledata that describes
    /// this table. `Err` says why none was found.
    fn find_gofunc(&self) -> Result<u64, String> {
        // Word indices in moduledata: the table's slices, ftab's length,
        // text, and gofunc (after covctrs/ecovctrs from Go 1.20).
        let (text_word, gofunc_word) = match self.version {
            Version::Go118 => (22, 38),
            _ => (22, 40),
        };
        let offsets = [3usize, 4, 5, 6, 7].map(|i| u64_at(self.data, 8 + 8 * i).unwrap_or(0));
        let checks: [(usize, u64); 7] = [
            (1, self.addr.wrapping_add(offsets[0])),  // funcnametab
            (4, self.addr.wrapping_add(offsets[1])),  // cutab
            (7, self.addr.wrapping_add(offsets[2])),  // filetab
            (10, self.addr.wrapping_add(offsets[3])), // pctab
            (13, self.addr.wrapping_add(offsets[4])), // pclntable
            (16, self.addr.wrapping_add(offsets[4])), // ftab
            (17, self.nfunc as u64 + 1),              // len(ftab)
        ];
        let word = |md: u64, i: usize| self.image.word(md.wrapping_add(8 * i as u64));
        let is_moduledata = |md: u64| {
            checks.iter().all(|&(i, v)| word(md, i) == Some(v))
                && word(md, text_word) == Some(self.text_start)
        };
        // Where the word is in the file, then where a relocation puts it.
        let mut candidates: Vec<u64> = Vec::new();
        for &(addr, bytes) in &self.image.writable {
            let skip = (8 - (addr % 8) as usize) % 8;
            let Some(aligned) = bytes.get(skip..) else {
                continue;
            };
            for (k, w) in aligned.chunks_exact(8).enumerate() {
                if u64::from_le_bytes(w.try_into().unwrap_or_default()) == self.addr {
                    candidates.push(addr.wrapping_add((skip + 8 * k) as u64));
                }
            }
        }
        candidates.extend(self.image.relocated_to(self.addr));
        let mut found: Vec<u64> = candidates
            .into_iter()
            .filter(|&md| is_moduledata(md))
            .filter_map(|md| word(md, gofunc_word))
            .filter(|&g| g != 0 && self.image.bytes(g, 1).is_some())
            .collect();
        found.sort_unstable();
        found.dedup();
        match found.as_slice() {
            [g] => Ok(*g),
            [] => Err("no moduledata in the writable sections points at .gopclntab".into()),
            _ => Err(format!(
                "{} moduledata candidates disagree on gofunc",
                found.len()
            )),
        }
    }
}
