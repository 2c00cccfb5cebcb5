//! The capture side, run by an instance's shim (a process of its own, outside the server): the
//! model's stdout and stderr are one pipe, read by a thread, every line is stamped with the
//! time it was read and queued in memory (at most [`QUEUE_BYTES`]), and a writer thread appends
//! the queue to the stream's current segment ([`SegmentWriter`]), rotating as it fills.
//!
//! **The model never waits for its log.** A reader only ever takes the queue's lock for a few
//! pushes; when the queue is full (the disk is slow, full or gone) the line is dropped and
//! counted, and the writer later writes a notice saying how many lines were lost. So a model
//! blocks on its output no longer than it takes a thread to read a pipe, whatever the disk does.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use super::format::{self, Limits, Source};

/// The most bytes of records waiting for the writer; beyond it lines are dropped.
pub const QUEUE_BYTES: usize = 4 << 20;

/// How long the end of a capture waits for the writer to write what is queued.
pub const WRITE_WAIT: Duration = Duration::from_secs(5);

/// How a batch of records failed to be written: how many of them were not, and why.
#[derive(Debug)]
pub struct WriteError {
    /// Records of the batch that were not written.
    pub unwritten: usize,
    /// Why.
    pub error: io::Error,
}

/// Where the writer thread puts records: the stream's segments ([`SegmentWriter`]), or
/// anything else in tests.
pub trait Sink: Send + 'static {
    /// Writes encoded records, each one line.
    fn write(&mut self, records: &[Vec<u8>]) -> Result<(), WriteError>;
    /// Makes what was written durable; called once at the end.
    fn close(&mut self);
}

/// A stream's segments, written: records are appended to the current segment; when one would
/// not fit, the segment is closed, the oldest deleted and a new one started, so that at most
/// [`format::SEGMENTS`] exist at any time. A new writer always starts a new segment, so a record cut
/// off by a crash is never followed by another in the same file.
pub struct SegmentWriter {
    dir: PathBuf,
    limits: Limits,
    seq: u64,
    file: Option<File>,
    len: u64,
}

impl SegmentWriter {
    /// A writer for the stream in `dir` bounded as `limits` says; its first record starts a
    /// segment after every existing one.
    pub fn new(dir: &Path, limits: Limits) -> Self {
        let seq = format::segments(dir).ok().and_then(|s| s.last().copied()).unwrap_or(0);
        Self {
            dir: dir.to_path_buf(),
            limits,
            seq,
            file: None,
            len: 0,
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        // Not synced: a chatty model rotates many times a second, and what the page cache holds
        // survives any process's crash; the last segment is synced when the capture ends.
        self.file = None;
        self.seq += 1;
        self.len = 0;
        // Room first, so that there are never more than SEGMENTS files.
        self.prune(format::SEGMENTS as usize - 1);
        let path = self.dir.join(format::segment_file(self.seq));
        self.file = Some(OpenOptions::new().append(true).create_new(true).open(path)?);
        Ok(())
    }

    /// Deletes the oldest segments beyond `keep`.
    fn prune(&self, keep: usize) {
        let Ok(segs) = format::segments(&self.dir) else { return };
        let extra = segs.len().saturating_sub(keep);
        for seq in &segs[..extra] {
            let _ = std::fs::remove_file(self.dir.join(format::segment_file(*seq)));
        }
    }

    /// Appends `pending` to the current segment; a failed write is cut back off the file, so
    /// the segment holds whole records only.
    fn flush(&mut self, pending: &mut Vec<u8>) -> io::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let Some(f) = self.file.as_mut() else {
            return Err(io::Error::other("no segment is open"));
        };
        if let Err(e) = f.write_all(pending) {
            if f.set_len(self.len).is_err() {
                // The next record starts a new segment rather than follow a torn one.
                self.file = None;
            }
            return Err(e);
        }
        self.len += pending.len() as u64;
        pending.clear();
        Ok(())
    }
}

