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
//!
//! [`spawn_network`] runs several simulated modems on one simulated gateway
//! ([`SimIridium`]), one pty each, so two gateways (a district and a field kit) can each
//! open one and talk SBD to each other.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tocsin_serial::{Master, SimClock, SimPort, sleep_until};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::network::{NetworkConfig, Routed, SimIridium};
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

/// What the network runner can be told to do.
#[derive(Clone, Debug)]
pub enum NetworkCommand {
    /// Someone outside the network sends modem `modem` an MT message.
    QueueMt {
        /// Which modem (index in the order given to [`spawn_network`]).
        modem: usize,
        /// The payload.
        payload: Vec<u8>,
    },
    /// Close one modem's port, stay away for `down_for` (real time), then come back on a
    /// new pty behind the same symlink.
    HangUp {
        /// Which modem.
        modem: usize,
        /// How long it is gone.
        down_for: Duration,
    },
    /// Replace one modem's injected faults.
    SetFaults {
        /// Which modem.
        modem: usize,
        /// The faults.
        faults: Faults,
    },
}

/// A running network of simulated modems.
#[derive(Clone, Debug)]
pub struct NetworkHandle {
    /// The stable path of each modem, in order.
    pub paths: Vec<PathBuf>,
    /// Commands to the runner.
    pub commands: mpsc::Sender<NetworkCommand>,
    /// Every MO message each modem's sessions carried, per modem.
    pub mo_logs: Vec<Arc<Mutex<Vec<MoRecord>>>>,
    /// Every message the gateway routed between the modems.
    pub routed: Arc<Mutex<Vec<Routed>>>,
}

/// Starts simulated modems behind the symlinks `links` (created or replaced), one per
/// entry of `modems` (each with its own IMEI), on one simulated gateway. An MO message
/// prefixed with [`crate::network::route_prefix`] of another modem's IMEI reaches that
/// modem as an MT message. Simulated time runs `speed` times real time.
pub fn spawn_network(
    links: Vec<PathBuf>,
    modems: Vec<SimConfig>,
    cfg: NetworkConfig,
    seed: u64,
    speed: f64,
    cancel: CancellationToken,
) -> Result<NetworkHandle, PtyError> {
    let (rx_tx, rx_rx) = mpsc::channel(256);
    let mut ports = Vec::new();
    let mut readers = Vec::new();
    for (i, link) in links.iter().enumerate() {
        let port = SimPort::open(link.clone())?;
        readers.push(
            port.pty()
                .map(|p| spawn_reader(p.master(), i, &rx_tx, &cancel)),
        );
        ports.push(port);
    }
    let (tx, rx) = mpsc::channel(256);
    let clock = SimClock::start(speed);
    let mut net = SimIridium::new(cfg, seed);
    for m in modems.into_iter().take(links.len()) {
        net.add_modem(clock.now(), m);
    }
    let mo_logs: Vec<_> = (0..net.len())
        .map(|_| Arc::new(Mutex::new(Vec::new())))
        .collect();
    let routed = Arc::new(Mutex::new(Vec::new()));
    let runner = NetworkRunner {
        ports,
        readers,
        rx_tx,
        clock,
        mo_logs: mo_logs.clone(),
        routed: routed.clone(),
        cancel,
    };
    tokio::spawn(runner.run(net, rx, rx_rx));
    Ok(NetworkHandle {
        paths: links,
        commands: tx,
        mo_logs,
        routed,
    })
}

/// What one reader task forwards: bytes the driver wrote to modem `idx`, or `None` when
/// its pty failed.
type FromDriver = (usize, Option<Vec<u8>>);

/// Reads what the driver writes to one modem's pty until cancelled (the modem hung up)
/// or the pty fails. Cancelling drops the reader's hold on the master, so the driver sees
/// the hang-up.
fn spawn_reader(
    master: &Master,
    idx: usize,
    tx: &mpsc::Sender<FromDriver>,
    cancel: &CancellationToken,
) -> CancellationToken {
    let token = cancel.child_token();
    let (master, tx, stop) = (master.clone(), tx.clone(), token.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let read = tokio::select! {
                () = stop.cancelled() => return,
                r = master.read(&mut buf) => r,
            };
            let msg = match read {
                Ok(n) if n > 0 => Some(buf.get(..n).unwrap_or(&[]).to_vec()),
                other => {
                    tracing::warn!(?other, idx, "simulated modem pty read failed");
                    None
                }
            };
            let failed = msg.is_none();
            if tx.send((idx, msg)).await.is_err() || failed {
                return;
            }
        }
    });
    token
}

