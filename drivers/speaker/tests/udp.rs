//! The real driver task (`io.rs`, tokio UDP) against simulated speakers on real loopback
//! sockets: a warning streamed, paced in real time, decoded to a WAV by the speaker,
//! evidence from its receiver reports; two groups at once (a broadcast) with a lossy
//! speaker and a silent one; a warning for one group that the other group's speaker never
//! hears; a cancel that stops the stream and plays the cancellation message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId};
use tocsin_speaker::config::{GroupConfig, SpeakerConfig};
use tocsin_speaker::io::{Renderer, spawn_speaker_with_reports};
use tocsin_speaker::proto::{BROADCAST_GROUP, RenderJob, StreamReport};
use tocsin_speaker::sim::{Faults, SimConfig};
use tocsin_speaker::udp::{SimSpeakerHandle, spawn_sim_speaker};
use tocsin_voice::{Pcm, tone, wav};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Generous bound for anything to happen; the tests never sleep, they wait for events.
const PATIENCE: Duration = Duration::from_secs(20);

/// Programmes as short tones so the real-time streams stay short: 600 ms for a warning,
/// 200 ms for a cancellation message (5 s for the text "long").
struct Tones;

impl Renderer for Tones {
    fn render(&self, job: &RenderJob) -> Result<(Pcm, Vec<String>), String> {
        Ok(match job {
            RenderJob::Programme { text, .. } if text.contains("long") => {
                (tone::steady(440.0, Duration::from_secs(5)), vec![])
            }
            RenderJob::Programme { .. } => {
                (tone::steady(440.0, Duration::from_millis(600)), vec![])
            }
            RenderJob::Cancellation { .. } => {
                (tone::steady(880.0, Duration::from_millis(200)), vec![])
            }
        })
    }
}

/// A warning for speaker group `group` (`*`: every group of the driver).
fn send(attempt: u64, group: &str, text: &str) -> DriverCommand {
    DriverCommand::Send(Outbound {
        attempt: AttemptId(attempt),
        to: Address::Speaker(group.to_owned()),
        text: text.to_owned(),
        want_report: false,
    })
}

fn group(name: &str, sim: &SimSpeakerHandle) -> GroupConfig {
    GroupConfig {
        name: name.to_owned(),
        rtp: sim.rtp,
        rtcp: None,
        speakers: vec![sim.rtcp.to_string()],
    }
}

#[allow(clippy::unwrap_used, reason = "fixed, valid addresses")]
fn driver_cfg(groups: Vec<GroupConfig>) -> SpeakerConfig {
    let mut cfg = SpeakerConfig::new(groups[0].rtp);
    cfg.groups = groups;
    cfg.bind = "127.0.0.1:0".parse().unwrap();
    cfg.rtcp_bind = "127.0.0.1:0".parse().unwrap();
    cfg.repeat = 1;
    cfg.report_grace_secs = 1;
    cfg.rtcp_interval_secs = 1;
    cfg.validate().unwrap();
    cfg
}

