use super::*;
use crate::model::request::parse;
use crate::model::unit::{agent_properties, find, Value};

/// Built by the config loader itself, so that every setting not named here is its default.
fn config() -> Config {
    let none = |_: &str| None;
    let inputs = crate::model::config::ConfigInputs { home: Path::new("/home/u"), os_hostname: "box", var: &none };
    let text = r#"{"id": "box", "hostname": "Box.Local", "relayUrl": "http://relay", "token": "tok-secret",
        "baseDir": "/home/u/projects", "env": {"FROM_CONFIG": "c", "AGENT_RELAY_AGENT_ID": "spoof"}}"#;
    crate::model::config::resolve(Some(text), Path::new("/t/orchestrator.json"), &inputs).expect("a valid config")
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
        inherited_env: &[],
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
    // The seed's form, its 8 hex digits the start of the unit's unique part (not random).
    assert_eq!(
        p.meta.agent_id,
        format!(
            "box-local-claude-fix-bug-{}",
            &naming::unique_suffix(naming::UniqueId::SpawnRequest("req-000042"))[..8]
        )
    );
    let no_rid = plan_for(r#"{"provider":"claude","cwd":"/x","label":"Fix Bug"}"#);
    assert_eq!(no_rid.meta.agent_id, "box-local-claude-fix-bug-01234567");
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
    assert_eq!(t.meta.label, "lint", "the label stays the request's");
    assert!(t.meta.session.starts_with("ar-claude-task-7-lint-"), "{}", t.meta.session);
}

