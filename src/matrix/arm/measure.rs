//! After the drain: the service and the instances stopped, then what the service declared,
//! what Postgres and the providers counted, and the exactly-once invariant over the database.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use fake_providers::Provider;
use loadgen::Recording;

use super::super::invariant::{
    check_invariant, rows_since, rows_written, wait_for_sessions_to_end,
};
use super::counts_scopes;
use super::load::Loaded;
use super::start::Started;
use crate::model::{Arm, FleetReport, Scenario};
use crate::postgres::PgServer;
use crate::report::{ArmTimings, Invariants};
use crate::service_proc::Scrape;

/// The end state, counted.
pub(super) struct Measured {
    /// Rows written and external calls, as the service declared them.
    pub declared: (f64, f64),
    pub scopes_at_end: u64,
    pub restarts: u32,
    pub fleet: Option<FleetReport>,
    pub refused_clients: Option<u64>,
    /// Speculative insertions killed (the service deletes no row).
    pub killed: u64,
    pub rows_by_table: BTreeMap<String, u64>,
    pub measured_rows: u64,
    pub measured_calls: u64,
    pub recording: Recording,
    pub invariants: Invariants,
    pub disconnected: Vec<i64>,
}

/// Stops what the arm started and counts what it did.
#[allow(clippy::too_many_arguments)]
pub(super) async fn measure(
    scenario: &Scenario,
    server: &PgServer,
    db: &str,
    arm: &Arm,
    out: &Path,
    started: Started,
    loaded: &Loaded,
    last: &Scrape,
    timings: &mut ArmTimings,
) -> anyhow::Result<Measured> {
    let Started {
        fakes,
        disconnected,
        rows_before,
        effects_before,
        proxy: _proxy,
        pooler,
        service,
        fleet,
        ..
    } = started;
    let load_start = loaded.load_start;
    let played = &loaded.played;
    let stop_start = Instant::now();

    // What the service declared, then what Postgres and the providers counted.
    let declared = last.writes_and_calls();
    let scopes_at_end = counts_scopes(server, db).await?;
    let restarts = service.restarts();
    if let Some(p) = service.take().await {
        p.stop().await;
    }
    let fleet = match fleet {
        Some(f) => {
            // On the load's clock, as the timeline.
            let before_load = load_start.duration_since(f.started_at()).as_secs_f64();
            let mut report = f.stop().await;
            for (t, _) in &mut report.instances {
                *t = (*t - before_load).max(0.0);
            }
            Some(report)
        }
        None => None,
    };
    // PgBouncer holds its server connections until it stops.
    let refused_clients = pooler.map(|p| {
        let refused = p
            .errors_logged()
            .iter()
            .filter(|l| l.contains("no more connections allowed"))
            .count() as u64;
        p.stop();
        refused
    });
    wait_for_sessions_to_end(server, db, Duration::from_secs(10)).await?;
    timings.stop_s = stop_start.elapsed().as_secs_f64();
    let since = rows_since(&rows_before, &rows_written(server, db).await?);
    // The service deletes no row: every delete counted is a killed speculative insertion.
    let killed: u64 = since.deleted.values().sum();
    let mut rows_by_table = since.written;
    // The rows the harness's own probes wrote (rolled back, still counted by Postgres).
    for (table, n) in &played.harness_rows {
        if let Some(v) = rows_by_table.get_mut(table) {
            *v = v.saturating_sub(*n);
        }
    }
    let measured_rows = rows_by_table.values().sum();
    let measured_calls = fakes.calls();
    let ghl_ok_by_key = fakes
        .fakes
        .counters()
        .ok_by_key
        .remove(&Provider::Ghl)
        .unwrap_or_default();
    drop(fakes);

    let recording = loaded.recording.lock().expect("recording lock").clone();
    let mut invariants = check_invariant(
        server,
        db,
        &recording,
        (last.queue_queued + last.queue_running) as u64,
        effects_before,
        &ghl_ok_by_key,
    )
    .await?;
    let legacy_path = !arm.switches.email_sent_async
        || scenario
            .flips
            .iter()
            .any(|f| f.flag == inbox_service::Flag::EmailSentAsync && !f.to);
    let cut = scenario.faults.iter().any(|f| f.kind().cuts());
    if legacy_path && (!scenario.faults.is_empty() || !scenario.flips.is_empty()) {
        super::super::invariant::ghl_at_least_once(
            &mut invariants,
            "the legacy EMAIL_SENT path calls GHL inside its transaction: a request cut after the call (a fault, the function limit) and retried calls it again",
        );
    } else if cut {
        super::super::invariant::ghl_at_least_once(
            &mut invariants,
            "the outbox calls GHL, then marks its row done: a crash or a cut connection between the two makes the retry call again, as any outbox delivers at least once",
        );
    }
    super::super::invariant::ledger_best_effort(
        &mut invariants,
        last.ledger.get("skipped").copied().unwrap_or(0.0) as u64,
    );
    std::fs::write(
        out.join(format!("arm-{}.recording.json", arm.name)),
        serde_json::to_string(&recording)?,
    )?;

    Ok(Measured {
        declared,
        scopes_at_end,
        restarts,
        fleet,
        refused_clients,
        killed,
        rows_by_table,
        measured_rows,
        measured_calls,
        recording,
        invariants,
        disconnected,
    })
}
