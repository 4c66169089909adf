//! Each workload builds, runs and exits or is killed cleanly, and its machine
//! code really has the expected chains (calls, not tail calls; no frame
//! pointers).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use workloads::{build, spawn, verify_calls, Kind, DLOPEN_DELAY, DL_WORK_SO};

fn runs_for_a_second_and_exits(kind: Kind) {
    let start = Instant::now();
    let mut running = spawn(kind, Some(Duration::from_secs(1))).unwrap();
    let pid = running.pid();
    std::thread::sleep(Duration::from_millis(300));
    assert!(running.is_running(), "{kind} exited early");
    assert_eq!(
        fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        kind.comm()
    );
    let status = running
        .wait_timeout(Duration::from_secs(20))
        .unwrap()
        .unwrap_or_else(|| panic!("{kind} did not exit by itself"));
    assert!(status.success(), "{kind}: {status}");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(950), "{kind} ran {took:?}");
    drop(running);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "{kind} not reaped"
    );
}

#[test]
fn c_chains_runs() {
    runs_for_a_second_and_exits(Kind::CChains);
}

#[test]
fn cpp_templates_runs() {
    runs_for_a_second_and_exits(Kind::CppTemplates);
}

#[test]
fn rust_release_runs() {
    runs_for_a_second_and_exits(Kind::RustRelease);
}

#[test]
fn dlopen_late_runs() {
    runs_for_a_second_and_exits(Kind::DlopenLate);
}

#[test]
fn forker_runs() {
    runs_for_a_second_and_exits(Kind::Forker);
}

#[test]
fn syscall_heavy_runs() {
    runs_for_a_second_and_exits(Kind::SyscallHeavy);
}

#[test]
fn killed_on_drop_with_children() {
    let mut running = spawn(Kind::Forker, None).unwrap();
    let pid = running.pid();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(running.is_running(), "forker without duration exited");
    drop(running);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    // The rest of the process group (forked children) dies too. SIGKILL is
    // delivered asynchronously, and orphans are reaped by init, so poll.
    let group = || -> Vec<String> {
        let mut left = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            // state ppid pgrp
            let fields: Vec<&str> = rest.split_whitespace().take(3).collect();
            if fields.len() == 3 && fields[0] != "Z" && fields[2] == pid.to_string() {
                left.push(stat);
            }
        }
        left
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !group().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(group(), Vec::<String>::new(), "left in the process group");
}

