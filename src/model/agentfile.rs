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

#[cfg(test)]
mod tests;
pub mod unit;

use std::collections::{BTreeMap, HashMap};

use crate::model::limits::{LimitsSpec, Size};
use crate::model::request::{self, Lifecycle, SpawnRequest, TaskId};

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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One line, as written.
    Text,
    /// Whitespace-separated words, quoted as systemd.syntax(7) quotes; repeatable; empty resets.
    Words,
    /// Words of `KEY=VALUE`; repeatable; empty resets.
    Env,
    Bool,
    /// A JSON value on one line.
    Json,
    Lifecycle,
    TaskId,
    /// A byte size (`2G`, `1048576`).
    Size,
    Count,
    /// Percent of one CPU (`150%` or `150`).
    Percent,
    /// A file path, absolute or `~/…`.
    Path,
}

/// Every `[Agent]` key: the spawn request's fields, spelled as systemd spells keys.
pub const AGENT_KEYS: &[&str] = &[
    "Provider",
    "Cwd",
    "Label",
    "AgentId",
    "TaskId",
    "ApprovalMode",
    "Rig",
    "Model",
    "Effort",
    "Profile",
    "Prompt",
    "PromptFile",
    "SystemPromptAppend",
    "SystemPromptAppendFile",
    "Tags",
    "Capabilities",
    "ProviderArgs",
    "Environment",
    "AgentProfile",
    "Workspace",
    "RelayInjectionEvents",
    "PolicyName",
    "SpawnRequestId",
    "Lifecycle",
    "WorkspaceMode",
    "AutomationId",
    "AutomationRunId",
    "RequestedVia",
    "ReplayPromptOnRestart",
    "MemoryMax",
    "MemoryHigh",
    "TasksMax",
    "CPUQuota",
];

fn kind_of(key: &str) -> Option<Kind> {
    use Kind::*;
    Some(match key {
        "Provider" | "Cwd" | "Label" | "AgentId" | "ApprovalMode" | "Rig" | "Model" | "Effort" | "Profile"
        | "Prompt" | "SystemPromptAppend" | "PolicyName" | "SpawnRequestId" | "WorkspaceMode" | "AutomationId"
        | "AutomationRunId" | "RequestedVia" => Text,
        "PromptFile" | "SystemPromptAppendFile" => Path,
        "Tags" | "Capabilities" | "ProviderArgs" => Words,
        "Environment" => Env,
        "AgentProfile" | "Workspace" | "RelayInjectionEvents" => Json,
        "Lifecycle" => Lifecycle,
        "TaskId" => TaskId,
        "ReplayPromptOnRestart" => Bool,
        "MemoryMax" | "MemoryHigh" => Size,
        "TasksMax" => Count,
        "CPUQuota" => Percent,
        _ => return None,
    })
}

/// Keys of `[Unit]` the agent's unit sets itself.
const OWNED_UNIT_KEYS: &[(&str, &str)] = &[
    ("Description", "it names the agent (its id is how lookups find it)"),
    ("SourcePath", "it names the .agent file"),
    ("StartLimitBurst", "the agent's restart policy is fixed"),
    ("StartLimitIntervalSec", "the agent's restart policy is fixed"),
];

/// Keys of `[Service]` the agent's unit sets itself, with what to use instead.
const OWNED_SERVICE_KEYS: &[(&str, &str)] = &[
    ("Type", "agents are Type=exec"),
    ("ExecStart", "the runner's command line comes from [Agent]: use ProviderArgs="),
    ("WorkingDirectory", "use [Agent] Cwd="),
    ("Environment", "use [Agent] Environment= (it goes to a 0600 file, never into the unit)"),
    ("EnvironmentFile", "use [Agent] Environment="),
    ("UnsetEnvironment", "the runner's variables are the supervisor's"),
    ("PassEnvironment", "use [Agent] Environment="),
    ("StandardOutput", "the runner's output goes to its log file"),
    ("StandardError", "the runner's output goes to its log file"),
    ("SyslogIdentifier", "it is the agent's session name"),
    ("LogExtraFields", "they hold the agent's metadata"),
    ("KillMode", "the whole control group is the agent"),
    ("TimeoutStopSec", "`stop` decides the stop window"),
    ("TimeoutSec", "`stop` decides the stop window"),
    ("Restart", "use [Agent] Lifecycle="),
    ("RestartSec", "use [Agent] Lifecycle="),
    ("RemainAfterExit", "an agent is alive while its runner runs"),
    ("Slice", "agents live in agent_relay.slice"),
    ("MemoryMax", "use [Agent] MemoryMax="),
    ("MemoryHigh", "use [Agent] MemoryHigh="),
    ("TasksMax", "use [Agent] TasksMax="),
    ("CPUQuota", "use [Agent] CPUQuota="),
    ("User", "a user manager runs units as its user"),
    ("Group", "a user manager runs units as its user"),
    ("DynamicUser", "a user manager runs units as its user"),
];

