//! Progress of a long run, on stderr, so stdout carries only the report: on a terminal one line
//! redrawn in place (`indicatif`), otherwise a plain line every [`PLAIN_EVERY`] (a CI log).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain progress line is written when stderr is not a terminal.
pub const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// One running stage's progress line.
pub struct Progress {
    bar: Option<ProgressBar>,
    last_plain: Option<Instant>,
}

impl Progress {
    /// A progress line on stderr: redrawn in place on a terminal, plain lines otherwise.
    pub fn start() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
            bar
        });
        Self {
            bar,
            last_plain: None,
        }
    }

    /// The line now says `line`.
    pub fn set(&mut self, line: String) {
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None => {
                if self.last_plain.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
                    self.last_plain = Some(Instant::now());
                    eprintln!("{line}");
                }
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
