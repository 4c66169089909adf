//! The purity check fails, naming the path, when a pure crate pulls in a
//! crate that compiles C.

use std::process::Command;

#[test]
fn a_cc_dependency_in_a_pure_crate_is_named() {
    let root = std::env::temp_dir().join(format!("xtask-purity-test-{}", std::process::id()));
    let krate = root.join("crates/libpf");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        root.join("Cargo.toml"),
        "[workspace]\nresolver = \"2\"\nmembers = [\"crates/libpf\"]\n",
    )
    .unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"libpf\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [package.metadata.ebpf-profiler]\npure = true\n\n[build-dependencies]\ncc = \"1\"\n",
    )
    .unwrap();
    std::fs::write(krate.join("src/lib.rs"), "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("--root")
        .arg(&root)
        .args(["purity", "--no-build"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    std::fs::remove_dir_all(&root).unwrap();
    assert!(!out.status.success(), "must fail: {stdout}{stderr}");
    assert!(
        stderr.contains("libpf: libpf -> cc (cc builds C/C++ code)"),
        "{stderr}"
    );
}

#[test]
fn the_workspace_pure_crates_are_pure() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["purity", "--no-build"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    for krate in ["libpf", "support", "profile"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(krate) && l.ends_with("ok")),
            "{krate} must be checked: {stdout}"
        );
    }
}
