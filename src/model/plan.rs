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
}

/// A file the spawn writes before starting the unit (mode 0600 in a 0700 directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFile {
    pub path: PathBuf,
    pub contents: String,
}

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
}

/// Directory of agent logs, as the seed's `LOG_DIR`.
pub fn log_dir(home: &Path) -> PathBuf {
    home.join(".agent-relay").join("logs")
}

/// Directory of runner info files, as the seed's `RUNNER_INFO_DIR`.
pub fn runner_info_dir(home: &Path) -> PathBuf {
    home.join(".agent-relay").join("runners")
}

/// The label used for names: the request's, `task-N[-label]`, or a default. With a
/// spawnRequestId and no label the default is the fixed `session`, so that every retry of one
/// request derives the same unit name and systemd's `UnitExists` settles races.
pub fn effective_label(req: &SpawnRequest, now_ms: u64) -> String {
    let label = req.label.clone().filter(|l| !l.trim().is_empty());
    match (&req.task_id, label) {
        (Some(t), Some(l)) => format!("task-{t}-{l}"),
        (Some(t), None) => format!("task-{}", task_text(t)),
        (None, Some(l)) => l,
        (None, None) if req.spawn_request_id.is_some() => "session".to_string(),
        (None, None) => naming::default_label(now_ms),
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
    let uuid8 = &inp.random_hex[..8.min(inp.random_hex.len())];
    let agent_id =
        req.agent_id.clone().unwrap_or_else(|| naming::agent_id(&cfg.hostname, &req.provider, &label, uuid8));
    let unique = match req.spawn_request_id.as_deref() {
        Some(rid) => naming::UniqueId::SpawnRequest(rid),
        None => naming::UniqueId::Agent(&agent_id),
    };
    let session = naming::session_name(&cfg.tmux_prefix, &req.provider, &label, unique)
        .map_err(|e| crate::model::request::InvalidRequest(e.to_string()))?;
    let unit = naming::agent_unit_name(&session);
    let approval = req.approval_mode.clone().unwrap_or_else(|| "guarded".into());
    let lifecycle = req.lifecycle.unwrap_or_default();
    let workspace_mode = req.workspace_mode.clone().unwrap_or_else(|| "inherit".into());

    // A directory per attempt: racing spawns of one request never share (or delete) files.
    let attempt = inp.random_hex.get(8..16).unwrap_or("00000000");
    let agent_dir = inp.runtime_root.join("agents").join(format!("{session}.{attempt}"));
    let env_file = agent_dir.join("env");
    let log_file = log_dir(inp.home).join(format!("{session}.log"));
    let runner_info_file = runner_info_dir(inp.home).join(format!("{session}.json"));

    let mut payloads = Vec::new();
    let mut payload = |name: &str, contents: String| {
        let path = agent_dir.join(name);
        payloads.push(PayloadFile { path: path.clone(), contents });
        path.display().to_string()
    };
    let prompt_file = req.prompt.clone().filter(|p| !p.is_empty()).map(|p| payload("prompt", p));
    let append_file =
        req.system_prompt_append.clone().filter(|p| !p.is_empty()).map(|p| payload("system-prompt-append", p));
    let profile_file = req
        .agent_profile
        .as_ref()
        .map(|p| payload("agent-profile.json", serde_json::Value::Object(p.clone()).to_string()));
    let workspace_file =
        req.workspace.as_ref().map(|w| payload("workspace.json", serde_json::Value::Object(w.clone()).to_string()));

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
        ("AGENT_RELAY_ORCHESTRATOR_URL", orchestrator_url.clone()),
        ("AGENT_RELAY_ARTIFACT_URL", format!("{orchestrator_url}/artifacts")),
        ("AGENT_RELAY_APPROVAL", approval),
        ("AGENT_RELAY_TAGS", dedupe(tags).join(",")),
        ("AGENT_RELAY_CAPS", caps.clone()),
        ("AGENT_RELAY_CAPABILITIES", caps),
        ("AGENT_RELAY_HEADLESS", "1".into()),
        ("AGENT_RELAY_LOG_FILE", log_file.display().to_string()),
        ("AGENT_RELAY_TMUX_SESSION", session.clone()),
        ("AGENT_RELAY_LABEL", label.clone()),
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
        ("AGENT_RELAY_WORKSPACE_JSON_FILE", workspace_file),
        ("AGENT_RELAY_AUTOMATION_ID", req.automation_id.clone()),
        ("AGENT_RELAY_AUTOMATION_RUN_ID", req.automation_run_id.clone()),
        ("AGENT_RELAY_PROMPT_FILE", prompt_file),
        ("AGENT_RELAY_SYSTEM_PROMPT_APPEND_FILE", append_file),
    ];
    public.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    let environment: Vec<(String, String)> = public.into_iter().map(|(k, v)| (k.to_string(), v)).collect();

    // Caller-supplied variables, later ones winning: config env, profile env, request env.
    let mut secret: BTreeMap<String, String> = BTreeMap::new();
    if let Some(token) = &cfg.token {
        secret.insert("AGENT_RELAY_TOKEN".into(), token.clone());
    }
    secret.extend(cfg.env.clone());
    secret.extend(profile_env(req.agent_profile.as_ref()));
    secret.extend(req.env.clone());
    if workspace_mode == "isolated" {
        secret.remove("PUBLIC_DIR");
    }
    // An EnvironmentFile= overrides Environment= (systemd.exec(5)), so authoritative keys are
    // dropped from the file rather than trusted to lose.
    for (k, _) in &environment {
        if k != "PATH" {
            secret.remove(k);
        }
    }
    secret.remove("PATH");
    let secret_env: Vec<(String, String)> = secret.into_iter().collect();

    let record_exit_argv = inp.record_exit.map(|(exe, dir)| {
        let mut argv: Vec<String> = vec![
            exe.display().to_string(),
            "record-exit".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--unit".into(),
            unit.clone(),
            "--session".into(),
            session.clone(),
            "--agent-id".into(),
            agent_id.clone(),
            "--provider".into(),
            req.provider.clone(),
            "--log-file".into(),
            log_file.display().to_string(),
        ];
        if let Some(rid) = &req.spawn_request_id {
            argv.extend(["--spawn-request-id".to_string(), rid.clone()]);
        }
        argv
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

/// Text of a systemd `EnvironmentFile=`: one `KEY="value"` per line, with `\`, `"`, `$` and
/// `` ` `` escaped; newlines stay literal inside the quotes, which systemd accepts.
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
