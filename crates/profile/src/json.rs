//! JSON for scripts: the profile's stacks aggregated (identical frames and
//! labels merged, counts added), most samples first.
//!
//! ```json
//! {
//!   "host_name": "web-1", "start_unix_ns": 1700000000000000000,
//!   "duration_ns": 10000000000, "frequency_hz": 99, "period_ns": 10101010,
//!   "total_samples": 7,
//!   "executables": [{"file_id": "…", "path": "/usr/bin/server",
//!     "gnu_build_id": "…" | null, "vaddr_start": "0x1000", "vaddr_end": "0x9000"}],
//!   "stacks": [{
//!     "count": 5,
//!     "labels": {"pid": 1, "tid": 1, "process_name": "server",
//!       "thread_name": "worker", "cpu": 0 | null, "container_id": null,
//!       "executable_path": "/usr/bin/server" | null},
//!     "frames": [{"name": "parse", "file": "parse.c" | null, "line": 42 | null,
//!       "type": "native", "error": false, "inlined": true,
//!       "module": "server", "address": "0x1234", "file_id": "…" | null}]
//!   }]
//! }
//! ```
//!
//! * `frames` are leaf first, as in the model; inlined functions are frames
//!   of their own (`inlined: true`), innermost first, followed by the frame
//!   they were inlined into (same `address`).
//! * `name` is [`Profile::frame_name`](crate::Profile::frame_name); `type`
//!   the OpenTelemetry frame type (`native`, `kernel`, `cpython`, …,
//!   `abort-marker`), `error` whether the frame is an unwinding error;
//!   `module` is [`Profile::module_name`](crate::Profile::module_name).
//! * Addresses (which can exceed 2^53) are hex strings; FileIDs are hex.
//! * Every key is always present; unknown values are `null`.
//! * Ties in `count` are ordered by process name, pid, tid, then frames, so
//!   the output is deterministic. Per-sample timestamps are left out.

use crate::{FrameClass, Profile, SampleLabels};
use libpf::Frame;
use serde::Serialize;
use std::collections::HashMap;

#[derive(Serialize)]
struct Doc<'a> {
    host_name: &'a str,
    start_unix_ns: u64,
    duration_ns: u64,
    frequency_hz: u64,
    period_ns: u64,
    total_samples: u64,
    executables: Vec<ExecutableOut<'a>>,
    stacks: Vec<StackOut<'a>>,
}

#[derive(Serialize)]
struct ExecutableOut<'a> {
    file_id: String,
    path: &'a str,
    gnu_build_id: Option<&'a str>,
    vaddr_start: String,
    vaddr_end: String,
}

#[derive(Serialize)]
struct StackOut<'a> {
    count: u64,
    labels: LabelsOut<'a>,
    frames: Vec<FrameOut>,
}

#[derive(Serialize)]
struct LabelsOut<'a> {
    pid: u32,
    tid: u32,
    process_name: &'a str,
    thread_name: &'a str,
    cpu: Option<u32>,
    container_id: Option<&'a str>,
    executable_path: Option<&'a str>,
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct FrameOut {
    name: String,
    file: Option<String>,
    line: Option<u32>,
    r#type: String,
    error: bool,
    inlined: bool,
    module: String,
    address: String,
    file_id: Option<String>,
}

/// The JSON document of a profile (see the module docs), compact, ending
/// with a newline.
pub fn json(profile: &Profile) -> String {
    // Aggregate identical (labels, frames).
    let mut index: HashMap<(&SampleLabels, &[Frame]), usize> = HashMap::new();
    let mut agg: Vec<(&SampleLabels, &[Frame], u64)> = Vec::new();
    for s in &profile.samples {
        match index.get(&(&s.labels, &s.frames[..])) {
            Some(&i) => agg[i].2 += s.count,
            None => {
                index.insert((&s.labels, &s.frames[..]), agg.len());
                agg.push((&s.labels, &s.frames[..], s.count));
            }
        }
    }
    let mut stacks: Vec<StackOut<'_>> = agg
        .into_iter()
        .filter(|&(_, _, count)| count > 0)
        .map(|(l, frames, count)| StackOut {
            count,
            labels: LabelsOut {
                pid: l.pid,
                tid: l.tid,
                process_name: &l.process_name,
                thread_name: &l.thread_name,
                cpu: l.cpu,
                container_id: l.container_id.as_deref(),
                executable_path: l.executable_path.as_deref(),
            },
            frames: frames.iter().map(|f| frame_out(profile, f)).collect(),
        })
        .collect();
    stacks.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.labels.process_name.cmp(b.labels.process_name))
            .then_with(|| a.labels.pid.cmp(&b.labels.pid))
            .then_with(|| a.labels.tid.cmp(&b.labels.tid))
            .then_with(|| a.labels.thread_name.cmp(b.labels.thread_name))
            .then_with(|| a.labels.cpu.cmp(&b.labels.cpu))
            .then_with(|| a.labels.container_id.cmp(&b.labels.container_id))
            .then_with(|| a.labels.executable_path.cmp(&b.labels.executable_path))
            .then_with(|| a.frames.cmp(&b.frames))
    });
    let doc = Doc {
        host_name: &profile.host_name,
        start_unix_ns: profile.start_unix_ns,
        duration_ns: profile.duration_ns,
        frequency_hz: profile.frequency_hz,
        period_ns: profile.period_ns(),
        total_samples: profile.total_samples(),
        executables: profile
            .executables
            .values()
            .map(|e| ExecutableOut {
                file_id: e.file_id.to_string(),
                path: &e.path,
                gnu_build_id: e.gnu_build_id.as_deref(),
                vaddr_start: format!("{:#x}", e.vaddr_start),
                vaddr_end: format!("{:#x}", e.vaddr_end),
            })
            .collect(),
        stacks,
    };
    let mut s = serde_json::to_string(&doc).expect("serializing plain data cannot fail");
    s.push('\n');
    s
}

