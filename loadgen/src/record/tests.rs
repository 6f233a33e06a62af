use super::*;

fn sample(endpoint: &str, intended_ms: u64, ended_ms: u64) -> Sample {
    Sample {
        endpoint: endpoint.into(),
        stream: format!("{endpoint} stream"),
        intended: Duration::from_millis(intended_ms),
        taken: Duration::from_millis(intended_ms),
        started: Duration::from_millis(intended_ms),
        ended: Duration::from_millis(ended_ms),
        outcome: Outcome::Status(200),
        db_writes: Some(1),
        external_calls: Some(0),
        retry: false,
        delivery: Delivery::Original,
        categories: if intended_ms.is_multiple_of(2) {
            vec!["db_timeout".into()]
        } else {
            vec![]
        },
        service_time: None,
        connect: None,
    }
}

#[test]
fn latency_counts_from_the_intended_time() {
    let mut r = Recording::default();
    let mut s = sample("GET /", 1000, 1600);
    s.started = Duration::from_millis(1500); // sent late: the wait counts
    r.record(&s, Duration::from_millis(10));
    let e = &r.endpoints["GET /"];
    assert_eq!(e.latency.max_ms().map(f64::round), Some(600.0));
    assert_eq!(e.late, 1);
    assert_eq!(e.lateness.max_ms().map(f64::round), Some(500.0));
}

#[test]
fn a_late_start_is_charged_to_its_cause() {
    let mut r = Recording::default();
    let late = Duration::from_millis(50);
    // Taken on time, started late: the generator woke up late.
    let mut woke_late = sample("GET /", 1000, 1300);
    woke_late.started = Duration::from_millis(1200);
    r.record(&woke_late, late);
    // Taken late: no user of the stream was free.
    let mut no_user = sample("GET /", 2000, 2600);
    no_user.taken = Duration::from_millis(2400);
    no_user.started = Duration::from_millis(2400);
    r.record(&no_user, late);
    // On time.
    r.record(&sample("GET /", 3000, 3010), late);
    let s = &r.streams["GET / stream"];
    assert_eq!(
        (s.requests, s.late, s.late_wakeup, s.late_no_user),
        (3, 2, 1, 1)
    );
}

#[test]
fn error_categories_are_kept_per_window_of_intended_time() {
    let mut r = Recording::default();
    for ms in [200, 400, 1200, 2400, 2401] {
        r.record(&sample("GET /", ms, ms + 5), Duration::from_millis(50));
    }
    let e = &r.endpoints["GET /"];
    // Even intended times report db_timeout (see `sample`).
    assert_eq!(e.category_between("db_timeout", 0, 1), 2);
    assert_eq!(e.category_between("db_timeout", 1, 3), 2);
    assert_eq!(
        e.category_between("db_timeout", 0, 10),
        e.error_categories["db_timeout"]
    );
    assert_eq!(e.category_between("ai_timeout", 0, 10), 0);
}

#[test]
fn merging_two_recordings_equals_recording_into_one() {
    let samples: Vec<Sample> = (0..500)
        .map(|i| {
            sample(
                if i % 3 == 0 { "GET /" } else { "POST /x" },
                i * 10,
                i * 10 + 5 + i % 97,
            )
        })
        .collect();
    let late = Duration::from_millis(10);
    let mut whole = Recording::default();
    let (mut a, mut b) = (Recording::default(), Recording::default());
    for (i, s) in samples.iter().enumerate() {
        whole.record(s, late);
        if i % 2 == 0 {
            a.record(s, late)
        } else {
            b.record(s, late)
        }
    }
    a.merge(&b);
    assert_eq!(a, whole);
}

#[test]
fn recordings_survive_serialization() {
    let mut r = Recording::default();
    for i in 0..100 {
        r.record(
            &sample("GET /", i * 7, i * 7 + i),
            Duration::from_millis(10),
        );
    }
    r.acked.insert("evt-1".into());
    let json = serde_json::to_string(&r).unwrap();
    let back: Recording = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    assert_eq!(
        back.endpoints["GET /"].latency.quantile_ms(0.95),
        r.endpoints["GET /"].latency.quantile_ms(0.95)
    );
}

#[test]
fn windows_cut_a_run_into_phases() {
    let mut r = Recording::default();
    r.record(&sample("GET /", 500, 510), Duration::from_millis(10));
    r.record(&sample("GET /", 2500, 4500), Duration::from_millis(10));
    let e = &r.endpoints["GET /"];
    assert_eq!(e.between(0, 1).count(), 1);
    // A window keeps 2 significant digits: within 1 %.
    let max = e.between(2, 3).max_ms().unwrap();
    assert!((max - 2000.0).abs() <= 20.0, "{max}");
    // And it is sized to what it holds, far below a full-range histogram.
    let w = &e.windows[&2];
    assert!(w.heap_bytes() * 10 < Hist::default().heap_bytes());
}

