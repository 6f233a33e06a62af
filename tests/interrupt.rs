//! Stopping a run, with real processes: a signal mid-arm stops the matrix within seconds,
//! marks the arm interrupted, keeps the reports and leaves no Postgres, service or directory
//! behind; a second signal says what remains; a harness killed outright leaves a cluster that
//! the next run removes, and a service that stops by itself.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::harness::{children_of, cluster_of, Harness};
use common::process_alive;
use nix::sys::signal::Signal;
use serde_json::Value;

/// These tests one at a time: every run removes the clusters that dead runs left, so a run
/// started by one test would remove the cluster another test killed its harness to leave.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn smoke() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios/smoke.toml")
        .display()
        .to_string()
}

/// Starts the smoke matrix and waits until the first arm's load runs; returns the harness,
/// its cluster (directory, postmaster) and its other children (the service).
fn matrix_under_load(out: &Path) -> (Harness, PathBuf, u32, Vec<u32>) {
    let mut h = Harness::start(&[
        "matrix",
        &smoke(),
        "--postgres",
        "local",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (dir, postmaster) = cluster_of(&h.wait_for("data dir: "));
    h.wait_for("pre-phase-53: load");
    let children: Vec<u32> = children_of(h.child.id())
        .into_iter()
        .filter(|pid| *pid != postmaster)
        .collect();
    assert!(!children.is_empty(), "the service runs as a child");
    (h, dir, postmaster, children)
}

fn assert_nothing_left(dir: &Path, postmaster: u32, children: &[u32], output: &str) {
    assert!(
        !process_alive(postmaster),
        "postmaster {postmaster} survived:\n{output}"
    );
    for pid in children {
        assert!(!process_alive(*pid), "child {pid} survived:\n{output}");
    }
    assert!(!dir.exists(), "{} survived:\n{output}", dir.display());
}

fn interrupted_report(out: &Path) -> Value {
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["verdict"], "fail");
    let arms = report["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 1, "only the arm that was running");
    assert_eq!(arms[0]["name"], "pre-phase-53");
    assert_eq!(arms[0]["status"], "interrupted");
    report
}

/// One Ctrl-C mid-arm: exit 130 within seconds, the arm reported as interrupted (not judged),
/// nothing left behind.
#[test]
fn one_sigint_mid_arm_stops_the_run_and_leaves_nothing() {
    let _serial = one_at_a_time();
    let out = tempfile::tempdir().unwrap();
    let (h, dir, postmaster, children) = matrix_under_load(out.path());

    h.signal(Signal::SIGINT);
    let (code, output, took) = h.exit_within(Duration::from_secs(20));

    assert_eq!(code, Some(130), "{output}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        !output.contains("[2/3]"),
        "no next arm after Ctrl-C:\n{output}"
    );
    assert!(
        !output.contains("caught ctrl-c"),
        "goose did not handle it:\n{output}"
    );
    assert_nothing_left(&dir, postmaster, &children, &output);
    interrupted_report(out.path());
}

/// Two Ctrl-Cs 100 ms apart (what people do when the first seems ignored): the second says
/// what is still being cleaned up; the harness still exits 130 with nothing left.
#[test]
fn two_sigints_say_what_remains_and_still_clean_up() {
    let _serial = one_at_a_time();
    let out = tempfile::tempdir().unwrap();
    let (h, dir, postmaster, children) = matrix_under_load(out.path());

    h.signal(Signal::SIGINT);
    std::thread::sleep(Duration::from_millis(100));
    h.signal(Signal::SIGINT);
    let (code, output, _) = h.exit_within(Duration::from_secs(20));

    assert_eq!(code, Some(130), "{output}");
    assert!(output.contains("still cleaning up"), "{output}");
    assert_nothing_left(&dir, postmaster, &children, &output);
    interrupted_report(out.path());
}

/// SIGTERM (a CI cancellation): exit 143, nothing left.
#[test]
fn sigterm_stops_the_run_with_143() {
    let _serial = one_at_a_time();
    let out = tempfile::tempdir().unwrap();
    let (h, dir, postmaster, children) = matrix_under_load(out.path());

    h.signal(Signal::SIGTERM);
    let (code, output, _) = h.exit_within(Duration::from_secs(20));

    assert_eq!(code, Some(143), "{output}");
    assert_nothing_left(&dir, postmaster, &children, &output);
    interrupted_report(out.path());
}

/// `ceiling --soak` runs for minutes: a signal during the soak stops the load at once, exits
/// 130 and leaves no echo server behind.
#[test]
fn sigint_stops_the_ceilings_soak() {
    let _serial = one_at_a_time();
    let out = tempfile::tempdir().unwrap();
    let mut h = Harness::start(&[
        "ceiling",
        "--no-database",
        "--rates",
        "100",
        "--step",
        "1s",
        "--soak",
        "10m",
        "--soak-rate",
        "200",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    h.wait_for("soak: the generator at 200/s");
    let children = children_of(h.child.id());
    assert!(!children.is_empty(), "the echo server runs as a child");

    h.signal(Signal::SIGINT);
    let (code, output, _) = h.exit_within(Duration::from_secs(20));

    assert_eq!(code, Some(130), "{output}");
    for pid in children {
        assert!(!process_alive(pid), "child {pid} survived:\n{output}");
    }
}

/// A harness killed outright (SIGKILL) cleans nothing: its service stops by itself, and the
/// next run removes the cluster it left and says so.
#[test]
fn a_cluster_left_by_a_killed_run_is_removed_by_the_next() {
    let _serial = one_at_a_time();
    let out = tempfile::tempdir().unwrap();
    let (h, dir, postmaster, children) = matrix_under_load(out.path());

    h.signal(Signal::SIGKILL);
    let (_, output, _) = h.exit_within(Duration::from_secs(5));
    assert!(dir.exists() && process_alive(postmaster), "{output}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while children.iter().any(|p| process_alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        children.iter().all(|p| !process_alive(*p)),
        "the service outlived its harness"
    );

    let mut next = Harness::start(&["db", "up", "--postgres", "local", "--scale", "smoke"]);
    next.wait_for("ready;");
    next.signal(Signal::SIGINT);
    let (code, output, _) = next.exit_within(Duration::from_secs(20));

    assert_eq!(code, Some(0), "{output}");
    let named = format!(
        "cleanup: removed a Postgres cluster an earlier run left behind: {}",
        dir.display()
    );
    assert!(output.contains(&named), "{output}");
    assert!(!dir.exists() && !process_alive(postmaster), "{output}");
}
