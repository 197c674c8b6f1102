//! The real driver task (`io.rs`, tokio-serial) against the simulator on a real
//! pseudo-terminal: send, status report, reply, release, and a hang-up in the middle of a
//! campaign after which a queued warning still goes out.

use std::time::Duration;

use tocsin_at_modem::config::ModemConfig;
use tocsin_at_modem::io::spawn_modem;
use tocsin_at_modem::pty::{SimCommand, spawn_sim};
use tocsin_at_modem::sim::{ReplyBehaviour, SimConfig};
use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId, PhoneNumber};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Generous bound for anything to happen; the test never sleeps, it waits for events.
const PATIENCE: Duration = Duration::from_secs(20);

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

#[allow(clippy::unwrap_used, reason = "a fixed, valid number")]
fn send(attempt: u64, text: &str) -> DriverCommand {
    DriverCommand::Send(Outbound {
        attempt: AttemptId(attempt),
        to: Address::Phone(PhoneNumber::parse("+8613800138000", "86").unwrap()),
        text: text.to_owned(),
        want_report: true,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_over_a_real_pty_sends_delivers_answers_and_survives_a_hangup() {
    let dir = std::env::temp_dir().join(format!("tocsin-pty-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("modem0");
    let cancel = CancellationToken::new();
    let sim_cfg = SimConfig {
        per_message_latency_ms: 200,
        status_report_delay_ms: 500,
        default_script: ReplyBehaviour::Never,
        ..SimConfig::default()
    };
    // Simulated time runs 10× faster: 200 ms latency is 20 ms of real time.
    let sim = spawn_sim(link.clone(), sim_cfg, 1, 10.0, cancel.clone()).unwrap();

    let (ev_tx, mut ev) = mpsc::channel(1024);
    let driver = spawn_modem(
        DeviceId::from("modem0"),
        ModemConfig::new(link.to_str().unwrap()),
        ev_tx,
        cancel.clone(),
    );

    next_matching(
        &mut ev,
        "modem up",
        |e| matches!(e, DriverEvent::Health(h) if h.up && h.registered),
    )
    .await;

    driver
        .commands
        .send(send(1, "【红色预警】山洪。回复 1 K7XT 确认"))
        .await
        .unwrap();
    let sent = next_matching(&mut ev, "sent", |e| matches!(e, DriverEvent::Sent { .. })).await;
    assert_eq!(
        sent,
        DriverEvent::Sent {
            attempt: AttemptId(1),
            reference: "0".into()
        }
    );
    let delivered = next_matching(&mut ev, "delivered", |e| {
        matches!(e, DriverEvent::Delivered { .. })
    })
    .await;
    assert!(matches!(
        delivered,
        DriverEvent::Delivered {
            attempt: AttemptId(1),
            ..
        }
    ));
    {
        let log = sim.submits.lock().unwrap();
        assert_eq!(log[0].text, "【红色预警】山洪。回复 1 K7XT 确认");
        assert_eq!(log[0].destination, "+8613800138000");
    }

    sim.commands
        .send(SimCommand::DeliverSms {
            from: "+8613800138000".into(),
            text: "1 K7XT".into(),
        })
        .await
        .unwrap();
    let inbound = next_matching(&mut ev, "inbound", |e| {
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
    assert_eq!(from.to_string(), "+8613800138000");
    assert_eq!(text, "1 K7XT");
    driver
        .commands
        .send(DriverCommand::Release(receipt.unwrap()))
        .await
        .unwrap();

    // The modem is pulled; while it is gone a warning is queued; it goes out after it is back.
    sim.commands
        .send(SimCommand::HangUp {
            down_for: Duration::from_millis(700),
        })
        .await
        .unwrap();
    next_matching(
        &mut ev,
        "modem down",
        |e| matches!(e, DriverEvent::Health(h) if !h.up),
    )
    .await;
    driver
        .commands
        .send(send(2, "第二条预警 回复 1 AAAA"))
        .await
        .unwrap();
    next_matching(
        &mut ev,
        "modem back up",
        |e| matches!(e, DriverEvent::Health(h) if h.up),
    )
    .await;
    let sent = next_matching(&mut ev, "queued warning sent", |e| {
        matches!(e, DriverEvent::Sent { .. })
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
    assert_eq!(sim.submits.lock().unwrap().len(), 2);

    cancel.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
