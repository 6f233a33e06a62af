//! One arm's life, in named steps: [`start`] (a fresh clone's fakes and service with the
//! arm's switches), [`warm_up`], [`load`] (watched, with the chaos timeline), [`drain`],
//! [`measure`] (the service's, the database's and the providers' word on what happened) and
//! [`judge`] (the checks and the report). What [`start`] started is owned by its
//! [`start::Started`], so an error anywhere tears it down (the service is killed, the fakes
//! stop).

mod judge;
mod load;
mod measure;
mod start;

#[cfg(test)]
mod tests;

use incident_wire::route;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use loadgen::{Endpoint, Plan};
use sqlx::Connection;

use super::invariant::connect;
use super::watch::{scrape, Stage, Watcher};
use super::wiring::plan_for;
use crate::dataset::Template;
use crate::model::{Arm, Scenario};
use crate::postgres::PgServer;
use crate::report::{ArmReport, ArmTimings};

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
    let started = start::start(scenario, server, db, arm, service_bin, out, timings).await?;

    let http = reqwest::Client::new();
    let plan = plan_for(
        scenario,
        &started.service.base,
        &started.secrets,
        &format!("{}-{}", arm.name, std::process::id()),
    );
    let warming = Instant::now();
    warm_up(&http, &plan).await;
    let scopes_at_start = counts_scopes(server, db).await?;
    timings.warm_up_s = warming.elapsed().as_secs_f64();

    let (loaded, watcher) = load::load(scenario, server, db, arm, &started, &http, &plan).await?;
    timings.load_s = loaded.load_start.elapsed().as_secs_f64();

    // Drain: run the worker until the queue is empty or the drain time is up, the providers
    // answering at once (what is checked after it is the end state, not its pace).
    watcher.set_stage(Stage::Drain);
    started.fakes.answer_at_once();
    let draining = Instant::now();
    let last = drain(
        &http,
        &started.service.base,
        &started.secrets.cron,
        loaded.load_start,
        scenario.drain,
        Some(&watcher),
    )
    .await;
    timings.drain_s = draining.elapsed().as_secs_f64();
    let mut scrapes = watcher.scrapes();
    drop(watcher);
    scrapes.push(last.clone());

    let measured = measure::measure(
        scenario, server, db, arm, out, started, &loaded, &last, timings,
    )
    .await?;
    judge::report(
        scenario,
        server,
        db,
        arm,
        &plan,
        loaded,
        &scrapes,
        &last,
        measured,
        scopes_at_start,
    )
    .await
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
