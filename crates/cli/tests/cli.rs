//! The command-line contract of the debugging subcommands.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ebpf-profiler"))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ebpf-profiler-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The FileID algorithm written out plainly from the reference (whole file
/// in memory), to check the tool against.
fn reference_file_id(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let n = data.len().min(4096);
    let mut h = Sha256::new();
    h.update(&data[..n]);
    h.update(&data[data.len() - n..]);
    h.update((data.len() as u64).to_be_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn fileid_matches_the_algorithm_on_any_size() {
    let dir = scratch("fileid");
    let mut paths = Vec::new();
    let mut expected = Vec::new();
    for (name, size) in [
        ("empty", 0usize),
        ("nine", 9),
        ("five-k", 5000),
        ("one-mib", 1 << 20),
    ] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let p = dir.join(name);
        std::fs::write(&p, &data).unwrap();
        expected.push(format!("{}  {}", reference_file_id(&data), p.display()));
        paths.push(p);
    }
    // The published vector.
    let v = dir.join("vector");
    std::fs::write(&v, [0x7f, 0x45, 0x4c, 0x46, 0, 1, 2, 3, 4]).unwrap();
    expected.push(format!("caf6e5907166ac76eef618e5f7f59cd9  {}", v.display()));
    paths.push(v);

    let out = bin().arg("fileid").args(&paths).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fileid_reports_each_bad_file_and_still_handles_the_rest() {
    let dir = scratch("fileid-bad");
    let good = dir.join("good");
    std::fs::write(&good, b"hello").unwrap();
    let missing = dir.join("missing");
    let out = bin()
        .arg("fileid")
        .arg(&missing)
        .arg(&good)
        .arg(&dir) // a directory cannot be read as a file
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stdout,
        format!("{}  {}\n", reference_file_id(b"hello"), good.display())
    );
    assert!(
        stderr.contains(&format!("{}: No such file or directory", missing.display())),
        "{stderr}"
    );
    assert!(stderr.contains(&dir.display().to_string()), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stackdeltas_prints_the_table_rows() {
    let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    let out = bin().arg("stackdeltas").arg(libc).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let table = unwind::UnwindTable::from_path(libc).unwrap();
    assert_eq!(text.lines().count(), table.rows.len());
    let mut expected = Vec::new();
    unwind::write_rows(&table, &mut expected).unwrap();
    assert_eq!(text.as_bytes(), &expected[..]);
    assert!(text.contains("cfa=rsp+8"), "entry rows present");
    assert!(text.contains("signal"), "libc's __restore_rt");
}

/// A binary built with `go build -ldflags='-s -w'`: rows and names come
/// from `.gopclntab`.
#[test]
fn stackdeltas_and_symbolize_read_a_stripped_go_binary() {
    use workloads::go::{self, Program, Variant};
    let tc = go::toolchain(19).expect("Go 1.19 (golang-go)");
    let b = go::build(&tc, Program::Chain, Variant::Stripped).unwrap();
    let out = bin()
        .args(["stackdeltas", "--sources"])
        .arg(&b.exe)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let go_rows = text.lines().filter(|l| l.ends_with(" .gopclntab")).count();
    assert!(go_rows > 1000, "{go_rows} rows from .gopclntab");
    assert!(text
        .lines()
        .all(|l| l.ends_with(" .gopclntab") || l.ends_with(" -")));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(".gopclntab") && stderr.contains("Go 1.18-1.19"),
        "{stderr}"
    );

    let data = std::fs::read(&b.exe).unwrap();
    let tab = gopclntab::Pclntab::parse(&data).unwrap();
    let c = tab
        .functions()
        .map(Result::unwrap)
        .find(|f| tab.name(f).unwrap() == "main.c")
        .unwrap();
    // Where main.mix is inlined into main.c.
    let pc = (c.entry..c.end)
        .find(|&pc| tab.frames(pc).unwrap().len() == 2)
        .unwrap();
    let out = bin()
        .arg("symbolize")
        .arg(&b.exe)
        .arg(format!("{pc:#x}"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let main_go = b.dir.join("main.go");
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with(&format!("{pc:#x} main.c at {}:", main_go.display())),
        "{text}"
    );
    assert!(
        lines
            .next()
            .unwrap()
            .trim_start()
            .starts_with(&format!("(inlined) main.mix at {}:", main_go.display())),
        "{text}"
    );
}

#[test]
fn stackdeltas_rejects_a_non_elf_file_clearly() {
    let dir = scratch("sd");
    let f = dir.join("not-elf");
    std::fs::write(&f, b"#!/bin/sh\necho hi\n").unwrap();
    let out = bin().arg("stackdeltas").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!("ebpf-profiler: {}: ", f.display())),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_and_version() {
    let out = bin().arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for cmd in ["record", "fileid", "stackdeltas"] {
        assert!(text.contains(cmd), "{text}");
    }
    let out = bin().arg("--version").output().unwrap();
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .starts_with("ebpf-profiler "));
    let out = bin().args(["record", "--help"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in ["--duration", "--frequency", "--pid", "--output"] {
        assert!(text.contains(flag), "{text}");
    }
}

#[test]
fn record_rejects_bad_durations_before_touching_the_kernel() {
    let out = bin()
        .args(["record", "--duration", "10x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("invalid duration unit"), "{stderr}");
}
