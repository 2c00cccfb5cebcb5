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
        }
    }
}

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![M::up(
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
    )])
}

/// The store. Cheap operations behind one connection; callers keep transactions short.
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
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
        let body = serde_json::to_string(value)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO resources (kind, name, created, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body",
                params![kind.as_str(), name, created, body],
            )?;
            Ok(())
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

    /// Every run-time capacity override.
    pub fn capacity_overrides(&self) -> Result<Vec<(String, u32)>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT instance_type, slots FROM capacity_overrides ORDER BY instance_type")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<(String, u32)>>>()?)
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
