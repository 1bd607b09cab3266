//! Connecting to the user manager: systemd's private socket (`$XDG_RUNTIME_DIR/systemd/private`,
//! peer to peer) when it is there and ours, else the session bus — the order `systemctl --user`
//! uses. Peer to peer, every call is one hop instead of two through the bus daemon, and systemd
//! sends its signals without `Subscribe` or match rules.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
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

/// Which transport to try first, from what the runtime directory holds (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    /// The private socket, then (unless it hangs) the session bus.
    PrivateFirst(PathBuf),
    /// No usable private socket: the session bus only.
    SessionOnly(String),
}

/// The private socket is used only when it is a socket owned by this user: the manager it
/// belongs to runs our units.
fn route(runtime_dir: Option<&Path>, owner: impl Fn(&Path) -> Option<u32>, uid: u32) -> Route {
    let Some(dir) = runtime_dir else { return Route::SessionOnly("XDG_RUNTIME_DIR is not set".into()) };
    let private = dir.join("systemd").join("private");
    match owner(&private) {
        Some(o) if o == uid => Route::PrivateFirst(private),
        Some(o) => Route::SessionOnly(format!("private socket {} belongs to uid {o}", private.display())),
        None => Route::SessionOnly(format!("private socket {}: not there", private.display())),
    }
}

fn socket_owner(path: &Path) -> Option<u32> {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).ok().filter(|m| m.file_type().is_socket()).map(|m| m.uid())
}

/// Connects, trying the private socket then the session bus; one clear error when neither works.
pub async fn connect(opts: &BusOptions) -> Result<Bus, Error> {
    let mut tried = Vec::new();
    let uid = nix::unistd::geteuid().as_raw();
    match route(opts.runtime_dir.as_deref(), socket_owner, uid) {
        Route::PrivateFirst(private) => {
            let connect = async {
                let socket = super::private_socket::PrivateSocket::connect(&private).await?;
                Builder::socket(socket).p2p().method_timeout(opts.timeout).build().await
            };
            match tokio::time::timeout(opts.timeout, connect).await {
                Ok(Ok(conn)) => {
                    tracing::debug!(socket = %private.display(), "connected to the manager's private socket");
                    return Ok(Bus { conn, p2p: true });
                }
                // A stale socket (refused) or one we may not use: the bus may still work.
                Ok(Err(e)) => tried.push(format!("private socket {}: {e}", private.display())),
                // The manager itself accepted and did not answer: it would not answer through the
                // bus either, so do not spend a second timeout finding that out.
                Err(_) => {
                    return Err(Error::Timeout {
                        what: format!("connecting (private socket {})", private.display()),
                        after: opts.timeout,
                    })
                }
            }
        }
        Route::SessionOnly(why) => tried.push(why),
    }
    let session = opts.session_address.clone().or_else(|| {
        let bus = opts.runtime_dir.as_ref()?.join("bus");
        bus.exists().then(|| format!("unix:path={}", bus.display()))
    });
    let Some(addr) = session else {
        tried.push("no session bus (DBUS_SESSION_BUS_ADDRESS unset, no $XDG_RUNTIME_DIR/bus)".into());
        return Err(Error::ManagerUnreachable { detail: tried.join("; ") });
    };
    let builder = Builder::address(addr.as_str()).method_timeout(opts.timeout);
    match tokio::time::timeout(opts.timeout, builder.build()).await {
        Ok(Ok(conn)) => {
            tracing::debug!(%addr, "connected to the manager through the session bus");
            Ok(Bus { conn, p2p: false })
        }
        Ok(Err(e)) => {
            tried.push(format!("session bus {addr}: {e}"));
            Err(Error::ManagerUnreachable { detail: tried.join("; ") })
        }
        // Something listens but nothing answers: a hung bus, not a missing one.
        Err(_) => Err(Error::Timeout { what: format!("connecting (session bus {addr})"), after: opts.timeout }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_socket_first_when_it_is_ours() {
        let dir = Path::new("/run/user/1000");
        let private = dir.join("systemd/private");
        assert_eq!(route(Some(dir), |_| Some(1000), 1000), Route::PrivateFirst(private));
    }

    #[test]
    fn session_bus_when_the_private_socket_is_missing_or_foreign() {
        let dir = Path::new("/run/user/1000");
        assert!(matches!(route(Some(dir), |_| None, 1000), Route::SessionOnly(w) if w.contains("not there")));
        assert!(matches!(route(Some(dir), |_| Some(0), 1000), Route::SessionOnly(w) if w.contains("uid 0")));
        assert!(matches!(route(None, |_| Some(1000), 1000), Route::SessionOnly(w) if w.contains("XDG_RUNTIME_DIR")));
    }
}
