//! Durable SNS-style notifications of asynchronous inference (issue 16).
//!
//! [`Notifier::publish`] writes a [`Notification`] to its own SQLite file
//! (`<data_dir>/notifications.db`: WAL, `synchronous=FULL`, mode 0600) and answers with its
//! `MessageId` only once the row is fsync'd: the **outbox**. Publishes that arrive together are
//! committed in one transaction by one writer thread (group commit, as the request queue does),
//! so a burst of completions costs one fsync, not one each.
//!
//! The delivery task ([`Notifier::run`], started with the server) POSTs each pending row to the
//! URL `[notifications] topics` maps its topic to, in SNS's HTTP(S) notification format
//! (`deliver.rs`). A 2xx answer delivers it; anything else (another status, a refused
//! connection, a timeout) is retried after `backoff_initial_seconds` doubling up to
//! `backoff_max_seconds`, and after `max_attempts` the row becomes a **dead letter**
//! (`state = dead`, with the last error), readable with `GET /_spillway/notifications?state=dead`.
//! A topic no URL is mapped to is a dead letter at once (never an error of the request). Every
//! outcome is also an event of the notification's endpoint (`NotificationDelivered`,
//! `NotificationFailed`, `NotificationDeadLettered`, `NotificationNotDelivered`).
//!
//! Because the row is durable before `publish` returns and the task reads pending rows from the
//! file, a SIGKILL loses nothing: the next start delivers what was pending. Delivery is at least
//! once (a crash between the subscriber's 2xx and the row's update sends it again, with the same
//! `MessageId`, as SNS does on retries).

mod deliver;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};
use serde::Serialize;
use tokio::sync::{Notify, oneshot, watch};

use crate::clock::Clock;
use crate::config::NotificationsConfig;
use crate::core::endpoint::Event;
use crate::core::model::Timestamp;
use crate::core::notify::{backoff_seconds, iso8601_millis};

pub use deliver::Attempt;

/// The most notifications one group commit writes.
const MAX_BATCH: usize = 512;
/// The most deliveries in flight at once.
const MAX_IN_FLIGHT: usize = 32;

/// A failure of the notifier.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The file could not be opened, read or written.
    #[error("the notification outbox cannot be used: {0}")]
    Storage(String),
    /// A notification it cannot store (an empty topic or message).
    #[error("invalid notification: {0}")]
    Invalid(String),
    /// The writer thread is gone.
    #[error("the notification outbox's writer has stopped")]
    Stopped,
}

impl From<rusqlite::Error> for NotifyError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

impl From<rusqlite_migration::Error> for NotifyError {
    fn from(e: rusqlite_migration::Error) -> Self {
        Self::Storage(format!("schema migration failed: {e}"))
    }
}

/// One notification to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The SNS topic ARN (`SuccessTopic` or `ErrorTopic`).
    pub topic_arn: String,
    /// The endpoint it is about: its events record the delivery (empty: none, only logged).
    pub endpoint: String,
    /// The inference it is about (may be empty for a test notification).
    pub inference_id: String,
    /// The JSON text SNS carries as `Message` (`core::notify::async_success_message`, ...).
    pub message: String,
}

/// Where a stored notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum State {
    /// Waiting for its next attempt.
    Pending,
    /// A subscriber answered 2xx.
    Delivered,
    /// Given up: `max_attempts` failed, or no URL is mapped to its topic.
    Dead,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Delivered => "delivered",
            State::Dead => "dead",
        }
    }

    /// Parses `pending`, `delivered` or `dead`.
    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "pending" => State::Pending,
            "delivered" => State::Delivered,
            "dead" => State::Dead,
            _ => return None,
        })
    }
}

/// A stored notification, as `GET /_spillway/notifications` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The `MessageId` publish answered (and every POST carries).
    pub message_id: String,
    /// The topic.
    pub topic_arn: String,
    /// The endpoint (empty: none).
    pub endpoint_name: String,
    /// The inference (empty: none).
    pub inference_id: String,
    /// `Subject`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The message text.
    pub message: String,
    /// When it was published (ISO 8601 with milliseconds).
    pub published: String,
    /// Where it is.
    pub state: State,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due (pending only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<String>,
    /// Why the last attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it was delivered or given up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
}

