//! `GET|PUT /admin/flags` (bearer `ADMIN_TOKEN`): read and flip the switches at run time.
//! A PUT takes `{ "NAME": bool, … }`; an unknown name or a non-boolean changes nothing (400).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value};

use crate::app_state::AppState;
use crate::error::AppError;
use crate::routes::require_bearer;

pub fn router() -> Router<AppState> {
    Router::new().route(
        incident_wire::ops::ADMIN_FLAGS,
        get(read_flags).put(set_flags),
    )
}

async fn read_flags(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    require_bearer(&headers, &state.config.secrets.admin)?;
    Ok(Json(
        serde_json::to_value(state.switches().to_map()).expect("a map of bools"),
    ))
}

async fn set_flags(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, AppError> {
    require_bearer(&headers, &state.config.secrets.admin)?;
    let changes: Map<String, Value> = serde_json::from_slice(&body).map_err(|e| {
        AppError::BadRequest(format!(
            "body must be a JSON object of switch names to booleans: {e}"
        ))
    })?;
    let mut switches = state.switches();
    for (name, value) in &changes {
        let on = value.as_bool().ok_or_else(|| {
            AppError::BadRequest(format!("switch {name:?} must be true or false"))
        })?;
        switches.set_named(name, on).map_err(AppError::BadRequest)?;
    }
    state.set_switches(switches);
    let changed = Value::Object(changes);
    tracing::info!(changes = %changed, "switches changed");
    Ok(Json(
        serde_json::to_value(switches.to_map()).expect("a map of bools"),
    ))
}
