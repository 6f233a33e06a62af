//! `calibrate`: the legacy world's unknown knobs fitted to a log export, so that a replay
//! fails where, and as much as, production did.
//!
//! An export says what arrived and what came back; it cannot say how the world was built. The
//! knobs searched are the service's, so one seeded database serves every probe: the pool size,
//! the function limit as scaled (`request_timeout`), the statement timeout (which sets how
//! often the counts' aggregation, of a fixed cost on the seeded dataset, is cancelled) and the
//! providers' latencies (how long the legacy webhook holds its connection). A probe is a run of
//! the legacy arm on the recorded arrivals with one setting of them; its figures per endpoint
//! and recorded minute are set against production's ([`residuals`]), and a pattern search on
//! each knob's grid, coarse steps then fine, keeps the setting with the fewest cells out of
//! tolerance ([`search`]). Deterministic: the same export and base probe the same settings in
//! the same order; only the measured figures differ between machines.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Observed, StatusMix};
use crate::report::ArmReport;

/// Cells with fewer production requests than this are shown, not judged.
pub const MIN_REQUESTS: u64 = 20;

/// Which part of a [`Setting`] a knob turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Which {
    /// The share of the recorded arrivals sent: the load the world sees, at a fixed speed.
    Kept,
    PoolMax,
    RequestTimeout,
    StatementTimeout,
    ProviderLatency,
}

/// A knob the search may turn, and the values it may take (sorted).
#[derive(Debug, Clone, Serialize)]
pub struct Knob {
    pub name: Which,
    pub unit: &'static str,
    pub grid: Vec<f64>,
}

/// The knobs, for a base whose values are given: grids around them wide enough to hold
/// production (pool sizes 2–30; times from a fifth to four times the base).
pub fn knobs(base: &Setting) -> Vec<Knob> {
    let around = |v: f64| -> Vec<f64> {
        [0.2, 0.3, 0.45, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0]
            .iter()
            .map(|f| (v * f).round().max(1.0))
            .collect()
    };
    let mut out = vec![
        // First: at a speed that overloads the world every other knob is moot.
        Knob {
            name: Which::Kept,
            unit: "of the recorded arrivals",
            grid: vec![0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.45, 0.7, 1.0],
        },
        Knob {
            name: Which::PoolMax,
            unit: "connections",
            grid: vec![
                2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0,
            ],
        },
        Knob {
            name: Which::RequestTimeout,
            unit: "ms",
            grid: around(base.request_timeout_ms),
        },
        Knob {
            name: Which::StatementTimeout,
            unit: "ms",
            grid: around(base.statement_timeout_ms),
        },
        Knob {
            name: Which::ProviderLatency,
            unit: "× the base's",
            grid: vec![0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0],
        },
    ];
    for k in &mut out {
        k.grid.dedup();
    }
    out
}

/// One setting of the knobs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    /// The share of the recorded arrivals sent (1: every one, at the replay's speed × production's
    /// rate), thinned evenly per endpoint: the load factor is `speed × kept`.
    pub kept: f64,
    pub pool_max: f64,
    pub request_timeout_ms: f64,
    pub statement_timeout_ms: f64,
    /// Multiplies every provider's latency (base and jitter).
    pub provider_latency: f64,
}

impl Setting {
    fn get(mut self, knob: Which) -> f64 {
        *self.value(knob)
    }

    fn value(&mut self, knob: Which) -> &mut f64 {
        match knob {
            Which::Kept => &mut self.kept,
            Which::PoolMax => &mut self.pool_max,
            Which::RequestTimeout => &mut self.request_timeout_ms,
            Which::StatementTimeout => &mut self.statement_timeout_ms,
            Which::ProviderLatency => &mut self.provider_latency,
        }
    }

    /// In words: `pool_max 4, request_timeout 2100 ms, …`.
    pub fn said(&self) -> String {
        format!(
            "kept {}, pool_max {}, request_timeout {} ms, statement_timeout {} ms, provider latency ×{}",
            self.kept,
            self.pool_max,
            self.request_timeout_ms,
            self.statement_timeout_ms,
            self.provider_latency
        )
    }

