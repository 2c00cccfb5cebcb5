//! The audit trail: every call recorded durably, as CloudTrail records, chained by hash.
//!
//! [`AuditLog`] keeps its own SQLite file (`<data_dir>/audit.db`, WAL, `synchronous=FULL`: a
//! record is on disk when the call that wrote it returns). Each stored row holds a sequence
//! number, the record's JSON exactly as CloudTrail writes it, the hash of the row before it and
//! its own hash, `sha256(prev_hash || record bytes)`; the first row's `prev_hash` is 32 zero
//! bytes. [`AuditLog::verify`] walks the chain and names the first gap or edit.
//!
//! - **Intents.** A mutating call writes its intent with [`AuditLog::begin`] before it runs
//!   (an error refuses the call: no unaudited mutation) and its final record with
//!   [`AuditLog::complete`]. Intents are not part of the chain. An intent still there when the
//!   log is opened belongs to a call that was running when spillway stopped: it is completed
//!   then, as its record with `errorCode` [`OUTCOME_UNKNOWN`], an `errorMessage` that says so
//!   and `additionalEventData: {"outcomeUnknown": true}` — the call may or may not have taken
//!   effect.
//! - **Group commit.** One writer thread owns the writing connection; appends, intents and
//!   completions that arrive while it commits are written together, in one transaction and one
//!   fsync, and each caller is answered once its batch is durable.
//! - **Retention.** [`AuditLog::prune`] deletes the oldest records once they are older than the
//!   retention, in batches of [`PRUNE_BATCH`]; an anchor row keeps the sequence number and hash
//!   of the last deleted record, where verification then starts. Only a prefix of the chain is
//!   ever deleted, so a record is kept while an older-numbered one must be.
//! - **Lookups** ([`AuditLog::lookup`]) are CloudTrail's `LookupEvents` on indexed columns (see
//!   [`lookup`]).

pub mod lookup;
pub mod record;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

pub use lookup::{Event, EventResource, Lookup, LookupAttribute, Page};
pub use record::{Record, RecordResource, UserIdentity, bounded, event_source, format_time, is_read_only, redact};

/// The `errorCode` of a record completed from an intent after a crash.
pub const OUTCOME_UNKNOWN: &str = "OutcomeUnknown";

/// How many records one retention transaction deletes.
pub const PRUNE_BATCH: usize = 1000;

/// The most jobs the writer commits in one transaction.
const MAX_BATCH: usize = 512;

/// A failure of the audit log, or a lookup it refuses.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file could not be opened, read or written (a full or failing disk, a broken file).
    #[error("the audit log cannot be used: {0}")]
    Storage(String),
    /// A record that cannot be stored (its `eventTime` is not CloudTrail's format).
    #[error("invalid audit record: {0}")]
    InvalidRecord(String),
    /// The log was opened read-only (the CLI's `verify` and `export`).
    #[error("the audit log is open read-only")]
    ReadOnly,
    /// The writer thread is gone (the log is being dropped, or it panicked).
    #[error("the audit log's writer has stopped")]
    Stopped,
    /// `LookupEvents`: `LookupAttributes` is not one known key with a value.
    #[error("{0}")]
    InvalidLookupAttributes(String),
    /// `LookupEvents`: `StartTime` after `EndTime`.
    #[error("{0}")]
    InvalidTimeRange(String),
    /// `LookupEvents`: `MaxResults` outside 1..=50.
    #[error("{0}")]
    InvalidMaxResults(String),
    /// `LookupEvents`: a `NextToken` this log did not hand out, or one from other parameters.
    #[error("{0}")]
    InvalidNextToken(String),
}

impl From<rusqlite::Error> for AuditError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

/// A durable intent, returned by [`AuditLog::begin`] and consumed by [`AuditLog::complete`].
#[derive(Debug, PartialEq, Eq)]
pub struct Ticket(i64);

/// The first fault [`AuditLog::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The sequence number where the chain breaks.
    pub seq: i64,
    /// What is wrong there.
    pub reason: String,
}

/// What [`AuditLog::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records checked.
    pub records: u64,
    /// The sequence number of the last record deleted by retention (0 if none).
    pub anchor_seq: i64,
    /// The last sequence number the log has written.
    pub head_seq: i64,
    /// The first gap or edit, `None` if the chain is whole.
    pub fault: Option<Fault>,
}

