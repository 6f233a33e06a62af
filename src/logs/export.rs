//! `logs export`: a service's access log (`matrix --access-log`) written as a production log
//! export — Vercel's runtime-log CSV, newest row first, as the platform hands it out — with its
//! time stretched by a known factor. A world run here with known knobs becomes a "production"
//! whose parameters `calibrate` must recover: the stretch stands for production's slower clock
//! (a replay at `--speed F` of an export stretched `F`× sends at the run's own rate).
//!
//! Stretching maps each request's start `s` to `s0 + (s − s0)·F` and its duration `d` to `d·F`
//! (`s0`: the first start), so arrival rates divide by `F` and every duration, the function
//! limit's cut-offs included, is `F`× longer: the export of a world `F`× slower.

use std::io::Write;

use super::read::Row;

/// The columns written, in Vercel's names (a subset of its export; the reader needs no more).
pub const HEADER: &str =
    "TimeUTC,timestampInMs,requestPath,requestMethod,responseStatusCode,requestId,durationMs,level,message";

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exported {
    pub rows: u64,
    /// Rows left out: no duration or no path (an access log line always has both).
    pub skipped: u64,
    /// First start and last end, in the export's (stretched) time, ms since the epoch.
    pub first_ms: i64,
    pub last_ms: i64,
}

/// One request, stretched.
#[derive(Debug, Clone, PartialEq)]
struct Request {
    start_ms: f64,
    duration_ms: f64,
    method: String,
    path: String,
    status: Option<u16>,
}

/// Writes `rows` (an access log's, any order) as a CSV export stretched `slower`× (≥ 1 is the
/// usual use; any positive factor is taken).
pub fn export(rows: Vec<Row>, slower: f64, out: &mut dyn Write) -> std::io::Result<Exported> {
    assert!(slower.is_finite() && slower > 0.0, "a positive stretch");
    let mut skipped = 0;
    let mut requests: Vec<Request> = rows
        .into_iter()
        .filter_map(|r| match (r.duration_ms, r.path) {
            (Some(d), Some(path)) => Some(Request {
                start_ms: r.at_ms as f64 - d,
                duration_ms: d,
                method: r.method.unwrap_or_else(|| "GET".into()),
                path,
                status: r.status,
            }),
            _ => {
                skipped += 1;
                None
            }
        })
        .collect();
    let s0 = requests
        .iter()
        .map(|r| r.start_ms)
        .fold(f64::INFINITY, f64::min);
    for r in &mut requests {
        r.start_ms = s0 + (r.start_ms - s0) * slower;
        r.duration_ms *= slower;
    }
    let end = |r: &Request| (r.start_ms + r.duration_ms).round() as i64;
    // Newest first, as the platform exports; ties by start, then path, for a stable file.
    requests.sort_by(|a, b| {
        end(b)
            .cmp(&end(a))
            .then(b.start_ms.total_cmp(&a.start_ms))
            .then_with(|| a.path.cmp(&b.path))
    });
    writeln!(out, "{HEADER}")?;
    let mut exported = Exported {
        rows: 0,
        skipped,
        first_ms: if requests.is_empty() {
            0
        } else {
            s0.round() as i64
        },
        last_ms: requests.first().map_or(0, end),
    };
    for (i, r) in requests.iter().enumerate() {
        let at = end(r);
        let utc = chrono::DateTime::from_timestamp_millis(at)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        let (level, message) = match r.status {
            Some(504) => (
                "error",
                format!("Task timed out after {:.2} seconds", r.duration_ms / 1000.0),
            ),
            Some(s) if s >= 500 => ("error", String::new()),
            _ => ("", String::new()),
        };
        writeln!(
            out,
            "{utc},{at},{path},{method},{status},exp-{id:07},{duration},{level},{message}",
            path = csv_field(&r.path),
            method = r.method,
            status = r.status.map_or("-1".into(), |s| s.to_string()),
            id = requests.len() - i,
            duration = r.duration_ms.round() as i64,
        )?;
        exported.rows += 1;
    }
    Ok(exported)
}

