//! The SVG flame graph opens as an interactive flame graph in a browser:
//! headless Chromium renders it (screenshot kept as
//! `target/test-artifacts/flamegraph.png`) and runs its JavaScript (a
//! search given in the URL highlights frames and reports the match).
//!
//! Needs Chromium (Debian `chromium`); fails, loudly, without it.

mod common;

use profile::testdata;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(o) = Command::new(name).arg("--version").output() {
            if o.status.success() {
                return PathBuf::from(name);
            }
        }
    }
    panic!(
        "Chromium is required for the flame graph browser test: \
         install Debian's chromium (apt-get install -y chromium)"
    );
}

/// Runs headless Chromium on `url` with `extra` arguments.
fn headless(url: &str, extra: &[&str]) -> std::process::Output {
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
        "--hide-scrollbars",
        "--window-size=1400,900",
        // Let the flame graph's load-time timers (text fitting) run.
        "--virtual-time-budget=2000",
    ])
    .arg(format!("--user-data-dir={}", profile_dir.path().display()))
    .args(extra)
    .arg(url)
    .env("HOME", profile_dir.path());
    let out = common::run(&mut cmd, Duration::from_secs(180));
    assert!(
        out.status.success(),
        "chromium failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// (fill color, frame name) of every frame rectangle in the SVG.
fn frame_fills(svg: &str) -> Vec<([u8; 3], String)> {
    let doc = roxmltree::Document::parse_with_options(
        svg,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .expect("the SVG is valid XML");
    doc.descendants()
        .filter(|n| n.has_tag_name("g"))
        .filter_map(|g| {
            let title = g.children().find(|n| n.has_tag_name("title"))?.text()?;
            let fill = g
                .children()
                .find(|n| n.has_tag_name("rect"))?
                .attribute("fill")?;
            let v: Vec<u8> = fill
                .strip_prefix("rgb(")?
                .strip_suffix(')')?
                .split(',')
                .map(|c| c.trim().parse().unwrap())
                .collect();
            Some(([v[0], v[1], v[2]], title.to_string()))
        })
        .collect()
}

/// Distinct RGB colors of a PNG, with its size.
fn png_colors(path: &Path) -> (u32, u32, HashSet<[u8; 3]>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG color type {other:?}"),
    };
    let colors = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, colors)
}

#[test]
fn renders_and_runs_in_headless_chromium() {
    let p = testdata::realistic();
    let title = "web-1: 44 samples in 5.0s at 100 Hz";
    let svg = profile::svg(&p, title).unwrap();
    let artifacts = common::artifacts_dir();
    let svg_path = artifacts.join("flamegraph.svg");
    std::fs::write(&svg_path, &svg).unwrap();
    let url = format!("file://{}", svg_path.display());

    // The screenshot: a real, colored flame graph.
    let tmp = tempfile::tempdir().unwrap();
    let shot = tmp.path().join("flamegraph.png");
    headless(&url, &[&format!("--screenshot={}", shot.display())]);
    let size = std::fs::metadata(&shot)
        .expect("chromium wrote the screenshot")
        .len();
    assert!(size > 10_000, "screenshot is only {size} bytes");
    std::fs::copy(&shot, artifacts.join("flamegraph.png")).unwrap();
    let (w, h, colors) = png_colors(&shot);
    assert_eq!((w, h), (1400, 900));
    assert!(
        colors.len() > 50,
        "a nearly blank screenshot: {} colors",
        colors.len()
    );
    // Every frame wide enough to see is painted in its own fill color.
    let fills = frame_fills(&svg);
    assert!(fills.len() > 20);
    for name in [
        "server (",
        "swapper/1 (",
        "handle_request (",
        "parse_header (",
        "tcp_recvmsg (",
        "native_safe_halt (",
        "blob+0x401234 (",
        "<unwinding aborted due to error native_no_unwind_info> (",
    ] {
        let (fill, _) = fills
            .iter()
            .find(|(_, t)| t.starts_with(name))
            .unwrap_or_else(|| panic!("no frame {name}"));
        assert!(
            colors.contains(fill),
            "{name} color {fill:?} is not on the screenshot"
        );
    }

    // The DOM after load: the JavaScript ran (fluid width, search from the
    // URL highlighted `walk`: 3 of 44 samples).
    let out = headless(&format!("{url}?s=walk"), &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains(title), "title in the DOM");
    assert!(
        dom.contains("Matched: 6.8%"),
        "search result in the DOM:\n{dom}"
    );
    let root = &dom[dom.find("<svg").unwrap()..];
    let root_tag = &root[..root.find('>').unwrap()];
    assert!(
        !root_tag.contains(" width="),
        "the script made the graph fluid (removed the width): {root_tag}"
    );
    assert!(svg[svg.find("<svg").unwrap()..]
        .split('>')
        .next()
        .unwrap()
        .contains(" width="));
}
