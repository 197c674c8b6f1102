//! The tokio task that runs a device conversation ([`SerialConversation`]) on a serial
//! port, shared by every serial driver.
//!
//! After every input (bytes read, a command, a deadline) the task drains the state
//! machine in one fixed order: **transmit** (write every pending frame to the port), then
//! **events** (stamp with the device and forward to the gateway), then **timeout** (sleep
//! until the next deadline). Real time enters only here; the state machine only sees
//! `now`.
//!
//! When the port disappears (read error, EOF, hang-up, a failed write) the conversation is
//! told, reports the device down, and the task reopens the same path with exponential
//! backoff ([`REOPEN_MIN`] doubling to [`REOPEN_MAX`]). Commands keep being accepted
//! meanwhile; queued sends go out once the device is back. Use a stable path
//! (`/dev/serial/by-id/...`) so a device that re-enumerates comes back where it was.
//!
//! Drivers with more inputs or outputs than this (a modem's voice side and audio port, a
//! radio's node table and TCP link) run their own loop from the same pieces:
//! [`Backoff`], [`open_serial`], [`read_or_pending`], [`recv_or_pending`], [`write_flush`].

use std::time::Duration;

use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent};
use tocsin_core::{DeviceId, Timestamp};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_serial::{SerialPortBuilderExt, SerialStream};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, sleep_until};

/// First wait before reopening a lost port.
pub const REOPEN_MIN: Duration = Duration::from_millis(500);
/// Longest wait between reopen attempts.
pub const REOPEN_MAX: Duration = Duration::from_secs(30);

/// A device conversation as a sans-IO state machine: the inputs and outputs every
/// driver's `proto.rs` has. No I/O, no clock: time comes in as `now`.
pub trait SerialConversation {
    /// The port is open (again): start talking to the device.
    fn handle_port_opened(&mut self, now: Timestamp);
    /// The port is gone (read error, EOF, hang-up, failed write).
    fn handle_port_lost(&mut self, now: Timestamp);
    /// Opening the port failed with `error`.
    fn handle_open_failed(&mut self, now: Timestamp, error: &str);
    /// Bytes read from the port, split wherever the reads split them.
    fn handle_rx(&mut self, now: Timestamp, bytes: &[u8]);
    /// A deadline from [`poll_timeout`](Self::poll_timeout) may have passed.
    fn handle_timeout(&mut self, now: Timestamp);
    /// A command from the gateway.
    fn submit(&mut self, now: Timestamp, cmd: DriverCommand);
    /// The next bytes to write to the port.
    fn poll_transmit(&mut self) -> Option<Vec<u8>>;
    /// The next fact to report about the device.
    fn poll_event(&mut self) -> Option<DriverEvent>;
    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    fn poll_timeout(&self) -> Option<Timestamp>;
}

/// Implements [`SerialConversation`] for a driver's state machine whose inherent methods
/// already have the trait's names and signatures (every `proto.rs` does), so the
/// state machine itself stays free of this crate.
#[macro_export]
macro_rules! impl_serial_conversation {
    ($t:ty) => {
        impl $crate::SerialConversation for $t {
            fn handle_port_opened(&mut self, now: $crate::__macro::Timestamp) {
                <$t>::handle_port_opened(self, now)
            }
            fn handle_port_lost(&mut self, now: $crate::__macro::Timestamp) {
                <$t>::handle_port_lost(self, now)
            }
            fn handle_open_failed(&mut self, now: $crate::__macro::Timestamp, error: &str) {
                <$t>::handle_open_failed(self, now, error)
            }
            fn handle_rx(&mut self, now: $crate::__macro::Timestamp, bytes: &[u8]) {
                <$t>::handle_rx(self, now, bytes)
            }
            fn handle_timeout(&mut self, now: $crate::__macro::Timestamp) {
                <$t>::handle_timeout(self, now)
            }
            fn submit(
                &mut self,
                now: $crate::__macro::Timestamp,
                cmd: $crate::__macro::DriverCommand,
            ) {
                <$t>::submit(self, now, cmd)
            }
            fn poll_transmit(&mut self) -> ::std::option::Option<::std::vec::Vec<u8>> {
                <$t>::poll_transmit(self)
            }
            fn poll_event(&mut self) -> ::std::option::Option<$crate::__macro::DriverEvent> {
                <$t>::poll_event(self)
            }
            fn poll_timeout(&self) -> ::std::option::Option<$crate::__macro::Timestamp> {
                <$t>::poll_timeout(self)
            }
        }
    };
}

