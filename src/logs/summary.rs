//! From log rows to requests, and from requests to what a replay and a triage need: per
//! endpoint the arrivals per second and, per minute, the production latency and status mix;
//! per error category the requests it touched.
//!
//! A request is one `requestId` (all its rows), or one row where the export has no ids. Its
//! arrival is its start: the end row's time minus its `durationMs` (the latest such start of
//! its rows, since a log line mid-request minus the full duration falls before the start), or
//! its earliest row's time when no row carries a duration. Rows of one request lie close
//! together in an export, in either time order: a request not seen for [`HORIZON_MS`] of log
//! time is complete, so memory follows the request rate, not the file's size.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;

use crate::model::StatusMix;

use super::classify::{categorize, redact, Mapped, PathMap, Target, OTHER};
use super::read::{read, ReadError, ReadStats, Row};

/// How long (log time) a request's rows may lie apart.
pub const HORIZON_MS: i64 = 10 * 60 * 1000;

/// A time window of the export, in ms since the epoch, `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub from_ms: i64,
    pub to_ms: i64,
}

/// `--window START..END` as typed: either side `HH:MM[:SS]` (UTC, on the day of the export's
/// first row) or a full time (`2026-01-23T17:58:00Z`, `2026-01-23 17:58`); either may be left
/// out (`17:58..` runs to the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    from: Option<Bound>,
    to: Option<Bound>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Bound {
    /// Seconds after midnight UTC.
    TimeOfDay(u32),
    AtMs(i64),
}

impl std::str::FromStr for WindowSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s.split_once("..").ok_or_else(|| {
            format!("window {s:?}: write START..END, e.g. 17:58..18:08 or 2026-01-23T17:58:00Z..")
        })?;
        let bound = |t: &str| -> Result<Option<Bound>, String> {
            let t = t.trim();
            if t.is_empty() {
                return Ok(None);
            }
            if let Ok(tod) = chrono::NaiveTime::parse_from_str(t, "%H:%M:%S")
                .or_else(|_| chrono::NaiveTime::parse_from_str(t, "%H:%M"))
            {
                use chrono::Timelike;
                return Ok(Some(Bound::TimeOfDay(tod.num_seconds_from_midnight())));
            }
            if let Ok(at) = chrono::DateTime::parse_from_rfc3339(t) {
                return Ok(Some(Bound::AtMs(at.timestamp_millis())));
            }
            [
                "%Y-%m-%d %H:%M:%S",
                "%Y-%m-%d %H:%M",
                "%Y-%m-%dT%H:%M:%S",
                "%Y-%m-%dT%H:%M",
            ]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(t, f).ok())
            .map(|at| Some(Bound::AtMs(at.and_utc().timestamp_millis())))
            .ok_or_else(|| {
                format!(
                    "window {s:?}: {t:?} is not a time (HH:MM[:SS] UTC, or 2026-01-23T17:58:00Z)"
                )
            })
        };
        Ok(Self {
            from: bound(a)?,
            to: bound(b)?,
            text: s.to_owned(),
        })
    }
}

impl WindowSpec {
    /// The window, times of day taken on the UTC day of `first_ms`.
    fn resolve(&self, first_ms: i64) -> Result<(Option<i64>, Option<i64>), String> {
        let midnight = first_ms.div_euclid(86_400_000) * 86_400_000;
        let at = |b: &Option<Bound>| match b {
            None => None,
            Some(Bound::TimeOfDay(s)) => Some(midnight + i64::from(*s) * 1000),
            Some(Bound::AtMs(ms)) => Some(*ms),
        };
        let (from, to) = (at(&self.from), at(&self.to));
        if let (Some(f), Some(t)) = (from, to) {
            if t <= f {
                return Err(format!(
                    "window {:?}: its end is not after its start",
                    self.text
                ));
            }
        }
        Ok((from, to))
    }
}

