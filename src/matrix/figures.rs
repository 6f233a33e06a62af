//! An arm's figures from what was recorded: per endpoint the client-side latency (from the
//! intended send time) beside the service's own (`/metrics`), per stream how well the load
//! generator kept its schedule, and where the time went.

use std::collections::BTreeMap;

use loadgen::record::{EndpointRecording, StreamRecording};
use loadgen::Recording;

use crate::model::Scenario;
use crate::report::{
    Background, CronTicks, EndpointReport, LoadHealth, MinuteFigures, PhaseFigures, ServiceSide,
    StreamLoad,
};
use crate::service_proc::{PromHist, RouteScrape, Scrape};

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Seconds → milliseconds.
fn ms(s: Option<f64>) -> Option<f64> {
    s.map(|s| s * 1000.0)
}

/// The service's view of `route` over the load (what it counted since the first scrape, which
/// follows the warm-up, as the client's figures do), and per phase: from each request's own
/// time (its `server-timing`, kept in `recorded` by intended send time, as the client's
/// phases are) when the service sent it, else what its histogram completed in the phase.
/// `offset_s` converts a schedule time into the scrapes' clock.
pub(crate) fn service_side(
    scenario: &Scenario,
    scrapes: &[Scrape],
    route: &str,
    recorded: Option<&EndpointRecording>,
    offset_s: f64,
) -> Option<ServiceSide> {
    let first = scrapes
        .first()
        .and_then(|s| s.routes.get(route))
        .cloned()
        .unwrap_or_default();
    let end: &RouteScrape = scrapes.last()?.routes.get(route)?;
    let last = RouteScrape {
        duration: end.duration.since(&first.duration),
        pool_wait: end.pool_wait.since(&first.pool_wait),
        statuses: end
            .statuses
            .iter()
            .map(|(k, v)| (k.clone(), v - first.statuses.get(k).copied().unwrap_or(0.0)))
            .collect(),
        writes: end.writes - first.writes,
        calls: end.calls - first.calls,
        writes_max: end.writes_max,
        calls_max: end.calls_max,
        cut_working: end.cut_working,
        statement_max: end.statement_max,
    };
    if last.duration.count <= 0.0 {
        return None;
    }
    let last = &last;
    let at = |t: f64| -> PromHist {
        scrapes
            .iter()
            .rev()
            .find(|s| s.t <= t)
            .and_then(|s| s.routes.get(route))
            .map(|r| r.duration.clone())
            .unwrap_or_default()
    };
    // Per request, when the service said its time: a phase holds the requests intended in it.
    // Else from the histogram: the service records a request when it ends, up to the function
    // limit after it arrived, so a phase's requests are the ones that ended from its start to
    // its end plus that limit — the next phase's first (fast) requests with them: on ~25 page
    // requests its p95 swung from 1.39 s to 2.41 s between runs whose client p95 was 3 s.
    let limit_s = scenario.service.request_timeout.as_secs_f64();
    let per_request = recorded.is_some_and(|e| !e.service_windows.is_empty());
    let phases = scenario
        .phases
        .iter()
        .map(|p| {
            let (from, to) = (p.from.as_secs() as u32, p.to.as_secs() as u32);
            let (requests, p95_ms) = match recorded.and_then(|e| e.service_between(from, to)) {
                Some(h) => (h.count(), h.quantile_ms(0.95)),
                None => {
                    let h = at(p.to.as_secs_f64() + limit_s + offset_s)
                        .since(&at(p.from.as_secs_f64() + offset_s));
                    (h.count as u64, ms(h.quantile(0.95)))
                }
            };
            PhaseFigures {
                phase: p.name.clone(),
                requests,
                p95_ms,
                statement_timeouts: 0,
                failed: 0,
            }
        })
        .collect();
    Some(ServiceSide {
        requests: last.duration.count as u64,
        p50_ms: ms(last.duration.quantile(0.5)),
        p95_ms: ms(last.duration.quantile(0.95)),
        p95_bucket_ms: last
            .duration
            .bucket_of(0.95)
            .map(|(lo, hi)| (lo * 1000.0, hi * 1000.0)),
        status_counts: last
            .statuses
            .iter()
            .map(|(k, v)| (k.clone(), *v as u64))
            .collect(),
        pool_wait_p95_ms: ms(last.pool_wait.quantile(0.95)),
        phases,
        phases_per_request: per_request,
    })
}

