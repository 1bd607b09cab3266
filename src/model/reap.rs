//! The reaper's decisions, pure: given what exists (units, files, sockets) and the time, what to
//! remove, reset or end. It never selects anything of a loaded agent unit (live, unknown or
//! dead-but-unrecorded) other than a failed unit with a recorded exit, which it resets and
//! cleans, nor a guest whose unit exists other than a failed one, which it resets (a guest whose
//! server died or whose TTL ran out stays listed failed otherwise), nor anything younger than the grace period
//! (a spawn or guest in flight writes its files before its unit appears), nor the secret directory
//! a durable agent's unit file names (a stopped durable agent starts again with it at boot).

use crate::model::state::ActiveState;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Serialize;

/// A loaded agent unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFact {
    pub unit: String,
    pub session: String,
    pub active_state: String,
    /// An exit record exists for the unit's current invocation.
    pub exit_recorded: bool,
    /// The agent directory its `EnvironmentFile=` is in, when it was read: another directory of
    /// the same session is what a spawn killed before its unit started left behind.
    pub agent_dir: Option<PathBuf>,
}

/// A loaded guest unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestUnitFact {
    /// The guest's name (its tmux socket's).
    pub name: String,
    pub unit: String,
    pub active_state: String,
}

/// A file or directory that belongs to a session (or a guest, for sockets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFact {
    pub path: PathBuf,
    pub owner: String,
    pub mtime_ms: u64,
}

/// A durable agent's unit file in the user unit directory, loaded or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableUnitFile {
    pub session: String,
    /// The directories of the files its `EnvironmentFile=` names. Empty when the file could not be
    /// read or names none: then no secret directory of the session is reaped.
    pub secret_dirs: Vec<PathBuf>,
}

/// Everything the reaper looked at.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub now_ms: u64,
    pub grace_ms: u64,
    pub retention_ms: u64,
    pub agent_units: Vec<UnitFact>,
    /// Loaded guest units (any state).
    pub guest_units: Vec<GuestUnitFact>,
    pub agent_dirs: Vec<FileFact>,
    pub runner_infos: Vec<FileFact>,
    /// Exit records; `mtime_ms` is the record's time.
    pub exit_records: Vec<FileFact>,
    pub guest_sockets: Vec<FileFact>,
    /// Launch files of guests (`guests/<guest>.json`, the spec's env): their launcher reads and
    /// removes each as the pane starts, so one older than the grace was never read.
    pub guest_launch_files: Vec<FileFact>,
    /// Durable agents' secret directories (`<session>.<attempt>`), one per spawn attempt.
    pub durable_dirs: Vec<FileFact>,
    pub durable_unit_files: Vec<DurableUnitFile>,
    /// Per-request lock files (`requests/<hash>.lock`); a spawn touches its own as it takes it.
    pub request_locks: Vec<FileFact>,
    /// Agents' logs (`~/.agent-relay/logs/<session>.log` of this prefix) and their sizes.
    pub logs: Vec<(FileFact, u64)>,
    /// A log untouched this long whose agent is gone (no loaded unit, no unit file) is removed.
    pub log_retention_ms: u64,
    /// A log larger than this is cut to its newer half.
    pub log_max_bytes: u64,
}

/// A request lock no spawn took for this long is removed (when no spawn holds it then).
pub const REQUEST_LOCK_IDLE_MS: u64 = 24 * 60 * 60 * 1000;

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(tag = "action", content = "target", rename_all = "kebab-case")]
pub enum Action {
    RemoveAgentFiles(PathBuf),
    RemoveDurableFiles(PathBuf),
    RemoveRunnerInfo(PathBuf),
    ResetFailedUnit(String),
    PruneExitRecord(PathBuf),
    EndGuestServer(String),
    RemoveGuestLaunchFile(PathBuf),
    /// Removed only if no spawn holds it at that moment.
    RemoveRequestLock(PathBuf),
    /// The log of an agent gone longer than the log retention.
    RemoveLog(PathBuf),
    /// A log over the size cap, cut to its newer half (at a line start).
    CapLog(PathBuf),
}

/// A failed unit whose exit is recorded: the reap resets it, and with it goes its agent.
fn to_reset(u: &UnitFact) -> bool {
    ActiveState::parse(&u.active_state) == ActiveState::Failed && u.exit_recorded
}

/// A failed guest unit: nothing of it runs, and nothing records it (a guest has no exit record).
fn guest_to_reset(g: &GuestUnitFact) -> bool {
    ActiveState::parse(&g.active_state) == ActiveState::Failed
}

