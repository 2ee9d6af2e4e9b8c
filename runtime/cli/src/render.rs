//! Rendering a plan: a `terraform plan`-like text for people, one JSON
//! document for machines. Both come from the same [`Document`].
//!
//! Nothing in a plan is the engine's own text: user names, ARNs and key ids
//! come from the credential report, reasons and errors from plugins, names
//! from the policy files, and a saved plan is a file anyone could have edited.
//! Every such string crosses [`for_terminal`] before it is written for
//! people, and [`LogFields`] does the same for every field of a log line.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;

use anstyle::{AnsiColor, Style};
use engine_core::plan::{Plan, PolicyPlan};
use engine_core::text::{for_terminal, is_unsafe};
use engine_core::{ActionKind, Finding, Mode, Protection, Rule, Stage};
use serde::Serialize;

pub use engine_run::document::Document;

const BOLD: Style = Style::new().bold();
const RED: Style = AnsiColor::Red.on_default();
const YELLOW: Style = AnsiColor::Yellow.on_default();
const GREEN: Style = AnsiColor::Green.on_default();
const DIM: Style = Style::new().dimmed();

fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

/// What the host will do (or not) about one finding.
fn verdict(
    p: &PolicyPlan,
    action: Option<&engine_core::PlannedAction>,
    refusal: Option<&engine_core::Refusal>,
    f: &Finding,
    superseded: Option<&str>,
) -> (char, Style, String) {
    match f.protected {
        Some(Protection::Root) => return ('!', YELLOW, "never remediated: root account".into()),
        Some(Protection::OwnKey) => {
            return (
                '!',
                YELLOW,
                "never remediated: the engine's own credentials".into(),
            );
        }
        Some(Protection::Declared) => {
            return (
                '!',
                YELLOW,
                "never remediated: listed in protect_access_keys".into(),
            );
        }
        None => {}
    }
    if f.exempt {
        return ('=', DIM, "exempt: no action".into());
    }
    if f.stage == Stage::Upcoming && action.is_none_or(|a| a.action == ActionKind::None) {
        return (
            '>',
            DIM,
            format!("upcoming: due on {}", f.due_at().date_naive()),
        );
    }
    if let Some(fail) = &p.failure {
        return (
            'x',
            RED,
            format!("nothing: policy failed ({})", fail.kind.as_str()),
        );
    }
    if let Some(r) = refusal {
        return (
            'x',
            RED,
            format!(
                "refused {} ({}): {}",
                r.action,
                r.reason.as_str(),
                r.message
            ),
        );
    }
    let Some(a) = action else {
        return ('.', DIM, "no action requested by the plugin".into());
    };
    let what = match a.action {
        ActionKind::DeleteAccessKey => "delete access key",
        ActionKind::DeactivateAccessKey => "deactivate access key",
        ActionKind::DeleteLoginProfile => "remove console password",
        ActionKind::None => {
            let why = a.reason.as_deref().unwrap_or("plugin chose no action");
            return ('.', DIM, format!("no action: {why}"));
        }
    };
    if let Some(by) = superseded {
        return ('.', DIM, format!("no need to {what}: deleted under {by:?}"));
    }
    if p.mode == Mode::Report {
        return (
            '~',
            YELLOW,
            format!("would {what} (mode = report: never applied)"),
        );
    }
    if a.action == ActionKind::DeactivateAccessKey {
        ('~', YELLOW, format!("will {what}"))
    } else {
        ('-', RED, format!("will {what}"))
    }
}

