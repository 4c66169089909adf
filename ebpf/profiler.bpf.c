// SPDX-License-Identifier: GPL-2.0
/*
 * The sampling side of ebpf-profiler.
 *
 * A perf_event program on every CPU takes the kernel stack and the user
 * registers, then the native unwinder walks the user stack with the
 * .eh_frame-derived rows userspace loaded into the maps, a batch of frames
 * per invocation, tail-calling itself to go deeper. The finished trace goes
 * to the traces ring buffer. Tracepoints keep userspace informed of fork,
 * exec and exit so process state is neither stale nor leaked.
 *
 * Everything shared with Rust (structs, maps, ids, error codes, metrics)
 * comes from the generated headers; this file holds only logic.
 */
#include <linux/bpf.h>
#include <linux/bpf_perf_event.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "generated/maps.h"
#include "generated/errors.h"
#include "generated/frame_types.h"

char LICENSE[] SEC("license") = "GPL";

/* Only the fields read here; CO-RE relocates them against the kernel's BTF. */
struct thread_struct {
    /* The user fs base: on x86-64, the thread's pthread_self(). */
    unsigned long fsbase;
} __attribute__((preserve_access_index));

struct task_struct {
    int pid;
    int tgid;
    void *stack;
    struct mm_struct *mm;
    unsigned int in_execve : 1;
    struct thread_struct thread;
} __attribute__((preserve_access_index));

/* What the bpf_find_vma callback reads of a mapping and its file. */
struct super_block {
    __u32 s_dev;
} __attribute__((preserve_access_index));

struct inode {
    unsigned long i_ino;
    struct super_block *i_sb;
} __attribute__((preserve_access_index));

struct file {
    struct inode *f_inode;
} __attribute__((preserve_access_index));

struct mm_struct {
    unsigned long start_code;
    unsigned long end_code;
    struct file *exe_file;
    unsigned long saved_auxv[2];
} __attribute__((preserve_access_index));

struct vm_area_struct {
    unsigned long vm_start;
    unsigned long vm_end;
    unsigned long vm_flags;
    unsigned long vm_pgoff;
    struct file *vm_file;
} __attribute__((preserve_access_index));

/* vm_flags bit of an executable mapping (<linux/mm.h>). */
#define VM_EXEC 0x4

/* x86-64 kernel stacks are THREAD_SIZE bytes (16 KiB; 32 KiB only with
 * KASAN, which no distribution kernel enables) and the user registers saved
 * at kernel entry sit at their top (TOP_OF_KERNEL_STACK_PADDING is 0 on
 * x86-64). Read there only on kernels without bpf_task_pt_regs (< 5.15). */
#define KERNEL_THREAD_SIZE 16384
_Static_assert(__builtin_offsetof(struct pt_regs, rsp) ==
                   __builtin_offsetof(struct pt_regs, rip) + 3 * 8,
               "rip, cs, eflags, rsp are adjacent");

/* Offsets in the x86-64 ucontext_t at rsp inside a signal trampoline
 * (uc_mcontext starts at 40; see the kernel's struct sigcontext). */
#define UCONTEXT_RBP 120
#define UCONTEXT_RSP 160
#define UCONTEXT_RIP 168

/* Recent mapping lookups kept per CPU across samples: a busy process is
 * sampled again and again in the same few executables, and the trie and
 * table lookups they replace cost ~100 ns each. */
#define MAPPING_CACHE_SLOTS 8

/* Bytes of user stack copied at once. A bpf_probe_read_user costs ~20 ns
 * here even for 16 bytes, and a frame's saved registers usually lie within a
 * few dozen bytes of the previous frame's: one copy serves many frames.
 * Never crosses a page: a read that faults costs far more. */
#define STACK_WINDOW 1024

/* Room for the head of an interpreter frame (python_file.frame_read_size
 * bytes of it are read). */
#define PYTHON_FRAME_READ PYTHON_FRAME_READ_MAX
#define PAGE_SIZE 4096
/* AT_BASE of <linux/auxvec.h>: where the kernel loaded the program interpreter. */
#define AUXV_AT_BASE 7

/* How often (in traces sent per CPU) the ring buffer's fill level is read to
 * decide on a wakeup: the read touches a cache line the consumer writes. */
#define WAKEUP_CHECK_INTERVAL 16

/* Rows found for recent return addresses, per CPU across samples: the
 * callers of a hot stack are the same sample after sample, and each search
 * walks ~log2(rows) cache lines of the row array, cold at low frequencies.
 * Indexed by the top bits of a multiplicative hash of (table, address). */
#define ROW_CACHE_BITS 6
#define ROW_CACHE_SLOTS (1 << ROW_CACHE_BITS)

struct cached_row {
    /* The table's row_start + 1 (0: empty slot) and the looked-up address. */
    __u32 table;
    __u32 address;
    struct unwind_row row;
};

struct cached_mapping {
    struct mapping_value mapping;
    struct exe_table table;
    __u32 asid;
    __u32 valid;
};

/* The trace under construction and the unwinder's registers; per CPU, so it
 * survives tail calls and needs none of the 512-byte BPF stack. Private to
 * the eBPF programs: userspace never reads it. */
struct unwind_state {
    __u64 pc;
    __u64 sp;
    __u64 fp;
    __u32 asid;
    __u32 tail_calls;
    __u32 user_frames;
    /* pc is a return address: look up pc - 1 (the call instruction). */
    __u32 return_address;
    /* 0 while unwinding; 1 when the trace is complete or ended by an error. */
    __u32 done;
    /* 1 when `mapping` and `table` hold the last frame's executable: most
     * callers live in the same file as their callee, so the next frame
     * usually needs neither the trie nor the table lookup. */
    __u32 cache_valid;
    struct mapping_value mapping;
    struct exe_table table;
    /* The executable id the trace's last native frame carried; 1 in
     * last_exe_valid once one did. */
    __u64 last_exe_id;
    __u32 last_exe_valid;
    /* mapping_generation when the cache below was filled. */
    __u64 cache_generation;
    __u32 cache_next;
    __u32 traces_sent;
    struct cached_mapping cache[MAPPING_CACHE_SLOTS];
    struct cached_row rows[ROW_CACHE_SLOTS];
    /* window[0..window_len) holds the user stack at window_base, copied
     * during this sample (never reused by the next: the stack moves on). */
    __u64 window_base;
    __u64 window_len;
    __u8 window[STACK_WINDOW];
    /* Python: the next interpreter frame to emit, once py_frame_known (the
     * thread state is looked up at the first interpreter loop only). */
    __u64 py_frame;
    __u32 py_frame_known;
    /* 1 once a Python walk failed in this sample: later loops stay native
     * frames rather than risk a wrong Python frame. */
    __u32 py_failed;
    /* For the interpreter loop at pc: 0 not handled yet, 1 Python frames
     * replaced it (no native frame), 2 it stays a native frame. */
    __u32 interp_done;
    /* 1 while `table` is empty because the mapping's table is not loaded
     * (yet): no frame-pointer guess then, the trace stops. */
    __u32 table_missing;
    /* A word being read by the Python step (not on the BPF stack). */
    __u64 py_word;
    /* The head of the interpreter frame being read (PYTHON_FRAME_READ
     * bytes; the rest is slack for an 8-byte field at a masked offset). */
    __u8 py_buf[PYTHON_FRAME_READ + 8];
    struct trace_record record;
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, struct unwind_state);
    __uint(max_entries, 1);
} scratch SEC(".maps");

