//! The systemd manager boundary: the verbs this tool needs, in its own words. Every call is
//! bounded (the connection's method timeout, plus explicit bounds on waits for signals).

use std::time::Duration;

use zbus::proxy::CacheProperties;

use zbus::{Connection, DBusError, OwnedObjectPath};
use zbus_systemd::systemd1::{ManagerProxy, ServiceProxy, UnitProxy};

use super::bus::Bus;
use super::paths::path_of_unit;
use crate::error::Error;
use crate::model::record::UnitSnapshot;

mod facts;
mod listing;
pub use facts::ManagerInfo;
pub use listing::Listing;

use crate::error::dbus_name::{ALREADY_SUBSCRIBED, NO_SUCH_UNIT};

/// One row of `ListUnitsByPatterns`.
#[derive(Debug, Clone)]
pub struct Listed {
    pub unit: String,
    pub description: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    pub path: OwnedObjectPath,
}

/// A connection to the user manager, subscribed to its signals.
pub struct Manager {
    pub(super) conn: Connection,
    pub(super) proxy: ManagerProxy<'static>,
    pub(super) timeout: Duration,
    p2p: bool,
    /// The manager's `Version`, read once per connection (every spawn needs it).
    pub(super) version: tokio::sync::OnceCell<String>,
}

impl Manager {
    /// Wraps a connection and subscribes to unit/job signals: on the bus systemd only sends them
    /// to subscribers; a direct connection gets them unconditionally (no round trip needed).
    pub async fn new(bus: Bus, timeout: Duration) -> Result<Manager, Error> {
        let mgr = Manager::unsubscribed(bus, timeout).await?;
        mgr.subscribe().await?;
        Ok(mgr)
    }

    /// A connection for one-off reads that need no signals.
    pub async fn unsubscribed(bus: Bus, timeout: Duration) -> Result<Manager, Error> {
        let proxy = ManagerProxy::builder(&bus.conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| map_err("connecting to the manager", timeout, e))?;
        Ok(Manager { conn: bus.conn, proxy, timeout, p2p: bus.p2p, version: tokio::sync::OnceCell::new() })
    }

    /// `Subscribe` (again: a re-executed manager forgets its subscribers); a no-op peer to peer.
    pub async fn subscribe(&self) -> Result<(), Error> {
        if self.p2p {
            return Ok(());
        }
        self.bounded("Subscribe", self.proxy.subscribe()).await
    }

    /// `Subscribe` after the manager re-executed: one that kept this subscription across the
    /// re-execution answers `AlreadySubscribed`, which is as good as subscribed.
    pub async fn resubscribe(&self) -> Result<(), Error> {
        if self.p2p {
            return Ok(());
        }
        match tokio::time::timeout(self.timeout, self.proxy.subscribe()).await {
            Err(_) => Err(Error::Timeout { what: "Subscribe".to_string(), after: self.timeout }),
            Ok(Err(e)) if error_name(&e).as_deref() == Some(ALREADY_SUBSCRIBED) => Ok(()),
            Ok(r) => r.map_err(|e| map_err("Subscribe", self.timeout, e)),
        }
    }

    /// A unit's `org.freedesktop.systemd1.Unit` interface; never cached: every read asks systemd.
    pub(super) fn unit_proxy(&self, path: &OwnedObjectPath) -> zbus::proxy::Builder<'static, UnitProxy<'static>> {
        UnitProxy::builder(&self.conn).path(path.clone()).cache_properties(CacheProperties::No)
    }

    /// A unit's `org.freedesktop.systemd1.Service` interface; never cached.
    pub(super) fn service_proxy(&self, path: &OwnedObjectPath) -> zbus::proxy::Builder<'static, ServiceProxy<'static>> {
        ServiceProxy::builder(&self.conn).path(path.clone()).cache_properties(CacheProperties::No)
    }

