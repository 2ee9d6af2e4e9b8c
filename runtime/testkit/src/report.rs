//! Generated credential reports of any size, for benchmarks: deterministic
//! (the same bytes every run), as of a fixed instant.

use chrono::{DateTime, TimeDelta, Utc};

/// The instant the reports are generated against (2026-11-28).
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_824_000, 0).unwrap_or_default()
}

/// A small deterministic generator (xorshift), so every run reads the same bytes.
struct Rng(u64);

impl Rng {
    fn below(&mut self, m: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % m
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn ts(days: u64) -> String {
    (now() - TimeDelta::days(days as i64) - TimeDelta::seconds(days as i64 * 37 % 86_400))
        .to_rfc3339()
}

/// A deterministic report of `users` users, shaped like a real account:
/// most credentials in use and rotated, a minority stale (about a third of
/// users have a finding); or, `all_stale`, the worst case: every credential
/// stale, so every one is a finding. As of [`now`].
pub fn generate(users: usize, all_stale: bool) -> Vec<u8> {
    let mut out = String::from(
        "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,cert_1_last_rotated,cert_2_active,cert_2_last_rotated\n",
    );
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..users {
        let stale = all_stale || r.chance(10);
        let (pw, pw_used, pw_changed) = if !all_stale && r.chance(40) {
            ("false", "N/A".to_string(), "N/A".to_string())
        } else if r.chance(10) {
            (
                "true",
                "no_information".to_string(),
                ts(if stale {
                    100 + r.below(300)
                } else {
                    r.below(80)
                }),
            )
        } else {
            let used = if stale {
                100 + r.below(300)
            } else {
                r.below(60)
            };
            ("true", ts(used), ts(used + r.below(200)))
        };
        let key = |r: &mut Rng| {
            let stale = all_stale || r.chance(15);
            let rotated = if stale {
                100 + r.below(900)
            } else {
                r.below(85)
            };
            if !stale && r.chance(5) {
                return format!("true,{},N/A,N/A,N/A", ts(rotated));
            }
            let used = if stale {
                95 + r.below(5)
            } else {
                r.below(rotated + 1).min(20)
            };
            format!("true,{},{},us-east-1,s3", ts(rotated), ts(used))
        };
        let keys = if all_stale {
            2
        } else {
            [0, 1, 1, 2][r.below(4) as usize]
        };
        let k1 = if keys >= 1 {
            key(&mut r)
        } else {
            "false,N/A,N/A,N/A,N/A".to_string()
        };
        let k2 = if keys >= 2 {
            key(&mut r)
        } else {
            "false,N/A,N/A,N/A,N/A".to_string()
        };
        out.push_str(&format!(
            "user-{i},arn:aws:iam::123456789012:user/user-{i},{},{pw},{pw_used},{pw_changed},N/A,false,{k1},{k2},false,N/A,false,N/A\n",
            ts(1000)
        ));
    }
    out.into_bytes()
}
