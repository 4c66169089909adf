//! Project automation for ebpf-profiler, run as `cargo xtask <command>`.
//!
//! Architecture invariant: xtask is the only place that runs clang; nothing
//! it generates is edited by hand.

pub mod codegen;
pub mod purity;
