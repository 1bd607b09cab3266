use std::path::PathBuf;

use super::*;

fn unit(file_state: Option<&str>, active: Option<&str>, description: Option<&str>) -> UnitFact {
    UnitFact {
        file_state: file_state.map(str::to_string),
        active_state: active.map(str::to_string),
        description: description.map(str::to_string),
    }
}

fn reachable(version: &str) -> ManagerFact {
    ManagerFact::Reachable {
        via: Via::SessionBus,
        info: ManagerInfo {
            version: version.into(),
            features: "+PAM default-hierarchy=unified".into(),
            control_group: "/user.slice/user-1000.slice/user@1000.service".into(),
        },
        timer: unit(Some("enabled"), Some("active"), Some("Run the Agent Relay reaper periodically")),
        slice: unit(Some("static"), Some("active"), Some("Agent Relay agents")),
    }
}

/// A host with everything in place.
fn healthy() -> Facts {
    Facts {
        user: "alice".into(),
        uid: 1000,
        config: Ok("/home/alice/.agent-relay/orchestrator.json".into()),
        runtime_dir: RuntimeDirFact {
            path: Some("/run/user/1000".into()),
            from_env: true,
            stat: Some(DirStat { owner: 1000, mode: 0o700 }),
        },
        bus: BusFact {
            env_address: Some("unix:path=/run/user/1000/bus".into()),
            runtime_socket: true,
            private_socket: true,
        },
        manager: reachable("252.38-1~deb12u1"),
        linger: true,
        cgroup: CgroupFact {
            layout: CgroupLayout::Unified,
            control_group: Some("/user.slice/user-1000.slice/user@1000.service".into()),
            controllers: Some(vec!["cpu".into(), "memory".into(), "pids".into()]),
            v1: vec![],
        },
        tmux: TmuxFact::Found { path: "/usr/bin/tmux".into(), version: Ok("tmux 3.3a".into()) },
        runner: Some(RunnerFact::Default { found: vec!["claude-relay".into()] }),
        pid1: Some("systemd".into()),
        declared: Some(DeclaredFact {
            dirs: vec!["/home/alice/.config/agent-relay/agents".into(), "/etc/agent-relay/agents".into()],
            valid: 2,
            invalid: vec![],
            generator: Some("/usr/lib/systemd/user-generators/agent-relay-generator".into()),
        }),
    }
}

fn finding(f: &Facts, check: &str) -> Finding {
    evaluate(f).into_iter().find(|x| x.check == check).unwrap_or_else(|| panic!("no finding {check}"))
}

fn assert_status(f: &Facts, check: &str, status: Status, fix_has: &str) {
    let x = finding(f, check);
    assert_eq!(x.status, status, "{x:?}");
    match status {
        Status::Ok => assert_eq!(x.fix, None, "{x:?}"),
        _ => assert!(x.fix.as_deref().unwrap_or("").contains(fix_has), "{x:?} lacks {fix_has:?}"),
    }
}

#[test]
fn a_healthy_host_is_all_ok_and_exits_0() {
    let f = healthy();
    let findings = evaluate(&f);
    assert!(findings.iter().all(|x| x.status == Status::Ok), "{findings:#?}");
    assert_eq!(exit_code(&f, &findings), 0);
    let checks: Vec<_> = findings.iter().map(|x| x.check).collect();
    for c in ["manager", "systemd-version", "runtime-dir", "linger", "cgroup", "reaper-timer", "slice", "tmux"] {
        assert!(checks.contains(&c), "{c} missing from {checks:?}");
    }
}

#[test]
fn an_unreachable_manager_fails_with_exit_5_and_every_other_check_still_reports() {
    let mut f = healthy();
    f.manager = ManagerFact::Unreachable { detail: "private socket: connection refused".into() };
    let findings = evaluate(&f);
    assert_eq!(findings.len(), evaluate(&healthy()).len());
    assert_status(&f, "manager", Status::Fail, "loginctl enable-linger alice");
    assert_eq!(exit_code(&f, &findings), 5);
    for check in ["systemd-version", "reaper-timer", "slice"] {
        assert_status(&f, check, Status::Skipped, "manager");
    }
    assert_status(&f, "session-bus", Status::Warn, "start the user manager");
    assert_status(&f, "tmux", Status::Ok, "");
}

