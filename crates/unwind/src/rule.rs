//! The unwind rule model and its text form.

use std::fmt;

/// Register the CFA is computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CfaBase {
    /// `rsp` (DWARF register 7).
    Sp,
    /// `rbp` (DWARF register 6).
    Fp,
}

/// Where the caller's frame pointer (`rbp`) is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FpRule {
    /// `rbp` still holds the caller's value (DWARF `undefined`, `same_value`
    /// or no rule at all).
    ///
    /// `undefined` is folded in here on purpose: an unwinder that only tracks
    /// `rsp`, `rbp` and `rip` cannot do better than keeping the current `rbp`,
    /// and the next frame's CFI rarely depends on it.
    Unchanged,
    /// The caller's `rbp` was saved at `CFA + offset` (DWARF `offset(n)`).
    AtCfa(i32),
}

/// Why a range of addresses cannot be unwound with the simple rules.
///
/// Ordered so that statistics print in a stable order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InvalidReason {
    /// No FDE covers the address: a gap between FDEs or past the last one.
    NoUnwindInfo,
    /// The CFA is `reg + offset` with a register other than `rsp`/`rbp`
    /// (e.g. `r10` after stack realignment in `main`).
    CfaRegister,
    /// The CFA offset does not fit an `i32`.
    CfaOffsetOutOfRange,
    /// The CFA is a DWARF expression that is not one of the PLT patterns.
    CfaExpression,
    /// `rsp` has an explicit rule other than "the CFA" (the caller's `rsp`
    /// is the CFA by definition on x86-64 unless CFI says otherwise).
    SpRule,
    /// The return address is not saved at `CFA - 8` (and is not undefined).
    ReturnAddress,
    /// The `rbp` rule is neither unchanged nor `CFA + n` (e.g. kept in another
    /// register or computed by an expression), or `n` does not fit an `i32`.
    FpRule,
}

impl InvalidReason {
    /// Every reason, in `Ord` order.
    pub const ALL: [InvalidReason; 7] = [
        InvalidReason::NoUnwindInfo,
        InvalidReason::CfaRegister,
        InvalidReason::CfaOffsetOutOfRange,
        InvalidReason::CfaExpression,
        InvalidReason::SpRule,
        InvalidReason::ReturnAddress,
        InvalidReason::FpRule,
    ];

    /// Short kebab-case name used by `Display`.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::NoUnwindInfo => "no-unwind-info",
            InvalidReason::CfaRegister => "cfa-register",
            InvalidReason::CfaOffsetOutOfRange => "cfa-offset-out-of-range",
            InvalidReason::CfaExpression => "cfa-expression",
            InvalidReason::SpRule => "sp-rule",
            InvalidReason::ReturnAddress => "return-address",
            InvalidReason::FpRule => "fp-rule",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to find the caller's `rsp`, `rip` and `rbp` at an address.
///
/// Deliberately small and `Copy` (16 bytes, a row 24): the eBPF side will
/// pack it further, and tables of a million rows are common.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnwindRule {
    /// `CFA = base + offset`; the return address is at `CFA - 8` (this is
    /// checked when building the table: any other return-address rule gives
    /// [`UnwindRule::Invalid`]); the caller's `rsp` is the CFA.
    Cfa {
        base: CfaBase,
        offset: i32,
        fp: FpRule,
    },
    /// A standard lazy-binding PLT stub:
    /// `CFA = rsp + 8 + ((rip & 15) >= threshold ? 8 : 0)`, return address at
    /// `CFA - 8`, `rbp` unchanged.
    ///
    /// BFD ld emits threshold 11 for the classic `.plt` (`jmp *GOT; push n;
    /// jmp .plt0`) and 9 for the IBT `.plt` (`endbr64; push n; bnd jmp`);
    /// any `DW_OP_litN` threshold with that exact expression shape is accepted
    /// because the formula is then exactly the same.
    Plt { threshold: u8 },
    /// A signal trampoline (FDE or CIE with the `S` augmentation, e.g. glibc's
    /// `__restore_rt`): the caller's registers come from the `ucontext_t` that
    /// the kernel pushed at `rsp`.
    SignalFrame,
    /// The return address is undefined: this is the outermost frame
    /// (e.g. `_start`, `clone3` child entry).
    EndOfStack,
    /// These addresses cannot be unwound with the rules above.
    Invalid(InvalidReason),
}

