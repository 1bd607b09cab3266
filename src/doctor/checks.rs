//! One pure function per `doctor` check: facts in, a finding (verdict, detail, fix) out.

use super::*;
use crate::model::exec::EXACT_TRANSIENT_EXEC;

/// Oldest systemd the agent units work on: `Type=exec`, `LogExtraFields=` and
/// `StandardOutput=append:` (our `StandardOutputFileToAppend`) all arrived in systemd 240.
pub const MIN_SYSTEMD: u32 = 240;
/// The version the integration tests run against.
pub const TESTED_SYSTEMD: u32 = 252;
/// `LoadCredential=` arrived in 247, `ImportCredential=` in 254.
const LOAD_CREDENTIAL: u32 = 247;
const IMPORT_CREDENTIAL: u32 = 254;
/// Guest servers run `tmux -D` (foreground server), new in tmux 3.2.
const MIN_TMUX: (u32, u32) = (3, 2);
/// What agent limits need delegated to the user manager.
const WANTED_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

const ENABLE_TIMER: &str = "systemctl --user enable --now agent-relay-reap.timer";
/// How to get units of `units/` installed, the package being the usual way.
fn install(files: &str) -> String {
    format!(
        "install the package (it puts the units in /usr/lib/systemd/user/), or copy {files} from the \
         source's units/ to ~/.config/systemd/user/, then: systemctl --user daemon-reload"
    )
}

fn ok(check: &'static str, detail: String) -> Finding {
    Finding { check, status: Status::Ok, detail, fix: None }
}

fn warn(check: &'static str, detail: String, fix: impl Into<String>) -> Finding {
    Finding { check, status: Status::Warn, detail, fix: Some(fix.into()) }
}

fn fail(check: &'static str, detail: String, fix: impl Into<String>) -> Finding {
    Finding { check, status: Status::Fail, detail, fix: Some(fix.into()) }
}

/// A check that could not run because what it needs failed first.
fn skipped(check: &'static str, detail: String, fix: impl Into<String>) -> Finding {
    Finding { check, status: Status::Skipped, detail, fix: Some(fix.into()) }
}

/// For checks that need answers from a manager that gave none.
fn unknown(check: &'static str) -> Finding {
    skipped(check, "not checked: the user manager did not answer".into(), "fix the manager first (see `manager`)")
}

pub fn manager(f: &Facts) -> Finding {
    match &f.manager {
        ManagerFact::Reachable { via, info, .. } => {
            let how = match via {
                Via::SessionBus => "the session bus",
                Via::PrivateSocket => "its private socket",
            };
            ok("manager", format!("systemd {} reached over {how}", info.version))
        }
        ManagerFact::Unreachable { detail } => fail(
            "manager",
            format!("no systemd user manager reachable: {detail}"),
            format!(
                "start one: log in (a login session starts user@{uid}.service) or run `loginctl enable-linger {user}`; \
                 make sure XDG_RUNTIME_DIR=/run/user/{uid}; check with `systemctl --user status`",
                uid = f.uid,
                user = f.user
            ),
        ),
        ManagerFact::Hung { detail } => fail(
            "manager",
            format!("the user manager did not answer: {detail}"),
            format!(
                "check `systemctl --user status`; if it stays hung, restart it as root with \
                 `systemctl restart user@{}.service` (this stops its units)",
                f.uid
            ),
        ),
    }
}

pub fn systemd_version(m: &ManagerFact) -> Finding {
    let ManagerFact::Reachable { info, .. } = m else { return unknown("systemd-version") };
    let features = if info.features.is_empty() { String::new() } else { format!(" ({})", info.features) };
    match major_version(&info.version) {
        None => warn(
            "systemd-version",
            format!("cannot read the version {:?}{features}", info.version),
            format!("make sure `systemctl --version` says {MIN_SYSTEMD} or newer"),
        ),
        Some(v) if v < MIN_SYSTEMD => fail(
            "systemd-version",
            format!("systemd {v} is older than {MIN_SYSTEMD}: agent units need Type=exec, LogExtraFields= and StandardOutput=append:"),
            format!("upgrade to a distribution with systemd {MIN_SYSTEMD} or newer (Debian 10, Ubuntu 20.04, RHEL 9 or later)"),
        ),
        Some(v) => {
            let tested = if v < TESTED_SYSTEMD { format!("; tested with {TESTED_SYSTEMD}") } else { String::new() };
            // How agents' command lines reach the runner exactly (src/model/exec.rs).
            let exec = if v >= EXACT_TRANSIENT_EXEC {
                "command lines sent as ExecStartEx= with no-env-expand".to_string()
            } else {
                format!(
                    "systemd < {EXACT_TRANSIENT_EXEC} cannot keep `$` or `;` of a transient command line across a \
                     reload: such command lines start through `agent-relay-systemd exec`"
                )
            };
            ok("systemd-version", format!("systemd {v} (>= {MIN_SYSTEMD}{tested}){features}; {exec}"))
        }
    }
}

