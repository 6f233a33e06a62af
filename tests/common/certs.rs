//! Certificates made in a test with openssl (scripts/setup installs it), nothing fetched: a
//! CA, a server certificate it signs for 127.0.0.1, and another CA that signs nothing.

use std::path::Path;
use std::process::Command;

/// Runs openssl with `args` in `dir`.
pub fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("openssl (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes into `dir`: `ca.pem` (and its key), `server.pem` and `server.key` (signed by it, for
/// IP 127.0.0.1), `other.pem` (a CA that signed nothing here). P-256 keys, a day's validity.
pub fn make(dir: &Path) {
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1";
    openssl(
        dir,
        &format!("req -x509 {key} -keyout ca.key -out ca.pem -subj /CN=test-ca"),
    );
    openssl(
        dir,
        &format!("req -x509 {key} -keyout other.key -out other.pem -subj /CN=other"),
    );
    openssl(
        dir,
        &format!("req {key} -keyout server.key -out server.csr -subj /CN=127.0.0.1"),
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile ext",
    );
}
