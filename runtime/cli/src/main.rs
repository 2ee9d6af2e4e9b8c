//! `engine`: flags plus glue.
//!
//! The real work lives in the library crates (`engine-run`, the executor,
//! over `engine-core`, `engine-wasm`, `engine-aws` and `engine-journal`); this binary parses what the user typed, resolves it into
//! those crates' objects, renders the result and maps it to an exit code.

mod accounts;
mod apply;
mod check;
mod daemon;
mod event;
mod history;
mod plugin;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes are a contract (see README): 0 clean, 2 findings, 1 error, 78 policy error.
pub mod exit {
    pub const CLEAN: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const FINDINGS: u8 = 2;
    pub const POLICY_ERROR: u8 = 78;
}

#[derive(Debug, Parser)]
#[command(
    name = "engine",
    version,
    about = "Keep AWS IAM credentials compliant with CIS AWS Foundations 1.3 (unused credentials) and 1.4 (key rotation)",
    long_about = "Keep AWS IAM credentials compliant with CIS AWS Foundations 1.3 (credentials unused \
for 90 days or more) and 1.4 (access keys rotated every 90 days or less).\n\n\
Policies are TOML files in a directory; remediation is decided by sandboxed WebAssembly plugins \
and checked by the host before anything runs.",
    after_help = "Exit codes: 0 no findings, 2 findings, 1 runtime or input error, 78 policy error."
)]
struct Cli {
    /// More logging on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what the policies would do (a dry run: nothing changes).
    ///
    /// Evaluates every policy of DIR against the account's credential report
    /// (or a report file with --report) and prints the findings and the plan
    /// the plugins chose, after the host's checks.
    Check(CheckArgs),
    /// Carry out the plan: for policies in DIR, or exactly a plan saved by `check --out`.
    ///
    /// Shows the plan and asks for confirmation on a terminal (--auto-approve
    /// skips it; without a terminal it refuses unless --auto-approve is given).
    /// Every action is journaled before it is sent. `mode = "report"`
    /// policies never act.
    Apply(ApplyArgs),
    /// Run the policies on their schedules, until stopped (SIGTERM, SIGINT).
    ///
    /// Policies with `schedule = "..."` (cron with seconds, in UTC) run when
    /// due; policies due at the same instant share one run. `enforce`
    /// policies act as `apply --auto-approve` would, `report` policies only
    /// plan; every run is journaled as `scheduled`. A tick that comes due
    /// while a run is in progress is skipped, not queued. SIGHUP, or a change
    /// to the policy files (or a plugin file they name), reloads: the new
    /// configuration is validated whole and replaces the old one only if it
    /// loads. Serves /healthz, /readyz, /metrics, /v1/status and /v1/plan.
    Daemon(DaemonArgs),
    /// Handle one AWS Config compliance event, as the daemon does with its queue.
    ///
    /// A `Config Rules Compliance Change` event that turns an IAM user
    /// NON_COMPLIANT under a Config rule a policy of DIR declares runs those
    /// policies for that user alone, from fresh IAM reads (GetUser,
    /// GetLoginProfile, ListAccessKeys, GetAccessKeyLastUsed), with every
    /// check of `apply`, journaled as `event`. Other events (COMPLIANT,
    /// another rule, account or resource type) are ignored. For pipelines and
    /// a container-based Lambda.
    HandleEvent(HandleEventArgs),
    /// List recent runs and their actions from the journal.
    History(HistoryArgs),
    /// Write, inspect and try remediation plugins (Rust, Python, JavaScript).
    ///
    /// `new` writes a project that builds as it is, `inspect` shows what a
    /// .wasm file holds and whether this engine would load it, `test` runs it
    /// in the sandbox on a credential report and shows the host's verdict on
    /// each action it asks for.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
}

/// How to reach the account, and where the journal lives.
#[derive(Debug, Clone, clap::Args)]
pub struct AccountArgs {
    /// AWS profile (shared config/credentials files); default: the standard credential chain.
    #[arg(long, env = "AWS_PROFILE", hide_env_values = true)]
    pub profile: Option<String>,

