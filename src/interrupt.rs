//! Stopping a run. The harness, not goose, owns SIGINT, SIGTERM and SIGHUP: goose installs a
//! process-wide Ctrl-C handler (through the `ctrlc` crate) that stops only the current attack,
//! and on a second Ctrl-C calls `std::process::exit` with every child still running. `ctrlc`
//! takes one handler per process, so [`install`] registers the harness's first and goose's
//! attempt fails (it then carries on without one, as it does in tests).
//!
//! First signal: the run stops, everything it started is torn down, the reports of what
//! finished are written, and the process exits 130 (SIGINT), 143 (SIGTERM) or 129 (SIGHUP).
//! Second: it says what it is still cleaning up. Third: it kills the children it knows by pid
//! and exits at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The signal that stopped the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Interrupt,
    Terminate,
    HangUp,
}

impl Stop {
    /// The conventional exit code: 128 + the signal number.
    pub fn exit_code(self) -> u8 {
        match self {
            Stop::Interrupt => 130,
            Stop::Terminate => 143,
            Stop::HangUp => 129,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Stop::Interrupt => "SIGINT",
            Stop::Terminate => "SIGTERM",
            Stop::HangUp => "SIGHUP",
        }
    }
}

static SIGNALS: AtomicU32 = AtomicU32::new(0);
static FIRST: OnceLock<Stop> = OnceLock::new();
static WAKE: OnceLock<tokio::sync::Notify> = OnceLock::new();
static CHILDREN: Mutex<BTreeMap<u32, String>> = Mutex::new(BTreeMap::new());

fn wake() -> &'static tokio::sync::Notify {
    WAKE.get_or_init(tokio::sync::Notify::new)
}

fn children() -> std::sync::MutexGuard<'static, BTreeMap<u32, String>> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Installs the handlers; call once, inside the runtime, before any load runs.
pub fn install() {
    // SIGINT through `ctrlc`, so that goose's own `ctrlc::set_handler` finds one taken.
    let _ = ctrlc::set_handler(|| on_signal(Stop::Interrupt));
    for (kind, stop) in [
        (
            tokio::signal::unix::SignalKind::terminate(),
            Stop::Terminate,
        ),
        (tokio::signal::unix::SignalKind::hangup(), Stop::HangUp),
    ] {
        if let Ok(mut stream) = tokio::signal::unix::signal(kind) {
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    on_signal(stop);
                }
            });
        }
    }
}

/// Writes a line to stderr, ignoring failure: a closed stderr (the terminal or the pipe that
/// started us is gone) must not stop the clean-up, as `eprintln!`'s panic would.
pub fn say(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn on_signal(stop: Stop) {
    let n = SIGNALS.fetch_add(1, Ordering::SeqCst) + 1;
    match n {
        1 => {
            let _ = FIRST.set(stop);
            wake().notify_waiters();
            say(&format!(
                "\n{}: stopping the run and cleaning up (signal again to see what remains, a third time to force)",
                stop.name()
            ));
        }
        2 => say(&format!("still cleaning up: {}", remaining())),
        _ => {
            let left = std::mem::take(&mut *children());
            for (pid, what) in &left {
                say(&format!("forced: killing {what} (pid {pid})"));
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
            std::process::exit(i32::from(FIRST.get().copied().unwrap_or(stop).exit_code()));
        }
    }
}

/// What is still running that the harness started, for the second signal's message.
pub fn remaining() -> String {
    let c = children();
    if c.is_empty() {
        "nothing left but the harness itself".into()
    } else {
        c.iter()
            .map(|(pid, what)| format!("{what} (pid {pid})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The signal that asked the run to stop, if one did.
pub fn requested() -> Option<Stop> {
    FIRST.get().copied()
}

/// Resolves when the run is asked to stop (at once if it already was).
pub async fn stopped() -> Stop {
    loop {
        let notified = wake().notified();
        if let Some(stop) = requested() {
            return stop;
        }
        notified.await;
    }
}

/// Remembers a child process the harness started (to name it, and to kill it if forced).
pub fn register_child(pid: u32, what: impl Into<String>) {
    children().insert(pid, what.into());
}

/// Forgets a child that has exited.
pub fn unregister_child(pid: u32) {
    children().remove(&pid);
}

/// Whether process `pid` is running (a zombie is not).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_128_plus_the_signal() {
        assert_eq!(Stop::Interrupt.exit_code(), 128 + Signal::SIGINT as u8);
        assert_eq!(Stop::Terminate.exit_code(), 128 + Signal::SIGTERM as u8);
        assert_eq!(Stop::HangUp.exit_code(), 128 + Signal::SIGHUP as u8);
    }

    #[test]
    fn this_process_is_alive_and_a_finished_child_is_not() {
        assert!(alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!alive(pid));
    }
}
