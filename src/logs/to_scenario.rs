//! `scenario from-logs`: a scenario whose streams replay an export's recorded per-second
//! arrivals, with the production figures beside them in an `[observed]` section.
//!
//! Everything but the load comes from a base scenario (the dataset, Postgres's and the
//! service's limits, the providers, the budgets and the arms): the export says what arrived,
//! not how the world was built. Each replayed stream keeps the base's session settings for its
//! endpoint; it has no retries or redeliveries of its own, since the provider's re-sends are in
//! the recording already.

use std::collections::BTreeMap;
use std::time::Duration;

use super::summary::Summary;
use crate::model::{Observed, ObservedEndpoint, ObservedMinute};

/// What a replay faster than production does with the recorded arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arrivals {
    /// 1 in `speed` of them, evenly: the world sees production's arrival rate (the load,
    /// arrival rate × service time against capacity, is the same at every speed).
    Thin,
    /// Every one, at `speed` times production's rate.
    All,
}

impl Arrivals {
    /// The share of the recorded arrivals sent at `speed`.
    pub fn kept(self, speed: f64) -> f64 {
        match self {
            Arrivals::Thin if speed > 1.0 => 1.0 / speed,
            _ => 1.0,
        }
    }
}

/// `counts` (arrivals per recorded second) keeping `kept` of them, evenly: the kept arrivals
/// through second k are the recorded ones through k times `kept`, rounded, so any stretch of
/// seconds keeps its share to within one request and the result is the same every time.
pub fn thin(counts: &[u32], kept: f64) -> Vec<u32> {
    if kept >= 1.0 {
        return counts.to_vec();
    }
    let mut recorded = 0u64;
    let mut sent = 0u64;
    counts
        .iter()
        .map(|&n| {
            recorded += u64::from(n);
            let through = (recorded as f64 * kept).round() as u64;
            let now = through - sent;
            sent = through;
            now as u32
        })
        .collect()
}

/// What `from-logs` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    pub speed: f64,
    pub arrivals: Arrivals,
    pub function_limit: Duration,
    /// The command line, for the file's first comment.
    pub command: String,
}

