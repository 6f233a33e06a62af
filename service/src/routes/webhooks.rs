//! `POST /api/webhooks/email`: signed email provider events.
//!
//! Order of checks: size (413), signature and freshness (401), body (400), workspace (422);
//! none of them writes anything. `EMAIL_SENT` is queued (`INBOXXIA_EMAIL_SENT_ASYNC`, 202) or
//! applied on the spot (legacy, 200). Unknown event types are acknowledged and ignored (202):
//! refusing them would only make the provider retry.

use incident_wire::route;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use incident_wire::{verify_webhook, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use serde_json::json;

use crate::app_state::AppState;
use crate::domain::event::{self, EventKind};
use crate::domain::events::{self, Handled};
use crate::domain::jobs::{self, Enqueued};
use crate::error::AppError;
use crate::tally::Tally;

/// Largest accepted body.
pub const MAX_BODY: usize = 256 * 1024;

pub fn router() -> Router<AppState> {
    Router::new().route(route::EMAIL_WEBHOOK.path, post(email_webhook))
}

#[tracing::instrument(skip_all, fields(dedupe_key))]
async fn email_webhook(
    State(state): State<AppState>,
    Extension(tally): Extension<Arc<Tally>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let started = Instant::now();
    let bytes = to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| AppError::PayloadTooLarge(format!("body over 256 KiB ({MAX_BODY} bytes)")))?;
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    verify_webhook(
        &state.config.secrets.webhook,
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        &bytes,
        chrono::Utc::now().timestamp(),
        state.config.limits.webhook_tolerance.as_secs(),
    )
    .map_err(|e| {
        tracing::info!(reason = %e, "webhook refused");
        AppError::Unauthorized("invalid webhook signature")
    })?;
    let ev = event::parse(&bytes).map_err(AppError::BadRequest)?;
    tally.set_event(ev.kind.as_str());
    tracing::Span::current().record("dedupe_key", ev.dedupe_key().as_str());
    tally.set_dedupe_key(ev.dedupe_key());

    let (status, handled) = match &ev.kind {
        EventKind::Unknown(kind) => {
            tracing::info!(kind = %kind, "unknown event type ignored");
            (StatusCode::ACCEPTED, Handled::Ignored)
        }
        // A deliberate bug (tests only): acknowledged, then "crashed" before any commit.
        EventKind::Sent if state.faults().ack_before_commit => {
            (StatusCode::ACCEPTED, Handled::Accepted)
        }
        // A deliberate bug (tests only): a write-behind buffer, acknowledged before it is written.
        EventKind::Sent if state.faults().write_behind => {
            let raw: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| AppError::BadRequest(e.to_string()))?;
            let (later, ev) = (state.clone(), ev.clone());
            tokio::spawn(async move {
                tokio::time::sleep(crate::state::WRITE_BEHIND_DELAY).await;
                let tally = Tally::default();
                if let Ok(mut conn) = later.acquire(&tally).await {
                    let _ = jobs::enqueue(&mut conn, &tally, &ev, &raw).await;
                }
            });
            (StatusCode::ACCEPTED, Handled::Accepted)
        }
        EventKind::Sent if state.switches().email_sent_async => {
            let raw: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| AppError::BadRequest(e.to_string()))?;
            let handled = match state.intake().enqueue(&state, &tally, &ev, raw).await? {
                Enqueued::New => Handled::Accepted,
                Enqueued::Duplicate => Handled::Duplicate,
            };
            (StatusCode::ACCEPTED, handled)
        }
        EventKind::Sent => (
            StatusCode::OK,
            events::apply_sent_sync(&state, &tally, &ev).await?,
        ),
        _ => (
            StatusCode::OK,
            events::apply_other(&state, &tally, &ev).await?,
        ),
    };

    let elapsed = started.elapsed();
    if elapsed > Duration::from_secs(2) {
        tracing::warn!(dedupe_key = %ev.dedupe_key(), elapsed_ms = elapsed.as_millis() as u64, "slow webhook");
    }
    Ok((
        status,
        Json(json!({ "status": handled, "event_id": ev.event_id })),
    )
        .into_response())
}
