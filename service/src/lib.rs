//! # inbox-service
//!
//! The reference service for the Phase 53 incident: the system under test. It knows nothing
//! of the harness — configuration in (environment, [`Config`]), HTTP out. Every Phase 53 fix is
//! here, each behind its rollout flag or a legacy switch, so the pre-fix world runs too.
//!
//! # Layout
//! - [`config`]: typed configuration; the rollout flags and legacy switches ([`config::Switches`]).
//! - [`app_state`]: what every handler shares — the process's [`state::Resources`] (the
//!   constrained pool, switches, metrics, the providers' client) and the domain's in-process
//!   state; the domain takes only the resources and the [`tally`] it needs.
//! - [`tally`]: what one request did — rows written, external calls, pool waits.
//! - [`observe`]: middleware — function time limit (504), `x-db-writes` / `x-external-calls`,
//!   request metrics, error categories, client aborts.
//! - [`routes`]: one module per feature, merged by [`app`].
//! - [`domain`]: events and their effects, the job queue, counts, the ledger.
//! - [`auth`]: sessions and the quiet handling of expected-unauthenticated requests.
//! - [`providers`]: GHL / Unipile / AI calls — timeouts, classification, backoff.
//! - [`error`]: the HTTP error type and the error categories.
//! - [`metrics`]: the Prometheus registry.
//! - [`db`]: migrations and the Phase 53 indexes.
//! - [`access_log`]: one JSON line per request, as a log drain holds (opt-in, `ACCESS_LOG`).

pub mod access_log;
pub mod app_state;
pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod metrics;
pub mod observe;
pub mod providers;
pub mod routes;
pub mod state;
pub mod tally;

use std::future::Future;

use axum::Router;
use tokio::net::TcpListener;

pub use app_state::AppState;
pub use config::{Config, Flag, Switches};
pub use state::Faults;

/// The whole application: every feature's router, observed by [`observe::observe`].
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(routes::webhooks::router())
        .merge(routes::inbox::router())
        .merge(routes::ai_draft::router())
        .merge(routes::cron::router())
        .merge(routes::admin::router())
        .merge(routes::ops::router())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state)
}

/// The service as a process: configuration from the environment, bind, print
/// `listening on http://ADDR` on stdout (port 0 picks one), serve until SIGINT or SIGTERM.
pub async fn serve_from_env() -> anyhow::Result<()> {
    use anyhow::Context;
    use tokio::signal::unix::{signal, SignalKind};

    let config = Config::from_env().context("invalid configuration")?;
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot bind {}", config.bind))?;
    let state = AppState::new(config).context("invalid DATABASE_URL")?;
    if let Some(log) = access_log::AccessLog::from_env()? {
        state.set_access_log(log);
    }
    if let Some(faults) = state.test_faults_from_env().map_err(anyhow::Error::msg)? {
        tracing::warn!(?faults, "deliberate bugs turned on (a test)");
    }
    state
        .check_database()
        .await
        .context("cannot reach the database")?;
    println!("listening on http://{}", listener.local_addr()?);
    let mut term = signal(SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    run(listener, state, shutdown).await?;
    Ok(())
}

/// Serves [`app`] on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}
