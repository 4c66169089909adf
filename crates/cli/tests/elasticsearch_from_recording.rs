//! Elasticsearch documents from a real recording: a workload without frame
//! pointers is recorded with the real eBPF sampler, encoded to OTLP as the
//! agent does, and encoded for Elasticsearch as the collector does. The
//! stacktrace ids, frame ids and frame types must be what libpf computes for
//! the same frames, and the workload's functions must reach the stackframe
//! documents. Needs root.

use agent::loader::LoadOptions;
use agent::record::{self, RecordOptions};
use agent::session::{SessionOptions, Target};
use exporter_elasticsearch::encode::{encode, DocKind, EncodeOptions};
use libpf::{frame_id, FrameType, TraceHash};
use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use workloads::Kind;

#[test]
fn a_real_recording_encodes_to_consistent_elasticsearch_documents() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root to load eBPF");
    let mut w = workloads::spawn(Kind::CChains, None).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let rec = record::record(
        &RecordOptions {
            session: SessionOptions {
                table_cache: None,
                target: Target::pids(vec![w.pid()]),
                frequency: 99,
                load: LoadOptions::default(),
            },
            duration: Some(Duration::from_secs(2)),
            debug_info: false,
            symbolize: true,
        },
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap();
    w.kill().ok();
    let profile = rec.profile;
    assert!(profile.total_samples() > 50);

    let req = otlp::encode(
        std::slice::from_ref(&profile),
        &otlp::ResourceInfo {
            host_name: Some("test-host".into()),
            host_id: Some("0123456789abcdef".into()),
        },
    );
    otlp::validate(&req).expect("the agent's request is valid");
    let enc = encode(&req, &EncodeOptions::default());
    assert!(enc.rejected.is_empty(), "{:?}", enc.rejected);
    assert_eq!(enc.samples, profile.total_samples());

    // What libpf says the identities of the recorded stacks are.
    let mut expected_trace_ids = HashSet::new();
    let mut expected_frame_ids = HashSet::new();
    for s in &profile.samples {
        let unwound: Vec<_> = s.frames.iter().filter(|f| !f.inlined).collect();
        let hash = TraceHash::from_parts(unwound.iter().map(|f| (f.file_id, f.address_or_line)));
        expected_trace_ids.insert(hash.to_base64());
        // Native frames, and kernel frames when a sample caught the
        // workload in the kernel (a page fault): every symbolized frame with
        // a file gets a stackframe document.
        for f in &unwound {
            if let Some(file_id) = f.file_id {
                expected_frame_ids.insert(frame_id(file_id, f.address_or_line));
            }
        }
    }
    let ids = |kind| -> HashSet<String> {
        enc.docs
            .iter()
            .filter(|d| d.kind == kind)
            .map(|d| d.id.clone())
            .collect()
    };
    assert_eq!(
        ids(DocKind::Stacktrace),
        expected_trace_ids,
        "stacktrace ids are libpf TraceHashes"
    );
    let frames = ids(DocKind::Stackframe);
    assert!(!frames.is_empty());
    assert!(
        frames.is_subset(&expected_frame_ids),
        "stackframe ids are libpf frame ids of recorded frames"
    );
    let sources: String = enc
        .docs
        .iter()
        .filter(|d| d.kind == DocKind::Stackframe)
        .map(|d| d.source.as_str())
        .collect();
    for f in [
        "chain_a", "chain_b", "chain_c", "chain_x", "chain_y", "main",
    ] {
        assert!(
            sources.contains(&format!("\"{f}\"")),
            "{f} in stackframe documents"
        );
    }
    // Frame types: run-length encoded, root first, as libpf encodes them.
    for s in &profile.samples {
        let unwound: Vec<FrameType> = s
            .frames
            .iter()
            .filter(|f| !f.inlined)
            .rev()
            .map(|f| f.frame_type)
            .collect();
        let rle = libpf::encode_frame_types(unwound);
        assert!(
            enc.docs
                .iter()
                .any(|d| d.kind == DocKind::Stacktrace && d.source.contains(&rle)),
            "frame types {rle} of a recorded stack"
        );
    }
    // One event per sample.
    assert_eq!(enc.events, profile.total_samples());
}
