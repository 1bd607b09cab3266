//! Property tests of the pure parsers, naming and the unit generator: whatever comes in, nothing
//! panics; a refusal is one line; what is accepted yields names systemd and tmux take as they are.
//!
//! The request→plan properties draw valid requests by construction and count how many reach the
//! planner (a property checked only in a branch the generator seldom reaches proves nothing);
//! hostile requests are drawn separately and must be refused, in one line naming the problem.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use agent_relay_systemd::model::meta::AgentMeta;
use agent_relay_systemd::model::naming::{self, Sanitize};
use agent_relay_systemd::model::plan::{is_supervisor_owned, render_env_file};
use agent_relay_systemd::model::request::{env_value_problem, is_systemd_run_var};
use agent_relay_systemd::model::{guest, logtext, request, terminal, unit};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{json, Map, Value};

use crate::util::{example_config, plan_example, EXAMPLE_TOKEN as SECRET};

fn unit_name_ok(name: &str) -> bool {
    name.len() <= 255 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@:\\".contains(c))
}

/// Every request env value starts with this, the prompt with [`PROMPT_MARK`]: secrets that must
/// reach no unit property, argv or description.
const ENV_MARK: &str = "REQ-ENV-SECRET-";
const PROMPT_MARK: &str = "REQ-PROMPT-SECRET-";

/// One line of text a field takes: no control character, often the characters shells and
/// systemd treat specially, sometimes any other Unicode (format characters, RTL marks, emoji).
fn one_line(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex(&format!("[-A-Za-z0-9 _.:/\"'\\\\$`%#;&|*?(){{}}<>=!~@^+]{{0,{max}}}")).unwrap(),
        proptest::string::string_regex(&format!("[^\\p{{Cc}}]{{0,{max}}}")).unwrap(),
    ]
}

/// One line, not blank (`spawnRequestId`, `agentId` must not be).
fn id_text() -> impl Strategy<Value = String> {
    one_line(40).prop_filter("not blank", |s| !s.trim().is_empty())
}

/// An env key a request may set: a variable name systemd does not own for each run.
fn env_key() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,19}".prop_filter("not systemd's", |k| !is_systemd_run_var(k))
}

/// An env value the runner's environment carries: quotes, backslashes, `$`, backticks, `%`, `#`,
/// spaces, tabs and newlines included; no other control character, no Unicode noncharacter.
fn env_value() -> impl Strategy<Value = String> {
    prop_oneof!["[\"'\\\\$`%# \t\nA-Za-z0-9=;]{0,40}", "([^\\p{Cc}\\p{Cn}]|\t|\n){0,40}"]
        .prop_map(|v| format!("{ENV_MARK}{v}"))
        .prop_filter("carried by an environment", |v| env_value_problem(v).is_none())
}

/// A spawn request valid by construction, as JSON: every field the caller controls, each present
/// or not, with values the validation accepts.
fn valid_request() -> impl Strategy<Value = Value> {
    let names = (
        "[a-z0-9][a-z0-9_-]{0,31}",
        prop::option::of(one_line(80)),
        prop::option::of(id_text()),
        prop::option::of(id_text()),
        prop::option::of(prop_oneof![any::<u64>().prop_map(|n| json!(n)), id_text().prop_map(|t| json!(t))]),
    );
    let words = (
        prop::option::of(one_line(30)),
        prop::option::of(one_line(30)),
        prop::option::of(one_line(30)),
        prop::option::of(one_line(30)),
        prop::option::of(prop_oneof![Just("persistent"), Just("ephemeral")]),
    );
    let lists = (
        prop::collection::vec("[^,\\p{Cc}]{1,10}", 0..4),
        prop::collection::vec("[^,\\p{Cc}]{1,10}", 0..3),
        prop::collection::vec("[^\\x00]{0,20}", 0..3),
        prop::collection::btree_map(env_key(), env_value(), 0..5),
        prop::option::of("[^\\x00]{0,100}".prop_map(|p| format!("{PROMPT_MARK}{p}"))),
    );
    (names, words, lists).prop_map(|(names, words, lists)| {
        let (provider, label, rid, agent_id, task_id) = names;
        let (model, approval, policy, workspace_mode, lifecycle) = words;
        let (tags, caps, provider_args, env, prompt) = lists;
        let mut req = Map::new();
        req.insert("provider".into(), json!(provider));
        req.insert("cwd".into(), json!("/home/u/projects/a"));
        let optional = [
            ("label", label.map(Value::from)),
            ("spawnRequestId", rid.map(Value::from)),
            ("agentId", agent_id.map(Value::from)),
            ("taskId", task_id),
            ("model", model.map(Value::from)),
            ("approvalMode", approval.map(Value::from)),
            ("policyName", policy.map(Value::from)),
            ("workspaceMode", workspace_mode.map(Value::from)),
            ("lifecycle", lifecycle.map(Value::from)),
            ("prompt", prompt.map(Value::from)),
        ];
        req.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), v))));
        req.insert("tags".into(), json!(tags));
        req.insert("capabilities".into(), json!(caps));
        req.insert("providerArgs".into(), json!(provider_args));
        req.insert("env".into(), json!(env));
        Value::Object(req)
    })
}

