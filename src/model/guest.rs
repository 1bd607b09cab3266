//! Guest terminals, the pure part: names, the runner's attach spec and its validation, the TTL,
//! the guest unit's properties (what is typed into a terminal: `model::terminal`). No IO here.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::naming::{sanitize_fs_name, Sanitize, AGENT_SLICE};
use crate::model::property::{Property, Value};

pub const GUEST_UNIT_PREFIX: &str = "agent-relay-guest-";
pub const DEFAULT_TTL_MS: u64 = 60 * 60 * 1000;
pub const MIN_TTL_MS: u64 = 60 * 1000;
pub const MAX_TTL_MS: u64 = 4 * DEFAULT_TTL_MS;
/// Largest attach spec read from a runner.
pub const MAX_SPEC_BYTES: usize = 64 * 1024;

/// The runner's `/terminal/attach-spec` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachSpec {
    pub provider: String,
    pub cwd: String,
    pub command: Vec<String>,
    /// Only keys that are valid variable names; others are dropped, as the seed does.
    pub env: BTreeMap<String, String>,
    pub ttl_ms: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    mode: Option<serde_json::Value>,
    provider: Option<serde_json::Value>,
    cwd: Option<serde_json::Value>,
    command: Option<serde_json::Value>,
    env: Option<serde_json::Value>,
    ttl_ms: Option<serde_json::Value>,
}

/// Parses and validates an attach spec; `within_base` says whether a cwd lies inside baseDir.
pub fn parse_attach_spec(body: &[u8], within_base: &dyn Fn(&str) -> bool) -> Result<AttachSpec, String> {
    if body.len() > MAX_SPEC_BYTES {
        return Err(format!("runner attach-spec is larger than {MAX_SPEC_BYTES} bytes"));
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("runner attach-spec is not JSON: {e}"))?;
    if !value.is_object() {
        return Err("runner attach-spec response must be an object".into());
    }
    let raw: RawSpec = serde_json::from_value(value).map_err(|e| format!("runner attach-spec: {e}"))?;
    if raw.mode.as_ref().and_then(|m| m.as_str()) != Some("guest") {
        return Err("runner attach-spec mode must be guest".into());
    }
    let provider = match raw.provider.as_ref().and_then(|p| p.as_str()) {
        Some(p) if !p.trim().is_empty() => p.to_string(),
        _ => return Err("runner attach-spec provider required".into()),
    };
    let cwd = match raw.cwd.as_ref().and_then(|c| c.as_str()) {
        Some(c) if within_base(c) => c.to_string(),
        _ => return Err("runner attach-spec cwd must be within base directory".into()),
    };
    let command: Vec<String> = match raw.command.as_ref().and_then(|c| c.as_array()) {
        Some(items) if !items.is_empty() => items
            .iter()
            .map(|i| i.as_str().filter(|s| !s.is_empty() && !s.contains('\0')).map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or("runner attach-spec command must be a non-empty string array")?,
        _ => return Err("runner attach-spec command must be a non-empty string array".into()),
    };
    let env = match &raw.env {
        None | Some(serde_json::Value::Null) => BTreeMap::new(),
        Some(serde_json::Value::Object(m)) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let v = v.as_str().ok_or("runner attach-spec env must be a string record")?;
                if crate::model::request::env_key_is_valid(k) && !v.contains('\0') {
                    out.insert(k.clone(), v.to_string());
                }
            }
            out
        }
        Some(_) => return Err("runner attach-spec env must be a string record".into()),
    };
    let ttl_ms = clamp_ttl(raw.ttl_ms.as_ref().and_then(|t| t.as_f64()).map(|t| t.max(0.0) as u64));
    Ok(AttachSpec { provider, cwd, command, env, ttl_ms })
}

/// The seed's TTL: default 1 h, clamped to [60 s, 4 h].
pub fn clamp_ttl(ttl_ms: Option<u64>) -> u64 {
    ttl_ms.unwrap_or(DEFAULT_TTL_MS).clamp(MIN_TTL_MS, MAX_TTL_MS)
}

/// A socket path holds at most this many bytes (`sun_path` is 108 with its NUL): a guest's tmux
/// server listens on `$TMUX_TMPDIR/tmux-<uid>/<guest name>`.
pub const MAX_SOCKET_PATH: usize = 107;

