//! `compare BASE NEW`: a CI gate against a baseline measured beside the change, that does
//! not flap on a shared machine. For every arm and endpoint in both, a p95 that grew is a
//! regression only when
//! - it grew **beyond `max_regression`** of the baseline's p95 (10 %) **and by at least the
//!   floor**: `min_delta` (50 ms) and, on a budgeted endpoint, `budget_share` of its budget
//!   (10 %) — 9 ms → 14 ms is +50 % but nothing on a 2 s budget; or it **crossed its budget**
//!   (within it before, over it now), however little;
//! - and the growth is **significant across the repeats**: repeat *i* of the new side is set
//!   against repeat *i* of the baseline (run one after the other, interleaved, so a runner's
//!   drift falls on both), second by second of the same schedule; the mean log-ratio of their
//!   per-second p95s is the shift, and a two-stage **block bootstrap** (pairs of repeats
//!   resampled, then runs of [`BLOCK_S`] consecutive seconds within each, as per-second p95s
//!   are autocorrelated) gives the one-sided p-value of "no larger" at `alpha` (0.01).
//!
//! Too little data — fewer than [`MIN_WINDOWS`] paired seconds — is **inconclusive**: neither
//! a pass nor a regression, said in the table and by its own exit code (4).
//!
//! Each side is a report.json or a directory of repeats (every `report.json` under it, in
//! path order); a side's p95 is then the median of its repeats'. The noise band measured — the
//! baseline's per-second p95 between its quartiles, the spread of its repeats — is printed
//! beside each change considered, so a reader sees what the gate judged against.

use std::path::{Path, PathBuf};

use crate::report::{ms, Report};

/// Fewer paired seconds than this: inconclusive.
pub const MIN_WINDOWS: usize = 8;
/// The block bootstrap's block, in seconds (consecutive per-second p95s move together).
pub const BLOCK_S: usize = 4;
/// Bootstrap resamples (the p-value's resolution is 1 / (this + 1)).
pub const RESAMPLES: usize = 4000;

/// How much growth the gate lets through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gate {
    /// Relative to the baseline's p95 (0.1 = 10 %).
    pub max_regression: f64,
    /// Milliseconds below which a change is noise whatever its ratio.
    pub min_delta_ms: f64,
    /// Share of the endpoint's budget below which a change is noise (0.1 = 10 %).
    pub budget_share: f64,
    /// Significance level of the one-sided block-bootstrap test on paired per-second p95s.
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

/// The gate's word on one arm × endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Grew beyond the floor (or across the budget), significantly.
    Regression,
    /// Grew beyond the relative allowance, but below the floor or not significantly.
    Noise,
    /// Grew, and too few paired seconds to tell: neither a pass nor a regression.
    Inconclusive,
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
    /// The paired per-second shift, new over base (+0.30: 30 % slower); `None` with no pair.
    pub shift: Option<f64>,
    /// Paired seconds the test had.
    pub paired_seconds: usize,
    /// One-sided block-bootstrap p-value (new no larger); `None` with too few seconds.
    pub p_value: Option<f64>,
    pub verdict: Verdict,
    /// Why, in words.
    pub reason: String,
}

impl Change {
    pub fn regression(&self) -> bool {
        self.verdict == Verdict::Regression
    }
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

    /// Per repeat the endpoint's p95 and its per-second p95s (second → ms), and its budget.
    fn figures(&self, arm: &str, endpoint: &str) -> (Vec<f64>, Vec<Seconds>, Option<f64>) {
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
            windows.push(e.windows.iter().map(|w| (w.0, w.1)).collect());
            budget = budget.or(e.budget_p95_ms);
        }
        (p95s, windows, budget)
    }
}

/// One repeat's per-second p95s, by second of the schedule.
type Seconds = std::collections::BTreeMap<u32, f64>;

