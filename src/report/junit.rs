//! `junit.xml`: one testcase per arm × budget (plus the arm's own expectation checks), written
//! by `quick-junit` (escaping, and the control characters XML cannot hold removed).
//! A budget an arm is *expected* to break (the incident reproducing) passes when it breaks.

use std::time::Duration;

use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};

use super::{ms, Report};
use crate::model::Expect;

/// A failed case: `message` in the attribute, the figures in its body.
fn failure(message: &str, description: &str) -> TestCaseStatus {
    let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
    status.set_message(message);
    if !description.is_empty() {
        status.set_description(description);
    }
    status
}

fn skipped(message: &str) -> TestCaseStatus {
    let mut status = TestCaseStatus::skipped();
    status.set_message(message);
    status
}

fn case(classname: &str, name: &str, status: TestCaseStatus) -> TestCase {
    let mut case = TestCase::new(name, status);
    case.set_classname(classname);
    case
}

pub fn render(r: &Report) -> String {
    let mut suite = TestSuite::new(r.scenario.name.as_str());
    suite.set_time(Duration::from_secs_f64(r.wall_time_s.max(0.0)));
    for a in &r.arms {
        for e in a.endpoints.iter().filter(|e| e.budget_p95_ms.is_some()) {
            // A stable name (CI systems keep a test's history by it); the figure goes in the
            // message.
            let name = format!("{} p95 within budget", e.endpoint);
            let figure = format!("p95 {} (budget {})", ms(e.p95_ms), ms(e.budget_p95_ms));
            let status = match a.expect {
                Expect::Fixed if !e.within_budget => failure("over budget", &figure),
                Expect::Observe => {
                    let verdict = if e.within_budget { "within" } else { "over" };
                    skipped(&format!("observed only: {verdict} budget, {figure}"))
                }
                _ => TestCaseStatus::success(),
            };
            suite.add_test_case(case(&a.name, &name, status));
        }
        for c in &a.checks {
            let status = if c.passed {
                TestCaseStatus::success()
            } else {
                failure(&c.detail, "")
            };
            suite.add_test_case(case(&a.name, &c.name, status));
        }
    }
    for a in &r.arms {
        for s in &a.skipped {
            suite.add_test_case(case(&a.name, &s.check, skipped(&s.reason)));
        }
    }
    let mut report = quick_junit::Report::new("incident-lab");
    report.add_test_suite(suite);
    report
        .to_string()
        .unwrap_or_else(|e| format!("<!-- junit.xml could not be written: {e} -->\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{arm, endpoint, report};
    use crate::report::Check;

    /// A check's name and detail with ESC and NUL in them (a log line pasted into a scenario
    /// name, say): the file is still XML a CI system reads, the characters it cannot hold
    /// removed and `<&"` escaped, the counts right.
    #[test]
    fn control_characters_and_markup_in_names_still_make_valid_junit() {
        let mut a = arm(
            "all-on\u{1b}[31m",
            &[],
            vec![endpoint("GET /", 100.0, Some(50.0))],
        );
        a.expect = Expect::Fixed;
        a.checks.push(Check {
            name: "a check \u{0} with <markup> & \"quotes\"\u{1b}".into(),
            passed: false,
            detail: "failed\u{1b} at <1 s>".into(),
        });
        let xml = render(&report(vec![a]));
        assert!(!xml.contains('\u{1b}') && !xml.contains('\u{0}'), "{xml}");
        let back = quick_junit::Report::deserialize_from_str(&xml).expect("valid JUnit XML");
        let suite = &back.test_suites[0];
        assert_eq!((suite.tests, suite.failures), (2, 2), "{xml}");
        let names: Vec<&str> = suite.test_cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "GET / p95 within budget",
                "a check  with <markup> & \"quotes\""
            ]
        );
        assert_eq!(
            suite.test_cases[0].classname.as_ref().map(|c| c.as_str()),
            Some("all-on")
        );
    }
}
