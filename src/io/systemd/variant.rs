//! Conversion of the pure unit generator's values into D-Bus variants.

use zbus::{OwnedVariant, Variant};

use crate::model::unit::Value;

pub fn to_variant(value: &Value) -> OwnedVariant {
    let v: Variant<'static> = match value.clone() {
        Value::Str(s) => Variant::new(s),
        Value::Bool(b) => Variant::new(b),
        Value::U32(n) => Variant::new(n),
        Value::U64(n) => Variant::new(n),
        Value::Strs(v) => Variant::new(v),
        Value::Exec(v) => Variant::new(v),
        Value::EnvFiles(v) => Variant::new(v),
        Value::Bytes(v) => Variant::new(v),
    };
    // Only variants holding file descriptors can fail to be owned; ours hold none.
    v.try_to_owned().expect("variant without fds converts to owned")
}
