//! Credential report parsing: every value convention, every malformed shape,
//! and a round-trip property.

use chrono::{DateTime, Utc};
use engine_core::report::{CredentialReport, Flag, ReportError, Stamp};
use proptest::prelude::*;

const HEADER: &str = "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,cert_1_last_rotated,cert_2_active,cert_2_last_rotated";

const ALICE: &str = "alice,arn:aws:iam::1:user/alice,2024-02-11T13:01:02+00:00,true,2026-11-25T08:30:00+00:00,2026-09-01T10:00:00+00:00,N/A,true,true,2026-10-01T12:00:00+00:00,2026-11-27T22:10:00+00:00,eu-west-1,ec2,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A";

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn parse(s: &str) -> Result<CredentialReport, ReportError> {
    CredentialReport::parse(s.as_bytes())
}

#[test]
fn parses_the_shipped_example() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/credential-report.csv"
    ))
    .unwrap();
    let r = CredentialReport::parse(&bytes).unwrap();
    assert_eq!(r.rows.len(), 13);
    assert!(r.rows[0].is_root());
    assert_eq!(r.rows[5].user(), "ci,deploy=bot");
}

#[test]
fn values_true_false_na_timestamps() {
    let r = parse(&format!("{HEADER}\n{ALICE}\n")).unwrap();
    let a = &r.rows[0];
    assert_eq!(a.line, 2);
    assert_eq!(a.user(), "alice");
    assert_eq!(a.password_enabled, Flag::True);
    assert_eq!(a.password_last_used, Stamp::At(t("2026-11-25T08:30:00Z")));
    assert!(a.access_keys[0].active);
    assert!(!a.access_keys[1].active);
    assert_eq!(a.access_keys[1].last_rotated, Stamp::NotApplicable);
    assert_eq!(a.access_keys[1].last_used_date, Stamp::NotApplicable);
}

#[test]
fn no_information_and_not_supported_and_root() {
    let root = "<root_account>,arn:aws:iam::1:root,2019-01-10T09:12:44+00:00,not_supported,no_information,not_supported,not_supported,true,false,N/A,N/A,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A";
    let r = parse(&format!("{HEADER}\n{root}\n")).unwrap();
    let row = &r.rows[0];
    assert!(row.is_root());
    assert_eq!(row.password_enabled, Flag::NotSupported);
    assert_eq!(row.password_last_used, Stamp::NoInformation);
    assert_eq!(row.password_last_changed, Stamp::NotSupported);
}

#[test]
fn timestamps_with_offsets_are_normalised_to_utc() {
    let row = ALICE
        .replace("2026-11-25T08:30:00+00:00", "2026-11-25T10:30:00+02:00")
        .replace("2024-02-11T13:01:02+00:00", "2024-02-11T13:01:02Z")
        .replace("2026-09-01T10:00:00+00:00", "2026-09-01T05:00:00.5-05:00");
    let r = parse(&format!("{HEADER}\n{row}\n")).unwrap();
    let a = &r.rows[0];
    assert_eq!(a.password_last_used, Stamp::At(t("2026-11-25T08:30:00Z")));
    assert_eq!(a.user_creation_time, Stamp::At(t("2024-02-11T13:01:02Z")));
    assert_eq!(
        a.password_last_changed,
        Stamp::At(t("2026-09-01T10:00:00.5Z"))
    );
}

#[test]
fn quoted_names_with_every_allowed_character() {
    let name = "a+b=c,d.e@f_g-h";
    let row = ALICE.replacen(
        "alice,arn:aws:iam::1:user/alice",
        &format!("\"{name}\",\"arn:aws:iam::1:user/{name}\""),
        1,
    );
    let r = parse(&format!("{HEADER}\n{row}\n")).unwrap();
    assert_eq!(r.rows[0].user(), name);
    assert_eq!(
        r.rows[0].arn(),
        format!("arn:aws:iam::1:user/{name}").as_str()
    );
}

#[test]
fn crlf_and_bom() {
    let text = format!(
        "\u{feff}{HEADER}\r\n{ALICE}\r\n{}\r\n",
        ALICE.replace("alice", "bob")
    );
    let r = parse(&text).unwrap();
    assert_eq!(r.rows.len(), 2);
    assert_eq!(r.rows[0].user(), "alice");
    assert_eq!(r.rows[1].user(), "bob");
    assert_eq!(r.rows[0].line, 2);
    assert_eq!(r.rows[1].line, 3);
    let short = ALICE.rsplit_once(',').unwrap().0;
    let err = parse(&format!("{HEADER}\r\n{ALICE}\r\n{short}\r\n")).unwrap_err();
    assert_eq!(err.line(), Some(3), "{err}");
}

#[test]
fn columns_found_by_name_in_any_order_extra_ignored() {
    // Reverse the column order and add one AWS might add one day.
    let cols: Vec<&str> = HEADER.split(',').rev().collect();
    let vals: Vec<&str> = ALICE.split(',').rev().collect();
    let text = format!(
        "{},future_column\n{},whatever\n",
        cols.join(","),
        vals.join(",")
    );
    let r = parse(&text).unwrap();
    let direct = parse(&format!("{HEADER}\n{ALICE}\n")).unwrap();
    assert_eq!(r, direct);
}

