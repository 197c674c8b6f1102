//! The tokio task that runs [`Speakers`] on two UDP sockets (RTP out, RTCP both ways).
//!
//! After every input (a command, rendered audio, an RTCP datagram, a deadline) the task
//! drains the state machine in one fixed order: **renders** (each on a blocking thread:
//! synthesis runs a subprocess), **transmit** (send every datagram, consecutive RTP packets
//! in `sendmmsg(2)` batches; a failed send is fed back), **events** (stamp and forward),
//! **reports** (log, and forward when asked), then **timeout** (sleep until the next packet
//! or report is due). Real time enters only here.
//!
//! Pacing accuracy is the state machine's: it sends each packet on its slot computed from
//! the stream's start, so a late wake-up here is caught up on the next one and never
//! accumulates into drift. How late each packet leaves is this task's: it sleeps with
//! [`PreciseSleep`] (a kernel timer, tens of microseconds) rather than tokio's 1 ms timer,
//! whose wake-ups land 0–2 ms after the slot (p50 1.2 ms, p99 2.3 ms on the benchmark
//! box); and the state machine spreads streams over the 20 ms frame, so each wake sends a
//! few packets instead of one per group.

use std::io::{ErrorKind, IoSlice};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tocsin_channel::{COMMAND_QUEUE, DeviceEvent, DriverCommand, DriverHandle};
use tocsin_core::DeviceId;
use tocsin_voice::{Pcm, Speech};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::SpeakerConfig;
use crate::proto::{ProgrammeId, RenderJob, Socket, Speakers, StreamReport, Transmit};

/// The clock (wall time read once at start, for the NTP time in sender reports, then
/// advanced monotonically) and the deadline sleep are the drivers' shared ones.
pub use tocsin_serial::Clock;
use tocsin_serial::PreciseSleep;
pub(crate) use tocsin_serial::sleep_until;

/// First wait before retrying sockets that could not be opened.
const REOPEN_MIN: Duration = Duration::from_millis(500);
/// Longest wait between retries.
const REOPEN_MAX: Duration = Duration::from_secs(30);

/// Most RTP packets handed to the kernel in one `sendmmsg(2)` call. A backlog after the
/// machine stops for 33 ms at 250 streams is ~410 packets: 7 calls instead of 410.
const BATCH: usize = 64;

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

