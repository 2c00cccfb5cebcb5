//! Issue 16's queue benchmark: durable enqueues per second through [`spillway::queue::Queue`]
//! (8 concurrent producers, group commit, every acknowledged request fsync'd) next to the same
//! disk's physical limits measured in the same run: plain SQLite single-row `INSERT` + commit
//! transactions per second and rows per second batched in one transaction, with the same
//! durability (WAL, `synchronous=FULL`).
//!
//! `cargo run --release --example queue_bench -- [DIR] [SECONDS]` (DIR on the disk the data
//! dir lives on, default `.`; SECONDS per measurement, default 5). Results in BENCHMARKS.md.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use spillway::queue::{Invocation, Queue};

const PRODUCERS: usize = 8;
const BATCH: usize = 1000;

#[allow(clippy::disallowed_methods)] // a benchmark measures elapsed time; it decides nothing
fn now() -> Instant {
    Instant::now()
}

fn invocation(id: String) -> Invocation {
    Invocation {
        output_location: format!("s3://bucket/out/{id}.out"),
        failure_location: Some(format!("s3://bucket/failure/{id}-error.out")),
        input_location: "s3://bucket/in/payload.json".into(),
        inline_body: None,
        inference_id: id.clone(),
        id,
        endpoint: "bench".into(),
        content_type: Some("application/json".into()),
        accept: None,
        custom_attributes: None,
        created: 0.0,
        ttl_deadline: 21600.0,
        invocation_timeout_seconds: 900,
    }
}

fn raw(dir: &Path, name: &str) -> Connection {
    let conn = Connection::open(dir.join(name)).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
    conn.pragma_update(None, "synchronous", "FULL").expect("full");
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS t (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, body TEXT NOT NULL)",
    )
    .expect("schema");
    conn
}

/// Single-row INSERT, one transaction (one fsync) each.
fn single_row(dir: &Path, secs: f64) -> f64 {
    let conn = raw(dir, "single.db");
    let (start, mut n) = (now(), 0u64);
    while start.elapsed().as_secs_f64() < secs {
        conn.execute(
            "INSERT INTO t (id, body) VALUES (?1, 's3://bucket/in/payload.json')",
            params![format!("s{n}")],
        )
        .expect("insert");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// BATCH rows per transaction.
fn batched(dir: &Path, secs: f64) -> f64 {
    let mut conn = raw(dir, "batched.db");
    let (start, mut n) = (now(), 0u64);
    while start.elapsed().as_secs_f64() < secs {
        let tx = conn.transaction().expect("tx");
        {
            let mut stmt = tx
                .prepare_cached("INSERT INTO t (id, body) VALUES (?1, 's3://bucket/in/payload.json')")
                .expect("prepare");
            for _ in 0..BATCH {
                stmt.execute(params![format!("b{n}")]).expect("insert");
                n += 1;
            }
        }
        tx.commit().expect("commit");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// PRODUCERS threads enqueueing through the queue; (enqueues/s, p50 ms, p99 ms).
fn queue(dir: &Path, secs: f64) -> (f64, f64, f64) {
    let q = Arc::new(Queue::open(&dir.join("queue.db")).expect("open the queue"));
    let stop = Arc::new(AtomicBool::new(false));
    let start = now();
    let threads: Vec<_> = (0..PRODUCERS)
        .map(|t| {
            let (q, stop) = (q.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut lat = vec![];
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = now();
                    q.enqueue(&invocation(format!("q{t}-{i}"))).expect("enqueue");
                    lat.push(t0.elapsed());
                    i += 1;
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().expect("producer")).collect();
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    (lat.len() as f64 / elapsed, pct(0.50), pct(0.99))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let base = args.next().unwrap_or_else(|| ".".into());
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let dir = tempfile::tempdir_in(&base).expect("a scratch directory");
    let single = single_row(dir.path(), secs);
    let batch = batched(dir.path(), secs);
    let (rate, p50, p99) = queue(dir.path(), secs);
    println!("disk: {base}, {secs} s per measurement");
    println!("sqlite single-row INSERT + fsync'd commit:   {single:>10.0} transactions/s");
    println!("sqlite {BATCH}-row batches, one commit each:  {batch:>10.0} rows/s");
    println!(
        "queue enqueue, {PRODUCERS} producers, group commit: {rate:>10.0} enqueues/s (p50 {p50:.2} ms, p99 {p99:.2} ms)"
    );
    println!(
        "target >= 5000 enqueues/s: {}; {:.1}x the single-row limit",
        if rate >= 5000.0 { "met" } else { "NOT met" },
        rate / single
    );
}
