//! Judging an arm: what it showed against what it must show, whether the load generator kept
//! up (else the arm is inconclusive), whether the service's declared writes and calls match
//! what Postgres and the providers counted; and which flag moves which budget.

use std::collections::BTreeMap;

use crate::model::{Expect, Scenario, COUNTS_LABEL, PAGE_LABEL, WEBHOOK_LABEL};
use crate::report::{
    ms, Accounting, ArmReport, ArmStatus, Attribution, Background, Check, EndpointReport,
    Invariants, LoadHealth, ReconnectReport,
};

pub use crate::report::checks::{ACCOUNTING_CHECK, EXACTLY_ONCE_CHECK, LOAD_CHECK};

fn check(name: impl Into<String>, passed: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        passed,
        detail: detail.into(),
    }
}

fn budget_ms(scenario: &Scenario, endpoint: &str) -> Option<f64> {
    scenario
        .budgets
        .iter()
        .find(|(k, _)| k.0 == endpoint)
        .and_then(|(_, b)| b.p95)
        .map(|d| d.as_secs_f64() * 1000.0)
}

/// What the arm showed against what it must show.
pub fn judge(
    scenario: &Scenario,
    expect: Expect,
    endpoints: &[EndpointReport],
    statement_timeouts: u64,
    inv: &Invariants,
) -> Vec<Check> {
    let find = |name: &str| endpoints.iter().find(|e| e.endpoint == name);
    let mut checks = Vec::new();
    match expect {
        Expect::Observe => {}
        Expect::Fixed => {
            for (endpoint, budget) in &scenario.budgets {
                let e = find(&endpoint.0);
                if let Some(limit) = budget.p95 {
                    checks.push(check(
                        format!(
                            "{} p95 within {}",
                            endpoint.0,
                            ms(Some(limit.as_secs_f64() * 1000.0))
                        ),
                        e.is_some_and(|e| e.within_budget),
                        format!("p95 {}", ms(e.and_then(|e| e.p95_ms))),
                    ));
                }
                if let (Some(max), Some(e)) = (budget.max_db_writes, e) {
                    checks.push(check(
                        format!("{} at most {max} DB writes per request", endpoint.0),
                        e.db_writes_max <= max && e.db_writes_per_request.is_some(),
                        format!("max {} per request", e.db_writes_max),
                    ));
                }
                if let (Some(max), Some(e)) = (budget.max_external_calls, e) {
                    checks.push(check(
                        format!("{} at most {max} external calls per request", endpoint.0),
                        e.external_calls_max <= max && e.external_calls_per_request.is_some(),
                        format!("max {} per request", e.external_calls_max),
                    ));
                }
                if let Some(max) = budget.max_statement_timeouts {
                    // The endpoint's own that users saw (its failed answers tagged db_timeout),
                    // as the contract reads: no query past the database's statement_timeout,
                    // a stale fallback otherwise. A live query cut at its own bound (below the
                    // database's) and answered from the fallback is the fix working; those are
                    // counted beside it, with the service-wide count (a cron tick's, say).
                    let tagged = |m: Option<&BTreeMap<String, u64>>| {
                        m.and_then(|m| m.get("db_timeout")).copied().unwrap_or(0)
                    };
                    let seen = tagged(e.map(|e| &e.failed_categories));
                    let all = tagged(e.map(|e| &e.error_categories));
                    checks.push(check(
                        format!(
                            "at most {max} statement timeouts users saw ({})",
                            endpoint.0
                        ),
                        seen <= max,
                        format!(
                            "{seen} on a failed answer, {} answered by the stale fallback ({statement_timeouts} service-wide)",
                            all.saturating_sub(seen)
                        ),
                    ));
                }
            }
            checks.push(check(
                EXACTLY_ONCE_CHECK,
                inv.holds && inv.acked > 0,
                invariant_detail(inv),
            ));
        }
        Expect::Incident => {
            let (webhook_name, page_name) = (WEBHOOK_LABEL, PAGE_LABEL);
            let webhook = find(webhook_name);
            let hook_budget = budget_ms(scenario, webhook_name);
            let w504 = webhook
                .and_then(|e| e.status_counts.get("504"))
                .copied()
                .unwrap_or(0);
            checks.push(check(
                "webhook p95 over budget, with 504s",
                webhook.is_some_and(|e| !e.within_budget) && w504 > 0,
                format!(
                    "p95 {} (budget {}), {w504} × 504",
                    ms(webhook.and_then(|e| e.p95_ms)),
                    ms(hook_budget)
                ),
            ));
            // The same on the service's own figures: the cascade is the service's, not the
            // generator's queue.
            let side = webhook.and_then(|e| e.service.as_ref());
            let s504 = side
                .and_then(|s| s.status_counts.get("504"))
                .copied()
                .unwrap_or(0);
            let s95 = side.and_then(|s| s.p95_ms);
            checks.push(check(
                "webhook p95 over budget, with 504s (service side)",
                matches!((s95, hook_budget), (Some(p), Some(b)) if p > b) && s504 > 0,
                format!("service p95 {}, {s504} × 504", ms(s95)),
            ));
            let page = find(page_name);
            let limit = budget_ms(scenario, page_name);
            let in_phase = |phases: &[crate::report::PhaseFigures]| {
                phases
                    .iter()
                    .find(|p| p.phase == scenario.incident_phase)
                    .and_then(|p| p.p95_ms)
            };
            let burst = page.and_then(|e| in_phase(&e.phases));
            checks.push(check(
                format!("GET / p95 over budget during {}", scenario.incident_phase),
                matches!((burst, limit), (Some(p), Some(b)) if p > b),
                format!(
                    "p95 {} in {} (budget {})",
                    ms(burst),
                    scenario.incident_phase,
                    ms(limit)
                ),
            ));
            // The same on the service's side, in the same phase, from each request's own time
            // (its `server-timing`). A target that does not send it has only its histogram,
            // whose phase figure is unsound on a few requests (see `service_side`): the
            // service's p95 over the run is judged then, and the check says so.
            let page_side = page.and_then(|e| e.service.as_ref());
            let service_p95 = page_side.and_then(|s| s.p95_ms);
            let service_burst = page_side.and_then(|s| in_phase(&s.phases));
            let per_request = page_side.is_some_and(|s| s.phases_per_request);
            let (name, judged, detail) = if per_request {
                (
                    format!(
                        "GET / p95 over budget during {} (service side)",
                        scenario.incident_phase
                    ),
                    service_burst,
                    format!(
                        "service p95 {} in {} ({} over the run)",
                        ms(service_burst),
                        scenario.incident_phase,
                        ms(service_p95)
                    ),
                )
            } else {
                (
                    "GET / p95 over budget (service side)".to_owned(),
                    service_p95,
                    format!(
                        "service p95 {} over the run: the service sent no per-request time, and its histogram's {} figure is {}",
                        ms(service_p95),
                        scenario.incident_phase,
                        ms(service_burst)
                    ),
                )
            };
            checks.push(check(
                name,
                matches!((judged, limit), (Some(p), Some(b)) if p > b),
                detail,
            ));
            // Timeouts the counts-serving endpoints themselves reported (not just service-wide).
            let counts_timeouts: u64 = [COUNTS_LABEL, page_name]
                .iter()
                .filter_map(|n| find(n))
                .filter_map(|e| e.error_categories.get("db_timeout"))
                .sum();
            checks.push(check(
                "inbox counts hit statement timeouts",
                counts_timeouts > 0,
                format!("{counts_timeouts} statement timeouts on the counts and page endpoints ({statement_timeouts} service-wide)"),
            ));
        }
    }
    // After a run with faults on the database link, no acknowledged event may be lost or
    // applied twice, whatever else the arm expects (a fixed arm checks it above).
    if (!scenario.faults.is_empty() || !scenario.flips.is_empty()) && expect != Expect::Fixed {
        checks.push(check(
            EXACTLY_ONCE_CHECK,
            inv.holds && inv.acked > 0,
            invariant_detail(inv),
        ));
    }
    checks
}

