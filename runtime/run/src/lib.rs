//! One executor for every way the engine runs.
//!
//! `engine check`, `engine apply` and the daemon's scheduled runs are thin
//! callers of this crate:
//!
//! 1. [`live::snapshot`]: the credential report (a file, or the account's,
//!    with key ids from `ListAccessKeys` and the engine's own identity);
//! 2. [`prepare::prepare`]: evaluate the rules, let each policy's plugin
//!    ([`plugins::Plugins`]) decide, let the host check every request, and
//!    make the [`document::Document`] everyone renders or saves;
//! 3. [`execute::apply`]: journal the run, re-check and carry out exactly
//!    the plan's writes, journal every result.
//!
//! [`saved`] seals and verifies plans saved by `check --out`.

pub mod document;
pub mod execute;
pub mod live;
pub mod pipeline;
pub mod plugins;
pub mod prepare;
pub mod saved;

pub use document::{Document, Source};
pub use execute::{ActionResult, Applied, Execution};
pub use live::{AccountOptions, SourceSpec};
pub use plugins::{PluginObserver, Plugins};
pub use prepare::{Prepared, Request, prepare};
