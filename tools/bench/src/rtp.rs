//! `tocsin-bench rtp`: the REAL loudspeaker driver (`tocsin_speaker::io::spawn_speaker`,
//! with a `tocsin_voice::Speech` renderer) streaming to UDP sockets on 127.0.0.1 that the
//! benchmark reads and timestamps, on the wall clock.
//!
//! - Pacing: one programme played on N groups at once (N RTP streams from one driver
//!   task on a single-threaded runtime, i.e. one core); every packet's arrival is compared
//!   with its schedule (its RTP timestamp from the stream's earliest-arriving packet), and
//!   the largest N with every packet within 2 ms is the figure.
//! - Latency: from handing the driver the warning until its first RTP packet arrives,
//!   with the prompt already synthesised (cached) and with synthesis by espeak-ng.
//!
//! The receiving side runs on its own thread and runtime, so the driver's core is its own.
//! Each packet is timed twice: when the kernel queued it on the receiving socket
//! (`SO_TIMESTAMPNS`, the `arrival_late_*` figures: the sender's pacing alone) and when the
//! benchmark's receiver thread read it (the `late_*` figures, which on a shared 2-core
//! machine also include that thread's own scheduling).

use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId};
use tocsin_speaker::config::{GroupConfig, SpeakerConfig};
use tocsin_speaker::io::{Renderer, spawn_speaker, spawn_speaker_with_reports};
use tocsin_speaker::proto::BROADCAST_GROUP;
use tocsin_voice::{Speech, SpeechConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::pauses::{self, Pauses, Probe};

/// Options of the RTP benchmark.
#[derive(Debug, clap::Args)]
pub struct RtpArgs {
    /// Concurrent stream counts to try, in order (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "125,250,500,750")]
    pub streams: Vec<usize>,
    /// Lateness a packet may have, ms.
    #[arg(long, default_value_t = 2.0)]
    pub within_ms: f64,
    /// Timed runs of each latency figure.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// The wall clock: what a benchmark measures.
#[allow(
    clippy::disallowed_methods,
    reason = "a benchmark binary reads the wall clock"
)]
pub(crate) fn wall() -> Instant {
    Instant::now()
}

/// A packet's arrival, and its arrival minus its media time, µs.
type Arrival = (i64, i64);

/// Whether every run of a stream count kept every packet in time: as read, by kernel
/// time, and the driver's part (`None`: no probe).
type Kept = (bool, bool, Option<bool>);

/// Packet arrivals of many RTP streams, to check them against their schedules.
#[derive(Debug, Default)]
pub(crate) struct Pacing {
    /// Per stream (receiver key, SSRC): first RTP timestamp, and each packet's arrival
    /// and its arrival minus its media time, µs on the stream's clock.
    streams: HashMap<(u64, u32), (u32, Vec<Arrival>)>,
}

impl Pacing {
    /// A packet of stream (`key`, its SSRC) arrived at `at`; false when it is not RTP.
    pub(crate) fn record(&mut self, key: u64, epoch: Instant, at: Instant, bytes: &[u8]) -> bool {
        let arrival = i64::try_from(at.saturating_duration_since(epoch).as_micros()).unwrap_or(0);
        self.record_us(key, arrival, bytes)
    }

    /// [`Pacing::record`] with the arrival in µs on any clock (the same for the stream).
    pub(crate) fn record_us(&mut self, key: u64, arrival: i64, bytes: &[u8]) -> bool {
        let (Some(ts), Some(ssrc)) = (
            bytes.get(4..8).and_then(|b| b.try_into().ok()),
            bytes.get(8..12).and_then(|b| b.try_into().ok()),
        ) else {
            return false;
        };
        // Version 2, and not RTCP (packet types 192–223 where RTP has marker + type).
        if bytes.first().is_none_or(|b| b >> 6 != 2)
            || bytes.get(1).is_none_or(|t| (192..=223).contains(t))
        {
            return false;
        }
        let (ts, ssrc) = (u32::from_be_bytes(ts), u32::from_be_bytes(ssrc));
        let s = self
            .streams
            .entry((key, ssrc))
            .or_insert_with(|| (ts, Vec::new()));
        // 8 kHz G.711: 125 µs per sample.
        let media = i64::from(ts.wrapping_sub(s.0) as i32) * 125;
        s.1.push((arrival, arrival - media));
        true
    }

