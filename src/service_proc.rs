//! The reference service as a child process: one per arm, with its own runtime, killable.
//!
//! The service is this very binary's `service` subcommand (so `cargo run` builds everything a
//! run needs); set `INCIDENT_LAB_BIN` to run another `incident-lab` binary's. Its JSON log
//! (stderr) goes to a file in the run's output folder. `/metrics` scrapes are read with the
//! metric names of `incident_wire::metrics`, whatever the label order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use incident_wire::metrics as names;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The `incident-lab` binary whose `service` subcommand runs the reference service: the
/// override, else the running executable when it is `incident-lab`.
pub fn find_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("INCIDENT_LAB_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("INCIDENT_LAB_BIN={} is not a file", p.display());
    }
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    let is_harness = exe
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("incident-lab"));
    if is_harness {
        return Ok(exe);
    }
    bail!(
        "{} is not the incident-lab binary, so it cannot start the service: set INCIDENT_LAB_BIN to an incident-lab binary",
        exe.display()
    )
}

/// How much lower than the harness the system under test runs (`nice`). On one machine the
/// load generator shares the CPU with the service and Postgres; at equal priority a busy
/// Postgres delays the generator's timers and the generator, not the service, sets the pace.
/// At nice 10 the service and Postgres still get every cycle the generator leaves idle.
pub const SUT_NICE: &str = "10";

/// A command that runs `program` at [`SUT_NICE`] through coreutils' `nice`, which execs it
/// (same pid), or `program` itself where `nice` is missing.
pub fn niced(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    match which_nice() {
        Some(nice) => {
            let mut cmd = std::process::Command::new(nice);
            cmd.args(["-n", SUT_NICE]).arg(program);
            cmd
        }
        None => std::process::Command::new(program),
    }
}

fn which_nice() -> Option<PathBuf> {
    ["/usr/bin/nice", "/bin/nice"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// A running service process; dropping it kills the process and waits (briefly) until it is
/// gone.
pub struct ServiceProcess {
    child: Child,
    pid: u32,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

/// The variable that tells the service which process started it: it exits when that process
/// is gone (a harness killed with SIGKILL leaves no service behind).
pub const PARENT_ENV: &str = "INCIDENT_LAB_PARENT_PID";

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if crate::interrupt::alive(self.pid) {
            let _ = self.child.start_kill();
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            // Reap it here: the harness never leaves while a child it started is alive.
            while std::time::Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_)))
                    || !crate::interrupt::alive(self.pid)
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        crate::interrupt::unregister_child(self.pid);
    }
}

impl ServiceProcess {
    /// Starts `binary service` with `env` (and nothing else of this process's environment but
    /// PATH), logs to `log`, and waits until it prints its address.
    pub async fn start(
        binary: &Path,
        env: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = Command::from(niced(binary));
        cmd.arg("service")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env(PARENT_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {} service", binary.display()))?;
        let pid = child.id().unwrap_or(0);
        crate::interrupt::register_child(pid, "the service");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let wait = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return Ok::<_, std::io::Error>(Some(addr.trim().to_owned()));
                }
            }
            Ok(None)
        };
        match tokio::time::timeout(Duration::from_secs(30), wait).await {
            Ok(Ok(Some(base))) => Ok(Self { child, pid, base }),
            Ok(_) | Err(_) => {
                let _ = child.kill().await;
                crate::interrupt::unregister_child(pid);
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                bail!(
                    "the service did not start (see {}): {}",
                    log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            }
        }
    }

    /// SIGKILL at once (a crash mid-request), and wait until it is gone.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    pub async fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A cumulative Prometheus histogram: upper bounds (seconds or counts) → observations at or
/// below, plus the total count and sum.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PromHist {
    /// `(le, cumulative count)`, ascending by `le`, `+Inf` excluded.
    pub buckets: Vec<(f64, f64)>,
    pub count: f64,
    pub sum: f64,
}

