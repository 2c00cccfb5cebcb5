//! The lean invocation path: serves `InvokeEndpoint` on a client connection with no
//! general-purpose HTTP server in between.
//!
//! Each I/O thread (`server.rs`) starts every client connection here. A request head is parsed
//! with `httparse` straight from the connection's read buffer; an ordinary `InvokeEndpoint` or
//! `InvokeEndpointWithResponseStream` (`POST /endpoints/{name}/invocations[-response-stream]`,
//! HTTP/1.1, a `Content-Length` or chunked body) is routed
//! by [`invoke::invoke_model`], its body streamed to the model as it arrives, and the model's
//! answer written back, head and body in one write when the body is already there. Keep-alive
//! and pipelined requests are served in turn on the same buffer.
//!
//! Any other request (the control plane, `/metrics`, HTTP/1.0, `Expect: 100-continue`, an upgrade, an unusual or malformed head) hands the whole
//! connection, with the bytes already read, to hyper ([`Handover::General`]): hyper answers it
//! as a general-purpose server does, for the rest of the connection's life. The fast path never
//! guesses at HTTP it does not handle.
//!
//! Timeouts: a request head (and the wait for the next one on a kept-alive connection) must
//! arrive within `[router] client_timeout_seconds` (30 s by default); to keep the timer off
//! the per-request path it is re-armed at most every sixth of that, so the bound lies between
//! five sixths of it and all of it (25 and 30 s by default). A client that accepts nothing of
//! an answer for as long (it stopped reading; nginx's `send_timeout`) is disconnected, here and
//! on connections handed to hyper ([`ClientSocket`]); a request body that stops arriving for as
//! long fails as the client's error (nginx's `client_body_timeout`; [`h1::Stall`]).

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::DataPlane;
use super::accept::Accepted;
use super::eventstream;
use super::h1::{self, BodyDecoder, Framing, Stall};
use super::head::{AnswerHead, RequestHeaders};
use super::invoke::Signed;
use super::invoke::{self, Answer, Call, MAX_DRAIN, Payload, Reply};
use super::op::{Mode, RuntimeOp, Target};
use super::request_id::RequestId;
use super::stop::{Stop, reached};
use crate::config::AuthMode;
use crate::error::ApiError;

/// Most request headers the fast path parses (a request with more goes to hyper).
const MAX_HEADERS: usize = 64;
/// How long a connection closed with an unread request body keeps reading it ([`Client::linger`]).
const LINGER: Duration = Duration::from_secs(2);
/// How often [`client_gone`] looks again while the client has sent bytes not read yet.
const PEEK_AGAIN: Duration = Duration::from_millis(250);

/// How a connection left the fast path.
pub enum Handover {
    /// It is closed (by either side, a timeout, a stop or an error).
    Closed,
    /// A request the fast path does not serve arrived: the connection, rewound to that
    /// request's first byte, goes to the general-purpose server.
    General(Rewind),
}

/// Serves invocations on `stream` until it closes or carries another kind of request.
#[allow(clippy::disallowed_methods)] // Client timeouts measure real elapsed time.
pub async fn serve(dp: &DataPlane, stream: TcpStream, stop: &mut watch::Receiver<Stop>) -> Handover {
    let timeout = dp.router.client_timeout();
    let mut client = Client {
        stream: ClientSocket::new(stream, timeout),
        buf: BytesMut::new(),
        out: Vec::new(),
        timeout,
        deadline: Box::pin(tokio::time::sleep(timeout)),
        armed: Instant::now(),
    };
    loop {
        let request = match client.next_request(stop).await {
            Next::Request(r) => r,
            Next::Closed => return Handover::Closed,
            Next::General => {
                return Handover::General(Rewind {
                    pre: client.buf.freeze(),
                    stream: client.stream,
                });
            }
        };
        if !client.serve(dp, request, stop).await {
            return Handover::Closed;
        }
    }
}

