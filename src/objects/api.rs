//! The embedded store's S3 API, served with the `s3s` crate on its own listener
//! (`[storage] listen`, default `127.0.0.1:7475`), path-style.
//!
//! `s3s` speaks the protocol (routing, XML, SigV4 including `aws-chunked` bodies and
//! trailing checksums); spillway supplies:
//! - [`Keys`] (`s3s::auth::S3Auth`): the secret of an access key, from `crate::auth`'s
//!   directory of identities (an inactive key is no key);
//! - [`Policy`] (`s3s::access::S3Access`): each operation's IAM action and resource
//!   ([`iam_of`]) evaluated against the caller's policies by `crate::auth`, as on the main
//!   listener (`[auth] anonymous_actions` apply; `[auth] mode = "none"` makes every caller the
//!   administrator);
//! - [`Objects`] (`s3s::S3`): the operations, over [`Embedded`];
//! - the connection loop ([`serve`]): `Host`/`Origin` checks, SigV2 refused, `x-amz-request-id`,
//!   and one CloudTrail record per call (an intent before a mutation runs).

use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::*;
use s3s::s3_error;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use tokio::sync::watch;

use super::embedded::{self, Embedded, Part, Stat, TempObject};
use super::{ObjectError, ObjectRef};
use crate::audit::{AuditLog, Record, RecordResource, Ticket};
use crate::auth::{Auth, Caller};
use crate::clock::Clock;
use crate::config::{AuthMode, HostPolicy};
use crate::core::iam::{Action, Resource};

/// What the S3 API needs from the server.
#[derive(Clone)]
pub struct ApiContext {
    /// The store served.
    pub store: Embedded,
    /// Authentication and authorization (the main listener's).
    pub auth: Arc<Auth>,
    /// The audit trail (`None`: `[audit] enabled = false`).
    pub audit: Option<Arc<AuditLog>>,
    /// The server's clock.
    pub clock: Clock,
    /// Which `Host` and `Origin` requests may carry.
    pub hosts: HostPolicy,
    /// The region (`GetBucketLocation`, CloudTrail's `awsRegion`).
    pub region: String,
    /// The account (bucket owner, CloudTrail's `recipientAccountId`).
    pub account_id: String,
}

/// An operation's IAM action (`s3:<action>`), whether it only reads, and whether it is an
/// object-level (CloudTrail data) event. The actions are the ones IAM's service authorization
/// reference names for each operation (`HeadObject` needs `s3:GetObject`, `ListObjectsV2`
/// `s3:ListBucket`, `ListBuckets` `s3:ListAllMyBuckets`, the multipart steps `s3:PutObject`);
/// `None` for an operation this store does not implement.
pub fn iam_of(op: &str) -> Option<(&'static str, bool, bool)> {
    Some(match op {
        "ListBuckets" => ("ListAllMyBuckets", true, false),
        "CreateBucket" => ("CreateBucket", false, false),
        "DeleteBucket" => ("DeleteBucket", false, false),
        "HeadBucket" => ("ListBucket", true, false),
        "GetBucketLocation" => ("GetBucketLocation", true, false),
        "ListObjects" | "ListObjectsV2" => ("ListBucket", true, true),
        "GetObject" | "HeadObject" => ("GetObject", true, true),
        "PutObject" | "CreateMultipartUpload" | "UploadPart" | "CompleteMultipartUpload" => ("PutObject", false, true),
        "DeleteObject" | "DeleteObjects" => ("DeleteObject", false, true),
        "AbortMultipartUpload" => ("AbortMultipartUpload", false, true),
        _ => return None,
    })
}

/// The ARN IAM authorizes S3 operations on: `arn:aws:s3:::bucket` or `arn:aws:s3:::bucket/key`.
pub fn s3_arn(bucket: &str, key: Option<&str>) -> String {
    match key {
        Some(k) => format!("arn:aws:s3:::{bucket}/{k}"),
        None => format!("arn:aws:s3:::{bucket}"),
    }
}

/// What the access hook learned about a call, for its audit record.
#[derive(Default)]
struct Seen {
    operation: Option<&'static str>,
    caller: Option<Caller>,
    bucket: Option<String>,
    key: Option<String>,
    ticket: Option<Ticket>,
    record: Option<Record>,
}

/// Shared between the connection loop and the hooks of one request (in its extensions).
#[derive(Clone, Default)]
struct Slot(Arc<Mutex<Seen>>);

/// The address of the client, in the request's extensions.
#[derive(Clone, Copy)]
struct Peer(Option<IpAddr>);

// ---------------------------------------------------------------------------------------------
// authentication and authorization hooks
// ---------------------------------------------------------------------------------------------

/// `S3Auth`: the secret key of an active access key of spillway's IAM.
pub struct Keys(pub Arc<Auth>);

#[async_trait::async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.identities.current().principal(access_key).filter(|p| p.active) {
            Some(p) => Ok(SecretKey::from(p.secret_access_key.clone())),
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
        }
    }
}

/// `S3Access`: the caller's IAM policies on each operation's action and resource.
pub struct Policy(pub ApiContext);

impl Policy {
    fn caller(&self, credentials: Option<&s3s::auth::Credentials>) -> S3Result<Caller> {
        let auth = &self.0.auth;
        match credentials {
            // s3s verified the signature with this key's secret.
            Some(c) => auth
                .identities
                .current()
                .principal(&c.access_key)
                .filter(|p| p.active)
                .map(Caller::Principal)
                .ok_or_else(|| s3_error!(InvalidAccessKeyId)),
            None if auth.mode() == AuthMode::None => Ok(Caller::Unauthenticated),
            None => Ok(Caller::Anonymous),
        }
    }

