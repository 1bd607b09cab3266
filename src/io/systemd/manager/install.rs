//! The manager verbs of durable agents: unit files (reload, enable, disable, list, load) and
//! starting a unit that is not transient. Bounded like every other call of the boundary.

use std::time::Duration;

use zbus::OwnedObjectPath;

use super::Manager;
use crate::error::Error;
use crate::io::systemd::signals::JobOutcome;

impl Manager {
    /// `Reload` (daemon-reload): systemd answers once the unit files are read again.
    pub async fn reload(&self) -> Result<(), Error> {
        self.bounded("Reload", self.proxy.reload()).await
    }

    /// The directories the manager reads unit files from (its `UnitPath` property).
    pub async fn unit_search_path(&self) -> Result<Vec<String>, Error> {
        self.bounded("reading UnitPath", self.proxy.unit_path()).await
    }

    /// `EnableUnitFiles` (persistent, replacing conflicting links) of units by name.
    pub async fn enable_unit_files(&self, units: &[String]) -> Result<(), Error> {
        self.bounded("EnableUnitFiles", self.proxy.enable_unit_files(units.to_vec(), false, true)).await.map(drop)
    }

    /// `DisableUnitFiles` (persistent) of units by name; a unit with no links is fine.
    pub async fn disable_unit_files(&self, units: &[String]) -> Result<(), Error> {
        let call = async { self.proxy.disable_unit_files(units.to_vec(), false).await.map(drop) };
        self.unit_call("DisableUnitFiles".into(), call, ()).await
    }

    /// `ListUnitFilesByPatterns`: `(path, state)` of unit files matching the globs, loaded or not.
    pub async fn unit_files(&self, patterns: &[String]) -> Result<Vec<(String, String)>, Error> {
        self.bounded("ListUnitFilesByPatterns", self.proxy.list_unit_files_by_patterns(Vec::new(), patterns.to_vec()))
            .await
    }

    /// `LoadUnit`: loads a unit from its file (no start), returning its object path.
    pub async fn load_unit(&self, unit: &str) -> Result<OwnedObjectPath, Error> {
        self.bounded(&format!("LoadUnit {unit}"), self.proxy.load_unit(unit.to_string())).await
    }

    /// `StartUnit` (mode `replace`), then waits at most `wait` for the job's `JobRemoved`.
    pub async fn start_unit(&self, unit: &str, wait: Duration) -> Result<JobOutcome, Error> {
        let mut jobs = self.job_removed_stream().await?;
        let job = self
            .bounded(&format!("StartUnit {unit}"), self.proxy.start_unit(unit.to_string(), "replace".to_string()))
            .await?;
        self.wait_job(&mut jobs, &job, unit, wait).await
    }
}