impl Sink for SegmentWriter {
    fn write(&mut self, records: &[Vec<u8>]) -> Result<(), WriteError> {
        let mut pending = Vec::new();
        let mut pending_records = 0;
        for (i, r) in records.iter().enumerate() {
            let used = self.len + pending.len() as u64;
            if self.file.is_none() || (used + r.len() as u64 > self.limits.segment_bytes && used > 0) {
                let flushed = self.flush(&mut pending).and_then(|()| self.rotate());
                if let Err(error) = flushed {
                    return Err(WriteError {
                        unwritten: records.len() - i + pending_records,
                        error,
                    });
                }
                pending_records = 0;
            }
            pending.extend_from_slice(r);
            pending_records += 1;
        }
        self.flush(&mut pending).map_err(|error| WriteError {
            unwritten: pending_records,
            error,
        })
    }

    fn close(&mut self) {
        if let Some(f) = self.file.take() {
            let _ = f.sync_data();
        }
    }
}

#[derive(Default)]
struct Queue {
    records: VecDeque<Vec<u8>>,
    bytes: usize,
    dropped: u64,
    dropped_bytes: u64,
    open_readers: usize,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer (records, or the end) and whoever waits for the readers to finish.
    bell: Condvar,
    max_event: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues records, or counts them as dropped when the queue is full.
    fn push(&self, records: Vec<Vec<u8>>) {
        if records.is_empty() {
            return;
        }
        let mut q = self.lock();
        for r in records {
            if q.bytes + r.len() > QUEUE_BYTES {
                q.dropped += 1;
                q.dropped_bytes += r.len() as u64;
            } else {
                q.bytes += r.len();
                q.records.push_back(r);
            }
        }
        drop(q);
        self.bell.notify_all();
    }
}

/// A spillway notice for the stream, from any thread of the shim (its own messages).
#[derive(Clone)]
pub struct Notifier(Arc<Shared>);

impl Notifier {
    /// Adds a spillway notice (source `s`) to the stream.
    pub fn note(&self, message: &str) {
        let mut r = vec![];
        let m = &message.as_bytes()[..message.len().min(self.0.max_event)];
        format::encode(now_ms(), Source::Spillway, m, &mut r);
        self.0.push(vec![r]);
    }
}

/// The capture of one instance's output.
pub struct Capture {
    shared: Arc<Shared>,
    writer: Option<mpsc::Receiver<()>>,
    readers: Vec<JoinHandle<()>>,
    dir: Option<PathBuf>,
}

/// The wall clock in milliseconds: the shim runs outside the server and its `Clock`, and an
/// event's timestamp is when its line was read.
#[allow(clippy::disallowed_methods)] // The shim's log timestamps are the wall clock's.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Capture {
    /// Starts capturing into the stream in `dir`, bounded to `max_bytes` (see
    /// [`Limits::for_stream`]).
    pub fn start(dir: &Path, max_bytes: u64) -> Self {
        let limits = Limits::for_stream(max_bytes);
        let mut c = Self::with_sink(SegmentWriter::new(dir, limits), limits.max_event);
        c.dir = Some(dir.to_path_buf());
        c
    }

    /// Starts capturing into any sink, with events of at most `max_event` bytes.
    pub fn with_sink(sink: impl Sink, max_event: usize) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            bell: Condvar::new(),
            max_event: max_event.max(1),
        });
        let (done, writer) = mpsc::channel();
        let s = shared.clone();
        let spawned = std::thread::Builder::new().name("log-writer".into()).spawn(move || {
            write_loop(&s, sink);
            let _ = done.send(());
        });
        Self {
            shared,
            writer: spawned.is_ok().then_some(writer),
            readers: vec![],
            dir: None,
        }
    }

    /// A pipe whose read end a thread of this capture reads as the model's output; the write
    /// end is for the model (its stdout and, cloned, its stderr).
    pub fn pipe(&mut self) -> io::Result<io::PipeWriter> {
        let (reader, writer) = io::pipe()?;
        self.read(reader, Source::Model)?;
        Ok(writer)
    }

    /// Reads `input` as `source` on a thread of its own until it ends.
    pub fn read(&mut self, input: impl Read + Send + 'static, source: Source) -> io::Result<()> {
        self.shared.lock().open_readers += 1;
        let s = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("log-reader".into())
            .spawn(move || read_lines(input, source, &s));
        match spawned {
            Ok(h) => {
                self.readers.push(h);
                Ok(())
            }
            Err(e) => {
                self.shared.lock().open_readers -= 1;
                Err(e)
            }
        }
    }

    /// Something that adds spillway's notices to the stream.
    pub fn notifier(&self) -> Notifier {
        Notifier(self.shared.clone())
    }

    /// Lines dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().dropped
    }

    /// Ends the capture: waits up to `wait` for every pipe to end (a process that survived
    /// SIGKILL may hold one open forever), writes what was queued (waiting up to
    /// [`WRITE_WAIT`] for the writer, whose queue holds at most [`QUEUE_BYTES`]), and marks the
    /// stream ended with `status` (the `ended` file).
    pub fn finish(mut self, wait: Duration, status: &str) {
        {
            let q = self.shared.lock();
            let (q, _) = self
                .shared
                .bell
                .wait_timeout_while(q, wait, |q| q.open_readers > 0)
                .unwrap_or_else(|p| p.into_inner());
            drop(q);
        }
        self.shared.lock().closed = true;
        self.shared.bell.notify_all();
        if let Some(w) = self.writer.take() {
            let _ = w.recv_timeout(WRITE_WAIT);
        }
        // Readers still blocked on a pipe are left to the process's exit.
        self.readers.retain(|h| !h.is_finished());
        if let Some(dir) = &self.dir {
            let _ = std::fs::write(dir.join("ended"), format!("{status}\n"));
        }
    }
}

