//! The library's error type, composed from the modules' own (`#[from]`): a caller tells "no such
//! agent", "not running", "conflict", "ambiguous", "manager unreachable", "timed out" and "invalid input"
//! apart by variant, and a systemd refusal by its D-Bus error name, never by message text.
//! Messages say what to do.

use std::path::PathBuf;
use std::time::Duration;

use crate::io::host::HostError;
use crate::io::runner::RunnerError;
use crate::model::config::ConfigError;
use crate::model::exec::ExecError;
use crate::model::naming::NameTooLong;
use crate::model::request::InvalidRequest;
use crate::model::unitfile::RenderError;

/// systemd's and the bus's error names this tool tells apart (org.freedesktop.systemd1(5)).
pub mod dbus_name {
    pub const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";
    pub const UNIT_EXISTS: &str = "org.freedesktop.systemd1.UnitExists";
    pub const ALREADY_SUBSCRIBED: &str = "org.freedesktop.systemd1.AlreadySubscribed";
    pub const UNKNOWN_OBJECT: &str = "org.freedesktop.DBus.Error.UnknownObject";
    pub const UNKNOWN_INTERFACE: &str = "org.freedesktop.DBus.Error.UnknownInterface";
    pub const UNKNOWN_METHOD: &str = "org.freedesktop.DBus.Error.UnknownMethod";
    pub const UNKNOWN_PROPERTY: &str = "org.freedesktop.DBus.Error.UnknownProperty";
    pub const FILE_NOT_FOUND: &str = "org.freedesktop.DBus.Error.FileNotFound";
}

/// Everything an operation of [`crate::ops::Supervisor`] can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spawn request is malformed: nothing was changed.
    #[error(transparent)]
    Request(#[from] InvalidRequest),
    /// The config file or an override is malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A derived name would not fit.
    #[error(transparent)]
    Name(#[from] NameTooLong),
    /// A command-line argument, or input read for it, is not usable.
    #[error("{0}")]
    Argument(String),
    /// The host cannot do what the request needs (runner, cwd, tmux).
    #[error(transparent)]
    Host(#[from] HostError),
    /// The runner's control URL or its answer is not usable.
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error("{reference:?} is not an agent reference: pass an agent id, session name, unit name or spawn request id")]
    BadReference { reference: String },
    #[error("{name:?} is not a guest session (names start with {prefix}-guest-)")]
    NotAGuest { name: String, prefix: String },
    #[error("no agent matches {reference:?}: check `agent-relay-systemd list`")]
    NotFound { reference: String },
    #[error("agent {agent_id} is not running; {needs}")]
    NotRunning { agent_id: String, needs: &'static str },
    #[error("{0}")]
    Conflict(String),
    /// The reference names more than one agent (their units in `matches`): none is picked.
    #[error("{reference:?} matches {} agents: {}; pass one of these unit names instead", matches.len(), matches.join(", "))]
    Ambiguous { reference: String, matches: Vec<String> },
    #[error("unit {unit} is not managed by agent-relay-systemd (prefix {prefix}); refusing to touch it")]
    NotOurs { unit: String, prefix: String },
    #[error("no systemd user manager reachable ({detail}); check `systemctl --user status`, that XDG_RUNTIME_DIR is set (usually /run/user/$UID), and on a headless host `loginctl enable-linger $USER`")]
    ManagerUnreachable { detail: String },
    #[error("the systemd user manager did not answer {what} within {after:?}; it may be hung (check `systemctl --user status`), retry later")]
    Timeout { what: String, after: Duration },
    /// `wait`'s bound passed while the agent still ran (it is left running).
    #[error("agent unit {unit} was still running after {after:?} (wait --timeout-wait); it was left as it is")]
    WaitTimeout { unit: String, after: Duration },
    /// `spawn --wait-ready`'s bound passed before the runner wrote its runner info (the agent stays).
    #[error("agent unit {unit} started, but its runner wrote no runner info within {after:?} (spawn --ready-timeout); the agent was left running: see `agent-relay-systemd diagnose {unit}`")]
    ReadyTimeout { unit: String, after: Duration },
    /// The spawn gate did not admit the spawn (queue wait over, or `--no-wait`): nothing started.
    #[error("{message}")]
    NotAdmitted { message: String },
    #[error("agent unit {unit} failed to start: {detail}")]
    SpawnFailed { unit: String, detail: String },
    #[error("agent unit {unit} is still running after SIGKILL (pids {pids:?}); it was not stopped, retry or inspect with `systemctl --user status {unit}`")]
    Survived { unit: String, pids: Vec<u32> },
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    /// systemd answered with an error; `name` is its D-Bus error name when it sent one.
    #[error("systemd refused {op}: {message}")]
    Systemd { op: String, name: Option<String>, message: String },
    #[error("{op} failed: {message}")]
    Tmux { op: String, message: String },
    /// A tmux server did not answer within the bound: a wedged server (stopped, hung).
    #[error("{what} did not answer within {after:?}; its tmux server may be wedged: retry, or end it")]
    TmuxTimeout { what: String, after: Duration },
    /// The terminal's tmux session is gone (no pane): there is nothing to type into or resize.
    #[error(
        "terminal session {session} is not running (no tmux pane); `terminal capture` says whether its agent is alive"
    )]
    TerminalGone { session: String },
    /// The manager cannot run a command line exactly (see [`crate::model::exec`]).
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// A unit file could not be rendered from our own property list: a bug of ours, not input.
    #[error("rendering the unit file: {0} (a bug: please report it)")]
    Render(#[from] RenderError),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// The D-Bus error name of a systemd refusal.
    pub fn dbus_name(&self) -> Option<&str> {
        match self {
            Error::Systemd { name, .. } => name.as_deref(),
            _ => None,
        }
    }

    /// systemd no longer knows the unit (or its object) the call was about: it was collected
    /// between a listing and a read, or never existed.
    pub fn is_unit_gone(&self) -> bool {
        use dbus_name::*;
        matches!(
            self.dbus_name(),
            Some(NO_SUCH_UNIT | UNKNOWN_OBJECT | UNKNOWN_INTERFACE | UNKNOWN_METHOD | UNKNOWN_PROPERTY)
        )
    }
}
