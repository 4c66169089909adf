//! The collector's configuration file (TOML) and the command's defaults.
//!
//! ```toml
//! data_dir = "/var/lib/ebpf-profiler"   # spools and the embedded store
//! retry_after = "5s"                     # suggested to agents refused because an exporter is full
//!
//! [receivers]
//! grpc_listen = "127.0.0.1:4317"        # "off" disables
//! http_listen = "127.0.0.1:4318"        # OTLP/HTTP; "off" disables
//! max_request_bytes = 33554432
//! max_concurrent_requests = 4
//! request_timeout = "30s"
//!
//! [web]
//! listen = "127.0.0.1:7070"             # the flame-graph page (store exporter only); "off" disables
//!
//! [[exporters]]
//! type = "store"                         # store | elasticsearch | otlp | pprof
//! ```
//!
//! Every exporter takes `name` (default: its type; names its spool
//! directory) and `on_full` (`"refuse"`, the default, or `"drop"`; see
//! [`crate::pipeline`]); spooled ones take `spool_max_bytes`. Per type:
//!
//! * `store`: `dir` (default `DATA_DIR/store`), `retention` (`"7d"`),
//!   `max_bytes` (1 GiB).
//! * `elasticsearch`: `url` (required), `username` + `password` or
//!   `api_key`, `schema` (`"otel"`, `"ecs"`), `gzip`, `timeout`.
//! * `otlp`: `endpoint` (required, `http://host:port`), `protocol`
//!   (`"grpc"`, `"http"`), `gzip` (true), `headers` (a table), `timeout`.
//! * `pprof`: `dir` (`"profiles"`), `flush_interval` (`"10s"`),
//!   `max_buffered_samples`.
//!
//! Durations are a number with a unit: `ms`, `s`, `m`, `h`, `d`. Unknown
//! keys are errors (a typo must not silently fall back to a default).
//! Without any `[[exporters]]` the embedded store is used.

use crate::pipeline::{ExporterKind, ExporterSpec, OnFull};
use crate::Config;
use exporter_otlp::{OtlpConfig, Protocol, QueueConfig};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the web page is served by default: loopback only, the page has no
/// authentication.
pub const DEFAULT_WEB_LISTEN: &str = web::DEFAULT_LISTEN;

/// Exporter types, as written in `type = "…"`.
pub const EXPORTER_TYPES: [&str; 4] = ["store", "elasticsearch", "otlp", "pprof"];

/// The `collector` command's configuration without a file: OTLP on the
/// usual loopback ports, the embedded store in `./data`, the web page on
/// [`DEFAULT_WEB_LISTEN`].
pub fn command_default() -> Config {
    Config {
        exporters: vec![store_default()],
        web_listen: DEFAULT_WEB_LISTEN.parse().ok(),
        ..Config::default()
    }
}

fn store_default() -> ExporterSpec {
    ExporterSpec {
        name: "store".into(),
        on_full: OnFull::Refuse,
        kind: ExporterKind::Store {
            dir: None,
            config: store::StoreConfig::default(),
            queue: QueueConfig::default(),
        },
    }
}

/// Reads and parses a configuration file; errors name the file and the key.
pub fn load(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: cannot read the configuration file: {e}",
            path.display()
        )
    })?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    data_dir: Option<PathBuf>,
    retry_after: Option<String>,
    #[serde(default)]
    receivers: Receivers,
    #[serde(default)]
    web: Web,
    #[serde(default)]
    exporters: Vec<toml::Table>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Receivers {
    grpc_listen: Option<String>,
    http_listen: Option<String>,
    max_request_bytes: Option<usize>,
    max_concurrent_requests: Option<usize>,
    request_timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Web {
    listen: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    #[serde(rename = "type")]
    _type: String,
    name: Option<String>,
    on_full: Option<String>,
    spool_max_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreKeys {
    dir: Option<PathBuf>,
    retention: Option<String>,
    max_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EsKeys {
    url: String,
    username: Option<String>,
    password: Option<String>,
    api_key: Option<String>,
    schema: Option<String>,
    gzip: Option<bool>,
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OtlpKeys {
    endpoint: String,
    protocol: Option<String>,
    gzip: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PprofKeys {
    dir: Option<PathBuf>,
    flush_interval: Option<String>,
    max_buffered_samples: Option<usize>,
}

/// Parses a duration such as `500ms`, `30s`, `5m`, `2h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid duration {s:?}: use a number and a unit (500ms, 30s, 5m, 2h, 7d)")
    })?;
    let mult = match unit.trim() {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "invalid duration {s:?}: unit must be ms, s, m, h or d"
            ))
        }
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

/// A listen address, or `None` for `"off"`; `key` names it in the error.
pub fn listen(key: &str, v: &str) -> Result<Option<SocketAddr>, String> {
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("{key}: invalid address {v:?} (expected IP:PORT or \"off\")"))
}