/// The service's time is kept by the request's intended send time, as the client's is: a
/// request intended in the burst counts in the burst however late it ended.
#[test]
fn service_times_are_cut_by_intended_send_time() {
    let mut r = Recording::default();
    let mut s = sample("GET /", 2500, 5600);
    r.record(&s, Duration::from_millis(10));
    assert_eq!(r.endpoints["GET /"].service_between(0, 10), None);
    s.service_time = Some(Duration::from_millis(3000));
    r.record(&s, Duration::from_millis(10));
    let mut quick = sample("GET /", 5100, 5120);
    quick.service_time = Some(Duration::from_millis(15));
    r.record(&quick, Duration::from_millis(10));
    let e = &r.endpoints["GET /"];
    let burst = e.service_between(2, 5).unwrap();
    assert_eq!(burst.count(), 1);
    assert!((burst.max_ms().unwrap() - 3000.0).abs() <= 30.0);
    assert_eq!(e.service_between(5, 6).unwrap().count(), 1);
    assert_eq!(e.service_between(0, 2).unwrap().count(), 0);
    let mut merged = Recording::default();
    merged.merge(&r);
    merged.merge(&r);
    assert_eq!(
        merged.endpoints["GET /"]
            .service_between(0, 10)
            .unwrap()
            .count(),
        4
    );
    let back: Recording = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
}

#[test]
fn a_window_grows_to_fit_and_survives_a_round_trip_and_a_merge() {
    let mut w = Hist::window();
    w.record(Duration::from_micros(900));
    w.record(Duration::from_secs(30));
    assert!((w.max_ms().unwrap() - 30_000.0).abs() <= 300.0);
    let back: Hist = serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
    assert_eq!(back, w);
    let mut small = Hist::window();
    small.record(Duration::from_millis(1));
    small.merge(&back);
    assert_eq!(small.count(), 3);
    assert!((small.max_ms().unwrap() - 30_000.0).abs() <= 300.0);
}
/// A long run keeps its old seconds packed, and packing loses nothing: every window reads
/// as the same histogram as one never packed, a late sample lands in its packed window,
/// and a packed recording round-trips.
#[test]
fn old_windows_are_packed_losslessly_and_a_late_sample_reopens_one() {
    let mut r = Recording::default();
    let mut unpacked: BTreeMap<u32, Hist> = BTreeMap::new();
    for second in 0..200u64 {
        for i in 0..100u64 {
            let intended = second * 1000 + i * 10;
            let mut s = sample("GET /", intended, intended + 1 + (i * i) % 40);
            s.service_time = Some(Duration::from_micros(300 + i * 7));
            r.record(&s, Duration::from_millis(10));
            unpacked
                .entry(second as u32)
                .or_insert_with(Hist::window)
                .record(s.ended - s.intended);
        }
    }
    let e = &r.endpoints["GET /"];
    let last = 199 - PACK_WINDOWS_AFTER_S;
    for (t, w) in &e.windows {
        let packed = matches!(w.0, Repr::Packed(_));
        assert_eq!(packed, *t <= last, "window {t}");
        assert_eq!(w, &unpacked[t], "window {t}");
        if packed {
            assert!(w.heap_bytes() * 4 < unpacked[t].heap_bytes(), "window {t}");
        }
    }
    assert!(matches!(e.service_windows[&0].0, Repr::Packed(_)));
    assert_eq!(e.between(0, 200), {
        let mut all = Hist::default();
        unpacked.values().for_each(|w| all.merge(w));
        all
    });
    assert_eq!(e.between(0, 200).count(), 20_000);
    assert_eq!(e.service_between(0, 200).unwrap().count(), 20_000);

    let back: Recording = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);

    // A sample of second 5 that ends now, long after its window was packed.
    r.record(&sample("GET /", 5_500, 200_000), Duration::from_millis(10));
    let e = &r.endpoints["GET /"];
    assert_eq!(e.windows[&5].count(), 101);
    assert!((e.windows[&5].max_ms().unwrap() - 194_500.0).abs() <= 1_945.0);
    assert_eq!(e.between(0, 200).count(), 20_001);
}

/// A category on an answer the user got (a 200 from a fallback) is counted apart from one on
/// a failed answer; merging keeps both.
#[test]
fn categories_of_failed_answers_are_counted_apart() {
    let mut r = Recording::default();
    let mut absorbed = sample("POST /c", 0, 100);
    absorbed.categories = vec!["db_timeout".into()];
    let mut seen = absorbed.clone();
    seen.outcome = Outcome::Status(500);
    let mut cut = absorbed.clone();
    cut.outcome = Outcome::Timeout;
    for s in [&absorbed, &seen, &cut] {
        r.record(s, Duration::from_secs(1));
    }
    let e = &r.endpoints["POST /c"];
    assert_eq!(e.error_categories["db_timeout"], 3);
    assert_eq!(e.failed_categories["db_timeout"], 2);
    let mut twice = e.clone();
    twice.merge(e);
    assert_eq!(twice.failed_categories["db_timeout"], 4);
}
