//! The service's ceilings on Postgres, against `pgbench` on the same cluster in the same run:
//! - **ingest**: the highest `EMAIL_SENT` arrival rate the queued path (the scenario's `all-on`
//!   arm: `INBOXXIA_EMAIL_SENT_ASYNC` on, its pool) holds with p95 ≤ 500 ms and no failure;
//! - **drain**: the jobs per second the background-jobs cron applies, ticked back to back until
//!   the queue the ramp left is empty — with the per-job work the fixed path does (the GHL call
//!   to the fake provider, the ledger). It measures the runner, not the scenario's model of GHL:
//!   with a provider latency L and W workers a drain is bounded at W ÷ L (Little's law; smoke's
//!   8 workers and ~200 ms give ~40 jobs/s whatever the code does), so here the fake GHL answers
//!   at once and a tick runs [`DRAIN_JOBS_PER_CONNECTION`] jobs at once per connection of the
//!   pool (a claim's jobs share one). That bound is reported beside the figure;
//! - **reference**: `pgbench` inserting one row into the same queue table with as many clients
//!   as the service's pool. Goals: ingest ≥ 0.5 × and drain ≥ 0.2 × its rate.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use incident_wire::route;
use loadgen::record::FAILED;
use loadgen::{Arrival, Endpoint, Plan, Recording, Stream};
use sqlx::Connection;

use super::pgbench::pgbench;
use super::Reference;
use crate::dataset::Template;
use crate::matrix::fakes::{disconnected_workspaces, FakesServer};
use crate::model::Scenario;
use crate::postgres::PgServer;
use crate::service_proc::ServiceProcess;

/// The ingest budget: the webhook's p95.
const INGEST_P95_MS: f64 = 500.0;
/// A send a waiting user started later than this was woken late: the generator's own CPU.
const HARNESS_LATE_MS: f64 = 50.0;

/// The generator's users (requests at once) for an ingest step at `rate`: at least the rate
/// times the budget, so a pool that fills means the service's own latency reached the budget
/// (Little's law: requests at once = rate × time each), which its p95 from the intended send
/// time then shows. With a fixed 64, the pool filled at 6400/s once a request took 10 ms, and
/// the step (p95 3.24 s) was put down to the generator.
pub fn ingest_users(rate: f64) -> usize {
    ((rate * INGEST_P95_MS / 1000.0).ceil() as usize).max(64)
}

/// Whether the generator, not the service, fell behind: more than 1 % of the sends (the p99)
/// were woken over [`HARNESS_LATE_MS`] late by a user that had taken them in time. Sends no user
/// was free for are not counted: with [`ingest_users`] that is the service's latency.
pub fn generator_fell_behind(sent: u64, late_wakeup: u64) -> bool {
    late_wakeup * 100 > sent
}

fn legacy_users() -> usize {
    64
}

/// One ingest step.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IngestStep {
    pub rate: f64,
    pub sent: u64,
    pub failed: u64,
    pub p95_ms: Option<f64>,
    pub lateness_p99_ms: Option<f64>,
    pub held: bool,
    /// The generator fell behind: the step says nothing of the service.
    pub harness_limited: bool,
    /// The generator's users ([`ingest_users`]; reports from before c. 2026-12-03: 64).
    #[serde(default = "legacy_users")]
    pub users: usize,
    /// Sends more than 50 ms late because no user was free (the service's latency filled the
    /// pool), and because a waiting user woke late (the generator's CPU).
    #[serde(default)]
    pub late_no_user: u64,
    #[serde(default)]
    pub late_wakeup: u64,
    /// A step between the ceiling and the lowest rate that did not hold (`--refine`).
    #[serde(default)]
    pub refining: bool,
    /// Answered 202 (queued) by the service, and the step's jobs found in the queue after it:
    /// each 202 says its row has committed, so a step with fewer rows than 202s lost work and
    /// does not hold, however fast it was. `None` in reports from before 2026-12-05.
    #[serde(default)]
    pub accepted: Option<u64>,
    #[serde(default)]
    pub queued: Option<u64>,
}

