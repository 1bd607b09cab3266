//! `logs`: an agent's log file (live or collected), its sanitised tail, and `--follow`, which
//! polls the file for appended lines. The path is derived from the agent's session (its unit
//! name, or the exit record's directory), never read from metadata or a record.

use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

use crate::error::Error;
use crate::io::log_file;
use crate::ops::Supervisor;

/// How often `--follow` looks for appended lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// The answer of `logs`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogTail {
    /// The JSON contract's version.
    pub schema_version: crate::model::contract::SchemaVersion,
    pub log_file: PathBuf,
    pub lines: Vec<String>,
    /// With `--timestamps`: when each of `lines` was written (ms since the epoch, to within
    /// 10 ms), `null` for a line the log has no time for (written before its writer timed it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub times: Option<Vec<Option<u64>>>,
}

/// What `logs` is asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogQuery {
    /// At most this many lines, the newest; `None`: every line read (at most the log's newest
    /// MiB).
    pub lines: Option<usize>,
    /// Terminal escape sequences kept.
    pub raw: bool,
    /// Only the lines written at or after this moment (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Each line with the time it was written.
    pub timestamps: bool,
}

impl Supervisor {
    /// The log file of an agent, live or collected.
    pub async fn log_file(&self, reference: &str) -> Result<PathBuf, Error> {
        match self.resolve(reference).await {
            Ok(agent) => Ok(agent.log_file.into()),
            Err(Error::NotFound { .. }) => {
                let dir = crate::io::exit_store::exits_dir(&self.host.state_home);
                let rec = crate::io::exit_store::find(&dir, &self.config.tmux_prefix, reference)
                    .ok_or_else(|| Error::NotFound { reference: reference.to_string() })?;
                Ok(crate::model::plan::log_file(&self.host.home, &rec.session_name))
            }
            Err(e) => Err(e),
        }
    }

    /// An agent's log as `query` asks, sanitised unless `raw`.
    pub async fn logs(&self, reference: &str, query: LogQuery) -> Result<LogTail, Error> {
        let path = self.log_file(reference).await?;
        Ok(read_log(&path, query)?.0)
    }
}

/// The lines of the log at `path` that `query` asks for, and the log's length when read.
fn read_log(path: &Path, query: LogQuery) -> Result<(LogTail, u64), Error> {
    let io = || Error::io("reading log", path);
    let answer =
        |lines, times, len| (LogTail { schema_version: Default::default(), log_file: path.into(), lines, times }, len);
    if query.since_ms.is_none() && !query.timestamps {
        let n = query.lines.unwrap_or(usize::MAX);
        let (lines, len) = log_file::tail_file(path, n, query.raw).map_err(io())?;
        return Ok(answer(lines, None, len));
    }
    let (placed, len) = log_file::tail_placed(path, query.raw).map_err(io())?;
    let (times, _) = log_file::read_times(path, 0).map_err(Error::io("reading log times", path))?;
    if query.since_ms.is_some() && times.is_empty() && !placed.is_empty() {
        return Err(Error::Argument(format!(
            "--since: the log {} has no times (it was written before agent-relay-systemd timed its logs); \
             leave --since out to read it",
            path.display()
        )));
    }
    let mut rows: Vec<(Option<u64>, String)> = placed
        .into_iter()
        .map(|p| (times.time_at(p.offset), p.line))
        .filter(|(t, _)| query.since_ms.is_none_or(|since| t.is_some_and(|t| t >= since)))
        .collect();
    if let Some(n) = query.lines {
        rows.drain(..rows.len().saturating_sub(n));
    }
    let (stamps, lines): (Vec<Option<u64>>, Vec<String>) = rows.into_iter().unzip();
    Ok(answer(lines, query.timestamps.then_some(stamps), len))
}

/// `log-tee`: runs the runner `argv` (argv\[0\] its path) in place of this process, its output
/// going through our writer to this process's standard output (the log systemd opened for the
/// unit) and the times to `times`. Returns only when that failed, with why.
pub fn log_tee(times: &Path, argv: &[String]) -> std::io::Error {
    use std::os::fd::AsFd;
    let log = match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) => return e,
    };
    let words: Vec<std::ffi::OsString> = argv.iter().map(Into::into).collect();
    crate::io::log_tee::exec_teed(log, times, &words, &[])
}

/// The lines `query` asks for, then each line appended to the log, with the time it was written
/// (`None` unless `query.timestamps`, or when the log has none for it), to `emit` until it returns
/// false (the reader went away). A truncated file is read again from its start.
pub async fn follow(
    path: &Path,
    query: LogQuery,
    mut emit: impl FnMut(Option<u64>, &str) -> bool,
) -> Result<(), Error> {
    let (first, mut offset) = read_log(path, query)?;
    let first_times = first.times.unwrap_or_default();
    for (i, l) in first.lines.iter().enumerate() {
        if !emit(first_times.get(i).copied().flatten(), l) {
            return Ok(());
        }
    }
    let mut times = crate::model::logtimes::Times::default();
    let mut times_offset = 0;
    let mut pending: Vec<u8> = Vec::new();
    loop {
        tokio::time::sleep(FOLLOW_POLL).await;
        let (mut buf, len) = log_file::read_from(path, offset).map_err(Error::io("reading log", path))?;
        if len < offset {
            // Truncated (cut by `reap`, or by hand): start over, times and all.
            (offset, times_offset, times, pending) = (0, 0, Default::default(), Vec::new());
            buf = log_file::read_from(path, 0).map_err(Error::io("reading log", path))?.0;
        }
        if buf.is_empty() {
            continue;
        }
        let base = offset - pending.len() as u64;
        offset += buf.len() as u64;
        pending.extend_from_slice(&buf);
        let Some(cut) = pending.iter().rposition(|b| *b == b'\n') else { continue };
        if query.timestamps {
            let (more, at) = log_file::read_times(path, times_offset).map_err(Error::io("reading log times", path))?;
            times.extend(more);
            times_offset = at;
        }
        let lines = crate::model::logtimes::placed_lines(&pending[..=cut], base, query.raw, false);
        pending.drain(..=cut);
        for p in lines {
            let t = if query.timestamps { times.time_at(p.offset) } else { None };
            if !emit(t, &p.line) {
                return Ok(());
            }
        }
    }
}