/// The `terraform plan`-like text: one line per finding, grouped by policy.
pub fn human(
    out: &mut dyn Write,
    command: &str,
    doc: &Document,
    plan: &Plan,
) -> std::io::Result<()> {
    let s = &doc.summary;
    let from = match (&doc.source.report, &doc.source.account) {
        (Some(r), _) => format!("credential report {}", for_terminal(r)),
        (None, Some(a)) => format!("account {}", for_terminal(a)),
        (None, None) => "credential report".to_string(),
    };
    // `--user`: fresh reads of one user, not the credential report.
    let from = match &doc.source.user {
        Some(u) => format!("{from} (fresh reads of user {})", for_terminal(u)),
        None => from,
    };
    writeln!(
        out,
        "{} {} against {from} at {}",
        paint(BOLD, &format!("engine {command}:")),
        plural(s.policies, "policy", "policies"),
        doc.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )?;
    if let Some(at) = doc.source.report_generated_at {
        let age = doc.now.signed_duration_since(at);
        writeln!(
            out,
            "credential report generated at {} ({} before evaluation)",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            humantime::format_duration(std::time::Duration::from_secs(
                age.num_seconds().max(0).unsigned_abs()
            ))
        )?;
    }
    if doc.source.what_if {
        writeln!(
            out,
            "what-if: evaluated at --now instead of the current time; this plan cannot be saved or applied"
        )?;
    }
    if let Some(k) = &doc.source.own_key_id {
        writeln!(
            out,
            "running as {} with access key {} (never acted on)",
            for_terminal(
                doc.source
                    .identity
                    .as_deref()
                    .unwrap_or("an unknown identity")
            ),
            for_terminal(k)
        )?;
    }
    let superseded = plan.superseded();
    // Which enforcing policy deletes each key: looked up once, not per finding.
    let mut deleting: std::collections::HashMap<(&str, engine_core::Credential), &str> =
        std::collections::HashMap::new();
    for p in plan.policies.iter().filter(|p| p.mode == Mode::Enforce) {
        for a in p
            .actions
            .iter()
            .filter(|a| a.action == ActionKind::DeleteAccessKey)
        {
            deleting
                .entry((&*a.user, a.credential))
                .or_insert(p.policy.as_str());
        }
    }
    for (pi, p) in plan.policies.iter().enumerate() {
        writeln!(out)?;
        let threshold = match p.rule {
            Rule::Cis13 => "max_unused_days",
            Rule::Cis14 => "max_key_age_days",
        };
        let mut head = format!("policy {} ({}", quoted(&p.policy), p.rule);
        if let Some(f) = p.findings.first() {
            head.push_str(&format!(", {threshold} = {}", f.threshold_days));
        }
        head.push_str(&format!(
            ", {}, plugin {})",
            p.mode.as_str(),
            for_terminal(&p.plugin)
        ));
        writeln!(out, "{}", paint(BOLD, &head))?;
        if let Some(fail) = &p.failure {
            writeln!(
                out,
                "  {} {}",
                paint(RED, "error:"),
                for_terminal(&fail.to_string())
            )?;
        }
        if p.findings.is_empty() {
            writeln!(out, "  {}", paint(GREEN, "no findings"))?;
            continue;
        }
        let cred = |f: &Finding| match &f.key_id {
            Some(k) => format!("{} {}", f.credential, for_terminal(k)),
            None => f.credential.to_string(),
        };
        // Each finding's action and refusal, by finding index: one pass.
        let mut action_of = vec![None; p.findings.len()];
        for (ai, a) in p.actions.iter().enumerate() {
            if let Some(slot) = action_of.get_mut(a.finding) {
                slot.get_or_insert(ai);
            }
        }
        let mut refusal_of = vec![None; p.findings.len()];
        for r in &p.refused {
            if let Some(slot) = refusal_of.get_mut(r.finding) {
                slot.get_or_insert(r);
            }
        }
        let rows: Vec<Row> = p
            .findings
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let ai = action_of[i];
                let by = ai
                    .filter(|ai| superseded.contains(&(pi, *ai)))
                    .and_then(|_| deleting.get(&(f.user(), f.credential)).copied());
                let (sym, style, what) =
                    verdict(p, ai.map(|ai| &p.actions[ai]), refusal_of[i], f, by);
                // The verdict quotes refusal messages, plugin reasons and policy names.
                Row {
                    sym,
                    style,
                    what: for_terminal(&what).into_owned(),
                    user: for_terminal(f.user()),
                    cred: cred(f),
                    reason: Cow::Owned(for_terminal(&f.reason()).into_owned()),
                    notify: ai
                        .and_then(|ai| p.actions[ai].notify.as_deref())
                        .map(|m| for_terminal(m).into_owned()),
                }
            })
            .collect();
        let wu = rows.iter().map(|r| r.user.chars().count()).max();
        let wc = rows.iter().map(|r| r.cred.chars().count()).max();
        let ww = rows.iter().map(|r| r.what.chars().count()).max();
        let (wu, wc, ww) = (wu.unwrap_or(0), wc.unwrap_or(0), ww.unwrap_or(0));
        for r in &rows {
            let pad = ww.saturating_sub(r.what.chars().count());
            writeln!(
                out,
                "  {} {:wu$}  {:wc$}  {}{:pad$}  {}",
                paint(r.style, &r.sym.to_string()),
                r.user,
                r.cred,
                paint(r.style, &r.what),
                "",
                paint(DIM, &r.reason),
            )?;
            if let Some(m) = &r.notify {
                writeln!(out, "      {} {}", paint(DIM, "notify:"), m)?;
            }
        }
    }
    config_rules(out, doc)?;
    writeln!(out)?;
    let mut line = format!(
        "Plan: {} to delete, {} to deactivate, {} console password{} to remove.",
        s.delete_access_key,
        s.deactivate_access_key,
        s.delete_login_profile,
        if s.delete_login_profile == 1 { "" } else { "s" }
    );
    line.push_str(&format!(
        " {} in {}: {} exempt, {} protected, {} refused",
        plural(s.findings, "finding", "findings"),
        plural(s.policies, "policy", "policies"),
        s.exempt,
        s.protected,
        s.refused
    ));
    if s.superseded > 0 {
        line.push_str(&format!(", {} superseded", s.superseded));
    }
    if s.upcoming > 0 {
        line.push_str(&format!(", {} upcoming", s.upcoming));
    }
    if s.deactivated > 0 {
        line.push_str(&format!(", {} deactivated earlier", s.deactivated));
    }
    if s.report_only > 0 {
        line.push_str(&format!(", {} report-only", s.report_only));
    }
    if s.failed_policies > 0 {
        line.push_str(&format!(
            ", {}",
            paint(
                RED,
                &format!("{} failed", plural(s.failed_policies, "policy", "policies"))
            )
        ));
    }
    line.push('.');
    writeln!(out, "{}", paint(BOLD, &line))?;
    let count = |kind: &str| {
        doc.config_rules
            .iter()
            .filter(|e| e.change.kind() == kind)
            .count()
    };
    if !doc.config_rules.is_empty() {
        let mut line = format!(
            "AWS Config rules: {} to create, {} to update, {} to delete",
            count("create"),
            count("update"),
            count("delete")
        );
        for (kind, what) in [
            ("unmanaged", "not managed by the engine"),
            ("not-compared", "not compared"),
        ] {
            let n = count(kind);
            if n > 0 {
                line.push_str(&format!(", {n} {what}"));
            }
        }
        line.push('.');
        writeln!(out, "{}", paint(BOLD, &line))?;
    }
    Ok(())
}

