//! The driver against a real 9602/9603, when `TOCSIN_HW_IRIDIUM_SBD` names its port (see
//! `hw-tests/README.md`). Without it the test prints a note and returns.

use std::time::Duration;

use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId};
use tocsin_iridium_sbd::config::SbdConfig;
use tocsin_iridium_sbd::io::spawn_sbd;
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
async fn real_sbd_modem_initialises_and_sends() {
    let Ok(path) = std::env::var("TOCSIN_HW_IRIDIUM_SBD") else {
        println!(
            "TOCSIN_HW_IRIDIUM_SBD not set: skipping the real SBD modem test (see hw-tests/README.md)"
        );
        return;
    };
    let mut cfg = SbdConfig::new(path);
    if let Some(baud) = std::env::var("TOCSIN_HW_IRIDIUM_SBD_BAUD")
        .ok()
        .and_then(|b| b.parse().ok())
    {
        cfg.baud = baud;
    }
    cfg.validate().expect("SBD config");
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(256);
    let driver = spawn_sbd(DeviceId::from("hw-sbd"), cfg, tx, cancel.clone());
    let up = wait_for(&mut rx, 60, |e| matches!(e, DriverEvent::Health(h) if h.up)).await;
    assert!(up.is_some(), "the modem did not initialise within 60 s");

    // Sending costs credits: only when asked to.
    if std::env::var("TOCSIN_HW_IRIDIUM_SBD_SEND").is_ok_and(|v| v == "1") {
        driver
            .commands
            .send(DriverCommand::Send(Outbound {
                attempt: AttemptId(1),
                to: Address::SbdImei("000000000000000".into()),
                text: "【测试】Tocsin SBD 硬件测试 回复1 TEST".into(),
                want_report: false,
            }))
            .await
            .unwrap();
        let outcome = wait_for(&mut rx, 600, |e| {
            matches!(e, DriverEvent::Sent { .. } | DriverEvent::Failed { .. })
        })
        .await;
        assert!(
            matches!(outcome, Some(DriverEvent::Sent { .. })),
            "session failed: {outcome:?}"
        );
    }
    cancel.cancel();
}
