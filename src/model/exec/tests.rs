use super::*;
use crate::model::property::find;

fn words(ws: &[&str]) -> Vec<String> {
    ws.iter().map(|w| w.to_string()).collect()
}

fn props(argv: &[&str]) -> Vec<Property> {
    let argv = words(argv);
    vec![
        ("Type", Value::Str("exec".into())),
        ("ExecStartEx", exact(&argv[0], &argv, false)),
        ("ExecStopPostEx", exact("/usr/bin/rec", &words(&["/usr/bin/rec", "x"]), true)),
    ]
}

#[test]
fn exact_commands_carry_no_env_expand() {
    let Value::ExecEx(c) = exact("/bin/r", &words(&["/bin/r", "$X"]), true) else { panic!() };
    assert_eq!(c, vec![("/bin/r".to_string(), words(&["/bin/r", "$X"]), words(&[IGNORE_FAILURE, NO_ENV_EXPAND]))]);
}

#[test]
fn managers_from_254_get_the_ex_properties_as_they_are() {
    let p = props(&["/bin/r", "${TOKEN}", "a;b"]);
    for v in ["254", "255.4-1", "v256"] {
        assert_eq!(for_manager(p.clone(), Some(v), None).unwrap(), p);
    }
}

#[test]
fn older_managers_get_plain_command_lines_when_nothing_needs_encoding() {
    let p = props(&["/bin/r", "a b", "%n", "\\", "\"q\" it's", "ünï", ""]);
    for v in [Some("252.38-1~deb12u1"), Some("243"), Some("240"), Some("garbage"), None] {
        let got = for_manager(p.clone(), v, Some("/usr/bin/agent-relay-systemd")).unwrap();
        assert!(find(&got, "ExecStartEx").is_none() && find(&got, "ExecStopPostEx").is_none());
        assert_eq!(
            find(&got, "ExecStart"),
            Some(&Value::Exec(vec![(
                "/bin/r".into(),
                words(&["/bin/r", "a b", "%n", "\\", "\"q\" it's", "ünï", ""]),
                false
            )]))
        );
        assert_eq!(
            find(&got, "ExecStopPost"),
            Some(&Value::Exec(vec![("/usr/bin/rec".into(), words(&["/usr/bin/rec", "x"]), true)]))
        );
        assert_eq!(find(&got, "Type"), Some(&Value::Str("exec".into())));
    }
}

#[test]
fn older_managers_get_dollars_and_semicolons_through_the_exec_verb() {
    let me = "/usr/bin/agent-relay-systemd";
    let got = for_manager(props(&["/bin/r", "${T}", "a;b", "100%"]), Some("252"), Some(me)).unwrap();
    let Some(Value::Exec(c)) = find(&got, "ExecStart") else { panic!("{got:?}") };
    assert_eq!(
        c,
        &vec![(me.to_string(), words(&[me, "exec", "--", "/bin/r", "/bin/r", "%24{T}", "a%3Bb", "100%25"]), false)]
    );
    // No word of the command line systemd runs has a `$` to expand or a `;` to mangle.
    assert!(c[0].1.iter().all(|w| !w.contains(['$', ';'])));
}

#[test]
fn older_managers_without_our_binary_refuse_what_they_cannot_keep() {
    let err = for_manager(props(&["/bin/r", "$X"]), Some("252"), None).unwrap_err();
    assert!(matches!(&err, ExecError::NoLauncher { version } if version == "252"), "{err}");
    assert!(!err.to_string().contains('\n'));
    // A launcher path that itself needs encoding cannot launch.
    assert!(for_manager(props(&["/bin/r", "$X"]), Some("252"), Some("/opt/a$b/agent-relay-systemd")).is_err());
    // What needs no encoding needs no launcher.
    assert!(for_manager(props(&["/bin/r", "x"]), Some("252"), None).is_ok());
}

#[test]
fn expanding_or_unknown_flags_are_not_ours() {
    let p = vec![("ExecStartEx", Value::ExecEx(vec![("/bin/r".into(), words(&["/bin/r"]), vec![])]))];
    assert!(matches!(for_manager(p, Some("252"), None), Err(ExecError::Unexpected { .. })));
    let p = vec![(
        "ExecStartEx",
        Value::ExecEx(vec![("/bin/r".into(), words(&["/bin/r"]), words(&[NO_ENV_EXPAND, "privileged"]))]),
    )];
    assert!(matches!(for_manager(p, Some("252"), None), Err(ExecError::Unexpected { .. })));
}

#[test]
fn encoding_round_trips() {
    for w in ["", "plain", "$", ";", "%", "%24", "a;b $X ${Y} 100% %%", "ünï\n\t\\\"'", "%3b%3B"] {
        let e = encode(w);
        assert!(!e.contains(['$', ';']), "{e}");
        assert_eq!(decode(&e).unwrap(), w.as_bytes(), "{w:?} → {e:?}");
    }
    assert_eq!(encode("a$b;c%d"), "a%24b%3Bc%25d");
    for bad in ["%", "%2", "%zz", "a%4"] {
        assert!(decode(bad).is_err(), "{bad}");
    }
    assert_eq!(decode("%3b").unwrap(), b";");
}

#[test]
fn versions_parse() {
    assert_eq!(major_version("252.38-1~deb12u1"), Some(252));
    assert_eq!(major_version("v255"), Some(255));
    assert_eq!(major_version("255~rc1"), Some(255));
    assert_eq!(major_version("x"), None);
}
