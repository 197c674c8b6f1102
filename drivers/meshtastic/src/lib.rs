//! Meshtastic driver: Tocsin talks to a LoRa mesh radio through the radio's client API,
//! over a serial line or over TCP (port 4403), and reaches each lead's own node with an
//! addressed, acknowledged text.
//!
//! - [`wire`]: the stream framing (`0x94 0xC3`, 16-bit length, at most 512 bytes) and the
//!   firmware's log text between frames.
//! - [`mesh`]: our own hand-written protobuf structs for the subset of the client API we use.
//! - [`proto`]: the radio conversation as a sans-IO state machine: handshake, node table,
//!   paced sends, routing acks and NAKs, inbound texts.
//! - [`io`]: the tokio task that runs `proto` on a serial port or a TCP connection.
//! - [`sim`]: one simulated radio with a mesh of simulated nodes behind it.
//! - [`runner`]: the simulator behind a real pseudo-terminal or a loopback TCP socket.
//! - [`config`]: the radio's configuration as the daemon's config file gives it.
//!
//! Licence note: the Meshtastic protobuf definitions, firmware and client libraries are
//! GPL-3.0. Nothing of them is copied here: [`mesh`] declares, with our own names and
//! comments, only the field numbers and wire behaviour needed to interoperate.

pub mod config;
pub mod io;
pub mod mesh;
pub mod proto;
pub mod runner;
pub mod sim;
pub mod wire;
