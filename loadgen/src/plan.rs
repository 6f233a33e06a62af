//! The open model: a schedule of intended send times, generated deterministically from each
//! stream's arrival process. Requests go out at their time whether or not earlier ones have
//! answered (as wrk2 and k6's arrival-rate executors do), so a slow server cannot slow the
//! load down and hide its own latency.

use std::time::Duration;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

use crate::traffic::Endpoint;

/// How requests of a stream arrive; rates are per second, times offsets from the run's start.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Arrival {
    /// `rate` throughout.
    Constant { rate: f64 },
    /// `rate` between `from` and `to`, nothing outside.
    Burst {
        rate: f64,
        #[serde(with = "incident_wire::duration")]
        from: Duration,
        #[serde(with = "incident_wire::duration")]
        to: Duration,
    },
    /// Linear from `from_rate` at `from` to `to_rate` at `to`; nothing outside.
    Ramp {
        from_rate: f64,
        to_rate: f64,
        #[serde(with = "incident_wire::duration")]
        from: Duration,
        #[serde(with = "incident_wire::duration")]
        to: Duration,
    },
    /// Piecewise constant: each point's rate holds from its time to the next point's
    /// (written `[["0s", 2.0], ["60s", 80.0]]`).
    Schedule { points: Vec<RatePoint> },
    /// Recorded: `counts[k]` arrivals in the `k`-th window of length `every`, exactly (a
    /// replayed log's per-second counts; a faster replay has shorter windows, the same counts).
    /// Spread evenly in each window, or at seeded uniform times in it when the plan is Poisson.
    Counts {
        #[serde(with = "incident_wire::duration")]
        every: Duration,
        counts: Vec<u32>,
    },
}

/// From `at`, `rate` per second (a point of [`Arrival::Schedule`]).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RatePoint(
    #[serde(with = "incident_wire::duration")] pub Duration,
    pub f64,
);

impl Arrival {
    /// The rate at `t` seconds.
    pub fn rate_at(&self, t: f64) -> f64 {
        match self {
            Arrival::Constant { rate } => *rate,
            Arrival::Burst { rate, from, to } => {
                if t >= from.as_secs_f64() && t < to.as_secs_f64() {
                    *rate
                } else {
                    0.0
                }
            }
            Arrival::Ramp {
                from_rate,
                to_rate,
                from,
                to,
            } => {
                let (a, b) = (from.as_secs_f64(), to.as_secs_f64());
                if t < a || t >= b || b <= a {
                    0.0
                } else {
                    from_rate + (to_rate - from_rate) * (t - a) / (b - a)
                }
            }
            Arrival::Schedule { points } => points
                .iter()
                .take_while(|p| p.0.as_secs_f64() <= t)
                .last()
                .map_or(0.0, |p| p.1),
            Arrival::Counts { every, counts } => {
                let w = every.as_secs_f64();
                if t < 0.0 || w <= 0.0 {
                    return 0.0;
                }
                counts
                    .get((t / w).floor() as usize)
                    .map_or(0.0, |&n| f64::from(n) / w)
            }
        }
    }
}

/// Retries the way an email provider does: a failed delivery is sent again later.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retry answers with a 5xx status.
    pub on_5xx: bool,
    /// Retry requests that got no answer in time.
    pub on_timeout: bool,
    /// Delay after the failure.
    #[serde(with = "incident_wire::duration")]
    pub after: Duration,
    /// Retries per original request.
    pub max: u8,
}

impl RetryPolicy {
    /// When the provider sends `attempt` (0 = the original) again after it ended with
    /// `outcome` at `ended` (from the run's start): `None` when it does not — a success or an
    /// outcome this policy does not retry, the retries used up, or past the run's `duration`.
    pub fn retry_at(
        &self,
        attempt: u8,
        outcome: crate::record::Outcome,
        ended: Duration,
        duration: Duration,
    ) -> Option<Duration> {
        use crate::record::Outcome;
        let wanted = match outcome {
            Outcome::Status(s) => s >= 500 && self.on_5xx,
            Outcome::Timeout | Outcome::Error => self.on_timeout,
        };
        let at = ended + self.after;
        (wanted && attempt < self.max && at < duration).then_some(at)
    }
}

/// At-least-once delivery, as email providers do it: some acknowledged events are sent again
/// later (same id and body, a fresh signature), some are sent twice at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AtLeastOnce {
    /// Share of acknowledged events sent again, in %.
    pub redeliver_pct: f64,
    /// How long after the acknowledgement.
    #[serde(with = "incident_wire::duration")]
    pub redeliver_after: Duration,
    /// Share of events sent twice at the same intended time, in %.
    pub duplicate_pct: f64,
}

