//! rust_release: a Rust program compiled by invoking rustc directly:
//!     rustc -C opt-level=3 -C debuginfo=1 -C force-frame-pointers=no
//!           --edition 2021 --crate-name rust_release --crate-type bin
//! rustc's default linker on x86-64 Linux is LLD, whose text segment has a
//! virtual address different from its file offset (a known profiler trap).
//!
//! Chain (user `main` is reached from the C `main` through `std::rt::lang_start`):
//!     rust_release::main -> rust_chain_outer -> rust_chain_middle -> rust_chain_leaf
//! The chain functions are `#[no_mangle]`, so their symbol names are exact;
//! `main` is mangled (`rust_release::main` once demangled, plus a hash
//! suffix `::h0123456789abcdef` in the legacy scheme).
//!
//! Usage: rust_release [duration_ms]   (0 or absent: run until killed)

use std::hint::black_box;
use std::time::{Duration, Instant};

const SLICE_ITERS: u64 = 2_000_000;

#[no_mangle]
#[inline(never)]
pub fn rust_chain_leaf(iters: u64) -> u64 {
    let mut x = black_box(iters) | 1;
    for _ in 0..iters {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

#[no_mangle]
#[inline(never)]
pub fn rust_chain_middle(iters: u64) -> u64 {
    let r = rust_chain_leaf(black_box(iters));
    // Using the result after the call: no tail call.
    black_box(r).wrapping_add(2)
}

#[no_mangle]
#[inline(never)]
pub fn rust_chain_outer(iters: u64) -> u64 {
    let r = rust_chain_middle(black_box(iters));
    black_box(r).wrapping_add(1)
}

// Not inlined into std's __rust_begin_short_backtrace, so it is a frame.
#[inline(never)]
fn main() {
    let ms: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let deadline = (ms != 0).then(|| Instant::now() + Duration::from_millis(ms));
    let mut acc = 0u64;
    loop {
        acc = acc.wrapping_add(rust_chain_outer(SLICE_ITERS));
        black_box(acc);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
}
