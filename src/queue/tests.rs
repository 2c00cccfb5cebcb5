use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use proptest::prelude::*;

use super::*;

fn inv(id: &str, endpoint: &str, created: f64, ttl: f64) -> Invocation {
    Invocation {
        id: id.into(),
        inference_id: format!("client-{id}"),
        endpoint: endpoint.into(),
        input_location: format!("s3://in/{id}"),
        inline_body: id.len().is_multiple_of(2).then(|| id.as_bytes().to_vec()),
        output_location: format!("s3://out/{id}.out"),
        failure_location: Some(format!("s3://fail/{id}-error.out")),
        content_type: Some("application/json".into()),
        accept: None,
        custom_attributes: Some("a=b".into()),
        created,
        ttl_deadline: created + ttl,
        invocation_timeout_seconds: 900,
    }
}

fn open() -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(&dir.path().join("queue.db")).unwrap();
    (dir, q)
}

fn ids(v: &[Request]) -> Vec<&str> {
    v.iter().map(|r| r.invocation.id.as_str()).collect()
}

#[test]
fn enqueue_then_get_round_trips_every_field() {
    let (_d, q) = open();
    let i = inv("a", "ep", 100.0, 60.0);
    q.enqueue(&i).unwrap();
    let r = q.get("a").unwrap().unwrap();
    assert_eq!(r.invocation, i);
    assert_eq!(r.state, State::Queued);
    assert_eq!(r.attempts, 0);
    assert_eq!(q.get("b").unwrap(), None);
}

