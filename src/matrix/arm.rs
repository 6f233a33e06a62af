//! One arm's life: a fresh clone, fresh fake providers, a fresh service process with the
//! arm's switches; warm-up, the load, the drain; then the database's and the providers' word
//! on what happened, and the verdict. Everything the arm starts is owned by [`ArmEnv`], so an
//! error anywhere tears it down (the service is killed, the fakes stop).

use incident_wire::route;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use fake_providers::Provider;
use loadgen::{Endpoint, Plan, Recording};
use sqlx::Connection;

use super::fakes::{disconnected_workspaces, FakesServer};
use super::figures::{background, endpoint_reports, load_health};
use super::gate;
use super::invariant::{
    baseline, check_invariant, connect, rows_since, rows_written, wait_for_sessions_to_end,
};
use super::verdict::{
    accounting, accounting_check, cron_check, gate_check, judge, load_check, status, Unfinished,
    ACCOUNTING_CHECK,
};
use super::watch::{scrape, CpuSample, Stage, Watcher};
use super::wiring::{plan_for, service_env};
use crate::chaos::run::{Played, ServiceSlot, Targets};
use crate::dataset::Template;
use crate::model::{Arm, Scenario};
use crate::postgres::PgServer;
use crate::report::{ArmReport, ArmTimings, Skipped, TimelinePoint};
use crate::service_proc::ServiceProcess;
use inbox_service::config::Secrets;

/// A fault proxy in front of `server`, for the service's connections to database `db`.
async fn link_proxy(server: &PgServer, db: &str) -> anyhow::Result<crate::chaos::FaultProxy> {
    let options = server.connect_options(db);
    let target = format!("{}:{}", options.get_host(), options.get_port());
    let upstream = tokio::net::lookup_host(&target)
        .await
        .with_context(|| format!("resolving {target}"))?
        .next()
        .with_context(|| format!("{target} has no address"))?;
    crate::chaos::FaultProxy::start(upstream)
        .await
        .context("starting the database link's fault proxy")
}

/// Runs one arm; writes its recording and service log into `out`.
pub(crate) async fn run_arm(
    scenario: &Scenario,
    server: &PgServer,
    template: &Template,
    arm: &Arm,
    service_bin: &Path,
    out: &Path,
) -> anyhow::Result<ArmReport> {
    let arm_started = Instant::now();
    let mut timings = ArmTimings::default();
    let (db, clone_time) = template
        .clone_for_arm(server, &arm.name, arm.switches.counts_cache_fallback)
        .await
        .context("cloning the template")?;
    timings.clone_s = clone_time.as_secs_f64();
    let result = run_on_clone(scenario, server, &db, arm, service_bin, out, &mut timings).await;
    server.drop_database(&db).await?;
    let mut report = result?;
    timings.checks_s = (arm_started.elapsed().as_secs_f64() - timings.total_s()).max(0.0);
    report.timings = timings;
    Ok(report)
}

