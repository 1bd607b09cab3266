//! One function per verb: read and check the verb's input before the manager is contacted (bad
//! input changes nothing), connect, call the one operation, hand the answer to `render::emit`.
//! Streams (`watch`, `logs --follow`) write as they go.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::args::{Cli, Command, CompletionShell, GuestCommand, Output, TerminalCommand};
use super::render::{emit, AgentList, BareAgentList, GuestList, Render};
use super::{ErrorKind, Failure};
use crate::error::Error;
use crate::io::config_file;
use crate::io::host::HostEnv;
use crate::model::config::{Config, ConfigInputs};
use crate::model::filter::ListFilter;
use crate::model::request::{self, SpawnRequest};
use crate::ops::{self, Supervisor};

/// systemd's `EXIT_EXEC` (systemd.exec(5) "Process Exit Codes"): the program could not be executed.
const EXIT_EXEC: u8 = 203;

/// The one dispatch: each verb to its function.
pub(super) fn run(cli: &Cli) -> Result<ExitCode, Failure> {
    let o = cli.global.output;
    match &cli.command {
        Command::Spawn { spec, persist, wait_ready, ready_timeout, no_wait } => {
            let ready = wait_ready.then_some(ready_timeout.unwrap_or(DEFAULT_READY_TIMEOUT));
            let opts = ops::spawn::SpawnOptions { no_wait: *no_wait };
            answer(o, block_on(spawn(cli, spec.as_deref(), *persist, ready, opts)))
        }
        Command::Generate { dry_run: true, name, .. } => dry_run(cli, name.as_deref()),
        Command::Generate { spec, .. } => answer(o, generate(cli, spec.as_deref())),
        Command::List { state, provider, label, tag, durable, no_headers, all } => {
            let filter = ListFilter {
                states: state.clone(),
                providers: provider.clone(),
                labels: label.clone(),
                tags: tag.clone(),
                durable: *durable,
            };
            let wide = o == Output::Wide;
            let list = block_on(async {
                let sup = connect(cli).await?;
                let mut agents = sup.list_with_queued().await?;
                if *all {
                    let gone = sup.exited_agents(&agents);
                    agents.extend(gone);
                }
                let agents = filter.apply(agents);
                Ok(AgentList(if wide { sup.with_resources(agents).await } else { agents }))
            });
            match list {
                Ok(list) if *no_headers => answer(o, Ok(BareAgentList(list))),
                list => answer(o, list),
            }
        }
        Command::Show { agent } => answer(
            o,
            block_on(async {
                let sup = connect(cli).await?;
                let mut r = sup.show(agent).await?;
                r.resources = sup.resources_of(&r).await.unwrap_or_default();
                Ok(r)
            }),
        ),
        Command::Stop { agent, timeout_stop } => answer(o, block_on(stop(cli, agent, *timeout_stop))),
        Command::Restart { agent, spec, spawn_request_id, registration_timeout, settle_ms, timeout_stop } => {
            let args = RestartArgs {
                spec: spec.as_deref(),
                spawn_request_id: spawn_request_id.clone(),
                registration_timeout: *registration_timeout,
                settle_ms: *settle_ms,
                timeout_stop: *timeout_stop,
            };
            answer(o, block_on(restart(cli, agent, args)))
        }
        Command::Status => answer(o, block_on(async { connect(cli).await?.status().await })),
        Command::Top { interval, iterations } => done(block_on(top(cli, *interval, *iterations))),
        Command::Start { agent } => answer(o, block_on(async { connect(cli).await?.start(agent).await })),
        Command::Remove { agent, timeout_stop } => answer(o, block_on(remove(cli, agent, *timeout_stop))),
        Command::Wait { agent, timeout_wait } => answer(o, block_on(wait(cli, agent, *timeout_wait))),
        Command::Diagnose { agent } => answer(o, block_on(async { connect(cli).await?.diagnose(agent).await })),
        Command::Logs { agent, lines, raw, follow: following, since, timestamps } => {
            let since_ms = since
                .as_deref()
                .map(|s| crate::model::logtimes::since(s, ops::now_ms()))
                .transpose()
                .map_err(|e| Error::Argument(e.to_string()))?;
            let default = if since_ms.is_some() { None } else { Some(DEFAULT_LOG_LINES) };
            let lines = lines.map(usize::from).or(default);
            let query = ops::logs::LogQuery { lines, raw: *raw, since_ms, timestamps: *timestamps };
            match following {
                false => answer(o, block_on(async { connect(cli).await?.logs(agent, query).await })),
                true => done(block_on(follow(cli, agent, query))),
            }
        }
        Command::Kill { agent, signal, whom } => answer(o, block_on(kill(cli, agent, signal, whom))),
        Command::Guest(GuestCommand::Create { agent }) => {
            answer(o, block_on(async { connect(cli).await?.guest_create(agent).await }))
        }
        Command::Guest(GuestCommand::Attach { guest }) => done(guest_attach(cli, guest)),
        Command::Guest(GuestCommand::List) => {
            answer(o, block_on(async { Ok(GuestList(connect(cli).await?.guest_list().await?)) }))
        }
        Command::Guest(GuestCommand::Stop { guest }) => {
            answer(o, block_on(async { connect(cli).await?.guest_stop(guest).await }))
        }
        Command::Terminal(TerminalCommand::Capture { target }) => {
            answer(o, block_on(async { connect(cli).await?.terminal_capture(target).await }))
        }
        Command::Terminal(TerminalCommand::Send { target, input }) => answer(o, block_on(send(cli, target, input))),
        Command::Terminal(TerminalCommand::Resize { target, cols, rows }) => {
            answer(o, block_on(resize(cli, target, *cols, *rows)))
        }
        Command::Reap { dry_run, retention_days } => answer(o, block_on(reap(cli, *dry_run, *retention_days))),
        Command::Watch { queue, give_up_after } => done(watch(cli, *queue, *give_up_after)),
        Command::Doctor => doctor(cli),
        Command::CompleteNames { kind } => {
            // A completion must never print an error or wait: at most 2 s, nothing on failure.
            let names = setup(cli)
                .and_then(|(cfg, host, _)| block_on(super::completion::names(cfg, host, *kind)))
                .unwrap_or_default();
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(names.join("\n").as_bytes()).and_then(|_| out.write_all(b"\n"));
            Ok(ExitCode::SUCCESS)
        }
        Command::RecordExit { dir, unit, session, agent_id, provider, log_file, spawn_request_id, prompt_file } => {
            let args = ops::record_exit::RecordArgs {
                dir: dir.clone(),
                unit: unit.clone(),
                session: session.clone(),
                agent_id: agent_id.clone(),
                provider: provider.clone(),
                log_file: log_file.clone(),
                spawn_request_id: spawn_request_id.clone(),
                prompt_file: prompt_file.clone(),
            };
            match block_on(ops::record_exit::record_exit(&args, &HostEnv::from_process())) {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(e) => Err(io_failure(format!("recording the exit of {unit}: {e}"))),
            }
        }
        Command::PrepareAgent { name, digest } => {
            let ctx = ops::generate::Context::from_process(cli.global.config.as_deref(), ops::generate::own_exe()?)?;
            ops::generate::prepare(&ctx, name, digest)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::RunAgent { env_file, log_file, argv } => match ops::generate::run_agent(env_file, log_file, argv) {
            e @ Error::Io { .. } => Err(Failure::new(format!("run-agent: {e}"), ErrorKind::Exec, EXIT_EXEC)),
            e => Err(e.into()),
        },
        // Returns only when the runner could not be executed: systemd's own status for that.
        Command::LogTee { times, argv } => {
            let e = ops::logs::log_tee(times, argv);
            Err(Failure::new(format!("log-tee: cannot execute {}: {e}", argv[0]), ErrorKind::Exec, EXIT_EXEC))
        }
        // Returns only when the program could not be executed: systemd's own status for that.
        Command::Exec { words } => {
            Err(Failure::new(format!("exec: {}", ops::exec::exec_encoded(words)), ErrorKind::Exec, EXIT_EXEC))
        }
        Command::Sandbox { cmd } => match crate::io::sandbox::run_sandboxed(cmd) {
            Ok(code) => Ok(ExitCode::from(code.clamp(0, 255) as u8)),
            Err(e) => Err(Failure::new(format!("sandbox: {e}"), ErrorKind::Sandbox, 1)),
        },
        Command::GuestExec { file } => Err(ops::guests::guest_exec(file).into()),
        Command::Manpage => manpage(),
        Command::Completions { shell } => completions(*shell),
    }
}

fn answer<T: Render>(o: Output, result: Result<T, Error>) -> Result<ExitCode, Failure> {
    emit(o, &result?)?;
    Ok(ExitCode::SUCCESS)
}

fn done(result: Result<(), Error>) -> Result<ExitCode, Failure> {
    result?;
    Ok(ExitCode::SUCCESS)
}

fn io_failure(message: String) -> Failure {
    Failure::new(message, ErrorKind::Io, 1)
}

/// Runs one verb's future on a single-threaded runtime.
fn block_on<T>(fut: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Error::Io {
        op: "starting the async runtime",
        path: "-".into(),
        source: e,
    })?;
    let result = rt.block_on(fut);
    // Do not wait for background tasks (a watcher): the verb is over.
    rt.shutdown_background();
    result
}