/// A load an `[abort]` threshold stopped: the check fails, saying when and why.
pub fn abort_check(a: &crate::report::Aborted) -> Check {
    check(
        crate::report::checks::ABORT_CHECK,
        false,
        format!("stopped at {:.1} s: {}", a.at_s, a.reason),
    )
}

/// "; connections: 1 HTTP/2", the connections the generator opened by protocol, when known.
fn connections(load: &LoadHealth) -> String {
    if load.connections.is_empty() {
        return String::new();
    }
    let each: Vec<String> = load
        .connections
        .iter()
        .map(|(protocol, n)| format!("{n} {protocol}"))
        .collect();
    format!("; connections: {}", each.join(", "))
}

/// Whether the load generator kept every stream's schedule: at most `max_late_pct` of a
/// stream's sends late (rounded up, and never less than one send). When not, says which stream and why: its concurrency ran out, or the
/// generator itself did not get the CPU (the machine is too small for the scenario).
pub fn load_check(load: &LoadHealth) -> Check {
    // At least one late send is always allowed: a share of a stream of four cron ticks is
    // otherwise a single timer hiccup.
    let allowed = |n: u64| ((n as f64 * load.max_late_pct / 100.0).ceil() as u64).max(1);
    let behind: Vec<String> = load
        .streams
        .iter()
        .filter(|s| s.late > allowed(s.requests))
        .map(|s| {
            let why = if s.late_no_user >= s.late_wakeup {
                format!(
                    "all its {} users were busy — raise the stream's max_in_flight",
                    s.max_in_flight
                )
            } else {
                format!(
                    "the generator woke up late (harness {:.0}% of a core, machine {:.0}% busy) — the machine is too small for this scenario",
                    load.generator_cpu_pct, load.machine_cpu_pct
                )
            };
            format!(
                "stream {:?}: {:.1}% of {} sends started more than {:.0} ms late (lateness p95 {}): {why}",
                s.name,
                s.late_pct,
                s.requests,
                load.late_after_ms,
                ms(s.lateness_p95_ms)
            )
        })
        .collect();
    if behind.is_empty() {
        let worst = load.streams.iter().map(|s| s.late_pct).fold(0.0, f64::max);
        check(
            LOAD_CHECK,
            true,
            format!(
                "every stream within {:.1}% late (worst {worst:.2}%); harness {:.0}% of a core, machine {:.0}% busy{}",
                load.max_late_pct, load.generator_cpu_pct, load.machine_cpu_pct,
                connections(load)
            ),
        )
    } else {
        check(LOAD_CHECK, false, behind.join("; "))
    }
}

