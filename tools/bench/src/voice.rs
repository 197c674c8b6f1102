//! `tocsin-bench voice`: the REAL SIP trunk driver (`tocsin_sip::io::spawn_sip`, on a
//! single-threaded runtime: one core) calling the REAL simulated far end
//! (`tocsin_sip::sim::FarEnd`) over UDP on 127.0.0.1, on the wall clock.
//!
//! The far end runs on its own thread and runtime, in the same loop as
//! `tocsin_sip::udp::spawn_far_end`, except that every RTP datagram is timestamped as it
//! is read, before the far end handles it:
//!
//! - Setup: calls one at a time, answered at once (the phone hangs up 300 ms later); from handing the driver the attempt to
//!   the call's first RTP packet at the far end (INVITE, 200, ACK, first frame).
//! - Load: N calls at once, each playing the prompt in real time; every frame's arrival
//!   is compared with its schedule (its RTP timestamp from the call's earliest-arriving
//!   frame). The largest N with no frame more than 5 ms late is the figure. The far
//!   end's own report (`SimReport::max_late_ms`, against each call's first frame) is
//!   printed beside it. Each frame is timed when the far end's thread read it (`late_*`)
//!   and when the kernel queued it on the socket (`arrival_late_*`: the driver's pacing
//!   alone, without the far end's own scheduling).
//! - Outcomes: every call of a load level must end with `Delivered` or `Failed`. The
//!   benchmark waits for them up to the driver's own bound
//!   (`SipConfig::outcome_bound`, times the waves of calls queued behind
//!   `concurrent_calls`), so a slow outcome is told apart from a missing one; a level
//!   is sustained only when every call got its outcome within the prompt + 30 s.

use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId, PhoneNumber};
use tocsin_sip::config::SipConfig;
use tocsin_sip::io::{Clock, spawn_sip};
use tocsin_sip::sim::{Behaviour, FarEnd, SimConfig, SimReport, SimSocket};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::rtp::{PacingSummary, Timings, recv_stamped, stamp_arrivals, wall};

/// Options of the voice benchmark.
#[derive(Debug, clap::Args)]
pub struct VoiceArgs {
    /// Concurrent call counts to try, in order (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "50,100,200,300")]
    pub calls: Vec<usize>,
    /// Length of the prompt each call plays, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub prompt_secs: f64,
    /// Lateness a frame may have, ms.
    #[arg(long, default_value_t = 5.0)]
    pub within_ms: f64,
    /// Calls made one at a time for the setup latency.
    #[arg(long, default_value_t = 20)]
    pub setup_calls: usize,
}

/// The far end on its own thread: what it saw, when the run is over.
struct FarEndRun {
    sip: SocketAddr,
    /// Arrival of each call's first RTP frame.
    firsts: mpsc::UnboundedReceiver<Instant>,
    /// One report per finished call.
    reports: mpsc::UnboundedReceiver<SimReport>,
    stop: CancellationToken,
    join: std::thread::JoinHandle<Timings>,
}

