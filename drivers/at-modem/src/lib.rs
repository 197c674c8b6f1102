//! GSM/LTE modem driver for SMS over 3GPP TS 27.005/27.007 AT commands (PDU mode) and
//! voice call-out (Quectel, SIMCom and generic families; satellite handsets through a
//! quirks table), and the device-side simulator of the same protocol.
//!
//! One modem with `voice = true` serves two devices on one task: the SMS device and a
//! voice device ([`io::spawn_modem_pair`]). The driver contract is unchanged: each has
//! its own `Capabilities` (`Bearer::Sms`, `Bearer::Voice`). SMS wait while a call is up.
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
//! - [`quirks`]: command families and per-model quirks (satellite handsets).
//! - [`reports`]: status reports matched to sends by TP-MR and recipient, bounded.
//! - [`registration`]: network registration (`+CREG`/`+CGREG`/`+CEREG`): no network, no sends.
//! - [`voice`]: call-progress notifications, the prompt, one call's paced PCM media.

pub mod cms;
pub mod config;
pub mod gsm7;
pub mod io;
pub mod pdu;
pub mod proto;
pub mod pty;
pub mod quirks;
pub mod registration;
pub mod reports;
pub mod sim;
pub mod voice;
pub mod wire;
