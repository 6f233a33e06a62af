//! `incident-lab up`: one arm's world for an engineer. What it prints must work as pasted —
//! the signed webhook, the session cookie, the live flag flip — and Ctrl-C must tear it all
//! down.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::harness::{cluster_of, Harness};
use common::{port_open, process_alive};
use nix::sys::signal::Signal;

/// One stack at a time: two seeding and serving at once on a small machine make the all-off
/// arm's live counts time out (the incident itself), and the pasted page fails.
static ONE_STACK_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_stack() -> std::sync::MutexGuard<'static, ()> {
    ONE_STACK_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The printed line that starts with `prefix` (after trimming), with the prefix removed.
fn printed<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .map(|l| l.trim())
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{}", lines.join("\n")))
        .trim()
}

/// The printed command line that starts with `start`.
fn command<'a>(lines: &'a [String], start: &str) -> &'a str {
    lines
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no command starting {start:?} in:\n{}", lines.join("\n")))
}

/// Runs a printed shell line as a user would paste it, with the HTTP status appended to what it
/// prints; returns (status, body).
fn paste(line: &str) -> (u16, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("{line} -w '\\n%{{http_code}}'"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        code.trim().parse().unwrap_or_else(|_| {
            panic!(
                "{line}\nprinted {text:?}, stderr {}",
                String::from_utf8_lossy(&out.stderr)
            )
        }),
        body.to_owned(),
    )
}

/// The smoke scenario's all-off arm brought up: the pasted webhook is accepted and stored, the
/// cookie opens the inbox, the flag flip takes effect live, an unknown arm is refused with the
/// arms listed, and Ctrl-C stops everything (exit 0, no cluster, no service).
#[test]
fn up_prints_what_works_as_pasted_and_ctrl_c_cleans_up() {
    let _turn = one_stack();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke.toml");
    let scenario = scenario.to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let wrong = common::incident_lab(&["up", scenario, "--arm", "nope", "--postgres", "local"]);
    assert_eq!(wrong.status.code(), Some(2));
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        said.contains("no arm \"nope\"") && said.contains("all-on"),
        "{said}"
    );

    let mut h = Harness::start(&[
        "up",
        scenario,
        "--arm",
        "all-off",
        "--postgres",
        "local",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let (dir, postmaster) = cluster_of(&h.wait_for("data dir: "));
    h.wait_for("up; Ctrl-C");
    let lines = h.seen.clone();
    let service = printed(&lines, "service:").to_owned();
    let port: u16 = service.rsplit(':').next().unwrap().parse().unwrap();
    assert!(printed(&lines, "arm all-off:").contains("INBOXXIA_EMAIL_SENT_ASYNC=false"));

    // The cookie signs in: the inbox (its conversations), or — this is a legacy arm — the
    // incident itself, the counts query cut off by the statement timeout (a 500 tagged
    // db_timeout, which only a signed-in request reaches; a signed-out one gets the login page).
    let cookie_line = command(&lines, "curl -s -H 'Cookie:");
    let (status, page) = paste(&format!("{cookie_line} -D -"));
    let signed_in = (status == 200 && page.contains("\"conversations\""))
        || (status == 500
            && page
                .to_ascii_lowercase()
                .contains("x-error-category: db_timeout"));
    assert!(signed_in, "the pasted cookie: {status} {page}");

    let webhook_line = command(&lines, "ts=$(date +%s)");
    let (status, body) = paste(webhook_line);
    assert!(
        status == 200 || status == 202,
        "the pasted webhook: {status} {body}"
    );
    let db_url = printed(&lines, "database:").to_owned();
    let stored = Command::new("psql")
        .args([
            &db_url,
            "-tAc",
            "SELECT count(*) FROM messages WHERE provider_event_id LIKE '%up-%'",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&stored.stdout).trim(),
        "1",
        "{}",
        String::from_utf8_lossy(&stored.stderr)
    );

    let flip_line = command(&lines, "curl -s -X PUT");
    let (status, flags) = paste(flip_line);
    assert_eq!(status, 200, "{flags}");
    assert!(
        flags.contains("\"INBOXXIA_EMAIL_SENT_ASYNC\":true"),
        "{flags}"
    );

    h.signal(Signal::SIGINT);
    let (code, output, _) = h.exit_within(Duration::from_secs(30));

    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("stopped: cleaned up"), "{output}");
    assert!(!process_alive(postmaster), "{output}");
    assert!(!dir.exists(), "{output}");
    assert!(!port_open(port), "the service still listens:\n{output}");
}

/// `curl -s URL EXTRA…`: the body.
fn curl(url: &str, extra: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "30"])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The parts apart, as docker-compose runs them: `incident-lab fakes` alone, and `up --fakes
/// URL`, which tells those fakes its disconnected workspaces and points its service at them —
/// an EMAIL_SENT applied by the worker reaches their GHL. Ctrl-C stops each (exit 0).
#[test]
fn up_uses_fakes_that_run_apart() {
    let _turn = one_stack();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke.toml");
    let scenario = scenario.to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut fakes = Harness::start(&["fakes", scenario]);
    let base = fakes
        .wait_for("fakes: ")
        .trim()
        .trim_start_matches("fakes:")
        .trim()
        .to_owned();
    fakes.wait_for("up; Ctrl-C");
    let knobs = |base: &str| -> serde_json::Value {
        serde_json::from_str(&curl(&format!("{base}/_control/unipile"), &[])).unwrap()
    };
    assert_eq!(
        knobs(&base)["disconnected_workspaces"],
        serde_json::json!([])
    );

    let mut up = Harness::start(&[
        "up",
        scenario,
        "--arm",
        "all-on",
        "--postgres",
        "local",
        "--fakes",
        &base,
        "--out",
        out.path().to_str().unwrap(),
    ]);
    up.wait_for("up; Ctrl-C");
    let lines = up.seen.clone();
    assert_eq!(
        printed(&lines, "fakes:").split_whitespace().next(),
        Some(base.as_str())
    );
    let told = knobs(&base)["disconnected_workspaces"]
        .as_array()
        .unwrap()
        .len();
    assert!(
        told > 0,
        "the stack told the fakes no disconnected workspace"
    );

    let (status, body) = paste(command(&lines, "ts=$(date +%s)"));
    assert!(status == 200 || status == 202, "{status} {body}");
    let service = printed(&lines, "service:").to_owned();
    let cron = printed(&lines, "CRON_SECRET=").to_owned();
    curl(
        &format!("{service}/api/cron/background-jobs"),
        &["-H", &format!("Authorization: Bearer {cron}")],
    );
    let counters: serde_json::Value =
        serde_json::from_str(&curl(&format!("{base}/_counters"), &[])).unwrap();
    assert!(
        counters["by_outcome"]["ghl"]["ok"].as_u64().unwrap_or(0) >= 1,
        "{counters}"
    );

    up.signal(Signal::SIGINT);
    let (code, output, _) = up.exit_within(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{output}");
    fakes.signal(Signal::SIGINT);
    let (code, output, _) = fakes.exit_within(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{output}");
}
