//! The `agent-relay-systemd` binary: parses the command line, resolves the environment, runs
//! one library operation, prints its answer, and maps errors to the documented exit codes.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use agent_relay_systemd::cli::args::{Cli, Command, CompletionShell, GuestCommand, Output, TerminalCommand};
use agent_relay_systemd::cli::render as output;
use agent_relay_systemd::io::config_file as config;
use agent_relay_systemd::io::host::HostEnv;
use agent_relay_systemd::io::{log_file, sandbox};
use agent_relay_systemd::model::config::{Config, ConfigInputs};
use agent_relay_systemd::model::{logtext, request};
use agent_relay_systemd::ops::now_ms;
use agent_relay_systemd::ops::{diagnose, durable, record_exit as recorder, watch};
use agent_relay_systemd::{doctor, Error, Supervisor};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("AGENT_RELAY_LOG"))
        .init();
    if let Command::Manpage = &cli.command {
        let cmd = <Cli as clap::CommandFactory>::command();
        let mut out = std::io::stdout().lock();
        return match clap_mangen::Man::new(cmd).render(&mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(Output::Text, &format!("writing the man page: {e}"), "io", 1),
        };
    }
    if let Command::Completions { shell } = &cli.command {
        return print_completions(*shell);
    }
    if let Command::Sandbox { cmd } = &cli.command {
        return match sandbox::run_sandboxed(cmd) {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => fail(cli.global.output, &format!("sandbox: {e}"), "sandbox", 1),
        };
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(cli.global.output, &format!("cannot start the async runtime: {e}"), "internal", 1),
    };
    if let Command::RecordExit { dir, unit, session, agent_id, provider, log_file, spawn_request_id } = &cli.command {
        let args = recorder::RecordArgs {
            dir: dir.clone(),
            unit: unit.clone(),
            session: session.clone(),
            agent_id: agent_id.clone(),
            provider: provider.clone(),
            log_file: log_file.clone(),
            spawn_request_id: spawn_request_id.clone(),
        };
        return match rt.block_on(recorder::record_exit(&args, &HostEnv::from_process())) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(Output::Text, &format!("recording the exit of {unit}: {e}"), "io", 1),
        };
    }
    if let Command::Watch { .. } = &cli.command {
        let result = rt.block_on(watch(&cli));
        // Do not wait for the watcher's tasks: it is stopping because we were asked to.
        rt.shutdown_background();
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let (kind, code) = classify(&e);
                fail(cli.global.output, &e.to_string(), kind, code)
            }
        };
    }
    if let Command::Logs { follow: true, .. } = &cli.command {
        return match rt.block_on(follow_logs(&cli)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let (kind, code) = classify(&e);
                fail(cli.global.output, &e.to_string(), kind, code)
            }
        };
    }
    if let Command::Doctor = &cli.command {
        return rt.block_on(doctor(&cli));
    }
    match rt.block_on(run(&cli)) {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error.
            let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let (kind, code) = classify(&e);
            fail(cli.global.output, &e.to_string(), kind, code)
        }
    }
}

/// Maps an error to its kind (for JSON) and exit code (see `--help`).
fn classify(e: &Error) -> (&'static str, u8) {
    match e {
        Error::Invalid(_) => ("invalid", 2),
        Error::NotFound { .. } => ("not_found", 3),
        Error::Conflict(_) => ("conflict", 4),
        Error::NotOurs { .. } => ("not_ours", 4),
        Error::ManagerUnreachable { .. } => ("manager_unreachable", 5),
        Error::Timeout { .. } => ("timeout", 6),
        Error::Survived { .. } => ("survived", 7),
        Error::SpawnFailed { .. } => ("spawn_failed", 1),
        Error::Io { .. } => ("io", 1),
        Error::Systemd { .. } => ("systemd", 1),
        Error::Tmux { .. } => ("tmux", 1),
    }
}

fn fail(output: Output, message: &str, kind: &str, code: u8) -> ExitCode {
    eprintln!("error: {message}");
    if output == Output::Json {
        let body = serde_json::json!({ "error": { "kind": kind, "message": message, "exitCode": code } });
        println!("{body}");
    }
    ExitCode::from(code)
}

fn seconds(s: f64, what: &str) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| Error::Invalid(format!("{what} must be a positive number of seconds, got {s}")))
}

