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
    let url = reqwest::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
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

/// A server behind TLS (a self-signed certificate made with openssl: the client is
/// `insecure`) offering `alpn`, serving HTTP/2 when the handshake chose it: each answer
/// says the version, the authority the request named and its path.
async fn tls_server(alpn: &[&[u8]]) -> (reqwest::Url, Arc<AtomicUsize>) {
    use tokio_rustls::rustls::pki_types::PrivateKeyDer;
    let dir =
        std::env::temp_dir().join(format!("loadgen-tls-{}-{}", std::process::id(), alpn.len()));
    std::fs::create_dir_all(&dir).unwrap();
    let made = std::process::Command::new("openssl")
        .args("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -keyout key.pem -out cert.pem -subj /CN=127.0.0.1".split(' '))
        .current_dir(&dir)
        .output()
        .expect("openssl (scripts/setup installs it)");
    assert!(made.status.success(), "{made:?}");
    let certs = CertificateDer::pem_file_iter(dir.join("cert.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (url, accepted) = listen(move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            let tls = acceptor.accept(tcp).await.unwrap();
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let service = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                let authority = match req.uri().authority() {
                    Some(a) => a.to_string(),
                    None => req.headers()[HOST].to_str().unwrap().to_owned(),
                };
                let path = req.uri().path_and_query().unwrap();
                let text = format!("{:?} {authority} {path}", req.version());
                Ok::<_, std::convert::Infallible>(
                    hyper::Response::builder()
                        .header("x-echo", text)
                        .body(Full::new(Bytes::from_static(b"body")))
                        .unwrap(),
                )
            });
            let io = TokioIo::new(tls);
            if h2 {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service)
                    .await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            }
        }
    })
    .await;
    let url = reqwest::Url::parse(&url.as_str().replace("http://", "https://")).unwrap();
    (url, accepted)
}

/// `requests` sent at once on `client`, each answer's echo in order.
async fn at_once(client: &Arc<Client>, requests: usize) -> Vec<String> {
    let sends: Vec<_> = (0..requests)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let (answer, _) = client.send(get(&format!("/r/{i}?x=1"))).await.unwrap();
                answer.headers["x-echo"].to_str().unwrap().to_owned()
            })
        })
        .collect();
    let mut echoes = Vec::new();
    for send in sends {
        echoes.push(send.await.unwrap());
    }
    echoes
}

/// A server that offers HTTP/2 by ALPN gets every request on one connection, with the
/// scheme and authority HTTP/2 needs; the client counts it as an HTTP/2 connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_offering_h2_gets_every_request_on_one_connection() {
    let (url, accepted) = tls_server(&[b"h2", b"http/1.1"]).await;
    let insecure = Tls {
        ca_pem: None,
        insecure: true,
    };
    let client = Arc::new(Client::new(&url, &insecure).unwrap());
    let authority = format!("127.0.0.1:{}", url.port().unwrap());
    // One request first, then twenty at once on the connection it opened.
    let mut echoes = at_once(&client, 1).await;
    echoes.extend(at_once(&client, 20).await);
    assert_eq!(echoes[0], format!("HTTP/2.0 {authority} /r/0?x=1"));
    for (i, echo) in echoes[1..].iter().enumerate() {
        assert_eq!(*echo, format!("HTTP/2.0 {authority} /r/{i}?x=1"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection");
    assert_eq!(
        client.connections(),
        BTreeMap::from([(HTTP2.to_owned(), 1)])
    );
    assert_eq!(client.idle(), 0, "no HTTP/1.1 connection was kept");
}

/// A server that offers only HTTP/1.1 gets it, on a pool of connections as over plain
/// TCP: twenty requests at once open up to twenty, each counted as HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_offering_only_http1_gets_http1() {
    let (url, accepted) = tls_server(&[b"http/1.1"]).await;
    let insecure = Tls {
        ca_pem: None,
        insecure: true,
    };
    let client = Arc::new(Client::new(&url, &insecure).unwrap());
    let echoes = at_once(&client, 20).await;
    assert!(
        echoes.iter().all(|e| e.starts_with("HTTP/1.1 127.0.0.1:")),
        "{echoes:?}"
    );
    let opened = accepted.load(Ordering::SeqCst) as u64;
    assert!((1..=20).contains(&opened), "{opened}");
    assert_eq!(
        client.connections(),
        BTreeMap::from([(HTTP1.to_owned(), opened)])
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
