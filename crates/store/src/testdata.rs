//! Synthetic profiles for tests, benches and demos of the store and the web
//! UI: a small hand-made workload whose numbers tests can assert on, and a
//! large generated one for measurements. Public so that the web crate's
//! tests and the collector's demo mode use the same data.

use libpf::{FileId, Frame, FrameKind, FrameType};
use profile::{Executable, Profile, Sample, SampleLabels};
use std::collections::BTreeMap;
use std::sync::Arc;

/// FileId of the demo `app` executable.
pub const APP_FILE: FileId = FileId::new(0x1111, 0x2222);
/// FileId of the demo libc.
pub const LIBC_FILE: FileId = FileId::new(0x3333, 0x4444);

/// A symbolized native frame of the demo app.
pub fn native(name: &str, addr: u64) -> Frame {
    Frame::new(FrameType::NATIVE, Some(APP_FILE), addr)
        .with_function(name)
        .with_source("src/app.c", Some((addr % 500) as u32 + 1))
}

/// A symbolized kernel frame.
pub fn kernel(name: &str, addr: u64) -> Frame {
    Frame::new(FrameType::KERNEL, Some(FileId::UNKNOWN_KERNEL), addr).with_function(name)
}

/// A CPython frame.
pub fn python(name: &str, line: u64) -> Frame {
    Frame::new(FrameType::from_kind(FrameKind::Python), None, line)
        .with_function(name)
        .with_source("service.py", Some(line as u32))
}

/// Labels of a thread.
pub fn labels(
    pid: u32,
    tid: u32,
    process: &str,
    thread: &str,
    container: Option<&str>,
) -> SampleLabels {
    SampleLabels {
        pid,
        tid,
        process_name: process.into(),
        thread_name: thread.into(),
        cpu: Some(tid % 2),
        container_id: container.map(Into::into),
        executable_path: Some(format!("/usr/bin/{process}").into()),
    }
}

/// A sample of `count` with its frames given root first (as one reads a
/// call chain) and timestamps spread evenly over `[start, start+dur)`.
pub fn sample(
    root_first: &[Frame],
    labels: SampleLabels,
    count: u64,
    start: u64,
    dur: u64,
) -> Sample {
    let frames: Arc<[Frame]> = root_first.iter().rev().cloned().collect::<Vec<_>>().into();
    let timestamps = (0..count).map(|i| start + dur * i / count.max(1)).collect();
    Sample {
        frames,
        labels,
        count,
        timestamps_unix_ns: timestamps,
    }
}

fn executables() -> BTreeMap<FileId, Executable> {
    let mut m = BTreeMap::new();
    m.insert(
        APP_FILE,
        Executable {
            file_id: APP_FILE,
            path: "/usr/bin/app".into(),
            gnu_build_id: Some("00112233445566778899aabbccddeeff00112233".into()),
            vaddr_start: 0x1000,
            vaddr_end: 0x9000,
        },
    );
    m.insert(
        LIBC_FILE,
        Executable {
            file_id: LIBC_FILE,
            path: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
            gnu_build_id: None,
            vaddr_start: 0x28000,
            vaddr_end: 0x1bd000,
        },
    );
    m
}

/// The demo workload over `[start, start + 10 s)` at 20 Hz, scaled by
/// `scale` (1 → 200 samples). Per unit of scale:
///
/// | process (pid, thread) | stack (root first) | samples |
/// |---|---|---|
/// | app (100, `app`) | main → chain_a → chain_b → chain_c | 100 |
/// | app (100, tid 101 `worker`) | main → chain_a → chain_b | 40 |
/// | app (100, `app`) | main → chain_a → write → entry_SYSCALL_64 → do_syscall_64 → ksys_write → vfs_write | 20 |
/// | db (200, `db-writer`, container `c0ffee`) | main → serve → handle_query (py) → dumps (py) | 30 |
/// | app (100, `app`) | main → recurse → recurse → chain_c | 6 |
/// | app (100, `app`) | main → unwind error | 4 |
pub fn demo_profile(host: &str, start_unix_ns: u64, scale: u64) -> Profile {
    let dur = 10_000_000_000;
    let app = || labels(100, 100, "app", "app", None);
    let worker = labels(100, 101, "app", "worker", None);
    let db = labels(200, 201, "db", "db-writer", Some("c0ffee"));
    let main = native("main", 0x1100);
    let a = native("chain_a", 0x1200);
    let b = native("chain_b", 0x1300);
    let c = native("chain_c", 0x1400);
    let write = Frame::new(FrameType::NATIVE, Some(LIBC_FILE), 0x11_4a0u64).with_function("write");
    let kstack = [
        kernel("entry_SYSCALL_64", 0xffff_ffff_8100_0010),
        kernel("do_syscall_64", 0xffff_ffff_8100_0100),
        kernel("ksys_write", 0xffff_ffff_8120_0000),
        kernel("vfs_write", 0xffff_ffff_8120_0100),
    ];
    let mut syscall = vec![main.clone(), a.clone(), write];
    syscall.extend(kstack);
    let serve = native("serve", 0x1500);
    let rec = native("recurse", 0x1600);
    let err = Frame::new(FrameType::NATIVE.with_error(), None, 3u64);
    let s = start_unix_ns;
    Profile {
        start_unix_ns,
        duration_ns: dur,
        frequency_hz: 20,
        host_name: host.to_string(),
        samples: vec![
            sample(
                &[main.clone(), a.clone(), b.clone(), c.clone()],
                app(),
                100 * scale,
                s,
                dur,
            ),
            sample(
                &[main.clone(), a.clone(), b.clone()],
                worker,
                40 * scale,
                s,
                dur,
            ),
            sample(&syscall, app(), 20 * scale, s, dur),
            sample(
                &[
                    main.clone(),
                    serve,
                    python("handle_query", 42),
                    python("dumps", 7),
                ],
                db,
                30 * scale,
                s,
                dur,
            ),
            sample(
                &[main.clone(), rec.clone(), rec, c],
                app(),
                6 * scale,
                s,
                dur,
            ),
            sample(&[main, err], app(), 4 * scale, s, dur),
        ],
        executables: executables(),
    }
}