/// The port a [`run_serial`] task opens, and how its logs name the device kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialPort {
    /// The path to open (reopened by path after a loss).
    pub path: String,
    /// Line speed.
    pub baud: u32,
    /// What the logs call the device ("BeiDou", "SBD", "modem").
    pub kind: &'static str,
}

/// Exponential backoff between attempts (reopening a port, re-initialising a device):
/// a minimum doubling to a maximum, back to the minimum after a success. [`Backoff::new`]
/// uses [`REOPEN_MIN`] and [`REOPEN_MAX`]; [`Backoff::between`] takes other bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    current: Duration,
    min: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    /// A backoff at its minimum, for reopening a port.
    pub fn new() -> Self {
        Backoff::between(REOPEN_MIN, REOPEN_MAX)
    }

    /// A backoff from `min` doubling to `max` (a `max` below `min` is taken as `min`).
    pub fn between(min: Duration, max: Duration) -> Self {
        Backoff {
            current: min,
            min,
            max: max.max(min),
        }
    }

    /// The wait before the next attempt, unchanged (a port lost after it was open).
    pub fn delay(&self) -> Duration {
        self.current
    }

    /// An attempt failed: the wait before the next one, doubling the one after.
    pub fn failed(&mut self) -> Duration {
        let wait = self.current;
        self.current = (self.current * 2).min(self.max);
        wait
    }

    /// The port opened: the next loss waits the minimum again.
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

/// When to try reopening a port that is not open: due at once at start, a backoff after
/// a loss or a failed open, nothing while the port is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reopen {
    at: Option<Timestamp>,
    backoff: Backoff,
}

impl Reopen {
    /// No port yet: the first attempt is due at `now`.
    pub fn new(now: Timestamp) -> Self {
        Reopen {
            at: Some(now),
            backoff: Backoff::new(),
        }
    }

    /// When the next attempt is due (`None` while the port is open).
    pub fn deadline(&self) -> Option<Timestamp> {
        self.at
    }

    /// Whether an attempt is due at `now`.
    pub fn due(&self, now: Timestamp) -> bool {
        self.at.is_some_and(|t| t <= now)
    }

    /// The port was lost at `now`: try again after the current backoff.
    pub fn lost(&mut self, now: Timestamp) {
        self.at = Some(now + self.backoff.delay());
    }

    /// The port opened: nothing is due, and the next loss waits the minimum.
    pub fn opened(&mut self) {
        self.at = None;
        self.backoff.reset();
    }

    /// Opening failed at `now`: try again after the backoff, doubling the one after.
    pub fn failed(&mut self, now: Timestamp) {
        self.at = Some(now + self.backoff.failed());
    }
}

/// Opens a serial port by path.
pub fn open_serial(path: &str, baud: u32) -> Result<SerialStream, tokio_serial::Error> {
    tokio_serial::new(path, baud).open_native_async()
}

