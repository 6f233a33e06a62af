//! Postgres provisioning: one interface, three backends.
//!
//! - [`local`]: an ephemeral cluster from the Postgres binaries on this machine.
//! - [`docker`]: a testcontainers Postgres from a configurable image.
//! - a URL: an existing server on which the harness creates and drops its own databases.
//!
//! Beside them: [`choice`] (which backend, and why), `settings` ([`PgSettings`]), `owner`
//! (whose leftovers are whose). This module is the server itself: [`PgServer`].
//!
//! [`PgServer::provision`] picks one ([`PostgresChoice::Auto`] says which and why), applies
//! the scenario's constrained settings ([`PgSettings`]) and hands out databases. Whatever the
//! backend, teardown is the same: [`PgServer::shutdown`] (or, failing that, `Drop`) leaves no
//! server process, no temp dir and no harness database behind.

pub mod autogroup;
pub mod choice;
pub mod docker;
pub mod local;
mod owner;

use choice::{choose, url_admin_options, url_of};
pub use choice::{mask_url, Backend, PostgresChoice, ProvisionRequest, DEFAULT_PG_IMAGE};
use owner::{hostname, OWNER_MARK_PREFIX};
pub use owner::{owner, owner_is_gone, owner_mark};

use crate::model::postgres::same_setting;
pub use crate::model::PgSettings;

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

/// Why no Postgres could be had; the harness exits 3 on any of these.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("no Postgres is available: {tried}.\nGet one in any of three ways:\n  - install the PostgreSQL server binaries (initdb, postgres) and use --postgres local (or --pg-bin DIR),\n  - run a Docker daemon with a Postgres image (--postgres docker, --pg-image NAME:TAG),\n  - point at an existing server with --postgres postgres://USER:PASS@HOST/DB (or DATABASE_URL)")]
    NoneAvailable { tried: String },
    /// The local cluster failed; `source` is the cause where there is one (shown by `{:#}`).
    #[error("local Postgres: {what}")]
    Local {
        what: String,
        #[source]
        source: Option<Cause>,
    },
    /// The container failed; `source` as for `Local`.
    #[error("docker Postgres: {what}")]
    Docker {
        what: String,
        #[source]
        source: Option<Cause>,
    },
    #[error("Postgres at {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("Postgres admin statement failed ({what}): {source}")]
    Admin {
        what: String,
        #[source]
        source: sqlx::Error,
    },
}

/// The underlying error of a provisioning failure.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

impl ProvisionError {
    /// A local-cluster failure with no underlying error.
    pub fn local(what: impl Into<String>) -> Self {
        Self::Local {
            what: what.into(),
            source: None,
        }
    }

    /// A local-cluster failure caused by `e`: `.map_err(ProvisionError::local_by("…"))`.
    pub fn local_by<E: Into<Cause>>(what: impl Into<String>) -> impl FnOnce(E) -> Self {
        let what = what.into();
        move |e| Self::Local {
            what,
            source: Some(e.into()),
        }
    }

    /// A container failure with no underlying error.
    pub fn docker(what: impl Into<String>) -> Self {
        Self::Docker {
            what: what.into(),
            source: None,
        }
    }

    /// A container failure caused by `e`.
    pub fn docker_by<E: Into<Cause>>(what: impl Into<String>) -> impl FnOnce(E) -> Self {
        let what = what.into();
        move |e| Self::Docker {
            what,
            source: Some(e.into()),
        }
    }
}

enum Handle {
    Local(local::LocalCluster),
    Docker(Box<docker::DockerPostgres>),
    Url,
}

/// A running Postgres server the harness may create databases on.
pub struct PgServer {
    backend: Backend,
    why: String,
    admin: PgConnectOptions,
    /// The admin password as it stands in a URL (percent-encoded), if the server has one.
    password: Option<String>,
    settings: PgSettings,
    ready_in: Duration,
    /// Databases this harness created and must drop (all backends; essential on a URL server).
    owned: Mutex<Vec<String>>,
    handle: Handle,
}

impl fmt::Debug for PgServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgServer")
            .field("backend", &self.backend)
            .field("host", &self.admin.get_host())
            .field("port", &self.admin.get_port())
            .finish_non_exhaustive()
    }
}

