//! Logging: structured `tracing` to stderr, filtered by `RUST_LOG` with a quiet fallback;
//! colours only on a terminal (never in a file or a CI log), and never with `NO_COLOR` set.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls are no-ops (tests call it freely).
/// sqlx's slow-statement warnings are off by default: the seeder's statements are slow by
/// design, and the service reports its own slow paths.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,incident_lab=info,sqlx::query=error"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The service's logging: one JSON object per line on stderr (the matrix keeps it per arm).
pub fn init_service() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_ansi(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
