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
//! The growth judged is the smaller of the p95's own and the paired shift: both must say it
//! grew. Seconds consistently slower under a p95 that held are listed, as noise.
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
            // A regression is of the p95 itself, and the paired seconds must agree: it grew
            // by the smaller of the two (p95s alone, each a tail of few seconds, when there
            // are too few paired seconds). Seconds consistently slower under a p95 that held
            // are listed, as noise, so a reader sees them.
            let p95_growth = n / b - 1.0;
            let seconds_growth = shift.filter(|_| enough);
            let growth = seconds_growth.map_or(p95_growth, |s| s.min(p95_growth));
            let listed = p95_growth.max(seconds_growth.unwrap_or(f64::MIN));
            if listed <= gate.max_regression && !crossed {
                continue;
            }
            let floor_ms = budget.map_or(gate.min_delta_ms, |bu| {
                gate.min_delta_ms.max(gate.budget_share * bu)
            });
            let p_value = enough.then(|| bootstrap_p(&pairs, RESAMPLES));
            let grew_ms = growth * b;
            let large = (growth > gate.max_regression && grew_ms >= floor_ms) || crossed;
            let (verdict, reason) = match (large, p_value) {
                (false, _) if p95_growth <= gate.max_regression => (
                    Verdict::Noise,
                    format!(
                        "noise: the p95 grew {:+.0} % (allowance {:.0} %) though the paired seconds moved {:+.0} %",
                        p95_growth * 100.0,
                        gate.max_regression * 100.0,
                        seconds_growth.unwrap_or(0.0) * 100.0
                    ),
                ),
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
                                " (the smaller of the p95's growth and the paired shift)"
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
mod tests;
