//! Findings exported to AWS Security Hub after a run that acted (`apply`,
//! the daemon's scheduled runs), when the policies have `[security_hub]`.
//!
//! Every finding of each account is imported with what was done about it
//! (`engine_core::asff`); a finding imported by an earlier run and not
//! found any more is updated as resolved. What was imported is recorded in
//! `<state>/security-hub.json` (per account: each finding's last export),
//! written to a temporary file and renamed. Only whole-account runs export:
//! a run for one user (`--user`, an event) would make every other finding
//! look resolved.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};
use engine_aws::Aws;
use engine_core::asff::{self, Export, Taken};
use engine_core::policy::{ImportInto, SecurityHubSettings};
use engine_securityhub::SecurityHub;
use serde::{Deserialize, Serialize};

use crate::document::Document;
use crate::execute::{ActionResult, ResultsByAction};

/// The file in the state directory that records what was imported.
pub const STATE_FILE: &str = "security-hub.json";
const STATE_VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    /// Per account, per finding id: the last export.
    imported: BTreeMap<String, BTreeMap<String, Export>>,
}

fn read_state(state: &Path) -> Result<StateFile, String> {
    let path = state.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let file: StateFile = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is not readable: {e}", path.display()))?;
            if file.version > STATE_VERSION {
                return Err(format!(
                    "{} was written by a newer engine (version {}); this one reads {STATE_VERSION}",
                    path.display(),
                    file.version
                ));
            }
            Ok(file)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateFile {
            version: STATE_VERSION,
            ..StateFile::default()
        }),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn write_state(state: &Path, file: &StateFile) -> Result<(), String> {
    std::fs::create_dir_all(state)
        .map_err(|e| format!("cannot create {}: {e}", state.display()))?;
    let path = state.join(STATE_FILE);
    let tmp = state.join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
    let json = serde_json::to_vec_pretty(file).map_err(|e| e.to_string())?;
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot write {}: {e}", path.display()));
    }
    Ok(())
}

/// One account's run, to export.
pub struct AccountRun<'a> {
    pub account: &'a str,
    pub doc: &'a Document,
    /// What was carried out (empty when nothing was).
    pub results: &'a [ActionResult],
    /// The connection to the account (for `import_into = "each-account"`).
    pub aws: &'a Aws,
}

/// What the export did for one account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Exported {
    pub account: String,
    /// Findings imported (new or updated).
    pub imported: usize,
    /// Findings resolved (gone since an earlier import).
    pub resolved: usize,
    /// Findings Security Hub refused, with why.
    pub failed: Vec<(String, String)>,
    /// Why nothing (more) was imported for this account.
    pub error: Option<String>,
}

/// What was done about each finding of `doc`, by finding index.
pub fn taken(doc: &Document, results: &[ActionResult]) -> BTreeMap<usize, Taken> {
    let by_action = ResultsByAction::new(results);
    let mut out = BTreeMap::new();
    for a in &doc.actions {
        // A result carries its action's key id.
        let done = by_action.get(a);
        let (outcome, detail) = match done {
            Some(r) => (r.outcome.to_string(), r.detail.clone()),
            None if a.superseded => ("superseded".to_string(), String::new()),
            None if !a.action.mutates() => {
                ("decided".to_string(), a.reason.clone().unwrap_or_default())
            }
            None if !a.applies => ("planned".to_string(), "mode = \"report\"".to_string()),
            None => ("not carried out".to_string(), String::new()),
        };
        out.insert(
            a.finding,
            Taken {
                action: a.action.as_str().to_string(),
                outcome,
                detail,
            },
        );
    }
    for r in &doc.refused {
        out.entry(r.refusal.finding).or_insert_with(|| Taken {
            action: r.refusal.action.as_str().to_string(),
            outcome: "refused".to_string(),
            detail: r.refusal.message.clone(),
        });
    }
    out
}

/// Export each account's findings, resolve those gone, record what was
/// imported. `base` is the engine's own connection (for `import_into =
/// "engine-account"`), in account `engine_account`.
pub async fn export(
    settings: &SecurityHubSettings,
    base: &Aws,
    engine_account: &str,
    runs: &[AccountRun<'_>],
    state: &Path,
    now: DateTime<Utc>,
    observer: Option<std::sync::Arc<dyn engine_aws::RequestObserver>>,
) -> Vec<Exported> {
    let mut file = match read_state(state) {
        Ok(f) => f,
        Err(e) => {
            return runs
                .iter()
                .map(|r| Exported {
                    account: r.account.to_string(),
                    error: Some(e.clone()),
                    ..Exported::default()
                })
                .collect();
        }
    };
    let mut out = Vec::new();
    for run in runs {
        let (hub_aws, importing) = match settings.import_into {
            ImportInto::EngineAccount => (base, engine_account),
            ImportInto::EachAccount => (run.aws, run.account),
        };
        let hub = SecurityHub::new(
            hub_aws.sdk_config(),
            &settings.region,
            importing,
            observer.clone(),
        );
        let previous = file.imported.remove(run.account).unwrap_or_default();
        let first_seen: BTreeMap<String, DateTime<Utc>> = previous
            .iter()
            .filter(|(_, e)| e.status == asff::Status::Failed)
            .map(|(id, e)| (id.clone(), e.first_seen))
            .collect();
        let current = asff::exports(
            run.account,
            &run.doc.findings,
            &taken(run.doc, run.results),
            &first_seen,
            now,
        );
        let gone = asff::gone(&previous, &current, now);
        let mut all = current.clone();
        all.extend(gone.iter().cloned());
        let mut done = Exported {
            account: run.account.to_string(),
            ..Exported::default()
        };
        let imported = match hub.import(&all).await {
            Ok(i) => i,
            Err((i, e)) => {
                done.error = Some(e.to_string());
                i
            }
        };
        let ok = |id: &str| imported.ok.iter().any(|i| i == id);
        // What Security Hub now holds as FAILED from this engine: the
        // current findings it took, and earlier ones it has not taken back.
        let mut keep: BTreeMap<String, Export> = BTreeMap::new();
        for e in &current {
            if ok(&e.id) {
                done.imported += 1;
                keep.insert(e.id.clone(), e.clone());
            } else if let Some(p) = previous.get(&e.id) {
                keep.insert(e.id.clone(), p.clone());
            }
        }
        for e in &gone {
            if ok(&e.id) {
                done.resolved += 1;
            } else if let Some(p) = previous.get(&e.id) {
                keep.insert(e.id.clone(), p.clone());
            }
        }
        done.failed = imported.failed;
        tracing::info!(
            account = run.account,
            imported = done.imported,
            resolved = done.resolved,
            failed = done.failed.len(),
            into = importing,
            region = %settings.region,
            "Security Hub findings"
        );
        if !keep.is_empty() {
            file.imported.insert(run.account.to_string(), keep);
        }
        out.push(done);
    }
    file.version = STATE_VERSION;
    if let Err(e) = write_state(state, &file) {
        for d in &mut out {
            d.error
                .get_or_insert_with(|| format!("imported, but not recorded: {e}"));
        }
    }
    out
}
