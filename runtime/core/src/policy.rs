//! Policies: the TOML a user writes, validated into a [`PolicySet`].
//!
//! Validation runs in two phases, the way cargo-deny does it: the files are
//! parsed into spanned TOML tables, then every table is checked and *every*
//! problem becomes a diagnostic with file, line, column and a snippet, so a
//! user fixes a whole directory in one pass. Nothing is planned from a
//! directory with any error.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use codespan_reporting::diagnostic::{Diagnostic, Label};
use codespan_reporting::files::SimpleFiles;
use globset::{GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::config_rule::{ConfigRuleDecl, ManagedRule};
use crate::plan::ActionKind;

/// The CIS rule a policy evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Rule {
    /// Credentials unused for `max_unused_days` or more.
    #[serde(rename = "cis-1.3")]
    Cis13,
    /// Active access keys not rotated for more than `max_key_age_days`.
    #[serde(rename = "cis-1.4")]
    Cis14,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Cis13 => "cis-1.3",
            Rule::Cis14 => "cis-1.4",
        }
    }

    /// How many credentials of a row the rule looks at: at most this many
    /// findings per user.
    pub fn slots(self) -> usize {
        match self {
            Rule::Cis13 => 3,
            Rule::Cis14 => 2,
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a policy may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Plan and (under `apply` or the daemon) act.
    Enforce,
    /// Plan and show, never act, even under `apply`.
    Report,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Report => "report",
        }
    }
}

/// The default threshold of both rules, in days.
pub const DEFAULT_THRESHOLD_DAYS: u32 = 90;
/// The plugin a policy uses when it names no `action`.
pub const DEFAULT_ACTION: &str = "delete-expired-keys";
/// Default wall-clock limit of one plugin call.
pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
/// Default linear-memory limit of a plugin.
pub const DEFAULT_MEMORY_MB: u64 = 64;

/// What a plugin may cost to compile, checked before it is compiled: the
/// caps that keep a hostile file from making the compiler spend minutes and
/// gigabytes. The defaults fit compiled languages (Rust, C, Go) with a wide
/// margin; a plugin that carries an interpreter (Python, JavaScript) needs
/// them raised in its `[plugin.NAME]` table, which `engine plugin inspect`
/// prints ready to paste.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadBounds {
    /// `max_file_mb`: size of the `.wasm` file.
    pub max_file_mb: u64,
    /// `max_function_kb`: size of its largest function body.
    pub max_function_kb: u64,
    /// `max_functions`: function bodies, all its modules together.
    pub max_functions: u64,
}

impl LoadBounds {
    pub const DEFAULT: LoadBounds = LoadBounds {
        max_file_mb: 8,
        max_function_kb: 128,
        max_functions: 20_000,
    };
    /// The most a policy may raise them to.
    pub const CEILING: LoadBounds = LoadBounds {
        max_file_mb: 256,
        max_function_kb: 8192,
        max_functions: 1_000_000,
    };
}

impl Default for LoadBounds {
    fn default() -> LoadBounds {
        LoadBounds::DEFAULT
    }
}

/// The plugins shipped inside the binary and the action kinds each is granted by default.
pub const BUILTIN_PLUGINS: &[(&str, &[ActionKind])] = &[
    (
        "delete-expired-keys",
        &[ActionKind::DeleteAccessKey, ActionKind::None],
    ),
    (
        "deactivate-unused-credentials",
        &[
            ActionKind::DeactivateAccessKey,
            ActionKind::DeleteLoginProfile,
            ActionKind::None,
        ],
    ),
    (
        "staged-key-removal",
        &[
            ActionKind::DeactivateAccessKey,
            ActionKind::DeleteAccessKey,
            ActionKind::None,
        ],
    ),
];

/// What an external plugin is granted when its `[plugin.NAME]` has no `allow`:
/// only the reversible action. Deletions must be granted explicitly.
pub const EXTERNAL_DEFAULT_ALLOW: &[ActionKind] =
    &[ActionKind::DeactivateAccessKey, ActionKind::None];

/// Where a policy or plugin table was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    /// The name again, shared by every finding of the policy.
    shared_name: std::sync::Arc<str>,
    pub rule: Rule,
    /// cis-1.4: a key older than this many days is a finding.
    pub max_key_age_days: u32,
    /// cis-1.3: a credential unused for this many days or more is a finding.
    pub max_unused_days: u32,
    /// The plugin that decides what to do.
    pub action: String,
    pub mode: Mode,
    /// The patterns as written.
    pub exempt_users: Vec<String>,
    exempt: GlobSet,
    /// Access key ids never acted on (`protect_access_keys`): e.g. the keys of
    /// the user whose role the engine assumes, which it cannot see itself.
    pub protect_access_keys: Vec<String>,
    /// Blast radius: a plan with more changing actions is refused whole.
    pub max_actions_per_run: Option<u32>,
    /// A credential that crosses the threshold within this many days is an
    /// upcoming finding (0: none).
    pub warn_before_days: u32,
    /// Keys this policy's plugin deactivated come back to it, while
    /// inactive, as findings of stage `deactivated` (so it can delete them
    /// after a grace period).
    pub follow_deactivated: bool,
    /// Cron expression (with seconds) for the daemon, as written.
    pub schedule: Option<String>,
    /// Free string parameters handed to the plugin.
    pub params: BTreeMap<String, String>,
    pub origin: Origin,
    /// The AWS Config managed rule that mirrors this policy (`aws_config_rule`).
    pub aws_config_rule: Option<ConfigRuleDecl>,
    /// Where `action` was written (the policy name when it was not).
    action_span: Option<Range<usize>>,
    /// Where `aws_config_rule` was written.
    config_rule_span: Option<Range<usize>>,
}

impl Policy {
    /// The threshold of this policy's rule, in days.
    pub fn threshold_days(&self) -> u32 {
        match self.rule {
            Rule::Cis13 => self.max_unused_days,
            Rule::Cis14 => self.max_key_age_days,
        }
    }

    /// The name, shared (cheap to clone into findings).
    pub fn shared_name(&self) -> std::sync::Arc<str> {
        self.shared_name.clone()
    }

    /// Whether `user` matches one of the policy's `exempt_users` patterns.
    pub fn is_exempt(&self, user: &str) -> bool {
        self.exempt.is_match(user)
    }
}

/// Where a plugin's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// Embedded in the `engine` binary.
    Builtin,
    /// A `.wasm` component on disk, pinned by its sha256 (lowercase hex).
    File { path: PathBuf, sha256: String },
}

/// A plugin's configuration (`[plugin.NAME]`, or the defaults of a builtin).
#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub name: String,
    pub source: PluginSource,
    pub timeout_ms: u64,
    pub memory_mb: u64,
    /// Caps checked before the plugin is compiled.
    pub bounds: LoadBounds,
    /// Action kinds the plugin may ask for.
    pub allow: Vec<ActionKind>,
    pub origin: Option<Origin>,
}

/// Every policy and plugin of a directory, validated as a whole.
#[derive(Debug, Clone)]
pub struct PolicySet {
    /// Sorted by name.
    pub policies: Vec<Policy>,
    /// Every plugin some policy uses, by name.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// sha256 (hex) of the policy files' names and texts.
    pub digest: String,
    /// The `[aws_config]` table: where the Config rules live.
    pub aws_config: Option<AwsConfigSettings>,
    /// The `[accounts]` table: the accounts a run covers (`None`: the
    /// account of the engine's credentials).
    pub accounts: Option<AccountsSettings>,
    /// The `[security_hub]` table: export findings (`None`: no export).
    pub security_hub: Option<SecurityHubSettings>,
    /// The `[notifications]` table (`None`: messages are shown, not sent).
    pub notifications: Option<NotificationSettings>,
}

/// Which accounts a run covers (the top-level `[accounts]` table). Without
/// the table, the account the engine's credentials are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountsSettings {
    pub select: AccountSelect,
    /// Accounts and organizational units left out (`exclude`).
    pub exclude: Vec<String>,
    /// The role assumed in each account: `arn:aws:iam::ACCOUNT:role/ROLE`
    /// (`role`, a name with an optional path). The engine's own account is
    /// reached with its own credentials when it is a target.
    pub role: String,
    /// `external_id`, passed to `AssumeRole`.
    pub external_id: Option<String>,
    pub origin: Origin,
}

/// `ids = [...]`, or `organization = true` with optional OUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountSelect {
    /// These account ids.
    Ids(Vec<String>),
    /// Every ACTIVE account of the organization, or only those under these
    /// organizational units (recursively; `organizational_units`).
    Organization { units: Vec<String> },
}

