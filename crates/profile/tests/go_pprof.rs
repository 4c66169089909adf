//! `go tool pprof` is the reference reader of the pprof output: it must
//! load our profile and show the functions, files, lines, labels and
//! totals the model holds.
//!
//! Needs Go (Debian `golang-go`); fails, loudly, without it.

mod common;

use profile::{pprof, testdata, top_functions};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

struct Pprof {
    dir: tempfile::TempDir,
    file: std::path::PathBuf,
}

impl Pprof {
    fn new(bytes: &[u8]) -> Self {
        let version = Command::new("go").arg("version").output();
        match version {
            Ok(o) if o.status.success() => {}
            _ => panic!(
                "`go` is required for the pprof reader test (go tool pprof): \
                 install Debian's golang-go (apt-get install -y golang-go)"
            ),
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("profile.pb.gz");
        std::fs::write(&file, bytes).unwrap();
        Pprof { dir, file }
    }

    /// `go tool pprof ARGS FILE`, with writable homes, no network and no
    /// local binaries to symbolize from.
    fn run(&self, args: &[&str]) -> String {
        let d = self.dir.path();
        let sub = |n: &str| {
            let p = d.join(n);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        let mut cmd = Command::new("go");
        cmd.arg("tool")
            .arg("pprof")
            .args(args)
            .arg(&self.file)
            .env("HOME", sub("home"))
            .env("GOCACHE", sub("gocache"))
            .env("GOPATH", sub("gopath"))
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .env("PPROF_TMPDIR", sub("pprof"))
            .env("PPROF_BINARY_PATH", sub("binaries"));
        let out = common::run(&mut cmd, Duration::from_secs(120));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "go tool pprof {args:?} failed: {}\n{stdout}\n{stderr}",
            out.status
        );
        stdout
    }
}

fn assert_contains(text: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "missing {n:?} in:\n{text}");
    }
}

#[test]
fn raw_shows_functions_files_lines_labels_and_mappings() {
    let p = testdata::realistic();
    let g = Pprof::new(&pprof::encode(&p));
    let raw = g.run(&["-raw"]);
    assert_contains(
        &raw,
        &[
            "PeriodType: cpu nanoseconds",
            "Period: 10000000",
            "Duration: 5s",
            "samples/count cpu/nanoseconds",
            "Comment: host web-1",
            // Functions with file:line, inline chains innermost first.
            "handle_request server.c:88",
            "handle_request server.c:90",
            "main server.c:20",
            "crc32_update crc.h:7",
            "parse_header parse.h:12",
            "parse_request parse.c:40",
            "walk tree.c:14",
            "compute app.py:12",
            "<module> app.py:30",
            // Kernel, unsymbolized and error frames.
            "0xffffffff81a01234 M=1 copy_user_enhanced_fast_string",
            "[kernel]+0xffffffff81112233",
            "blob+0x401234",
            "blob+0x402000",
            "<unwinding aborted due to error native_no_unwind_info>",
            // Labels.
            "comm:[server] thread_name:[worker-1]",
            "cpu:[1 id] pid:[100 id] tid:[101 id]",
            "comm:[vendor] container_id:[3f2a9c1e7b5d] thread_name:[blob-io]",
            "cpu:[1 id] pid:[0 id] tid:[0 id]",
            // Mappings: ELF vaddr ranges, paths, build ids, pseudo-files.
            "0x1000/0x9000/0x0 /opt/app/bin/server 4fa3c0ffee0d15ea5e5ca1ab1e0000000000beef [FN][FL][LN][IN]",
            "/opt/vendor/blob 55550000000000056666000000000006",
            "[kernel]",
            "[cpython]",
            "[error]",
        ],
    );
    // Sample values: count and count × period.
    assert!(
        raw.contains("          7   70000000: 8 9 10 11 12 "),
        "{raw}"
    );
    assert!(raw.contains("         22  220000000: "), "{raw}");
}

