//! The orchestrator's config (`~/.agent-relay/orchestrator.json`): parsing, defaults and env
//! overrides, all pure; `io::config_file::load` is the one function that reads the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::model::naming;

pub const DEFAULT_TMUX_PREFIX: &str = "ar";
pub const DEFAULT_API_PORT: u16 = 4860;
pub const DEFAULT_RELAY_URL: &str = "http://127.0.0.1:4850";
/// Env var that names the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "AGENT_RELAY_ORCHESTRATOR_CONFIG";

/// The effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
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
}

/// The file as written by the orchestrator ([`parse_file`]). Unknown keys are the orchestrator's
/// own and ignored.
#[derive(Debug, Default)]
struct ConfigFile {
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
pub fn config_path(flag: Option<&Path>, inputs: &ConfigInputs<'_>) -> (PathBuf, bool) {
    if let Some(p) = flag {
        return (p.to_path_buf(), true);
    }
    if let Some(p) = (inputs.var)(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return (PathBuf::from(p), true);
    }
    (inputs.home.join(".agent-relay").join("orchestrator.json"), false)
}

/// Pure: file text (if any) + env overrides + defaults → [`Config`].
pub fn resolve(text: Option<&str>, path: &Path, inputs: &ConfigInputs<'_>) -> Result<Config, ConfigError> {
    let malformed = |message: String| ConfigError::Malformed { path: path.to_path_buf(), message };
    let file: ConfigFile = match text {
        Some(t) if !t.trim().is_empty() => parse_file(t).map_err(malformed)?,
        _ => ConfigFile::default(),
    };
    let var = |k: &str| (inputs.var)(k).filter(|v| !v.is_empty());

    let hostname = var("AGENT_RELAY_HOSTNAME").or(file.hostname).unwrap_or_else(|| inputs.os_hostname.to_string());
    let relay_url = var("AGENT_RELAY_URL").or(file.relay_url).unwrap_or_else(|| DEFAULT_RELAY_URL.to_string());
    let token = var("AGENT_RELAY_TOKEN").or(file.token).filter(|t| !t.is_empty());
    let base_dir_raw = var("AGENT_RELAY_BASE_DIR").or(file.base_dir).unwrap_or_else(|| "~/projects".to_string());
    let base_dir = expand_home(&base_dir_raw, inputs.home);
    if !base_dir.is_absolute() {
        return Err(malformed("baseDir must be an absolute path or start with ~/".into()));
    }
    let tmux_prefix =
        var("AGENT_RELAY_TMUX_PREFIX").or(file.tmux_prefix).unwrap_or_else(|| DEFAULT_TMUX_PREFIX.to_string());
    if !naming::prefix_is_valid(&tmux_prefix) {
        return Err(malformed("tmuxPrefix must be 1-32 characters of a-z, 0-9, _ and -".into()));
    }
    let api_port = match var("AGENT_RELAY_API_PORT") {
        Some(v) => v.parse::<u16>().map_err(|_| ConfigError::BadEnv {
            var: "AGENT_RELAY_API_PORT",
            message: "must be a port number (0-65535)".into(),
        })?,
        None => file.api_port.unwrap_or(DEFAULT_API_PORT),
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
    if let Some(bad) = env.keys().find(|k| !crate::model::request::env_key_is_valid(k)) {
        return Err(malformed(format!("env key {bad:?} is not a valid variable name")));
    }
    if crate::model::limits::resolve(None, file.limits.as_ref()).is_err() {
        return Err(malformed(format!("limits must be {LIMITS}")));
    }
    let exit_retention_days = file.exit_retention_days.unwrap_or(7);
    if exit_retention_days == 0 {
        return Err(malformed("exitRetentionDays must be at least 1".into()));
    }
    Ok(Config {
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
    })
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
        ConfigInputs { home: Path::new("/home/u"), os_hostname: "box", var: vars }
    }

    #[test]
    fn defaults_when_no_file() {
        let none = |_: &str| None;
        let c = resolve(None, Path::new("/x.json"), &inputs(&none)).unwrap();
        assert_eq!(c.base_dir, PathBuf::from("/home/u/projects"));
        assert_eq!(c.tmux_prefix, "ar");
        assert_eq!(c.api_port, 4860);
        assert_eq!(c.hostname, "box");
        assert_eq!(c.token, None);
    }

    #[test]
    fn file_then_env_overrides() {
        let vars = |k: &str| match k {
            "AGENT_RELAY_TOKEN" => Some("envtok".to_string()),
            "AGENT_RELAY_RUNNER_COMMAND" => Some("/usr/bin/bun run /opt/r.ts".to_string()),
            _ => None,
        };
        let text = r#"{"token":"filetok","baseDir":"/srv/p","tmuxPrefix":"zz","apiPort":1,"unrelated":{"a":1}}"#;
        let c = resolve(Some(text), Path::new("/x.json"), &inputs(&vars)).unwrap();
        assert_eq!(c.token.as_deref(), Some("envtok"));
        assert_eq!(c.base_dir, PathBuf::from("/srv/p"));
        assert_eq!(c.tmux_prefix, "zz");
        assert_eq!(c.api_port, 1);
        assert_eq!(c.runner_command.unwrap(), vec!["/usr/bin/bun", "run", "/opt/r.ts"]);
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
        let vars = |k: &str| (k == "AGENT_RELAY_API_PORT").then(|| secret.to_string());
        let err = resolve(None, Path::new("/o.json"), &inputs(&vars)).unwrap_err().to_string();
        assert!(!err.contains("SECRET") && err.contains("AGENT_RELAY_API_PORT"), "{err}");
        let vars = |k: &str| (k == "AGENT_RELAY_RUNNER_COMMAND").then(|| format!(r#"["{secret}", 1]"#));
        let err = resolve(None, Path::new("/o.json"), &inputs(&vars)).unwrap_err().to_string();
        assert!(!err.contains("SECRET") && err.contains("AGENT_RELAY_RUNNER_COMMAND"), "{err}");
    }
}
