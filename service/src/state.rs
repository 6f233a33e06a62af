//! The process's resources: configuration, the constrained pool, run-time switches, metrics,
//! the HTTP client for providers, and the deliberate bugs tests may turn on.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::access_log::AccessLog;
use crate::config::{Config, Switches};
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::tally::Tally;

/// What the domain needs of the process: the configuration, the pools, the switches, the
/// metrics and the providers' HTTP client (cheap to clone). [`crate::app_state::AppState`] adds the
/// domain's own in-process state on top.
#[derive(Clone)]
pub struct Resources(Arc<Inner>);

/// Deliberate bugs that break exactly-once, to show the harness's invariant catches each.
/// They can only be turned on with the `faults` cargo feature (tests), never from the
/// environment or the admin route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Acknowledge `EMAIL_SENT` and then "crash" before anything commits.
    pub ack_before_commit: bool,
    /// Apply the effects of a redelivered `EMAIL_SENT` again (no dedupe check).
    pub skip_dedupe: bool,
    /// Increment the lead's `emails_sent` twice.
    pub double_counter: bool,
    /// In a batch of sends to several leads and ledger rows, the first lead's `emails_sent`
    /// and ledger row counted twice and the last's not at all: every sum stays right, one
    /// key loses what another repeats.
    pub crossed_counters: bool,
    /// Every background-jobs tick updates every lead row and declares none of it: rows
    /// Postgres counts that the service never reported.
    pub undeclared_write: bool,
    /// A breaker that never closes: once any request answered a 5xx, every later request
    /// but the crons' is answered 500 at once — fast failures a latency-only recovery check
    /// would call a recovery.
    pub sticky_failure: bool,
    /// A write-behind buffer: acknowledge `EMAIL_SENT` at once and queue it
    /// [`WRITE_BEHIND_DELAY`] later. Nothing is lost while the process lives; a crash loses
    /// what was buffered — only chaos (a kill mid-burst) shows it.
    pub write_behind: bool,
}

/// How long a write-behind buffer holds an acknowledged event before writing it.
pub const WRITE_BEHIND_DELAY: Duration = Duration::from_millis(500);

/// The variable through which a test turns deliberate bugs on in a service process: names
/// from [`Faults::NAMES`], comma-separated. Honoured only by a build with the `faults`
/// feature; any other build refuses to start when it is set.
pub const TEST_FAULTS_ENV: &str = "INBOX_SERVICE_TEST_FAULTS";

impl Faults {
    /// Every deliberate bug by name.
    pub const NAMES: [&'static str; 7] = [
        "ack_before_commit",
        "undeclared_write",
        "skip_dedupe",
        "double_counter",
        "crossed_counters",
        "sticky_failure",
        "write_behind",
    ];

    /// `a,b,…` of [`Faults::NAMES`].
    pub fn parse(list: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "ack_before_commit" => f.ack_before_commit = true,
                "skip_dedupe" => f.skip_dedupe = true,
                "double_counter" => f.double_counter = true,
                "crossed_counters" => f.crossed_counters = true,
                "sticky_failure" => f.sticky_failure = true,
                "undeclared_write" => f.undeclared_write = true,
                "write_behind" => f.write_behind = true,
                other => {
                    return Err(format!(
                        "{TEST_FAULTS_ENV}: unknown fault {other:?} (known: {})",
                        Faults::NAMES.join(", ")
                    ))
                }
            }
        }
        Ok(f)
    }
}

pub struct Inner {
    pub config: Config,
    /// The application pool: small, as in production.
    pub pool: PgPool,
    /// One connection for `/metrics`, so monitoring never competes with requests.
    pub ops_pool: PgPool,
    pub metrics: Metrics,
    /// Client for provider calls; fixed paths set per-call timeouts, legacy ones do not.
    pub http: reqwest::Client,
    switches: RwLock<Switches>,
    faults: RwLock<Faults>,
    waiters: AtomicU64,
    /// Set by the first 5xx when the `sticky_failure` deliberate bug is on.
    pub stuck: AtomicBool,
    /// The per-request access log, when [`crate::access_log::ACCESS_LOG_ENV`] asks for one.
    access_log: std::sync::OnceLock<AccessLog>,
}