/// One hostile change to a valid request, and what its refusal must name.
fn hostile_change() -> impl Strategy<Value = (&'static str, Value, &'static str)> {
    let control =
        prop_oneof![Just('\0'), Just('\n'), Just('\r'), Just('\t'), Just('\u{1b}'), Just('\u{7f}'), Just('\u{85}')];
    let with_control = ("[a-z]{0,8}", control.clone(), "[a-z]{0,8}").prop_map(|(a, c, b)| format!("{a}{c}{b}"));
    let value_control = prop_oneof![Just('\0'), Just('\r'), Just('\u{1b}'), Just('\u{7f}'), Just('\u{9b}')];
    let nonchar =
        prop_oneof![Just('\u{fdd0}'), Just('\u{fdef}'), Just('\u{fffe}'), Just('\u{ffff}'), Just('\u{10ffff}')];
    let reserved = prop::sample::select(request::SYSTEMD_RUN_VARS.to_vec());
    prop_oneof![
        "([A-Z_./ ][a-z]{0,5}|[a-z][a-z0-9]{0,5}[A-Z./ :@][a-z]{0,5}|[a-z]{33,40})".prop_map(|p| (
            "provider",
            json!(p),
            "provider"
        )),
        Just(("provider", json!(""), "provider is required")),
        Just(("cwd", json!(""), "cwd is required")),
        with_control.clone().prop_map(|l| ("label", json!(l), "label")),
        "[a-z]{513,600}".prop_map(|l| ("label", json!(l), "label is")),
        with_control.clone().prop_map(|r| ("spawnRequestId", json!(r), "spawnRequestId")),
        "[ \t]{0,4}".prop_map(|r| ("spawnRequestId", json!(r), "spawnRequestId")),
        with_control.clone().prop_map(|m| ("model", json!(m), "model")),
        "([0-9][A-Za-z0-9_]{0,5}|[A-Za-z_]{1,5}[-.= :$][A-Za-z0-9_]{0,5})".prop_map(|k| (
            "env",
            json!({k: "v"}),
            "not a valid variable name"
        )),
        reserved.prop_map(|k| ("env", json!({k: "v"}), "reserved")),
        ("[a-z]{0,8}", value_control, "[a-z]{0,8}").prop_map(|(a, c, b)| (
            "env",
            json!({"K": format!("{a}{c}{b}")}),
            "env value of K"
        )),
        ("[a-z]{0,8}", nonchar).prop_map(|(a, c)| ("env", json!({"K": format!("{a}{c}")}), "noncharacter")),
        "[a-z]{0,4},[a-z]{0,4}".prop_map(|t| ("tags", json!([t]), "tags")),
        Just(("capabilities", json!([""]), "capabilities")),
        "[a-z]{0,8}".prop_map(|p| ("prompt", json!(format!("{p}\0")), "prompt")),
        Just(("lifecycle", json!("forever"), "unknown variant")),
        Just(("lable", json!("typo"), "unknown field")),
        Just(("env", json!(["K=V"]), "invalid type")),
        "[a-z]{1,6}".prop_map(|m| ("limits", json!({"memoryMax": m}), "limits.memoryMax")),
    ]
}

