//! `.agent` files, the declarative form of an agent: INI like a unit file (systemd.syntax(7)),
//! an `[Agent]` section whose keys are the spawn request's fields, and `[Unit]`, `[Service]`,
//! `[Install]` passed through as Podman's Quadlet does. Owns parsing (text → a spawn request and
//! the passthrough lines) and, in [`unit`], the unit the generator writes for one. Pure: the IO
//! shell reads the files (bounded, never through a link) and passes their text in.
//!
//! Strict, so that nothing is silently ignored: an unknown section or key, a key given twice, a
//! value that is not what its key takes, is an error naming the line. `[Agent]` values are data:
//! no `%` specifier and no `$` variable is expanded in them, and they reach the unit only through
//! the unit-file renderer's quoting. Passthrough lines are unit syntax on purpose (that is what
//! they are for), one line each, and may not set what the agent's unit owns.

mod keys;
#[cfg(test)]
mod tests;
pub mod unit;
mod words;

pub use keys::AGENT_KEYS;
pub use words::{parse_env_file, split_words};

use crate::model::request::SpawnRequest;
use keys::Builder;

/// What a declaration's file name ends with.
pub const SUFFIX: &str = ".agent";
/// The largest `.agent` file read (long prompts belong in `PromptFile=`).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// The longest name (the file name without `.agent`).
pub const MAX_NAME: usize = 64;

/// Why a file is not a declaration; `line` is 1-based, 0 for the file as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AgentFileError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for AgentFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            0 => f.write_str(&self.message),
            n => write!(f, "line {n}: {}", self.message),
        }
    }
}

fn err(line: usize, message: impl Into<String>) -> AgentFileError {
    AgentFileError { line, message: message.into() }
}

/// The `[Install]` section: what the generator links the unit into (`<target>.wants/` …) and
/// the extra names it gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Install {
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
    pub upheld_by: Vec<String>,
    pub alias: Vec<String>,
}

/// A parsed declaration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentFile {
    /// The spawn request, validated as `spawn` validates one; `prompt` and
    /// `systemPromptAppend` still empty when they are to be read from a file.
    pub request: SpawnRequest,
    /// `PromptFile=`, `SystemPromptAppendFile=`: paths as written (absolute or `~/…`).
    pub prompt_file: Option<String>,
    pub system_prompt_append_file: Option<String>,
    /// `[Unit]` and `[Service]` lines, `(key, value)` as written.
    pub unit: Vec<(String, String)>,
    pub service: Vec<(String, String)>,
    pub install: Install,
}

/// A file's meaning: an agent, or masked (empty, as systemd reads an empty unit file: a
/// user's empty `NAME.agent` hides an administrator's declaration of that name).
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Masked,
    Agent(Box<AgentFile>),
}

/// The name of a declaration file (`reviewer.agent` → `reviewer`), `None` for other files.
pub fn name_of_file(file_name: &str) -> Option<&str> {
    file_name.strip_suffix(SUFFIX).filter(|n| !n.is_empty())
}

/// A name is 1-64 characters of `A-Z a-z 0-9 _ -`, not starting with `-`: it becomes part of
/// a unit name (`NAME.agent.service`) and of a command line, and must need no escaping in either.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        return Ok(());
    }
    Err(format!(
        "{name:?} is not a valid agent name: use 1-{MAX_NAME} characters of A-Z, a-z, 0-9, _ and -, not starting with -"
    ))
}

