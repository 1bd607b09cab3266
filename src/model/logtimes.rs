//! When each part of an agent's log was written. The runner's output reaches its log through a
//! writer of ours (`log-tee`), which appends to a side file, `<session>.times`, one entry
//! `<offset> <ms>` whenever it writes at a byte offset of the log at a new moment (10 ms apart at
//! least). A line was written at the time of the last entry at or before its first byte. Each run
//! of the agent begins with a marker line of ours. Pure: the text of the side file and the log in,
//! times and lines out.

use std::path::{Path, PathBuf};

/// Entries closer in time than this share the earlier one: a line's time is at most this early.
pub const RESOLUTION_MS: u64 = 10;
/// The most of a times file that is read (its newest part): 3 entries per KiB of log at the
/// worst, far more than the log's newest MiB needs.
pub const MAX_TIMES_BYTES: u64 = 4 * 1024 * 1024;
/// What every run-start marker line begins with.
pub const MARKER_PREFIX: &str = "-- agent-relay-systemd: run started ";

/// The times file of the log at `log`: `<session>.log` → `<session>.times`, beside it.
pub fn times_file(log: &Path) -> PathBuf {
    log.with_extension("times")
}

/// One entry of a times file.
pub fn entry(offset: u64, ms: u64) -> String {
    format!("{offset} {ms}\n")
}

/// The marker line (newline included) that begins a run, at `ms`, of the runner with `pid`, in
/// the unit's invocation `invocation` (systemd's `$INVOCATION_ID`, kept only when it is the 32
/// hex digits systemd writes).
pub fn marker(ms: u64, pid: u32, invocation: Option<&str>) -> String {
    let inv = invocation
        .filter(|i| i.len() == 32 && i.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|i| format!(", invocation {i}"))
        .unwrap_or_default();
    format!("{MARKER_PREFIX}{} (pid {pid}{inv}) --\n", rfc3339_ms(ms))
}

/// `ms` since the epoch as RFC 3339 in UTC, to the millisecond.
pub fn rfc3339_ms(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The entries of a times file's text, in log order; lines that are not two numbers (a cut
/// first line, anything else) are skipped.
pub fn parse(text: &str) -> Times {
    let mut entries: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|l| {
            let (o, t) = l.split_once(' ')?;
            Some((o.parse().ok()?, t.parse().ok()?))
        })
        .collect();
    entries.sort_by_key(|e| e.0);
    Times { entries }
}

/// The parsed entries of a times file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Times {
    entries: Vec<(u64, u64)>,
}

impl Times {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the byte at `offset` of the log was written; `None` before the first entry.
    pub fn time_at(&self, offset: u64) -> Option<u64> {
        let i = self.entries.partition_point(|e| e.0 <= offset);
        i.checked_sub(1).map(|i| self.entries[i].1)
    }

    /// More entries (read from the file's end on), in log order.
    pub fn extend(&mut self, more: Times) {
        self.entries.extend(more.entries);
        self.entries.sort_by_key(|e| e.0);
    }

    /// The entries of a log whose first `cut` bytes were replaced by `note_len` bytes (a log cut
    /// to its newer part): earlier entries go, later ones move. The entry at or before `cut` is
    /// kept for the text right after the note, so that it keeps its time.
    pub fn after_cut(&self, cut: u64, note_len: u64) -> Times {
        let keep_from = self.entries.partition_point(|e| e.0 <= cut).saturating_sub(1);
        let entries = self.entries[keep_from..].iter().map(|&(o, t)| (o.saturating_sub(cut) + note_len, t)).collect();
        Times { entries }
    }

    /// The times file's text of these entries.
    pub fn render(&self) -> String {
        self.entries.iter().map(|&(o, t)| entry(o, t)).collect()
    }
}

/// A line of a log and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedLine {
    pub offset: u64,
    pub line: String,
}

/// The lines of `bytes`, a part of a log beginning at byte `base` of it, each with the offset its
/// raw line starts at; sanitised as [`crate::model::logtext::log_lines`] does unless `raw` (a raw
/// line with carriage returns may give several lines, all at its offset). A last line without its
/// newline is left out (it is still being written) unless `complete`.
pub fn placed_lines(bytes: &[u8], base: u64, raw: bool, complete: bool) -> Vec<PlacedLine> {
    let mut out = Vec::new();
    let mut start = 0usize;
    while start < bytes.len() {
        let end = match bytes[start..].iter().position(|b| *b == b'\n') {
            Some(i) => start + i,
            None if complete => bytes.len(),
            None => break,
        };
        let text = String::from_utf8_lossy(&bytes[start..end]);
        for line in crate::model::logtext::log_lines(&text, raw) {
            out.push(PlacedLine { offset: base + start as u64, line });
        }
        start = end + 1;
    }
    out
}

