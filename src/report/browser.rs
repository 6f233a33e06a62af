//! Opens a report in headless Chromium, as a person would, and says what the browser saw: the
//! errors on its console, every request that left the page, the sections it found, and a PNG of
//! the page. Spoken to over the Chrome DevTools Protocol (one WebSocket, flattened sessions).
//!
//! Used by `incident-lab report REPORT --html FILE --screenshot PNG` and the browser tests.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// Where Chromium is looked for when `INCIDENT_LAB_CHROMIUM` does not say.
const NAMES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// The environment variable naming a Chromium binary.
pub const CHROMIUM_ENV: &str = "INCIDENT_LAB_CHROMIUM";

/// Page width in CSS pixels, a laptop's.
const WIDTH: u32 = 1280;

/// How long the browser gets to start, load the page and take the picture.
const DEADLINE: Duration = Duration::from_secs(60);

/// The Chromium to use: `INCIDENT_LAB_CHROMIUM`, else the first of [`NAMES`] on PATH.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(CHROMIUM_ENV) {
        return Some(PathBuf::from(p));
    }
    crate::tools::on_path(&NAMES)
}

/// What the browser saw of a page.
#[derive(Debug, Clone)]
pub struct PageView {
    /// Console errors, uncaught exceptions and error log entries (failed loads among them).
    pub console_errors: Vec<String>,
    /// Every URL the page asked for beyond itself (`data:` and `about:` excepted).
    pub requests: Vec<String>,
    /// `document.title`.
    pub title: String,
    /// The ids of the page's `<section>` elements, in order.
    pub sections: Vec<String>,
    /// Inline SVG charts drawn.
    pub charts: usize,
    /// The page's full height in CSS pixels.
    pub height: u32,
    /// The PNG taken, `WIDTH` wide and the page's height (or `max_height`) tall.
    pub png: Vec<u8>,
}

impl PageView {
    /// Nothing went wrong on the console and nothing left the page.
    pub fn clean(&self) -> bool {
        self.console_errors.is_empty() && self.requests.is_empty()
    }
}

/// Opens `page` (an HTML file) in headless `chromium`, waits for its load, and takes a PNG of at
/// most `max_height` CSS pixels from its top (`None`: the whole page).
pub fn open(chromium: &Path, page: &Path, max_height: Option<u32>) -> anyhow::Result<PageView> {
    let page = page
        .canonicalize()
        .with_context(|| format!("cannot open {}", page.display()))?;
    let url = format!("file://{}", page.display());
    let profile = tempfile::tempdir().context("cannot create a profile directory")?;
    let browser = Browser::start(chromium, profile.path())?;
    let deadline = Instant::now() + DEADLINE;
    let mut cdp = Cdp::connect(profile.path(), &browser, deadline)?;

    let target = cdp.call("Target.createTarget", json!({ "url": "about:blank" }), None)?;
    let target = target["targetId"]
        .as_str()
        .context("no targetId")?
        .to_owned();
    let attached = cdp.call(
        "Target.attachToTarget",
        json!({ "targetId": target, "flatten": true }),
        None,
    )?;
    let session = attached["sessionId"]
        .as_str()
        .context("no sessionId")?
        .to_owned();
    let s = Some(session.as_str());
    for domain in ["Page", "Runtime", "Log", "Network"] {
        cdp.call(&format!("{domain}.enable"), json!({}), s)?;
    }
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
        s,
    )?;
    cdp.call("Page.navigate", json!({ "url": url }), s)?;
    cdp.wait_event("Page.loadEventFired", &session)?;

    let facts = cdp.call(
        "Runtime.evaluate",
        json!({
            "expression": "JSON.stringify({title: document.title, sections: [...document.querySelectorAll('section[id]')].map(s => s.id), charts: document.querySelectorAll('svg').length, height: Math.ceil(document.documentElement.scrollHeight)})",
            "returnByValue": true
        }),
        s,
    )?;
    let facts: Value = serde_json::from_str(
        facts["result"]["value"]
            .as_str()
            .context("the page's facts did not come back")?,
    )?;
    let height = facts["height"].as_u64().unwrap_or(900) as u32;
    let shot = cdp.call(
        "Page.captureScreenshot",
        json!({
            "format": "png",
            "captureBeyondViewport": true,
            "clip": { "x": 0, "y": 0, "width": WIDTH, "height": max_height.map_or(height, |m| m.min(height)), "scale": 1 }
        }),
        s,
    )?;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().context("no screenshot data")?)
        .context("the screenshot is not base64")?;
    let _ = cdp.call("Browser.close", json!({}), None);

    let mut view = PageView {
        console_errors: Vec::new(),
        requests: Vec::new(),
        title: facts["title"].as_str().unwrap_or_default().to_owned(),
        sections: facts["sections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        charts: facts["charts"].as_u64().unwrap_or(0) as usize,
        height,
        png,
    };
    for event in &cdp.events {
        observe(&mut view, event, &url);
    }
    Ok(view)
}

