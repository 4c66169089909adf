//! End to end in headless Chromium: the router served on 127.0.0.1 with the
//! demo workload, the page loaded by a real browser, and the rendered DOM
//! checked — it loads, the flame graph shows the workload's functions, a
//! filter narrows it, search highlights, zoom and the diff view draw.
//!
//! The page keeps its whole state in the URL, so each state is one
//! `chromium --dump-dom URL` (with a virtual-time budget so the page's
//! fetches finish before the dump). Screenshots are kept under
//! `target/test-artifacts/` for a person to look at.
//!
//! Needs Debian's `chromium` (or `$CHROMIUM`); fails loudly without it.

mod common;

use common::{fixture, Fixture};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "headless Chromium is required for the web end-to-end test and was not found: \
         install it with `apt-get install -y chromium` (or set CHROMIUM=/path/to/chrome)"
    );
}

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs Chromium headless on `url` with extra args; returns stdout. Killed
/// (and the test failed) if it takes longer than a minute.
fn run_chromium(url: &str, extra: &[String]) -> String {
    let profile_dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--virtual-time-budget=20000",
        "--window-size=1400,900",
    ])
    .arg(format!("--user-data-dir={}", profile_dir.path().display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("starting chromium");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut { stdout }, &mut s).unwrap();
        s
    });
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = reader.join().unwrap();
            assert!(status.success(), "chromium failed on {url}: {status}");
            return out;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish {url} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A drawn flame graph box: its classes and frame name.
#[derive(Debug)]
struct Box {
    class: String,
    text: String,
}

/// The boxes inside the element with id `container` of a dumped DOM.
fn boxes(dom: &str, container: &str) -> Vec<Box> {
    let start = dom
        .find(&format!("id=\"{container}\""))
        .unwrap_or_else(|| panic!("no #{container} in the DOM"));
    let section = &dom[start..];
    // The flame container holds only boxes; it ends at the first
    // closing tag that is not a box's.
    let mut out = Vec::new();
    let mut rest = &section[section.find('>').unwrap() + 1..];
    while let Some(tail) = rest.strip_prefix("<div class=\"") {
        let class_end = tail.find('"').unwrap();
        let class = tail[..class_end].to_string();
        let open_end = tail.find('>').unwrap();
        let text_end = tail[open_end..].find("</div>").unwrap() + open_end;
        // The name is in `data-n` (narrow boxes draw no label).
        let tag = &tail[..open_end];
        let text = tag
            .find("data-n=\"")
            .map(|i| &tag[i + 8..])
            .map(|v| &v[..v.find('"').unwrap()])
            .unwrap_or("")
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        out.push(Box { class, text });
        rest = &tail[text_end + "</div>".len()..];
    }
    out
}

fn frames(dom: &str, container: &str) -> Vec<Box> {
    boxes(dom, container)
        .into_iter()
        .filter(|b| b.class.split(' ').any(|c| c == "fr"))
        .collect()
}

fn attr<'a>(dom: &'a str, tag_start: &str, name: &str) -> Option<&'a str> {
    let at = dom.find(tag_start)?;
    let tag = &dom[at..at + dom[at..].find('>')?];
    let key = format!("{name}=\"");
    let v = &tag[tag.find(&key)? + key.len()..];
    Some(&v[..v.find('"')?])
}

fn names(frames: &[Box]) -> Vec<&str> {
    frames.iter().map(|b| b.text.as_str()).collect()
}