#[test]
fn a_hung_manager_fails_with_exit_6() {
    let mut f = healthy();
    f.manager = ManagerFact::Hung { detail: "no answer within 1s".into() };
    assert_status(&f, "manager", Status::Fail, "systemctl restart user@1000.service");
    assert_eq!(exit_code(&f, &evaluate(&f)), 6);
}

#[test]
fn systemd_older_than_240_is_required_and_exits_8() {
    let mut f = healthy();
    f.manager = reachable("239");
    assert_status(&f, "systemd-version", Status::Fail, "upgrade");
    assert_eq!(exit_code(&f, &evaluate(&f)), EXIT_REQUIRED_MISSING);
    f.manager = reachable("245.4-4ubuntu3");
    assert_status(&f, "systemd-version", Status::Ok, "");
    assert!(finding(&f, "systemd-version").detail.contains("tested with 252"));
    assert!(finding(&f, "systemd-version").detail.contains("agent-relay-systemd exec"));
    f.manager = reachable("254");
    assert!(finding(&f, "systemd-version").detail.contains("ExecStartEx= with no-env-expand"));
    f.manager = reachable("weird");
    assert_status(&f, "systemd-version", Status::Warn, "systemctl --version");
}

#[test]
fn credentials_are_informational() {
    let mut f = healthy();
    let x = finding(&f, "credentials");
    assert!(x.detail.contains("LoadCredential= yes") && x.detail.contains("ImportCredential= no"), "{x:?}");
    f.manager = reachable("v255");
    assert!(finding(&f, "credentials").detail.contains("ImportCredential= yes"));
    f.manager = reachable("241");
    assert_status(&f, "credentials", Status::Ok, "");
    assert!(finding(&f, "credentials").detail.contains("LoadCredential= no"));
}

#[test]
fn runtime_dir_missing_foreign_or_open_fails() {
    let mut f = healthy();
    f.runtime_dir.path = None;
    assert_status(&f, "runtime-dir", Status::Fail, "export XDG_RUNTIME_DIR=/run/user/1000");
    assert_eq!(exit_code(&f, &evaluate(&f)), EXIT_REQUIRED_MISSING);
    let mut f = healthy();
    f.runtime_dir.stat = None;
    assert_status(&f, "runtime-dir", Status::Fail, "XDG_RUNTIME_DIR");
    f.runtime_dir.stat = Some(DirStat { owner: 0, mode: 0o700 });
    assert_status(&f, "runtime-dir", Status::Fail, "your own runtime directory");
    f.runtime_dir.stat = Some(DirStat { owner: 1000, mode: 0o755 });
    assert_status(&f, "runtime-dir", Status::Fail, "chmod 0700 /run/user/1000");
    f.runtime_dir.stat = Some(DirStat { owner: 1000, mode: 0o700 });
    f.runtime_dir.from_env = false;
    assert_status(&f, "runtime-dir", Status::Warn, "export XDG_RUNTIME_DIR");
}

#[test]
fn no_session_bus_warns_and_names_dbus_user_session() {
    let mut f = healthy();
    f.bus.env_address = None;
    f.bus.runtime_socket = false;
    assert_status(&f, "session-bus", Status::Warn, "apt-get install dbus-user-session");
    f.bus.runtime_socket = true;
    assert_status(&f, "session-bus", Status::Ok, "");
    let mut f = healthy();
    if let ManagerFact::Reachable { via, .. } = &mut f.manager {
        *via = Via::PrivateSocket;
    }
    assert_status(&f, "session-bus", Status::Ok, "");
    f.bus.private_socket = false;
    assert_status(&f, "private-socket", Status::Warn, "XDG_RUNTIME_DIR");
    assert_eq!(exit_code(&f, &evaluate(&f)), 0);
}

#[test]
fn no_linger_warns_with_enable_linger() {
    let mut f = healthy();
    f.linger = false;
    assert_status(&f, "linger", Status::Warn, "loginctl enable-linger alice");
    assert_eq!(exit_code(&f, &evaluate(&f)), 0);
}

