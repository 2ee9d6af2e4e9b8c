//! Unit-test a plugin natively: `cargo test -p my-plugin`, no wasm, no host.
//!
//! Build findings with [`key`] / [`password`] and a context with [`context`],
//! then call [`run`], which calls your [`Plugin`] directly and returns its
//! answer with the log lines it wrote.
//!
//! ```
//! use engine_plugin_sdk::testing::{self, key, password};
//! # use engine_plugin_sdk::{Action, Context, Finding, Plugin};
//! # struct P;
//! # impl Plugin for P {
//! #     fn decide(_: &Context, f: &[Finding]) -> Result<Vec<Action>, String> {
//! #         Ok(f.iter().enumerate().map(|(i, _)| Action::deactivate_access_key(i)).collect())
//! #     }
//! # }
//! let findings = [key("alice").age(120).build(), key("bob").slot(2).exempt().build()];
//! let out = testing::run::<P>(&testing::context(), &findings);
//! assert_eq!(out.actions.unwrap().len(), 2);
//! ```
//!
//! This harness does not enforce the sandbox's limits or the host's checks;
//! run the built component under `engine check` for that.

use std::cell::RefCell;

use crate::log::Level;
use crate::{Action, Basis, Context, Credential, Finding, Plugin, Rule, Stage};

/// The `now` of [`context`] and the base of the builders' timestamps.
pub const NOW: &str = "2025-01-01T00:00:00Z";

/// A context for the policy `test-policy` (rule cis-1.4, no params), with
/// `dry_run` false as the host always passes it.
pub fn context() -> Context {
    Context {
        invocation_id: "test-invocation".to_string(),
        policy: "test-policy".to_string(),
        rule: Rule::Cis14,
        dry_run: false,
        now: NOW.to_string(),
        params: Vec::new(),
    }
}

/// [`context`] with the given policy parameters.
pub fn context_with_params(params: &[(&str, &str)]) -> Context {
    let mut ctx = context();
    ctx.params = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ctx.params.sort();
    ctx
}

/// A finding about access key slot 1 of `user` (cis-1.4, 100 days old, threshold 90).
pub fn key(user: &str) -> FindingBuilder {
    FindingBuilder::new(user, Credential::AccessKey1)
}

/// A finding about the console password of `user` (cis-1.3, 100 days unused, threshold 90).
pub fn password(user: &str) -> FindingBuilder {
    let mut b = FindingBuilder::new(user, Credential::Password);
    b.f.rule = Rule::Cis13;
    b.f.basis = Basis::PasswordLastUsed;
    b.f.key_id = None;
    b
}

/// Builds a [`Finding`] with sensible defaults; change what the test is about.
#[derive(Debug, Clone)]
pub struct FindingBuilder {
    f: Finding,
}

impl FindingBuilder {
    fn new(user: &str, credential: Credential) -> FindingBuilder {
        FindingBuilder {
            f: Finding {
                user: user.to_string(),
                arn: format!("arn:aws:iam::123456789012:user/{user}"),
                credential,
                key_id: Some(format!("AKIA{:0>16}", user.len())),
                rule: Rule::Cis14,
                timestamp: "2024-09-23T00:00:00Z".to_string(),
                basis: Basis::KeyLastRotated,
                age_days: 100,
                threshold_days: 90,
                reason: String::new(),
                exempt: false,
                protected: false,
                stage: Stage::Due,
                due_at: "2024-12-22T00:00:00Z".to_string(),
                deactivated_at: None,
            },
        }
    }

    /// Not due yet: within the policy's `warn_before_days` of its threshold.
    pub fn upcoming(mut self) -> Self {
        self.f.stage = Stage::Upcoming;
        self
    }

    /// When it crosses (crossed) the threshold (RFC 3339).
    pub fn due_at(mut self, at: &str) -> Self {
        self.f.due_at = at.to_string();
        self
    }

    /// The engine deactivated this key at `at` (RFC 3339) and it is still
    /// inactive (stage `deactivated`).
    pub fn deactivated_at(mut self, at: &str) -> Self {
        self.f.stage = Stage::Deactivated;
        self.f.deactivated_at = Some(at.to_string());
        self
    }

    /// Access key slot 1 or 2 (anything else: slot 2).
    pub fn slot(mut self, slot: u8) -> Self {
        self.f.credential = if slot == 1 {
            Credential::AccessKey1
        } else {
            Credential::AccessKey2
        };
        self
    }

    pub fn age(mut self, days: i64) -> Self {
        self.f.age_days = days;
        self
    }

    pub fn threshold(mut self, days: u32) -> Self {
        self.f.threshold_days = days;
        self
    }

    pub fn rule(mut self, rule: Rule) -> Self {
        self.f.rule = rule;
        self
    }

    pub fn key_id(mut self, id: Option<&str>) -> Self {
        self.f.key_id = id.map(str::to_string);
        self
    }

    /// The user is exempt under the policy.
    pub fn exempt(mut self) -> Self {
        self.f.exempt = true;
        self
    }

    /// The root account or the engine's own key.
    pub fn protected(mut self) -> Self {
        self.f.protected = true;
        self
    }

    pub fn build(mut self) -> Finding {
        if self.f.reason.is_empty() {
            self.f.reason = format!(
                "{:?} is {} days old (threshold {})",
                self.f.basis, self.f.age_days, self.f.threshold_days
            );
        }
        self.f
    }
}

/// A log line written by a plugin under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub level: Level,
    pub message: String,
}

/// What a plugin answered in [`run`].
#[derive(Debug)]
pub struct Outcome {
    pub actions: Result<Vec<Action>, String>,
    pub logs: Vec<Logged>,
}

thread_local! {
    static LOGS: RefCell<Vec<Logged>> = const { RefCell::new(Vec::new()) };
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn capture_log(level: Level, message: &str) {
    LOGS.with(|l| {
        l.borrow_mut().push(Logged {
            level,
            message: message.to_string(),
        })
    });
}

/// Call `P::decide` natively and collect its answer and its log lines.
pub fn run<P: Plugin>(ctx: &Context, findings: &[Finding]) -> Outcome {
    LOGS.with(|l| l.borrow_mut().clear());
    let actions = P::decide(ctx, findings);
    let logs = LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()));
    Outcome { actions, logs }
}

/// The actions of `outcome` as `(finding index, kind name)` pairs, for compact asserts.
pub fn summary(actions: &[Action]) -> Vec<(u32, &'static str)> {
    actions
        .iter()
        .map(|a| (a.finding, a.kind.as_str()))
        .collect()
}
