//! A TCP fault proxy for end-to-end tests (the idea of Shopify's toxiproxy): it listens on a
//! loopback port, forwards every connection to one loopback upstream (usually the S3 server), and
//! lets the test switch, at run time, what happens to the connections it accepts from then on —
//! pass through, cut after so many bytes, cut for good once a byte budget is spent, stall, crawl,
//! reset at once, or hold one request back until the test lets it go. Point a target's `endpoint` at [`FaultProxy::url`], run the engine, flip
//! [`FaultProxy::set`]. A fault applies to connections accepted after the switch; connections
//! already open keep the fault they were accepted under. Dropping the proxy stops it and closes
//! every connection it holds.
//!
//! Faults act on the upstream → client direction (the response), which is what a client reading
//! an object sees; requests always go through whole unless the connection is cut or stalled, or
//! held by [`Fault::HoldRequest`] (which delays one, whole, and changes nothing else).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// What the proxy does to the connections it accepts from the switch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forwards both directions untouched.
    PassThrough,
    /// Forwards the first `n` bytes from upstream, then closes both sides of the connection. Each
    /// connection gets its own `n`: a client that resumes where it was cut (an HTTP `Range` retry,
    /// as opendal's `RetryLayer` does) gets `n` more bytes per connection and may get through;
    /// use [`Fault::CutAllAfter`] to take the network away for good.
    CutAfter(u64),
    /// One budget of `n` bytes from upstream, shared by every connection accepted after the
    /// switch: the connection that spends it is closed at that byte, and every later one is
    /// closed as soon as it is accepted. A download that is retried or resumed cannot get past it.
    CutAllAfter(u64),
    /// [`Fault::CutAllAfter`] on the client → upstream direction: one budget of `n` request bytes
    /// (an upload's body) shared by every connection accepted after the switch; the connection
    /// that spends it is closed at that byte, and every later one as soon as it is accepted.
    CutAllUploadsAfter(u64),
    /// Accepts and holds the connection open, but neither connects upstream nor reads or answers:
    /// a server that hangs. The socket stays open until the proxy is dropped.
    Stall,
    /// Forwards, but upstream → client at most `bytes` every `every`.
    Slow { bytes: usize, every: Duration },
    /// Accepts and resets the connection at once (zero linger), before anything is forwarded.
    Refuse,
    /// Forwards untouched, except the `nth` request (counted from 1 across every connection
    /// accepted after the switch) whose first bytes are `starting_with` — e.g. `"GET "`, an HTTP
    /// request line: a client→upstream read that starts with them starts a request (HTTP/1.1
    /// clients send a request's head in one write and never pipeline). That request is not
    /// forwarded until [`FaultProxy::release`] (or the next [`FaultProxy::set`]), so the test can
    /// change what upstream will answer while [`FaultProxy::holding`] says it waits.
    HoldRequest {
        starting_with: &'static str,
        nth: usize,
    },
    /// Answers the first `times` connections accepted after the switch with an empty HTTP
    /// response of `status` (e.g. 503) once their request's head has arrived, and closes them;
    /// later connections pass through: a server that is unavailable for a while.
    HttpStatus { status: u16, times: usize },
}

/// The fault in force, with the byte budget of a [`Fault::CutAllAfter`] and the request count and
/// hold of a [`Fault::HoldRequest`] (new at every switch).
#[derive(Clone)]
struct Active {
    fault: Fault,
    budget: Arc<AtomicU64>,
    requests: Arc<AtomicUsize>,
    hold: Arc<Hold>,
}

/// One held request: whether it is waiting, and the switch that lets it go.
struct Hold {
    holding: AtomicBool,
    released: tokio::sync::watch::Sender<bool>,
}

impl Hold {
    async fn wait(&self) {
        self.holding.store(true, Ordering::SeqCst);
        let mut released = self.released.subscribe();
        let _ = released.wait_for(|r| *r).await;
        self.holding.store(false, Ordering::SeqCst);
    }

    fn release(&self) {
        self.released.send_replace(true);
    }
}

