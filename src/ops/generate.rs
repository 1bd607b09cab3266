//! Declared agents (`.agent` files): what a declaration becomes (`declare`: its plan and unit,
//! the same on every run), the systemd user generator (`generator_main`, systemd.generator(7)),
//! `generate --dry-run`, and the two commands a generated unit runs at each start:
//! `prepare-agent` (`ExecStartPre=`: the secret and payload files) and `run-agent`
//! (`ExecStart=`: the runner with those variables). No D-Bus here: a generator runs inside a
//! daemon-reload, while the manager answers no one.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Serialize;

use crate::error::Error;
use crate::io::agent_dirs::{self, Content};
use crate::io::config_file;
use crate::io::host::{self, HostEnv};
use crate::model::agentfile::unit::{self as agent_unit, Link};
use crate::model::agentfile::{self, AgentFile, Parsed};
use crate::model::config::{Config, ConfigInputs};
use crate::model::plan::{self, PlanInputs, SpawnPlan};
use crate::model::request::{self, MAX_REQUEST_BYTES};

/// The generator's file name, in `/usr/lib/systemd/user-generators/`.
pub const GENERATOR_NAME: &str = "agent-relay-generator";
/// Our binary, which the generated units run.
const BINARY: &str = "agent-relay-systemd";
/// What a declared agent's `PATH` (and the runner's lookup) starts from: systemd's default
/// `PATH`, whatever `PATH` the generator, the CLI or the unit has, so that the generator, a dry
/// run and each start plan the same agent.
pub const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What every declaration is planned against.
pub struct Context {
    pub config: Config,
    pub host: HostEnv,
    /// Our binary (absolute, links resolved): the units' `ExecStartPre=`, `ExecStart=`, `ExecStopPost=`.
    pub exe: PathBuf,
}

impl Context {
    /// The config and host of this process; `exe` as given.
    pub fn from_process(config_flag: Option<&Path>, exe: PathBuf) -> Result<Context, Error> {
        let host = HostEnv::from_process();
        let var = |k: &str| std::env::var(k).ok();
        let inputs = ConfigInputs { home: &host.home, os_hostname: &host.hostname, var: &var };
        let config = config_file::load(config_flag, &inputs)?;
        Ok(Context { config, host, exe })
    }
}

/// This process's binary, when it is `agent-relay-systemd` (the CLI), links resolved.
pub fn own_exe() -> Result<PathBuf, Error> {
    let me = std::env::current_exe().and_then(std::fs::canonicalize).map_err(Error::io("finding", BINARY))?;
    match me.file_name().is_some_and(|n| n == BINARY) {
        true => Ok(me),
        false => Err(Error::Argument(format!("{} is not {BINARY}", me.display()))),
    }
}

/// The binary the generator names in its units: `agent-relay-systemd` beside the generator
/// (a build tree), else on [`BASE_PATH`] (`/usr/bin`, where the packages put it).
pub fn generator_exe() -> Option<PathBuf> {
    let me = std::env::current_exe().and_then(std::fs::canonicalize).ok()?;
    let beside = me.parent().map(|d| d.join(BINARY));
    let found = beside
        .filter(|p| host::find_program(&p.display().to_string(), "").is_some())
        .or_else(|| host::find_program(BINARY, BASE_PATH))?;
    std::fs::canonicalize(&found).ok()
}

/// A declaration as the generator writes it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeclaredUnit {
    /// The declaration's name (its file name without `.agent`).
    pub name: String,
    /// The `.agent` file.
    pub source: PathBuf,
    /// The agent's unit (`agent-relay-managed-<session>.service`) and its id.
    pub unit: String,
    pub agent_id: String,
    /// `NAME.agent.service`, for `systemctl --user`.
    pub alias: String,
    /// The unit file's text.
    pub text: String,
    /// Symlinks beside it: aliases, `<target>.wants/` links.
    pub links: Vec<Link>,
    /// What the unit's `ExecStartPre=` checks the declaration against.
    #[serde(skip)]
    pub digest: String,
}

