//! The harness's own pure parts, each against a reference measured in the same run:
//! - scenario parsing and validation (`Scenario::parse` of incident.toml) vs the TOML parse alone;
//! - report rendering (report.md, report.html of the stored incident matrix, 9 arms) vs reading
//!   its report.json;
//! - merging recordings (what `merge` and the shards do) vs merging the HDR histograms alone.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use incident_lab::model::Scenario;
use incident_lab::report::{html, markdown, Report};
use loadgen::record::{Outcome, Sample};
use loadgen::{Hist, Recording};

fn root(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn scenarios(c: &mut Criterion) {
    let text = std::fs::read_to_string(root("scenarios/incident.toml")).unwrap();
    let mut g = c.benchmark_group("scenario incident.toml");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("reference: toml parse alone", |b| {
        b.iter(|| black_box(text.parse::<toml::Table>().unwrap()))
    });
    g.bench_function("Scenario::parse (parse + validate)", |b| {
        b.iter(|| black_box(Scenario::parse("incident.toml", &text).unwrap()))
    });
    g.finish();
}

fn reports(c: &mut Criterion) {
    let path = root("docs/results/incident.json");
    let report = Report::read(&path).unwrap();
    let mut g = c.benchmark_group("report of the incident matrix (9 arms)");
    g.bench_function("reference: read report.json", |b| {
        b.iter(|| black_box(Report::read(&path).unwrap()))
    });
    g.bench_function("render report.md", |b| {
        b.iter(|| black_box(markdown::render(&report)))
    });
    g.bench_function("render report.html", |b| {
        b.iter(|| black_box(html::render(&report)))
    });
    g.finish();
}

fn merging(c: &mut Criterion) {
    // An arm's worth: 3 endpoints over 35 one-second windows, 20k samples.
    let recording = |seed: u64| {
        let mut r = Recording::default();
        for i in 0..20_000u64 {
            let at = Duration::from_millis(i * 35_000 / 20_000);
            let s = Sample {
                endpoint: [
                    "GET /",
                    "POST /api/webhooks/email",
                    "POST /api/actions/inbox-counts",
                ][(i % 3) as usize]
                    .into(),
                stream: "bench".into(),
                intended: at,
                taken: at,
                started: at,
                ended: at + Duration::from_micros(300 + (i * seed) % 90_000),
                outcome: Outcome::Status(200),
                db_writes: Some(1),
                external_calls: Some(0),
                retry: false,
                delivery: loadgen::Delivery::Original,
                categories: Vec::new(),
                service_time: None,
                connect: None,
            };
            r.record(&s, Duration::from_millis(50));
        }
        r
    };
    let (a, b) = (recording(7), recording(13));
    let hist = |r: &Recording| {
        let mut h = Hist::default();
        for e in r.endpoints.values() {
            h.merge(&e.latency);
        }
        h
    };
    let (ha, hb) = (hist(&a), hist(&b));
    let mut g = c.benchmark_group("merge two arms' recordings");
    g.bench_function("reference: merge one HDR histogram", |bench| {
        bench.iter(|| {
            let mut h = ha.clone();
            h.merge(&hb);
            black_box(h)
        })
    });
    g.bench_function("Recording::merge (endpoints, windows, streams)", |bench| {
        bench.iter(|| {
            let mut r = a.clone();
            r.merge(&b);
            black_box(r)
        })
    });
    g.finish();
}

criterion_group!(benches, scenarios, reports, merging);
criterion_main!(benches);
