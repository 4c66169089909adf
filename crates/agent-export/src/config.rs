//! Configuration of `ebpf-profiler agent`, from four layers:
//! command-line flags > `EBPF_PROFILER_*` environment variables > a TOML
//! file (`--config FILE`) > built-in defaults.
//!
//! Flags and environment variables arrive together through clap (`env`),
//! each as an `Option` with no clap default, so "not given" stays visible and
//! the file can fill it in. The file's keys are the flag names
//! (`otlp-endpoint = "https://collector:4317"`); unknown keys are an error so
//! a typo does not silently fall back to a default.

use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Wire protocol of the OTLP export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// OTLP/gRPC: `ProfilesService/Export`, gzip.
    Grpc,
    /// OTLP/HTTP: `POST {endpoint}/v1development/profiles`, protobuf, gzip.
    Http,
}

/// Default gRPC endpoint (OTLP's usual gRPC port).
pub const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
/// Default HTTP endpoint (OTLP's usual HTTP port), used with `--otlp-protocol http`
/// when no endpoint is given.
pub const DEFAULT_HTTP_ENDPOINT: &str = "http://localhost:4318";

/// `ebpf-profiler agent` flags. Every flag can also come from the named
/// environment variable or from the `--config` file; defaults are applied
/// last (see [`Settings::resolve`]).
#[derive(Args, Clone, Debug, Default)]
pub struct AgentArgs {
    /// TOML file with any of these settings (keys are the flag names, e.g. `otlp-endpoint = "http://c:4317"`); flags and environment variables override it.
    #[arg(long, env = "EBPF_PROFILER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Collector to export to. [default: http://localhost:4317 (grpc), http://localhost:4318 (http)]
    #[arg(long, env = "EBPF_PROFILER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Export protocol: grpc, or http (POST {endpoint}/v1development/profiles). [default: grpc]
    #[arg(long, env = "EBPF_PROFILER_OTLP_PROTOCOL", value_enum)]
    pub otlp_protocol: Option<Protocol>,
    /// Extra request header/metadata `NAME=VALUE`, e.g. 'Authorization=ApiKey xyz' (repeatable). Environment: EBPF_PROFILER_HEADERS, a comma-separated list of NAME=VALUE.
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// EBPF_PROFILER_HEADERS: comma-separated, unlike the flag (whose values may contain commas).
    #[arg(long = "headers-from-env", env = "EBPF_PROFILER_HEADERS", hide = true)]
    pub headers_env: Option<String>,
    /// PEM file of the CA(s) that sign the collector's certificate (default: the system's roots), for https:// endpoints.
    #[arg(long, env = "EBPF_PROFILER_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; needs --tls-key.
    #[arg(long, env = "EBPF_PROFILER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "EBPF_PROFILER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Accept any server certificate (no chain or name check). For testing only: anyone on the path can read and alter the data. [default: false]
    #[arg(long, env = "EBPF_PROFILER_INSECURE_SKIP_VERIFY", num_args = 0..=1, default_missing_value = "true")]
    pub insecure_skip_verify: Option<bool>,
    /// Samples per second on each CPU. [default: 20]
    #[arg(short = 'F', long, env = "EBPF_PROFILER_FREQUENCY", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub frequency: Option<u64>,
    /// How often aggregated samples are exported (each interval is jittered by ±20 %): 5s, 500ms, 1m. [default: 5s]
    #[arg(long, env = "EBPF_PROFILER_INTERVAL", value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Memory budget of the export queue (serialized requests waiting to be sent): 64MiB, 512KiB, 1000000. When full, the oldest batches are dropped and counted. [default: 64MiB]
    #[arg(long, env = "EBPF_PROFILER_QUEUE_BYTES", value_parser = parse_bytes)]
    pub queue_bytes: Option<u64>,
    /// Longest one export request may take before it is retried. [default: 10s]
    #[arg(long, env = "EBPF_PROFILER_EXPORT_TIMEOUT", value_parser = parse_duration)]
    pub export_timeout: Option<Duration>,
    /// Longest wait between retries of a failed export (backoff doubles from 1s up to this, with jitter; a server's Retry-After/RetryInfo is honored up to 5m). [default: 30s]
    #[arg(long, env = "EBPF_PROFILER_MAX_BACKOFF", value_parser = parse_duration)]
    pub max_backoff: Option<Duration>,
    /// On SIGTERM/SIGINT, how long to keep trying to deliver what is queued. [default: 10s]
    #[arg(long, env = "EBPF_PROFILER_SHUTDOWN_TIMEOUT", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// Serve the agent's own metrics in Prometheus text format at http://ADDR/metrics, e.g. 127.0.0.1:9464. [default: off]
    #[arg(long, env = "EBPF_PROFILER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Also sample idle CPUs. [default: false]
    #[arg(long, env = "EBPF_PROFILER_INCLUDE_IDLE", num_args = 0..=1, default_missing_value = "true")]
    pub include_idle: Option<bool>,
    /// Resolve source files, lines and inlined calls from DWARF (else function names from symbol tables only). Costs memory and CPU on hosts running large binaries with debug info. [default: false]
    #[arg(long, env = "EBPF_PROFILER_DEBUG_INFO", num_args = 0..=1, default_missing_value = "true")]
    pub debug_info: Option<bool>,
    /// `host.name` of every resource (e.g. the Kubernetes node name, since a pod's own hostname is the pod's). [default: the kernel's hostname]
    #[arg(long, env = "EBPF_PROFILER_HOST_NAME")]
    pub host_name: Option<String>,
    /// Directory where built unwind tables are kept across restarts (up to 256 MiB, least recently used first out), or `off`. [default: /var/cache/ebpf-profiler/tables]
    #[arg(long, env = "EBPF_PROFILER_TABLE_CACHE")]
    pub table_cache: Option<String>,
    /// Test aid: write each request's serialized protobuf here after it was delivered.
    #[arg(long, hide = true)]
    pub capture_dir: Option<PathBuf>,
}

