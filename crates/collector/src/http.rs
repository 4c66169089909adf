//! HTTP receiver: `POST /v1development/profiles` (OTLP/HTTP), axum.
//!
//! Order of checks, cheapest and before any body byte is buffered: version
//! header, content type, content encoding, `Content-Length` against the
//! limit; then the body is read through a capped stream
//! (`http_body_util::Limited`, so a body without or with a
//! lying `Content-Length` stops at the limit too), gunzipped with a cap on
//! the decompressed size, parsed and validated.
//!
//! Responses follow OTLP/HTTP: 200 with an `ExportProfilesServiceResponse`,
//! errors with a `google.rpc.Status` (code 3 `INVALID_ARGUMENT`, 8
//! `RESOURCE_EXHAUSTED` for 413, 4 `DEADLINE_EXCEEDED` for 408, 12
//! `UNIMPLEMENTED` for 415), both in the request's content type
//! (protobuf or JSON). A 413 is sent without reading the body; hyper then
//! closes the connection, so a client stops sending early.

use crate::ingest::{BodyFormat, Ingest, IngestError};
use crate::Error;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use otlp::ExportProfilesServiceResponse;
use prost::Message;
use std::future::Future;
use std::sync::Arc;

/// The OTLP/HTTP path for profiles.
pub const PATH: &str = "/v1development/profiles";

#[derive(Clone)]
struct AppState {
    ingest: Arc<Ingest>,
    max_bytes: usize,
    timeout: std::time::Duration,
    /// `Retry-After` sent with 503 when an exporter is full.
    retry_after: std::time::Duration,
}

/// `google.rpc.Status`, the OTLP/HTTP error body.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

const INVALID_ARGUMENT: i32 = 3;
const DEADLINE_EXCEEDED: i32 = 4;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNIMPLEMENTED: i32 = 12;
const UNAVAILABLE: i32 = 14;

fn error(status: StatusCode, format: Option<BodyFormat>, message: String) -> Response {
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => RESOURCE_EXHAUSTED,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => UNIMPLEMENTED,
        StatusCode::REQUEST_TIMEOUT => DEADLINE_EXCEEDED,
        StatusCode::SERVICE_UNAVAILABLE => UNAVAILABLE,
        _ => INVALID_ARGUMENT,
    };
    match format {
        Some(BodyFormat::Protobuf) => (
            status,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            RpcStatus { code, message }.encode_to_vec(),
        )
            .into_response(),
        Some(BodyFormat::Json) => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"code": code, "message": message}).to_string(),
        )
            .into_response(),
        None => (status, [(header::CONTENT_TYPE, "text/plain")], message).into_response(),
    }
}

fn success(format: BodyFormat, r: &ExportProfilesServiceResponse) -> Response {
    match format {
        BodyFormat::Protobuf => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            r.encode_to_vec(),
        )
            .into_response(),
        BodyFormat::Json => {
            let body = match &r.partial_success {
                // int64 as a string, per the protobuf JSON mapping.
                Some(p) => serde_json::json!({"partialSuccess": {
                    "rejectedProfiles": p.rejected_profiles.to_string(),
                    "errorMessage": p.error_message,
                }}),
                None => serde_json::json!({}),
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
    }
}

fn format_of(headers: &HeaderMap) -> Result<BodyFormat, String> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(BodyFormat::Protobuf),
        "application/json" => Ok(BodyFormat::Json),
        _ => Err(format!(
            "unsupported content type {ct:?}: use application/x-protobuf or application/json"
        )),
    }
}

async fn export(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let ingest = &st.ingest;
    let format = match format_of(&headers) {
        Ok(f) => f,
        Err(m) => {
            ingest.count_rejected_request();
            return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, None, m);
        }
    };
    let reject = |status: StatusCode, m: String| {
        ingest.count_rejected_request();
        error(status, Some(format), m)
    };
    // Version before anything else: a body of another schema version would
    // decode without error into the wrong fields.
    let versions: Result<Vec<&str>, _> = headers
        .get_all(otlp::PROFILES_VERSION_HEADER)
        .iter()
        .map(HeaderValue::to_str)
        .collect();
    let version = match versions {
        Ok(v) => otlp::check_profiles_version(v),
        Err(_) => Err(format!(
            "{} is not valid ASCII",
            otlp::PROFILES_VERSION_HEADER
        )),
    };
    if let Err(m) = version {
        return reject(StatusCode::BAD_REQUEST, m);
    }
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("identity") => false,
        Some("gzip") => true,
        Some(other) => {
            return reject(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content encoding {other:?}: use gzip or none"),
            )
        }
    };
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        match len.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(n) if n > st.max_bytes as u64 => {
                return reject(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "request body of {n} bytes exceeds the {}-byte limit",
                        st.max_bytes
                    ),
                )
            }
            Some(_) => {}
            None => return reject(StatusCode::BAD_REQUEST, "invalid Content-Length".into()),
        }
    }
    let read = tokio::time::timeout(st.timeout, Limited::new(body, st.max_bytes).collect());
    let Ok(read) = read.await else {
        return reject(
            StatusCode::REQUEST_TIMEOUT,
            format!("request body not received within {:?}", st.timeout),
        );
    };
    let bytes = match read {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return reject(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds the {}-byte limit", st.max_bytes),
            )
        }
        Err(e) => {
            return reject(
                StatusCode::BAD_REQUEST,
                format!("reading request body: {e}"),
            )
        }
    };
    let ingest2 = st.ingest.clone();
    let result = tokio::task::spawn_blocking(move || {
        let req = match ingest2.parse_body(&bytes, gzip, format) {
            Ok(r) => r,
            Err(e) => {
                ingest2.count_rejected_request();
                return Err(e);
            }
        };
        // export() counts its own requests and rejections.
        ingest2.export(req, bytes.len())
    })
    .await;
    match result {
        Ok(Ok(r)) => success(format, &r),
        Ok(Err(IngestError::Busy(m))) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, Some(format), m);
            let secs = st.retry_after.as_secs().max(1);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        }
        Ok(Err(e)) => {
            let status = match &e {
                IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                IngestError::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                IngestError::Invalid(_) => StatusCode::BAD_REQUEST,
                IngestError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            error(status, Some(format), e.to_string())
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(format),
            format!("ingest task failed: {e}"),
        ),
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    ingest: Arc<Ingest>,
    max_bytes: usize,
    limit: Arc<tokio::sync::Semaphore>,
    timeout: std::time::Duration,
    retry_after: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let app = Router::new()
        .route(PATH, post(export))
        // Extractors that buffer (none here today) get the same cap.
        .layer(DefaultBodyLimit::max(max_bytes))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(
            limit,
        ))
        .with_state(AppState {
            ingest,
            max_bytes,
            timeout,
            retry_after,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
