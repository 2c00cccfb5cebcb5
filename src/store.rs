//! The durable store: embedded SQLite with schema migrations.
//!
//! Resources are stored as JSON documents of their core types, keyed by kind and name, plus
//! tables for instances, events, tags and capacity overrides. Every accepted change is written
//! before the API answers, in WAL mode with `synchronous=FULL`, so a SIGKILL loses nothing
//! that a client was told succeeded.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::core::endpoint::{Event, InstanceRecord};
use crate::core::model::{Tag, Timestamp};

/// A store failure.
#[derive(Debug, Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    /// Migrations failed.
    #[error("schema migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// The database file's permissions cannot be set.
    #[error("cannot make the store private to its owner: {0}")]
    Io(std::io::Error),
    /// A stored document does not decode (corruption or an incompatible downgrade).
    #[error("stored document is unreadable: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Kinds of named resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `CreateModel`.
    Model,
    /// `CreateEndpointConfig`.
    EndpointConfig,
    /// `CreateEndpoint`.
    Endpoint,
    /// Application Auto Scaling `RegisterScalableTarget` (named by resource id).
    ScalableTarget,
    /// Application Auto Scaling `PutScalingPolicy` (named `<resource id>|<policy name>`).
    ScalingPolicy,
    /// One scaling activity (named by activity id).
    ScalingActivity,
    /// A CloudWatch alarm (named by alarm name).
    Alarm,
    /// One alarm history item (named `<alarm>|<time>|<id>`).
    AlarmHistory,
    /// `CreateInferenceComponent` (named by component name).
    InferenceComponent,
    /// One copy of an inference component (named by copy id).
    ComponentCopy,
}

/// Adds or overwrites tags inside a transaction.
fn put_tags(tx: &rusqlite::Transaction<'_>, arn: &str, tags: &[Tag]) -> Result<()> {
    let base: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM tags", [], |r| r.get(0))?;
    for (i, t) in tags.iter().enumerate() {
        tx.execute(
            "INSERT INTO tags (arn, key, value, seq) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (arn, key) DO UPDATE SET value = excluded.value",
            params![arn, t.key, t.value, base + 1 + i as i64],
        )?;
    }
    Ok(())
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Model => "model",
            Kind::EndpointConfig => "endpoint-config",
            Kind::Endpoint => "endpoint",
            Kind::ScalableTarget => "scalable-target",
            Kind::ScalingPolicy => "scaling-policy",
            Kind::ScalingActivity => "scaling-activity",
            Kind::Alarm => "alarm",
            Kind::AlarmHistory => "alarm-history",
            Kind::InferenceComponent => "inference-component",
            Kind::ComponentCopy => "component-copy",
        }
    }
}

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            "CREATE TABLE resources (
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            created REAL NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (kind, name)
        );
        CREATE TABLE instances (
            id TEXT PRIMARY KEY,
            endpoint TEXT NOT NULL,
            body TEXT NOT NULL
        );
        CREATE INDEX instances_by_endpoint ON instances (endpoint);
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            endpoint TEXT NOT NULL,
            time REAL NOT NULL,
            body TEXT NOT NULL
        );
        CREATE INDEX events_by_endpoint ON events (endpoint, seq);
        CREATE TABLE tags (
            arn TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (arn, key)
        );
        CREATE TABLE capacity_overrides (
            instance_type TEXT PRIMARY KEY,
            slots INTEGER NOT NULL
        );",
        ),
        // Identities (IAM): users, their access keys, tags and inline policies, groups, their
        // members and inline policies. User and group names are unique regardless of case, as
        // in IAM. Access keys hold their secret: SigV4 verification needs it (the database file
        // is made private to its owner by `Store::open`).
        M::up(
            "CREATE TABLE iam_users (
            name TEXT COLLATE NOCASE PRIMARY KEY,
            user_id TEXT NOT NULL UNIQUE,
            path TEXT NOT NULL,
            arn TEXT NOT NULL,
            created REAL NOT NULL
        );
        CREATE TABLE iam_user_tags (
            user_name TEXT COLLATE NOCASE NOT NULL REFERENCES iam_users (name),
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (user_name, key)
        );
        CREATE TABLE iam_access_keys (
            id TEXT PRIMARY KEY,
            user_name TEXT COLLATE NOCASE NOT NULL REFERENCES iam_users (name),
            secret TEXT NOT NULL,
            status TEXT NOT NULL,
            created REAL NOT NULL,
            last_used REAL
        );
        CREATE INDEX iam_access_keys_by_user ON iam_access_keys (user_name);
        CREATE TABLE iam_user_policies (
            user_name TEXT COLLATE NOCASE NOT NULL REFERENCES iam_users (name),
            name TEXT NOT NULL,
            document TEXT NOT NULL,
            PRIMARY KEY (user_name, name)
        );
        CREATE TABLE iam_groups (
            name TEXT COLLATE NOCASE PRIMARY KEY,
            group_id TEXT NOT NULL UNIQUE,
            path TEXT NOT NULL,
            arn TEXT NOT NULL,
            created REAL NOT NULL
        );
        CREATE TABLE iam_group_members (
            group_name TEXT COLLATE NOCASE NOT NULL REFERENCES iam_groups (name),
            user_name TEXT COLLATE NOCASE NOT NULL REFERENCES iam_users (name),
            seq INTEGER NOT NULL,
            PRIMARY KEY (group_name, user_name)
        );
        CREATE TABLE iam_group_policies (
            group_name TEXT COLLATE NOCASE NOT NULL REFERENCES iam_groups (name),
            name TEXT NOT NULL,
            document TEXT NOT NULL,
            PRIMARY KEY (group_name, name)
        );",
        ),
        // The fleet ledger (`control::ledger`): what each endpoint held, sampled, for cost.
        M::up(
            "CREATE TABLE fleet_usage (
            endpoint TEXT NOT NULL,
            variant TEXT NOT NULL,
            instance_type TEXT NOT NULL,
            preferred_type TEXT NOT NULL,
            start REAL NOT NULL,
            seconds REAL NOT NULL,
            count INTEGER NOT NULL
        );
        CREATE INDEX fleet_usage_by_start ON fleet_usage (start);",
        ),
    ])
}

