//! The trivial endpoint the generator and wrk are measured against: `incident-lab
//! echo-server`, `200 ok` on every path, in a process of its own; over plain HTTP, or over TLS
//! (HTTP/1.1, the one protocol wrk speaks, offered by ALPN) with a certificate made for the run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The echo server's certificate and key (PEM), for `--tls-cert` / `--tls-key`.
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `incident-lab echo-server` in a process of its own, killed on drop.
pub(super) struct Echo {
    child: tokio::process::Child,
    /// `http://ADDR` or `https://ADDR`.
    pub base: String,
}

impl Echo {
    pub async fn start(tls: Option<&ServerCert>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find incident-lab's own binary")?;
        let mut command = tokio::process::Command::new(exe);
        command.args(["echo-server", "--listen", "127.0.0.1:0"]);
        if let Some(t) = tls {
            command.arg("--tls-cert").arg(&t.cert);
            command.arg("--tls-key").arg(&t.key);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the echo server")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("the echo server did not say where it listens within 10 s")??
            .context("the echo server ended before listening")?;
        let addr = line
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line from the echo server: {line:?}"))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(Self {
            child,
            base: format!("{scheme}://{addr}"),
        })
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Serves `200 ok` on every path until the process is stopped, over TLS with `tls`; prints
/// `listening on ADDR`.
pub async fn echo_server(
    listen: std::net::SocketAddr,
    tls: Option<ServerCert>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let acceptor = tls.as_ref().map(acceptor).transpose()?;
    println!("listening on {}", listener.local_addr()?);
    let Some(acceptor) = acceptor else {
        let app = axum::Router::new().fallback(|| async { "ok" });
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                crate::interrupt::stopped().await;
            })
            .await?;
        return Ok(());
    };
    // Served until the process is stopped (ceiling kills it when it is done).
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let ok = hyper::service::service_fn(|_| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(axum::body::Bytes::from_static(b"ok")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), ok)
                    .await;
            });
        }
    });
    crate::interrupt::stopped().await;
    Ok(())
}

/// The TLS acceptor for `tls`' certificate and key, HTTP/1.1 offered by ALPN.
fn acceptor(tls: &ServerCert) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("{}: not PEM certificates", tls.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .with_context(|| format!("{}: not a PEM private key", tls.key.display()))?;
    let mut config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| format!("{} and {}", tls.cert.display(), tls.key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A CA and a certificate for the echo server made in `dir` ([`crate::tools::make_certificates`]):
/// the server's, and the CA's PEM the generator trusts.
pub(super) fn certificates(dir: &Path) -> anyhow::Result<(ServerCert, String)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    crate::tools::make_certificates(dir)?;
    let ca = std::fs::read_to_string(dir.join("ca.pem"))
        .with_context(|| format!("cannot read {}", dir.join("ca.pem").display()))?;
    Ok((
        ServerCert {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        },
        ca,
    ))
}
