//! The steady-state hypothesis and a flip's effect, read from the load's 1-second windows
//! (of intended send time): the budgets over a stretch ([`stretch`]), and when a budget came
//! back ([`recovery`]) or first broke ([`degradation`]) after a moment.

use loadgen::record::FAILED;
use loadgen::{EndpointRecording, Recording};

use crate::model::{Hypothesis, Scenario};
use crate::report::{FlipEffect, HypothesisReport, Stretch, StretchFigures};

/// Budgeted endpoints (with a p95 budget): label and budget in ms.
pub fn budgeted(scenario: &Scenario) -> Vec<(String, f64)> {
    scenario
        .budgets
        .iter()
        .filter_map(|(k, b)| Some((k.0.clone(), b.p95?.as_secs_f64() * 1000.0)))
        .collect()
}

/// The budgets over the windows starting in `[from, to)` seconds: each endpoint's p95 within
/// its budget and at most `max_failed_pct` % of its requests failed. An endpoint the load did
/// not reach in the stretch holds (nothing was asked of it).
pub fn stretch(
    recording: &Recording,
    budgets: &[(String, f64)],
    from: u32,
    to: u32,
    max_failed_pct: f64,
) -> Stretch {
    let empty = EndpointRecording::default();
    let endpoints: Vec<StretchFigures> = budgets
        .iter()
        .map(|(name, budget)| {
            let e = recording.endpoints.get(name).unwrap_or(&empty);
            let h = e.between(from, to);
            let failed = e.category_between(FAILED, from, to);
            let requests = h.count();
            let failed_pct = if requests == 0 {
                0.0
            } else {
                failed as f64 * 100.0 / requests as f64
            };
            let p95 = h.quantile_ms(0.95);
            StretchFigures {
                endpoint: name.clone(),
                requests,
                p95_ms: p95,
                budget_ms: *budget,
                failed,
                failed_pct,
                holds: p95.is_none_or(|p| p <= *budget) && failed_pct <= max_failed_pct,
            }
        })
        .collect();
    Stretch {
        from_s: f64::from(from),
        to_s: f64::from(to),
        holds: endpoints.iter().all(|e| e.holds),
        endpoints,
    }
}

/// Whether window `t` is within the hypothesis: its p95 within `budget_ms` **and** at most
/// `max_failed_pct` % of its requests failed (5xx, timeouts, refused or reset connections). A
/// service that answers fast 500s is not within it, however fast. `None`: no request.
fn window_holds(
    e: &EndpointRecording,
    t: u32,
    budget_ms: f64,
    max_failed_pct: f64,
) -> Option<bool> {
    let h = e.windows.get(&t);
    let requests = h.map_or(0, |h| h.count());
    let failed = e
        .category_windows
        .get(&t)
        .and_then(|c| c.get(FAILED))
        .copied()
        .unwrap_or(0);
    if requests == 0 && failed == 0 {
        return None;
    }
    let fast = h
        .and_then(|h| h.quantile_ms(0.95))
        .is_none_or(|p| p <= budget_ms);
    let failed_pct = failed as f64 * 100.0 / requests.max(failed) as f64;
    Some(fast && failed_pct <= max_failed_pct)
}

/// The seconds that have a window of requests (latencies or failures), in `[from, end)`.
fn seconds(e: &EndpointRecording, from: u32, end: u32) -> std::collections::BTreeSet<u32> {
    e.windows
        .range(from..end)
        .map(|(t, _)| *t)
        .chain(e.category_windows.range(from..end).map(|(t, _)| *t))
        .collect()
}

/// Seconds from `from` to the first window after which every window up to `end` (exclusive)
/// holds (`window_holds`: p95 within `budget_ms`, failed share within `max_failed_pct`);
/// windows without requests are skipped. `None`: the last window with requests did not hold.
pub fn recovery(
    e: &EndpointRecording,
    budget_ms: f64,
    max_failed_pct: f64,
    from: u32,
    end: u32,
) -> Option<f64> {
    let mut recovered_at = from;
    let mut answered_after = false;
    for t in seconds(e, from, end) {
        match window_holds(e, t, budget_ms, max_failed_pct) {
            Some(false) => (recovered_at, answered_after) = (t + 1, false),
            Some(true) => answered_after = true,
            None => {}
        }
    }
    // Recovered only if some window with requests came after the last one that did not hold.
    (recovered_at == from || answered_after).then(|| f64::from(recovered_at - from))
}

/// Seconds from `from` to the first window before `end` that does not hold (`window_holds`).
pub fn degradation(
    e: &EndpointRecording,
    budget_ms: f64,
    max_failed_pct: f64,
    from: u32,
    end: u32,
) -> Option<f64> {
    seconds(e, from, end)
        .into_iter()
        .find(|t| window_holds(e, *t, budget_ms, max_failed_pct) == Some(false))
        .map(|t| f64::from(t - from))
}

