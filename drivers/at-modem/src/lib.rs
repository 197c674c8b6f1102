//! GSM/LTE modem driver for SMS over 3GPP TS 27.005/27.007 AT commands (PDU mode), and the
//! device-side simulator of the same protocol.
//!
//! - [`gsm7`]: the GSM 03.38 default alphabet, extension table and septet packing.
//! - [`pdu`]: TS 23.040 SMS-SUBMIT / SMS-DELIVER / SMS-STATUS-REPORT, concatenation.
//! - [`wire`]: AT response framing: lines, the `> ` prompt, URCs, result codes.
//! - [`proto`]: the modem conversation as a sans-IO state machine.
//! - [`io`]: the tokio task that runs `proto` on a serial port.
//! - [`sim`]: the modem and the network behind it, as a state machine, with faults.
//! - [`cms`]: `+CMS ERROR` / `+CME ERROR` codes and which failures are worth retrying.
//! - [`config`]: the modem's configuration as the daemon's config file gives it.
//! - [`pty`]: the simulator on a pseudo-terminal, for integration tests and `tocsin-sim`.

pub mod cms;
pub mod config;
pub mod gsm7;
pub mod io;
pub mod pdu;
pub mod proto;
pub mod pty;
pub mod sim;
pub mod wire;
