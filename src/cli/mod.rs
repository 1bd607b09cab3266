//! The command line: clap definitions (`args`, kept in the library so the man page and
//! completions come from the same definition), one function per verb (`verbs`), every answer's
//! rendering (`render`), and here the one entry point: parse, dispatch once, map a failure to its
//! documented exit code and one line on stderr (plus a JSON error document under `-o json`).

pub mod args;
mod completion;
mod manpage;
pub mod render;
pub mod schema;
mod verbs;

use std::process::ExitCode;

use clap::Parser;
use schemars::JsonSchema;
use serde::Serialize;

use crate::error::Error;
use crate::model::exec::ExecError;
use args::{Cli, Output};

/// What went wrong, for programs to match on: `kind` in the JSON error document. Each kind has
/// one exit code (README "Exit codes"), except `io`, `systemd`, `tmux`, `spawn-failed` and
/// `internal`, which are all 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Exit 2: bad arguments, spawn request, config file or agent reference.
    Invalid,
    /// Exit 2: the verb needs a live agent (`guest create`) or terminal (`terminal send|resize`
    /// on a pane that is gone).
    NotRunning,
    /// Exit 3: no such agent (or guest).
    NotFound,
    /// Exit 4: the unit name belongs to another agent.
    Conflict,
    /// Exit 4: the reference matches more than one agent; `matches` lists their units.
    Ambiguous,
    /// Exit 4: the unit is not one of ours.
    NotOurs,
    /// Exit 5: no systemd user manager reachable.
    ManagerUnreachable,
    /// Exit 6: the user manager (or a tmux server) did not answer in time.
    Timeout,
    /// Exit 7: the agent survived SIGKILL.
    Survived,
    /// Exit 9: the spawn gate did not admit the spawn (its queue wait ran out, or `--no-wait`);
    /// nothing was started.
    NotAdmitted,
    /// Exit 1: the runner could not be started.
    SpawnFailed,
    /// Exit 1: a file could not be read or written.
    Io,
    /// Exit 1: systemd refused a call.
    Systemd,
    /// Exit 1: tmux failed.
    Tmux,
    /// Exit 1: a bug of ours.
    Internal,
    /// Exit 203: the hidden `exec` launcher could not execute its program.
    Exec,
    /// Exit 1: `sandbox` could not start or tear down its private manager.
    Sandbox,
}

/// A failed verb: its message, the kind a program matches on, and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub kind: ErrorKind,
    pub code: u8,
    /// The units an ambiguous reference matches (`matches` in the JSON error document).
    pub matches: Vec<String>,
}

impl Failure {
    pub fn new(message: String, kind: ErrorKind, code: u8) -> Failure {
        Failure { message, kind, code, matches: Vec::new() }
    }

    /// The JSON error document printed under `-o json`.
    pub fn document(&self) -> ErrorDocument {
        ErrorDocument {
            schema_version: Default::default(),
            error: ErrorBody {
                kind: self.kind,
                message: self.message.clone(),
                exit_code: self.code,
                matches: self.matches.clone(),
            },
        }
    }
}

/// What `-o json` prints on stdout when a verb fails (command-line errors included), one line;
/// the exit code is `error.exitCode`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDocument {
    /// The JSON contract's version.
    pub schema_version: crate::model::contract::SchemaVersion,
    pub error: ErrorBody,
}

/// The failure itself.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub kind: ErrorKind,
    /// One line for people (also on stderr).
    pub message: String,
    /// The process's exit code.
    pub exit_code: u8,
    /// `ambiguous` only: the units the reference matches (absent otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<String>,
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
        // Colour only for a person at a terminal: not in journals, files or a caller's pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("AGENT_RELAY_LOG"))
        .init();
    match verbs::run(&cli) {
        Ok(code) => code,
        Err(f) => fail(cli.global.output, &f),
    }
}

/// Maps an error to its kind (for JSON) and exit code (see `--help`).
pub fn classify(e: &Error) -> (ErrorKind, u8) {
    match e {
        Error::Request(_)
        | Error::Config(_)
        | Error::Name(_)
        | Error::Argument(_)
        | Error::Host(_)
        | Error::Exec(ExecError::NoLauncher { .. })
        | Error::Runner(_)
        | Error::BadReference { .. }
        | Error::NotAGuest { .. } => (ErrorKind::Invalid, 2),
        Error::NotRunning { .. } | Error::TerminalGone { .. } => (ErrorKind::NotRunning, 2),
        Error::NotFound { .. } => (ErrorKind::NotFound, 3),
        Error::Conflict(_) => (ErrorKind::Conflict, 4),
        Error::Ambiguous { .. } => (ErrorKind::Ambiguous, 4),
        Error::NotOurs { .. } => (ErrorKind::NotOurs, 4),
        Error::ManagerUnreachable { .. } => (ErrorKind::ManagerUnreachable, 5),
        Error::Timeout { .. } | Error::WaitTimeout { .. } | Error::ReadyTimeout { .. } | Error::TmuxTimeout { .. } => {
            (ErrorKind::Timeout, 6)
        }
        Error::Survived { .. } => (ErrorKind::Survived, 7),
        Error::NotAdmitted { .. } => (ErrorKind::NotAdmitted, 9),
        Error::SpawnFailed { .. } => (ErrorKind::SpawnFailed, 1),
        Error::Io { .. } => (ErrorKind::Io, 1),
        Error::Systemd { .. } => (ErrorKind::Systemd, 1),
        Error::Tmux { .. } => (ErrorKind::Tmux, 1),
        Error::Render(_) | Error::Exec(ExecError::Unexpected { .. }) => (ErrorKind::Internal, 1),
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
    fail(Output::Json, &Failure::new(message, self::ErrorKind::Invalid, 2))
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
        // One line; a document that does not serialise cannot happen (strings and numbers).
        if let Ok(line) = serde_json::to_string(&f.document()) {
            println!("{line}");
        }
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
