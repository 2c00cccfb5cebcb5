//! AWS event-stream framing for `InvokeEndpointWithResponseStream`: each piece of the model's
//! answer becomes a `PayloadPart` message; a model that breaks off its answer ends the stream
//! with a `ModelStreamError` exception message.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;

/// Wraps each chunk of the model's response in an event-stream `PayloadPart` message; a failure
/// mid-stream becomes a `ModelStreamError` exception message.
pub struct EventStream<B> {
    inner: B,
    done: bool,
}

impl<B> EventStream<B> {
    /// Frames `inner`, a model's answer.
    pub fn new(inner: B) -> Self {
        Self { inner, done: false }
    }
}

impl<B> http_body::Body for EventStream<B>
where
    B: http_body::Body<Data = Bytes, Error = std::io::Error> + Unpin,
{
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            return match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => {
                    self.done = true;
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => Poll::Ready(Some(Ok(Frame::data(payload_part(&data))))),
                    Err(_) => continue, // trailers: nothing to forward
                },
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    Poll::Ready(Some(Ok(Frame::data(model_stream_error(&e.to_string())))))
                }
            };
        }
    }
}

/// One AWS event-stream message: prelude (total length, headers length, CRC32), string
/// headers, payload, message CRC32.
pub fn event_message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut h = Vec::new();
    for (k, v) in headers {
        h.push(k.len() as u8);
        h.extend_from_slice(k.as_bytes());
        h.push(7); // string
        h.extend_from_slice(&(v.len() as u16).to_be_bytes());
        h.extend_from_slice(v.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut buf = Vec::with_capacity(total);
    buf.extend_from_slice(&(total as u32).to_be_bytes());
    buf.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&prelude_crc.to_be_bytes());
    buf.extend_from_slice(&h);
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_be_bytes());
    Bytes::from(buf)
}

/// One `PayloadPart` event carrying `data`.
pub fn payload_part(data: &[u8]) -> Bytes {
    event_message(
        &[
            (":event-type", "PayloadPart"),
            (":content-type", "application/octet-stream"),
            (":message-type", "event"),
        ],
        data,
    )
}

/// The `ModelStreamError` exception event that ends a stream the model broke off.
pub fn model_stream_error(message: &str) -> Bytes {
    let body = serde_json::json!({ "Message": message, "ErrorCode": "ModelStreamError" }).to_string();
    event_message(
        &[
            (":exception-type", "ModelStreamError"),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        body.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_messages_have_valid_lengths_and_checksums() {
        let m = payload_part(b"hello");
        let total = u32::from_be_bytes(m[0..4].try_into().unwrap()) as usize;
        let headers = u32::from_be_bytes(m[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, m.len());
        assert_eq!(
            u32::from_be_bytes(m[8..12].try_into().unwrap()),
            crc32fast::hash(&m[0..8])
        );
        assert_eq!(&m[12 + headers..total - 4], b"hello");
        assert_eq!(
            u32::from_be_bytes(m[total - 4..].try_into().unwrap()),
            crc32fast::hash(&m[..total - 4])
        );
        // First header: ":event-type" as a string of "PayloadPart".
        assert_eq!(m[12] as usize, ":event-type".len());
        assert_eq!(&m[13..24], b":event-type");
        assert_eq!(m[24], 7);
    }
}
