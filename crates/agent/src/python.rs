//! CPython: recognising an interpreter file, describing it to the eBPF
//! Python unwinder, and naming the frames it reports.
//!
//! The kernel side walks interpreter frames and reports each as (code object
//! address, instruction, version); everything else happens here. A file is an
//! interpreter when its name is `python3.X` or `libpython3.X…` and it defines
//! both `_PyEval_EvalFrameDefault` (the loop whose native frames Python
//! frames replace) and `_PyRuntime` (where the thread states are found). Its
//! version must be in `spec/python.json`; from 3.11 the exported `Py_Version`
//! must agree with the name, and from 3.13 the `_Py_DebugOffsets` CPython
//! publishes at the start of `_PyRuntime` must agree with the spec's offsets,
//! so a build we cannot read stays native rather than yield wrong frames.
//!
//! Code objects are read from the process (`process_vm_readv`) once per
//! process and address: qualified name (plain name before 3.11), file name,
//! first line and line table. A code object is only trusted when its type is
//! named `code`.

use object::{Object, ObjectSection, ObjectSymbol};
use std::io;
use std::path::Path;
use std::sync::Arc;
use support::abi::{PythonFile, PYTHON_FRAME_READ_MAX};
use support::python::{LineTable, PythonOffsets, PythonVersion, PYTHON_VERSIONS};

/// The spec entry of a CPython version.
pub fn version(major: u8, minor: u8) -> Option<&'static PythonVersion> {
    PYTHON_VERSIONS
        .iter()
        .find(|v| v.major == major && v.minor == minor)
}

/// The version in an interpreter's file name: `python3.11`, `python3.7m`,
/// `libpython3.12.so.1.0`, `libpython3.9d.so`.
pub fn version_from_name(path: &Path) -> Option<(u8, u8)> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_prefix("lib").unwrap_or(name);
    let rest = rest.strip_prefix("python")?;
    let (major, rest) = rest.split_once('.')?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    // What may follow the version: ABI flags (m, d, t), then ".so…" for
    // the library and nothing for the executable.
    let tail = rest[digits.len()..].trim_start_matches(['m', 'd', 't']);
    let tail_ok = if tail.starts_with(".so") {
        name.starts_with("lib")
    } else {
        tail.is_empty()
    };
    if !tail_ok || digits.is_empty() {
        return None;
    }
    Some((major.parse().ok()?, digits.parse().ok()?))
}

/// A CPython interpreter file the Python unwinder can walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interpreter {
    pub version: &'static PythonVersion,
    /// `_PyEval_EvalFrameDefault`: [start, end) ELF virtual addresses.
    pub loop_start: u64,
    pub loop_end: u64,
    /// `_PyRuntime`'s ELF virtual address.
    pub runtime_vaddr: u64,
}

/// What [`recognise`] made of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recognised {
    /// Not named like a CPython interpreter, or without its loop (a
    /// `python3.X` launcher that links libpython, or a stripped binary).
    NotPython,
    Python(Interpreter),
    /// A CPython interpreter this version of the profiler does not read.
    Rejected(String),
}

