//! Each check broken on purpose with hand-made figures, and seen to fire.

use std::collections::BTreeMap;

use super::*;
use crate::report::{PhaseFigures, ServiceSide, StreamLoad};

const SCENARIO: &str = r#"
name = "unit"
duration = "10s"
incident_phase = "burst"
[dataset]
scale = "smoke"
[postgres]
[[phases]]
name = "burst"
from = "2s"
to = "6s"
[[streams]]
name = "hooks"
endpoint = "webhook"
event = "EMAIL_SENT"
arrival = { kind = "constant", rate = 1.0 }
[budgets."POST /api/webhooks/email"]
p95 = "500ms"
max_db_writes = 1
max_external_calls = 0
[budgets."GET /"]
p95 = "2s"
[budgets."POST /api/actions/inbox-counts"]
p95 = "2s"
max_statement_timeouts = 0
"#;

fn scenario() -> Scenario {
    Scenario::parse("unit.toml", SCENARIO).unwrap()
}

fn side(p95: f64, s504: u64, burst_p95: f64) -> ServiceSide {
    ServiceSide {
        requests: 100,
        p50_ms: Some(p95 / 2.0),
        p95_ms: Some(p95),
        p95_bucket_ms: None,
        status_counts: BTreeMap::from([("504".to_owned(), s504)]),
        pool_wait_p95_ms: None,
        phases: vec![PhaseFigures {
            phase: "burst".into(),
            requests: 10,
            p95_ms: Some(burst_p95),
            statement_timeouts: 0,
            failed: 0,
        }],
        phases_per_request: true,
    }
}

/// An endpoint with `p95` client-side in the whole run and in the burst, `n504` 504s,
/// `writes`/`calls` at most per request, and the service seeing the same.
fn endpoint(name: &str, p95: f64, n504: u64, writes: u32, calls: u32) -> EndpointReport {
    let mut e = crate::report::fixtures::endpoint(name, p95, budget_ms(&scenario(), name));
    e.status_counts = BTreeMap::from([("504".to_owned(), n504)]);
    if n504 > 0 {
        e.error_categories = BTreeMap::from([("db_timeout".to_owned(), 3)]);
    }
    e.service = Some(side(p95 * 0.9, n504, p95));
    (e.db_writes_max, e.db_writes_per_request) = (writes, Some(f64::from(writes)));
    (e.external_calls_max, e.external_calls_per_request) = (calls, Some(f64::from(calls)));
    e.phases = vec![PhaseFigures {
        phase: "burst".into(),
        requests: 10,
        p95_ms: Some(p95),
        statement_timeouts: 0,
        failed: 0,
    }];
    e
}

fn incident_endpoints() -> Vec<EndpointReport> {
    vec![
        endpoint(WEBHOOK_LABEL, 9000.0, 40, 5, 1),
        endpoint(PAGE_LABEL, 9000.0, 10, 0, 0),
        endpoint(COUNTS_LABEL, 5000.0, 10, 0, 0),
    ]
}

fn fixed_endpoints() -> Vec<EndpointReport> {
    vec![
        endpoint(WEBHOOK_LABEL, 10.0, 0, 1, 0),
        endpoint(PAGE_LABEL, 100.0, 0, 0, 0),
        endpoint(COUNTS_LABEL, 100.0, 0, 0, 0),
    ]
}

fn clean() -> Invariants {
    Invariants {
        acked: 50,
        applied: 50,
        holds: true,
        ..Invariants::default()
    }
}

fn failed(checks: &[Check]) -> Vec<&str> {
    checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect()
}