async fn run_on_clone(
    scenario: &Scenario,
    server: &PgServer,
    db: &str,
    arm: &Arm,
    service_bin: &Path,
    out: &Path,
    timings: &mut ArmTimings,
) -> anyhow::Result<ArmReport> {
    let prepared = Instant::now();
    let disconnected = disconnected_workspaces(server, db).await?;
    let fakes = FakesServer::start(scenario, disconnected.clone()).await?;
    let rows_before = rows_written(server, db).await?;
    let effects_before = {
        let mut conn = connect(server, db).await?;
        let b = baseline(&mut conn).await?;
        conn.close().await?;
        b
    };

    // With faults on the database link, the service reaches Postgres through the fault proxy
    // (the harness's own connections do not).
    crate::chaos::postgres::check_supported(scenario, server)?;
    for f in &scenario.faults {
        if let crate::model::Fault::Lock { table, .. } = &f.fault {
            crate::chaos::postgres::check_table(server, db, table).await?;
        }
    }
    let link_faults = scenario
        .faults
        .iter()
        .any(|f| f.kind().target() == crate::model::FaultTarget::Link);
    let proxy = match link_faults {
        false => None,
        true => Some(link_proxy(server, db).await?),
    };
    // Through PgBouncer, when the scenario has one: the instances' statement timeout is then
    // set on PgBouncer's server connections (it refuses the client's `options`).
    let pooler = match &scenario.pooler {
        Some(spec) => Some(Arc::new(
            crate::fleet::pooler::PgBouncer::start(
                spec,
                server,
                scenario.service.statement_timeout,
            )
            .await
            .context("starting PgBouncer")?,
        )),
        None => None,
    };
    let database_url = match (&proxy, &pooler) {
        (_, Some(p)) => p.url(server, db),
        (Some(p), None) => crate::chaos::timeline::via(&server.url(db, true), p.addr()),
        (None, None) => server.url(db, true),
    };
    let secrets = Secrets::random();
    timings.prepare_s = prepared.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let log = out.join(format!("arm-{}.service.log", arm.name));
    let env_for = {
        let mut scenario = scenario.clone();
        if pooler.is_some() {
            scenario.service.statement_timeout = None;
        }
        let (arm, secrets) = (arm.clone(), secrets.clone());
        let (database_url, fakes_base) = (database_url.clone(), fakes.base.clone());
        move |switches: &inbox_service::Switches, bind: std::net::SocketAddr| {
            let arm = Arm {
                switches: *switches,
                ..arm.clone()
            };
            service_env(
                &scenario,
                &arm,
                database_url.clone(),
                &fakes_base,
                &secrets,
                bind,
            )
        }
    };
    let env_for = Arc::new(env_for);
    let (service, fleet) = match scenario.fleet {
        None => {
            let process = ServiceProcess::start(
                service_bin,
                &env_for(&arm.switches, ([127, 0, 0, 1], 0).into()),
                &log,
            )
            .await?;
            let env_for = env_for.clone();
            let slot = ServiceSlot::new(
                process,
                service_bin.to_owned(),
                arm.switches,
                log.clone(),
                move |s: &inbox_service::Switches, bind: std::net::SocketAddr| env_for(s, bind),
            );
            (slot, None)
        }
        Some(spec) => {
            let start: crate::fleet::StartInstance = {
                let (env_for, bin, switches) =
                    (env_for.clone(), service_bin.to_owned(), arm.switches);
                let (out, name) = (out.to_owned(), arm.name.clone());
                Arc::new(move |i: usize| {
                    let env = env_for(&switches, ([127, 0, 0, 1], 0).into());
                    let (bin, log) = (bin.clone(), out.join(format!("arm-{name}.service-{i}.log")));
                    Box::pin(async move { ServiceProcess::start(&bin, &env, &log).await })
                })
            };
            let fleet =
                crate::fleet::Fleet::start(spec, start, pooler.clone().map(|p| (p, db.to_owned())))
                    .await
                    .context("starting the service instances")?;
            let slot = ServiceSlot::detached(
                fleet.base.clone(),
                service_bin.to_owned(),
                arm.switches,
                log.clone(),
            );
            (slot, Some(fleet))
        }
    };
    timings.service_start_s = t0.elapsed().as_secs_f64();
    let http = reqwest::Client::new();
    let plan = plan_for(
        scenario,
        &service.base,
        &secrets,
        &format!("{}-{}", arm.name, std::process::id()),
    );
    let warming = Instant::now();
    warm_up(&http, &plan).await;
    let scopes_at_start = counts_scopes(server, db).await?;
    timings.warm_up_s = warming.elapsed().as_secs_f64();

    // The load, watched.
    let recording = Arc::new(Mutex::new(Recording::default()));
    let load_start = Instant::now();
    let watcher = Watcher::start(
        http.clone(),
        service.base.clone(),
        arm.name.clone(),
        scenario.duration,
        load_start,
        recording.clone(),
    );
    let cpu_before = CpuSample::now();
    // Time zero of the schedule, once the generator sets it: what the reconnections, faults
    // and flips are played on.
    let (zero_tx, zero_rx) = tokio::sync::oneshot::channel();
    let zero_rx = Mutex::new(Some(zero_rx));
    let zero_cell = tokio::sync::OnceCell::new();
    let zero = || async {
        *zero_cell
            .get_or_init(|| async {
                let fallback =
                    tokio::time::Instant::from_std(load_start + loadgen::engine::START_DELAY);
                let rx = zero_rx.lock().expect("zero lock").take();
                match rx {
                    Some(rx) => rx.await.unwrap_or(fallback),
                    None => fallback,
                }
            })
            .await
    };
    // Accounts that reconnect mid-run, on the load's clock.
    let reconnecting = async {
        let r = scenario.reconnect?;
        tokio::time::sleep_until(zero().await + r.at).await;
        Some(gate::reconnect(&fakes.fakes, server, db, &disconnected, r).await)
    };
    let targets = Targets {
        server,
        db,
        proxy: proxy.as_ref(),
        fakes: &fakes.fakes,
        service: &service,
        http: http.clone(),
        admin_token: secrets.admin.clone(),
        recording: recording.clone(),
    };
    let timeline =
        scenario.faults.len() + scenario.flips.len() > 0 || scenario.hypothesis.is_some();
    let chaos = async {
        if !timeline {
            return Ok(Played::default());
        }
        let played = crate::chaos::run::play(scenario, &targets, zero().await).await;
        if let Ok(Played {
            not_steady: Some(before),
            ..
        }) = &played
        {
            crate::interrupt::say(&format!(
                "arm {}: not steady before the first fault or flip ({}): the load is stopped, nothing injected",
                arm.name,
                before
                    .endpoints
                    .iter()
                    .filter(|e| !e.holds)
                    .map(|e| e.endpoint.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        played
    };
    let (summary, reconnected, played) = tokio::join!(
        // The schedule's zero is the one the faults, flips and reconnections are played on.
        loadgen::engine::run_from(plan.clone(), recording.clone(), Some(zero_tx)),
        reconnecting,
        chaos
    );
    let played = played.context("the chaos timeline")?;
    let summary = summary.context("load generator")?;
    let reconnected = reconnected.transpose().context("reconnecting accounts")?;
    let cpu = CpuSample::now().since(&cpu_before);
    timings.load_s = load_start.elapsed().as_secs_f64();

    // Drain: run the worker until the queue is empty or the drain time is up, the providers
    // answering at once (what is checked after it is the end state, not its pace).
    watcher.set_stage(Stage::Drain);
    fakes.answer_at_once();
    let drain_start = Instant::now();
    let last = drain(
        &http,
        &service.base,
        &secrets.cron,
        load_start,
        scenario.drain,
        Some(&watcher),
    )
    .await;
    timings.drain_s = drain_start.elapsed().as_secs_f64();
    let mut scrapes = watcher.scrapes();
    drop(watcher);
    scrapes.push(last.clone());
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

    let recording = recording.lock().expect("recording lock").clone();
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
        super::invariant::ghl_at_least_once(
            &mut invariants,
            "the legacy EMAIL_SENT path calls GHL inside its transaction: a request cut after the call (a fault, the function limit) and retried calls it again",
        );
    } else if cut {
        super::invariant::ghl_at_least_once(
            &mut invariants,
            "the outbox calls GHL, then marks its row done: a crash or a cut connection between the two makes the retry call again, as any outbox delivers at least once",
        );
    }
    std::fs::write(
        out.join(format!("arm-{}.recording.json", arm.name)),
        serde_json::to_string(&recording)?,
    )?;

    let errors: BTreeMap<String, u64> = last
        .errors
        .iter()
        .map(|(k, v)| (k.clone(), *v as u64))
        .collect();
    let statement_timeouts = errors.get("db_timeout").copied().unwrap_or(0);
    let offset_s = loadgen::engine::START_DELAY.as_secs_f64();
    let endpoints = endpoint_reports(scenario, &recording, &scrapes, offset_s);
    let load = load_health(scenario, &plan, &recording, cpu);
    let mut accounting = accounting(
        (declared.0 as u64, declared.1 as u64),
        (measured_rows, measured_calls),
        &unfinished(
            &last,
            &endpoints,
            errors.get("client_abort").copied().unwrap_or(0),
        ),
        killed,
    );
    accounting.rows_by_table = rows_by_table;
    let mut checks = vec![load_check(&load)];
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
    let mut background = background(scenario, &scrapes);
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
        timeline: timeline_of(&scrapes),
        fleet: fleet.map(|f| fleet_report(f, scenario, &scrapes, refused_clients)),
        goose: summary.goose,
        timings: ArmTimings::default(),
        skipped,
        faults: played.faults,
        flips,
        hypothesis,
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
fn unfinished(
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

/// Counts scopes in the cache table now.
async fn counts_scopes(server: &PgServer, db: &str) -> anyhow::Result<u64> {
    let mut conn = connect(server, db).await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox_counts_cache")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(n as u64)
}

/// Ticks the background-jobs cron (bearer `cron_secret`) until `/metrics` shows an empty queue
/// or `limit` is up; every scrape goes to the timeline; returns the last one (the default when
/// the service has no `/metrics`: nothing known to drain).
pub(crate) async fn drain(
    http: &reqwest::Client,
    base: &str,
    cron_secret: &str,
    load_start: Instant,
    limit: Duration,
    watcher: Option<&Watcher>,
) -> crate::service_proc::Scrape {
    let start = Instant::now();
    let mut last = scrape(http, base, load_start.elapsed().as_secs_f64())
        .await
        .unwrap_or_default();
    while last.queue_queued + last.queue_running > 0.0 && start.elapsed() < limit {
        let _ = http
            .get(format!("{base}{}", route::CRON_BACKGROUND_JOBS.path))
            .bearer_auth(cron_secret)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        last = scrape(http, base, load_start.elapsed().as_secs_f64())
            .await
            .unwrap_or(last);
        if let Some(w) = watcher {
            w.push(last.clone());
        }
    }
    last
}

/// Warm-up requests in flight at once: a legacy arm's counts request is ~300 ms of Postgres
/// CPU; four at once keep both cores busy.
const WARM_UP_IN_FLIGHT: usize = 4;

/// Warm-up requests per page/action stream (fewer when it has fewer users). A legacy arm's
/// counts request costs the same first as last (~0.3 s of Postgres CPU each, four at once, on
/// AMD EPYC, 2 cores: a parallel scan through a ring buffer, over files the clone has just put
/// in the page cache), so more of them warm nothing and took 9 s of each legacy arm at 20 per
/// stream; their baseline-phase `GET /` p95 ranged 4.5–10 s across runs at 20 all the same (21
/// requests: noise). Four open the service's connections and backfill a few counts scopes of a
/// fixed arm; the scenario's other scopes start cold, as it says.
const WARM_UP_PER_STREAM: u32 = 4;

/// A few unmeasured requests per page/action stream before the load: every arm starts with
/// warm caches and connections alike (and a fixed arm's counts cache is backfilled, as the
/// rollout plan deploys it). The same requests in every arm, [`WARM_UP_IN_FLIGHT`] at a time;
/// all have finished (or timed out) when it returns.
pub(crate) async fn warm_up(http: &reqwest::Client, plan: &Plan) {
    let unix_now = super::unix_now();
    let mut lanes: Vec<Vec<reqwest::RequestBuilder>> =
        (0..WARM_UP_IN_FLIGHT).map(|_| Vec::new()).collect();
    let mut n = 0;
    for (i, stream) in plan.streams.iter().enumerate() {
        let users = match &stream.endpoint {
            Endpoint::InboxPage { sessions } | Endpoint::InboxCounts { sessions } => sessions.users,
            _ => continue,
        };
        for seq in 0..u64::from(users.min(WARM_UP_PER_STREAM)) {
            let r = stream
                .endpoint
                .request(i, u64::MAX - seq, &plan.run_id, unix_now);
            let mut req = http
                .request(r.method, format!("{}{}", plan.host, r.path))
                .timeout(Duration::from_secs(10));
            for (k, v) in r.headers {
                req = req.header(k, v);
            }
            if let Some(b) = r.body {
                req = req.body(b);
            }
            lanes[n % WARM_UP_IN_FLIGHT].push(req);
            n += 1;
        }
    }
    let mut running = tokio::task::JoinSet::new();
    for lane in lanes {
        running.spawn(async move {
            for req in lane {
                let _ = req.send().await;
            }
        });
    }
    while running.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::endpoint;
    use crate::service_proc::{RouteScrape, Scrape};

    fn route(cut: f64, writes_max: f64, calls_max: f64) -> RouteScrape {
        RouteScrape {
            statuses: [("504".to_owned(), cut)].into(),
            writes_max,
            calls_max,
            ..RouteScrape::default()
        }
    }

    /// A cut-off request is charged its own route's most, never another route's: a page that
    /// never writes is charged nothing, the drain's cron tick (not in the load) the most the
    /// service saw one tick write.
    #[test]
    fn a_cut_off_request_is_charged_its_own_routes_writes() {
        let last = Scrape {
            routes: [
                ("GET /".to_owned(), route(40.0, 0.0, 0.0)),
                ("POST /api/webhooks/email".to_owned(), route(3.0, 5.0, 1.0)),
                (
                    "GET /api/cron/background-jobs".to_owned(),
                    route(1.0, 222.0, 30.0),
                ),
            ]
            .into(),
            ..Scrape::default()
        };
        let mut hook = endpoint("POST /api/webhooks/email", 900.0, Some(500.0));
        (hook.db_writes_max, hook.external_calls_max) = (6, 1);
        let mut page = endpoint("GET /", 900.0, Some(2000.0));
        (page.db_writes_max, page.external_calls_max) = (0, 0);

        let charged: Vec<(String, u64, u64, u64)> = unfinished(&last, &[hook, page], 0)
            .into_iter()
            .map(|u| (u.route, u.requests, u.max_writes, u.max_calls))
            .collect();

        assert_eq!(
            charged,
            [
                ("GET /".to_owned(), 40, 0, 0),
                ("GET /api/cron/background-jobs".to_owned(), 1, 222, 30),
                // The client saw a request write 6; the service's own most was 5.
                ("POST /api/webhooks/email".to_owned(), 3, 6, 1),
            ]
        );
        // A service that counts its cuts while working: the ones cut waiting for the pool
        // (46 of 50 here) are charged nothing.
        let mut counted = last.clone();
        counted
            .routes
            .get_mut("POST /api/webhooks/email")
            .unwrap()
            .statuses
            .insert("504".into(), 50.0);
        counted
            .routes
            .get_mut("POST /api/webhooks/email")
            .unwrap()
            .cut_working = Some(4.0);
        let hook_cut = unfinished(&counted, &[], 0)
            .into_iter()
            .find(|u| u.route == "POST /api/webhooks/email")
            .unwrap();
        assert_eq!((hook_cut.requests, hook_cut.max_writes), (4, 5));
        let a = crate::matrix::verdict::accounting(
            (1000, 10),
            (1000, 10),
            &unfinished(&last, &[], 2),
            0,
        );
        assert_eq!(a.slack_writes, 15 + 222 + 2 * 222, "{a:?}");
        let detail = crate::matrix::verdict::accounting_check(&a).detail;
        assert!(
            detail.contains("declared 1000, counted 1000, slack 681 ("),
            "{detail}"
        );
    }
}
