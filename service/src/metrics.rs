//! Prometheus text metrics, kept by hand: a few maps behind one mutex, rendered on scrape.
//!
//! Request rates here are hundreds per second, so one short-held lock per request is cheap
//! and keeps the registry simple to read.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::error::Category;

use incident_wire::metrics as names;

/// Upper bounds (seconds) of the latency histograms: 1 ms to ~130 s, each 1.1× the one before
/// (as a Prometheus native histogram of schema 3), so a quantile read from them — linear
/// inside a bucket, as `histogram_quantile` does — is within ~10 % of the true value and can
/// be set beside the client's HDR figures; plus exact bounds where a verdict is read
/// ([`BUDGET_BOUNDS`], and the function limit with a few milliseconds over it, where requests
/// cut off at the limit pile up: read from a 1.1× bucket, their p95 could sit 10 % over the
/// limit and above the client's own figure).
fn latency_buckets(limit: Duration) -> Vec<f64> {
    let limit = limit.as_secs_f64();
    let mut bounds: Vec<f64> = (0..=124)
        .map(|k| {
            let v = 0.001 * 1.1f64.powi(k);
            // Three significant digits keep the label short and exact in text.
            let scale = 10f64.powi(2 - v.log10().floor() as i32);
            (v * scale).round() / scale
        })
        .chain(BUDGET_BOUNDS)
        .chain([
            limit,
            limit + 0.002,
            limit + 0.005,
            limit + 0.02,
            limit + 0.05,
        ])
        .map(|v| (v * 1e6).round() / 1e6)
        .collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    bounds
}

/// The seed's p95 budgets (seconds): the webhook's 500 ms, the page's 2 s.
pub const BUDGET_BOUNDS: [f64; 2] = [0.5, 2.0];

/// Upper bounds of the per-request write / external-call histograms.
const COUNT_BUCKETS: [f64; 7] = [0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0];

#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len()];
        }
        for (bucket, bound) in self.buckets.iter_mut().zip(bounds) {
            if value <= *bound {
                *bucket += 1;
            }
        }
        self.count += 1;
        self.sum += value;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bucket, bound) in self.buckets.iter().zip(bounds) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {bucket}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Registry {
    /// (route, status) → request duration.
    requests: BTreeMap<(String, u16), Histogram>,
    /// route → DB writes per request.
    db_writes: BTreeMap<String, Histogram>,
    /// route → external calls per request.
    external_calls: BTreeMap<String, Histogram>,
    /// route → the most rows written and external calls made by one request, and the most
    /// rows one statement wrote.
    most: BTreeMap<String, (u32, u32, u32)>,
    /// route → requests cut off at the function limit while working (not waiting for the pool).
    cut_working: BTreeMap<String, u64>,
    /// route → time spent waiting for pooled connections per request.
    pool_wait: BTreeMap<String, Histogram>,
    errors: BTreeMap<Category, u64>,
    acquire_wait: Histogram,
    /// (runner, outcome) → units.
    cron_units: BTreeMap<(&'static str, &'static str), u64>,
    /// Counts answers by source.
    counts_answers: BTreeMap<&'static str, u64>,
    /// Slot ledger increments by outcome.
    ledger: BTreeMap<&'static str, u64>,
    /// Cron tick durations by runner.
    cron_ticks: BTreeMap<&'static str, Histogram>,
    /// The longest tick per runner, exactly (the histogram gives only its bucket).
    cron_tick_max: BTreeMap<&'static str, f64>,
    /// Connections cron ticks hold now, and the most they held at once.
    cron_connections: u64,
    cron_connections_max: u64,
}

/// The service's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// The latency histograms' upper bounds ([`latency_buckets`]).
    bounds: Vec<f64>,
}

impl Default for Metrics {
    /// With production's 60 s function limit.
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

/// What a finished request did, besides its route, status and duration.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestDone {
    /// Rows written.
    pub writes: u32,
    /// External calls made.
    pub calls: u32,
    /// Time spent waiting for pooled connections.
    pub pool_wait: Duration,
    /// The most rows one of its statements wrote.
    pub largest_statement: u32,
}

/// Point-in-time values the registry does not keep (read from their owners on scrape).
#[derive(Debug, Default)]
pub struct Gauges {
    pub pool_max: u32,
    pub pool_size: u32,
    pub pool_idle: u32,
    pub pool_waiters: u64,
    /// The queued `EMAIL_SENT`'s statements so far and the jobs they carried (group commit).
    pub enqueue_statements: u64,
    pub enqueue_rows: u64,
    /// Job queue depth by status; `None` when it could not be read in time.
    pub queue: Option<Vec<(String, i64)>>,
    pub switches: BTreeMap<&'static str, bool>,
}

