//! The embedded object store: files under `<data_dir>/objects`.
//!
//! ```text
//! objects/                      0700
//!   <bucket>/                   a bucket is a directory (its name passed S3's naming rules,
//!                               so it is one safe path segment); created with `.bucket` in it
//!     .bucket                   marks the bucket; its mtime is the bucket's CreationDate
//!     .tmp/                     files being written (removed at open: left by a crash)
//!     .uploads/<id>/            multipart uploads: `upload.json` and one file per part
//!     o/<hh>/<sha256(key)>      one object: body, then its metadata (JSON), then the
//!                               metadata's length (u32, little-endian) and `SPW1`
//! ```
//!
//! Keys never become paths: an object's file is named by the SHA-256 of its key (hex), so no key
//! (`../x`, `/etc/passwd`, `a//b`, 1,024 bytes of `.`) reaches outside its bucket or collides
//! with the bucket's own files. Its metadata (the key itself, `Content-Type`, ETag, user
//! metadata) lives in the same file, so one `rename` makes a new version visible whole.
//! An object's `LastModified` is its file's mtime, a bucket's `CreationDate` its `.bucket`'s.
//!
//! Durability: a put writes a temporary file in the bucket, fsyncs it, renames it over the
//! object's file and fsyncs the directory (and its parent when the shard directory is new)
//! before it returns.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use md5::Md5;
use md5::digest::Digest as Md5Digest;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{BoxFuture, Object, ObjectError, ObjectMeta, ObjectRef, ObjectStore};
use crate::core::s3uri::{check_bucket_name, check_key};

/// The last bytes of every object file.
const MAGIC: &[u8; 4] = b"SPW1";
/// The most bytes an object's metadata may take.
const MAX_META: usize = 64 << 10;

/// What is stored with an object besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The key (the file's name is its hash).
    pub key: String,
    /// `Content-Type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The ETag, quoted as S3 sends it: the MD5 of the bytes, or for a multipart upload the
    /// MD5 of the parts' MD5s and `-<parts>`.
    pub etag: String,
    /// User metadata (`x-amz-meta-*`).
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub metadata: HashMap<String, String>,
}

/// One object as a listing or a head sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Its metadata.
    pub meta: Meta,
    /// Its length in bytes.
    pub size: u64,
    /// When it was written (the file's mtime).
    pub modified: SystemTime,
}

/// One part of a multipart upload, as `UploadPart` answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// 1 to 10,000.
    pub number: u32,
    /// The part's ETag (quoted MD5).
    pub etag: String,
}

/// The embedded store. Cheap to clone (one shared root).
#[derive(Debug, Clone)]
pub struct Embedded {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    max_object_bytes: u64,
}

/// Errors of the file system, as the store reports them.
fn io(context: &str, e: io::Error) -> ObjectError {
    ObjectError::Unavailable(format!("{context}: {e}"))
}

/// The quoted hex MD5 S3 uses as an ETag.
pub fn etag_of(md5: &[u8]) -> String {
    format!("\"{}\"", hex_lower(md5))
}

