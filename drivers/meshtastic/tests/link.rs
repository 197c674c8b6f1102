//! The real driver task (`io.rs`) against the simulated radio, once over a real
//! pseudo-terminal and once over a loopback TCP socket: a text to a lead's node is
//! delivered by the routing ack matched to its packet id, the lead's reply comes back as
//! `Inbound`, a text to an unreachable node is NAKed and `Failed`, the node table is
//! published, and after the link drops a queued text still goes out.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::time::Duration;

use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId};
use tocsin_meshtastic::config::MeshConfig;
use tocsin_meshtastic::io::{MeshHandle, spawn_meshtastic_with_nodes};
use tocsin_meshtastic::runner::{SimCommand, SimHandle, spawn_pty_sim, spawn_tcp_sim};
use tocsin_meshtastic::sim::{NodeScript, ReplyBehaviour, SimConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Generous bound for anything to happen; the test never sleeps, it waits for events.
const PATIENCE: Duration = Duration::from_secs(20);
const LEAD: u32 = 0x0a0b_0c0d;
const GONE: u32 = 0x1122_3344;

async fn next_matching(
    rx: &mut mpsc::Receiver<DeviceEvent>,
    what: &str,
    pred: impl Fn(&DriverEvent) -> bool,
) -> DriverEvent {
    let wait = async {
        while let Some(e) = rx.recv().await {
            if pred(&e.event) {
                return e.event;
            }
        }
        panic!("event channel closed while waiting for {what}");
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn send(attempt: u64, to: u32, text: &str) -> DriverCommand {
    DriverCommand::Send(Outbound {
        attempt: AttemptId(attempt),
        to: Address::MeshNode(to),
        text: text.to_owned(),
        want_report: true,
    })
}

fn sim_config() -> SimConfig {
    SimConfig {
        airtime_ms: 500,
        hop_latency_ms: 500,
        nodes: vec![
            NodeScript::new(
                LEAD,
                "王村长",
                ReplyBehaviour::Reply {
                    min_secs: 5.0,
                    max_secs: 5.0,
                },
            ),
            NodeScript {
                hops: 3,
                loss: 1.0,
                ..NodeScript::new(GONE, "李队长", ReplyBehaviour::Never)
            },
        ],
        faults: tocsin_meshtastic::sim::Faults {
            log_lines: true,
            ..Default::default()
        },
        ..SimConfig::default()
    }
}

fn driver_config(address: &str) -> MeshConfig {
    let mut cfg = MeshConfig::new(address);
    // The simulator runs 10× faster than real time; let the driver keep up.
    cfg.per_minute = 600.0;
    cfg.burst = 5;
    cfg.validate().unwrap();
    cfg
}

async fn scenario(sim: SimHandle, cancel: CancellationToken) {
    let (ev_tx, mut ev) = mpsc::channel(1024);
    let MeshHandle {
        driver, mut nodes, ..
    } = spawn_meshtastic_with_nodes(
        DeviceId::from("mesh0"),
        driver_config(&sim.address()),
        ev_tx,
        cancel.clone(),
    );
    next_matching(
        &mut ev,
        "radio up",
        |e| matches!(e, DriverEvent::Health(h) if h.up && h.registered),
    )
    .await;

    // The node table, from the handshake.
    let table = tokio::time::timeout(
        PATIENCE,
        nodes.wait_for(|n| n.iter().any(|n| n.num == LEAD)),
    )
    .await
    .expect("node table published")
    .expect("driver alive")
    .clone();
    let lead = table.iter().find(|n| n.num == LEAD).unwrap();
    assert_eq!(lead.long_name, "王村长");
    assert_eq!(lead.hops_away, Some(0));

    driver
        .commands
        .send(send(1, LEAD, "【红色预警】山洪。回复 1 K7XT 确认"))
        .await
        .unwrap();
    let sent = next_matching(&mut ev, "sent", |e| matches!(e, DriverEvent::Sent { .. })).await;
    let DriverEvent::Sent { attempt, reference } = sent else {
        unreachable!()
    };
    assert_eq!(attempt, AttemptId(1));
    let packet_id = sim.sent.lock().unwrap()[0].id;
    assert!(
        reference.contains(&format!("0x{packet_id:08x}")),
        "{reference}"
    );
    let delivered = next_matching(&mut ev, "delivered", |e| {
        matches!(e, DriverEvent::Delivered { .. })
    })
    .await;
    let DriverEvent::Delivered { attempt, evidence } = delivered else {
        unreachable!()
    };
    assert_eq!(attempt, AttemptId(1));
    assert!(
        evidence.contains(&format!("for packet 0x{packet_id:08x}"))
            && evidence.contains("from=!0a0b0c0d"),
        "{evidence}"
    );
    {
        let log = sim.sent.lock().unwrap();
        assert_eq!(log[0].text, "【红色预警】山洪。回复 1 K7XT 确认");
        assert_eq!(log[0].to, LEAD);
        assert!(log[0].want_ack);
    }
    let inbound = next_matching(&mut ev, "reply", |e| {
        matches!(e, DriverEvent::Inbound { .. })
    })
    .await;
    let DriverEvent::Inbound {
        from,
        text,
        receipt,
        ..
    } = inbound
    else {
        unreachable!()
    };
    assert_eq!(from, Address::MeshNode(LEAD));
    assert_eq!(text, "1 K7XT");
    assert_eq!(receipt, None);

    // An unreachable node: the radio gives up and NAKs.
    driver
        .commands
        .send(send(2, GONE, "【红色预警】山洪。回复 1 AAAA 确认"))
        .await
        .unwrap();
    let failed = next_matching(&mut ev, "NAK", |e| matches!(e, DriverEvent::Failed { .. })).await;
    let DriverEvent::Failed {
        attempt,
        retryable,
        reason,
    } = failed
    else {
        unreachable!()
    };
    assert_eq!(attempt, AttemptId(2));
    assert!(retryable);
    assert!(reason.contains("MAX_RETRANSMIT"), "{reason}");

    // The link drops; a text queued meanwhile goes out after the radio is back.
    sim.commands
        .send(SimCommand::HangUp {
            down_for: Duration::from_millis(700),
        })
        .await
        .unwrap();
    next_matching(
        &mut ev,
        "radio down",
        |e| matches!(e, DriverEvent::Health(h) if !h.up),
    )
    .await;
    driver
        .commands
        .send(send(3, LEAD, "第二条预警 回复 1 BBBB"))
        .await
        .unwrap();
    next_matching(
        &mut ev,
        "radio back up",
        |e| matches!(e, DriverEvent::Health(h) if h.up),
    )
    .await;
    let delivered = next_matching(&mut ev, "queued text delivered", |e| {
        matches!(e, DriverEvent::Delivered { .. })
    })
    .await;
    assert!(
        matches!(
            delivered,
            DriverEvent::Delivered {
                attempt: AttemptId(3),
                ..
            }
        ),
        "{delivered:?}"
    );
    assert_eq!(sim.sent.lock().unwrap().len(), 3);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_over_a_real_pty_delivers_naks_answers_and_survives_a_hangup() {
    let dir = std::env::temp_dir().join(format!("tocsin-mesh-pty-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cancel = CancellationToken::new();
    let sim = spawn_pty_sim(dir.join("mesh0"), sim_config(), 1, 10.0, cancel.clone()).unwrap();
    scenario(sim, cancel).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_over_loopback_tcp_delivers_naks_answers_and_reconnects() {
    let cancel = CancellationToken::new();
    let sim = spawn_tcp_sim(0, sim_config(), 2, 10.0, cancel.clone()).unwrap();
    assert!(sim.address().starts_with("127.0.0.1:"));
    scenario(sim, cancel).await;
}
