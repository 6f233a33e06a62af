//! `GET /metrics` (Prometheus text) and `GET /healthz`.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use incident_wire::ops;

use crate::app_state::AppState;
use crate::domain::jobs;
use crate::metrics::Gauges;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(ops::METRICS, get(metrics))
        .route(ops::HEALTHZ, get(|| async { "ok" }))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // The queue depth comes over the separate ops connection, so a saturated application pool
    // cannot stall a scrape; if even that is busy, the gauge says so (-1) instead of waiting.
    let queue = match state.ops_pool.acquire().await {
        Ok(mut conn) => jobs::depth(&mut conn).await.ok(),
        Err(_) => None,
    };
    let gauges = Gauges {
        pool_max: state.config.limits.pool_max,
        pool_size: state.pool.size(),
        pool_idle: state.pool.num_idle() as u32,
        pool_waiters: state.pool_waiters(),
        enqueue_statements: state.intake().written().statements,
        enqueue_rows: state.intake().written().rows,
        queue,
        switches: state.switches().to_map(),
    };
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&gauges),
    )
}