impl UnwindRule {
    /// Whether this is an [`UnwindRule::Invalid`] rule.
    pub fn is_invalid(&self) -> bool {
        matches!(self, UnwindRule::Invalid(_))
    }
}

/// One row: `rule` applies from `address` up to the next row's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnwindRow {
    /// ELF virtual address (as in the file, before any load bias) where the
    /// rule starts to apply.
    pub address: u64,
    pub rule: UnwindRule,
}

fn write_signed(f: &mut fmt::Formatter<'_>, v: i32) -> fmt::Result {
    if v < 0 {
        write!(f, "-{}", v.unsigned_abs())
    } else {
        write!(f, "+{v}")
    }
}

impl fmt::Display for UnwindRule {
    /// `cfa=rsp+16 fp=cfa-16`, `cfa=rbp+16 fp=unchanged`, `plt(11)`,
    /// `signal`, `end`, `invalid(no-unwind-info)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            UnwindRule::Cfa { base, offset, fp } => {
                f.write_str(match base {
                    CfaBase::Sp => "cfa=rsp",
                    CfaBase::Fp => "cfa=rbp",
                })?;
                write_signed(f, offset)?;
                match fp {
                    FpRule::Unchanged => f.write_str(" fp=unchanged"),
                    FpRule::AtCfa(o) => {
                        f.write_str(" fp=cfa")?;
                        write_signed(f, o)
                    }
                }
            }
            UnwindRule::Plt { threshold } => write!(f, "plt({threshold})"),
            UnwindRule::SignalFrame => f.write_str("signal"),
            UnwindRule::EndOfStack => f.write_str("end"),
            UnwindRule::Invalid(r) => write!(f, "invalid({r})"),
        }
    }
}

impl fmt::Display for UnwindRow {
    /// `0x1040 cfa=rsp+16 fp=cfa-16`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x} {}", self.address, self.rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_forms() {
        let row = |address, rule| UnwindRow { address, rule }.to_string();
        assert_eq!(
            row(
                0x1040,
                UnwindRule::Cfa {
                    base: CfaBase::Sp,
                    offset: 16,
                    fp: FpRule::AtCfa(-16)
                }
            ),
            "0x1040 cfa=rsp+16 fp=cfa-16"
        );
        assert_eq!(
            row(
                0,
                UnwindRule::Cfa {
                    base: CfaBase::Fp,
                    offset: -8,
                    fp: FpRule::Unchanged
                }
            ),
            "0x0 cfa=rbp-8 fp=unchanged"
        );
        assert_eq!(row(0x20, UnwindRule::Plt { threshold: 11 }), "0x20 plt(11)");
        assert_eq!(row(0x20, UnwindRule::SignalFrame), "0x20 signal");
        assert_eq!(row(0x20, UnwindRule::EndOfStack), "0x20 end");
        assert_eq!(
            row(0x20, UnwindRule::Invalid(InvalidReason::NoUnwindInfo)),
            "0x20 invalid(no-unwind-info)"
        );
        assert_eq!(
            UnwindRule::Cfa {
                base: CfaBase::Sp,
                offset: i32::MIN,
                fp: FpRule::AtCfa(i32::MIN)
            }
            .to_string(),
            "cfa=rsp-2147483648 fp=cfa-2147483648"
        );
        for (i, r) in InvalidReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn rule_is_small() {
        assert!(std::mem::size_of::<UnwindRule>() <= 16);
        assert!(std::mem::size_of::<UnwindRow>() <= 24);
    }
}