/// Durations in buckets 5 % apart from 1 ms to over an hour: 1.3 kB a minute of an
/// endpoint, so a day-long export's minutes stay small; quantiles are exact to 5 %.
#[derive(Debug, Clone)]
pub struct Durations {
    buckets: Vec<u32>,
    count: u64,
}

impl Durations {
    const RATIO: f64 = 1.05;
    const BUCKETS: usize = 320;

    fn new() -> Self {
        Self {
            buckets: vec![0; Self::BUCKETS],
            count: 0,
        }
    }

    fn record(&mut self, ms: f64) {
        let i = (ms.max(1.0).ln() / Self::RATIO.ln()).floor() as usize;
        let slot = i.min(Self::BUCKETS - 1);
        self.buckets[slot] = self.buckets[slot].saturating_add(1);
        self.count += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The duration at quantile `q` (0..=1), in ms: its bucket's geometric middle.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        let i = self.buckets.iter().position(|&n| {
            seen += u64::from(n);
            seen >= rank
        })?;
        Some(Self::RATIO.powf(i as f64 + 0.5).round() as u64)
    }
}

/// One endpoint's minute.
#[derive(Debug, Clone)]
pub struct Minute {
    pub statuses: StatusMix,
    /// Durations in ms (requests with one).
    pub durations: Durations,
}

impl Minute {
    fn new() -> Self {
        Self {
            statuses: StatusMix::default(),
            durations: Durations::new(),
        }
    }
}

/// One endpoint of the reference service, as the export shows it.
#[derive(Debug, Clone)]
pub struct Series {
    pub target: Target,
    /// Production `METHOD /path`s that mapped here, with their requests.
    pub production: BTreeMap<String, u64>,
    /// Requests starting in each second (epoch seconds).
    pub per_second: BTreeMap<i64, u32>,
    /// Per minute (epoch minutes).
    pub per_minute: BTreeMap<i64, Minute>,
}

/// Requests of one category on one endpoint.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CategoryCount {
    pub requests: u64,
    pub rows: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    /// One message of this kind, redacted.
    pub example: String,
}

/// What the export holds, in the window.
#[derive(Debug, Clone)]
pub struct Summary {
    pub source: String,
    pub read: ReadStats,
    pub window: Option<Window>,
    /// Requests in the window (all endpoints, unmatched and ignored ones too).
    pub requests: u64,
    /// Requests outside the window.
    pub outside_window: u64,
    /// Rows without a path (log lines of no request): used for triage only.
    pub pathless_rows: u64,
    pub series: BTreeMap<String, Series>,
    /// Unmatched `METHOD /path` → requests.
    pub unmatched: BTreeMap<String, u64>,
    /// Left out by a rule: `METHOD /path` → requests.
    pub ignored: BTreeMap<String, u64>,
    /// (category, `METHOD /path` as production logged it) → count.
    pub categories: BTreeMap<(String, String), CategoryCount>,
}

/// A request being assembled from its rows.
#[derive(Debug, Default)]
struct Pending {
    method: Option<String>,
    path: Option<String>,
    status: Option<u16>,
    duration_ms: Option<f64>,
    /// Latest `row time - duration` over rows with a duration.
    start_from_duration: Option<i64>,
    earliest_ms: Option<i64>,
    /// Log time it was last seen at.
    touched_ms: i64,
    /// (category, time, rows, example)
    categories: Vec<(&'static str, i64, u64, String)>,
}

impl Pending {
    fn add(&mut self, row: &Row) {
        self.earliest_ms = Some(self.earliest_ms.map_or(row.at_ms, |e| e.min(row.at_ms)));
        self.touched_ms = row.at_ms;
        if self.method.is_none() {
            self.method.clone_from(&row.method);
        }
        if self.path.is_none() {
            self.path.clone_from(&row.path);
        }
        if row.status.is_some() {
            self.status = row.status;
        }
        if let Some(d) = row.duration_ms {
            self.duration_ms = Some(self.duration_ms.map_or(d, |m: f64| m.max(d)));
            let start = row.at_ms - d.round() as i64;
            self.start_from_duration =
                Some(self.start_from_duration.map_or(start, |s| s.max(start)));
        }
        if let Some(c) = categorize(&row.message, row.status, row.level.as_deref()) {
            let example = if row.message.trim().is_empty() {
                format!(
                    "(no message; status {})",
                    row.status.map_or("none".into(), |s| s.to_string())
                )
            } else {
                redact(&row.message)
            };
            match self.categories.iter_mut().find(|x| x.0 == c) {
                Some(x) => {
                    x.2 += 1;
                    if x.3.starts_with("(no message") && !row.message.trim().is_empty() {
                        x.3 = example;
                    }
                }
                None => self.categories.push((c, row.at_ms, 1, example)),
            }
        }
    }

