//! What `watch` reports: the state of an agent unit as signals describe it, and the events a
//! change between two states means. Pure: the D-Bus layer (`io::systemd::signals`) decodes a
//! signal's property dictionary into a [`Change`] and feeds it here.

use schemars::JsonSchema;
use serde::Serialize;

use crate::model::exit::{self, ExitInfo};
use crate::model::record::UnitSnapshot;
use crate::model::state::ActiveState;

/// The `type` of a `watch` line: a change of one agent (`spawned` … `removed`), one agent as it
/// was when the stream started (`snapshot`), or news about the stream itself (`ready`,
/// `disconnected`, `reconnected`, `lagged`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EventType {
    /// An agent that existed when the stream started (before `ready`).
    Snapshot,
    /// Every snapshot was sent; `agents` says how many.
    Ready,
    /// A new agent unit appeared (never one of the snapshot).
    Spawned,
    /// Its runner started (a restart's too, with its new pid).
    Started,
    /// Its main process ended; `exit` says how.
    Exited,
    /// systemd will start it again (a persistent agent after a failure).
    Restarting,
    /// Its unit stopped (inactive or failed).
    Stopped,
    /// Its unit is no longer loaded.
    Removed,
    /// The connection to the manager was lost; `detail` says why.
    Disconnected,
    /// Connected again, resubscribed and reconciled from a fresh list.
    Reconnected,
    /// Events were dropped for a slow reader; `dropped` says how many.
    Lagged,
    /// A spawn waits for admission, or its place or reason changed: `agent.queue` says which.
    Queued,
    /// A spawn left the admission queue: admitted (its `spawned` follows) or given up.
    Dequeued,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Snapshot => "snapshot",
            EventType::Ready => "ready",
            EventType::Spawned => "spawned",
            EventType::Started => "started",
            EventType::Exited => "exited",
            EventType::Restarting => "restarting",
            EventType::Stopped => "stopped",
            EventType::Removed => "removed",
            EventType::Disconnected => "disconnected",
            EventType::Reconnected => "reconnected",
            EventType::Lagged => "lagged",
            EventType::Queued => "queued",
            EventType::Dequeued => "dequeued",
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that a width (`{:<12}`) applies.
        f.pad(self.as_str())
    }
}

/// The few properties events are derived from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub active_state: String,
    pub sub_state: String,
    pub main_pid: u32,
    pub n_restarts: u32,
    pub result: String,
    pub exec_main_code: i32,
    pub exec_main_status: i32,
}

/// Properties present in one `PropertiesChanged` (of the Unit or the Service interface), or
/// the newest of several merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub active_state: Option<String>,
    pub sub_state: Option<String>,
    pub main_pid: Option<u32>,
    pub n_restarts: Option<u32>,
    pub result: Option<String>,
    pub exec_main_code: Option<i32>,
    pub exec_main_status: Option<i32>,
    pub invocation_id: Option<Vec<u8>>,
    pub exec_main_start_us: Option<u64>,
}

impl Change {
    /// Takes what `newer` carries; keeps the rest.
    pub fn merge(&mut self, newer: Change) {
        fn take<T>(slot: &mut Option<T>, v: Option<T>) {
            if v.is_some() {
                *slot = v;
            }
        }
        take(&mut self.active_state, newer.active_state);
        take(&mut self.sub_state, newer.sub_state);
        take(&mut self.main_pid, newer.main_pid);
        take(&mut self.n_restarts, newer.n_restarts);
        take(&mut self.result, newer.result);
        take(&mut self.exec_main_code, newer.exec_main_code);
        take(&mut self.exec_main_status, newer.exec_main_status);
        take(&mut self.invocation_id, newer.invocation_id);
        take(&mut self.exec_main_start_us, newer.exec_main_start_us);
    }
}

impl View {
    /// The view after a change.
    pub fn apply(&self, c: &Change) -> View {
        View {
            active_state: c.active_state.clone().unwrap_or_else(|| self.active_state.clone()),
            sub_state: c.sub_state.clone().unwrap_or_else(|| self.sub_state.clone()),
            main_pid: c.main_pid.unwrap_or(self.main_pid),
            n_restarts: c.n_restarts.unwrap_or(self.n_restarts),
            result: c.result.clone().unwrap_or_else(|| self.result.clone()),
            exec_main_code: c.exec_main_code.unwrap_or(self.exec_main_code),
            exec_main_status: c.exec_main_status.unwrap_or(self.exec_main_status),
        }
    }

