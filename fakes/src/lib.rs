//! # fake-providers
//!
//! Stand-ins for the service's external providers — GHL (CRM contact sync), Unipile (LinkedIn
//! sends) and the AI draft/verify API — as real HTTP servers on loopback. Each has knobs
//! (latency, error mix, truncation, known-disconnected workspaces) that a test or the harness
//! changes at run time, and counters of the calls received per workspace and outcome, so a
//! test can prove "no LinkedIn send reached a disconnected workspace".
//!
//! Routes: `POST /ghl/contacts/upsert`, `POST /unipile/api/v1/messages`,
//! `POST /unipile/api/v1/accounts/status` (the health probe), `POST /ai/v1/draft`,
//! `POST /ai/v1/verify`; control: `GET|PUT /_control/{provider}`, `GET /_counters`,
//! `POST /_control/reset`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// The three providers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Ghl,
    Unipile,
    Ai,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Ghl, Provider::Unipile, Provider::Ai];

    fn parse(s: &str) -> Option<Provider> {
        match s {
            "ghl" => Some(Provider::Ghl),
            "unipile" => Some(Provider::Unipile),
            "ai" => Some(Provider::Ai),
            _ => None,
        }
    }

    /// Path prefix of the provider's API on the fake server.
    pub fn prefix(self) -> &'static str {
        match self {
            Provider::Ghl => "/ghl",
            Provider::Unipile => "/unipile",
            Provider::Ai => "/ai",
        }
    }
}

/// Response latency: `base_ms` plus uniform jitter, and a slow tail.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Latency {
    pub base_ms: u64,
    pub jitter_ms: u64,
    /// Percentage of calls that take `slow_ms` instead.
    pub slow_pct: f64,
    pub slow_ms: u64,
}

/// Percentages of calls answered with each failure (the rest succeed).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorMix {
    /// 503.
    pub server_error_pct: f64,
    /// 429.
    pub rate_limit_pct: f64,
    /// 401 `errors/disconnected_account`.
    pub disconnected_pct: f64,
    /// 422 `errors/invalid_recipient`.
    pub invalid_recipient_pct: f64,
}

/// One provider's behaviour.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Knobs {
    pub latency: Latency,
    pub errors: ErrorMix,
    /// AI verify: percentage of answers cut short (`finish_reason: "length"`).
    pub truncation_pct: f64,
    /// Unipile: workspaces whose account is disconnected (every send gets 401).
    pub disconnected_workspaces: BTreeSet<i64>,
}

/// Calls received, by provider, workspace and outcome.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// provider → workspace id → calls.
    pub by_workspace: BTreeMap<Provider, BTreeMap<i64, u64>>,
    /// provider → outcome (`ok`, `503`, `429`, `disconnected`, …) → calls.
    pub by_outcome: BTreeMap<Provider, BTreeMap<String, u64>>,
    /// provider → the body's `idempotency_key` → calls that succeeded: an external effect,
    /// counted per event to find the ones made twice.
    #[serde(default)]
    pub ok_by_key: BTreeMap<Provider, BTreeMap<String, u64>>,
}

impl Counters {
    /// Calls `provider` received for `workspace`.
    pub fn calls(&self, provider: Provider, workspace: i64) -> u64 {
        self.by_workspace
            .get(&provider)
            .and_then(|m| m.get(&workspace))
            .copied()
            .unwrap_or(0)
    }

    /// All calls `provider` received.
    pub fn total(&self, provider: Provider) -> u64 {
        self.by_outcome
            .get(&provider)
            .map_or(0, |m| m.values().sum())
    }
}

struct Inner {
    knobs: Mutex<BTreeMap<Provider, Knobs>>,
    counters: Mutex<Counters>,
    rng: Mutex<StdRng>,
}

/// A handle on the fakes' state, shared by the server and whoever controls it.
#[derive(Clone)]
pub struct Fakes(Arc<Inner>);