    /// AWS region (IAM is global; this picks the partition and STS endpoint).
    #[arg(long, env = "AWS_REGION", hide_env_values = true)]
    pub region: Option<String>,

    /// Reuse the account's existing credential report if it is younger than this
    /// (AWS regenerates at most every 4 hours).
    #[arg(long, value_name = "DURATION", default_value = "4h", value_parser = humantime::parse_duration)]
    pub report_max_age: std::time::Duration,

    /// How many AWS calls may be in flight at once (key lookups, re-checks, writes).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,

    /// Attempts per AWS call, the first included: throttling, 5xx and network
    /// errors are retried with exponential backoff from 1s.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub max_attempts: u32,

    /// With an [accounts] table: how many accounts are planned and carried
    /// out at once (each with --concurrency calls of its own).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub account_concurrency: u16,

    #[command(flatten)]
    pub state: StateArgs,

    #[command(flatten)]
    pub plugin_cache: PluginCacheArgs,

    /// The one user to evaluate from fresh IAM reads instead of the
    /// credential report: `--user` of `check` and `apply`, copied here so
    /// that it travels with the account (not a flag of its own: the daemon
    /// has none).
    #[arg(skip)]
    pub user: Option<String>,
}

impl AccountArgs {
    /// What the executor needs to reach the account.
    pub fn options(&self) -> engine_run::AccountOptions {
        engine_run::AccountOptions {
            profile: self.profile.clone(),
            region: self.region.clone(),
            report_max_age: self.report_max_age,
            concurrency: self.concurrency,
            account_concurrency: self.account_concurrency,
            max_attempts: self.max_attempts,
            progress: true,
            observer: None,
            deactivated: std::sync::Arc::new(engine_run::live::deactivations(&self.state.state)),
        }
    }
}

/// Where compiled plugins are kept between runs.
#[derive(Debug, Clone, clap::Args)]
pub struct PluginCacheArgs {
    /// Keep the machine code of external plugins here, so an unchanged
    /// plugin is compiled once, not by every run (`off`: no cache).
    ///
    /// Default: $CACHE_DIRECTORY (systemd's CacheDirectory=), else
    /// $XDG_CACHE_HOME/engine/plugins, else ~/.cache/engine/plugins. Entries
    /// are named by the plugin's sha256 and the engine's version. The
    /// directory must belong to the user the engine runs as and not be
    /// writable by others, or it is not used. The shipped plugins are
    /// compiled into the binary and need no cache.
    #[arg(
        long,
        value_name = "DIR|off",
        env = "ENGINE_PLUGIN_CACHE",
        hide_env_values = true
    )]
    pub plugin_cache: Option<PathBuf>,
}

impl PluginCacheArgs {
    /// The cache to use, if any.
    pub fn cache(&self) -> Option<engine_wasm::cache::Cache> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let dir = match &self.plugin_cache {
            Some(p) if p.as_os_str() == "off" => return None,
            Some(p) => p.clone(),
            None => env("CACHE_DIRECTORY")
                // systemd may list several, separated by ':'; the first is ours.
                .map(|d| PathBuf::from(d.to_string_lossy().split(':').next().unwrap_or_default()))
                .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("engine/plugins")))
                .or_else(|| env("HOME").map(|d| d.join(".cache/engine/plugins")))?,
        };
        Some(engine_wasm::cache::Cache::new(dir))
    }
}

/// Where the journal lives.
#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// State directory holding the journal.
    #[arg(
        long,
        value_name = "DIR",
        default_value = ".engine",
        env = "ENGINE_STATE",
        hide_env_values = true
    )]
    pub state: PathBuf,

    /// How long the journal keeps finished runs (e.g. 90d, 26w; 0 or off: forever).
    ///
    /// Runs that finished longer ago are deleted with their findings and
    /// actions when `check`, `apply` or a daemon run opens the journal, or by `engine
    /// history --prune`. A run still running, or with an action that has no
    /// recorded result, is never deleted.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "90d",
        env = "ENGINE_JOURNAL_RETENTION",
        hide_env_values = true,
        value_parser = history::parse_retention
    )]
    pub journal_retention: std::time::Duration,
}

