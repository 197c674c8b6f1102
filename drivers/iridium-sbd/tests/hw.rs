//! The driver against a real 9602/9603, when `TOCSIN_HW_IRIDIUM_SBD` names its port (see
//! `hw-tests/README.md`). Without it the test prints a note and returns.

use tocsin_channel::{DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId};
use tocsin_iridium_sbd::config::SbdConfig;
use tocsin_iridium_sbd::io::spawn_sbd;
use tocsin_serial::hw::{baud_from_env, device_from_env, wait_for};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sbd_modem_initialises_and_sends() {
    let Some(path) = device_from_env("TOCSIN_HW_IRIDIUM_SBD", "real SBD modem") else {
        return;
    };
    let mut cfg = SbdConfig::new(path);
    if let Some(baud) = baud_from_env("TOCSIN_HW_IRIDIUM_SBD") {
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
