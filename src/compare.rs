//! `compare BASE NEW`: a CI gate against a stored baseline that does not flap on a shared
//! machine. For every arm and endpoint in both, a p95 that grew is a regression only when
//! - it grew **beyond `max_regression`** of the baseline's p95 (10 %) **and by at least the
//!   floor**: `min_delta` (50 ms) and, on a budgeted endpoint, `budget_share` of its budget
//!   (10 %) — 9 ms → 14 ms is +50 % but nothing on a 2 s budget; or it **crossed its budget**
//!   (within it before, over it now), however little;
//! - and the growth is **significant**: the new run's per-second p95s are larger than the
//!   baseline's by a one-sided Mann–Whitney test at `alpha` (0.01), pooled over every repeat
//!   given — one slow second does not make a regression. Not tested (and said) with fewer than
//!   [`MIN_WINDOWS`] windows a side.
//!
//! Each side is a report.json or a directory of repeats (every `report.json` under it); a
//! side's p95 is then the median of its repeats'. The noise band measured — the baseline's
//! per-second p95 between its quartiles, the spread of its repeats — is printed beside each
//! change considered, so a reader sees what the gate judged against.

use std::path::{Path, PathBuf};

use crate::report::{ms, Report};

/// Fewer windows than this on a side: no significance test.
pub const MIN_WINDOWS: usize = 8;

/// How much growth the gate lets through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gate {
    /// Relative to the baseline's p95 (0.1 = 10 %).
    pub max_regression: f64,
    /// Milliseconds below which a change is noise whatever its ratio.
    pub min_delta_ms: f64,
    /// Share of the endpoint's budget below which a change is noise (0.1 = 10 %).
    pub budget_share: f64,
    /// Significance level of the one-sided Mann–Whitney test on per-second p95s.
    pub alpha: f64,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            max_regression: 0.10,
            min_delta_ms: 50.0,
            budget_share: 0.10,
            alpha: 0.01,
        }
    }
}

/// One arm × endpoint whose p95 grew beyond the relative allowance, judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub arm: String,
    pub endpoint: String,
    pub base_ms: f64,
    pub new_ms: f64,
    pub budget_ms: Option<f64>,
    /// The smallest growth that counts: `max(min_delta, budget_share × budget)`.
    pub floor_ms: f64,
    /// The baseline's per-second p95, 25th to 75th percentile.
    pub noise_iqr_ms: Option<(f64, f64)>,
    /// The baseline repeats' p95s, lowest to highest (one repeat: equal).
    pub base_spread_ms: (f64, f64),
    /// Median of every new − base per-second difference (Hodges–Lehmann).
    pub shift_ms: Option<f64>,
    /// One-sided Mann–Whitney p-value (new larger); `None` with too few windows.
    pub p_value: Option<f64>,
    /// The gate's verdict.
    pub regression: bool,
    /// Why, in words.
    pub reason: String,
}

/// A side of the comparison: its repeats.
#[derive(Debug, Clone)]
pub struct Side {
    pub reports: Vec<Report>,
}

impl Side {
    /// Reads a report.json, or every report.json under a directory (the repeats of one run).
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let files = if path.is_dir() {
            let mut found = Vec::new();
            collect(path, &mut found)?;
            found.sort();
            anyhow::ensure!(!found.is_empty(), "{} holds no report.json", path.display());
            found
        } else {
            vec![path.to_owned()]
        };
        let reports = files
            .iter()
            .map(|f| Report::read(f))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self { reports })
    }

    pub fn one(report: Report) -> Self {
        Self {
            reports: vec![report],
        }
    }

    /// Per repeat the endpoint's p95, and every repeat's per-second p95s pooled.
    fn figures(&self, arm: &str, endpoint: &str) -> (Vec<f64>, Vec<f64>, Option<f64>) {
        let (mut p95s, mut windows, mut budget) = (Vec::new(), Vec::new(), None);
        for r in &self.reports {
            let Some(e) = r
                .arms
                .iter()
                .find(|a| a.name == arm)
                .and_then(|a| a.endpoints.iter().find(|e| e.endpoint == endpoint))
            else {
                continue;
            };
            p95s.extend(e.p95_ms);
            windows.extend(e.windows.iter().map(|w| w.1));
            budget = budget.or(e.budget_p95_ms);
        }
        (p95s, windows, budget)
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.file_name().is_some_and(|n| n == "report.json") {
            out.push(path);
        }
    }
    Ok(())
}

