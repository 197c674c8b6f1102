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

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tocsin_serial::{Pty, SimClock, SimPort, sleep_until};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::sim::{Faults, SimCall, SimConfig, SimModem, SubmitRecord};

pub use tocsin_serial::PtyError;

/// Most runner commands taken in one turn.
const COMMAND_BATCH: usize = 64;

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
    /// The cell network goes now for `down_for` (simulated time): registration lost,
    /// submits refused with `+CMS ERROR: 331` until it is back.
    LoseNetwork {
        /// How long it is gone, in simulated time.
        down_for: Duration,
    },
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
    let port = SimPort::open(link.clone())?;
    let audio = match &audio_link {
        Some(l) => Some(Pty::open(l)?),
        None => None,
    };
    let calls = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel(256);
    let submits = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(run_sim(
        port,
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

/// The logs the runner shares with its handle: submits and finished calls.
type Logs = (Arc<Mutex<Vec<SubmitRecord>>>, Arc<Mutex<Vec<SimCall>>>);

#[allow(
    clippy::too_many_arguments,
    reason = "the runner's whole state, passed once at spawn"
)]
async fn run_sim(
    mut port: SimPort,
    mut audio: Option<Pty>,
    cfg: SimConfig,
    seed: u64,
    speed: f64,
    mut rx: mpsc::Receiver<SimCommand>,
    (submits, calls): Logs,
    cancel: CancellationToken,
) {
    let mut audio_buf = vec![0u8; 4096];
    let clock = SimClock::start(speed);
    let mut sim = SimModem::new(cfg, seed, clock.now());
    let mut buf = vec![0u8; 4096];
    loop {
        if let Some(p) = port.pty() {
            // Everything pending in one write, as a modem's UART streams it: a burst of
            // +CMTI reaches the driver together rather than one read each.
            let mut out = Vec::new();
            while let Some(bytes) = sim.poll_transmit() {
                out.extend_from_slice(&bytes);
            }
            if !out.is_empty()
                && let Err(e) = p.write_all(&out).await
            {
                tracing::warn!(%e, "simulator write failed");
            }
        }
        if sim.take_hangup() {
            port.hang_up(clock.real_now() + Duration::from_secs(1));
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
        let wake = [wake, port.back_at()].into_iter().flatten().min();
        tokio::select! {
            () = cancel.cancelled() => return,
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                // Take what else is waiting too (a storm of replies), up to a bound.
                let mut next = Some(cmd);
                let mut taken = 0;
                while let Some(cmd) = next.take() {
                    match cmd {
                        SimCommand::DeliverSms { from, text } => sim.deliver_sms(clock.now(), &from, &text),
                        SimCommand::SetFaults(f) => sim.set_faults(f),
                        SimCommand::HangUp { down_for } => port.hang_up(clock.real_now() + down_for),
                        SimCommand::LoseNetwork { down_for } => sim.lose_network(clock.now(), down_for),
                    }
                    taken += 1;
                    if taken < COMMAND_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
            },
            read = Pty::read_optional(&audio, &mut audio_buf) => match read {
                Ok(n) if n > 0 => sim.handle_audio(clock.real().now(), audio_buf.get(..n).unwrap_or(&[])),
                other => {
                    tracing::warn!(?other, "simulator audio pty read failed");
                    audio = None;
                }
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
