//! The generator's memory over a long run: it sends at one fixed rate to the trivial endpoint
//! while its own resident set (`VmRSS`, Linux's `/proc/self/status`) is read every second.
//!
//! Its recording is bounded (HDR histograms; per-second windows, packed once a minute old),
//! so once warmed up (the connections open, the histograms sized, the allocator's arenas
//! filled) the RSS must stay flat. Judged after the warm-up, the first tenth of the run: growth = the highest later
//! sample ÷ the sample at the end of the warm-up − 1; it holds below [`MAX_GROWTH`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use loadgen::{Recording, Tls};

/// The most RSS may grow after the warm-up.
pub const MAX_GROWTH: f64 = 0.10;

/// One reading of the generator's resident set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RssSample {
    /// Seconds since the soak started.
    pub t_s: f64,
    pub rss_kib: u64,
}

/// The soak's outcome.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Soak {
    pub rate: f64,
    pub duration_s: f64,
    pub sent: u64,
    pub failed: u64,
    pub unsent: u64,
    pub lateness_p99_ms: Option<f64>,
    /// Every second's reading.
    pub samples: Vec<RssSample>,
    /// The judgement of the samples.
    pub growth: Growth,
}

/// RSS after the warm-up against the rest of the run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Growth {
    /// The sample at the end of the warm-up (the first tenth of the run).
    pub baseline_kib: u64,
    /// The highest sample after it.
    pub peak_kib: u64,
    /// The last sample.
    pub end_kib: u64,
    /// peak ÷ baseline − 1.
    pub growth: f64,
    pub max_growth: f64,
    pub held: bool,
}

/// Judges `samples` (in time order): `None` with fewer than two after the warm-up.
pub fn judge(samples: &[RssSample], duration: Duration, max_growth: f64) -> Option<Growth> {
    let warm_up = duration.as_secs_f64() / 10.0;
    let after = samples.iter().position(|s| s.t_s >= warm_up)?;
    let (baseline, rest) = (samples[after], &samples[after + 1..]);
    let peak = rest.iter().map(|s| s.rss_kib).max()?;
    let growth = peak as f64 / baseline.rss_kib.max(1) as f64 - 1.0;
    Some(Growth {
        baseline_kib: baseline.rss_kib,
        peak_kib: peak,
        end_kib: rest.last()?.rss_kib,
        growth,
        max_growth,
        held: growth < max_growth,
    })
}

/// This process's resident set, from `/proc/self/status`.
pub fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("cannot read /proc/self/status (the soak measures RSS on Linux only)")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line in /proc/self/status")
}

/// Sends `rate` per second to `base` for `duration`, reading RSS each second.
pub async fn run(
    base: &str,
    rate: f64,
    duration: Duration,
    opts: &super::CeilingOptions,
) -> anyhow::Result<Soak> {
    rss_kib()?;
    let plan = super::plan(base, &Tls::default(), rate, duration, opts);
    let recording = Arc::new(Mutex::new(Recording::default()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last_said = Instant::now();
            while !done.load(Ordering::Relaxed) {
                tick.tick().await;
                // Ctrl-C: the load stops at once (the run then says it was interrupted).
                if crate::interrupt::requested().is_some() {
                    loadgen::engine::stop();
                }
                if let Ok(rss_kib) = rss_kib() {
                    let t_s = start.elapsed().as_secs_f64();
                    samples.push(RssSample { t_s, rss_kib });
                    if last_said.elapsed() >= Duration::from_secs(60) {
                        last_said = Instant::now();
                        eprintln!("  soak: {t_s:.0} s, RSS {} KiB", rss_kib);
                    }
                }
            }
            samples
        })
    };
    let summary = loadgen::run(plan, recording.clone()).await;
    done.store(true, Ordering::Relaxed);
    let samples = sampler.await.context("the RSS sampler failed")?;
    if crate::interrupt::requested().is_some() {
        anyhow::bail!("interrupted during the soak");
    }
    let summary = summary.with_context(|| format!("the generator failed at {rate}/s"))?;
    let (stream, failed) = super::outcome(&recording);
    let growth = judge(&samples, duration, MAX_GROWTH).with_context(|| {
        format!(
            "too few RSS samples to judge ({} over {:?})",
            samples.len(),
            duration
        )
    })?;
    Ok(Soak {
        rate,
        duration_s: duration.as_secs_f64(),
        sent: stream.requests,
        failed,
        unsent: summary.unsent,
        lateness_p99_ms: stream.lateness.quantile_ms(0.99),
        samples,
        growth,
    })
}

/// The soak as a paragraph of ceiling.md.
pub fn body(s: Option<&Soak>) -> String {
    let Some(s) = s else {
        return "\n**Memory**: not measured (run with `--soak 10m` for the 10-minute soak).\n"
            .into();
    };
    let g = &s.growth;
    format!(
        "\n**Memory** (the generator's RSS over {:.0} s at {:.0}/s: {} sent, {} failed, {} unsent, lateness p99 {}): {} KiB after the warm-up (the first tenth), peak {} KiB after it, {} KiB at the end: growth {:+.1} % ({}; goal < {:.0} %).\n",
        s.duration_s,
        s.rate,
        s.sent,
        s.failed,
        s.unsent,
        crate::report::ms(s.lateness_p99_ms),
        g.baseline_kib,
        g.peak_kib,
        g.end_kib,
        g.growth * 100.0,
        if g.held { "goal met" } else { "goal NOT met" },
        g.max_growth * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(f: impl Fn(u64) -> u64) -> Vec<RssSample> {
        (1..=100)
            .map(|t| RssSample {
                t_s: t as f64,
                rss_kib: f(t),
            })
            .collect()
    }

    #[test]
    fn a_flat_resident_set_after_the_warm_up_holds() {
        // Fast growth during the warm-up (the first 10 s of 100) does not count.
        let flat = series(|t| if t < 10 { 1_000 * t } else { 10_000 + t % 3 });
        let g = judge(&flat, Duration::from_secs(100), MAX_GROWTH).unwrap();
        assert_eq!(g.baseline_kib, 10_001);
        assert!(g.held && g.growth < 0.001, "{g:?}");
    }

    #[test]
    fn a_leak_fails() {
        // 20 KiB a second on 10 MiB: +18 % by the end.
        let leak = series(|t| 10_000 + 20 * t);
        let g = judge(&leak, Duration::from_secs(100), MAX_GROWTH).unwrap();
        assert!(!g.held, "{g:?}");
        assert_eq!(g.peak_kib, 12_000);
        assert_eq!(g.end_kib, 12_000);
    }

    #[test]
    fn too_few_samples_give_no_verdict() {
        let few = series(|_| 1)[..5].to_vec();
        assert_eq!(judge(&few, Duration::from_secs(100), MAX_GROWTH), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        assert!(rss_kib().unwrap() > 100);
    }
}
