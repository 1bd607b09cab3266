//! Per-agent resource limits: parsed from the spawn request or the config's defaults, turned into
//! unit properties, and read back into the record. Pure.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Limits as written in a request or config (`"2G"`, `1073741824`, `200` percent of one CPU).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_high: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_max: Option<u64>,
    /// Percent of one CPU (`200` = two CPUs), as systemd's `CPUQuota=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<u32>,
}

/// A byte size: a number, or a string with a K/M/G/T suffix (base 1024, as systemd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            Size::Bytes(0) => Err("must be greater than 0".into()),
            Size::Bytes(n) => Ok(*n),
            Size::Text(t) => parse_size(t),
        }
    }
}

/// `512M`, `2G`, `1.5G`, `1048576`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, mult) = match t.chars().last() {
        Some(c @ ('K' | 'M' | 'G' | 'T' | 'k' | 'm' | 'g' | 't')) => {
            let exp = "KMGT".find(c.to_ascii_uppercase()).unwrap_or(0) as u32 + 1;
            (&t[..t.len() - 1], 1024u64.pow(exp))
        }
        _ => (t, 1),
    };
    let value: f64 = num.trim().parse().map_err(|_| format!("{text:?} is not a size (use bytes or K/M/G/T)"))?;
    let bytes = value * mult as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("{text:?} is not a positive size"));
    }
    Ok(bytes as u64)
}

/// The effective limits, in systemd's units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub memory_max: Option<u64>,
    pub memory_high: Option<u64>,
    pub tasks_max: Option<u64>,
    pub cpu_quota_percent: Option<u32>,
}

/// Request limits over config defaults, validated.
pub fn resolve(request: Option<&LimitsSpec>, defaults: Option<&LimitsSpec>) -> Result<Limits, String> {
    let pick = |f: fn(&LimitsSpec) -> Option<Size>, name: &str| -> Result<Option<u64>, String> {
        match request.and_then(f).or_else(|| defaults.and_then(f)) {
            Some(s) => s.bytes().map(Some).map_err(|e| format!("limits.{name}: {e}")),
            None => Ok(None),
        }
    };
    let memory_max = pick(|l| l.memory_max.clone(), "memoryMax")?;
    let memory_high = pick(|l| l.memory_high.clone(), "memoryHigh")?;
    let tasks_max = request.and_then(|l| l.tasks_max).or_else(|| defaults.and_then(|l| l.tasks_max));
    let cpu = request.and_then(|l| l.cpu_quota).or_else(|| defaults.and_then(|l| l.cpu_quota));
    if tasks_max == Some(0) {
        return Err("limits.tasksMax must be greater than 0".into());
    }
    if matches!(cpu, Some(0) | Some(100_001..)) {
        return Err("limits.cpuQuota is percent of one CPU: 1 to 100000".into());
    }
    if let (Some(high), Some(max)) = (memory_high, memory_max) {
        if high > max {
            return Err("limits.memoryHigh must not exceed limits.memoryMax".into());
        }
    }
    Ok(Limits { memory_max, memory_high, tasks_max, cpu_quota_percent: cpu })
}

/// Unit properties for the limits (systemd.resource-control(5)).
pub fn properties(l: &Limits) -> Vec<crate::model::property::Property> {
    use crate::model::property::Value::U64;
    let mut out = Vec::new();
    if let Some(v) = l.memory_max {
        out.push(("MemoryMax", U64(v)));
    }
    if let Some(v) = l.memory_high {
        out.push(("MemoryHigh", U64(v)));
    }
    if let Some(v) = l.tasks_max {
        out.push(("TasksMax", U64(v)));
    }
    if let Some(p) = l.cpu_quota_percent {
        out.push(("CPUQuotaPerSecUSec", U64(p as u64 * 10_000)));
    }
    out
}

/// The limits as systemd reports them (`u64::MAX` is "infinity", i.e. none).
pub fn from_properties(memory_max: u64, memory_high: u64, tasks_max: u64, cpu_quota_usec: u64) -> Limits {
    let set = |v: u64| (v != u64::MAX).then_some(v);
    Limits {
        memory_max: set(memory_max),
        memory_high: set(memory_high),
        tasks_max: set(tasks_max),
        cpu_quota_percent: set(cpu_quota_usec).map(|us| (us / 10_000) as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_size("1.5G"), Ok(1536 * 1024 * 1024));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn request_over_defaults_and_round_trip() {
        let req = LimitsSpec { memory_max: Some(Size::Text("2G".into())), ..Default::default() };
        let def = LimitsSpec {
            memory_max: Some(Size::Bytes(1)),
            tasks_max: Some(64),
            cpu_quota: Some(150),
            ..Default::default()
        };
        let l = resolve(Some(&req), Some(&def)).unwrap();
        assert_eq!(
            l,
            Limits { memory_max: Some(2 << 30), memory_high: None, tasks_max: Some(64), cpu_quota_percent: Some(150) }
        );
        assert_eq!(from_properties(2 << 30, u64::MAX, 64, 1_500_000), l);
        assert_eq!(properties(&l).len(), 3);
    }

    #[test]
    fn bad_limits_are_errors() {
        let high =
            LimitsSpec { memory_max: Some(Size::Bytes(10)), memory_high: Some(Size::Bytes(20)), ..Default::default() };
        assert!(resolve(Some(&high), None).unwrap_err().contains("memoryHigh"));
        let cpu = LimitsSpec { cpu_quota: Some(0), ..Default::default() };
        assert!(resolve(Some(&cpu), None).is_err());
    }
}
