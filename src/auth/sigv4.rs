//! AWS Signature Version 4: verifying requests, signing them (the CLI), cached signing keys.
//!
//! This is spillway's security boundary. Verification is split in two steps so that the body
//! need not be read before the cheap checks are done:
//!
//! 1. [`authenticate`] parses the `Authorization` header (or reports it missing), checks the
//!    algorithm, the credential scope (date, region, service, `aws4_request`), that the signed
//!    headers include `host` and the date header, and that the request's time is within five
//!    minutes of `now` (both directions). It returns a [`Presented`] credential: the access key
//!    id to look up, the session token if any, and what to do with the body ([`PayloadHash`]).
//! 2. [`Presented::verify`] recomputes the canonical request and the signature with the key's
//!    secret and the body's SHA-256, and compares in constant time.
//!
//! # Canonicalisation (what AWS and botocore do)
//!
//! * **URI**: the path exactly as it came off the wire (never decoded), with dot segments and
//!   empty segments removed (`//a/./b/../c` is `/a/c`, as botocore's `normalize_url_path` and
//!   AWS's `normalize-path` vectors do), then every byte outside `A-Z a-z 0-9 - _ . ~ /`
//!   percent-encoded. A `%` of the wire path thus becomes `%25`: the "double encoding" AWS uses
//!   for every service but S3. A sagemaker-runtime path `/endpoints/a%2Fb/invocations` (botocore
//!   quotes a `/` inside a label as `%2F`) is signed as `/endpoints/a%252Fb/invocations`.
//!   **The router must route on the same normalised path** (or refuse paths with `.`, `..` or
//!   empty segments): a signature over `/a/b` also verifies `/a/x/../b`.
//! * **Query**: split on `&` (empty pieces skipped), each piece at its first `=` (a piece without
//!   one has an empty value), each name and value percent-decoded and re-encoded with AWS's
//!   unreserved set (a space is `%20`; a literal `+` is `%2B`: SDKs never send `+` for a space),
//!   sorted by name then value, joined with `&`. For botocore's queries, which are already in
//!   that encoding, this is the raw query sorted.
//! * **Headers**: the names of `SignedHeaders`, in the order the client listed them (conforming
//!   signers sort them; the list is inside the signature, so any other order only fails), each
//!   `name:value` with every value of that name (case-insensitive) trimmed, runs of whitespace
//!   collapsed to one space, and joined with `,` in the order they arrived. Header bytes are read
//!   as ISO-8859-1 and hashed as UTF-8, as botocore (Python's `http.client` sends `str` headers
//!   as Latin-1) and AWS do. A signed header the request lacks is canonicalised with an empty
//!   value (and so fails unless it was signed empty).
//! * **Payload**: the `x-amz-content-sha256` header's value when present (`UNSIGNED-PAYLOAD` or
//!   a hex SHA-256 the body must match), else the body's hex SHA-256.
//! * **Date**: `x-amz-date` (ISO-8601 basic, `20260101T000000Z`), or when absent `Date`
//!   (RFC 7231 / RFC 2822: `Mon, 30 Nov 2026 07:20:31 GMT`, and botocore's `-0000` form).
//!
//! # What is refused, and why
//!
//! * Presigned URLs (`X-Amz-Algorithm` in the query): no SDK uses them for these APIs; refused
//!   with [`AuthError::Incomplete`] naming header authentication as the way.
//! * `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` (and the other `STREAMING-*` chunk signatures): only
//!   S3 uploads send them; refused with [`AuthError::Incomplete`].
//! * An `x-amz-security-token` header that is not among the signed headers (every SDK signs it;
//!   AWS lets some services take it unsigned, spillway does not).
//! * A signature whose timestamp is more than 5 minutes from `now`, either way.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::core::time::{civil_from_days, days_from_civil};
use crate::error::{ApiError, AuthFailure, AuthFamily};

type HmacSha256 = Hmac<Sha256>;

/// The only algorithm spillway accepts.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The payload hash of a request whose body is not signed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// How far a request's time may be from the server's, either way.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// The parts of an HTTP request SigV4 covers, as they came off the wire (path and query NOT decoded).
/// Its `Debug` shows header names only (values may hold a session token).
#[derive(Clone, Copy)]
pub struct RequestParts<'a> {
    /// The method, e.g. `POST`.
    pub method: &'a str,
    /// The path as sent, still percent-encoded (`/endpoints/a%2Fb/invocations`).
    pub path: &'a str,
    /// The query as sent, without the `?` (empty when there is none).
    pub query: &'a str,
    /// Every header as received: names in any case, duplicates allowed, in arrival order.
    pub headers: &'a [(&'a str, &'a [u8])],
}

impl std::fmt::Debug for RequestParts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestParts")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field(
                "header_names",
                &self.headers.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The access key id an `Authorization` value presents (`Credential=<id>/…`), for the audit
