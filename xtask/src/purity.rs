//! `cargo xtask purity`: proves that the pure crates (core types and
//! everything the collector uses) build without a C toolchain.
//!
//! A crate opts in with `[package.metadata.ebpf-profiler] pure = true`. For
//! each, its normal and build dependency closure (not dev) must contain no
//! crate that compiles C, and `CC=/bin/false CXX=/bin/false cargo build -p`
//! must succeed in a target directory of its own.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Crates that exist to drive a C build.
pub const FORBIDDEN: [&str; 4] = ["cc", "cmake", "bindgen", "pkg-config"];

/// `-sys` crates that compile no C (pure Rust bindings), with the reason.
pub const PURE_SYS: [(&str, &str); 1] = [(
    "linux-raw-sys",
    "generated Rust bindings to Linux headers; no build script",
)];

/// Why a package is not allowed in a pure closure, if it is not.
pub fn forbidden_reason(name: &str) -> Option<String> {
    if FORBIDDEN.contains(&name) {
        return Some(format!("{name} builds C/C++ code"));
    }
    if name.ends_with("-sys") && !PURE_SYS.iter().any(|(n, _)| *n == name) {
        return Some(format!(
            "{name} is a -sys crate (links or builds native code)"
        ));
    }
    None
}

/// The host's target triple: dependencies for other platforms (windows-sys,
/// js-sys…) are never built here and do not count.
fn host_triple() -> Result<String, String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .map_err(|e| format!("rustc -vV: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .ok_or_else(|| "rustc -vV printed no host triple".to_string())
}

/// Workspace members that declare themselves pure.
pub fn pure_crates(root: &Path) -> Result<Vec<String>, String> {
    let out = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let meta: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["ebpf-profiler"]["pure"].as_bool() == Some(true))
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

/// The dependency tree of one crate as `cargo build -p CRATE` resolves it
/// (its own default features, normal and build edges, this platform only —
/// a workspace-wide graph would unify features other crates enable):
/// (depth, package name) in tree order.
pub fn tree(root: &Path, krate: &str) -> Result<Vec<(usize, String)>, String> {
    let out = Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "tree",
            "-p",
            krate,
            "-e",
            "normal,build",
            "--prefix",
            "depth",
            "--target",
        ])
        .arg(host_triple()?)
        .output()
        .map_err(|e| format!("cargo tree: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo tree -p {krate} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(parse_tree(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `cargo tree --prefix depth` output.
pub fn parse_tree(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .filter_map(|l| {
            let digits = l.chars().take_while(char::is_ascii_digit).count();
            let depth = l[..digits].parse().ok()?;
            let name = l[digits..].split_whitespace().next()?.to_string();
            Some((depth, name))
        })
        .collect()
}

/// The number of distinct packages below the root, and for each forbidden
/// package the path from the root to it.
pub fn closure(tree: &[(usize, String)]) -> (usize, Vec<Vec<String>>) {
    let mut stack: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut bad = Vec::new();
    for (depth, name) in tree {
        stack.truncate(*depth);
        stack.push(name.clone());
        if *depth > 0 {
            seen.insert(name.clone());
        }
        if forbidden_reason(name).is_some()
            && !bad.iter().any(|p: &Vec<String>| p.last() == Some(name))
        {
            bad.push(stack.clone());
        }
    }
    (seen.len(), bad)
}

/// Runs the whole check; returns an error naming every offending path.
pub fn run(root: &Path, build: bool) -> Result<(), String> {
    let pure = pure_crates(root)?;
    if pure.is_empty() {
        return Err("no crate declares [package.metadata.ebpf-profiler] pure = true".into());
    }
    let mut failures = Vec::new();
    println!("{:<24} {:>8}  result", "pure crate", "closure");
    for name in &pure {
        let (size, bad) = closure(&tree(root, name)?);
        let verdict = if bad.is_empty() {
            "ok"
        } else {
            "FORBIDDEN DEPENDENCY"
        };
        println!("{name:<24} {size:>8}  {verdict}");
        for path in bad {
            let last = path.last().cloned().unwrap_or_default();
            failures.push(format!(
                "{name}: {} ({})",
                path.join(" -> "),
                forbidden_reason(&last).unwrap_or_default()
            ));
        }
    }
    if failures.is_empty() && build {
        let target = root.join("target").join("purity");
        // One build per crate: building them together would unify their
        // features, which is not what a user of one crate gets.
        for name in &pure {
            let status = Command::new(env!("CARGO"))
                .current_dir(root)
                .env("CC", "/bin/false")
                .env("CXX", "/bin/false")
                .env("CARGO_TARGET_DIR", &target)
                .args(["build", "--quiet", "-p", name])
                .status()
                .map_err(|e| format!("cargo build: {e}"))?;
            if !status.success() {
                failures.push(format!(
                    "CC=/bin/false CXX=/bin/false cargo build -p {name} failed"
                ));
            }
        }
        if failures.is_empty() {
            println!("CC=/bin/false CXX=/bin/false cargo build -p <each>: ok");
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_paths_in_a_tree() {
        let tree = parse_tree(
            "0libpf v0.1.0 (/x)\n1sha2 v0.10.9\n2cfg-if v1.0.5\n1foo v1.0.0\n2cc v1.2.0\n",
        );
        let (size, bad) = closure(&tree);
        assert_eq!(size, 4);
        assert_eq!(
            bad,
            vec![vec!["libpf".to_string(), "foo".into(), "cc".into()]]
        );
    }

    #[test]
    fn classifies_crates() {
        assert!(forbidden_reason("cc").is_some());
        assert!(forbidden_reason("openssl-sys").is_some());
        assert!(forbidden_reason("linux-raw-sys").is_none());
        assert!(forbidden_reason("serde").is_none());
    }
}