/// Reads from the port, or waits forever when there is none.
pub async fn read_or_pending<P: AsyncRead + Unpin>(
    port: &mut Option<P>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match port {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Receives from a channel that may be gone (then waits forever).
pub async fn recv_or_pending<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Writes one frame and flushes it, so a lost port shows up on this frame.
pub async fn write_flush<P: AsyncWrite + Unpin>(port: &mut P, bytes: &[u8]) -> std::io::Result<()> {
    port.write_all(bytes).await?;
    port.flush().await
}

/// The driver task for one device on `port`, with the drain order of the module
/// documentation. It returns when `cancel` fires, every command sender is dropped, or the
/// gateway stops taking events. `clock` is the clock `conversation` was created with.
pub async fn run_serial<C: SerialConversation>(
    device: DeviceId,
    port: SerialPort,
    clock: Clock,
    mut conversation: C,
    mut commands: mpsc::Receiver<DriverCommand>,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) {
    let SerialPort { path, baud, kind } = port;
    let mut port: Option<SerialStream> = None;
    let mut reopen = Reopen::new(clock.now());
    let mut buf = vec![0u8; 4096];
    loop {
        // 1. transmit
        while let Some(bytes) = conversation.poll_transmit() {
            let Some(p) = port.as_mut() else { break };
            if let Err(e) = write_flush(p, &bytes).await {
                tracing::warn!(%device, %e, kind, "port write failed");
                port = None;
                conversation.handle_port_lost(clock.now());
                reopen.lost(clock.now());
            }
        }
        // 2. events
        if !tocsin_channel::forward_events(
            &events,
            &device,
            || clock.now(),
            || conversation.poll_event(),
        )
        .await
        {
            return; // The gateway is gone.
        }
        // 3. timeout
        let deadline = [
            conversation.poll_timeout(),
            if port.is_none() {
                reopen.deadline()
            } else {
                None
            },
        ]
        .into_iter()
        .flatten()
        .min();
        let wake = deadline.map(|t| clock.instant(t));
        tokio::select! {
            () = cancel.cancelled() => return,
            cmd = commands.recv() => match cmd {
                Some(cmd) => conversation.submit(clock.now(), cmd),
                None => return,
            },
            read = read_or_pending(&mut port, &mut buf) => match read {
                Ok(n) if n > 0 => conversation.handle_rx(clock.now(), buf.get(..n).unwrap_or(&[])),
                other => {
                    tracing::warn!(%device, ?other, kind, "port lost");
                    port = None;
                    conversation.handle_port_lost(clock.now());
                    reopen.lost(clock.now());
                }
            },
            () = sleep_until(wake) => {
                let now = clock.now();
                if port.is_none() && reopen.due(now) {
                    match open_serial(&path, baud) {
                        Ok(p) => {
                            tracing::info!(%device, %path, kind, "port open");
                            port = Some(p);
                            reopen.opened();
                            conversation.handle_port_opened(now);
                        }
                        Err(e) => {
                            conversation.handle_open_failed(now, &e.to_string());
                            reopen.failed(now);
                        }
                    }
                }
                conversation.handle_timeout(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_on_open() {
        let mut b = Backoff::new();
        let waits: Vec<_> = (0..9).map(|_| b.failed()).collect();
        let ms: Vec<_> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(
            ms,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(b.delay(), REOPEN_MAX);
        b.reset();
        assert_eq!(b.delay(), REOPEN_MIN);
        // A loss after an open waits without doubling.
        assert_eq!(b.delay(), REOPEN_MIN);
    }

    #[test]
    fn backoff_between_other_bounds_doubles_to_its_own_cap() {
        let mut b = Backoff::between(Duration::from_secs(5), Duration::from_secs(60));
        let secs: Vec<_> = (0..6).map(|_| b.failed().as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 60, 60]);
        b.reset();
        assert_eq!(b.delay(), Duration::from_secs(5));
        // A cap below the floor is the floor.
        let mut flat = Backoff::between(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(
            (flat.failed(), flat.failed()),
            (Duration::from_secs(5), Duration::from_secs(5))
        );
    }

    /// A device that greets on open and reports every line it reads.
    #[derive(Default)]
    struct Echo {
        log: Vec<String>,
        tx: std::collections::VecDeque<Vec<u8>>,
        events: std::collections::VecDeque<DriverEvent>,
        line: Vec<u8>,
    }

    impl SerialConversation for Echo {
        fn handle_port_opened(&mut self, _now: Timestamp) {
            self.log.push("opened".into());
            self.tx.push_back(b"HELLO\n".to_vec());
        }
        fn handle_port_lost(&mut self, _now: Timestamp) {
            self.log.push("lost".into());
            self.events
                .push_back(DriverEvent::Health(tocsin_channel::Health::default()));
        }
        fn handle_open_failed(&mut self, _now: Timestamp, error: &str) {
            self.log.push(format!("failed {error}"));
        }
        fn handle_rx(&mut self, _now: Timestamp, bytes: &[u8]) {
            for b in bytes {
                if *b == b'\n' {
                    let line = String::from_utf8_lossy(&self.line).into_owned();
                    self.line.clear();
                    self.events
                        .push_back(DriverEvent::Health(tocsin_channel::Health {
                            last_error: Some(line),
                            ..Default::default()
                        }));
                } else {
                    self.line.push(*b);
                }
            }
        }
        fn handle_timeout(&mut self, _now: Timestamp) {}
        fn submit(&mut self, _now: Timestamp, _cmd: DriverCommand) {}
        fn poll_transmit(&mut self) -> Option<Vec<u8>> {
            self.tx.pop_front()
        }
        fn poll_event(&mut self) -> Option<DriverEvent> {
            self.events.pop_front()
        }
        fn poll_timeout(&self) -> Option<Timestamp> {
            None
        }
    }

    async fn next_event(rx: &mut mpsc::Receiver<DeviceEvent>) -> DeviceEvent {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event in time")
            .expect("the task is running")
    }

    #[tokio::test]
    async fn the_loop_opens_talks_stamps_and_reopens_after_a_hang_up() {
        let dir = std::env::temp_dir().join(format!("tocsin-serial-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("echo");
        let pty = crate::pty::Pty::open(&link).unwrap();
        let (_cmd_tx, cmd_rx) = mpsc::channel(8);
        let (ev_tx, mut ev_rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let device = DeviceId("echo-1".into());
        let clock = Clock::start();
        let task = tokio::spawn(run_serial(
            device.clone(),
            SerialPort {
                path: link.to_string_lossy().into_owned(),
                baud: 9600,
                kind: "echo",
            },
            clock,
            Echo::default(),
            cmd_rx,
            ev_tx,
            cancel.clone(),
        ));
        // The greeting written on open arrives at the device.
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while !got.ends_with(b"\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), pty.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"HELLO\n");
        // A line from the device becomes an event stamped with the device.
        pty.write_all(b"+CMTI: \"SM\",3\n").await.unwrap();
        let ev = next_event(&mut ev_rx).await;
        assert_eq!(ev.device, device);
        assert!(ev.at >= clock.base());
        assert!(
            matches!(&ev.event, DriverEvent::Health(h) if h.last_error.as_deref() == Some("+CMTI: \"SM\",3"))
        );
        // Hang up: the conversation is told; a new pty behind the link is found again.
        drop(pty);
        let ev = next_event(&mut ev_rx).await;
        assert!(matches!(&ev.event, DriverEvent::Health(h) if h.last_error.is_none()));
        let pty = crate::pty::Pty::open(&link).unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), pty.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"HELLO\n");
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        let _ = std::fs::remove_file(&link);
    }

    #[test]
    fn reopen_is_due_at_start_after_a_loss_and_backs_off_on_failures() {
        let t0 = Timestamp::from_millis(1_000_000);
        let mut r = Reopen::new(t0);
        assert!(r.due(t0));
        r.failed(t0);
        assert_eq!(r.deadline(), Some(t0 + Duration::from_millis(500)));
        r.failed(t0);
        assert_eq!(r.deadline(), Some(t0 + Duration::from_millis(1000)));
        assert!(!r.due(t0 + Duration::from_millis(999)));
        r.opened();
        assert_eq!(r.deadline(), None);
        assert!(!r.due(t0 + Duration::from_secs(3600)));
        r.lost(t0);
        assert_eq!(r.deadline(), Some(t0 + REOPEN_MIN));
    }

    #[tokio::test]
    async fn the_optional_inputs_wait_forever_when_absent() {
        let mut none: Option<SerialStream> = None;
        let mut buf = [0u8; 8];
        let mut rx: Option<mpsc::Receiver<u8>> = None;
        tokio::select! {
            biased;
            _ = read_or_pending(&mut none, &mut buf) => panic!("no port, no read"),
            _ = recv_or_pending(&mut rx) => panic!("no channel, no message"),
            () = std::future::ready(()) => {}
        }
        let (tx, r) = mpsc::channel(1);
        let mut rx = Some(r);
        tx.send(7u8).await.unwrap();
        assert_eq!(recv_or_pending(&mut rx).await, Some(7));
    }
}
