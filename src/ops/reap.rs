//! `reap`, the IO part: gathers what exists, asks [`crate::model::reap::decide`], and carries the actions
//! out. Runs are serialised by a lock file; directory removal is rename-then-delete, so an
//! interrupted run leaves a `.reaping-*` name the next run finishes, never a half-made agent.
//! Durable agents' secret directories are judged against their unit files under the lock that
//! `spawn --persist` and `remove` hold, so no unit file changes while a reap decides.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

use crate::error::Error;
use crate::model::reap::{self, Action, DurableUnitFile, Facts, FileFact, GuestUnitFact, UnitFact};
use crate::ops::{now_ms, Supervisor};

/// Files younger than this are never reaped: a spawn writes them before its unit exists.
pub const GRACE: Duration = Duration::from_secs(60);
/// Largest unit file read (ours are a few KiB).
const MAX_UNIT_FILE_BYTES: u64 = 1024 * 1024;

/// What a reap did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReapReport {
    /// The JSON contract's version.
    pub schema_version: crate::model::contract::SchemaVersion,
    pub dry_run: bool,
    pub actions: Vec<Action>,
    pub failed: Vec<String>,
}

fn mtime_ms(p: &Path) -> Option<u64> {
    std::fs::symlink_metadata(p).ok().map(|m| modified_ms(&m))
}

/// Removes the file or link at `p` (never a link's target, never a directory); gone already is
/// done.
fn remove_file_entry(p: &Path) -> Result<(), Error> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Ok(()),
        _ => match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::Io { op: "removing", path: p.to_path_buf(), source: e })
            }
            _ => Ok(()),
        },
    }
}

fn modified_ms(m: &std::fs::Metadata) -> u64 {
    (m.mtime().max(0) as u64) * 1000 + (m.mtime_nsec().max(0) as u64) / 1_000_000
}

/// The entries of one of our directories, with what each is itself (a link is a link). A
/// directory that is a link is not ours: nothing in it is.
fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    typed_entries(dir).into_iter().map(|(n, p, _)| (n, p)).collect()
}

