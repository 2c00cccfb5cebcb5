//! Invocations on connections served by hyper (those the fast path handed over, and every
//! connection when `[router] fast_path = false`): the same [`RuntimeOp`], the same header
//! reading and the same answer heads as the fast path, with hyper doing the HTTP/1.1.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::http::request::Parts;
use axum::response::Response;
use bytes::Bytes;
use http_body::Body as _;

use super::DataPlane;
use super::eventstream::EventStream;
use super::h1;
use super::head::{AnswerHead, RequestHeaders};
use super::invoke::{Call, Payload, Reply, Signed, invoke_model};
use super::op::{Mode, RuntimeOp};
use super::request_id::RequestId;
use crate::error::ApiError;

/// A hyper request body as a [`Payload`]. A client that sends nothing of it for the client
/// timeout fails the request as the client's error.
struct HyperPayload {
    body: Body,
    stall: h1::Stall,
}

impl Payload for HyperPayload {
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let r = self.poll_body(cx);
        self.stall.bound(cx, r, "the client sent", |e| Some(Err(e)))
    }
}

impl HyperPayload {
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            return match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => Poll::Ready(None),
                Some(Err(e)) => Poll::Ready(Some(Err(io::Error::other(e)))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => Poll::Ready(Some(Ok(data))),
                    Err(_) => continue, // trailers: not forwarded
                },
            };
        }
    }
}

/// Serves `op`, read by hyper with the head `parts` and `body`, from `peer`.
pub async fn invoke(
    dp: &DataPlane,
    op: RuntimeOp<'_>,
    parts: &Parts,
    body: Body,
    peer: Option<std::net::IpAddr>,
) -> Response {
    let headers = &parts.headers;
    let call = Call {
        signed: Signed {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect(),
            peer,
        },
        op,
        headers: RequestHeaders::read(headers.iter().map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))),
        length: body.size_hint().exact(),
        request_id: dp.request_ids.next(),
    };
    let mut payload = HyperPayload {
        body,
        stall: h1::Stall::new(dp.router.client_timeout()),
    };
    let answer = match invoke_model(dp, &call, &mut payload).await {
        Ok(Reply::Model(a)) => a,
        Ok(Reply::Accepted(a)) => {
            return AnswerHead::accepted(&call.request_id, &a.output_location, &a.failure_location)
                .response(Body::from(a.body.clone()));
        }
        Err(e) => return error(&e, &call.request_id),
    };
    let head = answer.head(&op, &call.request_id);
    let head = head.response(());
    let body = match op.mode() {
        Mode::Plain | Mode::Async => Body::new(answer.body),
        Mode::EventStream => Body::new(EventStream::new(answer.body)),
    };
    head.map(|()| body)
}

/// An AWS error as hyper sends it, answering the request `request_id`.
pub fn error(e: &ApiError, request_id: &RequestId) -> Response {
    AnswerHead::error(e, request_id).response(Body::from(e.body()))
}

/// The answer to an invocation path asked with another method than `POST`.
pub fn method_not_allowed(request_id: &RequestId) -> Response {
    AnswerHead::method_not_allowed(request_id).response(Body::empty())
}
