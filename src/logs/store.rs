//! The reading side: log groups and streams as the CloudWatch Logs API lists them, events read
//! back in the order they were written ([`Cursor`]), the last lines of a stream (for a launch
//! failure's message), and retention ([`LogStore::sweep`]).
//!
//! Names a client sends never become paths: groups and streams are found by listing their
//! directories and comparing names.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::format::{self, Position, Source};

/// The file that describes a stream.
const STREAM_META: &str = "stream.json";
/// The file that describes a group.
const GROUP_META: &str = "group.json";
/// The file the shim writes when its instance is gone.
pub const ENDED: &str = "ended";
/// The file holding the key of the API's pagination tokens.
const TOKEN_KEY: &str = "token-key";

/// What `stream.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamMeta {
    /// The endpoint whose group the stream is in.
    pub endpoint: String,
    /// The instance's variant.
    pub variant: String,
    /// The instance.
    pub instance_id: String,
}

#[derive(Serialize, Deserialize)]
struct GroupMeta {
    endpoint: String,
}

/// Whether `s` can name a directory of the store: an endpoint name or an instance id (letters,
/// digits and `-`), never `.`, `..` or anything with a separator.
fn plain_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Creates the stream directory of an instance under `root` (and its group's, if new); returns
/// it.
pub fn create_stream(root: &Path, endpoint: &str, variant: &str, instance_id: &str) -> io::Result<PathBuf> {
    if !plain_name(endpoint) || !plain_name(instance_id) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot keep logs for endpoint {endpoint:?}, instance {instance_id:?}"),
        ));
    }
    let group = root.join(endpoint);
    let dir = group.join(instance_id);
    // A sweep may remove an empty group between the two levels; try again then.
    let mut made = std::fs::create_dir_all(&dir);
    for _ in 0..3 {
        if made.is_ok() {
            break;
        }
        made = std::fs::create_dir_all(&dir);
    }
    made?;
    let meta = serde_json::to_vec(&GroupMeta {
        endpoint: endpoint.to_string(),
    })
    .map_err(io::Error::other)?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(group.join(GROUP_META))
    {
        Ok(mut f) => io::Write::write_all(&mut f, &meta)?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = StreamMeta {
        endpoint: endpoint.to_string(),
        variant: variant.to_string(),
        instance_id: instance_id.to_string(),
    };
    std::fs::write(
        dir.join(STREAM_META),
        serde_json::to_vec(&meta).map_err(io::Error::other)?,
    )?;
    Ok(dir)
}

/// What a stream directory's `stream.json` says (`None`: not a stream).
pub fn read_stream_meta(dir: &Path) -> Option<StreamMeta> {
    serde_json::from_slice(&std::fs::read(dir.join(STREAM_META)).ok()?).ok()
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A log group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Its endpoint.
    pub endpoint: String,
    /// When its first stream was created (ms).
    pub creation_ms: i64,
    /// Bytes its streams hold.
    pub stored_bytes: u64,
}

/// A log stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// `<variant>/<instance id>`.
    pub name: String,
    /// Its instance.
    pub instance_id: String,
    /// Its directory.
    pub dir: PathBuf,
    /// When it was created (ms): when its instance was launched.
    pub creation_ms: i64,
    /// The first event's timestamp, if it has events.
    pub first_event_ms: Option<i64>,
    /// The last event's timestamp, if it has events.
    pub last_event_ms: Option<i64>,
    /// Bytes its segments hold.
    pub stored_bytes: u64,
}

impl StreamInfo {
    fn read(dir: &Path, meta: &StreamMeta) -> Self {
        let segs = format::segments(dir).unwrap_or_default();
        let stored_bytes = segs
            .iter()
            .filter_map(|s| std::fs::metadata(dir.join(format::segment_file(*s))).ok())
            .map(|m| m.len())
            .sum();
        let first_event_ms = Cursor::open(dir, Position::ORIGIN).next_event().map(|e| e.timestamp);
        let last_event_ms = segs
            .iter()
            .rev()
            .find_map(|s| last_timestamp(&dir.join(format::segment_file(*s))));
        Self {
            name: crate::core::logs::stream_name(&meta.variant, &meta.instance_id),
            instance_id: meta.instance_id.clone(),
            dir: dir.to_path_buf(),
            creation_ms: mtime(&dir.join(STREAM_META)).map_or(0, millis),
            first_event_ms,
            last_event_ms,
            stored_bytes,
        }
    }
}

