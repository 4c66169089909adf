//! `ebpf-profiler`: the command-line front end.

mod agent_cmd;
mod check_cmd;
mod collector_cmd;
mod duration;

use agent::loader::LoadOptions;
use agent::record::{self, RecordOptions};
use agent::session::{Filter, SessionOptions, Target};
use clap::{Parser, Subcommand};
use profile::{format_for_path, Format};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Whole-system CPU profiler for Linux: samples every CPU with eBPF and
/// unwinds user stacks without frame pointers, from .eh_frame-derived tables.
#[derive(Parser)]
#[command(name = "ebpf-profiler", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Profile the machine (or some processes) for a while and write the result.
    Record(RecordArgs),
    /// Check that this machine can run the profiler: kernel, BTF, privileges, mounts, kernel features, every program loaded (verifier cost, load time); exit 0 when `record` will work, 1 with the reason when not.
    Check(check_cmd::CheckArgs),
    /// Profile the whole machine continuously and export OTLP profiles to a collector (gRPC or HTTP).
    Agent(agent_export::config::AgentArgs),
    /// Receive OTLP profiles from agents; keep them in the embedded store (web page) or export them.
    Collector(collector_cmd::CollectorArgs),
    /// Print the FileID of each file (the executable identity backends key on).
    Fileid {
        /// Files to identify.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the unwind rows (stack deltas) derived from a file's .eh_frame, .gopclntab (Go) and .debug_frame, in that order of precedence.
    Stackdeltas {
        /// An x86-64 ELF executable or shared library.
        path: PathBuf,
        /// End each row with the section it came from (.eh_frame, .gopclntab, .debug_frame; `-` for gaps and made-up rows), and print rows per section to stderr.
        #[arg(long)]
        sources: bool,
    },
    /// Print the function, file and line (inlined calls too) at ELF virtual addresses of a file.
    Symbolize {
        /// An ELF executable or shared library (its DWARF, or debug files under /usr/lib/debug, are used when present).
        path: PathBuf,
        /// Addresses, hex (0x401136) or decimal.
        #[arg(required = true, value_parser = parse_address)]
        addresses: Vec<u64>,
    },
}

fn parse_address(s: &str) -> Result<u64, String> {
    let t = s.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    }
    .map_err(|_| format!("invalid address {s:?}: use hex (0x401136) or decimal"))
}

#[derive(clap::Args)]
struct RecordArgs {
    /// How long to record: 10, 10s, 500ms, 2m, 1h. Without it, records until Ctrl-C.
    #[arg(short, long, value_parser = duration::parse)]
    duration: Option<Duration>,
    /// Samples per second on each CPU.
    #[arg(short = 'F', long, default_value_t = 99, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    frequency: u64,
    /// Only profile this process (repeatable); children it forks are included. Default: the whole system.
    #[arg(short, long = "pid")]
    pids: Vec<u32>,
    /// Only processes whose name (/proc/PID/comm) matches this regular expression.
    #[arg(long, value_parser = parse_regex)]
    comm: Option<regex::Regex>,
    /// Only processes running this executable (the path /proc/PID/exe points to).
    #[arg(long)]
    exe: Option<PathBuf>,
    /// Only processes in this cgroup or below it (a container, a systemd unit), e.g. /system.slice/nginx.service.
    #[arg(long)]
    cgroup: Option<String>,
    /// Output file; its extension picks the format: .svg (flame graph), .pb.gz (pprof), .folded, .json.
    #[arg(short, long, default_value = "profile.svg")]
    output: PathBuf,
    /// Output format, when the extension does not say: svg, pprof, folded, json.
    #[arg(long)]
    format: Option<Format>,
    /// Functions listed in the summary table at the end (0: none).
    #[arg(long, default_value_t = 15)]
    top: usize,
    /// Keep native frames as raw `module+0xaddress` instead of function names.
    #[arg(long)]
    no_symbolize: bool,
    /// Also record idle CPUs.
    #[arg(long)]
    include_idle: bool,
    /// Capacity of the kernel's unwind row array (8 bytes per row), for hosts with huge binaries.
    #[arg(long, default_value_t = LoadOptions::default().max_unwind_rows)]
    max_unwind_rows: u32,
    /// Directory where built unwind tables are kept for the next run (up to 256 MiB, least recently used first out), or `off`.
    #[arg(long, default_value = agent::table_cache::DEFAULT_DIR)]
    table_cache: String,
    /// Do not show the progress line.
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    // Every HTTPS client in this binary (agent export, Elasticsearch, OTLP
    // forwarding) uses rustls through reqwest's `rustls-no-provider`: one
    // process-wide provider, ring (aws-lc would need cmake).
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EBPF_PROFILER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Fileid { paths } => fileid(&paths),
        Command::Stackdeltas { path, sources } => stackdeltas(&path, sources),
        Command::Record(args) => run_record(args),
        Command::Check(args) => check_cmd::run(args),
        Command::Agent(args) => agent_cmd::run(args),
        Command::Collector(args) => collector_cmd::run(args),
        Command::Symbolize { path, addresses } => symbolize(&path, &addresses),
    }
}

fn parse_regex(s: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(s).map_err(|e| format!("invalid regular expression: {e}"))
}

