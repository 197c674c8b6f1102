//! The tokio task that runs [`Terminal`](crate::proto::Terminal) on a serial port, with
//! the shared serial runtime ([`tocsin_serial::run_serial`]).
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

use tocsin_channel::{COMMAND_QUEUE, DeviceEvent, DriverCommand, DriverHandle};
use tocsin_core::DeviceId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::BeidouConfig;
use crate::proto::Terminal;

pub use tocsin_serial::Clock;

tocsin_serial::impl_serial_conversation!(Terminal);

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

/// The driver task. See the module documentation for the drain order.
pub async fn run_beidou(
    device: DeviceId,
    cfg: BeidouConfig,
    commands: mpsc::Receiver<DriverCommand>,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) {
    let clock = Clock::start();
    let terminal = Terminal::new(cfg.clone(), clock.now());
    let port = tocsin_serial::SerialPort {
        path: cfg.path,
        baud: cfg.baud,
        kind: "BeiDou",
    };
    tocsin_serial::run_serial(device, port, clock, terminal, commands, events, cancel).await;
}
