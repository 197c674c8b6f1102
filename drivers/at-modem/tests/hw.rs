//! The driver against a real modem, when `TOCSIN_HW_AT_MODEM` names its port (see
//! `hw-tests/README.md`). Without it the test prints a note and returns.

use tocsin_at_modem::config::ModemConfig;
use tocsin_at_modem::io::spawn_modem;
use tocsin_channel::{DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId, PhoneNumber};
use tocsin_serial::hw::{baud_from_env, device_from_env, wait_for};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_modem_initialises_and_sends() {
    let Some(path) = device_from_env("TOCSIN_HW_AT_MODEM", "real-modem") else {
        return;
    };
    let mut cfg = ModemConfig::new(path);
    if let Some(baud) = baud_from_env("TOCSIN_HW_AT_MODEM") {
        cfg.baud = baud;
    }
    cfg.validate().expect("modem config");
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(256);
    let driver = spawn_modem(DeviceId::from("hw"), cfg, tx, cancel.clone());
    let up = wait_for(&mut rx, 60, |e| matches!(e, DriverEvent::Health(h) if h.up)).await;
    assert!(up.is_some(), "the modem did not initialise within 60 s");

    if let Ok(to) = std::env::var("TOCSIN_HW_AT_MODEM_TO") {
        let to = PhoneNumber::parse(&to, "86").expect("TOCSIN_HW_AT_MODEM_TO is a phone number");
        let text = "【测试】Tocsin 硬件测试短信，共两段。这是一条用于验证长短信拼接和状态报告的测试消息，无需处理。如收到请回复 1 TEST 确认，谢谢配合。";
        driver
            .commands
            .send(DriverCommand::Send(Outbound {
                attempt: AttemptId(1),
                to: Address::Phone(to),
                text: text.into(),
                want_report: true,
            }))
            .await
            .unwrap();
        let sent = wait_for(&mut rx, 120, |e| {
            matches!(e, DriverEvent::Sent { .. } | DriverEvent::Failed { .. })
        })
        .await;
        assert!(
            matches!(sent, Some(DriverEvent::Sent { .. })),
            "submit failed: {sent:?}"
        );
        let outcome = wait_for(&mut rx, 180, |e| {
            matches!(
                e,
                DriverEvent::Delivered { .. } | DriverEvent::Inbound { .. }
            )
        })
        .await;
        println!("status report / reply: {outcome:?}");
        if let Some(DriverEvent::Inbound {
            receipt: Some(r), ..
        }) = outcome
        {
            driver
                .commands
                .send(DriverCommand::Release(r))
                .await
                .unwrap();
        }
    }
    cancel.cancel();
}
