//! An interactive SVG flame graph, drawn by inferno from the folded stacks
//! of [`crate::folded()`]. The SVG carries inferno's JavaScript: click to zoom,
//! Ctrl-F / the Search button to highlight, hover for counts.
//!
//! inferno is licensed CDDL-1.0 (a file-level copyleft: its own source
//! files stay CDDL, code linking it keeps its own licence); it is used with
//! `default-features = false` (no CLI, no thread pool).
//!
//! Colors say what a frame is, each kind in its own hue with a shade picked
//! from a hash of the name (so a function keeps its color across graphs):
//!
//! | frames | hue |
//! | --- | --- |
//! | native | red to salmon |
//! | inlined native (`_[i]`) | aqua |
//! | kernel (`_[k]`) | amber to yellow |
//! | interpreted and JIT (Python, JVM, V8, ...) | green |
//! | unwinding errors | grey |
//! | the process name (second row) | light blue |
//! | inferno's `all` root | light grey |
//!
//! Search matches are highlighted in inferno's magenta, which no kind uses.
//!
//! The subtitle repeats this legend. Kernel and inlined frames carry the
//! `_[k]`/`_[i]` suffixes of the folded format; inferno hides them in the
//! labels.

use crate::folded::{collapse, Token};
use crate::{Error, FrameClass, Profile};
use inferno::flamegraph::color::{Color, PaletteMap};
use inferno::flamegraph::{self as inf, Options};

/// The legend shown under the title.
pub const LEGEND: &str = "native: red · inlined: aqua · kernel: amber · \
interpreted: green · errors: grey · process: light blue";

/// A title saying what the graph shows: host, sample count, duration and
/// frequency, e.g. `web-1: 44 samples in 5.0 s at 100 Hz`.
pub fn default_title(profile: &Profile) -> String {
    let host = if profile.host_name.is_empty() {
        "CPU profile"
    } else {
        &profile.host_name
    };
    format!(
        "{host}: {} samples in {:.1} s at {} Hz",
        profile.total_samples(),
        profile.duration_ns as f64 / 1e9,
        profile.frequency_hz
    )
}

/// The flame graph of a profile as an SVG document titled `title` (the
/// agent passes host, duration, frequency and sample count, see
/// [`default_title`]). Fails only when the profile has no samples to draw.
pub fn svg(profile: &Profile, title: &str) -> Result<String, Error> {
    let collapsed = collapse(profile);
    if collapsed.stacks.is_empty() {
        return Err(Error::Flamegraph(
            "the profile has no samples to draw".into(),
        ));
    }
    let mut palette = PaletteMap::default();
    for (name, token) in &collapsed.tokens {
        palette.insert(name, color_for(name, *token));
    }
    // inferno's root frame ("all") has the empty name; frame and process
    // names never are empty (see `Profile::frame_name`).
    let grey = Color {
        r: 200,
        g: 200,
        b: 200,
    };
    palette.insert("", grey);
    let lines: Vec<String> = collapsed
        .stacks
        .iter()
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect();

    let mut opt = Options::default();
    opt.title = title.to_string();
    opt.subtitle = Some(LEGEND.to_string());
    opt.count_name = "samples".to_string();
    opt.deterministic = true;
    opt.palette_map = Some(&mut palette);

    let mut out = Vec::new();
    inf::from_lines(&mut opt, lines.iter().map(String::as_str), &mut out)
        .map_err(|e| Error::Flamegraph(e.to_string()))?;
    String::from_utf8(out).map_err(|e| Error::Flamegraph(e.to_string()))
}

/// The color of one frame of the graph (see the module docs).
fn color_for(name: &str, token: Token) -> Color {
    let v = shade(name);
    let s = |base: u8, span: u8| base.saturating_add((f64::from(span) * v) as u8);
    let (r, g, b) = match token {
        Token::Process => (s(165, 25), s(190, 25), s(225, 25)),
        Token::Frame { class, inlined } => match class {
            FrameClass::Error => (s(125, 30), s(125, 30), s(125, 30)),
            FrameClass::Kernel => (s(225, 30), s(165, 50), s(0, 40)),
            FrameClass::Interpreted => (s(50, 60), s(190, 55), s(50, 60)),
            FrameClass::Native if inlined => (s(50, 60), s(175, 50), s(175, 50)),
            FrameClass::Native => (s(205, 50), s(50, 80), s(50, 30)),
        },
    };
    Color { r, g, b }
}

