//! TEMPORARY stand-in for the object store (issue 16): the contract's API over plain files under
//! `<data_dir>/objects`, so that the asynchronous workers build and run while the real module
//! (embedded S3 API with s3s, object_store backend) is built beside. Replaced at its merge.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

/// A boxed future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
}

impl ObjectRef {
    /// An object's URI.
    pub fn parse_object(uri: &str) -> Result<Self, ObjectError> {
        let rest = uri
            .strip_prefix("s3://")
            .ok_or_else(|| ObjectError::Invalid(format!("{uri} is not an s3:// URI")))?;
        match rest.split_once('/') {
            Some((b, k)) if !b.is_empty() && !k.is_empty() && !k.split('/').any(|s| s == ".." || s == ".") => {
                Ok(Self {
                    bucket: b.into(),
                    key: k.into(),
                })
            }
            _ => Err(ObjectError::Invalid(format!("{uri} names no object"))),
        }
    }
}

/// An object.
pub struct Object {
    /// Body.
    pub body: Bytes,
    /// Content type.
    pub content_type: Option<String>,
}

/// An object's metadata.
pub struct ObjectMeta {
    /// Size.
    pub size: u64,
    /// Content type.
    pub content_type: Option<String>,
}

/// Object store failures.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// No such object.
    #[error("{uri}: no such object")]
    NotFound {
        /// URI.
        uri: String,
    },
    /// No such bucket.
    #[error("no such bucket {bucket}")]
    NoSuchBucket {
        /// Bucket.
        bucket: String,
    },
    /// Too large.
    #[error("{uri} is larger than {limit} bytes")]
    TooLarge {
        /// URI.
        uri: String,
        /// Limit.
        limit: u64,
    },
    /// Invalid.
    #[error("{0}")]
    Invalid(String),
    /// Unavailable.
    #[error("{0}")]
    Unavailable(String),
}

/// The store the workers use.
pub trait ObjectStore: Send + Sync + 'static {
    /// Whole object.
    fn get(&self, obj: &ObjectRef, max_bytes: u64) -> BoxFuture<'_, Result<Object, ObjectError>>;
    /// Durable put.
    fn put(&self, obj: &ObjectRef, body: Bytes, content_type: Option<&str>) -> BoxFuture<'_, Result<(), ObjectError>>;
    /// Metadata.
    fn head(&self, obj: &ObjectRef) -> BoxFuture<'_, Result<Option<ObjectMeta>, ObjectError>>;
    /// Kind.
    fn kind(&self) -> &'static str;
}

struct Files(PathBuf);

impl ObjectStore for Files {
    fn get(&self, obj: &ObjectRef, max_bytes: u64) -> BoxFuture<'_, Result<Object, ObjectError>> {
        let p = self.0.join(&obj.bucket).join(&obj.key);
        let uri = format!("s3://{}/{}", obj.bucket, obj.key);
        Box::pin(async move {
            match tokio::fs::read(&p).await {
                Ok(b) if b.len() as u64 > max_bytes => Err(ObjectError::TooLarge { uri, limit: max_bytes }),
                Ok(b) => Ok(Object {
                    body: b.into(),
                    content_type: None,
                }),
                Err(_) => Err(ObjectError::NotFound { uri }),
            }
        })
    }
    fn put(&self, obj: &ObjectRef, body: Bytes, _ct: Option<&str>) -> BoxFuture<'_, Result<(), ObjectError>> {
        let p = self.0.join(&obj.bucket).join(&obj.key);
        Box::pin(async move {
            if let Some(d) = p.parent() {
                tokio::fs::create_dir_all(d)
                    .await
                    .map_err(|e| ObjectError::Unavailable(e.to_string()))?;
            }
            tokio::fs::write(&p, &body)
                .await
                .map_err(|e| ObjectError::Unavailable(e.to_string()))
        })
    }
    fn head(&self, obj: &ObjectRef) -> BoxFuture<'_, Result<Option<ObjectMeta>, ObjectError>> {
        let p = self.0.join(&obj.bucket).join(&obj.key);
        Box::pin(async move {
            Ok(tokio::fs::metadata(&p).await.ok().map(|m| ObjectMeta {
                size: m.len(),
                content_type: None,
            }))
        })
    }
    fn kind(&self) -> &'static str {
        "embedded"
    }
}

/// Opens the store.
pub fn open(data_dir: &Path) -> Result<Arc<dyn ObjectStore>, ObjectError> {
    Ok(Arc::new(Files(data_dir.join("objects"))))
}
