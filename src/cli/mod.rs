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
    let cli = Cli::parse();
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
        Error::Render(_) => ("internal", 1),
    }
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
