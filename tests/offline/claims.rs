//! Claims of the README that need no manager, each proved by what the CLI does: a missing
//! `--config` file is an error while a missing default is not; every config variable changes
//! what `generate` prints. And the fake runner the system tests rely on fails loudly on anything
//! it does not expect, instead of making up for it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::util::*;
use serde_json::json;

/// A home with `projects/app` and, unless `config` is `None`, `orchestrator.json` beside it.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        let dir = tempfile::Builder::new().prefix("claims-offline-").tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("projects/app")).unwrap();
        Home { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `name` in the home with `config` as JSON; returns its path.
    fn config(&self, name: &str, config: serde_json::Value) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, config.to_string()).unwrap();
        p
    }

    /// The CLI with only PATH and HOME (no manager, no XDG directories), plus `vars`.
    fn cli(&self, vars: &[(&str, &str)], args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("HOME", self.path());
        c.envs(vars.iter().copied()).args(args);
        c
    }

    /// `generate` of a request for `cwd` (default `~/projects/app`), bounded to 20 s.
    fn generate(&self, vars: &[(&str, &str)], config: Option<&Path>, cwd: Option<&Path>) -> Output {
        let app = self.path().join("projects/app");
        let req = json!({"provider": "claude", "cwd": cwd.unwrap_or(&app), "spawnRequestId": "claims-gen-1"});
        let mut args = vec!["generate"];
        let config = config.map(|p| p.display().to_string());
        if let Some(p) = &config {
            args.extend(["--config", p.as_str()]);
        }
        let (out, took) = run_bounded(self.cli(vars, &args), Some(req.to_string().as_bytes()), Duration::from_secs(20));
        out.unwrap_or_else(|| panic!("generate did not finish within {took:?}"))
    }

    /// The unit file `generate` prints; fails the test when it fails.
    fn unit_text(&self, vars: &[(&str, &str)], config: Option<&Path>) -> String {
        let out = self.generate(vars, config, None);
        assert!(out.status.success(), "generate with {vars:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

/// The value of `Environment=KEY=…` in a unit file.
fn environment(unit: &str, key: &str) -> Option<String> {
    unit.lines().find_map(|l| l.strip_prefix(&format!("Environment={key}=")).map(str::to_string))
}

/// The runner's command line in a unit's `ExecStart=` (after our log writer's words).
fn exec_start(unit: &str) -> String {
    let line =
        unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap_or_else(|| panic!("no ExecStart= in\n{unit}"));
    assert!(line.contains(" log-tee --times="), "{line}");
    line.split_once(" -- ").map_or(line, |(_, runner)| runner).into()
}

#[test]
fn a_missing_config_file_named_by_the_flag_is_an_error_a_missing_default_is_not() {
    let home = Home::new();
    let runner = [("AGENT_RELAY_RUNNER_COMMAND", "/bin/echo")];
    // No ~/.agent-relay/orchestrator.json: defaults, as the orchestrator's loader has it.
    let out = home.generate(&runner, None, None);
    assert!(out.status.success(), "a missing default file: {}", String::from_utf8_lossy(&out.stderr));
    // Named by the variable: the orchestrator's loader again, defaults.
    let missing = home.path().join("no-such-dir/orchestrator.json");
    let by_var = [runner[0], ("AGENT_RELAY_ORCHESTRATOR_CONFIG", missing.to_str().unwrap())];
    let out = home.generate(&by_var, None, None);
    assert!(out.status.success(), "a missing file named by the variable: {}", String::from_utf8_lossy(&out.stderr));
    // Named by --config: exit 2, one line that names the file; for a verb that needs the
    // manager too, before any manager is looked for.
    let req = json!({"provider": "claude", "cwd": home.path().join("projects/app")}).to_string();
    for args in [vec!["generate"], vec!["list"], vec!["show", "x"]] {
        let mut full = args.clone();
        full.extend(["--config", missing.to_str().unwrap()]);
        let (out, _) = run_bounded(home.cli(&runner, &full), Some(req.as_bytes()), Duration::from_secs(20));
        let out = out.expect("finished");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line: {err:?}");
        assert!(err.contains(missing.to_str().unwrap()), "{args:?}: the file is not named: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", String::from_utf8_lossy(&out.stdout));
    }
    // Under -o json the same error is a JSON document with its exit code.
    let (out, _) = run_bounded(
        home.cli(&runner, &["list", "-o", "json", "--config", missing.to_str().unwrap()]),
        None,
        Duration::from_secs(20),
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.unwrap().stdout).unwrap();
    assert_eq!(doc["error"]["exitCode"], 2, "{doc}");
    assert!(doc["error"]["message"].as_str().unwrap().contains(missing.to_str().unwrap()), "{doc}");
}

#[test]
fn every_config_variable_changes_what_generate_prints() {
    let home = Home::new();
    // A file that sets only the runner: every other key falls back to its variable.
    let bare = home.config("bare.json", json!({"runnerCommand": ["/bin/echo"]}));
    let full = home.config(
        "full.json",
        json!({"runnerCommand": ["/bin/echo"], "id": "file-id", "hostname": "file-host",
               "relayUrl": "http://file.example:1", "apiPort": 4111}),
    );
    let base = home.unit_text(&[], Some(&bare));
    let with = |k: &str, v: &str| home.unit_text(&[(k, v)], Some(&bare));
    let env_of = |unit: &str, key: &str| environment(unit, key).unwrap_or_else(|| panic!("no {key} in\n{unit}"));

    // AGENT_RELAY_ORCHESTRATOR_ID: the runner's orchestrator id; the file's `id` wins.
    assert_ne!(env_of(&base, "AGENT_RELAY_ORCHESTRATOR_ID"), "var-id");
    assert_eq!(env_of(&with("AGENT_RELAY_ORCHESTRATOR_ID", "var-id"), "AGENT_RELAY_ORCHESTRATOR_ID"), "var-id");
    let file_wins = home.unit_text(&[("AGENT_RELAY_ORCHESTRATOR_ID", "var-id")], Some(&full));
    assert_eq!(env_of(&file_wins, "AGENT_RELAY_ORCHESTRATOR_ID"), "file-id");

    // AGENT_RELAY_ORCHESTRATOR_HOSTNAME: the agent id's first word and the runner's host tag.
    let host = with("AGENT_RELAY_ORCHESTRATOR_HOSTNAME", "var-host");
    assert_eq!(env_of(&host, "AGENT_RELAY_TAGS"), "headless,dashboard-spawned,var-host");
    assert!(env_of(&host, "AGENT_RELAY_AGENT_ID").starts_with("var-host-claude-"), "{host}");
    assert!(!env_of(&base, "AGENT_RELAY_TAGS").ends_with(",var-host"));
    let file_wins = home.unit_text(&[("AGENT_RELAY_ORCHESTRATOR_HOSTNAME", "var-host")], Some(&full));
    assert_eq!(env_of(&file_wins, "AGENT_RELAY_TAGS"), "headless,dashboard-spawned,file-host");

    // AGENT_RELAY_URL: the relay the runner talks to (argv and environment).
    assert_eq!(env_of(&base, "AGENT_RELAY_URL"), "http://127.0.0.1:4850");
    let url = with("AGENT_RELAY_URL", "http://relay.example:4999");
    assert_eq!(env_of(&url, "AGENT_RELAY_URL"), "http://relay.example:4999");
    assert!(exec_start(&url).contains("--relay-url http://relay.example:4999"), "{url}");
    let file_wins = home.unit_text(&[("AGENT_RELAY_URL", "http://relay.example:4999")], Some(&full));
    assert_eq!(env_of(&file_wins, "AGENT_RELAY_URL"), "http://file.example:1");

    // AGENT_RELAY_ORCHESTRATOR_API_PORT: the orchestrator's URL; not a number or 0: the default.
    assert_eq!(env_of(&base, "AGENT_RELAY_ORCHESTRATOR_URL"), "http://127.0.0.1:4860");
    let port = with("AGENT_RELAY_ORCHESTRATOR_API_PORT", "4999");
    assert_eq!(env_of(&port, "AGENT_RELAY_ORCHESTRATOR_URL"), "http://127.0.0.1:4999");
    assert_eq!(env_of(&port, "AGENT_RELAY_ARTIFACT_URL"), "http://127.0.0.1:4999/api/artifacts");
    for ignored in ["abc", "0"] {
        let u = with("AGENT_RELAY_ORCHESTRATOR_API_PORT", ignored);
        assert_eq!(env_of(&u, "AGENT_RELAY_ORCHESTRATOR_URL"), "http://127.0.0.1:4860", "{ignored}");
    }
    let file_wins = home.unit_text(&[("AGENT_RELAY_ORCHESTRATOR_API_PORT", "4999")], Some(&full));
    assert_eq!(env_of(&file_wins, "AGENT_RELAY_ORCHESTRATOR_URL"), "http://127.0.0.1:4111");

    // AGENT_RELAY_ORCHESTRATOR_BASE_DIR: where a cwd may lie.
    let elsewhere = home.path().join("elsewhere/app");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = home.generate(&[], Some(&bare), Some(&elsewhere));
    assert_eq!(out.status.code(), Some(2), "a cwd outside ~/projects: {}", String::from_utf8_lossy(&out.stderr));
    let base_var = home.path().join("elsewhere");
    let out = home.generate(
        &[("AGENT_RELAY_ORCHESTRATOR_BASE_DIR", base_var.to_str().unwrap())],
        Some(&bare),
        Some(&elsewhere),
    );
    assert!(out.status.success(), "baseDir from the variable: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("WorkingDirectory={}", elsewhere.display())));

    // AGENT_RELAY_RUNNER_COMMAND: overrides the file's runnerCommand, as JSON or as words.
    let runner = home.path().join("var-runner");
    std::fs::write(&runner, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&runner, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let runner = runner.canonicalize().unwrap();
    assert!(exec_start(&base).starts_with("/"), "{base}");
    assert!(!exec_start(&base).contains("var-runner"), "{base}");
    let words = format!("{} --from-var", runner.display());
    let json_form = json!([runner, "--from-json"]).to_string();
    for (value, extra) in [(words.as_str(), "--from-var"), (json_form.as_str(), "--from-json")] {
        let u = home.unit_text(&[("AGENT_RELAY_RUNNER_COMMAND", value)], Some(&full));
        assert!(
            exec_start(&u).starts_with(&format!("{} {extra} claude --headless", runner.display())),
            "{value}: {}",
            exec_start(&u)
        );
    }
    let out = home.generate(&[("AGENT_RELAY_RUNNER_COMMAND", "[not json")], Some(&bare), None);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AGENT_RELAY_RUNNER_COMMAND"));

    // AGENT_RELAY_INHERIT_ENV is read with the config: a bad value is refused, naming it (its
    // effect on the runner's environment: system/claims.rs).
    let out = home.generate(&[("AGENT_RELAY_INHERIT_ENV", "maybe")], Some(&bare), None);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AGENT_RELAY_INHERIT_ENV"));

    // The orchestrator's shared MCP listener: the URL, else host and port.
    assert_eq!(env_of(&base, "AGENT_RELAY_SHARED_MCP_URL"), "http://127.0.0.1:4861/mcp");
    let mcp = with("AGENT_RELAY_SHARED_MCP_URL", "http://mcp.example:7/x");
    assert_eq!(env_of(&mcp, "AGENT_RELAY_SHARED_MCP_URL"), "http://mcp.example:7/x");
    let host_port = home.unit_text(
        &[("AGENT_RELAY_SHARED_CALLMUX_HOST", "10.1.2.3"), ("AGENT_RELAY_SHARED_CALLMUX_PORT", "4870")],
        Some(&bare),
    );
    assert_eq!(env_of(&host_port, "AGENT_RELAY_SHARED_MCP_URL"), "http://10.1.2.3:4870/mcp");

    // AGENT_RELAY_ORCHESTRATOR_CONFIG: which file is read, when --config is not given.
    let prefixed = home.config("prefixed.json", json!({"runnerCommand": ["/bin/echo"], "tmuxPrefix": "fromvar"}));
    let u = home.unit_text(&[("AGENT_RELAY_ORCHESTRATOR_CONFIG", prefixed.to_str().unwrap())], None);
    assert!(u.contains("Environment=AGENT_RELAY_TMUX_SESSION=fromvar-claude-"), "{u}");
    assert!(base.contains("Environment=AGENT_RELAY_TMUX_SESSION=ar-claude-"), "{base}");
    // --config wins over it.
    let u = home.unit_text(&[("AGENT_RELAY_ORCHESTRATOR_CONFIG", prefixed.to_str().unwrap())], Some(&bare));
    assert!(u.contains("Environment=AGENT_RELAY_TMUX_SESSION=ar-claude-"), "{u}");
}

/// The fake runner with `vars` (on top of what the supervisor always sets) in a directory of its
/// own; `runners` says how its runner-info directory is made. Bounded: a runner that does not
/// fail when it should runs on and is killed after 5 s.
fn fake_runner_in(dir: &Path, runners: Option<u32>, vars: &[(&str, &str)]) -> (Option<Output>, PathBuf) {
    let info_dir = dir.join("runners");
    if let Some(mode) = runners {
        std::fs::create_dir(&info_dir).unwrap();
        std::fs::set_permissions(&info_dir, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    let info = info_dir.join("s.json");
    let mut c = Command::new(fake_runner());
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AGENT_RELAY_AGENT_ID", "host-claude-s-1")
        .env("AGENT_RELAY_RUNNER_INFO_FILE", &info)
        .envs(vars.iter().copied())
        .args(["claude", "--headless", "--cwd"])
        .arg(dir);
    (run_bounded(c, None, Duration::from_secs(5)).0, info)
}

#[test]
fn the_fake_runner_fails_loudly_on_anything_unexpected() {
    let prompt = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(prompt.path(), "four").unwrap();
    let ok = [("FAKE_RUNNER_EXIT_AFTER_MS", "50"), ("FAKE_RUNNER_EXIT_CODE", "3")];
    // What it is asked for, it does: a control URL in its info file, the prompt read, exit 3.
    let dir = tempfile::tempdir().unwrap();
    let with_prompt = [ok[0], ok[1], ("AGENT_RELAY_PROMPT_FILE", prompt.path().to_str().unwrap())];
    let (out, info) = fake_runner_in(dir.path(), Some(0o700), &with_prompt);
    let out = out.expect("a fake runner told to exit after 50 ms ran on");
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAKE-RUNNER PROMPT-BYTES 4"));
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(info).unwrap()).unwrap();
    assert!(info["controlUrl"].as_str().unwrap().starts_with("http://127.0.0.1:"), "{info}");

    let missing_prompt = [ok[0], ok[1], ("AGENT_RELAY_PROMPT_FILE", "/nonexistent/prompt")];
    // What, the runner-info directory's mode (`None`: missing), the knobs, what stderr says.
    type Case<'a> = (&'a str, Option<u32>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        // The supervisor must make the runner-info directory (0700) before the start.
        ("no runner-info directory", None, ok.to_vec(), "runner-info directory"),
        ("a runner-info directory open to others", Some(0o755), ok.to_vec(), "not 0700"),
        ("an unreadable prompt file", Some(0o700), missing_prompt.to_vec(), "/nonexistent/prompt"),
        ("a delay that is no number", Some(0o700), vec![("FAKE_RUNNER_EXIT_AFTER_MS", "soon")], "not a valid number"),
        (
            "an exit code out of range",
            Some(0o700),
            vec![("FAKE_RUNNER_EXIT_AFTER_MS", "50"), ("FAKE_RUNNER_EXIT_CODE", "300")],
            "not a valid number",
        ),
        ("an unknown signal", Some(0o700), vec![("FAKE_RUNNER_KILL_SELF", "NOPE")], "is not a signal"),
        ("a switch that is not 1", Some(0o700), vec![("FAKE_RUNNER_IGNORE_SIGTERM", "yes")], "the only value is 1"),
        ("an empty knob", Some(0o700), vec![("FAKE_RUNNER_SAY", "")], "set but empty"),
        ("a misspelt knob", Some(0o700), vec![("FAKE_RUNNER_EXIT_AFTR_MS", "50")], "unknown knob"),
        ("an exit code with no time to exit", Some(0o700), vec![("FAKE_RUNNER_EXIT_CODE", "3")], "never exit"),
    ];
    for (what, runners, vars, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (out, info) = fake_runner_in(dir.path(), runners, &vars);
        let out = out.unwrap_or_else(|| panic!("{what}: the fake runner ran on instead of failing"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(FAKE_RUNNER_FATAL_STATUS), "{what}: {err}");
        assert!(err.contains(FAKE_RUNNER_FATAL) && err.contains(says), "{what}: {err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("PROMPT-BYTES"), "{what}");
        assert!(!info.exists(), "{what}: wrote its info file");
        if runners.is_none() {
            assert!(!info.parent().unwrap().exists(), "{what}: made the directory itself");
        }
    }
}

/// Logs go to stderr with no colour codes when stderr is not a terminal (here, a pipe).
#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let home = Home::new();
    let app = home.path().join("projects/app");
    // Fields for the orchestrator's workspace preparation are ignored with a debug line.
    let req = json!({"provider": "claude", "cwd": app, "acquisition": {"kind": "none"}});
    let vars = [("AGENT_RELAY_RUNNER_COMMAND", "/bin/echo"), ("AGENT_RELAY_LOG", "debug")];
    let (out, took) =
        run_bounded(home.cli(&vars, &["generate"]), Some(req.to_string().as_bytes()), Duration::from_secs(20));
    let out = out.unwrap_or_else(|| panic!("generate did not finish within {took:?}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("acquisition"), "no debug line logged: {err}");
    assert!(!err.contains("\x1b["), "colour codes in logs to a pipe: {err:?}");
}
