//! The unit-file generator against golden files in `tests/data/`: the same property list a
//! transient spawn sets, rendered as a unit file. Regenerate after an intended change with
//! `UPDATE_GOLDEN=1 cargo test --test offline` and review the diff.

use std::path::{Path, PathBuf};

use agent_relay_systemd::model::config::Config;
use agent_relay_systemd::model::plan::{plan, PlanInputs, SpawnPlan};
use agent_relay_systemd::model::{request, unit, unitfile};

fn config() -> Config {
    Config {
        hostname: "box".into(),
        relay_url: "http://127.0.0.1:4850".into(),
        token: Some("tok-GOLDEN-SECRET".into()),
        base_dir: "/home/u/projects".into(),
        env: [("FROM_CONFIG".to_string(), "config-secret".to_string())].into(),
        tmux_prefix: "ar".into(),
        api_port: 4860,
        runner_command: None,
        limits: None,
        exit_retention_days: 7,
    }
}

fn plan_for(json: &str, record_exit: bool) -> SpawnPlan {
    let cfg = config();
    let launcher = vec!["/usr/bin/claude-relay".to_string()];
    let inputs = PlanInputs {
        config: &cfg,
        home: Path::new("/home/u"),
        runtime_root: Path::new("/home/u/.local/state/agent-relay-systemd/durable"),
        caller_path: "/usr/bin:/bin",
        launcher: &launcher,
        cwd: Path::new("/home/u/projects/my app"),
        now_ms: 1_700_000_000_000,
        record_exit: record_exit.then_some((
            Path::new("/usr/bin/agent-relay-systemd"),
            Path::new("/home/u/.local/state/agent-relay-systemd/exits"),
        )),
        random_hex: "0123456789abcdef0123456789abcdef",
    };
    plan(&request::parse(json).unwrap(), &inputs).unwrap()
}

const EPHEMERAL: &str = r#"{"provider":"claude","cwd":"/x","lifecycle":"ephemeral","spawnRequestId":"req-0001"}"#;
const LIMITS: &str = r#"{"provider":"codex","cwd":"/x","label":"build","spawnRequestId":"req-0002","model":"o3","effort":"high","limits":{"memoryMax":"2G","memoryHigh":"1536M","tasksMax":256,"cpuQuota":150}}"#;
const ODD: &str = r#"{"provider":"claude","cwd":"/x","label":"Fix \"the\" 100% $HOME bug; now\\","spawnRequestId":"req-0003","prompt":"PROMPT-NOT-IN-UNIT","systemPromptAppend":"APPEND-NOT-IN-UNIT","agentProfile":{"env":{"PROFILE_SECRET":"p"}},"workspace":{"mode":"shared"},"tags":["a b","c%d"],"env":{"API_KEY":"request-secret"},"providerArgs":["--flag=a b","$HOME","${PATH}","%n","say \"hi\"","back\\slash",";","it's","ünï","tab\there",""]}"#;

fn golden(name: &str, text: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; create it with UPDATE_GOLDEN=1 cargo test --test offline", path.display())
    });
    assert!(
        want == text,
        "{} differs from the generated unit; if the change is intended, run UPDATE_GOLDEN=1 cargo test --test offline\n--- generated ---\n{text}",
        path.display()
    );
}

fn render(p: &SpawnPlan) -> String {
    unitfile::render(&unit::agent_properties(p)).unwrap()
}

#[test]
fn ephemeral_agent_unit_matches_its_golden_file() {
    golden("ephemeral.service", &render(&plan_for(EPHEMERAL, true)));
}

#[test]
fn persistent_agent_with_limits_matches_its_golden_file() {
    golden("persistent-limits.service", &render(&plan_for(LIMITS, true)));
}

#[test]
fn payloads_and_odd_characters_match_their_golden_file() {
    let text = render(&plan_for(ODD, true));
    golden("odd-characters.service", &text);
    for secret in ["tok-GOLDEN-SECRET", "config-secret", "request-secret", "PROFILE_SECRET", "NOT-IN-UNIT"] {
        assert!(!text.contains(secret), "{secret} is in the unit file");
    }
}

#[test]
fn every_property_a_spawn_can_set_has_a_unit_file_form() {
    // Every optional part switched on (limits, recorder, payloads) and both lifecycles.
    for (json, recorder) in [(LIMITS, true), (ODD, true), (EPHEMERAL, false)] {
        let props = unit::agent_properties(&plan_for(json, recorder));
        for (name, _) in &props {
            assert!(unitfile::knows(name), "{name} has no unit-file form");
        }
        assert!(unitfile::render(&props).is_ok());
    }
}
