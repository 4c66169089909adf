//! When and how long to retry a failed export, following the OTLP
//! exporter rules: HTTP 429/502/503/504 and gRPC `UNAVAILABLE`,
//! `CANCELLED`, `DEADLINE_EXCEEDED`, `ABORTED`, `OUT_OF_RANGE`, `DATA_LOSS`
//! are retried; `RESOURCE_EXHAUSTED` only when the server sends
//! `google.rpc.RetryInfo` (without it the request itself is the problem,
//! e.g. too large, and retrying would repeat for ever). A server's delay
//! (`Retry-After`, `RetryInfo.retry_delay`) is honored up to
//! [`MAX_SERVER_DELAY`]; otherwise the delay doubles from
//! [`INITIAL_BACKOFF`] up to the configured maximum, with jitter so that
//! agents restarted together do not retry in lockstep.

use prost::Message;
use std::time::{Duration, SystemTime};

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest server-requested delay we wait (a misconfigured server could ask
/// for hours while the queue overflows).
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(300);

/// Exponential backoff with "equal jitter": half the step fixed, half random.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        let max = max.max(Duration::from_millis(10));
        Backoff {
            next: INITIAL_BACKOFF.min(max),
            max,
        }
    }

    /// The delay before the next attempt; doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = step / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.next = INITIAL_BACKOFF.min(self.max);
    }

    /// The wait before retrying: the server's delay if it gave one (capped),
    /// else the next backoff step.
    pub fn delay(&mut self, server: Option<Duration>) -> Duration {
        let own = self.next_delay();
        match server {
            Some(d) => d.min(MAX_SERVER_DELAY),
            None => own,
        }
    }
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether an HTTP status is worth retrying.
pub fn http_retryable(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// `google.rpc.Status`, as carried in `grpc-status-details-bin` and in
/// OTLP/HTTP error bodies.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The `RetryInfo` delay in encoded `google.rpc.Status` details, if any.
pub fn retry_info_delay(status_details: &[u8]) -> Option<Duration> {
    let st = RpcStatus::decode(status_details).ok()?;
    st.details
        .iter()
        .find(|a| a.type_url == RETRY_INFO_TYPE)
        .and_then(|a| RetryInfo::decode(a.value.as_slice()).ok())
        .and_then(|r| r.retry_delay)
        .map(|d| {
            Duration::from_secs(d.seconds.max(0) as u64)
                + Duration::from_nanos(d.nanos.max(0) as u64)
        })
}

/// What to do after a gRPC error: `Some(server delay or None)` to retry,
/// `None` to give up on the request. `local`: the status was made on this
/// side from a connection error (tonic reports an HTTP/2 or TLS failure
/// after connecting, e.g. a refused client certificate, as `UNKNOWN`
/// "transport error"); that is an outage, not a verdict on the request.
pub fn grpc_retry(code: tonic::Code, details: &[u8], local: bool) -> Option<Option<Duration>> {
    use tonic::Code::*;
    let info = retry_info_delay(details);
    match code {
        Cancelled | DeadlineExceeded | Aborted | OutOfRange | Unavailable | DataLoss => Some(info),
        Unknown | Internal if local => Some(None),
        ResourceExhausted => info.map(Some),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(8));
        let steps: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        let bounds = [1u64, 2, 4, 8, 8, 8];
        for (d, hi) in steps.iter().zip(bounds) {
            let hi = Duration::from_secs(hi);
            assert!(
                *d >= hi / 2 && *d <= hi,
                "{d:?} within [{:?}, {hi:?}]",
                hi / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
        // Jitter: not every delay is the same.
        let mut b = Backoff::new(Duration::from_secs(1));
        let many: std::collections::HashSet<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(many.len() > 1);
    }

    #[test]
    fn server_delays_win_but_are_capped() {
        let mut b = Backoff::new(Duration::from_secs(30));
        assert_eq!(
            b.delay(Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(b.delay(Some(Duration::from_secs(99_999))), MAX_SERVER_DELAY);
        assert!(b.delay(None) <= Duration::from_secs(4));
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(42));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(42))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(42));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn grpc_codes_and_retry_info() {
        let info = RpcStatus {
            code: 8,
            message: "slow down".into(),
            details: vec![ProtoAny {
                type_url: RETRY_INFO_TYPE.into(),
                value: RetryInfo {
                    retry_delay: Some(ProtoDuration {
                        seconds: 2,
                        nanos: 500_000_000,
                    }),
                }
                .encode_to_vec(),
            }],
        }
        .encode_to_vec();
        assert_eq!(
            grpc_retry(tonic::Code::ResourceExhausted, &info, false),
            Some(Some(Duration::from_millis(2500)))
        );
        assert_eq!(grpc_retry(tonic::Code::ResourceExhausted, &[], false), None);
        assert_eq!(grpc_retry(tonic::Code::Unavailable, &[], false), Some(None));
        assert_eq!(
            grpc_retry(tonic::Code::Unavailable, &info, false),
            Some(Some(Duration::from_millis(2500)))
        );
        assert_eq!(grpc_retry(tonic::Code::InvalidArgument, &info, true), None);
        assert_eq!(
            grpc_retry(tonic::Code::Unavailable, b"\xff\xff garbage", false),
            Some(None)
        );
        assert_eq!(grpc_retry(tonic::Code::Unknown, &[], true), Some(None));
        assert_eq!(
            grpc_retry(tonic::Code::Unknown, &[], false),
            None,
            "a server's verdict"
        );
        assert!(http_retryable(429) && http_retryable(503) && !http_retryable(400));
    }
}
