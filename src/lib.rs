//! agent-relay-systemd: every Agent Relay agent a transient systemd user unit, created and
//! watched over D-Bus. The house in layers:
//! - [`model`]: pure (requests, names, plans, unit properties, records, decisions);
//! - [`io`]: the shell (the systemd manager over zbus, files, host facts, tmux, the runner);
//! - [`ops`]: one file per operation, composing model and io;
//! - [`cli`]: the command line and its renderings; `doctor` keeps its pure-evaluate + probe shape.
//!
//! Imports run cli → ops → io → model, never back up.

// Only the sandbox (fork/exec into a cgroup, signal masks) needs unsafe; it says why at each use.
#![deny(unsafe_code)]

pub mod cli;
pub mod doctor;
pub mod error;
pub mod io;
pub mod model;
pub mod ops;

pub use error::Error;
pub use model::record::{AgentRecord, Liveness};
pub use model::request::SpawnRequest;
pub use ops::{SpawnOutcome, StopOutcome, Supervisor};
