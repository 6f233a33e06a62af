//! `inbox-service`: reads its configuration from the environment, binds, serves until
//! SIGINT/SIGTERM. Prints `listening on http://ADDR` on stdout once bound (port 0 picks one).

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = inbox_service::Config::from_env().context("invalid configuration")?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot bind {}", config.bind))?;
    let state = inbox_service::AppState::new(config).context("invalid DATABASE_URL")?;
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
    inbox_service::run(listener, state, shutdown).await?;
    Ok(())
}