fn symbolize(path: &std::path::Path, addrs: &[u64]) -> ExitCode {
    if let Err(e) = std::fs::File::open(path) {
        eprintln!("ebpf-profiler: {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    let symbolizer = agent::symbolize::Symbolizer::new(true);
    let results = symbolizer.native(path, addrs, true);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (addr, frames) in addrs.iter().zip(results) {
        if frames.is_empty() {
            println!("{addr:#x} {name}+{addr:#x}");
            continue;
        }
        // Outermost (the real frame) first, inlined calls indented below it.
        for (depth, f) in frames.iter().rev().enumerate() {
            let place = match (&f.file, f.line) {
                (Some(file), Some(line)) => format!(" at {file}:{line}"),
                (Some(file), None) => format!(" at {file}"),
                _ => String::new(),
            };
            let lead = if depth == 0 {
                format!("{addr:#x} ")
            } else {
                format!("{:width$}(inlined) ", "", width = 2 + 2 * depth)
            };
            println!("{lead}{}{place}", f.function);
        }
    }
    ExitCode::SUCCESS
}

fn fileid(paths: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for p in paths {
        match libpf::FileId::from_file(p) {
            Ok(id) => {
                let _ = writeln!(out, "{}  {}", id.to_hex(), p.display());
            }
            Err(e) => {
                failed = true;
                eprintln!("ebpf-profiler: {}: {e}", p.display());
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn stackdeltas(path: &PathBuf, sources: bool) -> ExitCode {
    let table = match unwind::UnwindTable::from_path(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ebpf-profiler: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let stdout = std::io::stdout();
    let written = if sources {
        let by_source: Vec<String> = table
            .stats
            .rows_by_source
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        let go = table
            .stats
            .go
            .as_ref()
            .map(|g| format!(" ({}, {} functions)", g.version, g.functions))
            .unwrap_or_default();
        eprintln!(
            "{}: {} rows; raw rows by section: {}{go}",
            path.display(),
            table.rows.len(),
            if by_source.is_empty() {
                "none".to_string()
            } else {
                by_source.join(", ")
            }
        );
        unwind::write_rows_with_sources(&table, stdout.lock())
    } else {
        unwind::write_rows(&table, stdout.lock())
    };
    if let Err(e) = written {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("ebpf-profiler: writing rows: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn run_record(args: RecordArgs) -> ExitCode {
    let format = match args.format.or_else(|| format_for_path(&args.output)) {
        Some(f) => f,
        None => {
            eprintln!(
                "ebpf-profiler: cannot tell the format of {} from its extension: use .svg, .pb.gz, .folded or .json, or --format",
                args.output.display()
            );
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("ebpf-profiler: cannot handle signal {sig}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let filter = Filter {
        pids: args.pids.clone(),
        comm: args.comm.clone(),
        exe: args.exe.clone(),
        cgroup: args.cgroup.clone(),
    };
    let unfiltered = filter.pids.is_empty()
        && filter.comm.is_none()
        && filter.exe.is_none()
        && filter.cgroup.is_none();
    let target = if unfiltered {
        Target::System
    } else {
        Target::Filtered(filter)
    };
    let opts = RecordOptions {
        session: SessionOptions {
            table_cache: agent_export::config::table_cache_dir(Some(&args.table_cache)),
            target,
            frequency: args.frequency,
            load: LoadOptions {
                include_idle: args.include_idle,
                max_unwind_rows: args.max_unwind_rows,
                ..LoadOptions::default()
            },
        },
        duration: args.duration,
        debug_info: true,
        symbolize: !args.no_symbolize,
    };
    let bar = progress_bar(args.quiet, args.duration);
    let result = record::record(&opts, &stop, |p| {
        bar.set_position(p.elapsed.as_millis() as u64);
        bar.set_message(format!(
            "{} samples, {} dropped (Ctrl-C to stop)",
            p.samples, p.dropped
        ));
    });
    bar.finish_and_clear();
    let rec = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ebpf-profiler: {e}");
            return ExitCode::FAILURE;
        }
    };
    if stop.load(Ordering::Relaxed) {
        eprintln!("interrupted: writing what was recorded");
    }
    eprintln!("{}", rec.summary.line());
    if args.top > 0 && !rec.profile.samples.is_empty() {
        let rows = profile::top_functions(&rec.profile, args.top);
        eprint!("{}", profile::format_top(&rows));
    }
    if rec.profile.samples.is_empty() && format == Format::Flamegraph {
        eprintln!(
            "ebpf-profiler: no samples were recorded: nothing to draw in {}",
            args.output.display()
        );
        return ExitCode::FAILURE;
    }
    let title = profile::flamegraph::default_title(&rec.profile);
    let bytes = match format.render(&rec.profile, &title) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ebpf-profiler: rendering {format}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = write_atomic(&args.output, &bytes) {
        eprintln!("ebpf-profiler: writing {}: {e}", args.output.display());
        return ExitCode::FAILURE;
    }
    eprintln!(
        "wrote {} ({format}, {} distinct stacks)",
        args.output.display(),
        rec.profile.samples.len()
    );
    ExitCode::SUCCESS
}

/// A bar with elapsed/total time when the duration is known, else a spinner.
fn progress_bar(quiet: bool, duration: Option<Duration>) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    match duration {
        Some(d) => {
            let b = indicatif::ProgressBar::new(d.as_millis() as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "recording [{bar:30}] {elapsed_precise} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b
        }
        None => {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} recording {elapsed_precise} {msg}",
                )
                .expect("valid template"),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        }
    }
}

/// Writes through a temporary file so a full disk never leaves half a profile.
fn write_atomic(path: &PathBuf, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let res = std::fs::write(&tmp, data).and_then(|_| std::fs::rename(&tmp, path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}
