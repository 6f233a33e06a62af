//! `incident-lab ceiling`: the load generator's on-schedule ceiling against a trivial endpoint,
//! beside wrk run by the command itself; no ratio without the reference; a step that cannot keep
//! its schedule does not hold; the service's ingest and drain on a local Postgres beside pgbench.
//! One run at a time (they share the machine's cores).

use std::process::{Command, Output};

use serde_json::Value;

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn ceiling(args: &[&str], path: Option<&str>) -> (Output, Value, String) {
    ceiling_with(args, path, &[])
}

/// [`ceiling`] with `env` set for the command (and the service it starts).
fn ceiling_with(
    args: &[&str],
    path: Option<&str>,
    env: &[(&str, &str)],
) -> (Output, Value, String) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_incident-lab"));
    cmd.arg("ceiling")
        .args(args)
        .arg("--out")
        .arg(out.path())
        .env_remove("DATABASE_URL")
        .env_remove("INCIDENT_LAB_POSTGRES")
        .envs(env.iter().copied());
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let run = cmd.output().unwrap();
    let said =
        String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    let json = std::fs::read_to_string(out.path().join("ceiling.json"))
        .unwrap_or_else(|e| panic!("no ceiling.json ({e}): {said}"));
    let md = std::fs::read_to_string(out.path().join("ceiling.md")).unwrap();
    assert!(md.starts_with("# Harness ceilings"), "{md}");
    (run, serde_json::from_str(&json).unwrap(), said)
}

/// A short ingest ramp on a local Postgres with smoke's settings: `rates`, `refine` steps.
fn ingest_args<'a>(rates: &'a str, refine: &'a str) -> [&'a str; 12] {
    [
        "--rates",
        "200",
        "--ingest-rates",
        rates,
        "--refine",
        refine,
        "--step",
        "2s",
        "--postgres",
        "local",
        "--scenario",
        concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/smoke.toml"),
    ]
}

/// Each step sends its rate × its time, on the schedule's clock; wrk, where installed, runs on
/// the same endpoint and the ratio is theirs.
#[test]
fn the_generator_is_stepped_up_and_measured_beside_wrk() {
    let (run, report, said) = ceiling(
        &["--rates", "200,400", "--step", "2s", "--no-database"],
        None,
    );
    assert_eq!(run.status.code(), Some(0), "{said}");
    let g = &report["generator"];
    let steps = g["steps"].as_array().unwrap();
    assert!(!steps.is_empty(), "{g}");
    for s in steps {
        let expected = s["rate"].as_f64().unwrap() * 2.0;
        let sent = s["sent"].as_f64().unwrap();
        assert!(sent >= expected * 0.95 && sent <= expected + 1.0, "{s}");
        assert_eq!(s["failed"], 0, "{s}");
        let late = s["lateness_p99_ms"].as_f64().unwrap();
        assert_eq!(s["held"], late <= 5.0 && s["unsent"] == 0, "{s}");
        // The generator's own CPU time over the step, per request sent: read, not assumed.
        let cpu = s["cpu_us_per_request"].as_f64().unwrap();
        assert!(cpu > 0.0 && cpu.is_finite(), "{s}");
    }
    let wrk = &g["reference"];
    if incident_lab::tools::on_path(&["wrk"]).is_some() {
        assert!(wrk["rate"].as_f64().unwrap() > 100.0, "{wrk}");
        let cpu = g["wrk_cpu_us_per_request"].as_f64().unwrap();
        assert!(cpu > 0.0 && cpu.is_finite(), "{g}");
        assert!(wrk["detail"]
            .as_str()
            .unwrap()
            .starts_with("wrk -t1 -c64 -d2s http://127.0.0.1:"));
        assert_eq!(g["ratio"].is_null(), g["ceiling_rate"].is_null(), "{g}");
    } else {
        assert!(wrk["rate"].is_null() && g["ratio"].is_null(), "{g}");
    }
}