/// record of a refused request; `None` if there is none of plausible form. Never a secret: a
/// request carries none.
pub fn presented_key_id(authorization: &[u8]) -> Option<&str> {
    let auth = std::str::from_utf8(authorization).ok()?;
    let rest = &auth[auth.find("Credential=")? + "Credential=".len()..];
    rest.split('/')
        .next()
        .filter(|k| !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Whether a wire path has `.`, `..` or empty segments (`//`), which SigV4 normalises away:
/// a signature over `/a/b` also verifies `/a/x/../b`. A router that does not route on the
/// normalised path should refuse such paths (no SDK sends them to these APIs).
pub fn path_has_dot_or_empty_segments(path: &str) -> bool {
    if path.is_empty() || path == "/" {
        return false;
    }
    let inner = path.strip_prefix('/').unwrap_or(path);
    let n = inner.split('/').count();
    inner
        .split('/')
        .enumerate()
        .any(|(i, s)| s == "." || s == ".." || (s.is_empty() && i + 1 < n))
}

/// What the caller must do with the body before [`Presented::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadHash<'a> {
    /// `x-amz-content-sha256: UNSIGNED-PAYLOAD`: the body is not signed; pass
    /// [`UNSIGNED_PAYLOAD`] (any value is ignored).
    Unsigned,
    /// `x-amz-content-sha256` declared this hex SHA-256: hash the body and pass the result; it
    /// must equal the declared one.
    Declared(&'a str),
    /// No declaration: hash the body (the empty body too) and pass the hex SHA-256.
    Compute,
}

/// A refusal of authentication. Its `Display` is AWS's message for it; [`AuthError::to_api`]
/// turns it into the AWS error of a protocol family (through the table in `src/error.rs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("Missing Authentication Token")]
    Missing,
    /// A malformed `Authorization` header or date, or something spillway does not accept
    /// (presigned URLs, streaming payloads); the message says which rule.
    #[error("{0}")]
    Incomplete(String),
    /// No active key with this id (the caller decides; also for an inactive key, as AWS).
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    /// The signature does not match; carries what the server computed, as AWS's hint does.
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.\n\nThe Canonical String for this request should have been\n'{canonical_request}'\n\nThe String-to-Sign should have been\n'{string_to_sign}'\n"
    )]
    Signature {
        /// The canonical request the server computed.
        canonical_request: String,
        /// The string to sign the server computed.
        string_to_sign: String,
    },
    /// The request's time is more than 5 minutes from the server's; the message is AWS's
    /// `Signature expired: …` / `Signature not yet current: …`.
    #[error("{0}")]
    Expired(String),
    /// The credential scope names another region, service, terminator or day.
    #[error("{0}")]
    WrongScope(String),
}

impl AuthError {
    /// Which row of the error table this refusal is.
    pub fn failure(&self) -> AuthFailure {
        match self {
            Self::Missing => AuthFailure::MissingToken,
            Self::Incomplete(_) => AuthFailure::Incomplete,
            Self::UnknownKey => AuthFailure::UnknownKey,
            Self::Signature { .. } | Self::Expired(_) | Self::WrongScope(_) => AuthFailure::BadSignature,
        }
    }

    /// The AWS error answered for this refusal in a protocol family.
    pub fn to_api(&self, family: AuthFamily) -> ApiError {
        ApiError::auth(self.failure(), family, self.to_string())
    }

    /// The message without the canonical request and string to sign (which echo the request's
    /// headers, a session token included): for logs and audit records.
    pub fn summary(&self) -> String {
        match self {
            Self::Signature { .. } => "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.".into(),
            other => other.to_string(),
        }
    }
}

/// Step 1's result: a credential as presented, not yet checked against a secret. Its `Debug`
/// leaves out the session token and the request.
#[derive(Clone)]
pub struct Presented<'a> {
    /// The access key id of the credential scope.
    pub access_key_id: &'a str,
    /// The `x-amz-security-token` header (signed), if any; the caller decides what it means.
    pub session_token: Option<&'a str>,
    /// The scope's region (equal to the region `authenticate` was given).
    pub region: &'a str,
    /// The scope's service (one of the services `authenticate` was given).
    pub service: &'a str,
    /// The request's time, from `x-amz-date` or `Date`.
    pub time: SystemTime,
    req: RequestParts<'a>,
    scope_date: &'a str,
    timestamp: String,
    signed_headers: &'a str,
    signature: &'a str,
    payload: PayloadHash<'a>,
}

impl std::fmt::Debug for Presented<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presented")
            .field("access_key_id", &self.access_key_id)
            .field("session_token", &self.session_token.map(|_| "<redacted>"))
            .field("region", &self.region)
            .field("service", &self.service)
            .field("timestamp", &self.timestamp)
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

