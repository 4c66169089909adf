//! Contract server: a local `_bulk` endpoint that behaves like Elasticsearch
//! for the profiling indices, so the exporter is tested against the contract
//! rather than against itself.
//!
//! What it enforces, as Elasticsearch does: NDJSON action/source pairs;
//! data streams accept only `create` and need `@timestamp`; a duplicate `_id`
//! is 409; per-item statuses with `errors: true`; gzip bodies; auth headers.
//! What it adds on purpose: every document is checked against the field names
//! and types of the profiling templates below (encoded as data), and a field
//! the template does not name is a 400 — stricter than `dynamic: false`, so a
//! typo in a field name fails a test instead of silently not being indexed.
//! Injectable faults: 429 storms (a share of items) and outages (the listener
//! and every open connection go away; connections are refused).
#![allow(dead_code)]

pub mod request;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::TcpSocket;
use tokio::task::{JoinHandle, JoinSet};

/// Field types of the profiling templates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Keyword,
    /// `date`: RFC 3339 string or epoch seconds/millis number.
    Date,
    /// `date_nanos`: the same inputs, kept to the nanosecond.
    DateNanos,
    Short,
    Integer,
    Long,
    Ip,
    /// A field alias: readable in queries, never writable.
    Alias,
}

pub struct Template {
    /// Index or data stream name.
    pub name: &'static str,
    pub data_stream: bool,
    pub fields: &'static [(&'static str, FieldType)],
    /// Passthrough objects: any sub-field is accepted as `keyword`.
    pub passthrough: &'static [&'static str],
    /// Unmapped fields accepted as `keyword` (dynamic mapping on).
    pub dynamic: bool,
}

use FieldType::*;

const OTEL_EVENT_FIELDS: &[(&str, FieldType)] = &[
    ("@timestamp", DateNanos),
    ("stacktrace.id", Keyword),
    ("count", Short),
    ("sampling_frequency", Long),
    ("resource.attributes.host.id", Keyword),
    ("resource.attributes.host.name", Keyword),
    ("resource.attributes.host.ip", Ip),
    ("resource.attributes.k8s.namespace.name", Keyword),
    ("resource.attributes.k8s.pod.name", Keyword),
    ("resource.attributes.container.name", Keyword),
    ("resource.attributes.container.id", Keyword),
    ("resource.attributes.service.name", Keyword),
    ("resource.attributes.process.executable.name", Keyword),
    ("resource.attributes.thread.name", Keyword),
    ("resource.attributes.os.version", Keyword),
    ("Stacktrace.id", Alias),
    ("Stacktrace.sampling_frequency", Alias),
    ("process.thread.name", Alias),
    ("orchestrator.resource.name", Alias),
];

const ECS_EVENT_FIELDS: &[(&str, FieldType)] = &[
    ("ecs.version", Keyword),
    ("@timestamp", Date),
    ("host.id", Keyword),
    ("host.name", Keyword),
    ("Stacktrace.id", Keyword),
    ("Stacktrace.count", Short),
    ("Stacktrace.sampling_frequency", Long),
    ("profiling.project.id", Long),
    ("process.thread.name", Keyword),
    ("process.executable.name", Keyword),
    ("service.name", Keyword),
    ("container.id", Keyword),
    ("container.name", Keyword),
    ("orchestrator.resource.name", Keyword),
    ("k8s.namespace.name", Keyword),
];

const fn otel_events(name: &'static str) -> Template {
    Template {
        name,
        data_stream: true,
        fields: OTEL_EVENT_FIELDS,
        passthrough: &["resource.attributes"],
        dynamic: false,
    }
}
const fn ecs_events(name: &'static str) -> Template {
    Template {
        name,
        data_stream: false,
        fields: ECS_EVENT_FIELDS,
        passthrough: &[],
        dynamic: false,
    }
}

