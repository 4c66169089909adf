//! NDJSON `_bulk` client. Elasticsearch answers 200 even when items fail, so
//! the outcome is per item: 201/200 and 409 (the `_id` exists: written before)
//! are success, 429 and 5xx are retried, other 4xx are permanent.

use std::io::Write as _;
use std::time::Duration;

use base64::Engine as _;
use flate2::write::GzEncoder;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use serde_json::Value;

use crate::encode::Document;

/// How to authenticate to Elasticsearch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Auth {
    #[default]
    None,
    Basic {
        username: String,
        password: String,
    },
    /// The base64 `id:key` form Elasticsearch hands out (`Authorization: ApiKey …`).
    ApiKey(String),
}

#[derive(Clone, Debug)]
pub struct BulkConfig {
    /// Base URL, e.g. `http://127.0.0.1:9200` (https needs the `tls` feature).
    pub url: String,
    pub auth: Auth,
    /// Gzip request bodies (Elasticsearch accepts `Content-Encoding: gzip`).
    pub gzip: bool,
    pub timeout: Duration,
}

impl Default for BulkConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:9200".into(),
            auth: Auth::None,
            gzip: true,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What Elasticsearch said about one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemOutcome {
    /// 200/201: written now.
    Written,
    /// 409 on `create`: the id was written before — success for content-addressed docs.
    Exists,
    /// 429 or 5xx: try again later.
    Retry { status: u16, reason: String },
    /// Any other status: permanent (mapping error, bad request…).
    Rejected { status: u16, reason: String },
}

impl ItemOutcome {
    pub fn from_status(status: u16, reason: String) -> Self {
        match status {
            200..=299 => ItemOutcome::Written,
            409 => ItemOutcome::Exists,
            429 | 500..=599 => ItemOutcome::Retry { status, reason },
            _ => ItemOutcome::Rejected { status, reason },
        }
    }
}

/// A failure of the whole request.
#[derive(Debug)]
pub enum BulkError {
    /// Connection refused, reset, timeout…: retry the whole batch.
    Transport(String),
    /// A non-2xx answer to the request as a whole.
    Status { status: u16, body: String },
    /// 2xx but not a bulk response we understand: retry (409 makes it safe).
    BadResponse(String),
    /// The client cannot be built (e.g. https without the `tls` feature).
    Config(String),
}

impl BulkError {
    /// Whether retrying the same batch can succeed. A whole-request 400 or 413
    /// means the batch itself is unacceptable; everything else (auth not yet
    /// configured, overload, outage) may clear up.
    pub fn retryable(&self) -> bool {
        !matches!(
            self,
            BulkError::Status {
                status: 400 | 413,
                ..
            } | BulkError::Config(_)
        )
    }
}

impl std::fmt::Display for BulkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BulkError::Transport(e) => write!(f, "bulk request failed: {e}"),
            BulkError::Status { status, body } => {
                write!(f, "bulk request got HTTP {status}: {body}")
            }
            BulkError::BadResponse(e) => write!(f, "unexpected bulk response: {e}"),
            BulkError::Config(e) => write!(f, "bulk client configuration: {e}"),
        }
    }
}

impl std::error::Error for BulkError {}

/// The `_bulk` client.
#[derive(Clone, Debug)]
pub struct BulkClient {
    http: reqwest::Client,
    endpoint: String,
    gzip: bool,
}

impl BulkClient {
    pub fn new(cfg: &BulkConfig) -> Result<Self, BulkError> {
        let base = cfg.url.trim_end_matches('/');
        if base.starts_with("https://") && !cfg!(feature = "tls") {
            return Err(BulkError::Config(format!(
                "{base}: https needs the exporter built with the `tls` feature"
            )));
        }
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(BulkError::Config(format!(
                "{base}: URL must start with http:// or https://"
            )));
        }
        let mut headers = HeaderMap::new();
        match &cfg.auth {
            Auth::None => {}
            Auth::Basic { username, password } => {
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                headers.insert(AUTHORIZATION, header(&format!("Basic {token}"))?);
            }
            Auth::ApiKey(key) => {
                headers.insert(AUTHORIZATION, header(&format!("ApiKey {key}"))?);
            }
        }
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        #[cfg(feature = "tls")]
        {
            // reqwest's `rustls-no-provider` uses the process-wide provider; ring
            // is ours (aws-lc would need cmake). Installing twice is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| BulkError::Config(e.to_string()))?;
        Ok(Self {
            http,
            endpoint: format!("{base}/_bulk"),
            gzip: cfg.gzip,
        })
    }

    /// Sends one batch; one outcome per document, in order.
    pub async fn send(&self, docs: &[&Document]) -> Result<Vec<ItemOutcome>, BulkError> {
        let mut body = Vec::with_capacity(docs.iter().map(|d| d.ndjson_len()).sum());
        for d in docs {
            d.write_ndjson(&mut body);
        }
        self.send_body(body, docs.len()).await
    }