/// Every text a list of unit properties carries (what `systemctl show` would print).
fn property_texts(props: &[unit::Property]) -> Vec<String> {
    use unit::Value::*;
    let mut out = Vec::new();
    for (name, v) in props {
        out.push(name.to_string());
        match v {
            Str(s) => out.push(s.clone()),
            Bool(_) | U32(_) | U64(_) => {}
            Strs(l) => out.extend(l.iter().cloned()),
            Exec(l) => l.iter().for_each(|(p, a, _)| out.extend(std::iter::once(p).chain(a).cloned())),
            ExecEx(l) => l.iter().for_each(|(p, a, f)| out.extend(std::iter::once(p).chain(a).chain(f).cloned())),
            EnvFiles(l) => out.extend(l.iter().map(|(p, _)| p.clone())),
            Bytes(l) => out.extend(l.iter().map(|b| String::from_utf8_lossy(b).into_owned())),
        }
    }
    out
}

/// Runs `test` over `cases` values of `strategy`; a failure panics with proptest's minimal case.
fn check<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    // No regression file: a failure prints its minimal case, to be added as a plain test.
    let config = ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}\n{runner}");
    }
}

#[test]
fn valid_requests_plan_to_safe_names_and_keep_their_secrets_off_the_unit() {
    let (cases, parsed, planned) = (AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0));
    check(1000, valid_request(), |req| {
        cases.fetch_add(1, Relaxed);
        let r = match request::parse(&req.to_string()) {
            Ok(r) => r,
            Err(e) => {
                prop_assert!(!e.0.contains('\n') && !e.0.is_empty(), "{:?}", e.0);
                return Ok(());
            }
        };
        parsed.fetch_add(1, Relaxed);
        let p = match plan_example(&r, true) {
            Ok(p) => p,
            Err(e) => {
                prop_assert!(!e.0.contains('\n') && !e.0.is_empty(), "{:?}", e.0);
                return Ok(());
            }
        };
        planned.fetch_add(1, Relaxed);

        // Names systemd and tmux take as they are, and the unit name leads back to the session.
        prop_assert!(unit_name_ok(&p.unit), "{}", p.unit);
        prop_assert!(p.meta.session.len() <= naming::MAX_SESSION_NAME, "{}", p.meta.session);
        prop_assert_eq!(naming::session_of_unit(&p.unit, "ar"), Some(p.meta.session.as_str()));

        // The secrets (token, config env, request env, prompt) are in the env file or a payload,
        // never in a property, the argv, the description or the recorder's argv.
        let secret: std::collections::BTreeMap<&str, &str> =
            p.secret_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        prop_assert_eq!(secret.get("AGENT_RELAY_TOKEN"), Some(&SECRET));
        for (k, v) in example_config().env.iter().filter(|(k, _)| !r.env.contains_key(*k)) {
            prop_assert_eq!(secret.get(k.as_str()), Some(&v.as_str()));
        }
        for (k, v) in &r.env {
            if is_supervisor_owned(k) {
                prop_assert!(p.dropped_env.contains(k), "{} neither set nor dropped", k);
            } else {
                prop_assert_eq!(secret.get(k.as_str()), Some(&v.as_str()), "request env {}", k);
            }
        }
        if let Some(prompt) = &r.prompt {
            prop_assert!(p.payloads.iter().any(|f| &f.contents == prompt), "the prompt is in no payload");
        }
        let props = unit::agent_properties(&p);
        prop_assert!(unit::find(&props, "ExecStartEx").is_some());
        let public: Vec<String> = property_texts(&props)
            .into_iter()
            .chain(p.environment.iter().map(|(k, v)| format!("{k}={v}")))
            .chain(p.argv.iter().cloned())
            .chain(p.record_exit_argv.iter().flatten().cloned())
            .chain([p.description.clone()])
            .collect();
        for s in [SECRET, "config-secret", ENV_MARK, PROMPT_MARK] {
            prop_assert!(!public.iter().any(|t| t.contains(s)), "{} is public: {:?}", s, public);
        }

        // The metadata round-trips through LogExtraFields= and says what the request said.
        let fields = AgentMeta::from_log_extra_fields(&p.meta.to_log_extra_fields());
        prop_assert_eq!(fields.as_ref(), Some(&p.meta));
        prop_assert_eq!(&p.meta.provider, &r.provider);
        prop_assert_eq!(&p.meta.spawn_request_id, &r.spawn_request_id);
        prop_assert_eq!(&p.meta.model, &r.model);
        if let Some(label) = r.label.as_ref().filter(|l| !l.trim().is_empty()) {
            prop_assert_eq!(&p.meta.label, label);
        }
        if let Some(id) = &r.agent_id {
            prop_assert_eq!(&p.meta.agent_id, id);
        }
        Ok(())
    });
    let (cases, parsed, planned) = (cases.into_inner(), parsed.into_inner(), planned.into_inner());
    println!("{cases} valid requests: {parsed} parsed, {planned} planned");
    assert!(cases >= 1000, "{cases} cases");
    assert!(
        planned * 10 >= cases * 9,
        "only {planned} of {cases} valid requests reached the planner ({parsed} parsed)"
    );
}