#[test]
fn a_repeated_id_is_refused_with_the_first_output_location() {
    let (_d, q) = open();
    q.enqueue(&inv("a", "ep", 1.0, 60.0)).unwrap();
    let mut again = inv("a", "other", 2.0, 60.0);
    again.output_location = "s3://elsewhere".into();
    match q.enqueue(&again) {
        Err(QueueError::Duplicate { id, output_location }) => {
            assert_eq!(id, "a");
            assert_eq!(output_location, "s3://out/a.out");
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    assert_eq!(q.len().unwrap(), 1);
    assert_eq!(q.get("a").unwrap().unwrap().invocation.endpoint, "ep");
}

#[test]
fn bad_input_is_refused_not_panicked_on() {
    let (_d, q) = open();
    assert!(matches!(
        q.enqueue(&inv("", "ep", 1.0, 1.0)),
        Err(QueueError::Invalid(_))
    ));
    assert!(matches!(
        q.enqueue(&inv("x", "", 1.0, 1.0)),
        Err(QueueError::Invalid(_))
    ));
    assert!(matches!(
        q.enqueue(&inv("x", "ep", f64::NAN, 1.0)),
        Err(QueueError::Invalid(_))
    ));
    assert!(matches!(
        q.enqueue(&inv("x", "ep", 1.0, f64::INFINITY)),
        Err(QueueError::Invalid(_))
    ));
    assert!(matches!(q.lease("ep", 1, 0.0, -1.0), Err(QueueError::Invalid(_))));
    assert!(matches!(q.lease("ep", 1, f64::NAN, 1.0), Err(QueueError::Invalid(_))));
    assert!(matches!(q.expire(f64::INFINITY), Err(QueueError::Invalid(_))));
    assert!(matches!(
        q.complete("nope", Outcome::Succeeded, 0.0),
        Err(QueueError::NotFound(_))
    ));
    assert_eq!(q.lease("ep", 0, 0.0, 1.0).unwrap(), vec![]);
    assert_eq!(q.lease("ep", usize::MAX, 0.0, 1.0).unwrap(), vec![]);
    assert!(q.is_empty().unwrap());
}

#[test]
fn lease_is_fifo_per_endpoint_and_counts_attempts() {
    let (_d, q) = open();
    q.enqueue(&inv("b2", "b", 1.0, 100.0)).unwrap();
    q.enqueue(&inv("a2", "a", 3.0, 100.0)).unwrap();
    q.enqueue(&inv("a1", "a", 2.0, 100.0)).unwrap();
    q.enqueue(&inv("a3", "a", 3.0, 100.0)).unwrap();
    let got = q.lease("a", 2, 10.0, 30.0).unwrap();
    assert_eq!(ids(&got), ["a1", "a2"]);
    assert_eq!(
        got[0].state,
        State::Leased {
            until: 40.0,
            attempt: 1
        }
    );
    assert_eq!(ids(&q.lease("a", 5, 10.0, 30.0).unwrap()), ["a3"]);
    assert!(q.lease("a", 5, 10.0, 30.0).unwrap().is_empty());
    assert_eq!(
        q.get("a1").unwrap().unwrap().state,
        State::Leased {
            until: 40.0,
            attempt: 1
        }
    );
    // The lease runs out: back in the queue, the next lease is attempt 2.
    assert_eq!(q.expire(40.0).unwrap(), Expiry { requeued: 3 });
    let again = q.lease("a", 1, 41.0, 30.0).unwrap();
    assert_eq!(ids(&again), ["a1"]);
    assert_eq!(again[0].attempts, 2);
    assert_eq!(
        again[0].state,
        State::Leased {
            until: 71.0,
            attempt: 2
        }
    );
}

#[test]
fn completion_is_exactly_once() {
    let (_d, q) = open();
    q.enqueue(&inv("a", "ep", 1.0, 100.0)).unwrap();
    q.lease("ep", 1, 2.0, 10.0).unwrap();
    assert_eq!(q.complete("a", Outcome::Succeeded, 3.0).unwrap(), Completion::Completed);
    let second = q.complete("a", Outcome::Failed { reason: "late".into() }, 4.0).unwrap();
    assert_eq!(second, Completion::AlreadyDone(Outcome::Succeeded));
    assert_eq!(
        q.get("a").unwrap().unwrap().state,
        State::Done {
            outcome: Outcome::Succeeded
        }
    );
    // A request whose lease ran out may still be completed by its late worker, once.
    q.enqueue(&inv("b", "ep", 1.0, 100.0)).unwrap();
    q.lease("ep", 1, 2.0, 1.0).unwrap();
    q.expire(5.0).unwrap();
    let failed = Outcome::Failed {
        reason: "ModelError".into(),
    };
    assert_eq!(q.complete("b", failed.clone(), 6.0).unwrap(), Completion::Completed);
    assert!(q.lease("ep", 1, 7.0, 1.0).unwrap().is_empty());
    assert_eq!(q.get("b").unwrap().unwrap().state, State::Done { outcome: failed });
}

#[test]
fn requests_past_their_ttl_are_handed_out_to_fail_not_to_run() {
    let (_d, q) = open();
    q.enqueue(&inv("old", "ep", 0.0, 10.0)).unwrap();
    q.enqueue(&inv("held", "ep", 0.0, 10.0)).unwrap();
    q.enqueue(&inv("young", "ep", 5.0, 100.0)).unwrap();
    q.enqueue(&inv("other", "ep2", 1.0, 10.0)).unwrap();
    // Past its TTL a request is no longer handed out to run.
    assert_eq!(ids(&q.lease("ep", 1, 9.0, 100.0).unwrap()), ["old"]);
    assert_eq!(ids(&q.lease("ep", 1, 10.0, 100.0).unwrap()), ["young"]);
    // It is handed out to fail, of every endpoint, oldest first, and stays leased until its
    // failure is written and it is completed.
    assert_eq!(ids(&q.lease_expired(5, 20.0, 30.0).unwrap()), ["held", "other"]);
    assert!(q.lease_expired(5, 20.0, 30.0).unwrap().is_empty());
    assert_eq!(
        q.complete("held", Outcome::Expired, 21.0).unwrap(),
        Completion::Completed
    );
    // A worker that died: its lease runs out and the request is handed out to fail again.
    assert_eq!(q.expire(50.0).unwrap(), Expiry { requeued: 1 });
    assert_eq!(ids(&q.lease_expired(5, 50.0, 30.0).unwrap()), ["other"]);
    q.complete("other", Outcome::Expired, 51.0).unwrap();
    // The leased one past its TTL is not expired while its lease holds.
    assert!(matches!(q.get("old").unwrap().unwrap().state, State::Leased { .. }));
    assert!(q.lease_expired(5, 60.0, 30.0).unwrap().is_empty());
    // Once its lease runs out it goes back, past its TTL, and is handed out to fail.
    q.expire(109.0).unwrap();
    assert_eq!(ids(&q.lease_expired(5, 109.0, 30.0).unwrap()), ["old"]);
}

#[test]
fn release_and_purge() {
    let (_d, q) = open();
    q.enqueue(&inv("a", "ep", 0.0, 100.0)).unwrap();
    q.enqueue(&inv("b", "ep", 1.0, 100.0)).unwrap();
    q.enqueue(&inv("c", "ep", 2.0, 100.0)).unwrap();
    assert_eq!(q.endpoints_with_backlog().unwrap(), ["ep"]);
    q.lease("ep", 3, 5.0, 1000.0).unwrap();
    q.complete("a", Outcome::Succeeded, 6.0).unwrap();
    q.complete("b", Outcome::Succeeded, 8.0).unwrap();
    // One lease given back: only a leased request moves.
    q.lease("ep", 1, 5.5, 1000.0).unwrap_or_default();
    assert!(!q.release("a").unwrap(), "a is done");
    assert!(q.release("c").unwrap());
    assert!(!q.release("c").unwrap(), "c is queued already");
    q.lease("ep", 3, 5.6, 1000.0).unwrap();
    // Start-up: every lease goes back at once, whatever its deadline.
    assert_eq!(q.release_leases().unwrap(), 1);
    assert_eq!(q.get("c").unwrap().unwrap().state, State::Queued);
    // Retention forgets what ended before the cut, and only that.
    assert_eq!(q.purge_done(7.0).unwrap(), 1);
    assert!(q.get("a").unwrap().is_none());
    assert!(q.get("b").unwrap().is_some());
    assert_eq!(q.len().unwrap(), 2);
    q.complete("c", Outcome::Succeeded, 9.0).unwrap();
    assert!(q.endpoints_with_backlog().unwrap().is_empty());
}

#[test]
fn backlog_counts_queued_and_leased_with_the_oldest_age() {
    let (_d, q) = open();
    assert_eq!(q.backlog("ep", 50.0).unwrap(), Backlog::default());
    q.enqueue(&inv("a", "ep", 10.0, 1000.0)).unwrap();
    q.enqueue(&inv("b", "ep", 20.0, 1000.0)).unwrap();
    q.enqueue(&inv("c", "other", 0.0, 1000.0)).unwrap();
    q.lease("ep", 1, 30.0, 100.0).unwrap();
    assert_eq!(
        q.backlog("ep", 50.0).unwrap(),
        Backlog {
            size: 2,
            oldest_age_seconds: 40.0
        }
    );
    q.complete("a", Outcome::Succeeded, 51.0).unwrap();
    assert_eq!(
        q.backlog("ep", 50.0).unwrap(),
        Backlog {
            size: 1,
            oldest_age_seconds: 30.0
        }
    );
    assert_eq!(q.backlog("other", 0.0).unwrap().size, 1);
}

#[test]
fn state_survives_reopening_and_the_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    {
        let q = Queue::open(&path).unwrap();
        q.enqueue(&inv("a", "ep", 1.0, 100.0)).unwrap();
        q.enqueue(&inv("b", "ep", 2.0, 100.0)).unwrap();
        q.lease("ep", 1, 3.0, 10.0).unwrap();
    }
    let q = Queue::open(&path).unwrap();
    assert_eq!(q.len().unwrap(), 2);
    assert_eq!(
        q.get("a").unwrap().unwrap().state,
        State::Leased {
            until: 13.0,
            attempt: 1
        }
    );
    assert_eq!(ids(&q.lease("ep", 5, 4.0, 10.0).unwrap()), ["b"]);
    for suffix in ["", "-wal", "-shm"] {
        let p = dir.path().join(format!("queue.db{suffix}"));
        if p.exists() {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }
}

#[test]
fn concurrent_enqueues_are_group_committed_and_all_kept() {
    let (_d, q) = open();
    let q = std::sync::Arc::new(q);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    q.enqueue(&inv(&format!("{t}-{i}"), "ep", f64::from(i), 1e6)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(q.len().unwrap(), 400);
    assert_eq!(q.backlog("ep", 0.0).unwrap().size, 400);
}

#[tokio::test]
async fn enqueue_async_commits_too() {
    let (_d, q) = open();
    q.enqueue_async(&inv("a", "ep", 1.0, 10.0)).await.unwrap();
    assert!(matches!(
        q.enqueue_async(&inv("a", "ep", 1.0, 10.0)).await,
        Err(QueueError::Duplicate { .. })
    ));
    assert_eq!(q.len().unwrap(), 1);
}

// ---- The state machine against an in-memory reference model.

/// The reference: a list in acceptance order, the obvious semantics.
#[derive(Default)]
struct Model {
    rows: Vec<(Invocation, State, u32)>,
}

impl Model {
    fn enqueue(&mut self, i: &Invocation) -> Result<(), String> {
        if let Some(r) = self.rows.iter().find(|r| r.0.id == i.id) {
            return Err(r.0.output_location.clone());
        }
        self.rows.push((i.clone(), State::Queued, 0));
        Ok(())
    }

    fn lease(&mut self, ep: &str, max: usize, now: f64, secs: f64) -> Vec<Request> {
        let mut order: Vec<usize> = (0..self.rows.len())
            .filter(|&k| {
                let r = &self.rows[k];
                r.0.endpoint == ep && r.1 == State::Queued && r.0.ttl_deadline > now
            })
            .collect();
        // Stable: equal creation times keep acceptance order.
        order.sort_by(|&x, &y| self.rows[x].0.created.total_cmp(&self.rows[y].0.created));
        self.take(order, max, now + secs)
    }

    fn complete(&mut self, id: &str, outcome: Outcome) -> Option<Completion> {
        let r = self.rows.iter_mut().find(|r| r.0.id == id)?;
        if let State::Done { outcome } = &r.1 {
            return Some(Completion::AlreadyDone(outcome.clone()));
        }
        r.1 = State::Done { outcome };
        // A finished request's inline payload is not kept.
        r.0.inline_body = None;
        Some(Completion::Completed)
    }

    fn expire(&mut self, now: f64) -> Expiry {
        let mut e = Expiry::default();
        for r in &mut self.rows {
            if matches!(r.1, State::Leased { until, .. } if until <= now) {
                r.1 = State::Queued;
                e.requeued += 1;
            }
        }
        e
    }

    fn lease_expired(&mut self, max: usize, now: f64, secs: f64) -> Vec<Request> {
        let mut order: Vec<usize> = (0..self.rows.len())
            .filter(|&k| self.rows[k].1 == State::Queued && self.rows[k].0.ttl_deadline <= now)
            .collect();
        order.sort_by(|&x, &y| self.rows[x].0.created.total_cmp(&self.rows[y].0.created));
        self.take(order, max, now + secs)
    }

    fn take(&mut self, order: Vec<usize>, max: usize, until: f64) -> Vec<Request> {
        order
            .into_iter()
            .take(max)
            .map(|k| {
                let r = &mut self.rows[k];
                r.2 += 1;
                r.1 = State::Leased { until, attempt: r.2 };
                Request {
                    invocation: r.0.clone(),
                    state: r.1.clone(),
                    attempts: r.2,
                }
            })
            .collect()
    }

    fn backlog(&self, ep: &str, now: f64) -> Backlog {
        let live: Vec<_> = self
            .rows
            .iter()
            .filter(|r| r.0.endpoint == ep && !matches!(r.1, State::Done { .. }))
            .collect();
        Backlog {
            size: live.len() as u64,
            oldest_age_seconds: live
                .iter()
                .map(|r| r.0.created)
                .min_by(f64::total_cmp)
                .map_or(0.0, |c| (now - c).max(0.0)),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue { id: u8, ep: u8, ttl: u8, back: u8 },
    Lease { ep: u8, max: u8, secs: u8 },
    Complete { id: u8, outcome: u8 },
    Expire,
    LeaseExpired { max: u8, secs: u8 },
    Backlog { ep: u8 },
    Advance(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12, 0u8..2, 1u8..20, 0u8..3).prop_map(|(id, ep, ttl, back)| Op::Enqueue { id, ep, ttl, back }),
        3 => (0u8..2, 0u8..4, 0u8..6).prop_map(|(ep, max, secs)| Op::Lease { ep, max, secs }),
        2 => (0u8..12, 0u8..3).prop_map(|(id, outcome)| Op::Complete { id, outcome }),
        2 => Just(Op::Expire),
        2 => (0u8..4, 0u8..6).prop_map(|(max, secs)| Op::LeaseExpired { max, secs }),
        1 => (0u8..2).prop_map(|ep| Op::Backlog { ep }),
        2 => (0u8..5).prop_map(Op::Advance),
    ]
}

fn outcome_of(k: u8) -> Outcome {
    match k {
        0 => Outcome::Succeeded,
        1 => Outcome::Failed {
            reason: "ModelError".into(),
        },
        _ => Outcome::Expired,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any sequence of operations gives the same answers from the queue as from the model,
    /// and the stored requests end the same, also after reopening the file.
    #[test]
    fn the_queue_behaves_as_the_reference_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        let q = Queue::open(&path).unwrap();
        let mut m = Model::default();
        let mut now = 100.0;
        let ep = |e: u8| format!("ep{e}");
        for op in &ops {
            match op {
                Op::Enqueue { id, ep: e, ttl, back } => {
                    // Creation times may run a little backwards across producers.
                    let i = inv(&format!("r{id}"), &ep(*e), now - f64::from(*back), f64::from(*ttl));
                    let got = q.enqueue(&i).map_err(|e| match e {
                        QueueError::Duplicate { output_location, .. } => output_location,
                        other => panic!("{other}"),
                    });
                    prop_assert_eq!(got, m.enqueue(&i));
                }
                Op::Lease { ep: e, max, secs } => {
                    let got = q.lease(&ep(*e), usize::from(*max), now, f64::from(*secs)).unwrap();
                    prop_assert_eq!(got, m.lease(&ep(*e), usize::from(*max), now, f64::from(*secs)));
                }
                Op::Complete { id, outcome } => {
                    let id = format!("r{id}");
                    let got = match q.complete(&id, outcome_of(*outcome), now) {
                        Ok(c) => Some(c),
                        Err(QueueError::NotFound(_)) => None,
                        Err(e) => panic!("{e}"),
                    };
                    prop_assert_eq!(got, m.complete(&id, outcome_of(*outcome)));
                }
                Op::Expire => prop_assert_eq!(q.expire(now).unwrap(), m.expire(now)),
                Op::LeaseExpired { max, secs } => {
                    let got = q.lease_expired(usize::from(*max), now, f64::from(*secs)).unwrap();
                    prop_assert_eq!(got, m.lease_expired(usize::from(*max), now, f64::from(*secs)));
                }
                Op::Backlog { ep: e } => prop_assert_eq!(q.backlog(&ep(*e), now).unwrap(), m.backlog(&ep(*e), now)),
                Op::Advance(s) => now += f64::from(*s),
            }
        }
        drop(q);
        let q = Queue::open(&path).unwrap();
        prop_assert_eq!(q.len().unwrap(), m.rows.len() as u64);
        for (i, state, attempts) in &m.rows {
            let r = q.get(&i.id).unwrap().unwrap();
            prop_assert_eq!(&r.invocation, i);
            prop_assert_eq!(&r.state, state);
            prop_assert_eq!(r.attempts, *attempts);
        }
    }
}

// ---- Crash safety: no acknowledged enqueue is lost to a SIGKILL.

const CRASH_ENV: &str = "SPILLWAY_QUEUE_CRASH_CHILD";
const ROUND_ENV: &str = "SPILLWAY_QUEUE_CRASH_ROUND";

/// Only does anything as the crash test's child: 8 producers enqueue until killed, each
/// printing `ACK <id>` after its enqueue returned.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CRASH_ENV) else { return };
    let round = std::env::var(ROUND_ENV).unwrap_or_default();
    let q = std::sync::Arc::new(Queue::open(Path::new(&path)).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let q = q.clone();
            let round = round.clone();
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let id = format!("r{round}-p{t}-{i}");
                    q.enqueue(&inv(&id, "ep", i as f64, 1e9)).unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {id}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn no_acknowledged_request_is_lost_to_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let mut all_acked: Vec<String> = vec![];
    for round in 0..3 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "queue::tests::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_ENV, &path)
            .env(ROUND_ENV, round.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut reader = std::io::BufReader::new(stdout);
        let mut acked: Vec<String> = vec![];
        let mut line = String::new();
        // Kill it mid-stream, at a different point each round.
        let kill_after = 300 + round * 450;
        while acked.len() < kill_after {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                panic!("the child ended before being killed: {:?}", child.wait());
            }
            if let Some(id) = line.trim_end().strip_prefix("ACK ") {
                acked.push(id.to_string());
            }
        }
        child.kill().unwrap(); // SIGKILL
        // Lines already in the pipe were printed after their enqueue returned: they count too.
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            if line.ends_with('\n')
                && let Some(id) = line.trim_end().strip_prefix("ACK ")
            {
                acked.push(id.to_string());
            }
        }
        child.wait().unwrap();
        let q = Queue::open(&path).unwrap();
        let conn = q.reader();
        let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok");
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        let mut stmt = conn.prepare("SELECT id, COUNT(*) FROM requests GROUP BY id").unwrap();
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?))).unwrap() {
            let (id, n) = row.unwrap();
            counts.insert(id, n);
        }
        all_acked.extend(acked);
        // Every request acknowledged in this round and the rounds before it.
        for id in &all_acked {
            assert_eq!(
                counts.get(id),
                Some(&1),
                "round {round}: acknowledged {id} is not stored exactly once"
            );
        }
        // The next round's child writes to the same file, after this crash's recovery.
    }
}