fn spawn_far_end(cfg: SimConfig) -> Result<FarEndRun> {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (first_tx, firsts) = mpsc::unbounded_channel();
    let (report_tx, reports) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let stop2 = stop.clone();
    let join = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return Timings::default();
        };
        rt.block_on(async move {
            let mut pacing = Timings::default();
            let bound = async {
                let sip = UdpSocket::bind("127.0.0.1:0").await?;
                let rtp = UdpSocket::bind("127.0.0.1:0").await?;
                stamp_arrivals(&rtp)?;
                std::io::Result::Ok((sip, rtp))
            }
            .await;
            let (sip, rtp) = match bound {
                Ok(s) => s,
                Err(e) => {
                    let _ = addr_tx.send(Err(e.to_string()));
                    return pacing;
                }
            };
            let (Ok(sip_addr), Ok(rtp_addr)) = (sip.local_addr(), rtp.local_addr()) else {
                return pacing;
            };
            let _ = addr_tx.send(Ok(sip_addr));
            let clock = Clock::start();
            let epoch = wall();
            let mut far = FarEnd::new(cfg, rtp_addr);
            let mut seen = std::collections::HashSet::new();
            let (mut sbuf, mut rbuf) = (vec![0u8; 65_535], vec![0u8; 2048]);
            loop {
                while let Some((sock, to, bytes)) = far.poll_transmit() {
                    let s = match sock {
                        SimSocket::Sip => &sip,
                        SimSocket::Rtp => &rtp,
                    };
                    let _ = s.send_to(&bytes, to).await;
                }
                while let Some(r) = far.poll_report() {
                    let _ = report_tx.send(r);
                }
                let wake = far.poll_timeout().map(|t| clock.instant(t));
                tokio::select! {
                    () = stop2.cancelled() => return pacing,
                    r = sip.recv_from(&mut sbuf) => if let Ok((n, from)) = r {
                        far.handle_datagram(clock.now(), SimSocket::Sip, from, sbuf.get(..n).unwrap_or(&[]));
                    },
                    r = recv_stamped(&rtp, &mut rbuf) => if let Ok(d) = r
                        && let Some(from) = d.from
                    {
                        let at = wall();
                        let bytes = rbuf.get(..d.len).unwrap_or(&[]);
                        let key = u64::from(from.port());
                        // Key presses (telephone-event) are not frames of the prompt.
                        if bytes.get(1).is_some_and(|pt| pt & 0x7f < 96)
                            && pacing.record(key, epoch, at, &d, bytes)
                        {
                            let ssrc = bytes.get(8..12).map(<[u8]>::to_vec);
                            if seen.insert((key, ssrc)) {
                                let _ = first_tx.send(at);
                            }
                        }
                        far.handle_datagram(clock.now(), SimSocket::Rtp, from, bytes);
                    },
                    () = sleep_until(wake) => far.handle_timeout(clock.now()),
                }
            }
        })
    });
    let sip = addr_rx
        .recv()
        .context("the far-end thread ended")?
        .map_err(|e| anyhow::anyhow!("binding the far end: {e}"))?;
    Ok(FarEndRun {
        sip,
        firsts,
        reports,
        stop,
        join,
    })
}

#[allow(
    clippy::disallowed_methods,
    reason = "the benchmark's far end sleeps until its state machine's deadline"
)]
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn call(attempt: u64) -> Result<DriverCommand> {
    let to = PhoneNumber::parse(&format!("+86138{:08}", attempt % 100_000_000), "86")?;
    Ok(DriverCommand::Send(Outbound {
        attempt: AttemptId(attempt),
        to: Address::Phone(to),
        text: "山洪红色预警，请立即转移。".into(),
        want_report: false,
    }))
}

fn trunk(far: &FarEndRun, calls: usize, prompt_secs: f64) -> SipConfig {
    let mut cfg = SipConfig::new(far.sip.to_string());
    cfg.bind = "127.0.0.1:0".into();
    cfg.rtp_port_base = 0;
    cfg.concurrent_calls = calls;
    cfg.prompt_secs = prompt_secs;
    cfg.digit_wait_secs = 1;
    cfg.queue_limit = calls.max(1);
    cfg
}

async fn outcome(ev: &mut mpsc::Receiver<DeviceEvent>, patience: Duration) -> Option<u64> {
    let wait = async {
        while let Some(e) = ev.recv().await {
            if let DriverEvent::Delivered { attempt, .. } | DriverEvent::Failed { attempt, .. } =
                e.event
            {
                return Some(attempt.0);
            }
        }
        None
    };
    tokio::time::timeout(patience, wait).await.ok().flatten()
}

/// Calls one at a time, answered at once: command to first RTP frame, ms.
async fn setup(n: usize) -> Result<Vec<f64>> {
    let sim = SimConfig {
        default: Behaviour {
            answer_after: Some(Duration::ZERO),
            // No key press: the gateway would answer it with a second stream, whose
            // first frame could be taken for the next call's.
            press: None,
            hangup_after: Some(Duration::from_millis(300)),
            ..Behaviour::default()
        },
        ..SimConfig::default()
    };
    let mut far = spawn_far_end(sim)?;
    let cancel = CancellationToken::new();
    let (tx, mut ev) = mpsc::channel(4096);
    let driver = spawn_sip(
        DeviceId::from("trunk"),
        trunk(&far, 1, 1.0),
        tx,
        cancel.clone(),
    );
    let mut out = Vec::new();
    let mut result = Ok(());
    for a in 1..=n as u64 {
        // A stream the previous call started late (after its key press) is not this one's.
        while far.firsts.try_recv().is_ok() {}
        let t = wall();
        driver.commands.send(call(a)?).await?;
        match tokio::time::timeout(Duration::from_secs(10), far.firsts.recv()).await {
            Ok(Some(first)) => out.push(first.saturating_duration_since(t).as_secs_f64() * 1e3),
            _ => {
                result = Err(anyhow::anyhow!(
                    "call {a}: no RTP frame reached the far end"
                ));
                break;
            }
        }
        if outcome(&mut ev, Duration::from_secs(20)).await.is_none() {
            result = Err(anyhow::anyhow!("call {a} had no outcome"));
            break;
        }
    }
    cancel.cancel();
    far.stop.cancel();
    let _ = far.join.join();
    result.map(|()| out)
}