impl AccountsSettings {
    /// The ARN of the role to assume in `account`.
    pub fn role_arn(&self, account: &str) -> String {
        format!("arn:aws:iam::{account}:role/{}", self.role)
    }
}

/// Whether `s` is an AWS account id (12 digits).
pub fn valid_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `s` is an organizational unit id (`ou-xxxx-yyyyyyyy`) or an
/// organization root id (`r-xxxx`).
pub fn valid_ou_id(s: &str) -> bool {
    let lower = |p: &str, min: usize, max: usize| {
        (min..=max).contains(&p.len())
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match s.split('-').collect::<Vec<_>>().as_slice() {
        ["ou", root, unit] => lower(root, 4, 32) && lower(unit, 8, 32),
        ["r", root] => lower(root, 4, 32),
        _ => false,
    }
}

/// Where findings are exported to AWS Security Hub (`[security_hub]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityHubSettings {
    /// The region of the Security Hub findings are imported into.
    pub region: String,
    /// `import_into`: which account's Security Hub.
    pub import_into: ImportInto,
    pub origin: Origin,
}

/// The `[notifications]` table: where the messages plugins ask to send
/// (`notify`) and the run summaries go.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationSettings {
    /// IAM user tags naming a user's owner, in order: the first one the user
    /// has is the recipient (an email address for SES, anything for a
    /// webhook or SNS).
    pub owner_tags: Vec<String>,
    /// The channel messages to a tagged owner go to.
    pub owner_channel: Option<String>,
    /// The channel messages about users without an owner tag go to.
    pub fallback_channel: Option<String>,
    /// The channels that get one summary per run that did or tried something.
    pub summary_channels: Vec<String>,
    pub channels: BTreeMap<String, Channel>,
    pub origin: Origin,
}

/// Where a message is sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Channel {
    /// An HTTP POST of a JSON body, signed with HMAC-SHA256 when a secret is set.
    Webhook {
        url: String,
        /// The environment variable holding the HMAC key (never the key itself).
        secret_env: Option<String>,
        /// `{"text": ...}` for Slack-compatible incoming webhooks.
        slack: bool,
        timeout_ms: u64,
        attempts: u32,
    },
    /// A message published to an SNS topic (region from its ARN).
    Sns { topic_arn: String },
    /// An email sent with SES (v2).
    Ses {
        region: String,
        from: String,
        /// Recipients of messages with no owner address (fallback, summaries).
        to: Vec<String>,
    },
}

impl Channel {
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Webhook { .. } => "webhook",
            Channel::Sns { .. } => "sns",
            Channel::Ses { .. } => "ses",
        }
    }
}

/// Which account's Security Hub receives the findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportInto {
    /// The account the engine runs in (a delegated administrator, for many
    /// accounts): every account's findings are imported there.
    EngineAccount,
    /// Each account's own Security Hub, with that account's credentials.
    EachAccount,
}

/// The top-level `[aws_config]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsConfigSettings {
    /// The region of the Config rules (IAM is global, Config rules are regional).
    pub region: String,
    /// `events_queue`: the URL of the SQS queue EventBridge delivers the
    /// region's Config compliance events to, for the daemon.
    pub events_queue: Option<String>,
    pub origin: Origin,
}

impl PolicySet {
    pub fn plugin(&self, name: &str) -> Option<&PluginConfig> {
        self.plugins.get(name)
    }
}

/// All the problems of a policy directory, ready to render.
pub struct PolicyErrors {
    pub files: SimpleFiles<String, String>,
    pub diagnostics: Vec<Diagnostic<usize>>,
}

impl std::fmt::Debug for PolicyErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyErrors")
            .field("diagnostics", &self.diagnostics)
            .finish()
    }
}

impl PolicyErrors {
    /// Render every diagnostic as plain text (no colour).
    pub fn render_plain(&self) -> String {
        let config = codespan_reporting::term::Config::default();
        let mut out = String::new();
        for d in &self.diagnostics {
            if let Ok(s) = codespan_reporting::term::emit_into_string(&config, &self.files, d) {
                out.push_str(&s);
            }
        }
        out
    }

    /// Each diagnostic rendered as plain text (no colour), in order.
    pub fn rendered(&self) -> Vec<String> {
        let config = codespan_reporting::term::Config::default();
        self.diagnostics
            .iter()
            .map(|d| {
                codespan_reporting::term::emit_into_string(&config, &self.files, d)
                    .unwrap_or_else(|_| d.message.clone())
            })
            .collect()
    }

    /// The stable codes of the diagnostics, in order.
    pub fn codes(&self) -> Vec<&str> {
        self.diagnostics
            .iter()
            .filter_map(|d| d.code.as_deref())
            .collect()
    }
}

/// A diagnostic being built, before it has a file id.
struct Problem {
    code: &'static str,
    message: String,
    labels: Vec<(usize, Range<usize>, String)>,
    notes: Vec<String>,
}

impl Problem {
    fn new(code: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            code,
            message: message.into(),
            labels: Vec::new(),
            notes: Vec::new(),
        }
    }
    fn at(mut self, file: usize, span: Range<usize>, label: impl Into<String>) -> Problem {
        self.labels.push((file, span, label.into()));
        self
    }
    fn note(mut self, note: impl Into<String>) -> Problem {
        self.notes.push(note.into());
        self
    }
    fn into_diagnostic(self) -> Diagnostic<usize> {
        let labels = self
            .labels
            .into_iter()
            .enumerate()
            .map(|(i, (file, span, msg))| {
                if i == 0 {
                    Label::primary(file, span).with_message(msg)
                } else {
                    Label::secondary(file, span).with_message(msg)
                }
            })
            .collect();
        Diagnostic::error()
            .with_code(self.code)
            .with_message(self.message)
            .with_labels(labels)
            .with_notes(self.notes)
    }
}

/// The source of one policy file.
pub struct PolicyFile {
    pub path: PathBuf,
    pub text: String,
}

/// Read every `*.toml` of `dir` (not recursive), sorted by name.
pub fn read_dir(dir: &Path) -> Result<Vec<PolicyFile>, std::io::Error> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            Ok(PolicyFile { path, text })
        })
        .collect()
}

/// Load and validate a policy directory.
pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyErrors> {
    match read_dir(dir) {
        Ok(files) if files.is_empty() => Err(single_error(
            "no-policies",
            format!(
                "no policy files (*.toml) in {}: nothing to check",
                dir.display()
            ),
        )),
        Ok(files) => validate(files),
        Err(e) => Err(single_error(
            "unreadable",
            format!("cannot read policy directory {}: {e}", dir.display()),
        )),
    }
}

fn single_error(code: &'static str, message: String) -> PolicyErrors {
    PolicyErrors {
        files: SimpleFiles::new(),
        diagnostics: vec![Problem::new(code, message).into_diagnostic()],
    }
}

