//! What the agent reads about a process for labels and filters:
//! `/proc/PID/comm`, `/proc/PID/exe`, `/proc/PID/cgroup`.

use std::path::Path;
use std::sync::Arc;

/// Labels of a process, read once when it is first seen (and after exec).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessMeta {
    /// `/proc/PID/comm`.
    pub name: Arc<str>,
    /// Target of `/proc/PID/exe`.
    pub exe_path: Option<Arc<str>>,
    /// The cgroup v2 path (or the first v1 path).
    pub cgroup: Option<Arc<str>>,
    /// Container id found in the cgroup path.
    pub container_id: Option<Arc<str>>,
}

/// Reads a process's labels under `proc_root` (normally `/proc`). Missing
/// pieces (the process exited, a kernel thread has no exe) stay `None`.
pub fn read(proc_root: &Path, pid: u32) -> ProcessMeta {
    let dir = proc_root.join(pid.to_string());
    let name = std::fs::read_to_string(dir.join("comm"))
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_default();
    let exe_path = std::fs::read_link(dir.join("exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned().into());
    let cgroup_text = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
    let cgroup = cgroup_path(&cgroup_text).map(Arc::from);
    let container_id = cgroup.as_deref().and_then(container_id).map(Arc::from);
    ProcessMeta {
        name: name.into(),
        exe_path,
        cgroup,
        container_id,
    }
}

/// The unified (v2) hierarchy path from `/proc/PID/cgroup`, else the first.
pub fn cgroup_path(text: &str) -> Option<String> {
    let mut first = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(_), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" {
            return Some(path.to_string());
        }
        first.get_or_insert_with(|| path.to_string());
    }
    first
}

/// A container id in a cgroup path: the last 64-hex-digit run in a path
/// component, as Docker, containerd, CRI-O and Kubernetes name them
/// (`docker-<id>.scope`, `cri-containerd-<id>.scope`, `/kubepods/…/<id>`).
pub fn container_id(cgroup_path: &str) -> Option<String> {
    cgroup_path.rsplit('/').find_map(|component| {
        let bytes = component.as_bytes();
        let mut run = 0;
        for (i, b) in bytes.iter().enumerate() {
            if b.is_ascii_hexdigit() && !b.is_ascii_uppercase() {
                run += 1;
                let next_hex = bytes.get(i + 1).is_some_and(|n| n.is_ascii_hexdigit());
                if run == 64 && !next_hex {
                    return Some(component[i + 1 - 64..=i].to_string());
                }
            } else {
                run = 0;
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1e2d4c5b6a79880f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978";

    #[test]
    fn finds_container_ids() {
        assert_eq!(ID.len(), 64);
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{ID}.scope"),
            format!("/kubepods/besteffort/pod5b3c/{ID}"),
            format!("/docker/{ID}"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
        ] {
            assert_eq!(container_id(&path).as_deref(), Some(ID), "{path}");
        }
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-1.scope"),
            None
        );
        assert_eq!(container_id("/"), None);
        // 63 or 65 hex digits are not an id.
        assert_eq!(container_id(&format!("/docker/{}", &ID[1..])), None);
        assert_eq!(container_id(&format!("/docker/a{ID}")), None);
    }

    #[test]
    fn picks_the_unified_hierarchy() {
        let text = "12:memory:/v1/path\n0::/system.slice/app.service\n";
        assert_eq!(
            cgroup_path(text).as_deref(),
            Some("/system.slice/app.service")
        );
        assert_eq!(cgroup_path("3:cpu:/only/v1\n").as_deref(), Some("/only/v1"));
        assert_eq!(cgroup_path(""), None);
    }

    #[test]
    fn reads_this_process() {
        let m = read(Path::new("/proc"), std::process::id());
        assert!(!m.name.is_empty());
        assert!(m.exe_path.is_some());
        assert!(m.cgroup.is_some());
    }
}
