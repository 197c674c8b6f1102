//! The real driver task (`io.rs`, tokio-serial) against the 9603 simulator on a real
//! pseudo-terminal: a warning goes out, the field kit's ack batch comes back through a ring
//! as a frame and is released, and after a hang-up a warning queued meanwhile still goes out.
//! Then two drivers, each on one modem of a simulated network, exchange compact frames.

use std::time::Duration;

use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, FrameOut, Outbound};
use tocsin_compact::{Frame, TextFrame};
use tocsin_core::{Address, AttemptId, DeviceId};
use tocsin_iridium_sbd::config::{Peer, SbdConfig};
use tocsin_iridium_sbd::io::spawn_sbd;
use tocsin_iridium_sbd::network::{NetworkConfig, route_prefix};
use tocsin_iridium_sbd::pty::{NetworkCommand, SimCommand, spawn_network, spawn_sim};
use tocsin_iridium_sbd::sim::{KitReply, SimConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Generous bound for anything to happen; the test never sleeps, it waits for events.
const PATIENCE: Duration = Duration::from_secs(20);
const KIT: &str = "300234010753370";

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

fn send(attempt: u64, text: &str) -> DriverCommand {
    DriverCommand::Send(Outbound {
        attempt: AttemptId(attempt),
        to: Address::SbdImei(KIT.to_owned()),
        text: text.to_owned(),
        want_report: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_over_a_real_pty_sends_gets_the_kits_ack_and_survives_a_hangup() {
    let dir = std::env::temp_dir().join(format!("tocsin-sbd-pty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("sbd0");
    let cancel = CancellationToken::new();
    let sim_cfg = SimConfig {
        session_min_ms: 5_000,
        session_max_ms: 8_000,
        reply: KitReply::Ack {
            min_secs: 20.0,
            max_secs: 20.0,
        },
        ..SimConfig::default()
    };
    // Simulated time runs 50× faster: a 5 s session is 100 ms of real time.
    let sim = spawn_sim(link.clone(), sim_cfg, 1, 50.0, cancel.clone()).unwrap();

    let (ev_tx, mut ev) = mpsc::channel(1024);
    let driver = spawn_sbd(
        DeviceId::from("sbd0"),
        SbdConfig::new(link.to_str().unwrap()),
        ev_tx,
        cancel.clone(),
    );
    next_matching(
        &mut ev,
        "modem up",
        |e| matches!(e, DriverEvent::Health(h) if h.up && h.registered),
    )
    .await;

    let warning = "【红色预警】沙峪村山洪，立即转移。回复1 K7XT";
    driver.commands.send(send(1, warning)).await.unwrap();
    let sent = next_matching(&mut ev, "sent", |e| {
        matches!(e, DriverEvent::Sent { .. } | DriverEvent::Failed { .. })
    })
    .await;
    assert_eq!(
        sent,
        DriverEvent::Sent {
            attempt: AttemptId(1),
            reference: "MOMSN 1".into()
        }
    );
    {
        let log = sim.mo_log.lock().unwrap();
        assert_eq!(
            Frame::decode(&log[0].payload).unwrap(),
            Frame::Text(TextFrame {
                text: warning.into()
            })
        );
    }

    // The kit answers 20 simulated seconds later; the modem rings; the driver reads its
    // ack batch and hands it over as a frame, for the daemon to judge.
    let inbound = next_matching(&mut ev, "the kit's ack", |e| {
        matches!(e, DriverEvent::Frame { .. })
    })
    .await;
    let DriverEvent::Frame {
        from,
        bytes,
        receipt,
        ..
    } = inbound
    else {
        unreachable!()
    };
    assert_eq!(from, Address::SbdImei(KIT.into()));
    let Ok(Frame::Acks(batch)) = Frame::decode(&bytes) else {
        panic!("{bytes:02X?}")
    };
    assert_eq!(batch.acks[0].code.to_string(), "K7XT");
    driver
        .commands
        .send(DriverCommand::Release(receipt.unwrap()))
        .await
        .unwrap();

    // The modem is pulled; a warning queued meanwhile goes out once it is back.
    sim.commands
        .send(SimCommand::HangUp {
            down_for: Duration::from_millis(500),
        })
        .await
        .unwrap();
    next_matching(
        &mut ev,
        "modem down",
        |e| matches!(e, DriverEvent::Health(h) if !h.up),
    )
    .await;
    driver.commands.send(send(2, "第二条预警")).await.unwrap();
    next_matching(
        &mut ev,
        "modem back up",
        |e| matches!(e, DriverEvent::Health(h) if h.up),
    )
    .await;
    let sent = next_matching(&mut ev, "queued warning sent", |e| {
        matches!(e, DriverEvent::Sent { .. } | DriverEvent::Failed { .. })
    })
    .await;
    assert!(
        matches!(
            sent,
            DriverEvent::Sent {
                attempt: AttemptId(2),
                ..
            }
        ),
        "{sent:?}"
    );
    assert_eq!(sim.mo_log.lock().unwrap().len(), 2);

    cancel.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_a_simulated_network_exchange_frames_over_real_ptys() {
    const DISTRICT: &str = "300434063839690";
    let dir = std::env::temp_dir().join(format!("tocsin-sbd-net-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let links = vec![dir.join("district"), dir.join("kit")];
    let cancel = CancellationToken::new();
    let modem = |imei: &str| SimConfig {
        imei: imei.into(),
        session_min_ms: 3_000,
        session_max_ms: 6_000,
        reply: KitReply::Never,
        ..SimConfig::default()
    };
    // 50× faster: a session is 60–120 ms of real time.
    let net = spawn_network(
        links.clone(),
        vec![modem(DISTRICT), modem(KIT)],
        NetworkConfig::default(),
        3,
        50.0,
        cancel.clone(),
    )
    .unwrap();
    assert_eq!(net.paths, links);

    let mut evs = Vec::new();
    let mut drivers = Vec::new();
    for (link, (name, peer)) in links.iter().zip([("district", KIT), ("kit", DISTRICT)]) {
        let mut cfg = SbdConfig::new(link.to_str().unwrap());
        cfg.peers.push(Peer {
            imei: peer.into(),
            prefix: route_prefix(peer),
        });
        let (tx, mut rx) = mpsc::channel(1024);
        drivers.push(spawn_sbd(DeviceId::from(name), cfg, tx, cancel.clone()));
        next_matching(
            &mut rx,
            "modem up",
            |e| matches!(e, DriverEvent::Health(h) if h.up && h.registered),
        )
        .await;
        evs.push(rx);
    }
    let [district_ev, kit_ev] = &mut evs[..] else {
        unreachable!()
    };

    let cancel_frame = vec![0x13, 0x00, 0x00, 0x05, 0x20, 0xBD, 0xE2, 0xB3, 0xFD];
    drivers[0]
        .commands
        .send(DriverCommand::SendFrame(FrameOut {
            attempt: AttemptId(1),
            to: Address::SbdImei(KIT.into()),
            bytes: cancel_frame.clone(),
        }))
        .await
        .unwrap();
    let got = next_matching(kit_ev, "the district's frame", |e| {
        matches!(e, DriverEvent::Frame { .. })
    })
    .await;
    let DriverEvent::Frame {
        from,
        bytes,
        receipt,
        ..
    } = got
    else {
        unreachable!()
    };
    assert_eq!(
        (from, bytes),
        (Address::SbdImei(DISTRICT.into()), cancel_frame)
    );
    drivers[1]
        .commands
        .send(DriverCommand::Release(receipt.unwrap()))
        .await
        .unwrap();

    // An ack batch without origin: the district knows it from its single peer.
    let acks = vec![
        0x12, 0x00, 0x03, 0x93, 0x87, 0x00, 0x01, 0x00, 0xA1, 0xB2, 0x00, 0xB9, 0xBD, 0x00, 0x03,
        0x70, 0x31, 0x37,
    ];
    assert!(matches!(Frame::decode(&acks), Ok(Frame::Acks(_))));
    drivers[1]
        .commands
        .send(DriverCommand::SendFrame(FrameOut {
            attempt: AttemptId(2),
            to: Address::SbdImei(DISTRICT.into()),
            bytes: acks.clone(),
        }))
        .await
        .unwrap();
    let got = next_matching(district_ev, "the kit's ack batch", |e| {
        matches!(e, DriverEvent::Frame { .. })
    })
    .await;
    assert!(
        matches!(&got, DriverEvent::Frame { from: Address::SbdImei(k), bytes, .. } if k == KIT && *bytes == acks),
        "{got:?}"
    );
    assert_eq!(net.routed.lock().unwrap().len(), 2);
    assert_eq!(net.mo_logs[1].lock().unwrap().len(), 1);

    // A hang-up of the kit's modem and back: the network still carries.
    net.commands
        .send(NetworkCommand::HangUp {
            modem: 1,
            down_for: Duration::from_millis(300),
        })
        .await
        .unwrap();
    next_matching(
        kit_ev,
        "kit modem down",
        |e| matches!(e, DriverEvent::Health(h) if !h.up),
    )
    .await;
    next_matching(
        kit_ev,
        "kit modem back",
        |e| matches!(e, DriverEvent::Health(h) if h.up),
    )
    .await;

    cancel.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
