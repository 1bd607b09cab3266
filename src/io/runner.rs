//! The runner's side of a live agent: its runner-info file and its loopback control URL
//! (`GET /terminal/attach-spec`, bounded in time and size as the seed's 5 s). Both are the
//! runner's to write, so both are untrusted input.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use crate::model::guest::MAX_SPEC_BYTES;

/// Bound on the runner's control URL, as the seed.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest runner-info file read (a runner writes a few hundred bytes).
pub const MAX_RUNNER_INFO_BYTES: u64 = 64 * 1024;
/// Longest runner error message shown.
pub const MAX_RUNNER_ERROR_CHARS: usize = 200;

/// Why the runner could not give an attach spec.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("runner control URL is unavailable; restart the agent to enable terminal attach")]
    NoControlUrl,
    #[error("runner info {path} is not usable: {why}; restart the agent to enable terminal attach")]
    BadInfo { path: String, why: String },
    #[error("runner control URL {0:?} is not http://127.0.0.1:<port>; refusing")]
    NotLoopback(String),
    /// The runner's own `error` text, made one short line ([`one_line`]).
    #[error("the runner refused: {0}")]
    Refused(String),
    #[error("the runner did not answer {url} within {ATTACH_TIMEOUT:?}")]
    Timeout { url: String },
    #[error("cannot reach the runner at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{0}")]
    BadSpec(String),
    /// The runner names no terminal of its own (no runner info, or no `tmuxSession` in it).
    #[error("agent {agent_id} has no terminal of its own: its runner names no tmux session in {path}")]
    NoTerminal { agent_id: String, path: String },
    /// The terminal the runner names is refused (a name with tmux target syntax, a socket
    /// outside our directory, a server that is not the agent's).
    #[error("the terminal named in runner info {path} is refused: {why}")]
    BadTerminal { path: String, why: String },
}

/// The agent's own terminal as its runner names it: a session and its server's socket name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerTerminal {
    pub session: String,
    /// A name in `socket_dir` (`tmux -L`).
    pub socket: String,
}

/// Longest tmux session name taken from a runner-info file.
const MAX_TMUX_SESSION: usize = 256;

/// The runner-info file as a JSON object: a regular file (not a link, FIFO or device) of at most
/// [`MAX_RUNNER_INFO_BYTES`]. `NoControlUrl` when it is missing or not a JSON object, `BadInfo`
/// (naming what the path is) when it is not such a file.
pub fn read_info(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>, RunnerError> {
    let bytes = match crate::io::nofollow::read_regular(path, MAX_RUNNER_INFO_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(RunnerError::NoControlUrl),
        Err(e) => return Err(RunnerError::BadInfo { path: path.display().to_string(), why: e.to_string() }),
    };
    match serde_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        _ => Err(RunnerError::NoControlUrl),
    }
}

/// The control URL the runner wrote into its runner-info file.
pub fn control_url(info_path: &Path) -> Result<String, RunnerError> {
    let info = read_info(info_path)?;
    Ok(info.get("controlUrl").and_then(|v| v.as_str()).unwrap_or_default().to_string())
}

/// Whether the runner-info file is there and written by the runner of `agent_id`.
pub fn names_agent(info_path: &Path, agent_id: &str) -> bool {
    read_info(info_path).is_ok_and(|info| info.get("agentId").and_then(|a| a.as_str()) == Some(agent_id))
}

/// The tmux session the runner of `agent_id` names in its runner-info file, if it names one (a
/// file that another agent's runner wrote names none for this one).
pub fn tmux_session(info_path: &Path, agent_id: &str) -> Option<String> {
    let info = read_info(info_path).ok()?;
    if matches!(info.get("agentId"), Some(serde_json::Value::String(id)) if id != agent_id) {
        return None;
    }
    let name = info.get("tmuxSession")?.as_str()?;
    (!name.is_empty() && name.len() <= MAX_TMUX_SESSION && !name.chars().any(char::is_control))
        .then(|| name.to_string())
}

/// The tmux session and socket the runner of `agent_id` names in its runner-info file
/// (`tmuxSession`, `tmuxSocket`), both checked ([`crate::model::terminal`]): the session a
/// plain name, the socket a name or path in `socket_dir`. A file that does not name this agent
/// names no terminal of it.
pub fn terminal(info_path: &Path, agent_id: &str, socket_dir: &Path) -> Result<RunnerTerminal, RunnerError> {
    let path = info_path.display().to_string();
    let none = || RunnerError::NoTerminal { agent_id: agent_id.to_string(), path: path.clone() };
    let bad = |why: String| RunnerError::BadTerminal { path: path.clone(), why };
    let info = match read_info(info_path) {
        Ok(info) => info,
        Err(RunnerError::NoControlUrl) => return Err(none()),
        Err(e) => return Err(e),
    };
    match info.get("agentId") {
        Some(serde_json::Value::String(id)) if id == agent_id => {}
        _ => return Err(bad(format!("it does not name agent {agent_id}"))),
    }
    let session = match info.get("tmuxSession") {
        None | Some(serde_json::Value::Null) => return Err(none()),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("tmuxSession is not a string".into())),
    };
    crate::model::terminal::check_session_name(&session).map_err(&bad)?;
    let socket = match info.get("tmuxSocket") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(bad("tmuxSocket is not a string".into())),
    };
    let socket = crate::model::terminal::socket_name(socket, socket_dir).map_err(&bad)?;
    Ok(RunnerTerminal { session, socket })
}

