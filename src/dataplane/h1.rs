//! The HTTP/1.1 pieces the invocation hot path needs, shared by both of its sides: the client
//! connections of `fastpath.rs` and the model connections of `upstream.rs`.
//!
//! Heads are parsed by `httparse` (the parser hyper itself uses); this module adds what a proxy
//! needs around it: how a message body is delimited ([`Framing`]), an incremental body decoder
//! that splits data off the read buffer without copying ([`BodyDecoder`], `Content-Length`,
//! chunked with extensions and trailers, or until the connection closes), chunked encoding,
//! reading from a socket into a growable buffer, and the `Date` header. Anything unusual (an
//! unknown transfer coding, conflicting lengths) is reported, never guessed at: the fast path
//! then hands the connection to hyper, which answers it as a general-purpose server does.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Largest message head read (request line or status line plus headers).
pub const MAX_HEAD: usize = 64 * 1024;
/// Free space ensured in a read buffer before reading a head. Small, because a kept-alive
/// connection holds its buffer while idle.
pub const HEAD_READ: usize = 4 * 1024;
/// Most free space ensured before reading a body (it is split off the buffer as it comes).
const BODY_READ: usize = 64 * 1024;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a request without length headers, a 204 or 304 response).
    Empty,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// A response without length headers: the body ends when the connection closes.
    UntilClose,
}

/// A message's length headers are not ones the lean path handles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// A transfer coding other than a lone `chunked`.
    #[error("unsupported transfer coding")]
    Coding,
    /// An unparseable or repeated `Content-Length`, or one next to `Transfer-Encoding`.
    #[error("invalid or conflicting message length")]
    Length,
}

/// The framing of a message from its headers; `default` applies when it has neither
/// `Content-Length` nor `Transfer-Encoding` ([`Framing::Empty`] for requests,
/// [`Framing::UntilClose`] for responses).
pub fn framing(headers: &[httparse::Header<'_>], default: Framing) -> Result<Framing, FramingError> {
    let mut length = None;
    let mut chunked = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Err(FramingError::Length);
            }
            length = Some(parse_length(h.value).ok_or(FramingError::Length)?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(FramingError::Coding);
            }
            chunked = true;
        }
    }
    match (length, chunked) {
        (Some(_), true) => Err(FramingError::Length),
        (Some(n), false) => Ok(Framing::Length(n)),
        (None, true) => Ok(Framing::Chunked),
        (None, false) => Ok(default),
    }
}

/// A `Content-Length` value: ASCII digits only (no sign, no list), at most 18 of them.
fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Whether a `Connection` header value holds the `close` token.
pub fn has_close_token(value: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// A body ended or was framed in a way HTTP/1.1 does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The connection closed before the body's end.
    #[error("the connection closed before the end of the body")]
    Truncated,
    /// A chunk size line, chunk end or trailer section is malformed.
    #[error("malformed chunked body")]
    Chunk,
}

