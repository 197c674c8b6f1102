//! Runs the simulator ([`SimSbd`]) on the master side of a pseudo-terminal, so the real
//! driver opens the slave by path exactly as it opens a 9603.
//!
//! The driver is given a stable symlink (like `/dev/serial/by-id/...`) that points at the
//! current `/dev/pts/N`. A hang-up closes the master — the driver's reads fail, as when a
//! USB modem is pulled — then, after a pause, a fresh pty is created and the symlink is
//! re-pointed at it, so the driver's reopen finds the "same" modem again. The gateway's MT
//! queue and the kit's pending replies survive the hang-up; the modem's buffers do not.
//!
//! Simulated time runs `speed` times faster than real time, so sessions and kit replies
//! shrink for demos and tests.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tocsin_serial::{Pty, SimClock, sleep_until};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::sim::{Faults, MoRecord, SimConfig, SimSbd};

pub use tocsin_serial::PtyError;

/// What the simulator runner can be told to do.
#[derive(Clone, Debug)]
pub enum SimCommand {
    /// Someone sends the modem an MT message (queued at the gateway; the modem rings).
    QueueMt(Vec<u8>),
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
    /// Every MO message the simulated network took.
    pub mo_log: Arc<Mutex<Vec<MoRecord>>>,
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
    let pty = Pty::open(&link)?;
    let (tx, rx) = mpsc::channel(256);
    let mo_log = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(run_sim(
        link.clone(),
        pty,
        cfg,
        seed,
        speed,
        rx,
        mo_log.clone(),
        cancel,
    ));
    Ok(SimHandle {
        path: link,
        commands: tx,
        mo_log,
    })
}

#[allow(
    clippy::too_many_arguments,
    reason = "the runner's whole state, passed once at spawn"
)]
async fn run_sim(
    link: PathBuf,
    pty: Pty,
    cfg: SimConfig,
    seed: u64,
    speed: f64,
    mut rx: mpsc::Receiver<SimCommand>,
    mo_log: Arc<Mutex<Vec<MoRecord>>>,
    cancel: CancellationToken,
) {
    let clock = SimClock::start(speed);
    let mut sim = SimSbd::new(cfg, seed, clock.now());
    let mut pty = Some(pty);
    let mut back_at: Option<tokio::time::Instant> = None;
    let mut buf = vec![0u8; 4096];
    loop {
        if let Some(p) = &pty {
            while let Some(bytes) = sim.poll_transmit() {
                if let Err(e) = p.write_all(&bytes).await {
                    tracing::warn!(%e, "simulator write failed");
                }
            }
        }
        if let Ok(mut log) = mo_log.lock() {
            let have = log.len();
            log.extend(sim.mo_log().iter().skip(have).cloned());
        }
        let wake = sim.poll_timeout().map(|t| clock.instant(t));
        let wake = [wake, back_at].into_iter().flatten().min();
        tokio::select! {
            () = cancel.cancelled() => return,
            cmd = rx.recv() => match cmd {
                None => return,
                Some(SimCommand::QueueMt(payload)) => sim.queue_mt(payload),
                Some(SimCommand::SetFaults(f)) => sim.set_faults(f),
                Some(SimCommand::HangUp { down_for }) => {
                    pty = None;
                    back_at = Some(clock.real_now() + down_for);
                }
            },
            read = Pty::read_optional(&pty, &mut buf) => match read {
                Ok(n) if n > 0 => sim.handle_rx(clock.now(), buf.get(..n).unwrap_or(&[])),
                other => {
                    // Only happens if the slave side vanished; come back on a new pty.
                    tracing::warn!(?other, "simulator pty read failed");
                    pty = None;
                    back_at = Some(clock.real_now() + Duration::from_millis(100));
                }
            },
            () = sleep_until(wake) => {
                let now = clock.now();
                if back_at.is_some_and(|t| t <= clock.real_now()) {
                    back_at = None;
                    match Pty::open(&link) {
                        Ok(p) => {
                            pty = Some(p);
                            sim.handle_power_cycle(now);
                        }
                        Err(e) => {
                            tracing::warn!(%e, "simulator cannot reopen its pty");
                            back_at = Some(clock.real_now() + Duration::from_secs(1));
                        }
                    }
                }
                sim.handle_timeout(now);
            }
        }
    }
}
