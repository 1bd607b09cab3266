//! agent-relay-systemd: every Agent Relay agent a transient systemd user unit, created and
//! watched over D-Bus. The pure core (names, requests, plans, unit properties, records) is kept
//! apart from the IO shell (the systemd manager over zbus, files, the host).

pub mod cli;
pub mod config;
pub mod diagnose;
pub mod doctor;
pub mod durable;
pub mod error;
pub mod events;
pub mod exit;
pub mod exits;
pub mod guest;
pub mod guests;
pub mod host;
pub mod limits;
pub mod logtext;
pub mod meta;
pub mod naming;
pub mod output;
pub mod plan;
pub mod reap;
pub mod reaper;
pub mod record;
pub mod recorder;
pub mod request;
pub mod sandbox;
pub mod supervisor;
pub mod systemd;
pub mod unit;
pub mod unitfile;
pub mod watch;

pub use error::Error;
pub use record::{AgentRecord, Liveness};
pub use request::SpawnRequest;
pub use supervisor::{SpawnOutcome, StopOutcome, Supervisor};
