//! The generator's HTTP/1.1 client: keep-alive connections to the one host a plan targets,
//! straight on hyper's connection API, over TLS (rustls) for an `https://` host.
//!
//! goose's users send through reqwest, whose request path (URL handling, the redirect policy,
//! hyper-util's pool keyed by scheme and authority, its timeout layer) was about two thirds of
//! the user-space instructions a request cost the generator (`scripts/generator-instructions`).
//! A plan targets one host, so a request needs none of that: take an idle connection
//! (the last one given back, still warm) or open one, send, read the body to its last byte,
//! give the connection back. As with reqwest's pool, the connections open at once never exceed
//! the requests in flight, which the streams' `max_in_flight` bound. TCP_NODELAY is set, as
//! reqwest sets it; redirects are not followed (a 3xx is recorded as what the service said).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, HOST};
use hyper_util::rt::TokioIo;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::plan::Tls;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("could not connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the TLS handshake with {host} failed")]
    Tls {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the exchange failed")]
    Http(#[from] hyper::Error),
}

/// A plan's host, as the client reaches it.
pub struct Client {
    /// Where to connect: `host:port`, an IPv6 host in brackets.
    addr: String,
    /// The `Host` header every request carries.
    host: HeaderValue,
    /// Connections no request holds, the most recently given back last.
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    /// For an `https://` host: the handshake's configuration and the name it checks.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// What the service answered: the status and headers (the body was read to its end).
pub type Answer = hyper::http::response::Parts;

impl Client {
    /// The client for `base`, an `http://` or `https://` URL (trusted as `tls` says); `Err`
    /// says why not (another scheme, no host, a CA that is no PEM certificate).
    pub fn new(base: &reqwest::Url, tls: &Tls) -> Result<Self, String> {
        let host = base
            .host_str()
            .ok_or_else(|| format!("{base} has no host"))?;
        let port = base
            .port_or_known_default()
            .ok_or_else(|| format!("{base} has no port"))?;
        let header = match base.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let tls = match base.scheme() {
            "http" => None,
            "https" => {
                let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                    .map_err(|e| format!("{host} is not a name TLS can check: {e}"))?;
                Some((TlsConnector::from(Arc::new(client_config(tls)?)), name))
            }
            other => return Err(format!("{base}: {other}:// is neither http nor https")),
        };
        Ok(Self {
            addr: format!("{host}:{port}"),
            host: HeaderValue::from_str(&header).map_err(|e| format!("{header}: {e}"))?,
            idle: Mutex::new(Vec::new()),
            tls,
        })
    }

    /// Sends `request` (its URI in origin form, `/path?query`) and reads the response to its
    /// last byte; with the answer, how long a new connection took to set up (TCP, and the TLS
    /// handshake for https), if the request opened one. A request an idle connection could not
    /// take (the server had closed it) goes on a new one; one that was written and then failed
    /// is not sent again.
    pub async fn send(
        &self,
        mut request: hyper::Request<Full<Bytes>>,
    ) -> Result<(Answer, Option<Duration>), SendError> {
        request.headers_mut().insert(HOST, self.host.clone());
        loop {
            let (mut sender, set_up) = match self.idle_ready().await {
                Some(sender) => (sender, None),
                None => {
                    let began = Instant::now();
                    let sender = self.connect().await?;
                    (sender, Some(began.elapsed()))
                }
            };
            let fresh = set_up.is_some();
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    body.collect().await?;
                    self.idle.lock().expect("idle lock").push(sender);
                    return Ok((parts, set_up));
                }
                Err(mut e) => match e.take_message() {
                    // Not written: the idle connection closed as it was taken. The request
                    // goes on the next idle one or a new one; on a new one, an error stands.
                    Some(unsent) if !fresh => request = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// An idle connection ready for a request, dropping those the server has closed.
    async fn idle_ready(&self) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let mut sender = self.idle.lock().expect("idle lock").pop()?;
            // Ready at once unless the connection is still finishing the last exchange.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, SendError> {
        let connect_err = |source| SendError::Connect {
            addr: self.addr.clone(),
            source,
        };
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(connect_err)?;
        stream.set_nodelay(true).map_err(connect_err)?;
        // The connection's own task reads and writes the socket; it ends when the server
        // closes it or the last sender is dropped (a request timed out, the run ended).
        let Some((connector, name)) = &self.tls else {
            let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            return Ok(sender);
        };
        let stream = connector
            .connect(name.clone(), stream)
            .await
            .map_err(|source| SendError::Tls {
                host: self.addr.clone(),
                source,
            })?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Connections open and idle now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.lock().expect("idle lock").len()
    }
}

/// The handshake's configuration: the system's roots and `tls.ca_pem`'s certificates, HTTP/1.1
/// by ALPN; with `tls.insecure`, any certificate.
fn client_config(tls: &Tls) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder();
    let mut config = if tls.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(
                rustls::crypto::aws_lc_rs::default_provider(),
            )))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        // The system's roots; a machine without any still trusts a given CA.
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if let Some(pem) = &tls.ca_pem {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("the CA file is not PEM certificates: {e}"))?;
            if certs.is_empty() {
                return Err("the CA file holds no PEM certificate".into());
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("the CA file's certificate: {e}"))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `--insecure`: every certificate accepted, the handshake's signatures still checked.
#[derive(Debug)]
struct AcceptAny(rustls::crypto::CryptoProvider);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn get(path: &str) -> hyper::Request<Full<Bytes>> {
        hyper::Request::get(path).body(Full::default()).unwrap()
    }

    /// A server on loopback that counts the connections it accepts and hands each to `serve`
    /// in a task of its own.
    async fn listen<F, Fut>(serve: F) -> (reqwest::Url, Arc<AtomicUsize>)
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url =
            reqwest::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream));
            }
        });
        (url, accepted)
    }

    /// A server that answers each request with its Host header and path.
    async fn server() -> (reqwest::Url, Arc<AtomicUsize>) {
        listen(|stream| async move {
            let service = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                let host = req.headers()[HOST].to_str().unwrap().to_owned();
                let text = format!("{host} {}", req.uri());
                Ok::<_, std::convert::Infallible>(
                    hyper::Response::builder()
                        .header("x-echo", text)
                        .body(Full::new(Bytes::from_static(b"body")))
                        .unwrap(),
                )
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let _ = conn.await;
        })
        .await
    }

    #[tokio::test]
    async fn a_connection_is_kept_and_reused_with_the_host_header_set() {
        let (url, accepted) = server().await;
        let client = Client::new(&url, &Tls::default()).unwrap();
        for (i, path) in ["/a", "/b?x=1", "/c"].into_iter().enumerate() {
            let (answer, set_up) = client.send(get(path)).await.unwrap();
            // Only the first request paid for a connection.
            assert_eq!(set_up.is_some(), i == 0, "{path}");
            let echo = answer.headers["x-echo"].to_str().unwrap();
            let authority = format!("127.0.0.1:{}", url.port().unwrap());
            assert_eq!(echo, format!("{authority} {path}"));
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "three requests, one connection"
        );
        assert_eq!(client.idle(), 1);
    }

    /// A server that answers one request per connection and then closes it, without
    /// `Connection: close`: the client sees the close and opens a new connection for the next
    /// request instead of failing it.
    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (url, accepted) = listen(|mut stream| async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before its request ended");
                seen.extend_from_slice(&buf[..n]);
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
        })
        .await;
        let client = Client::new(&url, &Tls::default()).unwrap();
        for _ in 0..3 {
            let (answer, set_up) = client.send(get("/")).await.unwrap();
            assert_eq!(answer.status, 200);
            assert!(set_up.is_some(), "each request needed a new connection");
            // Time for the client's connection task to read the close (not a timing check:
            // without it, a request may be written before the close is seen, and fail as it
            // would with any client).
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            3,
            "one connection per request"
        );
    }

    #[tokio::test]
    async fn a_host_that_refuses_is_a_connect_error_naming_it() {
        // A port bound and released: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}/prefix/")).unwrap();
        let err = Client::new(&url, &Tls::default())
            .unwrap()
            .send(get("/"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SendError::Connect { addr, .. } if *addr == format!("127.0.0.1:{port}")),
            "{err:?}"
        );
    }

    #[test]
    fn an_http_or_https_host_has_a_client_and_nothing_else() {
        let client = |s: &str| Client::new(&reqwest::Url::parse(s).unwrap(), &Tls::default());
        assert!(client("https://127.0.0.1:9").unwrap().tls.is_some());
        assert!(client("ftp://127.0.0.1:9")
            .unwrap_err()
            .contains("neither http nor https"));
        let bad_ca = Tls {
            ca_pem: Some("not a certificate".into()),
            insecure: false,
        };
        let err = Client::new(
            &reqwest::Url::parse("https://127.0.0.1:9").unwrap(),
            &bad_ca,
        )
        .unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
        let v6 = client("http://[::1]:9/prefix/").unwrap();
        assert_eq!(
            (v6.addr.as_str(), v6.host.to_str().unwrap()),
            ("[::1]:9", "[::1]:9")
        );
        let default_port = client("http://localhost").unwrap();
        assert_eq!(default_port.addr, "localhost:80");
        assert_eq!(default_port.host.to_str().unwrap(), "localhost");
    }
}
