//! Forwarding to another OTLP collector.
//!
//! Each spooled payload is one `ExportProfilesServiceRequest` as received,
//! sent as one request with the `otlp-profiles-development-version: 1`
//! header and gzip (unless turned off).
//!
//! How answers map to [`Outcome`] (the OTLP spec's retry rules):
//!
//! | gRPC | HTTP | outcome |
//! |---|---|---|
//! | `OK` (partial success counted) | 2xx | delivered |
//! | `UNAVAILABLE`, `CANCELLED`, `DEADLINE_EXCEEDED`, `ABORTED`, `OUT_OF_RANGE`, `DATA_LOSS`; connection errors | 429, 502, 503, 504; connection errors, timeouts | retry, after `RetryInfo`/`Retry-After` when given |
//! | `RESOURCE_EXHAUSTED` with `RetryInfo` | | retry after its delay |
//! | `RESOURCE_EXHAUSTED` without `RetryInfo` (e.g. message too large), anything else | other 4xx/5xx | rejected (dropped, counted) |
//!
//! `Retry-After` is read as seconds; an HTTP-date is ignored (the backoff
//! applies).

use std::io::Write as _;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_client::ProfilesServiceClient;
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

use crate::queue::{Destination, Outcome};

/// The header naming the profiles schema version (see the `otlp` crate).
pub const PROFILES_VERSION_HEADER: &str = "otlp-profiles-development-version";
/// The OTLP/HTTP path for profiles.
pub const HTTP_PATH: &str = "/v1development/profiles";

/// Transport to the next collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `ProfilesService/Export` over HTTP/2 (OTLP's port 4317).
    Grpc,
    /// `POST {endpoint}/v1development/profiles`, protobuf (OTLP's port 4318).
    Http,
}