/// Where the client's time went, from the client p95, the service p95 and what explains the
/// gap: the generator's late starts, client timeouts, the pool.
pub(crate) fn time_spent(
    client_p95: Option<f64>,
    lateness_p95: Option<f64>,
    timeouts_pct: f64,
    service: Option<&ServiceSide>,
) -> Option<String> {
    let c = client_p95?;
    let Some(side) = service else {
        return Some("the service recorded none of these requests".into());
    };
    let s = side.p95_ms?;
    let late = lateness_p95.unwrap_or(0.0);
    // Gaps of a few milliseconds are timer and loopback noise, not a place the time went.
    let text = if c > 2.0 * s && c - s > 20.0 {
        let gap = c - s;
        if late >= gap / 2.0 {
            format!("before sending: queueing in the load generator (late starts p95 {late:.0} ms; client p95 {c:.0} ms, service p95 {s:.0} ms)")
        } else if timeouts_pct > 5.0 {
            format!("the service did not answer in time: {timeouts_pct:.0}% client timeouts, which the service does not count (client p95 {c:.0} ms, service p95 {s:.0} ms)")
        } else {
            format!("before the service's handler ran: connecting and the accept queue (client p95 {c:.0} ms, service p95 {s:.0} ms)")
        }
    } else if s > 2.0 * c && s - c > 20.0 {
        format!("the service counts requests the client gave up on (service p95 {s:.0} ms, client p95 {c:.0} ms)")
    } else {
        match side.pool_wait_p95_ms {
            Some(w) if w >= s / 2.0 && w > 20.0 => format!(
                "in the service, mostly waiting for a pooled connection (pool wait p95 {w:.0} ms of service p95 {s:.0} ms)"
            ),
            _ => format!("in the service (service p95 {s:.0} ms, client p95 {c:.0} ms)"),
        }
    };
    Some(text)
}

/// One endpoint's report row.
pub(crate) fn endpoint_report(
    scenario: &Scenario,
    name: &str,
    e: &EndpointRecording,
    service: Option<ServiceSide>,
) -> EndpointReport {
    let budget = scenario
        .budgets
        .iter()
        .find(|(k, _)| k.0 == name)
        .map(|(_, b)| b);
    let budget_ms = budget.and_then(|b| b.p95).map(|d| d.as_secs_f64() * 1000.0);
    let p95 = e.latency.quantile_ms(0.95);
    let per = |total: u64| (e.instrumented > 0).then(|| total as f64 / e.instrumented as f64);
    let lateness_p95 = e.lateness.quantile_ms(0.95);
    let timeouts = e.status_counts.get("timeout").copied().unwrap_or(0);
    EndpointReport {
        endpoint: name.to_owned(),
        requests: e.requests,
        p50_ms: e.latency.quantile_ms(0.5),
        p95_ms: p95,
        p99_ms: e.latency.quantile_ms(0.99),
        max_ms: e.latency.max_ms(),
        budget_p95_ms: budget_ms,
        within_budget: match (budget_ms, p95) {
            (Some(b), Some(p)) => p <= b,
            (Some(_), None) => false,
            (None, _) => true,
        },
        status_counts: e.status_counts.clone(),
        error_categories: e.error_categories.clone(),
        failed_categories: e.failed_categories.clone(),
        late: e.late,
        late_pct: pct(e.late, e.requests),
        lateness_p95_ms: lateness_p95,
        lateness_max_ms: e.lateness.max_ms(),
        retries: e.retries,
        connections: e.connects,
        connect_p95_ms: e.connect.quantile_ms(0.95),
        time_spent: time_spent(
            p95,
            lateness_p95,
            pct(timeouts, e.requests),
            service.as_ref(),
        ),
        service,
        db_writes_per_request: per(e.db_writes_total),
        db_writes_max: e.db_writes_max,
        external_calls_per_request: per(e.external_calls_total),
        external_calls_max: e.external_calls_max,
        phases: scenario
            .phases
            .iter()
            .map(|p| {
                let (from, to) = (p.from.as_secs() as u32, p.to.as_secs() as u32);
                let h = e.between(from, to);
                PhaseFigures {
                    phase: p.name.clone(),
                    requests: h.count(),
                    p95_ms: h.quantile_ms(0.95),
                    statement_timeouts: e.category_between("db_timeout", from, to),
                    failed: e.category_between(loadgen::record::FAILED, from, to),
                }
            })
            .collect(),
        windows: e
            .windows
            .iter()
            .filter_map(|(t, h)| Some((*t, h.quantile_ms(0.95)?, h.count())))
            .collect(),
        minutes: replay_minutes(scenario, e),
    }
}

/// Per recorded minute of a replay, the run's figures over the seconds that played it.
fn replay_minutes(scenario: &Scenario, e: &EndpointRecording) -> Vec<MinuteFigures> {
    let Some(observed) = &scenario.observed else {
        return Vec::new();
    };
    let minutes = observed.minutes();
    let at = |m: u32| (f64::from(m) * 60.0 / observed.speed).round() as u32;
    (0..minutes)
        .map(|m| {
            let (from, to) = (at(m), at(m + 1).max(at(m) + 1));
            let h = e.between(from, to);
            MinuteFigures {
                minute: m,
                requests: h.count(),
                p50_ms: h.quantile_ms(0.5),
                p95_ms: h.quantile_ms(0.95),
                failed: e.category_between(loadgen::record::FAILED, from, to),
            }
        })
        .collect()
}