/* Executable mappings of a process userspace has not scanned, until it
 * execs or exits: recorded when its mmap returns (on_mmap_vma: every library
 * the dynamic loader maps), and by samples that resolved a PC some other way.
 * A sample cannot look them all up itself: bpf_find_vma works once per
 * sample (it defers the mmap unlock to a per-CPU irq_work that stays busy
 * until the interrupt returns) and not at all while the process holds its
 * mmap lock for writing (a sample inside mmap or brk). 32: a compiler maps a
 * dozen libraries, some with two executable segments (rustc: 15 mappings),
 * plus what it dlopens. Private to the eBPF programs. A power of two. */
#define LEARNED_MAPPINGS 32

struct learned_mappings {
    struct mapping_value m[LEARNED_MAPPINGS];
    __u32 next;
    __u32 unused;
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __type(key, __u32);
    __type(value, struct learned_mappings);
    __uint(max_entries, 4096);
} learned SEC(".maps");

/* A new entry of `learned` (too large for the BPF stack). */
static const struct learned_mappings learned_empty = {};

static __always_inline void count(__u32 metric)
{
    __u64 *v = bpf_map_lookup_elem(&metrics, &metric);
    if (v)
        *v += 1;
}

static __always_inline struct unwind_state *state(void)
{
    __u32 zero = 0;
    return bpf_map_lookup_elem(&scratch, &zero);
}

/* Sends a process event. Reports of unknown PIDs are rate limited per PID;
 * a new PID is reported once (until it execs or exits). */
static __always_inline void send_pid_event(__u32 kind, __u32 pid, __u32 parent, __u32 asid)
{
    __u64 now = bpf_ktime_get_ns();
    if (kind == PID_EVENT_KIND_UNKNOWN) {
        __u64 *last = bpf_map_lookup_elem(&pid_reported, &pid);
        if (last && now - *last < PID_REPORT_INTERVAL_NS)
            return;
        bpf_map_update_elem(&pid_reported, &pid, &now, BPF_ANY);
    } else if (kind == PID_EVENT_KIND_NEW) {
        __u64 never = 0;
        if (bpf_map_update_elem(&pid_reported, &pid, &never, BPF_NOEXIST) != 0)
            return;
    }
    struct pid_event ev = {
        .kind = kind, .pid = pid, .parent_pid = parent, .asid = asid, .ktime_ns = now,
    };
    if (bpf_ringbuf_output(&events, &ev, sizeof(ev), 0) == 0) {
        if (kind == PID_EVENT_KIND_UNKNOWN)
            count(METRIC_PID_REPORTS);
        else if (kind == PID_EVENT_KIND_NEW)
            count(METRIC_PID_NEW_REPORTS);
    } else {
        count(METRIC_PID_EVENTS_DROPPED);
    }
}

static __always_inline void send_trace(struct unwind_state *s)
{
    /* Frame data never exceeds MAX_FRAME_WORDS - 1 words (see push_error
     * and native_step), so the mask keeps the value and proves the bound to
     * the verifier, which a comparison the compiler may reorder does not. */
    __u64 words = s->record.header.num_frame_words & (MAX_FRAME_WORDS - 1);
    __u64 size = sizeof(struct trace_header) + words * sizeof(__u64);
    /* Waking the reader costs an irq_work (a self-IPI, several µs in a VM)
     * per sample; userspace polls on a short timeout instead, and is woken
     * only when the buffer fills past a quarter. */
    __u64 wakeup = BPF_RB_NO_WAKEUP;
    if ((++s->traces_sent & (WAKEUP_CHECK_INTERVAL - 1)) == 0 &&
        bpf_ringbuf_query(&traces, BPF_RB_AVAIL_DATA) > TRACES_WAKEUP_BYTES)
        wakeup = BPF_RB_FORCE_WAKEUP;
    if (bpf_ringbuf_output(&traces, &s->record, size, wakeup) == 0)
        count(METRIC_TRACES_SENT);
    else
        count(METRIC_TRACES_DROPPED);
}

/* Ends the trace with an error frame of `kind` carrying `err`. */
static __always_inline void push_error(struct unwind_state *s, __u32 kind, __u32 err)
{
    count(error_metric(err));
    s->done = 1;
    __u32 words = s->record.header.num_frame_words;
    if (words >= MAX_FRAME_WORDS - 1)
        return;
    s->record.frames[words & (MAX_FRAME_WORDS - 1)] =
        frame_header_pack(err, 1, FRAME_FLAG_ERROR, kind);
    s->record.header.num_frame_words = words + 1;
}

