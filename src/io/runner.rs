//! The runner's side of a live agent: its runner-info file and its loopback control URL
//! (`GET /terminal/attach-spec`, bounded in time and size as the seed's 5 s). Both are the
//! runner's to write, so both are untrusted input.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use crate::model::guest::MAX_SPEC_BYTES;

/// Bound on the runner's control URL, as the seed.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the runner could not give an attach spec.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("runner control URL is unavailable; restart the agent to enable terminal attach")]
    NoControlUrl,
    #[error("runner control URL {0:?} is not http://127.0.0.1:<port>; refusing")]
    NotLoopback(String),
    #[error("{0}")]
    Refused(String),
    #[error("the runner did not answer {url} within {ATTACH_TIMEOUT:?}")]
    Timeout { url: String },
    #[error("cannot reach the runner at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{0}")]
    BadSpec(String),
}

/// Largest runner-info file read (a runner writes a few hundred bytes).
pub const MAX_INFO_BYTES: u64 = 64 * 1024;
/// Longest tmux session name taken from a runner-info file.
const MAX_TMUX_SESSION: usize = 256;

/// The runner-info file as a JSON object, read within bounds: a regular file only (a symlink is
/// not followed, a FIFO or device not waited on), at most [`MAX_INFO_BYTES`]; else `None`.
pub fn read_info(path: &Path) -> Option<serde_json::Map<String, serde_json::Value>> {
    use nix::fcntl::OFlag;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_INFO_BYTES {
        return None;
    }
    let mut body = Vec::new();
    f.take(MAX_INFO_BYTES + 1).read_to_end(&mut body).ok()?;
    if body.len() as u64 > MAX_INFO_BYTES {
        return None;
    }
    match serde_json::from_slice(&body).ok()? {
        serde_json::Value::Object(m) => Some(m),
        _ => None,
    }
}

/// The control URL the runner wrote into its runner-info file.
pub fn control_url(info_path: &Path) -> Result<String, RunnerError> {
    let info = read_info(info_path).ok_or(RunnerError::NoControlUrl)?;
    Ok(info.get("controlUrl").and_then(|v| v.as_str()).unwrap_or_default().to_string())
}

/// The tmux session the runner of `agent_id` names in its runner-info file, if it names one (a
/// file that another agent's runner wrote names none for this one).
pub fn tmux_session(info_path: &Path, agent_id: &str) -> Option<String> {
    let info = read_info(info_path)?;
    if matches!(info.get("agentId"), Some(serde_json::Value::String(id)) if id != agent_id) {
        return None;
    }
    let name = info.get("tmuxSession")?.as_str()?;
    (!name.is_empty() && name.len() <= MAX_TMUX_SESSION && !name.chars().any(char::is_control))
        .then(|| name.to_string())
}

/// `GET <controlUrl>/terminal/attach-spec`, loopback only, bounded in time and size.
pub fn fetch_attach_spec(control_url: &str) -> Result<Vec<u8>, RunnerError> {
    let port = control_url
        .strip_prefix("http://127.0.0.1:")
        .map(|p| p.trim_end_matches('/'))
        .filter(|p| p.parse::<u16>().is_ok())
        .ok_or_else(|| RunnerError::NotLoopback(control_url.to_string()))?;
    let agent = ureq::AgentBuilder::new().timeout(ATTACH_TIMEOUT).redirects(0).build();
    let url = format!("http://127.0.0.1:{port}/terminal/attach-spec");
    let resp = match agent.get(&url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let text = r.into_string().unwrap_or_default();
            let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            return Err(RunnerError::Refused(
                body["error"].as_str().map(str::to_string).unwrap_or(format!("runner attach-spec failed with {code}")),
            ));
        }
        Err(ureq::Error::Transport(t)) if is_timeout(&t) => return Err(RunnerError::Timeout { url }),
        Err(e) => return Err(RunnerError::Unreachable { url, detail: e.to_string() }),
    };
    let mut body = Vec::new();
    resp.into_reader()
        .take(MAX_SPEC_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| RunnerError::BadSpec(format!("reading the runner's attach-spec: {e}")))?;
    Ok(body)
}

/// A transport error that is the agent's timeout firing (an IO error of kind TimedOut or
/// WouldBlock underneath, as ureq reports a read or connect timeout).
fn is_timeout(t: &ureq::Transport) -> bool {
    use std::error::Error as _;
    let mut source = t.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(io.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock);
        }
        source = e.source();
    }
    false
}
