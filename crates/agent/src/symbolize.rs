//! Host-side symbolization of native and kernel frames.
//!
//! Go code is named from the file's `.gopclntab` (the `gopclntab` crate):
//! the Go runtime's own table, present in stripped binaries too, gives the
//! function, file, line and inlined calls. Everything else, and addresses
//! of a Go binary the table does not cover (the C code of a cgo binary),
//! goes to blazesym (symbol tables, DWARF).
//!
//! Files are read through the descriptor the tracker kept open, so a process
//! that exited or a binary deleted during the recording still symbolizes.

use blazesym::symbolize::source::{Elf, Kernel, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer as Blaze};
use blazesym::MaybeDefault;
use std::path::Path;

/// One function of a symbolized address; inlined callees come before their
/// caller (innermost first), like OTLP's `Location.lines`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymFrame {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// An inlined function (not a real frame on the stack).
    pub inlined: bool,
}

pub struct Symbolizer {
    blaze: Blaze,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new(true)
    }
}

fn code_file(ci: &blazesym::symbolize::CodeInfo<'_>) -> String {
    match &ci.dir {
        Some(dir) => dir.join(&*ci.file).to_string_lossy().into_owned(),
        None => ci.file.to_string_lossy().into_owned(),
    }
}

impl Symbolizer {
    /// `debug_info`: use DWARF (file, line, inlined functions) when present.
    pub fn new(debug_info: bool) -> Self {
        Symbolizer {
            blaze: Blaze::builder()
                .enable_code_info(debug_info)
                .enable_inlined_fns(debug_info)
                .enable_demangling(true)
                .build(),
        }
    }

    /// Symbolizes ELF virtual addresses of the file at `path`. An address
    /// with no symbol (or a file that cannot be read) gives an empty list.
    ///
    /// Addresses in Go functions get files, lines and inlined calls whatever
    /// `debug_info` says: the table that has them is always there, and
    /// reading it costs little.
    pub fn native(&self, path: &Path, addrs: &[u64], debug_info: bool) -> Vec<Vec<SymFrame>> {
        let Some(mut out) = go_frames(path, addrs) else {
            return self.blaze_native(path, addrs, debug_info);
        };
        let rest: Vec<u64> = addrs
            .iter()
            .zip(&out)
            .filter(|(_, f)| f.is_empty())
            .map(|(a, _)| *a)
            .collect();
        if !rest.is_empty() {
            let mut named = self.blaze_native(path, &rest, debug_info).into_iter();
            for f in out.iter_mut().filter(|f| f.is_empty()) {
                *f = named.next().unwrap_or_default();
            }
        }
        out
    }

    fn blaze_native(&self, path: &Path, addrs: &[u64], debug_info: bool) -> Vec<Vec<SymFrame>> {
        let mut elf = Elf::new(path);
        elf.debug_syms = debug_info;
        let src = Source::Elf(elf);
        match self.blaze.symbolize(&src, Input::VirtOffset(addrs)) {
            Ok(syms) => syms.iter().map(Self::frames).collect(),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "symbolization failed");
                vec![Vec::new(); addrs.len()]
            }
        }
    }

    /// Symbolizes kernel addresses from /proc/kallsyms.
    pub fn kernel(&self, addrs: &[u64]) -> Vec<Vec<SymFrame>> {
        let src = Source::Kernel(Kernel {
            kallsyms: MaybeDefault::Default,
            // vmlinux discovery reads large files; kallsyms has every name.
            vmlinux: MaybeDefault::None,
            ..Default::default()
        });
        match self.blaze.symbolize(&src, Input::AbsAddr(addrs)) {
            Ok(syms) => syms.iter().map(Self::frames).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "kernel symbolization failed");
                vec![Vec::new(); addrs.len()]
            }
        }
    }

    fn frames(s: &Symbolized<'_>) -> Vec<SymFrame> {
        let Symbolized::Sym(sym) = s else {
            return Vec::new();
        };
        // blazesym lists inlined functions outermost first; each one's code
        // info is the location inside that function, and the symbol's own
        // code info is the location in the outermost (real) function.
        let mut out = Vec::with_capacity(1 + sym.inlined.len());
        for f in sym.inlined.iter().rev() {
            let ci = f.code_info.as_ref();
            out.push(SymFrame {
                function: f.name.to_string(),
                file: ci.map(code_file),
                line: ci.and_then(|c| c.line),
                inlined: true,
            });
        }
        let ci = sym.code_info.as_deref();
        out.push(SymFrame {
            function: sym.name.to_string(),
            file: ci.map(code_file),
            line: ci.and_then(|c| c.line),
            inlined: false,
        });
        out
    }
}

/// Frames of `addrs` from the `.gopclntab` of the file at `path`, innermost
/// first like [`SymFrame`]s; an address no Go function holds gets an empty
/// list. `None` when the file has no table this reader can use.
fn go_frames(path: &Path, addrs: &[u64]) -> Option<Vec<Vec<SymFrame>>> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: read-only private mapping; binaries are replaced, not
    // rewritten in place, by package managers and linkers.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let tab = match gopclntab::Pclntab::parse(&map) {
        Ok(t) => t,
        Err(gopclntab::Error::NoPclntab | gopclntab::Error::NotElf) => return None,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "no Go symbols");
            return None;
        }
    };
    Some(
        addrs
            .iter()
            .map(|&a| match go_frames_at(&tab, a) {
                Ok(frames) => frames
                    .into_iter()
                    .map(|f| SymFrame {
                        function: f.function.into_owned(),
                        file: f.file.map(|s| s.into_owned()),
                        line: f.line,
                        inlined: f.inlined,
                    })
                    .collect(),
                Err(e) => {
                    tracing::debug!(path = %path.display(), address = a, error = %e, "corrupt Go symbols");
                    Vec::new()
                }
            })
            .collect(),
    )
}

/// What is at `addr`, an address of a frame (a return address less one).
/// The Go runtime stores some functions' entries as return addresses (its
/// signal restorer, `systemstack_switch` up to Go 1.20): less one, such an
/// address is in the padding before that entry, which no line of the
/// function before covers. Such a frame is the function at the entry, as
/// in Go's own tracebacks; a real call's return address less one is always
/// inside the call instruction.
fn go_frames_at<'a>(
    tab: &gopclntab::Pclntab<'a>,
    addr: u64,
) -> Result<Vec<gopclntab::Frame<'a>>, gopclntab::Error> {
    let frames = tab.frames(addr)?;
    let in_padding = frames.last().is_some_and(|f| f.line.is_none());
    if in_padding {
        if let Some(next) = tab.find(addr + 1)?.filter(|f| f.entry == addr + 1) {
            return tab.frames(next.entry);
        }
    }
    Ok(frames)
}