    /// Sends a prepared NDJSON body of `n` items.
    pub async fn send_body(&self, body: Vec<u8>, n: usize) -> Result<Vec<ItemOutcome>, BulkError> {
        let mut req = self.http.post(&self.endpoint);
        let body = if self.gzip {
            let mut enc = GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            enc.write_all(&body)
                .and_then(|_| enc.finish())
                .map_err(|e| BulkError::Transport(format!("gzip: {e}")))?
        } else {
            body
        };
        if self.gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| BulkError::Transport(error_chain(&e)))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| BulkError::Transport(error_chain(&e)))?;
        if !(200..300).contains(&status) {
            let body = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            return Err(BulkError::Status { status, body });
        }
        parse_response(&bytes, n)
    }
}

fn header(v: &str) -> Result<HeaderValue, BulkError> {
    let mut h =
        HeaderValue::from_str(v).map_err(|e| BulkError::Config(format!("auth header: {e}")))?;
    h.set_sensitive(true);
    Ok(h)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Parses a `_bulk` response. With `errors: false` every item succeeded and
/// the items need not be read; otherwise each item's status decides.
pub fn parse_response(bytes: &[u8], n: usize) -> Result<Vec<ItemOutcome>, BulkError> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| BulkError::BadResponse(e.to_string()))?;
    let errors = v
        .get("errors")
        .and_then(Value::as_bool)
        .ok_or_else(|| BulkError::BadResponse("no `errors` field".into()))?;
    let items = v.get("items").and_then(Value::as_array);
    if !errors {
        if let Some(items) = items {
            if items.len() != n {
                return Err(BulkError::BadResponse(format!(
                    "{} items for {n} documents",
                    items.len()
                )));
            }
        }
        return Ok(vec![ItemOutcome::Written; n]);
    }
    let items = items.ok_or_else(|| BulkError::BadResponse("errors: true without items".into()))?;
    if items.len() != n {
        return Err(BulkError::BadResponse(format!(
            "{} items for {n} documents",
            items.len()
        )));
    }
    Ok(items
        .iter()
        .map(|item| {
            // {"create": {"status": 409, "error": {"type": …, "reason": …}}}
            let inner = item.as_object().and_then(|o| o.values().next());
            let status = inner
                .and_then(|i| i.get("status"))
                .and_then(Value::as_u64)
                .unwrap_or(500) as u16;
            let reason = inner
                .and_then(|i| i.get("error"))
                .map(|e| {
                    let ty = e.get("type").and_then(Value::as_str).unwrap_or("");
                    let reason = e.get("reason").and_then(Value::as_str).unwrap_or("");
                    format!("{ty}: {reason}")
                })
                .unwrap_or_default();
            ItemOutcome::from_status(status, reason)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            ItemOutcome::from_status(201, String::new()),
            ItemOutcome::Written
        );
        assert_eq!(
            ItemOutcome::from_status(409, String::new()),
            ItemOutcome::Exists
        );
        assert!(matches!(
            ItemOutcome::from_status(429, String::new()),
            ItemOutcome::Retry { .. }
        ));
        assert!(matches!(
            ItemOutcome::from_status(503, String::new()),
            ItemOutcome::Retry { .. }
        ));
        assert!(matches!(
            ItemOutcome::from_status(400, String::new()),
            ItemOutcome::Rejected { .. }
        ));
    }

    #[test]
    fn parses_item_by_item() {
        let body = br#"{"took":3,"errors":true,"items":[
            {"create":{"_index":"a","_id":"1","status":201}},
            {"create":{"_index":"a","_id":"2","status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},
            {"create":{"_index":"a","_id":"3","status":429,"error":{"type":"es_rejected_execution_exception","reason":"busy"}}},
            {"update":{"_index":"b","_id":"4","status":400,"error":{"type":"mapper_parsing_exception","reason":"bad"}}}]}"#;
        let out = parse_response(body, 4).unwrap();
        assert_eq!(out[0], ItemOutcome::Written);
        assert_eq!(out[1], ItemOutcome::Exists);
        assert_eq!(
            out[2],
            ItemOutcome::Retry {
                status: 429,
                reason: "es_rejected_execution_exception: busy".into()
            }
        );
        assert_eq!(
            out[3],
            ItemOutcome::Rejected {
                status: 400,
                reason: "mapper_parsing_exception: bad".into()
            }
        );
        assert!(parse_response(body, 3).is_err());
        assert_eq!(
            parse_response(br#"{"errors":false,"items":[{},{}]}"#, 2)
                .unwrap()
                .len(),
            2
        );
        assert!(parse_response(b"not json", 1).is_err());
        assert!(parse_response(br#"{"items":[]}"#, 0).is_err());
    }

    #[test]
    fn https_without_tls_is_a_clear_error() {
        let cfg = BulkConfig {
            url: "https://es:9200".into(),
            ..Default::default()
        };
        let r = BulkClient::new(&cfg);
        if cfg!(feature = "tls") {
            assert!(r.is_ok());
        } else {
            assert!(r.unwrap_err().to_string().contains("tls"));
        }
        let cfg = BulkConfig {
            url: "ftp://x".into(),
            ..Default::default()
        };
        assert!(BulkClient::new(&cfg).is_err());
    }
}
