//! Reading an agent's log file: its tail, bounded in size, and only when it is a regular file.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::io::nofollow::{open_regular, open_regular_as};
use crate::model::logtext::{log_lines, MAX_TAIL_BYTES};
use crate::model::logtimes::{self, PlacedLine, Times};

/// The last `n` lines of a log, reading at most [`MAX_TAIL_BYTES`] from its end. The log is the
/// runner's to replace: only a regular file is read (not a link, FIFO or device, which would
/// never end or never answer).
pub fn tail_file(path: &Path, n: usize, raw: bool) -> std::io::Result<(Vec<String>, u64)> {
    let (buf, _, len) = newest_part(path)?;
    let lines = log_lines(&String::from_utf8_lossy(&buf), raw);
    let skip = lines.len().saturating_sub(n);
    Ok((lines[skip..].to_vec(), len))
}

/// The newest part of a log as lines with their offsets, and the log's length (as [`tail_file`]).
pub fn tail_placed(path: &Path, raw: bool) -> std::io::Result<(Vec<PlacedLine>, u64)> {
    let (buf, at, len) = newest_part(path)?;
    Ok((logtimes::placed_lines(&buf, at, raw, true), len))
}

/// The newest part of a log, at most [`MAX_TAIL_BYTES`], from its first whole line (a cut in the
/// middle of a line leaves a fragment: it goes): the bytes, the offset they start at, the log's
/// length. A regular file only.
fn newest_part(path: &Path) -> std::io::Result<(Vec<u8>, u64, u64)> {
    let mut f = open_regular(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(MAX_TAIL_BYTES);
    let mut buf = read_at(&mut f, start, MAX_TAIL_BYTES)?;
    let skip = if start > 0 { buf.iter().position(|b| *b == b'\n').map_or(buf.len(), |i| i + 1) } else { 0 };
    buf.drain(..skip);
    Ok((buf, start + skip as u64, len))
}

/// At most `max` bytes of `f` from byte `start`.
fn read_at(f: &mut std::fs::File, start: u64, max: u64) -> std::io::Result<Vec<u8>> {
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The times of a log (its times file beside it; its newest [`logtimes::MAX_TIMES_BYTES`]),
/// from byte `from` of that file on; and the file's length. No file, or a link or anything but
/// a regular file there: no times.
pub fn read_times(log: &Path, from: u64) -> std::io::Result<(Times, u64)> {
    let path = logtimes::times_file(log);
    // No file, or not a file (a link is not followed): no times.
    let mut f = match open_regular(&path) {
        Ok(f) => f,
        Err(_) if std::fs::symlink_metadata(&path).map_or(true, |m| !m.is_file()) => return Ok((Times::default(), 0)),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let start = from.max(len.saturating_sub(logtimes::MAX_TIMES_BYTES));
    if start >= len {
        return Ok((Times::default(), len));
    }
    let buf = read_at(&mut f, start, logtimes::MAX_TIMES_BYTES)?;
    // Only whole entries: a first line cut by the bound, a last one still being written, go.
    let mut body: &[u8] = &buf;
    if start > from {
        body = body.iter().position(|b| *b == b'\n').map_or(&[], |i| &body[i + 1..]);
    }
    let head = buf.len() - body.len();
    let whole = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    Ok((logtimes::parse(&String::from_utf8_lossy(&body[..whole])), start + (head + whole) as u64))
}

/// What was appended to `path` since `offset` (at most [`MAX_TAIL_BYTES`]), and the file's length
/// now; nothing when the file is missing or shorter than `offset` (truncated).
pub fn read_from(path: &Path, offset: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let mut f = match open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len <= offset {
        return Ok((Vec::new(), len));
    }
    Ok((read_at(&mut f, offset, MAX_TAIL_BYTES)?, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_or_device_is_not_read() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("a.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let started = std::time::Instant::now();
        assert!(tail_file(&fifo, 10, false).unwrap_err().to_string().contains("not a regular file"));
        assert!(read_from(&fifo, 0).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "blocked on the FIFO");
        let link = d.path().join("b.log");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(tail_file(&link, 10, false).is_err() && read_from(&link, 0).is_err());
        assert_eq!(read_from(&d.path().join("missing.log"), 0).unwrap(), (Vec::new(), 0));
        let log = d.path().join("c.log");
        std::fs::write(&log, "one\ntwo\n").unwrap();
        assert_eq!(tail_file(&log, 1, false).unwrap(), (vec!["two".to_string()], 8));
        assert_eq!(read_from(&log, 4).unwrap(), (b"two\n".to_vec(), 8));
    }
}

/// Cuts a log larger than `max` bytes to its newer half, from the first line start in it, under
/// a first line saying how much went. A regular file only (a link is not followed). The runner
/// appends (`O_APPEND`): its next lines go after what is kept. `Ok(false)`: nothing to cut.
pub fn cap(path: &Path, max: u64) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let f = open_regular_as(path, std::fs::OpenOptions::new().read(true).write(true))?;
    let len = f.metadata()?.len();
    if len <= max {
        return Ok(false);
    }
    let start = len - max / 2;
    let mut tail = vec![0u8; (len - start) as usize];
    f.read_exact_at(&mut tail, start)?;
    let cut = tail.iter().position(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
    let kept = &tail[cut..];
    let note =
        format!("[agent-relay-systemd reap: the log's first {} bytes were cut (logMaxMb)]\n", start + cut as u64);
    f.set_len(0)?;
    f.write_all_at(note.as_bytes(), 0)?;
    f.write_all_at(kept, note.len() as u64)?;
    cut_times(path, start + cut as u64, note.len() as u64)?;
    Ok(true)
}

/// The times of a log whose first `cut` bytes were replaced by `note_len` bytes, moved with it.
/// Rewritten in place (the log's writer appends to the same file on); no file, nothing to do.
fn cut_times(log: &Path, cut: u64, note_len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let path = logtimes::times_file(log);
    let (times, _) = read_times(log, 0)?;
    let f = match open_regular_as(&path, std::fs::OpenOptions::new().write(true)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    f.set_len(0)?;
    f.write_all_at(times.after_cut(cut, note_len).render().as_bytes(), 0)
}

#[cfg(test)]
mod cap_tests {
    use super::*;

    #[test]
    fn a_big_log_keeps_its_newer_half_from_a_line_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let text: String = (0..100).map(|i| format!("line {i:03}\n")).collect();
        std::fs::write(&p, &text).unwrap();
        assert!(!cap(&p, 10_000).unwrap());
        assert!(cap(&p, 400).unwrap());
        let after = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = after.lines().collect();
        assert!(lines[0].starts_with("[agent-relay-systemd reap: the log's first"), "{after}");
        assert_eq!(lines.last(), Some(&"line 099"));
        assert!(lines[1].starts_with("line ") && lines[1].len() == 8, "{after}");
        assert!(after.len() < 400, "{}", after.len());
        // The times move with the text they time.
        let times = logtimes::times_file(&p);
        std::fs::write(&times, "0 1000\n350 2000\n800 3000\n").unwrap();
        let text: String = (0..100).map(|i| format!("line {i:03}\n")).collect();
        std::fs::write(&p, &text).unwrap();
        assert!(cap(&p, 400).unwrap());
        let after = std::fs::read_to_string(&p).unwrap();
        let (t, _) = read_times(&p, 0).unwrap();
        let at = |needle: &str| t.time_at(after.find(needle).unwrap() as u64);
        assert_eq!((at("line 099"), at("line 087")), (Some(3000), Some(2000)), "{after}");
        let link = dir.path().join("l.log");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(cap(&link, 1).is_err(), "a link is not followed");
    }
}