/// The `--config` file: the same settings, keys spelled like the flags.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: Option<Protocol>,
    /// `["Authorization=ApiKey xyz"]`, or a table `{ Authorization = "ApiKey xyz" }`.
    pub headers: Option<FileHeaders>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub insecure_skip_verify: Option<bool>,
    pub frequency: Option<u64>,
    pub interval: Option<String>,
    pub queue_bytes: Option<ByteSize>,
    pub export_timeout: Option<String>,
    pub max_backoff: Option<String>,
    pub shutdown_timeout: Option<String>,
    pub metrics_listen: Option<SocketAddr>,
    pub include_idle: Option<bool>,
    pub debug_info: Option<bool>,
    pub host_name: Option<String>,
    pub table_cache: Option<String>,
}

/// Headers in the file: a list of `NAME=VALUE` or a table.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum FileHeaders {
    List(Vec<String>),
    Table(std::collections::BTreeMap<String, String>),
}

/// A byte size in the file: a number or a string like "64MiB".
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ByteSize {
    Number(u64),
    Text(String),
}

/// Everything the agent runs with, every layer applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub endpoint: String,
    pub protocol: Protocol,
    /// (name, value), names as given.
    pub headers: Vec<(String, String)>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    pub frequency: u64,
    pub interval: Duration,
    pub queue_bytes: u64,
    pub export_timeout: Duration,
    pub max_backoff: Duration,
    pub shutdown_timeout: Duration,
    pub metrics_listen: Option<SocketAddr>,
    pub include_idle: bool,
    /// Symbolize with DWARF (files, lines, inlines), not only symbol tables.
    pub debug_info: bool,
    /// `None`: the kernel's hostname.
    pub host_name: Option<String>,
    /// `None`: tables are built at every start.
    pub table_cache: Option<PathBuf>,
    pub capture_dir: Option<PathBuf>,
}

impl Settings {
    /// Reads `--config` (if any) and applies the layers.
    pub fn load(args: &AgentArgs) -> Result<Settings, String> {
        let file = match &args.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        Settings::resolve(args, &file)
    }

