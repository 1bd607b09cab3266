//! The private manager used by the tests and the `sandbox` verb: it runs, it is private, and it
//! leaves nothing behind.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{bin, pid_alive, run_cli, share, wait_until};
use agent_relay_systemd::io::sandbox::{run_sandboxed, PrivateManager};

const STATES: [&str; 4] = ["initializing", "starting", "running", "degraded"];

fn start() -> PrivateManager {
    PrivateManager::start().expect("start a private systemd --user (needs root, systemd and dbus-user-session)")
}

/// Runs a command against `mgr`: its stdout, trimmed. Panics, with its stderr, unless it succeeds.
fn run(mgr: &PrivateManager, args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).envs(mgr.env()).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim_end()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `systemctl --user is-system-running` of `mgr` (`--wait`ing up to 10 s if `wait`): the state it
/// prints. Its exit status is 0 for `running` alone, so the state is what is checked.
fn system_state(mgr: &PrivateManager, wait: bool) -> String {
    let args: &[&str] = if wait {
        &["timeout", "10", "systemctl", "--user", "is-system-running", "--wait"]
    } else {
        &["systemctl", "--user", "is-system-running"]
    };
    let out = Command::new(args[0]).args(&args[1..]).envs(mgr.env()).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `LoadState`, `ActiveState` and `MainPID` of `unit` in `mgr`.
fn unit_state(mgr: &PrivateManager, unit: &str) -> BTreeMap<String, String> {
    run(mgr, &["systemctl", "--user", "show", unit, "-p", "LoadState", "-p", "ActiveState", "-p", "MainPID"])
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

/// The manager's cgroup directories, as the kernel reports them in /proc/PID/cgroup.
fn cgroups_of(pid: u32) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v2 = if std::path::Path::new("/sys/fs/cgroup/unified").is_dir() { "unified" } else { "" };
    let mut dirs: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            let top = path.trim_start_matches('/').split('/').next()?;
            let hierarchy = match controllers {
                "" => v2,
                "name=systemd" => "systemd",
                _ => return None,
            };
            top.starts_with("agent-relay-sandbox-").then(|| PathBuf::from("/sys/fs/cgroup").join(hierarchy).join(top))
        })
        .collect();
    dirs.dedup();
    dirs
}

#[test]
fn a_private_manager_runs_units_and_leaves_nothing_behind() {
    let _share = share();
    let mgr = start();
    let state = system_state(&mgr, true);
    assert!(["running", "degraded"].contains(&state.as_str()), "manager state {state:?}");
    run(&mgr, &["systemd-run", "--user", "--unit=sbx-probe", "-p", "Type=exec", "/bin/sleep", "60"]);
    let pid: u64 =
        run(&mgr, &["systemctl", "--user", "show", "sbx-probe", "-p", "MainPID", "--value"]).parse().unwrap();
    assert!(pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists(), "MainPID {pid}");
    let cgroups = cgroups_of(mgr.pid());
    assert!(!cgroups.is_empty() && cgroups.iter().all(|c| c.is_dir()), "manager not in its own cgroup: {cgroups:?}");
    let root = mgr.root().to_path_buf();
    mgr.stop();
    assert!(wait_until(Duration::from_secs(5), || !pid_alive(pid)), "unit process survived the manager");
    assert!(!root.exists(), "temp dir {} left behind", root.display());
    for c in cgroups {
        assert!(!c.exists(), "cgroup {} left behind", c.display());
    }
}

#[test]
fn two_managers_run_side_by_side() {
    let _share = share();
    let (a, b) = (start(), start());
    assert_ne!(a.runtime_dir(), b.runtime_dir());
    assert_ne!(cgroups_of(a.pid()), cgroups_of(b.pid()));
    for m in [&a, &b] {
        assert!(STATES.contains(&system_state(m, false).as_str()));
    }
    // Separate: a unit started in one is not seen by the other, and its process is in the
    // cgroup of the one that started it.
    run(&a, &["systemd-run", "--user", "--unit=sbx-only-in-a", "-p", "Type=exec", "/bin/sleep", "60"]);
    let in_a = unit_state(&a, "sbx-only-in-a.service");
    assert_eq!((in_a["LoadState"].as_str(), in_a["ActiveState"].as_str()), ("loaded", "active"), "{in_a:?}");
    let in_b = unit_state(&b, "sbx-only-in-a.service");
    let none = [("ActiveState", "inactive"), ("LoadState", "not-found"), ("MainPID", "0")];
    assert_eq!(in_b, none.map(|(k, v)| (k.to_string(), v.to_string())).into(), "b sees a's unit");
    let listed =
        |m: &PrivateManager| run(m, &["systemctl", "--user", "list-units", "--all", "--plain", "--no-legend", "sbx-*"]);
    assert!(listed(&a).contains("sbx-only-in-a.service"), "{}", listed(&a));
    assert_eq!(listed(&b), "", "b lists a's unit");
    let pid: u32 = in_a["MainPID"].parse().unwrap();
    assert!(pid > 0 && pid_alive(pid.into()), "{in_a:?}");
    let pid_cgroups = cgroups_of(pid);
    assert_eq!(pid_cgroups, cgroups_of(a.pid()), "the unit's process is not in a's cgroup");
    assert!(cgroups_of(b.pid()).iter().all(|c| !pid_cgroups.contains(c)));
    let root = a.root().to_path_buf();
    a.stop();
    assert!(!root.exists());
    assert!(STATES.contains(&system_state(&b, false).as_str()), "b outlives a");
}

#[test]
fn run_sandboxed_returns_the_exit_code() {
    let _share = share();
    let cmd: Vec<String> = ["sh", "-c", "exit 7"].iter().map(|s| s.to_string()).collect();
    assert_eq!(run_sandboxed(&cmd).unwrap(), 7);
    assert!(run_sandboxed(&[]).is_err());
}

#[test]
fn the_sandbox_verb_passes_the_exit_code_and_the_environment() {
    let _share = share();
    let out = run_cli(&[
        "sandbox",
        "--",
        "sh",
        "-c",
        "test -S \"$XDG_RUNTIME_DIR/bus\" && systemctl --user is-system-running; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(STATES.contains(&stdout.trim()), "{stdout}");
}

#[test]
fn sigterm_to_the_sandbox_verb_still_tears_down() {
    let _share = share();
    let mut child = Command::new(bin())
        .args(["sandbox", "--", "sh", "-c", "echo \"$XDG_RUNTIME_DIR\"; exec sleep 60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let runtime = PathBuf::from(line.trim());
    assert!(runtime.join("bus").exists(), "{runtime:?}");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15), "the command got the SIGTERM");
    assert!(!runtime.exists(), "{} left behind", runtime.display());
}

#[test]
fn a_manager_not_ready_in_time_is_an_error() {
    let _share = share();
    let err = PrivateManager::start_with_timeout(Duration::ZERO).err().expect("not ready in no time");
    assert!(err.to_string().contains("not ready within"), "{err}");
}