    /// `scenario`'s text (a replay's, every arrival sent) with this setting in `[service]`,
    /// `[providers]`, the streams' counts (thinned to `kept`) and `[observed] kept`.
    pub fn apply(&self, scenario: &str) -> Result<String, String> {
        let mut doc: toml::Table = toml::from_str(scenario).map_err(|e| e.to_string())?;
        if self.kept < 1.0 {
            for stream in doc
                .get_mut("streams")
                .and_then(|s| s.as_array_mut())
                .into_iter()
                .flatten()
            {
                let Some(arrival) = stream.get_mut("arrival").and_then(|a| a.as_table_mut()) else {
                    continue;
                };
                if arrival.get("kind").and_then(|k| k.as_str()) != Some("counts") {
                    continue;
                }
                let counts: Vec<u32> = arrival
                    .get("counts")
                    .and_then(|c| c.as_array())
                    .ok_or("a counts stream without counts")?
                    .iter()
                    .map(|c| c.as_integer().and_then(|c| u32::try_from(c).ok()))
                    .collect::<Option<_>>()
                    .ok_or("a count that is not a whole number")?;
                let thinned = crate::logs::to_scenario::thin(&counts, self.kept);
                arrival.insert(
                    "counts".into(),
                    toml::Value::Array(thinned.iter().map(|&c| i64::from(c).into()).collect()),
                );
            }
            if let Some(observed) = doc.get_mut("observed").and_then(|o| o.as_table_mut()) {
                let was = observed
                    .get("kept")
                    .and_then(|k| k.as_float())
                    .unwrap_or(1.0);
                observed.insert("kept".into(), (was * self.kept).into());
            }
        }
        let service = doc
            .entry("service")
            .or_insert_with(|| toml::Table::new().into())
            .as_table_mut()
            .ok_or("[service] is not a table")?;
        service.insert("pool_max".into(), (self.pool_max as i64).into());
        // The service's limit is what cuts a request, as production's function limit did: the
        // client waits longer than any limit the search tries.
        let client_ms = (self.request_timeout_ms + 2000.0).round() as i64;
        let ms = |v: f64| toml::Value::from(format!("{}ms", v.round() as i64));
        service.insert("request_timeout".into(), ms(self.request_timeout_ms));
        service.insert("statement_timeout".into(), ms(self.statement_timeout_ms));
        let client = doc
            .get("client_timeout")
            .and_then(|v| v.as_str())
            .and_then(|v| incident_wire::duration::parse(v).ok())
            .map_or(0, |d| d.as_millis() as i64);
        if client < client_ms {
            doc.insert("client_timeout".into(), format!("{client_ms}ms").into());
        }
        if let Some(providers) = doc.get_mut("providers").and_then(|p| p.as_table_mut()) {
            for (_, p) in providers.iter_mut() {
                let Some(lat) = p.get_mut("latency").and_then(|l| l.as_table_mut()) else {
                    continue;
                };
                for key in ["base_ms", "jitter_ms"] {
                    if let Some(v) = lat.get(key).and_then(|v| v.as_integer()) {
                        let scaled = (v as f64 * self.provider_latency).round() as i64;
                        lat.insert(key.into(), scaled.into());
                    }
                }
            }
        }
        toml::to_string(&doc).map_err(|e| e.to_string())
    }
}

/// The base's setting, read from a replay scenario's text (its `[service]` and
/// `[postgres]`): the search starts there.
pub fn base_setting(scenario: &crate::model::Scenario) -> Setting {
    let ms = |d: Duration| (d.as_secs_f64() * 1000.0).round();
    Setting {
        kept: 1.0,
        pool_max: f64::from(scenario.service.pool_max),
        request_timeout_ms: ms(scenario.service.request_timeout),
        statement_timeout_ms: ms(scenario
            .service
            .statement_timeout
            .or(scenario.postgres.statement_timeout())
            .unwrap_or(Duration::from_secs(8))),
        provider_latency: 1.0,
    }
}

