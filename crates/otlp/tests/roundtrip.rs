//! encode → bytes → validate → decode gives back the model (up to what OTLP
//! does not carry, see `encode.rs`), and the encoding has upstream's shape.

mod common;

use common::*;
use libpf::{FileId, FrameType};
use otlp::proto::common::v1::any_value;
use otlp::{decode, decode_lenient, encode, validate, ExportProfilesServiceRequest, ResourceInfo};
use profile::Profile;
use prost::Message;
use std::collections::HashSet;

fn info() -> ResourceInfo {
    ResourceInfo {
        host_name: Some("node-1".into()),
        host_id: Some("0123456789abcdef0123456789abcdef".into()),
    }
}

/// What the decoder can give back: executables keep only base names.
fn expected_executables(p: &Profile) -> Vec<(FileId, String, Option<String>, u64, u64)> {
    let used: HashSet<FileId> = p
        .samples
        .iter()
        .flat_map(|s| s.frames.iter())
        .filter(|f| f.frame_type == FrameType::NATIVE)
        .filter_map(|f| f.file_id)
        .collect();
    let mut v: Vec<_> = p
        .executables
        .values()
        .filter(|e| used.contains(&e.file_id))
        .map(|e| {
            (
                e.file_id,
                e.base_name().to_string(),
                e.gnu_build_id.as_deref().map(str::to_string),
                e.vaddr_start,
                e.vaddr_end,
            )
        })
        .collect();
    v.sort();
    v
}

fn round_trip(p: &Profile) {
    let req = encode(std::slice::from_ref(p), &info());
    validate(&req).expect("our own encoding validates");
    let bytes = req.encode_to_vec();
    let back = ExportProfilesServiceRequest::decode(bytes.as_slice()).unwrap();
    assert_eq!(back, req);
    let decoded = decode(&back).expect("decodes");

    // One resource per process.
    let pids: HashSet<u32> = p.samples.iter().map(|s| s.labels.pid).collect();
    assert_eq!(decoded.len(), pids.len());
    let mut samples = Vec::new();
    let mut exes = std::collections::BTreeMap::new();
    for (res, prof) in &decoded {
        assert_eq!(res.host_name.as_deref(), Some("node-1"));
        assert_eq!(res.host_id.as_deref(), info().host_id.as_deref());
        assert_eq!(prof.host_name, "node-1");
        assert_eq!(prof.frequency_hz, p.frequency_hz);
        assert!(prof.start_unix_ns <= p.start_unix_ns);
        assert!(prof.start_unix_ns + prof.duration_ns >= p.start_unix_ns + p.duration_ns);
        for s in &prof.samples {
            assert_eq!(Some(s.labels.pid), res.pid);
            for t in &s.timestamps_unix_ns {
                assert!(*t >= prof.start_unix_ns && *t < prof.start_unix_ns + prof.duration_ns);
            }
        }
        samples.extend(prof.samples.iter().cloned());
        exes.extend(prof.executables.clone());
    }
    assert_eq!(aggregate(&samples), aggregate(&p.samples));
    assert!(exes.keys().all(|id| p.executables.contains_key(id)));
    let got = Profile {
        executables: exes,
        samples,
        ..Profile::default()
    };
    assert_eq!(expected_executables(&got), expected_executables(p));
}

#[test]
fn realistic_profiles_round_trip() {
    for (n, depth) in [(1, 8), (25, 12), (500, 50)] {
        round_trip(&realistic(n, depth));
    }
}

#[test]
fn empty_inputs() {
    let req = encode(&[], &ResourceInfo::default());
    validate(&req).unwrap();
    assert!(decode(&req).unwrap().is_empty());
    let req = encode(&[Profile::default()], &ResourceInfo::default());
    assert!(req.resource_profiles.is_empty());
    validate(&req).unwrap();
    // A request with no dictionary and no profiles is valid too.
    validate(&ExportProfilesServiceRequest::default()).unwrap();
}

fn str_of(req: &ExportProfilesServiceRequest, i: i32) -> &str {
    &req.dictionary.as_ref().unwrap().string_table[i as usize]
}