/// A declaration the generator skips, and why (one line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileError {
    pub source: PathBuf,
    pub message: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.source.display(), self.message)
    }
}

/// What the generator makes of every declaration: units, and the files it skips.
#[derive(Debug, Clone, Default)]
pub struct Declarations {
    pub units: Vec<(DeclaredUnit, SpawnPlan)>,
    pub errors: Vec<FileError>,
    /// Names that are masked (an empty file or a link to /dev/null).
    pub masked: Vec<String>,
}

/// Plans and renders one declaration. The plan takes no time and no randomness: the same file,
/// config and host give the same unit on every run.
pub fn declare(
    ctx: &Context,
    name: &str,
    source: &Path,
    file: &AgentFile,
) -> Result<(DeclaredUnit, SpawnPlan), String> {
    let home = &ctx.host.home;
    let named = |path: &Option<String>| -> Result<Option<String>, String> {
        path.as_deref()
            .map(|p| agent_dirs::read_named_file(&crate::model::config::expand_home(p, home), MAX_REQUEST_BYTES as u64))
            .transpose()
    };
    let prompt = named(&file.prompt_file).map_err(|e| format!("PromptFile=: {e}"))?;
    let append = named(&file.system_prompt_append_file).map_err(|e| format!("SystemPromptAppendFile=: {e}"))?;
    let req = agentfile::request_of(name, file, prompt, append);
    request::validate(&req).map_err(|e| e.to_string())?;
    if let Some(k) = req.env.keys().find(|k| plan::is_supervisor_owned(k)) {
        return Err(format!("Environment= sets {k}, which agent-relay-systemd sets for the runner; leave it out"));
    }
    let cwd = host::resolve_cwd(&req.cwd, &ctx.config, home).map_err(|e| e.to_string())?;
    let launcher = host::resolve_launcher(&ctx.config, &req.provider, &plan::runner_path(home, BASE_PATH))
        .map_err(|e| e.to_string())?;
    let seed = agentfile::plan_seed(name, &req);
    let exits = crate::io::exit_store::exits_dir(&ctx.host.state_home);
    let files_root = ctx.host.durable_root();
    let inputs = PlanInputs {
        config: &ctx.config,
        home,
        runtime_root: &files_root,
        caller_path: BASE_PATH,
        launcher: &launcher,
        cwd: &cwd,
        now_ms: 0,
        record_exit: Some((&ctx.exe, &exits)),
        random_hex: &seed,
        inherited_env: &[],
    };
    let plan = plan::plan(&req, &inputs).map_err(|e| e.to_string())?;
    let exe = ctx.exe.display().to_string();
    let (env_file, log_file) = (plan.env_file.display().to_string(), plan.log_file.display().to_string());
    let unit = agent_unit::render(agent_unit::Inputs {
        name,
        source: &source.display().to_string(),
        file,
        unit: &plan.unit,
        props: crate::model::unit::agent_properties(&plan),
        argv: &plan.argv,
        exe: &exe,
        env_file: &env_file,
        log_file: &log_file,
    })
    .map_err(|e| e.to_string())?;
    let declared = DeclaredUnit {
        name: name.to_string(),
        source: source.to_path_buf(),
        unit: unit.unit,
        agent_id: plan.meta.agent_id.clone(),
        alias: agent_unit::alias_of(name),
        text: unit.text,
        links: unit.links,
        digest: unit.digest,
    };
    Ok((declared, plan))
}

