//! The exit-record store: one JSON file per run under
//! `$XDG_STATE_HOME/agent-relay-systemd/exits/<session>/`, written atomically (temp file, fsync,
//! rename, fsync of the directory), so an exit survives the unit being collected.
//!
//! The runner runs as the same user and can write here: a record is only believed about the
//! session whose directory it is in (its `sessionName` and `unit` must match that directory), and
//! no path is ever read from one. Symlinked directories are neither written through nor read.
//! Only record names we write are read, only regular files, each bounded.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::io::files::{is_real_dir, private_dir, read_regular};
use crate::model::exit::ExitRecord;

/// Largest exit record read (ours are well under 4 KiB).
pub const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// `<recorded_at ms, 16 digits>-<invocation>.json`, the names [`write`] gives records; the
/// record's time when `name` is one.
pub fn record_time(name: &str) -> Option<u64> {
    let (time, rest) = name.split_at_checked(16)?;
    let invocation = rest.strip_prefix('-')?.strip_suffix(".json")?;
    let ok = time.bytes().all(|b| b.is_ascii_digit())
        && !invocation.is_empty()
        && invocation.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| time.parse().ok()).flatten()
}

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
    // A new file, never one (or a link) found under the name: a leftover goes first.
    let _ = crate::io::files::remove_entry(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
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
    if !plain_session(session) || !is_real_dir(&session_dir) {
        return Vec::new();
    }
    let unit = crate::model::naming::agent_unit_name(session);
    let Ok(rd) = std::fs::read_dir(&session_dir) else { return Vec::new() };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if record_time(&name).is_none() {
            continue;
        }
        let read = read_regular(&e.path(), MAX_RECORD_BYTES).ok();
        let rec: Option<ExitRecord> = read.and_then(|b| serde_json::from_slice(&b).ok());
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
    if !is_real_dir(dir) {
        return Vec::new();
    }
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    // Directories themselves: `file_type` does not follow a link.
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
    // A session name ends with the unique part derived from its spawn request id (else from its
    // agent id), which an agent id we generated begins with: read those sessions first, not
    // every session's records for each lookup.
    let (near, far): (Vec<String>, Vec<String>) =
        sessions.into_iter().partition(|s| crate::model::naming::session_named_by(s, reference));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn record(session: &str, at: u64) -> ExitRecord {
        ExitRecord {
            schema_version: crate::model::exit::RECORD_SCHEMA,
            unit: format!("agent-relay-managed-{session}.service"),
            session_name: session.into(),
            agent_id: "a".into(),
            provider: "claude".into(),
            log_file: String::new(),
            spawn_request_id: None,
            invocation_id: "0123abcd".into(),
            service_result: "success".into(),
            exit_code: "exited".into(),
            exit_status: "0".into(),
            recorded_at: at,
            started_at: None,
            exited_at: None,
            main_pid: None,
            restarts: None,
        }
    }

    #[test]
    fn record_names_are_ours_only() {
        assert_eq!(record_time("0000000000001000-0123abcd.json"), Some(1000));
        assert_eq!(record_time("0000000000001000-none.json"), Some(1000));
        for not_ours in ["2024-budget.xlsx", "2024-x.json", "0000000000001000-.json", ".0000000000001000-a.json.tmp"] {
            assert_eq!(record_time(not_ours), None, "{not_ours}");
        }
    }

    #[test]
    fn a_session_directory_that_is_a_link_is_neither_written_nor_read() {
        let d = tempfile::tempdir().unwrap();
        let exits = d.path().join("exits");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&exits).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
        symlink(&outside, exits.join("ar-claude-s-1")).unwrap();
        assert!(write(&exits, &record("ar-claude-s-1", 1000)).is_err());
        assert_eq!(std::fs::metadata(&outside).unwrap().permissions().mode() & 0o777, 0o755, "chmod-ed through");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "a record was written through the link");
        // Records placed there by others are not read through the link either.
        std::fs::write(outside.join("0000000000001000-0123abcd.json"), serde_json::to_vec(&record("x", 1)).unwrap())
            .unwrap();
        assert!(read_session(&exits, "ar-claude-s-1").is_empty());
        assert!(sessions(&exits).is_empty());
    }

    #[test]
    fn records_are_bounded_regular_files() {
        let d = tempfile::tempdir().unwrap();
        let good = write(d.path(), &record("ar-claude-s-2", 2000)).unwrap();
        let dir = good.parent().unwrap();
        symlink("/dev/zero", dir.join("0000000000003000-0123abcd.json")).unwrap();
        std::fs::write(dir.join("0000000000004000-0123abcd.json"), vec![b' '; MAX_RECORD_BYTES as usize + 1]).unwrap();
        let recs = read_session(d.path(), "ar-claude-s-2");
        assert_eq!(recs.iter().map(|r| r.recorded_at).collect::<Vec<_>>(), [2000]);
    }
}
