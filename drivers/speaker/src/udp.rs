//! Runs the simulated speaker ([`SimSpeaker`]) on real UDP sockets: RTP on one port and
//! RTCP on the next (RFC 3550's convention), so the real driver streams to it exactly as
//! to a speaker on the village network. A multicast group address joins the group, on
//! the network card [`SimNet`] names; several speakers on one host may join one group.
//!
//! When a stream ends (a BYE) or the runner stops, what the speaker heard is written to
//! a WAV file if one is configured.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tocsin_voice::{Pcm, wav};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::io::{Clock, sleep_until};
use crate::sim::{SimConfig, SimSpeaker, StreamCheck};

/// What the running speaker has observed so far.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Every stream, the current one last.
    pub streams: Vec<StreamCheck>,
    /// Everything heard, decoded.
    pub audio: Pcm,
    /// Datagrams that were neither RTP nor RTCP.
    pub garbage: u64,
}

/// A running simulated speaker.
#[derive(Clone, Debug)]
pub struct SimSpeakerHandle {
    /// Where to stream RTP.
    pub rtp: SocketAddr,
    /// Its RTCP port (RTP + 1): sender reports go here. For a unicast speaker its
    /// reports come from here too.
    pub rtcp: SocketAddr,
    /// Where its receiver reports come from: what a group's `speakers` lists for it. For
    /// a multicast speaker, its own address ([`SimNet::address`], else the interface)
    /// and the group's RTCP port; `0.0.0.0` when the kernel picks the source.
    pub reporter: SocketAddr,
    /// What it has observed, updated after every datagram.
    pub observed: Arc<Mutex<Observed>>,
}

/// Where a simulated speaker sits on the network, for a multicast group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimNet {
    /// The network card (its IPv4 address) the group is joined on — the choice the
    /// driver's `multicast_interface` makes; unset: the kernel chooses.
    pub interface: Option<Ipv4Addr>,
    /// The speaker's own address, which its receiver reports come from. Speakers of one
    /// group on one host share the group's ports, so each needs its own address
    /// (127.0.0.2, 127.0.0.3, … on loopback) for the driver to tell their reports
    /// apart. Unset: the interface's address.
    pub address: Option<IpAddr>,
}

/// A UDP socket bound to `addr`, shared with other simulated speakers of the same group
/// (SO_REUSEADDR: each gets its own copy of every group packet).
fn shared_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    s.set_reuse_address(true)?;
    // Only the groups this speaker joined, on the card it joined them on. Linux's default
    // (IP_MULTICAST_ALL on) hands a socket every group any socket of the host joined on
    // any card, which would let a speaker joined on the wrong card — or not at all — hear
    // a stream because the driver, on the same host, joined its RTCP group.
    #[cfg(target_os = "linux")]
    s.set_multicast_all_v4(false)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// A free UDP port `p` with `p + 1` free too, on every address: the ephemeral pair for a
/// group. Probed without sharing, then released for the shared sockets to take.
fn free_pair() -> std::io::Result<u16> {
    let any = |port| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
    for _ in 0..20 {
        let r = std::net::UdpSocket::bind(any(0))?;
        let Some(next) = r.local_addr()?.port().checked_add(1) else {
            continue;
        };
        if std::net::UdpSocket::bind(any(next)).is_ok() {
            return Ok(next - 1);
        }
    }
    Err(std::io::Error::other("no free RTP/RTCP port pair"))
}

/// The sockets of a speaker joined to multicast group `group`: RTP and RTCP bound to the
/// group's own address (so it hears this group only, whatever other groups the host
/// joined on the same ports), joined on `net.interface`, and the socket its reports
/// leave from.
fn bind_group(
    group: Ipv4Addr,
    port: u16,
    net: SimNet,
) -> std::io::Result<(UdpSocket, UdpSocket, UdpSocket)> {
    let port = if port == 0 { free_pair()? } else { port };
    let next = port
        .checked_add(1)
        .ok_or_else(|| std::io::Error::other("the group's RTCP port would be past 65535"))?;
    let iface = net.interface.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let r = shared_socket(SocketAddr::new(group.into(), port))?;
    let c = shared_socket(SocketAddr::new(group.into(), next))?;
    r.join_multicast_v4(group, iface)?;
    c.join_multicast_v4(group, iface)?;
    let own = net.address.unwrap_or(IpAddr::V4(iface));
    let report = shared_socket(SocketAddr::new(own, next))?;
    Ok((r, c, report))
}

/// Binds RTP at `rtp` and RTCP at the next port. With port 0, an ephemeral pair is found.
async fn bind_pair(rtp: SocketAddr) -> std::io::Result<(UdpSocket, UdpSocket)> {
    let mut last_err = None;
    for _ in 0..20 {
        let r = UdpSocket::bind(rtp).await?;
        let port = r.local_addr()?.port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        let mut c_addr = rtp;
        c_addr.set_port(next);
        match UdpSocket::bind(c_addr).await {
            Ok(c) => return Ok((r, c)),
            Err(e) if rtp.port() == 0 => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("no free RTP/RTCP port pair")))
}