#[test]
fn a_provider_call_required_at_least_once_may_repeat_but_not_go_missing() {
    let ghl = |duplicates, lost| crate::report::EffectCount {
        effect: crate::matrix::invariant::GHL_EFFECT.into(),
        expected: 50,
        applied: 50 - lost,
        duplicates,
        lost,
        at_least_once: None,
        declared_skips: None,
    };
    let mut repeated = Invariants {
        effects: vec![ghl(3, 0)],
        holds: false,
        ..clean()
    };
    crate::matrix::invariant::ghl_at_least_once(&mut repeated, "an outbox");
    assert!(repeated.holds, "repeats are allowed at least once");
    let detail = invariant_detail(&repeated);
    assert!(
        detail.contains("repeated 3 times, at least once as required here (an outbox)"),
        "{detail}"
    );
    let mut missing = Invariants {
        effects: vec![ghl(0, 2)],
        holds: false,
        ..clean()
    };
    crate::matrix::invariant::ghl_at_least_once(&mut missing, "an outbox");
    assert!(!missing.holds, "a call never made still fails");
}

#[test]
fn a_reproduced_incident_passes_every_incident_check() {
    let checks = judge(
        &scenario(),
        Expect::Incident,
        &incident_endpoints(),
        7,
        &clean(),
    );
    assert_eq!(checks.len(), 5);
    assert!(failed(&checks).is_empty(), "{checks:?}");
}

#[test]
fn an_incident_that_did_not_reproduce_fails_its_checks() {
    let s = scenario();
    // A webhook within budget, no 504s anywhere, no timeouts: nothing reproduced.
    let checks = judge(&s, Expect::Incident, &fixed_endpoints(), 0, &clean());
    assert_eq!(failed(&checks).len(), 5, "{checks:?}");
    // Over budget on the client only, with the service fast: the cascade was the
    // generator's, so the service-side checks fail.
    let mut e = incident_endpoints();
    for x in &mut e {
        x.service = Some(side(100.0, 0, 100.0));
    }
    let f = judge(&s, Expect::Incident, &e, 7, &clean());
    assert_eq!(
        failed(&f),
        vec![
            "webhook p95 over budget, with 504s (service side)",
            "GET / p95 over budget during burst (service side)"
        ]
    );
    // Slow over the run on the service's side but not in the burst: the incident is the
    // burst's, so the phase check fails.
    let mut e = incident_endpoints();
    e[1].service = Some(side(9000.0, 10, 100.0));
    let f = judge(&s, Expect::Incident, &e, 7, &clean());
    assert_eq!(
        failed(&f),
        vec!["GET / p95 over budget during burst (service side)"]
    );
    // A service that sent no per-request times: its run p95 is judged, and named so.
    e[1].service = Some(ServiceSide {
        phases_per_request: false,
        ..side(9000.0, 10, 100.0)
    });
    let f = judge(&s, Expect::Incident, &e, 7, &clean());
    assert!(failed(&f).is_empty(), "{f:?}");
    let c = f
        .iter()
        .find(|c| c.name == "GET / p95 over budget (service side)")
        .unwrap();
    assert!(
        c.detail.contains("sent no per-request time"),
        "{}",
        c.detail
    );
}

