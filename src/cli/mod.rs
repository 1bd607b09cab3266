//! The command line: clap definitions (`args`, kept in the library so the man page and
//! completions come from the same definition), one function per verb (`verbs`), every answer's
//! rendering (`render`), and here the one entry point: parse, dispatch once, map a failure to its
//! documented exit code and one line on stderr (plus a JSON error document under `-o json`).

pub mod args;
pub mod render;
mod verbs;

use std::process::ExitCode;

use clap::Parser;

use crate::error::Error;
use crate::model::exec::ExecError;
use args::{Cli, Output};

/// A failed verb: its message, the kind a program matches on, and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub kind: &'static str,
    pub code: u8,
    /// The units an ambiguous reference matches (`matches` in the JSON error document).
    pub matches: Vec<String>,
}

impl Failure {
    pub fn new(message: String, kind: &'static str, code: u8) -> Failure {
        Failure { message, kind, code, matches: Vec::new() }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let (kind, code) = classify(&e);
        let matches = match &e {
            Error::Ambiguous { matches, .. } => matches.clone(),
            _ => Vec::new(),
        };
        Failure { message: e.to_string(), kind, code, matches }
    }
}

/// The binary: parse the command line, run its verb, report.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return parse_failure(&e, std::env::args().skip(1)),
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("AGENT_RELAY_LOG"))
        .init();
    match verbs::run(&cli) {
        Ok(code) => code,
        Err(f) => fail(cli.global.output, &f),
    }
}

/// Maps an error to its kind (for JSON) and exit code (see `--help`).
pub fn classify(e: &Error) -> (&'static str, u8) {
    match e {
        Error::Request(_)
        | Error::Config(_)
        | Error::Name(_)
        | Error::Argument(_)
        | Error::Host(_)
        | Error::Exec(ExecError::NoLauncher { .. })
        | Error::Runner(_)
        | Error::BadReference { .. }
        | Error::NotAGuest { .. } => ("invalid", 2),
        Error::NotRunning { .. } => ("not_running", 2),
        Error::NotFound { .. } => ("not_found", 3),
        Error::Conflict(_) => ("conflict", 4),
        Error::Ambiguous { .. } => ("ambiguous", 4),
        Error::NotOurs { .. } => ("not_ours", 4),
        Error::ManagerUnreachable { .. } => ("manager_unreachable", 5),
        Error::Timeout { .. } => ("timeout", 6),
        Error::Survived { .. } => ("survived", 7),
        Error::SpawnFailed { .. } => ("spawn_failed", 1),
        Error::Io { .. } => ("io", 1),
        Error::Systemd { .. } => ("systemd", 1),
        Error::Tmux { .. } => ("tmux", 1),
        Error::Render(_) | Error::Exec(ExecError::Unexpected { .. }) => ("internal", 1),
    }
}

/// A command line clap refused: under `-o json` the JSON error document (kind `invalid`, exit 2)
/// with clap's one-line reason; otherwise clap's own report. `--help` and `--version` are
/// printed as clap prints them, exit 0.
fn parse_failure(e: &clap::Error, args: impl Iterator<Item = String>) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) || !wants_json(args) {
        e.exit();
    }
    let message = match e.kind() {
        // Its text is the help, not a reason.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => "a command is required; see --help".to_string(),
        _ => {
            // The first paragraph (`error: … not provided:` and the missing arguments under it),
            // made one line; the usage and tips after it are for people.
            let text = e.to_string();
            let para: Vec<&str> = text.trim_start().lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
            let line = para.join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            if line.is_empty() {
                "invalid arguments".to_string()
            } else {
                line.to_string()
            }
        }
    };
    fail(Output::Json, &Failure::new(message, "invalid", 2))
}

/// `-o json`, `-ojson`, `-o=json`, `--output json` or `--output=json` before any `--`.
fn wants_json(args: impl Iterator<Item = String>) -> bool {
    let mut prev = String::new();
    for a in args {
        if a == "--" {
            return false;
        }
        let value = match a.as_str() {
            "-ojson" | "-o=json" | "--output=json" => return true,
            v if prev == "-o" || prev == "--output" => v,
            _ => "",
        };
        if value == "json" {
            return true;
        }
        prev = a;
    }
    false
}

fn fail(output: Output, f: &Failure) -> ExitCode {
    eprintln!("error: {}", f.message);
    if output == Output::Json {
        let mut body = serde_json::json!({ "error": { "kind": f.kind, "message": f.message, "exitCode": f.code } });
        if !f.matches.is_empty() {
            body["error"]["matches"] = serde_json::json!(f.matches);
        }
        println!("{body}");
    }
    ExitCode::from(f.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_output_is_found_in_any_spelling() {
        let yes = |a: &[&str]| wants_json(a.iter().map(|s| s.to_string()));
        assert!(yes(&["list", "-o", "json"]));
        assert!(yes(&["--output", "json", "list"]));
        assert!(yes(&["-ojson"]) && yes(&["-o=json"]) && yes(&["--output=json"]));
        assert!(!yes(&["list", "-o", "text"]) && !yes(&["list"]) && !yes(&["json"]));
        assert!(!yes(&["sandbox", "--", "x", "-o", "json"]), "the sandboxed command's own");
    }
}
