//! Pooled HTTP/1.1 connections from the data plane to model instances.
//!
//! Each I/O thread keeps its own pool (a thread-local), so a request, the model connection that
//! carries it and the client connection it came from are all driven by the same thread: no
//! lock, no cross-thread wake-up on the hot path (see `server.rs`). A connection is a plain
//! socket with its read buffer, owned by one request at a time: the request writes its head and
//! body to it, reads the response head (`httparse`) and then the body through
//! [`UpstreamBody`], which puts the connection back in the pool the moment the body has been
//! read to its end (unless the model asked to close it). No task, channel or codec sits between
//! the request and the socket.
//!
//! A pooled connection is checked before reuse: one the model has closed (idle timers on model
//! servers do that) is dropped, and connections idle for longer than [`IDLE_TIMEOUT`] are not
//! reused. A connect that fails is reported as such, before anything of the request was read,
//! so the caller can try another instance.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::net::TcpStream;

use crate::dataplane::h1::{self, BodyDecoder, Framing};

/// Idle connections kept per instance address and thread.
const MAX_IDLE_PER_ADDRESS: usize = 256;
/// An idle connection older than this is closed rather than reused: model servers close idle
/// keep-alive connections on their own timers, and a request sent just as they do fails.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most response headers read from a model.
const MAX_HEADERS: usize = 128;

/// An open connection to one model instance.
#[derive(Debug)]
pub struct Conn {
    address: Arc<str>,
    stream: TcpStream,
    buf: BytesMut,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

thread_local! {
    static POOL: RefCell<HashMap<Arc<str>, Vec<Idle>>> = RefCell::new(HashMap::new());
}

/// What went wrong talking to a model instance after connecting.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Writing the request or reading the response failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The model closed the connection before its response head.
    #[error("the model closed the connection without answering")]
    Closed,
    /// The model's response is not HTTP/1.1 spillway can forward.
    #[error("the model's response is not valid HTTP/1.1: {0}")]
    Protocol(String),
}

/// A model's response status line and the headers the router forwards.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, as sent.
    pub content_type: Option<Bytes>,
    /// `X-Amzn-SageMaker-Custom-Attributes`, as sent.
    pub custom_attributes: Option<Bytes>,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request after this response.
    keep_alive: bool,
}

/// What the start of a connection's buffer holds.
enum Parse {
    /// A final response head (consumed).
    Head(ResponseHead),
    /// An interim (1xx) response (consumed and dropped).
    Interim,
    /// Not a complete head yet.
    Partial,
}

/// Takes this thread's most recently used live connection to `address` (`host:port`), or
/// opens one (`TCP_NODELAY`: a proxy must not hold small writes back). An error means nothing
/// was sent.
pub async fn connect(address: &Arc<str>) -> io::Result<Conn> {
    if let Some(conn) = checkout(address) {
        return Ok(conn);
    }
    let stream = TcpStream::connect(&**address).await?;
    stream.set_nodelay(true)?;
    Ok(Conn {
        address: address.clone(),
        stream,
        buf: BytesMut::new(),
    })
}

/// Pops pooled connections to `address` until one is live and fresh.
#[allow(clippy::disallowed_methods)] // Pooled model connections' idle ages are real time.
fn checkout(address: &str) -> Option<Conn> {
    POOL.with_borrow_mut(|pool| {
        let idle = pool.get_mut(address)?;
        let now = Instant::now();
        while let Some(Idle { conn, since }) = idle.pop() {
            if now.duration_since(since) < IDLE_TIMEOUT && conn.is_open() {
                return Some(conn);
            }
        }
        None
    })
}

/// Idle connections this thread holds to `address`.
#[cfg(test)]
fn idle_connections(address: &str) -> usize {
    POOL.with_borrow(|pool| pool.get(address).map_or(0, Vec::len))
}

impl Conn {
    /// Whether the model still holds the connection open and has sent nothing unasked. Uses the
    /// readiness the runtime has already seen: costs a syscall only when the socket turned
    /// readable while idle (a close, normally).
    fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Returns the connection to its thread's pool.
    #[allow(clippy::disallowed_methods)] // Pooled model connections' idle ages are real time.
    fn release(mut self) {
        if !self.buf.is_empty() {
            return; // bytes after the response: not a connection to trust
        }
        self.buf = BytesMut::new(); // an idle connection holds no buffer
        POOL.with_borrow_mut(|pool| {
            let idle = pool.entry(self.address.clone()).or_default();
            if idle.len() < MAX_IDLE_PER_ADDRESS {
                idle.push(Idle {
                    conn: self,
                    since: Instant::now(),
                });
            }
        });
    }