    fn start_ms(&self) -> i64 {
        self.start_from_duration
            .or(self.earliest_ms)
            .expect("a request has a row")
    }
}

struct Builder<'a> {
    map: &'a PathMap,
    window: Option<&'a WindowSpec>,
    resolved: Option<(Option<i64>, Option<i64>)>,
    pending: HashMap<String, Pending>,
    since_flush: u64,
    out: Summary,
    error: Option<String>,
}

impl Builder<'_> {
    fn row(&mut self, row: Row) {
        if self.error.is_some() {
            return;
        }
        if self.resolved.is_none() {
            match self.window.map(|w| w.resolve(row.at_ms)).transpose() {
                Ok(r) => self.resolved = Some(r.unwrap_or((None, None))),
                Err(e) => {
                    self.error = Some(e);
                    return;
                }
            }
        }
        match row.request_id.clone() {
            Some(id) => {
                self.pending.entry(id).or_default().add(&row);
                self.since_flush += 1;
                if self.since_flush >= 4096 {
                    self.since_flush = 0;
                    self.flush(Some(row.at_ms));
                }
            }
            None => {
                let mut one = Pending::default();
                one.add(&row);
                self.finish(one);
            }
        }
    }

    /// Finishes the requests not seen for the horizon (all of them with `None`).
    fn flush(&mut self, now_ms: Option<i64>) {
        let done: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| now_ms.is_none_or(|n| (n - p.touched_ms).abs() > HORIZON_MS))
            .map(|(k, _)| k.clone())
            .collect();
        for key in done {
            if let Some(p) = self.pending.remove(&key) {
                self.finish(p);
            }
        }
    }

    fn finish(&mut self, p: Pending) {
        let start = p.start_ms();
        let (from, to) = self.resolved.unwrap_or((None, None));
        if from.is_some_and(|f| start < f) || to.is_some_and(|t| start >= t) {
            self.out.outside_window += 1;
            return;
        }
        let Some(path) = p.path.as_deref() else {
            // A log line of no request (a cron's console output without the request row):
            // counted for triage, not replayed.
            self.out.pathless_rows += 1;
            self.categories(&p, "(no path)".into());
            return;
        };
        self.out.requests += 1;
        let shown = format!("{} {path}", p.method.as_deref().unwrap_or("*"));
        self.categories(&p, shown.clone());
        match self.map.map(p.method.as_deref(), path) {
            Mapped::Unmatched => *self.out.unmatched.entry(shown).or_default() += 1,
            Mapped::Ignored => *self.out.ignored.entry(shown).or_default() += 1,
            Mapped::To(target) => {
                let label = target.label();
                let series = self.out.series.entry(label).or_insert_with(|| Series {
                    target,
                    production: BTreeMap::new(),
                    per_second: BTreeMap::new(),
                    per_minute: BTreeMap::new(),
                });
                *series.production.entry(shown).or_default() += 1;
                *series.per_second.entry(start.div_euclid(1000)).or_default() += 1;
                let minute = series
                    .per_minute
                    .entry(start.div_euclid(60_000))
                    .or_insert_with(Minute::new);
                minute.statuses.add(p.status);
                if let Some(d) = p.duration_ms {
                    minute.durations.record(d);
                }
            }
        }
    }

    fn categories(&mut self, p: &Pending, shown: String) {
        // A request's 5xx row says nothing a categorized log line of it has not said.
        let named = p.categories.iter().any(|c| c.0 != OTHER);
        for (name, at, rows, example) in &p.categories {
            if named && *name == OTHER {
                continue;
            }
            let c = self
                .out
                .categories
                .entry(((*name).to_owned(), shown.clone()))
                .or_insert_with(|| CategoryCount {
                    first_ms: *at,
                    last_ms: *at,
                    example: example.clone(),
                    ..Default::default()
                });
            c.requests += 1;
            c.rows += rows;
            c.first_ms = c.first_ms.min(*at);
            c.last_ms = c.last_ms.max(*at);
        }
    }
}

