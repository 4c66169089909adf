//! `ebpf-profiler agent`: runs the continuous agent of the `agent-export`
//! crate with the settings resolved from flags, environment and file.

use agent_export::config::{AgentArgs, Settings};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub fn run(args: AgentArgs) -> ExitCode {
    let settings = match Settings::load(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ebpf-profiler agent: {e}");
            return ExitCode::from(2);
        }
    };
    match agent_export::run(settings, Arc::new(AtomicBool::new(false))) {
        Ok(summary) => {
            eprintln!("{}", summary.line());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ebpf-profiler agent: {e}");
            ExitCode::FAILURE
        }
    }
}