/// A run over many accounts: a header, each account's plan as [`human`]
/// shows one (or its error), and a total line.
pub fn human_accounts(
    out: &mut dyn Write,
    command: &str,
    doc: &engine_run::document::AccountsDocument,
    plans: &[Option<&Plan>],
) -> std::io::Result<()> {
    let s = &doc.summary;
    writeln!(
        out,
        "{} {} as {} (role {}) at {}",
        paint(BOLD, &format!("engine {command}:")),
        plural(s.accounts, "account", "accounts"),
        for_terminal(&doc.identity),
        for_terminal(&doc.role),
        doc.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )?;
    for k in &doc.skipped {
        writeln!(
            out,
            "  {} account {}: {}",
            paint(DIM, "left out"),
            for_terminal(&k.account),
            for_terminal(&k.reason)
        )?;
    }
    for (section, plan) in doc.accounts.iter().zip(plans) {
        let label = match &section.name {
            Some(n) if !n.is_empty() => format!("{} ({})", section.account, n),
            _ => section.account.clone(),
        };
        writeln!(out)?;
        writeln!(
            out,
            "{}",
            paint(BOLD, &format!("== account {} ==", for_terminal(&label)))
        )?;
        match (&section.plan, plan) {
            (Some(d), Some(p)) => human(out, command, d, p)?,
            _ => writeln!(
                out,
                "  {} {}",
                paint(RED, "error:"),
                for_terminal(section.error.as_deref().unwrap_or("no plan"))
            )?,
        }
    }
    writeln!(out)?;
    let mut line = format!(
        "Total: {} ({} failed): {} to delete, {} to deactivate, {} console password{} to remove. {}: {} exempt, {} protected, {} refused",
        plural(s.accounts, "account", "accounts"),
        s.failed_accounts,
        s.delete_access_key,
        s.deactivate_access_key,
        s.delete_login_profile,
        if s.delete_login_profile == 1 { "" } else { "s" },
        plural(s.findings, "finding", "findings"),
        s.exempt,
        s.protected,
        s.refused
    );
    if s.skipped_accounts > 0 {
        line.push_str(&format!(", {} accounts left out", s.skipped_accounts));
    }
    if s.failed_policies > 0 {
        line.push_str(&format!(
            ", {}",
            plural(s.failed_policies, "failed policy", "failed policies")
        ));
    }
    line.push('.');
    let style = if s.failed_accounts > 0 { RED } else { BOLD };
    writeln!(out, "{}", paint(style, &line))
}