/// A flip's effect on every budget, from the window it came in to `end`.
pub fn flip_effects(
    recording: &Recording,
    budgets: &[(String, f64)],
    max_failed_pct: f64,
    at: u32,
    end: u32,
) -> Vec<FlipEffect> {
    let empty = EndpointRecording::default();
    budgets
        .iter()
        .map(|(name, budget)| {
            let e = recording.endpoints.get(name).unwrap_or(&empty);
            FlipEffect {
                endpoint: name.clone(),
                budget_ms: *budget,
                time_to_recover_s: recovery(e, *budget, max_failed_pct, at, end),
                time_to_degrade_s: degradation(e, *budget, max_failed_pct, at, end),
            }
        })
        .collect()
}

/// The hypothesis judged on the whole run's recording; `end` is the load's last second. Like
/// the check made live at the first fault or flip, "before" leaves out the second just before
/// it.
pub fn judge(
    recording: &Recording,
    budgets: &[(String, f64)],
    h: &Hypothesis,
    end: u32,
    aborted: bool,
) -> HypothesisReport {
    let disrupted = h.disrupted_at.as_secs() as u32;
    let settled = (h.settled_at.as_secs_f64().ceil() as u32).max(disrupted);
    let empty = EndpointRecording::default();
    HypothesisReport {
        // The last second before the first fault or flip is left out: its requests may still
        // be in flight when it comes (and be cut by it).
        before: stretch(
            recording,
            budgets,
            0,
            disrupted.saturating_sub(1).max(1),
            h.max_failed_pct,
        ),
        during: stretch(recording, budgets, disrupted, settled, h.max_failed_pct),
        after: stretch(recording, budgets, settled, end, h.max_failed_pct),
        aborted,
        recover_within_s: h.recover_within.map(|d| d.as_secs_f64()),
        recovery: budgets
            .iter()
            .map(|(name, budget)| {
                let e = recording.endpoints.get(name).unwrap_or(&empty);
                (
                    name.clone(),
                    recovery(e, *budget, h.max_failed_pct, settled, end),
                )
            })
            .collect(),
    }
}

