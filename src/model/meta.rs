//! An agent's metadata as it is stored on its unit: `LogExtraFields=` pairs (`AGENT_RELAY_*`),
//! which also make `journalctl --user AGENT_RELAY_AGENT_ID=…` work. Pure round trip.
//!
//! Values are percent-encoded (schema 2): every byte outside `A-Z a-z 0-9 - _ . : / @ + ,` is
//! written `%XX` (upper-case hex), so a value holds no space, `=`, `%`, `\`, quote, control
//! character or non-ASCII byte. systemd 252 writes a transient unit's `LogExtraFields=` unquoted
//! and splits them at whitespace when a `daemon-reload` reads them back: an unencoded label
//! `p AGENT_RELAY_SESSION=x` became a field of its own. Ids, names and paths of the usual
//! alphabet read as they are. Reading refuses a unit on which one of our keys appears twice, or
//! whose value does not decode: no later (or earlier) field wins. Units written before the
//! encoding (schema 1) are read as they are.

use serde::{Deserialize, Serialize};

/// Bumped when the set or meaning of the fields changes (2: values percent-encoded).
pub const SCHEMA: &str = "2";
/// The schema whose values were written as they are.
const SCHEMA_PLAIN: &str = "1";
const SCHEMA_KEY: &str = "AGENT_RELAY_SCHEMA";

/// Bytes a value keeps as they are: safe in a unit file, a journal match and a shell word.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'@' | b'+' | b',')
}

/// A value as it is stored: every byte outside the plain set as `%XX`.
pub fn encode_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if is_plain(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`encode_value`]; `None` for anything it cannot have written (a byte outside
/// the plain set, a `%` not followed by two hex digits, bytes that are not UTF-8).
pub fn decode_value(stored: &str) -> Option<String> {
    let bytes = stored.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if is_plain(b) => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Everything about an agent that systemd does not already know. `session` and `log_file` are
/// written for journal queries only: records derive both from the unit name, never from here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentMeta {
    pub agent_id: String,
    pub provider: String,
    pub session: String,
    pub label: String,
    pub approval_mode: String,
    pub lifecycle: String,
    pub workspace_mode: String,
    pub log_file: String,
    pub spawn_request_id: Option<String>,
    pub policy_name: Option<String>,
    pub automation_id: Option<String>,
    pub automation_run_id: Option<String>,
    pub model: Option<String>,
    pub effort: Option<String>,
    pub profile: Option<String>,
    /// What the request said, for the record: its `rig`, `taskId`, `tags` and `capabilities`
    /// (comma-joined: entries hold no comma), and the limits asked for (request over config),
    /// as decimal numbers in systemd's units.
    pub rig: Option<String>,
    pub task_id: Option<String>,
    pub tags: Option<String>,
    pub capabilities: Option<String>,
    pub limit_memory_max: Option<String>,
    pub limit_memory_high: Option<String>,
    pub limit_tasks_max: Option<String>,
    pub limit_cpu_quota: Option<String>,
}

macro_rules! fields {
    ($m:ident; req: $($rk:literal => $rf:ident),*; opt: $($ok:literal => $of:ident),*) => {
        /// `KEY=value` pairs, in a fixed order.
        pub fn to_fields(&self) -> Vec<(&'static str, String)> {
            let $m = self;
            let mut out = vec![(SCHEMA_KEY, SCHEMA.to_string())];
            $( out.push(($rk, $m.$rf.clone())); )*
            $( if let Some(v) = &$m.$of { out.push(($ok, v.clone())); } )*
            out
        }

        /// Our keys, the schema's among them.
        pub const KEYS: &'static [&'static str] = &[SCHEMA_KEY, $($rk,)* $($ok,)*];

        /// The inverse of [`AgentMeta::to_fields`] (plain values); `None` when the agent id is
        /// missing (not ours) or one of our keys appears more than once.
        pub fn from_fields<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<AgentMeta> {
            let mut $m = AgentMeta::default();
            let mut seen = std::collections::HashSet::new();
            for (k, v) in pairs {
                if AgentMeta::KEYS.contains(&k) && !seen.insert(k) {
                    return None;
                }
                match k {
                    $( $rk => $m.$rf = v.to_string(), )*
                    $( $ok => $m.$of = Some(v.to_string()), )*
                    _ => {}
                }
            }
            (!$m.agent_id.is_empty()).then_some($m)
        }
    };
}

