//! Voice call-out against a real module, when `TOCSIN_HW_VOICE` names its command port and
//! `TOCSIN_HW_VOICE_AUDIO` its PCM audio port (see `hw-tests/README.md`). Without them the
//! test prints a note and returns. With `TOCSIN_HW_VOICE_TO` it calls that phone, plays the
//! built-in prompt and reports what happened (answered, digits, how it ended).

use tocsin_at_modem::config::ModemConfig;
use tocsin_at_modem::io::spawn_modem_pair;
use tocsin_channel::{DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId, PhoneNumber};
use tocsin_serial::hw::{baud_from_env, device_from_env, wait_for};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_module_places_a_call_and_reads_the_key() {
    let Some(path) = device_from_env("TOCSIN_HW_VOICE", "real-voice-module") else {
        return;
    };
    let Ok(audio) = std::env::var("TOCSIN_HW_VOICE_AUDIO") else {
        println!("TOCSIN_HW_VOICE_AUDIO is not set (the module's PCM audio port): skipping");
        return;
    };
    // The family decides the call commands; `quectel` unless told otherwise.
    let family = std::env::var("TOCSIN_HW_VOICE_FAMILY").unwrap_or_else(|_| "quectel".into());
    let mut cfg: ModemConfig = toml::from_str(&format!(
        "path = {path:?}\nvoice = true\naudio_path = {audio:?}\nfamily = {family:?}\n"
    ))
    .expect("voice module config");
    if let Some(baud) = baud_from_env("TOCSIN_HW_VOICE") {
        cfg.baud = baud;
    }
    cfg.validate().expect("voice module config");
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(256);
    let handles = spawn_modem_pair(
        DeviceId::from("hw"),
        DeviceId::from("hw-voice"),
        cfg,
        None,
        tx,
        cancel.clone(),
    );
    let up = wait_for(&mut rx, 60, |e| matches!(e, DriverEvent::Health(h) if h.up)).await;
    assert!(up.is_some(), "the module did not initialise within 60 s");
    let voice = handles.voice.expect("voice = true gives a voice handle");

    if let Ok(to) = std::env::var("TOCSIN_HW_VOICE_TO") {
        let to = PhoneNumber::parse(&to, "86").expect("TOCSIN_HW_VOICE_TO is a phone number");
        voice
            .commands
            .send(DriverCommand::Send(Outbound {
                attempt: AttemptId(1),
                to: Address::Phone(to),
                text: "【测试】Tocsin 语音外呼硬件测试，请按1确认。".into(),
                want_report: false,
            }))
            .await
            .expect("the voice side takes the call");
        // Answer the phone and press 1: Inbound "1", then Delivered.
        let outcome = wait_for(&mut rx, 120, |e| {
            matches!(
                e,
                DriverEvent::Delivered { .. } | DriverEvent::Failed { .. }
            )
        })
        .await;
        println!("call outcome: {outcome:?}");
        assert!(outcome.is_some(), "no outcome within 120 s");
    }
    cancel.cancel();
}
