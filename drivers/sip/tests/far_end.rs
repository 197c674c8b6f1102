//! The real driver (`io.rs`) against the simulated far end on UDP sockets on 127.0.0.1:
//! an ack by key 1, a busy line, and a phone that hangs up during the prompt; the far end
//! checks that the prompt arrived in time and was not silence.

use std::collections::HashMap;
use std::time::Duration;

use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId, PhoneNumber};
use tocsin_sip::config::SipConfig;
use tocsin_sip::io::spawn_sip;
use tocsin_sip::sim::{Behaviour, SimConfig};
use tocsin_sip::udp::spawn_far_end;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_on_udp_calls_the_simulated_far_end() {
    let cancel = CancellationToken::new();
    let mut sim = SimConfig::default();
    sim.default.answer_after = Some(Duration::from_millis(200));
    sim.default.press = Some(('1', Duration::from_millis(500)));
    sim.phones.push((
        "13800138002".into(),
        Behaviour {
            reject: Some(486),
            ..Behaviour::default()
        },
    ));
    sim.phones.push((
        "13800138003".into(),
        Behaviour {
            press: None,
            hangup_after: Some(Duration::from_millis(300)),
            ..Behaviour::default()
        },
    ));
    let mut far = spawn_far_end("127.0.0.1:0".parse().unwrap(), sim, cancel.clone())
        .await
        .unwrap();

    let mut cfg = SipConfig::new(far.sip.to_string());
    cfg.bind = "127.0.0.1:0".into();
    cfg.rtp_port_base = 0;
    cfg.concurrent_calls = 3;
    cfg.prompt_secs = 1.0;
    let (tx, mut rx) = mpsc::channel::<DeviceEvent>(1024);
    let driver = spawn_sip(DeviceId::from("trunk0"), cfg, tx, cancel.clone());
    for a in 1..=3u64 {
        let to = Address::Phone(PhoneNumber::parse(&format!("+86138001380{a:02}"), "86").unwrap());
        driver
            .commands
            .send(DriverCommand::Send(Outbound {
                attempt: AttemptId(a),
                to,
                text: "预警".into(),
                want_report: false,
            }))
            .await
            .unwrap();
    }
    let mut done: HashMap<u64, DriverEvent> = HashMap::new();
    let mut acks = 0;
    let run = async {
        while done.len() < 3 {
            let Some(e) = rx.recv().await else { break };
            match e.event {
                DriverEvent::Inbound { ref text, .. } if text == "1" => acks += 1,
                ev @ (DriverEvent::Delivered { attempt, .. }
                | DriverEvent::Failed { attempt, .. }) => {
                    done.insert(attempt.0, ev);
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, run)
        .await
        .expect("every call ends");
    assert_eq!(acks, 1);
    assert!(
        matches!(&done[&1], DriverEvent::Delivered { evidence, .. } if evidence.contains("digits: 1")),
        "{:?}",
        done[&1]
    );
    assert!(
        matches!(&done[&2], DriverEvent::Failed { retryable: true, reason, .. } if reason.contains("busy")),
        "{:?}",
        done[&2]
    );
    assert!(
        matches!(&done[&3], DriverEvent::Failed { retryable: true, reason, .. } if reason.contains("cut off")),
        "{:?}",
        done[&3]
    );
    let mut reports = Vec::new();
    while reports.len() < 3 {
        let r = tokio::time::timeout(PATIENCE, far.reports.recv())
            .await
            .unwrap()
            .unwrap();
        reports.push(r);
    }
    let acked = reports.iter().find(|r| r.user == "13800138001").unwrap();
    assert!(acked.frames >= 20, "{acked:?}");
    assert!(acked.loud_frames > 0, "the prompt was silence: {acked:?}");
    // Real-time pacing on a busy CI box: allow a few late frames, not a stalled stream.
    assert!(acked.underruns * 10 <= acked.frames, "{acked:?}");
    cancel.cancel();
}
