//! The driver against a real IP speaker, when `TOCSIN_HW_SPEAKER` names its RTP address
//! (see `hw-tests/README.md`). Without it the test prints a note and returns.

use std::sync::Arc;
use std::time::Duration;

use tocsin_channel::{DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId};
use tocsin_speaker::config::SpeakerConfig;
use tocsin_speaker::io::spawn_speaker_with_reports;
use tocsin_voice::{Codec, Speech, SpeechConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_speaker_plays_an_exercise_warning() {
    let Ok(addr) = std::env::var("TOCSIN_HW_SPEAKER") else {
        println!(
            "TOCSIN_HW_SPEAKER not set: skipping the real-speaker test (see hw-tests/README.md)"
        );
        return;
    };
    let rtp = addr.parse().expect("TOCSIN_HW_SPEAKER must be ip:port");
    let mut cfg = SpeakerConfig::new(rtp);
    cfg.repeat = 1;
    if std::env::var("TOCSIN_HW_SPEAKER_CODEC").as_deref() == Ok("pcmu") {
        cfg.codec = Codec::Pcmu;
    }
    if let Ok(b) = std::env::var("TOCSIN_HW_SPEAKER_RTCP_BIND") {
        cfg.rtcp_bind = b
            .parse()
            .expect("TOCSIN_HW_SPEAKER_RTCP_BIND must be ip:port");
    }
    cfg.validate().expect("speaker config");
    let speech =
        Speech::from_config(&SpeechConfig::default(), std::path::Path::new(".")).expect("speech");
    if let Some(n) = speech.notice() {
        println!("{n}");
    }
    let cancel = CancellationToken::new();
    let (ev_tx, mut ev) = mpsc::channel(256);
    let (rep_tx, mut reps) = mpsc::channel(4);
    let driver = spawn_speaker_with_reports(
        DeviceId::from("hw-speaker"),
        cfg,
        Arc::new(speech),
        ev_tx,
        Some(rep_tx),
        cancel.clone(),
    );
    driver
        .commands
        .send(DriverCommand::Send(Outbound {
            attempt: AttemptId(1),
            to: Address::Speaker(tocsin_speaker::proto::BROADCAST_GROUP.into()),
            text: "【演练】【蓝色预警】设备测试：这是一条广播测试。".into(),
            want_report: false,
        }))
        .await
        .expect("driver running");
    let wait = async {
        loop {
            tokio::select! {
                Some(e) = ev.recv() => {
                    println!("{:?}", e.event);
                    if let DriverEvent::Failed { reason, .. } = &e.event {
                        panic!("failed: {reason}");
                    }
                }
                Some(r) = reps.recv() => return r,
            }
        }
    };
    let report = tokio::time::timeout(Duration::from_secs(120), wait)
        .await
        .expect("the programme should end within 2 minutes");
    println!("{report:#?}");
    if report.reached.is_empty() {
        println!("the speaker sent no RTCP receiver report: no evidence (many speakers send none)");
    }
    cancel.cancel();
}

/// The local sound card (feature `audio-local`), when `TOCSIN_HW_SOUND_CARD` is `default`
/// or names an output as the system lists it (see `hw-tests/README.md`).
#[cfg(feature = "audio-local")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sound_card_plays_an_exercise_warning() {
    use tocsin_speaker::local::alsa::AlsaCard;
    use tocsin_speaker::local::config::LocalAudioConfig;
    use tocsin_speaker::local::io::spawn_local_audio;

    let Ok(card) = std::env::var("TOCSIN_HW_SOUND_CARD") else {
        println!(
            "TOCSIN_HW_SOUND_CARD not set: skipping the sound-card test (see hw-tests/README.md)"
        );
        return;
    };
    let mut cfg = LocalAudioConfig::new("hw-horn");
    cfg.repeat = 1;
    cfg.card = (card != "default").then_some(card);
    cfg.validate().expect("local audio config");
    let speech =
        Speech::from_config(&SpeechConfig::default(), std::path::Path::new(".")).expect("speech");
    if let Some(n) = speech.notice() {
        println!("{n}");
    }
    let cancel = CancellationToken::new();
    let (ev_tx, mut ev) = mpsc::channel(256);
    let driver = spawn_local_audio(
        DeviceId::from("hw-horn"),
        cfg,
        Arc::new(speech),
        Arc::new(AlsaCard),
        ev_tx,
        cancel.clone(),
    );
    driver
        .commands
        .send(DriverCommand::Send(Outbound {
            attempt: AttemptId(1),
            to: Address::Speaker("hw-horn".into()),
            text: "【演练】【蓝色预警】设备测试：这是一条广播测试。".into(),
            want_report: false,
        }))
        .await
        .expect("driver running");
    let wait = async {
        loop {
            let Some(e) = ev.recv().await else {
                panic!("the driver stopped")
            };
            println!("{:?}", e.event);
            match e.event {
                DriverEvent::Failed { reason, .. } => panic!("failed: {reason}"),
                DriverEvent::Delivered { evidence, .. } => return evidence,
                _ => {}
            }
        }
    };
    let evidence = tokio::time::timeout(Duration::from_secs(120), wait)
        .await
        .expect("the programme should end within 2 minutes");
    assert!(evidence.starts_with("played "), "{evidence}");
    cancel.cancel();
}
