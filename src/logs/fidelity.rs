//! The fidelity table of a replay: production's figures beside each arm's, per endpoint and
//! recorded minute, and the questions a replay answers — did the legacy arm reproduce the
//! failure share and the p95 within a stated factor, and did the fixed arm remove them?
//!
//! Latencies compare as shares of each side's limit: production's function limit (60 s) and
//! the service's `request_timeout` (the scenario compresses one into the other).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::model::{Expect, Observed, StatusMix};
use crate::report::{ArmReport, Report};

/// One question and its answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FidelityCheck {
    pub arm: String,
    pub endpoint: String,
    pub question: String,
    pub passed: bool,
    pub detail: String,
}

/// The whole comparison (fidelity.json).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fidelity {
    pub factor: f64,
    /// Minutes of the recording that make the incident phase.
    pub incident_minutes: (u32, u32),
    pub checks: Vec<FidelityCheck>,
    pub passed: bool,
    /// The Markdown table, as written to fidelity.md.
    pub markdown: String,
}

/// Failed requests as production logged them: 5xx, 504 and no response.
fn failed(s: &StatusMix) -> u64 {
    s.server + s.timeout + s.none
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn within(a: f64, b: f64, factor: f64) -> bool {
    if a == 0.0 && b == 0.0 {
        return true;
    }
    a > 0.0 && b > 0.0 && (a / b) <= factor && (b / a) <= factor
}

/// What the replay did to the load, in a sentence.
fn load_said(observed: &Observed) -> String {
    let load = observed.load_factor();
    let rate = if (load - 1.0).abs() < 0.01 {
        "production's arrival rate".to_string()
    } else {
        format!("{load:.2}x production's arrival rate")
    };
    if observed.kept < 1.0 {
        format!(
            "Arrivals thinned to 1 in {:.3}: the world saw {rate}, so the arms' requests per minute are that share of production's; compare the shares and the p95s.",
            1.0 / observed.kept
        )
    } else if load > 1.0 {
        format!("Every recorded request sent, at {rate}: a heavier regime than production's (`--arrivals thin` keeps its rate).")
    } else {
        format!("Every recorded request sent, at {rate}.")
    }
}

/// Compares `report` (a replay's) with `observed`; `request_timeout_ms` is the service's limit.
pub fn compare(
    report: &Report,
    observed: &Observed,
    request_timeout_ms: f64,
    factor: f64,
) -> Fidelity {
    let speed = observed.speed;
    let phase = report
        .scenario
        .phases
        .iter()
        .find(|p| p.name == report.scenario.incident_phase);
    let to_minute = |s: f64| (s * speed / 60.0).round() as u32;
    let incident = phase.map_or((0, u32::MAX), |p| (to_minute(p.from_s), to_minute(p.to_s)));
    let limit_ms = observed.function_limit.as_secs_f64() * 1000.0;
    let mut checks = Vec::new();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Fidelity: `{}` replayed at {speed}x\n\nProduction {} .. {} UTC. {} Latency as a share of each side's limit (production's function limit {:.0} s, the service's request timeout {:.1} s); failed = 5xx, 504 and no response. Incident phase: recorded minutes {}..{}. Factor allowed: {factor}x.\n",
        observed.source,
        observed.from,
        observed.to,
        load_said(observed),
        limit_ms / 1000.0,
        request_timeout_ms / 1000.0,
        incident.0,
        incident.1,
    );
    for ep in &observed.endpoints {
        let in_incident = |m: u32| m >= incident.0 && m < incident.1;
        let prod_req: u64 = ep
            .minutes
            .iter()
            .filter(|m| in_incident(m.minute))
            .map(|m| m.requests)
            .sum();
        let prod_failed: u64 = ep
            .minutes
            .iter()
            .filter(|m| in_incident(m.minute))
            .map(|m| failed(&m.statuses))
            .sum();
        let prod_share = share(prod_failed, prod_req);
        // Production's p95 over the incident: the worst minute's (minutes keep no histogram).
        let prod_p95 = ep
            .minutes
            .iter()
            .filter(|m| in_incident(m.minute))
            .filter_map(|m| m.p95_ms)
            .max()
            .map(|v| v as f64);
        let _ = writeln!(
            md,
            "## `{}` (production: {})\n",
            ep.endpoint,
            ep.production.join(", ")
        );
        let arms: Vec<&ArmReport> = report.arms.iter().collect();
        let mut header = "| minute | production: requests, p95, failed |".to_string();
        let mut rule = "|---|---|".to_string();
        for a in &arms {
            let _ = write!(header, " `{}` |", a.name);
            rule.push_str("---|");
        }
        let _ = writeln!(md, "{header}\n{rule}");
        let last = ep.minutes.iter().map(|m| m.minute).max().unwrap_or(0);
        for minute in 0..=last {
            let prod = ep.minutes.iter().find(|m| m.minute == minute);
            let mark = if in_incident(minute) { " ▲" } else { "" };
            let mut row = match prod {
                Some(m) => format!(
                    "| {minute}{mark} | {}, {}, {:.0}% |",
                    m.requests,
                    m.p95_ms
                        .map_or("–".into(), |p| format!("{:.1} s", p as f64 / 1000.0)),
                    100.0 * share(failed(&m.statuses), m.requests)
                ),
                None => format!("| {minute}{mark} | 0, –, – |"),
            };
            for a in &arms {
                let got = a
                    .endpoints
                    .iter()
                    .find(|e| e.endpoint == ep.endpoint)
                    .and_then(|e| e.minutes.iter().find(|m| m.minute == minute));
                match got {
                    Some(m) if m.requests > 0 => {
                        let _ = write!(
                            row,
                            " {}, {}, {:.0}% |",
                            m.requests,
                            m.p95_ms
                                .map_or("–".into(), |p| format!("{:.2} s", p / 1000.0)),
                            100.0 * share(m.failed, m.requests)
                        );
                    }
                    _ => row.push_str(" 0, –, – |"),
                }
            }
            let _ = writeln!(md, "{row}");
        }
        md.push('\n');
        if prod_req < 20 {
            let _ = writeln!(
                md,
                "Too few requests in the incident phase ({prod_req}) to judge this endpoint.\n"
            );
            continue;
        }
        for a in &arms {
            let Some(e) = a.endpoints.iter().find(|e| e.endpoint == ep.endpoint) else {
                continue;
            };
            let phase_fig = e
                .phases
                .iter()
                .find(|p| p.phase == report.scenario.incident_phase);
            let (req, fail, p95) =
                phase_fig.map_or((0, 0, None), |p| (p.requests, p.failed, p.p95_ms));
            let rep_share = share(fail, req);
            let rep_p95_rel = p95.map(|p| p / request_timeout_ms);
            let prod_p95_rel = prod_p95.map(|p| p / limit_ms);
            match a.expect {
                Expect::Incident => {
                    if prod_share >= 0.01 {
                        checks.push(FidelityCheck {
                            arm: a.name.clone(),
                            endpoint: ep.endpoint.clone(),
                            question: format!("reproduces the failed share within {factor}x"),
                            passed: within(rep_share, prod_share, factor),
                            detail: format!(
                                "{:.1}% failed ({fail} of {req}) vs production {:.1}% ({prod_failed} of {prod_req})",
                                100.0 * rep_share,
                                100.0 * prod_share
                            ),
                        });
                    }
                    if let (Some(r), Some(p)) = (rep_p95_rel, prod_p95_rel) {
                        checks.push(FidelityCheck {
                            arm: a.name.clone(),
                            endpoint: ep.endpoint.clone(),
                            question: format!(
                                "reproduces the p95 (share of the limit) within {factor}x"
                            ),
                            passed: within(r, p, factor),
                            detail: format!(
                                "p95 {:.0}% of its limit vs production {:.0}%",
                                100.0 * r,
                                100.0 * p
                            ),
                        });
                    }
                }
                Expect::Fixed => {
                    if prod_share >= 0.01 {
                        checks.push(FidelityCheck {
                            arm: a.name.clone(),
                            endpoint: ep.endpoint.clone(),
                            question: "removes the failures (≤ 1%)".into(),
                            passed: rep_share <= 0.01,
                            detail: format!(
                                "{:.1}% failed ({fail} of {req}) vs production {:.1}%",
                                100.0 * rep_share,
                                100.0 * prod_share
                            ),
                        });
                    }
                    if let Some(budget) = e.budget_p95_ms {
                        checks.push(FidelityCheck {
                            arm: a.name.clone(),
                            endpoint: ep.endpoint.clone(),
                            question: "holds the p95 budget in the incident phase".into(),
                            passed: p95.is_some_and(|p| p <= budget),
                            detail: format!(
                                "p95 {} (budget {:.0} ms)",
                                p95.map_or("–".into(), |p| format!("{p:.0} ms")),
                                budget
                            ),
                        });
                    }
                }
                Expect::Observe => {}
            }
        }
    }
    let passed = checks.iter().all(|c| c.passed);
    md.push_str("## Did the replay reproduce production, and the fix remove it?\n\n");
    md.push_str(&checks_table(&checks));
    Fidelity {
        factor,
        incident_minutes: incident,
        checks,
        passed,
        markdown: md,
    }
}