/// One client connection.
struct Client {
    stream: ClientSocket,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The response being written.
    out: Vec<u8>,
    /// How long a head (or the next one) may take to arrive.
    timeout: Duration,
    /// Header-read deadline.
    deadline: Pin<Box<Sleep>>,
    /// When the deadline was last moved.
    armed: Instant,
}

/// What a connection does next. Not boxed: a request is read once per invocation, and a box
/// would be an allocation per request on the hot path.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(Request),
    Closed,
    General,
}

/// A parsed invocation head: the head's bytes and where its parts lie in them.
struct Request {
    head: Bytes,
    /// The operation's endpoint name.
    endpoint: Range<usize>,
    /// The operation ([`RuntimeOp::parse`]), without its endpoint name.
    mode: Mode,
    headers: RequestHeaders<Range<usize>>,
    framing: Framing,
}

/// What a buffer's first request is.
// Returned by value once per request: boxing the large variant would allocate per request.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// An invocation the fast path serves; its head is this many bytes long.
    Invocation(Request, usize),
    /// Incomplete.
    Partial,
    /// Anything else.
    Other,
}

/// Parses the request at the start of `buf`.
fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if req.version != Some(1) {
        return Parsed::Other;
    }
    // The target as sent: one with a query is not an invocation path here (hyper serves it).
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Parsed::Other;
    };
    let Target::Invocation(op) = RuntimeOp::parse(method, path) else {
        return Parsed::Other;
    };
    let Ok(framing) = h1::framing(req.headers, Framing::Empty) else {
        return Parsed::Other;
    };
    let headers = RequestHeaders::read(req.headers.iter().map(|h| (h.name.as_bytes(), h.value)));
    if headers.expect_or_upgrade {
        return Parsed::Other;
    }
    let base = buf.as_ptr() as usize;
    let at = |v: &[u8]| -> Range<usize> {
        let start = v.as_ptr() as usize - base;
        start..start + v.len()
    };
    let r = Request {
        head: Bytes::new(),
        endpoint: at(op.endpoint_name().as_bytes()),
        mode: op.mode(),
        headers: headers.map(|v| at(v)),
        framing,
    };
    Parsed::Invocation(r, len)
}

/// What the signature of the request whose head is `head` covers. The head parsed once
/// already; parsing it again here costs less than keeping every field's place for every
/// request when authentication is off.
fn signed<'h>(
    head: &'h [u8],
    fields: &mut [httparse::Header<'h>; MAX_HEADERS],
    peer: Option<std::net::IpAddr>,
) -> Signed<'h> {
    let mut req = httparse::Request::new(fields);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
        return Signed::default();
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Signed {
        method: req.method.unwrap_or_default(),
        path,
        query,
        headers: req.headers.iter().map(|h| (h.name, h.value)).collect(),
        peer,
    }
}

impl Client {
    /// Waits for the next request head.
    #[allow(clippy::disallowed_methods)] // Client timeouts measure real elapsed time.
    async fn next_request(&mut self, stop: &mut watch::Receiver<Stop>) -> Next {
        let now = Instant::now();
        if now.duration_since(self.armed) >= self.timeout / 6 {
            self.deadline.as_mut().reset(now + self.timeout);
            self.armed = now;
        }
        loop {
            if !self.buf.is_empty() {
                match parse(&self.buf) {
                    Parsed::Invocation(mut r, len) => {
                        r.head = self.buf.split_to(len).freeze();
                        return Next::Request(r);
                    }
                    Parsed::Partial if self.buf.len() < h1::MAX_HEAD => {}
                    Parsed::Partial | Parsed::Other => return Next::General,
                }
            }
            let idle = self.buf.is_empty();
            if idle {
                // Between requests, like nginx, hold no buffers: an idle kept-alive connection
                // costs its socket and its task only (a malloc per request buys that).
                self.buf = BytesMut::new();
                self.out = Vec::new();
            }
            tokio::select! {
                biased;
                r = h1::read(&self.stream, &mut self.buf) => {
                    if !matches!(r, Ok(n) if n > 0) {
                        return Next::Closed;
                    }
                }
                _ = &mut self.deadline => return Next::Closed,
                _ = reached(stop, Stop::Graceful), if idle => return Next::Closed,
            }
        }
    }

