use std::path::Path;

use super::*;
use crate::model::config::Config;
use crate::model::plan::{plan, render_env_file, PlanInputs, SpawnPlan};
use crate::model::request::{Lifecycle, TaskId};
use crate::model::unit::agent_properties;
use unit::{render, Inputs};

fn agent(text: &str) -> AgentFile {
    match parse(text) {
        Ok(Parsed::Agent(f)) => *f,
        other => panic!("{text:?}: {other:?}"),
    }
}

fn error(text: &str) -> String {
    let e = parse(text).expect_err(text).to_string();
    assert!(!e.contains('\n'), "one line: {e:?}");
    e
}

const MINIMAL: &str = "[Agent]\nProvider=claude\nCwd=~/projects/app\n";

#[test]
fn every_key_sets_its_field() {
    let f = agent(
        "# a reviewer\n[Agent]\nProvider=claude\nCwd=~/projects/app\nLabel=Review bot\nAgentId=a-1\nTaskId=42\n\
         ApprovalMode=auto\nRig=r\nModel=opus\nEffort=high\nProfile=p\nPromptFile=~/prompts/review.md\n\
         SystemPromptAppend=be brief\nTags=a b\nTags=c\nCapabilities=x\nProviderArgs=--flag \"two words\"\n\
         Environment=A=1 \"B=two words\"\nEnvironment=C=3\nAgentProfile={\"env\":{\"P\":\"q\"}}\n\
         Workspace={\"root\":\"/w\"}\nRelayInjectionEvents=[{\"t\":1}]\nPolicyName=pol\nSpawnRequestId=rid\n\
         Lifecycle=ephemeral\nWorkspaceMode=isolated\nAutomationId=au\nAutomationRunId=run\nRequestedVia=mcp\n\
         ReplayPromptOnRestart=yes\nMemoryMax=2G\nMemoryHigh=1G\nTasksMax=64\nCPUQuota=150%\n\
         [Unit]\nAfter=network-online.target\n[Service]\nNice=5\n[Install]\nWantedBy=default.target\nAlias=rev.service\n",
    );
    let r = &f.request;
    assert_eq!((r.provider.as_str(), r.cwd.as_str()), ("claude", "~/projects/app"));
    assert_eq!(r.label.as_deref(), Some("Review bot"));
    assert_eq!(r.task_id, Some(TaskId::Number(42)));
    assert_eq!(r.tags, ["a", "b", "c"]);
    assert_eq!(r.provider_args, ["--flag", "two words"]);
    assert_eq!(r.env.get("B").map(String::as_str), Some("two words"));
    assert_eq!(r.env.len(), 3);
    assert_eq!(r.lifecycle, Some(Lifecycle::Ephemeral));
    assert!(r.replay_prompt_on_restart);
    assert_eq!(r.relay_injection_events.len(), 1);
    let limits = r.limits.as_ref().unwrap();
    assert_eq!((limits.tasks_max, limits.cpu_quota), (Some(64), Some(150)));
    assert_eq!(f.prompt_file.as_deref(), Some("~/prompts/review.md"));
    assert_eq!(f.unit, [("After".to_string(), "network-online.target".to_string())]);
    assert_eq!(f.service, [("Nice".to_string(), "5".to_string())]);
    assert_eq!(f.install.wanted_by, ["default.target"]);
    assert_eq!(f.install.alias, ["rev.service"]);
}

#[test]
fn an_empty_file_masks_and_anything_else_must_declare() {
    assert_eq!(parse(""), Ok(Parsed::Masked));
    assert!(error("\n").contains("no Provider="));
    assert!(error("[Agent]\nProvider=claude\n").contains("no Cwd="));
}