fn hex_lower(b: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// Where a key's file lives inside its bucket's directory: `o/<hh>/<sha256 hex>`. Only hex
/// digits come from the key, so the path is always three plain segments below the bucket.
pub fn key_path(key: &str) -> PathBuf {
    let hex = hex_lower(&Sha256::digest(key.as_bytes()));
    PathBuf::from("o").join(&hex[..2]).join(hex)
}

/// fsyncs a directory (a rename or a new entry in it is durable after this).
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn mkdir(path: &Path) -> io::Result<bool> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// A file being written in a bucket's `.tmp`: body bytes, then [`TempObject::finish`].
pub struct TempObject {
    file: File,
    path: PathBuf,
    md5: Md5,
    len: u64,
    limit: u64,
}

impl TempObject {
    /// Appends body bytes; refuses to grow past the store's `max_object_bytes`.
    pub fn write(&mut self, data: &[u8]) -> Result<(), ObjectError> {
        self.len += data.len() as u64;
        if self.len > self.limit {
            return Err(ObjectError::TooLarge {
                uri: String::new(),
                limit: self.limit,
            });
        }
        self.md5.update(data);
        self.file.write_all(data).map_err(|e| io("cannot write the object", e))
    }

    /// The body's length so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no body byte was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The MD5 of the body so far.
    pub fn md5(&self) -> [u8; 16] {
        self.md5.clone().finalize().into()
    }
}

impl Drop for TempObject {
    fn drop(&mut self) {
        // Finished files were renamed away; this removes only abandoned ones.
        let _ = fs::remove_file(&self.path);
    }
}

impl Embedded {
    /// Opens (creating) the store at `root`, removing files a crash left half-written.
    pub fn open(root: &Path, max_object_bytes: u64) -> Result<Self, ObjectError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| io(&format!("cannot create {}", root.display()), e))?;
        let store = Self {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                max_object_bytes,
            }),
        };
        for (bucket, _) in store.list_buckets()? {
            if let Ok(entries) = fs::read_dir(store.bucket_dir(&bucket).join(".tmp")) {
                for e in entries.flatten() {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(store)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The largest object a put accepts.
    pub fn max_object_bytes(&self) -> u64 {
        self.inner.max_object_bytes
    }

    fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.inner.root.join(bucket)
    }

    /// The file of an object (the bucket checked against S3's naming rules first: a name that
    /// breaks them could not have been created, so it is no bucket).
    pub fn object_path(&self, obj: &ObjectRef) -> Result<PathBuf, ObjectError> {
        check_bucket_name(&obj.bucket).map_err(|_| ObjectError::NoSuchBucket {
            bucket: obj.bucket.clone(),
        })?;
        check_key(&obj.key, false)?;
        Ok(self.bucket_dir(&obj.bucket).join(key_path(&obj.key)))
    }

    /// Whether the bucket exists.
    pub fn bucket_exists(&self, bucket: &str) -> bool {
        check_bucket_name(bucket).is_ok() && self.bucket_dir(bucket).join(".bucket").is_file()
    }

    fn require_bucket(&self, bucket: &str) -> Result<PathBuf, ObjectError> {
        if self.bucket_exists(bucket) {
            Ok(self.bucket_dir(bucket))
        } else {
            Err(ObjectError::NoSuchBucket {
                bucket: bucket.to_string(),
            })
        }
    }

    /// Creates a bucket; `Ok(false)` when it exists already.
    pub fn create_bucket(&self, bucket: &str) -> Result<bool, ObjectError> {
        check_bucket_name(bucket)?;
        let dir = self.bucket_dir(bucket);
        let ctx = |e| io(&format!("cannot create the bucket {bucket}"), e);
        mkdir(&dir).map_err(ctx)?;
        let marker = dir.join(".bucket");
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&marker)
        {
            Ok(f) => f.sync_all().map_err(ctx)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(ctx(e)),
        }
        sync_dir(&dir).and_then(|()| sync_dir(&self.inner.root)).map_err(ctx)?;
        Ok(true)
    }

    /// Deletes an empty bucket (`BucketNotEmpty` as [`ObjectError::Invalid`] otherwise).
    pub fn delete_bucket(&self, bucket: &str) -> Result<(), ObjectError> {
        let dir = self.require_bucket(bucket)?;
        if !self.list(bucket)?.is_empty() {
            return Err(ObjectError::Invalid(BUCKET_NOT_EMPTY.into()));
        }
        let ctx = |e| io(&format!("cannot delete the bucket {bucket}"), e);
        // The marker first: a crash half-way leaves no bucket, only a directory the next
        // CreateBucket reuses.
        fs::remove_file(dir.join(".bucket")).map_err(ctx)?;
        fs::remove_dir_all(&dir).map_err(ctx)?;
        sync_dir(&self.inner.root).map_err(ctx)
    }

    /// Every bucket with its creation time, by name.
    pub fn list_buckets(&self) -> Result<Vec<(String, SystemTime)>, ObjectError> {
        let mut out = vec![];
        let entries = fs::read_dir(&self.inner.root).map_err(|e| io("cannot list the buckets", e))?;
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if check_bucket_name(&name).is_err() {
                continue;
            }
            if let Ok(m) = fs::metadata(e.path().join(".bucket")) {
                out.push((name, m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
            }
        }
        out.sort();
        Ok(out)
    }

    /// A temporary file in the bucket to write an object's body into.
    pub fn temp(&self, bucket: &str) -> Result<TempObject, ObjectError> {
        let dir = self.require_bucket(bucket)?.join(".tmp");
        mkdir(&dir).map_err(|e| io("cannot create a temporary file", e))?;
        let path = dir.join(uuid::Uuid::new_v4().simple().to_string());
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io("cannot create a temporary file", e))?;
        Ok(TempObject {
            file,
            path,
            md5: Md5::new(),
            len: 0,
            limit: self.inner.max_object_bytes,
        })
    }

    /// Makes a written temporary file the object `obj` (replacing any), durably. `etag`: the
    /// ETag to record (`None`: the MD5 of the body).
    pub fn commit(
        &self,
        mut temp: TempObject,
        obj: &ObjectRef,
        content_type: Option<String>,
        metadata: HashMap<String, String>,
        etag: Option<String>,
    ) -> Result<Stat, ObjectError> {
        let dest = self.object_path(obj)?;
        let meta = Meta {
            key: obj.key.clone(),
            content_type,
            etag: etag.unwrap_or_else(|| etag_of(&temp.md5())),
            metadata,
        };
        let json = serde_json::to_vec(&meta).map_err(|e| ObjectError::Invalid(e.to_string()))?;
        if json.len() > MAX_META {
            return Err(ObjectError::Invalid(format!(
                "The object's metadata takes {} bytes; at most {MAX_META} are kept",
                json.len()
            )));
        }
        let ctx = |e| io(&format!("cannot write {obj}"), e);
        temp.file.write_all(&json).map_err(ctx)?;
        temp.file.write_all(&(json.len() as u32).to_le_bytes()).map_err(ctx)?;
        temp.file.write_all(MAGIC).map_err(ctx)?;
        temp.file.sync_all().map_err(ctx)?;
        let shard = dest.parent().expect("o/<hh>/<hash>");
        let objects = shard.parent().expect("o/<hh>");
        let new_o = mkdir(objects).map_err(ctx)?;
        let new_shard = mkdir(shard).map_err(ctx)?;
        fs::rename(&temp.path, &dest).map_err(ctx)?;
        sync_dir(shard).map_err(ctx)?;
        if new_shard {
            sync_dir(objects).map_err(ctx)?;
        }
        if new_o {
            sync_dir(&self.bucket_dir(&obj.bucket)).map_err(ctx)?;
        }
        let modified = fs::metadata(&dest).and_then(|m| m.modified()).map_err(ctx)?;
        Ok(Stat {
            meta,
            size: temp.len,
            modified,
        })
    }

    /// Writes a whole object durably.
    pub fn put_bytes(
        &self,
        obj: &ObjectRef,
        body: &[u8],
        content_type: Option<String>,
        metadata: HashMap<String, String>,
    ) -> Result<Stat, ObjectError> {
        self.object_path(obj)?;
        let mut temp = self.temp(&obj.bucket)?;
        temp.write(body).map_err(|e| with_uri(e, obj))?;
        self.commit(temp, obj, content_type, metadata, None)
    }

    /// Opens an object: its file (positioned at the body's start), its stat.
    pub fn open_object(&self, obj: &ObjectRef) -> Result<(File, Stat), ObjectError> {
        let path = self.object_path(obj)?;
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.require_bucket(&obj.bucket)?;
                return Err(ObjectError::NotFound { uri: obj.uri() });
            }
            Err(e) => return Err(io(&format!("cannot read {obj}"), e)),
        };
        let stat = read_stat(&mut file).map_err(|e| io(&format!("cannot read {obj}"), e))?;
        // Two keys with one SHA-256 are not expected in this universe; still, the key recorded
        // decides.
        if stat.meta.key != obj.key {
            return Err(ObjectError::NotFound { uri: obj.uri() });
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io(&format!("cannot read {obj}"), e))?;
        Ok((file, stat))
    }

    /// An object's stat; `None` when absent.
    pub fn stat(&self, obj: &ObjectRef) -> Result<Option<Stat>, ObjectError> {
        match self.open_object(obj) {
            Ok((_, stat)) => Ok(Some(stat)),
            Err(ObjectError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A whole object, up to `max_bytes`.
    pub fn read(&self, obj: &ObjectRef, max_bytes: u64) -> Result<(Bytes, Stat), ObjectError> {
        let (file, stat) = self.open_object(obj)?;
        if stat.size > max_bytes {
            return Err(ObjectError::TooLarge {
                uri: obj.uri(),
                limit: max_bytes,
            });
        }
        let mut body = Vec::with_capacity(stat.size as usize);
        file.take(stat.size)
            .read_to_end(&mut body)
            .map_err(|e| io(&format!("cannot read {obj}"), e))?;
        Ok((Bytes::from(body), stat))
    }

    /// Deletes an object (absent: nothing to do, as S3 answers).
    pub fn delete(&self, obj: &ObjectRef) -> Result<(), ObjectError> {
        let path = self.object_path(obj)?;
        self.require_bucket(&obj.bucket)?;
        match self.stat(obj)? {
            None => Ok(()),
            Some(_) => {
                let ctx = |e| io(&format!("cannot delete {obj}"), e);
                fs::remove_file(&path).map_err(ctx)?;
                sync_dir(path.parent().expect("shard")).map_err(ctx)
            }
        }
    }

    /// Every object of a bucket, by key.
    pub fn list(&self, bucket: &str) -> Result<Vec<Stat>, ObjectError> {
        let dir = self.require_bucket(bucket)?.join("o");
        let mut out = vec![];
        let ctx = |e| io(&format!("cannot list the bucket {bucket}"), e);
        let shards = match fs::read_dir(&dir) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(ctx(e)),
        };
        for shard in shards.flatten() {
            for entry in fs::read_dir(shard.path()).map_err(ctx)?.flatten() {
                let Ok(mut f) = File::open(entry.path()) else {
                    continue; // deleted meanwhile
                };
                match read_stat(&mut f) {
                    Ok(stat) => out.push(stat),
                    Err(e) => tracing::warn!(file = %entry.path().display(), error = %e, "not an object file; skipped"),
                }
            }
        }
        out.sort_by(|a, b| a.meta.key.cmp(&b.meta.key));
        Ok(out)
    }

    fn upload_dir(&self, bucket: &str, upload_id: &str) -> Result<PathBuf, ObjectError> {
        // Ids are this store's own (32 hex digits): anything else is no upload, and never a path.
        if upload_id.len() != 32 || !upload_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ObjectError::Invalid(NO_SUCH_UPLOAD.into()));
        }
        Ok(self.require_bucket(bucket)?.join(".uploads").join(upload_id))
    }

    /// Starts a multipart upload; returns its id.
    pub fn create_upload(
        &self,
        obj: &ObjectRef,
        content_type: Option<String>,
        metadata: HashMap<String, String>,
    ) -> Result<String, ObjectError> {
        self.object_path(obj)?;
        let uploads = self.require_bucket(&obj.bucket)?.join(".uploads");
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = uploads.join(&id);
        let ctx = |e| io("cannot start the upload", e);
        mkdir(&uploads).map_err(ctx)?;
        mkdir(&dir).map_err(ctx)?;
        let meta = Meta {
            key: obj.key.clone(),
            content_type,
            etag: String::new(),
            metadata,
        };
        let json = serde_json::to_vec(&meta).map_err(|e| ObjectError::Invalid(e.to_string()))?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join("upload.json"))
            .map_err(ctx)?;
        f.write_all(&json).and_then(|()| f.sync_all()).map_err(ctx)?;
        sync_dir(&dir).and_then(|()| sync_dir(&uploads)).map_err(ctx)?;
        Ok(id)
    }

    fn upload_meta(&self, obj: &ObjectRef, upload_id: &str) -> Result<(PathBuf, Meta), ObjectError> {
        let dir = self.upload_dir(&obj.bucket, upload_id)?;
        let text = fs::read(dir.join("upload.json")).map_err(|_| ObjectError::Invalid(NO_SUCH_UPLOAD.into()))?;
        let meta: Meta = serde_json::from_slice(&text).map_err(|_| ObjectError::Invalid(NO_SUCH_UPLOAD.into()))?;
        if meta.key != obj.key {
            return Err(ObjectError::Invalid(NO_SUCH_UPLOAD.into()));
        }
        Ok((dir, meta))
    }

    /// Stores one part of an upload from a written temporary file; returns its ETag.
    pub fn commit_part(
        &self,
        temp: TempObject,
        obj: &ObjectRef,
        upload_id: &str,
        number: u32,
    ) -> Result<String, ObjectError> {
        if !(1..=10_000).contains(&number) {
            return Err(ObjectError::Invalid(format!(
                "Part number must be an integer between 1 and 10000, inclusive (was {number})"
            )));
        }
        let (dir, _) = self.upload_meta(obj, upload_id)?;
        let etag = etag_of(&temp.md5());
        let ctx = |e| io("cannot store the part", e);
        temp.file.sync_all().map_err(ctx)?;
        fs::rename(&temp.path, dir.join(number.to_string())).map_err(ctx)?;
        sync_dir(&dir).map_err(ctx)?;
        Ok(etag)
    }

    /// Completes an upload from its parts (in the order given, which must ascend): the object
    /// is their concatenation, its ETag S3's multipart form.
    pub fn complete_upload(&self, obj: &ObjectRef, upload_id: &str, parts: &[Part]) -> Result<Stat, ObjectError> {
        let (dir, meta) = self.upload_meta(obj, upload_id)?;
        if parts.is_empty() {
            return Err(ObjectError::Invalid(
                "You must specify at least one part (MalformedXML)".into(),
            ));
        }
        if parts.windows(2).any(|w| w[0].number >= w[1].number) {
            return Err(ObjectError::Invalid(INVALID_PART_ORDER.into()));
        }
        let mut temp = self.temp(&obj.bucket)?;
        let mut md5s = Md5::new();
        for part in parts {
            let mut f =
                File::open(dir.join(part.number.to_string())).map_err(|_| ObjectError::Invalid(INVALID_PART.into()))?;
            let mut data = vec![];
            f.read_to_end(&mut data).map_err(|e| io("cannot read a part", e))?;
            let md5: [u8; 16] = Md5::digest(&data).into();
            if etag_of(&md5) != quoted(&part.etag) {
                return Err(ObjectError::Invalid(INVALID_PART.into()));
            }
            md5s.update(md5);
            temp.write(&data).map_err(|e| with_uri(e, obj))?;
        }
        let etag = format!("\"{}-{}\"", hex_lower(&md5s.finalize()), parts.len());
        let stat = self.commit(temp, obj, meta.content_type, meta.metadata, Some(etag))?;
        let _ = fs::remove_dir_all(&dir);
        Ok(stat)
    }

    /// Abandons an upload and its parts.
    pub fn abort_upload(&self, obj: &ObjectRef, upload_id: &str) -> Result<(), ObjectError> {
        let (dir, _) = self.upload_meta(obj, upload_id)?;
        fs::remove_dir_all(&dir).map_err(|e| io("cannot abort the upload", e))
    }
}

