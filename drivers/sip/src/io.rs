//! The tokio task that runs [`Trunk`] on UDP sockets.
//!
//! Sockets: one for SIP signalling at `bind`, and one RTP socket per call slot
//! (`concurrent_calls` of them, at `rtp_port_base + 2 i` on the same IP, or ports the system
//! picks when the base is 0). A call sends and receives its media on its slot's socket,
//! so key presses are matched to calls by the port they arrive on even when every call's
//! far end sends from one address (as SIPp does). Each RTP socket has a small reader task
//! feeding one bounded channel.
//!
//! After every input (a datagram, a command, a deadline) the task drains the state machine
//! in one fixed order: **transmit** (every pending datagram), then **events** (stamped
//! and forwarded to the gateway), then **timeout** (sleep until the next deadline — for a
//! call in progress that is its next 20 ms RTP frame). Real time enters only here. The
//! sleep is [`PreciseSleep`] (a kernel timer, tens of microseconds), not tokio's 1 ms
//! timer, whose wake-ups land 0–2 ms after a frame's slot, varying from frame to frame.
//!
//! If the sockets cannot be bound (address in use, no such interface), the driver reports
//! itself down with the reason and tries again every 5 s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tocsin_channel::{
    COMMAND_QUEUE, DeviceEvent, DriverCommand, DriverEvent, DriverHandle, Health,
};
use tocsin_core::DeviceId;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::SipConfig;
use crate::prompt::PromptSource;
use crate::proto::{Socket, Trunk};

pub use tocsin_serial::Clock;
use tocsin_serial::PreciseSleep;
pub(crate) use tocsin_serial::sleep_until;

/// Wait between attempts to bind the sockets.
const REBIND: Duration = Duration::from_secs(5);
/// Largest datagram read.
const MAX_DATAGRAM: usize = 65_535;
/// Receive buffer asked for the SIP socket. Hundreds of calls answered together bring
/// their 100, 180 and 200 (each 0.5–1 KB, 2 KB or more of kernel memory) faster than one
/// task handles them; the 208 KB Linux default held about 100 and the rest were dropped.
/// A dropped provisional response costs an INVITE retransmission, a dropped 200 OK a
/// retransmission by the far end — or, from a far end that does not repeat it, the call.
const SIP_RECV_BUFFER: usize = 4 << 20;

/// Starts the driver task for one trunk, playing the built-in tone prompt.
pub fn spawn_sip(
    device: DeviceId,
    cfg: SipConfig,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) -> DriverHandle {
    spawn_sip_with_prompts(device, cfg, None, events, cancel)
}

/// Starts the driver task for one trunk; `prompts` renders each attempt's text (the
/// built-in tone when `None`). The task ends when `cancel` fires or every command sender
/// is dropped.
pub fn spawn_sip_with_prompts(
    device: DeviceId,
    cfg: SipConfig,
    prompts: Option<Arc<dyn PromptSource>>,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) -> DriverHandle {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let caps = cfg.capabilities();
    tokio::spawn(run_sip(device.clone(), cfg, prompts, rx, events, cancel));
    DriverHandle {
        device,
        caps,
        commands: tx,
    }
}

struct Sockets {
    sip: UdpSocket,
    rtp: Vec<(u16, Arc<UdpSocket>)>,
}

async fn bind(cfg: &SipConfig) -> Result<Sockets, String> {
    let addr = cfg.bind_addr().map_err(|e| e.to_string())?;
    let sip = UdpSocket::bind(addr)
        .await
        .map_err(|e| format!("bind SIP {addr}: {e}"))?;
    widen_receive_buffer(&sip);
    let mut rtp = Vec::new();
    for i in 0..cfg.concurrent_calls {
        let port = if cfg.rtp_port_base == 0 {
            0
        } else {
            u16::try_from(usize::from(cfg.rtp_port_base) + 2 * i)
                .map_err(|_| "RTP port range".to_owned())?
        };
        let a = SocketAddr::new(addr.ip(), port);
        let s = UdpSocket::bind(a)
            .await
            .map_err(|e| format!("bind RTP {a}: {e}"))?;
        let local = s.local_addr().map_err(|e| e.to_string())?.port();
        rtp.push((local, Arc::new(s)));
    }
    Ok(Sockets { sip, rtp })
}

/// Asks for [`SIP_RECV_BUFFER`] on the SIP socket: beyond `net.core.rmem_max` when the
/// process may (CAP_NET_ADMIN, as root), else up to that limit. A smaller buffer still
/// works (retransmissions recover what it drops), so a refusal is only logged.
fn widen_receive_buffer(sock: &UdpSocket) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    if setsockopt(sock, sockopt::RcvBufForce, &SIP_RECV_BUFFER).is_err()
        && let Err(e) = setsockopt(sock, sockopt::RcvBuf, &SIP_RECV_BUFFER)
    {
        tracing::warn!(%e, "SIP socket receive buffer not widened");
    }
    // The kernel reports twice what it grants to the payload (the rest is bookkeeping).
    match getsockopt(sock, sockopt::RcvBuf) {
        Ok(got) if got < SIP_RECV_BUFFER => tracing::warn!(
            got,
            wanted = SIP_RECV_BUFFER,
            "SIP socket receive buffer capped by net.core.rmem_max: a burst of answers \
             from many calls may be dropped and wait for retransmissions"
        ),
        Ok(got) => tracing::debug!(got, "SIP socket receive buffer"),
        Err(e) => tracing::debug!(%e, "SIP socket receive buffer unknown"),
    }
}