/// The questions and their answers as a Markdown table (what fidelity.md ends with, and what
/// the docs show of a stored run).
pub fn checks_table(checks: &[FidelityCheck]) -> String {
    if checks.is_empty() {
        return "No arm expects the incident or the fix, or no endpoint had enough requests: nothing to judge.\n".into();
    }
    let mut md = String::from("| arm | endpoint | question | | detail |\n|---|---|---|---|---|\n");
    for c in checks {
        let _ = writeln!(
            md,
            "| `{}` | `{}` | {} | {} | {} |",
            c.arm,
            c.endpoint,
            c.question,
            if c.passed { "yes" } else { "**NO**" },
            c.detail
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{ObservedEndpoint, ObservedMinute};
    use crate::report::fixtures;
    use crate::report::{PhaseFigures, PhaseInfo};

    const WEBHOOK: &str = "POST /api/webhooks/email";

    /// Production: 100 webhooks in the burst minute, 40 cut off at 60 s.
    fn observed() -> Observed {
        let minute = |minute, ok, timeout, p95| ObservedMinute {
            minute,
            requests: ok + timeout,
            p50_ms: Some(500),
            p95_ms: Some(p95),
            statuses: StatusMix {
                ok,
                timeout,
                ..StatusMix::default()
            },
        };
        Observed {
            source: "x.csv".into(),
            from: "2026-01-23T17:57:00Z".into(),
            to: "2026-01-23T17:59:00Z".into(),
            speed: 30.0,
            kept: 1.0,
            function_limit: Duration::from_secs(60),
            endpoints: vec![ObservedEndpoint {
                endpoint: WEBHOOK.into(),
                production: vec![WEBHOOK.into()],
                minutes: vec![minute(0, 30, 0, 900), minute(1, 60, 40, 60_000)],
            }],
            unmatched: Default::default(),
            ignored: Default::default(),
        }
    }

    /// An arm whose webhook failed `failed` of 100 in the burst, with `p95` ms.
    fn arm(name: &str, expect: Expect, failed: u64, p95: f64) -> ArmReport {
        let mut e = fixtures::endpoint(WEBHOOK, p95, Some(500.0));
        e.phases = vec![PhaseFigures {
            phase: "burst".into(),
            requests: 100,
            p95_ms: Some(p95),
            statement_timeouts: 0,
            failed,
        }];
        let mut a = fixtures::arm(name, &[], vec![e]);
        a.expect = expect;
        a
    }

    fn judged(arms: Vec<ArmReport>) -> Fidelity {
        let mut report = fixtures::report(arms);
        report.scenario.phases = vec![PhaseInfo {
            name: "burst".into(),
            from_s: 2.0,
            to_s: 4.0,
        }];
        compare(&report, &observed(), 3000.0, 2.0)
    }

    #[test]
    fn a_legacy_arm_reproduces_within_the_factor_and_a_fixed_arm_removes_it() {
        let f = judged(vec![
            arm("legacy", Expect::Incident, 60, 3000.0),
            arm("fixed", Expect::Fixed, 0, 40.0),
        ]);
        assert_eq!(f.incident_minutes, (1, 2));
        assert!(f.passed, "{}", f.markdown);
        assert_eq!(f.checks.len(), 4);
        // Each question once per arm and endpoint, in the table as in the checks (a user saw
        // the all-on webhook rows twice; two questions, or one printed twice, must differ).
        let rows: Vec<&str> = f
            .markdown
            .lines()
            .filter(|l| l.starts_with("| `"))
            .collect();
        assert_eq!(rows.len(), 4, "{}", f.markdown);
        let mut unique = rows.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), rows.len(), "{}", f.markdown);
        assert!(f
            .markdown
            .contains("Every recorded request sent, at 30.00x"));
        assert!(
            f.markdown.contains("| 1 ▲ | 100, 60.0 s, 40% |"),
            "{}",
            f.markdown
        );
    }

    #[test]
    fn each_question_can_be_answered_no() {
        // Too few failures, too fast, for the legacy arm; failures left, over budget, for the
        // fixed one.
        let f = judged(vec![
            arm("legacy", Expect::Incident, 10, 900.0),
            arm("fixed", Expect::Fixed, 5, 800.0),
        ]);
        assert!(!f.passed);
        let failed: Vec<(&str, &str)> = f
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| (c.arm.as_str(), c.question.as_str()))
            .collect();
        assert_eq!(
            failed,
            [
                ("legacy", "reproduces the failed share within 2x"),
                (
                    "legacy",
                    "reproduces the p95 (share of the limit) within 2x"
                ),
                ("fixed", "removes the failures (≤ 1%)"),
                ("fixed", "holds the p95 budget in the incident phase"),
            ]
        );
        assert!(f.markdown.contains("**NO**"));
    }

    #[test]
    fn the_table_says_when_arrivals_were_thinned() {
        let mut o = observed();
        o.kept = 1.0 / 30.0;
        assert_eq!(o.load_factor(), 1.0);
        let mut report = fixtures::report(vec![arm("legacy", Expect::Incident, 60, 3000.0)]);
        report.scenario.phases = vec![PhaseInfo {
            name: "burst".into(),
            from_s: 2.0,
            to_s: 4.0,
        }];
        let f = compare(&report, &o, 3000.0, 2.0);
        assert!(
            f.markdown.contains(
                "Arrivals thinned to 1 in 30.000: the world saw production's arrival rate, so"
            ),
            "{}",
            f.markdown
        );
        // Thinned less than the speed: a heavier world, and the table says how much.
        o.kept = 0.2;
        let f = compare(&report, &o, 3000.0, 2.0);
        assert!(
            f.markdown.contains(
                "Arrivals thinned to 1 in 5.000: the world saw 6.00x production's arrival rate"
            ),
            "{}",
            f.markdown
        );
    }
}