/// The checks the hypothesis makes: steady before; recovered within the declared time after.
pub fn checks(r: &HypothesisReport) -> Vec<crate::report::Check> {
    let show = |s: &Stretch| {
        s.endpoints
            .iter()
            .filter(|e| !e.holds)
            .map(|e| {
                format!(
                    "{} p95 {} (budget {:.0} ms), {:.1} % failed",
                    e.endpoint,
                    e.p95_ms.map_or("-".into(), |p| format!("{p:.0} ms")),
                    e.budget_ms,
                    e.failed_pct
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut out = vec![crate::report::Check {
        name: STEADY_CHECK.into(),
        passed: r.before.holds,
        detail: if r.before.holds {
            format!(
                "steady from {:.0}s to {:.0}s: every budget held",
                r.before.from_s, r.before.to_s
            )
        } else {
            format!(
                "not steady from {:.0}s to {:.0}s: {}{}",
                r.before.from_s,
                r.before.to_s,
                show(&r.before),
                if r.aborted {
                    "; the load was stopped there and no fault or flip was made"
                } else {
                    ""
                }
            )
        },
    }];
    if let (Some(limit), false) = (r.recover_within_s, r.aborted) {
        let late: Vec<String> = r
            .recovery
            .iter()
            .filter(|(_, t)| t.is_none_or(|t| t > limit))
            .map(|(name, t)| match t {
                Some(t) => format!("{name} after {t:.0}s"),
                None => format!("{name} never"),
            })
            .collect();
        out.push(crate::report::Check {
            name: RECOVERY_CHECK.into(),
            passed: late.is_empty(),
            detail: if late.is_empty() {
                format!(
                    "every budget held again within {limit:.0}s of {:.0}s (each second's p95 within budget and its failed share within the allowance)",
                    r.after.from_s
                )
            } else {
                format!(
                    "not recovered within {limit:.0}s of {:.0}s: {} (a second holds with its p95 within budget and its failed share within the allowance)",
                    r.after.from_s,
                    late.join(", ")
                )
            },
        });
    }
    out
}

pub use crate::report::checks::{RECOVERY_CHECK, STEADY_CHECK};

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An endpoint whose window `t` holds `n` requests of `ms` each.
    fn endpoint(windows: &[(u32, u64, u64)]) -> EndpointRecording {
        let mut e = EndpointRecording::default();
        for &(t, n, ms) in windows {
            let w = e.windows.entry(t).or_default();
            for _ in 0..n {
                w.record(Duration::from_millis(ms));
            }
        }
        e
    }

    #[test]
    fn recovery_is_the_first_window_after_which_the_budget_holds() {
        // Over budget at 10 and 11, fine at 12, over again at 13, fine from 14.
        let e = endpoint(&[
            (10, 5, 900),
            (11, 5, 900),
            (12, 5, 100),
            (13, 5, 900),
            (14, 5, 100),
            (15, 5, 100),
        ]);
        assert_eq!(recovery(&e, 500.0, 1.0, 10, 16), Some(4.0));
        assert_eq!(degradation(&e, 500.0, 1.0, 10, 16), Some(0.0));
        // Never over the budget: recovered at once, never degraded.
        let fine = endpoint(&[(10, 5, 100), (11, 5, 100)]);
        assert_eq!(recovery(&fine, 500.0, 1.0, 10, 12), Some(0.0));
        assert_eq!(degradation(&fine, 500.0, 1.0, 10, 12), None);
        // Over the budget to the end: never recovered.
        let stuck = endpoint(&[(10, 5, 100), (11, 5, 900)]);
        assert_eq!(recovery(&stuck, 500.0, 1.0, 10, 12), None);
        assert_eq!(degradation(&stuck, 500.0, 1.0, 10, 12), Some(1.0));
    }

    /// Fast 500s are not a recovery: a window holds only with its failed share within the
    /// allowance, however low its p95 (a refused connection is as fast and as failed).
    #[test]
    fn fast_failures_are_not_a_recovery() {
        let mut e = endpoint(&[(10, 20, 5), (11, 20, 5), (12, 20, 5)]);
        let fail = |e: &mut EndpointRecording, t: u32, n: u64| {
            e.category_windows
                .entry(t)
                .or_default()
                .insert(FAILED.into(), n);
        };
        for t in 10..13 {
            fail(&mut e, t, 20);
        }
        assert_eq!(recovery(&e, 500.0, 1.0, 10, 13), None, "every answer a 500");
        assert_eq!(degradation(&e, 500.0, 1.0, 10, 13), Some(0.0));
        // Failures stop at 12: recovered there.
        fail(&mut e, 12, 0);
        assert_eq!(recovery(&e, 500.0, 1.0, 10, 13), Some(2.0));
        // One failure in 20 (5 %) is within a 10 % allowance, not a 1 % one.
        fail(&mut e, 12, 1);
        assert_eq!(recovery(&e, 500.0, 10.0, 10, 13), Some(2.0));
        assert_eq!(recovery(&e, 500.0, 1.0, 10, 13), None);
        // A second whose requests all failed before any latency was recorded still counts.
        let mut refused = endpoint(&[(10, 5, 5)]);
        fail(&mut refused, 11, 7);
        assert_eq!(recovery(&refused, 500.0, 1.0, 10, 12), None);
    }

    #[test]
    fn a_stretch_holds_only_within_budget_and_failure_limit() {
        let mut r = Recording::default();
        r.endpoints
            .insert("GET /".into(), endpoint(&[(0, 20, 100), (1, 20, 100)]));
        let budgets = vec![("GET /".to_string(), 200.0)];
        assert!(stretch(&r, &budgets, 0, 2, 1.0).holds);
        assert!(!stretch(&r, &[("GET /".to_string(), 50.0)], 0, 2, 1.0).holds);
        // One failure in 40 requests is 2.5 %: over a 1 % limit, under a 5 % one.
        r.endpoints
            .get_mut("GET /")
            .unwrap()
            .category_windows
            .entry(1)
            .or_default()
            .insert(FAILED.into(), 1);
        assert!(!stretch(&r, &budgets, 0, 2, 1.0).holds);
        assert!(stretch(&r, &budgets, 0, 2, 5.0).holds);
    }

    #[test]
    fn the_hypothesis_fails_when_not_steady_before_or_not_recovered_after() {
        let mut r = Recording::default();
        r.endpoints.insert(
            "GET /".into(),
            endpoint(&[
                (0, 5, 100),
                (1, 5, 100),
                (2, 5, 900),
                (3, 5, 900),
                (4, 5, 100),
            ]),
        );
        let budgets = vec![("GET /".to_string(), 500.0)];
        let h = Hypothesis {
            disrupted_at: Duration::from_secs(2),
            settled_at: Duration::from_secs(3),
            recover_within: Some(Duration::from_secs(1)),
            max_failed_pct: 1.0,
            steady_until: None,
        };
        let report = judge(&r, &budgets, &h, 5, false);
        let c = checks(&report);
        assert!(c[0].passed, "{:?}", c[0]);
        assert!(!report.during.holds);
        assert_eq!(report.recovery[0].1, Some(1.0));
        assert!(c[1].passed, "{:?}", c[1]);
        // Recovery took longer than allowed.
        let strict = Hypothesis {
            recover_within: Some(Duration::from_millis(500)),
            ..h
        };
        let c = checks(&judge(&r, &budgets, &strict, 5, false));
        assert!(
            !c[1].passed && c[1].detail.contains("after 1s"),
            "{:?}",
            c[1]
        );
        // Disrupted at 4: the 900 ms window at 2 is in "before" (0 to 3 s): not steady.
        let late = Hypothesis {
            disrupted_at: Duration::from_secs(4),
            ..h
        };
        let c = checks(&judge(&r, &budgets, &late, 5, true));
        assert!(
            !c[0].passed && c[0].detail.contains("not steady"),
            "{:?}",
            c[0]
        );
        assert_eq!(c.len(), 1, "an aborted run is not judged on recovery");
    }
}
