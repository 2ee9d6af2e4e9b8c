//! `engine`: flags plus glue.
//!
//! The real work lives in the library crates (`engine-core`, `engine-wasm`,
//! `engine-aws`); this binary parses what the user typed, resolves it into
//! those crates' objects, renders the result and maps it to an exit code.

mod check;
mod pipeline;
mod plugins;
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
    /// Evaluates every policy of DIR against a credential report and prints
    /// the findings and the plan the plugins chose, after the host's checks.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Directory of policy files (every *.toml in it, not recursive).
    pub dir: PathBuf,

    /// Read the credential report from this CSV file instead of the account.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Evaluate as of this instant (RFC 3339, e.g. 2026-11-28T00:00:00Z) instead of now.
    #[arg(long, value_name = "RFC3339", value_parser = parse_now)]
    pub now: Option<chrono::DateTime<chrono::Utc>>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A plan for people, grouped by policy.
    Human,
    /// One JSON document on stdout (schema in README.md).
    Json,
}

fn parse_now(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{e} (expected RFC 3339, e.g. 2026-11-28T00:00:00Z)"))
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let code = match cli.command {
        Command::Check(args) => check::run(&args),
    };
    ExitCode::from(code)
}