impl VerifyReport {
    /// Whether the chain is whole.
    pub fn is_ok(&self) -> bool {
        self.fault.is_none()
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.fault {
            None => {
                write!(
                    f,
                    "audit chain intact: {} records, seq {}..={}",
                    self.records,
                    self.anchor_seq + 1,
                    self.head_seq
                )?;
                if self.anchor_seq > 0 {
                    write!(f, " (records up to seq {} removed by retention)", self.anchor_seq)?;
                }
                Ok(())
            }
            Some(fault) => write!(f, "audit chain BROKEN at seq {}: {}", fault.seq, fault.reason),
        }
    }
}

/// The columns a record is looked up by, derived from it.
#[derive(Debug, Clone, PartialEq)]
struct Indexed {
    event_time: i64,
    event_id: String,
    event_name: String,
    read_only: &'static str,
    username: Option<String>,
    access_key_id: Option<String>,
    event_source: String,
    resources: Vec<(String, String, String)>,
}

impl Indexed {
    fn of(r: &Record) -> Result<Self, AuditError> {
        let event_time = record::parse_time(&r.event_time).ok_or_else(|| {
            AuditError::InvalidRecord(format!(
                "eventTime {:?} is not of the form YYYY-MM-DDTHH:MM:SSZ",
                r.event_time
            ))
        })?;
        Ok(Self {
            event_time,
            event_id: r.event_id.clone(),
            event_name: r.event_name.clone(),
            read_only: if r.read_only { "true" } else { "false" },
            username: r.user_identity.user_name.clone(),
            access_key_id: r.user_identity.access_key_id.clone(),
            event_source: r.event_source.clone(),
            resources: r
                .resources
                .iter()
                .map(|x| (x.resource_type.clone(), x.name().to_string(), x.arn.clone()))
                .collect(),
        })
    }
}

/// A record ready to store: its JSON (the bytes hashed) and its lookup columns.
struct Prepared {
    text: String,
    indexed: Indexed,
}

fn prepare(r: &Record) -> Result<Prepared, AuditError> {
    Ok(Prepared {
        indexed: Indexed::of(r)?,
        text: serde_json::to_string(r).map_err(|e| AuditError::InvalidRecord(e.to_string()))?,
    })
}

