//! The JSON contract's schemas (schema/): the committed files are exactly what the types
//! generate, each is a valid JSON Schema, and what the binary prints with no manager (errors,
//! `generate`) is valid against them. Rewrite the files after an intended change with
//! `UPDATE_SCHEMA=1 cargo test --locked --test offline schema` and review the diff (README "For
//! programs": what bumps `schemaVersion`).

use std::collections::BTreeSet;
use std::process::Command;

use agent_relay_systemd::cli::schema::{documents, file_text};
use serde_json::json;

use crate::util::bin;
use crate::util::schema::{parse_valid, schema_dir, strict, validate};

#[test]
fn committed_schemas_are_what_the_types_generate() {
    let dir = schema_dir();
    let update = std::env::var_os("UPDATE_SCHEMA").is_some();
    if update {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut stale = Vec::new();
    let mut wanted = BTreeSet::new();
    for d in documents() {
        let file = format!("{}.json", d.name);
        let path = dir.join(&file);
        let want = file_text(&d.schema);
        wanted.insert(file.clone());
        if update {
            std::fs::write(&path, &want).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
            stale.push(file);
        }
    }
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    for extra in present.iter().filter(|f| f.ends_with(".json") && !wanted.contains(*f)) {
        if update {
            std::fs::remove_file(dir.join(extra)).unwrap();
        } else {
            stale.push(format!("{extra} (no type generates it)"));
        }
    }
    assert!(
        stale.is_empty(),
        "schema/ differs from what the types generate: {stale:?}\n\
         If the change is intended, run `UPDATE_SCHEMA=1 cargo test --locked --test offline schema`, review \
         the diff, bump SCHEMA_VERSION (src/model/contract.rs) by the rule in README \"For programs\", \
         and regenerate the TypeScript types (cd clients/typescript && npm run generate)."
    );
}

#[test]
fn every_schema_is_a_valid_json_schema_also_when_strict() {
    for d in documents() {
        jsonschema::meta::validate(&d.schema).unwrap_or_else(|e| panic!("{}: {e}", d.name));
        jsonschema::validator_for(&strict(d.schema.clone())).unwrap_or_else(|e| panic!("{} (strict): {e}", d.name));
    }
}

#[test]
fn a_field_the_schema_does_not_name_fails_the_strict_check() {
    let doc = json!({"schemaVersion": 2, "error": {"kind": "invalid", "message": "m", "exitCode": 2}});
    validate("error", &doc);
    let mut extra = doc.clone();
    extra["error"]["hint"] = json!("printed but not in the schema");
    let schema = crate::util::schema::committed("error");
    assert!(jsonschema::is_valid(&schema, &extra), "the committed schema is open");
    assert!(!jsonschema::is_valid(&strict(schema), &extra), "the tests' check is strict");
}

#[test]
fn spawn_requests_the_cli_accepts_or_refuses_are_so_in_the_schema() {
    let ok = json!({"provider": "claude", "cwd": "/p", "label": "x", "taskId": 7, "lifecycle": "ephemeral",
                    "env": {"K": "v"}, "limits": {"memoryMax": "2G", "cpuQuota": 150}, "tags": ["a"],
                    "agentProfile": {"env": {"A": "b"}}, "replayPromptOnRestart": true});
    validate("spawn-request", &ok);
    let schema = crate::util::schema::committed("spawn-request");
    for bad in [
        json!({"cwd": "/p"}),
        json!({"provider": "claude", "cwd": "/p", "lable": "typo"}),
        json!({"provider": "claude", "cwd": "/p", "lifecycle": "forever"}),
        json!({"provider": "claude", "cwd": "/p", "limits": {"memory": 1}}),
    ] {
        assert!(!jsonschema::is_valid(&schema, &bad), "the schema accepts {bad}");
        let out = Command::new(bin())
            .env_clear()
            .env("HOME", "/nonexistent")
            .args(["generate", "-o", "json", "--config", "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(bad.to_string().as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "the CLI accepts {bad}");
        parse_valid("error", &out.stdout);
    }
}

#[test]
fn what_the_binary_prints_with_no_manager_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    std::fs::create_dir_all(home.join("projects/app")).unwrap();
    let config = home.join("orchestrator.json");
    let cfg = json!({"baseDir": home.join("projects"), "runnerCommand": ["/bin/true"], "token": "t"});
    std::fs::write(&config, cfg.to_string()).unwrap();
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut c = Command::new(bin())
            .env_clear()
            .env("HOME", home)
            .env("XDG_RUNTIME_DIR", home)
            .arg("--config")
            .arg(&config)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    };
    let req = json!({"provider": "claude", "cwd": home.join("projects/app"), "spawnRequestId": "schema-1"});
    let out = run(&["generate", "-o", "json"], &req.to_string());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let g = parse_valid("generate-answer", &out.stdout);
    assert!(g["text"].as_str().unwrap().contains("[Service]"), "{g}");

    // No manager: exit 5, kind `manager-unreachable`; a command line clap refuses: `invalid`.
    let out = run(&["list", "-o", "json"], "");
    assert_eq!(out.status.code(), Some(5));
    let e = parse_valid("error", &out.stdout);
    assert_eq!((e["error"]["kind"].as_str(), e["error"]["exitCode"].as_u64()), (Some("manager-unreachable"), Some(5)));
    let out = run(&["show", "-o", "json"], "");
    assert_eq!(parse_valid("error", &out.stdout)["error"]["kind"], "invalid");
    let out = run(&["show", "x", "-o", "json", "--timeout", "nan"], "");
    assert_eq!(parse_valid("error", &out.stdout)["error"]["kind"], "invalid");
}

#[test]
fn enum_values_are_kebab_case_everywhere() {
    // Every string a schema enumerates (error kinds, exit kinds, event types, reap actions,
    // liveness, lifecycles, doctor statuses) is spelled in kebab-case.
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("enum", serde_json::Value::Array(a)) => {
                            out.extend(a.iter().filter_map(|s| s.as_str().map(str::to_string)))
                        }
                        ("const", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut values = Vec::new();
    for d in documents() {
        walk(&d.schema, &mut values);
    }
    assert!(values.iter().any(|v| v == "not-found") && values.iter().any(|v| v == "crash-loop"), "{values:?}");
    for v in values {
        assert!(
            !v.is_empty() && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{v:?} is not kebab-case"
        );
    }
}
