//! Building the eBPF object with clang.
//!
//! The object is committed so that building any crate never needs clang; this
//! step is the only one that does. It must be byte-identical from a clean
//! clone at any path: clang runs inside `ebpf/` on relative paths, the debug
//! prefix is mapped to `.`, and DWARF is stripped (BTF and BTF.ext, which the
//! loader needs, stay).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The C sources, each compiled to `<name>.o` beside it.
pub fn sources(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root.join("ebpf"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(".bpf.c")))
        .collect();
    out.sort();
    Ok(out)
}

/// The committed object for a source.
pub fn object_path(source: &Path) -> PathBuf {
    source.with_extension("o")
}

fn tool(name: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!("{name} not found on PATH: the eBPF object needs clang and llvm-strip (apt-get install clang llvm libbpf-dev)")
        })
}

/// Compiles `source` and returns the object's bytes. The headers under
/// `ebpf/include/generated` must be current (written or checked) first.
pub fn build(root: &Path, source: &Path, scratch: &Path) -> Result<Vec<u8>, String> {
    let clang = tool("clang")?;
    let strip = tool("llvm-strip")?;
    let ebpf_dir = root.join("ebpf");
    let file_name = source
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or("bad source name")?;
    std::fs::create_dir_all(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let out = scratch.join(format!("{file_name}.o"));
    let abs = ebpf_dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", ebpf_dir.display()))?;
    let status = Command::new(&clang)
        .current_dir(&ebpf_dir)
        .args([
            "-g",
            "-O2",
            "-target",
            "bpf",
            "-mcpu=v3",
            "-D__TARGET_ARCH_x86",
            "-Wall",
            "-Werror",
            "-Iinclude",
            "-idirafter",
            "/usr/include/x86_64-linux-gnu",
        ])
        .arg(format!("-fdebug-prefix-map={}=.", abs.display()))
        .arg("-fdebug-compilation-dir=.")
        .args(["-c", file_name, "-o"])
        .arg(&out)
        .status()
        .map_err(|e| format!("running {}: {e}", clang.display()))?;
    if !status.success() {
        return Err(format!("clang failed on ebpf/{file_name} ({status})"));
    }
    let status = Command::new(&strip)
        .args(["--strip-debug"])
        .arg(&out)
        .status()
        .map_err(|e| format!("running {}: {e}", strip.display()))?;
    if !status.success() {
        return Err(format!("llvm-strip failed on {} ({status})", out.display()));
    }
    let bytes = std::fs::read(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let _ = std::fs::remove_file(&out);
    let root_str = root
        .canonicalize()
        .map_err(|e| e.to_string())?
        .display()
        .to_string();
    if bytes
        .windows(root_str.len())
        .any(|w| w == root_str.as_bytes())
    {
        return Err(format!(
            "the object built from ebpf/{file_name} contains the absolute path {root_str}: it would differ between checkouts"
        ));
    }
    Ok(bytes)
}
