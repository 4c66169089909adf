//! The agent's own metrics: every id of `spec/metrics.json`
//! (`libpf::generated::metrics::MetricId`: the eBPF ones summed over CPUs,
//! the agent ones counted here) plus export details that have no shared id
//! (they never cross into the eBPF side). Exposed as Prometheus text on
//! `--metrics-listen ADDR` (`GET /metrics`) and logged every minute at
//! debug level.

use crate::queue::QueueStats;
use libpf::generated::metrics::{MetricId, MetricKind, METRIC_COUNT};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Values the sampling thread and the exporter update.
pub struct Metrics {
    /// By `MetricId`; the sampling thread stores eBPF and tracker values.
    spec: [AtomicU64; METRIC_COUNT],
    pub export_failures: AtomicU64,
    /// Profiles a collector rejected in partial-success answers.
    pub profiles_rejected: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            spec: std::array::from_fn(|_| AtomicU64::new(0)),
            export_failures: AtomicU64::new(0),
            profiles_rejected: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn set(&self, id: MetricId, v: u64) {
        self.spec[id as usize].store(v, Ordering::Relaxed);
    }

    /// Every spec metric with its current value (export ones from the queue).
    pub fn snapshot(&self, q: &QueueStats) -> Vec<(MetricId, u64)> {
        MetricId::ALL
            .iter()
            .map(|&m| {
                let v = match m {
                    MetricId::AgentExportFailures => self.export_failures.load(Ordering::Relaxed),
                    MetricId::AgentExportDroppedBatches => q.dropped.load(Ordering::Relaxed),
                    MetricId::AgentExportQueueBytes => q.bytes.load(Ordering::Relaxed),
                    _ => self.spec[m as usize].load(Ordering::Relaxed),
                };
                (m, v)
            })
            .collect()
    }

    /// Export counters without a spec id: (name, help, kind, value).
    pub fn extras(&self, q: &QueueStats) -> Vec<(&'static str, &'static str, MetricKind, u64)> {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            (
                "agent_export_batches_enqueued",
                "Batches (one request each) put in the export queue.",
                MetricKind::Counter,
                l(&q.enqueued),
            ),
            (
                "agent_export_batches_sent",
                "Batches the collector accepted.",
                MetricKind::Counter,
                l(&q.sent),
            ),
            (
                "agent_export_batches_rejected",
                "Batches the collector refused for good (dropped, not retried).",
                MetricKind::Counter,
                l(&q.rejected),
            ),
            (
                "agent_export_batches_unsent",
                "Batches still queued when the shutdown timeout ran out.",
                MetricKind::Counter,
                l(&q.unsent),
            ),
            (
                "agent_export_samples_sent",
                "CPU samples in accepted batches.",
                MetricKind::Counter,
                l(&q.samples_sent),
            ),
            (
                "agent_export_samples_dropped",
                "CPU samples in batches dropped because the queue was full.",
                MetricKind::Counter,
                l(&q.samples_dropped),
            ),
            (
                "agent_export_queue_batches",
                "Batches waiting in the export queue.",
                MetricKind::Gauge,
                l(&q.batches),
            ),
            (
                "agent_export_profiles_rejected",
                "Profiles rejected in partial-success answers.",
                MetricKind::Counter,
                l(&self.profiles_rejected),
            ),
        ]
    }

    /// Prometheus text exposition format 0.0.4. Counters get `_total`.
    pub fn prometheus(&self, q: &QueueStats) -> String {
        let mut out = String::new();
        let mut put = |name: &str, help: &str, kind: MetricKind, v: u64| {
            let (ty, suffix) = match kind {
                MetricKind::Counter => ("counter", "_total"),
                MetricKind::Gauge => ("gauge", ""),
            };
            let full = format!("ebpf_profiler_{name}{suffix}");
            let help = help.replace('\\', "\\\\").replace('\n', " ");
            let _ = writeln!(out, "# HELP {full} {help}\n# TYPE {full} {ty}\n{full} {v}");
        };
        for (m, v) in self.snapshot(q) {
            put(m.name(), m.description(), m.kind(), v);
        }
        for (name, help, kind, v) in self.extras(q) {
            put(name, help, kind, v);
        }
        out
    }

    /// One line of the non-zero values, for the periodic debug log.
    pub fn log_line(&self, q: &QueueStats) -> String {
        let mut parts: Vec<String> = self
            .snapshot(q)
            .into_iter()
            .filter(|(_, v)| *v != 0)
            .map(|(m, v)| format!("{}={v}", m.field()))
            .collect();
        parts.extend(
            self.extras(q)
                .into_iter()
                .filter(|e| e.3 != 0)
                .map(|(n, _, _, v)| format!("{n}={v}")),
        );
        parts.join(" ")
    }
}

/// Serves `GET /metrics` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    queue: Arc<crate::queue::Queue>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let body = metrics.prometheus(&queue.stats);
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Queue;

    #[test]
    fn prometheus_text_has_every_spec_metric_once_with_type_and_value() {
        let m = Metrics::default();
        let q = Queue::new(10);
        m.set(MetricId::Samples, 123);
        m.set(MetricId::AgentProcesses, 7);
        m.export_failures.store(2, Ordering::Relaxed);
        q.push(bytes::Bytes::from_static(b"0123456789abc"), 5);
        let text = m.prometheus(&q.stats);
        assert!(text.contains(
            "# TYPE ebpf_profiler_samples_total counter\nebpf_profiler_samples_total 123\n"
        ));
        assert!(text.contains(
            "# TYPE ebpf_profiler_agent_processes gauge\nebpf_profiler_agent_processes 7\n"
        ));
        assert!(text.contains("ebpf_profiler_agent_export_failures_total 2\n"));
        assert!(
            text.contains("ebpf_profiler_agent_export_dropped_batches_total 1\n"),
            "{text}"
        );
        assert!(text.contains("ebpf_profiler_agent_export_samples_dropped_total 5\n"));
        for id in MetricId::ALL {
            let n = text
                .lines()
                .filter(|l| {
                    l.starts_with(&format!("# TYPE ebpf_profiler_{} ", id.name()))
                        || l.starts_with(&format!("# TYPE ebpf_profiler_{}_total ", id.name()))
                })
                .count();
            assert_eq!(n, 1, "{}", id.name());
        }
        // Every sample line is `name value` with an integer value.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let mut it = l.split(' ');
            assert!(it.next().unwrap().starts_with("ebpf_profiler_"));
            it.next().unwrap().parse::<u64>().unwrap();
            assert!(it.next().is_none());
        }
        let line = m.log_line(&q.stats);
        assert!(
            line.contains("ebpf.samples=123") && line.contains("agent.export.failures=2"),
            "{line}"
        );
        assert!(
            !line.contains("ebpf.samples.idle"),
            "zeros are left out: {line}"
        );
    }
}
