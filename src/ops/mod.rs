//! The operations, one file each, composed from the pure model and the IO shell; this file owns
//! the connected [`Supervisor`] they all hang off, and the clock. systemd is the only state:
//! nothing here is cached between calls.

pub mod admission;
pub mod diagnose;
pub mod durable;
pub mod exec;
pub mod generate;
pub mod guests;
pub mod logs;
pub mod ready;
pub mod reap;
pub mod record_exit;
pub mod resources;
pub mod restart;
pub mod show;
pub mod spawn;
pub mod status;
pub mod stop;
pub mod terminal;
pub mod wait;
pub mod watch;

use std::time::Duration;

use crate::error::Error;
use crate::io::host::HostEnv;
use crate::io::systemd::{self, BusOptions, Manager};
use crate::model::config::Config;

pub use show::to_record;
pub use spawn::{plan_request, SpawnOutcome};
pub use stop::{StopOutcome, DEFAULT_STOP_TIMEOUT, KILL_GRACE, MAX_STOP_TIMEOUT};

/// A connected supervisor.
pub struct Supervisor {
    pub(crate) config: Config,
    pub(crate) host: HostEnv,
    pub(crate) mgr: Manager,
}

impl Supervisor {
    /// Connects to the user manager (private socket, else session bus); `timeout` bounds every call.
    pub async fn connect(config: Config, host: HostEnv, timeout: Duration) -> Result<Supervisor, Error> {
        let opts =
            BusOptions { session_address: host.session_bus.clone(), runtime_dir: host.runtime_dir.clone(), timeout };
        let bus = systemd::connect(&opts).await?;
        let mgr = Manager::new(bus, timeout).await?;
        Ok(Supervisor { config, host, mgr })
    }

    /// Another connection for calls only: no subscription, no signal streams to fill up.
    pub(crate) async fn connect_for_calls(&self) -> Result<Supervisor, Error> {
        let opts = BusOptions {
            session_address: self.host.session_bus.clone(),
            runtime_dir: self.host.runtime_dir.clone(),
            timeout: self.mgr.timeout(),
        };
        let mgr = Manager::unsubscribed(systemd::connect(&opts).await?, self.mgr.timeout()).await?;
        Ok(Supervisor { config: self.config.clone(), host: self.host.clone(), mgr })
    }

    /// Where transient agents' secrets and payloads live; without XDG_RUNTIME_DIR there is no
    /// user manager to run them either.
    pub(crate) fn runtime_root(&self) -> Result<std::path::PathBuf, Error> {
        self.host
            .runtime_root()
            .ok_or_else(|| Error::ManagerUnreachable { detail: "XDG_RUNTIME_DIR is not set".into() })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn manager(&self) -> &Manager {
        &self.mgr
    }
}

pub use crate::io::host::now_ms;