/// One endpoint × recorded minute: production's figures beside the probe's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Residual {
    pub endpoint: String,
    pub minute: u32,
    /// Not used by the fit: judged after it (the held-out minutes).
    pub held_out: bool,
    pub production_requests: u64,
    pub replayed_requests: u64,
    pub production_failed: f64,
    pub replayed_failed: f64,
    /// p95 as a share of each side's limit.
    pub production_p95: Option<f64>,
    pub replayed_p95: Option<f64>,
    /// |replayed − production| over the allowance (±25 % relative, or ±3 points where
    /// production's is under 10 %): within at ≤ 1.
    pub failed_error: f64,
    /// |ln(replayed ÷ production)| over ln 1.5: within at ≤ 1.
    pub p95_error: f64,
}

impl Residual {
    pub fn within(&self) -> bool {
        self.failed_error <= 1.0 && self.p95_error <= 1.0
    }
}

fn failed(s: &StatusMix) -> u64 {
    s.server + s.timeout + s.none
}

/// The failed share's allowance around production's `p`.
pub fn failed_allowance(p: f64) -> f64 {
    if p < 0.10 {
        0.03
    } else {
        0.25 * p
    }
}

/// A p95 error no worse than a factor of 20 (or one side missing): a cell that far off counts
/// the same however far it is, so one hopeless cell does not steer the search.
const WORST: f64 = 7.4;

/// Per endpoint and recorded minute with at least [`MIN_REQUESTS`] in production, the legacy
/// arm's figures against production's; minutes from `fit_minutes` on are marked held out.
pub fn residuals(
    arm: &ArmReport,
    observed: &Observed,
    request_timeout_ms: f64,
    fit_minutes: u32,
) -> Vec<Residual> {
    let limit_ms = observed.function_limit.as_secs_f64() * 1000.0;
    let mut out = Vec::new();
    for ep in &observed.endpoints {
        let replayed = arm.endpoints.iter().find(|e| e.endpoint == ep.endpoint);
        for m in ep.minutes.iter().filter(|m| m.requests >= MIN_REQUESTS) {
            let got = replayed.and_then(|e| e.minutes.iter().find(|r| r.minute == m.minute));
            let (req, fail, p95) = got.map_or((0, 0, None), |g| (g.requests, g.failed, g.p95_ms));
            let prod_failed = failed(&m.statuses) as f64 / m.requests as f64;
            let rep_failed = if req == 0 {
                0.0
            } else {
                fail as f64 / req as f64
            };
            let prod_p95 = m.p95_ms.map(|p| p as f64 / limit_ms);
            let rep_p95 = p95.map(|p| p / request_timeout_ms);
            let p95_error = match (prod_p95, rep_p95) {
                (Some(a), Some(b)) if a > 0.0 && b > 0.0 => {
                    ((b / a).ln().abs() / 1.5_f64.ln()).min(WORST)
                }
                (None, None) => 0.0,
                _ => WORST,
            };
            out.push(Residual {
                endpoint: ep.endpoint.clone(),
                minute: m.minute,
                held_out: m.minute >= fit_minutes,
                production_requests: m.requests,
                replayed_requests: req,
                production_failed: prod_failed,
                replayed_failed: rep_failed,
                production_p95: prod_p95,
                replayed_p95: rep_p95,
                failed_error: ((rep_failed - prod_failed).abs() / failed_allowance(prod_failed))
                    .min(WORST),
                p95_error,
            });
        }
    }
    out
}

/// How well a probe fits: cells out of tolerance first, then the squared errors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Loss {
    pub outside: usize,
    pub cells: usize,
    pub squares: f64,
}

impl Loss {
    /// Of the fitted cells (held-out ones are left out).
    pub fn of(residuals: &[Residual]) -> Loss {
        let fitted: Vec<&Residual> = residuals.iter().filter(|r| !r.held_out).collect();
        Loss {
            outside: fitted.iter().filter(|r| !r.within()).count(),
            cells: fitted.len(),
            squares: fitted
                .iter()
                .map(|r| r.failed_error.powi(2) + r.p95_error.powi(2))
                .sum(),
        }
    }

    fn better_than(&self, other: &Loss) -> bool {
        (self.outside, self.squares) < (other.outside, other.squares)
            && (self.outside < other.outside || self.squares < other.squares * 0.98)
    }
}

/// One probe: the setting and how it fitted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    pub setting: Setting,
    pub loss: Loss,
    pub seconds: f64,
}