fn typed_entries(dir: &Path) -> Vec<(String, PathBuf, std::fs::FileType)> {
    if !crate::io::files::is_real_dir(dir) {
        return Vec::new();
    }
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| Some((e.file_name().to_string_lossy().into_owned(), e.path(), e.file_type().ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The entries of `dir` that `keep` takes (by name and what each is itself), with their age, each
/// owned by `owner(name)`.
fn file_facts(
    dir: &Path,
    keep: impl Fn(&str, &std::fs::FileType) -> bool,
    owner: impl Fn(&str) -> String,
) -> Vec<FileFact> {
    typed_entries(dir)
        .into_iter()
        .filter(|(n, _, t)| keep(n, t))
        .filter_map(|(n, p, _)| Some(FileFact { mtime_ms: mtime_ms(&p)?, owner: owner(&n), path: p }))
        .collect()
}

/// A file of ours that may be removed by name: a regular file, or a link put in its place (the
/// link itself goes, never its target).
fn removable_file(t: &std::fs::FileType) -> bool {
    t.is_file() || t.is_symlink()
}

/// The per-attempt directories `<session>.<attempt>` in `dir`, owned by their session.
fn attempt_dirs(dir: &Path, session_prefix: &str) -> Vec<FileFact> {
    typed_entries(dir)
        .into_iter()
        .filter(|(n, _, t)| n.starts_with(session_prefix) && (t.is_dir() || t.is_symlink()))
        .filter_map(|(n, p, _)| {
            let owner = n.rsplit_once('.')?.0.to_string();
            Some(FileFact { mtime_ms: mtime_ms(&p)?, path: p, owner })
        })
        .collect()
}

impl Supervisor {
    /// One reap; `retention` is how long exit records are kept.
    pub async fn reap(&self, dry_run: bool, retention: Duration) -> Result<ReapReport, Error> {
        let root = self.runtime_root()?;
        crate::io::files::private_dir(&root)?;
        let lock_path = root.join("reap.lock");
        let _guard =
            crate::io::files::lock_file(&lock_path, crate::io::files::LOCK_WAIT, "another reap to finish").await?;
        // Only once some durable agent was made: the lock would create the directory.
        let _durable = if self.host.durable_root().is_dir() { Some(self.durable_lock().await?) } else { None };
        let facts = self.reap_facts(&root, retention).await?;
        let actions = reap::decide(&facts);
        let mut failed = Vec::new();
        if !dry_run {
            for a in &actions {
                if let Err(e) = self.carry_out(a).await {
                    failed.push(format!("{a:?}: {e}"));
                }
            }
            // Finish what an interrupted run began.
            for dir in [root.join("agents"), self.host.durable_root().join("agents")] {
                for (name, path) in entries(&dir) {
                    if name.starts_with(".reaping-") {
                        let _ = crate::io::files::remove_entry(&path);
                    }
                }
            }
        }
        Ok(ReapReport { schema_version: Default::default(), dry_run, actions, failed })
    }

    async fn reap_facts(&self, root: &Path, retention: Duration) -> Result<Facts, Error> {
        let exits_dir = crate::io::exit_store::exits_dir(&self.host.state_home);
        let prefix = &self.config.tmux_prefix;
        let session_prefix = format!("{prefix}-");
        let agent_dirs = attempt_dirs(&root.join("agents"), &session_prefix);
        let mut dirs_per_session: HashMap<&str, usize> = HashMap::new();
        for d in &agent_dirs {
            *dirs_per_session.entry(d.owner.as_str()).or_default() += 1;
        }
        let mut agent_units = Vec::new();
        for s in self.snapshots().await? {
            let Some(session) = crate::model::naming::session_of_unit(&s.unit, prefix) else { continue };
            let exit_recorded =
                crate::io::exit_store::read_session(&exits_dir, session).iter().any(|r| r.is_run(&s.invocation_id));
            // Only a session with several directories can have a stale one (a spawn killed
            // before its unit started): ask the unit which is its own.
            let agent_dir = if dirs_per_session.get(session).copied().unwrap_or(0) > 1 {
                let files = self.manager().environment_files(&s.unit).await?;
                files.first().and_then(|f| f.parent()).map(Path::to_path_buf)
            } else {
                None
            };
            agent_units.push(UnitFact {
                agent_dir,
                unit: s.unit.clone(),
                session: session.to_string(),
                active_state: s.active_state.clone(),
                exit_recorded,
            });
        }
        let guest_pattern = crate::model::guest::guest_unit_pattern(prefix);
        let guest_units = self
            .manager()
            .list_units(&[guest_pattern])
            .await?
            .into_iter()
            .filter_map(|l| {
                let name = crate::model::guest::guest_of_unit(&l.unit, prefix)?.to_string();
                Some(GuestUnitFact { name, unit: l.unit, active_state: l.active_state })
            })
            .collect();
        let durable_dirs = attempt_dirs(&self.host.durable_root().join("agents"), &session_prefix);
        // The manager's own list of unit files, so that the files it would start at boot are the
        // ones judged, whatever directory they are in.
        let pattern = crate::model::naming::agent_unit_pattern(prefix);
        let durable_unit_files = self
            .manager()
            .unit_files(std::slice::from_ref(&pattern))
            .await?
            .into_iter()
            .filter_map(|(path, _state)| {
                let path = PathBuf::from(path);
                let session = crate::model::naming::session_of_unit(path.file_name()?.to_str()?, prefix)?.to_string();
                // Unreadable, masked, not a regular file or too large: names nothing, so every
                // secret dir of the session is kept.
                let text = crate::io::files::read_regular(&path, MAX_UNIT_FILE_BYTES)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default();
                let secret_dirs = crate::model::unitfile::environment_files(&text)
                    .into_iter()
                    .filter_map(|f| f.parent().map(Path::to_path_buf))
                    .collect();
                Some(DurableUnitFile { session, secret_dirs })
            })
            .collect();
        let runner_infos = file_facts(
            &crate::model::plan::runner_info_dir(&self.host.home),
            |n, t| n.starts_with(&session_prefix) && n.ends_with(".json") && removable_file(t),
            |n| n.trim_end_matches(".json").into(),
        );
        let mut exit_records = Vec::new();
        // Session directories themselves (a link to one is not followed), record names we write.
        for session in crate::io::exit_store::sessions_of(&exits_dir, prefix) {
            for (n, p, t) in typed_entries(&exits_dir.join(&session)) {
                if let Some(at) = crate::io::exit_store::record_time(&n).filter(|_| removable_file(&t)) {
                    exit_records.push(FileFact { path: p, owner: session.clone(), mtime_ms: at });
                }
            }
        }
        // Sockets only: a link named like a guest could lead `kill-server` to another server.
        let guest_sockets = file_facts(
            &self.host.tmux_socket_dir(),
            |n, t| crate::model::guest::is_guest_name(n, prefix) && t.is_socket(),
            str::to_string,
        );
        let guest_launch_files = file_facts(
            &root.join("guests"),
            |n, t| n.ends_with(".json") && removable_file(t),
            |n| n.trim_end_matches(".json").into(),
        );
        let request_locks = file_facts(
            &root.join(crate::ops::spawn::REQUEST_LOCK_DIR),
            |n, t| n.ends_with(".lock") && removable_file(t),
            str::to_string,
        );
        let logs = typed_entries(&crate::model::plan::log_dir(&self.host.home))
            .into_iter()
            .filter(|(n, _, t)| n.starts_with(&session_prefix) && n.ends_with(".log") && removable_file(t))
            .filter_map(|(n, p, _)| {
                let m = std::fs::symlink_metadata(&p).ok()?;
                let size = if m.is_file() { m.len() } else { 0 };
                let owner = n.trim_end_matches(".log").to_string();
                Some((FileFact { mtime_ms: modified_ms(&m), path: p, owner }, size))
            })
            .collect();
        Ok(Facts {
            logs,
            log_retention_ms: u64::from(self.config.log_retention_days) * 86_400_000,
            log_max_bytes: self.config.log_max_bytes,
            now_ms: now_ms(),
            grace_ms: GRACE.as_millis() as u64,
            retention_ms: retention.as_millis() as u64,
            agent_units,
            guest_units,
            agent_dirs,
            runner_infos,
            exit_records,
            guest_sockets,
            guest_launch_files,
            durable_dirs,
            durable_unit_files,
            request_locks,
        })
    }

    async fn carry_out(&self, a: &Action) -> Result<(), Error> {
        match a {
            Action::RemoveAgentFiles(p) | Action::RemoveDurableFiles(p) => {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let doomed = p.with_file_name(format!(".reaping-{name}"));
                // rename(2) moves a link itself; what is removed is the directory or the link,
                // never a link's target.
                match std::fs::rename(p, &doomed) {
                    Ok(()) => crate::io::files::remove_entry(&doomed).map_err(Error::io("removing", &doomed)),
                    // Already gone: a `stop` of the agent (which does not take the reap lock)
                    // removed it after this run decided. What the action wanted.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(Error::Io { op: "renaming", path: p.clone(), source: e }),
                }
            }
            Action::CapLog(p) => {
                crate::io::log_file::cap(p, self.config.log_max_bytes).map(drop).map_err(Error::io("cutting log", p))
            }
            Action::RemoveRunnerInfo(p) | Action::PruneExitRecord(p) | Action::RemoveGuestLaunchFile(p) => {
                remove_file_entry(p)
            }
            // The log's times go with it.
            Action::RemoveLog(p) => remove_file_entry(&crate::model::logtimes::times_file(p)).and(remove_file_entry(p)),
            Action::RemoveRequestLock(p) => crate::io::files::remove_idle_lock(p).map_err(Error::io("removing", p)),
            Action::ResetFailedUnit(u) => self.manager().reset_failed(u).await,
            Action::EndGuestServer(name) => {
                let socket = self.host.tmux_socket_dir().join(name);
                // Still the socket it was when gathered (not a link put in its place since).
                if std::fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket()) {
                    let _ = crate::io::tmux::Tmux::new(&self.host.tmux_tmpdir).kill_server(name).await;
                }
                let _ = std::fs::remove_file(socket);
                Ok(())
            }
        }
    }
}