impl<'a> Presented<'a> {
    /// The `SignedHeaders` list, lower-case names separated by `;`.
    pub fn signed_headers(&self) -> &'a str {
        self.signed_headers
    }

    /// What the caller must do with the body.
    pub fn payload(&self) -> PayloadHash<'a> {
        self.payload
    }

    /// The credential scope, `date/region/service/aws4_request`.
    pub fn scope(&self) -> String {
        format!("{}/{}/{}/aws4_request", self.scope_date, self.region, self.service)
    }

    /// The canonical request the server computes for a body whose hash is `payload_sha256_hex`.
    pub fn canonical_request(&self, payload_sha256_hex: &str) -> String {
        let payload = match self.payload {
            PayloadHash::Unsigned => UNSIGNED_PAYLOAD,
            _ => payload_sha256_hex,
        };
        canonical_request(&self.req, &[], self.signed_headers, payload)
    }

    /// The string to sign for a canonical request.
    pub fn string_to_sign(&self, canonical_request: &str) -> String {
        string_to_sign(&self.timestamp, &self.scope(), canonical_request)
    }

    /// Step 2: checks the signature with the key's secret and the body's hex SHA-256 (or
    /// "UNSIGNED-PAYLOAD"). Uses `cache` for the derived signing key.
    pub fn verify(&self, secret_access_key: &str, payload_sha256_hex: &str, cache: &KeyCache) -> Result<(), AuthError> {
        let payload = match self.payload {
            PayloadHash::Unsigned => UNSIGNED_PAYLOAD,
            _ => payload_sha256_hex,
        };
        // The canonical request and the string to sign are built in this thread's scratch
        // buffers (every invocation does this; a refusal copies them into its message).
        SCRATCH.with(|scratch| {
            let (canonical, sts) = &mut *scratch.borrow_mut();
            canonical.clear();
            canonical_request_into(&self.req, &[], self.signed_headers, payload, canonical);
            sts.clear();
            string_to_sign_into(
                &self.timestamp,
                self.scope_date,
                self.region,
                self.service,
                canonical,
                sts,
            );
            let key = cache.signing_key(
                self.access_key_id,
                secret_access_key,
                self.scope_date,
                self.region,
                self.service,
            );
            let expected = hex_lower(&hmac(&key, sts.as_bytes()));
            let declared_ok = match self.payload {
                // The body must be the one the client declared: its hash is what was signed.
                PayloadHash::Declared(d) => d.as_bytes().ct_eq(payload_sha256_hex.as_bytes()).into(),
                _ => true,
            };
            let sig_ok: bool = expected.as_bytes().ct_eq(self.signature.as_bytes()).into();
            if sig_ok && declared_ok {
                Ok(())
            } else {
                Err(AuthError::Signature {
                    canonical_request: canonical.clone(),
                    string_to_sign: sts.clone(),
                })
            }
        })
    }
}

/// Derived signing keys, cached: bounded, keyed by (access key id, date, region, service), each
/// entry holding the secret it was derived from (compared in constant time) so that a changed secret
/// misses. `Sync`; one short lock per lookup.
pub struct KeyCache {
    capacity: usize,
    entries: Mutex<HashMap<String, CachedKey>>,
}

struct CachedKey {
    /// The secret the key was derived from (a changed secret misses).
    secret: String,
    key: [u8; 32],
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints key material.
        f.debug_struct("KeyCache")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl KeyCache {
    /// A cache of at most `capacity` keys (0 disables caching). When full, an arbitrary entry
    /// makes room: keys of the day are re-derived at the cost of four HMACs.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::with_capacity(capacity.min(4096))),
        }
    }

    /// The number of cached keys.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no key is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedKey>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts).
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The signing key of a secret for a day, region and service, derived or cached.
    pub fn signing_key(&self, access_key_id: &str, secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
        if self.capacity == 0 {
            return derive_signing_key(secret, date, region, service);
        }
        thread_local! {
            static ID: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        ID.with(|id| {
            let id = &mut *id.borrow_mut();
            id.clear();
            for part in [access_key_id, "\0", date, "\0", region, "\0", service] {
                id.push_str(part);
            }
            if let Some(hit) = self.lock().get(id.as_str())
                && bool::from(hit.secret.as_bytes().ct_eq(secret.as_bytes()))
            {
                return hit.key;
            }
            let key = derive_signing_key(secret, date, region, service);
            let mut map = self.lock();
            if map.len() >= self.capacity
                && !map.contains_key(id.as_str())
                && let Some(victim) = map.keys().next().cloned()
            {
                map.remove(&victim);
            }
            map.insert(
                id.clone(),
                CachedKey {
                    secret: secret.to_string(),
                    key,
                },
            );
            key
        })
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
pub fn derive_signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let mut k = Vec::with_capacity(4 + secret.len());
    k.extend_from_slice(b"AWS4");
    k.extend_from_slice(secret.as_bytes());
    let k_date = hmac(&k, date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// The hex SHA-256 of `bytes` (lowercase).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex_lower(&Sha256::digest(bytes))
}

// ---------------------------------------------------------------------------------------------
// Step 1
// ---------------------------------------------------------------------------------------------

fn header_values<'h, 'n>(
    headers: &'h [(&'h str, &'h [u8])],
    name: &'n str,
) -> impl Iterator<Item = &'h [u8]> + use<'h, 'n> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// The one value of a header; `Err` when it is sent more than once.
fn single_header<'h>(headers: &'h [(&'h str, &'h [u8])], name: &str) -> Result<Option<&'h [u8]>, AuthError> {
    let mut it = header_values(headers, name);
    let first = it.next();
    if it.next().is_some() {
        return Err(AuthError::Incomplete(format!(
            "The '{name}' header must be sent once, not several times."
        )));
    }
    Ok(first)
}

