//! Step-level timing, logged only when `LOG_SLOW_PATHS` is on (debugging in production).

use std::time::Instant;

/// Marks the end of each step of a path and logs them together.
#[derive(Debug)]
pub struct Steps {
    enabled: bool,
    last: Instant,
    marks: Vec<(&'static str, u128)>,
}

impl Steps {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            last: Instant::now(),
            marks: Vec::new(),
        }
    }

    /// Ends step `name`.
    pub fn mark(&mut self, name: &'static str) {
        if self.enabled {
            let now = Instant::now();
            self.marks.push((name, (now - self.last).as_millis()));
            self.last = now;
        }
    }

    /// Logs the steps of `path` (no-op when disabled).
    pub fn log(&self, path: &'static str) {
        if self.enabled {
            let steps: Vec<String> = self
                .marks
                .iter()
                .map(|(n, ms)| format!("{n}={ms}ms"))
                .collect();
            tracing::info!(path, steps = %steps.join(" "), "step timings");
        }
    }
}
