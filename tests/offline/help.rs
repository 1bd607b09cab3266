//! `--help` of every visible command, the top level included, ends with an example an operator
//! can copy.

use agent_relay_systemd::cli::args::Cli;
use clap::CommandFactory;

/// Every visible command below `cmd` (recursively), with its path, rendered as `--help` shows it.
fn walk(cmd: &mut clap::Command, path: String, out: &mut Vec<(String, String)>) {
    out.push((path.clone(), cmd.render_long_help().to_string()));
    for sub in cmd.get_subcommands_mut() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let name = format!("{path} {}", sub.get_name());
        walk(sub, name, out);
    }
}

#[test]
fn every_visible_command_has_an_example_in_its_help() {
    let mut cmd = Cli::command();
    cmd.build();
    let mut helps = Vec::new();
    walk(&mut cmd, "agent-relay-systemd".into(), &mut helps);
    assert!(helps.len() > 10, "{:?}", helps.iter().map(|h| &h.0).collect::<Vec<_>>());
    let missing: Vec<&str> =
        helps.iter().filter(|(_, help)| !help.contains("Example")).map(|(path, _)| path.as_str()).collect();
    assert!(missing.is_empty(), "--help without an Example: {missing:?}");
    for (path, help) in &helps {
        let example = help.split("Example").nth(1).unwrap_or_default();
        assert!(example.contains("agent-relay-systemd"), "{path}: the example does not run the tool:\n{help}");
    }
}