impl PgServer {
    /// Starts (or connects to) a Postgres server as the request asks.
    #[tracing::instrument(skip_all, fields(choice = ?request.choice))]
    pub async fn provision(request: &ProvisionRequest) -> Result<Self, ProvisionError> {
        let started = Instant::now();
        let (backend, why) = choose(request).await?;
        tracing::info!(%backend, why = %why, "provisioning Postgres");
        let (admin, password, handle) = match backend {
            Backend::Local => {
                let bin = local::find_bin_dir(request.pg_bin.as_deref())
                    .map_err(ProvisionError::local)?;
                let cluster = local::LocalCluster::start(&bin, &request.settings).await?;
                (cluster.admin_options(), None, Handle::Local(cluster))
            }
            Backend::Docker => {
                let pg =
                    docker::DockerPostgres::start(&request.pg_image, &request.settings).await?;
                let password = Some(docker::PASSWORD.to_owned());
                (pg.admin_options(), password, Handle::Docker(Box::new(pg)))
            }
            Backend::Url => {
                let url = url_of(request).expect("choose() picks url only when one is given");
                let admin = url_admin_options(&url)?;
                let password = reqwest::Url::parse(&url)
                    .ok()
                    .and_then(|u| u.password().map(str::to_owned));
                (admin, password, Handle::Url)
            }
        };
        let server = Self {
            backend,
            why,
            admin,
            password,
            settings: request.settings.clone(),
            ready_in: started.elapsed(),
            owned: Mutex::new(Vec::new()),
            handle,
        };
        server.check_settings().await?;
        if backend == Backend::Url {
            for name in server.reap_leftover_databases().await? {
                eprintln!("cleanup: dropped database {name}, left by an earlier run that died");
            }
        }
        Ok(server)
    }

    /// Which backend is running.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why this backend was chosen (for `auto`, which probes ran and what they found).
    pub fn why(&self) -> &str {
        &self.why
    }

    /// The server's CPU and memory limits as applied: read back from the container (docker);
    /// none on a local cluster (it cannot set any); unknown on a URL server.
    pub fn limits(&self) -> String {
        match (&self.handle, self.settings.limits()) {
            (Handle::Docker(pg), _) => format!("{} (read back from the container)", pg.limits()),
            (Handle::Url, Some(asked)) => {
                format!("unknown: a server the harness did not start ({asked} asked)")
            }
            (Handle::Url, None) => "unknown: a server the harness did not start".to_owned(),
            (_, Some(asked)) => {
                format!("none: {asked} asked, which only --postgres docker applies")
            }
            (_, None) => "none".to_owned(),
        }
    }

    /// Time from the provisioning call to a server accepting connections.
    pub fn ready_in(&self) -> Duration {
        self.ready_in
    }

    /// Connection options for database `name` on this server.
    pub fn connect_options(&self, name: &str) -> PgConnectOptions {
        self.admin.clone().database(name)
    }

    /// The admin password as typed (decoded from its URL form), if the server has one: for a
    /// pooler's auth file.
    pub fn password(&self) -> Option<String> {
        let p = self.password.as_deref()?;
        let bytes = p.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'%', Some(b)) => {
                    out.push(b);
                    i += 3;
                }
                (b, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    /// A connection URL for database `name`, with any password masked unless `reveal`.
    pub fn url(&self, name: &str, reveal: bool) -> String {
        let o = &self.admin;
        let password = match &self.password {
            Some(_) if !reveal => ":****".to_owned(),
            Some(p) => format!(":{p}"),
            None => String::new(),
        };
        format!(
            "postgres://{}{password}@{}:{}/{name}",
            o.get_username(),
            o.get_host(),
            o.get_port()
        )
    }

    /// The Docker container's id, when the server runs in one.
    pub fn container_id(&self) -> Option<String> {
        match &self.handle {
            Handle::Docker(pg) => Some(pg.id().to_owned()),
            _ => None,
        }
    }

    /// The local cluster's process id and data directory, for teardown checks.
    pub fn local_cluster(&self) -> Option<&local::LocalCluster> {
        match &self.handle {
            Handle::Local(c) => Some(c),
            _ => None,
        }
    }

    async fn admin_connection(&self) -> Result<PgConnection, ProvisionError> {
        self.admin
            .connect()
            .await
            .map_err(|source| ProvisionError::Admin {
                what: "connect to the maintenance database".into(),
                source,
            })
    }

    /// Runs one admin statement. Its dynamic parts are identifiers quoted by [`quote_ident`]
    /// or values the harness formats itself, never user text: hence `AssertSqlSafe`.
    async fn admin_execute(&self, what: &str, sql: String) -> Result<(), ProvisionError> {
        let mut conn = self.admin_connection().await?;
        let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
        result.map(|_| ()).map_err(|source| ProvisionError::Admin {
            what: what.to_owned(),
            source,
        })
    }

    /// A fresh, unique database name for this process.
    pub fn unique_name(purpose: &str) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        format!(
            "ilab_{purpose}_{}_{}_{:04x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u16>()
        )
    }

