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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tocsin_serial::{Master, SimClock, sleep_until};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::sim::{SimConfig, SimNetwork, SubmitRecord, TerminalConfig};
pub use tocsin_serial::PtyError;

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

/// One open pty (the slave kept open, see [`tocsin_serial::Pty`]) and the task that reads
/// what the driver writes to it.
struct Pty {
    pty: tocsin_serial::Pty,
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
    let pty = tocsin_serial::Pty::open(link)?;
    let reader = cancel.child_token();
    tokio::spawn(read_loop(pty.master().clone(), idx, rx, reader.clone()));
    Ok(Pty { pty, reader })
}

/// Forwards what the driver writes to one terminal until cancelled or the pty fails.
async fn read_loop(
    master: Master,
    idx: usize,
    tx: mpsc::Sender<(usize, Vec<u8>)>,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let read = tokio::select! {
            () = cancel.cancelled() => return,
            r = master.read(&mut buf) => r,
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
    let runner = Runner {
        links: links.clone(),
        ptys,
        rx_tx,
        back_at: vec![None; links.len()],
        clock: SimClock::start(speed),
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
                    if let Err(e) = p.pty.write_all(&bytes).await {
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
                            // No link while away: a reopen must not find the next pty
                            // the kernel hands out under the old number.
                            if let Some(link) = self.links.get(terminal) {
                                let _ = std::fs::remove_file(link);
                            }
                            *p = None;
                            if let Some(b) = self.back_at.get_mut(terminal) {
                                *b = Some(self.clock.real_now() + down_for);
                            }
                        }
                    }
                },
                got = from_driver.recv() => if let Some((idx, bytes)) = got {
                    net.handle_rx(self.clock.now(), idx, &bytes);
                },
                () = sleep_until(wake) => {
                    let now = self.clock.now();
                    let real_now = self.clock.real_now();
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
