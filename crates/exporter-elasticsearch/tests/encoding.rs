//! Encoding against the published vectors and a realistic agent request.

mod support;

use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use exporter_elasticsearch::encode::{
    downsample_depth, frame_type_from_semconv, index, synthesize_file_id, SplitMix64,
};
use exporter_elasticsearch::{encode, DocKind, EncodeOptions, Op, ProfileError, Schema};
use serde_json::{Map, Value};
use support::request::{realistic_request, ReqBuilder};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn src(d: &exporter_elasticsearch::Document) -> Map<String, Value> {
    match serde_json::from_str(&d.source).unwrap() {
        Value::Object(m) => m,
        _ => panic!("source is not an object"),
    }
}

fn of<'a>(
    e: &'a exporter_elasticsearch::Encoded,
    index: &str,
) -> Vec<&'a exporter_elasticsearch::Document> {
    e.docs.iter().filter(|d| d.index == index).collect()
}

fn opts(schema: Schema, seed: u64) -> EncodeOptions {
    EncodeOptions {
        schema,
        seed,
        ..Default::default()
    }
}

/// The identities.md TraceHash vector: three native frames, FileID(i, i),
/// address i, leaf first. The stacktrace id is its base64url; frame ids are
/// FileID ‖ address BE, listed root first.
#[test]
fn trace_hash_and_frame_id_vectors() {
    let mut b = ReqBuilder::new();
    let mut locs = Vec::new();
    for i in 0..3u64 {
        let m = b.mapping(&format!("lib{i}.so"), Some(&format!("{i:016x}{i:016x}")));
        locs.push(b.location(m, i, Some("native"), &[]));
    }
    let st = b.stack(&locs);
    let s = b.sample(st, None, vec![1_700_000_000_123_456_789]);
    let p = b.cpu_profile(1_700_000_000_000_000_000, 50_000_000, vec![s]);
    b.add_resource(&[("host.id", "h1")], vec![p]);
    let e = encode(&b.build(), &opts(Schema::Otel, 1));
    assert!(e.rejected.is_empty(), "{:?}", e.rejected);

    let want_trace = {
        let mut bytes = 0x21c6fe4c62868856u64.to_be_bytes().to_vec();
        bytes.extend_from_slice(&0xcf510596eab68dc8u64.to_be_bytes());
        b64(&bytes)
    };
    assert_eq!(want_trace.len(), 22);
    let traces = of(&e, index::OTEL_STACKTRACES);
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].id, want_trace);
    assert_eq!(traces[0].op, Op::Create);

    let frame_id = |i: u64| {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&i.to_be_bytes());
        bytes.extend_from_slice(&i.to_be_bytes());
        bytes.extend_from_slice(&i.to_be_bytes());
        b64(&bytes)
    };
    let s = src(traces[0]);
    // Root first: frame 2 (root) … frame 0 (leaf) at the highest index.
    assert_eq!(
        s["frame.ids"],
        format!("{}{}{}", frame_id(2), frame_id(1), frame_id(0))
    );
    assert_eq!(s["frame.types"], b64(&[3, 3]));

    let events = of(&e, index::OTEL_EVENTS_ALL);
    assert_eq!(events.len(), 1);
    let ev = src(events[0]);
    assert_eq!(ev["stacktrace.id"], want_trace);
    assert_eq!(ev["@timestamp"], "2023-11-14T22:13:20.123456789Z");
    assert_eq!(ev["count"], 1);
    assert_eq!(ev["sampling_frequency"], 20);
    assert_eq!(ev["resource.attributes.host.id"], "h1");
    // Three executables, _id = htlhash hex.
    let mut exes: Vec<_> = of(&e, index::OTEL_EXECUTABLES)
        .iter()
        .map(|d| d.id.clone())
        .collect();
    exes.sort();
    assert_eq!(
        exes,
        (0..3u64)
            .map(|i| format!("{i:016x}{i:016x}"))
            .collect::<Vec<_>>()
    );
}

