//! The server's one clock.
//!
//! Every decision that depends on time (the controller's deadlines and waits, ICE back-off,
//! rebalancing, the autoscaler's cooldowns, event and resource timestamps) reads it from the
//! [`Clock`] that [`crate::control::app::App`] holds. The clock is anchored to the wall clock when it is
//! made and then moves with tokio's clock, so under `tokio::time::pause()` it is a paused clock
//! that `tokio::time::advance` (and the runtime's auto-advance) moves, and in production it is
//! the wall clock. A clippy lint (`clippy.toml`, `disallowed-methods`) forbids reading the time
//! anywhere else, except where the data plane measures elapsed durations.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::core::model::Timestamp;

/// Epoch seconds that move with tokio's clock. Cheap to clone; every clone reads the same time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Epoch seconds at `start`.
    epoch_at_start: f64,
    /// tokio's clock when the clock was made.
    start: tokio::time::Instant,
}

impl Clock {
    /// A clock anchored to the wall clock now. Call it inside a tokio runtime whose time is the
    /// one the clock should follow (a paused runtime in tests).
    #[allow(clippy::disallowed_methods)] // The one place that reads the wall clock and tokio's clock.
    pub fn new() -> Self {
        let epoch_at_start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Self {
            epoch_at_start,
            start: tokio::time::Instant::now(),
        }
    }

    /// Now, in epoch seconds.
    pub fn now(&self) -> Timestamp {
        self.epoch_at_start + self.elapsed().as_secs_f64()
    }

    /// How long ago the clock was made.
    pub fn elapsed(&self) -> Duration {
        self.instant().saturating_duration_since(self.start)
    }

    /// Now, as tokio's instant (for `tokio::time::sleep_until` and deadlines).
    #[allow(clippy::disallowed_methods)] // The clock itself.
    pub fn instant(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_paused_clock_moves_only_with_tokio_time() {
        let clock = Clock::new();
        let t0 = clock.now();
        assert!(t0 > 1.5e9, "anchored to the wall clock: {t0}");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(clock.now(), t0, "a paused clock does not follow real time");
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!((clock.now() - t0 - 300.0).abs() < 1e-6);
        let copy = clock;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!((copy.now() - t0 - 3900.0).abs() < 1e-6);
        assert_eq!(clock.elapsed(), Duration::from_secs(3900));
    }
}
