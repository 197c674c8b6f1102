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

use tocsin_serial::{SimClock, SimPort, sleep_until};
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
    let port = SimPort::open(link.clone())?;
    let (tx, rx) = mpsc::channel(256);
    let mo_log = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(run_sim(port, cfg, seed, speed, rx, mo_log.clone(), cancel));
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
    mut port: SimPort,
    cfg: SimConfig,
    seed: u64,
    speed: f64,
    mut rx: mpsc::Receiver<SimCommand>,
    mo_log: Arc<Mutex<Vec<MoRecord>>>,
    cancel: CancellationToken,
) {
    let clock = SimClock::start(speed);
    let mut sim = SimSbd::new(cfg, seed, clock.now());
    let mut buf = vec![0u8; 4096];
    loop {
        if let Some(p) = port.pty() {
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
        let wake = [wake, port.back_at()].into_iter().flatten().min();
        tokio::select! {
            () = cancel.cancelled() => return,
            cmd = rx.recv() => match cmd {
                None => return,
                Some(SimCommand::QueueMt(payload)) => sim.queue_mt(payload),
                Some(SimCommand::SetFaults(f)) => sim.set_faults(f),
                Some(SimCommand::HangUp { down_for }) => port.hang_up(clock.real_now() + down_for),
            },
            read = port.read(&mut buf) => match read {
                Ok(n) if n > 0 => sim.handle_rx(clock.now(), buf.get(..n).unwrap_or(&[])),
                other => {
                    // Only happens if the slave side vanished; come back on a new pty.
                    tracing::warn!(?other, "simulator pty read failed");
                    port.hang_up(clock.real_now() + Duration::from_millis(100));
                }
            },
            () = sleep_until(wake) => {
                let now = clock.now();
                if port.reopen_if_due(clock.real_now()) {
                    sim.handle_power_cycle(now);
                }
                sim.handle_timeout(now);
            }
        }
    }
}