/// The environment, the config and the call bound every verb starts from.
fn setup(cli: &Cli) -> Result<(Config, HostEnv, Duration), Error> {
    let host = HostEnv::from_process();
    let var = |k: &str| std::env::var(k).ok();
    let inputs = ConfigInputs { home: &host.home, os_hostname: &host.hostname, var: &var };
    let cfg = config::load(cli.global.config.as_deref(), &inputs)?;
    let timeout = seconds(cli.global.timeout, "--timeout")?;
    Ok((cfg, host, timeout))
}

async fn connect(cli: &Cli) -> Result<Supervisor, Error> {
    let (cfg, host, timeout) = setup(cli)?;
    Supervisor::connect(cfg, host, timeout).await
}

/// `logs --follow`: the tail, then new lines as they are appended (polled every 200 ms).
async fn follow_logs(cli: &Cli) -> Result<(), Error> {
    let Command::Logs { agent, lines, raw, .. } = &cli.command else { unreachable!() };
    let json = cli.global.output == Output::Json;
    let path = connect(cli).await?.log_file(agent).await?;
    let io = |e| Error::Io { op: "reading log", path: path.clone(), source: e };
    let (tail, mut offset) = log_file::tail_file(&path, *lines as usize, *raw).map_err(io)?;
    let emit = |l: &str| {
        let line = if json { serde_json::json!({ "line": l }).to_string() } else { l.to_string() };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").and_then(|_| out.flush()).is_ok()
    };
    for l in &tail {
        if !emit(l) {
            return Ok(());
        }
    }
    let mut partial = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < offset {
            offset = 0; // truncated: start over
        }
        if len == offset {
            continue;
        }
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&path).map_err(io)?;
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut buf = Vec::new();
        f.take(logtext::MAX_TAIL_BYTES).read_to_end(&mut buf).map_err(io)?;
        offset += buf.len() as u64;
        partial.push_str(&String::from_utf8_lossy(&buf));
        let Some(cut) = partial.rfind('\n') else { continue };
        let complete: String = partial.drain(..=cut).collect();
        for l in logtext::log_lines(&complete, *raw) {
            if !emit(&l) {
                return Ok(());
            }
        }
    }
}

/// `watch`: events from the watcher, written by a thread of their own so that a slow reader
/// blocks only that thread; the watcher drops (and counts) what does not fit in the queue.
async fn watch(cli: &Cli) -> Result<(), Error> {
    let (cfg, host, timeout) = setup(cli)?;
    // Fail fast, with the usual one line, when there is no manager at all; the watcher then
    // starts on this very connection.
    let first = Supervisor::connect(cfg.clone(), host.clone(), timeout).await?;
    let json = cli.global.output == Output::Json;
    let Command::Watch { queue } = &cli.command else { unreachable!() };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<watch::WatchEvent>(*queue as usize);
    let writer = std::thread::spawn(move || {
        let mut out = std::io::stdout().lock();
        while let Some(ev) = rx.blocking_recv() {
            let line =
                if json { serde_json::to_string(&ev).expect("events serialize") } else { output::watch_line(&ev) };
            if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                return; // the reader went away
            }
        }
    });
    let watcher = tokio::spawn(watch::Watcher::new(cfg, host, timeout, tx).run(Some(first)));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::Io { op: "installing a SIGTERM handler", path: "-".into(), source: e })?;
    let finished = async {
        // The writer ends when stdout closes; poll it without blocking the runtime.
        while !writer.is_finished() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = finished => {}
        _ = watcher => {}
    }
    Ok(())
}

