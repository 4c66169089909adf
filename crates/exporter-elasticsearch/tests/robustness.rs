//! Bad input never panics or hangs: randomly corrupted requests either encode
//! or are rejected profile by profile with a reason.

mod support;

use exporter_elasticsearch::{encode, EncodeOptions, Schema};
use prost::Message as _;
use support::request::realistic_request;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// An index that is often valid, sometimes just out of range, sometimes wild.
    fn index(&mut self, len: usize) -> i32 {
        match self.below(6) {
            0 => -1 - self.below(3) as i32,
            1 => len as i32,
            2 => i32::MAX,
            _ => self.below(len) as i32,
        }
    }
}

#[test]
fn corrupted_requests_never_panic() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let base = realistic_request("host-x", 3, 3, 20);
    let total_profiles: usize = base
        .resource_profiles
        .iter()
        .map(|r| r.scope_profiles[0].profiles.len())
        .sum();
    let mut rejected_some = 0;
    for iter in 0..1500 {
        let mut req = base.clone();
        let d = req.dictionary.as_mut().unwrap();
        for _ in 0..1 + rng.below(4) {
            let (ns, nl, nm, nf, na, nst) = (
                d.string_table.len(),
                d.location_table.len(),
                d.mapping_table.len(),
                d.function_table.len(),
                d.attribute_table.len(),
                d.stack_table.len(),
            );
            if ns * nl * nm * nf * na * nst == 0 {
                break;
            }
            match rng.below(12) {
                0 => {
                    let i = rng.below(nst);
                    let s = &mut d.stack_table[i];
                    if !s.location_indices.is_empty() {
                        let j = rng.below(s.location_indices.len());
                        s.location_indices[j] = rng.index(nl);
                    }
                }
                1 => d.location_table[rng.below(nl)].mapping_index = rng.index(nm),
                2 => {
                    let l = &mut d.location_table[rng.below(nl)];
                    if let Some(line) = l.lines.first_mut() {
                        line.function_index = rng.index(nf);
                        line.line = rng.next() as i64;
                    }
                }
                3 => {
                    let l = &mut d.location_table[rng.below(nl)];
                    l.attribute_indices = vec![rng.index(na)];
                }
                4 => d.function_table[rng.below(nf)].name_strindex = rng.index(ns),
                5 => d.attribute_table[rng.below(na)].key_strindex = rng.index(ns),
                6 => d.mapping_table[rng.below(nm)].attribute_indices = vec![rng.index(na)],
                7 => {
                    let t = rng.below(5);
                    match t {
                        0 => d.stack_table.truncate(rng.below(nst)),
                        1 => d.location_table.truncate(rng.below(nl)),
                        2 => d.function_table.clear(),
                        3 => d.string_table.truncate(rng.below(ns)),
                        _ => d.attribute_table.truncate(rng.below(na)),
                    }
                }
                8 => {
                    let p = &mut req.resource_profiles[rng.below(3)].scope_profiles[0].profiles[0];
                    p.period = rng.next() as i64;
                }
                9 => {
                    let p = &mut req.resource_profiles[rng.below(3)].scope_profiles[0].profiles[0];
                    if let Some(s) = p.samples.first_mut() {
                        s.timestamps_unix_nano.clear();
                        s.values = vec![rng.next() as i64 % 5_000_000];
                    }
                }
                10 => {
                    let p = &mut req.resource_profiles[rng.below(3)].scope_profiles[0].profiles[0];
                    if let Some(s) = p.samples.first_mut() {
                        s.stack_index = rng.index(nst);
                        s.attribute_indices = vec![rng.index(na)];
                    }
                }
                _ => {
                    let p = &mut req.resource_profiles[rng.below(3)].scope_profiles[0].profiles[0];
                    if let Some(st) = p.sample_type.as_mut() {
                        st.type_strindex = rng.index(ns);
                    }
                }
            }
        }
        let schema = if iter % 2 == 0 {
            Schema::Otel
        } else {
            Schema::Ecs
        };
        let e = encode(
            &req,
            &EncodeOptions {
                schema,
                seed: iter,
                max_events: 100_000,
                ..Default::default()
            },
        );
        assert_eq!(
            e.profiles + e.rejected.len(),
            total_profiles,
            "iteration {iter}"
        );
        for r in &e.rejected {
            assert!(!r.to_string().is_empty());
        }
        if !e.rejected.is_empty() {
            rejected_some += 1;
        }
        assert!(e.events <= 100_000);
    }
    assert!(
        rejected_some > 100,
        "the corruptions do reach validation ({rejected_some})"
    );
}

#[test]
fn random_bytes_decode_or_fail_cleanly() {
    let mut rng = Rng(42);
    let good = realistic_request("h", 0, 2, 10).encode_to_vec();
    for _ in 0..2000 {
        let mut bytes = good.clone();
        for _ in 0..1 + rng.below(8) {
            let i = rng.below(bytes.len());
            bytes[i] = rng.next() as u8;
        }
        bytes.truncate(rng.below(bytes.len() + 1).max(bytes.len() / 2));
        if let Ok(req) = opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest::decode(bytes.as_slice()) {
            let _ = encode(&req, &EncodeOptions { max_events: 100_000, ..Default::default() });
        }
    }
}