/// Every declaration of the user's and the system's directories, each made a unit or an error.
/// Two declarations of one unit (the same `SpawnRequestId=`), or of one link name, keep the
/// first (the user's before the system's, then by name).
pub fn declarations(ctx: &Context) -> Declarations {
    let (found, problems) = agent_dirs::find(&agent_dirs::dirs(&ctx.host));
    let mut out = Declarations {
        errors: problems.into_iter().map(|(source, message)| FileError { source, message }).collect(),
        ..Default::default()
    };
    for f in found {
        let fail = |message: String| FileError { source: f.path.clone(), message };
        let declared = match &f.content {
            Content::Masked => {
                out.masked.push(f.name.clone());
                continue;
            }
            Content::Unreadable(why) => Err(why.clone()),
            Content::Text(text) => match agentfile::parse(text) {
                Ok(Parsed::Masked) => {
                    out.masked.push(f.name.clone());
                    continue;
                }
                Ok(Parsed::Agent(file)) => declare(ctx, &f.name, &f.path, &file),
                Err(e) => Err(e.to_string()),
            },
        };
        let (unit, plan) = match declared {
            Ok(d) => d,
            Err(message) => {
                out.errors.push(fail(message));
                continue;
            }
        };
        let taken = |u: &DeclaredUnit| {
            u.unit == unit.unit || u.links.iter().any(|l| unit.links.iter().any(|m| m.path == l.path))
        };
        if let Some((other, _)) = out.units.iter().find(|(u, _)| taken(u)) {
            out.errors.push(fail(format!(
                "declares unit {} or a link name {} already declares; give it another SpawnRequestId=, AgentId= or Alias=",
                unit.unit,
                other.source.display()
            )));
            continue;
        }
        out.units.push((unit, plan));
    }
    out
}

/// The generator: writes one unit per valid declaration into `normal` (its first argument),
/// with the links its `[Install]` asks for, and one line on stderr (the journal) per file it
/// skips. Never fails the reload: it exits 0 whatever it skipped.
pub fn generator_main(args: Vec<std::ffi::OsString>) -> std::process::ExitCode {
    let say = |line: String| eprintln!("{GENERATOR_NAME}: {line}");
    let Some(normal) = args.get(1).map(PathBuf::from) else {
        say("usage: agent-relay-generator NORMAL_DIR [EARLY_DIR LATE_DIR] (systemd.generator(7))".into());
        return std::process::ExitCode::from(2);
    };
    let Some(exe) = generator_exe() else {
        say(format!("no {BINARY} beside this generator nor on {BASE_PATH}; no agent units generated"));
        return std::process::ExitCode::SUCCESS;
    };
    let ctx = match Context::from_process(None, exe) {
        Ok(c) => c,
        Err(e) => {
            say(format!("{e}; no agent units generated"));
            return std::process::ExitCode::SUCCESS;
        }
    };
    let d = declarations(&ctx);
    for e in &d.errors {
        say(format!("{e}; skipped"));
    }
    for (u, _) in &d.units {
        let written = agent_dirs::write_unit(&normal, &u.unit, &u.text)
            .and_then(|_| u.links.iter().try_for_each(|l| agent_dirs::write_link(&normal, &l.path, &l.target)));
        if let Err(e) = written {
            say(format!("{}: writing {} in {}: {e}", u.source.display(), u.unit, normal.display()));
        }
    }
    std::process::ExitCode::SUCCESS
}

/// What `generate --dry-run` prints.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    /// The JSON contract's version.
    pub schema_version: crate::model::contract::SchemaVersion,
    /// Where the user manager's generators write (`$XDG_RUNTIME_DIR/systemd/generator`).
    pub output_dir: Option<PathBuf>,
    /// The directories read, the user's first.
    pub dirs: Vec<PathBuf>,
    pub units: Vec<DeclaredUnit>,
    /// The files the generator would skip; any makes `generate --dry-run` exit 2.
    pub errors: Vec<FileError>,
}

/// What the generator would write (for `name` alone, when given), and what it would skip.
pub fn dry_run(ctx: &Context, name: Option<&str>) -> Result<DryRun, Error> {
    if let Some(n) = name {
        agentfile::check_name(n).map_err(Error::Argument)?;
    }
    let d = declarations(ctx);
    let mine = |source: &Path| name.is_none_or(|n| source.file_name().is_some_and(|f| *f == *format!("{n}.agent")));
    let units: Vec<DeclaredUnit> = d.units.into_iter().map(|(u, _)| u).filter(|u| mine(&u.source)).collect();
    let errors: Vec<FileError> = d.errors.into_iter().filter(|e| name.is_none() || mine(&e.source)).collect();
    let dirs = agent_dirs::dirs(&ctx.host);
    if let Some(n) = name.filter(|n| units.is_empty() && errors.is_empty() && !d.masked.iter().any(|m| m == n)) {
        return Err(Error::NotFound { reference: format!("{n}.agent (in {})", join(&dirs)) });
    }
    Ok(DryRun {
        schema_version: Default::default(),
        output_dir: ctx.host.runtime_dir.as_ref().map(|d| d.join("systemd").join("generator")),
        dirs,
        units,
        errors,
    })
}

