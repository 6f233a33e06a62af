//! The generator's HTTP client: keep-alive connections to the one host a plan targets,
//! straight on hyper's connection API, over TLS (rustls) for an `https://` host, HTTP/2 when
//! the server chooses it by ALPN.
//!
//! goose's users send through reqwest, whose request path (URL handling, the redirect policy,
//! hyper-util's pool keyed by scheme and authority, its timeout layer) was about two thirds of
//! the user-space instructions a request cost the generator (`scripts/generator-instructions`).
//! A plan targets one host, so a request needs none of that: take an idle connection
//! (the last one given back, still warm) or open one, send, read the body to its last byte,
//! give the connection back. As with reqwest's pool, the HTTP/1.1 connections open at once
//! never exceed the requests in flight, which the streams' `max_in_flight` bound. Over HTTP/2
//! every request shares one connection (a new one only when it closes), as browsers do, the
//! server's `max_concurrent_streams` queueing any beyond it. TCP_NODELAY is set, as reqwest
//! sets it; redirects are not followed (a 3xx is recorded as what the service said).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::{HeaderValue, HOST};
use hyper::http::uri::{Authority, Scheme};
use hyper_util::rt::{TokioExecutor, TokioIo};
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

type Body = Full<Bytes>;

/// A connection just opened, in the protocol the server chose.
enum Opened {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

/// The names a report gives the protocols (the keys of [`Client::connections`]).
pub const HTTP1: &str = "HTTP/1.1";
pub const HTTP2: &str = "HTTP/2";

/// A plan's host, as the client reaches it.
pub struct Client {
    /// Where to connect: `host:port`, an IPv6 host in brackets.
    addr: String,
    /// The `Host` header every HTTP/1.1 request carries (HTTP/2's `:authority`).
    host: HeaderValue,
    authority: Authority,
    /// HTTP/1.1 connections no request holds, the most recently given back last.
    idle: Mutex<Vec<http1::SendRequest<Body>>>,
    /// The server chose HTTP/2 by ALPN: requests go on [`Self::h2`].
    speaks_h2: AtomicBool,
    /// The HTTP/2 connection every request shares; its lock is held while one is opened, so
    /// requests arriving meanwhile wait for it instead of opening their own.
    h2: tokio::sync::Mutex<Option<http2::SendRequest<Body>>>,
    /// Connections opened, HTTP/1.1 and HTTP/2.
    opened: [AtomicU64; 2],
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
            authority: Authority::from_str(&header).map_err(|e| format!("{header}: {e}"))?,
            idle: Mutex::new(Vec::new()),
            speaks_h2: AtomicBool::new(false),
            h2: tokio::sync::Mutex::new(None),
            opened: Default::default(),
            tls,
        })
    }

    /// Connections this client opened, by protocol ([`HTTP1`], [`HTTP2`]), those it opened
    /// none of left out.
    pub fn connections(&self) -> BTreeMap<String, u64> {
        [HTTP1, HTTP2]
            .into_iter()
            .zip(&self.opened)
            .map(|(name, n)| (name.to_owned(), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Sends `request` (its URI in origin form, `/path?query`) and reads the response to its
    /// last byte; with the answer, how long a new connection took to set up (TCP, and the TLS
    /// handshake for https), if the request opened one. A request an idle connection could not
    /// take (the server had closed it) goes on a new one; one that was written and then failed
    /// is not sent again.
    pub async fn send(
        &self,
        request: hyper::Request<Body>,
    ) -> Result<(Answer, Option<Duration>), SendError> {
        // Every request's future is moved a few times before it is polled (into the timeout,
        // the engine's step): what only some requests need is boxed, so it stays small. With
        // the HTTP/2 path and a new connection's set-up inline, it tripled the memcpy a
        // request cost (scripts/generator-instructions).
        if self.speaks_h2.load(Ordering::Relaxed) {
            return Box::pin(self.send_h2(request)).await;
        }
        self.send_h1(request).await
    }

    async fn send_h1(
        &self,
        mut request: hyper::Request<Body>,
    ) -> Result<(Answer, Option<Duration>), SendError> {
        request.headers_mut().insert(HOST, self.host.clone());
        loop {
            let (mut sender, set_up) = match self.idle_ready().await {
                Some(sender) => (sender, None),
                None => {
                    let began = Instant::now();
                    match Box::pin(self.connect()).await? {
                        Opened::H1(sender) => (sender, Some(began.elapsed())),
                        Opened::H2(sender) => {
                            request.headers_mut().remove(HOST);
                            return Box::pin(self.first_h2(sender, request, began)).await;
                        }
                    }
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

    /// The first request on HTTP/2: its connection becomes the shared one.
    async fn first_h2(
        &self,
        sender: http2::SendRequest<Body>,
        request: hyper::Request<Body>,
        began: Instant,
    ) -> Result<(Answer, Option<Duration>), SendError> {
        *self.h2.lock().await = Some(sender.clone());
        self.speaks_h2.store(true, Ordering::Relaxed);
        self.send_on_h2(sender, request, Some(began.elapsed()))
            .await
    }

    /// On the shared HTTP/2 connection, opening it if it closed (a server that answers a new
    /// connection in HTTP/1.1 after all gets the request that way).
    async fn send_h2(
        &self,
        request: hyper::Request<Body>,
    ) -> Result<(Answer, Option<Duration>), SendError> {
        let mut shared = self.h2.lock().await;
        let (sender, set_up) = match shared.as_ref().filter(|s| !s.is_closed()) {
            Some(sender) => (sender.clone(), None),
            None => {
                let began = Instant::now();
                match self.connect().await? {
                    Opened::H2(sender) => {
                        *shared = Some(sender.clone());
                        (sender, Some(began.elapsed()))
                    }
                    Opened::H1(sender) => {
                        self.speaks_h2.store(false, Ordering::Relaxed);
                        *shared = None;
                        drop(shared);
                        self.idle.lock().expect("idle lock").push(sender);
                        return Box::pin(self.send_h1(request)).await;
                    }
                }
            }
        };
        drop(shared);
        self.send_on_h2(sender, request, set_up).await
    }

    async fn send_on_h2(
        &self,
        mut sender: http2::SendRequest<Body>,
        mut request: hyper::Request<Body>,
        set_up: Option<Duration>,
    ) -> Result<(Answer, Option<Duration>), SendError> {
        // HTTP/2 carries the scheme and the authority as pseudo-headers, from an absolute URI.
        let mut uri = std::mem::take(request.uri_mut()).into_parts();
        uri.scheme = Some(if self.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        });
        uri.authority = Some(self.authority.clone());
        *request.uri_mut() = hyper::Uri::from_parts(uri).expect("a path, a scheme and a host");
        // Waits while the server's limit of concurrent streams is reached.
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        body.collect().await?;
        Ok((parts, set_up))
    }

    /// An idle connection ready for a request, dropping those the server has closed.
    async fn idle_ready(&self) -> Option<http1::SendRequest<Body>> {
        loop {
            let mut sender = self.idle.lock().expect("idle lock").pop()?;
            // Ready at once unless the connection is still finishing the last exchange.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// A new connection: TCP, the TLS handshake for https (offering HTTP/2 and HTTP/1.1 by
    /// ALPN), then the protocol's own handshake. Its task reads and writes the socket; it ends
    /// when the server closes it or the last sender is dropped (a request timed out, the run
    /// ended).
    async fn connect(&self) -> Result<Opened, SendError> {
        let connect_err = |source| SendError::Connect {
            addr: self.addr.clone(),
            source,
        };
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(connect_err)?;
        stream.set_nodelay(true).map_err(connect_err)?;
        let Some((connector, name)) = &self.tls else {
            return h1(stream, &self.opened[0]).await;
        };
        let stream = connector
            .connect(name.clone(), stream)
            .await
            .map_err(|source| SendError::Tls {
                host: self.addr.clone(),
                source,
            })?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return h1(stream, &self.opened[0]).await;
        }
        let (sender, connection) =
            http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        self.opened[1].fetch_add(1, Ordering::Relaxed);
        Ok(Opened::H2(sender))
    }

    /// Connections open and idle now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.lock().expect("idle lock").len()
    }
}

/// An HTTP/1.1 connection on `stream`, counted in `opened`.
async fn h1<S>(stream: S, opened: &AtomicU64) -> Result<Opened, SendError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    opened.fetch_add(1, Ordering::Relaxed);
    Ok(Opened::H1(sender))
}

/// The handshake's configuration: the system's roots and `tls.ca_pem`'s certificates, HTTP/2
/// then HTTP/1.1 offered by ALPN; with `tls.insecure`, any certificate.
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
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
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
mod tests;
