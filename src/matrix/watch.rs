//! What runs beside an arm's load: a `/metrics` scrape every second into the timeline, a
//! progress line that says which stage the arm is in, and the CPU the harness and the
//! machine used.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loadgen::Recording;

use crate::service_proc::{parse_metrics, Scrape};

/// Reads `/metrics` once; `None` when the service did not answer within 2 s.
pub(crate) async fn scrape(http: &reqwest::Client, base: &str, t: f64) -> Option<Scrape> {
    let text = http
        .get(format!("{base}{}", incident_wire::ops::METRICS))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(parse_metrics(&text, t))
}

/// The stage an arm is in, for the progress line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Stage {
    Load,
    Drain,
}

/// The scraper and progress display of one arm; stopped when dropped.
pub(crate) struct Watcher {
    task: tokio::task::JoinHandle<()>,
    stage: Arc<Mutex<(Stage, Instant)>>,
    pub timeline: Arc<Mutex<Vec<Scrape>>>,
}

impl Watcher {
    /// Starts watching the service at `base`; times count from `load_start`.
    pub fn start(
        http: reqwest::Client,
        base: String,
        arm: String,
        duration: Duration,
        load_start: Instant,
        recording: Arc<Mutex<Recording>>,
    ) -> Self {
        let timeline = Arc::new(Mutex::new(Vec::<Scrape>::new()));
        let stage = Arc::new(Mutex::new((Stage::Load, load_start)));
        let task = {
            let (timeline, stage) = (timeline.clone(), stage.clone());
            tokio::spawn(async move {
                let mut progress = crate::progress::Progress::start();
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let t = load_start.elapsed().as_secs_f64();
                    let last = scrape(&http, &base, t).await;
                    if let Some(s) = &last {
                        timeline.lock().expect("timeline lock").push(s.clone());
                    }
                    let (n, p95) = {
                        let rec = recording.lock().expect("recording lock");
                        let p95 = rec
                            .endpoints
                            .get(crate::model::WEBHOOK_LABEL)
                            .and_then(|e| e.latency.quantile_ms(0.95));
                        (rec.requests(), p95)
                    };
                    let (now, since) = *stage.lock().expect("stage lock");
                    let what = match now {
                        Stage::Load => format!(
                            "load {t:>4.0}/{:.0} s, {n} requests ({:.0}/s), webhook p95 {}",
                            duration.as_secs_f64(),
                            n as f64 / t.max(1.0),
                            crate::report::ms(p95)
                        ),
                        Stage::Drain => format!(
                            "drain {:>3.0} s, {} jobs left",
                            since.elapsed().as_secs_f64(),
                            last.as_ref()
                                .map_or(0.0, |s| s.queue_queued + s.queue_running)
                        ),
                    };
                    progress.set(format!("  {arm}: {what}"));
                }
            })
        };
        Self {
            task,
            stage,
            timeline,
        }
    }

    /// The progress line now says `stage`.
    pub fn set_stage(&self, stage: Stage) {
        *self.stage.lock().expect("stage lock") = (stage, Instant::now());
    }

    /// Pushes a scrape taken elsewhere (the drain loop's).
    pub fn push(&self, s: Scrape) {
        self.timeline.lock().expect("timeline lock").push(s);
    }

    /// The scrapes so far.
    pub fn scrapes(&self) -> Vec<Scrape> {
        self.timeline.lock().expect("timeline lock").clone()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// CPU counters at one moment: this process's and the whole machine's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    at: Instant,
    /// This process, user + system, in clock ticks.
    process_ticks: u64,
    /// The machine: (busy, total) ticks over every core.
    machine: (u64, u64),
}

/// The machine's CPU time so far, every core, in clock ticks (`/proc/stat`'s first line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MachineTicks {
    /// user, nice, system, idle, iowait, irq, softirq and steal.
    pub total: u64,
    /// idle and iowait.
    pub idle: u64,
    /// Time a virtual machine's cores were ready to run and the hypervisor ran something else.
    pub steal: u64,
}

impl MachineTicks {
    /// `None` where `/proc/stat` cannot be read.
    pub fn now() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    fn parse(stat: &str) -> Option<Self> {
        let v: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        Some(Self {
            total: v.iter().take(8).sum(),
            idle: v.get(3)? + v.get(4).unwrap_or(&0),
            steal: v.get(7).copied().unwrap_or(0),
        })
    }

    /// The share of the machine's CPU time from `earlier` to `self` that the hypervisor took
    /// (steal), in %; `None` when no time passed.
    pub fn steal_pct_since(&self, earlier: &MachineTicks) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total).filter(|t| *t > 0)?;
        Some(self.steal.saturating_sub(earlier.steal) as f64 * 100.0 / total as f64)
    }
}

/// Linux's `USER_HZ`: the unit of `/proc/*/stat` times (100 on every mainstream platform).
const USER_HZ: f64 = 100.0;

impl CpuSample {
    /// Reads `/proc`; zeros where it cannot (the figures then say 0 %).
    pub fn now() -> Self {
        let process_ticks = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| {
                // Fields after the command name (which may hold spaces) in parentheses.
                let rest = s.rsplit_once(')')?.1;
                let f: Vec<&str> = rest.split_whitespace().collect();
                Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0);
        let machine = MachineTicks::now()
            .map(|t| (t.total - t.idle, t.total))
            .unwrap_or((0, 0));
        Self {
            at: Instant::now(),
            process_ticks,
            machine,
        }
    }

    /// `(process % of one core, machine % of all cores)` from `earlier` to `self`.
    pub fn since(&self, earlier: &CpuSample) -> (f64, f64) {
        let wall = self.at.duration_since(earlier.at).as_secs_f64().max(1e-3);
        let process =
            self.process_ticks.saturating_sub(earlier.process_ticks) as f64 / USER_HZ / wall;
        let busy = self.machine.0.saturating_sub(earlier.machine.0) as f64;
        let total = self.machine.1.saturating_sub(earlier.machine.1) as f64;
        let machine = if total > 0.0 { busy / total } else { 0.0 };
        (process * 100.0, machine * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/stat`'s first line as Linux writes it: steal is the eighth figure, and its share
    /// is of every tick in between (guest time is already in user's, so it is not added).
    #[test]
    fn steal_is_read_from_proc_stat() {
        let before = MachineTicks::parse(
            "cpu  100 0 50 800 10 0 15 20 0 0\ncpu0 50 0 25 400 5 0 10 10 0 0\n",
        )
        .unwrap();
        assert_eq!(
            before,
            MachineTicks {
                total: 995,
                idle: 810,
                steal: 20
            }
        );
        let after = MachineTicks::parse("cpu  170 0 70 900 10 0 25 70 9 9\n").unwrap();
        assert_eq!(after.steal_pct_since(&before), Some(20.0));
        assert_eq!(before.steal_pct_since(&before), None);
        assert_eq!(MachineTicks::parse("intr 1 2 3\n"), None);
        assert!(MachineTicks::now().is_some(), "this is Linux");
    }

    #[test]
    fn cpu_use_of_a_busy_loop_is_seen() {
        let before = CpuSample::now();
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let (process, machine) = CpuSample::now().since(&before);
        // A spinning thread is one core's worth of CPU (allow for a shared, noisy machine).
        assert!(process > 30.0, "{process}");
        assert!(machine > 0.0 && machine <= 100.0, "{machine}");
    }
}
