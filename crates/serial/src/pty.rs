//! What a device simulator needs to sit behind a pseudo-terminal, so the real driver
//! opens the slave by path exactly as it opens a USB device.
//!
//! The driver is given a stable symlink (like `/dev/serial/by-id/...`) pointing at the
//! current `/dev/pts/N`. [`Pty::open`] creates a pty in raw mode, keeps the slave open so
//! the master never sees EIO while the driver is between opens, and re-points the symlink
//! atomically. Dropping the [`Pty`] is a hang-up: the driver's reads fail, as when a USB
//! device is pulled; opening a fresh one behind the same link is the device coming back.
//!
//! [`SimClock`] runs simulated time `speed` times faster than real time, so reply delays
//! and network latencies shrink for demos and tests.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::termios::{self, SetArg};
use tocsin_core::Timestamp;
use tokio::io::unix::AsyncFd;

use crate::clock::Clock;

/// Errors setting up a simulated port.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    /// `openpty`, termios or `fcntl` failed.
    #[error("pseudo-terminal: {0}")]
    Sys(#[from] nix::Error),
    /// Creating the symlink or registering with the reactor failed.
    #[error("pseudo-terminal: {0}")]
    Io(#[from] std::io::Error),
}

/// The simulator's side of a pty: non-blocking, registered with the reactor, shareable
/// with a reader task.
#[derive(Clone, Debug)]
pub struct Master(Arc<AsyncFd<OwnedFd>>);

impl Master {
    /// Reads what the driver wrote (at least one byte, or 0 / an error once the pty is
    /// gone).
    pub async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard
                .try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(std::io::Error::from))
            {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `bytes` for the driver to read.
    pub async fn write_all(&self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let mut guard = self.0.writable().await?;
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), bytes).map_err(std::io::Error::from))
            {
                Ok(Ok(n)) => bytes = bytes.get(n..).unwrap_or(&[]),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

/// One open pty: the master and the slave kept open so the master never sees EIO while
/// the driver is between opens. Dropping it hangs up.
#[derive(Debug)]
pub struct Pty {
    master: Master,
    _slave: OwnedFd,
}

impl Pty {
    /// Opens a raw-mode pty and points the symlink `link` at its slave (created, or
    /// replaced atomically).
    pub fn open(link: &Path) -> Result<Pty, PtyError> {
        let pair = nix::pty::openpty(None, None)?;
        let mut t = termios::tcgetattr(pair.slave.as_fd())?;
        termios::cfmakeraw(&mut t);
        termios::tcsetattr(pair.slave.as_fd(), SetArg::TCSANOW, &t)?;
        let flags = OFlag::from_bits_truncate(fcntl(pair.master.as_fd(), FcntlArg::F_GETFL)?);
        fcntl(
            pair.master.as_fd(),
            FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK),
        )?;
        let target = std::fs::read_link(format!("/proc/self/fd/{}", pair.slave.as_raw_fd()))?;
        // Re-point the link atomically: a new link beside it, renamed over the old one, so
        // a driver reopening meanwhile finds the old pty or the new one, never nothing.
        let tmp = link.with_extension("tocsin-sim-tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp)?;
        std::fs::rename(&tmp, link)?;
        // `new` is deprecated because a borrowed raw fd could be closed under the reactor;
        // an `OwnedFd` moved in cannot be, and the safe alternative needs `unsafe` (denied
        // here).
        #[allow(deprecated, reason = "sound for an OwnedFd moved into the AsyncFd")]
        let master = AsyncFd::new(pair.master)?;
        Ok(Pty {
            master: Master(Arc::new(master)),
            _slave: pair.slave,
        })
    }

    /// The master side, to hand to a reader task.
    pub fn master(&self) -> &Master {
        &self.master
    }

    /// Reads what the driver wrote.
    pub async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.master.read(buf).await
    }

    /// Writes all of `bytes` for the driver to read.
    pub async fn write_all(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.master.write_all(bytes).await
    }

    /// Reads from the pty, or waits forever while there is none (the device is "down").
    pub async fn read_optional(pty: &Option<Pty>, buf: &mut [u8]) -> std::io::Result<usize> {
        match pty {
            Some(p) => p.read(buf).await,
            None => std::future::pending().await,
        }
    }
}

/// A simulated device's port as its runner sees it: the pty behind the stable link while
/// the device is "plugged in", and when it comes back after a hang-up. Hang-ups and
/// pauses are real time whatever the simulator's speed.
#[derive(Debug)]
pub struct SimPort {
    link: PathBuf,
    pty: Option<Pty>,
    back_at: Option<tokio::time::Instant>,
}

impl SimPort {
    /// Wait before retrying a pty that could not be reopened.
    const RETRY: Duration = Duration::from_secs(1);

    /// Opens the first pty behind `link`.
    pub fn open(link: PathBuf) -> Result<SimPort, PtyError> {
        let pty = Pty::open(&link)?;
        Ok(SimPort {
            link,
            pty: Some(pty),
            back_at: None,
        })
    }

    /// The current pty, while the device is plugged in.
    pub fn pty(&self) -> Option<&Pty> {
        self.pty.as_ref()
    }

    /// When the device comes back, while it is away.
    pub fn back_at(&self) -> Option<tokio::time::Instant> {
        self.back_at
    }

    /// Pulls the device (the driver's reads fail) until `back_at`. The link is removed
    /// meanwhile: left pointing at the closed `/dev/pts/N`, it would let the driver's
    /// reopen find whatever pty the kernel hands out next under that number (another
    /// simulator's, in a parallel test run).
    pub fn hang_up(&mut self, back_at: tokio::time::Instant) {
        let _ = std::fs::remove_file(&self.link);
        self.pty = None;
        self.back_at = Some(back_at);
    }

