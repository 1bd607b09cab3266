//! Bad input that needs no manager: with none to reach, a command fails with one line that says
//! what to check. (Bad input to a running manager: system/bad_input.rs.)

use std::process::Command;

use crate::util::bin;

#[test]
fn no_manager_is_one_line_that_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .env_clear()
        .env("HOME", dir.path())
        .env("XDG_RUNTIME_DIR", dir.path())
        .args(["list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    for hint in ["systemctl --user", "XDG_RUNTIME_DIR", "loginctl enable-linger"] {
        assert!(err.contains(hint), "{err} lacks {hint}");
    }
}

#[test]
fn argument_errors_under_json_output_are_a_json_document() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| Command::new(bin()).env_clear().env("HOME", dir.path()).args(args).output().unwrap();
    let cases: [&[&str]; 6] = [
        &["list", "--bogus", "-o", "json"],
        &["-o", "json", "logs", "x", "-n", "0"],
        &["--output", "json", "nosuchverb"],
        &["--output=json", "show"],
        &["-ojson", "kill", "x", "--whom", "nobody"],
        &["spawn", "-o=json", "--spec"],
    ];
    for args in cases {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{args:?}: stdout is not JSON ({e}): {:?}", String::from_utf8_lossy(&out.stdout))
        });
        assert_eq!(v["error"]["kind"], "invalid", "{args:?}: {v}");
        assert_eq!(v["error"]["exitCode"], 2, "{args:?}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty() && !message.contains('\n'), "{args:?}: {message:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line on stderr: {err:?}");
    }
    // Text output keeps clap's own report; help and version are no errors.
    let out = run(&["list", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty() && String::from_utf8_lossy(&out.stderr).contains("Usage"));
    for args in [&["--help", "-o", "json"][..], &["-o", "json", "--version"], &["list", "--help", "-o", "json"]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("agent-relay-systemd") && !text.contains("\"error\""), "{args:?}: {text}");
    }
}