    /// Creates an empty database named `name`, owned by this harness.
    pub async fn create_database(&self, name: &str) -> Result<(), ProvisionError> {
        self.admin_execute(
            &format!("create database {name}"),
            format!("CREATE DATABASE {}", quote_ident(name)),
        )
        .await?;
        self.own(name);
        self.mark_owner(name).await?;
        self.apply_database_settings(name).await
    }

    /// Creates `name` as a copy of `template` (which must have no open connections).
    pub async fn clone_database(&self, template: &str, name: &str) -> Result<(), ProvisionError> {
        // FILE_COPY copies the files instead of WAL-logging every block: much faster for a
        // large seeded template (Postgres 15+, where WAL_LOG became the default).
        let strategy = if self.server_version_num().await? >= 150_000 {
            " STRATEGY = FILE_COPY"
        } else {
            ""
        };
        self.admin_execute(
            &format!("clone database {template} as {name}"),
            format!(
                "CREATE DATABASE {} TEMPLATE {}{strategy}",
                quote_ident(name),
                quote_ident(template)
            ),
        )
        .await?;
        self.own(name);
        self.mark_owner(name).await?;
        self.apply_database_settings(name).await
    }

    /// Drops database `name` (closing its connections first).
    pub async fn drop_database(&self, name: &str) -> Result<(), ProvisionError> {
        self.admin_execute(&format!("drop database {name}"), drop_statement(name))
            .await?;
        self.owned
            .lock()
            .expect("owned-database list poisoned")
            .retain(|n| n != name);
        Ok(())
    }

    /// The databases this harness created and has not dropped yet.
    pub fn owned_databases(&self) -> Vec<String> {
        self.owned
            .lock()
            .expect("owned-database list poisoned")
            .clone()
    }

    fn own(&self, name: &str) {
        self.owned
            .lock()
            .expect("owned-database list poisoned")
            .push(name.to_owned());
    }

    /// Marks `name` with its owner (`COMMENT ON DATABASE`: this host and process), so a later
    /// run can tell a database whose owner died from one in use.
    async fn mark_owner(&self, name: &str) -> Result<(), ProvisionError> {
        self.admin_execute(
            &format!("mark the owner of {name}"),
            format!(
                "COMMENT ON DATABASE {} IS '{}'",
                quote_ident(name),
                owner_mark()
            ),
        )
        .await
    }

    /// Drops the harness's databases (`ilab_…`) that an earlier run on this host left behind
    /// when it died (its process is gone). Databases of live runs, of other hosts, or without
    /// a mark are left alone. Returns the names dropped.
    pub async fn reap_leftover_databases(&self) -> Result<Vec<String>, ProvisionError> {
        let mut conn = self.admin_connection().await?;
        let marked: Vec<(String, String)> = sqlx::query_as(
            "SELECT d.datname, c.description FROM pg_database d
             JOIN pg_shdescription c ON c.objoid = d.oid AND c.classoid = 'pg_database'::regclass
             WHERE d.datname LIKE 'ilab\\_%' AND c.description LIKE $1",
        )
        .bind(format!("{OWNER_MARK_PREFIX}{}:%", hostname()))
        .fetch_all(&mut conn)
        .await
        .map_err(|source| ProvisionError::Admin {
            what: "list leftover databases".into(),
            source,
        })?;
        let _ = conn.close().await;
        let mut dropped = Vec::new();
        for (name, mark) in marked {
            if owner_is_gone(mark.trim_start_matches(OWNER_MARK_PREFIX)) {
                self.drop_database(&name).await?;
                dropped.push(name);
            }
        }
        Ok(dropped)
    }

