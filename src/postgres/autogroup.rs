//! Keeps the local cluster's backends below the harness on a kernel with autogroups.
//!
//! With `kernel.sched_autogroup_enabled = 1` (the default on many desktop and cloud kernels)
//! the scheduler shares the CPU between *sessions* first, and a process's nice value only
//! orders it within its own session. Every Postgres backend and parallel worker calls
//! `setsid()` when the postmaster forks it, so each one is a session of its own, weighing as
//! much as the whole harness — the `nice` the postmaster was started with (see
//! [`crate::service_proc::SUT_NICE`]) then does nothing for them. Measured on a 2-core
//! machine during a legacy arm: the harness's runtime threads waited up to 68–83 ms for a CPU
//! (p95 1.6 ms), and up to 3.6 % of the generator's sends started more than 50 ms late.
//!
//! The remedy the kernel offers is the autogroup's own nice, `/proc/PID/autogroup`. A
//! [`Sweeper`] sets it, every [`PERIOD`], on each child of the postmaster that sits in a
//! session other than the postmaster's (which is the harness's own: it must not be lowered).
//! With it, the harness's threads waited at most 14.5 ms (p95 0.25 ms) in the same arm.
//! A backend living less than a period (a parallel worker) may escape: the service's pooled
//! connections, which carry the load, live for the whole arm.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the postmaster's children are looked at.
pub const PERIOD: Duration = Duration::from_millis(100);

/// One process's autogroup, as `/proc/PID/autogroup` shows it: `/autogroup-1969 nice 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Autogroup {
    pub id: String,
    pub nice: i32,
}

impl Autogroup {
    /// The group of every process that never called `setsid()` since boot (PID 1's): it is
    /// the root task group itself, its nice cannot be set, and the kernel shows it as an
    /// empty `/proc/PID/autogroup`. A harness started by such a process (some CI runners)
    /// sits in it while its Postgres backends, which do call `setsid()`, each have their own.
    pub fn default_group() -> Self {
        Self {
            id: "0".to_owned(),
            nice: 0,
        }
    }
}

/// Parses a `/proc/PID/autogroup` line (empty: [`Autogroup::default_group`]); `None` when it
/// is not one.
pub fn parse(text: &str) -> Option<Autogroup> {
    if text.trim().is_empty() {
        return Some(Autogroup::default_group());
    }
    let mut words = text.split_whitespace();
    let id = words.next()?.strip_prefix("/autogroup-")?.to_owned();
    if words.next()? != "nice" {
        return None;
    }
    let nice = words.next()?.parse().ok()?;
    Some(Autogroup { id, nice })
}

/// `pid`'s autogroup; `None` when the process is gone or the kernel has no autogroups (no
/// `/proc/PID/autogroup` file).
pub fn of(pid: u32) -> Option<Autogroup> {
    parse(&std::fs::read_to_string(format!("/proc/{pid}/autogroup")).ok()?)
}

/// Whether the kernel groups by session now.
pub fn enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled")
        .is_ok_and(|s| s.trim() == "1")
}

/// The children of `parent` (its main thread's: the postmaster forks from it).
fn children(parent: u32) -> Vec<u32> {
    let listed = format!("/proc/{parent}/task/{parent}/children");
    if let Ok(text) = std::fs::read_to_string(&listed) {
        return text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    }
    // Without CONFIG_PROC_CHILDREN: every process whose parent is `parent`.
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(Path::new(&format!("/proc/{pid}/stat"))) == Some(parent))
        .collect()
}

/// The parent pid in a `/proc/PID/stat` (the field after the parenthesised command name).
fn parent_of(stat: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(stat).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Children whose autogroup was set to the nice asked for.
    pub set: usize,
    /// Children the kernel refused (no permission).
    pub refused: usize,
}

/// Sets the autogroup nice of `parent`'s children that lead a session of their own to `nice`.
pub fn sweep(parent: u32, nice: i32) -> Pass {
    let mut pass = Pass::default();
    let Some(own) = of(parent) else {
        return pass;
    };
    for child in children(parent) {
        let Some(group) = of(child) else { continue };
        if group.id == own.id || group.nice == nice {
            continue;
        }
        match std::fs::write(format!("/proc/{child}/autogroup"), nice.to_string()) {
            Ok(()) => pass.set += 1,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => pass.refused += 1,
            // Gone in between: nothing to do.
            Err(_) => {}
        }
    }
    pass
}

/// Sweeps `parent`'s children every [`PERIOD`] until dropped.
#[derive(Debug)]
pub struct Sweeper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sweeper {
    /// Starts sweeping; `None` when the kernel does not group by session (nothing to do).
    pub fn start(parent: u32, nice: i32) -> Option<Self> {
        if !enabled() {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("pg-autogroup".into())
                .spawn(move || {
                    let mut warned = false;
                    while !stop.load(Ordering::Relaxed) {
                        let pass = sweep(parent, nice);
                        if pass.refused > 0 && !warned {
                            warned = true;
                            tracing::warn!(
                                refused = pass.refused,
                                "cannot lower the Postgres backends' autogroup priority (kernel.sched_autogroup_enabled=1): they compete with the load generator as equals, and its sends may start late"
                            );
                        }
                        std::thread::sleep(PERIOD);
                    }
                })
                .ok()?
        };
        tracing::debug!(
            parent,
            nice,
            "keeping the Postgres backends' autogroups at this nice"
        );
        Some(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autogroup_lines_parse() {
        assert_eq!(
            parse("/autogroup-1969 nice 10\n"),
            Some(Autogroup {
                id: "1969".into(),
                nice: 10
            })
        );
        assert_eq!(parse("/autogroup-5 nice -3").map(|g| g.nice), Some(-3));
        assert_eq!(parse(""), Some(Autogroup::default_group()));
        assert_eq!(parse("\n"), Some(Autogroup::default_group()));
        assert_eq!(parse("autogroup"), None);
        assert_eq!(parse("/autogroup-5 weight 3"), None);
    }

    #[test]
    fn the_parent_is_read_past_a_command_name_with_spaces() {
        let dir = tempfile::tempdir().unwrap();
        let stat = dir.path().join("stat");
        std::fs::write(&stat, "4242 (postgres: a (b) c) S 4100 4242 4242 0 -1").unwrap();
        assert_eq!(parent_of(&stat), Some(4100));
    }
}
