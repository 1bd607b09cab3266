//! tmux, the one wrapper: a server is reached by its socket name (`-L`, a socket in the one
//! directory we derive, `$TMUX_TMPDIR/tmux-<uid>/`), never started from the client side (`-N`:
//! a guest's unit or an agent's runner owns its server), a session by its exact name (`=NAME:`),
//! and every call is bounded. Its verbs speak the domain: open a guest's session, look at a pane,
//! read it, type into it, resize it, end a stray server.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::model::terminal::{exact_target, Key};

/// Bound on every tmux invocation.
pub const TMUX_TIMEOUT: Duration = Duration::from_secs(5);

/// The tmux servers of one user (`$TMUX_TMPDIR/tmux-<uid>/<socket>`).
#[derive(Debug, Clone)]
pub struct Tmux {
    tmpdir: PathBuf,
}

/// What one look at a session's active pane tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaneState {
    /// The tmux server's pid.
    pub server_pid: u32,
    pub cursor_x: u32,
    pub cursor_y: u32,
    pub cols: u32,
    pub rows: u32,
}

/// The formats of [`Tmux::pane`], tab-separated.
const PANE_FORMAT: &str = "#{session_name}\t#{pid}\t#{cursor_x}\t#{cursor_y}\t#{pane_width}\t#{pane_height}";

impl Tmux {
    pub fn new(tmpdir: &Path) -> Tmux {
        Tmux { tmpdir: tmpdir.to_path_buf() }
    }

    /// `new-session -d` on the guest's server: a 200×50 pane running `command` (our launcher,
    /// which enters the guest's directory and sets its environment itself). Nothing of an
    /// attach spec is given to tmux: `-c` is expanded as a format (`#(cmd)` runs a shell
    /// command, `#{l:/etc}` names another directory) and `-e` values are parsed for separators.
    pub async fn new_session(&self, socket: &str, command: &[String]) -> Result<(), Error> {
        let mut args = vec![s("new-session"), s("-d"), s("-s"), s(socket), s("-x"), s("200")];
        // A fixed start directory with no format in it: the launcher changes to the guest's.
        args.extend([s("-y"), s("50"), s("-c"), s("/")]);
        args.push(s("--"));
        args.extend(command.iter().cloned());
        self.run(socket, &[args]).await.map(drop)
    }

