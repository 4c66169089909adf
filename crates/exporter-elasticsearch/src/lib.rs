//! Elasticsearch exporter for OTLP CPU profiles.
//!
//! - [`encode`]: pure OTLP → Elasticsearch document encoding (OTel data
//!   streams by default, legacy ECS indices as an option).
//! - [`bulk`]: NDJSON `_bulk` client with per-item status handling.
//! - [`spool`]: disk-backed, bounded queue of accepted requests.
//! - [`exporter`]: ties them together with a background drain task.

pub mod encode;
pub mod spool;
pub mod time;

pub use encode::{encode, DocKind, Document, EncodeOptions, Encoded, Op, ProfileError, Rejection, Schema};
