//! Production log exports, through the binary: the replayed timeline is the export's own, bad
//! exports get clear errors, triage ranks as the seed did, and the shipped fixture is what its
//! script writes. No Postgres here (the replay on real Postgres is in tests/replay.rs).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::incident_lab;
use common::scenarios::{scenario_path, text};
use serde_json::Value;

fn fixture() -> String {
    scenario_path("logs/incident-2026-01-23.csv")
}

/// The export's own per-endpoint per-second counts, computed here apart from the harness: one
/// request per requestId, starting at its latest `timestampInMs - durationMs`, mapped by the
/// default rules.
fn own_counts(csv_path: &str) -> BTreeMap<String, BTreeMap<i64, u32>> {
    let mut reader = csv::Reader::from_path(csv_path).unwrap();
    let header = reader.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (ts, path, method, dur, id) = (
        col("timestampInMs"),
        col("requestPath"),
        col("requestMethod"),
        col("durationMs"),
        col("requestId"),
    );
    let mut starts: HashMap<String, (String, String, i64)> = HashMap::new();
    for rec in reader.records() {
        let rec = rec.unwrap();
        let start = rec[ts].parse::<i64>().unwrap() - rec[dur].parse::<i64>().unwrap();
        let p = rec[path].to_string();
        let p = if p.starts_with('/') {
            p
        } else {
            p[p.find('/').unwrap()..].to_string()
        };
        let e = starts
            .entry(rec[id].to_string())
            .or_insert((rec[method].to_string(), p, start));
        e.2 = e.2.max(start);
    }
    let mut out: BTreeMap<String, BTreeMap<i64, u32>> = BTreeMap::new();
    for (method, path, start) in starts.into_values() {
        let label = match (method.as_str(), path.as_str()) {
            ("POST", "/api/webhooks/email") => "POST /api/webhooks/email",
            ("GET", "/") => "GET /",
            ("POST", "/") => "POST /api/actions/inbox-counts",
            (_, "/api/cron/background-jobs") => "GET /api/cron/background-jobs",
            (_, "/api/cron/followups") => "GET /api/cron/followups",
            _ => continue,
        };
        *out.entry(label.into())
            .or_default()
            .entry(start.div_euclid(1000))
            .or_default() += 1;
    }
    out
}

/// Writes a scenario from the fixture and returns, per stream's endpoint, the arrivals the
/// load generator will send in each window of the run, and the window length.
fn replayed(
    args: &[&str],
) -> (
    BTreeMap<String, Vec<u32>>,
    Duration,
    incident_lab::model::Scenario,
) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("replay.toml");
    let fixture = fixture();
    let base = scenario_path("smoke.toml");
    let mut all = vec![
        "scenario",
        "from-logs",
        &fixture,
        "--base",
        &base,
        "--out",
        out.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let run = incident_lab(&all);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let scenario = incident_lab::model::Scenario::load(&out).unwrap();
    let mut every = Duration::ZERO;
    let per_window = scenario
        .streams
        .iter()
        .map(|st| {
            let loadgen::Arrival::Counts { every: e, counts } = &st.arrival else {
                panic!("stream {} does not replay counts", st.name);
            };
            every = *e;
            let times = loadgen::plan::arrivals(
                &st.arrival,
                scenario.duration,
                scenario.seed,
                scenario.poisson,
            );
            let mut got = vec![0u32; counts.len()];
            for t in times {
                got[(t.as_secs_f64() / e.as_secs_f64()).floor() as usize] += 1;
            }
            (st.name.trim_start_matches("replay: ").to_string(), got)
        })
        .collect();
    (per_window, every, scenario)
}

fn window_of(own: &BTreeMap<i64, u32>, from: i64, n: usize) -> Vec<u32> {
    (0..n as i64)
        .map(|i| own.get(&(from + i)).copied().unwrap_or(0))
        .collect()
}