    /// The session's active pane, or `None` when no server answers on the socket or it has no
    /// such session. (`display-message -t` does not fail for a missing target: the session's
    /// name read back says whether it was found.)
    pub async fn pane(&self, socket: &str, session: &str) -> Result<Option<PaneState>, Error> {
        let args = [s("display-message"), s("-p"), s("-t"), exact_target(session), s(PANE_FORMAT)];
        let out = match self.run(socket, &[args.to_vec()]).await {
            Ok(out) => out,
            Err(Error::Tmux { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let fields: Vec<&str> = out.trim_end_matches('\n').split('\t').collect();
        let num = |i: usize| fields.get(i).and_then(|v| v.parse::<u32>().ok());
        match (fields.first(), num(1), num(2), num(3), num(4), num(5)) {
            (Some(name), Some(server_pid), Some(cursor_x), Some(cursor_y), Some(cols), Some(rows))
                if *name == session =>
            {
                Ok(Some(PaneState { server_pid, cursor_x, cursor_y, cols, rows }))
            }
            _ => Ok(None),
        }
    }

    /// The pane's content with its escapes, 1000 lines of history.
    pub async fn capture(&self, socket: &str, session: &str) -> Result<String, Error> {
        let args = [s("capture-pane"), s("-p"), s("-e"), s("-S"), s("-1000"), s("-t"), exact_target(session)];
        self.run(socket, &[args.to_vec()]).await
    }

    /// Types `keys` into the pane: one `send-keys` per key or text, chained by `;` into as few
    /// tmux invocations as fit [`SEND_BATCH_BYTES`], in order.
    pub async fn send(&self, socket: &str, session: &str, keys: &[Key]) -> Result<(), Error> {
        let target = exact_target(session);
        let commands = keys.iter().map(|k| {
            let mut c = vec![s("send-keys"), s("-t"), target.clone()];
            match k {
                Key::Named(n) => c.push(s(n)),
                Key::Literal(t) => c.extend([s("-l"), s("--"), t.clone()]),
            }
            c
        });
        for batch in batches(commands, SEND_BATCH_BYTES) {
            self.run(socket, &batch).await?;
        }
        Ok(())
    }

    /// `resize-window -x -y`: the window's size, fixed from now on (tmux sets its `window-size`
    /// to `manual`, so an attaching client does not change it back).
    pub async fn resize(&self, socket: &str, session: &str, cols: u16, rows: u16) -> Result<(), Error> {
        let args =
            [s("resize-window"), s("-t"), exact_target(session), s("-x"), cols.to_string(), s("-y"), rows.to_string()];
        self.run(socket, &[args.to_vec()]).await.map(drop)
    }

    /// `kill-server`: ends a guest's server (one no unit owns).
    pub async fn kill_server(&self, socket: &str) -> Result<(), Error> {
        self.run(socket, &[vec![s("kill-server")]]).await.map(drop)
    }

    /// Runs `tmux -u -N -L <socket> <command> ; <command> …` with a bound; stdout on success, a
    /// one-line error otherwise.
    async fn run(&self, socket: &str, commands: &[Vec<String>]) -> Result<String, Error> {
        let mut cmd = tokio::process::Command::new("tmux");
        cmd.env("TMUX_TMPDIR", &self.tmpdir);
        // `-u`: UTF-8 whatever the locale. Without it a client in the C locale (a unit, a
        // cleared environment) gets a tab of a format as `_` and non-ASCII input mangled.
        cmd.args(["-u", "-N", "-L", socket]);
        for (i, command) in commands.iter().enumerate() {
            if i > 0 {
                // The separator itself: the only argument that reaches tmux as a bare `;`.
                cmd.arg(";");
            }
            cmd.args(command.iter().map(|a| escape_separator(a).into_owned()));
        }
        cmd.env_remove("TMUX").kill_on_drop(true).stdin(std::process::Stdio::null());
        let op = commands.first().and_then(|c| c.first()).map(String::as_str).unwrap_or("");
        let out = match tokio::time::timeout(TMUX_TIMEOUT, cmd.output()).await {
            Err(_) => return Err(Error::TmuxTimeout { what: format!("tmux -L {socket} {op}"), after: TMUX_TIMEOUT }),
            Ok(Err(e)) => return Err(Error::Io { op: "running", path: "tmux".into(), source: e }),
            Ok(Ok(out)) => out,
        };
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            Err(Error::Tmux { op: format!("tmux {op}"), message: msg })
        }
    }
}

/// Bytes of commands sent in one tmux invocation. A client hands its command to the server as
/// one message of at most 16 KiB (tmux's `MAX_IMSGSIZE`; more is "command too long"); half of
/// that leaves room for the one command that is larger alone (a text of 4096 UTF-16 units is
/// at most 12 KiB of UTF-8).
pub const SEND_BATCH_BYTES: usize = 8 * 1024;

/// `commands` in groups of at most `budget` bytes as tmux packs them (each argument and the `;`
/// between commands with a NUL); a command larger than that is a group of its own.
fn batches(commands: impl Iterator<Item = Vec<String>>, budget: usize) -> Vec<Vec<Vec<String>>> {
    let packed = |c: &Vec<String>| c.iter().map(|a| escape_separator(a).len() + 1).sum::<usize>() + 2;
    let mut out: Vec<Vec<Vec<String>>> = Vec::new();
    let mut size = 0;
    for c in commands {
        let n = packed(&c);
        match out.last_mut() {
            Some(batch) if size + n <= budget => batch.push(c),
            _ => {
                out.push(vec![c]);
                size = 0;
            }
        }
        size += n;
    }
    out
}

fn s(v: &str) -> String {
    v.to_string()
}

/// Whether `<dir>/<name>` is a server's socket we may talk to: `Ok(false)` when nothing is
/// there, `Ok(true)` for a socket of ours in a directory of ours that is no link and open to
/// no one else (what tmux itself demands of it); an error saying why for anything else (a
/// link, a file, another user's).
pub fn socket_is_ours(dir: &Path, name: &str) -> Result<bool, String> {
    let uid = nix::unistd::getuid().as_raw();
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
        Ok(m) if !m.file_type().is_dir() => return Err(format!("{} is not a directory", dir.display())),
        Ok(m) if m.uid() != uid || m.mode() & 0o077 != 0 => {
            return Err(format!("{} is not a directory of ours closed to others", dir.display()))
        }
        Ok(_) => {}
    }
    let path = dir.join(name);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("{}: {e}", path.display())),
        Ok(m) if !m.file_type().is_socket() => Err(format!("{} is not a socket", path.display())),
        Ok(m) if m.uid() != uid => Err(format!("{} is owned by uid {}", path.display(), m.uid())),
        Ok(_) => Ok(true),
    }
}