    /// Lateness of every packet against its stream's schedule, µs, with the schedule set
    /// by the stream's earliest-arriving packet (so a late first packet does not hide the
    /// others' lateness).
    pub(crate) fn summary(&self, within_us: i64) -> PacingSummary {
        self.summary_by(within_us, |_, late| late)
    }

    /// [`Pacing::summary`] with each packet's lateness first passed through `charge`
    /// (arrival µs, lateness µs → the lateness that counts).
    pub(crate) fn summary_by(
        &self,
        within_us: i64,
        charge: impl Fn(i64, i64) -> i64,
    ) -> PacingSummary {
        let mut late: Vec<i64> = Vec::new();
        for (_, packets) in self.streams.values() {
            let base = packets.iter().map(|p| p.1).min().unwrap_or(0);
            late.extend(packets.iter().map(|&(at, o)| charge(at, o - base)));
        }
        late.sort_unstable();
        let pick = |q: f64| {
            let i = ((late.len() as f64) * q).ceil() as usize;
            late.get(i.saturating_sub(1)).copied().unwrap_or(0) as f64 / 1e3
        };
        PacingSummary {
            streams: self.streams.len(),
            packets: late.len(),
            max_late_ms: late.last().copied().unwrap_or(0) as f64 / 1e3,
            p99_late_ms: pick(0.99),
            over: late.iter().filter(|l| **l > within_us).count(),
        }
    }
}

/// What [`Pacing::summary`] found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PacingSummary {
    pub streams: usize,
    pub packets: usize,
    pub max_late_ms: f64,
    pub p99_late_ms: f64,
    /// Packets later than the limit.
    pub over: usize,
}

/// A datagram read, with when the kernel queued it on the socket.
pub(crate) struct Stamped {
    pub len: usize,
    pub from: Option<SocketAddr>,
    /// Kernel receive time, µs of CLOCK_REALTIME; `None` if the kernel gave none.
    pub kernel_us: Option<i64>,
}

/// Asks the kernel to time each datagram as it reaches `s` (`SO_TIMESTAMPNS`).
pub(crate) fn stamp_arrivals(s: &UdpSocket) -> std::io::Result<()> {
    nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
        .map_err(std::io::Error::from)
}

/// Reads one datagram with its kernel receive time (see [`stamp_arrivals`]).
pub(crate) async fn recv_stamped(s: &UdpSocket, buf: &mut [u8]) -> std::io::Result<Stamped> {
    s.async_io(tokio::io::Interest::READABLE, || recv_once(s, buf))
        .await
}

/// [`recv_stamped`] without waiting: `WouldBlock` when nothing is queued.
pub(crate) fn try_recv_stamped(s: &UdpSocket, buf: &mut [u8]) -> std::io::Result<Stamped> {
    s.try_io(tokio::io::Interest::READABLE, || recv_once(s, buf))
}

fn recv_once(s: &UdpSocket, buf: &mut [u8]) -> std::io::Result<Stamped> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg};
    use std::os::fd::AsRawFd;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let msg =
        recvmsg::<SockaddrStorage>(s.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
            .map_err(std::io::Error::from)?;
    let mut kernel_us = None;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmTimestampns(ts) = c {
            kernel_us = Some(ts.tv_sec() * 1_000_000 + ts.tv_nsec() / 1_000);
        }
    }
    let from = msg
        .address
        .and_then(|a| a.as_sockaddr_in().map(|v4| SocketAddr::V4((*v4).into())));
    Ok(Stamped {
        len: msg.bytes,
        from,
        kernel_us,
    })
}

/// Packet timings of a run: as the kernel queued them, and as the benchmark read them.
#[derive(Debug, Default)]
pub(crate) struct Timings {
    /// By kernel receive time.
    pub arrival: Pacing,
    /// By when the benchmark's thread read them.
    pub read: Pacing,
}

impl Timings {
    /// A datagram read at `at` (kernel time `d.kernel_us`); false when it is not RTP.
    pub(crate) fn record(
        &mut self,
        key: u64,
        epoch: Instant,
        at: Instant,
        d: &Stamped,
        bytes: &[u8],
    ) -> bool {
        if let Some(k) = d.kernel_us {
            self.arrival.record_us(key, k, bytes);
        }
        self.read.record(key, epoch, at, bytes)
    }

    fn extend(&mut self, other: Timings) {
        self.arrival.streams.extend(other.arrival.streams);
        self.read.streams.extend(other.read.streams);
    }
}

