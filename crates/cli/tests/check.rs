//! `ebpf-profiler check`: the preflight's verdict and the verifier budget on
//! the host kernel. Needs root (CI runs as root) and fails loudly without it.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Instructions the verifier may process per program: 5 % of its 1M limit,
/// so kernel-to-kernel swings in state pruning cannot reach the limit.
const VERIFIER_BUDGET: u64 = 50_000;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ebpf-profiler"))
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test loads eBPF programs and must run as root"
    );
}

#[test]
fn every_program_loads_within_the_verifier_budget() {
    require_root();
    let out = bin().args(["check", "--json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("check --json printed no JSON ({e}): {stdout}"));
    assert!(out.status.success(), "check failed: {report:#}");
    assert_eq!(report["ok"], true);
    let programs = report["programs"].as_array().unwrap();
    let names: Vec<&str> = programs
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    // The sampler and unwinder are loaded as their bpf_find_vma twins
    // where the kernel has the helper (this machine's does).
    for expected in [
        "sample_vma",
        "unwind_native_vma",
        "on_fork",
        "on_exec",
        "on_exit",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    for p in programs {
        // This machine's kernel (>= 5.16) reports the verifier's cost.
        let insns = p["verified_insns"]
            .as_u64()
            .unwrap_or_else(|| panic!("no verified_insns for {p}"));
        assert!(
            insns > 0 && insns <= VERIFIER_BUDGET,
            "{}: {insns} verified instructions (budget {VERIFIER_BUDGET})",
            p["name"]
        );
    }
    assert!(report["perf_event_cpus"].as_u64().unwrap() >= 1);
    for f in report["features"].as_array().unwrap() {
        if f["required"] == true {
            assert_eq!(f["available"], true, "{f}");
        }
    }
}

#[test]
fn the_table_ends_with_the_verdict() {
    require_root();
    let out = bin().arg("check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("verdict") && last.contains("ok"),
        "{stdout}"
    );
    assert!(stdout.contains("verified instructions"), "{stdout}");
}

#[test]
fn without_privileges_the_verdict_is_fail_with_the_reason() {
    require_root();
    // nobody (65534), with no capabilities left after setuid.
    let out = bin()
        .args(["check", "--json"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("privileges") && problems.contains("CAP_BPF"),
        "{problems}"
    );
}