impl Fakes {
    /// Fakes with default knobs (fast, no errors); `seed` makes the error rolls repeatable.
    pub fn new(seed: u64) -> Self {
        Self(Arc::new(Inner {
            knobs: Mutex::new(
                Provider::ALL
                    .iter()
                    .map(|p| (*p, Knobs::default()))
                    .collect(),
            ),
            counters: Mutex::new(Counters::default()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }))
    }

    /// Replaces `provider`'s knobs.
    pub fn set(&self, provider: Provider, knobs: Knobs) {
        self.0
            .knobs
            .lock()
            .expect("knobs lock")
            .insert(provider, knobs);
    }

    /// `provider`'s current knobs.
    pub fn knobs(&self, provider: Provider) -> Knobs {
        self.0.knobs.lock().expect("knobs lock")[&provider].clone()
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.0.counters.lock().expect("counters lock").clone()
    }

    /// Zeroes the counters.
    pub fn reset_counters(&self) {
        *self.0.counters.lock().expect("counters lock") = Counters::default();
    }

    /// The router serving the fake APIs and the control API.
    pub fn router(&self) -> Router {
        use incident_wire::provider_path as path;
        let at = |provider: Provider, path: &str| format!("{}{path}", provider.prefix());
        Router::new()
            .route(
                &at(Provider::Ghl, path::GHL_CONTACT_UPSERT),
                post(ghl_upsert),
            )
            .route(
                &at(Provider::Unipile, path::UNIPILE_SEND),
                post(unipile_send),
            )
            .route(
                &at(Provider::Unipile, path::UNIPILE_ACCOUNT_STATUS),
                post(unipile_status),
            )
            .route(&at(Provider::Ai, path::AI_DRAFT), post(ai_draft))
            .route(&at(Provider::Ai, path::AI_VERIFY), post(ai_verify))
            .route("/_control/{provider}", get(get_knobs).put(put_knobs))
            .route("/_control/reset", post(reset))
            .route("/_counters", get(counters))
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Binds 127.0.0.1:0 and serves in a background task; the task ends with the runtime.
    pub async fn spawn(&self) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let me = self.clone();
        tokio::spawn(async move { me.serve(listener, std::future::pending()).await });
        Ok(addr)
    }

    /// Rolls the outcome, counts the call as it arrives (a caller that gives up during the
    /// latency still made the call), then waits out the latency knob.
    async fn call(&self, provider: Provider, body: &Value) -> Outcome {
        let workspace = workspace_of(body);
        let knobs = self.knobs(provider);
        let (delay, roll, truncate) = {
            let mut rng = self.0.rng.lock().expect("rng lock");
            let l = &knobs.latency;
            let delay = if l.slow_pct > 0.0 && rng.random_range(0.0..100.0) < l.slow_pct {
                l.slow_ms
            } else {
                l.base_ms
                    + if l.jitter_ms > 0 {
                        rng.random_range(0..=l.jitter_ms)
                    } else {
                        0
                    }
            };
            (
                delay,
                rng.random_range(0.0..100.0),
                rng.random_range(0.0..100.0) < knobs.truncation_pct,
            )
        };
        let e = &knobs.errors;
        let outcome = if provider == Provider::Unipile
            && knobs.disconnected_workspaces.contains(&workspace)
        {
            Outcome::Disconnected
        } else if roll < e.server_error_pct {
            Outcome::ServerError
        } else if roll < e.server_error_pct + e.rate_limit_pct {
            Outcome::RateLimited
        } else if roll < e.server_error_pct + e.rate_limit_pct + e.disconnected_pct {
            Outcome::Disconnected
        } else if roll
            < e.server_error_pct + e.rate_limit_pct + e.disconnected_pct + e.invalid_recipient_pct
        {
            Outcome::InvalidRecipient
        } else if truncate {
            Outcome::Truncated
        } else {
            Outcome::Ok
        };
        {
            let mut c = self.0.counters.lock().expect("counters lock");
            *c.by_workspace
                .entry(provider)
                .or_default()
                .entry(workspace)
                .or_default() += 1;
            *c.by_outcome
                .entry(provider)
                .or_default()
                .entry(outcome.label().to_owned())
                .or_default() += 1;
            let key = body.get("idempotency_key").and_then(Value::as_str);
            if let (Some(key), None) = (key, outcome.failure()) {
                *c.ok_by_key
                    .entry(provider)
                    .or_default()
                    .entry(key.to_owned())
                    .or_default() += 1;
            }
        }
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        outcome
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Truncated,
    ServerError,
    RateLimited,
    Disconnected,
    InvalidRecipient,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Truncated => "truncated",
            Outcome::ServerError => "503",
            Outcome::RateLimited => "429",
            Outcome::Disconnected => "disconnected",
            Outcome::InvalidRecipient => "invalid_recipient",
        }
    }

