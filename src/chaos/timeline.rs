//! The database link's faults on the timeline: overlapping ones combined into what the
//! [`super::FaultProxy`] does, each described in words, and the service's URL pointed at the
//! proxy. [`super::run`] plays them.

use std::net::SocketAddr;

use super::proxy::Faults;
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
        other => other.name().into(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
