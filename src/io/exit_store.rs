//! The exit-record store: one JSON file per run under
//! `$XDG_STATE_HOME/agent-relay-systemd/exits/<session>/`, written atomically (temp file, fsync,
//! rename, fsync of the directory), so an exit survives the unit being collected.

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

/// Writes one record; never replaces another run's record (names carry time and invocation).
pub fn write(dir: &Path, rec: &ExitRecord) -> Result<PathBuf, Error> {
    let session_dir = dir.join(&rec.session_name);
    private_dir(&session_dir)?;
    let invocation = if rec.invocation_id.is_empty() { "none" } else { rec.invocation_id.as_str() };
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

/// Every record of a session, oldest first. Unreadable or half-written files are skipped.
pub fn read_session(dir: &Path, session: &str) -> Vec<ExitRecord> {
    let mut out: Vec<(String, ExitRecord)> = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir.join(session)) else { return Vec::new() };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        if let Some(rec) = std::fs::read(e.path()).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
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

/// Sessions that have records.
pub fn sessions(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<String> =
        rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    out.sort();
    out
}

/// The newest record whose session, unit, agent id or spawn request id is `reference`.
pub fn find(dir: &Path, reference: &str) -> Option<ExitRecord> {
    if let Some(r) = latest(dir, reference) {
        return Some(r);
    }
    // A session name ends with the unique part derived from its spawn request id (else from its
    // agent id): read those sessions first, not every session's records for each lookup.
    let tags = crate::model::naming::unique_suffixes_of(reference).map(|t| format!("-{t}"));
    let (near, far): (Vec<String>, Vec<String>) =
        sessions(dir).into_iter().partition(|s| tags.iter().any(|t| s.ends_with(t)));
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