/// Parses a declaration. Empty text is [`Parsed::Masked`].
pub fn parse(text: &str) -> Result<Parsed, AgentFileError> {
    if text.is_empty() {
        return Ok(Parsed::Masked);
    }
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(err(
            0,
            format!("the file is larger than {MAX_FILE_BYTES} bytes; put a long prompt in PromptFile="),
        ));
    }
    let mut b = Builder::default();
    let mut section: Option<&'static str> = None;
    for (line_no, line) in logical_lines(text)? {
        if line.starts_with('[') {
            let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
                return Err(err(line_no, format!("{line:?} is not a section header")));
            };
            section = Some(match name {
                "Agent" => "Agent",
                "Unit" => "Unit",
                "Service" => "Service",
                "Install" => "Install",
                _ => {
                    return Err(err(
                        line_no,
                        format!("unknown section [{name}]: a .agent file has [Agent], [Unit], [Service] and [Install]"),
                    ))
                }
            });
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(line_no, format!("{line:?} is neither KEY=VALUE nor a [Section]")));
        };
        let (key, value) = (key.trim_end(), value.trim_start());
        if !key.starts_with(|c: char| c.is_ascii_alphabetic()) || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(err(line_no, format!("{key:?} is not a key name (letters and digits)")));
        }
        match section {
            None => return Err(err(line_no, format!("{key}= comes before any section; start with [Agent]"))),
            Some("Agent") => b.agent(line_no, key, value)?,
            Some("Install") => b.install(line_no, key, value)?,
            Some(s) => b.passthrough(line_no, s, key, value)?,
        }
    }
    b.finish().map(|f| Parsed::Agent(Box::new(f)))
}

/// The file's lines that say something, joined where a line ends with `\` (systemd.syntax(7)),
/// trimmed, each with the number of its first line. A character systemd would not read as text
/// (NUL, escape, other control characters but tab) is refused where it stands.
fn logical_lines(text: &str) -> Result<Vec<(usize, String)>, AgentFileError> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    // The empty piece after a last newline is no line.
    let pieces = text.strip_suffix('\n').unwrap_or(text).split('\n');
    for (i, raw) in pieces.enumerate() {
        let n = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(c) = raw.chars().find(|c| c.is_control() && *c != '\t') {
            return Err(err(n, format!("a control character (U+{:04X}) is not allowed", c as u32)));
        }
        let line = raw.trim_matches([' ', '\t']);
        // Comments, also between the lines of a continued one (as systemd reads them).
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (body, continues) = match line.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (line, false),
        };
        let joined = match pending.take() {
            Some((first, mut acc)) => {
                acc.push(' ');
                acc.push_str(body.trim_start_matches([' ', '\t']));
                (first, acc)
            }
            None if body.is_empty() && !continues => continue,
            None => (n, body.to_string()),
        };
        if continues {
            pending = Some(joined);
        } else {
            let (first, acc) = joined;
            out.push((first, acc.trim_end_matches([' ', '\t']).to_string()));
        }
    }
    if let Some((first, _)) = pending {
        return Err(err(first, "the last line ends with `\\`, continuing a line that never comes"));
    }
    Ok(out)
}

/// The spawn request of declaration `name`: the file's, with the prompts its `PromptFile=` and
/// `SystemPromptAppendFile=` hold, labelled `name` unless it says `Label=`.
pub fn request_of(name: &str, file: &AgentFile, prompt: Option<String>, append: Option<String>) -> SpawnRequest {
    let mut req = file.request.clone();
    if req.label.is_none() {
        req.label = Some(name.to_string());
    }
    if prompt.is_some() {
        req.prompt = prompt;
    }
    if append.is_some() {
        req.system_prompt_append = append;
    }
    req
}

/// What a declared agent's plan takes where a spawn takes randomness, so that every reload
/// plans the same agent: the agent id's last part from the name (one agent per name and host),
/// the files' directory from the prompt (a new prompt is a new directory, and is read by the
/// first run after it, as a spawn's; the same prompt is not read again by later starts).
pub fn plan_seed(name: &str, req: &SpawnRequest) -> String {
    use sha2::{Digest, Sha256};
    let hex = |s: String| Sha256::digest(s.as_bytes()).iter().take(4).map(|b| format!("{b:02x}")).collect::<String>();
    let prompt = req.prompt.as_deref().unwrap_or_default();
    format!("{}{}{}", hex(format!("agent-file\0{name}")), hex(format!("prompt\0{prompt}")), "0".repeat(16))
}
