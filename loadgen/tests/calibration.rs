//! Calibration of the load generator against test servers whose latency is known (no
//! Postgres): a fixed latency is recorded as itself; a one-off stall gives the intended-time
//! distribution theory predicts, while goose's own actual-start figure hides it (coordinated
//! omission); one saturated stream leaves another stream's figures untouched.
//!
//! goose's killswitch is process-wide, so the cases take turns (one lock).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use loadgen::{Arrival, Endpoint, Plan, Recording, Stream};

static ONE_ATTACK_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The test server: `/fixed` (and `/fixed-measured`) answers after 100 ms, `/fast` at once, `/slow` after 200 ms,
/// `/stall` at once except that the 100th request starts a 2 s stall every request waits out.
#[derive(Clone, Default)]
struct Server {
    stall_hits: Arc<AtomicU64>,
    stall_until: Arc<Mutex<Option<Instant>>>,
}

const FIXED: Duration = Duration::from_millis(100);

/// How long each `/fixed-measured` answer (as `/fixed`, used by one test only) actually took the server (its sleep, woken when the machine
/// got round to it): the reference the generator's figures are held to.
static FIXED_TOOK: Mutex<Vec<Duration>> = Mutex::new(Vec::new());
const STALL: Duration = Duration::from_secs(2);

async fn stall(State(s): State<Server>) -> &'static str {
    let n = s.stall_hits.fetch_add(1, Ordering::SeqCst) + 1;
    let until = {
        let mut until = s.stall_until.lock().unwrap();
        if n == 100 {
            *until = Some(Instant::now() + STALL);
        }
        *until
    };
    if let Some(t) = until.filter(|t| *t > Instant::now()) {
        tokio::time::sleep_until(t.into()).await;
    }
    "ok"
}

async fn start_server() -> String {
    let app = Router::new()
        .route(
            "/fixed",
            get(|| async {
                tokio::time::sleep(FIXED).await;
                "ok"
            }),
        )
        .route(
            "/fixed-measured",
            get(|| async {
                let started = Instant::now();
                tokio::time::sleep(FIXED).await;
                FIXED_TOOK.lock().unwrap().push(started.elapsed());
                "ok"
            }),
        )
        .route("/fast", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                "ok"
            }),
        )
        .route("/stall", get(stall))
        .with_state(Server::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn stream(name: &str, path: &str, rate: f64, max_in_flight: usize) -> Stream {
    Stream {
        name: name.into(),
        endpoint: Endpoint::Cron {
            path: path.into(),
            secret: "s".into(),
        },
        arrival: Arrival::Constant { rate },
        retry: None,
        max_in_flight,
        delivery: Default::default(),
    }
}

fn plan(host: String, streams: Vec<Stream>, secs: u64) -> Plan {
    Plan {
        host,
        streams,
        duration: Duration::from_secs(secs),
        seed: 1,
        poisson: false,
        client_timeout: Duration::from_secs(3),
        late_after: Duration::from_millis(50),
        run_id: "calibration".into(),
        shard: Default::default(),
        tls: Default::default(),
    }
}

/// Runs `plan` in a fresh runtime, one attack at a time.
fn attack(make: impl FnOnce(String) -> Plan) -> (Recording, loadgen::RunSummary) {
    let _turn = ONE_ATTACK_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let base = start_server().await;
        let recording = Arc::new(Mutex::new(Recording::default()));
        let summary = loadgen::run(make(base), recording.clone()).await.unwrap();
        let recording = recording.lock().unwrap().clone();
        (recording, summary)
    })
}

fn within(value: f64, expected: f64, tolerance: f64) -> bool {
    (value - expected).abs() <= expected * tolerance
}

/// A server that always takes 100 ms is recorded as taking 100 ms: never less, and p50 and p95
/// within 5 % of what the server itself measured its answers took (its sleeps wake late when the
/// machine is busy: 106 ms at p95 was seen on a loaded CI machine, which is the server's time,
/// not the generator's error), with no late start.
#[test]
fn a_fixed_latency_is_recorded_as_itself() {
    FIXED_TOOK.lock().unwrap().clear();
    let (rec, _) = attack(|base| plan(base, vec![stream("fixed", "/fixed-measured", 40.0, 10)], 4));

    let e = &rec.endpoints["GET /fixed-measured"];
    assert_eq!(e.requests, 160);
    let (p50, p95) = (
        e.latency.quantile_ms(0.5).unwrap(),
        e.latency.quantile_ms(0.95).unwrap(),
    );
    let mut took: Vec<f64> = FIXED_TOOK
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    took.sort_by(f64::total_cmp);
    assert_eq!(took.len(), 160);
    let server = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize];
    let fixed = FIXED.as_secs_f64() * 1000.0;
    // HDR keeps 3 significant digits: a recorded value is at most 0.1 % below the true one.
    assert!(
        e.latency.quantile_ms(0.0).unwrap() >= fixed * 0.999,
        "{:?}",
        e.latency.quantile_ms(0.0)
    );
    assert!(
        within(p50, server(0.5), 0.05),
        "p50 {p50} ms vs the server's {} ms",
        server(0.5)
    );
    assert!(
        within(p95, server(0.95), 0.05),
        "p95 {p95} ms vs the server's {} ms",
        server(0.95)
    );
    assert_eq!(e.late, 0, "lateness p95 {:?}", e.lateness.quantile_ms(0.95));
}

