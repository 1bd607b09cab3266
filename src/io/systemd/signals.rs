//! The manager's signals, typed: every match rule and every signal body decoded in this one
//! place. Callers get [`Signal`]s (for `watch`), job outcomes (for anything that waits on a job)
//! and a unit's [`Change`]s (for the spawn's start view); no member names, no tuples.
//!
//! Match rules name no sender: on systemd's private socket the sender is not a unique name (it
//! stamps its well-known one), and a sender-bound rule would never match there.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use futures_util::StreamExt;
use zbus::{MatchRule, Message, MessageStream, OwnedObjectPath, OwnedVariant};

use super::manager::Manager;
use super::paths::unit_of_path;
use crate::error::Error;
use crate::model::events::Change;

/// `watch` reads every unit's changes: a burst (a reload amid spawns) must not stall the reader.
const WATCH_QUEUE: usize = 4096;
/// `JobRemoved` of every job, read while one job is awaited.
const JOB_QUEUE: usize = 256;
/// A unit emits a handful of change signals while it starts; the stream is read as they come.
const CHANGE_QUEUE: usize = 64;

/// One signal of the manager that `watch` acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// `PropertiesChanged` of a unit (its Unit or Service interface): the properties it carries.
    UnitChanged { unit: String, change: Change },
    /// `UnitNew`: a unit was loaded.
    UnitNew { unit: String },
    /// `UnitRemoved`: a unit was unloaded.
    UnitRemoved { unit: String },
    /// `Reloading`: a `daemon-reload` starts (`true`) or is done (`false`).
    Reloading { active: bool },
    /// `org.freedesktop.systemd1` has a new owner on the bus: the manager re-executed (or
    /// restarted), and may have forgotten its subscribers. Only on the bus.
    ManagerRestarted,
}

/// The signals `watch` follows, from [`Manager::signals`]: every unit's `PropertiesChanged`, the
/// manager's own signals, and (on the bus) the manager's name changing owner.
pub struct Signals {
    units: MessageStream,
    manager: MessageStream,
    owner: Option<MessageStream>,
}

impl Signals {
    /// The next signal. Signals of other kinds, and bodies that do not decode, are skipped. The
    /// end of a stream or a broken connection is `ManagerUnreachable`. Cancel-safe.
    pub async fn next(&mut self) -> Result<Signal, Error> {
        let Signals { units, manager, owner } = self;
        loop {
            let next_owner = async {
                match owner.as_mut() {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            };
            let signal = tokio::select! {
                m = units.next() => unit_changed(&received(m, "the signal stream ended")?),
                m = manager.next() => manager_signal(&received(m, "the signal stream ended")?),
                m = next_owner => manager_restarted(&received(m, "the bus signal stream ended")?)?,
            };
            if let Some(signal) = signal {
                return Ok(signal);
            }
        }
    }
}

/// How a job ended, as `JobRemoved` reports it: `done`, `failed`, `canceled`, `timeout`, ….
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    pub result: String,
}

/// `JobRemoved` signals of the manager.
pub struct JobStream(MessageStream);

/// What one message of a [`JobStream`] says about the job awaited.
pub(super) enum JobStep {
    /// The job ended.
    Removed(JobOutcome),
    /// Another job ended (or the message could not be read).
    Other,
    /// The stream ended: the connection is gone.
    Ended,
}

impl JobStream {
    /// Reads one message. Cancel-safe.
    pub(super) async fn step(&mut self, job: &OwnedObjectPath) -> JobStep {
        match self.0.next().await {
            None => JobStep::Ended,
            Some(m) => m.ok().and_then(|m| job_removed(&m, job)).map_or(JobStep::Other, JobStep::Removed),
        }
    }
}

/// `PropertiesChanged` of one unit, from [`Manager::unit_changes`].
pub(super) struct UnitChanges(MessageStream);

impl UnitChanges {
    /// The properties the next signal carries (none, for a message that could not be read);
    /// `None` when the stream ended. Cancel-safe.
    pub(super) async fn next(&mut self) -> Option<Change> {
        let m = self.0.next().await?;
        Some(m.ok().and_then(|m| properties(&m)).map(|changed| change_of_properties(&changed)).unwrap_or_default())
    }
}

