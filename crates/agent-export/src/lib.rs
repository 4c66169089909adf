//! `ebpf-profiler agent`: continuous whole-system profiling exported as
//! OTLP profiles.
//!
//! ```text
//!  sampling thread (blocking)                      tokio (current thread)
//!  Session ─drain→ Aggregator ─every interval→     Queue (bytes budget,
//!  Resolver (symbol cache kept) → Profile →  push→  oldest dropped) ─→ exporter:
//!  otlp::encode → protobuf bytes                   gRPC | HTTP, retry/backoff
//! ```
//!
//! * [`config`]: flags > `EBPF_PROFILER_*` > TOML file > defaults.
//! * [`queue`]: the bounded queue and its exact accounting.
//! * [`export`]: the two transports and the retry loop ([`retry`], [`tls`]).
//! * [`metrics`]: self-metrics, Prometheus text and the periodic log line.
//!
//! Not pure: TLS is rustls with the ring provider, which compiles C.

pub mod config;
pub mod export;
pub mod metrics;
pub mod queue;
pub mod retry;
pub mod tls;

use agent::aggregate::{host_name, Aggregator, Resolver};
use agent::loader::LoadOptions;
use agent::session::{Session, SessionOptions, Target};
use config::Settings;
use libpf::generated::metrics::MetricId;
use metrics::Metrics;
use prost::Message;
use queue::{Pushed, Queue};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What the agent did, printed when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub batches_enqueued: u64,
    pub batches_sent: u64,
    pub batches_dropped: u64,
    pub batches_rejected: u64,
    pub batches_unsent: u64,
    pub samples_enqueued: u64,
    pub samples_sent: u64,
    pub samples_dropped: u64,
    pub export_failures: u64,
}

impl Summary {
    /// One `key=value` line (the integration tests parse it).
    pub fn line(&self) -> String {
        format!(
            "agent stopped: batches enqueued={} sent={} dropped={} rejected={} unsent={}; samples enqueued={} sent={} dropped={}; export failures={}",
            self.batches_enqueued,
            self.batches_sent,
            self.batches_dropped,
            self.batches_rejected,
            self.batches_unsent,
            self.samples_enqueued,
            self.samples_sent,
            self.samples_dropped,
            self.export_failures
        )
    }

    fn of(q: &Queue, m: &Metrics) -> Summary {
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let s = &q.stats;
        Summary {
            batches_enqueued: l(&s.enqueued),
            batches_sent: l(&s.sent),
            batches_dropped: l(&s.dropped),
            batches_rejected: l(&s.rejected),
            batches_unsent: l(&s.unsent),
            samples_enqueued: l(&s.samples_enqueued),
            samples_sent: l(&s.samples_sent),
            samples_dropped: l(&s.samples_dropped),
            export_failures: l(&m.export_failures),
        }
    }
}

/// Logs a queue overflow with its count.
pub(crate) fn log_drops(q: &Queue, p: Pushed) {
    if p.dropped_batches > 0 {
        tracing::warn!(
            dropped_batches = p.dropped_batches,
            "export queue full: dropped {} oldest batch(es) with {} samples ({} batches dropped so far)",
            p.dropped_batches,
            p.dropped_samples,
            q.stats.dropped.load(Ordering::Relaxed)
        );
    }
}