fn dur(key: &str, v: &Option<String>) -> Result<Option<Duration>, String> {
    v.as_deref()
        .map(|s| parse_duration(s).map_err(|e| format!("{key}: {e}")))
        .transpose()
}

/// Parses configuration text (what [`load`] does after reading the file).
pub fn parse(text: &str) -> Result<Config, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
    let mut c = command_default();
    if let Some(d) = file.data_dir {
        c.data_dir = d;
    }
    if let Some(d) = dur("retry_after", &file.retry_after)? {
        c.retry_after = d;
    }
    let r = &file.receivers;
    if let Some(v) = &r.grpc_listen {
        c.grpc_listen = listen("receivers.grpc_listen", v)?;
    }
    if let Some(v) = &r.http_listen {
        c.http_listen = listen("receivers.http_listen", v)?;
    }
    if let Some(v) = r.max_request_bytes {
        c.max_request_bytes = v;
    }
    if let Some(v) = r.max_concurrent_requests {
        c.max_concurrent_requests = v;
    }
    if let Some(d) = dur("receivers.request_timeout", &r.request_timeout)? {
        c.request_timeout = d;
    }
    if let Some(v) = &file.web.listen {
        c.web_listen = listen("web.listen", v)?;
    }
    if !file.exporters.is_empty() {
        c.exporters.clear();
        for (i, t) in file.exporters.iter().enumerate() {
            let spec = exporter(i, t, &mut c)?;
            if c.exporters.iter().any(|e| e.name == spec.name) {
                return Err(format!(
                    "exporters[{i}]: another exporter is already named {:?}; set `name` to tell them apart",
                    spec.name
                ));
            }
            c.exporters.push(spec);
        }
    }
    Ok(c)
}

