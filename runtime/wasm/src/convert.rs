//! Conversions between the domain types of `engine-core` and the WIT types.
//!
//! They live in the host, not in the SDK, so the contract can stay small and
//! stable while the domain types evolve.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Timelike, Utc};

use engine_core::finding::Stage;

/// The context and findings of one contract version, as its WIT types;
/// `$extra` adds the finding fields that version has beyond 0.1.0's.
macro_rules! conversions {
    ($wit:path, |$f:ident| { $($extra:tt)* }) => {
        use $wit as wit;
        use engine_core::Finding;
        use engine_core::finding::{Basis, Credential};
        use engine_core::policy::Rule;

        use crate::Invocation;
        #[allow(unused_imports)]
        use super::{Stage, rfc3339};

        pub(crate) fn context(inv: &Invocation<'_>) -> wit::Context {
            wit::Context {
                invocation_id: inv.invocation_id.to_string(),
                policy: inv.policy.name.clone(),
                rule: rule(inv.policy.rule),
                dry_run: crate::CONTEXT_DRY_RUN,
                now: rfc3339(&inv.now),
                params: inv
                    .policy
                    .params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }
        }

        fn rule(r: Rule) -> wit::Rule {
            match r {
                Rule::Cis13 => wit::Rule::Cis13,
                Rule::Cis14 => wit::Rule::Cis14,
            }
        }

        pub(crate) fn finding($f: &Finding) -> wit::Finding {
            wit::Finding {
                user: $f.user().to_string(),
                arn: $f.arn().to_string(),
                credential: match $f.credential {
                    Credential::Password => wit::Credential::Password,
                    Credential::AccessKey1 => wit::Credential::AccessKey1,
                    Credential::AccessKey2 => wit::Credential::AccessKey2,
                },
                key_id: $f.key_id.clone(),
                rule: rule($f.rule),
                timestamp: rfc3339(&$f.timestamp),
                basis: match $f.basis {
                    Basis::PasswordLastUsed => wit::Basis::PasswordLastUsed,
                    Basis::PasswordLastChanged => wit::Basis::PasswordLastChanged,
                    Basis::UserCreationTime => wit::Basis::UserCreationTime,
                    Basis::KeyLastUsed => wit::Basis::KeyLastUsed,
                    Basis::KeyLastRotated => wit::Basis::KeyLastRotated,
                },
                age_days: $f.age_days,
                threshold_days: $f.threshold_days,
                reason: $f.reason(),
                exempt: $f.exempt,
                protected: $f.protected.is_some(),
                $($extra)*
            }
        }
    };
}

/// Contract 0.2.0 (the newest).
mod v0_2 {
    conversions!(crate::bindings::engine::plugin::types, |f| {
        stage: match f.stage {
            Stage::Due => wit::Stage::Due,
            Stage::Upcoming => wit::Stage::Upcoming,
            Stage::Deactivated => wit::Stage::Deactivated,
        },
        due_at: rfc3339(&f.due_at()),
        deactivated_at: f.deactivated_at.as_ref().map(rfc3339),
    });
}

/// Contract 0.1.0: no stages (such a plugin is given due findings only).
pub(crate) mod v0_1 {
    conversions!(crate::bindings_v0_1::engine::plugin::types, |f| {});
}

pub(crate) use v0_2::{context, finding};

/// `YYYY-MM-DDTHH:MM:SSZ` (whole seconds, as in the credential report),
/// written digit by digit because this runs once per finding per call;
/// years outside 0..=9999 (never in a credential report) go through `write!`.
pub(crate) fn rfc3339(t: &DateTime<Utc>) -> String {
    let mut s = String::with_capacity(20);
    let year = t.year();
    if !(0..=9999).contains(&year) {
        let _ = write!(
            s,
            "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        return s;
    }
    let year = year as u32;
    let digits = |s: &mut String, n: u32, width: u32| {
        for p in (0..width).rev() {
            s.push(char::from(b'0' + (n / 10u32.pow(p) % 10) as u8));
        }
    };
    digits(&mut s, year, 4);
    s.push('-');
    digits(&mut s, t.month(), 2);
    s.push('-');
    digits(&mut s, t.day(), 2);
    s.push('T');
    digits(&mut s, t.hour(), 2);
    s.push(':');
    digits(&mut s, t.minute(), 2);
    s.push(':');
    digits(&mut s, t.second(), 2);
    s.push('Z');
    s
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, SecondsFormat};

    #[test]
    fn rfc3339_matches_chrono() {
        let mut secs: i64 = -62_000_000_000;
        while secs < 253_402_300_799 {
            let t = DateTime::from_timestamp(secs, 0).expect("valid");
            assert_eq!(
                super::rfc3339(&t),
                t.to_rfc3339_opts(SecondsFormat::Secs, true)
            );
            secs += 987_654_321;
        }
        let far = DateTime::from_timestamp(300_000_000_000, 0).expect("valid");
        assert!(
            super::rfc3339(&far).starts_with("+11476-")
                || super::rfc3339(&far).starts_with("11476-")
        );
    }
}