async fn emit(
    events: &mpsc::Sender<DeviceEvent>,
    device: &DeviceId,
    clock: &Clock,
    event: DriverEvent,
) -> bool {
    events
        .send(DeviceEvent {
            device: device.clone(),
            at: clock.now(),
            event,
        })
        .await
        .is_ok()
}

/// The driver task. See the module documentation for the drain order.
pub async fn run_sip(
    device: DeviceId,
    cfg: SipConfig,
    prompts: Option<Arc<dyn PromptSource>>,
    mut commands: mpsc::Receiver<DriverCommand>,
    events: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) {
    let clock = Clock::start();
    let sockets = loop {
        match bind(&cfg).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(%device, %e, "SIP trunk sockets");
                let down = DriverEvent::Health(Health {
                    up: false,
                    last_error: Some(e),
                    ..Health::default()
                });
                if !emit(&events, &device, &clock, down).await {
                    return;
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = sleep_until(Some(clock.instant(clock.now() + REBIND))) => {}
                }
            }
        }
    };
    let local = match sockets.sip.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(%device, %e, "SIP socket has no local address");
            return;
        }
    };
    let ports: Vec<u16> = sockets.rtp.iter().map(|(p, _)| *p).collect();
    let seed = u64::try_from(clock.now().as_millis()).unwrap_or(0) ^ u64::from(local.port());
    let mut trunk = match Trunk::new(cfg, local, ports, seed, clock.now()) {
        Ok(t) => t,
        Err(e) => {
            let down = DriverEvent::Health(Health {
                up: false,
                last_error: Some(e.to_string()),
                ..Health::default()
            });
            let _ = emit(&events, &device, &clock, down).await;
            return;
        }
    };
    if let Some(p) = prompts {
        trunk = trunk.with_prompts(p);
    }
    tracing::info!(%device, %local, "SIP trunk driver up");

    // RTP readers: one small task per call slot, all feeding one bounded channel.
    let readers = cancel.child_token();
    let _stop_readers = readers.clone().drop_guard();
    let (rtp_tx, mut rtp_rx) = mpsc::channel::<(u16, SocketAddr, Vec<u8>)>(1024);
    for (port, sock) in &sockets.rtp {
        let (port, sock, tx, stop) = (*port, sock.clone(), rtp_tx.clone(), readers.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    r = sock.recv_from(&mut buf) => match r {
                        Ok((n, from)) => {
                            let bytes = buf.get(..n).unwrap_or(&[]).to_vec();
                            if tx.send((port, from, bytes)).await.is_err() {
                                return;
                            }
                        }
                        // ICMP errors surface here on some systems; the socket lives on.
                        Err(e) => tracing::debug!(port, %e, "RTP receive error"),
                    }
                }
            }
        });
    }
    drop(rtp_tx);

    let rtp_by_port: std::collections::HashMap<u16, Arc<UdpSocket>> =
        sockets.rtp.iter().map(|(p, s)| (*p, s.clone())).collect();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut pacer = PreciseSleep::new();
    loop {
        // 1. transmit
        while let Some(t) = trunk.poll_transmit() {
            let sent = match t.socket {
                Socket::Sip => sockets.sip.send_to(&t.bytes, t.to).await,
                Socket::Rtp(port) => match rtp_by_port.get(&port) {
                    Some(s) => s.send_to(&t.bytes, t.to).await,
                    None => continue,
                },
            };
            if let Err(e) = sent {
                tracing::debug!(%device, to = %t.to, %e, "datagram not sent");
            }
        }
        // 2. events
        while let Some(event) = trunk.poll_event() {
            if !emit(&events, &device, &clock, event).await {
                return; // The gateway is gone.
            }
        }
        // 3. timeout
        let wake = trunk.poll_timeout().map(|t| clock.instant(t));
        tokio::select! {
            () = cancel.cancelled() => return,
            cmd = commands.recv() => match cmd {
                Some(cmd) => trunk.submit(clock.now(), cmd),
                None => return,
            },
            r = sockets.sip.recv_from(&mut buf) => match r {
                Ok((n, from)) => trunk.handle_datagram(clock.now(), Socket::Sip, from, buf.get(..n).unwrap_or(&[])),
                Err(e) => tracing::debug!(%device, %e, "SIP receive error"),
            },
            Some((port, from, bytes)) = rtp_rx.recv() => {
                trunk.handle_datagram(clock.now(), Socket::Rtp(port), from, &bytes);
            }
            () = pacer.until(wake) => trunk.handle_timeout(clock.now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{getsockopt, sockopt};

    #[tokio::test]
    async fn the_sip_socket_gets_room_for_a_burst_of_answers() {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let before = getsockopt(&sock, sockopt::RcvBuf).unwrap();
        widen_receive_buffer(&sock);
        let got = getsockopt(&sock, sockopt::RcvBuf).unwrap();
        // Without CAP_NET_ADMIN the kernel grants up to net.core.rmem_max (and reports
        // twice what it grants); with it, all that was asked.
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        assert!(got >= before, "{got} < {before}");
        assert!(
            got >= 2 * SIP_RECV_BUFFER.min(rmem_max),
            "{got} for {SIP_RECV_BUFFER} with rmem_max {rmem_max}"
        );
    }
}
