//! A unit property as plain data: systemd's name and a value in the D-Bus type systemd expects
//! for it (org.freedesktop.systemd1(5)). The leaf every property list (agent, limits, guest,
//! unit file) is built from; the D-Bus layer converts values to variants. Pure.

/// A property value in the D-Bus types systemd expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `s`
    Str(String),
    /// `b`
    Bool(bool),
    /// `u`
    U32(u32),
    /// `t`
    U64(u64),
    /// `as`
    Strs(Vec<String>),
    /// `a(sasb)`: path, argv, ignore-failure (`ExecStart`…: systemd expands `$VAR` in the argv)
    Exec(Vec<(String, Vec<String>, bool)>),
    /// `a(sasas)`: path, argv, flags (`ExecStartEx`…, systemd 243+: `no-env-expand`,
    /// `ignore-failure`, …); see [`crate::model::exec`]
    ExecEx(Vec<(String, Vec<String>, Vec<String>)>),
    /// `a(sb)`: path, ignore-missing
    EnvFiles(Vec<(String, bool)>),
    /// `aay`
    Bytes(Vec<Vec<u8>>),
}

/// One `(name, value)` of a `StartTransientUnit` call.
pub type Property = (&'static str, Value);

/// Looks a property up by name (tests and the unit-file renderer).
pub fn find<'a>(props: &'a [Property], name: &str) -> Option<&'a Value> {
    props.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
}
