//! Runs the simulated radio ([`SimRadio`]) behind a real pseudo-terminal or a loopback TCP
//! socket, so the real driver opens it exactly as it opens a USB or networked radio.
//!
//! Over a pty the driver is given a stable symlink (like `/dev/serial/by-id/...`) to the
//! current `/dev/pts/N`; a hang-up closes the master (the driver's reads fail, as when a
//! radio is unplugged), and after the pause a fresh pty is put behind the same symlink.
//! Over TCP the simulator listens on `127.0.0.1` only and, like the firmware, serves one
//! client at a time: a new connection displaces the previous one.
//!
//! The mesh keeps running while no client is connected: what the radio has for the client
//! waits for the next one. Simulated time runs `speed` times faster than real time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tocsin_serial::{Pty, PtyError, SimClock, sleep_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::sim::{Faults, SentPacket, SimConfig, SimRadio};

/// What the simulator runner can be told to do.
#[derive(Clone, Debug)]
pub enum SimCommand {
    /// A text from node `from` reaches the radio.
    DeliverText {
        /// Sending node.
        from: u32,
        /// Text.
        text: String,
    },
    /// Node `from` reports a position.
    ReportPosition {
        /// Reporting node.
        from: u32,
        /// Degrees north.
        lat: f64,
        /// Degrees east.
        lon: f64,
    },
    /// Close the link and stay away for `down_for` (real time).
    HangUp {
        /// How long the radio is unreachable.
        down_for: Duration,
    },
    /// The radio reboots.
    Reboot,
    /// Replace the injected faults.
    SetFaults(Faults),
}

/// Where the simulated radio can be reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimEndpoint {
    /// A stable symlink to the current `/dev/pts/N`.
    Pty(PathBuf),
    /// A loopback TCP address.
    Tcp(SocketAddr),
}

/// A running simulator.
#[derive(Clone, Debug)]
pub struct SimHandle {
    /// Where to connect.
    pub endpoint: SimEndpoint,
    /// Commands to the runner.
    pub commands: mpsc::Sender<SimCommand>,
    /// Every packet the radio took from the client.
    pub sent: Arc<Mutex<Vec<SentPacket>>>,
}

impl SimHandle {
    /// The value for the driver's config: the symlink path, or `127.0.0.1:port`.
    pub fn address(&self) -> String {
        match &self.endpoint {
            SimEndpoint::Pty(p) => p.display().to_string(),
            SimEndpoint::Tcp(a) => a.to_string(),
        }
    }
}

/// Errors setting up a simulated link.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// `openpty`, termios or `fcntl` failed.
    #[error("pseudo-terminal: {0}")]
    Sys(nix::Error),
    /// A symlink, a socket or the reactor failed.
    #[error("simulator link: {0}")]
    Io(#[from] std::io::Error),
}

impl From<PtyError> for RunnerError {
    fn from(e: PtyError) -> Self {
        match e {
            PtyError::Sys(e) => RunnerError::Sys(e),
            PtyError::Io(e) => RunnerError::Io(e),
        }
    }
}

/// Starts a simulated radio behind the symlink `link` (created or replaced).
pub fn spawn_pty_sim(
    link: PathBuf,
    cfg: SimConfig,
    seed: u64,
    speed: f64,
    cancel: CancellationToken,
) -> Result<SimHandle, RunnerError> {
    let pty = Pty::open(&link)?;
    Ok(start(
        Listen::Pty(link.clone()),
        Some(Conn::Pty(pty)),
        SimEndpoint::Pty(link),
        cfg,
        seed,
        speed,
        cancel,
    ))
}

/// Starts a simulated radio listening on `127.0.0.1:port` (0: any free port; the handle
/// says which).
pub fn spawn_tcp_sim(
    port: u16,
    cfg: SimConfig,
    seed: u64,
    speed: f64,
    cancel: CancellationToken,
) -> Result<SimHandle, RunnerError> {
    let std_listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    std_listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(std_listener)?;
    let addr = listener.local_addr()?;
    Ok(start(
        Listen::Tcp(listener),
        None,
        SimEndpoint::Tcp(addr),
        cfg,
        seed,
        speed,
        cancel,
    ))
}

fn start(
    listen: Listen,
    conn: Option<Conn>,
    endpoint: SimEndpoint,
    cfg: SimConfig,
    seed: u64,
    speed: f64,
    cancel: CancellationToken,
) -> SimHandle {
    let (tx, rx) = mpsc::channel(256);
    let sent = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(run_sim(Runner {
        listen,
        conn,
        cfg,
        seed,
        speed,
        rx,
        sent: sent.clone(),
        cancel,
    }));
    SimHandle {
        endpoint,
        commands: tx,
        sent,
    }
}

/// How new links come.
enum Listen {
    /// A new pty behind this symlink.
    Pty(PathBuf),
    /// Connections on this socket.
    Tcp(TcpListener),
}

/// The current link to the client.
enum Conn {
    Pty(Pty),
    Tcp(TcpStream),
}

