//! What the manager says about itself and about installed unit files, for `doctor` (and its
//! `Version` for `spawn`): read-only calls, each bounded like every other call of [`Manager`].
//! Changes nothing.

use super::{error_name, Manager};
use crate::error::Error;

// `GetUnitFileState` of a unit file that does not exist answers FileNotFound.
use crate::error::dbus_name::{FILE_NOT_FOUND, NO_SUCH_UNIT};

/// The manager's `Version`, `Features` and `ControlGroup` properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagerInfo {
    pub version: String,
    pub features: String,
    pub control_group: String,
}

impl Manager {
    /// `Version`, `Features` and `ControlGroup`, read at once.
    pub async fn info(&self) -> Result<ManagerInfo, Error> {
        let read = async {
            let (version, features, control_group) =
                futures_util::try_join!(self.proxy.version(), self.proxy.features(), self.proxy.control_group())?;
            Ok(ManagerInfo { version, features, control_group })
        };
        self.bounded("reading the manager's Version, Features and ControlGroup", read).await
    }

    /// `Version` alone: which command lines the manager keeps exactly ([`crate::model::exec`]).
    pub async fn version(&self) -> Result<String, Error> {
        let read = || self.bounded("reading the manager's Version", self.proxy.version());
        self.version.get_or_try_init(read).await.cloned()
    }

    /// `GetUnitFileState`: `enabled`, `disabled`, `static`, …; `None` when no unit file of that
    /// name is installed.
    pub async fn unit_file_state(&self, unit: &str) -> Result<Option<String>, Error> {
        let what = format!("GetUnitFileState {unit}");
        match tokio::time::timeout(self.timeout, self.proxy.get_unit_file_state(unit.to_string())).await {
            Err(_) => Err(Error::Timeout { what, after: self.timeout }),
            Ok(Err(e)) if matches!(error_name(&e).as_deref(), Some(FILE_NOT_FOUND | NO_SUCH_UNIT)) => Ok(None),
            Ok(r) => r.map(Some).map_err(|e| super::map_err(&what, self.timeout, e)),
        }
    }
}
