//! Record layouts of the dictionary tables, on top of [`crate::codec`].
//!
//! Frames and label sets refer to strings by id (function names, file names,
//! process names repeat across many records); stacks are lists of frame ids.

use crate::codec::{put_bytes, put_opt, put_varint, CodecError, Reader};
use libpf::{AddressOrLineno, FileId, Frame, FrameType};
use profile::{Executable, SampleLabels};
use std::sync::Arc;

/// Where a frame record points to strings; `None` for absent fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameStrings {
    pub function: Option<u64>,
    pub source_file: Option<u64>,
}

/// A frame record: the frame's fixed fields plus string ids.
pub fn encode_frame(f: &Frame, s: FrameStrings) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    out.push(f.frame_type.as_u8());
    out.push(f.flags);
    match f.file_id {
        None => out.push(u8::from(f.inlined) << 1),
        Some(id) => {
            out.push((u8::from(f.inlined) << 1) | 1);
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
    put_varint(&mut out, f.address_or_line.get());
    put_opt(&mut out, s.function);
    put_opt(&mut out, s.source_file);
    put_opt(&mut out, f.source_line.map(u64::from));
    put_opt(&mut out, f.function_offset.map(u64::from));
    out
}

/// Decodes a frame record; `string` resolves string ids.
pub fn decode_frame(
    bytes: &[u8],
    mut string: impl FnMut(u64) -> Result<Arc<str>, crate::StoreError>,
) -> Result<Frame, crate::StoreError> {
    let mut r = Reader::new(bytes);
    let frame_type = FrameType::from_u8(r.u8()?);
    let flags = r.u8()?;
    let bits = r.u8()?;
    if bits & !3 != 0 {
        return Err(CodecError("unknown frame bits").into());
    }
    let file_id = if bits & 1 != 0 {
        Some(FileId::from_be_bytes(r.array::<16>()?))
    } else {
        None
    };
    let address_or_line = AddressOrLineno(r.varint()?);
    let function = r.opt()?;
    let source_file = r.opt()?;
    let source_line = r.opt_u32()?;
    let function_offset = r.opt_u32()?;
    r.finish()?;
    Ok(Frame {
        frame_type,
        file_id,
        address_or_line,
        flags,
        function_name: function.map(&mut string).transpose()?,
        source_file: source_file.map(&mut string).transpose()?,
        source_line,
        function_offset,
        inlined: bits & 2 != 0,
    })
}

/// A stack record: frame ids, leaf first.
pub fn encode_stack(frame_ids: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame_ids.len() * 2 + 2);
    put_varint(&mut out, frame_ids.len() as u64);
    for &id in frame_ids {
        put_varint(&mut out, id);
    }
    out
}

pub fn decode_stack(bytes: &[u8]) -> Result<Vec<u64>, CodecError> {
    let mut r = Reader::new(bytes);
    let n = r.varint()?;
    // Each id takes at least one byte: a larger count is corrupt, and
    // checking it first keeps a bad count from allocating gigabytes.
    if n > bytes.len() as u64 {
        return Err(CodecError("stack length exceeds record"));
    }
    let mut ids = Vec::with_capacity(n as usize);
    for _ in 0..n {
        ids.push(r.varint()?);
    }
    r.finish()?;
    Ok(ids)
}

/// String ids of a label set record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabelStrings {
    pub host: u64,
    pub process_name: u64,
    pub thread_name: u64,
    pub container_id: Option<u64>,
    pub executable_path: Option<u64>,
}

/// A label-set record: the host and sampling frequency of the profile the
/// samples came from, then the sample labels.
pub fn encode_labels(frequency_hz: u64, l: &SampleLabels, s: LabelStrings) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    put_varint(&mut out, s.host);
    put_varint(&mut out, frequency_hz);
    put_varint(&mut out, u64::from(l.pid));
    put_varint(&mut out, u64::from(l.tid));
    put_varint(&mut out, s.process_name);
    put_varint(&mut out, s.thread_name);
    put_opt(&mut out, l.cpu.map(u64::from));
    put_opt(&mut out, s.container_id);
    put_opt(&mut out, s.executable_path);
    out
}

/// A decoded label set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSet {
    pub host: Arc<str>,
    pub frequency_hz: u64,
    pub labels: SampleLabels,
}

pub fn decode_labels(
    bytes: &[u8],
    mut string: impl FnMut(u64) -> Result<Arc<str>, crate::StoreError>,
) -> Result<LabelSet, crate::StoreError> {
    let mut r = Reader::new(bytes);
    let host = string(r.varint()?)?;
    let frequency_hz = r.varint()?;
    let pid = r.u32()?;
    let tid = r.u32()?;
    let process_name = string(r.varint()?)?;
    let thread_name = string(r.varint()?)?;
    let cpu = r.opt_u32()?;
    let container_id = r.opt()?.map(&mut string).transpose()?;
    let executable_path = r.opt()?.map(&mut string).transpose()?;
    r.finish()?;
    Ok(LabelSet {
        host,
        frequency_hz,
        labels: SampleLabels {
            pid,
            tid,
            process_name,
            thread_name,
            cpu,
            container_id,
            executable_path,
        },
    })
}