/// `ACCESS_KEYS_ROTATED maxAccessKeyAge=90`.
fn rule_text(source: &str, params: &std::collections::BTreeMap<String, String>) -> String {
    let mut text = for_terminal(source).into_owned();
    for (k, v) in params {
        text.push_str(&format!(" {}={}", for_terminal(k), for_terminal(v)));
    }
    text
}

/// The section `AWS Config rules (region R)`: one line per declared or managed rule.
fn config_rules(out: &mut dyn Write, doc: &Document) -> std::io::Result<()> {
    use engine_core::config_rule::RuleChange;
    if doc.config_rules.is_empty() && doc.config_warnings.is_empty() {
        return Ok(());
    }
    let mut regions: Vec<&str> = doc.config_rules.iter().map(|e| e.region.as_str()).collect();
    regions.dedup();
    writeln!(out)?;
    let head = match regions.as_slice() {
        [] => "AWS Config rules".to_string(),
        r => format!("AWS Config rules (region {})", for_terminal(&r.join(", "))),
    };
    writeln!(out, "{}", paint(BOLD, &head))?;
    let file = doc.source.report.is_some();
    for e in &doc.config_rules {
        let name = for_terminal(e.change.name());
        let (sym, style, text) = match &e.change {
            RuleChange::Create { rule, recreate } => (
                '+',
                GREEN,
                format!(
                    "{name} ({}){}",
                    rule_text(&rule.source_identifier, &rule.parameters),
                    if *recreate {
                        " (deleted outside the engine: created again)"
                    } else {
                        ""
                    }
                ),
            ),
            RuleChange::Update {
                rule,
                from_source_identifier,
                from_parameters,
                drift,
                adopt,
            } => {
                let mut parts = Vec::new();
                if *from_source_identifier != rule.source_identifier {
                    parts.push(format!(
                        "{} -> {}",
                        for_terminal(from_source_identifier),
                        for_terminal(&rule.source_identifier)
                    ));
                }
                let keys: std::collections::BTreeSet<&String> = from_parameters
                    .keys()
                    .chain(rule.parameters.keys())
                    .collect();
                for k in keys {
                    let (old, new) = (from_parameters.get(k), rule.parameters.get(k));
                    if old != new {
                        let show = |v: Option<&String>| {
                            v.map_or("(none)".to_string(), |v| for_terminal(v).into_owned())
                        };
                        parts.push(format!(
                            "{} {} -> {}",
                            for_terminal(k),
                            show(old),
                            show(new)
                        ));
                    }
                }
                let mut text = if parts.is_empty() {
                    format!(
                        "{name} ({})",
                        rule_text(&rule.source_identifier, &rule.parameters)
                    )
                } else {
                    format!("{name} {}", parts.join(", "))
                };
                if *drift {
                    text.push_str(" (drift: changed outside the engine)");
                }
                if *adopt {
                    text.push_str(" (adopted: tagged managed-by = engine)");
                }
                ('~', YELLOW, text)
            }
            RuleChange::Delete {
                source_identifier,
                parameters,
                ..
            } => (
                '-',
                RED,
                format!(
                    "{name} ({}): no longer declared",
                    rule_text(source_identifier, parameters)
                ),
            ),
            RuleChange::Unchanged { rule } => (
                '.',
                DIM,
                format!(
                    "{name} ({}) up to date",
                    rule_text(&rule.source_identifier, &rule.parameters)
                ),
            ),
            RuleChange::Unmanaged { .. } => (
                '!',
                YELLOW,
                format!(
                    "{name} exists and is not managed by the engine: left alone (adopt_aws_config_rule = true to manage it)"
                ),
            ),
            RuleChange::Forget { .. } => (
                '.',
                DIM,
                format!("{name} no longer declared and already gone: forgotten"),
            ),
            RuleChange::NotCompared { rule } => (
                '?',
                DIM,
                format!(
                    "{name} ({}) not compared{}",
                    rule_text(&rule.source_identifier, &rule.parameters),
                    if file { " (report file)" } else { "" }
                ),
            ),
        };
        writeln!(
            out,
            "  {} {}",
            paint(style, &sym.to_string()),
            paint(style, &text)
        )?;
    }
    for w in &doc.config_warnings {
        writeln!(out, "  {} {}", paint(YELLOW, "warning:"), for_terminal(w))?;
    }
    Ok(())
}