impl From<BodyError> for io::Error {
    fn from(e: BodyError) -> Self {
        let kind = match e {
            BodyError::Truncated => io::ErrorKind::UnexpectedEof,
            BodyError::Chunk => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// What [`BodyDecoder::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body data, split off the front of the buffer.
    Data(Bytes),
    /// More bytes must be read first.
    NeedMore,
    /// The body has ended; the buffer now starts at the next message.
    End,
}

/// Chunk-extension bytes one chunked body may carry in all (hyper's limit).
const MAX_CHUNK_EXTENSIONS: u64 = 16 * 1024;
/// Largest trailer section (hyper's limit).
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Most trailer fields (hyper's limit).
const MAX_TRAILERS: usize = 100;

/// Decodes one message body incrementally from a read buffer.
///
/// Chunked framing is read exactly as hyper reads it (RFC 9112 §7.1, no leniency beyond
/// hyper's), so that a request means the same on the fast path as on a connection hyper
/// serves: a chunk-size line is hex digits, optional spaces or tabs, an optional extension
/// free of LF, then CRLF; chunk data ends with CRLF; trailer lines end with CRLF and must be
/// valid header fields.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
    /// Chunk-extension bytes seen so far.
    extensions: u64,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    UntilClose,
    Done,
}

impl BodyDecoder {
    /// A decoder for a body with `framing`.
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        Self { state, extensions: 0 }
    }

    /// Whether the body has been read to its end.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Bytes of a `Content-Length` body still to come (`None` for other framings).
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// Takes the next piece of body data from the front of `buf`, consuming framing bytes.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, BodyError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Length(n) | State::ChunkData(n) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                    let left = n - take as u64;
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), l) => State::Length(l),
                        (_, 0) => State::ChunkEnd,
                        (_, l) => State::ChunkData(l),
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                State::ChunkSize => match chunk_size_line(buf, MAX_CHUNK_EXTENSIONS - self.extensions)? {
                    Some((used, size, extensions)) => {
                        buf.advance(used);
                        self.extensions += extensions;
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData(size)
                        };
                    }
                    None if buf.len() < MAX_HEAD => return Ok(Decoded::NeedMore),
                    None => return Err(BodyError::Chunk),
                },
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BodyError::Chunk);
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                // The trailer fields are checked, then dropped.
                State::Trailers => match trailer_section(buf)? {
                    Some(used) => {
                        buf.advance(used);
                        self.state = State::Done;
                    }
                    None => return Ok(Decoded::NeedMore),
                },
            }
        }
    }

    /// The connection closed: ends an [`Framing::UntilClose`] body, fails any other unfinished
    /// one.
    pub fn closed(&mut self) -> Result<(), BodyError> {
        match self.state {
            State::Done => Ok(()),
            State::UntilClose => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(BodyError::Truncated),
        }
    }

    /// Polls the next piece of the body, reading from `stream` into `buf` as needed; `None`
    /// once the body has ended.
    pub fn poll_next(
        &mut self,
        stream: &TcpStream,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            match self.decode(buf) {
                Ok(Decoded::Data(d)) => return Poll::Ready(Some(Ok(d))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
                Ok(Decoded::NeedMore) => {
                    let want = match self.state {
                        State::Length(n) | State::ChunkData(n) => n.clamp(HEAD_READ as u64, BODY_READ as u64) as usize,
                        _ => HEAD_READ,
                    };
                    match ready!(poll_read(stream, buf, want, cx)) {
                        Ok(0) => {
                            return Poll::Ready(match self.closed() {
                                Ok(()) => None,
                                Err(e) => Some(Err(e.into())),
                            });
                        }
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    }
                }
            }
        }
    }
}

/// A chunk-size line at the start of `buf`: `(its length, the chunk size, extension bytes)`, or
/// `None` when it is not complete yet. `extensions` is how many extension bytes it may carry.
fn chunk_size_line(buf: &[u8], extensions: u64) -> Result<Option<(usize, u64, u64)>, BodyError> {
    let mut size: u64 = 0;
    let mut i = 0;
    while let Some(d) = buf.get(i).and_then(|b| (*b as char).to_digit(16)) {
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or(BodyError::Chunk)?;
        i += 1;
    }
    if i == 0 && !buf.is_empty() {
        return Err(BodyError::Chunk);
    }
    while matches!(buf.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    let mut ext = 0;
    if buf.get(i) == Some(&b';') {
        i += 1;
        loop {
            match buf.get(i) {
                None => return Ok(None),
                Some(b'\r') => break,
                // A bare LF in an extension would end the line for a lenient reader.
                Some(b'\n') => return Err(BodyError::Chunk),
                Some(_) => {
                    ext += 1;
                    if ext >= extensions {
                        return Err(BodyError::Chunk);
                    }
                    i += 1;
                }
            }
        }
    }
    match (buf.get(i), buf.get(i + 1)) {
        (None, _) | (Some(b'\r'), None) => Ok(None),
        (Some(b'\r'), Some(b'\n')) => Ok(Some((i + 2, size, ext))),
        _ => Err(BodyError::Chunk),
    }
}

/// The trailer section (after the last chunk) at the start of `buf`, up to and including the
/// empty line that ends it: its length, or `None` when it is not complete yet. Each line ends
/// with CRLF, and the fields must parse as header fields.
fn trailer_section(buf: &[u8]) -> Result<Option<usize>, BodyError> {
    let mut i = 0;
    let mut lines = 0;
    let end = loop {
        if buf.get(i) == Some(&b'\r') {
            match buf.get(i + 1) {
                None => return Ok(None),
                Some(b'\n') => break i + 2,
                Some(_) => return Err(BodyError::Chunk),
            }
        }
        let Some(cr) = buf[i..].iter().position(|b| *b == b'\r') else {
            return if buf.len() >= MAX_TRAILER_BYTES {
                Err(BodyError::Chunk)
            } else {
                Ok(None)
            };
        };
        match buf.get(i + cr + 1) {
            None => return Ok(None),
            Some(b'\n') => {}
            Some(_) => return Err(BodyError::Chunk),
        }
        lines += 1;
        i += cr + 2;
        if lines > MAX_TRAILERS || i >= MAX_TRAILER_BYTES {
            return Err(BodyError::Chunk);
        }
    };
    if lines > 0 {
        let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILERS];
        // As hyper does, what follows an empty line httparse finds early (a bare LF) is not
        // looked at: the section still ends at the first CRLF CRLF.
        if !matches!(
            httparse::parse_headers(&buf[..end], &mut fields[..lines]),
            Ok(httparse::Status::Complete(_))
        ) {
            return Err(BodyError::Chunk);
        }
    }
    Ok(Some(end))
}

