//! The library's error type: a caller tells "no such agent", "conflict", "manager unreachable",
//! "timed out" and "invalid input" apart without parsing strings. Messages say what to do.

use std::path::PathBuf;
use std::time::Duration;

/// Everything an operation of [`crate::Supervisor`] can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad request, bad config, bad reference: nothing was changed.
    #[error("{0}")]
    Invalid(String),
    #[error("no agent matches {reference:?}: check `agent-relay-systemd list`")]
    NotFound { reference: String },
    #[error("{0}")]
    Conflict(String),
    #[error("unit {unit} is not managed by agent-relay-systemd (prefix {prefix}); refusing to touch it")]
    NotOurs { unit: String, prefix: String },
    #[error("no systemd user manager reachable ({detail}); check `systemctl --user status`, that XDG_RUNTIME_DIR is set (usually /run/user/$UID), and on a headless host `loginctl enable-linger $USER`")]
    ManagerUnreachable { detail: String },
    #[error("the systemd user manager did not answer {what} within {after:?}; it may be hung (check `systemctl --user status`), retry later")]
    Timeout { what: String, after: Duration },
    #[error("agent unit {unit} failed to start: {detail}")]
    SpawnFailed { unit: String, detail: String },
    #[error("agent unit {unit} is still running after SIGKILL (pids {pids:?}); it was not stopped, retry or inspect with `systemctl --user status {unit}`")]
    Survived { unit: String, pids: Vec<u32> },
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("systemd refused {op}: {message}")]
    Systemd { op: String, message: String },
    #[error("{op} failed: {message}")]
    Tmux { op: String, message: String },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

impl From<crate::model::request::InvalidRequest> for Error {
    fn from(e: crate::model::request::InvalidRequest) -> Self {
        Error::Invalid(e.0)
    }
}

impl From<crate::model::config::ConfigError> for Error {
    fn from(e: crate::model::config::ConfigError) -> Self {
        Error::Invalid(e.to_string())
    }
}

impl From<crate::model::naming::NameTooLong> for Error {
    fn from(e: crate::model::naming::NameTooLong) -> Self {
        Error::Invalid(e.to_string())
    }
}
