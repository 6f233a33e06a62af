//! The `incident-lab` binary as a long-running process: its output read line by line, signals
//! sent to it, its exit awaited; and what it leaves on the machine.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A harness process started with `args`, its output lines read in the background.
pub struct Harness {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far (stdout and stderr interleaved).
    pub seen: Vec<String>,
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
    /// What a line seen so far says after `prefix` (the line trimmed; the value trimmed):
    /// `up`'s `service:`, `database:`, `WEBHOOK_SECRET=` …
    pub fn printed(&self, prefix: &str) -> String {
        self.seen
            .iter()
            .map(|l| l.trim())
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {:?}", self.seen))
            .trim()
            .to_owned()
    }

    pub fn start(args: &[&str]) -> Self {
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
    pub fn wait_for(&mut self, needle: &str) -> String {
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

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the exit (at most `limit`); returns the code and everything it printed.
    pub fn exit_within(mut self, limit: Duration) -> (Option<i32>, String, Duration) {
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

/// `data dir: DIR (postmaster pid N)` → (DIR, N).
pub fn cluster_of(line: &str) -> (PathBuf, u32) {
    let rest = line.split_once("data dir: ").unwrap().1;
    let (dir, pid) = rest.split_once(" (postmaster pid ").unwrap();
    (
        PathBuf::from(dir),
        pid.trim_end_matches(')').parse().unwrap(),
    )
}

/// Children of `parent` (from /proc).
pub fn children_of(parent: u32) -> Vec<u32> {
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
