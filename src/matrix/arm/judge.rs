//! The arm's verdict: its per-endpoint figures, the load generator's health, the accounting of
//! writes and calls, the checks its expectation asks for (and the ones a fault makes
//! impossible, skipped with the reason), the flips' effects, the steady-state hypothesis, and
//! the report.

use std::collections::BTreeMap;

use anyhow::Context;
use loadgen::Plan;
use sqlx::Connection;

use super::super::figures::{background, endpoint_reports, load_health};
use super::super::gate;
use super::super::invariant::connect;
use super::super::verdict::{
    abort_check, accounting, accounting_check, cron_check, gate_check, judge, load_check, status,
    Unfinished, ACCOUNTING_CHECK,
};
use super::load::Loaded;
use super::measure::Measured;
use crate::model::{Arm, Scenario};
use crate::postgres::PgServer;
use crate::report::{ArmReport, ArmTimings, Skipped, TimelinePoint};
use crate::service_proc::Scrape;

/// The arm's report from what was measured.
#[allow(clippy::too_many_arguments)]
pub(super) async fn report(
    scenario: &Scenario,
    server: &PgServer,
    db: &str,
    arm: &Arm,
    plan: &Plan,
    loaded: Loaded,
    scrapes: &[Scrape],
    last: &Scrape,
    measured: Measured,
    scopes_at_start: u64,
) -> anyhow::Result<ArmReport> {
    let Loaded {
        summary,
        reconnected,
        played,
        cpu,
        aborted,
        ..
    } = loaded;
    let Measured {
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
    } = measured;
    let errors: BTreeMap<String, u64> = last
        .errors
        .iter()
        .map(|(k, v)| (k.clone(), *v as u64))
        .collect();
    let statement_timeouts = errors.get("db_timeout").copied().unwrap_or(0);
    let offset_s = loadgen::engine::START_DELAY.as_secs_f64();
    let endpoints = endpoint_reports(scenario, &recording, scrapes, offset_s);
    let load = load_health(scenario, plan, &recording, cpu);
    let mut accounting = accounting(
        (declared.0 as u64, declared.1 as u64),
        (measured_rows, measured_calls),
        &unfinished(
            last,
            &endpoints,
            errors.get("client_abort").copied().unwrap_or(0),
        ),
        killed,
    );
    accounting.rows_by_table = rows_by_table;
    let mut checks = vec![load_check(&load)];
    checks.extend(aborted.as_ref().map(abort_check));
    checks.extend(judge(
        scenario,
        arm.expect,
        &endpoints,
        statement_timeouts,
        &invariants,
    ));
    // A connection cut mid-commit (a reset, a hang, a crash) can lose the commit's
    // acknowledgment: Postgres counts rows the service could not declare; a service killed
    // and restarted starts its counters again. That check cannot be made then.
    let mut skipped = Vec::new();
    let cut: Vec<&str> = scenario
        .faults
        .iter()
        .filter(|f| f.kind().cuts())
        .map(|f| f.kind().name())
        .collect();
    if cut.is_empty() {
        checks.push(accounting_check(&accounting));
    } else {
        skipped.push(Skipped {
            check: ACCOUNTING_CHECK.into(),
            reason: format!(
                "faults ({}) cut connections or the service mid-commit: a commit whose acknowledgment was lost is counted by Postgres and not declared, and a restarted service counts from zero (measured: {}; service restarts: {restarts})",
                cut.join(", "),
                accounting_check(&accounting).detail
            ),
        });
    }
    let end_s = scenario.duration.as_secs() as u32;
    let budgets = crate::chaos::hypothesis::budgeted(scenario);
    let mut flips = played.flips;
    for (i, f) in flips.iter_mut().enumerate() {
        let from = f.at_s.floor() as u32;
        let until = flips_end(scenario, i, end_s);
        if f.made {
            f.effects = crate::chaos::hypothesis::flip_effects(
                &recording,
                &budgets,
                scenario.hypothesis.map_or(1.0, |h| h.max_failed_pct),
                from,
                until,
            );
        }
    }
    checks.extend(rollout_checks(server, db, scenario, &flips, &played.flipped_at).await?);
    let hypothesis = scenario.hypothesis.map(|h| {
        crate::chaos::hypothesis::judge(
            &recording,
            &budgets,
            &h,
            end_s,
            played.not_steady.is_some(),
        )
    });
    if let Some(h) = &hypothesis {
        checks.extend(crate::chaos::hypothesis::checks(h));
    }
    let mut background = background(scenario, scrapes);
    background.counts_scopes_at_start = scopes_at_start;
    background.counts_scopes_at_end = scopes_at_end;
    // A fault that slows Postgres or the link slows every tick: deviation during it is
    // expected, and the steady-state hypothesis judges the run; the ticks are shown.
    let slowed: Vec<&str> = scenario
        .faults
        .iter()
        .filter(|f| {
            matches!(
                f.kind().target(),
                crate::model::FaultTarget::Link | crate::model::FaultTarget::Postgres
            )
        })
        .map(|f| f.kind().name())
        .collect();
    match cron_check(&background) {
        Some(c) if !slowed.is_empty() => skipped.push(Skipped {
            check: c.name,
            reason: format!(
                "faults ({}) slowed the database under the ticks; the steady-state hypothesis judges this run (measured: {})",
                slowed.join(", "),
                c.detail
            ),
        }),
        c => checks.extend(c),
    }
    let reconnect = match (&reconnected, scenario.reconnect) {
        (Some(r), Some(spec)) => Some(
            gate::report(
                server,
                db,
                r,
                gate::readmission_bound(scenario, spec.at, disconnected.len()),
            )
            .await
            .context("reading the health gate's skips")?,
        ),
        _ => None,
    };
    if arm.switches.unipile_health_gate {
        checks.extend(reconnect.as_ref().map(gate_check));
    }
    let status = status(&checks);
    Ok(ArmReport {
        name: arm.name.clone(),
        flags: arm
            .switches
            .to_map()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        expect: arm.expect,
        status,
        as_expected: status == crate::report::ArmStatus::AsExpected,
        checks,
        late_arrivals: endpoints.iter().map(|e| e.late).sum(),
        unsent: summary.unsent,
        endpoints,
        error_categories: errors,
        statement_timeouts,
        load,
        accounting,
        invariants,
        background,
        reconnect,
        timeline: timeline_of(scrapes),
        fleet: fleet.map(|f| fleet_report(f, scenario, scrapes, refused_clients)),
        goose: summary.goose,
        timings: ArmTimings::default(),
        skipped,
        faults: played.faults,
        flips,
        hypothesis,
        aborted,
    })
}

