//! One user from fresh IAM reads instead of the credential report.
//!
//! Acting on one user (a compliance event names one) must not rest on a
//! report that may be hours old. The user's state is read directly
//! (`GetUser`, `GetLoginProfile`, `ListAccessKeys`, `GetAccessKeyLastUsed`)
//! and turned into a one-row [`CredentialReport`], so the findings come from
//! the same rules as everywhere else ([`crate::rules::evaluate`]). The keys
//! fill the slots in order of creation, and each access-key finding takes
//! its key id straight from the key in its slot: no dates are matched, so
//! two keys created in the same second are told apart by their ids.

use chrono::{DateTime, Utc};

use crate::finding::Finding;
use crate::name::UserNames;
use crate::policy::Policy;
use crate::report::{AccessKey, CredentialReport, CredentialRow, Flag, Stamp};
use crate::rules;
use crate::snapshot::{self, Own};

/// One IAM user as the API describes it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreshUser {
    /// The user name as IAM spells it (`GetUser`'s `UserName`).
    pub name: String,
    pub arn: String,
    /// `GetUser`'s `CreateDate`.
    pub created: DateTime<Utc>,
    /// `GetUser`'s `PasswordLastUsed` (`None`: never used, or not tracked).
    pub password_last_used: Option<DateTime<Utc>>,
    /// `GetLoginProfile`'s `CreateDate`; `None`: no console password.
    pub login_profile_created: Option<DateTime<Utc>>,
    /// `ListAccessKeys`, each with its `GetAccessKeyLastUsed`.
    pub keys: Vec<FreshKey>,
}

/// One access key as the API describes it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreshKey {
    pub id: String,
    pub active: bool,
    /// `ListAccessKeys`' `CreateDate`.
    pub created: DateTime<Utc>,
    /// `GetAccessKeyLastUsed`'s `LastUsedDate` (`None`: never used).
    pub last_used: Option<DateTime<Utc>>,
}

/// Why a user's reads cannot be made into a report row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FreshError {
    #[error("IAM lists {count} access keys for {user}, more than the two a user can have")]
    TooManyKeys { user: String, count: usize },
    #[error("IAM answered with an empty user name")]
    EmptyName,
    /// IAM's names are at most 64 characters and its ARNs 2,048: only a
    /// broken answer gets here.
    #[error("IAM answered with a user name and ARN that reach 4 GiB")]
    TooLong,
}

/// A one-row report made from a [`FreshUser`], and which key is in which slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreshReport {
    pub report: CredentialReport,
    /// The key id in slot 1 and slot 2 (`None`: empty slot).
    pub slots: [Option<String>; 2],
}

impl FreshReport {
    /// The report row of `user`: what a credential report generated now would
    /// say, with the keys in slots by creation date (ties keep the order IAM
    /// listed them in; they are told apart by id, not by date).
    pub fn new(user: &FreshUser) -> Result<FreshReport, FreshError> {
        if user.name.is_empty() {
            return Err(FreshError::EmptyName);
        }
        if user.keys.len() > 2 {
            return Err(FreshError::TooManyKeys {
                user: user.name.clone(),
                count: user.keys.len(),
            });
        }
        let mut keys: Vec<&FreshKey> = user.keys.iter().collect();
        keys.sort_by_key(|k| k.created);
        let mut access_keys = [AccessKey {
            active: false,
            last_rotated: Stamp::NotApplicable,
            last_used_date: Stamp::NotApplicable,
        }; 2];
        let mut slots: [Option<String>; 2] = [None, None];
        for (i, k) in keys.iter().enumerate() {
            access_keys[i] = AccessKey {
                active: k.active,
                last_rotated: Stamp::At(k.created),
                last_used_date: k.last_used.map_or(Stamp::NotApplicable, Stamp::At),
            };
            slots[i] = Some(k.id.clone());
        }
        let (password_enabled, password_last_used, password_last_changed) =
            match user.login_profile_created {
                Some(created) => (
                    Flag::True,
                    user.password_last_used
                        .map_or(Stamp::NoInformation, Stamp::At),
                    Stamp::At(created),
                ),
                None => (Flag::False, Stamp::NotApplicable, Stamp::NotApplicable),
            };
        let row = CredentialRow {
            // Not from a report file: there is no line.
            line: 0,
            names: UserNames::try_new(&user.name, &user.arn).ok_or(FreshError::TooLong)?,
            user_creation_time: Stamp::At(user.created),
            password_enabled,
            password_last_used,
            password_last_changed,
            access_keys,
        };
        Ok(FreshReport {
            report: CredentialReport { rows: vec![row] },
            slots,
        })
    }

    /// Set the key id of every access-key finding from the key in its slot.
    pub fn assign_key_ids(&self, findings: &mut [Finding]) {
        for f in findings {
            if let Some(slot) = f.credential.slot() {
                f.key_id = self.slots[usize::from(slot) - 1].clone();
            }
        }
    }

    /// One policy's findings over the user, with key ids, and the engine's
    /// own credentials and the policy's `protect_access_keys` marked as
    /// [`snapshot::protect`] does for the whole account.
    pub fn findings(&self, policy: &Policy, own: &Own, now: DateTime<Utc>) -> Vec<Finding> {
        let mut findings = rules::evaluate(policy, &self.report, now);
        self.assign_key_ids(&mut findings);
        snapshot::protect(&mut findings, own, &policy.protect_access_keys);
        findings
    }
}
