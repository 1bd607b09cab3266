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
        Value::ExecEx(v) => Variant::new(v),
        Value::EnvFiles(v) => Variant::new(v),
        Value::Bytes(v) => Variant::new(v),
    };
    // Only variants holding file descriptors can fail to be owned; ours hold none.
    v.try_to_owned().expect("variant without fds converts to owned")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_have_systemds_signatures() {
        let argv = vec!["/bin/r".to_string(), "$X".to_string()];
        let ex = to_variant(&Value::ExecEx(vec![("/bin/r".into(), argv.clone(), vec!["no-env-expand".into()])]));
        assert_eq!(ex.value_signature().to_string(), "a(sasas)");
        let plain = to_variant(&Value::Exec(vec![("/bin/r".into(), argv, false)]));
        assert_eq!(plain.value_signature().to_string(), "a(sasb)");
    }
}
