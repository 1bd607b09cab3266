//! Connecting to the user manager: the session bus when there is one, else systemd's private
//! socket (`$XDG_RUNTIME_DIR/systemd/private`, peer to peer), as `systemctl --user` does.

use std::path::PathBuf;
use std::time::Duration;

use zbus::connection::Builder;
use zbus::Connection;

use crate::error::Error;

/// Where to look for the manager, resolved from the environment by the caller.
#[derive(Debug, Clone)]
pub struct BusOptions {
    /// `DBUS_SESSION_BUS_ADDRESS`, if set.
    pub session_address: Option<String>,
    /// `XDG_RUNTIME_DIR`, if set.
    pub runtime_dir: Option<PathBuf>,
    /// Bound on connecting and on every method call.
    pub timeout: Duration,
}

/// A connection and whether it is peer to peer (no bus daemon: no match rules, no names).
pub struct Bus {
    pub conn: Connection,
    pub p2p: bool,
}

/// Connects, trying the session bus then the private socket; one clear error when neither works.
pub async fn connect(opts: &BusOptions) -> Result<Bus, Error> {
    let mut tried = Vec::new();
    let mut all_timed_out = true;
    let session = opts.session_address.clone().or_else(|| {
        let bus = opts.runtime_dir.as_ref()?.join("bus");
        bus.exists().then(|| format!("unix:path={}", bus.display()))
    });
    if let Some(addr) = session {
        let builder = Builder::address(addr.as_str()).method_timeout(opts.timeout);
        match tokio::time::timeout(opts.timeout, builder.build()).await {
            Ok(Ok(conn)) => return Ok(Bus { conn, p2p: false }),
            Ok(Err(e)) => {
                all_timed_out = false;
                tried.push(format!("session bus {addr}: {e}"))
            }
            Err(_) => tried.push(format!("session bus {addr}: no answer within {:?}", opts.timeout)),
        }
    }
    match &opts.runtime_dir {
        Some(dir) => {
            let private = dir.join("systemd").join("private");
            let connect = async {
                let socket = super::private_socket::PrivateSocket::connect(&private).await?;
                Builder::socket(socket).p2p().method_timeout(opts.timeout).build().await
            };
            match tokio::time::timeout(opts.timeout, connect).await {
                Ok(Ok(conn)) => return Ok(Bus { conn, p2p: true }),
                Ok(Err(e)) => {
                    all_timed_out = false;
                    tried.push(format!("private socket {}: {e}", private.display()))
                }
                Err(_) => {
                    tried.push(format!("private socket {}: no answer within {:?}", private.display(), opts.timeout))
                }
            }
        }
        None => {
            all_timed_out = false;
            tried.push("XDG_RUNTIME_DIR is not set".to_string())
        }
    }
    if all_timed_out && !tried.is_empty() {
        // Something listens but nothing answers: a hung manager, not a missing one.
        return Err(Error::Timeout { what: format!("connecting ({})", tried.join("; ")), after: opts.timeout });
    }
    Err(Error::ManagerUnreachable { detail: tried.join("; ") })
}
