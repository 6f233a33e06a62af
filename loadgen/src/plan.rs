//! The open model: a schedule of intended send times, generated deterministically from each
//! stream's arrival process. Requests go out at their time whether or not earlier ones have
//! answered (as wrk2 and k6's arrival-rate executors do), so a slow server cannot slow the
//! load down and hide its own latency.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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

/// The intended send times of one arrival process over `duration`, deterministic by `seed`.
pub fn arrivals(arrival: &Arrival, duration: Duration, seed: u64, poisson: bool) -> Vec<Duration> {
    let mut rng = StdRng::seed_from_u64(seed);
    let gap = |rng: &mut StdRng| {
        if poisson {
            -(1.0 - rng.random::<f64>()).ln()
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
fn recorded(every: Duration, counts: &[u32], end: f64, rng: Option<&mut StdRng>) -> Vec<Duration> {
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
                Some(r) => from + r.random::<f64>() * w,
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
mod tests {
    use super::*;

    #[test]
    fn recorded_counts_land_exactly_in_their_windows_at_any_speed() {
        let counts = vec![3, 0, 250, 1, 7];
        for (every_ms, poisson) in [(1000, false), (1000, true), (33, true), (100, false)] {
            let every = Duration::from_millis(every_ms);
            let arrival = Arrival::Counts {
                every,
                counts: counts.clone(),
            };
            let duration = every * counts.len() as u32;
            let mut got = vec![0u32; counts.len()];
            for t in arrivals(&arrival, duration, 7, poisson) {
                got[(t.as_secs_f64() / every.as_secs_f64()).floor() as usize] += 1;
            }
            assert_eq!(got, counts, "every {every_ms} ms, poisson {poisson}");
            let peak = Stream::peak_rate(&arrival, duration);
            assert!((peak - 250.0 / every.as_secs_f64()).abs() < 1e-6);
        }
        // A run shorter than the recording sends what falls inside it only.
        let arrival = Arrival::Counts {
            every: Duration::from_secs(1),
            counts: vec![2, 2, 2],
        };
        assert_eq!(
            arrivals(&arrival, Duration::from_millis(1500), 1, false).len(),
            3
        );
    }

    fn plan_of(shard: Shard) -> Plan {
        let stream = |name: &str, rate| Stream {
            name: name.into(),
            endpoint: Endpoint::Cron {
                path: "/cron".into(),
                secret: "s".into(),
            },
            arrival: Arrival::Constant { rate },
            retry: None,
            max_in_flight: 8,
            delivery: AtLeastOnce {
                duplicate_pct: 10.0,
                ..AtLeastOnce::default()
            },
        };
        Plan {
            host: "http://127.0.0.1:1".into(),
            streams: vec![stream("a", 7.0), stream("b", 3.0)],
            duration: Duration::from_secs(10),
            seed: 53,
            poisson: true,
            client_timeout: Duration::from_secs(1),
            late_after: Duration::from_millis(50),
            run_id: "r".into(),
            shard,
        }
    }

    #[test]
    fn shards_split_the_schedule_into_disjoint_parts_whose_union_is_the_whole() {
        let whole = plan_of(Shard::default()).schedule();
        assert!(whole.len() > 90, "{}", whole.len());
        for n in [2, 3, 5] {
            let parts: Vec<Vec<Scheduled>> = (0..n)
                .map(|index| plan_of(Shard { index, count: n }).schedule())
                .collect();
            let mut union: Vec<Scheduled> = parts.iter().flatten().copied().collect();
            union.sort();
            assert_eq!(union, whole, "{n} shards");
            // Balanced to within one arrival (and its duplicate) per stream.
            let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(hi - lo <= whole.len() / 10 + 4, "{sizes:?}");
        }
    }

    #[test]
    fn a_shard_is_written_i_of_n_and_bad_ones_are_refused() {
        assert_eq!("1/4".parse::<Shard>(), Ok(Shard { index: 1, count: 4 }));
        assert_eq!(Shard { index: 1, count: 4 }.to_string(), "1/4");
        for bad in ["4/4", "1/0", "2", "a/3", "-1/3", ""] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains("0 <= I < N"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_constant_rate_gives_rate_times_duration_arrivals_evenly() {
        let a = arrivals(
            &Arrival::Constant { rate: 10.0 },
            Duration::from_secs(3),
            1,
            false,
        );
        assert_eq!(a.len(), 30);
        let gaps: Vec<f64> = a.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        assert!(gaps.iter().all(|g| (g - 0.1).abs() < 0.002), "{gaps:?}");
    }

    #[test]
    fn a_burst_only_arrives_inside_its_window() {
        let burst = Arrival::Burst {
            rate: 50.0,
            from: Duration::from_secs(2),
            to: Duration::from_secs(4),
        };
        let a = arrivals(&burst, Duration::from_secs(6), 1, true);
        assert!(a
            .iter()
            .all(|t| *t >= Duration::from_secs(2) && *t < Duration::from_secs(4)));
        assert!((70..=130).contains(&a.len()), "{}", a.len());
    }

    #[test]
    fn schedules_are_deterministic_by_seed() {
        let ramp = Arrival::Ramp {
            from_rate: 1.0,
            to_rate: 40.0,
            from: Duration::ZERO,
            to: Duration::from_secs(5),
        };
        let one = arrivals(&ramp, Duration::from_secs(5), 9, true);
        assert_eq!(one, arrivals(&ramp, Duration::from_secs(5), 9, true));
        assert_ne!(one, arrivals(&ramp, Duration::from_secs(5), 10, true));
        // A ramp from 1/s to 40/s over 5 s carries about 102 arrivals.
        assert!((70..=140).contains(&one.len()), "{}", one.len());
    }

    #[test]
    fn retries_follow_the_policy_and_stop_at_the_cap_and_the_end() {
        use crate::record::Outcome;
        let policy = RetryPolicy {
            on_5xx: true,
            on_timeout: false,
            after: Duration::from_secs(2),
            max: 2,
        };
        let end = Duration::from_secs(30);
        let at = |attempt, outcome, ended_s| {
            policy.retry_at(attempt, outcome, Duration::from_secs(ended_s), end)
        };
        assert_eq!(at(0, Outcome::Status(504), 5), Some(Duration::from_secs(7)));
        assert_eq!(at(1, Outcome::Status(500), 5), Some(Duration::from_secs(7)));
        assert_eq!(
            at(2, Outcome::Status(500), 5),
            None,
            "two retries, then no more"
        );
        assert_eq!(at(0, Outcome::Status(429), 5), None, "a 4xx is not retried");
        assert_eq!(at(0, Outcome::Status(200), 5), None);
        assert_eq!(
            at(0, Outcome::Timeout, 5),
            None,
            "timeouts not in this policy"
        );
        assert_eq!(at(0, Outcome::Status(503), 28), None, "past the run's end");
    }

    #[test]
    fn picked_shares_match_their_percentage_and_are_deterministic() {
        let picked = |pct, salt| {
            (0..100_000u64)
                .filter(|seq| AtLeastOnce::picked(53, 1, *seq, salt, pct))
                .count()
        };
        assert_eq!(picked(0.0, DUPLICATE_SALT), 0);
        assert_eq!(picked(100.0, DUPLICATE_SALT), 100_000);
        let five = picked(5.0, DUPLICATE_SALT);
        assert!((4_700..=5_300).contains(&five), "{five}");
        assert_eq!(
            five,
            picked(5.0, DUPLICATE_SALT),
            "the same run picks the same events"
        );
        // The two choices are independent: redelivery does not pick the duplicated ones.
        let both = (0..100_000u64)
            .filter(|seq| {
                AtLeastOnce::picked(53, 1, *seq, DUPLICATE_SALT, 10.0)
                    && AtLeastOnce::picked(53, 1, *seq, REDELIVER_SALT, 10.0)
            })
            .count();
        assert!(
            (800..=1_200).contains(&both),
            "{both} picked by both at 10 % each"
        );
    }

    #[test]
    fn a_schedule_holds_each_rate_until_the_next_point() {
        let s = Arrival::Schedule {
            points: [(0, 2.0), (1, 0.0), (2, 10.0)]
                .map(|(t, r)| RatePoint(Duration::from_secs(t), r))
                .to_vec(),
        };
        assert_eq!(s.rate_at(0.5), 2.0);
        assert_eq!(s.rate_at(1.5), 0.0);
        assert_eq!(s.rate_at(2.5), 10.0);
        assert_eq!(arrivals(&s, Duration::from_secs(3), 1, false).len(), 12);
    }
}