#[test]
fn task_sessions_are_named_as_the_orchestrator_names_them() {
    let session = |json: &str| plan_for(json).meta.session;
    let base = r#""provider":"claude","cwd":"/x","spawnRequestId":"r-00000001""#;
    let sfx = naming::unique_suffix(naming::UniqueId::SpawnRequest("r-00000001"));
    let task7 = format!("ar-claude-task-7-{sfx}");
    assert_eq!(session(&format!(r#"{{{base},"taskId":7,"label":"task-7: fix lint"}}"#)), task7);
    assert_eq!(session(&format!(r#"{{{base},"taskId":7,"label":"Task-7"}}"#)), task7);
    assert_eq!(session(&format!(r#"{{{base},"taskId":7}}"#)), task7);
    assert_eq!(session(&format!(r#"{{{base},"taskId":7,"label":" lint "}}"#)), format!("ar-claude-task-7-lint-{sfx}"));
    let p = plan_for(&format!(r#"{{{base},"taskId":7,"label":"task-7: fix lint"}}"#));
    assert_eq!(env(&p, "AGENT_RELAY_TASK_ID"), Some("7"));
    assert_eq!(env(&p, "AGENT_RELAY_LABEL"), Some("task-7: fix lint"));
    let at = p.argv.iter().position(|a| a == "--label").unwrap();
    assert_eq!(p.argv[at + 1], "task-7: fix lint");
    assert_eq!(p.meta.task_id.as_deref(), Some("7"));
}

#[test]
fn the_orchestrators_newer_keys() {
    let p = plan_for(r#"{"provider":"claude","cwd":"/x","relayInjectionEvents":[{"a":"b"}]}"#);
    assert_eq!(env(&p, "AGENT_RELAY_ORCHESTRATOR_ID"), Some("box"));
    assert_eq!(env(&p, "AGENT_RELAY_ARTIFACT_URL"), Some("http://127.0.0.1:4860/api/artifacts"));
    assert_eq!(env(&p, "AGENT_RELAY_SHARED_MCP_URL"), Some("http://127.0.0.1:4861/mcp"));
    // The orchestrator's owner id: the first 16 hex digits of sha256 of its state file's path.
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(b"/home/u/.agent-relay/orchestrator-sessions.json");
    let want: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    assert_eq!(env(&p, "AGENT_RELAY_TMUX_OWNER"), Some(want.as_str()));
    let events = p.payloads.iter().find(|f| f.path.ends_with("injection-events.json")).unwrap();
    assert_eq!(events.contents, r#"[{"a":"b"}]"#);
    assert_eq!(env(&p, "AGENT_RELAY_INJECTION_EVENTS_JSON_FILE"), Some(events.path.to_str().unwrap()));
    assert!(p.environment.iter().all(|(k, _)| k != "AGENT_RELAY_INJECTION_EVENTS_JSON"));
}

#[test]
fn every_key_the_plan_sets_is_supervisor_owned_and_every_owned_key_is_kept_from_callers() {
    let everything = r#"{"provider":"claude","cwd":"/x","label":"l","spawnRequestId":"r","taskId":3,"prompt":"p",
        "systemPromptAppend":"a","agentProfile":{"x":1},"workspace":{"m":1},"relayInjectionEvents":[1],"profile":"pr",
        "policyName":"po","automationId":"ai","automationRunId":"ar"}"#;
    let p = plan_for(everything);
    for (k, _) in &p.environment {
        assert!(is_supervisor_owned(k), "{k} is set by the plan but not in SUPERVISOR_OWNED");
    }
    let set: Vec<&str> = p.environment.iter().map(|(k, _)| k.as_str()).collect();
    let inline_only = [
        "AGENT_RELAY_PROMPT",
        "AGENT_RELAY_SYSTEM_PROMPT_APPEND",
        "AGENT_RELAY_AGENT_PROFILE_JSON",
        "AGENT_RELAY_WORKSPACE_JSON",
        "AGENT_RELAY_INJECTION_EVENTS_JSON",
    ];
    for k in SUPERVISOR_OWNED {
        assert!(set.contains(k) || inline_only.contains(k), "{k} is owned but never set");
    }
    // A caller setting every one of them through every layer: none reaches the file.
    let owned: BTreeMap<String, String> =
        SUPERVISOR_OWNED.iter().map(|k| (k.to_string(), "spoof".to_string())).collect();
    let mut cfg = config();
    cfg.env.extend(owned.clone());
    let json = format!(r#"{{"provider":"claude","cwd":"/x","env":{}}}"#, serde_json::to_string(&owned).unwrap());
    let inherited: Vec<(String, String)> = owned.clone().into_iter().collect();
    let p = plan_with(&cfg, &parse(&json).unwrap(), &inherited);
    assert!(p.secret_env.iter().all(|(k, _)| !is_supervisor_owned(k)), "{:?}", p.secret_env);
    assert_eq!(p.dropped_env.len(), SUPERVISOR_OWNED.len(), "config and request are told: {:?}", p.dropped_env);
}

fn plan_with(cfg: &Config, req: &SpawnRequest, inherited: &[(String, String)]) -> SpawnPlan {
    let launcher = vec!["/usr/bin/claude-relay".to_string()];
    let inputs = PlanInputs {
        config: cfg,
        home: Path::new("/home/u"),
        runtime_root: Path::new("/run/user/0/agent-relay-systemd"),
        caller_path: "/usr/bin",
        launcher: &launcher,
        cwd: Path::new("/home/u/projects/app"),
        now_ms: 1_700_000_000_000,
        record_exit: None,
        random_hex: "0123456789abcdef0123456789abcdef",
        inherited_env: inherited,
    };
    plan(req, &inputs).unwrap()
}

#[test]
fn the_callers_environment_is_the_bottom_layer() {
    let huge = "x".repeat(200_000);
    let inherited: Vec<(String, String)> = [
        ("API_KEY", "inherited"),
        ("FROM_CONFIG", "inherited"),
        ("ONLY_INHERITED", "i"),
        ("AGENT_RELAY_TOKEN", "inherited-token"),
        ("INVOCATION_ID", "0123456789abcdef0123456789abcdef"),
        ("TRIGGER_UNIT", "x.timer"),
        ("EXIT_STATUS", "0"),
        ("PWD", "/caller"),
        ("AGENT_RELAY_PROMPT", "inline"),
        ("BAD-NAME", "x"),
        ("ESCAPE", "a\u{1b}b"),
        ("NONCHAR", "\u{fffe}"),
        ("HUGE", huge.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut cfg = config();
    let req = parse(
        r#"{"provider":"claude","cwd":"/x","env":{"API_KEY":"request"},"agentProfile":{"env":{"FROM_CONFIG":"profile"}}}"#,
    )
    .unwrap();
    let p = plan_with(&cfg, &req, &inherited);
    let file: BTreeMap<_, _> = p.secret_env.iter().cloned().collect();
    let get = |k: &str| file.get(k).map(String::as_str);
    assert_eq!(get("ONLY_INHERITED"), Some("i"));
    assert_eq!(get("API_KEY"), Some("request"));
    assert_eq!(get("FROM_CONFIG"), Some("profile"));
    assert_eq!(get("AGENT_RELAY_TOKEN"), Some("tok-secret"), "the config's token over the caller's");
    for gone in [
        "INVOCATION_ID",
        "TRIGGER_UNIT",
        "EXIT_STATUS",
        "PWD",
        "AGENT_RELAY_PROMPT",
        "BAD-NAME",
        "ESCAPE",
        "NONCHAR",
        "HUGE",
    ] {
        assert_eq!(get(gone), None, "{gone} was inherited");
    }
    assert_eq!(
        p.dropped_env,
        ["AGENT_RELAY_AGENT_ID"],
        "the config's spoof only: the inherited env is filtered silently"
    );
    cfg.inherit_environment = false;
    let p = plan_with(&cfg, &req, &inherited);
    assert!(p.secret_env.iter().all(|(k, _)| k != "ONLY_INHERITED"));
}

/// systemd's reading of double-quoted `EnvironmentFile=` values (systemd.exec(5)): `\` escapes
/// `"`, `\`, `` ` ``, `$` and a newline (dropped); any other backslash stays as written.
fn systemd_env_file(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].to_string();
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break eq + 2 + i + 1,
                Some((_, '\\')) => match chars.next() {
                    Some((_, c @ ('"' | '\\' | '`' | '$'))) => value.push(c),
                    Some((_, '\n')) => {}
                    Some((_, c)) => {
                        value.push('\\');
                        value.push(c);
                    }
                    None => panic!("dangling backslash"),
                },
                Some((_, c)) => value.push(c),
                None => panic!("unterminated value of {key}"),
            }
        };
        out.push((key, value));
        rest = rest[end..].strip_prefix('\n').expect("one assignment per line");
    }
    assert!(rest.is_empty(), "left over: {rest:?}");
    out
}

#[test]
fn the_env_file_carries_every_value_exactly() {
    let values = [
        "  lead\nmulti \"dq\" 'sq' $HOME ${PATH} `cmd` back\\slash\\\nafter #hash ;semi a=b ünï\ttab end\\",
        "\\",
        "\\\\\"",
        "$",
        "\n\n",
        "",
        "=\"",
        "\\n is not a newline",
    ];
    let vars: Vec<(String, String)> =
        values.iter().enumerate().map(|(i, v)| (format!("V{i}"), v.to_string())).collect();
    assert_eq!(systemd_env_file(&render_env_file(&vars)), vars);
}

#[test]
fn secrets_and_caller_env_go_to_the_file_never_to_environment() {
    let p = plan_for(r#"{"provider":"claude","cwd":"/x","env":{"API_KEY":"k","AGENT_RELAY_TAGS":"spoof"}}"#);
    assert_eq!(p.dropped_env, ["AGENT_RELAY_AGENT_ID", "AGENT_RELAY_TAGS"], "the config's and request's spoofs");
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
    assert_eq!(names, ["prompt", "system-prompt-append", "agent-profile.json", "workspace.json", "request.json"]);
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
    assert_eq!(find(&props, "Type"), Some(&Value::Str("notify".into())));
    assert_eq!(find(&props, "NotifyAccess"), Some(&Value::Str("all".into())));
    assert_eq!(find(&props, "Slice"), Some(&Value::Str("agent_relay.slice".into())));
    assert_eq!(find(&props, "KillMode"), Some(&Value::Str("control-group".into())));
    assert_eq!(find(&props, "Restart"), Some(&Value::Str("no".into())));
    let Some(Value::Bytes(fields)) = find(&props, "LogExtraFields") else { panic!("no LogExtraFields") };
    assert!(fields.contains(&format!("AGENT_RELAY_AGENT_ID={}", p.meta.agent_id).into_bytes()));
    let persistent = agent_properties(&plan_for(r#"{"provider":"claude","cwd":"/x"}"#));
    assert_eq!(find(&persistent, "Restart"), Some(&Value::Str("on-failure".into())));
}

#[test]
fn command_lines_are_run_exactly() {
    let p = plan_for(
        r#"{"provider":"claude","cwd":"/x","model":"${AGENT_RELAY_TOKEN}","agentId":"--unit=x",
            "spawnRequestId":"-r;$X","providerArgs":["$INJECT"]}"#,
    );
    let props = agent_properties(&p);
    assert!(find(&props, "ExecStart").is_none() && find(&props, "ExecStopPost").is_none());
    let no_expand = vec!["no-env-expand".to_string()];
    // Our log writer first, its words ours alone (the times file named by the unit), then the
    // runner's words after `--`, exactly.
    let exe = "/usr/bin/agent-relay-systemd".to_string();
    let times = format!("--times={}", crate::model::logtimes::times_file(&p.log_file).display());
    let mut start = vec![exe.clone(), "log-tee".into(), times, "--".into()];
    start.extend(p.argv.iter().cloned());
    assert_eq!(find(&props, "ExecStartEx"), Some(&Value::ExecEx(vec![(exe, start, no_expand)])));
    assert!(p.argv.contains(&"${AGENT_RELAY_TOKEN}".to_string()) && p.argv.ends_with(&["$INJECT".to_string()]));
    let Some(Value::ExecEx(post)) = find(&props, "ExecStopPostEx") else { panic!("no ExecStopPostEx") };
    assert_eq!(post[0].2, ["ignore-failure", "no-env-expand"]);
    // The recorder's values are `--flag=value` words: one starting with `-` forges no flag.
    let argv = &post[0].1;
    assert_eq!(argv[..2], ["/usr/bin/agent-relay-systemd", "record-exit"]);
    assert!(argv.contains(&"--agent-id=--unit=x".to_string()), "{argv:?}");
    assert!(argv.contains(&"--spawn-request-id=-r;$X".to_string()), "{argv:?}");
    assert!(argv[2..].iter().all(|w| w.starts_with("--") && w.contains('=')), "{argv:?}");
}

#[test]
fn an_exec_too_large_for_linux_is_told_apart() {
    let mut p = plan_for(r#"{"provider":"claude","cwd":"/x"}"#);
    assert!(!p.exec_too_large());
    let (largest, total) = p.exec_size();
    assert!(largest < 1024 && total > largest, "{largest} {total}");
    // A request cannot get there (its limits), a config env value can.
    p.secret_env.push(("HUGE".into(), "x".repeat(MAX_ARG_STRLEN)));
    assert!(p.exec_too_large());
    assert_eq!(p.exec_size().0, MAX_ARG_STRLEN + "HUGE".len() + 2);
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
