//! End-to-end unwinding on this machine: real eBPF programs, real perf
//! events, real workloads built without frame pointers. These need root
//! (CI runs as root) and fail loudly without it.

use agent::loader::LoadOptions;
use agent::record::{self, RecordOptions};
use agent::session::{Filter, Session, SessionOptions, Target};
use libpf::FrameType;
use profile::{Profile, Sample};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use workloads::{Kind, Reaped};

/// One BPF session at a time: parallel sessions on 2 CPUs would starve the
/// workloads and each other.
static BPF: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    BPF.lock().unwrap_or_else(|e| e.into_inner())
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests load eBPF programs and must run as root"
    );
}

fn options(target: Target, frequency: u64, seconds: u64) -> RecordOptions {
    RecordOptions {
        session: SessionOptions {
            table_cache: None,
            target,
            frequency,
            load: LoadOptions::default(),
        },
        duration: Some(Duration::from_secs(seconds)),
        debug_info: false,
        symbolize: true,
    }
}

/// Root-first names of a stack, as the chain checker wants them.
fn root_first(p: &Profile, s: &Sample) -> Vec<String> {
    s.frames
        .iter()
        .rev()
        .map(|f| p.frame_name(f).into_owned())
        .collect()
}

/// Share of the samples of `pred` stacks that contain one expected chain.
fn share(p: &Profile, kind: Kind, pred: impl Fn(&Sample) -> bool) -> (f64, u64) {
    let picked: Vec<(Vec<String>, u64)> = p
        .samples
        .iter()
        .filter(|s| pred(s))
        .map(|s| (root_first(p, s), s.count))
        .collect();
    let total = picked.iter().map(|(_, c)| c).sum();
    (
        workloads::full_chain_share(&picked, &kind.expected_chains()),
        total,
    )
}

/// Asserts that at least 50 samples were taken and that 99 % of them have a
/// stack (names root first) that `complete` accepts.
fn assert_nearly_all_complete(p: &Profile, what: &str, complete: impl Fn(&[String]) -> bool) {
    let total: u64 = p.samples.iter().map(|s| s.count).sum();
    let good: u64 = p
        .samples
        .iter()
        .filter(|s| complete(&root_first(p, s)))
        .map(|s| s.count)
        .sum();
    assert!(total >= 50, "{total} samples");
    let misses: Vec<String> = p
        .samples
        .iter()
        .filter(|s| !complete(&root_first(p, s)))
        .take(5)
        .map(|s| format!("x{} {}", s.count, root_first(p, s).join(";")))
        .collect();
    assert!(
        good as f64 >= 0.99 * total as f64,
        "{what} in {good} of {total} samples; misses:\n{}",
        misses.join("\n")
    );
}

fn show_misses(p: &Profile, kind: Kind, pred: impl Fn(&Sample) -> bool) -> String {
    let mut out = String::new();
    for s in p.samples.iter().filter(|s| pred(s)) {
        let names = root_first(p, s);
        if workloads::full_chain_share(&[(names.clone(), s.count)], &kind.expected_chains()) < 1.0 {
            out.push_str(&format!(
                "{} x{}: {}\n",
                s.labels.process_name,
                s.count,
                names.join(";")
            ));
        }
    }
    out
}

fn assert_chains_for_pid(kind: Kind, seconds: u64) {
    require_root();
    let _g = lock();
    let mut w = workloads::spawn(kind, None).expect("workload builds and starts");
    std::thread::sleep(Duration::from_millis(200));
    let pid = w.pid();
    let rec = record::record(
        &options(Target::pids(vec![pid]), 199, seconds),
        &AtomicBool::new(false),
        |_| {},
    )
    .expect("recording works");
    w.kill().ok();
    let comm = kind.comm();
    let (share, total) = share(&rec.profile, kind, |s| &*s.labels.process_name == comm);
    assert!(
        total >= 50,
        "{kind:?}: only {total} samples: {}",
        rec.summary.line()
    );
    assert!(
        share >= 0.99,
        "{kind:?}: full chains in {:.2}% of {total} samples; misses:\n{}",
        share * 100.0,
        show_misses(&rec.profile, kind, |s| &*s.labels.process_name == comm)
    );
    // Filtered in the kernel: nothing else was unwound.
    assert!(
        rec.profile
            .samples
            .iter()
            .all(|s| &*s.labels.process_name == comm),
        "--pid recorded other processes: {:?}",
        rec.profile
            .samples
            .iter()
            .map(|s| &s.labels.process_name)
            .collect::<Vec<_>>()
    );
}

#[test]
fn c_without_frame_pointers_has_full_chains() {
    assert_chains_for_pid(Kind::CChains, 3);
}

#[test]
fn cpp_templates_and_deep_recursion_have_full_chains() {
    assert_chains_for_pid(Kind::CppTemplates, 3);
}

#[test]
fn rust_release_linked_by_lld_has_full_chains() {
    assert_chains_for_pid(Kind::RustRelease, 3);
}

#[test]
fn library_dlopened_after_start_has_full_chains() {
    // The recording starts before the dlopen: the first samples in the new
    // library trigger a rescan.
    assert_chains_for_pid(Kind::DlopenLate, 4);
}

#[test]
fn short_lived_forked_children_have_full_chains() {
    assert_chains_for_pid(Kind::Forker, 4);
}

#[test]
fn kernel_frames_sit_above_user_frames() {
    assert_kernel_frames_above_user_frames(LoadOptions::default());
}

/// Kernels before 5.15 have no bpf_task_pt_regs: the user registers of a
/// sample taken in kernel mode come from the top of the kernel stack. The
/// same workload must unwind as completely that way.
#[test]
fn kernel_mode_samples_unwind_with_registers_from_the_kernel_stack() {
    assert_kernel_frames_above_user_frames(LoadOptions {
        force_stack_pt_regs: true,
        ..LoadOptions::default()
    });
}

fn assert_kernel_frames_above_user_frames(load: LoadOptions) {
    require_root();
    let _g = lock();
    let mut w = workloads::spawn(Kind::SyscallHeavy, None).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut opts = options(Target::pids(vec![w.pid()]), 199, 3);
    opts.session.load = load;
    let rec = record::record(&opts, &AtomicBool::new(false), |_| {}).unwrap();
    w.kill().ok();
    let (share, total) = share(&rec.profile, Kind::SyscallHeavy, |_| true);
    assert!(share >= 0.99, "full chains {share} of {total}");
    // Stacks that went through the kernel: kernel frames (leaf side) first,
    // then the user chain, in one trace.
    let p = &rec.profile;
    let mixed: u64 = p
        .samples
        .iter()
        .filter(|s| {
            let k = s
                .frames
                .iter()
                .position(|f| f.frame_type == FrameType::KERNEL);
            let u = s.frames.iter().position(|f| p.frame_name(f) == "sys_loop");
            let last_kernel = s
                .frames
                .iter()
                .rposition(|f| f.frame_type == FrameType::KERNEL);
            matches!((k, u, last_kernel), (Some(0), Some(u), Some(lk)) if lk < u)
        })
        .map(|s| s.count)
        .sum();
    assert!(
        mixed * 4 >= total,
        "expected at least a quarter of {total} samples in the kernel under sys_loop, got {mixed}"
    );
}