/// Where delivery outcomes go: `App::event` in the server.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![M::up(
        "CREATE TABLE notifications (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            message_id TEXT NOT NULL UNIQUE,
            topic_arn TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            inference_id TEXT NOT NULL,
            subject TEXT,
            message TEXT NOT NULL,
            published REAL NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt REAL NOT NULL,
            last_error TEXT,
            finished REAL
        );
        CREATE INDEX notifications_due ON notifications(state, next_attempt, seq);
        CREATE INDEX notifications_finished ON notifications(state, finished);
        CREATE INDEX notifications_inference ON notifications(topic_arn, endpoint, inference_id);",
    )])
}

/// One row to write.
struct Row {
    message_id: String,
    n: Notification,
    subject: Option<String>,
    published: Timestamp,
    /// `Some(why)`: stored as a dead letter at once (no URL mapped).
    dead: Option<String>,
}

/// The writer's answer: the row's `MessageId` and whether it is new (`false`: the same
/// inference was already published to the topic, and this is its first `MessageId`).
type Reply = oneshot::Sender<Result<(String, bool), NotifyError>>;

/// A pending notification the delivery task works on.
#[derive(Debug, Clone)]
struct Due {
    message_id: String,
    n: Notification,
    subject: Option<String>,
    published: Timestamp,
    attempts: u32,
}

/// The durable notifier (see the module documentation).
pub struct Notifier {
    cfg: NotificationsConfig,
    clock: Clock,
    path: PathBuf,
    jobs: Mutex<Option<mpsc::Sender<(Row, Reply)>>>,
    /// Reads and the delivery task's updates.
    conn: Mutex<Connection>,
    /// Rung by publish: something may be due now.
    wake: Notify,
    events: OnceLock<EventSink>,
    http: deliver::Client,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn open_conn(path: &Path) -> Result<Connection, NotifyError> {
    let conn = Connection::open(path).map_err(|e| NotifyError::Storage(format!("{}: {e}", path.display())))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

/// Creates `path` readable by its owner only (`crate::store::create_private`).
fn make_private(path: &Path) -> Result<(), NotifyError> {
    crate::store::create_private(path).map_err(|e| NotifyError::Storage(format!("{}: {e}", path.display())))
}

/// The writer thread: commits every row that arrived while it was busy in one transaction.
fn write_loop(mut conn: Connection, rx: mpsc::Receiver<(Row, Reply)>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let result = (|| -> Result<Vec<(String, bool)>, rusqlite::Error> {
            // IMMEDIATE: the write lock from the start, so the read of a repeated inference and
            // the insert see one state (a deferred transaction's upgrade could fail with
            // SQLITE_BUSY_SNAPSHOT when the delivery task wrote in between).
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut ids = Vec::with_capacity(batch.len());
            {
                let mut seen = tx.prepare_cached(
                    "SELECT message_id FROM notifications WHERE topic_arn = ?1 AND endpoint = ?2 AND inference_id = ?3 \
                     ORDER BY seq LIMIT 1",
                )?;
                let mut st = tx.prepare_cached(
                    "INSERT INTO notifications (message_id, topic_arn, endpoint, inference_id, subject, message, \
                     published, state, next_attempt, last_error, finished) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?7, ?9, ?10)",
                )?;
                for (row, _) in &batch {
                    if !row.n.inference_id.is_empty()
                        && let Some(first) = seen
                            .query_row(params![row.n.topic_arn, row.n.endpoint, row.n.inference_id], |r| {
                                r.get::<_, String>(0)
                            })
                            .optional()?
                    {
                        ids.push((first, false));
                        continue;
                    }
                    st.execute(params![
                        row.message_id,
                        row.n.topic_arn,
                        row.n.endpoint,
                        row.n.inference_id,
                        row.subject,
                        row.n.message,
                        row.published,
                        if row.dead.is_some() { "dead" } else { "pending" },
                        row.dead,
                        row.dead.as_ref().map(|_| row.published),
                    ])?;
                    ids.push((row.message_id.clone(), true));
                }
            }
            tx.commit()?;
            Ok(ids)
        })();
        match result {
            Ok(ids) => {
                for ((_, reply), id) in batch.into_iter().zip(ids) {
                    let _ = reply.send(Ok(id));
                }
            }
            Err(e) => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(NotifyError::Storage(e.to_string())));
                }
            }
        }
    }
}

