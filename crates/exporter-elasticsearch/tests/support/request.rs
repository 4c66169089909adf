//! Builds OTLP profile requests the way the eBPF agent does (dictionary with
//! zero entries first, frame types on every location, htlhash on mappings).
#![allow(dead_code)]

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development::{
    Function, KeyValueAndUnit, Line, Location, Mapping, Profile, ProfilesDictionary,
    ResourceProfiles, Sample, ScopeProfiles, Stack, ValueType,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

pub struct ReqBuilder {
    pub dict: ProfilesDictionary,
    strings: HashMap<String, i32>,
    pub resources: Vec<ResourceProfiles>,
}

impl Default for ReqBuilder {
    fn default() -> Self {
        Self::new()
    }
}

pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

impl ReqBuilder {
    pub fn new() -> Self {
        let mut b = Self {
            dict: ProfilesDictionary::default(),
            strings: HashMap::new(),
            resources: Vec::new(),
        };
        b.s("");
        b.dict.mapping_table.push(Mapping::default());
        b.dict.location_table.push(Location::default());
        b.dict.function_table.push(Function::default());
        b.dict.attribute_table.push(KeyValueAndUnit::default());
        b.dict.stack_table.push(Stack::default());
        b
    }

    pub fn s(&mut self, s: &str) -> i32 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.dict.string_table.len() as i32;
        self.dict.string_table.push(s.into());
        self.strings.insert(s.into(), i);
        i
    }

    pub fn attr(&mut self, key: &str, value: &str) -> i32 {
        let k = self.s(key);
        let v = self.s(value);
        // Referenced string form, as v1.10 allows.
        self.dict.attribute_table.push(KeyValueAndUnit {
            key_strindex: k,
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValueStrindex(v)),
            }),
            unit_strindex: 0,
        });
        self.dict.attribute_table.len() as i32 - 1
    }

    pub fn mapping(&mut self, filename: &str, htlhash: Option<&str>) -> i32 {
        let f = self.s(filename);
        let attrs = htlhash
            .map(|h| vec![self.attr("process.executable.build_id.htlhash", h)])
            .unwrap_or_default();
        self.dict.mapping_table.push(Mapping {
            memory_start: 0x1000,
            memory_limit: 0x100000,
            file_offset: 0,
            filename_strindex: f,
            attribute_indices: attrs,
        });
        self.dict.mapping_table.len() as i32 - 1
    }

    pub fn function(&mut self, name: &str, file: &str, start_line: i64) -> i32 {
        let n = self.s(name);
        let f = self.s(file);
        self.dict.function_table.push(Function {
            name_strindex: n,
            system_name_strindex: n,
            filename_strindex: f,
            start_line,
        });
        self.dict.function_table.len() as i32 - 1
    }

    /// `lines`: (function index, line, column), innermost first.
    pub fn location(
        &mut self,
        mapping: i32,
        address: u64,
        frame_type: Option<&str>,
        lines: &[(i32, i64, i64)],
    ) -> i32 {
        let attrs = frame_type
            .map(|t| vec![self.attr("profile.frame.type", t)])
            .unwrap_or_default();
        self.dict.location_table.push(Location {
            mapping_index: mapping,
            address,
            lines: lines
                .iter()
                .map(|&(f, l, c)| Line {
                    function_index: f,
                    line: l,
                    column: c,
                })
                .collect(),
            attribute_indices: attrs,
        });
        self.dict.location_table.len() as i32 - 1
    }

    pub fn stack(&mut self, leaf_first: &[i32]) -> i32 {
        self.dict.stack_table.push(Stack {
            location_indices: leaf_first.to_vec(),
        });
        self.dict.stack_table.len() as i32 - 1
    }

    pub fn value_type(&mut self, ty: &str, unit: &str) -> ValueType {
        ValueType {
            type_strindex: self.s(ty),
            unit_strindex: self.s(unit),
        }
    }

    pub fn cpu_profile(
        &mut self,
        time_unix_nano: u64,
        period: i64,
        samples: Vec<Sample>,
    ) -> Profile {
        Profile {
            sample_type: Some(self.value_type("samples", "count")),
            period_type: Some(self.value_type("cpu", "nanoseconds")),
            period,
            time_unix_nano,
            duration_nano: 5_000_000_000,
            samples,
            ..Default::default()
        }
    }

    pub fn sample(&mut self, stack: i32, thread: Option<&str>, timestamps: Vec<u64>) -> Sample {
        let attrs = thread
            .map(|t| vec![self.attr("thread.name", t)])
            .unwrap_or_default();
        Sample {
            stack_index: stack,
            attribute_indices: attrs,
            timestamps_unix_nano: timestamps,
            ..Default::default()
        }
    }

    pub fn add_resource(&mut self, attrs: &[(&str, &str)], profiles: Vec<Profile>) {
        self.resources.push(ResourceProfiles {
            resource: Some(Resource {
                attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
                ..Default::default()
            }),
            scope_profiles: vec![ScopeProfiles {
                profiles,
                ..Default::default()
            }],
            schema_url: String::new(),
        });
    }

    pub fn build(self) -> ExportProfilesServiceRequest {
        ExportProfilesServiceRequest {
            resource_profiles: self.resources,
            dictionary: Some(self.dict),
        }
    }
}

