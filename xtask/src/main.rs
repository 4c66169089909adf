use clap::{Parser, Subcommand};
use std::process::ExitCode;
use xtask::codegen::{self, ebpf};

mod kernels;

/// Project automation for ebpf-profiler.
#[derive(Parser)]
#[command(name = "cargo xtask", version)]
struct Cli {
    /// Repository root to work on (default: the checkout xtask was built from).
    #[arg(long, global = true, hide = true)]
    root: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the C headers, Rust modules and the eBPF object from spec/.
    Codegen {
        /// Regenerate in memory, list every stale file and exit 1 if any; write nothing.
        #[arg(long)]
        check: bool,
        /// Skip the eBPF object (the only step that needs clang).
        #[arg(long)]
        no_ebpf: bool,
    },
    /// Prove the pure crates have no C toolchain in their dependency closure and build with CC=/bin/false.
    Purity {
        /// Only inspect the dependency graph; do not build.
        #[arg(long)]
        no_build: bool,
    },
    /// Boot Debian kernels under qemu and prove the profiler loads and unwinds in each.
    #[command(long_about = kernels::HELP)]
    Kernels(kernels::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = cli.root.clone().unwrap_or_else(codegen::repo_root);
    match cli.command {
        Command::Codegen { check, no_ebpf } => match run_codegen(&root, check, !no_ebpf) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Purity { no_build } => match xtask::purity::run(&root, !no_build) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("purity check failed:\n{e}");
                ExitCode::FAILURE
            }
        },
        Command::Kernels(args) => match kernels::run(&root, &args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Returns Ok(false) when `check` found stale files.
fn run_codegen(root: &std::path::Path, check: bool, with_ebpf: bool) -> Result<bool, String> {
    let spec = codegen::spec::load(&root.join("spec")).map_err(|e| e.to_string())?;
    let files = codegen::render(&spec);
    let scratch =
        std::env::temp_dir().join(format!("ebpf-profiler-codegen-{}", std::process::id()));
    if check {
        let mut stale = codegen::stale_files(root, &files);
        if with_ebpf {
            // The object is built from the headers on disk; they were just
            // checked, and a stale header already fails the check.
            for src in ebpf::sources(root).map_err(|e| e.to_string())? {
                let obj = ebpf::object_path(&src);
                let built = ebpf::build(root, &src, &scratch)?;
                let rel = obj.strip_prefix(root).unwrap_or(&obj).to_path_buf();
                match std::fs::read(&obj) {
                    Ok(b) if b == built => {}
                    Ok(_) => stale.push((rel, codegen::Staleness::Differs)),
                    Err(_) => stale.push((rel, codegen::Staleness::Missing)),
                }
            }
        }
        let _ = std::fs::remove_dir_all(&scratch);
        for (path, why) in &stale {
            println!("stale: {} ({why})", path.display());
        }
        if stale.is_empty() {
            println!(
                "generated files are up to date ({} files{})",
                files.len(),
                if with_ebpf {
                    " and the eBPF object"
                } else {
                    ""
                }
            );
        } else {
            println!("{} stale file(s): run `cargo xtask codegen`", stale.len());
        }
        return Ok(stale.is_empty());
    }
    let written = codegen::write_all(root, &files).map_err(|e| e.to_string())?;
    for p in &written {
        println!("wrote {}", p.display());
    }
    if with_ebpf {
        for src in ebpf::sources(root).map_err(|e| e.to_string())? {
            let obj = ebpf::object_path(&src);
            let built = ebpf::build(root, &src, &scratch)?;
            if std::fs::read(&obj).ok().as_deref() != Some(&built[..]) {
                codegen::write_atomic(&obj, &built).map_err(|e| e.to_string())?;
                println!("wrote {}", obj.strip_prefix(root).unwrap_or(&obj).display());
            }
        }
        let _ = std::fs::remove_dir_all(&scratch);
    }
    Ok(true)
}
