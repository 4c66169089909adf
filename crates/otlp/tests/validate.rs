//! Breaking every kind of reference makes `validate` fail with a message
//! naming the field; nothing panics on hostile input.

mod common;

use otlp::proto::common::v1::{any_value, AnyValue, KeyValue};
use otlp::proto::profiles::v1development as pb;
use otlp::{decode, decode_lenient, encode, validate, ExportProfilesServiceRequest, ResourceInfo};
use proptest::prelude::*;
use prost::Message;

fn base() -> ExportProfilesServiceRequest {
    let req = encode(&[common::realistic(40, 10)], &ResourceInfo::default());
    validate(&req).unwrap();
    req
}

type Mutation = fn(&mut ExportProfilesServiceRequest);

fn dict(r: &mut ExportProfilesServiceRequest) -> &mut pb::ProfilesDictionary {
    r.dictionary.as_mut().unwrap()
}
fn prof(r: &mut ExportProfilesServiceRequest) -> &mut pb::Profile {
    &mut r.resource_profiles[0].scope_profiles[0].profiles[0]
}
/// Index of the first native location with a mapping and lines.
fn mapped_loc(r: &ExportProfilesServiceRequest) -> usize {
    r.dictionary
        .as_ref()
        .unwrap()
        .location_table
        .iter()
        .position(|l| l.mapping_index > 0 && !l.lines.is_empty())
        .unwrap()
}
fn mapping_with_file(r: &ExportProfilesServiceRequest) -> usize {
    r.dictionary
        .as_ref()
        .unwrap()
        .mapping_table
        .iter()
        .position(|m| m.filename_strindex > 0)
        .unwrap()
}

