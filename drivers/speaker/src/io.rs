//! The tokio task that runs [`Speakers`] on two UDP sockets (RTP out, RTCP both ways).
//!
//! After every input (a command, rendered audio, an RTCP datagram, a deadline) the task
//! drains the state machine in one fixed order: **renders** (each on a blocking thread:
//! synthesis runs a subprocess), **transmit** (send every datagram; a failed send is fed
//! back), **events** (stamp and forward), **reports** (log, and forward when asked), then
//! **timeout** (sleep until the next packet or report is due). Real time enters only here.
//!
//! Pacing accuracy is the state machine's: it sends each packet on its slot computed from
//! the stream's start, so a late wake-up here is caught up on the next one and never
//! accumulates into drift. How late each packet leaves is this task's: it sleeps with
//! [`PreciseSleep`] (a kernel timer, tens of microseconds) rather than tokio's 1 ms timer,
//! whose wake-ups land 0–2 ms after the slot (p50 1.2 ms, p99 2.3 ms on the benchmark
//! box); and the state machine spreads streams over the 20 ms frame, so each wake sends a
//! few packets instead of one per group.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tocsin_channel::{COMMAND_QUEUE, DeviceEvent, DriverCommand, DriverHandle};
use tocsin_core::DeviceId;
use tocsin_voice::{Pcm, Speech};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::SpeakerConfig;
use crate::proto::{ProgrammeId, RenderJob, Socket, Speakers, StreamReport};

/// The clock (wall time read once at start, for the NTP time in sender reports, then
/// advanced monotonically) and the deadline sleep are the drivers' shared ones.
pub use tocsin_serial::Clock;
use tocsin_serial::PreciseSleep;
pub(crate) use tocsin_serial::sleep_until;

/// First wait before retrying sockets that could not be opened.
const REOPEN_MIN: Duration = Duration::from_millis(500);
/// Longest wait between retries.
const REOPEN_MAX: Duration = Duration::from_secs(30);

/// Turns a programme into audio. [`Speech`] is the real one; tests use short tones.
pub trait Renderer: Send + Sync + 'static {
    /// Renders `job`: the audio and the phrases that could not be spoken.
    fn render(&self, job: &RenderJob) -> Result<(Pcm, Vec<String>), String>;
}

impl Renderer for Speech {
    fn render(&self, job: &RenderJob) -> Result<(Pcm, Vec<String>), String> {
        let r = match job {
            RenderJob::Programme {
                grade,
                text,
                exercise,
                repeat,
                pause,
            } => self.programme(*grade, text, *exercise, *repeat, *pause),
            RenderJob::Cancellation { exercise } => self.cancellation(*exercise),
        };
        Ok((r.audio, r.missing))
    }
}

/// Starts the driver task and returns the gateway's handle on it. The task ends when
/// `cancel` fires or every command sender is dropped.
pub fn spawn_speaker(
    device: DeviceId,
    cfg: SpeakerConfig,
    renderer: Arc<dyn Renderer>,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) -> DriverHandle {
    spawn_speaker_with_reports(device, cfg, renderer, events, None, cancel)
}

/// [`spawn_speaker`], also forwarding each stream's reception report to `reports`.
pub fn spawn_speaker_with_reports(
    device: DeviceId,
    cfg: SpeakerConfig,
    renderer: Arc<dyn Renderer>,
    events: mpsc::Sender<DeviceEvent>,
    reports: Option<mpsc::Sender<StreamReport>>,
    cancel: CancellationToken,
) -> DriverHandle {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let caps = cfg.capabilities();
    tokio::spawn(run_speaker(
        device.clone(),
        cfg,
        renderer,
        rx,
        events,
        reports,
        cancel,
    ));
    DriverHandle {
        device,
        caps,
        commands: tx,
    }
}

struct Sockets {
    rtp: UdpSocket,
    rtcp: UdpSocket,
}

async fn open(cfg: &SpeakerConfig) -> std::io::Result<Sockets> {
    // A configured card that is not this host's: say so in the driver's health, which
    // retries, rather than let the kernel's bare "cannot assign requested address" stand.
    cfg.check_interface()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, e.to_string()))?;
    let rtp = UdpSocket::bind(cfg.bind).await?;
    let rtcp = UdpSocket::bind(cfg.rtcp_bind).await?;
    let iface = cfg.multicast_interface.unwrap_or(Ipv4Addr::UNSPECIFIED);
    for s in [&rtp, &rtcp] {
        s.set_multicast_ttl_v4(cfg.ttl)?;
        // On (the kernel's default, set so it does not depend on it): a speaker simulator
        // or monitor on the gateway itself hears the stream on a real card. The only
        // local copies the kernel makes are for sockets of this host that joined the
        // group — here, our own RTCP socket hearing our own sender reports, which carry
        // no report blocks and are ignored. On the loopback interface the flag changes
        // nothing: lo hands every packet back to the host either way.
        s.set_multicast_loop_v4(true)?;
        if cfg.multicast_interface.is_some() && cfg.has_multicast() {
            // Out of the village LAN's card, not whichever card the default route names.
            socket2::SockRef::from(s).set_multicast_if_v4(&iface)?;
        }
    }
    // Speakers that report to the group: hear the group's RTCP (best effort: it only
    // works when rtcp_bind has the group's RTCP port).
    for g in &cfg.groups {
        if let IpAddr::V4(group) = g.rtcp_addr().ip()
            && group.is_multicast()
            && let Err(e) = rtcp.join_multicast_v4(group, iface)
        {
            tracing::warn!(%group, %iface, %e, "cannot join the speakers' RTCP group");
        }
    }
    Ok(Sockets { rtp, rtcp })
}

