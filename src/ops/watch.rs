//! `watch`: a long-running stream of agent events driven by the manager's D-Bus signals (no
//! polling). Survives `daemon-reload` (changes are verified against fresh properties before an
//! exit is reported), `daemon-reexec` and lost connections (reconnects, resubscribes, reconciles
//! from a fresh list and says so). Events go to a bounded queue the caller drains; when the
//! reader is slow, events are dropped and counted (a `lagged` event), never buffered without
//! bound, and the D-Bus connection is never stalled.

use std::collections::HashMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::io::host::HostEnv;
use crate::io::systemd::Signal;
use crate::model::config::Config;
use crate::model::contract::SchemaVersion;
use crate::model::events::{self, Change, EventType, View};
use crate::model::exit::ExitInfo;
use crate::model::naming;
use crate::model::record::{self, AgentRecord, ProcState, UnitSnapshot};
use crate::ops::{now_ms, Supervisor};

/// One line of `watch` output. `unit` and `agent` come with the events about one agent, `exit`
/// with `exited`, `agents` with `ready`, `dropped` with `lagged`, `detail` (text for people) with
/// `ready`, `disconnected`, `reconnected` and `lagged`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WatchEvent {
    /// The JSON contract's version.
    pub schema_version: SchemaVersion,
    /// 1 for the first event this watcher emits, then one more for each: a reader that sees a gap
    /// lost lines (the watcher itself never skips a number; what it drops, `lagged` counts).
    pub seq: u64,
    /// spawned, started, exited, restarting, stopped, removed; and snapshot, ready,
    /// disconnected, reconnected, lagged about the stream itself.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// ms since the epoch.
    pub time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    // Boxed: an event waits in the queue for the writer, and 2000 agents' snapshots at once
    // would otherwise hold 2000 records inline in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<Box<AgentRecord>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
    /// `ready`: how many agents the snapshot held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<u64>,
    /// `lagged`: how many events were dropped for a slow reader since the last line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn meta(kind: EventType, detail: Option<String>) -> WatchEvent {
    WatchEvent {
        schema_version: SchemaVersion::CURRENT,
        seq: 0,
        kind,
        time: now_ms(),
        unit: None,
        agent: None,
        exit: None,
        agents: None,
        dropped: None,
        detail,
    }
}

/// What is kept of one agent between events: its properties, not its record (made from them
/// when an event carries it), so that following 2000 agents holds 2000 snapshots and no more.
struct Tracked {
    /// The unit's properties as last read, with every change signalled since applied: the
    /// record of an event is made from it after the change. Its `LogExtraFields` are in `fields`.
    snap: UnitSnapshot,
    fields: Packed,
    view: View,
    /// The main pid last reported as `started`: one run, one `started`.
    announced: u32,
}

impl Tracked {
    /// The properties with their `LogExtraFields`.
    fn full(&self) -> UnitSnapshot {
        UnitSnapshot { log_extra_fields: self.fields.unpack(), ..self.snap.clone() }
    }
}

/// A unit's `LogExtraFields` in one allocation, each field its length (u32) then its bytes:
/// twenty-odd fields of ~50 bytes, each its own allocation, were most of what `watch` held per
/// agent.
struct Packed(Box<[u8]>);

impl Packed {
    fn pack(fields: &[Vec<u8>]) -> Packed {
        let mut bytes = Vec::with_capacity(fields.iter().map(|f| f.len() + 4).sum());
        for f in fields {
            bytes.extend_from_slice(&(f.len() as u32).to_le_bytes());
            bytes.extend_from_slice(f);
        }
        Packed(bytes.into_boxed_slice())
    }

    fn unpack(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = &self.0[..];
        while let Some((len, tail)) = rest.split_first_chunk::<4>() {
            let len = (u32::from_le_bytes(*len) as usize).min(tail.len());
            out.push(tail[..len].to_vec());
            rest = &tail[len..];
        }
        out
    }
}

