//! Faults of the Postgres server itself: its processes paused ([`Pause`]), a crash and
//! restart ([`crash_restart`]), a session holding a lock ([`hold_lock`]), CPU-bound sessions
//! ([`burn_cpu`]). Each undoes itself when dropped, so an error or a Ctrl-C never leaves a
//! paused server or a held lock behind.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sqlx::postgres::PgConnection;
use sqlx::{ConnectOptions, Connection};

use crate::model::{FaultKind, Scenario};
use crate::postgres::{Backend, PgServer};

/// Whether this server can take the scenario's Postgres faults: the process faults need a
/// server the harness runs. Checked before the load starts.
pub fn check_supported(scenario: &Scenario, server: &PgServer) -> anyhow::Result<()> {
    let process = scenario
        .faults
        .iter()
        .find(|f| matches!(f.kind(), FaultKind::Pause | FaultKind::Restart));
    if let (Some(f), Backend::Url) = (process, server.backend()) {
        bail!(
            "[[faults]] kind {:?} needs a Postgres the harness runs (--postgres local or docker): this run uses a server given by URL",
            f.kind().name()
        );
    }
    Ok(())
}

/// Every process id on this machine (from `/proc`).
fn all_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
}

/// The processes of a local cluster: the postmaster and its children.
fn cluster_pids(postmaster: u32) -> Vec<u32> {
    std::iter::once(postmaster)
        .chain(all_pids().filter(|pid| parent_of(*pid) == Some(postmaster)))
        .collect()
}

/// The parent pid from `/proc/PID/stat` (the field after the parenthesised name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The server's processes stopped; resumed when dropped (or by [`Pause::resume`]).
pub struct Pause {
    how: Paused,
}

enum Paused {
    Local(Vec<u32>),
    Docker(String),
    Done,
}

impl Pause {
    /// Stops every process of the server: SIGSTOP to the postmaster first (it forks no more),
    /// then its children; `docker pause` for a container. Returns how many processes stopped
    /// (0 for a container: the engine freezes them all).
    pub async fn start(server: &PgServer) -> anyhow::Result<(Self, usize)> {
        if let Some(cluster) = server.local_cluster() {
            let pids = cluster_pids(cluster.pid());
            for pid in &pids {
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGSTOP);
            }
            let n = pids.len();
            return Ok((
                Self {
                    how: Paused::Local(pids),
                },
                n,
            ));
        }
        if let Some(id) = server.container_id() {
            let out = tokio::process::Command::new("docker")
                .args(["pause", &id])
                .output()
                .await
                .context("running docker pause")?;
            if !out.status.success() {
                bail!(
                    "docker pause failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            return Ok((
                Self {
                    how: Paused::Docker(id),
                },
                0,
            ));
        }
        bail!("pausing Postgres needs a local cluster or a container")
    }

    /// Resumes (SIGCONT in reverse order; `docker unpause`). Idempotent.
    pub fn resume(&mut self) {
        match std::mem::replace(&mut self.how, Paused::Done) {
            Paused::Local(pids) => {
                for pid in pids.iter().rev() {
                    let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGCONT);
                }
            }
            Paused::Docker(id) => {
                let _ = std::process::Command::new("docker")
                    .args(["unpause", &id])
                    .output();
            }
            Paused::Done => {}
        }
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        self.resume();
    }
}

/// A harness connection to `db`, with no statement timeout of the scenario's.
pub async fn connect(server: &PgServer, db: &str) -> anyhow::Result<PgConnection> {
    server
        .connect_options(db)
        .options([("statement_timeout", "0")])
        .connect()
        .await
        .with_context(|| format!("connecting to {db} for a fault"))
}

