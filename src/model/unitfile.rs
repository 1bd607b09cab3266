//! The unit-file renderer: the very property list [`crate::model::unit::agent_properties`] gives a
//! transient unit → the text of an equivalent unit file, so transient and durable agents never
//! drift. Quoting follows systemd.syntax(7) and systemd.service(5). Pure: no IO.

use crate::model::exec;
use crate::model::property::{Property, Value};

/// Where a durable agent's unit file points operators for help.
pub const DOCUMENTATION: &str = "man:agent-relay-systemd(1)";
/// The target a durable agent is enabled into: started with the user manager.
pub const WANTED_BY: &str = "default.target";

/// Why a property list has no unit-file form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("unit property {0} has no unit-file form in this renderer; add it to src/model/unitfile.rs")]
    UnknownProperty(String),
    #[error("unit property {property} has an unexpected value type")]
    WrongType { property: String },
    #[error("unit property {property} cannot be written to a unit file: {why}")]
    Unrepresentable { property: String, why: &'static str },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Unit,
    Service,
}

/// How a value is spelled.
#[derive(Clone, Copy)]
enum Kind {
    /// A fixed keyword (`exec`, `control-group`): written as is.
    Keyword,
    /// Free text or a path: `%` doubled (specifiers), one line, no edge whitespace.
    Text,
    /// `append:` + a path.
    Append,
    /// A number written as is.
    Number,
    /// µs → a time span (`10s`).
    Span,
    /// µs per second → `CPUQuota=` percent.
    Percent,
    /// One quoted word per line (`Environment=`, `LogExtraFields=`).
    Words,
    /// An exec line per command, words quoted and `$` doubled: the words run as written.
    Exec,
    /// `EnvironmentFile=[-]path`.
    EnvFiles,
}

/// Transient property name → section, unit-file key and spelling. Every name
/// `agent_properties` can emit must be here (a test checks it).
const TABLE: &[(&str, Section, &str, Kind)] = &[
    ("Description", Section::Unit, "Description", Kind::Text),
    ("StartLimitBurst", Section::Unit, "StartLimitBurst", Kind::Number),
    ("StartLimitIntervalUSec", Section::Unit, "StartLimitIntervalSec", Kind::Span),
    ("Slice", Section::Service, "Slice", Kind::Text),
    ("Type", Section::Service, "Type", Kind::Keyword),
    ("NotifyAccess", Section::Service, "NotifyAccess", Kind::Keyword),
    ("ExecStart", Section::Service, "ExecStart", Kind::Exec),
    ("ExecStopPost", Section::Service, "ExecStopPost", Kind::Exec),
    ("ExecStartEx", Section::Service, "ExecStart", Kind::Exec),
    ("ExecStopPostEx", Section::Service, "ExecStopPost", Kind::Exec),
    ("WorkingDirectory", Section::Service, "WorkingDirectory", Kind::Text),
    ("Environment", Section::Service, "Environment", Kind::Words),
    ("EnvironmentFiles", Section::Service, "EnvironmentFile", Kind::EnvFiles),
    ("StandardOutputFileToAppend", Section::Service, "StandardOutput", Kind::Append),
    ("StandardErrorFileToAppend", Section::Service, "StandardError", Kind::Append),
    ("SyslogIdentifier", Section::Service, "SyslogIdentifier", Kind::Text),
    ("LogExtraFields", Section::Service, "LogExtraFields", Kind::Words),
    ("KillMode", Section::Service, "KillMode", Kind::Keyword),
    ("TimeoutStopUSec", Section::Service, "TimeoutStopSec", Kind::Span),
    ("Restart", Section::Service, "Restart", Kind::Keyword),
    ("RestartUSec", Section::Service, "RestartSec", Kind::Span),
    ("MemoryMax", Section::Service, "MemoryMax", Kind::Number),
    ("MemoryHigh", Section::Service, "MemoryHigh", Kind::Number),
    ("TasksMax", Section::Service, "TasksMax", Kind::Number),
    ("CPUQuotaPerSecUSec", Section::Service, "CPUQuota", Kind::Percent),
];

/// Whether the renderer knows a transient property.
pub fn knows(property: &str) -> bool {
    TABLE.iter().any(|(n, ..)| *n == property)
}

