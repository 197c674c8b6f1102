//! End to end over the off-grid bearers: the real `tocsind` binary drives a GSM modem, a
//! BeiDou terminal, a Meshtastic radio and a SIP trunk, each against its simulator run in
//! this test process (a pty, a pty, loopback TCP, loopback UDP).
//!
//! A red alert for one village: a lead with only a BeiDou card answers `1` from it
//! (authenticated by the card: counted); another BeiDou-only lead's answer comes from a
//! card nobody registered (rejected); a lead with a mesh radio answers over the mesh; one
//! lead presses 1 in the call; another answers the call and only listens.
//!
//! Waiting is event-driven: the test follows `/v1/events` and re-checks on every change.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use common::{Api, Events, Node};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The daemon's clock and every simulator run this much faster than real time.
const SPEED: f64 = 60.0;
const NODE: Node = Node {
    name: "offgrid",
    speed: SPEED,
};
/// The mesh node of m1.
const M1_NODE: u32 = 0x0000_abcd;

/// One town, one village with five leads reached five ways, the town official above them.
fn write_district(dir: &Path) {
    let people = format!(
        "\
id,name,role,supervisor,areas,lon,lat,town,phones,beidou,mesh,sbd,app
d1,赵区长,district_official,,,116.5,40.5,区政府,+8619900000001,,,,
t1,钱镇长,town_official,d1,,116.15,40.15,石门镇,+8619900000002,,,,
b1,孙一,village_head,t1,v-1,116.07,40.07,石门镇,,9900001,,,
b2,李二,grid_lead,t1,v-1,116.07,40.07,石门镇,,9900002,,,
m1,周三,grid_lead,t1,v-1,116.07,40.07,石门镇,+8619900000103,,!{M1_NODE:08x},,
c1,吴四,grid_lead,t1,v-1,116.07,40.07,石门镇,+8619900000104,,,,
c2,郑五,grid_lead,t1,v-1,116.07,40.07,石门镇,+8619900000105,,,,
"
    );
    common::write_district(dir, &[], &people);
}

/// Simulators for every bearer; the handles keep them running.
struct Sims {
    modem: tocsin_at_modem::pty::SimHandle,
    beidou: tocsin_beidou::pty::SimHandle,
    mesh: tocsin_meshtastic::runner::SimHandle,
    far_end: tocsin_sip::udp::FarEndHandle,
    cancel: CancellationToken,
}

async fn start_sims(dir: &Path) -> Sims {
    use tocsin_at_modem::sim::{PhoneScript, ReplyBehaviour};
    let cancel = CancellationToken::new();
    let phone = |n: &str, b: ReplyBehaviour| PhoneScript {
        number: n.into(),
        behaviour: b,
    };
    // By SMS only the town official answers (the door-knock tasks); the leads with
    // phones are reached on their other bearers.
    let modem = common::start_modem(
        dir,
        vec![
            phone(
                "+8619900000002",
                ReplyBehaviour::Reply {
                    min_secs: 20.0,
                    max_secs: 40.0,
                },
            ),
            phone("+8619900000103", ReplyBehaviour::Never),
            phone("+8619900000104", ReplyBehaviour::Never),
            phone("+8619900000105", ReplyBehaviour::Never),
        ],
        SPEED,
        &cancel,
    );

    use tocsin_beidou::sim::{CardScript, ReplyBehaviour as Bd};
    let beidou = common::start_beidou(
        dir,
        vec![
            // b1 answers a bare `1` from the card registered to them.
            CardScript {
                card: "9900001".into(),
                behaviour: Bd::ReplyOne {
                    min_secs: 20.0,
                    max_secs: 40.0,
                },
            },
            // b2's answer comes from a card nobody registered.
            CardScript {
                card: "9900002".into(),
                behaviour: Bd::FromOther {
                    card: "9912345".into(),
                    min_secs: 20.0,
                    max_secs: 40.0,
                },
            },
        ],
        SPEED,
        &cancel,
    );

    use tocsin_meshtastic::sim::ReplyBehaviour as Mr;
    let m1 = Mr::Reply {
        min_secs: 20.0,
        max_secs: 40.0,
    };
    let mesh = common::start_mesh(
        vec![common::mesh_node(M1_NODE, ("周三", "ZS"), 2, m1, 60)],
        SPEED,
        &cancel,
    );

    // The SIP far end runs in real time (so does the RTP it receives).
    use tocsin_sip::sim::Behaviour;
    let no_answer = Behaviour {
        reject: None,
        answer_after: None,
        press: None,
        hangup_after: None,
    };
    let far_end = tocsin_sip::udp::spawn_far_end(
        "127.0.0.1:0".parse().unwrap(),
        tocsin_sip::sim::SimConfig {
            default: no_answer.clone(),
            phones: vec![
                (
                    "19900000104".into(),
                    Behaviour {
                        answer_after: Some(Duration::from_millis(200)),
                        press: Some(('1', Duration::from_millis(400))),
                        ..no_answer.clone()
                    },
                ),
                (
                    "19900000105".into(),
                    Behaviour {
                        answer_after: Some(Duration::from_millis(200)),
                        ..no_answer.clone()
                    },
                ),
            ],
            seed: 4,
            ..tocsin_sip::sim::SimConfig::default()
        },
        cancel.child_token(),
    )
    .await
    .expect("SIP far end on loopback UDP");
    Sims {
        modem,
        beidou,
        mesh,
        far_end,
        cancel,
    }
}

