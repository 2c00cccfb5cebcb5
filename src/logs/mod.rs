//! Model logs: what every instance writes to its stdout and stderr, captured by its shim,
//! kept in bounded, rotated files, and read back as CloudWatch Logs (`api/logs.rs`).
//!
//! ```text
//! <data_dir>/logs/
//!   token-key                      the key that seals the API's pagination tokens (0600)
//!   <endpoint>/                    one log group: /aws/sagemaker/Endpoints/<endpoint>
//!     group.json                   {"endpoint": ...}; its mtime is the group's creation time
//!     <instance id>/               one log stream: <variant>/<instance id>
//!       stream.json                {"endpoint", "variant", "instanceId"}; mtime: creation time
//!       0000000001.log ...         segments: one event per line, "<ms> <m|s> <message>\n"
//!       ended                      written by the shim when the instance is gone (its status)
//! ```
//!
//! - **Capture** ([`capture`]): the instance's shim reads the model's stdout and stderr through
//!   one pipe (so their lines keep the model's order), stamps every line with the time it was
//!   read (milliseconds) and
//!   queues it in memory; a writer thread appends the queue to the current segment. A line is
//!   never waited for: when the queue is full (the disk is slow or full) lines are dropped and
//!   counted, and a notice says how many. The model never blocks on its output.
//! - **Bounds** ([`format`]): a stream holds at most `[logs] max_bytes_per_instance` bytes, in
//!   [`format::SEGMENTS`] segments of a quarter each; when the current segment is full a new one
//!   starts and the oldest is deleted. One event is at most [`format::MAX_EVENT_BYTES`] (longer
//!   lines are split), and never more than half a segment.
//! - **Durability**: segments are append-only and each record is one line; a record cut off by a
//!   crash is ignored by readers, and a shim never appends to a segment it did not start.
//! - **Retention** ([`store::LogStore::sweep`]): a stream whose instance spillway no longer
//!   tracks is deleted `[logs] retention_seconds` after it ended (the `ended` marker, else its
//!   last write); a group without streams goes with its last one.

pub mod capture;
pub mod format;
pub mod store;

use std::path::{Path, PathBuf};

/// Where the logs of a data directory live.
pub fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("logs")
}

/// What a provider needs to have its instances' output captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `<data_dir>/logs`.
    pub root: PathBuf,
    /// The most bytes one stream keeps (`[logs] max_bytes_per_instance`).
    pub max_bytes_per_instance: u64,
}

impl Settings {
    /// Creates the stream directory of an instance (and its group's, if new) and returns it: the
    /// `--log-dir` of the instance's shim.
    pub fn create_stream(&self, endpoint: &str, variant: &str, instance_id: &str) -> std::io::Result<PathBuf> {
        store::create_stream(&self.root, endpoint, variant, instance_id)
    }
}