/// Informational: the token goes in a 0600 `EnvironmentFile=` whatever the answer.
pub fn credentials(m: &ManagerFact) -> Finding {
    let ManagerFact::Reachable { info, .. } = m else { return unknown("credentials") };
    let Some(v) = major_version(&info.version) else {
        return ok("credentials", "unknown systemd version; agents do not depend on credentials".into());
    };
    let yes = |min| if v >= min { "yes" } else { "no" };
    ok(
        "credentials",
        format!(
            "LoadCredential= {} (needs {LOAD_CREDENTIAL}), ImportCredential= {} (needs {IMPORT_CREDENTIAL}); \
             agents do not depend on them (secrets go in a 0600 EnvironmentFile=)",
            yes(LOAD_CREDENTIAL),
            yes(IMPORT_CREDENTIAL)
        ),
    )
}

pub fn runtime_dir(r: &RuntimeDirFact, uid: u32) -> Finding {
    let export = format!("export XDG_RUNTIME_DIR=/run/user/{uid} (a login session sets it)");
    let Some(path) = &r.path else {
        return fail("runtime-dir", format!("XDG_RUNTIME_DIR is not set and /run/user/{uid} does not exist"), export);
    };
    let p = path.display();
    let Some(stat) = r.stat else {
        return fail("runtime-dir", format!("{p} (XDG_RUNTIME_DIR) is not an existing directory"), export);
    };
    if stat.owner != uid {
        return fail(
            "runtime-dir",
            format!("{p} is owned by uid {}, not by you (uid {uid})", stat.owner),
            format!("use your own runtime directory: {export}"),
        );
    }
    if stat.mode & 0o077 != 0 {
        return fail(
            "runtime-dir",
            format!("{p} has mode {:04o}: others can reach the agents' secret files in it", stat.mode),
            format!("chmod 0700 {p}"),
        );
    }
    if !r.from_env {
        return warn("runtime-dir", format!("XDG_RUNTIME_DIR is not set; using {p}"), export);
    }
    ok("runtime-dir", format!("{p}, yours, mode {:04o}", stat.mode))
}

pub fn session_bus(b: &BusFact, m: &ManagerFact) -> Finding {
    const INSTALL: &str =
        "apt-get install dbus-user-session (dnf install dbus-daemon; pacman -S dbus), then log in again";
    let address = b.env_address.clone().or_else(|| b.runtime_socket.then(|| "$XDG_RUNTIME_DIR/bus".to_string()));
    match (address, m) {
        (Some(a), ManagerFact::Unreachable { .. }) => warn(
            "session-bus",
            format!("session bus {a} is set, but no manager answered on it"),
            "start the user manager (see `manager`); check DBUS_SESSION_BUS_ADDRESS",
        ),
        (Some(a), ManagerFact::Reachable { via: Via::PrivateSocket, .. }) => {
            ok("session-bus", format!("{a} (the fallback: systemd's private socket answered first)"))
        }
        (Some(a), _) => ok("session-bus", a),
        (None, _) => warn(
            "session-bus",
            "no session bus (DBUS_SESSION_BUS_ADDRESS unset, no $XDG_RUNTIME_DIR/bus): only systemd's private socket reaches the manager, with no fallback".into(),
            INSTALL,
        ),
    }
}

pub fn private_socket(b: &BusFact) -> Finding {
    if b.private_socket {
        ok("private-socket", "$XDG_RUNTIME_DIR/systemd/private exists (tried first, as `systemctl --user` does)".into())
    } else {
        warn(
            "private-socket",
            "$XDG_RUNTIME_DIR/systemd/private does not exist: no user manager listens in this runtime directory".into(),
            "start the user manager (see `manager`), and check XDG_RUNTIME_DIR",
        )
    }
}

