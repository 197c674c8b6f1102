//! The tokio task that runs [`Sbd`](crate::proto::Sbd) on a serial port, with
//! the shared serial runtime ([`tocsin_serial::run_serial`]).
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

use tocsin_channel::{COMMAND_QUEUE, DeviceEvent, DriverCommand, DriverHandle};
use tocsin_core::DeviceId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::SbdConfig;
use crate::proto::Sbd;

pub use tocsin_serial::Clock;

tocsin_serial::impl_serial_conversation!(Sbd);

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

/// The driver task. See the module documentation for the drain order.
pub async fn run_sbd(
    device: DeviceId,
    cfg: SbdConfig,
    commands: mpsc::Receiver<DriverCommand>,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) {
    let clock = Clock::start();
    let modem = Sbd::new(cfg.clone(), clock.now());
    let port = tocsin_serial::SerialPort {
        path: cfg.path,
        baud: cfg.baud,
        kind: "SBD",
    };
    tocsin_serial::run_serial(device, port, clock, modem, commands, events, cancel).await;
}
