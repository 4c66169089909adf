//! Folded stacks, the input of flamegraph.pl, inferno, speedscope and
//! friends: one line per distinct stack, `comm;root;…;leaf count`.
//!
//! * The first element is the process name (`[pid N]` when it is empty);
//!   samples of the same process name are merged whatever their pid,
//!   thread, CPU or container (the JSON and pprof outputs keep those).
//! * Then the frames root first, named by
//!   [`Profile::frame_name`](crate::Profile::frame_name). Kernel frames get
//!   the `_[k]` suffix and inlined frames are frames of their own with the
//!   `_[i]` suffix, the annotations of stackcollapse-perf.pl that
//!   flame-graph tools color by and hide from the labels.
//! * `;` in a name becomes `:` and line breaks become spaces, so every line
//!   parses back.
//! * Identical lines are merged (counts added) and the lines are sorted
//!   bytewise, so the output is deterministic.

use crate::{FrameClass, Profile};
use std::collections::BTreeMap;

/// The folded-stacks text of a profile (see the module docs).
pub fn folded(profile: &Profile) -> String {
    let mut out = String::new();
    for (line, count) in collapse(profile).stacks {
        out.push_str(&line);
        out.push(' ');
        out.push_str(&count.to_string());
        out.push('\n');
    }
    out
}

/// How a folded frame was made, for coloring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    Process,
    Frame { class: FrameClass, inlined: bool },
}

pub(crate) struct Collapsed {
    /// Folded line (without the count) → count.
    pub stacks: BTreeMap<String, u64>,
    /// Every element of a line → what it is (the first kind seen wins).
    pub tokens: BTreeMap<String, Token>,
}

pub(crate) fn collapse(profile: &Profile) -> Collapsed {
    let mut stacks: BTreeMap<String, u64> = BTreeMap::new();
    let mut tokens: BTreeMap<String, Token> = BTreeMap::new();
    let mut line = String::new();
    for s in &profile.samples {
        line.clear();
        let comm = sanitize(&s.labels.process_display_name());
        line.push_str(&comm);
        tokens.entry(comm).or_insert(Token::Process);
        for f in s.frames.iter().rev() {
            let class = FrameClass::of(f);
            let mut name = sanitize(&profile.frame_name(f));
            if class == FrameClass::Kernel {
                name.push_str("_[k]");
            } else if f.inlined {
                name.push_str("_[i]");
            }
            line.push(';');
            line.push_str(&name);
            tokens.entry(name).or_insert(Token::Frame {
                class,
                inlined: f.inlined,
            });
        }
        match stacks.get_mut(line.as_str()) {
            Some(c) => *c += s.count,
            None => {
                stacks.insert(line.clone(), s.count);
            }
        }
    }
    stacks.retain(|_, c| *c > 0);
    Collapsed { stacks, tokens }
}

/// Folded format uses `;` between frames, a space before the count and a
/// line per stack.
fn sanitize(s: &str) -> String {
    s.replace(';', ":").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{self, labels, native, sample, SERVER};

    #[test]
    fn small_profile_exact() {
        assert_eq!(
            folded(&testdata::small()),
            "server;main;do_syscall_64_[k] 2\n\
             server;main;parse;parse_header_[i] 3\n\
             tool;<unwinding aborted due to error native_no_unwind_info> 1\n"
        );
    }

    #[test]
    fn error_frames_are_named_from_the_spec() {
        let [no_mapping, length, unknown] = testdata::ERROR_FRAME_NAMES;
        assert_eq!(
            folded(&testdata::errors()),
            format!(
                "server;main;{unknown} 3\n\
                 server;main;{no_mapping} 1\n\
                 server;main;{length} 2\n"
            )
        );
    }

    #[test]
    fn merges_processes_of_one_name_and_sanitizes() {
        let mut p = testdata::small();
        let main = native(SERVER, 0x1800, "main", Some(("server.c", 20)));
        let odd = native(SERVER, 0x1900, "a;b\nc", None);
        p.samples = vec![
            sample(vec![main.clone()], labels(1, 1, "server", "a", 0), 2),
            sample(vec![main.clone()], labels(7, 8, "server", "b", 3), 5),
            sample(vec![odd, main.clone()], labels(9, 9, "", "", 0), 1),
            sample(vec![main], labels(9, 9, "zero", "", 0), 0),
        ];
        assert_eq!(folded(&p), "[pid 9];main;a:b c 1\nserver;main 7\n");
    }

    #[test]
    fn unsymbolized_frames_are_named() {
        let p = testdata::realistic();
        let text = folded(&p);
        assert!(text.contains(
            "vendor;<unwinding aborted due to error native_no_unwind_info>;blob+0x402000;blob+0x401234 4\n"
        ));
        assert!(text.contains(";[kernel]+0xffffffff81112233_[k];"));
        assert!(text.contains("python3;<module>;compute 1\n"));
        // Every line is `stack count` and the counts add up.
        let total: u64 = text
            .lines()
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, p.total_samples());
    }
}