/// Every endpoint's report row.
pub(crate) fn endpoint_reports(
    scenario: &Scenario,
    recording: &Recording,
    scrapes: &[Scrape],
    offset_s: f64,
) -> Vec<EndpointReport> {
    recording
        .endpoints
        .iter()
        .map(|(name, e)| {
            let service = service_side(scenario, scrapes, name, Some(e), offset_s);
            endpoint_report(scenario, name, e, service)
        })
        .collect()
}

fn stream_load(
    name: &str,
    endpoint: String,
    max_in_flight: usize,
    s: &StreamRecording,
) -> StreamLoad {
    StreamLoad {
        name: name.to_owned(),
        endpoint,
        max_in_flight,
        requests: s.requests,
        duplicates: s.duplicates,
        redeliveries: s.redeliveries,
        late: s.late,
        late_pct: pct(s.late, s.requests),
        late_no_user: s.late_no_user,
        late_wakeup: s.late_wakeup,
        lateness_p95_ms: s.lateness.quantile_ms(0.95),
        lateness_max_ms: s.lateness.max_ms(),
    }
}

/// Cron ticks and counts sources over the load and the drain (since the first scrape, so the
/// warm-up is left out).
pub(crate) fn background(scenario: &Scenario, scrapes: &[Scrape]) -> Background {
    let (Some(first), Some(last)) = (scrapes.first(), scrapes.last()) else {
        return Background::default();
    };
    let delta =
        |now: &BTreeMap<String, f64>, then: &BTreeMap<String, f64>| -> BTreeMap<String, u64> {
            now.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        (v - then.get(k).copied().unwrap_or(0.0)).max(0.0) as u64,
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect()
        };
    let counts_answers = delta(&last.counts_answers, &first.counts_answers);
    let ledger = delta(&last.ledger, &first.ledger);
    let cron_ticks = last
        .cron_ticks
        .iter()
        .map(|(runner, h)| {
            let h = h.since(&first.cron_ticks.get(runner).cloned().unwrap_or_default());
            let max_ms = last
                .cron_tick_max
                .get(runner)
                .map(|s| s * 1000.0)
                .or_else(|| ms(h.quantile(1.0)));
            CronTicks {
                runner: runner.clone(),
                ticks: h.count as u64,
                // Interpolated in its bucket, so never reported above the exact maximum.
                p95_ms: match (ms(h.quantile(0.95)), max_ms) {
                    (Some(p), Some(m)) => Some(p.min(m)),
                    (p, _) => p,
                },
                max_ms,
                budget_ms: scenario.service.cron_time_budget.as_secs_f64() * 1000.0,
            }
        })
        .filter(|t| t.ticks > 0)
        .collect();
    Background {
        counts_answers,
        ledger,
        cron_ticks,
        cron_connections_max: last.cron_connections_max as u64,
        // Read from the database by the arm.
        counts_scopes_at_start: 0,
        counts_scopes_at_end: 0,
    }
}

