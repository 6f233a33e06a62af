//! The HTML report opened in a real browser (headless Chromium), as a person would open it: it
//! loads from disk with no console error and no request beyond itself, shows the summary and
//! every arm's section, and leaves a screenshot next to it. The check is shown able to fail on a
//! page that logs an error and fetches an image. Skipped by name where no Chromium is installed;
//! required where `INCIDENT_LAB_REQUIRE_BROWSER` is set (CI).

mod common;

use std::path::{Path, PathBuf};

use common::skip::{or_skip, BROWSER};
use incident_lab::report::browser::{self, png_size};

/// The Chromium to test with, or `None` after reporting the test skipped.
fn chromium(test: &str) -> Option<PathBuf> {
    let found = browser::find_chromium().ok_or_else(|| {
        format!(
            "no Chromium (install Debian's chromium package, or set {})",
            browser::CHROMIUM_ENV
        )
    });
    let path = found.clone().ok();
    or_skip(test, &BROWSER, found.map(drop))?;
    path
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The incident matrix's report (the README's, checked in) rendered by this build and opened
/// by `incident-lab report --html --screenshot`: quiet, self-contained, every section there.
#[test]
fn the_incident_report_opens_in_chromium_quiet_and_whole() {
    const TEST: &str = "the_incident_report_opens_in_chromium_quiet_and_whole";
    let Some(chromium) = chromium(TEST) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (html, png) = (
        dir.path().join("report.html"),
        dir.path().join("report.png"),
    );
    let json = repo("docs/results/incident.json");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_incident-lab"))
        .arg("report")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .arg("--screenshot")
        .arg(&png)
        .env(browser::CHROMIUM_ENV, &chromium)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{said}");
    assert!(
        said.contains("0 console errors, 0 requests beyond the page"),
        "{said}"
    );

    // What the browser saw, read again through the library for the details.
    let view = browser::open(&chromium, &html, None).unwrap();
    let report = incident_lab::report::Report::read(&json).unwrap();
    let mut expected = vec!["summary".to_owned()];
    expected.extend(
        report
            .arms
            .iter()
            .map(|a| incident_lab::report::html::anchor(&a.name)),
    );
    assert_eq!(view.sections, expected);
    assert!(view.title.starts_with("incident-lab: "), "{}", view.title);
    // One budget chart per budgeted endpoint; per arm, the budgeted and the other endpoints'
    // latency, the pool, its waiters, the queue.
    assert_eq!(
        view.charts,
        report.budgeted_endpoints().len() + 5 * report.arms.len()
    );
    assert!(
        view.clean(),
        "{:?} {:?}",
        view.console_errors,
        view.requests
    );

    // The screenshot next to the report: a PNG of the whole page, a laptop's width.
    let (w, h) = png_size(&std::fs::read(&png).unwrap()).expect("a PNG");
    assert_eq!((w, h), (1280, view.height), "{said}");
    assert!(h > 2000, "the whole page, not a window of it: {h} px");
}

/// The check fires: a page that logs an error, throws, and asks for an image off the machine
/// is caught on each count — and the CLI fails on it.
#[test]
fn a_page_that_errs_or_fetches_is_caught() {
    const TEST: &str = "a_page_that_errs_or_fetches_is_caught";
    let Some(chromium) = chromium(TEST) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><head><title>bad</title></head><body><section id=\"s\">\
         <img src=\"http://127.0.0.1:9/pixel.png\">\
         <script>console.error('boom'); undefinedFunction();</script></section></body></html>",
    )
    .unwrap();
    let view = browser::open(&chromium, &page, Some(300)).unwrap();
    assert!(!view.clean());
    assert_eq!(view.requests, vec!["http://127.0.0.1:9/pixel.png"]);
    let errors = view.console_errors.join("\n");
    assert!(errors.contains("console.error: boom"), "{errors}");
    assert!(errors.contains("undefinedFunction"), "{errors}");
    assert_eq!(view.sections, vec!["s"]);
    assert_eq!(png_size(&view.png).map(|s| s.0), Some(1280));
}

/// Markup in a report's text (a scenario description, say) is shown as text: the browser runs
/// nothing and fetches nothing from it.
#[test]
fn markup_in_a_report_runs_nothing_in_the_browser() {
    const TEST: &str = "markup_in_a_report_runs_nothing_in_the_browser";
    let Some(chromium) = chromium(TEST) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut report =
        incident_lab::report::Report::read(&repo("docs/results/incident.json")).unwrap();
    report.scenario.description =
        "<img src=\"http://127.0.0.1:9/x.png\"><script>console.error('injected')</script>".into();
    report.arms.truncate(1);
    let page = dir.path().join("report.html");
    std::fs::write(&page, incident_lab::report::html::render(&report)).unwrap();
    let view = browser::open(&chromium, &page, Some(600)).unwrap();
    assert!(
        view.clean(),
        "{:?} {:?}",
        view.console_errors,
        view.requests
    );
}
