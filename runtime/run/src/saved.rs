//! Saved plans: what `check --out` writes and `apply PLAN` trusts, and why.
//!
//! A saved plan is a record of findings and of what the plugins proposed, not
//! an order. `apply PLAN` refuses one that was edited or made with another
//! state directory (an HMAC under a key kept in the state directory, as
//! Terraform refuses a foreign plan), one older than `--plan-max-age`, one made
//! at `--now` (a what-if), and one whose policies, plugins or engine changed
//! since (a digest of all three). Even then it re-derives the actions: the
//! host checks run again against the current policies and identity.

use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use engine_core::policy::{PluginSource, PolicySet};

use crate::document::{AccountsDocument, Document};

/// The key file in the state directory.
pub const KEY_FILE: &str = "plan.key";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 over the engine's version, the policy files and the builtin
/// plugins the set uses (external plugins are pinned in the files).
pub fn policy_digest(set: &PolicySet) -> String {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update([0]);
    h.update(set.digest.as_bytes());
    for (name, plugin) in &set.plugins {
        if plugin.source == PluginSource::Builtin {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(Sha256::digest(
                engine_wasm::builtin(name).unwrap_or_default(),
            ));
        }
    }
    hex(&h.finalize())
}

/// The state directory's plan key: read it, or create it (32 random bytes,
/// readable by the owner only) when `create` is set.
fn key(state: &Path, create: bool) -> Result<Vec<u8>, String> {
    let path = state.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(k) if k.len() >= 32 => return Ok(k),
        Ok(_) => return Err(format!("{} is too short to be a plan key", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "there is no plan key in {} (the plan was saved with another --state directory)",
                state.display()
            ));
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    std::fs::create_dir_all(state)
        .map_err(|e| format!("cannot create the state directory {}: {e}", state.display()))?;
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).map_err(|e| format!("no randomness for a plan key: {e}"))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(&path) {
        Ok(mut f) => {
            f.write_all(&k)
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(k.to_vec())
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => key(state, false),
        Err(e) => Err(format!("cannot create {}: {e}", path.display())),
    }
}

/// A plan that can be saved and sealed: a [`Document`] (one account) or an
/// [`AccountsDocument`] (many).
pub trait Sealed: serde::Serialize + Clone {
    fn mac(&self) -> Option<&String>;
    fn set_mac(&mut self, mac: Option<String>);
}

impl Sealed for Document {
    fn mac(&self) -> Option<&String> {
        self.mac.as_ref()
    }
    fn set_mac(&mut self, mac: Option<String>) {
        self.mac = mac;
    }
}

impl Sealed for AccountsDocument {
    fn mac(&self) -> Option<&String> {
        self.mac.as_ref()
    }
    fn set_mac(&mut self, mac: Option<String>) {
        self.mac = mac;
    }
}

/// The MAC covers the document as a JSON value without its `mac` field,
/// written compactly: what the file says, not how it is laid out.
fn mac_of<D: Sealed>(doc: &D, key: &[u8]) -> Result<String, String> {
    let mut value = serde_json::to_value(doc).map_err(|e| e.to_string())?;
    if let Some(fields) = value.as_object_mut() {
        fields.remove("mac");
    }
    let bytes = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
    let mut m = Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
    m.update(&bytes);
    Ok(hex(&m.finalize().into_bytes()))
}

/// Seal `doc` and write it atomically to `path`.
pub fn save<D: Sealed>(path: &Path, doc: &D, state: &Path) -> Result<(), String> {
    let key = key(state, true)?;
    let mut doc = doc.clone();
    let mac = mac_of(&doc, &key)?;
    doc.set_mac(Some(mac));
    let json = serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?;
    let tmp: PathBuf = path.with_extension("json.tmp");
    std::fs::write(&tmp, json).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

/// Whether `doc` carries a valid seal under the state directory's key.
pub fn verify<D: Sealed>(doc: &D, state: &Path) -> Result<(), String> {
    let Some(mac) = doc.mac() else {
        return Err("it carries no seal (save plans with `engine check --out`)".into());
    };
    let key = key(state, false)?;
    let want = mac_of(doc, &key)?;
    // Compare in constant time: the verifier is not an oracle for the key.
    let same = want.len() == mac.len()
        && want
            .bytes()
            .zip(mac.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(format!(
            "its seal does not match: it was edited, or saved with another --state directory than {}",
            state.display()
        ))
    }
}
