//! The reference service as a child process: one per arm, with its own runtime, killable.
//!
//! The binary is `inbox-service`, built with the harness (same target directory); set
//! `INCIDENT_LAB_SERVICE_BIN` to use another. Its JSON log (stderr) goes to a file in the
//! run's output folder.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Finds the service binary: the override, else beside this executable (or one folder up,
/// for test executables in `deps/`).
pub fn find_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("INCIDENT_LAB_SERVICE_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("INCIDENT_LAB_SERVICE_BIN={} is not a file", p.display());
    }
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    for candidate in [dir.join("inbox-service"), dir.join("../inbox-service")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no inbox-service binary beside {}: build it (cargo build --release, which builds both binaries) or set INCIDENT_LAB_SERVICE_BIN",
        exe.display()
    )
}

/// A running service process; dropping it kills the process.
pub struct ServiceProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl ServiceProcess {
    /// Starts `binary` with `env` (and nothing else of this process's environment but PATH),
    /// logs to `log`, and waits until it prints its address.
    pub async fn start(
        binary: &Path,
        env: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = Command::new(binary);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let wait = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return Ok::<_, std::io::Error>(Some(addr.trim().to_owned()));
                }
            }
            Ok(None)
        };
        match tokio::time::timeout(Duration::from_secs(30), wait).await {
            Ok(Ok(Some(base))) => Ok(Self { child, base }),
            Ok(_) | Err(_) => {
                let _ = child.kill().await;
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                bail!(
                    "the service did not start (see {}): {}",
                    log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            }
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Selected values of one `/metrics` scrape.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Scrape {
    /// Seconds since the load started.
    pub t: f64,
    pub pool_max: f64,
    pub pool_size: f64,
    pub pool_idle: f64,
    pub pool_waiters: f64,
    pub queue_queued: f64,
    pub queue_running: f64,
    /// `errors_total` by category (cumulative).
    pub errors: std::collections::BTreeMap<String, f64>,
}

impl Scrape {
    /// Connections in use.
    pub fn pool_in_use(&self) -> f64 {
        (self.pool_size - self.pool_idle).max(0.0)
    }
}

/// Reads the series the harness uses from Prometheus text.
pub fn parse_metrics(text: &str, t: f64) -> Scrape {
    let mut s = Scrape {
        t,
        ..Scrape::default()
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        match series {
            "db_pool_max" => s.pool_max = v,
            "db_pool_size" => s.pool_size = v,
            "db_pool_idle" => s.pool_idle = v,
            "db_pool_waiters" => s.pool_waiters = v,
            "job_queue_depth{status=\"queued\"}" => s.queue_queued = v,
            "job_queue_depth{status=\"running\"}" => s.queue_running = v,
            other => {
                if let Some(cat) = other
                    .strip_prefix("errors_total{category=\"")
                    .and_then(|r| r.strip_suffix("\"}"))
                {
                    s.errors.insert(cat.to_owned(), v);
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_the_harness_needs_are_read() {
        let text = "# TYPE db_pool_max gauge\ndb_pool_max 10\ndb_pool_size 8\ndb_pool_idle 3\ndb_pool_waiters 12\njob_queue_depth{status=\"queued\"} 40\nerrors_total{category=\"db_timeout\"} 7\nhttp_request_duration_seconds_count{route=\"GET /\",status=\"200\"} 5\n";
        let s = parse_metrics(text, 1.5);
        assert_eq!(
            (s.pool_max, s.pool_in_use(), s.pool_waiters, s.queue_queued),
            (10.0, 5.0, 12.0, 40.0)
        );
        assert_eq!(s.errors["db_timeout"], 7.0);
        assert_eq!(s.t, 1.5);
    }
}