fn frame_out(profile: &Profile, f: &Frame) -> FrameOut {
    FrameOut {
        name: profile.frame_name(f).into_owned(),
        file: f.source_file.as_deref().map(str::to_owned),
        line: f.source_line,
        r#type: f.frame_type.to_string(),
        error: FrameClass::of(f) == FrameClass::Error,
        inlined: f.inlined,
        module: profile.module_name(f).into_owned(),
        address: format!("{:#x}", f.address_or_line.get()),
        file_id: f.file_id.map(|id| id.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;
    use serde_json::{json as j, Value};

    #[test]
    fn small_profile_exact() {
        let server = "11110000000000012222000000000002";
        let frame = |name: &str,
                     file: Value,
                     line: Value,
                     ty: &str,
                     inl: bool,
                     module: &str,
                     addr: &str,
                     fid: Value| {
            j!({"name": name, "file": file, "line": line, "type": ty, "error": false,
                "inlined": inl, "module": module, "address": addr, "file_id": fid})
        };
        let labels = |pid: u32, tid: u32, comm: &str, thread: &str, cpu: u32| {
            j!({"pid": pid, "tid": tid, "process_name": comm, "thread_name": thread, "cpu": cpu,
                "container_id": null, "executable_path": null})
        };
        let main = frame(
            "main",
            j!("server.c"),
            j!(20),
            "native",
            false,
            "server",
            "0x1800",
            j!(server),
        );
        let expected = j!({
            "host_name": "h", "start_unix_ns": 1000, "duration_ns": 2_000_000_000u64,
            "frequency_hz": 20, "period_ns": 50_000_000, "total_samples": 6,
            "executables": [{"file_id": server, "path": "/opt/app/bin/server", "gnu_build_id": null,
                             "vaddr_start": "0x1000", "vaddr_end": "0x9000"}],
            "stacks": [
                {"count": 3, "labels": labels(1, 1, "server", "server", 0), "frames": [
                    frame("parse_header", j!("parse.h"), j!(12), "native", true, "server", "0x3000", j!(server)),
                    frame("parse", j!("parse.c"), j!(40), "native", false, "server", "0x3000", j!(server)),
                    main.clone(),
                ]},
                {"count": 2, "labels": labels(1, 2, "server", "io", 1), "frames": [
                    frame("do_syscall_64", Value::Null, Value::Null, "kernel", false, "[kernel]",
                          "0xffffffff81000010", j!("fffffffffffffffdfffffffffffffffd")),
                    main,
                ]},
                {"count": 1, "labels": labels(2, 2, "tool", "tool", 0), "frames": [
                    {"name": "<unwinding aborted due to error native_no_unwind_info>", "file": null,
                     "line": null, "type": "native", "error": true, "inlined": false,
                     "module": "[error]", "address": "0xfa1", "file_id": null},
                ]},
            ],
        });
        let text = json(&testdata::small());
        assert!(text.ends_with("}\n") && !text.trim_end().contains('\n'));
        let got: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(got, expected);
        // Key order is the documented one.
        assert!(
            text.starts_with(r#"{"host_name":"h","start_unix_ns":1000,"duration_ns":2000000000,"#)
        );
    }

    #[test]
    fn aggregates_identical_stacks_and_orders_deterministically() {
        let mut p = testdata::small();
        let dup = p.samples[1].clone();
        p.samples.push(dup); // same labels and frames: 2 + 2
        let mut other = p.samples[2].clone();
        other.labels.tid = 3; // different labels: a stack of its own
        p.samples.push(other);
        let v: Value = serde_json::from_str(&json(&p)).unwrap();
        let stacks = v["stacks"].as_array().unwrap();
        let summary: Vec<(u64, u64)> = stacks
            .iter()
            .map(|s| {
                (
                    s["count"].as_u64().unwrap(),
                    s["labels"]["tid"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(summary, [(4, 2), (3, 1), (1, 2), (1, 3)]);
        assert_eq!(v["total_samples"], 9);
        assert_eq!(json(&p), json(&p));
    }

    #[test]
    fn realistic_profile_fields() {
        let p = testdata::realistic();
        let v: Value = serde_json::from_str(&json(&p)).unwrap();
        let stacks = v["stacks"].as_array().unwrap();
        assert_eq!(stacks.len(), p.samples.len());
        let total: u64 = stacks.iter().map(|s| s["count"].as_u64().unwrap()).sum();
        assert_eq!(total, 44);
        let vendor = stacks
            .iter()
            .find(|s| s["labels"]["process_name"] == "vendor")
            .unwrap();
        assert_eq!(vendor["labels"]["container_id"], "3f2a9c1e7b5d");
        assert_eq!(vendor["frames"][1]["name"], "blob+0x402000");
        assert_eq!(vendor["frames"][1]["module"], "blob");
        let py = stacks
            .iter()
            .find(|s| s["labels"]["process_name"] == "python3")
            .unwrap();
        assert_eq!(py["frames"][0]["type"], "cpython");
        assert_eq!(py["frames"][0]["module"], "[cpython]");
        assert_eq!(py["frames"][0]["line"], 12);
    }
}
