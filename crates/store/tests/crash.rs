//! Crash safety: a process that dies without closing the store (abort: no
//! destructors, no flush) must leave every committed ingest readable, and
//! the store usable.
//!
//! The test re-runs its own binary as the crashing child: the child
//! ingests, then calls `std::process::abort()`; the parent reopens the
//! directory the child used.

use std::process::Command;
use store::testdata::demo_profile;
use store::{Filter, Store, StoreConfig, TimeRange};

const S: u64 = 1_000_000_000;
const ENV: &str = "STORE_CRASH_CHILD_DIR";

fn t0() -> u64 {
    // Recent enough for the default retention of the system clock.
    let now = store::SystemClock;
    let now = store::Clock::now_unix_ns(&now);
    now / (10 * S) * (10 * S) - 3600 * S
}

#[test]
fn crash_child() {
    // Only does something when run as the child of the test below.
    let Ok(dir) = std::env::var(ENV) else { return };
    let t0: u64 = std::env::var("STORE_CRASH_T0").unwrap().parse().unwrap();
    let store = Store::open(&dir, StoreConfig::default()).unwrap();
    for i in 0..3 {
        store
            .ingest(&demo_profile("h1", t0 + i * 10 * S, 1))
            .unwrap();
    }
    // Committed three profiles; die without any cleanup.
    std::process::abort();
}

#[test]
fn committed_data_survives_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = t0();
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(ENV, dir.path())
        .env("STORE_CRASH_T0", t0.to_string())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must have aborted");

    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let r = TimeRange::new(t0, t0 + 30 * S).unwrap();
    let p = store.merged(r, &Filter::default()).unwrap();
    assert_eq!(p.total_samples(), 600);
    assert_eq!(store.stats().unwrap().total_samples, 600);
    // Still writable after recovery.
    store.ingest(&demo_profile("h1", t0 + 30 * S, 1)).unwrap();
    assert_eq!(store.stats().unwrap().total_samples, 800);
}
