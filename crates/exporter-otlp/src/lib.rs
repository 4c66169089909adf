//! OTLP profiles forwarder, and the spooled delivery queue under it.
//!
//! * [`spool`]: a bounded FIFO of payloads on disk (redb, fsync per push),
//!   with reservations so a fan-out can be all-or-nothing.
//! * [`queue`]: a spool drained by a tokio task into a [`queue::Destination`]
//!   with exponential backoff (equal jitter), server-requested delays
//!   honoured, permanent refusals counted and dropped. The collector puts
//!   every exporter of its own (this forwarder, the embedded store) behind one.
//! * [`otlp`]: the destination that forwards each spooled
//!   `ExportProfilesServiceRequest` to another collector over gRPC (tonic) or
//!   HTTP (`POST /v1development/profiles`), gzip-compressed.
//!
//! Purity: plain `http://` only (no TLS stack, which would compile C).

pub mod otlp;
pub mod queue;
pub mod spool;

pub use otlp::{OtlpConfig, OtlpDestination, Protocol};
pub use queue::{Backoff, Destination, EnqueueError, Metrics, Outcome, Queue, QueueConfig};
pub use spool::{Reservation, Spool, SpoolError};

/// The OTLP forwarder: a [`Queue`] delivering to an [`OtlpDestination`].
pub type Exporter = Queue<OtlpDestination>;