/// A realistic agent request: `processes` processes on one host, each with
/// kernel, native (libc, the binary) and Python frames, several threads,
/// `samples_per_process` timestamps spread over 5 s at 20 Hz. `variant`
/// changes the stacks so different requests share some but not all frames.
pub fn realistic_request(
    host: &str,
    variant: u64,
    processes: usize,
    samples_per_process: usize,
) -> ExportProfilesServiceRequest {
    let mut b = ReqBuilder::new();
    let t0 = 1_700_000_000_000_000_000u64 + variant * 5_000_000_000;
    let kernel = b.mapping("vmlinux", Some("026a2d6a60ee6b4eb8ec85adf2e76f4d"));
    let libc = b.mapping("libc.so.6", Some("caf6e5907166ac76eef618e5f7f59cd9"));
    let exe = b.mapping("python3.12", Some("12345678124397f5876543218774849e"));
    let k_sys = b.location(kernel, 0xffff_ffff_8100_1000, Some("kernel"), &[]);
    let k_sched = b.location(kernel, 0xffff_ffff_8100_2000, Some("kernel"), &[]);
    let f_read = b.function("__libc_read", "read.c", 20);
    let l_read = b.location(libc, 0x11_4a3c, Some("native"), &[(f_read, 26, 0)]);
    let l_start = b.location(libc, 0x2_9d8f, Some("native"), &[]);
    let f_main = b.function("Py_RunMain", "Modules/main.c", 600);
    let f_inl = b.function("pymain_run_python", "Modules/main.c", 550);
    let l_main = b.location(
        exe,
        0x4_5123,
        Some("native"),
        &[(f_inl, 560, 5), (f_main, 620, 9)],
    );
    let l_eval = b.location(exe, 0x1_2345, Some("native"), &[]);
    let mut profiles_by_process = Vec::new();
    let mut rng = variant.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for p in 0..processes {
        let mut py = Vec::new();
        for d in 0..4 {
            let f = b.function(
                &format!("handler_{p}_{d}"),
                &format!("/srv/app{p}/views.py"),
                10 * d as i64 + 1,
            );
            py.push(b.location(
                0,
                0,
                Some("cpython"),
                &[(f, 10 * d as i64 + 3 + (variant % 3) as i64, 0)],
            ));
        }
        let stacks = [
            b.stack(&[
                k_sys, k_sched, l_read, py[0], py[1], l_eval, l_main, l_start,
            ]),
            b.stack(&[py[2], py[1], l_eval, l_main, l_start]),
            b.stack(&[py[3], py[2], py[1], l_eval, l_main, l_start]),
            b.stack(&[l_eval, l_main, l_start]),
        ];
        let mut samples = Vec::new();
        let per_stack = samples_per_process / stacks.len();
        for (si, &st) in stacks.iter().enumerate() {
            let n = if si == 0 {
                samples_per_process - per_stack * (stacks.len() - 1)
            } else {
                per_stack
            };
            let ts: Vec<u64> = (0..n).map(|_| t0 + next() % 5_000_000_000).collect();
            if ts.is_empty() {
                continue;
            }
            let thread = format!("worker-{}", si % 2);
            samples.push(b.sample(st, Some(&thread), ts));
        }
        let profile = b.cpu_profile(t0, 50_000_000, samples);
        profiles_by_process.push((p, profile));
    }
    for (p, profile) in profiles_by_process {
        let pid = (1000 + p).to_string();
        let name = format!("app{p}");
        b.add_resource(
            &[
                ("host.id", host),
                ("host.name", &format!("{host}.example")),
                ("host.arch", "AMD64"),
                ("os.type", "Linux"),
                ("cloud.provider", "Local"),
                ("process.pid", &pid),
                ("process.executable.name", &name),
                ("container.id", &format!("c0ffee{p}")),
                ("service.name", &format!("svc-{p}")),
            ],
            vec![profile],
        );
    }
    b.build()
}