    fn running(&self) -> bool {
        self.main_pid > 0
    }

    fn state(&self) -> ActiveState {
        ActiveState::parse(&self.active_state)
    }

    fn ended(&self) -> bool {
        self.state().is_ended()
    }

    fn active(&self) -> bool {
        self.state() == ActiveState::Active
    }
}

/// A unit's properties after a signalled change: what the change carries replaces what was
/// read, the rest stays. The record of an event is made from this, so it shows the new run's
/// pid, invocation and start time, not the previous run's.
pub fn apply_to_snapshot(s: &UnitSnapshot, c: &Change) -> UnitSnapshot {
    let mut n = s.clone();
    fn set<T: Clone>(slot: &mut T, v: &Option<T>) {
        if let Some(v) = v {
            *slot = v.clone();
        }
    }
    set(&mut n.active_state, &c.active_state);
    set(&mut n.sub_state, &c.sub_state);
    set(&mut n.main_pid, &c.main_pid);
    set(&mut n.n_restarts, &c.n_restarts);
    set(&mut n.result, &c.result);
    set(&mut n.exec_main_code, &c.exec_main_code);
    set(&mut n.exec_main_status, &c.exec_main_status);
    set(&mut n.invocation_id, &c.invocation_id);
    set(&mut n.exec_main_start_us, &c.exec_main_start_us);
    n
}

/// One derived event, with the exit when the main process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub kind: EventType,
    pub exit: Option<ExitInfo>,
}

fn t(kind: EventType) -> Transition {
    Transition { kind, exit: None }
}

/// The end of a main process as the properties describe it at that moment.
pub fn process_exit(v: &View) -> ExitInfo {
    let mut info = exit::classify_codes(&v.result, v.exec_main_code, v.exec_main_status);
    info.source = "unit".into();
    info
}

/// Whether a signalled change from `old` to `new` (giving `ts`) is believed only once fresh
/// properties confirm it: one that ends a run or the unit (a signal delayed across a reload must
/// not become a false exit), and one that takes an ended unit back to life (a signal older than
/// the last read must not undo what it read, and so report the same stop twice; a real restart
/// is confirmed by the read).
pub fn needs_fresh_read(old: &View, new: &View, ts: &[Transition]) -> bool {
    ts.iter().any(|t| matches!(t.kind, EventType::Exited | EventType::Stopped | EventType::Removed))
        || (old.ended() && !new.ended())
}