/// Where the credentials come from: the account, or a report file.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Read the credential report from this CSV file instead of the account.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Evaluate as of this instant (RFC 3339, e.g. 2026-11-28T00:00:00Z) instead of now.
    #[arg(long, value_name = "RFC3339", value_parser = parse_now)]
    pub now: Option<chrono::DateTime<chrono::Utc>>,

    #[command(flatten)]
    pub account: AccountArgs,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Directory of policy files (every *.toml in it, not recursive).
    pub dir: PathBuf,

    #[command(flatten)]
    pub source: SourceArgs,

    /// Evaluate only this IAM user, from fresh IAM reads instead of the credential report.
    ///
    /// Reads GetUser, GetLoginProfile, ListAccessKeys and GetAccessKeyLastUsed
    /// for this user now (no credential report is generated or read), and
    /// takes each key id straight from ListAccessKeys. A user that does not
    /// exist is an error (exit 1).
    #[arg(long, value_name = "NAME", conflicts_with = "report", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub user: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,

    /// Also save the plan as JSON to this file, for `engine apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// A policy directory (plan and apply now) or a plan file saved by `engine check --out`.
    pub target: PathBuf,

    #[command(flatten)]
    pub account: AccountArgs,

    /// Evaluate only this IAM user, from fresh IAM reads instead of the credential report.
    ///
    /// Reads GetUser, GetLoginProfile, ListAccessKeys and GetAccessKeyLastUsed
    /// for this user now (no credential report is generated or read), and
    /// takes each key id straight from ListAccessKeys. A user that does not
    /// exist is an error (exit 1). Not with a saved plan file.
    #[arg(long, value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub user: Option<String>,

    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,

    /// Refuse a saved plan older than this: the account has moved on since.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub plan_max_age: std::time::Duration,

    /// How long to wait for another engine's lock on the state directory
    /// (e.g. 30s, 5m); 0: fail at once.
    ///
    /// `apply` holds `<state>/engine.lock` for its whole run: one process
    /// acts on a state directory at a time.
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = humantime::parse_duration)]
    pub lock_timeout: std::time::Duration,

    /// Output format of the results.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 stopped cleanly, 1 runtime error (state locked, address in use, shutdown timeout exceeded), 78 policy error at start."
)]
pub struct DaemonArgs {
    /// Directory of policy files (every *.toml in it, not recursive).
    pub dir: PathBuf,

    #[command(flatten)]
    pub account: AccountArgs,

    /// Where to serve the HTTP endpoints (health, readiness, metrics, status, plan).
    ///
    /// Loopback by default. Any other address needs --token-file: /v1/*
    /// shows user names and requires the bearer token; /healthz, /readyz and
    /// /metrics stay open.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,

    /// File holding the bearer token /v1/* requires (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Log format on stderr: text, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// On SIGTERM/SIGINT, how long to wait for writes already sent before
    /// exiting anyway (exit 1).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: std::time::Duration,

    /// How long to wait for another engine's lock on the state directory; 0: fail at once.
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = humantime::parse_duration)]
    pub lock_timeout: std::time::Duration,

    /// The SQS queue EventBridge delivers AWS Config compliance events to
    /// (wins over `events_queue` in the policies' [aws_config]).
    ///
    /// A NON_COMPLIANT event for an IAM user under a Config rule a policy
    /// declares runs that policy for that user alone, from fresh IAM reads.
    /// A message is deleted once its run is journaled; malformed ones are
    /// left for the queue's redrive policy.
    #[arg(long, value_name = "URL")]
    pub events_queue: Option<String>,

    /// How long a received event stays hidden from other consumers while it
    /// is handled (extended while its run lasts); a message that could not
    /// be handled comes back after this, doubled each time.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_visibility)]
    pub events_visibility: std::time::Duration,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 the event was handled (a run for the user that succeeded, or nothing to do), 1 the event is malformed or its run failed, 78 policy error; with --dry-run, 2 when the user has findings."
)]
pub struct HandleEventArgs {
    /// Directory of policy files (every *.toml in it, not recursive).
    pub dir: PathBuf,