/* Index of the last row of the table whose address is <= addr, or -1. */
static __always_inline long find_row(const struct exe_table *t, __u32 addr)
{
    __u32 lo = 0, hi = t->row_count;
    for (int i = 0; i < MAX_BINARY_SEARCH_STEPS && lo < hi; i++) {
        __u32 mid = lo + (hi - lo) / 2;
        __u32 idx = t->row_start + mid;
        const struct unwind_row *row = bpf_map_lookup_elem(&unwind_rows, &idx);
        if (!row)
            return -2;
        if (row->address <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < hi)
        return -2; /* more rows than the search can cover: a table bug */
    return (long)lo - 1;
}

/* Copies the 8-byte word of the user stack at addr, through the window. */
static __always_inline long read_stack_word(struct unwind_state *s, __u64 addr, __u64 *dst)
{
    /* Stack slots are 8-byte aligned; anything else is read on its own so
     * every window offset stays a multiple of 8. */
    if (addr & 7)
        return bpf_probe_read_user(dst, 8, (void *)addr);
    __u64 off = addr - s->window_base;
    if (addr < s->window_base || off >= s->window_len || s->window_len - off < 8) {
        /* From addr to the end of its page (8 bytes at least, as addr is
         * aligned), at most a window. */
        __u64 n = PAGE_SIZE - (addr & (PAGE_SIZE - 1));
        if (n > STACK_WINDOW)
            n = STACK_WINDOW;
        if (bpf_probe_read_user(s->window, n, (void *)addr)) {
            /* The page is unreadable, so is any word in it. */
            s->window_len = 0;
            return -1;
        }
        s->window_base = addr;
        s->window_len = n;
        off = 0;
    }
    /* off + 8 <= window_len <= STACK_WINDOW: the mask only tells the verifier. */
    *dst = *(__u64 *)&s->window[off & (STACK_WINDOW - 8)];
    return 0;
}

/* Finds the mapping of pc in the per-CPU cache and makes it current. */
static __always_inline int find_cached_mapping(struct unwind_state *s, __u64 pc)
{
#pragma unroll
    for (int i = 0; i < MAPPING_CACHE_SLOTS; i++) {
        const struct cached_mapping *c = &s->cache[i];
        if (c->valid && c->asid == s->asid && pc >= c->mapping.start && pc < c->mapping.end) {
            s->mapping = c->mapping;
            s->table = c->table;
            s->table_missing = 0;
            return 1;
        }
    }
    return 0;
}

struct vma_found {
    __u64 start;
    __u64 end;
    __u64 pgoff;
    __u64 dev;
    __u64 ino;
    __u64 flags;
};

static long vma_found_cb(struct task_struct *task, struct vm_area_struct *vma, void *ctx)
{
    struct vma_found *out = ctx;
    out->start = BPF_CORE_READ(vma, vm_start);
    out->end = BPF_CORE_READ(vma, vm_end);
    out->flags = BPF_CORE_READ(vma, vm_flags);
    struct file *file = BPF_CORE_READ(vma, vm_file);
    if (!file)
        return 0; /* anonymous: ino stays 0 */
    out->pgoff = BPF_CORE_READ(vma, vm_pgoff);
    out->ino = BPF_CORE_READ(file, f_inode, i_ino);
    out->dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
    return 0;
}

/* The dynamic loader's load address: AT_BASE in the auxiliary vector the
 * kernel saved at exec (0 for a static executable). Read without a lock. */
static __always_inline __u64 loader_base(struct mm_struct *mm)
{
    const unsigned long *auxv = __builtin_preserve_access_index(&mm->saved_auxv[0]);
    /* The kernel writes AT_BASE among the first ten pairs. */
    for (int i = 0; i < 16; i++) {
        __u64 pair[2];
        if (bpf_probe_read_kernel(pair, sizeof(pair), auxv + 2 * i))
            return 0;
        if (pair[0] == AUXV_AT_BASE)
            return pair[1];
        if (pair[0] == 0)
            return 0;
    }
    return 0;
}

/* Records mapping m of process pid, replacing an entry it overlaps (the
 * range was unmapped and mapped again) or else the oldest. */
static __always_inline void learn_mapping(__u32 pid, struct learned_mappings *l,
                                          const struct mapping_value *m)
{
    if (!l) {
        bpf_map_update_elem(&learned, &pid, &learned_empty, BPF_NOEXIST);
        l = bpf_map_lookup_elem(&learned, &pid);
        if (!l)
            return;
    }
    __u32 slot = l->next;
#pragma unroll
    for (int i = 0; i < LEARNED_MAPPINGS; i++) {
        if (l->m[i].start < m->end && m->start < l->m[i].end) {
            l->m[i] = *m;
            return;
        }
    }
    l->m[slot & (LEARNED_MAPPINGS - 1)] = *m;
    l->next = slot + 1;
}

/* The mapping of file (found by bpf_find_vma) for the unwinder, when the
 * file's table is loaded. */
static __always_inline int file_mapping(const struct vma_found *found, struct mapping_value *m)
{
    struct file_key key = { .dev = found->dev, .ino = found->ino };
    const struct file_table *f = bpf_map_lookup_elem(&file_tables, &key);
    if (!f)
        return 0;
    __u64 offset = found->pgoff * PAGE_SIZE;
    __u64 delta = f->exec2_offset && offset >= f->exec2_offset ? f->exec2_offset_minus_vaddr
                                                               : f->offset_minus_vaddr;
    m->bias = found->start - offset + delta;
    m->start = found->start;
    m->end = found->end;
    m->exe_id = f->exe_id;
    return 1;
}

/* Resolves pc through the kernel's own view of the current task, for a
 * process userspace has not scanned (yet) or a PC outside its scanned
 * mappings: a new process of a known executable unwinds from its first
 * sample. In order: mappings this process met before; its main executable's
 * text (mm->start_code..end_code) and its dynamic loader (AT_BASE), both
 * read without a lock; one bpf_find_vma.
 * Makes the mapping current and returns RESOLVED when its file's table is
 * loaded, RESOLVED_JIT for anonymous executable memory (code a JIT wrote),
 * else 0. Only the *_vma programs call it (bpf_find_vma is 5.17+, and its
 * callback needs 5.13+ just to load). */
#define RESOLVED 1
#define RESOLVED_JIT 3
static __always_inline int resolve_by_vma(struct unwind_state *s, __u64 pc)
{
    __u32 pid = s->record.header.pid;
    struct learned_mappings *l = bpf_map_lookup_elem(&learned, &pid);
    struct mapping_value m = {};
    if (l) {
#pragma unroll
        for (int i = 0; i < LEARNED_MAPPINGS; i++) {
            if (pc >= l->m[i].start && pc < l->m[i].end) {
                m = l->m[i];
                if (m.exe_id == JIT_EXE_ID)
                    return RESOLVED_JIT;
                goto table;
            }
        }
    }
    struct task_struct *task = bpf_get_current_task_btf();
    struct mm_struct *mm = BPF_CORE_READ(task, mm);
    __u64 start_code = BPF_CORE_READ(mm, start_code);
    __u64 end_code = BPF_CORE_READ(mm, end_code);
    struct file_key main_key = {
        .dev = BPF_CORE_READ(mm, exe_file, f_inode, i_sb, s_dev),
        .ino = BPF_CORE_READ(mm, exe_file, f_inode, i_ino),
    };
    const struct file_table *main = bpf_map_lookup_elem(&file_tables, &main_key);
    const struct file_table *f;
    __u64 base;
    if (pc >= start_code && pc < end_code) {
        f = main;
        if (!f) {
            count(METRIC_NATIVE_VMA_MISSES);
            return 0;
        }
        /* end_code is the load bias plus the end of the last executable
         * segment (start_code is not on every kernel). */
        m.bias = end_code - f->exec_end_vaddr;
        m.start = start_code;
        m.end = end_code;
        m.exe_id = f->exe_id;
    } else if (main && main->interp_exe_id && (base = loader_base(mm)) != 0 &&
               pc >= base + main->interp_exec_start && pc < base + main->interp_exec_end) {
        m.bias = base;
        m.start = base + main->interp_exec_start;
        m.end = base + main->interp_exec_end;
        m.exe_id = main->interp_exe_id;
        count(METRIC_NATIVE_LOADER_LOOKUPS);
    } else {
        struct vma_found found = {};
        if (bpf_find_vma(task, pc, vma_found_cb, &found, 0) != 0) {
            count(METRIC_NATIVE_VMA_MISSES);
            return 0;
        }
        if (found.ino == 0 && (found.flags & VM_EXEC)) {
            /* Remembered, so the JIT's next frames need no lookup. */
            m.exe_id = JIT_EXE_ID;
            m.start = found.start;
            m.end = found.end;
            learn_mapping(pid, l, &m);
            return RESOLVED_JIT;
        }
        if (found.ino == 0 || !file_mapping(&found, &m)) {
            count(METRIC_NATIVE_VMA_MISSES);
            return 0;
        }
        /* Only what took the helper: the main executable and the loader
         * resolve without a lock anyway, and would take slots. */
        learn_mapping(pid, l, &m);
    }
table:;
    __u64 id = m.exe_id;
    const struct exe_table *t = bpf_map_lookup_elem(&exe_tables, &id);
    if (!t) {
        count(METRIC_NATIVE_VMA_MISSES);
        return 0;
    }
    s->mapping = m;
    s->table = *t;
    s->table_missing = 0;
    count(METRIC_NATIVE_VMA_LOOKUPS);
    return RESOLVED;
}

/* Whether the current task is inside execve (task->in_execve, where the
 * kernel has it). */
static __always_inline int in_exec(void)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    if (!bpf_core_field_exists(task->in_execve))
        return 0;
    return BPF_CORE_READ_BITFIELD_PROBED(task, in_execve);
}

