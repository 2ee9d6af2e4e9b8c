//! `engine daemon`: flags to [`engine_daemon::service`], and exit codes.
//!
//! Before anything listens or runs: the configuration is loaded whole (exit
//! 78 with every diagnostic when it does not), `/v1/*` gets its token when
//! the address is not loopback, and the state lock is taken (exit 1 when
//! another engine holds it). Unfinished actions of an earlier process are
//! then reported, once.

use std::sync::Arc;

use engine_daemon::config::{Config, ConfigError};
use engine_daemon::http;
use engine_daemon::service::{self, Signals, Stopped};

use crate::{DaemonArgs, LogFormat, check, exit};

/// Signals first, then load, token, lock, listen; then run.
pub fn run(args: &DaemonArgs) -> u8 {
    // Plugins run on the runtime's threads: two workers keep the HTTP
    // endpoints answering while a plugin decides.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return exit::ERROR;
        }
    };
    // Before anything slow: a SIGHUP or SIGTERM during start-up must not
    // kill the process (SIGHUP's default action).
    let signals = match runtime.block_on(async { Signals::take() }) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return exit::ERROR;
        }
    };
    tracing::info!(dir = %args.dir.display(), "loading the configuration");
    let config = match Config::load(&args.dir, args.account.plugin_cache.cache()) {
        Ok(c) => c,
        Err(e) => {
            report_config_error(args, &e);
            return exit::POLICY_ERROR;
        }
    };
    if let Some(url) = &args.events_queue
        && let Some(why) = engine_core::policy::queue_url_problem(url)
    {
        tracing::error!("--events-queue {url:?} is not an SQS queue URL: {why}");
        return exit::ERROR;
    }
    let token = match (&args.token_file, http::is_loopback(&args.listen)) {
        (Some(path), _) => match http::read_token_file(path) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!("--token-file: {e}");
                return exit::ERROR;
            }
        },
        (None, true) => None,
        (None, false) => {
            tracing::error!(
                "refusing to listen on {}: it is not a loopback address, and /v1/* shows user names; pass --token-file FILE (a bearer token, mode 0600) or listen on 127.0.0.1",
                args.listen
            );
            return exit::ERROR;
        }
    };
    let state = &args.account.state.state;
    let lock = match runtime.block_on(wait_for_lock(state, args.lock_timeout)) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            tracing::info!("stopped while waiting for the state lock: nothing was started");
            return exit::CLEAN;
        }
        Err(e) => {
            tracing::error!("{e}; nothing was started");
            return exit::ERROR;
        }
    };
    match args
        .account
        .state
        .open_journal()
        .and_then(|mut j| j.take_unfinished())
    {
        Ok(open) => {
            for a in open {
                tracing::warn!(
                    run = a.run_id,
                    user = %a.user,
                    key_id = a.key_id.as_deref().unwrap_or("-"),
                    action = %a.action,
                    "run {} journaled {} on {} {} at {} but recorded no result: the engine stopped mid-apply; the next run re-checks the account before acting (recorded as unknown)",
                    a.run_id, a.action, a.user, a.credential, a.intent_at
                );
            }
        }
        Err(e) => {
            tracing::error!(
                "cannot open the journal in {}: {e}; nothing was started",
                state.display()
            );
            return exit::ERROR;
        }
    }
    let listener = match std::net::TcpListener::bind(args.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {}: {e}; nothing was started", args.listen);
            return exit::ERROR;
        }
    };
    let opts = service::Options {
        state: state.clone(),
        journal_retention: args.account.state.journal_retention,
        account: args.account.options(),
        shutdown_timeout: args.shutdown_timeout,
        debounce: std::time::Duration::from_millis(500),
        token,
        events_queue: args.events_queue.clone(),
        events_visibility: args.events_visibility,
    };
    tracing::info!(
        dir = %config.dir.display(),
        state = %state.display(),
        lock = %lock.path().display(),
        version = env!("CARGO_PKG_VERSION"),
        "daemon starting"
    );
    let stopped = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| format!("cannot listen: {e}"))?;
        service::run(opts, Arc::clone(&config), listener, signals).await
    });
    // The runtime is dropped before the lock: nothing acts after it is released.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    drop(lock);
    match stopped {
        Ok(Stopped::Clean) => exit::CLEAN,
        Ok(Stopped::TimedOut) => exit::ERROR,
        Err(e) => {
            tracing::error!("{e}");
            exit::ERROR
        }
    }
}

/// [`engine_journal::StateLock::acquire`] with `timeout` (`--lock-timeout`),
/// waiting on the runtime so that SIGTERM or SIGINT ends the wait: the
/// signals taken first would otherwise be held, unanswered, until it ends.
/// `None` when stopped meanwhile.
async fn wait_for_lock(
    state: &std::path::Path,
    timeout: std::time::Duration,
) -> Result<Option<engine_journal::StateLock>, engine_journal::LockError> {
    use tokio::signal::unix::{SignalKind, signal};
    // More listeners: the daemon's own see these signals all the same.
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut said = false;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match engine_journal::StateLock::try_acquire(state) {
            Err(e @ engine_journal::LockError::Held { .. }) if !left.is_zero() => {
                if !said {
                    tracing::info!(
                        "{e}: waiting up to {} for it (--lock-timeout)",
                        humantime::format_duration(timeout)
                    );
                    said = true;
                }
            }
            taken => return taken.map(Some),
        }
        tokio::select! {
            () = tokio::time::sleep(engine_journal::POLL_INTERVAL.min(left)) => {}
            Some(()) = received(&mut term) => return Ok(None),
            Some(()) = received(&mut int) => return Ok(None),
        }
    }
}

/// The next delivery of `signal`; never, without a listener.
async fn received(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

fn report_config_error(args: &DaemonArgs, e: &ConfigError) {
    match (e, args.log_format) {
        (ConfigError::Policies(errors), LogFormat::Text) => check::print_policy_errors(errors),
        _ => {
            let diagnostics = e.diagnostics();
            for d in &diagnostics {
                tracing::error!("{}", d.trim_end());
            }
            tracing::error!(
                errors = diagnostics.len(),
                "the policy directory {} does not load; nothing was started",
                args.dir.display()
            );
        }
    }
}
