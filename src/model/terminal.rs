//! Terminals, the pure part: what `terminal send` types (the orchestrator's input rules and
//! limit), the sizes `terminal resize` accepts, and which tmux session and socket names a
//! runner's info file may name. No IO here.

use std::ops::RangeInclusive;
use std::path::Path;

use crate::model::guest::MAX_SOCKET_PATH;

/// Largest input of one `terminal send`, in UTF-16 code units: the orchestrator's
/// `TERMINAL_INPUT_MAX`, which it counts as JavaScript counts a string's `length`.
pub const MAX_INPUT_UTF16: usize = 4096;
/// Columns `terminal resize` accepts, as the orchestrator's `validateTerminalResize`.
pub const COLS: RangeInclusive<u16> = 10..=500;
/// Rows `terminal resize` accepts, as the orchestrator's `validateTerminalResize`.
pub const ROWS: RangeInclusive<u16> = 5..=200;
/// Longest tmux session name taken from a runner-info file (the orchestrator's are at most 80
/// bytes).
pub const MAX_SESSION_NAME: usize = 128;
/// The socket a runner-info file that names a session but no socket means: tmux's own default.
pub const DEFAULT_SOCKET: &str = "default";

/// One key or text to type: a tmux key name, or literal text (`send-keys -l`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Named(&'static str),
    Literal(String),
}

/// Input made into keys: what to type, and how many characters were dropped on the way.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Keys {
    pub keys: Vec<Key>,
    /// Control characters dropped (C0 other than those typed as keys, and C1).
    pub dropped: usize,
}

/// Escape sequences typed as the key they stand for (the orchestrator's `terminalInputTokens`),
/// tried before single characters.
const SEQUENCES: [(&str, &str); 7] = [
    ("\x1b[A", "Up"),
    ("\x1b[B", "Down"),
    ("\x1b[C", "Right"),
    ("\x1b[D", "Left"),
    ("\x1b[H", "Home"),
    ("\x1b[F", "End"),
    ("\x1b[3~", "DC"),
];

/// Terminal input → keys, as the orchestrator types it: the escape sequences of arrows,
/// Home/End and Delete as those keys; `\r` and `\n` each as Enter, except that `\r\n` is one
/// Enter (a pasted CRLF line end is one line end; the orchestrator types two); tab as Tab,
/// `\x03` as C-c, DEL and `\b` as BSpace, a lone ESC as Escape; every other C0 control
/// character dropped, as the orchestrator drops them, and C1 controls (U+0080-U+009F) too (the
/// orchestrator types those; no keyboard does); everything else as literal text. More than
/// [`MAX_INPUT_UTF16`] UTF-16 code units (a character beyond the BMP counts 2) is refused whole.
pub fn tokenize_input(input: &str) -> Result<Keys, String> {
    let units = input.encode_utf16().count();
    if units > MAX_INPUT_UTF16 {
        return Err(format!(
            "terminal input exceeds {MAX_INPUT_UTF16} characters (UTF-16 code units; this one has {units}); nothing was sent"
        ));
    }
    let mut out = Keys::default();
    let mut lit = String::new();
    let mut rest = input;
    while let Some(c) = rest.chars().next() {
        let seq = SEQUENCES.iter().find(|(s, _)| rest.starts_with(s));
        let (key, len) = match (seq, c) {
            (Some((s, name)), _) => (Some(*name), s.len()),
            (None, '\r') if rest.starts_with("\r\n") => (Some("Enter"), 2),
            (None, '\r' | '\n') => (Some("Enter"), 1),
            (None, '\t') => (Some("Tab"), 1),
            (None, '\x03') => (Some("C-c"), 1),
            (None, '\x7f' | '\x08') => (Some("BSpace"), 1),
            (None, '\x1b') => (Some("Escape"), 1),
            (None, c) => {
                if c.is_control() {
                    out.dropped += 1;
                } else {
                    lit.push(c);
                }
                (None, c.len_utf8())
            }
        };
        if let Some(name) = key {
            if !lit.is_empty() {
                out.keys.push(Key::Literal(std::mem::take(&mut lit)));
            }
            out.keys.push(Key::Named(name));
        }
        rest = &rest[len..];
    }
    if !lit.is_empty() {
        out.keys.push(Key::Literal(lit));
    }
    Ok(out)
}

/// `terminal resize`'s bounds: the orchestrator's message when out of them.
pub fn check_size(cols: u16, rows: u16) -> Result<(), String> {
    if COLS.contains(&cols) && ROWS.contains(&rows) {
        Ok(())
    } else {
        Err(format!(
            "cols must be {}-{}, rows must be {}-{} (got {cols}x{rows}); nothing was resized",
            COLS.start(),
            COLS.end(),
            ROWS.start(),
            ROWS.end()
        ))
    }
}

