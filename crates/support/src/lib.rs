//! The Rust view of the eBPF ABI.
//!
//! Architecture invariant: pure Rust, never touches the kernel; the agent,
//! the tools and the collector all decode eBPF data through this crate.

pub mod generated;

pub use generated::abi;
pub use generated::programs::{ProgramId, PROGRAM_COUNT};
pub use generated::python;
pub mod trace;