    /// Flags/environment (`args`) over the file over the defaults.
    pub fn resolve(args: &AgentArgs, file: &FileConfig) -> Result<Settings, String> {
        let protocol = args
            .otlp_protocol
            .or(file.otlp_protocol)
            .unwrap_or(Protocol::Grpc);
        let endpoint = args
            .otlp_endpoint
            .clone()
            .or_else(|| file.otlp_endpoint.clone())
            .unwrap_or_else(|| match protocol {
                Protocol::Grpc => DEFAULT_GRPC_ENDPOINT.to_string(),
                Protocol::Http => DEFAULT_HTTP_ENDPOINT.to_string(),
            });
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(format!(
                "otlp-endpoint {endpoint:?} must start with http:// or https://"
            ));
        }
        let raw_headers: Vec<String> = if !args.headers.is_empty() {
            args.headers.clone()
        } else if let Some(env) = args.headers_env.as_deref().filter(|e| !e.trim().is_empty()) {
            env.split(',').map(str::to_string).collect()
        } else {
            match &file.headers {
                Some(FileHeaders::List(l)) => l.clone(),
                Some(FileHeaders::Table(t)) => t.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                None => Vec::new(),
            }
        };
        let headers = raw_headers
            .iter()
            .filter(|h| !h.trim().is_empty())
            .map(|h| parse_header(h))
            .collect::<Result<Vec<_>, _>>()?;
        let dur =
            |flag: Option<Duration>, text: &Option<String>, key: &str, default: Duration| match (
                flag, text,
            ) {
                (Some(d), _) => Ok(d),
                (None, Some(t)) => parse_duration(t).map_err(|e| format!("config {key}: {e}")),
                (None, None) => Ok(default),
            };
        let interval = dur(
            args.interval,
            &file.interval,
            "interval",
            Duration::from_secs(5),
        )?;
        if interval < Duration::from_millis(100) {
            return Err(format!(
                "interval {interval:?} is too short (at least 100ms)"
            ));
        }
        let frequency = args.frequency.or(file.frequency).unwrap_or(20);
        if !(1..=10_000).contains(&frequency) {
            return Err(format!("frequency {frequency} is out of range 1..=10000"));
        }
        let queue_bytes = match (args.queue_bytes, &file.queue_bytes) {
            (Some(b), _) => b,
            (None, Some(ByteSize::Number(n))) => *n,
            (None, Some(ByteSize::Text(t))) => {
                parse_bytes(t).map_err(|e| format!("config queue-bytes: {e}"))?
            }
            (None, None) => 64 << 20,
        };
        if queue_bytes == 0 {
            return Err("queue-bytes must be more than 0 (every batch would be dropped)".into());
        }
        let tls_cert = args.tls_cert.clone().or_else(|| file.tls_cert.clone());
        let tls_key = args.tls_key.clone().or_else(|| file.tls_key.clone());
        if tls_cert.is_some() != tls_key.is_some() {
            return Err("tls-cert and tls-key go together".to_string());
        }
        Ok(Settings {
            endpoint,
            protocol,
            headers,
            tls_ca: args.tls_ca.clone().or_else(|| file.tls_ca.clone()),
            tls_cert,
            tls_key,
            insecure_skip_verify: args
                .insecure_skip_verify
                .or(file.insecure_skip_verify)
                .unwrap_or(false),
            frequency,
            interval,
            queue_bytes,
            export_timeout: dur(
                args.export_timeout,
                &file.export_timeout,
                "export-timeout",
                Duration::from_secs(10),
            )?,
            max_backoff: dur(
                args.max_backoff,
                &file.max_backoff,
                "max-backoff",
                Duration::from_secs(30),
            )?,
            shutdown_timeout: dur(
                args.shutdown_timeout,
                &file.shutdown_timeout,
                "shutdown-timeout",
                Duration::from_secs(10),
            )?,
            metrics_listen: args.metrics_listen.or(file.metrics_listen),
            include_idle: args.include_idle.or(file.include_idle).unwrap_or(false),
            debug_info: args.debug_info.or(file.debug_info).unwrap_or(false),
            host_name: args
                .host_name
                .clone()
                .or_else(|| file.host_name.clone())
                .filter(|h| !h.trim().is_empty()),
            table_cache: table_cache_dir(
                args.table_cache.as_deref().or(file.table_cache.as_deref()),
            ),
            capture_dir: args.capture_dir.clone(),
        })
    }

    /// Whether the endpoint wants TLS.
    pub fn uses_tls(&self) -> bool {
        self.endpoint.starts_with("https://")
    }
}