#[test]
fn undelegated_controllers_warn_that_limits_are_not_enforced() {
    let mut f = healthy();
    f.cgroup.controllers = Some(vec!["pids".into()]);
    let x = finding(&f, "cgroup");
    assert_eq!(x.status, Status::Warn);
    assert!(x.detail.starts_with("memory, cpu not delegated") && x.detail.contains("not enforced"), "{x:?}");
    assert!(x.fix.unwrap().contains("Delegate=pids memory cpu"));
    // Hybrid host: the controllers live in v1 hierarchies, which a user manager never gets.
    f.cgroup = CgroupFact {
        layout: CgroupLayout::Hybrid,
        control_group: Some("/x".into()),
        controllers: Some(vec![]),
        v1: vec!["cpu".into(), "memory".into(), "pids".into()],
    };
    let x = finding(&f, "cgroup");
    assert!(x.detail.contains("on cgroup v1"), "{x:?}");
    assert!(x.fix.unwrap().contains("systemd.unified_cgroup_hierarchy=1"));
    f.cgroup.controllers = None;
    assert_status(&f, "cgroup", Status::Warn, "manager");
    assert_eq!(exit_code(&f, &evaluate(&f)), 0);
}

fn with_units(timer: UnitFact, slice: UnitFact) -> Facts {
    let mut f = healthy();
    if let ManagerFact::Reachable { timer: t, slice: s, .. } = &mut f.manager {
        *t = timer;
        *s = slice;
    }
    f
}

#[test]
fn reaper_timer_not_enabled_or_not_installed_warns_with_the_enable_command() {
    let slice = unit(Some("static"), None, None);
    let enable = "systemctl --user enable --now agent-relay-reap.timer";
    let f = with_units(unit(None, None, None), slice.clone());
    assert_status(&f, "reaper-timer", Status::Warn, enable);
    assert!(finding(&f, "reaper-timer").fix.unwrap().contains("daemon-reload"));
    let f = with_units(unit(Some("disabled"), None, None), slice.clone());
    assert_status(&f, "reaper-timer", Status::Warn, enable);
    let f = with_units(unit(Some("enabled"), Some("inactive"), None), slice.clone());
    assert_status(&f, "reaper-timer", Status::Warn, enable);
    let f = with_units(unit(Some("masked"), None, None), slice.clone());
    assert_status(&f, "reaper-timer", Status::Warn, "systemctl --user unmask agent-relay-reap.timer");
    let f = with_units(unit(Some("enabled"), Some("active"), None), slice);
    assert_status(&f, "reaper-timer", Status::Ok, "");
    assert_eq!(exit_code(&f, &evaluate(&f)), 0);
}

#[test]
fn slice_not_installed_or_stale_warns() {
    let timer = unit(Some("enabled"), Some("active"), None);
    let f = with_units(timer.clone(), unit(None, Some("active"), Some("Slice /agent_relay")));
    assert_status(&f, "slice", Status::Warn, "agent_relay.slice");
    assert!(finding(&f, "slice").detail.contains("no Description"));
    let f = with_units(timer.clone(), unit(Some("static"), Some("active"), Some("Slice /agent_relay")));
    assert_status(&f, "slice", Status::Warn, "systemctl --user daemon-reload");
    let f = with_units(timer.clone(), unit(Some("static"), None, None));
    assert_status(&f, "slice", Status::Ok, "");
    let f = with_units(timer, unit(Some("masked"), None, None));
    assert_status(&f, "slice", Status::Warn, "unmask");
}

#[test]
fn tmux_missing_or_old_warns_guests_unavailable() {
    let mut f = healthy();
    f.tmux = TmuxFact::Missing;
    assert_status(&f, "tmux", Status::Warn, "apt-get install tmux");
    assert!(finding(&f, "tmux").detail.contains("guest"));
    f.tmux = TmuxFact::Found { path: "/usr/bin/tmux".into(), version: Ok("tmux 3.0a".into()) };
    assert_status(&f, "tmux", Status::Warn, "upgrade tmux");
    f.tmux = TmuxFact::Found { path: "/usr/bin/tmux".into(), version: Err("no answer within 3s".into()) };
    assert_status(&f, "tmux", Status::Warn, "tmux");
    f.tmux = TmuxFact::Found { path: "/usr/bin/tmux".into(), version: Ok("tmux next-3.5".into()) };
    assert_status(&f, "tmux", Status::Ok, "");
    assert_eq!(exit_code(&f, &evaluate(&f)), 0);
}

