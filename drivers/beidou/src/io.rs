//! The tokio task that runs [`Terminal`](crate::proto::Terminal) on a serial port.
//!
//! After every input (bytes read, a command, a deadline) the task drains the state
//! machine in one fixed order: **transmit** (write every pending sentence to the port),
//! then **events** (stamp and forward to the gateway), then **timeout** (sleep until the
//! next deadline). Real time enters only here; the state machine only sees `now`.
//!
//! When the port disappears (read error, EOF, hang-up, a failed write) the terminal is
//! told, reports itself down, and the task reopens the same path with exponential backoff
//! (0.5 s doubling to 30 s). Commands keep being accepted meanwhile; queued sends go out
//! once the card is read again. Several terminals form a pool simply by running one task
//! each: the router spreads sends over the devices of the BeiDou bearer that are up.

use std::time::Duration;

use tocsin_channel::{COMMAND_QUEUE, DeviceEvent, DriverCommand, DriverHandle};
use tocsin_core::{DeviceId, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_serial::{SerialPortBuilderExt, SerialStream};
use tokio_util::sync::CancellationToken;

use crate::config::BeidouConfig;
use crate::proto::Terminal;

/// First wait before reopening a lost port.
const REOPEN_MIN: Duration = Duration::from_millis(500);
/// Longest wait between reopen attempts.
const REOPEN_MAX: Duration = Duration::from_secs(30);

/// Maps the monotonic clock onto [`Timestamp`]s: wall-clock time read once at start, then
/// advanced monotonically so a clock step cannot reorder deadlines.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: tokio::time::Instant,
    base: Timestamp,
}

impl Clock {
    /// Reads the wall clock once.
    #[allow(
        clippy::disallowed_methods,
        reason = "io.rs is where real time enters the driver"
    )]
    pub fn start() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            start: tokio::time::Instant::now(),
            base: Timestamp::from_millis(
                i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX),
            ),
        }
    }

    /// The timestamp of the clock's start.
    pub fn base(&self) -> Timestamp {
        self.base
    }

    /// Now, as a timestamp.
    pub fn now(&self) -> Timestamp {
        self.base + self.start.elapsed()
    }

    /// The monotonic instant of a timestamp (never before the clock's start).
    pub fn instant(&self, t: Timestamp) -> tokio::time::Instant {
        self.start + t.since(self.base)
    }
}

/// Starts the driver task for one terminal and returns the gateway's handle on it. The
/// task ends when `cancel` fires or every command sender is dropped.
pub fn spawn_beidou(
    device: DeviceId,
    cfg: BeidouConfig,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) -> DriverHandle {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let caps = cfg.capabilities();
    tokio::spawn(run_beidou(device.clone(), cfg, rx, events, cancel));
    DriverHandle {
        device,
        caps,
        commands: tx,
    }
}

fn open(cfg: &BeidouConfig) -> Result<SerialStream, tokio_serial::Error> {
    tokio_serial::new(&cfg.path, cfg.baud).open_native_async()
}

/// Reads from the port, or waits forever when there is none.
async fn read_port(port: &mut Option<SerialStream>, buf: &mut [u8]) -> std::io::Result<usize> {
    match port {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}

/// The driver task. See the module documentation for the drain order.
pub async fn run_beidou(
    device: DeviceId,
    cfg: BeidouConfig,
    mut commands: mpsc::Receiver<DriverCommand>,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) {
    let clock = Clock::start();
    let mut terminal = Terminal::new(cfg.clone(), clock.now());
    let mut port: Option<SerialStream> = None;
    let mut reopen_at = Some(clock.now());
    let mut backoff = REOPEN_MIN;
    let mut buf = vec![0u8; 4096];
    loop {
        // 1. transmit
        while let Some(bytes) = terminal.poll_transmit() {
            let Some(p) = port.as_mut() else { break };
            let written = async {
                p.write_all(&bytes).await?;
                p.flush().await
            }
            .await;
            if let Err(e) = written {
                tracing::warn!(%device, %e, "BeiDou port write failed");
                port = None;
                terminal.handle_port_lost(clock.now());
                reopen_at = Some(clock.now() + backoff);
            }
        }
        // 2. events
        while let Some(event) = terminal.poll_event() {
            let stamped = DeviceEvent {
                device: device.clone(),
                at: clock.now(),
                event,
            };
            if events.send(stamped).await.is_err() {
                return; // The gateway is gone.
            }
        }
        // 3. timeout
        let deadline = [
            terminal.poll_timeout(),
            if port.is_none() { reopen_at } else { None },
        ]
        .into_iter()
        .flatten()
        .min();
        let wake = deadline.map(|t| clock.instant(t));
        tokio::select! {
            () = cancel.cancelled() => return,
            cmd = commands.recv() => match cmd {
                Some(cmd) => terminal.submit(clock.now(), cmd),
                None => return,
            },
            read = read_port(&mut port, &mut buf) => match read {
                Ok(n) if n > 0 => terminal.handle_rx(clock.now(), buf.get(..n).unwrap_or(&[])),
                other => {
                    tracing::warn!(%device, ?other, "BeiDou port lost");
                    port = None;
                    terminal.handle_port_lost(clock.now());
                    reopen_at = Some(clock.now() + backoff);
                }
            },
            () = sleep_until(wake) => {
                let now = clock.now();
                if port.is_none() && reopen_at.is_some_and(|t| t <= now) {
                    match open(&cfg) {
                        Ok(p) => {
                            tracing::info!(%device, path = %cfg.path, "BeiDou port open");
                            port = Some(p);
                            reopen_at = None;
                            backoff = REOPEN_MIN;
                            terminal.handle_port_opened(now);
                        }
                        Err(e) => {
                            terminal.handle_open_failed(now, &e.to_string());
                            reopen_at = Some(now + backoff);
                            backoff = (backoff * 2).min(REOPEN_MAX);
                        }
                    }
                }
                terminal.handle_timeout(now);
            }
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
#[allow(
    clippy::disallowed_methods,
    reason = "io.rs sleeps until the state machine's poll_timeout()"
)]
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
