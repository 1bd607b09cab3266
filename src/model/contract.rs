//! The JSON contract's version. Every document the CLI prints under `-o json` on its own (an
//! answer, a `watch` line, a `logs --follow` line, the error document) and every agent and guest
//! record (also an element of `list` and `guest list`, which stay bare arrays) carries
//! `schemaVersion`: this one number, for the whole contract, so a reader checks one constant.
//!
//! The rule (README "For programs"): it goes up when a change could make a reader that was
//! correct before misread a document: a field removed or renamed, its type or meaning changed,
//! a value of an enum renamed or removed, or a value added to an enum. Adding a field does not
//! bump it (readers ignore fields they do not know). The schemas in `schema/` are generated
//! from the types (`crate::cli::schema`) and a test fails when they differ from the committed
//! files, so every change of shape is seen in review. Pure: constants and a type.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// The version of the JSON contract this build prints. 1: `watch` lines only, snake_case error
/// kinds. 2: `schemaVersion` everywhere, kebab-case error kinds, numeric `agents` and `dropped`
/// on `ready` and `lagged` events.
pub const SCHEMA_VERSION: u32 = 2;

/// `schemaVersion` of a document: [`SCHEMA_VERSION`] when printed by this build. Serialized as a
/// plain number; its schema is that number as a `const`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SchemaVersion(pub u32);

impl SchemaVersion {
    /// The version this build prints.
    pub const CURRENT: SchemaVersion = SchemaVersion(SCHEMA_VERSION);
}

impl Default for SchemaVersion {
    fn default() -> SchemaVersion {
        SchemaVersion::CURRENT
    }
}

impl JsonSchema for SchemaVersion {
    fn schema_name() -> Cow<'static, str> {
        "SchemaVersion".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The version of the JSON contract (README \"For programs\"): bumped when a field is removed, renamed or changes type or meaning, or an enum value is renamed, removed or added; not when a field is added.",
            "type": "integer",
            "const": SCHEMA_VERSION,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_a_plain_number() {
        assert_eq!(serde_json::to_string(&SchemaVersion::default()).unwrap(), SCHEMA_VERSION.to_string());
        let v: SchemaVersion = serde_json::from_str("1").unwrap();
        assert_eq!(v, SchemaVersion(1));
    }
}
