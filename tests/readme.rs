//! The README's figures come from a run, not from a keyboard: its results block must be what
//! `incident-lab report --summary` renders from `docs/results/incident.json`, and so for the
//! generated blocks of the pages under `docs/`. The README stays a front door: short, with
//! links that resolve inside the repository.

use std::path::Path;

use incident_lab::report::{markdown, Report};

/// A page's text between `<!-- NAME:begin -->` and `<!-- NAME:end -->`.
fn block<'a>(readme: &'a str, name: &str) -> &'a str {
    let (begin, end) = (
        format!("<!-- {name}:begin -->\n"),
        format!("<!-- {name}:end -->"),
    );
    let start = readme
        .find(&begin)
        .unwrap_or_else(|| panic!("README has no {begin:?} marker"))
        + begin.len();
    let stop = readme
        .find(&end)
        .unwrap_or_else(|| panic!("README has no {end:?} marker"));
    &readme[start..stop]
}

/// The block between the README's results markers equals the summary of the stored report.
#[test]
fn the_readme_results_are_rendered_from_the_stored_report() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let report = Report::read(&root.join("docs/results/incident.json")).unwrap();

    let rendered = markdown::summary(&report);

    assert_eq!(
        block(&readme, "results"),
        rendered,
        "README.md's results differ from docs/results/incident.json: run scripts/readme-results"
    );
    assert!(!report.arms.is_empty());
}

/// The README's picture of the HTML report was taken of the page this build renders from
/// `docs/results/incident.json` (`scripts/readme-screenshot` records the page's hash).
#[test]
fn the_readme_screenshot_is_of_the_page_this_build_renders() {
    use sha2::Digest;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let report = Report::read(&root.join("docs/results/incident.json")).unwrap();
    let page = incident_lab::report::html::render(&report);
    let hash: String = sha2::Sha256::digest(page.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let recorded = std::fs::read_to_string(root.join("docs/report-summary.sha256")).unwrap();
    assert_eq!(
        recorded.trim(),
        hash,
        "docs/report-summary.png shows another page than this build renders: run scripts/readme-screenshot"
    );
    let png = std::fs::read(root.join("docs/report-summary.png")).unwrap();
    assert_eq!(
        incident_lab::report::browser::png_size(&png).map(|s| s.0),
        Some(1280)
    );
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("](docs/report-summary.png)"));
}

/// The ceilings block: the body of the stored ceiling report (`scripts/readme-ceiling`).
#[test]
fn the_readme_ceilings_are_rendered_from_the_stored_report() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("docs/performance.md")).unwrap();
    let stored = std::fs::read_to_string(root.join("docs/results/ceiling.json")).unwrap();
    let report: incident_lab::ceiling::CeilingReport = serde_json::from_str(&stored).unwrap();
    assert_eq!(
        block(&readme, "ceiling"),
        incident_lab::ceiling::body(&report),
        "docs/performance.md's ceilings differ from docs/results/ceiling.json: run scripts/readme-ceiling"
    );
}

/// The scale-out block: the summary of the stored scale-out report (`scripts/readme-scaleout`).
#[test]
fn the_readme_scaleout_results_are_rendered_from_the_stored_report() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("docs/deployment.md")).unwrap();
    let report = Report::read(&root.join("docs/results/scaleout.json")).unwrap();
    assert!(
        report.arms.iter().all(|a| a.fleet.is_some()),
        "not a scale-out report"
    );
    assert_eq!(
        block(&readme, "scaleout").trim_end(),
        markdown::summary(&report).trim_end(),
        "docs/deployment.md's scale-out results differ from docs/results/scaleout.json: run scripts/readme-scaleout"
    );
}

/// The chaos block: the summaries of the stored chaos reports, in file-name order
/// (`scripts/readme-chaos` writes both).
#[test]
fn the_readme_chaos_results_are_rendered_from_the_stored_reports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("docs/chaos.md")).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(root.join("docs/results/chaos"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        5,
        "one report per shipped chaos scenario: {files:?}"
    );
    let rendered: String = files
        .iter()
        .map(|f| format!("{}\n", markdown::summary(&Report::read(f).unwrap())))
        .collect();
    assert_eq!(
        block(&readme, "chaos"),
        rendered,
        "docs/chaos.md's chaos results differ from docs/results/chaos: run scripts/readme-chaos"
    );
    for f in &files {
        let report = Report::read(f).unwrap();
        assert!(
            report
                .arms
                .iter()
                .any(|a| !a.faults.is_empty() || !a.flips.is_empty()),
            "{}: a chaos run",
            f.display()
        );
    }
}

/// docs/replay.md's generated blocks: the fix list of the shipped export (rendered here from
/// the export itself), and a replay's questions, a calibration's fit and the parameter
/// recoveries, each from the run stored under docs/results/replay and docs/results/recovery
/// (`scripts/readme-replay`, `scripts/recover`; `scripts/readme-render` writes the page).
#[test]
fn the_replay_page_tables_are_rendered_from_stored_runs() {
    use incident_lab::logs::doc_blocks::render;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/replay.md")).unwrap();
    let results = root.join("docs/results");
    let mut recoveries: Vec<_> = std::fs::read_dir(results.join("recovery"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    recoveries.sort();
    assert_eq!(recoveries.len(), 2, "two worlds recovered: {recoveries:?}");
    let recoveries: Vec<&Path> = recoveries.iter().map(|p| p.as_path()).collect();
    for (name, sources) in [
        (
            "triage",
            vec![root.join("scenarios/logs/incident-2026-01-23.csv")],
        ),
        (
            "replay-fidelity",
            vec![results.join("replay/fidelity.json")],
        ),
        ("calibrate-fit", vec![results.join("replay/fit.json")]),
    ] {
        let sources: Vec<&Path> = sources.iter().map(|p| p.as_path()).collect();
        assert_eq!(
            block(&page, name),
            render(name, &sources, root).unwrap(),
            "docs/replay.md's {name} block differs from its stored run: run scripts/readme-render"
        );
    }
    assert_eq!(
        block(&page, "recovery"),
        render("recovery", &recoveries, root).unwrap(),
        "docs/replay.md's recovery block differs from docs/results/recovery: run scripts/readme-render"
    );
}

/// The README is a front door a newcomer reads (at most ~200 lines), and every link in it and
/// in the pages under docs/ resolves to a file of the repository: none leaves it.
#[test]
fn the_readme_is_short_and_its_links_stay_in_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(lines <= 200, "README.md is {lines} lines");
    let mut pages = vec![(root.to_path_buf(), readme)];
    for dir in ["docs", "service"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x == "md") {
                let text = std::fs::read_to_string(&path).unwrap();
                pages.push((path.parent().unwrap().to_path_buf(), text));
            }
        }
    }
    for (dir, text) in &pages {
        for (i, _) in text.match_indices("](") {
            let target: String = text[i + 2..].chars().take_while(|c| *c != ')').collect();
            let file = target.split('#').next().unwrap();
            assert!(
                !target.contains("://") && !file.is_empty(),
                "{}: a link that leaves the repository: {target}",
                dir.display()
            );
            assert!(
                dir.join(file).exists(),
                "{}: a link to a missing file: {target}",
                dir.display()
            );
        }
    }
}
