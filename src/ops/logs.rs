//! `logs`: an agent's log file (live or collected), its sanitised tail, and `--follow`, which
//! polls the file for appended lines. The path is derived from the agent's session (its unit
//! name, or the exit record's directory), never read from metadata or a record.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

use crate::error::Error;
use crate::io::log_file;
use crate::model::logtext;
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

    /// The last `n` lines of an agent's log, sanitised unless `raw`.
    pub async fn logs(&self, reference: &str, n: usize, raw: bool) -> Result<LogTail, Error> {
        let path = self.log_file(reference).await?;
        let (lines, _) = log_file::tail_file(&path, n, raw).map_err(Error::io("reading log", &path))?;
        Ok(LogTail { schema_version: Default::default(), log_file: path, lines })
    }
}

/// The last `n` lines of `path`, then each line appended to it, to `emit` until it returns false
/// (the reader went away). A truncated file is read again from its start.
pub async fn follow(
    path: &std::path::Path,
    n: usize,
    raw: bool,
    mut emit: impl FnMut(&str) -> bool,
) -> Result<(), Error> {
    let io = Error::io("reading log", path);
    let (tail, mut offset) = log_file::tail_file(path, n, raw).map_err(io)?;
    for l in &tail {
        if !emit(l) {
            return Ok(());
        }
    }
    let mut partial = String::new();
    loop {
        tokio::time::sleep(FOLLOW_POLL).await;
        let mut read = log_file::read_from(path, offset).map_err(Error::io("reading log", path))?;
        if read.1 < offset {
            offset = 0; // truncated: start over
            read = log_file::read_from(path, 0).map_err(Error::io("reading log", path))?;
        }
        let buf = read.0;
        offset += buf.len() as u64;
        partial.push_str(&String::from_utf8_lossy(&buf));
        let Some(cut) = partial.rfind('\n') else { continue };
        let complete: String = partial.drain(..=cut).collect();
        for l in logtext::log_lines(&complete, raw) {
            if !emit(&l) {
                return Ok(());
            }
        }
    }
}
