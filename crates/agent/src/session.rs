//! A profiling session: the loaded eBPF object, the process tracker and the
//! loop that reads both ring buffers. `record` and the continuous agent are
//! built on it.

use crate::loader::{self, KernelMaps, LoadError, LoadOptions, Outputs, Sampler};
use crate::tracker::{self, Tracker};
use libpf::generated::metrics::{MetricId, MetricOrigin};
use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use support::abi::PidEventKind;
use support::trace::{decode_event, decode_trace, RawTrace};

/// Which processes a session samples.
#[derive(Clone, Debug, Default)]
pub enum Target {
    /// Every process on the machine.
    #[default]
    System,
    /// Only these processes (and the children they fork); filtered in the
    /// kernel, so other processes cost no unwinding.
    Pids(Vec<u32>),
}

/// Session settings.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub target: Target,
    pub frequency: u64,
    pub load: LoadOptions,
}

/// Counts of the session's own work.
#[derive(Clone, Debug, Default)]
pub struct SessionStats {
    pub traces: u64,
    pub decode_errors: u64,
    pub events: u64,
}

pub struct Session {
    sampler: Sampler,
    maps: KernelMaps,
    outputs: Outputs,
    pub tracker: Tracker,
    target_pids: Option<HashSet<u32>>,
    frequency: u64,
    last_reap: Instant,
    pub stats: SessionStats,
}

impl Session {
    /// Loads the eBPF object and scans the target processes; sampling starts
    /// with `start`.
    pub fn new(opts: SessionOptions) -> Result<Session, LoadError> {
        let mut load = opts.load.clone();
        load.filter_pids = matches!(opts.target, Target::Pids(_));
        let (sampler, maps, outputs) = Sampler::load(&load)?;
        let tracker = Tracker::new(maps.rows.capacity());
        let target_pids = match &opts.target {
            Target::System => None,
            Target::Pids(p) => Some(p.iter().copied().collect()),
        };
        let mut s = Session {
            sampler,
            maps,
            outputs,
            tracker,
            target_pids,
            frequency: opts.frequency,
            last_reap: Instant::now(),
            stats: SessionStats::default(),
        };
        let pids = match &s.target_pids {
            Some(p) => p.iter().copied().collect(),
            None => tracker::all_pids(),
        };
        for pid in pids {
            if let Err(e) = s.tracker.scan(&mut s.maps, pid) {
                tracing::debug!(pid, error = %e, "initial scan failed");
            }
        }
        Ok(s)
    }

    /// Starts the perf events; returns the number of CPUs sampled.
    pub fn start(&mut self) -> Result<usize, LoadError> {
        self.sampler.start_sampling(self.frequency)
    }

    /// Waits up to `timeout` for data on either ring buffer.
    pub fn wait(&self, timeout: Duration) {
        let mut fds = [
            libc::pollfd {
                fd: self.outputs.traces.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.outputs.events.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of two pollfd for the call's duration.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    }

    /// Handles pending process events, then hands every pending trace to
    /// `on_trace`. Events go first so a trace's executables are known.
    pub fn drain(&mut self, mut on_trace: impl FnMut(&Tracker, RawTrace)) {
        self.drain_events();
        while let Some(item) = self.outputs.traces.next() {
            self.stats.traces += 1;
            match decode_trace(&item) {
                Ok(t) => on_trace(&self.tracker, t),
                Err(e) => {
                    self.stats.decode_errors += 1;
                    tracing::debug!(error = %e, "undecodable trace record");
                }
            }
        }
        if self.last_reap.elapsed() > Duration::from_secs(5) {
            self.last_reap = Instant::now();
            self.tracker.reap(&mut self.maps);
        }
    }

    /// Drops processes that no longer exist now, instead of at the next
    /// periodic pass.
    pub fn reap(&mut self) -> usize {
        self.last_reap = Instant::now();
        self.tracker.reap(&mut self.maps)
    }

    fn wanted(&self, pid: u32) -> bool {
        match &self.target_pids {
            None => true,
            Some(t) => t.contains(&pid) || self.tracker.is_tracked(pid),
        }
    }

    fn drain_events(&mut self) {
        let mut events = Vec::new();
        while let Some(item) = self.outputs.events.next() {
            match decode_event(&item) {
                Ok(e) => events.push(e),
                Err(e) => tracing::debug!(error = %e, "undecodable process event"),
            }
        }
        for e in events {
            self.stats.events += 1;
            match e.kind {
                PidEventKind::Unknown => {
                    if self.wanted(e.pid) {
                        let _ = self.tracker.scan(&mut self.maps, e.pid);
                    }
                }
                PidEventKind::Exec => {
                    let wanted = self.wanted(e.pid);
                    self.tracker.remove(&mut self.maps, e.pid);
                    if wanted {
                        if let Some(t) = &mut self.target_pids {
                            t.insert(e.pid);
                        }
                        let _ = self.tracker.scan(&mut self.maps, e.pid);
                    }
                }
                PidEventKind::Exit => self.tracker.remove(&mut self.maps, e.pid),
                PidEventKind::Fork => {
                    if !self.tracker.on_fork(&mut self.maps, e.pid, e.asid) {
                        let _ = self.tracker.scan(&mut self.maps, e.pid);
                    }
                }
            }
        }
    }

    /// Current values of the eBPF metrics (summed over CPUs), by id.
    pub fn ebpf_metrics(&self) -> Vec<(MetricId, u64)> {
        MetricId::ALL
            .iter()
            .filter(|m| m.origin() == MetricOrigin::Ebpf)
            .map(|&m| (m, loader::read_metric(&self.outputs.metrics, m as u32)))
            .collect()
    }

    pub fn metric(&self, id: MetricId) -> u64 {
        loader::read_metric(&self.outputs.metrics, id as u32)
    }

    /// Kernel program ids, for BPF run-time statistics.
    pub fn program_ids(&self) -> Vec<(String, u32)> {
        self.sampler.program_ids()
    }

    /// Whether the kernel holds an unwind table for this executable id.
    pub fn has_table(&self, exe_id: u64) -> bool {
        self.maps.exe_tables.get(&exe_id, 0).is_ok()
    }

    /// Entries in the processes and mappings maps, and loaded tables, as the
    /// kernel sees them (for leak checks).
    pub fn kernel_map_counts(&self) -> (usize, usize, usize) {
        (
            self.maps.processes.keys().count(),
            self.maps.mappings.keys().count(),
            self.maps.exe_tables.keys().count(),
        )
    }
}