#[test]
fn missing_required_column_is_named() {
    let header = HEADER.replace("access_key_2_last_rotated", "something_else");
    let err = parse(&format!("{header}\n{ALICE}\n")).unwrap_err();
    assert_eq!(err, ReportError::MissingColumn("access_key_2_last_rotated"));
    assert!(err.to_string().contains("access_key_2_last_rotated"));
}

#[test]
fn wrong_field_count_names_the_line() {
    let short = ALICE.rsplit_once(',').unwrap().0;
    let err = parse(&format!("{HEADER}\n{ALICE}\n{short}\n")).unwrap_err();
    assert_eq!(err.line(), Some(3));
    assert!(err.to_string().contains("expected 22 fields"), "{err}");
}

#[test]
fn unparseable_timestamp_names_line_and_field() {
    let row = ALICE.replace("2026-11-25T08:30:00+00:00", "2026-13-25T08:30:00+00:00");
    let err = parse(&format!("{HEADER}\n{ALICE}\n{row}\n")).unwrap_err();
    match &err {
        ReportError::Field { line, field, .. } => {
            assert_eq!(*line, 3);
            assert_eq!(*field, "password_last_used");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("line 3, field `password_last_used`"),
        "{err}"
    );
}

#[test]
fn timestamp_without_offset_is_rejected() {
    let row = ALICE.replace("2026-11-25T08:30:00+00:00", "2026-11-25T08:30:00");
    let err = parse(&format!("{HEADER}\n{row}\n")).unwrap_err();
    assert!(
        matches!(
            err,
            ReportError::Field {
                field: "password_last_used",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn bad_boolean_is_rejected() {
    let row = ALICE.replacen(",true,true,", ",true,yes,", 1);
    let err = parse(&format!("{HEADER}\n{row}\n")).unwrap_err();
    assert!(
        matches!(
            err,
            ReportError::Field {
                line: 2,
                field: "access_key_1_active",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn active_key_without_rotation_date_is_rejected() {
    let row = ALICE.replace("true,2026-10-01T12:00:00+00:00", "true,N/A");
    let err = parse(&format!("{HEADER}\n{row}\n")).unwrap_err();
    assert!(
        matches!(
            err,
            ReportError::Field {
                field: "access_key_1_last_rotated",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn not_csv_at_all() {
    assert_eq!(parse(""), Err(ReportError::Empty));
    assert_eq!(parse("\n \r\n"), Err(ReportError::Empty));
    assert_eq!(
        parse("{\"Users\": []}\n"),
        Err(ReportError::MissingColumn("user"))
    );
    let err = CredentialReport::parse(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR").unwrap_err();
    assert!(
        matches!(
            err,
            ReportError::MissingColumn(_) | ReportError::Structure { .. }
        ),
        "{err:?}"
    );
    let err = CredentialReport::parse(
        format!("{HEADER}\n")
            .replace("user,", "us\u{fffd}er,")
            .as_bytes(),
    )
    .unwrap_err();
    assert_eq!(err, ReportError::MissingColumn("user"));
}

#[test]
fn invalid_utf8_in_a_field() {
    let mut bytes = format!("{HEADER}\n").into_bytes();
    bytes.extend_from_slice(
        &ALICE
            .replacen("alice", "al\u{1}ice", 1)
            .into_bytes()
            .iter()
            .map(|&b| if b == 1 { 0xff } else { b })
            .collect::<Vec<u8>>(),
    );
    bytes.push(b'\n');
    let err = CredentialReport::parse(&bytes).unwrap_err();
    assert_eq!(err.line(), Some(2), "{err:?}");
    assert!(
        err.to_string().contains("field `user` is not valid UTF-8"),
        "{err}"
    );
}

#[test]
fn header_only_is_an_empty_report() {
    let r = parse(&format!("{HEADER}\n")).unwrap();
    assert!(r.rows.is_empty());
}

#[test]
fn empty_user_name_is_rejected() {
    let row = ALICE.replacen("alice", "", 1);
    let err = parse(&format!("{HEADER}\n{row}\n")).unwrap_err();
    assert!(matches!(err, ReportError::Field { field: "user", .. }));
}

// ---- round trip ----

fn stamp() -> impl Strategy<Value = Stamp> {
    prop_oneof![
        Just(Stamp::NotApplicable),
        Just(Stamp::NoInformation),
        Just(Stamp::NotSupported),
        (0i64..4_102_444_800, 0u32..1000)
            .prop_map(|(s, ms)| Stamp::At(DateTime::from_timestamp(s, ms * 1_000_000).unwrap())),
    ]
}

fn row_csv() -> impl Strategy<Value = String> {
    let name = "[A-Za-z0-9+=,.@_-]{1,64}";
    let flag = prop_oneof![Just("true"), Just("false"), Just("not_supported")];
    let key = || (any::<bool>(), stamp(), stamp());
    (name, flag, stamp(), stamp(), stamp(), key(), key()).prop_map(
        |(name, flag, created, used, changed, k1, k2)| {
            let s = |x: Stamp| match x {
                Stamp::At(t) => t.to_rfc3339(),
                Stamp::NotApplicable => "N/A".into(),
                Stamp::NoInformation => "no_information".into(),
                Stamp::NotSupported => "not_supported".into(),
            };
            let k = |(a, r, u): (bool, Stamp, Stamp)| {
                // An active key always has a rotation date in real reports.
                let r = if a && !matches!(r, Stamp::At(_)) { Stamp::At(DateTime::from_timestamp(0, 0).unwrap()) } else { r };
                format!("{a},{},{},N/A,N/A", s(r), s(u))
            };
            format!(
                "\"{name}\",\"arn:aws:iam::1:user/{name}\",{},{flag},{},{},N/A,false,{},{},false,N/A,false,N/A",
                s(created), s(used), s(changed), k(k1), k(k2)
            )
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The fast path for AWS's timestamp layout agrees with chrono's RFC 3339 parser.
    #[test]
    fn timestamp_fast_path_agrees_with_chrono(secs in -62_000_000_000i64..253_000_000_000, junk in 0usize..25, c in any::<char>()) {
        let t = DateTime::from_timestamp(secs, 0).unwrap();
        let s = t.to_rfc3339();
        prop_assert_eq!(engine_core::report::parse_time(&s), Some(t));
        // Damage one character: both parsers must still agree.
        let mut chars: Vec<char> = s.chars().collect();
        if junk < chars.len() {
            chars[junk] = c;
        }
        let damaged: String = chars.into_iter().collect();
        let chrono = DateTime::parse_from_rfc3339(&damaged).ok().map(|t| t.with_timezone(&Utc));
        prop_assert_eq!(engine_core::report::parse_time(&damaged), chrono);
    }

    /// Any well-formed report parses, and writing it back gives the same credentials.
    #[test]
    fn generated_reports_round_trip(rows in prop::collection::vec(row_csv(), 0..20)) {
        let text = format!("{HEADER}\n{}\n", rows.join("\n"));
        let parsed = parse(&text).expect("generated report parses");
        prop_assert_eq!(parsed.rows.len(), rows.len());
        let again = CredentialReport::parse(&parsed.to_csv()).expect("written report parses");
        prop_assert_eq!(strip_lines(&parsed), strip_lines(&again));
    }

    /// Whatever bytes the parser accepts round-trip their credentials.
    #[test]
    fn accepted_input_round_trips(base in prop::collection::vec(row_csv(), 1..5), cut in 0usize..2000, junk in "[\",\r\n a-z0-9:+-]{0,8}") {
        let mut text = format!("{HEADER}\n{}\n", base.join("\n"));
        let at = (HEADER.len() + 1 + cut).min(text.len());
        if text.is_char_boundary(at) {
            text.insert_str(at, &junk);
        }
        if let Ok(parsed) = parse(&text) {
            let again = CredentialReport::parse(&parsed.to_csv()).expect("written report parses");
            prop_assert_eq!(strip_lines(&parsed), strip_lines(&again));
        }
    }
}

fn strip_lines(r: &CredentialReport) -> CredentialReport {
    let mut r = r.clone();
    for row in &mut r.rows {
        row.line = 0;
    }
    r
}

proptest::proptest! {
    /// The fast path for AWS's timestamp layout accepts exactly what chrono
    /// accepts, and gives the same instant: any year, month 0-13, day 0-32,
    /// hours, minutes and seconds past their ranges.
    #[test]
    fn the_fast_timestamp_path_agrees_with_chrono(
        year in 0u32..10_000,
        month in 0u32..14,
        day in 0u32..33,
        hour in 0u32..26,
        minute in 0u32..62,
        second in 0u32..62,
    ) {
        let s = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}+00:00");
        let chrono = chrono::DateTime::parse_from_rfc3339(&s)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
            // A leap second (60) is not the fast path's: chrono takes it after.
            .filter(|_| second < 60);
        proptest::prop_assert_eq!(engine_core::report::fast_utc(s.as_bytes()), chrono, "{}", s);
    }
}

#[test]
fn lines_count_the_newlines_inside_quoted_fields() {
    let quoted = ALICE.replacen("alice", "\"ali\nce\"", 1);
    let short = ALICE.rsplit_once(',').unwrap().0;
    for end in ["\n", "\r\n"] {
        let text = format!("{HEADER}{end}{quoted}{end}{ALICE}{end}{short}{end}");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.line(), Some(5), "{end:?}: {err}");
        let ok = parse(&format!("{HEADER}{end}{quoted}{end}{ALICE}{end}")).unwrap();
        assert_eq!((ok.rows[0].line, ok.rows[1].line), (2, 4), "{end:?}");
    }
}
