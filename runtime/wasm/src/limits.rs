//! Every bound the sandbox puts on a plugin, and what happens past it.
//!
//! Before it runs (checked by [`Host::load`](crate::Host::load); past any of
//! them the plugin fails to load with a typed error and nothing of it runs):
//!
//! | what                              | cap                              | past the cap                  |
//! |-----------------------------------|----------------------------------|-------------------------------|
//! | the plugin file                   | a regular file (not a FIFO, device, directory) | `NotAFile`      |
//! | its size                          | [`MAX_PLUGIN_FILE_BYTES`]        | `TooLarge` (`FileBytes`)      |
//! | one function body                 | [`MAX_FUNCTION_BODY_BYTES`]      | `TooLarge` (`FunctionBodyBytes`) |
//! | locals of one function            | [`MAX_FUNCTION_LOCALS`]          | `TooLarge` (`FunctionLocals`) |
//! | functions, all modules together   | [`MAX_FUNCTIONS`]                | `TooLarge` (`Functions`)      |
//! | core modules / nested components  | [`MAX_MODULES`] / [`MAX_NESTED_COMPONENTS`] | `TooLarge`         |
//! | core instances                    | [`MAX_INSTANCES`]                | `TooLarge` (`Instances`)      |
//! | memories / tables (whole store)   | [`MAX_MEMORIES`] / [`MAX_TABLES`] | `TooLarge`                   |
//! | compile time                      | [`COMPILE_TIMEOUT`]              | `CompileTimeout`              |
//!
//! While it runs (checked by [`Plugin::decide`](crate::Plugin::decide)):
//!
//! | what                         | cap                          | past the cap          |
//! |------------------------------|------------------------------|-----------------------|
//! | run time                     | `timeout_ms` (default 1000)  | `Timeout`             |
//! | all memories and tables of the call, together | `memory_mb` (default 64) | `MemoryLimit` |
//! | elements of one table        | [`MAX_TABLE_ELEMENTS`]       | `MemoryLimit`         |
//! | number of actions            | one per finding              | `InvalidOutput`       |
//! | bytes of all strings of the answer | `memory_mb`            | `InvalidOutput`       |
//! | an action's reason           | [`MAX_REASON_BYTES`]         | truncated, marked `…` |
//! | the error string of `Err`    | [`MAX_ERROR_BYTES`]          | truncated, marked `…` |
//! | one log line                 | [`MAX_LOG_LINE_BYTES`]       | truncated, marked `…` |
//! | log lines per call           | [`MAX_LOG_LINES`]            | dropped, counted in a last line |
//! | captured stderr (panics)     | [`MAX_STDERR_BYTES`]         | the rest is dropped   |
//!
//! Wasm features no plugin needs are off, so such a plugin fails to load:
//! multi-memory, memory64, threads and shared memory, relaxed SIMD, GC and
//! typed function references, exceptions, stack switching, custom page sizes,
//! wide arithmetic and the async parts of the component model.
//!
//! # What the host copies out of a plugin
//!
//! The answer is lifted when the call returns, before wasmtime calls the
//! plugin's `post-return` (which frees it): wasmtime's hostcall fuel, set to
//! `memory_mb` bytes per call, counts the action list and every string at
//! its full length before anything is copied, so an answer that adds up to
//! more (a list whose strings all point at the same large region, say) is
//! refused, not copied over and over. Each string is looked at in place and
//! only its first [`MAX_REASON_BYTES`] / [`MAX_ERROR_BYTES`] are copied
//! (`output::Capped`). A log line is likewise looked at in place during the
//! `log` call and only its first [`MAX_LOG_LINE_BYTES`] are copied; lines
//! past [`MAX_LOG_LINES`] are not looked at at all. So besides the plugin's
//! own memories and tables (at most `memory_mb`), the host holds at most a
//! few KiB per action and per log line of a call.
//!
//! # Why these numbers
//!
//! The caps before running are far above what real plugins need; measured on
//! the shipped plugins (wasm32-wasip2, opt-level s, LTO, stripped), with
//! `shipped_plugins_are_well_within_the_load_limits` in `tests/sandbox.rs`,
//! which checks the margins below:
//!
//! | plugin                        | bytes  | core modules | nested components | core instances | functions | largest body | most locals | memories | tables |
//! |-------------------------------|--------|--------------|-------------------|----------------|-----------|--------------|-------------|----------|--------|
//! | delete-expired-keys           | 56,566 | 3            | 1                 | 3              | 217       | 5,795 B      | 12          | 1        | 2      |
//! | deactivate-unused-credentials | 56,508 | 3            | 1                 | 3              | 218       | 5,795 B      | 12          | 1        | 2      |
//!
//! The caps leave a factor of at least 4 (memories, tables, instances) and
//! of 20 or more (body size 22x, function count 92x, file size 148x, locals
//! 833x) over those, room for plugins that pull in larger crates. The
//! function-body cap is what keeps compiling cheap: cranelift's time and
//! memory grow with the size of one body (the 1.8 MB one-function bomb took
//! 57 s and 3.2 GB), so the body cap bounds each function's cost, the file
//! cap bounds how many such functions there can be, and [`COMPILE_TIMEOUT`]
//! bounds how long a load waits. Measured: one function just under the body
//! cap (14,463 straight-line `memory.fill`s, the worst case we know) compiles
//! in 3.9 s and about 65 MB on a debug build of the host
//! (`a_function_just_under_the_body_cap_compiles_within_the_deadline`).