/// The scenario text: `base` (a scenario file's text) with its load replaced by `summary`'s.
pub fn scenario_text(
    summary: &Summary,
    base: &str,
    base_name: &str,
    opts: &Options,
) -> Result<String, String> {
    if !(opts.speed.is_finite() && opts.speed > 0.0) {
        return Err(format!("--speed {} must be more than 0", opts.speed));
    }
    let Some(window) = summary.window else {
        return Err(no_requests(summary));
    };
    let seconds = summary.seconds();
    if seconds.values().all(|v| v.iter().all(|&n| n == 0)) {
        return Err(no_requests(summary));
    }
    let mut doc: toml::Table = toml::from_str(base).map_err(|e| format!("{base_name}: {e}"))?;
    let base_streams: Vec<toml::Table> = doc
        .get("streams")
        .and_then(|s| s.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_table().cloned()).collect())
        .unwrap_or_default();

    let n = seconds.values().map(Vec::len).max().unwrap_or(0);
    let every = Duration::from_secs_f64(1.0 / opts.speed);
    // Rounded up to the ms, so the last window's arrivals all fall inside the run.
    let duration_ms = (n as f64 * every.as_secs_f64() * 1000.0).ceil() as u64;
    let every_text = format!("{:.6}ms", every.as_secs_f64() * 1000.0);
    let kept = opts.arrivals.kept(opts.speed);

    let mut streams = Vec::new();
    for (label, counts) in &seconds {
        let series = &summary.series[label];
        let target = &series.target;
        let kind = toml::Value::try_from(target.endpoint).map_err(|e| e.to_string())?;
        let template = base_streams.iter().find(|s| {
            s.get("endpoint") == Some(&kind)
                && s.get("event").and_then(|e| e.as_str()) == target.event.as_deref()
        });
        let mut st = toml::Table::new();
        st.insert("name".into(), format!("replay: {label}").into());
        st.insert("endpoint".into(), kind);
        if let Some(e) = &target.event {
            st.insert("event".into(), e.clone().into());
        }
        let mut arrival = toml::Table::new();
        arrival.insert("kind".into(), "counts".into());
        arrival.insert("every".into(), every_text.clone().into());
        arrival.insert(
            "counts".into(),
            toml::Value::Array(
                thin(counts, kept)
                    .iter()
                    .map(|&c| i64::from(c).into())
                    .collect(),
            ),
        );
        st.insert("arrival".into(), arrival.into());
        for key in ["scope_workspaces", "users", "signed_out_pct"] {
            if let Some(v) = template.and_then(|t| t.get(key)) {
                st.insert(key.into(), v.clone());
            }
        }
        streams.push(toml::Value::Table(st));
    }

    let (phases, incident) = phases(&seconds, opts.speed, duration_ms);
    let stem = std::path::Path::new(&summary.source)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("logs");
    // From the window's first minute: the minutes of [observed] and of the replay line up.
    let start_ms = summary.first_minute_ms().unwrap_or(window.from_ms);
    let (from, to) = (utc(start_ms), utc(window.to_ms));
    doc.insert("name".into(), format!("replay-{stem}").into());
    let load = if kept < 1.0 {
        format!(
            "1 in {} of its {} requests, at production's arrival rate",
            opts.speed, summary.requests
        )
    } else {
        format!(
            "all its {} requests, at {}x production's arrival rate",
            summary.requests, opts.speed
        )
    };
    doc.insert(
        "description".into(),
        format!(
            "{} replayed at {}x: {from} .. {to} UTC ({load}); everything but the load from {base_name}.",
            summary.source, opts.speed
        )
        .into(),
    );
    doc.insert("duration".into(), format!("{duration_ms}ms").into());
    doc.insert("incident_phase".into(), incident.into());
    doc.insert("phases".into(), toml::Value::Array(phases));
    doc.insert("streams".into(), toml::Value::Array(streams));
    // The run is shorter than the base's: a reconnect past its end would be refused.
    let reconnect_at = doc
        .get("reconnect")
        .and_then(|r| r.get("at"))
        .and_then(|a| a.as_str())
        .and_then(|a| incident_wire::duration::parse(a).ok());
    if reconnect_at.is_some_and(|at| at.as_millis() as u64 >= duration_ms) {
        doc.remove("reconnect");
    }
    let observed = observed(summary, opts, &from, &to);
    doc.insert(
        "observed".into(),
        toml::Value::try_from(&observed).map_err(|e| e.to_string())?,
    );
    let body = toml::to_string(&doc).map_err(|e| e.to_string())?;
    Ok(format!(
        "# Written by `{}`.\n# The streams replay the export's requests per second ({every_text} per recorded second{});\n# [observed] holds production's figures per minute. The rest is {base_name}'s.\n{body}",
        opts.command,
        if kept < 1.0 {
            format!(", 1 in {} kept: production's arrival rate", opts.speed)
        } else {
            String::new()
        }
    ))
}

fn no_requests(summary: &Summary) -> String {
    let mut msg = format!(
        "{}: no request in the window maps to an endpoint of the reference service ({} requests, {} outside the window)",
        summary.source, summary.requests, summary.outside_window
    );
    if !summary.unmatched.is_empty() {
        let top: Vec<String> = summary
            .unmatched
            .iter()
            .take(5)
            .map(|(p, n)| format!("{p} ({n})"))
            .collect();
        msg.push_str(&format!(
            "; unmatched: {} — map them with --map FILE",
            top.join(", ")
        ));
    }
    msg
}

fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// baseline / burst / recovery from the webhook arrivals: the burst runs from the first to
/// the last minute with at least 3× the webhooks of the lower-quartile minute (and at least 3
/// more). With no webhooks or no such minute, one phase, `window`.
fn phases(
    seconds: &BTreeMap<String, Vec<u32>>,
    speed: f64,
    duration_ms: u64,
) -> (Vec<toml::Value>, String) {
    let webhook = seconds
        .iter()
        .find(|(l, _)| l.contains(incident_wire::WEBHOOK_PATH))
        .map(|(_, v)| v);
    let minutes: Vec<u64> = webhook
        .map(|v| {
            v.chunks(60)
                .map(|c| c.iter().map(|&n| u64::from(n)).sum())
                .collect()
        })
        .unwrap_or_default();
    let mut sorted = minutes.clone();
    sorted.sort_unstable();
    let quiet = sorted.get(sorted.len() / 4).copied().unwrap_or(0);
    let hot = |m: &u64| *m >= (3 * quiet).max(quiet + 3);
    let first = minutes.iter().position(hot);
    let last = minutes.iter().rposition(hot);
    let at = |recorded_s: u64| -> u64 {
        ((recorded_s as f64 / speed) * 1000.0)
            .round()
            .min(duration_ms as f64) as u64
    };
    let phase = |name: &str, from: u64, to: u64| {
        let mut t = toml::Table::new();
        t.insert("name".into(), name.into());
        t.insert("from".into(), format!("{from}ms").into());
        t.insert("to".into(), format!("{to}ms").into());
        toml::Value::Table(t)
    };
    match (first, last) {
        (Some(a), Some(b)) => {
            let (from, to) = (at(a as u64 * 60), at((b as u64 + 1) * 60));
            let mut out = Vec::new();
            if from > 0 {
                out.push(phase("baseline", 0, from));
            }
            out.push(phase("burst", from, to));
            if to < duration_ms {
                out.push(phase("recovery", to, duration_ms));
            }
            (out, "burst".into())
        }
        _ => (vec![phase("window", 0, duration_ms)], "window".into()),
    }
}

