//! `terminal capture|send|resize`: a guest's pane, or the agent's own tmux session as its
//! runner names it in its runner-info file. What the runner names is checked (io::runner, model::
//! terminal) and so is what answers there: a socket of ours in our socket directory, and a tmux
//! server that runs in the unit's own control group, so a runner cannot point us at another
//! terminal of the user. Input is made into keys before this is called (model::terminal).

use schemars::JsonSchema;
use serde::Serialize;

use crate::error::Error;
use crate::io::runner::{self, RunnerError};
use crate::io::tmux::{self, PaneState};
use crate::model::guest;
use crate::model::record::Liveness;
use crate::model::state::ActiveState;
use crate::model::terminal::Keys;
use crate::ops::{now_ms, Supervisor};

/// Reads of the content after the first that may be needed for two in a row to agree with a
/// cursor read between them (the orchestrator's `captureConsistent`).
pub const MAX_CAPTURE_RETRIES: usize = 4;

/// Whose terminal it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TerminalKind {
    /// A guest terminal (`guest create`): its own tmux server in its own unit.
    Guest,
    /// The agent's own tmux session, as its runner names it in its runner-info file.
    Agent,
}

/// Which terminal an answer is about.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TerminalOf {
    pub kind: TerminalKind,
    /// The tmux session.
    pub session: String,
    /// The guest's name (guest terminals only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
    /// The unit of the agent, or the guest's own.
    pub systemd_unit: String,
}

/// The answer of `terminal capture`: the pane read consistently with its cursor.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capture {
    /// The JSON contract's version.
    pub schema_version: crate::model::contract::SchemaVersion,
    /// Which terminal: the same keys in every terminal answer.
    #[serde(flatten)]
    pub terminal: TerminalOf,
    /// The pane's text with its escape sequences, 1000 lines of history; empty when not running.
    pub content: String,
    /// The pane exists (tmux keeps a pane after its process ended).
    pub running: bool,
    /// The unit's main process is alive (the agent's runner; a guest's tmux server).
    pub agent_alive: bool,
    /// The pane's width; null when not running.
    pub cols: Option<u32>,
    /// The pane's height; null when not running.
    pub rows: Option<u32>,
    /// The cursor's column in the pane (0 when not running).
    pub cursor_x: u32,
    /// The cursor's row in the pane (0 when not running).
    pub cursor_y: u32,
    /// Two reads of the content agreed around the cursor read; false when the pane kept
    /// changing (the latest reads are given) or is not running.
    pub consistent: bool,
    /// When it was read, ms since the epoch.
    pub captured_at: u64,
}

/// The answer of `terminal send`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    /// The JSON contract's version.
    pub schema_version: crate::model::contract::SchemaVersion,
    /// Which terminal: the same keys in every terminal answer.
    #[serde(flatten)]
    pub terminal: TerminalOf,
    /// Key groups typed (a run of text is one; the orchestrator's `sent`).
    pub keys: usize,
    /// Control characters dropped from the input.
    pub dropped: usize,
}

/// The answer of `terminal resize`: the size tmux reports after it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resized {
    /// The JSON contract's version.
    pub schema_version: crate::model::contract::SchemaVersion,
    /// Which terminal: the same keys in every terminal answer.
    #[serde(flatten)]
    pub terminal: TerminalOf,
    /// The pane's width after the resize.
    pub cols: u32,
    /// The pane's height after the resize.
    pub rows: u32,
}

/// A terminal found from a reference.
struct Target {
    of: TerminalOf,
    socket: String,
    alive: bool,
}

impl Supervisor {
    /// A guest name is a guest's terminal; any other reference is an agent's (resolved as every
    /// verb resolves it), its terminal the one its runner names.
    async fn terminal_target(&self, reference: &str) -> Result<Target, Error> {
        if guest::is_guest_name(reference, &self.config.tmux_prefix) {
            let unit = guest::guest_unit(reference);
            let state = self.mgr.unit_state(&unit).await?;
            let Some(state) = state else { return Err(Error::NotFound { reference: reference.to_string() }) };
            return Ok(Target {
                of: TerminalOf {
                    kind: TerminalKind::Guest,
                    session: reference.to_string(),
                    guest: Some(reference.to_string()),
                    systemd_unit: unit,
                },
                socket: reference.to_string(),
                alive: ActiveState::parse(&state) == ActiveState::Active,
            });
        }
        let agent = self.resolve(reference).await?;
        let info = crate::model::plan::runner_info_file(&self.host.home, &agent.session_name);
        let t = runner::terminal(&info, &agent.agent_id, &self.host.tmux_socket_dir())?;
        Ok(Target {
            of: TerminalOf {
                kind: TerminalKind::Agent,
                session: t.session,
                guest: None,
                systemd_unit: agent.systemd_unit,
            },
            socket: t.socket,
            alive: agent.state == Liveness::Alive,
        })
    }

