//! Objects in and out: the store behind the `s3://` URIs asynchronous inference reads its input
//! from and writes its output to (`docs/async.md`, "Objects in and out").
//!
//! One trait, [`ObjectStore`], two backends chosen by `[storage] backend`:
//! - `embedded` ([`embedded::Embedded`]): files under `<data_dir>/objects`, whose S3 API
//!   ([`api`], served with the `s3s` crate on `[storage] listen`) boto3's `s3` client and the
//!   SageMaker SDK use on a machine with nothing else running;
//! - `s3` ([`remote::Remote`]): any S3-compatible server through the `object_store` crate.

pub mod api;
pub mod embedded;
pub mod remote;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::{StorageBackend, StorageConfig};
use crate::core::s3uri;
pub use crate::core::s3uri::S3UriError;

/// One object (or, from [`ObjectRef::parse_prefix`], a prefix) in a bucket. The parsing and
/// naming rules are `core::s3uri`'s.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The bucket.
    pub bucket: String,
    /// The key (empty only for a prefix naming the whole bucket).
    pub key: String,
}

impl ObjectRef {
    /// An object of a checked bucket name and key (the key may be empty: a prefix).
    pub fn new(bucket: &str, key: &str) -> Result<Self, ObjectError> {
        s3uri::check_bucket_name(bucket)?;
        s3uri::check_key(key, true)?;
        Ok(Self {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// An object's URI, `s3://bucket/key` with a non-empty key ([`ObjectRef::parse_object`]).
    pub fn parse(uri: &str) -> Result<Self, ObjectError> {
        Self::parse_object(uri)
    }

    /// An object's URI: `s3://bucket/key`, the key not empty.
    pub fn parse_object(uri: &str) -> Result<Self, ObjectError> {
        let (bucket, key) = s3uri::parse_object(uri)?;
        Ok(Self {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// A prefix's URI: `s3://bucket`, `s3://bucket/` or `s3://bucket/prefix` (`S3OutputPath`).
    pub fn parse_prefix(uri: &str) -> Result<Self, ObjectError> {
        let (bucket, key) = s3uri::parse_prefix(uri)?;
        Ok(Self {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// `s3://bucket/key`.
    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// The object `name` under this prefix: `prefix/name`, with no doubled `/` where they
    /// meet (`s3://b/out/` and `s3://b/out` both give `s3://b/out/name`; the bucket's root gives
    /// `s3://b/name`).
    pub fn child(&self, name: &str) -> ObjectRef {
        ObjectRef {
            bucket: self.bucket.clone(),
            key: s3uri::child_key(&self.key, name),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// A boxed future: what [`ObjectStore`]'s methods return, so the trait stays dyn-compatible.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A whole object, as [`ObjectStore::get`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The bytes.
    pub body: Bytes,
    /// Its `Content-Type`, when it was stored with one.
    pub content_type: Option<String>,
}

/// What [`ObjectStore::head`] tells about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its length in bytes.
    pub size: u64,
    /// Its `Content-Type`, when it was stored with one.
    pub content_type: Option<String>,
}

/// Why an object could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// No such object.
    #[error("The object {uri} does not exist")]
    NotFound {
        /// The object's URI.
        uri: String,
    },
    /// No such bucket.
    #[error("The bucket {bucket} does not exist")]
    NoSuchBucket {
        /// The bucket.
        bucket: String,
    },
    /// The object is larger than the reader accepts.
    #[error("The object {uri} is larger than {limit} bytes")]
    TooLarge {
        /// The object's URI.
        uri: String,
        /// The most bytes the reader accepts.
        limit: u64,
    },
    /// A name or value breaks a rule (the message names it).
    #[error("{0}")]
    Invalid(String),
    /// The store cannot be reached or failed (disk, network, credentials); worth retrying.
    #[error("the object store is unavailable: {0}")]
    Unavailable(String),
}

impl From<S3UriError> for ObjectError {
    fn from(e: S3UriError) -> Self {
        ObjectError::Invalid(e.0)
    }
}

/// Where objects live: what the asynchronous workers read inputs from and write outputs to.
pub trait ObjectStore: Send + Sync + 'static {
    /// The whole object, refusing more than `max_bytes` ([`ObjectError::TooLarge`]).
    fn get(&self, obj: &ObjectRef, max_bytes: u64) -> BoxFuture<'_, Result<Object, ObjectError>>;
    /// Writes the object, replacing any of that key; durable before `Ok` (embedded: a
    /// temporary file, fsync, rename, fsync of the directory).
    fn put(&self, obj: &ObjectRef, body: Bytes, content_type: Option<&str>) -> BoxFuture<'_, Result<(), ObjectError>>;
    /// The object's size and type; `None` when there is no such object.
    fn head(&self, obj: &ObjectRef) -> BoxFuture<'_, Result<Option<ObjectMeta>, ObjectError>>;
    /// `"embedded"` or `"s3"`.
    fn kind(&self) -> &'static str;
    /// The embedded store behind this one, whose S3 API `serve` starts ([`api::serve`]);
    /// `None` for a remote store.
    fn embedded(&self) -> Option<embedded::Embedded> {
        None
    }
}

/// The store `[storage]` configures: the embedded one under `<data_dir>/objects`, or a client of
/// an S3-compatible server.
pub fn open(cfg: &StorageConfig, data_dir: &Path) -> Result<Arc<dyn ObjectStore>, ObjectError> {
    match cfg.backend {
        StorageBackend::Embedded => Ok(Arc::new(embedded::Embedded::open(
            &data_dir.join("objects"),
            cfg.max_object_bytes,
        )?)),
        StorageBackend::S3 => Ok(Arc::new(remote::Remote::new(cfg)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_refs_parse_print_and_join() {
        let o = ObjectRef::parse("s3://my-bucket/in/a.json").unwrap();
        assert_eq!((o.bucket.as_str(), o.key.as_str()), ("my-bucket", "in/a.json"));
        assert_eq!(o.uri(), "s3://my-bucket/in/a.json");
        assert_eq!(o.to_string(), o.uri());
        let p = ObjectRef::parse_prefix("s3://my-bucket/out").unwrap();
        assert_eq!(p.child("x.out").uri(), "s3://my-bucket/out/x.out");
        assert_eq!(
            ObjectRef::parse_prefix("s3://my-bucket").unwrap().child("x").uri(),
            "s3://my-bucket/x"
        );
        assert!(
            matches!(ObjectRef::parse_object("s3://my-bucket/"), Err(ObjectError::Invalid(m)) if m.contains("names no object"))
        );
        assert!(matches!(ObjectRef::new("UPPER", "k"), Err(ObjectError::Invalid(m)) if m.contains("UPPER")));
    }
}
