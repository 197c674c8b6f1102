//! The driver against a real Meshtastic radio, when `TOCSIN_HW_MESHTASTIC` names it (a
//! serial path, or `host[:port]` for TCP; see `hw-tests/README.md`). Without it the test
//! prints a note and returns.

use tocsin_channel::{DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId};
use tocsin_meshtastic::config::MeshConfig;
use tocsin_meshtastic::io::spawn_meshtastic_with_nodes;
use tocsin_meshtastic::mesh::{node_id, parse_node_id};
use tocsin_serial::hw::{device_from_env, wait_for};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_radio_handshakes_and_sends() {
    let Some(target) = device_from_env("TOCSIN_HW_MESHTASTIC", "real-radio") else {
        return;
    };
    let mut cfg = MeshConfig::new(target);
    if let Some(hops) = std::env::var("TOCSIN_HW_MESHTASTIC_HOPS")
        .ok()
        .and_then(|h| h.parse().ok())
    {
        cfg.hop_limit = hops;
    }
    cfg.validate().expect("radio config");
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(256);
    let handle = spawn_meshtastic_with_nodes(DeviceId::from("hw"), cfg, tx, cancel.clone());
    let up = wait_for(&mut rx, 60, |e| matches!(e, DriverEvent::Health(h) if h.up)).await;
    assert!(up.is_some(), "the handshake did not complete within 60 s");
    for n in handle.nodes.borrow().iter() {
        println!(
            "{} {:?} last_heard={:?} snr={:?} hops={:?} pos={:?}",
            node_id(n.num),
            n.long_name,
            n.last_heard,
            n.snr,
            n.hops_away,
            n.position
        );
    }

    if let Ok(to) = std::env::var("TOCSIN_HW_MESHTASTIC_TO") {
        let to = parse_node_id(&to).expect("TOCSIN_HW_MESHTASTIC_TO is a node id like !0a0b0c0d");
        handle
            .driver
            .commands
            .send(DriverCommand::Send(Outbound {
                attempt: AttemptId(1),
                to: Address::MeshNode(to),
                text: "【测试】Tocsin 硬件测试，无需处理。如收到请回复 1 TEST 确认".into(),
                want_report: true,
            }))
            .await
            .unwrap();
        let sent = wait_for(&mut rx, 60, |e| {
            matches!(e, DriverEvent::Sent { .. } | DriverEvent::Failed { .. })
        })
        .await;
        assert!(
            matches!(sent, Some(DriverEvent::Sent { .. })),
            "the radio did not take the text: {sent:?}"
        );
        let outcome = wait_for(&mut rx, 240, |e| {
            matches!(
                e,
                DriverEvent::Delivered { .. } | DriverEvent::Failed { .. }
            )
        })
        .await;
        println!("routing ack / NAK: {outcome:?}");
        let reply = wait_for(&mut rx, 120, |e| matches!(e, DriverEvent::Inbound { .. })).await;
        println!("reply: {reply:?}");
    }
    cancel.cancel();
}