/* How far above rsp a frame pointer may point: a frame larger than this is
 * more likely a register that holds something else. */
#define FRAME_POINTER_MAX_DISTANCE (1 << 20)

/* Unwinds the frame at s->pc, which has no unwind information, by frame
 * pointer (what perf -g does for every frame): valid only if rbp points into
 * the stack just above rsp; the frame recorded at `words` (if any: an
 * interpreter loop's may be left out) is flagged. Returns 1 to stop. */
static __always_inline int frame_pointer_step(struct unwind_state *s, __u32 words, __u64 length)
{
    __u64 fp = s->fp;
    /* The ABI marks the outermost frame with rbp = 0 (_start, a thread's
     * start, Go's goexit): the trace is complete. */
    if (fp == 0) {
        s->done = 1;
        return 1;
    }
    /* rbp == rsp is a frame with no locals (push rbp; mov rsp, rbp; call):
     * the new rsp, rbp + 16, is above the old one either way. */
    if (fp < s->sp || fp - s->sp > FRAME_POINTER_MAX_DISTANCE || (fp & 7)) {
        push_error(s, FRAME_TYPE_NATIVE, ERR_NATIVE_BAD_FRAME_POINTER);
        return 1;
    }
    __u64 caller_fp, ra;
    if (read_stack_word(s, fp, &caller_fp)) {
        push_error(s, FRAME_TYPE_NATIVE, ERR_NATIVE_READ_FRAME_POINTER);
        return 1;
    }
    if (read_stack_word(s, fp + 8, &ra)) {
        push_error(s, FRAME_TYPE_NATIVE, ERR_NATIVE_READ_RETURN_ADDRESS);
        return 1;
    }
    if (s->record.header.num_frame_words == words + length)
        s->record.frames[words & (MAX_FRAME_WORDS - 1)] |= (__u64)FRAME_FLAG_FRAME_POINTER
                                                           << FRAME_HEADER_FLAGS_SHIFT;
    count(METRIC_NATIVE_FRAME_POINTER_FRAMES);
    s->fp = caller_fp;
    s->sp = fp + 16;
    s->pc = ra;
    s->return_address = 1;
    s->interp_done = 0;
    return 0;
}

/* A frame of code a JIT wrote into anonymous memory (V8, HotSpot, ...): no
 * file, no table; recorded as a native frame without executable id, its
 * process address flagged pid_specific (userspace shows it as [jit]), and
 * unwound by frame pointer, which these JITs keep. */
static __always_inline int jit_step(struct unwind_state *s, __u32 words)
{
    __u64 flags = FRAME_FLAG_PID_SPECIFIC | (s->return_address ? FRAME_FLAG_RETURN_ADDRESS : 0);
    s->record.frames[words & (MAX_FRAME_WORDS - 1)] =
        frame_header_pack(s->pc, 1, flags, FRAME_TYPE_NATIVE);
    s->record.header.num_frame_words = words + 1;
    s->user_frames++;
    s->cache_valid = 0;
    count(METRIC_NATIVE_JIT_FRAMES);
    return frame_pointer_step(s, words, 1);
}

/* Unwinds one native frame of the current CPU's trace. Returns 1 to stop the
 * loop.
 *
 * A global (non-inline) function: the verifier checks it once, on its own,
 * with its argument unknown, instead of once per loop iteration and path in
 * its caller. That keeps every program under 20,000 processed
 * instructions on every kernel, where an inlined step cost from 4,000 to
 * over 1,000,000 depending on the kernel's state pruning. Global functions
 * take scalars only before 5.12, so the state is looked up here. */
