//! Spawn planning: request + config + host facts → everything a spawn creates (names, argv,
//! environment split into public and secret parts, payload files). Pure: no IO, no clock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::model::config::Config;
use crate::model::meta::AgentMeta;
use crate::model::naming;
use crate::model::request::{Lifecycle, SpawnRequest, TaskId};

/// Host facts the plan depends on, gathered by the IO shell.
#[derive(Debug, Clone)]
pub struct PlanInputs<'a> {
    pub config: &'a Config,
    pub home: &'a Path,
    /// `$XDG_RUNTIME_DIR/agent-relay-systemd`: per-agent secret and payload files live here.
    pub runtime_root: &'a Path,
    /// The caller's `PATH`, extended for the runner.
    pub caller_path: &'a str,
    /// Absolute argv prefix that launches the runner (`<provider>-relay` or the config's).
    pub launcher: &'a [String],
    /// The canonical working directory (already checked to be inside baseDir).
    pub cwd: &'a Path,
    pub now_ms: u64,
    /// `(binary, exits dir)` for the `ExecStopPost=` exit recorder, when available.
    pub record_exit: Option<(&'a Path, &'a Path)>,
    /// 32 random hex digits.
    pub random_hex: &'a str,
    /// The caller's environment (our CLI process's, as the seed's `process.env`): underneath
    /// everything else when the config inherits it, filtered by [`inheritable`].
    pub inherited_env: &'a [(String, String)],
}

/// A file the spawn writes before starting the unit (mode 0600 in a 0700 directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFile {
    pub path: PathBuf,
    pub contents: String,
}

/// The hidden verb of our binary in front of every runner: see `io::log_tee`.
pub const LOG_TEE_VERB: &str = "log-tee";

/// The whole spawn, decided before anything is created.
#[derive(Debug, Clone, PartialEq)]
pub struct SpawnPlan {
    pub meta: AgentMeta,
    pub unit: String,
    pub description: String,
    pub cwd: PathBuf,
    pub argv: Vec<String>,
    /// Non-secret, supervisor-owned variables: `Environment=` (visible in `systemctl show`).
    pub environment: Vec<(String, String)>,
    /// The token and every caller-supplied variable: the 0600 `EnvironmentFile=`.
    pub secret_env: Vec<(String, String)>,
    /// Per-agent runtime directory (0700) holding `env` and the payload files.
    pub agent_dir: PathBuf,
    pub env_file: PathBuf,
    pub payloads: Vec<PayloadFile>,
    pub log_file: PathBuf,
    pub runner_info_file: PathBuf,
    pub lifecycle: Lifecycle,
    pub limits: crate::model::limits::Limits,
    /// argv of the `ExecStopPost=` that records the exit (`None`: no recorder available).
    pub record_exit_argv: Option<Vec<String>>,
    /// The words in front of [`SpawnPlan::argv`] in `ExecStart=`: our `log-tee`, which writes the
    /// run's marker and the times of its output (`None`: our binary is not known).
    pub log_tee_argv: Option<Vec<String>>,
    /// Supervisor-owned keys the config, the agent profile or the request set: not applied.
    pub dropped_env: Vec<String>,
}

