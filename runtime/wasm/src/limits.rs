//! The caps on what a plugin may return, and what happens past them.
//!
//! | what                         | cap                          | past the cap          |
//! |------------------------------|------------------------------|-----------------------|
//! | run time                     | `timeout_ms` (default 1000)  | `Timeout`             |
//! | linear memory                | `memory_mb` (default 64)     | `MemoryLimit`         |
//! | number of actions            | one per finding              | `InvalidOutput`       |
//! | an action's reason           | [`MAX_REASON_BYTES`]         | truncated, marked `…` |
//! | the error string of `Err`    | [`MAX_ERROR_BYTES`]          | truncated, marked `…` |
//! | one log line                 | [`MAX_LOG_LINE_BYTES`]       | truncated, marked `…` |
//! | log lines per call           | [`MAX_LOG_LINES`]            | dropped, counted in a last line |
//! | captured stderr (panics)     | [`MAX_STDERR_BYTES`]         | the rest is dropped   |
//!
//! Everything a plugin returns is copied out of its memory, so the host never
//! holds more than about `memory_mb` of a plugin's output at once.

/// Longest reason of one action, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// Longest error message of a plugin's `Err`, in bytes.
pub const MAX_ERROR_BYTES: usize = 4096;
/// Longest log line, in bytes.
pub const MAX_LOG_LINE_BYTES: usize = 4096;
/// Most log lines kept per call.
pub const MAX_LOG_LINES: usize = 256;
/// Most bytes of a plugin's stdout/stderr kept (shown with a trap).
pub const MAX_STDERR_BYTES: usize = 4096;
/// Most elements of a plugin's tables.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Cut `s` to at most `max` bytes (on a char boundary), marking the cut with `…`.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_short_strings_and_cuts_on_char_boundaries() {
        assert_eq!(truncate("abc".into(), 10), "abc");
        let t = truncate("é".repeat(100), 11);
        assert!(t.len() <= 11, "{}", t.len());
        assert!(t.ends_with('…'));
    }
}
