//! The collector's browser UI.
//!
//! [`router`] serves one page (`/`) and the JSON API it calls. Everything
//! the page needs is compiled into the binary (`assets/` via
//! `include_str!`): no CDN, no npm bundle, so the UI works on a machine with
//! no internet access and cannot drift from the API it was written for.
//! The page is vanilla JS; its whole state (range, filters, search, zoom,
//! view) lives in the URL, so a view can be bookmarked or shared and a
//! headless browser can be pointed at any state (see `tests/browser.rs`).
//!
//! # API
//!
//! All endpoints are `GET`. Times are Unix **milliseconds**. Without
//! `from`/`to` a request covers the last hour of the store's clock.
//! Filters (all optional, an empty value means "any"): `host`, `container`,
//! `process`, `pid`, `thread` (name), `tid`, `frame_type` (`kernel`,
//! `native`, `interpreted`, `error`, or a kind such as `cpython`).
//!
//! | endpoint | extra parameters | answer |
//! |---|---|---|
//! | `/api/flamegraph` | `min` (smallest node kept, fraction of the total, default 1e-4) | `{from, to, total, root}`, node = `{n, k, v, s, c}` (name, class, total, self, children) |
//! | `/api/top` | `n` (default 100), `by` (`self`/`total`) | `{total, functions: [{name, kind, self, total}]}` |
//! | `/api/diff` | `a_from`, `a_to` (baseline; default: the period before `from`) | `{a_total, b_total, root, functions}`; nodes carry `a`/`as` (baseline) besides `v`/`s` |
//! | `/api/filters` | — | known `hosts`, `containers`, `processes`, `pids`, `threads`, `frame_types`, data `bounds`, `now` |
//! | `/api/pprof` | — | the merged profile as gzipped pprof (`profile::pprof::encode`) |
//!
//! Bad parameters get `400 {"error": …}`; store failures `500`.
//! Queries run on the blocking pool (redb does file I/O).
//!
//! The router binds nothing itself: the collector serves it on
//! `--http-listen`, by default on loopback only ([`DEFAULT_LISTEN`]), as the
//! UI has no authentication:
//!
//! ```no_run
//! # async fn serve(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let store = Arc::new(store::Store::open(dir, store::StoreConfig::default())?);
//! let listener = tokio::net::TcpListener::bind(web::DEFAULT_LISTEN).await?;
//! axum::serve(listener, web::router(store.clone())).await?;
//! # Ok(()) }
//! ```
//!
//! `cargo run -p web --example demo` serves it over synthetic data.

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use store::{Filter, FlameGraph, FrameTypeFilter, Store, TimeRange, TopBy};

/// Where the collector serves the UI unless told otherwise: loopback only,
/// because the UI has no authentication.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

const MS: u64 = 1_000_000;
/// Default query window when the request names none.
const DEFAULT_WINDOW_MS: u64 = 3600 * 1000;
/// Most functions `/api/top` returns.
const MAX_TOP: usize = 10_000;

/// The UI and its API over `store`.
pub fn router(store: Arc<Store>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .route("/api/flamegraph", get(flamegraph))
        .route("/api/top", get(top))
        .route("/api/diff", get(diff))
        .route("/api/filters", get(filters))
        .route("/api/pprof", get(pprof))
        .with_state(store)
}

/// An API failure: the status and a message for the page to show.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::Invalid(m) => ApiError(StatusCode::BAD_REQUEST, m),
            e => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type Params = Query<HashMap<String, String>>;

/// A non-empty parameter value.
fn param<'a>(q: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    q.get(key).map(|s| s.trim()).filter(|s| !s.is_empty())
}

fn number<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    key: &str,
) -> Result<Option<T>, ApiError> {
    param(q, key)
        .map(|v| {
            v.parse::<T>()
                .map_err(|_| ApiError::bad(format!("{key}={v:?} is not a valid number")))
        })
        .transpose()
}

