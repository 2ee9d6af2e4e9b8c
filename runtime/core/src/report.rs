//! The IAM credential report: parsing it, and writing it back.
//!
//! The report is CSV whose columns are found by name, so AWS can add columns
//! without breaking us. A report that is structurally broken is rejected whole
//! with the line and field at fault: a half-read report would make a
//! half-right plan, and the plan deletes credentials.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::name::{Text, UserNames};

/// The row of the account's root user.
pub const ROOT_USER: &str = "<root_account>";

/// A timestamp field of the report, with the conventions AWS uses for "no value".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    At(DateTime<Utc>),
    /// `N/A`: the credential does not exist (no password, no key) or was never used.
    NotApplicable,
    /// `no_information`: never used, or last used before AWS started tracking.
    NoInformation,
    /// `not_supported`: the field does not apply (the root row).
    NotSupported,
}

impl Stamp {
    pub fn time(self) -> Option<DateTime<Utc>> {
        match self {
            Stamp::At(t) => Some(t),
            _ => None,
        }
    }

    fn parse(s: &[u8]) -> Option<Stamp> {
        match s {
            b"N/A" => Some(Stamp::NotApplicable),
            b"no_information" => Some(Stamp::NoInformation),
            b"not_supported" => Some(Stamp::NotSupported),
            _ => fast_utc(s)
                .or_else(|| std::str::from_utf8(s).ok().and_then(parse_time))
                .map(Stamp::At),
        }
    }

    fn render(self) -> String {
        match self {
            Stamp::At(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, false),
            Stamp::NotApplicable => "N/A".into(),
            Stamp::NoInformation => "no_information".into(),
            Stamp::NotSupported => "not_supported".into(),
        }
    }
}

/// Parse an ISO-8601 / RFC 3339 timestamp with an offset, into UTC.
///
/// The layout AWS writes (`2026-11-25T08:30:00+00:00`) takes a fast path
/// that still validates the date through chrono; anything else, or anything
/// the fast path does not accept, goes to chrono's RFC 3339 parser.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    fast_utc(s.as_bytes()).or_else(|| {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    })
}

/// The layout AWS writes, `YYYY-MM-DDTHH:MM:SS+00:00`, by day of the year:
/// the day is checked against its month (leap years included), chrono checks
/// the rest, so it accepts exactly the instants chrono's RFC 3339 parser
/// would (a property test checks both agree). It runs up to eight times per
/// row of the report.
pub fn fast_utc(b: &[u8]) -> Option<DateTime<Utc>> {
    let b: &[u8; 25] = b.try_into().ok()?;
    if b[19..] != *b"+00:00"
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let digit = |i: usize| -> Option<u32> {
        let d = b[i].wrapping_sub(b'0');
        (d < 10).then_some(u32::from(d))
    };
    let two = |i: usize| -> Option<u32> { Some(digit(i)? * 10 + digit(i + 1)?) };
    let year = two(0)? * 100 + two(2)?;
    let (month, day) = (two(5)?, two(8)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    // Days before each month, in a common year.
    const BEFORE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > in_month {
        return None;
    }
    let ordinal = BEFORE[month as usize - 1] + day + u32::from(leap && month > 2);
    // chrono checks the rest (the year's range, the time of day).
    chrono::NaiveDate::from_yo_opt(year as i32, ordinal)?
        .and_hms_opt(two(11)?, two(14)?, two(17)?)
        .map(|t| t.and_utc())
}

/// A `true`/`false` field that may also be `not_supported` (root's `password_enabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    True,
    False,
    NotSupported,
}

impl Flag {
    fn parse(s: &[u8]) -> Option<Flag> {
        match s {
            b"true" | b"TRUE" | b"True" => Some(Flag::True),
            b"false" | b"FALSE" | b"False" => Some(Flag::False),
            b"not_supported" => Some(Flag::NotSupported),
            _ => None,
        }
    }

    fn render(self) -> &'static str {
        match self {
            Flag::True => "true",
            Flag::False => "false",
            Flag::NotSupported => "not_supported",
        }
    }
}

/// One access-key slot of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessKey {
    pub active: bool,
    pub last_rotated: Stamp,
    pub last_used_date: Stamp,
}

/// One user's credentials, as the report states them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRow {
    /// The line of the report this row starts on (1-based, header is line 1).
    pub line: u64,
    /// The user's name and ARN ([`CredentialRow::user`], [`CredentialRow::arn`]).
    pub names: UserNames,
    pub user_creation_time: Stamp,
    pub password_enabled: Flag,
    pub password_last_used: Stamp,
    pub password_last_changed: Stamp,
    pub access_keys: [AccessKey; 2],
}

impl CredentialRow {
    pub fn user(&self) -> &str {
        self.names.user()
    }

    pub fn arn(&self) -> &str {
        self.names.arn()
    }

    pub fn is_root(&self) -> bool {
        self.user() == ROOT_USER
    }
}

/// A parsed credential report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CredentialReport {
    pub rows: Vec<CredentialRow>,
}

