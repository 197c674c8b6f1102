//! Runs the simulated terminals and satellite network ([`SimNetwork`]) on the master sides
//! of pseudo-terminals, so the real driver opens each slave by path exactly as it opens a
//! terminal's serial port.
//!
//! Each terminal gets a stable symlink (like `/dev/serial/by-id/...`) pointing at its
//! current `/dev/pts/N`; the slave is kept open so the master never sees EIO while the
//! driver is between opens. A hang-up closes a terminal's master — the driver's reads fail,
//! as when a USB terminal is pulled — and after a pause a fresh pty is created and the
//! symlink re-pointed, so the driver's reopen finds the "same" terminal again.
//!
//! Simulated time runs `speed` times faster than real time, so service periods and
//! network latencies shrink for demos and tests.

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
use crate::sim::{SimConfig, SimNetwork, SubmitRecord, TerminalConfig};

/// What the simulator runner can be told to do.
#[derive(Clone, Debug)]
pub enum SimCommand {
    /// A person's card sends a message to a card (a terminal's, or anyone's).
    SendFromCard {
        /// The sending card.
        from: String,
        /// The destination card.
        to: String,
        /// The text.
        text: String,
    },
    /// Satellites come and go for one terminal.
    SetSignal {
        /// Which terminal (index in the order given to [`spawn_sim`]).
        terminal: usize,
        /// Whether it sees satellites.
        signal: bool,
    },
    /// Close one terminal's port, stay away for `down_for` (real time), then come back on a
    /// new pty behind the same symlink.
    HangUp {
        /// Which terminal.
        terminal: usize,
        /// How long it is gone.
        down_for: Duration,
    },
}

