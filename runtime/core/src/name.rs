//! [`Name`]: a user name or ARN of a credential report, shared.
//!
//! A report of 100,000 users has 200,000 names, and every finding carries
//! its user's two. Parsing keeps all of a report's names in one text and
//! each name is a range of it: no allocation per row, one free for the
//! whole report, and a finding's copy of a name is a reference count. The
//! text is filled while the rows are read and fixed once the last one is
//! ([`Text`]). A name made from a string alone (a test, a plan read back)
//! has a text of its own.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

/// A string shared by reference count: a range of a text that many names
/// may share. It reads (as a `str`), compares, hashes, prints and
/// serializes as the string it is.
#[derive(Clone)]
pub struct Name {
    text: Arc<OnceLock<String>>,
    start: u32,
    /// [`WHOLE`] for the rest of the text.
    end: u32,
}

/// The `end` of a name that runs to the end of its text (a name made from
/// a string alone, whatever its length).
const WHOLE: u32 = u32::MAX;

impl Name {
    pub fn as_str(&self) -> &str {
        // A report's names are read only once it is parsed (`Text::finish`
        // runs before `CredentialReport::parse` returns them), and their
        // ranges are whole strings appended to the text, which never
        // changes after. A name read otherwise is a bug of this module: it
        // panics rather than read as some other string.
        let text = self
            .text
            .get()
            .expect("a report's names are read only once it is parsed");
        let start = self.start as usize;
        match self.end {
            WHOLE => &text[start..],
            end => &text[start..end as usize],
        }
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        Name::from(s.to_string())
    }
}

impl From<String> for Name {
    fn from(s: String) -> Name {
        Name {
            text: Arc::new(OnceLock::from(s)),
            start: 0,
            end: WHOLE,
        }
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        String::deserialize(d).map(Name::from)
    }
}

/// The text the names of one report share, while it is written: names are
/// handed out as their strings are appended, and must not be read before
/// [`Text::finish`] has fixed the text (the rows holding them are returned
/// only after).
pub(crate) struct Text {
    text: String,
    shared: Arc<OnceLock<String>>,
}

impl Text {
    pub(crate) fn with_capacity(bytes: usize) -> Text {
        Text {
            text: String::with_capacity(bytes),
            shared: Arc::new(OnceLock::new()),
        }
    }

    /// Append `s` and name it; `None` once the text reaches 4 GiB.
    pub(crate) fn push(&mut self, s: &str) -> Option<Name> {
        let start = u32::try_from(self.text.len()).ok()?;
        self.text.push_str(s);
        let end = u32::try_from(self.text.len())
            .ok()
            .filter(|&e| e != WHOLE)?;
        Some(Name {
            text: Arc::clone(&self.shared),
            start,
            end,
        })
    }

    /// Fix the text: every name handed out reads its range of it from now on.
    pub(crate) fn finish(mut self) {
        // Names outlive the report in findings and plans: keep no spare room.
        self.text.shrink_to_fit();
        let _ = self.shared.set(self.text);
    }
}

#[cfg(test)]
mod tests {
    use super::{Name, Text};

    #[test]
    fn names_of_one_text_are_their_ranges() {
        let mut text = Text::with_capacity(4);
        let names: Vec<Name> = ["alice", "Arn:é", ""]
            .into_iter()
            .map(|s| text.push(s).expect("fits"))
            .collect();
        text.finish();
        let strs: Vec<&str> = names.iter().map(Name::as_str).collect();
        assert_eq!(strs, ["alice", "Arn:é", ""]);
        assert_eq!(names[0], Name::from("alice"));
        assert_eq!(format!("{} {:?}", names[1], names[1]), "Arn:é \"Arn:é\"");
        let json = serde_json::to_string(&names[1]).expect("json");
        assert_eq!(json, "\"Arn:é\"");
        let back: Name = serde_json::from_str(&json).expect("json");
        assert_eq!(back, names[1]);
        assert_eq!(Name::from("x".repeat(70)).len(), 70);
    }
}