#[test]
fn a_fixed_arm_fails_on_any_broken_budget_or_invariant() {
    let s = scenario();
    let ok = judge(&s, Expect::Fixed, &fixed_endpoints(), 0, &clean());
    assert!(failed(&ok).is_empty(), "{ok:?}");
    // Each break, on its own, fires its check.
    let mut slow = fixed_endpoints();
    slow[1] = endpoint(PAGE_LABEL, 2500.0, 0, 0, 0);
    assert_eq!(
        failed(&judge(&s, Expect::Fixed, &slow, 0, &clean())),
        vec!["GET / p95 within 2.00 s"]
    );
    let mut writes = fixed_endpoints();
    writes[0] = endpoint(WEBHOOK_LABEL, 10.0, 0, 2, 0);
    assert_eq!(
        failed(&judge(&s, Expect::Fixed, &writes, 0, &clean())),
        vec!["POST /api/webhooks/email at most 1 DB writes per request"]
    );
    let mut calls = fixed_endpoints();
    calls[0] = endpoint(WEBHOOK_LABEL, 10.0, 0, 1, 1);
    assert_eq!(
        failed(&judge(&s, Expect::Fixed, &calls, 0, &clean())),
        vec!["POST /api/webhooks/email at most 0 external calls per request"]
    );
    // A statement timeout elsewhere in the service (a cron tick's) is not the counts'.
    assert!(failed(&judge(&s, Expect::Fixed, &fixed_endpoints(), 1, &clean())).is_empty());
    // A timeout the stale fallback answered (a 200 tagged db_timeout) is the fix working: the
    // live query ran under its own bound, below the database's, and the user got counts.
    let mut absorbed = fixed_endpoints();
    for e in &mut absorbed {
        if e.endpoint == COUNTS_LABEL {
            e.error_categories.insert("db_timeout".into(), 1);
        }
    }
    assert!(failed(&judge(&s, Expect::Fixed, &absorbed, 1, &clean())).is_empty());
    // One the user saw (a failed answer tagged db_timeout) breaks the budget.
    let mut timed_out = absorbed.clone();
    for e in &mut timed_out {
        if e.endpoint == COUNTS_LABEL {
            e.failed_categories.insert("db_timeout".into(), 1);
        }
    }
    let checks = judge(&s, Expect::Fixed, &timed_out, 1, &clean());
    assert_eq!(
        failed(&checks),
        vec!["at most 0 statement timeouts users saw (POST /api/actions/inbox-counts)"]
    );
    let detail = &checks.iter().find(|c| !c.passed).unwrap().detail;
    assert!(detail.starts_with("1 on a failed answer"), "{detail}");
    let lost = Invariants {
        applied: 49,
        lost: 1,
        holds: false,
        ..clean()
    };
    assert_eq!(
        failed(&judge(&s, Expect::Fixed, &fixed_endpoints(), 0, &lost)),
        vec!["every acknowledged EMAIL_SENT applied exactly once"]
    );
    // Where a lost event went, when the queue gave up on its job.
    assert!(!invariant_detail(&lost).contains("failed"));
    let gave_up = Invariants {
        failed_jobs: 1,
        ..lost.clone()
    };
    assert!(invariant_detail(&gave_up).ends_with(
        "1 lost, 0 duplicated; 1 EMAIL_SENT jobs failed (background_jobs.last_error says why)"
    ));
    // A doubled side effect fails the arm, and the check names the effect.
    let doubled = Invariants {
        holds: false,
        effects: vec![crate::report::EffectCount {
            effect: "lead emails_sent".into(),
            expected: 50,
            applied: 50,
            duplicates: 50,
            lost: 0,
            at_least_once: None,
            declared_skips: None,
        }],
        ..clean()
    };
    let checks = judge(&s, Expect::Fixed, &fixed_endpoints(), 0, &doubled);
    let broken = checks.iter().find(|c| !c.passed).unwrap();
    assert!(
        broken
            .detail
            .contains("lead emails_sent (50 of 50 applied, 0 lost, 50 duplicated)"),
        "{}",
        broken.detail
    );
    // Nothing acknowledged proves nothing.
    let none = Invariants {
        acked: 0,
        applied: 0,
        ..clean()
    };
    assert_eq!(
        failed(&judge(&s, Expect::Fixed, &fixed_endpoints(), 0, &none)).len(),
        1
    );
}

fn stream(name: &str, requests: u64, late: u64, no_user: u64) -> StreamLoad {
    StreamLoad {
        name: name.into(),
        endpoint: WEBHOOK_LABEL.into(),
        max_in_flight: 4,
        requests,
        duplicates: 0,
        redeliveries: 0,
        late,
        late_pct: late as f64 * 100.0 / requests as f64,
        late_no_user: no_user,
        late_wakeup: late - no_user,
        lateness_p95_ms: Some(80.0),
        lateness_max_ms: Some(300.0),
    }
}