    /// The socket, for writing the request.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Reads the response head, skipping interim (1xx) responses.
    pub async fn read_head(&mut self) -> Result<ResponseHead, UpstreamError> {
        loop {
            while !self.buf.is_empty() {
                match self.parse_head()? {
                    Parse::Head(head) => return Ok(head),
                    Parse::Interim => {}
                    Parse::Partial => break,
                }
            }
            if self.buf.len() >= h1::MAX_HEAD {
                return Err(UpstreamError::Protocol("response head too large".into()));
            }
            if h1::read(&self.stream, &mut self.buf).await? == 0 {
                return Err(UpstreamError::Closed);
            }
        }
    }

    /// Parses the head at the start of the buffer, consuming it if complete.
    fn parse_head(&mut self) -> Result<Parse, UpstreamError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(&self.buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(Parse::Partial),
            Err(e) => return Err(UpstreamError::Protocol(e.to_string())),
        };
        let status = resp.code.unwrap_or(0);
        if (100..200).contains(&status) {
            if status == 101 {
                return Err(UpstreamError::Protocol("the model switched protocols".into()));
            }
            self.buf.advance(len);
            return Ok(Parse::Interim);
        }
        let framing = if status == 204 || status == 304 {
            Framing::Empty
        } else {
            h1::framing(resp.headers, Framing::UntilClose).map_err(|e| UpstreamError::Protocol(e.to_string()))?
        };
        let base = self.buf.as_ptr() as usize;
        let at = |v: &[u8]| -> Range<usize> {
            let start = v.as_ptr() as usize - base;
            start..start + v.len()
        };
        let (mut content_type, mut custom_attributes, mut close) = (None, None, false);
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-type") {
                content_type = Some(at(h.value));
            } else if h.name.eq_ignore_ascii_case("x-amzn-sagemaker-custom-attributes") {
                custom_attributes = Some(at(h.value));
            } else if h.name.eq_ignore_ascii_case("connection") {
                close |= h1::has_close_token(h.value);
            }
        }
        let keep_alive = resp.version == Some(1) && !close && framing != Framing::UntilClose;
        let head = self.buf.split_to(len).freeze();
        Ok(Parse::Head(ResponseHead {
            status,
            content_type: content_type.map(|r| head.slice(r)),
            custom_attributes: custom_attributes.map(|r| head.slice(r)),
            framing,
            keep_alive,
        }))
    }

    /// The body that follows `head`.
    pub fn into_body(self, head: &ResponseHead) -> UpstreamBody {
        UpstreamBody {
            decoder: BodyDecoder::new(head.framing),
            keep_alive: head.keep_alive,
            conn: Some(self),
        }
    }
}

/// A model's response body, read from its connection as the client takes it. The connection
/// goes back to the pool when the body ends, and is closed if the body is dropped before.
#[derive(Debug)]
pub struct UpstreamBody {
    conn: Option<Conn>,
    decoder: BodyDecoder,
    keep_alive: bool,
}

