//! Shared state: configuration, the constrained pool, run-time switches, metrics, the HTTP
//! client for providers, and the per-request [`Tally`] of writes and external calls.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::config::{Config, Switches};
use crate::domain::counts::CachedCounts;
use crate::error::{AppError, Category};
use crate::metrics::Metrics;

/// What one request did: rows written, external calls, error categories it absorbed, time
/// spent waiting for the pool, whether it is waiting now, and (webhooks) its event type.
#[derive(Debug, Default)]
pub struct Tally {
    writes: AtomicU32,
    /// The most rows one statement wrote.
    largest_statement: AtomicU32,
    calls: AtomicU32,
    waiting_for_pool: AtomicBool,
    pool_wait_us: AtomicU64,
    categories: Mutex<Vec<Category>>,
    event: OnceLock<String>,
    dedupe_key: OnceLock<String>,
}

impl Tally {
    /// Counts `rows` rows inserted, updated or deleted — what Postgres itself counts in
    /// `pg_stat_user_tables`, so the harness can check the tally against it. Call it with the
    /// statement's `rows_affected()` (or the rows a `RETURNING` statement gave back).
    pub fn wrote(&self, rows: u64) {
        let rows = u32::try_from(rows).unwrap_or(u32::MAX);
        self.writes.fetch_add(rows, Ordering::Relaxed);
        self.largest_statement.fetch_max(rows, Ordering::Relaxed);
    }

    /// The most rows one statement of this request wrote (what a statement in flight when
    /// the request was cut off may have written unseen).
    pub fn largest_statement(&self) -> u32 {
        self.largest_statement.load(Ordering::Relaxed)
    }

    /// Names the webhook event this request carries (its metrics get a row of their own).
    pub fn set_event(&self, event: &str) {
        let _ = self.event.set(event.to_owned());
    }

    /// Names the webhook event this request carries (`provider:TYPE:id`), for its logs.
    pub fn set_dedupe_key(&self, key: String) {
        let _ = self.dedupe_key.set(key);
    }

    /// The dedupe key, once known.
    pub fn dedupe_key(&self) -> Option<&str> {
        self.dedupe_key.get().map(String::as_str)
    }

    /// The webhook event, once known.
    pub fn event(&self) -> Option<&str> {
        self.event.get().map(String::as_str)
    }

    /// Time this request spent waiting for pooled connections, all acquires.
    pub fn pool_wait(&self) -> Duration {
        Duration::from_micros(self.pool_wait_us.load(Ordering::Relaxed))
    }

    /// Counts one external call.
    pub fn called(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes an error the request absorbed (a fallback, a skipped side effect). Errors a
    /// handler returns are categorized from the response instead; never both.
    pub fn note(&self, category: Category) {
        self.categories
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(category);
    }

    /// The categories noted so far, emptied.
    pub fn take_categories(&self) -> Vec<Category> {
        std::mem::take(&mut *self.categories.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn writes(&self) -> u32 {
        self.writes.load(Ordering::Relaxed)
    }

    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Marks the request as waiting for a pooled connection (or not): a queued enqueue waits
    /// for its statement's.
    pub fn set_waiting_for_pool(&self, waiting: bool) {
        self.waiting_for_pool.store(waiting, Ordering::Relaxed);
    }

    /// Adds `waited` to the request's time waiting for pooled connections.
    pub fn add_pool_wait(&self, waited: Duration) {
        self.pool_wait_us
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    }

    /// Whether the request is blocked on `acquire()` right now.
    pub fn waiting_for_pool(&self) -> bool {
        self.waiting_for_pool.load(Ordering::Relaxed)
    }
}

/// The state every handler shares (cheap to clone).
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

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
    pub stuck: std::sync::atomic::AtomicBool,
    /// Last good counts per scope: the fallback when even the cache table is out of reach.
    pub counts_memory: Mutex<HashMap<String, CachedCounts>>,
    /// Per scope, held while its live counts are computed: one live query per scope at a time.
    pub counts_computing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The queued `EMAIL_SENT` enqueues, written together (group commit).
    pub intake: crate::domain::intake::Intake,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the state; the pools connect lazily, [`AppState::check_database`] probes them.
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
            counts_memory: Mutex::new(HashMap::new()),
            counts_computing: Mutex::new(HashMap::new()),
            intake: Default::default(),
        })))
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
        tally.waiting_for_pool.store(true, Ordering::Relaxed);
        let _waiting = WaitGuard(self, tally);
        let result = match tokio::time::timeout(deadline, self.pool.acquire()).await {
            Ok(r) => r,
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        };
        let waited = started.elapsed();
        self.metrics.acquire_wait(waited);
        tally
            .pool_wait_us
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        Ok(result?)
    }
}

impl AppState {
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
    state: AppState,
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
struct WaitGuard<'a>(&'a AppState, &'a Tally);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::Relaxed);
        self.1.waiting_for_pool.store(false, Ordering::Relaxed);
    }
}
