use super::*;
use crate::flame;
use crate::testdata::{self, demo_profile, native, Synthetic};
use profile::Sample;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

/// A clock the test moves by hand.
struct FakeClock(AtomicU64);

impl Clock for FakeClock {
    fn now_unix_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

const S: u64 = 1_000_000_000;
/// A bucket-aligned "now" for the tests.
const T0: u64 = 1_700_000_000 * S;

fn open_at(dir: &Path, config: StoreConfig, now: u64) -> (Store, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock(AtomicU64::new(now)));
    let store = Store::open_with_clock(dir, config, clock.clone()).unwrap();
    (store, clock)
}

fn open(dir: &Path) -> (Store, Arc<FakeClock>) {
    open_at(dir, StoreConfig::default(), T0 + 3600 * S)
}

fn total(p: &Profile) -> u64 {
    p.total_samples()
}

fn range(a: u64, b: u64) -> TimeRange {
    TimeRange::new(a, b).unwrap()
}

fn filter() -> Filter {
    Filter::default()
}

#[test]
fn dedup_within_and_across_profiles_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let demo = demo_profile("h1", T0, 1);
    let distinct_frames: HashSet<&Frame> =
        demo.samples.iter().flat_map(|s| s.frames.iter()).collect();
    {
        let (store, _) = open(dir.path());
        let first = store.ingest(&demo).unwrap();
        assert_eq!(first.samples, 200);
        assert_eq!(first.new_frames, distinct_frames.len());
        assert_eq!(first.new_stacks, 6);
        assert_eq!(first.new_label_sets, 3, "app/app, app/worker, db/db-writer");
        let st = store.stats().unwrap();
        assert_eq!(st.frames as usize, distinct_frames.len());
        assert_eq!(st.stacks, 6);
        assert_eq!(st.label_sets, 3);

        // The same stacks ten seconds later: only new entries.
        let second = store.ingest(&demo_profile("h1", T0 + 10 * S, 1)).unwrap();
        assert_eq!(
            (second.new_frames, second.new_stacks, second.new_label_sets),
            (0, 0, 0)
        );
        assert_eq!(second.new_entries, second.entries);
        assert_eq!(
            store.stats().unwrap().sample_chunks,
            2,
            "one chunk per bucket"
        );

        // The same bucket again: existing rows are incremented.
        // The same bucket again: existing entries are incremented, in the
        // bucket's existing chunk.
        let third = store.ingest(&demo).unwrap();
        assert_eq!(third.new_entries, 0);
        assert!(third.entries > 0);
        let st = store.stats().unwrap();
        assert_eq!(st.total_samples, 600);
        assert_eq!(st.sample_entries, 2 * third.entries as u64);
        assert_eq!(st.sample_chunks, 2);
        assert_eq!(st.stacks, 6);
        assert_eq!(
            total(&store.merged(range(T0, T0 + 10 * S), &filter()).unwrap()),
            400
        );
    }
    // A fresh process has empty caches: dedup must come from the indexes.
    let (store, _) = open(dir.path());
    let again = store.ingest(&demo_profile("h1", T0 + 20 * S, 1)).unwrap();
    assert_eq!(
        (again.new_frames, again.new_stacks, again.new_label_sets),
        (0, 0, 0)
    );
    assert_eq!(store.stats().unwrap().strings, {
        // function names, source files, host, process/thread names,
        // container id and executable paths of the demo
        let mut s: BTreeSet<&str> = BTreeSet::new();
        for smp in &demo.samples {
            for f in smp.frames.iter() {
                s.extend(f.function_name.as_deref());
                s.extend(f.source_file.as_deref());
            }
            s.insert(&smp.labels.process_name);
            s.insert(&smp.labels.thread_name);
            s.extend(smp.labels.container_id.as_deref());
            s.extend(smp.labels.executable_path.as_deref());
        }
        s.insert("h1");
        s.len() as u64
    });
}

