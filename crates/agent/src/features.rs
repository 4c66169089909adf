//! What the running kernel offers the eBPF programs, probed before loading.
//!
//! One object serves every kernel from 5.10 on: where a helper is optional,
//! a load-time global tells the programs which branch to take, and the
//! verifier never visits the other. A kernel that lacks something required
//! is refused before loading with one message naming everything it lacks,
//! instead of a bare `EINVAL` from the verifier.

use aya::maps::MapType;
use aya::programs::ProgramType;
use aya::sys::{is_helper_supported, is_map_supported, BpfHelper};
use aya_obj::btf::BtfKind;
use std::fmt;

/// A kernel capability the profiler uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// BPF ring buffers: every trace and process event travels through one.
    RingBuf,
    /// `bpf_probe_read_user`: reading the user stack.
    ProbeReadUser,
    /// BTF-typed tracepoints (`tp_btf`) of `sched_process_fork`: the fork
    /// hook.
    BtfTracepoints,
    /// `bpf_get_current_task_btf` and `bpf_task_pt_regs`: the user registers
    /// of a sample that hit kernel mode. Without them the programs read the
    /// registers from the top of the task's kernel stack.
    TaskPtRegs,
    /// `bpf_find_vma`: resolving a PC through the kernel's own mappings, so
    /// a process not scanned yet unwinds from its first sample.
    FindVma,
}

/// Whether a feature is required and where the kernel gained it.
#[derive(Clone, Copy, Debug)]
pub struct FeatureInfo {
    pub feature: Feature,
    /// Name as a user searches for it.
    pub name: &'static str,
    /// The mainline kernel that introduced it.
    pub since: &'static str,
    /// What it is used for.
    pub needed_for: &'static str,
    /// The profiler cannot run without it.
    pub required: bool,
}

impl Feature {
    pub const ALL: [Feature; 5] = [
        Feature::RingBuf,
        Feature::ProbeReadUser,
        Feature::BtfTracepoints,
        Feature::TaskPtRegs,
        Feature::FindVma,
    ];

    pub fn info(self) -> FeatureInfo {
        let (name, since, needed_for, required) = match self {
            Feature::RingBuf => (
                "BPF ring buffer",
                "5.8",
                "sending traces and process events to userspace",
                true,
            ),
            Feature::ProbeReadUser => ("bpf_probe_read_user", "5.5", "reading user stacks", true),
            Feature::BtfTracepoints => (
                "tp_btf sched_process_fork",
                "5.5",
                "the fork hook that lets children unwind before they are scanned",
                true,
            ),
            Feature::TaskPtRegs => (
                "bpf_task_pt_regs",
                "5.15",
                "user registers of samples taken in kernel mode (else read from the kernel stack)",
                false,
            ),
            Feature::FindVma => (
                "bpf_find_vma",
                "5.17",
                "unwinding new processes before they are scanned (else their first samples are dropped, counted)",
                false,
            ),
        };
        FeatureInfo {
            feature: self,
            name,
            since,
            needed_for,
            required,
        }
    }

    /// Asks the kernel. A probe that fails unexpectedly counts as missing,
    /// with the reason.
    pub fn probe(self) -> Result<bool, String> {
        let helper = |h: BpfHelper| {
            is_helper_supported(ProgramType::PerfEvent, h).map_err(|e| e.to_string())
        };
        match self {
            Feature::RingBuf => is_map_supported(MapType::RingBuf).map_err(|e| e.to_string()),
            Feature::ProbeReadUser => helper(BpfHelper::BPF_FUNC_probe_read_user),
            // aya's program-type probe for Tracing attaches to a test
            // function some kernels lack; the fork hook needs exactly this.
            Feature::BtfTracepoints => {
                let btf = aya::Btf::from_sys_fs().map_err(|e| e.to_string())?;
                Ok(btf
                    .id_by_type_name_kind("btf_trace_sched_process_fork", BtfKind::Typedef)
                    .is_ok())
            }
            Feature::TaskPtRegs => Ok(helper(BpfHelper::BPF_FUNC_get_current_task_btf)?
                && helper(BpfHelper::BPF_FUNC_task_pt_regs)?),
            Feature::FindVma => helper(BpfHelper::BPF_FUNC_find_vma),
        }
    }
}

/// One feature as found on this kernel.
#[derive(Clone, Debug)]
pub struct Probed {
    pub info: FeatureInfo,
    pub available: bool,
    /// Why a probe could not decide (then `available` is false).
    pub error: Option<String>,
}

/// Every feature of this kernel.
#[derive(Clone, Debug)]
pub struct KernelFeatures {
    pub probed: Vec<Probed>,
}

impl KernelFeatures {
    pub fn probe() -> KernelFeatures {
        let probed = Feature::ALL
            .iter()
            .map(|&f| {
                let (available, error) = match f.probe() {
                    Ok(a) => (a, None),
                    Err(e) => (false, Some(e)),
                };
                Probed {
                    info: f.info(),
                    available,
                    error,
                }
            })
            .collect();
        KernelFeatures { probed }
    }

    pub fn has(&self, feature: Feature) -> bool {
        self.probed
            .iter()
            .any(|p| p.info.feature == feature && p.available)
    }

    /// The required features this kernel lacks.
    pub fn missing_required(&self) -> Vec<&Probed> {
        self.probed
            .iter()
            .filter(|p| p.info.required && !p.available)
            .collect()
    }

    /// `Err` with one sentence naming every missing required feature.
    pub fn require_all(&self) -> Result<(), Missing> {
        let missing = self.missing_required();
        if missing.is_empty() {
            return Ok(());
        }
        Err(Missing(missing.into_iter().cloned().collect()))
    }
}

/// Required features a kernel lacks.
#[derive(Clone, Debug)]
pub struct Missing(pub Vec<Probed>);

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "{} (Linux {}, for {})",
                p.info.name, p.info.since, p.info.needed_for
            )?;
            if let Some(e) = &p.error {
                write!(f, " [probe failed: {e}]")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feature_says_what_it_is_for() {
        for f in Feature::ALL {
            let i = f.info();
            assert_eq!(i.feature, f);
            assert!(!i.name.is_empty() && !i.needed_for.is_empty());
            assert!(i.since.starts_with('5'), "{}: {}", i.name, i.since);
        }
    }

    #[test]
    fn missing_features_are_named_in_one_sentence() {
        let probed = |f: Feature, available| Probed {
            info: f.info(),
            available,
            error: None,
        };
        let k = KernelFeatures {
            probed: vec![
                probed(Feature::RingBuf, false),
                probed(Feature::ProbeReadUser, true),
                probed(Feature::BtfTracepoints, false),
                probed(Feature::TaskPtRegs, false),
                probed(Feature::FindVma, false),
            ],
        };
        let msg = k.require_all().unwrap_err().to_string();
        assert!(msg.contains("BPF ring buffer (Linux 5.8"), "{msg}");
        assert!(msg.contains("tp_btf"), "{msg}");
        // Optional features never make a kernel unsupported.
        assert!(!msg.contains("bpf_task_pt_regs"), "{msg}");
        assert!(!k.has(Feature::TaskPtRegs));
        assert!(k.has(Feature::ProbeReadUser));
    }
}
