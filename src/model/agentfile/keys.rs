//! The `[Agent]` keys and what each sets, the `[Unit]`/`[Service]` keys the agent's unit owns,
//! `[Install]`: the builder [`super::parse`] feeds line by line. Pure.

use std::collections::{BTreeMap, HashMap};

use super::words::split_words;
use super::{err, AgentFile, AgentFileError, Install};
use crate::model::limits::{LimitsSpec, Size};
use crate::model::request::{self, Lifecycle, SpawnRequest, TaskId};

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

#[derive(Default)]
pub(super) struct Builder {
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
    pub(super) fn agent(&mut self, n: usize, key: &str, value: &str) -> Result<(), AgentFileError> {
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

    pub(super) fn passthrough(
        &mut self,
        n: usize,
        section: &str,
        key: &str,
        value: &str,
    ) -> Result<(), AgentFileError> {
        let owned = if section == "Unit" { OWNED_UNIT_KEYS } else { OWNED_SERVICE_KEYS };
        if let Some((_, why)) = owned.iter().find(|(k, _)| *k == key) {
            return Err(err(n, format!("[{section}] {key}= is set by agent-relay-systemd: {why}")));
        }
        let lines = if section == "Unit" { &mut self.unit } else { &mut self.service };
        lines.push((key.to_string(), value.to_string()));
        Ok(())
    }

    pub(super) fn install(&mut self, n: usize, key: &str, value: &str) -> Result<(), AgentFileError> {
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

    pub(super) fn finish(mut self) -> Result<AgentFile, AgentFileError> {
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

#[cfg(test)]
mod tests {
    #[test]
    fn every_listed_key_has_a_kind() {
        for k in super::AGENT_KEYS {
            assert!(super::kind_of(k).is_some(), "{k}");
        }
    }
}