#[test]
fn upstream_shape() {
    let p = realistic(50, 10);
    let req = encode(std::slice::from_ref(&p), &ResourceInfo::default());
    let d = req.dictionary.as_ref().unwrap();

    // Zero entries.
    assert_eq!(d.string_table[0], "");
    assert_eq!(d.mapping_table[0], Default::default());
    assert_eq!(d.location_table[0], Default::default());
    assert_eq!(d.function_table[0], Default::default());
    assert_eq!(d.link_table, vec![Default::default()]);
    assert_eq!(d.attribute_table[0], Default::default());
    assert_eq!(d.stack_table[0], Default::default());

    // Every table deduplicated.
    fn distinct<T: std::fmt::Debug>(v: &[T]) -> bool {
        let s: HashSet<String> = v.iter().map(|x| format!("{x:?}")).collect();
        s.len() == v.len()
    }
    assert!(distinct(&d.string_table));
    assert!(distinct(&d.mapping_table));
    assert!(distinct(&d.location_table));
    assert!(distinct(&d.function_table));
    assert!(distinct(&d.attribute_table));
    assert!(distinct(&d.stack_table));

    // Every location has a frame type; kernel ones a vmlinux mapping with the
    // unknown-kernel htlhash; error frames mapping 0.
    let attr = |i: i32| {
        let kv = &d.attribute_table[i as usize];
        let v = match kv.value.as_ref().unwrap().value.as_ref().unwrap() {
            any_value::Value::StringValue(s) => s.clone(),
            any_value::Value::IntValue(n) => n.to_string(),
            other => panic!("{other:?}"),
        };
        (d.string_table[kv.key_strindex as usize].clone(), v)
    };
    let mut types = HashSet::new();
    for loc in &d.location_table[1..] {
        let (k, t) = attr(loc.attribute_indices[0]);
        assert_eq!(k, "profile.frame.type");
        types.insert(t.clone());
        match t.as_str() {
            "kernel" => {
                let m = &d.mapping_table[loc.mapping_index as usize];
                assert_eq!(d.string_table[m.filename_strindex as usize], "vmlinux");
                let attrs: Vec<_> = m.attribute_indices.iter().map(|&a| attr(a)).collect();
                assert!(attrs.contains(&(
                    "process.executable.build_id.htlhash".into(),
                    FileId::UNKNOWN_KERNEL.to_hex()
                )));
            }
            "abort-marker" => {
                assert_eq!(loc.mapping_index, 0);
                assert_eq!(loc.address, 2);
            }
            "native" if loc.mapping_index == 0 => {
                // The native error frame.
                assert_eq!(loc.address, 4000);
                let f = d.function_table[loc.lines[0].function_index as usize];
                assert!(str_of(&req, f.name_strindex).starts_with("<unwinding aborted"));
            }
            "native" => {
                let m = &d.mapping_table[loc.mapping_index as usize];
                assert!(loc.address >= m.memory_start && loc.address < m.memory_limit);
            }
            "cpython" => assert_eq!(loc.mapping_index, 0),
            other => panic!("unexpected frame type {other}"),
        }
    }
    assert_eq!(
        types,
        ["kernel", "native", "cpython", "abort-marker"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );

    // The inlined helper shares the location of `flush`, innermost first.
    let inl = d
        .location_table
        .iter()
        .find(|l| l.lines.len() == 2)
        .expect("a location with an inline");
    let names: Vec<&str> = inl
        .lines
        .iter()
        .map(|l| {
            str_of(
                &req,
                d.function_table[l.function_index as usize].name_strindex,
            )
        })
        .collect();
    assert_eq!(names, ["buf_copy", "flush"]);

    // libc mapping: base name, vaddr range, both build ids.
    let libc = d
        .mapping_table
        .iter()
        .find(|m| str_of(&req, m.filename_strindex) == "libc.so.6")
        .unwrap();
    assert_eq!(
        (libc.memory_start, libc.memory_limit),
        (0x2_8000, 0x1a_0000)
    );
    let attrs: Vec<_> = libc.attribute_indices.iter().map(|&a| attr(a)).collect();
    assert_eq!(
        attrs,
        [
            (
                "process.executable.build_id.htlhash".to_string(),
                libc_id().to_hex()
            ),
            (
                "process.executable.build_id.gnu".to_string(),
                "c0ffee".to_string()
            )
        ]
    );

    // Resources, profile header, sample attributes.
    assert_eq!(req.resource_profiles.len(), 3);
    for rp in &req.resource_profiles {
        let res = rp.resource.as_ref().unwrap();
        let keys: Vec<&str> = res.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert!(keys.starts_with(&[
            "process.pid",
            "process.executable.path",
            "process.executable.name"
        ]));
        let pid = match res.attributes[0].value.as_ref().unwrap().value {
            Some(any_value::Value::IntValue(n)) => n,
            _ => panic!("pid not an int"),
        };
        assert_eq!(keys.contains(&"container.id"), pid == 300);
        // host.name from the profile since ResourceInfo had none.
        assert!(keys.contains(&"host.name"));
        assert!(!keys.contains(&"host.id"));
        assert_eq!(rp.scope_profiles.len(), 1);
        assert_eq!(rp.scope_profiles[0].profiles.len(), 1);
        let prof = &rp.scope_profiles[0].profiles[0];
        let st = prof.sample_type.unwrap();
        assert_eq!(
            (
                str_of(&req, st.type_strindex),
                str_of(&req, st.unit_strindex)
            ),
            ("samples", "count")
        );
        let pt = prof.period_type.unwrap();
        assert_eq!(
            (
                str_of(&req, pt.type_strindex),
                str_of(&req, pt.unit_strindex)
            ),
            ("cpu", "nanoseconds")
        );
        assert_eq!(prof.period, 50_000_000);
        for s in &prof.samples {
            assert!(s.values.is_empty() != s.timestamps_unix_nano.is_empty());
            let keys: Vec<String> = s.attribute_indices.iter().map(|&a| attr(a).0).collect();
            assert!(keys.contains(&"thread.id".to_string()));
            assert!(keys.contains(&"cpu.logical_number".to_string()));
            for t in &s.timestamps_unix_nano {
                assert!(*t >= prof.time_unix_nano && *t < prof.time_unix_nano + prof.duration_nano);
            }
        }
    }
}

#[test]
fn same_stack_and_attributes_are_merged() {
    let mut p = realistic(1, 8);
    let mut s2 = p.samples[0].clone();
    s2.timestamps_unix_ns = vec![START + 999; s2.count as usize];
    p.samples.push(s2.clone());
    let req = encode(std::slice::from_ref(&p), &ResourceInfo::default());
    let prof = &req.resource_profiles[0].scope_profiles[0].profiles[0];
    assert_eq!(prof.samples.len(), 1);
    assert_eq!(
        prof.samples[0].timestamps_unix_nano.len() as u64,
        p.total_samples()
    );
    // Mixed shapes: one sample without timestamps makes it a count.
    s2.timestamps_unix_ns.clear();
    p.samples.push(s2);
    let req = encode(std::slice::from_ref(&p), &ResourceInfo::default());
    let prof = &req.resource_profiles[0].scope_profiles[0].profiles[0];
    assert_eq!(prof.samples.len(), 1);
    assert_eq!(prof.samples[0].values, vec![p.total_samples() as i64]);
    assert!(prof.samples[0].timestamps_unix_nano.is_empty());
}

#[test]
fn error_frames_decode_with_error_bit() {
    let p = realistic(5, 8);
    let req = encode(std::slice::from_ref(&p), &ResourceInfo::default());
    let decoded = decode(&req).unwrap();
    let types: HashSet<FrameType> = decoded
        .iter()
        .flat_map(|(_, p)| p.samples.iter())
        .flat_map(|s| s.frames.iter().map(|f| f.frame_type))
        .collect();
    assert!(types.contains(&FrameType::ABORT));
    assert!(types.contains(&FrameType::NATIVE.with_error()));
}

#[test]
fn lenient_decode_rejects_other_sample_types() {
    let p = realistic(10, 8);
    let mut req = encode(std::slice::from_ref(&p), &ResourceInfo::default());
    let d = req.dictionary.as_mut().unwrap();
    d.string_table.push("off_cpu".into());
    let off = (d.string_table.len() - 1) as i32;
    req.resource_profiles[1].scope_profiles[0].profiles[0]
        .sample_type
        .as_mut()
        .unwrap()
        .type_strindex = off;
    validate(&req).unwrap();
    let l = decode_lenient(&req).unwrap();
    assert_eq!(l.profiles.len(), 2);
    assert_eq!(l.rejected.len(), 1);
    assert_eq!(
        l.rejected[0].path,
        "resource_profiles[1].scope_profiles[0].profiles[0]"
    );
    assert!(
        l.rejected[0].reason.contains("off_cpu/count"),
        "{}",
        l.rejected[0].reason
    );
    let e = decode(&req).unwrap_err();
    assert!(e.message().contains("not supported"), "{e}");
}

#[test]
fn referenced_resource_attributes_are_accepted() {
    // v1.10 lets Resource attributes use the string table.
    let p = realistic(3, 8);
    let mut req = encode(std::slice::from_ref(&p), &info());
    let mut strings = req.dictionary.as_ref().unwrap().string_table.clone();
    for rp in &mut req.resource_profiles {
        for kv in &mut rp.resource.as_mut().unwrap().attributes {
            strings.push(std::mem::take(&mut kv.key));
            kv.key_strindex = (strings.len() - 1) as i32;
            let v = kv.value.as_mut().unwrap();
            if let Some(any_value::Value::StringValue(s)) = &mut v.value {
                strings.push(std::mem::take(s));
                v.value = Some(any_value::Value::StringValueStrindex(
                    (strings.len() - 1) as i32,
                ));
            }
        }
    }
    let inline = decode(&encode(std::slice::from_ref(&p), &info())).unwrap();
    req.dictionary.as_mut().unwrap().string_table = strings;
    let referenced = decode(&req).unwrap();
    assert_eq!(inline, referenced);
    assert_eq!(referenced[0].0.executable_name.as_deref(), Some("app"));
}

#[test]
fn inconsistent_timestamps_fall_back_to_counts() {
    let mut p = realistic(1, 8);
    p.samples[0].count = 5;
    p.samples[0].timestamps_unix_ns = vec![START; 2];
    let req = encode(std::slice::from_ref(&p), &ResourceInfo::default());
    let s = &req.resource_profiles[0].scope_profiles[0].profiles[0].samples[0];
    assert_eq!(s.values, vec![5]);
    assert!(s.timestamps_unix_nano.is_empty());
}

#[test]
fn zero_indices_into_empty_tables_decode() {
    // Index 0 means "unset"; with tables left empty it must not be followed.
    use otlp::proto::profiles::v1development as pb;
    let req = ExportProfilesServiceRequest {
        resource_profiles: vec![pb::ResourceProfiles {
            resource: None,
            scope_profiles: vec![pb::ScopeProfiles {
                scope: None,
                profiles: vec![pb::Profile {
                    sample_type: Some(pb::ValueType {
                        type_strindex: 1,
                        unit_strindex: 2,
                    }),
                    samples: vec![pb::Sample {
                        values: vec![3],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
        dictionary: Some(pb::ProfilesDictionary {
            string_table: vec!["".into(), "samples".into(), "count".into()],
            ..Default::default()
        }),
    };
    validate(&req).unwrap();
    let d = decode(&req).unwrap();
    assert_eq!(d[0].1.samples[0].count, 3);
    assert!(d[0].1.samples[0].frames.is_empty());
}

#[test]
fn several_profiles_share_one_dictionary() {
    // The first profile lacks the executables the second describes: the
    // shared mapping still carries the file's name and range.
    let mut first = realistic(10, 8);
    first.executables.clear();
    let second = realistic(10, 8);
    let req = encode(&[first.clone(), second.clone()], &ResourceInfo::default());
    validate(&req).unwrap();
    let d = req.dictionary.as_ref().unwrap();
    let app: Vec<_> = d
        .mapping_table
        .iter()
        .filter(|m| {
            m.attribute_indices.iter().any(|&a| {
                matches!(&d.attribute_table[a as usize].value.as_ref().unwrap().value,
                    Some(any_value::Value::StringValue(s)) if *s == app_id().to_hex())
            })
        })
        .collect();
    assert_eq!(app.len(), 1);
    assert_eq!(str_of(&req, app[0].filename_strindex), "app");
    // 3 processes per profile, each its own resource.
    assert_eq!(req.resource_profiles.len(), 6);
    let decoded = decode(&req).unwrap();
    let (a, b) = decoded.split_at(3);
    let samples = |h: &[(otlp::DecodedResource, Profile)]| {
        h.iter()
            .flat_map(|(_, p)| p.samples.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(aggregate(&samples(a)), aggregate(&first.samples));
    assert_eq!(aggregate(&samples(b)), aggregate(&second.samples));
}

#[test]
fn unusable_resource_or_labels_reject_only_that_profile() {
    let p = realistic(10, 8);
    let mut req = encode(std::slice::from_ref(&p), &ResourceInfo::default());
    req.resource_profiles[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes[0]
        .value = Some(otlp::proto::common::v1::AnyValue {
        value: Some(any_value::Value::StringValue("not-a-pid".into())),
    });
    let l = decode_lenient(&req).unwrap();
    assert_eq!(l.profiles.len(), 2);
    assert_eq!(l.rejected.len(), 1);
    assert!(
        l.rejected[0].reason.contains("process.pid \"not-a-pid\""),
        "{:?}",
        l.rejected
    );
    // A decimal string pid is fine.
    req.resource_profiles[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes[0]
        .value = Some(otlp::proto::common::v1::AnyValue {
        value: Some(any_value::Value::StringValue("100".into())),
    });
    assert_eq!(decode(&req).unwrap()[0].0.pid, Some(100));
}

/// The error frames of `profile::testdata::errors` (as the agent records
/// them: no name, the code as data), decoded from `req`.
fn decoded_error_frames(req: &ExportProfilesServiceRequest) -> (Profile, Vec<libpf::Frame>) {
    let mut decoded = decode(req).unwrap();
    assert_eq!(decoded.len(), 1, "one process");
    let (_, p) = decoded.remove(0);
    let errors = p
        .samples
        .iter()
        .map(|s| s.frames[0].clone())
        .filter(|f| profile::FrameClass::of(f) == profile::FrameClass::Error)
        .collect();
    (p, errors)
}

#[test]
fn unnamed_error_frames_are_named_from_the_spec() {
    let p = profile::testdata::errors();
    let req = encode(std::slice::from_ref(&p), &ResourceInfo::default());
    validate(&req).unwrap();
    let d = req.dictionary.as_ref().unwrap();
    // On the wire: each error location (mapping 0, address = the code) has
    // one line whose function is the spec's name of its code.
    let mut sent: Vec<(u64, &str)> = d
        .location_table
        .iter()
        .filter(|l| l.mapping_index == 0 && l.lines.len() == 1)
        .map(|l| {
            let f = d.function_table[l.lines[0].function_index as usize];
            (l.address, str_of(&req, f.name_strindex))
        })
        .collect();
    sent.sort();
    let [no_mapping, length, unknown] = profile::testdata::ERROR_FRAME_NAMES;
    assert_eq!(sent, [(2, length), (4000, no_mapping), (4242, unknown)]);
    assert!(
        !d.string_table.iter().any(|s| s.contains("error code")),
        "{:?}",
        d.string_table
    );

    // Decoded: error frames again, carrying the name, and every output of
    // the decoded model names them as the agent's local outputs do.
    let (back, errors) = decoded_error_frames(&req);
    let names: Vec<&str> = errors
        .iter()
        .map(|f| f.function_name.as_deref().unwrap())
        .collect();
    assert_eq!(names, profile::testdata::ERROR_FRAME_NAMES);
    assert!(errors.iter().all(|f| f.frame_type.is_error()));
    assert_eq!(profile::folded(&back), profile::folded(&p));
}

#[test]
fn legacy_bare_code_error_text_is_named_from_the_spec() {
    // What encoders before the fix sent for an unnamed error frame.
    let p = profile::testdata::errors();
    let mut req = encode(std::slice::from_ref(&p), &ResourceInfo::default());
    let d = req.dictionary.as_mut().unwrap();
    for (name, code) in [
        (profile::testdata::ERROR_FRAME_NAMES[0], 4000),
        (profile::testdata::ERROR_FRAME_NAMES[1], 2),
    ] {
        let s = d.string_table.iter_mut().find(|s| *s == name).unwrap();
        *s = format!("<unwinding aborted due to error code {code}>");
    }
    let (back, errors) = decoded_error_frames(&req);
    assert_eq!(errors.len(), 3);
    // Read as unnamed (so the model names them), still errors.
    assert!(errors[..2].iter().all(|f| f.function_name.is_none()));
    assert!(errors.iter().all(|f| f.frame_type.is_error()));
    let names: Vec<_> = errors.iter().map(|f| back.frame_name(f)).collect();
    assert_eq!(names, profile::testdata::ERROR_FRAME_NAMES);
    assert!(!profile::folded(&back).contains("error code"));

    // Only the stand-in for the frame's own code is dropped.
    let mut req = encode(std::slice::from_ref(&p), &ResourceInfo::default());
    let d = req.dictionary.as_mut().unwrap();
    let s = d
        .string_table
        .iter_mut()
        .find(|s| *s == profile::testdata::ERROR_FRAME_NAMES[0])
        .unwrap();
    *s = "<unwinding aborted due to error code 4001>".into();
    let (_, errors) = decoded_error_frames(&req);
    assert_eq!(
        errors[0].function_name.as_deref(),
        Some("<unwinding aborted due to error code 4001>")
    );
}
