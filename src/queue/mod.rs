//! The durable request queue of asynchronous endpoints (issue 16's foundation; no API uses it
//! yet).
//!
//! [`Queue`] keeps its own SQLite file (later `<data_dir>/queue.db`; WAL, `synchronous=FULL`,
//! mode 0600), modelled on the audit trail's writer: one writer thread owns the writing
//! connection and commits every job that arrived while it was busy in one transaction and one
//! fsync (**group commit**); each caller is answered only once its batch is durable. So
//! [`Queue::enqueue`] returning `Ok` means the request survives a SIGKILL or a power cut.
//!
//! A request moves `Queued` → `Leased{until, attempt}` → `Done{outcome}`:
//!
//! - [`Queue::lease`] hands out an endpoint's queued requests oldest first (FIFO per endpoint,
//!   by creation time, then by commit order) and marks them leased until `now + lease_seconds`.
//! - [`Queue::complete`] records the outcome once: processing is at least once (a lease that
//!   runs out puts the request back), the outcome exactly once (a second completion changes
//!   nothing and says so with [`Completion::AlreadyDone`]). A request that went back to the
//!   queue may still be completed by the worker whose lease ran out.
//! - [`Queue::expire`] puts leases past their deadline back in the queue.
//! - [`Queue::lease_expired`] hands out queued requests whose TTL deadline has passed, of every
//!   endpoint, so that a worker writes their failure object before it completes them as
//!   [`Outcome::Expired`]: a request never ends without its object, even across a crash. The
//!   TTL bounds waiting, not processing: a leased request is bounded by its lease (and the
//!   invocation timeout the worker applies), so it never expires while leased.
//! - [`Queue::release_leases`] puts every lease back (start-up: the workers that held them died
//!   with the previous process), and [`Queue::purge_done`] forgets finished requests
//!   (retention).
//! - [`Queue::backlog`] is what `ApproximateBacklogSize` and `ApproximateAgeOfOldestRequest`
//!   report: requests queued or being processed, and the age of the oldest of them.
//!
//! Times are epoch seconds handed in by the caller (the server's `Clock`); nothing here reads
//! the time.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};
use rusqlite_migration::{M, Migrations};
use tokio::sync::oneshot;

use crate::core::model::Timestamp;

/// The most finished requests one [`Queue::purge_done`] forgets.
pub const PURGE_CHUNK: i64 = 5000;

/// The most jobs the writer commits in one transaction.
pub const MAX_BATCH: usize = 1024;

/// A failure of the queue, or an operation it refuses.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The file could not be opened, read or written (a full or failing disk, a broken file).
    #[error("the request queue cannot be used: {0}")]
    Storage(String),
    /// A request with this id is already in the queue (queued, leased or done). The caller
    /// decides what a repeated id means; `output_location` is where the first one writes.
    #[error("a request with id {id:?} was already accepted")]
    Duplicate {
        /// The repeated id.
        id: String,
        /// The output location of the request already accepted under that id.
        output_location: String,
    },
    /// No request has this id.
    #[error("no request with id {0:?}")]
    NotFound(String),
    /// An argument the queue cannot store or act on (an empty id, a time that is not finite).
    #[error("invalid queue request: {0}")]
    Invalid(String),
    /// The writer thread is gone (the queue is being dropped, or it panicked).
    #[error("the request queue's writer has stopped")]
    Stopped,
}

impl From<rusqlite::Error> for QueueError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

impl From<rusqlite_migration::Error> for QueueError {
    fn from(e: rusqlite_migration::Error) -> Self {
        Self::Storage(format!("schema migration failed: {e}"))
    }
}

