//! STUB (integration scaffold; replaced by the real SigV4 at merge).
#![allow(missing_docs, dead_code, unused_variables)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(&'a str, &'a [u8])],
}
#[derive(Debug)]
pub struct Presented<'a> {
    pub access_key_id: &'a str,
    pub session_token: Option<&'a str>,
}
pub enum PayloadHash<'a> {
    Unsigned,
    Declared(&'a str),
    Compute,
}
impl<'a> Presented<'a> {
    pub fn payload(&self) -> PayloadHash<'a> {
        PayloadHash::Compute
    }
    pub fn verify(&self, secret: &str, payload_sha256_hex: &str, cache: &KeyCache) -> Result<(), AuthError> {
        Err(AuthError::Missing)
    }
}
#[derive(Debug)]
pub struct KeyCache;
impl KeyCache {
    pub fn new(capacity: usize) -> Self {
        KeyCache
    }
}
pub fn authenticate<'a>(
    req: &RequestParts<'a>,
    region: &str,
    services: &[&str],
    now: std::time::SystemTime,
) -> Result<Presented<'a>, AuthError> {
    Err(AuthError::Missing)
}
pub fn sha256_hex(bytes: &[u8]) -> String {
    String::new()
}
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error("missing")]
    Missing,
    #[error("unknown key")]
    UnknownKey,
    #[error("payload")]
    PayloadMismatch,
}