    fn authorize(
        &self,
        caller: &Caller,
        action: &'static str,
        resource: Resource,
        peer: Option<IpAddr>,
    ) -> S3Result<()> {
        let auth = &self.0.auth;
        let action = Action {
            service: "s3",
            name: action,
        };
        let ctx = auth.context(caller, action, &resource, &[], peer, self.0.clock.system_time());
        auth.authorize(caller, &ctx).map_err(|denied| {
            // An unsigned request refused reads as S3 words it.
            if matches!(caller, Caller::Anonymous) {
                s3_error!(
                    AccessDenied,
                    "Access Denied: sign the request (AWS Signature Version 4)"
                )
            } else {
                S3Error::with_message(S3ErrorCode::AccessDenied, denied.to_string())
            }
        })
    }
}

#[async_trait::async_trait]
impl s3s::access::S3Access for Policy {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        let op = cx.s3_op().name().to_string();
        let (bucket, key) = match cx.s3_path() {
            s3s::path::S3Path::Root => (None, None),
            s3s::path::S3Path::Bucket { bucket } => (Some(bucket.to_string()), None),
            s3s::path::S3Path::Object { bucket, key } => (Some(bucket.to_string()), Some(key.to_string())),
        };
        let caller = self.caller(cx.credentials())?;
        let peer = cx.extensions_mut().get::<Peer>().and_then(|p| p.0);
        let slot = cx.extensions_mut().get::<Slot>().cloned().unwrap_or_default();
        let Some((action, read_only, data)) = iam_of(&op) else {
            return Err(s3_error!(
                NotImplemented,
                "spillway's embedded object store does not implement {op}"
            ));
        };
        let op_static = OPERATIONS.iter().copied().find(|o| *o == op);
        {
            let mut seen = slot.0.lock().unwrap_or_else(|p| p.into_inner());
            seen.operation = op_static;
            seen.caller = Some(caller.clone());
            seen.bucket.clone_from(&bucket);
            seen.key.clone_from(&key);
        }
        // `ExpectedBucketOwner` (the SageMaker SDK sends it): every bucket here is this account's.
        if let Some(owner) = cx.headers().get("x-amz-expected-bucket-owner")
            && owner.as_bytes() != self.0.account_id.as_bytes()
        {
            return Err(s3_error!(AccessDenied, "Access Denied"));
        }
        let resource = match (&bucket, op.as_str()) {
            (None, _) => Resource::Any,
            (Some(b), "DeleteObjects") => Resource::Arn(s3_arn(b, Some("*"))),
            (Some(b), _) => Resource::Arn(s3_arn(b, key.as_deref())),
        };
        self.authorize(&caller, action, resource, peer)?;
        // A mutation's intent is durable before it runs.
        if let Some(log) = &self.0.audit
            && !read_only
        {
            let record = record_of(&self.0, &slot.0.lock().unwrap_or_else(|p| p.into_inner()), peer, data);
            let ticket = log
                .begin_async(&record)
                .await
                .map_err(|e| s3_error!(InternalError, "spillway could not write the audit record: {e}"))?;
            let mut seen = slot.0.lock().unwrap_or_else(|p| p.into_inner());
            seen.ticket = Some(ticket);
            seen.record = Some(record);
        }
        Ok(())
    }

    /// `DeleteObjects` needs `s3:DeleteObject` on every key it names.
    async fn delete_objects(&self, req: &mut S3Request<DeleteObjectsInput>) -> S3Result<()> {
        let caller = self.caller(req.credentials.as_ref())?;
        let peer = req.extensions.get::<Peer>().and_then(|p| p.0);
        for o in &req.input.delete.objects {
            let arn = s3_arn(&req.input.bucket, Some(&o.key));
            self.authorize(&caller, "DeleteObject", Resource::Arn(arn), peer)?;
        }
        Ok(())
    }
}

/// The operations [`iam_of`] knows, as `'static` names for the audit trail.
const OPERATIONS: &[&str] = &[
    "ListBuckets",
    "CreateBucket",
    "DeleteBucket",
    "HeadBucket",
    "GetBucketLocation",
    "ListObjects",
    "ListObjectsV2",
    "GetObject",
    "HeadObject",
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "DeleteObject",
    "DeleteObjects",
    "AbortMultipartUpload",
];

// ---------------------------------------------------------------------------------------------
// audit
// ---------------------------------------------------------------------------------------------

/// The CloudTrail record of a call (`eventSource` `s3.amazonaws.com`; object-level calls are
/// data events, bucket-level ones management events, as CloudTrail classes them).
fn record_of(cx: &ApiContext, seen: &Seen, peer: Option<IpAddr>, data: bool) -> Record {
    let caller = seen.caller.clone().unwrap_or(Caller::Anonymous);
    let operation = seen.operation.unwrap_or("Unknown");
    let mut r = Record::api_call(
        "s3",
        operation,
        cx.clock.now(),
        &cx.region,
        &cx.account_id,
        caller.user_identity(&cx.account_id, None),
    );
    r.read_only = iam_of(operation).is_some_and(|(_, ro, _)| ro);
    if data {
        r.event_category = "Data".into();
        r.management_event = false;
    }
    r.source_ip_address = peer.map_or_else(|| "unknown".into(), |ip| ip.to_string());
    let mut params = serde_json::Map::new();
    if let Some(b) = &seen.bucket {
        params.insert("bucketName".into(), b.clone().into());
        if let Some(k) = &seen.key {
            params.insert("key".into(), crate::audit::bounded(k).into());
            let mut res = RecordResource::of_arn(&s3_arn(b, Some(k)));
            res.account_id.clone_from(&cx.account_id);
            r.resources.push(res);
        }
        let mut res = RecordResource::of_arn(&s3_arn(b, None));
        res.account_id.clone_from(&cx.account_id);
        r.resources.push(res);
    }
    r.request_parameters = Some(serde_json::Value::Object(params));
    r
}

