//! Reading a production log export: rows per second through `summarize` (CSV parse by header
//! name, request assembly, path map, categories, per-second and per-minute figures), against
//! the CSV reader alone on the same file, in the same run.

use std::hint::black_box;
use std::io::Write;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use incident_lab::logs::{summarize, PathMap};

const ROWS: u64 = 100_000;

/// A Vercel-shaped export: every row its own request, a few error lines among them.
fn export(path: &std::path::Path) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "TimeUTC,timestampInMs,requestPath,requestMethod,responseStatusCode,durationMs,level,message,requestId").unwrap();
    for i in 0..ROWS {
        let at = 1_769_190_660_000 + i * 17;
        let (path, method) = match i % 4 {
            0 | 1 => ("app.example.com/api/webhooks/email", "POST"),
            2 => ("/", "GET"),
            _ => ("/", "POST"),
        };
        let (status, msg) = if i % 50 == 0 {
            (504, "\"Task timed out after 60.02 seconds, stopped\"")
        } else {
            (200, "")
        };
        writeln!(
            f,
            "2026-01-23 17:51:00,{at},{path},{method},{status},{},,{msg},r{i}",
            20 + i % 900
        )
        .unwrap();
    }
}

fn parsing(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.csv");
    export(&path);
    let map = PathMap::defaults();
    let mut g = c.benchmark_group("log export");
    g.throughput(Throughput::Elements(ROWS));
    g.sample_size(10);
    g.bench_function("csv reader alone (reference)", |b| {
        b.iter(|| {
            let mut r = csv::Reader::from_path(&path).unwrap();
            let mut rec = csv::StringRecord::new();
            let mut n = 0u64;
            while r.read_record(&mut rec).unwrap() {
                n += rec.len() as u64;
            }
            black_box(n)
        })
    });
    g.bench_function("summarize (100k rows)", |b| {
        b.iter(|| black_box(summarize(&path, &map, None, false).unwrap().requests))
    });
    g.finish();
}

criterion_group!(benches, parsing);
criterion_main!(benches);
