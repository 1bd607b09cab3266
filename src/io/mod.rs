//! The IO shell: everything that touches the outside world. The systemd user manager over D-Bus
//! (`systemd`), host facts and the one path layout (`host`), the exit-record store, and the
//! throwaway manager of the tests (`sandbox`). Each boundary's verbs speak the domain and every
//! call across it is bounded; decisions are the model's.

pub mod config_file;
pub mod exit_store;
pub mod files;
pub mod host;
pub mod log_file;
pub mod runner;
pub mod sandbox;
pub mod systemd;
pub mod tmux;
