//! Example profiles for the writers' tests and demos.

use crate::{Executable, Profile, Sample, SampleLabels};
use libpf::{frame_flags, FileId, Frame, FrameKind, FrameType};
use std::collections::BTreeMap;
use std::sync::Arc;

pub const SERVER: FileId = FileId::new(0x1111_0000_0000_0001, 0x2222_0000_0000_0002);
pub const LIBC: FileId = FileId::new(0x3333_0000_0000_0003, 0x4444_0000_0000_0004);
/// A binary without symbols and without a GNU build id.
pub const BLOB: FileId = FileId::new(0x5555_0000_0000_0005, 0x6666_0000_0000_0006);
pub const APP_PY: FileId = FileId::new(0x7777_0000_0000_0007, 0x8888_0000_0000_0008);
pub const VMLINUX: FileId = FileId::UNKNOWN_KERNEL;

pub fn kernel(name: &str, addr: u64) -> Frame {
    Frame::new(FrameType::KERNEL, Some(VMLINUX), addr).with_function(name)
}

pub fn native(file: FileId, addr: u64, name: &str, src: Option<(&str, u32)>) -> Frame {
    let f = Frame::new(FrameType::NATIVE, Some(file), addr)
        .with_flags(frame_flags::RETURN_ADDRESS)
        .with_function(name);
    match src {
        Some((file, line)) => f.with_source(file, Some(line)),
        None => f,
    }
}

pub fn inlined(file: FileId, addr: u64, name: &str, src: (&str, u32)) -> Frame {
    native(file, addr, name, Some(src)).with_inlined(true)
}

pub fn python(name: &str, line: u32) -> Frame {
    Frame::new(
        FrameType::from_kind(FrameKind::Python),
        Some(APP_PY),
        u64::from(line),
    )
    .with_function(name)
    .with_source("app.py", Some(line))
}

/// An error frame as the agent stores it: no name, the code as data.
pub fn error(code: u32) -> Frame {
    Frame::new(FrameType::NATIVE.with_error(), None, u64::from(code)).with_flags(frame_flags::ERROR)
}

pub fn labels(pid: u32, tid: u32, comm: &str, thread: &str, cpu: u32) -> SampleLabels {
    SampleLabels {
        pid,
        tid,
        process_name: comm.into(),
        thread_name: thread.into(),
        cpu: Some(cpu),
        container_id: None,
        executable_path: None,
    }
}

pub fn sample(frames: Vec<Frame>, labels: SampleLabels, count: u64) -> Sample {
    Sample {
        frames: frames.into(),
        labels,
        count,
        timestamps_unix_ns: Vec::new(),
    }
}

fn exe(file_id: FileId, path: &str, build_id: Option<&str>, start: u64, end: u64) -> Executable {
    Executable {
        file_id,
        path: path.into(),
        gnu_build_id: build_id.map(Arc::from),
        vaddr_start: start,
        vaddr_end: end,
    }
}