/// (mutation, substrings the error must contain)
fn cases() -> Vec<(&'static str, Mutation, &'static [&'static str])> {
    vec![
        (
            "sample stack",
            |r| prof(r).samples[0].stack_index = 100_000,
            &["samples[0].stack_index 100000 out of range", "stacks)"],
        ),
        (
            "negative stack",
            |r| prof(r).samples[0].stack_index = -1,
            &["samples[0].stack_index -1 is negative"],
        ),
        (
            "sample attribute",
            |r| prof(r).samples[0].attribute_indices.push(9999),
            &[
                "samples[0].attribute_indices[",
                "9999 out of range",
                "attributes)",
            ],
        ),
        (
            "sample link",
            |r| prof(r).samples[0].link_index = 1,
            &["samples[0].link_index 1 out of range (1 links)"],
        ),
        (
            "stack location",
            |r| dict(r).stack_table[1].location_indices[0] = 77_777,
            &[
                "stack_table[1].location_indices[0] 77777 out of range",
                "locations)",
            ],
        ),
        (
            "stack location 0",
            |r| dict(r).stack_table[1].location_indices[0] = 0,
            &["stack_table[1].location_indices[0] is 0"],
        ),
        (
            "location mapping",
            |r| {
                let i = mapped_loc(r);
                let n = dict(r).mapping_table.len();
                dict(r).location_table[i].mapping_index = n as i32 + 5;
            },
            &[
                "location_table[",
                "].mapping_index",
                "out of range (",
                "mappings)",
            ],
        ),
        (
            "line function",
            |r| {
                let i = mapped_loc(r);
                dict(r).location_table[i].lines[0].function_index = 4242;
            },
            &["].lines[0].function_index 4242 out of range", "functions)"],
        ),
        (
            "location attribute",
            |r| {
                let i = mapped_loc(r);
                dict(r).location_table[i].attribute_indices.push(-3);
            },
            &["location_table[", "].attribute_indices[1] -3 is negative"],
        ),
        (
            "no frame type",
            |r| {
                let i = mapped_loc(r);
                dict(r).location_table[i].attribute_indices.clear();
            },
            &["has no profile.frame.type attribute"],
        ),
        (
            "frame type not a string",
            |r| {
                let i = mapped_loc(r);
                let a = dict(r).location_table[i].attribute_indices[0] as usize;
                dict(r).attribute_table[a].value = Some(AnyValue {
                    value: Some(any_value::Value::IntValue(3)),
                });
            },
            &["profile.frame.type attribute", "has no string value"],
        ),
        (
            "function name",
            |r| dict(r).function_table[1].name_strindex = 1_000_000,
            &[
                "function_table[1].name_strindex 1000000 out of range",
                "strings)",
            ],
        ),
        (
            "function system name",
            |r| dict(r).function_table[1].system_name_strindex = 1_000_000,
            &["function_table[1].system_name_strindex"],
        ),
        (
            "function file",
            |r| dict(r).function_table[1].filename_strindex = -7,
            &["function_table[1].filename_strindex -7 is negative"],
        ),
        (
            "mapping file",
            |r| {
                let m = mapping_with_file(r);
                dict(r).mapping_table[m].filename_strindex = 31337;
            },
            &["].filename_strindex 31337 out of range"],
        ),
        (
            "mapping attribute",
            |r| dict(r).mapping_table[1].attribute_indices[0] = 5555,
            &["mapping_table[1].attribute_indices[0] 5555 out of range"],
        ),
        (
            "attribute key",
            |r| dict(r).attribute_table[1].key_strindex = 9_999_999,
            &["attribute_table[1].key_strindex 9999999 out of range"],
        ),
        (
            "attribute unit",
            |r| dict(r).attribute_table[1].unit_strindex = 9_999_999,
            &["attribute_table[1].unit_strindex"],
        ),
        (
            "attribute strindex value",
            |r| {
                dict(r).attribute_table[1].value = Some(AnyValue {
                    value: Some(any_value::Value::StringValueStrindex(123_456)),
                })
            },
            &["attribute_table[1].value.string_value_strindex 123456 out of range"],
        ),
        (
            "nested strindex value",
            |r| {
                dict(r).attribute_table[1].value = Some(AnyValue {
                    value: Some(any_value::Value::ArrayValue(
                        otlp::proto::common::v1::ArrayValue {
                            values: vec![AnyValue {
                                value: Some(any_value::Value::StringValueStrindex(-1)),
                            }],
                        },
                    )),
                })
            },
            &["attribute_table[1].value.array_value[0].string_value_strindex -1 is negative"],
        ),
        (
            "resource key",
            |r| {
                r.resource_profiles[0]
                    .resource
                    .as_mut()
                    .unwrap()
                    .attributes
                    .push(KeyValue {
                        key: String::new(),
                        value: None,
                        key_strindex: 888_888,
                    })
            },
            &[
                "resource_profiles[0].resource.attributes[",
                "].key_strindex 888888 out of range",
            ],
        ),
        (
            "resource value",
            |r| {
                r.resource_profiles[1].resource.as_mut().unwrap().attributes[0].value =
                    Some(AnyValue {
                        value: Some(any_value::Value::StringValueStrindex(888_888)),
                    })
            },
            &["resource_profiles[1].resource.attributes[0].value.string_value_strindex 888888"],
        ),
        (
            "scope attribute",
            |r| {
                r.resource_profiles[0].scope_profiles[0]
                    .scope
                    .as_mut()
                    .unwrap()
                    .attributes
                    .push(KeyValue {
                        key: "k".into(),
                        value: None,
                        key_strindex: -2,
                    })
            },
            &["scope_profiles[0].scope.attributes[0].key_strindex -2 is negative"],
        ),
        (
            "sample type",
            |r| prof(r).sample_type.as_mut().unwrap().unit_strindex = 70_000,
            &["profiles[0].sample_type.unit_strindex 70000 out of range"],
        ),
        (
            "no sample type",
            |r| prof(r).sample_type = None,
            &["has samples but no sample_type"],
        ),
        (
            "period type",
            |r| prof(r).period_type.as_mut().unwrap().type_strindex = 70_000,
            &["profiles[0].period_type.type_strindex"],
        ),
        (
            "profile attribute",
            |r| prof(r).attribute_indices.push(12_345),
            &["profiles[0].attribute_indices[0] 12345 out of range"],
        ),
        (
            "no values",
            |r| {
                let s = &mut prof(r).samples[0];
                s.values.clear();
                s.timestamps_unix_nano.clear();
            },
            &["samples[0] has neither values nor timestamps"],
        ),
        (
            "values vs timestamps",
            |r| {
                let s = &mut prof(r).samples[0];
                s.timestamps_unix_nano = vec![1, 2, 3];
                s.values = vec![1, 1];
            },
            &["samples[0] has 2 values but 3 timestamps"],
        ),
        (
            "two values",
            |r| {
                let s = &mut prof(r).samples[0];
                s.timestamps_unix_nano.clear();
                s.values = vec![1, 2];
            },
            &["samples[0] has 2 values without timestamps"],
        ),
        (
            "negative value",
            |r| {
                let s = &mut prof(r).samples[0];
                s.timestamps_unix_nano.clear();
                s.values = vec![-4];
            },
            &["samples[0].values[0] -4 is negative"],
        ),
        (
            "string zero",
            |r| dict(r).string_table[0] = "x".into(),
            &["string_table[0] is not the zero value"],
        ),
        (
            "mapping zero",
            |r| dict(r).mapping_table[0].memory_limit = 1,
            &["mapping_table[0] is not the zero value"],
        ),
        (
            "location zero",
            |r| dict(r).location_table[0].address = 1,
            &["location_table[0] is not the zero value"],
        ),
        (
            "function zero",
            |r| dict(r).function_table[0].start_line = 1,
            &["function_table[0] is not the zero value"],
        ),
        (
            "link zero",
            |r| dict(r).link_table[0].trace_id = vec![1; 16],
            &["link_table[0] is not the zero value"],
        ),
        (
            "attribute zero",
            |r| dict(r).attribute_table[0].key_strindex = 1,
            &["attribute_table[0] is not the zero value"],
        ),
        (
            "stack zero",
            |r| dict(r).stack_table[0].location_indices = vec![1],
            &["stack_table[0] is not the zero value"],
        ),
        (
            "dictionary missing",
            |r| r.dictionary = None,
            &["out of range (0 strings)"],
        ),
    ]
}

#[test]
fn every_broken_reference_is_named() {
    for (name, mutate, want) in cases() {
        let mut req = base();
        mutate(&mut req);
        let err = validate(&req).expect_err(name);
        for w in want {
            assert!(err.message().contains(w), "{name}: {err:?} lacks {w:?}");
        }
        // decode refuses the same request, with the same reason.
        assert_eq!(decode(&req).unwrap_err(), err, "{name}");
        assert_eq!(decode_lenient(&req).unwrap_err(), err, "{name}");
        // And the wire form of the broken request is refused the same way.
        let back = ExportProfilesServiceRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        assert!(validate(&back).is_err(), "{name}");
    }
}

#[test]
fn empty_present_any_value_counts_as_zero() {
    // Go's pdata writes the attribute zero entry's value as an empty message.
    let mut req = base();
    dict(&mut req).attribute_table[0].value = Some(AnyValue { value: None });
    validate(&req).unwrap();
}

#[test]
fn timestamps_outside_the_window_are_accepted() {
    // A SHOULD in the spec; upstream ends its window at the last timestamp.
    let mut req = base();
    let p = prof(&mut req);
    p.duration_nano = 0;
    validate(&req).unwrap();
}

/// Every index slot of the request (zero entries excluded: they have
/// their own check), as a mutable reference, with the size
/// of the table it points into.
fn slots(r: &mut ExportProfilesServiceRequest) -> Vec<(&mut i32, usize)> {
    let d = r.dictionary.as_mut().unwrap();
    let (ns, na, nf, nm, nl, nk, nst) = (
        d.string_table.len(),
        d.attribute_table.len(),
        d.function_table.len(),
        d.mapping_table.len(),
        d.location_table.len(),
        d.link_table.len(),
        d.stack_table.len(),
    );
    let mut v: Vec<(&mut i32, usize)> = Vec::new();
    for m in d.mapping_table.iter_mut().skip(1) {
        v.push((&mut m.filename_strindex, ns));
        v.extend(m.attribute_indices.iter_mut().map(|a| (a, na)));
    }
    for l in d.location_table.iter_mut().skip(1) {
        v.push((&mut l.mapping_index, nm));
        v.extend(l.lines.iter_mut().map(|x| (&mut x.function_index, nf)));
        v.extend(l.attribute_indices.iter_mut().map(|a| (a, na)));
    }
    for f in d.function_table.iter_mut().skip(1) {
        v.push((&mut f.name_strindex, ns));
        v.push((&mut f.system_name_strindex, ns));
        v.push((&mut f.filename_strindex, ns));
    }
    for a in d.attribute_table.iter_mut().skip(1) {
        v.push((&mut a.key_strindex, ns));
        v.push((&mut a.unit_strindex, ns));
    }
    for s in d.stack_table.iter_mut().skip(1) {
        v.extend(s.location_indices.iter_mut().map(|l| (l, nl)));
    }
    for rp in &mut r.resource_profiles {
        for sp in &mut rp.scope_profiles {
            for p in &mut sp.profiles {
                if let Some(t) = &mut p.sample_type {
                    v.push((&mut t.type_strindex, ns));
                    v.push((&mut t.unit_strindex, ns));
                }
                if let Some(t) = &mut p.period_type {
                    v.push((&mut t.type_strindex, ns));
                    v.push((&mut t.unit_strindex, ns));
                }
                for s in &mut p.samples {
                    v.push((&mut s.stack_index, nst));
                    v.push((&mut s.link_index, nk));
                    v.extend(s.attribute_indices.iter_mut().map(|a| (a, na)));
                }
            }
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any single index pushed out of range (or negative) is caught.
    #[test]
    fn any_out_of_range_index_is_caught(pick in any::<prop::sample::Index>(), extra in 0i64..1_000_000, negative in any::<bool>()) {
        let mut req = base();
        let mut s = slots(&mut req);
        let (slot, len) = s.swap_remove(pick.index(s.len()));
        *slot = if negative { -1 - extra as i32 } else { (len as i64 + extra).min(i32::MAX as i64) as i32 };
        let err = validate(&req).unwrap_err();
        prop_assert!(err.message().contains("out of range") || err.message().contains("negative"), "{}", err);
    }

    /// Random bytes and random edits of a valid message never panic any of
    /// decode/validate/decode-to-model.
    #[test]
    fn hostile_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..16)) {
        if let Ok(req) = ExportProfilesServiceRequest::decode(bytes.as_slice()) {
            let _ = decode_lenient(&req);
        }
        let mut good = base().encode_to_vec();
        for (i, b) in flips {
            let k = i.index(good.len());
            good[k] ^= b;
        }
        if let Ok(req) = ExportProfilesServiceRequest::decode(good.as_slice()) {
            if validate(&req).is_ok() {
                // Whatever validates decodes.
                let _ = decode_lenient(&req).unwrap();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Index slots set to arbitrary values near the table bounds, and tables
    /// truncated (emptied too): whatever `validate` accepts, decode handles
    /// without panicking; whatever it refuses, it names.
    #[test]
    fn validated_means_decodable(
        edits in prop::collection::vec((any::<prop::sample::Index>(), -2i32..3), 0..6),
        truncate in prop::option::of((0usize..7, 0usize..4)),
    ) {
        let mut req = base();
        {
            let mut s = slots(&mut req);
            for (pick, delta) in &edits {
                let k = pick.index(s.len());
                let (slot, len) = &mut s[k];
                // Around 0 and around the end of the table.
                **slot = if *delta < 0 { *delta + 2 } else { *len as i32 - 1 + *delta };
            }
        }
        if let Some((table, keep)) = truncate {
            let d = dict(&mut req);
            match table {
                0 => d.mapping_table.truncate(keep),
                1 => d.location_table.truncate(keep),
                2 => d.function_table.truncate(keep),
                3 => d.link_table.truncate(keep),
                4 => d.string_table.truncate(keep),
                5 => d.attribute_table.truncate(keep),
                _ => d.stack_table.truncate(keep),
            }
        }
        match validate(&req) {
            Ok(()) => {
                let l = decode_lenient(&req).unwrap();
                prop_assert_eq!(l.profiles.len() + l.rejected.len(), 3);
            }
            Err(e) => prop_assert!(!e.message().is_empty()),
        }
    }
}