    async fn server_version_num(&self) -> Result<i32, ProvisionError> {
        let mut conn = self.admin_connection().await?;
        let v: String = sqlx::query_scalar("SHOW server_version_num")
            .fetch_one(&mut conn)
            .await
            .map_err(|source| ProvisionError::Admin {
                what: "read server_version_num".into(),
                source,
            })?;
        let _ = conn.close().await;
        Ok(v.parse().unwrap_or(0))
    }

    /// Per-database settings (a default `statement_timeout`, as Supabase sets per role).
    async fn apply_database_settings(&self, name: &str) -> Result<(), ProvisionError> {
        self.admin_execute(
            &format!("set statement_timeout on {name}"),
            format!(
                "ALTER DATABASE {} SET statement_timeout = '{}'",
                quote_ident(name),
                self.settings.statement_timeout_setting()
            ),
        )
        .await
    }

    /// Reads a setting back with `SHOW` on database `name`.
    pub async fn show(&self, name: &str, setting: &str) -> Result<String, ProvisionError> {
        let mut conn = self
            .connect_options(name)
            .connect()
            .await
            .map_err(|source| ProvisionError::Admin {
                what: format!("connect to {name}"),
                source,
            })?;
        let value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SHOW {}",
            quote_ident(setting)
        )))
        .fetch_one(&mut conn)
        .await
        .map_err(|source| ProvisionError::Admin {
            what: format!("SHOW {setting}"),
            source,
        });
        let _ = conn.close().await;
        value
    }

    /// Compares the server's settings with those asked for. Local and docker servers were
    /// started with them, so a difference is an error; an existing server (URL) cannot be
    /// reconfigured by the harness, so a difference is a loud warning.
    async fn check_settings(&self) -> Result<(), ProvisionError> {
        let mut differences = Vec::new();
        for (name, wanted) in self.settings.server_settings() {
            let actual = self.show("postgres", name).await?;
            if !same_setting(&actual, &wanted) {
                differences.push(format!("{name} is {actual}, scenario asks {wanted}"));
            }
        }
        if differences.is_empty() {
            return Ok(());
        }
        let summary = differences.join("; ");
        match self.backend {
            Backend::Url => {
                tracing::warn!(
                    differences = %summary,
                    "the existing server's settings differ from the scenario's; results may not be comparable"
                );
                Ok(())
            }
            Backend::Local => Err(ProvisionError::local(format!(
                "settings not applied: {summary}"
            ))),
            Backend::Docker => Err(ProvisionError::docker(format!(
                "settings not applied: {summary}"
            ))),
        }
    }

    /// Drops every database this harness created and stops the server (if it started one).
    pub async fn shutdown(mut self) {
        for name in self.owned_databases() {
            if let Err(e) = self.drop_database(&name).await {
                tracing::warn!(database = %name, error = %e, "could not drop a harness database");
            }
        }
        match std::mem::replace(&mut self.handle, Handle::Url) {
            Handle::Local(mut cluster) => {
                tokio::task::spawn_blocking(move || cluster.stop())
                    .await
                    .ok();
            }
            Handle::Docker(pg) => pg.stop().await,
            Handle::Url => {}
        }
    }
}

impl Drop for PgServer {
    /// Last-resort cleanup (a panic, an early return): on a URL server the harness's databases
    /// are dropped from a helper thread; a local cluster or container cleans up in its own Drop.
    fn drop(&mut self) {
        let owned = std::mem::take(&mut *self.owned.lock().unwrap_or_else(|p| p.into_inner()));
        if owned.is_empty() || !matches!(self.handle, Handle::Url) {
            return;
        }
        let admin = self.admin.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut conn = admin.connect().await?;
                for name in owned {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(drop_statement(&name)))
                        .execute(&mut conn)
                        .await?;
                }
                Ok::<_, sqlx::Error>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            tracing::warn!("could not drop every harness database on the existing server");
        }
    }
}

fn drop_statement(name: &str) -> String {
    format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name))
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provisioning_error_keeps_its_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = ProvisionError::local_by("cannot run /x/initdb")(io);
        assert_eq!(e.to_string(), "local Postgres: cannot run /x/initdb");
        let chain = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(chain, "local Postgres: cannot run /x/initdb: no such file");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