/// Every variable the supervisor sets for the runner, including the ones it sets only for some
/// requests, and the inline forms of the payloads it passes as files (a caller's
/// `AGENT_RELAY_PROMPT` would otherwise reach the runner beside our `AGENT_RELAY_PROMPT_FILE`).
/// No caller sets these: the inherited environment is filtered, the config, profile and request
/// env are stripped of them (and told), and the rest is set last (seed #1256, #330).
pub const SUPERVISOR_OWNED: &[&str] = &[
    "PATH",
    "AGENT_RELAY_URL",
    "AGENT_RELAY_ORCHESTRATOR_ID",
    "AGENT_RELAY_ORCHESTRATOR_URL",
    "AGENT_RELAY_ARTIFACT_URL",
    "AGENT_RELAY_APPROVAL",
    "AGENT_RELAY_TAGS",
    "AGENT_RELAY_CAPS",
    "AGENT_RELAY_CAPABILITIES",
    "AGENT_RELAY_HEADLESS",
    "AGENT_RELAY_LOG_FILE",
    "AGENT_RELAY_TMUX_SESSION",
    "AGENT_RELAY_TMUX_OWNER",
    "AGENT_RELAY_LABEL",
    "AGENT_RELAY_SHARED_MCP_URL",
    "AGENT_RELAY_LIFECYCLE",
    "AGENT_RELAY_WORKSPACE_MODE",
    "AGENT_RELAY_AGENT_ID",
    "AGENT_RELAY_RUNNER_INFO_FILE",
    "AGENT_RELAY_AGENT_PROFILE",
    "AGENT_RELAY_AGENT_PROFILE_JSON",
    "AGENT_RELAY_AGENT_PROFILE_JSON_FILE",
    "AGENT_RELAY_POLICY",
    "AGENT_RELAY_SPAWN_REQUEST_ID",
    "AGENT_RELAY_TASK_ID",
    "AGENT_RELAY_WORKSPACE_JSON",
    "AGENT_RELAY_WORKSPACE_JSON_FILE",
    "AGENT_RELAY_AUTOMATION_ID",
    "AGENT_RELAY_AUTOMATION_RUN_ID",
    "AGENT_RELAY_PROMPT",
    "AGENT_RELAY_PROMPT_FILE",
    "AGENT_RELAY_SYSTEM_PROMPT_APPEND",
    "AGENT_RELAY_SYSTEM_PROMPT_APPEND_FILE",
    "AGENT_RELAY_INJECTION_EVENTS_JSON",
    "AGENT_RELAY_INJECTION_EVENTS_JSON_FILE",
];

/// The caller's own variables that describe it, not the runner: its working directory.
pub const CALLER_ONLY: &[&str] = &["PWD", "OLDPWD"];

/// Whether the supervisor sets `key` ([`SUPERVISOR_OWNED`]).
pub fn is_supervisor_owned(key: &str) -> bool {
    SUPERVISOR_OWNED.contains(&key)
}

/// Whether a variable of the caller's environment is passed on: a valid name that neither
/// systemd ([`crate::model::request::SYSTEMD_RUN_VARS`]) nor the supervisor owns, not the
/// caller's directory, and a value the env file and the runner's exec can carry. The rest is
/// dropped without a word: the caller did not ask for it.
pub fn inheritable(key: &str, value: &str) -> bool {
    use crate::model::request::{env_key_is_valid, env_value_problem, is_systemd_run_var, MAX_ENV_ENTRY};
    env_key_is_valid(key)
        && !is_systemd_run_var(key)
        && !is_supervisor_owned(key)
        && !CALLER_ONLY.contains(&key)
        && env_value_problem(value).is_none()
        && key.len() + 1 + value.len() <= MAX_ENV_ENTRY
}

