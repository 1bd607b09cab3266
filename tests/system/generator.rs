//! Declared agents against a real private `systemd --user` started with `SYSTEMD_GENERATOR_PATH`
//! pointing at our generator: `.agent` files become units at each daemon-reload, run with the
//! right argv and environment, hold no secret, are operated with `systemctl --user` and our
//! verbs alike; a broken file is skipped and reported; an edit applies at the next start after a
//! reload; a declared agent comes back with the manager.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::util::schema::parse_valid;
use crate::util::*;

const PROMPT: &str = "PROMPT-declared-do-not-leak-31";
const ENV_SECRET: &str = "env-secret-declared-value";

fn generator() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agent-relay-generator"))
}

/// A manager whose generators are ours alone (a directory holding a link to the generator),
/// with the home and config of the [`Env`], as a user's manager has its user's.
fn declared_env() -> Env {
    Env::with_manager_env(
        |_| {},
        |root| {
            let dir = root.join("generators");
            std::fs::create_dir(&dir).unwrap();
            std::os::unix::fs::symlink(generator(), dir.join("agent-relay-generator")).unwrap();
            let home = root.join("home");
            vec![
                ("SYSTEMD_GENERATOR_PATH".into(), dir.display().to_string()),
                ("HOME".into(), home.display().to_string()),
                ("AGENT_RELAY_ORCHESTRATOR_CONFIG".into(), home.join("orchestrator.json").display().to_string()),
            ]
        },
    )
}

fn agents_dir(env: &Env) -> PathBuf {
    env.mgr().root().join("config/agent-relay/agents")
}

fn generator_dir(env: &Env) -> PathBuf {
    env.runtime_dir().join("systemd/generator")
}

fn declare(env: &Env, name: &str, text: &str) {
    std::fs::create_dir_all(agents_dir(env)).unwrap();
    std::fs::write(agents_dir(env).join(format!("{name}.agent")), text).unwrap();
}

fn manager_log(env: &Env) -> String {
    std::fs::read_to_string(env.mgr().root().join("manager.log")).unwrap_or_default()
}

/// A program (`systemd-analyze`) with the manager's environment, as an operator runs it.
fn tool(env: &Env, program: &str, args: &[&str]) -> Output {
    let mut c = Command::new(program);
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("HOME", &env.home);
    c.envs(env.mgr().env()).args(args);
    output_within(&mut c, None, Duration::from_secs(60))
}

/// `generate --dry-run -o json`: the report (valid against its schema) and the exit code.
fn dry_run(env: &Env, name: Option<&str>) -> (Value, Option<i32>) {
    let mut args = vec!["generate", "--dry-run", "-o", "json"];
    args.extend(name);
    let out = env.run(&args, None);
    (parse_valid("generate-dry-run", &out.stdout), out.status.code())
}

/// The agent's record once its runner runs (panics after 10 s): `run-agent` has executed it
/// in its place (until then the unit's main process is `run-agent`, already "started").
fn alive(env: &Env, agent_id: &str) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(Duration::from_secs(10), || {
        let out = env.run(&["show", agent_id, "-o", "json"], None);
        last = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let runner = |pid: u64| {
            let argv0 = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            argv0.split(|b| *b == 0).next().is_some_and(|a| a.ends_with(b"fake-runner"))
        };
        last["state"] == "alive" && last["pid"].as_u64().is_some_and(|p| p > 0 && runner(p))
    });
    assert!(ok, "{agent_id} is not alive: {last}\nmanager.log:\n{}", manager_log(env));
    last
}

fn alpha(app: &Path, model: &str) -> String {
    format!(
        "# the first agent\n[Agent]\nProvider=claude\nCwd={}\nModel={model}\nEnvironment=EXTRA_SECRET={ENV_SECRET} \
         \"SPACED=two words\"\nPrompt={PROMPT}\nProviderArgs=\"a b\" $HOME ${{PATH}} %n ; back\\\\slash \"say \\\"hi\\\"\"\n\
         [Unit]\nAfter=default.target\n[Service]\nNice=5\n[Install]\nWantedBy=default.target\n",
        app.display()
    )
}

const BETA: &str =
    "[Agent]\nProvider=claude\nCwd=~/projects/app\nLabel=Odd \"one\" 100% $HOME\nSpawnRequestId=beta-req\n\
                    Lifecycle=ephemeral\n[Install]\nWantedBy=default.target\n";

