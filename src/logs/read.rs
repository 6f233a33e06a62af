//! Reading a log export, one row at a time: a Vercel runtime-logs CSV (columns found by header
//! name, in any order, others ignored) or JSON lines as a log drain sends them. Memory does not
//! grow with the file: rows are handed to a callback as they are read.
//!
//! A row that cannot be used (no time, a status or duration that is not a number, fewer fields
//! than the header) is *malformed*: it is counted and its line number kept, and the reading goes
//! on — or, with `strict`, stops with an error naming the file, the line and the value.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// One log row, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Line of the file where the row starts (the CSV header is line 1).
    pub line: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// `GET`, `POST`, … (upper case), when the row says.
    pub method: Option<String>,
    /// The path, without a scheme, a host or a query (`/api/webhooks/email`).
    pub path: Option<String>,
    /// The response status; `None` for `-1` or empty (no response: the function was cut off,
    /// or the row is a log line without one).
    pub status: Option<u16>,
    pub duration_ms: Option<f64>,
    /// Lower case; often empty in Vercel's export.
    pub level: Option<String>,
    pub message: String,
    pub function: Option<String>,
    pub request_id: Option<String>,
}

/// A row that could not be used, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Malformed {
    pub line: u64,
    pub reason: String,
}

/// What went wrong reading the file as a whole (not one row of it).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: {message}", .path.display())]
    File { path: PathBuf, message: String },
    #[error("{}: line {line}: {reason} (--strict makes a malformed row fatal)", .path.display())]
    Strict {
        path: PathBuf,
        line: u64,
        reason: String,
    },
}

/// What a pass over the file saw.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ReadStats {
    /// Rows read, malformed ones included (not the header).
    pub rows: u64,
    /// Every malformed row counted here…
    pub malformed: u64,
    /// …and the first [`KEPT_MALFORMED`] of them listed.
    pub malformed_rows: Vec<Malformed>,
    /// `csv` or `jsonl`.
    pub format: String,
}

/// Malformed rows listed by line (all of them are counted).
pub const KEPT_MALFORMED: usize = 20;

impl ReadStats {
    fn malformed(&mut self, line: u64, reason: String) {
        self.malformed += 1;
        if self.malformed_rows.len() < KEPT_MALFORMED {
            self.malformed_rows.push(Malformed { line, reason });
        }
    }
}

/// Reads `path` (CSV, or JSON lines when the name ends in `.jsonl`/`.ndjson` or the first
/// character is `{`), calling `each` for every usable row in file order.
pub fn read(path: &Path, strict: bool, mut each: impl FnMut(Row)) -> Result<ReadStats, ReadError> {
    let file_error = |message: String| ReadError::File {
        path: path.to_path_buf(),
        message,
    };
    let file = File::open(path).map_err(|e| file_error(format!("cannot open: {e}")))?;
    let mut input = BufReader::with_capacity(1 << 16, file);
    let first = input
        .fill_buf()
        .map_err(|e| file_error(format!("cannot read: {e}")))?
        .iter()
        .copied()
        .find(|b| !b.is_ascii_whitespace() && *b != 0xEF && *b != 0xBB && *b != 0xBF);
    let Some(first) = first else {
        return Err(file_error(
            "the file is empty: expected a CSV header (Vercel's runtime-log export) or JSON lines"
                .into(),
        ));
    };
    let by_name = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "jsonl" | "ndjson"));
    let mut stats = ReadStats::default();
    let mut on_bad = |stats: &mut ReadStats, line: u64, reason: String| {
        if strict {
            Err(ReadError::Strict {
                path: path.to_path_buf(),
                line,
                reason: reason.clone(),
            })
        } else {
            stats.malformed(line, reason);
            Ok(())
        }
    };
    if by_name || first == b'{' {
        stats.format = "jsonl".into();
        read_jsonl(input, &mut stats, &mut on_bad, &mut each, &file_error)?;
    } else {
        stats.format = "csv".into();
        read_csv(input, &mut stats, &mut on_bad, &mut each, &file_error)?;
    }
    Ok(stats)
}

type OnBad<'a> = dyn FnMut(&mut ReadStats, u64, String) -> Result<(), ReadError> + 'a;