/// Reads `path` and sums it up: `window` cuts by request start; `strict` makes a malformed row
/// fatal.
pub fn summarize(
    path: &Path,
    map: &PathMap,
    window: Option<&WindowSpec>,
    strict: bool,
) -> Result<Summary, String> {
    let mut b = Builder {
        map,
        window,
        resolved: None,
        pending: HashMap::new(),
        since_flush: 0,
        out: Summary {
            source: path.display().to_string(),
            read: ReadStats::default(),
            window: None,
            requests: 0,
            outside_window: 0,
            pathless_rows: 0,
            series: BTreeMap::new(),
            unmatched: BTreeMap::new(),
            ignored: BTreeMap::new(),
            categories: BTreeMap::new(),
        },
        error: None,
    };
    let stats = read(path, strict, |row| b.row(row)).map_err(|e: ReadError| e.to_string())?;
    if let Some(e) = b.error.take() {
        return Err(format!("{}: {e}", path.display()));
    }
    b.flush(None);
    let mut out = b.out;
    out.read = stats;
    // The window: as asked, else from the first to the last second with a request.
    let seconds = || {
        out.series
            .values()
            .flat_map(|s| s.per_second.keys().copied())
    };
    let (lo, hi) = (seconds().min(), seconds().max());
    let (from, to) = b.resolved.unwrap_or((None, None));
    out.window = match (
        from.or(lo.map(|s| s * 1000)),
        to.or(hi.map(|s| (s + 1) * 1000)),
    ) {
        (Some(from_ms), Some(to_ms)) if to_ms > from_ms => Some(Window { from_ms, to_ms }),
        _ => None,
    };
    Ok(out)
}

impl Summary {
    /// The start of the minute the window starts in, ms since the epoch: recorded minute 0,
    /// as `[observed]` counts minutes and the replay plays them.
    pub fn first_minute_ms(&self) -> Option<i64> {
        self.window.map(|w| w.from_ms.div_euclid(60_000) * 60_000)
    }

    /// Per endpoint label, the requests in each second from the window's first minute (index
    /// 0 = that minute's first second; seconds 60m.. are recorded minute m, the minute
    /// `[observed]` holds production's figures of, whatever second the window starts at).
    pub fn seconds(&self) -> BTreeMap<String, Vec<u32>> {
        let (Some(w), Some(start_ms)) = (self.window, self.first_minute_ms()) else {
            return BTreeMap::new();
        };
        let first = start_ms / 1000;
        let n = (w.to_ms - start_ms + 999).div_euclid(1000) as usize;
        self.series
            .iter()
            .map(|(label, s)| {
                let mut v = vec![0u32; n];
                for (sec, c) in &s.per_second {
                    if let Some(slot) = usize::try_from(sec - first).ok().and_then(|i| v.get_mut(i))
                    {
                        *slot += c;
                    }
                }
                (label.clone(), v)
            })
            .collect()
    }

