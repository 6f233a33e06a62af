//! `GET /api/cron/followups`: due follow-up sends through Unipile, with the health gate's
//! skips, the probes that re-admit a reconnected workspace, and backoff for retryable errors.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::json;

use super::{cron_conn, leased, CronCaller, TickReport};
use crate::app_state::AppState;
use crate::domain::followups::{self, Status};
use crate::domain::ticks::Budget;
use crate::error::{AppError, Category};
use crate::providers::{self, Provider};
use crate::tally::Tally;

pub(super) async fn followups(
    _: CronCaller,
    State(state): State<AppState>,
    Extension(tally): Extension<Arc<Tally>>,
) -> Result<Json<TickReport>, AppError> {
    leased(&state, &tally, "followups", |budget| {
        followups_tick(&state, &tally, budget)
    })
    .await
}

/// Probes `workspaces` on Unipile (a few at a time, each only while its whole timeout fits the
/// budget); returns the workspaces that answered, with whether they are connected. A probe that
/// failed for another reason (timeout, 5xx) says nothing and is left out.
async fn probe_workspaces(
    state: &AppState,
    tally: &Arc<Tally>,
    budget: &Budget,
    workspaces: &[i64],
) -> Vec<(i64, bool)> {
    let limits = &state.config.limits;
    let mut answers = Vec::new();
    for chunk in workspaces.chunks(followups::PROBE_CONCURRENCY) {
        let Some(timeout) = budget.call_timeout(limits.provider_timeout) else {
            break;
        };
        let mut probes = tokio::task::JoinSet::new();
        for &ws in chunk {
            let (state, tally) = (state.clone(), tally.clone());
            probes.spawn(async move {
                let body = json!({ "workspace_id": ws });
                let answer = providers::call_once(
                    &state,
                    &tally,
                    Provider::Unipile,
                    incident_wire::provider_path::UNIPILE_ACCOUNT_STATUS,
                    &body,
                    Some(timeout),
                )
                .await;
                match answer {
                    Ok(_) => Some((ws, true)),
                    Err(e) if e.category == Category::ProviderDisconnected => Some((ws, false)),
                    Err(e) => {
                        tally.note(e.category);
                        None
                    }
                }
            });
        }
        while let Some(done) = probes.join_next().await {
            if let Ok(Some(answer)) = done {
                answers.push(answer);
            }
        }
    }
    answers
}

async fn followups_tick(
    state: &AppState,
    tally: &Arc<Tally>,
    budget: Budget,
) -> Result<TickReport, AppError> {
    let limits = state.config.limits.clone();
    let gate = state.switches().unipile_health_gate;
    let mut report = TickReport::default();
    // Workspaces probed again in this tick (one probe each), and those re-admitted by it.
    let (mut probed, mut readmitted) = (HashSet::new(), HashSet::new());
    let (due, to_probe) = {
        let Some(mut conn) = cron_conn(state, tally, budget.work_left()).await? else {
            return Ok(report.cut());
        };
        let due = followups::claim(
            &mut conn,
            limits.cron_batch_limit,
            limits.job_lease,
            limits.unipile_recheck,
        )
        .await?;
        let to_probe = if gate {
            followups::recheck_due(
                &mut conn,
                limits.unipile_recheck,
                followups::PROBES_PER_TICK,
            )
            .await?
        } else {
            Vec::new()
        };
        (due, to_probe)
    };
    tally.wrote(due.len() as u64);
    // The gate's rollback: workspaces known disconnected for longer than the recheck interval
    // are probed directly, so a reconnected account comes back whether or not one of its
    // follow-ups came up in this batch.
    for (ws, connected) in probe_workspaces(state, tally, &budget, &to_probe).await {
        probed.insert(ws);
        let Ok(mut conn) = state.acquire_for_cron(tally, budget.left()).await else {
            report.budget_exhausted = true;
            break;
        };
        if connected {
            readmitted.insert(ws);
            report.readmitted += 1;
            tally.wrote(followups::mark_connected(&mut conn, ws).await?);
        } else {
            tally.wrote(followups::mark_disconnected(&mut conn, ws).await?);
        }
    }
    for task in due {
        // A send starts only while its whole timeout fits the budget; unhandled claims come
        // due again when their lease runs out.
        let Some(timeout) = budget.call_timeout(limits.provider_timeout) else {
            report.budget_exhausted = true;
            break;
        };
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
                    incident_wire::provider_path::UNIPILE_SEND,
                    &body,
                    Some(timeout),
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
        // Bookkeeping of a send made, in the budget's reserve; without a connection the claim
        // expires and the follow-up is due again.
        let Ok(mut conn) = state.acquire_for_cron(tally, budget.left()).await else {
            report.unsettled += 1;
            report.budget_exhausted = true;
            break;
        };
        if outcome.mark_disconnected {
            tally.wrote(followups::mark_disconnected(&mut conn, task.workspace_id).await?);
        }
        if outcome.mark_connected && readmitted.insert(task.workspace_id) {
            report.readmitted += 1;
            tally.wrote(followups::mark_connected(&mut conn, task.workspace_id).await?);
        }
        tally.wrote(followups::record(&mut conn, task.id, &outcome).await?);
    }
    Ok(report)
}
