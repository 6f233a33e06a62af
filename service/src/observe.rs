//! The middleware around every route: the platform's function limit (504 past it), the
//! per-request tally exposed as `x-db-writes` / `x-external-calls` / `x-error-category`,
//! request metrics, error categories, and client aborts.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use incident_wire::{DB_WRITES_HEADER, ERROR_CATEGORY_HEADER, EXTERNAL_CALLS_HEADER};

use crate::app_state::AppState;
use crate::error::Category;
use crate::metrics::RequestDone;
use crate::tally::Tally;

/// Wraps one request. Installed with `route_layer`, so the matched route labels the metrics.
pub async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let route = incident_wire::endpoint_label(&method, &path, None);
    let uri_path = state.access_log().map(|_| request.uri().path().to_owned());
    let sticky = state.faults().sticky_failure && !path.starts_with("/api/cron");
    if sticky && state.stuck.load(std::sync::atomic::Ordering::Relaxed) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let tally = Arc::new(Tally::default());
    request.extensions_mut().insert(tally.clone());
    let started = Instant::now();
    let mut abort = AbortWatch {
        state: &state,
        route: &route,
        armed: true,
    };
    let outcome =
        tokio::time::timeout(state.config.limits.request_timeout, next.run(request)).await;
    abort.armed = false;

    let mut response = match outcome {
        Ok(response) => response,
        Err(_) => {
            // The platform kills the function; what it was doing names the cause.
            let category = if tally.waiting_for_pool() {
                Category::DbPoolWait
            } else {
                Category::FunctionTimeout
            };
            // The worst requests are the ones to find in the logs: by route, dedupe key (for
            // webhooks) and cause — never a raw address or workspace id.
            tracing::warn!(
                route = %route,
                dedupe_key = tally.dedupe_key(),
                category = category.as_str(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "function limit reached (504)"
            );
            let mut r = (
                StatusCode::GATEWAY_TIMEOUT,
                Json(json!({ "error": "FUNCTION_INVOCATION_TIMEOUT" })),
            )
                .into_response();
            r.extensions_mut().insert(category);
            r
        }
    };
    if sticky && response.status().is_server_error() {
        state
            .stuck
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let mut categories = tally.take_categories();
    categories.extend(response.extensions().get::<Category>().copied());
    for c in &categories {
        state.metrics.error(*c);
    }
    categories.sort();
    categories.dedup();
    let headers = response.headers_mut();
    if !categories.is_empty() {
        let list: Vec<&str> = categories.iter().map(|c| c.as_str()).collect();
        if let Ok(v) = HeaderValue::from_str(&list.join(",")) {
            headers.insert(ERROR_CATEGORY_HEADER, v);
        }
    }
    let took = started.elapsed();
    if let Ok(v) = HeaderValue::from_str(&incident_wire::server_timing(took)) {
        headers.insert(incident_wire::SERVER_TIMING_HEADER, v);
    }
    headers.insert(DB_WRITES_HEADER, HeaderValue::from(tally.writes()));
    headers.insert(EXTERNAL_CALLS_HEADER, HeaderValue::from(tally.calls()));
    // Webhooks other than EMAIL_SENT get a row of their own, as in the harness's reports.
    let label = incident_wire::endpoint_label(&method, &path, tally.event());
    if response.extensions().get::<Category>() == Some(&Category::FunctionTimeout) {
        state.metrics.cut_off_working(&label);
    }
    state.metrics.request(
        &label,
        response.status().as_u16(),
        took,
        &RequestDone {
            writes: tally.writes(),
            calls: tally.calls(),
            pool_wait: tally.pool_wait(),
            largest_statement: tally.largest_statement(),
        },
    );
    if let (Some(log), Some(uri_path)) = (state.access_log(), uri_path) {
        log.write(&method, &uri_path, response.status().as_u16(), took);
    }
    response
}

/// Fires when the request future is dropped before it finished: the client went away.
struct AbortWatch<'a> {
    state: &'a AppState,
    route: &'a str,
    armed: bool,
}

impl Drop for AbortWatch<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.state.metrics.error(Category::ClientAbort);
        if self.state.switches().legacy_auth_noise {
            tracing::error!(route = self.route, "AbortError: The operation was aborted");
        } else {
            tracing::debug!(
                route = self.route,
                category = Category::ClientAbort.as_str(),
                "client went away"
            );
        }
    }
}