async fn next_matching(
    rx: &mut mpsc::Receiver<DeviceEvent>,
    what: &str,
    pred: impl Fn(&DriverEvent) -> bool,
) -> DriverEvent {
    let wait = async {
        while let Some(e) = rx.recv().await {
            if pred(&e.event) {
                return e.event;
            }
        }
        panic!("event channel closed while waiting for {what}");
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn next_report(rx: &mut mpsc::Receiver<StreamReport>) -> StreamReport {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("timed out waiting for a stream report")
        .expect("report channel closed")
}

fn sim_cfg(faults: Faults) -> SimConfig {
    SimConfig {
        report_interval_ms: 200,
        faults,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warning_streams_in_real_time_and_the_speaker_reports_it() {
    let cancel = CancellationToken::new();
    let dir = std::env::temp_dir().join(format!("tocsin-speaker-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wav_path = dir.join("heard.wav");
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sim = spawn_sim_speaker(
        any,
        sim_cfg(Faults::default()),
        1,
        Some(wav_path.clone()),
        cancel.clone(),
    )
    .await
    .unwrap();
    let (ev_tx, mut ev) = mpsc::channel(256);
    let (rep_tx, mut reps) = mpsc::channel(16);
    let driver = spawn_speaker_with_reports(
        DeviceId::from("speakers0"),
        driver_cfg(vec![group("village", &sim)]),
        Arc::new(Tones),
        ev_tx,
        Some(rep_tx),
        cancel.clone(),
    );
    next_matching(
        &mut ev,
        "sockets up",
        |e| matches!(e, DriverEvent::Health(h) if h.up),
    )
    .await;
    driver
        .commands
        .send(send(1, "village", "【红色预警】山洪"))
        .await
        .unwrap();
    next_matching(&mut ev, "sent", |e| {
        matches!(
            e,
            DriverEvent::Sent {
                attempt: AttemptId(1),
                ..
            }
        )
    })
    .await;
    #[allow(
        clippy::disallowed_methods,
        reason = "measures that the real stream is paced, not burst"
    )]
    let started = std::time::Instant::now();
    let delivered = next_matching(&mut ev, "delivered", |e| {
        matches!(e, DriverEvent::Delivered { .. })
    })
    .await;
    let DriverEvent::Delivered { attempt, evidence } = delivered else {
        unreachable!()
    };
    assert_eq!(attempt, AttemptId(1));
    assert!(
        evidence.contains(&format!("RTCP RR from speaker {}", sim.rtcp)),
        "{evidence}"
    );
    assert!(evidence.contains("on group village"), "{evidence}");

    let report = next_report(&mut reps).await;
    assert_eq!(report.attempt, Some(AttemptId(1)));
    assert_eq!(report.packets, 30);
    assert!(!report.stopped_early);
    assert_eq!(report.reached.len(), 1);
    assert!(report.no_evidence.is_empty());
    // 30 packets of 20 ms were paced over about 600 ms, not sent in a burst.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );

    let seen = sim.observed.lock().unwrap().streams.clone();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(
        (s.received, s.lost(), s.timestamp_errors, s.size_errors),
        (30, 0, 0, 0)
    );
    assert!(s.first_marker && s.ended);
    assert_eq!(s.payload_type, 8, "PCMA by default");
    // Decoded to a WAV: the tone, through A-law, 600 ms.
    let heard = wav::read(&std::fs::read(&wav_path).unwrap()).unwrap();
    assert_eq!((heard.rate, heard.samples.len()), (8000, 4800));
    let want = tone::steady(440.0, Duration::from_millis(600)).rms();
    assert!(
        (heard.rms() - want).abs() < 0.01,
        "{} vs {want}",
        heard.rms()
    );
    cancel.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_at_once_a_lossy_speaker_reports_and_a_silent_one_is_no_evidence() {
    let cancel = CancellationToken::new();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let lossy = spawn_sim_speaker(
        any,
        sim_cfg(Faults {
            loss: 0.2,
            reorder: 0.1,
            silent: false,
        }),
        7,
        None,
        cancel.clone(),
    )
    .await
    .unwrap();
    let silent = spawn_sim_speaker(
        any,
        sim_cfg(Faults {
            silent: true,
            ..Faults::default()
        }),
        8,
        None,
        cancel.clone(),
    )
    .await
    .unwrap();
    let (ev_tx, mut ev) = mpsc::channel(256);
    let (rep_tx, mut reps) = mpsc::channel(16);
    let driver = spawn_speaker_with_reports(
        DeviceId::from("speakers1"),
        driver_cfg(vec![group("east", &lossy), group("west", &silent)]),
        Arc::new(Tones),
        ev_tx,
        Some(rep_tx),
        cancel.clone(),
    );
    driver
        .commands
        .send(send(5, BROADCAST_GROUP, "【演练】【橙色预警】暴雨"))
        .await
        .unwrap();
    let mut got = [next_report(&mut reps).await, next_report(&mut reps).await];
    got.sort_by(|a, b| a.group.cmp(&b.group));
    assert_eq!(got[0].group, "east");
    assert_eq!(got[0].reached.len(), 1);
    assert!(
        got[0].reached[0].last.cumulative_lost > 0,
        "{:?}",
        got[0].reached[0]
    );
    assert_eq!(got[1].group, "west");
    assert!(got[1].reached.is_empty());
    assert_eq!(got[1].no_evidence, vec![silent.rtcp.to_string()]);
    assert_ne!(got[0].ssrc, got[1].ssrc);
    // One Delivered: from the east speaker only.
    let mut delivered = Vec::new();
    while let Ok(e) = ev.try_recv() {
        if let DriverEvent::Delivered { evidence, .. } = e.event {
            delivered.push(evidence);
        }
    }
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert!(delivered[0].contains("group east"));
    // Both speakers heard the whole stream, less the lossy one's losses.
    let quiet = silent.observed.lock().unwrap().streams[0].clone();
    assert_eq!(quiet.received, 30, "{quiet:?}");
    let l = lossy.observed.lock().unwrap().streams[0].clone();
    assert!(l.lost() > 0 && l.received < 30, "{l:?}");
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_the_stream_and_plays_the_cancellation_message() {
    let cancel = CancellationToken::new();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sim = spawn_sim_speaker(any, sim_cfg(Faults::default()), 3, None, cancel.clone())
        .await
        .unwrap();
    let (ev_tx, mut ev) = mpsc::channel(256);
    let (rep_tx, mut reps) = mpsc::channel(16);
    let driver = spawn_speaker_with_reports(
        DeviceId::from("speakers2"),
        driver_cfg(vec![group("village", &sim)]),
        Arc::new(Tones),
        ev_tx,
        Some(rep_tx),
        cancel.clone(),
    );
    driver
        .commands
        .send(send(9, "village", "【黄色预警】long"))
        .await
        .unwrap();
    next_matching(&mut ev, "delivered", |e| {
        matches!(e, DriverEvent::Delivered { .. })
    })
    .await;
    driver
        .commands
        .send(DriverCommand::Cancel(AttemptId(9)))
        .await
        .unwrap();
    let first = next_report(&mut reps).await;
    assert_eq!(first.attempt, Some(AttemptId(9)));
    assert!(first.stopped_early);
    assert!(first.packets < 250);
    let second = next_report(&mut reps).await;
    assert_eq!(second.attempt, None, "the cancellation message");
    assert_eq!(second.packets, 10);
    let streams = sim.observed.lock().unwrap().streams.clone();
    assert_eq!(streams.len(), 2);
    assert!(streams.iter().all(|s| s.ended && s.first_marker));
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warning_for_one_group_is_not_heard_on_the_other() {
    let cancel = CancellationToken::new();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let a = spawn_sim_speaker(any, sim_cfg(Faults::default()), 11, None, cancel.clone())
        .await
        .unwrap();
    let b = spawn_sim_speaker(any, sim_cfg(Faults::default()), 12, None, cancel.clone())
        .await
        .unwrap();
    let (ev_tx, mut ev) = mpsc::channel(256);
    let (rep_tx, mut reps) = mpsc::channel(16);
    let driver = spawn_speaker_with_reports(
        DeviceId::from("speakers-T05"),
        driver_cfg(vec![group("T05-V01", &a), group("T05-V02", &b)]),
        Arc::new(Tones),
        ev_tx,
        Some(rep_tx),
        cancel.clone(),
    );
    driver
        .commands
        .send(send(3, "T05-V01", "【红色预警】山洪"))
        .await
        .unwrap();
    // A group the driver does not serve fails at once, for good.
    driver
        .commands
        .send(send(4, "T05-V99", "【红色预警】山洪"))
        .await
        .unwrap();
    let failed = next_matching(&mut ev, "failed", |e| {
        matches!(e, DriverEvent::Failed { .. })
    })
    .await;
    assert!(
        matches!(&failed, DriverEvent::Failed { attempt: AttemptId(4), retryable: false, reason } if reason.contains("T05-V99")),
        "{failed:?}"
    );
    let report = next_report(&mut reps).await;
    assert_eq!(report.attempt, Some(AttemptId(3)));
    assert_eq!(report.group, "T05-V01");
    assert_eq!(report.packets, 30);
    assert_eq!(report.reached.len(), 1);
    let heard_a = a.observed.lock().unwrap().streams.clone();
    assert_eq!(heard_a.len(), 1);
    assert_eq!(heard_a[0].received, 30);
    // By the time A's report is out (its grace period passed), a stream to B would
    // long have arrived: B heard nothing at all.
    let heard_b = b.observed.lock().unwrap().clone();
    assert!(heard_b.streams.is_empty(), "{:?}", heard_b.streams);
    assert!(heard_b.audio.samples.is_empty());
    assert!(reps.try_recv().is_err(), "no second stream report");
    cancel.cancel();
}
