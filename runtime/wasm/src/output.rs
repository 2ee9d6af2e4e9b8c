//! Reading a plugin's answer out of its memory without trusting its size.
//!
//! wasmtime lifts the answer when the call returns and then at once calls
//! the plugin's `post-return`, where the plugin frees (and its allocator may
//! reuse) that memory: everything the host keeps must be copied during the
//! lift. `bindgen!`'s types would copy every string whole; here each string
//! is a [`Capped`]: looked at in place, checked, and only its first bytes up
//! to the cap are copied. wasmtime's hostcall fuel (set to `memory_mb` bytes
//! per call) counts every string and the action list at their full length
//! before anything is copied, so an answer whose strings add up to more than
//! that (1,000 reasons pointing at the same 60 MiB, say) is refused without
//! being copied 1,000 times.

use engine_core::plan::{ActionKind, Proposal};
use wasmtime::component::__internal::wasmtime_environ::component::StringEncoding;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{ComponentType, Lift, WasmStr};

use crate::limits;

/// A string of the plugin's answer, cut to its first `MAX` bytes (on a char
/// boundary, marked `…`) while it is lifted.
///
/// The `ComponentType` and `Lift` items below are the ones wasmtime's own
/// derive macros implement (hidden from its documentation, outside its
/// stability guarantees): a string's type, layout and lifting are those of
/// [`WasmStr`], which also checks bounds and alignment and counts the whole
/// string against the call's fuel; then only the kept prefix is decoded.
pub(crate) struct Capped<const MAX: usize>(pub(crate) String);

// SAFETY: same type, layout and flat representation as `WasmStr`, whose
// items are used as they are.
unsafe impl<const MAX: usize> ComponentType for Capped<MAX> {
    type Lower = <WasmStr as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <WasmStr as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <WasmStr as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: lifts through `WasmStr` (bounds, alignment, fuel) before reading
// the same pointer and length from the plugin's memory.
unsafe impl<const MAX: usize> Lift for Capped<MAX> {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        WasmStr::linear_lift_from_flat(cx, ty, src)?;
        let (ptr, len) = (src[0].get_u32(), src[1].get_u32());
        read::<MAX>(cx, ptr, len).map(Capped)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        WasmStr::linear_lift_from_memory(cx, ty, bytes)?;
        let word = |at: usize| {
            bytes
                .get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes)
                .ok_or_else(|| wasmtime::Error::msg("string pointer/length out of bounds"))
        };
        read::<MAX>(cx, word(0)?, word(4)?).map(Capped)
    }
}

/// The string at `ptr`/`len` (already checked by `WasmStr`), decoded from the
/// plugin's encoding; at most `MAX` bytes of it kept.
fn read<const MAX: usize>(cx: &LiftContext<'_>, ptr: u32, len: u32) -> wasmtime::Result<String> {
    const UTF16_TAG: u32 = 1 << 31;
    let mem = cx.memory();
    let slice = |bytes: Option<u64>| -> wasmtime::Result<&[u8]> {
        let start = ptr as usize;
        bytes
            .and_then(|n| usize::try_from(n).ok())
            .and_then(|n| start.checked_add(n))
            .and_then(|end| mem.get(start..end))
            .ok_or_else(|| wasmtime::Error::msg("string pointer/length out of bounds of memory"))
    };
    let utf16 = |units: u32| -> wasmtime::Result<String> {
        let raw = slice(Some(u64::from(units) * 2))?;
        let mut out = String::new();
        let code_units = raw
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]));
        for c in char::decode_utf16(code_units) {
            let c = c.map_err(|_| wasmtime::Error::msg("invalid utf-16 string"))?;
            if out.len() < MAX {
                out.push(c);
            }
        }
        Ok(limits::truncate(out, MAX))
    };
    match cx.options().string_encoding {
        StringEncoding::Utf8 => {
            let text = std::str::from_utf8(slice(Some(u64::from(len)))?)?;
            Ok(limits::truncate_str(text, MAX))
        }
        StringEncoding::Utf16 => utf16(len),
        StringEncoding::CompactUtf16 if len & UTF16_TAG != 0 => utf16(len ^ UTF16_TAG),
        StringEncoding::CompactUtf16 => {
            let latin1 = slice(Some(u64::from(len)))?;
            let out: String = latin1.iter().take(MAX).map(|&b| char::from(b)).collect();
            Ok(limits::truncate(out, MAX))
        }
    }
}