/// Unit types a dependency in `[Install]` may name.
const UNIT_TYPES: &[&str] =
    &["service", "socket", "target", "device", "mount", "automount", "swap", "path", "timer", "slice", "scope"];

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

#[derive(Default)]
struct Builder {
    req: SpawnRequest,
    prompt_file: Option<String>,
    append_file: Option<String>,
    limits: LimitsSpec,
    has_limits: bool,
    env: BTreeMap<String, String>,
    /// Single-valued keys already given, and on which line.
    seen: HashMap<String, usize>,
    unit: Vec<(String, String)>,
    service: Vec<(String, String)>,
    install: Install,
}

impl Builder {
    fn agent(&mut self, n: usize, key: &str, value: &str) -> Result<(), AgentFileError> {
        let kind = kind_of(key)
            .ok_or_else(|| err(n, format!("unknown key {key}= in [Agent]; the keys are: {}", AGENT_KEYS.join(", "))))?;
        let repeatable = matches!(kind, Kind::Words | Kind::Env);
        if !repeatable {
            if let Some(first) = self.seen.insert(key.to_string(), n) {
                return Err(err(n, format!("{key}= is given twice (first on line {first}); give it once")));
            }
            if value.is_empty() {
                return Err(err(n, format!("{key}= is empty; leave the key out instead")));
            }
        }
        let r = &mut self.req;
        match kind {
            Kind::Text => match key {
                "Provider" => r.provider = value.to_string(),
                "Cwd" => r.cwd = value.to_string(),
                _ => {
                    let field = text_field(r, key).ok_or_else(|| err(n, format!("unknown key {key}= in [Agent]")))?;
                    *field = Some(value.to_string());
                }
            },
            Kind::Path => {
                if !(value.starts_with('/') || value.starts_with("~/")) {
                    return Err(err(n, format!("{key}={value} is not an absolute path (or ~/…)")));
                }
                match key {
                    "PromptFile" => self.prompt_file = Some(value.to_string()),
                    _ => self.append_file = Some(value.to_string()),
                }
            }
            Kind::Words => {
                let words = split_words(value).map_err(|e| err(n, format!("{key}=: {e}")))?;
                let list = match key {
                    "Tags" => &mut r.tags,
                    "Capabilities" => &mut r.capabilities,
                    _ => &mut r.provider_args,
                };
                if words.is_empty() {
                    list.clear();
                }
                list.extend(words);
            }
            Kind::Env => {
                let words = split_words(value).map_err(|e| err(n, format!("{key}=: {e}")))?;
                if words.is_empty() {
                    self.env.clear();
                }
                for w in words {
                    let Some((k, v)) = w.split_once('=') else {
                        return Err(err(n, format!("Environment= takes KEY=VALUE words, got {w:?}")));
                    };
                    request::check_env_var(k, v).map_err(|e| err(n, e))?;
                    self.env.insert(k.to_string(), v.to_string());
                }
            }
            Kind::Bool => {
                r.replay_prompt_on_restart = parse_bool(value).ok_or_else(|| {
                    err(n, format!("{key}={value} is not a boolean (yes, no, true, false, on, off, 1, 0)"))
                })?
            }
            Kind::Json => {
                let v: serde_json::Value = serde_json::from_str(value)
                    .map_err(|e| err(n, format!("{key}= is not JSON ({e}); write it on one line")))?;
                match (key, v) {
                    ("AgentProfile", serde_json::Value::Object(m)) => r.agent_profile = Some(m),
                    ("Workspace", serde_json::Value::Object(m)) => r.workspace = Some(m),
                    ("RelayInjectionEvents", serde_json::Value::Array(a)) => r.relay_injection_events = a,
                    ("RelayInjectionEvents", _) => return Err(err(n, format!("{key}= must be a JSON array"))),
                    _ => return Err(err(n, format!("{key}= must be a JSON object"))),
                }
            }
            Kind::Lifecycle => {
                r.lifecycle = Some(match value {
                    "persistent" => Lifecycle::Persistent,
                    "ephemeral" => Lifecycle::Ephemeral,
                    _ => return Err(err(n, format!("Lifecycle={value} is neither persistent nor ephemeral"))),
                })
            }
            Kind::TaskId => r.task_id = Some(TaskId::parse(value)),
            Kind::Size => {
                crate::model::limits::parse_size(value).map_err(|e| err(n, format!("{key}=: {e}")))?;
                let size = Some(Size::Text(value.to_string()));
                match key {
                    "MemoryMax" => self.limits.memory_max = size,
                    _ => self.limits.memory_high = size,
                }
                self.has_limits = true;
            }
            Kind::Count => {
                let v = value.parse::<u64>().map_err(|_| err(n, format!("{key}={value} is not a whole number")))?;
                self.limits.tasks_max = Some(v);
                self.has_limits = true;
            }
            Kind::Percent => {
                let digits = value.strip_suffix('%').unwrap_or(value);
                let v = digits.parse::<u32>().map_err(|_| {
                    err(n, format!("{key}={value} is not a whole percentage (150% is one and a half CPUs)"))
                })?;
                self.limits.cpu_quota = Some(v);
                self.has_limits = true;
            }
        }
        Ok(())
    }