/// A reader thread: splits `input` into lines (at most `max_event` bytes each; a longer line
/// becomes several events, cut at a UTF-8 boundary where there is one), skips empty ones and
/// queues the rest, stamped with the time their bytes were read.
fn read_lines(mut input: impl Read, source: Source, shared: &Shared) {
    let max = shared.max_event;
    let mut buf = vec![0u8; 64 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    let mut ts = now_ms();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        ts = now_ms();
        let mut out = vec![];
        for chunk in buf[..n].split_inclusive(|b| *b == b'\n') {
            let complete = chunk.last() == Some(&b'\n');
            let mut rest = if complete { &chunk[..chunk.len() - 1] } else { chunk };
            while partial.len() + rest.len() > max {
                if partial.len() >= max {
                    emit(&mut partial, ts, source, &mut out);
                    continue;
                }
                let take = utf8_cut(rest, max - partial.len());
                partial.extend_from_slice(&rest[..take]);
                emit(&mut partial, ts, source, &mut out);
                rest = &rest[take..];
            }
            partial.extend_from_slice(rest);
            if complete {
                emit(&mut partial, ts, source, &mut out);
            }
        }
        shared.push(out);
    }
    let mut out = vec![];
    emit(&mut partial, ts, source, &mut out);
    shared.push(out);
    shared.lock().open_readers -= 1;
    shared.bell.notify_all();
}

/// How many bytes of `s` to take, at most `max` (at least 1), ending at a UTF-8 character
/// boundary when one is within the last 3 bytes.
fn utf8_cut(s: &[u8], max: usize) -> usize {
    let max = max.clamp(1, s.len().max(1));
    (max.saturating_sub(3).max(1)..=max)
        .rev()
        .find(|&i| i == s.len() || (s[i] & 0xC0) != 0x80)
        .unwrap_or(max)
}

/// Encodes the line in `partial` (without a trailing `\r`) unless it is empty, and clears it.
fn emit(partial: &mut Vec<u8>, ts: i64, source: Source, out: &mut Vec<Vec<u8>>) {
    let line = partial.strip_suffix(b"\r").unwrap_or(partial);
    if !line.is_empty() {
        let mut r = Vec::with_capacity(line.len() + format::RECORD_OVERHEAD);
        format::encode(ts, source, line, &mut r);
        out.push(r);
    }
    partial.clear();
}