/// `/etc/machine-id` (systemd's stable host id), `host.id` in OTLP.
pub fn machine_id() -> Option<String> {
    std::fs::read_to_string("/etc/machine-id")
        .or_else(|_| std::fs::read_to_string("/var/lib/dbus/machine-id"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// An interval ±20 %.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.8 + 0.4 * fastrand::f64())
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Runs the agent until SIGTERM/SIGINT (or until `stop` is set), then
/// flushes the queue within the shutdown timeout.
pub fn run(settings: Settings, stop: Arc<AtomicBool>) -> Result<Summary, String> {
    let transport_settings = settings.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let queue = Arc::new(Queue::new(settings.queue_bytes));
    let metrics = Arc::new(Metrics::default());
    if let Some(dir) = &settings.capture_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }

    // Everything that can fail on bad settings, before eBPF is loaded.
    let _guard = rt.enter();
    let transport = export::Transport::new(&transport_settings)?;
    let metrics_listener = match settings.metrics_listen {
        Some(addr) => Some(
            rt.block_on(tokio::net::TcpListener::bind(addr))
                .map_err(|e| format!("metrics-listen {addr}: {e}"))?,
        ),
        None => None,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| format!("SIGINT handler: {e}"))?;

    // Sampling thread: loads eBPF, reports start-up errors, then runs.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<Result<usize, String>>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let sampler = {
        let (q, m, s, stop) = (
            queue.clone(),
            metrics.clone(),
            settings.clone(),
            stop.clone(),
        );
        std::thread::Builder::new()
            .name("sampler".into())
            .spawn(move || {
                sample_loop(&s, &q, &m, &stop, started_tx);
                let _ = done_tx.send(());
            })
            .map_err(|e| format!("sampling thread: {e}"))?
    };

    let result = rt.block_on(async {
        // Start-up (every process scanned) can take a while: a signal
        // meanwhile stops the agent too.
        let started = tokio::select! {
            r = started_rx => Some(r),
            _ = term.recv() => None,
            _ = int.recv() => None,
        };
        let sampler_join = || tokio::task::spawn_blocking(move || sampler.join());
        match started {
            None => {
                tracing::info!("stopped during start-up");
                stop.store(true, Ordering::Relaxed);
                let _ = sampler_join().await;
                // Whatever the sampler queued on its way out is not sent.
                queue.abandon();
                return Ok(());
            }
            Some(Ok(Ok(cpus))) => tracing::info!(
                "sampling {cpus} CPUs at {} Hz; exporting every {:?} (±20 %) to {} over {:?}",
                settings.frequency,
                settings.interval,
                settings.endpoint,
                settings.protocol
            ),
            Some(Ok(Err(e))) => {
                let _ = sampler_join().await;
                return Err(e);
            }
            Some(Err(_)) => {
                let _ = sampler_join().await;
                return Err("sampling thread ended during start-up".to_string());
            }
        }
        let exporter = tokio::spawn(export::run_exporter(
            transport,
            queue.clone(),
            metrics.clone(),
            settings.max_backoff,
            settings.capture_dir.clone(),
        ));
        let (stop_servers, servers_stopped) = tokio::sync::watch::channel(false);
        if let Some(listener) = metrics_listener {
            if let Ok(a) = listener.local_addr() {
                tracing::info!("metrics on http://{a}/metrics");
            }
            let mut rx = servers_stopped.clone();
            let (m, q) = (metrics.clone(), queue.clone());
            tokio::spawn(async move {
                let stop = async move {
                    let _ = rx.wait_for(|v| *v).await;
                };
                if let Err(e) = metrics::serve(listener, m, q, stop).await {
                    tracing::warn!("metrics server: {e}");
                }
            });
        }
        {
            let (m, q) = (metrics.clone(), queue.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    tracing::debug!("metrics: {}", m.log_line(&q.stats));
                }
            });
        }
        let flag = stop.clone();
        let flag_set = async move {
            while !flag.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
            _ = flag_set => {}
            _ = done_rx => tracing::warn!("sampling stopped unexpectedly"),
        }
        stop.store(true, Ordering::Relaxed);
        // The sampling thread pushes its last partial interval, then ends.
        let _ = sampler_join().await;
        queue.close();
        let deadline = settings.shutdown_timeout;
        let mut exporter = exporter;
        match tokio::time::timeout(deadline, &mut exporter).await {
            Ok(_) => {}
            Err(_) => {
                exporter.abort();
                let (n, samples) = queue.abandon();
                tracing::warn!(
                    "shutdown timeout ({deadline:?}): {n} batch(es) with {samples} samples not delivered"
                );
            }
        }
        let _ = stop_servers.send(true);
        Ok::<(), String>(())
    });
    result?;
    Ok(Summary::of(&queue, &metrics))
}