#[test]
fn merged_round_trips_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let demo = demo_profile("h1", T0, 1);
    store.ingest(&demo).unwrap();
    let got = store.merged(range(T0, T0 + 10 * S), &filter()).unwrap();
    assert_eq!(got.host_name, "h1");
    assert_eq!(got.frequency_hz, 20);
    assert_eq!(got.start_unix_ns, T0);
    assert_eq!(got.duration_ns, 10 * S);
    let key = |s: &Sample| (s.frames.to_vec(), s.labels.clone(), s.count);
    let mut want: Vec<_> = demo.samples.iter().map(key).collect();
    let mut have: Vec<_> = got.samples.iter().map(key).collect();
    want.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    have.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    assert_eq!(have, want);
    assert!(got.samples.iter().all(|s| s.timestamps_unix_ns.is_empty()));
    // Both executables are referenced by frames; the kernel's is not known.
    assert_eq!(got.executables, demo.executables);
}

#[test]
fn samples_are_counted_per_time_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let l = testdata::labels(1, 1, "p", "t", None);
    let frames = [native("main", 1), native("work", 2)];
    let mut p = demo_profile("h", T0, 1);
    p.samples = vec![
        Sample {
            timestamps_unix_ns: vec![T0 + S, T0 + 11 * S, T0 + 12 * S, T0 + 25 * S],
            ..testdata::sample(&frames, l.clone(), 4, 0, 1)
        },
        // No timestamps: the bucket of the profile start.
        Sample {
            timestamps_unix_ns: Vec::new(),
            ..testdata::sample(&frames, l.clone(), 5, 0, 1)
        },
    ];
    p.start_unix_ns = T0 + 30 * S;
    let st = store.ingest(&p).unwrap();
    assert_eq!(st.samples, 9);
    assert_eq!(st.entries, 4, "buckets 0, 1, 2 and 3");
    assert_eq!(store.stats().unwrap().sample_chunks, 4);
    let count = |a: u64, b: u64| total(&store.merged(range(a, b), &filter()).unwrap());
    assert_eq!(count(T0, T0 + 10 * S), 1);
    assert_eq!(count(T0 + 10 * S, T0 + 20 * S), 2);
    // A range overlapping buckets 0 and 1 sees both whole.
    assert_eq!(count(T0 + 5 * S, T0 + 15 * S), 3);
    assert_eq!(count(T0 + 20 * S, T0 + 30 * S), 1);
    assert_eq!(count(T0 + 30 * S, T0 + 40 * S), 5);
    assert_eq!(count(T0 + 40 * S, T0 + 400 * S), 0);
    assert_eq!(store.time_bounds().unwrap(), Some(range(T0, T0 + 40 * S)));
}

#[test]
fn retention_hides_then_evicts_and_sweeps_old_data() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        retention: Duration::from_secs(3600),
        ..StoreConfig::default()
    };
    let (store, clock) = open_at(dir.path(), config, T0 + 60 * S);
    let mut old = demo_profile("h1", T0, 1);
    old.samples.push(testdata::sample(
        &[native("main", 0x1100), native("only_in_old", 0x7777)],
        testdata::labels(9, 9, "oldproc", "oldproc", None),
        7,
        T0,
        10 * S,
    ));
    store.ingest(&old).unwrap();
    let before = store.stats().unwrap();
    assert_eq!(before.total_samples, 207);

    // 30 s past the retention: the T0 bucket has expired. Queries hide it
    // at once, before any eviction.
    clock.0.store(T0 + 3630 * S, Ordering::SeqCst);
    assert_eq!(total(&store.merged(TimeRange::ALL, &filter()).unwrap()), 0);
    assert_eq!(store.stats().unwrap().total_samples, 207);
    assert_eq!(store.time_bounds().unwrap(), None);

    // A profile that is already expired is dropped whole.
    let st = store.ingest(&demo_profile("h1", T0 + 10 * S, 1)).unwrap();
    assert_eq!((st.samples, st.dropped_expired, st.entries), (0, 200, 0));

    // Once past the slack, ingest evicts and sweeps.
    let fresh = demo_profile("h1", T0 + 3620 * S, 1);
    clock.0.store(T0 + 3600 * S + 300 * S, Ordering::SeqCst);
    let st = store.ingest(&fresh).unwrap();
    store.ingest(&demo_profile("h1", T0 + 3890 * S, 1)).unwrap();
    let m = st.maintenance.expect("retention ran on ingest");
    assert_eq!(m.expired_samples, 207);
    assert!(
        m.swept_records >= 3,
        "old-only stack, frame, label set, strings"
    );
    let after = store.stats().unwrap();
    assert_eq!(after.total_samples, 400);
    assert_eq!(after.stacks, 6);
    assert_eq!(after.label_sets, 3);
    assert_eq!(after.frames, before.frames - 1);
    let names: Vec<Arc<str>> = store
        .top_functions(TimeRange::ALL, &filter(), 100)
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert!(!names.iter().any(|n| &**n == "only_in_old"));
    // The surviving data is intact.
    assert_eq!(
        total(
            &store
                .merged(range(T0 + 3620 * S, T0 + 3630 * S), &filter())
                .unwrap()
        ),
        200
    );

    // maintain() applies the exact cutoff.
    clock.0.store(T0 + 3630 * S + 3600 * S, Ordering::SeqCst);
    let m = store.maintain().unwrap();
    assert_eq!(m.expired_samples, 200, "the T0+3620 s bucket");
    assert_eq!(store.stats().unwrap().total_samples, 200);
}

