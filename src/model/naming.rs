//! Names: session, agent id, unit and slice names, all derived the way the seed derives them.
//! Pure: no IO, no clock, no randomness (callers pass the time and the random part in).

use sha2::{Digest, Sha256};

/// Every agent unit lives in this slice. No `-` in the name: a dash would nest it in another
/// slice (`a-b.slice` lives inside `a.slice`, systemd.slice(5)).
pub const AGENT_SLICE: &str = "agent_relay.slice";
/// Unit names of agents start with this, then the session name (`<tmuxPrefix>-…`).
pub const AGENT_UNIT_PREFIX: &str = "agent-relay-managed-";
/// tmux socket paths are short; the seed caps derived names at 80 bytes.
pub const MAX_SESSION_NAME: usize = 80;

/// Options of [`sanitize_fs_name`], after the SDK's `sanitizeFsName`.
#[derive(Debug, Clone, Copy)]
pub struct Sanitize<'a> {
    pub lowercase: bool,
    pub max_len: usize,
    pub fallback: &'a str,
}

impl Default for Sanitize<'_> {
    fn default() -> Self {
        Sanitize { lowercase: true, max_len: 64, fallback: "" }
    }
}

/// Maps a free-form string to `[a-z0-9_-]`: other characters (`.` and `:` too, which tmux
/// renders as `_`, seed #1583) become `-`, runs of `-` collapse, edges are trimmed.
pub fn sanitize_fs_name(input: &str, opts: Sanitize<'_>) -> String {
    let mut out = String::with_capacity(input.len().min(opts.max_len));
    for c in input.chars() {
        let c = if opts.lowercase { c.to_ascii_lowercase() } else { c };
        let keep = c.is_ascii_alphanumeric() || c == '_';
        let c = if keep { c } else { '-' };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
        if out.len() >= opts.max_len {
            break;
        }
    }
    let trimmed = out.trim_matches(|c| c == '-' || c == '_');
    if trimmed.is_empty() {
        opts.fallback.to_string()
    } else {
        trimmed.to_string()
    }
}

fn slug(input: &str) -> String {
    sanitize_fs_name(input, Sanitize { lowercase: true, max_len: 256, fallback: "session" })
}

/// First 8 hex digits of SHA-256: a short, stable disambiguator.
pub fn sha8(input: &str) -> String {
    sha_hex(input, 4)
}

fn sha_hex(input: &str, bytes: usize) -> String {
    let digest = Sha256::digest(input.as_bytes());
    digest.iter().take(bytes).map(|b| format!("{b:02x}")).collect()
}

/// Hex digits of a session name's unique part.
pub const UNIQUE_SUFFIX_LEN: usize = 12;

/// What makes an agent's session name its own: its spawn request id, else its agent id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueId<'a> {
    SpawnRequest(&'a str),
    Agent(&'a str),
}

/// The unique part of a session name: the first 12 hex digits (48 bits) of SHA-256 of the whole
/// unique id, exactly as given, and of which kind it is. The seed took the id's last 8
/// characters, sanitised, so `alpha-00000001` and `bravo-00000001` (or `req.a` and `req:a`)
/// shared a unit; a hash of the whole id keeps every request apart (a spawn request id and an
/// agent id spelled alike too) and every retry of one request on its one unit.
pub fn unique_suffix(unique: UniqueId<'_>) -> String {
    let keyed = match unique {
        UniqueId::SpawnRequest(id) => format!("spawnRequestId\0{id}"),
        UniqueId::Agent(id) => format!("agentId\0{id}"),
    };
    sha_hex(&keyed, UNIQUE_SUFFIX_LEN / 2)
}

/// The unique parts a reference of unknown kind would give: as a spawn request id, as an agent id.
pub fn unique_suffixes_of(reference: &str) -> [String; 2] {
    [unique_suffix(UniqueId::SpawnRequest(reference)), unique_suffix(UniqueId::Agent(reference))]
}

/// Why a session name could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "derived name too long for tmux socket ({len} bytes, at most {max}); pass a short `label` or a shorter tmuxPrefix"
)]
pub struct NameTooLong {
    pub len: usize,
    pub max: usize,
}