/// Where and how to forward.
#[derive(Clone, Debug)]
pub struct OtlpConfig {
    /// `http://host:port` (gRPC), or `http://host:port[/path]` (HTTP; without
    /// a path `/v1development/profiles` is appended).
    pub endpoint: String,
    pub protocol: Protocol,
    pub gzip: bool,
    /// Extra headers/metadata on every request (e.g. authorization).
    pub headers: Vec<(String, String)>,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:4317".into(),
            protocol: Protocol::Grpc,
            gzip: true,
            headers: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

enum Client {
    Grpc {
        client: ProfilesServiceClient<Channel>,
        metadata: Vec<(
            tonic::metadata::MetadataKey<tonic::metadata::Ascii>,
            tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
        )>,
    },
    Http {
        client: reqwest::Client,
        url: String,
        headers: reqwest::header::HeaderMap,
    },
}

/// Sends spooled requests to the next collector.
pub struct OtlpDestination {
    config: OtlpConfig,
    client: Client,
}

impl OtlpDestination {
    /// Checks the configuration; connects lazily (a collector that is down
    /// at start is just retried). Must run inside a tokio runtime.
    pub fn new(config: OtlpConfig) -> Result<Self, String> {
        let ep = config.endpoint.trim_end_matches('/').to_string();
        if ep.starts_with("https://") {
            return Err(format!(
                "endpoint {ep}: https is not supported by this build (no TLS stack); use http:// or a TLS-terminating proxy"
            ));
        }
        if !ep.starts_with("http://") {
            return Err(format!("endpoint {ep:?} must start with http://"));
        }
        let client = match config.protocol {
            Protocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(ep.clone())
                    .map_err(|e| format!("endpoint {ep}: {e}"))?
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout.min(Duration::from_secs(10)))
                    .connect_lazy();
                let mut client =
                    ProfilesServiceClient::new(channel).max_encoding_message_size(usize::MAX);
                if config.gzip {
                    client = client.send_compressed(CompressionEncoding::Gzip);
                }
                let mut metadata = Vec::new();
                for (k, v) in &config.headers {
                    let key = k
                        .to_ascii_lowercase()
                        .parse()
                        .map_err(|_| format!("header name {k:?} is not valid gRPC metadata"))?;
                    let val = v
                        .parse()
                        .map_err(|_| format!("header {k}: value is not valid ASCII metadata"))?;
                    metadata.push((key, val));
                }
                Client::Grpc { client, metadata }
            }
            Protocol::Http => {
                let has_path = ep["http://".len()..].contains('/');
                let url = if has_path {
                    ep.clone()
                } else {
                    format!("{ep}{HTTP_PATH}")
                };
                let mut headers = reqwest::header::HeaderMap::new();
                for (k, v) in &config.headers {
                    let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| format!("header name {k:?} is invalid"))?;
                    let val = reqwest::header::HeaderValue::from_str(v)
                        .map_err(|_| format!("header {k}: invalid value"))?;
                    headers.insert(name, val);
                }
                #[cfg(feature = "tls-provider")]
                {
                    // See the feature's comment in Cargo.toml; installing
                    // twice is harmless.
                    let _ = rustls::crypto::ring::default_provider().install_default();
                }
                let client = reqwest::Client::builder()
                    .timeout(config.timeout)
                    .build()
                    .map_err(|e| format!("HTTP client: {e}"))?;
                Client::Http {
                    client,
                    url,
                    headers,
                }
            }
        };
        Ok(Self { config, client })
    }

    pub fn config(&self) -> &OtlpConfig {
        &self.config
    }

    async fn send_grpc(
        client: &ProfilesServiceClient<Channel>,
        metadata: &[(
            tonic::metadata::MetadataKey<tonic::metadata::Ascii>,
            tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
        )],
        payload: Vec<u8>,
    ) -> Outcome {
        let req = match ExportProfilesServiceRequest::decode(payload.as_slice()) {
            Ok(r) => r,
            Err(e) => return Outcome::Rejected(format!("spooled payload is not a request: {e}")),
        };
        let mut r = tonic::Request::new(req);
        r.metadata_mut().insert(
            PROFILES_VERSION_HEADER,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        for (k, v) in metadata {
            r.metadata_mut().insert(k.clone(), v.clone());
        }
        match client.clone().export(r).await {
            Ok(resp) => Outcome::Delivered {
                rejected_items: partial(&resp.into_inner()),
            },
            Err(status) => classify_grpc(&status),
        }
    }

    async fn send_http(
        client: &reqwest::Client,
        url: &str,
        headers: &reqwest::header::HeaderMap,
        gzip: bool,
        payload: Vec<u8>,
    ) -> Outcome {
        let mut req = client
            .post(url)
            .headers(headers.clone())
            .header("content-type", "application/x-protobuf")
            .header(PROFILES_VERSION_HEADER, "1");
        let body = if gzip {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(payload.len() / 4),
                flate2::Compression::fast(),
            );
            if let Err(err) = e.write_all(&payload) {
                return Outcome::Rejected(format!("gzip: {err}"));
            }
            req = req.header("content-encoding", "gzip");
            match e.finish() {
                Ok(b) => b,
                Err(err) => return Outcome::Rejected(format!("gzip: {err}")),
            }
        } else {
            payload
        };
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry {
                    after: None,
                    reason: format!("POST {url}: {e}"),
                }
            }
        };
        let status = resp.status().as_u16();
        let after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = resp.bytes().await.unwrap_or_default();
        classify_http(status, after, &body)
    }
}

impl Destination for OtlpDestination {
    fn describe(&self) -> String {
        let p = match self.config.protocol {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        };
        format!("otlp {p} {}", self.config.endpoint)
    }

    async fn send(&self, payload: Vec<u8>) -> Outcome {
        match &self.client {
            Client::Grpc { client, metadata } => Self::send_grpc(client, metadata, payload).await,
            Client::Http {
                client,
                url,
                headers,
            } => Self::send_http(client, url, headers, self.config.gzip, payload).await,
        }
    }
}

fn partial(r: &ExportProfilesServiceResponse) -> u64 {
    r.partial_success
        .as_ref()
        .map_or(0, |p| u64::try_from(p.rejected_profiles).unwrap_or(0))
}

/// `Retry-After` in seconds (an HTTP-date is not understood: `None`).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The OTLP/HTTP retry rules.
pub fn classify_http(status: u16, after: Option<Duration>, body: &[u8]) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered {
            rejected_items: ExportProfilesServiceResponse::decode(body)
                .map(|r| partial(&r))
                .unwrap_or(0),
        },
        429 | 502 | 503 | 504 => Outcome::Retry {
            after,
            reason: format!("HTTP {status}"),
        },
        _ => {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            Outcome::Rejected(format!("HTTP {status}: {text}"))
        }
    }
}