/// Validate policy files as one set: every problem of every file is reported.
pub fn validate(files: Vec<PolicyFile>) -> Result<PolicySet, PolicyErrors> {
    let mut db = SimpleFiles::new();
    let mut problems = Vec::new();
    let mut policies: Vec<(Policy, usize, Range<usize>)> = Vec::new();
    let mut plugins: Vec<(PluginConfig, usize, Range<usize>)> = Vec::new();
    let mut declared = Declared::default();

    let digest = digest(&files);
    let ids: Vec<usize> = files
        .iter()
        .map(|f| db.add(f.path.display().to_string(), f.text.clone()))
        .collect();
    for (file, id) in files.iter().zip(ids) {
        let mut ctx = FileCtx {
            id,
            path: &file.path,
            text: &file.text,
            problems: &mut problems,
        };
        let (doc, errors) = DeTable::parse_recoverable(&file.text);
        if !errors.is_empty() {
            for e in errors {
                let span = e.span().unwrap_or(0..0);
                ctx.problems.push(
                    Problem::new(
                        "toml-syntax",
                        format!("invalid TOML: {}", e.message().trim()),
                    )
                    .at(id, span, "here"),
                );
            }
            continue;
        }
        ctx.document(doc.get_ref(), &mut policies, &mut plugins, &mut declared);
    }

    // Duplicate names across (and within) files, valid tables or not.
    let mut by_name: BTreeMap<&str, Vec<(usize, Range<usize>)>> = BTreeMap::new();
    for (name, id, span) in &declared.policies {
        by_name.entry(name).or_default().push((*id, span.clone()));
    }
    for (name, places) in &by_name {
        if places.len() > 1 {
            let mut pr = Problem::new(
                "duplicate-policy",
                format!("policy {name:?} is defined {} times", places.len()),
            );
            for (i, (id, span)) in places.iter().enumerate() {
                pr = pr.at(
                    *id,
                    span.clone(),
                    if i == 0 {
                        "first defined here"
                    } else {
                        "defined again here"
                    },
                );
            }
            problems.push(pr.note("policy names must be unique across the directory"));
        }
    }
    let mut plugin_map: BTreeMap<String, PluginConfig> = BTreeMap::new();
    let mut plugin_places: BTreeMap<String, (usize, Range<usize>)> = BTreeMap::new();
    for (p, id, span) in plugins {
        if let Some((first_id, first_span)) = plugin_places.get(&p.name) {
            problems.push(
                Problem::new(
                    "duplicate-plugin",
                    format!("plugin {:?} is configured twice", p.name),
                )
                .at(*first_id, first_span.clone(), "first configured here")
                .at(id, span, "configured again here"),
            );
            continue;
        }
        plugin_places.insert(p.name.clone(), (id, span));
        plugin_map.insert(p.name.clone(), p);
    }
    // Every policy's action must name a known plugin.
    for (p, id, _) in &policies {
        if plugin_map.contains_key(&p.action) || declared.plugins.contains(&p.action) {
            continue;
        }
        let span = p.action_span.clone().unwrap_or(0..0);
        match BUILTIN_PLUGINS.iter().find(|(n, _)| *n == p.action) {
            Some((name, allow)) => {
                plugin_map.insert(
                    name.to_string(),
                    PluginConfig {
                        name: name.to_string(),
                        source: PluginSource::Builtin,
                        timeout_ms: DEFAULT_TIMEOUT_MS,
                        memory_mb: DEFAULT_MEMORY_MB,
                        bounds: LoadBounds::DEFAULT,
                        allow: allow.to_vec(),
                        origin: None,
                    },
                );
            }
            None => problems.push(
                Problem::new(
                    "unknown-plugin",
                    format!("policy {:?} uses unknown plugin {:?}", p.name, p.action),
                )
                .at(*id, span, "no such plugin")
                .note(format!(
                    "builtin plugins: {}; an external plugin needs a [plugin.{}] table with source and sha256",
                    BUILTIN_PLUGINS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", "),
                    p.action
                )),
            ),
        }
    }

    // One of each top-level table; the AWS Config table is required by any
    // declared rule, and one policy per Config rule name (below).
    let aws_config = only_one(
        &mut problems,
        &declared.aws_config,
        "duplicate-aws-config",
        "aws_config",
    );
    let accounts = only_one(
        &mut problems,
        &declared.accounts,
        "duplicate-accounts",
        "accounts",
    );
    let security_hub = only_one(
        &mut problems,
        &declared.security_hub,
        "duplicate-security-hub",
        "security_hub",
    );
    let notifications = only_one(
        &mut problems,
        &declared.notifications,
        "duplicate-notifications",
        "notifications",
    );
    if declared.aws_config.is_empty()
        && let Some((p, id, _)) = policies
            .iter()
            .find(|(p, _, _)| p.aws_config_rule.is_some())
    {
        let n = policies
            .iter()
            .filter(|(p, _, _)| p.aws_config_rule.is_some())
            .count();
        problems.push(
            Problem::new(
                "missing-aws-config",
                format!(
                    "policy {:?}{} declares an AWS Config rule, but no [aws_config] table says in which region",
                    p.name,
                    if n > 1 { format!(" (and {} more)", n - 1) } else { String::new() }
                ),
            )
            .at(*id, p.config_rule_span.clone().unwrap_or(0..0), "declared here")
            .note("add a top-level table to one policy file: [aws_config] region = \"eu-west-1\" (Config rules are regional)"),
        );
    }
    let mut rule_names: BTreeMap<&str, Vec<(usize, Range<usize>)>> = BTreeMap::new();
    for (p, id, _) in &policies {
        if let Some(d) = &p.aws_config_rule {
            rule_names
                .entry(d.name.as_str())
                .or_default()
                .push((*id, p.config_rule_span.clone().unwrap_or(0..0)));
        }
    }
    for (name, places) in &rule_names {
        if places.len() > 1 {
            let mut pr = Problem::new(
                "duplicate-aws-config-rule",
                format!(
                    "AWS Config rule {name:?} is declared by {} policies",
                    places.len()
                ),
            );
            for (i, (id, span)) in places.iter().enumerate() {
                pr = pr.at(
                    *id,
                    span.clone(),
                    if i == 0 {
                        "first declared here"
                    } else {
                        "declared again here"
                    },
                );
            }
            problems.push(pr.note("set a distinct `aws_config_rule_name` in each policy"));
        }
    }

    if !problems.is_empty() {
        let mut diagnostics: Vec<(usize, usize, Diagnostic<usize>)> = problems
            .into_iter()
            .map(|p| {
                let key = p
                    .labels
                    .first()
                    .map(|(f, s, _)| (*f, s.start))
                    .unwrap_or((0, 0));
                (key.0, key.1, p.into_diagnostic())
            })
            .collect();
        diagnostics.sort_by_key(|(f, s, _)| (*f, *s));
        return Err(PolicyErrors {
            files: db,
            diagnostics: diagnostics.into_iter().map(|(_, _, d)| d).collect(),
        });
    }
    let mut policies: Vec<Policy> = policies.into_iter().map(|(p, _, _)| p).collect();
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(PolicySet {
        policies,
        plugins: plugin_map,
        digest,
        aws_config,
        accounts,
        security_hub,
        notifications,
    })
}

