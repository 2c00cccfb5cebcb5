//! The listener: one acceptor and N I/O threads, each a single-threaded tokio runtime.
//!
//! A client connection is handed to one I/O thread for its whole life (the one with the fewest
//! open connections). Invocations (`POST /endpoints/{name}/invocations[-response-stream]`) are
//! served right there: the request, the pooled connection to the model instance
//! (`upstream.rs`, one pool per thread) and the response all stay on that thread, so the hot
//! path takes no lock and wakes no other thread, the way nginx's workers do. Everything else
//! (control plane, admin API, `/metrics`) is handed to the main multi-threaded runtime, where
//! the controllers live and store access may block.
//!
//! Shutdown: stop accepting, ask every connection to finish its in-flight request and close
//! (HTTP/1 graceful shutdown), and after a grace period close what is left.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{mpsc, watch};

use super::DataPlane;
use super::fastpath::{self, Handover, Rewind};
use super::hyperpath;
use super::op::{RuntimeOp, Target};
use super::stop::{Stop, reached};
use crate::error::ApiError;

/// Per-thread state shared by the connections of one I/O thread.
struct Shared {
    dp: Arc<DataPlane>,
    control: TowerToHyperService<Router>,
    main: tokio::runtime::Handle,
}

/// How the acceptor reaches one I/O thread: its queue of new connections and how many it has
/// open.
type Worker = (mpsc::UnboundedSender<std::net::TcpStream>, Arc<AtomicUsize>);

/// A running listener.
pub struct Server {
    threads: Vec<std::thread::JoinHandle<()>>,
    acceptor: tokio::task::JoinHandle<()>,
    stop: watch::Sender<Stop>,
}

impl Server {
    /// Starts `threads` I/O threads (at least one) and the acceptor on the current (main)
    /// runtime, serving `control` for everything that is not an invocation.
    pub fn start(
        dp: Arc<DataPlane>,
        control: Router,
        listener: tokio::net::TcpListener,
        threads: usize,
        max_connections: usize,
    ) -> std::io::Result<Self> {
        let (stop, _) = watch::channel(Stop::Running);
        let main = tokio::runtime::Handle::current();
        let (mut handles, mut targets) = (Vec::new(), Vec::new());
        for i in 0..threads.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            let open = Arc::new(AtomicUsize::new(0));
            let shared = Arc::new(Shared {
                dp: dp.clone(),
                control: TowerToHyperService::new(control.clone()),
                main: main.clone(),
            });
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (open2, stop_rx) = (open.clone(), stop.subscribe());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("spillway-io-{i}"))
                    .spawn(move || rt.block_on(worker(shared, rx, open2, stop_rx)))?,
            );
            targets.push((tx, open));
        }
        let acceptor = tokio::spawn(accept(listener, targets, stop.subscribe(), dp, max_connections.max(1)));
        Ok(Self {
            threads: handles,
            acceptor,
            stop,
        })
    }

    /// Stops accepting, lets in-flight requests finish for up to `grace`, then closes every
    /// connection. Returns `false` when connections were still open at the end of `grace`.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.stop.send_replace(Stop::Graceful);
        self.acceptor.abort();
        let threads = self.threads;
        let mut join = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        let clean = tokio::time::timeout(grace, &mut join).await.is_ok();
        if !clean {
            self.stop.send_replace(Stop::Now);
            let _ = join.await;
        }
        clean
    }
}

/// Descriptors kept back from client connections for the control plane, the store, instance
/// files and health checks (see [`connection_budget`]).
pub const FD_RESERVE: u64 = 256;

/// How many client connections may be open at once under an open-file limit of `fd_limit`:
/// half of what remains after [`FD_RESERVE`], since each may hold a model connection too.
pub fn connection_budget(fd_limit: u64) -> usize {
    (fd_limit.saturating_sub(FD_RESERVE) / 2).clamp(1, usize::MAX as u64) as usize
}