impl IngestStep {
    /// 202s with no row in the queue behind them.
    pub fn lost(&self) -> u64 {
        self.accepted
            .zip(self.queued)
            .map_or(0, |(a, q)| a.saturating_sub(q))
    }
}

/// The ingest ramp: its rates, ascending; the refining steps after the first rate the service
/// did not hold (each halves the gap below it, as the generator's); each step's length.
#[derive(Debug, Clone, Copy)]
pub struct IngestRamp<'a> {
    pub rates: &'a [f64],
    pub refine: u32,
    pub step: Duration,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DatabaseCeiling {
    pub pool_max: u32,
    pub ingest_steps: Vec<IngestStep>,
    /// The highest rate that held; `None` when the first did not.
    pub ingest_rate: Option<f64>,
    /// Jobs applied per second by back-to-back cron ticks, and how many.
    pub drain_jobs_per_s: Option<f64>,
    pub drained: u64,
    /// Jobs still queued when the drain gave up (60 s).
    pub drain_left: u64,
    /// Jobs a tick ran at once during the drain ([`DRAIN_JOBS_PER_CONNECTION`] per connection
    /// of the pool; reports from before 789d65b: the pool's size).
    #[serde(default)]
    pub drain_workers: u32,
    /// What the scenario's own settings allow: its workers ÷ its GHL latency's mean, jobs/s.
    #[serde(default)]
    pub drain_modelled_bound: Option<f64>,
    /// Rows the runner wrote per job applied (its ticks' declared writes, which the matrix
    /// checks against Postgres's own count): what a job costs in pgbench's unit, a row.
    #[serde(default)]
    pub drain_rows_per_job: Option<f64>,
    /// Jobs per transaction where a tick applied a claim's `EMAIL_SENT`s together (`None`:
    /// none was, or the report predates it).
    #[serde(default)]
    pub drain_jobs_per_batch: Option<f64>,
    pub reference: Reference,
    pub ingest_ratio: Option<f64>,
    pub drain_ratio: Option<f64>,
    pub ingest_goal: f64,
    pub drain_goal: f64,
}

/// Runs ingest, drain and pgbench on a clone of `template` with the scenario's `all-on` arm.
pub async fn measure(
    scenario: &Scenario,
    server: &PgServer,
    template: &Template,
    service_bin: &Path,
    ramp: IngestRamp<'_>,
    out: &Path,
) -> anyhow::Result<DatabaseCeiling> {
    let arm = scenario
        .arms
        .iter()
        .find(|a| a.name == "all-on")
        .context("the scenario has no all-on arm to measure the fixed path with")?;
    let (db, _) = template
        .clone_for_arm(server, "ceiling", arm.switches.counts_cache_fallback)
        .await?;
    let result = on_clone(scenario, server, &db, arm, service_bin, ramp, out).await;
    server.drop_database(&db).await?;
    result
}

