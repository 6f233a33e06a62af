//! Helpers shared by the integration tests: real Postgres, nothing mocked.
#![allow(dead_code)]

use std::net::TcpStream;
use std::time::Duration;

use incident_lab::postgres::{
    PgServer, PgSettings, PostgresChoice, ProvisionRequest, DEFAULT_PG_IMAGE,
};

/// A request for a local cluster with `settings`.
pub fn local_request(settings: PgSettings) -> ProvisionRequest {
    ProvisionRequest {
        choice: PostgresChoice::Local,
        pg_bin: None,
        pg_image: DEFAULT_PG_IMAGE.to_owned(),
        settings,
    }
}

/// A fresh local cluster with default settings.
pub async fn local_server() -> PgServer {
    // Tests are quiet unless asked (RUST_LOG=...).
    if std::env::var_os("RUST_LOG").is_some() {
        incident_lab::telemetry::init();
    }
    PgServer::provision(&local_request(PgSettings::default()))
        .await
        .expect("a local Postgres cluster starts")
}

/// Runs the `incident-lab` binary with `args`, outside any ambient Postgres configuration.
pub fn incident_lab(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_incident-lab"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("INCIDENT_LAB_POSTGRES")
        .output()
        .expect("the binary runs")
}

/// The id of a process that has exited (for owner markers that must name a dead process).
pub fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    child.id()
}

/// Whether a process with this id runs: it exists and is not a zombie (a process that has
/// exited and waits to be reaped — by init, when its parent was killed — runs no more).
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300)).is_ok()
}

pub mod app;
pub mod certs;
pub mod docker;
pub mod harness;
pub mod logs;
pub mod scenarios;
pub mod skip;

/// `incident-lab ARGS…` for a run against a service the harness did not start: the service's
/// secrets set (as `up` prints them), no ADMIN_TOKEN from the environment, no terminal.
pub fn against_target(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_incident-lab"));
    cmd.args(args)
        .env("WEBHOOK_SECRET", "w")
        .env("SESSION_SECRET", "s")
        .env("CRON_SECRET", "c")
        .env_remove("ADMIN_TOKEN")
        .stdin(std::process::Stdio::null());
    cmd
}