/// One line of the plan, every part of it printable.
struct Row<'a> {
    sym: char,
    style: Style,
    /// What the host will do; quotes refusal messages, plugin reasons and policy names.
    what: String,
    user: Cow<'a, str>,
    /// The credential and its key id.
    cred: String,
    /// The finding's reason.
    reason: Cow<'a, str>,
    /// The plugin's message for the owner, sent when the plan is carried out.
    notify: Option<String>,
}

/// The enforcing policy that deletes the key of `f`, if any.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `s` in double quotes as `{:?}` writes it, and safe for a terminal.
fn quoted(s: &str) -> String {
    for_terminal(&format!("{s:?}")).into_owned()
}

/// Standard output for the human plan: colour as anstream decides it
/// (`NO_COLOR`, `CLICOLOR_FORCE`, a terminal), written through a buffer (a
/// plan of 100,000 lines is not 100,000 writes). Flush it when done.
pub fn stdout() -> std::io::BufWriter<anstream::AutoStream<std::io::StdoutLock<'static>>> {
    std::io::BufWriter::with_capacity(64 * 1024, anstream::stdout().lock())
}

/// serde_json's pretty formatter, safe for a terminal, and streamed: the
/// document is never held whole in memory.
///
/// serde_json escapes what JSON requires (`"`, `\\` and U+0000..=U+001F, so ESC
/// and CR come out as `\u001b` and `\r`) but writes DEL, the C1 controls (one
/// of them, U+009B, is a CSI to many terminals) and bidi controls as they are.
/// Outside its strings a document has no character beyond ASCII, so writing
/// each of those as a `\uXXXX` escape (all are in the BMP) inside strings
/// yields the same JSON value.
struct TerminalSafe<'a>(serde_json::ser::PrettyFormatter<'a>);

impl serde_json::ser::Formatter for TerminalSafe<'_> {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let escape = |c: char| is_unsafe(c) && u32::from(c) >= 0x7f;
        let mut rest = fragment;
        while let Some((at, c)) = rest.char_indices().find(|(_, c)| escape(*c)) {
            writer.write_all(&rest.as_bytes()[..at])?;
            write!(writer, "\\u{:04x}", u32::from(c))?;
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }

    // The rest as pretty-printing does it.
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// Write `value` as pretty JSON, then a newline, safe for a terminal;
/// streamed through a buffer, not built in memory first.
pub fn write_json<T: Serialize>(out: &mut dyn Write, value: &T) -> std::io::Result<()> {
    let mut buffered = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut ser = serde_json::Serializer::with_formatter(
        &mut buffered,
        TerminalSafe(serde_json::ser::PrettyFormatter::new()),
    );
    value.serialize(&mut ser)?;
    writeln!(buffered)?;
    buffered.flush()
}

/// The fields of a log line (its message and `key=value` pairs), written as
/// tracing-subscriber's default formatter writes them, italic names and all,
/// but with every value through [`for_terminal`].
///
/// tracing-subscriber 0.3.23 escapes only ESC, BEL, BS, FF, DEL and C1 in a
/// message, never CR, LF, the other C0 controls or bidi controls, and
/// nothing at all in a `%display` field (`?debug` and string fields are
/// escaped by Rust's `{:?}`); log lines carry plugin output, plugin errors,
/// user names and paths.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFields;

