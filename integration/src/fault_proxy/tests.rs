//! The proxy against a local TCP server that answers each connection's first line with that line
//! and then a fixed number of pattern bytes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::{Fault, FaultProxy};

const REQUEST: &[u8] = b"give\n";

struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

async fn upstream(len: usize) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.expect("accept");
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut socket = BufReader::new(socket);
                let mut line = Vec::new();
                if socket.read_until(b'\n', &mut line).await.is_err() {
                    return;
                }
                let mut reply = line;
                reply.extend(pattern(len));
                let _ = socket.get_mut().write_all(&reply).await;
            });
        }
    });
    Upstream {
        addr,
        accepted,
        task,
    }
}

/// Sends the request and reads until the end or an error; the bytes that arrived. A connection
/// reset so early that connecting or sending fails arrived as nothing.
async fn fetch(addr: SocketAddr) -> Vec<u8> {
    let Ok(mut socket) = TcpStream::connect(addr).await else {
        return Vec::new();
    };
    if socket.write_all(REQUEST).await.is_err() {
        return Vec::new();
    }
    read_all(&mut socket).await
}

async fn read_all(socket: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn whole(len: usize) -> Vec<u8> {
    let mut v = REQUEST.to_vec();
    v.extend(pattern(len));
    v
}

#[tokio::test]
async fn passes_through_and_a_switch_applies_to_connections_accepted_after_it() {
    let server = upstream(300_000).await;
    let proxy = FaultProxy::start(server.addr).expect("proxy");
    assert_eq!(fetch(proxy.addr()).await, whole(300_000));

    proxy.set(Fault::CutAfter(1000));
    let mut cut = TcpStream::connect(proxy.addr()).await.expect("connect");
    // The cut connection was accepted under CutAfter once the upstream saw it.
    crate::eventually(Duration::from_secs(5), "the upstream to accept", || async {
        (server.accepted.load(Ordering::SeqCst) == 2).then_some(())
    })
    .await;
    proxy.set(Fault::PassThrough);
    assert_eq!(fetch(proxy.addr()).await, whole(300_000));
    cut.write_all(REQUEST).await.expect("request");
    assert_eq!(read_all(&mut cut).await, whole(300_000)[..1000]);
    assert_eq!(proxy.accepted(), 3);
}

#[tokio::test]
async fn every_connection_is_cut_after_its_own_n_bytes() {
    let server = upstream(100_000).await;
    let proxy = FaultProxy::start(server.addr).expect("proxy");
    proxy.set(Fault::CutAfter(70_000));
    for _ in 0..2 {
        assert_eq!(fetch(proxy.addr()).await, whole(100_000)[..70_000]);
    }
}

#[tokio::test]
async fn cut_all_after_spends_one_budget_across_connections() {
    let server = upstream(100_000).await;
    let proxy = FaultProxy::start(server.addr).expect("proxy");
    let reply = whole(100_000);
    proxy.set(Fault::CutAllAfter(150_000));
    assert_eq!(fetch(proxy.addr()).await, reply);
    assert_eq!(fetch(proxy.addr()).await, reply[..150_000 - reply.len()]);
    assert!(fetch(proxy.addr()).await.is_empty());
    assert_eq!(
        server.accepted.load(Ordering::SeqCst),
        2,
        "once spent, no connection reaches the upstream"
    );
    // A new switch brings a new budget.
    proxy.set(Fault::CutAllAfter(10));
    assert_eq!(fetch(proxy.addr()).await, reply[..10]);
    assert_eq!(proxy.bytes_to_client(), 150_010);
}

#[tokio::test]
async fn hold_request_keeps_the_nth_request_from_upstream_until_released() {
    let server = upstream(1000).await;
    let proxy = FaultProxy::start(server.addr).expect("proxy");
    proxy.set(Fault::HoldRequest {
        starting_with: "give",
        nth: 2,
    });
    assert_eq!(
        fetch(proxy.addr()).await,
        whole(1000),
        "the first one passes"
    );
    let addr = proxy.addr();
    let held = tokio::spawn(fetch(addr));
    crate::eventually(
        Duration::from_secs(5),
        "the second request to be held",
        || async { proxy.holding().then_some(()) },
    )
    .await;
    // The upstream accepted the connection, but has not answered: nothing reached it.
    assert_eq!(proxy.bytes_to_client(), whole(1000).len() as u64);
    proxy.release();
    assert_eq!(held.await.expect("fetch"), whole(1000));
    assert!(!proxy.holding());
    assert_eq!(
        fetch(proxy.addr()).await,
        whole(1000),
        "the third one passes"
    );
}

#[tokio::test]
async fn a_stalled_connection_stays_open_silent_until_the_proxy_is_dropped() {
    let server = upstream(10).await;
    let proxy = FaultProxy::start(server.addr).expect("proxy");
    let addr = proxy.addr();
    proxy.set(Fault::Stall);
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    socket.write_all(REQUEST).await.expect("request");
    let mut buf = [0u8; 16];
    // Asserting silence needs a window; nothing is awaited here but the absence of an answer.
    let silent = tokio::time::timeout(Duration::from_millis(300), socket.read(&mut buf)).await;
    assert!(silent.is_err(), "a stalled connection answered: {silent:?}");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 0);

    drop(proxy);
    let closed = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
        .await
        .expect("dropping the proxy closes its connections");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the dropped proxy still listens"
    );
}

#[tokio::test]
async fn refuse_resets_the_connection_before_anything_is_forwarded() {
    let server = upstream(10).await;
    let proxy = FaultProxy::start(server.addr).expect("proxy");
    proxy.set(Fault::Refuse);
    assert!(fetch(proxy.addr()).await.is_empty());
    assert_eq!(proxy.accepted(), 1);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn slow_delivers_everything_at_no_more_than_its_rate() {
    let server = upstream(100_000).await;
    let proxy = FaultProxy::start(server.addr).expect("proxy");
    proxy.set(Fault::Slow {
        bytes: 10_000,
        every: Duration::from_millis(20),
    });
    let started = Instant::now();
    assert_eq!(fetch(proxy.addr()).await, whole(100_000));
    // 100,005 bytes in reads of at most 10,000: at least 10 pauses after the first 11 reads.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn only_loopback_upstreams_are_accepted() {
    let err = FaultProxy::start("192.0.2.1:80".parse().expect("addr"))
        .err()
        .expect("a non-loopback upstream is refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