/// Elasticsearch's profiling templates as this contract knows them.
pub static TEMPLATES: &[Template] = &[
    otel_events("profiling-events-all.otel-default"),
    otel_events("profiling-events-5pow01.otel-default"),
    otel_events("profiling-events-5pow02.otel-default"),
    otel_events("profiling-events-5pow03.otel-default"),
    otel_events("profiling-events-5pow04.otel-default"),
    otel_events("profiling-events-5pow05.otel-default"),
    otel_events("profiling-events-5pow06.otel-default"),
    otel_events("profiling-events-5pow07.otel-default"),
    otel_events("profiling-events-5pow08.otel-default"),
    otel_events("profiling-events-5pow09.otel-default"),
    otel_events("profiling-events-5pow10.otel-default"),
    otel_events("profiling-events-5pow11.otel-default"),
    Template {
        name: "profiling-stacktraces.otel-default",
        data_stream: true,
        fields: &[
            ("@timestamp", Date),
            ("frame.ids", Keyword),
            ("frame.types", Keyword),
        ],
        passthrough: &[],
        dynamic: false,
    },
    Template {
        name: "profiling-stackframes.otel-default",
        data_stream: true,
        fields: &[
            ("@timestamp", Date),
            ("function.name", Keyword),
            ("function.filename", Keyword),
            ("line.number", Integer),
            ("function.offset", Integer),
        ],
        passthrough: &[],
        dynamic: false,
    },
    Template {
        name: "profiling-executables.otel-default",
        data_stream: true,
        fields: &[
            ("@timestamp", Date),
            (
                "resource.attributes.process.executable.build_id.htlhash",
                Keyword,
            ),
            ("resource.attributes.process.executable.name", Keyword),
        ],
        passthrough: &["resource.attributes"],
        dynamic: false,
    },
    Template {
        name: "profiling-hosts.otel-default",
        data_stream: true,
        fields: &[
            ("@timestamp", Date),
            ("resource.attributes.host.id", Keyword),
        ],
        passthrough: &["resource.attributes"],
        dynamic: false,
    },
    ecs_events("profiling-events-all"),
    ecs_events("profiling-events-5pow01"),
    ecs_events("profiling-events-5pow02"),
    ecs_events("profiling-events-5pow03"),
    ecs_events("profiling-events-5pow04"),
    ecs_events("profiling-events-5pow05"),
    ecs_events("profiling-events-5pow06"),
    ecs_events("profiling-events-5pow07"),
    ecs_events("profiling-events-5pow08"),
    ecs_events("profiling-events-5pow09"),
    ecs_events("profiling-events-5pow10"),
    ecs_events("profiling-events-5pow11"),
    Template {
        name: "profiling-stacktraces",
        data_stream: false,
        fields: &[
            ("ecs.version", Keyword),
            ("Stacktrace.frame.ids", Keyword),
            ("Stacktrace.frame.types", Keyword),
        ],
        passthrough: &[],
        dynamic: false,
    },
    Template {
        name: "profiling-stackframes",
        data_stream: false,
        fields: &[
            ("Stackframe.file.name", Keyword),
            ("Stackframe.function.name", Keyword),
            ("Stackframe.line.number", Integer),
            ("Stackframe.function.offset", Integer),
        ],
        passthrough: &[],
        dynamic: false,
    },
    Template {
        name: "profiling-executables",
        data_stream: false,
        fields: &[
            ("@timestamp", Date),
            ("Executable.build.id", Keyword),
            ("Executable.file.name", Keyword),
            ("ecs.version", Keyword),
        ],
        passthrough: &[],
        dynamic: false,
    },
    Template {
        name: "profiling-hosts",
        data_stream: false,
        fields: &[
            ("host.id", Keyword),
            ("ecs.version", Keyword),
            ("@timestamp", Date),
        ],
        passthrough: &[],
        dynamic: true,
    },
    Template {
        name: "profiling-sq-executables",
        data_stream: false,
        fields: &[
            ("ecs.version", Keyword),
            ("Executable.file.id", Keyword),
            ("Time.created", Date),
            ("Symbolization.retries", Short),
        ],
        passthrough: &[],
        dynamic: false,
    },
    Template {
        name: "profiling-sq-leafframes",
        data_stream: false,
        fields: &[
            ("ecs.version", Keyword),
            ("Stacktrace.frame.id", Keyword),
            ("Time.created", Date),
            ("Symbolization.retries", Short),
        ],
        passthrough: &[],
        dynamic: false,
    },
];

pub fn template(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}