use std::time::Duration;

use engine_core::policy::LoadBounds;

/// Largest plugin file (or builtin) accepted by default, in bytes
/// (`max_file_mb` of the plugin's table raises it).
pub const MAX_PLUGIN_FILE_BYTES: usize = (LoadBounds::DEFAULT.max_file_mb as usize) << 20;
/// Largest function body by default, in bytes (instructions and locals;
/// `max_function_kb` raises it).
pub const MAX_FUNCTION_BODY_BYTES: usize = (LoadBounds::DEFAULT.max_function_kb as usize) << 10;
/// Most locals one function may declare.
pub const MAX_FUNCTION_LOCALS: usize = 10_000;
/// Most function bodies by default, all core modules together
/// (`max_functions` raises it).
pub const MAX_FUNCTIONS: usize = LoadBounds::DEFAULT.max_functions as usize;
/// Most core modules in a component (nested ones included). A Python
/// plugin built by componentize-py has 38.
pub const MAX_MODULES: usize = 64;
/// Most components nested in a plugin. A JavaScript plugin built on
/// QuickJS has 24.
pub const MAX_NESTED_COMPONENTS: usize = 32;
/// Most core instances a plugin creates. A Python plugin has 38.
pub const MAX_INSTANCES: usize = 64;
/// Most linear memories a plugin creates, all instances together.
pub const MAX_MEMORIES: usize = 4;
/// Most tables a plugin creates, all instances together.
pub const MAX_TABLES: usize = 16;
/// Longest a compile may take. A compile past it is abandoned: the load
/// fails at once with `CompileTimeout`, while the compiler thread (which
/// cannot be interrupted) runs on in the background until it ends and its
/// result is dropped. The caps above bound how long and how much memory that
/// can be, even on the slowest (debug) builds.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest reason of one action, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// Longest notice (`notify`) of one action, in bytes.
pub const MAX_NOTICE_BYTES: usize = 2048;
/// Longest error message of a plugin's `Err`, in bytes.
pub const MAX_ERROR_BYTES: usize = 4096;
/// Longest log line, in bytes.
pub const MAX_LOG_LINE_BYTES: usize = 4096;
/// Most log lines kept per call.
pub const MAX_LOG_LINES: usize = 256;
/// Most bytes of a plugin's stdout/stderr kept (shown with a trap).
pub const MAX_STDERR_BYTES: usize = 4096;
/// Most elements of one of a plugin's tables.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;
/// What one table element costs the host, counted against `memory_mb`
/// (wasmtime stores a pointer per element).
pub const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

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

/// [`truncate`] of a borrowed string: copies at most `max` bytes.
pub fn truncate_str(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + '…'.len_utf8());
    out.push_str(&s[..end]);
    out.push('…');
    out
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
        let long = "é".repeat(100);
        assert_eq!(truncate_str(&long, 11), t);
        assert_eq!(truncate_str("abc", 10), "abc");
    }
}