/// Receivers: `n` UDP sockets on 127.0.0.1 read on their own thread.
struct Tap {
    addrs: Vec<SocketAddr>,
    /// The arrival of each stream's first packet.
    firsts: mpsc::UnboundedReceiver<Instant>,
    stop: CancellationToken,
    join: std::thread::JoinHandle<Timings>,
}

fn spawn_tap(n: usize) -> Result<Tap> {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (first_tx, firsts) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let stop2 = stop.clone();
    let join = std::thread::spawn(move || {
        // Off the driver's core (see `streams`), where the machine has a second one.
        if pauses::cores() > 1 {
            let _ = pauses::pin_to(pauses::cores() - 1);
        }
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(_) => return Timings::default(),
        };
        rt.block_on(async move {
            let mut socks = Vec::new();
            for _ in 0..n {
                let bound = async {
                    let s = UdpSocket::bind("127.0.0.1:0").await?;
                    stamp_arrivals(&s)?;
                    std::io::Result::Ok(s)
                };
                match bound.await {
                    Ok(s) => socks.push(s),
                    Err(e) => {
                        let _ = addr_tx.send(Err(e.to_string()));
                        return Timings::default();
                    }
                }
            }
            let addrs: Vec<SocketAddr> = socks.iter().filter_map(|s| s.local_addr().ok()).collect();
            let _ = addr_tx.send(Ok(addrs));
            let epoch = wall();
            let mut tasks = Vec::new();
            for (i, s) in socks.into_iter().enumerate() {
                let (stop, first_tx) = (stop2.clone(), first_tx.clone());
                tasks.push(tokio::spawn(async move {
                    let mut p = Timings::default();
                    let mut buf = vec![0u8; 2048];
                    let mut seen = false;
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => {
                                // What already arrived counts (its time is the kernel's).
                                while let Ok(d) = try_recv_stamped(&s, &mut buf) {
                                    p.record(i as u64, epoch, wall(), &d, buf.get(..d.len).unwrap_or(&[]));
                                }
                                return p;
                            }
                            r = recv_stamped(&s, &mut buf) => if let Ok(d) = r {
                                let at = wall();
                                if p.record(i as u64, epoch, at, &d, buf.get(..d.len).unwrap_or(&[])) && !seen {
                                    seen = true;
                                    let _ = first_tx.send(at);
                                }
                            }
                        }
                    }
                }));
            }
            let mut all = Timings::default();
            for t in tasks {
                if let Ok(p) = t.await {
                    all.extend(p);
                }
            }
            all
        })
    });
    let addrs = addr_rx
        .recv()
        .context("the receiver thread ended")?
        .map_err(|e| anyhow::anyhow!("binding receivers: {e}"))?;
    Ok(Tap {
        addrs,
        firsts,
        stop,
        join,
    })
}

fn warning(attempt: u64, group: &str, text: &str) -> DriverCommand {
    DriverCommand::Send(Outbound {
        attempt: AttemptId(attempt),
        to: Address::Speaker(group.into()),
        text: text.to_owned(),
        want_report: false,
    })
}

fn driver_cfg(addrs: &[SocketAddr]) -> Result<SpeakerConfig> {
    let first = *addrs.first().context("no receivers")?;
    let mut cfg = SpeakerConfig::new(first);
    cfg.groups = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| GroupConfig {
            name: format!("g{i}"),
            rtp: *a,
            rtcp: None,
            speakers: Vec::new(),
        })
        .collect();
    cfg.bind = "127.0.0.1:0".parse()?;
    cfg.rtcp_bind = "127.0.0.1:0".parse()?;
    cfg.repeat = 1;
    cfg.report_grace_secs = 1;
    cfg.validate()?;
    Ok(cfg)
}

/// Waits for the driver's sockets, then for the attempt's outcome.
async fn wait_for(
    ev: &mut mpsc::Receiver<DeviceEvent>,
    patience: Duration,
    pred: impl Fn(&DriverEvent) -> bool,
) -> Result<DriverEvent> {
    let wait = async {
        while let Some(e) = ev.recv().await {
            if pred(&e.event) {
                return Some(e.event);
            }
        }
        None
    };
    tokio::time::timeout(patience, wait)
        .await
        .ok()
        .flatten()
        .context("the speaker driver did not report in time")
}

