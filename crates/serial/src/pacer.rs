//! Real-time pacing of RTP for the drivers that stream media (loudspeakers, phone calls):
//! a deadline sleep precise to tens of microseconds, and the rule that spreads many
//! streams over the 20 ms frame ([`slot_start`]).
//!
//! tokio's timer has 1 ms ticks: it rounds every deadline up to the next tick and parks
//! for whole milliseconds, so a task sleeping until a frame's slot wakes 0–2 ms after it,
//! varying from wake to wake — measured on the benchmark box, p50 1.2 ms and p99 2.3 ms
//! late. That variation is the pacing jitter a listener hears. On Linux a `timerfd`
//! watched by the runtime's own poller fires within microseconds of its deadline (a
//! kernel high-resolution timer, no extra thread, no spinning). Elsewhere, or when the
//! timer cannot be created, [`PreciseSleep`] falls back to [`sleep_until`].

use std::time::Duration;

use tocsin_core::Timestamp;

use crate::clock::sleep_until;

/// 1 ms slots in a 20 ms RTP frame: a stream paced from a start time sends in the slot
/// of that start, every frame.
pub const SLOTS: usize = 20;

/// The slot of the 20 ms frame that a schedule starting at `t` sends in.
pub fn slot_of(t: Timestamp) -> usize {
    t.as_millis().rem_euclid(SLOTS as i64) as usize
}

/// When a stream wanting to start at `now` should start, so that many streams from one
/// task spread over the frame instead of all sending in one burst: the nearest slot
/// (`now` itself first) used by fewer than `share` streams, else the nearest least-used
/// one. `used` counts the playing streams per slot ([`slot_of`] their starts). Never more
/// than 19 ms after `now`.
pub fn slot_start(now: Timestamp, used: &[usize; SLOTS], share: usize) -> Timestamp {
    let at = |d: usize| now.plus(Duration::from_millis(d as u64));
    let load = |d: usize| used.get(slot_of(at(d))).copied().unwrap_or(0);
    let delay = (0..SLOTS)
        .find(|&d| load(d) < share)
        .or_else(|| (0..SLOTS).min_by_key(|&d| (load(d), d)))
        .unwrap_or(0);
    at(delay)
}

/// Sleeps until deadlines with sub-millisecond precision (see the module documentation).
/// One per task: it owns a kernel timer.
#[derive(Debug)]
pub struct PreciseSleep {
    #[cfg(target_os = "linux")]
    timer: Option<tokio::io::unix::AsyncFd<linux::Timer>>,
}

