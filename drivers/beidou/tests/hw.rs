//! The driver against a real BeiDou terminal, when `TOCSIN_HW_BEIDOU` names its port (see
//! `hw-tests/README.md`). Without it the test prints a note and returns.

use tocsin_beidou::config::{BeidouConfig, DialectSetting};
use tocsin_beidou::io::spawn_beidou;
use tocsin_channel::{DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId};
use tocsin_serial::hw::{baud_from_env, device_from_env, wait_for};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_terminal_reads_its_card_and_sends() {
    let Some(path) = device_from_env("TOCSIN_HW_BEIDOU", "real-terminal") else {
        return;
    };
    let mut cfg = BeidouConfig::new(path);
    if let Some(baud) = baud_from_env("TOCSIN_HW_BEIDOU") {
        cfg.baud = baud;
    }
    cfg.dialect = match std::env::var("TOCSIN_HW_BEIDOU_DIALECT").as_deref() {
        Ok("bds2") => DialectSetting::Bds2,
        Ok("bds3") => DialectSetting::Bds3,
        _ => DialectSetting::Auto,
    };
    cfg.validate().expect("terminal config");
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(256);
    let driver = spawn_beidou(DeviceId::from("hw"), cfg, tx, cancel.clone());
    let up = wait_for(&mut rx, 60, |e| matches!(e, DriverEvent::Health(h) if h.up)).await;
    assert!(
        up.is_some(),
        "the terminal did not answer the card query within 60 s"
    );

    if let Ok(to) = std::env::var("TOCSIN_HW_BEIDOU_TO") {
        let text = "【测试】Tocsin北斗测试，无需处理。回复 1 TEST";
        driver
            .commands
            .send(DriverCommand::Send(Outbound {
                attempt: AttemptId(1),
                to: Address::BeidouCard(to),
                text: text.into(),
                want_report: true,
            }))
            .await
            .unwrap();
        // Up to two service periods: the card may have sent just before the test.
        let sent = wait_for(&mut rx, 150, |e| {
            matches!(e, DriverEvent::Sent { .. } | DriverEvent::Failed { .. })
        })
        .await;
        assert!(
            matches!(sent, Some(DriverEvent::Sent { .. })),
            "send failed: {sent:?}"
        );
        let reply = wait_for(&mut rx, 300, |e| {
            matches!(
                e,
                DriverEvent::Inbound { .. } | DriverEvent::Delivered { .. }
            )
        })
        .await;
        println!("receipt / reply: {reply:?}");
    }
    cancel.cancel();
}