/// Why a `--since` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--since {0:?}: not a time; give a time ago (\"10m\", \"2h 30m\", \"1day\") or a UTC time \
     (\"2026-11-30T05:40:00Z\", \"2026-11-30 05:40\", \"2026-11-30\")"
)]
pub struct BadSince(pub String);

/// The moment (ms since the epoch) a `--since` names, `now_ms` being now: a duration is that long
/// ago (`10m`, `-10m`, `1h 30m`), a date or date and time is in UTC (RFC 3339, `T` or a space,
/// seconds optional, an offset or `Z` optional), a date alone its midnight.
pub fn since(text: &str, now_ms: u64) -> Result<u64, BadSince> {
    let bad = || BadSince(text.to_string());
    let t = text.trim();
    if t.is_empty() || t.chars().any(char::is_control) {
        return Err(bad());
    }
    if let Ok(d) = humantime::parse_duration(t.strip_prefix('-').unwrap_or(t)) {
        return Ok(now_ms.saturating_sub(d.as_millis().min(u128::from(u64::MAX)) as u64));
    }
    let mut candidates = vec![t.to_string()];
    if t.len() == 10 {
        candidates.push(format!("{t}T00:00:00Z"));
    }
    if t.len() == 16 {
        candidates.push(format!("{t}:00"));
    }
    for c in candidates {
        let parsed = humantime::parse_rfc3339_weak(&c).or_else(|_| humantime::parse_rfc3339(&c));
        if let Ok(at) = parsed {
            let ms = at.duration_since(std::time::UNIX_EPOCH).map_err(|_| bad())?.as_millis();
            return Ok(ms as u64);
        }
    }
    Err(bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_the_time_of_the_entry_at_or_before_it() {
        let t = parse("0 1000\n40 2000\nnot an entry\n100 3000\n");
        assert_eq!(t.time_at(0), Some(1000));
        assert_eq!(t.time_at(39), Some(1000));
        assert_eq!(t.time_at(40), Some(2000));
        assert_eq!(t.time_at(5000), Some(3000));
        assert_eq!(parse("10 5\n").time_at(3), None);
        assert!(parse("garbage").is_empty());
    }

    #[test]
    fn a_cut_keeps_the_times_of_what_stays() {
        let t = parse("0 1000\n40 2000\n100 3000\n");
        // 50 bytes cut, a 20-byte note in their place: byte 50 (written at 2000) is now byte 20.
        let after = t.after_cut(50, 20);
        assert_eq!(after.render(), "20 2000\n70 3000\n");
        assert_eq!(after.time_at(20), Some(2000));
        assert_eq!(after.time_at(70), Some(3000));
    }

    #[test]
    fn lines_keep_their_offsets() {
        let lines = placed_lines(b"one\n\ntwo\x1b[31m red\r\nthree", 100, false, false);
        let got: Vec<(u64, &str)> = lines.iter().map(|l| (l.offset, l.line.as_str())).collect();
        assert_eq!(got, vec![(100, "one"), (105, "two red")]);
        assert_eq!(placed_lines(b"a\nb", 0, true, true).len(), 2);
    }

    #[test]
    fn markers_name_the_run_and_only_a_real_invocation_id() {
        let m = marker(1_764_480_000_123, 42, Some("0123456789abcdef0123456789abcdef"));
        assert_eq!(
            m,
            "-- agent-relay-systemd: run started 2025-11-30T05:20:00.123Z (pid 42, invocation \
             0123456789abcdef0123456789abcdef) --\n"
        );
        assert!(!marker(0, 1, Some("x\n-- forged")).contains("forged"));
        assert!(marker(0, 1, None).starts_with(MARKER_PREFIX));
    }

    #[test]
    fn since_reads_durations_and_utc_times() {
        let now = 1_764_480_000_000;
        assert_eq!(since("10m", now), Ok(now - 600_000));
        assert_eq!(since("-1h 30m", now), Ok(now - 5_400_000));
        assert_eq!(since("2025-11-30T05:20:00Z", now), Ok(1_764_480_000_000));
        assert_eq!(since("2025-11-30 05:20:00", now), Ok(1_764_480_000_000));
        assert_eq!(since("2025-11-30 05:20", now), Ok(1_764_480_000_000));
        assert_eq!(since("2025-11-30", now), Ok(1_764_460_800_000));
        for bad in ["", "yesterday-ish", "10 parsecs", "2025-13-01", "1h\n2h"] {
            assert!(since(bad, now).is_err(), "{bad:?}");
        }
        assert!(since("soon", now).unwrap_err().to_string().contains("not a time"));
    }

    #[test]
    fn the_times_file_sits_beside_the_log() {
        assert_eq!(
            times_file(Path::new("/h/.agent-relay/logs/ar-x-1.log")),
            Path::new("/h/.agent-relay/logs/ar-x-1.times")
        );
    }
}