fn join(dirs: &[PathBuf]) -> String {
    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// The declaration of the unit `unit`, among the valid ones: for `remove`.
pub fn declaration_of(ctx: &Context, unit: &str) -> Option<(DeclaredUnit, bool)> {
    let (found, _) = agent_dirs::find(&agent_dirs::dirs(&ctx.host));
    let d = declarations(ctx);
    let (u, _) = d.units.into_iter().find(|(u, _)| u.unit == unit)?;
    let user = found.iter().any(|f| f.path == u.source && f.user);
    Some((u, user))
}

/// `prepare-agent` (a declared unit's `ExecStartPre=`): the declaration `name` planned again,
/// checked to be the one the manager read (`digest`), and its files written for this start.
pub fn prepare(ctx: &Context, name: &str, digest: &str) -> Result<(), Error> {
    agentfile::check_name(name).map_err(Error::Argument)?;
    let d = declarations(ctx);
    let stale = |why: String| {
        Error::Argument(format!(
            "{why}; run `systemctl --user daemon-reload` (the generator reads it again), then start the agent again"
        ))
    };
    let Some((unit, plan)) = d.units.into_iter().find(|(u, _)| u.name == name) else {
        let why = d.errors.iter().find(|e| e.source.file_name().is_some_and(|f| *f == *format!("{name}.agent")));
        return Err(match why {
            Some(e) => stale(format!("{e}")),
            None => stale(format!("{name}.agent is gone or masked since the user manager read it")),
        });
    };
    if unit.digest != digest {
        let e = stale(format!(
            "{} (or the config it is planned with) changed since the user manager read it",
            unit.source.display()
        ));
        // Also where `logs` and `diagnose` look (stderr goes to the journal, which may not run).
        if let Ok(mut log) = crate::io::nofollow::open_appending(&plan.log_file) {
            let _ = std::io::Write::write_all(&mut log, format!("agent-relay-systemd prepare-agent: {e}\n").as_bytes());
        }
        return Err(e);
    }
    let env_text = plan::render_env_file(&plan.secret_env);
    let replay = plan.record_exit_argv.as_ref().is_none_or(|a| !a.iter().any(|w| w.starts_with("--prompt-file=")));
    agent_dirs::write_start_files(&plan, &env_text, replay)
}

/// `run-agent` (a declared unit's `ExecStart=`): the runner's argv executed in this very
/// process (same pid, control group), with the secret file's variables over the unit's
/// environment (as an `EnvironmentFile=` would set them) and its output appended to its log
/// file (0600, never through a link) by our log writer, which times it (`io::log_tee`). Returns only when it could not.
pub fn run_agent(env_file: &Path, log_file: &Path, argv: &[String]) -> Error {
    let vars = match agent_dirs::read_env_file(env_file) {
        Ok(v) => v,
        Err(e) => return Error::Argument(format!("the agent's secret file {e}")),
    };
    let Some(program) = argv.first() else {
        return Error::Argument("run-agent: no command after --".into());
    };
    let log = match crate::io::nofollow::open_appending(log_file) {
        Ok(f) => f,
        Err(e) => {
            return Error::Io { op: "opening the log file (not through a symlink)", path: log_file.into(), source: e }
        }
    };
    let times = crate::model::logtimes::times_file(log_file);
    let words: Vec<std::ffi::OsString> = argv.iter().map(Into::into).collect();
    let e = crate::io::log_tee::exec_teed(log.into(), &times, &words, &vars);
    Error::Io { op: "executing the runner", path: program.into(), source: e }
}
