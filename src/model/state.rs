//! A unit's `ActiveState`, typed: the predicates the code asks of it, each named once instead of
//! spelled as string sets at every comparison. Pure.

use std::fmt;

/// systemd's `ActiveState` of a unit (`maintenance` and later additions are [`ActiveState::Other`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ActiveState {
    Active,
    Reloading,
    Inactive,
    Failed,
    Activating,
    Deactivating,
    /// A value this tool does not know (kept verbatim; the empty string of an unread state too).
    Other(String),
}

impl ActiveState {
    /// Parses systemd's spelling; an unknown value is kept as [`ActiveState::Other`].
    pub fn parse(s: &str) -> ActiveState {
        match s {
            "active" => ActiveState::Active,
            "reloading" => ActiveState::Reloading,
            "inactive" => ActiveState::Inactive,
            "failed" => ActiveState::Failed,
            "activating" => ActiveState::Activating,
            "deactivating" => ActiveState::Deactivating,
            other => ActiveState::Other(other.to_string()),
        }
    }

    /// systemd's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            ActiveState::Active => "active",
            ActiveState::Reloading => "reloading",
            ActiveState::Inactive => "inactive",
            ActiveState::Failed => "failed",
            ActiveState::Activating => "activating",
            ActiveState::Deactivating => "deactivating",
            ActiveState::Other(s) => s,
        }
    }

    /// The unit has stopped: `inactive` or `failed`.
    pub fn is_ended(&self) -> bool {
        matches!(self, ActiveState::Inactive | ActiveState::Failed)
    }

    /// A live unit: `active`, `activating` or `reloading` (started or starting, not on its way
    /// down). What a repeated spawn request is answered with.
    pub fn is_live(&self) -> bool {
        matches!(self, ActiveState::Active | ActiveState::Activating | ActiveState::Reloading)
    }

    /// Up: live, or `deactivating` (its processes may still run). What `stop` counts as running.
    pub fn is_up(&self) -> bool {
        self.is_live() || *self == ActiveState::Deactivating
    }
}

impl From<&str> for ActiveState {
    fn from(s: &str) -> ActiveState {
        ActiveState::parse(s)
    }
}

impl fmt::Display for ActiveState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [&str; 6] = ["active", "reloading", "inactive", "failed", "activating", "deactivating"];

    #[test]
    fn round_trips_known_and_unknown_values() {
        for s in KNOWN.into_iter().chain(["maintenance", ""]) {
            assert_eq!(ActiveState::parse(s).as_str(), s);
        }
        assert_eq!(ActiveState::parse("maintenance"), ActiveState::Other("maintenance".into()));
    }

    #[test]
    fn predicates_name_the_sets_the_code_compares_with() {
        let set = |p: fn(&ActiveState) -> bool| -> Vec<&str> {
            KNOWN.into_iter().filter(|s| p(&ActiveState::parse(s))).collect()
        };
        assert_eq!(set(ActiveState::is_ended), ["inactive", "failed"]);
        assert_eq!(set(ActiveState::is_live), ["active", "reloading", "activating"]);
        assert_eq!(set(ActiveState::is_up), ["active", "reloading", "activating", "deactivating"]);
        let unknown = ActiveState::parse("maintenance");
        assert!(!unknown.is_ended() && !unknown.is_live() && !unknown.is_up());
    }
}
