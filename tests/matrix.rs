//! The incident matrix end to end, through the binary: real Postgres, the real service
//! process, goose load. The smoke scenario must reproduce the incident with the fixes off and
//! hold every budget with them on; a budget nobody can meet must fail the gate.

mod common;

use std::path::Path;

use common::incident_lab;
use common::scenarios::{
    arm, endpoint, run_matrix, run_matrix_with, scenario_path, swap, text, tiny_scenario,
    write_scenario,
};

use serde_json::Value;

/// The smoke matrix: pre-phase-53 and all-off reproduce the incident, all-on holds every
/// budget and the invariant; every report is written and well formed; compare gates on it.
#[test]
fn the_smoke_matrix_reproduces_the_incident_and_proves_the_fix() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().display().to_string();

    let run = incident_lab(&[
        "matrix",
        &scenario_path("smoke.toml"),
        "--postgres",
        "local",
        "--out",
        &dir,
    ]);

    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(
        report["schema_version"],
        incident_lab::report::SCHEMA_VERSION
    );
    assert_eq!(report["verdict"], "pass");
    assert!(report["environment"]["commit"].as_str().unwrap().len() >= 7);

    // Every arm: the generator kept up, the service's declared writes and calls match what
    // Postgres and the providers counted, and the service's own figures sit beside the client's.
    for a in report["arms"].as_array().unwrap() {
        assert_eq!(a["status"], "as_expected", "{}", a["name"]);
        let checks = a["checks"].as_array().unwrap();
        for name in [
            "load generator kept up",
            "declared writes and calls match what was measured",
        ] {
            let c = checks.iter().find(|c| c["name"] == name).unwrap();
            assert_eq!(c["passed"], true, "{}: {c}", a["name"]);
        }
        let acc = &a["accounting"];
        assert!(acc["db_writes_measured"].as_u64().unwrap() > 0, "{acc}");
        for s in a["load"]["streams"].as_array().unwrap() {
            assert!(s["max_in_flight"].as_u64().unwrap() >= 1, "{s}");
        }
        let hook = endpoint(a, "POST /api/webhooks/email");
        assert!(hook["service"]["p95_ms"].as_f64().is_some(), "{hook}");
        assert!(hook["time_spent"].as_str().is_some(), "{hook}");
    }

    // The failure, reproduced.
    let legacy = arm(&report, "pre-phase-53");
    assert_eq!(legacy["as_expected"], true);
    assert_eq!(legacy["flags"]["LEGACY_LEDGER_TX"], true);
    let hook = endpoint(legacy, "POST /api/webhooks/email");
    assert_eq!(hook["within_budget"], false);
    assert!(hook["status_counts"]["504"].as_u64().unwrap() > 0, "{hook}");
    assert!(hook["p95_ms"].as_f64().unwrap() > hook["budget_p95_ms"].as_f64().unwrap());
    // Rows: the lead upsert, the message, the lead update, the activity, the ledger
    // (+ the lead's pending follow-ups).
    assert!(hook["db_writes_max"].as_u64().unwrap() >= 5);
    assert!(legacy["statement_timeouts"].as_u64().unwrap() > 0);
    let all_off = arm(&report, "all-off");
    assert_eq!(all_off["as_expected"], true);
    let page_burst = endpoint(all_off, "GET /")["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "burst")
        .unwrap()["p95_ms"]
        .as_f64()
        .unwrap();
    assert!(
        page_burst > 2000.0,
        "the cascade reaches GET /: {page_burst}"
    );

    // The fix, proven.
    let fixed = arm(&report, "all-on");
    assert_eq!(fixed["as_expected"], true);
    for e in fixed["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["budget_p95_ms"].is_null())
    {
        assert_eq!(e["within_budget"], true, "{e}");
    }
    let hook = endpoint(fixed, "POST /api/webhooks/email");
    assert_eq!(hook["db_writes_max"], 1);
    assert_eq!(hook["external_calls_max"], 0);
    // No statement timeout reaches a user of the endpoints the fix bounds. On a loaded machine
    // the live counts query may run past its own bound (below the database's timeout) and be
    // answered from the stale fallback: those are 200s, counted in `error_categories` only (a
    // cron tick's are counted service-wide, in `statement_timeouts`).
    for name in ["GET /", "POST /api/actions/inbox-counts"] {
        let e = endpoint(fixed, name);
        let seen = e["failed_categories"]["db_timeout"].as_u64().unwrap_or(0);
        assert_eq!(seen, 0, "{name}: {seen} statement timeouts users saw");
        let failed: u64 = e["status_counts"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| !k.starts_with('2') && !k.starts_with('3') && *k != "401")
            .map(|(_, n)| n.as_u64().unwrap())
            .sum();
        assert_eq!(failed, 0, "{name}: {e}");
    }
    let inv = &fixed["invariants"];
    assert!(inv["acked"].as_u64().unwrap() > 100, "{inv}");
    assert_eq!(inv["acked"], inv["applied"]);
    assert_eq!(
        (inv["lost"].as_u64(), inv["duplicates"].as_u64()),
        (Some(0), Some(0))
    );
    // ... on every side effect: rows, the lead's counter, the ledger, the GHL call.
    let effects = inv["effects"].as_array().unwrap();
    let names: Vec<&str> = effects
        .iter()
        .map(|e| e["effect"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "message row",
            "lead activity",
            "lead emails_sent",
            "slot ledger",
            "GHL contact sync"
        ]
    );
    for e in effects {
        assert!(e["expected"].as_u64().unwrap() > 100, "{e}");
        assert_eq!(e["applied"], e["expected"], "{e}");
        assert_eq!(
            (e["lost"].as_u64(), e["duplicates"].as_u64()),
            (Some(0), Some(0)),
            "{e}"
        );
    }
    // ... with the provider's redeliveries and concurrent duplicates in the traffic.
    let streams = fixed["load"]["streams"].as_array().unwrap();
    let sum = |field: &str| -> u64 { streams.iter().map(|s| s[field].as_u64().unwrap()).sum() };
    assert!(
        sum("duplicates") > 0 && sum("redeliveries") > 0,
        "{streams:?}"
    );
    // Background work and where the counts came from, per arm.
    let bg = &fixed["background"];
    let runners: Vec<&str> = bg["cron_ticks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["runner"].as_str().unwrap())
        .collect();
    assert_eq!(runners, ["background_jobs", "followups"], "{bg}");
    let answered: u64 = bg["counts_answers"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(answered > 50, "{bg}");
    // Cold at the start: most scopes users asked for were not cached by the warm-up.
    let (at_start, at_end) = (
        bg["counts_scopes_at_start"].as_u64().unwrap(),
        bg["counts_scopes_at_end"].as_u64().unwrap(),
    );
    assert!(at_end > 2 * at_start.max(1), "{bg}");
    // Every arm's cron ticks ended within their budget (a service property, flags or not).
    for a in report["arms"].as_array().unwrap() {
        let cron = a["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "cron ticks within their time budget")
            .unwrap_or_else(|| panic!("{}: no cron check", a["name"]));
        assert_eq!(cron["passed"], true, "{}: {cron}", a["name"]);
    }
    // Reconnected accounts: every one re-admitted by the gate's probes (whether or not a
    // follow-up of theirs came up), no false skip past the bound.
    let gate = &fixed["reconnect"];
    assert!(gate["reconnected"].as_u64().unwrap() >= 1, "{gate}");
    assert_eq!(gate["readmitted"], gate["reconnected"], "{gate}");
    assert_eq!(gate["false_skips_late"], 0, "{gate}");
    assert!(md_has_effects(&out));
    // The legacy arms report theirs too (dirty or not, counted).
    assert_eq!(legacy["invariants"]["effects"].as_array().unwrap().len(), 5);
    assert!(md_has_effects(&out));
    assert!(!fixed["timeline"].as_array().unwrap().is_empty());

    // junit.xml: one testcase per arm × budget plus the arms' checks, well formed.
    let junit = std::fs::read_to_string(out.path().join("junit.xml")).unwrap();
    assert!(junit.starts_with("<?xml"));
    let budgets = 3;
    let checks: usize = report["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["checks"].as_array().unwrap().len())
        .sum();
    assert_eq!(junit.matches("<testcase ").count(), 3 * budgets + checks);
    assert_eq!(
        junit.matches("<testsuites").count(),
        junit.matches("</testsuites>").count()
    );
    assert!(junit.contains("failures=\"0\""), "{junit}");

    // report.html: self-contained, with its charts.
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(
        html.matches("<figure class=\"chart\">").count() >= 4 * 3,
        "latency, pool, waiters and queue charts per arm"
    );
    assert!(html.contains("id=\"summary\"") && html.contains("class=\"chart budget\""));
    assert!(html.contains("<polyline") && html.contains("class=\"phase\""));
    for external in ["http://", "https://", "<script", "src=", "@import"] {
        assert!(!html.contains(external), "report.html refers to {external}");
    }
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("PASS") && md.contains("`all-on`"));

    // compare: a report against itself passes; against a faster baseline it fails.
    let same = incident_lab(&[
        "compare",
        &format!("{dir}/report.json"),
        &format!("{dir}/report.json"),
    ]);
    assert_eq!(same.status.code(), Some(0), "{}", text(&same));
    // A baseline four times faster, every second of it: the legacy arms' seconds-long p95s
    // regress beyond any floor, significantly.
    let mut faster = report.clone();
    for a in faster["arms"].as_array_mut().unwrap() {
        for e in a["endpoints"].as_array_mut().unwrap() {
            if let Some(p) = e["p95_ms"].as_f64() {
                e["p95_ms"] = (p / 4.0).into();
            }
            for w in e["windows"].as_array_mut().unwrap() {
                w[1] = (w[1].as_f64().unwrap() / 4.0).into();
            }
        }
    }
    let base = out.path().join("faster.json");
    std::fs::write(&base, serde_json::to_string(&faster).unwrap()).unwrap();
    let regressed = incident_lab(&[
        "compare",
        base.to_str().unwrap(),
        &format!("{dir}/report.json"),
        "--max-regression",
        "10%",
    ]);
    assert_eq!(regressed.status.code(), Some(1), "{}", text(&regressed));
    assert!(
        text(&regressed).contains("**REGRESSION**"),
        "{}",
        text(&regressed)
    );
    // A directory of repeats is a baseline too.
    for i in ["1", "2"] {
        let d = out.path().join("repeats").join(i);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(out.path().join("report.json"), d.join("report.json")).unwrap();
    }
    let repeats = incident_lab(&[
        "compare",
        &format!("{dir}/repeats"),
        &format!("{dir}/report.json"),
    ]);
    assert_eq!(repeats.status.code(), Some(0), "{}", text(&repeats));
    assert!(
        text(&repeats).contains("baseline: 2 run(s)"),
        "{}",
        text(&repeats)
    );
}

/// `--repeat 2`: the matrix twice on one Postgres, each repeat's reports in a folder of its own,
/// the noise band printed and written; `compare` reads the folder as a baseline of repeats.
#[test]
fn repeats_run_into_folders_of_their_own_and_give_the_noise_band() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_scenario(dir.path(), "tiny.toml", &tiny_scenario(|s| s));
    let out = dir.path().join("out");

    let run = run_matrix_with(
        &path,
        &out,
        &["--postgres", "local", "--arms", "all-on", "--repeat", "2"],
    );

    let said = text(&run);
    assert_eq!(run.status.code(), Some(0), "{said}");
    assert_eq!(
        said.matches("postgres: local backend, ready in").count(),
        1,
        "{said}"
    );
    for k in ["repeat-1", "repeat-2"] {
        let report: Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(k).join("report.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(report["verdict"], "pass", "{k}");
        assert_eq!(report["arms"].as_array().unwrap().len(), 1, "{k}");
    }
    let noise = std::fs::read_to_string(out.join("repeats.md")).unwrap();
    assert!(noise.starts_with("2 repeats."), "{noise}");
    assert!(
        noise.contains("| all-on | POST /api/webhooks/email | "),
        "{noise}"
    );
    assert!(said.contains("## The noise band across repeats"), "{said}");
    let compared = incident_lab(&[
        "compare",
        out.to_str().unwrap(),
        out.join("repeat-1/report.json").to_str().unwrap(),
    ]);
    assert!(
        text(&compared).contains("baseline: 2 run(s)"),
        "{}",
        text(&compared)
    );
}

fn md_has_effects(out: &tempfile::TempDir) -> bool {
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    md.contains("## Exactly once, on every effect of EMAIL_SENT")
}

/// A budget no service can meet fails the gate: exit 1, and the report says which.
/// The accounting can fail in a legacy arm as in all-on: a service whose background-jobs
/// ticks write rows they never declare (a test-only deliberate bug) fails the check in both,
/// though the legacy arm's cut-off webhooks are charged what they may have had in flight —
/// and only those: its page's cut-off requests, which write nothing, are charged nothing.
#[test]
fn rows_written_and_not_declared_fail_the_accounting_in_a_legacy_arm_and_all_on() {
    let out = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_incident-lab"))
        .args([
            "matrix",
            &scenario_path("smoke.toml"),
            "--postgres",
            "local",
        ])
        .args(["--arms", "pre-phase-53,all-on", "--out"])
        .arg(out.path())
        .env("INBOX_SERVICE_TEST_FAULTS", "undeclared_write")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap())
            .unwrap();
    for name in ["pre-phase-53", "all-on"] {
        let a = arm(&report, name);
        let c = a["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "declared writes and calls match what was measured")
            .unwrap();
        assert_eq!(c["passed"], false, "{name}: {c}");
        let acc = &a["accounting"];
        let (declared, counted, slack) = (
            acc["db_writes_declared"].as_u64().unwrap(),
            acc["db_writes_measured"].as_u64().unwrap(),
            acc["slack_writes"].as_u64().unwrap(),
        );
        assert!(counted > declared + slack, "{name}: {acc}");
        assert!(
            c["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("declared {declared}, counted {counted}")),
            "{c}"
        );
        // No route that never writes is charged for its cut-off requests.
        let by_route = acc["slack_by_route"].as_object().unwrap();
        assert!(!by_route.contains_key("GET /"), "{name}: {acc}");
    }
}

#[test]
fn a_budget_tightened_below_what_is_achievable_fails_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = tiny_scenario(|s| {
        swap(
            &s,
            "[budgets.\"POST /api/webhooks/email\"]\np95 = \"500ms\"",
            "[budgets.\"POST /api/webhooks/email\"]\np95 = \"0.01ms\"",
        )
    });
    let path = write_scenario(dir.path(), "tight.toml", &scenario);
    let out = dir.path().join("out");

    let run = run_matrix(&path, &out);

    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["verdict"], "fail");
    let hook = endpoint(arm(&report, "all-on"), "POST /api/webhooks/email");
    assert_eq!(hook["within_budget"], false);
    assert!(std::fs::read_to_string(out.join("junit.xml"))
        .unwrap()
        .contains("<failure"));
}

/// A stream starved of concurrency (one user for ten ~300 ms AI drafts a second) makes the
/// generator fall behind: the arm is inconclusive — not a pass, whatever else held — the run
/// exits 1, and the stream is named with what to do.
#[test]
fn a_generator_that_falls_behind_makes_the_arm_inconclusive() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = tiny_scenario(|s| {
        swap(
            &s,
            "[budgets.",
            "[[streams]]\nname = \"AI drafts, one user\"\nendpoint = \"ai_draft\"\narrival = { kind = \"constant\", rate = 10.0 }\nmax_in_flight = 1\n\n[budgets.",
        )
    });
    let path = write_scenario(dir.path(), "starved.toml", &scenario);
    let out = dir.path().join("out");

    let run = run_matrix(&path, &out);

    let said = text(&run);
    assert_eq!(run.status.code(), Some(1), "{said}");
    assert!(said.contains("inconclusive"), "{said}");
    assert!(
        said.contains("AI drafts, one user"),
        "the stream is named: {said}"
    );
    assert!(said.contains("max_in_flight"), "{said}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["verdict"], "fail");
    let arm = arm(&report, "all-on");
    assert_eq!(arm["status"], "inconclusive");
    assert_eq!(arm["as_expected"], false);
    let stream = |name: &str| {
        arm["load"]["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };
    let starved = stream("AI drafts, one user");
    assert!(starved["late_pct"].as_f64().unwrap() > 1.0, "{starved}");
    assert!(starved["late_no_user"].as_u64().unwrap() > 0, "{starved}");
    // The other streams kept their schedule.
    let page = stream("inbox page");
    assert!(page["late_pct"].as_f64().unwrap() <= 1.0, "{page}");
}

/// Scenario mistakes exit 2 and point at the file, line and field — before anything starts
/// (every kind of mistake is read in-process in `scenario::tests`; these go through the binary).
#[test]
fn scenario_errors_exit_2_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown-key.toml",
            tiny_scenario(|s| swap(&s, "seed = 53", "seed = 53\nmax_inflight = 3")),
            "max_inflight",
        ),
        (
            "global-concurrency.toml",
            tiny_scenario(|s| swap(&s, "seed = 53", "seed = 53\nmax_in_flight = 200")),
            "per stream",
        ),
        (
            "unknown-flag.toml",
            tiny_scenario(|s| {
                swap(
                    &s,
                    "UNIPILE_HEALTH_GATE = true }",
                    "UNIPILE_HEALTHGATE = true }",
                )
            }),
            "UNIPILE_HEALTHGATE",
        ),
    ];
    for (name, body, needle) in cases {
        let path = write_scenario(dir.path(), name, &body);

        let run = incident_lab(&["matrix", path.to_str().unwrap(), "--postgres", "local"]);

        let err = text(&run);
        assert_eq!(run.status.code(), Some(2), "{name}: {err}");
        let located = format!("{}:", path.display());
        assert!(err.contains(&located), "{name}: no file:line in {err}");
        let after = &err[err.find(&located).unwrap() + located.len()..];
        assert!(
            after.split(':').next().unwrap().parse::<usize>().is_ok(),
            "{name}: no line number in {err}"
        );
        assert!(err.contains(needle), "{name}: {err} should name {needle:?}");
    }
}

/// Both shipped scenarios are valid.
#[test]
fn the_shipped_scenarios_parse() {
    for name in ["smoke.toml", "incident.toml", "chaos-db-latency.toml"] {
        let s = incident_lab::model::Scenario::load(Path::new(&scenario_path(name)));
        assert!(s.is_ok(), "{name}: {}", s.unwrap_err());
    }
    let incident =
        incident_lab::model::Scenario::load(Path::new(&scenario_path("incident.toml"))).unwrap();
    assert_eq!(
        incident.arms.len(),
        9,
        "the default matrix: 8 flag combinations + pre-phase-53"
    );
    assert!(incident.scale.messages >= 2_000_000);
}
