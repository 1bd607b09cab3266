//! The IO boundary to the systemd user manager: connecting to it (`bus`), and the verbs this
//! tool needs, spoken over D-Bus with a timeout on every call (`manager`). No `systemctl`.

pub mod bus;
pub mod manager;
mod private_socket;
mod start;
mod variant;

pub use bus::{connect, BusOptions};
pub use manager::{JobOutcome, JobStream, Manager, ManagerInfo};
pub use start::StartError;
pub use variant::to_variant;
