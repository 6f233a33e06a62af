//! `inbox-service`: the reference service as a process (the harness starts one per arm).
//! Configuration from the environment (see the README); JSON logs on stderr.

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
    inbox_service::serve_from_env().await
}
