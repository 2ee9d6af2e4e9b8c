//! [`Name`] and [`UserNames`]: the user names and ARNs of a credential
//! report, shared.
//!
//! A report of 100,000 users has 200,000 names, and every finding carries
//! its user's two. Parsing keeps all of a report's names in one text: a
//! row's user name and ARN are two ranges of it side by side
//! ([`UserNames`]). No allocation per row, one free for the whole report,
//! and a finding's copy of both names is one reference count. The text is
//! filled while the rows are read and fixed once the last one is
//! ([`Text`]). A [`Name`] is one range (a planned action's user, say); a
//! name made from a string alone (a test, a plan read back) has a text of
//! its own.

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
        let text = fixed(&self.text);
        let start = self.start as usize;
        match self.end {
            WHOLE => &text[start..],
            end => &text[start..end as usize],
        }
    }
}

/// The text of a name, once fixed.
fn fixed(text: &OnceLock<String>) -> &str {
    // A report's names are read only once it is parsed (`Text::finish`
    // runs before `CredentialReport::parse` returns them), and their
    // ranges are whole strings appended to the text, which never changes
    // after. A name read otherwise is a bug of this module: it panics
    // rather than read as some other string.
    text.get()
        .expect("a report's names are read only once it is parsed")
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

/// A user's name and ARN, side by side in one text: one reference count
/// for both. A report row holds its user's, and every finding about the
/// user shares them.
#[derive(Clone)]
pub struct UserNames {
    text: Arc<OnceLock<String>>,
    start: u32,
    /// Where the user name ends and the ARN starts.
    split: u32,
    end: u32,
}

impl UserNames {
    /// A user name and ARN with a text of their own.
    ///
    /// # Panics
    /// If the two together reach 4 GiB ([`UserNames::try_new`] does not).
    pub fn new(user: &str, arn: &str) -> UserNames {
        UserNames::try_new(user, arn).expect("a user name and ARN under 4 GiB")
    }

    /// A user name and ARN with a text of their own; `None` if the two
    /// together reach 4 GiB.
    pub fn try_new(user: &str, arn: &str) -> Option<UserNames> {
        let mut text = Text::with_capacity(user.len() + arn.len());
        let names = text.push_pair(user, arn)?;
        text.finish();
        Some(names)
    }

    pub fn user(&self) -> &str {
        &fixed(&self.text)[self.start as usize..self.split as usize]
    }

    pub fn arn(&self) -> &str {
        &fixed(&self.text)[self.split as usize..self.end as usize]
    }

    /// The user name as a [`Name`] of the same text.
    pub fn user_name(&self) -> Name {
        self.name(self.start, self.split)
    }

    /// The ARN as a [`Name`] of the same text.
    pub fn arn_name(&self) -> Name {
        self.name(self.split, self.end)
    }

    fn name(&self, start: u32, end: u32) -> Name {
        Name {
            text: Arc::clone(&self.text),
            start,
            end,
        }
    }
}

impl PartialEq for UserNames {
    fn eq(&self, other: &UserNames) -> bool {
        self.user() == other.user() && self.arn() == other.arn()
    }
}

impl Eq for UserNames {}

impl Hash for UserNames {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.user().hash(state);
        self.arn().hash(state);
    }
}

impl fmt::Debug for UserNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserNames")
            .field("user", &self.user())
            .field("arn", &self.arn())
            .finish()
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

    /// Append a user name and its ARN, as one [`UserNames`]; `None` once
    /// the text reaches 4 GiB.
    pub(crate) fn push_pair(&mut self, user: &str, arn: &str) -> Option<UserNames> {
        let start = self.offset()?;
        self.text.push_str(user);
        let split = self.offset()?;
        self.text.push_str(arn);
        let end = self.offset()?;
        Some(UserNames {
            text: Arc::clone(&self.shared),
            start,
            split,
            end,
        })
    }

    /// The length of the text so far, as the end of a range (never
    /// [`WHOLE`]).
    fn offset(&self) -> Option<u32> {
        u32::try_from(self.text.len()).ok().filter(|&e| e != WHOLE)
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
    use super::{Name, Text, UserNames};

    #[test]
    fn names_of_one_text_are_their_ranges() {
        let mut text = Text::with_capacity(4);
        let pair = text.push_pair("alice", "Arn:é").expect("fits");
        text.finish();
        let names = [pair.user_name(), pair.arn_name()];
        let strs: Vec<&str> = names.iter().map(Name::as_str).collect();
        assert_eq!(strs, ["alice", "Arn:é"]);
        assert_eq!(names[0], Name::from("alice"));
        assert_eq!(format!("{} {:?}", names[1], names[1]), "Arn:é \"Arn:é\"");
        let json = serde_json::to_string(&names[1]).expect("json");
        assert_eq!(json, "\"Arn:é\"");
        let back: Name = serde_json::from_str(&json).expect("json");
        assert_eq!(back, names[1]);
        assert_eq!(Name::from("x".repeat(70)).len(), 70);
    }

    #[test]
    fn a_user_and_arn_share_one_text_and_read_apart() {
        let mut text = Text::with_capacity(8);
        let before = text.push_pair("x", "").expect("fits");
        let pair = text
            .push_pair("bob", "arn:aws:iam::1:user/bob")
            .expect("fits");
        let empty = text.push_pair("", "").expect("fits");
        text.finish();
        assert_eq!((before.user(), before.arn()), ("x", ""));
        assert_eq!(
            (pair.user(), pair.arn()),
            ("bob", "arn:aws:iam::1:user/bob")
        );
        assert_eq!((empty.user(), empty.arn()), ("", ""));
        assert_eq!(pair.user_name(), Name::from("bob"));
        assert_eq!(pair.arn_name().as_str(), "arn:aws:iam::1:user/bob");
        let own = UserNames::new("bob", "arn:aws:iam::1:user/bob");
        assert_eq!(own, pair);
        assert_ne!(own, UserNames::new("bo", "barn:aws:iam::1:user/bob"));
        assert_eq!(
            format!("{own:?}"),
            r#"UserNames { user: "bob", arn: "arn:aws:iam::1:user/bob" }"#
        );
    }
}