    /// Serves one invocation; whether the connection stays open for another.
    async fn serve(&mut self, dp: &DataPlane, r: Request, stop: &watch::Receiver<Stop>) -> bool {
        let head = &r.head;
        let op = RuntimeOp::new(
            r.mode,
            std::str::from_utf8(&head[r.endpoint.clone()]).unwrap_or_default(),
        );
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let signed = if dp.auth.mode() == AuthMode::Sigv4 {
            signed(head, &mut fields, self.stream.peer_addr().ok().map(|a| a.ip()))
        } else {
            Signed::default()
        };
        let call = Call {
            signed,
            op,
            headers: r.headers.map(|x| &head[x.clone()]),
            length: match r.framing {
                Framing::Length(n) => Some(n),
                Framing::Empty => Some(0),
                Framing::Chunked | Framing::UntilClose => None,
            },
            request_id: dp.request_ids.next(),
        };
        let mut body = ClientBody {
            stream: &self.stream,
            buf: &mut self.buf,
            decoder: BodyDecoder::new(r.framing),
            stall: Stall::new(self.timeout),
        };
        // A client that goes away while the model works frees the model at once: dropping the
        // invocation closes its model connection (model servers stop work for a closed
        // connection) and stops it counting as outstanding.
        let result = tokio::select! {
            biased;
            result = invoke::invoke_model(dp, &call, &mut body) => result,
            () = client_gone(&self.stream) => return false,
        };
        // The next request starts after this one's body. An answer given before the body was
        // read (an error) keeps the connection only if what is already buffered ends the body in
        // one decoding step, the rule hyper follows (`poll_drain_or_close_read`), so that both
        // servers take the same bytes for the next request; otherwise the connection closes
        // after the answer (and lingers, reading what the client still sends).
        let mut keep = !r.headers.close;
        let unread = !body.decoder.is_done();
        if unread {
            keep &= body.decoder.decode(body.buf).is_ok() && body.decoder.is_done();
        }
        keep &= *stop.borrow() == Stop::Running;
        let written = match result {
            Ok(Reply::Model(answer)) => self.write_answer(answer, keep, &op, &call.request_id).await,
            Ok(Reply::Accepted(a)) => self.write_accepted(&a, keep, &call.request_id).await,
            Err(e) => self.write_error(&e, keep, &call.request_id).await,
        };
        if written && unread && !keep {
            self.linger().await;
        }
        keep && written
    }

    /// Before closing a connection whose client may still be sending: closes the write side
    /// and reads (and discards) what still comes for a moment. Closing a socket with unread
    /// data resets it, and the reset can destroy the answer before the client has read it.
    async fn linger(&mut self) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let mut scratch = vec![0u8; 16 * 1024];
        let discard = async {
            let mut seen = 0u64;
            while seen < MAX_DRAIN {
                match self.stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen += n as u64,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, discard).await;
    }