/// The network runner's state.
struct NetworkRunner {
    ports: Vec<SimPort>,
    readers: Vec<Option<CancellationToken>>,
    rx_tx: mpsc::Sender<FromDriver>,
    clock: SimClock,
    mo_logs: Vec<Arc<Mutex<Vec<MoRecord>>>>,
    routed: Arc<Mutex<Vec<Routed>>>,
    cancel: CancellationToken,
}

impl NetworkRunner {
    fn hang_up(&mut self, idx: usize, back_at: tokio::time::Instant) {
        if let Some(port) = self.ports.get_mut(idx) {
            port.hang_up(back_at);
        }
        if let Some(Some(r)) = self.readers.get_mut(idx).map(Option::take) {
            r.cancel();
        }
    }

    async fn run(
        mut self,
        mut net: SimIridium,
        mut commands: mpsc::Receiver<NetworkCommand>,
        mut from_driver: mpsc::Receiver<FromDriver>,
    ) {
        loop {
            for (i, port) in self.ports.iter().enumerate() {
                while let Some(bytes) = net.poll_transmit(i) {
                    let Some(p) = port.pty() else { continue };
                    if let Err(e) = p.write_all(&bytes).await {
                        tracing::warn!(%e, "simulator write failed");
                    }
                }
            }
            for (i, log) in self.mo_logs.iter().enumerate() {
                if let (Ok(mut log), Some(m)) = (log.lock(), net.modem(i)) {
                    let have = log.len();
                    log.extend(m.mo_log().iter().skip(have).cloned());
                }
            }
            if let Ok(mut log) = self.routed.lock() {
                let have = log.len();
                log.extend(net.routed().iter().skip(have).cloned());
            }
            let wake = net.poll_timeout().map(|t| self.clock.instant(t));
            let wake = wake
                .into_iter()
                .chain(self.ports.iter().filter_map(SimPort::back_at))
                .min();
            tokio::select! {
                () = self.cancel.cancelled() => return,
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(NetworkCommand::QueueMt { modem, payload }) => {
                        if let Some(m) = net.modem_mut(modem) {
                            m.queue_mt(payload);
                        }
                    }
                    Some(NetworkCommand::SetFaults { modem, faults }) => {
                        if let Some(m) = net.modem_mut(modem) {
                            m.set_faults(faults);
                        }
                    }
                    Some(NetworkCommand::HangUp { modem, down_for }) => {
                        let back = self.clock.real_now() + down_for;
                        self.hang_up(modem, back);
                    }
                },
                got = from_driver.recv() => match got {
                    Some((idx, Some(bytes))) => net.handle_rx(self.clock.now(), idx, &bytes),
                    // Only happens if the slave side vanished; come back on a new pty.
                    Some((idx, None)) => {
                        let back = self.clock.real_now() + Duration::from_millis(100);
                        self.hang_up(idx, back);
                    }
                    None => return,
                },
                () = sleep_until(wake) => {
                    let now = self.clock.now();
                    let real_now = self.clock.real_now();
                    for i in 0..self.ports.len() {
                        let reopened = self
                            .ports
                            .get_mut(i)
                            .is_some_and(|p| p.reopen_if_due(real_now));
                        if reopened {
                            let reader = self.ports.get(i).and_then(SimPort::pty).map(|p| {
                                spawn_reader(p.master(), i, &self.rx_tx, &self.cancel)
                            });
                            if let Some(slot) = self.readers.get_mut(i) {
                                *slot = reader;
                            }
                            net.handle_power_cycle(i, now);
                        }
                    }
                    net.handle_timeout(now);
                }
            }
        }
    }
}
