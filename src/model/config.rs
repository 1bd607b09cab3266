//! The orchestrator's config (`~/.agent-relay/orchestrator.json`): parsing, defaults and env
//! overrides, all pure; `io::config_file::load` is the one function that reads the file.

use crate::model::admission::{AdmissionConfig, MAX_CONCURRENT_SPAWNS_LIMIT};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const DEFAULT_TMUX_PREFIX: &str = "ar";
pub const DEFAULT_API_PORT: u16 = 4860;
pub const DEFAULT_RELAY_URL: &str = "http://127.0.0.1:4850";
/// Env var that names the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "AGENT_RELAY_ORCHESTRATOR_CONFIG";
/// Env var that switches inheriting the caller's environment on (`1`) or off (`0`).
pub const INHERIT_ENV: &str = "AGENT_RELAY_INHERIT_ENV";
/// The orchestrator's shared MCP listener (its `shared-callmux.ts`): URL, else host and port.
pub const SHARED_MCP_URL_ENV: &str = "AGENT_RELAY_SHARED_MCP_URL";
pub const SHARED_CALLMUX_HOST_ENV: &str = "AGENT_RELAY_SHARED_CALLMUX_HOST";
pub const SHARED_CALLMUX_PORT_ENV: &str = "AGENT_RELAY_SHARED_CALLMUX_PORT";
const DEFAULT_SHARED_CALLMUX_PORT: u16 = 4861;
/// Longest tmuxPrefix: session names are at most 80 bytes and need room for the rest.
const MAX_TMUX_PREFIX: usize = 32;

/// The effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The orchestrator's id (`id`, else `$AGENT_RELAY_ORCHESTRATOR_ID`, else the host name with
    /// `.` as `-`): the runner's `AGENT_RELAY_ORCHESTRATOR_ID`.
    pub id: String,
    pub hostname: String,
    pub relay_url: String,
    pub token: Option<String>,
    pub base_dir: PathBuf,
    pub env: BTreeMap<String, String>,
    pub tmux_prefix: String,
    pub api_port: u16,
    /// How the runner is launched: argv prefix before `<provider>`. `None`: `<provider>-relay`.
    pub runner_command: Option<Vec<String>>,
    /// Default resource limits of every agent.
    pub limits: Option<crate::model::limits::LimitsSpec>,
    /// How many days `reap` keeps exit records (default 7).
    pub exit_retention_days: u32,
    /// How many days `reap` keeps the log of an agent that is gone (default 7).
    pub log_retention_days: u32,
    /// `reap` cuts a log larger than this to its newer half (default 64 MiB).
    pub log_max_bytes: u64,
    /// The runner starts with the caller's environment underneath (as the seed's `process.env`).
    pub inherit_environment: bool,
    /// The orchestrator's shared MCP listener, the runner's `AGENT_RELAY_SHARED_MCP_URL`.
    pub shared_mcp_url: String,
    /// The spawn gate: slots, headroom, queue ([`crate::model::admission`]).
    pub admission: AdmissionConfig,
}

/// The file as written by the orchestrator ([`parse_file`]). Unknown keys are the orchestrator's
/// own and ignored.
#[derive(Debug, Default)]
struct ConfigFile {
    id: Option<String>,
    hostname: Option<String>,
    relay_url: Option<String>,
    token: Option<String>,
    base_dir: Option<String>,
    env: Option<BTreeMap<String, String>>,
    tmux_prefix: Option<String>,
    api_port: Option<u16>,
    runner_command: Option<Vec<String>>,
    limits: Option<crate::model::limits::LimitsSpec>,
    exit_retention_days: Option<u32>,
    log_retention_days: Option<u32>,
    log_max_mb: Option<u64>,
    inherit_environment: Option<bool>,
    max_concurrent_spawns: Option<u32>,
    spawn_min_free_mem_mb: Option<u64>,
    spawn_max_load_per_cpu: Option<f64>,
    spawn_max_memory_pressure: Option<f64>,
    spawn_admission_max_wait_ms: Option<u64>,
    spawn_admission_poll_ms: Option<u64>,
    spawn_admission_disabled: Option<bool>,
}

