//! The cron runners (bearer `CRON_SECRET`), both bounded: a batch limit and a time budget.
//!
//! - `GET /api/cron/background-jobs`: drains the job queue (`SKIP LOCKED`, leases, retries),
//!   then refreshes stale cached counts when `INBOX_COUNTS_CACHE_FALLBACK` is on.
//! - `GET /api/cron/followups`: due follow-ups. LinkedIn sends go through Unipile. With
//!   `UNIPILE_HEALTH_GATE`, workspaces known disconnected are skipped (`skipped_health_gated`),
//!   disconnected / invalid-recipient errors are final (and a disconnection is remembered on the
//!   workspace), retryable errors back off with jitter up to a cap. Legacy: every due send is
//!   attempted and every failure is due again on the next tick, forever.

use incident_wire::route;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::extract::State;
use axum::http::request::Parts;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::json;

use crate::domain::followups::{self, Status};
use crate::domain::{counts, events, jobs, ticks};
use crate::error::AppError;
use crate::providers::{self, backoff, Provider};
use crate::routes::require_bearer;
use crate::state::{AppState, Tally};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(route::CRON_BACKGROUND_JOBS.path, get(background_jobs))
        .route(route::CRON_FOLLOWUPS.path, get(followups))
}

/// Units handled by one tick, by outcome.
#[derive(Debug, Default, serde::Serialize)]
pub struct TickReport {
    pub processed: u64,
    pub failed: u64,
    pub retried: u64,
    pub skipped: u64,
    pub skipped_health_gated: u64,
    /// Cached count scopes recomputed (background-jobs only).
    pub counts_refreshed: u64,
    /// True when the tick stopped for its time budget or batch limit with work left.
    pub budget_exhausted: bool,
    /// True when another tick of this cron was running: this one did nothing.
    pub overlapped: bool,
    /// Jobs failed for good because their lease expired on every attempt (background-jobs).
    pub abandoned: u64,
    /// Jobs whose lease another worker took over before this one finished (its outcome stands).
    pub lease_lost: u64,
    /// Workspaces known disconnected that answered a probe and are sent to again (follow-ups).
    pub readmitted: u64,
    pub elapsed_ms: u64,
}

impl TickReport {
    fn export(&self, state: &AppState, runner: &'static str) {
        for (outcome, n) in [
            ("processed", self.processed),
            ("failed", self.failed),
            ("retried", self.retried),
            ("skipped", self.skipped),
            ("skipped_health_gated", self.skipped_health_gated),
        ] {
            state.metrics.cron_units(runner, outcome, n);
        }
        tracing::info!(
            runner,
            processed = self.processed,
            failed = self.failed,
            retried = self.retried,
            skipped = self.skipped,
            skipped_health_gated = self.skipped_health_gated,
            "cron tick"
        );
    }
}

/// The caller of a cron route: checked against `CRON_SECRET` before the handler runs.
pub struct CronCaller;

impl FromRequestParts<AppState> for CronCaller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        require_bearer(&parts.headers, &state.config.secrets.cron)?;
        Ok(CronCaller)
    }
}

/// Runs `tick` under cron `name`'s lease; an overlapping call returns at once, `overlapped`.
async fn leased<F: Future<Output = Result<TickReport, AppError>>>(
    state: &AppState,
    tally: &Tally,
    name: &'static str,
    tick: F,
) -> Result<Json<TickReport>, AppError> {
    let l = &state.config.limits;
    // The longest a tick can run: its budget, plus one round of jobs already started.
    let ttl = l.cron_time_budget * 2 + l.provider_timeout * l.provider_max_attempts;
    let lease = {
        let mut conn = state.acquire(tally).await?;
        ticks::acquire(&mut conn, name, ttl).await?
    };
    let Some(lease) = lease else {
        let report = TickReport {
            overlapped: true,
            ..TickReport::default()
        };
        report.export(state, name);
        return Ok(Json(report));
    };
    tally.wrote(1);
    let started = std::time::Instant::now();
    let outcome = tick.await;
    state.metrics.cron_tick(name, started.elapsed());
    // Given back even when the tick failed; if that fails too, the lease expires by itself.
    if let Ok(mut conn) = state.acquire(tally).await {
        if let Ok(n) = ticks::release(&mut conn, name, lease).await {
            tally.wrote(n);
        }
    }
    let report = outcome?;
    report.export(state, name);
    Ok(Json(report))
}