/// Starts a simulated speaker listening at `rtp` (port 0: any free pair). `wav_out`
/// receives what it heard after each stream. A multicast `rtp` joins the group on the
/// interface the kernel chooses; [`spawn_sim_speaker_on`] chooses it.
pub async fn spawn_sim_speaker(
    rtp: SocketAddr,
    cfg: SimConfig,
    seed: u64,
    wav_out: Option<PathBuf>,
    cancel: CancellationToken,
) -> std::io::Result<SimSpeakerHandle> {
    spawn_sim_speaker_on(rtp, SimNet::default(), cfg, seed, wav_out, cancel).await
}

/// [`spawn_sim_speaker`] placed on the network by `net`: for a multicast `rtp`, the
/// group is joined on `net.interface` and reports leave from `net.address`. Several
/// speakers may join the same group and port (port 0: the first finds a free pair, the
/// others take its [`SimSpeakerHandle::rtp`]). `net` is unused for a unicast `rtp`,
/// which is the speaker's own address.
pub async fn spawn_sim_speaker_on(
    rtp: SocketAddr,
    net: SimNet,
    cfg: SimConfig,
    seed: u64,
    wav_out: Option<PathBuf>,
    cancel: CancellationToken,
) -> std::io::Result<SimSpeakerHandle> {
    let (rtp_sock, rtcp_sock, report_sock) = match rtp.ip() {
        IpAddr::V4(group) if group.is_multicast() => {
            let (r, c, report) = bind_group(group, rtp.port(), net)?;
            (r, c, Some(report))
        }
        _ => {
            let (r, c) = bind_pair(rtp).await?;
            (r, c, None)
        }
    };
    let rtp_addr = rtp_sock.local_addr()?;
    let rtcp_addr = rtcp_sock.local_addr()?;
    let reporter = match &report_sock {
        Some(s) => s.local_addr()?,
        None => rtcp_addr,
    };
    let observed = Arc::new(Mutex::new(Observed::default()));
    tokio::spawn(run(
        Sockets {
            rtp: rtp_sock,
            rtcp: rtcp_sock,
            report: report_sock,
        },
        cfg,
        seed,
        wav_out,
        observed.clone(),
        cancel,
    ));
    Ok(SimSpeakerHandle {
        rtp: rtp_addr,
        rtcp: rtcp_addr,
        reporter,
        observed,
    })
}

/// A simulated speaker's sockets.
struct Sockets {
    /// The stream arrives here.
    rtp: UdpSocket,
    /// Sender reports and goodbyes arrive here; a unicast speaker's reports leave here.
    rtcp: UdpSocket,
    /// A multicast speaker's reports leave from here (and unicast RTCP to its own
    /// address arrives here).
    report: Option<UdpSocket>,
}

async fn recv_report(
    s: &Option<UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match s {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

fn write_wav(path: &Option<PathBuf>, sp: &SimSpeaker) {
    if let Some(p) = path
        && let Err(e) = std::fs::write(p, wav::write(&sp.audio()))
    {
        tracing::warn!(path = %p.display(), %e, "cannot write the speaker's WAV");
    }
}

async fn run(
    sockets: Sockets,
    cfg: SimConfig,
    seed: u64,
    wav_out: Option<PathBuf>,
    observed: Arc<Mutex<Observed>>,
    cancel: CancellationToken,
) {
    let clock = Clock::start();
    let mut sp = SimSpeaker::new(cfg, seed, clock.now());
    let mut b1 = vec![0u8; 2048];
    let mut b2 = vec![0u8; 2048];
    let mut b3 = vec![0u8; 2048];
    let Sockets { rtp, rtcp, report } = sockets;
    let out = report.as_ref().unwrap_or(&rtcp);
    let mut written = 0;
    loop {
        while let Some((to, bytes)) = sp.poll_transmit() {
            if let Err(e) = out.send_to(&bytes, to).await {
                tracing::debug!(%to, %e, "simulated speaker cannot send its report");
            }
        }
        let ended = sp.streams().iter().filter(|s| s.ended).count();
        if ended > written {
            write_wav(&wav_out, &sp);
            written = ended;
        }
        if let Ok(mut o) = observed.lock() {
            o.streams = sp.streams();
            o.audio = sp.audio();
            o.garbage = sp.garbage();
        }
        let wake = sp.poll_timeout().map(|t| clock.instant(t));
        tokio::select! {
            () = cancel.cancelled() => {
                write_wav(&wav_out, &sp);
                return;
            }
            got = rtp.recv_from(&mut b1) => {
                if let Ok((n, from)) = got {
                    sp.handle_rtp(clock.now(), from, b1.get(..n).unwrap_or(&[]));
                }
            }
            got = rtcp.recv_from(&mut b2) => {
                if let Ok((n, from)) = got {
                    sp.handle_rtcp(clock.now(), from, b2.get(..n).unwrap_or(&[]));
                }
            }
            got = recv_report(&report, &mut b3) => {
                if let Ok((n, from)) = got {
                    sp.handle_rtcp(clock.now(), from, b3.get(..n).unwrap_or(&[]));
                }
            }
            () = sleep_until(wake) => sp.handle_timeout(clock.now()),
        }
    }
}