/// `engine:plugin/types.action-kind`, strings left in the plugin's memory.
#[derive(ComponentType, Lift)]
#[component(variant)]
pub(crate) enum RawKind {
    #[component(name = "delete-access-key")]
    DeleteAccessKey,
    #[component(name = "deactivate-access-key")]
    DeactivateAccessKey,
    #[component(name = "delete-login-profile")]
    DeleteLoginProfile,
    #[component(name = "none")]
    None(Capped<{ limits::MAX_REASON_BYTES }>),
}

/// `engine:plugin/types.action` of contract 0.2.0, its strings cut as they
/// are lifted.
#[derive(ComponentType, Lift)]
#[component(record)]
pub(crate) struct RawAction {
    #[component(name = "finding")]
    finding: u32,
    #[component(name = "kind")]
    kind: RawKind,
    #[component(name = "reason")]
    reason: Option<Capped<{ limits::MAX_REASON_BYTES }>>,
    #[component(name = "notify")]
    notify: Option<Capped<{ limits::MAX_NOTICE_BYTES }>>,
}

/// `engine:plugin/types.action` of contract 0.1.0 (no `notify`).
#[derive(ComponentType, Lift)]
#[component(record)]
pub(crate) struct RawActionV01 {
    #[component(name = "finding")]
    finding: u32,
    #[component(name = "kind")]
    kind: RawKind,
    #[component(name = "reason")]
    reason: Option<Capped<{ limits::MAX_REASON_BYTES }>>,
}

/// The result of `decide`, its strings cut as they are lifted.
pub(crate) type RawAnswer = Result<Vec<RawAction>, Capped<{ limits::MAX_ERROR_BYTES }>>;
/// The same, from a plugin of contract 0.1.0.
pub(crate) type RawAnswerV01 = Result<Vec<RawActionV01>, Capped<{ limits::MAX_ERROR_BYTES }>>;

/// A 0.1.0 answer as the newest contract's (no notices).
pub(crate) fn upgrade(list: Vec<RawActionV01>) -> Vec<RawAction> {
    list.into_iter()
        .map(|a| RawAction {
            finding: a.finding,
            kind: a.kind,
            reason: a.reason,
            notify: None,
        })
        .collect()
}

/// Why an answer was refused; becomes `InvalidOutput`.
pub(crate) struct Invalid(pub(crate) String);

/// The proposals of an `Ok` answer: at most `max_actions` of them.
pub(crate) fn actions(list: Vec<RawAction>, max_actions: usize) -> Result<Vec<Proposal>, Invalid> {
    if list.len() > max_actions {
        return Err(Invalid(format!(
            "{} actions for {} finding(s); at most one action per finding is allowed",
            list.len(),
            max_actions
        )));
    }
    Ok(list
        .into_iter()
        .map(|a| {
            let (kind, reason) = match a.kind {
                RawKind::DeleteAccessKey => (ActionKind::DeleteAccessKey, a.reason),
                RawKind::DeactivateAccessKey => (ActionKind::DeactivateAccessKey, a.reason),
                RawKind::DeleteLoginProfile => (ActionKind::DeleteLoginProfile, a.reason),
                RawKind::None(reason) => (ActionKind::None, Some(reason)),
            };
            Proposal {
                finding: a.finding,
                kind,
                reason: reason.map(|Capped(s)| s),
                notify: a.notify.map(|Capped(s)| s),
            }
        })
        .collect())
}