/// Reads what `stream` has into the free space of `buf`, first growing it to `want` free bytes
/// when less than a quarter of that is free; `Ok(0)` means the peer closed its side.
///
/// A read that does not fill the free space has emptied the socket, so it also clears the
/// socket's readiness, as nginx does: the next read then waits for the runtime's next event
/// instead of first trying (and failing with `EAGAIN`) one more `recv`, one syscall per
/// message saved. tokio clears it only if no new event arrived since the read began, so no
/// wake-up is lost.
pub fn poll_read(stream: &TcpStream, buf: &mut BytesMut, want: usize, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    loop {
        if buf.capacity() - buf.len() < want / 4 {
            buf.reserve(want);
        }
        let space = buf.capacity() - buf.len();
        let mut read = 0;
        let r = stream.try_io(Interest::READABLE, || {
            read = stream.try_read_buf(buf)?;
            if read > 0 && read < space {
                return Err(io::ErrorKind::WouldBlock.into()); // short: clear the readiness
            }
            Ok(read)
        });
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if read > 0 {
                    return Poll::Ready(Ok(read));
                }
                ready!(stream.poll_read_ready(cx))?;
            }
            r => return Poll::Ready(r),
        }
    }
}

/// [`poll_read`] as a future, for reading a head.
pub async fn read(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    std::future::poll_fn(|cx| poll_read(stream, buf, HEAD_READ, cx)).await
}

