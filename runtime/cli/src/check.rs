//! `engine check`: evaluate, plan, render. Never changes anything.

use std::io::Write;

use codespan_reporting::term::termcolor::{ColorChoice, StandardStream};
use engine_core::policy::{self, PolicyErrors};
use engine_core::report::CredentialReport;

use crate::render::{self, Document, Source};
use crate::{CheckArgs, Format, exit, pipeline, plugins};

pub fn run(args: &CheckArgs) -> u8 {
    let set = match policy::load_dir(&args.dir) {
        Ok(set) => set,
        Err(errors) => {
            print_policy_errors(&errors);
            return exit::POLICY_ERROR;
        }
    };
    let now = args.now.unwrap_or_else(chrono::Utc::now);
    let Some(report_path) = &args.report else {
        eprintln!(
            "error: no --report given; reading the live account is not available yet\n\
             hint: engine check {} --report examples/credential-report.csv",
            args.dir.display()
        );
        return exit::ERROR;
    };
    let bytes = match std::fs::read(report_path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "error: cannot read credential report {}: {e}",
                report_path.display()
            );
            return exit::ERROR;
        }
    };
    let report = match CredentialReport::parse(&bytes) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "error: credential report {} rejected, nothing evaluated: {e}",
                report_path.display()
            );
            return exit::ERROR;
        }
    };
    tracing::info!(
        policies = set.policies.len(),
        users = report.rows.len(),
        "evaluating"
    );
    let evaluated = pipeline::findings(&set, &report, now);
    let decider = match plugins::WasmDecider::new(&set, now, true) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let plan = pipeline::plan(&set, evaluated, now, &decider, false);
    let source = Source {
        report: Some(report_path.display().to_string()),
        ..Source::default()
    };
    let doc = Document::new(&plan, source);
    let written = match args.format {
        Format::Json => {
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &doc)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out))
        }
        Format::Human => {
            let mut out = anstream::stdout().lock();
            render::human(&mut out, &doc, &plan)
        }
    };
    if let Err(e) = written {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write output: {e}");
        }
        return exit::ERROR;
    }
    exit_code(&doc)
}

/// 1 if any policy failed, else 2 if there are findings, else 0.
pub fn exit_code(doc: &Document) -> u8 {
    if doc.summary.failed_policies > 0 {
        exit::ERROR
    } else if doc.summary.findings > 0 {
        exit::FINDINGS
    } else {
        exit::CLEAN
    }
}

pub fn print_policy_errors(errors: &PolicyErrors) {
    let choice = if std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none()
    {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    let mut stderr = StandardStream::stderr(choice);
    let config = codespan_reporting::term::Config::default();
    for d in &errors.diagnostics {
        let _ =
            codespan_reporting::term::emit_to_write_style(&mut stderr, &config, &errors.files, d);
    }
    let n = errors.diagnostics.len();
    let _ = writeln!(
        stderr,
        "error: the policy directory has {n} error{}; nothing was planned",
        if n == 1 { "" } else { "s" }
    );
}
