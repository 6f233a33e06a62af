//! `POST /api/actions/ai-draft` `{ "lead_id": N }`: draft a reply, then verify it (step 3).
//!
//! Legacy (`LEGACY_AI_VERIFIER`): the verifier is awaited without a bound and a truncated
//! verdict fails the request. Fixed: the verifier gets a time budget; a timeout, a truncated
//! answer or a provider failure degrades to the unverified draft, tagged `ai_timeout` /
//! `ai_truncated` — the user still gets a draft, never a hung request.

use incident_wire::route;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use crate::app_state::AppState;
use crate::auth::{authenticate, with_session_cookie, Surface};
use crate::domain::ledger;
use crate::error::{AppError, Category};
use crate::providers::{self, Provider};
use crate::tally::Tally;

pub fn router() -> Router<AppState> {
    Router::new().route(route::AI_DRAFT.path, post(ai_draft))
}

/// Step 3's verdict.
enum Verified {
    Yes(String),
    Degraded(Category),
}

async fn ai_draft(
    State(state): State<AppState>,
    Extension(tally): Extension<Arc<Tally>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    let auth = match authenticate(&state, &headers, Surface::Action, route::AI_DRAFT.label) {
        Ok(a) => a,
        Err(unauthenticated) => return Ok(unauthenticated.into_response()),
    };
    let request: Value = serde_json::from_slice(&body)
        .map_err(|e| AppError::BadRequest(format!("body is not valid JSON: {e}")))?;
    let lead_id = request
        .get("lead_id")
        .and_then(Value::as_i64)
        .ok_or_else(|| AppError::BadRequest("field `lead_id` must be an integer".into()))?;

    // Step 1: context. The connection goes back to the pool before any provider call.
    let (workspace_id, first_name): (i64, String) = {
        let mut conn = state.acquire(&tally).await?;
        sqlx::query_as(
            "SELECT workspace_id, first_name FROM leads WHERE id = $1 AND workspace_id = ANY($2)",
        )
        .bind(lead_id)
        .bind(&auth.session.workspaces)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| {
            AppError::NotFound(format!("no lead {lead_id} in this session's workspaces"))
        })?
    };
    // Step 2: draft.
    let draft_answer = providers::call(
        &state,
        &tally,
        Provider::Ai,
        incident_wire::provider_path::AI_DRAFT,
        &json!({ "workspace_id": workspace_id, "lead_id": lead_id, "first_name": first_name }),
    )
    .await?;
    let draft = draft_answer
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    // Step 3: verify.
    let verify_body = json!({ "workspace_id": workspace_id, "draft": draft });
    let verified = if state.switches().legacy_ai_verifier {
        let answer = providers::call_once(
            &state,
            &tally,
            Provider::Ai,
            incident_wire::provider_path::AI_VERIFY,
            &verify_body,
            None,
        )
        .await?;
        if is_truncated(&answer) {
            return Err(AppError::Provider {
                provider: "ai",
                category: Some(Category::AiTruncated),
                detail: "verifier answer truncated".into(),
            });
        }
        Verified::Yes(answer_text(&answer, &draft))
    } else {
        let budget = state.config.limits.ai_verify_budget;
        match tokio::time::timeout(
            budget,
            providers::call_once(
                &state,
                &tally,
                Provider::Ai,
                incident_wire::provider_path::AI_VERIFY,
                &verify_body,
                Some(budget),
            ),
        )
        .await
        {
            Err(_) => Verified::Degraded(Category::AiTimeout),
            Ok(Err(e)) if e.detail.contains("timed out") => Verified::Degraded(Category::AiTimeout),
            Ok(Err(e)) => Verified::Degraded(e.category),
            Ok(Ok(answer)) if is_truncated(&answer) => Verified::Degraded(Category::AiTruncated),
            Ok(Ok(answer)) => Verified::Yes(answer_text(&answer, &draft)),
        }
    };
    let (text, verified_flag, category) = match verified {
        Verified::Yes(text) => (text, true, None),
        Verified::Degraded(c) => {
            tally.note(c);
            tracing::info!(
                category = c.as_str(),
                "AI verifier degraded; serving the unverified draft"
            );
            (draft, false, Some(c))
        }
    };
    {
        let mut conn = state.acquire(&tally).await?;
        let written = sqlx::query("INSERT INTO ai_drafts (workspace_id, lead_id, draft, verified, error_category) VALUES ($1, $2, $3, $4, $5)")
            .bind(workspace_id)
            .bind(lead_id)
            .bind(&text)
            .bind(verified_flag)
            .bind(category.map(Category::as_str))
            .execute(&mut *conn)
            .await?;
        tally.wrote(written.rows_affected());
        // The draft offers meeting slots: the ledger counts them.
        ledger::offer_slot(
            &state,
            &tally,
            &mut conn,
            workspace_id,
            chrono::Utc::now().date_naive(),
        )
        .await?;
    }
    let body = Json(json!({ "draft": text, "verified": verified_flag, "category": category }));
    Ok(with_session_cookie(&auth, body.into_response()))
}

fn is_truncated(answer: &Value) -> bool {
    answer.get("finish_reason").and_then(Value::as_str) != Some("stop")
}

fn answer_text(answer: &Value, fallback: &str) -> String {
    answer
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or(fallback)
        .to_owned()
}