impl PromHist {
    fn add_bucket(&mut self, le: f64, n: f64) {
        match self.buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, c)) => *c += n,
            None => {
                self.buckets.push((le, n));
                self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }

    /// Adds `other` (histograms of one route with different statuses).
    pub fn merge(&mut self, other: &PromHist) {
        for (le, n) in &other.buckets {
            self.add_bucket(*le, *n);
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    /// What was observed after `earlier` (a scrape of the same series taken before).
    pub fn since(&self, earlier: &PromHist) -> PromHist {
        let before = |le: f64| {
            earlier
                .buckets
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, n)| *n)
        };
        PromHist {
            buckets: self
                .buckets
                .iter()
                .map(|(le, n)| (*le, (n - before(*le)).max(0.0)))
                .collect(),
            count: (self.count - earlier.count).max(0.0),
            sum: (self.sum - earlier.sum).max(0.0),
        }
    }

    /// The bounds of the bucket the `q` quantile falls in (lower, upper; seconds): what the
    /// histogram knows of it, before interpolation. `None` when empty.
    pub fn bucket_of(&self, q: f64) -> Option<(f64, f64)> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q * self.count;
        let mut lower = 0.0;
        for (le, n) in &self.buckets {
            if *n >= rank {
                return Some((lower, *le));
            }
            lower = *le;
        }
        Some((lower, f64::INFINITY))
    }

    /// The `q` quantile as Prometheus's `histogram_quantile` reads it: linear inside the
    /// bucket it falls in; the highest finite bound when it falls in `+Inf`. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q * self.count;
        let (mut lower, mut below) = (0.0, 0.0);
        for (le, n) in &self.buckets {
            if *n >= rank {
                let inside = n - below;
                let frac = if inside > 0.0 {
                    (rank - below) / inside
                } else {
                    1.0
                };
                return Some(lower + (le - lower) * frac);
            }
            (lower, below) = (*le, *n);
        }
        self.buckets.last().map(|(le, _)| *le)
    }
}

/// One route's figures in a scrape.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RouteScrape {
    /// Request duration, every status merged (seconds).
    pub duration: PromHist,
    /// Requests by status.
    pub statuses: BTreeMap<String, f64>,
    /// Time waiting for the pool (seconds).
    pub pool_wait: PromHist,
    /// Rows written, total.
    pub writes: f64,
    /// External calls, total.
    pub calls: f64,
    /// The most rows one request wrote, and the most external calls one made (exact).
    #[serde(default)]
    pub writes_max: f64,
    #[serde(default)]
    pub calls_max: f64,
    /// Requests cut off at the function limit while working, when the service counts them
    /// (`None`: it does not say, and every 504 may have been).
    #[serde(default)]
    pub cut_working: Option<f64>,
    /// The most rows one statement wrote, when the service says.
    #[serde(default)]
    pub statement_max: Option<f64>,
}

/// Selected values of one `/metrics` scrape.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Scrape {
    /// Seconds since the load started.
    pub t: f64,
    pub pool_max: f64,
    pub pool_size: f64,
    pub pool_idle: f64,
    pub pool_waiters: f64,
    pub queue_queued: f64,
    pub queue_running: f64,
    /// `errors_total` by category (cumulative).
    pub errors: BTreeMap<String, f64>,
    /// Per route label (cumulative).
    pub routes: BTreeMap<String, RouteScrape>,
    /// Sidebar counts answers by source: live, cache, fallback (cumulative).
    pub counts_answers: BTreeMap<String, f64>,
    /// Slot ledger increments by outcome (cumulative).
    pub ledger: BTreeMap<String, f64>,
    /// Cron tick durations by runner (cumulative).
    pub cron_ticks: BTreeMap<String, PromHist>,
    /// The longest cron tick so far by runner, exactly (seconds).
    pub cron_tick_max: BTreeMap<String, f64>,
    /// The most pooled connections cron ticks held at once so far.
    pub cron_connections_max: f64,
    /// Behind a scale-out front: the instances, their pools and the pooler's figures.
    pub fleet: Option<FleetScrape>,
}

