//! Unit listings and single-property reads whose cost must not grow with the number of agents
//! beyond systemd's own: a `ListUnitsByPatterns` reply is kept as it arrived and read in place
//! (its one fixed layout walked here, at the boundary), so a lookup that keeps one row of 2000
//! copies one row (the reply is ~300 bytes a unit); a
//! unit's state is read by name (`GetUnit`, a hash lookup in the manager) instead of by a
//! pattern (which the manager matches against every unit it has).

use zbus::{ObjectPath, OwnedObjectPath};

use super::{Listed, Manager};
use crate::error::Error;

/// The reply's signature: name, description, load, active and sub state, following, object
/// path, job id, job type, job path.
const REPLY_SIGNATURE: &str = "a(ssssssouso)";

/// A `ListUnitsByPatterns` reply as it arrived: rows are copied out only when asked for.
pub struct Listing {
    reply: zbus::Message,
}

impl Listing {
    /// The rows `keep` chooses by unit name and description, copied out of the reply.
    pub fn rows(&self, keep: impl Fn(&str, &str) -> bool) -> Result<Vec<Listed>, Error> {
        let what = "reading the ListUnitsByPatterns reply";
        let malformed = |why: &str| Error::Systemd { op: what.into(), name: None, message: why.to_string() };
        let body = self.reply.body();
        if body.signature().to_string() != REPLY_SIGNATURE {
            return Err(malformed(&format!("signature {}", body.signature())));
        }
        let big = self.reply.primary_header().endian_sig() == zbus::message::EndianSig::Big;
        // The body starts 8-aligned in the message (the header is padded), so alignment counted
        // from its start is D-Bus's, counted from the message's.
        if body.data().context().position() % 8 != 0 {
            return Err(malformed("a body that does not start 8-aligned"));
        }
        let mut out = Vec::new();
        let mut bad = None;
        scan(body.data().bytes(), big, |row| {
            let (Ok(unit), Ok(description)) = (std::str::from_utf8(row.unit), std::str::from_utf8(row.description))
            else {
                bad = Some("a name or description that is not UTF-8");
                return;
            };
            if !keep(unit, description) {
                return;
            }
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            let path = std::str::from_utf8(row.path).ok().and_then(|p| ObjectPath::try_from(p).ok());
            let Some(path) = path else {
                bad = Some("an invalid object path");
                return;
            };
            out.push(Listed {
                unit: unit.to_string(),
                description: description.to_string(),
                load_state: text(row.load_state),
                active_state: text(row.active_state),
                sub_state: text(row.sub_state),
                path: OwnedObjectPath::from(path),
            });
        })
        .ok_or_else(|| malformed("rows that do not fit the reply"))?;
        match bad {
            Some(why) => Err(malformed(why)),
            None => Ok(out),
        }
    }
}

/// What a lookup needs of one row, as bytes of the reply.
struct Row<'a> {
    unit: &'a [u8],
    description: &'a [u8],
    load_state: &'a [u8],
    active_state: &'a [u8],
    sub_state: &'a [u8],
    path: &'a [u8],
}

/// Walks an `a(ssssssouso)` body as D-Bus lays it out (an array's byte length, structs 8-aligned,
/// each string and path a 4-aligned length, its bytes and a NUL; the job id a 4-aligned u32),
/// calling `each` per row; `None` when the bytes do not hold such an array. Nothing is copied:
/// zbus's deserializer took as long for 2000 rows as the manager took to list them.
fn scan<'a>(body: &'a [u8], big: bool, mut each: impl FnMut(Row<'a>)) -> Option<()> {
    let mut r = Wire { bytes: body, at: 0, big };
    let len = r.u32()? as usize;
    r.align(8)?;
    let end = r.at.checked_add(len)?;
    if end > body.len() {
        return None;
    }
    while r.at < end {
        r.align(8)?;
        let (unit, description, load_state, active_state, sub_state) =
            (r.str()?, r.str()?, r.str()?, r.str()?, r.str()?);
        let _following = r.str()?;
        let path = r.str()?;
        let (_job, _job_type, _job_path) = (r.u32()?, r.str()?, r.str()?);
        each(Row { unit, description, load_state, active_state, sub_state, path });
    }
    (r.at == end).then_some(())
}