async fn on_clone(
    scenario: &Scenario,
    server: &PgServer,
    db: &str,
    arm: &crate::model::Arm,
    service_bin: &Path,
    ramp: IngestRamp<'_>,
    out: &Path,
) -> anyhow::Result<DatabaseCeiling> {
    let modelled = modelled_drain_bound(scenario);
    let scenario = &for_the_drain(scenario);
    let fakes = FakesServer::start(scenario, disconnected_workspaces(server, db).await?).await?;
    let secrets = inbox_service::config::Secrets::random();
    let url = server.url(db, true);
    let env = crate::matrix::wiring::service_env(
        scenario,
        arm,
        url.clone(),
        &fakes.base,
        &secrets,
        "127.0.0.1:0".parse().expect("an address"),
    );
    std::fs::create_dir_all(out)?;
    let service =
        ServiceProcess::start(service_bin, &env, &out.join("ceiling.service.log")).await?;

    let mut steps = Vec::new();
    // The ramp up to the first rate that does not hold, then the refining steps below it.
    let mut rates = ramp.rates.iter().copied();
    let mut refining_left = ramp.refine;
    let mut rate = rates.next().map(|r| (r, false));
    // The harness's own connection: not bound by the scenario's statement timeout.
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .context("connecting to count the ingest's jobs")?;
    sqlx::raw_sql("SET statement_timeout = 0")
        .execute(&mut conn)
        .await?;
    while let Some((r, refining)) = rate {
        let run_id = format!("ingest-{r}-{}", steps.len());
        let before = last_job_id(&mut conn).await?;
        let mut s = ingest_step(
            scenario,
            &service.base,
            &secrets.webhook,
            r,
            ramp.step,
            &run_id,
        )
        .await?;
        s.refining = refining;
        let queued = jobs_of(&mut conn, &run_id, before).await?;
        s.queued = Some(queued);
        if s.lost() > 0 {
            // Lost work is the service's failure, whatever the generator did.
            s.held = false;
            s.harness_limited = false;
        }
        steps.push(s);
        let next = ingest_next(&steps);
        let s = steps.last().expect("a step was just run");
        eprintln!(
            "ingest at {r}/s{}: sent {}, failed {}, p95 {}, lateness p99 {}, {} → {}",
            if refining { " (refining)" } else { "" },
            s.sent,
            s.failed,
            crate::report::ms(s.p95_ms),
            crate::report::ms(s.lateness_p99_ms),
            queued_words(s),
            match (s.harness_limited, next) {
                _ if s.lost() > 0 => "did not hold (202s without their job)",
                (true, IngestNext::Again) => "the generator fell behind (no verdict): once more",
                (true, _) => "the generator fell behind again (no verdict)",
                (false, _) if s.held => "held",
                _ => "did not hold",
            }
        );
        if crate::interrupt::requested().is_some() {
            anyhow::bail!("interrupted");
        }
        rate = match next {
            IngestNext::Again => Some((r, refining)),
            IngestNext::Up if !refining => rates.next().map(|r| (r, false)),
            _ if refining_left > 0 => {
                refining_left -= 1;
                ingest_refinement(&steps).map(|r| (r, true))
            }
            _ => None,
        };
    }
    let d = drain(&url, &service.base, &secrets.cron).await?;
    let (drained, left, drain_s) = (d.applied, d.left, d.secs);
    let drain_jobs_per_batch = (d.batches > 0).then(|| d.batched as f64 / d.batches as f64);
    let drain_jobs_per_s = (drained > 0).then(|| drained as f64 / drain_s);
    let drain_rows_per_job =
        match crate::matrix::watch::scrape(&reqwest::Client::new(), &service.base, 0.0).await {
            Some(scrape) if drained > 0 => {
                let written: f64 = [
                    route::CRON_BACKGROUND_JOBS.label,
                    inbox_service::domain::events::DEFERRED_SETTLE_ROUTE,
                ]
                .iter()
                .filter_map(|r| scrape.routes.get(*r))
                .map(|r| r.writes)
                .sum();
                Some(written / drained as f64)
            }
            _ => None,
        };
    eprintln!(
        "drain ({} workers, GHL answering at once): {drained} jobs in {drain_s:.1} s{}; {} of them in {} transactions of several",
        scenario.service.worker_concurrency,
        if left > 0 {
            format!(", {left} left")
        } else {
            String::new()
        },
        d.batched,
        d.batches,
    );
    service.stop().await;
    drop(fakes);

    let pool_max = scenario.limits().pool_max;
    let reference = pgbench(&url, pool_max, ramp.step).await;
    eprintln!(
        "reference: {}",
        reference.rate.map_or(reference.detail.clone(), |r| format!(
            "{r:.0} inserts/s by {}",
            reference.detail
        ))
    );
    let ingest_rate = ingest_ceiling(&steps);
    Ok(DatabaseCeiling {
        pool_max,
        ingest_ratio: ingest_rate.zip(reference.rate).map(|(i, p)| i / p),
        drain_ratio: drain_jobs_per_s.zip(reference.rate).map(|(d, p)| d / p),
        ingest_steps: steps,
        ingest_rate,
        drain_jobs_per_s,
        drained,
        drain_left: left,
        drain_workers: scenario.service.worker_concurrency,
        drain_modelled_bound: modelled,
        drain_rows_per_job,
        drain_jobs_per_batch,
        reference,
        ingest_goal: 0.5,
        drain_goal: 0.2,
    })
}

