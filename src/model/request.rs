//! The spawn request (the seed's `SpawnOptions`, camelCase JSON) and its validation.
//! Pure: parsing only checks shape and values; the filesystem checks live in `host`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::naming;

/// Largest spawn request accepted on stdin or from `--spec` (prompts can be long, not endless).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;
const MAX_FIELD: usize = 512;
/// A path is at most `PATH_MAX` bytes.
pub const MAX_CWD_BYTES: usize = 4096;

// What reaches the runner's argv, its `Environment=`/`EnvironmentFile=` and so the user manager
// (one D-Bus message, one unit, one execve) is bounded: 300 000 arguments froze the manager for
// every unit of the user for ~24 s, 100 000 variables for over 80 s, and one argument over
// 128 KiB fails execve (E2BIG). The orchestrator sends a handful of each.
/// Entries of `providerArgs`.
pub const MAX_PROVIDER_ARGS: usize = 256;
/// Bytes of one `providerArgs` entry.
pub const MAX_PROVIDER_ARG_BYTES: usize = 8 * 1024;
/// Bytes of all `providerArgs` entries together.
pub const MAX_PROVIDER_ARGS_BYTES: usize = 64 * 1024;
/// Variables of `env` and `agentProfile.env` together.
pub const MAX_ENV_VARS: usize = 256;
/// Bytes of one variable's value.
pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
/// Bytes of all variables (`KEY=value`) of `env` and `agentProfile.env` together.
pub const MAX_ENV_BYTES: usize = 256 * 1024;
/// Entries of `tags`, and of `capabilities` (each entry at most 512 bytes, as other fields).
pub const MAX_LIST_ENTRIES: usize = 64;

/// A spawn request. Unknown fields are rejected so that a typo (`lable`) is an error, not a
/// silently ignored setting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpawnRequest {
    pub provider: String,
    pub cwd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rig: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt_append: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provider_args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_profile: Option<serde_json::Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_via: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawn_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<serde_json::Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automation_run_id: Option<String>,
    /// Resource limits of this agent (over the config's `limits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::model::limits::LimitsSpec>,
    /// The prompt file is read by the first run only; a restart (systemd's, or a durable agent's
    /// start with the user manager) finds it empty unless this is true. Ours, not the seed's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay_prompt_on_restart: bool,
    /// Events the relay has the runner inject: passed on as the JSON file
    /// `AGENT_RELAY_INJECTION_EVENTS_JSON_FILE` (the orchestrator: `…_EVENTS_JSON`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relay_injection_events: Vec<Value>,
    /// The orchestrator prepares workspaces itself before it spawns (symlinks into a worktree,
    /// resuming one, cloning a project): fields it sends that we accept and ignore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_symlinks: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_workspace: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquisition: Option<Value>,
}

impl SpawnRequest {
    /// The fields given that a spawn accepts but does not act on (the orchestrator's workspace
    /// preparation), by their JSON names.
    pub fn ignored_fields(&self) -> Vec<&'static str> {
        [
            ("workspaceSymlinks", &self.workspace_symlinks),
            ("resumeWorkspace", &self.resume_workspace),
            ("acquisition", &self.acquisition),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(name, _)| name)
        .collect()
    }
}

/// `taskId` arrives as a number or a string; it names the session `task-N[-label]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum TaskId {
    Number(u64),
    Text(String),
}

impl TaskId {
    /// The inverse of its text: a number when it reads as one.
    pub fn parse(text: &str) -> TaskId {
        text.parse().map(TaskId::Number).unwrap_or_else(|_| TaskId::Text(text.to_string()))
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskId::Number(n) => write!(f, "{n}"),
            TaskId::Text(s) => f.write_str(s),
        }
    }
}

/// `persistent` agents are restarted on failure; `ephemeral` ones are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    #[default]
    Persistent,
    Ephemeral,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Persistent => "persistent",
            Lifecycle::Ephemeral => "ephemeral",
        }
    }
}

/// What is wrong with a request; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

fn bad(msg: impl Into<String>) -> InvalidRequest {
    InvalidRequest(msg.into())
}

