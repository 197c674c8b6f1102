//! Real time, as the drivers see it. This is the one place a driver (or a simulator
//! runner) reads the wall clock and sleeps on it; every state machine only sees the
//! [`Timestamp`]s handed to it.

use tocsin_core::Timestamp;

/// Maps the monotonic clock onto [`Timestamp`]s: wall-clock time read once at start, then
/// advanced monotonically so a clock step cannot reorder deadlines.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: tokio::time::Instant,
    base: Timestamp,
}

impl Clock {
    /// Reads the wall clock once.
    #[allow(
        clippy::disallowed_methods,
        reason = "the drivers' one entry point for real time"
    )]
    pub fn start() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            start: tokio::time::Instant::now(),
            base: Timestamp::from_millis(
                i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX),
            ),
        }
    }

    /// The timestamp of the clock's start.
    pub fn base(&self) -> Timestamp {
        self.base
    }

    /// Now, as a timestamp.
    pub fn now(&self) -> Timestamp {
        self.base + self.start.elapsed()
    }

    /// The monotonic instant of a timestamp (never before the clock's start).
    pub fn instant(&self, t: Timestamp) -> tokio::time::Instant {
        self.start + t.since(self.base)
    }

    /// Now, as a monotonic instant (for waits measured in real time whatever a
    /// simulator's speed).
    pub fn instant_now(&self) -> tokio::time::Instant {
        self.instant(self.now())
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for (a `select!` arm that
/// never fires).
#[allow(
    clippy::disallowed_methods,
    reason = "the drivers' one place that sleeps until a state machine's poll_timeout()"
)]
pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn timestamps_follow_the_monotonic_clock() {
        let clock = Clock::start();
        let t0 = clock.now();
        assert_eq!(t0, clock.base());
        let deadline = t0 + Duration::from_millis(1500);
        sleep_until(Some(clock.instant(deadline))).await;
        assert_eq!(clock.now(), deadline);
        assert_eq!(clock.instant(deadline), clock.instant_now());
        // A timestamp before the start maps to the start, never earlier.
        assert_eq!(
            clock.instant(Timestamp::from_millis(0)),
            clock.instant(clock.base())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_to_wait_for_waits_forever() {
        let waited = tokio::time::timeout(Duration::from_secs(3600), sleep_until(None)).await;
        assert!(waited.is_err());
    }
}
