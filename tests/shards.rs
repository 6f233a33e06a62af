//! The load from many processes against one running service (`run --target --shard I/N`),
//! merged (`merge`): the shards send the schedule between them, each arrival once; the merged
//! report holds every request they sent, its percentiles are those of the shards' histograms
//! added, and it is judged as one run — the exactly-once check included, which fails when an
//! acknowledged event's row is gone. Shards of different runs, or a run with a shard missing,
//! are refused.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use common::harness::Harness;
use common::scenarios::{scenario_path, text};
use serde_json::Value;

/// `incident-lab ARGS` with the service's secrets (and nothing else from the harness's
/// environment that picks a Postgres or a shard).
fn lab(args: &[&str], secrets: &[(String, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_incident-lab"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("INCIDENT_LAB_POSTGRES")
        .env_remove("ADMIN_TOKEN")
        .env_remove("INCIDENT_LAB_SHARD")
        .env_remove("INCIDENT_LAB_RUN_ID")
        .envs(secrets.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("the binary runs")
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Per endpoint: (requests, retries) of a recording.
fn sent(recording: &loadgen::Recording) -> BTreeMap<String, (u64, u64)> {
    recording
        .endpoints
        .iter()
        .map(|(k, e)| (k.clone(), (e.requests, e.retries)))
        .collect()
}

#[test]
fn shards_against_one_service_merge_into_the_run_one_process_sends() {
    let smoke = scenario_path("smoke.toml");
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let mut up = Harness::start(&[
        "up",
        &smoke,
        "--arm",
        "all-on",
        "--postgres",
        "local",
        "--out",
        &d("up"),
    ]);
    up.wait_for("up; Ctrl-C");
    let printed = |prefix: &str| up.printed(prefix);
    let service = printed("service:");
    let database = printed("database:");
    let secret = |name: &str| (name.to_owned(), printed(&format!("{name}=")));
    let signing = vec![
        secret("WEBHOOK_SECRET"),
        secret("SESSION_SECRET"),
        secret("CRON_SECRET"),
    ];
    let mut admin = signing.clone();
    admin.push(secret("ADMIN_TOKEN"));

    // Without the service's secrets there is nothing to sign with: exit 2, saying which.
    let none = lab(
        &["run", &smoke, "--arm", "all-on", "--target", &service],
        &[],
    );
    assert_eq!(none.status.code(), Some(2), "{}", text(&none));
    assert!(text(&none).contains("WEBHOOK_SECRET"), "{}", text(&none));
    // Shards of one run need one run id.
    let no_id = lab(
        &[
            "run", &smoke, "--arm", "all-on", "--target", &service, "--shard", "0/2",
        ],
        &signing,
    );
    assert_eq!(no_id.status.code(), Some(2), "{}", text(&no_id));
    assert!(text(&no_id).contains("--run-id"), "{}", text(&no_id));

    // Two shards at once, with the admin token (they set the arm's flags).
    let shard = |i: usize| {
        let (smoke, service, out, env) = (
            smoke.clone(),
            service.clone(),
            d(&format!("shard-{i}")),
            admin.clone(),
        );
        std::thread::spawn(move || {
            lab(
                &[
                    "run",
                    &smoke,
                    "--arm",
                    "all-on",
                    "--target",
                    &service,
                    "--shard",
                    &format!("{i}/2"),
                    "--run-id",
                    "shards-test",
                    "--out",
                    &out,
                ],
                &env,
            )
        })
    };
    let (zero, one) = (shard(0), shard(1));
    for (i, out) in [zero.join().unwrap(), one.join().unwrap()]
        .iter()
        .enumerate()
    {
        assert_eq!(out.status.code(), Some(0), "shard {i}: {}", text(out));
        assert!(
            text(out).contains("incident-lab merge"),
            "shard {i}: {}",
            text(out)
        );
    }
    let merged_out = d("merged");
    let merged = lab(
        &[
            "merge",
            &d("shard-0"),
            &d("shard-1"),
            "--target",
            &service,
            "--database-url",
            &database,
            "--out",
            &merged_out,
        ],
        &signing,
    );
    // The same run in one process, without the admin token, reading the database.
    let single_out = d("single");
    let single = lab(
        &[
            "run",
            &smoke,
            "--arm",
            "all-on",
            "--target",
            &service,
            "--database-url",
            &database,
            "--out",
            &single_out,
        ],
        &signing,
    );

    // Judged (pass or fail on this shared machine), never a usage or infrastructure error.
    assert!(
        matches!(single.status.code(), Some(0 | 1)),
        "{}",
        text(&single)
    );
    assert!(
        matches!(merged.status.code(), Some(0 | 1)),
        "{}",
        text(&merged)
    );
    let shards: Vec<Value> = ["shard-0", "shard-1"]
        .iter()
        .map(|s| json(&dir.path().join(s).join("shard.json")))
        .collect();
    let recordings: Vec<loadgen::Recording> = shards
        .iter()
        .map(|s| serde_json::from_value(s["recording"].clone()).unwrap())
        .collect();
    let mut added = loadgen::Recording::default();
    for r in &recordings {
        added.merge(r);
    }
    let whole: loadgen::Recording = serde_json::from_value(
        json(&Path::new(&single_out).join("shard.json"))["recording"].clone(),
    )
    .unwrap();
    // The shards sent the whole schedule between them: per endpoint, the originals (requests
    // less retries) equal one process's, and each shard sent a part.
    let originals = |r: &loadgen::Recording| -> BTreeMap<String, u64> {
        sent(r)
            .into_iter()
            .map(|(k, (n, retries))| (k, n - retries))
            .collect()
    };
    assert_eq!(originals(&added), originals(&whole));
    for r in &recordings {
        assert!(r.requests() > 0 && r.requests() < added.requests());
    }
    // No event id acknowledged twice across shards: their ids are the whole run's.
    assert_eq!(
        added.acked.len(),
        recordings.iter().map(|r| r.acked.len()).sum::<usize>()
    );

    let report = json(&Path::new(&merged_out).join("report.json"));
    let arm = &report["arms"][0];
    // The merged report holds every request the shards sent, with the percentiles of their
    // histograms added (HDR: 3 significant digits).
    for e in arm["endpoints"].as_array().unwrap() {
        let name = e["endpoint"].as_str().unwrap();
        assert_eq!(
            e["requests"].as_u64(),
            Some(added.endpoints[name].requests),
            "{name}"
        );
        let p95 = added.endpoints[name].latency.quantile_ms(0.95).unwrap();
        let reported = e["p95_ms"].as_f64().unwrap();
        assert!(
            (reported - p95).abs() <= p95 * 0.001 + 0.001,
            "{name}: {reported} vs {p95}"
        );
    }
    let checks = arm["checks"].as_array().unwrap();
    let check = |start: &str| {
        checks
            .iter()
            .find(|c| c["name"].as_str().unwrap().starts_with(start))
            .unwrap_or_else(|| panic!("no check {start:?}: {checks:?}"))
    };
    assert_eq!(check("the service runs arm all-on")["passed"], true);
    let once = check("every acknowledged EMAIL_SENT");
    assert_eq!(once["passed"], true, "{}", text(&merged));
    assert_eq!(
        arm["invariants"]["acked"].as_u64(),
        Some(added.acked.len() as u64)
    );
    // What a merge cannot know is named, not passed.
    let skipped: Vec<&str> = arm["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["check"].as_str().unwrap())
        .collect();
    assert!(
        skipped.iter().any(|s| s.contains("declared writes")),
        "{skipped:?}"
    );
    assert!(skipped.iter().any(|s| s.contains("GHL")), "{skipped:?}");
    assert!(
        text(&merged).contains("Checks this run could not make"),
        "{}",
        text(&merged)
    );

    // The single run: judged on its own, the flags named as not set (no admin token), the
    // counters checked against their values before the load.
    let single_report = json(&Path::new(&single_out).join("report.json"));
    let single_arm = &single_report["arms"][0];
    let single_skipped = single_arm["skipped"].to_string();
    assert!(
        single_skipped.contains("no --admin-token"),
        "{single_skipped}"
    );
    let effects = single_arm["invariants"]["effects"].to_string();
    assert!(effects.contains("lead emails_sent"), "{effects}");
    assert_eq!(
        single_report["environment"]["postgres_backend"]
            .as_str()
            .unwrap()
            .split(' ')
            .next(),
        Some("url")
    );

    // The check can fail: remove one acknowledged event's message row and merge again.
    let gone = added.acked.iter().next().unwrap().clone();
    let deleted = Command::new("psql")
        .args([
            &database,
            "-tAc",
            &format!("DELETE FROM messages WHERE provider_event_id = '{gone}'"),
        ])
        .output()
        .unwrap();
    assert!(deleted.status.success(), "{}", text(&deleted));
    let again = lab(
        &[
            "merge",
            &d("shard-0"),
            &d("shard-1"),
            "--database-url",
            &database,
            "--out",
            &d("merged-again"),
        ],
        &signing,
    );
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    let lost = json(&dir.path().join("merged-again/report.json"));
    assert_eq!(lost["arms"][0]["invariants"]["lost"].as_u64(), Some(1));

    // Not one whole run: a shard missing, a shard twice, shards of different runs.
    let missing = lab(&["merge", &d("shard-0")], &[]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(text(&missing).contains("1/2 missing"), "{}", text(&missing));
    let twice = lab(&["merge", &d("shard-0"), &d("shard-0")], &[]);
    assert_eq!(twice.status.code(), Some(2), "{}", text(&twice));
    assert!(text(&twice).contains("given twice"), "{}", text(&twice));
    let other = lab(&["merge", &d("shard-0"), &single_out], &[]);
    assert_eq!(other.status.code(), Some(2), "{}", text(&other));
    assert!(
        text(&other).contains("not shards of one run"),
        "{}",
        text(&other)
    );
}
