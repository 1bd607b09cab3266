//! `restart`: a transactional swap. The successor starts (through the admission gate), must
//! register (its runner info naming its pid) and stay alive through a settle window; only then is
//! the predecessor stopped. If the successor fails, it is stopped and the predecessor keeps
//! running; the answer says why. Transient and durable agents alike.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Serialize;

use crate::error::Error;
use crate::io::{nofollow, runner};
use crate::model::record::{AgentRecord, Liveness};
use crate::model::request::{self, SpawnRequest};
use crate::model::{naming, plan, restart};
use crate::ops::spawn::SpawnOptions;
use crate::ops::Supervisor;

/// How the swap is run.
#[derive(Debug, Clone)]
pub struct RestartOptions {
    /// The successor's request; `None`: the predecessor's own.
    pub request: Option<SpawnRequest>,
    /// The successor's spawnRequestId; `None`: the given request's, else a fresh `restart-<uuid>`.
    pub spawn_request_id: Option<String>,
    pub registration_timeout: Duration,
    pub settle: Duration,
    pub stop_timeout: Duration,
}

/// The answer of a restart: the successor running, the predecessor stopped.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartOutcome {
    /// The JSON contract's version.
    pub schema_version: crate::model::contract::SchemaVersion,
    /// The new generation, registered and settled.
    pub agent: AgentRecord,
    /// The old generation's unit, now stopped.
    pub predecessor_unit: String,
    /// The old generation's main pid when the swap began.
    pub predecessor_pid: Option<u32>,
    /// From the successor's start answer to its runner info naming its pid, ms.
    pub registered_ms: u64,
    /// The whole swap: admission, start, registration, settle and the predecessor's stop, ms.
    pub swap_ms: u64,
}

impl Supervisor {
    pub async fn restart(&self, reference: &str, opts: RestartOptions) -> Result<RestartOutcome, Error> {
        let began = Instant::now();
        let old = self.resolve(reference).await?;
        if old.state != Liveness::Alive {
            return Err(Error::NotRunning {
                agent_id: old.agent_id.clone(),
                needs: "restart swaps a running agent: `start` a stopped durable one, spawn a transient one again",
            });
        }
        let taken = self.taken_request(&old).await?;
        let rid = opts
            .spawn_request_id
            .clone()
            .or_else(|| opts.request.as_ref().and_then(|r| r.spawn_request_id.clone()))
            .unwrap_or_else(|| format!("restart-{}", uuid::Uuid::new_v4().simple()));
        let next = restart::successor_request(
            &taken,
            opts.request.clone(),
            &old.agent_id,
            old.spawn_request_id.as_deref(),
            rid,
        )?;

        let (outcome, _slot) = if old.durable {
            (self.spawn_persist(&next).await?, None)
        } else {
            self.spawn_admitted(&next, SpawnOptions::default()).await?
        };
        let new = outcome.agent;
        let registered = match self.registered_and_settled(&new, &opts).await {
            Ok(took) => took,
            Err(why) => {
                self.tear_down(&new, opts.stop_timeout).await;
                return Err(Error::SpawnFailed {
                unit: new.systemd_unit.clone(),
                detail: format!(
                    "restart aborted: the successor {why}; it was stopped and the predecessor {} keeps running (pid {})",
                    old.systemd_unit,
                    old.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
                ),
            });
            }
        };
        let registered_ms = registered.as_millis() as u64;
        drop(_slot);
        if old.durable {
            self.remove(&old.systemd_unit, opts.stop_timeout).await?;
        } else {
            self.stop(&old.systemd_unit, opts.stop_timeout).await?;
        }
        let agent = self.record_of(&new.systemd_unit).await?.unwrap_or(new);
        Ok(RestartOutcome {
            schema_version: Default::default(),
            agent,
            predecessor_unit: old.systemd_unit,
            predecessor_pid: old.pid,
            registered_ms,
            swap_ms: began.elapsed().as_millis() as u64,
        })
    }

