//! Rows for Go code from `.gopclntab`, for binaries whose Go functions have
//! no CFI (Go's linker writes no `.eh_frame`; `-s -w` drops `.debug_frame`).
//!
//! * **CFA.** `pcsp` gives, per pc range, the bytes the function's frame
//!   occupies below its return address, so `CFA = rsp + pcsp + 8` and the
//!   return address is at `CFA - 8` (the same rows Go's linker derives its
//!   `.debug_frame` from).
//! * **rbp.** Go on amd64 keeps frame pointers: once a function with a
//!   frame has saved its caller's `rbp`, it lies at `CFA - 16`. Only that is
//!   said, and only where the machine code proves it: the function's first
//!   SP change is `PUSHQ BP` (Go 1.21 on), or `SUBQ $n, SP` immediately
//!   followed by `MOVQ BP, n-8(SP)` (up to Go 1.20); from the end of that
//!   save, at every pc whose frame is at least as large as right after it,
//!   the slot holds the caller's `rbp` (epilogues restore `rbp` before they
//!   shrink the frame, and the slot is the frame pointer's by Go's ABI).
//!   Everywhere else `rbp` is `unchanged`, which is exact in the prologue
//!   and after the epilogue, and what a function without a frame does. This
//!   matters when the caller is not Go: C code calling into Go may find its
//!   CFA from `rbp`.
//! * **Outermost frames.** A function flagged `TOPFRAME` (`goexit`,
//!   `mstart`, `rt0_go`) is the end of its stack. A function flagged
//!   `SPWRITE` (it switches stacks: `systemstack`, `mcall`, `asmcgocall`,
//!   `gogo`, vDSO calls) cannot be unwound past, since its `pcsp` does not
//!   follow the switch; it is made the end of the stack too, which is where
//!   Go's own profiler stops. `runtime.cgocallback` is the exception, as in
//!   Go's unwinder: it writes SP but keeps a frame that unwinds into the
//!   goroutine that called C.
//! * **Signal handlers.** `runtime.sigtramp` is `TOPFRAME` for Go's
//!   tracebacks, but the kernel called it with a return address: the
//!   restorer Go installs (`runtime.sigreturn`, `sigreturn__sigaction` from
//!   Go 1.21), above the `ucontext_t` of the interrupted code. So the
//!   handler keeps its `pcsp` rows and the restorer is a signal frame, from
//!   one byte before its entry (where a return address to it is looked up)
//!   when that byte is padding, as glibc's `__restore_rt` FDE does. A sample
//!   in a handler (async preemption's `SIGURG`, `SIGPROF`) then shows the
//!   goroutine it interrupted. (With cgo, libc's `sigaction` installs
//!   libc's restorer, whose CFI already says so.) For the same reason,
//!   `runtime.systemstack_switch`, whose entry Go up to 1.20 saves as the
//!   pc of a goroutine that called C, gets its entry's rule a byte early.

use gopclntab::{flag, Function, PcRange, Pclntab};

use crate::rule::{CfaBase, FpRule, InvalidReason, UnwindRule};

/// How a Go function's rows are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// From `pcsp`.
    Frame,
    /// The end of the stack.
    Outermost,
    /// A signal restorer.
    SignalReturn,
}

/// A Go function that contributes rows: `[start, end)` is what its `pcsp`
/// covers (the function's code; the padding after it has no rows), a byte
/// more before a signal restorer.
pub(crate) struct GoFunction {
    pub start: u64,
    pub end: u64,
    pub ranges: Vec<PcRange>,
    pub kind: Kind,
    /// Where the caller's `rbp` is known to be at `CFA - 16`: from this pc
    /// on, wherever `pcsp` is at least the threshold.
    pub fp_saved: Option<(u64, i32)>,
    /// A return address to the function's entry exists (a signal restorer,
    /// [`RETURNED_TO_AT_ENTRY`]): the byte before it, where such an address
    /// is looked up, needs its entry's rule.
    pub returned_to_at_entry: bool,
}

/// Functions whose entry the runtime stores as a return address: up to
/// Go 1.20, `asmcgocall` and `systemstack` leave `systemstack_switch`'s
/// entry as the goroutine's saved pc while it runs on the system stack
/// (from 1.21, its entry + 8, inside it). Unwinding a cgo callback returns
/// there (see `runtime.cgocallback`).
const RETURNED_TO_AT_ENTRY: [&str; 1] = ["runtime.systemstack_switch"];

/// `SPWRITE` functions unwound through (see the module doc).
const SPWRITE_UNWOUND: [&str; 1] = ["runtime.cgocallback"];
/// `TOPFRAME` functions unwound through: signal handlers.
const TOPFRAME_UNWOUND: [&str; 1] = ["runtime.sigtramp"];
/// The signal restorers Go installs.
pub(crate) const SIGNAL_RESTORERS: [&str; 2] =
    ["runtime.sigreturn", "runtime.sigreturn__sigaction"];

