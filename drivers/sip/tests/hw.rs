//! The driver against a real SIP trunk, when `TOCSIN_HW_SIP` names it (`ip:port`; see
//! `hw-tests/README.md`). Without it the test prints a note and returns.

use std::time::Duration;

use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId, PhoneNumber};
use tocsin_sip::config::SipConfig;
use tocsin_sip::io::spawn_sip;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_trunk_calls_a_phone() {
    let Ok(trunk) = std::env::var("TOCSIN_HW_SIP") else {
        println!("TOCSIN_HW_SIP not set: skipping the real-trunk test (see hw-tests/README.md)");
        return;
    };
    let mut cfg = SipConfig::new(trunk);
    cfg.bind = std::env::var("TOCSIN_HW_SIP_BIND").unwrap_or_else(|_| "0.0.0.0:5060".into());
    cfg.advertise = std::env::var("TOCSIN_HW_SIP_ADVERTISE").ok();
    cfg.user = std::env::var("TOCSIN_HW_SIP_USER").unwrap_or_else(|_| "tocsin".into());
    cfg.password = std::env::var("TOCSIN_HW_SIP_PASSWORD").ok();
    cfg.register = std::env::var("TOCSIN_HW_SIP_REGISTER").is_ok();
    cfg.concurrent_calls = 1;
    cfg.validate().expect("valid trunk settings");
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel::<DeviceEvent>(64);
    let driver = spawn_sip(DeviceId::from("trunk-hw"), cfg, tx, cancel.clone());
    if let Ok(to) = std::env::var("TOCSIN_HW_SIP_TO") {
        let to = Address::Phone(
            PhoneNumber::parse(&to, "86").expect("TOCSIN_HW_SIP_TO is a phone number"),
        );
        driver
            .commands
            .send(DriverCommand::Send(Outbound {
                attempt: AttemptId(1),
                to,
                text: "测试".into(),
                want_report: false,
            }))
            .await
            .unwrap();
    }
    let wait = async {
        while let Some(e) = rx.recv().await {
            println!("{:?}", e.event);
            if matches!(
                e.event,
                DriverEvent::Delivered { .. } | DriverEvent::Failed { .. }
            ) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(120), wait).await;
    cancel.cancel();
}
