//! The cron runners (bearer `CRON_SECRET`), both bounded: a batch limit and a time budget.
//!
//! - `GET /api/cron/background-jobs`: drains the job queue (`SKIP LOCKED`, leases, retries),
//!   then refreshes stale cached counts when `INBOX_COUNTS_CACHE_FALLBACK` is on.
//! - `GET /api/cron/followups`: due follow-ups. LinkedIn sends go through Unipile. With
//!   `UNIPILE_HEALTH_GATE`, workspaces known disconnected are skipped (`skipped_health_gated`),
//!   disconnected / invalid-recipient errors are final (and a disconnection is remembered on the
//!   workspace), retryable errors back off with jitter up to a cap. Legacy: every due send is
//!   attempted and every failure is due again on the next tick, forever.

use std::future::Future;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::routing::get;
use axum::{Json, Router};
use incident_wire::route;

use crate::app_state::AppState;
use crate::domain::ticks::{self, Budget};
use crate::error::{AppError, Category};
use crate::routes::require_bearer;
use crate::state::CronConn;
use crate::tally::Tally;

mod sends;
mod worker;

use sends::followups;
use worker::background_jobs;

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
    /// Jobs that ran but could not be marked within the budget (run again after their lease).
    pub unsettled: u64,
    /// Transactions that applied several claimed `EMAIL_SENT`s together (background-jobs).
    pub batches: u64,
    /// The jobs those transactions held (the rest ran one per transaction).
    pub batched: u64,
    /// Workspaces known disconnected that answered a probe and are sent to again (follow-ups).
    pub readmitted: u64,
    pub elapsed_ms: u64,
}

impl TickReport {
    pub(super) fn export(&self, state: &AppState, runner: &'static str) {
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

/// Runs `tick` under cron `name`'s lease and the tick's time budget; an overlapping call
/// returns at once, `overlapped`. The budget starts before the lease is taken, so waiting for
/// a connection to take it counts too.
pub(super) async fn leased<F, Fut>(
    state: &AppState,
    tally: &Tally,
    name: &'static str,
    tick: F,
) -> Result<Json<TickReport>, AppError>
where
    F: FnOnce(Budget) -> Fut,
    Fut: Future<Output = Result<TickReport, AppError>>,
{
    let l = &state.config.limits;
    let budget = Budget::new(l.cron_time_budget);
    // A lease outlives any tick: the budget, and a margin for a stalled release.
    let ttl = l.cron_time_budget * 2;
    let lease = {
        let Some(mut conn) = cron_conn(state, tally, budget.work_left()).await? else {
            // Not even the lease in time: nothing was done, nothing is held.
            return Ok(Json(finish(
                state,
                name,
                &budget,
                TickReport::default().cut(),
            )));
        };
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
    let outcome = tick(budget).await;
    // Given back even when the tick failed; if that fails too, the lease expires by itself.
    if let Ok(mut conn) = state.acquire_for_cron(tally, budget.left()).await {
        if let Ok(n) = ticks::release(&mut conn, name, lease).await {
            tally.wrote(n);
        }
    }
    Ok(Json(finish(state, name, &budget, outcome?)))
}

/// Records a finished tick's duration and exports its report.
pub(super) fn finish(
    state: &AppState,
    name: &'static str,
    budget: &Budget,
    mut report: TickReport,
) -> TickReport {
    let took = budget.started.elapsed();
    state.metrics.cron_tick(name, took);
    report.elapsed_ms = took.as_millis() as u64;
    report.export(state, name);
    report
}

/// A connection for new work of a tick, waiting at most `wait`; `None` when the wait ran out
/// at the tick's work deadline (the tick stops there: its budget is spent, not an error).
pub(super) async fn cron_conn(
    state: &AppState,
    tally: &Tally,
    wait: std::time::Duration,
) -> Result<Option<CronConn>, AppError> {
    if wait.is_zero() {
        return Ok(None);
    }
    let budget_bound = wait < state.config.limits.acquire_timeout;
    match state.acquire_for_cron(tally, wait).await {
        Ok(conn) => Ok(Some(conn)),
        Err(e) if budget_bound && e.category() == Some(Category::DbPoolWait) => Ok(None),
        Err(e) => Err(e),
    }
}

impl TickReport {
    /// Marks the tick as stopped by its budget.
    pub(super) fn cut(mut self) -> Self {
        self.budget_exhausted = true;
        self
    }
}
