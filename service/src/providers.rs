//! Calls to the external providers (GHL, Unipile, the AI API).
//!
//! Fixed calls have a timeout, classify failures into the Phase 53 categories, and retry only
//! what is worth retrying, with capped exponential backoff and jitter. Legacy calls
//! (`LEGACY_PROVIDER_CALLS`) have none of that: no timeout, one attempt, any failure raised.

use std::time::Duration;

use rand::Rng;
use reqwest::StatusCode;
use serde_json::Value;

use crate::config::Limits;
use crate::error::{AppError, Category};
use crate::state::Resources;
use crate::tally::Tally;

/// Which provider a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Ghl,
    Unipile,
    Ai,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::Ghl => "ghl",
            Provider::Unipile => "unipile",
            Provider::Ai => "ai",
        }
    }

    fn base(self, state: &Resources) -> &str {
        let p = &state.config.providers;
        match self {
            Provider::Ghl => &p.ghl,
            Provider::Unipile => &p.unipile,
            Provider::Ai => &p.ai,
        }
    }
}

/// A classified provider failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{provider}: {detail}")]
pub struct ProviderError {
    pub provider: &'static str,
    pub category: Category,
    /// Whether another attempt could succeed.
    pub retryable: bool,
    pub detail: String,
}

impl From<ProviderError> for AppError {
    fn from(e: ProviderError) -> Self {
        AppError::Provider {
            provider: e.provider,
            category: Some(e.category),
            detail: e.detail,
        }
    }
}

/// Sorts a failed response into a category; the body's `type` tells disconnections apart.
pub fn classify(provider: &'static str, status: StatusCode, body: &Value) -> ProviderError {
    let kind = body.get("type").and_then(Value::as_str).unwrap_or_default();
    let (category, retryable) = if kind.contains("disconnected") {
        (Category::ProviderDisconnected, false)
    } else if kind.contains("invalid_recipient") {
        (Category::ProviderInvalidRecipient, false)
    } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        (Category::ProviderRetryable, true)
    } else {
        // Other 4xx: our request is wrong; repeating it will not help.
        (Category::ProviderInvalidRecipient, false)
    };
    ProviderError {
        provider,
        category,
        retryable,
        detail: format!("HTTP {status} {kind}"),
    }
}

/// The delay before retry number `attempt` (1-based): `base · 2^(attempt-1)`, capped at 5 s,
/// plus up to `base` of jitter so synchronized clients spread out.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(Duration::from_secs(5));
    let jitter = rand::rng().random_range(0..=base.as_millis() as u64);
    capped + Duration::from_millis(jitter)
}

/// One POST to `provider` with an optional timeout and no retries (the AI verifier's budget,
/// a single LinkedIn send whose retry the cron schedules); counted as an external call.
pub async fn call_once(
    state: &Resources,
    tally: &Tally,
    provider: Provider,
    path: &str,
    body: &Value,
    timeout: Option<Duration>,
) -> Result<Value, ProviderError> {
    tally.called();
    let mut request = state
        .http
        .post(format!("{}{path}", provider.base(state)))
        .json(body);
    if let Some(t) = timeout {
        request = request.timeout(t);
    }
    let failed = |detail: String| ProviderError {
        provider: provider.name(),
        category: Category::ProviderRetryable,
        retryable: true,
        detail,
    };
    let response = request.send().await.map_err(|e| {
        failed(if e.is_timeout() {
            "timed out".to_owned()
        } else {
            "connection failed".to_owned()
        })
    })?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(body)
    } else {
        Err(classify(provider.name(), status, &body))
    }
}

/// A provider call as the current switches say: legacy (one unbounded attempt) or fixed
/// (timeout, retry of retryable failures with backoff, at most `provider_max_attempts`).
pub async fn call(
    state: &Resources,
    tally: &Tally,
    provider: Provider,
    path: &str,
    body: &Value,
) -> Result<Value, ProviderError> {
    if state.switches().legacy_provider_calls {
        return call_once(state, tally, provider, path, body, None).await;
    }
    let Limits {
        provider_timeout,
        provider_max_attempts,
        provider_backoff,
        ..
    } = state.config.limits;
    let mut attempt = 1;
    loop {
        match call_once(state, tally, provider, path, body, Some(provider_timeout)).await {
            Err(e) if e.retryable && attempt < provider_max_attempts => {
                tokio::time::sleep(backoff(provider_backoff, attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn failures_are_classified_by_status_and_type() {
        let d = classify(
            "unipile",
            StatusCode::UNAUTHORIZED,
            &json!({"type": "errors/disconnected_account"}),
        );
        assert_eq!(
            (d.category, d.retryable),
            (Category::ProviderDisconnected, false)
        );
        let i = classify(
            "unipile",
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({"type": "errors/invalid_recipient"}),
        );
        assert_eq!(
            (i.category, i.retryable),
            (Category::ProviderInvalidRecipient, false)
        );
        let r = classify("ghl", StatusCode::TOO_MANY_REQUESTS, &Value::Null);
        assert_eq!(
            (r.category, r.retryable),
            (Category::ProviderRetryable, true)
        );
        let s = classify("ghl", StatusCode::SERVICE_UNAVAILABLE, &Value::Null);
        assert!(s.retryable);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let base = Duration::from_millis(100);
        let first = backoff(base, 1);
        assert!(first >= base && first <= base * 2, "{first:?}");
        let third = backoff(base, 3);
        assert!(third >= base * 4 && third <= base * 5, "{third:?}");
        let late = backoff(base, 30);
        assert!(late <= Duration::from_millis(5_100), "{late:?}");
    }
}