impl Active {
    fn new(fault: Fault) -> Self {
        let budget = match fault {
            Fault::CutAllAfter(n) | Fault::CutAllUploadsAfter(n) => n,
            _ => 0,
        };
        Self {
            fault,
            budget: Arc::new(AtomicU64::new(budget)),
            requests: Arc::new(AtomicUsize::new(0)),
            hold: Arc::new(Hold {
                holding: AtomicBool::new(false),
                released: tokio::sync::watch::channel(false).0,
            }),
        }
    }
}

#[derive(Default)]
struct Counters {
    accepted: AtomicUsize,
    to_client: AtomicU64,
}

/// A running proxy; see the module documentation.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    active: Arc<Mutex<Active>>,
    counters: Arc<Counters>,
    /// Dropped to stop the proxy's thread.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy in front of `upstream`, which must be a loopback address, in [`Fault::PassThrough`].
    /// It runs on a thread and runtime of its own, so it keeps forwarding while the test's own
    /// runtime is blocked (e.g. waiting for the engine's process in `TestBed::cli`).
    pub fn start(upstream: SocketAddr) -> io::Result<Self> {
        if !upstream.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the fault proxy only forwards to loopback addresses, not {upstream}"),
            ));
        }
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let active = Arc::new(Mutex::new(Active::new(Fault::PassThrough)));
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (shared, counted) = (Arc::clone(&active), Arc::clone(&counters));
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => return eprintln!("fault proxy: {e}"),
                    };
                    tokio::select! {
                        () = accept_loop(listener, upstream, shared, counted) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime cancels every connection task and closes its sockets.
                drop(runtime);
            })?;
        Ok(Self {
            addr,
            upstream,
            active,
            counters,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// A proxy in front of the test S3 server (`VARDO_TEST_S3_ENDPOINT`).
    pub fn to_s3() -> io::Result<Self> {
        let endpoint = crate::setting("VARDO_TEST_S3_ENDPOINT");
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        let url =
            reqwest::Url::parse(&endpoint).map_err(|e| invalid(format!("{endpoint}: {e}")))?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let upstream = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))?
            .find(|a| a.ip().is_loopback())
            .ok_or_else(|| invalid(format!("{endpoint} does not resolve to a loopback address")))?;
        Self::start(upstream)
    }

    /// The address it listens on (127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where it forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// `http://127.0.0.1:<port>`: an S3 endpoint for a target config.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `fault` to the connections accepted from now on, and lets a held request go.
    pub fn set(&self, fault: Fault) {
        let old = std::mem::replace(
            &mut *self.active.lock().unwrap_or_else(PoisonError::into_inner),
            Active::new(fault),
        );
        old.hold.release();
    }

    /// Whether a request is held by [`Fault::HoldRequest`] right now.
    pub fn holding(&self) -> bool {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .hold
            .holding
            .load(Ordering::SeqCst)
    }

    /// Lets the request held by [`Fault::HoldRequest`] go on (and the hold never comes back).
    pub fn release(&self) {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .hold
            .release();
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fault
    }

    /// Connections accepted so far (under any fault).
    pub fn accepted(&self) -> usize {
        self.counters.accepted.load(Ordering::Relaxed)
    }

    /// Bytes forwarded from upstream to clients so far.
    pub fn bytes_to_client(&self) -> u64 {
        self.counters.to_client.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    /// Stops the proxy and waits for its thread, so that once dropped it no longer listens and
    /// every connection it held is closed.
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                eprintln!("fault proxy: its thread panicked");
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    active: Arc<Mutex<Active>>,
    counters: Arc<Counters>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                    let now = active.lock().unwrap_or_else(PoisonError::into_inner).clone();
                    connections.spawn(serve(client, upstream, now, Arc::clone(&counters)));
                }
                // E.g. out of file descriptors: keep serving the connections already open.
                Err(e) => eprintln!("fault proxy: accept failed: {e}"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(client: TcpStream, upstream: SocketAddr, active: Active, counters: Arc<Counters>) {
    match active.fault {
        Fault::Stall => {
            let _held = client;
            std::future::pending::<()>().await;
        }
        Fault::Refuse => refuse(client),
        Fault::CutAllAfter(_) | Fault::CutAllUploadsAfter(_)
            if active.budget.load(Ordering::SeqCst) == 0 =>
        {
            refuse(client)
        }
        Fault::HttpStatus { status, times }
            if active.requests.fetch_add(1, Ordering::SeqCst) < times =>
        {
            answer(client, status).await;
        }
        Fault::PassThrough
        | Fault::CutAfter(_)
        | Fault::CutAllAfter(_)
        | Fault::CutAllUploadsAfter(_)
        | Fault::Slow { .. }
        | Fault::HoldRequest { .. }
        | Fault::HttpStatus { .. } => {
            let Ok(server) = TcpStream::connect(upstream).await else {
                refuse(client);
                return;
            };
            forward(client, server, &active, &counters).await;
        }
    }
}

/// Reads the request's head, answers `status` with no body, and closes the connection.
async fn answer(mut client: TcpStream, status: u16) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let response =
        format!("HTTP/1.1 {status} Fault\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = client.write_all(response.as_bytes()).await;
    let _ = client.shutdown().await;
}

fn refuse(client: TcpStream) {
    if let Err(e) = client.set_zero_linger() {
        eprintln!("fault proxy: SO_LINGER: {e}");
    }
    drop(client);
}

/// Runs both directions until upstream ends its side or the fault cuts the connection; then both
/// sockets are dropped, which closes both directions.
async fn forward(client: TcpStream, server: TcpStream, active: &Active, counters: &Counters) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut n = match client_read.read(&mut buf).await {
                Ok(0) => {
                    let _ = server_write.shutdown().await;
                    break;
                }
                Err(_) => break,
                Ok(n) => n,
            };
            if let Fault::CutAllUploadsAfter(_) = active.fault {
                let got = take_budget(&active.budget, n);
                if got < n {
                    n = got;
                    let _ = server_write.write_all(&buf[..n]).await;
                    // Spent: the connection ends here, both ways.
                    return;
                }
            }
            if let Fault::HoldRequest { starting_with, nth } = active.fault {
                if buf[..n].starts_with(starting_with.as_bytes())
                    && active.requests.fetch_add(1, Ordering::SeqCst) + 1 == nth
                {
                    active.hold.wait().await;
                }
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        // The response may still be coming: the downstream half decides when this ends.
        std::future::pending::<()>().await;
    };
    let down = async {
        let mut allowance = match active.fault {
            Fault::CutAfter(n) => Some(n),
            _ => None,
        };
        let chunk = match active.fault {
            Fault::Slow { bytes, .. } => bytes.max(1),
            _ => 64 * 1024,
        };
        let mut buf = vec![0u8; chunk];
        loop {
            let want = match allowance {
                Some(0) => {
                    let _ = client_write.shutdown().await;
                    return;
                }
                Some(n) => buf.len().min(usize::try_from(n).unwrap_or(usize::MAX)),
                None => buf.len(),
            };
            let mut n = match server_read.read(&mut buf[..want]).await {
                Ok(0) | Err(_) => {
                    let _ = client_write.shutdown().await;
                    return;
                }
                Ok(n) => n,
            };
            let mut spent = false;
            if let Fault::CutAllAfter(_) = active.fault {
                let got = take_budget(&active.budget, n);
                spent = got < n;
                n = got;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
            counters.to_client.fetch_add(n as u64, Ordering::Relaxed);
            if spent {
                let _ = client_write.shutdown().await;
                return;
            }
            if let Some(left) = allowance.as_mut() {
                *left -= n as u64;
            }
            if let Fault::Slow { every, .. } = active.fault {
                tokio::time::sleep(every).await;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// Takes up to `want` bytes from `budget`; how many it got.
fn take_budget(budget: &AtomicU64, want: usize) -> usize {
    let mut got = 0;
    let _ = budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
        got = usize::try_from(left).unwrap_or(usize::MAX).min(want);
        Some(left - got as u64)
    });
    got
}

#[cfg(test)]
mod tests;
