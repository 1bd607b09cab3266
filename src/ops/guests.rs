//! Guest terminals, the IO part: the runner's attach spec over its loopback control URL (5 s
//! bound), each guest's tmux server as its own transient unit, and tmux calls (bounded).

use std::time::Duration;

use serde::Serialize;

use crate::error::Error;
use crate::model::guest::{self, Key};
use crate::model::record::Liveness;
use crate::ops::{now_ms, Supervisor};

/// Bound on the runner's control URL, as the seed.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on every tmux invocation.
pub const TMUX_TIMEOUT: Duration = Duration::from_secs(5);

/// A guest terminal, rebuilt from its unit.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestRecord {
    pub guest: String,
    pub systemd_unit: String,
    pub agent_id: String,
    pub provider: String,
    pub mode: &'static str,
    pub running: bool,
    pub active_state: String,
    pub pid: Option<u32>,
    pub ttl_ms: Option<u64>,
    pub expires_at: Option<u64>,
}

/// The answer of `guest stop`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestStop {
    pub guest: String,
    pub stopped: bool,
}

/// A pane read consistently with its cursor.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Capture {
    pub guest: String,
    pub content: String,
    pub cursor_x: u32,
    pub cursor_y: u32,
    pub consistent: bool,
}

/// Runs tmux with a bound; stdout on success, a one-line error otherwise.
pub async fn tmux(tmpdir: &std::path::Path, args: &[String]) -> Result<String, Error> {
    let mut cmd = tokio::process::Command::new("tmux");
    cmd.env("TMUX_TMPDIR", tmpdir);
    // -N: never start a server from the client side; the guest unit owns the only server.
    cmd.arg("-N").args(args).env_remove("TMUX").kill_on_drop(true).stdin(std::process::Stdio::null());
    let out = match tokio::time::timeout(TMUX_TIMEOUT, cmd.output()).await {
        Err(_) => return Err(Error::Timeout { what: format!("tmux {}", args.join(" ")), after: TMUX_TIMEOUT }),
        Ok(Err(e)) => return Err(Error::Io { op: "running", path: "tmux".into(), source: e }),
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        // Every call is `-L <socket> <command> …`.
        let op = args.get(2).map(String::as_str).unwrap_or("");
        Err(Error::Tmux { op: format!("tmux {op}"), message: msg })
    }
}

fn s(v: &str) -> String {
    v.to_string()
}

