//! PgBouncer between the service instances and Postgres, started and stopped by the harness
//! like the local cluster: a config generated per arm in a temp directory of its own, run as
//! the `postgres` user (PgBouncer refuses root too), its admin console read each second.
//!
//! Prepared statements, the choice made: sqlx prepares a statement in a round trip of its own
//! (Parse, Describe, Sync) before it binds and executes it (another Sync). In transaction
//! mode PgBouncer hands the server connection back at the first Sync outside a transaction, so
//! the Bind can land on another server connection, where the statement is missing — or, for
//! an unnamed one, is somebody else's. Turning sqlx's statement cache off does not help (it
//! then names a new statement per query and never closes it). PgBouncer 1.21 and later track
//! prepared statements per client (`max_prepared_statements`) and make this work; Debian 12's
//! package is 1.18. So:
//! - `pool_mode = "transaction"` runs on PgBouncer ≥ 1.21, with `max_prepared_statements`
//!   set, and the service keeps its statement cache; on an older PgBouncer the arm refuses to
//!   start and says why.
//! - `pool_mode = "session"` runs on any PgBouncer: a client holds a server connection from
//!   its first query until it disconnects, and `DEALLOCATE ALL` clears its statements before
//!   the next client gets it (so sqlx's fresh cache never collides).
//!
//! PgBouncer refuses a client's `options` startup parameter, so the scenario's
//! `statement_timeout` is set on each server connection by PgBouncer's `connect_query` (as a
//! managed Postgres sets it per role), which `DEALLOCATE ALL` leaves in place.

use std::fmt::Write as _;
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Row};

use crate::model::PoolerSpec;
use crate::postgres::PgServer;
use crate::service_proc::PoolerScrape;

/// Where Debian's package puts the binary (`/usr/sbin`, not on every user's PATH).
const CANDIDATES: [&str; 3] = [
    "/usr/sbin/pgbouncer",
    "/usr/bin/pgbouncer",
    "/usr/local/bin/pgbouncer",
];

/// The `pgbouncer` binary, or what to install.
pub fn find_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("INCIDENT_LAB_PGBOUNCER") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("INCIDENT_LAB_PGBOUNCER={} is not a file", p.display());
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("pgbouncer"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .chain(on_path)
        .find(|p| p.is_file())
        .context("the scenario has a [pooler] and no pgbouncer binary was found: install Debian's `pgbouncer` package (scripts/setup does), or set INCIDENT_LAB_PGBOUNCER")
}

/// A running PgBouncer. Dropping it stops the process and removes its directory.
pub struct PgBouncer {
    child: std::sync::Mutex<Option<Child>>,
    pid: u32,
    port: u16,
    dir: tempfile::TempDir,
    user: String,
    /// The admin console, opened on the first scrape.
    admin: tokio::sync::Mutex<Option<PgConnection>>,
}

