use super::*;
use crate::model::request::parse;
use crate::model::unit::{agent_properties, find, Value};

fn config() -> Config {
    Config {
        hostname: "Box.Local".into(),
        relay_url: "http://relay".into(),
        token: Some("tok-secret".into()),
        base_dir: "/home/u/projects".into(),
        env: [("FROM_CONFIG".to_string(), "c".to_string()), ("AGENT_RELAY_AGENT_ID".to_string(), "spoof".to_string())]
            .into(),
        tmux_prefix: "ar".into(),
        api_port: 4860,
        runner_command: None,
        limits: None,
        exit_retention_days: 7,
    }
}

fn plan_for(json: &str) -> SpawnPlan {
    let cfg = config();
    let req = parse(json).unwrap();
    let launcher = vec!["/usr/bin/claude-relay".to_string()];
    let inputs = PlanInputs {
        config: &cfg,
        home: Path::new("/home/u"),
        runtime_root: Path::new("/run/user/0/agent-relay-systemd"),
        caller_path: "/usr/bin:/bin:/usr/bin",
        launcher: &launcher,
        cwd: Path::new("/home/u/projects/app"),
        now_ms: 1_700_000_000_000,
        record_exit: Some((Path::new("/usr/bin/agent-relay-systemd"), Path::new("/home/u/.local/state/x"))),
        random_hex: "0123456789abcdef0123456789abcdef",
    };
    plan(&req, &inputs).unwrap()
}

fn env<'a>(p: &'a SpawnPlan, k: &str) -> Option<&'a str> {
    p.environment.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
}