/// `--table-cache`: a directory, `off`, or (unset) the default directory.
pub fn table_cache_dir(value: Option<&str>) -> Option<PathBuf> {
    match value.map(str::trim) {
        None => Some(PathBuf::from(agent::table_cache::DEFAULT_DIR)),
        Some(v) if v.is_empty() || v.eq_ignore_ascii_case("off") => None,
        Some(v) => Some(PathBuf::from(v)),
    }
}

/// Reads and parses a `--config` file.
pub fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))
}

/// `NAME=VALUE` (spaces around the name trimmed; the value kept as is).
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("header {s:?} is not NAME=VALUE"))?;
    let k = k.trim();
    if k.is_empty()
        || !k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "header name {k:?} must be non-empty letters, digits, '-', '_' or '.'"
        ));
    }
    if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(format!("header {k} has a control character in its value"));
    }
    Ok((k.to_string(), v.trim().to_string()))
}

/// `10`, `10s`, `500ms`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: use 500ms, 10s, 2m or 1h"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration {s:?}: use 500ms, 10s, 2m or 1h")),
    };
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("duration {s:?} is too long"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `1000000`, `512KiB`, `64MiB`, `1GiB` (also kB/MB/GB, powers of ten).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: use 1000000, 512KiB or 64MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(format!("invalid size {s:?}: use 1000000, 512KiB or 64MiB")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::sync::Mutex;

    /// The process environment is shared by the tests of this binary.
    static ENV: Mutex<()> = Mutex::new(());

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: AgentArgs,
    }

    fn parse(argv: &[&str]) -> AgentArgs {
        Cli::try_parse_from(std::iter::once("agent").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    fn with_env<T>(vars: &[(&str, &str)], f: impl FnOnce() -> T) -> T {
        let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in vars {
            // SAFETY (edition 2021: safe fn): tests touching the environment
            // hold ENV, and no other test reads these variables.
            std::env::set_var(k, v);
        }
        let r = f();
        for (k, _) in vars {
            std::env::remove_var(k);
        }
        r
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let s = with_env(&[], || {
            Settings::resolve(&parse(&[]), &FileConfig::default())
        })
        .unwrap();
        assert_eq!(s.endpoint, DEFAULT_GRPC_ENDPOINT);
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(s.frequency, 20);
        assert_eq!(s.interval, Duration::from_secs(5));
        assert_eq!(s.queue_bytes, 64 << 20);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(10));
        assert!(!s.insecure_skip_verify);
        assert!(s.headers.is_empty());
        assert_eq!(s.metrics_listen, None);
    }

    #[test]
    fn http_protocol_defaults_to_the_http_port() {
        let s =
            Settings::resolve(&AgentArgs::default(), &file("otlp-protocol = \"http\"")).unwrap();
        assert_eq!(s.protocol, Protocol::Http);
        assert_eq!(s.endpoint, DEFAULT_HTTP_ENDPOINT);
    }

    #[test]
    fn file_overrides_defaults() {
        let f = file(
            r#"
            otlp-endpoint = "https://file:4317"
            frequency = 50
            interval = "2s"
            queue-bytes = "1MiB"
            headers = { Authorization = "ApiKey f" }
            insecure-skip-verify = true
            metrics-listen = "127.0.0.1:9464"
            debug-info = true
            "#,
        );
        let s = with_env(&[], || Settings::resolve(&parse(&[]), &f)).unwrap();
        assert_eq!(s.endpoint, "https://file:4317");
        assert_eq!(s.frequency, 50);
        assert_eq!(s.interval, Duration::from_secs(2));
        assert_eq!(s.queue_bytes, 1 << 20);
        assert_eq!(s.headers, vec![("Authorization".into(), "ApiKey f".into())]);
        assert!(s.insecure_skip_verify);
        assert_eq!(s.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert!(s.debug_info);
        assert!(s.uses_tls());
    }

    #[test]
    fn environment_overrides_file_and_flags_override_environment() {
        let f = file(
            "otlp-endpoint = \"http://file:1\"\nfrequency = 50\ninterval = \"9s\"\nqueue-bytes = 7",
        );
        let vars = [
            ("EBPF_PROFILER_OTLP_ENDPOINT", "http://env:2"),
            ("EBPF_PROFILER_FREQUENCY", "60"),
            ("EBPF_PROFILER_HEADERS", "A=1,B=2"),
            ("EBPF_PROFILER_INSECURE_SKIP_VERIFY", "true"),
            ("EBPF_PROFILER_HOST_NAME", "node-env"),
        ];
        // Environment over file; the file still fills what env leaves out.
        let s = with_env(&vars, || Settings::resolve(&parse(&[]), &f)).unwrap();
        assert_eq!(s.endpoint, "http://env:2");
        assert_eq!(s.frequency, 60);
        assert_eq!(s.interval, Duration::from_secs(9));
        assert_eq!(s.queue_bytes, 7);
        assert_eq!(
            s.headers,
            vec![("A".into(), "1".into()), ("B".into(), "2".into())]
        );
        assert!(s.insecure_skip_verify);
        assert_eq!(s.host_name.as_deref(), Some("node-env"));
        // Flags over environment.
        let s = with_env(&vars, || {
            Settings::resolve(
                &parse(&[
                    "--otlp-endpoint",
                    "http://flag:3",
                    "-F",
                    "70",
                    "--header",
                    "Authorization=ApiKey a=b",
                    "--header",
                    "Accept=a, b",
                    "--insecure-skip-verify=false",
                ]),
                &f,
            )
        })
        .unwrap();
        assert_eq!(s.endpoint, "http://flag:3");
        assert_eq!(s.frequency, 70);
        assert_eq!(
            s.headers,
            vec![
                ("Authorization".into(), "ApiKey a=b".into()),
                ("Accept".into(), "a, b".into())
            ],
            "flag values keep their commas"
        );
        assert!(!s.insecure_skip_verify);
    }

    #[test]
    fn config_file_is_read_from_disk_and_typos_are_errors() {
        let dir = std::env::temp_dir().join(format!("agent-export-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("agent.toml");
        std::fs::write(&p, "otlp-protocol = \"http\"\nshutdown-timeout = \"3s\"\n").unwrap();
        let args = AgentArgs {
            config: Some(p.clone()),
            ..AgentArgs::default()
        };
        let s = Settings::load(&args).unwrap();
        assert_eq!(s.protocol, Protocol::Http);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(3));
        std::fs::write(&p, "otlp-endpiont = \"http://x\"\n").unwrap();
        let e = Settings::load(&args).unwrap_err();
        assert!(e.contains("otlp-endpiont"), "{e}");
        let e = Settings::load(&AgentArgs {
            config: Some(dir.join("missing.toml")),
            ..AgentArgs::default()
        })
        .unwrap_err();
        assert!(e.contains("missing.toml"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let d = FileConfig::default();
        let bad = |a: AgentArgs| Settings::resolve(&a, &d).unwrap_err();
        assert!(bad(AgentArgs {
            otlp_endpoint: Some("collector:4317".into()),
            ..AgentArgs::default()
        })
        .contains("http://"));
        assert!(bad(AgentArgs {
            headers: vec!["NoEquals".into()],
            ..AgentArgs::default()
        })
        .contains("NAME=VALUE"));
        assert!(bad(AgentArgs {
            tls_cert: Some("c.pem".into()),
            ..AgentArgs::default()
        })
        .contains("tls-key"));
        assert!(bad(AgentArgs {
            interval: Some(Duration::from_millis(1)),
            ..AgentArgs::default()
        })
        .contains("too short"));
        let e = Settings::resolve(&AgentArgs::default(), &file("interval = \"5 parsecs\""))
            .unwrap_err();
        assert!(e.contains("interval"), "{e}");
        assert!(Cli::try_parse_from(["agent", "--queue-bytes", "12XB"]).is_err());
        assert!(bad(AgentArgs {
            queue_bytes: Some(0),
            ..AgentArgs::default()
        })
        .contains("queue-bytes"));
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("512KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("2MB"), Ok(2_000_000));
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("99999999999999999999GiB").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("1e400").is_err());
    }

    #[test]
    fn the_table_cache_is_on_by_default_and_can_be_turned_off() {
        let default = Some(PathBuf::from(agent::table_cache::DEFAULT_DIR));
        assert_eq!(table_cache_dir(None), default);
        assert_eq!(table_cache_dir(Some("off")), None);
        assert_eq!(table_cache_dir(Some(" OFF ")), None);
        assert_eq!(table_cache_dir(Some("")), None);
        assert_eq!(
            table_cache_dir(Some("/tmp/t")),
            Some(PathBuf::from("/tmp/t"))
        );
    }
}