/// The `[databases]` line's value quoted for PgBouncer's ini format.
fn quoted(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// The configuration for `spec`, listening on `port`, forwarding every database to `server`.
fn config(
    spec: &PoolerSpec,
    dir: &Path,
    port: u16,
    server: &PgConnectOptions,
    statement_timeout: Option<Duration>,
) -> String {
    let mut db = format!(
        "host={} port={} user={}",
        server.get_host(),
        server.get_port(),
        server.get_username()
    );
    if let Some(t) = statement_timeout {
        let _ = write!(
            db,
            " connect_query={}",
            quoted(&format!("SET statement_timeout = {}", t.as_millis()))
        );
    }
    let prepared = match spec.pool_mode.as_str() {
        "transaction" => "max_prepared_statements = 200\n",
        _ => "server_reset_query = DEALLOCATE ALL\n",
    };
    format!(
        "[databases]\n* = {db}\n\n[pgbouncer]\n{prepared}\
         listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
         auth_type = trust\nauth_file = {auth}\nadmin_users = {user}\n\
         pool_mode = {mode}\ndefault_pool_size = {size}\nmin_pool_size = 0\nreserve_pool_size = 0\n\
         max_client_conn = {clients}\nquery_wait_timeout = {wait}\n\
         ignore_startup_parameters = extra_float_digits\n\
         server_check_delay = 30\nstats_period = 1\n\
         logfile = {log}\nlog_connections = 0\nlog_disconnections = 0\nlog_pooler_errors = 1\n",
        auth = dir.join("userlist.txt").display(),
        user = server.get_username(),
        mode = spec.pool_mode,
        size = spec.default_pool_size,
        clients = spec.max_client_conn,
        wait = spec.query_wait_timeout.as_secs(),
        log = dir.join("pgbouncer.log").display(),
    )
}

impl PgBouncer {
    /// Starts PgBouncer in front of `server` (every database), with `spec`'s pool; waits until
    /// its admin console answers.
    pub async fn start(
        spec: &PoolerSpec,
        server: &PgServer,
        statement_timeout: Option<Duration>,
    ) -> anyhow::Result<Self> {
        let binary = find_binary()?;
        let version = version(&binary)?;
        if spec.pool_mode == "transaction" && version < (1, 21) {
            bail!(
                "[pooler] pool_mode = \"transaction\" needs PgBouncer 1.21 or later (max_prepared_statements), and {} is {}.{}: sqlx prepares each statement in a round trip of its own, which transaction pooling may send to another server connection than its execution. Use pool_mode = \"session\" with this PgBouncer (see src/fleet/pooler.rs)",
                binary.display(),
                version.0,
                version.1
            );
        }
        let who = crate::postgres::local::run_as().map_err(anyhow::Error::msg)?;
        let dir = tempfile::Builder::new()
            .prefix("incident-lab-pgbouncer-")
            .tempdir()
            .context("cannot create a temp dir for pgbouncer")?;
        let options = server.connect_options("postgres");
        let user = options.get_username().to_owned();
        let port = crate::postgres::local::free_port().map_err(anyhow::Error::msg)?;
        let password = server.password().unwrap_or_default();
        std::fs::write(
            dir.path().join("userlist.txt"),
            format!("{} {}\n", quoted_dq(&user), quoted_dq(&password)),
        )?;
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(
            &ini,
            config(spec, dir.path(), port, &options, statement_timeout),
        )?;
        for f in ["", "userlist.txt", "pgbouncer.ini"] {
            chown(dir.path().join(f), Some(who.uid), Some(who.gid)).with_context(|| {
                format!("cannot hand {} to the postgres user", dir.path().display())
            })?;
        }
        let child = who
            .command(binary.clone())
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a terminal's Ctrl-C goes to the harness, which stops it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        let pid = child.id();
        crate::interrupt::register_child(pid, format!("pgbouncer ({})", dir.path().display()));
        let mut me = Self {
            child: std::sync::Mutex::new(Some(child)),
            pid,
            port,
            dir,
            user,
            admin: tokio::sync::Mutex::new(None),
        };
        me.wait_ready().await?;
        Ok(me)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let exited = self
                .child
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                bail!(
                    "pgbouncer exited ({status}) before accepting connections:\n{}",
                    self.log_tail()
                );
            }
            match self.admin_options().connect().await {
                Ok(conn) => {
                    *self.admin.get_mut() = Some(conn);
                    return Ok(());
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(25)).await
                }
                Err(e) => bail!(
                    "pgbouncer does not answer after 10 s ({e}):\n{}",
                    self.log_tail()
                ),
            }
        }
    }

    fn admin_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(&self.user)
            .database("pgbouncer")
            .statement_cache_capacity(0)
            .disable_statement_logging()
    }

    /// The URL the service instances use for database `db`, with the password (if any).
    pub fn url(&self, server: &PgServer, db: &str) -> String {
        let direct = server.url(db, true);
        let (userinfo, _) = direct
            .trim_start_matches("postgres://")
            .split_once('@')
            .unwrap_or(("", ""));
        format!("postgres://{userinfo}@127.0.0.1:{}/{db}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The directory of its config and log; removed when it stops.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `SHOW POOLS` and `SHOW STATS` for database `db`; `None` if the console did not answer.
    pub async fn scrape(&self, db: &str) -> Option<PoolerScrape> {
        let mut admin = self.admin.lock().await;
        if admin.is_none() {
            *admin = self.admin_options().connect().await.ok();
        }
        let conn = admin.as_mut()?;
        let read = async {
            let mut s = PoolerScrape::default();
            for row in sqlx::raw_sql("SHOW POOLS").fetch_all(&mut *conn).await? {
                if text(&row, "database").as_deref() != Some(db) {
                    continue;
                }
                s.cl_active += number(&row, "cl_active");
                s.cl_waiting += number(&row, "cl_waiting");
                s.sv_active += number(&row, "sv_active");
                s.sv_idle += number(&row, "sv_idle");
                let maxwait = number(&row, "maxwait") + number(&row, "maxwait_us") / 1e6;
                s.maxwait_s = s.maxwait_s.max(maxwait);
            }
            for row in sqlx::raw_sql("SHOW STATS").fetch_all(&mut *conn).await? {
                if text(&row, "database").as_deref() != Some(db) {
                    continue;
                }
                s.wait_s += number(&row, "total_wait_time") / 1e6;
                s.transactions += number(&row, "total_xact_count");
            }
            Ok::<_, sqlx::Error>(s)
        };
        match tokio::time::timeout(Duration::from_secs(2), read).await {
            Ok(Ok(s)) => Some(s),
            _ => {
                // A broken console connection is opened again on the next scrape.
                *admin = None;
                None
            }
        }
    }

    fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// The lines of its log that say it refused or failed something (for the report).
    pub fn errors_logged(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" ERROR ") || l.contains(" WARNING "))
            .map(str::to_owned)
            .collect()
    }

    /// SIGTERM (PgBouncer's immediate shutdown), SIGKILL after 5 s. Idempotent.
    pub fn stop(&self) {
        let taken = self.child.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut child) = taken else {
            return;
        };
        let pid = Pid::from_raw(self.pid as i32);
        let start = Instant::now();
        let _ = kill(pid, Signal::SIGTERM);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if start.elapsed() > Duration::from_secs(5) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        crate::interrupt::unregister_child(self.pid);
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `pgbouncer --version`'s `PgBouncer 1.18.0` as (1, 18).
fn version(binary: &Path) -> anyhow::Result<(u32, u32)> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {} --version", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_version(&text).with_context(|| {
        format!(
            "{} --version printed no version: {text:?}",
            binary.display()
        )
    })
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.lines().next()?.strip_prefix("PgBouncer ")?;
    let mut parts = v.trim().split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// A name or password in PgBouncer's auth file: double-quoted, `"` doubled.