/// A runner's text as one line of ours, at most [`MAX_RUNNER_ERROR_CHARS`] characters.
pub fn one_line(text: &str) -> String {
    crate::model::logtext::one_line(text, MAX_RUNNER_ERROR_CHARS)
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
            let mut text = Vec::new();
            let _ = r.into_reader().take(MAX_SPEC_BYTES as u64).read_to_end(&mut text);
            let body: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
            let said = body["error"].as_str().map(one_line).filter(|t| !t.is_empty());
            return Err(RunnerError::Refused(said.unwrap_or(format!("runner attach-spec failed with {code}"))));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A one-shot HTTP server on 127.0.0.1 answering `status` with `body`.
    fn serve_once(status: &str, body: String) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let status = status.to_string();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut head = [0u8; 4096];
            let _ = s.read(&mut head);
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
        format!("http://127.0.0.1:{port}")
    }

    #[test]
    fn a_runner_error_is_one_sanitised_short_line() {
        let said = format!("bad\nthing\r\n\x1b[31mred\x1b[0m \x1b]0;title\x07\u{202e}gnirts {}", "y".repeat(500));
        let url = serve_once("409 Conflict", serde_json::json!({ "error": said }).to_string());
        let err = fetch_attach_spec(&url).unwrap_err();
        assert!(matches!(err, RunnerError::Refused(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with("the runner refused: bad thing red gnirts yyy"), "{text:?}");
        assert!(!text.chars().any(|c| c.is_control() || c == '\u{202e}'), "{text:?}");
        assert!(text.chars().count() <= MAX_RUNNER_ERROR_CHARS + 30, "{} chars", text.chars().count());
        // No usable text: the status.
        let url = serve_once("500 Internal Server Error", serde_json::json!({ "error": "\x1b[2J" }).to_string());
        assert_eq!(
            fetch_attach_spec(&url).unwrap_err().to_string(),
            "the runner refused: runner attach-spec failed with 500"
        );
    }

    #[test]
    fn runner_info_must_be_a_small_regular_file() {
        let d = tempfile::tempdir().unwrap();
        let info = d.path().join("s.json");
        assert!(matches!(control_url(&info), Err(RunnerError::NoControlUrl)));
        std::os::unix::fs::symlink("/dev/zero", &info).unwrap();
        let err = control_url(&info).unwrap_err().to_string();
        assert!(err.contains("runner info") && err.contains("symbolic link"), "{err}");
        std::fs::remove_file(&info).unwrap();
        std::fs::write(&info, vec![b' '; MAX_RUNNER_INFO_BYTES as usize + 1]).unwrap();
        assert!(control_url(&info).unwrap_err().to_string().contains("larger than"));
        std::fs::write(&info, r#"{"controlUrl":"http://127.0.0.1:9"}"#).unwrap();
        assert_eq!(control_url(&info).unwrap(), "http://127.0.0.1:9");
    }

    #[test]
    fn the_terminal_a_runner_names_is_checked() {
        let d = tempfile::tempdir().unwrap();
        let (info, dir) = (d.path().join("s.json"), Path::new("/tmp/tmux-7"));
        let named = |v: serde_json::Value| {
            std::fs::write(&info, v.to_string()).unwrap();
            terminal(&info, "a-1", dir)
        };
        assert!(matches!(terminal(&info, "a-1", dir), Err(RunnerError::NoTerminal { .. })), "no file");
        let t = named(serde_json::json!({"agentId": "a-1", "tmuxSession": "ar-x", "tmuxSocket": "agent-relay-1"}));
        assert_eq!(t.unwrap(), RunnerTerminal { session: "ar-x".into(), socket: "agent-relay-1".into() });
        let t = named(serde_json::json!({"agentId": "a-1", "tmuxSession": "ar-x"})).unwrap();
        assert_eq!(t.socket, "default");
        assert!(matches!(named(serde_json::json!({"agentId": "a-1"})), Err(RunnerError::NoTerminal { .. })));
        for bad in [
            serde_json::json!({"agentId": "a-2", "tmuxSession": "ar-x"}),
            serde_json::json!({"tmuxSession": "ar-x"}),
            serde_json::json!({"agentId": "a-1", "tmuxSession": "ar-x:0.1"}),
            serde_json::json!({"agentId": "a-1", "tmuxSession": 7}),
            serde_json::json!({"agentId": "a-1", "tmuxSession": "ar-x", "tmuxSocket": "/tmp/s"}),
            serde_json::json!({"agentId": "a-1", "tmuxSession": "ar-x", "tmuxSocket": "../tmux-8/s"}),
            serde_json::json!({"agentId": "a-1", "tmuxSession": "ar-x", "tmuxSocket": ["s"]}),
        ] {
            let err = named(bad.clone()).unwrap_err();
            assert!(matches!(err, RunnerError::BadTerminal { .. }), "{bad}: {err:?}");
        }
    }
}
