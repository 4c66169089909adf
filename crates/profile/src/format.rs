//! Picking a writer: from an output file name or a `--format` value.

use crate::{Error, Profile};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// A local output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Gzipped pprof protobuf ([`crate::pprof::encode`]).
    Pprof,
    /// Interactive SVG flame graph ([`crate::svg`]).
    Flamegraph,
    /// Folded stacks ([`crate::folded()`]).
    Folded,
    /// Aggregated stacks as JSON ([`crate::json()`]).
    Json,
}

impl Format {
    /// Every format, in the order `--help` lists them.
    pub const ALL: [Format; 4] = [
        Format::Pprof,
        Format::Flamegraph,
        Format::Folded,
        Format::Json,
    ];

    /// The canonical `--format` name.
    pub const fn name(self) -> &'static str {
        match self {
            Format::Pprof => "pprof",
            Format::Flamegraph => "svg",
            Format::Folded => "folded",
            Format::Json => "json",
        }
    }

    /// The usual file extension (without the dot).
    pub const fn extension(self) -> &'static str {
        match self {
            Format::Pprof => "pb.gz",
            Format::Flamegraph => "svg",
            Format::Folded => "folded",
            Format::Json => "json",
        }
    }

    /// Writes `profile` in this format. `title` is used by the flame graph
    /// only. Fails only for a flame graph of a profile without samples.
    pub fn render(self, profile: &Profile, title: &str) -> Result<Vec<u8>, Error> {
        Ok(match self {
            Format::Pprof => crate::pprof::encode(profile),
            Format::Flamegraph => crate::svg(profile, title)?.into_bytes(),
            Format::Folded => crate::folded(profile).into_bytes(),
            Format::Json => crate::json(profile).into_bytes(),
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--format` value that names no format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownFormat(pub String);

impl fmt::Display for UnknownFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown output format {:?} (expected pprof, svg, folded or json)",
            self.0
        )
    }
}

impl std::error::Error for UnknownFormat {}

/// Case-insensitive: `pprof` (or `pb`, `proto`), `svg` (or `flamegraph`),
/// `folded` (or `collapsed`, `txt`), `json`.
impl FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pprof" | "pb" | "pb.gz" | "proto" => Ok(Format::Pprof),
            "svg" | "flamegraph" | "flame-graph" => Ok(Format::Flamegraph),
            "folded" | "collapsed" | "txt" => Ok(Format::Folded),
            "json" => Ok(Format::Json),
            _ => Err(UnknownFormat(s.to_string())),
        }
    }
}

/// The format a file name asks for, by its extension (case-insensitive):
/// `.pb.gz`, `.pb`, `.pprof` and `.pprof.gz` → pprof, `.svg` → flame graph, `.folded`,
/// `.collapsed` and `.txt` → folded, `.json` → JSON; `None` otherwise.
pub fn format_for_path(path: impl AsRef<Path>) -> Option<Format> {
    let name = path.as_ref().file_name()?.to_str()?.to_ascii_lowercase();
    let ends = |ext: &str| {
        name.len() > ext.len()
            && name.ends_with(ext)
            && name.as_bytes()[name.len() - ext.len() - 1] == b'.'
    };
    if ends("pb.gz") || ends("pb") || ends("pprof") || ends("pprof.gz") {
        Some(Format::Pprof)
    } else if ends("svg") {
        Some(Format::Flamegraph)
    } else if ends("folded") || ends("collapsed") || ends("txt") {
        Some(Format::Folded)
    } else if ends("json") {
        Some(Format::Json)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_extension() {
        for (path, f) in [
            ("out.pb.gz", Some(Format::Pprof)),
            ("/tmp/x/CPU.PB.GZ", Some(Format::Pprof)),
            ("a.pprof", Some(Format::Pprof)),
            ("a.pprof.gz", Some(Format::Pprof)),
            ("a.pb", Some(Format::Pprof)),
            ("flame.svg", Some(Format::Flamegraph)),
            ("stacks.folded", Some(Format::Folded)),
            ("stacks.collapsed", Some(Format::Folded)),
            ("stacks.txt", Some(Format::Folded)),
            ("p.json", Some(Format::Json)),
            ("p.gz", None),
            ("svg", None),
            ("dir.svg/profile", None),
            ("profile", None),
        ] {
            assert_eq!(format_for_path(path), f, "{path}");
        }
    }

    #[test]
    fn from_str_and_display() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>(), Ok(f));
            assert_eq!(f.to_string(), f.name());
            assert_eq!(format_for_path(format!("x.{}", f.extension())), Some(f));
        }
        assert_eq!("FlameGraph".parse::<Format>(), Ok(Format::Flamegraph));
        assert_eq!("collapsed".parse::<Format>(), Ok(Format::Folded));
        let err = "html".parse::<Format>().unwrap_err();
        assert_eq!(err, UnknownFormat("html".into()));
        assert!(err.to_string().contains("pprof, svg, folded or json"));
    }

    #[test]
    fn render_matches_writers() {
        let p = crate::testdata::small();
        assert_eq!(
            Format::Folded.render(&p, "t").unwrap(),
            crate::folded(&p).into_bytes()
        );
        assert_eq!(
            Format::Json.render(&p, "t").unwrap(),
            crate::json(&p).into_bytes()
        );
        let pb = Format::Pprof.render(&p, "t").unwrap();
        assert_eq!(
            crate::pprof::decode(&pb).unwrap(),
            crate::pprof::to_proto(&p)
        );
        let svg = String::from_utf8(Format::Flamegraph.render(&p, "my title").unwrap()).unwrap();
        assert!(svg.contains("my title"));
        assert!(Format::Flamegraph
            .render(&crate::Profile::default(), "t")
            .is_err());
    }
}