/// sha256 (hex) over the files' names and texts, in order. External plugins
/// are pinned by sha256 in those texts, so a changed plugin changes it too.
fn digest(files: &[PolicyFile]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for f in files {
        let name = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        for part in [name.as_bytes(), f.text.as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Every table name seen, valid or not: duplicates are found among all of
/// them, and a broken `[plugin.NAME]` does not also make every policy using
/// it an "unknown plugin".
#[derive(Default)]
struct Declared {
    plugins: Vec<String>,
    policies: Vec<(String, usize, Range<usize>)>,
    /// Every `[aws_config]` table, valid or not (file, span, region if valid).
    aws_config: Vec<(usize, Range<usize>, Option<AwsConfigSettings>)>,
    /// Every `[accounts]` table, valid or not.
    accounts: Vec<(usize, Range<usize>, Option<AccountsSettings>)>,
    /// Every `[security_hub]` table, valid or not.
    security_hub: Vec<(usize, Range<usize>, Option<SecurityHubSettings>)>,
    notifications: Vec<(usize, Range<usize>, Option<NotificationSettings>)>,
}

struct FileCtx<'a> {
    id: usize,
    path: &'a Path,
    text: &'a str,
    problems: &'a mut Vec<Problem>,
}

type Entry<'i> = (
    &'i Spanned<std::borrow::Cow<'i, str>>,
    &'i Spanned<DeValue<'i>>,
);

impl FileCtx<'_> {
    fn err(&mut self, code: &'static str, msg: impl Into<String>, span: Range<usize>, label: &str) {
        self.problems
            .push(Problem::new(code, msg).at(self.id, span, label));
    }

    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn document(
        &mut self,
        doc: &DeTable<'_>,
        policies: &mut Vec<(Policy, usize, Range<usize>)>,
        plugins: &mut Vec<(PluginConfig, usize, Range<usize>)>,
        declared: &mut Declared,
    ) {
        let mut any = false;
        for (key, value) in doc.iter() {
            match key.get_ref().as_ref() {
                "policy" => {
                    let Some(table) = self.table(value, "policy") else {
                        continue;
                    };
                    for (name, body) in table.iter() {
                        any = true;
                        declared
                            .policies
                            .push((name.get_ref().to_string(), self.id, name.span()));
                        if let Some(p) = self.policy(name, body) {
                            policies.push((p, self.id, name.span()));
                        }
                    }
                }
                "plugin" => {
                    let Some(table) = self.table(value, "plugin") else {
                        continue;
                    };
                    for (name, body) in table.iter() {
                        declared.plugins.push(name.get_ref().to_string());
                        if let Some(p) = self.plugin(name, body) {
                            plugins.push((p, self.id, name.span()));
                        }
                    }
                }
                "aws_config" => {
                    any = true;
                    let settings = self.aws_config(value);
                    declared.aws_config.push((self.id, key.span(), settings));
                }
                "accounts" => {
                    any = true;
                    let settings = self.accounts(value);
                    declared.accounts.push((self.id, key.span(), settings));
                }
                "security_hub" => {
                    any = true;
                    let settings = self.security_hub(value);
                    declared.security_hub.push((self.id, key.span(), settings));
                }
                "notifications" => {
                    any = true;
                    let settings = self.notifications(value);
                    declared.notifications.push((self.id, key.span(), settings));
                }
                other => self.err(
                    "unknown-key",
                    format!("unknown top-level key {other:?}"),
                    key.span(),
                    "expected `policy`, `plugin`, `aws_config`, `accounts`, `security_hub` or `notifications`",
                ),
            }
        }
        if !any && doc.is_empty() {
            self.problems.push(
                Problem::new(
                    "empty-file",
                    format!("{} defines no policy", self.path.display()),
                )
                .at(self.id, 0..0, "empty file")
                .note("add a [policy.NAME] table, or remove the file"),
            );
        }
    }

    fn table<'v, 'i>(
        &mut self,
        v: &'v Spanned<DeValue<'i>>,
        what: &str,
    ) -> Option<&'v DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.err(
                    "wrong-type",
                    format!("`{what}` must be a table, found {}", other.type_str()),
                    v.span(),
                    "expected a table",
                );
                None
            }
        }
    }

    fn string(&mut self, key: &str, v: &Spanned<DeValue<'_>>) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            other => {
                self.err(
                    "wrong-type",
                    format!("`{key}` must be a string, found {}", other.type_str()),
                    v.span(),
                    "expected a string",
                );
                None
            }
        }
    }

    fn boolean(&mut self, key: &str, v: &Spanned<DeValue<'_>>) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                let t = other.type_str();
                self.err(
                    "wrong-type",
                    format!("`{key}` must be a boolean, found {t}"),
                    v.span(),
                    "expected true or false",
                );
                None
            }
        }
    }

    fn integer(&mut self, key: &str, v: &Spanned<DeValue<'_>>, range: Range<i64>) -> Option<i64> {
        let DeValue::Integer(i) = v.get_ref() else {
            let t = v.get_ref().type_str();
            self.err(
                "wrong-type",
                format!("`{key}` must be an integer, found {t}"),
                v.span(),
                "expected an integer",
            );
            return None;
        };
        let digits = i.as_str().replace('_', "");
        match i64::from_str_radix(&digits, i.radix()) {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                self.err(
                    "invalid-value",
                    format!(
                        "`{key}` must be between {} and {}",
                        range.start,
                        range.end - 1
                    ),
                    v.span(),
                    "out of range",
                );
                None
            }
        }
    }

    fn strings(
        &mut self,
        key: &str,
        v: &Spanned<DeValue<'_>>,
    ) -> Option<Vec<(String, Range<usize>)>> {
        let DeValue::Array(items) = v.get_ref() else {
            let t = v.get_ref().type_str();
            self.err(
                "wrong-type",
                format!("`{key}` must be an array of strings, found {t}"),
                v.span(),
                "expected an array of strings",
            );
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push((s.to_string(), item.span())),
                other => {
                    self.err(
                        "wrong-type",
                        format!("`{key}` items must be strings, found {}", other.type_str()),
                        item.span(),
                        "expected a string",
                    );
                }
            }
        }
        Some(out)
    }

    fn policy(
        &mut self,
        name: &Spanned<std::borrow::Cow<'_, str>>,
        body: &Spanned<DeValue<'_>>,
    ) -> Option<Policy> {
        let pname = name.get_ref().to_string();
        let name_ok = valid_name(&pname);
        if !name_ok {
            self.err(
                "invalid-name",
                format!("policy name {pname:?} is not valid"),
                name.span(),
                "use letters, digits, `-`, `_` and `.`",
            );
        }
        let table = self.table(body, &format!("policy.{pname}"))?;
        let before = self.problems.len();
        let entries: Vec<Entry<'_>> = table.iter().collect();

        let mut rule = None;
        let mut rule_span = None;
        let mut max_key_age = None;
        let mut max_unused = None;
        let mut warn_before: Option<(u32, Range<usize>)> = None;
        let mut follow_deactivated = false;
        let mut action = None;
        let mut action_span = Some(name.span());
        let mut mode = Mode::Enforce;
        let mut exempt_users = Vec::new();
        let mut exempt = GlobSetBuilder::new();
        let mut protect_access_keys = Vec::new();
        let mut max_actions = None;
        let mut schedule = None;
        let mut params = BTreeMap::new();
        let mut config_rule: Option<(ManagedRule, Range<usize>)> = None;
        let mut config_rule_name: Option<(String, Range<usize>)> = None;
        let mut adopt_config_rule: Option<(bool, Range<usize>)> = None;
        for (k, v) in entries {
            let key = k.get_ref().as_ref();
            match key {
                "rule" => {
                    if let Some(s) = self.string(key, v) {
                        rule_span = Some(v.span());
                        match s.as_str() {
                            "cis-1.3" => rule = Some(Rule::Cis13),
                            "cis-1.4" => rule = Some(Rule::Cis14),
                            _ => self.err(
                                "invalid-value",
                                format!("unknown rule {s:?}"),
                                v.span(),
                                "expected \"cis-1.3\" or \"cis-1.4\"",
                            ),
                        }
                    }
                }
                "max_key_age_days" => {
                    max_key_age = self.integer(key, v, 1..3651).map(|n| (n as u32, k.span()))
                }
                "max_unused_days" => {
                    max_unused = self.integer(key, v, 1..3651).map(|n| (n as u32, k.span()))
                }
                "warn_before_days" => {
                    warn_before = self.integer(key, v, 0..3651).map(|n| (n as u32, v.span()))
                }
                "follow_deactivated" => {
                    if let Some(b) = self.boolean(key, v) {
                        follow_deactivated = b;
                    }
                }
                "action" => {
                    if let Some(s) = self.string(key, v) {
                        if valid_name(&s) {
                            action_span = Some(v.span());
                            action = Some(s);
                        } else {
                            self.err(
                                "invalid-value",
                                format!("action {s:?} is not a valid plugin name"),
                                v.span(),
                                "use letters, digits, `-`, `_` and `.`",
                            );
                        }
                    }
                }
                "mode" => {
                    if let Some(s) = self.string(key, v) {
                        match s.as_str() {
                            "enforce" => mode = Mode::Enforce,
                            "report" => mode = Mode::Report,
                            _ => self.err(
                                "invalid-value",
                                format!("unknown mode {s:?}"),
                                v.span(),
                                "expected \"enforce\" or \"report\"",
                            ),
                        }
                    }
                }
                "exempt_users" => {
                    if let Some(items) = self.strings(key, v) {
                        for (pattern, span) in items {
                            // IAM user names are unique case-insensitively.
                            match globset::GlobBuilder::new(&pattern)
                                .case_insensitive(true)
                                .build()
                            {
                                Ok(g) => {
                                    exempt.add(g);
                                    exempt_users.push(pattern);
                                }
                                Err(e) => self.err(
                                    "invalid-value",
                                    format!("invalid user pattern {pattern:?}: {}", e.kind()),
                                    span,
                                    "not a valid glob",
                                ),
                            }
                        }
                    }
                }
                "protect_access_keys" => {
                    if let Some(items) = self.strings(key, v) {
                        for (id, span) in items {
                            if id.len() >= 16
                                && id.len() <= 128
                                && id.bytes().all(|b| b.is_ascii_alphanumeric())
                            {
                                protect_access_keys.push(id.to_ascii_uppercase());
                            } else {
                                self.err(
                                    "invalid-value",
                                    format!("{id:?} is not an access key id"),
                                    span,
                                    "expected an access key id such as \"AKIAIOSFODNN7EXAMPLE\"",
                                );
                            }
                        }
                    }
                }
                "max_actions_per_run" => {
                    max_actions = self.integer(key, v, 0..1_000_001).map(|n| n as u32)
                }
                "schedule" => {
                    if let Some(s) = self.string(key, v) {
                        match cron::Schedule::from_str(&s) {
                            Ok(_) => schedule = Some(s),
                            Err(e) => self.problems.push(
                                Problem::new(
                                    "invalid-schedule",
                                    format!("invalid cron schedule {s:?}: {}", cron_detail(&s, &e)),
                                )
                                .at(self.id, v.span(), "not a cron expression")
                                .note("six or seven fields, seconds first: \"sec min hour day-of-month month day-of-week [year]\", e.g. \"0 0 */6 * * *\""),
                            ),
                        }
                    }
                }
                "aws_config_rule" => {
                    if let Some(s) = self.string(key, v) {
                        match ManagedRule::parse(&s) {
                            Some(r) => config_rule = Some((r, v.span())),
                            None => self.err(
                                "invalid-value",
                                format!("unknown AWS Config rule {s:?}"),
                                v.span(),
                                &format!(
                                    "expected {}",
                                    ManagedRule::ALL
                                        .iter()
                                        .map(|r| format!("{:?}", r.as_str()))
                                        .collect::<Vec<_>>()
                                        .join(" or ")
                                ),
                            ),
                        }
                    }
                }
                "aws_config_rule_name" => {
                    if let Some(s) = self.string(key, v) {
                        if valid_name(&s) {
                            config_rule_name = Some((s, v.span()));
                        } else {
                            self.err(
                                "invalid-value",
                                format!("{s:?} is not a valid AWS Config rule name"),
                                v.span(),
                                "use 1 to 128 letters, digits, `-`, `_` and `.`",
                            );
                        }
                    }
                }
                "adopt_aws_config_rule" => match v.get_ref() {
                    DeValue::Boolean(b) => adopt_config_rule = Some((*b, k.span())),
                    other => {
                        let t = other.type_str();
                        self.err(
                            "wrong-type",
                            format!("`{key}` must be a boolean, found {t}"),
                            v.span(),
                            "expected true or false",
                        );
                    }
                },
                "params" => {
                    if let Some(t) = self.table(v, "params") {
                        for (pk, pv) in t.iter() {
                            let pkey = pk.get_ref().to_string();
                            if let Some(s) = self.string(&format!("params.{pkey}"), pv) {
                                params.insert(pkey, s);
                            }
                        }
                    }
                }
                other => {
                    let hint = closest(other, POLICY_KEYS);
                    self.problems.push(
                        Problem::new(
                            "unknown-key",
                            format!("unknown key {other:?} in policy {pname:?}"),
                        )
                        .at(self.id, k.span(), "unknown key")
                        .note(match hint {
                            Some(h) => format!("did you mean `{h}`?"),
                            None => format!("valid keys: {}", POLICY_KEYS.join(", ")),
                        }),
                    );
                }
            }
        }
        let Some(rule) = rule else {
            if rule_span.is_none() {
                self.problems.push(
                    Problem::new(
                        "missing-key",
                        format!("policy {pname:?} has no `rule`"),
                    )
                    .at(self.id, name.span(), "this policy")
                    .note("add rule = \"cis-1.3\" (unused credentials) or rule = \"cis-1.4\" (key rotation)"),
                );
            }
            return None;
        };
        match (rule, &max_key_age, &max_unused) {
            (Rule::Cis13, Some((_, span)), _) => self.err(
                "invalid-key",
                "`max_key_age_days` applies to cis-1.4 only; cis-1.3 uses `max_unused_days`",
                span.clone(),
                "not used by cis-1.3",
            ),
            (Rule::Cis14, _, Some((_, span))) => self.err(
                "invalid-key",
                "`max_unused_days` applies to cis-1.3 only; cis-1.4 uses `max_key_age_days`",
                span.clone(),
                "not used by cis-1.4",
            ),
            _ => {}
        }
        let aws_config_rule = match (config_rule, &config_rule_name, &adopt_config_rule) {
            (Some((r, span)), _, _) => {
                if r.mirrors() != rule {
                    let fits = ManagedRule::ALL
                        .iter()
                        .find(|m| m.mirrors() == rule)
                        .map(|m| format!("use \"{}\" for {rule}", m.as_str()))
                        .unwrap_or_default();
                    self.problems.push(
                        Problem::new(
                            "invalid-value",
                            format!(
                                "AWS Config rule {:?} mirrors {}, but policy {pname:?} is {rule}",
                                r.as_str(),
                                r.mirrors()
                            ),
                        )
                        .at(self.id, span.clone(), "does not fit the policy's rule")
                        .note(fits),
                    );
                }
                let name = match &config_rule_name {
                    Some((n, _)) => n.clone(),
                    None => format!("engine-{pname}"),
                };
                if name.len() > 128 {
                    self.err(
                        "invalid-value",
                        format!("the default AWS Config rule name {name:?} is longer than 128 characters"),
                        span.clone(),
                        "set a shorter `aws_config_rule_name`",
                    );
                }
                Some((
                    ConfigRuleDecl {
                        rule: r,
                        name,
                        adopt: adopt_config_rule.as_ref().is_some_and(|(b, _)| *b),
                    },
                    span,
                ))
            }
            (None, Some((_, span)), _) | (None, None, Some((_, span))) => {
                self.err(
                    "invalid-key",
                    "`aws_config_rule_name` and `adopt_aws_config_rule` need `aws_config_rule`",
                    span.clone(),
                    "no aws_config_rule in this policy",
                );
                None
            }
            (None, None, None) => None,
        };
        let threshold = match rule {
            Rule::Cis13 => max_unused
                .as_ref()
                .map_or(DEFAULT_THRESHOLD_DAYS, |(n, _)| *n),
            Rule::Cis14 => max_key_age
                .as_ref()
                .map_or(DEFAULT_THRESHOLD_DAYS, |(n, _)| *n),
        };
        if let Some((warn, span)) = &warn_before
            && *warn >= threshold
        {
            self.err(
                "invalid-value",
                format!(
                    "`warn_before_days` ({warn}) must be less than the policy's threshold ({threshold} days)"
                ),
                span.clone(),
                "every credential would be upcoming from its first day",
            );
        }
        let exempt = match exempt.build() {
            Ok(set) => set,
            Err(e) => {
                self.err(
                    "invalid-value",
                    format!("invalid exempt_users: {e}"),
                    name.span(),
                    "in this policy",
                );
                return None;
            }
        };
        if self.problems.len() != before || !name_ok {
            return None;
        }
        Some(Policy {
            shared_name: pname.as_str().into(),
            name: pname,
            rule,
            max_key_age_days: max_key_age.map_or(DEFAULT_THRESHOLD_DAYS, |(n, _)| n),
            max_unused_days: max_unused.map_or(DEFAULT_THRESHOLD_DAYS, |(n, _)| n),
            action: action.unwrap_or_else(|| DEFAULT_ACTION.to_string()),
            mode,
            exempt_users,
            exempt,
            protect_access_keys,
            max_actions_per_run: max_actions,
            warn_before_days: warn_before.map_or(0, |(n, _)| n),
            follow_deactivated,
            schedule,
            params,
            action_span,
            config_rule_span: aws_config_rule.as_ref().map(|(_, s)| s.clone()),
            aws_config_rule: aws_config_rule.map(|(d, _)| d),
            origin: Origin {
                file: self.path.to_path_buf(),
                line: self.line_of(name.span().start),
            },
        })
    }

    /// The `[notifications]` table.
    fn notifications(&mut self, v: &Spanned<DeValue<'_>>) -> Option<NotificationSettings> {
        let table = self.table(v, "notifications")?;
        let before = self.problems.len();
        let mut owner_tags = vec!["owner".to_string(), "email".to_string()];
        let mut owner_channel: Option<(String, Range<usize>)> = None;
        let mut fallback_channel: Option<(String, Range<usize>)> = None;
        let mut summary_channels: Option<Vec<(String, Range<usize>)>> = None;
        let mut channels = BTreeMap::new();
        for (k, v) in table.iter() {
            let key = k.get_ref().as_ref();
            match key {
                "owner_tags" => {
                    if let Some(tags) = self.strings(key, v) {
                        owner_tags = tags.into_iter().map(|(t, _)| t).collect();
                    }
                }
                "owner_channel" => owner_channel = self.string(key, v).map(|s| (s, v.span())),
                "fallback_channel" => fallback_channel = self.string(key, v).map(|s| (s, v.span())),
                "summary_channels" => summary_channels = self.strings(key, v),
                "channels" => {
                    if let Some(t) = self.table(v, "notifications.channels") {
                        for (name, body) in t.iter() {
                            if let Some(c) = self.channel(name.get_ref().as_ref(), body) {
                                channels.insert(name.get_ref().to_string(), c);
                            }
                        }
                    }
                }
                other => {
                    let hint = closest(other, NOTIFICATION_KEYS);
                    self.problems.push(
                        Problem::new(
                            "unknown-key",
                            format!("unknown key {other:?} in [notifications]"),
                        )
                        .at(self.id, k.span(), "unknown key")
                        .note(match hint {
                            Some(h) => format!("did you mean `{h}`?"),
                            None => format!("valid keys: {}", NOTIFICATION_KEYS.join(", ")),
                        }),
                    );
                }
            }
        }
        let summary_channels = summary_channels.unwrap_or_else(|| {
            fallback_channel
                .iter()
                .map(|(c, s)| (c.clone(), s.clone()))
                .collect()
        });
        for (name, span) in owner_channel
            .iter()
            .chain(fallback_channel.iter())
            .chain(summary_channels.iter())
        {
            if !channels.contains_key(name) {
                self.err(
                    "unknown-channel",
                    format!("there is no channel {name:?} in [notifications.channels]"),
                    span.clone(),
                    "not a declared channel",
                );
            }
        }
        if owner_channel.is_none() && fallback_channel.is_none() && self.problems.len() == before {
            self.err(
                "missing-key",
                "[notifications] sends nowhere: it has neither `owner_channel` nor `fallback_channel`",
                v.span(),
                "add owner_channel = \"NAME\" and/or fallback_channel = \"NAME\"",
            );
        }
        if self.problems.len() != before {
            return None;
        }
        Some(NotificationSettings {
            owner_tags,
            owner_channel: owner_channel.map(|(c, _)| c),
            fallback_channel: fallback_channel.map(|(c, _)| c),
            summary_channels: summary_channels.into_iter().map(|(c, _)| c).collect(),
            channels,
            origin: Origin {
                file: self.path.to_path_buf(),
                line: self.line_of(v.span().start),
            },
        })
    }

    /// One `[notifications.channels.NAME]` table.
    fn channel(&mut self, name: &str, v: &Spanned<DeValue<'_>>) -> Option<Channel> {
        let table = self.table(v, &format!("notifications.channels.{name}"))?;
        let before = self.problems.len();
        let mut kind: Option<(String, Range<usize>)> = None;
        let mut text: BTreeMap<&str, (String, Range<usize>)> = BTreeMap::new();
        let mut to = Vec::new();
        let (mut timeout_ms, mut attempts) = (5000u64, 3u32);
        for (k, v) in table.iter() {
            let key = k.get_ref().as_ref();
            match key {
                "type" => kind = self.string(key, v).map(|s| (s, v.span())),
                "url" | "secret_env" | "format" | "topic_arn" | "region" | "from" => {
                    if let Some(s) = self.string(key, v) {
                        let key: &'static str = CHANNEL_KEYS
                            .iter()
                            .find(|c| **c == key)
                            .copied()
                            .unwrap_or("url");
                        text.insert(key, (s, v.span()));
                    }
                }
                "to" => {
                    if let Some(list) = self.strings(key, v) {
                        to = list.into_iter().map(|(s, _)| s).collect();
                    }
                }
                "timeout_ms" => {
                    if let Some(n) = self.integer(key, v, 100..60_001) {
                        timeout_ms = n as u64;
                    }
                }
                "attempts" => {
                    if let Some(n) = self.integer(key, v, 1..11) {
                        attempts = n as u32;
                    }
                }
                other => {
                    let hint = closest(other, CHANNEL_KEYS);
                    self.problems.push(
                        Problem::new(
                            "unknown-key",
                            format!("unknown key {other:?} in channel {name:?}"),
                        )
                        .at(self.id, k.span(), "unknown key")
                        .note(match hint {
                            Some(h) => format!("did you mean `{h}`?"),
                            None => format!("valid keys: {}", CHANNEL_KEYS.join(", ")),
                        }),
                    );
                }
            }
        }
        let mut need = |this: &mut FileCtx<'_>, key: &str, what: &str| -> Option<String> {
            match text.remove(key) {
                Some((s, _)) => Some(s),
                None => {
                    this.err(
                        "missing-key",
                        format!("channel {name:?} has no `{key}`"),
                        v.span(),
                        what,
                    );
                    None
                }
            }
        };
        let channel = match kind.as_ref().map(|(k, s)| (k.as_str(), s.clone())) {
            Some(("webhook", _)) => {
                let url = need(self, "url", "add url = \"https://...\"");
                if let Some(u) = &url
                    && !webhook_url_ok(u)
                {
                    self.err(
                        "invalid-value",
                        format!("webhook url {u:?} must be https:// (or http:// to localhost)"),
                        v.span(),
                        "not an https URL",
                    );
                }
                let format = text.remove("format");
                let slack = match format.as_ref().map(|(f, span)| (f.as_str(), span.clone())) {
                    None | Some(("json", _)) => false,
                    Some(("slack", _)) => true,
                    Some((other, span)) => {
                        self.err(
                            "invalid-value",
                            format!("webhook format {other:?} is not known"),
                            span,
                            "expected \"json\" or \"slack\"",
                        );
                        false
                    }
                };
                url.map(|url| Channel::Webhook {
                    url,
                    secret_env: text.remove("secret_env").map(|(s, _)| s),
                    slack,
                    timeout_ms,
                    attempts,
                })
            }
            Some(("sns", _)) => {
                let arn = need(
                    self,
                    "topic_arn",
                    "add topic_arn = \"arn:aws:sns:REGION:ACCOUNT:NAME\"",
                );
                if let Some(a) = &arn
                    && sns_region(a).is_none()
                {
                    self.err(
                        "invalid-value",
                        format!("{a:?} is not an SNS topic ARN"),
                        v.span(),
                        "expected arn:aws:sns:REGION:ACCOUNT:NAME",
                    );
                }
                arn.map(|topic_arn| Channel::Sns { topic_arn })
            }
            Some(("ses", _)) => {
                let region = need(self, "region", "add region = \"eu-west-1\"");
                let from = need(
                    self,
                    "from",
                    "add from = \"engine@example.com\" (a verified SES identity)",
                );
                match (region, from) {
                    (Some(region), Some(from)) => Some(Channel::Ses { region, from, to }),
                    _ => None,
                }
            }
            Some((other, span)) => {
                self.err(
                    "invalid-value",
                    format!("channel type {other:?} is not known"),
                    span,
                    "expected \"webhook\", \"sns\" or \"ses\"",
                );
                None
            }
            None => {
                self.err(
                    "missing-key",
                    format!("channel {name:?} has no `type`"),
                    v.span(),
                    "add type = \"webhook\", \"sns\" or \"ses\"",
                );
                None
            }
        };
        if self.problems.len() != before {
            return None;
        }
        channel
    }

    /// The `[security_hub]` table.
    fn security_hub(&mut self, v: &Spanned<DeValue<'_>>) -> Option<SecurityHubSettings> {
        let table = self.table(v, "security_hub")?;
        let before = self.problems.len();
        let mut region = None;
        let mut import_into = ImportInto::EngineAccount;
        for (k, v) in table.iter() {
            let key = k.get_ref().as_ref();
            match key {
                "region" => {
                    if let Some(s) = self.string(key, v) {
                        if valid_region(&s) {
                            region = Some(s);
                        } else {
                            self.err(
                                "invalid-value",
                                format!("{s:?} is not an AWS region"),
                                v.span(),
                                "expected a region such as \"eu-west-1\"",
                            );
                        }
                    }
                }
                "import_into" => {
                    if let Some(s) = self.string(key, v) {
                        match s.as_str() {
                            "engine-account" => import_into = ImportInto::EngineAccount,
                            "each-account" => import_into = ImportInto::EachAccount,
                            _ => self.err(
                                "invalid-value",
                                format!("{s:?} is not where findings can go"),
                                v.span(),
                                "expected \"engine-account\" (the account the engine runs in, e.g. a delegated administrator) or \"each-account\"",
                            ),
                        }
                    }
                }
                other => {
                    let hint = closest(other, SECURITY_HUB_KEYS);
                    self.problems.push(
                        Problem::new(
                            "unknown-key",
                            format!("unknown key {other:?} in [security_hub]"),
                        )
                        .at(self.id, k.span(), "unknown key")
                        .note(match hint {
                            Some(h) => format!("did you mean `{h}`?"),
                            None => format!("valid keys: {}", SECURITY_HUB_KEYS.join(", ")),
                        }),
                    );
                }
            }
        }
        if region.is_none() && self.problems.len() == before {
            self.err(
                "missing-key",
                "[security_hub] has no `region`",
                v.span(),
                "add region = \"eu-west-1\" (the region of the Security Hub findings go to)",
            );
        }
        if self.problems.len() != before {
            return None;
        }
        Some(SecurityHubSettings {
            region: region?,
            import_into,
            origin: Origin {
                file: self.path.to_path_buf(),
                line: self.line_of(v.span().start),
            },
        })
    }

    /// The `[accounts]` table.
    fn accounts(&mut self, v: &Spanned<DeValue<'_>>) -> Option<AccountsSettings> {
        let table = self.table(v, "accounts")?;
        let before = self.problems.len();
        let mut ids: Option<(Vec<String>, Range<usize>)> = None;
        let mut organization: Option<(bool, Range<usize>)> = None;
        let mut units: Option<(Vec<String>, Range<usize>)> = None;
        let mut exclude = Vec::new();
        let mut role = None;
        let mut external_id = None;
        for (k, v) in table.iter() {
            let key = k.get_ref().as_ref();
            match key {
                "ids" => {
                    if let Some(items) = self.strings(key, v) {
                        let mut out = Vec::new();
                        for (id, span) in items {
                            if valid_account_id(&id) {
                                if !out.contains(&id) {
                                    out.push(id);
                                }
                            } else {
                                self.err(
                                    "invalid-value",
                                    format!("{id:?} is not an AWS account id"),
                                    span,
                                    "expected 12 digits",
                                );
                            }
                        }
                        if out.is_empty() && self.problems.len() == before {
                            self.err(
                                "invalid-value",
                                "`ids` lists no account",
                                v.span(),
                                "list at least one account id",
                            );
                        }
                        ids = Some((out, k.span()));
                    }
                }
                "organization" => match v.get_ref() {
                    DeValue::Boolean(b) => organization = Some((*b, k.span())),
                    other => {
                        let t = other.type_str();
                        self.err(
                            "wrong-type",
                            format!("`organization` must be a boolean, found {t}"),
                            v.span(),
                            "expected true or false",
                        );
                    }
                },
                "organizational_units" => {
                    if let Some(items) = self.strings(key, v) {
                        let mut out = Vec::new();
                        for (id, span) in items {
                            if valid_ou_id(&id) {
                                out.push(id);
                            } else {
                                self.err(
                                    "invalid-value",
                                    format!("{id:?} is not an organizational unit id"),
                                    span,
                                    "expected ou-xxxx-xxxxxxxx (or a root, r-xxxx)",
                                );
                            }
                        }
                        units = Some((out, k.span()));
                    }
                }
                "exclude" => {
                    if let Some(items) = self.strings(key, v) {
                        for (id, span) in items {
                            if valid_account_id(&id) || valid_ou_id(&id) {
                                exclude.push(id);
                            } else {
                                self.err(
                                    "invalid-value",
                                    format!(
                                        "{id:?} is neither an account id nor an organizational unit id"
                                    ),
                                    span,
                                    "expected 12 digits, or ou-xxxx-xxxxxxxx",
                                );
                            }
                        }
                    }
                }
                "role" => {
                    if let Some(s) = self.string(key, v) {
                        // IAM role names: 1-64 of [\w+=,.@-]; a path before them.
                        let name = s.rsplit('/').next().unwrap_or_default();
                        let ok_chars = |t: &str| {
                            t.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
                        };
                        if name.is_empty() || name.len() > 64 || !ok_chars(&s) || s.starts_with('/')
                        {
                            self.err(
                                "invalid-value",
                                format!("{s:?} is not an IAM role name"),
                                v.span(),
                                "expected a role name such as \"EngineRemediation\" (optionally with a path: \"security/EngineRemediation\")",
                            );
                        } else {
                            role = Some(s);
                        }
                    }
                }
                "external_id" => {
                    if let Some(s) = self.string(key, v) {
                        if (2..=1224).contains(&s.len()) {
                            external_id = Some(s);
                        } else {
                            self.err(
                                "invalid-value",
                                "`external_id` must be 2 to 1224 characters",
                                v.span(),
                                "as STS AssumeRole requires",
                            );
                        }
                    }
                }
                other => {
                    let hint = closest(other, ACCOUNTS_KEYS);
                    self.problems.push(
                        Problem::new(
                            "unknown-key",
                            format!("unknown key {other:?} in [accounts]"),
                        )
                        .at(self.id, k.span(), "unknown key")
                        .note(match hint {
                            Some(h) => format!("did you mean `{h}`?"),
                            None => format!("valid keys: {}", ACCOUNTS_KEYS.join(", ")),
                        }),
                    );
                }
            }
        }
        let select = match (&ids, organization) {
            (Some(_), Some((true, span))) => {
                self.err(
                    "conflicting-keys",
                    "[accounts] has both `ids` and `organization = true`",
                    span,
                    "choose one: a list of accounts, or the organization",
                );
                None
            }
            (Some((list, _)), _) => Some(AccountSelect::Ids(list.clone())),
            (None, Some((true, _))) => Some(AccountSelect::Organization {
                units: units.as_ref().map(|(u, _)| u.clone()).unwrap_or_default(),
            }),
            (None, _) => {
                self.err(
                    "missing-key",
                    "[accounts] says neither which accounts (`ids`) nor `organization = true`",
                    v.span(),
                    "add ids = [\"111111111111\", ...] or organization = true",
                );
                None
            }
        };
        if let (Some((_, span)), Some(AccountSelect::Ids(_))) = (&units, &select) {
            self.err(
                "conflicting-keys",
                "`organizational_units` narrows `organization = true`, not a list of `ids`",
                span.clone(),
                "remove it, or use organization = true",
            );
        }
        if role.is_none() && self.problems.len() == before {
            self.err(
                "missing-key",
                "[accounts] has no `role`",
                v.span(),
                "add role = \"NAME\": the role the engine assumes in each account",
            );
        }
        if self.problems.len() != before {
            return None;
        }
        Some(AccountsSettings {
            select: select?,
            exclude,
            role: role?,
            external_id,
            origin: Origin {
                file: self.path.to_path_buf(),
                line: self.line_of(v.span().start),
            },
        })
    }

    /// The `[aws_config]` table.
    fn aws_config(&mut self, v: &Spanned<DeValue<'_>>) -> Option<AwsConfigSettings> {
        let table = self.table(v, "aws_config")?;
        let before = self.problems.len();
        let mut region = None;
        let mut events_queue = None;
        for (k, v) in table.iter() {
            let key = k.get_ref().as_ref();
            match key {
                "events_queue" => {
                    if let Some(s) = self.string(key, v) {
                        match queue_url_problem(&s) {
                            None => events_queue = Some(s),
                            Some(why) => self.err(
                                "invalid-value",
                                format!("{s:?} is not an SQS queue URL: {why}"),
                                v.span(),
                                "expected e.g. \"https://sqs.eu-west-1.amazonaws.com/123456789012/engine-events\"",
                            ),
                        }
                    }
                }
                "region" => {
                    if let Some(s) = self.string(key, v) {
                        if valid_region(&s) {
                            region = Some(s);
                        } else {
                            self.err(
                                "invalid-value",
                                format!("{s:?} is not an AWS region"),
                                v.span(),
                                "expected a region such as \"eu-west-1\"",
                            );
                        }
                    }
                }
                other => {
                    let hint = closest(other, AWS_CONFIG_KEYS);
                    self.problems.push(
                        Problem::new(
                            "unknown-key",
                            format!("unknown key {other:?} in [aws_config]"),
                        )
                        .at(self.id, k.span(), "unknown key")
                        .note(match hint {
                            Some(h) => format!("did you mean `{h}`?"),
                            None => format!("valid keys: {}", AWS_CONFIG_KEYS.join(", ")),
                        }),
                    );
                }
            }
        }
        if region.is_none() && self.problems.len() == before {
            self.err(
                "missing-key",
                "[aws_config] has no `region`",
                v.span(),
                "add region = \"eu-west-1\" (the region of the Config rules)",
            );
        }
        if self.problems.len() != before {
            return None;
        }
        Some(AwsConfigSettings {
            region: region?,
            events_queue,
            origin: Origin {
                file: self.path.to_path_buf(),
                line: self.line_of(v.span().start),
            },
        })
    }

    fn plugin(
        &mut self,
        name: &Spanned<std::borrow::Cow<'_, str>>,
        body: &Spanned<DeValue<'_>>,
    ) -> Option<PluginConfig> {
        let pname = name.get_ref().to_string();
        if !valid_name(&pname) {
            self.err(
                "invalid-name",
                format!("plugin name {pname:?} is not valid"),
                name.span(),
                "use letters, digits, `-`, `_` and `.`",
            );
            return None;
        }
        let table = self.table(body, &format!("plugin.{pname}"))?;
        let before = self.problems.len();
        let builtin = BUILTIN_PLUGINS.iter().find(|(n, _)| *n == pname);
        let mut source: Option<(String, Range<usize>)> = None;
        let mut sha256: Option<(String, Range<usize>)> = None;
        let mut timeout_ms = DEFAULT_TIMEOUT_MS;
        let mut memory_mb = DEFAULT_MEMORY_MB;
        let mut bounds = LoadBounds::DEFAULT;
        let ceiling = LoadBounds::CEILING;
        let mut allow: Option<Vec<ActionKind>> = None;
        for (k, v) in table.iter() {
            let key = k.get_ref().as_ref();
            match key {
                "source" => source = self.string(key, v).map(|s| (s, v.span())),
                "sha256" => sha256 = self.string(key, v).map(|s| (s, v.span())),
                "timeout_ms" => {
                    if let Some(n) = self.integer(key, v, 1..600_001) {
                        timeout_ms = n as u64;
                    }
                }
                "memory_mb" => {
                    if let Some(n) = self.integer(key, v, 1..4097) {
                        memory_mb = n as u64;
                    }
                }
                "max_file_mb" => {
                    if let Some(n) = self.integer(key, v, 1..ceiling.max_file_mb as i64 + 1) {
                        bounds.max_file_mb = n as u64;
                    }
                }
                "max_function_kb" => {
                    if let Some(n) = self.integer(key, v, 1..ceiling.max_function_kb as i64 + 1) {
                        bounds.max_function_kb = n as u64;
                    }
                }
                "max_functions" => {
                    if let Some(n) = self.integer(key, v, 1..ceiling.max_functions as i64 + 1) {
                        bounds.max_functions = n as u64;
                    }
                }
                "allow" => {
                    if let Some(items) = self.strings(key, v) {
                        let mut kinds = Vec::new();
                        for (s, span) in items {
                            match ActionKind::parse(&s) {
                                Some(k) => kinds.push(k),
                                None => self.err(
                                    "invalid-value",
                                    format!("unknown action kind {s:?}"),
                                    span,
                                    "expected delete-access-key, deactivate-access-key, delete-login-profile or none",
                                ),
                            }
                        }
                        if !kinds.contains(&ActionKind::None) {
                            kinds.push(ActionKind::None);
                        }
                        allow = Some(kinds);
                    }
                }
                other => {
                    let hint = closest(other, PLUGIN_KEYS);
                    self.problems.push(
                        Problem::new(
                            "unknown-key",
                            format!("unknown key {other:?} in plugin {pname:?}"),
                        )
                        .at(self.id, k.span(), "unknown key")
                        .note(match hint {
                            Some(h) => format!("did you mean `{h}`?"),
                            None => format!("valid keys: {}", PLUGIN_KEYS.join(", ")),
                        }),
                    );
                }
            }
        }
        let src = match (&source, builtin) {
            (None, Some(_)) => Some(PluginSource::Builtin),
            (Some((s, _)), Some(_)) if s == "builtin" => Some(PluginSource::Builtin),
            (Some((s, span)), None) if s == "builtin" => {
                self.err(
                    "invalid-value",
                    format!("there is no builtin plugin {pname:?}"),
                    span.clone(),
                    "not a builtin",
                );
                None
            }
            (None, None) => {
                self.problems.push(
                    Problem::new("missing-key", format!("plugin {pname:?} has no `source`"))
                        .at(self.id, name.span(), "this plugin")
                        .note("source = \"path/to/plugin.wasm\" (relative to this file), with sha256 = \"<hex>\""),
                );
                None
            }
            (Some((s, span)), _) => {
                match &sha256 {
                    Some((h, hspan)) => {
                        if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
                            let base = self.path.parent().unwrap_or(Path::new("."));
                            Some(PluginSource::File {
                                path: base.join(s),
                                sha256: h.to_ascii_lowercase(),
                            })
                        } else {
                            self.err(
                                "invalid-value",
                                "`sha256` must be 64 hex digits",
                                hspan.clone(),
                                "not a sha256",
                            );
                            None
                        }
                    }
                    None => {
                        self.problems.push(
                        Problem::new(
                            "missing-key",
                            format!("plugin {pname:?} loads from a file but has no `sha256`"),
                        )
                        .at(self.id, span.clone(), "unpinned source")
                        .note("external plugins are pinned: add sha256 = \"<output of sha256sum>\""),
                    );
                        None
                    }
                }
            }
        };
        if matches!(src, Some(PluginSource::Builtin))
            && let Some((_, span)) = &sha256
        {
            self.err(
                "invalid-key",
                "`sha256` only applies to a plugin loaded from a file",
                span.clone(),
                "not used by a builtin plugin",
            );
        }
        let src = src?;
        if self.problems.len() != before {
            return None;
        }
        // Grants follow the source, not the name: a file configured under a
        // builtin's name is an external plugin and gets the external default.
        let allow = allow.unwrap_or_else(|| match (&src, builtin) {
            (PluginSource::Builtin, Some((_, kinds))) => kinds.to_vec(),
            _ => EXTERNAL_DEFAULT_ALLOW.to_vec(),
        });
        Some(PluginConfig {
            name: pname,
            source: src,
            timeout_ms,
            memory_mb,
            bounds,
            allow,
            origin: Some(Origin {
                file: self.path.to_path_buf(),
                line: self.line_of(name.span().start),
            }),
        })
    }
}