impl AgentMeta {
    fields! { m;
        req: "AGENT_RELAY_AGENT_ID" => agent_id, "AGENT_RELAY_PROVIDER" => provider,
             "AGENT_RELAY_SESSION" => session, "AGENT_RELAY_LABEL" => label,
             "AGENT_RELAY_APPROVAL" => approval_mode, "AGENT_RELAY_LIFECYCLE" => lifecycle,
             "AGENT_RELAY_WORKSPACE_MODE" => workspace_mode, "AGENT_RELAY_LOG_FILE" => log_file;
        opt: "AGENT_RELAY_SPAWN_REQUEST_ID" => spawn_request_id, "AGENT_RELAY_POLICY" => policy_name,
             "AGENT_RELAY_AUTOMATION_ID" => automation_id,
             "AGENT_RELAY_AUTOMATION_RUN_ID" => automation_run_id,
             "AGENT_RELAY_MODEL" => model, "AGENT_RELAY_EFFORT" => effort,
             "AGENT_RELAY_PROFILE" => profile, "AGENT_RELAY_RIG" => rig, "AGENT_RELAY_TASK_ID" => task_id,
             "AGENT_RELAY_REQUEST_TAGS" => tags, "AGENT_RELAY_REQUEST_CAPABILITIES" => capabilities,
             "AGENT_RELAY_LIMIT_MEMORY_MAX" => limit_memory_max,
             "AGENT_RELAY_LIMIT_MEMORY_HIGH" => limit_memory_high,
             "AGENT_RELAY_LIMIT_TASKS_MAX" => limit_tasks_max,
             "AGENT_RELAY_LIMIT_CPU_QUOTA" => limit_cpu_quota
    }

    /// The `LogExtraFields=` byte strings, values encoded ([`encode_value`]).
    pub fn to_log_extra_fields(&self) -> Vec<Vec<u8>> {
        self.to_fields().into_iter().map(|(k, v)| format!("{k}={}", encode_value(&v)).into_bytes()).collect()
    }

