//! What both receivers share: body decoding with limits, validation,
//! handing profiles to the sink, partial success, counters.

use crate::pipeline::{Pipeline, Refusal};
use crate::sink::Sink;
use crate::Config;
use otlp::{
    ExportProfilesPartialSuccess, ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use prost::Message;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Why a request was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestError {
    /// Malformed: bad protobuf/JSON, bad gzip, failed validation, bad
    /// version header. gRPC `INVALID_ARGUMENT`, HTTP 400.
    Invalid(String),
    /// Over the size limit (compressed or decompressed). HTTP 413.
    TooLarge(String),
    /// Content type or encoding we do not speak. HTTP 415.
    Unsupported(String),
    /// Retryable: an exporter's spool is full (or it is shutting down, or
    /// its disk failed). gRPC `UNAVAILABLE` with a `RetryInfo`, HTTP 503
    /// with `Retry-After`; nothing of the request was kept.
    Busy(String),
}

impl std::fmt::Display for IngestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngestError::Invalid(m)
            | IngestError::TooLarge(m)
            | IngestError::Unsupported(m)
            | IngestError::Busy(m) => f.write_str(m),
        }
    }
}

/// Counters, updated lock-free by the receivers.
#[derive(Default, Debug)]
pub struct Stats {
    /// Requests seen, refused ones included.
    pub requests: AtomicU64,
    /// Requests refused whole (version, size, format, validation).
    pub requests_rejected: AtomicU64,
    /// OTLP `Profile`s handed to the sink.
    pub profiles_accepted: AtomicU64,
    /// OTLP `Profile`s dropped and reported as partial success.
    pub profiles_rejected: AtomicU64,
    /// Samples (after the sender's merging) handed to the sink.
    pub samples_accepted: AtomicU64,
    /// Body bytes of requests that reached validation: HTTP as received
    /// (compressed when gzip), gRPC the decoded message size.
    pub bytes_received: AtomicU64,
    /// pprof files written by the sink.
    pub files_written: AtomicU64,
    /// pprof files the sink failed to write (their profiles are lost; the
    /// error is logged).
    pub write_errors: AtomicU64,
    /// Requests refused retryably because an exporter could not take them
    /// (its spool full); per exporter in [`crate::ExporterStats`].
    pub requests_refused_busy: AtomicU64,
}

/// A copy of [`Stats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub requests_rejected: u64,
    pub profiles_accepted: u64,
    pub profiles_rejected: u64,
    pub samples_accepted: u64,
    pub bytes_received: u64,
    pub files_written: u64,
    pub write_errors: u64,
    pub requests_refused_busy: u64,
}

/// Body formats the receivers accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    Protobuf,
    Json,
}

/// The receivers' shared state.
pub struct Ingest {
    sink: Option<Arc<Sink>>,
    pipeline: Pipeline,
    stats: Arc<Stats>,
    max_request_bytes: usize,
}

/// Most rejection reasons quoted in one partial-success message.
const MAX_REASONS: usize = 3;

impl Ingest {
    /// Starts the exporters of `config` (inside a tokio runtime).
    pub fn new(config: &Config) -> Result<Self, crate::Error> {
        let stats = Arc::new(Stats::default());
        let s2 = stats.clone();
        let pipeline = Pipeline::start(&config.exporters, &config.data_dir, || {
            Arc::new(Sink::new(
                config.output_dir.clone(),
                config.max_buffered_samples,
                s2,
            ))
        })?;
        Ok(Self {
            sink: pipeline.pprof().cloned(),
            pipeline,
            stats,
            max_request_bytes: config.max_request_bytes,
        })
    }

