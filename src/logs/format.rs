//! The files of a log stream: segments of records, one per line.
//!
//! A record is `<milliseconds since the epoch> <source> <message>\n`, the source one byte (`m`
//! the model's output, stdout and stderr in the order it wrote them; `s` spillway's own
//! notices). A message never holds a newline (the
//! capture splits lines); any other byte is kept as the model wrote it and read back as UTF-8
//! (invalid sequences become U+FFFD). Segments are named by a sequence number
//! (`0000000001.log`), which only grows, so a position (segment, byte offset) stays valid while
//! later segments are added and is recognisably gone once its segment was rotated out.

use std::io;
use std::path::Path;

/// How many segments a stream keeps; each holds a quarter of the stream's bound.
pub const SEGMENTS: u64 = 4;

/// The longest message of one event (CloudWatch's 256 KiB event, less its 26 bytes of
/// overhead); a longer line becomes several events.
pub const MAX_EVENT_BYTES: usize = 256 * 1024 - 26;

/// The smallest per-stream bound (`[logs] max_bytes_per_instance`).
pub const MIN_STREAM_BYTES: u64 = 64 * 1024;

/// The most bytes a record adds to its message: a timestamp of up to 20 characters, the
/// source, two spaces and the newline.
pub const RECORD_OVERHEAD: usize = 24;

/// Who wrote a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The model, on its stdout or stderr (one pipe, so their lines keep the order the model
    /// wrote them in; CloudWatch's events do not tell them apart either).
    Model,
    /// spillway's own notice (dropped lines, the shim's messages).
    Spillway,
}

impl Source {
    fn code(self) -> u8 {
        match self {
            Source::Model => b'm',
            Source::Spillway => b's',
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            b'm' => Some(Source::Model),
            b's' => Some(Source::Spillway),
            _ => None,
        }
    }
}

/// The sizes that follow from a stream's bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes of one segment.
    pub segment_bytes: u64,
    /// The longest message of one event.
    pub max_event: usize,
}

impl Limits {
    /// The sizes for a stream of at most `max_bytes` (raised to [`MIN_STREAM_BYTES`]): four
    /// segments of a quarter each, events of at most half a segment.
    pub fn for_stream(max_bytes: u64) -> Self {
        let segment_bytes = max_bytes.max(MIN_STREAM_BYTES) / SEGMENTS;
        let half = usize::try_from(segment_bytes / 2).unwrap_or(usize::MAX);
        Self {
            segment_bytes,
            max_event: MAX_EVENT_BYTES.min(half - RECORD_OVERHEAD),
        }
    }
}

/// Appends one record to `out`. A newline in `message` (which the capture never hands over)
/// is written as a space, so a record stays one line.
pub fn encode(timestamp_ms: i64, source: Source, message: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(timestamp_ms).as_bytes());
    out.push(b' ');
    out.push(source.code());
    out.push(b' ');
    out.extend(message.iter().map(|b| if *b == b'\n' { b' ' } else { *b }));
    out.push(b'\n');
}

/// One record of a line (without its newline); `None` when it is not one.
pub fn decode(line: &[u8]) -> Option<(i64, Source, &[u8])> {
    let sp = line.iter().position(|b| *b == b' ')?;
    let ts: i64 = std::str::from_utf8(&line[..sp]).ok()?.parse().ok()?;
    let rest = &line[sp + 1..];
    let source = Source::from_code(*rest.first()?)?;
    if rest.get(1) != Some(&b' ') {
        return None;
    }
    Some((ts, source, &rest[2..]))
}

/// Where a record starts: its segment and its byte offset in it. Positions order records in
/// the order they were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The segment's sequence number (1 is the first; 0 is before every segment).
    pub seq: u64,
    /// The byte offset in the segment.
    pub offset: u64,
}

impl Position {
    /// Before every record of any stream.
    pub const ORIGIN: Position = Position { seq: 0, offset: 0 };
}

/// The file name of segment `seq`.
pub fn segment_file(seq: u64) -> String {
    format!("{seq:010}.log")
}

/// The sequence number of a segment's file name.
pub fn segment_seq(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|s| *s > 0)
}

/// The segments of a stream directory, oldest first (none when it cannot be read).
pub fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out: Vec<u64> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(segment_seq))
        .collect();
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut out = vec![];
        encode(1_700_000_000_123, Source::Model, b"boom: x \r\x00\xff", &mut out);
        encode(-5, Source::Model, b"", &mut out);
        encode(7, Source::Spillway, b"a\nb", &mut out);
        let lines: Vec<&[u8]> = out.split(|b| *b == b'\n').collect();
        assert_eq!(lines.len(), 4, "three records, each one line");
        assert_eq!(
            decode(lines[0]),
            Some((1_700_000_000_123, Source::Model, &b"boom: x \r\x00\xff"[..]))
        );
        assert_eq!(decode(lines[1]), Some((-5, Source::Model, &b""[..])));
        assert_eq!(decode(lines[2]), Some((7, Source::Spillway, &b"a b"[..])));
        for bad in [&b""[..], b"12", b"12 x hi", b"12 mm", b"x m hi", b"12 m", b"12 o hi"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn segments_are_named_by_an_increasing_number() {
        assert_eq!(segment_file(12), "0000000012.log");
        assert_eq!(segment_seq("0000000012.log"), Some(12));
        for bad in ["0000000000.log", ".log", "12.txt", "1a.log", "stream.json"] {
            assert_eq!(segment_seq(bad), None, "{bad}");
        }
        assert!(Position { seq: 1, offset: 900 } < Position { seq: 2, offset: 0 });
        assert!(Position::ORIGIN < Position { seq: 1, offset: 0 });
    }

    #[test]
    fn limits_keep_an_event_within_half_a_segment() {
        let small = Limits::for_stream(1);
        assert_eq!(small.segment_bytes, MIN_STREAM_BYTES / 4);
        assert!(small.max_event + RECORD_OVERHEAD <= small.segment_bytes as usize / 2);
        let big = Limits::for_stream(1 << 30);
        assert_eq!(big.max_event, MAX_EVENT_BYTES);
        assert_eq!(big.segment_bytes * SEGMENTS, 1 << 30);
    }
}