/// A config problem; always names the file (or variable) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error("environment variable {var} is not valid: {message}")]
    BadEnv { var: &'static str, message: String },
}

/// Facts about the process the defaults depend on.
#[derive(Clone)]
pub struct ConfigInputs<'a> {
    pub home: &'a Path,
    pub os_hostname: &'a str,
    /// Looks up an environment variable (the process env in the CLI, a map in tests).
    pub var: &'a dyn Fn(&str) -> Option<String>,
}

/// Where the config lives: `--config`, else `$AGENT_RELAY_ORCHESTRATOR_CONFIG`, else the default.
/// The flag is `true` only for `--config`: a missing file it names is an error, while a missing
/// file named by the variable means defaults, as the orchestrator's loader has it.
pub fn config_path(flag: Option<&Path>, inputs: &ConfigInputs<'_>) -> (PathBuf, bool) {
    if let Some(p) = flag {
        return (p.to_path_buf(), true);
    }
    if let Some(p) = (inputs.var)(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return (PathBuf::from(p), false);
    }
    (inputs.home.join(".agent-relay").join("orchestrator.json"), false)
}

/// Pure: file text (if any) + env + defaults → [`Config`]. As the orchestrator's `loadConfig`:
/// a key the file sets (non-empty) wins, the environment is only its fallback
/// (`AGENT_RELAY_ORCHESTRATOR_ID`/`_HOSTNAME`/`_BASE_DIR`/`_API_PORT`, `AGENT_RELAY_URL`,
/// `AGENT_RELAY_TOKEN`). Our own settings (`AGENT_RELAY_RUNNER_COMMAND`,
/// `AGENT_RELAY_INHERIT_ENV`) override the file.
pub fn resolve(text: Option<&str>, path: &Path, inputs: &ConfigInputs<'_>) -> Result<Config, ConfigError> {
    let malformed = |message: String| ConfigError::Malformed { path: path.to_path_buf(), message };
    let file: ConfigFile = match text {
        Some(t) if !t.trim().is_empty() => parse_file(t).map_err(malformed)?,
        _ => ConfigFile::default(),
    };
    let var = |k: &str| (inputs.var)(k).filter(|v| !v.is_empty());
    // `raw.x || process.env.X || default`: an empty string in the file falls through too.
    let pick = |from_file: Option<String>, env: &str| from_file.filter(|v| !v.is_empty()).or_else(|| var(env));

    let admission = admission(&file, &var, path)?;
    let id = pick(file.id, "AGENT_RELAY_ORCHESTRATOR_ID").unwrap_or_else(|| inputs.os_hostname.replace('.', "-"));
    let hostname =
        pick(file.hostname, "AGENT_RELAY_ORCHESTRATOR_HOSTNAME").unwrap_or_else(|| inputs.os_hostname.to_string());
    let relay_url = pick(file.relay_url, "AGENT_RELAY_URL").unwrap_or_else(|| DEFAULT_RELAY_URL.to_string());
    let token = pick(file.token, "AGENT_RELAY_TOKEN");
    if let Some(t) = &token {
        if let Err(e) = crate::model::request::check_env_var("AGENT_RELAY_TOKEN", t) {
            return Err(malformed(format!("token: {e}")));
        }
    }
    let base_dir_raw = pick(file.base_dir, "AGENT_RELAY_ORCHESTRATOR_BASE_DIR").unwrap_or_else(|| "~/projects".into());
    let base_dir = expand_home(&base_dir_raw, inputs.home);
    if !base_dir.is_absolute() {
        return Err(malformed("baseDir must be an absolute path or start with ~/".into()));
    }
    for (name, value) in [("id", &id), ("hostname", &hostname), ("relayUrl", &relay_url)] {
        if value.chars().any(char::is_control) {
            return Err(malformed(format!("{name} must not contain control characters")));
        }
    }
    let tmux_prefix = file.tmux_prefix.filter(|p| !p.is_empty()).unwrap_or_else(|| DEFAULT_TMUX_PREFIX.to_string());
    if !tmux_prefix_is_valid(&tmux_prefix) {
        return Err(malformed(format!(
            "tmuxPrefix must be 1-{MAX_TMUX_PREFIX} characters of A-Z, a-z, 0-9, _ and -, starting with a letter or digit (tmux renders `.` and `:` in session names as `_`)"
        )));
    }
    let api_port = match file.api_port.filter(|p| *p != 0) {
        Some(p) => p,
        None => env_port("AGENT_RELAY_ORCHESTRATOR_API_PORT", var("AGENT_RELAY_ORCHESTRATOR_API_PORT"))?
            .unwrap_or(DEFAULT_API_PORT),
    };
    let runner_command = match var("AGENT_RELAY_RUNNER_COMMAND") {
        Some(v) => Some(parse_command_var(&v)?),
        None => file.runner_command,
    };
    if let Some(cmd) = &runner_command {
        if cmd.is_empty() || cmd.iter().any(|a| a.is_empty() || a.contains('\0')) {
            return Err(malformed("runnerCommand must be a non-empty array of non-empty strings".into()));
        }
    }
    let env = file.env.unwrap_or_default();
    for (key, value) in &env {
        if let Err(e) = crate::model::request::check_env_var(key, value) {
            return Err(malformed(format!("env: {e}")));
        }
    }
    if crate::model::limits::resolve(None, file.limits.as_ref()).is_err() {
        return Err(malformed(format!("limits must be {LIMITS}")));
    }
    let log_retention_days = file.log_retention_days.unwrap_or(7);
    if log_retention_days == 0 {
        return Err(malformed("logRetentionDays must be at least 1".into()));
    }
    let log_max_mb = file.log_max_mb.unwrap_or(64);
    if log_max_mb == 0 {
        return Err(malformed("logMaxMb must be at least 1".into()));
    }
    let exit_retention_days = file.exit_retention_days.unwrap_or(7);
    if exit_retention_days == 0 {
        return Err(malformed("exitRetentionDays must be at least 1".into()));
    }
    let inherit_environment = match var(INHERIT_ENV) {
        Some(v) => parse_switch(&v).ok_or_else(|| ConfigError::BadEnv {
            var: INHERIT_ENV,
            message: format!("{v:?} is not 1/0, true/false, yes/no or on/off"),
        })?,
        None => file.inherit_environment.unwrap_or(true),
    };
    Ok(Config {
        id,
        hostname,
        relay_url,
        token,
        base_dir,
        env,
        tmux_prefix,
        api_port,
        runner_command,
        limits: file.limits,
        exit_retention_days,
        log_retention_days,
        log_max_bytes: log_max_mb.saturating_mul(1024 * 1024),
        inherit_environment,
        shared_mcp_url: shared_mcp_url(&var),
        admission,
    })
}

