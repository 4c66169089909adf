//! `ebpf-profiler collector`: receives OTLP profiles from agents and fans
//! them out to exporters (embedded store + web page by default,
//! Elasticsearch, another collector, pprof files). Everything is in the
//! `collector` crate; this file turns flags and a config file into its
//! `Config` and reports what happened.

use collector::config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CollectorArgs {
    /// Configuration file (TOML) declaring receivers and exporters; samples in config/ (embedded.toml,
    /// elasticsearch.toml, forward.toml). Without it: the embedded store in --data-dir and the web page.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// OTLP gRPC receiver address [default: 127.0.0.1:4317]; "off" disables it. Overrides the file.
    #[arg(long, value_name = "ADDR")]
    grpc_listen: Option<String>,
    /// OTLP/HTTP receiver address (POST /v1development/profiles) [default: 127.0.0.1:4318]; "off" disables it.
    #[arg(long, value_name = "ADDR")]
    otlp_http_listen: Option<String>,
    /// Web page (flame graphs over the embedded store) address [default: 127.0.0.1:7070]; loopback by
    /// default because the page has no authentication; "off" disables it.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// Directory for the exporters' spools and the embedded store [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn settings(args: &CollectorArgs) -> Result<collector::Config, String> {
    let mut c = match &args.config {
        Some(path) => config::load(path)?,
        None => config::command_default(),
    };
    if let Some(v) = &args.grpc_listen {
        c.grpc_listen = config::listen("--grpc-listen", v)?;
    }
    if let Some(v) = &args.otlp_http_listen {
        c.http_listen = config::listen("--otlp-http-listen", v)?;
    }
    if let Some(v) = &args.http_listen {
        c.web_listen = config::listen("--http-listen", v)?;
    }
    if let Some(d) = &args.data_dir {
        c.data_dir = d.clone();
    }
    if c.grpc_listen.is_none() && c.http_listen.is_none() {
        return Err("both receivers are off: nothing would be received".into());
    }
    Ok(c)
}

pub fn run(args: CollectorArgs) -> ExitCode {
    let config = match settings(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ebpf-profiler collector: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ebpf-profiler collector: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ebpf-profiler collector: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves until SIGINT or SIGTERM, printing where it listens (one line per
/// endpoint, which scripts and tests wait for) and, at exit, each exporter's
/// counters.
async fn serve(config: collector::Config) -> Result<(), collector::Error> {
    let names: Vec<String> = config
        .exporters
        .iter()
        .map(|e| format!("{} ({})", e.name, e.kind.type_name()))
        .collect();
    let web_wanted = config.web_listen.is_some();
    let c = collector::Collector::start(config).await?;
    if let Some(a) = c.grpc_addr {
        eprintln!("collector: OTLP gRPC on {a}");
    }
    if let Some(a) = c.http_addr {
        eprintln!("collector: OTLP/HTTP on http://{a}/v1development/profiles");
    }
    if let Some(a) = c.web_addr {
        eprintln!("collector: web page on http://{a}/");
    }
    eprintln!("collector: exporters {}", names.join(", "));
    if c.web_addr.is_none() && c.store().is_none() && web_wanted {
        eprintln!("collector: no store exporter, so no web page (it shows the store)");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    eprintln!("collector: stopping (delivering what the exporters can in their shutdown time)");
    let stopped = c.shutdown_with_stats().await?;
    let t = stopped.stats;
    eprintln!(
        "collector: {} requests, {} refused as invalid, {} refused while an exporter was full",
        t.requests, t.requests_rejected, t.requests_refused_busy
    );
    for s in stopped.exporters {
        eprintln!(
            "collector: exporter {} ({}): accepted {}, delivered {}, refused (full) {}, dropped (full) {}, failed {}, profiles refused downstream {}, left in spool {}",
            s.name, s.kind, s.accepted, s.delivered, s.refused_full, s.dropped_full, s.failed, s.rejected_profiles, s.spool_entries
        );
    }
    Ok(())
}