fn exporter(i: usize, t: &toml::Table, c: &mut Config) -> Result<ExporterSpec, String> {
    let ty = match t.get("type") {
        None => {
            return Err(format!(
                "exporters[{i}]: missing key `type` (one of: {})",
                EXPORTER_TYPES.join(", ")
            ))
        }
        Some(toml::Value::String(s)) => s.clone(),
        Some(v) => return Err(format!("exporters[{i}].type: expected a string, found {v}")),
    };
    if !EXPORTER_TYPES.contains(&ty.as_str()) {
        return Err(format!(
            "exporters[{i}].type: unknown exporter type {ty:?} (expected one of: {})",
            EXPORTER_TYPES.join(", ")
        ));
    }
    let at = format!("exporters[{i}] (type = {ty:?})");
    // Split the table: the keys every exporter has, and the type's own.
    let common_keys = ["type", "name", "on_full", "spool_max_bytes"];
    let mut common = toml::Table::new();
    let mut own = toml::Table::new();
    for (k, v) in t {
        if common_keys.contains(&k.as_str()) {
            common.insert(k.clone(), v.clone());
        } else {
            own.insert(k.clone(), v.clone());
        }
    }
    let err = |e: toml::de::Error| format!("{at}: {}", e.message().trim_end());
    let common: Common = common.try_into().map_err(err)?;
    let on_full = match common.on_full.as_deref() {
        None | Some("refuse") => OnFull::Refuse,
        Some("drop") => OnFull::Drop,
        Some(o) => return Err(format!("{at}.on_full: {o:?} is not \"refuse\" or \"drop\"")),
    };
    let mut queue = QueueConfig::default();
    if let Some(b) = common.spool_max_bytes {
        queue.spool_max_bytes = b;
    }
    let kind = match ty.as_str() {
        "store" => {
            let k: StoreKeys = own.try_into().map_err(err)?;
            let mut config = store::StoreConfig::default();
            if let Some(d) = dur(&format!("{at}.retention"), &k.retention)? {
                config.retention = d;
            }
            if let Some(b) = k.max_bytes {
                config.max_bytes = b;
            }
            ExporterKind::Store {
                dir: k.dir,
                config,
                queue,
            }
        }
        "elasticsearch" => {
            let k: EsKeys = own.try_into().map_err(err)?;
            let mut config = exporter_elasticsearch::Config::default();
            config.bulk.url = k.url;
            config.bulk.auth = match (k.username, k.password, k.api_key) {
                (None, None, None) => exporter_elasticsearch::Auth::None,
                (Some(username), Some(password), None) => {
                    exporter_elasticsearch::Auth::Basic { username, password }
                }
                (None, None, Some(key)) => exporter_elasticsearch::Auth::ApiKey(key),
                _ => {
                    return Err(format!(
                        "{at}: give either `username` and `password`, or `api_key`"
                    ))
                }
            };
            config.schema = match k.schema.as_deref() {
                None | Some("otel") => exporter_elasticsearch::Schema::Otel,
                Some("ecs") => exporter_elasticsearch::Schema::Ecs,
                Some(o) => return Err(format!("{at}.schema: {o:?} is not \"otel\" or \"ecs\"")),
            };
            if let Some(g) = k.gzip {
                config.bulk.gzip = g;
            }
            if let Some(d) = dur(&format!("{at}.timeout"), &k.timeout)? {
                config.bulk.timeout = d;
            }
            if let Some(b) = common.spool_max_bytes {
                config.spool_max_bytes = b;
            }
            ExporterKind::Elasticsearch(Box::new(config))
        }
        "otlp" => {
            let k: OtlpKeys = own.try_into().map_err(err)?;
            let protocol = match k.protocol.as_deref() {
                None | Some("grpc") => Protocol::Grpc,
                Some("http") => Protocol::Http,
                Some(o) => return Err(format!("{at}.protocol: {o:?} is not \"grpc\" or \"http\"")),
            };
            if !k.endpoint.starts_with("http://") {
                return Err(format!(
                    "{at}.endpoint: {:?} must start with http:// (no TLS in this build)",
                    k.endpoint
                ));
            }
            let mut config = OtlpConfig {
                endpoint: k.endpoint,
                protocol,
                headers: k.headers.into_iter().collect(),
                ..OtlpConfig::default()
            };
            if let Some(g) = k.gzip {
                config.gzip = g;
            }
            if let Some(d) = dur(&format!("{at}.timeout"), &k.timeout)? {
                config.timeout = d;
            }
            ExporterKind::Otlp { config, queue }
        }
        _ => {
            let k: PprofKeys = own.try_into().map_err(err)?;
            if let Some(d) = k.dir {
                c.output_dir = d;
            }
            if let Some(d) = dur(&format!("{at}.flush_interval"), &k.flush_interval)? {
                c.flush_interval = d;
            }
            if let Some(n) = k.max_buffered_samples {
                c.max_buffered_samples = n;
            }
            ExporterKind::Pprof
        }
    };
    Ok(ExporterSpec {
        name: common.name.unwrap_or(ty),
        on_full,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert!(parse_duration("7").unwrap_err().contains("unit"));
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn empty_file_is_the_command_default() {
        let c = parse("").unwrap();
        assert_eq!(c.exporters.len(), 1);
        assert!(matches!(c.exporters[0].kind, ExporterKind::Store { .. }));
        assert_eq!(c.web_listen, DEFAULT_WEB_LISTEN.parse().ok());
    }
}
