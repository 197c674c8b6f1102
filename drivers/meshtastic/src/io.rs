//! The tokio task that runs [`Radio`](crate::proto::Radio) on a serial port or a TCP
//! connection to the radio's client API.
//!
//! After every input (bytes read, a command, a broadcast, a deadline) the task drains the
//! state machine in one fixed order: **transmit** (write every pending frame), then
//! **events** (stamp and forward to the gateway), then **node table** (publish it when it
//! changed), then **timeout** (sleep until the next deadline). Real time enters only here.
//!
//! When the link goes (read error, EOF, a failed write, a TCP connection the radio closed
//! because another client connected), the radio is told, reports itself down, and the task
//! reopens with exponential backoff (0.5 s doubling to 30 s). Commands keep being accepted
//! meanwhile; queued texts go out after the next handshake. Note that a networked radio
//! serves one client at a time: two gateways pointed at one radio displace each other.

use std::time::Duration;

use tocsin_channel::{COMMAND_QUEUE, DeviceEvent, DriverCommand, DriverHandle};
use tocsin_core::DeviceId;
use tocsin_serial::{
    Reopen, open_serial, read_or_pending, recv_or_pending, sleep_until, write_flush,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{MeshConfig, Transport};
use crate::proto::{MeshNode, Radio};

/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Depth of the broadcast channel.
pub const BROADCAST_QUEUE: usize = 64;

pub use tocsin_serial::Clock;

/// A channel broadcast: public information for everyone on a channel, never an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broadcast {
    /// The radio's channel index.
    pub channel: u32,
    /// The text.
    pub text: String,
}

/// The gateway's handle on a running radio, with what the driver contract does not carry
/// yet: the node table and channel broadcasts.
#[derive(Clone, Debug)]
pub struct MeshHandle {
    /// The contract's handle (commands in).
    pub driver: DriverHandle,
    /// The node table, updated whenever it changes.
    pub nodes: watch::Receiver<Vec<MeshNode>>,
    /// Channel broadcasts to put on the air (bounded).
    pub broadcasts: mpsc::Sender<Broadcast>,
}

/// Starts the driver task for one radio and returns the gateway's handle on it. The task
/// ends when `cancel` fires or every command sender is dropped.
pub fn spawn_meshtastic(
    device: DeviceId,
    cfg: MeshConfig,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) -> DriverHandle {
    spawn_meshtastic_with_nodes(device, cfg, events, cancel).driver
}

/// Like [`spawn_meshtastic`], and also hands out the node table and a broadcast sender.
pub fn spawn_meshtastic_with_nodes(
    device: DeviceId,
    cfg: MeshConfig,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) -> MeshHandle {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let (btx, brx) = mpsc::channel(BROADCAST_QUEUE);
    let (ntx, nrx) = watch::channel(Vec::new());
    let caps = cfg.capabilities();
    tokio::spawn(run_radio(device.clone(), cfg, rx, brx, ntx, events, cancel));
    MeshHandle {
        driver: DriverHandle {
            device,
            caps,
            commands: tx,
        },
        nodes: nrx,
        broadcasts: btx,
    }
}

/// A byte stream to the radio: a serial port or a TCP connection.
trait Link: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Link for T {}

async fn open(cfg: &MeshConfig) -> Result<Box<dyn Link>, String> {
    match cfg.transport() {
        Some(Transport::Serial(path)) => open_serial(&path, cfg.baud)
            .map(|p| Box::new(p) as Box<dyn Link>)
            .map_err(|e| e.to_string()),
        Some(Transport::Tcp(addr)) => {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    Ok(Box::new(s) as Box<dyn Link>)
                }
                Ok(Err(e)) => Err(format!("{addr}: {e}")),
                Err(_) => Err(format!("{addr}: connect timed out")),
            }
        }
        None => Err("neither path nor tcp configured".to_owned()),
    }
}

/// The driver task. See the module documentation for the drain order.
async fn run_radio(
    device: DeviceId,
    cfg: MeshConfig,
    mut commands: mpsc::Receiver<DriverCommand>,
    broadcasts: mpsc::Receiver<Broadcast>,
    nodes: watch::Sender<Vec<MeshNode>>,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) {
    let clock = Clock::start();
    let mut radio = Radio::new(cfg.clone(), clock.now());
    let mut broadcasts = Some(broadcasts);
    let mut link: Option<Box<dyn Link>> = None;
    let mut reopen = Reopen::new(clock.now());
    let mut buf = vec![0u8; 4096];
    loop {
        // 1. transmit
        while let Some(bytes) = radio.poll_transmit() {
            let Some(l) = link.as_mut() else { break };
            if let Err(e) = write_flush(l, &bytes).await {
                tracing::warn!(%device, %e, "radio write failed");
                link = None;
                radio.handle_port_lost(clock.now());
                reopen.lost(clock.now());
            }
        }
        // 2. events
        if !tocsin_channel::forward_events(&events, &device, || clock.now(), || radio.poll_event())
            .await
        {
            return; // The gateway is gone.
        }
        // 3. node table
        if radio.take_nodes_changed() {
            nodes.send_replace(radio.nodes().cloned().collect());
        }
        // 4. timeout
        let deadline = [
            radio.poll_timeout(),
            if link.is_none() {
                reopen.deadline()
            } else {
                None
            },
        ]
        .into_iter()
        .flatten()
        .min();
        let wake = deadline.map(|t| clock.instant(t));
        tokio::select! {
            () = cancel.cancelled() => return,
            cmd = commands.recv() => match cmd {
                Some(cmd) => radio.submit(clock.now(), cmd),
                None => return,
            },
            b = recv_or_pending(&mut broadcasts) => match b {
                Some(b) => {
                    if let Err(e) = radio.broadcast(clock.now(), b.channel, &b.text) {
                        tracing::warn!(%device, %e, "broadcast refused");
                    }
                }
                None => broadcasts = None,
            },
            read = read_or_pending(&mut link, &mut buf) => match read {
                Ok(n) if n > 0 => radio.handle_rx(clock.now(), buf.get(..n).unwrap_or(&[])),
                other => {
                    tracing::warn!(%device, ?other, "radio link lost");
                    link = None;
                    radio.handle_port_lost(clock.now());
                    reopen.lost(clock.now());
                }
            },
            () = sleep_until(wake) => {
                let now = clock.now();
                if link.is_none() && reopen.due(now) {
                    match open(&cfg).await {
                        Ok(l) => {
                            tracing::info!(%device, "radio link open");
                            link = Some(l);
                            reopen.opened();
                            radio.handle_port_opened(clock.now());
                        }
                        Err(e) => {
                            radio.handle_open_failed(now, &e);
                            reopen.failed(clock.now());
                        }
                    }
                }
                radio.handle_timeout(clock.now());
            }
        }
    }
}