/// Jobs a drain's tick runs at once per connection of the pool. A tick applies a claim's
/// `EMAIL_SENT`s together on one connection, so its jobs at once are no longer bounded by the
/// connections; with GHL answering at once, the tick's rounds (claim, apply, calls) were the
/// limit. With one claim at a time (AMD EPYC, 2 cores, pool 10, one run each): 10 at once 1124
/// jobs/s, 40 at once 2526, 160 at once 2202. With a tick's two claims at once (each half the
/// jobs at once: `CLAIMS_AT_ONCE` in the service's cron), 80 at once keeps each claim's batch
/// at ~32 jobs while two are applied side by side: 16 000-job drains, the binaries taking
/// turns in the same half hour, 3783, 3272, 3151, 3715, 3698 jobs/s against 2688 to 3004 (eight
/// runs) for one claim at a time with 40, and 1737 to 3353 (three) with 80.
pub const DRAIN_JOBS_PER_CONNECTION: u32 = 8;

/// `scenario` as the ceiling runs it: GHL answers at once without errors, and a background-jobs
/// tick runs [`DRAIN_JOBS_PER_CONNECTION`] jobs at once per connection of the pool. (The ingest
/// path calls no provider, so only the drain sees either.)
fn for_the_drain(scenario: &Scenario) -> Scenario {
    let mut s = scenario.clone();
    s.providers
        .insert(fake_providers::Provider::Ghl, Default::default());
    s.service.worker_concurrency = s.service.pool_max * DRAIN_JOBS_PER_CONNECTION;
    s
}

/// The drain rate the scenario's settings allow at most: its workers ÷ the mean latency of
/// its GHL (`base + jitter / 2`, the slow tail weighed in); `None` when GHL answers at once.
pub fn modelled_drain_bound(scenario: &Scenario) -> Option<f64> {
    let l = &scenario
        .providers
        .get(&fake_providers::Provider::Ghl)?
        .latency;
    let slow = (l.slow_pct / 100.0).clamp(0.0, 1.0);
    let mean_ms =
        (1.0 - slow) * (l.base_ms as f64 + l.jitter_ms as f64 / 2.0) + slow * l.slow_ms as f64;
    (mean_ms > 0.0).then(|| f64::from(scenario.service.worker_concurrency) / (mean_ms / 1000.0))
}

/// A step's 202s and the jobs behind them (`accepted 202, queued N`).
pub fn queued_words(s: &IngestStep) -> String {
    match (s.accepted, s.queued) {
        (Some(a), Some(q)) if q < a => format!("{a} answered 202, only {q} queued"),
        (Some(a), Some(q)) => format!("{a} answered 202, {q} queued"),
        _ => "202s and queued jobs not counted".into(),
    }
}

/// The newest job's id (0: none yet).
async fn last_job_id(conn: &mut sqlx::PgConnection) -> anyhow::Result<i64> {
    sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM background_jobs")
        .fetch_one(conn)
        .await
        .context("reading the newest job's id")
}

