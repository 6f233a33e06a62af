//! `report.md`: short enough for a CI step summary; and [`summary`], the results table the
//! README shows, rendered from a report.json so no figure there is typed by hand.

mod sections;

use std::fmt::Write;

use super::{ms, ArmReport, ArmStatus, Report, Verdict};
use sections::{
    background, chaos_summary, effects, failed_jobs, faults, fleet, reconnections,
    timeouts_by_phase, wall_time, WallTime,
};

fn mark(ok: bool) -> &'static str {
    if ok {
        "✅"
    } else {
        "❌"
    }
}

fn status(a: &ArmReport) -> String {
    match a.status {
        ArmStatus::AsExpected => "✅ as expected".into(),
        ArmStatus::NotAsExpected => "❌ NOT as expected".into(),
        ArmStatus::Inconclusive => "⚠️ INCONCLUSIVE (load generator fell behind)".into(),
        ArmStatus::Interrupted => "⏹ interrupted (not judged)".into(),
    }
}

/// The arm × endpoint table: client p95 (from the intended time) and the service's own p95,
/// against the budget; statement timeouts; the generator's worst stream; the accounting; the
/// invariant.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let endpoints = r.budgeted_endpoints();
    let _ = write!(out, "| arm | expect | status |");
    for e in &endpoints {
        let _ = write!(out, " {e} p95 client / service (budget) |");
    }
    let _ = writeln!(
        out,
        " stmt timeouts | late sends (worst stream) | rows declared / counted | invariant |"
    );
    let _ = writeln!(out, "|{}", "---|".repeat(endpoints.len() + 7));
    for a in &r.arms {
        let _ = write!(out, "| `{}` | {:?} | {} |", a.name, a.expect, status(a));
        for name in &endpoints {
            match a.endpoints.iter().find(|e| &e.endpoint == name) {
                Some(e) => {
                    let _ = write!(
                        out,
                        " {} {} / {} ({}) |",
                        mark(e.within_budget),
                        ms(e.p95_ms),
                        service_p95(e),
                        ms(e.budget_p95_ms)
                    );
                }
                None => {
                    let _ = write!(out, " – |");
                }
            }
        }
        let worst = a
            .load
            .streams
            .iter()
            .max_by(|x, y| x.late_pct.total_cmp(&y.late_pct));
        let inv = &a.invariants;
        let acc = &a.accounting;
        let skipped = |start: &str| a.skipped.iter().any(|s| s.check.starts_with(start));
        let accounting = if skipped("the service's declared writes")
            || skipped(super::checks::ACCOUNTING_CHECK)
        {
            "skipped".to_owned()
        } else {
            format!(
                "{} {} / {}",
                mark(acc.holds),
                acc.db_writes_declared,
                acc.db_writes_measured
            )
        };
        let invariant = if skipped(super::checks::EXACTLY_ONCE_CHECK) {
            "skipped".to_owned()
        } else {
            format!(
                "{} {}{}/{} applied, {} lost, {} dup{}{}",
                mark(inv.holds),
                inv.sent.map_or(String::new(), |n| format!("sent {n}, ")),
                inv.applied,
                inv.acked,
                inv.lost,
                inv.duplicates,
                inv.worst_effect
                    .as_ref()
                    .map_or(String::new(), |w| format!(" ({w})")),
                failed_jobs(inv)
            )
        };
        let _ = writeln!(
            out,
            " {} | {} | {accounting} | {invariant} |",
            a.statement_timeouts,
            worst.map_or("–".into(), |s| format!("{:.1}%", s.late_pct)),
        );
    }
    out
}

/// The whole report.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# incident-lab: {} — {}\n",
        r.scenario.name,
        match r.verdict {
            Verdict::Pass => "PASS ✅",
            Verdict::Fail => "FAIL ❌",
        }
    );
    let _ = writeln!(
        out,
        "{} arms, {:.0} s wall time; Postgres `{}` (limits: {}; ready in {:.2} s, seeded {} in {:.1} s); commit `{}` on {}.\n",
        r.arms.len(),
        r.wall_time_s,
        r.environment.postgres_backend,
        r.environment.postgres_limits,
        r.environment.postgres_ready_s,
        r.scenario.dataset,
        r.environment.seed_s,
        r.environment.commit,
        r.environment.machine
    );
    out.push_str(&table(r));
    let failed: Vec<_> = r
        .arms
        .iter()
        .flat_map(|a| a.checks.iter().filter(|c| !c.passed).map(move |c| (a, c)))
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\n## Checks that did not hold\n");
        for (a, c) in failed {
            let _ = writeln!(out, "- `{}`: {} — {}", a.name, c.name, c.detail);
        }
    }
    let skipped: Vec<_> = r
        .arms
        .iter()
        .flat_map(|a| a.skipped.iter().map(move |s| (a, s)))
        .collect();
    if !skipped.is_empty() {
        let _ = writeln!(out, "\n## Checks this run could not make\n");
        for (a, s) in skipped {
            let _ = writeln!(out, "- `{}`: {} — skipped: {}", a.name, s.check, s.reason);
        }
    }
    out.push_str(&chaos_summary(r));
    out.push_str(&faults(r));
    out.push_str(&effects(r));
    out.push_str(&background(r));
    out.push_str(&reconnections(r));
    out.push_str(&fleet(r));
    out.push_str(&timeouts_by_phase(r));
    out.push_str(&wall_time(r));
    let _ = writeln!(out, "\n## Where the time went\n");
    let _ = writeln!(out, "| arm | endpoint | client p95 | service p95 | late starts p95 | connection set-up | where |\n|---|---|---|---|---|---|---|");
    for a in &r.arms {
        for e in a.endpoints.iter().filter(|e| e.budget_p95_ms.is_some()) {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} | {} |",
                a.name,
                e.endpoint,
                ms(e.p95_ms),
                service_p95(e),
                ms(e.lateness_p95_ms),
                connection_set_up(e),
                e.time_spent.as_deref().unwrap_or("–")
            );
        }
    }
    if !r.attribution.is_empty() {
        let _ = writeln!(
            out,
            "\n## Which flag moves which budget (p95, flag off → on)\n"
        );
        let _ = writeln!(
            out,
            "| flag | endpoint | off arm | on arm | off | on |\n|---|---|---|---|---|---|"
        );
        for at in &r.attribution {
            let _ = writeln!(
                out,
                "| `{}` | {} | `{}` | `{}` | {} | {} |",
                at.flag,
                at.endpoint,
                at.off_arm,
                at.on_arm,
                ms(at.off_p95_ms),
                ms(at.on_p95_ms)
            );
        }
    }
    let _ = writeln!(
        out,
        "\nClient latency is measured from each request's intended send time (open model); service latency from the handler's start to its response (its `/metrics`; per phase, each response's `server-timing`). See report.html for the timelines."
    );
    out
}

