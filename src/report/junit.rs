//! `junit.xml`: one testcase per arm × budget (plus the arm's own expectation checks).
//! A budget an arm is *expected* to break (the incident reproducing) passes when it breaks.

use std::fmt::Write;

use super::{escape, ms, Report};
use crate::scenario::Expect;

pub fn render(r: &Report) -> String {
    let mut cases = String::new();
    let (mut tests, mut failures, mut skipped) = (0, 0, 0);
    for a in &r.arms {
        for e in a.endpoints.iter().filter(|e| e.budget_p95_ms.is_some()) {
            tests += 1;
            // A stable name (CI systems keep a test's history by it); the figure goes in the
            // message.
            let name = format!("{} p95 within budget", e.endpoint);
            let figure = format!("p95 {} (budget {})", ms(e.p95_ms), ms(e.budget_p95_ms));
            let _ = write!(
                cases,
                "    <testcase classname=\"{}\" name=\"{}\"",
                escape(&a.name),
                escape(&name)
            );
            match a.expect {
                Expect::Fixed if !e.within_budget => {
                    failures += 1;
                    let _ = writeln!(
                        cases,
                        "><failure message=\"over budget\">{}</failure></testcase>",
                        escape(&figure)
                    );
                }
                Expect::Observe => {
                    skipped += 1;
                    let verdict = if e.within_budget { "within" } else { "over" };
                    let _ = writeln!(
                        cases,
                        "><skipped message=\"observed only: {verdict} budget, {}\"/></testcase>",
                        escape(&figure)
                    );
                }
                _ => {
                    let _ = writeln!(cases, "/>");
                }
            }
        }
        for c in &a.checks {
            tests += 1;
            let _ = write!(
                cases,
                "    <testcase classname=\"{}\" name=\"{}\"",
                escape(&a.name),
                escape(&c.name)
            );
            if c.passed {
                let _ = writeln!(cases, "/>");
            } else {
                failures += 1;
                let _ = writeln!(
                    cases,
                    "><failure message=\"{}\"/></testcase>",
                    escape(&c.detail)
                );
            }
        }
    }
    for a in &r.arms {
        for s in &a.skipped {
            tests += 1;
            skipped += 1;
            let _ = writeln!(
                cases,
                "    <testcase classname=\"{}\" name=\"{}\"><skipped message=\"{}\"/></testcase>",
                escape(&a.name),
                escape(&s.check),
                escape(&s.reason)
            );
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"incident-lab\" tests=\"{tests}\" failures=\"{failures}\" skipped=\"{skipped}\">\n  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{:.1}\">\n{cases}  </testsuite>\n</testsuites>\n",
        escape(&r.scenario.name),
        r.wall_time_s
    )
}
