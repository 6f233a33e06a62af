//! What production saw, as a replay scenario carries it (`[observed]`, written by `scenario
//! from-logs`): per endpoint and minute, requests, latency quantiles and the status mix.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The production side of a replay: per endpoint and minute of the window, what the export
/// shows. Minute 0 is the window's first minute; a replay at speed N plays minute m from
/// `m × 60 / N` s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observed {
    /// The export it came from.
    pub source: String,
    /// The window, UTC (`2026-01-23T17:51:00Z`).
    pub from: String,
    pub to: String,
    /// Replay speed: recorded time ÷ replayed time.
    pub speed: f64,
    /// The share of the recorded arrivals the replay sends: `1 / speed` when they were thinned
    /// so that the world sees production's arrival rate, 1 when every one was sent (at `speed`
    /// times production's rate). Files written before it had none: every arrival.
    #[serde(default = "every_arrival")]
    pub kept: f64,
    /// The platform's function limit in production: latencies compare as shares of it against
    /// the service's `request_timeout`.
    #[serde(with = "incident_wire::duration")]
    pub function_limit: Duration,
    pub endpoints: Vec<ObservedEndpoint>,
    /// Requests no path rule matched (`METHOD /path` → requests): not replayed.
    #[serde(default)]
    pub unmatched: BTreeMap<String, u64>,
    /// Requests a rule left out on purpose.
    #[serde(default)]
    pub ignored: BTreeMap<String, u64>,
}

fn every_arrival() -> f64 {
    1.0
}

impl Observed {
    /// The load the replay puts on the world against production's: its arrival rate ÷
    /// production's (1 when thinned, `speed` when every arrival was sent).
    pub fn load_factor(&self) -> f64 {
        self.speed * self.kept
    }

    /// Recorded minutes in the window (a partial last minute counts).
    pub fn minutes(&self) -> u32 {
        let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).map(|t| t.timestamp());
        match (at(&self.from), at(&self.to)) {
            (Ok(from), Ok(to)) if to > from => ((to - from) as f64 / 60.0).ceil() as u32,
            // Hand-edited times: as many minutes as production has.
            _ => self
                .endpoints
                .iter()
                .flat_map(|e| e.minutes.iter().map(|m| m.minute + 1))
                .max()
                .unwrap_or(0),
        }
    }
}

/// One endpoint's minutes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservedEndpoint {
    /// The reference service's label (`POST /api/webhooks/email`).
    pub endpoint: String,
    /// The production `METHOD /path`s mapped to it.
    pub production: Vec<String>,
    pub minutes: Vec<ObservedMinute>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservedMinute {
    pub minute: u32,
    pub requests: u64,
    /// Of the requests with a duration; absent when none had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<u64>,
    pub statuses: StatusMix,
}

/// A status, as the mix counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StatusMix {
    #[serde(rename = "2xx")]
    pub ok: u64,
    #[serde(rename = "3xx")]
    pub redirect: u64,
    #[serde(rename = "4xx")]
    pub client: u64,
    /// 5xx other than 504.
    #[serde(rename = "5xx")]
    pub server: u64,
    /// 504: cut off at the function limit.
    #[serde(rename = "504")]
    pub timeout: u64,
    /// No response recorded (-1 / empty).
    pub none: u64,
}

impl StatusMix {
    pub fn add(&mut self, status: Option<u16>) {
        match status {
            None => self.none += 1,
            Some(504) => self.timeout += 1,
            Some(s) if s >= 500 => self.server += 1,
            Some(s) if s >= 400 => self.client += 1,
            Some(s) if s >= 300 => self.redirect += 1,
            Some(_) => self.ok += 1,
        }
    }
    pub fn total(&self) -> u64 {
        self.ok + self.redirect + self.client + self.server + self.timeout + self.none
    }
    pub fn merge(&mut self, o: &StatusMix) {
        self.ok += o.ok;
        self.redirect += o.redirect;
        self.client += o.client;
        self.server += o.server;
        self.timeout += o.timeout;
        self.none += o.none;
    }
}
