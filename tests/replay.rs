//! A replay of the shipped export, end to end on real Postgres: the recorded timeline against
//! the legacy service and the fixed one, and the fidelity table beside production's figures.

mod common;

use common::incident_lab;
use common::scenarios::{arm, endpoint, scenario_path, text};
use serde_json::Value;

fn check<'a>(f: &'a Value, arm: &str, endpoint: &str, question: &str) -> &'a Value {
    f["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["arm"] == arm
                && c["endpoint"] == endpoint
                && c["question"].as_str().unwrap().starts_with(question)
        })
        .unwrap_or_else(|| panic!("no check {arm} / {endpoint} / {question} in {f:#}"))
}

/// Three minutes of the fixture (one before the burst, two in it) at 15x on the smoke world:
/// the legacy arm fails where production failed, the fixed arm removes it, and every recorded
/// minute of every endpoint is in the table, for production and for each arm.
#[test]
fn a_replay_puts_production_beside_the_legacy_and_the_fixed_service() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().display().to_string();
    let run = incident_lab(&[
        "replay",
        &scenario_path("logs/incident-2026-01-23.csv"),
        "--base",
        &scenario_path("smoke.toml"),
        "--speed",
        "15",
        // Every arrival, at 15x production's rate: the over-reproduction this test pins.
        "--arrivals",
        "all",
        "--window",
        "17:56..17:59",
        "--arms",
        "pre-phase-53,all-on",
        "--postgres",
        "local",
        "--out",
        &dir,
    ]);
    let all = text(&run);
    let read = |name: &str| {
        std::fs::read_to_string(out.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{all}"))
    };
    let report: Value = serde_json::from_str(&read("report.json")).unwrap();
    let fidelity: Value = serde_json::from_str(&read("fidelity.json")).unwrap();
    let md = read("fidelity.md");
    assert!(read("scenario.toml").contains("kind = \"counts\""));
    assert!(
        md.contains("Every recorded request sent, at 15.00x production's arrival rate"),
        "the table says the replay is a heavier regime than production's:\n{md}"
    );

    // The recorded minutes 1 and 2 are the burst (17:57, 17:58).
    assert_eq!(fidelity["incident_minutes"], serde_json::json!([1, 3]));
    let legacy = arm(&report, "pre-phase-53");
    let fixed = arm(&report, "all-on");
    assert_eq!(fixed["status"], "as_expected", "{all}");

    // Every arm sent exactly the recorded requests, minute by minute.
    for a in [legacy, fixed] {
        let webhook = endpoint(a, "POST /api/webhooks/email");
        let sent: Vec<u64> = webhook["minutes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["requests"].as_u64().unwrap())
            .collect();
        assert_eq!(sent, [39, 285, 288], "{}: {webhook:#}", a["name"]);
    }
    assert!(
        md.contains("| 1 ▲ | 285, 60.0 s, 36% |"),
        "production's burst minute beside the arms:\n{md}"
    );

    // Production failed in the burst; the legacy service fails there too, the fixed one does not.
    for endpoint in [
        "POST /api/webhooks/email",
        "GET /",
        "POST /api/actions/inbox-counts",
    ] {
        let c = check(
            &fidelity,
            "pre-phase-53",
            endpoint,
            "reproduces the failed share",
        );
        let failed: f64 = c["detail"]
            .as_str()
            .unwrap()
            .split('%')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(failed > 10.0, "{endpoint}: {c}");
        let c = check(&fidelity, "all-on", endpoint, "removes the failures");
        assert_eq!(c["passed"], true, "{endpoint}: {c}");
        let c = check(&fidelity, "all-on", endpoint, "holds the p95 budget");
        assert_eq!(c["passed"], true, "{endpoint}: {c}");
    }
    // The exit code says what the table says: 0 only when every question is answered yes and
    // every arm showed what it must.
    let clean = fidelity["passed"] == true && report["verdict"] == "pass";
    assert_eq!(run.status.code(), Some(if clean { 0 } else { 1 }), "{all}");
}