/// The operation a request would have been, for the record of one refused before `s3s`
/// resolved it (a bad signature, a refused `Host`).
pub fn guess_operation(method: &hyper::Method, path: &str, query: &str) -> &'static str {
    use hyper::Method as M;
    let has = |q: &str| query.split('&').any(|p| p == q || p.starts_with(&format!("{q}=")));
    let trimmed = path.trim_start_matches('/');
    let (bucket, key) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    match (bucket.is_empty(), key.is_empty(), method) {
        (true, _, _) => "ListBuckets",
        (false, true, &M::PUT) => "CreateBucket",
        (false, true, &M::DELETE) => "DeleteBucket",
        (false, true, &M::HEAD) => "HeadBucket",
        (false, true, &M::POST) if has("delete") => "DeleteObjects",
        (false, true, &M::POST) => "PostObject",
        (false, true, _) if has("location") => "GetBucketLocation",
        (false, true, _) if has("list-type") => "ListObjectsV2",
        (false, true, _) => "ListObjects",
        (false, false, &M::PUT) if has("uploadId") => "UploadPart",
        (false, false, &M::PUT) => "PutObject",
        (false, false, &M::HEAD) => "HeadObject",
        (false, false, &M::DELETE) if has("uploadId") => "AbortMultipartUpload",
        (false, false, &M::DELETE) => "DeleteObject",
        (false, false, &M::POST) if has("uploads") => "CreateMultipartUpload",
        (false, false, &M::POST) => "CompleteMultipartUpload",
        (false, false, _) => "GetObject",
    }
}

// ---------------------------------------------------------------------------------------------
// the operations
// ---------------------------------------------------------------------------------------------

/// `s3s::S3` over the embedded store.
pub struct Objects(pub ApiContext);

fn object_error(e: ObjectError) -> S3Error {
    match e {
        ObjectError::NotFound { .. } => s3_error!(NoSuchKey, "The specified key does not exist."),
        ObjectError::NoSuchBucket { .. } => s3_error!(NoSuchBucket, "The specified bucket does not exist"),
        ObjectError::TooLarge { limit, .. } => s3_error!(
            EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed object size ({limit} bytes, [storage] max_object_bytes)."
        ),
        ObjectError::Invalid(m) if m == embedded::BUCKET_NOT_EMPTY => {
            S3Error::with_message(S3ErrorCode::BucketNotEmpty, m)
        }
        ObjectError::Invalid(m) if m == embedded::NO_SUCH_UPLOAD => S3Error::with_message(S3ErrorCode::NoSuchUpload, m),
        ObjectError::Invalid(m) if m == embedded::INVALID_PART => S3Error::with_message(S3ErrorCode::InvalidPart, m),
        ObjectError::Invalid(m) if m == embedded::INVALID_PART_ORDER => {
            S3Error::with_message(S3ErrorCode::InvalidPartOrder, m)
        }
        ObjectError::Invalid(m) => S3Error::with_message(S3ErrorCode::InvalidArgument, m),
        ObjectError::Unavailable(m) => {
            tracing::error!(error = %m, "embedded object store");
            s3_error!(InternalError, "We encountered an internal error. Please try again.")
        }
    }
}

fn obj(bucket: &str, key: &str) -> ObjectRef {
    ObjectRef {
        bucket: bucket.to_string(),
        key: key.to_string(),
    }
}

fn etag(stat: &Stat) -> ETag {
    ETag::Strong(stat.meta.etag.trim_matches('"').to_string())
}

