//! Rails for a load aimed at a deployment this project did not start (shared staging, a
//! preview): the plan in words before anything is sent, a confirmation for a host that is not
//! loopback, and a hard cap on the planned rate that no scenario can exceed.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use loadgen::record::FAILED;
use loadgen::{Plan, Recording, Stream};

use crate::model::Abort;
use crate::report::Aborted;

/// Whether `base`'s host is this machine's loopback by its very name (`localhost`,
/// `127.0.0.0/8`, `::1`); a name is not resolved, so anything else counts as shared.
pub fn is_loopback(base: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(base) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    match host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// One stream's planned arrivals: originals plus the duplicates and redeliveries it declares.
fn with_copies(stream: &Stream) -> f64 {
    1.0 + (stream.delivery.duplicate_pct + stream.delivery.redeliver_pct) / 100.0
}

/// The most requests per second the plan sends, every stream at its own peak at once (an
/// upper bound: the provider's retries come on top, only as the service fails).
pub fn peak_rate(plan: &Plan) -> f64 {
    plan.streams
        .iter()
        .map(|s| Stream::peak_rate(&s.arrival, plan.duration) * with_copies(s))
        .sum()
}

/// The plan in words: the host, each stream's endpoint, peak rate and total, the duration.
pub fn describe(plan: &Plan) -> String {
    let mut out = format!(
        "the plan for {} ({} s, seed {}, shard {}):\n",
        plan.host,
        plan.duration.as_secs(),
        plan.seed,
        plan.shard
    );
    let schedule = plan.schedule();
    for (i, s) in plan.streams.iter().enumerate() {
        let total = schedule.iter().filter(|a| a.stream == i).count();
        out.push_str(&format!(
            "  {:<28} {:<34} peak {:>7.1}/s, {total} requests\n",
            s.name,
            s.endpoint.label(),
            Stream::peak_rate(&s.arrival, plan.duration) * with_copies(s),
        ));
    }
    out.push_str(&format!(
        "  all streams: at most {:.1}/s, {} requests (retries on top, only as the service fails)",
        peak_rate(plan),
        schedule.len()
    ));
    out
}

/// What stops a load before anything is sent.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// The plan's peak is over `--max-rate`.
    OverMaxRate { peak: f64, max: f64 },
    /// The host is not loopback and nobody said yes.
    NotConfirmed { host: String },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::OverMaxRate { peak, max } => write!(
                f,
                "the plan sends up to {peak:.1} requests/s at its peak, over --max-rate {max}: nothing was sent (lower the scenario's rates, or raise the cap)"
            ),
            Refused::NotConfirmed { host } => write!(
                f,
                "{host} is not loopback: nothing was sent. Read the plan above; to send it, run again with --yes"
            ),
        }
    }
}

/// Checks `plan` against the cap and, for a host that is not loopback, prints it and asks:
/// `yes` (`--yes`) goes ahead; otherwise a terminal is asked, and anything but `y` refuses.
/// Without a terminal nothing is sent.
pub fn check(plan: &Plan, max_rate: Option<f64>, yes: bool) -> Result<(), Refused> {
    let peak = peak_rate(plan);
    if let Some(max) = max_rate {
        if peak > max {
            return Err(Refused::OverMaxRate { peak, max });
        }
    }
    if is_loopback(&plan.host) {
        return Ok(());
    }
    eprintln!("{}", describe(plan));
    if yes {
        return Ok(());
    }
    let refused = Refused::NotConfirmed {
        host: plan.host.clone(),
    };
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(refused);
    }
    eprint!("send this load to {}? [y/N] ", plan.host);
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    match answer.trim() {
        "y" | "Y" | "yes" => Ok(()),
        _ => Err(refused),
    }
}

/// Why second `t` of the load (by intended send time) fails `abort`'s thresholds, if it does:
/// its failed share over all endpoints, or a budgeted endpoint's p95 over the multiple.
/// `None` when it holds, or nothing was answered in it yet.
pub fn failing(
    recording: &Recording,
    budgets: &[(String, f64)],
    t: u32,
    abort: &Abort,
) -> Option<String> {
    if let Some(max) = abort.failed_pct {
        let (mut answered, mut failed) = (0u64, 0u64);
        for e in recording.endpoints.values() {
            let n = e.windows.get(&t).map_or(0, |h| h.count());
            let f = e
                .category_windows
                .get(&t)
                .and_then(|c| c.get(FAILED))
                .copied()
                .unwrap_or(0);
            answered += n.max(f);
            failed += f;
        }
        let pct = failed as f64 * 100.0 / answered.max(1) as f64;
        if answered > 0 && pct >= max {
            return Some(format!(
                "{pct:.0} % of the requests failed ({failed} of {answered}; the threshold is {max} %)"
            ));
        }
    }
    if let Some(k) = abort.p95_over_budget {
        for (label, budget) in budgets {
            let p95 = recording
                .endpoints
                .get(label)
                .and_then(|e| e.windows.get(&t))
                .and_then(|h| h.quantile_ms(0.95));
            if let Some(p) = p95.filter(|p| *p > k * budget) {
                return Some(format!(
                    "{label} p95 {p:.0} ms, over {k} × its budget ({budget:.0} ms)"
                ));
            }
        }
    }
    None
}

/// Watches the load from its schedule's `zero` until `done`: once every whole second of the
/// last `abort.lasting` fails, stops the load ([`loadgen::stop`]) and says when and why.
pub async fn watch_abort(
    recording: &Mutex<Recording>,
    budgets: &[(String, f64)],
    abort: Abort,
    zero: tokio::time::Instant,
    done: &AtomicBool,
) -> Option<Aborted> {
    let n = abort.lasting.as_secs().max(1) as u32;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while !done.load(Ordering::Relaxed) {
        tick.tick().await;
        let now = zero.elapsed().as_secs_f64();
        // Seconds whose sends have all started: [0, whole).
        let whole = now.floor() as u32;
        if whole < n {
            continue;
        }
        let from = whole - n;
        let reasons: Option<Vec<String>> = {
            let rec = recording.lock().unwrap_or_else(|p| p.into_inner());
            (from..whole)
                .map(|t| failing(&rec, budgets, t, &abort))
                .collect()
        };
        if let Some(reasons) = reasons {
            loadgen::stop();
            let last = reasons.last().cloned().unwrap_or_default();
            return Some(Aborted {
                at_s: now,
                failing_from_s: from,
                reason: format!(
                    "every second from {from} s to {whole} s failed the [abort] threshold (at {} s: {last})",
                    whole - 1
                ),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn only_a_loopback_name_or_address_is_loopback() {
        for base in [
            "http://127.0.0.1:3000",
            "http://127.8.9.10",
            "http://localhost:8080/",
            "https://LOCALHOST",
            "http://[::1]:3000",
        ] {
            assert!(is_loopback(base), "{base}");
        }
        for base in [
            "http://0.0.0.0:3000",
            "https://staging.example.com",
            "http://10.0.0.5:3000",
            "http://localhost.example.com",
            "http://[::]:3000",
            "not a url",
        ] {
            assert!(!is_loopback(base), "{base}");
        }
    }
}