/// Events that lead from `old` to `new` (`None`: the unit is not loaded).
pub fn transitions(old: Option<&View>, new: Option<&View>) -> Vec<Transition> {
    let mut out = Vec::new();
    match (old, new) {
        (None, None) => {}
        (None, Some(n)) => {
            out.push(t(EventType::Spawned));
            if n.running() && n.active() {
                out.push(t(EventType::Started));
            }
        }
        (Some(o), None) => {
            if o.running() {
                out.push(Transition { kind: EventType::Exited, exit: Some(ExitInfo::unknown(&o.result)) });
            }
            if !o.ended() {
                out.push(t(EventType::Stopped));
            }
            out.push(t(EventType::Removed));
        }
        (Some(o), Some(n)) => {
            let pid_changed = o.running() && n.main_pid != o.main_pid;
            let restarted_between = !o.running() && !n.running() && n.n_restarts > o.n_restarts;
            if pid_changed || (o.running() && n.ended()) {
                let exit = if n.running() { ExitInfo::unknown(&n.result) } else { process_exit(n) };
                out.push(Transition { kind: EventType::Exited, exit: Some(exit) });
            }
            if n.sub_state == "auto-restart" && o.sub_state != "auto-restart" || restarted_between {
                out.push(t(EventType::Restarting));
            }
            let now_started = n.running() && n.active();
            if now_started && (!o.active() || o.main_pid != n.main_pid) {
                out.push(t(EventType::Started));
            }
            if n.ended() && !o.ended() {
                out.push(t(EventType::Stopped));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::exit::ExitKind;

    fn v(active: &str, sub: &str, pid: u32) -> View {
        View { active_state: active.into(), sub_state: sub.into(), main_pid: pid, ..Default::default() }
    }

    fn kinds(ts: &[Transition]) -> Vec<EventType> {
        ts.iter().map(|t| t.kind).collect()
    }

    #[test]
    fn a_crash_of_a_persistent_agent() {
        let running = v("active", "running", 10);
        let died = View {
            result: "exit-code".into(),
            exec_main_code: 1,
            exec_main_status: 3,
            ..v("activating", "auto-restart", 0)
        };
        let ts = transitions(Some(&running), Some(&died));
        assert_eq!(kinds(&ts), [EventType::Exited, EventType::Restarting]);
        assert_eq!(ts[0].exit.as_ref().unwrap().exit_code, Some(3));
        let back = View { n_restarts: 1, ..v("active", "running", 11) };
        assert_eq!(kinds(&transitions(Some(&died), Some(&back))), [EventType::Started]);
    }

    #[test]
    fn a_signal_death_and_a_stop() {
        let running = v("active", "running", 10);
        let killed =
            View { result: "signal".into(), exec_main_code: 2, exec_main_status: 9, ..v("failed", "failed", 0) };
        let ts = transitions(Some(&running), Some(&killed));
        assert_eq!(kinds(&ts), [EventType::Exited, EventType::Stopped]);
        let e = ts[0].exit.clone().unwrap();
        assert_eq!((e.kind, e.signal.as_deref()), (ExitKind::Signal, Some("SIGKILL")));
    }

    #[test]
    fn an_ended_unit_is_taken_back_to_life_only_by_a_fresh_read() {
        let stopped = v("inactive", "dead", 0);
        // A signal from before the read that found it stopped: deactivating again.
        let stale = v("deactivating", "stop-sigterm", 0);
        assert!(transitions(Some(&stopped), Some(&stale)).is_empty());
        assert!(needs_fresh_read(&stopped, &stale, &[]));
        let running = v("active", "running", 10);
        let ending = v("deactivating", "stop-sigterm", 10);
        assert!(!needs_fresh_read(&running, &ending, &transitions(Some(&running), Some(&ending))));
        let gone = v("inactive", "dead", 0);
        assert!(needs_fresh_read(&ending, &gone, &transitions(Some(&ending), Some(&gone))));
    }

    #[test]
    fn nothing_changes_nothing_is_reported() {
        let running = v("active", "running", 10);
        assert!(transitions(Some(&running), Some(&running)).is_empty());
        let partial = running.apply(&Change { sub_state: Some("running".into()), ..Default::default() });
        assert!(transitions(Some(&running), Some(&partial)).is_empty());
    }

    #[test]
    fn a_change_applies_to_the_snapshot_it_was_signalled_for() {
        let before = UnitSnapshot {
            unit: "u.service".into(),
            active_state: "activating".into(),
            sub_state: "auto-restart".into(),
            invocation_id: vec![1],
            exec_main_start_us: 5,
            n_restarts: 0,
            ..Default::default()
        };
        let c = Change {
            active_state: Some("active".into()),
            sub_state: Some("running".into()),
            main_pid: Some(42),
            n_restarts: Some(1),
            invocation_id: Some(vec![2]),
            exec_main_start_us: Some(9),
            ..Default::default()
        };
        let after = apply_to_snapshot(&before, &c);
        assert_eq!((after.main_pid, after.n_restarts, after.exec_main_start_us), (42, 1, 9));
        assert_eq!((after.invocation_id.as_slice(), after.unit.as_str()), (&[2u8][..], "u.service"));
        assert_eq!(apply_to_snapshot(&after, &Change::default()), after);
    }

    #[test]
    fn appear_and_vanish() {
        assert_eq!(
            kinds(&transitions(None, Some(&v("active", "running", 5)))),
            [EventType::Spawned, EventType::Started]
        );
        let gone = transitions(Some(&v("active", "running", 5)), None);
        assert_eq!(kinds(&gone), [EventType::Exited, EventType::Stopped, EventType::Removed]);
        assert_eq!(gone[0].exit.as_ref().unwrap().kind, ExitKind::Unknown, "vanished is never a success");
    }
}