const POLICY_KEYS: &[&str] = &[
    "rule",
    "max_key_age_days",
    "max_unused_days",
    "action",
    "mode",
    "exempt_users",
    "protect_access_keys",
    "max_actions_per_run",
    "warn_before_days",
    "follow_deactivated",
    "schedule",
    "params",
    "aws_config_rule",
    "aws_config_rule_name",
    "adopt_aws_config_rule",
];

const AWS_CONFIG_KEYS: &[&str] = &["region", "events_queue"];
const NOTIFICATION_KEYS: &[&str] = &[
    "owner_tags",
    "owner_channel",
    "fallback_channel",
    "summary_channels",
    "channels",
];
const CHANNEL_KEYS: &[&str] = &[
    "type",
    "url",
    "secret_env",
    "format",
    "timeout_ms",
    "attempts",
    "topic_arn",
    "region",
    "from",
    "to",
];

/// A top-level table that a directory may define once: the first definition
/// (its settings, if they are valid), each other one a `code` problem
/// naming both places.
fn only_one<T: Clone>(
    problems: &mut Vec<Problem>,
    defined: &[(usize, Range<usize>, Option<T>)],
    code: &'static str,
    table: &str,
) -> Option<T> {
    let (first_id, first_span, first) = defined.first()?;
    for (id, span, _) in defined.iter().skip(1) {
        problems.push(
            Problem::new(code, format!("[{table}] is defined more than once"))
                .at(*id, span.clone(), "defined again here")
                .at(*first_id, first_span.clone(), "first defined here"),
        );
    }
    first.clone()
}