/// Why a report was rejected. Nothing is evaluated from a rejected report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("the credential report is empty")]
    Empty,
    #[error(
        "not a credential report: the header has no `{0}` column (is this the CSV from `aws iam get-credential-report`?)"
    )]
    MissingColumn(&'static str),
    #[error("line {line}: {message}")]
    Structure { line: u64, message: String },
    #[error("line {line}, field `{field}`: {message}")]
    Field {
        line: u64,
        field: &'static str,
        message: String,
    },
}

impl ReportError {
    /// The line at fault, if there is one.
    pub fn line(&self) -> Option<u64> {
        match self {
            ReportError::Structure { line, .. } | ReportError::Field { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// Columns the parser needs, in the order AWS writes them.
const COLUMNS: [&str; 12] = [
    "user",
    "arn",
    "user_creation_time",
    "password_enabled",
    "password_last_used",
    "password_last_changed",
    "access_key_1_active",
    "access_key_1_last_rotated",
    "access_key_1_last_used_date",
    "access_key_2_active",
    "access_key_2_last_rotated",
    "access_key_2_last_used_date",
];

impl CredentialReport {
    /// Parse a report from its bytes (as returned by `GetCredentialReport`, or a file).
    pub fn parse(bytes: &[u8]) -> Result<CredentialReport, ReportError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(ReportError::Empty);
        }
        let mut records = Records::new(bytes);
        let header: Vec<Vec<u8>> = match records.next() {
            Some(_) => records.fields().map(<[u8]>::to_vec).collect(),
            None => Vec::new(),
        };
        let mut idx = [0usize; COLUMNS.len()];
        for (slot, name) in idx.iter_mut().zip(COLUMNS) {
            *slot = header
                .iter()
                .position(|h| h == name.as_bytes())
                .ok_or(ReportError::MissingColumn(name))?;
        }
        // A row of a real report is well over 128 bytes: reserve once rather
        // than copy the rows on every growth of a 100,000-user report.
        let mut rows = crate::memory::with_capacity(bytes.len() / 128);
        // The user names and ARNs, kept in one text (a name and an ARN are
        // well under half a row).
        let mut names = Text::with_capacity(bytes.len() / 2);
        while let Some(line) = records.next() {
            if records.len() != header.len() {
                return Err(ReportError::Structure {
                    line,
                    message: format!(
                        "expected {} fields as in the header, found {}",
                        header.len(),
                        records.len()
                    ),
                });
            }
            let fields = idx.map(|i| records.field(i));
            rows.push(parse_row(&fields, line, &mut names)?);
        }
        names.finish();
        Ok(CredentialReport { rows })
    }

    /// Write the report back as CSV, with the columns this parser reads.
    pub fn to_csv(&self) -> Vec<u8> {
        let mut w = csv::Writer::from_writer(Vec::new());
        // Writing into a Vec cannot fail.
        let _ = w.write_record(COLUMNS);
        for r in &self.rows {
            let k = &r.access_keys;
            let _ = w.write_record([
                r.user(),
                r.arn(),
                &r.user_creation_time.render(),
                r.password_enabled.render(),
                &r.password_last_used.render(),
                &r.password_last_changed.render(),
                bool_str(k[0].active),
                &k[0].last_rotated.render(),
                &k[0].last_used_date.render(),
                bool_str(k[1].active),
                &k[1].last_rotated.render(),
                &k[1].last_used_date.render(),
            ]);
        }
        w.into_inner().unwrap_or_default()
    }
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// The records of a CSV text held in memory, read by csv-core straight
/// from the slice (nothing copied through a reader's buffer), each with the
/// line it starts on. The dialect is csv's default: `,`, `"` quoting with
/// doubled quotes, and CR, LF or CRLF ending a record; blank lines are
/// skipped, and csv-core drops a UTF-8 byte-order mark before the first
/// record. csv-core never fails: any text is read as some records, and the
/// caller checks their shape.
struct Records<'a> {
    input: &'a [u8],
    /// How far `input` has been read.
    at: usize,
    reader: csv_core::Reader,
    /// The current record's fields, unquoted, one after another...
    text: Vec<u8>,
    /// ...and where each ends in `text`.
    ends: Vec<usize>,
    len: usize,
}

impl<'a> Records<'a> {
    fn new(input: &'a [u8]) -> Records<'a> {
        Records {
            input,
            at: 0,
            reader: csv_core::Reader::new(),
            text: vec![0; 1024],
            ends: vec![0; 32],
            len: 0,
        }
    }

    /// Read the next record; its line (1-based), or `None` at the end.
    fn next(&mut self) -> Option<u64> {
        // Line ends between records are skipped here rather than by
        // csv-core, so the line counted is the one the record starts on
        // (csv-core counts every `\n` it reads, quoted ones included).
        let mut line = self.reader.line();
        while let Some(&b) = self.input.get(self.at) {
            match b {
                b'\n' => line += 1,
                b'\r' => {}
                _ => break,
            }
            self.at += 1;
        }
        self.reader.set_line(line);
        let (mut out, mut ends) = (0, 0);
        loop {
            let (result, read, written, ended) = self.reader.read_record(
                &self.input[self.at..],
                &mut self.text[out..],
                &mut self.ends[ends..],
            );
            self.at += read;
            out += written;
            ends += ended;
            match result {
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::OutputFull => {
                    self.text.resize(self.text.len() * 2, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    self.ends.resize(self.ends.len() * 2, 0);
                }
                csv_core::ReadRecordResult::Record => {
                    self.len = ends;
                    return Some(line);
                }
                csv_core::ReadRecordResult::End => {
                    self.len = 0;
                    return None;
                }
            }
        }
    }

    /// How many fields the current record has.
    fn len(&self) -> usize {
        self.len
    }

    /// Field `i` of the current record (empty past its last field).
    fn field(&self, i: usize) -> &[u8] {
        if i >= self.len {
            return b"";
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    fn fields(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len).map(|i| self.field(i))
    }
}

/// One row from its fields, in the order of [`COLUMNS`].
fn parse_row(
    fields: &[&[u8]; 12],
    line: u64,
    names: &mut Text,
) -> Result<CredentialRow, ReportError> {
    let field = |i: usize| -> &[u8] { fields[i] };
    let text = |i: usize| -> Result<&str, ReportError> {
        std::str::from_utf8(field(i)).map_err(|_| ReportError::Structure {
            line,
            message: format!("field `{}` is not valid UTF-8", COLUMNS[i]),
        })
    };
    let bad = |i: usize, value: &[u8], expected: &str| ReportError::Field {
        line,
        field: COLUMNS[i],
        message: format!(
            "invalid value {:?}, expected {expected}",
            String::from_utf8_lossy(value)
        ),
    };
    let stamp = |i: usize| -> Result<Stamp, ReportError> {
        let v = field(i);
        Stamp::parse(v).ok_or_else(|| {
            bad(
                i,
                v,
                "an ISO-8601 timestamp with offset, N/A, no_information or not_supported",
            )
        })
    };
    let flag = |i: usize| -> Result<Flag, ReportError> {
        let v = field(i);
        Flag::parse(v).ok_or_else(|| bad(i, v, "true or false"))
    };
    let user = text(0)?;
    if user.is_empty() {
        return Err(ReportError::Field {
            line,
            field: "user",
            message: "empty user name".into(),
        });
    }
    let mut keys = [AccessKey {
        active: false,
        last_rotated: Stamp::NotApplicable,
        last_used_date: Stamp::NotApplicable,
    }; 2];
    for (slot, key) in keys.iter_mut().enumerate() {
        let base = 6 + slot * 3;
        key.active = match flag(base)? {
            Flag::True => true,
            Flag::False => false,
            Flag::NotSupported => return Err(bad(base, b"not_supported", "true or false")),
        };
        key.last_rotated = stamp(base + 1)?;
        key.last_used_date = stamp(base + 2)?;
        if key.active && key.last_rotated.time().is_none() {
            return Err(ReportError::Field {
                line,
                field: COLUMNS[base + 1],
                message: "an active access key must have a last_rotated timestamp".into(),
            });
        }
    }
    let too_large = || ReportError::Structure {
        line,
        message: "the report's names reach 4 GiB".into(),
    };
    Ok(CredentialRow {
        line,
        names: names.push_pair(user, text(1)?).ok_or_else(too_large)?,
        user_creation_time: stamp(2)?,
        password_enabled: flag(3)?,
        password_last_used: stamp(4)?,
        password_last_changed: stamp(5)?,
        access_keys: keys,
    })
}

#[cfg(test)]
mod tests {
    use super::Records;
    use proptest::prelude::*;

    /// Every record `Records` reads, with its line.
    fn ours(input: &[u8]) -> Vec<(u64, Vec<Vec<u8>>)> {
        let mut records = Records::new(input);
        let mut out = Vec::new();
        while let Some(line) = records.next() {
            out.push((line, records.fields().map(<[u8]>::to_vec).collect()));
        }
        out
    }

    /// The same from the csv crate's reader, the line of each record
    /// counted from the byte it starts at (past the line ends before it).
    fn csv_crate(input: &[u8]) -> Vec<(u64, Vec<Vec<u8>>)> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(input);
        let mut record = csv::ByteRecord::new();
        let mut out = Vec::new();
        while reader
            .read_byte_record(&mut record)
            .expect("csv never fails on bytes")
        {
            let mut at = record.position().map_or(0, |p| p.byte() as usize);
            while matches!(input.get(at), Some(b'\r' | b'\n')) {
                at += 1;
            }
            let line = 1 + input[..at].iter().filter(|&&b| b == b'\n').count() as u64;
            out.push((line, record.iter().map(<[u8]>::to_vec).collect()));
        }
        out
    }

    proptest! {
        #[test]
        fn records_are_the_csv_crates(input in "[a\",\r\n]{0,40}", long in "[a-z,]{0,3000}") {
            prop_assert_eq!(ours(input.as_bytes()), csv_crate(input.as_bytes()));
            // Records longer than the buffers' first sizes.
            let text = format!("{input}\n{long}\n\"{long}\"\r\n");
            prop_assert_eq!(ours(text.as_bytes()), csv_crate(text.as_bytes()));
        }
    }
}