/// Reads a request body into a temporary object, checking `Content-MD5` and
/// `x-amz-checksum-crc32` when the client sent them, in a header or in the trailer of an
/// `aws-chunked` body (`BadDigest` otherwise; `s3s` decodes the chunks and hands the trailer
/// over, but does not check it).
async fn receive(
    store: &Embedded,
    bucket: &str,
    body: Option<StreamingBlob>,
    content_md5: Option<&str>,
    crc32: Option<&str>,
    trailer: Option<&s3s::TrailingHeaders>,
) -> S3Result<TempObject> {
    let s = store.clone();
    let b = bucket.to_string();
    let mut temp = embedded::blocking(move || s.temp(&b)).await.map_err(object_error)?;
    let mut hasher = crc32fast::Hasher::new();
    if let Some(mut body) = body {
        let mut buf = BytesMut::new();
        loop {
            let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await;
            let done = next.is_none();
            if let Some(chunk) = next {
                let chunk = chunk.map_err(|e| s3_error!(IncompleteBody, "the request body ended early: {e}"))?;
                hasher.update(&chunk);
                buf.extend_from_slice(&chunk);
            }
            if buf.len() >= 1 << 20 || (done && !buf.is_empty()) {
                let data = buf.split().freeze();
                temp = embedded::blocking(move || {
                    temp.write(&data)?;
                    Ok(temp)
                })
                .await
                .map_err(object_error)?;
            }
            if done {
                break;
            }
        }
    }
    if let Some(want) = content_md5 {
        let got = base64_std(&temp.md5());
        if want.trim() != got {
            return Err(s3_error!(
                BadDigest,
                "The Content-MD5 you specified did not match what we received."
            ));
        }
    }
    let trailed = trailer.and_then(|t| {
        t.read(|h| {
            h.get("x-amz-checksum-crc32")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .flatten()
    });
    if let Some(want) = crc32.map(str::to_string).or(trailed) {
        let got = base64_std(&hasher.finalize().to_be_bytes());
        if want.trim() != got {
            return Err(s3_error!(
                BadDigest,
                "The CRC32 you specified did not match the calculated checksum."
            ));
        }
    }
    Ok(temp)
}

/// Standard base64 with padding (what `Content-MD5` and `x-amz-checksum-*` carry).
fn base64_std(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An object's bytes `[start, end)` from its file, read off the async workers in chunks.
struct FileStream(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>);

impl Stream for FileStream {
    type Item = std::io::Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

fn file_stream(mut file: std::fs::File, start: u64, end: u64) -> FileStream {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = file.seek(SeekFrom::Start(start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut left = end - start;
        while left > 0 {
            let mut buf = vec![0u8; left.min(256 << 10) as usize];
            match file.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.blocking_send(Err(std::io::ErrorKind::UnexpectedEof.into()));
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return; // the client went away
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    FileStream(rx)
}

/// One page of a listing: which keys (by index) and common prefixes, in order, and whether
/// more follow (`next`: the last item returned, from which the next page starts).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// Indexes into the keys listed.
    pub keys: Vec<usize>,
    /// Common prefixes (each ends with the delimiter).
    pub prefixes: Vec<String>,
    /// Set when the listing was cut at `max_keys`: the last key or prefix of this page.
    pub next: Option<String>,
}

/// S3's listing over `keys` (sorted, distinct): the keys after `after` that start with
/// `prefix`, those whose rest holds `delimiter` rolled up into one common prefix each (up to
/// and including the delimiter's first occurrence), at most `max_keys` keys and prefixes
/// together.
pub fn list_page(keys: &[&str], prefix: &str, delimiter: Option<&str>, after: Option<&str>, max_keys: usize) -> Page {
    let mut page = Page::default();
    let delimiter = delimiter.filter(|d| !d.is_empty());
    let mut count = 0;
    for (i, key) in keys.iter().enumerate() {
        if !key.starts_with(prefix) || after.is_some_and(|a| *key <= a) {
            continue;
        }
        let item = match delimiter.and_then(|d| key[prefix.len()..].find(d).map(|at| (d, at))) {
            Some((d, at)) => {
                let cp = &key[..prefix.len() + at + d.len()];
                if after.is_some_and(|a| cp <= a) || page.prefixes.last().is_some_and(|p| p == cp) {
                    continue;
                }
                Err(cp)
            }
            None => Ok(i),
        };
        if count == max_keys {
            page.next = Some(match (page.keys.last(), page.prefixes.last()) {
                // The later of the two is the last item returned.
                (Some(&k), Some(p)) => keys[k].max(p.as_str()).to_string(),
                (Some(&k), None) => keys[k].to_string(),
                (None, Some(p)) => p.clone(),
                (None, None) => after.unwrap_or_default().to_string(),
            });
            return page;
        }
        count += 1;
        match item {
            Ok(i) => page.keys.push(i),
            Err(cp) => page.prefixes.push(cp.to_string()),
        }
    }
    page
}

/// `EncodingType=url`: keys percent-encoded (all but unreserved characters and `/`).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hex_encode(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

impl Objects {
    async fn listing(&self, bucket: &str) -> S3Result<Vec<Stat>> {
        let (s, b) = (self.0.store.clone(), bucket.to_string());
        embedded::blocking(move || s.list(&b)).await.map_err(object_error)
    }

    fn owner(&self) -> Owner {
        Owner {
            display_name: Some("spillway".into()),
            id: Some(self.0.account_id.clone()),
        }
    }

    fn entry(&self, stat: &Stat, encode: bool) -> Object {
        Object {
            key: Some(if encode {
                url_encode(&stat.meta.key)
            } else {
                stat.meta.key.clone()
            }),
            size: Some(stat.size as i64),
            e_tag: Some(etag(stat)),
            last_modified: Some(Timestamp::from(stat.modified)),
            storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
            ..Default::default()
        }
    }
}

fn clamp_max_keys(m: Option<i32>) -> S3Result<usize> {
    match m {
        None => Ok(1000),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must be non-negative")),
        Some(n) => Ok((n as usize).min(1000)),
    }
}

#[async_trait::async_trait]
impl S3 for Objects {
    async fn list_buckets(&self, _req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let s = self.0.store.clone();
        let buckets = embedded::blocking(move || s.list_buckets())
            .await
            .map_err(object_error)?;
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(
                buckets
                    .into_iter()
                    .map(|(name, created)| Bucket {
                        name: Some(name),
                        creation_date: Some(Timestamp::from(created)),
                        bucket_region: Some(self.0.region.clone()),
                    })
                    .collect(),
            ),
            owner: Some(self.owner()),
            ..Default::default()
        }))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket.clone();
        if let Some(c) = req
            .input
            .create_bucket_configuration
            .as_ref()
            .and_then(|c| c.location_constraint.as_ref())
            && c.as_str() != self.0.region
        {
            return Err(s3_error!(
                IllegalLocationConstraintException,
                "The {} location constraint is incompatible for the region specific endpoint this request was sent to ({}).",
                c.as_str(),
                self.0.region
            ));
        }
        let (s, b) = (self.0.store.clone(), bucket.clone());
        let created = embedded::blocking(move || s.create_bucket(&b))
            .await
            .map_err(object_error)?;
        // us-east-1 answers a repeated CreateBucket by the owner with 200; other regions with
        // BucketAlreadyOwnedByYou (AWS's documented behaviour).
        if !created && self.0.region != "us-east-1" {
            return Err(s3_error!(
                BucketAlreadyOwnedByYou,
                "Your previous request to create the named bucket succeeded and you already own it."
            ));
        }
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        let (s, b) = (self.0.store.clone(), req.input.bucket);
        embedded::blocking(move || s.delete_bucket(&b))
            .await
            .map_err(object_error)?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        if !self.0.store.bucket_exists(&req.input.bucket) {
            return Err(s3_error!(NoSuchBucket));
        }
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(self.0.region.clone()),
            ..Default::default()
        }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        if !self.0.store.bucket_exists(&req.input.bucket) {
            return Err(s3_error!(NoSuchBucket, "The specified bucket does not exist"));
        }
        // S3 answers an empty LocationConstraint for us-east-1.
        let location_constraint =
            (self.0.region != "us-east-1").then(|| BucketLocationConstraint::from(self.0.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput { location_constraint }))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let i = req.input;
        let o = obj(&i.bucket, &i.key);
        let temp = receive(
            &self.0.store,
            &i.bucket,
            i.body,
            i.content_md5.as_deref(),
            i.checksum_crc32.as_deref(),
            req.trailing_headers.as_ref(),
        )
        .await?;
        let s = self.0.store.clone();
        let (ct, meta) = (i.content_type, i.metadata.unwrap_or_default());
        let stat = embedded::blocking(move || s.commit(temp, &o, ct, meta, None))
            .await
            .map_err(object_error)?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&stat)),
            checksum_crc32: i.checksum_crc32,
            size: Some(stat.size as i64),
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let i = req.input;
        if i.part_number.is_some() {
            return Err(s3_error!(NotImplemented, "GetObject by partNumber is not implemented"));
        }
        let (s, o) = (self.0.store.clone(), obj(&i.bucket, &i.key));
        let (file, stat) = embedded::blocking(move || s.open_object(&o))
            .await
            .map_err(object_error)?;
        let (start, end, content_range) = match &i.range {
            None => (0, stat.size, None),
            Some(r) => {
                let range = r
                    .check(stat.size)
                    .map_err(|_| s3_error!(InvalidRange, "The requested range is not satisfiable"))?;
                let cr = format!("bytes {}-{}/{}", range.start, range.end.saturating_sub(1), stat.size);
                (range.start, range.end, Some(cr))
            }
        };
        let partial = content_range.is_some();
        let output = GetObjectOutput {
            body: Some(StreamingBlob::wrap(file_stream(file, start, end))),
            content_length: Some((end - start) as i64),
            content_range,
            content_type: stat.meta.content_type.clone(),
            e_tag: Some(etag(&stat)),
            last_modified: Some(Timestamp::from(stat.modified)),
            metadata: (!stat.meta.metadata.is_empty()).then(|| stat.meta.metadata.clone()),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        };
        let mut resp = S3Response::new(output);
        if partial {
            resp.status = Some(StatusCode::PARTIAL_CONTENT);
        }
        Ok(resp)
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let (s, o) = (self.0.store.clone(), obj(&req.input.bucket, &req.input.key));
        let stat = embedded::blocking(move || s.open_object(&o).map(|(_, st)| st))
            .await
            .map_err(object_error)?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(stat.size as i64),
            content_type: stat.meta.content_type.clone(),
            e_tag: Some(etag(&stat)),
            last_modified: Some(Timestamp::from(stat.modified)),
            metadata: (!stat.meta.metadata.is_empty()).then(|| stat.meta.metadata.clone()),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let (s, o) = (self.0.store.clone(), obj(&req.input.bucket, &req.input.key));
        embedded::blocking(move || s.delete(&o)).await.map_err(object_error)?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let i = req.input;
        if !self.0.store.bucket_exists(&i.bucket) {
            return Err(s3_error!(NoSuchBucket, "The specified bucket does not exist"));
        }
        let quiet = i.delete.quiet.unwrap_or(false);
        let (mut deleted, mut errors) = (vec![], vec![]);
        for o in i.delete.objects {
            let (s, r) = (self.0.store.clone(), obj(&i.bucket, &o.key));
            match embedded::blocking(move || s.delete(&r)).await {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject {
                    key: Some(o.key),
                    ..Default::default()
                }),
                Err(e) => {
                    let e = object_error(e);
                    errors.push(Error {
                        code: Some(e.code().as_str().to_string()),
                        key: Some(o.key),
                        message: e.message().map(str::to_string),
                        version_id: None,
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = req.input;
        let max_keys = clamp_max_keys(i.max_keys)?;
        let token = match &i.continuation_token {
            None => None,
            Some(t) => Some(
                hex_decode(t)
                    .ok_or_else(|| s3_error!(InvalidArgument, "The continuation token provided is incorrect"))?,
            ),
        };
        let after = token.clone().or_else(|| i.start_after.clone());
        let stats = self.listing(&i.bucket).await?;
        let keys: Vec<&str> = stats.iter().map(|s| s.meta.key.as_str()).collect();
        let prefix = i.prefix.clone().unwrap_or_default();
        let page = list_page(&keys, &prefix, i.delimiter.as_deref(), after.as_deref(), max_keys);
        let encode = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == "url");
        let enc = |s: &str| if encode { url_encode(s) } else { s.to_string() };
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket.clone()),
            prefix: Some(enc(&prefix)),
            max_keys: Some(max_keys as i32),
            key_count: Some((page.keys.len() + page.prefixes.len()) as i32),
            continuation_token: i.continuation_token.clone(),
            is_truncated: Some(page.next.is_some()),
            next_continuation_token: page.next.as_deref().map(hex_encode),
            contents: Some(page.keys.iter().map(|&k| self.entry(&stats[k], encode)).collect()),
            common_prefixes: Some(
                page.prefixes
                    .iter()
                    .map(|p| CommonPrefix { prefix: Some(enc(p)) })
                    .collect(),
            ),
            delimiter: i.delimiter.as_deref().map(enc),
            encoding_type: i.encoding_type.clone(),
            start_after: i.start_after.as_deref().map(enc),
            ..Default::default()
        }))
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let i = req.input;
        let max_keys = clamp_max_keys(i.max_keys)?;
        let stats = self.listing(&i.bucket).await?;
        let keys: Vec<&str> = stats.iter().map(|s| s.meta.key.as_str()).collect();
        let prefix = i.prefix.clone().unwrap_or_default();
        let page = list_page(&keys, &prefix, i.delimiter.as_deref(), i.marker.as_deref(), max_keys);
        let encode = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == "url");
        let enc = |s: &str| if encode { url_encode(s) } else { s.to_string() };
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket.clone()),
            prefix: Some(enc(&prefix)),
            marker: Some(enc(i.marker.as_deref().unwrap_or_default())),
            max_keys: Some(max_keys as i32),
            is_truncated: Some(page.next.is_some()),
            // S3 sends NextMarker only with a delimiter; clients use the last key otherwise.
            next_marker: page.next.as_deref().filter(|_| i.delimiter.is_some()).map(enc),
            contents: Some(page.keys.iter().map(|&k| self.entry(&stats[k], encode)).collect()),
            common_prefixes: Some(
                page.prefixes
                    .iter()
                    .map(|p| CommonPrefix { prefix: Some(enc(p)) })
                    .collect(),
            ),
            delimiter: i.delimiter.as_deref().map(enc),
            encoding_type: i.encoding_type.clone(),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let i = req.input;
        let (s, o) = (self.0.store.clone(), obj(&i.bucket, &i.key));
        let (ct, meta) = (i.content_type, i.metadata.unwrap_or_default());
        let id = embedded::blocking(move || s.create_upload(&o, ct, meta))
            .await
            .map_err(object_error)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let i = req.input;
        let temp = receive(
            &self.0.store,
            &i.bucket,
            i.body,
            i.content_md5.as_deref(),
            i.checksum_crc32.as_deref(),
            req.trailing_headers.as_ref(),
        )
        .await?;
        let number = u32::try_from(i.part_number).map_err(|_| {
            s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            )
        })?;
        let (s, o, id) = (self.0.store.clone(), obj(&i.bucket, &i.key), i.upload_id);
        let tag = embedded::blocking(move || s.commit_part(temp, &o, &id, number))
            .await
            .map_err(object_error)?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(tag.trim_matches('"').to_string())),
            checksum_crc32: i.checksum_crc32,
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let i = req.input;
        let mut parts = vec![];
        for p in i.multipart_upload.and_then(|m| m.parts).unwrap_or_default() {
            let (Some(n), Some(tag)) = (p.part_number, p.e_tag) else {
                return Err(s3_error!(MalformedXML, "each Part needs a PartNumber and an ETag"));
            };
            parts.push(Part {
                number: u32::try_from(n).map_err(|_| s3_error!(InvalidPart))?,
                etag: format!("\"{}\"", tag.value()),
            });
        }
        let (s, o, id) = (self.0.store.clone(), obj(&i.bucket, &i.key), i.upload_id);
        let stat = embedded::blocking(move || s.complete_upload(&o, &id, &parts))
            .await
            .map_err(object_error)?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            e_tag: Some(etag(&stat)),
            location: Some(format!("/{}/{}", i.bucket, i.key)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = req.input;
        let (s, o, id) = (self.0.store.clone(), obj(&i.bucket, &i.key), i.upload_id);
        embedded::blocking(move || s.abort_upload(&o, &id))
            .await
            .map_err(object_error)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }
}

