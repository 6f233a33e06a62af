//! Faults on the load's timeline: what each does (a [`Fault`], whose variants carry their own
//! parameters), when ([`TimedFault`]), and the link's combined state ([`LinkFaults`]).

use std::time::Duration;

use fake_providers::{Knobs, Provider};
use serde::Deserialize;

/// What a `[[faults]]` entry does: to the database link (through the fault proxy between the
/// service and Postgres), to the Postgres process, to a fake provider, or to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// `latency` (± `jitter`) added to each response chunk.
    Latency,
    /// At most `bandwidth` bytes per second each way.
    Bandwidth,
    /// Every byte dropped both ways; connections stay open.
    Hang,
    /// New connections reset on arrival.
    Refuse,
    /// `delay` before each new connection reaches Postgres.
    SlowConnect,
    /// Every open connection reset, once (no `for`).
    Reset,
    /// Every Postgres process stopped (SIGSTOP, or `docker pause`), then resumed.
    Pause,
    /// Postgres crashes and restarts (a backend killed: every connection ends, recovery runs).
    Restart,
    /// A session holds a lock on `table` (`mode`, default ACCESS EXCLUSIVE).
    Lock,
    /// `sessions` heavy queries keep Postgres's CPUs busy.
    Cpu,
    /// The service is killed (SIGKILL) and started again after `for` (default at once).
    Kill,
    /// A fake provider's behaviour replaced by `knobs` (over the scenario's own).
    Provider,
}

/// Where a fault acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTarget {
    /// The database link, through the fault proxy.
    Link,
    /// The Postgres server's processes or sessions.
    Postgres,
    /// A fake provider.
    Provider,
    /// The service process.
    Service,
}

impl FaultKind {
    /// Every kind: its parameters and what it does, as `chaos list` prints them.
    pub const ALL: [(FaultKind, &'static str, &'static str); 12] = [
        (
            FaultKind::Latency,
            "latency (duration), jitter (duration, optional)",
            "added to each response chunk on open and new connections, ± jitter",
        ),
        (FaultKind::Bandwidth, "bandwidth (bytes per second)", "paces both directions"),
        (
            FaultKind::Hang,
            "-",
            "a blackhole: every byte dropped both ways, connections kept open (their queries never answer)",
        ),
        (FaultKind::Refuse, "-", "new connections are reset on arrival; open ones carry on"),
        (
            FaultKind::SlowConnect,
            "delay (duration)",
            "each new connection waits before it reaches Postgres",
        ),
        (
            FaultKind::Reset,
            "- (instant: no `for`)",
            "every open connection is reset (RST to both sides), once",
        ),
        (
            FaultKind::Pause,
            "-",
            "every Postgres process stopped (SIGSTOP; `docker pause` for a container), resumed at the end",
        ),
        (
            FaultKind::Restart,
            "- (instant: no `for`)",
            "Postgres crashes and restarts: a backend is killed, every connection ends, crash recovery runs (local backend)",
        ),
        (
            FaultKind::Lock,
            "table (name), mode (lock mode, default ACCESS EXCLUSIVE)",
            "a harness session holds the lock for the fault's length, then rolls back",
        ),
        (
            FaultKind::Cpu,
            "sessions (count, default 2)",
            "that many sessions run a CPU-bound query for the fault's length",
        ),
        (
            FaultKind::Kill,
            "`for` optional: the downtime before the restart (default 0)",
            "the service gets SIGKILL mid-request, then starts again on the same port with the flags it had",
        ),
        (
            FaultKind::Provider,
            "provider (ghl | unipile | ai), knobs (latency, errors, truncation_pct)",
            "the provider's knobs replaced for the fault's length (GHL 5xx/429 storms, a Unipile disconnect flood, a slow or truncating AI)",
        ),
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Latency => "latency",
            FaultKind::Bandwidth => "bandwidth",
            FaultKind::Hang => "hang",
            FaultKind::Refuse => "refuse",
            FaultKind::SlowConnect => "slow_connect",
            FaultKind::Reset => "reset",
            FaultKind::Pause => "pause",
            FaultKind::Restart => "restart",
            FaultKind::Lock => "lock",
            FaultKind::Cpu => "cpu",
            FaultKind::Kill => "kill",
            FaultKind::Provider => "provider",
        }
    }

    /// Where it acts.
    pub fn target(self) -> FaultTarget {
        match self {
            FaultKind::Latency
            | FaultKind::Bandwidth
            | FaultKind::Hang
            | FaultKind::Refuse
            | FaultKind::SlowConnect
            | FaultKind::Reset => FaultTarget::Link,
            FaultKind::Pause | FaultKind::Restart | FaultKind::Lock | FaultKind::Cpu => {
                FaultTarget::Postgres
            }
            FaultKind::Kill => FaultTarget::Service,
            FaultKind::Provider => FaultTarget::Provider,
        }
    }

    /// An instant fault: no `for`.
    pub fn instant(self) -> bool {
        matches!(self, FaultKind::Reset | FaultKind::Restart)
    }

    /// It cuts connections or the service mid-commit, so an acknowledgment can be lost (the
    /// declared-vs-measured rows check cannot be made).
    pub fn cuts(self) -> bool {
        matches!(
            self,
            FaultKind::Reset | FaultKind::Hang | FaultKind::Restart | FaultKind::Kill
        )
    }
}

