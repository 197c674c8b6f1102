//! The real driver task (`io.rs`, tokio-serial) against the simulated terminals on real
//! pseudo-terminals: a pool of two terminals (one 2.1, one BDS-3, dialects detected), a
//! warning to a person's card answered with the code, a message between the two
//! terminals' cards, and a terminal pulled mid-campaign whose queued warning still goes out.

use std::time::Duration;

use tocsin_beidou::config::BeidouConfig;
use tocsin_beidou::io::spawn_beidou;
use tocsin_beidou::pty::{SimCommand, spawn_sim};
use tocsin_beidou::sim::{ReplyBehaviour, SimConfig, SimDialect, TerminalConfig};
use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Generous bound for anything to happen; the test never sleeps, it waits for events.
const PATIENCE: Duration = Duration::from_secs(20);

async fn next_matching(
    rx: &mut mpsc::Receiver<DeviceEvent>,
    what: &str,
    pred: impl Fn(&DeviceEvent) -> bool,
) -> DeviceEvent {
    let wait = async {
        while let Some(e) = rx.recv().await {
            if pred(&e) {
                return e;
            }
        }
        panic!("event channel closed while waiting for {what}");
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn send(attempt: u64, card: &str, text: &str) -> DriverCommand {
    DriverCommand::Send(Outbound {
        attempt: AttemptId(attempt),
        to: Address::BeidouCard(card.to_owned()),
        text: text.to_owned(),
        want_report: true,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_two_terminals_over_real_ptys_sends_answers_and_survives_a_hangup() {
    let dir = std::env::temp_dir().join(format!("tocsin-bd-pty-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let links = vec![dir.join("bd0"), dir.join("bd1")];
    let cancel = CancellationToken::new();
    let mut a = TerminalConfig::new("0242286");
    // The driver paces in real time and the simulator in simulated time: a 1 s card keeps
    // the driver's own pacing short.
    a.frequency_secs = 1;
    let mut b = TerminalConfig::new("4207733");
    b.dialect = SimDialect::Bds3;
    b.frequency_secs = 1;
    let sim_cfg = SimConfig {
        latency_min_ms: 1_000,
        latency_max_ms: 2_000,
        default_script: ReplyBehaviour::ReplyCode {
            min_secs: 10.0,
            max_secs: 10.0,
        },
        ..SimConfig::default()
    };
    // Simulated time runs 20× faster: latencies and reply delays shrink.
    let sim = spawn_sim(links.clone(), vec![a, b], sim_cfg, 1, 20.0, cancel.clone()).unwrap();

    let (ev_tx, mut ev) = mpsc::channel(1024);
    let cfg = |link: &std::path::Path| BeidouConfig::new(link.to_str().unwrap());
    let bd0 = spawn_beidou(
        DeviceId::from("bd0"),
        cfg(&links[0]),
        ev_tx.clone(),
        cancel.clone(),
    );
    let _bd1 = spawn_beidou(DeviceId::from("bd1"), cfg(&links[1]), ev_tx, cancel.clone());
    assert!(bd0.caps.sender_authenticated);

    // Both terminals come up, in whichever order: waiting for one by name would skip
    // (and lose) the other's report if it came first.
    let mut up = std::collections::BTreeSet::new();
    while up.len() < 2 {
        let e = next_matching(
            &mut ev,
            "terminal up",
            |e| matches!(&e.event, DriverEvent::Health(h) if h.up && h.registered),
        )
        .await;
        up.insert(e.device.as_str().to_owned());
    }

    // A warning to a person's card; the reply carries the code and comes from their card.
    bd0.commands
        .send(send(1, "300001", "【红色预警】山洪，立即转移。回复 1 K7XT"))
        .await
        .unwrap();
    let sent = next_matching(&mut ev, "sent", |e| {
        matches!(e.event, DriverEvent::Sent { .. })
    })
    .await;
    assert!(matches!(
        sent.event,
        DriverEvent::Sent {
            attempt: AttemptId(1),
            ..
        }
    ));
    let reply = next_matching(&mut ev, "reply", |e| {
        matches!(e.event, DriverEvent::Inbound { .. })
    })
    .await;
    assert_eq!(reply.device.as_str(), "bd0");
    let DriverEvent::Inbound { from, text, .. } = reply.event else {
        unreachable!()
    };
    assert_eq!(from, Address::BeidouCard("0300001".into()));
    assert_eq!(text, "1 K7XT");

    // From the 2.1 terminal's card to the BDS-3 terminal's card.
    bd0.commands
        .send(send(2, "4207733", "收到，已转移"))
        .await
        .unwrap();
    let got = next_matching(&mut ev, "card to card", |e| {
        e.device.as_str() == "bd1" && matches!(e.event, DriverEvent::Inbound { .. })
    })
    .await;
    let DriverEvent::Inbound { from, text, .. } = got.event else {
        unreachable!()
    };
    assert_eq!(from, Address::BeidouCard("0242286".into()));
    assert_eq!(text, "收到，已转移");

    // Terminal 0 is pulled; a warning queued meanwhile goes out once it is back.
    sim.commands
        .send(SimCommand::HangUp {
            terminal: 0,
            down_for: Duration::from_millis(700),
        })
        .await
        .unwrap();
    next_matching(&mut ev, "terminal down", |e| {
        e.device.as_str() == "bd0" && matches!(&e.event, DriverEvent::Health(h) if !h.up)
    })
    .await;
    bd0.commands
        .send(send(3, "300003", "第二条预警 回复 1 AAAA"))
        .await
        .unwrap();
    let sent = next_matching(&mut ev, "queued warning sent", |e| {
        matches!(
            e.event,
            DriverEvent::Sent {
                attempt: AttemptId(3),
                ..
            }
        )
    })
    .await;
    assert_eq!(sent.device.as_str(), "bd0");
    {
        let log = sim.submits.lock().unwrap();
        assert_eq!(log.len(), 3, "{log:?}");
        assert_eq!(log[2].text, "第二条预警 回复 1 AAAA");
    }

    cancel.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
