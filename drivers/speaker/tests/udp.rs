//! The real driver task (`io.rs`, tokio UDP) against simulated speakers on real loopback
//! sockets: a warning streamed, paced in real time, decoded to a WAV by the speaker,
//! evidence from its receiver reports; two groups at once (a broadcast) with a lossy
//! speaker and a silent one; a warning for one group that the other group's speaker never
//! hears; a cancel that stops the stream and plays the cancellation message; and two
//! multicast groups on the loopback interface, two speakers joined to one and one to the
//! other, each programme heard whole by every speaker of its group and reported by each;
//! a multicast interface this host does not have, reported as the driver's health.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId};
use tocsin_speaker::config::{GroupConfig, SpeakerConfig};
use tocsin_speaker::io::{Renderer, spawn_speaker_with_reports};
use tocsin_speaker::proto::{BROADCAST_GROUP, RenderJob, StreamReport};
use tocsin_speaker::sim::{Faults, SimConfig};
use tocsin_speaker::udp::{SimNet, SimSpeakerHandle, spawn_sim_speaker, spawn_sim_speaker_on};
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
async fn a_group_the_socket_cannot_send_to_fails_its_warning_and_the_other_group_hears_its_own() {
    let cancel = CancellationToken::new();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sim = spawn_sim_speaker(any, sim_cfg(Faults::default()), 9, None, cancel.clone())
        .await
        .unwrap();
    // An IPv6 speaker on the driver's IPv4 socket: the kernel refuses every packet
    // (EAFNOSUPPORT) without anything leaving this host.
    let v6 = GroupConfig {
        name: "v6".to_owned(),
        rtp: "[::1]:5004".parse().unwrap(),
        rtcp: None,
        speakers: vec![],
    };
    let (ev_tx, mut ev) = mpsc::channel(256);
    let (rep_tx, mut reps) = mpsc::channel(16);
    let driver = spawn_speaker_with_reports(
        DeviceId::from("speakers2"),
        driver_cfg(vec![group("east", &sim), v6]),
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
    // Both due in the same wakes: the bad group's failures must not hold up the good one.
    for cmd in [
        send(1, "v6", "【红色预警】山洪"),
        send(2, "east", "【红色预警】山洪"),
    ] {
        driver.commands.send(cmd).await.unwrap();
    }
    let failed = next_matching(&mut ev, "the v6 warning failed", |e| {
        matches!(
            e,
            DriverEvent::Failed {
                attempt: AttemptId(1),
                ..
            }
        )
    })
    .await;
    let DriverEvent::Failed {
        retryable, reason, ..
    } = failed
    else {
        unreachable!()
    };
    assert!(retryable);
    assert!(
        reason.starts_with("could not stream to [::1]:5004"),
        "{reason}"
    );
    let mut got = [next_report(&mut reps).await, next_report(&mut reps).await];
    got.sort_by(|a, b| a.group.cmp(&b.group));
    assert_eq!(got[0].group, "east");
    assert_eq!(got[0].reached.len(), 1, "{:?}", got[0]);
    assert_eq!(got[1].group, "v6");
    assert!(got[1].reached.is_empty());
    // The east speaker heard its whole warning, in order, none lost.
    let heard = sim.observed.lock().unwrap().streams[0].clone();
    assert_eq!(heard.received, 30, "{heard:?}");
    assert_eq!(heard.lost(), 0, "{heard:?}");
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

/// A simulated speaker joined to multicast group `rtp` on the loopback interface, its
/// reports coming from its own loopback address `own`.
async fn lo_speaker(
    rtp: SocketAddr,
    own: [u8; 4],
    seed: u64,
    cancel: &CancellationToken,
) -> SimSpeakerHandle {
    spawn_sim_speaker_on(
        rtp,
        SimNet {
            interface: Some(Ipv4Addr::LOCALHOST),
            address: Some(IpAddr::from(own)),
        },
        sim_cfg(Faults::default()),
        seed,
        None,
        cancel.clone(),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "cannot join {rtp} on 127.0.0.1 ({e}): this host's loopback takes no multicast \
             membership (see the tocsin-speaker docs on multicast_interface)"
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_multicast_groups_on_loopback_reach_every_speaker_joined_to_them() {
    let cancel = CancellationToken::new();
    // Port 0: the first speaker of each group finds a free pair, the second takes it.
    let g1: SocketAddr = "239.255.10.1:0".parse().unwrap();
    let g2: SocketAddr = "239.255.10.2:0".parse().unwrap();
    let a1 = lo_speaker(g1, [127, 0, 0, 2], 21, &cancel).await;
    let a2 = lo_speaker(a1.rtp, [127, 0, 0, 3], 22, &cancel).await;
    let b1 = lo_speaker(g2, [127, 0, 0, 4], 23, &cancel).await;
    assert_eq!(a1.rtp.ip(), IpAddr::from([239, 255, 10, 1]));
    assert_eq!(
        (a2.rtp, a2.rtcp),
        (a1.rtp, a1.rtcp),
        "one group, one port pair"
    );
    assert_eq!(b1.rtp.ip(), IpAddr::from([239, 255, 10, 2]));
    assert_ne!(b1.rtp.port(), a1.rtp.port());
    assert_eq!(
        a1.reporter,
        SocketAddr::new([127, 0, 0, 2].into(), a1.rtcp.port())
    );
    let groups = vec![
        GroupConfig {
            name: "T05-V01".into(),
            rtp: a1.rtp,
            rtcp: None,
            speakers: vec![a1.reporter.to_string(), a2.reporter.to_string()],
        },
        GroupConfig {
            name: "T05-V02".into(),
            rtp: b1.rtp,
            rtcp: None,
            speakers: vec![b1.reporter.to_string()],
        },
    ];
    let mut cfg = driver_cfg(groups);
    // The sockets bound to any address, as on a gateway: it is the interface alone that
    // sends the stream out of lo. Without it the kernel would pick the default route's
    // card, where the speakers joined on lo would hear nothing.
    cfg.bind = "0.0.0.0:0".parse().unwrap();
    cfg.rtcp_bind = "0.0.0.0:0".parse().unwrap();
    cfg.multicast_interface = Some(Ipv4Addr::LOCALHOST);
    cfg.validate().unwrap();
    let (ev_tx, mut ev) = mpsc::channel(256);
    let (rep_tx, mut reps) = mpsc::channel(16);
    let driver = spawn_speaker_with_reports(
        DeviceId::from("speakers-T05"),
        cfg,
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
        .send(send(1, "T05-V01", "【红色预警】山洪"))
        .await
        .unwrap();
    driver
        .commands
        .send(send(2, "T05-V02", "【橙色预警】暴雨"))
        .await
        .unwrap();

    let mut got = [next_report(&mut reps).await, next_report(&mut reps).await];
    got.sort_by(|a, b| a.group.cmp(&b.group));
    let [v1, v2] = got;
    assert_eq!(
        (v1.group.as_str(), v1.attempt),
        ("T05-V01", Some(AttemptId(1)))
    );
    assert_eq!(
        (v2.group.as_str(), v2.attempt),
        ("T05-V02", Some(AttemptId(2)))
    );
    assert_ne!(v1.ssrc, v2.ssrc);
    for r in [&v1, &v2] {
        assert_eq!(r.packets, 30, "{r:?}");
        assert!(!r.stopped_early);
        assert!(r.no_evidence.is_empty(), "{r:?}");
    }
    // Reached: both speakers of group 1, the one of group 2, each by its own report.
    let mut who: Vec<SocketAddr> = v1.reached.iter().map(|e| e.speaker).collect();
    who.sort();
    assert_eq!(who, vec![a1.reporter, a2.reporter]);
    assert_eq!(v2.reached.len(), 1);
    assert_eq!(v2.reached[0].speaker, b1.reporter);
    for e in v1.reached.iter().chain(&v2.reached) {
        // Their last report: nothing lost, the stream's 30th packet the highest seen.
        assert_eq!(e.last.cumulative_lost, 0, "{e:?}");
        assert_eq!(e.last.fraction_lost, 0, "{e:?}");
        assert!(e.reports >= 1);
        // Jitter is measured (timestamp units): on loopback it stays far under a second
        // even on a loaded CI box, where a tighter bound would make the test flaky.
        assert!(e.last.jitter < 8000, "{e:?}");
    }
    // One Delivered per speaker, with its evidence.
    let mut delivered = Vec::new();
    while let Ok(e) = ev.try_recv() {
        if let DriverEvent::Delivered { attempt, evidence } = e.event {
            delivered.push((attempt, evidence));
        }
    }
    assert_eq!(delivered.len(), 3, "{delivered:?}");
    for (attempt, who, group) in [
        (AttemptId(1), a1.reporter, "T05-V01"),
        (AttemptId(1), a2.reporter, "T05-V01"),
        (AttemptId(2), b1.reporter, "T05-V02"),
    ] {
        let prefix = format!("RTCP RR from speaker {who} ");
        let Some((_, evidence)) = delivered
            .iter()
            .find(|(a, e)| *a == attempt && e.starts_with(&prefix))
        else {
            panic!("no Delivered for {attempt:?} from {who}: {delivered:?}");
        };
        assert!(
            evidence.contains(&format!("on group {group}")),
            "{evidence}"
        );
    }
    // What each speaker heard: the whole of its own group's stream and nothing else.
    let want = tone::steady(440.0, Duration::from_millis(600)).rms();
    for (sim, ssrc) in [(&a1, v1.ssrc), (&a2, v1.ssrc), (&b1, v2.ssrc)] {
        let o = sim.observed.lock().unwrap().clone();
        assert_eq!(o.streams.len(), 1, "{:?}", o.streams);
        let s = &o.streams[0];
        assert_eq!(s.ssrc, ssrc);
        assert_eq!(
            (
                s.received,
                s.expected,
                s.lost(),
                s.out_of_order,
                s.duplicates
            ),
            (30, 30, 0, 0, 0),
            "{s:?}"
        );
        assert_eq!((s.timestamp_errors, s.size_errors), (0, 0), "{s:?}");
        assert!(s.first_marker && s.ended, "{s:?}");
        assert_eq!(s.payload_type, 8);
        assert!(s.reports_sent >= 1, "{s:?}");
        assert_eq!(o.garbage, 0);
        assert_eq!(o.audio.samples.len(), 4800);
        assert!(
            (o.audio.rms() - want).abs() < 0.01,
            "{} vs {want}",
            o.audio.rms()
        );
    }
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multicast_interface_this_host_does_not_have_is_the_drivers_health() {
    let cancel = CancellationToken::new();
    let mut cfg = driver_cfg(vec![GroupConfig {
        name: "T05-V01".into(),
        rtp: "239.255.10.3:5004".parse().unwrap(),
        rtcp: None,
        speakers: Vec::new(),
    }]);
    cfg.multicast_interface = Some(Ipv4Addr::new(198, 51, 100, 7));
    cfg.validate().unwrap();
    let (ev_tx, mut ev) = mpsc::channel(256);
    let _driver = spawn_speaker_with_reports(
        DeviceId::from("speakers-far"),
        cfg,
        Arc::new(Tones),
        ev_tx,
        None,
        cancel.clone(),
    );
    let down = next_matching(
        &mut ev,
        "health down",
        |e| matches!(e, DriverEvent::Health(h) if !h.up),
    )
    .await;
    let DriverEvent::Health(h) = down else {
        unreachable!()
    };
    let why = h.last_error.unwrap_or_default();
    assert!(
        why.starts_with("multicast_interface: 198.51.100.7 is not an address of this host"),
        "{why}"
    );
    cancel.cancel();
}