fn pooled(windows: &[Seconds]) -> Vec<f64> {
    windows.iter().flat_map(|w| w.values().copied()).collect()
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
            let pairs = paired(&base_w, &new_w);
            let paired_seconds = pairs.iter().map(Vec::len).sum();
            let enough = paired_seconds >= MIN_WINDOWS;
            let shift = mean_log_ratio(&pairs).map(f64::exp_m1);
            // How much it grew: the paired seconds' shift applied to the base's p95 when there
            // are enough of them (far steadier than two p95s, each a tail of few seconds),
            // else the p95s themselves.
            let growth = match shift {
                Some(s) if enough => s,
                _ => n / b - 1.0,
            };
            if growth <= gate.max_regression && !crossed {
                continue;
            }
            let floor_ms = budget.map_or(gate.min_delta_ms, |bu| {
                gate.min_delta_ms.max(gate.budget_share * bu)
            });
            let p_value = enough.then(|| bootstrap_p(&pairs, RESAMPLES));
            let grew_ms = growth * b;
            let large = grew_ms >= floor_ms || crossed;
            let (verdict, reason) = match (large, p_value) {
                (false, _) => (
                    Verdict::Noise,
                    format!(
                        "noise: grew by {} < {} (the floor: {})",
                        ms(Some(grew_ms)),
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
                ),
                (true, None) => (
                    Verdict::Inconclusive,
                    format!(
                        "inconclusive: {paired_seconds} paired seconds, fewer than {MIN_WINDOWS} (give each side the same scenario, more repeats or a longer run)"
                    ),
                ),
                (true, Some(p)) if p < gate.alpha => (
                    Verdict::Regression,
                    if crossed {
                        "crossed its budget".to_owned()
                    } else {
                        format!(
                            "grew by {} ≥ {}{}",
                            ms(Some(grew_ms)),
                            ms(Some(floor_ms)),
                            if enough {
                                " (the paired shift on the base's p95)"
                            } else {
                                ""
                            }
                        )
                    },
                ),
                (true, Some(p)) => (
                    Verdict::Noise,
                    format!(
                        "noise: the paired seconds are not consistently slower (block bootstrap p = {p:.3} ≥ {})",
                        gate.alpha
                    ),
                ),
            };
            out.push(Change {
                arm: arm.name.clone(),
                endpoint: e.endpoint.clone(),
                base_ms: b,
                new_ms: n,
                budget_ms: budget,
                floor_ms,
                noise_iqr_ms: quartiles(&pooled(&base_w)),
                base_spread_ms: (
                    base_p95s.iter().copied().fold(f64::INFINITY, f64::min),
                    base_p95s.iter().copied().fold(0.0, f64::max),
                ),
                shift,
                paired_seconds,
                p_value,
                verdict,
                reason,
            });
        }
    }
    out
}

/// Whether some arm × endpoint has a p95 on both sides (else there is nothing to judge).
pub fn shared(base: &Side, new: &Side) -> bool {
    new.reports.iter().flat_map(|r| &r.arms).any(|arm| {
        arm.endpoints
            .iter()
            .any(|e| e.p95_ms.is_some() && !base.figures(&arm.name, &e.endpoint).0.is_empty())
    })
}

/// Per pair of repeats (the i-th of each side), `ln(new / base)` of every second both timed.
fn paired(base: &[Seconds], new: &[Seconds]) -> Vec<Vec<f64>> {
    base.iter()
        .zip(new)
        .map(|(b, n)| {
            b.iter()
                .filter_map(|(t, bv)| {
                    let nv = n.get(t)?;
                    (*bv > 0.0 && *nv > 0.0).then(|| (nv / bv).ln())
                })
                .collect::<Vec<f64>>()
        })
        .filter(|d| !d.is_empty())
        .collect()
}

/// The mean over pairs of each pair's mean log-ratio.
fn mean_log_ratio(pairs: &[Vec<f64>]) -> Option<f64> {
    let means: Vec<f64> = pairs
        .iter()
        .map(|d| d.iter().sum::<f64>() / d.len() as f64)
        .collect();
    (!means.is_empty()).then(|| means.iter().sum::<f64>() / means.len() as f64)
}