/// The scrapes as the report's timeline: pools, queue, and with a fleet its instances and the
/// pooler's figures (the wait per transaction over each second).
fn timeline_of(scrapes: &[crate::service_proc::Scrape]) -> Vec<TimelinePoint> {
    let mut previous: Option<&crate::service_proc::PoolerScrape> = None;
    scrapes
        .iter()
        .map(|s| {
            let fleet = s.fleet.as_ref();
            let pooler = fleet.and_then(|f| f.pooler.as_ref());
            let wait = match (pooler, previous) {
                (Some(now), Some(before)) if now.transactions > before.transactions => Some(
                    (now.wait_s - before.wait_s).max(0.0) * 1000.0
                        / (now.transactions - before.transactions),
                ),
                (Some(_), _) => Some(0.0),
                _ => None,
            };
            if pooler.is_some() {
                previous = pooler;
            }
            TimelinePoint {
                t: s.t,
                pool_in_use: s.pool_in_use(),
                pool_max: s.pool_max,
                pool_waiters: s.pool_waiters,
                queue_depth: s.queue_queued + s.queue_running,
                instances: fleet.map(|f| f.instances),
                instance_pool_in_use: fleet
                    .map(|f| f.pool_in_use.values().copied().collect())
                    .unwrap_or_default(),
                pooler_cl_waiting: pooler.map(|p| p.cl_waiting),
                pooler_sv_active: pooler.map(|p| p.sv_active),
                pooler_wait_ms: wait,
            }
        })
        .collect()
}

/// The fleet's own account, with the most connections each instance held and the pooler's
/// figures over the arm.
fn fleet_report(
    mut report: crate::model::FleetReport,
    scenario: &Scenario,
    scrapes: &[crate::service_proc::Scrape],
    refused_clients: Option<u64>,
) -> crate::model::FleetReport {
    for f in scrapes.iter().filter_map(|s| s.fleet.as_ref()) {
        for (&i, &n) in &f.pool_in_use {
            let i = i as usize;
            if report.connections_max.len() <= i {
                report.connections_max.resize(i + 1, 0.0);
            }
            report.connections_max[i] = report.connections_max[i].max(n);
        }
    }
    if let Some(spec) = &scenario.pooler {
        let seen: Vec<&crate::service_proc::PoolerScrape> = scrapes
            .iter()
            .filter_map(|s| s.fleet.as_ref()?.pooler.as_ref())
            .collect();
        let max = |f: fn(&crate::service_proc::PoolerScrape) -> f64| {
            seen.iter().map(|p| f(p)).fold(0.0, f64::max)
        };
        let last = seen.last().copied().cloned().unwrap_or_default();
        report.pooler = Some(crate::model::PoolerReport {
            pool_mode: spec.pool_mode.clone(),
            default_pool_size: spec.default_pool_size,
            max_client_conn: spec.max_client_conn,
            cl_waiting_max: max(|p| p.cl_waiting),
            sv_active_max: max(|p| p.sv_active),
            maxwait_max_ms: max(|p| p.maxwait_s) * 1000.0,
            wait_per_transaction_ms: if last.transactions > 0.0 {
                last.wait_s * 1000.0 / last.transactions
            } else {
                0.0
            },
            transactions: last.transactions,
            refused_clients: refused_clients.unwrap_or(0),
        });
    }
    report
}

