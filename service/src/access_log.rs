//! An access log in the shape of a platform's log drain: one JSON line per answered request
//! (end time, method, path, status, duration), written when [`ACCESS_LOG_ENV`] names a file.
//! It is what a production export holds and nothing more (no query string, no client address,
//! no workspace), so the harness can turn a run of this service into a "production" export
//! whose knobs are known, and check that calibrating against it recovers them.
//!
//! Each line goes to the file in one `write` on a descriptor opened for appending, so the
//! instances of a fleet can share one file without interleaving inside a line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The variable that turns the access log on: the file to append to (created if missing).
pub const ACCESS_LOG_ENV: &str = "ACCESS_LOG";

/// The open access log.
pub struct AccessLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AccessLog {
    /// Opens [`ACCESS_LOG_ENV`]'s file, when it is set (an empty value is "off").
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        match std::env::var_os(ACCESS_LOG_ENV) {
            Some(p) if !p.is_empty() => Self::open(Path::new(&p)).map(Some),
            _ => Ok(None),
        }
    }

    /// Opens `path` for appending.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                anyhow::anyhow!("{ACCESS_LOG_ENV}={}: cannot open: {e}", path.display())
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Appends one request. A failed write is logged once per failure and never fails the
    /// request.
    pub fn write(&self, method: &str, path: &str, status: u16, took: Duration) {
        let line = line(SystemTime::now(), method, path, status, took);
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(line.as_bytes()) {
            tracing::warn!(file = %self.path.display(), error = %e, "cannot write the access log");
        }
    }
}

/// One line: the fields a log drain names (`timestamp` in ms since the epoch, at the end of the
/// request, as a platform logs it; `durationMs`), newline-terminated.
fn line(now: SystemTime, method: &str, path: &str, status: u16, took: Duration) -> String {
    let at_ms = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut text = serde_json::json!({
        "timestamp": at_ms,
        "method": method,
        "path": path,
        "statusCode": status,
        "durationMs": (took.as_secs_f64() * 1e4).round() / 10.0,
    })
    .to_string();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_the_end_time_the_status_and_the_duration() {
        let at = UNIX_EPOCH + Duration::from_millis(1_769_190_660_123);
        let text = line(
            at,
            "POST",
            "/api/webhooks/email",
            504,
            Duration::from_micros(7_000_450),
        );
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["timestamp"], 1_769_190_660_123u64);
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/api/webhooks/email");
        assert_eq!(v["statusCode"], 504);
        assert_eq!(v["durationMs"], 7000.5);
    }

    #[test]
    fn two_writers_append_whole_lines() {
        let dir = std::env::temp_dir().join(format!("access-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.jsonl");
        let _ = std::fs::remove_file(&path);
        let (a, b) = (
            AccessLog::open(&path).unwrap(),
            AccessLog::open(&path).unwrap(),
        );
        std::thread::scope(|s| {
            for log in [&a, &b] {
                s.spawn(move || {
                    for i in 0..500 {
                        log.write("GET", "/", 200, Duration::from_millis(i));
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        for l in lines {
            serde_json::from_str::<serde_json::Value>(l).expect("a whole JSON line");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
