//! An arm's measurements in `report.json`: per endpoint and phase, the service's own view,
//! the load generator's health, the writes and calls accounting, background work, the
//! exactly-once invariants and the timeline.

use std::collections::BTreeMap;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PhaseFigures {
    pub phase: String,
    pub requests: u64,
    pub p95_ms: Option<f64>,
    /// Requests of the phase that reported a statement timeout (`db_timeout`; client side).
    #[serde(default)]
    pub statement_timeouts: u64,
    /// Requests of the phase that failed the user: 5xx, timeout, broken connection (client
    /// side; 4xx answers are not failures).
    #[serde(default)]
    pub failed: u64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EndpointReport {
    pub endpoint: String,
    pub requests: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub budget_p95_ms: Option<f64>,
    /// True when there is no p95 budget or it holds.
    pub within_budget: bool,
    pub status_counts: BTreeMap<String, u64>,
    pub error_categories: BTreeMap<String, u64>,
    /// The error categories of failed answers only: what users saw (`error_categories` also
    /// counts what the service absorbed, such as a timeout the stale fallback answered).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_categories: BTreeMap<String, u64>,
    pub late: u64,
    /// Late sends in % of requests.
    pub late_pct: f64,
    /// Start minus intended time.
    pub lateness_p95_ms: Option<f64>,
    pub lateness_max_ms: Option<f64>,
    pub retries: u64,
    /// The same endpoint as the service measured it (`/metrics`), when it saw any request.
    pub service: Option<ServiceSide>,
    /// Where the client-side time went, said when client and service p95 differ by > 2×.
    pub time_spent: Option<String>,
    pub db_writes_per_request: Option<f64>,
    pub db_writes_max: u32,
    pub external_calls_per_request: Option<f64>,
    pub external_calls_max: u32,
    pub phases: Vec<PhaseFigures>,
    /// p95 per 1-second window: `(second, p95_ms, requests)`.
    pub windows: Vec<(u32, f64, u64)>,
    /// A replay's figures per recorded minute (scenarios with `[observed]` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub minutes: Vec<MinuteFigures>,
    /// Connections the client opened for this endpoint, and the p95 of their set-up (TCP, and
    /// the TLS handshake for https).
    #[serde(default)]
    pub connections: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_p95_ms: Option<f64>,
}

/// One recorded minute of a replay: at speed N it is played in `60 / N` s (rounded to whole
/// seconds of the run).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MinuteFigures {
    pub minute: u32,
    pub requests: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    /// 5xx, timeouts, broken connections.
    pub failed: u64,
}

/// An endpoint as the service saw it: from its handler's start to its response, read from
/// its Prometheus histogram (buckets ≤ 1.5× apart, linear inside one).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ServiceSide {
    pub requests: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub status_counts: BTreeMap<String, u64>,
    /// The bounds of the service histogram's bucket its p95 lies in (ms; the p95 is read
    /// linearly inside it, so it can sit above the client's figure by up to the bucket's
    /// width: the report then shows these).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_bucket_ms: Option<(f64, f64)>,
    /// Time waiting for pooled connections, p95.
    pub pool_wait_p95_ms: Option<f64>,
    /// Per phase. With `phases_per_request`: the service's own time of each request intended
    /// in the phase (its `server-timing` header), as the client's phases are cut. Without
    /// (a target that sends no such header, a report from before): the histogram's requests
    /// that ended from the phase's start to its end plus the function limit (schema 3).
    pub phases: Vec<PhaseFigures>,
    #[serde(default)]
    pub phases_per_request: bool,
}

/// How well the load generator kept one stream's schedule.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StreamLoad {
    pub name: String,
    pub endpoint: String,
    /// The stream's own concurrency (goose users).
    pub max_in_flight: usize,
    pub requests: u64,
    /// Of the requests, second copies sent at once (at-least-once delivery, schema 3).
    #[serde(default)]
    pub duplicates: u64,
    /// Of the requests, redeliveries of acknowledged events (schema 3).
    #[serde(default)]
    pub redeliveries: u64,
    pub late: u64,
    pub late_pct: f64,
    /// Late because every user of the stream was busy.
    pub late_no_user: u64,
    /// Late because the generator woke up late (its CPU).
    pub late_wakeup: u64,
    pub lateness_p95_ms: Option<f64>,
    pub lateness_max_ms: Option<f64>,
}