#[test]
fn the_replayed_timeline_is_the_exports_own_second_by_second() {
    let own = own_counts(&fixture());
    // From the start of the minute of the first request: recorded minute 0, as [observed]
    // counts it.
    let first = own.values().flat_map(|m| m.keys()).min().copied().unwrap();
    let first = first.div_euclid(60) * 60;

    let (full, every, scenario) = replayed(&["--speed", "1"]);
    assert_eq!(every, Duration::from_secs(1));
    assert_eq!(
        full.len(),
        own.len(),
        "every endpoint of the export is replayed"
    );
    for (label, got) in &full {
        assert_eq!(
            got,
            &window_of(&own[label], first, got.len()),
            "{label}, speed 1"
        );
    }
    // The burst is found where the webhooks are (17:57 .. 18:07 in the fixture).
    let burst = scenario.phases.iter().find(|p| p.name == "burst").unwrap();
    assert_eq!((burst.from.as_secs(), burst.to.as_secs()), (360, 960));

    // Ten times faster with every arrival: the same requests in windows a tenth as long.
    let (fast, every, scenario) = replayed(&["--speed", "10", "--arrivals", "all"]);
    assert_eq!(every, Duration::from_millis(100));
    assert_eq!(fast, full, "--arrivals all scales time, not counts");
    // By default, 1 in 10 of them: each recorded minute keeps a tenth of its requests (to
    // within one), so a second of the run holds what a second of production did.
    let (thinned, _, _) = replayed(&["--speed", "10"]);
    for (label, got) in &thinned {
        for (minute, (t, f)) in got.chunks(60).zip(full[label].chunks(60)).enumerate() {
            let (t, f): (u32, u32) = (t.iter().sum(), f.iter().sum());
            assert!(
                (f64::from(t) - f64::from(f) / 10.0).abs() <= 1.0,
                "{label}, minute {minute}: {t} of {f} replayed at --speed 10"
            );
        }
    }
    assert!(scenario.duration.as_secs_f64() * 10.0 >= full["GET /"].len() as f64);
    let burst = scenario.phases.iter().find(|p| p.name == "burst").unwrap();
    assert_eq!(
        (burst.from.as_millis(), burst.to.as_millis()),
        (36_000, 96_000)
    );

    // A window: exactly the seconds in it, from its first.
    let (cut, _, _) = replayed(&["--window", "17:58..18:02"]);
    let from = 1_769_191_080; // 2026-01-23 17:58:00 UTC
    for (label, got) in &cut {
        assert_eq!(got.len(), 240, "{label}");
        assert_eq!(got, &window_of(&own[label], from, 240), "{label}, window");
    }
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// The categories of a triage's JSON, in rank order.
fn categories(t: &Value) -> Vec<&str> {
    t["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["category"].as_str().unwrap())
        .collect()
}

/// The run was refused as bad input (exit 2), saying `needle`.
fn refused(run: &std::process::Output, needle: &str) {
    assert_eq!(run.status.code(), Some(2), "{}", text(run));
    assert!(
        text(run).contains(needle),
        "wanted {needle:?} in:\n{}",
        text(run)
    );
}

const HEADER: &str = "TimeUTC,timestampInMs,requestPath,requestMethod,responseStatusCode,durationMs,level,message,requestId\n";

#[test]
fn odd_and_broken_exports_get_the_documented_answers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let triage = |file: &Path, extra: &[&str]| {
        let mut args = vec!["triage", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        incident_lab(&args)
    };

    // Empty file, wrong header: exit 2, the file named, what was expected said.
    let empty = write(d, "empty.csv", "");
    let run = triage(&empty, &[]);
    refused(&run, "empty.csv: the file is empty");
    let wrong = write(d, "wrong.csv", "time,url,status\n1,/,200\n");
    let run = triage(&wrong, &[]);
    refused(&run, "wrong.csv: line 1: the header has no `timestampInMs` or `TimeUTC` column and no `requestPath` column (found: time, url, status)");

    // Quoted commas and newlines, host-prefixed paths, -1 and empty statuses, missing optional
    // columns; two malformed rows counted by line, then fatal with --strict.
    let odd = write(
        d,
        "odd.csv",
        &format!(
            "{HEADER}2026-01-23 17:58:00,1769191080000,app.example.com/api/webhooks/email,POST,-1,60000,error,\"Task timed out after 60.02 seconds, the function was stopped\nat the limit\",a\n\
             2026-01-23 17:58:01,1769191081000,/,POST,500,3100,error,\"error: canceling statement due to statement timeout\",b\n\
             2026-01-23 17:58:02,1769191082000,/,GET,abc,12,,,c\n\
             2026-01-23 17:58:03,1769191083000,/,GET\n\
             2026-01-23 17:58:04,1769191084000,/,GET,,15,,,e\n"
        ),
    );
    let run = triage(&odd, &["--json"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("2 malformed rows left out"), "{err}");
    assert!(
        err.contains("line 5: responseStatusCode \"abc\" is not an HTTP status"),
        "{err}"
    );
    assert!(
        err.contains("line 6: 4 fields where the header has 9"),
        "{err}"
    );
    let t: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(t["requests"], 3);
    assert_eq!(t["malformed_rows"], 2);
    assert_eq!(categories(&t), ["function_timeout", "db_timeout"]);
    assert_eq!(
        t["groups"][0]["endpoints"][0][0], "POST /api/webhooks/email",
        "the host is cut off"
    );
    let run = triage(&odd, &["--strict"]);
    refused(&run, "odd.csv: line 5: responseStatusCode \"abc\"");

    // A log drain's JSON lines.
    let drain = write(
        d,
        "drain.jsonl",
        "{\"timestamp\":1769191080000,\"path\":\"/api/webhooks/email\",\"statusCode\":504,\"level\":\"error\",\"message\":\"Task timed out after 60.02 seconds\",\"requestId\":\"x\"}\n{\"timestamp\":1769191081000,\"path\":\"/\",\"statusCode\":200,\"level\":\"error\",\"message\":\"AuthApiError: refresh_token_not_found\",\"requestId\":\"y\"}\n",
    );
    let run = triage(&drain, &["--json"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let t: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(categories(&t), ["function_timeout", "expected_unauth"]);

    // Nothing the reference service serves: no scenario, and the unmatched paths named.
    let other = write(
        d,
        "other.csv",
        &format!("{HEADER}2026-01-23 17:58:00,1769191080000,/settings,GET,200,5,,,a\n"),
    );
    let out = d.join("s.toml");
    let from_logs = |extra: &[&str]| {
        let base = scenario_path("smoke.toml");
        let mut args = vec![
            "scenario",
            "from-logs",
            other.to_str().unwrap(),
            "--base",
            &base,
        ];
        args.extend_from_slice(&["--out", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        incident_lab(&args)
    };
    let run = from_logs(&[]);
    refused(
        &run,
        "no request in the window maps to an endpoint of the reference service",
    );
    assert!(
        text(&run).contains("unmatched: GET /settings (1) — map them with --map FILE"),
        "{}",
        text(&run)
    );
    assert!(!out.exists(), "nothing written");

    // …unless a map says where it goes.
    let map = write(
        d,
        "map.toml",
        "[[map]]\npath = \"/settings\"\nendpoint = \"inbox_page\"\n",
    );
    let run = from_logs(&["--map", map.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("name = \"replay: GET /\""));

    // A bad map and a bad window name themselves.
    let bad_map = write(
        d,
        "bad-map.toml",
        "[[map]]\npath = \"settings\"\nendpoint = \"inbox_page\"\n",
    );
    let run = triage(&other, &["--map", bad_map.to_str().unwrap()]);
    refused(
        &run,
        "bad-map.toml: [[map]] entry 1: path \"settings\" must start with `/`",
    );
    let run = triage(&other, &["--window", "18:00"]);
    refused(&run, "write START..END");
}

#[test]
fn triage_ranks_the_fixture_as_the_seed_did() {
    let dir = tempfile::tempdir().unwrap();
    let run = incident_lab(&["triage", &fixture(), "--out", dir.path().to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let md = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        md,
        std::fs::read_to_string(dir.path().join("triage.md")).unwrap()
    );
    let t: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("triage.json")).unwrap())
            .unwrap();
    let groups = t["groups"].as_array().unwrap();
    let rank: Vec<(&str, &str)> = groups
        .iter()
        .map(|g| {
            (
                g["priority"].as_str().unwrap(),
                g["category"].as_str().unwrap(),
            )
        })
        .collect();
    // P0: the webhook burst cut off at the function limit, first, then the pool it starves.
    assert_eq!(rank[0], ("P0", "function_timeout"));
    assert_eq!(groups[0]["endpoints"][0][0], "POST /api/webhooks/email");
    assert_eq!(rank[1], ("P0", "db_pool_wait"));
    // P1: the counts' statement timeouts and the auth noise; P2: what must degrade safely.
    let p1: Vec<&str> = rank.iter().filter(|r| r.0 == "P1").map(|r| r.1).collect();
    assert_eq!(p1, ["db_timeout", "expected_unauth"]);
    let mut p2: Vec<&str> = rank.iter().filter(|r| r.0 == "P2").map(|r| r.1).collect();
    p2.sort_unstable();
    assert_eq!(
        p2,
        [
            "ai_timeout",
            "ai_truncated",
            "ledger_warning",
            "provider_disconnected",
            "provider_invalid_recipient"
        ]
    );
    assert!(
        rank.windows(2).all(|w| w[0].0 <= w[1].0),
        "priorities in order: {rank:?}"
    );
    assert!(!md.contains('@'), "no e-mail address in the examples");
    assert!(md.contains("for lead <id>"), "ids redacted:\n{md}");
}

#[test]
fn the_fixture_is_what_its_script_writes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("again.csv");
    let run = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-incident-logs"))
        .arg(&out)
        .output()
        .expect("python3 runs");
    assert!(run.status.success(), "{}", text(&run));
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(fixture()).unwrap(),
        "scenarios/logs/incident-2026-01-23.csv differs from what scripts/make-incident-logs writes: run it again"
    );
}

/// A million rows, larger on disk than the memory the reading may take: the reading streams.
/// (What it holds grows with the request rate — a request's rows are gathered for ten minutes
/// of log time — and with the window's length, in seconds and minutes; not with the rows.)
#[test]
fn a_million_row_export_is_read_in_bounded_memory() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(f, "{}", HEADER.trim_end()).unwrap();
    let rows: u64 = 1_000_000;
    for i in 0..rows {
        // A row every 100 ms (a day and a bit), each its own request.
        let at = 1_769_190_660_000 + i * 100;
        let (path, method) = if i % 3 == 0 {
            ("/", "GET")
        } else {
            ("app.example.com/api/webhooks/email", "POST")
        };
        writeln!(f, "2026-01-23 17:51:00,{at},{path},{method},200,{},,\"delivered to the queue, nothing else to say here at all\",req-{i:09}", 5 + i % 400).unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let size_mib = std::fs::metadata(&path).unwrap().len() / (1 << 20);
    let run = incident_lab(&["triage", path.to_str().unwrap(), "--json"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains(&format!("{rows} rows (csv)")), "{err}");
    assert!(
        err.contains(&format!(": {rows} requests in the window")),
        "{err}"
    );
    let peak: u64 = err
        .split("peak memory ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no peak memory in: {err}"));
    assert!(size_mib >= 100, "the export is {size_mib} MiB");
    assert!(
        peak < 48,
        "reading a {size_mib} MiB export took {peak} MiB: it does not stream"
    );
}