static __always_inline int native_step_impl(struct unwind_state *s, const int vma)
{
    __u64 pc = s->pc;
    if (pc == 0) {
        s->done = 1; /* the caller's return address was 0: end of stack */
        return 1;
    }
    __u32 words = s->record.header.num_frame_words;
    if (s->user_frames >= MAX_USER_FRAMES || words > MAX_FRAME_WORDS - NATIVE_FRAME_WORDS - 1) {
        push_error(s, FRAME_TYPE_UNKNOWN, ERR_STACK_LENGTH_EXCEEDED);
        return 1;
    }

    if (s->user_frames == 0 && s->record.header.num_kernel_frames > 0 && in_exec()) {
        /* Its registers are those of the image exec is replacing, its
         * memory may already be the new one's (while the mappings known
         * for the old one still resolve its PC): there is no user stack to
         * unwind, only the kernel's. */
        count(METRIC_SAMPLES_IN_EXEC);
        s->done = 1;
        return 1;
    }
    if ((!s->cache_valid || pc < s->mapping.start || pc >= s->mapping.end) &&
        !find_cached_mapping(s, pc)) {
        struct mapping_key key = {
            .prefixlen = MAPPING_KEY_BITS,
            .asid_be = bpf_htonl(s->asid),
            .address_be = bpf_cpu_to_be64(pc),
        };
        /* asid 0 is never allocated: a process not scanned yet. */
        struct mapping_value *m = s->asid ? bpf_map_lookup_elem(&mappings, &key) : NULL;
        if (!m) {
            /* Maybe mapped since the last scan (dlopen): ask for a rescan. */
            if (s->asid)
                send_pid_event(PID_EVENT_KIND_UNKNOWN, s->record.header.pid, 0, 0);
            int resolved = vma ? resolve_by_vma(s, pc) : 0;
            if (resolved == RESOLVED_JIT)
                return jit_step(s, words);
            if (resolved != RESOLVED) {
                /* Not scanned, and a file without a loaded table (or the
                 * kernel would not say): the scan loads it. */
                if (vma && !s->asid)
                    send_pid_event(PID_EVENT_KIND_UNKNOWN, s->record.header.pid, 0, 0);
                push_error(s, FRAME_TYPE_NATIVE, ERR_NATIVE_NO_MAPPING);
                return 1;
            }
            goto mapped;
        }
        if (m->exe_id == JIT_EXE_ID)
            return jit_step(s, words);
        s->mapping = *m;
        __u64 id = m->exe_id;
        const struct exe_table *t = bpf_map_lookup_elem(&exe_tables, &id);
        if (t) {
            s->table = *t;
            /* Only complete answers are cached: a table may come later. */
            struct cached_mapping *c =
                &s->cache[s->cache_next++ & (MAPPING_CACHE_SLOTS - 1)];
            c->mapping = s->mapping;
            c->table = *t;
            c->asid = s->asid;
            c->valid = 1;
        } else {
            s->table.row_start = 0;
            s->table.row_count = 0;
        }
        s->table_missing = t == NULL;
    }
mapped:
    s->cache_valid = 1;
    __u64 vaddr = pc - s->mapping.bias;
    __u64 lookup = vaddr - (s->return_address ? 1 : 0);
    /* An interpreter loop: its unwinder emits the interpreted frames first
     * (python_step, run by the caller), then the next step unwinds the loop's
     * native frame without recording it, unless the unwinder declined. */
    int in_loop = s->table.interpreter_end != 0 && lookup >= s->table.interpreter_start &&
                  lookup < s->table.interpreter_end;
    if (in_loop && s->interp_done == 0)
        return 2;
    __u64 length = NATIVE_FRAME_WORDS;
    if (!in_loop || s->interp_done != 1) {
        __u64 exe_id = s->mapping.exe_id;
        __u64 flags = s->return_address ? FRAME_FLAG_RETURN_ADDRESS : 0;
        /* Callers mostly live in their callee's executable: such a frame
         * leaves the id out, which halves the bytes a trace costs the ring
         * buffer. */
        if (s->last_exe_valid && s->last_exe_id == exe_id) {
            length = NATIVE_FRAME_WORDS_SAME_EXE;
        } else {
            s->record.frames[(words + 1) & (MAX_FRAME_WORDS - 1)] = exe_id;
            s->last_exe_id = exe_id;
            s->last_exe_valid = 1;
        }
        s->record.frames[words & (MAX_FRAME_WORDS - 1)] =
            frame_header_pack(vaddr, length, flags, FRAME_TYPE_NATIVE);
        s->record.header.num_frame_words = words + length;
        s->user_frames++;
    }

    if (lookup > 0xffffffffull) {
        push_error(s, FRAME_TYPE_NATIVE, ERR_NATIVE_PC_OUT_OF_RANGE);
        return 1;
    }
    const struct exe_table *t = &s->table;
    struct unwind_row r;
    if (t->row_count == 0) {
        /* A file without any row (code built without unwind tables) is
         * unwound by frame pointer; one whose table is not loaded is not. */
        if (s->table_missing) {
            push_error(s, FRAME_TYPE_NATIVE, ERR_NATIVE_NO_UNWIND_INFO);
            return 1;
        }
        return frame_pointer_step(s, words, length);
    }
    __u32 slot = (((__u32)lookup ^ (t->row_start * 0x9e3779b1u)) * 0x9e3779b1u) >> (32 - ROW_CACHE_BITS);
    struct cached_row *cached = &s->rows[slot & (ROW_CACHE_SLOTS - 1)];
    if (cached->table == t->row_start + 1 && cached->address == (__u32)lookup) {
        r = cached->row;
    } else {
        long found = find_row(t, (__u32)lookup);
        if (found == -2) {
            push_error(s, FRAME_TYPE_NATIVE, ERR_NATIVE_BAD_TABLE);
            return 1;
        }
        if (found < 0)
            return frame_pointer_step(s, words, length);
        __u32 idx = t->row_start + (__u32)found;
        const struct unwind_row *row = bpf_map_lookup_elem(&unwind_rows, &idx);
        if (!row) {
            push_error(s, FRAME_TYPE_NATIVE, ERR_NATIVE_BAD_TABLE);
            return 1;
        }
        r = *row;
        cached->table = t->row_start + 1;
        cached->address = (__u32)lookup;
        cached->row = r;
    }
    const struct unwind_row *row = &r;

    __u64 cfa;
    switch (row->kind) {
    case UNWIND_RULE_KIND_CFA_SP:
        cfa = s->sp + row->cfa_offset;
        break;
    case UNWIND_RULE_KIND_CFA_FP:
        cfa = s->fp + row->cfa_offset;
        break;
    case UNWIND_RULE_KIND_PLT:
        cfa = s->sp + 8 + ((pc & 15) >= row->cfa_offset ? 8 : 0);
        break;
    case UNWIND_RULE_KIND_SIGNAL: {
        /* The handler "returned" to the trampoline's first instruction (its
         * FDE starts a byte early so the lookup above found it): this frame
         * is the trampoline itself, not a call site. */
        s->record.frames[words & (MAX_FRAME_WORDS - 1)] =
            frame_header_pack(vaddr, length, 0, FRAME_TYPE_NATIVE);
        __u64 regs[3];
        if (read_stack_word(s, s->sp + UCONTEXT_RBP, &regs[0]) ||
            read_stack_word(s, s->sp + UCONTEXT_RSP, &regs[1]) ||
            read_stack_word(s, s->sp + UCONTEXT_RIP, &regs[2])) {
            push_error(s, FRAME_TYPE_NATIVE, ERR_NATIVE_READ_SIGNAL_FRAME);
            return 1;
        }
        s->fp = regs[0];
        s->sp = regs[1];
        s->pc = regs[2];
        /* The interrupted PC is exact, not a return address. */
        s->return_address = 0;
        s->interp_done = 0;
        return 0;
    }
    case UNWIND_RULE_KIND_END_OF_STACK:
        s->done = 1;
        return 1;
    case UNWIND_RULE_KIND_FRAME_POINTER:
        return frame_pointer_step(s, words, length);
    default:
        push_error(s, FRAME_TYPE_NATIVE, ERR_NATIVE_UNWIND_INFO_INVALID);
        return 1;
    }

    if (cfa <= s->sp) {
        push_error(s, FRAME_TYPE_NATIVE, ERR_NATIVE_SP_NOT_INCREASING);
        return 1;
    }
    /* The saved rbp lies below the return address: read it first, so the
     * stack window starts there and the return address is already in it. */
    __u64 ra, fp = s->fp;
    if (row->fp_offset != 0 && read_stack_word(s, cfa + (__s64)row->fp_offset * 8, &fp)) {
        push_error(s, FRAME_TYPE_NATIVE, ERR_NATIVE_READ_FRAME_POINTER);
        return 1;
    }
    if (read_stack_word(s, cfa - 8, &ra)) {
        push_error(s, FRAME_TYPE_NATIVE, ERR_NATIVE_READ_RETURN_ADDRESS);
        return 1;
    }
    s->fp = fp;
    s->sp = cfa;
    s->pc = ra;
    s->return_address = 1;
    s->interp_done = 0;
    return 0;
}

