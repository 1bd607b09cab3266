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
