//! Realistic profiles for the tests: several processes, kernel + native
//! (with inlines) + interpreted frames, error frames, timestamps.
#![allow(dead_code)]

use libpf::{FileId, Frame, FrameKind, FrameType};
use profile::{Executable, Profile, Sample, SampleLabels};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub const START: u64 = 1_700_000_000_000_000_000;
pub const SECOND: u64 = 1_000_000_000;

pub fn app_id() -> FileId {
    FileId::from_bytes(b"\x7fELF app binary")
}
pub fn libc_id() -> FileId {
    FileId::from_bytes(b"\x7fELF libc")
}
pub fn python_id() -> FileId {
    FileId::from_bytes(b"\x7fELF python3.12")
}

pub fn kernel(name: &str, addr: u64) -> Frame {
    Frame::new(FrameType::KERNEL, None, addr).with_function(name)
}

pub fn native(file: FileId, addr: u64, name: &str, src: &str, line: u32) -> Frame {
    Frame::new(FrameType::NATIVE, Some(file), addr)
        .with_function(name)
        .with_source(src, Some(line))
}

pub fn python(name: &str, file: &str, line: u32) -> Frame {
    // Interpreted frames travel without FileId (mapping 0).
    Frame::new(
        FrameType::from_kind(FrameKind::Python),
        None,
        u64::from(line),
    )
    .with_function(name)
    .with_source(file, Some(line))
}

pub fn labels(pid: u32, tid: u32, comm: &str, thread: &str, cpu: u32) -> SampleLabels {
    SampleLabels {
        pid,
        tid,
        process_name: Arc::from(comm),
        thread_name: Arc::from(thread),
        cpu: Some(cpu),
        container_id: (pid == 300).then(|| Arc::from("0123456789abcdef")),
        executable_path: Some(Arc::from(match comm {
            "python3" => "/usr/bin/python3.12",
            _ => "/usr/bin/app",
        })),
    }
}

/// A deep native stack: `depth` frames main → work_N, plus inlines.
pub fn app_stack(depth: usize, variant: u64) -> Vec<Frame> {
    let mut frames = vec![
        kernel("do_syscall_64", 0xffff_ffff_8100_1000),
        kernel("entry_SYSCALL_64", 0xffff_ffff_8200_0040),
        Frame::new(FrameType::NATIVE, Some(libc_id()), 0x2_9d90 + variant).with_function("__write"),
        // An inlined helper inside `flush`, same address.
        native(app_id(), 0x1_2340 + variant, "buf_copy", "buf.h", 12).with_inlined(true),
        native(app_id(), 0x1_2340 + variant, "flush", "io.c", 88),
    ];
    for i in 0..depth.saturating_sub(6) {
        frames.push(native(
            app_id(),
            0x2_0000 + (i as u64) * 0x40,
            &format!("work_{i}"),
            "work.c",
            100 + i as u32,
        ));
    }
    frames.push(native(app_id(), 0x1_0010, "main", "main.c", 5));
    frames
}

pub fn python_stack(variant: u32) -> Vec<Frame> {
    vec![
        Frame::new(FrameType::NATIVE, Some(libc_id()), 0x9_1234).with_function("memcpy"),
        // Unsymbolized native frame: no lines in OTLP.
        Frame::new(
            FrameType::NATIVE,
            Some(python_id()),
            0x41_0000 + u64::from(variant),
        ),
        python("inner", "app.py", 10 + variant),
        python("handler", "app.py", 40),
        python("<module>", "app.py", 1),
    ]
}

pub fn error_stack() -> Vec<Frame> {
    vec![
        Frame::new(FrameType::NATIVE.with_error(), None, 4000u64)
            .with_function("<unwinding aborted due to error native_no_mapping>"),
        native(app_id(), 0x1_0010, "main", "main.c", 5),
    ]
}

pub fn abort_stack() -> Vec<Frame> {
    vec![
        Frame::new(FrameType::ABORT, None, 2u64)
            .with_function("<unwinding aborted due to error stack_length_exceeded>"),
        kernel("asm_exc_page_fault", 0xffff_ffff_8200_1000),
    ]
}

pub fn executables() -> BTreeMap<FileId, Executable> {
    let mut m = BTreeMap::new();
    for (id, path, gnu, s, e) in [
        (
            app_id(),
            "/usr/bin/app",
            Some("aabbccdd00112233"),
            0x1_0000,
            0x9_0000,
        ),
        (
            libc_id(),
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            Some("c0ffee"),
            0x2_8000,
            0x1a_0000,
        ),
        (
            python_id(),
            "/usr/bin/python3.12",
            None,
            0x40_0000,
            0x80_0000,
        ),
    ] {
        m.insert(
            id,
            Executable {
                file_id: id,
                path: Arc::from(path),
                gnu_build_id: gnu.map(Arc::from),
                vaddr_start: s,
                vaddr_end: e,
            },
        );
    }
    m
}

/// `n_samples` distinct samples over 3 processes (pids 100, 200, 300), with
/// timestamps on most; stacks of about `depth` frames.
pub fn realistic(n_samples: usize, depth: usize) -> Profile {
    let mut samples = Vec::new();
    for i in 0..n_samples {
        let k = i as u64;
        let (frames, labels) = match i % 5 {
            0 | 1 => (
                app_stack(depth, k % 7),
                labels(100, 100 + (i % 3) as u32, "app", "worker", (i % 4) as u32),
            ),
            2 => (
                python_stack((i % 4) as u32),
                labels(200, 201, "python3", "MainThread", 1),
            ),
            3 => (error_stack(), labels(300, 301, "app", "io", 2)),
            _ => (abort_stack(), labels(300, 302, "app", "", 3)),
        };
        let count = 1 + k % 3;
        let timestamps = if i % 6 == 5 {
            Vec::new()
        } else {
            (0..count)
                .map(|j| START + (k * 3 + j) * 1_000_000)
                .collect()
        };
        samples.push(Sample {
            frames: frames.into(),
            labels,
            count,
            timestamps_unix_ns: timestamps,
        });
    }
    Profile {
        start_unix_ns: START,
        duration_ns: 5 * SECOND,
        frequency_hz: 20,
        host_name: "build-host".into(),
        samples,
        executables: executables(),
    }
}

/// Per (frames, labels): total count and sorted timestamps (None when any
/// contributing sample had no timestamps): the model's content regardless
/// of how samples were split or merged.
pub type Aggregate = HashMap<(Vec<Frame>, SampleLabels), (u64, Option<Vec<u64>>)>;

pub fn aggregate<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Aggregate {
    let mut m: Aggregate = HashMap::new();
    for s in samples {
        let e = m
            .entry((s.frames.to_vec(), s.labels.clone()))
            .or_insert((0, Some(Vec::new())));
        e.0 += s.count;
        match (&mut e.1, s.timestamps_unix_ns.len() as u64 == s.count) {
            (Some(t), true) => t.extend(&s.timestamps_unix_ns),
            (t, _) => *t = None,
        }
    }
    for v in m.values_mut() {
        if let Some(t) = &mut v.1 {
            t.sort_unstable();
        }
    }
    m
}