    /// Writes a model's answer as it arrives (for `InvokeEndpointWithResponseStream`, each piece
    /// as an event-stream `PayloadPart` message); whether all of it was written.
    async fn write_answer(&mut self, answer: Answer, keep: bool, op: &RuntimeOp<'_>, request_id: &RequestId) -> bool {
        let mode = op.mode();
        let length = match mode {
            Mode::Plain | Mode::Async => answer.body.remaining(),
            Mode::EventStream => None,
        };
        self.out.clear();
        answer.head(op, request_id).write(&mut self.out, length, keep);
        let chunked = length.is_none();
        let mut body = answer.body;
        loop {
            // Gather what the model has already sent; write whenever it has to be waited for.
            let next = match std::future::poll_fn(|cx| Poll::Ready(body.poll_next(cx))).await {
                Poll::Ready(next) => next,
                Poll::Pending => {
                    if self.stream.write_all(&self.out).await.is_err() {
                        return false;
                    }
                    self.out.clear();
                    tokio::select! {
                        biased;
                        next = std::future::poll_fn(|cx| body.poll_next(cx)) => next,
                        () = client_gone(&self.stream) => return false,
                    }
                }
            };
            let out = &mut self.out;
            match next {
                None => {
                    if chunked {
                        out.extend_from_slice(h1::LAST_CHUNK);
                    }
                    return self.stream.write_all(out).await.is_ok();
                }
                // The model's response broke off: a stream ends with a `ModelStreamError`
                // message, a plain answer is cut short.
                Some(Err(e)) if mode == Mode::EventStream => {
                    h1::put_chunk(out, &eventstream::model_stream_error(&e.to_string()));
                    out.extend_from_slice(h1::LAST_CHUNK);
                    return self.stream.write_all(out).await.is_ok();
                }
                Some(Err(_)) => {
                    let _ = self.stream.write_all(out).await;
                    return false;
                }
                Some(Ok(data)) if data.is_empty() => {}
                Some(Ok(data)) => {
                    let data = match mode {
                        Mode::Plain | Mode::Async => data,
                        Mode::EventStream => eventstream::payload_part(&data),
                    };
                    if h1::put_body(&mut self.stream, out, &data, chunked).await.is_err() {
                        return false;
                    }
                }
            }
        }
    }

    /// Writes an asynchronous request's acceptance (202); whether it was written.
    async fn write_accepted(&mut self, a: &Accepted, keep: bool, request_id: &RequestId) -> bool {
        let out = &mut self.out;
        out.clear();
        AnswerHead::accepted(request_id, &a.output_location, &a.failure_location).write(
            out,
            Some(a.body.len() as u64),
            keep,
        );
        out.extend_from_slice(&a.body);
        self.stream.write_all(out).await.is_ok()
    }

    /// Writes an AWS error; whether it was written.
    async fn write_error(&mut self, e: &ApiError, keep: bool, request_id: &RequestId) -> bool {
        let body = e.body();
        let out = &mut self.out;
        out.clear();
        AnswerHead::error(e, request_id).write(out, Some(body.len() as u64), keep);
        out.extend_from_slice(body.as_bytes());
        self.stream.write_all(out).await.is_ok()
    }
}

/// Resolves once the client has closed (or reset) its connection: while its request is being
/// served, nothing else can end the stream it reads from. A client that only shuts down its
/// sending side counts as gone too, as with nginx (`proxy_ignore_client_abort off`). Bytes it
/// has sent are left unread (the rest of the body, a pipelined request); they are looked past
/// every [`PEEK_AGAIN`] rather than spun on.
async fn client_gone(stream: &TcpStream) {
    let mut probe = [0u8; 1];
    loop {
        match stream.peek(&mut probe).await {
            Ok(0) | Err(_) => return,
            Ok(_) => tokio::time::sleep(PEEK_AGAIN).await,
        }
    }
}

/// A client's request body, read from its connection as the model takes it. A client that
/// sends nothing of it for the client timeout fails the request as the client's error.
struct ClientBody<'a> {
    stream: &'a TcpStream,
    buf: &'a mut BytesMut,
    decoder: BodyDecoder,
    stall: Stall,
}

impl Payload for ClientBody<'_> {
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let r = self.decoder.poll_next(self.stream, self.buf, cx);
        self.stall.bound(cx, r, "the client sent", |e| Some(Err(e)))
    }
}

/// A client's socket. Reads go to the [`TcpStream`] (through `Deref`); writes go through
/// [`AsyncWrite`] here, which fails one that has made no progress for the client timeout: a
/// client that stopped reading must not hold its connection, its model connection and the
/// model's work forever.
pub struct ClientSocket {
    io: TcpStream,
    stall: Stall,
}

