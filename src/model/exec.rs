//! Command lines systemd runs exactly as we send them. Our units say so with `ExecStartEx=`
//! (`a(sasas)`) and the flag `no-env-expand`: no `$VAR` of the request's fields is expanded (a
//! token on the world-readable argv, a whole-word `$X` split into injected arguments). Not every
//! systemd can keep such a command line, so [`for_manager`] adapts a property list to the
//! manager that will run it. Pure.
//!
//! The systemd facts (source: systemd-stable, `src/core/dbus-execute.c`
//! `bus_set_transient_exec_command`, `src/core/unit.c` `unit_escape_setting`,
//! `src/core/load-fragment.c` `config_parse_exec`):
//! - `ExecStartEx` and its flags exist since systemd 243.
//! - A transient unit's command lines are written into its unit file under
//!   `/run/user/UID/systemd/transient/`, which every `daemon-reload` reads back. Before systemd 254
//!   that file holds `$` and `;` as `\$` and `\;`, escapes the parser keeps verbatim ("Ignoring
//!   unknown escape sequences"), so the restart after a reload runs other words (and expands
//!   `${VAR}` behind the `\`). It also writes `ExecStartEx=` under that name, a key unit files do
//!   not have: after a reload the unit is `bad-setting`, cannot restart, and runs no
//!   `ExecStopPost=`. Fixed in 254 (commits e7416db183 "core/unit: fix shell-escaping of
//!   strings" and 0a27d86a3f "core: fix writing of ExecStartEx and friends").
//! - Every other character (`\`, quotes, `%`, spaces, control characters, UTF-8) makes the round
//!   trip on 240 and later, and a command line without `$` has nothing to expand.
//!
//! So on systemd ≥ 254 the `Ex` properties go as they are. Before, a command line without `$`
//! and `;` goes as plain `ExecStart` (`a(sasb)`); one with them is handed to our own binary's
//! `exec` verb with those characters percent-encoded, which decodes them and `execve`s the very
//! argv: the runner's process (same pid, cgroup, environment) gets the words exactly.

use crate::model::property::{Property, Value};

/// `ExecStartEx` flag: the command's words are not `$VAR`-expanded.
pub const NO_ENV_EXPAND: &str = "no-env-expand";
/// `ExecStartEx` flag: a failure of the command is ignored (the `-` prefix).
pub const IGNORE_FAILURE: &str = "ignore-failure";
/// The first systemd whose transient units keep `ExecStartEx=` command lines across a reload.
pub const EXACT_TRANSIENT_EXEC: u32 = 254;
/// The hidden verb of our binary that runs a percent-encoded command line.
pub const EXEC_VERB: &str = "exec";
/// What a command line needs encoded before systemd < 254 can keep it (and `%`, the escape).
const ENCODED: [char; 3] = ['%', '$', ';'];

/// A command systemd runs exactly: `path` with `argv` (argv\[0\] first), nothing expanded.
pub fn exact(path: &str, argv: &[String], ignore_failure: bool) -> Value {
    let mut flags = vec![NO_ENV_EXPAND.to_string()];
    if ignore_failure {
        flags.insert(0, IGNORE_FAILURE.to_string());
    }
    Value::ExecEx(vec![(path.to_string(), argv.to_vec(), flags)])
}

/// Why a property list cannot be given to a manager.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error(
        "systemd {version} cannot keep `$` or `;` in a unit's command line across a daemon-reload \
         (fixed in systemd 254), and agent-relay-systemd's own binary, which would pass them exactly, \
         was not found: put agent-relay-systemd on PATH, upgrade systemd, or leave `$` and `;` out of \
         the request's fields"
    )]
    NoLauncher { version: String },
    #[error("unit property {property} is not an exact command line our units use (a bug: please report it)")]
    Unexpected { property: String },
}

/// The leading number of a systemd version string (`252.38-1~deb12u1` → 252, `v255` → 255).
pub fn major_version(version: &str) -> Option<u32> {
    let digits: String = version.trim_start_matches('v').chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `props` as the manager of `version` (its `Version` property; `None` if unknown, taken as
/// old) must receive them to run every command line exactly. `launcher` is our own binary, for
/// the `exec` verb.
pub fn for_manager(
    props: Vec<Property>,
    version: Option<&str>,
    launcher: Option<&str>,
) -> Result<Vec<Property>, ExecError> {
    if version.and_then(major_version).is_some_and(|v| v >= EXACT_TRANSIENT_EXEC) {
        return Ok(props);
    }
    props
        .into_iter()
        .map(|(name, value)| {
            let Value::ExecEx(cmds) = value else { return Ok((name, value)) };
            let unexpected = || ExecError::Unexpected { property: name.to_string() };
            let plain = name.strip_suffix("Ex").ok_or_else(unexpected)?;
            let cmds = cmds
                .into_iter()
                .map(|(path, argv, flags)| {
                    let ignore = flags.iter().any(|f| f == IGNORE_FAILURE);
                    if !flags.iter().all(|f| f == IGNORE_FAILURE || f == NO_ENV_EXPAND)
                        || !flags.iter().any(|f| f == NO_ENV_EXPAND)
                    {
                        return Err(unexpected());
                    }
                    if !needs_encoding(&path) && !argv.iter().any(|w| needs_encoding(w)) {
                        return Ok((path, argv, ignore));
                    }
                    let no_launcher = || ExecError::NoLauncher { version: version.unwrap_or("(unknown)").to_string() };
                    let launcher = launcher.filter(|l| !needs_encoding(l)).ok_or_else(no_launcher)?;
                    Ok((launcher.to_string(), launch_argv(launcher, &path, &argv), ignore))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((plain, Value::Exec(cmds)))
        })
        .collect()
}

/// Whether systemd < 254 would change `word` in a transient unit's command line.
fn needs_encoding(word: &str) -> bool {
    word.contains(['$', ';'])
}

/// `launcher exec -- PATH ARGV0 ARGV1 …`, each of the command's words percent-encoded.
pub fn launch_argv(launcher: &str, path: &str, argv: &[String]) -> Vec<String> {
    let mut out = vec![launcher.to_string(), EXEC_VERB.to_string(), "--".to_string(), encode(path)];
    out.extend(argv.iter().map(|w| encode(w)));
    out
}

/// `%`, `$` and `;` as `%25`, `%24`, `%3B`; every other character as it is.
pub fn encode(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    for c in word.chars() {
        if ENCODED.contains(&c) {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The bytes [`encode`] was given: every `%XX` (two hex digits) is that byte.
pub fn decode(word: &str) -> Result<Vec<u8>, String> {
    let bytes = word.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{word:?}: `%` is not followed by two hex digits"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