#[test]
fn size_cap_evicts_oldest_buckets_first_and_bounds_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        retention: Duration::from_secs(365 * 24 * 3600),
        max_bytes: MIN_MAX_BYTES,
    };
    let (store, _) = open_at(dir.path(), config, T0 + 3600 * S);
    let gen = Synthetic::default();
    let pool = gen.stack_pool();
    let mut rng = testdata::Rng::new(7);
    // Each profile spans 8 buckets (the agent's reporting interval here is
    // 80 s) and holds 16000 samples; 40 of them are several times the cap.
    let per_profile = 8u64;
    let n = 40u64;
    let buckets = (n * per_profile) as usize;
    let mut per_bucket = vec![0u64; buckets];
    let mut evictions = 0;
    let mut compactions = 0;
    let mut frames_created = 0;
    for i in 0..n {
        let start = T0 + i * per_profile * 10 * S;
        let mut p = gen.profile(&pool, &mut rng, "h1", start, per_profile * 10 * S, 16000);
        // One function unique to each profile, so sweeping is visible.
        p.samples.push(testdata::sample(
            &[
                native("main", 0x1100),
                native(&format!("unique_{i}"), 0x5000 + i),
            ],
            testdata::labels(1, 1, "u", "u", None),
            1,
            start,
            S,
        ));
        for s in &p.samples {
            for ts in &s.timestamps_unix_ns {
                per_bucket[((ts - T0) / (10 * S)) as usize] += 1;
            }
        }
        let st = store.ingest(&p).unwrap();
        frames_created += st.new_frames;
        let file = store.stats().unwrap().file_bytes;
        if let Some(m) = &st.maintenance {
            evictions += usize::from(m.evicted_entries > 0);
            compactions += usize::from(m.compacted);
            assert!(m.live_bytes <= MIN_MAX_BYTES / 2, "{m:?}");
        }
        assert!(file <= MIN_MAX_BYTES, "ingest {i}: file {file} > cap");
    }
    assert!(
        evictions >= 2,
        "the workload must exceed the cap repeatedly"
    );
    // Freed pages are reused: the file is not rewritten on every eviction.
    assert!(
        compactions < evictions,
        "{compactions} compactions, {evictions} evictions"
    );
    // What remains is a suffix of whole buckets: oldest evicted first.
    let counts: Vec<u64> = (0..buckets as u64)
        .map(|i| {
            let r = range(T0 + i * 10 * S, T0 + (i + 1) * 10 * S);
            store.count(r, &filter()).unwrap()
        })
        .collect();
    let first_kept = counts.iter().position(|&c| c > 0).unwrap();
    assert!(first_kept > 0, "something was evicted");
    for i in 0..buckets {
        if i < first_kept {
            assert_eq!(counts[i], 0, "bucket {i}");
        } else {
            assert_eq!(counts[i], per_bucket[i], "bucket {i} kept whole");
        }
    }
    let st = store.stats().unwrap();
    assert_eq!(
        st.total_samples,
        per_bucket[first_kept..].iter().sum::<u64>()
    );
    assert!(
        (st.frames as usize) < frames_created,
        "evicted frames were swept"
    );
    assert_eq!(
        st.time_bounds.unwrap().start_unix_ns,
        T0 + first_kept as u64 * 10 * S
    );
}