    /// The exporters.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: l(&s.requests),
            requests_rejected: l(&s.requests_rejected),
            profiles_accepted: l(&s.profiles_accepted),
            profiles_rejected: l(&s.profiles_rejected),
            samples_accepted: l(&s.samples_accepted),
            bytes_received: l(&s.bytes_received),
            files_written: l(&s.files_written),
            write_errors: l(&s.write_errors),
            requests_refused_busy: l(&s.requests_refused_busy),
        }
    }

    pub(crate) fn count_rejected_request(&self) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.stats.requests_rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes the buffered profiles (on a blocking thread: pprof encoding
    /// and file I/O).
    pub async fn flush(&self) -> std::io::Result<Vec<PathBuf>> {
        let Some(sink) = self.sink.clone() else {
            return Ok(Vec::new());
        };
        tokio::task::spawn_blocking(move || sink.flush())
            .await
            .map_err(std::io::Error::other)?
    }

    /// Decompresses (when `gzip`) and parses an HTTP body, never producing
    /// more than the request limit.
    pub fn parse_body(
        &self,
        body: &[u8],
        gzip: bool,
        format: BodyFormat,
    ) -> Result<ExportProfilesServiceRequest, IngestError> {
        let owned;
        let raw = if gzip {
            owned = gunzip_capped(body, self.max_request_bytes)?;
            &owned[..]
        } else {
            body
        };
        match format {
            BodyFormat::Protobuf => ExportProfilesServiceRequest::decode(raw)
                .map_err(|e| IngestError::Invalid(format!("malformed protobuf body: {e}"))),
            BodyFormat::Json => {
                otlp::json::from_json(raw).map_err(|e| IngestError::Invalid(e.to_string()))
            }
        }
    }

    /// Validates and stores one request; the response carries partial
    /// success when some profiles were dropped.
    pub fn export(
        &self,
        req: ExportProfilesServiceRequest,
        wire_bytes: usize,
    ) -> Result<ExportProfilesServiceResponse, IngestError> {
        let s = &self.stats;
        s.requests.fetch_add(1, Ordering::Relaxed);
        s.bytes_received
            .fetch_add(wire_bytes as u64, Ordering::Relaxed);
        let decoded = match otlp::decode_lenient(&req) {
            Ok(d) => d,
            Err(e) => {
                s.requests_rejected.fetch_add(1, Ordering::Relaxed);
                return Err(IngestError::Invalid(format!(
                    "invalid profiles request: {e}"
                )));
            }
        };
        if !decoded.profiles.is_empty() {
            match self.pipeline.export(&req) {
                Ok(()) => {}
                Err(Refusal::Busy(m)) => {
                    s.requests_refused_busy.fetch_add(1, Ordering::Relaxed);
                    return Err(IngestError::Busy(m));
                }
                Err(Refusal::TooLarge(m)) => {
                    s.requests_rejected.fetch_add(1, Ordering::Relaxed);
                    return Err(IngestError::TooLarge(m));
                }
            }
        }
        let mut reasons: Vec<String> = decoded
            .rejected
            .iter()
            .map(|r| format!("{}: {}", r.path, r.reason))
            .collect();
        let mut rejected = decoded.rejected.len() as u64;
        let mut accepted = 0u64;
        for (res, profile) in decoded.profiles {
            let n = profile.samples.len() as u64;
            let added = match &self.sink {
                Some(sink) => sink.add(&res, profile),
                None => Ok(()),
            };
            match added {
                Ok(()) => {
                    accepted += 1;
                    s.samples_accepted.fetch_add(n, Ordering::Relaxed);
                }
                Err(reason) => {
                    rejected += 1;
                    reasons.push(reason);
                }
            }
        }
        s.profiles_accepted.fetch_add(accepted, Ordering::Relaxed);
        s.profiles_rejected.fetch_add(rejected, Ordering::Relaxed);
        let partial_success = (rejected > 0).then(|| {
            let mut msg = reasons
                .iter()
                .take(MAX_REASONS)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ");
            if reasons.len() > MAX_REASONS {
                msg.push_str(&format!("; and {} more", reasons.len() - MAX_REASONS));
            }
            ExportProfilesPartialSuccess {
                rejected_profiles: i64::try_from(rejected).unwrap_or(i64::MAX),
                error_message: msg,
            }
        });
        Ok(ExportProfilesServiceResponse { partial_success })
    }
}

/// gunzip, refusing output beyond `limit` bytes (gzip bombs) and any
/// corrupt or truncated stream. Concatenated gzip members are accepted.
pub fn gunzip_capped(body: &[u8], limit: usize) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let mut d = flate2::read::MultiGzDecoder::new(body).take(limit as u64 + 1);
    d.read_to_end(&mut out)
        .map_err(|e| IngestError::Invalid(format!("bad gzip body: {e}")))?;
    if out.len() > limit {
        return Err(IngestError::TooLarge(format!(
            "decompressed body exceeds the {limit}-byte limit"
        )));
    }
    Ok(out)
}