/// The index of the grid value nearest `v`.
fn nearest(grid: &[f64], v: f64) -> usize {
    (0..grid.len())
        .min_by(|&a, &b| (grid[a] - v).abs().total_cmp(&(grid[b] - v).abs()))
        .unwrap_or(0)
}

/// Pattern search from `start` over the knobs' grids: for each step (4, 2, then 1 grid
/// places), each knob is moved down and up by it while that improves the fit; the step
/// shrinks when no move does. `probe` runs one setting and gives its loss, or `None` when
/// the budget is spent (the search stops there). Each setting is probed at most once.
/// Returns the best setting probed, with its loss (`None` when not even `start` was).
pub async fn search(
    knobs: &[Knob],
    start: Setting,
    mut probe: impl AsyncFnMut(Setting) -> Option<Loss>,
) -> Option<(Setting, Loss)> {
    let at: Vec<usize> = knobs
        .iter()
        .map(|k| nearest(&k.grid, start.get(k.name)))
        .collect();
    let setting_of = |at: &[usize]| {
        let mut s = start;
        for (k, &i) in knobs.iter().zip(at) {
            *s.value(k.name) = k.grid[i];
        }
        s
    };
    let mut seen: BTreeMap<Vec<usize>, Loss> = BTreeMap::new();
    let loss = probe(setting_of(&at)).await?;
    seen.insert(at.clone(), loss);
    let mut best = (at, loss);
    'steps: for step in [4_isize, 2, 1] {
        loop {
            let mut moved = false;
            for k in 0..knobs.len() {
                for dir in [-1_isize, 1] {
                    // Keep going while the direction pays.
                    loop {
                        let i = best.0[k] as isize + dir * step;
                        if i < 0 || i >= knobs[k].grid.len() as isize {
                            break;
                        }
                        let mut cand = best.0.clone();
                        cand[k] = i as usize;
                        let loss = match seen.get(&cand) {
                            Some(l) => *l,
                            None => {
                                let Some(l) = probe(setting_of(&cand)).await else {
                                    break 'steps;
                                };
                                seen.insert(cand.clone(), l);
                                l
                            }
                        };
                        if loss.better_than(&best.1) {
                            best = (cand, loss);
                            moved = true;
                        } else {
                            break;
                        }
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }
    Some((setting_of(&best.0), best.1))
}

/// The fit in Markdown: the knobs, the probes, and per endpoint × minute the residuals.
pub fn markdown(
    source: &str,
    base: &Setting,
    best: &Setting,
    probes: &[Probe],
    residuals: &[Residual],
    seconds: f64,
) -> String {
    format!(
        "# Calibration: `{source}`\n\n{}",
        fit_body(base, best, probes, residuals, seconds)
    )
}

/// fit.md without its title: what the docs show of a stored fit.
pub fn fit_body(
    base: &Setting,
    best: &Setting,
    probes: &[Probe],
    residuals: &[Residual],
    seconds: f64,
) -> String {
    use std::fmt::Write as _;
    let mut md = String::new();
    let fitted: Vec<&Residual> = residuals.iter().filter(|r| !r.held_out).collect();
    let held: Vec<&Residual> = residuals.iter().filter(|r| r.held_out).collect();
    let within = |rs: &[&Residual]| rs.iter().filter(|r| r.within()).count();
    let _ = writeln!(
        md,
        "{} probes of the legacy arm in {seconds:.0} s. Tolerance per endpoint × minute with ≥ {MIN_REQUESTS} production requests: failed share ±25 % relative (±3 points under 10 %), p95 as a share of the limit within 1.5×.\n\n- Fitted minutes: **{} of {} cells within**.\n- Held-out minutes (not used by the fit): **{} of {} cells within**.\n\n| knob | base | calibrated |\n|---|---|---|\n| kept (share of the recorded arrivals) | {} | **{}** |\n| pool_max | {} | **{}** |\n| request_timeout (ms) | {} | **{}** |\n| statement_timeout (ms) | {} | **{}** |\n| provider latency (× base) | {} | **{}** |\n",
        probes.len(),
        within(&fitted),
        fitted.len(),
        within(&held),
        held.len(),
        base.kept,
        best.kept,
        base.pool_max,
        best.pool_max,
        base.request_timeout_ms,
        best.request_timeout_ms,
        base.statement_timeout_ms,
        best.statement_timeout_ms,
        base.provider_latency,
        best.provider_latency,
    );
    md.push_str("## Residuals of the calibrated world\n\n| endpoint | minute | requests (prod / replay) | failed (prod / replay) | p95 of limit (prod / replay) | within |\n|---|---|---|---|---|---|\n");
    let pct = |v: Option<f64>| v.map_or("–".into(), |v| format!("{:.0}%", 100.0 * v));
    for r in residuals {
        let _ = writeln!(
            md,
            "| `{}` | {}{} | {} / {} | {:.0}% / {:.0}% | {} / {} | {} |",
            r.endpoint,
            r.minute,
            if r.held_out { " (held out)" } else { "" },
            r.production_requests,
            r.replayed_requests,
            100.0 * r.production_failed,
            100.0 * r.replayed_failed,
            pct(r.production_p95),
            pct(r.replayed_p95),
            if r.within() { "yes" } else { "**NO**" }
        );
    }
    md.push_str("\n## Probes, in order\n\n| # | setting | cells outside | squared error | seconds |\n|---|---|---|---|---|\n");
    for (i, p) in probes.iter().enumerate() {
        let _ = writeln!(
            md,
            "| {} | {} | {} of {} | {:.1} | {:.0} |",
            i + 1,
            p.setting.said(),
            p.loss.outside,
            p.loss.cells,
            p.loss.squares,
            p.seconds
        );
    }
    md
}

/// What docs and checks read back of a fit.json (the rest of it is for a reader).
#[derive(Debug, Clone, Deserialize)]
pub struct FitFile {
    pub source: String,
    pub speed: f64,
    pub base: Setting,
    pub calibrated: Setting,
    pub probes: Vec<Probe>,
    pub search_seconds: f64,
    pub residuals: Vec<Residual>,
}

/// Recovered time factors may be off by this much (relative); the pool must be exact.
pub const RECOVERY_TOLERANCE: f64 = 0.25;

/// One knob of a world whose knobs are known: what `calibrate` found against the truth.
#[derive(Debug, Clone, Serialize)]
pub struct Recovered {
    pub knob: &'static str,
    pub truth: f64,
    /// Where the search started (a knob found at its start may never have moved).
    pub base: f64,
    pub found: f64,
    /// `exact`, or within [`RECOVERY_TOLERANCE`].
    pub exact: bool,
    pub recovered: bool,
}

/// `found` (a fit at `speed`) against `truth`, the world's own knobs, whose log was stretched
/// `slower`× into the export: the time compression the fit found is `speed × kept`, the truth
/// `slower`.
pub fn recovery(
    truth: &Setting,
    base: &Setting,
    found: &Setting,
    speed: f64,
    slower: f64,
) -> Vec<Recovered> {
    let near = |knob, truth: f64, base: f64, found: f64| Recovered {
        knob,
        truth,
        base,
        found,
        exact: false,
        recovered: truth > 0.0 && ((found - truth) / truth).abs() <= RECOVERY_TOLERANCE + 1e-9,
    };
    vec![
        Recovered {
            knob: "pool_max",
            truth: truth.pool_max,
            base: base.pool_max,
            found: found.pool_max,
            exact: true,
            recovered: truth.pool_max == found.pool_max,
        },
        near(
            "time compression (speed × kept)",
            slower,
            speed * base.kept,
            speed * found.kept,
        ),
        near(
            "request_timeout (ms)",
            truth.request_timeout_ms,
            base.request_timeout_ms,
            found.request_timeout_ms,
        ),
        near(
            "statement_timeout (ms)",
            truth.statement_timeout_ms,
            base.statement_timeout_ms,
            found.statement_timeout_ms,
        ),
        near(
            "provider latency (× base)",
            truth.provider_latency,
            base.provider_latency,
            found.provider_latency,
        ),
    ]
}

/// A recovery as Markdown: the knobs against the truth, then how well the fit matched.
pub fn recovery_markdown(world: &str, rows: &[Recovered], fit: &FitFile) -> String {
    use std::fmt::Write as _;
    let fitted: Vec<&Residual> = fit.residuals.iter().filter(|r| !r.held_out).collect();
    let held: Vec<&Residual> = fit.residuals.iter().filter(|r| r.held_out).collect();
    let within = |rs: &[&Residual]| rs.iter().filter(|r| r.within()).count();
    let mut md = format!(
        "**`{world}`**: {} probes in {:.0} s; fitted cells within {} of {}, held-out {} of {}; {} of {} knobs recovered ({} of them where the search started: a knob the base already had right is no evidence).\n\n| knob | truth | search started at | found | rule | recovered |\n|---|---|---|---|---|---|\n",
        fit.probes.len(),
        fit.search_seconds,
        within(&fitted),
        fitted.len(),
        within(&held),
        held.len(),
        rows.iter().filter(|r| r.recovered).count(),
        rows.len(),
        rows.iter()
            .filter(|r| r.recovered && r.found == r.base)
            .count()
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            r.knob,
            r.truth,
            (r.base * 1000.0).round() / 1000.0,
            (r.found * 1000.0).round() / 1000.0,
            if r.exact {
                "exactly".to_string()
            } else {
                format!("within {:.0} %", 100.0 * RECOVERY_TOLERANCE)
            },
            if r.recovered { "yes" } else { "**NO**" }
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Setting {
        Setting {
            kept: 1.0,
            pool_max: 10.0,
            request_timeout_ms: 3000.0,
            statement_timeout_ms: 300.0,
            provider_latency: 1.0,
        }
    }

    /// A world whose fit is best at 0.3 of the arrivals, pool 4, a 2100 ms limit, a 300 ms statement timeout and
    /// providers 2× slower: the search, started at the base, finds exactly that setting.
    #[test]
    fn the_search_recovers_a_known_optimum() {
        let knobs = knobs(&base());
        let truth = Setting {
            kept: 0.3,
            pool_max: 4.0,
            request_timeout_ms: 2100.0,
            statement_timeout_ms: 300.0,
            provider_latency: 2.0,
        };
        let off = |a: f64, b: f64| (a / b).ln().abs();
        let mut probed: Vec<String> = Vec::new();
        let run = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let best = run.block_on(search(&knobs, base(), async |s: Setting| {
            probed.push(s.said());
            let e = [
                off(s.kept, truth.kept),
                off(s.pool_max, truth.pool_max),
                off(s.request_timeout_ms, truth.request_timeout_ms),
                off(s.statement_timeout_ms, truth.statement_timeout_ms),
                off(s.provider_latency, truth.provider_latency),
            ];
            Some(Loss {
                outside: e.iter().filter(|&&x| x > 0.01).count(),
                cells: 5,
                squares: e.iter().map(|x| x * x).sum(),
            })
        }));
        let (found, loss) = best.unwrap();
        let calls = probed.len();
        assert_eq!(found, truth, "after {calls} probes");
        assert_eq!(loss.outside, 0);
        // Each setting once.
        probed.sort();
        probed.dedup();
        assert_eq!(probed.len(), calls);
        assert!(calls < 50, "{calls} probes");
    }

    /// The budget ends the search where it stands; the best so far is kept.
    #[test]
    fn a_spent_budget_stops_the_search_with_the_best_so_far() {
        let knobs = knobs(&base());
        let mut left = 3;
        let run = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let best = run.block_on(search(&knobs, base(), async |s: Setting| {
            if left == 0 {
                return None;
            }
            left -= 1;
            Some(Loss {
                outside: 1,
                cells: 1,
                squares: s.pool_max,
            })
        }));
        assert_eq!(left, 0);
        let (found, _) = best.unwrap();
        assert!(found.pool_max < 10.0, "{}", found.said());
    }

    /// The pool must be exact, the time factors within 25 %: a check that fails when they are
    /// not, and the compression read as speed × kept.
    #[test]
    fn recovery_wants_the_pool_exactly_and_time_within_a_quarter() {
        let truth = Setting {
            kept: 1.0,
            pool_max: 5.0,
            request_timeout_ms: 2000.0,
            statement_timeout_ms: 300.0,
            provider_latency: 1.0,
        };
        let found = Setting {
            kept: 0.45,
            request_timeout_ms: 2100.0,
            ..truth
        };
        let base = Setting {
            pool_max: 10.0,
            ..truth
        };
        let rows = recovery(&truth, &base, &found, 12.0, 6.0);
        assert!(rows.iter().all(|r| r.recovered), "{rows:?}");
        assert_eq!((rows[0].base, rows[1].base), (10.0, 12.0));
        assert_eq!(rows[1].found, 12.0 * 0.45);
        // One pool connection off, or time 30 % off: not recovered.
        let off = recovery(
            &truth,
            &base,
            &Setting {
                pool_max: 6.0,
                ..found
            },
            12.0,
            6.0,
        );
        assert!(!off[0].recovered);
        let slow = recovery(&truth, &base, &Setting { kept: 0.3, ..found }, 12.0, 6.0);
        assert!(!slow[1].recovered, "3.6 against 6");
        let late = recovery(
            &truth,
            &base,
            &Setting {
                statement_timeout_ms: 390.0,
                ..found
            },
            12.0,
            6.0,
        );
        assert!(!late[3].recovered, "390 against 300");
    }

    #[test]
    fn the_allowance_is_relative_above_ten_percent_and_three_points_below() {
        assert_eq!(failed_allowance(0.05), 0.03);
        assert_eq!(failed_allowance(0.40), 0.10);
        // 40 % against 52 % is outside (12 points > 10); against 48 % inside.
        assert!((0.52_f64 - 0.40).abs() / failed_allowance(0.40) > 1.0);
        assert!((0.48_f64 - 0.40).abs() / failed_allowance(0.40) <= 1.0);
    }

    /// `kept` thins every counts stream evenly and says so in `[observed]`.
    #[test]
    fn kept_thins_the_recorded_arrivals() {
        let text = "[[streams]]\nname = \"a\"\narrival = { kind = \"counts\", every = \"100ms\", counts = [10, 0, 10, 10] }\n\n[[streams]]\nname = \"b\"\narrival = { kind = \"constant\", rate = 3.0 }\n\n[observed]\nkept = 1.0\n";
        let s = Setting {
            kept: 0.3,
            ..base()
        };
        let doc: toml::Table = toml::from_str(&s.apply(text).unwrap()).unwrap();
        let streams = doc["streams"].as_array().unwrap();
        let counts: Vec<i64> = streams[0]["arrival"]["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_integer().unwrap())
            .collect();
        assert_eq!(counts, vec![3, 0, 3, 3]);
        assert_eq!(streams[1]["arrival"]["rate"].as_float(), Some(3.0));
        assert_eq!(doc["observed"]["kept"].as_float(), Some(0.3));
        // Every arrival: the counts untouched.
        let all = base().apply(text).unwrap();
        assert!(all.contains("[10, 0, 10, 10]"), "{all}");
    }

    #[test]
    fn a_setting_is_written_into_the_scenario() {
        let text = include_str!("../../scenarios/smoke.toml");
        let s = Setting {
            kept: 1.0,
            pool_max: 4.0,
            request_timeout_ms: 2100.0,
            statement_timeout_ms: 450.0,
            provider_latency: 2.0,
        };
        let out = s.apply(text).unwrap();
        let scenario = crate::model::Scenario::parse("x.toml", &out).unwrap();
        assert_eq!(scenario.service.pool_max, 4);
        assert_eq!(
            scenario.service.request_timeout,
            Duration::from_millis(2100)
        );
        assert_eq!(
            scenario.service.statement_timeout,
            Some(Duration::from_millis(450))
        );
        // The providers' latency is read back as the base's (×1): the scenario holds it scaled.
        assert_eq!(
            base_setting(&scenario),
            Setting {
                provider_latency: 1.0,
                ..s
            }
        );
        let doc: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(
            doc["providers"]["ghl"]["latency"]["base_ms"].as_integer(),
            Some(300)
        );
        // The client waits past the service's limit: the smoke's 5 s stays for 2.1 s, and a
        // 12 s limit gets 14 s.
        assert_eq!(scenario.client_timeout, Duration::from_secs(5));
        let long = Setting {
            request_timeout_ms: 12000.0,
            ..s
        };
        let scenario = crate::model::Scenario::parse("x.toml", &long.apply(text).unwrap()).unwrap();
        assert_eq!(scenario.client_timeout, Duration::from_secs(14));
    }
}
