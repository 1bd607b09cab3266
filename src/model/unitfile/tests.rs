use super::*;
use crate::model::property::Value::*;

#[test]
fn words_are_quoted_as_systemd_reads_them() {
    assert_eq!(quote("--headless", true).unwrap(), "--headless");
    assert_eq!(quote("", true).unwrap(), "\"\"");
    assert_eq!(quote("a b", true).unwrap(), "\"a b\"");
    assert_eq!(quote("say \"hi\"", false).unwrap(), "\"say \\\"hi\\\"\"");
    assert_eq!(quote("C:\\dir", false).unwrap(), "\"C:\\\\dir\"");
    assert_eq!(quote("it's", false).unwrap(), "\"it's\"");
    assert_eq!(quote(";", true).unwrap(), "\";\"");
    assert_eq!(quote("line\nnext\ttab", false).unwrap(), "\"line\\nnext\\ttab\"");
    assert_eq!(quote("\x1b[0m", false).unwrap(), "\"\\x1b[0m\"");
    assert!(quote("a\0b", false).is_err());
}

#[test]
fn specifiers_and_variables_are_never_expanded() {
    // systemd.unit(5) specifiers and systemd.service(5) `$VAR` in command lines.
    assert_eq!(quote("%h", true).unwrap(), "%%h");
    assert_eq!(quote("$HOME", true).unwrap(), "$$HOME");
    assert_eq!(quote("${HOME} %n", true).unwrap(), "\"$${HOME} %%n\"");
    // Environment= does not expand variables: `$` stays single there.
    assert_eq!(quote("A=$HOME%i", false).unwrap(), "A=$HOME%%i");
}

#[test]
fn exec_lines_carry_prefixes_outside_the_words() {
    let argv = vec!["/usr/bin/r".to_string(), "a b".to_string()];
    assert_eq!(exec_line("ExecStart", "/usr/bin/r", &argv, false).unwrap(), "ExecStart=/usr/bin/r \"a b\"");
    assert_eq!(exec_line("ExecStopPost", "/usr/bin/r", &argv, true).unwrap(), "ExecStopPost=-/usr/bin/r \"a b\"");
    let renamed = vec!["runner".to_string()];
    assert_eq!(exec_line("ExecStart", "/usr/bin/r", &renamed, false).unwrap(), "ExecStart=@/usr/bin/r runner");
    assert!(exec_line("ExecStart", "r", &renamed, false).is_err());
}

#[test]
fn exact_commands_render_as_the_same_exec_lines() {
    let argv = vec!["/usr/bin/r".to_string(), "${T}".to_string(), "a;b".to_string()];
    let start = render(&[("ExecStartEx", exec::exact("/usr/bin/r", &argv, false))]).unwrap();
    assert!(start.contains("\nExecStart=/usr/bin/r \"$${T}\" \"a;b\"\n"), "{start}");
    let post = render(&[("ExecStopPostEx", exec::exact("/usr/bin/r", &argv, true))]).unwrap();
    assert!(post.contains("\nExecStopPost=-/usr/bin/r "), "{post}");
    // Words systemd should expand, or flags our units do not use, have no form here.
    let ex = |flags: &[&str]| {
        let flags = flags.iter().map(|f| f.to_string()).collect();
        render(&[("ExecStartEx", ExecEx(vec![("/usr/bin/r".into(), argv.clone(), flags)]))])
    };
    assert!(matches!(ex(&[]), Err(RenderError::Unrepresentable { .. })));
    assert!(matches!(ex(&["no-env-expand", "privileged"]), Err(RenderError::Unrepresentable { .. })));
    assert!(ex(&["ignore-failure", "no-env-expand"]).is_ok());
}

#[test]
fn one_line_values_refuse_what_a_line_cannot_hold() {
    assert_eq!(text("/home/u/my projects/50%").unwrap(), "/home/u/my projects/50%%");
    assert!(text("a\nb").is_err());
    assert!(text(" lead").is_err());
    assert!(text("ends\\").is_err());
    assert!(text("").is_err());
}

#[test]
fn spans_and_percents() {
    assert_eq!(span(10_000_000), "10s");
    assert_eq!(span(1_500_000), "1500ms");
    assert_eq!(span(7), "7us");
    let cpu = |us| render(&[("CPUQuotaPerSecUSec", U64(us))]);
    assert!(cpu(2_000_000).unwrap().contains("\nCPUQuota=200%\n"));
    assert!(cpu(12_500).unwrap().contains("\nCPUQuota=1.25%\n"));
    assert!(cpu(12_345).is_err());
}

#[test]
fn an_unknown_property_or_type_is_an_error_not_a_silent_drop() {
    assert_eq!(render(&[("CPUWeight", U64(100))]), Err(RenderError::UnknownProperty("CPUWeight".into())));
    assert_eq!(render(&[("Type", U64(1))]), Err(RenderError::WrongType { property: "Type".into() }));
    assert!(render(&[("Type", Str("exec; rm".into()))]).is_err());
}

#[test]
fn sections_hold_their_keys() {
    let text = render(&[
        ("Type", Str("exec".into())),
        ("StartLimitBurst", U32(5)),
        ("Description", Str("A \"quoted\" 100% agent".into())),
    ])
    .unwrap();
    let want = "[Unit]\nDescription=A \"quoted\" 100%% agent\nDocumentation=man:agent-relay-systemd(1)\nStartLimitBurst=5\n\n[Service]\nType=exec\n\n[Install]\nWantedBy=default.target\n";
    assert!(text.ends_with(want), "{text}");
}

#[test]
fn environment_files_read_back_what_render_wrote() {
    let props = vec![
        ("Description", Str("d".into())),
        ("EnvironmentFiles", EnvFiles(vec![("/s/ar-x.1/env".into(), false), ("/s/50%/env".into(), true)])),
    ];
    let text = render(&props).unwrap();
    assert_eq!(environment_files(&text), [std::path::PathBuf::from("/s/ar-x.1/env"), "/s/50%/env".into()]);
    // Only [Service] counts, and an empty assignment resets the list.
    let hand = "[Unit]\nEnvironmentFile=/u\n[Service]\nEnvironmentFile=/a\nEnvironmentFile=\n EnvironmentFile=-/b \n";
    assert_eq!(environment_files(hand), [std::path::PathBuf::from("/b")]);
    assert!(environment_files("[Service]\nExecStart=/x\n").is_empty());
}
