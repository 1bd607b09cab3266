//! The command line, as data: clap definitions only (the binary runs them). Kept in the library
//! so that the man page and shell completions are generated from the same definition.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure (the runner could not start, systemd refused a call, a file could not be written)
  2  invalid input: bad arguments, spawn request, config file or agent reference
  3  no such agent
  4  conflict: the unit name belongs to another agent, the unit is not ours, or the reference
     matches more than one agent (ambiguous: the JSON error lists their units in `matches`)
  5  no systemd user manager reachable
  6  the user manager (or a terminal's tmux server) did not answer in time, or `wait
     --timeout-wait` or `spawn --ready-timeout` passed first
  7  the agent survived SIGKILL (not stopped)
  8  doctor: a required check failed (its findings say which and how to fix it)
  9  spawn not admitted: no spawn slot or host headroom within spawnAdmissionMaxWaitMs (or at
     once with --no-wait); nothing was started";

pub const EXAMPLES: &str = "\
Examples:
  agent-relay-systemd doctor
  echo '{\"provider\":\"claude\",\"cwd\":\"~/projects/app\"}' | agent-relay-systemd spawn -o json
  agent-relay-systemd list
  systemctl --user status agent_relay.slice";

/// Supervise Agent Relay agents as transient systemd user units.
#[derive(Debug, Parser)]
#[command(
    name = "agent-relay-systemd",
    version,
    about,
    after_help = EXAMPLES,
    after_long_help = format!("{EXAMPLES}\n\n{EXIT_CODES}")
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Orchestrator config file; it must exist [default: $AGENT_RELAY_ORCHESTRATOR_CONFIG, else
    /// ~/.agent-relay/orchestrator.json; either missing means defaults]
    // Not `env = …`: clap would make the variable look like the flag, and a missing file it
    // names means defaults (the orchestrator's loader), not an error (`config_path`).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Output format: `json` for programs (stdout holds only JSON), `text` for people, `wide`: text
    /// with more columns (`list`: memory, CPU, tasks, restarts, durable, start time)
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Bound on every call to the systemd user manager, in seconds
    #[arg(long, global = true, env = "AGENT_RELAY_SYSTEMD_TIMEOUT", default_value_t = 10.0, value_name = "SECONDS")]
    pub timeout: f64,
}

#[derive(Debug, Subcommand)]
pub enum GuestCommand {
    /// Start a guest terminal from the agent's runner attach spec (its TTL and agent bound it)
    #[command(after_help = "Example:\n  agent-relay-systemd guest create req-1 -o json")]
    Create {
        /// Agent id, session name, unit name or spawn request id of a live agent
        agent: String,
    },
    /// Attach this terminal to a guest's tmux session (for a person at a terminal; detach with the
    /// tmux prefix key, then d)
    #[command(
        after_help = "The socket is the guest's own, derived from its name. stdin and stdout must be a terminal;
programs use `terminal capture|send` instead.
Example:
  agent-relay-systemd guest attach ar-guest-claude-…"
    )]
    Attach {
        /// The guest's name (`<prefix>-guest-…`)
        guest: String,
    },
    /// List guest terminals, from their units
    #[command(after_help = "Example:\n  agent-relay-systemd guest list")]
    List,
    /// Stop a guest terminal (guest names only)
    #[command(
        after_help = "Example:\n  agent-relay-systemd guest stop ar-guest-claude-host-claude-x-1a2b3c4d-5e6f7a8b"
    )]
    Stop {
        /// The guest's name (`<prefix>-guest-…`)
        guest: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TerminalCommand {
    /// Print a terminal's pane, read consistently with its cursor (JSON: size, cursor, running, agentAlive)
    #[command(
        after_help = "TARGET is a guest name, or an agent: then its own tmux session, as its runner names it in its\nrunner info (tmuxSession, tmuxSocket). `running` says whether the pane exists, `agentAlive`\nwhether the unit's main process lives; a pane that is gone is `running: false`, exit 0.\nExample:\n  agent-relay-systemd terminal capture req-1 -o json"
    )]
    Capture {
        /// A guest name, or an agent id, session name, unit name or spawn request id
        target: String,
    },
    /// Type into a terminal: text; \r or \n Enter (\r\n one Enter), \t Tab, \x03 C-c, arrows as escape sequences
    #[command(
        after_help = "Other control characters are dropped (counted in `dropped`). At most 4096 UTF-16 code units\n(a character beyond the BMP counts 2): more is exit 2 and nothing is typed.\nExample:\n  printf 'ls\\r' | agent-relay-systemd terminal send req-1 -"
    )]
    Send {
        /// A guest name, or an agent id, session name, unit name or spawn request id
        target: String,
        /// The input (at most 4096 UTF-16 code units); `-` reads it from stdin
        input: String,
    },
    /// Resize a terminal's window (cols 10-500, rows 5-200); answers the size tmux reports after
    #[command(
        after_help = "Out of bounds is exit 2, nothing resized.\nExample:\n  agent-relay-systemd terminal resize req-1 --cols 120 --rows 40"
    )]
    Resize {
        /// A guest name, or an agent id, session name, unit name or spawn request id
        target: String,
        /// Columns, 10-500
        #[arg(long, value_name = "N")]
        cols: u16,
        /// Rows, 5-200
        #[arg(long, value_name = "M")]
        rows: u16,
    },
}

/// What `complete-names` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NameKind {
    /// Agents' session names and spawn request ids.
    Agents,
    /// Guests' names.
    Guests,
    /// Both: what `terminal …` takes.
    Terminals,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
    Wide,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start an agent as a transient user unit from a spawn request (JSON)
    #[command(
        after_help = "With --persist the agent is durable: its unit file is written to ~/.config/systemd/user\n(XDG_CONFIG_HOME), enabled (WantedBy=default.target) and started, so it comes back when the\nuser manager starts again (at boot with `loginctl enable-linger`). `remove` deletes it.\nExample:\n  echo '{\"provider\":\"claude\",\"cwd\":\"~/projects/app\",\"spawnRequestId\":\"req-1\"}' | agent-relay-systemd spawn -o json"
    )]
    Spawn {
        /// Read the spawn request from FILE instead of stdin
        #[arg(long, value_name = "FILE")]
        spec: Option<PathBuf>,
        /// Make the agent durable: a unit file, enabled and started, instead of a transient unit
        #[arg(long)]
        persist: bool,
        /// Return only once the runner has written its runner info (~/.agent-relay/runners/SESSION.json)
        #[arg(long)]
        wait_ready: bool,
        /// With --wait-ready: give up after SECONDS (exit 6, kind timeout; the agent stays) [default: 30]
        #[arg(long, value_name = "SECONDS", requires = "wait_ready")]
        ready_timeout: Option<f64>,
        /// Fail at once (exit 9, kind not-admitted) instead of queueing when no spawn slot or host
        /// headroom is free
        #[arg(long)]
        no_wait: bool,
    },
    /// Print the unit file `spawn --persist` would write for a spawn request, or with --dry-run
    /// what the generator writes for the .agent files; changes nothing
    #[command(
        after_help = "The secret EnvironmentFile= is only named, never printed. Without an agentId in the request,\nthe agent id and the files' directory are fresh on every run, as for a spawn.\nWith --dry-run: the units agent-relay-generator writes at each daemon-reload for the .agent\nfiles in ~/.config/agent-relay/agents (XDG_CONFIG_HOME) and /etc/agent-relay/agents, their links,\nand each file it skips with why (on stderr); exit 2 when any file is invalid.\nExamples:\n  echo '{\"provider\":\"claude\",\"cwd\":\"~/projects/app\",\"spawnRequestId\":\"req-1\"}' | agent-relay-systemd generate\n  agent-relay-systemd generate --dry-run reviewer"
    )]
    Generate {
        /// Read the spawn request from FILE instead of stdin
        #[arg(long, value_name = "FILE", conflicts_with = "dry_run")]
        spec: Option<PathBuf>,
        /// Print what the generator writes for the .agent files (and which it skips), instead
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: only the agent declared by NAME.agent
        #[arg(value_name = "NAME", requires = "dry_run")]
        name: Option<String>,
    },
    /// List agents, from unit properties alone; filters narrow the list
    #[command(
        after_help = "A filter flag may be given more than once: its values are alternatives. Different filter\nflags must all match.\nExample:\n  agent-relay-systemd list --state alive --provider claude --tag review --no-headers"
    )]
    List {
        /// Only agents in STATE: our verdict (alive, dead, unknown) or the unit's ActiveState
        #[arg(long, value_name = "STATE", value_parser = clap::builder::PossibleValuesParser::new(crate::model::filter::STATES))]
        state: Vec<String>,
        /// Only agents of provider P
        #[arg(long, value_name = "P")]
        provider: Vec<String>,
        /// Only agents labelled L (exactly)
        #[arg(long, value_name = "L")]
        label: Vec<String>,
        /// Only agents with tag T among their request's tags
        #[arg(long, value_name = "T")]
        tag: Vec<String>,
        /// Only durable agents (spawn --persist)
        #[arg(long)]
        durable: bool,
        /// Text output without the header line (one agent a line; nothing when none)
        #[arg(long)]
        no_headers: bool,
        /// Also agents whose unit is gone but whose exit is recorded (newest record of each; `reap`
        /// prunes records older than exitRetentionDays)
        #[arg(long)]
        all: bool,
    },
    /// Show one agent by agent id, session name, unit name or spawn request id
    #[command(after_help = "Example:\n  agent-relay-systemd show req-1")]
    Show {
        /// Agent id, session name, unit name or spawn request id
        agent: String,
    },
    /// Stop an agent: graceful, then SIGKILL to its whole control group
    #[command(
        after_help = "A durable agent (spawn --persist) only stops: it stays enabled and starts again with the user\nmanager; `remove` deletes it.\nExample:\n  agent-relay-systemd stop ar-claude-session-req-1 --timeout-stop 5"
    )]
    Stop {
        /// Agent id, session name, unit name or spawn request id
        agent: String,
        /// Seconds to wait for a graceful stop before SIGKILL (0 or less: the default 10; at most 60)
        #[arg(long, default_value_t = 10.0, value_name = "SECONDS", allow_negative_numbers = true)]
        timeout_stop: f64,
    },
    /// One overview: agents by state, queued spawns, exited agents on record, the manager and the reaper timer
    #[command(after_help = "Example:\n  agent-relay-systemd status\n  agent-relay-systemd status -o json")]
    Status,
    /// A refreshing view of the running agents' memory, CPU and tasks, most memory first
    #[command(
        after_help = "Figures come from systemd's accounting where the manager has it (cgroup v2 with delegation),\nelse summed over the unit's processes from /proc; SRC says which. CPU% is the rate since the\nprevious refresh (the first: the average since each run started). With -o json: one JSON\ndocument per refresh, one per line.\nExample:\n  agent-relay-systemd top --interval 5\n  agent-relay-systemd top --iterations 1 -o json"
    )]
    Top {
        /// Seconds between refreshes
        #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
        interval: f64,
        /// Stop after N refreshes [default: until interrupted]
        #[arg(long, value_name = "N")]
        iterations: Option<u64>,
    },
    /// Swap a running agent for a new generation: the successor registers and settles first
    #[command(
        after_help = "The successor starts from the agent's own spawn request (its prompt only with\nreplayPromptOnRestart), or from --spec; it keeps the agent id and runs under a spawnRequestId of\nits own. Only once its runner info names its pid and it is still alive after --settle-ms is the\npredecessor stopped (a durable one removed). If the successor fails, it is stopped, the\npredecessor keeps running and the answer says why (exit 1).\nExample:\n  agent-relay-systemd restart req-1 --spawn-request-id req-1-r2 -o json"
    )]
    Restart {
        /// Agent id, session name, unit name or spawn request id
        agent: String,
        /// The successor's spawn request from FILE (`-`: stdin) instead of the agent's own
        #[arg(long, value_name = "FILE")]
        spec: Option<PathBuf>,
        /// The successor's spawnRequestId [default: the --spec request's, else restart-<uuid>]
        #[arg(long, value_name = "ID")]
        spawn_request_id: Option<String>,
        /// Seconds the successor has to register (runner info naming its pid)
        #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
        registration_timeout: f64,
        /// Milliseconds the successor must stay alive after registering
        #[arg(long, default_value_t = 300, value_name = "MS")]
        settle_ms: u64,
        /// Seconds to wait for the predecessor's graceful stop before SIGKILL (0 or less: 10; at most 60)
        #[arg(long, default_value_t = 10.0, value_name = "SECONDS", allow_negative_numbers = true)]
        timeout_stop: f64,
    },
    /// Start a stopped durable agent (spawn --persist) again; a live one is answered as it is
    #[command(
        after_help = "Answers as `spawn` does: `created` is true when this call started the agent, false when it was\nalready running. A transient agent cannot be started again (exit 2): spawn it anew.\nExample:\n  agent-relay-systemd start req-1 -o json"
    )]
    Start {
        /// Agent id, session name, unit name or spawn request id
        agent: String,
    },
    /// Stop an agent and, when durable, disable it and delete its unit file (or .agent file) and secret files
    #[command(
        after_help = "For a transient agent this is a stop. A removed durable agent does not come back. For a\ndeclared agent (NAME.agent in ~/.config/agent-relay/agents), its file is deleted and the manager\nreloaded; one an administrator declared in /etc/agent-relay/agents is refused (mask it instead).\nExample:\n  agent-relay-systemd remove req-1 -o json"
    )]
    Remove {
        /// Agent id, session name, unit name or spawn request id
        agent: String,
        /// Seconds to wait for a graceful stop before SIGKILL (0 or less: the default 10; at most 60)
        #[arg(long, default_value_t = 10.0, value_name = "SECONDS", allow_negative_numbers = true)]
        timeout_stop: f64,
    },
    /// How an agent ended (or is doing): exit code, signal, OOM, crash loop, log tail, lastError
    #[command(
        after_help = "Works for live, failed and collected agents (from the exit records).\nExample:\n  agent-relay-systemd diagnose req-1 -o json"
    )]
    Diagnose {
        /// Agent id, session name, unit name or spawn request id
        agent: String,
    },
    /// Wait until an agent has ended, then say how, as `diagnose` does
    #[command(
        after_help = "Ended: its unit inactive or failed, or collected (then from the exit records); an agent that\nsystemd restarts is waited through its restarts. Exits 0 once the agent has ended, whatever its\nexit code (read it from `exit`); 6 (kind `timeout`) when --timeout-wait passes first, the agent\nleft running. Already ended: answers at once.\nExample:\n  agent-relay-systemd wait req-1 --timeout-wait 600 -o json"
    )]
    Wait {
        /// Agent id, session name, unit name or spawn request id
        agent: String,
        /// Give up after SECONDS (default: wait as long as it runs)
        #[arg(long, value_name = "SECONDS")]
        timeout_wait: Option<f64>,
    },
    /// Show the last lines of an agent's log, sanitised of terminal escapes
    #[command(after_help = "Example:\n  agent-relay-systemd logs req-1 -n 50 --follow")]
    Logs {
        /// Agent id, session name, unit name or spawn request id
        agent: String,
        /// Number of lines, the newest (1-1000; default 100, or every line with --since)
        #[arg(short = 'n', long, value_parser = clap::value_parser!(u16).range(1..=1000))]
        lines: Option<u16>,
        /// Do not strip terminal escape sequences
        #[arg(long)]
        raw: bool,
        /// Keep printing new lines as they are written, until the agent ends
        #[arg(short, long)]
        follow: bool,
        /// Only lines written since WHEN: a time ago ("10m", "2h 30m", "1day") or a UTC time
        /// ("2026-11-30T05:40:00Z", "2026-11-30 05:40", "2026-11-30")
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Begin each line with the time it was written (UTC, to within 10 ms)
        #[arg(short = 't', long)]
        timestamps: bool,
    },
    /// Stream agent events as NDJSON (one object per line), driven by D-Bus signals
    #[command(
        after_help = "Events: at start one snapshot per agent, then ready (agents that already ran are never\nannounced as spawned or started); then spawned, started, exited (with the exit), restarting,\nstopped, removed; disconnected, reconnected and lagged about the stream itself.\nEvery line has `schemaVersion`, `seq` (1 for the first line of this watch, one more for each\nline after: a gap means lines were lost on the way), `type` and `time` (ms since the epoch).\nAn event's `agent` is the agent as it is after the change it reports.\nExample:\n  agent-relay-systemd watch -o json"
    )]
    Watch {
        /// Events held for a slow reader; beyond that they are dropped and a `lagged` event says
        /// how many (run `list` to resync)
        #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        queue: u32,
        /// Give up (exit 5, after a last `disconnected` event saying so) once the user manager has
        /// been unreachable for SECONDS without a break; 0: retry for ever
        #[arg(long, default_value_t = 300.0, value_name = "SECONDS")]
        give_up_after: f64,
    },
    /// Send a signal to an agent's main process or its whole control group
    #[command(after_help = "Example:\n  agent-relay-systemd kill req-1 --signal INT --whom main")]
    Kill {
        /// Agent id, session name, unit name or spawn request id
        agent: String,
        /// Signal name or number
        #[arg(short, long, default_value = "TERM")]
        signal: String,
        /// `main` (the runner) or `all` (every process of the agent)
        #[arg(long, default_value = "all", value_parser = ["main", "all"])]
        whom: String,
    },
    /// Interactive guest terminals of live agents (tmux, one transient unit each)
    #[command(
        subcommand,
        after_help = "Examples:\n  agent-relay-systemd guest create req-1\n  agent-relay-systemd guest list -o json"
    )]
    Guest(GuestCommand),
    /// Read, type into or resize a guest terminal or an agent's own tmux session
    #[command(
        subcommand,
        after_help = "Examples:\n  agent-relay-systemd terminal capture ar-guest-claude-…\n  agent-relay-systemd terminal send req-1 $'ls\\r'\n  agent-relay-systemd terminal resize req-1 --cols 120 --rows 40"
    )]
    Terminal(TerminalCommand),
    /// Remove leftovers of gone agents, reset recorded failures, prune old exit records, end stray guest servers
    #[command(
        after_help = "Run by agent-relay-reap.timer. Never touches a loaded agent unit, the secret files a durable\nagent's unit file names (even while stopped or disabled), a guest whose unit exists, nor files\nyounger than 60 s.\nExample:\n  agent-relay-systemd reap --dry-run -o json"
    )]
    Reap {
        /// Say what would be done, do nothing
        #[arg(long)]
        dry_run: bool,
        /// Keep exit records this many days [default: the config's exitRetentionDays, else 7]
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650))]
        retention_days: Option<u32>,
    },
    /// Run CMD with a private, throwaway `systemd --user`, then tear it down
    #[command(
        after_help = "Example:\n  agent-relay-systemd sandbox -- sh -c 'agent-relay-systemd list; systemctl --user status'"
    )]
    Sandbox {
        /// The command and its arguments
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Check what this host needs and print each finding with its fix
    #[command(
        after_help = "Checks the user manager, systemd's version, XDG_RUNTIME_DIR, the session bus, linger, cgroup\ndelegation, the reaper timer, the slice, tmux, the config and the runner. Warnings exit 0; a\nfailed required check exits 5 (no manager), 6 (manager hung) or 8 (anything else).\nExample:\n  agent-relay-systemd doctor\n  agent-relay-systemd doctor -o json --timeout 3"
    )]
    Doctor,
    /// Print the man page (roff), generated from this command line definition
    #[command(hide = true)]
    Manpage,
    /// Print a completion script for SHELL, generated from this command line definition
    #[command(hide = true)]
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print the names a completion offers (run by the bash completion, not by people): quiet and
    /// bounded, nothing on failure
    #[command(hide = true)]
    CompleteNames {
        /// What to name
        #[arg(value_enum)]
        kind: NameKind,
    },
    /// Run a guest's command from its launch file (run by the guest's tmux pane, not by people)
    #[command(hide = true)]
    GuestExec {
        /// The launch file `guest create` wrote
        file: PathBuf,
    },
    /// Record how a run ended (run by the agent units' ExecStopPost=, not by people)
    #[command(hide = true)]
    RecordExit {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        unit: String,
        #[arg(long)]
        session: String,
        #[arg(long)]
        agent_id: String,
        #[arg(long, default_value = "")]
        provider: String,
        #[arg(long, default_value = "")]
        log_file: String,
        #[arg(long)]
        spawn_request_id: Option<String>,
        /// The run's prompt file, emptied once the run is over (a restart does not replay it)
        #[arg(long)]
        prompt_file: Option<PathBuf>,
    },
    /// Write a declared agent's secret and payload files for a start (run by its unit's ExecStartPre=, not by people)
    #[command(hide = true)]
    PrepareAgent {
        /// The declaration's name (NAME.agent)
        #[arg(long)]
        name: String,
        /// The digest of the unit the generator wrote for it
        #[arg(long)]
        digest: String,
    },
    /// Run a declared agent's runner with its secret file's variables (its unit's ExecStart=, not by people)
    #[command(hide = true)]
    RunAgent {
        /// The secret file prepare-agent wrote
        #[arg(long)]
        env_file: PathBuf,
        /// The agent's log file, which the runner's output is appended to
        #[arg(long)]
        log_file: PathBuf,
        /// The runner's argv, argv[0] its absolute path
        #[arg(required = true, last = true, value_name = "WORD")]
        argv: Vec<String>,
    },
    /// Run the runner with its output through the log writer that times it (an agent unit's ExecStart=, not by people)
    #[command(hide = true)]
    LogTee {
        /// The log's times file (the log is this process's standard output)
        #[arg(long)]
        times: PathBuf,
        /// The runner's argv, argv[0] its absolute path
        #[arg(required = true, last = true, value_name = "WORD")]
        argv: Vec<String>,
    },
    /// Run a percent-encoded command line in place of this process (run by agent units whose words systemd < 254 cannot keep, not by people)
    #[command(hide = true)]
    Exec {
        /// The program, then its argv (argv[0] first), each word percent-encoded (`%24` is `$`, `%3B` is `;`, `%25` is `%`)
        #[arg(required = true, last = true, value_name = "WORD")]
        words: Vec<String>,
    },
}

/// Shells a completion script is generated for (the ones the packages install one for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}
