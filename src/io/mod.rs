//! The IO shell: everything that touches the outside world. The systemd user manager over D-Bus
//! (`systemd`), host facts and paths (`host`), our files and locks (`files`), the config file,
//! the exit-record store, agent logs and their writer (`log_tee`), the runner's files and control URL (`runner`), tmux, and
//! the throwaway manager of the tests (`sandbox`). Each boundary's verbs speak the domain and
//! every call across it is bounded; decisions are the model's.

pub mod admission;
pub mod agent_dirs;
pub mod cgroup_procs;
pub mod config_file;
pub mod exit_store;
pub mod files;
#[allow(unsafe_code)]
pub mod host;
pub(crate) mod log_file;
#[allow(unsafe_code)]
pub mod log_tee;
pub mod nofollow;
pub mod runner;
#[allow(unsafe_code)]
pub mod sandbox;
pub mod systemd;
pub(crate) mod tmux;
