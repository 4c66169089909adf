//! Core profiling types shared by the agent, the outputs and the collector.
//!
//! Architecture invariant: pure Rust, no C toolchain in the dependency closure,
//! never touches the kernel. Everything the eBPF side shares lives in
//! `generated/` and comes from `spec/`.

mod frame_type;
pub mod generated;

pub use frame_type::FrameType;
pub use generated::frame_types::{frame_flags, FrameKind};

// Hand-written core: identities byte-compatible with the OpenTelemetry eBPF
// profiler (see each module for the algorithm and why it is fixed).
mod codec;
mod error;
mod file_id;
mod fnv;
mod frame;
mod frame_id;
pub mod frame_type_rle;
mod hash128;
mod trace;
mod trace_hash;

pub use error::{Encoding, ParseError};
pub use file_id::FileId;
pub use fnv::Fnv128a;
pub use frame::{AddressOrLineno, Frame};
pub use frame_id::{frame_id, parse_frame_id, FrameId};
pub use frame_type_rle::{decode_frame_types, encode_frame_types};
pub use hash128::Hash128;
pub use trace::Trace;
pub use trace_hash::{TraceHash, TraceHasher};