    /// Peer to peer on systemd's private socket (not through a bus daemon).
    pub fn is_p2p(&self) -> bool {
        self.p2p
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(super) async fn bounded<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = zbus::Result<T>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(|e| map_err(what, self.timeout, e)),
            Err(_) => Err(Error::Timeout { what: what.to_string(), after: self.timeout }),
        }
    }

    /// A loaded unit's `ActiveState` from the listing (one call, never loads the unit).
    pub async fn unit_state(&self, unit: &str) -> Result<Option<String>, Error> {
        Ok(self.list_units(&[unit.to_string()]).await?.into_iter().next().map(|l| l.active_state))
    }

    /// The properties a list record needs beyond what the listing carried: 13 reads in flight at
    /// once (the exit timestamp and pid, needed only by `diagnose`, are left out).
    pub async fn snapshot_listed(&self, l: &Listed) -> Result<UnitSnapshot, Error> {
        let what = format!("reading properties of {}", l.unit);
        let mut snap = self.bounded(&what, self.read_core(&l.unit, &l.path)).await?;
        snap.description = l.description.clone();
        snap.load_state = l.load_state.clone();
        snap.active_state = l.active_state.clone();
        snap.sub_state = l.sub_state.clone();
        Ok(snap)
    }

    /// The 13 reads every record needs, in flight at once (a 14th, `ActiveEnterTimestamp`, only
    /// when the main process never started).
    async fn read_core(&self, unit: &str, path: &OwnedObjectPath) -> zbus::Result<UnitSnapshot> {
        let u = self.unit_proxy(path).build();
        let s = self.service_proxy(path).build();
        let (u, s) = futures_util::try_join!(u, s)?;
        // One join: all 14 requests are written before the first reply is awaited (two joins in
        // a row would cost two round trips).
        let (run, rest) = futures_util::try_join!(
            async {
                futures_util::try_join!(
                    u.invocation_id(),
                    s.main_pid(),
                    s.n_restarts(),
                    s.result(),
                    s.exec_main_code(),
                    s.exec_main_status(),
                    u.transient()
                )
            },
            async {
                futures_util::try_join!(
                    s.exec_main_start_timestamp(),
                    s.working_directory(),
                    s.log_extra_fields(),
                    s.memory_max(),
                    s.memory_high(),
                    s.tasks_max(),
                    s.cpu_quota_per_sec_u_sec()
                )
            }
        )?;
        let (invocation_id, main_pid, n_restarts, result, exec_main_code, exec_main_status, transient) = run;
        let (exec_main_start_us, working_directory, log_extra_fields, memory_max, memory_high, tasks_max, cpu) = rest;
        // The activation time only stands in for a main process that never started: one more
        // read for those units alone.
        let active_enter_us = match exec_main_start_us {
            0 => u.active_enter_timestamp().await?,
            _ => 0,
        };
        Ok(UnitSnapshot {
            unit: unit.to_string(),
            invocation_id,
            main_pid,
            n_restarts,
            result,
            exec_main_code,
            exec_main_status,
            exec_main_start_us,
            memory_max,
            memory_high,
            tasks_max,
            cpu_quota_per_sec_usec: cpu,
            active_enter_us,
            working_directory,
            log_extra_fields,
            durable: !transient,
            ..Default::default()
        })
    }

    /// The object path of a loaded unit, `None` when systemd does not know it.
    pub async fn unit_path(&self, unit: &str) -> Result<Option<OwnedObjectPath>, Error> {
        let call = async { self.proxy.get_unit(unit.to_string()).await.map(Some) };
        self.unit_call(format!("GetUnit {unit}"), call, None).await
    }

    /// Reads everything about one unit, all requests in flight at once.
    pub async fn snapshot(&self, unit: &str, path: &OwnedObjectPath) -> Result<UnitSnapshot, Error> {
        let what = format!("reading properties of {unit}");
        let rest = async {
            let u = self.unit_proxy(path).build();
            let s = self.service_proxy(path).build();
            let (u, s) = futures_util::try_join!(u, s)?;
            futures_util::try_join!(
                u.description(),
                u.load_state(),
                u.active_state(),
                u.sub_state(),
                s.exec_main_exit_timestamp(),
                s.exec_main_pid()
            )
        };
        let both = async { futures_util::try_join!(self.read_core(unit, path), rest) };
        let (mut snap, (description, load_state, active_state, sub_state, exit_us, exec_pid)) =
            self.bounded(&what, both).await?;
        snap.description = description;
        snap.load_state = load_state;
        snap.active_state = active_state;
        snap.sub_state = sub_state;
        snap.exec_main_exit_us = exit_us;
        snap.exec_main_pid = exec_pid;
        Ok(snap)
    }

    /// A call about one unit: bounded, and `missing` when systemd does not know the unit.
    async fn unit_call<T>(
        &self,
        what: String,
        fut: impl std::future::Future<Output = zbus::Result<T>>,
        missing: T,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => Err(Error::Timeout { what, after: self.timeout }),
            Ok(Err(e)) if error_name(&e).as_deref() == Some(NO_SUCH_UNIT) => Ok(missing),
            Ok(r) => r.map_err(|e| map_err(&what, self.timeout, e)),
        }
    }

    /// `StopUnit` (mode `replace`); returns the job, `None` when the unit is not loaded.
    pub async fn stop_unit(&self, unit: &str) -> Result<Option<OwnedObjectPath>, Error> {
        let call = async { self.proxy.stop_unit(unit.to_string(), "replace".to_string()).await.map(Some) };
        self.unit_call(format!("StopUnit {unit}"), call, None).await
    }

    /// `KillUnit`: `whom` is `main`, `control` or `all`.
    pub async fn kill_unit(&self, unit: &str, whom: &str, signal: i32) -> Result<(), Error> {
        let call = self.proxy.kill_unit(unit.to_string(), whom.to_string(), signal);
        self.unit_call(format!("KillUnit {unit}"), call, ()).await
    }

    /// `ResetFailedUnit`; a unit that is not loaded or not failed is fine.
    pub async fn reset_failed(&self, unit: &str) -> Result<(), Error> {
        self.unit_call(format!("ResetFailedUnit {unit}"), self.proxy.reset_failed_unit(unit.to_string()), ()).await
    }

    /// Pids in the unit's control group (empty when the unit is gone).
    pub async fn unit_pids(&self, unit: &str) -> Result<Vec<u32>, Error> {
        let call = async {
            let procs = self.proxy.get_unit_processes(unit.to_string()).await?;
            Ok(procs.into_iter().map(|p| p.1).collect())
        };
        self.unit_call(format!("GetUnitProcesses {unit}"), call, Vec::new()).await
    }

    /// The unit's `EnvironmentFiles=` paths (empty when the unit is gone).
    pub async fn environment_files(&self, unit: &str) -> Result<Vec<std::path::PathBuf>, Error> {
        let path = OwnedObjectPath::try_from(path_of_unit(unit)).map_err(|e| map_err(unit, self.timeout, e))?;
        let call = async {
            let s = self.service_proxy(&path).build().await?;
            Ok(s.environment_files().await?.into_iter().map(|(p, _)| p.into()).collect())
        };
        self.unit_call(format!("reading EnvironmentFiles of {unit}"), call, Vec::new()).await
    }
}