/// The watcher's state across reconnections.
pub struct Watcher {
    config: Config,
    host: HostEnv,
    timeout: Duration,
    out: mpsc::Sender<WatchEvent>,
    dropped: u64,
    /// The `seq` of the last event emitted.
    seq: u64,
    /// `snapshot` and `ready` were emitted: later sessions reconcile and say `reconnected`.
    ready: bool,
    /// Boxed: the table itself stays small (a pointer per slot) as it grows.
    tracked: HashMap<String, Box<Tracked>>,
    /// Spawns waiting for admission, by the unit they will have, as last reported.
    queued: HashMap<String, AgentRecord>,
    /// How long an outage may last before `run` gives up.
    give_up: Option<Duration>,
}

/// How often `watch` looks at the admission queue.
const QUEUE_POLL: Duration = Duration::from_millis(250);
/// Snapshot events queued at once at start: one per agent would hold every agent's record in the
/// queue at once (2000 agents, 4 MiB) before the writer caught up.
const SNAPSHOT_BURST: usize = 256;
/// How long the snapshot waits for a writer that drains nothing: then it goes on, dropping (and
/// counting) what does not fit, as for any slow reader.
const SNAPSHOT_STALL: Duration = Duration::from_millis(200);

impl Watcher {
    pub fn new(config: Config, host: HostEnv, timeout: Duration, out: mpsc::Sender<WatchEvent>) -> Watcher {
        Watcher {
            config,
            host,
            timeout,
            out,
            dropped: 0,
            seq: 0,
            ready: false,
            tracked: HashMap::new(),
            queued: HashMap::new(),
            give_up: None,
        }
    }