#[test]
fn mistakes_are_refused_with_their_line() {
    let cases = [
        ("Provider=claude\n", "line 1: Provider= comes before any section"),
        (
            "[Agent]\nProvider=claude\nCwd=/p\nModle=opus\n",
            "line 4: unknown key Modle= in [Agent]; the keys are: Provider,",
        ),
        ("[Agent]\nProvider=claude\nProvider=codex\nCwd=/p\n", "line 3: Provider= is given twice (first on line 2)"),
        ("[Agents]\n", "line 1: unknown section [Agents]"),
        ("[Agent]\nProvider claude\n", "line 2: \"Provider claude\" is neither KEY=VALUE nor a [Section]"),
        ("[Agent]\nProvider=claude\nCwd=/p\nModel=\n", "line 4: Model= is empty"),
        ("[Agent]\nProvider=a/b\nCwd=/p\n", "provider \"a/b\" is not valid"),
        ("[Agent]\nProvider=claude\nCwd=/p\nLifecycle=forever\n", "neither persistent nor ephemeral"),
        ("[Agent]\nProvider=claude\nCwd=/p\nMemoryMax=lots\n", "not a size"),
        ("[Agent]\nProvider=claude\nCwd=/p\nCPUQuota=1.5\n", "not a whole percentage"),
        ("[Agent]\nProvider=claude\nCwd=/p\nAgentProfile=[1]\n", "must be a JSON object"),
        ("[Agent]\nProvider=claude\nCwd=/p\nAgentProfile={\n", "not JSON"),
        ("[Agent]\nProvider=claude\nCwd=/p\nEnvironment=NOEQUALS\n", "KEY=VALUE words"),
        ("[Agent]\nProvider=claude\nCwd=/p\nEnvironment=EXIT_CODE=0\n", "reserved"),
        ("[Agent]\nProvider=claude\nCwd=/p\nProviderArgs=\"open\n", "quote is never closed"),
        ("[Agent]\nProvider=claude\nCwd=/p\nPromptFile=prompt.md\n", "not an absolute path"),
        ("[Agent]\nProvider=claude\nCwd=/p\nPrompt=x\nPromptFile=/x\n", "Prompt= and PromptFile= are both given"),
        ("[Agent]\nProvider=claude\nCwd=/p\nReplayPromptOnRestart=maybe\n", "not a boolean"),
        ("[Agent]\nProvider=claude\nCwd=/p\nLabel=x\\\n", "continuing a line that never comes"),
        (
            "[Agent]\nProvider=claude\nCwd=/p\n[Service]\nExecStart=/bin/sh\n",
            "[Service] ExecStart= is set by agent-relay-systemd",
        ),
        ("[Agent]\nProvider=claude\nCwd=/p\n[Service]\nEnvironment=TOKEN=x\n", "use [Agent] Environment="),
        ("[Agent]\nProvider=claude\nCwd=/p\n[Unit]\nDescription=x\n", "[Unit] Description= is set"),
        ("[Agent]\nProvider=claude\nCwd=/p\n[Service]\nExec-Start=x\n", "not a key name"),
        ("[Agent]\nProvider=claude\nCwd=/p\n[Install]\nAlso=x.service\n", "Also= is not supported"),
        ("[Agent]\nProvider=claude\nCwd=/p\n[Install]\nWantedBy=../../etc/x.target\n", "not a unit name"),
        ("[Agent]\nProvider=claude\nCwd=/p\n[Install]\nWantedBy=%u.target\n", "not a unit name"),
        ("[Agent]\nProvider=claude\nCwd=/p\n[Install]\nWantedBy=default\n", "not a unit name"),
        ("[Agent]\nProvider=claude\nCwd=/p\n[Install]\nAlias=x.target\n", "an alias of an agent is a NAME.service"),
        ("[Agent]\nProvider=claude\nCwd=/p\n[Install]\nAlias=agent-relay-managed-x.service\n", "agents' own"),
    ];
    for (text, want) in cases {
        let e = error(text);
        assert!(e.contains(want), "{text:?}: {e:?} lacks {want:?}");
    }
}

#[test]
fn characters_systemd_would_not_read_as_text_are_refused_where_they_stand() {
    for bad in ["\u{0}", "\u{1b}[31m", "\u{7f}", "\u{85}", "\u{b}"] {
        let e = error(&format!("[Agent]\nProvider=claude\nCwd=/p\nLabel=a{bad}b\n"));
        assert!(e.starts_with("line 4: a control character"), "{bad:?}: {e}");
    }
    // CRLF line ends are read as systemd reads them; a tab separates words.
    let f = agent("[Agent]\r\nProvider=claude\r\nCwd=/p\r\nLabel=a b\r\nProviderArgs=a\tb\r\n");
    assert_eq!(f.request.label.as_deref(), Some("a b"));
    assert_eq!(f.request.provider_args, ["a", "b"]);
    let huge = format!("{MINIMAL}Prompt={}\n", "x".repeat(MAX_FILE_BYTES as usize));
    assert!(error(&huge).contains("larger than 1048576 bytes"));
}

#[test]
fn names_need_no_escaping_anywhere() {
    for good in ["reviewer", "a", "Nightly_build-2", &"x".repeat(64)] {
        assert_eq!(check_name(good), Ok(()), "{good}");
    }
    for bad in ["", "-x", "a b", "a.b", "a/b", "ü", "%n", "$x", "a\\b", &"x".repeat(65)] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
    assert_eq!(name_of_file("reviewer.agent"), Some("reviewer"));
    assert_eq!(name_of_file(".agent"), None);
    assert_eq!(name_of_file("reviewer.agent~"), None);
}