/// `<prefix>-<provider>-<slug(label)>-<unique_suffix(unique)>`, at most 80 bytes; a long slug is
/// cut and given a `-<sha8>` of the whole slug (as the newer orchestrator's `boundedSlug`).
pub fn session_name(prefix: &str, provider: &str, label: &str, unique: UniqueId<'_>) -> Result<String, NameTooLong> {
    let clean = slug(label);
    let suffix = unique_suffix(unique);
    let fixed = prefix.len() + 1 + provider.len() + 1 + 1 + suffix.len();
    if fixed + clean.len() <= MAX_SESSION_NAME {
        return Ok(format!("{prefix}-{provider}-{clean}-{suffix}"));
    }
    let hash = sha8(&clean);
    let room = MAX_SESSION_NAME.saturating_sub(fixed + 1 + hash.len());
    if room < 1 {
        return Err(NameTooLong { len: fixed + 1 + hash.len(), max: MAX_SESSION_NAME });
    }
    let cut = clean[..room].trim_end_matches(['-', '_']);
    let cut = if cut.is_empty() { "s" } else { cut };
    Ok(format!("{prefix}-{provider}-{cut}-{hash}-{suffix}"))
}

/// The seed's default label: `session-<ms>`.
pub fn default_label(now_ms: u64) -> String {
    format!("session-{now_ms}")
}

/// `<host>-<provider>-<label>-<uuid8>`, as the seed's `managedAgentId`.
pub fn agent_id(hostname: &str, provider: &str, label: &str, uuid8: &str) -> String {
    let host = sanitize_fs_name(hostname, Sanitize { lowercase: true, max_len: 64, fallback: "host" });
    format!("{host}-{provider}-{}-{uuid8}", slug(label))
}

/// `agent-relay-managed-<session>.service`.
pub fn agent_unit_name(session: &str) -> String {
    format!("{AGENT_UNIT_PREFIX}{session}.service")
}

/// The `ListUnitsByPatterns` glob that matches every agent unit of this tmux prefix.
pub fn agent_unit_pattern(prefix: &str) -> String {
    format!("{AGENT_UNIT_PREFIX}{prefix}-*.service")
}

/// Glob of the agent units whose session name ends with the unique part derived from `unique`,
/// of one provider or any: a lookup by id reads these few units instead of every agent.
pub fn units_ending_like(prefix: &str, provider: Option<&str>, unique: UniqueId<'_>) -> String {
    let provider = provider.map(|p| format!("{p}-")).unwrap_or_default();
    format!("{AGENT_UNIT_PREFIX}{prefix}-{provider}*-{}.service", unique_suffix(unique))
}

/// The length of the tail of an agent id we generate for a request with a spawn request id: the
/// first characters of its unit's unique part (see [`id_tail_for`]).
pub const ID_TAIL_LEN: usize = 8;

/// The tail of the agent id we generate for the spawn request `rid`: the first [`ID_TAIL_LEN`]
/// characters of its unit's unique part, so that the agent id names its unit (the seed's tail is
/// 8 random hex digits; these are 8 hex digits too, one agent per request all the same).
pub fn id_tail_for(rid: &str) -> String {
    unique_suffix(UniqueId::SpawnRequest(rid))[..ID_TAIL_LEN].to_string()
}

/// The globs of the agent units a reference of unknown kind can name by their own unit name:
/// the unit of a spawn request id, of an agent id (a request without a spawn request id), and of
/// an agent id we generated (its tail the start of its unit's unique part). Matching them is the
/// manager's work over unit names alone; each names at most a few units.
pub fn units_named_by(reference: &str, prefix: &str) -> Vec<String> {
    let mut globs: Vec<String> =
        unique_suffixes_of(reference).iter().map(|t| format!("{AGENT_UNIT_PREFIX}{prefix}-*-{t}.service")).collect();
    if let Some(tail) = generated_tail(reference) {
        let rest = "?".repeat(UNIQUE_SUFFIX_LEN - ID_TAIL_LEN);
        globs.push(format!("{AGENT_UNIT_PREFIX}{prefix}-*-{tail}{rest}.service"));
    }
    globs
}

/// The tail of `reference` when it may be an agent id we generated: [`ID_TAIL_LEN`] lowercase
/// hex digits after its last `-`.
fn generated_tail(reference: &str) -> Option<&str> {
    let (_, tail) = reference.rsplit_once('-')?;
    let hex = tail.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (tail.len() == ID_TAIL_LEN && hex).then_some(tail)
}

/// Whether `session` may be the session of the agent `reference` names by its unit's name (see
/// [`units_named_by`]): it ends with the unique part of the reference as a spawn request id or
/// as an agent id, or with a unique part that begins with the tail of an agent id we generated.
pub fn session_named_by(session: &str, reference: &str) -> bool {
    let Some((_, unique)) = session.rsplit_once('-') else { return false };
    if unique_suffixes_of(reference).iter().any(|t| t == unique) {
        return true;
    }
    generated_tail(reference).is_some_and(|tail| unique.len() == UNIQUE_SUFFIX_LEN && unique.starts_with(tail))
}