fn utf8<'h>(bytes: &'h [u8], what: &str) -> Result<&'h str, AuthError> {
    std::str::from_utf8(bytes).map_err(|_| AuthError::Incomplete(format!("The {what} is not valid UTF-8.")))
}

/// Step 1, before the body: parse Authorization (or report it missing), check algorithm, scope
/// (date/region/service/aws4_request), signed headers include host (and x-amz-date or date),
/// timestamp within 5 minutes of `now`. `services` = scope service names this endpoint accepts
/// for the API being called (e.g. ["sagemaker"], ["iam"], ["sts"]; runtime: ["sagemaker"]).
pub fn authenticate<'a>(
    req: &RequestParts<'a>,
    region: &str,
    services: &[&str],
    now: SystemTime,
) -> Result<Presented<'a>, AuthError> {
    let headers = req.headers;
    let Some(auth) = single_header(headers, "authorization")? else {
        if query_has_algorithm(req.query) {
            return Err(AuthError::Incomplete(
                "spillway does not accept presigned (query-string) SigV4 requests: send the signature in the Authorization header."
                    .into(),
            ));
        }
        return Err(AuthError::Missing);
    };
    let auth = utf8(auth, "Authorization header")?;
    let parsed = parse_authorization(auth)?;

    // The request's time: x-amz-date, else Date.
    let amz_date = single_header(headers, "x-amz-date")?;
    let http_date = if amz_date.is_none() {
        single_header(headers, "date")?
    } else {
        None
    };
    let mut missing = String::new();
    if parsed.credential.is_none() {
        missing.push_str("Authorization header requires 'Credential' parameter. ");
    }
    if parsed.signature.is_none() {
        missing.push_str("Authorization header requires 'Signature' parameter. ");
    }
    if parsed.signed_headers.is_none() {
        missing.push_str("Authorization header requires 'SignedHeaders' parameter. ");
    }
    if amz_date.is_none() && http_date.is_none() {
        missing.push_str("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ");
    }
    let date = amz_date.map(|v| (v, "x-amz-date")).or(http_date.map(|v| (v, "date")));
    let (Some(credential), Some(signed_headers), Some(signature), Some((date_value, date_header))) =
        (parsed.credential, parsed.signed_headers, parsed.signature, date)
    else {
        return Err(AuthError::Incomplete(format!("{missing}Authorization={auth}")));
    };

    let time = if date_header == "x-amz-date" {
        let s = utf8(date_value, "X-Amz-Date header")?.trim();
        parse_amz_date(s).ok_or_else(|| bad_date(s))?
    } else {
        let s = utf8(date_value, "Date header")?.trim();
        parse_http_date(s).ok_or_else(|| {
            AuthError::Incomplete(format!(
                "Date must be an HTTP date (RFC 7231, e.g. 'Mon, 30 Nov 2026 07:20:31 GMT'). Got '{s}'."
            ))
        })?
    };
    let timestamp = format_amz_date(time);

    // Credential = keyid/date/region/service/aws4_request.
    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key_id, scope_date, scope_region, scope_service, terminator] = parts[..] else {
        return Err(AuthError::Incomplete(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{credential}'"
        )));
    };
    if access_key_id.is_empty() {
        return Err(AuthError::UnknownKey);
    }
    if scope_region != region {
        return Err(AuthError::WrongScope(format!(
            "Credential should be scoped to a valid region, not '{scope_region}'. "
        )));
    }
    if !services.contains(&scope_service) {
        let want = services.first().copied().unwrap_or("");
        return Err(AuthError::WrongScope(format!(
            "Credential should be scoped to correct service: '{want}'. "
        )));
    }
    if terminator != "aws4_request" {
        return Err(AuthError::WrongScope(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'. "
        )));
    }
    if scope_date != &timestamp[..8] {
        return Err(AuthError::WrongScope(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{scope_date}' != '{}', from '{timestamp}'.",
            &timestamp[..8]
        )));
    }

    // Signed headers: host and the date header must be among them; so must a session token.
    let signed: Vec<&str> = signed_headers.split(';').collect();
    if signed.iter().any(|h| h.is_empty()) {
        return Err(AuthError::Incomplete(format!(
            "SignedHeaders must be a ';'-separated list of header names, got '{signed_headers}'."
        )));
    }
    let is_signed = |name: &str| signed.iter().any(|h| h.eq_ignore_ascii_case(name));
    if !is_signed("host") {
        return Err(AuthError::Incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    if !is_signed(date_header) {
        let shown = if date_header == "date" { "Date" } else { "X-Amz-Date" };
        return Err(AuthError::Incomplete(format!(
            "'{shown}' must be a 'SignedHeader' in the AWS Authorization."
        )));
    }
    let session_token = match single_header(headers, "x-amz-security-token")? {
        Some(_) if !is_signed("x-amz-security-token") => {
            return Err(AuthError::Incomplete(
                "'X-Amz-Security-Token' must be a 'SignedHeader' in the AWS Authorization.".into(),
            ));
        }
        Some(t) => Some(utf8(t, "X-Amz-Security-Token header")?.trim()),
        None => None,
    };

    // The clock: 5 minutes either way.
    if let Some(err) = skew_error(time, now) {
        return Err(err);
    }

    let payload = match single_header(headers, "x-amz-content-sha256")? {
        None => PayloadHash::Compute,
        Some(v) => {
            let v = utf8(v, "X-Amz-Content-SHA256 header")?.trim();
            if v == UNSIGNED_PAYLOAD {
                PayloadHash::Unsigned
            } else if v.starts_with("STREAMING-") {
                return Err(AuthError::Incomplete(format!(
                    "spillway does not accept chunk-signed streaming payloads ('{v}'): sign the whole body, or send x-amz-content-sha256: UNSIGNED-PAYLOAD."
                )));
            } else if v.len() == 64 && v.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                PayloadHash::Declared(v)
            } else {
                return Err(AuthError::Incomplete(format!(
                    "x-amz-content-sha256 must be UNSIGNED-PAYLOAD or a lowercase hex SHA-256, got '{v}'."
                )));
            }
        }
    };

    Ok(Presented {
        access_key_id,
        session_token,
        region: scope_region,
        service: scope_service,
        time,
        req: *req,
        scope_date,
        timestamp,
        signed_headers,
        signature,
        payload,
    })
}

