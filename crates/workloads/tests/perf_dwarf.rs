//! Self-check of the workloads with the accuracy reference, perf's DWARF
//! unwinder: `perf record -F 499 --call-graph dwarf -p PID -- sleep 2`, then
//! `perf script --no-inline`, scored with `full_chain_share`.
//!
//! perf is required (Debian: `apt-get install -y linux-perf`); without it
//! these tests fail, they never skip.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use workloads::{full_chain_share, normalize_symbol, spawn, Kind};

const PERF: &str = "perf";

/// (root-first frame names, count) of the samples of processes named
/// `comm`, from `perf script -F comm,pid,tid,ip,sym,dso --no-inline` output.
fn parse_perf_script(text: &str, comm: &str) -> Vec<(Vec<String>, u64)> {
    let mut counts: HashMap<Vec<String>, u64> = HashMap::new();
    for sample in text.split("\n\n") {
        let mut lines = sample.lines().skip_while(|l| l.trim().is_empty());
        let Some(header) = lines.next() else { continue };
        if header.split_whitespace().next() != Some(comm) {
            continue;
        }
        let mut frames: Vec<String> = lines
            .filter_map(|line| {
                // "\t    55d5c0e0e139 chain_c (/path/c_chains)"
                let line = line.trim();
                let (_addr, rest) = line.split_once(char::is_whitespace)?;
                let sym = match rest.rfind(" (") {
                    Some(i) if rest.ends_with(')') => &rest[..i],
                    _ => rest,
                };
                let sym = match sym.rfind("+0x") {
                    Some(i) => &sym[..i],
                    None => sym,
                };
                Some(normalize_symbol(sym.trim()))
            })
            .collect();
        frames.reverse(); // perf prints leaf first
        *counts.entry(frames).or_default() += 1;
    }
    counts.into_iter().collect()
}

fn perf_samples(kind: Kind) -> Vec<(Vec<String>, u64)> {
    match Command::new(PERF).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        other => panic!(
            "`{PERF}` is required for this test and is not usable ({other:?}); \
             install it: apt-get install -y linux-perf"
        ),
    }
    let running = spawn(kind, None).unwrap();
    // dlopen_late: let it load its library first, as a profiler would see.
    std::thread::sleep(Duration::from_millis(if kind == Kind::DlopenLate {
        500
    } else {
        100
    }));
    let data = std::env::temp_dir().join(format!(
        "workloads-perf-{}-{}.data",
        kind.exe_name(),
        std::process::id()
    ));
    let rec = Command::new(PERF)
        .args(["record", "-F", "499", "--call-graph", "dwarf", "-p"])
        .arg(running.pid().to_string())
        .arg("-o")
        .arg(&data)
        .args(["--", "sleep", "2"])
        .output()
        .expect("running perf record");
    assert!(
        rec.status.success(),
        "perf record failed: {}",
        String::from_utf8_lossy(&rec.stderr)
    );
    drop(running);
    let script = Command::new(PERF)
        .args([
            "script",
            "--no-inline",
            "-F",
            "comm,pid,tid,ip,sym,dso",
            "-i",
        ])
        .arg(&data)
        .output()
        .expect("running perf script");
    assert!(
        script.status.success(),
        "perf script failed: {}",
        String::from_utf8_lossy(&script.stderr)
    );
    let _ = std::fs::remove_file(&data);
    let _ = std::fs::remove_file(Path::new(&format!("{}.old", data.display())));
    parse_perf_script(&String::from_utf8_lossy(&script.stdout), kind.comm())
}

/// Records `kind`, prints its full-chain share and the commonest stacks
/// that miss, and returns the share and the stacks.
fn measure(kind: Kind) -> (f64, Vec<(Vec<String>, u64)>) {
    let stacks = perf_samples(kind);
    let total: u64 = stacks.iter().map(|(_, n)| n).sum();
    let share = full_chain_share(&stacks, &kind.expected_chains());
    println!("{kind}: perf-dwarf full-chain share {share:.4} of {total} samples");
    let chains = kind.expected_chains();
    let mut misses: Vec<_> = stacks
        .iter()
        .filter(|(s, n)| full_chain_share(&[(s.clone(), *n)], &chains) == 0.0)
        .collect();
    misses.sort_by_key(|m| std::cmp::Reverse(m.1));
    for (stack, n) in misses.iter().take(5) {
        println!("  miss x{n}: {}", stack.join(" > "));
    }
    assert!(total >= 100, "{kind}: only {total} samples");
    (share, stacks)
}

#[test]
fn perf_dwarf_c_chains() {
    let (share, stacks) = measure(Kind::CChains);
    assert!(share >= 0.95, "c_chains: {share}");
    // Both chains get about half of the time.
    for chain in Kind::CChains.expected_chains() {
        let part = full_chain_share(&stacks, std::slice::from_ref(&chain));
        assert!((0.3..=0.7).contains(&part), "{chain:?}: {part}");
    }
}

#[test]
fn perf_dwarf_rust_release() {
    let (share, _) = measure(Kind::RustRelease);
    assert!(share >= 0.95, "rust_release: {share}");
}

/// The other workloads, measured for the record; they must hold the same
/// bar as the two above.
#[test]
fn perf_dwarf_other_workloads() {
    let mut low = Vec::new();
    for kind in [
        Kind::CppTemplates,
        Kind::DlopenLate,
        Kind::Forker,
        Kind::SyscallHeavy,
    ] {
        let (share, _) = measure(kind);
        if share < 0.95 {
            low.push((kind, share));
        }
    }
    assert!(low.is_empty(), "below 0.95: {low:?}");
}

#[test]
fn parse_perf_script_output() {
    let text = "\
c_chains  4612/4612  
\t            1227 chain_c (/tmp/wl/c_chains)
\t            1268 chain_b+0x8 (/tmp/wl/c_chains)
\t            1099 main (/tmp/wl/c_chains)
\t           27304 __libc_start_main@@GLIBC_2.34 (/usr/lib/x86_64-linux-gnu/libc.so.6)

other  1/1  
\t            1227 foo (/x)

c_chains  4612/4612  
\t ffffffff8100 [unknown] ([kernel.kallsyms])
\t            1227 chain_c (/tmp/wl/c_chains)
";
    let mut stacks = parse_perf_script(text, "c_chains");
    stacks.sort();
    assert_eq!(
        stacks,
        vec![
            (
                vec!["__libc_start_main", "main", "chain_b", "chain_c"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
                1
            ),
            (vec!["chain_c".to_string(), "[unknown]".to_string()], 1),
        ]
    );
}