/// [`ObjectError::Invalid`]'s message for a bucket that still holds objects.
pub const BUCKET_NOT_EMPTY: &str = "The bucket you tried to delete is not empty";
/// [`ObjectError::Invalid`]'s message for an unknown upload id.
pub const NO_SUCH_UPLOAD: &str = "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.";
/// [`ObjectError::Invalid`]'s message for a part that was not uploaded (or whose ETag differs).
pub const INVALID_PART: &str = "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.";
/// [`ObjectError::Invalid`]'s message for parts not in ascending order.
pub const INVALID_PART_ORDER: &str =
    "The list of parts was not in ascending order. Parts must be ordered by part number.";

fn quoted(etag: &str) -> String {
    if etag.starts_with('"') {
        etag.to_string()
    } else {
        format!("\"{etag}\"")
    }
}

fn with_uri(e: ObjectError, obj: &ObjectRef) -> ObjectError {
    match e {
        ObjectError::TooLarge { limit, .. } => ObjectError::TooLarge { uri: obj.uri(), limit },
        e => e,
    }
}

/// Reads the metadata at the end of an object file.
fn read_stat(f: &mut File) -> io::Result<Stat> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let m = f.metadata()?;
    let len = m.len();
    if len < 8 {
        return Err(bad("too short for an object file"));
    }
    let mut tail = [0u8; 8];
    f.seek(SeekFrom::Start(len - 8))?;
    f.read_exact(&mut tail)?;
    if &tail[4..] != MAGIC {
        return Err(bad("no object trailer"));
    }
    let meta_len = u64::from(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")));
    if meta_len > MAX_META as u64 || meta_len + 8 > len {
        return Err(bad("object trailer out of range"));
    }
    let mut json = vec![0u8; meta_len as usize];
    f.seek(SeekFrom::Start(len - 8 - meta_len))?;
    f.read_exact(&mut json)?;
    let meta: Meta = serde_json::from_slice(&json).map_err(|e| bad(&e.to_string()))?;
    Ok(Stat {
        meta,
        size: len - 8 - meta_len,
        modified: m.modified()?,
    })
}