/// What a client asked for: one asynchronous invocation, as accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// The request's id, generated at acceptance; unique in the queue, it names the output
    /// and failure objects.
    pub id: String,
    /// `InferenceId`: the client's, or the generated `id`.
    pub inference_id: String,
    /// The endpoint it was sent to.
    pub endpoint: String,
    /// `InputLocation`: where the payload is read from; empty when the payload came inline.
    pub input_location: String,
    /// The payload, when it came inline in the request body (at most 128,000 bytes).
    pub inline_body: Option<Vec<u8>>,
    /// Where the model's answer is written.
    pub output_location: String,
    /// Where a failure is written (`S3FailurePath`), if the endpoint has one.
    pub failure_location: Option<String>,
    /// `ContentType`.
    pub content_type: Option<String>,
    /// `Accept`.
    pub accept: Option<String>,
    /// `CustomAttributes`.
    pub custom_attributes: Option<String>,
    /// When it was accepted (epoch seconds).
    pub created: Timestamp,
    /// `created + RequestTTLSeconds`: a request still queued then ends as expired.
    pub ttl_deadline: Timestamp,
    /// `InvocationTimeoutSeconds`: how long one attempt may run.
    pub invocation_timeout_seconds: u32,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The output was written.
    Succeeded,
    /// The failure was written (missing input, model error, invocation timeout, ...).
    Failed {
        /// Why, as the failure object says.
        reason: String,
    },
    /// It waited in the queue past its TTL.
    Expired,
}

/// Where a request is.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Waiting for a worker.
    Queued,
    /// A worker holds it until `until` (epoch seconds); `attempt` counts from 1.
    Leased {
        /// The lease's deadline; after it, [`Queue::expire`] puts the request back.
        until: Timestamp,
        /// Which attempt this is.
        attempt: u32,
    },
    /// Finished, for good.
    Done {
        /// How.
        outcome: Outcome,
    },
}

/// A stored request: what was asked, where it is, how often it was handed out.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// What was asked.
    pub invocation: Invocation,
    /// Where it is.
    pub state: State,
    /// How many times it was leased.
    pub attempts: u32,
}

/// What [`Queue::complete`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The outcome was recorded now.
    Completed,
    /// The request had ended already, with this outcome; nothing changed.
    AlreadyDone(Outcome),
}

/// What [`Queue::expire`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expiry {
    /// Leases past their deadline, put back in the queue.
    pub requeued: u64,
}

/// An endpoint's backlog: requests queued or being processed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Backlog {
    /// `ApproximateBacklogSize`.
    pub size: u64,
    /// `ApproximateAgeOfOldestRequest`, seconds (0 when the backlog is empty).
    pub oldest_age_seconds: f64,
}

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            "CREATE TABLE requests (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            endpoint TEXT NOT NULL,
            input_location TEXT NOT NULL,
            output_location TEXT NOT NULL,
            failure_location TEXT,
            content_type TEXT,
            accept TEXT,
            custom_attributes TEXT,
            created REAL NOT NULL,
            ttl_deadline REAL NOT NULL,
            invocation_timeout INTEGER NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'done')),
            lease_until REAL,
            attempts INTEGER NOT NULL DEFAULT 0,
            outcome TEXT CHECK (outcome IN ('succeeded', 'failed', 'expired')),
            reason TEXT,
            finished REAL
        );
        CREATE INDEX requests_fifo ON requests(endpoint, state, created, seq);
        CREATE INDEX requests_lease ON requests(state, lease_until);
        CREATE INDEX requests_ttl ON requests(state, ttl_deadline);",
        ),
        M::up(
            "ALTER TABLE requests ADD COLUMN inference_id TEXT;
             ALTER TABLE requests ADD COLUMN inline_body BLOB;
             CREATE INDEX requests_done ON requests(state, finished);",
        ),
    ])
}

const COLUMNS: &str = "id, endpoint, input_location, output_location, failure_location, content_type, \
    accept, custom_attributes, created, ttl_deadline, invocation_timeout, state, lease_until, attempts, \
    outcome, reason, inference_id, inline_body";

fn bad_row(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, what.into(), rusqlite::types::Type::Text)
}

