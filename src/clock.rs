//! The server's one clock.
//!
//! Every decision that depends on time (the controller's deadlines and waits, ICE back-off,
//! rebalancing, the autoscaler's cooldowns, event, resource and metric timestamps) reads it from
//! the [`Clock`] that [`crate::control::app::App`] holds (and the data plane's copy). The server
//! runs on [`Clock::wall`]; tests and simulations use [`Clock::tokio`], anchored to the wall
//! clock when it is made and then moving only with tokio's clock, so a paused tokio runtime
//! pauses the whole control plane and `tokio::time::advance` moves it. The controller's waits
//! are tokio timers either way.
//!
//! A clippy lint (`clippy.toml`, `disallowed-methods`) forbids reading the time anywhere else.
//! The exceptions carry `#[allow(clippy::disallowed_methods)]` and a one-line reason: elapsed
//! durations measured in the data plane (latency, client and model timeouts), the usage
//! sampler's CPU-time intervals, deadlines of blocking helper processes (`nvidia-smi`, Slurm's
//! CLI) and the built-in model server, none of which decides about fleets.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::core::model::Timestamp;

/// Where a [`Clock`] reads the time.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// The wall clock (production): timestamps stay true across NTP steps and suspends.
    Wall,
    /// Epoch seconds at `start`, moved by tokio's clock since: paused and advanced with it.
    Tokio {
        /// Epoch seconds at `start`.
        epoch_at_start: f64,
        /// tokio's clock when the clock was made.
        start: tokio::time::Instant,
    },
}

/// The server's time. Cheap to copy; every copy reads the same time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    source: Source,
}

impl Clock {
    /// The wall clock: what the server runs on.
    pub fn wall() -> Self {
        Self { source: Source::Wall }
    }

    /// A clock anchored to the wall clock now that then moves only with tokio's clock: under
    /// `tokio::time::pause()` it stands still until `tokio::time::advance` (or the runtime's
    /// auto-advance) moves it, together with every tokio timer. Call it inside the runtime
    /// whose time it should follow. For tests and simulations.
    #[allow(clippy::disallowed_methods)] // The clock itself.
    pub fn tokio() -> Self {
        Self {
            source: Source::Tokio {
                epoch_at_start: wall_now(),
                start: tokio::time::Instant::now(),
            },
        }
    }

    /// Now, in epoch seconds.
    pub fn now(&self) -> Timestamp {
        match self.source {
            Source::Wall => wall_now(),
            Source::Tokio { epoch_at_start, start } => {
                epoch_at_start + self.instant().saturating_duration_since(start).as_secs_f64()
            }
        }
    }

    /// Now, as a `SystemTime` (signature dates, policy times).
    pub fn system_time(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs_f64(self.now().max(0.0))
    }

    /// Now, as tokio's instant (for measuring durations, `tokio::time::sleep_until` and
    /// deadlines): monotonic, and paused with tokio's clock.
    #[allow(clippy::disallowed_methods)] // The clock itself.
    pub fn instant(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    /// Seconds since `earlier` (an [`instant`](Clock::instant)).
    pub fn since(&self, earlier: tokio::time::Instant) -> Duration {
        self.instant().saturating_duration_since(earlier)
    }
}

/// The wall clock in epoch seconds.
#[allow(clippy::disallowed_methods)] // The clock itself.
fn wall_now() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_paused_clock_moves_only_with_tokio_time() {
        let clock = Clock::tokio();
        let t0 = clock.now();
        assert!(t0 > 1.5e9, "anchored to the wall clock: {t0}");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(clock.now(), t0, "a paused clock does not follow real time");
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!((clock.now() - t0 - 300.0).abs() < 1e-6);
        let copy = clock;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!((copy.now() - t0 - 3900.0).abs() < 1e-6);
        assert!((clock.now() - t0 - 3900.0).abs() < 1e-6);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wall_clock_follows_real_time_not_tokio() {
        let clock = Clock::wall();
        let t0 = clock.now();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(clock.now() - t0 < 60.0, "the wall clock ignores tokio's clock");
        std::thread::sleep(Duration::from_millis(20));
        assert!(clock.now() - t0 >= 0.015, "and follows real time");
    }
}
