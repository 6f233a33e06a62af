//! External programs the harness runs beside its own (Chromium, wrk, pgbench), found on PATH.

use std::path::PathBuf;

/// The first of `names` found as a file in a directory of PATH.
pub fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// A PostgreSQL client program: on PATH, else in Debian's `/usr/lib/postgresql/*/bin` (the
/// last by name).
pub fn postgres_tool(name: &str) -> Option<PathBuf> {
    on_path(&[name]).or_else(|| {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
            .filter(|p| p.is_file())
            .collect();
        dirs.sort();
        dirs.pop()
    })
}

/// Makes, with `openssl` (Debian's package, `scripts/setup` installs it), a CA and a server
/// certificate it signs for IP 127.0.0.1 in `dir`: `ca.pem` (and `ca.key`), `server.pem` and
/// `server.key`. P-256 keys, a day's validity: for a TLS endpoint on loopback the harness or a
/// test starts, trusted as a private CA (`--ca-cert`) would be. `Err` says which step failed.
pub fn make_certificates(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let openssl = on_path(&["openssl"]).context(
        "openssl is not installed (Debian's openssl package; scripts/setup installs it)",
    )?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .with_context(|| format!("cannot write into {}", dir.display()))?;
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1";
    for args in [
        format!("req -x509 {key} -keyout ca.key -out ca.pem -subj /CN=incident-lab-ca"),
        format!("req {key} -keyout server.key -out server.csr -subj /CN=127.0.0.1"),
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile server.ext".into(),
    ] {
        let out = std::process::Command::new(&openssl)
            .args(args.split_whitespace())
            .current_dir(dir)
            .output()
            .with_context(|| format!("cannot run openssl {args}"))?;
        anyhow::ensure!(
            out.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