impl std::ops::Deref for Resources {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Resources {
    /// Builds them; the pools connect lazily, [`Resources::check_database`] probes them.
    pub fn new(config: Config) -> Result<Self, sqlx::Error> {
        let mut options = PgConnectOptions::from_str(&config.database_url)?;
        if let Some(t) = config.limits.statement_timeout {
            options = options.options([("statement_timeout", format!("{}ms", t.as_millis()))]);
        }
        // A request cut at the function limit can leave its connection inside a transaction
        // sqlx does not know about (see [`crate::db::outside_transaction`]): such a connection
        // is closed on release, never lent again ([`crate::db::released_clean`]).
        let pool = PgPoolOptions::new()
            .max_connections(config.limits.pool_max)
            .acquire_timeout(config.limits.acquire_timeout)
            .after_release(|conn, _| Box::pin(crate::db::released_clean(conn)))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| Box::pin(crate::db::alive_unless_fresh(conn, meta)))
            .connect_lazy_with(options.clone());
        let ops_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_millis(500))
            .after_release(|conn, _| Box::pin(crate::db::released_clean(conn)))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| Box::pin(crate::db::alive_unless_fresh(conn, meta)))
            .connect_lazy_with(options);
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| sqlx::Error::Configuration(e.into()))?;
        let metrics = Metrics::new(config.limits.request_timeout);
        Ok(Self(Arc::new(Inner {
            switches: RwLock::new(config.switches),
            faults: RwLock::new(Faults::default()),
            config,
            pool,
            ops_pool,
            metrics,
            http,
            waiters: AtomicU64::new(0),
            stuck: Default::default(),
            access_log: std::sync::OnceLock::new(),
        })))
    }

    /// Writes an access line per request to `log` from now on (once; a second is ignored).
    pub fn set_access_log(&self, log: AccessLog) {
        let _ = self.access_log.set(log);
    }

    /// The access log, when one is on.
    pub fn access_log(&self) -> Option<&AccessLog> {
        self.access_log.get()
    }

    /// Connects once, so a wrong URL fails at start-up rather than on the first request.
    pub async fn check_database(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.ops_pool)
            .await
            .map(|_| ())
    }

    /// The current switches (a copy: a flip mid-request does not change that request).
    pub fn switches(&self) -> Switches {
        *self.switches.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The injected faults (none, unless a test built with `faults` injected some).
    pub fn faults(&self) -> Faults {
        *self.faults.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Injects `faults` (tests only).
    #[cfg(feature = "faults")]
    pub fn inject_faults(&self, faults: Faults) {
        *self.faults.write().unwrap_or_else(|p| p.into_inner()) = faults;
    }

    /// Turns on the deliberate bugs [`TEST_FAULTS_ENV`] names, if it is set: only a build
    /// with the `faults` feature (tests) takes them; any other refuses.
    pub fn test_faults_from_env(&self) -> Result<Option<Faults>, String> {
        let Ok(list) = std::env::var(TEST_FAULTS_ENV) else {
            return Ok(None);
        };
        let faults = Faults::parse(&list)?;
        #[cfg(feature = "faults")]
        {
            self.inject_faults(faults);
            Ok(Some(faults))
        }
        #[cfg(not(feature = "faults"))]
        {
            let _ = faults;
            Err(format!(
                "{TEST_FAULTS_ENV} is set, but this build has no deliberate bugs (the `faults` feature is for tests): unset it"
            ))
        }
    }

    /// Replaces the switches.
    pub fn set_switches(&self, switches: Switches) {
        *self.switches.write().unwrap_or_else(|p| p.into_inner()) = switches;
    }

    /// How many requests are blocked on the pool right now.
    pub fn pool_waiters(&self) -> u64 {
        self.waiters.load(Ordering::Relaxed)
    }

    /// Takes a pooled connection, measuring the wait; a timeout is a `db_pool_wait` error.
    pub async fn acquire(&self, tally: &Tally) -> Result<PoolConnection<Postgres>, AppError> {
        self.acquire_within(tally, self.config.limits.acquire_timeout)
            .await
    }

    /// Like [`Self::acquire`] with a shorter deadline (paths that have a fallback).
    pub async fn acquire_within(
        &self,
        tally: &Tally,
        deadline: Duration,
    ) -> Result<PoolConnection<Postgres>, AppError> {
        let started = Instant::now();
        self.waiters.fetch_add(1, Ordering::Relaxed);
        tally.set_waiting_for_pool(true);
        let _waiting = WaitGuard(self, tally);
        let result = match tokio::time::timeout(deadline, self.pool.acquire()).await {
            Ok(r) => r,
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        };
        let waited = started.elapsed();
        self.metrics.acquire_wait(waited);
        tally.add_pool_wait(waited);
        Ok(result?)
    }
}

impl Resources {
    /// A pooled connection for a cron tick, waiting at most `wait` (bounded by the tick's
    /// budget); while it is held it counts in `cron_connections`.
    pub async fn acquire_for_cron(
        &self,
        tally: &Tally,
        wait: Duration,
    ) -> Result<CronConn, AppError> {
        let conn = self
            .acquire_within(tally, wait.min(self.config.limits.acquire_timeout))
            .await?;
        self.metrics.cron_connection(true);
        Ok(CronConn {
            conn,
            state: self.clone(),
        })
    }
}

/// A pooled connection a cron tick holds; given back (and uncounted) when dropped.
pub struct CronConn {
    conn: PoolConnection<Postgres>,
    state: Resources,
}

impl std::ops::Deref for CronConn {
    type Target = sqlx::PgConnection;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl std::ops::DerefMut for CronConn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

impl Drop for CronConn {
    fn drop(&mut self) {
        self.state.metrics.cron_connection(false);
    }
}

/// Undoes the waiter count even when the waiting future is dropped (request timeout).
struct WaitGuard<'a>(&'a Resources, &'a Tally);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::Relaxed);
        self.1.set_waiting_for_pool(false);
    }
}