fn seconds(s: f64, what: &str) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| Error::Argument(format!("{what} must be a positive number of seconds, got {s}")))
}

fn config_inputs<'a>(host: &'a HostEnv, var: &'a dyn Fn(&str) -> Option<String>) -> ConfigInputs<'a> {
    ConfigInputs { home: &host.home, os_hostname: &host.hostname, var }
}

/// The environment, the config and the call bound every verb starts from.
fn setup(cli: &Cli) -> Result<(Config, HostEnv, Duration), Error> {
    let host = HostEnv::from_process();
    let var = |k: &str| std::env::var(k).ok();
    let cfg = config_file::load(cli.global.config.as_deref(), &config_inputs(&host, &var))?;
    let timeout = seconds(cli.global.timeout, "--timeout")?;
    Ok((cfg, host, timeout))
}

async fn connect(cli: &Cli) -> Result<Supervisor, Error> {
    let (cfg, host, timeout) = setup(cli)?;
    Supervisor::connect(cfg, host, timeout).await
}

async fn wait(cli: &Cli, agent: &str, bound: Option<f64>) -> Result<ops::diagnose::Diagnosis, Error> {
    let bound = bound.map(|s| seconds(s, "--timeout-wait")).transpose()?;
    connect(cli).await?.wait(agent, bound).await
}

