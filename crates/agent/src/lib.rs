//! The kernel-touching side of ebpf-profiler: loads the eBPF object, keeps
//! its maps in step with the processes on the machine, and reads traces.
//!
//! Architecture invariant: this is the only crate that talks to the kernel
//! (bpf(2), perf_event_open(2), /proc). Everything it exchanges with the
//! eBPF programs goes through the generated `support::abi` types.

pub mod aggregate;
pub mod features;
pub mod loader;
pub mod lpm;
pub mod mounts;
pub mod preflight;
pub mod procinfo;
pub mod procmaps;
pub mod python;
pub mod record;
pub mod rows;
pub mod session;
pub mod symbolize;
pub mod table_cache;
pub mod tracker;
