//! Hand-made reports for unit tests of the logic that reads them (verdicts, compare).

use std::collections::BTreeMap;

use super::*;
use crate::model::Expect;

/// An endpoint with `p95` everywhere, nothing else of note.
pub fn endpoint(name: &str, p95: f64, budget: Option<f64>) -> EndpointReport {
    EndpointReport {
        endpoint: name.into(),
        requests: 100,
        p50_ms: Some(p95 / 2.0),
        p95_ms: Some(p95),
        p99_ms: Some(p95),
        max_ms: Some(p95),
        budget_p95_ms: budget,
        within_budget: budget.is_none_or(|b| p95 <= b),
        status_counts: BTreeMap::new(),
        error_categories: BTreeMap::new(),
        failed_categories: BTreeMap::new(),
        late: 0,
        late_pct: 0.0,
        lateness_p95_ms: Some(1.0),
        lateness_max_ms: Some(2.0),
        retries: 0,
        service: None,
        time_spent: None,
        connections: 0,
        connect_p95_ms: None,
        db_writes_per_request: Some(1.0),
        db_writes_max: 1,
        external_calls_per_request: Some(0.0),
        external_calls_max: 0,
        phases: vec![],
        windows: vec![],
        minutes: vec![],
    }
}

/// An arm with every switch off but `flags`, holding `endpoints`, judged as expected.
pub fn arm(name: &str, flags: &[(&str, bool)], endpoints: Vec<EndpointReport>) -> ArmReport {
    let mut all: BTreeMap<String, bool> = inbox_service::Flag::ALL
        .iter()
        .map(|f| (f.name().to_owned(), false))
        .collect();
    for (k, v) in flags {
        all.insert((*k).to_owned(), *v);
    }
    let mut arm = ArmReport::interrupted(name, all, Expect::Observe);
    (arm.status, arm.as_expected, arm.endpoints) = (ArmStatus::AsExpected, true, endpoints);
    arm
}

/// A report of `arms`.
pub fn report(arms: Vec<ArmReport>) -> Report {
    Report {
        command: None,
        schema_version: SCHEMA_VERSION,
        tool: "test".into(),
        scenario: ScenarioInfo {
            name: "unit".into(),
            source: "unit.toml".into(),
            description: String::new(),
            duration_s: 10.0,
            seed: 1,
            incident_phase: "burst".into(),
            phases: vec![],
            dataset: "smoke".into(),
        },
        environment: Environment {
            commit: "0123456789ab".into(),
            machine: "test machine, 2 cores, 24 GiB".into(),
            cores: 2,
            postgres_backend: "local".into(),
            postgres_limits: "none".into(),
            postgres_ready_s: 0.5,
            seed_s: 1.0,
        },
        verdict: Verdict::Pass,
        wall_time_s: 60.0,
        arms,
        attribution: vec![],
    }
}