#[test]
fn names_follow_the_seed() {
    let p = plan_for(r#"{"provider":"claude","cwd":"/x","label":"Fix Bug","spawnRequestId":"req-000042"}"#);
    let session = format!("ar-claude-fix-bug-{}", naming::unique_suffix(naming::UniqueId::SpawnRequest("req-000042")));
    assert_eq!(p.meta.session, session);
    assert_eq!(p.unit, format!("agent-relay-managed-{session}.service"));
    assert_eq!(p.meta.agent_id, "box-local-claude-fix-bug-01234567");
    assert_eq!(p.agent_dir, PathBuf::from(format!("/run/user/0/agent-relay-systemd/agents/{session}.89abcdef")));
}

#[test]
fn default_label_is_stable_for_a_spawn_request_and_timed_otherwise() {
    let a = plan_for(r#"{"provider":"claude","cwd":"/x","spawnRequestId":"r-1"}"#);
    assert_eq!(a.meta.label, "session");
    assert_eq!(
        a.meta.session,
        format!("ar-claude-session-{}", naming::unique_suffix(naming::UniqueId::SpawnRequest("r-1")))
    );
    let b = plan_for(r#"{"provider":"claude","cwd":"/x"}"#);
    assert_eq!(b.meta.label, "session-1700000000000");
    let t = plan_for(r#"{"provider":"claude","cwd":"/x","taskId":7,"label":"lint"}"#);
    assert_eq!(t.meta.label, "task-7-lint");
}

#[test]
fn secrets_and_caller_env_go_to_the_file_never_to_environment() {
    let p = plan_for(r#"{"provider":"claude","cwd":"/x","env":{"API_KEY":"k","AGENT_RELAY_TAGS":"spoof"}}"#);
    assert!(p.environment.iter().all(|(k, v)| k != "AGENT_RELAY_TOKEN" && !v.contains("tok-secret")));
    assert!(p.environment.iter().all(|(k, _)| k != "API_KEY" && k != "FROM_CONFIG"));
    let file: BTreeMap<_, _> = p.secret_env.iter().cloned().collect();
    assert_eq!(file.get("AGENT_RELAY_TOKEN").map(String::as_str), Some("tok-secret"));
    assert_eq!(file.get("API_KEY").map(String::as_str), Some("k"));
    assert_eq!(file.get("FROM_CONFIG").map(String::as_str), Some("c"));
}

#[test]
fn supervisor_keys_cannot_be_spoofed_by_callers() {
    // seed #1256/#330: the authoritative block wins; the file must not carry a competing value,
    // since EnvironmentFile= overrides Environment=.
    let p = plan_for(
        r#"{"provider":"claude","cwd":"/x","env":{"AGENT_RELAY_TAGS":"spoof","AGENT_RELAY_AGENT_ID":"spoof"}}"#,
    );
    assert!(p.secret_env.iter().all(|(k, _)| k != "AGENT_RELAY_TAGS" && k != "AGENT_RELAY_AGENT_ID"));
    assert_eq!(env(&p, "AGENT_RELAY_TAGS"), Some("headless,dashboard-spawned,Box.Local"));
    assert_eq!(env(&p, "AGENT_RELAY_AGENT_ID"), Some(p.meta.agent_id.as_str()));
}

#[test]
fn prompt_and_payloads_are_files_not_argv() {
    let p = plan_for(
        r#"{"provider":"claude","cwd":"/x","prompt":"PROMPT-TEXT","systemPromptAppend":"APPEND","agentProfile":{"env":{"P":"1"}},"workspace":{"mode":"shared"}}"#,
    );
    assert!(p.argv.iter().all(|a| !a.contains("PROMPT-TEXT") && !a.contains("APPEND")));
    assert!(!p.argv.contains(&"--prompt".to_string()));
    let names: Vec<_> = p.payloads.iter().map(|f| f.path.file_name().unwrap().to_str().unwrap()).collect();
    assert_eq!(names, ["prompt", "system-prompt-append", "agent-profile.json", "workspace.json"]);
    assert_eq!(env(&p, "AGENT_RELAY_PROMPT_FILE"), Some(p.payloads[0].path.to_str().unwrap()));
    assert!(env(&p, "AGENT_RELAY_WORKSPACE_JSON_FILE").is_some());
    assert!(p.secret_env.contains(&("P".to_string(), "1".to_string())), "profile env is applied");
}

#[test]
fn runner_argv_matches_the_seed_order() {
    let p = plan_for(
        r#"{"provider":"codex","cwd":"/x","label":"l","model":"m","effort":"high","tags":["a"],"capabilities":["c","c"],"providerArgs":["--x"],"approvalMode":"auto"}"#,
    );
    let want = [
        "/usr/bin/claude-relay",
        "codex",
        "--headless",
        "--cwd",
        "/home/u/projects/app",
        "--relay-url",
        "http://relay",
        "--approval",
        "auto",
        "--model",
        "m",
        "--effort",
        "high",
        "--label",
        "l",
        "--agent-id",
        &p.meta.agent_id,
        "--tags",
        "a",
        "--caps",
        "c,c",
        "--",
        "--x",
    ];
    assert_eq!(p.argv, want);
    assert_eq!(env(&p, "AGENT_RELAY_CAPS"), Some("c"));
}

#[test]
fn path_puts_user_bins_first_without_duplicates() {
    assert_eq!(
        runner_path(Path::new("/home/u"), "/usr/bin:/bin:/usr/bin:/home/u/.local/bin"),
        "/home/u/.local/bin:/home/u/.bun/bin:/home/u/.npm-global/bin:/usr/bin:/bin"
    );
}

#[test]
fn isolated_workspace_drops_public_dir() {
    let p = plan_for(r#"{"provider":"claude","cwd":"/x","workspaceMode":"isolated","env":{"PUBLIC_DIR":"/p"}}"#);
    assert!(p.secret_env.iter().all(|(k, _)| k != "PUBLIC_DIR"));
}

#[test]
fn env_file_escapes_what_systemd_would_interpret() {
    let text = render_env_file(&[("A".into(), "x \"q\" $HOME \\ `c`\nline2".into())]);
    assert_eq!(text, "A=\"x \\\"q\\\" \\$HOME \\\\ \\`c\\`\nline2\"\n");
}

#[test]
fn unit_properties_carry_what_an_operator_checks() {
    let p = plan_for(r#"{"provider":"claude","cwd":"/x","lifecycle":"ephemeral"}"#);
    let props = agent_properties(&p);
    assert_eq!(find(&props, "Type"), Some(&Value::Str("exec".into())));
    assert_eq!(find(&props, "Slice"), Some(&Value::Str("agent_relay.slice".into())));
    assert_eq!(find(&props, "KillMode"), Some(&Value::Str("control-group".into())));
    assert_eq!(find(&props, "Restart"), Some(&Value::Str("no".into())));
    let Some(Value::Bytes(fields)) = find(&props, "LogExtraFields") else { panic!("no LogExtraFields") };
    assert!(fields.contains(&format!("AGENT_RELAY_AGENT_ID={}", p.meta.agent_id).into_bytes()));
    let persistent = agent_properties(&plan_for(r#"{"provider":"claude","cwd":"/x"}"#));
    assert_eq!(find(&persistent, "Restart"), Some(&Value::Str("on-failure".into())));
}

#[test]
fn a_description_names_its_agent_id_at_its_end() {
    let d = description("claude", "fix (x)", "org/agent (7)");
    assert!(description_may_name(&d, "org/agent (7)"));
    assert!(!description_may_name(&d, "agent (7)"));
    assert!(!description_may_name(&d, "org/agent"));
    let p = plan_for(r#"{"provider":"claude","cwd":"/x","agentId":"a/b"}"#);
    assert!(description_may_name(&p.description, "a/b"));
}