/// The spawn gate's settings: the orchestrator's environment variables
/// (`AGENT_RELAY_MAX_CONCURRENT_SPAWNS`, `AGENT_RELAY_SPAWN_MIN_FREE_MEM_MB`,
/// `…_MAX_LOAD_PER_CPU`, `…_ADMISSION_MAX_WAIT_MS`, `…_ADMISSION_POLL_MS`, `…_ADMISSION_DISABLED`,
/// and our `…_MAX_MEMORY_PRESSURE`) over the file's keys over the orchestrator's defaults. A value
/// that is no number in range is an error naming the key (the orchestrator falls back to the
/// default silently, which hides a typo).
fn admission(
    file: &ConfigFile,
    var: &dyn Fn(&str) -> Option<String>,
    path: &Path,
) -> Result<AdmissionConfig, ConfigError> {
    let d = AdmissionConfig::default();
    fn num(
        var: &dyn Fn(&str) -> Option<String>,
        name: &'static str,
        ok: fn(f64) -> bool,
        what: &str,
    ) -> Result<Option<f64>, ConfigError> {
        let Some(raw) = var(name) else { return Ok(None) };
        match raw.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && ok(v) => Ok(Some(v)),
            _ => Err(ConfigError::BadEnv { var: name, message: format!("must be {what}") }),
        }
    }
    let slots_env = num(
        var,
        "AGENT_RELAY_MAX_CONCURRENT_SPAWNS",
        |v| v.fract() == 0.0 && (1.0..=256.0).contains(&v),
        "a whole number from 1 to 256",
    )?;
    let mem_env =
        num(var, "AGENT_RELAY_SPAWN_MIN_FREE_MEM_MB", |v| v.fract() == 0.0 && v >= 0.0, "a whole number of MB")?;
    let load_env = num(var, "AGENT_RELAY_SPAWN_MAX_LOAD_PER_CPU", |v| v > 0.0, "a number above 0")?;
    let psi_env = num(
        var,
        "AGENT_RELAY_SPAWN_MAX_MEMORY_PRESSURE",
        |v| (0.0..=100.0).contains(&v),
        "a percentage from 0 to 100",
    )?;
    let wait_env = num(
        var,
        "AGENT_RELAY_SPAWN_ADMISSION_MAX_WAIT_MS",
        |v| v.fract() == 0.0 && v >= 0.0,
        "a whole number of milliseconds",
    )?;
    let poll_env = num(
        var,
        "AGENT_RELAY_SPAWN_ADMISSION_POLL_MS",
        |v| v.fract() == 0.0 && v > 0.0,
        "a whole number of milliseconds above 0",
    )?;
    let disabled = match var("AGENT_RELAY_SPAWN_ADMISSION_DISABLED") {
        Some(v) => parse_switch(&v).ok_or_else(|| ConfigError::BadEnv {
            var: "AGENT_RELAY_SPAWN_ADMISSION_DISABLED",
            message: "must be 1/0, true/false, yes/no or on/off".into(),
        })?,
        None => file.spawn_admission_disabled.unwrap_or(d.disabled),
    };
    let cfg = AdmissionConfig {
        max_concurrent_spawns: slots_env
            .map(|v| v as u32)
            .or(file.max_concurrent_spawns)
            .unwrap_or(d.max_concurrent_spawns),
        min_free_mem_mb: mem_env.map(|v| v as u64).or(file.spawn_min_free_mem_mb).unwrap_or(d.min_free_mem_mb),
        max_load_per_cpu: load_env.or(file.spawn_max_load_per_cpu).unwrap_or(d.max_load_per_cpu),
        max_memory_pressure: psi_env.or(file.spawn_max_memory_pressure).unwrap_or(d.max_memory_pressure),
        max_wait_ms: wait_env.map(|v| v as u64).or(file.spawn_admission_max_wait_ms).unwrap_or(d.max_wait_ms),
        poll_ms: poll_env.map(|v| v as u64).or(file.spawn_admission_poll_ms).unwrap_or(d.poll_ms),
        disabled,
    };
    let malformed = |message: &str| ConfigError::Malformed { path: path.to_path_buf(), message: message.into() };
    if !(1..=MAX_CONCURRENT_SPAWNS_LIMIT).contains(&cfg.max_concurrent_spawns) {
        return Err(malformed("maxConcurrentSpawns must be a whole number from 1 to 256"));
    }
    if !(cfg.max_load_per_cpu.is_finite() && cfg.max_load_per_cpu > 0.0) {
        return Err(malformed("spawnMaxLoadPerCpu must be a number above 0"));
    }
    if !(0.0..=100.0).contains(&cfg.max_memory_pressure) {
        return Err(malformed("spawnMaxMemoryPressure must be a percentage from 0 to 100"));
    }
    if cfg.poll_ms == 0 {
        return Err(malformed("spawnAdmissionPollMs must be a whole number of milliseconds above 0"));
    }
    Ok(cfg)
}

