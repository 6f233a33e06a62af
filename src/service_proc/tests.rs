use super::*;

#[test]
fn the_series_the_harness_needs_are_read_whatever_the_label_order() {
    let text = "# TYPE db_pool_max gauge\ndb_pool_max 10\ndb_pool_size 8\ndb_pool_idle 3\ndb_pool_waiters 12\njob_queue_depth{status=\"queued\"} 40\nerrors_total{category=\"db_timeout\"} 7\n\
        http_request_duration_seconds_bucket{route=\"GET /\",status=\"200\",le=\"0.1\"} 4\n\
        http_request_duration_seconds_bucket{status=\"504\",le=\"0.1\",route=\"GET /\"} 0\n\
        http_request_duration_seconds_bucket{route=\"GET /\",status=\"200\",le=\"1\"} 5\n\
        http_request_duration_seconds_bucket{route=\"GET /\",status=\"504\",le=\"1\"} 0\n\
        http_request_duration_seconds_bucket{route=\"GET /\",status=\"504\",le=\"+Inf\"} 5\n\
        http_request_duration_seconds_count{route=\"GET /\",status=\"200\"} 5\n\
        http_request_duration_seconds_count{route=\"GET /\",status=\"504\"} 5\n\
        db_writes_per_request_sum{route=\"POST /api/webhooks/email\"} 17\n";
    let s = parse_metrics(text, 1.5);
    assert_eq!(
        (s.pool_max, s.pool_in_use(), s.pool_waiters, s.queue_queued),
        (10.0, 5.0, 12.0, 40.0)
    );
    assert_eq!(s.errors["db_timeout"], 7.0);
    let page = &s.routes["GET /"];
    assert_eq!(page.duration.count, 10.0);
    assert_eq!(page.statuses["504"], 5.0);
    assert_eq!(page.duration.buckets, vec![(0.1, 4.0), (1.0, 5.0)]);
    assert_eq!(s.writes_and_calls(), (17.0, 0.0));
}

#[test]
fn several_instances_read_as_one_service() {
    let one = |pool: u32, queued: u32, tick: f64| {
        format!(
            "db_pool_max 10\ndb_pool_size {pool}\ndb_pool_idle 0\njob_queue_depth{{status=\"queued\"}} {queued}\n\
             errors_total{{category=\"db_pool_wait\"}} 2\ncron_tick_max_seconds{{runner=\"background-jobs\"}} {tick}\n\
             db_writes_per_request_sum{{route=\"POST /api/webhooks/email\"}} 5\n\
             http_request_duration_seconds_bucket{{route=\"GET /\",status=\"200\",le=\"0.1\"}} 3\n\
             http_request_duration_seconds_count{{route=\"GET /\",status=\"200\"}} 3\n"
        )
    };
    let text = format!(
        "{}{}fleet_instances 2\nfleet_instance_pool_in_use{{instance=\"0\"}} 4\nfleet_instance_pool_in_use{{instance=\"1\"}} 7\n\
         pooler_cl_waiting 12\npooler_wait_seconds_total 1.5\n",
        one(4, 40, 0.5),
        one(7, 42, 1.5)
    );
    let s = parse_metrics(&text, 1.0);
    // Pools and counters add up; the queue (one table, seen by both) does not.
    assert_eq!((s.pool_max, s.pool_in_use()), (20.0, 11.0));
    assert_eq!(s.errors["db_pool_wait"], 4.0);
    assert_eq!(s.writes_and_calls(), (10.0, 0.0));
    assert_eq!(s.routes["GET /"].duration.count, 6.0);
    assert_eq!(s.routes["GET /"].duration.buckets, vec![(0.1, 6.0)]);
    assert_eq!(s.queue_queued, 42.0);
    assert_eq!(s.cron_tick_max["background-jobs"], 1.5);
    let fleet = s.fleet.expect("the front's series");
    assert_eq!(fleet.instances, 2.0);
    assert_eq!(fleet.pool_in_use, BTreeMap::from([(0, 4.0), (1, 7.0)]));
    let pooler = fleet.pooler.expect("the pooler's series");
    assert_eq!((pooler.cl_waiting, pooler.wait_s), (12.0, 1.5));
    // One service alone has no fleet.
    assert_eq!(parse_metrics(&one(1, 1, 0.1), 0.0).fleet, None);
}

#[test]
fn quantiles_interpolate_inside_a_bucket_as_prometheus_does() {
    let h = PromHist {
        buckets: vec![(0.1, 50.0), (0.2, 100.0)],
        count: 100.0,
        sum: 0.0,
    };
    assert!((h.quantile(0.75).unwrap() - 0.15).abs() < 1e-9);
    assert!((h.quantile(0.25).unwrap() - 0.05).abs() < 1e-9);
    // Past the last finite bound: that bound.
    let over = PromHist {
        count: 200.0,
        ..h.clone()
    };
    assert_eq!(over.quantile(0.95), Some(0.2));
    assert_eq!(PromHist::default().quantile(0.5), None);
    // What happened between two scrapes.
    let later = PromHist {
        buckets: vec![(0.1, 50.0), (0.2, 180.0)],
        count: 180.0,
        sum: 0.0,
    };
    let delta = later.since(&h);
    assert_eq!(delta.count, 80.0);
    assert!(delta.quantile(0.5).unwrap() > 0.1);
}
