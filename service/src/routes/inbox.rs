//! The inbox page: `GET /` (session check, sidebar counts, first page of conversations) and
//! the `getInboxCounts()` server action, `POST /api/actions/inbox-counts`.

use incident_wire::route;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::app_state::AppState;
use crate::auth::{authenticate, with_session_cookie, Surface};
use crate::domain::counts;
use crate::error::AppError;
use crate::tally::Tally;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(route::INBOX_PAGE.path, get(inbox_page))
        .route("/login", get(login_page))
        .route(route::INBOX_COUNTS.path, post(inbox_counts))
}

/// One row of the conversation list.
#[derive(Debug, serde::Serialize, sqlx::FromRow)]
struct Conversation {
    lead_id: i64,
    first_name: String,
    status: String,
    sentiment: Option<String>,
    last_message_at: Option<DateTime<Utc>>,
}

/// Where signed-out browsers land: a static page, no database.
async fn login_page() -> axum::response::Html<&'static str> {
    axum::response::Html("<!DOCTYPE html><title>Sign in</title><p>Sign in to see your inbox.</p>")
}

async fn inbox_page(
    State(state): State<AppState>,
    Extension(tally): Extension<Arc<Tally>>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let auth = match authenticate(&state, &headers, Surface::Page, route::INBOX_PAGE.label) {
        Ok(a) => a,
        Err(unauthenticated) => return Ok(unauthenticated.into_response()),
    };
    let scope_key = auth.session.scope_key();
    let counts = counts::inbox_counts(
        &state,
        state.counts(),
        &tally,
        &scope_key,
        &auth.session.workspaces,
    )
    .await?;
    let conversations: Vec<Conversation> = {
        let mut conn = state.acquire(&tally).await?;
        sqlx::query_as(
            "SELECT id AS lead_id, first_name, status, sentiment, last_message_at FROM leads
             WHERE workspace_id = ANY($1)
             ORDER BY last_message_at DESC NULLS LAST, id DESC LIMIT 20",
        )
        .bind(&auth.session.workspaces)
        .fetch_all(&mut *conn)
        .await?
    };
    let body = Json(json!({ "counts": counts, "conversations": conversations }));
    Ok(with_session_cookie(&auth, body.into_response()))
}

async fn inbox_counts(
    State(state): State<AppState>,
    Extension(tally): Extension<Arc<Tally>>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let auth = match authenticate(&state, &headers, Surface::Action, route::INBOX_COUNTS.label) {
        Ok(a) => a,
        Err(unauthenticated) => return Ok(unauthenticated.into_response()),
    };
    let scope_key = auth.session.scope_key();
    let answer = counts::inbox_counts(
        &state,
        state.counts(),
        &tally,
        &scope_key,
        &auth.session.workspaces,
    )
    .await?;
    Ok(with_session_cookie(&auth, Json(answer).into_response()))
}