impl Manager {
    /// The signals `watch` follows, subscribed before this returns.
    pub async fn signals(&self) -> Result<Signals, Error> {
        let conn = &self.conn;
        let rule = |b: zbus::match_rule::Builder<'static>| b.build().map_err(|e| lost(&e));
        let units = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.DBus.Properties")
            .member("PropertiesChanged")
            .path_namespace("/org/freedesktop/systemd1/unit");
        let manager = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.systemd1.Manager")
            .path("/org/freedesktop/systemd1");
        let queue = NonZeroUsize::new(WATCH_QUEUE);
        let stream = |r| MessageStream::for_match_rule(r, conn, queue);
        let units = stream(rule(units)?).await.map_err(|e| lost(&e))?;
        let manager = stream(rule(manager)?).await.map_err(|e| lost(&e))?;
        let owner = if conn.is_bus() {
            let r = MatchRule::builder()
                .msg_type(zbus::message::Type::Signal)
                .sender("org.freedesktop.DBus")
                .interface("org.freedesktop.DBus")
                .member("NameOwnerChanged")
                .arg(0, "org.freedesktop.systemd1")
                .build()
                .map_err(|e| lost(&e))?;
            Some(stream(r).await.map_err(|e| lost(&e))?)
        } else {
            None
        };
        Ok(Signals { units, manager, owner })
    }

    /// A stream of `JobRemoved`; create it *before* the call whose job it should see, and drop
    /// it when done: an unread stream stalls the connection once its queue is full.
    pub async fn job_removed_stream(&self) -> Result<JobStream, Error> {
        let rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.systemd1.Manager")
            .member("JobRemoved")
            .path("/org/freedesktop/systemd1")
            .build();
        let stream = self
            .bounded("AddMatch JobRemoved", async {
                MessageStream::for_match_rule(rule?, &self.conn, NonZeroUsize::new(JOB_QUEUE)).await
            })
            .await?;
        Ok(JobStream(stream))
    }

    /// Waits for `JobRemoved` of `job`, at most `wait`.
    pub async fn wait_job(
        &self,
        jobs: &mut JobStream,
        job: &OwnedObjectPath,
        unit: &str,
        wait: Duration,
    ) -> Result<JobOutcome, Error> {
        let found = tokio::time::timeout(wait, async {
            loop {
                match jobs.step(job).await {
                    JobStep::Removed(outcome) => return Some(outcome),
                    JobStep::Other => {}
                    JobStep::Ended => return None,
                }
            }
        })
        .await;
        match found {
            Ok(Some(outcome)) => Ok(outcome),
            Ok(None) => Err(Error::ManagerUnreachable { detail: "the manager's signal stream ended".into() }),
            Err(_) => Err(Error::Timeout { what: format!("the job of {unit} to finish"), after: wait }),
        }
    }

    /// `PropertiesChanged` of one unit. Peer to peer this costs nothing (systemd sends every
    /// signal); on the bus it is one `AddMatch`.
    pub(super) async fn unit_changes(&self, path: &OwnedObjectPath) -> Result<UnitChanges, Error> {
        let rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.DBus.Properties")
            .member("PropertiesChanged")
            .path(path.clone())
            .build();
        let stream = self
            .bounded("AddMatch PropertiesChanged", async {
                MessageStream::for_match_rule(rule?, &self.conn, NonZeroUsize::new(CHANGE_QUEUE)).await
            })
            .await?;
        Ok(UnitChanges(stream))
    }
}

/// The properties a `changed` dictionary carries; values of another type are ignored.
pub(super) fn change_of_properties(changed: &HashMap<String, OwnedVariant>) -> Change {
    fn get<T>(changed: &HashMap<String, OwnedVariant>, k: &str) -> Option<T>
    where
        T: TryFrom<OwnedVariant>,
    {
        changed.get(k).and_then(|v| v.try_clone().ok()).and_then(|v| T::try_from(v).ok())
    }
    Change {
        active_state: get(changed, "ActiveState"),
        sub_state: get(changed, "SubState"),
        main_pid: get(changed, "MainPID"),
        n_restarts: get(changed, "NRestarts"),
        result: get(changed, "Result"),
        exec_main_code: get(changed, "ExecMainCode"),
        exec_main_status: get(changed, "ExecMainStatus"),
        invocation_id: get(changed, "InvocationID"),
        exec_main_start_us: get(changed, "ExecMainStartTimestamp"),
    }
}