    /// The failure response, or `None` when the call succeeds (truncation is a success).
    fn failure(self) -> Option<Response> {
        let (status, kind) = match self {
            Outcome::Ok | Outcome::Truncated => return None,
            Outcome::ServerError => (StatusCode::SERVICE_UNAVAILABLE, "errors/unavailable"),
            Outcome::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "errors/rate_limited"),
            Outcome::Disconnected => (StatusCode::UNAUTHORIZED, "errors/disconnected_account"),
            Outcome::InvalidRecipient => {
                (StatusCode::UNPROCESSABLE_ENTITY, "errors/invalid_recipient")
            }
        };
        Some((status, Json(json!({ "type": kind }))).into_response())
    }
}

fn workspace_of(body: &Value) -> i64 {
    body.get("workspace_id")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

async fn ghl_upsert(State(f): State<Fakes>, Json(body): Json<Value>) -> Response {
    let outcome = f.call(Provider::Ghl, &body).await;
    outcome.failure().unwrap_or_else(|| {
        let id = format!(
            "ghl_{}",
            body.get("email_hash")
                .and_then(Value::as_str)
                .unwrap_or("x")
        );
        Json(json!({ "contact": { "id": id } })).into_response()
    })
}

async fn unipile_send(State(f): State<Fakes>, Json(body): Json<Value>) -> Response {
    let outcome = f.call(Provider::Unipile, &body).await;
    outcome.failure().unwrap_or_else(|| {
        (
            StatusCode::CREATED,
            Json(json!({ "object": "MessageSent" })),
        )
            .into_response()
    })
}

/// The account's status: 200 when connected; a disconnected workspace's account answers as a
/// send would (the health gate's probe).
async fn unipile_status(State(f): State<Fakes>, Json(body): Json<Value>) -> Response {
    let outcome = f.call(Provider::Unipile, &body).await;
    outcome.failure().unwrap_or_else(|| {
        Json(json!({ "object": "AccountStatus", "status": "OK" })).into_response()
    })
}

async fn ai_draft(State(f): State<Fakes>, Json(body): Json<Value>) -> Response {
    let outcome = f.call(Provider::Ai, &body).await;
    outcome.failure().unwrap_or_else(|| {
        Json(json!({ "text": "Thanks for getting back to me — would Tuesday at 10:00 work for a short call?" }))
            .into_response()
    })
}

async fn ai_verify(State(f): State<Fakes>, Json(body): Json<Value>) -> Response {
    let outcome = f.call(Provider::Ai, &body).await;
    let draft = body
        .get("draft")
        .and_then(Value::as_str)
        .unwrap_or_default();
    outcome.failure().unwrap_or_else(|| {
        if outcome == Outcome::Truncated {
            let cut: String = draft.chars().take(draft.chars().count() / 2).collect();
            Json(json!({ "text": cut, "finish_reason": "length" })).into_response()
        } else {
            Json(json!({ "text": draft, "finish_reason": "stop" })).into_response()
        }
    })
}

async fn get_knobs(State(f): State<Fakes>, Path(provider): Path<String>) -> Response {
    match Provider::parse(&provider) {
        Some(p) => Json(f.knobs(p)).into_response(),
        None => unknown_provider(&provider),
    }
}

async fn put_knobs(
    State(f): State<Fakes>,
    Path(provider): Path<String>,
    Json(knobs): Json<Knobs>,
) -> Response {
    match Provider::parse(&provider) {
        Some(p) => {
            f.set(p, knobs.clone());
            Json(knobs).into_response()
        }
        None => unknown_provider(&provider),
    }
}

fn unknown_provider(name: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": format!("unknown provider {name:?}: expected ghl, unipile or ai") })),
    )
        .into_response()
}

async fn reset(State(f): State<Fakes>) -> StatusCode {
    f.reset_counters();
    StatusCode::NO_CONTENT
}

async fn counters(State(f): State<Fakes>) -> Json<Counters> {
    Json(f.counters())
}