// ---------------------------------------------------------------------------------------------
// the listener
// ---------------------------------------------------------------------------------------------

/// The running S3 API listener.
pub struct StorageServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl StorageServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish for up to `grace`, then closes.
    /// `false` when connections were still open at the end.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let _ = self.stop.send(true);
        tokio::time::timeout(grace, self.task).await.is_ok()
    }
}

/// A plain S3 error answer for refusals made before `s3s` sees the request.
fn refusal(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response<s3s::Body> {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message><RequestId>{request_id}</RequestId></Error>",
        esc(message)
    );
    let mut r = Response::new(s3s::Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    r
}

/// The most client connections the S3 API listener holds at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// Starts serving the S3 API on `listener`: HTTP/1.1, request heads read within 30 s (hyper's
/// `header_read_timeout`), at most [`MAX_CONNECTIONS`] connections.
pub fn serve(listener: tokio::net::TcpListener, cx: ApiContext) -> std::io::Result<StorageServer> {
    let addr = listener.local_addr()?;
    let mut builder = s3s::service::S3ServiceBuilder::new(Objects(cx.clone()));
    builder.set_auth(Keys(cx.auth.clone()));
    builder.set_access(Policy(cx.clone()));
    let service = builder.build();
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                accepted = listener.accept() => {
                    let (socket, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "storage listener: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // Beyond MAX_CONNECTIONS a new connection is closed at once: clients
                    // cannot exhaust the server's descriptors through this listener.
                    if connections.len() >= MAX_CONNECTIONS {
                        tracing::warn!(%peer, limit = MAX_CONNECTIONS, "storage listener: too many connections; closed a new one");
                        drop(socket);
                        continue;
                    }
                    let _ = socket.set_nodelay(true);
                    let (service, cx, mut stopped) = (service.clone(), cx.clone(), stopped.clone());
                    connections.spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let (service, cx) = (service.clone(), cx.clone());
                            // Its own task: a client that goes away mid-request does not cut the
                            // call short of its audit record (a mutation's intent is completed).
                            let call = tokio::spawn(async move { handle(&service, &cx, req, peer.ip()).await });
                            async move {
                                Ok::<_, std::convert::Infallible>(call.await.unwrap_or_else(|e| {
                                    tracing::error!(error = %e, "storage listener: request task failed");
                                    refusal(
                                        StatusCode::INTERNAL_SERVER_ERROR,
                                        "InternalError",
                                        "We encountered an internal error. Please try again.",
                                        "",
                                    )
                                }))
                            }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(Duration::from_secs(30))
                            .serve_connection(TokioIo::new(socket), svc);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = stopped.changed() => {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.await;
                            }
                        }
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        while connections.join_next().await.is_some() {}
    });
    Ok(StorageServer { addr, stop, task })
}

