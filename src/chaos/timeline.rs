//! A scenario's `[[faults]]` played on the load's clock through the link's [`FaultProxy`]:
//! each fault set at its `at` and removed at its end, overlapping ones combined; what was done
//! recorded for the report. Whatever happens, the link is healed at the end.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::proxy::{FaultProxy, Faults};
use crate::report::FaultApplied;
use crate::scenario::{Fault, FaultKind};

/// The faults of several entries at once: the worst of each.
pub fn combine<'a>(active: impl IntoIterator<Item = &'a Faults>) -> Faults {
    active.into_iter().fold(Faults::default(), |mut all, f| {
        all.latency = all.latency.max(f.latency);
        all.jitter = all.jitter.max(f.jitter);
        all.bandwidth = match (all.bandwidth, f.bandwidth) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        all.hang |= f.hang;
        all.refuse |= f.refuse;
        all.slow_connect = all.slow_connect.max(f.slow_connect);
        all
    })
}

/// What a fault does, in words.
pub fn describe(f: &Fault) -> String {
    let d = incident_wire::duration::format;
    match f.kind {
        FaultKind::Latency if f.faults.jitter.is_zero() => {
            format!("latency {}", d(f.faults.latency))
        }
        FaultKind::Latency => format!("latency {} ± {}", d(f.faults.latency), d(f.faults.jitter)),
        FaultKind::Bandwidth => format!("bandwidth {} B/s", f.faults.bandwidth.unwrap_or(0)),
        FaultKind::SlowConnect => format!("slow connect {}", d(f.faults.slow_connect)),
        FaultKind::Hang => "hang (blackhole)".into(),
        FaultKind::Refuse => "refuse new connections".into(),
        FaultKind::Reset => "reset every open connection".into(),
    }
}

/// `url` (`postgres://user:pass@host:port/db`) pointed at `addr` instead.
pub fn via(url: &str, addr: SocketAddr) -> String {
    let Some(at) = url.rfind('@') else {
        return url.to_owned();
    };
    let rest = &url[at + 1..];
    let tail = rest.find('/').map_or("", |i| &rest[i..]);
    format!("{}@{addr}{tail}", &url[..at])
}

/// Plays `faults` from `start` (the load's time zero); returns what it did. The link is healed
/// when it returns.
pub async fn play(proxy: &FaultProxy, faults: &[Fault], start: Instant) -> Vec<FaultApplied> {
    // (when, starts?, index), ends before starts at the same instant.
    let mut events: Vec<(Duration, bool, usize)> = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        events.push((f.at, true, i));
        if f.kind != FaultKind::Reset {
            events.push((f.until, false, i));
        }
    }
    events.sort_by_key(|e| (e.0, e.1, e.2));
    let mut active: Vec<usize> = Vec::new();
    let mut applied: Vec<Option<FaultApplied>> = vec![None; faults.len()];
    for (when, starts, i) in events {
        tokio::time::sleep_until(start + when).await;
        let f = &faults[i];
        if starts {
            applied[i] = Some(FaultApplied {
                kind: f.kind.name().into(),
                detail: describe(f),
                from_s: start.elapsed().as_secs_f64(),
                to_s: start.elapsed().as_secs_f64(),
                connections_open: proxy.open(),
            });
            if f.kind == FaultKind::Reset {
                proxy.reset();
                continue;
            }
            active.push(i);
        } else {
            active.retain(|a| *a != i);
            if let Some(a) = applied[i].as_mut() {
                a.to_s = start.elapsed().as_secs_f64();
            }
        }
        proxy.set(combine(active.iter().map(|a| &faults[*a].faults)));
    }
    proxy.heal();
    applied.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_faults_combine_to_the_worst_of_each() {
        let a = Faults {
            latency: Duration::from_millis(100),
            bandwidth: Some(1000),
            ..Faults::default()
        };
        let b = Faults {
            latency: Duration::from_millis(50),
            bandwidth: Some(500),
            hang: true,
            ..Faults::default()
        };
        let c = combine([&a, &b]);
        assert_eq!(c.latency, Duration::from_millis(100));
        assert_eq!(c.bandwidth, Some(500));
        assert!(c.hang && !c.refuse);
        assert_eq!(combine([]), Faults::default());
    }

    #[test]
    fn a_url_points_at_the_proxy() {
        let addr: SocketAddr = "127.0.0.1:4321".parse().unwrap();
        assert_eq!(
            via("postgres://u:p@127.0.0.1:5432/db_1", addr),
            "postgres://u:p@127.0.0.1:4321/db_1"
        );
        assert_eq!(
            via("postgres://u@localhost/db", addr),
            "postgres://u@127.0.0.1:4321/db"
        );
    }
}