/// `<prefix>-guest-<provider>-<agent>-<rand8>`, as the seed, in at most `max_len` bytes (what
/// the socket directory leaves of [`MAX_SOCKET_PATH`]): a longer `<provider>-<agent>` is cut and
/// given a `-<sha8>` of the whole, so that the same agent always gets the same name. `None` when
/// not even `<prefix>-guest-<sha8>-<rand8>` fits.
pub fn guest_name(prefix: &str, provider: &str, agent_id: &str, rand8: &str, max_len: usize) -> Option<String> {
    let p = sanitize_fs_name(provider, Sanitize { lowercase: true, max_len: 64, fallback: "provider" });
    let a = sanitize_fs_name(agent_id, Sanitize { lowercase: true, max_len: 48, fallback: "agent" });
    let middle = format!("{p}-{a}");
    let fixed = prefix.len() + "-guest-".len() + 1 + rand8.len();
    if fixed + middle.len() <= max_len {
        return Some(format!("{prefix}-guest-{middle}-{rand8}"));
    }
    let hash = crate::model::naming::sha8(&middle);
    let room = max_len.checked_sub(fixed + hash.len())?;
    // `<cut>-<hash>` when a cut of at least one character fits, else the hash alone.
    let cut = middle[..room.saturating_sub(1).min(middle.len())].trim_end_matches(['-', '_']);
    let middle = if cut.is_empty() { hash } else { format!("{cut}-{hash}") };
    Some(format!("{prefix}-guest-{middle}-{rand8}"))
}

/// What the pane of a guest runs, handed to its launcher in a 0600 file (never on a command line,
/// never through tmux, which would read formats in the directory and separators in the values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestLaunch {
    /// The spec's `cwd`, resolved (inside baseDir).
    pub cwd: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// Only guest names are accepted where a guest is expected.
pub fn is_guest_name(name: &str, prefix: &str) -> bool {
    name.strip_prefix(&format!("{prefix}-guest-")).is_some_and(|rest| {
        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    })
}

/// The glob of every guest unit of a prefix (`ListUnitsByPatterns`).
pub fn guest_unit_pattern(prefix: &str) -> String {
    format!("{GUEST_UNIT_PREFIX}{prefix}-guest-*.service")
}

/// The unit of a guest: its tmux server.
pub fn guest_unit(name: &str) -> String {
    format!("{GUEST_UNIT_PREFIX}{name}.service")
}

pub fn guest_of_unit<'a>(unit: &'a str, prefix: &str) -> Option<&'a str> {
    let name = unit.strip_prefix(GUEST_UNIT_PREFIX)?.strip_suffix(".service")?;
    is_guest_name(name, prefix).then_some(name)
}

/// What a guest unit carries for `guest list` to rebuild from.
pub struct GuestUnitSpec<'a> {
    pub name: &'a str,
    pub tmux: &'a Path,
    /// The `TMUX_TMPDIR` our tmux clients use, so server and clients meet on one socket.
    pub tmux_tmpdir: &'a Path,
    pub agent_unit: &'a str,
    pub agent_id: &'a str,
    pub provider: &'a str,
    pub ttl_ms: u64,
    pub created_ms: u64,
}