/// A realistic profile: a server with a syscall path and worker threads
/// (inlined frames, recursion), a stripped vendor binary in a container
/// whose unwinding fails, a Python script, and the idle task (kernel only,
/// one frame unsymbolized). 44 samples.
pub fn realistic() -> Profile {
    let mut executables = BTreeMap::new();
    for e in [
        exe(
            SERVER,
            "/opt/app/bin/server",
            Some("4fa3c0ffee0d15ea5e5ca1ab1e0000000000beef"),
            0x1000,
            0x9000,
        ),
        exe(
            LIBC,
            "/lib/x86_64-linux-gnu/libc.so.6",
            Some("c1d2e3f4a5b6c7d8e9f00112233445566778899a"),
            0x28000,
            0x1bd000,
        ),
        exe(BLOB, "/opt/vendor/blob", None, 0x401000, 0x480000),
    ] {
        executables.insert(e.file_id, e);
    }
    let server_path: Arc<str> = "/opt/app/bin/server".into();
    let with_exe = |mut l: SampleLabels, path: &Arc<str>| {
        l.executable_path = Some(path.clone());
        l
    };

    let recv = vec![
        kernel("copy_user_enhanced_fast_string", 0xffff_ffff_81a0_1234),
        kernel("tcp_recvmsg", 0xffff_ffff_81b0_0010),
        kernel("__x64_sys_recvfrom", 0xffff_ffff_81b1_0020),
        kernel("entry_SYSCALL_64_after_hwframe", 0xffff_ffff_8200_0068),
        native(LIBC, 0x11a2b0, "__libc_recv", None),
        native(SERVER, 0x2345, "handle_request", Some(("server.c", 88))),
        native(SERVER, 0x1800, "main", Some(("server.c", 20))),
    ];
    let worker_tail = || {
        vec![
            native(SERVER, 0x2400, "handle_request", Some(("server.c", 90))),
            native(SERVER, 0x2800, "worker_main", Some(("server.c", 120))),
            native(LIBC, 0x94ac3, "start_thread", None),
            native(LIBC, 0x1266c0, "__clone3", None),
        ]
    };
    let mut parse = vec![
        inlined(SERVER, 0x3000, "crc32_update", ("crc.h", 7)),
        inlined(SERVER, 0x3000, "parse_header", ("parse.h", 12)),
        native(SERVER, 0x3000, "parse_request", Some(("parse.c", 40))),
    ];
    parse.extend(worker_tail());
    let mut walk = vec![
        native(SERVER, 0x2a00, "walk", Some(("tree.c", 10))),
        native(SERVER, 0x2a40, "walk", Some(("tree.c", 14))),
        native(SERVER, 0x2a40, "walk", Some(("tree.c", 14))),
    ];
    walk.extend(worker_tail());

    let mut vendor_labels = labels(200, 201, "vendor", "blob-io", 2);
    vendor_labels.container_id = Some("3f2a9c1e7b5d".into());
    let vendor = vec![
        native(BLOB, 0x401234, "blob+0x401234", None),
        Frame::new(FrameType::NATIVE, Some(BLOB), 0x402000u64),
        error(4001),
    ];

    let py = vec![python("compute", 12), python("<module>", 30)];

    let idle = vec![
        kernel("native_safe_halt", 0xffff_ffff_8190_0a10),
        kernel("default_idle", 0xffff_ffff_8190_0b20),
        Frame::new(FrameType::KERNEL, Some(VMLINUX), 0xffff_ffff_8111_2233u64),
        kernel("do_idle", 0xffff_ffff_8111_3344),
        kernel("cpu_startup_entry", 0xffff_ffff_8111_4455),
    ];

    Profile {
        start_unix_ns: 1_700_000_000_000_000_000,
        duration_ns: 5_000_000_000,
        frequency_hz: 100,
        host_name: "web-1".into(),
        samples: vec![
            sample(
                recv,
                with_exe(labels(100, 100, "server", "server", 0), &server_path),
                5,
            ),
            sample(
                parse.clone(),
                with_exe(labels(100, 101, "server", "worker-1", 1), &server_path),
                7,
            ),
            sample(
                parse,
                with_exe(labels(100, 102, "server", "worker-2", 1), &server_path),
                2,
            ),
            sample(
                walk,
                with_exe(labels(100, 102, "server", "worker-2", 3), &server_path),
                3,
            ),
            sample(vendor, vendor_labels, 4),
            sample(py, labels(300, 300, "python3", "python3", 0), 1),
            sample(idle, labels(0, 0, "swapper/1", "swapper/1", 1), 22),
        ],
        executables,
    }
}

/// A small profile for exact-output tests: 6 samples, one kernel frame,
/// one inlined frame, one error frame, two processes.
pub fn small() -> Profile {
    let mut executables = BTreeMap::new();
    executables.insert(
        SERVER,
        exe(SERVER, "/opt/app/bin/server", None, 0x1000, 0x9000),
    );
    Profile {
        start_unix_ns: 1_000,
        duration_ns: 2_000_000_000,
        frequency_hz: 20,
        host_name: "h".into(),
        samples: vec![
            sample(
                vec![
                    inlined(SERVER, 0x3000, "parse_header", ("parse.h", 12)),
                    native(SERVER, 0x3000, "parse", Some(("parse.c", 40))),
                    native(SERVER, 0x1800, "main", Some(("server.c", 20))),
                ],
                labels(1, 1, "server", "server", 0),
                3,
            ),
            sample(
                vec![
                    kernel("do_syscall_64", 0xffff_ffff_8100_0010),
                    native(SERVER, 0x1800, "main", Some(("server.c", 20))),
                ],
                labels(1, 2, "server", "io", 1),
                2,
            ),
            sample(vec![error(4001)], labels(2, 2, "tool", "tool", 0), 1),
        ],
        executables,
    }
}

/// What every output must call the error frames of [`errors`], in the
/// order of its samples: each code named from spec/errors.json (4000 is
/// `native_no_mapping`), `error_N` for a code the spec does not know.
pub const ERROR_FRAME_NAMES: [&str; 3] = [
    "<unwinding aborted due to error native_no_mapping>",
    "<unwinding aborted due to error stack_length_exceeded>",
    "<unwinding aborted due to error error_4242>",
];

/// Error frames as the agent records them (error bit on the unwinder's
/// kind, no name, the code as data), under `main`: a native unwinder error
/// 4000, the abort marker with code 2, and a code the spec does not know.
/// 6 samples, one process; their names are [`ERROR_FRAME_NAMES`].
pub fn errors() -> Profile {
    let mut executables = BTreeMap::new();
    executables.insert(
        SERVER,
        exe(SERVER, "/opt/app/bin/server", None, 0x1000, 0x9000),
    );
    let main = native(SERVER, 0x1800, "main", Some(("server.c", 20)));
    let stacks = [
        Frame::new(FrameType::NATIVE.with_error(), None, 4000u64),
        Frame::new(FrameType::ABORT, None, 2u64),
        error(4242),
    ];
    Profile {
        start_unix_ns: 1_000,
        duration_ns: 2_000_000_000,
        frequency_hz: 20,
        host_name: "h".into(),
        samples: stacks
            .into_iter()
            .zip(1..)
            .map(|(err, count)| {
                sample(
                    vec![err, main.clone()],
                    labels(1, 1, "server", "server", 0),
                    count,
                )
            })
            .collect(),
        executables,
    }
}
