//! Terminal injection (issue 7 item 15): text the engine did not write itself
//! (user names and ARNs from a credential report, a plugin's reasons, log
//! lines, error and panic message) never reaches the terminal raw.
//!
//! Each case runs the real binary with colour forced (CLICOLOR_FORCE=1, which
//! stdout's anstream and the log subscriber both honour), so nothing strips
//! escape sequences on the way, and checks that the only ESC left in stdout
//! and stderr starts one of the engine's own SGR colour sequences, that no
//! other control, C1 or bidi character is there, that the hostile text shows
//! in its escaped form, and that the output is the NO_COLOR output plus
//! colour and nothing else.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

/// Erase line and cursor up (ESC CSI), CSI as the C1 control U+009B, a
/// carriage return, a right-to-left override: one user name each.
const USERS: [(&str, &str); 4] = [
    ("erase\x1b[2K\x1b[1Aup", "erase\\x1b[2K\\x1b[1Aup"),
    ("csi\u{9b}2Jc1", "csi\\u{9b}2Jc1"),
    ("cr\roverwrite", "cr\\x0doverwrite"),
    ("bidi\u{202e}gnp.exe", "bidi\\u{202e}gnp.exe"),
];

/// What plugins/testdata/escapes appends to everything it says, escaped.
const PLUGIN_EVIL_ESCAPED: &str = "\\x1b[2K\\x1b[1A\\u{9b}2J\\x0d\\u{202e}";

const HEADER: &str = "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,cert_1_last_rotated,cert_2_active,cert_2_last_rotated";

/// A fresh directory with a credential report whose users are [`USERS`],
/// each with an access key last rotated long ago (a CIS 1.4 finding), and
/// the given policy file.
fn setup(name: &str, policies: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engine-terminal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
    let mut csv = format!("{HEADER}\n");
    for (user, _) in USERS {
        let fields = [
            user.to_string(),
            format!("arn:aws:iam::123456789012:user/{user}"),
            "2024-01-01T00:00:00+00:00".into(),
            "false".into(),
            "N/A".into(),
            "N/A".into(),
            "N/A".into(),
            "false".into(),
            "true".into(),
            "2025-01-01T00:00:00+00:00".into(),
            "2026-11-20T00:00:00+00:00".into(),
            "us-east-1".into(),
            "iam".into(),
            "false".into(),
            "N/A".into(),
            "N/A".into(),
            "N/A".into(),
            "N/A".into(),
            "false".into(),
            "N/A".into(),
            "false".into(),
            "N/A".into(),
        ];
        // Quoted: a carriage return inside a field needs it.
        let row: Vec<String> = fields.iter().map(|f| format!("\"{f}\"")).collect();
        csv.push_str(&row.join(","));
        csv.push('\n');
    }
    std::fs::write(dir.join("report.csv"), csv).expect("report");
    std::fs::write(dir.join("policies/policies.toml"), policies).expect("policies");
    dir
}

/// Copy plugins/testdata/escapes next to the policies; its sha256.
fn escapes_plugin(dir: &Path) -> String {
    let wasm = Path::new(engine_wasm::BUILT_PLUGIN_DIR).join("testdata_escapes.wasm");
    let bytes =
        std::fs::read(&wasm).expect("the test plugin is built by engine-wasm's build script");
    std::fs::write(dir.join("policies/escapes.wasm"), &bytes).expect("copy");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `engine check` on the directory's report, with colour forced or off.
fn check(dir: &Path, colour: bool, extra: &[&str]) -> Output {
    check_report(dir, &dir.join("report.csv"), colour, extra)
}

/// `engine check` of the directory's policies on `report`, with colour forced or off.
fn check_report(dir: &Path, report: &Path, colour: bool, extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_engine"));
    cmd.arg("check")
        .arg(dir.join("policies"))
        .arg("--report")
        .arg(report)
        .args(["--now", "2026-11-28T00:00:00Z"])
        .args(extra)
        .env_remove("RUST_LOG")
        .env_remove("CLICOLOR")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env("ENGINE_STATE", dir.join("state"));
    if colour {
        cmd.env("CLICOLOR_FORCE", "1");
    } else {
        cmd.env("NO_COLOR", "1");
    }
    cmd.output().expect("run engine")
}

/// A control (C0 but newline, DEL, C1) or bidi character.
fn dangerous(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// The length of the SGR sequence `ESC [ <digits and ;> m` at the start of `s`, if it is one.
fn sgr_len(s: &str) -> Option<usize> {
    let rest = s.strip_prefix("\x1b[")?;
    let params = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ';')
        .count();
    rest[params..].starts_with('m').then_some(2 + params + 1)
}

/// `s` without its SGR sequences; panics on any other ESC or dangerous character.
fn assert_safe(what: &str, s: &str) -> String {
    let mut plain = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        if let Some(n) = sgr_len(rest) {
            i += n;
            continue;
        }
        let c = rest.chars().next().expect("non-empty");
        assert!(
            !dangerous(c),
            "{what}: raw {c:?} at byte {i}, in {:?}\nwhole output:\n{s:?}",
            &s[i.saturating_sub(40)..(i + 40).min(s.len())]
        );
        plain.push(c);
        i += c.len_utf8();
    }
    plain
}

