//! The real driver (`io.rs`) against SIPp, an independent SIP implementation, on
//! 127.0.0.1: SIPp answers N concurrent calls with PCMU + telephone-event, presses `1`
//! (RFC 4733) while the prompt plays, and expects the gateway's BYE. Each call must give
//! `Sent`, an `Inbound` "1" from the callee, and `Delivered`.
//!
//! Without `sipp` on the PATH (Debian package `sip-tester`, which `scripts/test`
//! installs) the test prints a note and passes.

use std::collections::{HashMap, HashSet};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId, PhoneNumber};
use tocsin_sip::config::SipConfig;
use tocsin_sip::io::spawn_sip;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const CALLS: u64 = 5;
/// Generous bound for the whole run; the test waits for events, never for time.
const PATIENCE: Duration = Duration::from_secs(60);

#[allow(clippy::unwrap_used, reason = "loopback is always there in tests")]
fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_answers_and_every_concurrent_call_records_a_dtmf_ack() {
    if Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        println!(
            "sipp not installed (Debian package sip-tester): skipping the SIPp end-to-end test"
        );
        return;
    }
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/uas_ack_1.xml");
    let (sip_port, media_port) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("tocsin-sipp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sipp = Command::new("sipp")
        .args(["-sf", scenario, "-i", "127.0.0.1", "-mi", "127.0.0.1"])
        .args(["-p", &sip_port.to_string(), "-mp", &media_port.to_string()])
        .args([
            "-m",
            &CALLS.to_string(),
            "-timeout",
            "60s",
            "-nostdin",
            "-trace_err",
        ])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp starts");

    let mut cfg = SipConfig::new(format!("127.0.0.1:{sip_port}"));
    cfg.bind = "127.0.0.1:0".into();
    cfg.rtp_port_base = 0;
    cfg.concurrent_calls = CALLS as usize;
    cfg.prompt_secs = 3.0;
    cfg.digit_wait_secs = 5;
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel::<DeviceEvent>(1024);
    let driver = spawn_sip(DeviceId::from("trunk0"), cfg, tx, cancel.clone());
    let mut callee = HashMap::new();
    for a in 1..=CALLS {
        let to = Address::Phone(PhoneNumber::parse(&format!("+86138001380{a:02}"), "86").unwrap());
        callee.insert(a, to.clone());
        driver
            .commands
            .send(DriverCommand::Send(Outbound {
                attempt: AttemptId(a),
                to,
                text: "【红色预警】山洪，请立即转移。按1确认。".into(),
                want_report: false,
            }))
            .await
            .unwrap();
    }

    let mut sent: HashMap<u64, String> = HashMap::new();
    let mut acks: HashSet<Address> = HashSet::new();
    let mut done: HashMap<u64, DriverEvent> = HashMap::new();
    let run = async {
        while done.len() < CALLS as usize {
            let Some(e) = rx.recv().await else { break };
            match e.event {
                DriverEvent::Sent { attempt, reference } => {
                    sent.insert(attempt.0, reference);
                }
                DriverEvent::Inbound {
                    from,
                    text,
                    evidence,
                    ..
                } => {
                    assert_eq!(text, "1");
                    assert!(
                        evidence.starts_with("DTMF 1 (RFC 4733) in call "),
                        "{evidence}"
                    );
                    acks.insert(from);
                }
                ev @ (DriverEvent::Delivered { attempt, .. }
                | DriverEvent::Failed { attempt, .. }) => {
                    done.insert(attempt.0, ev);
                }
                _ => {}
            }
        }
    };
    let finished = tokio::time::timeout(PATIENCE, run).await;
    cancel.cancel();
    let status = tokio::task::spawn_blocking(move || {
        let out = sipp.wait_with_output();
        out.map(|o| (o.status, String::from_utf8_lossy(&o.stderr).into_owned()))
    })
    .await
    .unwrap();
    assert!(
        finished.is_ok(),
        "timed out: sent {sent:?}, acks {acks:?}, done {done:?}"
    );
    for a in 1..=CALLS {
        assert!(sent.contains_key(&a), "attempt {a} never answered");
        assert!(
            acks.contains(&callee[&a]),
            "no ack from attempt {a}'s callee"
        );
        match &done[&a] {
            DriverEvent::Delivered { evidence, .. } => {
                assert!(
                    evidence.contains("digits: 1; ended by us after the key 1 ack"),
                    "{evidence}"
                )
            }
            other => panic!("attempt {a}: {other:?}"),
        }
    }
    let distinct: HashSet<&String> = sent.values().collect();
    assert_eq!(
        distinct.len(),
        CALLS as usize,
        "each call has its own Call-ID"
    );
    let (status, stderr) = status.unwrap();
    assert!(status.success(), "sipp failed ({status}): {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
