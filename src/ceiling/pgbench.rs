//! The database ceilings' reference: `pgbench` inserting one queue row per transaction on the
//! same cluster, and its `tps` read from its output.

use std::time::Duration;

use super::Reference;

/// `Requests/sec`'s equivalent for pgbench: `tps = N (without initial connection time)`.
pub fn parse_pgbench(output: &str) -> Option<f64> {
    output.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("tps = ")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// pgbench inserting one queue row per transaction, `clients` at once, for `step`.
pub(super) async fn pgbench(url: &str, clients: u32, step: Duration) -> Reference {
    let Some(bin) = crate::tools::postgres_tool("pgbench") else {
        return Reference {
            tool: "pgbench".into(),
            rate: None,
            detail: "not run: pgbench is not installed (Debian's postgresql-client)".into(),
        };
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            return Reference {
                tool: "pgbench".into(),
                rate: None,
                detail: format!("not run: {e}"),
            }
        }
    };
    let script = dir.path().join("insert.sql");
    let sql = "INSERT INTO background_jobs (kind, dedupe_key, payload) VALUES ('pgbench', 'pgbench:' || gen_random_uuid(), '{}'::jsonb);\n";
    if let Err(e) = std::fs::write(&script, sql) {
        return Reference {
            tool: "pgbench".into(),
            rate: None,
            detail: format!("not run: {e}"),
        };
    }
    let args = [
        "-n".to_owned(),
        format!("-c{clients}"),
        "-j2".to_owned(),
        format!("-T{}", step.as_secs().max(1)),
        "-f".to_owned(),
        script.display().to_string(),
    ];
    let command = format!(
        "pgbench -n -c{clients} -j2 -T{} -f insert.sql, insert.sql: {}",
        step.as_secs().max(1),
        sql.trim()
    );
    let out = tokio::process::Command::new(&bin)
        .args(&args)
        .arg(url)
        .output()
        .await;
    let (rate, detail) = match out {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            match parse_pgbench(&text) {
                Some(r) => (Some(r), command),
                None => (
                    None,
                    format!(
                        "{command}: no tps in its output: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                ),
            }
        }
        Err(e) => (None, format!("{command}: {e}")),
    };
    Reference {
        tool: "pgbench".into(),
        rate,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pgbench 15's summary line.
    #[test]
    fn pgbench_output_gives_its_tps() {
        let out = "transaction type: insert.sql\nscaling factor: 1\nnumber of clients: 10\nlatency average = 1.234 ms\ninitial connection time = 12.345 ms\ntps = 8103.123456 (without initial connection time)\n";
        assert_eq!(parse_pgbench(out), Some(8103.123456));
        assert_eq!(parse_pgbench("pgbench: error: connection refused"), None);
    }
}