/// Sends `packets` on the RTP socket in order, up to [`BATCH`] per `sendmmsg(2)` call, and
/// calls `failed` with each packet the kernel refused and that packet's own error; the
/// rest still go.
///
/// Why per-packet errors need a second send: Linux's `sendmmsg` stops at the first message
/// that fails and returns the count sent before it, dropping the error; only when that
/// message is the first of the call does it return the error (which may also be a pending
/// socket error or a transient one). So a call that sent nothing is followed by one plain
/// `send_to` of its first packet, whose result is that packet's own; sending continues
/// after it. A packet that failed mid-call is thus the first of the next call.
///
/// The gain is the system call per packet, not the kernel's work per packet: on this VM's
/// loopback ≈0.1 µs of ≈2.7 µs per packet (`tests::backlog_cost`).
async fn send_rtp(
    sock: &UdpSocket,
    packets: &[Transmit],
    mut failed: impl FnMut(&Transmit, std::io::Error),
) {
    let mut next = 0;
    while let Some(rest) = packets.get(next..).filter(|r| !r.is_empty()) {
        let chunk = rest.get(..BATCH).unwrap_or(rest);
        match sock.try_io(Interest::WRITABLE, || sendmmsg(sock, chunk)) {
            // Never more than asked; clamped all the same, so that a bad count cannot skip
            // packets unsent and unreported.
            Ok(n) if n > 0 => next += n.min(chunk.len()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if sock.writable().await.is_err() {
                    // Readiness cannot be awaited (the runtime is going away): send the
                    // rest one by one so that each packet still gets its own verdict.
                    for t in rest {
                        if let Err(e) = sock.send_to(&t.bytes, t.to).await {
                            failed(t, e);
                        }
                    }
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // Nothing sent: the first packet's own send says why (or, the error having
            // been a stale one, sends it).
            _ => {
                if let Some(t) = chunk.first()
                    && let Err(e) = sock.send_to(&t.bytes, t.to).await
                {
                    failed(t, e);
                }
                next += 1;
            }
        }
    }
}

/// One `sendmmsg(2)` of `chunk` (at most [`BATCH`] packets): how many the kernel took.
fn sendmmsg(sock: &UdpSocket, chunk: &[Transmit]) -> std::io::Result<usize> {
    use rustix::net::addr::SocketAddrArg;
    use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
    let addrs: Vec<SocketAddrAny> = chunk.iter().map(|t| t.to.as_any()).collect();
    let iovs: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|t| [IoSlice::new(&t.bytes)]).collect();
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = chunk
        .iter()
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut msgs: Vec<MMsgHdr<'_>> = addrs
        .iter()
        .zip(&iovs)
        .zip(controls.iter_mut())
        .map(|((to, iov), control)| MMsgHdr::new_with_addr(to, iov, control))
        .collect();
    Ok(rustix::net::sendmmsg(sock, &mut msgs, SendFlags::empty())?)
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
    let mut batch: Vec<Transmit> = Vec::with_capacity(BATCH);
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
        // 2. transmit: consecutive RTP packets in batches, each RTCP report in its place.
        loop {
            batch.clear();
            let mut rtcp = None;
            while let Some(t) = sp.poll_transmit() {
                match t.socket {
                    Socket::Rtp => {
                        batch.push(t);
                        if batch.len() == BATCH {
                            break;
                        }
                    }
                    Socket::Rtcp => {
                        rtcp = Some(t);
                        break;
                    }
                }
            }
            if batch.is_empty() && rtcp.is_none() {
                break;
            }
            let Some(s) = sockets.as_ref() else {
                // No sockets: what is due is lost, streams carry on from their schedule.
                continue;
            };
            // A failure stops that group's stream; its goodbye joins the end of the queue,
            // behind everything already due, as it did when packets left one at a time.
            send_rtp(&s.rtp, &batch, |t, e| {
                tracing::warn!(%device, to = %t.to, %e, "RTP send failed");
                sp.handle_send_failed(clock.now(), t.to, &e.to_string());
            })
            .await;
            if let Some(t) = rtcp {
                // RTCP is best effort: evidence comes from the speakers' reports.
                let _ = s.rtcp.send_to(&t.bytes, t.to).await;
            }
        }
        // 3. events
        while let Some(event) = sp.poll_event() {
            let stamped = DeviceEvent {
                device: device.clone(),
                at: clock.now(),
                event,
            };
            if events.send(stamped).await.is_err() {
                return; // The gateway is gone.
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::RtpPacket;

    /// Bound on waiting for a datagram that loopback has already queued.
    const PATIENCE: Duration = Duration::from_secs(5);

    fn rtp_packet(ssrc: u32, sequence: u16) -> Vec<u8> {
        let mut out = Vec::new();
        RtpPacket {
            marker: false,
            payload_type: 8,
            sequence,
            timestamp: u32::from(sequence).wrapping_mul(160),
            ssrc,
            csrc: Vec::new(),
            // 160 bytes of G.711, as a 20 ms frame is; the first says whose it is.
            payload: vec![ssrc as u8; 160],
        }
        .emit(&mut out);
        out
    }

    fn transmit(to: SocketAddr, bytes: Vec<u8>) -> Transmit {
        Transmit {
            socket: Socket::Rtp,
            to,
            bytes,
        }
    }

    /// A speaker's socket on loopback with room for a whole burst. A plain blocking
    /// socket: loopback queues every datagram before the send returns, so reading them
    /// needs no runtime.
    fn speaker() -> std::net::UdpSocket {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket2::SockRef::from(&s)
            .set_recv_buffer_size(1 << 20)
            .unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s
    }

    /// Reads `n` datagrams from `s`, parses them, and checks nothing more came.
    fn heard(s: &std::net::UdpSocket, n: usize) -> Vec<RtpPacket> {
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        for _ in 0..n {
            let (len, _) = s
                .recv_from(&mut buf)
                .expect("a packet sent on loopback arrives");
            got.push(RtpPacket::parse(buf.get(..len).unwrap()).unwrap());
        }
        s.set_nonblocking(true).unwrap();
        let more = s.recv_from(&mut buf).map(|(len, _)| len);
        assert_eq!(more.map_err(|e| e.kind()), Err(ErrorKind::WouldBlock));
        got
    }

    #[tokio::test]
    async fn a_burst_of_300_due_packets_reaches_three_speakers_whole_and_in_order() {
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let speakers = [speaker(), speaker(), speaker()];
        let to: Vec<SocketAddr> = speakers.iter().map(|s| s.local_addr().unwrap()).collect();
        // Interleaved as the core emits them after a stop: each stream's packets in
        // order, streams taking turns; sequence numbers wrap mid-burst.
        let first_seq = 65_500u16;
        let packets: Vec<Transmit> = (0..300usize)
            .map(|i| {
                let stream = i % 3;
                let seq = first_seq.wrapping_add((i / 3) as u16);
                transmit(to[stream], rtp_packet(1000 + stream as u32, seq))
            })
            .collect();
        let mut failures = Vec::new();
        send_rtp(&sender, &packets, |t, e| failures.push((t.to, e.kind()))).await;
        assert!(failures.is_empty(), "{failures:?}");
        for (stream, s) in speakers.iter().enumerate() {
            let got = heard(s, 100);
            for (k, p) in got.iter().enumerate() {
                assert_eq!(p.ssrc, 1000 + stream as u32);
                assert_eq!(
                    p.sequence,
                    first_seq.wrapping_add(k as u16),
                    "stream {stream}"
                );
                assert_eq!(p.payload.len(), 160);
                assert_eq!(p.payload.first(), Some(&((1000 + stream as u32) as u8)));
            }
        }
    }

    #[tokio::test]
    async fn a_refused_destination_is_reported_and_the_others_still_go() {
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let good = [speaker(), speaker()];
        let a = good[0].local_addr().unwrap();
        let b = good[1].local_addr().unwrap();
        // Refused by this host's kernel, never put on a wire: port 0 (EINVAL), and an IPv6
        // speaker on the IPv4 socket (EAFNOSUPPORT), the configuration mistake it stands
        // for.
        let port0: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let v6: SocketAddr = "[::1]:5004".parse().unwrap();
        // 150 packets: a bad one first, at the 64-packet chunk boundary, mid-chunk, and
        // last, so the failure lands on every position a partial sendmmsg can stop at.
        let bad_at = [0usize, 63, 64, 65, 100, 149];
        let mut seq = [0u16; 2];
        let packets: Vec<Transmit> = (0..150usize)
            .map(|i| {
                if let Some(k) = bad_at.iter().position(|&j| j == i) {
                    let to = if k % 2 == 0 { port0 } else { v6 };
                    return transmit(to, rtp_packet(9, i as u16));
                }
                let g = i % 2;
                let p = rtp_packet(2000 + g as u32, seq[g]);
                seq[g] += 1;
                transmit([a, b][g], p)
            })
            .collect();
        let mut failures = Vec::new();
        send_rtp(&sender, &packets, |t, e| {
            let seq = RtpPacket::parse(&t.bytes).unwrap().sequence;
            failures.push((t.to, seq, e.raw_os_error()));
        })
        .await;
        let expected: Vec<_> = bad_at
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                if k % 2 == 0 {
                    (port0, i as u16, Some(22)) // EINVAL
                } else {
                    (v6, i as u16, Some(97)) // EAFNOSUPPORT
                }
            })
            .collect();
        assert_eq!(failures, expected);
        for (g, s) in good.iter().enumerate() {
            let got = heard(s, usize::from(seq[g]));
            let seqs: Vec<u16> = got.iter().map(|p| p.sequence).collect();
            assert_eq!(seqs, (0..seq[g]).collect::<Vec<_>>(), "speaker {g}");
            assert!(got.iter().all(|p| p.ssrc == 2000 + g as u32));
        }
    }

    /// Sends `packets` `ROUNDS` times by each path, alternately, calling `drain` after
    /// each send until the speakers have them all; returns each round's duration, old
    /// path first.
    #[allow(
        clippy::disallowed_methods,
        reason = "timing real system calls needs the real clock"
    )]
    async fn time_both_paths(
        sender: &UdpSocket,
        packets: &[Transmit],
        mut drain: impl AsyncFnMut(),
    ) -> [Vec<Duration>; 2] {
        const ROUNDS: usize = 40;
        let mut old = Vec::new();
        let mut new = Vec::new();
        for _ in 0..ROUNDS {
            let t = std::time::Instant::now();
            for p in packets {
                sender.send_to(&p.bytes, p.to).await.unwrap();
            }
            old.push(t.elapsed());
            drain().await;
            let t = std::time::Instant::now();
            send_rtp(sender, packets, |t, e| panic!("{} refused: {e}", t.to)).await;
            new.push(t.elapsed());
            drain().await;
        }
        [old, new]
    }

    fn print_costs(case: &str, n: usize, [old, new]: [Vec<Duration>; 2]) {
        for (path, mut v) in [("send_to per packet", old), ("sendmmsg batches  ", new)] {
            v.sort();
            let us = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e6 / n as f64);
            println!(
                "{case}: {path}: {:.2} µs/packet median, {:.2} best of {} rounds",
                us(v.get(v.len() / 2)),
                us(v.first()),
                v.len()
            );
        }
    }

    /// Not a check but a measurement (run it in release):
    /// `cargo test --release -p tocsin-speaker --lib -- --ignored --nocapture backlog_cost`.
    /// A backlog of 500 packets, one to each of 500 loopback speakers, sent packet by packet
    /// (the old path) and in batches, alternately; prints µs per packet. Twice: speakers
    /// nobody is reading (the kernel only queues each packet), and speakers each awaited
    /// by a task, as the benchmark's receivers are (each packet also wakes its reader
    /// through epoll, and on loopback the sender's system call pays for that).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement; run in release with --nocapture"]
    async fn backlog_cost() {
        const N: usize = 500;
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let idle: Vec<std::net::UdpSocket> = (0..N).map(|_| speaker()).collect();
        let to_idle: Vec<Transmit> = idle
            .iter()
            .enumerate()
            .map(|(i, s)| transmit(s.local_addr().unwrap(), rtp_packet(i as u32, 7)))
            .collect();
        let mut buf = [0u8; 2048];
        let costs = time_both_paths(&sender, &to_idle, async || {
            for s in &idle {
                s.recv_from(&mut buf).unwrap();
            }
        })
        .await;
        print_costs("idle speakers   ", N, costs);

        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut to_awaited = Vec::with_capacity(N);
        for i in 0..N {
            let s = UdpSocket::from_std({
                let s = speaker();
                s.set_nonblocking(true).unwrap();
                s
            })
            .unwrap();
            to_awaited.push(transmit(s.local_addr().unwrap(), rtp_packet(i as u32, 7)));
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                while s.recv_from(&mut buf).await.is_ok() {
                    count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                }
            });
        }
        let mut expected = 0;
        let costs = time_both_paths(&sender, &to_awaited, async || {
            expected += N;
            while count.load(std::sync::atomic::Ordering::Acquire) < expected {
                tokio::task::yield_now().await;
            }
        })
        .await;
        print_costs("awaited speakers", N, costs);
    }
}
