//! The gateway's clock: real time, optionally sped up for the demo and tests. This is
//! where wall-clock time enters Tocsin; every state machine gets `now` from here.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tocsin_core::Timestamp;

/// Maps real time to the gateway's time: `origin + elapsed × speed`.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    started: Instant,
    origin: Timestamp,
    speed: f64,
}

impl Clock {
    /// A clock at wall-clock time (or at `not_before`, if that is later: after a restart
    /// the clock never runs backwards behind the log), running `speed` times faster.
    pub fn new(speed: f64, not_before: Option<Timestamp>) -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let origin = Timestamp(wall.max(not_before.map(|t| t.0 + 1).unwrap_or(i64::MIN)));
        Clock {
            started: Instant::now(),
            origin,
            speed,
        }
    }

    /// The gateway's current time.
    pub fn now(&self) -> Timestamp {
        let elapsed = self.started.elapsed().as_secs_f64() * self.speed * 1000.0;
        Timestamp(self.origin.0 + elapsed as i64)
    }

    /// The real instant at which the gateway's clock reads `t`.
    pub fn instant_at(&self, t: Timestamp) -> Instant {
        let ahead_ms = (t.0 - self.origin.0).max(0) as f64 / self.speed;
        self.started + Duration::from_secs_f64(ahead_ms / 1000.0)
    }

    /// How much faster than real time this clock runs.
    pub fn speed(&self) -> f64 {
        self.speed
    }
}