/// What one load level found.
struct Load {
    pacing: PacingSummary,
    /// By kernel receive time.
    arrival: PacingSummary,
    reports: Vec<SimReport>,
    /// Outcomes (`Delivered` or `Failed`) within the driver's bound.
    outcomes: Vec<Outcome>,
    /// How long the benchmark waited at most for the last outcome.
    bound: Duration,
}

/// The terminal event of one call, as the benchmark saw it.
struct Outcome {
    /// Since the attempts were handed to the driver.
    after: Duration,
    delivered: bool,
    /// `Failed`'s reason (empty when delivered).
    reason: String,
}

/// `n` calls at once, each playing the prompt in real time.
async fn load(n: usize, prompt_secs: f64, within_ms: f64) -> Result<Load> {
    let sim = SimConfig {
        default: Behaviour {
            answer_after: Some(Duration::from_millis(100)),
            press: None,
            ..Behaviour::default()
        },
        ..SimConfig::default()
    };
    let mut far = spawn_far_end(sim)?;
    let cancel = CancellationToken::new();
    let (tx, mut ev) = mpsc::channel(8192);
    let cfg = trunk(&far, n, prompt_secs);
    // Every attempt the driver accepted ends within this (its documented bound per call
    // times the waves of calls that queue behind `concurrent_calls`): waiting any less
    // would count a slow outcome as a missing one.
    let waves = n.div_ceil(cfg.concurrent_calls.max(1)) as u32;
    let bound = cfg.outcome_bound() * waves + Duration::from_secs(5);
    let driver = spawn_sip(DeviceId::from("trunk"), cfg, tx, cancel.clone());
    let t0 = wall();
    for a in 1..=n as u64 {
        driver.commands.send(call(a)?).await?;
    }
    let mut outcomes = Vec::new();
    let deadline = tokio::time::Instant::from_std(t0 + bound);
    while outcomes.len() < n {
        let Ok(Some(e)) = tokio::time::timeout_at(deadline, ev.recv()).await else {
            break;
        };
        let (delivered, reason) = match e.event {
            DriverEvent::Delivered { .. } => (true, String::new()),
            DriverEvent::Failed { reason, .. } => (false, reason),
            _ => continue,
        };
        outcomes.push(Outcome {
            after: wall().saturating_duration_since(t0),
            delivered,
            reason,
        });
    }
    // The far end's reports come when it sees the BYE.
    let mut reports = Vec::new();
    while reports.len() < n {
        match tokio::time::timeout(Duration::from_secs(5), far.reports.recv()).await {
            Ok(Some(r)) => reports.push(r),
            _ => break,
        }
    }
    cancel.cancel();
    far.stop.cancel();
    let pacing = far
        .join
        .join()
        .map_err(|_| anyhow::anyhow!("far-end thread panicked"))?;
    let within = (within_ms * 1e3) as i64;
    Ok(Load {
        pacing: pacing.read.summary(within),
        arrival: pacing.arrival.summary(within),
        reports,
        outcomes,
        bound,
    })
}

fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64) * q).ceil() as usize;
    v.get(i.saturating_sub(1)).copied().unwrap_or(f64::NAN)
}