/// Decides what a reap does.
pub fn decide(f: &Facts) -> Vec<Action> {
    // A unit this reap resets is gone after it: its files go in the same run, or its secrets
    // would outlive it until the next timer tick.
    let kept = || f.agent_units.iter().filter(|u| !to_reset(u));
    let loaded: HashSet<&str> = kept().map(|u| u.session.as_str()).collect();
    let dirs: HashMap<&str, &PathBuf> =
        kept().filter_map(|u| Some((u.session.as_str(), u.agent_dir.as_ref()?))).collect();
    let owned =
        |d: &FileFact| loaded.contains(d.owner.as_str()) && dirs.get(d.owner.as_str()).is_none_or(|&p| p == &d.path);
    // A failed guest unit (its server killed, or its TTL hit) is reset: systemd would list it
    // forever otherwise. Its socket, if left, then goes like any stray one.
    let guests: HashSet<&str> = f.guest_units.iter().filter(|g| !guest_to_reset(g)).map(|g| g.name.as_str()).collect();
    let old_enough = |x: &FileFact| f.now_ms.saturating_sub(x.mtime_ms) >= f.grace_ms;
    let mut out = Vec::new();
    // Resets first: the files of a reset unit go after the unit itself.
    for u in &f.agent_units {
        if to_reset(u) {
            out.push(Action::ResetFailedUnit(u.unit.clone()));
        }
    }
    for g in &f.guest_units {
        if guest_to_reset(g) {
            out.push(Action::ResetFailedUnit(g.unit.clone()));
        }
    }
    for d in &f.agent_dirs {
        if !owned(d) && old_enough(d) {
            out.push(Action::RemoveAgentFiles(d.path.clone()));
        }
    }
    for d in &f.durable_dirs {
        if durable_dir_is_leftover(f, &loaded, d) && old_enough(d) {
            out.push(Action::RemoveDurableFiles(d.path.clone()));
        }
    }
    for r in &f.runner_infos {
        if !loaded.contains(r.owner.as_str()) && old_enough(r) {
            out.push(Action::RemoveRunnerInfo(r.path.clone()));
        }
    }
    for r in &f.exit_records {
        if f.now_ms.saturating_sub(r.mtime_ms) >= f.retention_ms {
            out.push(Action::PruneExitRecord(r.path.clone()));
        }
    }
    for s in &f.guest_sockets {
        if !guests.contains(s.owner.as_str()) && old_enough(s) {
            out.push(Action::EndGuestServer(s.owner.clone()));
        }
    }
    for l in &f.guest_launch_files {
        if old_enough(l) {
            out.push(Action::RemoveGuestLaunchFile(l.path.clone()));
        }
    }
    for l in &f.request_locks {
        if f.now_ms.saturating_sub(l.mtime_ms) >= REQUEST_LOCK_IDLE_MS.max(f.grace_ms) {
            out.push(Action::RemoveRequestLock(l.path.clone()));
        }
    }
    for (l, size) in &f.logs {
        let declared = f.durable_unit_files.iter().any(|u| u.session == l.owner);
        let gone = !loaded.contains(l.owner.as_str()) && !declared;
        if gone && f.now_ms.saturating_sub(l.mtime_ms) >= f.log_retention_ms.max(f.grace_ms) {
            out.push(Action::RemoveLog(l.path.clone()));
        } else if f.log_max_bytes > 0 && *size > f.log_max_bytes {
            out.push(Action::CapLog(l.path.clone()));
        }
    }
    out
}