fn quoted_dq(v: &str) -> String {
    format!("\"{}\"", v.replace('"', "\"\""))
}

fn text(row: &sqlx::postgres::PgRow, column: &str) -> Option<String> {
    row.try_get::<Option<String>, _>(column).ok().flatten()
}

/// A numeric column, whatever integer type the console declares (0 when absent).
fn number(row: &sqlx::postgres::PgRow, column: &str) -> f64 {
    if let Ok(Some(v)) = row.try_get::<Option<i64>, _>(column) {
        return v as f64;
    }
    if let Ok(Some(v)) = row.try_get::<Option<i32>, _>(column) {
        return v as f64;
    }
    if let Ok(Some(v)) = row.try_get::<Option<i16>, _>(column) {
        return v as f64;
    }
    // SHOW STATS declares its totals numeric; the console answers in text: read the text.
    row.try_get_unchecked::<Option<String>, _>(column)
        .ok()
        .flatten()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_pools_in_the_scenarios_mode_and_sets_the_timeout_per_server_connection() {
        let spec = PoolerSpec {
            kind: "pgbouncer".into(),
            pool_mode: "transaction".into(),
            default_pool_size: 15,
            max_client_conn: 200,
            query_wait_timeout: Duration::from_secs(3),
        };
        let server = PgConnectOptions::new()
            .host("127.0.0.1")
            .port(5433)
            .username("postgres");
        let ini = config(
            &spec,
            Path::new("/tmp/x"),
            6432,
            &server,
            Some(Duration::from_millis(300)),
        );
        for line in [
            "* = host=127.0.0.1 port=5433 user=postgres connect_query='SET statement_timeout = 300'",
            "pool_mode = transaction",
            "default_pool_size = 15",
            "max_client_conn = 200",
            "query_wait_timeout = 3",
            "listen_port = 6432",
            "auth_file = /tmp/x/userlist.txt",
        ] {
            assert!(ini.lines().any(|l| l == line), "no line {line:?} in\n{ini}");
        }
        assert!(ini.contains("max_prepared_statements = 200"), "{ini}");
        let session = PoolerSpec {
            pool_mode: "session".into(),
            ..spec
        };
        let ini = config(&session, Path::new("/tmp/x"), 6432, &server, None);
        assert!(
            ini.contains("server_reset_query = DEALLOCATE ALL") && !ini.contains("connect_query"),
            "{ini}"
        );
        assert_eq!(
            parse_version("PgBouncer 1.18.0\nlibevent 2.1.12"),
            Some((1, 18))
        );
        assert_eq!(parse_version("PgBouncer 1.23.1"), Some((1, 23)));
        assert_eq!(parse_version("pgbouncer"), None);
        assert_eq!(quoted("a'b"), "'a''b'");
        assert_eq!(quoted_dq("p\"w"), "\"p\"\"w\"");
    }
}