/// Whether the ELF file `data` at `path` is a CPython interpreter we read.
pub fn recognise(path: &Path, data: &[u8]) -> Recognised {
    let Some((major, minor)) = version_from_name(path) else {
        return Recognised::NotPython;
    };
    let Ok(elf) = object::File::parse(data) else {
        return Recognised::NotPython;
    };
    let mut eval = None;
    let mut runtime = None;
    let mut py_version = None;
    for sym in elf.dynamic_symbols().chain(elf.symbols()) {
        match sym.name() {
            Ok("_PyEval_EvalFrameDefault") if sym.size() > 0 => {
                eval = Some((sym.address(), sym.address() + sym.size()))
            }
            Ok("_PyRuntime") => runtime = Some(sym.address()),
            Ok("Py_Version") => py_version = Some(sym.address()),
            _ => {}
        }
    }
    let Some((loop_start, loop_end)) = eval else {
        return Recognised::NotPython;
    };
    let Some(v) = version(major, minor) else {
        return Recognised::Rejected(format!(
            "CPython {major}.{minor} is not in spec/python.json"
        ));
    };
    let Some(runtime_vaddr) = runtime else {
        return Recognised::Rejected("no _PyRuntime symbol".into());
    };
    if loop_end > u64::from(u32::MAX) {
        return Recognised::Rejected("the interpreter loop lies above 4 GiB".into());
    }
    if let Some(at) = py_version {
        // PY_VERSION_HEX: 0xMMmmpprs.
        match read_at(&elf, at, 4).map(|b| u32::from_le_bytes(b.try_into().unwrap())) {
            Some(hex) if (hex >> 24) as u8 == major && (hex >> 16) as u8 == minor => {}
            Some(hex) => {
                return Recognised::Rejected(format!(
                    "named {major}.{minor} but Py_Version is {:#x}",
                    hex
                ))
            }
            None => {}
        }
    }
    if (major, minor) >= (3, 13) {
        if let Err(why) = check_debug_offsets(&elf, runtime_vaddr, v) {
            return Recognised::Rejected(why);
        }
    }
    if u64::from(frame_read_size(&v.offsets)) > PYTHON_FRAME_READ_MAX {
        return Recognised::Rejected("frame fields beyond what the kernel side reads".into());
    }
    Recognised::Python(Interpreter {
        version: v,
        loop_start,
        loop_end,
        runtime_vaddr,
    })
}

/// `len` bytes of the file's initialized data at virtual address `at`.
fn read_at<'a>(elf: &object::File<'a>, at: u64, len: u64) -> Option<&'a [u8]> {
    let section = elf
        .sections()
        .find(|s| s.address() <= at && at + len <= s.address() + s.size())?;
    let data = section.data().ok()?;
    let from = (at - section.address()) as usize;
    data.get(from..from + len as usize)
}

/// Compares CPython 3.13's `_Py_DebugOffsets` (the head of `_PyRuntime`)
/// with the offsets of the spec. Positions are those of 3.13's struct.
fn check_debug_offsets(
    elf: &object::File<'_>,
    runtime: u64,
    v: &PythonVersion,
) -> Result<(), String> {
    let bytes = read_at(elf, runtime, 352)
        .ok_or_else(|| "_PyRuntime is not initialized data in the file".to_string())?;
    if &bytes[..8] != b"xdebugpy" {
        return Err("_PyRuntime does not start with _Py_DebugOffsets".into());
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let o = &v.offsets;
    let expected: [(&str, usize, Option<u16>); 13] = [
        (
            "runtime_state.interpreters_head",
            40,
            Some(o.runtime_interpreters_head),
        ),
        (
            "interpreter_state.threads_head",
            72,
            Some(o.interpreter_threads_head),
        ),
        ("thread_state.next", 168, Some(o.thread_next)),
        ("thread_state.current_frame", 184, Some(o.thread_frame)),
        ("thread_state.thread_id", 192, Some(o.thread_id)),
        ("interpreter_frame.previous", 232, Some(o.frame_previous)),
        ("interpreter_frame.executable", 240, Some(o.frame_code)),
        (
            "interpreter_frame.instr_ptr",
            248,
            Some(o.frame_instruction),
        ),
        ("interpreter_frame.owner", 264, o.frame_owner),
        ("code_object.filename", 280, Some(o.code_filename)),
        ("code_object.qualname", 296, o.code_qualname),
        ("code_object.linetable", 304, Some(o.code_linetable)),
        ("code_object.co_code_adaptive", 344, o.code_instructions),
    ];
    if word(16) != 0 {
        return Err("a free-threaded build (its layouts differ)".into());
    }
    for (name, at, want) in expected {
        let got = word(at);
        if want.map(u64::from) != Some(got) {
            return Err(format!(
                "_Py_DebugOffsets.{name} is {got}, spec/python.json says {want:?}"
            ));
        }
    }
    Ok(())
}

/// The python_files value for an interpreter.
pub fn python_file(i: &Interpreter) -> PythonFile {
    let v = i.version;
    let o = &v.offsets;
    PythonFile {
        runtime_vaddr: i.runtime_vaddr,
        frame_layout: v.frame_layout as u32,
        version: (u32::from(v.major) << 8) | u32::from(v.minor),
        runtime_interpreters_head: o.runtime_interpreters_head,
        interpreter_threads_head: o.interpreter_threads_head,
        thread_next: o.thread_next,
        thread_id: o.thread_id,
        thread_frame: o.thread_frame,
        thread_frame_via_cframe: u8::from(o.cframe_current_frame.is_some()),
        frame_read_size: frame_read_size(o) as u8,
        cframe_current_frame: o.cframe_current_frame.unwrap_or(0),
        frame_previous: o.frame_previous,
        frame_code: o.frame_code,
        frame_instruction: o.frame_instruction,
        frame_is_entry: o.frame_is_entry.unwrap_or(0),
        frame_owner: o.frame_owner.unwrap_or(0),
    }
}

/// Bytes of a frame the kernel reads: up to the end of the last field it
/// uses (an int for f_lasti up to 3.10, pointers, one-byte flags).
fn frame_read_size(o: &PythonOffsets) -> u16 {
    let ends = [
        o.frame_previous + 8,
        o.frame_code + 8,
        o.frame_instruction + if o.frame_owner.is_none() { 4 } else { 8 },
        o.frame_owner.map_or(0, |x| x + 1),
        o.frame_is_entry.map_or(0, |x| x + 1),
    ];
    ends.into_iter().max().unwrap_or(0)
}

/// The spec entry for a frame's packed version (major << 8 | minor).
pub fn version_of_frame(packed: u16) -> Option<&'static PythonVersion> {
    version((packed >> 8) as u8, packed as u8)
}

