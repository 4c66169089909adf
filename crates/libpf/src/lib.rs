//! Core profiling types shared by the agent, the outputs and the collector.
//!
//! Architecture invariant: pure Rust, no C toolchain in the dependency closure,
//! never touches the kernel. Everything the eBPF side shares lives in
//! `generated/` and comes from `spec/`.

pub mod generated;
mod frame_type;

pub use frame_type::FrameType;
pub use generated::frame_types::{frame_flags, FrameKind};
