//! Pooled HTTP/1.1 connections from the data plane to model instances.
//!
//! Each I/O worker thread keeps its own pool (a thread-local), so a request, the upstream
//! connection that carries it and the client connection it came from are all driven by the same
//! thread: no lock, no cross-thread wake-up on the hot path (see `server.rs`). Connections are
//! driven by `hyper::client::conn::http1` directly; a connection goes back to the pool when its
//! response body has been read to the end ([`Lease::release`]), and is dropped otherwise.
//!
//! A request handed to a pooled connection that turns out to be closed comes back unsent
//! (`try_send_request`) and is retried on another connection; a refused connect returns the
//! request to the caller ([`SendError::Connect`]) so it can be retried on another instance.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Idle connections kept per instance address and thread.
const MAX_IDLE_PER_ADDRESS: usize = 256;
/// An idle connection older than this is closed rather than reused: model servers close idle
/// keep-alive connections on their own timers, and a request sent just as they do fails.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

thread_local! {
    static POOL: RefCell<HashMap<Arc<str>, Vec<Idle>>> = RefCell::new(HashMap::new());
}

/// Why a request could not be handed to a model instance.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened; the request was not sent and is returned.
    #[error("cannot connect to {address}: {error}")]
    Connect {
        /// The instance address.
        address: Arc<str>,
        /// The connect error.
        error: std::io::Error,
        /// The unsent request.
        request: Box<Request<Body>>,
    },
    /// The connection failed while the request was sent or its response awaited.
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// A connection in use by one request; returned to its thread's pool by [`Lease::release`].
#[derive(Debug)]
pub struct Lease {
    address: Arc<str>,
    sender: SendRequest<Body>,
}

impl Lease {
    /// Returns the connection to the pool: call once the response body has been read to its end.
    /// A connection that is closed (the model answered `Connection: close`) is dropped.
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        POOL.with_borrow_mut(|pool| {
            let idle = pool.entry(self.address).or_default();
            if idle.len() < MAX_IDLE_PER_ADDRESS {
                idle.push(Idle {
                    sender: self.sender,
                    since: Instant::now(),
                });
            }
        });
    }
}

/// Takes the most recently used ready connection to `address`, dropping closed and expired ones.
/// A connection that is not ready yet (its previous response is still being finished by its
/// connection task) stays in the pool.
fn checkout(address: &str) -> Option<SendRequest<Body>> {
    POOL.with_borrow_mut(|pool| {
        let idle = pool.get_mut(address)?;
        let now = Instant::now();
        idle.retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < IDLE_TIMEOUT);
        let i = idle.iter().rposition(|c| c.sender.is_ready())?;
        Some(idle.swap_remove(i).sender)
    })
}

/// Idle connections this thread holds to `address`.
#[cfg(test)]
fn idle_connections(address: &str) -> usize {
    POOL.with_borrow(|pool| pool.get(address).map_or(0, Vec::len))
}

/// Sends `req` (origin-form URI, `Host` set by the caller) to the instance at `address`
/// (`host:port`) on a pooled connection or a new one. The returned [`Lease`] must be released
/// when the response body has been read to its end.
pub async fn send(address: &Arc<str>, mut req: Request<Body>) -> Result<(Response<Incoming>, Lease), SendError> {
    while let Some(mut sender) = checkout(address) {
        match sender.try_send_request(req).await {
            Ok(resp) => {
                let lease = Lease {
                    address: address.clone(),
                    sender,
                };
                return Ok((resp, lease));
            }
            Err(mut e) => match e.take_message() {
                // Closed before the request was written: try the next connection.
                Some(unsent) => req = unsent,
                None => return Err(SendError::Http(e.into_error())),
            },
        }
    }
    let mut sender = match connect(address).await {
        Ok(s) => s,
        Err(error) => {
            return Err(SendError::Connect {
                address: address.clone(),
                error,
                request: Box::new(req),
            });
        }
    };
    let resp = sender.send_request(req).await?;
    Ok((
        resp,
        Lease {
            address: address.clone(),
            sender,
        },
    ))
}

/// Opens a connection (`TCP_NODELAY`: a proxy must not hold small writes back) and spawns its
/// driver on the current thread's runtime.
async fn connect(address: &str) -> std::io::Result<SendRequest<Body>> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "model connection closed");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A minimal keep-alive HTTP/1.1 server that answers every request with its connection's
    /// serial number and counts connections; `close_after` closes a connection after that many
    /// responses.
    async fn server(close_after: usize) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = conns.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut pending = Vec::new();
                    let mut served = 0;
                    loop {
                        let r = s.read(&mut buf).await.unwrap_or(0);
                        if r == 0 {
                            return;
                        }
                        pending.extend_from_slice(&buf[..r]);
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            served += 1;
                            let body = format!("conn{n}");
                            let close = served >= close_after;
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{}\r\n{body}",
                                body.len(),
                                if close { "connection: close\r\n" } else { "" }
                            );
                            s.write_all(resp.as_bytes()).await.unwrap();
                            if close {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (address, conns)
    }

    fn get(address: &str) -> Request<Body> {
        Request::get("/ping")
            .header("host", address)
            .body(Body::empty())
            .unwrap()
    }

    async fn roundtrip(address: &Arc<str>) -> String {
        let (resp, lease) = send(address, get(address)).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        lease.release();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn reuses_one_connection_for_sequential_requests() {
        let (address, conns) = server(usize::MAX).await;
        let address: Arc<str> = address.into();
        for _ in 0..5 {
            assert_eq!(roundtrip(&address).await, "conn1");
            tokio::task::yield_now().await;
        }
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(idle_connections(&address), 1);
    }

    #[tokio::test]
    async fn replaces_connections_the_server_closed() {
        let (address, conns) = server(1).await;
        let address: Arc<str> = address.into();
        for i in 1..=3 {
            assert_eq!(roundtrip(&address).await, format!("conn{i}"));
        }
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_unreleased_lease_is_not_reused() {
        let (address, conns) = server(usize::MAX).await;
        let address: Arc<str> = address.into();
        let (_resp, lease) = send(&address, get(&address)).await.unwrap();
        drop(lease);
        assert_eq!(roundtrip(&address).await, "conn2");
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connect_returns_the_request() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address: Arc<str> = listener.local_addr().unwrap().to_string().into();
        drop(listener);
        match send(&address, get(&address)).await {
            Err(SendError::Connect { request, .. }) => assert_eq!(request.uri().path(), "/ping"),
            other => panic!("expected a connect error, got {other:?}"),
        }
    }
}
