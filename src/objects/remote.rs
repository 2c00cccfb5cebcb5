//! `[storage] backend = "s3"`: objects on any S3-compatible server (AWS S3, MinIO, moto, ...)
//! through the `object_store` crate's `AmazonS3`, one client per bucket, made on first use and
//! kept.
//!
//! Credentials come from the usual AWS chain as `object_store` reads it: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, then web identity, ECS and instance metadata;
//! and, when no key is in the environment, the shared credentials file
//! (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`) under `AWS_PROFILE` (default
//! `default`), which `object_store` itself does not read. Requests are path-style
//! (`<endpoint>/<bucket>/<key>`), which every S3-compatible server accepts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{Attribute, Attributes, GetOptions, ObjectStore as _, PutOptions, PutPayload};

use super::{BoxFuture, Object, ObjectError, ObjectMeta, ObjectRef, ObjectStore};
use crate::config::StorageConfig;

/// A client of an S3-compatible server.
#[derive(Debug)]
pub struct Remote {
    endpoint: Option<String>,
    region: String,
    allow_http: bool,
    clients: Mutex<HashMap<String, Arc<AmazonS3>>>,
}

impl Remote {
    /// The client `[storage]` configures (`s3_endpoint`, `region`, `allow_http`).
    pub fn new(cfg: &StorageConfig) -> Result<Self, ObjectError> {
        Ok(Self {
            endpoint: cfg.s3_endpoint.clone(),
            region: cfg
                .region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok())
                .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                .unwrap_or_else(|| "us-east-1".into()),
            allow_http: cfg.allow_http,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// The client of one bucket (made once).
    fn client(&self, bucket: &str) -> Result<Arc<AmazonS3>, ObjectError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(bucket) {
            return Ok(c.clone());
        }
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(&self.region)
            .with_allow_http(self.allow_http)
            .with_virtual_hosted_style_request(false);
        if let Some(e) = &self.endpoint {
            b = b.with_endpoint(e);
        }
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
            && let Some((key, secret, token)) = shared_credentials()
        {
            b = b.with_access_key_id(key).with_secret_access_key(secret);
            if let Some(t) = token {
                b = b.with_token(t);
            }
        }
        let c = Arc::new(
            b.build()
                .map_err(|e| ObjectError::Unavailable(format!("cannot make an S3 client for {bucket}: {e}")))?,
        );
        clients.insert(bucket.to_string(), c.clone());
        Ok(c)
    }
}

/// The key as `object_store` addresses it. Its paths have no empty, `.` or `..` segments and no
/// leading `/`: keys that need them cannot be reached through this backend.
fn path(obj: &ObjectRef) -> Result<Path, ObjectError> {
    match Path::parse(&obj.key) {
        Ok(p) if p.as_ref() == obj.key && !obj.key.is_empty() => Ok(p),
        _ => Err(ObjectError::Invalid(format!(
            "The key {:?} cannot be used with [storage] backend = \"s3\": keys with empty, '.' or '..' segments, or a leading or trailing '/', are not supported",
            obj.key
        ))),
    }
}

fn error(obj: &ObjectRef, e: object_store::Error) -> ObjectError {
    match e {
        object_store::Error::NotFound { .. } => ObjectError::NotFound { uri: obj.uri() },
        e => ObjectError::Unavailable(format!("{}: {e}", obj.uri())),
    }
}

/// The access key, secret and session token of `AWS_PROFILE` in the shared credentials file.
fn shared_credentials() -> Option<(String, String, Option<String>)> {
    let file = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".aws/credentials")))?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    parse_credentials(&std::fs::read_to_string(file).ok()?, &profile)
}

/// The keys of `profile` in shared-credentials (INI) text.
pub fn parse_credentials(text: &str, profile: &str) -> Option<(String, String, Option<String>)> {
    let (mut section, mut key, mut secret, mut token) = (String::new(), None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        if section != profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = Some(v.trim().to_string());
            match k.trim() {
                "aws_access_key_id" => key = v,
                "aws_secret_access_key" => secret = v,
                "aws_session_token" => token = v,
                _ => {}
            }
        }
    }
    Some((key?, secret?, token))
}

impl ObjectStore for Remote {
    fn get(&self, obj: &ObjectRef, max_bytes: u64) -> BoxFuture<'_, Result<Object, ObjectError>> {
        let obj = obj.clone();
        Box::pin(async move {
            let (client, p) = (self.client(&obj.bucket)?, path(&obj)?);
            let r = client
                .get_opts(&p, GetOptions::default())
                .await
                .map_err(|e| error(&obj, e))?;
            if r.meta.size > max_bytes {
                return Err(ObjectError::TooLarge {
                    uri: obj.uri(),
                    limit: max_bytes,
                });
            }
            let content_type = r.attributes.get(&Attribute::ContentType).map(|v| v.to_string());
            let body = r.bytes().await.map_err(|e| error(&obj, e))?;
            Ok(Object { body, content_type })
        })
    }

    fn put(&self, obj: &ObjectRef, body: Bytes, content_type: Option<&str>) -> BoxFuture<'_, Result<(), ObjectError>> {
        let (obj, ct) = (obj.clone(), content_type.map(str::to_string));
        Box::pin(async move {
            let (client, p) = (self.client(&obj.bucket)?, path(&obj)?);
            let mut attributes = Attributes::new();
            if let Some(ct) = ct {
                attributes.insert(Attribute::ContentType, ct.into());
            }
            let opts = PutOptions {
                attributes,
                ..Default::default()
            };
            client
                .put_opts(&p, PutPayload::from_bytes(body), opts)
                .await
                .map_err(|e| error(&obj, e))?;
            Ok(())
        })
    }

    fn head(&self, obj: &ObjectRef) -> BoxFuture<'_, Result<Option<ObjectMeta>, ObjectError>> {
        let obj = obj.clone();
        Box::pin(async move {
            let (client, p) = (self.client(&obj.bucket)?, path(&obj)?);
            let opts = GetOptions {
                head: true,
                ..Default::default()
            };
            match client.get_opts(&p, opts).await {
                Ok(r) => Ok(Some(ObjectMeta {
                    size: r.meta.size,
                    content_type: r.attributes.get(&Attribute::ContentType).map(|v| v.to_string()),
                })),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(error(&obj, e)),
            }
        })
    }

    fn kind(&self) -> &'static str {
        "s3"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_from_the_shared_credentials_file() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n# c\n[other]\naws_access_key_id=C\naws_secret_access_key=D\naws_session_token = T\n";
        assert_eq!(parse_credentials(text, "default"), Some(("A".into(), "B".into(), None)));
        assert_eq!(
            parse_credentials(text, "other"),
            Some(("C".into(), "D".into(), Some("T".into())))
        );
        assert_eq!(parse_credentials(text, "none"), None);
    }

    #[test]
    fn keys_object_store_cannot_address_are_refused_by_name() {
        let o = |k: &str| ObjectRef {
            bucket: "bkt".into(),
            key: k.into(),
        };
        assert!(path(&o("in/a.json")).is_ok());
        for bad in ["/a", "a//b", "a/../b", "a/", "./a"] {
            let e = path(&o(bad)).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
