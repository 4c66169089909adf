//! The functions that used the most CPU, like `perf report`'s or `go tool
//! pprof -top`'s summary.
//!
//! A function is a (name, module) pair: name from
//! [`Profile::frame_name`](crate::Profile::frame_name), module from
//! [`Profile::module_name`](crate::Profile::module_name) (executable base
//! name, `[kernel]`, `[cpython]`, `[error]`…). Inlined functions count as
//! functions of their own.
//!
//! * `self_samples`: samples whose leaf frame is the function (for inlined
//!   code, the innermost inlined function);
//! * `total_samples`: samples with the function anywhere in the stack,
//!   counted once per stack however often it recurses;
//! * percentages are of all the profile's samples.
//!
//! Rows are ordered by self samples, then total samples (both descending),
//! then function and module names.

use crate::Profile;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// One function's share of the profile.
#[derive(Clone, Debug, PartialEq)]
pub struct TopRow {
    pub function: String,
    pub module: String,
    pub self_samples: u64,
    pub total_samples: u64,
    pub self_pct: f64,
    pub total_pct: f64,
}

/// The `n` functions with the most self samples (`usize::MAX` for all).
pub fn top_functions(profile: &Profile, n: usize) -> Vec<TopRow> {
    type Key<'a> = (Cow<'a, str>, Cow<'a, str>);
    let mut counts: HashMap<Key<'_>, (u64, u64)> = HashMap::new();
    let mut seen: HashSet<Key<'_>> = HashSet::new();
    for s in &profile.samples {
        if s.count == 0 {
            continue;
        }
        seen.clear();
        for (i, f) in s.frames.iter().enumerate() {
            let key = (profile.frame_name(f), profile.module_name(f));
            let first = !seen.contains(&key);
            if i == 0 || first {
                let e = counts.entry(key.clone()).or_default();
                if i == 0 {
                    e.0 += s.count;
                }
                if first {
                    e.1 += s.count;
                    seen.insert(key);
                }
            }
        }
    }
    let total = profile.total_samples();
    let pct = |v: u64| {
        if total == 0 {
            0.0
        } else {
            100.0 * v as f64 / total as f64
        }
    };
    let mut rows: Vec<TopRow> = counts
        .into_iter()
        .map(
            |((function, module), (self_samples, total_samples))| TopRow {
                function: function.into_owned(),
                module: module.into_owned(),
                self_samples,
                total_samples,
                self_pct: pct(self_samples),
                total_pct: pct(total_samples),
            },
        )
        .collect();
    rows.sort_by(|a, b| {
        b.self_samples
            .cmp(&a.self_samples)
            .then_with(|| b.total_samples.cmp(&a.total_samples))
            .then_with(|| a.function.cmp(&b.function))
            .then_with(|| a.module.cmp(&b.module))
    });
    rows.truncate(n);
    rows
}

/// The rows as an aligned table with a header line: counts and
/// percentages right-aligned, function names left-aligned, one row a line.
///
/// ```text
///  self  self%  total  total%  function  module
///     3  60.0%      3   60.0%  parse     server
/// ```
pub fn format_top(rows: &[TopRow]) -> String {
    let header = ["self", "self%", "total", "total%", "function", "module"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.self_samples.to_string(),
                format!("{:.1}%", r.self_pct),
                r.total_samples.to_string(),
                format!("{:.1}%", r.total_pct),
                r.function.clone(),
                r.module.clone(),
            ]
        })
        .collect();
    let mut width = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |row: [&str; 6]| {
        let mut l = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = width[i] - cell.chars().count();
            match i {
                0..=3 => {
                    l.push_str(&" ".repeat(pad));
                    l.push_str(cell);
                    l.push_str("  ");
                }
                4 => {
                    l.push_str(cell);
                    l.push_str(&" ".repeat(pad));
                    l.push_str("  ");
                }
                _ => l.push_str(cell),
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header);
    for row in &cells {
        line(row.each_ref().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    fn row(function: &str, module: &str, s: u64, t: u64, total: f64) -> TopRow {
        TopRow {
            function: function.into(),
            module: module.into(),
            self_samples: s,
            total_samples: t,
            self_pct: 100.0 * s as f64 / total,
            total_pct: 100.0 * t as f64 / total,
        }
    }

    #[test]
    fn small_profile_exact() {
        let rows = top_functions(&testdata::small(), 10);
        let err = "<unwinding aborted due to error native_no_unwind_info>";
        assert_eq!(
            rows,
            [
                row("parse_header", "server", 3, 3, 6.0),
                row("do_syscall_64", "[kernel]", 2, 2, 6.0),
                row(err, "[error]", 1, 1, 6.0),
                row("main", "server", 0, 5, 6.0),
                row("parse", "server", 0, 3, 6.0),
            ]
        );
        assert_eq!(
            format_top(&rows),
            "\
self  self%  total  total%  function                                                module
   3  50.0%      3   50.0%  parse_header                                            server
   2  33.3%      2   33.3%  do_syscall_64                                           [kernel]
   1  16.7%      1   16.7%  <unwinding aborted due to error native_no_unwind_info>  [error]
   0   0.0%      5   83.3%  main                                                    server
   0   0.0%      3   50.0%  parse                                                   server
"
        );
        assert_eq!(top_functions(&testdata::small(), 2), rows[..2]);
    }

    #[test]
    fn recursion_counts_once_in_total() {
        let p = testdata::realistic();
        let rows = top_functions(&p, usize::MAX);
        let get = |f: &str| rows.iter().find(|r| r.function == f).unwrap();
        // walk appears three times in one stack of 3 samples.
        assert_eq!(
            (get("walk").self_samples, get("walk").total_samples),
            (3, 3)
        );
        // handle_request is in the recv (5), parse (7 + 2) and walk (3) stacks.
        assert_eq!(get("handle_request").total_samples, 17);
        assert_eq!(get("handle_request").self_samples, 0);
        assert_eq!(get("blob+0x402000").module, "blob");
        assert_eq!(get("compute").module, "[cpython]");
        let self_sum: u64 = rows.iter().map(|r| r.self_samples).sum();
        assert_eq!(self_sum, p.total_samples());
        assert!(rows.iter().all(|r| r.total_samples >= r.self_samples));
        assert!((get("native_safe_halt").self_pct - 50.0).abs() < 1e-9);
    }

    #[test]
    fn empty_profile() {
        let p = crate::Profile::default();
        assert!(top_functions(&p, 10).is_empty());
        assert_eq!(
            format_top(&[]),
            "self  self%  total  total%  function  module\n"
        );
    }
}