    /// The event: a file holding one EventBridge event (JSON), or - for standard input.
    pub event: PathBuf,

    #[command(flatten)]
    pub account: AccountArgs,

    /// Only show the plan for the event's user: nothing is carried out or journaled.
    #[arg(long)]
    pub dry_run: bool,

    /// How long to wait for another engine's lock on the state directory; 0: fail at once.
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = humantime::parse_duration)]
    pub lock_timeout: std::time::Duration,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

fn parse_account_id(s: &str) -> Result<String, String> {
    if engine_core::policy::valid_account_id(s) {
        Ok(s.to_string())
    } else {
        Err("an AWS account id is 12 digits".into())
    }
}

fn parse_visibility(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < std::time::Duration::from_secs(1) || d > std::time::Duration::from_secs(12 * 3600) {
        return Err("must be between 1s and 12h (SQS's limits)".into());
    }
    Ok(d)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event, for people.
    Text,
    /// One JSON object per line (run, policy, user, key_id, action, outcome fields).
    Json,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub state: StateArgs,

    /// How many runs to show, newest first.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,

    /// Only runs about this AWS account (12 digits).
    #[arg(long, value_name = "ID", value_parser = parse_account_id)]
    pub account: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,

    /// Instead of listing runs, delete those older than --journal-retention
    /// and print what was removed.
    ///
    /// Removes runs that finished before the cutoff, with their findings and
    /// actions; never a run still running or with an action that has no
    /// recorded result.
    #[arg(long)]
    pub prune: bool,

    /// With --prune: compute the cutoff as of this instant (RFC 3339) instead of now.
    #[arg(long, value_name = "RFC3339", value_parser = parse_now, requires = "prune")]
    pub now: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A plan for people, grouped by policy.
    Human,
    /// One JSON document on stdout (schema in README.md).
    Json,
}

pub(crate) fn parse_now(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{e} (expected RFC 3339, e.g. 2026-11-28T00:00:00Z)"))
}

fn init_logging(verbose: u8, daemon: Option<LogFormat>) {
    // A daemon's log is its record: info by default.
    let default = match (verbose, daemon.is_some()) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    // aws-config logs a refused AssumeRole of its own (a profile's
    // `role_arn`) as a warning; the engine reports the error itself.
    let default = format!("{default},aws_config::sts=error");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    if let Some(format) = daemon {
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false);
        match format {
            LogFormat::Json => builder.json().flatten_event(true).init(),
            LogFormat::Text => builder
                .fmt_fields(render::LogFields)
                .with_ansi(false)
                .init(),
        }
        return;
    }
    // Colours on stderr as on stdout (anstream): NO_COLOR, CLICOLOR(_FORCE), a terminal.
    let ansi = anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never;
    tracing_subscriber::fmt()
        // Log lines carry plugin output and user names: escape every field value.
        .fmt_fields(render::LogFields)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_ansi(ansi)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = match &cli.command {
        Command::Daemon(args) => Some(args.log_format),
        _ => None,
    };
    init_logging(cli.verbose, daemon);
    if let Command::Daemon(args) = &cli.command {
        return ExitCode::from(daemon::run(args));
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Check(mut args) => {
                args.source.account.user = args.user.clone();
                check::run(&args).await
            }
            Command::Apply(mut args) => {
                if args.user.is_some() && args.target.is_file() {
                    eprintln!(
                        "error: --user cannot be used with a saved plan ({}): a saved plan is applied as it was made; pass a policy directory to plan and apply for one user",
                        args.target.display()
                    );
                    return exit::ERROR;
                }
                args.account.user = args.user.clone();
                apply::run(&args).await
            }
            Command::History(args) => history::run(&args),
            Command::Plugin(cmd) => plugin::run(&cmd).await,
            Command::HandleEvent(args) => event::run(&args).await,
            Command::Daemon(_) => exit::ERROR,
        }
    });
    ExitCode::from(code)
}