impl Metrics {
    /// Metrics whose latency buckets have exact bounds at the budgets and at `limit`, the
    /// function limit.
    pub fn new(limit: Duration) -> Self {
        Self {
            registry: Mutex::default(),
            bounds: latency_buckets(limit),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Registry, &[f64]) -> R) -> R {
        f(
            &mut self.registry.lock().unwrap_or_else(|p| p.into_inner()),
            &self.bounds,
        )
    }

    /// Records one finished request.
    pub fn request(&self, route: &str, status: u16, elapsed: Duration, done: &RequestDone) {
        let (writes, calls) = (done.writes, done.calls);
        self.with(|r, bounds| {
            r.requests
                .entry((route.to_owned(), status))
                .or_default()
                .observe(bounds, elapsed.as_secs_f64());
            r.pool_wait
                .entry(route.to_owned())
                .or_default()
                .observe(bounds, done.pool_wait.as_secs_f64());
            r.db_writes
                .entry(route.to_owned())
                .or_default()
                .observe(&COUNT_BUCKETS, writes.into());
            r.external_calls
                .entry(route.to_owned())
                .or_default()
                .observe(&COUNT_BUCKETS, calls.into());
            let most = r.most.entry(route.to_owned()).or_default();
            *most = (
                most.0.max(writes),
                most.1.max(calls),
                most.2.max(done.largest_statement),
            );
        });
    }

    /// Counts a request of `route` cut off at the function limit while it was working (not
    /// waiting for a pooled connection).
    pub fn cut_off_working(&self, route: &str) {
        self.with(|r, _| *r.cut_working.entry(route.to_owned()).or_default() += 1);
    }

    /// Records rows written by work a request left behind it (a settle it could not make in
    /// its budget), under a `route` of its own: declared writes stay complete without counting
    /// a request.
    pub fn deferred_writes(&self, route: &str, writes: u32) {
        self.with(|r, _| {
            r.db_writes
                .entry(route.to_owned())
                .or_default()
                .observe(&COUNT_BUCKETS, writes.into());
            let most = r.most.entry(route.to_owned()).or_default();
            most.0 = most.0.max(writes);
            most.2 = most.2.max(writes);
        });
    }

    /// Counts one error of `category`.
    pub fn error(&self, category: Category) {
        self.with(|r, _| *r.errors.entry(category).or_default() += 1);
    }

    /// Records how long a request waited for a pooled connection.
    pub fn acquire_wait(&self, waited: Duration) {
        self.with(|r, bounds| r.acquire_wait.observe(bounds, waited.as_secs_f64()));
    }

    /// Adds `n` units with `outcome` to cron runner `runner`'s counters.
    pub fn cron_units(&self, runner: &'static str, outcome: &'static str, n: u64) {
        self.with(|r, _| *r.cron_units.entry((runner, outcome)).or_default() += n);
    }

    /// Counts one sidebar counts answer from `source`.
    pub fn counts_answer(&self, source: &'static str) {
        self.with(|r, _| *r.counts_answers.entry(source).or_default() += 1);
    }

    /// Counts `n` slot-ledger increments: `applied`, `skipped` (best effort) or
    /// `acquire_failed` (the legacy transaction found no connection).
    pub fn ledger(&self, outcome: &'static str, n: u64) {
        self.with(|r, _| *r.ledger.entry(outcome).or_default() += n);
    }

    /// Records how long a cron tick of `runner` ran.
    pub fn cron_tick(&self, runner: &'static str, took: Duration) {
        self.with(|r, bounds| {
            r.cron_ticks
                .entry(runner)
                .or_default()
                .observe(bounds, took.as_secs_f64());
            let max = r.cron_tick_max.entry(runner).or_default();
            *max = max.max(took.as_secs_f64());
        });
    }

    /// A cron tick took (`true`) or gave back (`false`) a pooled connection.
    pub fn cron_connection(&self, taken: bool) {
        self.with(|r, _| {
            if taken {
                r.cron_connections += 1;
                r.cron_connections_max = r.cron_connections_max.max(r.cron_connections);
            } else {
                r.cron_connections = r.cron_connections.saturating_sub(1);
            }
        });
    }