#[test]
fn traces_show_stacks_with_inlining_and_labels() {
    let g = Pprof::new(&pprof::encode(&testdata::realistic()));
    let traces = g.run(&["-traces"]);
    assert_contains(
        &traces,
        &[
            "Type: cpu",
            "thread_name:  worker-1",
            "container_id:  3f2a9c1e7b5d",
            "      70ms   crc32_update (inline)\n             parse_header (inline)\n             parse_request\n             handle_request\n             worker_main\n             start_thread\n             __clone3\n",
            "      50ms   copy_user_enhanced_fast_string\n             tcp_recvmsg\n",
            "      40ms   blob+0x401234\n             blob+0x402000\n             <unwinding aborted due to error native_no_unwind_info>\n",
            "      10ms   compute\n             <module>\n",
            "      30ms   walk\n             walk\n             walk\n             handle_request\n",
        ],
    );
    // One trace per sample.
    assert_eq!(
        traces.matches("-----------+").count(),
        testdata::realistic().samples.len() + 1
    );
}

/// `-top` rows: function (without pprof's " (inline)" mark) → (flat, cum).
fn parse_top(text: &str) -> BTreeMap<String, (String, String)> {
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.trim_start().starts_with("flat  flat%") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 6 {
            continue;
        }
        let name = cols[5..].join(" ");
        let name = name.strip_suffix(" (inline)").unwrap_or(&name).to_string();
        rows.insert(name, (cols[0].to_string(), cols[3].to_string()));
    }
    rows
}

#[test]
fn top_totals_match_sample_counts() {
    let p = testdata::realistic();
    let g = Pprof::new(&pprof::encode(&p));
    let args = [
        "-top",
        "-nodecount=1000",
        "-nodefraction=0",
        "-edgefraction=0",
    ];

    let mut counts = args.to_vec();
    counts.push("-sample_index=samples");
    let top = g.run(&counts);
    assert_contains(
        &top,
        &[
            "Type: samples",
            "Showing nodes accounting for 44, 100% of 44 total",
        ],
    );
    // Every function's flat and cum agree with our own top (self, total).
    let theirs = parse_top(&top);
    let ours = top_functions(&p, usize::MAX);
    assert_eq!(theirs.len(), ours.len(), "{top}");
    for r in &ours {
        let (flat, cum) = theirs
            .get(&r.function)
            .unwrap_or_else(|| panic!("{} missing from:\n{top}", r.function));
        assert_eq!(
            (flat.as_str(), cum.as_str()),
            (
                r.self_samples.to_string().as_str(),
                r.total_samples.to_string().as_str()
            ),
            "{}",
            r.function
        );
    }

    // CPU time: count × 10ms.
    let cpu = g.run(&args);
    assert_contains(
        &cpu,
        &[
            "Type: cpu",
            "Total samples = 440ms",
            "Showing nodes accounting for 440ms, 100% of 440ms total",
        ],
    );
    assert_eq!(parse_top(&cpu)["native_safe_halt"].0, "220ms");

    // The frame type is in the mapping: -focus on it selects kernel stacks.
    let mut focus = counts.clone();
    focus.push(r"-focus=\[kernel\]");
    let kernel = g.run(&focus);
    assert_contains(
        &kernel,
        &["Showing nodes accounting for 27, 61.36% of 44 total"],
    );
    // Numeric labels keep their zero values: CPU 0 has 5 + 1 samples.
    let mut cpu0 = counts.clone();
    cpu0.push("-tagfocus=cpu=0");
    assert_contains(
        &g.run(&cpu0),
        &["Showing nodes accounting for 6, 13.64% of 44 total"],
    );
}

#[test]
fn small_profile_and_empty_profile_load() {
    let g = Pprof::new(&pprof::encode(&testdata::small()));
    let top = g.run(&["-top", "-sample_index=samples"]);
    assert_contains(&top, &["Showing nodes accounting for 6, 100% of 6 total"]);
    let g = Pprof::new(&pprof::encode(&profile::Profile::default()));
    let raw = g.run(&["-raw"]);
    assert!(raw.contains("samples/count cpu/nanoseconds"), "{raw}");
}