/// A deterministic pseudo-random generator (xorshift64*), so generated data
/// is the same on every run without a dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Shape of a generated workload.
#[derive(Clone, Debug)]
pub struct Synthetic {
    /// Distinct stacks to draw from.
    pub stacks: usize,
    /// Distinct functions the stacks are built from.
    pub functions: usize,
    /// Processes, each with `threads` threads.
    pub processes: u32,
    pub threads: u32,
    pub seed: u64,
}

impl Default for Synthetic {
    fn default() -> Self {
        Synthetic {
            stacks: 2000,
            functions: 600,
            processes: 20,
            threads: 4,
            seed: 1,
        }
    }
}

impl Synthetic {
    /// The stack pool: call trees under a few entry points, depth 4–40,
    /// about one in five with kernel frames on top. Stacks share prefixes
    /// the way real ones do (each extends a random earlier one).
    pub fn stack_pool(&self) -> Vec<Arc<[Frame]>> {
        let mut rng = Rng::new(self.seed);
        let funcs: Vec<Frame> = (0..self.functions)
            .map(|i| {
                native(
                    &format!(
                        "fn_{i}_{}",
                        ["parse", "alloc", "hash", "io", "compute"][i % 5]
                    ),
                    0x10_000 + 16 * i as u64,
                )
            })
            .collect();
        let kfuncs: Vec<Frame> = (0..40)
            .map(|i| kernel(&format!("kfunc_{i}"), 0xffff_ffff_8100_0000 + 64 * i))
            .collect();
        let mut roots: Vec<Vec<Frame>> = Vec::new();
        let mut pool = Vec::with_capacity(self.stacks);
        for i in 0..self.stacks {
            // root first
            let mut path: Vec<Frame> = if i < 8 || roots.is_empty() {
                vec![
                    native("main", 0x1100),
                    funcs[rng.below(self.functions as u64) as usize].clone(),
                ]
            } else {
                let base = &roots[rng.below(roots.len() as u64) as usize];
                let keep = 1 + rng.below(base.len() as u64) as usize;
                base[..keep].to_vec()
            };
            let extra = 1 + rng.below(6) as usize;
            for _ in 0..extra {
                if path.len() >= 40 {
                    break;
                }
                path.push(funcs[rng.below(self.functions as u64) as usize].clone());
            }
            roots.push(path.clone());
            if rng.below(5) == 0 {
                for _ in 0..(2 + rng.below(5)) {
                    path.push(kfuncs[rng.below(kfuncs.len() as u64) as usize].clone());
                }
            }
            path.reverse();
            pool.push(path.into());
        }
        pool
    }

    /// One profile over `[start, start + dur)` with `samples` samples drawn
    /// from `pool` (skewed: low indexes are hot), each sample on its own
    /// timestamp and thread, aggregated per (stack, thread) like an agent.
    pub fn profile(
        &self,
        pool: &[Arc<[Frame]>],
        rng: &mut Rng,
        host: &str,
        start: u64,
        dur: u64,
        samples: u64,
    ) -> Profile {
        let mut agg: BTreeMap<(usize, u32, u32), Vec<u64>> = BTreeMap::new();
        for _ in 0..samples {
            // Skew: squaring a uniform value makes low indexes hot.
            let u = rng.below(1 << 20) as f64 / f64::from(1 << 20);
            let s = ((u * u) * pool.len() as f64) as usize;
            let p = rng.below(u64::from(self.processes)) as u32;
            let t = rng.below(u64::from(self.threads)) as u32;
            let ts = start + rng.below(dur);
            agg.entry((s.min(pool.len() - 1), p, t))
                .or_default()
                .push(ts);
        }
        let samples = agg
            .into_iter()
            .map(|((s, p, t), mut ts)| {
                ts.sort_unstable();
                let pid = 1000 + p;
                let process = format!("proc{p}");
                let thread = if t == 0 {
                    process.clone()
                } else {
                    format!("worker-{t}")
                };
                let container = (p % 3 == 0).then(|| format!("ctr{p:04}"));
                Sample {
                    frames: pool[s].clone(),
                    labels: labels(pid, pid + t, &process, &thread, container.as_deref()),
                    count: ts.len() as u64,
                    timestamps_unix_ns: ts,
                }
            })
            .collect();
        Profile {
            start_unix_ns: start,
            duration_ns: dur,
            frequency_hz: 20,
            host_name: host.to_string(),
            samples,
            executables: executables(),
        }
    }
}