/// The one-sided p-value of "the new side is no slower": the share of two-stage block-bootstrap
/// resamples whose mean log-ratio is ≤ 0. Each resample draws as many pairs as there are,
/// with replacement, then within each drawn pair as many seconds as it has, in runs of
/// [`block_len`] consecutive seconds from random starts (a moving-block bootstrap), so both
/// the drift between repeats and the seconds' autocorrelation are in its spread. With few
/// pairs a bootstrap understates the spread between them (by (n − 1) / n in variance): each
/// drawn pair's offset from the mean is widened by √(n / (n − 1)) to make up for it.
/// Deterministic: the same data give the same p.
pub fn bootstrap_p(pairs: &[Vec<f64>], resamples: usize) -> f64 {
    let n = pairs.len();
    let means: Vec<f64> = pairs
        .iter()
        .map(|d| d.iter().sum::<f64>() / d.len() as f64)
        .collect();
    let grand = means.iter().sum::<f64>() / n as f64;
    let widen = if n > 1 {
        (n as f64 / (n as f64 - 1.0)).sqrt()
    } else {
        1.0
    };
    let mut rng = SplitMix64(0x005e_ed53);
    let mut at_or_below = 0usize;
    for _ in 0..resamples {
        let mut sum = 0.0;
        for _ in 0..n {
            let i = rng.below(n);
            let d = &pairs[i];
            let block = block_len(d.len());
            let (mut total, mut taken) = (0.0, 0);
            while taken < d.len() {
                let start = rng.below(d.len() - block + 1);
                for v in &d[start..start + block.min(d.len() - taken)] {
                    total += v;
                    taken += 1;
                }
            }
            sum += total / d.len() as f64 + (means[i] - grand) * (widen - 1.0);
        }
        if sum <= 0.0 {
            at_or_below += 1;
        }
    }
    (at_or_below + 1) as f64 / (resamples + 1) as f64
}

/// The block of the moving-block bootstrap for a series of `len` seconds: at least
/// [`BLOCK_S`], and √len for longer series (a per-second p95 remembers the seconds before it).
fn block_len(len: usize) -> usize {
    BLOCK_S.max((len as f64).sqrt().ceil() as usize).min(len)
}

