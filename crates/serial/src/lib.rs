//! The serial-device runtime every Tocsin driver shares.
//!
//! - [`clock`]: [`Clock`], the one place a driver reads the wall clock, and
//!   [`sleep_until`], the one place it sleeps until a state machine's deadline.
//! - [`io`]: [`SerialConversation`], the inputs and outputs every device conversation in
//!   a `proto.rs` already has, and [`run_serial`], the tokio task that runs one on a
//!   serial port: opens it by path, reopens it with [`Backoff`], drains the polls in one
//!   documented order and stamps the events with the device.
//! - [`pty`]: what a simulator needs to sit behind a pseudo-terminal the real driver opens
//!   by path: [`Pty`] behind a stable symlink re-pointed atomically, and [`SimClock`].
//! - [`pacer`]: [`PreciseSleep`], a deadline sleep precise to tens of microseconds (a
//!   Linux timerfd on the runtime's poller) for drivers pacing RTP frames in real time,
//!   and [`pacer::slot_start`], which spreads many streams over the 20 ms frame.
//! - [`hw`]: what the drivers' hardware tests share (the device from `TOCSIN_HW_<KIND>`,
//!   waiting for an event).

pub mod clock;
pub mod hw;
pub mod io;
pub mod pacer;
pub mod pty;

pub use clock::{Clock, sleep_until};
pub use io::{
    Backoff, REOPEN_MAX, REOPEN_MIN, Reopen, SerialConversation, SerialPort, open_serial,
    read_or_pending, recv_or_pending, run_serial, write_flush,
};
pub use pacer::PreciseSleep;
pub use pty::{Master, Pty, PtyError, SimClock, SimPort};

/// What [`impl_serial_conversation!`] names, so a driver need not import it.
#[doc(hidden)]
pub mod __macro {
    pub use tocsin_channel::{DriverCommand, DriverEvent};
    pub use tocsin_core::Timestamp;
}