/* A global function's argument must be a scalar, but the compiler passes
 * whatever a register holds for an argument the callee never reads: each
 * step reads its (meaningless) argument so the caller sets it. */
#define KEEP_ARG(x) __asm__ volatile("" ::"r"(x))

/* A field of the interpreter frame in py_buf (offsets come from
 * python_files: masked so the verifier sees the read in bounds). */
static __always_inline __u64 py_buf_u64(struct unwind_state *s, __u16 off)
{
    __u64 v = 0;
    __builtin_memcpy(&v, &s->py_buf[off & (PYTHON_FRAME_READ - 1)], 8);
    return v;
}

/* Finds the sampled thread's current interpreter frame: the main
 * interpreter's thread states are searched for the one whose thread_id
 * (pthread_self()) is the thread's fs base. Returns 0 or an error code. */
static __always_inline __u32 python_current_frame(struct unwind_state *s,
                                                  const struct python_file *pf)
{
    /* Words are read into the per-CPU state, not the BPF stack: this runs
     * inside the step's global function, under the sampling program's
     * frame and beside bpf_find_vma's callback (512 bytes in all). */
    __u64 runtime = s->mapping.bias + pf->runtime_vaddr;
    if (bpf_probe_read_user(&s->py_word, 8, (void *)(runtime + pf->runtime_interpreters_head)) ||
        !s->py_word ||
        bpf_probe_read_user(&s->py_frame, 8,
                            (void *)(s->py_word + pf->interpreter_threads_head)))
        return ERR_PYTHON_READ_THREAD_STATE_ADDR;
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    __u64 fsbase = BPF_CORE_READ(task, thread.fsbase);
    /* py_frame holds the thread state being compared; only the search is
     * in the loop, whose body the verifier walks once per iteration. */
    int found = 0;
    for (int i = 0; i < PYTHON_THREAD_SEARCH && s->py_frame; i++) {
        if (bpf_probe_read_user(&s->py_word, 8, (void *)(s->py_frame + pf->thread_id)))
            return ERR_PYTHON_READ_THREAD_STATE_ADDR;
        if (s->py_word == fsbase) {
            found = 1;
            break;
        }
        if (bpf_probe_read_user(&s->py_frame, 8, (void *)(s->py_frame + pf->thread_next)))
            return ERR_PYTHON_READ_THREAD_STATE_ADDR;
    }
    if (!found)
        return ERR_PYTHON_ZERO_THREAD_STATE;
    if (bpf_probe_read_user(&s->py_frame, 8, (void *)(s->py_frame + pf->thread_frame)))
        return ERR_PYTHON_BAD_THREAD_STATE_FRAME_ADDR;
    if (pf->thread_frame_via_cframe &&
        (!s->py_frame ||
         bpf_probe_read_user(&s->py_frame, 8, (void *)(s->py_frame + pf->cframe_current_frame))))
        return ERR_PYTHON_BAD_CFRAME_CURRENT_FRAME_ADDR;
    return 0;
}

/* Ends the Python walk of this sample: the loop at pc and every later one
 * stay native frames. */
static __always_inline int python_give_up(struct unwind_state *s, __u32 err)
{
    count(error_metric(err));
    s->py_failed = 1;
    s->interp_done = 2;
    return 0;
}

/* Emits the Python frames one call of the interpreter loop at s->pc runs,
 * in place of the loop's native frame: native_step_impl returned 2 for it
 * and unwinds the loop's registers at the next step. Returns 1 to stop the
 * batch (the trace is full).
 *
 * Part of the native step rather than a tail-called program: a stack of
 * CPython 3.10 or older has one loop per Python call, and two tail calls per
 * loop would exhaust the kernel's 33 in a few frames. Inside the step's
 * global function it is verified once per step twin, and the batch loop
 * keeps one call per iteration (a second call there doubled the verifier's
 * work per iteration and, on 5.10, must not end the loop body). */
