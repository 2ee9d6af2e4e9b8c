//! The pure, synchronous core of engine.
//!
//! Everything here is a plain type or a plain function, so each stage of
//! `policies -> report -> findings -> plan` can be tested alone: no tokio, no
//! AWS, no wasmtime, no I/O beyond reading the files it is pointed at.

pub mod accounts;
pub mod asff;
pub mod config_rule;
pub mod event;
pub mod finding;
pub mod fresh;
mod memory;
pub mod name;
pub mod plan;
pub mod policy;
pub mod recheck;
pub mod report;
pub mod rules;
pub mod snapshot;
pub mod text;

pub use finding::{Basis, Control, Credential, Finding, Protection, Stage};
pub use name::{Name, UserNames};
pub use plan::{
    ActionKind, DenyReason, FailureKind, Grants, Plan, PlannedAction, PolicyFailure, PolicyPlan,
    Proposal, Refusal, Summary,
};
pub use policy::{Mode, Policy, PolicySet, Rule};
pub use report::{CredentialReport, ReportError};
