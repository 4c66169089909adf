//! Store bench: ingest throughput, bytes per sample, and query latency on an
//! hour of data with 10^6 samples.
//!
//! `cargo bench -p store` prints a table, one column per workload. Both are
//! `testdata::Synthetic` stacks (depth 4–40 from 600 functions, a fifth
//! with kernel frames, skewed so a few stacks are hot), sent as 360
//! profiles of 10 s each, as an agent reporting every 10 s for an hour
//! would:
//!
//! * spread: 2000 stacks over 20 processes × 4 threads. Almost every sample
//!   is a distinct (bucket, stack, thread): the worst case for storage.
//! * concentrated: 300 stacks over 4 processes × 2 threads, closer to a
//!   host running a few busy services.
//!
//! `BENCH_SAMPLES` overrides the total sample count (default 10^6).

use std::time::{Duration, Instant};
use store::testdata::{Rng, Synthetic};
use store::{Filter, Store, StoreConfig, TimeRange, BUCKET_NS};

const S: u64 = 1_000_000_000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        last = Some(f());
        times.push(t.elapsed());
    }
    (median(times), last.unwrap())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

struct Workload {
    name: &'static str,
    gen: Synthetic,
}

/// Runs one workload; returns (row label, value) pairs.
fn run(w: &Workload, total_samples: u64) -> Vec<(String, String)> {
    let profiles = 360u64;
    let per_profile = total_samples / profiles;
    let dir = tempfile::tempdir().unwrap();
    let now = store::Clock::now_unix_ns(&store::SystemClock);
    let end = now / BUCKET_NS * BUCKET_NS;
    let start = end - 3600 * S;

    let pool = w.gen.stack_pool();
    let mut rng = Rng::new(42);
    let data: Vec<_> = (0..profiles)
        .map(|i| {
            w.gen.profile(
                &pool,
                &mut rng,
                "bench-host",
                start + i * 10 * S,
                10 * S,
                per_profile,
            )
        })
        .collect();
    let model_samples: usize = data.iter().map(|p| p.samples.len()).sum();

    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let t = Instant::now();
    let mut stored = 0;
    for p in &data {
        stored += store.ingest(p).unwrap().samples;
    }
    let ingest = t.elapsed();
    let st = store.stats().unwrap();
    assert_eq!(st.total_samples, stored);

    let hour = TimeRange::new(start, end).unwrap();
    let first_half = TimeRange::new(start, start + 1800 * S).unwrap();
    let second_half = TimeRange::new(start + 1800 * S, end).unwrap();
    let all = Filter::default();
    let one_proc = Filter {
        process_name: Some("proc3".into()),
        ..Filter::default()
    };
    let kernel = Filter {
        frame_type: Some("kernel".parse().unwrap()),
        ..Filter::default()
    };

    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |k: &str, v: String| rows.push((k.to_string(), v));
    row("workload", w.name.to_string());
    row(
        "shape",
        format!(
            "{} stacks, {} procs x {} threads",
            w.gen.stacks, w.gen.processes, w.gen.threads
        ),
    );
    row(
        "samples ingested",
        format!("{stored} ({model_samples} model samples)"),
    );
    row("ingest, 360 profiles", ms(ingest));
    row(
        "ingest throughput",
        format!(
            "{:.0} profiles/s, {:.0} samples/s",
            profiles as f64 / ingest.as_secs_f64(),
            stored as f64 / ingest.as_secs_f64()
        ),
    );
    row(
        "entries / chunks / rollup chunks",
        format!(
            "{} / {} / {}",
            st.sample_entries, st.sample_chunks, st.rollup_chunks
        ),
    );
    row(
        "stacks/frames/labels/strings",
        format!(
            "{} / {} / {} / {}",
            st.stacks, st.frames, st.label_sets, st.strings
        ),
    );
    row("file bytes", st.file_bytes.to_string());
    row("pages in use (bytes)", st.allocated_bytes.to_string());
    row(
        "file bytes per sample",
        format!("{:.2}", st.file_bytes as f64 / stored as f64),
    );
    row(
        "in-use bytes per sample",
        format!("{:.2}", st.allocated_bytes as f64 / stored as f64),
    );

    let (d, g) = time(5, || store.flamegraph(hour, &all).unwrap());
    assert_eq!(g.total(), stored);
    row(
        "flame graph 1 h",
        format!("{} ({} nodes)", ms(d), g.nodes.len()),
    );
    // A host filter that matches everything: same answer, but a label
    // condition makes the query read the raw buckets, not the rollups.
    let host = Filter {
        host: Some("bench-host".into()),
        ..Filter::default()
    };
    let (d, g) = time(5, || store.flamegraph(hour, &host).unwrap());
    assert_eq!(g.total(), stored);
    row("flame graph 1 h, raw buckets only", ms(d));
    let (d, p) = time(5, || store.merged(hour, &all).unwrap());
    row(
        "merged profile 1 h",
        format!("{} ({} samples)", ms(d), p.samples.len()),
    );
    let (d, _) = time(5, || store.flamegraph(hour, &one_proc).unwrap());
    row("flame graph 1 h, process filter", ms(d));
    let (d, _) = time(5, || store.flamegraph(hour, &kernel).unwrap());
    row("flame graph 1 h, frame-type filter", ms(d));
    let (d, _) = time(5, || store.top_functions(hour, &all, 50).unwrap());
    row("top 50 functions 1 h", ms(d));
    let (d, _) = time(5, || store.diff(first_half, second_half, &all).unwrap());
    row("diff 30 min vs 30 min", ms(d));
    let (d, _) = time(5, || store.known_values(hour).unwrap());
    row("filter values 1 h", ms(d));
    let five_min = TimeRange::new(end - 300 * S, end).unwrap();
    let (d, _) = time(5, || store.flamegraph(five_min, &all).unwrap());
    row("flame graph last 5 min", ms(d));

    drop(store);
    let t = Instant::now();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    row("reopen (with integrity check)", ms(t.elapsed()));
    let t = Instant::now();
    let g = store.flamegraph(hour, &all).unwrap();
    assert_eq!(g.total(), stored);
    row("flame graph 1 h, after reopen", ms(t.elapsed()));
    rows
}

fn main() {
    let total_samples: u64 = std::env::var("BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let workloads = [
        Workload {
            name: "spread (worst case)",
            gen: Synthetic::default(),
        },
        Workload {
            name: "concentrated",
            gen: Synthetic {
                stacks: 300,
                processes: 4,
                threads: 2,
                ..Synthetic::default()
            },
        },
    ];
    let results: Vec<Vec<(String, String)>> =
        workloads.iter().map(|w| run(w, total_samples)).collect();
    let w0 = results[0].iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let w1 = results[0].iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    println!(
        "\nstore bench, 1 hour, {total_samples} samples ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for (i, (k, v)) in results[0].iter().enumerate() {
        let other = results.get(1).map_or("", |r| r[i].1.as_str());
        println!("{k:<w0$} | {v:<w1$} | {other}");
        if i == 1 {
            println!("{:-<w0$}-+-{:-<w1$}-+-{:-<40}", "", "", "");
        }
    }
}