// google.rpc.Status / Any / RetryInfo / Duration, the parts needed to read
// a server's retry delay from `grpc-status-details-bin`.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}
#[derive(Clone, PartialEq, Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}
#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}
#[derive(Clone, PartialEq, Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The `RetryInfo` delay in a status's details, if any.
pub fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    let s = RpcStatus::decode(status.details()).ok()?;
    let any = s.details.iter().find(|a| a.type_url == RETRY_INFO_TYPE)?;
    let d = RetryInfo::decode(any.value.as_slice()).ok()?.retry_delay?;
    Some(Duration::new(
        u64::try_from(d.seconds).ok()?,
        u32::try_from(d.nanos).ok()?.min(999_999_999),
    ))
}

/// `grpc-status-details-bin` content carrying a `RetryInfo` of `delay`, for
/// servers (our collector) that refuse retryably.
pub fn retry_details(code: tonic::Code, message: &str, delay: Duration) -> Vec<u8> {
    RpcStatus {
        code: code as i32,
        message: message.to_string(),
        details: vec![Any {
            type_url: RETRY_INFO_TYPE.into(),
            value: RetryInfo {
                retry_delay: Some(ProtoDuration {
                    seconds: delay.as_secs() as i64,
                    nanos: delay.subsec_nanos() as i32,
                }),
            }
            .encode_to_vec(),
        }],
    }
    .encode_to_vec()
}

/// The OTLP/gRPC retry rules.
pub fn classify_grpc(status: &tonic::Status) -> Outcome {
    use tonic::Code::*;
    let after = retry_delay(status);
    let reason = format!("gRPC {:?}: {}", status.code(), status.message());
    match status.code() {
        Unavailable | Cancelled | DeadlineExceeded | Aborted | OutOfRange | DataLoss => {
            Outcome::Retry { after, reason }
        }
        ResourceExhausted if after.is_some() => Outcome::Retry { after, reason },
        _ => Outcome::Rejected(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers_follow_the_otlp_retry_rules() {
        let d = Some(Duration::from_secs(3));
        assert_eq!(
            classify_http(200, None, b""),
            Outcome::Delivered { rejected_items: 0 }
        );
        for s in [429, 502, 503, 504] {
            assert!(matches!(classify_http(s, d, b""), Outcome::Retry { after, .. } if after == d));
        }
        for s in [400, 401, 404, 413, 500] {
            assert!(
                matches!(classify_http(s, None, b"x"), Outcome::Rejected(_)),
                "{s}"
            );
        }
        let partial = ExportProfilesServiceResponse {
            partial_success: Some(
                opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesPartialSuccess {
                    rejected_profiles: 2,
                    error_message: "x".into(),
                },
            ),
        };
        assert_eq!(
            classify_http(200, None, &partial.encode_to_vec()),
            Outcome::Delivered { rejected_items: 2 }
        );
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn grpc_resource_exhausted_is_retried_only_with_retry_info() {
        let plain = tonic::Status::resource_exhausted("message too large");
        assert!(matches!(classify_grpc(&plain), Outcome::Rejected(_)));
        let details = retry_details(
            tonic::Code::ResourceExhausted,
            "full",
            Duration::from_millis(1500),
        );
        let s = tonic::Status::with_details(tonic::Code::ResourceExhausted, "full", details.into());
        assert_eq!(retry_delay(&s), Some(Duration::from_millis(1500)));
        assert!(matches!(
            classify_grpc(&s),
            Outcome::Retry { after: Some(_), .. }
        ));
        assert!(matches!(
            classify_grpc(&tonic::Status::unavailable("down")),
            Outcome::Retry { after: None, .. }
        ));
        assert!(matches!(
            classify_grpc(&tonic::Status::invalid_argument("bad")),
            Outcome::Rejected(_)
        ));
    }

    #[tokio::test]
    async fn https_and_garbage_endpoints_are_refused_clearly() {
        let e = OtlpDestination::new(OtlpConfig {
            endpoint: "https://x:4317".into(),
            ..OtlpConfig::default()
        })
        .err()
        .unwrap();
        assert!(e.contains("https is not supported"), "{e}");
        let e = OtlpDestination::new(OtlpConfig {
            endpoint: "x:4317".into(),
            ..OtlpConfig::default()
        })
        .err()
        .unwrap();
        assert!(e.contains("must start with http://"), "{e}");
    }
}