#[test]
fn filters_narrow_by_labels_and_frame_types() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    store.ingest(&demo_profile("h1", T0, 1)).unwrap();
    store.ingest(&demo_profile("h2", T0, 2)).unwrap();
    let r = range(T0, T0 + 10 * S);
    let count = |f: Filter| total(&store.merged(r, &f).unwrap());
    assert_eq!(count(filter()), 600);
    assert_eq!(store.merged(r, &filter()).unwrap().host_name, "");
    let h2 = Filter {
        host: Some("h2".into()),
        ..filter()
    };
    assert_eq!(count(h2.clone()), 400);
    assert_eq!(store.merged(r, &h2).unwrap().host_name, "h2");
    assert_eq!(
        count(Filter {
            container: Some("c0ffee".into()),
            ..filter()
        }),
        90
    );
    assert_eq!(
        count(Filter {
            process_name: Some("app".into()),
            ..filter()
        }),
        510
    );
    assert_eq!(
        count(Filter {
            pid: Some(200),
            ..filter()
        }),
        90
    );
    assert_eq!(
        count(Filter {
            thread: Some("worker".into()),
            ..filter()
        }),
        120
    );
    assert_eq!(
        count(Filter {
            tid: Some(101),
            ..filter()
        }),
        120
    );
    let ft = |s: &str| Filter {
        frame_type: Some(s.parse().unwrap()),
        ..filter()
    };
    assert_eq!(count(ft("kernel")), 60);
    assert_eq!(count(ft("interpreted")), 90);
    assert_eq!(count(ft("cpython")), 90);
    assert_eq!(count(ft("python")), 90);
    assert_eq!(count(ft("error")), 12);
    assert_eq!(count(ft("native")), 600);
    assert_eq!(count(ft("jvm")), 0);
    assert_eq!(
        count(Filter {
            process_name: Some("app".into()),
            host: Some("h1".into()),
            frame_type: Some("kernel".parse().unwrap()),
            ..filter()
        }),
        20
    );
    assert_eq!(
        count(Filter {
            process_name: Some("nope".into()),
            ..filter()
        }),
        0
    );
    assert!("bogus".parse::<FrameTypeFilter>().is_err());

    let known = store.known_values(r).unwrap();
    assert_eq!(known.hosts, ["h1", "h2"]);
    assert_eq!(known.containers, ["c0ffee"]);
    assert_eq!(known.processes, ["app", "db"]);
    assert_eq!(
        known.pids,
        [(100, "app".to_string()), (200, "db".to_string())]
    );
    assert_eq!(known.threads, ["app", "db-writer", "worker"]);
    assert_eq!(
        known.frame_types,
        ["kernel", "native", "interpreted", "error", "cpython"]
    );
    assert_eq!(
        store.known_values(range(0, T0)).unwrap(),
        KnownValues::default()
    );
}