/// Where each column we use sits in the header.
#[derive(Debug, Default)]
struct Columns {
    time_ms: Option<usize>,
    time_utc: Option<usize>,
    path: Option<usize>,
    method: Option<usize>,
    status: Option<usize>,
    duration: Option<usize>,
    level: Option<usize>,
    message: Option<usize>,
    function: Option<usize>,
    request_id: Option<usize>,
}

impl Columns {
    fn from_header(header: &csv::StringRecord) -> Result<Self, String> {
        let mut c = Columns::default();
        for (i, name) in header.iter().enumerate() {
            let slot = match name.trim().trim_start_matches('\u{feff}') {
                "timestampInMs" => &mut c.time_ms,
                "TimeUTC" => &mut c.time_utc,
                "requestPath" => &mut c.path,
                "requestMethod" => &mut c.method,
                "responseStatusCode" => &mut c.status,
                "durationMs" => &mut c.duration,
                "level" => &mut c.level,
                "message" => &mut c.message,
                "function" => &mut c.function,
                "requestId" => &mut c.request_id,
                _ => continue,
            };
            slot.get_or_insert(i);
        }
        let mut missing = Vec::new();
        if c.time_ms.is_none() && c.time_utc.is_none() {
            missing.push("`timestampInMs` or `TimeUTC` column");
        }
        if c.path.is_none() {
            missing.push("`requestPath` column");
        }
        if missing.is_empty() {
            Ok(c)
        } else {
            let found: Vec<&str> = header.iter().take(12).collect();
            Err(format!(
                "line 1: the header has no {} (found: {}{}) — expected Vercel's runtime-log CSV export, or JSON lines from a log drain",
                missing.join(" and no "),
                found.join(", "),
                if header.len() > 12 { ", …" } else { "" }
            ))
        }
    }
}

fn read_csv(
    input: impl Read,
    stats: &mut ReadStats,
    on_bad: &mut OnBad<'_>,
    each: &mut dyn FnMut(Row),
    file_error: &dyn Fn(String) -> ReadError,
) -> Result<(), ReadError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(input);
    let header = reader
        .headers()
        .map_err(|e| file_error(format!("line 1: cannot read the CSV header: {e}")))?
        .clone();
    let cols = Columns::from_header(&header).map_err(file_error)?;
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                // A broken record (e.g. invalid UTF-8): the reader resumes at the next one.
                let line = e.position().map_or(line, |p| p.line());
                stats.rows += 1;
                on_bad(stats, line, format!("unreadable CSV record: {e}"))?;
                continue;
            }
        }
        let line = record.position().map_or(line, |p| p.line());
        stats.rows += 1;
        if record.len() == 1 && record.get(0).is_some_and(|f| f.trim().is_empty()) {
            stats.rows -= 1; // a blank line
            continue;
        }
        if record.len() < header.len() {
            on_bad(
                stats,
                line,
                format!(
                    "{} fields where the header has {} (an unquoted comma or a cut-off row?)",
                    record.len(),
                    header.len()
                ),
            )?;
            continue;
        }
        let field = |i: Option<usize>| i.and_then(|i| record.get(i)).map(str::trim);
        match csv_row(&cols, line, field) {
            Ok(row) => each(row),
            Err(reason) => on_bad(stats, line, reason)?,
        }
    }
    Ok(())
}

fn csv_row<'a>(
    cols: &Columns,
    line: u64,
    field: impl Fn(Option<usize>) -> Option<&'a str>,
) -> Result<Row, String> {
    let at_ms = match (field(cols.time_ms), field(cols.time_utc)) {
        (Some(ms), _) if !ms.is_empty() => ms
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(|v| v as i64)
            .ok_or_else(|| format!("timestampInMs {ms:?} is not a number of milliseconds"))?,
        (_, Some(utc)) if !utc.is_empty() => parse_time(utc)
            .ok_or_else(|| format!("TimeUTC {utc:?} is not a time (e.g. 2026-01-23 17:51:02)"))?,
        _ => return Err("no time: timestampInMs and TimeUTC are empty".into()),
    };
    let status = parse_status(field(cols.status))?;
    let duration_ms = parse_duration(field(cols.duration))?;
    let text = |i| field(i).filter(|s| !s.is_empty()).map(str::to_owned);
    Ok(Row {
        line,
        at_ms,
        method: text(cols.method).map(|m| m.to_ascii_uppercase()),
        path: field(cols.path).and_then(normalise_path),
        status,
        duration_ms,
        level: text(cols.level).map(|l| l.to_ascii_lowercase()),
        message: field(cols.message).unwrap_or("").to_owned(),
        function: text(cols.function),
        request_id: text(cols.request_id),
    })
}