/// String ids a label record refers to (for garbage collection).
pub fn label_string_ids(bytes: &[u8]) -> Result<Vec<u64>, CodecError> {
    let mut r = Reader::new(bytes);
    let host = r.varint()?;
    let _freq = r.varint()?;
    let _pid = r.varint()?;
    let _tid = r.varint()?;
    let process = r.varint()?;
    let thread = r.varint()?;
    let _cpu = r.opt()?;
    let mut ids = vec![host, process, thread];
    ids.extend(r.opt()?);
    ids.extend(r.opt()?);
    Ok(ids)
}

/// String ids and file id a frame record refers to (for garbage collection).
pub fn frame_refs(bytes: &[u8]) -> Result<(Option<FileId>, Vec<u64>), CodecError> {
    let mut r = Reader::new(bytes);
    let _ty = r.u8()?;
    let _flags = r.u8()?;
    let bits = r.u8()?;
    let file = if bits & 1 != 0 {
        Some(FileId::from_be_bytes(r.array::<16>()?))
    } else {
        None
    };
    let _addr = r.varint()?;
    let mut ids = Vec::with_capacity(2);
    ids.extend(r.opt()?);
    ids.extend(r.opt()?);
    Ok((file, ids))
}

/// An executable record (its key is the FileId).
pub fn encode_executable(e: &Executable) -> Vec<u8> {
    let mut out = Vec::with_capacity(e.path.len() + 32);
    put_bytes(&mut out, e.path.as_bytes());
    match &e.gnu_build_id {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            put_bytes(&mut out, b.as_bytes());
        }
    }
    put_varint(&mut out, e.vaddr_start);
    put_varint(&mut out, e.vaddr_end);
    out
}

pub fn decode_executable(file_id: FileId, bytes: &[u8]) -> Result<Executable, CodecError> {
    let mut r = Reader::new(bytes);
    let path: Arc<str> = r.str()?.into();
    let gnu_build_id = match r.u8()? {
        0 => None,
        1 => Some(r.str()?.into()),
        _ => return Err(CodecError("bad build-id tag")),
    };
    let vaddr_start = r.varint()?;
    let vaddr_end = r.varint()?;
    r.finish()?;
    Ok(Executable {
        file_id,
        path,
        gnu_build_id,
        vaddr_start,
        vaddr_end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use libpf::FrameKind;

    fn strings(id: u64) -> Result<Arc<str>, crate::StoreError> {
        Ok(format!("s{id}").into())
    }

    #[test]
    fn frame_round_trips_with_every_field() {
        let mut f = Frame::new(
            FrameType::from_kind(FrameKind::Python).with_error(),
            Some(FileId::new(u64::MAX, 7)),
            0xdead_beefu64,
        )
        .with_flags(3)
        .with_function("s4")
        .with_source("s9", Some(77))
        .with_inlined(true);
        f.function_offset = Some(12);
        let rec = encode_frame(
            &f,
            FrameStrings {
                function: Some(4),
                source_file: Some(9),
            },
        );
        assert_eq!(decode_frame(&rec, strings).unwrap(), f);
        assert_eq!(
            frame_refs(&rec).unwrap(),
            (Some(FileId::new(u64::MAX, 7)), vec![4, 9])
        );

        let bare = Frame::new(FrameType::KERNEL, None, 1u64);
        let rec = encode_frame(
            &bare,
            FrameStrings {
                function: None,
                source_file: None,
            },
        );
        assert_eq!(decode_frame(&rec, strings).unwrap(), bare);
        // Truncation anywhere is an error, not a panic.
        for cut in 0..rec.len() {
            assert!(decode_frame(&rec[..cut], strings).is_err());
        }
    }

    #[test]
    fn labels_and_stacks_round_trip() {
        let l = SampleLabels {
            pid: 10,
            tid: 11,
            process_name: "s2".into(),
            thread_name: "s3".into(),
            cpu: Some(0),
            container_id: None,
            executable_path: Some("s5".into()),
        };
        let s = LabelStrings {
            host: 1,
            process_name: 2,
            thread_name: 3,
            container_id: None,
            executable_path: Some(5),
        };
        let rec = encode_labels(99, &l, s);
        let back = decode_labels(&rec, strings).unwrap();
        assert_eq!(back.labels, l);
        assert_eq!(&*back.host, "s1");
        assert_eq!(back.frequency_hz, 99);
        assert_eq!(label_string_ids(&rec).unwrap(), vec![1, 2, 3, 5]);

        let ids = [1u64, 300, 70000, 1 << 40];
        assert_eq!(decode_stack(&encode_stack(&ids)).unwrap(), ids);
        assert!(decode_stack(&[200, 1]).is_err());
    }

    #[test]
    fn executable_round_trips() {
        let e = Executable {
            file_id: FileId::new(1, 2),
            path: "/usr/bin/x".into(),
            gnu_build_id: Some("abcd".into()),
            vaddr_start: 0x1000,
            vaddr_end: 0x2000,
        };
        let rec = encode_executable(&e);
        assert_eq!(decode_executable(e.file_id, &rec).unwrap(), e);
        assert!(decode_executable(e.file_id, &rec[..rec.len() - 1]).is_err());
    }
}