/// Appends `data` to `out` as one chunk of a chunked body.
pub fn put_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return; // a zero-size chunk would end the body
    }
    put_chunk_size(out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends the size line of a chunk of `len` bytes (not 0: that would end the body).
pub fn put_chunk_size(out: &mut Vec<u8>, len: usize) {
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends `name: value\r\n`.
pub fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends a decimal number.
pub fn put_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends the header that frames a body: `content-length` when its length is known, otherwise
/// `transfer-encoding: chunked`.
pub fn put_length(out: &mut Vec<u8>, length: Option<u64>) {
    match length {
        Some(n) => {
            out.extend_from_slice(b"content-length: ");
            put_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
}

/// Body pieces up to this size are copied into the outgoing buffer (so that a head and a small
/// body leave in one write); larger ones are written as they are.
const COPY_MAX: usize = 16 * 1024;
/// The outgoing buffer is written once it holds this much.
const WRITE_AT: usize = 64 * 1024;

/// Adds one piece of a body to the outgoing buffer `out` (as a chunk when `chunked`), writing
/// to `w` only when the piece is large or `out` has filled: what is left in `out` is for the
/// caller to write when it would otherwise wait, or at the end.
pub async fn put_body<W: AsyncWrite + Unpin>(
    w: &mut W,
    out: &mut Vec<u8>,
    data: &[u8],
    chunked: bool,
) -> io::Result<()> {
    if data.is_empty() {
        return Ok(()); // as a chunk it would end the body
    }
    if chunked {
        put_chunk_size(out, data.len());
    }
    if data.len() <= COPY_MAX {
        out.extend_from_slice(data);
    } else {
        w.write_all(out).await?;
        out.clear();
        w.write_all(data).await?;
    }
    if chunked {
        out.extend_from_slice(b"\r\n");
    }
    if out.len() >= WRITE_AT {
        w.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

thread_local! {
    /// The `Date` header value of the current second, formatted once per second per thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Appends the `date` header for now.
#[allow(clippy::disallowed_methods)] // The HTTP Date header is the wall clock.
pub fn put_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, value)| {
        if *at != secs {
            *at = secs;
            *value = httpdate::fmt_http_date(now);
        }
        put_header(out, b"date", value.as_bytes());
    });
}

/// Bounds how long an operation may wait for its peer without progress (nginx's
/// `client_body_timeout`, `send_timeout` and `proxy_read_timeout`). The timer exists only while
/// a wait lasts: an operation that completes at once costs nothing.
pub struct Stall {
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Stall {
    /// A bound of `limit` without progress.
    pub fn new(limit: Duration) -> Self {
        Self { limit, timer: None }
    }

    /// After an operation was polled: `ready` (it made progress) resets the wait; otherwise the
    /// wait starts or goes on, and this says whether it has now lasted the limit.
    pub fn exceeded(&mut self, cx: &mut Context<'_>, ready: bool) -> bool {
        if ready {
            self.timer = None;
            return false;
        }
        let limit = self.limit;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        let over = timer.as_mut().poll(cx).is_ready();
        if over {
            self.timer = None;
        }
        over
    }

    /// `r`, or, once the wait has lasted the limit, a `TimedOut` error saying that `who_did`
    /// ("the client sent", say) nothing, as `fail` makes it into the operation's output.
    pub fn bound<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<T>,
        who_did: &str,
        fail: impl FnOnce(io::Error) -> T,
    ) -> Poll<T> {
        if self.exceeded(cx, r.is_ready()) {
            return Poll::Ready(fail(self.error(who_did)));
        }
        r
    }

    /// The error of an operation that waited too long: `who_did` ("the client sent", say)
    /// nothing for the limit.
    pub fn error(&self, who_did: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{who_did} nothing for {:?}", self.limit),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    /// Decodes `wire` fed in pieces of `step` bytes; returns the body and what is left over.
    fn decode_all(framing: Framing, wire: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), BodyError> {
        let mut d = BodyDecoder::new(framing);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => body.extend_from_slice(&b),
                Decoded::End => return Ok((body, buf.to_vec())),
                Decoded::NeedMore if fed < wire.len() => {
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
                Decoded::NeedMore => {
                    d.closed()?;
                    return Ok((body, buf.to_vec()));
                }
            }
        }
    }

    #[test]
    fn framing_follows_the_length_headers() {
        assert_eq!(framing(&[], Framing::Empty), Ok(Framing::Empty));
        assert_eq!(framing(&[], Framing::UntilClose), Ok(Framing::UntilClose));
        assert_eq!(
            framing(&[header("Content-Length", " 42 ")], Framing::Empty),
            Ok(Framing::Length(42))
        );
        assert_eq!(
            framing(&[header("transfer-encoding", "Chunked")], Framing::Empty),
            Ok(Framing::Chunked)
        );
        for bad in ["-1", "1,1", "", "0x10", "1234567890123456789"] {
            assert_eq!(
                framing(&[header("content-length", bad)], Framing::Empty),
                Err(FramingError::Length),
                "{bad}"
            );
        }
        assert_eq!(
            framing(
                &[header("content-length", "1"), header("content-length", "1")],
                Framing::Empty
            ),
            Err(FramingError::Length)
        );
        assert_eq!(
            framing(
                &[header("content-length", "1"), header("transfer-encoding", "chunked")],
                Framing::Empty
            ),
            Err(FramingError::Length)
        );
        assert_eq!(
            framing(&[header("transfer-encoding", "gzip, chunked")], Framing::Empty),
            Err(FramingError::Coding)
        );
    }

    #[test]
    fn connection_close_is_found_among_tokens() {
        assert!(has_close_token(b"close"));
        assert!(has_close_token(b"TE, Close"));
        assert!(!has_close_token(b"keep-alive"));
        assert!(!has_close_token(b"closed"));
    }

    #[test]
    fn a_length_body_stops_at_its_length_in_any_split() {
        let wire = b"hello worldGET / HTTP/1.1\r\n";
        for step in [1, 3, 11, 100] {
            let (body, rest) = decode_all(Framing::Length(11), wire, step).unwrap();
            assert_eq!(body, b"hello world");
            assert!(b"GET / HTTP/1.1\r\n".starts_with(&rest), "{step}: {rest:?}");
        }
        assert_eq!(decode_all(Framing::Length(20), b"short", 5), Err(BodyError::Truncated));
    }

    #[test]
    fn a_chunked_body_is_decoded_with_extensions_and_trailers_in_any_split() {
        let wire = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for step in [1, 2, 7, 1000] {
            let (body, rest) = decode_all(Framing::Chunked, wire, step).unwrap();
            assert_eq!(body, b"hello world", "step {step}");
            assert!(b"NEXT".starts_with(&rest), "{step}: {rest:?}");
        }
    }

    #[test]
    fn chunked_framing_is_read_as_strictly_as_hyper_reads_it() {
        // Accepted, as hyper accepts them: spaces or tabs before an extension or the CRLF,
        // leading zeros, upper-case hex, an empty extension, a trailer field.
        for wire in [
            &b"5 \t;a=b\r\nhello\r\n0\r\n\r\n"[..],
            b"005\t\r\nhello\r\n0000\r\n\r\n",
            b"A;\r\nhelloworld\r\n0;last\r\nX-T: 1\r\nX-U:\r\n\r\n",
        ] {
            for step in [1, 3, 1000] {
                assert!(decode_all(Framing::Chunked, wire, step).is_ok(), "{step}: {wire:?}");
            }
        }
        // Refused, as hyper refuses them. The first is a request-smuggling shape: a lenient
        // reader ends the extension at the next CRLF, and takes what follows as chunk data.
        let ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_EXTENSIONS as usize));
        let trailers: String = (0..=MAX_TRAILERS).map(|i| format!("x-t{i}: v\r\n")).collect();
        let trailers = format!("1\r\na\r\n0\r\n{trailers}\r\n");
        for wire in [
            &b"6;\nAAAAAA\r\nhello!\r\n0\r\n\r\n"[..],
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"11111111111111111\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\n\r\n",
            b"5\r\nhello\r\n0\r\nX-A: 1\nX-B: 2\r\n\r\n",
            b"5\r\nhello\r\n0\r\nNoColon\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX-A: 1\r\n folded\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX-A: 1\rX\r\n\r\n",
            ext.as_bytes(),
            trailers.as_bytes(),
        ] {
            for step in [1, 4, 100_000] {
                assert_eq!(
                    decode_all(Framing::Chunked, wire, step),
                    Err(BodyError::Chunk),
                    "{step}: {}",
                    String::from_utf8_lossy(&wire[..wire.len().min(60)])
                );
            }
        }
        // Extension bytes count over the whole body.
        let half = "e".repeat(MAX_CHUNK_EXTENSIONS as usize / 2);
        let wire = format!("1;{half}\r\na\r\n1;{half}\r\nb\r\n0\r\n\r\n");
        assert_eq!(
            decode_all(Framing::Chunked, wire.as_bytes(), 1000),
            Err(BodyError::Chunk)
        );
    }

    #[test]
    fn malformed_or_truncated_chunks_are_errors() {
        assert_eq!(
            decode_all(Framing::Chunked, b"zz\r\nhello\r\n", 100),
            Err(BodyError::Chunk)
        );
        assert_eq!(
            decode_all(Framing::Chunked, b"5\r\nhelloXX0\r\n\r\n", 100),
            Err(BodyError::Chunk)
        );
        assert_eq!(
            decode_all(Framing::Chunked, b"5\r\nhel", 100),
            Err(BodyError::Truncated)
        );
    }

    #[test]
    fn an_until_close_body_ends_with_the_connection() {
        let (body, rest) = decode_all(Framing::UntilClose, b"all of it", 4).unwrap();
        assert_eq!((body.as_slice(), rest.len()), (&b"all of it"[..], 0));
    }

    #[test]
    fn chunk_encoding_round_trips() {
        let mut out = Vec::new();
        put_chunk(&mut out, b"hello");
        put_chunk(&mut out, b"");
        put_chunk(&mut out, &[b'x'; 300]);
        out.extend_from_slice(LAST_CHUNK);
        let (body, _) = decode_all(Framing::Chunked, &out, 9).unwrap();
        assert_eq!(body.len(), 305);
        assert!(out.starts_with(b"5\r\nhello\r\n12c\r\n"));
    }

    #[tokio::test]
    async fn body_pieces_are_framed_copied_or_written_through() {
        for chunked in [false, true] {
            let (mut wire, mut out) = (Vec::new(), Vec::new());
            let big = vec![b'x'; COPY_MAX + 1];
            for piece in [&b"small"[..], b"", &big, b"tail"] {
                put_body(&mut wire, &mut out, piece, chunked).await.unwrap();
            }
            // The large piece went out at once, with everything gathered before it.
            assert!(wire.len() > COPY_MAX && !out.is_empty(), "{chunked}");
            wire.extend_from_slice(&out);
            let framing = if chunked {
                wire.extend_from_slice(LAST_CHUNK);
                Framing::Chunked
            } else {
                Framing::Length(wire.len() as u64)
            };
            let (body, rest) = decode_all(framing, &wire, 4096).unwrap();
            assert_eq!(body.len(), 5 + COPY_MAX + 1 + 4, "{chunked}");
            assert!(body.starts_with(b"small") && body.ends_with(b"xtail") && rest.is_empty());
        }
        let mut out = Vec::new();
        put_length(&mut out, Some(42));
        put_length(&mut out, None);
        assert_eq!(out, b"content-length: 42\r\ntransfer-encoding: chunked\r\n");
    }

    #[test]
    fn the_date_header_is_an_http_date() {
        let mut out = Vec::new();
        put_date(&mut out);
        let line = String::from_utf8(out).unwrap();
        let value = line.strip_prefix("date: ").unwrap().trim_end();
        assert!(httpdate::parse_http_date(value).is_ok(), "{line}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_is_exceeded_only_after_its_limit_without_progress() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut stall = Stall::new(Duration::from_secs(2));
        assert!(!stall.exceeded(&mut cx, false)); // the wait starts
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(!stall.exceeded(&mut cx, false));
        assert!(!stall.exceeded(&mut cx, true)); // progress: the wait ends
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(!stall.exceeded(&mut cx, false)); // a new wait, from now
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(!stall.exceeded(&mut cx, false));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(stall.exceeded(&mut cx, false)); // 2.1 s without progress
        assert_eq!(stall.error("the client sent").kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            stall.error("the client sent").to_string(),
            "the client sent nothing for 2s"
        );
        // `bound` passes results through and turns an expired wait into the operation's error.
        let pending = || Poll::<io::Result<u8>>::Pending;
        assert!(stall.bound(&mut cx, pending(), "the peer did", Err).is_pending());
        assert!(matches!(
            stall.bound(&mut cx, Poll::Ready(Ok(7)), "the peer did", Err),
            Poll::Ready(Ok(7))
        ));
        assert!(stall.bound(&mut cx, pending(), "the peer did", Err).is_pending());
        tokio::time::advance(Duration::from_millis(2100)).await;
        match stall.bound(&mut cx, pending(), "the peer did", Err) {
            Poll::Ready(Err(e)) => assert_eq!(e.to_string(), "the peer did nothing for 2s"),
            other => panic!("expected the timeout, got {other:?}"),
        }
    }
}