#[test]
fn words_split_as_systemd_splits_them() {
    let w = |s: &str| split_words(s).unwrap();
    assert_eq!(w("a  b\tc"), ["a", "b", "c"]);
    assert_eq!(w("\"a b\" 'c d' e\\sf"), ["a b", "c d", "e f"]);
    assert_eq!(w("\"\" x"), ["", "x"]);
    assert_eq!(w("$HOME %n ${X} ; a\"b\"c"), ["$HOME", "%n", "${X}", ";", "abc"]);
    assert_eq!(w("\"line\\nbreak\" \\x41\\u00e9 \\\\"), ["line\nbreak", "A\u{e9}", "\\"]);
    assert!(w("").is_empty());
    for bad in ["\"open", "trailing\\", "\\q", "\\x4", "\\x00"] {
        assert!(split_words(bad).is_err(), "{bad:?}");
    }
}

/// Built by the config loader itself, so that every setting not named here is its default.
fn config() -> Config {
    let none = |_: &str| None;
    let inputs = crate::model::config::ConfigInputs { home: Path::new("/home/u"), os_hostname: "box", var: &none };
    let text = r#"{"id": "box", "hostname": "box", "relayUrl": "http://relay", "token": "tok-SECRET-agentfile",
        "baseDir": "/home/u/projects"}"#;
    crate::model::config::resolve(Some(text), Path::new("/t/orchestrator.json"), &inputs).expect("a valid config")
}

const EXE: &str = "/usr/bin/agent-relay-systemd";

fn plan_of(name: &str, f: &AgentFile) -> SpawnPlan {
    let cfg = config();
    let req = request_of(name, f, None, None);
    let launcher = vec!["/usr/bin/claude-relay".to_string()];
    let seed = plan_seed(name, &req);
    let inputs = PlanInputs {
        config: &cfg,
        home: Path::new("/home/u"),
        runtime_root: Path::new("/home/u/.local/state/agent-relay-systemd/durable"),
        caller_path: "/usr/bin:/bin",
        launcher: &launcher,
        cwd: Path::new("/home/u/projects/app"),
        now_ms: 0,
        record_exit: Some((Path::new(EXE), Path::new("/home/u/.local/state/agent-relay-systemd/exits"))),
        random_hex: &seed,
        inherited_env: &[],
    };
    plan(&req, &inputs).unwrap()
}

fn generated(name: &str, text: &str) -> (SpawnPlan, unit::GeneratedUnit) {
    let f = agent(text);
    let p = plan_of(name, &f);
    let env_file = p.env_file.display().to_string();
    let log_file = p.log_file.display().to_string();
    let g = render(Inputs {
        name,
        source: "/home/u/.config/agent-relay/agents/x.agent",
        file: &f,
        unit: &p.unit,
        props: agent_properties(&p),
        argv: &p.argv,
        exe: EXE,
        env_file: &env_file,
        log_file: &log_file,
    })
    .unwrap();
    (p, g)
}

/// Keys of the unit's lines, in order (comments and headers left out).
fn keys(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect()
}

#[test]
fn the_unit_runs_the_runner_through_our_launcher_and_holds_no_secret() {
    let (p, g) = generated(
        "reviewer",
        &format!("{MINIMAL}Environment=SECRET_KEY=sk-do-not-leak\nPrompt=PROMPT-do-not-leak\n[Service]\nNice=5\n[Install]\nWantedBy=default.target\n"),
    );
    assert_eq!(g.unit, p.unit);
    for secret in ["tok-SECRET-agentfile", "sk-do-not-leak", "PROMPT-do-not-leak"] {
        assert!(!g.text.contains(secret), "{secret} in\n{}", g.text);
    }
    let k = keys(&g.text);
    assert!(!k.contains(&"EnvironmentFile") && !k.contains(&"StandardOutput"), "{}", g.text);
    assert_eq!(k.iter().filter(|k| **k == "ExecStart").count(), 1);
    let exec_start = g.text.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    let env_file = p.env_file.display().to_string();
    assert!(
        exec_start.starts_with(&format!(
            "ExecStart={EXE} run-agent --env-file={env_file} --log-file={} -- /usr/bin/claude-relay claude",
            p.log_file.display()
        )),
        "{exec_start}"
    );
    let service = g.text.split("[Service]\n").nth(1).unwrap();
    let pre = format!("ExecStartPre={EXE} prepare-agent --name=reviewer --digest={}\n", g.digest);
    assert!(service.starts_with(&pre), "{service}");
    assert!(g.text.contains("\nSourcePath=/home/u/.config/agent-relay/agents/x.agent\n"));
    assert!(g.text.trim_end().ends_with("Nice=5"), "{}", g.text);
    assert!(!g.text.contains("[Install]"));
    assert_eq!(g.digest, unit::digest(&g.text.replace(&pre, "")));
    assert_eq!(
        g.links,
        [
            unit::Link { path: "reviewer.agent.service".into(), target: p.unit.clone() },
            unit::Link { path: format!("default.target.wants/{}", p.unit), target: format!("../{}", p.unit) },
        ]
    );
    // The plan is the same on every reload: no time, no randomness.
    let (_, again) = generated("reviewer", &format!("{MINIMAL}Environment=SECRET_KEY=sk-do-not-leak\nPrompt=PROMPT-do-not-leak\n[Service]\nNice=5\n[Install]\nWantedBy=default.target\n"));
    assert_eq!(again, g);
    assert!(p.meta.agent_id.starts_with("box-claude-reviewer-"), "{}", p.meta.agent_id);
}

