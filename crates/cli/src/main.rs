//! `ebpf-profiler`: the command-line front end.

mod duration;

use agent::loader::LoadOptions;
use agent::record::{self, RecordOptions};
use agent::session::{SessionOptions, Target};
use clap::{Parser, Subcommand};
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
    /// Print the FileID of each file (the executable identity backends key on).
    Fileid {
        /// Files to identify.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the unwind rows (stack deltas) derived from a file's .eh_frame/.debug_frame.
    Stackdeltas {
        /// An x86-64 ELF executable or shared library.
        path: PathBuf,
    },
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
    /// Output file (folded stacks: `comm;root;...;leaf count`).
    #[arg(short, long, default_value = "profile.folded")]
    output: PathBuf,
    /// Keep native frames as raw `module+0xaddress` instead of function names.
    #[arg(long)]
    no_symbolize: bool,
    /// Also record idle CPUs.
    #[arg(long)]
    include_idle: bool,
    /// Capacity of the kernel's unwind row array (8 bytes per row), for hosts with huge binaries.
    #[arg(long, default_value_t = LoadOptions::default().max_unwind_rows)]
    max_unwind_rows: u32,
    /// Do not show the progress line.
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
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
        Command::Stackdeltas { path } => stackdeltas(&path),
        Command::Record(args) => run_record(args),
    }
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

fn stackdeltas(path: &PathBuf) -> ExitCode {
    let table = match unwind::UnwindTable::from_path(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ebpf-profiler: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let stdout = std::io::stdout();
    if let Err(e) = unwind::write_rows(&table, stdout.lock()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("ebpf-profiler: writing rows: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn run_record(args: RecordArgs) -> ExitCode {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("ebpf-profiler: cannot handle signal {sig}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let target = if args.pids.is_empty() {
        Target::System
    } else {
        Target::Pids(args.pids.clone())
    };
    let opts = RecordOptions {
        session: SessionOptions {
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
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} recording {elapsed_precise} {msg}")
                .expect("valid template"),
        );
        b.enable_steady_tick(Duration::from_millis(200));
        b
    };
    let result = record::record(&opts, &stop, |p| {
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
    let text = record::folded(&rec.stacks);
    if let Err(e) = write_atomic(&args.output, text.as_bytes()) {
        eprintln!("ebpf-profiler: writing {}: {e}", args.output.display());
        return ExitCode::FAILURE;
    }
    eprintln!("{}", rec.summary.line());
    eprintln!(
        "wrote {} ({} distinct stacks)",
        args.output.display(),
        rec.stacks.len()
    );
    ExitCode::SUCCESS
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
