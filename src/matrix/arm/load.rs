//! The load, watched: the generator plays the plan while the watcher scrapes the service, and
//! the reconnections, faults and flips are played on the schedule's own clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use loadgen::{Plan, Recording, RunSummary};

use super::super::gate::{self, Reconnected};
use super::super::rails;
use super::super::watch::{CpuSample, Watcher};
use super::start::Started;
use crate::chaos::run::{Played, Targets};
use crate::model::{Arm, Scenario};
use crate::postgres::PgServer;
use crate::report::Aborted;

/// What the load left: the recording, the generator's summary, what the timeline played.
pub(super) struct Loaded {
    pub recording: Arc<Mutex<Recording>>,
    pub load_start: Instant,
    pub summary: RunSummary,
    pub reconnected: Option<Reconnected>,
    pub played: Played,
    /// The harness's CPU over the load (user, system seconds).
    pub cpu: (f64, f64),
    /// When and why an `[abort]` threshold stopped the load.
    pub aborted: Option<Aborted>,
}

/// Runs the plan against the started service; the watcher goes on scraping through the drain.
pub(super) async fn load(
    scenario: &Scenario,
    server: &PgServer,
    db: &str,
    arm: &Arm,
    started: &Started,
    http: &reqwest::Client,
    plan: &Plan,
) -> anyhow::Result<(Loaded, Watcher)> {
    let Started {
        fakes,
        disconnected,
        proxy,
        secrets,
        service,
        ..
    } = started;
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
        Some(gate::reconnect(&fakes.fakes, server, db, disconnected, r).await)
    };
    let targets = Targets {
        server,
        db,
        proxy: proxy.as_ref(),
        fakes: &fakes.fakes,
        service,
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
    // An `[abort]` threshold, watched on the same clock until the load ends.
    let done = AtomicBool::new(false);
    let budgets = crate::chaos::hypothesis::budgeted(scenario);
    let aborting = async {
        let abort = scenario.abort?;
        let zero = zero().await;
        rails::watch_abort(&recording, &budgets, abort, zero, &done).await
    };
    let load = async {
        // The schedule's zero is the one the faults, flips and reconnections are played on.
        let summary =
            loadgen::engine::run_from(plan.clone(), recording.clone(), Some(zero_tx)).await;
        done.store(true, Ordering::Relaxed);
        summary
    };
    let (summary, reconnected, played, aborted) = tokio::join!(load, reconnecting, chaos, aborting);
    if let Some(a) = &aborted {
        crate::interrupt::say(&format!("arm {}: load stopped: {}", arm.name, a.reason));
    }
    let played = played.context("the chaos timeline")?;
    let summary = summary.context("load generator")?;
    let reconnected = reconnected.transpose().context("reconnecting accounts")?;
    let cpu = CpuSample::now().since(&cpu_before);

    let loaded = Loaded {
        recording,
        load_start,
        summary,
        reconnected,
        played,
        cpu,
        aborted,
    };
    Ok((loaded, watcher))
}
