//! The preflight a user runs before `record` (`ebpf-profiler check`): each
//! thing a recording needs, found or not, and a verdict.
//!
//! It does what a recording does up to the first sample (mounts, feature
//! probes, loading every program, opening the perf events) and then stops,
//! so its verdict cannot disagree with `record`'s.

use crate::features::Probed;
use crate::loader::{self, LoadOptions, ProgramStats, Sampler};
use crate::mounts::{self, MountState};
use std::time::{Duration, Instant};

/// Capability bits of `CapEff` (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective user and capabilities.
#[derive(Clone, Debug)]
pub struct Privileges {
    pub euid: u32,
    pub cap_sys_admin: bool,
    pub cap_perfmon: bool,
    pub cap_bpf: bool,
}

impl Privileges {
    pub fn current() -> Privileges {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        let caps = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| effective_caps(&s))
            .unwrap_or(0);
        let has = |bit: u32| caps & (1u64 << bit) != 0;
        Privileges {
            euid,
            cap_sys_admin: has(CAP_SYS_ADMIN),
            cap_perfmon: has(CAP_PERFMON) || has(CAP_SYS_ADMIN),
            cap_bpf: has(CAP_BPF) || has(CAP_SYS_ADMIN),
        }
    }

    /// Enough to load, attach and read `/proc/PID/map_files`.
    pub fn sufficient(&self) -> bool {
        self.euid == 0 || (self.cap_bpf && self.cap_perfmon && self.cap_sys_admin)
    }
}

/// The `CapEff:` mask of a `/proc/PID/status` text.
fn effective_caps(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

/// Everything `check` found.
#[derive(Debug)]
pub struct Report {
    pub kernel: String,
    pub btf: Result<(), String>,
    pub privileges: Privileges,
    /// (filesystem type, what was found or the error).
    pub mounts: Vec<(&'static str, Result<MountState, String>)>,
    pub features: Vec<Probed>,
    /// Per program, in load order; empty when loading failed.
    pub programs: Vec<ProgramStats>,
    /// Total wall time to load the object (all programs and maps).
    pub load_time: Option<Duration>,
    /// CPUs a perf event was opened on.
    pub perf_event_cpus: Option<usize>,
    /// Why `record` would fail; empty when it will work.
    pub problems: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Runs every check. Never panics; each failure becomes a problem line.
pub fn run() -> Report {
    let mut problems = Vec::new();
    let kernel = loader::kernel_release();
    let privileges = Privileges::current();
    if !privileges.sufficient() {
        problems.push(format!(
            "not enough privileges (euid {}): run as root, or grant CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN",
            privileges.euid
        ));
    }
    let btf = std::fs::metadata("/sys/kernel/btf/vmlinux")
        .map(|_| ())
        .map_err(|e| {
            format!("/sys/kernel/btf/vmlinux: {e} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)")
        });
    if let Err(e) = &btf {
        problems.push(e.clone());
    }
    let mounts = [mounts::TRACEFS, mounts::BPFFS]
        .into_iter()
        .map(|fs| (fs.fstype, mounts::ensure(fs).map_err(|e| e.to_string())))
        .collect::<Vec<_>>();
    for (_, m) in &mounts {
        if let Err(e) = m {
            problems.push(e.clone());
        }
    }

    let mut report = Report {
        kernel,
        btf,
        privileges,
        mounts,
        features: Vec::new(),
        programs: Vec::new(),
        load_time: None,
        perf_event_cpus: None,
        problems: Vec::new(),
    };
    if !problems.is_empty() {
        // Loading would only fail again, less clearly.
        report.features = crate::features::KernelFeatures::probe().probed;
        report.problems = problems;
        return report;
    }

    let started = Instant::now();
    match Sampler::load(&LoadOptions::default()) {
        Ok((mut sampler, _maps, _outputs)) => {
            report.load_time = Some(started.elapsed());
            report.programs = sampler.program_stats().to_vec();
            report.features = sampler.features().probed.clone();
            // A frequency of 1 Hz: the events are closed again at once.
            match sampler.start_sampling(1) {
                Ok(cpus) => report.perf_event_cpus = Some(cpus),
                Err(e) => problems.push(e.to_string()),
            }
        }
        Err(e) => {
            report.features = crate::features::KernelFeatures::probe().probed;
            problems.push(e.to_string());
        }
    }
    report.problems = problems;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_capabilities_are_read_from_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let caps = effective_caps(status).unwrap();
        assert_ne!(caps & (1 << CAP_BPF), 0);
        assert_eq!(effective_caps("CapEff:\tzz\n"), None);
        assert_eq!(effective_caps("Name:\tx\n"), None);
    }

    #[test]
    fn root_is_sufficient_and_no_capabilities_are_not() {
        let none = Privileges {
            euid: 1000,
            cap_sys_admin: false,
            cap_perfmon: false,
            cap_bpf: false,
        };
        assert!(!none.sufficient());
        assert!(Privileges {
            euid: 0,
            ..none.clone()
        }
        .sufficient());
        assert!(Privileges {
            cap_sys_admin: true,
            cap_perfmon: true,
            cap_bpf: true,
            ..none
        }
        .sufficient());
    }
}