async fn recv_rtcp(s: &Option<Sockets>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match s {
        Some(s) => s.rtcp.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// The driver task. See the module documentation for the drain order.
#[allow(
    clippy::too_many_arguments,
    reason = "the task's whole state, passed once at spawn"
)]
pub async fn run_speaker(
    device: DeviceId,
    cfg: SpeakerConfig,
    renderer: Arc<dyn Renderer>,
    mut commands: mpsc::Receiver<DriverCommand>,
    events: mpsc::Sender<DeviceEvent>,
    reports: Option<mpsc::Sender<StreamReport>>,
    cancel: CancellationToken,
) {
    let clock = Clock::start();
    let seed = clock.now().as_millis() as u64 ^ u64::from(std::process::id());
    let cname = format!("tocsin-{device}");
    let mut sp = Speakers::new(cfg.clone(), &cname, seed, clock.now());
    let (done_tx, mut done_rx) =
        mpsc::channel::<(ProgrammeId, Result<(Pcm, Vec<String>), String>)>(cfg.queue_limit.max(1));
    let mut sockets: Option<Sockets> = None;
    let mut reopen_at = Some(clock.now());
    let mut backoff = tocsin_serial::io::Backoff::between(REOPEN_MIN, REOPEN_MAX);
    let mut buf = vec![0u8; 2048];
    let mut pacer = PreciseSleep::new();
    loop {
        // 1. renders
        while let Some(req) = sp.poll_render() {
            let r = renderer.clone();
            let tx = done_tx.clone();
            tokio::spawn(async move {
                let job = req.job;
                let out = tokio::task::spawn_blocking(move || r.render(&job))
                    .await
                    .unwrap_or_else(|e| Err(format!("renderer crashed: {e}")));
                let _ = tx.send((req.id, out)).await;
            });
        }
        // 2. transmit
        while let Some(t) = sp.poll_transmit() {
            let Some(s) = sockets.as_ref() else {
                // No sockets: what is due is lost, streams carry on from their schedule.
                continue;
            };
            let sock = match t.socket {
                Socket::Rtp => &s.rtp,
                Socket::Rtcp => &s.rtcp,
            };
            if let Err(e) = sock.send_to(&t.bytes, t.to).await
                && t.socket == Socket::Rtp
            {
                tracing::warn!(%device, to = %t.to, %e, "RTP send failed");
                sp.handle_send_failed(clock.now(), t.to, &e.to_string());
            }
        }
        // 3. events
        if !tocsin_channel::forward_events(&events, &device, || clock.now(), || sp.poll_event())
            .await
        {
            return; // The gateway is gone.
        }
        // 4. reports
        while let Some(r) = sp.poll_report() {
            tracing::info!(
                %device,
                group = %r.group,
                attempt = ?r.attempt,
                ssrc = r.ssrc,
                packets = r.packets,
                reached = r.reached.len(),
                no_evidence = ?r.no_evidence,
                "speaker stream ended"
            );
            if let Some(tx) = &reports {
                let _ = tx.send(r).await;
            }
        }
        // 5. timeout
        let deadline = [
            sp.poll_timeout(),
            if sockets.is_none() { reopen_at } else { None },
        ]
        .into_iter()
        .flatten()
        .min();
        let wake = deadline.map(|t| clock.instant(t));
        tokio::select! {
            () = cancel.cancelled() => return,
            cmd = commands.recv() => match cmd {
                Some(cmd) => sp.submit(clock.now(), cmd),
                None => return,
            },
            Some((id, out)) = done_rx.recv() => {
                let (audio, missing) = match out {
                    Ok((pcm, missing)) => (Ok(pcm), missing),
                    Err(e) => (Err(e), Vec::new()),
                };
                sp.handle_rendered(clock.now(), id, audio, missing);
            }
            got = recv_rtcp(&sockets, &mut buf) => match got {
                Ok((n, from)) => sp.handle_rtcp(clock.now(), from, buf.get(..n).unwrap_or(&[])),
                // ICMP errors surface here on some systems; they are not fatal.
                Err(e) => tracing::debug!(%device, %e, "RTCP receive error"),
            },
            () = pacer.until(wake) => {
                let now = clock.now();
                if sockets.is_none() && reopen_at.is_some_and(|t| t <= now) {
                    match open(&cfg).await {
                        Ok(s) => {
                            tracing::info!(%device, rtp = ?s.rtp.local_addr().ok(), rtcp = ?s.rtcp.local_addr().ok(), "speaker sockets open");
                            sockets = Some(s);
                            reopen_at = None;
                            backoff.reset();
                            sp.handle_sockets_opened(now);
                        }
                        Err(e) => {
                            tracing::warn!(%device, %e, "speaker sockets cannot be opened; retrying");
                            sp.handle_socket_failed(now, &e.to_string());
                            reopen_at = Some(now + backoff.failed());
                        }
                    }
                }
                sp.handle_timeout(now);
            }
        }
    }
}
