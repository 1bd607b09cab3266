//! The IO boundary to the systemd user manager: connecting to it (`bus`), and the verbs this
//! tool needs, spoken over D-Bus with a timeout on every call (`manager`), and its signals, typed
//! (`signals`). No `systemctl`.

pub mod bus;
pub mod manager;
mod paths;
mod private_socket;
pub mod signals;
mod start;
mod variant;

pub use bus::{connect, BusOptions};
pub use manager::{Manager, ManagerInfo};
pub use signals::{JobOutcome, JobStream, Signal, Signals};
pub use start::StartError;
pub use variant::to_variant;