/// `^[A-Za-z_][A-Za-z0-9_]*$`, the seed's rule for exported keys.
pub fn env_key_is_valid(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Variables systemd sets for one run of a unit's processes (systemd.exec(5) "Environment
/// Variables in Spawned Processes", systemd.service(5) for `ExecStop*=`, socket and path/timer
/// activation). A value from an `EnvironmentFile=` overrides systemd's own for the runner and for
/// our `ExecStopPost=` exit recorder alike, so no request, profile or config may set them, and
/// the caller's own (it may run in a unit itself) are never passed on.
pub const SYSTEMD_RUN_VARS: &[&str] = &[
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "MANAGERPID",
    "MAINPID",
    "SYSTEMD_EXEC_PID",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "EXIT_CODE",
    "EXIT_STATUS",
    "SERVICE_RESULT",
    "CREDENTIALS_DIRECTORY",
    "RUNTIME_DIRECTORY",
    "STATE_DIRECTORY",
    "CACHE_DIRECTORY",
    "LOGS_DIRECTORY",
    "CONFIGURATION_DIRECTORY",
    "MEMORY_PRESSURE_WATCH",
    "MEMORY_PRESSURE_WRITE",
    "FDSTORE",
    "PIDFILE",
    "REMOTE_ADDR",
    "REMOTE_PORT",
];
/// Families of such variables: `TRIGGER_UNIT`, `TRIGGER_PATH`, `TRIGGER_TIMER_*` of the unit that
/// activated this one; `MONITOR_*` of the unit an `OnFailure=`/`OnSuccess=` handler watches.
pub const SYSTEMD_RUN_PREFIXES: &[&str] = &["TRIGGER_", "MONITOR_"];

/// Whether systemd owns `key` for each run of a unit: see [`SYSTEMD_RUN_VARS`].
pub fn is_systemd_run_var(key: &str) -> bool {
    SYSTEMD_RUN_VARS.contains(&key) || SYSTEMD_RUN_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// The longest `KEY=value` the kernel passes to a program (`MAX_ARG_STRLEN`, 32 pages, less its
/// NUL): a longer one makes the runner's exec fail (status 203/EXEC).
pub const MAX_ENV_ENTRY: usize = 32 * 4096 - 1;

/// What makes a value unfit for the runner's environment, if anything: a NUL; control
/// characters other than tab and newline (systemd before 249 drops such variables); a Unicode
/// noncharacter (systemd refuses the whole `EnvironmentFile=` and the unit fails to start).
pub fn env_value_problem(value: &str) -> Option<&'static str> {
    if value.contains('\0') {
        return Some("contains a NUL character");
    }
    if value.chars().any(|c| c.is_control() && c != '\t' && c != '\n') {
        return Some("contains control characters (only tab and newline are allowed)");
    }
    let nonchar = |c: char| matches!(c as u32, 0xFDD0..=0xFDEF) || (c as u32 & 0xFFFE) == 0xFFFE;
    if value.chars().any(nonchar) {
        return Some("contains a Unicode noncharacter (U+FDD0-U+FDEF, U+FFFE, U+FFFF, ...), which systemd refuses");
    }
    None
}

/// A variable a request, an agent profile or the config sets: a valid name, not one of
/// systemd's per-run variables, a value the runner's environment can carry.
pub fn check_env_var(key: &str, value: &str) -> Result<(), String> {
    if !env_key_is_valid(key) {
        return Err(format!("env key {key:?} is not a valid variable name (use [A-Za-z_][A-Za-z0-9_]*)"));
    }
    if is_systemd_run_var(key) {
        return Err(format!(
            "env key {key} is reserved: systemd sets it for each run of the agent's unit (and the exit recorder trusts it); use another name"
        ));
    }
    if let Some(problem) = env_value_problem(value) {
        return Err(format!("env value of {key} {problem}"));
    }
    if key.len() + 1 + value.len() > MAX_ENV_ENTRY {
        return Err(format!(
            "env variable {key} is {} bytes, at most {MAX_ENV_ENTRY} fit in a process environment; pass it as a file",
            key.len() + 1 + value.len()
        ));
    }
    Ok(())
}

/// Parses a request from JSON text. Errors read like
/// `invalid spawn request: missing field `provider` at line 1 column 12`.
pub fn parse(text: &str) -> Result<SpawnRequest, InvalidRequest> {
    if text.len() > MAX_REQUEST_BYTES {
        return Err(bad(format!("spawn request is {} bytes, at most {MAX_REQUEST_BYTES} are accepted", text.len())));
    }
    if text.trim().is_empty() {
        return Err(bad("spawn request is empty: pass a JSON object on stdin or with --spec FILE"));
    }
    let req: SpawnRequest = serde_json::from_str(text).map_err(|e| bad(format!("invalid spawn request: {e}")))?;
    validate(&req)?;
    Ok(req)
}

/// Checks values that serde cannot: names, lengths, control characters, env keys.
pub fn validate(req: &SpawnRequest) -> Result<(), InvalidRequest> {
    if req.provider.is_empty() {
        return Err(bad("provider is required (e.g. \"claude\" or \"codex\")"));
    }
    if !naming::provider_is_valid(&req.provider) {
        return Err(bad(format!("provider {:?} is not valid: use 1-32 characters of a-z, 0-9, _ and -", req.provider)));
    }
    if req.cwd.is_empty() {
        return Err(bad("cwd is required: an existing directory inside baseDir"));
    }
    let one_line: [(&str, Option<&str>); 11] = [
        ("cwd", Some(req.cwd.as_str())),
        ("label", req.label.as_deref()),
        ("agentId", req.agent_id.as_deref()),
        ("approvalMode", req.approval_mode.as_deref()),
        ("rig", req.rig.as_deref()),
        ("model", req.model.as_deref()),
        ("effort", req.effort.as_deref()),
        ("profile", req.profile.as_deref()),
        ("policyName", req.policy_name.as_deref()),
        ("spawnRequestId", req.spawn_request_id.as_deref()),
        ("workspaceMode", req.workspace_mode.as_deref()),
    ];
    let more = [
        ("automationId", req.automation_id.as_deref()),
        ("automationRunId", req.automation_run_id.as_deref()),
        ("requestedVia", req.requested_via.as_deref()),
    ];
    for (name, value) in one_line.into_iter().chain(more) {
        if let Some(v) = value {
            check_one_line(name, v)?;
        }
    }
    if let Some(TaskId::Text(t)) = &req.task_id {
        check_one_line("taskId", t)?;
    }
    if matches!(&req.spawn_request_id, Some(id) if id.trim().is_empty()) {
        return Err(bad("spawnRequestId must not be empty when given"));
    }
    if matches!(&req.agent_id, Some(id) if id.trim().is_empty()) {
        return Err(bad("agentId must not be empty when given"));
    }
    if req.cwd.len() > MAX_CWD_BYTES {
        return Err(bad(format!("cwd is {} bytes long, at most {MAX_CWD_BYTES}", req.cwd.len())));
    }
    for (name, list) in [("tags", &req.tags), ("capabilities", &req.capabilities)] {
        if list.len() > MAX_LIST_ENTRIES {
            return Err(bad(format!("{name} has {} entries, at most {MAX_LIST_ENTRIES} are accepted", list.len())));
        }
        for item in list {
            check_one_line(name, item)?;
            if item.contains(',') || item.is_empty() {
                return Err(bad(format!("{name} entries must be non-empty and contain no comma, got {item:?}")));
            }
        }
    }
    check_provider_args(&req.provider_args)?;
    for (key, value) in &req.env {
        check_env_var(key, value).map_err(bad)?;
    }
    // The profile's variables reach the runner like the request's (the seed's `agentProfileEnv`
    // drops only non-strings; names that are not variable names are dropped too).
    if let Some(Value::Object(env)) = req.agent_profile.as_ref().and_then(|p| p.get("env")) {
        for (key, value) in env {
            if let (true, Some(v)) = (env_key_is_valid(key), value.as_str()) {
                check_env_var(key, v).map_err(|e| bad(format!("agentProfile.{e}")))?;
            }
        }
    }
    check_env_size(req)?;
    for (name, text) in [("prompt", &req.prompt), ("systemPromptAppend", &req.system_prompt_append)] {
        if matches!(text, Some(t) if t.contains('\0')) {
            return Err(bad(format!("{name} must not contain NUL characters")));
        }
    }
    Ok(())
}

/// Counts and sizes of `providerArgs`: they are the runner's argv.
fn check_provider_args(args: &[String]) -> Result<(), InvalidRequest> {
    if args.len() > MAX_PROVIDER_ARGS {
        return Err(bad(format!("providerArgs has {} entries, at most {MAX_PROVIDER_ARGS} are accepted", args.len())));
    }
    let mut total = 0;
    for (i, arg) in args.iter().enumerate() {
        if arg.contains('\0') {
            return Err(bad("providerArgs must not contain NUL characters"));
        }
        if arg.len() > MAX_PROVIDER_ARG_BYTES {
            return Err(bad(format!(
                "providerArgs[{i}] is {} bytes long, at most {MAX_PROVIDER_ARG_BYTES} are accepted (pass long text in a file)",
                arg.len()
            )));
        }
        total += arg.len();
    }
    if total > MAX_PROVIDER_ARGS_BYTES {
        return Err(bad(format!(
            "providerArgs hold {total} bytes together, at most {MAX_PROVIDER_ARGS_BYTES} are accepted"
        )));
    }
    Ok(())
}

/// Counts and sizes of the variables a request adds to the runner's environment: `env` and the
/// string values of `agentProfile.env` (the keys the planner keeps).
fn check_env_size(req: &SpawnRequest) -> Result<(), InvalidRequest> {
    let profile = match req.agent_profile.as_ref().and_then(|p| p.get("env")) {
        Some(Value::Object(m)) => m.iter().filter_map(|(k, v)| Some((k.as_str(), v.as_str()?))).collect(),
        _ => Vec::new(),
    };
    let vars: Vec<(&str, &str)> = req.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(profile).collect();
    if vars.len() > MAX_ENV_VARS {
        return Err(bad(format!(
            "env and agentProfile.env hold {} variables, at most {MAX_ENV_VARS} are accepted",
            vars.len()
        )));
    }
    let mut total = 0;
    for (key, value) in &vars {
        // A key is no longer than the other one-line fields.
        if key.len() > MAX_FIELD {
            return Err(bad(format!("env key of {} bytes is too long, at most {MAX_FIELD}", key.len())));
        }
        if value.len() > MAX_ENV_VALUE_BYTES {
            return Err(bad(format!(
                "env value of {key} is {} bytes long, at most {MAX_ENV_VALUE_BYTES} are accepted (pass long text in a file)",
                value.len()
            )));
        }
        total += key.len() + value.len() + 1;
    }
    if total > MAX_ENV_BYTES {
        return Err(bad(format!(
            "env and agentProfile.env hold {total} bytes together, at most {MAX_ENV_BYTES} are accepted"
        )));
    }
    Ok(())
}

fn check_one_line(name: &str, value: &str) -> Result<(), InvalidRequest> {
    if value.len() > MAX_FIELD && name != "cwd" {
        return Err(bad(format!("{name} is {} bytes long, at most {MAX_FIELD}", value.len())));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(bad(format!("{name} must not contain control characters (newline, tab, NUL, escape)")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_request_parses() {
        let r = parse(r#"{"provider":"claude","cwd":"/p"}"#).unwrap();
        assert_eq!(r.provider, "claude");
        assert_eq!(r.lifecycle, None);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases = [
            ("", "empty"),
            ("{", "invalid spawn request"),
            (r#"{"cwd":"/p"}"#, "missing field `provider`"),
            (r#"{"provider":"claude"}"#, "missing field `cwd`"),
            (r#"{"provider":1,"cwd":"/p"}"#, "invalid type"),
            (r#"{"provider":"claude","cwd":"/p","lable":"x"}"#, "unknown field `lable`"),
            (r#"{"provider":"","cwd":"/p"}"#, "provider is required"),
            (r#"{"provider":"a/b","cwd":"/p"}"#, "not valid"),
            (r#"{"provider":"claude","cwd":""}"#, "cwd is required"),
            (r#"{"provider":"claude","cwd":"/p","env":{"1X":"y"}}"#, "not a valid variable name"),
            (r#"{"provider":"claude","cwd":"/p","env":{"X":"a\u0000b"}}"#, "NUL"),
            (r#"{"provider":"claude","cwd":"/p","label":"a\nb"}"#, "control characters"),
            (r#"{"provider":"claude","cwd":"/p","lifecycle":"forever"}"#, "unknown variant"),
            (r#"{"provider":"claude","cwd":"/p","tags":["a,b"]}"#, "comma"),
            (r#"{"provider":"claude","cwd":"/p","spawnRequestId":" "}"#, "spawnRequestId"),
            (r#"{"provider":"claude","cwd":"/p","env":{"EXIT_CODE":"exited"}}"#, "EXIT_CODE is reserved"),
            (r#"{"provider":"claude","cwd":"/p","env":{"MONITOR_UNIT":"x"}}"#, "reserved"),
            (r#"{"provider":"claude","cwd":"/p","agentProfile":{"env":{"SERVICE_RESULT":"x"}}}"#, "agentProfile.env"),
            (r#"{"provider":"claude","cwd":"/p","env":{"K":"a\uFDD0"}}"#, "noncharacter"),
            (r#"{"provider":"claude","cwd":"/p","relayInjectionEvents":{}}"#, "invalid type"),
            ("[]", "invalid spawn request"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    /// A request with `field` set to `value`.
    fn with(field: &str, value: Value) -> Result<SpawnRequest, InvalidRequest> {
        let mut req = serde_json::json!({"provider": "claude", "cwd": "/p"});
        req[field] = value;
        parse(&req.to_string())
    }

    #[test]
    fn what_reaches_argv_and_the_environment_is_bounded() {
        let big = |n: usize| "x".repeat(n);
        let vars =
            |n: usize, len: usize| Value::Object((0..n).map(|i| (format!("K{i}"), Value::String(big(len)))).collect());
        let too_much = [
            ("providerArgs", serde_json::json!(vec!["-x"; 300_000]), "providerArgs has 300000 entries, at most 256"),
            ("providerArgs", serde_json::json!([big(200_000)]), "providerArgs[0] is 200000 bytes long, at most 8192"),
            ("providerArgs", serde_json::json!(vec![big(8192); 9]), "at most 65536"),
            ("env", vars(257, 1), "257 variables, at most 256"),
            ("env", vars(1, 32 * 1024 + 1), "env value of K0 is 32769 bytes long, at most 32768"),
            ("env", vars(9, 30_000), "at most 262144"),
            ("agentProfile", serde_json::json!({"env": vars(257, 1)}), "257 variables"),
            ("tags", serde_json::json!(vec!["t"; 65]), "tags has 65 entries, at most 64"),
            ("capabilities", serde_json::json!(vec!["c"; 65]), "capabilities has 65 entries, at most 64"),
            ("cwd", serde_json::json!(format!("/{}", big(4096))), "cwd is 4097 bytes long, at most 4096"),
        ];
        for (field, value, want) in too_much {
            let err = with(field, value).unwrap_err().to_string();
            assert!(err.contains(want), "{field}: {err:?} lacks {want:?}");
            assert!(!err.contains('\n') && err.len() < 200, "one short line: {err:?}");
        }
        let at_limit = [
            ("providerArgs", serde_json::json!(vec![big(256); 256])),
            ("providerArgs", serde_json::json!(vec![big(8192); 8])),
            ("env", vars(256, 1)),
            ("env", vars(7, 32 * 1024)),
            ("tags", serde_json::json!(vec!["t"; 64])),
        ];
        for (field, value) in at_limit {
            with(field, value).unwrap_or_else(|e| panic!("{field} at the limit refused: {e}"));
        }
        // Together: 200 request variables and 100 of the profile are too many.
        let mut req = serde_json::json!({"provider": "claude", "cwd": "/p", "env": vars(200, 1)});
        req["agentProfile"] = serde_json::json!({"env": vars(100, 1)});
        assert!(parse(&req.to_string()).unwrap_err().to_string().contains("300 variables"));
    }

    #[test]
    fn fields_the_orchestrator_sends_are_accepted_and_others_refused_with_the_list() {
        let r = parse(
            r#"{"provider":"claude","cwd":"/p","workspaceSymlinks":["a"],"resumeWorkspace":{"branch":"b","mode":"attach"},
                "acquisition":{"mode":"project-root"},"relayInjectionEvents":[{"t":1}]}"#,
        )
        .unwrap();
        assert_eq!(r.ignored_fields(), ["workspaceSymlinks", "resumeWorkspace", "acquisition"]);
        assert_eq!(r.relay_injection_events.len(), 1);
        let err = parse(r#"{"provider":"claude","cwd":"/p","bogus":1}"#).unwrap_err().to_string();
        for valid in ["`provider`", "`relayInjectionEvents`", "`workspaceSymlinks`", "`acquisition`", "`limits`"] {
            assert!(err.contains(valid), "{err} lacks {valid}");
        }
    }

    #[test]
    fn env_entries_fit_a_process_environment() {
        assert!(check_env_var("K", &"x".repeat(MAX_ENV_ENTRY - 2)).is_ok());
        assert!(check_env_var("K", &"x".repeat(MAX_ENV_ENTRY - 1)).unwrap_err().contains("as a file"));
        assert!(check_env_var("K", "tab\tnew\nline \"$`\\ \u{feff} ünï").is_ok());
        assert!(check_env_var("K", "\u{10FFFF}").is_err(), "a noncharacter");
        assert!(check_env_var("TRIGGER_PATH", "x").is_err());
        assert!(check_env_var("TRIGGERED", "x").is_ok());
    }

    #[test]
    fn env_keys() {
        assert!(env_key_is_valid("_A1"));
        assert!(!env_key_is_valid("A-B"));
        assert!(!env_key_is_valid(""));
    }
}