#[test]
fn top_functions_count_self_and_total_once_per_sample() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    store.ingest(&demo_profile("h1", T0, 1)).unwrap();
    let r = range(T0, T0 + 10 * S);
    let top = store.top_functions(r, &filter(), 3).unwrap();
    let got: Vec<(&str, u64, u64)> = top
        .iter()
        .map(|f| (&*f.name, f.self_count, f.total))
        .collect();
    assert_eq!(
        got,
        [
            ("chain_c", 106, 106),
            ("chain_b", 40, 140),
            ("dumps", 30, 30)
        ]
    );
    let all = store.top_functions(r, &filter(), 100).unwrap();
    let get = |n: &str| all.iter().find(|f| &*f.name == n).unwrap().clone();
    assert_eq!((get("main").self_count, get("main").total), (0, 200));
    assert_eq!((get("recurse").self_count, get("recurse").total), (0, 6));
    assert_eq!(get("vfs_write").class, FrameClass::Kernel);
    assert_eq!(get("dumps").class, FrameClass::Interpreted);
    let err = profile::error_frame_name(3);
    assert_eq!(get(&err).class, FrameClass::Error);
    let by_total = store
        .top_functions_by(r, &filter(), 2, TopBy::Total)
        .unwrap();
    assert_eq!(&*by_total[0].name, "main");
    assert_eq!(&*by_total[1].name, "chain_a");
    assert_eq!(by_total[1].total, 160);

    let g = store.flamegraph(r, &filter()).unwrap();
    assert_eq!(g.total(), 200);
    let c = g.find("chain_c");
    let totals: BTreeSet<u64> = c.iter().map(|&i| g.nodes[i as usize].total).collect();
    assert_eq!(totals, BTreeSet::from([100, 6]));
}

#[test]
fn diff_normalizes_by_range_totals() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let a = range(T0, T0 + 10 * S);
    let b = range(T0 + 60 * S, T0 + 70 * S);
    store.ingest(&demo_profile("h1", T0, 1)).unwrap();
    let mut pb = demo_profile("h1", T0 + 60 * S, 1);
    pb.samples[0].count += 200;
    pb.samples[0].timestamps_unix_ns = vec![T0 + 61 * S; 300];
    store.ingest(&pb).unwrap();

    let d = store.diff(a, b, &filter()).unwrap();
    assert_eq!((d.a_total, d.b_total), (200, 400));
    let top = &d.stacks[0];
    assert_eq!(top.frames[0].function_name.as_deref(), Some("chain_c"));
    assert_eq!((top.a, top.b), (100, 300));
    assert!((d.stack_delta(top) - (0.75 - 0.5)).abs() < 1e-9);
    let f = |n: &str| d.functions.iter().find(|f| &*f.name == n).unwrap().clone();
    let c = f("chain_c");
    assert_eq!((c.a_self, c.b_self), (106, 306));
    assert!((c.self_delta - (306.0 / 400.0 - 106.0 / 200.0)).abs() < 1e-9);
    let b_fn = f("chain_b");
    assert!((b_fn.self_delta - (0.1 - 0.2)).abs() < 1e-9);
    assert_eq!(f("main").total_delta, 0.0);
    // Sorted by the size of the change.
    assert!(d
        .functions
        .windows(2)
        .all(|w| w[0].total_delta.abs() >= w[1].total_delta.abs()));

    // The same shares in both ranges: nothing changes.
    let same = store.diff(a, a, &filter()).unwrap();
    assert!(same.functions.iter().all(|f| f.total_delta == 0.0));

    let g = d.flamegraph();
    assert_eq!((g.total(), g.base_total()), (400, 200));
}

