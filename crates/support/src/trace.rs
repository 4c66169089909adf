//! Decoding the records the eBPF programs write to the ring buffers.
//!
//! A record is untrusted input as far as this code is concerned (a truncated
//! or corrupt record must not panic the agent): every length is checked.

use crate::abi::{
    FrameHeader, PidEvent, PidEventKind, PythonFrameData, TraceHeader, COMM_LEN,
    NATIVE_FRAME_WORDS, NATIVE_FRAME_WORDS_SAME_EXE, PYTHON_FRAME_WORDS,
};
use libpf::generated::errors::ErrorCode;
use libpf::generated::frame_types::frame_flags;
use libpf::FrameKind;
use std::fmt;

/// One user frame of a trace record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawFrame {
    /// A native frame: `address` is the ELF virtual address in the executable
    /// `exe_id` (the high half of its FileID).
    Native {
        exe_id: u64,
        address: u64,
        /// The address is a return address (subtract 1 to find the call).
        return_address: bool,
    },
    /// A frame in anonymous executable memory (code a JIT wrote): `address`
    /// is the process address; no executable, unwound by frame pointer.
    Jit {
        address: u64,
        /// The address is a return address (subtract 1 to find the call).
        return_address: bool,
    },
    /// A CPython frame: the code object's address in the process, where in
    /// it the frame is (`python_frame_data.instruction`) and the version
    /// that ran it (major << 8 | minor).
    Python {
        code: u64,
        instruction: u64,
        version: u16,
    },
    /// The unwinder of `kind` stopped with `code` (an `ErrorCode` value).
    Error { kind: FrameKind, code: u32 },
    /// A frame of a kind this decoder does not interpret (yet).
    Other {
        kind: u8,
        flags: u8,
        data: u64,
        payload: Vec<u64>,
    },
}

impl RawFrame {
    /// The error code as a known `ErrorCode`, if this is an error frame.
    pub fn error(&self) -> Option<Result<ErrorCode, u32>> {
        match self {
            RawFrame::Error { code, .. } => Some(ErrorCode::try_from(*code).map_err(|_| *code)),
            _ => None,
        }
    }
}

/// A decoded trace record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawTrace {
    pub pid: u32,
    pub tid: u32,
    pub ktime_ns: u64,
    pub cpu: u32,
    /// Thread name (the kernel's task comm).
    pub comm: String,
    /// Kernel return addresses, leaf first.
    pub kernel: Vec<u64>,
    /// User frames, leaf first.
    pub frames: Vec<RawFrame>,
}

impl RawTrace {
    /// The error that ended the unwind, if it did not reach the end of the stack.
    pub fn error(&self) -> Option<(FrameKind, u32)> {
        match self.frames.last() {
            Some(RawFrame::Error { kind, code }) => Some((*kind, *code)),
            _ => None,
        }
    }
}

