//! Untrusted text on its way to a terminal.
//!
//! User names come from a credential report, reasons and log lines from
//! plugins, error messages from AWS: none of it is ours. Printed raw, a control
//! sequence in any of it could move the cursor and rewrite plan rows above the
//! `yes` prompt, and a bidi override could make a name read as another.
//! [`for_terminal`] is the one boundary every such string crosses before it is
//! printed: control characters (C0, DEL, C1) and bidi controls are written as
//! visible escapes (`\x1b`, `\u{202e}`), everything else is left alone.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` must not reach a terminal as it is.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every control and bidi character escaped; borrowed when there is none.
pub fn for_terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !is_unsafe(c) {
            out.push(c);
        } else if c.is_ascii() {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(
            for_terminal("alice@example.com"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(for_terminal("Zoë 名前"), Cow::Borrowed(_)));
    }

    #[test]
    fn controls_and_bidi_are_escaped() {
        assert_eq!(for_terminal("a\x1b[2Kb"), "a\\x1b[2Kb");
        assert_eq!(for_terminal("x\ny\rz\t"), "x\\x0ay\\x0dz\\x09");
        assert_eq!(for_terminal("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(for_terminal("evil\u{202e}gnp.exe"), "evil\\u{202e}gnp.exe");
        assert_eq!(for_terminal("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
        assert_eq!(for_terminal("\x7f"), "\\x7f");
    }
}