impl GoFunction {
    pub(crate) fn new(tab: &Pclntab<'_>, f: &Function) -> Result<Option<Self>, gopclntab::Error> {
        let ranges: Vec<PcRange> = tab.pcsp(f).collect::<Result<_, _>>()?;
        let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
            return Ok(None);
        };
        let name = tab.name(f)?;
        let kind = if SIGNAL_RESTORERS.contains(&name.as_ref()) {
            Kind::SignalReturn
        } else if (f.flag & flag::TOP_FRAME != 0 && !TOPFRAME_UNWOUND.contains(&name.as_ref()))
            || (f.flag & flag::SP_WRITE != 0 && !SPWRITE_UNWOUND.contains(&name.as_ref()))
        {
            Kind::Outermost
        } else {
            Kind::Frame
        };
        let fp_saved = match kind {
            Kind::Frame => frame_pointer_saved(tab, &ranges),
            _ => None,
        };
        Ok(Some(GoFunction {
            start: first.start,
            end: last.end,
            ranges,
            kind,
            fp_saved,
            returned_to_at_entry: kind == Kind::SignalReturn
                || RETURNED_TO_AT_ENTRY.contains(&name.as_ref()),
        }))
    }

    /// Gives the byte before the function its entry's rule (see
    /// [`GoFunction::returned_to_at_entry`]).
    pub(crate) fn start_a_byte_early(&mut self) {
        self.start -= 1;
        if let Some(first) = self.ranges.first_mut() {
            first.start -= 1;
        }
    }

    /// The rules of `[from, to)`, in address order, as (address, rule).
    pub(crate) fn rows(&self, from: u64, to: u64, mut push: impl FnMut(u64, UnwindRule)) {
        match self.kind {
            Kind::Outermost => return push(from.max(self.start), UnwindRule::EndOfStack),
            Kind::SignalReturn => return push(from.max(self.start), UnwindRule::SignalFrame),
            Kind::Frame => {}
        }
        for r in &self.ranges {
            let (s, e) = (r.start.max(from), r.end.min(to));
            if s >= e {
                continue;
            }
            // A negative pcsp is real: `syscall.rawVforkSyscall` pops its
            // return address before vfork. The row says what `.debug_frame`
            // says (the eBPF side refuses a CFA that does not grow).
            let cfa = |fp| match r.value.checked_add(8) {
                Some(offset) => UnwindRule::Cfa {
                    base: CfaBase::Sp,
                    offset,
                    fp,
                },
                _ => UnwindRule::Invalid(InvalidReason::CfaOffsetOutOfRange),
            };
            match self.fp_saved {
                Some((saved, min)) if r.value >= min && saved < e => {
                    if s < saved {
                        push(s, cfa(FpRule::Unchanged));
                    }
                    push(s.max(saved), cfa(FpRule::AtCfa(-16)));
                }
                _ => push(s, cfa(FpRule::Unchanged)),
            }
        }
    }
}

/// Where the prologue has saved the caller's `rbp` (see the module doc):
/// the pc after the save, and the smallest `pcsp` at which it stays saved.
fn frame_pointer_saved(tab: &Pclntab<'_>, ranges: &[PcRange]) -> Option<(u64, i32)> {
    let grown = ranges.iter().position(|r| r.value != 0)?;
    if grown == 0 || ranges[grown - 1].value != 0 {
        return None;
    }
    let (before, after) = (&ranges[grown - 1], &ranges[grown]);
    let at = after.start;
    // Go 1.21+: PUSHQ BP, and pcsp 8 from the next instruction.
    if after.value == 8 && at > before.start && tab.code(at - 1, 1) == Some(&[0x55]) {
        return Some((at, 8));
    }
    // Up to Go 1.20: SUBQ $n, SP (REX.W 83 /5 ib or 81 /5 id) ending at
    // `at`, then MOVQ BP, n-8(SP) (REX.W 89 /r, rbp into [rsp + disp]).
    let n = after.value;
    let sub_len = if i8::try_from(n).is_ok() { 4 } else { 7 };
    let sub_at = at.checked_sub(sub_len)?;
    if sub_at < before.start {
        return None;
    }
    let sub = tab.code(sub_at, sub_len)?;
    let sub_ok = match sub {
        [0x48, 0x83, 0xec, ib] => i32::from(*ib as i8) == n,
        [0x48, 0x81, 0xec, id @ ..] => i32::from_le_bytes(id.try_into().ok()?) == n,
        _ => false,
    };
    if !sub_ok {
        return None;
    }
    let slot = n.checked_sub(8)?;
    let mov = tab
        .code(at, 8)
        .or_else(|| tab.code(at, 5))
        .or_else(|| tab.code(at, 4))?;
    let len = match mov {
        [0x48, 0x89, 0x2c, 0x24, ..] if slot == 0 => 4,
        [0x48, 0x89, 0x6c, 0x24, d, ..] if i32::from(*d as i8) == slot => 5,
        [0x48, 0x89, 0xac, 0x24, d0, d1, d2, d3, ..]
            if i32::from_le_bytes([*d0, *d1, *d2, *d3]) == slot =>
        {
            8
        }
        _ => return None,
    };
    let saved = at.checked_add(len)?;
    (saved <= after.end).then_some((saved, n))
}