/// The chain's hash of a record after `prev`.
fn chain_hash(prev: &[u8], text: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(text.as_bytes());
    h.finalize().into()
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    event_time INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event_name TEXT NOT NULL,
    read_only TEXT NOT NULL,
    username TEXT,
    access_key_id TEXT,
    event_source TEXT NOT NULL,
    record TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_time ON records(event_time, seq);
CREATE INDEX IF NOT EXISTS records_event_id ON records(event_id, event_time, seq);
CREATE INDEX IF NOT EXISTS records_event_name ON records(event_name, event_time, seq);
CREATE INDEX IF NOT EXISTS records_read_only ON records(read_only, event_time, seq);
CREATE INDEX IF NOT EXISTS records_username ON records(username, event_time, seq);
CREATE INDEX IF NOT EXISTS records_access_key_id ON records(access_key_id, event_time, seq);
CREATE INDEX IF NOT EXISTS records_event_source ON records(event_source, event_time, seq);
CREATE TABLE IF NOT EXISTS resources (
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    name TEXT NOT NULL,
    arn TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS resources_seq ON resources(seq);
CREATE INDEX IF NOT EXISTS resources_type ON resources(type, seq);
CREATE INDEX IF NOT EXISTS resources_name ON resources(name, seq);
CREATE INDEX IF NOT EXISTS resources_arn ON resources(arn, seq);
CREATE TABLE IF NOT EXISTS anchor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS intents (
    ticket INTEGER PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// One piece of work for the writer.
enum Job {
    Append(Prepared),
    Begin(String),
    Complete(i64, Prepared),
    Prune(i64),
}

type Reply = oneshot::Sender<Result<i64, AuditError>>;

/// The durable, hash-chained audit log (see the module documentation).
pub struct AuditLog {
    path: PathBuf,
    retention: Duration,
    /// Jobs for the writer thread; `None` when opened read-only.
    jobs: Option<mpsc::Sender<(Job, Reply)>>,
    writer: Option<JoinHandle<()>>,
    /// The connection lookups, verification and export read through.
    reader: Mutex<Connection>,
    /// The key `NextToken`s are authenticated with (random per log file).
    token_key: String,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn open_conn(path: &Path, flags: OpenFlags) -> Result<Connection, AuditError> {
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| AuditError::Storage(format!("{}: {e}", path.display())))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

impl AuditLog {
    /// Opens (or creates) the log at `path`, keeping records for `retention` (see
    /// [`prune`](Self::prune)). Completes the intents a previous run left (see the module
    /// documentation) and starts the writer thread.
    ///
    /// The file (and SQLite's `-wal` and `-shm`, which take its mode) is readable by its owner
    /// only: records name users, policies and source addresses.
    pub fn open(path: &Path, retention: Duration) -> Result<Self, AuditError> {
        crate::store::create_private(path).map_err(|e| AuditError::Storage(format!("{}: {e}", path.display())))?;
        let conn = open_conn(path, OpenFlags::default())?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        let key: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'token_key'", [], |r| r.get(0))
            .optional()?;
        let token_key = match key {
            Some(k) => k,
            None => {
                let k = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
                conn.execute("INSERT INTO meta (key, value) VALUES ('token_key', ?1)", [&k])?;
                k
            }
        };
        let mut writer = Writer::load(conn)?;
        writer.recover_intents()?;
        let reader = open_conn(path, OpenFlags::default())?;
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::Storage(format!("cannot start the audit writer: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            retention,
            jobs: Some(tx),
            writer: Some(handle),
            reader: Mutex::new(reader),
            token_key,
        })
    }

    /// Opens an existing log only to read it (`spillway audit verify`/`export`, safe while a
    /// server writes it): intents are left alone and every write is refused.
    pub fn open_read_only(path: &Path) -> Result<Self, AuditError> {
        if !path.exists() {
            return Err(AuditError::Storage(format!("{} does not exist", path.display())));
        }
        let reader = open_conn(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        let token_key = reader
            .query_row("SELECT value FROM meta WHERE key = 'token_key'", [], |r| r.get(0))
            .optional()?
            .unwrap_or_default();
        Ok(Self {
            path: path.to_path_buf(),
            retention: Duration::MAX,
            jobs: None,
            writer: None,
            reader: Mutex::new(reader),
            token_key,
        })
    }

    /// The file the log lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn submit(&self, job: Job) -> Result<oneshot::Receiver<Result<i64, AuditError>>, AuditError> {
        let jobs = self.jobs.as_ref().ok_or(AuditError::ReadOnly)?;
        let (tx, rx) = oneshot::channel();
        jobs.send((job, tx)).map_err(|_| AuditError::Stopped)?;
        Ok(rx)
    }

    fn wait(rx: oneshot::Receiver<Result<i64, AuditError>>) -> Result<i64, AuditError> {
        rx.blocking_recv().map_err(|_| AuditError::Stopped)?
    }

    async fn wait_async(rx: oneshot::Receiver<Result<i64, AuditError>>) -> Result<i64, AuditError> {
        rx.await.map_err(|_| AuditError::Stopped)?
    }

    /// Before a mutating call runs: durably records the intent; an error means the call must
    /// be refused. Blocks (not from an async task: use [`begin_async`](Self::begin_async)).
    pub fn begin(&self, record: &Record) -> Result<Ticket, AuditError> {
        Self::wait(self.submit(Self::begin_job(record)?)?).map(Ticket)
    }

    /// [`begin`](Self::begin) for async callers.
    pub async fn begin_async(&self, record: &Record) -> Result<Ticket, AuditError> {
        Self::wait_async(self.submit(Self::begin_job(record)?)?)
            .await
            .map(Ticket)
    }

    fn begin_job(record: &Record) -> Result<Job, AuditError> {
        Indexed::of(record)?;
        Ok(Job::Begin(
            serde_json::to_string(record).map_err(|e| AuditError::InvalidRecord(e.to_string()))?,
        ))
    }

    /// After the call ran: appends its final record (answer or error filled in) to the chain
    /// and removes the intent, in one transaction. Blocks (panics inside an async runtime's
    /// task, as a blocking wait there would); from async code use
    /// [`complete_async`](Self::complete_async).
    pub fn complete(&self, ticket: Ticket, record: &Record) -> Result<(), AuditError> {
        Self::wait(self.submit(Job::Complete(ticket.0, prepare(record)?))?).map(drop)
    }

    /// [`complete`](Self::complete) for async callers.
    pub async fn complete_async(&self, ticket: Ticket, record: &Record) -> Result<(), AuditError> {
        Self::wait_async(self.submit(Job::Complete(ticket.0, prepare(record)?))?)
            .await
            .map(drop)
    }

    /// Read-only calls and refusals: one durable append. Blocks (not from an async task: use
    /// [`append_async`](Self::append_async)).
    pub fn append(&self, record: &Record) -> Result<(), AuditError> {
        Self::wait(self.submit(Job::Append(prepare(record)?))?).map(drop)
    }

    /// [`append`](Self::append) for async callers.
    pub async fn append_async(&self, record: &Record) -> Result<(), AuditError> {
        Self::wait_async(self.submit(Job::Append(prepare(record)?))?)
            .await
            .map(drop)
    }

    /// Deletes the records older than the retention at `now` (epoch seconds, from the server's
    /// clock), oldest first, [`PRUNE_BATCH`] per transaction; returns how many. The server
    /// calls it at start and then periodically.
    pub fn prune(&self, now: f64) -> Result<u64, AuditError> {
        Self::wait(self.submit(Job::Prune(self.cutoff(now)))?).map(|n| n as u64)
    }

    /// [`prune`](Self::prune) for async callers.
    pub async fn prune_async(&self, now: f64) -> Result<u64, AuditError> {
        Self::wait_async(self.submit(Job::Prune(self.cutoff(now)))?)
            .await
            .map(|n| n as u64)
    }

    fn cutoff(&self, now: f64) -> i64 {
        let keep = self.retention.as_secs().min(i64::MAX as u64 / 2) as i64;
        (now.floor() as i64).saturating_sub(keep)
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// CloudTrail's `LookupEvents` over the log (see [`lookup`]).
    pub fn lookup(&self, q: &Lookup) -> Result<Page, AuditError> {
        lookup::run(&self.reader(), &self.token_key, q)
    }

    /// Walks the chain from the anchor to the head and reports the first gap or edit.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        let conn = self.reader();
        let tx = conn.unchecked_transaction()?;
        let (anchor_seq, anchor_hash): (i64, Vec<u8>) = tx
            .query_row("SELECT seq, hash FROM anchor WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?
            .unwrap_or((0, vec![0; 32]));
        let head_seq: i64 = tx
            .query_row("SELECT value FROM meta WHERE key = 'head_seq'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut report = VerifyReport {
            records: 0,
            anchor_seq,
            head_seq,
            fault: None,
        };
        let fault = |seq: i64, reason: String| Some(Fault { seq, reason });
        let mut stmt = tx.prepare(
            "SELECT seq, record, prev_hash, hash, event_time, event_id, event_name, read_only, username, \
             access_key_id, event_source FROM records ORDER BY seq",
        )?;
        let mut res_stmt = tx.prepare("SELECT type, name, arn FROM resources WHERE seq = ?1 ORDER BY rowid")?;
        let mut rows = stmt.query([])?;
        let (mut prev_seq, mut prev_hash) = (anchor_seq, anchor_hash);
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let text: String = row.get(1)?;
            let stored_prev: Vec<u8> = row.get(2)?;
            let hash: Vec<u8> = row.get(3)?;
            if seq <= prev_seq {
                report.fault = fault(
                    seq,
                    format!("record {seq} is older than the chain's start at {}", prev_seq + 1),
                );
                break;
            }
            if seq != prev_seq + 1 {
                let missing = if seq == prev_seq + 2 {
                    format!("record {} is missing", prev_seq + 1)
                } else {
                    format!("records {}..={} are missing", prev_seq + 1, seq - 1)
                };
                report.fault = fault(prev_seq + 1, missing);
                break;
            }
            if stored_prev != prev_hash {
                report.fault = fault(
                    seq,
                    format!(
                        "its prev_hash does not match the hash of record {prev_seq} (a record was edited, replaced or moved)"
                    ),
                );
                break;
            }
            if chain_hash(&prev_hash, &text)[..] != hash[..] {
                report.fault = fault(seq, "its contents do not match its hash (the record was edited)".into());
                break;
            }
            let read_only: String = row.get(7)?;
            let stored = Indexed {
                event_time: row.get(4)?,
                event_id: row.get(5)?,
                event_name: row.get(6)?,
                read_only: if read_only == "true" { "true" } else { "false" },
                username: row.get(8)?,
                access_key_id: row.get(9)?,
                event_source: row.get(10)?,
                resources: res_stmt
                    .query_map([seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?,
            };
            let derived = serde_json::from_str::<Record>(&text)
                .map_err(|e| AuditError::InvalidRecord(e.to_string()))
                .and_then(|r| Indexed::of(&r));
            match derived {
                Ok(d) if d == stored && read_only == d.read_only => {}
                Ok(_) => {
                    report.fault = fault(
                        seq,
                        "its lookup columns do not match its record (the index was edited)".into(),
                    );
                    break;
                }
                Err(e) => {
                    report.fault = fault(seq, format!("its record cannot be read: {e}"));
                    break;
                }
            }
            report.records += 1;
            prev_seq = seq;
            prev_hash = hash;
        }
        if report.fault.is_none() && prev_seq < head_seq {
            report.fault = fault(
                prev_seq + 1,
                format!(
                    "records {}..={head_seq} are missing (the log wrote up to {head_seq})",
                    prev_seq + 1
                ),
            );
        }
        Ok(report)
    }

    /// Writes every record, oldest first, as JSON lines (one CloudTrail record per line);
    /// returns how many.
    pub fn export(&self, out: &mut dyn std::io::Write) -> Result<u64, AuditError> {
        self.export_since(out, None)
    }

    /// [`export`](Self::export) of the records whose `eventTime` is at or after `since` (epoch
    /// seconds).
    pub fn export_since(&self, out: &mut dyn std::io::Write, since: Option<f64>) -> Result<u64, AuditError> {
        let conn = self.reader();
        let tx = conn.unchecked_transaction()?;
        let mut stmt = tx.prepare("SELECT record FROM records WHERE event_time >= ?1 ORDER BY seq")?;
        let mut rows = stmt.query([since.unwrap_or(f64::MIN)])?;
        let mut n = 0;
        let io = |e: std::io::Error| AuditError::Storage(format!("cannot write the export: {e}"));
        while let Some(row) = rows.next()? {
            let text: String = row.get(0)?;
            out.write_all(text.as_bytes()).map_err(io)?;
            out.write_all(b"\n").map_err(io)?;
            n += 1;
        }
        out.flush().map_err(io)?;
        Ok(n)
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has answered every job sent.
        self.jobs = None;
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

/// The writer thread's state: the one writing connection and the chain's head.
struct Writer {
    conn: Connection,
    head_seq: i64,
    head_hash: Vec<u8>,
}

impl Writer {
    fn load(conn: Connection) -> Result<Self, AuditError> {
        let last: Option<(i64, Vec<u8>)> = conn
            .query_row("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let anchor: Option<(i64, Vec<u8>)> = conn
            .query_row("SELECT seq, hash FROM anchor WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let (head_seq, head_hash) = last.or(anchor).unwrap_or((0, vec![0; 32]));
        Ok(Self {
            conn,
            head_seq,
            head_hash,
        })
    }

    /// Completes the intents a previous run left, as records whose outcome is unknown.
    fn recover_intents(&mut self) -> Result<(), AuditError> {
        let intents: Vec<(i64, String)> = {
            let mut stmt = self
                .conn
                .prepare("SELECT ticket, record FROM intents ORDER BY ticket")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        if intents.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        let (mut seq, mut hash) = (self.head_seq, self.head_hash.clone());
        for (ticket, text) in &intents {
            let mut r: Record = serde_json::from_str(text).map_err(|e| AuditError::InvalidRecord(e.to_string()))?;
            r.error_code = Some(OUTCOME_UNKNOWN.into());
            r.error_message = Some(
                "spillway stopped while this call ran; whether it took effect is unknown \
                 (recorded from its intent when the audit log was next opened)"
                    .into(),
            );
            r.response_elements = None;
            r.additional_event_data = Some(serde_json::json!({"outcomeUnknown": true}));
            let p = prepare(&r)?;
            hash = insert(&tx, seq + 1, &hash, &p)?.to_vec();
            seq += 1;
            tx.execute("DELETE FROM intents WHERE ticket = ?1", [ticket])?;
        }
        set_head(&tx, seq)?;
        tx.commit()?;
        tracing::warn!(
            count = intents.len(),
            "audit: completed calls that were running when spillway stopped, outcome unknown"
        );
        self.head_seq = seq;
        self.head_hash = hash;
        Ok(())
    }

    fn run(mut self, rx: mpsc::Receiver<(Job, Reply)>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            let (prunes, writes): (Vec<_>, Vec<_>) = batch.into_iter().partition(|(j, _)| matches!(j, Job::Prune(_)));
            if !writes.is_empty() {
                self.write_batch(writes);
            }
            for (job, reply) in prunes {
                if let Job::Prune(cutoff) = job {
                    let _ = reply.send(self.prune(cutoff));
                }
            }
        }
    }

    /// Writes a batch in one transaction (one fsync); each job in its own savepoint so one
    /// bad job fails alone. Answers every job once the batch is durable, or with the error.
    fn write_batch(&mut self, batch: Vec<(Job, Reply)>) {
        let (mut seq, mut hash) = (self.head_seq, self.head_hash.clone());
        let mut results = Vec::with_capacity(batch.len());
        let outcome = (|| -> Result<(), AuditError> {
            let mut tx = self.conn.transaction()?;
            for (job, _) in &batch {
                let sp = tx.savepoint()?;
                let r = match job {
                    Job::Append(p) => insert(&sp, seq + 1, &hash, p).map(|h| (seq + 1, Some(h))),
                    Job::Complete(ticket, p) => match sp.execute("DELETE FROM intents WHERE ticket = ?1", [ticket]) {
                        Ok(1) => insert(&sp, seq + 1, &hash, p).map(|h| (seq + 1, Some(h))),
                        Ok(_) => Err(AuditError::InvalidRecord(format!("no intent {ticket} to complete"))),
                        Err(e) => Err(e.into()),
                    },
                    Job::Begin(text) => sp
                        .execute("INSERT INTO intents (record) VALUES (?1)", [text])
                        .map(|_| (sp.last_insert_rowid(), None))
                        .map_err(AuditError::from),
                    Job::Prune(_) => unreachable!("prunes are run apart"),
                };
                match r {
                    Ok((id, chained)) => {
                        sp.commit()?;
                        if let Some(h) = chained {
                            seq = id;
                            hash = h.to_vec();
                        }
                        results.push(Ok(id));
                    }
                    Err(e) => {
                        // Dropping a savepoint rolls it back.
                        drop(sp);
                        results.push(Err(e));
                    }
                }
            }
            set_head(&tx, seq)?;
            tx.commit()?;
            Ok(())
        })();
        match outcome {
            Ok(()) => {
                self.head_seq = seq;
                self.head_hash = hash;
                for ((_, reply), r) in batch.into_iter().zip(results) {
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "audit: cannot write records");
                for (_, reply) in batch {
                    let _ = reply.send(Err(AuditError::Storage(e.to_string())));
                }
            }
        }
    }

    fn prune(&mut self, cutoff: i64) -> Result<i64, AuditError> {
        let mut deleted = 0;
        loop {
            // The end of the prefix of records older than the cutoff.
            let keep_from: Option<i64> =
                self.conn
                    .query_row("SELECT MIN(seq) FROM records WHERE event_time >= ?1", [cutoff], |r| {
                        r.get(0)
                    })?;
            let tx = self.conn.transaction()?;
            let last: Option<(i64, Vec<u8>)> = tx
                .query_row(
                    "SELECT seq, hash FROM (SELECT seq, hash FROM records WHERE seq < ?1 ORDER BY seq LIMIT ?2) \
                     ORDER BY seq DESC LIMIT 1",
                    params![keep_from.unwrap_or(i64::MAX), PRUNE_BATCH as i64],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((seq, hash)) = last else { break };
            tx.execute("DELETE FROM resources WHERE seq <= ?1", [seq])?;
            let n = tx.execute("DELETE FROM records WHERE seq <= ?1", [seq])?;
            tx.execute(
                "INSERT INTO anchor (id, seq, hash) VALUES (1, ?1, ?2) \
                 ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                params![seq, hash],
            )?;
            tx.commit()?;
            deleted += n as i64;
        }
        Ok(deleted)
    }
}

/// Inserts one chained record after (`seq - 1`, `prev`); returns its hash.
fn insert(conn: &Connection, seq: i64, prev: &[u8], p: &Prepared) -> Result<[u8; 32], AuditError> {
    let hash = chain_hash(prev, &p.text);
    let i = &p.indexed;
    conn.execute(
        "INSERT INTO records (seq, event_time, event_id, event_name, read_only, username, access_key_id, \
         event_source, record, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            seq,
            i.event_time,
            i.event_id,
            i.event_name,
            i.read_only,
            i.username,
            i.access_key_id,
            i.event_source,
            p.text,
            prev,
            &hash[..]
        ],
    )?;
    for (t, n, a) in &i.resources {
        conn.execute(
            "INSERT INTO resources (seq, type, name, arn) VALUES (?1, ?2, ?3, ?4)",
            params![seq, t, n, a],
        )?;
    }
    Ok(hash)
}

fn set_head(conn: &Connection, seq: i64) -> Result<(), AuditError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('head_seq', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [seq.to_string()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