/// Flattens nested objects into dotted paths (Elasticsearch treats `{"a":{"b":1}}`
/// and `{"a.b":1}` alike).
pub fn flatten(prefix: &str, v: &Map<String, Value>, out: &mut Vec<(String, Value)>) {
    for (k, v) in v {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Object(m) => flatten(&path, m, out),
            _ => out.push((path, v.clone())),
        }
    }
}

fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19))
    {
        return false;
    }
    let rest = &s[19..];
    let rest = match rest.strip_prefix('.') {
        Some(r) => {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 || n > 9 {
                return false;
            }
            &r[n..]
        }
        None => rest,
    };
    rest == "Z" || (rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')))
}

fn check_scalar(ty: FieldType, v: &Value) -> bool {
    match ty {
        Keyword => v.is_string(),
        Date | DateNanos => match v {
            Value::String(s) => is_rfc3339(s),
            Value::Number(n) => n.as_u64().is_some(),
            _ => false,
        },
        Short => v.as_i64().is_some_and(|x| i16::try_from(x).is_ok()),
        Integer => v.as_i64().is_some_and(|x| i32::try_from(x).is_ok()),
        Long => v.as_i64().is_some(),
        Ip => v
            .as_str()
            .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok()),
        Alias => false,
    }
}

/// Checks one document against its template; `Err((type, reason))` as
/// Elasticsearch would put it in the item's error.
pub fn check_document(t: &Template, doc: &Map<String, Value>) -> Result<(), (String, String)> {
    let mut fields = Vec::new();
    flatten("", doc, &mut fields);
    if t.data_stream && !fields.iter().any(|(k, _)| k == "@timestamp") {
        return Err((
            "illegal_argument_exception".into(),
            "data stream timestamp field [@timestamp] is missing".into(),
        ));
    }
    for (path, v) in &fields {
        let ty = match t.fields.iter().find(|(n, _)| n == path) {
            Some((_, ty)) => *ty,
            None if t
                .passthrough
                .iter()
                .any(|p| path.starts_with(&format!("{p}.")))
                || t.dynamic =>
            {
                Keyword
            }
            None => {
                return Err((
                    "strict_dynamic_mapping_exception".into(),
                    format!("[{}] field [{path}] is not in the template", t.name),
                ))
            }
        };
        if ty == Alias {
            return Err((
                "mapper_parsing_exception".into(),
                format!("Cannot write to a field alias [{path}]"),
            ));
        }
        let ok = match v {
            Value::Array(a) => a.iter().all(|x| check_scalar(ty, x)),
            Value::Null => true,
            x => check_scalar(ty, x),
        };
        if !ok {
            return Err((
                "document_parsing_exception".into(),
                format!("failed to parse field [{path}] of type [{ty:?}]: {v}"),
            ));
        }
    }
    Ok(())
}

/// What the server saw.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub requests: u64,
    pub gzip_requests: u64,
    pub items: u64,
    pub created: u64,
    pub conflicts: u64,
    pub too_many: u64,
    pub bad: u64,
    pub unauthorized: u64,
    /// Largest number of items in one request, and largest body (bytes as sent).
    pub max_items: u64,
    pub max_body: u64,
}

#[derive(Default)]
pub struct State {
    /// index → id → source
    pub docs: HashMap<String, HashMap<String, Value>>,
    /// (index, id) → create/update attempts that reached the document checks.
    pub attempts: HashMap<(String, String), u32>,
    pub stats: Stats,
    /// Per mille of items answered 429 while a storm is on.
    pub storm_per_mille: u32,
    storm_rng: u64,
    /// Expected `Authorization` header, if any.
    pub auth: Option<String>,
    /// Every 400 reason, for tests to print.
    pub errors: Vec<String>,
    /// Bench mode: source lines are not parsed, checked or kept (ids still
    /// are, for 409s), so the figures show the exporter's own cost.
    pub lenient: bool,
    /// Every item for this index is answered with this status (a poison
    /// document: 503 forever, or a permanent 400).
    pub poison: Option<(String, u16)>,
}