/// A field quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::read::read;

    fn row(end_ms: i64, d: f64, path: &str, status: u16) -> Row {
        Row {
            line: 0,
            at_ms: end_ms,
            method: Some("POST".into()),
            path: Some(path.into()),
            status: Some(status),
            duration_ms: Some(d),
            level: None,
            message: String::new(),
            function: None,
            request_id: None,
        }
    }

    fn read_back(text: &[u8]) -> Vec<Row> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.csv");
        std::fs::write(&path, text).unwrap();
        let mut rows = Vec::new();
        let stats = read(&path, true, |r| rows.push(r)).unwrap();
        assert_eq!(stats.format, "csv");
        rows
    }

    #[test]
    fn a_stretch_multiplies_gaps_and_durations_from_the_first_start() {
        // Starts at 1000, 1500 and 3000 ms; durations 100, 400, 60 ms.
        let rows = vec![
            row(1_500 + 400, 400.0, "/", 200),
            row(1_000 + 100, 100.0, "/api/webhooks/email", 200),
            row(3_000 + 60, 60.0, "/", 504),
        ];
        let mut text = Vec::new();
        let done = export(rows, 10.0, &mut text).unwrap();
        assert_eq!((done.rows, done.skipped), (3, 0));
        assert_eq!(done.first_ms, 1_000);
        let back = read_back(&text);
        // Newest first: the 504 (start 1000 + 2000·10, end +600), then the 200 on / …
        let starts_and_durations: Vec<(i64, f64)> = back
            .iter()
            .map(|r| {
                (
                    r.at_ms - r.duration_ms.unwrap() as i64,
                    r.duration_ms.unwrap(),
                )
            })
            .collect();
        assert_eq!(
            starts_and_durations,
            vec![(21_000, 600.0), (6_000, 4_000.0), (1_000, 1_000.0)]
        );
        assert_eq!(back[0].status, Some(504));
        assert!(back[0]
            .message
            .starts_with("Task timed out after 0.60 seconds"));
        assert_eq!(back[2].path.as_deref(), Some("/api/webhooks/email"));
    }

    #[test]
    fn the_export_sums_up_as_the_access_log_did() {
        use crate::logs::{summarize, PathMap};
        let dir = tempfile::tempdir().unwrap();
        // An access log as the service writes it: ascending end times.
        let mut jsonl = String::new();
        for i in 0..300i64 {
            let (path, status) = match i % 3 {
                0 => ("/api/webhooks/email", 200),
                1 => ("/", if i % 2 == 0 { 504 } else { 200 }),
                _ => ("/api/actions/inbox-counts", 200),
            };
            jsonl.push_str(&format!(
                "{{\"timestamp\":{},\"method\":\"{}\",\"path\":\"{path}\",\"statusCode\":{status},\"durationMs\":{}}}\n",
                1_769_190_000_000i64 + i * 200 + 50,
                if path == "/" { "GET" } else { "POST" },
                50 + i % 7
            ));
        }
        let log = dir.path().join("a.jsonl");
        std::fs::write(&log, &jsonl).unwrap();
        let mut rows = Vec::new();
        read(&log, true, |r| rows.push(r)).unwrap();
        let csv = dir.path().join("export.csv");
        let mut file = std::fs::File::create(&csv).unwrap();
        export(rows, 1.0, &mut file).unwrap();
        drop(file);
        let map = PathMap::defaults();
        let a = summarize(&log, &map, None, true).unwrap();
        let b = summarize(&csv, &map, None, true).unwrap();
        assert_eq!(a.requests, 300);
        assert_eq!(b.requests, a.requests);
        assert_eq!(
            b.seconds(),
            a.seconds(),
            "the same arrivals, second by second"
        );
        for label in a.seconds().keys() {
            assert_eq!(b.statuses(label), a.statuses(label), "{label}");
        }
    }
}