fn read_request(r: &Row<'_>) -> rusqlite::Result<Request> {
    let attempts: u32 = r.get(13)?;
    let state: String = r.get(11)?;
    let state = match state.as_str() {
        "queued" => State::Queued,
        "leased" => State::Leased {
            until: r.get(12)?,
            attempt: attempts,
        },
        "done" => {
            let outcome: Option<String> = r.get(14)?;
            State::Done {
                outcome: match outcome.as_deref() {
                    Some("succeeded") => Outcome::Succeeded,
                    Some("failed") => Outcome::Failed {
                        reason: r.get::<_, Option<String>>(15)?.unwrap_or_default(),
                    },
                    Some("expired") => Outcome::Expired,
                    _ => return Err(bad_row("outcome")),
                },
            }
        }
        _ => return Err(bad_row("state")),
    };
    let id: String = r.get(0)?;
    Ok(Request {
        invocation: Invocation {
            inference_id: r.get::<_, Option<String>>(16)?.unwrap_or_else(|| id.clone()),
            inline_body: r.get(17)?,
            id,
            endpoint: r.get(1)?,
            input_location: r.get(2)?,
            output_location: r.get(3)?,
            failure_location: r.get(4)?,
            content_type: r.get(5)?,
            accept: r.get(6)?,
            custom_attributes: r.get(7)?,
            created: r.get(8)?,
            ttl_deadline: r.get(9)?,
            invocation_timeout_seconds: r.get(10)?,
        },
        state,
        attempts,
    })
}

/// `now + lease_seconds`, both checked.
fn lease_until(now: Timestamp, lease_seconds: f64) -> Result<Timestamp, QueueError> {
    finite("now", now)?;
    if !lease_seconds.is_finite() || lease_seconds < 0.0 {
        return Err(QueueError::Invalid(format!(
            "lease_seconds must be a finite number of seconds >= 0, not {lease_seconds}"
        )));
    }
    Ok(now + lease_seconds)
}

fn finite(what: &str, t: f64) -> Result<(), QueueError> {
    if t.is_finite() {
        Ok(())
    } else {
        Err(QueueError::Invalid(format!("{what} is not a finite time: {t}")))
    }
}

/// One piece of work for the writer.
enum Job {
    Enqueue(Box<Invocation>),
    Lease {
        endpoint: String,
        max: usize,
        now: Timestamp,
        until: Timestamp,
    },
    Complete {
        id: String,
        outcome: Outcome,
        now: Timestamp,
    },
    Expire(Timestamp),
    LeaseExpired {
        max: usize,
        now: Timestamp,
        until: Timestamp,
    },
    ReleaseLeases,
    Release(String),
    PurgeDone(Timestamp),
}

/// The writer's answer to one job.
enum Answer {
    Enqueued,
    Leased(Vec<Request>),
    Completed(Completion),
    Expired(Expiry),
    Count(u64),
}

type Reply = oneshot::Sender<Result<Answer, QueueError>>;

