//! `cargo bench -p unwind` — builds the stack-delta table of a few big
//! libraries and prints throughput. Extra paths can be given as arguments
//! (`cargo bench -p unwind -- /path/to/lib.so`).
//!
//! Default files: glibc's `libc.so.6` and the libLLVM that `ldconfig -p`
//! lists (preferring LLVM 14, ~860k rows).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use unwind::{InvalidReason, UnwindRule, UnwindTable};

fn find_llvm() -> Option<PathBuf> {
    let out = Command::new("ldconfig").arg("-p").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs: Vec<PathBuf> = text
        .lines()
        .filter(|l| l.contains("libLLVM") && l.contains("x86-64"))
        .filter_map(|l| l.split("=> ").nth(1).map(|p| PathBuf::from(p.trim())))
        .collect();
    libs.sort();
    libs.iter()
        .find(|p| p.to_string_lossy().contains("LLVM-14.so.1"))
        .or_else(|| libs.first())
        .cloned()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mut files: Vec<PathBuf> = args.iter().map(PathBuf::from).collect();
    if files.is_empty() {
        files.push("/lib/x86_64-linux-gnu/libc.so.6".into());
        match find_llvm() {
            Some(p) => files.push(p),
            None => eprintln!("no libLLVM found by ldconfig -p; benchmarking libc only"),
        }
    }

    println!(
        "{:<40} {:>10} {:>8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>12}",
        "file", "size", "FDEs", "rows raw", "merged", "invalid", "gaps", "time", "rows/s"
    );
    for path in &files {
        bench(path);
    }
}

fn bench(path: &Path) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // SAFETY: read-only mapping of a system library nobody rewrites in place.
    let map = unsafe { memmap2::Mmap::map(&file) }.expect("mmap");

    // Warm up (page cache, allocator), then take the best of a few runs
    // bounded by ~2 s total.
    let table = UnwindTable::from_elf(&map).expect("build table");
    let mut best = Duration::MAX;
    let budget = Instant::now();
    let mut runs = 0;
    while runs < 20 && (runs < 3 || budget.elapsed() < Duration::from_secs(2)) {
        let t = Instant::now();
        let again = UnwindTable::from_elf(&map).expect("build table");
        best = best.min(t.elapsed());
        assert_eq!(again.rows.len(), table.rows.len());
        runs += 1;
    }

    let s = &table.stats;
    let invalid = table
        .rows
        .iter()
        .filter(|r| matches!(r.rule, UnwindRule::Invalid(x) if x != InvalidReason::NoUnwindInfo))
        .count();
    let gaps = table
        .rows
        .iter()
        .filter(|r| r.rule == UnwindRule::Invalid(InvalidReason::NoUnwindInfo))
        .count();
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    println!(
        "{:<40} {:>10} {:>8} {:>9} {:>9} {:>8} {:>8} {:>7.1}ms {:>12.0}",
        name,
        map.len(),
        s.fdes,
        s.rows_raw,
        s.rows_merged,
        invalid,
        gaps,
        best.as_secs_f64() * 1e3,
        s.rows_raw as f64 / best.as_secs_f64(),
    );
    let reasons: Vec<String> = s
        .invalid_raw
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    let plt: Vec<String> = s
        .plt_raw
        .iter()
        .map(|(t, n)| format!("plt({t})={n}"))
        .collect();
    println!(
        "    gimli rows {}, used FDEs {}, signal FDEs {}, end-of-stack rows {}, crt stubs {}, {}; raw invalid: {}",
        s.gimli_rows,
        s.fdes_used,
        s.signal_frame_fdes,
        s.end_of_stack_raw,
        s.crt_stubs,
        if plt.is_empty() { "no PLT rows".to_string() } else { plt.join(" ") },
        reasons.join(" ")
    );
}