/// The session name inside an agent unit name, when the unit is one of ours for `prefix`.
pub fn session_of_unit<'a>(unit: &'a str, prefix: &str) -> Option<&'a str> {
    let session = unit.strip_prefix(AGENT_UNIT_PREFIX)?.strip_suffix(".service")?;
    let rest = session.strip_prefix(prefix)?.strip_prefix('-')?;
    if rest.is_empty() || rest.starts_with("guest-") {
        return None;
    }
    Some(session)
}

/// The session name inside any agent unit name (`agent-relay-managed-<session>.service`),
/// whatever its tmux prefix; `None` for other units and for a session that is no plain file name.
/// An agent's files are named by this, never by its metadata.
pub fn session_of_agent_unit(unit: &str) -> Option<&str> {
    let session = unit.strip_prefix(AGENT_UNIT_PREFIX)?.strip_suffix(".service")?;
    let plain = session.starts_with(|c: char| c.is_ascii_alphanumeric()) && !session.contains('/');
    plain.then_some(session)
}

/// The agent unit of `prefix` a reference names as a unit name (with or without `.service`, as
/// `systemctl` takes it) or as a session name; `None` when it cannot be one.
pub fn unit_named_by(reference: &str, prefix: &str) -> Option<String> {
    let unit_chars = |c: char| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c);
    if reference.len() > 200 || !reference.chars().all(unit_chars) {
        return None;
    }
    let unit = if reference.ends_with(".service") {
        reference.to_string()
    } else if reference.starts_with(AGENT_UNIT_PREFIX) {
        format!("{reference}.service")
    } else {
        agent_unit_name(reference)
    };
    session_of_unit(&unit, prefix).is_some().then_some(unit)
}

/// A reference spelled as a unit name (what `stop` refuses when it is not one of ours).
pub fn looks_like_unit(reference: &str) -> bool {
    reference.ends_with(".service") || reference.starts_with(AGENT_UNIT_PREFIX)
}

