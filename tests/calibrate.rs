//! `calibrate` end to end on real Postgres: probes of the legacy arm on three minutes of the
//! shipped export, the fit written from the run it describes, the calibrated scenario, and the
//! fixed arm on the calibrated world.

mod common;

use common::incident_lab;
use common::scenarios::{arm, endpoint, scenario_path, text};
use serde_json::Value;

#[test]
fn calibrate_fits_the_legacy_world_and_runs_the_fix_on_it() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().display().to_string();
    let run = incident_lab(&[
        "calibrate",
        &scenario_path("logs/incident-2026-01-23.csv"),
        "--base",
        &scenario_path("smoke.toml"),
        "--speed",
        "15",
        "--window",
        "17:56..17:59",
        "--fit-minutes",
        "2",
        "--budget",
        "60s",
        "--postgres",
        "local",
        "--out",
        &dir,
    ]);
    let all = text(&run);
    // 0 when every fitted cell is within and the fix removes the failures, else 1; never a
    // usage or infrastructure failure.
    assert!(matches!(run.status.code(), Some(0 | 1)), "{all}");
    let read = |name: &str| {
        std::fs::read_to_string(out.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{all}"))
    };
    let fit: Value = serde_json::from_str(&read("fit.json")).unwrap();
    let report: Value = serde_json::from_str(&read("report.json")).unwrap();
    let fidelity: Value = serde_json::from_str(&read("fidelity.json")).unwrap();
    assert!(read("fit.md").contains("## Residuals of the calibrated world"));

    // The search starts at the base's own setting and probes each setting once, within the
    // budget (the last probe may end past it by one probe's time).
    let probes = fit["probes"].as_array().unwrap();
    assert!(probes.len() >= 2, "{all}");
    assert_eq!(probes[0]["setting"], fit["base"]);
    assert_eq!(fit["base"]["pool_max"], 10.0);
    assert_eq!(fit["base"]["request_timeout_ms"], 3000.0);
    let settings: std::collections::BTreeSet<String> =
        probes.iter().map(|p| p["setting"].to_string()).collect();
    assert_eq!(settings.len(), probes.len(), "a setting probed twice");
    let first = probes[0]["seconds"].as_f64().unwrap();
    assert!(fit["search_seconds"].as_f64().unwrap() < 60.0 + 2.0 * first + 10.0);
    // The calibrated setting is the best probe's, and it is the one written.
    let best = &fit["calibrated"];
    let loss = |p: &Value| {
        (
            p["loss"]["outside"].as_u64().unwrap(),
            p["loss"]["squares"].as_f64().unwrap(),
        )
    };
    let best_probe = probes
        .iter()
        .find(|p| &p["setting"] == best)
        .expect("the calibrated setting was probed");
    for p in probes {
        assert!(loss(best_probe).0 <= loss(p).0, "{best_probe} vs {p}");
    }
    let scenario = read("scenario.toml");
    assert!(
        scenario.contains(&format!(
            "pool_max = {}",
            best["pool_max"].as_f64().unwrap()
        )),
        "{scenario}"
    );
    assert!(scenario.contains(&format!(
        "request_timeout = \"{}ms\"",
        best["request_timeout_ms"].as_f64().unwrap()
    )));

    // The residuals are the calibrated run's: every cell with ≥ 20 production requests, the
    // last minute held out, and the replayed figures those of the legacy arm in report.json —
    // the calibrated share of the recorded requests sent, minute by minute.
    let legacy = arm(&report, "pre-phase-53");
    let residuals = fit["residuals"].as_array().unwrap();
    assert!(residuals.len() >= 4, "{}", fit["residuals"]);
    for r in residuals {
        assert!(r["production_requests"].as_u64().unwrap() >= 20);
        let minute = r["minute"].as_u64().unwrap();
        assert_eq!(r["held_out"], minute >= 2, "{r}");
        let e = endpoint(legacy, r["endpoint"].as_str().unwrap());
        let m = e["minutes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["minute"] == minute)
            .unwrap();
        assert_eq!(r["replayed_requests"], m["requests"], "{r}");
        // The calibrated share of the recorded arrivals, evenly: within one request a minute.
        let kept = best["kept"].as_f64().unwrap();
        let sent = r["replayed_requests"].as_f64().unwrap();
        let recorded = r["production_requests"].as_f64().unwrap();
        if kept == 1.0 {
            assert_eq!(sent, recorded, "every recorded request: {r}");
        } else {
            assert!((sent - recorded * kept).abs() <= 1.0, "kept {kept}: {r}");
        }
        let share = m["failed"].as_f64().unwrap() / m["requests"].as_f64().unwrap();
        assert!(
            (r["replayed_failed"].as_f64().unwrap() - share).abs() < 1e-9,
            "{r}"
        );
    }
    assert!(residuals.iter().any(|r| r["held_out"] == true));

    // The fix on the calibrated world: no failures where production failed.
    let fixed = fidelity["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["arm"] == "all-on" && c["question"] == "removes the failures (≤ 1%)")
        .collect::<Vec<_>>();
    assert!(fixed.len() >= 2, "{fidelity:#}");
    for c in fixed {
        assert_eq!(c["passed"], true, "{c}");
    }
}