/// A running simulator.
#[derive(Clone, Debug)]
pub struct SimHandle {
    /// The stable path of each terminal, in order.
    pub paths: Vec<PathBuf>,
    /// Commands to the runner.
    pub commands: mpsc::Sender<SimCommand>,
    /// Every message the terminals transmitted.
    pub submits: Arc<Mutex<Vec<SubmitRecord>>>,
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

/// One open pty: the master (async, shared with its reader task) and the slave kept open.
struct Pty {
    master: Arc<AsyncFd<OwnedFd>>,
    _slave: OwnedFd,
    reader: CancellationToken,
}

impl Drop for Pty {
    fn drop(&mut self) {
        self.reader.cancel();
    }
}

fn open_pty(
    link: &Path,
    idx: usize,
    rx: mpsc::Sender<(usize, Vec<u8>)>,
    cancel: &CancellationToken,
) -> Result<Pty, PtyError> {
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
    let master = Arc::new(AsyncFd::new(pair.master)?);
    let reader = cancel.child_token();
    tokio::spawn(read_loop(master.clone(), idx, rx, reader.clone()));
    Ok(Pty {
        master,
        _slave: pair.slave,
        reader,
    })
}

/// Forwards what the driver writes to one terminal until cancelled or the pty fails.
async fn read_loop(
    master: Arc<AsyncFd<OwnedFd>>,
    idx: usize,
    tx: mpsc::Sender<(usize, Vec<u8>)>,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let read = tokio::select! {
            () = cancel.cancelled() => return,
            r = read_master(&master, &mut buf) => r,
        };
        match read {
            Ok(n) if n > 0 => {
                if tx
                    .send((idx, buf.get(..n).unwrap_or(&[]).to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            other => {
                tracing::warn!(?other, idx, "simulated terminal pty read failed");
                return;
            }
        }
    }
}

async fn read_master(master: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = master.readable().await?;
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

/// Starts simulated terminals behind the symlinks `links` (created or replaced), one per
/// entry of `terminals`, on one simulated satellite network. Simulated time runs `speed`
/// times real time (1.0 = real time).
pub fn spawn_sim(
    links: Vec<PathBuf>,
    terminals: Vec<TerminalConfig>,
    cfg: SimConfig,
    seed: u64,
    speed: f64,
    cancel: CancellationToken,
) -> Result<SimHandle, PtyError> {
    let (rx_tx, rx_rx) = mpsc::channel(256);
    let mut ptys = Vec::new();
    for (i, link) in links.iter().enumerate() {
        ptys.push(Some(open_pty(link, i, rx_tx.clone(), &cancel)?));
    }
    let (tx, rx) = mpsc::channel(256);
    let submits = Arc::new(Mutex::new(Vec::new()));
    let speed = if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        1.0
    };
    let runner = Runner {
        links: links.clone(),
        ptys,
        rx_tx,
        back_at: vec![None; links.len()],
        clock: SimClock {
            real: Clock::start(),
            speed,
        },
        submits: submits.clone(),
        cancel,
    };
    tokio::spawn(runner.run(terminals, cfg, seed, rx, rx_rx));
    Ok(SimHandle {
        paths: links,
        commands: tx,
        submits,
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

/// The runner's state.
struct Runner {
    links: Vec<PathBuf>,
    ptys: Vec<Option<Pty>>,
    rx_tx: mpsc::Sender<(usize, Vec<u8>)>,
    back_at: Vec<Option<tokio::time::Instant>>,
    clock: SimClock,
    submits: Arc<Mutex<Vec<SubmitRecord>>>,
    cancel: CancellationToken,
}

impl Runner {
    async fn run(
        mut self,
        terminals: Vec<TerminalConfig>,
        cfg: SimConfig,
        seed: u64,
        mut commands: mpsc::Receiver<SimCommand>,
        mut from_driver: mpsc::Receiver<(usize, Vec<u8>)>,
    ) {
        let mut net = SimNetwork::new(cfg, seed);
        for t in terminals.into_iter().take(self.links.len()) {
            net.add_terminal(self.clock.now(), t);
        }
        loop {
            for (i, pty) in self.ptys.iter().enumerate() {
                while let Some(bytes) = net.poll_transmit(i) {
                    let Some(p) = pty else { continue };
                    if let Err(e) = write_master(p, &bytes).await {
                        tracing::warn!(%e, "simulator write failed");
                    }
                }
            }
            if let Ok(mut log) = self.submits.lock() {
                let have = log.len();
                log.extend(net.submits().iter().skip(have).cloned());
            }
            let wake = net.poll_timeout().map(|t| self.clock.instant(t));
            let wake = wake
                .into_iter()
                .chain(self.back_at.iter().flatten().copied())
                .min();
            tokio::select! {
                () = self.cancel.cancelled() => return,
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(SimCommand::SendFromCard { from, to, text }) => {
                        net.send_from_card(self.clock.now(), &from, &to, &text);
                    }
                    Some(SimCommand::SetSignal { terminal, signal }) => net.set_signal(terminal, signal),
                    Some(SimCommand::HangUp { terminal, down_for }) => {
                        if let Some(p) = self.ptys.get_mut(terminal) {
                            *p = None;
                            if let Some(b) = self.back_at.get_mut(terminal) {
                                *b = Some(self.clock.real.instant(self.clock.real.now()) + down_for);
                            }
                        }
                    }
                },
                got = from_driver.recv() => if let Some((idx, bytes)) = got {
                    net.handle_rx(self.clock.now(), idx, &bytes);
                },
                () = sleep_until(wake) => {
                    let now = self.clock.now();
                    let real_now = self.clock.real.instant(self.clock.real.now());
                    for i in 0..self.links.len() {
                        if self.back_at.get(i).copied().flatten().is_some_and(|t| t <= real_now) {
                            let reopened = self.links.get(i).map(|link| open_pty(link, i, self.rx_tx.clone(), &self.cancel));
                            match reopened {
                                Some(Ok(p)) => {
                                    if let Some(slot) = self.ptys.get_mut(i) {
                                        *slot = Some(p);
                                    }
                                    if let Some(b) = self.back_at.get_mut(i) {
                                        *b = None;
                                    }
                                    net.handle_power_cycle(i);
                                }
                                Some(Err(e)) => {
                                    tracing::warn!(%e, "simulator cannot reopen its pty");
                                    if let Some(b) = self.back_at.get_mut(i) {
                                        *b = Some(real_now + Duration::from_secs(1));
                                    }
                                }
                                None => {}
                            }
                        }
                    }
                    net.handle_timeout(now);
                }
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