/// The jobs the service queued, after job `after`, for the events of the run `run_id` (their
/// ids start with it; a run id is `ingest-RATE-STEP`, nothing `LIKE` treats specially). Only
/// the step's own rows are read (the primary key's range), however long the queue has grown.
async fn jobs_of(conn: &mut sqlx::PgConnection, run_id: &str, after: i64) -> anyhow::Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM background_jobs WHERE id > $1 AND dedupe_key LIKE $2",
    )
    .bind(after)
    .bind(format!("email:EMAIL_SENT:{run_id}-%"))
    .fetch_one(conn)
    .await
    .context("counting the ingest step's jobs")?;
    Ok(n as u64)
}

async fn ingest_step(
    scenario: &Scenario,
    base: &str,
    secret: &str,
    rate: f64,
    step: Duration,
    run_id: &str,
) -> anyhow::Result<IngestStep> {
    let users = ingest_users(rate);
    let plan = Plan {
        host: base.to_owned(),
        streams: vec![Stream {
            name: "ingest".into(),
            endpoint: Endpoint::EmailWebhook {
                event: "EMAIL_SENT".into(),
                secret: secret.to_owned(),
                workspaces: scenario.scale.workspaces,
                leads: scenario.scale.leads,
            },
            arrival: Arrival::Constant { rate },
            retry: None,
            max_in_flight: users,
            delivery: Default::default(),
        }],
        duration: step,
        seed: rate as u64,
        poisson: false,
        client_timeout: Duration::from_secs(5),
        late_after: Duration::from_millis(HARNESS_LATE_MS as u64),
        run_id: run_id.to_owned(),
        shard: Default::default(),
        tls: Default::default(),
    };
    let recording = std::sync::Arc::new(std::sync::Mutex::new(Recording::default()));
    let summary = loadgen::run(plan, recording.clone()).await?;
    let r = recording.lock().expect("recording lock").clone();
    let stream = r.streams.get("ingest").cloned().unwrap_or_default();
    let e = r
        .endpoints
        .get(route::EMAIL_WEBHOOK.label)
        .cloned()
        .unwrap_or_default();
    let failed = e.category_between(FAILED, 0, u32::MAX) + summary.unsent;
    let p95_ms = e.latency.quantile_ms(0.95);
    let lateness_p99_ms = stream.lateness.quantile_ms(0.99);
    let harness_limited = generator_fell_behind(stream.requests, stream.late_wakeup);
    Ok(IngestStep {
        rate,
        sent: stream.requests,
        failed,
        p95_ms,
        lateness_p99_ms,
        held: !harness_limited && failed == 0 && p95_ms.is_some_and(|p| p <= INGEST_P95_MS),
        harness_limited,
        users,
        late_no_user: stream.late_no_user,
        late_wakeup: stream.late_wakeup,
        refining: false,
        accepted: Some(e.status_counts.get("202").copied().unwrap_or(0)),
        queued: None,
    })
}

/// What a drain came to.
struct Drained {
    /// Jobs applied.
    applied: u64,
    /// Jobs left when it gave up.
    left: u64,
    secs: f64,
    /// The ticks' transactions that applied several jobs together, and the jobs they held.
    batches: u64,
    batched: u64,
}

/// Ticks the background-jobs cron back to back until a tick finds nothing to do (or 60 s),
/// then counts the jobs left. The ticks' own reports say when to stop: a count of the queue
/// between ticks was a statement the size of the queue in every tick's time (6.6 ms on 48k
/// jobs, a tenth of a 200-job tick), on the same two cores.
async fn drain(url: &str, base: &str, cron_secret: &str) -> anyhow::Result<Drained> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let at_start = queued(&mut conn).await? as u64;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let (mut busy, mut batches, mut batched) = (at_start > 0, 0, 0);
    while busy && started.elapsed() < Duration::from_secs(60) {
        let tick = client
            .get(format!("{base}{}", route::CRON_BACKGROUND_JOBS.path))
            .bearer_auth(cron_secret)
            .send()
            .await?;
        anyhow::ensure!(
            tick.status().is_success(),
            "a cron tick answered {}",
            tick.status()
        );
        let report: serde_json::Value = tick.json().await?;
        let count = |field: &str| report[field].as_u64().unwrap_or(0);
        batches += count("batches");
        batched += count("batched");
        let handled: u64 = [
            "processed",
            "failed",
            "retried",
            "skipped",
            "skipped_health_gated",
            "abandoned",
        ]
        .iter()
        .map(|f| count(f))
        .sum();
        busy = handled > 0 || report["budget_exhausted"] == true || report["overlapped"] == true;
    }
    let secs = started.elapsed().as_secs_f64();
    let left = queued(&mut conn).await? as u64;
    Ok(Drained {
        applied: at_start - left,
        left,
        secs,
        batches,
        batched,
    })
}

