//! `record`: sample for a while, aggregate identical stacks, symbolize once
//! at the end (each distinct address once), and hand back resolved stacks.

use crate::aggregate::{host_name, Aggregator, Resolver};
use crate::loader::LoadError;
use crate::session::{Session, SessionOptions};
use libpf::generated::metrics::MetricId;
use profile::Profile;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What a recording saw.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub duration: Duration,
    pub cpus: usize,
    pub frequency: u64,
    pub samples: u64,
    /// Traces that reached the end of the stack (or were kernel-only).
    pub complete: u64,
    /// Traces ended by an unwind error, by error name.
    pub errors: BTreeMap<String, u64>,
    /// Samples dropped before unwinding or lost on the way, by reason.
    pub dropped: BTreeMap<String, u64>,
    pub decode_errors: u64,
    /// Process mapping scans and their failures.
    pub scans: u64,
    pub scan_errors: u64,
    pub tables_loaded: u64,
    pub rows_loaded: u64,
    /// Tables read back from the on-disk cache rather than built.
    pub tables_from_cache: u64,
    pub python: PythonSummary,
}

/// What the Python unwinder did in a recording.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PythonSummary {
    /// CPython interpreters recognised, and those left native.
    pub interpreters: u64,
    pub interpreters_rejected: u64,
    /// Python frames the kernel emitted.
    pub frames: u64,
    /// Interpreter loops left native because a walk failed (all reasons).
    pub walk_errors: u64,
    /// Code objects read, and those that could not be.
    pub code_reads: u64,
    pub code_read_errors: u64,
}

impl Summary {
    /// One line for the terminal.
    pub fn line(&self) -> String {
        let pct = if self.samples > 0 {
            100.0 * self.complete as f64 / self.samples as f64
        } else {
            0.0
        };
        let mut s = format!(
            "{} samples in {:.1}s on {} CPUs at {} Hz, {} unwound fully ({pct:.1}%)",
            self.samples,
            self.duration.as_secs_f64(),
            self.cpus,
            self.frequency,
            self.complete
        );
        if !self.errors.is_empty() {
            let e: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            s.push_str(&format!("; errors: {}", e.join(", ")));
        }
        let dropped: Vec<String> = self
            .dropped
            .iter()
            .filter(|(_, &v)| v > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if !dropped.is_empty() {
            s.push_str(&format!("; dropped: {}", dropped.join(", ")));
        }
        let py = &self.python;
        if py.interpreters + py.interpreters_rejected > 0 {
            s.push_str(&format!("; Python: {} frames", py.frames));
            if py.walk_errors > 0 {
                s.push_str(&format!(", {} loops left native", py.walk_errors));
            }
            if py.code_read_errors > 0 {
                s.push_str(&format!(
                    ", {} code objects unreadable",
                    py.code_read_errors
                ));
            }
            if py.interpreters_rejected > 0 {
                s.push_str(&format!(
                    ", {} interpreters of unsupported versions",
                    py.interpreters_rejected
                ));
            }
        }
        s
    }
}

/// Live figures for a progress display.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub elapsed: Duration,
    pub samples: u64,
    pub dropped: u64,
}

pub struct Recording {
    pub profile: Profile,
    pub summary: Summary,
}

/// Settings of one recording.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    pub session: SessionOptions,
    /// Stop after this long; `None` runs until `stop` is set.
    pub duration: Option<Duration>,
    /// Resolve file and line numbers from DWARF (else symbol tables only).
    pub debug_info: bool,
    /// Keep native frames as raw addresses.
    pub symbolize: bool,
}

/// Records until the duration passes or `stop` is set (Ctrl-C); the data
/// gathered so far is returned either way.
pub fn record(
    opts: &RecordOptions,
    stop: &AtomicBool,
    mut progress: impl FnMut(&Progress),
) -> Result<Recording, LoadError> {
    let mut session = Session::new(opts.session.clone())?;
    let cpus = session.start()?;
    let started = Instant::now();
    let start_unix_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut agg = Aggregator::new(false);
    let mut last_progress = Instant::now();
    loop {
        let elapsed = started.elapsed();
        if stop.load(Ordering::Relaxed) || opts.duration.is_some_and(|d| elapsed >= d) {
            break;
        }
        let left = opts
            .duration
            .map(|d| d.saturating_sub(elapsed))
            .unwrap_or(Duration::MAX);
        session.wait(left.min(Duration::from_millis(100)));
        session.drain(|_, t| agg.add(t));
        if last_progress.elapsed() >= Duration::from_millis(100) {
            last_progress = Instant::now();
            progress(&Progress {
                elapsed: started.elapsed(),
                samples: agg.samples,
                dropped: dropped_samples(&session),
            });
        }
    }
    let duration = started.elapsed();
    // What the kernel wrote before we stopped is still read.
    session.drain(|_, t| agg.add(t));

    let mut dropped = BTreeMap::new();
    for (m, label) in [
        (MetricId::SamplesPidUnknown, "process not scanned yet"),
        (MetricId::TracesDropped, "trace ring buffer full"),
        (MetricId::PidEventsDropped, "process events lost"),
    ] {
        dropped.insert(label.to_string(), session.metric(m));
    }
    let ts = session.tracker.stats.clone();
    let summary = Summary {
        duration,
        cpus,
        frequency: opts.session.frequency,
        samples: agg.samples,
        complete: agg.complete,
        errors: agg.errors.clone(),
        dropped,
        decode_errors: session.stats.decode_errors,
        scans: ts.scans,
        scan_errors: ts.scan_errors,
        tables_loaded: ts.tables_loaded,
        tables_from_cache: session.tracker.table_cache_stats().map_or(0, |c| c.hits),
        rows_loaded: ts.rows_loaded,
        python: PythonSummary {
            interpreters: ts.python_files,
            interpreters_rejected: ts.python_files_rejected,
            frames: session.metric(MetricId::PythonFrames),
            walk_errors: [
                MetricId::UnwindPythonErrNoProcInfo,
                MetricId::UnwindPythonErrBadFrameObjectAddr,
                MetricId::UnwindPythonErrBadCframeCurrentFrameAddr,
                MetricId::UnwindPythonErrReadThreadStateAddr,
                MetricId::UnwindPythonErrZeroThreadState,
                MetricId::UnwindPythonErrBadThreadStateFrameAddr,
            ]
            .into_iter()
            .map(|m| session.metric(m))
            .sum(),
            code_reads: agg.python_code_reads().0,
            code_read_errors: agg.python_code_reads().1,
        },
    };
    let batch = agg.take();
    let mut resolver = Resolver::new(opts.symbolize, opts.debug_info);
    let mut profile = resolver.resolve(&session.tracker, batch);
    profile.start_unix_ns = start_unix_ns;
    profile.duration_ns = duration.as_nanos() as u64;
    profile.frequency_hz = opts.session.frequency;
    profile.host_name = host_name();
    Ok(Recording { profile, summary })
}

fn dropped_samples(s: &Session) -> u64 {
    s.metric(MetricId::SamplesPidUnknown) + s.metric(MetricId::TracesDropped)
}
