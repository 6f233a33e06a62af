//! The prioritized fix list, as the seed made it by hand from `logs_result.csv`: error
//! signatures grouped into categories, counted per endpoint, ranked P0 → P2 and by requests.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::classify::{category, Priority, OTHER};
use super::summary::Summary;

/// One category's line of the fix list.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub rank: usize,
    pub priority: Priority,
    pub category: String,
    pub why: String,
    /// Requests with at least one row of this category.
    pub requests: u64,
    /// Rows of this category.
    pub rows: u64,
    /// Production `METHOD /path` → requests, most first.
    pub endpoints: Vec<(String, u64)>,
    pub first: String,
    pub last: String,
    /// One message of this kind, with client identifiers taken out.
    pub example: String,
}

/// The fix list.
#[derive(Debug, Clone, Serialize)]
pub struct Triage {
    pub source: String,
    pub requests: u64,
    pub rows: u64,
    pub malformed_rows: u64,
    pub groups: Vec<Group>,
}

fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Ranks the categories `summary` found.
pub fn triage(summary: &Summary) -> Triage {
    let mut by_category: BTreeMap<&str, Group> = BTreeMap::new();
    for ((name, endpoint), count) in &summary.categories {
        let c = category(name);
        let g = by_category.entry(name.as_str()).or_insert_with(|| Group {
            rank: 0,
            priority: c.map_or(Priority::Unranked, |c| c.priority),
            category: name.clone(),
            why: c
                .map_or(
                    "errors no category describes: read the example and extend the categories",
                    |c| c.why,
                )
                .into(),
            requests: 0,
            rows: 0,
            endpoints: Vec::new(),
            first: String::new(),
            last: String::new(),
            example: count.example.clone(),
        });
        g.requests += count.requests;
        g.rows += count.rows;
        g.endpoints.push((endpoint.clone(), count.requests));
        let (first, last) = (utc(count.first_ms), utc(count.last_ms));
        if g.first.is_empty() || first < g.first {
            g.first = first;
        }
        if last > g.last {
            g.last = last;
        }
    }
    let mut groups: Vec<Group> = by_category.into_values().collect();
    for g in &mut groups {
        g.endpoints
            .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    }
    groups.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then(b.requests.cmp(&a.requests))
            .then(a.category.cmp(&b.category))
    });
    for (i, g) in groups.iter_mut().enumerate() {
        g.rank = i + 1;
    }
    Triage {
        source: summary.source.clone(),
        requests: summary.requests,
        rows: summary.read.rows,
        malformed_rows: summary.read.malformed,
        groups,
    }
}

/// The ranked categories as a Markdown table (the fix list's first part; what the docs show).
pub fn table(t: &Triage) -> String {
    let mut out = String::from(
        "| rank | priority | category | requests | rows | where | first – last (UTC) |\n|---|---|---|---|---|---|---|\n",
    );
    for g in &t.groups {
        let prio = match g.priority {
            Priority::Unranked => "–".to_string(),
            p => format!("{p:?}"),
        };
        let shown: Vec<String> = g
            .endpoints
            .iter()
            .take(3)
            .map(|(e, n)| format!("`{e}` {n}"))
            .collect();
        let more = if g.endpoints.len() > 3 {
            format!(", +{} more", g.endpoints.len() - 3)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {} | {prio} | `{}` | {} | {} | {}{more} | {} – {} |",
            g.rank,
            g.category,
            g.requests,
            g.rows,
            shown.join(", "),
            g.first,
            g.last
        );
    }
    out
}

/// The fix list as Markdown.
pub fn markdown(t: &Triage) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Triage of `{}`\n", t.source);
    let _ = writeln!(
        out,
        "{} requests in {} rows ({} malformed). Ranked by priority (P0: the burst and its cascade; P1: timeouts and noise that hide them; P2: what must degrade safely), then by requests.\n",
        t.requests, t.rows, t.malformed_rows
    );
    if t.groups.is_empty() {
        out.push_str("No errors found.\n");
        return out;
    }
    out.push_str(&table(t));
    out.push_str("\n## Why, and one example of each\n\n");
    for g in &t.groups {
        let _ = writeln!(
            out,
            "{}. **`{}`** — {}. Example: `{}`",
            g.rank,
            g.category,
            g.why,
            g.example.replace('`', "'")
        );
    }
    if t.groups.iter().any(|g| g.category == OTHER) {
        out.push_str(
            "\n`other_error` holds error-level rows and 5xx answers that match no category.\n",
        );
    }
    out
}
