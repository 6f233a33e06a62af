//! `incident-lab report --html`: the page, and what a browser saw of it.

use super::*;

/// `report --html FILE [--screenshot PNG]`: the page, and what a browser saw of it.
pub(super) fn report_html(
    report: &crate::report::Report,
    html: &std::path::Path,
    args: &args::ReportArgs,
) -> Result<(), Failure> {
    use crate::report::browser;
    std::fs::write(html, crate::report::html::render(report))
        .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", html.display())))?;
    println!("wrote {}", html.display());
    let Some(png) = &args.screenshot else {
        return Ok(());
    };
    let chromium = browser::find_chromium().ok_or_else(|| {
        Failure::Infrastructure(anyhow::anyhow!(
            "no Chromium for --screenshot: install Debian's chromium package (scripts/setup does) or set {} to a Chromium binary",
            browser::CHROMIUM_ENV
        ))
    })?;
    let view = browser::open(&chromium, html, args.screenshot_height).map_err(|e| {
        Failure::Infrastructure(e.context(format!("{} in {}", html.display(), chromium.display())))
    })?;
    std::fs::write(png, &view.png)
        .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", png.display())))?;
    let (w, h) = browser::png_size(&view.png).unwrap_or_default();
    println!(
        "opened in {}: \"{}\", sections {}, {} charts, page {} px tall; {} console errors, {} requests beyond the page; wrote {} ({w}×{h})",
        chromium.display(),
        view.title,
        view.sections.join(" "),
        view.charts,
        view.height,
        view.console_errors.len(),
        view.requests.len(),
        png.display()
    );
    for e in &view.console_errors {
        println!("  console: {e}");
    }
    for r in &view.requests {
        println!("  request: {r}");
    }
    if view.clean() {
        Ok(())
    } else {
        Err(Failure::Expectation(format!(
            "{} is not self-contained and quiet in a browser: {} console errors, {} requests",
            html.display(),
            view.console_errors.len(),
            view.requests.len()
        )))
    }
}