/// The load generator's own health in one arm.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LoadHealth {
    pub late_after_ms: f64,
    pub max_late_pct: f64,
    pub streams: Vec<StreamLoad>,
    /// CPU the harness process (load generator, fake providers) used during the load, in %
    /// of one core.
    pub generator_cpu_pct: f64,
    /// The whole machine's CPU use during the load, in % of all cores.
    pub machine_cpu_pct: f64,
    /// Connections the generator opened, by the protocol the server chose (`HTTP/1.1`,
    /// `HTTP/2` by ALPN over TLS).
    #[serde(default)]
    pub connections: BTreeMap<String, u64>,
}

/// What the service said it did against what Postgres and the fake providers counted.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Accounting {
    /// Rows the service reported writing (its `x-db-writes` tally, summed on `/metrics`).
    pub db_writes_declared: u64,
    /// Rows Postgres counted (`pg_stat_user_tables`: inserted + updated + deleted).
    pub db_writes_measured: u64,
    /// Speculative insertions (`INSERT … ON CONFLICT`) killed by a concurrent insert of the
    /// same key: each counted by Postgres as a row inserted and deleted, declared by no one
    /// (the service deletes nothing, so these are its deletes). Schema 3, later runs.
    #[serde(default)]
    pub speculative_killed: u64,
    /// Calls the service reported (`x-external-calls`, summed).
    pub external_calls_declared: u64,
    /// Calls the fake providers received.
    pub external_calls_measured: u64,
    /// Requests the service never finished accounting for (cut off at the function limit,
    /// or abandoned by the client): each may have written or called without being counted.
    pub unaccounted_requests: u64,
    /// Rows such requests may explain, by route (each charged its own route's most).
    #[serde(default)]
    pub slack_by_route: BTreeMap<String, u64>,
    /// Rows / calls such requests may explain.
    pub slack_writes: u64,
    pub slack_calls: u64,
    /// The measured rows per table, to see where a difference comes from (schema 3).
    #[serde(default)]
    pub rows_by_table: BTreeMap<String, u64>,
    pub holds: bool,
}

/// Background work and the counts' sources in one arm (schema 3).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Background {
    /// Sidebar counts answers by source: `live` (a bounded live query), `cache` (fresh
    /// enough), `fallback` (stale, because the live query timed out or the pool was full).
    pub counts_answers: BTreeMap<String, u64>,
    /// Slot ledger increments by outcome: `applied`, `skipped` (best effort), `acquire_failed`
    /// (the legacy interactive transaction found no connection).
    #[serde(default)]
    pub ledger: BTreeMap<String, u64>,
    /// Cron ticks that ran, per runner, against the tick budget.
    pub cron_ticks: Vec<CronTicks>,
    /// The most pooled connections the cron ticks held at once (of the service's pool).
    #[serde(default)]
    pub cron_connections_max: u64,
    /// Counts scopes in the cache table when the load started (after the warm-up) and after
    /// the drain: how cold the cache was, and how many different scopes users asked for.
    #[serde(default)]
    pub counts_scopes_at_start: u64,
    #[serde(default)]
    pub counts_scopes_at_end: u64,
}

/// Workspaces whose LinkedIn account reconnected mid-run, and the follow-ups the health gate
/// skipped for them afterwards (false skips).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReconnectReport {
    pub reconnected: u64,
    /// Of those, marked connected again by the gate (a probe answered).
    pub readmitted: u64,
    /// From the reconnection to the last re-admission.
    pub slowest_readmission_s: Option<f64>,
    /// Follow-ups skipped for a reconnected workspace after it reconnected.
    pub false_skips: u64,
    /// Of those, skipped later than `bound_s` after the reconnection (must be 0).
    pub false_skips_late: u64,
    /// The longest the gate may take to notice: the recheck interval, the follow-ups ticks that
    /// probe every disconnected workspace (`PROBES_PER_TICK` a tick) and one tick budget.
    pub bound_s: f64,
}