#[test]
fn hostile_requests_are_refused_in_one_line_that_names_the_problem() {
    let cases = AtomicU32::new(0);
    check(1000, (valid_request(), hostile_change()), |(mut req, (field, value, want))| {
        cases.fetch_add(1, Relaxed);
        req[field] = value;
        let text = req.to_string();
        // Refused by the parser, or (limits) by the planner: never planned.
        let refused = match request::parse(&text) {
            Err(e) => e,
            Ok(r) => match plan_example(&r, true) {
                Err(e) => e,
                Ok(p) => return Err(TestCaseError::fail(format!("planned {} from {text}", p.unit))),
            },
        };
        prop_assert!(!refused.0.is_empty() && !refused.0.contains('\n'), "{:?}", refused.0);
        prop_assert!(refused.0.contains(want), "{:?} lacks {:?} for {}", refused.0, want, text);
        Ok(())
    });
    assert!(cases.into_inner() >= 1000);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn any_text_as_a_spawn_request_is_accepted_or_refused_in_one_line(text in ".{0,400}") {
        if let Err(e) = request::parse(&text) {
            prop_assert!(!e.0.contains('\n'), "{:?}", e.0);
            prop_assert!(!e.0.is_empty());
        }
    }

    #[test]
    fn sanitised_names_use_the_safe_alphabet(input in ".{0,200}", max in 1usize..100) {
        let s = naming::sanitize_fs_name(&input, Sanitize { lowercase: true, max_len: max, fallback: "x" });
        prop_assert!(!s.is_empty() && s.len() <= max.max(1));
        prop_assert!(s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'));
    }

    #[test]
    fn attach_specs_never_panic(body in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = guest::parse_attach_spec(&body, &|_| true);
    }

    #[test]
    fn input_tokens_round_trip_literals(text in "[ -~]{0,300}") {
        let keys = terminal::tokenize_input(&text).unwrap();
        prop_assert_eq!(keys.dropped, 0);
        let joined: String = keys.keys.iter().map(|k| match k {
            terminal::Key::Literal(t) => t.clone(),
            terminal::Key::Named(_) => String::from("\x1b"),
        }).collect();
        prop_assert_eq!(joined, text);
    }

    #[test]
    fn typed_text_holds_no_control_character(text in "(?s).{0,300}") {
        let keys = terminal::tokenize_input(&text).unwrap();
        for k in &keys.keys {
            if let terminal::Key::Literal(t) = k {
                prop_assert!(!t.is_empty() && !t.chars().any(char::is_control), "{:?}", t);
            }
        }
        let typed: usize = keys.keys.iter().map(|k| match k {
            terminal::Key::Literal(t) => t.chars().count(),
            terminal::Key::Named(_) => 0,
        }).sum();
        // Every printable character is typed, except those of an escape sequence typed as its key.
        let printable = text.chars().filter(|c| !c.is_control()).count();
        prop_assert!(typed <= printable);
        if !text.contains('\x1b') {
            prop_assert_eq!(typed, printable);
        }
        prop_assert!(keys.dropped <= text.chars().filter(|c| c.is_control()).count());
    }

    #[test]
    fn log_sanitiser_leaves_no_escape_or_control(text in ".{0,300}") {
        let out = logtext::sanitize(&text);
        prop_assert!(!out.contains('\x1b'));
        prop_assert!(out.chars().all(|c| !c.is_control() || c == '\n' || c == '\t'));
    }

    #[test]
    fn env_file_lines_stay_one_per_variable_without_newlines(v in "[^\n\r]{0,60}") {
        let text = render_env_file(&[("A".to_string(), v.clone()), ("B".to_string(), "x".to_string())]);
        prop_assert_eq!(text.lines().count(), 2);
        prop_assert!(text.starts_with("A=\""));
    }
}
