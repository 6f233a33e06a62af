//! How a request cut off at the function limit is charged in the accounting.

use super::judge::unfinished;
use crate::report::fixtures::endpoint;
use crate::service_proc::{RouteScrape, Scrape};

fn route(cut: f64, writes_max: f64, calls_max: f64) -> RouteScrape {
    RouteScrape {
        statuses: [("504".to_owned(), cut)].into(),
        writes_max,
        calls_max,
        ..RouteScrape::default()
    }
}

/// A cut-off request is charged its own route's most, never another route's: a page that
/// never writes is charged nothing, the drain's cron tick (not in the load) the most the
/// service saw one tick write.
#[test]
fn a_cut_off_request_is_charged_its_own_routes_writes() {
    let last = Scrape {
        routes: [
            ("GET /".to_owned(), route(40.0, 0.0, 0.0)),
            ("POST /api/webhooks/email".to_owned(), route(3.0, 5.0, 1.0)),
            (
                "GET /api/cron/background-jobs".to_owned(),
                route(1.0, 222.0, 30.0),
            ),
        ]
        .into(),
        ..Scrape::default()
    };
    let mut hook = endpoint("POST /api/webhooks/email", 900.0, Some(500.0));
    (hook.db_writes_max, hook.external_calls_max) = (6, 1);
    let mut page = endpoint("GET /", 900.0, Some(2000.0));
    (page.db_writes_max, page.external_calls_max) = (0, 0);

    let charged: Vec<(String, u64, u64, u64)> = unfinished(&last, &[hook, page], 0)
        .into_iter()
        .map(|u| (u.route, u.requests, u.max_writes, u.max_calls))
        .collect();

    assert_eq!(
        charged,
        [
            ("GET /".to_owned(), 40, 0, 0),
            ("GET /api/cron/background-jobs".to_owned(), 1, 222, 30),
            // The client saw a request write 6; the service's own most was 5.
            ("POST /api/webhooks/email".to_owned(), 3, 6, 1),
        ]
    );
    // A service that counts its cuts while working: the ones cut waiting for the pool
    // (46 of 50 here) are charged nothing.
    let mut counted = last.clone();
    counted
        .routes
        .get_mut("POST /api/webhooks/email")
        .unwrap()
        .statuses
        .insert("504".into(), 50.0);
    counted
        .routes
        .get_mut("POST /api/webhooks/email")
        .unwrap()
        .cut_working = Some(4.0);
    let hook_cut = unfinished(&counted, &[], 0)
        .into_iter()
        .find(|u| u.route == "POST /api/webhooks/email")
        .unwrap();
    assert_eq!((hook_cut.requests, hook_cut.max_writes), (4, 5));
    let a =
        crate::matrix::verdict::accounting((1000, 10), (1000, 10), &unfinished(&last, &[], 2), 0);
    assert_eq!(a.slack_writes, 15 + 222 + 2 * 222, "{a:?}");
    let detail = crate::matrix::verdict::accounting_check(&a).detail;
    assert!(
        detail.contains("declared 1000, counted 1000, slack 681 ("),
        "{detail}"
    );
}