fn observed(summary: &Summary, opts: &Options, from: &str, to: &str) -> Observed {
    let first_minute = summary.first_minute_ms().unwrap_or(0) / 60_000;
    let endpoints = summary
        .series
        .iter()
        .map(|(label, s)| ObservedEndpoint {
            endpoint: label.clone(),
            production: s.production.keys().cloned().collect(),
            minutes: s
                .per_minute
                .iter()
                .map(|(m, stats)| {
                    let h = &stats.durations;
                    let q = |p: f64| h.quantile_ms(p);
                    ObservedMinute {
                        minute: u32::try_from(m - first_minute).unwrap_or(0),
                        requests: stats.statuses.total(),
                        p50_ms: q(0.50),
                        p95_ms: q(0.95),
                        statuses: stats.statuses,
                    }
                })
                .collect(),
        })
        .collect();
    Observed {
        source: summary.source.clone(),
        from: from.into(),
        to: to.into(),
        speed: opts.speed,
        kept: opts.arrivals.kept(opts.speed),
        function_limit: opts.function_limit,
        endpoints,
        unmatched: summary.unmatched.clone(),
        ignored: summary.ignored.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The summary of an export with this CSV text.
    fn summary_of(csv: &str) -> Summary {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, csv).unwrap();
        crate::logs::summarize(&path, &crate::logs::PathMap::defaults(), None, false).unwrap()
    }

    /// The export of a new user's report: a stray request in the last second of 17:57, then
    /// 100 webhooks in 17:58:10–17:58:39. Production's minute 1 (17:58) holds the 100; so must
    /// the replay's minute 1, recorded seconds 60–119, not 0–59 counted from the stray one.
    #[test]
    fn recorded_minutes_and_replayed_minutes_line_up() {
        let minute = 1_769_190_420_000_i64; // 2026-01-23T17:47:00Z
        let start = minute + 10 * 60_000; // 17:57:00
        let mut csv = "timestampInMs,requestPath,requestMethod,responseStatusCode,durationMs,level,message,requestId\n".to_owned();
        csv.push_str(&format!(
            "{},/api/webhooks/email,POST,200,5,,,stray\n",
            start + 59_500
        ));
        for i in 0..100 {
            let at = start + 70_000 + i * 300;
            csv.push_str(&format!("{at},/api/webhooks/email,POST,200,5,,,r{i}\n"));
        }
        let summary = summary_of(&csv);
        let base = include_str!("../../scenarios/smoke.toml");
        let opts = Options {
            speed: 60.0,
            arrivals: Arrivals::All,
            function_limit: Duration::from_secs(60),
            command: "test".into(),
        };
        let text = scenario_text(&summary, base, "smoke.toml", &opts).unwrap();
        let doc: toml::Table = toml::from_str(&text).unwrap();
        let observed: Observed = doc["observed"].clone().try_into().unwrap();
        assert_eq!(observed.from, "2026-01-23T17:57:00Z");
        assert_eq!(observed.minutes(), 2);
        let prod: Vec<(u32, u64)> = observed.endpoints[0]
            .minutes
            .iter()
            .map(|m| (m.minute, m.requests))
            .collect();
        assert_eq!(prod, [(0, 1), (1, 100)]);
        let stream = &doc["streams"].as_array().unwrap()[0];
        let counts: Vec<i64> = stream["arrival"]["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_integer().unwrap())
            .collect();
        // Per recorded minute, the replay's arrivals: what production had in that minute.
        let per_minute: Vec<i64> = counts.chunks(60).map(|c| c.iter().sum()).collect();
        assert_eq!(per_minute, [1, 100]);
    }

    /// Production's per-second arrivals for a few minutes: 5/s, 40/s in a burst minute.
    fn recorded() -> Vec<u32> {
        (0..240)
            .map(|s| if (60..120).contains(&s) { 40 } else { 5 })
            .collect()
    }

    /// Arrivals per second of the run: `counts` are per recorded second, `speed` of them in
    /// each second of the run.
    fn run_rate(counts: &[u32], speed: usize) -> Vec<u32> {
        counts.chunks(speed).map(|c| c.iter().sum()).collect()
    }

    #[test]
    fn thinned_arrivals_keep_production_s_rate_at_every_speed() {
        let rec = recorded();
        for speed in [2_usize, 4, 15, 60] {
            let kept = Arrivals::Thin.kept(speed as f64);
            let sent = thin(&rec, kept);
            // Each recorded minute keeps its share, to within one request.
            for (minute, (s, r)) in sent.chunks(60).zip(rec.chunks(60)).enumerate() {
                let (s, r): (u32, u32) = (s.iter().sum(), r.iter().sum());
                let want = f64::from(r) / speed as f64;
                assert!(
                    (f64::from(s) - want).abs() <= 1.0,
                    "speed {speed}, minute {minute}: {s} sent of {r}"
                );
            }
            // The world sees production's rate: 5/s calm, 40/s in the burst (±1 a second).
            let rate = run_rate(&sent, speed);
            let burst = (60 / speed)..(120 / speed);
            for (second, &n) in rate.iter().enumerate() {
                let want = if burst.contains(&second) { 40 } else { 5 };
                assert!(
                    n.abs_diff(want) <= 1,
                    "speed {speed}, run second {second}: {n}/s, production {want}/s"
                );
            }
        }
        // Sending every arrival multiplies the rate by the speed; so does thinning at speed 1.
        assert_eq!(thin(&rec, Arrivals::All.kept(4.0)), rec);
        assert_eq!(thin(&rec, Arrivals::Thin.kept(1.0)), rec);
        assert_eq!(run_rate(&rec, 4)[0], 20);
    }

    /// The written scenario says which it did, and [observed] carries the share kept.
    #[test]
    fn the_scenario_says_whether_arrivals_were_thinned() {
        let minute = 1_769_190_420_000_i64;
        let mut csv = "timestampInMs,requestPath,requestMethod,responseStatusCode,durationMs,level,message,requestId\n".to_owned();
        for i in 0..120 {
            csv.push_str(&format!(
                "{},/api/webhooks/email,POST,200,5,,,r{i}\n",
                minute + i * 1000
            ));
        }
        let summary = summary_of(&csv);
        let base = include_str!("../../scenarios/smoke.toml");
        for (arrivals, sent, kept, says) in [
            (Arrivals::Thin, 30, 0.25, "1 in 4 of its 120 requests"),
            (Arrivals::All, 120, 1.0, "all its 120 requests, at 4x"),
        ] {
            let opts = Options {
                speed: 4.0,
                arrivals,
                function_limit: Duration::from_secs(60),
                command: "test".into(),
            };
            let text = scenario_text(&summary, base, "smoke.toml", &opts).unwrap();
            let doc: toml::Table = toml::from_str(&text).unwrap();
            let observed: Observed = doc["observed"].clone().try_into().unwrap();
            assert_eq!(observed.kept, kept);
            assert!(
                doc["description"].as_str().unwrap().contains(says),
                "{text}"
            );
            let counts: i64 = doc["streams"].as_array().unwrap()[0]["arrival"]["counts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_integer().unwrap())
                .sum();
            assert_eq!(counts, sent, "{arrivals:?}");
        }
    }
}