fn parse_status(s: Option<&str>) -> Result<Option<u16>, String> {
    match s {
        None | Some("") | Some("-1") => Ok(None),
        Some(v) => match v.parse::<u16>() {
            Ok(code) if (100..600).contains(&code) => Ok(Some(code)),
            _ => Err(format!(
                "responseStatusCode {v:?} is not an HTTP status (100–599, or -1/empty for none)"
            )),
        },
    }
}

fn parse_duration(s: Option<&str>) -> Result<Option<f64>, String> {
    match s {
        None | Some("") | Some("-1") => Ok(None),
        Some(v) => match v.parse::<f64>() {
            Ok(d) if d.is_finite() && d >= 0.0 => Ok(Some(d)),
            _ => Err(format!("durationMs {v:?} is not a number of milliseconds")),
        },
    }
}

/// `2026-01-23 17:51:02[.123]`, RFC 3339, or a number of milliseconds.
fn parse_time(s: &str) -> Option<i64> {
    if let Ok(ms) = s.parse::<f64>() {
        return ms.is_finite().then_some(ms as i64);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc().timestamp_millis())
}

/// The path alone: `https://app.example.com/api/x?y=1` and `app.example.com/api/x` → `/api/x`.
/// `None` when there is no path at all.
pub fn normalise_path(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    let no_scheme = raw.split_once("://").map_or(raw, |(_, rest)| rest);
    let path = if no_scheme.starts_with('/') {
        no_scheme
    } else {
        // A host first: the path starts at its first slash (a bare host is `/`).
        no_scheme.find('/').map_or("/", |i| &no_scheme[i..])
    };
    let path = path.split(['?', '#']).next().unwrap_or("/");
    Some(if path.is_empty() {
        "/".into()
    } else {
        path.into()
    })
}

fn read_jsonl(
    input: impl BufRead,
    stats: &mut ReadStats,
    on_bad: &mut OnBad<'_>,
    each: &mut dyn FnMut(Row),
    file_error: &dyn Fn(String) -> ReadError,
) -> Result<(), ReadError> {
    for (i, line) in input.lines().enumerate() {
        let number = i as u64 + 1;
        let text = line.map_err(|e| file_error(format!("line {number}: cannot read: {e}")))?;
        if text.trim().is_empty() {
            continue;
        }
        stats.rows += 1;
        match json_row(number, &text) {
            Ok(row) => each(row),
            Err(reason) => on_bad(stats, number, reason)?,
        }
    }
    Ok(())
}