/// The unit file for an agent's properties: `[Unit]`, `[Service]` in the list's order, and
/// `[Install] WantedBy=default.target`.
pub fn render(props: &[Property]) -> Result<String, RenderError> {
    let (unit, service) = sections(props)?;
    let mut out =
        String::from("# Written by agent-relay-systemd (spawn --persist); `agent-relay-systemd remove` deletes it.\n");
    for (title, body) in [("Unit", unit), ("Service", service), ("Install", vec![format!("WantedBy={WANTED_BY}")])] {
        out.push_str(&format!("\n[{title}]\n"));
        for l in body {
            out.push_str(&l);
            out.push('\n');
        }
    }
    Ok(out)
}

/// The lines of `[Unit]` (Description first, as readers of `systemctl --user cat` expect, then
/// `Documentation=`) and of `[Service]` for an agent's properties, in the list's order: what
/// [`render`] writes, and what the generator of declared agents builds its units from.
pub fn sections(props: &[Property]) -> Result<(Vec<String>, Vec<String>), RenderError> {
    let (mut description, mut unit, mut service) =
        (Vec::new(), vec![format!("Documentation={DOCUMENTATION}")], Vec::new());
    for (name, value) in props {
        let (_, section, key, kind) =
            TABLE.iter().find(|(n, ..)| n == name).ok_or_else(|| RenderError::UnknownProperty(name.to_string()))?;
        let lines = lines(name, key, *kind, value)?;
        match section {
            Section::Unit if *name == "Description" => description.extend(lines),
            Section::Unit => unit.extend(lines),
            Section::Service => service.extend(lines),
        }
    }
    description.extend(unit);
    Ok((description, service))
}

fn lines(name: &str, key: &str, kind: Kind, value: &Value) -> Result<Vec<String>, RenderError> {
    let wrong = || RenderError::WrongType { property: name.to_string() };
    let bad = |why| RenderError::Unrepresentable { property: name.to_string(), why };
    let one = |v: String| Ok(vec![format!("{key}={v}")]);
    match (kind, value) {
        (Kind::Keyword, Value::Str(s)) if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => {
            one(s.clone())
        }
        (Kind::Keyword, Value::Str(_)) => Err(bad("not a plain keyword")),
        (Kind::Text, Value::Str(s)) => one(text(s).map_err(bad)?),
        (Kind::Append, Value::Str(s)) => one(format!("append:{}", text(s).map_err(bad)?)),
        (Kind::Number, Value::U32(n)) => one(n.to_string()),
        (Kind::Number, Value::U64(n)) => one(n.to_string()),
        (Kind::Span, Value::U64(us)) => one(span(*us)),
        (Kind::Percent, Value::U64(us)) if us % 100 == 0 => {
            let permyriad = us / 100;
            one(if permyriad % 100 == 0 {
                format!("{}%", permyriad / 100)
            } else {
                format!("{}.{:02}%", permyriad / 100, permyriad % 100)
            })
        }
        (Kind::Percent, Value::U64(_)) => Err(bad("CPUQuota= takes hundredths of a percent at most")),
        (Kind::Words, Value::Strs(words)) => {
            words.iter().map(|w| Ok(format!("{key}={}", quote(w, false).map_err(bad)?))).collect()
        }
        (Kind::Words, Value::Bytes(words)) => words
            .iter()
            .map(|w| {
                let w = std::str::from_utf8(w).map_err(|_| bad("a value is not UTF-8"))?;
                Ok(format!("{key}={}", quote(w, false).map_err(bad)?))
            })
            .collect(),
        (Kind::Exec, Value::Exec(cmds)) => {
            cmds.iter().map(|(path, argv, ignore)| exec_line(key, path, argv, *ignore).map_err(bad)).collect()
        }
        (Kind::Exec, Value::ExecEx(cmds)) => cmds
            .iter()
            .map(|(path, argv, flags)| {
                // `no-env-expand` is what the doubled `$` already gives, on every systemd since 240
                // (the `:` prefix would need 242); a command whose words systemd should expand,
                // or another flag, is nothing our units use.
                if !flags.iter().any(|f| f == exec::NO_ENV_EXPAND) {
                    return Err(bad("a command line without no-env-expand"));
                }
                if !flags.iter().all(|f| f == exec::NO_ENV_EXPAND || f == exec::IGNORE_FAILURE) {
                    return Err(bad("an ExecStartEx flag other than no-env-expand and ignore-failure"));
                }
                let ignore = flags.iter().any(|f| f == exec::IGNORE_FAILURE);
                exec_line(key, path, argv, ignore).map_err(bad)
            })
            .collect(),
        (Kind::EnvFiles, Value::EnvFiles(files)) => files
            .iter()
            .map(|(path, ignore)| Ok(format!("{key}={}{}", if *ignore { "-" } else { "" }, text(path).map_err(bad)?)))
            .collect(),
        _ => Err(wrong()),
    }
}