    /// The request the predecessor was started from: `request.json` in the directory of its
    /// `EnvironmentFile=`, which must be the one we derive for its unit name
    /// (`<root>/agents/<session>.<hex>`), read without following a link and bounded in size.
    async fn taken_request(&self, old: &AgentRecord) -> Result<SpawnRequest, Error> {
        let session = naming::session_of_unit(&old.systemd_unit, &self.config.tmux_prefix).ok_or_else(|| {
            Error::NotOurs { unit: old.systemd_unit.clone(), prefix: self.config.tmux_prefix.clone() }
        })?;
        let roots = [self.runtime_root().ok(), Some(self.host.durable_root())];
        let env_files = self.manager().environment_files(&old.systemd_unit).await?;
        let dir = env_files
            .iter()
            .filter_map(|f| f.parent())
            .find(|d| roots.iter().flatten().any(|r| is_agent_dir_of(d, r, session)))
            .map(Path::to_path_buf);
        let missing = || {
            Error::Argument(format!(
                "agent {} has no spawn request on file (started by an older version?); pass the successor's request with --spec",
                old.systemd_unit
            ))
        };
        let path: PathBuf = dir.ok_or_else(missing)?.join(plan::REQUEST_FILE_NAME);
        let bytes = nofollow::read_regular(&path, request::MAX_REQUEST_BYTES as u64).map_err(|_| missing())?;
        let text = String::from_utf8(bytes).map_err(|_| missing())?;
        Ok(request::parse(&text)?)
    }

    /// Ok (with how long registration took) once the successor's runner info names its main pid
    /// and it is still that pid, alive, a settle window later; else why not.
    async fn registered_and_settled(&self, new: &AgentRecord, opts: &RestartOptions) -> Result<Duration, String> {
        let begun = Instant::now();
        let info = plan::runner_info_file(&self.host.home, &new.session_name);
        let deadline = Instant::now() + opts.registration_timeout;
        let pid = loop {
            let rec = self.record_of(&new.systemd_unit).await.map_err(|e| e.to_string())?;
            let Some(rec) = rec.filter(|r| r.state == Liveness::Alive) else {
                return Err("ended before it registered".into());
            };
            if let Some(pid) = rec.pid.filter(|p| registered_pid(&info, &new.agent_id) == Some(*p)) {
                break pid;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "did not register within {} ms (no runner info naming its pid)",
                    opts.registration_timeout.as_millis()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let took = begun.elapsed();
        tokio::time::sleep(opts.settle).await;
        let rec = self.record_of(&new.systemd_unit).await.map_err(|e| e.to_string())?;
        match rec {
            Some(r) if r.state == Liveness::Alive && r.pid == Some(pid) => Ok(took),
            _ => Err(format!("did not stay alive through the {} ms settle window", opts.settle.as_millis())),
        }
    }

    /// Stops a failed successor (and deletes its unit file if durable); best effort, bounded.
    async fn tear_down(&self, new: &AgentRecord, timeout: Duration) {
        let unit = new.systemd_unit.as_str();
        let done = if new.durable {
            self.remove(unit, timeout).await.map(drop)
        } else {
            self.stop(unit, timeout).await.map(drop)
        };
        if let Err(e) = done {
            tracing::warn!(unit, error = %e, "could not stop the failed successor");
        }
    }
}

/// `dir` is `<root>/agents/<session>.<hex>`.
fn is_agent_dir_of(dir: &Path, root: &Path, session: &str) -> bool {
    let Some(name) = dir.file_name().and_then(|n| n.to_str()) else { return false };
    let attempt = name.strip_prefix(session).and_then(|r| r.strip_prefix('.'));
    dir.parent() == Some(root.join("agents").as_path())
        && attempt.is_some_and(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The pid a runner's info file names, when it names `agent_id` (read as every runner-info read
/// is: [`runner::read_info`]).
fn registered_pid(info: &Path, agent_id: &str) -> Option<u32> {
    let doc = runner::read_info(info).ok()?;
    if doc.get("agentId")?.as_str()? != agent_id {
        return None;
    }
    u32::try_from(doc.get("pid")?.as_u64()?).ok()
}