/// The timestamp of the last whole record of a segment, read from its end.
fn last_timestamp(path: &Path) -> Option<i64> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    // A record is at most this long, so the last one starts within this window.
    let window = (format::MAX_EVENT_BYTES + format::RECORD_OVERHEAD + 1) as u64;
    let start = len.saturating_sub(window);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::new();
    f.take(window).read_to_end(&mut tail).ok()?;
    let end = tail.iter().rposition(|b| *b == b'\n')?;
    let body = &tail[..end];
    let line_start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if line_start == 0 && start > 0 {
        return None;
    }
    format::decode(&body[line_start..]).map(|(ts, _, _)| ts)
}

/// One event read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Where its record starts.
    pub position: Position,
    /// Where the next record starts.
    pub next: Position,
    /// When its line was read (ms).
    pub timestamp: i64,
    /// Its output.
    pub source: Source,
    /// Its line (invalid UTF-8 replaced).
    pub message: String,
}

impl Event {
    /// What it counts against a page's size, as CloudWatch counts it: the message's bytes and
    /// 26 bytes.
    pub fn size(&self) -> usize {
        self.message.len() + 26
    }
}

/// Reads a stream's events in the order they were written, from a position on. Segments added
/// while it reads are not seen; a segment rotated out from under it ends early.
pub struct Cursor {
    dir: PathBuf,
    /// Segments still to read after the current one.
    rest: VecDeque<u64>,
    reader: Option<BufReader<File>>,
    pos: Position,
    line: Vec<u8>,
}

impl Cursor {
    /// A cursor at the first record at or after `from` (the oldest record when `from`'s segment
    /// was rotated out).
    pub fn open(dir: &Path, from: Position) -> Self {
        let mut rest: VecDeque<u64> = format::segments(dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|s| *s >= from.seq)
            .collect();
        let mut c = Self {
            dir: dir.to_path_buf(),
            rest: VecDeque::new(),
            reader: None,
            pos: from,
            line: Vec::new(),
        };
        if let Some(first) = rest.pop_front() {
            let offset = if first == from.seq { from.offset } else { 0 };
            c.pos = Position { seq: first, offset };
            c.reader = File::open(dir.join(format::segment_file(first)))
                .and_then(|mut f| f.seek(SeekFrom::Start(offset)).map(|_| f))
                .ok()
                .map(BufReader::new);
        }
        c.rest = rest;
        c
    }

    /// Where the next record starts, or, once every record was read, the end of the stream: a
    /// position after every record written so far.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// The next event; `None` at the end of the stream.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            let Some(reader) = self.reader.as_mut() else {
                if !self.next_segment() {
                    return None;
                }
                continue;
            };
            self.line.clear();
            let n = reader.read_until(b'\n', &mut self.line).unwrap_or(0);
            if n == 0 || self.line.last() != Some(&b'\n') {
                // The end of this segment. A record without its newline is being written (the
                // last segment: read it later) or was cut off by a crash (skip it).
                if !self.next_segment() {
                    return None;
                }
                continue;
            }
            let at = self.pos;
            self.pos.offset += n as u64;
            if let Some((timestamp, source, message)) = format::decode(&self.line[..n - 1]) {
                return Some(Event {
                    position: at,
                    next: self.pos,
                    timestamp,
                    source,
                    message: String::from_utf8_lossy(message).into_owned(),
                });
            }
        }
    }

    /// Moves to the next segment; `false` (staying where it is) when there is none.
    fn next_segment(&mut self) -> bool {
        let Some(seq) = self.rest.pop_front() else {
            self.reader = None;
            return false;
        };
        self.pos = Position { seq, offset: 0 };
        self.reader = File::open(self.dir.join(format::segment_file(seq)))
            .ok()
            .map(BufReader::new);
        true
    }
}