pub struct ContractServer {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

async fn listen(addr: SocketAddr) -> tokio::net::TcpListener {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.set_reuseaddr(true).expect("reuseaddr");
    sock.bind(addr).expect("bind 127.0.0.1");
    sock.listen(1024).expect("listen")
}

impl ContractServer {
    pub async fn start() -> Arc<Self> {
        let listener = listen("127.0.0.1:0".parse().unwrap()).await;
        let addr = listener.local_addr().unwrap();
        let s = Arc::new(Self {
            addr,
            state: Arc::default(),
            accept: Mutex::new(None),
        });
        s.serve(listener);
        s
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let state = self.state.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set: aborting the accept task drops
            // them all, like a server that dies.
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        *self.accept.lock().unwrap() = Some(task);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server disappears: new connections are refused, open ones reset.
    pub async fn stop(&self) {
        let task = self.accept.lock().unwrap().take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }

    /// The server comes back on the same address (its data kept, like a restart).
    pub async fn restart(&self) {
        let listener = listen(self.addr).await;
        self.serve(listener);
    }

    pub fn set_storm(&self, per_mille: u32) {
        self.state.lock().unwrap().storm_per_mille = per_mille;
    }

    pub fn set_poison(&self, index: &str, status: u16) {
        self.state.lock().unwrap().poison = Some((index.to_owned(), status));
    }

    pub fn set_lenient(&self, on: bool) {
        self.state.lock().unwrap().lenient = on;
    }

    pub fn set_auth(&self, header: Option<String>) {
        self.state.lock().unwrap().auth = header;
    }

    pub fn stats(&self) -> Stats {
        self.state.lock().unwrap().stats.clone()
    }

    pub fn count(&self, index: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .docs
            .get(index)
            .map_or(0, HashMap::len)
    }

    pub fn doc(&self, index: &str, id: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .docs
            .get(index)
            .and_then(|m| m.get(id))
            .cloned()
    }

    pub fn ids(&self, index: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .docs
            .get(index)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn docs(&self, index: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .docs
            .get(index)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Highest number of attempts any single document of `index` needed.
    pub fn max_attempts(&self, index: &str) -> u32 {
        self.state
            .lock()
            .unwrap()
            .attempts
            .iter()
            .filter(|((i, _), _)| i == index)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
    }

    pub fn errors(&self) -> Vec<String> {
        self.state.lock().unwrap().errors.clone()
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != hyper::Method::POST || req.uri().path() != "/_bulk" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            json!({"error": "only POST /_bulk is implemented"}),
        ));
    }
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/x-ndjson") && !ct.starts_with("application/json") {
        return Ok(reply(
            StatusCode::NOT_ACCEPTABLE,
            json!({"error": format!("Content-Type header [{ct}] is not supported")}),
        ));
    }
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let gzip = req
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v == "gzip");
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "body read failed"}),
            ))
        }
    };
    let mut st = state.lock().unwrap();
    st.stats.requests += 1;
    st.stats.max_body = st.stats.max_body.max(body.len() as u64);
    if let Some(want) = &st.auth {
        if auth.as_deref() != Some(want.as_str()) {
            st.stats.unauthorized += 1;
            return Ok(reply(
                StatusCode::UNAUTHORIZED,
                json!({"error": "security_exception: missing authentication credentials"}),
            ));
        }
    }
    let body = if gzip {
        st.stats.gzip_requests += 1;
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .is_err()
        {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "bad gzip body"}),
            ));
        }
        out
    } else {
        body.to_vec()
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return Ok(reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "body is not UTF-8"}),
        ));
    };
    if !text.ends_with('\n') {
        return Ok(reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "The bulk request must be terminated by a newline [\\n]"}),
        ));
    }
    let mut lines = text.lines();
    let mut items = Vec::new();
    let mut errors = false;
    while let Some(action_line) = lines.next() {
        if action_line.is_empty() {
            continue;
        }
        let Ok(Value::Object(action)) = serde_json::from_str::<Value>(action_line) else {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("malformed action line: {action_line}")}),
            ));
        };
        let Some((op, meta)) = action.iter().next() else {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "empty action"}),
            ));
        };
        let op = op.clone();
        if !["create", "index", "update", "delete"].contains(&op.as_str()) {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("unknown action [{op}]")}),
            ));
        }
        let index = meta
            .get("_index")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let id = meta.get("_id").and_then(Value::as_str).map(str::to_owned);
        let source = if op == "delete" {
            None
        } else {
            match lines.next().map(serde_json::from_str::<Value>) {
                Some(Ok(Value::Object(m))) => Some(m),
                _ => {
                    return Ok(reply(
                        StatusCode::BAD_REQUEST,
                        json!({"error": "missing or malformed source line"}),
                    ))
                }
            }
        };
        st.stats.items += 1;
        let (status, error) = item(&mut st, &op, &index, id.clone(), source);
        let mut r = json!({"_index": index, "_id": id, "status": status});
        if let Some((ty, reason)) = error {
            errors = true;
            if status == 400 {
                st.errors.push(format!("{index}: {reason}"));
            }
            r["error"] = json!({"type": ty, "reason": reason});
        }
        items.push(json!({ op: r }));
    }
    Ok(reply(
        StatusCode::OK,
        json!({"took": 1, "errors": errors, "items": items}),
    ))
}

