//! The real driver task against the simulator on a real pseudo-terminal when the cell
//! network goes: the modem reports itself down (pushed `+CREG: 2`), a warning sent
//! meanwhile waits in the driver without failing, and goes out once registration returns.

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

/// Waits for the first event matching `pred`; returns it and every event before it.
async fn until(
    rx: &mut mpsc::Receiver<DeviceEvent>,
    what: &str,
    pred: impl Fn(&DriverEvent) -> bool,
) -> (DriverEvent, Vec<DriverEvent>) {
    let wait = async {
        let mut before = Vec::new();
        while let Some(e) = rx.recv().await {
            if pred(&e.event) {
                return (e.event, before);
            }
            before.push(e.event);
        }
        panic!("event channel closed while waiting for {what}");
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warning_sent_while_the_network_is_gone_goes_out_when_it_is_back() {
    let dir = std::env::temp_dir().join(format!("tocsin-net-pty-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("modem0");
    let cancel = CancellationToken::new();
    let sim_cfg = SimConfig {
        per_message_latency_ms: 200,
        status_report_delay_ms: 500,
        default_script: ReplyBehaviour::Never,
        ..SimConfig::default()
    };
    // Simulated time runs 10× faster.
    let sim = spawn_sim(link.clone(), sim_cfg, 1, 10.0, cancel.clone()).unwrap();
    let (ev_tx, mut ev) = mpsc::channel(1024);
    let driver = spawn_modem(
        DeviceId::from("modem0"),
        ModemConfig::new(link.to_str().unwrap()),
        ev_tx,
        cancel.clone(),
    );
    until(
        &mut ev,
        "modem up",
        |e| matches!(e, DriverEvent::Health(h) if h.up && h.registered),
    )
    .await;

    // 15 s of simulated time without a network: 1.5 s of real time.
    sim.commands
        .send(SimCommand::LoseNetwork {
            down_for: Duration::from_secs(15),
        })
        .await
        .unwrap();
    let (down, _) = until(
        &mut ev,
        "modem down",
        |e| matches!(e, DriverEvent::Health(h) if !h.up),
    )
    .await;
    let DriverEvent::Health(down) = down else {
        unreachable!()
    };
    assert!(!down.registered);
    assert_eq!(
        down.last_error.as_deref(),
        Some("not registered (searching)")
    );

    driver
        .commands
        .send(DriverCommand::Send(Outbound {
            attempt: AttemptId(1),
            to: Address::Phone(PhoneNumber::parse("+8613800138000", "86").unwrap()),
            text: "【红色预警】山洪。回复 1 K7XT 确认".into(),
            want_report: true,
        }))
        .await
        .unwrap();
    let (_, meanwhile) = until(
        &mut ev,
        "modem back up",
        |e| matches!(e, DriverEvent::Health(h) if h.up && h.registered),
    )
    .await;
    assert!(
        meanwhile
            .iter()
            .all(|e| matches!(e, DriverEvent::Accepted { .. })),
        "nothing but the acceptance while the network was gone: {meanwhile:?}"
    );
    assert!(sim.submits.lock().unwrap().is_empty());
    let (sent, before) = until(&mut ev, "sent", |e| {
        matches!(e, DriverEvent::Sent { .. } | DriverEvent::Failed { .. })
    })
    .await;
    assert!(
        matches!(
            sent,
            DriverEvent::Sent {
                attempt: AttemptId(1),
                ..
            }
        ),
        "{sent:?} after {before:?}"
    );
    until(&mut ev, "delivered", |e| {
        matches!(
            e,
            DriverEvent::Delivered {
                attempt: AttemptId(1),
                ..
            }
        )
    })
    .await;
    assert_eq!(sim.submits.lock().unwrap().len(), 1);

    cancel.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