impl AtLeastOnce {
    /// Whether event `seq` of stream `stream` is picked for a share `pct` (deterministic by
    /// `seed`; `salt` keeps the two choices independent).
    pub fn picked(seed: u64, stream: usize, seq: u64, salt: u64, pct: f64) -> bool {
        if pct <= 0.0 {
            return false;
        }
        let h = crate::traffic::mix(seed ^ salt ^ ((stream as u64) << 48) ^ seq);
        (h % 1_000_000) as f64 / 10_000.0 < pct
    }
}

/// Salts of [`AtLeastOnce::picked`].
pub(crate) const DUPLICATE_SALT: u64 = 0xD0;
pub(crate) const REDELIVER_SALT: u64 = 0x8E;

/// One traffic stream: what to send and when, and how many of its requests may be in flight.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stream {
    pub name: String,
    pub endpoint: Endpoint,
    pub arrival: Arrival,
    pub retry: Option<RetryPolicy>,
    /// This stream's own concurrency (its goose users), as each k6 scenario has its own VU
    /// pool: one stream's slow requests never delay another stream's sends. Beyond it, this
    /// stream's arrivals start late.
    pub max_in_flight: usize,
    /// Redeliveries and concurrent duplicates (webhook streams).
    #[serde(default)]
    pub delivery: AtLeastOnce,
}

impl Stream {
    /// The highest arrival rate of `arrival` over `duration` (sampled every 10 ms).
    pub fn peak_rate(arrival: &Arrival, duration: Duration) -> f64 {
        if let Arrival::Counts { every, counts } = arrival {
            let most = counts.iter().copied().max().unwrap_or(0);
            return f64::from(most) / every.as_secs_f64().max(1e-9);
        }
        let steps = (duration.as_secs_f64() * 100.0).ceil() as usize;
        (0..=steps)
            .map(|i| arrival.rate_at(i as f64 / 100.0))
            .fold(0.0, f64::max)
    }

    /// The concurrency a stream needs so that it never waits for itself: every arrival of its
    /// peak rate (originals and the provider's retries) in flight for up to `client_timeout`
    /// (Little's law with the longest time in system), plus one second of arrivals, capped at
    /// [`MAX_DEFAULT_IN_FLIGHT`].
    pub fn default_max_in_flight(
        arrival: &Arrival,
        retry: Option<&RetryPolicy>,
        delivery: &AtLeastOnce,
        duration: Duration,
        client_timeout: Duration,
    ) -> usize {
        let peak = Self::peak_rate(arrival, duration)
            * (1.0 + (delivery.duplicate_pct + delivery.redeliver_pct) / 100.0);
        let attempts = 1.0 + retry.map_or(0.0, |r| f64::from(r.max));
        let need = peak * attempts * client_timeout.as_secs_f64() + peak;
        (need.ceil() as usize).clamp(1, MAX_DEFAULT_IN_FLIGHT)
    }
}

/// The most users a stream gets by default; a scenario can set more explicitly.
pub const MAX_DEFAULT_IN_FLIGHT: usize = 4096;

/// Everything the load generator needs for one run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// Base URL of the service, e.g. `http://127.0.0.1:3000`.
    pub host: String,
    pub streams: Vec<Stream>,
    /// Length of the schedule.
    #[serde(with = "incident_wire::duration")]
    pub duration: Duration,
    /// Seed of the arrival processes and payload choices.
    pub seed: u64,
    /// Exponential gaps (Poisson arrivals) rather than evenly spaced ones.
    pub poisson: bool,
    /// Client-side timeout of a request.
    #[serde(with = "incident_wire::duration")]
    pub client_timeout: Duration,
    /// A request that starts later than this after its intended time counts as late (k6's
    /// dropped iterations: a sign the generator, not the service, set the pace).
    #[serde(with = "incident_wire::duration")]
    pub late_after: Duration,
    /// A tag that makes this run's dedupe ids unique (the same in every shard of one run).
    pub run_id: String,
    /// Which part of the schedule this process sends (the whole of it by default).
    #[serde(default)]
    pub shard: Shard,
    /// How an `https://` host is trusted.
    #[serde(default)]
    pub tls: Tls,
}

/// How the generator trusts an `https://` host: the system's roots, plus a private CA; or
/// nothing checked at all (`insecure`, which the report says).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tls {
    /// PEM certificates trusted beside the system's roots (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Accept any certificate (a self-signed staging host).
    #[serde(default)]
    pub insecure: bool,
}

