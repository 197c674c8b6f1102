//! The real driver task (`io.rs`, tokio-serial) against the 9603 simulator on a real
//! pseudo-terminal: a warning goes out, the field kit's ack comes back through a ring and
//! is released, and after a hang-up a warning queued meanwhile still goes out.

use std::time::Duration;

use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, Outbound};
use tocsin_compact::{Frame, TextFrame};
use tocsin_core::{Address, AttemptId, DeviceId};
use tocsin_iridium_sbd::config::SbdConfig;
use tocsin_iridium_sbd::io::spawn_sbd;
use tocsin_iridium_sbd::pty::{SimCommand, spawn_sim};
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

    // The kit answers 20 simulated seconds later; the modem rings; the driver reads it.
    let inbound = next_matching(&mut ev, "the kit's ack", |e| {
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
    assert_eq!(from, Address::SbdImei(KIT.into()));
    assert_eq!(text, "1 K7XT");
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