/// Requests of one kind the service never finished accounting for, and the most each may
/// have written or called unseen.
#[derive(Debug, Clone, PartialEq)]
pub struct Unfinished {
    /// The route they were sent to (or why none is known).
    pub route: String,
    pub requests: u64,
    pub max_writes: u64,
    pub max_calls: u64,
}

/// Compares what the service declared with what was measured. Requests the service never
/// finished accounting for (cut off at the function limit, abandoned by the client) may each
/// differ by up to what such a request can do; that much difference, either way, is allowed —
/// no more.
///
/// `killed`: speculative insertions killed by a concurrent insert, as Postgres counted them.
/// An `INSERT … ON CONFLICT` that finds no conflicting row inserts its tuple speculatively; when
/// a concurrent transaction inserts the same key first, Postgres kills that tuple
/// (`heap_abort_speculative`) and counts it as inserted **and** deleted in
/// `pg_stat_user_tables`, though no row remains and the service (rightly) declares none — or,
/// for `DO UPDATE`, declares the one update that follows. The service deletes no row anywhere,
/// so every delete Postgres counted is one of these: 2 rows each come off the measured count.
/// (A service that did delete rows would see its deletes subtracted twice, and the check fail.)
pub fn accounting(
    declared: (u64, u64),
    measured: (u64, u64),
    unfinished: &[Unfinished],
    killed: u64,
) -> Accounting {
    let slack_writes = unfinished.iter().map(|u| u.requests * u.max_writes).sum();
    let slack_calls = unfinished.iter().map(|u| u.requests * u.max_calls).sum();
    let within = |d: u64, m: u64, slack: u64| d.abs_diff(m) <= slack;
    let service_rows = measured.0.saturating_sub(2 * killed);
    Accounting {
        db_writes_declared: declared.0,
        db_writes_measured: measured.0,
        speculative_killed: killed,
        external_calls_declared: declared.1,
        external_calls_measured: measured.1,
        unaccounted_requests: unfinished.iter().map(|u| u.requests).sum(),
        slack_by_route: unfinished
            .iter()
            .filter(|u| u.requests * u.max_writes > 0)
            .map(|u| (u.route.clone(), u.requests * u.max_writes))
            .collect(),
        slack_writes,
        slack_calls,
        rows_by_table: Default::default(),
        holds: within(declared.0, service_rows, slack_writes)
            && within(declared.1, measured.1, slack_calls),
    }
}