#[test]
fn error_frames_are_named_from_the_spec_in_every_query() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let mut p = profile::testdata::errors();
    p.start_unix_ns = T0;
    store.ingest(&p).unwrap();
    let r = range(T0, T0 + 10 * S);
    let names = profile::testdata::ERROR_FRAME_NAMES;

    // The flame graph the page draws: main → one error leaf per code.
    let g = store.flamegraph(r, &filter()).unwrap();
    assert_eq!(g.total(), 6);
    let main = &g.nodes[g.find("main")[0] as usize];
    let mut leaves: Vec<(&str, FrameClass, u64)> = main
        .children
        .iter()
        .map(|&c| &g.nodes[c as usize])
        .map(|n| (&*n.name, n.class, n.self_count))
        .collect();
    leaves.sort_by_key(|l| l.2);
    assert_eq!(
        leaves,
        [
            (names[0], FrameClass::Error, 1),
            (names[1], FrameClass::Error, 2),
            (names[2], FrameClass::Error, 3),
        ]
    );
    assert!(g.nodes.iter().all(|n| !n.name.contains("error code")));

    // Top functions, and the merged profile the pprof download is made of.
    let top = store.top_functions(r, &filter(), 100).unwrap();
    for want in names {
        assert!(top.iter().any(|f| &*f.name == want), "{want} not in top");
    }
    let merged = store.merged(r, &filter()).unwrap();
    let mut got: Vec<String> = merged
        .samples
        .iter()
        .map(|s| merged.frame_name(&s.frames[0]).into_owned())
        .collect();
    got.sort();
    let mut want = names.map(String::from).to_vec();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn reopen_after_drop_keeps_committed_data() {
    let dir = tempfile::tempdir().unwrap();
    let r = range(T0, T0 + 10 * S);
    let before = {
        let (store, _) = open(dir.path());
        store.ingest(&demo_profile("h1", T0, 1)).unwrap();
        store.merged(r, &filter()).unwrap()
        // dropped here without any close
    };
    let (store, _) = open(dir.path());
    assert_eq!(store.merged(r, &filter()).unwrap(), before);
    assert_eq!(store.stats().unwrap().total_samples, 200);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    assert!(TimeRange::new(5, 5).is_err());
    assert!(matches!(
        Store::open(
            dir.path(),
            StoreConfig {
                retention: Duration::ZERO,
                ..StoreConfig::default()
            }
        ),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        Store::open(
            dir.path(),
            StoreConfig {
                max_bytes: 1000,
                ..StoreConfig::default()
            }
        ),
        Err(StoreError::Invalid(_))
    ));
    let (store, _) = open(dir.path());
    // A second handle on the same file is refused.
    assert!(Store::open(dir.path(), StoreConfig::default()).is_err());

    let mut p = demo_profile("h1", T0, 1);
    p.samples[0].timestamps_unix_ns.pop();
    let e = store.ingest(&p).unwrap_err();
    assert!(e.to_string().contains("timestamps"), "{e}");
    // Far-future timestamps (a skewed agent clock) are dropped, not stored.
    let mut p = demo_profile("h1", T0, 1);
    p.samples[0].timestamps_unix_ns = vec![u64::MAX; 100];
    p.samples.truncate(1);
    let st = store.ingest(&p).unwrap();
    assert_eq!((st.samples, st.dropped_future, st.entries), (0, 100, 0));
    // Nothing of the failed profiles was stored, and the store still works.
    assert_eq!(store.stats().unwrap().total_samples, 0);
    assert_eq!(store.stats().unwrap().frames, 0);
    store.ingest(&demo_profile("h1", T0, 1)).unwrap();
    assert_eq!(store.stats().unwrap().total_samples, 200);

    // A file that is not a store.
    let junk = tempfile::tempdir().unwrap();
    std::fs::write(junk.path().join(DB_FILE), vec![0x5a; 10_000]).unwrap();
    let e = Store::open(junk.path(), StoreConfig::default()).unwrap_err();
    assert!(matches!(e, StoreError::Db(_)), "{e}");
}

#[test]
fn queries_run_while_ingesting() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let store = Arc::new(store);
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..20 {
                store
                    .ingest(&demo_profile("h1", T0 + i * 10 * S, 1))
                    .unwrap();
            }
        })
    };
    let mut last = 0;
    while !writer.is_finished() {
        let n = total(&store.merged(TimeRange::ALL, &filter()).unwrap());
        assert!(
            n >= last && n.is_multiple_of(200),
            "snapshots are whole ingests: {n}"
        );
        last = n;
    }
    writer.join().unwrap();
    assert_eq!(
        total(&store.merged(TimeRange::ALL, &filter()).unwrap()),
        4000
    );
}