fn bad_date(s: &str) -> AuthError {
    AuthError::Incomplete(format!(
        "Date must be in ISO-8601 'basic format'. Got '{s}'. See http://en.wikipedia.org/wiki/ISO_8601"
    ))
}

fn skew_error(time: SystemTime, now: SystemTime) -> Option<AuthError> {
    let t = unix_secs(time);
    let n = unix_secs(now);
    let skew = MAX_SKEW.as_secs() as i64;
    if t < n - skew {
        Some(AuthError::Expired(format!(
            "Signature expired: {} is now earlier than {} ({} - 5 min.)",
            format_secs(t),
            format_secs(n - skew),
            format_secs(n)
        )))
    } else if t > n + skew {
        Some(AuthError::Expired(format!(
            "Signature not yet current: {} is still later than {} ({} + 5 min.)",
            format_secs(t),
            format_secs(n + skew),
            format_secs(n)
        )))
    } else {
        None
    }
}

fn query_has_algorithm(query: &str) -> bool {
    query
        .split('&')
        .any(|p| p.split('=').next().is_some_and(|k| k == "X-Amz-Algorithm"))
}

#[derive(Default)]
struct ParsedAuthorization<'a> {
    credential: Option<&'a str>,
    signed_headers: Option<&'a str>,
    signature: Option<&'a str>,
}