/// What a Python frame's code object says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeInfo {
    /// Qualified name (3.11+), else the plain name.
    pub name: Arc<str>,
    pub file: Arc<str>,
    pub first_line: u32,
    line_table: Vec<u8>,
    format: LineTable,
    /// Offset of the instructions in the code object (3.11+).
    instructions: u16,
}

/// Reads another process's memory.
pub trait Memory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// A live process, through `process_vm_readv` (no ptrace stop).
pub struct ProcessMemory(pub u32);

impl Memory for ProcessMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: one local iovec over `buf`, which outlives the call; the
        // remote address is only read by the kernel, which checks it.
        let n = unsafe { libc::process_vm_readv(self.0 as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != buf.len() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
        }
        Ok(())
    }
}

fn read_u64(m: &dyn Memory, addr: u64) -> io::Result<u64> {
    let mut b = [0u8; 8];
    m.read(addr, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Longest string or line table read from a process.
const MAX_STRING: u64 = 4096;
const MAX_LINE_TABLE: u64 = 1 << 20;

/// A `str` object's text (compact strings: every identifier and file name).
fn read_unicode(m: &dyn Memory, addr: u64, o: &PythonOffsets) -> io::Result<String> {
    let mut head = [0u8; 8];
    m.read(addr + u64::from(o.unicode_length), &mut head)?;
    let length = u64::from_le_bytes(head);
    m.read(addr + u64::from(o.unicode_state), &mut head[..4])?;
    let state = u32::from_le_bytes(head[..4].try_into().unwrap());
    let kind = (state >> 2) & 7;
    let compact = (state >> 5) & 1 == 1;
    let ascii = (state >> 6) & 1 == 1;
    if !compact || length > MAX_STRING {
        return Err(bad("not a compact string"));
    }
    let data = addr
        + u64::from(if ascii {
            o.unicode_ascii_size
        } else {
            o.unicode_compact_size
        });
    let width = match kind {
        1 | 2 | 4 => u64::from(kind),
        _ => return Err(bad(format!("string kind {kind}"))),
    };
    let mut raw = vec![0u8; (length * width) as usize];
    m.read(data, &mut raw)?;
    Ok(match width {
        1 => raw.iter().map(|&b| char::from(b)).collect(),
        2 => char::decode_utf16(
            raw.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]])),
        )
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect(),
        _ => raw
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_le_bytes(c.try_into().unwrap()))
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
    })
}