/// Without systemd as PID 1 (a container, a CI job) nothing starts user managers for logins nor
/// for linger: a private one, as `sandbox` starts, is the way to run agents there.
pub fn pid1(comm: Option<&str>) -> Finding {
    const FIX: &str =
        "run the agents under a private user manager: `agent-relay-systemd sandbox -- CMD…` (CMD then reaches it)";
    match comm {
        Some("systemd") => ok("pid1", "PID 1 is systemd".into()),
        Some(other) => warn(
            "pid1",
            format!(
                "PID 1 is {other:?}, not systemd (a container?): no system manager starts user managers for logins or linger"
            ),
            FIX,
        ),
        None => warn("pid1", "cannot read /proc/1/comm: whether PID 1 is systemd is unknown".into(), FIX),
    }
}

pub fn linger(linger: bool, user: &str) -> Finding {
    if linger {
        ok("linger", format!("enabled for {user}: agents outlive logout and the manager starts at boot"))
    } else {
        warn(
            "linger",
            format!(
                "not enabled for {user}: the user manager and every agent stop at logout, and nothing starts at boot"
            ),
            format!("loginctl enable-linger {user}"),
        )
    }
}

pub fn cgroup(c: &CgroupFact) -> Finding {
    const DELEGATE: &str =
        "mkdir -p /etc/systemd/system/user@.service.d && printf '[Service]\\nDelegate=pids memory cpu\\n' \
        > /etc/systemd/system/user@.service.d/delegate.conf && systemctl daemon-reload; then log in again";
    let Some(controllers) = &c.controllers else {
        return warn(
            "cgroup",
            "cannot tell which controllers are delegated: the manager's cgroup is unknown".into(),
            "fix the manager first (see `manager`)",
        );
    };
    let missing: Vec<&str> =
        WANTED_CONTROLLERS.iter().copied().filter(|w| !controllers.iter().any(|c| c == w)).collect();
    let cg = c.control_group.as_deref().unwrap_or("?");
    if missing.is_empty() {
        return ok("cgroup", format!("memory, pids, cpu delegated to the manager ({cg})"));
    }
    let in_v1: Vec<&str> = missing.iter().copied().filter(|m| c.v1.iter().any(|v| v == m)).collect();
    let why = if in_v1.is_empty() { String::new() } else { format!(" ({} on cgroup v1)", in_v1.join(", ")) };
    let detail = format!(
        "{} not delegated to the manager ({cg}){why}: agent limits (MemoryMax=, TasksMax=, CPUQuota=) are set but not enforced",
        missing.join(", ")
    );
    if !in_v1.is_empty() || c.layout != CgroupLayout::Unified {
        let fix = format!(
            "boot with cgroup v2 only (kernel command line systemd.unified_cgroup_hierarchy=1), then: {DELEGATE}"
        );
        return warn("cgroup", detail, fix);
    }
    warn("cgroup", detail, DELEGATE)
}

pub fn reaper_timer(m: &ManagerFact) -> Finding {
    let ManagerFact::Reachable { timer, .. } = m else { return unknown("reaper-timer") };
    let active = timer.active_state.as_deref() == Some("active");
    match timer.file_state.as_deref() {
        None => warn(
            "reaper-timer",
            format!("{REAP_TIMER} is not installed: leftovers of gone agents are never reaped"),
            format!("{}; then {ENABLE_TIMER}", install("agent-relay-reap.timer and agent-relay-reap.service")),
        ),
        Some("enabled" | "enabled-runtime" | "linked" | "linked-runtime") if active => {
            ok("reaper-timer", format!("{REAP_TIMER} enabled and active"))
        }
        Some(s @ ("enabled" | "enabled-runtime" | "linked" | "linked-runtime")) => warn(
            "reaper-timer",
            format!("{REAP_TIMER} is {s} but not running (it starts at the next login)"),
            ENABLE_TIMER,
        ),
        Some(s @ ("masked" | "masked-runtime")) => warn(
            "reaper-timer",
            format!("{REAP_TIMER} is {s}: leftovers of gone agents are never reaped"),
            format!("systemctl --user unmask {REAP_TIMER} && {ENABLE_TIMER}"),
        ),
        Some(s) => {
            let running = if active { " (running until the manager restarts)" } else { "" };
            warn(
                "reaper-timer",
                format!("{REAP_TIMER} is installed but {s}{running}: leftovers of gone agents are not reaped"),
                ENABLE_TIMER,
            )
        }
    }
}