/// `doctor`: every finding printed, whatever fails; the exit code says whether a required one did.
async fn doctor(cli: &Cli) -> ExitCode {
    let timeout = match seconds(cli.global.timeout, "--timeout") {
        Ok(t) => t,
        Err(e) => return fail(cli.global.output, &e.to_string(), "invalid", 2),
    };
    let host = HostEnv::from_process();
    let var = |k: &str| std::env::var(k).ok();
    let inputs = ConfigInputs { home: &host.home, os_hostname: &host.hostname, var: &var };
    let default_file = host.home.join(".agent-relay").join("orchestrator.json");
    let config_source = match &cli.global.config {
        Some(p) => p.display().to_string(),
        None if default_file.exists() => default_file.display().to_string(),
        None => format!("no {} (defaults)", default_file.display()),
    };
    let config = config::load(cli.global.config.as_deref(), &inputs).map_err(|e| e.to_string());
    let facts = doctor::probe::gather(doctor::probe::ProbeInputs { host, config, config_source, timeout }).await;
    let findings = doctor::evaluate(&facts);
    let code = doctor::exit_code(&facts, &findings);
    let text = if cli.global.output == Output::Json {
        to_json(&doctor::Report { ok: code == 0, findings })
    } else {
        doctor::render_text(&findings)
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    if code != 0 {
        eprintln!("error: doctor: a required check failed; each FAIL finding says how to fix it");
    }
    ExitCode::from(code)
}

async fn run(cli: &Cli) -> Result<String, Error> {
    let json = cli.global.output == Output::Json;

    // Bad input is rejected before the manager is contacted: nothing is touched.
    let spawn_request = match &cli.command {
        Command::Spawn { spec, .. } => Some(read_request(spec.as_deref())?),
        Command::Generate { spec } => {
            // Needs no manager: a preview of the unit file.
            let (cfg, host, _) = setup(cli)?;
            let g = durable::generate(&cfg, &host, &read_request(spec.as_deref())?)?;
            return Ok(if json { to_json(&g) } else { g.text });
        }
        _ => None,
    };
    let stop_timeout = match &cli.command {
        Command::Stop { timeout_stop, .. } | Command::Remove { timeout_stop, .. } => {
            Some(Duration::try_from_secs_f64(*timeout_stop).map_err(|_| {
                Error::Invalid(format!(
                    "--timeout-stop must be a non-negative number of seconds (capped at 60), got {timeout_stop}"
                ))
            })?)
        }
        _ => None,
    };

    let sup = connect(cli).await?;
    let text = match &cli.command {
        Command::Spawn { persist, .. } => {
            let req = spawn_request.expect("parsed above");
            let out = if *persist { sup.spawn_persist(&req).await? } else { sup.spawn(&req).await? };
            if json {
                to_json(&out)
            } else {
                let verb = if out.created { "spawned" } else { "already running" };
                format!("{verb}: {}\n{}", out.agent.session_name, output::agent_details(&out.agent))
            }
        }
        Command::List => {
            let agents = sup.list().await?;
            if json {
                to_json(&agents)
            } else {
                output::agent_table(&agents, now_ms())
            }
        }
        Command::Show { agent } => {
            let a = sup.show(agent).await?;
            if json {
                to_json(&a)
            } else {
                output::agent_details(&a)
            }
        }
        Command::Stop { agent, .. } => {
            let out = sup.stop(agent, stop_timeout.expect("parsed above")).await?;
            if json {
                to_json(&out)
            } else {
                output::stop_summary(&out)
            }
        }
        Command::Remove { agent, .. } => {
            let out = sup.remove(agent, stop_timeout.expect("parsed above")).await?;
            if json {
                to_json(&out)
            } else {
                let mut t = output::stop_summary(&out.stop);
                match (&out.unit_file, out.durable) {
                    (Some(f), _) => t.push_str(&format!("disabled; deleted {} and its secret files\n", f.display())),
                    (None, true) => t.push_str("disabled; deleted its secret files (its unit file was already gone)\n"),
                    (None, false) => {}
                }
                t
            }
        }
        Command::Diagnose { agent } => {
            let d = sup.diagnose(agent).await?;
            if json {
                to_json(&d)
            } else {
                output::diagnosis(&d)
            }
        }
        Command::Logs { agent, lines, raw, .. } => {
            let path = sup.log_file(agent).await?;
            let (lines, _) = log_file::tail_file(&path, *lines as usize, *raw).map_err(|e| Error::Io {
                op: "reading log",
                path: path.clone(),
                source: e,
            })?;
            if json {
                to_json(&serde_json::json!({ "logFile": path, "lines": lines }))
            } else {
                lines.iter().map(|l| format!("{l}\n")).collect()
            }
        }
        Command::Guest(GuestCommand::Create { agent }) => {
            let g = sup.guest_create(agent).await?;
            if json {
                to_json(&g)
            } else {
                format!(
                    "guest {} started ({}), expires in {}\n",
                    g.guest,
                    g.systemd_unit,
                    output::age(g.ttl_ms.unwrap_or(0))
                )
            }
        }
        Command::Guest(GuestCommand::List) => {
            let gs = sup.guest_list().await?;
            if json {
                to_json(&gs)
            } else {
                output::guest_table(&gs, now_ms())
            }
        }
        Command::Guest(GuestCommand::Stop { guest }) => {
            let out = sup.guest_stop(guest).await?;
            if json {
                to_json(&out)
            } else {
                format!("{} {}\n", out.guest, if out.stopped { "stopped" } else { "was not running" })
            }
        }
        Command::Terminal(TerminalCommand::Capture { guest }) => {
            let c = sup.terminal_capture(guest).await?;
            if json {
                to_json(&c)
            } else {
                c.content
            }
        }
        Command::Terminal(TerminalCommand::Send { guest, input }) => {
            let text = if input == "-" {
                use std::io::Read;
                let mut t = String::new();
                std::io::stdin()
                    .take(4 * 4096 + 1)
                    .read_to_string(&mut t)
                    .map_err(|e| Error::Invalid(format!("cannot read the input from stdin: {e}")))?;
                t
            } else {
                input.clone()
            };
            let n = sup.terminal_send(guest, &text).await?;
            if json {
                to_json(&serde_json::json!({ "guest": guest, "keys": n }))
            } else {
                format!("sent {n} key groups to {guest}\n")
            }
        }
        Command::Reap { dry_run, retention_days } => {
            let days = retention_days.unwrap_or(sup.config().exit_retention_days);
            let r = sup.reap(*dry_run, Duration::from_secs(days as u64 * 86_400)).await?;
            if json {
                to_json(&r)
            } else {
                let verb = if r.dry_run { "would" } else { "did" };
                let mut t = format!("reap {verb}: {} actions\n", r.actions.len());
                for a in &r.actions {
                    t.push_str(&format!("  {}\n", serde_json::to_string(a).unwrap_or_default()));
                }
                for f in &r.failed {
                    t.push_str(&format!("  failed: {f}\n"));
                }
                t
            }
        }
        Command::Kill { agent, signal, whom } => {
            let out = sup.kill(agent, diagnose::parse_signal(signal)?, whom).await?;
            if json {
                to_json(&out)
            } else {
                format!("sent {} to {} of {}\n", out.signal, out.whom, out.systemd_unit)
            }
        }
        Command::Sandbox { .. }
        | Command::RecordExit { .. }
        | Command::Watch { .. }
        | Command::Manpage
        | Command::Doctor
        | Command::Completions { .. } => {
            unreachable!("handled before the runtime starts")
        }
        Command::Generate { .. } => unreachable!("answered before connecting"),
    };
    Ok(text)
}

fn print_completions(shell: CompletionShell) -> ExitCode {
    use clap_complete::Shell;
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    // clap_complete offers hidden verbs too; operators should not be offered `record-exit`.
    let full = <Cli as clap::CommandFactory>::command();
    let mut cmd = clap::Command::new("agent-relay-systemd")
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
    // Into a buffer: clap_complete panics on a failed write (e.g. a closed pipe).
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "agent-relay-systemd", &mut out);
    match std::io::stdout().lock().write_all(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(Output::Text, &format!("writing the completions: {e}"), "io", 1),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("records serialize");
    s.push('\n');
    s
}

fn read_request(spec: Option<&std::path::Path>) -> Result<request::SpawnRequest, Error> {
    use std::io::Read;
    let limit = request::MAX_REQUEST_BYTES as u64 + 1;
    let mut text = String::new();
    match spec {
        Some(path) => {
            let f = std::fs::File::open(path)
                .map_err(|e| Error::Invalid(format!("cannot read --spec {}: {e}", path.display())))?;
            f.take(limit)
                .read_to_string(&mut text)
                .map_err(|e| Error::Invalid(format!("cannot read --spec {}: {e}", path.display())))?;
        }
        None => {
            std::io::stdin()
                .take(limit)
                .read_to_string(&mut text)
                .map_err(|e| Error::Invalid(format!("cannot read the spawn request from stdin: {e}")))?;
        }
    }
    Ok(request::parse(&text)?)
}