    /// Parses the `LogExtraFields` property as systemd returns it (`aay`). `None` when it is not
    /// an agent's, when one of our keys appears twice, or when one of our values does not decode.
    pub fn from_log_extra_fields(raw: &[Vec<u8>]) -> Option<AgentMeta> {
        let stored: Vec<(&str, &str)> = raw
            .iter()
            .filter_map(|b| std::str::from_utf8(b).ok())
            .filter_map(|s| s.split_once('='))
            .filter(|(k, _)| AgentMeta::KEYS.contains(k))
            .collect();
        let schemas: Vec<&str> = stored.iter().filter(|(k, _)| *k == SCHEMA_KEY).map(|(_, v)| *v).collect();
        let plain = matches!(schemas.as_slice(), [] | [SCHEMA_PLAIN]);
        let mut pairs: Vec<(&str, String)> = Vec::with_capacity(stored.len());
        for (k, v) in stored {
            let v = if plain { v.to_string() } else { decode_value(v)? };
            pairs.push((k, v));
        }
        AgentMeta::from_fields(pairs.iter().map(|(k, v)| (*k, v.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let m = AgentMeta {
            agent_id: "h-claude-x-1".into(),
            provider: "claude".into(),
            session: "ar-claude-x-1".into(),
            label: "x = y".into(),
            approval_mode: "guarded".into(),
            lifecycle: "persistent".into(),
            workspace_mode: "inherit".into(),
            log_file: "/l".into(),
            spawn_request_id: Some("r".into()),
            model: Some("opus".into()),
            rig: Some("r".into()),
            task_id: Some("7".into()),
            tags: Some("a,b".into()),
            limit_memory_max: Some("1024".into()),
            ..Default::default()
        };
        assert_eq!(AgentMeta::from_log_extra_fields(&m.to_log_extra_fields()), Some(m));
    }

    /// What a `daemon-reload` of systemd 252 makes of a transient unit's fields: each written
    /// unquoted on a line of its own, read back split at whitespace.
    fn reloaded(fields: &[Vec<u8>]) -> Vec<Vec<u8>> {
        fields
            .iter()
            .flat_map(|f| {
                String::from_utf8_lossy(f).split_whitespace().map(|w| w.as_bytes().to_vec()).collect::<Vec<_>>()
            })
            .filter(|w| w.contains(&b'='))
            .collect()
    }

    fn hostile() -> AgentMeta {
        let forge = " AGENT_RELAY_SESSION=victim AGENT_RELAY_LOG_FILE=/etc/passwd AGENT_RELAY_AGENT_ID=victim-id";
        AgentMeta {
            agent_id: "h-claude-p-1".into(),
            provider: "claude".into(),
            session: "ar-claude-p-1".into(),
            label: format!("p{forge} 100%C3 %% %n \\x41 \"q\" 'x' \u{e9} \t ~41 a=b"),
            approval_mode: "guarded".into(),
            lifecycle: "persistent".into(),
            workspace_mode: "inherit".into(),
            log_file: "/home/u/.agent-relay/logs/ar-claude-p-1.log".into(),
            profile: Some(format!("x{forge}")),
            model: Some("m AGENT_RELAY_LABEL=victim".into()),
            policy_name: Some(String::new()),
            ..Default::default()
        }
    }

    #[test]
    fn values_round_trip_exactly_across_a_reload() {
        let m = hostile();
        let fields = m.to_log_extra_fields();
        for f in &fields {
            let f = std::str::from_utf8(f).unwrap();
            let (_, v) = f.split_once('=').unwrap();
            assert!(v.bytes().all(|b| is_plain(b) || b == b'%'), "{f}");
        }
        assert_eq!(reloaded(&fields), fields, "nothing to split");
        assert_eq!(AgentMeta::from_log_extra_fields(&reloaded(&fields)), Some(m));
    }

    #[test]
    fn plain_values_read_as_they_are() {
        let m = AgentMeta { agent_id: "box-claude-fix-bug-0123abcd".into(), ..Default::default() };
        let fields = m.to_log_extra_fields();
        assert!(fields.contains(&b"AGENT_RELAY_AGENT_ID=box-claude-fix-bug-0123abcd".to_vec()));
        assert!(fields.contains(&b"AGENT_RELAY_SCHEMA=2".to_vec()));
        assert_eq!(encode_value("/home/u/.agent-relay/logs/a_b.log"), "/home/u/.agent-relay/logs/a_b.log");
        assert_eq!(encode_value("Fix bug 100%"), "Fix%20bug%20100%25");
        assert_eq!(encode_value("\u{e9}="), "%C3%A9%3D");
    }

    #[test]
    fn decoding_refuses_what_encoding_never_writes() {
        for bad in ["a b", "%", "%4", "%zz", "a=b", "%FF", "\"", "\u{e9}"] {
            assert_eq!(decode_value(bad), None, "{bad:?}");
        }
        assert_eq!(decode_value("%41%c3%a9").as_deref(), Some("A\u{e9}"));
        let mut fields = hostile().to_log_extra_fields();
        fields.push(b"AGENT_RELAY_MODEL=two words".to_vec());
        assert_eq!(AgentMeta::from_log_extra_fields(&fields), None);
    }

    #[test]
    fn a_key_twice_is_no_record() {
        let m = AgentMeta { agent_id: "a".into(), session: "s".into(), ..Default::default() };
        for dup in ["AGENT_RELAY_AGENT_ID=b", "AGENT_RELAY_SESSION=t", "AGENT_RELAY_SCHEMA=2", "AGENT_RELAY_SCHEMA=1"] {
            let mut fields = m.to_log_extra_fields();
            fields.push(dup.as_bytes().to_vec());
            assert_eq!(AgentMeta::from_log_extra_fields(&fields), None, "{dup}");
            fields.rotate_right(1);
            assert_eq!(AgentMeta::from_log_extra_fields(&fields), None, "{dup} first");
        }
        // Foreign fields may repeat.
        let mut fields = m.to_log_extra_fields();
        fields.extend([b"FOO=1".to_vec(), b"FOO=2".to_vec(), b"AGENT_RELAY_OTHER=x".to_vec()]);
        assert_eq!(AgentMeta::from_log_extra_fields(&fields), Some(m));
    }

    #[test]
    fn units_written_before_the_encoding_read_as_they_are() {
        let legacy: Vec<Vec<u8>> = ["AGENT_RELAY_SCHEMA=1", "AGENT_RELAY_AGENT_ID=a", "AGENT_RELAY_LABEL=100%"]
            .iter()
            .map(|f| f.as_bytes().to_vec())
            .collect();
        let m = AgentMeta::from_log_extra_fields(&legacy).unwrap();
        assert_eq!((m.agent_id.as_str(), m.label.as_str()), ("a", "100%"));
        // Forged after a reload: the forged key is there twice, so no record at all.
        let forged: Vec<Vec<u8>> =
            ["AGENT_RELAY_SCHEMA=1", "AGENT_RELAY_AGENT_ID=a", "AGENT_RELAY_LABEL=p", "AGENT_RELAY_AGENT_ID=victim"]
                .iter()
                .map(|f| f.as_bytes().to_vec())
                .collect();
        assert_eq!(AgentMeta::from_log_extra_fields(&forged), None);
    }

    #[test]
    fn foreign_fields_are_not_an_agent() {
        assert_eq!(AgentMeta::from_log_extra_fields(&[b"FOO=bar".to_vec()]), None);
    }
}
