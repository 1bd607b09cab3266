//! Unit listings and single-property reads whose cost must not grow with the number of agents
//! beyond systemd's own: a `ListUnitsByPatterns` reply is kept as it arrived and read in place,
//! so a lookup that keeps one row of 2000 copies one row (the reply is ~300 bytes a unit); a
//! unit's state is read by name (`GetUnit`, a hash lookup in the manager) instead of by a
//! pattern (which the manager matches against every unit it has).

use zbus::{ObjectPath, OwnedObjectPath};

use super::{Listed, Manager};
use crate::error::Error;

/// The reply's signature: name, description, load, active and sub state, following, object
/// path, job id, job type, job path.
const REPLY_SIGNATURE: &str = "a(ssssssouso)";

/// A row of the reply borrowed from it. Its object paths are read as the strings they are
/// encoded as (D-Bus lays out `o` as `s`): the manager's paths are not parsed 4000 times for
/// the one row a lookup keeps; the path of a kept row is checked as it is copied out.
type Row<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str, &'a str, u32, &'a str, &'a str);

/// A `ListUnitsByPatterns` reply as it arrived: rows are copied out only when asked for.
pub struct Listing {
    reply: zbus::Message,
}

impl Listing {
    /// The rows `keep` chooses by unit name and description, copied out of the reply.
    pub fn rows(&self, keep: impl Fn(&str, &str) -> bool) -> Result<Vec<Listed>, Error> {
        let what = "reading the ListUnitsByPatterns reply";
        let bad = |e| super::map_err(what, std::time::Duration::ZERO, e);
        let body = self.reply.body();
        if body.signature().to_string() != REPLY_SIGNATURE {
            let got = body.signature().to_string();
            return Err(Error::Systemd { op: what.into(), name: None, message: format!("signature {got}") });
        }
        let rows: Vec<Row<'_>> = body.deserialize_ignore_signature().map_err(bad)?;
        rows.into_iter()
            .filter(|r| keep(r.0, r.1))
            .map(|r| {
                Ok(Listed {
                    unit: r.0.to_string(),
                    description: r.1.to_string(),
                    load_state: r.2.to_string(),
                    active_state: r.3.to_string(),
                    sub_state: r.4.to_string(),
                    path: OwnedObjectPath::from(ObjectPath::try_from(r.6).map_err(|e| bad(e.into()))?),
                })
            })
            .collect()
    }
}

impl Manager {
    /// `ListUnitsByPatterns`: the loaded units matching the globs, the reply kept unread.
    pub async fn listing(&self, patterns: &[String]) -> Result<Listing, Error> {
        let states: Vec<&str> = Vec::new();
        let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
        let args = (states, patterns);
        let call = self.proxy.inner().call_method("ListUnitsByPatterns", &args);
        Ok(Listing { reply: self.bounded("ListUnitsByPatterns", call).await? })
    }

    /// Loaded units matching the globs, with what the listing itself says of each.
    pub async fn list_units(&self, patterns: &[String]) -> Result<Vec<Listed>, Error> {
        self.listing(patterns).await?.rows(|_, _| true)
    }

    /// A loaded unit's `ActiveState`, `None` when the manager does not have it: `GetUnit` and one
    /// read, each a lookup by name in the manager. A unit collected between the two reads is
    /// reported as the manager then describes it (`inactive`).
    pub async fn active_state(&self, unit: &str) -> Result<Option<String>, Error> {
        let Some(path) = self.unit_path(unit).await? else { return Ok(None) };
        let read = async { self.unit_proxy(&path).build().await?.active_state().await };
        match self.bounded(&format!("reading ActiveState of {unit}"), read).await {
            Ok(state) => Ok(Some(state)),
            Err(e) if e.is_unit_gone() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A unit's `LogExtraFields` alone (where an agent's metadata is kept).
    pub async fn log_extra_fields(&self, unit: &str, path: &OwnedObjectPath) -> Result<Vec<Vec<u8>>, Error> {
        let read = async { self.service_proxy(path).build().await?.log_extra_fields().await };
        self.bounded(&format!("reading LogExtraFields of {unit}"), read).await
    }
}
