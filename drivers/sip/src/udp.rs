//! The simulated far end ([`FarEnd`]) on real UDP sockets, for integration tests and
//! `tocsin-sim sip`.

use std::net::SocketAddr;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::io::{Clock, sleep_until};
use crate::sim::{FarEnd, SimConfig, SimReport, SimSocket};

/// A running far end.
#[derive(Debug)]
pub struct FarEndHandle {
    /// Where its SIP socket listens (point a trunk's `trunk` here).
    pub sip: SocketAddr,
    /// Its RTP socket.
    pub rtp: SocketAddr,
    /// One report per finished call (bounded; old reports are dropped when nobody reads).
    pub reports: mpsc::Receiver<SimReport>,
}

/// Binds the far end's SIP socket at `sip_bind` and an RTP socket on the same IP, and
/// serves until `cancel` fires.
pub async fn spawn_far_end(
    sip_bind: SocketAddr,
    cfg: SimConfig,
    cancel: CancellationToken,
) -> std::io::Result<FarEndHandle> {
    let sip = UdpSocket::bind(sip_bind).await?;
    let rtp = UdpSocket::bind(SocketAddr::new(sip_bind.ip(), 0)).await?;
    let (sip_addr, rtp_addr) = (sip.local_addr()?, rtp.local_addr()?);
    let (tx, rx) = mpsc::channel(4096);
    tokio::spawn(async move {
        let clock = Clock::start();
        let mut far = FarEnd::new(cfg, rtp_addr);
        let mut sbuf = vec![0u8; 65_535];
        let mut rbuf = vec![0u8; 2048];
        loop {
            while let Some((sock, to, bytes)) = far.poll_transmit() {
                let s = match sock {
                    SimSocket::Sip => &sip,
                    SimSocket::Rtp => &rtp,
                };
                let _ = s.send_to(&bytes, to).await;
            }
            while let Some(r) = far.poll_report() {
                let _ = tx.try_send(r);
            }
            let wake = far.poll_timeout().map(|t| clock.instant(t));
            tokio::select! {
                () = cancel.cancelled() => return,
                r = sip.recv_from(&mut sbuf) => if let Ok((n, from)) = r {
                    far.handle_datagram(clock.now(), SimSocket::Sip, from, sbuf.get(..n).unwrap_or(&[]));
                },
                r = rtp.recv_from(&mut rbuf) => if let Ok((n, from)) = r {
                    far.handle_datagram(clock.now(), SimSocket::Rtp, from, rbuf.get(..n).unwrap_or(&[]));
                },
                () = sleep_until(wake) => far.handle_timeout(clock.now()),
            }
        }
    });
    Ok(FarEndHandle {
        sip: sip_addr,
        rtp: rtp_addr,
        reports: rx,
    })
}
