//! Reading a plugin's answer out of its memory without trusting its size.
//!
//! wasmtime's `bindgen!` types lift the whole answer at once: every string is
//! copied into a host `String` before the host can look at it. A list of
//! 1,000 actions whose reasons all point at the same 60 MiB region of the
//! plugin's memory would be copied 1,000 times. Here the answer is lifted as
//! [`WasmList`]/[`WasmStr`] (bounds-checked handles into the plugin's
//! memory, nothing copied): the number of actions is checked before any is
//! read, each string is looked at in place, only its first bytes up to the
//! cap are copied, and all the strings of one answer together may be at most
//! a budget (`memory_mb`) long.

use engine_core::plan::{ActionKind, Proposal};
use wasmtime::Store;
use wasmtime::component::{ComponentType, Lift, WasmList, WasmStr};

use crate::limits;
use crate::sandbox::State;

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
    None(WasmStr),
}

/// `engine:plugin/types.action`, strings left in the plugin's memory.
#[derive(ComponentType, Lift)]
#[component(record)]
pub(crate) struct RawAction {
    #[component(name = "finding")]
    finding: u32,
    #[component(name = "kind")]
    kind: RawKind,
    #[component(name = "reason")]
    reason: Option<WasmStr>,
}

/// The result of `decide`, lifted lazily.
pub(crate) type RawAnswer = Result<WasmList<RawAction>, WasmStr>;

/// Why an answer was refused; becomes `InvalidOutput`.
pub(crate) struct Invalid(pub(crate) String);

/// Copies at most a few KiB of each string; refuses an answer whose strings
/// add up to more than `budget` bytes.
pub(crate) struct Reader {
    budget: usize,
    seen: usize,
}

impl Reader {
    pub(crate) fn new(budget: usize) -> Reader {
        Reader { budget, seen: 0 }
    }

    /// The first `max` bytes of `s` (cut on a char boundary, marked `…`).
    pub(crate) fn string(
        &mut self,
        store: &Store<State>,
        s: &WasmStr,
        max: usize,
        what: &str,
    ) -> Result<String, Invalid> {
        // Borrowed straight from the plugin's memory for UTF-8 (no copy).
        let text = s
            .to_str(store)
            .map_err(|e| Invalid(format!("{what} is not a valid string: {e}")))?;
        self.seen = self.seen.saturating_add(text.len());
        if self.seen > self.budget {
            return Err(Invalid(format!(
                "its strings add up to more than {} bytes (memory_mb); an answer may not repeat a large string",
                self.budget
            )));
        }
        Ok(limits::truncate_str(&text, max))
    }
}

/// Read the actions of an `Ok` answer: at most `max_actions` of them.
pub(crate) fn actions(
    store: &mut Store<State>,
    list: &WasmList<RawAction>,
    max_actions: usize,
    budget: usize,
) -> Result<Vec<Proposal>, Invalid> {
    if list.len() > max_actions {
        return Err(Invalid(format!(
            "{} actions for {} finding(s); at most one action per finding is allowed",
            list.len(),
            max_actions
        )));
    }
    // First the fixed-size parts (a few words each), then the strings.
    let mut raw = Vec::with_capacity(list.len());
    for (i, item) in list
        .iter(&mut *store)
        .map_err(|e| Invalid(format!("cannot read its actions: {e}")))?
        .enumerate()
    {
        raw.push(item.map_err(|e| Invalid(format!("action {i} is malformed: {e}")))?);
    }
    let mut reader = Reader::new(budget);
    let mut proposals = Vec::with_capacity(raw.len());
    for (i, a) in raw.iter().enumerate() {
        let reason_of = |reader: &mut Reader, s: &WasmStr| {
            reader.string(
                store,
                s,
                limits::MAX_REASON_BYTES,
                &format!("the reason of action {i}"),
            )
        };
        let (kind, reason) = match &a.kind {
            RawKind::DeleteAccessKey => (ActionKind::DeleteAccessKey, a.reason.as_ref()),
            RawKind::DeactivateAccessKey => (ActionKind::DeactivateAccessKey, a.reason.as_ref()),
            RawKind::DeleteLoginProfile => (ActionKind::DeleteLoginProfile, a.reason.as_ref()),
            RawKind::None(reason) => (ActionKind::None, Some(reason)),
        };
        let reason = match reason {
            Some(s) => Some(reason_of(&mut reader, s)?),
            None => None,
        };
        proposals.push(Proposal {
            finding: a.finding,
            kind,
            reason,
        });
    }
    Ok(proposals)
}