/// The `changed` dictionary of a `PropertiesChanged`.
fn properties(m: &Message) -> Option<HashMap<String, OwnedVariant>> {
    let (_iface, changed, _invalidated) =
        m.body().deserialize::<(String, HashMap<String, OwnedVariant>, Vec<String>)>().ok()?;
    Some(changed)
}

/// A `PropertiesChanged` of a unit (by its object path).
fn unit_changed(m: &Message) -> Option<Signal> {
    let unit = m.header().path().and_then(|p| unit_of_path(p.as_str()))?;
    let changed = properties(m)?;
    Some(Signal::UnitChanged { unit, change: change_of_properties(&changed) })
}

/// A signal of the manager's own interface.
fn manager_signal(m: &Message) -> Option<Signal> {
    let member = m.header().member().map(|n| n.to_string()).unwrap_or_default();
    // `UnitNew` and `UnitRemoved` carry (unit, path).
    let unit = || m.body().deserialize::<(String, OwnedObjectPath)>().ok().map(|(unit, _)| unit);
    match member.as_str() {
        "Reloading" => Some(Signal::Reloading { active: m.body().deserialize::<bool>().unwrap_or(false) }),
        "UnitNew" => unit().map(|unit| Signal::UnitNew { unit }),
        "UnitRemoved" => unit().map(|unit| Signal::UnitRemoved { unit }),
        _ => None,
    }
}

/// `NameOwnerChanged` of `org.freedesktop.systemd1`: a restart when there is a new owner.
fn manager_restarted(m: &Message) -> Result<Option<Signal>, Error> {
    let (_, _, new): (String, String, String) = m.body().deserialize().map_err(|e| lost(&e))?;
    Ok((!new.is_empty()).then_some(Signal::ManagerRestarted))
}

/// The outcome of `job`, if `msg` is its `JobRemoved`.
fn job_removed(msg: &Message, job: &OwnedObjectPath) -> Option<JobOutcome> {
    let (_id, path, _unit, result) = msg.body().deserialize::<(u32, OwnedObjectPath, String, String)>().ok()?;
    (path == *job).then_some(JobOutcome { result })
}

/// A stream's next item, or why there is none.
fn received(m: Option<zbus::Result<Message>>, what: &str) -> Result<Message, Error> {
    m.ok_or_else(|| Error::ManagerUnreachable { detail: what.to_string() })?.map_err(|e| lost(&e))
}

fn lost(e: &zbus::Error) -> Error {
    Error::ManagerUnreachable { detail: format!("connection to the manager lost: {e}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::Variant as Value;

    fn changed(pairs: Vec<(&str, Value<'static>)>) -> HashMap<String, OwnedVariant> {
        pairs.into_iter().map(|(k, v)| (k.to_string(), OwnedVariant::try_from(v).unwrap())).collect()
    }

    #[test]
    fn the_properties_watch_follows_are_decoded() {
        let c = change_of_properties(&changed(vec![
            ("ActiveState", Value::from("active")),
            ("SubState", Value::from("running")),
            ("MainPID", Value::from(42u32)),
            ("NRestarts", Value::from(2u32)),
            ("Result", Value::from("success")),
            ("ExecMainCode", Value::from(0i32)),
            ("ExecMainStatus", Value::from(0i32)),
            ("InvocationID", Value::from(vec![1u8, 2, 3])),
            ("ExecMainStartTimestamp", Value::from(7u64)),
            ("Description", Value::from("ignored")),
        ]));
        assert_eq!(
            c,
            Change {
                active_state: Some("active".into()),
                sub_state: Some("running".into()),
                main_pid: Some(42),
                n_restarts: Some(2),
                result: Some("success".into()),
                exec_main_code: Some(0),
                exec_main_status: Some(0),
                invocation_id: Some(vec![1, 2, 3]),
                exec_main_start_us: Some(7),
            }
        );
    }

    #[test]
    fn values_of_the_wrong_type_are_ignored() {
        let seen =
            change_of_properties(&changed(vec![("MainPID", Value::from("42")), ("ActiveState", Value::from(1u32))]));
        assert_eq!(seen, Change::default());
    }
}
