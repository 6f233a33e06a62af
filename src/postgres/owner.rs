//! Who owns a harness resource (a database, a container, a cluster directory): this process
//! as `HOST:PID`, so a later run can tell a dead run's leftovers from a live one's.

/// The start of an owner mark: `incident-lab owner HOST:PID`.
pub(super) const OWNER_MARK_PREFIX: &str = "incident-lab owner ";

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace(['\'', ':'], "_"))
        .unwrap_or_else(|_| "unknown".into())
}

/// This process as an owner: `HOST:PID`.
pub fn owner() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

/// This process's owner mark (a database comment).
pub fn owner_mark() -> String {
    format!("{OWNER_MARK_PREFIX}{}", owner())
}

/// Whether `owner` (`HOST:PID`) is a process of this host that is gone. Owners on other
/// hosts are never judged dead: their runs are not ours to clean up.
pub fn owner_is_gone(owner: &str) -> bool {
    owner
        .rsplit_once(':')
        .filter(|(host, _)| *host == hostname())
        .and_then(|(_, pid)| pid.parse::<u32>().ok())
        .is_some_and(|pid| !crate::interrupt::alive(pid))
}