/// `/proc/PID/cgroup` of a tmux server (a few hundred bytes; read at most 64 KiB).
pub fn server_cgroup(pid: u32) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(format!("/proc/{pid}/cgroup"))?.take(64 * 1024).read_to_string(&mut text)?;
    Ok(text)
}

/// tmux reads an argument ending in `;` as the end of a command (its separator) and drops the
/// `;`; one ending in `\;` as the argument with a `;` at the end. So a `\` before a final `;`
/// makes every argument arrive as it is (`a;` → `a\;`, `a\;` → `a\\;`, `;` → `\;`).
pub(crate) fn escape_separator(arg: &str) -> std::borrow::Cow<'_, str> {
    match arg.strip_suffix(';') {
        Some(head) => format!("{head}\\;").into(),
        None => arg.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_final_semicolon_is_escaped_once() {
        assert_eq!(escape_separator("echo hi;"), "echo hi\\;");
        assert_eq!(escape_separator(";"), "\\;");
        assert_eq!(escape_separator("a\\;"), "a\\\\;");
        assert_eq!(escape_separator("a;b"), "a;b");
        assert_eq!(escape_separator("#{l:/etc}"), "#{l:/etc}");
    }

    #[test]
    fn keys_go_in_batches_tmux_takes_in_order() {
        let cmd = |t: &str| vec![s("send-keys"), s("-t"), s("=x:"), s("-l"), s("--"), s(t)];
        let size = cmd("a").iter().map(|a| a.len() + 1).sum::<usize>() + 2;
        let all: Vec<Vec<String>> = (0..100).map(|i| cmd(&format!("{}", i % 10))).collect();
        let b = batches(all.clone().into_iter(), size * 30);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [30, 30, 30, 10]);
        assert_eq!(b.concat(), all, "in order, none lost");
        let big = cmd(&"y".repeat(12 * 1024));
        let b = batches([cmd("a"), big.clone(), cmd("b")].into_iter(), SEND_BATCH_BYTES);
        assert_eq!(b, [vec![cmd("a")], vec![big], vec![cmd("b")]], "a large command goes alone");
        assert!(batches(std::iter::empty(), 10).is_empty());
    }

    #[test]
    fn only_a_socket_of_ours_is_talked_to() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("tmux-x");
        assert_eq!(socket_is_ours(&dir, "s"), Ok(false), "no directory: no server");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(socket_is_ours(&dir, "s"), Ok(false));
        let _listener = std::os::unix::net::UnixListener::bind(dir.join("s")).unwrap();
        assert_eq!(socket_is_ours(&dir, "s"), Ok(true));
        std::fs::write(dir.join("f"), "").unwrap();
        assert!(socket_is_ours(&dir, "f").unwrap_err().contains("not a socket"));
        std::os::unix::fs::symlink(dir.join("s"), dir.join("l")).unwrap();
        assert!(socket_is_ours(&dir, "l").unwrap_err().contains("not a socket"), "a link is not followed");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(socket_is_ours(&dir, "s").unwrap_err().contains("closed to others"));
        let link = d.path().join("tmux-link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(socket_is_ours(&link, "s").unwrap_err().contains("not a directory"));
    }
}
