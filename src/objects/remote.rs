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
    credentials: Option<(String, String)>,
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
            credentials: None,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// The same client signing with this key instead of the AWS chain's (tests, and programs
    /// that embed spillway's store).
    pub fn with_credentials(mut self, access_key_id: &str, secret_access_key: &str) -> Self {
        self.credentials = Some((access_key_id.to_string(), secret_access_key.to_string()));
        self
    }

    /// The client of one bucket (made once).
    fn client(&self, bucket: &str) -> Result<Arc<AmazonS3>, ObjectError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(bucket) {
            return Ok(c.clone());
        }
        let mut b = AmazonS3Builder::from_env()
            // First: `with_allow_http` below writes into these options. object_store's default
            // bounds a whole request to 30 s, which cuts off any object larger than 30 s of the
            // link; a request here may move up to `[async_inference] max_payload_bytes`.
            // Connecting stays bounded (10 s), and a transfer is cut off after an hour.
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_timeout(std::time::Duration::from_secs(3600))
                    .with_connect_timeout(std::time::Duration::from_secs(10)),
            )
            .with_bucket_name(bucket)
            .with_region(&self.region)
            .with_allow_http(self.allow_http)
            .with_virtual_hosted_style_request(false);
        if let Some(e) = &self.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some((key, secret)) = &self.credentials {
            b = b.with_access_key_id(key).with_secret_access_key(secret);
        } else if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
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
    use crate::config::StorageBackend;
    use std::io::{Read, Write};

    /// moto's S3 in server mode, from the test venv (`tests/requirements.txt`; scripts/test.sh
    /// installs it before the Rust tests), on a free port; killed when dropped.
    struct Moto {
        child: std::process::Child,
        port: u16,
    }

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn moto() -> Moto {
        let bin = std::env::var_os("SPILLWAY_MOTO_SERVER")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server"));
        assert!(
            bin.exists(),
            "{} not found: install moto[server] into .venv (scripts/test.sh does), or set SPILLWAY_MOTO_SERVER",
            bin.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto { child, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return moto;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("moto_server did not listen on {port} within 10 s");
    }

    /// One raw, unsigned request to moto (it does not check signatures): the status line.
    fn raw(port: u16, request: &str) -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.lines().next().unwrap_or_default().to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_s3_backend_against_moto_server() {
        let moto = moto();
        let status = raw(
            moto.port,
            "PUT /async-bkt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert!(status.contains(" 200"), "{status}");
        let cfg = StorageConfig {
            backend: StorageBackend::S3,
            s3_endpoint: Some(format!("http://127.0.0.1:{}", moto.port)),
            region: Some("us-east-1".into()),
            allow_http: true,
            ..Default::default()
        };
        let store = Remote::new(&cfg).unwrap().with_credentials("testing", "testing");
        assert_eq!(store.kind(), "s3");
        let o = ObjectRef::parse("s3://async-bkt/in/a b+c.json").unwrap();
        assert!(store.head(&o).await.unwrap().is_none());
        assert!(matches!(store.get(&o, 10).await, Err(ObjectError::NotFound { .. })));
        store
            .put(&o, Bytes::from_static(b"{\"x\": 1}"), Some("application/json"))
            .await
            .unwrap();
        let meta = store.head(&o).await.unwrap().unwrap();
        assert_eq!(meta.size, 8);
        assert_eq!(meta.content_type.as_deref(), Some("application/json"));
        let got = store.get(&o, 8).await.unwrap();
        assert_eq!(&got.body[..], b"{\"x\": 1}");
        assert_eq!(got.content_type.as_deref(), Some("application/json"));
        assert!(matches!(
            store.get(&o, 7).await,
            Err(ObjectError::TooLarge { limit: 7, .. })
        ));
        // Overwrites; no content type stored, none read back.
        store.put(&o, Bytes::from_static(b"2"), None).await.unwrap();
        let got = store.get(&o, 8).await.unwrap();
        assert_eq!(&got.body[..], b"2");
        // Another client finds it under its key, and the key is not encoded twice.
        let other = Remote::new(&cfg).unwrap().with_credentials("testing", "testing");
        assert_eq!(&other.get(&o, 8).await.unwrap().body[..], b"2");
        let encoded = ObjectRef::parse("s3://async-bkt/in/a%20b%2Bc.json").unwrap();
        assert!(other.head(&encoded).await.unwrap().is_none());
        // A bucket that does not exist: an error, never a panic.
        let missing = ObjectRef::parse("s3://no-such-bkt/k").unwrap();
        assert!(store.get(&missing, 8).await.is_err());
    }

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