fn read_bytes(m: &dyn Memory, addr: u64, o: &PythonOffsets) -> io::Result<Vec<u8>> {
    let size = read_u64(m, addr + u64::from(o.bytes_size))?;
    if size > MAX_LINE_TABLE {
        return Err(bad("line table too long"));
    }
    let mut raw = vec![0u8; size as usize];
    m.read(addr + u64::from(o.bytes_data), &mut raw)?;
    Ok(raw)
}

/// Reads the code object at `addr`, after checking its type is `code`.
pub fn read_code(m: &dyn Memory, addr: u64, v: &PythonVersion) -> io::Result<CodeInfo> {
    let o = &v.offsets;
    let ty = read_u64(m, addr + u64::from(o.object_type))?;
    let name_ptr = read_u64(m, ty + u64::from(o.type_name))?;
    let mut type_name = [0u8; 5];
    m.read(name_ptr, &mut type_name)?;
    if &type_name != b"code\0" {
        return Err(bad("not a code object"));
    }
    let name_at = o.code_qualname.unwrap_or(o.code_name);
    let name = read_unicode(m, read_u64(m, addr + u64::from(name_at))?, o)?;
    let file = read_unicode(m, read_u64(m, addr + u64::from(o.code_filename))?, o)?;
    let mut first = [0u8; 4];
    m.read(addr + u64::from(o.code_firstlineno), &mut first)?;
    let line_table = read_bytes(m, read_u64(m, addr + u64::from(o.code_linetable))?, o)?;
    Ok(CodeInfo {
        name: name.into(),
        file: file.into(),
        first_line: i32::from_le_bytes(first).max(0) as u32,
        line_table,
        format: v.line_table,
        instructions: o.code_instructions.unwrap_or(0),
    })
}

impl CodeInfo {
    /// The source line of a frame's instruction (python_frame_data), or the
    /// first line when the table has none for it.
    pub fn line(&self, instruction: u64) -> u32 {
        let line = match self.format {
            LineTable::Lnotab => lnotab_line(&self.line_table, self.first_line, instruction),
            LineTable::AddressRanges => {
                // f_lasti counts code units of 2 bytes; -1 before the first.
                let lasti = instruction as u32 as i32;
                let addr = (lasti.max(0) as u64) * 2;
                address_ranges_line(&self.line_table, self.first_line, addr)
            }
            LineTable::Locations => {
                let unit = instruction.saturating_sub(u64::from(self.instructions)) / 2;
                locations_line(&self.line_table, self.first_line, unit)
            }
        };
        line.filter(|&l| l > 0).unwrap_or(self.first_line)
    }
}

/// 3.8, 3.9: `co_lnotab`, (byte increment, signed line increment) pairs.
fn lnotab_line(table: &[u8], first: u32, lasti: u64) -> Option<u32> {
    let mut line = i64::from(first);
    let mut addr = 0u64;
    for pair in table.chunks_exact(2) {
        addr += u64::from(pair[0]);
        if addr > lasti {
            break;
        }
        line += i64::from(pair[1] as i8);
    }
    u32::try_from(line).ok()
}

/// 3.10: PEP 626 address ranges, (byte length, signed line delta or -128
/// for none) pairs.
fn address_ranges_line(table: &[u8], first: u32, addr: u64) -> Option<u32> {
    let mut line = i64::from(first);
    let mut end = 0u64;
    for pair in table.chunks_exact(2) {
        let start = end;
        end += u64::from(pair[0]);
        let delta = pair[1] as i8;
        if delta != -128 {
            line += i64::from(delta);
        }
        if start <= addr && addr < end {
            return if delta == -128 {
                None
            } else {
                u32::try_from(line).ok()
            };
        }
    }
    None
}

/// 3.11+: the location table. Each entry starts with a byte with bit 7 set:
/// bits 3..6 the kind, bits 0..2 the code units covered minus one; only the
/// line matters here.
fn locations_line(table: &[u8], first: u32, unit: u64) -> Option<u32> {
    let mut line = i64::from(first);
    let mut addr = 0u64;
    let mut at = 0usize;
    while at < table.len() {
        let b = table[at];
        let kind = (b >> 3) & 15;
        let len = u64::from(b & 7) + 1;
        let delta = match kind {
            15 => 0,
            13 | 14 => signed_varint(&table[at + 1..]),
            10..=12 => i64::from(kind - 10),
            _ => 0,
        };
        line += delta;
        if addr <= unit && unit < addr + len {
            return if kind == 15 {
                None
            } else {
                u32::try_from(line).ok()
            };
        }
        addr += len;
        at += 1;
        while at < table.len() && table[at] & 0x80 == 0 {
            at += 1;
        }
    }
    None
}