/// The accounting as a check, the slack it allowed printed beside each figure.
pub fn accounting_check(a: &Accounting) -> Check {
    let by_route = a
        .slack_by_route
        .iter()
        .map(|(route, n)| format!("{route} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    check(
        ACCOUNTING_CHECK,
        a.holds,
        format!(
            "rows: declared {}, counted {}{}, slack {}{}; external calls: declared {}, received {}, slack {}; {} requests unfinished (cut off at the function limit or abandoned)",
            a.db_writes_declared,
            a.db_writes_measured,
            if a.speculative_killed > 0 {
                format!(
                    " by Postgres ({} of them {} speculative insertion(s) killed by a concurrent insert, counted as inserted and deleted)",
                    2 * a.speculative_killed,
                    a.speculative_killed
                )
            } else {
                String::new()
            },
            a.slack_writes,
            if by_route.is_empty() {
                String::new()
            } else {
                format!(" ({by_route})")
            },
            a.external_calls_declared,
            a.external_calls_measured,
            a.slack_calls,
            a.unaccounted_requests,
        ),
    )
}

/// Every cron tick ended within its time budget (a service property in every arm: no flag
/// turns the bound off). `None` when no tick ran.
pub fn cron_check(bg: &Background) -> Option<Check> {
    if bg.cron_ticks.is_empty() {
        return None;
    }
    let over: Vec<String> = bg
        .cron_ticks
        .iter()
        .filter(|t| t.max_ms.is_some_and(|m| m > t.budget_ms))
        .map(|t| {
            format!(
                "{} max {} over {}",
                t.runner,
                ms(t.max_ms),
                ms(Some(t.budget_ms))
            )
        })
        .collect();
    let longest = bg
        .cron_ticks
        .iter()
        .map(|t| format!("{} max {}", t.runner, ms(t.max_ms)))
        .collect::<Vec<_>>()
        .join(", ");
    Some(check(
        "cron ticks within their time budget",
        over.is_empty(),
        if over.is_empty() {
            format!(
                "{longest}; at most {} connections held",
                bg.cron_connections_max
            )
        } else {
            over.join(", ")
        },
    ))
}

/// The health gate re-admits reconnected workspaces: no follow-up of theirs skipped later
/// than the bound (the gate had every chance to probe them by then).
pub fn gate_check(r: &ReconnectReport) -> Check {
    check(
        "reconnected workspaces re-admitted, no false skip past the bound",
        r.false_skips_late == 0,
        format!(
            "{}/{} re-admitted (slowest {}), {} false skips, {} of them later than {}",
            r.readmitted,
            r.reconnected,
            r.slowest_readmission_s
                .map_or("-".into(), |s| format!("{s:.1} s")),
            r.false_skips,
            r.false_skips_late,
            ms(Some(r.bound_s * 1000.0))
        ),
    )
}

/// The arm's status from its checks: inconclusive when the load generator fell behind
/// (whatever else held), else as expected only when every check held.
pub fn status(checks: &[Check]) -> ArmStatus {
    if checks.iter().any(|c| c.name == LOAD_CHECK && !c.passed) {
        ArmStatus::Inconclusive
    } else if checks.iter().all(|c| c.passed) {
        ArmStatus::AsExpected
    } else {
        ArmStatus::NotAsExpected
    }
}

/// For each rollout flag, arms that differ only in it: the p95 of each budgeted endpoint with
/// the flag off and on.
pub fn attribution(arms: &[ArmReport], scenario: &Scenario) -> Vec<Attribution> {
    let mut out = Vec::new();
    let key = |a: &ArmReport, skip: &str| -> Vec<(String, bool)> {
        a.flags
            .iter()
            .filter(|(k, _)| k.as_str() != skip)
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    for rollout in inbox_service::Flag::ROLLOUT {
        let flag = rollout.name();
        for off in arms.iter().filter(|a| a.flags.get(flag) == Some(&false)) {
            let Some(on) = arms
                .iter()
                .find(|a| a.flags.get(flag) == Some(&true) && key(a, flag) == key(off, flag))
            else {
                continue;
            };
            for endpoint in scenario.budgets.keys() {
                let p95 = |a: &ArmReport| {
                    a.endpoints
                        .iter()
                        .find(|e| e.endpoint == endpoint.0)
                        .and_then(|e| e.p95_ms)
                };
                out.push(Attribution {
                    flag: rollout,
                    endpoint: endpoint.0.clone(),
                    off_arm: off.name.clone(),
                    on_arm: on.name.clone(),
                    off_p95_ms: p95(off),
                    on_p95_ms: p95(on),
                });
            }
        }
    }
    out
}

/// The invariant in a line: the message rows, then every effect that is not clean, by name.
pub fn invariant_detail(inv: &Invariants) -> String {
    let mut text = format!(
        "{} acked, {} applied, {} lost, {} duplicated",
        inv.acked, inv.applied, inv.lost, inv.duplicates
    );
    if inv.failed_jobs > 0 {
        text.push_str(&format!(
            "; {} EMAIL_SENT jobs failed (background_jobs.last_error says why)",
            inv.failed_jobs
        ));
    }
    for e in inv.effects.iter().filter(|e| e.duplicates > 0 && e.clean()) {
        text.push_str(&format!(
            "; {} repeated {} times, at least once as required here ({})",
            e.effect,
            e.duplicates,
            e.at_least_once.as_deref().unwrap_or("")
        ));
    }
    for e in inv.effects.iter().filter(|e| e.lost > 0 && e.clean()) {
        text.push_str(&format!(
            "; {} missing {} increments, skipped as the service declared ({} skipped: best effort, never failing the event)",
            e.effect,
            e.lost,
            e.declared_skips.unwrap_or(0)
        ));
    }
    let dirty: Vec<String> = inv
        .effects
        .iter()
        .filter(|e| !e.clean())
        .map(|e| {
            format!(
                "{} ({} of {} applied, {} lost, {} duplicated)",
                e.effect, e.applied, e.expected, e.lost, e.duplicates
            )
        })
        .collect();
    if !dirty.is_empty() {
        text.push_str("; not exactly once: ");
        text.push_str(&dirty.join(", "));
    }
    text
}

#[cfg(test)]
mod tests;
