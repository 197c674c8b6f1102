//! The driver against a real BeiDou terminal, when `TOCSIN_HW_BEIDOU` names its port (see
//! `hw-tests/README.md`). Without it the test prints a note and returns.

use std::time::Duration;

use tocsin_beidou::config::{BeidouConfig, DialectSetting};
use tocsin_beidou::io::spawn_beidou;
use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

async fn wait_for(
    rx: &mut mpsc::Receiver<DeviceEvent>,
    secs: u64,
    pred: impl Fn(&DriverEvent) -> bool,
) -> Option<DriverEvent> {
    let wait = async {
        while let Some(e) = rx.recv().await {
            println!("{:?}", e.event);
            if pred(&e.event) {
                return Some(e.event);
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(secs), wait)
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_terminal_reads_its_card_and_sends() {
    let Ok(path) = std::env::var("TOCSIN_HW_BEIDOU") else {
        println!(
            "TOCSIN_HW_BEIDOU not set: skipping the real-terminal test (see hw-tests/README.md)"
        );
        return;
    };
    let mut cfg = BeidouConfig::new(path);
    if let Some(baud) = std::env::var("TOCSIN_HW_BEIDOU_BAUD")
        .ok()
        .and_then(|b| b.parse().ok())
    {
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
