//! The JSON contract as JSON Schemas (draft 2020-12), generated from the types the CLI reads
//! and prints: one document per input and output, committed as `schema/<name>.json`. A test
//! (tests/offline/schema.rs) fails when the committed files differ from what the types generate;
//! `UPDATE_SCHEMA=1 cargo test --locked --test offline schema` rewrites them (review the diff and
//! bump [`SCHEMA_VERSION`](crate::model::contract::SCHEMA_VERSION) by its rule). Outputs are
//! described as they are serialised (every key of a record present, null when unset), the spawn
//! request as it is read (unknown fields refused).

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::Value;

use crate::cli::render::{AgentList, GuestList, LogLine, Sent};
use crate::cli::ErrorDocument;
use crate::doctor::Report;
use crate::model::record::AgentRecord;
use crate::model::request::SpawnRequest;
use crate::ops::diagnose::Diagnosis;
use crate::ops::durable::{Generated, RemoveOutcome};
use crate::ops::generate::DryRun;
use crate::ops::guests::{GuestRecord, GuestStop};
use crate::ops::logs::LogTail;
use crate::ops::reap::ReapReport;
use crate::ops::stop::KillOutcome;
use crate::ops::terminal::{Capture, Resized};
use crate::ops::watch::WatchEvent;
use crate::ops::{SpawnOutcome, StopOutcome};

/// One schema of the contract.
#[derive(Debug, Clone)]
pub struct Document {
    /// The file name without `.json` (`agent-record`).
    pub name: &'static str,
    /// The document's title (also the generated TypeScript type's name).
    pub title: &'static str,
    /// Which verb reads or prints it.
    pub used_by: &'static str,
    pub schema: Value,
}

/// Every document of the contract, in a fixed order.
pub fn documents() -> Vec<Document> {
    vec![
        input::<SpawnRequest>(
            "spawn-request",
            "SpawnRequest",
            "`spawn`, `spawn --persist`, `generate` (stdin or --spec)",
        ),
        output::<SpawnOutcome>("spawn-answer", "SpawnAnswer", "`spawn`, `spawn --persist`, `start`"),
        output::<AgentRecord>("agent-record", "AgentRecord", "`show`; each element of `list`"),
        output::<AgentList>("agent-list", "AgentList", "`list` (a bare array)"),
        output::<StopOutcome>("stop-answer", "StopAnswer", "`stop`"),
        output::<crate::ops::restart::RestartOutcome>("restart-answer", "RestartAnswer", "`restart`"),
        output::<crate::ops::resources::TopFrame>("top-frame", "TopFrame", "`top` (one per line)"),
        output::<crate::ops::status::Status>("status", "StatusAnswer", "`status`"),
        output::<KillOutcome>("kill-answer", "KillAnswer", "`kill`"),
        output::<RemoveOutcome>("remove-answer", "RemoveAnswer", "`remove`"),
        output::<Generated>("generate-answer", "GenerateAnswer", "`generate`"),
        output::<DryRun>("generate-dry-run", "GenerateDryRun", "`generate --dry-run`"),
        output::<Diagnosis>("diagnosis", "Diagnosis", "`diagnose`, `wait`"),
        output::<LogTail>("logs-answer", "LogsAnswer", "`logs`"),
        output::<LogLine<'static>>("log-line", "LogLine", "`logs --follow` (one per line)"),
        output::<WatchEvent>("watch-event", "WatchEvent", "`watch` (one per line)"),
        output::<GuestRecord>("guest-record", "GuestRecord", "`guest create`; each element of `guest list`"),
        output::<GuestList>("guest-list", "GuestList", "`guest list` (a bare array)"),
        output::<GuestStop>("guest-stop", "GuestStopAnswer", "`guest stop`"),
        output::<Capture>("capture", "Capture", "`terminal capture`"),
        output::<Sent>("send-answer", "SendAnswer", "`terminal send`"),
        output::<Resized>("resize-answer", "ResizeAnswer", "`terminal resize`"),
        output::<ReapReport>("reap-summary", "ReapSummary", "`reap`"),
        output::<Report>("doctor-report", "DoctorReport", "`doctor`"),
        output::<ErrorDocument>(
            "error",
            "ErrorDocument",
            "every verb that fails, on stdout (exit code in `error.exitCode`)",
        ),
    ]
}

/// The document named `name` (`agent-record`).
pub fn document(name: &str) -> Option<Document> {
    documents().into_iter().find(|d| d.name == name)
}

/// A schema's file text: pretty JSON, keys sorted, one trailing newline.
pub fn file_text(schema: &Value) -> String {
    let mut s = serde_json::to_string_pretty(schema).expect("a schema serializes");
    s.push('\n');
    s
}

fn output<T: JsonSchema>(name: &'static str, title: &'static str, used_by: &'static str) -> Document {
    document_of::<T>(SchemaSettings::draft2020_12().for_serialize(), name, title, used_by)
}

fn input<T: JsonSchema>(name: &'static str, title: &'static str, used_by: &'static str) -> Document {
    document_of::<T>(SchemaSettings::draft2020_12().for_deserialize(), name, title, used_by)
}

fn document_of<T: JsonSchema>(
    settings: SchemaSettings,
    name: &'static str,
    title: &'static str,
    used_by: &'static str,
) -> Document {
    let mut schema = settings.into_generator().into_root_schema_for::<T>().to_value();
    if let Value::Object(m) = &mut schema {
        m.insert("title".into(), title.into());
        m.insert("$comment".into(), format!("agent-relay-systemd {used_by}; generated from the Rust types").into());
    }
    Document { name, title, used_by, schema }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_output_names_its_version_and_every_name_is_unique() {
        let docs = documents();
        let mut names: Vec<&str> = docs.iter().map(|d| d.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), docs.len());
        for d in docs.iter().filter(|d| d.name != "spawn-request") {
            let props = match d.name {
                "agent-list" | "guest-list" => {
                    &d.schema["$defs"][d.schema["items"]["$ref"].as_str().unwrap().trim_start_matches("#/$defs/")]
                        ["properties"]
                }
                _ => &d.schema["properties"],
            };
            assert_eq!(
                props["schemaVersion"]["const"],
                crate::model::contract::SCHEMA_VERSION,
                "{}: {:#}",
                d.name,
                d.schema
            );
        }
    }
}