type ItemError = Option<(String, String)>;

fn item(
    st: &mut State,
    op: &str,
    index: &str,
    id: Option<String>,
    source: Option<Map<String, Value>>,
) -> (u16, ItemError) {
    let Some(t) = template(index) else {
        st.stats.bad += 1;
        return (
            404,
            Some((
                "index_not_found_exception".into(),
                format!("no such index [{index}]"),
            )),
        );
    };
    if t.data_stream && op != "create" {
        st.stats.bad += 1;
        return (400, Some(("illegal_argument_exception".into(),
            format!("only write ops with an op_type of create are allowed in data streams; got [{op}] for [{index}]"))));
    }
    if st.storm_per_mille > 0 {
        st.storm_rng = st
            .storm_rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if ((st.storm_rng >> 33) % 1000) < u64::from(st.storm_per_mille) {
            st.stats.too_many += 1;
            return (
                429,
                Some((
                    "es_rejected_execution_exception".into(),
                    "rejected execution: write queue is full".into(),
                )),
            );
        }
    }
    let id = id.unwrap_or_else(|| format!("auto-{}", st.stats.items));
    let source = source.unwrap_or_default();
    *st.attempts
        .entry((index.to_owned(), id.clone()))
        .or_default() += 1;
    if let Some((_, status)) = st.poison.as_ref().filter(|(i, _)| i == index) {
        let status = *status;
        if status == 400 {
            st.stats.bad += 1;
        }
        return (
            status,
            Some(("poison".into(), format!("injected {status} for [{index}]"))),
        );
    }
    let doc = if op == "update" {
        // Scripted upsert: {"script":{…,"params":{"timestamp":T}},"scripted_upsert":true,"upsert":{…}}
        let Some(Value::Object(upsert)) = source.get("upsert") else {
            st.stats.bad += 1;
            return (
                400,
                Some((
                    "action_request_validation_exception".into(),
                    "update without upsert document".into(),
                )),
            );
        };
        if let Some(existing) = st.docs.get_mut(index).and_then(|m| m.get_mut(&id)) {
            if let Some(ts) = source
                .get("script")
                .and_then(|s| s.pointer("/params/timestamp"))
            {
                existing["@timestamp"] = ts.clone();
            }
            return (200, None);
        }
        upsert.clone()
    } else {
        source
    };
    if st.lenient {
        let m = st.docs.entry(index.to_owned()).or_default();
        if m.insert(id, Value::Null).is_some() {
            st.stats.conflicts += 1;
            return (
                409,
                Some((
                    "version_conflict_engine_exception".into(),
                    "document already exists".into(),
                )),
            );
        }
        st.stats.created += 1;
        return (201, None);
    }
    if let Err(e) = check_document(t, &doc) {
        st.stats.bad += 1;
        return (400, Some(e));
    }
    let m = st.docs.entry(index.to_owned()).or_default();
    if op == "create" && m.contains_key(&id) {
        st.stats.conflicts += 1;
        return (
            409,
            Some((
                "version_conflict_engine_exception".into(),
                format!("[{id}]: version conflict, document already exists"),
            )),
        );
    }
    m.insert(id, Value::Object(doc));
    st.stats.created += 1;
    (201, None)
}