/// elasticsearch.md: types `0,0,0,0,0,2,2,2` (root first) → `BQADAg`.
#[test]
fn frame_type_rle_vector() {
    let mut b = ReqBuilder::new();
    let m = b.mapping("x", None);
    let f = b.function("f", "f.php", 1);
    let mut leaf_first = Vec::new();
    for i in 0..3 {
        leaf_first.push(b.location(m, 0, Some("php"), &[(f, 10 + i, 0)]));
    }
    for i in 0..5 {
        leaf_first.push(b.location(m, 0x100 + i, Some("unknown"), &[]));
    }
    let st = b.stack(&leaf_first);
    let s = b.sample(st, None, vec![1]);
    let p = b.cpu_profile(0, 1_000_000_000, vec![s]);
    b.add_resource(&[], vec![p]);
    let e = encode(&b.build(), &EncodeOptions::default());
    let t = src(of(&e, index::OTEL_STACKTRACES)[0]);
    assert_eq!(t["frame.types"], "BQADAg");
    // Period 1 s → 1 Hz.
    assert_eq!(
        src(of(&e, index::OTEL_EVENTS_ALL)[0])["sampling_frequency"],
        1
    );
}

/// A location without htlhash gets FileID (h, h), h = xxhash64 over each line's
/// function name, file name, line BE, column BE; address_or_line = last line's line.
#[test]
fn synthesized_file_id_and_address_or_line() {
    let mut b = ReqBuilder::new();
    let f1 = b.function("inner", "a.py", 1);
    let f2 = b.function("outer", "b.py", 1);
    let loc = b.location(0, 0, Some("cpython"), &[(f1, 7, 3), (f2, 42, 0)]);
    let st = b.stack(&[loc]);
    let s = b.sample(st, None, vec![5]);
    let p = b.cpu_profile(0, 50_000_000, vec![s]);
    b.add_resource(&[], vec![p]);
    let e = encode(&b.build(), &EncodeOptions::default());

    let mut data = Vec::new();
    for (f, file, line, col) in [("inner", "a.py", 7i64, 3i64), ("outer", "b.py", 42, 0)] {
        data.extend_from_slice(f.as_bytes());
        data.extend_from_slice(file.as_bytes());
        data.extend_from_slice(&line.to_be_bytes());
        data.extend_from_slice(&col.to_be_bytes());
    }
    let h = twox_hash::XxHash64::oneshot(0, &data);
    assert_eq!(
        synthesize_file_id(&[("inner", "a.py", 7, 3), ("outer", "b.py", 42, 0)]),
        libpf::FileId::new(h, h)
    );
    let mut id = Vec::new();
    id.extend_from_slice(&h.to_be_bytes());
    id.extend_from_slice(&h.to_be_bytes());
    id.extend_from_slice(&42u64.to_be_bytes());
    let frames = of(&e, index::OTEL_STACKFRAMES);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].id, b64(&id));
    let f = src(frames[0]);
    assert_eq!(f["function.name"], serde_json::json!(["inner", "outer"]));
    assert_eq!(f["function.filename"], serde_json::json!(["a.py", "b.py"]));
    assert_eq!(f["line.number"], serde_json::json!([7, 42]));
    assert_eq!(f["function.offset"], serde_json::json!([6, 41]));
    // No executable document without an htlhash.
    assert!(of(&e, index::OTEL_EXECUTABLES).is_empty());
}

