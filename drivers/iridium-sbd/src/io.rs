//! The tokio task that runs [`Sbd`](crate::proto::Sbd) on a serial port.
//!
//! After every input (bytes read, a command, a deadline) the task drains the state
//! machine in one fixed order: **transmit** (write every pending command to the port),
//! then **events** (stamp and forward to the gateway), then **timeout** (sleep until the
//! next deadline). Real time enters only here; the state machine only sees `now`.
//!
//! When the port disappears (read error, EOF, hang-up, a failed write), the modem is told,
//! reports itself down, and the task reopens the same path with exponential backoff
//! (0.5 s doubling to 30 s). Commands keep being accepted meanwhile and queued sends go
//! out after the re-init. Use a stable path (`/dev/serial/by-id/...`) so a modem that
//! re-enumerates (a RockBLOCK on USB) comes back where it was.

use std::time::Duration;

use tocsin_channel::{COMMAND_QUEUE, DeviceEvent, DriverCommand, DriverHandle};
use tocsin_core::{DeviceId, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_serial::{SerialPortBuilderExt, SerialStream};
use tokio_util::sync::CancellationToken;

use crate::config::SbdConfig;
use crate::proto::Sbd;

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

/// Starts the driver task for one SBD modem and returns the gateway's handle on it. The
/// task ends when `cancel` fires or every command sender is dropped.
pub fn spawn_sbd(
    device: DeviceId,
    cfg: SbdConfig,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) -> DriverHandle {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let caps = cfg.capabilities();
    tokio::spawn(run_sbd(device.clone(), cfg, rx, events, cancel));
    DriverHandle {
        device,
        caps,
        commands: tx,
    }
}

fn open(cfg: &SbdConfig) -> Result<SerialStream, tokio_serial::Error> {
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
pub async fn run_sbd(
    device: DeviceId,
    cfg: SbdConfig,
    mut commands: mpsc::Receiver<DriverCommand>,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) {
    let clock = Clock::start();
    let mut modem = Sbd::new(cfg.clone(), clock.now());
    let mut port: Option<SerialStream> = None;
    let mut reopen_at = Some(clock.now());
    let mut backoff = REOPEN_MIN;
    let mut buf = vec![0u8; 4096];
    loop {
        // 1. transmit
        while let Some(bytes) = modem.poll_transmit() {
            let Some(p) = port.as_mut() else { break };
            let written = async {
                p.write_all(&bytes).await?;
                p.flush().await
            }
            .await;
            if let Err(e) = written {
                tracing::warn!(%device, %e, "SBD port write failed");
                port = None;
                modem.handle_port_lost(clock.now());
                reopen_at = Some(clock.now() + backoff);
            }
        }
        // 2. events
        while let Some(event) = modem.poll_event() {
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
            modem.poll_timeout(),
            if port.is_none() { reopen_at } else { None },
        ]
        .into_iter()
        .flatten()
        .min();
        let wake = deadline.map(|t| clock.instant(t));
        tokio::select! {
            () = cancel.cancelled() => return,
            cmd = commands.recv() => match cmd {
                Some(cmd) => modem.submit(clock.now(), cmd),
                None => return,
            },
            read = read_port(&mut port, &mut buf) => match read {
                Ok(n) if n > 0 => modem.handle_rx(clock.now(), buf.get(..n).unwrap_or(&[])),
                other => {
                    tracing::warn!(%device, ?other, "SBD port lost");
                    port = None;
                    modem.handle_port_lost(clock.now());
                    reopen_at = Some(clock.now() + backoff);
                }
            },
            () = sleep_until(wake) => {
                let now = clock.now();
                if port.is_none() && reopen_at.is_some_and(|t| t <= now) {
                    match open(&cfg) {
                        Ok(p) => {
                            tracing::info!(%device, path = %cfg.path, "SBD port open");
                            port = Some(p);
                            reopen_at = None;
                            backoff = REOPEN_MIN;
                            modem.handle_port_opened(now);
                        }
                        Err(e) => {
                            modem.handle_open_failed(now, &e.to_string());
                            reopen_at = Some(now + backoff);
                            backoff = (backoff * 2).min(REOPEN_MAX);
                        }
                    }
                }
                modem.handle_timeout(now);
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