    /// Reads what the driver wrote, or waits forever while the device is away.
    pub async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        Pty::read_optional(&self.pty, buf).await
    }

    /// Plugs the device back in on a fresh pty behind the same link when it is due at
    /// `real_now`; true when it did (the device has power-cycled). A pty that cannot be
    /// opened is retried a second later.
    pub fn reopen_if_due(&mut self, real_now: tokio::time::Instant) -> bool {
        if self.back_at.is_none_or(|t| t > real_now) {
            return false;
        }
        self.back_at = None;
        match Pty::open(&self.link) {
            Ok(p) => {
                self.pty = Some(p);
                true
            }
            Err(e) => {
                tracing::warn!(%e, "simulator cannot reopen its pty");
                self.back_at = Some(real_now + Self::RETRY);
                false
            }
        }
    }
}

/// Simulated time: real elapsed time × speed.
#[derive(Clone, Copy, Debug)]
pub struct SimClock {
    real: Clock,
    speed: f64,
}

impl SimClock {
    /// Starts now; a speed that is not a positive number runs at real time.
    pub fn start(speed: f64) -> SimClock {
        SimClock {
            real: Clock::start(),
            speed: Self::sanitize(speed),
        }
    }

    /// `speed` if it is a positive number, else 1.0 (real time).
    pub fn sanitize(speed: f64) -> f64 {
        if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        }
    }

    /// The real clock underneath (for what is paced in real time whatever the speed).
    pub fn real(&self) -> &Clock {
        &self.real
    }

    /// Simulated now.
    pub fn now(&self) -> Timestamp {
        let elapsed = self.real.now().since(self.real.base());
        self.real.base() + elapsed.mul_f64(self.speed)
    }

    /// The real instant at which simulated time reaches `t`.
    pub fn instant(&self, t: Timestamp) -> tokio::time::Instant {
        let sim_elapsed = t.since(self.real.base());
        self.real
            .instant(self.real.base() + sim_elapsed.div_f64(self.speed))
    }

    /// Real now, as a monotonic instant (hang-ups last real time).
    pub fn real_now(&self) -> tokio::time::Instant {
        self.real.instant_now()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::clock::sleep_until;
    use crate::io::open_serial;

    fn temp_link(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tocsin-serial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[tokio::test]
    async fn bytes_cross_the_pty_both_ways_and_the_link_moves_on_reopen() {
        let link = temp_link("both-ways");
        let pty = Pty::open(&link).unwrap();
        let first = std::fs::read_link(&link).unwrap();
        let mut port = open_serial(link.to_str().unwrap(), 115_200).unwrap();
        port.write_all(b"AT\r").await.unwrap();
        let mut buf = [0u8; 16];
        let mut got = Vec::new();
        while got.len() < 3 {
            let n = tokio::time::timeout(Duration::from_secs(5), pty.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        // Raw mode: the carriage return arrives as sent, not translated.
        assert_eq!(got, b"AT\r");
        pty.write_all(b"\r\nOK\r\n").await.unwrap();
        let mut got = Vec::new();
        while got.len() < 6 {
            let n = tokio::time::timeout(Duration::from_secs(5), port.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"\r\nOK\r\n");
        drop(port);
        // The driver is between opens: the master must not fail meanwhile.
        pty.write_all(b"RING\r\n").await.unwrap();
        let again = Pty::open(&link).unwrap();
        assert_ne!(std::fs::read_link(&link).unwrap(), first);
        assert!(!link.with_extension("tocsin-sim-tmp").exists());
        drop(again);
        let _ = std::fs::remove_file(&link);
    }

    #[tokio::test]
    async fn a_hung_up_port_comes_back_on_a_new_pty_when_due() {
        let link = temp_link("hang-up");
        let mut port = SimPort::open(link.clone()).unwrap();
        let first = std::fs::read_link(&link).unwrap();
        let mut driver = open_serial(link.to_str().unwrap(), 9600).unwrap();
        let now = Clock::start().instant_now();
        port.hang_up(now + Duration::from_secs(5));
        assert!(port.pty().is_none());
        // The driver sees the hang-up.
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), driver.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(!port.reopen_if_due(now + Duration::from_secs(4)));
        assert!(port.reopen_if_due(now + Duration::from_secs(5)));
        assert_eq!(port.back_at(), None);
        assert_ne!(std::fs::read_link(&link).unwrap(), first);
        let mut driver = open_serial(link.to_str().unwrap(), 9600).unwrap();
        driver.write_all(b"AT").await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), port.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"AT"[..n].as_ref());
        drop(port);
        let _ = std::fs::remove_file(&link);
    }

    #[tokio::test]
    async fn no_pty_reads_nothing() {
        let mut buf = [0u8; 4];
        let read = tokio::time::timeout(
            Duration::from_millis(10),
            Pty::read_optional(&None, &mut buf),
        )
        .await;
        assert!(read.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn simulated_time_runs_at_speed() {
        let clock = SimClock::start(10.0);
        let t0 = clock.now();
        let later = t0 + Duration::from_secs(60);
        // One simulated minute is six real seconds.
        assert_eq!(
            clock.instant(later) - clock.real_now(),
            Duration::from_secs(6)
        );
        sleep_until(Some(clock.instant(later))).await;
        assert_eq!(clock.now(), later);
        assert_eq!(SimClock::sanitize(f64::NAN), 1.0);
        assert_eq!(SimClock::sanitize(-2.0), 1.0);
        assert_eq!(SimClock::sanitize(0.5), 0.5);
    }
}