fn load(streams: Vec<StreamLoad>) -> LoadHealth {
    LoadHealth {
        late_after_ms: 50.0,
        max_late_pct: 1.0,
        streams,
        generator_cpu_pct: 97.0,
        machine_cpu_pct: 100.0,
        connections: Default::default(),
    }
}

/// The connections opened, by protocol, are said with the load's check when known.
#[test]
fn the_load_check_says_the_protocol_of_the_connections() {
    let mut l = load(vec![stream("hooks", 1000, 0, 0)]);
    assert!(!load_check(&l).detail.contains("connections"));
    l.connections = [("HTTP/2".to_owned(), 1)].into();
    let said = load_check(&l);
    assert!(said.passed);
    assert!(
        said.detail.ends_with("; connections: 1 HTTP/2"),
        "{}",
        said.detail
    );
}

#[test]
fn a_generator_behind_schedule_makes_the_arm_inconclusive_and_names_the_stream() {
    let ok = load_check(&load(vec![stream("hooks", 1000, 10, 10)]));
    assert!(ok.passed, "exactly 1 % is allowed: {ok:?}");
    assert!(!load_check(&load(vec![stream("hooks", 1000, 11, 11)])).passed);
    // One late tick of four is a hiccup; two is not.
    assert!(load_check(&load(vec![stream("cron", 4, 1, 0)])).passed);
    assert!(!load_check(&load(vec![stream("cron", 4, 2, 0)])).passed);

    let starved = load_check(&load(vec![
        stream("hooks", 1000, 0, 0),
        stream("AI drafts", 100, 40, 40),
    ]));
    assert!(!starved.passed);
    assert!(
        starved.detail.contains("\"AI drafts\""),
        "{}",
        starved.detail
    );
    assert!(
        starved.detail.contains("max_in_flight"),
        "{}",
        starved.detail
    );
    assert!(!starved.detail.contains("hooks"), "{}", starved.detail);

    let cpu = load_check(&load(vec![stream("hooks", 1000, 300, 10)]));
    assert!(
        cpu.detail.contains("machine is too small"),
        "{}",
        cpu.detail
    );

    // Whatever else held, the arm is inconclusive; without it, judged as usual.
    let passing = check("some budget", true, "");
    assert_eq!(
        status(&[starved.clone(), passing.clone()]),
        ArmStatus::Inconclusive
    );
    assert_eq!(status(&[ok.clone(), passing]), ArmStatus::AsExpected);
    assert_eq!(
        status(&[ok, check("some budget", false, "")]),
        ArmStatus::NotAsExpected
    );
}

#[test]
fn declared_writes_and_calls_must_match_the_measured_ones() {
    let cut = |requests, max_writes, max_calls| Unfinished {
        route: "GET /x".into(),
        requests,
        max_writes,
        max_calls,
    };
    assert!(accounting((100, 5), (100, 5), &[], 0).holds);
    // One row Postgres saw that the service did not declare, nothing to explain it.
    assert!(!accounting((100, 5), (101, 5), &[], 0).holds);
    // A call declared that never reached a provider.
    assert!(!accounting((100, 5), (100, 4), &[], 0).holds);
    // Three requests cut off, each able to do one row or call unseen: that much, no more.
    assert!(accounting((100, 5), (103, 3), &[cut(3, 1, 1)], 0).holds);
    assert!(!accounting((100, 5), (104, 5), &[cut(3, 1, 1)], 0).holds);
    // A lost ON CONFLICT race: Postgres counts the killed tuple inserted and deleted, 2
    // rows nobody declared, per race — exactly, never more.
    assert!(accounting((100, 5), (104, 5), &[], 2).holds);
    assert!(!accounting((100, 5), (105, 5), &[], 2).holds);
    assert!(
        !accounting((100, 5), (102, 5), &[], 2).holds,
        "a killed insertion explains its own two rows, not fewer rows"
    );
    assert!(
        !accounting((100, 5), (100, 6), &[], 2).holds,
        "calls get no such slack"
    );
    let c = accounting_check(&accounting((908, 5), (910, 5), &[], 1));
    assert!(
        c.passed
            && c.detail
                .contains("counted 910 by Postgres (2 of them 1 speculative"),
        "{c:?}"
    );
    // A cut-off cron tick may have had many jobs in flight.
    let tick = accounting((100, 5), (140, 5), &[cut(1, 72, 8)], 0);
    assert!(tick.holds && tick.slack_writes == 72, "{tick:?}");
    let c = accounting_check(&accounting((100, 5), (150, 5), &[], 0));
    assert!(
        !c.passed && c.detail.contains("declared 100, counted 150, slack 0;"),
        "{c:?}"
    );
}

