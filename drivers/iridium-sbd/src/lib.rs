//! Iridium short burst data (SBD) driver for 9602/9603 modems (RockBLOCK and the like),
//! and the device-side simulator of the same protocol.
//!
//! - [`wire`]: AT framing, `READY`, the binary `AT+SBDRB` block, `+SBDIX` results, MO
//!   status classes, checksums.
//! - [`proto`]: the modem conversation as a sans-IO state machine.
//! - [`io`]: the tokio task that runs `proto` on a serial port.
//! - [`sim`]: the modem and the Iridium network behind it, with seeded faults.
//! - [`network`]: several simulated modems on one simulated gateway, which routes MO
//!   messages between them by their routing prefix.
//! - [`pty`]: the simulators on pseudo-terminals, for integration tests and `tocsin-sim`.
//! - [`config`]: the modem's configuration as the daemon's config file gives it.
//!
//! The payloads are `tocsin-compact` frames: the driver sends the router's text as a plain
//! text frame and a `SendFrame`'s frame as it is; received text frames are `Inbound`, every
//! other frame (a kit's ack batch, the district's alert) is a `Frame` event for the daemon.

pub mod config;
pub mod io;
pub mod network;
pub mod proto;
pub mod pty;
pub mod sim;
pub mod wire;