/// `spawn --wait-ready`'s bound when --ready-timeout is not given, in seconds.
const DEFAULT_READY_TIMEOUT: f64 = 30.0;

async fn spawn(
    cli: &Cli,
    spec: Option<&Path>,
    persist: bool,
    ready: Option<f64>,
    opts: ops::spawn::SpawnOptions,
) -> Result<ops::SpawnOutcome, Error> {
    let ready = ready.map(|s| seconds(s, "--ready-timeout")).transpose()?;
    let req = read_request(spec)?;
    let sup = connect(cli).await?;
    // The admission slot is held until the runner has registered, as the orchestrator holds it.
    let (outcome, _slot) =
        if persist { (sup.spawn_persist(&req).await?, None) } else { sup.spawn_admitted(&req, opts).await? };
    if let Some(bound) = ready {
        sup.wait_ready(&outcome.agent, bound).await?;
    }
    Ok(outcome)
}

/// Needs no manager: a preview of the unit file.
fn generate(cli: &Cli, spec: Option<&Path>) -> Result<ops::durable::Generated, Error> {
    let req = read_request(spec)?;
    let (cfg, host, _) = setup(cli)?;
    ops::durable::generate(&cfg, &host, &req)
}

/// `generate --dry-run`: the report (units on stdout), then one line on stderr per skipped file;
/// exit 2 (kind `invalid`) when there is one. Needs no manager.
fn dry_run(cli: &Cli, name: Option<&str>) -> Result<ExitCode, Failure> {
    let ctx = ops::generate::Context::from_process(cli.global.config.as_deref(), ops::generate::own_exe()?)?;
    let report = ops::generate::dry_run(&ctx, name)?;
    emit(cli.global.output, &report)?;
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    match report.errors.len() {
        0 => Ok(ExitCode::SUCCESS),
        n => {
            eprintln!("error: {n} .agent file(s) invalid: the generator skips them (see above)");
            Ok(ExitCode::from(2))
        }
    }
}