impl Iterator for Cursor {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.next_event()
    }
}

/// The last `n` lines the model wrote (stdout and stderr, not spillway's notices) to the stream
/// in `dir`, oldest first. Read from the end of the newest segments, a growing window at a time,
/// so it costs about what it returns whatever the stream's size.
pub fn tail(dir: &Path, n: usize) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    if n == 0 {
        return out;
    }
    for seq in format::segments(dir).unwrap_or_default().into_iter().rev() {
        let mut found = tail_of_segment(&dir.join(format::segment_file(seq)), seq, n - out.len());
        found.append(&mut out);
        out = found;
        if out.len() >= n {
            break;
        }
    }
    out
}

/// The last `n` model lines of one segment, oldest first.
fn tail_of_segment(path: &Path, seq: u64, n: usize) -> Vec<Event> {
    let Ok(mut f) = File::open(path) else { return vec![] };
    let Ok(len) = f.metadata().map(|m| m.len()) else {
        return vec![];
    };
    let mut window: u64 = 16 << 10;
    loop {
        let start = len.saturating_sub(window);
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(start)).is_err() || (&mut f).take(len - start).read_to_end(&mut buf).is_err() {
            return vec![];
        }
        // Whole records only: after the first newline unless the window starts the file, up to
        // the last newline.
        let first = if start == 0 {
            0
        } else {
            match buf.iter().position(|b| *b == b'\n') {
                Some(i) => i + 1,
                None => buf.len(),
            }
        };
        let end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let mut events = Vec::new();
        let mut offset = start + first as u64;
        if first < end {
            for line in buf[first..end - 1].split(|b| *b == b'\n') {
                let at = Position { seq, offset };
                offset += line.len() as u64 + 1;
                if let Some((timestamp, source, message)) = format::decode(line)
                    && source != Source::Spillway
                {
                    events.push(Event {
                        position: at,
                        next: Position { seq, offset },
                        timestamp,
                        source,
                        message: String::from_utf8_lossy(message).into_owned(),
                    });
                }
            }
        }
        if events.len() >= n || start == 0 {
            let skip = events.len().saturating_sub(n);
            return events.split_off(skip);
        }
        window *= 4;
    }
}

/// What a retention sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Streams deleted.
    pub streams: usize,
    /// Groups deleted (their last stream went).
    pub groups: usize,
}

/// The logs of a data directory.
pub struct LogStore {
    root: PathBuf,
    token_key: Vec<u8>,
}

