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

/// Completes `words` (the last one being completed) as bash does on <TAB>: the script sourced, the
/// function `complete -p` registered called with COMP_WORDS/COMP_CWORD/COMP_LINE/COMP_POINT set;
/// answers COMPREPLY, one word a line.
fn complete_in_bash(words: &[&str]) -> Vec<String> {
    let out = run_cli(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("agent-relay-systemd");
    std::fs::write(&script, &out.stdout).unwrap();
    let driver = r#"
set -u
source "$1"; shift
COMP_WORDS=("$@")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="${COMP_WORDS[*]}"
COMP_POINT=${#COMP_LINE}
spec=$(complete -p agent-relay-systemd) || exit 90
fn=$(sed -E 's/.* -F ([^ ]+) .*/\1/' <<<"$spec")
prev=""
(( COMP_CWORD > 0 )) && prev="${COMP_WORDS[COMP_CWORD-1]}"
"$fn" agent-relay-systemd "${COMP_WORDS[COMP_CWORD]}" "$prev"
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let run = Command::new("bash").arg("-c").arg(driver).arg("bash").arg(&script).args(words).output().expect("bash");
    assert!(run.status.success(), "bash: {}", String::from_utf8_lossy(&run.stderr));
    String::from_utf8(run.stdout).unwrap().lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

#[test]
fn bash_completes_past_the_first_word() {
    let offered = complete_in_bash(&["agent-relay-systemd", "logs", "--f"]);
    assert_eq!(offered, ["--follow"], "logs --f<TAB>");
    let offered = complete_in_bash(&["agent-relay-systemd", "stop", "x", "--timeout-s"]);
    assert_eq!(offered, ["--timeout-stop"], "stop x --timeout-s<TAB>");
    let offered = complete_in_bash(&["agent-relay-systemd", "guest", "cr"]);
    assert_eq!(offered, ["create"], "guest cr<TAB>");
    let offered = complete_in_bash(&["agent-relay-systemd", "-o", ""]);
    assert_eq!(offered, ["text", "json", "wide"], "-o <TAB>");
    let offered = complete_in_bash(&["agent-relay-systemd", "dia"]);
    assert_eq!(offered, ["diagnose"], "dia<TAB>");
}

#[test]
fn manpage_names_no_unshipped_page_and_has_environment_files_and_exit_status() {
    let out = run_cli(&["manpage"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let page = String::from_utf8(out.stdout).expect("UTF-8 roff");
    // Only agent-relay-systemd(1) is shipped: no `agent-relay-systemd-spawn(1)` references.
    assert!(!page.contains("systemd\\-spawn(1)") && !page.contains("(1)\n"), "{page}");
    for section in [".SH ENVIRONMENT", ".SH FILES", ".SH \"EXIT STATUS\"", ".SH COMMANDS", ".SH EXAMPLES"] {
        assert!(page.contains(section), "man page lacks {section}");
    }
    assert!(page.contains("AGENT_RELAY_SYSTEMD_TIMEOUT") && page.contains("orchestrator.json"), "{page}");
    assert_eq!(page.matches(".ie \\n(.g").count(), 1, "roff's preamble more than once");
    for code in 0..=8 {
        assert!(page.contains(&format!(".B {code}\n")), "EXIT STATUS lacks {code}");
    }
    // man(1) reads it without a warning.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent-relay-systemd.1");
    std::fs::write(&file, &page).unwrap();
    let man = Command::new("man").arg("--warnings").arg("-l").arg(&file).env("MANWIDTH", "80").output();
    if let Ok(man) = man {
        assert!(man.status.success(), "man: {}", String::from_utf8_lossy(&man.stderr));
        let text = String::from_utf8_lossy(&man.stdout);
        assert!(text.contains("EXIT STATUS"), "{text}");
    }
}
