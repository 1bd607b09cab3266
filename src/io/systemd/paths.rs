//! Units' D-Bus object paths, computed instead of asked for (systemd's `sd_bus_path_encode`).

const UNIT_PATH_PREFIX: &str = "/org/freedesktop/systemd1/unit";

/// `agent-relay.…` → `/org/freedesktop/systemd1/unit/agent_2drelay_2e…` (sd_bus_path_encode):
/// a unit's object path without asking for it.
pub fn path_of_unit(unit: &str) -> String {
    let prefix = zbus::ObjectPath::from_static_str_unchecked(UNIT_PATH_PREFIX);
    zbus_systemd::bus_path_encode(&prefix, unit).to_string()
}

/// `/org/freedesktop/systemd1/unit/agent_2drelay_2e…` → `agent-relay.…` (sd_bus_path_decode).
pub fn unit_of_path(path: &str) -> Option<String> {
    let prefix = zbus::ObjectPath::from_static_str_unchecked(UNIT_PATH_PREFIX);
    let path = zbus::ObjectPath::try_from(path).ok()?;
    zbus_systemd::bus_path_decode(&prefix, &path).map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        let u = "agent-relay-managed-ar-claude-x_1.service";
        assert_eq!(unit_of_path(&path_of_unit(u)).as_deref(), Some(u));
    }

    #[test]
    fn paths_decode() {
        assert_eq!(
            unit_of_path("/org/freedesktop/systemd1/unit/agent_2drelay_2dmanaged_2dar_2dx_2eservice").as_deref(),
            Some("agent-relay-managed-ar-x.service")
        );
        assert_eq!(unit_of_path("/org/freedesktop/systemd1/job/1"), None);
    }
}
