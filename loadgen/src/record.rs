//! Recording: every sample carries its intended time, its actual start and its end; latency is
//! measured from the *intended* time (wrk2). Samples go into HDR histograms (µs, 3 significant
//! digits) per endpoint and per 1-second window, which merge exactly and serialize compactly,
//! so a report can cut a run into phases after the fact.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;

/// Highest latency a histogram holds: one hour, in µs.
const MAX_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds; serializes as hex of the HDR V2 encoding. Its counts
/// are 32-bit: a bucket holds up to 4.29 billion samples (a run at 64 000 requests/s fills one
/// in 18 hours even if every sample fell in it), and a histogram is half the memory of 64-bit
/// counts (the per-second windows are most of a long run's recording).
#[derive(Debug, Clone)]
pub struct Hist(Repr);

#[derive(Debug, Clone)]
enum Repr {
    Open(Histogram<u32>),
    /// The HDR V2 encoding of a window no sample is expected in any more ([`Hist::pack`]):
    /// a few hundred bytes against the 3 KiB of its counts.
    Packed(Box<[u8]>),
}

impl Default for Hist {
    fn default() -> Self {
        Self(Repr::Open(
            Histogram::new_with_bounds(1, MAX_US, 3).expect("valid HDR bounds"),
        ))
    }
}

impl PartialEq for Hist {
    fn eq(&self, other: &Self) -> bool {
        *self.view() == *other.view()
    }
}

impl Hist {
    /// A histogram for one second's window: 2 significant digits (≤ 1 % off) and sized to
    /// the largest value recorded so far, not to [`MAX_US`]. A full-range histogram of 3
    /// digits was 190 KB with 64-bit counts; one per endpoint per second grew the generator by
    /// ~11 MB a minute at 1 000 requests/s (`incident-lab ceiling --soak`). Per-second p95s
    /// (timelines, the phases, `compare`) do not need more. A window of a few milliseconds'
    /// range is 768 counts: 3 KiB with 32-bit counts, 6 KiB with 64-bit; a recording packs
    /// its old windows ([`Hist::pack`]).
    pub fn window() -> Self {
        let mut h = Histogram::new_with_bounds(1, 2, 2).expect("valid HDR bounds");
        h.auto(true);
        Self(Repr::Open(h))
    }

    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, MAX_US);
        let h = self.open_mut();
        // `record` grows a window to fit; a full-range histogram always fits (saturating
        // recording would clamp a window to its current size instead of growing it).
        if h.record(us).is_err() {
            h.saturating_record(us);
        }
    }

    /// Adds every sample of `other`. Values are clamped to [`MAX_US`], which a full-range
    /// histogram covers and a window grows to fit, so this fails only when one bucket
    /// would pass `u32::MAX` samples (4.29 billion: 18 hours at 64 000 requests/s into one
    /// bucket), which no run reaches.
    pub fn merge(&mut self, other: &Hist) {
        self.open_mut()
            .add(&*other.view())
            .expect("a merged bucket stays under u32::MAX samples");
    }

    /// Keeps the histogram as its HDR V2 encoding (lossless; zero runs take a byte or two)
    /// until it is next recorded into or merged into. Reading a packed histogram decodes it.
    /// Open, a 10-minute run's windows grow the generator by ~2 MB per endpoint: in a soak at
    /// 1 000 requests/s the live heap grew ~4.4 KiB a second with every window open, ~0.5 with
    /// the old ones packed (counted by a wrapping allocator in a one-off build, AMD EPYC).
    pub fn pack(&mut self) {
        if let Repr::Open(h) = &self.0 {
            self.0 = Repr::Packed(encode(h).into_boxed_slice());
        }
    }

    /// Bytes its counts (open) or its encoding (packed) take.
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            Repr::Open(h) => h.distinct_values() * std::mem::size_of::<u32>(),
            Repr::Packed(bytes) => bytes.len(),
        }
    }

    fn view(&self) -> std::borrow::Cow<'_, Histogram<u32>> {
        match &self.0 {
            Repr::Open(h) => std::borrow::Cow::Borrowed(h),
            Repr::Packed(bytes) => std::borrow::Cow::Owned(decode(bytes).expect(
                "a histogram this process encoded decodes (counts under u32::MAX, V2 format)",
            )),
        }
    }

    fn open_mut(&mut self) -> &mut Histogram<u32> {
        if matches!(self.0, Repr::Packed(_)) {
            let h = self.view().into_owned();
            self.0 = Repr::Open(h);
        }
        match &mut self.0 {
            Repr::Open(h) => h,
            Repr::Packed(_) => unreachable!("opened above"),
        }
    }

    pub fn count(&self) -> u64 {
        self.view().len()
    }

    /// The value at quantile `q` (0..=1) in milliseconds; `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let h = self.view();
        (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
    }

    pub fn max_ms(&self) -> Option<f64> {
        let h = self.view();
        (!h.is_empty()).then(|| h.max() as f64 / 1000.0)
    }
}