impl ObjectStore for Embedded {
    fn get(&self, obj: &ObjectRef, max_bytes: u64) -> BoxFuture<'_, Result<Object, ObjectError>> {
        let (store, obj) = (self.clone(), obj.clone());
        Box::pin(async move {
            let (body, stat) = blocking(move || store.read(&obj, max_bytes)).await?;
            Ok(Object {
                body,
                content_type: stat.meta.content_type,
            })
        })
    }

    fn put(&self, obj: &ObjectRef, body: Bytes, content_type: Option<&str>) -> BoxFuture<'_, Result<(), ObjectError>> {
        let (store, obj, ct) = (self.clone(), obj.clone(), content_type.map(str::to_string));
        Box::pin(async move { blocking(move || store.put_bytes(&obj, &body, ct, HashMap::new()).map(|_| ())).await })
    }

    fn head(&self, obj: &ObjectRef) -> BoxFuture<'_, Result<Option<ObjectMeta>, ObjectError>> {
        let (store, obj) = (self.clone(), obj.clone());
        Box::pin(async move {
            let stat = blocking(move || store.stat(&obj)).await?;
            Ok(stat.map(|s| ObjectMeta {
                size: s.size,
                content_type: s.meta.content_type,
            }))
        })
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn embedded(&self) -> Option<Embedded> {
        Some(self.clone())
    }
}