#[test]
fn value_without_timestamps_gives_n_events() {
    let mut b = ReqBuilder::new();
    let m = b.mapping("x", Some("caf6e5907166ac76eef618e5f7f59cd9"));
    let l = b.location(m, 0x10, Some("native"), &[]);
    let st = b.stack(&[l]);
    let mut s = b.sample(st, None, vec![]);
    s.values = vec![7];
    let p = b.cpu_profile(1_000_000_000, 50_000_000, vec![s]);
    b.add_resource(&[], vec![p]);
    let e = encode(&b.build(), &EncodeOptions::default());
    let ev = of(&e, index::OTEL_EVENTS_ALL);
    assert_eq!(ev.len(), 7);
    assert_eq!(e.events, 7);
    let ids: HashSet<_> = ev.iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids.len(), 7, "every event has its own id");
    assert!(ev
        .iter()
        .all(|d| src(d)["@timestamp"] == "1970-01-01T00:00:01.000000000Z"));
    // Only the symbolized frames get stackframes: this one is not.
    assert!(of(&e, index::OTEL_STACKFRAMES).is_empty());
}

#[test]
fn huge_value_is_a_clear_error_not_an_allocation() {
    let mut b = ReqBuilder::new();
    let l = b.location(0, 0x10, Some("native"), &[]);
    let st = b.stack(&[l]);
    let mut s = b.sample(st, None, vec![]);
    s.values = vec![1_000_000_000_000];
    let p = b.cpu_profile(0, 50_000_000, vec![s]);
    b.add_resource(&[], vec![p]);
    let e = encode(&b.build(), &EncodeOptions::default());
    assert!(e.docs.is_empty());
    assert!(matches!(
        e.rejected[0].error,
        ProfileError::TooManyEvents { .. }
    ));
}

#[test]
fn non_cpu_and_invalid_profiles_are_rejected_with_reasons() {
    let mut b = ReqBuilder::new();
    let m = b.mapping("x", Some("caf6e5907166ac76eef618e5f7f59cd9"));
    let good = b.location(m, 0x10, Some("native"), &[]);
    let untyped = b.location(m, 0x20, None, &[]);
    let weird = b.location(m, 0x30, Some("cobol"), &[]);
    let st_good = b.stack(&[good]);
    let st_untyped = b.stack(&[good, untyped]);
    let st_weird = b.stack(&[weird]);

    let s = b.sample(st_good, None, vec![1]);
    let cpu = b.cpu_profile(0, 50_000_000, vec![s.clone()]);
    let mut off_cpu = b.cpu_profile(0, 50_000_000, vec![s.clone()]);
    off_cpu.sample_type = Some(b.value_type("off_cpu", "nanoseconds"));
    let s_untyped = b.sample(st_untyped, None, vec![1]);
    let untyped_p = b.cpu_profile(0, 50_000_000, vec![s_untyped]);
    let s_weird = b.sample(st_weird, None, vec![1]);
    let weird_p = b.cpu_profile(0, 50_000_000, vec![s_weird]);
    let mut zero_period = b.cpu_profile(0, 0, vec![s.clone()]);
    zero_period.period = 0;
    let mut bad_stack = b.cpu_profile(0, 50_000_000, vec![s]);
    bad_stack.samples[0].stack_index = 999;
    b.add_resource(
        &[("host.id", "h")],
        vec![cpu, off_cpu, untyped_p, weird_p, zero_period, bad_stack],
    );
    let e = encode(&b.build(), &EncodeOptions::default());

    assert_eq!(e.profiles, 1);
    assert_eq!(
        of(&e, index::OTEL_EVENTS_ALL).len(),
        1,
        "the valid profile is still encoded"
    );
    let errs: Vec<_> = e
        .rejected
        .iter()
        .map(|r| (r.profile, r.error.clone()))
        .collect();
    assert_eq!(errs.len(), 5);
    assert!(
        matches!(&errs[0], (1, ProfileError::NotCpu { sample_type, .. }) if sample_type == "off_cpu/nanoseconds")
    );
    assert!(errs[0]
        .1
        .to_string()
        .contains("only samples/count with period cpu/nanoseconds"));
    assert!(matches!(
        errs[1],
        (2, ProfileError::MissingFrameType { .. })
    ));
    assert!(errs[1].1.to_string().contains("profile.frame.type"));
    assert!(
        matches!(&errs[2], (3, ProfileError::UnknownFrameType { value, .. }) if value == "cobol")
    );
    assert!(matches!(errs[3], (4, ProfileError::NonPositivePeriod(0))));
    assert!(matches!(
        errs[4],
        (
            5,
            ProfileError::IndexOutOfRange {
                table: "stack table",
                index: 999
            }
        )
    ));
    // The rejected profile with a valid first frame left no stacktrace behind.
    assert_eq!(of(&e, index::OTEL_STACKTRACES).len(), 1);
}