/// The HDR V2 encoding (what a packed histogram keeps and a recording's JSON holds, in hex).
fn encode(h: &Histogram<u32>) -> Vec<u8> {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .expect("a histogram encodes into memory (it fails only on a writer's I/O error)");
    bytes
}

/// A histogram from its V2 encoding, growing to fit when merged with a larger one.
fn decode(mut bytes: &[u8]) -> Result<Histogram<u32>, String> {
    let mut h: Histogram<u32> = Deserializer::new()
        .deserialize(&mut bytes)
        .map_err(|e| format!("{e:?}"))?;
    h.auto(true);
    Ok(h)
}

impl serde::Serialize for Hist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Repr::Packed(bytes) => s.serialize_str(&hex::encode(bytes)),
            Repr::Open(h) => s.serialize_str(&hex::encode(encode(h))),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Hist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        let bytes = hex::decode(text).map_err(serde::de::Error::custom)?;
        // As it was recorded (a window keeps its 2 digits and its size).
        decode(&bytes)
            .map(|h| Hist(Repr::Open(h)))
            .map_err(serde::de::Error::custom)
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    /// No answer within the client timeout.
    Timeout,
    /// Connection refused, reset, …
    Error,
}

impl Outcome {
    /// The label used in status counts: `"200"`, `"timeout"`, `"error"`.
    pub fn label(self) -> String {
        self.label_in(&mut [0u8; 8]).to_owned()
    }

    /// [`Outcome::label`] written into `buf`, without allocating (it runs once per request).
    pub fn label_in(self, buf: &mut [u8; 8]) -> &str {
        match self {
            Outcome::Status(s) => {
                let mut rest = &mut buf[..];
                let _ = std::io::Write::write_fmt(&mut rest, format_args!("{s}"));
                let len = 8 - rest.len();
                std::str::from_utf8(&buf[..len]).expect("ASCII digits")
            }
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
        }
    }

    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Status(200..=299))
    }

    /// The request failed the user: a 5xx, a timeout or a broken connection (a 4xx is an
    /// answer: a signed-out user, a bad request).
    pub fn failed(self) -> bool {
        matches!(
            self,
            Outcome::Status(500..) | Outcome::Timeout | Outcome::Error
        )
    }
}

/// What a send is to the event it carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Delivery {
    /// The first delivery (and its retries).
    #[default]
    Original,
    /// A second copy sent at the same intended time.
    Duplicate,
    /// Sent again after it was acknowledged.
    Redelivery,
}

/// The key under which [`EndpointRecording::category_windows`] counts failed requests
/// ([`Outcome::failed`]) beside the error categories.
pub const FAILED: &str = "failed";

/// One request, with its timestamps as offsets from the run's start.
#[derive(Debug, Clone)]
pub struct Sample {
    pub endpoint: String,
    /// The stream that sent it.
    pub stream: String,
    pub intended: Duration,
    /// When a user of its stream took it from the stream's queue: after `intended` when every
    /// user of the stream was busy (the stream's concurrency ran out).
    pub taken: Duration,
    pub started: Duration,
    pub ended: Duration,
    pub outcome: Outcome,
    /// `x-db-writes` / `x-external-calls`, when the service answered with them.
    pub db_writes: Option<u32>,
    pub external_calls: Option<u32>,
    /// A retry of an earlier failed send.
    pub retry: bool,
    /// Original, a concurrent duplicate, or a redelivery of an acknowledged event.
    pub delivery: Delivery,
    /// Error categories the service reported (`x-error-category`).
    pub categories: Vec<String>,
    /// The service's own time for it (`server-timing: handler;dur=`), when it answered.
    pub service_time: Option<Duration>,
    /// A new connection's set-up time (TCP, and TLS for https), when the request opened one.
    pub connect: Option<Duration>,
}

