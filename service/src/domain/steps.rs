//! Step-level timing, logged only when `LOG_SLOW_PATHS` is on (debugging in production).

use std::time::{Duration, Instant};

/// Marks the end of each step of a path and logs them together. A step marked more than once
/// (a loop's) adds up: its line gives the step's total.
#[derive(Debug)]
pub struct Steps {
    enabled: bool,
    last: Instant,
    marks: Vec<(&'static str, Duration)>,
}

impl Steps {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            last: Instant::now(),
            marks: Vec::new(),
        }
    }

    /// Ends step `name`: the time since the last mark is added to it.
    pub fn mark(&mut self, name: &'static str) {
        if self.enabled {
            let now = Instant::now();
            let took = now - self.last;
            self.last = now;
            match self.marks.iter_mut().find(|(n, _)| *n == name) {
                Some((_, total)) => *total += took,
                None => self.marks.push((name, took)),
            }
        }
    }

    /// Adds `other`'s steps to these (a task's steps, into its path's): each step's total.
    pub fn add(&mut self, other: &Steps) {
        for (name, took) in &other.marks {
            match self.marks.iter_mut().find(|(n, _)| *n == *name) {
                Some((_, total)) => *total += *took,
                None => self.marks.push((*name, *took)),
            }
        }
    }

    /// The steps as they are logged, e.g. `claim=1.25ms apply=0.40ms` (`None` when disabled).
    pub fn line(&self) -> Option<String> {
        self.enabled.then(|| {
            let steps: Vec<String> = self
                .marks
                .iter()
                .map(|(n, took)| format!("{n}={:.2}ms", took.as_secs_f64() * 1e3))
                .collect();
            steps.join(" ")
        })
    }

    /// Logs the steps of `path` (no-op when disabled).
    pub fn log(&self, path: &'static str) {
        if let Some(steps) = self.line() {
            tracing::info!(path, steps = %steps, "step timings");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_marked_again_adds_up_and_keeps_its_place() {
        let mut s = Steps::new(true);
        std::thread::sleep(Duration::from_millis(2));
        s.mark("claim");
        s.mark("apply");
        std::thread::sleep(Duration::from_millis(2));
        s.mark("claim");
        let line = s.line().unwrap();
        let names: Vec<&str> = line
            .split(' ')
            .map(|p| p.split('=').next().unwrap())
            .collect();
        assert_eq!(names, ["claim", "apply"], "{line}");
        let claim: f64 = line.split(' ').next().unwrap()["claim=".len()..]
            .trim_end_matches("ms")
            .parse()
            .unwrap();
        assert!(claim >= 4.0, "two sleeps of 2 ms add up: {line}");
        assert!(Steps::new(false).line().is_none());
    }

    #[test]
    fn a_tasks_steps_add_to_its_paths() {
        let mut path = Steps::new(true);
        path.marks = vec![("wait", Duration::from_millis(1))];
        let mut task = Steps::new(true);
        task.marks = vec![
            ("claim", Duration::from_millis(2)),
            ("wait", Duration::from_millis(3)),
        ];
        path.add(&task);
        path.add(&task);
        assert_eq!(path.line().unwrap(), "wait=7.00ms claim=4.00ms");
        let mut off = Steps::new(false);
        off.add(&task);
        assert!(off.line().is_none());
    }
}