/// `--https`: the same ramp and wrk on the endpoint behind TLS (a certificate made for the
/// run), every step sent and answered over HTTPS, and what TLS costs a request said.
#[test]
fn the_generator_and_wrk_are_measured_over_https_too() {
    let (run, report, said) = ceiling(
        &["--rates", "200", "--step", "2s", "--no-database", "--https"],
        None,
    );
    assert_eq!(run.status.code(), Some(0), "{said}");
    let h = &report["https"];
    let steps = h["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{h}");
    let s = &steps[0];
    assert!(s["sent"].as_f64().unwrap() >= 380.0, "{s}");
    assert_eq!(s["failed"], 0, "no request failed over TLS: {s}");
    assert!(s["cpu_us_per_request"].as_f64().unwrap() > 0.0, "{s}");
    if incident_lab::tools::on_path(&["wrk"]).is_some() {
        let wrk = &h["reference"];
        assert!(wrk["rate"].as_f64().unwrap() > 100.0, "{wrk}");
        assert!(
            wrk["detail"]
                .as_str()
                .unwrap()
                .starts_with("wrk -t1 -c64 -d2s https://127.0.0.1:"),
            "{wrk}"
        );
    }
    assert!(said.contains("**Over HTTPS**"), "{said}");
    let held = s["held"].as_bool().unwrap() && report["generator"]["steps"][0]["held"] == true;
    assert_eq!(said.contains("TLS costs the generator"), held, "{said}");
}

/// The memory soak: RSS read every second at the soak's rate, judged after the warm-up (the
/// judgement's own failing case, a leak, is a unit test in src/ceiling/soak.rs).
#[test]
fn the_soak_reads_the_generators_memory_every_second() {
    let (run, report, said) = ceiling(
        &[
            "--rates",
            "100",
            "--step",
            "1s",
            "--no-database",
            "--soak",
            "6s",
            "--soak-rate",
            "300",
        ],
        Some("/nonexistent"),
    );
    assert_eq!(run.status.code(), Some(0), "{said}");
    let s = &report["soak"];
    let sent = s["sent"].as_f64().unwrap();
    assert!((1700.0..=1801.0).contains(&sent), "{s}");
    assert_eq!(s["failed"], 0, "{s}");
    let samples = s["samples"].as_array().unwrap();
    assert!((5..=10).contains(&samples.len()), "{s}");
    assert!(samples
        .iter()
        .all(|x| x["rss_kib"].as_u64().unwrap() > 1000));
    let g = &s["growth"];
    let (base, peak) = (
        g["baseline_kib"].as_f64().unwrap(),
        g["peak_kib"].as_f64().unwrap(),
    );
    let growth = g["growth"].as_f64().unwrap();
    assert!((growth - (peak / base - 1.0)).abs() < 1e-9, "{g}");
    assert_eq!(g["held"], growth < 0.10, "{g}");
    assert!(
        said.contains("**Memory** (the generator's RSS over 6 s at 300/s"),
        "{said}"
    );
}

/// A soak rate that is not a rate is refused before anything runs.
#[test]
fn a_soak_rate_of_zero_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_incident-lab"))
        .args([
            "ceiling",
            "--no-database",
            "--soak",
            "1s",
            "--soak-rate",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--soak-rate must be a positive number"),
        "{err}"
    );
}

/// Without wrk there is no reference and no ratio, and the report says why.
#[test]
fn without_wrk_no_ratio_is_invented() {
    let (run, report, said) = ceiling(
        &["--rates", "100", "--step", "1s", "--no-database"],
        Some("/nonexistent"),
    );
    assert_eq!(run.status.code(), Some(0), "{said}");
    let g = &report["generator"];
    assert!(
        g["reference"]["rate"].is_null() && g["ratio"].is_null(),
        "{g}"
    );
    assert!(g["reference"]["detail"]
        .as_str()
        .unwrap()
        .contains("wrk is not installed"));
    assert!(said.contains("no ratio: wrk did not run"), "{said}");
}

/// The check fires: with no lateness allowed no step holds, the ramp stops at its first step
/// and no ceiling is claimed.
#[test]
fn a_schedule_that_cannot_be_kept_holds_no_rate() {
    let (run, report, said) = ceiling(
        &[
            "--rates",
            "100,200",
            "--step",
            "1s",
            "--max-lateness",
            "0ms",
        ],
        Some("/nonexistent"),
    );
    assert_eq!(run.status.code(), Some(0), "{said}");
    let g = &report["generator"];
    assert_eq!(g["steps"].as_array().unwrap().len(), 1, "{g}");
    assert_eq!(g["steps"][0]["held"], false);
    assert!(g["ceiling_rate"].is_null(), "{g}");
    assert!(said.contains("no rate held"), "{said}");
}