/// Adds what one DevTools event says about the page to `view`.
fn observe(view: &mut PageView, event: &Value, page_url: &str) {
    let p = &event["params"];
    match event["method"].as_str().unwrap_or_default() {
        "Runtime.consoleAPICalled" if matches!(p["type"].as_str(), Some("error" | "assert")) => {
            let args: Vec<String> = p["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| match &a["value"] {
                    Value::String(s) => s.clone(),
                    Value::Null => a["description"].as_str().unwrap_or_default().to_owned(),
                    v => v.to_string(),
                })
                .collect();
            view.console_errors
                .push(format!("console.error: {}", args.join(" ")));
        }
        "Runtime.exceptionThrown" => {
            let d = &p["exceptionDetails"];
            let what = d["exception"]["description"]
                .as_str()
                .or(d["text"].as_str())
                .unwrap_or("an exception");
            view.console_errors.push(format!("uncaught: {what}"));
        }
        "Log.entryAdded" if p["entry"]["level"] == "error" => {
            let e = &p["entry"];
            view.console_errors.push(format!(
                "{}: {} {}",
                e["source"].as_str().unwrap_or("log"),
                e["text"].as_str().unwrap_or_default(),
                e["url"].as_str().unwrap_or_default()
            ));
        }
        "Network.requestWillBeSent" => {
            let url = p["request"]["url"].as_str().unwrap_or_default();
            let inline = url.starts_with("data:") || url.starts_with("about:");
            if !inline && url != page_url && !view.requests.iter().any(|r| r == url) {
                view.requests.push(url.to_owned());
            }
        }
        _ => {}
    }
}

/// A headless Chromium of our own, killed when dropped.
struct Browser {
    child: Child,
    path: PathBuf,
}

impl Browser {
    fn start(chromium: &Path, profile: &Path) -> anyhow::Result<Self> {
        let child = Command::new(chromium)
            .args([
                "--headless",
                // Root (CI, containers) cannot use the sandbox; the page is our own file.
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                "--no-first-run",
                "--no-default-browser-check",
                // Nothing of the browser's own on the network, so every request seen is the page's.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--mute-audio",
                "--hide-scrollbars",
                "--force-color-profile=srgb",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", chromium.display()))?;
        Ok(Self {
            child,
            path: chromium.to_owned(),
        })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DevTools connection: calls answered by id; events kept, in order, for reading after.
struct Cdp {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    events: Vec<Value>,
    deadline: Instant,
}

impl Cdp {
    /// Waits for the browser to write `DevToolsActivePort` into its profile, then connects.
    fn connect(profile: &Path, browser: &Browser, deadline: Instant) -> anyhow::Result<Self> {
        let file = profile.join("DevToolsActivePort");
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break (port.trim().to_owned(), path.trim().to_owned());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not open its DevTools port within {DEADLINE:?}",
                    browser.path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stream = TcpStream::connect(format!("127.0.0.1:{port}"))
            .with_context(|| format!("cannot reach Chromium's DevTools port {port}"))?;
        // The handshake waits as long as the run may (a short timeout here interrupts it on a
        // busy machine: "Interrupted handshake (WouldBlock)"); reads after it poll every 250 ms.
        let left = deadline.saturating_duration_since(Instant::now());
        stream.set_read_timeout(Some(left.max(Duration::from_secs(1))))?;
        let (ws, _) = tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream)
            .map_err(|e| anyhow!("DevTools handshake failed: {e}"))?;
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(250)))?;
        Ok(Self {
            ws,
            next_id: 1,
            events: Vec::new(),
            deadline,
        })
    }

    /// The next message, or `None` when none came within the read timeout.
    fn read(&mut self) -> anyhow::Result<Option<Value>> {
        if Instant::now() > self.deadline {
            bail!("Chromium did not answer within {DEADLINE:?}");
        }
        match self.ws.read() {
            Ok(Message::Text(text)) => Ok(Some(serde_json::from_str(text.as_str())?)),
            Ok(_) => Ok(None),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                Ok(None)
            }
            Err(e) => Err(anyhow!("the DevTools connection failed: {e}")),
        }
    }

    fn call(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .map_err(|e| anyhow!("cannot send {method}: {e}"))?;
        loop {
            let Some(m) = self.read()? else { continue };
            if m["id"].as_u64() == Some(id) {
                if let Some(err) = m.get("error") {
                    bail!("{method} failed: {err}");
                }
                return Ok(m["result"].clone());
            }
            if m.get("method").is_some() {
                self.events.push(m);
            }
        }
    }

    fn wait_event(&mut self, method: &str, session: &str) -> anyhow::Result<()> {
        let seen = |m: &Value| m["method"] == method && m["sessionId"] == session;
        if self.events.iter().any(seen) {
            return Ok(());
        }
        loop {
            let Some(m) = self.read()? else { continue };
            let done = seen(&m);
            if m.get("method").is_some() {
                self.events.push(m);
            }
            if done {
                return Ok(());
            }
        }
    }
}

/// The width and height a PNG says it has (its IHDR chunk).
pub fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&png[16..20]), be(&png[20..24])))
}