/// The seed's rule: 0 or less means the default 10 s, more than 60 means 60.
fn stop_timeout(timeout_stop: f64) -> Result<Duration, Error> {
    crate::model::unit::stop_window(timeout_stop).ok_or_else(|| {
        Error::Argument(format!(
            "--timeout-stop must be a number of seconds (0 or less: the default 10, at most 60), got {timeout_stop}"
        ))
    })
}

async fn stop(cli: &Cli, agent: &str, timeout_stop: f64) -> Result<ops::StopOutcome, Error> {
    let timeout = stop_timeout(timeout_stop)?;
    connect(cli).await?.stop(agent, timeout).await
}

/// `top`: refreshes until `iterations` (or forever); text clears the screen between refreshes
/// on a terminal, JSON is one document per line.
async fn top(cli: &Cli, interval: f64, iterations: Option<u64>) -> Result<(), Error> {
    let every = seconds(interval, "--interval")?;
    let sup = connect(cli).await?;
    let mut prev = ops::resources::CpuSamples::default();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut n = 0u64;
    loop {
        let frame = sup.top_frame(&mut prev).await?;
        let text = match cli.global.output {
            Output::Json => serde_json::to_string(&frame).map(|s| s + "\n").unwrap_or_default(),
            _ => {
                let head = format!(
                    "agent-relay-systemd top: {} running, {}\n",
                    frame.agents.len(),
                    super::render::clock_time(frame.time)
                );
                let body = AgentList(frame.agents).wide();
                if tty {
                    format!("\x1b[H\x1b[2J{head}{body}")
                } else {
                    format!("{head}{body}\n")
                }
            }
        };
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            if out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_err() {
                return Ok(());
            }
        }
        n += 1;
        if iterations.is_some_and(|max| n >= max) {
            return Ok(());
        }
        tokio::time::sleep(every).await;
    }
}

/// `guest attach`: replaces this process with tmux attached to the guest (returns only on failure).
fn guest_attach(cli: &Cli, guest: &str) -> Result<(), Error> {
    use std::io::IsTerminal;
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        return Err(Error::Argument(
            "guest attach needs a terminal on stdin and stdout; programs use `terminal capture|send`".into(),
        ));
    }
    let mut cmd = block_on(async { connect(cli).await?.guest_attach_command(guest).await })?;
    let err = std::os::unix::process::CommandExt::exec(&mut cmd);
    Err(Error::Argument(format!("cannot run tmux: {err}")))
}

struct RestartArgs<'a> {
    spec: Option<&'a Path>,
    spawn_request_id: Option<String>,
    registration_timeout: f64,
    settle_ms: u64,
    timeout_stop: f64,
}

async fn restart(cli: &Cli, agent: &str, a: RestartArgs<'_>) -> Result<ops::restart::RestartOutcome, Error> {
    let opts = ops::restart::RestartOptions {
        request: match a.spec {
            Some(p) if p == Path::new("-") => Some(read_request(None)?),
            Some(p) => Some(read_request(Some(p))?),
            None => None,
        },
        spawn_request_id: a.spawn_request_id,
        registration_timeout: seconds(a.registration_timeout, "--registration-timeout")?,
        settle: Duration::from_millis(a.settle_ms),
        stop_timeout: stop_timeout(a.timeout_stop)?,
    };
    connect(cli).await?.restart(agent, opts).await
}

async fn remove(cli: &Cli, agent: &str, timeout_stop: f64) -> Result<ops::durable::RemoveOutcome, Error> {
    let timeout = stop_timeout(timeout_stop)?;
    connect(cli).await?.remove(agent, timeout).await
}

async fn kill(cli: &Cli, agent: &str, signal: &str, whom: &str) -> Result<ops::stop::KillOutcome, Error> {
    let signal = ops::stop::parse_signal(signal)?;
    connect(cli).await?.kill(agent, signal, whom).await
}

/// The input is read and made into keys (refused whole when too long) before the manager is
/// contacted.
async fn send(cli: &Cli, target: &str, input: &str) -> Result<ops::terminal::Sent, Error> {
    use crate::model::terminal::{tokenize_input, MAX_INPUT_UTF16};
    let text = if input == "-" {
        // A UTF-16 code unit is at most 3 bytes of UTF-8: more bytes than that is too long.
        let most = 3 * MAX_INPUT_UTF16;
        let mut bytes = Vec::new();
        std::io::stdin()
            .take(most as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::Argument(format!("cannot read the input from stdin: {e}")))?;
        if bytes.len() > most {
            return Err(Error::Argument(format!(
                "terminal input exceeds {MAX_INPUT_UTF16} characters (UTF-16 code units); nothing was sent"
            )));
        }
        String::from_utf8(bytes).map_err(|_| Error::Argument("terminal input on stdin is not UTF-8".into()))?
    } else {
        input.to_string()
    };
    let keys = tokenize_input(&text).map_err(Error::Argument)?;
    connect(cli).await?.terminal_send(target, &keys).await
}