/// A webhook URL the engine posts to: https, or http to this machine.
pub fn webhook_url_ok(url: &str) -> bool {
    let local = ["http://127.0.0.1", "http://localhost", "http://[::1]"];
    url.starts_with("https://") && url.len() > "https://".len()
        || local.iter().any(|l| {
            url.strip_prefix(l).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with(':') || rest.starts_with('/')
            })
        })
}

/// The region of an SNS topic ARN (`arn:aws:sns:REGION:ACCOUNT:NAME`).
pub fn sns_region(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", partition, "sns", region, account, name]
            if !partition.is_empty()
                && valid_region(region)
                && valid_account_id(account)
                && !name.is_empty() =>
        {
            Some(region)
        }
        _ => None,
    }
}
const SECURITY_HUB_KEYS: &[&str] = &["region", "import_into"];
const ACCOUNTS_KEYS: &[&str] = &[
    "ids",
    "organization",
    "organizational_units",
    "exclude",
    "role",
    "external_id",
];

/// What is wrong with an SQS queue URL (`http(s)://HOST/ACCOUNT/NAME`), if anything.
pub fn queue_url_problem(s: &str) -> Option<&'static str> {
    let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    else {
        return Some("it does not start with https://");
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [host, account, name] if !host.is_empty() => {
            if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                Some("the path must start with a 12-digit account id")
            } else if name.is_empty()
                || name.len() > 80
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                Some("the queue name must be 1-80 letters, digits, - or _ (.fifo for FIFO queues)")
            } else {
                None
            }
        }
        _ => Some("expected https://HOST/ACCOUNT/QUEUE-NAME"),
    }
}

/// A region name such as `eu-west-1` or `us-gov-west-1`.
fn valid_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .first()
            .is_some_and(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

const PLUGIN_KEYS: &[&str] = &[
    "source",
    "sha256",
    "timeout_ms",
    "memory_mb",
    "max_file_mb",
    "max_function_kb",
    "max_functions",
    "allow",
];

/// The useful part of the cron crate's error, which echoes the input and a caret.
fn cron_detail(expr: &str, e: &cron::error::Error) -> String {
    let fields = expr.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        return format!("{fields} fields, expected 6 or 7");
    }
    let text = e.to_string();
    text.lines()
        .map(str::trim)
        .rfind(|l| l.chars().any(char::is_alphabetic) && *l != expr.trim())
        .unwrap_or("not a valid expression")
        .to_string()
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The valid key closest to a misspelt one, if any is close.
fn closest<'a>(key: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(key, c), *c))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