#[test]
fn whole_system_recording_finds_the_workloads() {
    require_root();
    let _g = lock();
    let mut c = workloads::spawn(Kind::CChains, None).unwrap();
    let mut r = workloads::spawn(Kind::RustRelease, None).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let rec = record::record(
        &options(Target::System, 199, 4),
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap();
    c.kill().ok();
    r.kill().ok();
    for (kind, pid) in [(Kind::CChains, c.pid()), (Kind::RustRelease, r.pid())] {
        let (share, total) = share(&rec.profile, kind, |s| s.labels.pid == pid);
        assert!(total >= 100, "{kind:?}: {total} samples");
        assert!(
            share >= 0.99,
            "{kind:?}: {:.2}% of {total}; misses:\n{}",
            share * 100.0,
            show_misses(&rec.profile, kind, |s| s.labels.pid == pid)
        );
    }
}

/// Runs a session until `deadline`, draining both ring buffers.
fn pump(s: &mut Session, for_how_long: Duration) {
    let end = Instant::now() + for_how_long;
    while Instant::now() < end {
        s.wait(Duration::from_millis(50));
        s.drain(|_, _| {});
    }
}

const CHURN: [Kind; 3] = [Kind::Forker, Kind::DlopenLate, Kind::CChains];

/// Executable ids (FileId high halves) of the workloads' own files, with
/// their paths.
fn workload_exe_ids() -> Vec<(u64, std::path::PathBuf)> {
    let mut ids = Vec::new();
    for k in CHURN {
        let b = workloads::build(k).unwrap();
        for f in std::iter::once(&b.exe).chain(&b.extra) {
            if f.extension().is_some_and(|e| e == "c" || e == "h") {
                continue;
            }
            ids.push((libpf::FileId::from_file(f).unwrap().hi(), f.clone()));
        }
    }
    ids
}

#[test]
fn nothing_leaks_after_workloads_exit_whole_system() {
    require_root();
    let _g = lock();
    let mut session = Session::new(SessionOptions {
        table_cache: None,
        target: Target::System,
        frequency: 99,
        load: LoadOptions::default(),
    })
    .unwrap();
    session.start().unwrap();
    let exes = workload_exe_ids();
    let mut running: Vec<_> = CHURN
        .iter()
        .map(|&k| workloads::spawn(k, None).unwrap())
        .collect();
    pump(&mut session, Duration::from_secs(3));
    let pids: Vec<u32> = running.iter().map(|r| r.pid()).collect();
    // A process is set up once it is sampled: scanned, or (where the kernel
    // unwinds processes without a scan) reported for its labels. The
    // forker's parent sleeps in waitpid and may never be; its busy children
    // are.
    for (kind, p) in CHURN.iter().zip(&pids) {
        if *kind != Kind::Forker {
            assert!(
                session.tracker.is_tracked(*p) || session.tracker.known_meta(*p).is_some(),
                "workload {p} was seen"
            );
        }
    }
    for (id, path) in &exes {
        assert!(
            session.has_table(*id),
            "table of {} loaded while the workloads run",
            path.display()
        );
    }
    for r in &mut running {
        r.kill().ok();
    }
    // Exit events arrive at once; a reap pass catches anything missed.
    pump(&mut session, Duration::from_secs(1));
    session.reap();
    for p in &pids {
        assert!(
            !session.tracker.is_tracked(*p),
            "workload {p} still tracked"
        );
    }
    // Other processes come and go on a whole system; the workloads' own
    // executables, mapped by nobody else, are held by no address space: their
    // tables stay loaded only for the next process of the same file, and go
    // as soon as idle tables are let go.
    for (id, path) in &exes {
        assert!(
            session.tracker.holders(*id).is_empty(),
            "table of {} leaked; held by (asid, users, pids): {:?}",
            path.display(),
            session.tracker.holders(*id)
        );
    }
    session.unload_idle_tables();
    for (id, path) in &exes {
        assert!(
            !session.has_table(*id),
            "idle table of {} still loaded",
            path.display()
        );
    }
}

#[test]
fn nothing_leaks_after_workloads_exit_exact_counts() {
    require_root();
    let _g = lock();
    let mut running: Vec<_> = CHURN
        .iter()
        .map(|&k| workloads::spawn(k, None).unwrap())
        .collect();
    let pids: Vec<u32> = running.iter().map(|r| r.pid()).collect();
    let mut session = Session::new(SessionOptions {
        table_cache: None,
        target: Target::pids(pids.clone()),
        frequency: 99,
        load: LoadOptions::default(),
    })
    .unwrap();
    session.start().unwrap();
    pump(&mut session, Duration::from_secs(3));
    let (procs, maps, tables) = session.kernel_map_counts();
    assert!(
        procs >= 3 && maps > 0 && tables >= 4,
        "state while running: {procs} {maps} {tables}"
    );
    let generation = session.mapping_generation();
    for r in &mut running {
        r.kill().ok();
    }
    pump(&mut session, Duration::from_secs(1));
    session.reap();
    // Every process and mapping is gone; the tables stay, idle, for the next
    // process of the same files, until they are let go.
    assert_eq!(
        session.kernel_map_counts(),
        (session.tracker.excluded_count(), 0, tables),
        "only idle tables left"
    );
    assert_eq!(session.tracker.idle_tables(), tables);
    assert_eq!(session.unload_idle_tables(), tables);
    // Their rows are free for other tables now: the CPUs' caches of rows
    // and mappings were told to go (one bump per unloaded table).
    assert!(
        session.mapping_generation() >= generation + tables as u64,
        "generation {generation} -> {} after unloading {tables} tables",
        session.mapping_generation()
    );
    // Only the workloads (and the children forker made) were profiled: the
    // kernel keeps one entry per process the filter excluded (so their
    // samples are dropped before unwinding) and nothing else.
    assert_eq!(
        session.kernel_map_counts(),
        (session.tracker.excluded_count(), 0, 0),
        "kernel maps back to the excluded processes only"
    );
    assert_eq!(
        session.tracker.footprint(),
        (0, 0, 0, 0, 0),
        "tracker back to empty"
    );
}

#[test]
fn frames_in_the_vdso_unwind_to_main() {
    require_root();
    let dir = std::env::temp_dir().join(format!("vdso-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("vdso_loop.c");
    std::fs::write(
        &src,
        r#"#include <time.h>
#include <stdint.h>
volatile uint64_t sink;
__attribute__((noinline, noipa)) uint64_t vdso_loop(void) {
    struct timespec ts; uint64_t acc = 0;
    for (int i = 0; i < 1000; i++) { clock_gettime(CLOCK_MONOTONIC, &ts); acc += ts.tv_nsec; }
    sink = acc; return acc;
}
__attribute__((noinline, noipa)) uint64_t vdso_outer(void) { uint64_t r = vdso_loop(); sink = r; return r + 1; }
int main(void) { for (;;) { uint64_t r = vdso_outer(); sink = r; } }
"#,
    )
    .unwrap();
    let exe = dir.join("vdso_loop");
    assert!(Command::new("gcc")
        .args(["-O2", "-fomit-frame-pointer", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("gcc is needed")
        .success());
    let _g = lock();
    let mut child = Command::new(&exe).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let rec = record::record(
        &options(Target::pids(vec![child.id()]), 199, 3),
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap();
    child.kill().ok();
    child.wait().ok();
    let p = &rec.profile;
    let total: u64 = p.samples.iter().map(|s| s.count).sum();
    let in_vdso = |s: &&Sample| {
        s.frames
            .iter()
            .any(|f| p.module_name(f) == "linux-vdso.so.1")
    };
    let vdso_samples: u64 = p.samples.iter().filter(in_vdso).map(|s| s.count).sum();
    let vdso_full: u64 = p
        .samples
        .iter()
        .filter(in_vdso)
        .filter(|s| {
            let names = root_first(p, s).join(";");
            names.contains("main;vdso_outer;vdso_loop;")
        })
        .map(|s| s.count)
        .sum();
    assert!(
        vdso_samples * 5 >= total,
        "a good part of {total} samples is in the vDSO, got {vdso_samples}"
    );
    assert!(
        vdso_full as f64 >= 0.99 * vdso_samples as f64,
        "vDSO frames unwind to main: {vdso_full} of {vdso_samples}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Compiles a small C program (no frame pointers) into a temp dir.
fn build_c(name: &str, source: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("unwind-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let exe = dir.join(name);
    assert!(Command::new("gcc")
        .args(["-O2", "-fomit-frame-pointer", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("gcc is needed")
        .success());
    exe
}

/// Records `exe` for `seconds` and returns its profile (symbolized with
/// debug info, which names libc's local functions such as __restore_rt).
fn record_exe(exe: &std::path::Path, seconds: u64) -> Profile {
    let _g = lock();
    let child = Reaped(Command::new(exe).spawn().unwrap());
    std::thread::sleep(Duration::from_millis(200));
    let mut opts = options(Target::pids(vec![child.0.id()]), 199, seconds);
    opts.debug_info = true;
    let rec = record::record(&opts, &AtomicBool::new(false), |_| {}).unwrap();
    drop(child);
    rec.profile
}

#[test]
fn stacks_deeper_than_128_frames_unwind_through_tail_calls() {
    require_root();
    // 200 frames of recursion: 7 batches of 32 frames, 6 tail calls.
    let exe = build_c(
        "deep",
        r#"#include <stdint.h>
volatile uint64_t sink;
__attribute__((noinline, noipa)) uint64_t spin(void) { uint64_t x = 1; for (int i = 0; i < 1000000; i++) x = x * 3 + i; return x; }
__attribute__((noinline, noipa)) uint64_t down(int d) { uint64_t r = d == 0 ? spin() : down(d - 1); sink = r; return r + 1; }
int main(void) { for (;;) { uint64_t r = down(200); sink = r; } }
"#,
    );
    let p = record_exe(&exe, 3);
    // main, 201 `down` frames, the leaf: complete to the root.
    assert_nearly_all_complete(&p, "full 203-frame stacks", |names| {
        names.iter().filter(|n| *n == "down").count() == 201
            && names.iter().any(|n| n == "main")
            && names.last().is_some_and(|n| n == "spin")
    });
}

#[test]
fn frames_pages_apart_unwind_through_fresh_stack_windows() {
    require_root();
    // The unwinder copies the stack a window at a time (never across a
    // page). Frames of 3000 and 5000 bytes put each saved register pair in
    // another window, and often in another page.
    let exe = build_c(
        "bigframes",
        r#"#include <stdint.h>
volatile uint64_t sink;
__attribute__((noinline, noipa)) uint64_t spin(void) { uint64_t x = 1; for (int i = 0; i < 1000000; i++) x = x * 3 + i; return x; }
__attribute__((noinline, noipa)) uint64_t wide(int d) { volatile char buf[5000]; buf[d] = (char)d; uint64_t r = d == 0 ? spin() : wide(d - 1); sink = r + buf[d]; return r + 1; }
__attribute__((noinline, noipa)) uint64_t big(int d) { volatile char buf[3000]; buf[d] = (char)d; uint64_t r = d == 0 ? wide(6) : big(d - 1); sink = r + buf[d]; return r + 1; }
int main(void) { for (;;) { uint64_t r = big(6); sink = r; } }
"#,
    );
    let p = record_exe(&exe, 3);
    assert_nearly_all_complete(&p, "main, 7 big, 7 wide, spin", |names| {
        let first = |n: &str| names.iter().position(|x| x == n);
        names.iter().filter(|n| *n == "big").count() == 7
            && names.iter().filter(|n| *n == "wide").count() == 7
            && first("main").is_some()
            && first("main") < first("big")
            && first("big") < first("wide")
            && names.last().is_some_and(|n| n == "spin")
    });
}

#[test]
fn signal_handler_frames_unwind_through_the_signal_trampoline() {
    require_root();
    // The handler spins; its caller is the kernel's signal frame, and under
    // it the interrupted code: main -> waiting -> (signal) -> on_alarm.
    let exe = build_c(
        "sig",
        r#"#include <signal.h>
#include <stdint.h>
#include <unistd.h>
volatile uint64_t sink;
volatile int fired;
__attribute__((noinline, noipa)) void on_alarm(int sig) { uint64_t x = sig; for (long i = 0; i < 200000000L; i++) x = x * 7 + i; sink = x; fired = 1; }
__attribute__((noinline, noipa)) void waiting(void) { fired = 0; while (!fired) { sink++; } }
int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, 0);
    for (;;) { ualarm(1000, 0); waiting(); }
}
"#,
    );
    let p = record_exe(&exe, 3);
    let in_handler: Vec<&Sample> = p
        .samples
        .iter()
        .filter(|s| {
            s.frames
                .first()
                .is_some_and(|f| p.frame_name(f) == "on_alarm")
        })
        .collect();
    let total: u64 = in_handler.iter().map(|s| s.count).sum();
    let through: u64 = in_handler
        .iter()
        .filter(|s| {
            root_first(&p, s)
                .join(";")
                .contains("main;waiting;__restore_rt;on_alarm")
        })
        .map(|s| s.count)
        .sum();
    assert!(total >= 50, "{total} samples in the handler");
    assert!(
        through as f64 >= 0.99 * total as f64,
        "handler samples unwound through __restore_rt into the interrupted code: {through} of {total}; e.g. {:?}",
        in_handler.first().map(|s| root_first(&p, s))
    );
}

/// Hand-written assembly without CFI in the middle of a chain: the kernel
/// unwinds it by frame pointer (as perf -g would) and goes on with the
/// tables at its caller; where rbp is no frame pointer, the trace stops with
/// a named error instead of a guessed caller.
#[test]
fn code_without_unwind_info_is_unwound_by_frame_pointer_or_stops_named() {
    require_root();
    let exe = build_c(
        "fpasm",
        r#"#include <stdint.h>
volatile uint64_t sink;
__attribute__((noinline, noipa)) void leaf_work(void) { for (long i = 0; i < 400000; i++) sink += i; }
/* No .cfi directives: no FDE covers these two. with_frame keeps a frame
 * pointer; bad_frame sets rbp to 1 (no frame pointer) while it spins. */
__asm__(
    ".text\n"
    ".globl with_frame\n.type with_frame,@function\n"
    "with_frame:\n"
    "  push %rbp\n  mov %rsp, %rbp\n  sub $16, %rsp\n"
    "  call leaf_work\n"
    "  add $16, %rsp\n  pop %rbp\n  ret\n"
    ".size with_frame, .-with_frame\n"
    ".globl bad_frame\n.type bad_frame,@function\n"
    "bad_frame:\n"
    "  push %rbp\n  mov $1, %rbp\n  mov $600000, %ecx\n"
    "1: dec %ecx\n  jnz 1b\n"
    "  pop %rbp\n  ret\n"
    ".size bad_frame, .-bad_frame\n");
void with_frame(void);
void bad_frame(void);
__attribute__((noinline, noipa)) void through_asm(void) { with_frame(); sink++; }
__attribute__((noinline, noipa)) void into_bad(void) { bad_frame(); sink++; }
int main(void) { for (;;) { through_asm(); into_bad(); } }
"#,
    );
    let p = record_exe(&exe, 3);
    let leaf_first =
        |s: &&Sample, name: &str| s.frames.first().is_some_and(|f| p.frame_name(f) == name);
    let through: Vec<&Sample> = p
        .samples
        .iter()
        .filter(|s| leaf_first(s, "leaf_work"))
        .collect();
    let (complete, total) = share_of(&p, &through, |names| {
        names
            .join(";")
            .contains("main;through_asm;with_frame;leaf_work")
            && !names.iter().any(|n| n.starts_with('<'))
    });
    assert!(total >= 50, "{total} samples in leaf_work");
    assert!(
        complete >= 0.99,
        "leaf_work unwound through with_frame into main in {:.1} % of {total}; e.g. {:?}",
        complete * 100.0,
        through
            .iter()
            .find(|s| !root_first(&p, s).join(";").contains("main;through_asm"))
            .map(|s| root_first(&p, s))
    );
    // In bad_frame the only user frame is bad_frame itself, then the error.
    let bad: Vec<&Sample> = p
        .samples
        .iter()
        .filter(|s| leaf_first(s, "bad_frame"))
        .collect();
    let (named, bad_total) = share_of(&p, &bad, |names| {
        names
            == [
                "<unwinding aborted due to error native_bad_frame_pointer>",
                "bad_frame",
            ]
    });
    assert!(bad_total >= 20, "{bad_total} samples in bad_frame");
    assert!(
        named >= 0.99,
        "bad_frame ends with native_bad_frame_pointer in {:.1} % of {bad_total}; e.g. {:?}",
        named * 100.0,
        bad.first().map(|s| root_first(&p, s))
    );
}

/// Share of `samples` (with their total) whose root-first names satisfy
/// `pred`.
fn share_of(p: &Profile, samples: &[&Sample], pred: impl Fn(&[String]) -> bool) -> (f64, u64) {
    let total: u64 = samples.iter().map(|s| s.count).sum();
    let good: u64 = samples
        .iter()
        .filter(|s| pred(&root_first(p, s)))
        .map(|s| s.count)
        .sum();
    (good as f64 / total.max(1) as f64, total)
}

/// V8 keeps frame pointers in the code it writes: Node's JIT frames (in
/// anonymous memory, no file, no table) are walked through by frame pointer
/// and shown as [jit], down to _start.
#[test]
fn node_jit_frames_are_walked_through_and_shown_as_jit() {
    require_root();
    let _g = lock();
    let dir = std::env::temp_dir().join(format!("unwind-test-node-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("hot.js");
    std::fs::write(
        &script,
        "function c(n){let s=0;for(let i=0;i<n;i++)s+=Math.sqrt(i);return s}\n\
         function b(n){return c(n)+1}\nfunction a(n){return b(n)+1}\n\
         let t=0;const end=Date.now()+6000;while(Date.now()<end){t+=a(100000)}\n",
    )
    .unwrap();
    let child = Reaped(
        Command::new("node")
            .arg(&script)
            .spawn()
            .expect("node is needed (Node.js 20)"),
    );
    // Past start-up: the loop runs in optimized JIT code.
    std::thread::sleep(Duration::from_millis(800));
    let rec = record::record(
        &options(Target::pids(vec![child.0.id()]), 199, 3),
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap();
    drop(child);
    let p = &rec.profile;
    let all: Vec<&Sample> = p.samples.iter().collect();
    let (complete, total) = share_of(p, &all, |names| {
        names.first().is_some_and(|n| n == "_start") && !names.iter().any(|n| n.starts_with('<'))
    });
    assert!(total >= 100, "{total} samples of node");
    let example = || {
        all.iter()
            .find(|s| root_first(p, s).iter().any(|n| n.starts_with('<')))
            .map(|s| root_first(p, s).join(";"))
    };
    assert!(
        complete >= 0.99,
        "{:.1} % of {total} node samples from _start without an error; e.g. {:?}",
        complete * 100.0,
        example()
    );
    let (jit, _) = share_of(p, &all, |names| {
        names.iter().any(|n| n == agent::aggregate::JIT_FRAME_NAME)
    });
    assert!(
        jit >= 0.5,
        "{:.1} % of node samples have [jit] frames",
        jit * 100.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Debian's Chromium is built with frame pointers and almost no unwind
/// tables: its samples are walked by frame pointer through its own code, the
/// [jit] code of V8 and back into libc, to the start of the process or the
/// thread.
#[test]
fn chromium_without_unwind_tables_reaches_the_start_of_its_stacks() {
    require_root();
    let _g = lock();
    let dir = std::env::temp_dir().join(format!("unwind-test-chromium-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("page.html");
    std::fs::write(
        &page,
        "<html><body><h1>profile me</h1><script>let s=0;\
         for (let i=0;i<3e8;i++) s+=Math.sqrt(i); document.body.append(String(s));\
         </script></body></html>",
    )
    .unwrap();
    let stop = AtomicBool::new(false);
    let rec = std::thread::scope(|scope| {
        let recording =
            scope.spawn(|| record::record(&options(Target::System, 499, 10), &stop, |_| {}));
        std::thread::sleep(Duration::from_millis(500));
        let status = Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu"])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg(format!("--screenshot={}", dir.join("shot.png").display()))
            .arg(format!("file://{}", page.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("chromium is needed (scripts/install-deps)");
        assert!(status.success(), "chromium {status}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        recording.join().unwrap().unwrap()
    });
    let p = &rec.profile;
    // Samples with a user stack (an exiting process has none left). A trace
    // without an error frame ended where the stack does: an outermost
    // frame's CFI (_start, a thread's clone3) or rbp = 0.
    let chromium: Vec<&Sample> = p
        .samples
        .iter()
        .filter(|s| {
            s.labels
                .executable_path
                .as_deref()
                .is_some_and(|e| e.ends_with("/chromium"))
                && s.frames.iter().any(|f| f.frame_type != FrameType::KERNEL)
        })
        .collect();
    // Chromium's processes are labelled, the zygote's children included
    // (a process gone before its first sample was read stays unlabelled).
    let unlabelled: u64 = p
        .samples
        .iter()
        .filter(|s| {
            s.labels.executable_path.is_none()
                && s.frames
                    .iter()
                    .any(|f| p.frame_name(f).starts_with("chromium+"))
        })
        .map(|s| s.count)
        .sum();
    let labelled: u64 = chromium.iter().map(|s| s.count).sum();
    assert!(
        unlabelled * 100 <= labelled,
        "{unlabelled} samples of chromium code without labels, {labelled} with"
    );
    let reached_start = |names: &[String]| !names.iter().any(|n| n.starts_with('<'));
    let (reached, total) = share_of(p, &chromium, reached_start);
    if total < 100 {
        let mut by_exe: BTreeMap<String, u64> = BTreeMap::new();
        for s in &p.samples {
            let exe = s.labels.executable_path.as_deref().unwrap_or("?");
            *by_exe
                .entry(format!("{} ({exe})", s.labels.process_name))
                .or_default() += s.count;
        }
        panic!("{total} samples of chromium; recorded: {by_exe:?}");
    }
    let misses: Vec<String> = chromium
        .iter()
        .filter(|s| !reached_start(&root_first(p, s)))
        .take(8)
        .map(|s| {
            format!(
                "x{} pid {} {}: {}",
                s.count,
                s.labels.pid,
                s.labels.thread_name,
                root_first(p, s).join(";")
            )
        })
        .collect();
    assert!(
        reached >= 0.90,
        "{:.1} % of {total} chromium samples reach the start of their stack; e.g.:\n{}",
        reached * 100.0,
        misses.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_long_running_session_forgets_exited_processes_and_unloaded_files() {
    require_root();
    let _g = lock();
    let mut w = workloads::spawn(Kind::CChains, None).unwrap();
    let pid = w.pid();
    let exe_id = libpf::FileId::from_file(workloads::build(Kind::CChains).unwrap().exe)
        .unwrap()
        .hi();
    let mut session = Session::new(SessionOptions {
        table_cache: None,
        target: Target::pids(vec![pid]),
        frequency: 99,
        load: LoadOptions::default(),
    })
    .unwrap();
    session
        .tracker
        .set_forget_after(Some(Duration::from_millis(500)));
    session.start().unwrap();
    pump(&mut session, Duration::from_secs(1));
    assert!(session.tracker.file(exe_id).is_some());
    assert!(session.tracker.known_meta(pid).is_some());
    w.kill().ok();
    pump(&mut session, Duration::from_millis(700));
    session.reap();
    pump(&mut session, Duration::from_millis(700));
    session.reap();
    assert!(
        session.tracker.file(exe_id).is_none(),
        "unloaded file forgotten"
    );
    assert!(
        session.tracker.known_meta(pid).is_none(),
        "exited process forgotten"
    );
}

#[test]
fn a_long_running_session_reuses_the_table_of_a_binary_that_comes_back() {
    require_root();
    let _g = lock();
    let mut session = Session::new(SessionOptions {
        table_cache: None,
        target: Target::System,
        frequency: 99,
        load: LoadOptions::default(),
    })
    .unwrap();
    session
        .tracker
        .set_forget_after(Some(Duration::from_secs(30)));
    session.start().unwrap();
    let exe_id = libpf::FileId::from_file(workloads::build(Kind::CChains).unwrap().exe)
        .unwrap()
        .hi();
    let mut w = workloads::spawn(Kind::CChains, None).unwrap();
    pump(&mut session, Duration::from_secs(1));
    w.kill().ok();
    pump(&mut session, Duration::from_millis(500));
    session.reap();
    assert!(
        session.has_table(exe_id),
        "kept loaded while no process maps it"
    );
    let loaded = session.tracker.stats.tables_loaded;
    let mut again = workloads::spawn(Kind::CChains, None).unwrap();
    pump(&mut session, Duration::from_secs(1));
    // Sampled: scanned, or (bpf_find_vma kernels) unwound without a scan
    // and reported for its labels.
    assert!(session.tracker.known_meta(again.pid()).is_some());
    again.kill().ok();
    assert_eq!(
        session.tracker.stats.tables_loaded, loaded,
        "the second process reused the table instead of building it again"
    );
}

#[test]
fn a_reused_address_space_id_never_unwinds_with_the_old_mappings() {
    require_root();
    let _g = lock();
    // The eBPF side caches (address space id, mapping) lookups per CPU across
    // samples. Ids only come back after wrapping around, which must drop
    // that cache. Both workloads run without ASLR so B's code sits at the
    // addresses A's did: a stale entry would send B's frames to A's table.
    fn spawn_fixed(kind: Kind) -> (Reaped, u64) {
        use std::os::unix::process::CommandExt;
        let built = workloads::build(kind).unwrap();
        let mut cmd = Command::new(&built.exe);
        cmd.arg("0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        // SAFETY: personality(2) only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::personality(libc::ADDR_NO_RANDOMIZE as libc::c_ulong);
                Ok(())
            });
        }
        let exe_id = libpf::FileId::from_file(&built.exe).unwrap().hi();
        let child = Reaped(cmd.spawn().unwrap());
        // Let the dynamic loader finish before the session (not pumped
        // meanwhile) scans it, so one scan sees every mapping.
        std::thread::sleep(Duration::from_millis(300));
        (child, exe_id)
    }
    let (a_kind, b_kind) = (Kind::CChains, Kind::CppTemplates);
    let comm = regex::Regex::new(&format!("^({}|{})$", a_kind.comm(), b_kind.comm())).unwrap();
    let mut session = Session::new(SessionOptions {
        table_cache: None,
        target: Target::Filtered(Filter {
            pids: vec![],
            comm: Some(comm),
            exe: None,
            cgroup: None,
        }),
        frequency: 999,
        load: LoadOptions::default(),
    })
    .unwrap();
    // A's table stays loaded after it exits (unloading one also drops the
    // cache): only the wrap-around can protect B.
    session
        .tracker
        .set_forget_after(Some(Duration::from_secs(60)));
    session.start().unwrap();

    let (a, a_exe) = spawn_fixed(a_kind);
    let a_pid = a.0.id();
    session.tracker.set_next_asid(u32::MAX);
    pump(&mut session, Duration::from_millis(1500));
    assert_eq!(session.tracker.asid(a_pid), Some(u32::MAX));
    let a_samples = session.metric(libpf::generated::metrics::MetricId::TracesSent);
    assert!(a_samples >= 500, "A was sampled {a_samples} times");
    drop(a);
    pump(&mut session, Duration::from_millis(300));
    session.reap();
    assert!(!session.tracker.is_tracked(a_pid));
    assert!(session.has_table(a_exe), "A's table lingers");

    let before = session.mapping_generation();
    let (b, _) = spawn_fixed(b_kind);
    session.tracker.set_next_asid(u32::MAX);
    let b_pid = b.0.id();
    let (mut total, mut complete, mut in_a) = (0u64, 0u64, 0u64);
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        session.wait(Duration::from_millis(50));
        session.drain(|_, t| {
            if t.pid != b_pid {
                return;
            }
            total += 1;
            if t.error().is_none() {
                complete += 1;
            }
            let from_a = t.frames.iter().any(|f| {
                matches!(f, support::trace::RawFrame::Native { exe_id, .. } if *exe_id == a_exe)
            });
            if from_a {
                in_a += 1;
            }
        });
    }
    drop(b);
    assert_eq!(
        session.tracker.asid(b_pid),
        Some(u32::MAX),
        "B reused A's address space id"
    );
    assert!(total >= 500, "B was sampled {total} times");
    assert_eq!(
        in_a, 0,
        "{in_a} of {total} traces of B went through A's executable"
    );
    assert!(
        complete as f64 >= 0.99 * total as f64,
        "{complete} of {total} traces of B unwound to the end"
    );
    assert!(
        session.mapping_generation() > before,
        "the wrap-around dropped the cache"
    );
}

/// Runs `kind` once so its table is loaded, then a second process of it that
/// userspace never gets to scan (the session is not drained while it runs),
/// and returns the second process's traces resolved into a profile, with the
/// session.
fn unscanned_second_process(kind: Kind, load: LoadOptions) -> (Session, Profile, u64) {
    let spawn = || {
        let r = workloads::spawn(kind, None).unwrap();
        (r.pid(), r)
    };
    unscanned_second_process_of(spawn, load)
}

/// [`unscanned_second_process`] for any program `spawn` starts (its PID, and
/// a guard that stops it when dropped).
fn unscanned_second_process_of<G>(
    spawn: impl Fn() -> (u32, G),
    load: LoadOptions,
) -> (Session, Profile, u64) {
    let mut session = Session::new(SessionOptions {
        table_cache: None,
        target: Target::System,
        frequency: 499,
        load,
    })
    .unwrap();
    session.start().unwrap();
    let (_, first) = spawn();
    pump(&mut session, Duration::from_millis(800));
    drop(first);
    pump(&mut session, Duration::from_millis(200));
    let unknown_before = session.metric(libpf::generated::metrics::MetricId::SamplesPidUnknown);
    let (pid, second) = spawn();
    std::thread::sleep(Duration::from_millis(700));
    drop(second);
    assert!(
        !session.tracker.is_tracked(pid),
        "the second process must not have been scanned"
    );
    let mut agg = agent::aggregate::Aggregator::new(false);
    session.drain(|_, t| {
        if t.pid == pid {
            agg.add(t)
        }
    });
    let profile =
        agent::aggregate::Resolver::new(true, false).resolve(&session.tracker, agg.take());
    let dropped =
        session.metric(libpf::generated::metrics::MetricId::SamplesPidUnknown) - unknown_before;
    (session, profile, dropped)
}

#[test]
fn a_new_process_of_a_known_executable_unwinds_from_its_first_sample() {
    require_root();
    let _g = lock();
    for kind in [Kind::CChains, Kind::RustRelease] {
        let (session, profile, dropped) = unscanned_second_process(kind, LoadOptions::default());
        assert!(
            session.uses_find_vma(),
            "this machine's kernel has bpf_find_vma"
        );
        let (share, total) = share(&profile, kind, |_| true);
        assert!(
            total >= 50,
            "{kind:?}: {total} samples of the unscanned process"
        );
        assert!(
            share >= 0.99,
            "{kind:?}: {:.1}% of {total} complete; misses:\n{}",
            share * 100.0,
            show_misses(&profile, kind, |_| true)
        );
        assert_eq!(dropped, 0, "{kind:?}: samples dropped as not scanned yet");
        assert!(session.metric(libpf::generated::metrics::MetricId::SamplesPidUnknownUnwound) > 0);
        // Reported for its labels only, never scanned (asserted inside).
        assert!(session.metric(libpf::generated::metrics::MetricId::PidNewReports) > 0);
    }
}

/// Kernels before 5.17 have no bpf_find_vma: samples of a process not
/// scanned yet are dropped, and counted, never silently lost.
#[test]
fn without_find_vma_unscanned_samples_are_dropped_and_counted() {
    require_root();
    let _g = lock();
    let load = LoadOptions {
        no_find_vma: true,
        ..LoadOptions::default()
    };
    let (session, profile, dropped) = unscanned_second_process(Kind::CChains, load);
    assert!(!session.uses_find_vma());
    // Samples the child took before its exec (or during it: the new name is
    // set before the exec tracepoint runs) unwind with its parent's address
    // space: count only those that reached the workload's own functions.
    let own: Vec<&str> = Kind::CChains
        .expected_chains()
        .into_iter()
        .flatten()
        .filter(|n| *n != "main")
        .collect();
    let unwound: u64 = profile
        .samples
        .iter()
        .filter(|s| {
            root_first(&profile, s)
                .iter()
                .any(|n| own.contains(&n.as_str()))
        })
        .map(|s| s.count)
        .sum();
    assert_eq!(unwound, 0, "nothing unwound without a scan");
    assert!(
        dropped >= 50,
        "{dropped} samples counted as not scanned yet"
    );
}

/// The row array is the tables' memory budget: a table that does not fit
/// evicts idle ones, least recently used first, and each eviction counts.
#[test]
fn the_row_budget_evicts_idle_tables_least_recently_used_first() {
    require_root();
    let _g = lock();
    let exe = |k: Kind| {
        libpf::FileId::from_file(workloads::build(k).unwrap().exe)
            .unwrap()
            .hi()
    };
    let (rust, c, cpp) = (Kind::RustRelease, Kind::CChains, Kind::CppTemplates);
    // Runs each workload in turn in a session that profiles only them.
    let run_all = |capacity: u32| {
        let mut first = Some(workloads::spawn(rust, None).unwrap());
        let mut session = Session::new(SessionOptions {
            table_cache: None,
            target: Target::pids(vec![first.as_ref().unwrap().pid()]),
            frequency: 99,
            load: LoadOptions {
                max_unwind_rows: capacity,
                ..LoadOptions::default()
            },
        })
        .unwrap();
        session.start().unwrap();
        for kind in [rust, c, cpp] {
            let mut r = match first.take() {
                Some(r) => r,
                None => {
                    let r = workloads::spawn(kind, None).unwrap();
                    session.add_pid(r.pid());
                    r
                }
            };
            pump(&mut session, Duration::from_millis(300));
            assert!(session.has_table(exe(kind)), "{kind:?} loaded");
            r.kill().ok();
            pump(&mut session, Duration::from_millis(200));
            session.reap();
        }
        session
    };
    // Room for everything the three need at once, minus one row: loading
    // the last one must evict, and only what the first one used alone.
    let all = run_all(LoadOptions::default().max_unwind_rows);
    assert_eq!(all.tracker.stats.tables_evicted, 0);
    let needed = all.tracker.loaded_rows();
    drop(all);
    let tight = run_all((needed - 1) as u32);
    assert!(
        !tight.has_table(exe(rust)),
        "the least recently used table made room"
    );
    assert!(
        tight.has_table(exe(c)),
        "a more recently used idle table stayed"
    );
    assert!(tight.has_table(exe(cpp)));
    assert!(tight.tracker.stats.tables_evicted >= 1);
}

/// Rows reach the kernel's array through a mapping of just their pages; the
/// batched update (the fallback) writes the same bytes. Ranges start and end
/// mid-page and span several pages.
#[test]
fn rows_written_through_the_mapping_read_back_like_batched_ones() {
    require_root();
    let _g = lock();
    let (_sampler, mut maps, _outputs) =
        agent::loader::Sampler::load(&LoadOptions::default()).unwrap();
    let rows: Vec<support::abi::UnwindRow> = (0..3000u32)
        .map(|i| support::abi::UnwindRow {
            address: i.wrapping_mul(2654435761),
            cfa_offset: (i % 500) as u16,
            kind: (i % 5) as u8,
            fp_offset: -((i % 7) as i8),
        })
        .collect();
    let (mapped_at, batched_at) = (511u32, 9001u32);
    maps.rows.write_mapped(mapped_at, &rows).unwrap();
    maps.rows.write_batched(batched_at, &rows).unwrap();
    for (i, want) in rows.iter().enumerate() {
        let i = i as u32;
        assert_eq!(
            maps.rows.read(mapped_at + i).as_ref(),
            Some(want),
            "mapped row {i}"
        );
        assert_eq!(
            maps.rows.read(batched_at + i).as_ref(),
            Some(want),
            "batched row {i}"
        );
    }
    // Neighbours of the mapped range are untouched.
    let zero = support::abi::UnwindRow {
        address: 0,
        cfa_offset: 0,
        kind: 0,
        fp_offset: 0,
    };
    assert_eq!(maps.rows.read(mapped_at - 1), Some(zero));
    assert_eq!(maps.rows.read(mapped_at + rows.len() as u32), Some(zero));
    // Past the end of the array: an error, not a write elsewhere.
    let cap = maps.rows.capacity();
    assert!(maps.rows.write_mapped(cap - 1, &rows[..2]).is_err());
}

/// A process not scanned yet whose stacks run from the executable through
/// libc into the dynamic loader and back (`dlsym` → `_dl_catch_exception` →
/// `_dl_lookup_symbol_x`) unwinds completely:
/// the loader's PCs resolve from AT_BASE without a lock, so the one
/// bpf_find_vma a sample may make is left for libc. The symbol looked up is
/// the loader's own, the last object searched: a failed lookup would leave
/// through `__longjmp`, whose CFI (rsp from the jmp_buf) rows cannot
/// express, and that is not what this test is about.
#[test]
fn loader_frames_of_an_unscanned_process_resolve_from_at_base() {
    require_root();
    let _g = lock();
    let exe = build_c(
        "loader",
        r#"#include <dlfcn.h>
volatile void *sink;
int main(void) { for (;;) sink = dlsym(RTLD_DEFAULT, "_dl_find_object"); }
"#,
    );
    let spawn = || {
        let c = Reaped(Command::new(&exe).spawn().unwrap());
        (c.0.id(), c)
    };
    let (session, profile, dropped) = unscanned_second_process_of(spawn, LoadOptions::default());
    assert!(
        session.uses_find_vma(),
        "this machine's kernel has bpf_find_vma"
    );
    assert_eq!(dropped, 0);
    // Loader code without a dynamic symbol shows as `ld-linux-x86-64.so.2+0x…`.
    let in_loader = |names: &[String]| names.iter().any(|n| n.starts_with("ld-linux"));
    let loader_samples: u64 = profile
        .samples
        .iter()
        .filter(|s| in_loader(&root_first(&profile, s)))
        .map(|s| s.count)
        .sum();
    let stacks: Vec<String> = profile
        .samples
        .iter()
        .take(5)
        .map(|s| format!("x{} {}", s.count, root_first(&profile, s).join(";")))
        .collect();
    assert!(
        loader_samples >= 20,
        "{loader_samples} of {} samples in the loader:\n{}",
        profile.total_samples(),
        stacks.join("\n")
    );
    // No sample ends in an unwinding error; nearly all run from main (the
    // others are the process's start: exec, then the loader before main).
    assert_nearly_all_complete(&profile, "no unwinding error", |names| {
        !names.iter().any(|n| n.starts_with('<'))
    });
    let total = profile.total_samples();
    let from_main: u64 = profile
        .samples
        .iter()
        .filter(|s| root_first(&profile, s).iter().any(|n| n == "main"))
        .map(|s| s.count)
        .sum();
    assert!(
        from_main * 100 >= total * 95,
        "main at the root in {from_main} of {total} samples"
    );
    assert!(session.metric(libpf::generated::metrics::MetricId::NativeLoaderLookups) > 0);
    // The first process's tables were loaded without giving it an address
    // space (it was not unwound completely at first: its files were new).
    assert!(session.tracker.stats.table_only_scans >= 1);
}

/// Short processes whose stacks cross two shared libraries (libc's qsort
/// calling back into a library's comparator, as a compiler's calls cross
/// libgmp, libc and itself) unwind completely from their first sample
/// without a scan: the libraries they map are learned when their mmap
/// returns, since a sample can look up at most one mapping itself.
#[test]
fn short_processes_unwind_through_several_libraries_from_their_first_sample() {
    require_root();
    let _g = lock();
    let dir = std::env::temp_dir().join(format!("unwind-test-twolibs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hot.c"),
        r#"volatile unsigned long spin;
int hot_cmp(const void *a, const void *b) {
    for (int i = 0; i < 2000; i++) spin += i;
    return *(const int *)a - *(const int *)b;
}
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("burst.c"),
        r#"#include <stdlib.h>
#include <time.h>
int hot_cmp(const void *a, const void *b);
int main(int argc, char **argv) {
    long ms = atol(argv[1]);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int v[64];
    do {
        for (int i = 0; i < 64; i++) v[i] = (i * 7919) % 64;
        qsort(v, 64, sizeof v[0], hot_cmp);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < ms);
    return 0;
}
"#,
    )
    .unwrap();
    let gcc = |args: &[&str]| {
        let ok = Command::new("gcc")
            .current_dir(&dir)
            .args(["-O2", "-fomit-frame-pointer"])
            .args(args)
            .status()
            .expect("gcc is needed")
            .success();
        assert!(ok, "gcc {args:?}");
    };
    gcc(&["-shared", "-fPIC", "-o", "libhot.so", "hot.c"]);
    gcc(&[
        "-o",
        "burst",
        "burst.c",
        "-L.",
        "-lhot",
        "-Wl,-rpath,$ORIGIN",
    ]);
    let exe = dir.join("burst");
    let run = |ms: u32| {
        let ok = Command::new(&exe)
            .arg(ms.to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };

    let mut session = Session::new(SessionOptions {
        table_cache: None,
        target: Target::System,
        frequency: 499,
        load: LoadOptions::default(),
    })
    .unwrap();
    assert!(
        session.uses_find_vma(),
        "this machine's kernel has bpf_find_vma"
    );
    session.start().unwrap();
    // Once, drained while it runs, so userspace loads the three files' tables.
    let first = Reaped(Command::new(&exe).arg("800").spawn().unwrap());
    pump(&mut session, Duration::from_millis(1000));
    drop(first);
    let learned_before =
        session.metric(libpf::generated::metrics::MetricId::NativeMappingsLearnedAtMmap);
    // Then 30 new processes of 40 ms each, not drained (so not scanned)
    // until they are gone: each one's first samples are under test.
    for _ in 0..30 {
        run(40);
    }
    let mut agg = agent::aggregate::Aggregator::new(false);
    let mut pids = std::collections::BTreeSet::new();
    session.drain(|_, t| {
        if t.comm == "burst" {
            pids.insert(t.pid);
            agg.add(t)
        }
    });
    let profile =
        agent::aggregate::Resolver::new(true, false).resolve(&session.tracker, agg.take());
    assert!(pids.len() >= 25, "samples of {} processes", pids.len());
    assert!(
        pids.iter().all(|pid| !session.tracker.is_tracked(*pid)),
        "the short processes must not have been scanned"
    );
    assert_nearly_all_complete(&profile, "no unwinding error", |names| {
        !names.iter().any(|n| n.starts_with('<'))
    });
    // Most samples are in the comparator, under qsort, under main (the rest
    // are each process's start and exit).
    let total = profile.total_samples();
    let chain: u64 = profile
        .samples
        .iter()
        .filter(|s| {
            let names = root_first(&profile, s);
            let at = |n: &str| names.iter().position(|x| x == n);
            matches!((at("main"), at("hot_cmp")), (Some(m), Some(h)) if m < h)
        })
        .map(|s| s.count)
        .sum();
    assert!(
        chain * 100 >= total * 90,
        "main -> qsort -> hot_cmp in {chain} of {total} samples"
    );
    let learned = session.metric(libpf::generated::metrics::MetricId::NativeMappingsLearnedAtMmap)
        - learned_before;
    assert!(
        learned >= 30,
        "{learned} mappings learned at mmap by 30 processes"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Tables built in one run are read back from the on-disk cache by the next
/// (no parsing), and unwind exactly as well.
#[test]
fn a_second_run_reads_its_tables_back_from_the_cache() {
    require_root();
    let dir = std::env::temp_dir().join(format!("unwind-test-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let kind = Kind::CChains;
    let exe_id = libpf::FileId::from_file(workloads::build(kind).unwrap().exe).unwrap();
    let cached = dir.join(format!("{:016x}{:016x}.rows", exe_id.hi(), exe_id.lo()));
    let run = || {
        let _g = lock();
        let w = workloads::spawn(kind, None).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let mut opts = options(Target::pids(vec![w.pid()]), 199, 2);
        opts.session.table_cache = Some(dir.clone());
        let rec = record::record(&opts, &AtomicBool::new(false), |_| {}).unwrap();
        drop(w);
        rec
    };
    let first = run();
    assert_eq!(first.summary.tables_from_cache, 0, "{}", dir.display());
    assert!(cached.exists(), "{} written", cached.display());
    let second = run();
    assert!(
        second.summary.tables_from_cache >= 1,
        "{}",
        second.summary.line()
    );
    let comm = kind.comm();
    let (share, total) = share(&second.profile, kind, |s| &*s.labels.process_name == comm);
    assert!(total >= 50, "{total} samples");
    assert!(
        share >= 0.99,
        "full chains in {:.2}% of {total} samples; misses:\n{}",
        share * 100.0,
        show_misses(&second.profile, kind, |s| &*s.labels.process_name == comm)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A sample taken inside execve, once the new image replaced the old one's
/// memory, has the old image's registers: it is recorded with its kernel
/// stack only (counted), not as a user stack that failed to unwind.
#[test]
fn samples_inside_exec_keep_their_kernel_stack_without_an_error() {
    require_root();
    let _g = lock();
    let mut session = Session::new(SessionOptions {
        table_cache: None,
        target: Target::System,
        frequency: 499,
        load: LoadOptions::default(),
    })
    .unwrap();
    session.start().unwrap();
    let mut agg = agent::aggregate::Aggregator::new(false);
    let mut execs = Command::new("sh")
        .args(["-c", "for i in $(seq 3000); do /bin/true; done"])
        .spawn()
        .unwrap();
    let sh = execs.id();
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        session.wait(Duration::from_millis(50));
        session.drain(|_, t| agg.add(t));
    }
    execs.kill().ok();
    execs.wait().ok();
    let profile =
        agent::aggregate::Resolver::new(true, false).resolve(&session.tracker, agg.take());
    let in_exec: Vec<(Vec<String>, u64)> = profile
        .samples
        .iter()
        .map(|s| (root_first(&profile, s), s.count))
        .filter(|(names, _)| names.iter().any(|n| n.contains("bprm_execve")))
        .collect();
    let total: u64 = in_exec.iter().map(|(_, c)| c).sum();
    let failed: u64 = in_exec
        .iter()
        .filter(|(names, _)| names.iter().any(|n| n.starts_with('<')))
        .map(|(_, c)| c)
        .sum();
    assert!(total >= 10, "{total} samples inside execve (sh {sh})");
    assert!(
        failed * 10 <= total,
        "{failed} of {total} samples inside execve end with an error:\n{}",
        in_exec
            .iter()
            .filter(|(n, _)| n.iter().any(|n| n.starts_with('<')))
            .take(5)
            .map(|(n, c)| format!("x{c} {}", n.join(";")))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(session.metric(libpf::generated::metrics::MetricId::SamplesInExec) > 0);
}
