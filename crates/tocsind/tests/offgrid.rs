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

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "offgrid-issuer-token-0123456789";
/// The daemon's clock and every simulator run this much faster than real time.
const SPEED: f64 = 60.0;
/// The mesh node of m1.
const M1_NODE: u32 = 0x0000_abcd;

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tocsin-offgrid-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One town, one village with five leads reached five ways, the town official above them.
fn write_district(dir: &Path) {
    let areas = json!({
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {"id": "t-1", "kind": "town", "name": "石门镇", "town": ""},
             "geometry": {"type": "Polygon", "coordinates": [[[116.0,40.0],[116.3,40.0],[116.3,40.3],[116.0,40.3],[116.0,40.0]]]}},
            {"type": "Feature", "properties": {"id": "v-1", "kind": "village", "name": "王家沟村", "town": "石门镇"},
             "geometry": {"type": "Polygon", "coordinates": [[[116.05,40.05],[116.1,40.05],[116.1,40.1],[116.05,40.1],[116.05,40.05]]]}}
        ]
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("areas.geojson"),
        serde_json::to_string_pretty(&areas).unwrap(),
    )
    .unwrap();
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
    std::fs::write(dir.join("people.csv"), people).unwrap();
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
    let modem = tocsin_at_modem::pty::spawn_sim(
        dir.join("modem0"),
        tocsin_at_modem::sim::SimConfig {
            phones: vec![
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
            default_script: ReplyBehaviour::Never,
            ..tocsin_at_modem::sim::SimConfig::default()
        },
        1,
        SPEED,
        cancel.child_token(),
    )
    .expect("GSM simulator on a pty");

    use tocsin_beidou::sim::{CardScript, ReplyBehaviour as Bd, SimDialect, TerminalConfig};
    let mut terminal = TerminalConfig::new("4207733");
    terminal.dialect = SimDialect::Bds3;
    // The driver paces in real time from the card's period: one "minute" of gateway time.
    terminal.frequency_secs = 1;
    let beidou = tocsin_beidou::pty::spawn_sim(
        vec![dir.join("bd0")],
        vec![terminal],
        tocsin_beidou::sim::SimConfig {
            latency_min_ms: 1_000,
            latency_max_ms: 3_000,
            cards: vec![
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
            default_script: Bd::Never,
            ..tocsin_beidou::sim::SimConfig::default()
        },
        2,
        SPEED,
        cancel.child_token(),
    )
    .expect("BeiDou simulator on a pty");

    use tocsin_meshtastic::sim::{NodeScript, ReplyBehaviour as Mr};
    let mesh = tocsin_meshtastic::runner::spawn_tcp_sim(
        0,
        tocsin_meshtastic::sim::SimConfig {
            nodes: vec![NodeScript {
                num: M1_NODE,
                long_name: "周三".into(),
                short_name: "ZS".into(),
                hops: 2,
                loss: 0.0,
                nak: None,
                behaviour: Mr::Reply {
                    min_secs: 20.0,
                    max_secs: 40.0,
                },
                position: None,
                heard_ago_secs: 60,
            }],
            ..tocsin_meshtastic::sim::SimConfig::default()
        },
        3,
        SPEED,
        cancel.child_token(),
    )
    .expect("Meshtastic simulator on loopback TCP");

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
    let cfg = format!(
        r#"
[node]
name = "offgrid"
data_dir = "data"
clock_speed = {SPEED}

[directory]
path = "district"

[ack]
key = "offgrid-secret-key-0123456789"

[api]
listen = "127.0.0.1:0"

[[api.tokens]]
name = "offgrid-operator"
token = "{TOKEN}"
role = "issuer"

# No synthesizer: calls play the attention tone and the test does not depend on espeak-ng.
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
    let path = dir.join("tocsin.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

struct Daemon {
    child: Child,
    base: String,
}

impl Daemon {
    fn start(config: &Path) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tocsind"))
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("TOCSIN_LOG", "warn")
            .spawn()
            .expect("start tocsind");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("tocsind exited before serving")
                .unwrap();
            if let Some(rest) = line.strip_prefix("tocsind: serving on ") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                eprintln!("[tocsind] {l}")
            }
        });
        Daemon { child, base }
    }

    fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "tocsind exited with {status}");
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn get(base: &str, path: &str) -> Value {
    let r = client()
        .get(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.json().await.unwrap()
}

fn by_person(deliveries: &Value) -> BTreeMap<String, Value> {
    deliveries
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["person"].as_str().unwrap().to_owned(), d.clone()))
        .collect()
}

/// Follows `/v1/events` until `done(summary, deliveries)` holds; returns both and every
/// record the stream carried meanwhile.
async fn wait_until(
    base: &str,
    id: &str,
    limit: Duration,
    done: impl Fn(&Value, &BTreeMap<String, Value>) -> bool,
) -> (Value, BTreeMap<String, Value>, Vec<Value>) {
    let fut = async {
        let mut events = client()
            .get(format!("{base}/v1/events"))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .unwrap();
        let mut stream = String::new();
        loop {
            let s = get(base, &format!("/v1/alerts/{id}")).await;
            let d = by_person(&get(base, &format!("/v1/alerts/{id}/deliveries")).await);
            if done(&s, &d) {
                let records = stream
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .filter_map(|l| serde_json::from_str(l.trim()).ok())
                    .collect();
                return (s, d, records);
            }
            match events.chunk().await {
                Ok(Some(bytes)) => stream.push_str(&String::from_utf8_lossy(&bytes)),
                other => panic!("event stream ended: {other:?}"),
            }
        }
    };
    tokio::time::timeout(limit, fut)
        .await
        .expect("the campaign did not reach the expected state in time")
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
    let dir = tempdir("red");
    write_district(&dir.join("district"));
    let mut sims = start_sims(&dir).await;
    let config = write_config(&dir, &sims);
    let daemon = Daemon::start(&config);

    let body = json!({
        "grade": "red", "kind": "flood", "headline": "山洪红色预警",
        "text": "沟道上游强降雨，请立即转移",
        "area": {"type": "Polygon", "coordinates": [[[116.04,40.04],[116.12,40.04],[116.12,40.12],[116.04,40.12],[116.04,40.04]]]}
    });
    let r = client()
        .post(format!("{}/v1/alerts", daemon.base))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["people"], 5, "the five leads of 王家沟村: {v}");
    let id = v["id"].as_str().unwrap().to_owned();

    // Done when the alert is closed and c2's call (answered, only listened) has ended.
    let (_, d, records) = wait_until(&daemon.base, &id, Duration::from_secs(60), |s, d| {
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