/// Why a record could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The record is shorter than its header says.
    Truncated { need: usize, got: usize },
    /// More kernel frames than frame words.
    KernelFramesExceedWords { kernel: u16, words: u16 },
    /// A frame header with length 0 (would never advance).
    ZeroLengthFrame { at_word: usize },
    /// A frame whose length runs past the end of the frame data.
    FrameOverruns { at_word: usize, length: u64 },
    /// A native frame without its payload word.
    BadNativeFrame { at_word: usize },
    /// A Python frame without its code object word.
    BadPythonFrame { at_word: usize },
    /// An unknown frame kind on an error frame.
    UnknownFrameKind { at_word: usize, kind: u8 },
    /// A process event of an unknown kind.
    UnknownEventKind(u32),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { need, got } => {
                write!(f, "record truncated: needs {need} bytes, got {got}")
            }
            DecodeError::KernelFramesExceedWords { kernel, words } => {
                write!(f, "{kernel} kernel frames but only {words} frame words")
            }
            DecodeError::ZeroLengthFrame { at_word } => {
                write!(f, "frame at word {at_word} has length 0")
            }
            DecodeError::FrameOverruns { at_word, length } => {
                write!(
                    f,
                    "frame at word {at_word} (length {length}) runs past the record"
                )
            }
            DecodeError::BadNativeFrame { at_word } => {
                write!(f, "native frame at word {at_word} has no executable id")
            }
            DecodeError::BadPythonFrame { at_word } => {
                write!(f, "Python frame at word {at_word} has no code object")
            }
            DecodeError::UnknownFrameKind { at_word, kind } => {
                write!(f, "frame at word {at_word} has unknown kind {kind}")
            }
            DecodeError::UnknownEventKind(k) => write!(f, "unknown process event kind {k}"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn comm_string(comm: &[u8; COMM_LEN as usize]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Decodes one record of the traces ring buffer.
pub fn decode_trace(bytes: &[u8]) -> Result<RawTrace, DecodeError> {
    let header = TraceHeader::from_bytes(bytes).map_err(|e| DecodeError::Truncated {
        need: e.need,
        got: e.got,
    })?;
    let words = header.num_frame_words as usize;
    let need = TraceHeader::SIZE + words * 8;
    if bytes.len() < need {
        return Err(DecodeError::Truncated {
            need,
            got: bytes.len(),
        });
    }
    if header.num_kernel_frames > header.num_frame_words {
        return Err(DecodeError::KernelFramesExceedWords {
            kernel: header.num_kernel_frames,
            words: header.num_frame_words,
        });
    }
    let data: Vec<u64> = bytes[TraceHeader::SIZE..need]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("chunks of 8")))
        .collect();
    let nk = header.num_kernel_frames as usize;
    let kernel = data[..nk].to_vec();
    let mut frames = Vec::new();
    // A native frame of length NATIVE_FRAME_WORDS_SAME_EXE is in this one.
    let mut last_exe_id = None;
    let mut at = nk;
    while at < data.len() {
        let h = FrameHeader(data[at]);
        let length = h.length();
        if length == 0 {
            return Err(DecodeError::ZeroLengthFrame { at_word: at });
        }
        let end = at + length as usize;
        if end > data.len() {
            return Err(DecodeError::FrameOverruns {
                at_word: at,
                length,
            });
        }
        let flags = h.flags() as u8;
        let kind = h.kind() as u8;
        let frame = if flags & frame_flags::ERROR != 0 {
            let kind = FrameKind::try_from(kind)
                .map_err(|_| DecodeError::UnknownFrameKind { at_word: at, kind })?;
            RawFrame::Error {
                kind,
                code: h.data() as u32,
            }
        } else if kind == FrameKind::Native as u8 && flags & frame_flags::PID_SPECIFIC != 0 {
            RawFrame::Jit {
                address: h.data(),
                return_address: flags & frame_flags::RETURN_ADDRESS != 0,
            }
        } else if kind == FrameKind::Native as u8 {
            let exe_id = if length == NATIVE_FRAME_WORDS_SAME_EXE {
                last_exe_id.ok_or(DecodeError::BadNativeFrame { at_word: at })?
            } else if length >= NATIVE_FRAME_WORDS {
                data[at + 1]
            } else {
                return Err(DecodeError::BadNativeFrame { at_word: at });
            };
            last_exe_id = Some(exe_id);
            RawFrame::Native {
                exe_id,
                address: h.data(),
                return_address: flags & frame_flags::RETURN_ADDRESS != 0,
            }
        } else if kind == FrameKind::Python as u8 {
            if length != PYTHON_FRAME_WORDS {
                return Err(DecodeError::BadPythonFrame { at_word: at });
            }
            let d = PythonFrameData(h.data());
            RawFrame::Python {
                code: data[at + 1],
                instruction: d.instruction(),
                version: d.version() as u16,
            }
        } else {
            RawFrame::Other {
                kind,
                flags,
                data: h.data(),
                payload: data[at + 1..end].to_vec(),
            }
        };
        frames.push(frame);
        at = end;
    }
    Ok(RawTrace {
        pid: header.pid,
        tid: header.tid,
        ktime_ns: header.ktime_ns,
        cpu: header.cpu,
        comm: comm_string(&header.comm),
        kernel,
        frames,
    })
}

