//! `cargo run -p unwind --example stackdeltas -- PATH [--stats]`: prints the
//! rows of PATH one per line, as the future `ebpf-profiler stackdeltas`
//! subcommand will; `--stats` prints the statistics to stderr.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stats = args.iter().any(|a| a == "--stats");
    let Some(path) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: stackdeltas PATH [--stats]");
        return ExitCode::from(2);
    };
    let table = match unwind::UnwindTable::from_path(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if stats {
        eprintln!("{:#?}", table.stats);
    }
    match unwind::write_rows(&table, std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`| head`) is not an error worth reporting.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
