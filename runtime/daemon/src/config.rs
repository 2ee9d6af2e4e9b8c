//! The daemon's configuration: a policy directory, validated as a whole.
//!
//! A configuration is only ever used whole: the policies parsed and checked,
//! every plugin they name loaded (its sha256 checked and compiled) and every
//! schedule parsed. A reload builds a new [`Config`] beside the running one
//! and swaps it in only when all of that succeeded; a run in progress keeps
//! the `Arc` it started with.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use engine_core::PolicySet;
use engine_core::policy::{self, PluginSource, PolicyErrors};
use engine_run::Plugins;
use engine_run::plugins::Cache;

use crate::Schedule;

/// A path as the file watcher reports it: its directory resolved (`..`,
/// symlinks), its file name as is (the file itself may be gone).
pub fn normalize(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// Size and modification time of each file a configuration is read from.
pub type Fingerprint = Vec<(PathBuf, Option<(std::time::SystemTime, u64)>)>;

fn stat(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The policy files of `dir` (and a ConfigMap's `..data`), then `plugins`.
pub fn fingerprint(dir: &Path, plugins: &[PathBuf]) -> Fingerprint {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|e| e == "toml")
                        || p.file_name().is_some_and(|n| n == "..data")
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.extend(plugins.iter().cloned());
    files
        .into_iter()
        .map(|p| {
            let s = stat(&p);
            (p, s)
        })
        .collect()
}

/// A loaded, validated policy directory.
pub struct Config {
    /// The directory, absolute.
    pub dir: PathBuf,
    pub set: PolicySet,
    pub plugins: Plugins,
    pub schedule: Schedule,
    /// The plugin files the policies name (absolute): a change to one reloads.
    pub plugin_files: Vec<PathBuf>,
    /// Over the engine version, the policy files and the builtin plugins.
    pub digest: String,
    /// The files it was read from, as they were just before they were read:
    /// a change made before the file watcher started is caught by comparing.
    pub fingerprint: Fingerprint,
    pub loaded_at: DateTime<Utc>,
    /// Where compiled external plugins are kept: a reload of an unchanged
    /// plugin does not compile it again.
    pub cache: Option<Cache>,
}

/// Why a directory cannot be (re)loaded.
pub enum ConfigError {
    /// The policy files do not parse or validate.
    Policies(PolicyErrors),
    /// They do, but something they name does not load.
    Invalid(Vec<String>),
}

impl ConfigError {
    /// Every diagnostic, as plain text.
    pub fn diagnostics(&self) -> Vec<String> {
        match self {
            ConfigError::Policies(errors) => errors.rendered(),
            ConfigError::Invalid(errors) => errors.clone(),
        }
    }
}

impl std::fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.diagnostics()).finish()
    }
}

impl Config {
    /// Load and validate `dir` whole: policies, plugins (sha256 checked,
    /// compiled, or taken from `cache`), schedules. Blocking: plugins compile
    /// on threads.
    pub fn load(dir: &Path, cache: Option<Cache>) -> Result<Arc<Config>, ConfigError> {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let before = fingerprint(&dir, &[]);
        let set = policy::load_dir(&dir).map_err(ConfigError::Policies)?;
        let plugin_files: BTreeSet<PathBuf> = set
            .plugins
            .values()
            .filter_map(|p| match &p.source {
                PluginSource::File { path, .. } => Some(normalize(path)),
                PluginSource::Builtin => None,
            })
            .collect();
        let plugin_files: Vec<PathBuf> = plugin_files.into_iter().collect();
        let mut fingerprint = before;
        fingerprint.extend(plugin_files.iter().map(|p| (p.clone(), stat(p))));
        let mut problems = Vec::new();
        let plugins = match Plugins::load(&set, cache.as_ref()) {
            Ok(p) => Some(p),
            Err(e) => {
                problems.push(e);
                None
            }
        };
        if let Some(p) = &plugins {
            problems.extend(p.errors().map(|e| e.to_string()));
        }
        let schedule = match Schedule::from_policies(&set) {
            Ok(s) => Some(s),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        let (Some(plugins), Some(schedule), true) = (plugins, schedule, problems.is_empty()) else {
            return Err(ConfigError::Invalid(problems));
        };
        let digest = engine_run::saved::policy_digest(&set);
        Ok(Arc::new(Config {
            dir,
            set,
            plugins,
            schedule,
            plugin_files,
            digest,
            fingerprint,
            loaded_at: Utc::now(),
            cache,
        }))
    }

    /// The names of its policies.
    pub fn policy_names(&self) -> Vec<&str> {
        self.set.policies.iter().map(|p| p.name.as_str()).collect()
    }

    /// Whether the files changed since they were read.
    pub fn changed_on_disk(&self) -> bool {
        fingerprint(&self.dir, &self.plugin_files) != self.fingerprint
    }

    /// The policies named in `due`, with every plugin: one shared run.
    pub fn subset(&self, due: &[String]) -> PolicySet {
        engine_run::event::subset(&self.set, due)
    }

    /// Whether a changed path concerns this configuration: a policy file of
    /// the directory or a plugin file it names.
    pub fn concerns(&self, path: &Path) -> bool {
        let path = normalize(path);
        let path = path.as_path();
        let in_dir = path.parent() == Some(normalize(&self.dir).as_path());
        let policy_file = in_dir && path.extension().is_some_and(|e| e == "toml");
        // A Kubernetes ConfigMap volume swaps its files at once by renaming
        // the `..data` symlink: no `*.toml` path is touched.
        let swapped = in_dir && path.file_name().is_some_and(|n| n == "..data");
        policy_file || swapped || self.plugin_files.iter().any(|p| p == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("engine-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn a_change_after_the_files_were_read_is_seen() {
        let d = dir("fingerprint");
        let policy = d.join("rotate.toml");
        std::fs::write(&policy, "[policy.rotate]\nrule = \"cis-1.4\"\n").expect("write");
        let config = Config::load(&d, None).expect("loads");
        assert!(!config.changed_on_disk());
        // Same length, other bytes, a later mtime: what an editor does.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&policy, "[policy.rotate]\nrule = \"cis-1.3\"\n").expect("edit");
        assert!(config.changed_on_disk());
        std::fs::write(&policy, "[policy.rotate]\nrule = \"cis-1.4\"\n").expect("back");
        // A new policy file is a change too.
        let fresh = Config::load(&d, None).expect("loads");
        std::fs::write(d.join("more.toml"), "").expect("new file");
        assert!(fresh.changed_on_disk());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn only_policy_files_and_named_plugins_concern_a_config() {
        let d = dir("concerns");
        std::fs::write(
            d.join("rotate.toml"),
            "[policy.rotate]\nrule = \"cis-1.4\"\n",
        )
        .expect("write");
        let config = Config::load(&d, None).expect("loads");
        assert!(config.concerns(&d.join("rotate.toml")));
        assert!(config.concerns(&d.join("new.toml")));
        assert!(config.concerns(&d.join("..data")));
        assert!(!config.concerns(&d.join("notes.txt")));
        assert!(!config.concerns(&d.join("sub").join("x.toml")));
        let _ = std::fs::remove_dir_all(&d);
    }
}