/// Everything recorded for one endpoint.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EndpointRecording {
    /// Latency from intended send time to the end of the response.
    pub latency: Hist,
    /// The same, per 1-second window of intended send time.
    pub windows: BTreeMap<u32, Hist>,
    /// Outcome label → count.
    pub status_counts: BTreeMap<String, u64>,
    /// Error category → requests that reported it.
    pub error_categories: BTreeMap<String, u64>,
    /// The same, of the failed requests only ([`Outcome::failed`]): what the user saw, where
    /// `error_categories` also holds what the service absorbed (a stale fallback's timeout).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_categories: BTreeMap<String, u64>,
    pub requests: u64,
    /// Requests that started more than `late_after` after their intended time.
    pub late: u64,
    /// Start minus intended time, every request (0 when on time).
    pub lateness: Hist,
    pub retries: u64,
    pub db_writes_total: u64,
    pub db_writes_max: u32,
    pub external_calls_total: u64,
    pub external_calls_max: u32,
    /// Requests that reported their writes and calls (the denominators).
    pub instrumented: u64,
    /// Error categories per 1-second window of intended send time.
    #[serde(default)]
    pub category_windows: BTreeMap<u32, BTreeMap<String, u64>>,
    /// The service's own time (its `server-timing` header) per 1-second window of intended
    /// send time: a phase's service-side figures per request, within 1 % (a request the
    /// service never answered, such as one the client gave up on, is not in them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_windows: BTreeMap<u32, Hist>,
    /// Connections its requests opened, and how long each took to set up (TCP, and the TLS
    /// handshake for https): the part of the client's time spent before the request left.
    #[serde(default)]
    pub connects: u64,
    #[serde(default)]
    pub connect: Hist,
}

impl EndpointRecording {
    /// Latency histogram of the windows starting in `[from, to)` seconds.
    pub fn between(&self, from: u32, to: u32) -> Hist {
        let mut h = Hist::default();
        for (_, w) in self.windows.range(from..to) {
            h.merge(w);
        }
        h
    }

    /// The service's own times of the requests intended in `[from, to)` seconds (`None`: the
    /// service reported none in the whole run, e.g. a target that sends no `server-timing`).
    pub fn service_between(&self, from: u32, to: u32) -> Option<Hist> {
        if self.service_windows.is_empty() {
            return None;
        }
        let mut h = Hist::default();
        for (_, w) in self.service_windows.range(from..to) {
            h.merge(w);
        }
        Some(h)
    }

    /// Requests that reported `category`, in the windows starting in `[from, to)` seconds.
    pub fn category_between(&self, category: &str, from: u32, to: u32) -> u64 {
        self.category_windows
            .range(from..to)
            .filter_map(|(_, c)| c.get(category))
            .sum()
    }

    /// Adds `other` into this one.
    pub fn merge(&mut self, other: &EndpointRecording) {
        self.latency.merge(&other.latency);
        for (w, cats) in &other.category_windows {
            let mine = self.category_windows.entry(*w).or_default();
            for (k, n) in cats {
                *mine.entry(k.clone()).or_default() += n;
            }
        }
        for (w, h) in &other.windows {
            self.windows.entry(*w).or_insert_with(Hist::window).merge(h);
        }
        for (w, h) in &other.service_windows {
            self.service_windows
                .entry(*w)
                .or_insert_with(Hist::window)
                .merge(h);
        }
        for (k, n) in &other.status_counts {
            *self.status_counts.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &other.error_categories {
            *self.error_categories.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &other.failed_categories {
            *self.failed_categories.entry(k.clone()).or_default() += n;
        }
        self.requests += other.requests;
        self.late += other.late;
        self.lateness.merge(&other.lateness);
        self.retries += other.retries;
        self.db_writes_total += other.db_writes_total;
        self.db_writes_max = self.db_writes_max.max(other.db_writes_max);
        self.external_calls_total += other.external_calls_total;
        self.external_calls_max = self.external_calls_max.max(other.external_calls_max);
        self.instrumented += other.instrumented;
        self.connects += other.connects;
        self.connect.merge(&other.connect);
    }
}

/// How well the generator kept one stream's schedule.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StreamRecording {
    /// Sends (originals, retries, duplicates and redeliveries).
    pub requests: u64,
    /// Of those, second copies sent at the same time as the original.
    #[serde(default)]
    pub duplicates: u64,
    /// Of those, redeliveries of acknowledged events.
    #[serde(default)]
    pub redeliveries: u64,
    /// Sends that started more than `late_after` after their intended time.
    pub late: u64,
    /// Of those, the ones no user of the stream was free for (its concurrency ran out).
    pub late_no_user: u64,
    /// Of those, the ones a user was waiting for but woke up late: the generator's own
    /// runtime did not get the CPU in time.
    pub late_wakeup: u64,
    /// Start minus intended time, every send.
    pub lateness: Hist,
}

impl StreamRecording {
    /// Adds `other` into this one.
    pub fn merge(&mut self, other: &StreamRecording) {
        self.requests += other.requests;
        self.duplicates += other.duplicates;
        self.redeliveries += other.redeliveries;
        self.late += other.late;
        self.late_no_user += other.late_no_user;
        self.late_wakeup += other.late_wakeup;
        self.lateness.merge(&other.lateness);
    }
}

/// A run's recording: per endpoint and per stream, plus the dedupe ids the service
/// acknowledged.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Recording {
    pub endpoints: BTreeMap<String, EndpointRecording>,
    /// Per stream (by name): how well the schedule was kept.
    #[serde(default)]
    pub streams: BTreeMap<String, StreamRecording>,
    /// Dedupe ids of `EMAIL_SENT` events the service answered 2xx to.
    pub acked: BTreeSet<String>,
    /// Distinct events with a dedupe id sent (first deliveries, not retries or copies).
    #[serde(default)]
    pub sent_events: u64,
    /// Connections the client opened, by the protocol the server chose (`HTTP/1.1`,
    /// `HTTP/2`), written when the run ends.
    #[serde(default)]
    pub connections: BTreeMap<String, u64>,
}