impl UpstreamBody {
    /// The next piece of the body; `None` at its end.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let Some(conn) = &mut self.conn else {
            return Poll::Ready(None);
        };
        let r = self.decoder.poll_next(&conn.stream, &mut conn.buf, cx);
        match &r {
            Poll::Ready(Some(Ok(_))) if !self.decoder.is_done() => {}
            Poll::Ready(Some(Ok(_)) | None) => {
                // Ended: with this data, or just now.
                if let Some(conn) = self.conn.take()
                    && self.keep_alive
                {
                    conn.release();
                }
            }
            Poll::Ready(Some(Err(_))) => self.conn = None,
            Poll::Pending => {}
        }
        r
    }

    /// Whether the body has been read to its end.
    pub fn is_end(&self) -> bool {
        self.decoder.is_done()
    }

    /// Bytes still to come when the model sent a `Content-Length`.
    pub fn remaining(&self) -> Option<u64> {
        self.decoder.remaining()
    }

    /// Reads the body to its end, up to `limit` bytes (`None` past that, or on an error).
    pub async fn read_to_end(mut self, limit: usize) -> Option<Bytes> {
        let mut all = BytesMut::new();
        while let Some(piece) = std::future::poll_fn(|cx| self.poll_next(cx)).await {
            let piece = piece.ok()?;
            if all.len() + piece.len() > limit {
                return None;
            }
            all.extend_from_slice(&piece);
        }
        Some(all.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// How the test server ends a connection.
    #[derive(Clone, Copy)]
    enum Close {
        Never,
        /// After this many responses, announced with `Connection: close`.
        Announced(usize),
        /// After this many responses, silently (as a model's idle timer does).
        Silently(usize),
    }

    /// A minimal keep-alive HTTP/1.1 server that answers every request with `prefix` and its
    /// connection's serial number, and counts connections.
    async fn server(close: Close, prefix: &'static str) -> (Arc<str>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let conns = Arc::new(AtomicUsize::new(0));
        let counter = conns.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
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
                            let (announce, close) = match close {
                                Close::Never => (false, false),
                                Close::Announced(k) => (served >= k, served >= k),
                                Close::Silently(k) => (false, served >= k),
                            };
                            let resp = format!(
                                "{prefix}HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{}\r\n{body}",
                                body.len(),
                                if announce { "connection: close\r\n" } else { "" }
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
        (address.into(), conns)
    }

    async fn roundtrip(address: &Arc<str>) -> String {
        let mut conn = connect(address).await.unwrap();
        conn.stream()
            .write_all(format!("GET /ping HTTP/1.1\r\nhost: {address}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let head = conn.read_head().await.unwrap();
        assert_eq!(head.status, 200);
        let body = conn.into_body(&head).read_to_end(1024).await.unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn reuses_one_connection_for_sequential_requests() {
        let (address, conns) = server(Close::Never, "").await;
        for _ in 0..5 {
            assert_eq!(roundtrip(&address).await, "conn1");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        assert_eq!(idle_connections(&address), 1);
    }

    #[tokio::test]
    async fn replaces_connections_the_model_closes() {
        let (address, conns) = server(Close::Announced(1), "").await;
        for i in 1..=3 {
            assert_eq!(roundtrip(&address).await, format!("conn{i}"));
        }
        assert_eq!(conns.load(Ordering::SeqCst), 3);
        assert_eq!(idle_connections(&address), 0);
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_not_reused() {
        let (address, conns) = server(Close::Silently(1), "").await;
        assert_eq!(roundtrip(&address).await, "conn1");
        assert_eq!(idle_connections(&address), 1);
        // Let the close reach this side's runtime, as it does between requests in service.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(roundtrip(&address).await, "conn2");
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn interim_responses_are_skipped() {
        let (address, _) = server(Close::Never, "HTTP/1.1 100 Continue\r\n\r\n").await;
        assert_eq!(roundtrip(&address).await, "conn1");
        assert_eq!(roundtrip(&address).await, "conn1");
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_the_connection() {
        let (address, conns) = server(Close::Never, "").await;
        let mut conn = connect(&address).await.unwrap();
        conn.stream().write_all(b"GET /ping HTTP/1.1\r\n\r\n").await.unwrap();
        let head = conn.read_head().await.unwrap();
        drop(conn.into_body(&head));
        assert_eq!(roundtrip(&address).await, "conn2");
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connect_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address: Arc<str> = listener.local_addr().unwrap().to_string().into();
        drop(listener);
        assert!(connect(&address).await.is_err());
    }

    #[tokio::test]
    async fn responses_without_length_end_with_the_connection_and_are_not_pooled() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: Arc<str> = listener.local_addr().unwrap().to_string().into();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil ").await.unwrap();
            s.write_all(b"close").await.unwrap();
        });
        let mut conn = connect(&address).await.unwrap();
        conn.stream()
            .write_all(b"POST /invocations HTTP/1.1\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        let head = conn.read_head().await.unwrap();
        assert_eq!(head.framing, Framing::UntilClose);
        let body = conn.into_body(&head).read_to_end(1024).await.unwrap();
        assert_eq!(&body[..], b"until close");
        assert_eq!(idle_connections(&address), 0);
    }
}
