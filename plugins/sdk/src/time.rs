//! Instants as the contract writes them (`2026-11-28T00:00:00Z`, RFC 3339
//! in UTC, whole seconds), for plugins that compare them: a plugin has no
//! clock and no date library is needed for this much.

/// Seconds since 1970-01-01T00:00:00Z of `YYYY-MM-DDTHH:MM:SSZ`, or `None`
/// if it is not written that way.
pub fn parse(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let n = |from: usize, to: usize| -> Option<i64> { s.get(from..to)?.parse().ok() };
    let (y, m, d) = (n(0, 4)?, n(5, 7)?, n(8, 10)?);
    let (hh, mm, ss) = (n(11, 13)?, n(14, 16)?, n(17, 19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// The date (`YYYY-MM-DD`) of an instant in seconds since 1970-01-01 UTC.
pub fn date(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_instants() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse("2026-11-28T00:00:00Z"), Some(1_795_824_000));
        assert_eq!(parse("2000-02-29T12:30:05Z"), Some(951_827_405));
        assert_eq!(date(1_795_824_000), "2026-11-28");
        assert_eq!(date(951_827_405), "2000-02-29");
        for bad in [
            "2026-11-28",
            "2026-11-28T00:00:00",
            "2026-13-01T00:00:00Z",
            "x",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        // Every day of 400 years round-trips.
        let mut t = parse("1900-01-01T00:00:00Z").unwrap_or_default();
        for _ in 0..146_097 {
            let day = date(t);
            assert_eq!(parse(&format!("{day}T00:00:00Z")), Some(t), "{day}");
            t += 86_400;
        }
    }
}