/// The blocking sampling loop: drain, aggregate, and at each (jittered)
/// interval resolve, encode and enqueue.
fn sample_loop(
    s: &Settings,
    queue: &Queue,
    metrics: &Metrics,
    stop: &AtomicBool,
    started: tokio::sync::oneshot::Sender<Result<usize, String>>,
) {
    let opts = SessionOptions {
        table_cache: s.table_cache.clone(),
        target: Target::System,
        frequency: s.frequency,
        load: LoadOptions {
            include_idle: s.include_idle,
            ..LoadOptions::default()
        },
    };
    let mut session = match Session::new(opts) {
        Ok(x) => x,
        Err(e) => {
            let _ = started.send(Err(format!("loading the eBPF profiler: {e}")));
            return;
        }
    };
    // Unused tables stay loaded a minute for the next process of the same
    // binary, and labels/files of what is gone are dropped after that, so a
    // host that starts many short processes neither rebuilds every table
    // nor grows the agent's memory.
    session
        .tracker
        .set_forget_after(Some(std::time::Duration::from_secs(60)));

    let cpus = match session.start() {
        Ok(n) => n,
        Err(e) => {
            let _ = started.send(Err(format!("starting the perf events: {e}")));
            return;
        }
    };
    let _ = started.send(Ok(cpus));
    let resource = otlp::ResourceInfo {
        host_name: s
            .host_name
            .clone()
            .or_else(|| Some(host_name()))
            .filter(|h| !h.is_empty()),
        host_id: machine_id(),
    };
    let mut agg = Aggregator::new(true);
    let mut resolver = Resolver::new(true, s.debug_info);
    let mut window_start = unix_ns();
    let mut deadline = Instant::now() + jittered(s.interval);
    // First metrics update on the first pass.
    let mut last_metrics: Option<Instant> = None;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let now = Instant::now();
        if !stopping {
            session.wait(
                deadline
                    .saturating_duration_since(now)
                    .min(Duration::from_millis(200)),
            );
        }
        session.drain(|_, t| agg.add(t));
        if stopping || last_metrics.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            last_metrics = Some(Instant::now());
            update_metrics(&session, &agg, metrics);
        }
        if stopping || Instant::now() >= deadline {
            let end = unix_ns();
            let batch = agg.take();
            if !batch.is_empty() {
                let samples = batch.samples();
                let t0 = Instant::now();
                let mut profile = resolver.resolve(&session.tracker, batch);
                profile.start_unix_ns = window_start;
                profile.duration_ns = end.saturating_sub(window_start);
                profile.frequency_hz = s.frequency;
                profile.host_name = resource.host_name.clone().unwrap_or_default();
                let t1 = Instant::now();
                let req = otlp::encode(&[profile], &resource);
                let bytes = req.encode_to_vec();
                tracing::debug!(
                    samples,
                    bytes = bytes.len(),
                    resolve_ms = (t1 - t0).as_millis() as u64,
                    encode_ms = t1.elapsed().as_millis() as u64,
                    "batch queued"
                );
                let pushed = queue.push(bytes.into(), samples);
                log_drops(queue, pushed);
            }
            window_start = end;
            deadline = Instant::now() + jittered(s.interval);
        }
        if stopping {
            return;
        }
    }
}

fn update_metrics(session: &Session, agg: &Aggregator, m: &Metrics) {
    for (id, v) in session.ebpf_metrics() {
        m.set(id, v);
    }
    let ts = &session.tracker.stats;
    m.set(MetricId::AgentPidScans, ts.scans);
    m.set(MetricId::AgentPidScanErrors, ts.scan_errors);
    m.set(MetricId::AgentTableErrors, ts.table_errors);
    m.set(MetricId::AgentTablesEvicted, ts.tables_evicted);
    m.set(MetricId::AgentTableOnlyScans, ts.table_only_scans);
    m.set(MetricId::AgentPythonFiles, ts.python_files);
    m.set(MetricId::AgentPythonFilesRejected, ts.python_files_rejected);
    let (reads, read_errors) = agg.python_code_reads();
    m.set(MetricId::AgentPythonCodeReads, reads);
    m.set(MetricId::AgentPythonCodeReadErrors, read_errors);
    if let Some(c) = session.tracker.table_cache_stats() {
        m.set(MetricId::AgentTableCacheHits, c.hits);
        m.set(MetricId::AgentTableCacheMisses, c.misses + c.rejected);
        m.set(MetricId::AgentTableCacheWriteErrors, c.write_errors);
    }
    let (procs, _spaces, _keys, exes, rows) = session.tracker.footprint();
    m.set(MetricId::AgentProcesses, procs as u64);
    m.set(MetricId::AgentExecutables, exes as u64);
    m.set(MetricId::AgentUnwindRows, rows);
    m.set(MetricId::AgentTracesReceived, session.stats.traces);
    m.set(
        MetricId::AgentTraceDecodeErrors,
        session.stats.decode_errors,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let i = Duration::from_secs(5);
        let all: Vec<Duration> = (0..200).map(|_| jittered(i)).collect();
        assert!(all
            .iter()
            .all(|d| *d >= Duration::from_secs(4) && *d <= Duration::from_secs(6)));
        assert!(all.iter().any(|d| *d < Duration::from_millis(4700)));
        assert!(all.iter().any(|d| *d > Duration::from_millis(5300)));
    }

    #[test]
    fn summary_line_is_parseable() {
        let s = Summary {
            batches_enqueued: 3,
            batches_sent: 2,
            batches_dropped: 1,
            ..Summary::default()
        };
        let l = s.line();
        assert!(
            l.contains("enqueued=3 sent=2 dropped=1 rejected=0 unsent=0"),
            "{l}"
        );
    }
}