/// The writer thread: takes what is queued, writes it, and writes a notice first when lines
/// were dropped or could not be written; ends once the capture is closed and the queue empty.
fn write_loop(shared: &Shared, mut sink: impl Sink) {
    let mut unwritten: u64 = 0;
    let mut why = String::new();
    loop {
        let (batch, dropped, dropped_bytes, closed) = {
            let q = shared.lock();
            let mut q = shared
                .bell
                .wait_while(q, |q| q.records.is_empty() && q.dropped == 0 && !q.closed)
                .unwrap_or_else(|p| p.into_inner());
            let batch: Vec<Vec<u8>> = q.records.drain(..).collect();
            q.bytes = 0;
            let d = (std::mem::take(&mut q.dropped), std::mem::take(&mut q.dropped_bytes));
            (batch, d.0, d.1, q.closed)
        };
        let mut records = Vec::with_capacity(batch.len() + 2);
        if dropped > 0 {
            let mut r = vec![];
            let msg = format!(
                "[spillway] {dropped} line(s) ({dropped_bytes} bytes) of the model's output were dropped: the log writer could not keep up"
            );
            format::encode(now_ms(), Source::Spillway, msg.as_bytes(), &mut r);
            records.push(r);
        }
        if unwritten > 0 {
            let mut r = vec![];
            let msg = format!("[spillway] {unwritten} line(s) of the model's output could not be written: {why}");
            format::encode(now_ms(), Source::Spillway, msg.as_bytes(), &mut r);
            records.push(r);
        }
        let notices = records.len();
        records.extend(batch);
        if !records.is_empty() {
            match sink.write(&records) {
                Ok(()) => unwritten = 0,
                Err(e) => {
                    // The notices themselves are not counted as the model's lines.
                    unwritten += e.unwritten.saturating_sub(notices) as u64;
                    why = e.error.to_string();
                }
            }
        }
        if closed && records.len() == notices {
            let q = shared.lock();
            if q.records.is_empty() && q.dropped == 0 {
                break;
            }
        }
    }
    sink.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::store::{Cursor, read_stream_meta};

    /// Every event of the stream in `dir`, as (source, message).
    fn events(dir: &Path) -> Vec<(Source, String)> {
        let mut c = Cursor::open(dir, format::Position::ORIGIN);
        let mut out = vec![];
        while let Some(e) = c.next_event() {
            out.push((e.source, e.message));
        }
        out
    }

    /// Waits until every pipe of `c` has ended and been read.
    fn wait_for_readers(c: &Capture) {
        for _ in 0..400 {
            if c.shared.lock().open_readers == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the readers did not finish");
    }

    fn bytes_on_disk(dir: &Path) -> u64 {
        format::segments(dir)
            .unwrap()
            .iter()
            .map(|s| std::fs::metadata(dir.join(format::segment_file(*s))).unwrap().len())
            .sum()
    }

    #[test]
    fn lines_of_stdout_and_stderr_are_stamped_and_kept_in_order() {
        let t = tempfile::tempdir().unwrap();
        let mut c = Capture::start(t.path(), 1 << 20);
        let before = now_ms();
        let mut out = c.pipe().unwrap();
        let mut err = out.try_clone().unwrap();
        out.write_all(b"one\n").unwrap();
        err.write_all(b"two\r\n\n").unwrap();
        out.write_all("drei ü\nunfinished".as_bytes()).unwrap();
        drop((out, err));
        wait_for_readers(&c);
        c.notifier().note("a note");
        c.finish(Duration::from_secs(5), "process exited with exit status: 3");
        let got = events(t.path());
        assert_eq!(
            got,
            vec![
                (Source::Model, "one".into()),
                (Source::Model, "two".into()),
                (Source::Model, "drei ü".into()),
                (Source::Model, "unfinished".into()),
                (Source::Spillway, "a note".into()),
            ]
        );
        let mut c = Cursor::open(t.path(), format::Position::ORIGIN);
        let first = c.next_event().unwrap();
        assert!(first.timestamp >= before && first.timestamp <= now_ms());
        assert_eq!(
            std::fs::read_to_string(t.path().join("ended")).unwrap(),
            "process exited with exit status: 3\n"
        );
        assert!(read_stream_meta(t.path()).is_none(), "no stream.json here");
    }

    #[test]
    fn long_lines_become_several_events_cut_between_characters() {
        let t = tempfile::tempdir().unwrap();
        let mut c = Capture::start(t.path(), 64 * 1024);
        let max = Limits::for_stream(64 * 1024).max_event;
        let line = "é".repeat(max); // 2 bytes each
        c.read(std::io::Cursor::new(format!("{line}\n").into_bytes()), Source::Model)
            .unwrap();
        c.finish(Duration::from_secs(5), "done");
        let got = events(t.path());
        assert!(got.len() >= 2, "{}", got.len());
        assert!(got.iter().all(|(_, m)| m.len() <= max && !m.contains('\u{fffd}')));
        assert_eq!(got.iter().map(|(_, m)| m.as_str()).collect::<String>(), line);
    }

    #[test]
    fn a_stream_never_grows_past_its_bound_and_keeps_the_latest_lines() {
        let t = tempfile::tempdir().unwrap();
        let bound = 64 * 1024;
        let mut c = Capture::start(t.path(), bound);
        let text: String = (0..20_000)
            .map(|i| format!("line {i:06} {}\n", "x".repeat(40)))
            .collect();
        c.read(std::io::Cursor::new(text.into_bytes()), Source::Model).unwrap();
        c.finish(Duration::from_secs(10), "done");
        assert!(bytes_on_disk(t.path()) <= bound, "{}", bytes_on_disk(t.path()));
        assert!(format::segments(t.path()).unwrap().len() as u64 <= format::SEGMENTS);
        let got = events(t.path());
        assert_eq!(got.last().unwrap().1, format!("line 019999 {}", "x".repeat(40)));
        // What is kept is a contiguous run of the latest lines.
        let first: usize = got[0].1[5..11].parse().unwrap();
        for (i, (_, m)) in got.iter().enumerate() {
            assert!(m.starts_with(&format!("line {:06} ", first + i)), "{m}");
        }
        assert!(first > 0, "the oldest lines were rotated out");
    }

    #[test]
    fn a_new_writer_starts_a_new_segment_after_a_torn_record() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join(format::segment_file(3)),
            b"5 m whole\n6 m cut off by a cr",
        )
        .unwrap();
        let mut w = SegmentWriter::new(t.path(), Limits::for_stream(1 << 20));
        let mut r = vec![];
        format::encode(7, Source::Model, b"after", &mut r);
        w.write(&[r]).unwrap();
        w.close();
        assert_eq!(format::segments(t.path()).unwrap(), vec![3, 4]);
        let got: Vec<String> = events(t.path()).into_iter().map(|e| e.1).collect();
        assert_eq!(got, ["whole", "after"]);
    }

    /// A sink that never finishes its first write until told to.
    struct Stalled(Arc<(Mutex<bool>, Condvar)>, Arc<Mutex<usize>>);

    impl Sink for Stalled {
        fn write(&mut self, records: &[Vec<u8>]) -> Result<(), WriteError> {
            let (lock, cv) = &*self.0;
            let g = lock.lock().unwrap();
            drop(cv.wait_while(g, |go| !*go).unwrap());
            *self.1.lock().unwrap() += records.len();
            Ok(())
        }
        fn close(&mut self) {}
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // Measures how long a writer of the pipe is held up.
    fn a_stalled_disk_never_blocks_the_model_it_drops_and_counts() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let written = Arc::new(Mutex::new(0));
        let mut c = Capture::with_sink(Stalled(gate.clone(), written.clone()), 1024);
        let mut w = c.pipe().unwrap();
        // 32 MiB of lines (8 times the queue) into a pipe whose writer is stuck.
        let line = format!("{}\n", "y".repeat(1000));
        let started = std::time::Instant::now();
        for _ in 0..32 * 1024 {
            w.write_all(line.as_bytes()).unwrap();
        }
        drop(w);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(20), "the model was held up for {took:?}");
        // Wait until the reader has seen everything, then let the disk go.
        wait_for_readers(&c);
        let dropped = c.dropped();
        assert!(dropped > 0, "lines beyond the queue are dropped");
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        c.finish(Duration::from_secs(10), "done");
        let written = *written.lock().unwrap();
        // Everything read was either written or counted, plus one notice about the drop.
        assert_eq!(
            written as u64 + dropped,
            32 * 1024 + 1,
            "written {written}, dropped {dropped}"
        );
    }
}
