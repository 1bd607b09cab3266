//! Reading an agent's log file: its tail, bounded in size.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::model::logtext::{log_lines, MAX_TAIL_BYTES};

/// The last `n` lines of a log, reading at most [`MAX_TAIL_BYTES`] from its end.
pub fn tail_file(path: &Path, n: usize, raw: bool) -> std::io::Result<(Vec<String>, u64)> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(MAX_TAIL_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.take(MAX_TAIL_BYTES).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    // A cut in the middle of a line leaves a fragment: drop it.
    let text = if start > 0 { text.split_once('\n').map(|(_, rest)| rest).unwrap_or("") } else { &text };
    let lines = log_lines(text, raw);
    let skip = lines.len().saturating_sub(n);
    Ok((lines[skip..].to_vec(), len))
}

/// What was appended to `path` since `offset` (at most [`MAX_TAIL_BYTES`]), and the file's length
/// now; nothing when the file is missing or shorter than `offset` (truncated).
pub fn read_from(path: &Path, offset: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if len <= offset {
        return Ok((Vec::new(), len));
    }
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.take(MAX_TAIL_BYTES).read_to_end(&mut buf)?;
    Ok((buf, len))
}
