//! A profiling session: the loaded eBPF object, the process tracker and the
//! loop that reads both ring buffers. `record` and the continuous agent are
//! built on it.

use crate::loader::{self, KernelMaps, LoadError, LoadOptions, Outputs, Sampler};
use crate::procinfo::ProcessMeta;
use crate::table_cache::{self, TableCache};
use crate::tracker::{self, Tracker};
use libpf::generated::metrics::{MetricId, MetricOrigin};
use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::abi::PidEventKind;
use support::trace::{decode_event, decode_trace, RawTrace};

/// Which processes a session samples.
#[derive(Clone, Debug, Default)]
pub enum Target {
    /// Every process on the machine.
    #[default]
    System,
    /// Only processes the filter selects. Decided once per process (and
    /// again after exec); excluded ones are dropped in the kernel with one
    /// lookup, so they cost no unwinding.
    Filtered(Filter),
}

impl Target {
    /// Only these processes and the children they fork.
    pub fn pids(pids: Vec<u32>) -> Target {
        Target::Filtered(Filter {
            pids,
            ..Filter::default()
        })
    }
}

/// Conditions a process must all meet to be profiled; an empty filter
/// selects every process.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// These processes (and the children they fork); empty: any.
    pub pids: Vec<u32>,
    /// Process name (`/proc/PID/comm`) matches this regex.
    pub comm: Option<regex::Regex>,
    /// The main executable is this file (`/proc/PID/exe`).
    pub exe: Option<PathBuf>,
    /// The process's cgroup path starts with this (a container, a unit).
    pub cgroup: Option<String>,
}

impl Filter {
    /// Whether a process passes every condition but the PID list (which the
    /// session tracks with the processes' descendants).
    pub fn matches_labels(&self, meta: &ProcessMeta) -> bool {
        if let Some(re) = &self.comm {
            if !re.is_match(&meta.name) {
                return false;
            }
        }
        if let Some(exe) = &self.exe {
            if meta.exe_path.as_deref().map(Path::new) != Some(exe.as_path()) {
                return false;
            }
        }
        if let Some(prefix) = &self.cgroup {
            let Some(cg) = meta.cgroup.as_deref() else {
                return false;
            };
            let prefix = prefix.trim_end_matches('/');
            if !(cg == prefix || cg.starts_with(&format!("{prefix}/")) || prefix.is_empty()) {
                return false;
            }
        }
        true
    }
}

/// Session settings.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub target: Target,
    pub frequency: u64,
    pub load: LoadOptions,
    /// Keep built unwind tables in this directory across runs
    /// ([`crate::table_cache`]); `None`: build every table at every start.
    pub table_cache: Option<PathBuf>,
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
    filter: Option<Filter>,
    /// PIDs a PID filter selected, with their descendants.
    selected_pids: HashSet<u32>,
    /// Processes whose tables were loaded without an address space
    /// ([`Tracker::load_tables`]); the next report scans them.
    tables_only: HashSet<u32>,
    frequency: u64,
    last_reap: Instant,
    pub stats: SessionStats,
}

