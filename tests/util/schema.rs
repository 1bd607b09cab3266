//! The JSON contract in the tests: every JSON document the binary prints is checked against its
//! committed schema, `schema/<name>.json`, so the schemas cannot drift from what is printed.
//!
//! The committed schemas are open (a reader must ignore fields it does not know: adding one does
//! not bump `schemaVersion`); here they are made strict first: every object schema that lists its
//! properties refuses others, so a field printed but missing from the schema fails the test.

use std::path::PathBuf;

use serde_json::Value;

/// `schema/` of this checkout.
pub fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema")
}

/// The committed schema `schema/<name>.json`.
pub fn committed(name: &str) -> Value {
    let path = schema_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// `schema` with `additionalProperties: false` on every object schema that has `properties` and
/// says nothing about others.
pub fn strict(mut schema: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                if m.contains_key("properties") && !m.contains_key("additionalProperties") {
                    m.insert("additionalProperties".into(), Value::Bool(false));
                }
                m.values_mut().for_each(walk);
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut schema);
    schema
}

/// Panics, listing every violation, unless `value` is a valid `name` document (strictly: no
/// field the schema does not name).
pub fn validate(name: &str, value: &Value) {
    let schema = strict(committed(name));
    let validator =
        jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("schema/{name}.json is not a valid schema: {e}"));
    let errors: Vec<String> =
        validator.iter_errors(value).map(|e| format!("  at {:?}: {e}", e.instance_path().as_str())).collect();
    assert!(errors.is_empty(), "not a valid {name} document:\n{}\n{value:#}", errors.join("\n"));
}

/// Parses `bytes` as one JSON document and validates it as `name`; returns it.
pub fn parse_valid(name: &str, bytes: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {}", String::from_utf8_lossy(bytes)));
    validate(name, &v);
    v
}
