//! Logging: structured `tracing` to stderr, filtered by `RUST_LOG` with a quiet fallback.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls are no-ops (tests call it freely).
/// sqlx's slow-statement warnings are off by default: the seeder's statements are slow by
/// design, and the service reports its own slow paths.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,incident_lab=info,sqlx::query=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
