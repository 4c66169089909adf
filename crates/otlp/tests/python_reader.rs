//! Independent decode: the official Python `opentelemetry-proto` package
//! parses our bytes (tests/otlp_stacks.py) and must see the stacks, counts
//! and attributes of the model we encoded. Catches field-number or
//! proto-version mistakes our own decoder would share with our encoder.
//!
//! Needs `python3` and `pip install 'opentelemetry-proto>=1.45'`; fails
//! loudly without them.

mod common;

use otlp::{encode, ResourceInfo};
use prost::Message;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Command;

type Key = String;

fn run_python(bytes: &[u8]) -> Vec<Value> {
    serde_json::from_slice(&run_script(bytes, &[])).expect("python printed JSON")
}

fn run_script(bytes: &[u8], args: &[&str]) -> Vec<u8> {
    // Tests run in parallel: one directory per call.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("otlp-py-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("request.pb");
    std::fs::write(&file, bytes).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp_stacks.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&file)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): install python3 and then `pip install 'opentelemetry-proto>=1.45'`")
        });
    std::fs::remove_dir_all(&dir).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python reader failed (is the package installed? `pip install 'opentelemetry-proto>=1.45'`): {stderr}"
    );
    out.stdout
}

/// Canonical text of a sample's identity as both sides can compute it.
fn key(resource: Value, attributes: Value, frames: Value) -> Key {
    json!({"r": resource, "a": attributes, "f": frames}).to_string()
}

#[test]
fn official_python_package_reads_our_stacks() {
    let p = common::realistic(200, 30);
    let info = ResourceInfo {
        host_name: Some("node-7".into()),
        host_id: None,
    };
    let req = encode(std::slice::from_ref(&p), &info);
    let got = run_python(&req.encode_to_vec());

    // Expected, straight from the model (not through our decoder).
    let mut want: BTreeMap<Key, (u64, Vec<u64>)> = BTreeMap::new();
    for s in &p.samples {
        let l = &s.labels;
        let mut resource = serde_json::Map::new();
        resource.insert("process.pid".into(), json!(l.pid));
        resource.insert(
            "process.executable.path".into(),
            json!(l.executable_path.as_deref().unwrap()),
        );
        resource.insert("process.executable.name".into(), json!(&*l.process_name));
        if let Some(c) = &l.container_id {
            resource.insert("container.id".into(), json!(&**c));
        }
        resource.insert("host.name".into(), json!("node-7"));
        let mut attrs = serde_json::Map::new();
        if !l.thread_name.is_empty() {
            attrs.insert("thread.name".into(), json!(&*l.thread_name));
        }
        attrs.insert("thread.id".into(), json!(l.tid));
        attrs.insert("cpu.logical_number".into(), json!(l.cpu.unwrap()));
        let frames: Vec<Value> = s
            .frames
            .iter()
            .rev()
            .map(|f| {
                let ty = f.frame_type.to_string();
                let name = match &f.function_name {
                    Some(n) => n.to_string(),
                    None => format!("{ty}+{:#x}", f.address_or_line.get()),
                };
                json!([name, ty])
            })
            .collect();
        let e = want
            .entry(key(
                Value::Object(resource),
                Value::Object(attrs),
                Value::Array(frames),
            ))
            .or_default();
        e.0 += s.count;
        e.1.extend(&s.timestamps_unix_ns);
    }

    let mut seen: BTreeMap<Key, (u64, Vec<u64>)> = BTreeMap::new();
    for s in &got {
        let e = seen
            .entry(key(
                s["resource"].clone(),
                s["attributes"].clone(),
                s["frames"].clone(),
            ))
            .or_default();
        e.0 += s["count"].as_u64().unwrap();
        e.1.extend(
            s["timestamps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap()),
        );
    }
    for v in want.values_mut().chain(seen.values_mut()) {
        v.1.sort_unstable();
    }
    // Samples without a full set of timestamps travel as counts; compare
    // those by count only.
    for (k, w) in &mut want {
        if let Some(g) = seen.get(k) {
            if g.1.is_empty() {
                w.1.clear();
            }
        }
    }
    assert_eq!(seen.len(), want.len(), "distinct stacks differ");
    for (k, w) in &want {
        assert_eq!(seen.get(k), Some(w), "stack {k}");
    }
    let total: u64 = seen.values().map(|v| v.0).sum();
    assert_eq!(total, p.total_samples());
    // Deep stacks made it whole: the deepest has ~30 frames plus the inline.
    let deepest = got
        .iter()
        .map(|s| s["frames"].as_array().unwrap().len())
        .max()
        .unwrap();
    assert_eq!(deepest, common::app_stack(30, 0).len());
}

#[test]
fn our_json_reader_accepts_the_official_json_writer() {
    let p = common::realistic(60, 12);
    let req = encode(std::slice::from_ref(&p), &ResourceInfo::default());
    let json = run_script(&req.encode_to_vec(), &["--to-json"]);
    let text = String::from_utf8_lossy(&json);
    // The official writer uses lowerCamelCase and strings for 64-bit ints.
    assert!(text.contains("\"resourceProfiles\""), "{text}");
    assert!(text.contains("\"timestampsUnixNano\": [\n"), "{text}");
    let back = otlp::json::from_json(&json).unwrap();
    assert!(
        back == req,
        "JSON from the official writer decoded differently"
    );
    // And our writer reads back too, with our reader and the official one
    // (no link ids here, where OTLP's hex differs from protobuf's base64).
    let ours = otlp::json::to_json(&req).unwrap();
    assert_eq!(otlp::json::from_json(ours.as_bytes()).unwrap(), req);
    let json_file = std::env::temp_dir().join(format!("otlp-py-{}-ours.json", std::process::id()));
    std::fs::write(&json_file, &ours).unwrap();
    let verdict = run_script(
        &req.encode_to_vec(),
        &["--check-json", json_file.to_str().unwrap()],
    );
    std::fs::remove_file(&json_file).unwrap();
    assert_eq!(String::from_utf8_lossy(&verdict), "equal");
}