impl Conn {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf).await,
            Conn::Pty(p) => p.read(buf).await,
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(bytes).await,
            Conn::Pty(p) => p.write_all(bytes).await,
        }
    }
}

async fn read_conn(conn: &mut Option<Conn>, buf: &mut [u8]) -> std::io::Result<usize> {
    match conn {
        Some(c) => c.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn accept(listen: &Listen) -> std::io::Result<TcpStream> {
    match listen {
        Listen::Tcp(l) => l.accept().await.map(|(s, _)| s),
        Listen::Pty(_) => std::future::pending().await,
    }
}

/// Everything the runner task owns.
struct Runner {
    listen: Listen,
    conn: Option<Conn>,
    cfg: SimConfig,
    seed: u64,
    speed: f64,
    rx: mpsc::Receiver<SimCommand>,
    sent: Arc<Mutex<Vec<SentPacket>>>,
    cancel: CancellationToken,
}

/// How long a write to a client that does not read may block the simulator.
const WRITE_PATIENCE: Duration = Duration::from_secs(1);

async fn run_sim(r: Runner) {
    let Runner {
        listen,
        mut conn,
        cfg,
        seed,
        speed,
        mut rx,
        sent,
        cancel,
    } = r;
    let clock = SimClock::start(speed);
    let mut sim = SimRadio::new(cfg, seed, clock.now());
    // When the link comes back (pty) or accepts resume (TCP) after a hang-up.
    let mut back_at: Option<tokio::time::Instant> = None;
    let mut buf = vec![0u8; 4096];
    loop {
        // The log first, so a test that sees the radio's answer also sees the packet.
        if let Ok(mut log) = sent.lock() {
            let have = log.len();
            log.extend(sim.sent().iter().skip(have).cloned());
        }
        if let Some(c) = conn.as_mut() {
            while let Some(bytes) = sim.poll_transmit() {
                match tokio::time::timeout(WRITE_PATIENCE, c.write_all(&bytes)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(%e, "simulated radio: client gone");
                        conn = None;
                        break;
                    }
                    Err(_) => tracing::debug!("simulated radio: client not reading; frame dropped"),
                }
            }
        }
        if sim.take_hangup() {
            conn = None;
            back_at = Some(clock.real_now() + Duration::from_secs(1));
        }
        let wake = sim.poll_timeout().map(|t| clock.instant(t));
        let pty_back = matches!(listen, Listen::Pty(_))
            .then_some(back_at)
            .flatten();
        let wake = [wake, pty_back].into_iter().flatten().min();
        tokio::select! {
            () = cancel.cancelled() => return,
            cmd = rx.recv() => match cmd {
                None => return,
                Some(SimCommand::DeliverText { from, text }) => sim.deliver_text(clock.now(), from, &text),
                Some(SimCommand::ReportPosition { from, lat, lon }) => sim.report_position(clock.now(), from, lat, lon),
                Some(SimCommand::Reboot) => sim.reboot(clock.now()),
                Some(SimCommand::SetFaults(f)) => sim.set_faults(f),
                Some(SimCommand::HangUp { down_for }) => {
                    // No link while away: a reopen must not find the next pty the kernel
                    // hands out under the old number.
                    if let Listen::Pty(link) = &listen {
                        let _ = std::fs::remove_file(link);
                    }
                    conn = None;
                    back_at = Some(clock.real_now() + down_for);
                }
            },
            accepted = accept(&listen) => match accepted {
                Ok(stream) => {
                    if back_at.is_some_and(|t| t > clock.real_now()) {
                        drop(stream); // Still "down".
                    } else {
                        back_at = None;
                        let _ = stream.set_nodelay(true);
                        // One client at a time: the new one displaces the old.
                        conn = Some(Conn::Tcp(stream));
                        sim.handle_client_connected(clock.now());
                    }
                }
                Err(e) => tracing::warn!(%e, "simulated radio: accept failed"),
            },
            read = read_conn(&mut conn, &mut buf) => match read {
                Ok(n) if n > 0 => sim.handle_rx(clock.now(), buf.get(..n).unwrap_or(&[])),
                other => {
                    tracing::debug!(?other, "simulated radio: link closed");
                    conn = None;
                    if matches!(listen, Listen::Pty(_)) {
                        back_at = Some(clock.real_now() + Duration::from_millis(100));
                    }
                }
            },
            () = sleep_until(wake) => {
                if let Listen::Pty(link) = &listen
                    && conn.is_none()
                    && back_at.is_some_and(|t| t <= clock.real_now())
                {
                    back_at = None;
                    match Pty::open(link) {
                        Ok(p) => {
                            conn = Some(Conn::Pty(p));
                            sim.handle_client_connected(clock.now());
                        }
                        Err(e) => {
                            tracing::warn!(%e, "simulated radio cannot reopen its pty");
                            back_at = Some(clock.real_now() + Duration::from_secs(1));
                        }
                    }
                }
                sim.handle_timeout(clock.now());
            }
        }
    }
}