    /// The status mix of `label` over all its minutes.
    pub fn statuses(&self, label: &str) -> StatusMix {
        let mut mix = StatusMix::default();
        if let Some(s) = self.series.get(label) {
            for m in s.per_minute.values() {
                mix.merge(&m.statuses);
            }
        }
        mix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary_of(text: &str, window: Option<&str>) -> Result<Summary, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, text).unwrap();
        let w = window.map(|w| w.parse::<WindowSpec>().unwrap());
        summarize(&path, &PathMap::defaults(), w.as_ref(), false)
    }

    const HEADER: &str = "timestampInMs,requestPath,requestMethod,responseStatusCode,durationMs,level,message,requestId\n";

    #[test]
    fn rows_of_one_request_are_one_arrival_at_its_start() {
        // Request a: a log line at 10.5 s, the end row at 12.0 s after 2 s → started at 10.0 s.
        let text = format!(
            "{HEADER}10500,/api/webhooks/email,POST,,,,enqueue,a\n12000,/api/webhooks/email,POST,200,2000,,,a\n11030,/,GET,200,30,,,b\n11100,/settings,GET,200,5,,,c\n"
        );
        let s = summary_of(&text, None).unwrap();
        assert_eq!(s.requests, 3);
        let secs = s.seconds();
        // From the window's first minute (the epoch's): seconds 10 and 11.
        assert_eq!(secs["POST /api/webhooks/email"][10..], [1, 0]);
        assert_eq!(secs["GET /"][10..], [0, 1]);
        assert!(secs["GET /"][..10].iter().all(|&n| n == 0));
        assert_eq!(s.unmatched["GET /settings"], 1, "never dropped silently");
    }

    #[test]
    fn a_window_cuts_by_start_and_counts_what_it_left_out() {
        let text = format!("{HEADER}1769190660000,/,GET,200,1,,,a\n1769191080000,/,GET,200,1,,,b\n1769191200000,/,GET,200,1,,,c\n");
        // 17:51:00, 17:58:00, 18:00:00 on 2026-01-23
        let s = summary_of(&text, Some("17:58..18:00")).unwrap();
        assert_eq!(s.requests, 1);
        assert_eq!(s.outside_window, 2);
        assert_eq!(s.window.unwrap().to_ms - s.window.unwrap().from_ms, 120_000);
        let err = summary_of(&text, Some("18:00..17:58")).unwrap_err();
        assert!(
            err.contains("x.csv: window \"18:00..17:58\": its end is not after its start"),
            "{err}"
        );
        assert!("17:58"
            .parse::<WindowSpec>()
            .unwrap_err()
            .contains("START..END"));
    }

    #[test]
    fn categories_are_counted_per_request() {
        let text = format!(
            "{HEADER}1000,/api/webhooks/email,POST,504,60000,error,Task timed out after 60 seconds,a\n900,/api/webhooks/email,POST,504,60000,error,Task timed out after 60 seconds,a\n2000,/,POST,500,300,error,canceling statement due to statement timeout,b\n"
        );
        let s = summary_of(&text, None).unwrap();
        let c = &s.categories[&(
            "function_timeout".to_string(),
            "POST /api/webhooks/email".to_string(),
        )];
        assert_eq!((c.requests, c.rows), (1, 2));
        assert!(s
            .categories
            .contains_key(&("db_timeout".to_string(), "POST /".to_string())));
        assert_eq!(s.statuses("POST /api/webhooks/email").timeout, 1);
    }

    #[test]
    fn duration_quantiles_are_within_five_percent() {
        let mut d = Durations::new();
        assert_eq!(d.quantile_ms(0.5), None);
        for ms in 1..=1000 {
            d.record(f64::from(ms));
        }
        let near = |got: u64, want: f64| (got as f64 - want).abs() <= want * 0.05;
        assert!(
            near(d.quantile_ms(0.5).unwrap(), 500.0),
            "{:?}",
            d.quantile_ms(0.5)
        );
        assert!(
            near(d.quantile_ms(0.95).unwrap(), 950.0),
            "{:?}",
            d.quantile_ms(0.95)
        );
        d.record(60_000.0);
        assert!(near(d.quantile_ms(1.0).unwrap(), 60_000.0));
    }
}
