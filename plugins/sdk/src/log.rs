//! Logging to the host.
//!
//! In a component, each call goes to the host's `log` import: the host tags it
//! with the invocation id and forwards it to its own logs (lines over 4 KiB are
//! truncated, lines after the 256th of a call are dropped). In native unit
//! tests the lines are kept in a thread-local buffer that
//! [`crate::testing::run`] returns.

/// Severity of a log line.
pub use crate::bindings::engine::plugin::host::Level;

/// Write a log line at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::engine::plugin::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::capture_log(level, message);
}

/// Write a debug line.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Write an info line.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Write a warning.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Write an error line.
pub fn error(message: &str) {
    log(Level::Error, message);
}