    fn passthrough(&mut self, n: usize, section: &str, key: &str, value: &str) -> Result<(), AgentFileError> {
        let owned = if section == "Unit" { OWNED_UNIT_KEYS } else { OWNED_SERVICE_KEYS };
        if let Some((_, why)) = owned.iter().find(|(k, _)| *k == key) {
            return Err(err(n, format!("[{section}] {key}= is set by agent-relay-systemd: {why}")));
        }
        let lines = if section == "Unit" { &mut self.unit } else { &mut self.service };
        lines.push((key.to_string(), value.to_string()));
        Ok(())
    }

    fn install(&mut self, n: usize, key: &str, value: &str) -> Result<(), AgentFileError> {
        let list = match key {
            "WantedBy" => &mut self.install.wanted_by,
            "RequiredBy" => &mut self.install.required_by,
            "UpheldBy" => &mut self.install.upheld_by,
            "Alias" => &mut self.install.alias,
            _ => {
                return Err(err(
                    n,
                    format!("[Install] {key}= is not supported; an .agent file takes WantedBy=, RequiredBy=, UpheldBy= and Alias="),
                ))
            }
        };
        let words: Vec<&str> = value.split_whitespace().collect();
        if words.is_empty() {
            list.clear();
        }
        for w in words {
            check_unit_name(w).map_err(|e| err(n, format!("[Install] {key}=: {e}")))?;
            if key == "Alias" {
                if !w.ends_with(".service") || w.contains('@') {
                    return Err(err(n, format!("[Install] Alias={w}: an alias of an agent is a NAME.service")));
                }
                if w.starts_with(crate::model::naming::AGENT_UNIT_PREFIX) {
                    return Err(err(
                        n,
                        format!("[Install] Alias={w}: names starting with agent-relay-managed- are the agents' own"),
                    ));
                }
            }
            if !list.iter().any(|x| x == w) {
                list.push(w.to_string());
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<AgentFile, AgentFileError> {
        if !self.seen.contains_key("Provider") {
            return Err(err(
                0,
                "no Provider= in [Agent] (e.g. Provider=claude); every agent needs [Agent] with Provider= and Cwd=",
            ));
        }
        if !self.seen.contains_key("Cwd") {
            return Err(err(0, "no Cwd= in [Agent]: the agent's working directory, inside the config's baseDir"));
        }
        for (inline, file) in [("Prompt", "PromptFile"), ("SystemPromptAppend", "SystemPromptAppendFile")] {
            if self.seen.contains_key(inline) && self.seen.contains_key(file) {
                return Err(err(self.seen[file], format!("{inline}= and {file}= are both given; give one")));
            }
        }
        self.req.env = self.env;
        if self.has_limits {
            self.req.limits = Some(self.limits);
        }
        request::validate(&self.req).map_err(|e| err(0, e.0))?;
        Ok(AgentFile {
            request: self.req,
            prompt_file: self.prompt_file,
            system_prompt_append_file: self.append_file,
            unit: self.unit,
            service: self.service,
            install: self.install,
        })
    }
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

/// The request's optional one-line field a `Kind::Text` key sets.
fn text_field<'a>(r: &'a mut SpawnRequest, key: &str) -> Option<&'a mut Option<String>> {
    Some(match key {
        "Label" => &mut r.label,
        "AgentId" => &mut r.agent_id,
        "ApprovalMode" => &mut r.approval_mode,
        "Rig" => &mut r.rig,
        "Model" => &mut r.model,
        "Effort" => &mut r.effort,
        "Profile" => &mut r.profile,
        "Prompt" => &mut r.prompt,
        "SystemPromptAppend" => &mut r.system_prompt_append,
        "PolicyName" => &mut r.policy_name,
        "SpawnRequestId" => &mut r.spawn_request_id,
        "WorkspaceMode" => &mut r.workspace_mode,
        "AutomationId" => &mut r.automation_id,
        "AutomationRunId" => &mut r.automation_run_id,
        "RequestedVia" => &mut r.requested_via,
        _ => return None,
    })
}

/// systemd's booleans (`parse_boolean`).
fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// A unit name a dependency or alias names: `[A-Za-z0-9:_.@-]`, a known type, no path.
fn check_unit_name(w: &str) -> Result<(), String> {
    let valid_chars = w.chars().all(|c| c.is_ascii_alphanumeric() || ":_.@-".contains(c));
    let typed = w.rsplit_once('.').is_some_and(|(stem, t)| !stem.is_empty() && UNIT_TYPES.contains(&t));
    if valid_chars && typed && w.len() <= 255 && !w.starts_with(['.', '-']) {
        return Ok(());
    }
    Err(format!("{w:?} is not a unit name (NAME.target, NAME.service, …)"))
}

/// Splits a value into words as systemd does for lists (systemd.syntax(7)): whitespace
/// separates; double or single quotes keep it; C escapes (`\n`, `\t`, `\\`, `\"`, `\'`, `\s`,
/// `\xHH`, `\uHHHH`) inside and outside quotes. Nothing else is special: `$` and `%` are kept.
pub fn split_words(value: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let e = chars.next().ok_or("a trailing backslash escapes nothing")?;
                cur.push(unescape(e, &mut chars)?);
                in_word = true;
            }
            '"' | '\'' if quote == Some(c) => quote = None,
            '"' | '\'' if quote.is_none() => {
                quote = Some(c);
                in_word = true;
            }
            ' ' | '\t' if quote.is_none() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("a {q} quote is never closed"));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn unescape(e: char, rest: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, String> {
    let hex = |rest: &mut std::iter::Peekable<std::str::Chars<'_>>, n: usize| -> Result<char, String> {
        let digits: String = (0..n).filter_map(|_| rest.next()).collect();
        u32::from_str_radix(&digits, 16)
            .ok()
            .filter(|_| digits.len() == n)
            .and_then(char::from_u32)
            .filter(|c| *c != '\0')
            .ok_or_else(|| format!("\\{e}{digits} is not a valid escape"))
    };
    Ok(match e {
        'n' => '\n',
        't' => '\t',
        'r' => '\r',
        'a' => '\x07',
        'b' => '\x08',
        'f' => '\x0c',
        'v' => '\x0b',
        's' => ' ',
        '\\' | '"' | '\'' => e,
        'x' => hex(rest, 2)?,
        'u' => hex(rest, 4)?,
        'U' => hex(rest, 8)?,
        other => return Err(format!("\\{other} is not an escape systemd knows")),
    })
}

/// The inverse of [`crate::model::plan::render_env_file`]: `KEY="value"` entries, where inside
/// the quotes `\` escapes the next character and a value may span lines. What the agent's
/// launcher reads back from the file the start wrote; anything else in it is refused.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").ok_or("an entry is not KEY=\"value\"")?;
        if !request::env_key_is_valid(key) {
            return Err(format!("{key:?} is not a variable name"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => value.push(chars.next().ok_or("a value ends in a backslash")?.1),
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err(format!("the value of {key} is never closed")),
            }
        };
        rest = after[end + 1..]
            .strip_prefix('\n')
            .ok_or_else(|| format!("the value of {key} is not followed by a newline"))?;
        out.push((key.to_string(), value));
    }
    Ok(out)
}
