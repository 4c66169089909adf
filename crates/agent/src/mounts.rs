//! The pseudo-filesystems the profiler relies on: tracefs (tracepoint ids
//! for the exec and exit hooks) and bpffs (where BPF objects can be pinned;
//! tools inspecting the profiler expect it).
//!
//! systemd mounts both at boot; a container, an initramfs or a minimal VM may
//! not. Run as root, the profiler mounts what is missing itself, as systemd
//! would; without the right to, the error gives the command that fixes it.

use std::ffi::CString;
use std::io;
use std::path::Path;

/// One pseudo-filesystem the profiler needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PseudoFs {
    /// Filesystem type as `mount -t` takes it.
    pub fstype: &'static str,
    /// Where it is mounted by convention.
    pub target: &'static str,
    /// Where a mount counts (the loader looks only there); empty: anywhere.
    pub accepted: &'static [&'static str],
}

/// tracefs: tracepoint ids under `events/`. aya looks for them in the two
/// usual places only (debugfs mounts tracefs at the second by itself).
pub const TRACEFS: PseudoFs = PseudoFs {
    fstype: "tracefs",
    target: "/sys/kernel/tracing",
    accepted: &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"],
};

/// bpffs.
pub const BPFFS: PseudoFs = PseudoFs {
    fstype: "bpf",
    target: "/sys/fs/bpf",
    accepted: &[],
};

/// How a pseudo-filesystem was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountState {
    /// Already mounted (by systemd or the user), at this path.
    Present(String),
    /// Not mounted before; mounted now by the profiler.
    MountedNow,
}

#[derive(Debug, thiserror::Error)]
#[error("{fstype} is not mounted at {target} and mounting it failed ({source}); run as root: mount -t {fstype} {fstype} {target}")]
pub struct MountError {
    pub fstype: &'static str,
    pub target: &'static str,
    #[source]
    pub source: io::Error,
}

/// Where `fs` is mounted at a place that counts, from a mount table in
/// `/proc/self/mounts` form.
fn find_in(mounts: &str, fs: &PseudoFs) -> Option<String> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_source, target, kind) = (fields.next()?, fields.next()?, fields.next()?);
        let counts = fs.accepted.is_empty() || fs.accepted.contains(&target);
        (kind == fs.fstype && counts).then(|| target.to_string())
    })
}

/// Makes sure `fs` is mounted somewhere, mounting it at its usual place when
/// it is nowhere.
pub fn ensure(fs: PseudoFs) -> Result<MountState, MountError> {
    let error = |source| MountError {
        fstype: fs.fstype,
        target: fs.target,
        source,
    };
    let table = std::fs::read_to_string("/proc/self/mounts").map_err(error)?;
    if let Some(at) = find_in(&table, &fs) {
        return Ok(MountState::Present(at));
    }
    if !Path::new(fs.target).is_dir() {
        return Err(error(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} does not exist", fs.target),
        )));
    }
    let c = |s: &str| CString::new(s).map_err(|e| error(io::Error::other(e)));
    let (source, target, fstype) = (c(fs.fstype)?, c(fs.target)?, c(fs.fstype)?);
    // SAFETY: all pointers are NUL-terminated strings that outlive the call;
    // data may be null for these filesystems.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(error(io::Error::last_os_error()));
    }
    tracing::debug!(fstype = fs.fstype, target = fs.target, "mounted");
    Ok(MountState::MountedNow)
}

/// Mounts tracefs and bpffs where missing; see [`ensure`].
pub fn ensure_all() -> Result<[(PseudoFs, MountState); 2], MountError> {
    Ok([(TRACEFS, ensure(TRACEFS)?), (BPFFS, ensure(BPFFS)?)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_filesystem_by_type_where_it_counts() {
        let table = "sysfs /sys sysfs rw 0 0\n\
                     none /mnt/trace tracefs rw 0 0\n\
                     bpf /mnt/bpf bpf rw 0 0\n";
        // tracefs elsewhere than aya looks is as good as none.
        assert_eq!(find_in(table, &TRACEFS), None);
        let table = format!("{table}tracefs /sys/kernel/debug/tracing tracefs rw 0 0\n");
        assert_eq!(
            find_in(&table, &TRACEFS).as_deref(),
            Some("/sys/kernel/debug/tracing")
        );
        assert_eq!(find_in(&table, &BPFFS).as_deref(), Some("/mnt/bpf"));
        assert_eq!(find_in("garbage\n\n", &BPFFS), None);
    }

    #[test]
    fn a_mounted_filesystem_is_reported_where_it_is() {
        // /proc is mounted on every machine the tests run on.
        let proc_fs = PseudoFs {
            fstype: "proc",
            target: "/nonexistent",
            accepted: &["/proc"],
        };
        assert_eq!(
            ensure(proc_fs).unwrap(),
            MountState::Present("/proc".into())
        );
    }

    #[test]
    fn the_error_names_the_command_that_fixes_it() {
        let missing = PseudoFs {
            fstype: "no-such-fs-type",
            target: "/nonexistent-mountpoint",
            accepted: &[],
        };
        let msg = ensure(missing).unwrap_err().to_string();
        assert!(
            msg.contains("mount -t no-such-fs-type no-such-fs-type /nonexistent-mountpoint"),
            "{msg}"
        );
    }
}