#[test]
fn lowering_the_cap_compacts_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let n = 60u64;
    // Symbols are what makes this store large: 100 frames per profile with
    // kilobyte-long (C++-template-like) names, 6 MB in all.
    let profile = |i: u64| {
        let mut p = demo_profile("h1", T0 + i * 10 * S, 1);
        for j in 0..100u64 {
            let name = format!("{}_{i}_{j}", "template<".repeat(100));
            p.samples.push(testdata::sample(
                &[
                    native("main", 0x1100),
                    native(&name, 0x10_0000 + i * 1000 + j),
                ],
                testdata::labels(1, 1, "big", "big", None),
                1,
                T0 + i * 10 * S,
                S,
            ));
        }
        p
    };
    {
        let (store, _) = open(dir.path());
        for i in 0..n {
            store.ingest(&profile(i)).unwrap();
        }
        assert!(store.stats().unwrap().allocated_bytes > MIN_MAX_BYTES);
    }
    let config = StoreConfig {
        max_bytes: MIN_MAX_BYTES,
        ..StoreConfig::default()
    };
    let (store, _) = open_at(dir.path(), config, T0 + 3600 * S);
    assert!(store.stats().unwrap().file_bytes > MIN_MAX_BYTES);
    let m = store.maintain().unwrap();
    assert!(
        m.compacted && m.evicted_entries > 0 && m.swept_records > 1000,
        "{m:?}"
    );
    assert!(m.file_bytes_after <= MIN_MAX_BYTES, "{m:?}");
    assert_eq!(m.file_bytes_after, store.stats().unwrap().file_bytes);
    // The newest profile survived, the oldest did not.
    let last = range(T0 + (n - 1) * 10 * S, T0 + n * 10 * S);
    assert_eq!(store.count(last, &filter()).unwrap(), 300);
    assert_eq!(store.count(range(T0, T0 + 10 * S), &filter()).unwrap(), 0);
}

#[test]
fn a_damaged_file_is_an_error_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path());
        for i in 0..20 {
            store
                .ingest(&demo_profile("h1", T0 + i * 10 * S, 1))
                .unwrap();
        }
    }
    let path = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    // Scribble over 32 KiB in the middle of the file (the B-tree pages).
    for b in &mut bytes[len / 3..len / 3 + 32 * 1024] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    let clock = Arc::new(FakeClock(AtomicU64::new(T0)));
    let e = Store::open_with_clock(dir.path(), StoreConfig::default(), clock).unwrap_err();
    assert!(
        matches!(e, StoreError::Corrupt(_) | StoreError::Db(_)),
        "{e}"
    );
}

#[test]
fn a_busy_bucket_spills_into_more_chunks_and_still_sums_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let gen = Synthetic {
        processes: 50,
        threads: 8,
        ..Synthetic::default()
    };
    let pool = gen.stack_pool();
    let mut rng = testdata::Rng::new(11);
    let mut want: HashMap<(Vec<Frame>, SampleLabels), u64> = HashMap::new();
    for _ in 0..8 {
        // Every profile lands in the same 10 s bucket.
        let p = gen.profile(&pool, &mut rng, "h1", T0, 10 * S, 6000);
        for s in &p.samples {
            *want
                .entry((s.frames.to_vec(), s.labels.clone()))
                .or_default() += s.count;
        }
        store.ingest(&p).unwrap();
    }
    let st = store.stats().unwrap();
    assert!(st.sample_chunks >= 2, "64 KiB chunks: {st:?}");
    let got = store.merged(range(T0, T0 + 10 * S), &filter()).unwrap();
    let got: HashMap<(Vec<Frame>, SampleLabels), u64> = got
        .samples
        .iter()
        .map(|s| ((s.frames.to_vec(), s.labels.clone()), s.count))
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "per (stack, labels) counts differ");
    assert_eq!(st.total_samples, 8 * 6000);
}

/// A flame graph as sorted "path total self" lines, independent of the
/// order nodes were created in.
fn canon(g: &FlameGraph) -> Vec<String> {
    fn walk(g: &FlameGraph, i: u32, path: &str, out: &mut Vec<String>) {
        let n = &g.nodes[i as usize];
        let p = format!("{path};{}[{:?}]", n.name, n.class);
        out.push(format!("{p} {} {}", n.total, n.self_count));
        for &c in &n.children {
            walk(g, c, &p, out);
        }
    }
    let mut out = Vec::new();
    walk(g, 0, "", &mut out);
    out.sort();
    out
}