/// One request: the checks before `s3s`, `s3s` itself, the request id and the audit record.
async fn handle(
    service: &s3s::service::S3Service,
    cx: &ApiContext,
    mut req: Request<Incoming>,
    peer: IpAddr,
) -> Response<s3s::Body> {
    let request_id = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let header = |name: &str| req.headers().get(name).map(|v| v.as_bytes().to_vec());
    let (host, origin) = (header("host"), header("origin"));
    let user_agent = header("user-agent").map(|v| crate::audit::bounded(&String::from_utf8_lossy(&v)));
    let presented = header("authorization").and_then(|v| crate::auth::sigv4::presented_key_id(&v).map(str::to_string));
    let mutation = !matches!(method, hyper::Method::GET | hyper::Method::HEAD);
    let refused = if let Err(why) = cx.hosts.check(host.as_deref(), origin.as_deref(), mutation) {
        Some((StatusCode::FORBIDDEN, "AccessDenied", why))
    } else if header("authorization").is_some_and(|a| a.starts_with(b"AWS "))
        || query.split('&').any(|p| p.starts_with("Signature="))
    {
        Some((
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "spillway accepts AWS Signature Version 4 only (AWS4-HMAC-SHA256); this request is signed with Signature Version 2".into(),
        ))
    } else if cx.auth.mode() == AuthMode::None {
        strip_signature(&mut req)
    } else {
        None
    };
    let slot = Slot::default();
    let mut resp = match refused {
        Some((status, code, message)) => refusal(status, code, &message, &request_id),
        None => {
            req.extensions_mut().insert(slot.clone());
            req.extensions_mut().insert(Peer(Some(peer)));
            let req = req.map(s3s::Body::from);
            match service.call(req).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = ?e, "storage listener: request failed");
                    refusal(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalError",
                        "We encountered an internal error. Please try again.",
                        &request_id,
                    )
                }
            }
        }
    };
    if let Ok(v) = hyper::header::HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-amz-request-id", v);
    }
    let status = resp.status();
    // The error's code and message for the record: S3 errors are small XML documents.
    let (mut resp, error) = if status.is_client_error() || status.is_server_error() {
        let (parts, body) = resp.into_parts();
        let bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let text = String::from_utf8_lossy(&bytes);
        let tag = |t: &str| {
            let open = format!("<{t}>");
            let start = text.find(&open)? + open.len();
            let end = text[start..].find(&format!("</{t}>"))? + start;
            Some(text[start..end].to_string())
        };
        let code = tag("Code").unwrap_or_else(|| match status {
            StatusCode::NOT_FOUND => "NotFound".into(),
            StatusCode::FORBIDDEN => "AccessDenied".into(),
            s => s.canonical_reason().unwrap_or("Error").replace(' ', ""),
        });
        let message = tag("Message").unwrap_or_default();
        (
            Response::from_parts(parts, s3s::Body::from(bytes)),
            Some((code, message)),
        )
    } else {
        (resp, None)
    };
    if let Some(log) = &cx.audit {
        let mut seen = std::mem::take(&mut *slot.0.lock().unwrap_or_else(|p| p.into_inner()));
        let known = seen.caller.is_some();
        if !known {
            // Refused before the access hook: who it was is not known.
            if cx.auth.refusals.take(Some(peer), cx.clock.now() as u64).is_err() {
                return resp;
            }
            seen.operation = Some(guess_operation(&method, &path, &query));
            let trimmed = path.trim_start_matches('/');
            let (b, k) = trimmed.split_once('/').unwrap_or((trimmed, ""));
            seen.bucket = (!b.is_empty()).then(|| b.to_string());
            seen.key = (!k.is_empty()).then(|| k.to_string());
        }
        let data = iam_of(seen.operation.unwrap_or("")).is_some_and(|(_, _, d)| d);
        let mut record = seen
            .record
            .take()
            .unwrap_or_else(|| record_of(cx, &seen, Some(peer), data));
        if !known {
            record.user_identity = Caller::Anonymous.user_identity(&cx.account_id, presented.as_deref());
        }
        record.request_id.clone_from(&request_id);
        record.user_agent = user_agent.unwrap_or_default();
        if let Some((code, message)) = error {
            record.error_code = Some(code);
            record.error_message = Some(message);
        }
        let written = match seen.ticket {
            Some(t) => log.complete_async(t, &record).await,
            None => log.append_async(&record).await,
        };
        if let Err(e) = written {
            tracing::error!(error = %e, "audit record of an S3 call not written");
            resp = refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &format!("spillway could not write the audit record of this call: {e}"),
                &request_id,
            );
        }
    }
    resp
}