/// A small, fixed pseudo-random sequence (SplitMix64): the bootstrap is the same on every
/// machine and every version of any random crate.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
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
                quartiles(&pooled(&windows)).map_or("–".into(), |(a, b)| format!(
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
        "A regression: p95 up > {:.0} %, by ≥ max({}, {:.0} % of the budget) or across the budget, and the paired per-second p95s slower (block bootstrap over repeats and seconds, p < {}). Fewer than {MIN_WINDOWS} paired seconds: inconclusive.\n\n| arm | endpoint | base p95 (repeats) | new p95 | change | budget | base per-second p95, IQR | paired shift | p | verdict |\n|---|---|---|---|---|---|---|---|---|---|\n",
        gate.max_regression * 100.0,
        ms(Some(gate.min_delta_ms)),
        gate.budget_share * 100.0,
        gate.alpha
    );
    let mut rows: Vec<&Change> = found.iter().collect();
    rows.sort_by_key(|c| match c.verdict {
        Verdict::Regression => 0,
        Verdict::Inconclusive => 1,
        Verdict::Noise => 2,
    });
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
            c.shift.map_or("–".into(), |s| format!(
                "{:+.0} % ({} s)",
                s * 100.0,
                c.paired_seconds
            )),
            c.p_value.map_or("–".into(), |p| format!("{p:.3}")),
            match c.verdict {
                Verdict::Regression => format!("**REGRESSION**: {}", c.reason),
                Verdict::Inconclusive => format!("**INCONCLUSIVE**: {}", c.reason),
                Verdict::Noise => c.reason.clone(),
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{arm, endpoint, report};

    /// A report whose `name` (budget `budget` ms) has p95 `p95` and per-second p95s `windows`.
    fn run_of(name: &str, budget: f64, p95: f64, windows: &[f64]) -> Report {
        let mut e = endpoint(name, p95, Some(budget));
        e.windows = windows
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u32, *v, 10))
            .collect();
        report(vec![arm("all-on", &[], vec![e])])
    }

    /// One run of `GET /` (budget 2 s).
    fn one(p95: f64, windows: &[f64]) -> Side {
        Side::one(run_of("GET /", 2000.0, p95, windows))
    }

    /// Windows around `centre`, spread ± `spread` in a fixed pattern.
    fn around(centre: f64, spread: f64) -> Vec<f64> {
        (0..30)
            .map(|i| centre + spread * (((i * 7) % 11) as f64 / 5.0 - 1.0))
            .collect()
    }

    fn regressions(found: &[Change]) -> Vec<&Change> {
        found.iter().filter(|c| c.regression()).collect()
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
        assert!(c.p_value.unwrap() < 1e-3, "{c:?}");
        assert_eq!(c.paired_seconds, 30);
        assert!((c.shift.unwrap() - 2.0).abs() < 0.05, "{c:?}");
        assert!(
            table(&found, &Gate::default()).contains("**REGRESSION**: grew by"),
            "{}",
            table(&found, &Gate::default())
        );
    }

    /// Too few seconds to test is inconclusive, never a pass or a regression (it used to be
    /// taken as significant).
    #[test]
    fn too_few_windows_are_inconclusive() {
        let found = compare(
            &one(300.0, &around(300.0, 30.0)[..5]),
            &one(900.0, &around(900.0, 30.0)[..5]),
            &Gate::default(),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].verdict, Verdict::Inconclusive, "{found:?}");
        assert!(table(&found, &Gate::default())
            .contains("**INCONCLUSIVE**: inconclusive: 5 paired seconds"));
        // No windows at all (a report without them): inconclusive too.
        let found = compare(&one(300.0, &[]), &one(900.0, &[]), &Gate::default());
        assert_eq!(found[0].verdict, Verdict::Inconclusive);
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

    /// One slow second lifts the p95 but not the seconds: not a regression (its paired shift
    /// is under the allowance, so it is not even listed).
    #[test]
    fn one_slow_second_is_not_a_regression() {
        let base = around(300.0, 30.0);
        let mut new = base.clone();
        new[3] = 5000.0;
        let found = compare(&one(300.0, &base), &one(900.0, &new), &Gate::default());
        assert!(regressions(&found).is_empty(), "{found:?}");
        // Three slow seconds in thirty, on an endpoint with no budget: listed, past the floor,
        // and judged noise by the test (the other 27 seconds are not slower).
        let unbudgeted = |windows: &[f64]| {
            let mut e = endpoint("GET /", 300.0, None);
            e.windows = windows
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u32, *v, 10))
                .collect();
            Side::one(report(vec![arm("all-on", &[], vec![e])]))
        };
        new[4] = 5000.0;
        new[17] = 5000.0;
        let found = compare(&unbudgeted(&base), &unbudgeted(&new), &Gate::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(!found[0].regression(), "{found:?}");
        assert!(
            found[0].reason.contains("block bootstrap"),
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
            &one(108.0, &around(108.0, 5.0)),
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

    /// Synthetic repeats as a shared runner gives them: a schedule with a burst (per-second
    /// p95s 150 ms, then 400 ms for 8 s, then 200 ms), each second's noise log-normal and
    /// autocorrelated (AR(1), φ = 0.5, σ = 0.15), each repeat drifting as a whole (σ = 0.03),
    /// its p95 the 95th percentile of its seconds; `shift` multiplies every second.
    fn synthetic(rng: &mut SplitMix64, repeats: usize, shift: f64) -> Side {
        synthetic_with(rng, repeats, shift, (0.5, 0.15, 0.03))
    }

    /// [`synthetic`] with its noise given: (φ, σ, the repeats' drift).
    fn synthetic_with(
        rng: &mut SplitMix64,
        repeats: usize,
        shift: f64,
        (phi, sigma, drift_sd): (f64, f64, f64),
    ) -> Side {
        let mut normal = || {
            // Box–Muller from two uniforms in (0, 1].
            let u = |r: &mut SplitMix64| ((r.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            let (a, b) = (u(rng), u(rng));
            (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
        };
        let mut reports = Vec::new();
        for _ in 0..repeats {
            let drift = drift_sd * normal();
            let mut ar = 0.0;
            let windows: Vec<f64> = (0..20)
                .map(|t| {
                    ar = phi * ar + sigma * (1.0f64 - phi * phi).sqrt() * normal();
                    let shape = match t {
                        0..=4 => 150.0,
                        5..=12 => 400.0,
                        _ => 200.0,
                    };
                    shape * shift * (ar + drift).exp()
                })
                .collect();
            let p95 = quantile(&sorted(&windows), 0.95).unwrap();
            reports.push(run_of("POST /api/webhooks/email", 500.0, p95, &windows));
        }
        Side { reports }
    }

    /// The gate's error rates on synthetic repeats (3 a side, interleaved pairs): noise alone
    /// is called a regression in at most 1 of 20 seeded trials, a 30 % slower p95 in at least
    /// 19 of 20.
    #[test]
    fn noise_is_rarely_flagged_and_a_30_percent_shift_nearly_always() {
        let gate = Gate::default();
        let flagged = |shift: f64, seed: u64| {
            let mut rng = SplitMix64(seed);
            let (base, new) = (synthetic(&mut rng, 3, 1.0), synthetic(&mut rng, 3, shift));
            !regressions(&compare(&base, &new, &gate)).is_empty()
        };
        let noise = (0..20).filter(|seed| flagged(1.0, 1000 + seed)).count();
        let shifted = (0..20).filter(|seed| flagged(1.3, 2000 + seed)).count();
        assert!(noise <= 1, "noise flagged in {noise} of 20");
        assert!(shifted >= 19, "a 30 % shift flagged in {shifted} of 20");
    }

    /// The gate's error rates over 300 seeded trials at three noise levels (`cargo test
    /// --release -p incident-lab --lib -- --ignored calibration_rates --nocapture`): at the
    /// noisiest, autocorrelation and drift past what 3 repeats of 20 s can measure, noise is
    /// flagged more often than `alpha` says; more repeats or a longer run are the remedy.
    #[test]
    #[ignore = "prints rates; run by hand"]
    fn calibration_rates() {
        let gate = Gate::default();
        for noise in [(0.6, 0.25, 0.05), (0.5, 0.2, 0.05), (0.5, 0.15, 0.03)] {
            for shift in [1.0, 1.3] {
                let n = 300;
                let hits = (0..n)
                    .filter(|seed| {
                        let mut rng = SplitMix64(77 + seed * 7919);
                        let (base, new) = (
                            synthetic_with(&mut rng, 3, 1.0, noise),
                            synthetic_with(&mut rng, 3, shift, noise),
                        );
                        !regressions(&compare(&base, &new, &gate)).is_empty()
                    })
                    .count();
                eprintln!("{noise:?} shift {shift}: {hits} of {n}");
            }
        }
    }

    /// Pairs of repeats are set against each other second by second: a burst that both sides
    /// share is not a difference, and identical sides give p ≈ 1.
    #[test]
    fn paired_seconds_cancel_the_schedules_shape() {
        let shape: Vec<f64> = (0..20)
            .map(|t| if t < 10 { 100.0 } else { 900.0 })
            .collect();
        let side = |k: f64| -> Vec<Seconds> {
            vec![shape
                .iter()
                .enumerate()
                .map(|(t, v)| (t as u32, v * k))
                .collect()]
        };
        let pairs = paired(&side(1.0), &side(1.0));
        assert_eq!(pairs[0].len(), 20);
        assert_eq!(mean_log_ratio(&pairs), Some(0.0));
        assert!(bootstrap_p(&pairs, 999) > 0.99);
        let slower = paired(&side(1.0), &side(1.5));
        assert!((mean_log_ratio(&slower).unwrap().exp() - 1.5).abs() < 1e-9);
        assert!(bootstrap_p(&slower, 999) < 0.01);
    }
}