/// The durable request queue (see the module documentation).
pub struct Queue {
    path: PathBuf,
    jobs: Option<mpsc::Sender<(Job, Reply)>>,
    writer: Option<JoinHandle<()>>,
    /// The connection reads go through.
    reader: Mutex<Connection>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn open_conn(path: &Path) -> Result<Connection, QueueError> {
    let conn = Connection::open(path).map_err(|e| QueueError::Storage(format!("{}: {e}", path.display())))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

impl Queue {
    /// Opens (or creates and migrates) the queue at `path` and starts its writer thread.
    ///
    /// The file (and SQLite's `-wal` and `-shm`, which take its mode) is readable by its owner
    /// only: requests name buckets and carry custom attributes. Leases a previous run held are
    /// kept; [`expire`](Self::expire) puts them back once their deadline passes.
    pub fn open(path: &Path) -> Result<Self, QueueError> {
        crate::store::create_private(path).map_err(|e| QueueError::Storage(format!("{}: {e}", path.display())))?;
        let mut conn = open_conn(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrations().to_latest(&mut conn)?;
        let reader = open_conn(path)?;
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || Writer { conn }.run(rx))
            .map_err(|e| QueueError::Storage(format!("cannot start the queue writer: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            jobs: Some(tx),
            writer: Some(handle),
            reader: Mutex::new(reader),
        })
    }

    /// The file the queue lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn submit(&self, job: Job) -> Result<oneshot::Receiver<Result<Answer, QueueError>>, QueueError> {
        let jobs = self.jobs.as_ref().ok_or(QueueError::Stopped)?;
        let (tx, rx) = oneshot::channel();
        jobs.send((job, tx)).map_err(|_| QueueError::Stopped)?;
        Ok(rx)
    }

    /// Runs a job that answers a count.
    fn count(&self, job: Job) -> Result<u64, QueueError> {
        match self.run(job)? {
            Answer::Count(n) => Ok(n),
            _ => Err(QueueError::Storage("the writer answered another job".into())),
        }
    }

    /// Sends a job and blocks until its batch is committed.
    fn run(&self, job: Job) -> Result<Answer, QueueError> {
        self.submit(job)?.blocking_recv().map_err(|_| QueueError::Stopped)?
    }

    fn check_invocation(inv: &Invocation) -> Result<(), QueueError> {
        if inv.id.is_empty() {
            return Err(QueueError::Invalid("the request id is empty".into()));
        }
        if inv.endpoint.is_empty() {
            return Err(QueueError::Invalid("the endpoint name is empty".into()));
        }
        finite("created", inv.created)?;
        finite("ttl_deadline", inv.ttl_deadline)
    }

    /// Accepts a request: returns once it is committed and fsync'd (with every other request
    /// of its batch), so it survives a crash from then on. A repeated id is refused with
    /// [`QueueError::Duplicate`] and changes nothing. Blocks: from async code use
    /// [`enqueue_async`](Self::enqueue_async).
    pub fn enqueue(&self, inv: &Invocation) -> Result<(), QueueError> {
        Self::check_invocation(inv)?;
        self.run(Job::Enqueue(Box::new(inv.clone()))).map(drop)
    }

    /// [`enqueue`](Self::enqueue) for async callers.
    pub async fn enqueue_async(&self, inv: &Invocation) -> Result<(), QueueError> {
        Self::check_invocation(inv)?;
        let rx = self.submit(Job::Enqueue(Box::new(inv.clone())))?;
        rx.await.map_err(|_| QueueError::Stopped)?.map(drop)
    }

    /// Hands out up to `max` of `endpoint`'s queued requests whose TTL has not passed at
    /// `now`, oldest first, leased until `now + lease_seconds` (durably, before it returns).
    /// Each returned request is in state `Leased` with its attempt counted.
    pub fn lease(
        &self,
        endpoint: &str,
        max: usize,
        now: Timestamp,
        lease_seconds: f64,
    ) -> Result<Vec<Request>, QueueError> {
        let until = lease_until(now, lease_seconds)?;
        if max == 0 {
            return Ok(vec![]);
        }
        match self.run(Job::Lease {
            endpoint: endpoint.to_string(),
            max,
            now,
            until,
        })? {
            Answer::Leased(v) => Ok(v),
            _ => Err(QueueError::Storage("the writer answered another job".into())),
        }
    }

    /// Records how request `id` ended, at `now`. Idempotent: a request that has ended already
    /// keeps its outcome and the answer is [`Completion::AlreadyDone`]. A request back in the
    /// queue after its lease ran out may be completed too (its worker finished after all).
    pub fn complete(&self, id: &str, outcome: Outcome, now: Timestamp) -> Result<Completion, QueueError> {
        finite("now", now)?;
        match self.run(Job::Complete {
            id: id.to_string(),
            outcome,
            now,
        })? {
            Answer::Completed(c) => Ok(c),
            _ => Err(QueueError::Storage("the writer answered another job".into())),
        }
    }

    /// At `now`: puts leases whose deadline has passed back in the queue.
    pub fn expire(&self, now: Timestamp) -> Result<Expiry, QueueError> {
        finite("now", now)?;
        match self.run(Job::Expire(now))? {
            Answer::Expired(e) => Ok(e),
            _ => Err(QueueError::Storage("the writer answered another job".into())),
        }
    }

    /// Hands out up to `max` queued requests, of any endpoint, whose TTL deadline has passed at
    /// `now`, oldest first, leased like [`lease`](Self::lease): their worker writes the
    /// failure object, then completes them as [`Outcome::Expired`].
    pub fn lease_expired(&self, max: usize, now: Timestamp, lease_seconds: f64) -> Result<Vec<Request>, QueueError> {
        let until = lease_until(now, lease_seconds)?;
        if max == 0 {
            return Ok(vec![]);
        }
        match self.run(Job::LeaseExpired { max, now, until })? {
            Answer::Leased(v) => Ok(v),
            _ => Err(QueueError::Storage("the writer answered another job".into())),
        }
    }

    /// Puts every leased request back in the queue: at start-up, when the workers that held
    /// the leases died with the previous process. Returns how many.
    pub fn release_leases(&self) -> Result<u64, QueueError> {
        self.count(Job::ReleaseLeases)
    }

    /// Puts leased request `id` back in the queue at once (its worker could not reach a
    /// model; another attempt may). Whether it was leased.
    pub fn release(&self, id: &str) -> Result<bool, QueueError> {
        self.count(Job::Release(id.to_string())).map(|n| n > 0)
    }

    /// Forgets finished requests that ended before `before` (retention), at most
    /// [`PURGE_CHUNK`] of them (call it again for more). Returns how many.
    pub fn purge_done(&self, before: Timestamp) -> Result<u64, QueueError> {
        finite("before", before)?;
        self.count(Job::PurgeDone(before))
    }

    /// The endpoints that have requests queued or leased.
    pub fn endpoints_with_backlog(&self) -> Result<Vec<String>, QueueError> {
        let reader = self.reader();
        let mut stmt = reader.prepare_cached(
            "SELECT DISTINCT endpoint FROM requests WHERE state IN ('queued', 'leased') ORDER BY endpoint",
        )?;
        let v = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(v)
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `endpoint`'s backlog at `now`: requests queued or leased, and the age of the oldest.
    pub fn backlog(&self, endpoint: &str, now: Timestamp) -> Result<Backlog, QueueError> {
        finite("now", now)?;
        let (size, oldest): (i64, Option<f64>) = self.reader().query_row(
            "SELECT COUNT(*), MIN(created) FROM requests WHERE endpoint = ?1 AND state IN ('queued', 'leased')",
            [endpoint],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(Backlog {
            size: size.max(0) as u64,
            oldest_age_seconds: oldest.map_or(0.0, |c| (now - c).max(0.0)),
        })
    }

    /// The request with this id, in whatever state.
    pub fn get(&self, id: &str) -> Result<Option<Request>, QueueError> {
        Ok(self
            .reader()
            .query_row(
                &format!("SELECT {COLUMNS} FROM requests WHERE id = ?1"),
                [id],
                read_request,
            )
            .optional()?)
    }

    /// How many requests the queue holds, in every state (tests and diagnostics).
    pub fn len(&self) -> Result<u64, QueueError> {
        let n: i64 = self
            .reader()
            .query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Whether the queue holds no request at all.
    pub fn is_empty(&self) -> Result<bool, QueueError> {
        Ok(self.len()? == 0)
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has answered every job sent.
        self.jobs = None;
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

/// The writer thread: the one writing connection.
struct Writer {
    conn: Connection,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<(Job, Reply)>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            self.write_batch(batch);
        }
    }

    /// Runs a batch in one transaction (one fsync), each job in its own savepoint so one
    /// refused job fails alone; answers every job once the batch is durable, or with the error.
    fn write_batch(&mut self, batch: Vec<(Job, Reply)>) {
        let mut results = Vec::with_capacity(batch.len());
        let outcome = (|| -> Result<(), QueueError> {
            let mut tx = self.conn.transaction()?;
            for (job, _) in &batch {
                let sp = tx.savepoint()?;
                match apply(&sp, job) {
                    Ok(a) => {
                        sp.commit()?;
                        results.push(Ok(a));
                    }
                    Err(e) => {
                        // Dropping a savepoint rolls it back.
                        drop(sp);
                        results.push(Err(e));
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })();
        match outcome {
            Ok(()) => {
                for ((_, reply), r) in batch.into_iter().zip(results) {
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "queue: cannot commit a batch");
                for (_, reply) in batch {
                    let _ = reply.send(Err(QueueError::Storage(e.to_string())));
                }
            }
        }
    }
}

/// Marks `picked` leased until `until`, counting the attempt.
fn mark_leased(conn: &Connection, mut picked: Vec<Request>, until: Timestamp) -> Result<Answer, QueueError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE requests SET state = 'leased', lease_until = ?2, attempts = attempts + 1 WHERE id = ?1",
    )?;
    for r in &mut picked {
        stmt.execute(params![r.invocation.id, until])?;
        r.attempts += 1;
        r.state = State::Leased {
            until,
            attempt: r.attempts,
        };
    }
    Ok(Answer::Leased(picked))
}

/// One job inside the batch's transaction.
fn apply(conn: &Connection, job: &Job) -> Result<Answer, QueueError> {
    match job {
        Job::Enqueue(inv) => {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO requests (id, endpoint, input_location, output_location, failure_location, \
                     content_type, accept, custom_attributes, created, ttl_deadline, invocation_timeout, state, \
                     inference_id, inline_body) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'queued', ?12, ?13) ON CONFLICT(id) DO NOTHING",
                )?
                .execute(params![
                    inv.id,
                    inv.endpoint,
                    inv.input_location,
                    inv.output_location,
                    inv.failure_location,
                    inv.content_type,
                    inv.accept,
                    inv.custom_attributes,
                    inv.created,
                    inv.ttl_deadline,
                    inv.invocation_timeout_seconds,
                    inv.inference_id,
                    inv.inline_body,
                ])?;
            if inserted == 1 {
                return Ok(Answer::Enqueued);
            }
            let output_location: String =
                conn.query_row("SELECT output_location FROM requests WHERE id = ?1", [&inv.id], |r| {
                    r.get(0)
                })?;
            Err(QueueError::Duplicate {
                id: inv.id.clone(),
                output_location,
            })
        }
        Job::Lease {
            endpoint,
            max,
            now,
            until,
        } => {
            let picked: Vec<Request> = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM requests WHERE endpoint = ?1 AND state = 'queued' AND ttl_deadline > ?2 \
                     ORDER BY created, seq LIMIT ?3"
                ))?
                .query_map(
                    params![endpoint, now, i64::try_from(*max).unwrap_or(i64::MAX)],
                    read_request,
                )?
                .collect::<Result<_, _>>()?;
            mark_leased(conn, picked, *until)
        }
        Job::LeaseExpired { max, now, until } => {
            let picked: Vec<Request> = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM requests WHERE state = 'queued' AND ttl_deadline <= ?1 \
                     ORDER BY created, seq LIMIT ?2"
                ))?
                .query_map(params![now, i64::try_from(*max).unwrap_or(i64::MAX)], read_request)?
                .collect::<Result<_, _>>()?;
            mark_leased(conn, picked, *until)
        }
        Job::ReleaseLeases => Ok(Answer::Count(conn.execute(
            "UPDATE requests SET state = 'queued', lease_until = NULL WHERE state = 'leased'",
            [],
        )? as u64)),
        Job::Release(id) => Ok(Answer::Count(conn.execute(
            "UPDATE requests SET state = 'queued', lease_until = NULL WHERE id = ?1 AND state = 'leased'",
            [id],
        )? as u64)),
        // In chunks, so that one purge never holds the writer (and every 202 behind it) for long.
        Job::PurgeDone(before) => Ok(Answer::Count(conn.execute(
            "DELETE FROM requests WHERE seq IN \
             (SELECT seq FROM requests WHERE state = 'done' AND finished < ?1 LIMIT ?2)",
            params![before, PURGE_CHUNK],
        )? as u64)),
        Job::Complete { id, outcome, now } => {
            let current: Option<Request> = conn
                .prepare_cached(&format!("SELECT {COLUMNS} FROM requests WHERE id = ?1"))?
                .query_row([id], read_request)
                .optional()?;
            let Some(current) = current else {
                return Err(QueueError::NotFound(id.clone()));
            };
            if let State::Done { outcome } = current.state {
                return Ok(Answer::Completed(Completion::AlreadyDone(outcome)));
            }
            let (kind, reason) = match outcome {
                Outcome::Succeeded => ("succeeded", None),
                Outcome::Failed { reason } => ("failed", Some(reason.as_str())),
                Outcome::Expired => ("expired", None),
            };
            conn.prepare_cached(
                "UPDATE requests SET state = 'done', lease_until = NULL, outcome = ?2, reason = ?3, finished = ?4, inline_body = NULL \
                 WHERE id = ?1",
            )?
            .execute(params![id, kind, reason, now])?;
            Ok(Answer::Completed(Completion::Completed))
        }
        Job::Expire(now) => {
            let requeued = conn.execute(
                "UPDATE requests SET state = 'queued', lease_until = NULL WHERE state = 'leased' AND lease_until <= ?1",
                [now],
            )?;
            Ok(Answer::Expired(Expiry {
                requeued: requeued as u64,
            }))
        }
    }
}

#[cfg(test)]
mod tests;