/// The load generator's health: per stream of the scenario, and the CPU figures.
pub(crate) fn load_health(
    scenario: &Scenario,
    plan: &loadgen::Plan,
    recording: &Recording,
    cpu: (f64, f64),
) -> LoadHealth {
    LoadHealth {
        late_after_ms: scenario.late_after.as_secs_f64() * 1000.0,
        max_late_pct: scenario.max_late_pct,
        streams: plan
            .streams
            .iter()
            .map(|s| {
                let rec = recording.streams.get(&s.name).cloned().unwrap_or_default();
                stream_load(&s.name, s.endpoint.label(), s.max_in_flight, &rec)
            })
            .collect(),
        generator_cpu_pct: cpu.0,
        machine_cpu_pct: cpu.1,
        connections: recording.connections.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(p95: f64, pool_wait: Option<f64>) -> ServiceSide {
        ServiceSide {
            requests: 10,
            p50_ms: None,
            p95_ms: Some(p95),
            p95_bucket_ms: None,
            status_counts: Default::default(),
            pool_wait_p95_ms: pool_wait,
            phases: vec![],
            phases_per_request: false,
        }
    }

    fn scrape_with(t: f64, slow: f64, fast: f64) -> Scrape {
        let mut s = Scrape {
            t,
            ..Scrape::default()
        };
        s.routes.insert(
            "GET /".into(),
            RouteScrape {
                duration: PromHist {
                    buckets: vec![(0.01, fast), (1.0, fast + slow)],
                    count: fast + slow,
                    sum: 0.0,
                },
                ..RouteScrape::default()
            },
        );
        s
    }

    #[test]
    fn the_service_side_counts_only_what_came_after_the_warm_up() {
        let scenario =
            crate::model::Scenario::parse("unit.toml", include_str!("../../scenarios/smoke.toml"))
                .unwrap();
        // Ten slow warm-up requests before the first scrape; then twenty fast ones.
        let scrapes = vec![scrape_with(0.0, 10.0, 0.0), scrape_with(20.0, 10.0, 20.0)];

        let side = service_side(&scenario, &scrapes, "GET /", None, 1.0).unwrap();

        assert_eq!(side.requests, 20);
        assert!(side.p95_ms.unwrap() <= 10.0, "{:?}", side.p95_ms);
        assert!(!side.phases_per_request);
        assert!(service_side(&scenario, &scrapes, "POST /nothing", None, 1.0).is_none());
    }

    /// With each request's own time recorded, a phase's service figures are the requests
    /// intended in it — the burst's slow ones, not the next phase's fast ones that ended in
    /// the window the histogram would use.
    #[test]
    fn a_phase_on_the_service_side_holds_the_requests_intended_in_it() {
        let scenario =
            crate::model::Scenario::parse("unit.toml", include_str!("../../scenarios/smoke.toml"))
                .unwrap();
        let burst = scenario.phases.iter().find(|p| p.name == "burst").unwrap();
        let (from, to) = (burst.from.as_secs(), burst.to.as_secs());
        let mut rec = loadgen::Recording::default();
        let mut record = |at_ms: u64, took_ms: u64| {
            rec.record(
                &loadgen::record::Sample {
                    endpoint: "GET /".into(),
                    stream: "page".into(),
                    intended: std::time::Duration::from_millis(at_ms),
                    taken: std::time::Duration::from_millis(at_ms),
                    started: std::time::Duration::from_millis(at_ms),
                    ended: std::time::Duration::from_millis(at_ms + took_ms),
                    outcome: loadgen::record::Outcome::Status(200),
                    db_writes: None,
                    external_calls: None,
                    retry: false,
                    delivery: loadgen::plan::Delivery::Original,
                    categories: vec![],
                    service_time: Some(std::time::Duration::from_millis(took_ms)),
                    connect: None,
                },
                std::time::Duration::from_millis(50),
            )
        };
        for i in 0..20 {
            record(from * 1000 + i * 100, 3000);
        }
        for i in 0..40 {
            record(to * 1000 + i * 50, 10);
        }
        // The histogram saw everything fast: only the per-request figures see the burst.
        let limit = scenario.service.request_timeout.as_secs_f64();
        let scrapes = vec![
            scrape_with(0.0, 0.0, 0.0),
            scrape_with(to as f64 + limit + 1.0, 0.0, 60.0),
        ];
        let side = service_side(
            &scenario,
            &scrapes,
            "GET /",
            Some(&rec.endpoints["GET /"]),
            1.0,
        )
        .unwrap();
        assert!(side.phases_per_request);
        let in_burst = side.phases.iter().find(|p| p.phase == "burst").unwrap();
        assert_eq!(in_burst.requests, 20);
        assert!(
            (in_burst.p95_ms.unwrap() - 3000.0).abs() <= 30.0,
            "{in_burst:?}"
        );
        // Without them, the histogram's figure for the same phase.
        let side = service_side(&scenario, &scrapes, "GET /", None, 1.0).unwrap();
        let in_burst = side.phases.iter().find(|p| p.phase == "burst").unwrap();
        assert!(in_burst.p95_ms.unwrap() <= 10.0, "{in_burst:?}");
    }

    #[test]
    fn the_time_is_charged_to_the_side_that_spent_it() {
        // The generator queued: late starts explain the gap.
        let t = time_spent(Some(5000.0), Some(4500.0), 0.0, Some(&side(300.0, None))).unwrap();
        assert!(t.contains("load generator"), "{t}");
        // No late starts, no timeouts: before the handler.
        let t = time_spent(Some(5000.0), Some(1.0), 0.0, Some(&side(300.0, None))).unwrap();
        assert!(t.contains("accept queue"), "{t}");
        // Client timeouts the service never finished.
        let t = time_spent(Some(5000.0), Some(1.0), 30.0, Some(&side(300.0, None))).unwrap();
        assert!(t.contains("client timeouts"), "{t}");
        // Close figures, pool-bound.
        let t = time_spent(Some(900.0), Some(1.0), 0.0, Some(&side(800.0, Some(700.0)))).unwrap();
        assert!(t.contains("waiting for a pooled connection"), "{t}");
        let t = time_spent(Some(900.0), Some(1.0), 0.0, Some(&side(800.0, Some(10.0)))).unwrap();
        assert!(t.starts_with("in the service"), "{t}");
        assert!(time_spent(None, None, 0.0, None).is_none());
    }
}