/// `GET <controlUrl>/terminal/attach-spec`, loopback only, bounded in time and size.
fn fetch_attach_spec(control_url: &str) -> Result<Vec<u8>, String> {
    let port = control_url
        .strip_prefix("http://127.0.0.1:")
        .map(|p| p.trim_end_matches('/'))
        .filter(|p| p.parse::<u16>().is_ok())
        .ok_or_else(|| format!("runner control URL {control_url:?} is not http://127.0.0.1:<port>; refusing"))?;
    let agent = ureq::AgentBuilder::new().timeout(ATTACH_TIMEOUT).redirects(0).build();
    let url = format!("http://127.0.0.1:{port}/terminal/attach-spec");
    let resp = match agent.get(&url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let text = r.into_string().unwrap_or_default();
            let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            return Err(body["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or(format!("runner attach-spec failed with {code}")));
        }
        Err(e) if e.to_string().contains("timed out") => {
            return Err(format!("the runner did not answer {url} within {ATTACH_TIMEOUT:?}"))
        }
        Err(e) => return Err(format!("cannot reach the runner at {url}: {e}")),
    };
    let mut body = Vec::new();
    use std::io::Read;
    resp.into_reader()
        .take(guest::MAX_SPEC_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("reading the runner's attach-spec: {e}"))?;
    Ok(body)
}

impl Supervisor {
    /// Starts a guest terminal for a live agent, from its runner's attach spec.
    pub async fn guest_create(&self, reference: &str) -> Result<GuestRecord, Error> {
        let agent = self.resolve(reference).await?;
        if agent.state != Liveness::Alive {
            return Err(Error::Invalid(format!("agent {} is not running; a guest needs a live agent", agent.agent_id)));
        }
        let info_path =
            crate::model::plan::runner_info_dir(&self.host.home).join(format!("{}.json", agent.session_name));
        let info: serde_json::Value =
            std::fs::read(&info_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or_else(|| {
                Error::Invalid("runner control URL is unavailable; restart the agent to enable terminal attach".into())
            })?;
        let url = info["controlUrl"].as_str().unwrap_or_default().to_string();
        let body = match tokio::task::spawn_blocking(move || fetch_attach_spec(&url)).await {
            Ok(r) => r.map_err(Error::Invalid)?,
            Err(e) => return Err(Error::Invalid(format!("fetching the attach spec failed: {e}"))),
        };
        let (cfg, home) = (&self.config, &self.host.home);
        let within = |c: &str| crate::io::host::resolve_cwd(c, cfg, home).is_ok();
        let spec = guest::parse_attach_spec(&body, &within).map_err(Error::Invalid)?;
        let tmux_bin = crate::io::host::find_program("tmux", &self.host.path).ok_or_else(|| {
            Error::Invalid("tmux is not installed (not on PATH); install tmux for guest terminals".into())
        })?;
        let rand8 = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let name = guest::guest_name(&self.config.tmux_prefix, &spec.provider, &agent.agent_id, rand8);
        let unit = guest::guest_unit(&name);
        let created = now_ms();
        let props = guest::guest_properties(&guest::GuestUnitSpec {
            name: &name,
            tmux: &tmux_bin,
            tmux_tmpdir: &self.host.tmux_tmpdir,
            agent_unit: &agent.systemd_unit,
            agent_id: &agent.agent_id,
            provider: &spec.provider,
            ttl_ms: spec.ttl_ms,
            created_ms: created,
        });
        match self.mgr.start_transient(&unit, &props, self.mgr.timeout()).await {
            Ok(job) if job.result == "done" => {}
            Ok(job) => {
                return Err(Error::SpawnFailed { unit, detail: format!("guest tmux server: start job {}", job.result) })
            }
            Err(crate::io::systemd::StartError::Exists) => {
                return Err(Error::Conflict(format!("guest unit {unit} already exists")))
            }
            Err(crate::io::systemd::StartError::Other(e)) => return Err(e),
        }
        let mut args = vec![s("-L"), name.clone(), s("new-session"), s("-d"), s("-s"), name.clone(), s("-x"), s("200")];
        args.extend([s("-y"), s("50"), s("-c"), spec.cwd.clone()]);
        for (k, v) in &spec.env {
            args.extend([s("-e"), format!("{k}={v}")]);
        }
        args.push(s("--"));
        args.extend(spec.command.iter().cloned());
        // The server listens a moment after its unit started: retry, bounded.
        let deadline = tokio::time::Instant::now() + TMUX_TIMEOUT;
        let result = loop {
            match tmux(&self.host.tmux_tmpdir, &args).await {
                Ok(_) => break Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => break Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        if let Err(e) = result {
            let _ = self.mgr.stop_unit(&unit).await;
            return Err(Error::SpawnFailed { unit, detail: format!("tmux new-session failed: {e}") });
        }
        Ok(GuestRecord {
            guest: name,
            systemd_unit: unit,
            agent_id: agent.agent_id,
            provider: spec.provider,
            mode: "guest",
            running: true,
            active_state: "active".into(),
            pid: None,
            ttl_ms: Some(spec.ttl_ms),
            expires_at: Some(created + spec.ttl_ms),
        })
    }

    /// Guests of this prefix, from their units.
    pub async fn guest_list(&self) -> Result<Vec<GuestRecord>, Error> {
        let pattern = format!("{}{}-guest-*.service", guest::GUEST_UNIT_PREFIX, self.config.tmux_prefix);
        // Read concurrently, as agents are (one round trip per guest was serial before).
        let snaps = self.snapshots_matching(&pattern).await?;
        let mut out: Vec<GuestRecord> =
            snaps.iter().filter_map(|s| guest_record(s, &self.config.tmux_prefix)).collect();
        out.sort_by(|a, b| a.guest.cmp(&b.guest));
        Ok(out)
    }

    /// Stops a guest (guest names only); answers whether it was running.
    pub async fn guest_stop(&self, name: &str) -> Result<GuestStop, Error> {
        self.guest_checked(name)?;
        let unit = guest::guest_unit(name);
        let running = self.mgr.unit_state(&unit).await?.is_some_and(|s| s == "active");
        self.stop_unit_bounded(&unit, TMUX_TIMEOUT, None).await?;
        self.mgr.reset_failed(&unit).await?;
        Ok(GuestStop { guest: name.to_string(), stopped: running })
    }

    fn guest_checked(&self, name: &str) -> Result<(), Error> {
        if guest::is_guest_name(name, &self.config.tmux_prefix) {
            Ok(())
        } else {
            let prefix = &self.config.tmux_prefix;
            Err(Error::Invalid(format!("{name:?} is not a guest session (names start with {prefix}-guest-)")))
        }
    }

    /// Reads the pane as content, cursor, content until two reads agree (at most 4 tries).
    pub async fn terminal_capture(&self, name: &str) -> Result<Capture, Error> {
        self.guest_checked(name)?;
        let sock = name.to_string();
        let cap = vec![
            s("-L"),
            sock.clone(),
            s("capture-pane"),
            s("-p"),
            s("-e"),
            s("-S"),
            s("-1000"),
            s("-t"),
            sock.clone(),
        ];
        let cur =
            vec![s("-L"), sock.clone(), s("display-message"), s("-p"), s("-t"), sock, s("#{cursor_x} #{cursor_y}")];
        let mut last = tmux(&self.host.tmux_tmpdir, &cap).await.map_err(|e| not_running(name, e))?;
        for _ in 0..4 {
            let cursor = tmux(&self.host.tmux_tmpdir, &cur).await.map_err(|e| not_running(name, e))?;
            let again = tmux(&self.host.tmux_tmpdir, &cap).await.map_err(|e| not_running(name, e))?;
            let mut it = cursor.split_whitespace().map(|v| v.parse::<u32>().unwrap_or(0));
            let (x, y) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
            if again == last {
                return Ok(Capture { guest: name.into(), content: again, cursor_x: x, cursor_y: y, consistent: true });
            }
            last = again;
        }
        Ok(Capture { guest: name.into(), content: last, cursor_x: 0, cursor_y: 0, consistent: false })
    }

    /// Sends input (at most 4096 characters) as send-keys tokens.
    pub async fn terminal_send(&self, name: &str, input: &str) -> Result<usize, Error> {
        self.guest_checked(name)?;
        let keys = guest::tokenize_input(input).map_err(Error::Invalid)?;
        for k in &keys {
            let mut args = vec![s("-L"), name.to_string(), s("send-keys"), s("-t"), name.to_string()];
            match k {
                Key::Named(n) => args.push(s(n)),
                Key::Literal(t) => args.extend([s("-l"), s("--"), t.clone()]),
            }
            tmux(&self.host.tmux_tmpdir, &args).await.map_err(|e| not_running(name, e))?;
        }
        Ok(keys.len())
    }
}

fn not_running(name: &str, e: Error) -> Error {
    match e {
        Error::Tmux { message, .. } => Error::NotFound { reference: format!("{name} ({message})") },
        other => other,
    }
}

fn guest_record(snap: &crate::model::record::UnitSnapshot, prefix: &str) -> Option<GuestRecord> {
    let name = guest::guest_of_unit(&snap.unit, prefix)?;
    let fields: std::collections::HashMap<&str, &str> =
        snap.log_extra_fields.iter().filter_map(|b| std::str::from_utf8(b).ok()?.split_once('=')).collect();
    let num = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
    Some(GuestRecord {
        guest: name.to_string(),
        systemd_unit: snap.unit.clone(),
        agent_id: fields.get("AGENT_RELAY_AGENT_ID").map(|s| s.to_string()).unwrap_or_default(),
        provider: fields.get("AGENT_RELAY_PROVIDER").map(|s| s.to_string()).unwrap_or_default(),
        mode: "guest",
        running: snap.active_state == "active" && snap.main_pid > 0,
        active_state: snap.active_state.clone(),
        pid: (snap.main_pid > 0).then_some(snap.main_pid),
        ttl_ms: num("AGENT_RELAY_GUEST_TTL_MS"),
        expires_at: num("AGENT_RELAY_GUEST_EXPIRES_AT"),
    })
}