/// Jobs not yet applied.
async fn queued(conn: &mut sqlx::PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM background_jobs WHERE status IN ('queued', 'running')")
        .fetch_one(conn)
        .await
}

/// What the ingest ramp does after its latest step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestNext {
    /// The step held: the next rate.
    Up,
    /// The generator fell behind for the first time at this rate: the step says nothing of the
    /// service (a passing stall on a shared machine, often), so it runs once more.
    Again,
    /// The service did not hold the rate, or the generator fell behind twice running.
    Stop,
}

/// The ramp's rule: up while steps hold; a step the generator fell behind on runs once more.
pub fn ingest_next(steps: &[IngestStep]) -> IngestNext {
    match steps {
        [.., s] if s.held => IngestNext::Up,
        [.., a, b] if b.harness_limited && a.harness_limited && a.rate == b.rate => {
            IngestNext::Stop
        }
        [.., s] if s.harness_limited => IngestNext::Again,
        _ => IngestNext::Stop,
    }
}

/// Whether the step at `i` was run again (it had no verdict, and the next step is its rate).
pub fn ingest_run_again(steps: &[IngestStep], i: usize) -> bool {
    steps[i].harness_limited && steps.get(i + 1).is_some_and(|n| n.rate == steps[i].rate)
}

/// The steps that count: a step run again is read by its second run.
fn read_steps(steps: &[IngestStep]) -> impl Iterator<Item = &IngestStep> {
    (0..steps.len())
        .filter(|&i| !ingest_run_again(steps, i))
        .map(|i| &steps[i])
}

/// The lowest rate that did not hold (with a verdict or without), if any.
fn lowest_not_held(steps: &[IngestStep]) -> Option<&IngestStep> {
    read_steps(steps)
        .filter(|s| !s.held)
        .min_by(|a, b| a.rate.total_cmp(&b.rate))
}

/// The highest rate that held below the lowest that did not.
pub fn ingest_ceiling(steps: &[IngestStep]) -> Option<f64> {
    let below = lowest_not_held(steps).map_or(f64::INFINITY, |s| s.rate);
    read_steps(steps)
        .filter(|s| s.held && s.rate < below)
        .map(|s| s.rate)
        .reduce(f64::max)
}

/// Whether the ramp ended before the service did: no rate failed with a verdict below the
/// ones that held (every step held, or the generator fell behind at the lowest that did not).
/// The ceiling is then a lower bound.
pub fn ingest_open(steps: &[IngestStep]) -> bool {
    !steps.is_empty() && lowest_not_held(steps).is_none_or(|s| s.harness_limited)
}

/// The next refining step: halfway (a whole rate) between the ceiling and the lowest rate the
/// service did not hold. `None` when nothing held, when that lowest step has no verdict (the
/// generator fell behind: nothing to narrow), or when the gap is under one request a second.
pub fn ingest_refinement(steps: &[IngestStep]) -> Option<f64> {
    let failed = lowest_not_held(steps).filter(|s| !s.harness_limited)?.rate;
    super::halfway(ingest_ceiling(steps)?, failed)
}

#[cfg(test)]
mod tests;