/// The size is checked before the manager is contacted.
async fn resize(cli: &Cli, target: &str, cols: u16, rows: u16) -> Result<ops::terminal::Resized, Error> {
    crate::model::terminal::check_size(cols, rows).map_err(Error::Argument)?;
    connect(cli).await?.terminal_resize(target, cols, rows).await
}

async fn reap(cli: &Cli, dry_run: bool, retention_days: Option<u32>) -> Result<ops::reap::ReapReport, Error> {
    let sup = connect(cli).await?;
    let days = retention_days.unwrap_or(sup.config().exit_retention_days);
    sup.reap(dry_run, Duration::from_secs(days as u64 * 86_400)).await
}

/// The lines `logs` prints when neither `-n` nor `--since` says.
const DEFAULT_LOG_LINES: usize = 100;

/// `logs --follow`: the tail, then new lines as they are appended, until the agent has ended;
/// then one line on stderr says how it ended (as `diagnose`).
async fn follow(cli: &Cli, agent: &str, query: ops::logs::LogQuery) -> Result<(), Error> {
    let json = cli.global.output == Output::Json;
    let sup = connect(cli).await?;
    let path = sup.log_file(agent).await?;
    let reading = follow_lines(&path, query, json);
    tokio::pin!(reading);
    let ended = tokio::select! {
        r = &mut reading => return r,
        d = sup.wait(agent, None) => d?,
    };
    // What the runner wrote last is read before the stream ends.
    let _ = tokio::time::timeout(FOLLOW_DRAIN, &mut reading).await;
    let how = ended.last_error.clone().unwrap_or_else(|| format!("{:?}", ended.exit.kind).to_lowercase());
    eprintln!("agent-relay-systemd: {} has ended: {how}", ended.systemd_unit);
    Ok(())
}

/// How long `logs --follow` keeps reading after the agent has ended.
const FOLLOW_DRAIN: Duration = Duration::from_millis(600);

async fn follow_lines(path: &Path, query: ops::logs::LogQuery, json: bool) -> Result<(), Error> {
    ops::logs::follow(path, query, |time, l| {
        let line = match json {
            true => {
                serde_json::to_string(&super::render::LogLine { schema_version: Default::default(), time, line: l })
                    .expect("a log line serializes")
            }
            false => super::render::log_line(query.timestamps.then_some(time), l),
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").and_then(|_| out.flush()).is_ok()
    })
    .await
}

/// `watch`: events from the watcher, written by a thread of their own so that a slow reader
/// blocks only that thread; the watcher drops (and counts) what does not fit in the queue.
fn watch(cli: &Cli, queue: u32, give_up_after: f64) -> Result<(), Error> {
    let give_up = if give_up_after == 0.0 { None } else { Some(seconds(give_up_after, "--give-up-after")?) };
    block_on(async {
        let (cfg, host, timeout) = setup(cli)?;
        // Fail fast, with the usual one line, when there is no manager at all; the watcher then
        // starts on this very connection.
        let first = Supervisor::connect(cfg.clone(), host.clone(), timeout).await?;
        let json = cli.global.output == Output::Json;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ops::watch::WatchEvent>(queue as usize);
        let writer = std::thread::spawn(move || {
            let mut out = std::io::stdout().lock();
            let mut trimmed = std::time::Instant::now();
            loop {
                // Idle (nothing queued): what a burst of events freed goes back to the system,
                // at most once a second, so that following many agents keeps a low peak.
                let ev = match rx.try_recv() {
                    Ok(ev) => ev,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return,
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                        if trimmed.elapsed() >= Duration::from_secs(1) {
                            crate::io::host::release_free_memory();
                            trimmed = std::time::Instant::now();
                        }
                        let Some(ev) = rx.blocking_recv() else { return };
                        ev
                    }
                };
                let line = if json {
                    serde_json::to_string(&ev).expect("events serialize")
                } else {
                    super::render::watch_line(&ev)
                };
                if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                    return; // the reader went away
                }
            }
        });
        let watcher =
            tokio::spawn(ops::watch::Watcher::new(cfg, host, timeout, tx).give_up_after(give_up).run(Some(first)));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(Error::io("installing a SIGTERM handler", "-"))?;
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
            ended = watcher => {
                if let Ok(Err(e)) = ended {
                    // The watcher (and its sender) is gone: the writer prints what is left, then ends.
                    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
                    return Err(e);
                }
            }
        }
        Ok(())
    })
}

