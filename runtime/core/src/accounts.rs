//! Which accounts a run covers, from the `[accounts]` table and what AWS
//! Organizations lists: a pure function of both, so the rules (ACTIVE only,
//! organizational units recursive, exclusions win) are tested without AWS.

use std::collections::{BTreeMap, BTreeSet};

use crate::policy::{AccountSelect, AccountsSettings, valid_account_id};

/// An account as the organization lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub name: String,
    /// `ACTIVE`, `SUSPENDED`, `PENDING_CLOSURE`, ...
    pub status: String,
}

/// An account a run covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub id: String,
    /// Its name in the organization, when listed.
    pub name: Option<String>,
}

/// What the organization says, for [`select`]: every account, and the
/// accounts under each organizational unit the settings name (in
/// `organizational_units` or `exclude`), recursively.
#[derive(Debug, Clone, Default)]
pub struct Organization {
    pub accounts: Vec<Listed>,
    pub under: BTreeMap<String, BTreeSet<String>>,
}

/// The organizational units whose accounts [`select`] needs listed.
pub fn units_to_list(settings: &AccountsSettings) -> Vec<String> {
    let mut units: Vec<String> = match &settings.select {
        AccountSelect::Organization { units } => units.clone(),
        AccountSelect::Ids(_) => Vec::new(),
    };
    units.extend(
        settings
            .exclude
            .iter()
            .filter(|e| !valid_account_id(e))
            .cloned(),
    );
    units.sort();
    units.dedup();
    units
}

/// Whether [`select`] needs the organization's listing at all.
pub fn needs_organization(settings: &AccountsSettings) -> bool {
    matches!(settings.select, AccountSelect::Organization { .. })
        || !units_to_list(settings).is_empty()
}

/// The accounts of a run, sorted by id: the listed ids, or the
/// organization's ACTIVE accounts (under the given units, if any); minus
/// every excluded account and every account under an excluded unit.
/// Listed ids are taken as given (an account that is not ACTIVE fails
/// later, when its role cannot be assumed); the organization's other
/// accounts are skipped with the reason in `skipped`.
pub fn select(settings: &AccountsSettings, org: &Organization) -> Selection {
    let mut excluded: BTreeSet<String> = BTreeSet::new();
    for e in &settings.exclude {
        if valid_account_id(e) {
            excluded.insert(e.clone());
        } else if let Some(ids) = org.under.get(e) {
            excluded.extend(ids.iter().cloned());
        }
    }
    let names: BTreeMap<&str, &Listed> = org.accounts.iter().map(|a| (a.id.as_str(), a)).collect();
    let mut targets = Vec::new();
    let mut skipped = Vec::new();
    match &settings.select {
        AccountSelect::Ids(ids) => {
            for id in ids {
                if excluded.contains(id) {
                    skipped.push((id.clone(), "excluded".to_string()));
                } else {
                    targets.push(Target {
                        id: id.clone(),
                        name: names.get(id.as_str()).map(|a| a.name.clone()),
                    });
                }
            }
        }
        AccountSelect::Organization { units } => {
            let within: Option<BTreeSet<&str>> = (!units.is_empty()).then(|| {
                units
                    .iter()
                    .filter_map(|u| org.under.get(u))
                    .flatten()
                    .map(String::as_str)
                    .collect()
            });
            for a in &org.accounts {
                if within.as_ref().is_some_and(|w| !w.contains(a.id.as_str())) {
                    continue;
                }
                if excluded.contains(&a.id) {
                    skipped.push((a.id.clone(), "excluded".to_string()));
                } else if a.status != "ACTIVE" {
                    skipped.push((a.id.clone(), format!("not active ({})", a.status)));
                } else {
                    targets.push(Target {
                        id: a.id.clone(),
                        name: Some(a.name.clone()),
                    });
                }
            }
        }
    }
    targets.sort();
    targets.dedup_by(|a, b| a.id == b.id);
    skipped.sort();
    Selection { targets, skipped }
}

/// The accounts a run covers, and those it leaves out with why.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    pub targets: Vec<Target>,
    pub skipped: Vec<(String, String)>,
}

/// The STS session name of a run: the engine, the command and when it
/// started (seconds since the epoch), within STS's 64 characters of
/// `[\w+=,.@-]`. CloudTrail shows it on every call made in the account.
pub fn session_name(command: &str, started_unix: i64) -> String {
    let command: String = command
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+=,.@-_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(32)
        .collect();
    format!("engine-{command}-{started_unix}")
}