/// What a scale-out front adds to a scrape (see `incident_wire::metrics::FLEET_INSTANCES`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct FleetScrape {
    pub instances: f64,
    pub in_flight: f64,
    pub failed_starts: f64,
    /// Pooled connections in use, by instance index.
    pub pool_in_use: BTreeMap<u32, f64>,
    /// PgBouncer's figures, when a pooler runs.
    pub pooler: Option<PoolerScrape>,
}

/// PgBouncer's `SHOW POOLS` (gauges) and `SHOW STATS` (cumulative) for the run's database.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PoolerScrape {
    pub cl_active: f64,
    pub cl_waiting: f64,
    pub sv_active: f64,
    pub sv_idle: f64,
    /// Seconds the oldest waiting client has waited.
    pub maxwait_s: f64,
    /// Seconds clients waited for a server connection, in all (cumulative).
    pub wait_s: f64,
    /// Transactions served (cumulative).
    pub transactions: f64,
}

impl Scrape {
    /// Connections in use.
    pub fn pool_in_use(&self) -> f64 {
        (self.pool_size - self.pool_idle).max(0.0)
    }

    /// Rows written and external calls made, every route.
    pub fn writes_and_calls(&self) -> (f64, f64) {
        self.routes
            .values()
            .fold((0.0, 0.0), |(w, c), r| (w + r.writes, c + r.calls))
    }
}

/// One sample line: `name{labels} value`.
fn sample(line: &str) -> Option<(&str, BTreeMap<&str, &str>, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (series, ""),
    };
    let mut map = BTreeMap::new();
    // Label values here never hold `",` (routes, statuses, categories).
    for pair in labels.split("\",").filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once("=\"")?;
        map.insert(k, v.trim_end_matches('"'));
    }
    Some((name, map, value))
}