/// A durable secret directory no one will read again: its session has no unit file and no loaded
/// unit, or its session's unit file names another directory (a replaced or failed attempt).
/// Directories are compared by name, so that the same directory reached by another path (a
/// symlinked `$XDG_STATE_HOME`) is still recognised as the one named.
fn durable_dir_is_leftover(f: &Facts, loaded: &HashSet<&str>, d: &FileFact) -> bool {
    let mut files = f.durable_unit_files.iter().filter(|u| u.session == d.owner).peekable();
    if files.peek().is_none() {
        return !loaded.contains(d.owner.as_str());
    }
    let name = d.path.file_name();
    files.all(|u| !u.secret_dirs.is_empty() && u.secret_dirs.iter().all(|s| s.file_name() != name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STATES: [&str; 6] = ["active", "activating", "deactivating", "reloading", "failed", "inactive"];

    #[test]
    fn logs_of_agents_gone_past_the_retention_go_and_big_ones_are_cut() {
        let day = 86_400_000;
        let unit = |session: &str| UnitFact {
            unit: format!("agent-relay-managed-{session}.service"),
            session: session.into(),
            active_state: "active".into(),
            exit_recorded: false,
            agent_dir: None,
        };
        let log = |owner: &str, mtime: u64, size: u64| {
            (FileFact { path: format!("/l/{owner}.log").into(), owner: owner.into(), mtime_ms: mtime }, size)
        };
        let f = Facts {
            now_ms: 30 * day,
            grace_ms: 60_000,
            log_retention_ms: 7 * day,
            log_max_bytes: 100,
            agent_units: vec![unit("ar-live")],
            durable_unit_files: vec![DurableUnitFile { session: "ar-declared".into(), secret_dirs: vec![] }],
            logs: vec![
                log("ar-live", 0, 10),
                log("ar-live-big", 30 * day, 500),
                log("ar-gone-old", 20 * day, 10),
                log("ar-gone-new", 29 * day, 10),
                log("ar-declared", 0, 10),
            ],
            ..Default::default()
        };
        let got = decide(&f);
        assert_eq!(got, [Action::CapLog("/l/ar-live-big.log".into()), Action::RemoveLog("/l/ar-gone-old.log".into())]);
    }

    #[test]
    fn only_request_locks_idle_for_a_day_go() {
        let day = REQUEST_LOCK_IDLE_MS;
        let f = Facts {
            now_ms: 10 * day,
            grace_ms: 60_000,
            request_locks: vec![file("fresh".into(), 10 * day - 1000), file("idle".into(), 9 * day)],
            ..Default::default()
        };
        assert_eq!(decide(&f), vec![Action::RemoveRequestLock(PathBuf::from(format!("/x/idle/{}", 9 * day)))]);
    }

    fn file(owner: String, mtime_ms: u64) -> FileFact {
        FileFact { path: PathBuf::from(format!("/x/{owner}/{mtime_ms}")), owner, mtime_ms }
    }

    /// Agent directory paths repeat (`% 3`) so that a unit's own directory is sometimes, and
    /// sometimes not, on disk.
    fn dir(owner: String, mtime_ms: u64) -> FileFact {
        FileFact { path: PathBuf::from(format!("/d/{owner}/{}", mtime_ms % 3)), owner, mtime_ms }
    }

    fn facts() -> impl Strategy<Value = Facts> {
        let session = (0u8..12).prop_map(|i| format!("ar-claude-s-{i}"));
        let unit = (session.clone(), 0usize..6, any::<bool>(), prop::option::of(0u8..3)).prop_map(|(s, st, rec, d)| {
            UnitFact {
                unit: format!("agent-relay-managed-{s}.service"),
                agent_dir: d.map(|d| PathBuf::from(format!("/d/{s}/{d}"))),
                session: s,
                active_state: STATES[st].into(),
                exit_recorded: rec,
            }
        });
        let guest = (0u8..8).prop_map(|i| format!("ar-guest-claude-a-{i}"));
        let guest_unit = (0u8..8, 0usize..6).prop_map(|(i, st)| GuestUnitFact {
            name: format!("ar-guest-claude-a-{i}"),
            unit: format!("agent-relay-guest-ar-guest-claude-a-{i}.service"),
            active_state: STATES[st].into(),
        });
        let now = 10_000_000u64;
        let f = |s: BoxedStrategy<String>| prop::collection::vec((s, 0..now).prop_map(|(o, m)| file(o, m)), 0..12);
        // Secret dirs `<session>.<attempt>`; a unit file names one of them (under another path to
        // the same place, or not), a dir that is not there, or nothing readable.
        let durable_dir = (session.clone(), 0u8..4, 0..now).prop_map(|(o, a, m)| FileFact {
            path: PathBuf::from(format!("/d/{o}.{a}")),
            owner: o,
            mtime_ms: m,
        });
        let unit_file = (session.clone(), 0u8..6).prop_map(|(s, choice)| {
            let secret_dirs = match choice {
                0 => vec![],
                1 => vec![PathBuf::from(format!("/d/{s}.gone"))],
                a => vec![PathBuf::from(format!("/alias/{s}.{}", a - 2))],
            };
            DurableUnitFile { session: s, secret_dirs }
        });
        let durable = (prop::collection::vec(durable_dir, 0..12), prop::collection::vec(unit_file, 0..6));
        (
            prop::collection::vec(unit, 0..10),
            prop::collection::vec(guest_unit, 0..6),
            prop::collection::vec((session.clone(), 0..now).prop_map(|(o, m)| dir(o, m)), 0..12),
            f(session.clone().boxed()),
            f(session.boxed()),
            f(guest.boxed()),
            0..now,
            0..now,
            durable,
        )
            .prop_map(
                move |(
                    mut agent_units,
                    mut guest_units,
                    mut agent_dirs,
                    runner_infos,
                    exit_records,
                    guest_sockets,
                    g,
                    r,
                    (mut durable_dirs, mut durable_unit_files),
                )| {
                    // systemd has one unit per name; a path is one file, a session one unit file.
                    let mut seen = HashSet::new();
                    agent_units.retain(|u: &UnitFact| seen.insert(u.unit.clone()));
                    let mut seen = HashSet::new();
                    guest_units.retain(|g: &GuestUnitFact| seen.insert(g.unit.clone()));
                    let mut seen = HashSet::new();
                    agent_dirs.retain(|d: &FileFact| seen.insert(d.path.clone()));
                    let mut seen = HashSet::new();
                    durable_dirs.retain(|d: &FileFact| seen.insert(d.path.clone()));
                    let mut seen = HashSet::new();
                    durable_unit_files.retain(|u: &DurableUnitFile| seen.insert(u.session.clone()));
                    let mut seen = HashSet::new();
                    let guest_launch_files = guest_sockets
                        .iter()
                        .map(|s| FileFact { path: PathBuf::from(format!("/g/{}.json", s.owner)), ..s.clone() })
                        .filter(|l| seen.insert(l.path.clone()))
                        .collect();
                    let mut seen = HashSet::new();
                    let logs = runner_infos
                        .iter()
                        .map(|i: &FileFact| {
                            (
                                FileFact { path: PathBuf::from(format!("/l/{}.log", i.owner)), ..i.clone() },
                                i.mtime_ms % 300,
                            )
                        })
                        .filter(|(l, _)| seen.insert(l.path.clone()))
                        .collect();
                    Facts {
                        logs,
                        log_retention_ms: r,
                        log_max_bytes: 100,
                        now_ms: now,
                        grace_ms: g,
                        retention_ms: r,
                        agent_units,
                        guest_units,
                        agent_dirs,
                        runner_infos,
                        exit_records,
                        guest_sockets,
                        guest_launch_files,
                        durable_dirs,
                        durable_unit_files,
                        request_locks: Vec::new(),
                    }
                },
            )
    }

    /// The names of the secret dirs the unit file of `session` names, if it has one.
    fn named_by_unit_file<'a>(f: &'a Facts, session: &str) -> Option<Vec<&'a std::ffi::OsStr>> {
        let u = f.durable_unit_files.iter().find(|u| u.session == session)?;
        Some(u.secret_dirs.iter().filter_map(|p| p.file_name()).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_touches_a_loaded_agent_or_a_guest_with_a_unit(f in facts()) {
            let loaded: HashSet<&str> = f.agent_units.iter().map(|u| u.session.as_str()).collect();
            let reset: HashSet<&str> = f.agent_units.iter().filter(|u| to_reset(u)).map(|u| u.session.as_str()).collect();
            for a in decide(&f) {
                match a {
                    Action::RemoveAgentFiles(p) | Action::RemoveRunnerInfo(p) => {
                        let fact = f.agent_dirs.iter().chain(&f.runner_infos).find(|x| x.path == p).unwrap();
                        let owner = fact.owner.as_str();
                        let elsewhere = f.agent_units.iter().any(|u| u.session == owner && u.agent_dir.as_ref().is_some_and(|d| d != &p));
                        prop_assert!(!loaded.contains(owner) || reset.contains(owner) || elsewhere, "files of a loaded unit: {p:?}");
                        prop_assert!(!f.agent_units.iter().any(|u| !to_reset(u) && u.agent_dir.as_ref() == Some(&p)), "a kept unit's own directory: {p:?}");
                        prop_assert!(f.now_ms - fact.mtime_ms >= f.grace_ms, "files younger than the grace");
                    }
                    Action::RemoveLog(p) => {
                        let (fact, _) = f.logs.iter().find(|(x, _)| x.path == p).unwrap();
                        let owner = fact.owner.as_str();
                        prop_assert!(!loaded.contains(owner) || reset.contains(owner), "the log of a loaded agent: {p:?}");
                        prop_assert!(named_by_unit_file(&f, owner).is_none(), "the log of a declared agent: {p:?}");
                        prop_assert!(f.now_ms - fact.mtime_ms >= f.log_retention_ms.max(f.grace_ms), "a log inside the retention");
                    }
                    Action::CapLog(p) => {
                        let (_, size) = f.logs.iter().find(|(x, _)| x.path == p).unwrap();
                        prop_assert!(*size > f.log_max_bytes, "a log under the cap cut: {p:?}");
                    }
                    Action::ResetFailedUnit(u) => {
                        if let Some(fact) = f.agent_units.iter().find(|x| x.unit == u) {
                            prop_assert_eq!(fact.active_state.as_str(), "failed");
                            prop_assert!(fact.exit_recorded, "reset before the exit was recorded");
                        } else {
                            let fact = f.guest_units.iter().find(|x| x.unit == u).unwrap();
                            prop_assert_eq!(fact.active_state.as_str(), "failed", "reset a guest that is not failed");
                        }
                    }
                    Action::EndGuestServer(g) => {
                        prop_assert!(
                            !f.guest_units.iter().any(|u| u.name == g && u.active_state != "failed"),
                            "guest with a unit: {}", g
                        );
                    }
                    Action::RemoveDurableFiles(p) => {
                        let fact = f.durable_dirs.iter().find(|x| x.path == p).unwrap();
                        prop_assert!(f.now_ms - fact.mtime_ms >= f.grace_ms, "secret dir younger than the grace");
                        if named_by_unit_file(&f, &fact.owner).is_none() {
                            let owner = fact.owner.as_str();
                            prop_assert!(!loaded.contains(owner) || reset.contains(owner), "secret dir of a loaded unit: {p:?}");
                        }
                    }
                    Action::PruneExitRecord(p) => {
                        let fact = f.exit_records.iter().find(|x| x.path == p).unwrap();
                        prop_assert!(f.now_ms - fact.mtime_ms >= f.retention_ms);
                    }
                    Action::RemoveGuestLaunchFile(p) => {
                        let fact = f.guest_launch_files.iter().find(|x| x.path == p).unwrap();
                        prop_assert!(f.now_ms - fact.mtime_ms >= f.grace_ms, "a launch file younger than the grace");
                    }
                    Action::RemoveRequestLock(p) => {
                        let fact = f.request_locks.iter().find(|x| x.path == p).unwrap();
                        prop_assert!(f.now_ms - fact.mtime_ms >= REQUEST_LOCK_IDLE_MS);
                    }
                }
            }
        }

        #[test]
        fn never_selects_the_secret_dir_referenced_by_an_existing_durable_unit_file(f in facts()) {
            for a in decide(&f) {
                let Action::RemoveDurableFiles(p) = a else { continue };
                let owner = &f.durable_dirs.iter().find(|x| x.path == p).unwrap().owner;
                if let Some(named) = named_by_unit_file(&f, owner) {
                    prop_assert!(!named.is_empty(), "secret dir of a unit file naming none (unreadable): {p:?}");
                    prop_assert!(!named.contains(&p.file_name().unwrap()), "the unit file's secret dir: {p:?}");
                }
            }
        }

        #[test]
        fn everything_else_that_is_old_enough_is_cleaned(f in facts()) {
            let actions = decide(&f);
            let loaded: HashSet<&str> = f.agent_units.iter().filter(|u| !to_reset(u)).map(|u| u.session.as_str()).collect();
            for d in &f.agent_dirs {
                // A leftover of a spawn killed before its unit started: a directory of a loaded
                // session that the unit does not name.
                let stale = f.agent_units.iter().any(|u| !to_reset(u) && u.session == d.owner && u.agent_dir.as_ref().is_some_and(|p| p != &d.path));
                if (!loaded.contains(d.owner.as_str()) || stale) && f.now_ms - d.mtime_ms >= f.grace_ms {
                    prop_assert!(actions.contains(&Action::RemoveAgentFiles(d.path.clone())));
                }
            }
            for g in &f.guest_units {
                if g.active_state == "failed" {
                    prop_assert!(actions.contains(&Action::ResetFailedUnit(g.unit.clone())), "failed guest kept: {g:?}");
                }
            }
            for d in &f.durable_dirs {
                let leftover = match named_by_unit_file(&f, &d.owner) {
                    None => !loaded.contains(d.owner.as_str()),
                    Some(named) => !named.is_empty() && !named.contains(&d.path.file_name().unwrap()),
                };
                if leftover && f.now_ms - d.mtime_ms >= f.grace_ms {
                    prop_assert!(actions.contains(&Action::RemoveDurableFiles(d.path.clone())), "{d:?}");
                }
            }
        }
    }
}