/// The guest's transient service: its own tmux server (`tmux -L <name> -D`) as main process,
/// ended by systemd at its TTL (`RuntimeMaxUSec`) or with its agent (`BindsTo`).
pub fn guest_properties(g: &GuestUnitSpec<'_>) -> Vec<Property> {
    let tmux = g.tmux.display().to_string();
    // Encoded as an agent's metadata ([`crate::model::meta`]): the agent id is a caller's and
    // the provider the runner's text, and a reload must not split them into fields of their own.
    let enc = crate::model::meta::encode_value;
    let fields = [
        format!("AGENT_RELAY_GUEST={}", enc(g.name)),
        format!("AGENT_RELAY_AGENT_ID={}", enc(g.agent_id)),
        format!("AGENT_RELAY_PROVIDER={}", enc(g.provider)),
        format!("AGENT_RELAY_GUEST_TTL_MS={}", g.ttl_ms),
        format!("AGENT_RELAY_GUEST_EXPIRES_AT={}", g.created_ms + g.ttl_ms),
    ];
    vec![
        (
            "Description",
            Value::Str(format!(
                "Agent Relay guest terminal {} for {} (ttl {} min)",
                g.name,
                g.agent_id,
                g.ttl_ms / 60_000
            )),
        ),
        ("Slice", Value::Str(AGENT_SLICE.into())),
        ("Type", Value::Str("exec".into())),
        (
            "ExecStartEx",
            crate::model::exec::exact(&tmux, &[tmux.clone(), "-L".into(), g.name.into(), "-D".into()], false),
        ),
        ("BindsTo", Value::Strs(vec![g.agent_unit.into()])),
        ("After", Value::Strs(vec![g.agent_unit.into()])),
        ("RuntimeMaxUSec", Value::U64(g.ttl_ms * 1000)),
        ("KillMode", Value::Str("control-group".into())),
        ("Environment", Value::Strs(vec![format!("TMUX_TMPDIR={}", g.tmux_tmpdir.display())])),
        ("LogExtraFields", Value::Bytes(fields.into_iter().map(String::into_bytes).collect())),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(c: &str) -> bool {
        c.starts_with("/home/u/projects")
    }

    #[test]
    fn a_good_spec_parses() {
        let s = parse_attach_spec(
            br#"{"mode":"guest","provider":"claude","cwd":"/home/u/projects/a","command":["claude","--resume"],"env":{"A":"1","bad-key":"x"},"ttlMs":10}"#,
            &within,
        )
        .unwrap();
        assert_eq!(s.command, ["claude", "--resume"]);
        assert_eq!(s.env.keys().collect::<Vec<_>>(), ["A"], "invalid keys are dropped");
        assert_eq!(s.ttl_ms, MIN_TTL_MS, "clamped up");
    }

    #[test]
    fn bad_specs_are_refused() {
        let cases: [(&[u8], &str); 9] = [
            (b"not json", "not JSON"),
            (b"[1]", "must be an object"),
            (br#"{"mode":"owner","provider":"c","cwd":"/home/u/projects","command":["x"]}"#, "mode must be guest"),
            (br#"{"mode":"guest","cwd":"/home/u/projects","command":["x"]}"#, "provider required"),
            (br#"{"mode":"guest","provider":"c","cwd":"/etc","command":["x"]}"#, "within base directory"),
            (br#"{"mode":"guest","provider":"c","cwd":"/home/u/projects","command":[]}"#, "non-empty string array"),
            (
                br#"{"mode":"guest","provider":"c","cwd":"/home/u/projects","command":["x",""]}"#,
                "non-empty string array",
            ),
            (
                br#"{"mode":"guest","provider":"c","cwd":"/home/u/projects","command":["x"],"env":{"A":1}}"#,
                "string record",
            ),
            (br#"{"mode":"guest","provider":"c","cwd":"/home/u/projects","command":["x"],"env":[]}"#, "string record"),
        ];
        for (body, want) in cases {
            let err = parse_attach_spec(body, &within).unwrap_err();
            assert!(err.contains(want), "{}: {err}", String::from_utf8_lossy(body));
        }
        assert!(parse_attach_spec(&vec![b' '; MAX_SPEC_BYTES + 1], &within).unwrap_err().contains("larger"));
    }

    #[test]
    fn ttl_is_clamped() {
        assert_eq!(clamp_ttl(None), DEFAULT_TTL_MS);
        assert_eq!(clamp_ttl(Some(1)), MIN_TTL_MS);
        assert_eq!(clamp_ttl(Some(u64::MAX)), MAX_TTL_MS);
    }

    #[test]
    fn names() {
        let n = guest_name("ar", "Claude", "Host-claude-x-12345678", "abcd1234", 80).unwrap();
        assert_eq!(n, "ar-guest-claude-host-claude-x-12345678-abcd1234");
        assert!(is_guest_name(&n, "ar"));
        assert!(!is_guest_name("ar-claude-x", "ar"));
        assert!(!is_guest_name("ar-guest-../x", "ar"));
        assert_eq!(guest_of_unit(&guest_unit(&n), "ar"), Some(n.as_str()));
    }

    #[test]
    fn guest_names_fit_the_socket_directory_or_are_refused() {
        let (p, a) = ("p".repeat(64), "host-claude-a-rather-long-label-0123456789abcdef");
        let full = guest_name("ar", &p, a, "abcd1234", 500).unwrap();
        assert_eq!(full.len(), "ar-guest-".len() + 64 + 1 + 48 + 1 + 8);
        for max in [full.len() - 1, 60, 40, 27] {
            let n = guest_name("ar", &p, a, "abcd1234", max).unwrap();
            assert!(n.len() <= max, "{n} longer than {max}");
            assert!(is_guest_name(&n, "ar") && n.ends_with("-abcd1234"), "{n}");
            assert_eq!(guest_name("ar", &p, a, "abcd1234", max).unwrap(), n, "deterministic");
            assert_ne!(guest_name("ar", &p, "another-agent", "abcd1234", max).unwrap(), n, "agents differ");
        }
        assert_eq!(guest_name("ar", &p, a, "abcd1234", 27).unwrap().len(), "ar-guest-".len() + 8 + 1 + 8);
        assert_eq!(guest_name("ar", &p, a, "abcd1234", 25), None);
        assert_eq!(guest_name("ar", &p, a, "abcd1234", 0), None);
    }

    #[test]
    fn guest_fields_hold_no_space_for_a_reload_to_split() {
        let props = guest_properties(&GuestUnitSpec {
            name: "ar-guest-c-a-12345678",
            tmux: Path::new("/usr/bin/tmux"),
            tmux_tmpdir: Path::new("/run/user/1/agent-relay-systemd/tmux"),
            agent_unit: "agent-relay-managed-ar-c-a-1.service",
            agent_id: "my agent",
            provider: "c AGENT_RELAY_AGENT_ID=victim",
            ttl_ms: 60_000,
            created_ms: 1,
        });
        let Some(Value::Bytes(fields)) = crate::model::property::find(&props, "LogExtraFields") else { panic!() };
        let fields: Vec<String> = fields.iter().map(|f| String::from_utf8(f.clone()).unwrap()).collect();
        assert!(fields.iter().all(|f| !f.contains(' ')), "{fields:?}");
        assert!(fields.contains(&"AGENT_RELAY_PROVIDER=c%20AGENT_RELAY_AGENT_ID%3Dvictim".to_string()));
        assert!(fields.contains(&"AGENT_RELAY_GUEST=ar-guest-c-a-12345678".to_string()));
    }
}
