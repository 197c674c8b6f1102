//! Iridium short burst data (SBD) driver for 9602/9603 modems (RockBLOCK and the like),
//! and the device-side simulator of the same protocol.
//!
//! - [`wire`]: AT framing, `READY`, the binary `AT+SBDRB` block, `+SBDIX` results, MO
//!   status classes, checksums.
//! - [`proto`]: the modem conversation as a sans-IO state machine.
//! - [`io`]: the tokio task that runs `proto` on a serial port.
//! - [`sim`]: the modem and the Iridium network behind it, with seeded faults.
//! - [`pty`]: the simulator on a pseudo-terminal, for integration tests and `tocsin-sim`.
//! - [`config`]: the modem's configuration as the daemon's config file gives it.
//!
//! The payloads are `tocsin-compact` frames: the driver sends the router's text as a plain
//! text frame and turns ack batches received from field kits into one `Inbound` per ack.

pub mod config;
pub mod io;
pub mod proto;
pub mod pty;
pub mod sim;
pub mod wire;