/// The orchestrator's `orchestratorStateOwnerId()`: the first 16 hex digits of the SHA-256 of
/// its state file's path, `~/.agent-relay/orchestrator-sessions.json`. The runner stamps it on
/// its tmux session, and the orchestrator's wedged-session reaper reaps only sessions with its
/// own id: the same id keeps ours in its care, as its own.
pub fn tmux_owner(home: &Path) -> String {
    use sha2::{Digest, Sha256};
    let state_file = home.join(".agent-relay").join("orchestrator-sessions.json");
    Sha256::digest(state_file.display().to_string().as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Linux's bound on one argument or variable of an `execve` (`MAX_ARG_STRLEN`, 32 pages): a
/// longer one fails it with E2BIG.
pub const MAX_ARG_STRLEN: usize = 32 * 4096;
/// `ARG_MAX` with the usual 8 MiB stack: argv and environment together.
pub const TYPICAL_ARG_MAX: usize = 2 * 1024 * 1024;

impl SpawnPlan {
    /// The unit's `ExecStart=` words: the log writer's, then the runner's.
    pub fn exec_start(&self) -> Vec<String> {
        self.log_tee_argv.iter().flatten().chain(&self.argv).cloned().collect()
    }

    /// What the runner's `execve` carries of ours: its largest string and the bytes of all,
    /// argv and the variables we set (`Environment=` and the env file), NULs included; the log
    /// writer's words too, which the first `execve` (systemd's, of `log-tee`) carries.
    pub fn exec_size(&self) -> (usize, usize) {
        let args = self.exec_start().into_iter().map(|a| a.len() + 1);
        let vars = self.environment.iter().chain(&self.secret_env).map(|(k, v)| k.len() + v.len() + 2);
        args.chain(vars).fold((0, 0), |(largest, total), n| (largest.max(n), total + n))
    }

    /// The runner's `execve` would fail with E2BIG.
    pub fn exec_too_large(&self) -> bool {
        let (largest, total) = self.exec_size();
        largest > MAX_ARG_STRLEN || total > TYPICAL_ARG_MAX
    }
}

/// Directory of agent logs, as the seed's `LOG_DIR`.
pub fn log_dir(home: &Path) -> PathBuf {
    home.join(".agent-relay").join("logs")
}

/// Directory of runner info files, as the seed's `RUNNER_INFO_DIR`.
pub fn runner_info_dir(home: &Path) -> PathBuf {
    home.join(".agent-relay").join("runners")
}

// Every file of an agent is named by its session, and its session by its unit name
// ([`naming::session_of_unit`]): the paths below are derived from those, never read from the
// unit's metadata, which a caller's text may have forged.

/// An agent's log file: `~/.agent-relay/logs/<session>.log`.
pub fn log_file(home: &Path, session: &str) -> PathBuf {
    log_dir(home).join(format!("{session}.log"))
}

/// An agent's runner-info file: `~/.agent-relay/runners/<session>.json`.
pub fn runner_info_file(home: &Path, session: &str) -> PathBuf {
    runner_info_dir(home).join(format!("{session}.json"))
}

/// The spawn request's file in an attempt's directory.
pub const REQUEST_FILE_NAME: &str = "request.json";

/// The prompt's file in an attempt's directory.
pub const PROMPT_FILE_NAME: &str = "prompt";

/// Whether `path` can be the prompt file of `session`: `…/<session>.<attempt>/prompt`, where
/// the attempt is hex (what [`agent_dir`] names). The recorder empties only such a file.
pub fn is_prompt_file_of(path: &Path, session: &str) -> bool {
    let dir = path.parent().and_then(|d| d.file_name()).and_then(|n| n.to_str());
    let attempt = dir.and_then(|d| d.strip_prefix(session)).and_then(|rest| rest.strip_prefix('.'));
    path.file_name().is_some_and(|n| n == PROMPT_FILE_NAME)
        && path.is_absolute()
        && attempt.is_some_and(|a| !a.is_empty() && a.chars().all(|c| c.is_ascii_hexdigit()))
}

/// One attempt's secret and payload directory: `<root>/agents/<session>.<attempt>`.
pub fn agent_dir(files_root: &Path, session: &str, attempt: &str) -> PathBuf {
    files_root.join("agents").join(format!("{session}.{attempt}"))
}

/// The agent's label (`AGENT_RELAY_LABEL`, `--label`, the agent id): the request's, else a
/// default. With a spawnRequestId and no label the default is the fixed `session`, so that every
/// retry of one request derives the same unit name and systemd's `UnitExists` settles races.
pub fn effective_label(req: &SpawnRequest, now_ms: u64) -> String {
    match req.label.clone().filter(|l| !l.trim().is_empty()) {
        Some(l) => l,
        None if req.spawn_request_id.is_some() => "session".to_string(),
        None => naming::default_label(now_ms),
    }
}

/// The label the session is named by, as the orchestrator's `sessionLabelForSpawn`: with a
/// `taskId` it is `task-N-<label>`, or `task-N` alone when the label is (or starts with)
/// `task-N` / `task-N:` already, so a label like "task-7: fix lint" gives no `task-7-task-7`. With
/// a taskId and no label it is `task-N` (the orchestrator appends its default label).
pub fn session_label(req: &SpawnRequest, label: &str) -> String {
    let Some(task) = &req.task_id else { return label.to_string() };
    let base = format!("task-{}", task_text(task));
    let given = req.label.as_deref().map(str::trim).unwrap_or_default();
    let lower = given.to_lowercase();
    if given.is_empty() || lower == base || lower.starts_with(&format!("{base}:")) {
        base
    } else {
        format!("{base}-{given}")
    }
}

fn task_text(t: &TaskId) -> String {
    t.to_string()
}

/// An agent unit's `Description=`: `Agent Relay <provider> agent "<label>" (<agent id>)`.
pub fn description(provider: &str, label: &str, agent_id: &str) -> String {
    format!("Agent Relay {provider} agent \"{label}\" ({agent_id})")
}

/// Whether a unit's description may be that of agent `agent_id`. The description ends with the
/// agent id (see [`description`]), and a unit listing carries it: a lookup by agent id can narrow
/// the units to read from a listing alone, then confirm by the unit's metadata.
pub fn description_may_name(description: &str, agent_id: &str) -> bool {
    description.strip_suffix(')').is_some_and(|d| d.strip_suffix(agent_id).is_some_and(|d| d.ends_with(" (")))
}

/// Builds the plan. Fails only when no usable name can be derived.
pub fn plan(req: &SpawnRequest, inp: &PlanInputs<'_>) -> Result<SpawnPlan, crate::model::request::InvalidRequest> {
    let cfg = inp.config;
    let limits = crate::model::limits::resolve(req.limits.as_ref(), cfg.limits.as_ref())
        .map_err(crate::model::request::InvalidRequest)?;
    let label = effective_label(req, inp.now_ms);
    // The seed's agent id ends with 8 random hex digits; with a spawn request id, ours are the
    // start of the unit's unique part, so that a lookup by agent id reads that unit alone.
    let tail = match req.spawn_request_id.as_deref() {
        Some(rid) => naming::id_tail_for(rid),
        None => inp.random_hex[..8.min(inp.random_hex.len())].to_string(),
    };
    let agent_id =
        req.agent_id.clone().unwrap_or_else(|| naming::agent_id(&cfg.hostname, &req.provider, &label, &tail));
    let unique = match req.spawn_request_id.as_deref() {
        Some(rid) => naming::UniqueId::SpawnRequest(rid),
        None => naming::UniqueId::Agent(&agent_id),
    };
    let session = naming::session_name(&cfg.tmux_prefix, &req.provider, &session_label(req, &label), unique)
        .map_err(|e| crate::model::request::InvalidRequest(e.to_string()))?;
    let unit = naming::agent_unit_name(&session);
    let approval = req.approval_mode.clone().unwrap_or_else(|| "guarded".into());
    let lifecycle = req.lifecycle.unwrap_or_default();
    let workspace_mode = req.workspace_mode.clone().unwrap_or_else(|| "inherit".into());

    // A directory per attempt: racing spawns of one request never share (or delete) files.
    let attempt = inp.random_hex.get(8..16).unwrap_or("00000000");
    let agent_dir = agent_dir(inp.runtime_root, &session, attempt);
    let env_file = agent_dir.join("env");
    let log_file = log_file(inp.home, &session);
    let runner_info_file = runner_info_file(inp.home, &session);

    let mut payloads = Vec::new();
    let mut payload = |name: &str, contents: String| {
        let path = agent_dir.join(name);
        payloads.push(PayloadFile { path: path.clone(), contents });
        path.display().to_string()
    };
    let prompt_file = req.prompt.clone().filter(|p| !p.is_empty()).map(|p| payload(PROMPT_FILE_NAME, p));
    let prompt_path = prompt_file.as_ref().map(|_| agent_dir.join(PROMPT_FILE_NAME));
    let append_file =
        req.system_prompt_append.clone().filter(|p| !p.is_empty()).map(|p| payload("system-prompt-append", p));
    let profile_file = req
        .agent_profile
        .as_ref()
        .map(|p| payload("agent-profile.json", serde_json::Value::Object(p.clone()).to_string()));
    let workspace_file =
        req.workspace.as_ref().map(|w| payload("workspace.json", serde_json::Value::Object(w.clone()).to_string()));
    // The request as it was taken (with the agent id it was given), for `restart` to start the
    // successor from: a 0600 file beside the env file, gone with it.
    let mut taken = req.clone();
    taken.agent_id = Some(agent_id.clone());
    if let Ok(text) = serde_json::to_string(&taken) {
        payload(REQUEST_FILE_NAME, text);
    }
    let events_file = (!req.relay_injection_events.is_empty()).then(|| {
        payload("injection-events.json", serde_json::Value::Array(req.relay_injection_events.clone()).to_string())
    });

    let argv = runner_argv(req, inp, &label, &agent_id, &approval);

    let meta = AgentMeta {
        agent_id: agent_id.clone(),
        provider: req.provider.clone(),
        session: session.clone(),
        label: label.clone(),
        approval_mode: approval.clone(),
        lifecycle: lifecycle.as_str().into(),
        workspace_mode: workspace_mode.clone(),
        log_file: log_file.display().to_string(),
        spawn_request_id: req.spawn_request_id.clone(),
        policy_name: req.policy_name.clone(),
        automation_id: req.automation_id.clone(),
        automation_run_id: req.automation_run_id.clone(),
        model: req.model.clone(),
        effort: req.effort.clone(),
        profile: req.profile.clone(),
        rig: req.rig.clone(),
        task_id: req.task_id.as_ref().map(task_text),
        tags: (!req.tags.is_empty()).then(|| req.tags.join(",")),
        capabilities: (!req.capabilities.is_empty()).then(|| req.capabilities.join(",")),
        limit_memory_max: limits.memory_max.map(|v| v.to_string()),
        limit_memory_high: limits.memory_high.map(|v| v.to_string()),
        limit_tasks_max: limits.tasks_max.map(|v| v.to_string()),
        limit_cpu_quota: limits.cpu_quota_percent.map(|v| v.to_string()),
    };

    // The supervisor-owned block: set last, never overridable by callers (seed #1256, #330).
    let origin = if req.requested_via.as_deref() == Some("mcp") { "agent-spawned" } else { "dashboard-spawned" };
    let mut tags: Vec<String> = vec!["headless".into(), origin.into(), cfg.hostname.clone()];
    tags.extend(req.tags.iter().cloned());
    let caps = dedupe(req.capabilities.clone()).join(",");
    let orchestrator_url = format!("http://127.0.0.1:{}", cfg.api_port);
    let mut public: Vec<(&str, String)> = vec![
        ("PATH", runner_path(inp.home, inp.caller_path)),
        ("AGENT_RELAY_URL", cfg.relay_url.clone()),
        ("AGENT_RELAY_ORCHESTRATOR_ID", cfg.id.clone()),
        ("AGENT_RELAY_ORCHESTRATOR_URL", orchestrator_url.clone()),
        // The orchestrator's artifact proxy (`artifactProxyBaseUrl`).
        ("AGENT_RELAY_ARTIFACT_URL", format!("{orchestrator_url}/api/artifacts")),
        ("AGENT_RELAY_APPROVAL", approval),
        ("AGENT_RELAY_TAGS", dedupe(tags).join(",")),
        ("AGENT_RELAY_CAPS", caps.clone()),
        ("AGENT_RELAY_CAPABILITIES", caps),
        ("AGENT_RELAY_HEADLESS", "1".into()),
        ("AGENT_RELAY_LOG_FILE", log_file.display().to_string()),
        ("AGENT_RELAY_TMUX_SESSION", session.clone()),
        ("AGENT_RELAY_TMUX_OWNER", tmux_owner(inp.home)),
        ("AGENT_RELAY_LABEL", label.clone()),
        ("AGENT_RELAY_SHARED_MCP_URL", cfg.shared_mcp_url.clone()),
        ("AGENT_RELAY_LIFECYCLE", lifecycle.as_str().into()),
        ("AGENT_RELAY_WORKSPACE_MODE", workspace_mode.clone()),
        ("AGENT_RELAY_AGENT_ID", agent_id.clone()),
        ("AGENT_RELAY_RUNNER_INFO_FILE", runner_info_file.display().to_string()),
    ];
    let optional = [
        ("AGENT_RELAY_AGENT_PROFILE", req.profile.clone()),
        ("AGENT_RELAY_AGENT_PROFILE_JSON_FILE", profile_file),
        ("AGENT_RELAY_POLICY", req.policy_name.clone()),
        ("AGENT_RELAY_SPAWN_REQUEST_ID", req.spawn_request_id.clone()),
        ("AGENT_RELAY_TASK_ID", req.task_id.as_ref().map(task_text)),
        ("AGENT_RELAY_WORKSPACE_JSON_FILE", workspace_file),
        ("AGENT_RELAY_AUTOMATION_ID", req.automation_id.clone()),
        ("AGENT_RELAY_AUTOMATION_RUN_ID", req.automation_run_id.clone()),
        ("AGENT_RELAY_PROMPT_FILE", prompt_file),
        ("AGENT_RELAY_SYSTEM_PROMPT_APPEND_FILE", append_file),
        ("AGENT_RELAY_INJECTION_EVENTS_JSON_FILE", events_file),
    ];
    public.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    debug_assert!(public.iter().all(|(k, _)| is_supervisor_owned(k)), "every key we set is in SUPERVISOR_OWNED");
    let environment: Vec<(String, String)> = public.into_iter().map(|(k, v)| (k.to_string(), v)).collect();

    // Layers, later ones winning: the caller's environment, the token, config env, profile env,
    // request env (the seed's order). Supervisor-owned keys are in `environment` and never in
    // the file: an EnvironmentFile= overrides Environment= (systemd.exec(5)).
    let mut secret: BTreeMap<String, String> = BTreeMap::new();
    if cfg.inherit_environment {
        secret.extend(inp.inherited_env.iter().filter(|(k, v)| inheritable(k, v)).cloned());
    }
    if let Some(token) = &cfg.token {
        secret.insert("AGENT_RELAY_TOKEN".into(), token.clone());
    }
    let mut dropped_env: Vec<String> = Vec::new();
    for layer in [cfg.env.clone(), profile_env(req.agent_profile.as_ref()), req.env.clone()] {
        for (k, v) in layer {
            if is_supervisor_owned(&k) {
                dropped_env.push(k);
            } else {
                secret.insert(k, v);
            }
        }
    }
    dropped_env.sort();
    dropped_env.dedup();
    if workspace_mode == "isolated" {
        secret.remove("PUBLIC_DIR");
    }
    let secret_env: Vec<(String, String)> = secret.into_iter().collect();

    // `--flag=value`, one word each: a value that begins with `-` (an agentId or spawnRequestId
    // of `--unit=…`) stays a value and forges no flag of the recorder.
    let record_exit_argv = inp.record_exit.map(|(exe, dir)| {
        let mut argv: Vec<String> = vec![exe.display().to_string(), "record-exit".into()];
        let rid = req.spawn_request_id.as_ref().map(|rid| ("spawn-request-id", rid.clone()));
        // The first run reads the prompt; the recorder empties the file after every run, so a
        // restart does not do the task again, unless the request asks for a replay.
        let prompt = prompt_path
            .clone()
            .filter(|_| !req.replay_prompt_on_restart)
            .map(|p| ("prompt-file", p.display().to_string()));
        let flags = [
            ("dir", dir.display().to_string()),
            ("unit", unit.clone()),
            ("session", session.clone()),
            ("agent-id", agent_id.clone()),
            ("provider", req.provider.clone()),
            ("log-file", log_file.display().to_string()),
        ];
        argv.extend(flags.into_iter().chain(rid).chain(prompt).map(|(flag, value)| format!("--{flag}={value}")));
        argv
    });
    let log_tee_argv = inp.record_exit.map(|(exe, _)| {
        let times = crate::model::logtimes::times_file(&log_file);
        vec![exe.display().to_string(), LOG_TEE_VERB.into(), format!("--times={}", times.display()), "--".into()]
    });
    let description = description(&req.provider, &label, &agent_id);
    Ok(SpawnPlan {
        meta,
        unit,
        description,
        cwd: inp.cwd.to_path_buf(),
        argv,
        environment,
        secret_env,
        agent_dir,
        env_file,
        payloads,
        log_file,
        runner_info_file,
        lifecycle,
        limits,
        record_exit_argv,
        log_tee_argv,
        dropped_env,
    })
}

/// The runner's argv. The prompt and the system-prompt append are never on argv (visible in
/// `ps`): the runner reads them from `AGENT_RELAY_PROMPT_FILE` / `…_SYSTEM_PROMPT_APPEND_FILE`.
fn runner_argv(req: &SpawnRequest, inp: &PlanInputs<'_>, label: &str, agent_id: &str, approval: &str) -> Vec<String> {
    let mut args: Vec<String> = inp.launcher.to_vec();
    args.push(req.provider.clone());
    args.push("--headless".into());
    let mut flag = |f: &str, v: &str| {
        args.push(f.into());
        args.push(v.into());
    };
    flag("--cwd", &inp.cwd.display().to_string());
    flag("--relay-url", &inp.config.relay_url);
    flag("--approval", approval);
    for (f, v) in [("--rig", &req.rig), ("--model", &req.model), ("--effort", &req.effort), ("--profile", &req.profile)]
    {
        if let Some(v) = v {
            flag(f, v);
        }
    }
    flag("--label", label);
    flag("--agent-id", agent_id);
    if !req.tags.is_empty() {
        flag("--tags", &req.tags.join(","));
    }
    if !req.capabilities.is_empty() {
        flag("--caps", &req.capabilities.join(","));
    }
    if !req.provider_args.is_empty() {
        args.push("--".into());
        args.extend(req.provider_args.iter().cloned());
    }
    args
}

/// `~/.local/bin`, `~/.bun/bin`, `~/.npm-global/bin` first, then the caller's PATH, deduplicated.
pub fn runner_path(home: &Path, caller_path: &str) -> String {
    let extra = [".local/bin", ".bun/bin", ".npm-global/bin"].map(|p| home.join(p).display().to_string());
    let all = extra.into_iter().chain(caller_path.split(':').filter(|s| !s.is_empty()).map(str::to_string));
    dedupe(all.collect()).join(":")
}

fn dedupe(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items.into_iter().filter(|i| seen.insert(i.clone())).collect()
}

/// String values of `agentProfile.env`, as the seed's `agentProfileEnv`; invalid keys dropped.
fn profile_env(profile: Option<&serde_json::Map<String, serde_json::Value>>) -> BTreeMap<String, String> {
    let Some(serde_json::Value::Object(env)) = profile.and_then(|p| p.get("env")) else {
        return BTreeMap::new();
    };
    env.iter()
        .filter(|(k, _)| crate::model::request::env_key_is_valid(k))
        .filter_map(|(k, v)| v.as_str().filter(|s| !s.contains('\0')).map(|s| (k.clone(), s.to_string())))
        .collect()
}

/// Text of a systemd `EnvironmentFile=`: one `KEY="value"` per line. In double quotes systemd
/// (systemd.exec(5), as POSIX sh) keeps every character as written, whitespace at either end and
/// newlines included, except that `\` escapes exactly `\`, `"`, `$`, `` ` `` and a newline (which
/// it then drops): those four are escaped here, so a backslash before a newline stays a
/// backslash. Values must pass [`crate::model::request::env_value_problem`].
pub fn render_env_file(vars: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in vars {
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            if matches!(c, '\\' | '"' | '$' | '`') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push_str("\"\n");
    }
    out
}

#[cfg(test)]
mod tests;
