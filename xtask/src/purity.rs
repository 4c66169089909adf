//! `cargo xtask purity`: proves that the pure crates (core types and
//! everything the collector uses) build without a C toolchain.
//!
//! A crate opts in with `[package.metadata.ebpf-profiler] pure = true`. For
//! each, its normal and build dependency closure (not dev) must contain no
//! crate that compiles C, and `CC=/bin/false CXX=/bin/false cargo build -p`
//! must succeed in a target directory of its own.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
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

/// The dependency graph from `cargo metadata`, normal and build edges only.
pub struct Graph {
    /// package id → (name, version)
    pub names: BTreeMap<String, (String, String)>,
    /// package id → dependency ids
    pub edges: BTreeMap<String, Vec<String>>,
    /// workspace members that declare themselves pure: name → id
    pub pure: BTreeMap<String, String>,
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

pub fn graph(root: &Path) -> Result<Graph, String> {
    let out = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--filter-platform"])
        .arg(host_triple()?)
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let meta: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut names = BTreeMap::new();
    let mut pure = BTreeMap::new();
    for p in meta["packages"].as_array().into_iter().flatten() {
        let id = p["id"].as_str().unwrap_or_default().to_string();
        let name = p["name"].as_str().unwrap_or_default().to_string();
        if members.contains(id.as_str())
            && p["metadata"]["ebpf-profiler"]["pure"].as_bool() == Some(true)
        {
            pure.insert(name.clone(), id.clone());
        }
        names.insert(
            id,
            (name, p["version"].as_str().unwrap_or_default().to_string()),
        );
    }
    let mut edges = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().into_iter().flatten() {
        let id = node["id"].as_str().unwrap_or_default().to_string();
        let deps = node["deps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|k| matches!(k["kind"].as_str(), None | Some("build")))
            })
            .filter_map(|d| d["pkg"].as_str().map(str::to_string))
            .collect();
        edges.insert(id, deps);
    }
    Ok(Graph { names, edges, pure })
}

/// The closure of `start` and, for each forbidden package in it, the path
/// from `start` to it.
pub fn closure(g: &Graph, start: &str) -> (usize, Vec<Vec<String>>) {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut seen = BTreeSet::from([start]);
    let mut queue = VecDeque::from([start]);
    let mut bad = Vec::new();
    while let Some(id) = queue.pop_front() {
        if forbidden_reason(&g.names[id].0).is_some() {
            let mut path = vec![g.names[id].0.clone()];
            let mut cur = id;
            while let Some(p) = parent.get(cur) {
                path.push(g.names[*p].0.clone());
                cur = p;
            }
            path.reverse();
            bad.push(path);
        }
        for dep in g.edges.get(id).into_iter().flatten() {
            if seen.insert(dep) {
                parent.insert(dep, id);
                queue.push_back(dep);
            }
        }
    }
    (seen.len() - 1, bad)
}

/// Runs the whole check; returns an error naming every offending path.
pub fn run(root: &Path, build: bool) -> Result<(), String> {
    let g = graph(root)?;
    if g.pure.is_empty() {
        return Err("no crate declares [package.metadata.ebpf-profiler] pure = true".into());
    }
    let mut failures = Vec::new();
    println!("{:<24} {:>8}  result", "pure crate", "closure");
    for (name, id) in &g.pure {
        let (size, bad) = closure(&g, id);
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
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(root)
            .env("CC", "/bin/false")
            .env("CXX", "/bin/false")
            .env("CARGO_TARGET_DIR", &target)
            .args(["build", "--quiet"]);
        for name in g.pure.keys() {
            cmd.args(["-p", name]);
        }
        let status = cmd.status().map_err(|e| format!("cargo build: {e}"))?;
        if !status.success() {
            failures.push(format!(
                "CC=/bin/false CXX=/bin/false cargo build -p {} failed",
                g.pure.keys().cloned().collect::<Vec<_>>().join(" -p ")
            ));
        } else {
            println!("CC=/bin/false CXX=/bin/false cargo build: ok");
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
    fn classifies_crates() {
        assert!(forbidden_reason("cc").is_some());
        assert!(forbidden_reason("openssl-sys").is_some());
        assert!(forbidden_reason("linux-raw-sys").is_none());
        assert!(forbidden_reason("serde").is_none());
    }
}