/// What a fault does, with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// `latency` (± `jitter`) on each chunk towards the service.
    Latency {
        latency: Duration,
        jitter: Duration,
    },
    /// At most this many bytes per second each way.
    Bandwidth {
        bytes_per_s: u64,
    },
    Hang,
    Refuse,
    /// This long before each new connection reaches Postgres.
    SlowConnect {
        delay: Duration,
    },
    Reset,
    Pause,
    Restart,
    /// A harness session holds `LOCK TABLE table IN mode MODE`.
    Lock {
        table: String,
        mode: String,
    },
    /// This many CPU-bound sessions in Postgres.
    Cpu {
        sessions: u32,
    },
    Kill,
    /// The provider's knobs while the fault lasts.
    Provider {
        provider: Provider,
        knobs: Knobs,
    },
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Latency { .. } => FaultKind::Latency,
            Fault::Bandwidth { .. } => FaultKind::Bandwidth,
            Fault::Hang => FaultKind::Hang,
            Fault::Refuse => FaultKind::Refuse,
            Fault::SlowConnect { .. } => FaultKind::SlowConnect,
            Fault::Reset => FaultKind::Reset,
            Fault::Pause => FaultKind::Pause,
            Fault::Restart => FaultKind::Restart,
            Fault::Lock { .. } => FaultKind::Lock,
            Fault::Cpu { .. } => FaultKind::Cpu,
            Fault::Kill => FaultKind::Kill,
            Fault::Provider { .. } => FaultKind::Provider,
        }
    }

    /// What it does, in words.
    pub fn describe(&self) -> String {
        let d = incident_wire::duration::format;
        match self {
            Fault::Latency { latency, jitter } if jitter.is_zero() => {
                format!("latency {}", d(*latency))
            }
            Fault::Latency { latency, jitter } => {
                format!("latency {} ± {}", d(*latency), d(*jitter))
            }
            Fault::Bandwidth { bytes_per_s } => format!("bandwidth {bytes_per_s} B/s"),
            Fault::SlowConnect { delay } => format!("slow connect {}", d(*delay)),
            Fault::Hang => "hang (blackhole)".into(),
            Fault::Refuse => "refuse new connections".into(),
            Fault::Reset => "reset every open connection".into(),
            other => other.kind().name().into(),
        }
    }

    /// What the database link's proxy does while this fault lasts (nothing for a fault that
    /// acts elsewhere, or for `reset`, which acts once).
    pub fn link(&self) -> LinkFaults {
        let mut link = LinkFaults::default();
        match self {
            Fault::Latency { latency, jitter } => {
                link.latency = *latency;
                link.jitter = *jitter;
            }
            Fault::Bandwidth { bytes_per_s } => link.bandwidth = Some(*bytes_per_s),
            Fault::Hang => link.hang = true,
            Fault::Refuse => link.refuse = true,
            Fault::SlowConnect { delay } => link.slow_connect = *delay,
            _ => {}
        }
        link
    }
}

/// A fault on the load's clock: from `at` to `until` (`until == at` for an instant one, and for
/// a `kill` with no downtime).
#[derive(Debug, Clone, PartialEq)]
pub struct TimedFault {
    pub at: Duration,
    pub until: Duration,
    pub fault: Fault,
}

impl TimedFault {
    pub fn kind(&self) -> FaultKind {
        self.fault.kind()
    }
}

/// What the database link does now; every field off by default. Overlapping link faults
/// combine into one of these (the worst of each).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkFaults {
    /// Added to each chunk towards the client.
    pub latency: Duration,
    /// Uniform in ±jitter around the latency (never below zero).
    pub jitter: Duration,
    /// Most bytes per second each way; `None` for the wire's own speed.
    pub bandwidth: Option<u64>,
    /// Drop every byte both ways, keep the connections open.
    pub hang: bool,
    /// Reset new connections as they arrive.
    pub refuse: bool,
    /// Wait this long before connecting upstream.
    pub slow_connect: Duration,
}

/// Postgres's table lock modes, as `LOCK TABLE … IN mode MODE` takes them.
pub const LOCK_MODES: [&str; 8] = [
    "ACCESS SHARE",
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    "ACCESS EXCLUSIVE",
];