/// What one level of concurrent streams measured.
struct Level {
    /// By when the benchmark read each packet.
    read: PacingSummary,
    /// By kernel receive time.
    arrival: PacingSummary,
    /// By kernel receive time, each packet's lateness less what machine pauses of the
    /// driver's core cover; with the probe's findings. `Err`: no probe, and why.
    driver: std::result::Result<(PacingSummary, Pauses), String>,
}

/// The driver's core: the thread running [`streams`] (its runtime runs the driver task).
const DRIVER_CORE: usize = 0;

/// One programme on `n` groups at once; the pacing of every packet.
async fn streams(
    renderer: Arc<dyn Renderer>,
    n: usize,
    text: &str,
    within_ms: f64,
) -> Result<Level> {
    // The driver on core 0, the receivers on the last core, a pause probe on each: a
    // packet's lateness can then be split between the driver and the machine.
    let probe = if pauses::cores() > 1 {
        pauses::pin_to(DRIVER_CORE)
            .and_then(|()| Probe::start(&(0..pauses::cores()).collect::<Vec<_>>()))
            .map_err(|e| format!("{e:#}"))
    } else {
        Err("one core: the driver and the probe would share it".to_owned())
    };
    let tap = spawn_tap(n)?;
    let cancel = CancellationToken::new();
    // Roomy: one Sent per group, and nobody reads the events while the streams play.
    let (tx, mut ev) = mpsc::channel(4 * n + 64);
    let (rep_tx, mut reports) = mpsc::channel(n.max(1));
    let driver = spawn_speaker_with_reports(
        DeviceId::from("speakers"),
        driver_cfg(&tap.addrs)?,
        renderer,
        tx,
        Some(rep_tx),
        cancel.clone(),
    );
    wait_for(
        &mut ev,
        Duration::from_secs(20),
        |e| matches!(e, DriverEvent::Health(h) if h.up),
    )
    .await?;
    driver
        .commands
        .send(warning(1, BROADCAST_GROUP, text))
        .await?;
    // Each group's stream ends with its reception report (none from these receivers:
    // they send no RTCP, so it comes after the grace period).
    let mut ended = 0;
    let r = loop {
        match tokio::time::timeout(Duration::from_secs(120), reports.recv()).await {
            Ok(Some(_)) => {
                ended += 1;
                if ended == n {
                    break Ok(());
                }
            }
            _ => break Err(anyhow::anyhow!("{ended} of {n} streams ended in time")),
        }
    };
    cancel.cancel();
    tap.stop.cancel();
    let pacing = tap
        .join
        .join()
        .map_err(|_| anyhow::anyhow!("receiver thread panicked"))?;
    let seen = probe.and_then(|p| p.stop().map_err(|e| format!("{e:#}")));
    r?;
    let within = (within_ms * 1e3) as i64;
    let driver = seen.map(|seen| {
        let charged = pacing.arrival.summary_by(within, |at, late| {
            if late > 0 {
                seen.unexplained_us(DRIVER_CORE, at, late)
            } else {
                late
            }
        });
        (charged, seen)
    });
    Ok(Level {
        read: pacing.read.summary(within),
        arrival: pacing.arrival.summary(within),
        driver,
    })
}

