//! Runs the simulator ([`SimModem`]) on the master side of a pseudo-terminal, so the real
//! driver opens the slave by path exactly as it opens a modem.
//!
//! The driver is given a stable symlink (like `/dev/serial/by-id/...`) that points at the
//! current `/dev/pts/N`. A hang-up closes the master — the driver's reads fail, as when a
//! USB modem is pulled — then, after a pause, a fresh pty is created and the symlink is
//! re-pointed at it, so the driver's reopen finds the "same" modem again. The simulator
//! keeps its stored messages and the network's pending reports across the hang-up.
//!
//! Simulated time runs `speed` times faster than real time, so reply delays and network
//! latencies shrink for demos and tests.
//!
//! [`spawn_voice_sim`] adds a second pty behind its own symlink: the modem's PCM audio
//! port. What the driver writes there is handed to the simulator stamped with *real*
//! time, whatever the speed, because underruns are a matter of real-time pacing; run
//! voice at speed 1 so call timings and audio agree.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::termios::{self, SetArg};
use tocsin_core::Timestamp;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::io::Clock;
use crate::sim::{Faults, SimCall, SimConfig, SimModem, SubmitRecord};

/// What the simulator runner can be told to do.
#[derive(Clone, Debug)]
pub enum SimCommand {
    /// An SMS from `from` arrives at the modem.
    DeliverSms {
        /// Sender, `+digits`.
        from: String,
        /// Text.
        text: String,
    },
    /// Close the port, stay away for `down_for` (real time), then come back on a new pty
    /// behind the same symlink.
    HangUp {
        /// How long the modem is gone.
        down_for: Duration,
    },
    /// Replace the injected faults.
    SetFaults(Faults),
}

/// A running simulator.
#[derive(Clone, Debug)]
pub struct SimHandle {
    /// The stable path to open (a symlink to the current `/dev/pts/N`).
    pub path: PathBuf,
    /// Commands to the runner.
    pub commands: mpsc::Sender<SimCommand>,
    /// Every message the simulated network was asked to deliver.
    pub submits: Arc<Mutex<Vec<SubmitRecord>>>,
    /// The stable path of the audio port, when the simulator has one.
    pub audio_path: Option<PathBuf>,
    /// Every call the simulated network carried, once over.
    pub calls: Arc<Mutex<Vec<SimCall>>>,
}

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

/// One open pty: the master (async) and the slave kept open so the master never sees EIO
/// while the driver is between opens.
struct Pty {
    master: AsyncFd<OwnedFd>,
    _slave: OwnedFd,
}

fn open_pty(link: &Path) -> Result<Pty, PtyError> {
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
    // Re-point the link atomically: a new link beside it, renamed over the old one.
    let tmp = link.with_extension("tocsin-sim-tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp)?;
    std::fs::rename(&tmp, link)?;
    // `new` is deprecated because a borrowed raw fd could be closed under the reactor; an
    // `OwnedFd` moved in cannot be, and the safe alternative needs `unsafe` (denied here).
    #[allow(deprecated, reason = "sound for an OwnedFd moved into the AsyncFd")]
    let master = AsyncFd::new(pair.master)?;
    Ok(Pty {
        master,
        _slave: pair.slave,
    })
}

/// Starts a simulator behind the symlink `link` (created or replaced). Simulated time
/// runs `speed` times real time (1.0 = real time).
pub fn spawn_sim(
    link: PathBuf,
    cfg: SimConfig,
    seed: u64,
    speed: f64,
    cancel: CancellationToken,
) -> Result<SimHandle, PtyError> {
    spawn(link, None, cfg, seed, speed, cancel)
}

/// Like [`spawn_sim`], with the modem's audio port behind `audio_link` (voice calls).
pub fn spawn_voice_sim(
    link: PathBuf,
    audio_link: PathBuf,
    cfg: SimConfig,
    seed: u64,
    speed: f64,
    cancel: CancellationToken,
) -> Result<SimHandle, PtyError> {
    spawn(link, Some(audio_link), cfg, seed, speed, cancel)
}

fn spawn(
    link: PathBuf,
    audio_link: Option<PathBuf>,
    cfg: SimConfig,
    seed: u64,
    speed: f64,
    cancel: CancellationToken,
) -> Result<SimHandle, PtyError> {
    let pty = open_pty(&link)?;
    let audio = match &audio_link {
        Some(l) => Some(open_pty(l)?),
        None => None,
    };
    let calls = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel(256);
    let submits = Arc::new(Mutex::new(Vec::new()));
    let speed = if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        1.0
    };
    tokio::spawn(run_sim(
        link.clone(),
        pty,
        audio,
        cfg,
        seed,
        speed,
        rx,
        (submits.clone(), calls.clone()),
        cancel,
    ));
    Ok(SimHandle {
        path: link,
        commands: tx,
        submits,
        audio_path: audio_link,
        calls,
    })
}

