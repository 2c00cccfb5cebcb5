//! The listener's state, watched by every connection (both servers) to stop gracefully.

use tokio::sync::watch;

/// The listener's state, watched by every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    /// Serving.
    Running,
    /// Finish in-flight requests, then close.
    Graceful,
    /// Close every connection now.
    Now,
}

/// Waits until the listener's state is `level` or later (a closed channel counts as reached).
pub async fn reached(stop: &mut watch::Receiver<Stop>, level: Stop) {
    let _ = stop.wait_for(|s| *s >= level).await.is_ok();
}
