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
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::json;

use crate::domain::{counts, events, jobs};
use crate::error::{AppError, Category};
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

async fn background_jobs(
    State(state): State<AppState>,
    Extension(tally): Extension<Arc<Tally>>,
    headers: HeaderMap,
) -> Result<Json<TickReport>, AppError> {
    require_bearer(&headers, &state.config.secrets.cron)?;
    let limits = state.config.limits.clone();
    let started = Instant::now();
    let mut report = TickReport::default();
    let mut handled = 0u64;
    loop {
        let left = u64::from(limits.cron_batch_limit).saturating_sub(handled);
        if left == 0 || started.elapsed() >= limits.cron_time_budget {
            report.budget_exhausted = true;
            break;
        }
        // Claim as many as run at once, run them concurrently, repeat: a job's provider call
        // does not hold up the others, and no claim outlives the tick by more than one round.
        let batch = {
            let mut conn = state.acquire(&tally).await?;
            let chunk = u64::from(limits.worker_concurrency).min(left) as i64;
            let claimed = jobs::claim(&mut conn, chunk, limits.job_lease).await?;
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
            }
        }
    }
    if state.switches().counts_cache_fallback && started.elapsed() < limits.cron_time_budget {
        report.counts_refreshed = counts::refresh_stale(&state, &tally, 10).await?;
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report.export(&state, "background_jobs");
    Ok(Json(report))
}

enum JobOutcome {
    Done,
    Retried,
    Failed,
}

async fn run_job(state: &AppState, tally: &Tally, job: &jobs::Job) -> Result<JobOutcome, AppError> {
    let outcome = match job.kind.as_str() {
        jobs::EMAIL_SENT => match serde_json::to_vec(&job.payload)
            .map_err(|e| e.to_string())
            .and_then(|b| events::parse(&b))
        {
            Ok(ev) => events::apply_sent_job(state, tally, &ev).await.map(|_| ()),
            Err(e) => Err(AppError::BadRequest(e)),
        },
        other => Err(AppError::BadRequest(format!("unknown job kind {other:?}"))),
    };
    let mut conn = state.acquire(tally).await?;
    match outcome {
        Ok(()) => {
            tally.wrote(jobs::complete(&mut conn, job.id).await?);
            Ok(JobOutcome::Done)
        }
        Err(e) => {
            if let Some(c) = e.category() {
                tally.note(c);
            }
            let delay = backoff(state.config.limits.provider_backoff, job.attempts as u32);
            let (retry, written) = jobs::retry_or_fail(
                &mut conn,
                job,
                state.config.limits.max_attempts,
                delay,
                &e.to_string(),
            )
            .await?;
            tally.wrote(written);
            Ok(if retry {
                JobOutcome::Retried
            } else {
                JobOutcome::Failed
            })
        }
    }
}

/// A due follow-up with its workspace's last known Unipile status.
#[derive(Debug, sqlx::FromRow)]
struct DueFollowup {
    id: i64,
    workspace_id: i64,
    lead_id: i64,
    channel: String,
    attempts: i32,
    unipile_status: String,
}

async fn followups(
    State(state): State<AppState>,
    Extension(tally): Extension<Arc<Tally>>,
    headers: HeaderMap,
) -> Result<Json<TickReport>, AppError> {
    require_bearer(&headers, &state.config.secrets.cron)?;
    let limits = state.config.limits.clone();
    let gate = state.switches().unipile_health_gate;
    let started = Instant::now();
    let mut report = TickReport::default();
    // Claim with a lease (next_attempt_at pushed out) so no transaction spans provider calls.
    let due: Vec<DueFollowup> = {
        let mut conn = state.acquire(&tally).await?;
        sqlx::query_as(
            "WITH claimed AS (
                 UPDATE followup_tasks SET next_attempt_at = now() + make_interval(secs => $2), updated_at = now()
                 WHERE id IN (SELECT id FROM followup_tasks
                              WHERE status = 'pending' AND coalesce(next_attempt_at, due_at) <= now()
                              ORDER BY coalesce(next_attempt_at, due_at) LIMIT $1
                              FOR UPDATE SKIP LOCKED)
                 RETURNING id, workspace_id, lead_id, channel, attempts)
             SELECT c.*, w.unipile_status FROM claimed c JOIN workspaces w ON w.id = c.workspace_id",
        )
        .bind(i64::from(limits.cron_batch_limit))
        .bind(limits.job_lease.as_secs_f64())
        .fetch_all(&mut *conn)
        .await?
    };
    tally.wrote(due.len() as u64);
    for task in due {
        if started.elapsed() >= limits.cron_time_budget {
            // Unhandled claims come due again when their lease runs out.
            report.budget_exhausted = true;
            break;
        }
        let (status, category, retry_in) = if task.channel == "email" {
            ("sent", None, None)
        } else if gate && task.unipile_status == "disconnected" {
            report.skipped_health_gated += 1;
            ("skipped", Some(Category::ProviderDisconnected), None)
        } else {
            let body = json!({ "workspace_id": task.workspace_id, "lead_id": task.lead_id, "text": "Following up on my last message" });
            match providers::call_once(
                &state,
                &tally,
                Provider::Unipile,
                "/api/v1/messages",
                &body,
                Some(limits.provider_timeout),
            )
            .await
            {
                Ok(_) => ("sent", None, None),
                Err(e) => {
                    tally.note(e.category);
                    if !gate {
                        // Legacy: due again at once, whatever the error.
                        ("pending", Some(e.category), Some(Duration::ZERO))
                    } else if !e.retryable || task.attempts + 1 >= limits.max_attempts as i32 {
                        if e.category == Category::ProviderDisconnected {
                            mark_disconnected(&state, &tally, task.workspace_id).await?;
                        }
                        ("failed", Some(e.category), None)
                    } else {
                        (
                            "pending",
                            Some(e.category),
                            Some(backoff(limits.provider_backoff, task.attempts as u32 + 1)),
                        )
                    }
                }
            }
        };
        match status {
            "sent" => report.processed += 1,
            "skipped" => {}
            "failed" => report.failed += 1,
            _ => report.retried += 1,
        }
        let mut conn = state.acquire(&tally).await?;
        let written = sqlx::query(
            "UPDATE followup_tasks SET status = $2, attempts = attempts + $3, last_error_category = $4,
                    next_attempt_at = CASE WHEN $5::float8 IS NULL THEN next_attempt_at ELSE now() + make_interval(secs => $5) END,
                    updated_at = now()
             WHERE id = $1",
        )
        .bind(task.id)
        .bind(status)
        .bind(i32::from(status != "skipped"))
        .bind(category.map(Category::as_str))
        .bind(retry_in.map(|d| d.as_secs_f64()))
        .execute(&mut *conn)
        .await?;
        tally.wrote(written.rows_affected());
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report.export(&state, "followups");
    Ok(Json(report))
}

/// Remembers that a workspace's LinkedIn account is disconnected (the health gate reads it).
async fn mark_disconnected(
    state: &AppState,
    tally: &Tally,
    workspace: i64,
) -> Result<(), AppError> {
    let mut conn = state.acquire(tally).await?;
    let written = sqlx::query("UPDATE workspaces SET unipile_status = 'disconnected', unipile_checked_at = now() WHERE id = $1")
        .bind(workspace)
        .execute(&mut *conn)
        .await?;
    tally.wrote(written.rows_affected());
    Ok(())
}