#[test]
fn declared_agents_run_from_their_files_with_no_secret_in_their_units() {
    let env = declared_env();
    let app = env.projects.join("app");
    declare(&env, "alpha", &alpha(&app, "opus"));
    declare(&env, "beta", BETA);
    declare(&env, "broken", "[Agent]\nProvider=claude\nCwd=~/projects/app\nModle=opus\n");
    // Planted where a declaration goes: a FIFO must not hang the reload, a link is not followed.
    let dir = agents_dir(&env);
    nix::unistd::mkfifo(&dir.join("fifo.agent"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::os::unix::fs::symlink(dir.join("alpha.agent"), dir.join("linked.agent")).unwrap();
    let started = std::time::Instant::now();
    env.systemctl(&["daemon-reload"]);
    assert!(started.elapsed() < Duration::from_secs(5), "the reload took {:?}", started.elapsed());
    let log = manager_log(&env);
    for (name, why) in [("fifo", "not a regular file (a FIFO)"), ("linked", "is a symbolic link")] {
        let line = format!("agent-relay-generator: {}: ", dir.join(format!("{name}.agent")).display());
        assert!(log.lines().any(|l| l.starts_with(&line) && l.contains(why)), "{name}: {log}");
    }
    std::fs::remove_file(dir.join("fifo.agent")).unwrap();
    std::fs::remove_file(dir.join("linked.agent")).unwrap();
    env.systemctl(&["daemon-reload"]);

    // The broken file: one line in the journal (here the manager's output), skipped.
    let broken = agents_dir(&env).join("broken.agent");
    let line = format!("agent-relay-generator: {}: line 4: unknown key Modle= in [Agent]", broken.display());
    assert!(
        manager_log(&env).lines().any(|l| l.starts_with(&line) && l.ends_with("; skipped")),
        "{}",
        manager_log(&env)
    );

    // What the dry run says is what the generator wrote, byte for byte.
    let (report, code) = dry_run(&env, None);
    assert_eq!(code, Some(2), "{report}");
    assert_eq!(report["errors"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["errors"][0]["source"], broken.display().to_string());
    let units = report["units"].as_array().unwrap();
    assert_eq!(units.len(), 2, "{report}");
    let gen = generator_dir(&env);
    for u in units {
        let unit = u["unit"].as_str().unwrap();
        assert_eq!(std::fs::read_to_string(gen.join(unit)).unwrap(), u["text"].as_str().unwrap(), "{unit}");
        for l in u["links"].as_array().unwrap() {
            let target = std::fs::read_link(gen.join(l["path"].as_str().unwrap())).unwrap();
            assert_eq!(target, Path::new(l["target"].as_str().unwrap()));
        }
        // What systemd-analyze says of it.
        let verify =
            tool(&env, "systemd-analyze", &["--user", "verify", "--man=no", &gen.join(unit).display().to_string()]);
        let said = String::from_utf8_lossy(&verify.stderr);
        assert!(verify.status.success() && said.trim().is_empty(), "verify {unit}: {said}");
    }
    let by_name = |n: &str| units.iter().find(|u| u["name"] == n).unwrap().clone();
    let (a, b) = (by_name("alpha"), by_name("beta"));
    let (a_unit, a_id) = (a["unit"].as_str().unwrap().to_string(), a["agentId"].as_str().unwrap().to_string());
    let b_id = b["agentId"].as_str().unwrap().to_string();
    assert_eq!(a["alias"], "alpha.agent.service");
    let (one, code) = dry_run(&env, Some("alpha"));
    assert_eq!((code, one["units"].as_array().unwrap().len()), (Some(0), 1), "{one}");

    // Started as an operator starts them, by the documented names.
    env.systemctl(&["start", "alpha.agent", "beta.agent.service"]);
    let ra = alive(&env, &a_id);
    let rb = alive(&env, "beta-req");
    assert_eq!((ra["systemdUnit"].as_str(), ra["durable"].as_bool()), (Some(a_unit.as_str()), Some(true)));
    assert_eq!(rb["agentId"], b_id);
    assert_eq!(rb["label"], "Odd \"one\" 100% $HOME");
    assert_eq!(rb["lifecycle"], "ephemeral");
    let status = env.systemctl(&["status", "--no-pager", "alpha.agent.service"]);
    assert!(status.contains(&format!("Agent Relay claude agent \"alpha\" ({a_id})")), "{status}");

    // The runner got exactly its words and its variables.
    let pid = ra["pid"].as_u64().unwrap();
    let argv = cmdline(pid);
    let tail: Vec<&str> = argv[argv.iter().position(|w| w == "--").unwrap() + 1..].iter().map(String::as_str).collect();
    assert_eq!(tail, ["a b", "$HOME", "${PATH}", "%n", ";", "back\\slash", "say \"hi\""], "{argv:?}");
    assert_eq!(argv[argv.iter().position(|w| w == "--model").unwrap() + 1], "opus");
    let environ = environ(pid);
    for want in [format!("AGENT_RELAY_TOKEN={TOKEN}"), format!("EXTRA_SECRET={ENV_SECRET}"), "SPACED=two words".into()]
    {
        assert!(environ.contains(&want), "{want} not in the runner's environment");
    }
    let b_argv = cmdline(rb["pid"].as_u64().unwrap());
    assert_eq!(b_argv[b_argv.iter().position(|w| w == "--label").unwrap() + 1], "Odd \"one\" 100% $HOME");
    assert!(wait_until(Duration::from_secs(5), || std::fs::read_to_string(
        env.home.join(format!(".agent-relay/logs/{}.log", ra["sessionName"].as_str().unwrap()))
    )
    .is_ok_and(|l| l.contains(&format!("PROMPT-BYTES {}", PROMPT.len())))));

    // No secret in the unit files, nor in what systemd shows of the units.
    for u in [&a, &b] {
        let unit = u["unit"].as_str().unwrap();
        let shown = env.systemctl(&["show", unit]) + &env.systemctl(&["cat", unit]);
        let text = std::fs::read_to_string(gen.join(unit)).unwrap();
        for secret in [TOKEN, ENV_SECRET, PROMPT] {
            assert!(!shown.contains(secret) && !text.contains(secret), "{secret} shows in {unit}");
        }
        assert_eq!(env.prop(unit, "UnitFileState"), "generated");
        assert_eq!(env.prop(unit, "SourcePath"), u["source"].as_str().unwrap());
    }

    // Our verbs take them like any agent.
    let listed = env.json(&["list", "-o", "json"], None);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let diag = env.json(&["diagnose", &a_id, "-o", "json"], None);
    assert_eq!(diag["agentId"], a_id.as_str());
    let watch = Watch::start(&env);
    let stopped = env.json(&["stop", &a_id, "-o", "json"], None);
    assert_eq!(stopped["stopped"], true, "{stopped}");
    assert!(!pid_alive(pid));
    let listed = env.json(&["list", "-o", "json"], None);
    let a_listed = listed.as_array().unwrap().iter().find(|r| r["agentId"] == a_id.as_str()).cloned();
    assert_eq!(a_listed.map(|r| r["activeState"].clone()), Some("inactive".into()), "{listed}");
    env.systemctl(&["start", "alpha.agent"]);
    let again = alive(&env, &a_id);
    assert_ne!(again["pid"], ra["pid"]);
    let seen = watch.until(Duration::from_secs(10), |e| {
        e["agent"]["agentId"] == a_id.as_str() && (e["type"] == "started" || e["type"] == "spawned")
    });
    assert!(seen.is_some(), "watch did not see the declared agent start again");
    // The prompt was for the first run.
    let log = env.home.join(format!(".agent-relay/logs/{}.log", ra["sessionName"].as_str().unwrap()));
    assert!(wait_until(Duration::from_secs(5), || std::fs::read_to_string(&log)
        .is_ok_and(|l| l.contains("PROMPT-BYTES 0"))));

    // doctor lists the broken file.
    let gen_path = env.mgr().root().join("generators");
    let out = env.run_with(&[("SYSTEMD_GENERATOR_PATH", gen_path.as_os_str())], &["doctor", "-o", "json"], None);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let finding = doc["findings"].as_array().unwrap().iter().find(|f| f["check"] == "agent-files").cloned();
    let finding = finding.unwrap_or_else(|| panic!("no agent-files finding: {doc}"));
    assert_eq!(finding["status"], "warn", "{finding}");
    assert!(finding["detail"].as_str().unwrap().contains("broken.agent: line 4: unknown key Modle="), "{finding}");

    // An edit the manager has not read is refused at the next start, not half applied; after
    // a reload the next start runs the new declaration.
    declare(&env, "alpha", &alpha(&app, "sonnet"));
    let refused = env.systemctl_fails(&["restart", "alpha.agent"]);
    let told = String::from_utf8_lossy(&refused.stderr);
    assert!(told.contains("changed on disk. Run 'systemctl --user daemon-reload'"), "{told}");
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("alpha.agent (or the config it is planned with) changed since the user manager read it; run `systemctl --user daemon-reload`"),
        "{said}"
    );
    env.systemctl(&["daemon-reload"]);
    env.systemctl(&["reset-failed", &a_unit]);
    env.systemctl(&["restart", "alpha.agent"]);
    let edited = alive(&env, &a_id);
    let argv = cmdline(edited["pid"].as_u64().unwrap());
    assert_eq!(argv[argv.iter().position(|w| w == "--model").unwrap() + 1], "sonnet", "{argv:?}");

    // remove deletes the declaration: the agent stops and its unit is generated no more.
    let b_unit = b["unit"].as_str().unwrap().to_string();
    let removed = env.json(&["remove", "beta-req", "-o", "json"], None);
    assert_eq!((removed["durable"].as_bool(), removed["stopped"].as_bool()), (Some(true), Some(true)), "{removed}");
    assert_eq!(removed["unitFile"], agents_dir(&env).join("beta.agent").display().to_string());
    assert!(!agents_dir(&env).join("beta.agent").exists());
    assert!(!gen.join(&b_unit).exists(), "the generator still writes {b_unit}");
    assert_eq!(env.run(&["show", "beta-req"], None).status.code(), Some(3));
}

#[test]
fn a_declared_agent_comes_back_with_the_manager_and_masking_hides_it() {
    let mut env = declared_env();
    declare(
        &env,
        "keeper",
        &format!("[Agent]\nProvider=claude\nCwd=~/projects/app\nPrompt={PROMPT}\n[Install]\nWantedBy=default.target\n"),
    );
    declare(&env, "manual", "[Agent]\nProvider=claude\nCwd=~/projects/app\nLabel=by hand\n");
    env.systemctl(&["daemon-reload"]);
    let (report, code) = dry_run(&env, None);
    assert_eq!(code, Some(0), "{report}");
    let id = |n: &str| {
        report["units"].as_array().unwrap().iter().find(|u| u["name"] == n).unwrap()["agentId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (keeper, manual) = (id("keeper"), id("manual"));
    env.systemctl(&["start", "keeper.agent"]);
    let first = alive(&env, &keeper);
    let old_pid = first["pid"].as_u64().unwrap();

    env.restart_manager();
    assert!(!pid_alive(old_pid), "the old runner outlived its manager");
    // Wanted by default.target: started with the manager, secrets written anew, prompt not replayed.
    let back = alive(&env, &keeper);
    assert_ne!(back["pid"], first["pid"]);
    assert_eq!(back["durable"], true);
    assert!(environ(back["pid"].as_u64().unwrap()).contains(&format!("AGENT_RELAY_TOKEN={TOKEN}")));
    let log = env.home.join(format!(".agent-relay/logs/{}.log", back["sessionName"].as_str().unwrap()));
    assert!(wait_until(Duration::from_secs(5), || std::fs::read_to_string(&log)
        .is_ok_and(|l| l.contains("PROMPT-BYTES 0"))));
    // Without [Install] it is not started, yet show finds it and start starts it.
    let shown = env.json(&["show", &manual, "-o", "json"], None);
    assert_eq!(shown["state"], "dead", "{shown}");
    let started = env.json(&["start", &manual, "-o", "json"], None);
    assert_eq!(started["agent"]["state"], "alive", "{started}");

    // An empty file masks: after a reload there is no unit for it.
    std::fs::write(agents_dir(&env).join("keeper.agent"), "").unwrap();
    env.systemctl(&["daemon-reload"]);
    let (report, code) = dry_run(&env, Some("keeper"));
    assert_eq!((code, report["units"].as_array().unwrap().len()), (Some(0), 0), "{report}");
    let unit = back["systemdUnit"].as_str().unwrap();
    assert!(!generator_dir(&env).join(unit).exists());
}
