//! `incident-lab compare`: the performance gate's verdict and its exit code.

use super::*;

/// `compare`: the regressions table, exit 1 when there is one.
pub(super) fn compare(args: &CompareArgs) -> Result<(), Failure> {
    use crate::compare::{Gate, Side};
    let read = |p: &std::path::Path| Side::read(p).map_err(|e| Failure::Usage(format!("{e:#}")));
    let (base, new) = (read(&args.base)?, read(&args.new)?);
    let gate = Gate {
        max_regression: args.max_regression,
        min_delta_ms: args.min_delta.as_secs_f64() * 1000.0,
        budget_share: args.budget_share,
        alpha: args.alpha,
    };
    let found = crate::compare::compare(&base, &new, &gate);
    println!(
        "baseline: {} run(s) of {}; new: {} run(s)",
        base.reports.len(),
        args.base.display(),
        new.reports.len()
    );
    if !crate::compare::shared(&base, &new) {
        return Err(Failure::Inconclusive(
            "inconclusive: the baseline and the new run share no arm and endpoint with a p95"
                .into(),
        ));
    }
    print!("{}", crate::compare::table(&found, &gate));
    let count = |v| found.iter().filter(|c| c.verdict == v).count();
    let (regressions, inconclusive) = (
        count(crate::compare::Verdict::Regression),
        count(crate::compare::Verdict::Inconclusive),
    );
    if regressions > 0 {
        Err(Failure::Expectation(format!(
            "{regressions} p95 regression(s)"
        )))
    } else if inconclusive > 0 {
        Err(Failure::Inconclusive(format!(
            "inconclusive: {inconclusive} p95 change(s) with too little data to judge"
        )))
    } else {
        Ok(())
    }
}