/// wrk2's classic: the server stalls for S = 2 s once, in a 6 s schedule of even arrivals.
/// Every request due during the stall waits out its remainder, so latency from the intended
/// time is uniform on [0, S] for a share S/D of the requests: the q-quantile is S − (1 − q)·D
/// (p90 1.4 s, p95 1.7 s, p99 1.94 s). goose's own figure, timed from the actual start of the
/// few requests a two-user stream could send, hides it.
#[test]
fn a_stall_gives_the_intended_time_distribution_theory_predicts() {
    let (rec, summary) = attack(|base| plan(base, vec![stream("stall", "/stall", 50.0, 2)], 6));

    let e = &rec.endpoints["GET /stall"];
    assert_eq!(e.requests, 300);
    let (s, d) = (STALL.as_secs_f64(), 6.0);
    for q in [0.90, 0.95, 0.99] {
        let expected = (s - (1.0 - q) * d) * 1000.0;
        let got = e.latency.quantile_ms(q).unwrap();
        assert!(
            within(got, expected, 0.10),
            "p{} {got} ms, theory {expected} ms",
            q * 100.0
        );
    }
    // About S·rate = 100 sends were due during the stall; with two users, all but the two
    // stuck in it started late.
    let stream = &rec.streams["stall"];
    assert!((90..=110).contains(&stream.late), "{} late", stream.late);
    assert!(stream.late_no_user >= stream.late - 2);
    // goose times from the actual start: the stall all but vanishes.
    let goose = &summary.goose["GET GET /stall"];
    assert_eq!((goose.requests, goose.failures), (300, 0));
    assert!(goose.p95_ms < 100.0, "goose p95 {} ms", goose.p95_ms);
    assert!(e.latency.quantile_ms(0.95).unwrap() > 10.0 * goose.p95_ms);
}

/// A stream starved of concurrency (one user for 10/s of 200 ms requests) falls behind and
/// says so; the other stream, with users of its own, is on time and fast.
#[test]
fn a_saturated_stream_leaves_another_untouched() {
    let (rec, _) = attack(|base| {
        plan(
            base,
            vec![
                stream("starved", "/slow", 10.0, 1),
                stream("fast", "/fast", 20.0, 5),
            ],
            3,
        )
    });

    let starved = &rec.streams["starved"];
    assert!(starved.late * 2 > starved.requests, "{starved:?}");
    assert!(starved.late_no_user > 0);
    let fast = &rec.streams["fast"];
    assert_eq!(fast.requests, 60);
    assert_eq!(fast.late, 0, "{fast:?}");
    let p95 = rec.endpoints["GET /fast"]
        .latency
        .quantile_ms(0.95)
        .unwrap();
    assert!(p95 < 50.0, "the fast stream's p95 is {p95} ms");
}

/// At-least-once delivery: the scheduled duplicates are sent at their original's time, and a
/// share of acknowledged sends comes back once, `after` later, within the run — no more.
#[test]
fn duplicates_and_redeliveries_are_sent_as_declared() {
    let mut s = stream("at-least-once", "/fixed", 50.0, 20);
    s.delivery = loadgen::AtLeastOnce {
        redeliver_pct: 30.0,
        redeliver_after: Duration::from_millis(500),
        duplicate_pct: 20.0,
    };
    let make = |base| plan(base, vec![s.clone()], 4);
    let scheduled = make(String::new()).schedule();
    let duplicates = scheduled
        .iter()
        .filter(|x| x.delivery == loadgen::Delivery::Duplicate)
        .count() as u64;
    let originals = scheduled.len() as u64 - duplicates;
    let (rec, _) = attack(make);

    let st = &rec.streams["at-least-once"];
    assert_eq!(originals, 200);
    assert!(
        (25..=55).contains(&duplicates),
        "{duplicates} of 200 at 20 %"
    );
    assert_eq!(st.duplicates, duplicates);
    // Originals acknowledged before 3.5 s can come back; about 30 % of those.
    assert!(
        (35..=75).contains(&st.redeliveries),
        "{} redeliveries",
        st.redeliveries
    );
    assert_eq!(st.requests, originals + duplicates + st.redeliveries);
}