impl ClientSocket {
    fn new(io: TcpStream, limit: Duration) -> Self {
        Self {
            io,
            stall: Stall::new(limit),
        }
    }

    /// `r` of a write, failed if it has waited for longer than the limit.
    fn bound<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.stall.bound(cx, r, "the client accepted", Err)
    }
}

impl std::ops::Deref for ClientSocket {
    type Target = TcpStream;

    fn deref(&self) -> &TcpStream {
        &self.io
    }
}

impl std::ops::DerefMut for ClientSocket {
    fn deref_mut(&mut self) -> &mut TcpStream {
        &mut self.io
    }
}

impl AsyncWrite for ClientSocket {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.bound(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.bound(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A connection handed over to the general-purpose server: first the bytes the fast path had
/// already read, then the socket.
pub struct Rewind {
    pre: Bytes,
    stream: ClientSocket,
}

impl Rewind {
    /// A connection nothing has been read from yet (`[router] fast_path = false`), with the
    /// same bound on a client that stops reading.
    pub fn fresh(stream: TcpStream, timeout: Duration) -> Self {
        Self {
            pre: Bytes::new(),
            stream: ClientSocket::new(stream, timeout),
        }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            if self.pre.is_empty() {
                self.pre = Bytes::new(); // frees the fast path's buffer
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut *self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation(wire: &[u8]) -> (Request, usize) {
        match parse(wire) {
            Parsed::Invocation(r, len) => (r, len),
            Parsed::Partial => panic!("partial"),
            Parsed::Other => panic!("not an invocation"),
        }
    }

    #[test]
    fn an_invocation_head_is_parsed_with_its_forwarded_headers() {
        let wire = b"POST /endpoints/ep-1/invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n\
            X-Amzn-SageMaker-Target-Variant: blue\r\nConnection: close\r\ncontent-length: 3\r\n\r\nabc";
        let (r, len) = invocation(wire);
        assert_eq!(len, wire.len() - 3);
        assert_eq!(&wire[r.endpoint], b"ep-1");
        assert_eq!(&wire[r.headers.content_type.unwrap()], b"text/csv");
        assert_eq!(&wire[r.headers.target_variant.unwrap()], b"blue");
        assert_eq!(r.framing, Framing::Length(3));
        assert!(r.headers.close && r.headers.accept.is_none());
    }

    #[test]
    fn anything_else_goes_to_the_general_server() {
        for wire in [
            &b"GET /endpoints/e/invocations HTTP/1.1\r\n\r\n"[..],
            b"POST /endpoints/e/invocations HTTP/1.0\r\n\r\n",
            b"POST /endpoints/e/invocations?x=1 HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nx-amz-target: SageMaker.ListEndpoints\r\n\r\n",
            b"POST /endpoints/e/invocations HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            b"POST /endpoints/e/invocations HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
            b"POST /endpoints/e/invocations HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            b"POST /endpoints/e/invocations HTTP/1.1\r\nbad header\r\n\r\n",
            b"\x16\x03\x01 not http at all\r\n\r\n",
        ] {
            assert!(
                matches!(parse(wire), Parsed::Other),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("x-h{i}: v\r\n")).collect();
        let wire = format!("POST /endpoints/e/invocations HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(parse(wire.as_bytes()), Parsed::Other));
    }

    #[test]
    fn a_response_stream_invocation_is_served_here_too() {
        let wire = b"POST /endpoints/e/invocations-response-stream HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n";
        let (r, _) = invocation(wire);
        assert_eq!((r.mode, r.framing), (Mode::EventStream, Framing::Chunked));
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        assert!(matches!(
            parse(b"POST /endpoints/e/invocations HTTP/1.1\r\nHost"),
            Parsed::Partial
        ));
    }
}
