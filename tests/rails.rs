//! Rails for a load aimed at shared staging: a host that is not loopback gets the plan and
//! nothing else without `--yes`; `--max-rate` refuses a scenario that plans more. Each is shown
//! able to let the load through, so the refusal is the rail's and not a failure elsewhere.

mod common;

use std::net::TcpListener;
use std::process::Output;
use std::time::{Duration, Instant};

const SMOKE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/smoke.toml");

/// `run smoke --arm all-on --target TARGET EXTRA…` with the secrets set and no terminal.
fn run(target: &str, extra: &[&str]) -> Output {
    run_scenario(SMOKE, target, extra)
}

/// `run SCENARIO --arm all-on --target TARGET EXTRA…` with the secrets set and no terminal.
fn run_scenario(scenario: &str, target: &str, extra: &[&str]) -> Output {
    common::against_target(&["run", scenario, "--arm", "all-on", "--target", target])
        .args(extra)
        .output()
        .unwrap()
}

/// Whether anything connected to `listener` within a second.
fn was_reached(listener: &TcpListener) -> bool {
    listener.set_nonblocking(true).unwrap();
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        if listener.accept().is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_host_that_is_not_loopback_gets_the_plan_and_nothing_else_without_yes() {
    // 0.0.0.0 reaches this machine, but by its name it is not loopback.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("http://0.0.0.0:{}", listener.local_addr().unwrap().port());

    let refused = run(&target, &[]);

    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(said.contains(&format!("the plan for {target}")), "{said}");
    assert!(said.contains("POST /api/webhooks/email"), "{said}");
    assert!(said.contains("all streams: at most"), "{said}");
    assert!(
        said.contains("nothing was sent") && said.contains("--yes"),
        "{said}"
    );
    assert!(
        !was_reached(&listener),
        "a refused run connected to the target"
    );

    // With --yes the same run goes to the host (which is no service: exit 3).
    let sent = run(&target, &["--yes"]);
    assert!(was_reached(&listener), "--yes did not reach the target");
    assert_eq!(
        sent.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
}

#[test]
fn a_scenario_over_the_rate_cap_is_refused_before_anything_is_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());

    let refused = run(&target, &["--max-rate", "5"]);

    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(
        said.contains("over --max-rate 5: nothing was sent"),
        "{said}"
    );
    assert!(
        !was_reached(&listener),
        "a refused run connected to the target"
    );

    // A cap above the scenario's peak lets it through (to a listener that is no service).
    let _ = run(&target, &["--max-rate", "100000"]);
    assert!(
        was_reached(&listener),
        "a run under the cap did not reach the target"
    );
}

/// A service that answers every request 500 (with a /healthz and an empty /metrics, as a
/// service the harness did not start may have): the smoke load, with `[abort]` at 50 % failed
/// for 2 s, stops within those 2 s and a second, sends a fraction of its schedule, and exits 5
/// with the report saying when and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_threshold_stops_a_failing_load_within_its_window_and_a_second() {
    use axum::http::StatusCode;
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(|| async { "" }))
        .fallback(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "down") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let smoke =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/smoke.toml"))
            .unwrap();
    let path = dir.path().join("abort.toml");
    std::fs::write(
        &path,
        format!("{smoke}\n[abort]\nfailed_share = \"50%\"\nfor = \"2s\"\n"),
    )
    .unwrap();
    let out = dir.path().join("out");

    let (path, out2) = (path.clone(), out.clone());
    let run = tokio::task::spawn_blocking(move || {
        run_scenario(
            path.to_str().unwrap(),
            &target,
            &["--out", out2.to_str().unwrap()],
        )
    })
    .await
    .unwrap();

    let said =
        String::from_utf8_lossy(&run.stderr).into_owned() + &String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(5), "{said}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let arm = &report["arms"][0];
    let aborted = &arm["aborted"];
    let at = aborted["at_s"].as_f64().unwrap();
    assert!((2.0..=3.0).contains(&at), "stopped at {at} s: {aborted}");
    assert!(
        aborted["reason"]
            .as_str()
            .unwrap()
            .contains("% of the requests failed"),
        "{aborted}"
    );
    let check = arm["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["name"]
                .as_str()
                .unwrap()
                .contains("no abort threshold crossed")
        })
        .unwrap();
    assert_eq!(check["passed"], false, "{check}");
    // The smoke schedule is 20 s long: a stop at 2–3 s sent a fraction of it.
    let sent: u64 = arm["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["requests"].as_u64().unwrap())
        .sum();
    assert!((1..300).contains(&sent), "{sent} requests sent");
}