pub fn slice(m: &ManagerFact) -> Finding {
    let ManagerFact::Reachable { slice, .. } = m else { return unknown("slice") };
    match slice.file_state.as_deref() {
        None => warn(
            "slice",
            format!(
                "{SLICE} is not installed: `systemctl --user status {SLICE}` shows no Description, and fleet-wide \
                 limits have no unit to go in"
            ),
            install(crate::model::naming::AGENT_SLICE),
        ),
        Some(s @ ("masked" | "masked-runtime")) => warn(
            "slice",
            format!("{SLICE} is {s}: agents cannot start in it"),
            format!("systemctl --user unmask {SLICE}"),
        ),
        Some(_) => match slice.description.as_deref() {
            // Loaded before its file was installed: the manager still has the implicit slice.
            Some(d) if d.starts_with("Slice /") => warn(
                "slice",
                format!("{SLICE} is installed but the manager still shows {d:?}"),
                "systemctl --user daemon-reload",
            ),
            Some(d) => ok("slice", format!("{SLICE} installed: {d:?}")),
            None => ok("slice", format!("{SLICE} installed (not loaded: no agent runs)")),
        },
    }
}

pub fn tmux(t: &TmuxFact) -> Finding {
    const INSTALL: &str = "apt-get install tmux (dnf install tmux; pacman -S tmux)";
    match t {
        TmuxFact::Missing => {
            warn("tmux", "tmux is not on PATH: guest terminals are unavailable (agents run without it)".into(), INSTALL)
        }
        TmuxFact::Found { path, version: Err(e) } => {
            warn("tmux", format!("{} -V failed: {e}; guest terminals may not work", path.display()), INSTALL)
        }
        TmuxFact::Found { path, version: Ok(v) } => match tmux_version(v) {
            Some(found) if found < MIN_TMUX => warn(
                "tmux",
                format!("{v} at {} is older than 3.2: guest terminals need `tmux -D`", path.display()),
                format!("upgrade tmux: {INSTALL}"),
            ),
            _ => ok("tmux", format!("{v} at {}", path.display())),
        },
    }
}

pub fn config(c: &Result<String, String>) -> Finding {
    match c {
        Ok(source) => ok("config", source.clone()),
        Err(e) => {
            fail("config", e.clone(), "fix the file (or the variable) it names; every verb refuses to run until then")
        }
    }
}

pub fn runner(r: Option<&RunnerFact>) -> Finding {
    const SET: &str =
        "set runnerCommand in the config (or AGENT_RELAY_RUNNER_COMMAND), or put <provider>-relay on PATH";
    match r {
        None => skipped(
            "runner",
            "not checked: the config could not be loaded".into(),
            "fix the config first (see `config`)",
        ),
        Some(RunnerFact::Configured { program, resolved: Some(p) }) => {
            ok("runner", format!("runnerCommand {program} is {}", p.display()))
        }
        Some(RunnerFact::Configured { program, resolved: None }) => fail(
            "runner",
            format!("runnerCommand {program:?} is not an executable file (nor on PATH): every spawn fails"),
            SET,
        ),
        Some(RunnerFact::Default { found }) if found.is_empty() => warn(
            "runner",
            "no runnerCommand and no <provider>-relay on PATH: spawns fail until a runner is installed".into(),
            SET,
        ),
        Some(RunnerFact::Default { found }) => ok("runner", format!("on PATH: {}", found.join(", "))),
    }
}

/// Declared agents: every `.agent` file valid, and a generator installed to read them.
pub fn agent_files(d: Option<&DeclaredFact>) -> Finding {
    const CHECK: &str = "agent-files";
    let Some(d) = d else {
        return warn(
            CHECK,
            "not checked: the config could not be loaded".into(),
            "fix the config first (see `config`)",
        );
    };
    let dirs = d.dirs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and ");
    let total = d.valid + d.invalid.len();
    if total == 0 {
        return ok(CHECK, format!("no .agent files in {dirs}"));
    }
    if !d.invalid.is_empty() {
        return warn(
            CHECK,
            format!("{} of {total} .agent files are invalid and not run: {}", d.invalid.len(), d.invalid.join("; ")),
            "fix each file as its message says, then `systemctl --user daemon-reload`; \
             `agent-relay-systemd generate --dry-run` shows what the generator makes of them",
        );
    }
    match &d.generator {
        Some(g) => ok(CHECK, format!("{total} .agent file(s), all valid; generator {}", g.display())),
        None => warn(
            CHECK,
            format!("{total} .agent file(s), but no agent-relay-generator where user managers look for generators: they are not run"),
            "install the package (it puts the generator in /usr/lib/systemd/user-generators/), then `systemctl --user daemon-reload`",
        ),
    }
}
