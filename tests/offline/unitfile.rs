//! The unit-file generator against golden files in `tests/data/`: the same property list a
//! transient spawn sets, rendered as a unit file. Regenerate after an intended change with
//! `UPDATE_GOLDEN=1 cargo test --test offline` and review the diff.

use std::path::PathBuf;

use agent_relay_systemd::model::plan::SpawnPlan;
use agent_relay_systemd::model::{request, unit, unitfile};

use crate::util::{plan_example, EXAMPLE_TOKEN};

/// The example config's plan of the request `json`, on the example host.
fn plan_for(json: &str, record_exit: bool) -> SpawnPlan {
    plan_example(&request::parse(json).unwrap(), record_exit).unwrap()
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
    for secret in [EXAMPLE_TOKEN, "config-secret", "request-secret", "PROFILE_SECRET", "NOT-IN-UNIT"] {
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