/// `from`/`to` (or the given keys) in ms → a store range; missing ends
/// default to the last hour before `now`, or to `default`.
fn range_of(
    q: &HashMap<String, String>,
    from_key: &str,
    to_key: &str,
    default: (u64, u64),
) -> Result<TimeRange, ApiError> {
    let from = number::<u64>(q, from_key)?.unwrap_or(default.0);
    let to = number::<u64>(q, to_key)?.unwrap_or(default.1);
    if from >= to {
        return Err(ApiError::bad(format!(
            "{from_key} ({from}) must be before {to_key} ({to})"
        )));
    }
    let ns = |ms: u64| {
        ms.checked_mul(MS)
            .ok_or_else(|| ApiError::bad(format!("time {ms} ms is out of range")))
    };
    Ok(TimeRange::new(ns(from)?, ns(to)?)?)
}

fn default_window(store: &Store) -> (u64, u64) {
    let now_ms = store.now_unix_ns() / MS;
    (now_ms.saturating_sub(DEFAULT_WINDOW_MS), now_ms.max(1))
}

fn filter_of(q: &HashMap<String, String>) -> Result<Filter, ApiError> {
    let s = |k: &str| param(q, k).map(str::to_string);
    Ok(Filter {
        host: s("host"),
        container: s("container"),
        process_name: s("process"),
        pid: number(q, "pid")?,
        thread: s("thread"),
        tid: number(q, "tid")?,
        frame_type: param(q, "frame_type")
            .map(|v| v.parse::<FrameTypeFilter>())
            .transpose()?,
    })
}

/// Runs a store query on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("query task failed: {e}"),
        )
    })?
}

fn ms_of(r: TimeRange) -> (u64, u64) {
    (r.start_unix_ns / MS, r.end_unix_ns / MS)
}

/// A flame graph node as JSON, dropping subtrees below `min_count`.
fn node_json(g: &FlameGraph, i: u32, min_count: u64, diff: bool) -> Value {
    let n = &g.nodes[i as usize];
    let children: Vec<Value> = n
        .children
        .iter()
        .filter(|&&c| {
            let c = &g.nodes[c as usize];
            c.total.max(c.base_total) >= min_count
        })
        .map(|&c| node_json(g, c, min_count, diff))
        .collect();
    let mut v = json!({
        "n": &*n.name,
        "k": store::class_name(n.class),
        "v": n.total,
        "s": n.self_count,
    });
    if diff {
        v["a"] = json!(n.base_total);
        v["as"] = json!(n.base_self);
    }
    if !children.is_empty() {
        v["c"] = Value::Array(children);
    }
    v
}

fn min_count(q: &HashMap<String, String>, total: u64) -> Result<u64, ApiError> {
    let min = number::<f64>(q, "min")?.unwrap_or(1e-4);
    if !(0.0..=1.0).contains(&min) {
        return Err(ApiError::bad(format!("min={min} must be between 0 and 1")));
    }
    Ok(((total as f64 * min).ceil() as u64).max(1))
}

/// The page may load nothing but its own assets and call nothing but its
/// own API: a browser-enforced form of "no CDN", and no way for a frame
/// name in the data to pull in script even if it slipped past the page's
/// text-only rendering.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self'; connect-src 'self'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

async fn index() -> Response {
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Html(INDEX_HTML),
    )
        .into_response()
}

