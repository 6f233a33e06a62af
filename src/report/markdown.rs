//! `report.md`: short enough for a CI step summary.

use std::fmt::Write;

use super::{ms, Report};

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let mark = |ok: bool| if ok { "✅" } else { "❌" };
    let _ = writeln!(
        out,
        "# incident-lab: {} — {}\n",
        r.scenario.name,
        if r.verdict == "pass" {
            "PASS ✅"
        } else {
            "FAIL ❌"
        }
    );
    let _ = writeln!(
        out,
        "{} arms, {:.0} s wall time; Postgres `{}` (ready in {:.2} s, seeded {} in {:.1} s), {} cores.\n",
        r.arms.len(),
        r.wall_time_s,
        r.environment.postgres_backend,
        r.environment.postgres_ready_s,
        r.scenario.dataset,
        r.environment.seed_s,
        r.environment.cores
    );
    let endpoints: Vec<String> = {
        let mut e: Vec<String> = r
            .arms
            .iter()
            .flat_map(|a| {
                a.endpoints
                    .iter()
                    .filter(|e| e.budget_p95_ms.is_some())
                    .map(|e| e.endpoint.clone())
            })
            .collect();
        e.sort();
        e.dedup();
        e
    };
    let _ = write!(out, "| arm | expect | as expected |");
    for e in &endpoints {
        let _ = write!(out, " {e} p95 |");
    }
    let _ = writeln!(out, " stmt timeouts | invariant |");
    let _ = writeln!(out, "|{}", "---|".repeat(endpoints.len() + 5));
    for a in &r.arms {
        let _ = write!(
            out,
            "| `{}` | {:?} | {} |",
            a.name,
            a.expect,
            mark(a.as_expected)
        );
        for name in &endpoints {
            match a.endpoints.iter().find(|e| &e.endpoint == name) {
                Some(e) => {
                    let _ = write!(
                        out,
                        " {} {} / {} |",
                        mark(e.within_budget),
                        ms(e.p95_ms),
                        ms(e.budget_p95_ms)
                    );
                }
                None => {
                    let _ = write!(out, " – |");
                }
            }
        }
        let inv = &a.invariants;
        let _ = writeln!(
            out,
            " {} | {} {}/{} applied, {} lost, {} dup |",
            a.statement_timeouts,
            mark(inv.holds),
            inv.applied,
            inv.acked,
            inv.lost,
            inv.duplicates
        );
    }
    let failed: Vec<_> = r
        .arms
        .iter()
        .flat_map(|a| a.checks.iter().filter(|c| !c.passed).map(move |c| (a, c)))
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\n## Expectations that did not hold\n");
        for (a, c) in failed {
            let _ = writeln!(out, "- `{}`: {} — {}", a.name, c.name, c.detail);
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
        "\nLatency is measured from each request's intended send time (open model); see report.html for the timelines."
    );
    out
}