/// Encodes a trace the way the eBPF side does (for tests and tools).
pub fn encode_trace(t: &RawTrace) -> Vec<u8> {
    let mut words: Vec<u64> = t.kernel.clone();
    let mut last_exe_id = None;
    for f in &t.frames {
        match f {
            RawFrame::Native {
                exe_id,
                address,
                return_address,
            } => {
                let flags = if *return_address {
                    frame_flags::RETURN_ADDRESS
                } else {
                    0
                };
                let same_exe = last_exe_id == Some(*exe_id);
                let length = if same_exe {
                    NATIVE_FRAME_WORDS_SAME_EXE
                } else {
                    NATIVE_FRAME_WORDS
                };
                words.push(
                    FrameHeader::pack(*address, length, flags as u64, FrameKind::Native as u64).0,
                );
                if !same_exe {
                    words.push(*exe_id);
                }
                last_exe_id = Some(*exe_id);
            }
            RawFrame::Jit {
                address,
                return_address,
            } => {
                let flags = frame_flags::PID_SPECIFIC
                    | if *return_address {
                        frame_flags::RETURN_ADDRESS
                    } else {
                        0
                    };
                words
                    .push(FrameHeader::pack(*address, 1, flags as u64, FrameKind::Native as u64).0);
            }
            RawFrame::Python {
                code,
                instruction,
                version,
            } => {
                let data = PythonFrameData::pack(*instruction, u64::from(*version)).0;
                words.push(
                    FrameHeader::pack(data, PYTHON_FRAME_WORDS, 0, FrameKind::Python as u64).0,
                );
                words.push(*code);
            }
            RawFrame::Error { kind, code } => {
                words.push(
                    FrameHeader::pack(*code as u64, 1, frame_flags::ERROR as u64, *kind as u64).0,
                );
            }
            RawFrame::Other {
                kind,
                flags,
                data,
                payload,
            } => {
                words.push(
                    FrameHeader::pack(*data, 1 + payload.len() as u64, *flags as u64, *kind as u64)
                        .0,
                );
                words.extend(payload);
            }
        }
    }
    let mut comm = [0u8; COMM_LEN as usize];
    let n = t.comm.len().min(comm.len() - 1);
    comm[..n].copy_from_slice(&t.comm.as_bytes()[..n]);
    let header = TraceHeader {
        pid: t.pid,
        tid: t.tid,
        ktime_ns: t.ktime_ns,
        cpu: t.cpu,
        num_kernel_frames: t.kernel.len() as u16,
        num_frame_words: words.len() as u16,
        comm,
    };
    let mut out = header.to_bytes().to_vec();
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

/// A decoded record of the events ring buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessEvent {
    pub kind: PidEventKind,
    pub pid: u32,
    pub parent_pid: u32,
    pub asid: u32,
    pub ktime_ns: u64,
}