#[test]
fn forker_children_have_exe_comm() {
    let running = spawn(Kind::Forker, Some(Duration::from_secs(3))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut seen = std::collections::BTreeSet::new();
    while Instant::now() < deadline && seen.len() < 3 {
        for child in running.child_pids() {
            let Ok(comm) = fs::read_to_string(format!("/proc/{child}/comm")) else {
                continue;
            };
            assert_eq!(comm.trim(), Kind::Forker.comm());
            assert_eq!(Kind::Forker.comm(), Kind::Forker.exe_name());
            let exe = fs::read_link(format!("/proc/{child}/exe"));
            if let Ok(exe) = exe {
                assert_eq!(exe, running.built.exe);
            }
            seen.insert(child);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(seen.len() >= 3, "saw only children {seen:?} in 2 s");
}

#[test]
fn dlopen_late_maps_library_late() {
    let running = spawn(Kind::DlopenLate, Some(Duration::from_secs(2))).unwrap();
    let maps = || fs::read_to_string(format!("/proc/{}/maps", running.pid())).unwrap();
    std::thread::sleep(DLOPEN_DELAY / 3);
    assert!(
        !maps().contains(DL_WORK_SO),
        "{DL_WORK_SO} mapped before the delay"
    );
    std::thread::sleep(DLOPEN_DELAY + Duration::from_millis(400));
    let so = running
        .built
        .object(DL_WORK_SO)
        .unwrap()
        .display()
        .to_string();
    assert!(maps().contains(&so), "{so} not mapped after the delay");
}

#[test]
fn no_tail_calls_and_no_frame_pointers() {
    for kind in Kind::ALL {
        let built = build(kind).unwrap();
        let report = verify_calls(kind, &built).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(report.len(), kind.call_edges().len());
        for line in report {
            println!("{line}");
        }
    }
}

/// The premise of the check above: at -O2 gcc does turn `return f(x);`
/// into a jump, and the disassembly parser sees it as one.
#[test]
fn tail_call_detector_sees_gcc_tail_calls() {
    let dir = std::env::temp_dir().join(format!("workloads-tailcall-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let src = dir.join("t.c");
    fs::write(
        &src,
        "__attribute__((noinline, noipa)) unsigned long leaf(unsigned long x) { return x * 3; }\n\
         __attribute__((noinline, noipa)) unsigned long tail(unsigned long x) { return leaf(x + 1); }\n\
         int main(int c, char **v) { (void)v; return (int)tail((unsigned long)c); }\n",
    )
    .unwrap();
    let exe = dir.join("t");
    let out = std::process::Command::new("gcc")
        .args(["-O2", "-fomit-frame-pointer", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("gcc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let funcs = workloads::disassemble(&exe).unwrap();
    let tail = &funcs["tail"];
    assert!(
        tail.iter()
            .any(|i| i.is_jump() && i.target() == Some(("leaf".to_string(), true))),
        "{tail:?}"
    );
    assert!(!tail.iter().any(|i| i.is_call()), "{tail:?}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rust_release_is_linked_by_lld_with_text_vaddr_not_offset() {
    let built = build(Kind::RustRelease).unwrap();
    let exe = fs::read(&built.exe).unwrap();
    assert!(
        exe.windows(b"Linker: LLD".len())
            .any(|w| w == b"Linker: LLD"),
        "rust_release was not linked by LLD"
    );
    // ELF64 little-endian program headers: the executable PT_LOAD's
    // p_vaddr differs from its p_offset.
    let u16_at = |o: usize| u16::from_le_bytes(exe[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(exe[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(exe[o..o + 8].try_into().unwrap());
    assert_eq!(&exe[..4], b"\x7fELF");
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    let text = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .find(
            |&ph| u32_at(ph) == 1 /* PT_LOAD */ && u32_at(ph + 4) & 1 != 0, /* PF_X */
        )
        .expect("no executable PT_LOAD");
    let (offset, vaddr) = (u64_at(text + 8), u64_at(text + 16));
    assert_ne!(offset, vaddr, "text segment vaddr == offset");
}

#[test]
fn builds_are_cached_and_in_the_cache_dir() {
    for kind in Kind::ALL {
        let a = build(kind).unwrap();
        let t = Instant::now();
        let b = build(kind).unwrap();
        assert_eq!(a, b);
        assert!(t.elapsed() < Duration::from_secs(1), "{kind}: rebuilt");
        assert!(a.exe.starts_with(workloads::cache_root()));
        assert_eq!(a.exe.file_name().unwrap(), kind.exe_name());
        for extra in &a.extra {
            assert!(extra.is_file());
        }
    }
    assert_eq!(build(Kind::DlopenLate).unwrap().extra.len(), 1);
}

#[test]
fn concurrent_builds_agree() {
    let handles: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| build(Kind::SyscallHeavy).unwrap()))
        .collect();
    let built: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(built.windows(2).all(|w| w[0] == w[1]));
}

/// Not a test by itself: the body of `concurrent_processes_build_once`'s
/// child processes (does nothing unless that test runs it).
#[test]
fn build_helper_process() {
    if std::env::var_os("WORKLOADS_BUILD_HELPER").is_none() {
        return;
    }
    let built = build(Kind::SyscallHeavy).unwrap();
    println!("BUILT {}", built.exe.display());
}

#[test]
fn concurrent_processes_build_once() {
    // Fresh cache root, several processes building the same workload at once.
    let tmp = std::env::temp_dir().join(format!("workloads-cache-test-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).unwrap();
    let me = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(&me)
                .args(["--exact", "build_helper_process", "--nocapture"])
                .env("WORKLOADS_BUILD_HELPER", "1")
                .env("TMPDIR", &tmp)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut paths = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find_map(|l| l.strip_prefix("BUILT ")).unwrap();
        paths.push(line.to_string());
    }
    assert!(paths.windows(2).all(|w| w[0] == w[1]), "{paths:?}");
    assert!(paths[0].starts_with(tmp.to_str().unwrap()));
    // One build directory, no temporary ones left behind.
    let root = tmp.join("ebpf-profiler-workloads");
    let entries: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    fs::remove_dir_all(&tmp).unwrap();
}