impl Recording {
    /// Records one sample; `late_after` decides lateness.
    pub fn record(&mut self, s: &Sample, late_after: Duration) {
        let e = slot(&mut self.endpoints, &s.endpoint);
        let latency = s.ended.saturating_sub(s.intended);
        e.latency.record(latency);
        window(&mut e.windows, s.intended.as_secs() as u32).record(latency);
        if let Some(t) = s.service_time {
            window(&mut e.service_windows, s.intended.as_secs() as u32).record(t);
        }
        let mut label = [0u8; 8];
        *slot(&mut e.status_counts, s.outcome.label_in(&mut label)) += 1;
        if s.outcome.failed() {
            *e.category_windows
                .entry(s.intended.as_secs() as u32)
                .or_default()
                .entry(FAILED.to_owned())
                .or_default() += 1;
        }
        for c in &s.categories {
            *e.error_categories.entry(c.clone()).or_default() += 1;
            if s.outcome.failed() {
                *e.failed_categories.entry(c.clone()).or_default() += 1;
            }
            *e.category_windows
                .entry(s.intended.as_secs() as u32)
                .or_default()
                .entry(c.clone())
                .or_default() += 1;
        }
        e.requests += 1;
        if let Some(d) = s.connect {
            e.connects += 1;
            e.connect.record(d);
        }
        let lateness = s.started.saturating_sub(s.intended);
        let late = lateness > late_after;
        e.lateness.record(lateness);
        if late {
            e.late += 1;
        }
        let st = slot(&mut self.streams, &s.stream);
        st.requests += 1;
        match s.delivery {
            Delivery::Original => {}
            Delivery::Duplicate => st.duplicates += 1,
            Delivery::Redelivery => st.redeliveries += 1,
        }
        st.lateness.record(lateness);
        if late {
            st.late += 1;
            if s.taken.saturating_sub(s.intended) > late_after {
                st.late_no_user += 1;
            } else {
                st.late_wakeup += 1;
            }
        }
        if s.retry {
            e.retries += 1;
        }
        if let (Some(w), Some(c)) = (s.db_writes, s.external_calls) {
            e.instrumented += 1;
            e.db_writes_total += u64::from(w);
            e.db_writes_max = e.db_writes_max.max(w);
            e.external_calls_total += u64::from(c);
            e.external_calls_max = e.external_calls_max.max(c);
        }
    }

    /// Adds `other` into this one.
    pub fn merge(&mut self, other: &Recording) {
        for (name, e) in &other.endpoints {
            self.endpoints.entry(name.clone()).or_default().merge(e);
        }
        for (name, s) in &other.streams {
            self.streams.entry(name.clone()).or_default().merge(s);
        }
        self.acked.extend(other.acked.iter().cloned());
        self.sent_events += other.sent_events;
        for (protocol, n) in &other.connections {
            *self.connections.entry(protocol.clone()).or_default() += n;
        }
    }

    /// Requests sent, all endpoints.
    pub fn requests(&self) -> u64 {
        self.endpoints.values().map(|e| e.requests).sum()
    }
}

/// A window this many seconds older than the newest is packed ([`Hist::pack`]): samples are
/// recorded when they end, so a window stays open while its requests can still be in flight
/// (a client timeout, a retry's backoff). A sample later still opens it again: exact, at the
/// cost of a decode.
pub const PACK_WINDOWS_AFTER_S: u32 = 60;

/// `windows[t]`, a new window when missing. Making one packs the windows started
/// [`PACK_WINDOWS_AFTER_S`] or more before it, so a long run keeps its old seconds at a few
/// hundred bytes each.
fn window(windows: &mut BTreeMap<u32, Hist>, t: u32) -> &mut Hist {
    if !windows.contains_key(&t) {
        if let Some(before) = t.checked_sub(PACK_WINDOWS_AFTER_S) {
            windows.range_mut(..=before).for_each(|(_, w)| w.pack());
        }
        windows.insert(t, Hist::window());
    }
    windows.get_mut(&t).expect("inserted above")
}

/// `map[key]`, inserted as its default when missing: the key is copied only then (the usual
/// case, a key seen before, allocates nothing).
fn slot<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

#[cfg(test)]
mod tests;
