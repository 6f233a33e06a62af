//! What the Docker tests need: a daemon that answers, and the locally built Postgres image.
//!
//! A test that needs Docker runs whenever a daemon answers; when none does it reports itself
//! skipped ([`super::skip`]), or fails where `INCIDENT_LAB_REQUIRE_DOCKER` is set.

use std::path::Path;
use std::process::Command;

/// Runs `docker ARGS`; its stdout, trimmed, or the failure.
pub fn cli(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Whether a Docker daemon answers; why not, when none does.
pub fn daemon() -> Result<(), String> {
    cli(&["version", "--format", "{{.Server.Version}}"])
        .map(drop)
        .map_err(|e| format!("no Docker daemon answers ({e})"))
}

/// `Some(())` when the test can go on; `None` after reporting `test` skipped for `why`.
/// Panics instead of skipping when `INCIDENT_LAB_REQUIRE_DOCKER` is set.
pub fn or_skip(test: &str, ready: Result<(), String>) -> Option<()> {
    super::skip::or_skip(test, &super::skip::DOCKER, ready)
}

/// The Postgres image built from this machine's binaries by `scripts/build-images` (cached:
/// quick when it is up to date). Its tag, or why it cannot be had.
pub fn local_pg_image() -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-images");
    let run = |args: &[&str]| {
        let out = Command::new(&script)
            .args(args)
            .output()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(said.trim().to_owned())
        } else {
            Err(format!("scripts/build-images failed: {}", said.trim()))
        }
    };
    run(&[])?;
    run(&["--print-tag"])
}