/// Every arm × endpoint of `new` present in `base` whose p95 grew beyond the relative
/// allowance or across its budget, judged by the gate (anything else: not listed).
pub fn compare(base: &Side, new: &Side, gate: &Gate) -> Vec<Change> {
    let mut out = Vec::new();
    let Some(first) = new.reports.first() else {
        return out;
    };
    for arm in &first.arms {
        for e in &arm.endpoints {
            let (base_p95s, base_w, budget) = base.figures(&arm.name, &e.endpoint);
            let (new_p95s, new_w, _) = new.figures(&arm.name, &e.endpoint);
            let (Some(b), Some(n)) = (median(&base_p95s), median(&new_p95s)) else {
                continue;
            };
            let crossed = budget.is_some_and(|bu| b <= bu && n > bu);
            if n <= b * (1.0 + gate.max_regression) && !crossed {
                continue;
            }
            let floor_ms = budget.map_or(gate.min_delta_ms, |bu| {
                gate.min_delta_ms.max(gate.budget_share * bu)
            });
            let enough = base_w.len() >= MIN_WINDOWS && new_w.len() >= MIN_WINDOWS;
            let p_value = enough.then(|| mann_whitney_greater(&base_w, &new_w));
            let significant = p_value.is_none_or(|p| p < gate.alpha);
            let large = n - b >= floor_ms || crossed;
            let reason = match (large, significant) {
                (true, true) if crossed => "crossed its budget".to_owned(),
                (true, true) => format!("grew by {} ≥ {}", ms(Some(n - b)), ms(Some(floor_ms))),
                (false, _) => format!(
                    "noise: grew by {} < {} (the floor: {})",
                    ms(Some(n - b)),
                    ms(Some(floor_ms)),
                    match budget {
                        Some(bu) if gate.budget_share * bu > gate.min_delta_ms => format!(
                            "{:.0} % of the {} budget",
                            gate.budget_share * 100.0,
                            ms(Some(bu))
                        ),
                        _ => "--min-delta".to_owned(),
                    }
                ),
                (true, false) => format!(
                    "noise: per-second p95s not larger (Mann–Whitney p = {:.3} ≥ {})",
                    p_value.unwrap_or(1.0),
                    gate.alpha
                ),
            };
            out.push(Change {
                arm: arm.name.clone(),
                endpoint: e.endpoint.clone(),
                base_ms: b,
                new_ms: n,
                budget_ms: budget,
                floor_ms,
                noise_iqr_ms: quartiles(&base_w),
                base_spread_ms: (
                    base_p95s.iter().copied().fold(f64::INFINITY, f64::min),
                    base_p95s.iter().copied().fold(0.0, f64::max),
                ),
                shift_ms: hodges_lehmann(&base_w, &new_w),
                p_value,
                regression: large && significant,
                reason,
            });
        }
    }
    out
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let at = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64))
}

fn median(v: &[f64]) -> Option<f64> {
    quantile(&sorted(v), 0.5)
}

fn quartiles(v: &[f64]) -> Option<(f64, f64)> {
    let s = sorted(v);
    Some((quantile(&s, 0.25)?, quantile(&s, 0.75)?))
}

/// The median of every `new − base` difference: how far the new values sit above the old.
pub fn hodges_lehmann(base: &[f64], new: &[f64]) -> Option<f64> {
    let d: Vec<f64> = new
        .iter()
        .flat_map(|n| base.iter().map(move |b| n - b))
        .collect();
    median(&d)
}