impl Session {
    /// Loads the eBPF object and scans the target processes; sampling starts
    /// with `start`.
    pub fn new(opts: SessionOptions) -> Result<Session, LoadError> {
        let mut load = opts.load.clone();
        let filter = match &opts.target {
            Target::System => None,
            Target::Filtered(f) => Some(f.clone()),
        };
        load.filter_pids = filter.is_some();
        let (sampler, maps, outputs) = Sampler::load(&load)?;
        let mut tracker = Tracker::new(maps.rows.capacity());
        if let Some(dir) = &opts.table_cache {
            match TableCache::open(dir, table_cache::DEFAULT_BUDGET) {
                Ok(c) => tracker.set_table_cache(Some(c)),
                Err(e) => tracing::warn!(
                    dir = %dir.display(),
                    error = %e,
                    "no unwind table cache: tables are built at every start"
                ),
            }
        }
        let selected_pids = filter
            .as_ref()
            .map(|f| f.pids.iter().copied().collect())
            .unwrap_or_default();
        let mut s = Session {
            sampler,
            maps,
            outputs,
            tracker,
            filter,
            selected_pids,
            tables_only: HashSet::new(),
            frequency: opts.frequency,
            last_reap: Instant::now(),
            stats: SessionStats::default(),
        };
        for pid in tracker::all_pids() {
            s.decide(pid, false);
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
                Ok(t) => {
                    self.tracker.note_used(&t);
                    on_trace(&self.tracker, t)
                }
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

    /// Whether the filter selects `pid`.
    fn wanted(&mut self, pid: u32) -> bool {
        let Some(f) = &self.filter else {
            return true;
        };
        if !f.pids.is_empty() && !self.selected_pids.contains(&pid) {
            return false;
        }
        let f = f.clone();
        f.matches_labels(&self.tracker.meta(pid))
    }

    /// Scans a selected process, or marks an unselected one excluded.
    fn decide(&mut self, pid: u32, after_exec: bool) {
        if after_exec {
            self.tracker.refresh_meta(pid);
        }
        let res = if self.wanted(pid) {
            self.tracker.meta(pid);
            self.tracker.scan(&mut self.maps, pid).map(|_| ())
        } else {
            self.tracker.exclude(&mut self.maps, pid)
        };
        if let Err(e) = res {
            tracing::debug!(pid, error = %e, "process not set up");
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
                PidEventKind::New if self.filter.is_none() => {
                    // Unwound without a scan: only its labels are needed.
                    self.tracker.meta(e.pid);
                }
                PidEventKind::Unknown
                    if self.filter.is_none()
                        && self.sampler.uses_find_vma()
                        && !self.tracker.is_tracked(e.pid)
                        && self.tables_only.insert(e.pid) =>
                {
                    // First time the kernel could not unwind it: load what it
                    // maps, no address space yet (most such processes are
                    // short-lived). Still failing a second later: scan it.
                    if let Err(err) = self.tracker.load_tables(&mut self.maps, e.pid) {
                        tracing::debug!(pid = e.pid, error = %err, "tables not loaded");
                    }
                }
                PidEventKind::Unknown | PidEventKind::New => self.decide(e.pid, false),
                PidEventKind::Exec if self.filter.is_none() && self.sampler.uses_find_vma() => {
                    self.tables_only.remove(&e.pid);
                    // Its samples unwind without a scan: scanned only once the
                    // kernel reports it (most processes of a build or a shell
                    // script are never sampled, and a scan right at exec sees
                    // only the executable and the loader, so it would be
                    // scanned twice).
                    self.tracker.remove(&mut self.maps, e.pid);
                    self.tracker.forget_meta(e.pid);
                }
                PidEventKind::Exec => {
                    self.tracker.remove(&mut self.maps, e.pid);
                    self.decide(e.pid, true);
                }
                PidEventKind::Exit => {
                    self.tables_only.remove(&e.pid);
                    self.tracker.remove(&mut self.maps, e.pid);
                    self.selected_pids.remove(&e.pid);
                }
                PidEventKind::Fork if self.tracker.is_excluded(e.parent_pid) => {
                    self.tracker.adopt_excluded(e.pid);
                }
                PidEventKind::Fork => {
                    // The child of a selected process is selected too, and
                    // shares the parent's labels until it execs.
                    self.selected_pids.insert(e.pid);
                    match self.tracker.known_meta(e.parent_pid).cloned() {
                        Some(m) => self.tracker.set_meta(e.pid, m),
                        // A parent never sampled (a zygote that only forks):
                        // the child's own /proc entry says the same, now,
                        // before it can exit unlabelled.
                        None => {
                            self.tracker.meta(e.pid);
                        }
                    }
                    if !self.tracker.on_fork(&mut self.maps, e.pid, e.asid) {
                        self.decide(e.pid, false);
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

    /// Selects `pid` too (a filtered session) and scans it now.
    pub fn add_pid(&mut self, pid: u32) {
        self.selected_pids.insert(pid);
        self.decide(pid, false);
    }

    /// Unloads every table no process uses (they are otherwise kept for the
    /// next process of the same file); returns how many.
    pub fn unload_idle_tables(&mut self) -> usize {
        self.tracker.unload_idle(&mut self.maps)
    }

    /// Whether the programs resolve processes not scanned yet in the kernel.
    pub fn uses_find_vma(&self) -> bool {
        self.sampler.uses_find_vma()
    }

    /// Whether the kernel holds an unwind table for this executable id.
    pub fn has_table(&self, exe_id: u64) -> bool {
        self.maps.exe_tables.get(&exe_id, 0).is_ok()
    }

    /// The eBPF side's mapping-cache generation (see `KernelMaps`).
    pub fn mapping_generation(&self) -> u64 {
        self.maps.generation()
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
