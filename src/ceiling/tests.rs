use super::render::database_body;
use super::*;

/// wrk's own output, as Debian's wrk 4 prints it.
#[test]
fn wrk_output_gives_its_request_rate() {
    let out = "Running 5s test @ http://127.0.0.1:1234/ceiling\n  1 threads and 32 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   1.10ms  300.00us   5.00ms   80.00%\n  120000 requests in 5.00s, 10.00MB read\nRequests/sec:  23999.52\nTransfer/sec:      2.00MB\n";
    assert_eq!(parse_wrk(out), Some(23999.52));
    assert_eq!(parse_wrk_requests(out), Some(120000));
    assert_eq!(parse_wrk_requests("connection refused"), None);
    assert_eq!(parse_wrk("connection refused"), None);
}

fn report(steps: Vec<Step>, wrk: Option<f64>) -> CeilingReport {
    let (ceiling_rate, above_last_step) = ceiling_of(&steps);
    CeilingReport {
        commit: "c".into(),
        machine: "m".into(),
        step_s: 5.0,
        max_lateness_p99_ms: 5.0,
        generator: GeneratorCeiling {
            above_last_step,
            ratio: ceiling_rate.zip(wrk).map(|(c, w)| c / w),
            ceiling_rate,
            steps,
            reference: Reference {
                tool: "wrk".into(),
                rate: wrk,
                detail: if wrk.is_some() {
                    "wrk -t1".into()
                } else {
                    "not run: wrk is not installed".into()
                },
            },
            wrk_cpu_us_per_request: None,
            wrk_steal_pct: None,
            goal: 0.5,
        },
        https: None,
        database: None,
        soak: None,
    }
}

fn step(rate: f64, held: bool) -> Step {
    Step {
        rate,
        sent: rate as u64,
        failed: 0,
        unsent: 0,
        lateness_p99_ms: Some(1.0),
        late_no_user: 0,
        held,
        refining: false,
        cpu_us_per_request: None,
        steal_pct: None,
    }
}

/// After the first step that does not hold, each refining step halves the gap between the
/// highest rate that held and the lowest that did not; the ceiling is the highest that held
/// below every failure, and the table lists the steps by rate.
#[test]
fn refining_steps_halve_the_gap_below_the_first_failure() {
    let mut steps = vec![step(1000.0, true), step(2000.0, true)];
    assert_eq!(ceiling_of(&steps), (Some(2000.0), true));
    assert_eq!(
        refinement(&steps),
        None,
        "no failure yet: nothing to refine"
    );
    steps.push(step(4000.0, false));
    assert_eq!(ceiling_of(&steps), (Some(2000.0), false));
    assert_eq!(refinement(&steps), Some(3000.0));
    steps.push(Step {
        refining: true,
        ..step(3000.0, true)
    });
    assert_eq!(refinement(&steps), Some(3500.0));
    steps.push(Step {
        refining: true,
        ..step(3500.0, false)
    });
    assert_eq!(ceiling_of(&steps), (Some(3000.0), false));
    assert_eq!(refinement(&steps), Some(3250.0));

    let mut r = report(steps.clone(), Some(10000.0));
    assert!(
        !markdown(&r).contains("CPU per request"),
        "not measured, not said"
    );
    r.generator.steps[3].cpu_us_per_request = Some(40.0);
    r.generator.wrk_cpu_us_per_request = Some(10.0);
    let md = markdown(&r);
    assert!(
        md.contains("the generator 40.0 µs at its ceiling, wrk 10.0 µs (4.0×)"),
        "{md}"
    );
    assert!(md.contains("ceiling 3000/s (3500/s did not hold)"), "{md}");
    assert!(md.contains("0.30 of wrk"), "{md}");
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| rate"))
        .collect();
    let rates: Vec<&str> = rows
        .iter()
        .map(|l| l.split(" | ").next().unwrap())
        .collect();
    // Steal is each step's own, and wrk's beside its rate; unknown is said so.
    assert!(rows[0].contains("| n/a |"), "{md}");
    r.generator.steps[0].steal_pct = Some(12.5);
    r.generator.wrk_steal_pct = Some(3.25);
    let md = markdown(&r);
    let first = md.lines().find(|l| l.starts_with("| 1000 ")).unwrap();
    assert!(first.contains("| 12.5 % |"), "{md}");
    assert!(md.contains("(`wrk -t1`; steal 3.2 %)"), "{md}");
    assert_eq!(
        rates,
        [
            "| 1000",
            "| 2000",
            "| 3000 (refining)",
            "| 3500 (refining)",
            "| 4000"
        ],
        "{md}"
    );

    // A refining step that fails below a stepped rate that held lowers nothing above it.
    let steps = vec![
        step(1000.0, true),
        step(2000.0, false),
        Step {
            refining: true,
            ..step(1500.0, false)
        },
    ];
    assert_eq!(ceiling_of(&steps), (Some(1000.0), false));
    assert_eq!(refinement(&steps), Some(1250.0));
    // No gap left to split.
    assert_eq!(refinement(&[step(1.0, true), step(2.0, false)]), None);
    // The first step failed: nothing held, nothing to refine from.
    assert_eq!(refinement(&[step(1000.0, false)]), None);
}