/// Accepts connections and hands each to the I/O thread with the fewest open connections. A
/// connection beyond `max` open ones is closed at once (shed), and counted.
async fn accept(
    listener: tokio::net::TcpListener,
    workers: Vec<Worker>,
    mut stop: watch::Receiver<Stop>,
    dp: Arc<DataPlane>,
    max: usize,
) {
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let stream = tokio::select! {
            r = listener.accept() => r,
            _ = reached(&mut stop, Stop::Graceful) => return,
        };
        let stream = match stream {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let open: usize = workers.iter().map(|(_, n)| n.load(Ordering::Relaxed)).sum();
        if open >= max {
            drop(stream);
            dp.metrics.prometheus.connections_shed.inc();
            let now = dp.clock.instant();
            if last_warning.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
                last_warning = Some(now);
                tracing::warn!(
                    open,
                    max,
                    "client connection limit reached: closing new connections ([router] max_client_connections)"
                );
            }
            continue;
        }
        let _ = stream.set_nodelay(true);
        let Ok(stream) = stream.into_std() else { continue };
        let Some((tx, open)) = workers.iter().min_by_key(|(_, open)| open.load(Ordering::Relaxed)) else {
            return;
        };
        open.fetch_add(1, Ordering::Relaxed);
        if tx.send(stream).is_err() {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One I/O thread: serves the connections it is handed until told to stop, then waits for
/// them to finish (or for the order to close them now).
async fn worker(
    shared: Arc<Shared>,
    mut conns: mpsc::UnboundedReceiver<std::net::TcpStream>,
    open: Arc<AtomicUsize>,
    mut stop: watch::Receiver<Stop>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    // The timer enables the header read timeout: a client that opens a connection and never
    // finishes its request headers (or sends nothing more on a kept-alive one) does not hold it
    // forever.
    let timeout = shared.dp.router.client_timeout();
    let fast = shared.dp.router.fast_path;
    http.timer(TokioTimer::new()).header_read_timeout(timeout);
    // Connections watch this thread's own copy of the listener's state, so that waiting on it
    // between requests touches nothing shared with the other I/O threads.
    let (local, local_stop) = watch::channel(Stop::Running);
    loop {
        let stream = tokio::select! {
            s = conns.recv() => s,
            _ = reached(&mut stop, Stop::Graceful) => None,
        };
        let Some(stream) = stream else { break };
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                open.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot register a connection");
                continue;
            }
        };
        let (shared, http, open, mut stop) = (shared.clone(), http.clone(), open.clone(), local_stop.clone());
        tokio::spawn(async move {
            // Nothing is allocated for a connection until its client sends something, so that
            // an idle connection costs only its socket and this task. The wait has the same
            // bound as reading the headers, and ends with a stop.
            let ready = tokio::select! {
                r = tokio::time::timeout(timeout, stream.readable()) => matches!(r, Ok(Ok(()))),
                _ = reached(&mut stop, Stop::Graceful) => false,
            };
            // Boxed, so that the connection's state is allocated once it has a request, not
            // while it waits for one.
            if ready {
                let peer = stream.peer_addr().ok().map(|a| a.ip());
                let io = if fast {
                    match Box::pin(fastpath::serve(&shared.dp, stream, &mut stop)).await {
                        Handover::General(io) => Some(io),
                        Handover::Closed => None,
                    }
                } else {
                    Some(Rewind::fresh(stream, timeout))
                };
                if let Some(io) = io {
                    Box::pin(serve_general(shared, io, peer, &http, &mut stop)).await;
                }
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    local.send_replace(Stop::Graceful);
    // Connections not yet registered with this thread are closed unserved.
    conns.close();
    while conns.try_recv().is_ok() {
        open.fetch_sub(1, Ordering::Relaxed);
    }
    // Wait for the open ones to finish their requests (each closes as soon as it is idle).
    while open.load(Ordering::Relaxed) > 0 {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = reached(&mut stop, Stop::Now) => return,
        }
    }
}

/// Serves a connection the fast path handed over with hyper, for the rest of its life.
async fn serve_general(
    shared: Arc<Shared>,
    io: Rewind,
    peer: Option<std::net::IpAddr>,
    http: &hyper::server::conn::http1::Builder,
    stop: &mut watch::Receiver<Stop>,
) {
    let service = hyper::service::service_fn(move |req| handle(shared.clone(), req, peer));
    let conn = http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = reached(stop, Stop::Graceful) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "client connection closed with an error");
    }
}

/// Serves one request: invocations here, everything else on the main runtime.
async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: Option<std::net::IpAddr>,
) -> Result<Response<Body>, Infallible> {
    let (mut parts, body) = req.into_parts();
    match RuntimeOp::parse(parts.method.as_str(), parts.uri.path()) {
        Target::Invocation(op) => return Ok(hyperpath::invoke(&shared.dp, op, &parts, Body::new(body), peer).await),
        Target::MethodNotAllowed => return Ok(hyperpath::method_not_allowed(&shared.dp.request_ids.next())),
        Target::Other => {}
    }
    if let Some(ip) = peer {
        parts.extensions.insert(crate::auth::ClientAddr(ip));
    }
    let fut = shared.control.call(Request::from_parts(parts, body));
    Ok(match shared.main.spawn(fut).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(never)) => match never {},
        Err(e) => {
            tracing::error!(error = %e, "control-plane request failed");
            hyperpath::error(
                &ApiError::internal("the request handler failed"),
                &shared.dp.request_ids.next(),
            )
        }
    })
}
