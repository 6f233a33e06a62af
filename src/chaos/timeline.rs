//! The database link's faults on the timeline: overlapping ones combined into what the
//! [`super::FaultProxy`] does, and the service's URL pointed at the proxy. [`super::run`] plays them.

use std::net::SocketAddr;

use crate::model::LinkFaults;

/// The faults of several entries at once: the worst of each.
pub fn combine(active: impl IntoIterator<Item = LinkFaults>) -> LinkFaults {
    active
        .into_iter()
        .fold(LinkFaults::default(), |mut all, f| {
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
        let a = LinkFaults {
            latency: Duration::from_millis(100),
            bandwidth: Some(1000),
            ..LinkFaults::default()
        };
        let b = LinkFaults {
            latency: Duration::from_millis(50),
            bandwidth: Some(500),
            hang: true,
            ..LinkFaults::default()
        };
        let c = combine([a.clone(), b.clone()]);
        assert_eq!(c.latency, Duration::from_millis(100));
        assert_eq!(c.bandwidth, Some(500));
        assert!(c.hang && !c.refuse);
        assert_eq!(combine([]), LinkFaults::default());
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
