//! `ebpf-profiler check`: the preflight of `agent::preflight`, printed for a
//! person or as JSON for scripts (the kernel matrix reads it).

use agent::mounts::MountState;
use agent::preflight::{self, Report};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: CheckArgs) -> ExitCode {
    let report = preflight::run();
    if args.json {
        println!("{}", to_json(&report));
    } else {
        print!("{}", to_text(&report));
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `1234567` → `1,234,567`.
fn thousands(n: u32) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mount_text(m: &Result<MountState, String>) -> String {
    match m {
        Ok(MountState::Present(at)) => format!("mounted at {at}"),
        Ok(MountState::MountedNow) => "was not mounted: mounted it".into(),
        Err(e) => format!("MISSING: {e}"),
    }
}

fn to_text(r: &Report) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<14}{v}\n"));
    line("kernel", r.kernel.clone());
    line(
        "BTF",
        match &r.btf {
            Ok(()) => "/sys/kernel/btf/vmlinux".into(),
            Err(e) => format!("MISSING: {e}"),
        },
    );
    let p = &r.privileges;
    line(
        "privileges",
        if p.euid == 0 {
            "root".into()
        } else {
            format!(
                "euid {}, CAP_BPF {}, CAP_PERFMON {}, CAP_SYS_ADMIN {}",
                p.euid,
                yes_no(p.cap_bpf),
                yes_no(p.cap_perfmon),
                yes_no(p.cap_sys_admin)
            )
        },
    );
    for (fstype, m) in &r.mounts {
        line(fstype, mount_text(m));
    }
    for f in &r.features {
        let state = match (&f.error, f.available) {
            (Some(e), _) => format!("unknown ({e})"),
            (None, true) => "yes".into(),
            (None, false) if f.info.required => "MISSING".into(),
            (None, false) => "no (optional)".into(),
        };
        line(
            "feature",
            format!(
                "{:<26} {:<16} Linux {:<5} {}",
                f.info.name, state, f.info.since, f.info.needed_for
            ),
        );
    }
    for prog in &r.programs {
        let insns = match prog.verified_insns {
            Some(n) => format!("{} verified instructions", thousands(n)),
            None => "verified instructions not reported (kernel < 5.16)".into(),
        };
        line(
            "program",
            format!(
                "{:<14} {:<36} loaded in {:.1} ms",
                prog.name,
                insns,
                prog.load_time.as_secs_f64() * 1e3
            ),
        );
    }
    if let Some(t) = r.load_time {
        line(
            "load time",
            format!("{:.0} ms in all", t.as_secs_f64() * 1e3),
        );
    }
    if let Some(cpus) = r.perf_event_cpus {
        line("perf events", format!("opened on {cpus} CPUs"));
    }
    if r.ok() {
        line("verdict", "ok: `ebpf-profiler record` will work".into());
    } else {
        for problem in &r.problems {
            line("problem", problem.clone());
        }
        line(
            "verdict",
            "FAIL: `ebpf-profiler record` will not work".into(),
        );
    }
    s
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn to_json(r: &Report) -> serde_json::Value {
    use serde_json::json;
    json!({
        "kernel": r.kernel,
        "ok": r.ok(),
        "problems": r.problems,
        "btf": r.btf.is_ok(),
        "privileges": {
            "euid": r.privileges.euid,
            "cap_bpf": r.privileges.cap_bpf,
            "cap_perfmon": r.privileges.cap_perfmon,
            "cap_sys_admin": r.privileges.cap_sys_admin,
        },
        "mounts": r.mounts.iter().map(|(fstype, m)| json!({
            "fstype": fstype,
            "ok": m.is_ok(),
            "mounted_now": matches!(m, Ok(MountState::MountedNow)),
            "detail": mount_text(m),
        })).collect::<Vec<_>>(),
        "features": r.features.iter().map(|f| json!({
            "name": f.info.name,
            "available": f.available,
            "required": f.info.required,
            "since": f.info.since,
            "needed_for": f.info.needed_for,
            "error": f.error,
        })).collect::<Vec<_>>(),
        "programs": r.programs.iter().map(|p| json!({
            "name": p.name,
            "verified_insns": p.verified_insns,
            "load_ms": p.load_time.as_secs_f64() * 1e3,
        })).collect::<Vec<_>>(),
        "load_ms": r.load_time.map(|t| t.as_secs_f64() * 1e3),
        "perf_event_cpus": r.perf_event_cpus,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(4031), "4,031");
        assert_eq!(thousands(1_000_001), "1,000,001");
    }
}