    /// Runs until the receiver is dropped. Connection problems are reported as events and
    /// retried with backoff; only a closed output ends it.
    ///
    /// `connected` is used for the first session (the caller has usually just connected to fail
    /// fast); later sessions connect anew.
    pub async fn run(mut self, mut connected: Option<Supervisor>) -> Result<(), Error> {
        let mut backoff = Duration::from_millis(100);
        let mut outage = false;
        let mut outage_since: Option<tokio::time::Instant> = None;
        while !self.out.is_closed() {
            let sup = match connected.take() {
                Some(sup) => Ok(sup),
                None => Supervisor::connect(self.config.clone(), self.host.clone(), self.timeout).await,
            };
            match async { self.session(sup?, &mut outage).await }.await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    // One event per outage, not one per retry.
                    // `session` clears `outage` once connected again: a new outage starts its clock.
                    if !outage {
                        self.emit(meta(EventType::Disconnected, Some(e.to_string())));
                        outage = true;
                        outage_since = Some(tokio::time::Instant::now());
                    }
                    let since = outage_since.unwrap_or_else(tokio::time::Instant::now);
                    if let Some(limit) = self.give_up.filter(|l| since.elapsed() >= *l) {
                        let detail =
                            format!("giving up: unreachable for {} s (watch --give-up-after)", limit.as_secs());
                        self.emit(meta(EventType::Disconnected, Some(format!("{detail}; last error: {e}"))));
                        return Err(Error::ManagerUnreachable { detail });
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        Ok(())
    }

    /// Ends [`Watcher::run`] with [`Error::ManagerUnreachable`] once the manager has been
    /// unreachable for `limit` without a break (`None`: retry for ever).
    pub fn give_up_after(mut self, limit: Option<Duration>) -> Watcher {
        self.give_up = limit;
        self
    }

    /// Events in the queue, not yet taken by the writer.
    fn queued(&self) -> usize {
        self.out.max_capacity() - self.out.capacity()
    }

    /// Waits until the writer has taken half of [`SNAPSHOT_BURST`] (or the output closed), or
    /// until it took nothing for [`SNAPSHOT_STALL`].
    async fn drained(&self) {
        let mut left = self.queued();
        let mut progress = tokio::time::Instant::now();
        while left > SNAPSHOT_BURST / 2 && !self.out.is_closed() && progress.elapsed() < SNAPSHOT_STALL {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let now = self.queued();
            if now < left {
                progress = tokio::time::Instant::now();
            }
            left = now;
        }
    }

    fn emit(&mut self, ev: WatchEvent) {
        if self.dropped > 0 {
            let lag = WatchEvent {
                dropped: Some(self.dropped),
                ..meta(
                    EventType::Lagged,
                    Some(format!("{} events dropped: the reader is slow; run `list` to resync", self.dropped)),
                )
            };
            if !self.send(lag) {
                self.dropped += 1;
                return;
            }
            self.dropped = 0;
        }
        if !self.send(ev) {
            self.dropped += 1;
        }
    }

    /// Queues one event with the next `seq`; false when the queue is full (or closed).
    fn send(&mut self, mut ev: WatchEvent) -> bool {
        ev.seq = self.seq + 1;
        match self.out.try_send(ev) {
            Ok(()) => {
                self.seq += 1;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => false,
            // Nobody reads any more: `run` notices and ends.
            Err(mpsc::error::TrySendError::Closed(_)) => true,
        }
    }

    fn agent_event(&mut self, unit: &str, kind: EventType, exit: Option<ExitInfo>) {
        self.agent_event_as(unit, kind, exit, None)
    }

    /// [`Watcher::agent_event`] carrying `record` instead of the record of the tracked properties.
    fn agent_event_as(&mut self, unit: &str, kind: EventType, exit: Option<ExitInfo>, record: Option<&AgentRecord>) {
        if kind == EventType::Started {
            match self.tracked.get_mut(unit) {
                Some(t) if t.announced == t.view.main_pid => return,
                Some(t) => t.announced = t.view.main_pid,
                None => {}
            }
        }
        match record {
            Some(r) => self.emit(WatchEvent {
                unit: Some(unit.to_string()),
                agent: Some(Box::new(r.clone())),
                exit,
                ..meta(kind, None)
            }),
            None => self.agent_event_named(unit, kind, exit),
        }
    }

    /// One connection's life. `Ok` only when the output is closed.
    async fn session(&mut self, sup: Supervisor, outage: &mut bool) -> Result<(), Error> {
        let mut signals = sup.manager().signals().await?;
        // Reads go on a connection of their own. zbus's reader blocks on a full stream queue, so
        // on one shared connection a burst of signals arriving while we await a reply held up
        // that very reply for a whole --timeout (seen after ~50 daemon-reloads amid spawns).
        let calls = sup.connect_for_calls().await?;
        if !self.ready {
            // What runs already is the snapshot, not news: no `spawned` or `started` for it.
            self.reconcile_as(&calls, Announce::Quietly).await?;
            *outage = false;
            for unit in self.sorted_units() {
                if self.queued() >= SNAPSHOT_BURST {
                    self.drained().await;
                }
                self.agent_event_named(&unit, EventType::Snapshot, None);
            }
            let agents = self.tracked.len() as u64;
            self.emit(WatchEvent { agents: Some(agents), ..meta(EventType::Ready, Some(format!("{agents} agents"))) });
            self.ready = true;
        } else {
            self.reconcile(&calls).await?;
            *outage = false;
            self.emit(meta(EventType::Reconnected, Some("resubscribed and reconciled from a fresh list".into())));
        }
        let mut reloading = false;
        let mut queue_tick = tokio::time::interval(QUEUE_POLL);
        queue_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.out.is_closed() {
                return Ok(());
            }
            let signal = tokio::select! {
                s = signals.next() => s?,
                _ = queue_tick.tick() => {
                    self.poll_queue();
                    continue;
                }
            };
            match signal {
                Signal::UnitChanged { unit, change } => {
                    if !reloading {
                        self.on_properties(&calls, &unit, change).await?;
                    }
                }
                Signal::Reloading { active } => {
                    reloading = active;
                    if !active {
                        self.reconcile(&calls).await?;
                    }
                }
                Signal::UnitNew { unit } if !reloading => {
                    if self.ours(&unit) && !self.tracked.contains_key(&unit) {
                        self.refresh(&calls, &unit).await?;
                    }
                }
                Signal::UnitRemoved { unit } if !reloading => {
                    if self.tracked.contains_key(&unit) {
                        self.refresh(&calls, &unit).await?;
                    }
                }
                Signal::UnitNew { .. } | Signal::UnitRemoved { .. } => {}
                Signal::ManagerRestarted => {
                    // A re-executed manager may have forgotten our subscription.
                    sup.manager().resubscribe().await?;
                    self.reconcile(&calls).await?;
                    self.emit(meta(
                        EventType::Reconnected,
                        Some("the manager re-executed; resubscribed and reconciled".into()),
                    ));
                }
            }
        }
    }

    /// `queued` for a spawn that entered the admission queue or whose place or reason changed;
    /// `dequeued` for one that left it (admitted: its `spawned` follows; or given up).
    fn poll_queue(&mut self) {
        let now = crate::ops::admission::queued_records(&self.config, &self.host);
        let mut left: Vec<String> =
            self.queued.keys().filter(|u| !now.iter().any(|r| &r.systemd_unit == *u)).cloned().collect();
        left.sort();
        for unit in left {
            let record = self.queued.remove(&unit).map(Box::new);
            let detail = if self.tracked.contains_key(&unit) { "admitted" } else { "left the queue" };
            self.emit(WatchEvent { unit: Some(unit), agent: record, ..meta(EventType::Dequeued, Some(detail.into())) });
        }
        for r in now {
            if self.queued.get(&r.systemd_unit).is_some_and(|old| old.queue == r.queue) {
                continue;
            }
            self.queued.insert(r.systemd_unit.clone(), r.clone());
            let detail = r.queue.as_ref().map(|q| format!("#{} {}", q.position, q.reason));
            self.emit(WatchEvent {
                unit: Some(r.systemd_unit.clone()),
                agent: Some(Box::new(r)),
                ..meta(EventType::Queued, detail)
            });
        }
    }

    fn ours(&self, unit: &str) -> bool {
        naming::session_of_unit(unit, &self.config.tmux_prefix).is_some()
    }

    fn sorted_units(&self) -> Vec<String> {
        let mut units: Vec<String> = self.tracked.keys().cloned().collect();
        units.sort();
        units
    }

    /// An event about one agent, carrying its record as it is now (after the change).
    fn agent_event_named(&mut self, unit: &str, kind: EventType, exit: Option<ExitInfo>) {
        let agent = self.tracked.get(unit).and_then(|t| self.record_of(&t.full())).map(Box::new);
        self.emit(WatchEvent { unit: Some(unit.to_string()), agent, exit, ..meta(kind, None) });
    }

    /// The record of tracked properties; the main process as the properties say (no /proc read).
    fn record_of(&self, snap: &UnitSnapshot) -> Option<AgentRecord> {
        let proc = if snap.main_pid > 0 { ProcState::Running } else { ProcState::Gone };
        record::agent_record(snap, proc, &self.host.home)
    }

    async fn on_properties(&mut self, sup: &Supervisor, unit: &str, change: Change) -> Result<(), Error> {
        if !self.ours(unit) {
            return Ok(());
        }
        let Some((old, snap)) = self.tracked.get(unit).map(|t| (t.view.clone(), t.full())) else {
            return self.refresh(sup, unit).await;
        };
        let new = old.apply(&change);
        let ts = events::transitions(Some(&old), Some(&new));
        if events::needs_fresh_read(&old, &new, &ts) {
            return self.refresh(sup, unit).await;
        }
        self.track(unit, events::apply_to_snapshot(&snap, &change));
        for t in ts {
            self.agent_event(unit, t.kind, t.exit);
        }
        Ok(())
    }

    /// Re-reads one unit and reports what changed since the tracked view.
    async fn refresh(&mut self, sup: &Supervisor, unit: &str) -> Result<(), Error> {
        let snap = sup.snapshot(unit).await?;
        self.settle(unit, snap);
        Ok(())
    }

    /// Reads every agent unit and reports differences from what is tracked.
    async fn reconcile(&mut self, sup: &Supervisor) -> Result<(), Error> {
        self.reconcile_as(sup, Announce::Changes).await
    }

    async fn reconcile_as(&mut self, sup: &Supervisor, announce: Announce) -> Result<(), Error> {
        let snaps = sup.snapshots().await?;
        let mut seen = std::collections::HashSet::new();
        for s in snaps {
            seen.insert(s.unit.clone());
            let unit = s.unit.clone();
            match announce {
                Announce::Changes => self.settle(&unit, Some(s)),
                Announce::Quietly => {
                    self.track(&unit, s);
                }
            }
        }
        let vanished: Vec<String> = self.tracked.keys().filter(|u| !seen.contains(*u)).cloned().collect();
        for unit in vanished {
            self.settle(&unit, None);
        }
        Ok(())
    }

    /// Tracks a unit's properties (and its record made from them) without reporting anything;
    /// false when the unit carries no agent metadata.
    fn track(&mut self, unit: &str, mut snap: UnitSnapshot) -> bool {
        if self.record_of(&snap).is_none() {
            return false;
        }
        let view = view_of(&snap);
        let fields = Packed::pack(&std::mem::take(&mut snap.log_extra_fields));
        match self.tracked.get_mut(unit) {
            Some(t) => {
                t.snap = snap;
                t.fields = fields;
                t.view = view;
            }
            None => {
                self.tracked.insert(unit.to_string(), Box::new(Tracked { snap, fields, view, announced: 0 }));
            }
        }
        true
    }

    fn settle(&mut self, unit: &str, snap: Option<UnitSnapshot>) {
        let old = self.tracked.get(unit).map(|t| t.view.clone());
        if let (None, Some(o)) = (&snap, &old) {
            // systemd never unloads a unit whose main process lives, so a read that missed the unit
            // while its runner still runs in the unit's cgroup (a manager in the middle of a
            // re-execution) is no evidence of an exit. The unit's next signal, or the next
            // reconcile, settles it.
            if o.main_pid > 0 && crate::io::host::runs_in_unit(o.main_pid, unit) {
                tracing::debug!(unit, pid = o.main_pid, "unit not found while its main process runs; not an exit");
                return;
            }
        }
        let new_view = snap.as_ref().map(view_of);
        let mut ts = events::transitions(old.as_ref(), new_view.as_ref());
        if snap.is_none() {
            // Gone from systemd: the exit, if any, comes from our ExecStopPost record.
            let recorded = self.recorded_exit(unit);
            for t in ts.iter_mut().filter(|t| t.kind == EventType::Exited) {
                if let Some(e) = recorded.clone() {
                    t.exit = Some(e);
                }
            }
        }
        match snap {
            Some(s) => {
                if !self.track(unit, s) {
                    return;
                }
                for t in ts {
                    self.agent_event(unit, t.kind, t.exit);
                }
            }
            None => {
                // Gone from systemd, and no process of it runs there (see above): the events
                // carry the agent as it is now, dead and unloaded.
                let gone = self.tracked.get(unit).and_then(|t| self.record_of(&t.full())).map(|mut r| {
                    r.active_state = "inactive".into();
                    r.sub_state = "dead".into();
                    r.pid = None;
                    r.state = record::Liveness::Dead;
                    r
                });
                for t in ts {
                    self.agent_event_as(unit, t.kind, t.exit, gone.as_ref());
                }
                self.tracked.remove(unit);
            }
        }
    }

    fn recorded_exit(&self, unit: &str) -> Option<ExitInfo> {
        let t = self.tracked.get(unit)?;
        let session = naming::session_of_unit(unit, &self.config.tmux_prefix)?;
        let dir = crate::io::exit_store::exits_dir(&self.host.state_home);
        let recs = crate::io::exit_store::read_session(&dir, session);
        recs.iter().rev().find(|r| r.is_run(&t.snap.invocation_id)).map(crate::model::exit::classify_record)
    }
}

/// Whether a reconcile reports what it finds (after a reconnect) or only takes it in (at start).
#[derive(Clone, Copy)]
enum Announce {
    Changes,
    Quietly,
}

fn view_of(s: &UnitSnapshot) -> View {
    View {
        active_state: s.active_state.clone(),
        sub_state: s.sub_state.clone(),
        main_pid: s.main_pid,
        n_restarts: s.n_restarts,
        result: s.result.clone(),
        exec_main_code: s.exec_main_code,
        exec_main_status: s.exec_main_status,
    }
}

#[cfg(test)]
mod tests {
    use super::Packed;

    #[test]
    fn packed_fields_unpack_as_they_were() {
        for fields in [vec![], vec![vec![]], vec![b"A=1".to_vec(), vec![], vec![0xff; 300], "K=é".as_bytes().to_vec()]]
        {
            assert_eq!(Packed::pack(&fields).unpack(), fields);
        }
    }
}
