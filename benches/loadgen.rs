//! Load-generator overhead per request, against references measured in the same run:
//! - scheduling: building the open-model schedule (per arrival);
//! - recording: `Recording::record` (endpoint map, window map, HDR) vs a bare HDR record;
//! - request building: a signed EMAIL_SENT (JSON + HMAC) vs the HMAC alone;
//! - the service's webhook hot path without I/O: signature check + payload parse.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use loadgen::record::{Outcome, Sample};
use loadgen::{Arrival, Endpoint, Hist, Plan, Recording, Stream};

fn plan(rate: f64, secs: u64) -> Plan {
    Plan {
        host: "http://127.0.0.1:1".into(),
        streams: vec![Stream {
            name: "bench".into(),
            endpoint: Endpoint::Cron {
                path: "/x".into(),
                secret: "s".into(),
            },
            arrival: Arrival::Constant { rate },
            retry: None,
            max_in_flight: 10,
            delivery: Default::default(),
        }],
        duration: Duration::from_secs(secs),
        seed: 1,
        poisson: true,
        client_timeout: Duration::from_secs(1),
        late_after: Duration::from_millis(50),
        run_id: "bench".into(),
        shard: Default::default(),
        tls: Default::default(),
    }
}

fn scheduling(c: &mut Criterion) {
    let p = plan(1000.0, 10);
    let mut g = c.benchmark_group("schedule");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("10k Poisson arrivals", |b| {
        b.iter(|| black_box(p.schedule()))
    });
    g.finish();
}

fn recording(c: &mut Criterion) {
    let sample = |i: u64| Sample {
        endpoint: "POST /api/webhooks/email".into(),
        stream: "bench".into(),
        intended: Duration::from_millis(i),
        taken: Duration::from_millis(i),
        started: Duration::from_millis(i),
        ended: Duration::from_millis(i + 3 + i % 50),
        outcome: Outcome::Status(202),
        db_writes: Some(1),
        external_calls: Some(0),
        retry: false,
        delivery: loadgen::Delivery::Original,
        categories: Vec::new(),
        service_time: None,
        connect: None,
    };
    let samples: Vec<Sample> = (0..10_000).map(sample).collect();
    let mut g = c.benchmark_group("record 10k samples");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("reference: bare HDR record", |b| {
        b.iter_batched(
            Hist::default,
            |mut h| {
                for s in &samples {
                    h.record(s.ended - s.intended);
                }
                h
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("Recording::record", |b| {
        b.iter_batched(
            Recording::default,
            |mut r| {
                for s in &samples {
                    r.record(s, Duration::from_millis(50));
                }
                r
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn requests(c: &mut Criterion) {
    let webhook = Endpoint::EmailWebhook {
        event: "EMAIL_SENT".into(),
        secret: "k".into(),
        workspaces: 200,
        leads: 100_000,
    };
    let body = br#"{"event_id":"evt-1","type":"EMAIL_SENT","workspace_id":3,"lead_email":"a@b.test","occurred_at":"2026-01-23T17:55:00Z"}"#;
    let sig = incident_wire::sign_webhook("k", 1_000, body);
    let mut g = c.benchmark_group("webhook");
    g.bench_function("reference: HMAC-SHA256 of a body", |b| {
        b.iter(|| incident_wire::sign_webhook("k", 1_000, black_box(body)))
    });
    g.bench_function("loadgen: build a signed EMAIL_SENT", |b| {
        let mut seq = 0;
        b.iter(|| {
            seq += 1;
            webhook.request(0, seq, "bench", 1_000)
        })
    });
    g.bench_function("service: verify signature + parse", |b| {
        b.iter(|| {
            incident_wire::verify_webhook(
                "k",
                Some("1000"),
                Some(&sig),
                black_box(body),
                1_000,
                300,
            )
            .unwrap();
            inbox_service::domain::event::parse(black_box(body)).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, scheduling, recording, requests);
criterion_main!(benches);