/// From the command to the first RTP packet on the wire, then the warning is cancelled.
async fn first_packet(renderer: Arc<dyn Renderer>, text: &str) -> Result<f64> {
    let mut tap = spawn_tap(1)?;
    let cancel = CancellationToken::new();
    let (tx, mut ev) = mpsc::channel(4096);
    let driver = spawn_speaker(
        DeviceId::from("speakers"),
        driver_cfg(&tap.addrs)?,
        renderer,
        tx,
        cancel.clone(),
    );
    wait_for(
        &mut ev,
        Duration::from_secs(20),
        |e| matches!(e, DriverEvent::Health(h) if h.up),
    )
    .await?;
    let t = wall();
    driver.commands.send(warning(1, "g0", text)).await?;
    let first = tokio::time::timeout(Duration::from_secs(60), tap.firsts.recv()).await;
    cancel.cancel();
    tap.stop.cancel();
    let _ = tap.join.join();
    let first = first.ok().flatten().context("no RTP packet arrived")?;
    Ok(first.saturating_duration_since(t).as_secs_f64() * 1e3)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

const TEXT: &str = "山洪红色预警。沿河各村立即组织人员向高处转移，切勿涉水过河。";

/// Runs the benchmark and prints its figures.
pub fn run(args: &RtpArgs) -> Result<()> {
    if args.streams.is_empty() || args.streams.contains(&0) {
        bail!("--streams needs counts of at least 1");
    }
    // One core for the driver: a single-threaded runtime (its render jobs go to the
    // blocking pool, as in the daemon).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let speech = Speech::from_config(&SpeechConfig::default(), std::path::Path::new("."))?;
    let synth = speech.has_synthesizer();
    let renderer: Arc<dyn Renderer> = Arc::new(speech);
    // The machine's cores, counted before `streams` pins threads to them.
    let _ = pauses::cores();
    rt.block_on(async {
        // Latency with synthesis: a text never spoken before, each run.
        let villages = [
            "东村", "西村", "南村", "北村", "上村", "下村", "前村", "后村",
        ];
        let mut synth_ms = Vec::new();
        if synth {
            for i in 0..args.runs.max(1) {
                let v = villages.get(i % villages.len()).copied().unwrap_or("村");
                let text = format!("{v}{i}号山洪红色预警。{v}沿河群众立即转移。");
                synth_ms.push(first_packet(renderer.clone(), &text).await?);
            }
        }
        // Latency with the prompt cached: the same text as before (rendered once first).
        first_packet(renderer.clone(), TEXT).await?;
        let mut cached_ms = Vec::new();
        for _ in 0..args.runs.max(1) {
            cached_ms.push(first_packet(renderer.clone(), TEXT).await?);
        }
        println!("rtp.first_packet.cached.median {:.1} ms", median(cached_ms));
        if synth {
            println!(
                "rtp.first_packet.synthesis.median {:.1} ms",
                median(synth_ms)
            );
        } else {
            println!("rtp.first_packet.synthesis.median unavailable ms");
        }
        // Per stream count, whether every run of it kept every packet within the limit
        // (read, kernel time, the driver's part; `None`: no probe).
        let mut kept: std::collections::BTreeMap<usize, Kept> = std::collections::BTreeMap::new();
        let within_us = (args.within_ms * 1e3) as i64;
        for &n in &args.streams {
            let level = streams(renderer.clone(), n, TEXT, args.within_ms).await?;
            let (s, k) = (level.read, level.arrival);
            println!("rtp.streams{n}.streams {} count", s.streams);
            println!("rtp.streams{n}.packets {} count", s.packets);
            println!("rtp.streams{n}.late_max {:.2} ms", s.max_late_ms);
            println!("rtp.streams{n}.late_p99 {:.2} ms", s.p99_late_ms);
            println!("rtp.streams{n}.late_over_limit {} count", s.over);
            println!("rtp.streams{n}.arrival_packets {} count", k.packets);
            println!("rtp.streams{n}.arrival_late_max {:.2} ms", k.max_late_ms);
            println!("rtp.streams{n}.arrival_late_p99 {:.2} ms", k.p99_late_ms);
            println!("rtp.streams{n}.arrival_late_over_limit {} count", k.over);
            let all = s.streams == n && k.streams == n && k.packets == s.packets;
            let this = (
                all && s.over == 0,
                all && k.over == 0,
                level.driver.as_ref().ok().map(|(d, _)| all && d.over == 0),
            );
            let k = kept.entry(n).or_insert(this);
            *k = (
                k.0 && this.0,
                k.1 && this.1,
                k.2.zip(this.2).map(|(a, b)| a && b),
            );
            match &level.driver {
                Ok((d, seen)) => {
                    for c in &seen.cores {
                        let core = c.core;
                        println!("rtp.streams{n}.machine.core{core}.wakes {} count", c.wakes);
                        println!(
                            "rtp.streams{n}.machine.core{core}.pauses_over_limit {} count",
                            c.over(within_us)
                        );
                        println!(
                            "rtp.streams{n}.machine.core{core}.pause_max {:.2} ms",
                            c.max_us as f64 / 1e3
                        );
                    }
                    println!("rtp.streams{n}.driver_late_max {:.2} ms", d.max_late_ms);
                    println!("rtp.streams{n}.driver_late_over_limit {} count", d.over);
                }
                Err(why) => {
                    println!("rtp.streams{n}.driver_late_over_limit unavailable count ({why})");
                }
            }
        }
        // The largest count that, with every smaller one tried, kept every packet in time
        // in every run.
        let best = |ok: &dyn Fn(&Kept) -> bool| {
            kept.iter()
                .take_while(|(_, k)| ok(k))
                .map(|(n, _)| *n)
                .last()
                .unwrap_or(0)
        };
        println!("rtp.sustained_streams {} count", best(&|k| k.0));
        println!("rtp.sustained_streams_arrival {} count", best(&|k| k.1));
        if kept.values().all(|k| k.2.is_some()) {
            println!(
                "rtp.sustained_streams_driver {} count",
                best(&|k| k.2 == Some(true))
            );
        } else {
            println!("rtp.sustained_streams_driver unavailable count");
        }
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(ts: u32, ssrc: u32) -> Vec<u8> {
        let mut b = vec![0x80, 8, 0, 1];
        b.extend_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(&ssrc.to_be_bytes());
        b.extend_from_slice(&[0xd5; 160]);
        b
    }

    #[test]
    fn lateness_is_measured_from_the_earliest_packet_of_each_stream() {
        let epoch = wall();
        let at = |ms: u64| epoch + Duration::from_millis(ms);
        let mut p = Pacing::default();
        // Stream A: the first packet 3 ms late, then on time, then 1 ms late.
        assert!(p.record(0, epoch, at(3), &rtp(1000, 7)));
        assert!(p.record(0, epoch, at(20), &rtp(1160, 7)));
        assert!(p.record(0, epoch, at(41), &rtp(1320, 7)));
        // Stream B, same socket, another SSRC: on time.
        assert!(p.record(0, epoch, at(100), &rtp(5, 9)));
        assert!(p.record(0, epoch, at(120), &rtp(165, 9)));
        assert!(!p.record(0, epoch, at(1), b"junk"));
        // An RTCP sender report landing on the same socket is not a frame.
        let mut sr = rtp(1, 7);
        sr[1] = 200;
        assert!(!p.record(0, epoch, at(2), &sr));
        let s = p.summary(2_000);
        assert_eq!((s.streams, s.packets), (2, 5));
        assert_eq!(s.max_late_ms, 3.0);
        assert_eq!(s.over, 1);
    }

    #[test]
    fn a_machine_pause_is_not_charged_to_the_driver() {
        let mut p = Pacing::default();
        // One stream, 20 ms packets; the fourth (due at 60 ms) arrives at 69 ms, the
        // fifth (due at 80 ms) at 83 ms.
        for (i, at_ms) in [0, 20, 40, 69, 83].into_iter().enumerate() {
            assert!(p.record_us(0, at_ms * 1_000, &rtp(160 * i as u32, 1)));
        }
        // The driver's core stopped from 59 to 68 ms.
        let seen = Pauses {
            cores: vec![pauses::CoreProbe {
                core: 0,
                wakes: 90,
                pauses: vec![pauses::Pause {
                    from_us: 59_000,
                    to_us: 68_000,
                }],
                max_us: 9_000,
            }],
        };
        let raw = p.summary(2_000);
        assert_eq!((raw.over, raw.max_late_ms), (2, 9.0));
        let driver = p.summary_by(2_000, |at, late| {
            if late > 0 {
                seen.unexplained_us(0, at, late)
            } else {
                late
            }
        });
        // 8 of the fourth's 9 ms were the pause; the fifth's 3 ms were not.
        assert_eq!((driver.over, driver.max_late_ms), (1, 3.0));
    }

    #[test]
    fn the_tap_times_each_packet_by_kernel_arrival_and_by_read() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut tap = spawn_tap(2).unwrap();
            let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            for (i, to) in tap.addrs.iter().enumerate() {
                for n in 0..5u32 {
                    tx.send_to(&rtp(160 * n, i as u32), to).await.unwrap();
                }
            }
            tx.send_to(b"junk", tap.addrs[0]).await.unwrap();
            // Each socket's first packet was seen; the rest, already queued on loopback,
            // are drained when the tap stops.
            for _ in 0..2 {
                tokio::time::timeout(Duration::from_secs(5), tap.firsts.recv())
                    .await
                    .unwrap()
                    .unwrap();
            }
            tap.stop.cancel();
            let t = tap.join.join().unwrap();
            let (read, arrival) = (t.read.summary(2_000), t.arrival.summary(2_000));
            assert_eq!((read.streams, read.packets), (2, 10));
            assert_eq!((arrival.streams, arrival.packets), (2, 10));
        });
    }
}