/// One-sided Mann–Whitney U test: the p-value of `new` being stochastically larger than
/// `base` (normal approximation with tie correction and continuity correction).
pub fn mann_whitney_greater(base: &[f64], new: &[f64]) -> f64 {
    let (n1, n2) = (new.len() as f64, base.len() as f64);
    if n1 == 0.0 || n2 == 0.0 {
        return 1.0;
    }
    // Ranks of the pooled values, ties given their mean rank.
    let mut all: Vec<(f64, bool)> = new
        .iter()
        .map(|v| (*v, true))
        .chain(base.iter().map(|v| (*v, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_new, mut ties, mut i) = (0.0, 0.0, 0);
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        rank_new += mean_rank * all[i..=j].iter().filter(|x| x.1).count() as f64;
        i = j + 1;
    }
    let u = rank_new - n1 * (n1 + 1.0) / 2.0;
    let n = n1 + n2;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if var <= 0.0 {
        return 1.0;
    }
    let z = (u - n1 * n2 / 2.0 - 0.5) / var.sqrt();
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function (Numerical Recipes' erfcc: relative error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// The noise band of one side's repeats, as Markdown: per arm and budgeted endpoint, each
/// repeat's p95, their median and spread (max − min, and as a share of the median), and the
/// per-second p95s' IQR pooled over the repeats. `None` with fewer than two repeats.
pub fn noise(side: &Side) -> Option<String> {
    if side.reports.len() < 2 {
        return None;
    }
    let first = side.reports.first()?;
    let mut out = format!(
        "{} repeats. Spread: max − min of the repeats' p95.\n\n| arm | endpoint | p95 of each repeat | median | spread | spread ÷ median | per-second p95 IQR | budget |\n|---|---|---|---|---|---|---|---|\n",
        side.reports.len()
    );
    for arm in &first.arms {
        for e in arm.endpoints.iter().filter(|e| e.budget_p95_ms.is_some()) {
            let (p95s, windows, budget) = side.figures(&arm.name, &e.endpoint);
            let (Some(mid), Some(lo), Some(hi)) = (
                median(&p95s),
                p95s.iter().copied().reduce(f64::min),
                p95s.iter().copied().reduce(f64::max),
            ) else {
                continue;
            };
            let each = p95s
                .iter()
                .map(|p| ms(Some(*p)))
                .collect::<Vec<_>>()
                .join(", ");
            out.push_str(&format!(
                "| {} | {} | {each} | {} | {} | {:.0} % | {} | {} |\n",
                arm.name,
                e.endpoint,
                ms(Some(mid)),
                ms(Some(hi - lo)),
                if mid > 0.0 {
                    (hi - lo) / mid * 100.0
                } else {
                    0.0
                },
                quartiles(&windows).map_or("–".into(), |(a, b)| format!(
                    "{}–{}",
                    ms(Some(a)),
                    ms(Some(b))
                )),
                ms(budget)
            ));
        }
    }
    Some(out)
}

/// The changes as Markdown: the regressions, then the changes the gate judged noise, each with
/// the noise band it measured; or one line saying nothing grew.
pub fn table(found: &[Change], gate: &Gate) -> String {
    if found.is_empty() {
        return format!(
            "no p95 grew beyond {:.0} % of its baseline\n",
            gate.max_regression * 100.0
        );
    }
    let mut out = format!(
        "A regression: p95 up > {:.0} %, by ≥ max({}, {:.0} % of the budget) or across the budget, and per-second p95s larger (Mann–Whitney, p < {}).\n\n| arm | endpoint | base p95 (repeats) | new p95 | change | budget | base per-second p95, IQR | shift | p | verdict |\n|---|---|---|---|---|---|---|---|---|---|\n",
        gate.max_regression * 100.0,
        ms(Some(gate.min_delta_ms)),
        gate.budget_share * 100.0,
        gate.alpha
    );
    let mut rows: Vec<&Change> = found.iter().collect();
    rows.sort_by_key(|c| !c.regression);
    for c in rows {
        let spread = if c.base_spread_ms.0 < c.base_spread_ms.1 {
            format!(
                " ({}–{})",
                ms(Some(c.base_spread_ms.0)),
                ms(Some(c.base_spread_ms.1))
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "| {} | {} | {}{} | {} | +{:.0} % | {} | {} | {} | {} | {} |\n",
            c.arm,
            c.endpoint,
            ms(Some(c.base_ms)),
            spread,
            ms(Some(c.new_ms)),
            (c.new_ms / c.base_ms - 1.0) * 100.0,
            ms(c.budget_ms),
            c.noise_iqr_ms.map_or("–".into(), |(a, b)| format!(
                "{}–{}",
                ms(Some(a)),
                ms(Some(b))
            )),
            c.shift_ms.map_or("–".into(), |s| format!("{:+.0} ms", s)),
            c.p_value
                .map_or("– (few windows)".into(), |p| format!("{p:.3}")),
            if c.regression {
                format!("**REGRESSION**: {}", c.reason)
            } else {
                c.reason.clone()
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{arm, endpoint, report};

    /// A report whose `GET /` (budget 2 s) has p95 `p95` and per-second p95s `windows`.
    fn one(p95: f64, windows: &[f64]) -> Side {
        let mut e = endpoint("GET /", p95, Some(2000.0));
        e.windows = windows
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u32, *v, 10))
            .collect();
        Side::one(report(vec![arm("all-on", &[], vec![e])]))
    }

    /// Windows around `centre`, spread ± `spread` in a fixed pattern.
    fn around(centre: f64, spread: f64) -> Vec<f64> {
        (0..30)
            .map(|i| centre + spread * (((i * 7) % 11) as f64 / 5.0 - 1.0))
            .collect()
    }

    fn regressions(found: &[Change]) -> Vec<&Change> {
        found.iter().filter(|c| c.regression).collect()
    }

    /// The case that flapped: 9 ms → 14 ms is +50 %, but 5 ms on a 2 s budget is noise.
    #[test]
    fn a_few_milliseconds_on_a_budget_of_seconds_is_noise() {
        let found = compare(
            &one(9.0, &around(9.0, 1.0)),
            &one(14.0, &around(14.0, 1.0)),
            &Gate::default(),
        );
        assert_eq!(found.len(), 1, "listed, as growth beyond 10 %");
        assert!(regressions(&found).is_empty(), "{found:?}");
        assert!(
            found[0].reason.contains("10 % of the 2.00 s budget"),
            "{}",
            found[0].reason
        );
        assert!(table(&found, &Gate::default()).contains("noise: grew by 5 ms < 200 ms"));
    }

    /// A real slowdown, every second slower, well beyond the floor: a regression.
    #[test]
    fn a_large_consistent_slowdown_is_a_regression() {
        let found = compare(
            &one(300.0, &around(300.0, 30.0)),
            &one(900.0, &around(900.0, 30.0)),
            &Gate::default(),
        );
        assert_eq!(regressions(&found).len(), 1, "{found:?}");
        let c = &found[0];
        assert!(c.p_value.unwrap() < 1e-6, "{c:?}");
        assert!((c.shift_ms.unwrap() - 600.0).abs() < 1.0, "{c:?}");
        assert!(table(&found, &Gate::default()).contains("**REGRESSION**: grew by 600 ms ≥ 200 ms"));
    }

    /// Repeats' noise band: each repeat's p95, median, spread; one run has none.
    #[test]
    fn the_noise_band_of_repeats_is_their_spread() {
        let repeats = Side {
            reports: [100.0, 120.0, 90.0]
                .iter()
                .flat_map(|p| one(*p, &around(*p, 10.0)).reports)
                .collect(),
        };
        let t = noise(&repeats).unwrap();
        assert!(t.starts_with("3 repeats."), "{t}");
        assert!(
            t.contains("| all-on | GET / | 100 ms, 120 ms, 90 ms | 100 ms | 30 ms | 30 % |"),
            "{t}"
        );
        assert!(noise(&one(100.0, &[])).is_none());
    }

    /// One slow second lifts the p95 but not the seconds: not significant, not a regression.
    #[test]
    fn one_slow_second_is_not_a_regression() {
        let base = around(300.0, 30.0);
        let mut new = base.clone();
        new[3] = 5000.0;
        let found = compare(&one(300.0, &base), &one(900.0, &new), &Gate::default());
        assert_eq!(found.len(), 1);
        assert!(!found[0].regression, "{found:?}");
        assert!(
            found[0].reason.contains("Mann–Whitney"),
            "{}",
            found[0].reason
        );
    }

    /// Crossing the budget counts even below the floor and the relative allowance (+5 %).
    #[test]
    fn crossing_the_budget_is_a_regression_below_the_floor() {
        let found = compare(
            &one(1950.0, &around(1950.0, 20.0)),
            &one(2050.0, &around(2050.0, 20.0)),
            &Gate::default(),
        );
        assert_eq!(regressions(&found).len(), 1, "{found:?}");
        assert_eq!(found[0].reason, "crossed its budget");
    }

    /// Faster, or within the relative allowance, is not listed; arms missing from the baseline
    /// are not compared.
    #[test]
    fn faster_within_allowance_or_unmatched_is_not_listed() {
        let gate = Gate::default();
        assert!(compare(
            &one(100.0, &around(100.0, 5.0)),
            &one(50.0, &around(50.0, 5.0)),
            &gate
        )
        .is_empty());
        assert!(compare(
            &one(100.0, &around(100.0, 5.0)),
            &one(110.0, &around(110.0, 5.0)),
            &gate
        )
        .is_empty());
        let other_arm = Side::one(report(vec![arm(
            "all-off",
            &[],
            vec![endpoint("GET /", 1.0, None)],
        )]));
        assert!(compare(&other_arm, &one(9999.0, &around(9999.0, 1.0)), &gate).is_empty());
    }

    /// With repeats, each side's p95 is the median of its repeats', and the spread is reported.
    #[test]
    fn repeats_are_pooled_and_their_spread_reported() {
        let mut base = one(300.0, &around(300.0, 30.0));
        base.reports
            .extend(one(320.0, &around(320.0, 30.0)).reports);
        base.reports
            .extend(one(1000.0, &around(300.0, 30.0)).reports);
        let found = compare(&base, &one(900.0, &around(900.0, 30.0)), &Gate::default());
        assert_eq!(found[0].base_ms, 320.0, "the median repeat");
        assert_eq!(found[0].base_spread_ms, (300.0, 1000.0));
        assert!(table(&found, &Gate::default()).contains("320 ms (300 ms–1.00 s)"));
    }

    /// The test agrees with known values: identical samples give p ≈ 0.5; fully separated
    /// samples of 10 give p below 1e-4 one way and near 1 the other.
    #[test]
    fn mann_whitney_matches_known_values() {
        let a: Vec<f64> = (0..10).map(f64::from).collect();
        let b: Vec<f64> = (10..20).map(f64::from).collect();
        let same = mann_whitney_greater(&a, &a);
        assert!((same - 0.5).abs() < 0.05, "{same}");
        assert!(mann_whitney_greater(&a, &b) < 1e-4);
        assert!(mann_whitney_greater(&b, &a) > 0.999);
        // erfc against tabulated values.
        assert!((erfc(0.0) - 1.0).abs() < 1e-7);
        assert!((erfc(1.0) - 0.157_299_2).abs() < 1e-6);
        assert!((erfc(-1.0) - 1.842_700_8).abs() < 1e-6);
    }
}
