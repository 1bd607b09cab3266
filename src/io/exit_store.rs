//! The exit-record store: one JSON file per run under
//! `$XDG_STATE_HOME/agent-relay-systemd/exits/<session>/`, written atomically (temp file, fsync,
//! rename, fsync of the directory), so an exit survives the unit being collected.
//!
//! The runner runs as the same user and can write here: a record is only believed about the
//! session whose directory it is in (its `sessionName` and `unit` must match that directory), and
//! no path is ever read from one. Symlinked directories are neither written through nor read.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::io::files::private_dir;
use crate::model::exit::ExitRecord;

/// `<state>/agent-relay-systemd/exits`.
pub fn exits_dir(state_home: &Path) -> PathBuf {
    state_home.join("agent-relay-systemd").join("exits")
}

/// A session name that is one plain path component (what a unit name can carry).
fn plain_session(session: &str) -> bool {
    crate::model::naming::session_of_agent_unit(&crate::model::naming::agent_unit_name(session)) == Some(session)
}

/// Writes one record; never replaces another run's record (names carry time and invocation).
/// Neither `dir` nor the session's directory may be a symlink.
pub fn write(dir: &Path, rec: &ExitRecord) -> Result<PathBuf, Error> {
    if !plain_session(&rec.session_name) {
        return Err(Error::Argument(format!("{:?} is not a session name", rec.session_name)));
    }
    let session_dir = dir.join(&rec.session_name);
    private_dir(dir)?;
    private_dir(&session_dir)?;
    // Only an invocation id goes into the name: never a path.
    let invocation =
        if crate::model::exit::is_invocation_id(&rec.invocation_id) { rec.invocation_id.as_str() } else { "none" };
    let name = format!("{:016}-{invocation}.json", rec.recorded_at);
    let path = session_dir.join(&name);
    let tmp = session_dir.join(format!(".{name}.tmp"));
    let body = serde_json::to_vec_pretty(rec).expect("records serialize");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(Error::io("creating", &tmp))?;
    f.write_all(&body).and_then(|_| f.sync_all()).map_err(Error::io("writing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(Error::io("renaming", &tmp))?;
    if let Ok(d) = std::fs::File::open(&session_dir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

/// Every record of a session, oldest first. Unreadable or half-written files are skipped, and
/// so are records about another session or unit than the directory's, and a symlinked directory.
pub fn read_session(dir: &Path, session: &str) -> Vec<ExitRecord> {
    let mut out: Vec<(String, ExitRecord)> = Vec::new();
    let session_dir = dir.join(session);
    let real_dir = std::fs::symlink_metadata(&session_dir).is_ok_and(|m| m.is_dir());
    if !plain_session(session) || !real_dir {
        return Vec::new();
    }
    let unit = crate::model::naming::agent_unit_name(session);
    let Ok(rd) = std::fs::read_dir(&session_dir) else { return Vec::new() };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let rec: Option<ExitRecord> = std::fs::read(e.path()).ok().and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(rec) = rec.filter(|r| r.session_name == session && r.unit == unit) {
            out.push((name, rec));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.into_iter().map(|(_, r)| r).collect()
}

/// The newest record of a session.
pub fn latest(dir: &Path, session: &str) -> Option<ExitRecord> {
    read_session(dir, session).pop()
}

/// Sessions that have records (directories, not symlinks to them).
pub fn sessions(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<String> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Sessions of agents of tmux prefix `prefix` that have records: another prefix's agents are
/// another orchestrator's.
pub fn sessions_of(dir: &Path, prefix: &str) -> Vec<String> {
    let ours =
        |s: &String| crate::model::naming::session_of_unit(&crate::model::naming::agent_unit_name(s), prefix).is_some();
    sessions(dir).into_iter().filter(ours).collect()
}

/// The newest record of an agent of tmux prefix `prefix` whose session, unit, agent id or spawn
/// request id is `reference`.
pub fn find(dir: &Path, prefix: &str, reference: &str) -> Option<ExitRecord> {
    let sessions = sessions_of(dir, prefix);
    if sessions.iter().any(|s| s == reference) {
        if let Some(r) = latest(dir, reference) {
            return Some(r);
        }
    }
    // A session name ends with the last 8 characters of its spawn request id (else of its agent
    // id): read those sessions first, not every session's records for each lookup.
    let suffix = format!("-{}", crate::model::naming::unique_suffix(reference));
    let (near, far): (Vec<String>, Vec<String>) = sessions.into_iter().partition(|s| s.ends_with(&suffix));
    newest_of(dir, &near, reference).or_else(|| newest_of(dir, &far, reference))
}

fn newest_of(dir: &Path, sessions: &[String], reference: &str) -> Option<ExitRecord> {
    let mut best: Option<ExitRecord> = None;
    for s in sessions {
        if let Some(r) = latest(dir, s) {
            let hit =
                r.unit == reference || r.agent_id == reference || r.spawn_request_id.as_deref() == Some(reference);
            if hit && best.as_ref().is_none_or(|b| r.recorded_at > b.recorded_at) {
                best = Some(r);
            }
        }
    }
    best
}
