//! Elasticsearch exporter for OTLP CPU profiles (collector side).
//!
//! - [`mod@encode`]: pure OTLP → Elasticsearch document encoding: OTel data
//!   streams (`profiling-*.otel-default`) by default, legacy ECS indices as an
//!   option. Ids and encodings are those of `/reference/elasticsearch.md`.
//! - [`bulk`]: NDJSON `_bulk` client; per-item outcomes (409 = success).
//! - [`spool`]: disk-backed (redb, fsync per accepted request), bounded queue.
//! - [`exporter`]: `enqueue` into the spool, a tokio task that drains it with
//!   retries, an LRU of ids already written, metrics and graceful shutdown.
//!
//! Purity: with default features the crate compiles no C. HTTPS needs the
//! `tls` feature (rustls + ring, which builds C); the collector binary turns it
//! on, tests and the contract server use plain HTTP on 127.0.0.1.
//!
//! OTLP: `opentelemetry-proto` 0.33, profiles v1development as of proto v1.10
//! (wire-identical to v1.11).

pub mod bulk;
pub mod encode;
pub mod exporter;
pub mod spool;
pub mod time;

pub use bulk::{Auth, BulkClient, BulkConfig, BulkError, ItemOutcome};
pub use encode::{
    encode, DocKind, Document, EncodeOptions, Encoded, Op, ProfileError, Rejection, Schema,
};
pub use exporter::{Accepted, Config, EnqueueError, Exporter, ExporterError, Metrics};
pub use spool::{Spool, SpoolError};