/// tmuxPrefix as the orchestrator takes it, within what a unit name, a file name, a unit glob
/// and a tmux session name all keep as written: letters of either case, digits, `_` and `-`.
pub fn tmux_prefix_is_valid(prefix: &str) -> bool {
    let mut chars = prefix.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && prefix.len() <= MAX_TMUX_PREFIX
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `Number(value) || fallback` for a port: unset, `0` or not a number means the fallback; a
/// number that is no port is an error rather than a broken URL.
fn env_port(name: &'static str, value: Option<String>) -> Result<Option<u16>, ConfigError> {
    let Some(n) = value.as_deref().and_then(|v| v.trim().parse::<f64>().ok()) else { return Ok(None) };
    if n == 0.0 || n.is_nan() {
        return Ok(None);
    }
    if n.fract() == 0.0 && (1.0..=65535.0).contains(&n) {
        return Ok(Some(n as u16));
    }
    Err(ConfigError::BadEnv { var: name, message: "must be a port number (1-65535)".into() })
}

/// `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`, any case.
fn parse_switch(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The orchestrator's `sharedMcpListenerUrl()`: `$AGENT_RELAY_SHARED_MCP_URL`, else
/// `http://<$AGENT_RELAY_SHARED_CALLMUX_HOST or 127.0.0.1>:<$…_PORT or 4861>/mcp`.
fn shared_mcp_url(var: &dyn Fn(&str) -> Option<String>) -> String {
    if let Some(url) = var(SHARED_MCP_URL_ENV).filter(|u| !u.chars().any(char::is_control)) {
        return url;
    }
    let host = var(SHARED_CALLMUX_HOST_ENV)
        .filter(|h| !h.chars().any(|c| c.is_control() || c == '/'))
        .unwrap_or_else(|| "127.0.0.1".into());
    let port = var(SHARED_CALLMUX_PORT_ENV)
        .and_then(|p| p.trim().parse::<u16>().ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_SHARED_CALLMUX_PORT);
    format!("http://{host}:{port}/mcp")
}

/// What `limits` holds, for a message that names no value.
const LIMITS: &str = "an object of memoryMax and memoryHigh (bytes, or a size like \"4G\"), tasksMax (a whole \
                      number above 0) and cpuQuota (percent of one CPU, 1 to 100000), memoryHigh not above memoryMax";

/// The file's text → its known keys. A problem names the key and what it must hold, never the
/// value found (a secret typed into the wrong key would be printed): serde's own messages quote
/// the value, so each key is read on its own.
fn parse_file(text: &str) -> Result<ConfigFile, String> {
    // Syntax errors say where, not what.
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => format!("not JSON: {e}"),
        _ => format!("not JSON (at line {} column {})", e.line(), e.column()),
    })?;
    let serde_json::Value::Object(map) = value else {
        return Err("the file must hold a JSON object".into());
    };
    fn key<T: serde::de::DeserializeOwned>(
        map: &serde_json::Map<String, serde_json::Value>,
        name: &str,
        expected: &str,
    ) -> Result<Option<T>, String> {
        match map.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => T::deserialize(v).map(Some).map_err(|_| format!("{name} must be {expected}")),
        }
    }
    Ok(ConfigFile {
        id: key(&map, "id", "a string")?,
        hostname: key(&map, "hostname", "a string")?,
        relay_url: key(&map, "relayUrl", "a string")?,
        token: key(&map, "token", "a string")?,
        base_dir: key(&map, "baseDir", "a string")?,
        env: key(&map, "env", "an object of strings")?,
        tmux_prefix: key(&map, "tmuxPrefix", "a string")?,
        api_port: key(&map, "apiPort", "a port number (0-65535)")?,
        runner_command: key(&map, "runnerCommand", "an array of strings")?,
        limits: key(&map, "limits", &format!("{LIMITS}, no other keys"))?,
        exit_retention_days: key(&map, "exitRetentionDays", "a whole number of days")?,
        log_retention_days: key(&map, "logRetentionDays", "a whole number of days")?,
        log_max_mb: key(&map, "logMaxMb", "a whole number of MiB")?,
        inherit_environment: key(&map, "inheritEnvironment", "true or false")?,
        max_concurrent_spawns: key(&map, "maxConcurrentSpawns", "a whole number from 1 to 256")?,
        spawn_min_free_mem_mb: key(&map, "spawnMinFreeMemMb", "a whole number of MB")?,
        spawn_max_load_per_cpu: key(&map, "spawnMaxLoadPerCpu", "a number above 0")?,
        spawn_max_memory_pressure: key(&map, "spawnMaxMemoryPressure", "a percentage from 0 to 100")?,
        spawn_admission_max_wait_ms: key(&map, "spawnAdmissionMaxWaitMs", "a whole number of milliseconds")?,
        spawn_admission_poll_ms: key(&map, "spawnAdmissionPollMs", "a whole number of milliseconds above 0")?,
        spawn_admission_disabled: key(&map, "spawnAdmissionDisabled", "true or false")?,
    })
}

