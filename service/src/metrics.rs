//! Prometheus text metrics, kept by hand: a few maps behind one mutex, rendered on scrape.
//!
//! Request rates here are hundreds per second, so one short-held lock per request is cheap
//! and keeps the registry simple to read.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::error::Category;

/// Upper bounds (seconds) of the latency histograms.
const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];
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
    errors: BTreeMap<Category, u64>,
    acquire_wait: Histogram,
    /// (runner, outcome) → units.
    cron_units: BTreeMap<(&'static str, &'static str), u64>,
}

/// The service's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    registry: Mutex<Registry>,
}

/// Point-in-time values the registry does not keep (read from their owners on scrape).
#[derive(Debug, Default)]
pub struct Gauges {
    pub pool_max: u32,
    pub pool_size: u32,
    pub pool_idle: u32,
    pub pool_waiters: u64,
    /// Job queue depth by status; `None` when it could not be read in time.
    pub queue: Option<Vec<(String, i64)>>,
    pub switches: BTreeMap<&'static str, bool>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.registry.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records one finished request.
    pub fn request(&self, route: &str, status: u16, elapsed: Duration, writes: u32, calls: u32) {
        self.with(|r| {
            r.requests
                .entry((route.to_owned(), status))
                .or_default()
                .observe(&LATENCY_BUCKETS, elapsed.as_secs_f64());
            r.db_writes
                .entry(route.to_owned())
                .or_default()
                .observe(&COUNT_BUCKETS, writes.into());
            r.external_calls
                .entry(route.to_owned())
                .or_default()
                .observe(&COUNT_BUCKETS, calls.into());
        });
    }

    /// Counts one error of `category`.
    pub fn error(&self, category: Category) {
        self.with(|r| *r.errors.entry(category).or_default() += 1);
    }

    /// Records how long a request waited for a pooled connection.
    pub fn acquire_wait(&self, waited: Duration) {
        self.with(|r| {
            r.acquire_wait
                .observe(&LATENCY_BUCKETS, waited.as_secs_f64())
        });
    }

    /// Adds `n` units with `outcome` to cron runner `runner`'s counters.
    pub fn cron_units(&self, runner: &'static str, outcome: &'static str, n: u64) {
        self.with(|r| *r.cron_units.entry((runner, outcome)).or_default() += n);
    }

    /// The count of errors of `category` so far.
    pub fn errors_of(&self, category: Category) -> u64 {
        self.with(|r| r.errors.get(&category).copied().unwrap_or(0))
    }

    /// Renders everything in the Prometheus text format.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.with(|r| {
            out.push_str("# HELP http_request_duration_seconds Request duration by route and status.\n# TYPE http_request_duration_seconds histogram\n");
            for ((route, status), h) in &r.requests {
                let labels = format!("route=\"{route}\",status=\"{status}\"");
                h.render(&mut out, "http_request_duration_seconds", &labels, &LATENCY_BUCKETS);
            }
            out.push_str("# HELP db_writes_per_request DB writes made on the request path.\n# TYPE db_writes_per_request histogram\n");
            for (route, h) in &r.db_writes {
                h.render(&mut out, "db_writes_per_request", &format!("route=\"{route}\""), &COUNT_BUCKETS);
            }
            out.push_str("# HELP external_calls_per_request External provider calls made on the request path.\n# TYPE external_calls_per_request histogram\n");
            for (route, h) in &r.external_calls {
                h.render(&mut out, "external_calls_per_request", &format!("route=\"{route}\""), &COUNT_BUCKETS);
            }
            out.push_str("# HELP errors_total Errors by Phase 53 category.\n# TYPE errors_total counter\n");
            for c in Category::ALL {
                let n = r.errors.get(&c).copied().unwrap_or(0);
                let _ = writeln!(out, "errors_total{{category=\"{}\"}} {n}", c.as_str());
            }
            out.push_str("# HELP db_pool_acquire_seconds Time spent waiting for a pooled connection.\n# TYPE db_pool_acquire_seconds histogram\n");
            r.acquire_wait.render(&mut out, "db_pool_acquire_seconds", "", &LATENCY_BUCKETS);
            out.push_str("# HELP cron_units_total Units handled by the cron runners.\n# TYPE cron_units_total counter\n");
            for ((runner, outcome), n) in &r.cron_units {
                let _ = writeln!(out, "cron_units_total{{runner=\"{runner}\",outcome=\"{outcome}\"}} {n}");
            }
        });
        let _ = write!(
            out,
            "# TYPE db_pool_max gauge\ndb_pool_max {}\n# TYPE db_pool_size gauge\ndb_pool_size {}\n# TYPE db_pool_idle gauge\ndb_pool_idle {}\n# TYPE db_pool_waiters gauge\ndb_pool_waiters {}\n",
            gauges.pool_max, gauges.pool_size, gauges.pool_idle, gauges.pool_waiters
        );
        out.push_str("# HELP job_queue_depth Background jobs by status (-1: not readable in time).\n# TYPE job_queue_depth gauge\n");
        match &gauges.queue {
            Some(rows) => {
                for status in ["queued", "running", "done", "failed"] {
                    let n = rows
                        .iter()
                        .find(|(s, _)| s == status)
                        .map_or(0, |(_, n)| *n);
                    let _ = writeln!(out, "job_queue_depth{{status=\"{status}\"}} {n}");
                }
            }
            None => out.push_str("job_queue_depth{status=\"queued\"} -1\n"),
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
        m.request("POST /x", 202, Duration::from_millis(3), 1, 0);
        m.request("POST /x", 202, Duration::from_millis(700), 1, 0);
        let text = m.render(&Gauges::default());
        assert!(text.contains("http_request_duration_seconds_bucket{route=\"POST /x\",status=\"202\",le=\"0.005\"} 1"), "{text}");
        assert!(
            text.contains(
                "http_request_duration_seconds_bucket{route=\"POST /x\",status=\"202\",le=\"1\"} 2"
            ),
            "{text}"
        );
        assert!(text
            .contains("http_request_duration_seconds_count{route=\"POST /x\",status=\"202\"} 2"));
        assert!(text.contains("db_writes_per_request_sum{route=\"POST /x\"} 2"));
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
