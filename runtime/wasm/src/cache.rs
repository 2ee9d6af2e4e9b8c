//! Compiled external plugins, kept on disk between processes.
//!
//! Compiling a plugin is most of the cost of loading it (tens of
//! milliseconds for a small Rust plugin, seconds for a Python or JavaScript
//! one that carries its interpreter). A daemon that reloads, or a `check` in
//! CI, would otherwise compile the same unchanged file every time. The cache
//! keeps wasmtime's machine code of each external plugin under a name made of
//! the plugin file's sha256 (already checked against the policy's pin before
//! the cache is consulted) and a hash of the engine: this crate's version and
//! wasmtime's compatibility hash (its version and the sandbox's settings). A
//! changed plugin, a new engine or other settings use a new entry; wasmtime
//! checks the entry again when it loads it and a mismatch is compiled anew.
//!
//! Loading machine code is trusting it: whoever can write to the cache can
//! run code in the engine's process. So the cache directory must be owned by
//! the user the engine runs as and not be writable by group or others (it is
//! created with mode 0700 and entries with 0600), and entries are written to
//! a temporary file and renamed, so a reader never sees half of one. A cache
//! that does not meet this is not used (a warning says why) and plugins are
//! compiled as if there were none. A cache error never fails a load.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of compiled plugins.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache in `dir` (created, mode 0700, when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry of the plugin whose file has this sha256, for this engine.
    pub fn entry(&self, engine: &Engine, sha256: &str) -> PathBuf {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        env!("CARGO_PKG_VERSION").hash(&mut h);
        engine.precompile_compatibility_hash().hash(&mut h);
        self.dir.join(format!(
            "{}-{:016x}.cwasm",
            sha256.to_ascii_lowercase(),
            h.finish()
        ))
    }

    /// The compiled plugin, if the cache has a usable entry for it.
    pub fn get(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.entry(engine, sha256);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "plugin cache entry unreadable; compiling the plugin");
                return None;
            }
        };
        if let Err(why) = trusted(&self.dir).and_then(|()| trusted_file(&meta)) {
            tracing::warn!(cache = %self.dir.display(), "plugin cache not used: {why}; compiling the plugin");
            return None;
        }
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "plugin cache entry unreadable; compiling the plugin");
                return None;
            }
        };
        // SAFETY: the entry was written by `put` of an engine of this version
        // (the file name says so) into a directory only this user can write
        // (checked above); wasmtime checks its version and settings again and
        // refuses an incompatible artifact.
        match unsafe { Component::deserialize(engine, &bytes) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "plugin cache entry not usable; compiling the plugin");
                None
            }
        }
    }

    /// Keep `component` (compiled from the file with this sha256). Failures
    /// are logged, never returned: the plugin was loaded either way.
    pub fn put(&self, engine: &Engine, sha256: &str, component: &Component) {
        if let Err(e) = self.try_put(engine, sha256, component) {
            tracing::warn!(cache = %self.dir.display(), error = %e, "could not store the compiled plugin in the cache");
        }
    }

    fn try_put(&self, engine: &Engine, sha256: &str, component: &Component) -> Result<(), String> {
        create_private_dir(&self.dir).map_err(|e| format!("cannot create it: {e}"))?;
        trusted(&self.dir)?;
        let bytes = component.serialize().map_err(|e| e.to_string())?;
        let path = self.entry(engine, sha256);
        let tmp = self
            .dir
            .join(format!(".tmp-{}-{}", std::process::id(), unique()));
        let write = || -> std::io::Result<()> {
            let mut opts = fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            e.to_string()
        })
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// The directory is a real directory of this user, writable by no one else.
fn trusted(dir: &Path) -> Result<(), String> {
    let meta = fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    owned_and_private(&meta, &dir.display().to_string())
}

fn trusted_file(meta: &fs::Metadata) -> Result<(), String> {
    if !meta.is_file() {
        return Err("an entry is not a regular file".to_string());
    }
    owned_and_private(meta, "an entry")
}

#[cfg(unix)]
fn owned_and_private(meta: &fs::Metadata, what: &str) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "{what} is owned by uid {}, not by this process's uid {me}",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{what} is writable by group or others (mode {:o}); chmod go-w it",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn owned_and_private(_meta: &fs::Metadata, _what: &str) -> Result<(), String> {
    Ok(())
}