/// A provider names a binary (`<provider>-relay`) and a path component: keep it plain.
pub fn provider_is_valid(provider: &str) -> bool {
    let mut chars = provider.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && provider.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(id: &str) -> UniqueId<'_> {
        UniqueId::SpawnRequest(id)
    }

    #[test]
    fn sanitises_like_the_sdk() {
        let o = Sanitize::default();
        assert_eq!(sanitize_fs_name("My Label.v2:x", o), "my-label-v2-x");
        assert_eq!(sanitize_fs_name("--a//b--", o), "a-b");
        assert_eq!(sanitize_fs_name("!!!", o), "");
        assert_eq!(sanitize_fs_name("!!!", Sanitize { fallback: "agent", ..o }), "agent");
        assert_eq!(sanitize_fs_name("ÄÖ ok", o), "ok");
    }

    #[test]
    fn session_name_follows_the_seed_but_for_its_unique_part() {
        let tag = unique_suffix(rid("req-12345678abcd"));
        assert_eq!(tag.len(), UNIQUE_SUFFIX_LEN);
        assert!(tag.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(
            session_name("ar", "claude", "Fix Bug", rid("req-12345678abcd")).unwrap(),
            format!("ar-claude-fix-bug-{tag}")
        );
        assert_eq!(
            unique_suffix(rid("req-1")),
            "0f3581ef640e",
            "a stable derivation: names of running units depend on it"
        );
    }

    #[test]
    fn ids_sharing_a_tail_or_a_sanitised_form_never_share_a_name() {
        let ids = ["alpha-00000001", "bravo-00000001", "req.a", "req:a", "REQ-A", "req-a", "a/b", "a-b"];
        let names: std::collections::BTreeSet<String> =
            ids.iter().map(|id| session_name("ar", "claude", "session", rid(id)).unwrap()).collect();
        assert_eq!(names.len(), ids.len(), "{names:?}");
        // A spawn request id and an agent id spelled alike are different ids.
        assert_ne!(unique_suffix(rid("x-1")), unique_suffix(UniqueId::Agent("x-1")));
        assert_eq!(unique_suffixes_of("x-1"), [unique_suffix(rid("x-1")), unique_suffix(UniqueId::Agent("x-1"))]);
    }

    #[test]
    fn a_generated_agent_id_names_its_unit() {
        let unit = agent_unit_name(&session_name("ar", "claude", "x", rid("req-1")).unwrap());
        let id = agent_id("box", "claude", "x", &id_tail_for("req-1"));
        let globs = units_named_by(&id, "ar");
        assert_eq!(globs.len(), 3, "{globs:?}");
        let tail = &unit[unit.len() - ".service".len() - UNIQUE_SUFFIX_LEN..unit.len() - ".service".len()];
        assert!(globs[2].ends_with(&format!("-{}????.service", &tail[..ID_TAIL_LEN])), "{globs:?} {unit}");
        let session = unit.strip_prefix(AGENT_UNIT_PREFIX).unwrap().strip_suffix(".service").unwrap();
        assert!(session_named_by(session, &id) && session_named_by(session, "req-1"));
        assert!(!session_named_by(session, "req-2") && !session_named_by(session, "box-claude-x-00000000"));
        // A reference with no such tail: only the two unique parts.
        assert_eq!(units_named_by("org/agent/7", "ar").len(), 2);
        assert_eq!(units_named_by("x-ABCDEF12", "ar").len(), 2);
    }

    #[test]
    fn label_that_sanitises_to_nothing_falls_back() {
        let name = session_name("ar", "claude", "???", rid("abcdefgh")).unwrap();
        assert_eq!(name, format!("ar-claude-session-{}", unique_suffix(rid("abcdefgh"))));
    }

    #[test]
    fn long_labels_are_cut_with_a_hash_and_stay_distinct() {
        let a = session_name("ar", "claude", &"a".repeat(200), rid("12345678")).unwrap();
        let b = session_name("ar", "claude", &format!("{}b", "a".repeat(199)), rid("12345678")).unwrap();
        assert!(a.len() <= MAX_SESSION_NAME && b.len() <= MAX_SESSION_NAME);
        assert_ne!(a, b);
        assert!(a.ends_with(&format!("-{}", unique_suffix(rid("12345678")))));
    }

    #[test]
    fn too_long_prefix_is_an_error() {
        let err = session_name(&"p".repeat(70), "claude", "x", rid("12345678")).unwrap_err();
        assert!(err.to_string().contains("pass a short `label`"));
    }

    #[test]
    fn unit_names_round_trip() {
        let unit = agent_unit_name("ar-claude-x-1234");
        assert_eq!(unit, "agent-relay-managed-ar-claude-x-1234.service");
        assert_eq!(session_of_unit(&unit, "ar"), Some("ar-claude-x-1234"));
        assert_eq!(session_of_unit(&unit, "zz"), None);
        assert_eq!(session_of_unit("ssh.service", "ar"), None);
        assert_eq!(session_of_unit("agent-relay-managed-ar-guest-x.service", "ar"), None);
        assert_eq!(session_of_agent_unit(&unit), Some("ar-claude-x-1234"));
        assert_eq!(session_of_agent_unit("agent-relay-managed-zz-y-1.service"), Some("zz-y-1"));
        for other in
            ["ssh.service", "agent-relay-managed-.service", "agent-relay-managed-..service", "agent-relay-managed-x"]
        {
            assert_eq!(session_of_agent_unit(other), None, "{other}");
        }
    }

    #[test]
    fn references_naming_a_unit() {
        let unit = "agent-relay-managed-ar-claude-x-1.service";
        assert_eq!(unit_named_by(unit, "ar").as_deref(), Some(unit));
        assert_eq!(unit_named_by("agent-relay-managed-ar-claude-x-1", "ar").as_deref(), Some(unit));
        assert_eq!(unit_named_by("ar-claude-x-1", "ar").as_deref(), Some(unit));
        assert_eq!(unit_named_by("req-1", "ar"), None);
        assert_eq!(unit_named_by("ar-a/b", "ar"), None);
        assert_eq!(unit_named_by("ssh.service", "ar"), None);
        assert!(looks_like_unit("ssh.service") && !looks_like_unit("team/alpha"));
    }

    #[test]
    fn providers() {
        assert!(provider_is_valid("claude"));
        assert!(provider_is_valid("codex-2"));
        assert!(!provider_is_valid("Claude"));
        assert!(!provider_is_valid("../x"));
        assert!(!provider_is_valid(""));
    }

    #[test]
    fn units_ending_like_an_id_match_its_units_only() {
        let tag = unique_suffix(rid("req-12345678"));
        let any = units_ending_like("ar", None, rid("req-12345678"));
        assert_eq!(any, format!("agent-relay-managed-ar-*-{tag}.service"));
        assert_eq!(
            units_ending_like("ar", Some("claude"), rid("req-12345678")),
            format!("agent-relay-managed-ar-claude-*-{tag}.service")
        );
        let unit = agent_unit_name(&session_name("ar", "claude", "Fix Bug", rid("req-12345678")).unwrap());
        assert!(unit.ends_with(&format!("-{tag}.service")));
    }
}