#[test]
fn a_broken_config_or_runner_command_is_required() {
    let mut f = healthy();
    f.config = Err("config file /x is not valid: expected value".into());
    f.runner = None;
    assert_status(&f, "config", Status::Fail, "fix the file");
    assert_status(&f, "runner", Status::Skipped, "config");
    assert_eq!(exit_code(&f, &evaluate(&f)), EXIT_REQUIRED_MISSING);
    let mut f = healthy();
    f.runner = Some(RunnerFact::Configured { program: "/opt/nope".into(), resolved: None });
    assert_status(&f, "runner", Status::Fail, "runnerCommand");
    f.runner = Some(RunnerFact::Configured { program: "bun".into(), resolved: Some(PathBuf::from("/usr/bin/bun")) });
    assert_status(&f, "runner", Status::Ok, "");
    f.runner = Some(RunnerFact::Default { found: vec![] });
    assert_status(&f, "runner", Status::Warn, "<provider>-relay");
    assert_eq!(exit_code(&f, &evaluate(&f)), 0);
}

#[test]
fn text_report_has_one_line_per_finding_and_fixes_under_them() {
    let mut f = healthy();
    f.linger = false;
    f.runtime_dir.stat = None;
    let text = render_text(&evaluate(&f));
    assert!(text.lines().any(|l| l.starts_with("warn linger")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("FAIL runtime-dir")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("ok   manager")), "{text}");
    let fix = text.lines().position(|l| l.starts_with("warn linger")).unwrap() + 1;
    assert_eq!(text.lines().nth(fix).unwrap().trim(), "fix: loginctl enable-linger alice");
    assert!(text.ends_with("1 required check(s) failed, 1 warning(s)\n"), "{text}");
}

#[test]
fn json_report_shape() {
    let f = healthy();
    let v =
        serde_json::to_value(Report { schema_version: Default::default(), ok: true, findings: evaluate(&f) }).unwrap();
    assert_eq!(v["ok"], true);
    let first = &v["findings"][0];
    assert_eq!(first["check"], "manager");
    assert_eq!(first["status"], "ok");
    assert!(first["fix"].is_null() && first["detail"].is_string());
}

#[test]
fn parses_proc_cgroups_versions_and_tmux() {
    let proc_cgroups = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\ncpu\t1\t80\t1\n\
                        memory\t4\t90\t1\npids\t0\t100\t1\nhugetlb\t5\t1\t0\n";
    assert_eq!(v1_controllers(proc_cgroups), vec!["cpuset", "cpu", "memory"]);
    assert_eq!(major_version("252.38-1~deb12u1"), Some(252));
    assert_eq!(major_version("v255"), Some(255));
    assert_eq!(major_version("255~rc1"), Some(255));
    assert_eq!(major_version("x"), None);
    assert_eq!(tmux_version("tmux 3.3a"), Some((3, 3)));
    assert_eq!(tmux_version("tmux next-3.4"), Some((3, 4)));
    assert_eq!(tmux_version("tmux 2.9"), Some((2, 9)));
    assert_eq!(tmux_version("tmux master"), None);
}

#[test]
fn pid1_not_systemd_warns_and_suggests_the_sandbox() {
    assert_eq!(finding(&healthy(), "pid1").status, Status::Ok);
    for comm in [Some("bash"), Some("tini"), None] {
        let mut f = healthy();
        f.pid1 = comm.map(str::to_string);
        assert_status(&f, "pid1", Status::Warn, "agent-relay-systemd sandbox");
        let x = finding(&f, "pid1");
        if let Some(c) = comm {
            assert!(x.detail.contains(c) && x.detail.contains("not systemd"), "{}", x.detail);
        }
        // A warning alone: doctor still exits 0.
        assert_eq!(exit_code(&f, &evaluate(&f)), 0);
    }
}

#[test]
fn invalid_agent_files_are_listed_and_a_missing_generator_said() {
    let mut f = healthy();
    let d = f.declared.as_mut().unwrap();
    d.invalid = vec!["/home/alice/.config/agent-relay/agents/x.agent: line 3: unknown key Modle= in [Agent]".into()];
    assert_status(&f, "agent-files", Status::Warn, "generate --dry-run");
    let detail = finding(&f, "agent-files").detail;
    assert!(detail.contains("1 of 3 .agent files are invalid") && detail.contains("x.agent: line 3"), "{detail}");
    assert_eq!(exit_code(&f, &evaluate(&f)), 0, "a warning");
    let d = f.declared.as_mut().unwrap();
    d.invalid.clear();
    d.generator = None;
    assert_status(&f, "agent-files", Status::Warn, "/usr/lib/systemd/user-generators/");
    let d = f.declared.as_mut().unwrap();
    d.valid = 0;
    assert_status(&f, "agent-files", Status::Ok, "");
    f.declared = None;
    assert_status(&f, "agent-files", Status::Warn, "fix the config first");
}