/// Runs the benchmark and prints its figures.
pub fn run(args: &VoiceArgs) -> Result<()> {
    if args.calls.is_empty() || args.calls.contains(&0) || args.setup_calls == 0 {
        bail!("--calls needs counts of at least 1, --setup-calls at least 1");
    }
    // One core for the driver: a single-threaded runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let s = setup(args.setup_calls).await?;
        println!(
            "voice.setup_to_first_rtp.median {:.2} ms",
            quantile(s.clone(), 0.5)
        );
        println!("voice.setup_to_first_rtp.max {:.2} ms", quantile(s, 1.0));
        let (mut sustained, mut sustained_arrival) = (0, 0);
        for &n in &args.calls {
            let l = load(n, args.prompt_secs, args.within_ms).await?;
            let answered = l.reports.iter().filter(|r| r.answered).count();
            let far_max = l.reports.iter().map(|r| r.max_late_ms).max().unwrap_or(0);
            let underruns: u64 = l.reports.iter().map(|r| r.underruns).sum();
            println!("voice.calls{n}.answered {answered} count");
            let patience = Duration::from_secs_f64(args.prompt_secs + 30.0);
            let delivered = l.outcomes.iter().filter(|o| o.delivered).count();
            let late = l.outcomes.iter().filter(|o| o.after > patience).count();
            let last = l.outcomes.iter().map(|o| o.after).max().unwrap_or_default();
            println!("voice.calls{n}.outcomes {} count", l.outcomes.len());
            println!("voice.calls{n}.delivered {delivered} count");
            println!(
                "voice.calls{n}.failed {} count",
                l.outcomes.len() - delivered
            );
            println!(
                "voice.calls{n}.no_outcome {} count",
                n.saturating_sub(l.outcomes.len())
            );
            println!("voice.calls{n}.outcome_after_patience {late} count");
            println!("voice.calls{n}.last_outcome {:.1} s", last.as_secs_f64());
            // Why calls failed, one line per distinct reason (call ids and times vary).
            let mut why = std::collections::BTreeMap::<String, usize>::new();
            for o in l.outcomes.iter().filter(|o| !o.delivered) {
                let head = o.reason.split(';').next().unwrap_or_default().to_owned();
                *why.entry(head).or_default() += 1;
            }
            for (reason, count) in why {
                eprintln!("voice.calls{n}: {count} failed: {reason}");
            }
            if l.outcomes.len() < n {
                eprintln!(
                    "voice.calls{n}: {} calls without an outcome after {:.0} s",
                    n - l.outcomes.len(),
                    l.bound.as_secs_f64()
                );
            }
            println!("voice.calls{n}.frames {} count", l.pacing.packets);
            println!("voice.calls{n}.late_max {:.2} ms", l.pacing.max_late_ms);
            println!("voice.calls{n}.late_p99 {:.2} ms", l.pacing.p99_late_ms);
            println!("voice.calls{n}.late_over_limit {} count", l.pacing.over);
            println!("voice.calls{n}.far_end_max_late {far_max} ms");
            println!("voice.calls{n}.far_end_underruns {underruns} count");
            let repeats: u32 = l.reports.iter().map(|r| r.final_retransmits).sum();
            println!("voice.calls{n}.far_end_answer_repeats {repeats} count");
            println!("voice.calls{n}.arrival_frames {} count", l.arrival.packets);
            println!(
                "voice.calls{n}.arrival_late_max {:.2} ms",
                l.arrival.max_late_ms
            );
            println!(
                "voice.calls{n}.arrival_late_p99 {:.2} ms",
                l.arrival.p99_late_ms
            );
            println!(
                "voice.calls{n}.arrival_late_over_limit {} count",
                l.arrival.over
            );
            let all_out = l.outcomes.len() == n && late == 0;
            if l.pacing.over == 0 && answered == n && l.pacing.streams == n && all_out {
                sustained = sustained.max(n);
            }
            if l.arrival.over == 0
                && answered == n
                && all_out
                && l.arrival.streams == n
                && l.arrival.packets == l.pacing.packets
            {
                sustained_arrival = sustained_arrival.max(n);
            }
        }
        println!("voice.sustained_calls {sustained} count");
        println!("voice.sustained_calls_arrival {sustained_arrival} count");
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_calls_are_set_up_and_paced_through_the_real_driver() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let s = setup(2).await.unwrap();
            assert_eq!(s.len(), 2);
            assert!(s.iter().all(|ms| *ms > 0.0 && *ms < 5_000.0), "{s:?}");
            let l = load(3, 0.5, 5.0).await.unwrap();
            assert_eq!(l.outcomes.len(), 3);
            assert!(l.outcomes.iter().all(|o| o.delivered));
            assert_eq!(l.pacing.streams, 3);
            // The kernel timed every frame the far end read.
            assert_eq!(l.arrival.streams, 3);
            assert_eq!(l.arrival.packets, l.pacing.packets);
            // Half a second of 20 ms frames per call.
            assert!(l.pacing.packets >= 3 * 20, "{:?}", l.pacing);
            assert!(l.reports.iter().all(|r| r.answered && r.frames >= 20));
        });
    }
}
