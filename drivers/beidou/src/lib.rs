//! BeiDou RDSS short-message driver: the BDS-2 "2.1" text sentences (`$CCTXA`, `$BDTXR`,
//! `$BDFKI`, `$CCICA`/`$BDICI`, `$CCRMO`/`$BDBSI`) and the BDS-3 ones (`$CCTCQ`, `$BDTCI`,
//! `$CCICR`/`$BDICP`, `$BDPWI`), and the device-side simulator of both, with a simulated
//! satellite network between cards.
//!
//! - [`wire`]: NMEA-like sentence framing with the XOR checksum, and the typed sentences.
//! - [`text`]: Chinese text as GB2312 in mixed mode (`A4` + hex), with a documented fallback.
//! - [`proto`]: the terminal conversation as a sans-IO state machine.
//! - [`io`]: the tokio task that runs `proto` on a serial port.
//! - [`sim`]: terminals, cards and the satellite network, as a state machine, with faults.
//! - [`config`]: the terminal's configuration as the daemon's config file gives it.
//! - [`pty`]: the simulator on pseudo-terminals, for integration tests and `tocsin-sim`.

pub mod config;
pub mod io;
pub mod proto;
pub mod pty;
pub mod sim;
pub mod text;
pub mod wire;
