//! Stopping a run, with real processes: a signal mid-arm stops the matrix within seconds,
//! marks the arm interrupted, keeps the reports and leaves no Postgres, service or directory
//! behind; a second signal says what remains; a harness killed outright leaves a cluster that
//! the next run removes, and a service that stops by itself.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::process_alive;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// A harness process started with `args`, its output lines read in the background.
struct Harness {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

/// A test that fails midway still stops its harness (and so everything the harness started).
impl Drop for Harness {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Harness {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_incident-lab"))
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("INCIDENT_LAB_POSTGRES")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (at most 90 s) for a line containing `needle`; returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
        }
        panic!("no line with {needle:?}; saw:\n{}", self.seen.join("\n"));
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the exit (at most `limit`); returns the code and everything it printed.
    fn exit_within(mut self, limit: Duration) -> (Option<i32>, String, Duration) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "still running {limit:?} after the signal; saw:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = started.elapsed();
        std::thread::sleep(Duration::from_millis(200));
        self.seen.extend(self.lines.try_iter());
        (status.code(), self.seen.join("\n"), took)
    }
}

fn smoke() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios/smoke.toml")
        .display()
        .to_string()
}

/// `data dir: DIR (postmaster pid N)` → (DIR, N).
fn cluster_of(line: &str) -> (PathBuf, u32) {
    let rest = line.split_once("data dir: ").unwrap().1;
    let (dir, pid) = rest.split_once(" (postmaster pid ").unwrap();
    (
        PathBuf::from(dir),
        pid.trim_end_matches(')').parse().unwrap(),
    )
}

/// Children of `parent` (from /proc).
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                })
                == Some(parent)
        })
        .collect()
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
    let out = tempfile::tempdir().unwrap();
    let (h, dir, postmaster, children) = matrix_under_load(out.path());

    h.signal(Signal::SIGTERM);
    let (code, output, _) = h.exit_within(Duration::from_secs(20));

    assert_eq!(code, Some(143), "{output}");
    assert_nothing_left(&dir, postmaster, &children, &output);
    interrupted_report(out.path());
}

/// A harness killed outright (SIGKILL) cleans nothing: its service stops by itself, and the
/// next run removes the cluster it left and says so.
#[test]
fn a_cluster_left_by_a_killed_run_is_removed_by_the_next() {
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