/// The flame graph of a merged profile (the raw-bucket answer).
fn graph_of(p: &Profile) -> FlameGraph {
    let names = flame::names(p.executables.clone());
    let mut g = FlameGraph::new();
    for s in &p.samples {
        g.add_stack(&s.frames, &names, s.count, 0);
    }
    g.sort();
    g
}

#[test]
fn rollups_answer_exactly_like_raw_buckets() {
    use crate::query::Segment;
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        retention: Duration::from_secs(3 * 3600),
        ..StoreConfig::default()
    };
    let (store, clock) = open_at(dir.path(), config, T0 + 3 * 3600 * S);
    let gen = Synthetic {
        stacks: 200,
        processes: 5,
        threads: 2,
        ..Synthetic::default()
    };
    let pool = gen.stack_pool();
    let mut rng = testdata::Rng::new(5);
    // Three hours, one profile per 100 s, plus the demo every 10 minutes.
    for i in 0..108u64 {
        let start = T0 + i * 100 * S;
        store
            .ingest(&gen.profile(
                &pool,
                &mut rng,
                &format!("h{}", i % 2),
                start,
                100 * S,
                1500,
            ))
            .unwrap();
        if i % 6 == 0 {
            store
                .ingest(&demo_profile("h9", start + 50 * S, 1))
                .unwrap();
        }
    }
    assert!(store.stats().unwrap().rollup_chunks >= 18);

    let kernel = Filter {
        frame_type: Some("kernel".parse().unwrap()),
        ..filter()
    };
    let check = |store: &Store, r: TimeRange| {
        let raw = store.merged(r, &filter()).unwrap();
        assert_eq!(store.count(r, &filter()).unwrap(), raw.total_samples());
        assert_eq!(
            canon(&store.flamegraph(r, &filter()).unwrap()),
            canon(&graph_of(&raw))
        );
        let raw_k = store.merged(r, &kernel).unwrap();
        assert_eq!(store.count(r, &kernel).unwrap(), raw_k.total_samples());
        let top = store.top_functions(r, &filter(), 5).unwrap();
        let g = graph_of(&raw);
        for f in &top {
            let self_sum: u64 = g
                .find(&f.name)
                .iter()
                .map(|&i| g.nodes[i as usize].self_count)
                .sum();
            assert_eq!(f.self_count, self_sum, "{}", f.name);
        }
        let known = store.known_values(r).unwrap();
        let processes: BTreeSet<String> = raw
            .samples
            .iter()
            .map(|s| s.labels.process_name.to_string())
            .collect();
        assert_eq!(known.processes, processes.into_iter().collect::<Vec<_>>());
    };
    // Ranges that start and end inside rollups, cover several, or none.
    let ranges = [
        range(T0 + 123 * S, T0 + 8231 * S),
        range(T0, T0 + 3 * 3600 * S),
        range(T0 + 600 * S, T0 + 1200 * S),
        range(T0 + 3000 * S, T0 + 3100 * S),
        TimeRange::ALL,
    ];
    for r in ranges {
        check(&store, r);
    }
    // The long range really reads rollups.
    let plan = store
        .with_view(|v| Ok(v.plan(store.live_buckets(ranges[0]), true)))
        .unwrap();
    assert!(
        matches!(plan.as_slice(), [Segment::Raw(..), Segment::Rollup(a, b), Segment::Raw(..)] if b - a >= 10),
        "{plan:?}"
    );

    // Retention cuts into the middle of a rollup: that rollup is dropped,
    // and answers stay exact.
    clock
        .0
        .store(T0 + 4 * 3600 * S + 1234 * S, Ordering::SeqCst);
    let before = store.stats().unwrap().rollup_chunks;
    let m = store.maintain().unwrap();
    assert!(m.expired_samples > 0);
    assert!(store.stats().unwrap().rollup_chunks < before);
    for r in ranges {
        check(&store, r);
    }
    // Late data for a bucket whose rollup was dropped stays raw-only and
    // is still counted.
    let late = demo_profile("late", T0 + 3600 * S + 1240 * S, 1);
    store.ingest(&late).unwrap();
    for r in ranges {
        check(&store, r);
    }
}