/// A cursor over a D-Bus body.
struct Wire<'a> {
    bytes: &'a [u8],
    at: usize,
    big: bool,
}

impl<'a> Wire<'a> {
    fn align(&mut self, n: usize) -> Option<()> {
        self.at = self.at.checked_next_multiple_of(n)?;
        (self.at <= self.bytes.len()).then_some(())
    }

    fn u32(&mut self) -> Option<u32> {
        self.align(4)?;
        let b: [u8; 4] = self.bytes.get(self.at..self.at + 4)?.try_into().ok()?;
        self.at += 4;
        Some(if self.big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    }

    /// A string or an object path: its bytes, without the NUL.
    fn str(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        let end = self.at.checked_add(len)?;
        let text = self.bytes.get(self.at..end)?;
        if self.bytes.get(end) != Some(&0) {
            return None;
        }
        self.at = end + 1;
        Some(text)
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

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::wire::serialized::Context;

    type Wired = (String, String, String, String, String, String, OwnedObjectPath, u32, String, OwnedObjectPath);

    fn rows(n: usize) -> Vec<Wired> {
        let path = |p: &str| OwnedObjectPath::try_from(p.to_string()).unwrap();
        (0..n)
            .map(|i| {
                (
                    format!("agent-relay-managed-ar-claude-x{i}-0123456789ab.service"),
                    format!("Agent Relay claude agent \"x{i} é\" (id-{i})"),
                    "loaded".into(),
                    "active".into(),
                    if i % 2 == 0 { "running" } else { "start" }.into(),
                    String::new(),
                    path(&format!("/org/freedesktop/systemd1/unit/u{i}")),
                    i as u32 % 3,
                    if i % 3 == 0 { String::new() } else { "start".into() },
                    path(if i % 3 == 0 { "/" } else { "/org/freedesktop/systemd1/job/7" }),
                )
            })
            .collect()
    }

    /// Name, description, load, active and sub state, object path.
    type Scanned = (String, String, String, String, String, String);

    fn scanned(body: &[u8], big: bool) -> Option<Vec<Scanned>> {
        let mut out = Vec::new();
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        scan(body, big, |r| {
            out.push((s(r.unit), s(r.description), s(r.load_state), s(r.active_state), s(r.sub_state), s(r.path)))
        })?;
        Some(out)
    }

    #[test]
    fn reads_the_rows_as_zbus_writes_them_in_either_byte_order() {
        for n in [0, 1, 2, 5, 40] {
            let want: Vec<_> = rows(n).into_iter().map(|r| (r.0, r.1, r.2, r.3, r.4, r.6.to_string())).collect();
            for (endian, big) in [(zbus::wire::LE, false), (zbus::wire::BE, true)] {
                let data = zbus::wire::to_bytes(Context::new(endian, 0), &rows(n)).unwrap();
                assert_eq!(scanned(data.bytes(), big), Some(want.clone()), "{n} rows, big-endian {big}");
            }
        }
    }

    #[test]
    fn a_cut_or_damaged_reply_is_refused_never_a_panic() {
        let data = zbus::wire::to_bytes(Context::new(zbus::wire::LE, 0), &rows(3)).unwrap();
        let bytes = data.bytes();
        for cut in 0..bytes.len() {
            assert_eq!(scanned(&bytes[..cut], false), None, "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut damaged = bytes.to_vec();
            damaged[i] = damaged[i].wrapping_add(0x7f);
            let _ = scanned(&damaged, false);
            let _ = scanned(&damaged, true);
        }
    }
}