#[test]
fn locations_with_out_of_range_mapping_are_skipped() {
    let mut b = ReqBuilder::new();
    let m = b.mapping("x", Some("caf6e5907166ac76eef618e5f7f59cd9"));
    let ok = b.location(m, 0x10, Some("native"), &[]);
    let bad = b.location(77, 0x20, Some("native"), &[]);
    let st = b.stack(&[bad, ok]);
    let s = b.sample(st, None, vec![1]);
    let p = b.cpu_profile(0, 50_000_000, vec![s]);
    b.add_resource(&[], vec![p]);
    let e = encode(&b.build(), &EncodeOptions::default());
    assert!(e.rejected.is_empty());
    let t = src(of(&e, index::OTEL_STACKTRACES)[0]);
    assert_eq!(t["frame.ids"].as_str().unwrap().len(), 32, "one frame left");
}

#[test]
fn downsampling_is_deterministic_and_one_in_five_per_level() {
    let mut a = SplitMix64::new(42);
    let mut b = SplitMix64::new(42);
    let da: Vec<_> = (0..1000).map(|_| downsample_depth(&mut a)).collect();
    let db: Vec<_> = (0..1000).map(|_| downsample_depth(&mut b)).collect();
    assert_eq!(da, db);
    let mut r = SplitMix64::new(7);
    let n = 200_000usize;
    let mut per_level = [0usize; 12];
    for _ in 0..n {
        let d = downsample_depth(&mut r);
        assert!(d <= 11);
        for l in per_level.iter_mut().take(d + 1) {
            *l += 1;
        }
    }
    // Level k keeps n/5^k on average; check levels 1..3 within 5 sigma.
    for (k, &kept) in per_level.iter().enumerate().take(4).skip(1) {
        let p = 0.2f64.powi(k as i32);
        let mean = n as f64 * p;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        let got = kept as f64;
        assert!(
            (got - mean).abs() < 5.0 * sigma,
            "level {k}: {got} vs {mean}"
        );
    }
}