static __always_inline int python_step(struct unwind_state *s)
{
    if (s->py_failed) {
        s->interp_done = 2;
        return 0;
    }
    const struct python_file *pf = bpf_map_lookup_elem(&python_files, &s->mapping.exe_id);
    if (!pf)
        return python_give_up(s, ERR_PYTHON_NO_PROC_INFO);
    if (!s->py_frame_known) {
        __u32 err = python_current_frame(s, pf);
        if (err)
            return python_give_up(s, err);
        s->py_frame_known = 1;
    }
    __u32 layout = pf->frame_layout;
    __u64 f = s->py_frame;
    __u32 emitted = 0;
    int finished = 0;
    for (int i = 0; i < PYTHON_FRAMES_PER_STEP; i++) {
        if (!f) {
            /* The chain ended: this loop runs no Python frame we can see
             * (a thread between two calls); it keeps its native frame. */
            if (emitted == 0 && s->interp_done == 0) {
                s->interp_done = 2;
                return 0;
            }
            finished = 1;
            break;
        }
        __u32 words = s->record.header.num_frame_words;
        if (s->user_frames >= MAX_USER_FRAMES ||
            words > MAX_FRAME_WORDS - PYTHON_FRAME_WORDS - 1) {
            push_error(s, FRAME_TYPE_UNKNOWN, ERR_STACK_LENGTH_EXCEEDED);
            return 1;
        }
        if (bpf_probe_read_user(s->py_buf, pf->frame_read_size & (PYTHON_FRAME_READ - 1),
                                (void *)f))
            return python_give_up(s, ERR_PYTHON_BAD_FRAME_OBJECT_ADDR);
        __u64 prev = py_buf_u64(s, pf->frame_previous);
        __u64 code = py_buf_u64(s, pf->frame_code);
        if (layout == PYTHON_FRAME_LAYOUT_CSTACK_OWNER &&
            s->py_buf[pf->frame_owner & (PYTHON_FRAME_READ - 1)] == PYTHON_FRAME_OWNED_BY_CSTACK) {
            /* The shim below this loop's first frame: the loop is done. */
            f = prev;
            finished = 1;
            break;
        }
        __u64 instr = py_buf_u64(s, pf->frame_instruction);
        if (layout == PYTHON_FRAME_LAYOUT_FRAME_OBJECT)
            instr = (__u32)instr; /* f_lasti is an int */
        else
            instr -= code;
        s->record.frames[words & (MAX_FRAME_WORDS - 1)] = frame_header_pack(
            python_frame_data_pack(instr, pf->version), PYTHON_FRAME_WORDS, 0, FRAME_TYPE_PYTHON);
        s->record.frames[(words + 1) & (MAX_FRAME_WORDS - 1)] = code;
        s->record.header.num_frame_words = words + PYTHON_FRAME_WORDS;
        s->user_frames++;
        emitted++;
        f = prev;
        if (layout == PYTHON_FRAME_LAYOUT_FRAME_OBJECT ||
            (layout == PYTHON_FRAME_LAYOUT_ENTRY_FLAG &&
             s->py_buf[pf->frame_is_entry & (PYTHON_FRAME_READ - 1)])) {
            finished = 1;
            break;
        }
    }
    s->py_frame = f;
    if (finished)
        s->interp_done = 1;
    __u32 metric = METRIC_PYTHON_FRAMES;
    __u64 *frames = bpf_map_lookup_elem(&metrics, &metric);
    if (frames)
        *frames += emitted;
    return 0;
}

__attribute__((noinline)) int native_step(__u32 unused)
{
    KEEP_ARG(unused);
    struct unwind_state *s = state();
    if (!s)
        return 1;
    int r = native_step_impl(s, 0);
    return r == 2 ? python_step(s) : r;
}

/* The same step, falling back to bpf_find_vma where the trie has no
 * mapping (5.17+; only the *_vma programs call it). */
__attribute__((noinline)) int native_step_vma(__u32 unused)
{
    KEEP_ARG(unused);
    struct unwind_state *s = state();
    if (!s)
        return 1;
    int r = native_step_impl(s, 1);
    return r == 2 ? python_step(s) : r;
}

/* Unwinds a batch of native frames, then sends the trace or tail-calls the
 * native program for the next batch. */
static __always_inline void unwind_batch(struct bpf_perf_event_data *ctx, struct unwind_state *s,
                                         const int vma)
{
    __u32 frames_before = s->user_frames;
    /* A plain bounded loop (5.3+) rather than bpf_loop (5.17+): each
     * iteration is a call the verifier does not descend into again. */
    for (__u32 i = 0; i < NATIVE_FRAMES_PER_PROGRAM; i++) {
        if (vma ? native_step_vma(i) : native_step(i))
            break;
    }
    /* Counted per batch rather than per frame: one map access, not 16. */
    __u32 metric = METRIC_NATIVE_FRAMES;
    __u64 *frames = bpf_map_lookup_elem(&metrics, &metric);
    if (frames)
        *frames += s->user_frames - frames_before;
    if (s->done) {
        send_trace(s);
        return;
    }
    if (s->tail_calls >= MAX_TAIL_CALLS) {
        push_error(s, FRAME_TYPE_UNKNOWN, ERR_MAX_TAIL_CALLS);
        send_trace(s);
        return;
    }
    s->tail_calls++;
    count(METRIC_NATIVE_TAIL_CALLS);
    bpf_tail_call(ctx, &programs, PROG_NATIVE);
    push_error(s, FRAME_TYPE_UNKNOWN, ERR_TAIL_CALL_FAILED);
    send_trace(s);
}

/* The native unwinder in the program array: unwind_native_vma where the
 * kernel has bpf_find_vma, else unwind_native (userspace loads one). */
SEC("perf_event")
int unwind_native(struct bpf_perf_event_data *ctx)
{
    struct unwind_state *s = state();
    if (s)
        unwind_batch(ctx, s, 0);
    return 0;
}

SEC("perf_event")
int unwind_native_vma(struct bpf_perf_event_data *ctx)
{
    struct unwind_state *s = state();
    if (s)
        unwind_batch(ctx, s, 1);
    return 0;
}

/* Sets the unwinder's registers to the sampled task's user registers: from
 * the sample when it hit user mode, else from the task's saved user pt_regs.
 * Returns 0 when the task has no user context (a kernel thread). */
static __always_inline int user_regs(struct bpf_perf_event_data *ctx, struct unwind_state *s)
{
    if ((ctx->regs.cs & 3) == 3) {
        /* Field by field: each context access is rewritten by the verifier. */
        s->pc = ctx->regs.rip;
        s->sp = ctx->regs.rsp;
        s->fp = ctx->regs.rbp;
        return 1;
    }
    /* An exiting task drops its address space (exit_mm) before the kernel
     * tears it down: from then on it has no user stack to unwind, as for
     * perf. */
    struct task_struct *current = (struct task_struct *)bpf_get_current_task();
    if (!BPF_CORE_READ(current, mm))
        return 0;
    struct pt_regs *saved;
    if (has_task_pt_regs) {
        saved = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
    } else {
        /* The verifier never visits this branch where the helpers above
         * exist, nor the one above where they do not (has_task_pt_regs is a
         * read-only global): one object serves both. */
        void *stack = BPF_CORE_READ(current, stack);
        saved = stack ? (struct pt_regs *)(stack + KERNEL_THREAD_SIZE) - 1 : NULL;
    }
    /* rip, cs, eflags and rsp (adjacent in pt_regs), then rbp: two reads,
     * not the whole struct on a stack the unwinder's frames need. */
    __u64 tail[4], rbp;
    if (!saved || bpf_probe_read_kernel(tail, sizeof(tail), &saved->rip) ||
        bpf_probe_read_kernel(&rbp, sizeof(rbp), &saved->rbp))
        return 0;
    if ((tail[1] & 3) != 3 || tail[0] == 0)
        return 0;
    s->pc = tail[0];
    s->sp = tail[3];
    s->fp = rbp;
    return 1;
}