/// Runs file-system work off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ObjectError> + Send + 'static,
) -> Result<T, ObjectError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ObjectError::Unavailable(format!("the object store's worker failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Component;

    fn obj(b: &str, k: &str) -> ObjectRef {
        ObjectRef {
            bucket: b.into(),
            key: k.into(),
        }
    }

    #[test]
    fn put_get_head_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = Embedded::open(&dir.path().join("objects"), 1 << 20).unwrap();
        let o = obj("bkt", "in/a.json");
        assert!(matches!(
            s.put_bytes(&o, b"x", None, HashMap::new()),
            Err(ObjectError::NoSuchBucket { .. })
        ));
        assert!(s.create_bucket("bkt").unwrap());
        assert!(!s.create_bucket("bkt").unwrap());
        let st = s
            .put_bytes(&o, b"{\"a\":1}", Some("application/json".into()), HashMap::new())
            .unwrap();
        assert_eq!(st.size, 7);
        assert_eq!(st.meta.etag, etag_of(&Md5::digest(b"{\"a\":1}")));
        let (body, stat) = s.read(&o, 100).unwrap();
        assert_eq!(&body[..], b"{\"a\":1}");
        assert_eq!(stat.meta.content_type.as_deref(), Some("application/json"));
        assert!(matches!(s.read(&o, 6), Err(ObjectError::TooLarge { limit: 6, .. })));
        assert!(matches!(
            s.read(&obj("bkt", "nope"), 6),
            Err(ObjectError::NotFound { .. })
        ));
        assert!(matches!(
            s.read(&obj("nobkt", "k"), 6),
            Err(ObjectError::NoSuchBucket { .. })
        ));
        s.put_bytes(&obj("bkt", "../../etc/passwd"), b"", None, HashMap::new())
            .unwrap();
        let keys: Vec<String> = s.list("bkt").unwrap().into_iter().map(|s| s.meta.key).collect();
        assert_eq!(keys, ["../../etc/passwd", "in/a.json"]);
        assert!(matches!(s.delete_bucket("bkt"), Err(ObjectError::Invalid(m)) if m == BUCKET_NOT_EMPTY));
        s.delete(&o).unwrap();
        s.delete(&o).unwrap();
        s.delete(&obj("bkt", "../../etc/passwd")).unwrap();
        s.delete_bucket("bkt").unwrap();
        assert!(s.list_buckets().unwrap().is_empty());
    }

    #[test]
    fn too_large_puts_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let s = Embedded::open(dir.path(), 4).unwrap();
        s.create_bucket("bkt").unwrap();
        let e = s
            .put_bytes(&obj("bkt", "k"), b"12345", None, HashMap::new())
            .unwrap_err();
        assert!(
            matches!(e, ObjectError::TooLarge { limit: 4, ref uri } if uri == "s3://bkt/k"),
            "{e}"
        );
        assert_eq!(fs::read_dir(dir.path().join("bkt/.tmp")).unwrap().count(), 0);
        assert!(s.stat(&obj("bkt", "k")).unwrap().is_none());
    }

    #[test]
    fn multipart_uploads_concatenate_their_parts() {
        let dir = tempfile::tempdir().unwrap();
        let s = Embedded::open(dir.path(), 1 << 20).unwrap();
        s.create_bucket("bkt").unwrap();
        let o = obj("bkt", "big");
        let id = s.create_upload(&o, Some("text/plain".into()), HashMap::new()).unwrap();
        let mut etags = vec![];
        for (n, data) in [(1u32, &b"hello "[..]), (2, b"world")] {
            let mut t = s.temp("bkt").unwrap();
            t.write(data).unwrap();
            etags.push(Part {
                number: n,
                etag: s.commit_part(t, &o, &id, n).unwrap(),
            });
        }
        let reversed: Vec<Part> = etags.iter().rev().cloned().collect();
        assert!(
            matches!(s.complete_upload(&o, &id, &reversed), Err(ObjectError::Invalid(m)) if m == INVALID_PART_ORDER)
        );
        let st = s.complete_upload(&o, &id, &etags).unwrap();
        assert!(st.meta.etag.ends_with("-2\""), "{}", st.meta.etag);
        assert_eq!(&s.read(&o, 100).unwrap().0[..], b"hello world");
        assert!(s.complete_upload(&o, &id, &etags).is_err());
        assert!(matches!(s.abort_upload(&o, "../x"), Err(ObjectError::Invalid(m)) if m == NO_SUCH_UPLOAD));
    }

    proptest! {
        /// Whatever the key, its file is three plain segments below the bucket: `o`, two hex
        /// digits, 64 hex digits; nothing of the key reaches the path.
        #[test]
        fn keys_never_escape_their_bucket(key in "\\PC{0,40}|[./]{0,12}|(\\.\\./){1,5}[a-z]{0,3}") {
            let p = key_path(&key);
            let parts: Vec<Component> = p.components().collect();
            prop_assert_eq!(parts.len(), 3);
            prop_assert!(parts.iter().all(|c| matches!(c, Component::Normal(_))));
            let names: Vec<String> = parts.iter().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            prop_assert_eq!(names[0].as_str(), "o");
            prop_assert!(names[1].len() == 2 && names[2].len() == 64);
            prop_assert!(names[1..].iter().all(|n| n.bytes().all(|b| b.is_ascii_hexdigit())));
            prop_assert!(names[2].starts_with(names[1].as_str()));
        }

        /// Object paths of any accepted bucket and key stay under the root's bucket directory,
        /// and what is put under a key reads back under that key only.
        #[test]
        fn objects_round_trip_under_their_key(keys in proptest::collection::vec("\\PC{1,20}|[./]{1,8}", 1..5)) {
            let dir = tempfile::tempdir().unwrap();
            let s = Embedded::open(dir.path(), 1 << 20).unwrap();
            s.create_bucket("bkt").unwrap();
            for (i, k) in keys.iter().enumerate() {
                let o = obj("bkt", k);
                prop_assert!(s.object_path(&o).unwrap().starts_with(dir.path().join("bkt")));
                s.put_bytes(&o, i.to_string().as_bytes(), None, HashMap::new()).unwrap();
            }
            for k in &keys {
                let last = keys.iter().rposition(|x| x == k).unwrap();
                let want = last.to_string();
                prop_assert_eq!(&s.read(&obj("bkt", k), 100).unwrap().0[..], want.as_bytes());
            }
            let mut want: Vec<&String> = keys.iter().collect();
            want.sort();
            want.dedup();
            let got: Vec<String> = s.list("bkt").unwrap().into_iter().map(|s| s.meta.key).collect();
            prop_assert_eq!(got.iter().collect::<Vec<_>>(), want);
        }
    }
}
