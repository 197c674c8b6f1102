//! Voice over real pseudo-terminals: the driver task (`io.rs`) dials the simulated
//! Quectel modem on its command pty, writes the prompt's PCM to the second pty (the audio
//! port) at real-time pace, takes the key 1 as the ack and hangs up; an SMS queued during
//! the call goes out after it. The simulator measures the audio as it arrives.

use std::time::Duration;

use tocsin_at_modem::config::ModemConfig;
use tocsin_at_modem::io::spawn_modem_pair;
use tocsin_at_modem::pty::spawn_voice_sim;
use tocsin_at_modem::quirks::Family;
use tocsin_at_modem::sim::{CallBehaviour, ReplyBehaviour, SimConfig};
use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, Bearer, DeviceId, PhoneNumber};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Generous bound for anything to happen; the test never sleeps, it waits for events.
const PATIENCE: Duration = Duration::from_secs(20);

async fn next_matching(
    rx: &mut mpsc::Receiver<DeviceEvent>,
    what: &str,
    pred: impl Fn(&DeviceEvent) -> bool,
) -> DeviceEvent {
    let wait = async {
        while let Some(e) = rx.recv().await {
            if pred(&e) {
                return e;
            }
        }
        panic!("event channel closed while waiting for {what}");
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[allow(clippy::unwrap_used, reason = "a fixed, valid number")]
fn out(attempt: u64, text: &str) -> Outbound {
    Outbound {
        attempt: AttemptId(attempt),
        to: Address::Phone(PhoneNumber::parse("+8613800138000", "86").unwrap()),
        text: text.to_owned(),
        want_report: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_real_ptys_plays_audio_in_time_takes_key_1_and_holds_sms() {
    let dir = std::env::temp_dir().join(format!("tocsin-voice-pty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("modem0");
    let audio_link = dir.join("modem0-audio");
    let cancel = CancellationToken::new();
    let sim_cfg = SimConfig {
        per_message_latency_ms: 200,
        status_report_delay_ms: 300,
        default_script: ReplyBehaviour::Never,
        family: Family::Quectel,
        default_call: CallBehaviour::Press {
            answer_after_secs: 0.5,
            digit: '1',
            press_after_secs: 2.5,
        },
        ..SimConfig::default()
    };
    // Real time: audio pacing is what is under test.
    let sim = spawn_voice_sim(
        link.clone(),
        audio_link.clone(),
        sim_cfg,
        1,
        1.0,
        cancel.clone(),
    )
    .unwrap();

    let mut cfg = ModemConfig::new(link.to_str().unwrap());
    cfg.voice = true;
    cfg.family = Family::Quectel;
    cfg.audio_path = Some(audio_link.to_str().unwrap().to_owned());
    cfg.prompt_secs = 2.0;
    cfg.digit_wait_secs = 3;
    cfg.validate().unwrap();
    let (ev_tx, mut ev) = mpsc::channel(1024);
    let handles = spawn_modem_pair(
        DeviceId::from("modem0"),
        DeviceId::from("modem0-voice"),
        cfg,
        None,
        ev_tx,
        cancel.clone(),
    );
    let voice = handles.voice.clone().unwrap();
    assert_eq!(voice.caps.bearer, Bearer::Voice);
    assert!(voice.caps.sender_authenticated);
    assert_eq!(handles.sms.caps.bearer, Bearer::Sms);

    next_matching(&mut ev, "modem up", |e| {
        e.device.as_str() == "modem0-voice"
            && matches!(&e.event, DriverEvent::Health(h) if h.up && h.registered)
    })
    .await;

    voice
        .commands
        .send(DriverCommand::Send(out(1, "【红色预警】山洪。按1确认")))
        .await
        .unwrap();
    let sent = next_matching(&mut ev, "answered", |e| {
        matches!(e.event, DriverEvent::Sent { .. })
    })
    .await;
    assert_eq!(sent.device.as_str(), "modem0-voice");
    // The modem is in the call: this SMS waits for it.
    handles
        .sms
        .commands
        .send(DriverCommand::Send(out(2, "短信 回复 1 K7XT")))
        .await
        .unwrap();

    let ack = next_matching(&mut ev, "key 1", |e| {
        matches!(e.event, DriverEvent::Inbound { .. })
    })
    .await;
    assert_eq!(ack.device.as_str(), "modem0-voice");
    let DriverEvent::Inbound { from, text, .. } = &ack.event else {
        unreachable!()
    };
    assert_eq!(
        (from.to_string().as_str(), text.as_str()),
        ("+8613800138000", "1")
    );
    let delivered = next_matching(&mut ev, "call delivered", |e| {
        matches!(
            e.event,
            DriverEvent::Delivered {
                attempt: AttemptId(1),
                ..
            }
        )
    })
    .await;
    let DriverEvent::Delivered { evidence, .. } = &delivered.event else {
        unreachable!()
    };
    assert!(
        evidence.starts_with("listened 2.0 s of 2.0 s; digits: 1;"),
        "{evidence}"
    );
    let sms = next_matching(&mut ev, "held SMS sent", |e| {
        matches!(
            e.event,
            DriverEvent::Sent {
                attempt: AttemptId(2),
                ..
            }
        )
    })
    .await;
    assert_eq!(sms.device.as_str(), "modem0");

    let call = sim.calls.lock().unwrap()[0].clone();
    assert_eq!(call.number, "+8613800138000");
    assert_eq!(call.digits, "1");
    assert_eq!(call.ended_by, "gateway hung up");
    assert!(!call.audio.is_silence(), "{:?}", call.audio);
    // About 2.5 s of audio reached the listener between answer and hang-up; a loaded CI
    // machine may stall the task once, but the stream must not be starved.
    assert!((2.0..=3.5).contains(&call.audio.secs()), "{:?}", call.audio);
    assert!(call.audio.underruns <= 1, "{:?}", call.audio);
    assert_eq!(sim.submits.lock().unwrap().len(), 1);

    cancel.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