/// `ExecStart=[-][@]path argv…`: `@` only when argv[0] is not the path (systemd.service(5)).
fn exec_line(key: &str, path: &str, argv: &[String], ignore: bool) -> Result<String, &'static str> {
    if !path.starts_with('/') {
        return Err("the program is not an absolute path");
    }
    let mut words = Vec::with_capacity(argv.len() + 1);
    let mut prefix = if ignore { "-" } else { "" }.to_string();
    if argv.first().map(String::as_str) != Some(path) {
        prefix.push('@');
        words.push(quote(path, true)?);
        if argv.is_empty() {
            return Err("an empty argv");
        }
    }
    for w in argv {
        words.push(quote(w, true)?);
    }
    Ok(format!("{key}={prefix}{}", words.join(" ")))
}

/// A value systemd takes to the end of the line after specifier expansion: `%` doubled; what
/// a line cannot carry (control characters, edge whitespace that systemd trims, a trailing `\`
/// that would continue the line) is refused rather than silently changed.
pub fn text(s: &str) -> Result<String, &'static str> {
    if s.is_empty() {
        return Err("an empty value");
    }
    if s.chars().any(char::is_control) {
        return Err("a control character (newline, tab, …) in a one-line value");
    }
    if s.trim() != s {
        return Err("leading or trailing whitespace, which systemd would trim");
    }
    if s.ends_with('\\') {
        return Err("a trailing backslash, which would continue the line");
    }
    Ok(s.replace('%', "%%"))
}

/// One word as systemd.syntax(7) reads it back: bare when it holds only safe characters, else
/// in double quotes with C escapes. `%` is always doubled (specifiers are expanded inside quotes
/// too); in command lines `$` is doubled as well, so no variable is expanded.
pub fn quote(word: &str, exec: bool) -> Result<String, &'static str> {
    if word.contains('\0') {
        return Err("a NUL byte");
    }
    let safe = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:,=+@%$".contains(c));
    let mut out = String::with_capacity(word.len() + 2);
    if !safe {
        out.push('"');
    }
    for c in word.chars() {
        match c {
            '%' => out.push_str("%%"),
            '$' if exec => out.push_str("$$"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    if !safe {
        out.push('"');
    }
    Ok(out)
}

/// The files a unit file's `[Service]` section names with `EnvironmentFile=` (as [`render`] writes
/// them: one path per line, `-` for optional, `%` doubled), so the reaper can tell which secret
/// directory a durable agent will read at its next start. An empty assignment resets the list,
/// as systemd.exec(5) says.
pub fn environment_files(text: &str) -> Vec<std::path::PathBuf> {
    let mut section = "";
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') && line.ends_with(']') {
            section = line;
            continue;
        }
        let Some(value) = line.strip_prefix("EnvironmentFile=").filter(|_| section == "[Service]") else { continue };
        let value = value.trim();
        if value.is_empty() {
            out.clear();
            continue;
        }
        out.push(value.strip_prefix('-').unwrap_or(value).replace("%%", "%").into());
    }
    out
}

/// µs as a systemd time span, in the largest exact unit.
fn span(us: u64) -> String {
    match us {
        0 => "0".into(),
        us if us % 1_000_000 == 0 => format!("{}s", us / 1_000_000),
        us if us % 1000 == 0 => format!("{}ms", us / 1000),
        us => format!("{us}us"),
    }
}

#[cfg(test)]
mod tests;