impl<'w> tracing_subscriber::field::MakeVisitor<tracing_subscriber::fmt::format::Writer<'w>>
    for LogFields
{
    type Visitor = LogVisitor<'w>;

    fn make_visitor(&self, writer: tracing_subscriber::fmt::format::Writer<'w>) -> LogVisitor<'w> {
        LogVisitor {
            writer,
            first: true,
            result: Ok(()),
        }
    }
}

/// Writes the fields of one event or span for [`LogFields`].
pub struct LogVisitor<'w> {
    writer: tracing_subscriber::fmt::format::Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl tracing_subscriber::field::Visit for LogVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let value = format!("{value:?}");
        let value = for_terminal(&value);
        let sep = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        const ITALIC: Style = Style::new().italic();
        self.result = if name == "message" {
            write!(self.writer, "{sep}{value}")
        } else if self.writer.has_ansi_escapes() {
            write!(
                self.writer,
                "{sep}{ITALIC}{name}{ITALIC:#}{DIM}={DIM:#}{value}"
            )
        } else {
            write!(self.writer, "{sep}{name}={value}")
        };
    }
}

impl tracing_subscriber::field::VisitOutput<fmt::Result> for LogVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl tracing_subscriber::field::VisitFmt for LogVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    const EVIL: &str = "a\x1b[2K\x1b[1A\u{9b}2J\r\u{202e}\x7fb";

    fn dangerous(c: char) -> bool {
        c != '\n' && is_unsafe(c)
    }

    #[test]
    fn json_escapes_c1_del_and_bidi_too_and_keeps_the_value() {
        let value = serde_json::json!({ "user": EVIL, "n": [1, 2] });
        let mut out = Vec::new();
        write_json(&mut out, &value).expect("write");
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(!text.chars().any(dangerous), "{text:?}");
        assert!(
            text.contains(r#""a\u001b[2K\u001b[1A\u009b2J\r\u202e\u007fb""#),
            "{text}"
        );
        let back: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(back, value);
        // Keys are strings too.
        let mut keyed = serde_json::Map::new();
        keyed.insert(EVIL.to_string(), serde_json::Value::Null);
        let mut out = Vec::new();
        write_json(&mut out, &keyed).expect("write");
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(!text.chars().any(dangerous), "{text:?}");
    }

    #[derive(Clone)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What one event logs through [`LogFields`], with ANSI on or off.
    fn logged(ansi: bool, emit: impl FnOnce()) -> String {
        let buf = Buf(Arc::default());
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(LogFields)
            .with_writer(move || out.clone())
            .without_time()
            .with_target(false)
            .with_ansi(ansi)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = buf.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("UTF-8")
    }

    #[test]
    fn log_fields_escape_messages_and_every_kind_of_field() {
        let emit = || {
            tracing::warn!(
                user = %EVIL,
                key = EVIL,
                detail = ?EVIL,
                n = 3,
                r#type = "t",
                "msg {EVIL}"
            )
        };
        let plain = logged(false, emit);
        let escaped = "a\\x1b[2K\\x1b[1A\\u{9b}2J\\x0d\\u{202e}\\x7fb";
        assert_eq!(
            plain,
            format!(
                " WARN msg {escaped} user={escaped} key=\"a\\u{{1b}}[2K\\u{{1b}}[1A\\u{{9b}}2J\\r\\u{{202e}}\\u{{7f}}b\" \
                 detail=\"a\\u{{1b}}[2K\\u{{1b}}[1A\\u{{9b}}2J\\r\\u{{202e}}\\u{{7f}}b\" n=3 type=\"t\"\n"
            )
        );
        // With ANSI on: the same text, plus the subscriber's colours and only those.
        let coloured = logged(true, emit);
        assert!(
            coloured.contains("\x1b[3muser\x1b[0m\x1b[2m=\x1b[0m"),
            "{coloured:?}"
        );
        let mut stripped = String::new();
        let mut rest = coloured.as_str();
        while let Some(i) = rest.find('\x1b') {
            stripped.push_str(&rest[..i]);
            let sgr = rest[i + 1..]
                .strip_prefix('[')
                .and_then(|r| r.find('m').map(|m| (r, m)))
                .filter(|(r, m)| r[..*m].bytes().all(|b| b.is_ascii_digit() || b == b';'));
            let Some((_, m)) = sgr else {
                panic!("raw ESC in {coloured:?}");
            };
            rest = &rest[i + 2 + m + 1..];
        }
        stripped.push_str(rest);
        assert!(!stripped.chars().any(dangerous), "{stripped:?}");
        assert_eq!(stripped, plain);
    }
}