fn json_row(line: u64, text: &str) -> Result<Row, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    // A drain nests the request under `proxy` for some sources; take the top level first.
    let proxy = obj.get("proxy").and_then(|p| p.as_object());
    let get = |k: &str| obj.get(k).or_else(|| proxy.and_then(|p| p.get(k)));
    let str_of = |k: &str| {
        get(k).and_then(|v| match v {
            serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    let at_ms = match get("timestamp") {
        Some(serde_json::Value::Number(n)) => n
            .as_f64()
            .map(|v| v as i64)
            .ok_or("`timestamp` is not a number")?,
        Some(serde_json::Value::String(s)) => {
            parse_time(s).ok_or_else(|| format!("`timestamp` {s:?} is not a time"))?
        }
        _ => return Err("no `timestamp`".into()),
    };
    let status = parse_status(str_of("statusCode").as_deref())
        .map_err(|e| e.replace("responseStatusCode", "statusCode"))?;
    let duration_ms = parse_duration(str_of("durationMs").or(str_of("duration")).as_deref())?;
    Ok(Row {
        line,
        at_ms,
        method: str_of("method").map(|m| m.to_ascii_uppercase()),
        path: str_of("path").and_then(|p| normalise_path(&p)),
        status,
        duration_ms,
        level: str_of("level").map(|l| l.to_ascii_lowercase()),
        message: str_of("message").unwrap_or_default(),
        function: str_of("function").or(str_of("entrypoint")),
        request_id: str_of("requestId"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_of(name: &str, text: &str, strict: bool) -> Result<(Vec<Row>, ReadStats), ReadError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let mut rows = Vec::new();
        let stats = read(&path, strict, |r| rows.push(r))?;
        Ok((rows, stats))
    }

    const HEADER: &str = "TimeUTC,timestampInMs,requestPath,requestMethod,responseStatusCode,durationMs,level,message,requestId\n";

    #[test]
    fn quoted_commas_and_newlines_stay_in_their_field() {
        let text = format!(
            "{HEADER}2026-01-23 17:51:00,1769190660000,app.example.com/api/webhooks/email?x=1,POST,504,60000,error,\"Task timed out, after 60 s\nsecond line\",r1\n2026-01-23 17:51:01,1769190661000,/,GET,200,12,,plain,r2\n"
        );
        let (rows, stats) = rows_of("a.csv", &text, true).unwrap();
        assert_eq!(stats.rows, 2);
        assert_eq!(rows[0].message, "Task timed out, after 60 s\nsecond line");
        assert_eq!(rows[0].path.as_deref(), Some("/api/webhooks/email"));
        assert_eq!(rows[0].status, Some(504));
        assert_eq!(
            rows[1].line, 4,
            "the second row starts after the quoted newline"
        );
        assert_eq!(rows[1].level, None, "an empty level is none");
    }

    #[test]
    fn malformed_rows_are_counted_by_line_or_fatal_with_strict() {
        let text = format!(
            "{HEADER},oops,/,GET,200,1,,m,r1\n2026-01-23 17:51:01,1769190661000,/,GET,abc,1,,m,r2\nshort,row\n2026-01-23 17:51:02,1769190662000,/,GET,-1,,,m,r3\n"
        );
        let (rows, stats) = rows_of("b.csv", &text, false).unwrap();
        assert_eq!(rows.len(), 1, "only the last row is usable");
        assert_eq!(rows[0].status, None, "-1 is no response");
        assert_eq!(stats.malformed, 3);
        let lines: Vec<u64> = stats.malformed_rows.iter().map(|m| m.line).collect();
        assert_eq!(lines, [2, 3, 4]);
        assert!(stats.malformed_rows[1].reason.contains("\"abc\""));
        let err = rows_of("b.csv", &text, true).unwrap_err().to_string();
        assert!(
            err.contains("b.csv: line 2: timestampInMs \"oops\""),
            "{err}"
        );
    }

    #[test]
    fn columns_are_found_by_name_and_optional_ones_may_be_missing() {
        let text = "message,requestPath,TimeUTC\nhello,/api/cron/followups,2026-01-23T17:51:00Z\n";
        let (rows, _) = rows_of("c.csv", text, true).unwrap();
        assert_eq!(rows[0].at_ms, 1_769_190_660_000);
        assert_eq!(rows[0].method, None);
        assert_eq!(rows[0].path.as_deref(), Some("/api/cron/followups"));
    }

    #[test]
    fn an_empty_file_and_a_wrong_header_say_what_was_expected() {
        let err = rows_of("e.csv", "  \n", false).unwrap_err().to_string();
        assert!(err.contains("e.csv: the file is empty"), "{err}");
        let err = rows_of("w.csv", "when,where\n1,/\n", false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("w.csv: line 1: the header has no `timestampInMs` or `TimeUTC` column and no `requestPath` column (found: when, where)"),
            "{err}"
        );
    }

    #[test]
    fn json_lines_from_a_drain() {
        let text = "{\"timestamp\":1769190660000,\"path\":\"/api/webhooks/email\",\"statusCode\":-1,\"level\":\"error\",\"message\":\"Task timed out\",\"requestId\":\"a\"}\nnot json\n{\"timestamp\":\"2026-01-23T17:51:01Z\",\"path\":\"https://h.example/\",\"statusCode\":200,\"method\":\"get\"}\n";
        let (rows, stats) = rows_of("d.jsonl", text, false).unwrap();
        assert_eq!(stats.format, "jsonl");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].status, None);
        assert_eq!(rows[1].path.as_deref(), Some("/"));
        assert_eq!(rows[1].method.as_deref(), Some("GET"));
        assert_eq!(stats.malformed_rows[0].line, 2);
    }

    #[test]
    fn paths_lose_scheme_host_and_query() {
        assert_eq!(normalise_path("https://a.b/x/y?z").as_deref(), Some("/x/y"));
        assert_eq!(normalise_path("a.b").as_deref(), Some("/"));
        assert_eq!(normalise_path("/").as_deref(), Some("/"));
        assert_eq!(normalise_path(" ").as_deref(), None);
    }
}