/// On a local Postgres seeded with the smoke dataset: each ingest step sends its rate, the
/// queue the ramp left is drained by the cron, pgbench runs on the same cluster, and the ratios
/// are theirs.
#[test]
fn ingest_and_drain_are_measured_beside_pgbench() {
    let (run, report, said) = ceiling(&ingest_args("20,40", "2"), None);
    assert_eq!(run.status.code(), Some(0), "{said}");
    let d = &report["database"];
    let steps = d["ingest_steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{d}");
    for s in steps {
        let expected = s["rate"].as_f64().unwrap() * 2.0;
        let sent = s["sent"].as_f64().unwrap();
        assert!(sent >= expected * 0.95 && sent <= expected + 1.0, "{s}");
        assert_eq!(s["failed"], 0, "{s}");
        assert!(s["p95_ms"].as_f64().unwrap() > 0.0, "{s}");
        // At these rates the budget needs fewer than 64 users: 64.
        assert_eq!(s["users"], 64, "{s}");
        assert!(
            s["late_wakeup"].is_u64() && s["late_no_user"].is_u64(),
            "{s}"
        );
        // Every request was answered 202, and each left its job.
        assert_eq!(s["accepted"], s["sent"], "{s}");
        assert_eq!(s["queued"], s["sent"], "{s}");
    }
    assert!(said.contains("| rate /s | users |"), "{said}");
    // Every job the ramp queued was applied by the cron.
    assert!(d["drained"].as_u64().unwrap() >= 100, "{d}");
    assert_eq!(d["drain_left"], 0, "{d}");
    assert!(d["drain_jobs_per_s"].as_f64().unwrap() > 0.0, "{d}");
    // The runner's drain, not smoke's model of GHL (8 workers ÷ ~200 ms, said beside it):
    // 8 jobs at once per connection of smoke's pool of 10.
    assert_eq!(d["drain_workers"], 80, "{d}");
    assert_eq!(d["drain_modelled_bound"].as_f64(), Some(40.0), "{d}");
    // The claims' EMAIL_SENTs were applied several to a transaction.
    let per_batch = d["drain_jobs_per_batch"].as_f64().unwrap();
    assert!(per_batch > 1.0, "{per_batch} jobs per transaction: {d}");
    // A job's own rows: its claim, the message, the activity, the GHL outbox row, the
    // completion and the outbox row's settle (six); shared with the batch's other jobs of its
    // lead, workspace and day: the lead upsert, the lead's counter, its follow-ups and the
    // ledger; and its tick's lease (two rows per tick, shared).
    let rows = d["drain_rows_per_job"].as_f64().unwrap();
    assert!((6.0..20.0).contains(&rows), "{rows} rows per job: {d}");
    assert!(said.contains("rows written per job"), "{said}");
    assert!(
        said.contains("80 jobs at once, the fake GHL answering at once"),
        "{said}"
    );
    assert!(said.contains("jobs per transaction"), "{said}");
    let pgbench = &d["reference"];
    assert!(pgbench["rate"].as_f64().unwrap() > 50.0, "{pgbench}");
    assert!(
        pgbench["detail"].as_str().unwrap().starts_with(
            "pgbench -n -c10 -j2 -T2 -f insert.sql, insert.sql: INSERT INTO background_jobs"
        ),
        "{pgbench}"
    );
    assert!(d["drain_ratio"].as_f64().unwrap() > 0.0, "{d}");
    assert_eq!(
        d["ingest_ratio"].is_null(),
        d["ingest_rate"].is_null(),
        "{d}"
    );
    assert!(
        said.contains("**Ingest**") && said.contains("pgbench:"),
        "{said}"
    );
}

/// A service that answers 202 before its job commits (a deliberate bug: it writes nothing)
/// holds no ingest rate, however fast its answers: the step counts the jobs behind its 202s.
#[test]
fn an_ingest_that_loses_its_jobs_holds_no_rate() {
    let (run, report, said) = ceiling_with(
        &ingest_args("20", "0"),
        None,
        &[("INBOX_SERVICE_TEST_FAULTS", "ack_before_commit")],
    );
    assert_eq!(run.status.code(), Some(0), "{said}");
    let d = &report["database"];
    let step = &d["ingest_steps"][0];
    assert_eq!(step["failed"], 0, "{step}");
    assert!(step["accepted"].as_u64().unwrap() >= 38, "{step}");
    assert_eq!(step["queued"], 0, "{step}");
    assert_eq!(step["held"], false, "{step}");
    assert!(d["ingest_rate"].is_null(), "{d}");
    assert!(said.contains("only 0 queued"), "{said}");
    assert!(said.contains("202s without their job"), "{said}");
}
