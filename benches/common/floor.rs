//! What both benchmark programs measure a bare client by (`#[path]`-included by each).

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use zbus_systemd::systemd1::ManagerProxy;

/// `ListUnitsByPatterns` plus the properties a record needs, 64 units' reads in flight at once: the
/// floor `list` is measured against.
pub async fn list(conn: &zbus::Connection, proxy: &ManagerProxy<'_>, pattern: &str) -> usize {
    let units = proxy.list_units_by_patterns(vec![], vec![pattern.into()]).await.unwrap();
    let reads = units.iter().map(|u| async move {
        let p = zbus::fdo::PropertiesProxy::builder(conn)
            .destination("org.freedesktop.systemd1")
            .path(u.6.clone())
            .build()
            .await
            .unwrap();
        let unit = zbus::names::InterfaceName::from_static_str_unchecked("org.freedesktop.systemd1.Unit");
        let svc = zbus::names::InterfaceName::from_static_str_unchecked("org.freedesktop.systemd1.Service");
        // What a record needs beyond the listing's own columns (name, description, states).
        let names_u = ["InvocationID", "Transient"];
        let names_s = [
            "MainPID",
            "NRestarts",
            "Result",
            "ExecMainCode",
            "ExecMainStatus",
            "ExecMainStartTimestamp",
            "WorkingDirectory",
            "LogExtraFields",
            "MemoryMax",
            "MemoryHigh",
            "TasksMax",
            "CPUQuotaPerSecUSec",
        ];
        let a = futures_util::future::join_all(names_u.iter().map(|n| p.get(unit.clone(), n)));
        let b = futures_util::future::join_all(names_s.iter().map(|n| p.get(svc.clone(), n)));
        let (a, b) = futures_util::future::join(a, b).await;
        a.len() + b.len()
    });
    futures_util::stream::iter(reads).buffer_unordered(64).collect::<Vec<_>>().await.len()
}

/// A bare zbus connection on systemd's private socket (what `systemctl --user` uses), made by
/// the library's connector because zbus needs its adapter that rewrites systemd's sender header;
/// nothing else of the library is used on it.
pub async fn private_socket(runtime_dir: &Path, timeout: Duration) -> zbus::Connection {
    let opts = agent_relay_systemd::io::systemd::BusOptions {
        session_address: None,
        runtime_dir: Some(runtime_dir.into()),
        timeout,
    };
    let bus = agent_relay_systemd::io::systemd::connect(&opts).await.unwrap();
    assert!(bus.p2p, "the private socket is used");
    bus.conn
}