static __always_inline void sample_impl(struct bpf_perf_event_data *ctx, const int vma)
{
    count(METRIC_SAMPLES);
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 pid = pid_tgid >> 32;
    if (pid == 0 && !include_idle) {
        count(METRIC_SAMPLES_IDLE);
        return;
    }
    struct process_info *proc = NULL;
    if (pid != 0) {
        proc = bpf_map_lookup_elem(&processes, &pid);
        if (proc && (proc->flags & PROCESS_FLAG_EXCLUDED)) {
            count(METRIC_SAMPLES_FILTERED);
            return;
        }
        if (!proc && filter_enabled) {
            /* Not decided yet: userspace applies the filter to it. */
            count(METRIC_SAMPLES_PID_UNKNOWN);
            send_pid_event(PID_EVENT_KIND_UNKNOWN, pid, 0, 0);
            return;
        }
    }

    struct unwind_state *s = state();
    if (!s)
        return;
    s->tail_calls = 0;
    s->cache_valid = 0;
    s->last_exe_valid = 0;
    s->window_len = 0;
    __u32 zero = 0;
    __u64 *generation = bpf_map_lookup_elem(&mapping_generation, &zero);
    if (generation && *generation != s->cache_generation) {
#pragma unroll
        for (int i = 0; i < MAPPING_CACHE_SLOTS; i++)
            s->cache[i].valid = 0;
#pragma unroll
        for (int i = 0; i < ROW_CACHE_SLOTS; i++)
            s->rows[i].table = 0;
        s->cache_generation = *generation;
    }
    s->user_frames = 0;
    s->return_address = 0;
    s->done = 0;
    s->py_frame_known = 0;
    s->py_failed = 0;
    s->interp_done = 0;
    struct trace_header *h = &s->record.header;
    h->pid = pid;
    h->tid = (__u32)pid_tgid;
    h->ktime_ns = bpf_ktime_get_ns();
    h->cpu = bpf_get_smp_processor_id();
    bpf_get_current_comm(h->comm, sizeof(h->comm));

    /* A sample taken in user mode has no kernel stack: skip the helper. */
    long got = 0;
    if ((ctx->regs.cs & 3) != 3) {
        got = bpf_get_stack(ctx, s->record.frames, MAX_KERNEL_FRAMES * sizeof(__u64), 0);
        if (got < 0) {
            count(METRIC_KERNEL_STACK_ERRORS);
            got = 0;
        }
    }
    __u16 kernel_frames = got / sizeof(__u64);
    h->num_kernel_frames = kernel_frames;
    h->num_frame_words = kernel_frames;

    if (pid == 0 || !user_regs(ctx, s)) {
        /* Idle or a kernel thread: the kernel stack is the whole trace. */
        if (kernel_frames == 0) {
            count(error_metric(ERR_EMPTY_STACK));
            return;
        }
        send_trace(s);
        return;
    }
    if (!proc) {
        if (!vma) {
            send_pid_event(PID_EVENT_KIND_UNKNOWN, pid, 0, 0);
            count(METRIC_SAMPLES_PID_UNKNOWN);
            return;
        }
        /* Not scanned: every frame is resolved through the kernel's view
         * (resolve_by_vma), and userspace only reads its labels. Most
         * processes of a build never need a scan at all. */
        send_pid_event(PID_EVENT_KIND_NEW, pid, 0, 0);
        count(METRIC_SAMPLES_PID_UNKNOWN_UNWOUND);
        s->asid = 0;
    } else {
        s->asid = proc->asid;
    }
    /* The first batch runs here: most stacks need no tail call at all. */
    unwind_batch(ctx, s, vma);
}

/* The sampling program; sample_vma where the kernel has bpf_find_vma
 * (userspace attaches one). */
SEC("perf_event")
int sample(struct bpf_perf_event_data *ctx)
{
    sample_impl(ctx, 0);
    return 0;
}

SEC("perf_event")
int sample_vma(struct bpf_perf_event_data *ctx)
{
    sample_impl(ctx, 1);
    return 0;
}

/* A new process (not a thread) of a known parent shares the parent's address
 * space until it execs or maps something new, so its samples unwind at once,
 * before userspace has scanned it: short-lived children are not lost. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
    __u32 child_pid = child->pid;
    if (child_pid != (__u32)child->tgid)
        return 0; /* a thread */
    __u32 parent_pid = parent->tgid;
    struct process_info *p = bpf_map_lookup_elem(&processes, &parent_pid);
    if (!p)
        return 0;
    /* The child inherits the parent's filter decision too. */
    struct process_info c = { .asid = p->asid, .flags = p->flags };
    bpf_map_update_elem(&processes, &child_pid, &c, BPF_ANY);
    send_pid_event(PID_EVENT_KIND_FORK, child_pid, parent_pid, c.asid);
    return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int on_exec(void *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    /* Its old mappings are gone: drop them now rather than unwind with them. */
    bpf_map_delete_elem(&learned, &pid);
    int reported = bpf_map_delete_elem(&pid_reported, &pid) == 0;
    if (bpf_map_delete_elem(&processes, &pid) == 0 || reported)
        send_pid_event(PID_EVENT_KIND_EXEC, pid, 0, 0);
    return 0;
}

/* The context of a syscalls/sys_exit_* tracepoint (its format file). */
struct syscall_exit_args {
    __u64 common; /* common_type, common_flags, common_preempt_count, common_pid */
    long id;
    long ret;
};

/* A process not scanned yet (every process right after exec) learns each
 * executable file mapping as its mmap returns, so its samples resolve every
 * library the dynamic loader or dlopen mapped without bpf_find_vma, which a
 * sample can call once at most and not while the mmap lock is held. Attached
 * where the kernel has bpf_find_vma; a scanned process is skipped at the
 * cost of one hash lookup (its mappings come from the trie). */
SEC("tracepoint/syscalls/sys_exit_mmap")
int on_mmap_vma(struct syscall_exit_args *ctx)
{
    __u64 addr = ctx->ret;
    if (addr >= (__u64)-4095)
        return 0; /* the mmap failed */
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (bpf_map_lookup_elem(&processes, &pid))
        return 0;
    struct vma_found found = {};
    struct mapping_value m = {};
    if (bpf_find_vma(bpf_get_current_task_btf(), addr, vma_found_cb, &found, 0) != 0 ||
        found.ino == 0 || !(found.flags & VM_EXEC) || !file_mapping(&found, &m))
        return 0;
    learn_mapping(pid, bpf_map_lookup_elem(&learned, &pid), &m);
    count(METRIC_NATIVE_MAPPINGS_LEARNED_AT_MMAP);
    return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int on_exit(void *ctx)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 pid = pid_tgid >> 32;
    if (pid != (__u32)pid_tgid)
        return 0; /* a thread other than the main one */
    int reported = bpf_map_delete_elem(&pid_reported, &pid) == 0;
    bpf_map_delete_elem(&learned, &pid);
    if (bpf_map_delete_elem(&processes, &pid) == 0 || reported)
        send_pid_event(PID_EVENT_KIND_EXIT, pid, 0, 0);
    return 0;
}