fn asset(body: &'static str, mime: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

async fn flamegraph(
    State(store): State<Arc<Store>>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let range = range_of(&q, "from", "to", default_window(&store))?;
    let filter = filter_of(&q)?;
    blocking(move || {
        let g = store.flamegraph(range, &filter)?;
        let min = min_count(&q, g.total())?;
        let (from, to) = ms_of(range);
        Ok(Json(json!({
            "from": from,
            "to": to,
            "total": g.total(),
            "root": node_json(&g, 0, min, false),
        })))
    })
    .await
}

async fn top(State(store): State<Arc<Store>>, Query(q): Params) -> Result<Json<Value>, ApiError> {
    let range = range_of(&q, "from", "to", default_window(&store))?;
    let filter = filter_of(&q)?;
    let n = number::<usize>(&q, "n")?.unwrap_or(100).min(MAX_TOP);
    let by = match param(&q, "by") {
        None | Some("self") => TopBy::SelfCount,
        Some("total") => TopBy::Total,
        Some(o) => return Err(ApiError::bad(format!("by={o:?}: use self or total"))),
    };
    blocking(move || {
        // The total of the range: the denominator of the page's percentages.
        let total = store.count(range, &filter)?;
        let functions: Vec<Value> = store
            .top_functions_by(range, &filter, n, by)?
            .into_iter()
            .map(|f| {
                json!({
                    "name": &*f.name,
                    "kind": store::class_name(f.class),
                    "self": f.self_count,
                    "total": f.total,
                })
            })
            .collect();
        Ok(Json(json!({ "total": total, "functions": functions })))
    })
    .await
}

async fn diff(State(store): State<Arc<Store>>, Query(q): Params) -> Result<Json<Value>, ApiError> {
    let b = range_of(&q, "from", "to", default_window(&store))?;
    let len = b.duration_ns() / MS;
    let (bf, _) = ms_of(b);
    let a = range_of(&q, "a_from", "a_to", (bf.saturating_sub(len), bf.max(1)))?;
    let filter = filter_of(&q)?;
    blocking(move || {
        let d = store.diff(a, b, &filter)?;
        let g = d.flamegraph();
        let min = min_count(&q, g.total().max(g.base_total()))?;
        let functions: Vec<Value> = d
            .functions
            .iter()
            .take(100)
            .map(|f| {
                json!({
                    "name": &*f.name,
                    "kind": store::class_name(f.class),
                    "a_self": f.a_self,
                    "b_self": f.b_self,
                    "a_total": f.a_total,
                    "b_total": f.b_total,
                    "self_delta": f.self_delta,
                    "total_delta": f.total_delta,
                })
            })
            .collect();
        let (af, at) = ms_of(a);
        let (bf, bt) = ms_of(b);
        Ok(Json(json!({
            "a": {"from": af, "to": at},
            "b": {"from": bf, "to": bt},
            "a_total": d.a_total,
            "b_total": d.b_total,
            "root": node_json(&g, 0, min, true),
            "functions": functions,
        })))
    })
    .await
}

async fn filters(
    State(store): State<Arc<Store>>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let range = range_of(&q, "from", "to", default_window(&store))?;
    blocking(move || {
        let k = store.known_values(range)?;
        let bounds = store.time_bounds()?.map(|b| {
            let (from, to) = ms_of(b);
            json!({"from": from, "to": to})
        });
        let pids: Vec<Value> = k
            .pids
            .iter()
            .map(|(pid, name)| json!({"pid": pid, "name": name}))
            .collect();
        Ok(Json(json!({
            "hosts": k.hosts,
            "containers": k.containers,
            "processes": k.processes,
            "pids": pids,
            "threads": k.threads,
            "frame_types": k.frame_types,
            "bounds": bounds,
            "now": store.now_unix_ns() / MS,
        })))
    })
    .await
}

async fn pprof(State(store): State<Arc<Store>>, Query(q): Params) -> Result<Response, ApiError> {
    let range = range_of(&q, "from", "to", default_window(&store))?;
    let filter = filter_of(&q)?;
    let (from, to) = ms_of(range);
    let bytes =
        blocking(move || Ok(profile::pprof::encode(&store.merged(range, &filter)?))).await?;
    let disposition = format!("attachment; filename=\"profile-{from}-{to}.pb.gz\"");
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition)
                    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
            ),
        ],
        bytes,
    )
        .into_response())
}
