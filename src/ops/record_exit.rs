//! The exit recorder our units run as `ExecStopPost=`: turns `$SERVICE_RESULT`, `$EXIT_CODE`,
//! `$EXIT_STATUS` and `$INVOCATION_ID` into an [`ExitRecord`], adds what the manager still knows
//! (start/exit time, restarts, pid) when it answers within a short bound, and stores it.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::io::host::HostEnv;
use crate::io::systemd::{self, BusOptions, Manager};
use crate::model::exit::{ExitRecord, RECORD_SCHEMA};

/// How long the recorder may spend asking the manager; the record is written without those
/// details when it does not answer.
pub const ENRICH_TIMEOUT: Duration = Duration::from_secs(2);

/// What the unit's `ExecStopPost=` command line carries.
#[derive(Debug, Clone)]
pub struct RecordArgs {
    pub dir: PathBuf,
    pub unit: String,
    pub session: String,
    pub agent_id: String,
    pub provider: String,
    pub log_file: String,
    pub spawn_request_id: Option<String>,
}

/// Builds the record from the variables systemd passes (pure).
pub fn record_from_env(args: &RecordArgs, var: &dyn Fn(&str) -> Option<String>, now_ms: u64) -> ExitRecord {
    ExitRecord {
        schema_version: RECORD_SCHEMA,
        unit: args.unit.clone(),
        session_name: args.session.clone(),
        agent_id: args.agent_id.clone(),
        provider: args.provider.clone(),
        log_file: args.log_file.clone(),
        spawn_request_id: args.spawn_request_id.clone(),
        invocation_id: var("INVOCATION_ID").unwrap_or_default(),
        service_result: var("SERVICE_RESULT").unwrap_or_default(),
        exit_code: var("EXIT_CODE").unwrap_or_default(),
        exit_status: var("EXIT_STATUS").unwrap_or_default(),
        recorded_at: now_ms,
        started_at: None,
        exited_at: None,
        main_pid: None,
        restarts: None,
    }
}

/// Records the exit; returns the file written.
pub async fn record_exit(args: &RecordArgs, host: &HostEnv) -> Result<PathBuf, Error> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let now_ms = crate::ops::now_ms();
    let mut rec = record_from_env(args, &var, now_ms);
    if let Ok(Ok(snap)) = tokio::time::timeout(ENRICH_TIMEOUT, read_unit(host, &args.unit)).await {
        let ms = |us: u64| (us > 0).then_some(us / 1000);
        rec.started_at = ms(snap.exec_main_start_us);
        rec.exited_at = ms(snap.exec_main_exit_us);
        rec.main_pid = (snap.exec_main_pid > 0).then_some(snap.exec_main_pid);
        rec.restarts = Some(snap.n_restarts);
    }
    crate::io::exit_store::write(&args.dir, &rec)
}

async fn read_unit(host: &HostEnv, unit: &str) -> Result<crate::model::record::UnitSnapshot, Error> {
    let opts = BusOptions {
        session_address: host.session_bus.clone(),
        runtime_dir: host.runtime_dir.clone(),
        timeout: ENRICH_TIMEOUT,
    };
    let mgr = Manager::unsubscribed(systemd::connect(&opts).await?, ENRICH_TIMEOUT).await?;
    let path = mgr.unit_path(unit).await?.ok_or_else(|| Error::NotFound { reference: unit.to_string() })?;
    mgr.snapshot(unit, &path).await
}