/// Reads the series the harness uses from Prometheus text. Text concatenated from several
/// instances (a scale-out front's `/metrics`) reads as one service: counters, histograms and
/// pool gauges add up; the database-wide gauges (queue depth) and the per-instance maxima
/// (cron ticks) take the largest.
pub fn parse_metrics(text: &str, t: f64) -> Scrape {
    let mut s = Scrape {
        t,
        ..Scrape::default()
    };
    let hist = |h: &mut PromHist, suffix: &str, labels: &BTreeMap<&str, &str>, v: f64| match suffix
    {
        "_bucket" => {
            if let Some(le) = labels.get("le").and_then(|l| l.parse::<f64>().ok()) {
                if le.is_finite() {
                    h.add_bucket(le, v);
                }
            }
        }
        "_count" => h.count += v,
        "_sum" => h.sum += v,
        _ => {}
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, labels, v)) = sample(line) else {
            continue;
        };
        let route = labels.get("route").map(|r| r.to_string());
        let split = |base: &str| name.strip_prefix(base).filter(|r| r.starts_with('_'));
        if let (Some(suffix), Some(route)) = (split(names::REQUEST_DURATION), &route) {
            let r = s.routes.entry(route.clone()).or_default();
            hist(&mut r.duration, suffix, &labels, v);
            if suffix == "_count" {
                if let Some(status) = labels.get("status") {
                    *r.statuses.entry(status.to_string()).or_default() += v;
                }
            }
        } else if let (Some(suffix), Some(route)) = (split(names::POOL_WAIT), &route) {
            hist(
                &mut s.routes.entry(route.clone()).or_default().pool_wait,
                suffix,
                &labels,
                v,
            );
        } else if let (Some("_sum"), Some(route)) = (split(names::DB_WRITES), &route) {
            s.routes.entry(route.clone()).or_default().writes += v;
        } else if let (Some("_sum"), Some(route)) = (split(names::EXTERNAL_CALLS), &route) {
            s.routes.entry(route.clone()).or_default().calls += v;
        } else if let (names::DB_STATEMENT_MAX, Some(route)) = (name, &route) {
            let r = s.routes.entry(route.clone()).or_default();
            r.statement_max = Some(r.statement_max.unwrap_or(0.0).max(v));
        } else if let (names::CUT_OFF_WORKING, Some(route)) = (name, &route) {
            let r = s.routes.entry(route.clone()).or_default();
            r.cut_working = Some(r.cut_working.unwrap_or(0.0) + v);
        } else if let (names::DB_WRITES_MAX, Some(route)) = (name, &route) {
            let r = s.routes.entry(route.clone()).or_default();
            r.writes_max = r.writes_max.max(v);
        } else if let (names::EXTERNAL_CALLS_MAX, Some(route)) = (name, &route) {
            let r = s.routes.entry(route.clone()).or_default();
            r.calls_max = r.calls_max.max(v);
        } else if name == names::ERRORS {
            if let Some(c) = labels.get("category") {
                *s.errors.entry(c.to_string()).or_default() += v;
            }
        } else if name == names::LEDGER {
            if let Some(outcome) = labels.get("outcome") {
                *s.ledger.entry(outcome.to_string()).or_default() += v;
            }
        } else if name == names::COUNTS_ANSWERS {
            if let Some(source) = labels.get("source") {
                *s.counts_answers.entry(source.to_string()).or_default() += v;
            }
        } else if let (Some(suffix), Some(runner)) = (split(names::CRON_TICK), labels.get("runner"))
        {
            hist(
                s.cron_ticks.entry(runner.to_string()).or_default(),
                suffix,
                &labels,
                v,
            );
        } else if name == names::CRON_TICK_MAX {
            if let Some(runner) = labels.get("runner") {
                let max = s.cron_tick_max.entry(runner.to_string()).or_default();
                *max = max.max(v);
            }
        } else if name == names::CRON_CONNECTIONS_MAX {
            s.cron_connections_max = s.cron_connections_max.max(v);
        } else if name == names::QUEUE_DEPTH {
            match labels.get("status").copied() {
                Some("queued") => s.queue_queued = s.queue_queued.max(v),
                Some("running") => s.queue_running = s.queue_running.max(v),
                _ => {}
            }
        } else if name == names::POOL_MAX {
            s.pool_max += v;
        } else if name == names::POOL_SIZE {
            s.pool_size += v;
        } else if name == names::POOL_IDLE {
            s.pool_idle += v;
        } else if name == names::POOL_WAITERS {
            s.pool_waiters += v;
        } else if name.starts_with("fleet_") {
            let f = s.fleet.get_or_insert_with(FleetScrape::default);
            match name {
                names::FLEET_INSTANCES => f.instances = v,
                names::FLEET_IN_FLIGHT => f.in_flight = v,
                names::FLEET_FAILED_STARTS => f.failed_starts = v,
                names::FLEET_INSTANCE_POOL_IN_USE => {
                    if let Some(i) = labels.get("instance").and_then(|i| i.parse().ok()) {
                        f.pool_in_use.insert(i, v);
                    }
                }
                _ => {}
            }
        } else if name.starts_with("pooler_") {
            let p = s
                .fleet
                .get_or_insert_with(FleetScrape::default)
                .pooler
                .get_or_insert_with(PoolerScrape::default);
            match name {
                names::POOLER_CL_ACTIVE => p.cl_active = v,
                names::POOLER_CL_WAITING => p.cl_waiting = v,
                names::POOLER_SV_ACTIVE => p.sv_active = v,
                names::POOLER_SV_IDLE => p.sv_idle = v,
                names::POOLER_MAXWAIT => p.maxwait_s = v,
                names::POOLER_WAIT => p.wait_s = v,
                names::POOLER_XACTS => p.transactions = v,
                _ => {}
            }
        }
    }
    s
}

#[cfg(test)]
mod tests;