/// The location table's varints: 6 bits per byte, bit 6 to continue.
fn varint(bytes: &[u8]) -> u64 {
    let mut value = 0u64;
    let mut shift = 0;
    for &b in bytes {
        value |= u64::from(b & 63) << shift;
        shift += 6;
        if b & 64 == 0 || shift > 60 {
            break;
        }
    }
    value
}

fn signed_varint(bytes: &[u8]) -> i64 {
    let v = varint(bytes);
    if v & 1 == 1 {
        -((v >> 1) as i64)
    } else {
        (v >> 1) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use support::abi::PythonFrameLayout;

    #[test]
    fn versions_come_from_interpreter_names_only() {
        let v = |s: &str| version_from_name(&PathBuf::from(s));
        assert_eq!(v("/usr/bin/python3.11"), Some((3, 11)));
        assert_eq!(v("/x/lib/libpython3.12.so.1.0"), Some((3, 12)));
        assert_eq!(v("libpython3.7m.so"), Some((3, 7)));
        assert_eq!(v("python3.13t"), Some((3, 13)));
        assert_eq!(v("python3"), None);
        assert_eq!(v("python3.11-config"), None);
        assert_eq!(v("python3.11.so"), None);
        assert_eq!(v("libpythonista.so"), None);
    }

    #[test]
    fn every_spec_version_is_described_for_the_kernel() {
        for v in PYTHON_VERSIONS {
            let f = python_file(&Interpreter {
                version: v,
                loop_start: 0x1000,
                loop_end: 0x2000,
                runtime_vaddr: 0x9000,
            });
            assert_eq!(f.version >> 8, 3);
            // The eBPF step reads frame_read_size bytes of a frame, and every
            // field it uses lies within them.
            let size = u16::from(f.frame_read_size);
            assert!(
                u64::from(size) <= PYTHON_FRAME_READ_MAX,
                "{}.{}",
                v.major,
                v.minor
            );
            let instruction = if v.minor <= 10 { 4 } else { 8 };
            for (off, len) in [
                (f.frame_previous, 8),
                (f.frame_code, 8),
                (f.frame_instruction, instruction),
            ] {
                assert!(off + len <= size, "{}.{}: offset {off}", v.major, v.minor);
            }
            if v.minor >= 11 {
                assert!(f.frame_owner < size, "{}.{}", v.major, v.minor);
            }
            if v.minor == 11 {
                assert!(f.frame_is_entry < size, "{}.{}", v.major, v.minor);
            }
            let layout = PythonFrameLayout::try_from(f.frame_layout).unwrap();
            assert_eq!(layout == PythonFrameLayout::FrameObject, v.minor <= 10);
            assert_eq!(f.thread_frame_via_cframe == 1, (11..=12).contains(&v.minor));
        }
    }

    #[test]
    fn lnotab_lines() {
        // Line 10 for bytes 0..6, 12 from 6, 11 from 20 (negative step).
        let t = [6u8, 2, 14, (-1i8) as u8];
        assert_eq!(lnotab_line(&t, 10, 0), Some(10));
        assert_eq!(lnotab_line(&t, 10, 5), Some(10));
        assert_eq!(lnotab_line(&t, 10, 6), Some(12));
        assert_eq!(lnotab_line(&t, 10, 19), Some(12));
        assert_eq!(lnotab_line(&t, 10, 20), Some(11));
    }

    #[test]
    fn address_range_lines() {
        // [0,4): line 5; [4,8): none; [8,12): line 7.
        let t = [4u8, 0, 4, 0x80, 4, 2];
        assert_eq!(address_ranges_line(&t, 5, 2), Some(5));
        assert_eq!(address_ranges_line(&t, 5, 4), None);
        assert_eq!(address_ranges_line(&t, 5, 10), Some(7));
        assert_eq!(address_ranges_line(&t, 5, 12), None);
    }

    #[test]
    fn location_table_lines() {
        // Entry 1: one-line form (kind 11: +1), 2 units, 2 column bytes.
        // Entry 2: no-column form (kind 13), 1 unit, line delta -3 (svarint 7).
        // Entry 3: none (kind 15), 1 unit. Entry 4: short form (kind 0), 3 units.
        let t = [
            0x80 | (11 << 3) | 1,
            4,
            9,
            0x80 | (13 << 3),
            7,
            0x80 | (15 << 3),
            0x80 | 2,
            1,
        ];
        assert_eq!(locations_line(&t, 20, 0), Some(21));
        assert_eq!(locations_line(&t, 20, 1), Some(21));
        assert_eq!(locations_line(&t, 20, 2), Some(18));
        assert_eq!(locations_line(&t, 20, 3), None);
        assert_eq!(locations_line(&t, 20, 5), Some(18));
        assert_eq!(locations_line(&t, 20, 6), Some(18));
        assert_eq!(locations_line(&t, 20, 7), None);
        assert_eq!(signed_varint(&[0x40 | 1, 1]), -32);
    }

    /// Memory made of (address, bytes) regions.
    struct Fake(Vec<(u64, Vec<u8>)>);
    impl Memory for Fake {
        fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
            for (at, bytes) in &self.0 {
                if addr >= *at && addr + buf.len() as u64 <= at + bytes.len() as u64 {
                    let from = (addr - at) as usize;
                    buf.copy_from_slice(&bytes[from..from + buf.len()]);
                    return Ok(());
                }
            }
            Err(io::Error::new(io::ErrorKind::NotFound, "unmapped"))
        }
    }

    fn ascii(v: &PythonVersion, s: &str) -> Vec<u8> {
        let o = &v.offsets;
        let mut b = vec![0u8; o.unicode_ascii_size as usize];
        b[o.unicode_length as usize..][..8].copy_from_slice(&(s.len() as u64).to_le_bytes());
        let state: u32 = (1 << 2) | (1 << 5) | (1 << 6);
        b[o.unicode_state as usize..][..4].copy_from_slice(&state.to_le_bytes());
        b.extend_from_slice(s.as_bytes());
        b
    }

    fn code_object_at(v: &PythonVersion, type_name: &[u8]) -> Fake {
        let o = &v.offsets;
        let mut code = vec![0u8; 256];
        let mut put = |at: u16, value: u64| {
            code[at as usize..][..8].copy_from_slice(&value.to_le_bytes());
        };
        put(o.object_type, 0x2000);
        put(o.code_qualname.unwrap_or(o.code_name), 0x3000);
        put(o.code_filename, 0x4000);
        put(o.code_linetable, 0x5000);
        code[o.code_firstlineno as usize..][..4].copy_from_slice(&42i32.to_le_bytes());
        let mut ty = vec![0u8; 32];
        ty[o.type_name as usize..][..8].copy_from_slice(&0x2100u64.to_le_bytes());
        let mut table = vec![0u8; o.bytes_data as usize];
        table[o.bytes_size as usize..][..8].copy_from_slice(&0u64.to_le_bytes());
        Fake(vec![
            (0x1000, code),
            (0x2000, ty),
            (0x2100, type_name.to_vec()),
            (0x3000, ascii(v, "Worker.run")),
            (0x4000, ascii(v, "/srv/app.py")),
            (0x5000, table),
        ])
    }

    #[test]
    fn code_objects_are_read_and_checked() {
        for v in PYTHON_VERSIONS {
            let m = code_object_at(v, b"code\0");
            let c = read_code(&m, 0x1000, v).unwrap();
            assert_eq!(&*c.name, "Worker.run");
            assert_eq!(&*c.file, "/srv/app.py");
            assert_eq!(c.first_line, 42);
            // An empty table names the first line.
            assert_eq!(c.line(8), 42);
            let m = code_object_at(v, b"dict\0");
            assert!(read_code(&m, 0x1000, v).is_err());
        }
    }
}
