//! `compare BASE.json NEW.json`: a CI gate against a stored baseline. For every arm and
//! endpoint present in both, the new p95 may exceed the baseline's by at most the allowance.

use crate::report::{ms, Report};

/// A p95 that got worse than allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct Regression {
    pub arm: String,
    pub endpoint: String,
    pub base_ms: f64,
    pub new_ms: f64,
}

/// The regressions of `new` against `base` beyond `allowance` (0.1 = 10 %).
pub fn regressions(base: &Report, new: &Report, allowance: f64) -> Vec<Regression> {
    let mut out = Vec::new();
    for arm in &new.arms {
        let Some(base_arm) = base.arms.iter().find(|a| a.name == arm.name) else {
            continue;
        };
        for e in &arm.endpoints {
            let base_p95 = base_arm
                .endpoints
                .iter()
                .find(|b| b.endpoint == e.endpoint)
                .and_then(|b| b.p95_ms);
            if let (Some(b), Some(n)) = (base_p95, e.p95_ms) {
                if n > b * (1.0 + allowance) {
                    out.push(Regression {
                        arm: arm.name.clone(),
                        endpoint: e.endpoint.clone(),
                        base_ms: b,
                        new_ms: n,
                    });
                }
            }
        }
    }
    out
}

/// The regressions as Markdown: a table, or one line saying there is none.
pub fn table(found: &[Regression], allowance: f64) -> String {
    if found.is_empty() {
        return format!("no p95 regression beyond {:.0}%\n", allowance * 100.0);
    }
    let mut out =
        String::from("| arm | endpoint | base p95 | new p95 | change |\n|---|---|---|---|---|\n");
    for r in found {
        out.push_str(&format!(
            "| {} | {} | {} | {} | +{:.0}% |\n",
            r.arm,
            r.endpoint,
            ms(Some(r.base_ms)),
            ms(Some(r.new_ms)),
            (r.new_ms / r.base_ms - 1.0) * 100.0
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{arm, endpoint, report};

    fn one(p95: f64) -> Report {
        report(vec![arm(
            "all-on",
            &[],
            vec![endpoint("GET /", p95, Some(2000.0))],
        )])
    }

    #[test]
    fn a_p95_beyond_the_allowance_is_a_regression_and_within_it_is_not() {
        assert!(regressions(&one(100.0), &one(110.0), 0.10).is_empty());
        let r = regressions(&one(100.0), &one(111.0), 0.10);
        assert_eq!(
            r,
            vec![Regression {
                arm: "all-on".into(),
                endpoint: "GET /".into(),
                base_ms: 100.0,
                new_ms: 111.0
            }]
        );
        // Faster is never a regression.
        assert!(regressions(&one(100.0), &one(50.0), 0.0).is_empty());
    }

    #[test]
    fn arms_or_endpoints_missing_from_the_baseline_are_not_compared() {
        let other_arm = report(vec![arm(
            "all-off",
            &[],
            vec![endpoint("GET /", 1.0, None)],
        )]);
        assert!(regressions(&other_arm, &one(9999.0), 0.1).is_empty());
    }
}