/// The service's p95 of an endpoint; when it reads above the client's (a figure read linearly
/// inside a histogram bucket), the bucket it lies in beside it, so the reader sees why.
pub fn service_p95(e: &super::EndpointReport) -> String {
    let Some(s) = &e.service else {
        return ms(None);
    };
    match (s.p95_ms, e.p95_ms, s.p95_bucket_ms) {
        (Some(service), Some(client), Some((lo, hi))) if service > client => format!(
            "{} (read in the service's bucket {}–{})",
            ms(Some(service)),
            ms(Some(lo)),
            ms(Some(hi))
        ),
        (p95, ..) => ms(p95),
    }
}

/// The README's results block: the table, and what it was measured on.
pub fn summary(r: &Report) -> String {
    format!(
        "Measured by `incident-lab {}` at commit `{}` on {} (Postgres `{}`), {:.0} s wall time ({}), verdict {:?}:\n\n{}{}{}",
        r.command
            .clone()
            .unwrap_or_else(|| format!("matrix {}", r.scenario.source)),
        r.environment.commit,
        r.environment.machine,
        r.environment.postgres_backend,
        r.wall_time_s,
        WallTime::of(r).brief(),
        r.verdict,
        table(r),
        chaos_summary(r),
        fleet(r)
    )
}

/// The connections the client opened for an endpoint and the p95 of their set-up (TCP, and
/// the TLS handshake for https): time spent before a request left, on top of the service's.
fn connection_set_up(e: &crate::report::EndpointReport) -> String {
    match (e.connections, e.connect_p95_ms) {
        (0, _) => "–".into(),
        (n, Some(p)) => format!("{n} new, p95 {p:.1} ms"),
        (n, None) => format!("{n} new"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    /// A service p95 read above the client's (linear inside a wide bucket) is shown with its
    /// bucket, so the reader sees why; at or below the client's, the figure alone.
    #[test]
    fn a_service_time_above_the_clients_names_its_bucket() {
        let mut e = fixtures::endpoint("GET /", 10_020.0, Some(2000.0));
        e.service = Some(crate::report::ServiceSide {
            requests: 100,
            p50_ms: None,
            p95_ms: Some(10_330.0),
            p95_bucket_ms: Some((9_850.0, 10_800.0)),
            status_counts: Default::default(),
            pool_wait_p95_ms: None,
            phases: vec![],
            phases_per_request: false,
        });
        assert_eq!(
            service_p95(&e),
            "10.33 s (read in the service's bucket 9.85 s–10.80 s)"
        );
        e.p95_ms = Some(10_400.0);
        assert_eq!(service_p95(&e), "10.33 s");
    }

    /// Each part of the wall time is its own figure, and what is left is what no part covers.
    #[test]
    fn the_wall_time_splits_into_load_drain_and_set_up() {
        let mut a = fixtures::arm("legacy", &[], vec![]);
        a.timings = crate::report::ArmTimings {
            clone_s: 1.0,
            prepare_s: 0.3,
            service_start_s: 0.5,
            warm_up_s: 3.0,
            load_s: 30.0,
            drain_s: 8.0,
            stop_s: 2.0,
            checks_s: 1.0,
        };
        let mut b = fixtures::arm("all-on", &[], vec![]);
        b.timings = crate::report::ArmTimings {
            clone_s: 1.0,
            service_start_s: 0.5,
            load_s: 20.0,
            drain_s: 0.0,
            ..Default::default()
        };
        let mut r = fixtures::report(vec![a, b]);
        r.wall_time_s = 100.0;
        let md = wall_time(&r);
        // 100 − (2 + 0.3 + 1 + 3 + 50 + 8 + 2 + 1) − 0.5 (Postgres) − 1.0 (dataset) = 31.2.
        assert!(
            md.contains("100 s in all: the load 50 s (50 %), the queue drained after it 8 s (8 %)"),
            "{md}"
        );
        assert!(
            md.contains("fakes and baselines 0.3 s, service starts 1.0 s, warm-ups 3.0 s, stopping the service 2.0 s, checks and recordings 1.0 s, the rest 31.2 s"),
            "{md}"
        );
        assert!(
            md.contains(
                "| `legacy` | 1.0 s | 0.3 s | 0.5 s | 3.0 s | 30.0 s | 8.0 s | 2.0 s | 1.0 s | 45.8 s |"
            ),
            "{md}"
        );
        assert!(render(&r).contains("## The run's wall time"));
        assert!(
            summary(&r).contains(
                "100 s wall time (load 50 %, queue drain 8 %, set-up, checks and reports 42 %)"
            ),
            "{}",
            summary(&r)
        );
    }
}
