//! The state lock: one holder at a time, who it is, released on drop.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use engine_journal::{LOCK_FILE, LockError, RunOwner, StateLock};

fn state_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("engine-lock-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn a_second_acquire_fails_with_the_holder_and_succeeds_after_drop() {
    let dir = state_dir("second");
    let before = chrono::Utc::now().timestamp();
    let lock = StateLock::try_acquire(&dir).expect("the lock is free");
    let me = RunOwner::current();
    assert_eq!(lock.path(), dir.join(LOCK_FILE));
    assert_eq!(lock.holder().pid, std::process::id());
    assert_eq!(lock.holder().host, me.host);
    assert!(lock.holder().since.timestamp() >= before);

    // The file says who holds it, for people.
    let text = std::fs::read_to_string(dir.join(LOCK_FILE)).expect("lock file");
    let since = lock
        .holder()
        .since
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let host = me.host.clone().unwrap_or_else(|| "unknown".into());
    assert_eq!(
        text,
        format!(
            "pid: {}\nhost: {host}\nsince: {since}\n",
            std::process::id()
        )
    );

    // flock locks belong to an open file, so a second acquire in this
    // process is refused as another process's would be.
    match StateLock::try_acquire(&dir) {
        Err(e @ LockError::Held { .. }) => {
            let LockError::Held { holder, path } = &e else {
                unreachable!()
            };
            assert_eq!(path, &dir.join(LOCK_FILE));
            assert_eq!(holder.as_ref(), Some(lock.holder()));
            assert_eq!(
                e.to_string(),
                format!(
                    "state is locked by pid {} on {} since {since}",
                    std::process::id(),
                    me.host.as_deref().unwrap_or("an unknown host")
                )
            );
        }
        other => panic!("expected the lock to be held, got {other:?}"),
    }
    // A refused acquire leaves the holder's record alone.
    assert_eq!(
        std::fs::read_to_string(dir.join(LOCK_FILE)).expect("lock file"),
        text
    );

    // Waiting a little does not help while it is held, and waits that long.
    let t0 = Instant::now();
    let waited = StateLock::acquire(&dir, Duration::from_millis(300));
    assert!(matches!(waited, Err(LockError::Held { .. })), "{waited:?}");
    assert!(t0.elapsed() >= Duration::from_millis(300));

    // Released on drop: the file stays, empty, and the next acquire succeeds.
    drop(lock);
    assert_eq!(
        std::fs::read_to_string(dir.join(LOCK_FILE)).expect("lock file"),
        ""
    );
    let again = StateLock::try_acquire(&dir).expect("free after drop");
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn acquire_waits_for_the_holder_to_release() {
    let dir = state_dir("wait");
    let lock = StateLock::try_acquire(&dir).expect("the lock is free");
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        drop(lock);
    });
    let t0 = Instant::now();
    let second = StateLock::acquire(&dir, Duration::from_secs(10)).expect("acquired once released");
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!(second.holder().pid, std::process::id());
    release.join().expect("release thread");
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_state_directory_is_created() {
    let dir = state_dir("create").join("nested");
    let lock = StateLock::try_acquire(&dir).expect("lock");
    assert!(dir.join(LOCK_FILE).is_file());
    drop(lock);
    let _ = std::fs::remove_dir_all(dir.parent().unwrap_or(&dir));
}