impl PreciseSleep {
    /// A sleep for the current tokio runtime. Falls back to tokio's timer, logged once,
    /// when the kernel timer cannot be created.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or in one built without IO (like creating a socket).
    pub fn new() -> Self {
        #[cfg(target_os = "linux")]
        {
            let timer = linux::Timer::new().and_then(linux::register);
            match timer {
                Ok(t) => PreciseSleep { timer: Some(t) },
                Err(e) => {
                    tracing::warn!(%e, "no precise timer; pacing on tokio's 1 ms timer");
                    PreciseSleep { timer: None }
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        PreciseSleep {}
    }

    /// Whether deadlines are kept by the kernel timer (false: tokio's 1 ms timer).
    pub fn is_precise(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            self.timer.is_some()
        }
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// Sleeps until `at`, or forever when there is nothing to wait for (like
    /// [`sleep_until`], and as cancel-safe: dropping the future leaves the timer armed,
    /// which the next call re-arms).
    pub async fn until(&mut self, at: Option<tokio::time::Instant>) {
        let Some(at) = at else {
            return std::future::pending().await;
        };
        #[cfg(target_os = "linux")]
        // When the kernel refuses (it should not), the coarse timer still keeps the slot.
        if let Some(timer) = &self.timer
            && linux::wait(timer, at).await.is_ok()
        {
            return;
        }
        sleep_until(Some(at)).await;
    }
}

impl Default for PreciseSleep {
    fn default() -> Self {
        PreciseSleep::new()
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::os::fd::{AsFd, AsRawFd, RawFd};

    use nix::sys::time::TimeSpec;
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
    use tokio::io::unix::AsyncFd;

    /// A non-blocking CLOCK_MONOTONIC timerfd (the clock tokio's and std's instants use).
    #[derive(Debug)]
    pub(super) struct Timer(TimerFd);

    impl Timer {
        pub(super) fn new() -> std::io::Result<Timer> {
            TimerFd::new(
                ClockId::CLOCK_MONOTONIC,
                TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
            )
            .map(Timer)
            .map_err(std::io::Error::from)
        }
    }

    impl AsRawFd for Timer {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_fd().as_raw_fd()
        }
    }

    /// Registers the timer with the runtime's poller.
    #[allow(
        deprecated,
        reason = "tokio deprecated the safe constructor because a registered fd could be \
                  closed behind its back (tokio#8587); this one is owned by the registered \
                  value and closed only when it drops, after it is deregistered"
    )]
    pub(super) fn register(t: Timer) -> std::io::Result<AsyncFd<Timer>> {
        AsyncFd::new(t)
    }

    #[allow(
        clippy::disallowed_methods,
        reason = "the precise sleep measures what is left until its deadline"
    )]
    fn left(at: tokio::time::Instant) -> std::time::Duration {
        at.saturating_duration_since(tokio::time::Instant::now())
    }

    /// Arms the timer for what is left until `at` and waits for it to fire.
    pub(super) async fn wait(
        timer: &AsyncFd<Timer>,
        at: tokio::time::Instant,
    ) -> std::io::Result<()> {
        loop {
            let d = left(at);
            if d.is_zero() {
                return Ok(());
            }
            // Re-arming also clears an expiry left over from a dropped wait.
            timer
                .get_ref()
                .0
                .set(
                    Expiration::OneShot(TimeSpec::from_duration(d)),
                    TimerSetTimeFlags::empty(),
                )
                .map_err(std::io::Error::from)?;
            loop {
                let mut ready = timer.readable().await?;
                // Readiness may be stale (an expiry before the re-arm): only a successful
                // read of the expiry count means this deadline has come.
                match ready.try_io(|t| {
                    nix::unistd::read(t.get_ref().0.as_fd(), &mut [0u8; 8])
                        .map_err(std::io::Error::from)
                }) {
                    Ok(Ok(_)) => break,
                    Ok(Err(e)) => return Err(e),
                    Err(_would_block) => continue,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[allow(
        clippy::disallowed_methods,
        reason = "the test checks the sleep against real time"
    )]
    fn now() -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    #[test]
    fn the_slot_rule_fills_the_nearest_free_slot_then_the_least_used() {
        const SHARE: usize = 8;
        let at = |ms: i64| Timestamp(1_000_000 + ms); // slot 0 at ms 0
        let mut used = [0; SLOTS];
        assert_eq!(
            slot_start(at(3), &used, SHARE),
            at(3),
            "a free slot: at once"
        );
        used[3] = SHARE - 1;
        assert_eq!(slot_start(at(3), &used, SHARE), at(3));
        used[3] = SHARE;
        used[4] = SHARE + 2;
        assert_eq!(
            slot_start(at(3), &used, SHARE),
            at(5),
            "the nearest slot with room"
        );
        // From slot 19 the next slots are 0, 1, … of the next frame.
        used[19] = SHARE;
        assert_eq!(slot_start(at(19), &used, SHARE), at(20));
        // Every slot busy: the least used, the nearest of those.
        let mut full = [SHARE + 1; SLOTS];
        full[7] = SHARE;
        full[2] = SHARE;
        assert_eq!(slot_start(at(5), &full, SHARE), at(7));
        assert_eq!(
            slot_start(at(8), &full, SHARE),
            at(22),
            "never more than 19 ms later"
        );
        assert_eq!(slot_of(Timestamp(-1)), 19);
    }

    #[tokio::test]
    async fn wakes_at_the_deadline_not_before_and_survives_a_dropped_wait() {
        let mut s = PreciseSleep::new();
        assert_eq!(s.is_precise(), cfg!(target_os = "linux"));
        // A wait dropped before its deadline leaves the timer armed; the next wait must
        // not return on that stale expiry.
        let t0 = now();
        let _ = tokio::time::timeout(
            Duration::from_millis(1),
            s.until(Some(t0 + Duration::from_millis(2))),
        )
        .await;
        tokio::time::sleep_until(t0 + Duration::from_millis(3)).await;
        for ms in [3u64, 1, 5] {
            let at = now() + Duration::from_millis(ms);
            s.until(Some(at)).await;
            let woke = now();
            assert!(woke >= at, "woke {:?} early", at - woke);
        }
        // A deadline already passed returns at once.
        let past = now();
        s.until(Some(past)).await;
    }
}
