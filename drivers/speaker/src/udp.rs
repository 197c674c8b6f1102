//! Runs the simulated speaker ([`SimSpeaker`]) on real UDP sockets: RTP on one port and
//! RTCP on the next (RFC 3550's convention), so the real driver streams to it exactly as
//! to a speaker on the village network. A multicast group address joins the group.
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
    /// Its RTCP port (RTP + 1): sender reports go here, its reports come from here.
    pub rtcp: SocketAddr,
    /// What it has observed, updated after every datagram.
    pub observed: Arc<Mutex<Observed>>,
}

/// Binds RTP at `rtp` and RTCP at the next port. With port 0, an ephemeral pair is found.
async fn bind_pair(rtp: SocketAddr) -> std::io::Result<(UdpSocket, UdpSocket)> {
    let local = |a: SocketAddr| match a.ip() {
        // Receive a group's traffic on the wildcard address.
        IpAddr::V4(ip) if ip.is_multicast() => {
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), a.port())
        }
        _ => a,
    };
    let mut last_err = None;
    for _ in 0..20 {
        let r = UdpSocket::bind(local(rtp)).await?;
        let port = r.local_addr()?.port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        let mut c_addr = local(rtp);
        c_addr.set_port(next);
        match UdpSocket::bind(c_addr).await {
            Ok(c) => {
                if let IpAddr::V4(g) = rtp.ip()
                    && g.is_multicast()
                {
                    r.join_multicast_v4(g, Ipv4Addr::UNSPECIFIED)?;
                    c.join_multicast_v4(g, Ipv4Addr::UNSPECIFIED)?;
                }
                return Ok((r, c));
            }
            Err(e) if rtp.port() == 0 => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("no free RTP/RTCP port pair")))
}

/// Starts a simulated speaker listening at `rtp` (port 0: any free pair). `wav_out`
/// receives what it heard after each stream.
pub async fn spawn_sim_speaker(
    rtp: SocketAddr,
    cfg: SimConfig,
    seed: u64,
    wav_out: Option<PathBuf>,
    cancel: CancellationToken,
) -> std::io::Result<SimSpeakerHandle> {
    let (rtp_sock, rtcp_sock) = bind_pair(rtp).await?;
    let mut rtp_addr = rtp_sock.local_addr()?;
    let mut rtcp_addr = rtcp_sock.local_addr()?;
    if rtp.ip().is_multicast() {
        rtp_addr.set_ip(rtp.ip());
        rtcp_addr.set_ip(rtp.ip());
    }
    let observed = Arc::new(Mutex::new(Observed::default()));
    tokio::spawn(run(
        rtp_sock,
        rtcp_sock,
        cfg,
        seed,
        wav_out,
        observed.clone(),
        cancel,
    ));
    Ok(SimSpeakerHandle {
        rtp: rtp_addr,
        rtcp: rtcp_addr,
        observed,
    })
}

fn write_wav(path: &Option<PathBuf>, sp: &SimSpeaker) {
    if let Some(p) = path
        && let Err(e) = std::fs::write(p, wav::write(&sp.audio()))
    {
        tracing::warn!(path = %p.display(), %e, "cannot write the speaker's WAV");
    }
}

async fn run(
    rtp: UdpSocket,
    rtcp: UdpSocket,
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
    let mut written = 0;
    loop {
        while let Some((to, bytes)) = sp.poll_transmit() {
            if let Err(e) = rtcp.send_to(&bytes, to).await {
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
            () = sleep_until(wake) => sp.handle_timeout(clock.now()),
        }
    }
}