/// Without wrk there is no ratio, and the report says why rather than inventing one; a
/// ratio below the goal is said so.
#[test]
fn a_missing_reference_gives_no_ratio_and_a_low_one_misses_the_goal() {
    let md = markdown(&report(vec![step(100.0, true), step(200.0, false)], None));
    assert!(
        md.contains("ceiling 100/s")
            && md.contains("no ratio: wrk did not run (not run: wrk is not installed)"),
        "{md}"
    );
    let md = markdown(&report(
        vec![step(100.0, true), step(200.0, false)],
        Some(1000.0),
    ));
    assert!(
        md.contains("0.10 of wrk (goal NOT met; goal ≥ 0.5)"),
        "{md}"
    );
    let md = markdown(&report(vec![step(100.0, true)], Some(150.0)));
    assert!(
        md.contains("≥ 100/s (every step held") && md.contains("goal met"),
        "{md}"
    );
    let md = markdown(&report(vec![step(100.0, true)], Some(1000.0)));
    assert!(
        md.contains("≥ 0.10 of wrk (a lower bound; goal ≥ 0.5)"),
        "{md}"
    );
    let md = markdown(&report(vec![step(100.0, false)], Some(150.0)));
    assert!(md.contains("no rate held"), "{md}");
}

/// What TLS costs is read at the highest rate both ramps held (not at either ceiling), the
/// generator's and wrk's each as HTTPS less HTTP; with no rate held by both, it says so.
#[test]
fn tls_cost_is_read_where_both_ramps_held() {
    let cpu = |rate, held, us| Step {
        cpu_us_per_request: Some(us),
        ..step(rate, held)
    };
    let mut r = report(
        vec![
            cpu(100.0, true, 20.0),
            cpu(200.0, true, 15.0),
            cpu(400.0, true, 14.0),
        ],
        Some(800.0),
    );
    r.generator.wrk_cpu_us_per_request = Some(10.0);
    let mut https = report(
        vec![
            cpu(100.0, true, 30.0),
            cpu(200.0, true, 24.0),
            cpu(400.0, false, 22.0),
        ],
        Some(600.0),
    )
    .generator;
    https.wrk_cpu_us_per_request = Some(13.5);
    let cost = tls_cost(&r.generator, &https).unwrap();
    assert_eq!(
        (
            cost.rate,
            cost.generator_http_us,
            cost.generator_https_us,
            cost.wrk
        ),
        (200.0, 15.0, 24.0, Some((10.0, 13.5)))
    );
    r.https = Some(https.clone());
    let md = markdown(&r);
    assert!(md.contains("**Over HTTPS**"), "{md}");
    assert!(
        md.contains("TLS costs the generator 9.0 µs of CPU a request (24.0 over HTTPS against 15.0 over HTTP, both at 200/s), wrk 3.5 µs (13.5 against 10.0)."),
        "{md}"
    );
    assert!(md.contains("ceiling 200/s (400/s did not hold)"), "{md}");
    // Nothing held over HTTPS: no cost, said.
    https.steps = vec![cpu(100.0, false, 30.0)];
    assert_eq!(tls_cost(&r.generator, &https), None);
    r.https = Some(https);
    assert!(markdown(&r).contains("no rate held both over HTTP and over HTTPS"));
}

/// The drain says how it ran (the runner's own limit, beside the scenario's model) — and a
/// stored report from before it ran that way renders as it did then.
#[test]
fn the_drain_names_its_setting_and_the_modelled_bound() {
    let db = |workers: u32, bound: Option<f64>| DatabaseCeiling {
        pool_max: 10,
        ingest_steps: vec![],
        ingest_rate: None,
        drain_jobs_per_s: Some(400.0),
        drained: 4000,
        drain_left: 0,
        drain_workers: workers,
        drain_modelled_bound: bound,
        drain_rows_per_job: None,
        drain_jobs_per_batch: None,
        reference: Reference {
            tool: "pgbench".into(),
            rate: Some(8000.0),
            detail: "pgbench -c10".into(),
        },
        ingest_ratio: None,
        drain_ratio: Some(0.05),
        ingest_goal: 0.5,
        drain_goal: 0.2,
    };
    let md = database_body(Some(&db(10, Some(40.0))));
    assert!(
        md.contains("fixed path, 10 jobs at once, the fake GHL answering at once; the scenario's own GHL latency and workers would bound it at 40 jobs/s, whatever the code): 400 jobs/s (4000 jobs)"),
        "{md}"
    );
    let costed = DatabaseCeiling {
        drain_rows_per_job: Some(9.5),
        drain_jobs_per_batch: Some(7.25),
        ..db(10, Some(40.0))
    };
    let md = database_body(Some(&costed));
    assert!(
        md.contains("400 jobs/s (4000 jobs; 9.5 rows written per job (the runner's declared writes: claim, effects, ledger, outbox, completion, leases), 3800 rows/s, 0.47 of pgbench's rows/s; where a claim held several `EMAIL_SENT`s, 7.2 jobs per transaction)"),
        "{md}"
    );
    let old = database_body(Some(&db(0, None)));
    assert!(
        old.contains("the per-job work of the fixed path): 400 jobs/s"),
        "{old}"
    );
}
