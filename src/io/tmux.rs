//! tmux, the one wrapper: every guest's tmux server is reached by its socket name (`-L`), never
//! started from the client side (`-N`: the guest unit owns the only server), and every call is
//! bounded. Its verbs speak the domain: open a guest's session, read its pane, send it keys.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::model::guest::Key;

/// Bound on every tmux invocation.
pub const TMUX_TIMEOUT: Duration = Duration::from_secs(5);

/// The tmux servers of one user (`$TMUX_TMPDIR/tmux-<uid>/<socket>`).
#[derive(Debug, Clone)]
pub struct Tmux {
    tmpdir: PathBuf,
}

impl Tmux {
    pub fn new(tmpdir: &Path) -> Tmux {
        Tmux { tmpdir: tmpdir.to_path_buf() }
    }

    /// `new-session -d` on the guest's server: a 200×50 pane running `command` (our launcher,
    /// which enters the guest's directory and sets its environment itself). Nothing of an
    /// attach spec is given to tmux: `-c` is expanded as a format (`#(cmd)` runs a shell
    /// command, `#{l:/etc}` names another directory) and `-e` values are parsed for separators.
    pub async fn new_session(&self, socket: &str, command: &[String]) -> Result<(), Error> {
        let mut args = vec![s("-L"), s(socket), s("new-session"), s("-d"), s("-s"), s(socket), s("-x"), s("200")];
        // A fixed start directory with no format in it: the launcher changes to the guest's.
        args.extend([s("-y"), s("50"), s("-c"), s("/")]);
        args.push(s("--"));
        args.extend(command.iter().cloned());
        self.run(&args).await.map(drop)
    }

    /// The pane's content with its escapes, 1000 lines of history.
    pub async fn capture(&self, socket: &str) -> Result<String, Error> {
        self.run(&[s("-L"), s(socket), s("capture-pane"), s("-p"), s("-e"), s("-S"), s("-1000"), s("-t"), s(socket)])
            .await
    }

    /// The pane's cursor `(x, y)`.
    pub async fn cursor(&self, socket: &str) -> Result<(u32, u32), Error> {
        let out = self
            .run(&[s("-L"), s(socket), s("display-message"), s("-p"), s("-t"), s(socket), s("#{cursor_x} #{cursor_y}")])
            .await?;
        let mut it = out.split_whitespace().map(|v| v.parse::<u32>().unwrap_or(0));
        Ok((it.next().unwrap_or(0), it.next().unwrap_or(0)))
    }

    /// One `send-keys`: a named key, or literal text.
    pub async fn send_key(&self, socket: &str, key: &Key) -> Result<(), Error> {
        let mut args = vec![s("-L"), s(socket), s("send-keys"), s("-t"), s(socket)];
        match key {
            Key::Named(n) => args.push(s(n)),
            Key::Literal(t) => args.extend([s("-l"), s("--"), t.clone()]),
        }
        self.run(&args).await.map(drop)
    }

    /// `kill-server`: ends a guest's server (one no unit owns).
    pub async fn kill_server(&self, socket: &str) -> Result<(), Error> {
        self.run(&[s("-L"), s(socket), s("kill-server")]).await.map(drop)
    }

    /// Runs tmux with a bound; stdout on success, a one-line error otherwise.
    async fn run(&self, args: &[String]) -> Result<String, Error> {
        let mut cmd = tokio::process::Command::new("tmux");
        cmd.env("TMUX_TMPDIR", &self.tmpdir);
        // `-L <socket>` are tmux's own options; what follows is one command's arguments.
        let (options, command) = args.split_at(args.len().min(2));
        cmd.arg("-N").args(options).args(command.iter().map(|a| escape_separator(a).into_owned()));
        cmd.env_remove("TMUX").kill_on_drop(true).stdin(std::process::Stdio::null());
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
}

fn s(v: &str) -> String {
    v.to_string()
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
}
