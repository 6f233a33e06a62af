//! A TCP fault proxy for the database link, with toxiproxy's semantics: the service connects
//! to the proxy, the proxy to Postgres, and faults set on the proxy reach every connection —
//! the pooled ones already open too (toxiproxy's lesson: a pool hides a fault that only new
//! connections see).
//!
//! No maintained crate does this (toxiproxy is Go and not installable here; its Rust port is
//! unmaintained and has no reset), so it is written here, small: per connection one task per
//! direction reads chunks, stamps each with when it may leave, and a writer sends it then.
//!
//! Faults ([`LinkFaults`]): `latency` ± `jitter` on each chunk towards the client (responses, as
//! toxiproxy's downstream latency toxic), `bandwidth` (bytes per second, both directions),
//! `hang` (a blackhole: data both ways is dropped, connections stay open, as toxiproxy's
//! `timeout` toxic with timeout 0), `refuse` (new connections are reset at once), and
//! `slow_connect` (a delay before the proxy connects upstream). [`FaultProxy::reset`] resets
//! every open connection (RST to both sides), as toxiproxy's `reset_peer`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::model::LinkFaults;

/// What the proxy has seen.
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    open: AtomicU64,
    dropped_bytes: AtomicU64,
}

/// A running proxy; dropping it stops accepting and closes every connection.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    faults: watch::Sender<LinkFaults>,
    /// Bumped by [`FaultProxy::reset`]: every connection open at that moment is reset.
    resets: watch::Sender<u64>,
    counters: Arc<Counters>,
    accept: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.conns.lock().expect("not poisoned").drain(..) {
            c.abort();
        }
    }
}

impl FaultProxy {
    /// Listens on `127.0.0.1` (a free port) and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (faults, faults_rx) = watch::channel(LinkFaults::default());
        let (resets, resets_rx) = watch::channel(0u64);
        let counters = Arc::new(Counters::default());
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream,
            faults_rx,
            resets_rx,
            counters.clone(),
            conns.clone(),
        ));
        Ok(Self {
            addr,
            faults,
            resets,
            counters,
            accept,
            conns,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the link's faults, for open connections and new ones alike.
    pub fn set(&self, faults: LinkFaults) {
        self.faults.send_replace(faults);
    }

    /// The faults now.
    pub fn faults(&self) -> LinkFaults {
        self.faults.borrow().clone()
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.set(LinkFaults::default());
    }

    /// Resets every connection open now (both sides see a connection reset).
    pub fn reset(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    /// Connections accepted (refused ones included) since the start.
    pub fn accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::Relaxed)
    }

    /// Connections reset on arrival by `refuse`.
    pub fn refused(&self) -> u64 {
        self.counters.refused.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.counters.open.load(Ordering::Relaxed)
    }

    /// Bytes dropped by `hang`.
    pub fn dropped_bytes(&self) -> u64 {
        self.counters.dropped_bytes.load(Ordering::Relaxed)
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    faults: watch::Receiver<LinkFaults>,
    resets: watch::Receiver<u64>,
    counters: Arc<Counters>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let now = faults.borrow().clone();
        if now.refuse {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            reset_now(client);
            continue;
        }
        let task = tokio::spawn(connection(
            client,
            upstream,
            now.slow_connect,
            faults.clone(),
            resets.clone(),
            counters.clone(),
        ));
        let mut all = conns.lock().expect("not poisoned");
        all.retain(|t| !t.is_finished());
        all.push(task);
    }
}

/// Closes `stream` with a reset (SO_LINGER 0), not a graceful FIN.
fn reset_now(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    slow_connect: Duration,
    faults: watch::Receiver<LinkFaults>,
    mut resets: watch::Receiver<u64>,
    counters: Arc<Counters>,
) {
    resets.mark_unchanged();
    if !slow_connect.is_zero() {
        tokio::time::sleep(slow_connect).await;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        reset_now(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    counters.open.fetch_add(1, Ordering::Relaxed);
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    let up = pump(
        client_r,
        server_w,
        false,
        faults.clone(),
        resets.clone(),
        counters.clone(),
    );
    let down = pump(server_r, client_w, true, faults, resets, counters.clone());
    tokio::join!(up, down);
    counters.open.fetch_sub(1, Ordering::Relaxed);
}

/// The added latency of one chunk: `latency` ± uniform `jitter`, never below zero.
fn delay(f: &LinkFaults) -> Duration {
    if f.jitter.is_zero() {
        return f.latency;
    }
    let j = f.jitter.as_secs_f64();
    let d = f.latency.as_secs_f64() + rand::rng().random_range(-j..=j);
    Duration::from_secs_f64(d.max(0.0))
}

/// One direction of one connection: chunks read from `from` leave for `to` at their time (the
/// latency towards the client when `downstream`), paced by the bandwidth, dropped while the
/// link hangs. A reset closes both sockets with RST.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    downstream: bool,
    faults: watch::Receiver<LinkFaults>,
    mut resets: watch::Receiver<u64>,
    counters: Arc<Counters>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let reader = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let now = faults.borrow().clone();
            if now.hang {
                counters
                    .dropped_bytes
                    .fetch_add(n as u64, Ordering::Relaxed);
                continue;
            }
            let wait = if downstream {
                delay(&now)
            } else {
                Duration::ZERO
            };
            if tx
                .send((Instant::now() + wait, buf[..n].to_vec()))
                .await
                .is_err()
            {
                break;
            }
        }
        drop(tx);
    };
    let writer = async {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            let now = faults.borrow().clone();
            if now.hang {
                counters
                    .dropped_bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                continue;
            }
            if to.write_all(&bytes).await.is_err() {
                break;
            }
            if let Some(rate) = now.bandwidth.filter(|r| *r > 0) {
                tokio::time::sleep(Duration::from_secs_f64(bytes.len() as f64 / rate as f64)).await;
            }
        }
        let _ = to.shutdown().await;
    };
    let reset = tokio::select! {
        _ = async { tokio::join!(reader, writer) } => false,
        _ = resets.changed() => true,
    };
    if reset {
        let _ = socket2::SockRef::from(from.as_ref()).set_linger(Some(Duration::ZERO));
        let _ = socket2::SockRef::from(to.as_ref()).set_linger(Some(Duration::ZERO));
    }
}
