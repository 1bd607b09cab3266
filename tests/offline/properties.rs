//! Property tests of the pure parsers, naming and the unit generator: whatever comes in, nothing
//! panics; a refusal is one line; what is accepted yields names systemd and tmux take as they are.

use agent_relay_systemd::model::meta::AgentMeta;
use agent_relay_systemd::model::naming::{self, Sanitize};
use agent_relay_systemd::model::plan::render_env_file;
use agent_relay_systemd::model::{guest, logtext, request, unit};
use proptest::prelude::*;

use crate::util::{plan_example, EXAMPLE_TOKEN as SECRET};

fn unit_name_ok(name: &str) -> bool {
    name.len() <= 255 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@:\\".contains(c))
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
    fn any_json_shaped_request_is_accepted_or_refused_in_one_line(
        provider in "[a-zA-Z0-9_./-]{0,40}", label in ".{0,80}", rid in ".{0,80}",
        key in "[A-Za-z0-9_-]{0,20}", value in ".{0,40}", tags in prop::collection::vec(".{0,10}", 0..4),
    ) {
        let req = serde_json::json!({"provider": provider, "cwd": "/home/u/projects/a", "label": label,
            "spawnRequestId": rid, "env": {key: value}, "tags": tags});
        match request::parse(&req.to_string()) {
            Err(e) => prop_assert!(!e.0.contains('\n')),
            Ok(r) => {
                match plan_example(&r, false) {
                    Err(e) => prop_assert!(!e.0.contains('\n')),
                    Ok(p) => {
                        prop_assert!(unit_name_ok(&p.unit), "{}", p.unit);
                        prop_assert!(p.meta.session.len() <= naming::MAX_SESSION_NAME);
                        prop_assert!(naming::session_of_unit(&p.unit, "ar") == Some(p.meta.session.as_str()));
                        // The token never reaches the public environment or argv.
                        prop_assert!(p.environment.iter().all(|(_, v)| !v.contains(SECRET)));
                        prop_assert!(p.argv.iter().all(|a| !a.contains(SECRET)));
                        prop_assert!(!p.description.contains(SECRET));
                        let props = unit::agent_properties(&p);
                        let fields = AgentMeta::from_log_extra_fields(&p.meta.to_log_extra_fields());
                        prop_assert_eq!(fields.as_ref(), Some(&p.meta));
                        prop_assert!(unit::find(&props, "ExecStartEx").is_some());
                    }
                }
            }
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
        let keys = guest::tokenize_input(&text).unwrap();
        let joined: String = keys.iter().map(|k| match k {
            guest::Key::Literal(t) => t.clone(),
            guest::Key::Named(_) => String::from("\x1b"),
        }).collect();
        prop_assert_eq!(joined, text);
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