/// Decodes one record of the events ring buffer.
pub fn decode_event(bytes: &[u8]) -> Result<ProcessEvent, DecodeError> {
    let e = PidEvent::from_bytes(bytes).map_err(|e| DecodeError::Truncated {
        need: e.need,
        got: e.got,
    })?;
    let kind = PidEventKind::try_from(e.kind).map_err(|_| DecodeError::UnknownEventKind(e.kind))?;
    Ok(ProcessEvent {
        kind,
        pid: e.pid,
        parent_pid: e.parent_pid,
        asid: e.asid,
        ktime_ns: e.ktime_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RawTrace {
        RawTrace {
            pid: 42,
            tid: 43,
            ktime_ns: 123_456_789,
            cpu: 1,
            comm: "worker".into(),
            kernel: vec![0xffff_ffff_8100_0000, 0xffff_ffff_8100_1234],
            frames: vec![
                RawFrame::Native {
                    exe_id: 0xdead_beef,
                    address: 0x1139,
                    return_address: false,
                },
                RawFrame::Native {
                    exe_id: 0xdead_beef,
                    address: 0x1180,
                    return_address: true,
                },
                RawFrame::Jit {
                    address: 0x7f00_1234_5678,
                    return_address: true,
                },
                RawFrame::Native {
                    exe_id: 0xfeed,
                    address: 0x2a000,
                    return_address: true,
                },
                RawFrame::Native {
                    exe_id: 0xdead_beef,
                    address: 0x1040,
                    return_address: true,
                },
                RawFrame::Error {
                    kind: FrameKind::Native,
                    code: ErrorCode::NativeNoMapping as u32,
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let t = sample();
        let bytes = encode_trace(&t);
        // Kernel 2; native 2, then 1 (same executable); JIT 1 (no
        // executable, and the next native frame still compares with the
        // last native one); native 2, 2; error 1.
        assert_eq!(
            bytes.len(),
            TraceHeader::SIZE + 8 * (2 + 2 + 1 + 1 + 2 + 2 + 1)
        );
        let d = decode_trace(&bytes).unwrap();
        assert_eq!(d, t);
        assert_eq!(
            d.error(),
            Some((FrameKind::Native, ErrorCode::NativeNoMapping as u32))
        );
        assert_eq!(d.frames[5].error(), Some(Ok(ErrorCode::NativeNoMapping)));
    }

    #[test]
    fn a_frame_in_the_previous_executable_needs_a_previous_one() {
        let mut t = sample();
        t.frames.truncate(1);
        let mut bytes = encode_trace(&t);
        // Turn the only native frame into the short form: nothing before it
        // says which executable it is in.
        let at = TraceHeader::SIZE + 2 * 8;
        let w = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let short = (w & !(FrameHeader::LENGTH_MASK << FrameHeader::LENGTH_SHIFT))
            | (NATIVE_FRAME_WORDS_SAME_EXE << FrameHeader::LENGTH_SHIFT);
        bytes[at..at + 8].copy_from_slice(&short.to_le_bytes());
        assert_eq!(
            decode_trace(&bytes),
            Err(DecodeError::BadNativeFrame { at_word: 2 })
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = encode_trace(&sample());
        for len in 0..bytes.len() {
            assert!(decode_trace(&bytes[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn corrupt_frame_headers_are_errors() {
        let mut t = sample();
        t.frames = vec![RawFrame::Other {
            kind: 9,
            flags: 0,
            data: 0,
            payload: vec![],
        }];
        let mut bytes = encode_trace(&t);
        // Zero the length of the only frame.
        let at = TraceHeader::SIZE + 2 * 8;
        let w = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let zeroed = w & !(FrameHeader::LENGTH_MASK << FrameHeader::LENGTH_SHIFT);
        bytes[at..at + 8].copy_from_slice(&zeroed.to_le_bytes());
        assert_eq!(
            decode_trace(&bytes),
            Err(DecodeError::ZeroLengthFrame { at_word: 2 })
        );
        // A length that runs past the end.
        let long = w | (15 << FrameHeader::LENGTH_SHIFT);
        bytes[at..at + 8].copy_from_slice(&long.to_le_bytes());
        assert!(matches!(
            decode_trace(&bytes),
            Err(DecodeError::FrameOverruns { .. })
        ));
    }

    #[test]
    fn decodes_events() {
        let e = PidEvent {
            kind: PidEventKind::Fork as u32,
            pid: 10,
            parent_pid: 9,
            asid: 3,
            ktime_ns: 5,
        };
        let d = decode_event(&e.to_bytes()).unwrap();
        assert_eq!(d.kind, PidEventKind::Fork);
        assert_eq!((d.pid, d.parent_pid, d.asid), (10, 9, 3));
        let bad = PidEvent { kind: 99, ..e };
        assert_eq!(
            decode_event(&bad.to_bytes()),
            Err(DecodeError::UnknownEventKind(99))
        );
    }
}