/// The `index`-th of `count` shards (0-based): every `count`-th arrival of every stream,
/// starting at the `index`-th, so the shards of a run send the whole schedule between them,
/// each arrival once, with the sequence numbers (and so the event ids) of the whole schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl Shard {
    /// Whether arrival `seq` of a stream is this shard's.
    pub fn takes(self, seq: u64) -> bool {
        seq % u64::from(self.count.max(1)) == u64::from(self.index)
    }

    /// The whole schedule, not a part of it.
    pub fn is_whole(self) -> bool {
        self.count <= 1
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `I/N`, 0 ≤ I < N (Kubernetes' completion index is 0-based too).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a shard I/N with 0 <= I < N, e.g. 0/2 and 1/2");
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<u32>().map_err(|_| bad())?,
            n.trim().parse::<u32>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

/// What a send is to the event it carries (a recording counts sends by it, so it lives there).
pub use crate::record::Delivery;

/// One intended send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Scheduled {
    /// Intended send time, from the run's start.
    pub at: Duration,
    pub stream: usize,
    /// Sequence number within the stream (stable across retries).
    pub seq: u64,
    /// 0 for the original, 1.. for retries.
    pub attempt: u8,
    /// Original, duplicate or redelivery (retries keep their delivery's kind).
    pub delivery: Delivery,
}

/// Integration step of the arrival processes.
const STEP: f64 = 0.001;

/// A uniform number in [0, 1) from the generator's next 64 bits (their top 53, as many as an
/// f64 holds): written here, with the generator named, so a seed gives the same schedule
/// whatever version of `rand` the build resolves (its `StdRng` may change algorithm, its
/// conversions their arithmetic).
fn unit(rng: &mut ChaCha12Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The intended send times of one arrival process over `duration`, deterministic by `seed`
/// (ChaCha12 seeded from it, [`unit`] draws).
pub fn arrivals(arrival: &Arrival, duration: Duration, seed: u64, poisson: bool) -> Vec<Duration> {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    let gap = |rng: &mut ChaCha12Rng| {
        if poisson {
            -(1.0 - unit(rng)).ln()
        } else {
            1.0
        }
    };
    let end = duration.as_secs_f64();
    if let Arrival::Counts { every, counts } = arrival {
        return recorded(*every, counts, end, poisson.then_some(&mut rng));
    }
    let mut out = Vec::new();
    // Walk the integrated rate; emit whenever it crosses the next unit-rate event.
    let (mut t, mut area) = (0.0, 0.0);
    let mut next = if poisson { gap(&mut rng) } else { 0.5 };
    while t < end {
        area += arrival.rate_at(t) * STEP;
        while area >= next {
            out.push(Duration::from_secs_f64(t));
            next += gap(&mut rng);
        }
        t += STEP;
    }
    out
}

/// [`Arrival::Counts`]: exactly `counts[k]` arrivals inside window `k`, none at or past `end`.
fn recorded(
    every: Duration,
    counts: &[u32],
    end: f64,
    rng: Option<&mut ChaCha12Rng>,
) -> Vec<Duration> {
    let w = every.as_secs_f64();
    let mut out = Vec::with_capacity(counts.iter().map(|&n| n as usize).sum());
    let mut rng = rng;
    for (k, &n) in counts.iter().enumerate() {
        let from = k as f64 * w;
        if from >= end {
            break;
        }
        let mut at: Vec<f64> = (0..n)
            .map(|j| match rng.as_deref_mut() {
                Some(r) => from + unit(r) * w,
                None => from + (f64::from(j) + 0.5) / f64::from(n) * w,
            })
            .filter(|t| *t < end)
            .collect();
        at.sort_by(f64::total_cmp);
        out.extend(at.into_iter().map(Duration::from_secs_f64));
    }
    out
}

impl Plan {
    /// This shard's part of the schedule (the whole of it unsharded), in time order.
    pub fn schedule(&self) -> Vec<Scheduled> {
        let mut all: Vec<Scheduled> = self
            .streams
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                arrivals(
                    &s.arrival,
                    self.duration,
                    self.seed.wrapping_add(i as u64),
                    self.poisson,
                )
                .into_iter()
                .enumerate()
                .filter(|(seq, _)| self.shard.takes(*seq as u64))
                .flat_map(move |(seq, at)| {
                    let original = Scheduled {
                        at,
                        stream: i,
                        seq: seq as u64,
                        attempt: 0,
                        delivery: Delivery::Original,
                    };
                    let twice = AtLeastOnce::picked(
                        self.seed,
                        i,
                        seq as u64,
                        DUPLICATE_SALT,
                        s.delivery.duplicate_pct,
                    );
                    let copy = twice.then_some(Scheduled {
                        delivery: Delivery::Duplicate,
                        ..original
                    });
                    std::iter::once(original).chain(copy)
                })
            })
            .collect();
        all.sort();
        all
    }
}

#[cfg(test)]
mod tests;