/// A tmux session name a runner may name: letters, digits, `_` and `-`, not starting with `-`,
/// at most [`MAX_SESSION_NAME`] bytes. tmux renders `.` and `:` of a requested name as `_`, so
/// no real session holds them; and every other character is target syntax (`:` window, `.`
/// pane, `!` `^` `$` `{` `}` `~` `=` `@` `%` special targets, `*` `?` `[` patterns) or a
/// format (`#`), which would make us act on another session than the one named.
pub fn check_session_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_SESSION_NAME {
        return Err(format!("tmux session name must be 1-{MAX_SESSION_NAME} bytes"));
    }
    if name.starts_with('-') {
        return Err("tmux session name must not start with '-'".into());
    }
    match name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        Some(c) => Err(format!("tmux session name holds {c:?}: only letters, digits, '_' and '-' are accepted")),
        None => Ok(()),
    }
}

/// The target of a session's active pane, matched exactly: `=NAME:` (a bare `-t NAME` also
/// matches a session whose name starts with NAME, or one NAME matches as a pattern).
pub fn exact_target(session: &str) -> String {
    format!("={session}:")
}

/// The socket name (`tmux -L NAME`, i.e. `<socket dir>/NAME`) of what a runner-info file gives
/// as `tmuxSocket`: a name, or a path directly in `socket_dir` (the one we derive from
/// `$TMUX_TMPDIR` and our uid). No socket named means tmux's default. A name is letters, digits,
/// `_`, `-` and `.`, not starting with `.` or `-`, and its path fits in a socket address; a path
/// anywhere else, or one with `..`, is refused: we talk to no server outside our directory.
pub fn socket_name(given: Option<&str>, socket_dir: &Path) -> Result<String, String> {
    let Some(given) = given else { return Ok(DEFAULT_SOCKET.to_string()) };
    let name = if given.starts_with('/') {
        let path = Path::new(given);
        if path.parent() != Some(socket_dir) || path.components().any(|c| c.as_os_str() == "..") {
            return Err(format!("tmux socket {given:?} is not in {}", socket_dir.display()));
        }
        path.file_name().and_then(|n| n.to_str()).unwrap_or_default()
    } else {
        given
    };
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
    if name.is_empty() || name.starts_with('.') || name.starts_with('-') || !name.chars().all(ok_char) {
        return Err(format!(
            "tmux socket {given:?} is not a socket name (letters, digits, '_', '-', '.'; not starting with '.' or '-')"
        ));
    }
    if socket_dir.as_os_str().len() + 1 + name.len() > MAX_SOCKET_PATH {
        return Err(format!("tmux socket {given:?} does not fit a socket path in {}", socket_dir.display()));
    }
    Ok(name.to_string())
}