#[test]
fn a_false_skip_past_the_bound_fails_the_gate() {
    let mut r = ReconnectReport {
        reconnected: 4,
        readmitted: 4,
        slowest_readmission_s: Some(6.2),
        false_skips: 3,
        false_skips_late: 0,
        bound_s: 15.0,
    };
    let held = gate_check(&r);
    assert!(held.passed, "{held:?}");
    assert!(
        held.detail
            .contains("4/4 re-admitted (slowest 6.2 s), 3 false skips"),
        "{}",
        held.detail
    );
    r.false_skips_late = 1;
    assert!(!gate_check(&r).passed);
}

#[test]
fn a_cron_tick_over_its_budget_fails_the_arm_and_is_named() {
    let tick = |runner: &str, max_ms: f64| crate::report::CronTicks {
        runner: runner.into(),
        ticks: 10,
        p95_ms: Some(max_ms / 2.0),
        max_ms: Some(max_ms),
        budget_ms: 5000.0,
    };
    let mut bg = Background {
        cron_ticks: vec![tick("background_jobs", 4900.0), tick("followups", 5000.0)],
        cron_connections_max: 8,
        ..Background::default()
    };
    let held = cron_check(&bg).unwrap();
    assert!(held.passed, "{held:?}");
    assert!(
        held.detail.contains("at most 8 connections"),
        "{}",
        held.detail
    );
    bg.cron_ticks[1].max_ms = Some(5310.0);
    let over = cron_check(&bg).unwrap();
    assert!(!over.passed);
    assert!(over.detail.contains("followups max"), "{}", over.detail);
    assert_eq!(status(&[over]), ArmStatus::NotAsExpected);
    assert!(cron_check(&Background::default()).is_none());
}

fn arm_with(name: &str, flags: &[(&str, bool)], webhook_p95: f64) -> ArmReport {
    crate::report::fixtures::arm(
        name,
        flags,
        vec![endpoint(WEBHOOK_LABEL, webhook_p95, 0, 1, 0)],
    )
}

#[test]
fn attribution_pairs_arms_that_differ_in_one_flag_only() {
    let arms = vec![
        arm_with("all-off", &[], 9000.0),
        arm_with("async", &[("INBOXXIA_EMAIL_SENT_ASYNC", true)], 8.0),
        // Differs in two flags from all-off: no pair with it for either.
        arm_with(
            "counts+gate",
            &[
                ("INBOX_COUNTS_CACHE_FALLBACK", true),
                ("UNIPILE_HEALTH_GATE", true),
            ],
            7000.0,
        ),
    ];
    let a = attribution(&arms, &scenario());
    let hook: Vec<&Attribution> = a.iter().filter(|x| x.endpoint == WEBHOOK_LABEL).collect();
    assert_eq!(hook.len(), 1, "{a:?}");
    assert_eq!(
        (
            hook[0].flag.name(),
            hook[0].off_arm.as_str(),
            hook[0].on_arm.as_str()
        ),
        ("INBOXXIA_EMAIL_SENT_ASYNC", "all-off", "async")
    );
    assert_eq!(
        (hook[0].off_p95_ms, hook[0].on_p95_ms),
        (Some(9000.0), Some(8.0))
    );
}
