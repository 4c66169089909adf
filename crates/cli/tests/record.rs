//! `ebpf-profiler record` end to end: real workloads, real eBPF, and the
//! outputs read back by their reference readers (`go tool pprof`, headless
//! Chromium). Needs root, go and chromium; fails loudly without them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;
use workloads::Kind;

/// One recording at a time: two would starve each other on 2 CPUs.
static RECORDING: Mutex<()> = Mutex::new(());

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ebpf-profiler"))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ebpf-profiler-rec-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn record(pid: u32, seconds: u32, out: &Path, extra: &[&str]) -> Output {
    let o = bin()
        .args(["record", "-q", "-F", "199", "-d"])
        .arg(seconds.to_string())
        .args(["-p", &pid.to_string(), "-o"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "record failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn go_pprof(args: &[&str], file: &Path) -> String {
    let home = scratch("gohome");
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("HOME", &home)
        .env("GOCACHE", home.join("cache"))
        .env("GOPATH", home.join("gopath"))
        .output()
        .expect("`go tool pprof` is the reference pprof reader: apt-get install golang-go");
    assert!(
        out.status.success(),
        "go tool pprof {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Line number of the first line of `needle` in the workload source.
fn source_line(src: &str, needle: &str, after: &str) -> u32 {
    let start = src.find(after).expect("function in source");
    let at = start + src[start..].find(needle).expect("line in function");
    src[..at].lines().count() as u32 + 1
}

#[test]
fn pprof_has_functions_files_and_the_hot_loop_line() {
    let _g = RECORDING.lock().unwrap_or_else(|e| e.into_inner());
    let mut w = workloads::spawn(Kind::CChains, None).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let dir = scratch("pprof");
    let file = dir.join("c.pb.gz");
    let o = record(w.pid(), 3, &file, &[]);
    w.kill().ok();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("chain_c"),
        "top table lists the hot function: {stderr}"
    );

    let raw = go_pprof(&["-raw"], &file);
    for f in [
        "chain_a", "chain_b", "chain_c", "chain_x", "chain_y", "main",
    ] {
        assert!(raw.contains(f), "{f} in -raw output:\n{raw}");
    }
    assert!(raw.contains("c_chains.c"), "source file in -raw output");

    // The hottest source line of chain_c is inside its loop.
    let src = include_str!("../../workloads/src/c/c_chains.c");
    let loop_line = source_line(src, "for (", "uint64_t chain_c(");
    let top = go_pprof(&["-top", "-lines", "-nodecount=5"], &file);
    let hot = top
        .lines()
        .find(|l| l.contains("chain_c") && l.contains("c_chains.c:"))
        .unwrap_or_else(|| panic!("chain_c line in -top -lines:\n{top}"));
    let line: u32 = hot
        .rsplit("c_chains.c:")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(
        (loop_line..=loop_line + 4).contains(&line),
        "hot line {line} of chain_c is its loop (lines {loop_line}..={})",
        loop_line + 4
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn inlined_function_is_its_own_frame_under_its_caller() {
    let _g = RECORDING.lock().unwrap_or_else(|e| e.into_inner());
    let mut w = workloads::spawn(Kind::CppTemplates, None).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let dir = scratch("inline");
    let file = dir.join("cpp.pb.gz");
    record(w.pid(), 3, &file, &[]);
    w.kill().ok();
    let traces = go_pprof(&["-traces"], &file);
    // go tool pprof prints an inlined frame with "(inline)" right above the
    // function it was inlined into.
    let lines: Vec<&str> = traces.lines().map(str::trim).collect();
    let found = lines.windows(2).any(|w| {
        w[0].contains("Xorshift64::next")
            && w[0].ends_with("(inline)")
            && w[1].contains("Spinner<Xorshift64>::spin")
    });
    assert!(
        found,
        "Xorshift64::next (inline) above Spinner::spin in:\n{traces}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn binary_without_symbols_gives_module_offsets() {
    let _g = RECORDING.lock().unwrap_or_else(|e| e.into_inner());
    let built = workloads::build(Kind::CChains).unwrap();
    let dir = scratch("stripped");
    let exe = dir.join("c_stripped");
    let ok = Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(&exe)
        .arg(&built.exe)
        .status()
        .unwrap()
        .success();
    assert!(ok, "strip failed");
    let mut child = Command::new(&exe).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let file = dir.join("s.folded");
    record(child.id(), 2, &file, &[]);
    child.kill().ok();
    child.wait().ok();
    let folded = std::fs::read_to_string(&file).unwrap();
    assert!(!folded.is_empty());
    assert!(
        folded.contains("c_stripped+0x"),
        "unsymbolized frames as binary+0xoffset:\n{folded}"
    );
    for line in folded.lines() {
        assert!(!line.contains(";;"), "no empty frame names: {line}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn deleted_binary_still_symbolizes() {
    let _g = RECORDING.lock().unwrap_or_else(|e| e.into_inner());
    let built = workloads::build(Kind::CChains).unwrap();
    let dir = scratch("deleted");
    let exe = dir.join("c_deleted");
    std::fs::copy(&built.exe, &exe).unwrap();
    let mut child = Command::new(&exe).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    std::fs::remove_file(&exe).unwrap();
    let file = dir.join("d.folded");
    record(child.id(), 2, &file, &[]);
    child.kill().ok();
    child.wait().ok();
    let folded = std::fs::read_to_string(&file).unwrap();
    assert!(
        folded.contains("main;chain_a;chain_b;chain_c"),
        "symbolized through /proc/PID/map_files:\n{folded}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn flame_graph_is_valid_xml_and_opens_in_chromium() {
    let _g = RECORDING.lock().unwrap_or_else(|e| e.into_inner());
    let mut w = workloads::spawn(Kind::CChains, None).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let dir = scratch("svg");
    let file = dir.join("c.svg");
    record(w.pid(), 2, &file, &[]);
    w.kill().ok();
    let svg = std::fs::read_to_string(&file).unwrap();
    let doc = roxmltree::Document::parse_with_options(
        &svg,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .expect("the SVG is valid XML");
    let titles: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text())
        .collect();
    for f in ["chain_a", "chain_b", "chain_c", "chain_x", "chain_y"] {
        assert!(
            titles.iter().any(|t| t.starts_with(f)),
            "{f} in the flame graph"
        );
    }
    assert!(svg.contains("samples"), "title names the sample count");

    let shot = artifacts().join("record-flamegraph.png");
    let _ = std::fs::remove_file(&shot);
    let profile_dir = scratch("chromium");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,900",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile_dir.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", file.display()))
        .env("HOME", &profile_dir)
        .output()
        .expect("headless Chromium is needed: apt-get install chromium");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = std::fs::metadata(&shot).expect("screenshot written").len();
    assert!(
        size > 10_000,
        "a real picture, not a blank page ({size} bytes)"
    );
    std::fs::copy(&file, artifacts().join("record-flamegraph.svg")).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&profile_dir).ok();
}

#[test]
fn formats_follow_the_extension_and_unknown_ones_are_refused() {
    let out = bin()
        .args(["record", "-o", "x.unknown", "-d", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot tell the format"));

    let _g = RECORDING.lock().unwrap_or_else(|e| e.into_inner());
    let mut w = workloads::spawn(Kind::CChains, None).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let dir = scratch("json");
    let file = dir.join("c.json");
    record(w.pid(), 1, &file, &[]);
    w.kill().ok();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(v.to_string().contains("chain_c"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn symbolize_prints_function_file_and_line() {
    let built = workloads::build(Kind::CChains).unwrap();
    let out = Command::new("nm").arg(&built.exe).output().unwrap();
    let nm = String::from_utf8(out.stdout).unwrap();
    let addr = nm
        .lines()
        .find(|l| l.ends_with(" chain_c"))
        .and_then(|l| l.split_whitespace().next())
        .map(|a| u64::from_str_radix(a, 16).unwrap())
        .expect("chain_c in nm");
    let out = bin()
        .arg("symbolize")
        .arg(&built.exe)
        .arg(format!("{:#x}", addr + 4))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("{:#x} chain_c at ", addr + 4)),
        "{text}"
    );
    assert!(text.contains("c_chains.c:"), "{text}");
}
