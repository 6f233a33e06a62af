//! Captures the JSON log lines emitted on this thread (tests run the service on a
//! current-thread runtime, so its tasks log here too).

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tracing::subscriber::DefaultGuard;

#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Starts capturing DEBUG and above on this thread until the guard drops.
    pub fn start() -> (Self, DefaultGuard) {
        let me = Self::default();
        let buf = me.0.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || Sink(buf.clone()))
            .finish();
        (me, tracing::subscriber::set_default(subscriber))
    }

    /// Every captured line, parsed.
    pub fn lines(&self) -> Vec<Value> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The lines at `level` (e.g. "ERROR") whose text contains `needle`.
    pub fn at(&self, level: &str, needle: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["level"] == level && l.to_string().contains(needle))
            .collect()
    }

    /// All captured text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