#[test]
fn page_in_headless_chromium() {
    let chromium_path = chromium();
    let f = fixture();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = web::router(f.store.clone());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    let base = format!("http://{addr}");
    eprintln!("serving on {base}, chromium {}", chromium_path.display());

    // 1. It loads, and the flame graph shows the workload.
    let dom = run_chromium(&format!("{base}/"), &["--dump-dom".into()]);
    assert_eq!(
        attr(&dom, "<body", "data-state"),
        Some("ready"),
        "page did not finish loading:\n{dom}"
    );
    assert_eq!(
        attr(&dom, "<body", "data-total"),
        Some(f.total().to_string().as_str())
    );
    let all = frames(&dom, "flame");
    let n = names(&all);
    for want in [
        "all",
        "main",
        "chain_a",
        "chain_b",
        "chain_c",
        "vfs_write",
        "entry_SYSCALL_64",
        "handle_query",
        "dumps",
    ] {
        assert!(
            n.contains(&want),
            "{want} missing from the flame graph: {n:?}"
        );
    }
    let class_of = |name: &str| all.iter().find(|b| b.text == name).unwrap().class.clone();
    assert!(class_of("vfs_write").contains("k-kernel"));
    assert!(class_of("chain_b").contains("k-native"));
    assert!(class_of("dumps").contains("k-interpreted"));
    let err = profile::error_frame_name(3);
    assert!(class_of(&err).contains("k-error"));
    // The top-functions table is filled, biggest self first.
    let top = &dom[dom.find("id=\"top\"").unwrap()..];
    let first_fn = &top[top.find("<td class=\"fn\"").unwrap()..];
    assert!(
        first_fn[first_fn.find('>').unwrap() + 1..].starts_with("chain_c<"),
        "{}",
        &first_fn[..200]
    );
    // Filters were populated from /api/filters.
    assert!(dom.contains("<option value=\"db\">db</option>"));
    assert!(dom.contains("<option value=\"c0ffee\">c0ffee</option>"));
    // The download link carries the current view.
    let pprof = attr(&dom, "<a id=\"pprof\"", "href").unwrap();
    assert!(pprof.starts_with("/api/pprof?from="), "{pprof}");

    // 2. A filter narrows it: only the db process.
    let dom = run_chromium(&format!("{base}/?process=db"), &["--dump-dom".into()]);
    assert_eq!(attr(&dom, "<body", "data-state"), Some("ready"));
    assert_eq!(attr(&dom, "<body", "data-total"), Some("60"));
    let n: Vec<String> = frames(&dom, "flame").into_iter().map(|b| b.text).collect();
    assert!(
        n.iter().any(|s| s == "dumps") && n.iter().any(|s| s == "handle_query"),
        "{n:?}"
    );
    assert!(
        !n.iter().any(|s| s == "chain_b" || s == "vfs_write"),
        "filter did not narrow: {n:?}"
    );
    assert!(attr(&dom, "<a id=\"pprof\"", "href")
        .unwrap()
        .contains("process=db"));
    let dom_kernel = run_chromium(
        &format!("{base}/?frame_type=kernel"),
        &["--dump-dom".into()],
    );
    assert_eq!(attr(&dom_kernel, "<body", "data-total"), Some("40"));

    // 3. Search highlights the matches, and only them.
    let url = format!("{base}/?search=chain_b");
    let dom = run_chromium(&url, &["--dump-dom".into()]);
    let fr = frames(&dom, "flame");
    let matched: Vec<&Box> = fr
        .iter()
        .filter(|b| b.class.split(' ').any(|c| c == "match"))
        .collect();
    assert!(!matched.is_empty(), "nothing highlighted");
    assert!(
        matched.iter().all(|b| b.text.contains("chain_b")),
        "{matched:?}"
    );
    assert!(fr
        .iter()
        .filter(|b| b.text == "chain_b")
        .all(|b| b.class.contains("match")));
    assert!(attr(&dom, "<div id=\"flame\"", "class")
        .unwrap()
        .contains("searching"));
    // chain_b is under 80 + 300 of the 500 samples: the page says so.
    let matched_samples = attr(&dom, "<span id=\"match-info\"", "data-matched").unwrap();
    assert_eq!(matched_samples, "380");
    run_chromium(
        &url,
        &[format!(
            "--screenshot={}",
            artifacts().join("web-flamegraph-search.png").display()
        )],
    );

    // 4. Zoom: main → chain_a fills the width, its ancestors sit above.
    let dom = run_chromium(
        &format!("{base}/?zoom=main;chain_a"),
        &["--dump-dom".into()],
    );
    let fr = frames(&dom, "flame");
    let ancestors: Vec<&str> = fr
        .iter()
        .filter(|b| b.class.contains("ancestor"))
        .map(|b| b.text.as_str())
        .collect();
    assert_eq!(ancestors, ["all", "main"]);
    assert!(!fr.iter().any(|b| b.text == "serve"), "zoomed out of view");
    assert!(fr.iter().any(|b| b.text == "chain_c"));

    // 5. The diff view of B against A.
    let (af, at) = Fixture::range_ms(&f.a);
    let (bf, bt) = Fixture::range_ms(&f.b);
    let url = format!("{base}/?view=diff&from={bf}&to={bt}&a_from={af}&a_to={at}");
    let dom = run_chromium(&url, &["--dump-dom".into()]);
    assert_eq!(attr(&dom, "<body", "data-state"), Some("ready"), "{dom}");
    let n: Vec<String> = frames(&dom, "diff-flame")
        .into_iter()
        .map(|b| b.text)
        .collect();
    assert!(n.iter().any(|s| s == "chain_c"), "{n:?}");
    let diff_table = &dom[dom.find("id=\"diff-top\"").unwrap()..];
    let first = &diff_table[diff_table.find("<td class=\"fn\"").unwrap()..];
    assert!(first[first.find('>').unwrap() + 1..].starts_with("chain_c<"));
    run_chromium(
        &url,
        &[format!(
            "--screenshot={}",
            artifacts().join("web-diff.png").display()
        )],
    );

    // 6. A range without data says so and offers the stored range; a bad
    //    parameter shows the API's error instead of a blank page.
    let dom = run_chromium(
        &format!("{base}/?from=1000&to=2000"),
        &["--dump-dom".into()],
    );
    assert_eq!(attr(&dom, "<body", "data-state"), Some("ready"));
    assert_eq!(attr(&dom, "<body", "data-total"), Some("0"));
    assert!(dom.contains("No samples in this range"), "{dom}");
    assert!(dom.contains("show the last hour of stored data"));
    let dom = run_chromium(&format!("{base}/?pid=abc"), &["--dump-dom".into()]);
    assert_eq!(attr(&dom, "<body", "data-state"), Some("error"));
    let err = &dom[dom.find("id=\"error\"").unwrap()..];
    assert!(
        err[..err.find("</div>").unwrap()].contains("pid=\"abc\" is not a valid number"),
        "{err}"
    );

    // The screenshot of the default view, for a person to look at.
    let shot = artifacts().join("web-flamegraph.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &format!("{base}/"),
        &[format!("--screenshot={}", shot.display())],
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        png.len() > 20_000,
        "suspiciously small screenshot: {} bytes",
        png.len()
    );
}
