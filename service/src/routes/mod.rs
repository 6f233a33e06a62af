//! HTTP routes, one module per feature; each exposes `router()` and [`crate::app`] merges them.
//!
//! - [`webhooks`]: `POST /api/webhooks/email`
//! - [`inbox`]: `GET /`, `POST /api/actions/inbox-counts`
//! - [`ai_draft`]: `POST /api/actions/ai-draft`
//! - [`cron`]: `GET /api/cron/background-jobs`, `GET /api/cron/followups`
//! - [`admin`]: `GET|PUT /admin/flags`
//! - [`ops`]: `GET /metrics`, `GET /healthz`

pub mod admin;
pub mod ai_draft;
pub mod cron;
pub mod inbox;
pub mod ops;
pub mod webhooks;

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::error::AppError;

/// Checks `Authorization: Bearer <secret>` in constant time.
pub fn require_bearer(headers: &HeaderMap, secret: &str) -> Result<(), AppError> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(secret.as_bytes())) && !secret.is_empty() {
        Ok(())
    } else {
        Err(AppError::Unauthorized("missing or wrong bearer token"))
    }
}