/// The realistic request, both schemas: every document passes the contract's
/// template check, counts and relations hold, and the encoding is deterministic.
#[test]
fn realistic_request_matches_templates_and_relations() {
    let req = realistic_request("host-a", 1, 3, 100);
    for schema in [Schema::Otel, Schema::Ecs] {
        let e = encode(&req, &opts(schema, 99));
        assert!(e.rejected.is_empty(), "{:?}", e.rejected);
        assert_eq!(e.profiles, 3);
        assert_eq!(e.events, 300);
        for d in &e.docs {
            let t = support::template(d.index).unwrap_or_else(|| panic!("no template {}", d.index));
            let body = src(d);
            let doc = if d.op == Op::Update {
                assert_eq!(d.index, index::ECS_EXECUTABLES);
                assert_eq!(body["scripted_upsert"], true);
                body["upsert"].as_object().unwrap().clone()
            } else {
                assert!(!t.data_stream || d.op == Op::Create);
                body
            };
            if let Err((ty, reason)) = support::check_document(t, &doc) {
                panic!("{schema:?} {}: {ty}: {reason}\n{}", d.index, d.source);
            }
        }
        let (all, st_idx, fr_idx, ex_idx, host_idx, tid) = match schema {
            Schema::Otel => (
                index::OTEL_EVENTS_ALL,
                index::OTEL_STACKTRACES,
                index::OTEL_STACKFRAMES,
                index::OTEL_EXECUTABLES,
                index::OTEL_HOSTS,
                "stacktrace.id",
            ),
            Schema::Ecs => (
                index::ECS_EVENTS_ALL,
                index::ECS_STACKTRACES,
                index::ECS_STACKFRAMES,
                index::ECS_EXECUTABLES,
                index::ECS_HOSTS,
                "Stacktrace.id",
            ),
        };
        let events = of(&e, all);
        assert_eq!(events.len(), 300);
        let traces: HashMap<_, _> = of(&e, st_idx)
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect();
        // 3 processes × 3 stacks with their own Python frames, plus one
        // native-only stack the three processes share.
        assert_eq!(traces.len(), 10);
        for ev in &events {
            let s = src(ev);
            assert!(
                traces.contains_key(s[tid].as_str().unwrap()),
                "event points at a written stacktrace"
            );
        }
        // Stackframes: symbolized frames only (4 Python per process + read + main).
        let frames = of(&e, fr_idx);
        assert_eq!(frames.len(), 3 * 4 + 2);
        // Executables: vmlinux, libc, python.
        assert_eq!(of(&e, ex_idx).len(), 3);
        // One host document, lowercased attributes.
        let hosts = of(&e, host_idx);
        assert_eq!(hosts.len(), 1);
        let h = src(hosts[0]);
        let prefix = if schema == Schema::Otel {
            "resource.attributes."
        } else {
            ""
        };
        assert_eq!(h[&format!("{prefix}host.arch")], "amd64");
        assert_eq!(h[&format!("{prefix}os.type")], "linux");
        assert_eq!(h[&format!("{prefix}host.id")], "host-a");
        assert!(h["@timestamp"].is_u64());
        // Downsampled copies are a subset of events-all with the same ids.
        let all_ids: HashSet<_> = events.iter().map(|d| d.id.clone()).collect();
        let mut previous = all_ids.clone();
        for lvl in 0..11 {
            let name = match schema {
                Schema::Otel => index::OTEL_EVENTS_5POW[lvl],
                Schema::Ecs => index::ECS_EVENTS_5POW[lvl],
            };
            let ids: HashSet<_> = of(&e, name).iter().map(|d| d.id.clone()).collect();
            assert!(
                ids.is_subset(&previous),
                "level {} ⊆ level {}",
                lvl + 1,
                lvl
            );
            previous = ids;
        }
        // Deterministic: same seed, same documents; another seed, other event ids.
        assert_eq!(encode(&req, &opts(schema, 99)).docs, e.docs);
        let other = encode(&req, &opts(schema, 100));
        assert_ne!(of(&other, all)[0].id, events[0].id);
        assert_eq!(of(&other, st_idx).len(), 10);
    }
    // ECS specifics.
    let e = encode(&req, &opts(Schema::Ecs, 1));
    let ev = src(of(&e, index::ECS_EVENTS_ALL)[0]);
    assert_eq!(ev["ecs.version"], "1.12.0");
    assert_eq!(ev["profiling.project.id"], 2);
    assert_eq!(ev["Stacktrace.count"], 1);
    assert!(ev["process.thread.name"]
        .as_str()
        .unwrap()
        .starts_with("worker-"));
    assert!(
        !of(&e, index::ECS_SQ_LEAFFRAMES).is_empty(),
        "unsymbolized native leaf queued"
    );
    // libc and python have unsymbolized native frames; kernel frames are not queued.
    assert_eq!(of(&e, index::ECS_SQ_EXECUTABLES).len(), 2);
    let exe = of(&e, index::ECS_EXECUTABLES);
    assert!(exe
        .iter()
        .all(|d| d.id.len() == 22 && d.kind == DocKind::Executable));
    // OTel event attributes.
    let e = encode(&req, &opts(Schema::Otel, 1));
    let ev = src(of(&e, index::OTEL_EVENTS_ALL)[0]);
    assert_eq!(ev["resource.attributes.host.name"], "host-a.example");
    assert!(ev["resource.attributes.thread.name"]
        .as_str()
        .unwrap()
        .starts_with("worker-"));
    assert!(
        ev.get("resource.attributes.process.pid").is_none(),
        "only the template's attributes"
    );
    // Executables: start of the week (Monday) of the profile time, epoch seconds.
    let exe = src(of(&e, index::OTEL_EXECUTABLES)[0]);
    assert_eq!(exe["@timestamp"], 1_699_833_600u64);
}