/// Simulated time: real elapsed time × speed.
struct SimClock {
    real: Clock,
    speed: f64,
}

impl SimClock {
    fn now(&self) -> Timestamp {
        let real = self.real.now();
        let elapsed = real.since(self.real.base());
        self.real.base() + elapsed.mul_f64(self.speed)
    }

    fn instant(&self, t: Timestamp) -> tokio::time::Instant {
        let sim_elapsed = t.since(self.real.base());
        self.real
            .instant(self.real.base() + sim_elapsed.div_f64(self.speed))
    }
}

async fn read_master(pty: &Option<Pty>, buf: &mut [u8]) -> std::io::Result<usize> {
    let Some(pty) = pty else {
        return std::future::pending().await;
    };
    loop {
        let mut guard = pty.master.readable().await?;
        match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(std::io::Error::from))
        {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn write_master(pty: &Pty, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let mut guard = pty.master.writable().await?;
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

/// The logs the runner shares with its handle: submits and finished calls.
type Logs = (Arc<Mutex<Vec<SubmitRecord>>>, Arc<Mutex<Vec<SimCall>>>);

#[allow(
    clippy::too_many_arguments,
    reason = "the runner's whole state, passed once at spawn"
)]
async fn run_sim(
    link: PathBuf,
    pty: Pty,
    mut audio: Option<Pty>,
    cfg: SimConfig,
    seed: u64,
    speed: f64,
    mut rx: mpsc::Receiver<SimCommand>,
    (submits, calls): Logs,
    cancel: CancellationToken,
) {
    let mut audio_buf = vec![0u8; 4096];
    let clock = SimClock {
        real: Clock::start(),
        speed,
    };
    let mut sim = SimModem::new(cfg, seed, clock.now());
    let mut pty = Some(pty);
    let mut back_at: Option<tokio::time::Instant> = None;
    let mut buf = vec![0u8; 4096];
    loop {
        if let Some(p) = &pty {
            while let Some(bytes) = sim.poll_transmit() {
                if let Err(e) = write_master(p, &bytes).await {
                    tracing::warn!(%e, "simulator write failed");
                }
            }
        }
        if sim.take_hangup() {
            pty = None;
            back_at = Some(clock.real.instant(clock.real.now()) + Duration::from_secs(1));
        }
        if let Ok(mut log) = submits.lock() {
            let have = log.len();
            log.extend(sim.submits().iter().skip(have).cloned());
        }
        if let Ok(mut log) = calls.lock() {
            let have = log.len();
            log.extend(sim.calls().iter().skip(have).cloned());
        }
        let wake = sim.poll_timeout().map(|t| clock.instant(t));
        let wake = [wake, back_at].into_iter().flatten().min();
        tokio::select! {
            () = cancel.cancelled() => return,
            cmd = rx.recv() => match cmd {
                None => return,
                Some(SimCommand::DeliverSms { from, text }) => sim.deliver_sms(clock.now(), &from, &text),
                Some(SimCommand::SetFaults(f)) => sim.set_faults(f),
                Some(SimCommand::HangUp { down_for }) => {
                    pty = None;
                    back_at = Some(clock.real.instant(clock.real.now()) + down_for);
                }
            },
            read = read_master(&audio, &mut audio_buf) => match read {
                Ok(n) if n > 0 => sim.handle_audio(clock.real.now(), audio_buf.get(..n).unwrap_or(&[])),
                other => {
                    tracing::warn!(?other, "simulator audio pty read failed");
                    audio = None;
                }
            },
            read = read_master(&pty, &mut buf) => match read {
                Ok(n) if n > 0 => sim.handle_rx(clock.now(), buf.get(..n).unwrap_or(&[])),
                other => {
                    // Only happens if the slave side vanished; come back on a new pty.
                    tracing::warn!(?other, "simulator pty read failed");
                    pty = None;
                    back_at = Some(clock.real.instant(clock.real.now()) + Duration::from_millis(100));
                }
            },
            () = sleep_until(wake) => {
                let now = clock.now();
                if back_at.is_some_and(|t| t <= clock.real.instant(clock.real.now())) {
                    back_at = None;
                    match open_pty(&link) {
                        Ok(p) => {
                            pty = Some(p);
                            sim.handle_power_cycle(now);
                        }
                        Err(e) => {
                            tracing::warn!(%e, "simulator cannot reopen its pty");
                            back_at = Some(clock.real.instant(clock.real.now()) + Duration::from_secs(1));
                        }
                    }
                }
                sim.handle_timeout(now);
            }
        }
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "the simulator runner sleeps until the simulator's poll_timeout()"
)]
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