    /// The target's pane, `None` when it is gone; refused when what answers is not the unit's.
    async fn terminal_pane(&self, t: &Target) -> Result<Option<PaneState>, Error> {
        let refuse = |why: String| -> Error {
            RunnerError::BadTerminal { path: format!("{} (tmux socket {})", t.of.systemd_unit, t.socket), why }.into()
        };
        let dir = self.host.tmux_socket_dir();
        if !tmux::socket_is_ours(&dir, &t.socket).map_err(refuse)? {
            return Ok(None);
        }
        let Some(pane) = self.tmux().pane(&t.socket, &t.of.session).await? else { return Ok(None) };
        // The server must run in the unit's control group: a runner's info file cannot make us
        // read or type into a terminal the agent does not own (the user's own tmux, another's).
        let cgroup = match tmux::server_cgroup(pane.server_pid) {
            Ok(text) => text,
            // The server ended since it answered.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(_) => String::new(),
        };
        if !crate::model::terminal::cgroup_has_unit(&cgroup, &t.of.systemd_unit) {
            return Err(refuse(format!(
                "its tmux server (pid {}) does not run in {}'s control group: not this agent's terminal",
                pane.server_pid, t.of.systemd_unit
            )));
        }
        Ok(Some(pane))
    }

    /// Reads the pane as content, cursor, content until two content reads agree (at most
    /// [`MAX_CAPTURE_RETRIES`] more reads), as the orchestrator does: the cursor given is then
    /// the cursor of exactly that content. A pane that is gone answers `running: false`.
    pub async fn terminal_capture(&self, reference: &str) -> Result<Capture, Error> {
        let t = self.terminal_target(reference).await?;
        let mut answer = Capture {
            schema_version: Default::default(),
            terminal: t.of.clone(),
            content: String::new(),
            running: false,
            agent_alive: t.alive,
            cols: None,
            rows: None,
            cursor_x: 0,
            cursor_y: 0,
            consistent: false,
            captured_at: 0,
        };
        if self.terminal_pane(&t).await?.is_none() {
            answer.captured_at = now_ms();
            return Ok(answer);
        }
        let tmux = self.tmux();
        // A pane that ends between two reads is a pane that is gone.
        let read = || async {
            let content = match tmux.capture(&t.socket, &t.of.session).await {
                Err(Error::Tmux { .. }) => return Ok(None),
                other => other?,
            };
            Ok::<_, Error>(Some(content))
        };
        let Some(mut content) = read().await? else { return Ok(gone(answer)) };
        let Some(mut pane) = tmux.pane(&t.socket, &t.of.session).await? else { return Ok(gone(answer)) };
        for _ in 0..MAX_CAPTURE_RETRIES {
            let Some(again) = read().await? else { return Ok(gone(answer)) };
            if again == content {
                answer.consistent = true;
                break;
            }
            content = again;
            let Some(p) = tmux.pane(&t.socket, &t.of.session).await? else { return Ok(gone(answer)) };
            pane = p;
        }
        answer.content = content;
        answer.running = true;
        answer.cols = Some(pane.cols);
        answer.rows = Some(pane.rows);
        answer.cursor_x = pane.cursor_x;
        answer.cursor_y = pane.cursor_y;
        answer.captured_at = now_ms();
        Ok(answer)
    }

    /// Types `keys` into the pane (all in one tmux call); a pane that is gone is an error.
    pub async fn terminal_send(&self, reference: &str, keys: &Keys) -> Result<Sent, Error> {
        let t = self.terminal_target(reference).await?;
        if self.terminal_pane(&t).await?.is_none() {
            return Err(Error::TerminalGone { session: t.of.session });
        }
        if !keys.keys.is_empty() {
            self.tmux().send(&t.socket, &t.of.session, &keys.keys).await?;
        }
        Ok(Sent { schema_version: Default::default(), terminal: t.of, keys: keys.keys.len(), dropped: keys.dropped })
    }

    /// What `guest attach` runs in its own place: tmux attached to the guest's session, once the
    /// guest's target, socket and server pass the checks every terminal verb makes.
    pub async fn guest_attach_command(&self, name: &str) -> Result<std::process::Command, Error> {
        if !guest::is_guest_name(name, &self.config.tmux_prefix) {
            return Err(Error::NotAGuest { name: name.to_string(), prefix: self.config.tmux_prefix.clone() });
        }
        let t = self.terminal_target(name).await?;
        if !t.alive || self.terminal_pane(&t).await?.is_none() {
            return Err(Error::TerminalGone { session: t.of.session });
        }
        let mut cmd = std::process::Command::new("tmux");
        cmd.env("TMUX_TMPDIR", &self.host.tmux_tmpdir).env_remove("TMUX");
        cmd.args(["-u", "-N", "-L", &t.socket, "attach-session", "-t"])
            .arg(crate::model::terminal::exact_target(&t.of.session));
        Ok(cmd)
    }

    /// Resizes the pane's window to `cols`×`rows` (checked by the caller:
    /// [`crate::model::terminal::check_size`]) and answers the size tmux reports after.
    pub async fn terminal_resize(&self, reference: &str, cols: u16, rows: u16) -> Result<Resized, Error> {
        crate::model::terminal::check_size(cols, rows).map_err(Error::Argument)?;
        let t = self.terminal_target(reference).await?;
        if self.terminal_pane(&t).await?.is_none() {
            return Err(Error::TerminalGone { session: t.of.session });
        }
        let tmux = self.tmux();
        tmux.resize(&t.socket, &t.of.session, cols, rows).await?;
        let pane =
            tmux.pane(&t.socket, &t.of.session).await?.ok_or(Error::TerminalGone { session: t.of.session.clone() })?;
        Ok(Resized { schema_version: Default::default(), terminal: t.of, cols: pane.cols, rows: pane.rows })
    }
}

/// The answer for a pane that ended while it was read.
fn gone(mut answer: Capture) -> Capture {
    answer.captured_at = now_ms();
    answer
}