fn parse_authorization(auth: &str) -> Result<ParsedAuthorization<'_>, AuthError> {
    let auth_trimmed = auth.trim_matches([' ', '\t']);
    let (algorithm, rest) = match auth_trimmed.find([' ', '\t']) {
        Some(i) => (&auth_trimmed[..i], &auth_trimmed[i + 1..]),
        None => (auth_trimmed, ""),
    };
    if algorithm != ALGORITHM {
        return Err(AuthError::Incomplete(format!(
            "Unsupported AWS 'algorithm': '{algorithm}'. spillway accepts only {ALGORITHM}."
        )));
    }
    let mut out = ParsedAuthorization::default();
    for item in rest.split(',') {
        let item = item.trim_matches([' ', '\t']);
        if item.is_empty() {
            continue;
        }
        let Some((k, v)) = item.split_once('=') else {
            return Err(AuthError::Incomplete(format!(
                "'{item}' not a valid key=value pair (missing equal-sign) in Authorization header: '{auth}'."
            )));
        };
        let slot = match k.trim_matches([' ', '\t']) {
            "Credential" => &mut out.credential,
            "SignedHeaders" => &mut out.signed_headers,
            "Signature" => &mut out.signature,
            // Unknown parameters are ignored, as AWS does.
            _ => continue,
        };
        if slot.is_some() {
            return Err(AuthError::Incomplete(format!(
                "Authorization header has the '{k}' parameter more than once: '{auth}'."
            )));
        }
        *slot = Some(v.trim_matches([' ', '\t']));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Canonical request
// ---------------------------------------------------------------------------------------------

/// The canonical request of `req` (plus `extra` headers, which the signer adds) for
/// `signed_headers` and a payload line.
fn canonical_request(req: &RequestParts<'_>, extra: &[(&str, &[u8])], signed_headers: &str, payload: &str) -> String {
    let mut out = String::with_capacity(256 + req.path.len() + req.query.len());
    canonical_request_into(req, extra, signed_headers, payload, &mut out);
    out
}

thread_local! {
    /// Per-thread buffers for the canonical request and the string to sign.
    static SCRATCH: std::cell::RefCell<(String, String)> = const { std::cell::RefCell::new((String::new(), String::new())) };
}

fn canonical_request_into(
    req: &RequestParts<'_>,
    extra: &[(&str, &[u8])],
    signed_headers: &str,
    payload: &str,
    out: &mut String,
) {
    out.push_str(req.method);
    out.push('\n');
    canonical_uri(req.path, out);
    out.push('\n');
    canonical_query(req.query, out);
    out.push('\n');
    for name in signed_headers.split(';') {
        out.push_str(name);
        out.push(':');
        let mut first = true;
        for v in header_values(req.headers, name).chain(header_values(extra, name)) {
            if !first {
                out.push(',');
            }
            first = false;
            push_trimall(v, out);
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(signed_headers);
    out.push('\n');
    out.push_str(payload);
}

/// Lower-case hex of `bytes` (the `hex` crate's `encode` builds its string a char at a time; on
/// the invocation path that showed in profiles).
fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
    String::from_utf8(out).unwrap_or_default()
}

fn is_space(b: u8) -> bool {
    // Python's str.split() whitespace among the Latin-1 characters (botocore's Trimall): HTTP
    // parsers let only SP, HTAB, NEL (0x85) and NBSP (0xA0) through.
    matches!(
        b,
        b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0x1c..=0x1f | 0x85 | 0xa0
    )
}

/// Trimall: trims, collapses runs of whitespace to one space; bytes read as ISO-8859-1.
fn push_trimall(v: &[u8], out: &mut String) {
    let mut pending_space = false;
    let mut started = false;
    for &b in v {
        if is_space(b) {
            pending_space = started;
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        started = true;
        out.push(char::from(b));
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

fn push_encoded(bytes: &[u8], keep_slash: bool, out: &mut String) {
    for &b in bytes {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// botocore's `normalize_url_path` (RFC 3986 dot-segment removal, empty segments dropped),
/// then `quote(path, safe='/~')`.
fn canonical_uri(path: &str, out: &mut String) {
    if path.is_empty() {
        out.push('/');
        return;
    }
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    if path.starts_with('/') {
        out.push('/');
    }
    for (i, seg) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        push_encoded(seg.as_bytes(), false, out);
    }
    if path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
}

fn percent_decode(s: &str) -> Cow<'_, [u8]> {
    if !s.contains('%') {
        return Cow::Borrowed(s.as_bytes());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

fn hexval(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn canonical_query(query: &str, out: &mut String) {
    if query.is_empty() {
        return;
    }
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let mut ek = String::with_capacity(k.len());
            push_encoded(&percent_decode(k), false, &mut ek);
            let mut ev = String::with_capacity(v.len());
            push_encoded(&percent_decode(v), false, &mut ev);
            (ek, ev)
        })
        .collect();
    pairs.sort_unstable();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
}

/// The string to sign into `out`, the scope written from its parts (no intermediate strings).
fn string_to_sign_into(timestamp: &str, date: &str, region: &str, service: &str, canonical: &str, out: &mut String) {
    out.push_str(ALGORITHM);
    out.push('\n');
    out.push_str(timestamp);
    out.push('\n');
    for part in [date, "/", region, "/", service, "/aws4_request\n"] {
        out.push_str(part);
    }
    out.push_str(&sha256_hex(canonical.as_bytes()));
}

fn string_to_sign(timestamp: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{timestamp}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

// ---------------------------------------------------------------------------------------------
// Signing
// ---------------------------------------------------------------------------------------------

/// Headers botocore never signs (a proxy may change them).
const UNSIGNED_HEADERS: &[&str] = &[
    "authorization",
    "expect",
    "user-agent",
    "x-amzn-trace-id",
    "transfer-encoding",
];
/// Headers `sign` sets itself (any in `parts` are replaced).
const SIGNER_HEADERS: &[&str] = &["x-amz-date", "x-amz-security-token"];

/// A client-side signer (for the CLI, benches and tests): returns the headers to add
/// (authorization, x-amz-date, x-amz-security-token if given). Same canonicalisation as verify.
///
/// Every header of `parts` is signed except `authorization`, `expect`, `user-agent`,
/// `x-amzn-trace-id` and `transfer-encoding` (as botocore); `parts` must include `host`.
/// Any `x-amz-date` or `x-amz-security-token` of `parts` is replaced (drop it from the request).
/// `body_sha256_hex` may be [`UNSIGNED_PAYLOAD`]: the headers then include
/// `x-amz-content-sha256: UNSIGNED-PAYLOAD` unless `parts` already has that header, whose value
/// is otherwise the signed payload hash when present (as botocore).
#[allow(clippy::too_many_arguments)]
pub fn sign(
    parts: &RequestParts<'_>,
    body_sha256_hex: &str,
    access_key_id: &str,
    secret: &str,
    session_token: Option<&str>,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Vec<(String, String)> {
    let timestamp = format_amz_date(now);
    let declared = header_values(parts.headers, "x-amz-content-sha256").next();
    let mut added: Vec<(&str, Vec<u8>)> = vec![("x-amz-date", timestamp.clone().into_bytes())];
    if let Some(t) = session_token {
        added.push(("x-amz-security-token", t.as_bytes().to_vec()));
    }
    if declared.is_none() && body_sha256_hex == UNSIGNED_PAYLOAD {
        added.push(("x-amz-content-sha256", UNSIGNED_PAYLOAD.as_bytes().to_vec()));
    }
    let kept: Vec<(&str, &[u8])> = parts
        .headers
        .iter()
        .filter(|(n, _)| {
            let n = n.to_ascii_lowercase();
            !SIGNER_HEADERS.contains(&n.as_str())
        })
        .copied()
        .collect();
    let extra: Vec<(&str, &[u8])> = added.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    let mut names: Vec<String> = kept
        .iter()
        .chain(extra.iter())
        .map(|(n, _)| n.to_ascii_lowercase())
        .filter(|n| !UNSIGNED_HEADERS.contains(&n.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    let signed_headers = names.join(";");
    let payload = match declared {
        Some(v) => String::from_utf8_lossy(v).trim().to_string(),
        None => body_sha256_hex.to_string(),
    };
    let req = RequestParts {
        headers: &kept,
        ..*parts
    };
    let canonical = canonical_request(&req, &extra, &signed_headers, &payload);
    let date = &timestamp[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let sts = string_to_sign(&timestamp, &scope, &canonical);
    let signature = hex_lower(&hmac(
        &derive_signing_key(secret, date, region, service),
        sts.as_bytes(),
    ));
    let mut out = vec![(
        "authorization".to_string(),
        format!(
            "{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
        ),
    )];
    out.extend(
        added
            .into_iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8(v).unwrap_or_default())),
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64) - i64::from(e.duration().subsec_nanos() > 0),
    }
}

fn from_unix(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn civil_to_secs(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<i64> {
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s.min(59))
}

fn digits(s: &[u8]) -> Option<i64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter()
        .try_fold(0i64, |acc, &b| acc.checked_mul(10)?.checked_add(i64::from(b - b'0')))
}

/// `20260101T000000Z`.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let secs = civil_to_secs(
        digits(&b[0..4])?,
        digits(&b[4..6])?,
        digits(&b[6..8])?,
        digits(&b[9..11])?,
        digits(&b[11..13])?,
        digits(&b[13..15])?,
    )?;
    Some(from_unix(secs))
}

fn format_secs(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let r = secs.rem_euclid(86_400);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", r / 3600, r / 60 % 60, r % 60)
}

/// ISO-8601 basic format, `20260101T000000Z`.
pub fn format_amz_date(t: SystemTime) -> String {
    format_secs(unix_secs(t))
}

/// RFC 7231's IMF-fixdate and the RFC 2822 form botocore sends (`Mon, 30 Nov 2026 07:20:31
/// -0000`, numeric zones applied); RFC 850 and asctime through `httpdate`.
fn parse_http_date(s: &str) -> Option<SystemTime> {
    if let Some(t) = parse_rfc2822(s) {
        return Some(t);
    }
    httpdate::parse_http_date(s).ok()
}

fn parse_rfc2822(s: &str) -> Option<SystemTime> {
    let rest = match s.split_once(',') {
        Some((_day, rest)) => rest,
        None => s,
    };
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let [day, mon, year, hms, zone] = f[..] else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mo = MONTHS.iter().position(|m| *m == mon)? as i64 + 1;
    let t: Vec<&str> = hms.split(':').collect();
    let [h, mi, sec] = t[..] else { return None };
    if h.len() != 2 || mi.len() != 2 || sec.len() != 2 || year.len() != 4 || day.len() > 2 {
        return None;
    }
    let secs = civil_to_secs(
        digits(year.as_bytes())?,
        mo,
        digits(day.as_bytes())?,
        digits(h.as_bytes())?,
        digits(mi.as_bytes())?,
        digits(sec.as_bytes())?,
    )?;
    let offset = match zone {
        "GMT" | "UT" | "UTC" | "Z" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let hh = digits(&z.as_bytes()[1..3])?;
            let mm = digits(&z.as_bytes()[3..5])?;
            if hh > 23 || mm > 59 {
                return None;
            }
            let o = hh * 3600 + mm * 60;
            if z.starts_with('-') { -o } else { o }
        }
        _ => return None,
    };
    Some(from_unix(secs - offset))
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_presented_key_id_is_read_and_nothing_odd() {
        let h = b"AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261130/us-east-1/sagemaker/aws4_request, SignedHeaders=host, Signature=00";
        assert_eq!(presented_key_id(h), Some("AKIAEXAMPLE"));
        assert_eq!(presented_key_id(b"AWS4-HMAC-SHA256 Credential=/x"), None);
        assert_eq!(presented_key_id(b"AWS4-HMAC-SHA256 Credential=AK<script>/x"), None);
        assert_eq!(presented_key_id(b"Bearer token"), None);
        assert_eq!(presented_key_id(&[0xff, 0xfe]), None);
    }

    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let want: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex_lower(&all), want);
        assert_eq!(hex_lower(&[]), "");
    }
    use super::*;

    #[test]
    fn dates_round_trip() {
        for s in [
            "19700101T000000Z",
            "20260101T000000Z",
            "20240229T235959Z",
            "21000301T120000Z",
        ] {
            assert_eq!(format_amz_date(parse_amz_date(s).unwrap()), s);
        }
        for bad in [
            "20260230T000000Z",
            "20261301T000000Z",
            "2026010T000000Z",
            "20260101T240000Z",
            "2026-01-01T00:00:00Z",
        ] {
            assert!(parse_amz_date(bad).is_none(), "{bad}");
        }
        let t = parse_amz_date("20261130T072031Z").unwrap();
        assert_eq!(parse_http_date("Mon, 30 Nov 2026 07:20:31 GMT"), Some(t));
        assert_eq!(parse_http_date("Mon, 30 Nov 2026 07:20:31 -0000"), Some(t));
        assert_eq!(parse_http_date("Mon, 30 Nov 2026 08:20:31 +0100"), Some(t));
        assert_eq!(parse_http_date("Monday, 30-Nov-26 07:20:31 GMT"), Some(t));
    }

    #[test]
    fn uri_normalisation_matches_botocore() {
        let c = |p: &str| {
            let mut s = String::new();
            canonical_uri(p, &mut s);
            s
        };
        assert_eq!(c(""), "/");
        assert_eq!(c("/"), "/");
        assert_eq!(c("//"), "/");
        assert_eq!(c("//example//"), "/example/");
        assert_eq!(c("/a/./b/../c"), "/a/c");
        assert_eq!(c("/../.."), "/");
        assert_eq!(c("/endpoints/a%2Fb/invocations"), "/endpoints/a%252Fb/invocations");
        assert_eq!(c("/example space/"), "/example%20space/");
        assert_eq!(c("/-._~"), "/-._~");
    }

    #[test]
    fn query_canonicalisation() {
        let c = |q: &str| {
            let mut s = String::new();
            canonical_query(q, &mut s);
            s
        };
        assert_eq!(c(""), "");
        assert_eq!(c("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(c("a&b="), "a=&b=");
        assert_eq!(c("a=x%20y&c=%7e&d=+"), "a=x%20y&c=~&d=%2B");
        assert_eq!(c("a-b=1&a=2"), "a=2&a-b=1");
        assert_eq!(c("&&a=1&"), "a=1");
    }

    #[test]
    fn dot_and_empty_segments() {
        for p in ["/", "", "/a", "/a/", "/endpoints/e/invocations", "/a.b/..c"] {
            assert!(!path_has_dot_or_empty_segments(p), "{p}");
        }
        for p in ["//", "/a//b", "/./a", "/a/..", "/a/../b/", "/a/./"] {
            assert!(path_has_dot_or_empty_segments(p), "{p}");
        }
    }

    #[test]
    fn debug_output_hides_the_session_token() {
        let headers: Vec<(&str, &[u8])> = vec![("x-amz-security-token", b"SECRET-TOKEN")];
        let parts = RequestParts {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
        };
        assert!(!format!("{parts:?}").contains("SECRET-TOKEN"));
    }

    #[test]
    fn trimall() {
        let t = |v: &[u8]| {
            let mut s = String::new();
            push_trimall(v, &mut s);
            s
        };
        assert_eq!(t(b"  a   b\t\tc  "), "a b c");
        assert_eq!(t(b""), "");
        assert_eq!(t(b"   "), "");
        assert_eq!(t(b"caf\xe9"), "caf\u{e9}");
        assert_eq!(t(b"\xa0a\x85\x85b\xa0"), "a b");
    }

    #[test]
    fn cache_misses_on_a_changed_secret_and_stays_bounded() {
        let cache = KeyCache::new(2);
        let a = cache.signing_key("AK", "s1", "20260101", "us-east-1", "sagemaker");
        assert_eq!(a, derive_signing_key("s1", "20260101", "us-east-1", "sagemaker"));
        let b = cache.signing_key("AK", "s2", "20260101", "us-east-1", "sagemaker");
        assert_eq!(b, derive_signing_key("s2", "20260101", "us-east-1", "sagemaker"));
        assert_ne!(a, b);
        for i in 0..10 {
            cache.signing_key(&format!("K{i}"), "s", "20260101", "us-east-1", "sagemaker");
            assert!(cache.len() <= 2);
        }
        fn is_sync<T: Sync + Send>() {}
        is_sync::<KeyCache>();
    }
}