/// The D-Bus error name of a method error reply, if it is one.
pub fn error_name(e: &zbus::Error) -> Option<String> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.to_string()),
        zbus::Error::FDO(fdo) => Some(fdo.name().to_string()),
        _ => None,
    }
}

/// Lifts a zbus error into the library's: time-outs and an absent manager get their own kinds.
pub fn map_err(what: &str, timeout: Duration, e: zbus::Error) -> Error {
    if let zbus::Error::InputOutput(io) = &e {
        if io.kind() == std::io::ErrorKind::TimedOut {
            return Error::Timeout { what: what.to_string(), after: timeout };
        }
    }
    match error_name(&e).as_deref() {
        Some("org.freedesktop.DBus.Error.ServiceUnknown")
        | Some("org.freedesktop.DBus.Error.NameHasNoOwner")
        | Some("org.freedesktop.DBus.Error.NoReply") => Error::ManagerUnreachable { detail: format!("{what}: {e}") },
        Some("org.freedesktop.DBus.Error.Timeout") | Some("org.freedesktop.DBus.Error.TimedOut") => {
            Error::Timeout { what: what.to_string(), after: timeout }
        }
        name => {
            let name = name.map(str::to_string);
            match e {
                zbus::Error::MethodError(_, Some(msg), _) => {
                    Error::Systemd { op: what.to_string(), name, message: msg }
                }
                other => Error::Systemd { op: what.to_string(), name, message: other.to_string() },
            }
        }
    }
}

mod accounting;
mod install;