/// A value in [0, 1) from the name (FNV-1a), for the shade within a hue.
fn shade(name: &str) -> f64 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    f64::from(h % 1000) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;
    use std::collections::BTreeMap;

    /// Frame tooltip name (without the counts) → fill color, for every
    /// frame of the graph.
    fn frames(svg: &str) -> BTreeMap<String, (u8, u8, u8)> {
        let opts = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        };
        let doc = roxmltree::Document::parse_with_options(svg, opts).expect("valid XML");
        let mut out = BTreeMap::new();
        for g in doc.descendants().filter(|n| n.has_tag_name("g")) {
            let title = g.children().find(|n| n.has_tag_name("title"));
            let rect = g.children().find(|n| n.has_tag_name("rect"));
            if let (Some(t), Some(r)) = (title, rect) {
                let text = t.text().unwrap();
                let name = text[..text.rfind(" (").unwrap()].to_string();
                let fill = r.attribute("fill").unwrap();
                let v: Vec<u8> = fill
                    .trim_start_matches("rgb(")
                    .trim_end_matches(')')
                    .split(',')
                    .map(|c| c.trim().parse().unwrap())
                    .collect();
                out.insert(name, (v[0], v[1], v[2]));
            }
        }
        out
    }

    /// Which documented hue a color is in.
    fn hue((r, g, b): (u8, u8, u8)) -> &'static str {
        let within = |v: u8, lo: u8, hi: u8| (lo..=hi).contains(&v);
        if within(r, 205, 255) && within(g, 50, 130) && within(b, 50, 80) {
            "native"
        } else if within(r, 50, 110) && within(g, 175, 225) && within(b, 175, 225) {
            "inlined"
        } else if within(r, 225, 255) && within(g, 165, 215) && within(b, 0, 40) {
            "kernel"
        } else if within(r, 50, 110) && within(g, 190, 245) && within(b, 50, 110) {
            "interpreted"
        } else if r == g && g == b && within(r, 125, 155) {
            "error"
        } else if within(r, 165, 190) && within(g, 190, 215) && within(b, 225, 250) {
            "process"
        } else {
            "other"
        }
    }

    #[test]
    fn valid_svg_with_title_names_and_colors_by_type() {
        let svg = svg(&testdata::realistic(), "web-1: 44 samples").unwrap();
        assert!(svg.contains("web-1: 44 samples"));
        assert!(svg.contains(LEGEND));
        assert!(
            svg.contains("function zoom("),
            "inferno's JavaScript is embedded"
        );
        let frames = frames(&svg);
        let expect = [
            ("server", "process"),
            ("swapper/1", "process"),
            ("main", "native"),
            ("walk", "native"),
            ("__clone3", "native"),
            ("blob+0x401234", "native"),
            ("blob+0x402000", "native"),
            ("parse_header", "inlined"),
            ("crc32_update", "inlined"),
            ("tcp_recvmsg", "kernel"),
            ("native_safe_halt", "kernel"),
            ("[kernel]+0xffffffff81112233", "kernel"),
            ("compute", "interpreted"),
            ("<module>", "interpreted"),
            (
                "<unwinding aborted due to error native_no_unwind_info>",
                "error",
            ),
        ];
        for (name, kind) in expect {
            let color = *frames
                .get(name)
                .unwrap_or_else(|| panic!("{name} not in {frames:?}"));
            assert_eq!(hue(color), kind, "{name}: {color:?}");
        }
        // Every frame has a documented hue, inferno's root light grey.
        for (name, c) in &frames {
            assert!(name == "all" || hue(*c) != "other", "{name}: {c:?}");
        }
        assert_eq!(frames["all"], (200, 200, 200));
        // Deterministic.
        assert_eq!(
            svg,
            super::svg(&testdata::realistic(), "web-1: 44 samples").unwrap()
        );
    }

    #[test]
    fn default_titles() {
        assert_eq!(
            default_title(&testdata::realistic()),
            "web-1: 44 samples in 5.0 s at 100 Hz"
        );
        assert_eq!(
            default_title(&Profile::default()),
            "CPU profile: 0 samples in 0.0 s at 0 Hz"
        );
    }

    #[test]
    fn title_is_escaped() {
        let svg = svg(&testdata::small(), "a < b & \"c\"").unwrap();
        assert!(svg.contains("a &lt; b &amp; "));
        frames(&svg);
    }

    #[test]
    fn empty_profile_is_an_error() {
        let e = svg(&Profile::default(), "t").unwrap_err();
        assert!(e.to_string().contains("no samples"));
    }
}