#[test]
fn hostile_values_reach_the_unit_as_data_never_as_syntax() {
    let forged = "ExecStartPre=/bin/sh -c evil";
    let text = format!(
        "[Agent]\nProvider=claude\nCwd=/p\nLabel=100% $HOME ; \"q\" back\\\\slash \\\n{forged}\n\
         Model=%n${{PATH}};x\nProviderArgs=\"a\\n{forged}\" %h $USER ';' '\\\\' \"x\\\"y\"\n\
         Environment=\"K=v\\n{forged}\"\n"
    );
    let f = agent(&text);
    // The continued line is part of the label, not a key (the `\` a space, as systemd reads it).
    assert_eq!(f.request.label.as_deref(), Some(format!("100% $HOME ; \"q\" back\\\\slash  {forged}").as_str()));
    assert_eq!(
        f.request.provider_args,
        [format!("a\n{forged}"), "%h".into(), "$USER".into(), ";".into(), "\\".into(), "x\"y".into()]
    );
    let (p, g) = generated("hostile", &text);
    let (_, benign) =
        generated("hostile", "[Agent]\nProvider=claude\nCwd=/p\nLabel=a\nModel=m\nProviderArgs=a b c d e f\n");
    assert_eq!(keys(&g.text), keys(&benign.text), "hostile values changed the unit's shape:\n{}", g.text);
    assert!(!g.text.lines().any(|l| l.starts_with(forged)), "{}", g.text);
    // Every `%` is a doubled one (no specifier), and `$` is doubled on command lines.
    for line in g.text.lines().filter(|l| !l.starts_with('#')) {
        let undoubled = line.replace("%%", "");
        assert!(!undoubled.contains('%'), "a lone % in {line}");
        if line.starts_with("Exec") {
            assert!(!line.replace("$$", "").contains('$'), "a lone $ in {line}");
        }
    }
    assert!(g.text.contains("\"a\\nExecStartPre=/bin/sh -c evil\""), "{}", g.text);
    // The environment's hostile value is in the secret file only.
    assert!(!g.text.contains("K=v"));
    assert!(render_env_file(&p.secret_env).contains("K=\"v\nExecStartPre=/bin/sh -c evil\""));
}

#[test]
fn a_new_prompt_is_a_new_directory_the_same_prompt_is_not() {
    let with = |prompt: &str| plan_of("a", &agent(&format!("{MINIMAL}Prompt={prompt}\n")));
    assert_eq!(with("one").agent_dir, with("one").agent_dir);
    assert_ne!(with("one").agent_dir, with("two").agent_dir);
    assert_eq!(with("one").meta.agent_id, with("two").meta.agent_id);
    assert_ne!(plan_of("a", &agent(MINIMAL)).meta.agent_id, plan_of("b", &agent(MINIMAL)).meta.agent_id);
}

#[test]
fn env_files_read_back_exactly() {
    let vars: Vec<(String, String)> = [
        ("A", ""),
        ("B", "two words"),
        ("C", "line\nbreak\\\n \"q\" $HOME `x` \\"),
        ("D", "\u{e9}\t"),
        ("AGENT_RELAY_TOKEN", "tok"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(parse_env_file(&render_env_file(&vars)), Ok(vars));
    assert_eq!(parse_env_file(""), Ok(vec![]));
    for bad in ["A=b\n", "A=\"b\"", "A=\"b", "1=\"b\"\n", "A=\"b\"x\n"] {
        assert!(parse_env_file(bad).is_err(), "{bad:?}");
    }
}

proptest::proptest! {
    #[test]
    fn env_files_round_trip(vars in proptest::collection::btree_map("[A-Z_][A-Z0-9_]{0,8}", "\\PC*", 0..6)) {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        proptest::prop_assert_eq!(parse_env_file(&render_env_file(&vars)), Ok(vars));
    }

    #[test]
    fn no_file_text_panics_or_escapes_its_line(text in "[\\[\\]A-Za-z=\"'\\\\ \\n%$;#]{0,200}") {
        let _ = parse(&text);
    }
}