/// The end of flip `i`'s stretch: the next flip, or the end of the load.
fn flips_end(scenario: &Scenario, i: usize, end: u32) -> u32 {
    scenario
        .flips
        .get(i + 1)
        .map_or(end, |next| next.at.as_secs() as u32)
}

/// For each flip validated on the queue's writes and made: EMAIL_SENT jobs were queued after
/// it (the rollout's "validate queue writes, then enable": the queue took the load it was
/// switched to). A flip that was not made fails its check.
async fn rollout_checks(
    server: &PgServer,
    db: &str,
    scenario: &Scenario,
    flips: &[crate::report::FlipApplied],
    flipped_at: &BTreeMap<usize, chrono::DateTime<chrono::Utc>>,
) -> anyhow::Result<Vec<crate::report::Check>> {
    let mut out = Vec::new();
    for (i, (spec, made)) in scenario.flips.iter().zip(flips).enumerate() {
        let name = format!("flip {} → {} at {:.0}s", spec.flag, spec.to, made.at_s);
        if !made.made {
            out.push(crate::report::Check {
                name,
                passed: false,
                detail: format!("not made: {}", made.detail),
            });
            continue;
        }
        let (Some(at), true) = (
            flipped_at.get(&i),
            spec.validate
                .contains(&crate::model::FlipValidation::QueueWrites),
        ) else {
            continue;
        };
        let mut conn = connect(server, db).await?;
        let queued: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM background_jobs WHERE kind = $1 AND created_at >= $2",
        )
        .bind(inbox_service::domain::jobs::EMAIL_SENT)
        .bind(*at)
        .fetch_one(&mut conn)
        .await?;
        conn.close().await?;
        out.push(crate::report::Check {
            name,
            passed: queued > 0 || !spec.to,
            detail: format!("{}; {queued} EMAIL_SENT jobs queued after it", made.detail),
        });
    }
    Ok(out)
}

/// The label prefix of the cron routes, whose ticks run jobs side by side.
const CRON_ROUTES: &str = "GET /api/cron/";

/// Requests the service never finished accounting for, each charged what a request of its
/// own route may have done unseen: one cut off at the function limit (504) while working (the
/// service counts those apart from the ones cut while waiting for the pool, which had nothing
/// in flight; every 504 of a service that does not say) up to the most one
/// request of that route wrote and called, exactly as the service counts it (its
/// `db_writes_per_request_max`, which covers the drain's cron ticks the load did not send) or
/// as the client saw it, whichever is larger (a cron tick runs several jobs at once, all cut
/// off together); a route that never wrote is charged nothing. A request the client abandoned
/// has no route the service names: it is charged the most any request did.
pub(super) fn unfinished(
    last: &crate::service_proc::Scrape,
    endpoints: &[crate::report::EndpointReport],
    aborted: u64,
) -> Vec<Unfinished> {
    let client = |route: &str| {
        endpoints
            .iter()
            .filter(|e| e.endpoint == route)
            .fold((0, 0), |(w, c), e| {
                (w.max(e.db_writes_max), c.max(e.external_calls_max))
            })
    };
    let own = |route: &str, r: &crate::service_proc::RouteScrape| {
        let (w, c) = client(route);
        (
            u64::from(w).max(r.writes_max as u64),
            u64::from(c).max(r.calls_max as u64),
        )
    };
    // Cut off, a request can have left unseen only what it had in flight: a handler runs one
    // statement and one provider call at a time (the tally counts a call before it is made),
    // so its route's largest statement and one call. A cron tick runs its jobs side by side:
    // the most a whole tick did.
    let in_flight = |route: &str, r: &crate::service_proc::RouteScrape| {
        let (w, c) = own(route, r);
        match r.statement_max {
            Some(s) if !route.starts_with(CRON_ROUTES) => (w.min(s as u64), c.min(1)),
            _ => (w, c),
        }
    };
    let mut out: Vec<Unfinished> = last
        .routes
        .iter()
        .filter_map(|(route, r)| {
            // A request cut while it waited for the pool had nothing in flight.
            let n = r
                .cut_working
                .unwrap_or_else(|| r.statuses.get("504").copied().unwrap_or(0.0))
                as u64;
            let (max_writes, max_calls) = in_flight(route, r);
            (n > 0).then(|| Unfinished {
                route: route.clone(),
                requests: n,
                max_writes,
                max_calls,
            })
        })
        .collect();
    if aborted > 0 {
        let (max_writes, max_calls) = last
            .routes
            .iter()
            .map(|(route, r)| own(route, r))
            .fold((0, 0), |(w, c), (rw, rc)| (w.max(rw), c.max(rc)));
        out.push(Unfinished {
            route: "abandoned by the client".into(),
            requests: aborted,
            max_writes,
            max_calls,
        });
    }
    out
}