fn write_config(dir: &Path, sims: &Sims) -> PathBuf {
    let rest = format!(
        r#"# No synthesizer: calls play the attention tone and the test does not depend on espeak-ng.
[speech]
synthesizer = "none"

[devices.modem-0]
type = "at_modem"
path = {modem:?}
per_minute = 30

[devices.beidou-0]
type = "beidou"
path = {beidou:?}
assumed_interval_secs = 60

[devices.mesh-0]
type = "meshtastic"
tcp = {mesh:?}
per_minute = 600
ack_timeout_secs = 5

[devices.sip-0]
type = "sip"
trunk = "{trunk}"
bind = "127.0.0.1:0"
rtp_port_base = 0
concurrent_calls = 8
ring_timeout_secs = 1
digit_wait_secs = 1
"#,
        modem = sims.modem.path.to_string_lossy(),
        beidou = sims.beidou.paths[0].to_string_lossy(),
        mesh = sims.mesh.address(),
        trunk = sims.far_end.sip,
    );
    NODE.write_config(dir, &rest)
}

/// Follows `/v1/events` until `done(summary, deliveries)` holds; returns both and every
/// record the stream carried meanwhile.
async fn wait_until(
    api: &Api,
    id: &str,
    limit: Duration,
    done: impl Fn(&Value, &BTreeMap<String, Value>) -> bool,
) -> (Value, BTreeMap<String, Value>, Vec<Value>) {
    let mut events = Events::subscribe(api).await;
    let (s, d) = events
        .until(limit, "the campaign's expected state", async || {
            let s = api.get(&format!("/v1/alerts/{id}")).await;
            let d = api.deliveries(id).await;
            done(&s, &d).then_some((s, d))
        })
        .await;
    (s, d, events.records())
}

fn voice_delivered(d: &Value) -> bool {
    d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["bearer"] == "voice" && a["outcome"].as_str().unwrap().starts_with("delivered"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_alert_is_answered_by_beidou_mesh_and_key_1_and_a_foreign_card_is_rejected() {
    let dir = NODE.tempdir("red");
    write_district(&dir.join("district"));
    let mut sims = start_sims(&dir).await;
    let config = write_config(&dir, &sims);
    let daemon = NODE.start(&config);
    let api = &daemon.api;

    let v = api.issue(&common::red_flood()).await;
    assert_eq!(v["people"], 5, "the five leads of 王家沟村: {v}");
    let id = v["id"].as_str().unwrap().to_owned();

    // Done when the alert is closed and c2's call (answered, only listened) has ended.
    let (_, d, records) = wait_until(api, &id, Duration::from_secs(60), |s, d| {
        s["state"] != "active" && d.get("c2").is_some_and(voice_delivered)
    })
    .await;

    let via = |p: &str| d[p]["ack_evidence"].as_str().unwrap_or("").to_owned();
    // b1: a bare `1` from their own card counts (the BeiDou network authenticates it).
    assert_eq!(d["b1"]["state"], "acknowledged", "{}", d["b1"]);
    assert!(
        via("b1").starts_with("bd:9900001 via beidou-0"),
        "{}",
        via("b1")
    );
    assert!(
        d["b1"]["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["bearer"] == "beidou"),
        "b1 has only a BeiDou card"
    );
    // b2: the reply came from a card registered to nobody: recorded as rejected (unknown
    // sender), never counted; b2 is escalated.
    assert_ne!(d["b2"]["state"], "acknowledged", "{}", d["b2"]);
    assert_eq!(d["b2"]["escalated_to"], "t1", "{}", d["b2"]);
    let rejected: Vec<&Value> = records
        .iter()
        .filter(|e| e["kind"] == "reply" && e["data"]["verdict"]["verdict"] == "rejected")
        .collect();
    assert!(
        rejected
            .iter()
            .any(|e| e["data"]["from"].to_string().contains("9912345")
                && e["data"]["verdict"]["reason"] == "unknown_sender"),
        "{rejected:?}"
    );
    // m1 answered over the mesh, with the code.
    assert_eq!(d["m1"]["state"], "acknowledged", "{}", d["m1"]);
    assert!(
        via("m1").starts_with(&format!("mesh:!{M1_NODE:08x} via mesh-0")),
        "{}",
        via("m1")
    );
    // c1 pressed 1 in the call.
    assert_eq!(d["c1"]["state"], "acknowledged", "{}", d["c1"]);
    assert!(via("c1").contains("via sip-0"), "{}", via("c1"));
    assert_eq!(d["c1"]["late"], false);
    // c2 picked up and listened through, but never pressed: not an ack; escalated.
    assert_ne!(d["c2"]["state"], "acknowledged", "{}", d["c2"]);
    assert_eq!(d["c2"]["escalated_to"], "t1", "{}", d["c2"]);

    // What the devices saw: the BeiDou terminal sent to both cards; the mesh radio sent
    // m1 an addressed text with the code; the far end heard key 1 only in c1's call.
    let bd = sims.beidou.submits.lock().unwrap().clone();
    assert!(bd.len() >= 2, "{bd:?}");
    let sent = sims.mesh.sent.lock().unwrap().clone();
    assert!(!sent.is_empty());
    let mut reports = Vec::new();
    while let Ok(r) = sims.far_end.reports.try_recv() {
        reports.push(r);
    }
    let c1_calls: Vec<_> = reports.iter().filter(|r| r.user == "19900000104").collect();
    assert!(
        c1_calls
            .iter()
            .any(|r| r.answered && r.pressed.contains('1')),
        "{reports:?}"
    );
    let c2_calls: Vec<_> = reports.iter().filter(|r| r.user == "19900000105").collect();
    assert!(
        c2_calls
            .iter()
            .any(|r| r.answered && r.pressed.is_empty() && r.loud_frames > 0),
        "c2 heard the prompt and pressed nothing: {reports:?}"
    );
    daemon.stop();
    sims.cancel.cancel();
}