/// A stored IAM user.
#[derive(Debug, Clone, PartialEq)]
pub struct IamUserRow {
    /// `UserName`, unique regardless of case.
    pub name: String,
    /// `UserId` (`AIDA…`).
    pub user_id: String,
    /// `Path` (`/` or `/…/`).
    pub path: String,
    /// `Arn`.
    pub arn: String,
    /// `CreateDate`, epoch seconds.
    pub created: Timestamp,
    /// Its tags, in the order they were first added.
    pub tags: Vec<Tag>,
}

/// A stored access key (its secret included: SigV4 verification needs it).
#[derive(Clone, PartialEq)]
pub struct IamAccessKeyRow {
    /// `AccessKeyId` (`AKIA…`).
    pub id: String,
    /// The user it belongs to.
    pub user_name: String,
    /// `SecretAccessKey`.
    pub secret: String,
    /// `Active` or `Inactive`.
    pub status: String,
    /// `CreateDate`, epoch seconds.
    pub created: Timestamp,
    /// When it was last used, if ever.
    pub last_used: Option<Timestamp>,
}

impl std::fmt::Debug for IamAccessKeyRow {
    /// Never shows the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamAccessKeyRow")
            .field("id", &self.id)
            .field("user_name", &self.user_name)
            .field("status", &self.status)
            .field("created", &self.created)
            .field("last_used", &self.last_used)
            .finish_non_exhaustive()
    }
}

/// A stored inline policy of a user or a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamPolicyRow {
    /// The user or group it is embedded in.
    pub owner: String,
    /// `PolicyName`.
    pub name: String,
    /// `PolicyDocument`, as the client sent it.
    pub document: String,
}