impl Notifier {
    /// Opens (or creates) `<data_dir>/notifications.db` and starts its writer thread. Delivery
    /// starts with [`run`](Self::run).
    pub fn open(cfg: &NotificationsConfig, data_dir: &Path, clock: Clock) -> Result<Self, NotifyError> {
        let path = data_dir.join("notifications.db");
        make_private(&path)?;
        let mut conn = open_conn(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrations().to_latest(&mut conn)?;
        let reader = open_conn(&path)?;
        reader.pragma_update(None, "synchronous", "FULL")?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("notify-writer".into())
            .spawn(move || write_loop(conn, rx))
            .map_err(|e| NotifyError::Storage(format!("cannot start the outbox writer: {e}")))?;
        Ok(Self {
            cfg: cfg.clone(),
            clock,
            path,
            jobs: Mutex::new(Some(tx)),
            conn: Mutex::new(reader),
            wake: Notify::new(),
            events: OnceLock::new(),
            http: deliver::Client::new(cfg.timeout_seconds),
        })
    }

    /// The file the outbox lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The URL `[notifications] topics` maps a topic to.
    pub fn url_of(&self, topic_arn: &str) -> Option<&str> {
        self.cfg.topics.get(topic_arn).map(String::as_str)
    }

    /// Records a notification durably (fsync'd, with every other of its group commit) and
    /// returns its `MessageId`; the delivery task sends it. A topic no URL is mapped to is
    /// stored as a dead letter at once and recorded as `NotificationNotDelivered`: still `Ok`,
    /// never an error of the request that caused it.
    ///
    /// Idempotent per request: publishing again to the same topic for the same endpoint and
    /// non-empty `inference_id` stores nothing and returns the first `MessageId`, so a worker
    /// that published, crashed before completing the request and processed it again does not
    /// notify twice. The asynchronous workers pass the request's own id there (clients may
    /// reuse an `InferenceId`).
    pub async fn publish(&self, n: Notification) -> Result<String, NotifyError> {
        self.publish_with_subject(n, None).await
    }

    /// [`publish`](Self::publish) with an SNS `Subject` (the admin API's test notifications).
    pub async fn publish_with_subject(&self, n: Notification, subject: Option<String>) -> Result<String, NotifyError> {
        if n.topic_arn.is_empty() {
            return Err(NotifyError::Invalid("the topic ARN is empty".into()));
        }
        let message_id = uuid::Uuid::new_v4().to_string();
        let published = self.clock.now();
        let dead = self.url_of(&n.topic_arn).is_none().then(|| {
            format!(
                "no URL is mapped to topic {} in [notifications] topics; not delivered",
                n.topic_arn
            )
        });
        let row = Row {
            message_id: message_id.clone(),
            n: n.clone(),
            subject,
            published,
            dead: dead.clone(),
        };
        let (tx, rx) = oneshot::channel();
        {
            let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let jobs = jobs.as_ref().ok_or(NotifyError::Stopped)?;
            jobs.send((row, tx)).map_err(|_| NotifyError::Stopped)?;
        }
        let (message_id, new) = rx.await.map_err(|_| NotifyError::Stopped)??;
        match dead {
            Some(why) if new => self.event(
                &n,
                "NotificationNotDelivered",
                "NotMapped",
                format!("notification {message_id}: {why}"),
            ),
            _ => self.wake.notify_one(),
        }
        Ok(message_id)
    }

    /// Stored notifications, newest first: those in `state` (all when `None`), of `endpoint`
    /// (all when `None`), at most `limit`.
    pub fn list(&self, state: Option<State>, endpoint: Option<&str>, limit: usize) -> Result<Vec<Record>, NotifyError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = conn.prepare_cached(
            "SELECT message_id, topic_arn, endpoint, inference_id, subject, message, published, state, attempts, \
             next_attempt, last_error, finished FROM notifications \
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR endpoint = ?2) ORDER BY seq DESC LIMIT ?3",
        )?;
        let rows = st.query_map(
            params![state.map(State::as_str), endpoint, limit.min(i64::MAX as usize) as i64],
            |r| {
                let state: String = r.get(7)?;
                let state = State::parse(&state).unwrap_or(State::Dead);
                let next: Timestamp = r.get(9)?;
                Ok(Record {
                    message_id: r.get(0)?,
                    topic_arn: r.get(1)?,
                    endpoint_name: r.get(2)?,
                    inference_id: r.get(3)?,
                    subject: r.get(4)?,
                    message: r.get(5)?,
                    published: iso8601_millis(r.get(6)?),
                    state,
                    attempts: r.get(8)?,
                    next_attempt: (state == State::Pending).then(|| iso8601_millis(next)),
                    last_error: r.get(10)?,
                    finished: r.get::<_, Option<Timestamp>>(11)?.map(iso8601_millis),
                })
            },
        )?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The first `limit` pending notifications, soonest due first, with when each is due.
    fn pending(&self, limit: usize) -> Result<Vec<(Due, Timestamp)>, NotifyError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = conn.prepare_cached(
            "SELECT message_id, topic_arn, endpoint, inference_id, subject, message, published, attempts, next_attempt \
             FROM notifications WHERE state = 'pending' ORDER BY next_attempt, seq LIMIT ?1",
        )?;
        let rows = st
            .query_map(params![limit as i64], |r| {
                Ok((
                    Due {
                        message_id: r.get(0)?,
                        n: Notification {
                            topic_arn: r.get(1)?,
                            endpoint: r.get(2)?,
                            inference_id: r.get(3)?,
                            message: r.get(5)?,
                        },
                        subject: r.get(4)?,
                        published: r.get(6)?,
                        attempts: r.get(7)?,
                    },
                    r.get(8)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn update(&self, id: &str, state: State, attempts: u32, next: Timestamp, error: Option<&str>, now: Timestamp) {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let finished = (state != State::Pending).then_some(now);
        if let Err(e) = conn.execute(
            "UPDATE notifications SET state = ?2, attempts = ?3, next_attempt = ?4, last_error = ?5, finished = ?6 \
             WHERE message_id = ?1",
            params![id, state.as_str(), attempts, next, error, finished],
        ) {
            tracing::error!(message_id = %id, error = %e, "cannot record a notification's delivery attempt");
        }
    }

    /// Deletes delivered notifications and dead letters finished before `before`.
    fn purge(&self, before: Timestamp) -> Result<usize, NotifyError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(conn.execute(
            "DELETE FROM notifications WHERE state IN ('delivered', 'dead') AND finished < ?1",
            params![before],
        )?)
    }

    fn event(&self, n: &Notification, kind: &str, result: &str, message: String) {
        if n.endpoint.is_empty() {
            tracing::info!(kind, topic = %n.topic_arn, "{message}");
            return;
        }
        let e = Event {
            time: self.clock.now(),
            endpoint_name: n.endpoint.clone(),
            variant_name: None,
            kind: kind.into(),
            instance_type: None,
            priority: None,
            instance_id: None,
            result: Some(result.into()),
            message,
        };
        match self.events.get() {
            Some(sink) => sink(e),
            None => tracing::info!(kind, endpoint = %n.endpoint, "{}", e.message),
        }
    }

    /// One attempt at one notification, and its outcome recorded.
    async fn attempt(&self, d: Due) {
        let Some(url) = self.url_of(&d.n.topic_arn).map(str::to_string) else {
            // The mapping went away since it was published (a config change and a restart).
            let why = format!(
                "no URL is mapped to topic {} in [notifications] topics; not delivered",
                d.n.topic_arn
            );
            self.update(
                &d.message_id,
                State::Dead,
                d.attempts,
                0.0,
                Some(&why),
                self.clock.now(),
            );
            self.event(
                &d.n,
                "NotificationNotDelivered",
                "NotMapped",
                format!("notification {}: {why}", d.message_id),
            );
            return;
        };
        let outcome = self
            .http
            .post(
                &url,
                &deliver::Post {
                    message_id: &d.message_id,
                    topic_arn: &d.n.topic_arn,
                    subject: d.subject.as_deref(),
                    message: &d.n.message,
                    published: d.published,
                    signing_secret: self.cfg.signing_secret.as_deref(),
                },
            )
            .await;
        let now = self.clock.now();
        let attempts = d.attempts + 1;
        let max = self.cfg.max_attempts;
        let about = if d.n.inference_id.is_empty() {
            format!("notification {} to {}", d.message_id, d.n.topic_arn)
        } else {
            format!(
                "notification {} to {} (inference {})",
                d.message_id, d.n.topic_arn, d.n.inference_id
            )
        };
        match outcome {
            Attempt::Delivered(status) => {
                self.update(&d.message_id, State::Delivered, attempts, now, None, now);
                self.event(
                    &d.n,
                    "NotificationDelivered",
                    "Delivered",
                    format!("{about}: delivered to {url} (HTTP {status}) on attempt {attempts} of {max}"),
                );
            }
            Attempt::Failed(why) if attempts >= max => {
                self.update(&d.message_id, State::Dead, attempts, now, Some(&why), now);
                self.event(
                    &d.n,
                    "NotificationDeadLettered",
                    "DeadLettered",
                    format!("{about}: attempt {attempts} of {max} to {url} failed ({why}); kept as a dead letter (GET /_spillway/notifications?state=dead)"),
                );
            }
            Attempt::Failed(why) => {
                let wait = backoff_seconds(attempts, self.cfg.backoff_initial_seconds, self.cfg.backoff_max_seconds);
                self.update(&d.message_id, State::Pending, attempts, now + wait, Some(&why), now);
                self.event(
                    &d.n,
                    "NotificationFailed",
                    "Failed",
                    format!(
                        "{about}: attempt {attempts} of {max} to {url} failed ({why}); next attempt in {wait:.2} s"
                    ),
                );
            }
        }
    }

    /// The delivery task: keeps up to 32 attempts in flight (a slow subscriber holds only its
    /// own slot), starts each pending notification when it is due, sleeps until the next one is
    /// due or a publish rings, and stops when `shutdown` turns true (attempts in flight are
    /// dropped: they stay pending and are sent again). `events` receives every delivery outcome
    /// (`App::event`). Also deletes finished rows past `retention_days`, hourly.
    pub async fn run(self: Arc<Self>, events: EventSink, mut shutdown: watch::Receiver<bool>) {
        let _ = self.events.set(events);
        let retention = self.cfg.retention_days as f64 * 86_400.0;
        let mut last_purge = f64::NEG_INFINITY;
        let mut in_flight: HashSet<String> = HashSet::new();
        let mut set: tokio::task::JoinSet<String> = tokio::task::JoinSet::new();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let now = self.clock.now();
            if now - last_purge > 3600.0 {
                last_purge = now;
                match self.purge(now - retention) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "deleted notifications past their retention"),
                    Err(e) => tracing::warn!(error = %e, "cannot delete old notifications"),
                }
            }
            let mut next_due: Option<Timestamp> = None;
            match self.pending(MAX_IN_FLIGHT + in_flight.len() + 1) {
                Ok(rows) => {
                    for (d, due) in rows {
                        if in_flight.contains(&d.message_id) {
                            continue;
                        }
                        if due > now || set.len() >= MAX_IN_FLIGHT {
                            // Full: a finishing attempt wakes the loop.
                            if due > now {
                                next_due = Some(due);
                            }
                            break;
                        }
                        in_flight.insert(d.message_id.clone());
                        let me = self.clone();
                        set.spawn(async move {
                            let id = d.message_id.clone();
                            me.attempt(d).await;
                            id
                        });
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the notification outbox; retrying in 5 s");
                    next_due = Some(now + 5.0);
                }
            }
            let wait = next_due.map_or(Duration::from_secs(3600), |t| {
                Duration::from_secs_f64((t - now).clamp(0.0, 3600.0))
            });
            tokio::select! {
                Some(done) = set.join_next(), if !set.is_empty() => {
                    match done {
                        Ok(id) => { in_flight.remove(&id); }
                        Err(e) => {
                            // A panicked attempt: its row is still pending; start afresh.
                            tracing::error!(error = %e, "a notification delivery attempt failed unexpectedly");
                            in_flight.clear();
                            set.abort_all();
                            while set.join_next().await.is_some() {}
                        }
                    }
                }
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Stops the writer thread once the writes queued before this call are committed (later
    /// publishes fail with [`NotifyError::Stopped`]).
    pub fn close(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

#[cfg(test)]
mod tests;
