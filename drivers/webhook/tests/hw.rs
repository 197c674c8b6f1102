//! The driver against a real app backend, when `TOCSIN_HW_WEBHOOK` names its push URL
//! (see `hw-tests/README.md`). Without it the test prints a note and returns.

use std::time::Duration;

use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId};
use tocsin_webhook::config::WebhookConfig;
use tocsin_webhook::io::spawn_webhook;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_backend_takes_a_push_and_returns_an_ack() {
    let Some(url) = tocsin_serial::hw::device_from_env("TOCSIN_HW_WEBHOOK", "app backend") else {
        return;
    };
    let env = |k: &str| std::env::var(k).ok();
    let secret = env("TOCSIN_HW_WEBHOOK_SECRET").unwrap_or_default();
    let mut cfg = WebhookConfig::new(url, secret);
    cfg.callback_bind = env("TOCSIN_HW_WEBHOOK_BIND").unwrap_or_else(|| "0.0.0.0:8091".into());
    cfg.public_url = env("TOCSIN_HW_WEBHOOK_PUBLIC_URL");
    if let Err(e) = cfg.validate() {
        panic!("TOCSIN_HW_WEBHOOK settings: {e}");
    }
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel::<DeviceEvent>(64);
    let driver = spawn_webhook(DeviceId::from("app-hw"), cfg, tx, cancel.clone());
    let up =
        tocsin_serial::hw::wait_for(&mut rx, 10, |e| matches!(e, DriverEvent::Health(_))).await;
    assert!(
        matches!(&up, Some(DriverEvent::Health(h)) if h.up),
        "listener not open: {up:?}"
    );
    if let Some(to) = env("TOCSIN_HW_WEBHOOK_TO") {
        let sent = driver
            .commands
            .send(DriverCommand::Send(Outbound {
                attempt: AttemptId(1),
                to: Address::App(to),
                text: "【演练】【蓝色预警】Tocsin 硬件测试 回复 1 TEST 确认".into(),
                want_report: false,
            }))
            .await;
        assert!(sent.is_ok(), "driver gone");
        let outcome = tocsin_serial::hw::wait_for(&mut rx, 30, |e| {
            matches!(e, DriverEvent::Sent { .. } | DriverEvent::Failed { .. })
        })
        .await;
        assert!(
            matches!(outcome, Some(DriverEvent::Sent { .. })),
            "push not taken: {outcome:?}"
        );
        // Answer `1 TEST` in the app, or tap the ack link, within 3 minutes.
        if let Some(DriverEvent::Inbound {
            receipt: Some(r), ..
        }) =
            tocsin_serial::hw::wait_for(&mut rx, 180, |e| matches!(e, DriverEvent::Inbound { .. }))
                .await
        {
            let _ = driver.commands.send(DriverCommand::Release(r)).await;
            // Give the listener a moment to answer the app before everything stops.
            tokio::time::timeout(Duration::from_secs(1), rx.recv())
                .await
                .ok();
        }
    }
    cancel.cancel();
}