#[test]
fn frame_type_strings() {
    for (s, v) in [
        ("unknown", 0),
        ("cpython", 1),
        ("php", 2),
        ("native", 3),
        ("kernel", 4),
        ("jvm", 5),
        ("ruby", 6),
        ("perl", 7),
        ("v8js", 8),
        ("dotnet", 10),
        ("go", 11),
        ("beam", 12),
        ("luajit", 13),
        ("abort-marker", 0x80),
    ] {
        assert_eq!(frame_type_from_semconv(s).unwrap().as_u8(), v, "{s}");
    }
    assert!(frame_type_from_semconv("python").is_none());
}

#[test]
fn request_without_dictionary_is_rejected() {
    let mut req = realistic_request("h", 0, 1, 4);
    req.dictionary = None;
    let e = encode(&req, &EncodeOptions::default());
    assert_eq!(e.rejected.len(), 1);
    assert_eq!(e.rejected[0].error, ProfileError::NoDictionary);
}

#[test]
fn event_ids_can_be_left_to_elasticsearch() {
    let req = realistic_request("h", 0, 1, 8);
    let e = encode(
        &req,
        &EncodeOptions {
            event_ids: false,
            ..Default::default()
        },
    );
    let ev = of(&e, index::OTEL_EVENTS_ALL);
    assert_eq!(ev.len(), 8);
    let mut out = Vec::new();
    ev[0].write_ndjson(&mut out);
    let text = String::from_utf8(out).unwrap();
    let action: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!(action["create"].get("_id").is_none(), "{text}");
    assert_eq!(action["create"]["_index"], index::OTEL_EVENTS_ALL);
    // Write-once documents keep their ids.
    let mut out = Vec::new();
    of(&e, index::OTEL_STACKTRACES)[0].write_ndjson(&mut out);
    let action: Value = serde_json::from_slice(out.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert_eq!(action["create"]["_id"].as_str().unwrap().len(), 22);
}

#[test]
fn host_document_lowercases_all_but_the_host_id() {
    let req = realistic_request("Host-MiXeD", 0, 1, 4);
    let e = encode(&req, &EncodeOptions::default());
    let h = src(of(&e, index::OTEL_HOSTS)[0]);
    assert_eq!(h["resource.attributes.host.id"], "Host-MiXeD");
    assert_eq!(h["resource.attributes.host.name"], "host-mixed.example");
    assert_eq!(h["resource.attributes.cloud.provider"], "local");
    assert!(
        h.get("resource.attributes.process.pid").is_none(),
        "only host attributes"
    );
    let ev = src(of(&e, index::OTEL_EVENTS_ALL)[0]);
    assert_eq!(ev["resource.attributes.host.id"], "Host-MiXeD");
}

#[test]
fn invalid_host_ip_is_left_out_instead_of_failing_the_event() {
    for (ip, kept) in [
        ("10.1.2.3", true),
        ("fe80::1", true),
        ("not-an-ip", false),
        ("", false),
    ] {
        let mut req = realistic_request("h", 0, 1, 4);
        let res = req.resource_profiles[0].resource.as_mut().unwrap();
        res.attributes.push(support::request::kv("host.ip", ip));
        let e = encode(&req, &EncodeOptions::default());
        let ev = src(of(&e, index::OTEL_EVENTS_ALL)[0]);
        assert_eq!(
            ev.contains_key("resource.attributes.host.ip"),
            kept,
            "{ip:?}"
        );
        let t = support::template(index::OTEL_EVENTS_ALL).unwrap();
        assert!(support::check_document(t, &ev).is_ok(), "{ip:?}");
    }
}