impl LogStore {
    /// Opens (creating) `<data_dir>/logs` and the key of its pagination tokens.
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let root = super::root(data_dir);
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&root)?;
        let path = root.join(TOKEN_KEY);
        let key = match std::fs::read(&path) {
            Ok(k) if k.len() >= 32 => k,
            _ => {
                let mut k = vec![0u8; 32];
                getrandom::fill(&mut k).map_err(|e| io::Error::other(e.to_string()))?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&path)?;
                io::Write::write_all(&mut f, &k)?;
                f.sync_all()?;
                k
            }
        };
        Ok(Self { root, token_key: key })
    }

    /// `<data_dir>/logs`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The key that seals pagination tokens (random per data directory).
    pub fn token_key(&self) -> &[u8] {
        &self.token_key
    }

    fn group_dirs(&self) -> Vec<(String, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return vec![];
        };
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                plain_name(&name).then(|| (name, e.path()))
            })
            .filter(|(_, p)| p.join(GROUP_META).exists())
            .collect()
    }

    fn stream_dirs(group: &Path) -> Vec<(StreamMeta, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(group) else {
            return vec![];
        };
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| Some((read_stream_meta(&e.path())?, e.path())))
            .collect()
    }

    fn group_info(endpoint: String, dir: &Path) -> GroupInfo {
        let stored_bytes = Self::stream_dirs(dir)
            .iter()
            .flat_map(|(_, d)| {
                format::segments(d)
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |s| d.join(format::segment_file(s)))
            })
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        GroupInfo {
            endpoint,
            creation_ms: mtime(&dir.join(GROUP_META)).map_or(0, millis),
            stored_bytes,
        }
    }

    /// Every log group, by endpoint name (ASCII order, as AWS sorts group names).
    pub fn groups(&self) -> Vec<GroupInfo> {
        let mut out: Vec<GroupInfo> = self
            .group_dirs()
            .into_iter()
            .map(|(name, dir)| Self::group_info(name, &dir))
            .collect();
        out.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        out
    }

    /// The group of an endpoint, if it has one.
    pub fn group(&self, endpoint: &str) -> Option<GroupInfo> {
        self.group_dirs()
            .into_iter()
            .find(|(name, _)| name == endpoint)
            .map(|(name, dir)| Self::group_info(name, &dir))
    }

    /// The streams of an endpoint's group, by name (`None`: no such group).
    pub fn streams(&self, endpoint: &str) -> Option<Vec<StreamInfo>> {
        let (_, dir) = self.group_dirs().into_iter().find(|(name, _)| name == endpoint)?;
        let mut out: Vec<StreamInfo> = Self::stream_dirs(&dir)
            .iter()
            .map(|(meta, d)| StreamInfo::read(d, meta))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Some(out)
    }

    /// The directory of one stream of an endpoint's group, by stream name.
    pub fn stream_dir(&self, endpoint: &str, stream: &str) -> Option<PathBuf> {
        let (variant, instance) = stream.split_once('/')?;
        if !plain_name(endpoint) || !plain_name(instance) {
            return None;
        }
        let (_, group) = self.group_dirs().into_iter().find(|(name, _)| name == endpoint)?;
        let dir = group.join(instance);
        let meta = read_stream_meta(&dir)?;
        (meta.variant == variant && meta.instance_id == instance).then_some(dir)
    }

    /// The last `n` lines the model wrote to the stream of an instance ([`tail`]).
    pub fn tail(&self, endpoint: &str, instance_id: &str, n: usize) -> Vec<Event> {
        if !plain_name(endpoint) || !plain_name(instance_id) {
            return vec![];
        }
        tail(&self.root.join(endpoint).join(instance_id), n)
    }

    /// Deletes the streams whose instance is not in `live` and that ended more than `retention`
    /// before `now` (when the shim wrote `ended`, else their last write), and the groups left
    /// without streams whose endpoint is not in `live_endpoints` (and that are older than
    /// `retention` themselves, so a group being created is never taken).
    pub fn sweep(
        &self,
        live: &HashSet<String>,
        live_endpoints: &HashSet<String>,
        now: SystemTime,
        retention: Duration,
    ) -> Sweep {
        let expired = |t: Option<SystemTime>| t.is_some_and(|t| now.duration_since(t).is_ok_and(|age| age > retention));
        let mut done = Sweep::default();
        for (endpoint, group) in self.group_dirs() {
            let Ok(entries) = std::fs::read_dir(&group) else {
                continue;
            };
            let mut left = 0;
            for e in entries.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let dir = e.path();
                let id = e.file_name().to_string_lossy().into_owned();
                if live.contains(&id) {
                    left += 1;
                    continue;
                }
                let ended = mtime(&dir.join(ENDED)).or_else(|| {
                    std::fs::read_dir(&dir)
                        .ok()?
                        .flatten()
                        .filter_map(|f| f.metadata().ok()?.modified().ok())
                        .chain(mtime(&dir))
                        .max()
                });
                if expired(ended) && std::fs::remove_dir_all(&dir).is_ok() {
                    done.streams += 1;
                } else {
                    left += 1;
                }
            }
            let meta = group.join(GROUP_META);
            if left == 0 && !live_endpoints.contains(&endpoint) && expired(mtime(&meta)) {
                let _ = std::fs::remove_file(&meta);
                if std::fs::remove_dir(&group).is_ok() {
                    done.groups += 1;
                } else {
                    // A stream arrived meanwhile: the group stays, with a new creation time.
                    let _ = std::fs::write(&meta, serde_json::to_vec(&GroupMeta { endpoint }).unwrap_or_default());
                }
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::capture::{SegmentWriter, Sink};
    use crate::logs::format::Limits;

    fn write(dir: &Path, lines: &[(i64, Source, &str)], limits: Limits) {
        let mut w = SegmentWriter::new(dir, limits);
        let recs: Vec<Vec<u8>> = lines
            .iter()
            .map(|(t, s, m)| {
                let mut r = vec![];
                format::encode(*t, *s, m.as_bytes(), &mut r);
                r
            })
            .collect();
        w.write(&recs).unwrap();
        w.close();
    }

    #[test]
    fn groups_and_streams_are_listed_by_name_with_their_events() {
        let t = tempfile::tempdir().unwrap();
        let store = LogStore::open(t.path()).unwrap();
        assert_eq!(store.token_key().len(), 32);
        assert_eq!(LogStore::open(t.path()).unwrap().token_key(), store.token_key(), "kept");
        let a = create_stream(store.root(), "web", "AllTraffic", "i-b").unwrap();
        let b = create_stream(store.root(), "web", "AllTraffic", "i-a").unwrap();
        create_stream(store.root(), "api", "v1", "i-c").unwrap();
        assert!(create_stream(store.root(), "..", "v", "i").is_err());
        assert!(create_stream(store.root(), "web", "v", "../x").is_err());
        let limits = Limits::for_stream(1 << 20);
        write(
            &a,
            &[(10, Source::Model, "hello"), (12, Source::Model, "world")],
            limits,
        );
        write(&b, &[(11, Source::Model, "x")], limits);
        let groups: Vec<String> = store.groups().into_iter().map(|g| g.endpoint).collect();
        assert_eq!(groups, ["api", "web"]);
        let web = store.group("web").unwrap();
        assert_eq!(web.stored_bytes, ("10 m hello\n12 m world\n11 m x\n").len() as u64);
        assert!(store.group("nope").is_none());
        let streams = store.streams("web").unwrap();
        let names: Vec<&str> = streams.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["AllTraffic/i-a", "AllTraffic/i-b"]);
        assert_eq!(
            (streams[1].first_event_ms, streams[1].last_event_ms),
            (Some(10), Some(12))
        );
        let empty = store.streams("api").unwrap();
        assert_eq!((empty[0].first_event_ms, empty[0].last_event_ms), (None, None));
        assert!(store.streams("nope").is_none());
        assert_eq!(store.stream_dir("web", "AllTraffic/i-b"), Some(a.clone()));
        for bad in ["Other/i-b", "AllTraffic/../i-b", "i-b", "AllTraffic/i-zz"] {
            assert_eq!(store.stream_dir("web", bad), None, "{bad}");
        }
        let tail: Vec<String> = store.tail("web", "i-b", 1).into_iter().map(|e| e.message).collect();
        assert_eq!(tail, ["world"]);
        assert!(store.tail("web", "..", 1).is_empty());
    }

    #[test]
    fn cursors_resume_at_positions_across_rotation() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        let limits = Limits {
            segment_bytes: 40,
            max_event: 10,
        };
        let lines: Vec<(i64, Source, String)> = (0..30).map(|i| (i, Source::Model, format!("m{i:02}"))).collect();
        let refs: Vec<(i64, Source, &str)> = lines.iter().map(|(t, s, m)| (*t, *s, m.as_str())).collect();
        write(dir, &refs[..10], limits);
        let all: Vec<Event> = Cursor::open(dir, Position::ORIGIN).collect();
        assert_eq!(all.len(), 10);
        // Resuming at any event's position reads the rest exactly.
        for (i, e) in all.iter().enumerate() {
            let rest: Vec<i64> = Cursor::open(dir, e.position).map(|e| e.timestamp).collect();
            assert_eq!(rest, (i as i64..10).collect::<Vec<_>>());
        }
        let mut c = Cursor::open(dir, Position::ORIGIN);
        while c.next_event().is_some() {}
        let end = c.position();
        assert_eq!(end, all.last().unwrap().next);
        // More is written (by a new writer: new segments); the end position reads on from there.
        write(dir, &refs[10..30], limits);
        let more: Vec<i64> = Cursor::open(dir, end).map(|e| e.timestamp).collect();
        assert_eq!(
            more.first(),
            Some(&(30 - more.len() as i64)),
            "the oldest were rotated out"
        );
        assert_eq!(more.last(), Some(&29));
        // A position in a rotated-out segment starts at the oldest record kept.
        let oldest = Cursor::open(dir, Position::ORIGIN).next_event().unwrap();
        assert_eq!(Cursor::open(dir, all[0].position).next_event().unwrap(), oldest);
        assert!(format::segments(dir).unwrap().len() as u64 <= format::SEGMENTS);
    }

    #[test]
    fn tails_are_the_last_model_lines_across_segments_whatever_their_size() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        let limits = Limits {
            segment_bytes: 100_000,
            max_event: 40_000,
        };
        let mut lines: Vec<(i64, Source, String)> = (0..3000)
            .map(|i| (i, Source::Model, format!("line {i} {}", "z".repeat(i as usize % 50))))
            .collect();
        lines.push((3000, Source::Spillway, "a notice".into()));
        lines.push((3001, Source::Model, "y".repeat(30_000)));
        lines.push((3002, Source::Model, "the end".into()));
        let refs: Vec<(i64, Source, &str)> = lines.iter().map(|(t, s, m)| (*t, *s, m.as_str())).collect();
        write(dir, &refs, limits);
        assert!(format::segments(dir).unwrap().len() > 1);
        let all: Vec<Event> = Cursor::open(dir, Position::ORIGIN)
            .filter(|e| e.source == Source::Model)
            .collect();
        for n in [1, 2, 3, 5, 60, 2000, 5000] {
            let want = &all[all.len().saturating_sub(n)..];
            assert_eq!(tail(dir, n), want, "n = {n}");
        }
        assert!(tail(dir, 0).is_empty());
        assert!(tail(&dir.join("missing"), 3).is_empty());
    }

    #[test]
    fn a_record_being_written_is_read_once_it_is_whole() {
        let t = tempfile::tempdir().unwrap();
        let seg = t.path().join(format::segment_file(1));
        std::fs::write(&seg, b"1 m one\n2 m tw").unwrap();
        let mut c = Cursor::open(t.path(), Position::ORIGIN);
        assert_eq!(c.next_event().unwrap().message, "one");
        assert!(c.next_event().is_none());
        let at = c.position();
        assert_eq!(at, Position { seq: 1, offset: 8 });
        std::fs::write(&seg, b"1 m one\n2 m two\n").unwrap();
        assert_eq!(Cursor::open(t.path(), at).next_event().unwrap().message, "two");
        assert_eq!(last_timestamp(&seg), Some(2));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // Files' modification times are the wall clock's.
    fn sweeps_remove_ended_streams_after_retention_and_then_their_group() {
        let t = tempfile::tempdir().unwrap();
        let store = LogStore::open(t.path()).unwrap();
        let old = create_stream(store.root(), "gone", "v", "i-old").unwrap();
        create_stream(store.root(), "web", "v", "i-live").unwrap();
        let quiet = create_stream(store.root(), "web", "v", "i-quiet").unwrap();
        std::fs::write(old.join(ENDED), "done").unwrap();
        let live: HashSet<String> = ["i-live".to_string()].into();
        let endpoints: HashSet<String> = ["web".to_string()].into();
        let hour = Duration::from_secs(3600);
        let now = SystemTime::now();
        assert_eq!(
            store.sweep(&live, &endpoints, now, hour),
            Sweep::default(),
            "nothing is old"
        );
        let later = now + 2 * hour;
        assert_eq!(
            store.sweep(&live, &endpoints, later, hour),
            Sweep { streams: 2, groups: 1 }
        );
        assert!(!old.exists() && !quiet.exists());
        assert!(store.group("gone").is_none());
        assert_eq!(
            store.streams("web").unwrap().len(),
            1,
            "the live instance keeps its stream"
        );
        // The live endpoint keeps its group even once it has no stream.
        let none = HashSet::new();
        assert_eq!(store.sweep(&none, &endpoints, later, hour).streams, 1);
        assert!(store.group("web").is_some());
    }
}