    /// Renders everything in the Prometheus text format.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.with(|r, bounds| {
            let _ = writeln!(out, "# HELP {0} Request duration by route and status.\n# TYPE {0} histogram", names::REQUEST_DURATION);
            for ((route, status), h) in &r.requests {
                let labels = format!("route=\"{route}\",status=\"{status}\"");
                h.render(&mut out, names::REQUEST_DURATION, &labels, bounds);
            }
            let _ = writeln!(out, "# HELP {0} Time a request waited for pooled connections, by route.\n# TYPE {0} histogram", names::POOL_WAIT);
            for (route, h) in &r.pool_wait {
                h.render(&mut out, names::POOL_WAIT, &format!("route=\"{route}\""), bounds);
            }
            let _ = writeln!(out, "# HELP {0} Rows written (inserted, updated, deleted) per request.\n# TYPE {0} histogram", names::DB_WRITES);
            for (route, h) in &r.db_writes {
                h.render(&mut out, names::DB_WRITES, &format!("route=\"{route}\""), &COUNT_BUCKETS);
            }
            let _ = writeln!(out, "# HELP {0} External provider calls made on the request path.\n# TYPE {0} histogram", names::EXTERNAL_CALLS);
            for (route, h) in &r.external_calls {
                h.render(&mut out, names::EXTERNAL_CALLS, &format!("route=\"{route}\""), &COUNT_BUCKETS);
            }
            let _ = writeln!(out, "# HELP {0} The most rows one request wrote, by route.\n# TYPE {0} gauge", names::DB_WRITES_MAX);
            for (route, (writes, ..)) in &r.most {
                let _ = writeln!(out, "{}{{route=\"{route}\"}} {writes}", names::DB_WRITES_MAX);
            }
            let _ = writeln!(out, "# HELP {0} The most external calls one request made, by route.\n# TYPE {0} gauge", names::EXTERNAL_CALLS_MAX);
            for (route, (_, calls, _)) in &r.most {
                let _ = writeln!(out, "{}{{route=\"{route}\"}} {calls}", names::EXTERNAL_CALLS_MAX);
            }
            let _ = writeln!(out, "# HELP {0} The most rows one statement wrote, by route.\n# TYPE {0} gauge", names::DB_STATEMENT_MAX);
            for (route, (.., statement)) in &r.most {
                let _ = writeln!(out, "{}{{route=\"{route}\"}} {statement}", names::DB_STATEMENT_MAX);
            }
            let _ = writeln!(out, "# HELP {0} Requests cut off at the function limit while working, by route.\n# TYPE {0} counter", names::CUT_OFF_WORKING);
            for route in r.most.keys() {
                let n = r.cut_working.get(route).copied().unwrap_or(0);
                let _ = writeln!(out, "{}{{route=\"{route}\"}} {n}", names::CUT_OFF_WORKING);
            }
            let _ = writeln!(out, "# HELP {0} Errors by Phase 53 category.\n# TYPE {0} counter", names::ERRORS);
            for c in Category::ALL {
                let n = r.errors.get(&c).copied().unwrap_or(0);
                let _ = writeln!(out, "{}{{category=\"{}\"}} {n}", names::ERRORS, c.as_str());
            }
            out.push_str("# HELP db_pool_acquire_seconds Time spent waiting for a pooled connection.\n# TYPE db_pool_acquire_seconds histogram\n");
            r.acquire_wait.render(&mut out, "db_pool_acquire_seconds", "", bounds);
            out.push_str("# HELP cron_units_total Units handled by the cron runners.\n# TYPE cron_units_total counter\n");
            for ((runner, outcome), n) in &r.cron_units {
                let _ = writeln!(out, "cron_units_total{{runner=\"{runner}\",outcome=\"{outcome}\"}} {n}");
            }
            let _ = writeln!(out, "# HELP {0} Sidebar counts answers by source (live, cache, fallback).\n# TYPE {0} counter", names::COUNTS_ANSWERS);
            for (source, n) in &r.counts_answers {
                let _ = writeln!(out, "{}{{source=\"{source}\"}} {n}", names::COUNTS_ANSWERS);
            }
            let _ = writeln!(out, "# HELP {0} Slot ledger increments by outcome (applied, skipped, acquire_failed).\n# TYPE {0} counter", names::LEDGER);
            for (outcome, n) in &r.ledger {
                let _ = writeln!(out, "{}{{outcome=\"{outcome}\"}} {n}", names::LEDGER);
            }
            let _ = writeln!(out, "# HELP {0} Duration of the cron ticks that ran, by runner.\n# TYPE {0} histogram", names::CRON_TICK);
            for (runner, h) in &r.cron_ticks {
                h.render(&mut out, names::CRON_TICK, &format!("runner=\"{runner}\""), bounds);
            }
            let _ = writeln!(out, "# HELP {0} The longest cron tick so far, by runner.\n# TYPE {0} gauge", names::CRON_TICK_MAX);
            for (runner, max) in &r.cron_tick_max {
                let _ = writeln!(out, "{}{{runner=\"{runner}\"}} {max}", names::CRON_TICK_MAX);
            }
            let _ = writeln!(out, "# HELP {0} Pooled connections cron ticks hold now.\n# TYPE {0} gauge\n{0} {1}", names::CRON_CONNECTIONS, r.cron_connections);
            let _ = writeln!(out, "# HELP {0} The most pooled connections cron ticks held at once.\n# TYPE {0} gauge\n{0} {1}", names::CRON_CONNECTIONS_MAX, r.cron_connections_max);
        });
        for (name, value) in [
            (names::POOL_MAX, u64::from(gauges.pool_max)),
            (names::POOL_SIZE, u64::from(gauges.pool_size)),
            (names::POOL_IDLE, u64::from(gauges.pool_idle)),
            (names::POOL_WAITERS, gauges.pool_waiters),
        ] {
            let _ = writeln!(out, "# TYPE {name} gauge\n{name} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP {0} Statements that wrote queued EMAIL_SENT jobs (group commit).\n# TYPE {0} counter\n{0} {1}\n# HELP {2} Queued EMAIL_SENT jobs those statements carried.\n# TYPE {2} counter\n{2} {3}",
            names::ENQUEUE_STATEMENTS,
            gauges.enqueue_statements,
            names::ENQUEUE_ROWS,
            gauges.enqueue_rows
        );
        let _ = writeln!(
            out,
            "# HELP {0} Background jobs by status (-1: not readable in time).\n# TYPE {0} gauge",
            names::QUEUE_DEPTH
        );
        match &gauges.queue {
            Some(rows) => {
                for status in ["queued", "running", "done", "failed"] {
                    let n = rows
                        .iter()
                        .find(|(s, _)| s == status)
                        .map_or(0, |(_, n)| *n);
                    let _ = writeln!(out, "{}{{status=\"{status}\"}} {n}", names::QUEUE_DEPTH);
                }
            }
            None => {
                let _ = writeln!(out, "{}{{status=\"queued\"}} -1", names::QUEUE_DEPTH);
            }
        }
        out.push_str("# HELP feature_flag Current value of each switch (1 on, 0 off).\n# TYPE feature_flag gauge\n");
        for (name, on) in &gauges.switches {
            let _ = writeln!(out, "feature_flag{{name=\"{name}\"}} {}", u8::from(*on));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counted() {
        let m = Metrics::default();
        let done = RequestDone {
            writes: 1,
            ..RequestDone::default()
        };
        m.request("POST /x", 202, Duration::from_millis(3), &done);
        m.request("POST /x", 202, Duration::from_millis(700), &done);
        let text = m.render(&Gauges::default());
        let bucket = |le: &str| {
            format!("http_request_duration_seconds_bucket{{route=\"POST /x\",status=\"202\",le=\"{le}\"}}")
        };
        assert!(text.contains(&format!("{} 0", bucket("0.001"))), "{text}");
        assert!(text.contains(&format!("{} 1", bucket("0.00314"))), "{text}");
        assert!(text.contains(&format!("{} 2", bucket("0.718"))), "{text}");
        assert!(text.contains(&format!("{} 2", bucket("+Inf"))), "{text}");
        assert!(text
            .contains("http_request_duration_seconds_count{route=\"POST /x\",status=\"202\"} 2"));
        assert!(text.contains("db_writes_per_request_sum{route=\"POST /x\"} 2"));
    }

    #[test]
    fn latency_buckets_are_about_a_tenth_apart_from_1_ms_to_2_minutes() {
        let b = latency_buckets(Duration::from_secs(60));
        assert_eq!(b[0], 0.001);
        assert!(*b.last().unwrap() >= 120.0);
        for w in b.windows(2) {
            assert!(w[1] > w[0] && w[1] / w[0] <= 1.11, "{w:?}");
        }
    }

    /// Requests cut off at the function limit end a few milliseconds past it: the buckets
    /// have exact bounds there (and at the budgets), so a p95 read from them stays within
    /// 5 ms of the limit rather than 10 % over it.
    #[test]
    fn the_limit_and_the_budgets_are_bounds_of_their_own() {
        let b = latency_buckets(Duration::from_millis(10_000));
        for bound in [0.5, 2.0, 10.0, 10.002, 10.005, 10.02] {
            assert!(b.contains(&bound), "{bound} not in {b:?}");
        }
        let m = Metrics::new(Duration::from_secs(10));
        for _ in 0..90 {
            m.request(
                "GET /",
                200,
                Duration::from_millis(900),
                &RequestDone::default(),
            );
        }
        for _ in 0..10 {
            m.request(
                "GET /",
                504,
                Duration::from_millis(10_003),
                &RequestDone::default(),
            );
        }
        let text = m.render(&Gauges::default());
        let bucket = |le: &str| format!("route=\"GET /\",status=\"504\",le=\"{le}\"}}");
        assert!(text.contains(&format!("{} 10", bucket("10.005"))), "{text}");
        assert!(text.contains(&format!("{} 0", bucket("10"))), "{text}");
    }

    #[test]
    fn every_category_is_exported_even_at_zero() {
        let m = Metrics::default();
        m.error(Category::DbTimeout);
        let text = m.render(&Gauges::default());
        assert!(text.contains("errors_total{category=\"db_timeout\"} 1"));
        assert!(text.contains("errors_total{category=\"ai_truncated\"} 0"));
    }
}
