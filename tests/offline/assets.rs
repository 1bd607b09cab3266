//! The generated assets the packages ship: shell completions and the man page, printed by the
//! hidden `completions` and `manpage` verbs from the command line definition.

use std::process::Command;

use agent_relay_systemd::cli::args::Cli;
use clap::CommandFactory;

use crate::util::run_cli;

fn visible_verbs() -> Vec<String> {
    let cmd = Cli::command();
    let verbs: Vec<String> =
        cmd.get_subcommands().filter(|c| !c.is_hide_set()).map(|c| c.get_name().to_string()).collect();
    assert!(verbs.iter().any(|v| v == "spawn"), "{verbs:?}");
    verbs
}

#[test]
fn completions_name_every_visible_verb_and_no_hidden_one() {
    let verbs = visible_verbs();
    for shell in ["bash", "zsh", "fish"] {
        let out = run_cli(&["completions", shell]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{shell}: {stderr}");
        assert!(stderr.is_empty(), "{shell}: {stderr}");
        let script = String::from_utf8(out.stdout).expect("UTF-8 script");
        assert!(script.contains("agent-relay-systemd"), "{shell}: {script}");
        for verb in &verbs {
            assert!(script.contains(verb.as_str()), "{shell} completions lack `{verb}`");
        }
        for hidden in ["record-exit", "manpage"] {
            assert!(!script.contains(hidden), "{shell} completions offer the hidden `{hidden}`");
        }
    }
}

#[test]
fn bash_completion_script_parses() {
    let out = run_cli(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent-relay-systemd");
    std::fs::write(&path, &out.stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().expect("bash");
    assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));
}

#[test]
fn completions_for_an_unknown_shell_exit_2_and_name_the_choices() {
    let out = run_cli(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.starts_with("error: invalid value 'tcsh'"), "{stderr}");
    assert!(stderr.contains("bash, zsh, fish"), "{stderr}");
}

#[test]
fn manpage_is_roff_naming_every_visible_verb() {
    let out = run_cli(&["manpage"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let page = String::from_utf8(out.stdout).expect("UTF-8 roff");
    assert!(page.starts_with(".ie") || page.contains(".TH agent-relay-systemd 1"), "{page}");
    for verb in visible_verbs() {
        assert!(page.contains(&verb), "man page lacks `{verb}`");
    }
}
