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
/// is under the allowance: the smaller growth is the one judged).
#[test]
fn one_slow_second_is_not_a_regression() {
    let base = around(300.0, 30.0);
    let mut new = base.clone();
    new[3] = 5000.0;
    let found = compare(&one(300.0, &base), &one(900.0, &new), &Gate::default());
    assert!(regressions(&found).is_empty(), "{found:?}");
    // Three slow seconds in thirty, on an endpoint with no budget: listed, past the floor,
    // and judged noise by the test (the other 27 seconds are not slower).
    let unbudgeted = |p95: f64, windows: &[f64]| {
        let mut e = endpoint("GET /", p95, None);
        e.windows = windows
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u32, *v, 10))
            .collect();
        Side::one(report(vec![arm("all-on", &[], vec![e])]))
    };
    new[4] = 5000.0;
    new[17] = 5000.0;
    let found = compare(
        &unbudgeted(330.0, &base),
        &unbudgeted(5000.0, &new),
        &Gate::default(),
    );
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

/// The false alarm of a CI run (stop 54): the same build on both sides, a cron endpoint's
/// p95 1.29 s on each, yet its per-second p95s paired +17 % (p = 0.003) — and the gate
/// called it a regression of 222 ms, the shift on the base's p95. A regression is of the
/// p95: seconds that are consistently slower while the p95 holds are noise, said so.
#[test]
fn slower_seconds_under_an_unchanged_p95_are_not_a_regression() {
    let unbudgeted = |p95: f64, windows: &[f64]| {
        let mut e = endpoint("GET /api/cron/background-jobs", p95, None);
        e.windows = windows
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u32, *v, 1))
            .collect();
        Side::one(report(vec![arm("all-on", &[], vec![e])]))
    };
    let found = compare(
        &unbudgeted(1290.0, &around(600.0, 60.0)),
        &unbudgeted(1290.0, &around(700.0, 60.0)),
        &Gate::default(),
    );
    assert_eq!(
        found.len(),
        1,
        "listed, the seconds grew beyond 10 %: {found:?}"
    );
    let c = &found[0];
    assert!(c.p_value.unwrap() < 0.01, "the seconds are slower: {c:?}");
    assert_eq!(c.verdict, Verdict::Noise, "{c:?}");
    assert!(c.reason.contains("the p95 grew +0 %"), "{}", c.reason);
}
