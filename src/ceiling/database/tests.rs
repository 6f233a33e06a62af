use super::*;

/// The bound the scenario's settings put on a drain, and the settings the ceiling drains
/// with instead (so the figure is the runner's, not the model's).
#[test]
fn the_drain_runs_without_the_modelled_latency() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke.toml");
    let smoke = Scenario::load(&path).expect("smoke.toml parses");
    // 8 workers; GHL 150 ms + up to 100 ms of jitter: a mean of 200 ms.
    assert_eq!(smoke.service.worker_concurrency, 8);
    let bound = modelled_drain_bound(&smoke).expect("smoke models a GHL latency");
    assert!((bound - 40.0).abs() < 1e-9, "{bound}");
    let tuned = for_the_drain(&smoke);
    assert_eq!(
        tuned.service.worker_concurrency,
        smoke.service.pool_max * DRAIN_JOBS_PER_CONNECTION
    );
    assert_eq!(modelled_drain_bound(&tuned), None);
    // Nothing else moves: the ingest sees the scenario as written.
    assert_eq!(tuned.service.pool_max, smoke.service.pool_max);
    assert_eq!(
        tuned.providers.get(&fake_providers::Provider::Unipile),
        smoke.providers.get(&fake_providers::Provider::Unipile)
    );
}

/// Enough users that a pool which fills is the service's latency at the budget (Little's
/// law), never fewer than 64; the generator fell behind when more than 1 % of its sends
/// woke over 50 ms late, whatever the sends no user was free for.
#[test]
fn a_full_pool_is_the_services_latency_a_late_wakeup_the_generators() {
    assert_eq!(ingest_users(20.0), 64);
    assert_eq!(ingest_users(3200.0), 1600);
    assert_eq!(ingest_users(6400.0), 3200);
    for rate in [200.0, 3200.0, 6400.0, 12800.0] {
        let each_ms = ingest_users(rate) as f64 / rate * 1000.0;
        assert!(
            each_ms >= INGEST_P95_MS,
            "{rate}/s: a full pool at {each_ms} ms"
        );
    }
    assert!(!generator_fell_behind(32000, 0));
    assert!(!generator_fell_behind(32000, 320));
    assert!(generator_fell_behind(32000, 321));
}

fn at(rate: f64, verdict: &str) -> IngestStep {
    IngestStep {
        rate,
        sent: 1,
        failed: 0,
        p95_ms: Some(1.0),
        lateness_p99_ms: Some(1.0),
        held: verdict == "held",
        harness_limited: verdict == "late",
        users: ingest_users(rate),
        late_no_user: 0,
        late_wakeup: 0,
        accepted: None,
        queued: None,
        refining: false,
    }
}

/// A step the generator fell behind on runs once more and is read by its second run; a
/// second fall behind, or a step the service did not hold, ends the ramp.
#[test]
fn a_step_without_a_verdict_runs_once_more() {
    let mut steps = vec![at(100.0, "held")];
    assert_eq!(ingest_next(&steps), IngestNext::Up);
    steps.push(at(200.0, "late"));
    assert_eq!(ingest_next(&steps), IngestNext::Again);
    assert_eq!(ingest_ceiling(&steps), Some(100.0));
    steps.push(at(200.0, "held"));
    assert!(ingest_run_again(&steps, 1) && !ingest_run_again(&steps, 2));
    assert_eq!(ingest_next(&steps), IngestNext::Up);
    assert_eq!(ingest_ceiling(&steps), Some(200.0));
    steps.push(at(400.0, "late"));
    steps.push(at(400.0, "late"));
    assert_eq!(ingest_next(&steps), IngestNext::Stop);
    assert_eq!(ingest_ceiling(&steps), Some(200.0));
    // The service not holding a rate is a verdict: no second run.
    let failed = [at(100.0, "held"), at(200.0, "no")];
    assert_eq!(ingest_next(&failed), IngestNext::Stop);
    assert_eq!(ingest_ceiling(&failed), Some(100.0));
    // The first step late, then held on its second run: the ceiling counts it.
    let first = [at(100.0, "late"), at(100.0, "held")];
    assert_eq!(ingest_ceiling(&first), Some(100.0));
}

/// After the first rate the service did not hold, each refining step halves the gap below
/// it, and the ceiling is the highest rate that held under the lowest that did not; a gap
/// whose top had no verdict is not narrowed.
#[test]
fn refining_steps_narrow_the_gap_below_the_first_failure() {
    let mut steps = vec![at(3200.0, "held"), at(6400.0, "no")];
    assert_eq!(ingest_refinement(&steps), Some(4800.0));
    steps.push(at(4800.0, "held"));
    assert_eq!(ingest_ceiling(&steps), Some(4800.0));
    assert_eq!(ingest_refinement(&steps), Some(5600.0));
    steps.push(at(5600.0, "no"));
    assert_eq!(ingest_ceiling(&steps), Some(4800.0));
    assert_eq!(ingest_refinement(&steps), Some(5200.0));
    // A refining step the generator fell behind on runs again and is read by that run.
    steps.push(at(5200.0, "late"));
    assert_eq!(ingest_next(&steps), IngestNext::Again);
    steps.push(at(5200.0, "held"));
    assert_eq!(ingest_ceiling(&steps), Some(5200.0));
    // Nothing held, or the lowest failure without a verdict: nothing to refine.
    assert_eq!(ingest_refinement(&[at(100.0, "no")]), None);
    let late = [at(100.0, "held"), at(200.0, "late"), at(200.0, "late")];
    assert_eq!(ingest_ceiling(&late), Some(100.0));
    assert_eq!(ingest_refinement(&late), None);
    // Every step held: no failure to refine below.
    assert_eq!(ingest_refinement(&[at(100.0, "held")]), None);
    // The ceiling is a lower bound only when no rate failed with a verdict.
    assert!(ingest_open(&[at(100.0, "held")]) && ingest_open(&late));
    assert!(!ingest_open(&steps) && !ingest_open(&[at(100.0, "no")]));
}