/// A stored IAM group.
#[derive(Debug, Clone, PartialEq)]
pub struct IamGroupRow {
    /// `GroupName`, unique regardless of case.
    pub name: String,
    /// `GroupId` (`AGPA…`).
    pub group_id: String,
    /// `Path`.
    pub path: String,
    /// `Arn`.
    pub arn: String,
    /// `CreateDate`, epoch seconds.
    pub created: Timestamp,
}

/// Every stored identity, as read at start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IamRows {
    /// Users, by name (case-insensitive order).
    pub users: Vec<IamUserRow>,
    /// Access keys, oldest first.
    pub access_keys: Vec<IamAccessKeyRow>,
    /// Users' inline policies.
    pub user_policies: Vec<IamPolicyRow>,
    /// Groups, by name.
    pub groups: Vec<IamGroupRow>,
    /// Group memberships `(group, user)`, in the order they were added.
    pub members: Vec<(String, String)>,
    /// Groups' inline policies.
    pub group_policies: Vec<IamPolicyRow>,
}

/// One change to the identities, written by [`Store::iam_write`] together with the others of
/// its batch.
#[derive(Debug, Clone)]
pub enum IamWrite<'a> {
    /// Inserts a user and its tags.
    InsertUser(&'a IamUserRow),
    /// Deletes a user (and its tags; its keys, policies and memberships must be gone).
    DeleteUser(&'a str),
    /// Adds or overwrites tags of a user.
    PutUserTags(&'a str, &'a [Tag]),
    /// Removes tag keys from a user.
    DeleteUserTags(&'a str, &'a [String]),
    /// Inserts an access key.
    InsertAccessKey(&'a IamAccessKeyRow),
    /// Deletes an access key.
    DeleteAccessKey(&'a str),
    /// Sets an access key's status.
    SetAccessKeyStatus(&'a str, &'a str),
    /// Creates or replaces a user's inline policy.
    PutUserPolicy(&'a IamPolicyRow),
    /// Deletes a user's inline policy `(user, name)`.
    DeleteUserPolicy(&'a str, &'a str),
    /// Inserts a group.
    InsertGroup(&'a IamGroupRow),
    /// Deletes a group (its members and policies must be gone).
    DeleteGroup(&'a str),
    /// Adds a user to a group `(group, user)`.
    AddMember(&'a str, &'a str),
    /// Removes a user from a group `(group, user)`.
    RemoveMember(&'a str, &'a str),
    /// Creates or replaces a group's inline policy.
    PutGroupPolicy(&'a IamPolicyRow),
    /// Deletes a group's inline policy `(group, name)`.
    DeleteGroupPolicy(&'a str, &'a str),
}

fn iam_write_one(tx: &rusqlite::Transaction<'_>, w: &IamWrite<'_>) -> Result<()> {
    match w {
        IamWrite::InsertUser(u) => {
            tx.execute(
                "INSERT INTO iam_users (name, user_id, path, arn, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![u.name, u.user_id, u.path, u.arn, u.created],
            )?;
            put_user_tags(tx, &u.name, &u.tags)?;
        }
        IamWrite::DeleteUser(name) => {
            tx.execute("DELETE FROM iam_user_tags WHERE user_name = ?1", params![name])?;
            tx.execute("DELETE FROM iam_users WHERE name = ?1", params![name])?;
        }
        IamWrite::PutUserTags(name, tags) => put_user_tags(tx, name, tags)?,
        IamWrite::DeleteUserTags(name, keys) => {
            for k in *keys {
                tx.execute(
                    "DELETE FROM iam_user_tags WHERE user_name = ?1 AND key = ?2",
                    params![name, k],
                )?;
            }
        }
        IamWrite::InsertAccessKey(k) => {
            tx.execute(
                "INSERT INTO iam_access_keys (id, user_name, secret, status, created, last_used)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![k.id, k.user_name, k.secret, k.status, k.created, k.last_used],
            )?;
        }
        IamWrite::DeleteAccessKey(id) => {
            tx.execute("DELETE FROM iam_access_keys WHERE id = ?1", params![id])?;
        }
        IamWrite::SetAccessKeyStatus(id, status) => {
            tx.execute(
                "UPDATE iam_access_keys SET status = ?2 WHERE id = ?1",
                params![id, status],
            )?;
        }
        IamWrite::PutUserPolicy(p) => {
            tx.execute(
                "INSERT INTO iam_user_policies (user_name, name, document) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_name, name) DO UPDATE SET document = excluded.document",
                params![p.owner, p.name, p.document],
            )?;
        }
        IamWrite::DeleteUserPolicy(user, name) => {
            tx.execute(
                "DELETE FROM iam_user_policies WHERE user_name = ?1 AND name = ?2",
                params![user, name],
            )?;
        }
        IamWrite::InsertGroup(g) => {
            tx.execute(
                "INSERT INTO iam_groups (name, group_id, path, arn, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![g.name, g.group_id, g.path, g.arn, g.created],
            )?;
        }
        IamWrite::DeleteGroup(name) => {
            tx.execute("DELETE FROM iam_groups WHERE name = ?1", params![name])?;
        }
        IamWrite::AddMember(group, user) => {
            let seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM iam_group_members", [], |r| {
                r.get(0)
            })?;
            tx.execute(
                "INSERT OR IGNORE INTO iam_group_members (group_name, user_name, seq) VALUES (?1, ?2, ?3)",
                params![group, user, seq],
            )?;
        }
        IamWrite::RemoveMember(group, user) => {
            tx.execute(
                "DELETE FROM iam_group_members WHERE group_name = ?1 AND user_name = ?2",
                params![group, user],
            )?;
        }
        IamWrite::PutGroupPolicy(p) => {
            tx.execute(
                "INSERT INTO iam_group_policies (group_name, name, document) VALUES (?1, ?2, ?3)
                 ON CONFLICT (group_name, name) DO UPDATE SET document = excluded.document",
                params![p.owner, p.name, p.document],
            )?;
        }
        IamWrite::DeleteGroupPolicy(group, name) => {
            tx.execute(
                "DELETE FROM iam_group_policies WHERE group_name = ?1 AND name = ?2",
                params![group, name],
            )?;
        }
    }
    Ok(())
}

fn put_user_tags(tx: &rusqlite::Transaction<'_>, user: &str, tags: &[Tag]) -> Result<()> {
    let base: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM iam_user_tags", [], |r| r.get(0))?;
    for (i, t) in tags.iter().enumerate() {
        tx.execute(
            "INSERT INTO iam_user_tags (user_name, key, value, seq) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (user_name, key) DO UPDATE SET value = excluded.value",
            params![user, t.key, t.value, base + 1 + i as i64],
        )?;
    }
    Ok(())
}

/// Creates the SQLite file `path` (if missing) readable and writable by its owner only, and
/// narrows SQLite's `-wal` and `-shm` side files too where they exist (SQLite creates them with
/// the database file's mode). Every SQLite file of the data dir goes through it before anything
/// is written: the store (secret keys), the audit trail, the queue, the notification outbox.
pub fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = std::path::PathBuf::from(p);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// The store. Cheap operations behind one connection; callers keep transactions short.
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating and migrating) the database at `path`.
    ///
    /// The database holds access keys' secrets, so the file (and SQLite's `-wal` and `-shm`
    /// files, which SQLite creates with the database file's mode) is made readable by its owner
    /// only, before anything is written to it.
    pub fn open(path: &Path) -> Result<Self> {
        create_private(path).map_err(StoreError::Io)?;
        let mut conn = Connection::open(path)?;
        Self::init(&mut conn)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    /// An in-memory store (tests).
    pub fn in_memory() -> Result<Self> {
        let mut conn = Connection::open_in_memory()?;
        Self::init(&mut conn)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn init(conn: &mut Connection) -> Result<()> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations().to_latest(conn)?;
        Ok(())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    /// Inserts a resource; `Ok(false)` if one of that kind and name exists already.
    pub fn insert<T: Serialize>(&self, kind: Kind, name: &str, created: Timestamp, value: &T) -> Result<bool> {
        self.insert_tagged(kind, name, created, value, "", &[])
    }

    /// Inserts a resource and its tags in one transaction: both are written, or neither.
    /// `Ok(false)` (and nothing written) if one of that kind and name exists already.
    /// (A name that differs from an existing one of its kind only in case is taken too.)
    pub fn insert_tagged<T: Serialize>(
        &self,
        kind: Kind,
        name: &str,
        created: Timestamp,
        value: &T,
        arn: &str,
        tags: &[Tag],
    ) -> Result<bool> {
        let body = serde_json::to_string(value)?;
        self.with(|c| {
            let tx = c.transaction()?;
            // SageMaker names are unique regardless of case (their ARNs are lower-cased, and
            // tags are kept by ARN): `Prod` and `prod` cannot both exist.
            let taken: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM resources WHERE kind = ?1 AND name = ?2 COLLATE NOCASE)",
                params![kind.as_str(), name],
                |r| r.get(0),
            )?;
            if taken {
                return Ok(false);
            }
            let n = tx.execute(
                "INSERT OR IGNORE INTO resources (kind, name, created, body) VALUES (?1, ?2, ?3, ?4)",
                params![kind.as_str(), name, created, body],
            )?;
            if n == 1 {
                put_tags(&tx, arn, tags)?;
            }
            tx.commit()?;
            Ok(n == 1)
        })
    }

    /// Inserts or replaces a resource.
    pub fn put<T: Serialize>(&self, kind: Kind, name: &str, created: Timestamp, value: &T) -> Result<()> {
        self.put_tagged(kind, name, created, value, "", &[])
    }

    /// Inserts or replaces a resource and adds `tags` to it, in one transaction.
    pub fn put_tagged<T: Serialize>(
        &self,
        kind: Kind,
        name: &str,
        created: Timestamp,
        value: &T,
        arn: &str,
        tags: &[Tag],
    ) -> Result<()> {
        let body = serde_json::to_string(value)?;
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO resources (kind, name, created, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body",
                params![kind.as_str(), name, created, body],
            )?;
            put_tags(&tx, arn, tags)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Deletes the resources of `kind` created before `before` (retention of records such as
    /// alarm history); how many went.
    pub fn delete_older(&self, kind: Kind, before: Timestamp) -> Result<usize> {
        self.with(|c| {
            Ok(c.execute(
                "DELETE FROM resources WHERE kind = ?1 AND created < ?2",
                params![kind.as_str(), before],
            )?)
        })
    }

    /// Deletes resources and their tags in one transaction: all of them, or none.
    pub fn delete_all(&self, resources: &[(Kind, &str, &str)]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            for (kind, name, arn) in resources {
                tx.execute(
                    "DELETE FROM resources WHERE kind = ?1 AND name = ?2",
                    params![kind.as_str(), name],
                )?;
                tx.execute("DELETE FROM tags WHERE arn = ?1", params![arn])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Reads a resource.
    pub fn get<T: DeserializeOwned>(&self, kind: Kind, name: &str) -> Result<Option<T>> {
        let body: Option<String> = self.with(|c| {
            Ok(c.query_row(
                "SELECT body FROM resources WHERE kind = ?1 AND name = ?2",
                params![kind.as_str(), name],
                |r| r.get(0),
            )
            .optional()?)
        })?;
        Ok(body.map(|b| serde_json::from_str(&b)).transpose()?)
    }

    /// Whether a resource exists.
    pub fn exists(&self, kind: Kind, name: &str) -> Result<bool> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT 1 FROM resources WHERE kind = ?1 AND name = ?2",
                params![kind.as_str(), name],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
        })
    }

    /// Deletes a resource and its tags; `Ok(false)` if it did not exist.
    pub fn delete(&self, kind: Kind, name: &str, arn: &str) -> Result<bool> {
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "DELETE FROM resources WHERE kind = ?1 AND name = ?2",
                params![kind.as_str(), name],
            )?;
            tx.execute("DELETE FROM tags WHERE arn = ?1", params![arn])?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    /// Every resource of a kind, in name order.
    pub fn list<T: DeserializeOwned>(&self, kind: Kind) -> Result<Vec<T>> {
        let bodies: Vec<String> = self.with(|c| {
            let mut st = c.prepare("SELECT body FROM resources WHERE kind = ?1 ORDER BY name")?;
            let rows = st.query_map(params![kind.as_str()], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })?;
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).map_err(StoreError::from))
            .collect()
    }

    /// Writes an instance record.
    pub fn put_instance(&self, inst: &InstanceRecord) -> Result<()> {
        let body = serde_json::to_string(inst)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO instances (id, endpoint, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                params![inst.instance_id, inst.endpoint_name, body],
            )?;
            Ok(())
        })
    }

    /// Forgets an instance (after it has been stopped).
    pub fn delete_instance(&self, id: &str) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM instances WHERE id = ?1", params![id])?;
            Ok(())
        })
    }

    /// Every instance record.
    pub fn instances(&self) -> Result<Vec<InstanceRecord>> {
        let bodies: Vec<String> = self.with(|c| {
            let mut st = c.prepare("SELECT body FROM instances ORDER BY id")?;
            let rows = st.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })?;
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).map_err(StoreError::from))
            .collect()
    }

    /// Appends an event.
    pub fn append_event(&self, e: &Event) -> Result<()> {
        let body = serde_json::to_string(e)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO events (endpoint, time, body) VALUES (?1, ?2, ?3)",
                params![e.endpoint_name, e.time, body],
            )?;
            Ok(())
        })
    }

    /// The events of an endpoint, oldest first.
    pub fn events(&self, endpoint: &str) -> Result<Vec<Event>> {
        let bodies: Vec<String> = self.with(|c| {
            let mut st = c.prepare("SELECT body FROM events WHERE endpoint = ?1 ORDER BY seq")?;
            let rows = st.query_map(params![endpoint], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })?;
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).map_err(StoreError::from))
            .collect()
    }

    /// Adds or overwrites tags on a resource.
    pub fn add_tags(&self, arn: &str, tags: &[Tag]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            put_tags(&tx, arn, tags)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// The tags of a resource, in the order they were first added.
    pub fn tags(&self, arn: &str) -> Result<Vec<Tag>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT key, value FROM tags WHERE arn = ?1 ORDER BY seq")?;
            let rows = st.query_map(params![arn], |r| {
                Ok(Tag {
                    key: r.get(0)?,
                    value: r.get(1)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<Tag>>>()?)
        })
    }

    /// Removes tag keys from a resource.
    pub fn delete_tags(&self, arn: &str, keys: &[String]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            for k in keys {
                tx.execute("DELETE FROM tags WHERE arn = ?1 AND key = ?2", params![arn, k])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Persists a run-time capacity override (`None` removes it).
    pub fn set_capacity_override(&self, instance_type: &str, slots: Option<u32>) -> Result<()> {
        self.with(|c| {
            match slots {
                Some(s) => c.execute(
                    "INSERT INTO capacity_overrides (instance_type, slots) VALUES (?1, ?2)
                     ON CONFLICT (instance_type) DO UPDATE SET slots = excluded.slots",
                    params![instance_type, s],
                )?,
                None => c.execute(
                    "DELETE FROM capacity_overrides WHERE instance_type = ?1",
                    params![instance_type],
                )?,
            };
            Ok(())
        })
    }

    /// Appends fleet-ledger samples in one transaction.
    pub fn append_usage(&self, rows: &[crate::core::cost::UsageRow]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            for r in rows {
                tx.execute(
                    "INSERT INTO fleet_usage (endpoint, variant, instance_type, preferred_type, start, seconds, count)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        r.endpoint,
                        r.variant,
                        r.instance_type,
                        r.preferred_type,
                        r.start,
                        r.seconds,
                        r.count
                    ],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Fleet-ledger samples that start at or after `since`, of one endpoint or all, oldest first.
    pub fn usage_since(&self, since: Timestamp, endpoint: Option<&str>) -> Result<Vec<crate::core::cost::UsageRow>> {
        self.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT endpoint, variant, instance_type, preferred_type, start, seconds, count FROM fleet_usage
             WHERE start >= ?1 AND (?2 IS NULL OR endpoint = ?2) ORDER BY start",
            )?;
            let rows = stmt.query_map(params![since, endpoint], |r| {
                Ok(crate::core::cost::UsageRow {
                    endpoint: r.get(0)?,
                    variant: r.get(1)?,
                    instance_type: r.get(2)?,
                    preferred_type: r.get(3)?,
                    start: r.get(4)?,
                    seconds: r.get(5)?,
                    count: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Deletes fleet-ledger samples that start before `before`; returns how many.
    pub fn delete_usage_before(&self, before: Timestamp) -> Result<usize> {
        self.with(|c| Ok(c.execute("DELETE FROM fleet_usage WHERE start < ?1", params![before])?))
    }

    /// Every run-time capacity override.
    pub fn capacity_overrides(&self) -> Result<Vec<(String, u32)>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT instance_type, slots FROM capacity_overrides ORDER BY instance_type")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<(String, u32)>>>()?)
        })
    }

    /// Writes a batch of identity changes in one transaction: all of them, or none.
    pub fn iam_write(&self, writes: &[IamWrite<'_>]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            for w in writes {
                iam_write_one(&tx, w)?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Every stored identity.
    pub fn iam_rows(&self) -> Result<IamRows> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut users: Vec<IamUserRow> = {
                let mut st =
                    tx.prepare("SELECT name, user_id, path, arn, created FROM iam_users ORDER BY name COLLATE NOCASE")?;
                let rows = st.query_map([], |r| {
                    Ok(IamUserRow {
                        name: r.get(0)?,
                        user_id: r.get(1)?,
                        path: r.get(2)?,
                        arn: r.get(3)?,
                        created: r.get(4)?,
                        tags: vec![],
                    })
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            {
                let mut st = tx.prepare("SELECT user_name, key, value FROM iam_user_tags ORDER BY seq")?;
                let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))?;
                for row in rows {
                    let (user, key, value) = row?;
                    if let Some(u) = users.iter_mut().find(|u| u.name.eq_ignore_ascii_case(&user)) {
                        u.tags.push(Tag { key, value });
                    }
                }
            }
            let access_keys = {
                let mut st = tx.prepare(
                    "SELECT id, user_name, secret, status, created, last_used FROM iam_access_keys ORDER BY created, id",
                )?;
                let rows = st.query_map([], |r| {
                    Ok(IamAccessKeyRow {
                        id: r.get(0)?,
                        user_name: r.get(1)?,
                        secret: r.get(2)?,
                        status: r.get(3)?,
                        created: r.get(4)?,
                        last_used: r.get(5)?,
                    })
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let policies = |table: &str, owner: &str| -> Result<Vec<IamPolicyRow>> {
                let mut st = tx.prepare(&format!(
                    "SELECT {owner}, name, document FROM {table} ORDER BY {owner} COLLATE NOCASE, name"
                ))?;
                let rows = st.query_map([], |r| {
                    Ok(IamPolicyRow {
                        owner: r.get(0)?,
                        name: r.get(1)?,
                        document: r.get(2)?,
                    })
                })?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            };
            let user_policies = policies("iam_user_policies", "user_name")?;
            let group_policies = policies("iam_group_policies", "group_name")?;
            let groups = {
                let mut st = tx
                    .prepare("SELECT name, group_id, path, arn, created FROM iam_groups ORDER BY name COLLATE NOCASE")?;
                let rows = st.query_map([], |r| {
                    Ok(IamGroupRow {
                        name: r.get(0)?,
                        group_id: r.get(1)?,
                        path: r.get(2)?,
                        arn: r.get(3)?,
                        created: r.get(4)?,
                    })
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let members = {
                let mut st = tx.prepare("SELECT group_name, user_name FROM iam_group_members ORDER BY seq")?;
                let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            tx.commit()?;
            Ok(IamRows {
                users,
                access_keys,
                user_policies,
                groups,
                members,
                group_policies,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        migrations().validate().unwrap();
    }

    #[test]
    fn an_identity_batch_is_written_whole_or_not_at_all() {
        let s = Store::in_memory().unwrap();
        let user = |name: &str, id: &str| IamUserRow {
            name: name.into(),
            user_id: id.into(),
            path: "/".into(),
            arn: format!("arn:aws:iam::1:user/{name}"),
            created: 1.0,
            tags: vec![Tag {
                key: "k".into(),
                value: "v".into(),
            }],
        };
        let a = user("a", "AIDA1");
        s.iam_write(&[IamWrite::InsertUser(&a)]).unwrap();
        // The second write breaks the unique name (case-insensitively): the first is undone.
        let b = user("b", "AIDA2");
        let dup = user("A", "AIDA3");
        assert!(
            s.iam_write(&[IamWrite::InsertUser(&b), IamWrite::InsertUser(&dup)])
                .is_err()
        );
        let rows = s.iam_rows().unwrap();
        assert_eq!(rows.users, vec![a.clone()]);
        // A key of a user that does not exist breaks the foreign key.
        let key = IamAccessKeyRow {
            id: "AKIA1".into(),
            user_name: "nobody".into(),
            secret: "s".into(),
            status: "Active".into(),
            created: 1.0,
            last_used: None,
        };
        assert!(s.iam_write(&[IamWrite::InsertAccessKey(&key)]).is_err());
        assert!(format!("{key:?}").find("\"s\"").is_none(), "Debug shows no secret");
        s.iam_write(&[IamWrite::DeleteUser("A")]).unwrap();
        assert_eq!(s.iam_rows().unwrap(), IamRows::default());
    }

    #[test]
    fn records_older_than_a_cutoff_are_deleted_and_no_others() {
        let s = Store::in_memory().unwrap();
        s.put(Kind::AlarmHistory, "old", 10.0, &"o").unwrap();
        s.put(Kind::AlarmHistory, "new", 20.0, &"n").unwrap();
        s.put(Kind::Alarm, "other-kind", 10.0, &"a").unwrap();
        assert_eq!(s.delete_older(Kind::AlarmHistory, 15.0).unwrap(), 1);
        assert_eq!(s.list::<String>(Kind::AlarmHistory).unwrap(), ["n"]);
        assert_eq!(s.list::<String>(Kind::Alarm).unwrap(), ["a"]);
    }

    #[test]
    fn resources_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let s = Store::open(&path).unwrap();
            assert!(s.insert(Kind::Model, "a", 1.0, &serde_json::json!({"x": 1})).unwrap());
            assert!(!s.insert(Kind::Model, "a", 2.0, &serde_json::json!({"x": 2})).unwrap());
            s.add_tags(
                "arn:a",
                &[Tag {
                    key: "k".into(),
                    value: "v".into(),
                }],
            )
            .unwrap();
            s.set_capacity_override("ml.m5.xlarge", Some(3)).unwrap();
        }
        let s = Store::open(&path).unwrap();
        let v: serde_json::Value = s.get(Kind::Model, "a").unwrap().unwrap();
        assert_eq!(v["x"], 1);
        assert_eq!(s.tags("arn:a").unwrap()[0].value, "v");
        assert_eq!(s.capacity_overrides().unwrap(), vec![("ml.m5.xlarge".to_string(), 3)]);
        assert!(s.delete(Kind::Model, "a", "arn:a").unwrap());
        assert!(s.tags("arn:a").unwrap().is_empty());
        assert!(!s.exists(Kind::Model, "a").unwrap());
    }
}