/// `AGENT_RELAY_RUNNER_COMMAND`: a JSON array, or words separated by whitespace.
fn parse_command_var(v: &str) -> Result<Vec<String>, ConfigError> {
    if v.trim_start().starts_with('[') {
        serde_json::from_str(v).map_err(|_| ConfigError::BadEnv {
            var: "AGENT_RELAY_RUNNER_COMMAND",
            message: "must be a JSON array of strings (or words separated by whitespace)".into(),
        })
    } else {
        Ok(v.split_whitespace().map(str::to_string).collect())
    }
}

/// `~` and `~/x` relative to `home`; anything else as given.
pub fn expand_home(raw: &str, home: &Path) -> PathBuf {
    if raw == "~" {
        home.to_path_buf()
    } else if let Some(rest) = raw.strip_prefix("~/") {
        home.join(rest)
    } else {
        PathBuf::from(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(vars: &'a dyn Fn(&str) -> Option<String>) -> ConfigInputs<'a> {
        ConfigInputs { home: Path::new("/home/u"), os_hostname: "box.lan", var: vars }
    }

    #[test]
    fn defaults_when_no_file() {
        let none = |_: &str| None;
        let c = resolve(None, Path::new("/x.json"), &inputs(&none)).unwrap();
        assert_eq!(c.base_dir, PathBuf::from("/home/u/projects"));
        assert_eq!(c.tmux_prefix, "ar");
        assert_eq!(c.api_port, 4860);
        assert_eq!(c.hostname, "box.lan");
        assert_eq!(c.id, "box-lan", "the orchestrator's id: the host name, dots as dashes");
        assert_eq!(c.token, None);
        assert!(c.inherit_environment);
        assert_eq!(c.shared_mcp_url, "http://127.0.0.1:4861/mcp");
    }

    #[test]
    fn the_file_wins_and_the_orchestrators_variables_are_fallbacks() {
        let vars = |k: &str| match k {
            "AGENT_RELAY_TOKEN" => Some("envtok".to_string()),
            "AGENT_RELAY_URL" => Some("http://env-relay".to_string()),
            "AGENT_RELAY_ORCHESTRATOR_HOSTNAME" => Some("env-host".to_string()),
            "AGENT_RELAY_ORCHESTRATOR_ID" => Some("env-id".to_string()),
            "AGENT_RELAY_ORCHESTRATOR_BASE_DIR" => Some("/env/base".to_string()),
            "AGENT_RELAY_ORCHESTRATOR_API_PORT" => Some("4999".to_string()),
            "AGENT_RELAY_RUNNER_COMMAND" => Some("/usr/bin/bun run /opt/r.ts".to_string()),
            _ => None,
        };
        let text = r#"{"token":"filetok","baseDir":"/srv/p","tmuxPrefix":"zz","apiPort":1,"unrelated":{"a":1}}"#;
        let c = resolve(Some(text), Path::new("/x.json"), &inputs(&vars)).unwrap();
        assert_eq!(c.token.as_deref(), Some("filetok"));
        assert_eq!(c.base_dir, PathBuf::from("/srv/p"));
        assert_eq!(c.tmux_prefix, "zz");
        assert_eq!(c.api_port, 1);
        assert_eq!(c.runner_command.unwrap(), vec!["/usr/bin/bun", "run", "/opt/r.ts"], "ours overrides");
        // Keys the file lacks (or leaves empty) come from the variables.
        assert_eq!(
            (c.hostname.as_str(), c.id.as_str(), c.relay_url.as_str()),
            ("env-host", "env-id", "http://env-relay")
        );
        let c = resolve(Some(r#"{"token":"","apiPort":0}"#), Path::new("/x.json"), &inputs(&vars)).unwrap();
        assert_eq!((c.token.as_deref(), c.api_port), (Some("envtok"), 4999));
        assert_eq!(c.base_dir, PathBuf::from("/env/base"));
    }

    #[test]
    fn ports_from_the_environment_read_like_number() {
        for (v, want) in [("4999", Some(4999)), (" 80 ", Some(80)), ("x", None), ("0", None), ("", None)] {
            let vars = move |k: &str| (k == "AGENT_RELAY_ORCHESTRATOR_API_PORT").then(|| v.to_string());
            let c = resolve(None, Path::new("/x.json"), &inputs(&vars)).unwrap();
            assert_eq!(c.api_port, want.unwrap_or(DEFAULT_API_PORT), "{v:?}");
        }
        let vars = |k: &str| (k == "AGENT_RELAY_ORCHESTRATOR_API_PORT").then(|| "70000".to_string());
        assert!(resolve(None, Path::new("/x.json"), &inputs(&vars)).is_err());
    }

    #[test]
    fn tmux_prefixes_the_orchestrator_takes() {
        for ok in ["ar", "AR", "Team_A", "dev-ar", "x", "ar-"] {
            assert!(tmux_prefix_is_valid(ok), "{ok}");
        }
        for bad in ["", "-ar", "a.b", "a:b", "a b", "a/b", "a*", &"p".repeat(33)] {
            assert!(!tmux_prefix_is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn inheritance_switch() {
        let none = |_: &str| None;
        let off = resolve(Some(r#"{"inheritEnvironment":false}"#), Path::new("/x"), &inputs(&none)).unwrap();
        assert!(!off.inherit_environment);
        let on = |k: &str| (k == INHERIT_ENV).then(|| "1".to_string());
        assert!(
            resolve(Some(r#"{"inheritEnvironment":false}"#), Path::new("/x"), &inputs(&on))
                .unwrap()
                .inherit_environment
        );
        let zero = |k: &str| (k == INHERIT_ENV).then(|| "off".to_string());
        assert!(!resolve(None, Path::new("/x"), &inputs(&zero)).unwrap().inherit_environment);
        let bad = |k: &str| (k == INHERIT_ENV).then(|| "maybe".to_string());
        assert!(resolve(None, Path::new("/x"), &inputs(&bad)).unwrap_err().to_string().contains(INHERIT_ENV));
    }

    #[test]
    fn shared_mcp_url_like_the_orchestrator() {
        let url = |k: &str| (k == SHARED_MCP_URL_ENV).then(|| "http://h:1/x".to_string());
        assert_eq!(resolve(None, Path::new("/x"), &inputs(&url)).unwrap().shared_mcp_url, "http://h:1/x");
        let parts = |k: &str| match k {
            SHARED_CALLMUX_HOST_ENV => Some("10.0.0.2".to_string()),
            SHARED_CALLMUX_PORT_ENV => Some("5000".to_string()),
            _ => None,
        };
        assert_eq!(resolve(None, Path::new("/x"), &inputs(&parts)).unwrap().shared_mcp_url, "http://10.0.0.2:5000/mcp");
    }

    #[test]
    fn a_missing_file_named_by_the_variable_is_defaults_but_not_one_named_by_the_flag() {
        let var = |k: &str| (k == CONFIG_ENV).then(|| "/nope.json".to_string());
        assert_eq!(config_path(None, &inputs(&var)), (PathBuf::from("/nope.json"), false));
        assert_eq!(config_path(Some(Path::new("/f.json")), &inputs(&var)), (PathBuf::from("/f.json"), true));
    }

    #[test]
    fn malformed_file_names_the_file() {
        let none = |_: &str| None;
        let err = resolve(Some("{\"apiPort\":\"x\"}"), Path::new("/etc/o.json"), &inputs(&none)).unwrap_err();
        assert!(err.to_string().contains("/etc/o.json"), "{err}");
        let err = resolve(Some("{nope"), Path::new("/etc/o.json"), &inputs(&none)).unwrap_err();
        assert!(err.to_string().contains("/etc/o.json"), "{err}");
        let err = resolve(Some(r#"{"env":{"1BAD":"x"}}"#), Path::new("/o.json"), &inputs(&none)).unwrap_err();
        assert!(err.to_string().contains("1BAD"), "{err}");
        for reserved in ["EXIT_CODE", "INVOCATION_ID", "TRIGGER_UNIT"] {
            let text = format!(r#"{{"env":{{"{reserved}":"x"}}}}"#);
            let err = resolve(Some(&text), Path::new("/o.json"), &inputs(&none)).unwrap_err().to_string();
            assert!(err.contains(reserved) && err.contains("reserved"), "{err}");
        }
        let err = resolve(Some(r#"{"env":{"K":"a\ufffeb"}}"#), Path::new("/o.json"), &inputs(&none)).unwrap_err();
        assert!(err.to_string().contains("noncharacter"), "{err}");
    }

    #[test]
    fn a_value_in_the_wrong_field_is_never_echoed() {
        let none = |_: &str| None;
        let secret = "tok-SECRET-123";
        let cases = [
            (format!(r#"{{"apiPort":"{secret}"}}"#), "apiPort", "a port number"),
            (format!(r#"{{"token":["{secret}"]}}"#), "token", "a string"),
            (format!(r#"{{"env":{{"K":["{secret}"]}}}}"#), "env", "an object of strings"),
            (format!(r#"{{"runnerCommand":"{secret}"}}"#), "runnerCommand", "an array of strings"),
            (format!(r#"{{"exitRetentionDays":"{secret}"}}"#), "exitRetentionDays", "a whole number"),
            (format!(r#"{{"limits":{{"tasksMax":"{secret}"}}}}"#), "limits", "memoryMax"),
            (format!(r#"{{"tmuxPrefix":"{secret}!"}}"#), "tmuxPrefix", "1-32 characters"),
            (format!(r#"{{"baseDir":"{secret}"}}"#), "baseDir", "absolute"),
            (format!(r#"{{"hostname":1, "x": "{secret}"}}"#), "hostname", "a string"),
            (format!(r#"["{secret}"]"#), "a JSON object", "object"),
            (format!(r#"{{"token": "{secret}" "#), "line 1", "EOF"),
        ];
        for (text, field, expected) in cases {
            let err = resolve(Some(&text), Path::new("/o.json"), &inputs(&none)).unwrap_err().to_string();
            assert!(!err.contains("SECRET"), "{text}: the value is echoed: {err}");
            assert!(err.contains(field) && err.contains(expected), "{text}: {err} lacks {field} / {expected}");
            assert!(err.contains("/o.json") && !err.contains('\n'), "{err}");
        }
        // A number that is no port is refused without being echoed (one that is no number at
        // all means the default, as the orchestrator's `Number(x) || 4860`).
        let vars = |k: &str| (k == "AGENT_RELAY_ORCHESTRATOR_API_PORT").then(|| "98765".to_string());
        let err = resolve(None, Path::new("/o.json"), &inputs(&vars)).unwrap_err().to_string();
        assert!(!err.contains("98765") && err.contains("AGENT_RELAY_ORCHESTRATOR_API_PORT"), "{err}");
        let vars = |k: &str| (k == "AGENT_RELAY_RUNNER_COMMAND").then(|| format!(r#"["{secret}", 1]"#));
        let err = resolve(None, Path::new("/o.json"), &inputs(&vars)).unwrap_err().to_string();
        assert!(!err.contains("SECRET") && err.contains("AGENT_RELAY_RUNNER_COMMAND"), "{err}");
    }
}
