//! systemd's resource accounting of one unit (`MemoryCurrent`, `CPUUsageNSec`, `TasksCurrent`),
//! each read bounded like every other call of [`Manager`].

use zbus::OwnedObjectPath;

use super::{map_err, Manager};
use crate::error::Error;
use crate::io::systemd::paths::path_of_unit;
use crate::model::resources::Accounting;

impl Manager {
    /// The unit's accounting properties (`u64::MAX` where the manager has none); `None` when the
    /// unit is not loaded.
    pub async fn accounting(&self, unit: &str) -> Result<Option<Accounting>, Error> {
        let path = OwnedObjectPath::try_from(path_of_unit(unit)).map_err(|e| map_err(unit, self.timeout, e))?;
        let call = async {
            let s = self.service_proxy(&path).build().await?;
            let (m, c, t) = futures_util::join!(s.memory_current(), s.cpu_usage_n_sec(), s.tasks_current());
            Ok(Some(Accounting { memory_current: m?, cpu_usage_nsec: c?, tasks_current: t? }))
        };
        self.unit_call(format!("reading the accounting of {unit}"), call, None).await
    }
}