/// `s` without what differs from one run to the next (run ids, timings).
fn stable(s: &str) -> String {
    s.lines()
        .map(|l| {
            l.split(' ')
                .filter(|t| !t.starts_with("invocation=") && !t.starts_with("elapsed_us="))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Both streams, coloured, are safe, coloured at all, and the plain run plus colour.
fn assert_terminal_safe(coloured: &Output, plain: &Output) -> (String, String) {
    let out = String::from_utf8(coloured.stdout.clone()).expect("stdout is UTF-8");
    let err = String::from_utf8(coloured.stderr.clone()).expect("stderr is UTF-8");
    assert!(
        out.contains("\x1b["),
        "colour was not forced on stdout:\n{out}"
    );
    let out_plain = assert_safe("stdout", &out);
    let err_plain = assert_safe("stderr", &err);
    assert_eq!(
        out_plain,
        String::from_utf8_lossy(&plain.stdout),
        "stdout with colour is not the NO_COLOR stdout plus colour"
    );
    assert_eq!(
        stable(&err_plain),
        stable(&String::from_utf8_lossy(&plain.stderr)),
        "stderr with colour is not the NO_COLOR stderr plus colour"
    );
    assert_eq!(coloured.status.code(), plain.status.code());
    (out_plain, err_plain)
}

#[test]
fn user_names_from_a_report_are_escaped_in_the_builtin_plugins_plan() {
    let dir = setup(
        "builtin",
        "[policy.rotate]\nrule = \"cis-1.4\"\naction = \"delete-expired-keys\"\n",
    );
    let coloured = check(&dir, true, &[]);
    let plain = check(&dir, false, &[]);
    let (out, err) = assert_terminal_safe(&coloured, &plain);
    assert_eq!(coloured.status.code(), Some(2), "{out}\n{err}");
    for (_, escaped) in USERS {
        let row = out
            .lines()
            .find(|l| l.contains(escaped))
            .unwrap_or_else(|| panic!("no plan row shows {escaped}:\n{out}"));
        assert!(row.contains("will delete access key"), "{row}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_external_plugins_reasons_logs_error_and_panic_are_escaped() {
    let dir = setup("external", "");
    let sha = escapes_plugin(&dir);
    std::fs::write(
        dir.join("policies/policies.toml"),
        format!(
            "[policy.reasons]\nrule = \"cis-1.4\"\naction = \"escapes\"\n\n\
             [policy.declines]\nrule = \"cis-1.4\"\naction = \"escapes\"\nparams = {{ mode = \"none\" }}\n\n\
             [policy.fails]\nrule = \"cis-1.4\"\naction = \"escapes\"\nparams = {{ mode = \"error\" }}\n\n\
             [policy.panics]\nrule = \"cis-1.4\"\naction = \"escapes\"\nparams = {{ mode = \"panic\" }}\n\n\
             [plugin.escapes]\nsource = \"escapes.wasm\"\nsha256 = \"{sha}\"\nallow = [\"deactivate-access-key\"]\n"
        ),
    )
    .expect("policies");
    // -v: the info lines about each plugin call too.
    let coloured = check(&dir, true, &["-v"]);
    let plain = check(&dir, false, &["-v"]);
    let (out, err) = assert_terminal_safe(&coloured, &plain);
    assert_eq!(coloured.status.code(), Some(1), "{out}\n{err}");
    // The log subscriber's own colours are kept.
    let err_coloured = String::from_utf8_lossy(&coloured.stderr);
    assert!(
        err_coloured.contains("\x1b["),
        "colour was not forced on stderr:\n{err_coloured}"
    );

    let declined = format!("no action: plugin-none{PLUGIN_EVIL_ESCAPED}");
    for (_, user) in USERS {
        assert!(
            out.lines()
                .any(|l| l.contains(user) && l.contains("will deactivate access key")),
            "no deactivation of {user}:\n{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.contains(user) && l.contains(&declined)),
            "no row of {user} with {declined}:\n{out}"
        );
    }
    for shown in ["plugin-error", "plugin-panic"] {
        let shown = format!("{shown}{PLUGIN_EVIL_ESCAPED}");
        assert!(out.contains(&shown), "stdout lacks {shown}:\n{out}");
        assert!(err.contains(&shown), "stderr lacks {shown}:\n{err}");
    }
    for shown in ["plugin-log-warn", "plugin-log-error"] {
        let shown = format!("{shown}{PLUGIN_EVIL_ESCAPED}");
        assert!(err.contains(&shown), "stderr lacks {shown}:\n{err}");
    }

    // JSON keeps the exact text, and serde_json writes every C0 control
    // (ESC, CR) as an escape; the log lines on stderr are escaped as above.
    let json = check(&dir, true, &["--format", "json"]);
    let text = String::from_utf8(json.stdout).expect("UTF-8");
    assert!(
        !text.chars().any(|c| c.is_ascii_control() && c != '\n'),
        "{text:?}"
    );
    assert!(text.contains("\\u001b[2K"), "{text}");
    // DEL, C1 and bidi controls, which JSON allows raw, are escaped too.
    assert!(
        !text.chars().any(|c| c == '\u{7f}'
            || ('\u{80}'..='\u{9f}').contains(&c)
            || ('\u{202a}'..='\u{202e}').contains(&c)),
        "{text:?}"
    );
    assert!(
        text.contains("\\u009b2J") && text.contains("\\u202e"),
        "{text}"
    );
    assert_safe("stderr (json)", &String::from_utf8_lossy(&json.stderr));
    let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    let users: Vec<&str> = doc["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["user"].as_str())
        .collect();
    for (user, _) in USERS {
        assert!(users.contains(&user), "{user:?} not in {users:?}");
    }
    let evil = "\x1b[2K\x1b[1A\u{9b}2J\r\u{202e}";
    assert!(
        doc["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .any(|a| a["reason"].as_str() == Some(&format!("plugin-reason{evil}"))),
        "{text}"
    );
    assert!(
        doc["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .any(|e| e["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("plugin-error{evil}")))),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_report_file_name_is_escaped_in_the_plan_and_in_log_fields() {
    let dir = setup(
        "path",
        "[policy.rotate]\nrule = \"cis-1.4\"\naction = \"delete-expired-keys\"\n",
    );
    // Any name a directory listing could hand over; -v logs it as `source=%path`,
    // a display field, which tracing-subscriber writes as it is.
    let report = dir.join("x\x1b[2K\x1b[1A\u{9b}2J\ry\u{202e}.csv");
    std::fs::copy(dir.join("report.csv"), &report).expect("copy");
    let coloured = check_report(&dir, &report, true, &["-v"]);
    let plain = check_report(&dir, &report, false, &["-v"]);
    let escaped = "x\\x1b[2K\\x1b[1A\\u{9b}2J\\x0dy\\u{202e}.csv";
    let err = assert_safe("stderr", &String::from_utf8_lossy(&coloured.stderr));
    assert!(
        err.lines()
            .any(|l| l.contains("source=") && l.contains(escaped)),
        "{err}"
    );
    let (out, _) = assert_terminal_safe(&coloured, &plain);
    assert!(
        out.lines().next().is_some_and(|l| l
            .contains(&format!("credential report {}", dir.display()))
            && l.contains(escaped)),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