async fn background_jobs(
    _: CronCaller,
    State(state): State<AppState>,
    Extension(tally): Extension<Arc<Tally>>,
) -> Result<Json<TickReport>, AppError> {
    leased(
        &state,
        &tally,
        "background_jobs",
        background_jobs_tick(&state, &tally),
    )
    .await
}

async fn background_jobs_tick(
    state: &AppState,
    tally: &Arc<Tally>,
) -> Result<TickReport, AppError> {
    let limits = state.config.limits.clone();
    let started = Instant::now();
    let deadline = started + limits.cron_time_budget;
    let mut report = TickReport::default();
    {
        let mut conn = state.acquire(tally).await?;
        report.abandoned = jobs::fail_abandoned(&mut conn, limits.max_attempts).await?;
        tally.wrote(report.abandoned);
    }
    let mut handled = 0u64;
    loop {
        let left = u64::from(limits.cron_batch_limit).saturating_sub(handled);
        if left == 0 || Instant::now() >= deadline {
            report.budget_exhausted = true;
            break;
        }
        // Claim as many as run at once, run them concurrently, repeat: a job's provider call
        // does not hold up the others, and no claim outlives the tick by more than one round.
        let batch = {
            let mut conn = state.acquire(tally).await?;
            let chunk = u64::from(limits.worker_concurrency).min(left) as i64;
            let claimed =
                jobs::claim(&mut conn, chunk, limits.job_lease, limits.max_attempts).await?;
            tally.wrote(claimed.len() as u64);
            claimed
        };
        if batch.is_empty() {
            break;
        }
        handled += batch.len() as u64;
        let mut running = tokio::task::JoinSet::new();
        for job in batch {
            let (state, tally) = (state.clone(), tally.clone());
            running.spawn(async move { run_job(&state, &tally, &job).await });
        }
        for outcome in running.join_all().await {
            match outcome? {
                JobOutcome::Done => report.processed += 1,
                JobOutcome::Retried => report.retried += 1,
                JobOutcome::Failed => report.failed += 1,
                JobOutcome::LeaseLost => report.lease_lost += 1,
            }
        }
    }
    if state.switches().counts_cache_fallback && Instant::now() < deadline {
        report.counts_refreshed = counts::refresh_stale(state, tally, 10, deadline).await?;
        if Instant::now() >= deadline {
            report.budget_exhausted = true;
        }
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

enum JobOutcome {
    Done,
    Retried,
    Failed,
    /// Another worker holds the job's lease now; nothing was marked.
    LeaseLost,
}

/// Why a job did not apply.
#[derive(Debug, thiserror::Error)]
enum JobFailure {
    /// The job can never apply (a malformed payload, an unknown kind): failed at once.
    #[error("poison job: {0}")]
    Poison(String),
    /// An effect failed (the database, a provider): retried with backoff.
    #[error(transparent)]
    Effect(#[from] AppError),
}

async fn run_job(state: &AppState, tally: &Tally, job: &jobs::Job) -> Result<JobOutcome, AppError> {
    let outcome: Result<(), JobFailure> = match job.kind.as_str() {
        jobs::EMAIL_SENT => match serde_json::from_value(job.payload.clone())
            .map_err(|e| e.to_string())
            .and_then(events::validate)
        {
            Ok(ev) => events::apply_sent_job(state, tally, &ev)
                .await
                .map(|_| ())
                .map_err(JobFailure::from),
            Err(e) => Err(JobFailure::Poison(e)),
        },
        jobs::GHL_SYNC => providers::call(
            state,
            tally,
            Provider::Ghl,
            "/contacts/upsert",
            &job.payload,
        )
        .await
        .map(|_| ())
        .map_err(|e| JobFailure::Effect(e.into())),
        other => Err(JobFailure::Poison(format!("unknown job kind {other:?}"))),
    };
    let mut conn = state.acquire(tally).await?;
    match outcome {
        Ok(()) => {
            let written = jobs::complete(&mut conn, job).await?;
            tally.wrote(written);
            Ok(if written == 0 {
                JobOutcome::LeaseLost
            } else {
                JobOutcome::Done
            })
        }
        Err(e) => {
            let max_attempts = match &e {
                JobFailure::Effect(effect) => {
                    if let Some(c) = effect.category() {
                        tally.note(c);
                    }
                    state.config.limits.max_attempts
                }
                JobFailure::Poison(_) => 0,
            };
            let delay = backoff(state.config.limits.provider_backoff, job.attempts as u32);
            let (retry, written) =
                jobs::retry_or_fail(&mut conn, job, max_attempts, delay, &e.to_string()).await?;
            tally.wrote(written);
            Ok(if written == 0 {
                JobOutcome::LeaseLost
            } else if retry {
                JobOutcome::Retried
            } else {
                JobOutcome::Failed
            })
        }
    }
}

async fn followups(
    _: CronCaller,
    State(state): State<AppState>,
    Extension(tally): Extension<Arc<Tally>>,
) -> Result<Json<TickReport>, AppError> {
    leased(&state, &tally, "followups", followups_tick(&state, &tally)).await
}

async fn followups_tick(state: &AppState, tally: &Arc<Tally>) -> Result<TickReport, AppError> {
    let limits = state.config.limits.clone();
    let gate = state.switches().unipile_health_gate;
    let started = Instant::now();
    let mut report = TickReport::default();
    // Workspaces probed again in this tick (one probe each), and those re-admitted by it.
    let (mut probed, mut readmitted) = (HashSet::new(), HashSet::new());
    let due = {
        let mut conn = state.acquire(tally).await?;
        followups::claim(
            &mut conn,
            limits.cron_batch_limit,
            limits.job_lease,
            limits.unipile_recheck,
        )
        .await?
    };
    tally.wrote(due.len() as u64);
    for task in due {
        if started.elapsed() >= limits.cron_time_budget {
            // Unhandled claims come due again when their lease runs out.
            report.budget_exhausted = true;
            break;
        }
        let ws = task.workspace_id;
        let probed_already = probed.contains(&ws) && !readmitted.contains(&ws);
        let outcome = match followups::before_call(&task, gate, probed_already) {
            Some(outcome) => outcome,
            None => {
                if task.unipile_status == "disconnected" {
                    probed.insert(ws);
                }
                let body = json!({ "workspace_id": task.workspace_id, "lead_id": task.lead_id, "text": "Following up on my last message" });
                match providers::call_once(
                    state,
                    tally,
                    Provider::Unipile,
                    "/api/v1/messages",
                    &body,
                    Some(limits.provider_timeout),
                )
                .await
                {
                    Ok(_) => followups::after_success(&task),
                    Err(e) => {
                        tally.note(e.category);
                        followups::after_error(&task, e.category, e.retryable, gate, &limits)
                    }
                }
            }
        };
        match outcome.status {
            Status::Sent => report.processed += 1,
            Status::Skipped => report.skipped_health_gated += 1,
            Status::Failed => report.failed += 1,
            Status::Pending => report.retried += 1,
        }
        let mut conn = state.acquire(tally).await?;
        if outcome.mark_disconnected {
            tally.wrote(followups::mark_disconnected(&mut conn, task.workspace_id).await?);
        }
        if outcome.mark_connected && readmitted.insert(task.workspace_id) {
            report.readmitted += 1;
            tally.wrote(followups::mark_connected(&mut conn, task.workspace_id).await?);
        }
        tally.wrote(followups::record(&mut conn, task.id, &outcome).await?);
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}