/// `[auth] mode = "none"`: every caller is the administrator, whatever it signed with, as on
/// the main listener. The signature is taken off the request, so `s3s` sees an unsigned one;
/// a body signed chunk by chunk (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`) cannot be read without
/// its key and is refused (boto3 never sends one; it sends unsigned trailers over TLS only).
fn strip_signature(req: &mut Request<Incoming>) -> Option<(StatusCode, &'static str, String)> {
    if req
        .headers()
        .get("x-amz-content-sha256")
        .is_some_and(|v| v.as_bytes().starts_with(b"STREAMING-AWS4-"))
    {
        return Some((
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "With [auth] mode = \"none\", bodies signed chunk by chunk (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) are not accepted; send an unsigned or whole-body-signed payload".into(),
        ));
    }
    req.headers_mut().remove(hyper::header::AUTHORIZATION);
    if let Some(q) = req.uri().query()
        && q.contains("X-Amz-")
    {
        let kept: Vec<&str> = q
            .split('&')
            .filter(|p| {
                ![
                    "X-Amz-Algorithm",
                    "X-Amz-Credential",
                    "X-Amz-Date",
                    "X-Amz-Expires",
                    "X-Amz-SignedHeaders",
                    "X-Amz-Signature",
                    "X-Amz-Security-Token",
                ]
                .iter()
                .any(|n| p.split('=').next() == Some(n))
            })
            .collect();
        let pq = if kept.is_empty() {
            req.uri().path().to_string()
        } else {
            format!("{}?{}", req.uri().path(), kept.join("&"))
        };
        if let Ok(uri) = pq.parse() {
            *req.uri_mut() = uri;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The obvious listing: every item (key or rolled-up prefix) in order, deduplicated, then cut.
    fn reference(
        keys: &[&str],
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max: usize,
    ) -> (Vec<String>, bool) {
        let mut items: Vec<String> = vec![];
        for k in keys {
            if !k.starts_with(prefix) {
                continue;
            }
            let item = match delimiter
                .filter(|d| !d.is_empty())
                .and_then(|d| k[prefix.len()..].find(d).map(|at| (d, at)))
            {
                Some((d, at)) => k[..prefix.len() + at + d.len()].to_string(),
                None => k.to_string(),
            };
            if after.is_some_and(|a| item.as_str() <= a) {
                continue;
            }
            if items.last() != Some(&item) {
                items.push(item);
            }
        }
        let more = items.len() > max;
        items.truncate(max);
        (items, more)
    }

    #[test]
    fn listing_rolls_up_prefixes_and_pages() {
        let keys = ["a/1", "a/2", "b", "c/x/1", "c/y"];
        let p = list_page(&keys, "", Some("/"), None, 1000);
        assert_eq!(p.keys, [2]);
        assert_eq!(p.prefixes, ["a/", "c/"]);
        assert_eq!(p.next, None);
        let p = list_page(&keys, "c/", Some("/"), None, 1);
        assert_eq!(p.prefixes, ["c/x/"]);
        assert_eq!(p.next.as_deref(), Some("c/x/"));
        let p = list_page(&keys, "c/", Some("/"), Some("c/x/"), 1);
        assert_eq!(p.keys, [4]);
        assert_eq!(p.next, None);
    }

    #[test]
    fn guesses_and_iam_actions() {
        use hyper::Method;
        assert_eq!(guess_operation(&Method::GET, "/", ""), "ListBuckets");
        assert_eq!(
            guess_operation(&Method::GET, "/b", "list-type=2&prefix=x"),
            "ListObjectsV2"
        );
        assert_eq!(guess_operation(&Method::PUT, "/b/k/x", ""), "PutObject");
        assert_eq!(
            guess_operation(&Method::PUT, "/b/k", "partNumber=1&uploadId=x"),
            "UploadPart"
        );
        for op in OPERATIONS {
            assert!(iam_of(op).is_some(), "{op}");
        }
        assert_eq!(iam_of("HeadObject"), Some(("GetObject", true, true)));
        assert_eq!(iam_of("CopyObject"), None);
        assert_eq!(base64_std(b"hello"), "aGVsbG8=");
        assert_eq!(base64_std(b""), "");
        assert_eq!(base64_std(&[0xff, 0xfe]), "//4=");
        assert_eq!(hex_decode(&hex_encode("a/é")).as_deref(), Some("a/é"));
        assert_eq!(hex_decode("zz"), None);
        assert_eq!(url_encode("a b+c/é"), "a%20b%2Bc/%C3%A9");
        assert_eq!(
            RecordResource::of_arn(&s3_arn("b", Some("k/x"))).resource_type,
            "AWS::S3::Object"
        );
        assert_eq!(
            RecordResource::of_arn(&s3_arn("b", None)).resource_type,
            "AWS::S3::Bucket"
        );
    }

    proptest! {
        /// Pages agree with the obvious listing, and following `next` lists everything once.
        #[test]
        fn pages_agree_with_the_reference(
            mut keys in proptest::collection::vec("[ab/]{1,5}", 0..12),
            prefix in "[ab/]{0,2}",
            delimiter in proptest::option::of("/|b"),
            max in 1usize..4,
        ) {
            keys.sort();
            keys.dedup();
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            let (mut want, _) = reference(&refs, &prefix, delimiter.as_deref(), None, usize::MAX);
            want.sort();
            let mut got: Vec<String> = vec![];
            let mut after: Option<String> = None;
            for _ in 0..100 {
                let page = list_page(&refs, &prefix, delimiter.as_deref(), after.as_deref(), max);
                let (expect, more) = reference(&refs, &prefix, delimiter.as_deref(), after.as_deref(), max);
                let mut expect = expect;
                expect.sort();
                let mut items: Vec<String> = page.keys.iter().map(|&i| keys[i].clone()).chain(page.prefixes.iter().cloned()).collect();
                items.sort();
                prop_assert_eq!(&items, &expect);
                prop_assert_eq!(page.next.is_some(), more);
                got.extend(items);
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            prop_assert_eq!(got, want);
        }
    }
}
