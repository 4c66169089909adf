//! A store with the demo workload of `store::testdata`, stamped relative to
//! the real clock so that the page's default range ("last hour") sees it.

#![allow(dead_code)]

use profile::Profile;
use std::sync::Arc;
use store::testdata::demo_profile;
use store::{Store, StoreConfig, BUCKET_NS};

pub const S: u64 = 1_000_000_000;
pub const MS: u64 = 1_000_000;

pub struct Fixture {
    pub store: Arc<Store>,
    pub _dir: tempfile::TempDir,
    /// Profile A: host `web-1`, 20 minutes ago; profile B: host `web-2`,
    /// 10 minutes ago, with more time in `chain_c`.
    pub a: Profile,
    pub b: Profile,
}

impl Fixture {
    /// `[start, start + 10 s)` of a profile, in ms, as the API takes it.
    pub fn range_ms(p: &Profile) -> (u64, u64) {
        (p.start_unix_ns / MS, (p.start_unix_ns + 10 * S) / MS)
    }

    pub fn total(&self) -> u64 {
        self.a.total_samples() + self.b.total_samples()
    }
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let now = store.now_unix_ns() / BUCKET_NS * BUCKET_NS;
    let a = demo_profile("web-1", now - 1200 * S, 1);
    let mut b = demo_profile("web-2", now - 600 * S, 1);
    // B spends 100 more samples in main → chain_a → chain_b → chain_c.
    let extra = 100;
    b.samples[0].count += extra;
    let start = b.start_unix_ns;
    b.samples[0].timestamps_unix_ns = (0..b.samples[0].count)
        .map(|i| start + i * 10_000_000)
        .collect();
    store.ingest(&a).unwrap();
    store.ingest(&b).unwrap();
    Fixture {
        store: Arc::new(store),
        _dir: dir,
        a,
        b,
    }
}