/// The host pid of a backend whose pid, as Postgres reports it, is `ns_pid`: the same on a
/// local cluster; in a container, the process whose innermost pid namespace id matches and
/// that belongs to the container's cgroup.
fn host_pid(server: &PgServer, ns_pid: u32) -> Option<u32> {
    if server.local_cluster().is_some() {
        return Some(ns_pid);
    }
    let id = server.container_id()?;
    for pid in all_pids() {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let inner = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|l| l.split_whitespace().last()?.parse::<u32>().ok());
        let in_container =
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(&id));
        if inner == Some(ns_pid) && in_container {
            return Some(pid);
        }
    }
    None
}

/// Crashes Postgres the way a killed backend does: the postmaster ends every session, runs
/// crash recovery and accepts connections again. Returns how long until a new connection to
/// `db` succeeded.
pub async fn crash_restart(server: &PgServer, db: &str) -> anyhow::Result<Duration> {
    let mut victim = connect(server, db).await?;
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut victim)
        .await?;
    let host = host_pid(server, pid as u32).with_context(|| {
        format!("cannot find the backend (pid {pid}) among this machine's processes")
    })?;
    let started = Instant::now();
    kill(Pid::from_raw(host as i32), Signal::SIGKILL)
        .with_context(|| format!("cannot kill the backend (pid {host})"))?;
    drop(victim);
    // The postmaster notices the crash, ends every session and recovers; wait for it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let deadline = started + Duration::from_secs(60);
    loop {
        if let Ok(mut c) = connect(server, db).await {
            if sqlx::query("SELECT 1").execute(&mut c).await.is_ok() {
                let _ = c.close().await;
                return Ok(started.elapsed());
            }
        }
        if Instant::now() > deadline {
            bail!("Postgres did not accept connections within 60 s of the crash");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks that `table` exists in `db` (before the load, so a typo fails at once).
pub async fn check_table(server: &PgServer, db: &str, table: &str) -> anyhow::Result<()> {
    let mut conn = connect(server, db).await?;
    let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(table)
        .fetch_one(&mut conn)
        .await?;
    let _ = conn.close().await;
    if found.is_none() {
        bail!(
            "[[faults]] kind \"lock\": table {table:?} does not exist in the scenario's database"
        );
    }
    Ok(())
}

/// A session holding `LOCK TABLE table IN mode MODE` until it is dropped (the transaction is
/// rolled back, or ends with the connection).
pub async fn hold_lock(
    server: &PgServer,
    db: &str,
    table: &str,
    mode: &str,
) -> anyhow::Result<PgConnection> {
    if !crate::model::LOCK_MODES.contains(&mode) {
        bail!("{mode:?} is not a lock mode");
    }
    let mut conn = connect(server, db).await?;
    sqlx::raw_sql("BEGIN").execute(&mut conn).await?;
    // The table was checked as an identifier and the mode against the list of modes.
    let sql = format!(
        "LOCK TABLE {} IN {mode} MODE",
        crate::postgres::quote_ident(table)
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .with_context(|| format!("locking {table} in {mode} mode"))?;
    Ok(conn)
}

/// Ends a held lock: rollback, close.
pub async fn release_lock(mut conn: PgConnection) {
    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut conn).await;
    let _ = conn.close().await;
}

/// `sessions` CPU-bound loops (PL/pgSQL, no I/O) for `length`, each ended by its own
/// statement timeout;
/// aborted when the handles are dropped.
pub async fn burn_cpu(
    server: &PgServer,
    db: &str,
    sessions: u32,
    length: Duration,
) -> anyhow::Result<Vec<AbortOnDrop>> {
    let mut out = Vec::new();
    for _ in 0..sessions {
        let mut conn = connect(server, db).await?;
        let ms = length.as_millis().max(1);
        out.push(AbortOnDrop(tokio::spawn(async move {
            let sql = format!(
                "SET statement_timeout = {ms}; DO $$ DECLARE x float8 := 0; BEGIN LOOP x := x + sqrt(random()); END LOOP; END $$"
            );
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await;
            let _ = conn.close().await;
        })));
    }
    Ok(out)
}

/// A task aborted when this is dropped.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