/// Whether a process whose `/proc/PID/cgroup` reads `text` runs in `unit`'s control group (or
/// below it): some hierarchy's path has `unit` as one of its directories. systemd names a
/// unit's cgroup after the unit, and only the manager makes cgroups there.
pub fn cgroup_has_unit(text: &str, unit: &str) -> bool {
    text.lines().filter_map(|l| l.splitn(3, ':').nth(2)).any(|path| path.split('/').any(|d| d == unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(input: &str) -> Vec<Key> {
        tokenize_input(input).unwrap().keys
    }

    #[test]
    fn enter_tab_and_named_keys() {
        let k = keys("ls -l\r\x1b[A\x03\x7f\tq\x1b");
        assert_eq!(
            k,
            [
                Key::Literal("ls -l".into()),
                Key::Named("Enter"),
                Key::Named("Up"),
                Key::Named("C-c"),
                Key::Named("BSpace"),
                Key::Named("Tab"),
                Key::Literal("q".into()),
                Key::Named("Escape"),
            ]
        );
        assert_eq!(
            keys("\x1b[3~\x1b[H\x1b[F\x08"),
            [Key::Named("DC"), Key::Named("Home"), Key::Named("End"), Key::Named("BSpace")]
        );
    }

    #[test]
    fn cr_and_lf_each_enter_and_crlf_one() {
        let enters = |s: &str| keys(s).iter().filter(|k| **k == Key::Named("Enter")).count();
        assert_eq!(enters("a\rb"), 1);
        assert_eq!(enters("a\nb"), 1);
        assert_eq!(enters("a\r\nb"), 1);
        assert_eq!(enters("a\n\rb"), 2);
        assert_eq!(enters("\r\r\n\n"), 3);
        assert_eq!(keys("a\r\nb"), [Key::Literal("a".into()), Key::Named("Enter"), Key::Literal("b".into())]);
    }

    #[test]
    fn other_controls_are_dropped_not_refused() {
        let k = tokenize_input("p\x00q\x01\x07r\x1fs\u{85}t\u{9b}u").unwrap();
        assert_eq!(k.keys, [Key::Literal("pqrstu".into())]);
        assert_eq!(k.dropped, 6);
        assert_eq!(tokenize_input("\x02").unwrap(), Keys { keys: vec![], dropped: 1 });
        assert_eq!(tokenize_input("").unwrap(), Keys::default());
        assert_eq!(keys("é😀 x\u{7e}"), [Key::Literal("é😀 x~".into())]);
    }

    #[test]
    fn the_limit_counts_utf16_units() {
        assert!(tokenize_input(&"x".repeat(MAX_INPUT_UTF16)).is_ok());
        let err = tokenize_input(&"x".repeat(MAX_INPUT_UTF16 + 1)).unwrap_err();
        assert!(err.contains("exceeds 4096 characters") && err.contains("4097"), "{err}");
        // A character beyond the BMP is two units, as JavaScript counts it.
        assert!(tokenize_input(&format!("{}😀", "x".repeat(MAX_INPUT_UTF16 - 2))).is_ok());
        assert!(tokenize_input(&format!("{}😀", "x".repeat(MAX_INPUT_UTF16 - 1))).is_err());
        // Three-byte characters count one each.
        assert!(tokenize_input(&"€".repeat(MAX_INPUT_UTF16)).is_ok());
        // Dropped characters count: the limit is on what was given.
        assert!(tokenize_input(&"\x01".repeat(MAX_INPUT_UTF16 + 1)).is_err());
    }

    #[test]
    fn sizes_within_the_orchestrators_bounds() {
        for (c, r) in [(10, 5), (500, 200), (80, 24)] {
            assert!(check_size(c, r).is_ok(), "{c}x{r}");
        }
        for (c, r) in [(9, 24), (501, 24), (80, 4), (80, 201), (0, 0)] {
            let err = check_size(c, r).unwrap_err();
            assert!(err.starts_with("cols must be 10-500, rows must be 5-200"), "{err}");
        }
    }

    #[test]
    fn session_names_hold_no_target_syntax() {
        for ok in ["ar-claude-x-1a2b", "A_b-9", "x"] {
            assert!(check_session_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_SESSION_NAME + 1);
        for bad in [
            "",
            "-t",
            "a:1",
            "a.0",
            "!",
            "%1",
            "@1",
            "$0",
            "=x",
            "~",
            "{last}",
            "a*",
            "a?",
            "[a]",
            "#(touch x)",
            "a b",
            "a\nb",
            "é",
            &long,
        ] {
            assert!(check_session_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(exact_target("ar-x"), "=ar-x:");
    }

    #[test]
    fn sockets_are_names_in_our_directory() {
        let dir = Path::new("/tmp/tmux-1000");
        assert_eq!(socket_name(None, dir).unwrap(), "default");
        assert_eq!(socket_name(Some("agent-relay-ab12"), dir).unwrap(), "agent-relay-ab12");
        assert_eq!(socket_name(Some("/tmp/tmux-1000/agent-relay-ab12"), dir).unwrap(), "agent-relay-ab12");
        for bad in [
            "",
            "../x",
            "a/b",
            ".x",
            "..",
            "-L",
            "/tmp/tmux-1000/../tmux-1001/s",
            "/tmp/tmux-1001/s",
            "/tmp/tmux-1000/sub/s",
            "/tmp/tmux-1000/",
            "/etc/passwd",
            "a b",
            "a;b",
            &"s".repeat(100),
        ] {
            assert!(socket_name(Some(bad), dir).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cgroups_name_their_unit() {
        let text = "1:name=systemd:/t/user.slice/agent_relay.slice/agent-relay-managed-ar-x.service\n\
                    0::/t/user.slice/agent_relay.slice/agent-relay-managed-ar-x.service/sub\n";
        assert!(cgroup_has_unit(text, "agent-relay-managed-ar-x.service"));
        assert!(!cgroup_has_unit(text, "agent-relay-managed-ar.service"));
        assert!(!cgroup_has_unit("0::/user.slice/session-1.scope\n", "agent-relay-managed-ar-x.service"));
        assert!(!cgroup_has_unit("", "x.service"));
    }
}