/// One cron runner's ticks in an arm.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CronTicks {
    pub runner: String,
    pub ticks: u64,
    pub p95_ms: Option<f64>,
    /// The longest tick, exactly (the service's `cron_tick_max_seconds`, over its whole life).
    pub max_ms: Option<f64>,
    pub budget_ms: f64,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Invariants {
    /// Distinct EMAIL_SENT events the load generator sent (first deliveries); unknown for a
    /// merged or targeted run's invariant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<u64>,
    /// EMAIL_SENT events the service acknowledged (2xx).
    pub acked: u64,
    /// Of those, applied (a message with their dedupe id exists).
    pub applied: u64,
    /// The most repeats on any one effect (the message row, the counters, the GHL call):
    /// the headline, so an effect a unique index does not guard cannot hide behind one it does.
    pub duplicates: u64,
    /// The most events lost on any one effect, after the drain.
    pub lost: u64,
    /// The effect with the most lost or repeated, as `"GHL contact sync +522"` (`None`: every
    /// effect exactly once). Schema 3, later runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_effect: Option<String>,
    /// Jobs still queued or running after the drain.
    pub undrained_jobs: u64,
    /// `EMAIL_SENT` jobs the queue gave up on (`status = 'failed'`, their `last_error` says
    /// why): where an acknowledged event that is lost went, when it was queued at all.
    #[serde(default)]
    pub failed_jobs: u64,
    /// Every side effect of an EMAIL_SENT, counted (schema 3).
    #[serde(default)]
    pub effects: Vec<EffectCount>,
    /// No effect lost or duplicated.
    pub holds: bool,
}

/// One side effect of EMAIL_SENT, counted after the drain: each event must cause it once.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EffectCount {
    /// What is counted, e.g. `lead emails_sent`.
    pub effect: String,
    /// Events that must have caused it: the acknowledged ones for the rows found by event id,
    /// the applied ones (message rows) for counters and provider calls.
    pub expected: u64,
    /// Of those, the ones that caused it.
    pub applied: u64,
    /// Times it happened beyond once per event (or for an event that never applied).
    pub duplicates: u64,
    /// Expected and not there.
    pub lost: u64,
    /// Why this effect is only required at least once in this arm (repeats are reported, not
    /// failed): the legacy EMAIL_SENT path calls GHL inside its transaction, so a request cut
    /// after the call and retried calls it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least_once: Option<String>,
    /// For a best-effort effect (the slot ledger: a failed increment is rolled back alone and
    /// logged, never failing its event), the increments the service declared skipped
    /// (`ledger_increments_total{outcome="skipped"}`): up to that many lost are reported, not
    /// failed. A loss the service did not declare fails as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_skips: Option<u64>,
}

impl EffectCount {
    /// Neither lost nor duplicated (repeats allowed where only at-least-once is required,
    /// losses where the service declared them skipped).
    pub fn clean(&self) -> bool {
        self.lost <= self.declared_skips.unwrap_or(0)
            && (self.duplicates == 0 || self.at_least_once.is_some())
    }
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct TimelinePoint {
    pub t: f64,
    /// Over every instance, with several.
    pub pool_in_use: f64,
    pub pool_max: f64,
    pub pool_waiters: f64,
    pub queue_depth: f64,
    /// Service instances answering (scenarios with `[service] instances`/`autoscale` or a
    /// `[pooler]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<f64>,
    /// Pooled connections in use by instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_pool_in_use: Vec<f64>,
    /// PgBouncer: clients waiting for a server connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooler_cl_waiting: Option<f64>,
    /// PgBouncer: server connections in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooler_sv_active: Option<f64>,
    /// PgBouncer: time waited for a server connection per transaction since the last point (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooler_wait_ms: Option<f64>,
}