/// `doctor`: every finding printed, whatever fails; the exit code says whether a required one did.
fn doctor(cli: &Cli) -> Result<ExitCode, Failure> {
    let timeout = seconds(cli.global.timeout, "--timeout")?;
    let host = HostEnv::from_process();
    let var = |k: &str| std::env::var(k).ok();
    let (file, explicit) = crate::model::config::config_path(cli.global.config.as_deref(), &config_inputs(&host, &var));
    let config_source = if explicit || file.exists() {
        file.display().to_string()
    } else {
        format!("no {} (defaults)", file.display())
    };
    let config =
        config_file::load(cli.global.config.as_deref(), &config_inputs(&host, &var)).map_err(|e| e.to_string());
    let probe = crate::doctor::probe::ProbeInputs { host, config, config_source, timeout };
    let facts = block_on(async { Ok(crate::doctor::probe::gather(probe).await) })?;
    let findings = crate::doctor::evaluate(&facts);
    let code = crate::doctor::exit_code(&facts, &findings);
    emit(cli.global.output, &crate::doctor::Report { schema_version: Default::default(), ok: code == 0, findings })?;
    if code != 0 {
        eprintln!("error: doctor: a required check failed; each FAIL finding says how to fix it");
    }
    Ok(ExitCode::from(code))
}

fn manpage() -> Result<ExitCode, Failure> {
    let mut out = Vec::new();
    super::manpage::render(&mut out).map_err(|e| io_failure(format!("writing the man page: {e}")))?;
    std::io::stdout().lock().write_all(&out).map_err(|e| io_failure(format!("writing the man page: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

fn completions(shell: CompletionShell) -> Result<ExitCode, Failure> {
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
    if shell == Shell::Bash {
        out = fix_bash_labels(&out);
        let dynamic = super::completion::bash_dynamic(&cmd, &out);
        out.extend_from_slice(dynamic.as_bytes());
    }
    std::io::stdout().lock().write_all(&out).map_err(|e| io_failure(format!("writing the completions: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

/// clap_complete 4.6's bash script names a verb's state `agent__relay__systemd__subcmd__logs` when
/// it walks the words, but labels that state's case `agent__subcmd__relay__subcmd__systemd__subcmd__logs`
/// (the bin name's `-` spelled as the verb separator): nothing past the first word ever completed.
/// One spelling, the walker's, for both.
fn fix_bash_labels(script: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(script)
        .replace("agent__subcmd__relay__subcmd__systemd__subcmd__", "agent__relay__systemd__subcmd__")
        .into_bytes()
}

/// Said on stderr when the request is to be read from a terminal: otherwise the command seems hung.
const STDIN_PROMPT: &str =
    "reading the spawn request (JSON) from stdin; end it with Ctrl-D, or pass --spec FILE (--help has an example)";

/// The spawn request from `--spec FILE` or stdin, bounded in size.
fn read_request(spec: Option<&Path>) -> Result<SpawnRequest, Error> {
    let limit = request::MAX_REQUEST_BYTES as u64 + 1;
    let mut text = String::new();
    match spec {
        Some(path) => {
            let f = std::fs::File::open(path)
                .map_err(|e| Error::Argument(format!("cannot read --spec {}: {e}", path.display())))?;
            f.take(limit)
                .read_to_string(&mut text)
                .map_err(|e| Error::Argument(format!("cannot read --spec {}: {e}", path.display())))?;
        }
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprintln!("{}", STDIN_PROMPT);
            }
            std::io::stdin()
                .take(limit)
                .read_to_string(&mut text)
                .map_err(|e| Error::Argument(format!("cannot read the spawn request from stdin: {e}")))?;
        }
    }
    Ok(request::parse(&text)?)
}
