//! The private manager used by the tests and the `sandbox` verb: it runs, it is private, and it
//! leaves nothing behind.

mod common;

use std::process::Command;
use std::time::Duration;

use agent_relay_systemd::sandbox::PrivateManager;
use common::{bin, pid_alive, wait_until};

#[test]
fn a_private_manager_runs_units_and_leaves_nothing_behind() {
    let mgr = PrivateManager::start().expect("start a private systemd --user (needs root and systemd)");
    let run = |args: &[&str]| {
        let out = Command::new(args[0]).args(&args[1..]).envs(mgr.env()).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let state = run(&["systemctl", "--user", "is-system-running"]);
    assert!(["initializing", "starting", "running", "degraded"].contains(&state.as_str()), "manager state {state:?}");
    run(&["systemd-run", "--user", "--unit=sbx-probe", "-p", "Type=exec", "/bin/sleep", "60"]);
    let pid: u64 = run(&["systemctl", "--user", "show", "sbx-probe", "-p", "MainPID", "--value"]).parse().unwrap();
    assert!(pid > 0 && pid_alive(pid));
    let root = mgr.root().to_path_buf();
    let other = PrivateManager::start().unwrap();
    assert_ne!(other.runtime_dir(), mgr.runtime_dir(), "managers side by side are separate");
    other.stop();
    mgr.stop();
    assert!(wait_until(Duration::from_secs(5), || !pid_alive(pid)), "unit process survived the manager");
    assert!(!root.exists(), "temp dir {} left behind", root.display());
}

#[test]
fn the_sandbox_verb_passes_the_exit_code_and_the_environment() {
    let out = Command::new(bin())
        .args([
            "sandbox",
            "--",
            "sh",
            "-c",
            "test -S \"$XDG_RUNTIME_DIR/bus\" && systemctl --user is-system-running; exit 7",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(["initializing", "starting", "running", "degraded"].contains(&stdout.trim()), "{stdout}");
}
