//! Field-crew check-ins end to end: the real `tocsind` binary with a Meshtastic radio
//! (simulated, loopback TCP) and a GSM modem (simulated, pty), both run in this process.
//!
//! Crew member 周三 carries a mesh radio. Their radio reports a position once, far from
//! where the directory places them, then goes quiet. After the check-in period and grace
//! the gateway raises a `checkin` alert to their supervisor, the town official, who
//! answers it by SMS with the code. A second crew member, with a longer period of their
//! own, is not reported. The reported position then puts the quiet crew member inside a
//! geofenced alert drawn around it.
//!
//! Waiting is event-driven: the test follows `/v1/events` and re-checks on every record.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use common::{Api, Events, Node};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The daemon's clock and the simulators run this much faster than real time: the 420 s
/// of period and grace pass in 4.2 s.
const SPEED: f64 = 100.0;
const NODE: Node = Node {
    name: "checkin",
    speed: SPEED,
};
/// The radio of crew member F1 (周三).
const F1_NODE: u32 = 0x0000_f001;
/// The radio of crew member F2, never heard in this test.
const F2_NODE: u32 = 0x0000_f002;
/// Where F1's radio reports from: inside the town, outside every village, and about
/// 25 km from where the directory places them.
const F1_REPORTED: [f64; 2] = [116.25, 40.25];

/// One town and one village; a district official, the town official who supervises the
/// crew, and two crew members with mesh radios answering for the village.
fn write_district(dir: &Path) {
    let people = format!(
        "\
id,name,role,supervisor,areas,lon,lat,town,phones,beidou,mesh,sbd,app
d1,赵区长,district_official,,,116.5,40.5,区政府,+8619900000001,,,,
t1,钱镇长,town_official,d1,,116.15,40.15,石门镇,+8619900000002,,,,
F1,周三,field_crew,t1,v-1,116.07,40.07,石门镇,,,!{F1_NODE:08x},,
F2,吴四,field_crew,t1,v-1,116.07,40.07,石门镇,,,!{F2_NODE:08x},,
"
    );
    common::write_district(dir, &[], &people);
}

/// The simulators; the handles keep them running.
struct Sims {
    modem: tocsin_at_modem::pty::SimHandle,
    mesh: tocsin_meshtastic::runner::SimHandle,
    cancel: CancellationToken,
}

fn start_sims(dir: &Path) -> Sims {
    use tocsin_at_modem::sim::{PhoneScript, ReplyBehaviour};
    let cancel = CancellationToken::new();
    // The town official answers every SMS with its code.
    let modem = common::start_modem(
        dir,
        vec![PhoneScript {
            number: "+8619900000002".into(),
            behaviour: ReplyBehaviour::Reply {
                min_secs: 20.0,
                max_secs: 40.0,
            },
        }],
        SPEED,
        &cancel,
    );

    use tocsin_meshtastic::sim::ReplyBehaviour as Mr;
    // The radio's database heard F1 ten hours ago: old news, which must not count as a
    // check-in after the daemon started.
    let mesh = common::start_mesh(
        vec![common::mesh_node(
            F1_NODE,
            ("周三", "ZS"),
            1,
            Mr::Never,
            36_000,
        )],
        SPEED,
        &cancel,
    );
    Sims {
        modem,
        mesh,
        cancel,
    }
}

fn write_config(dir: &Path, sims: &Sims) -> PathBuf {
    let rest = format!(
        r#"[speech]
synthesizer = "none"

[checkins]
period_secs = 300
grace_secs = 120
grade = "orange"

# F2 checks in hourly: not overdue within this test.
[[checkins.crews]]
person = "F2"
period_secs = 3600

[devices.modem-0]
type = "at_modem"
path = {modem:?}
per_minute = 30

[devices.mesh-0]
type = "meshtastic"
tcp = {mesh:?}
per_minute = 600
ack_timeout_secs = 5
"#,
        modem = sims.modem.path.to_string_lossy(),
        mesh = sims.mesh.address(),
    );
    NODE.write_config(dir, &rest)
}

/// The check-in alerts the gateway holds.
async fn checkin_alerts(api: &Api) -> Vec<Value> {
    api.get("/v1/alerts")
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["alert"]["kind"] == "checkin")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crew_gone_quiet_alerts_its_supervisor_who_acks_by_sms_and_its_position_is_geofenced() {
    let dir = NODE.tempdir("quiet");
    write_district(&dir.join("district"));
    let sims = start_sims(&dir);
    let config = write_config(&dir, &sims);
    let daemon = NODE.start(&config);
    let api = &daemon.api;
    let mut events = Events::subscribe(api).await;

    // F1's radio reports once (its only check-in), then goes quiet.
    sims.mesh
        .commands
        .send(tocsin_meshtastic::runner::SimCommand::ReportPosition {
            from: F1_NODE,
            lat: F1_REPORTED[1],
            lon: F1_REPORTED[0],
        })
        .await
        .unwrap();

    let limit = Duration::from_secs(15);
    let (alert, deliveries) = events
        .until(limit, "an acknowledged check-in alert", async || {
            if let [a] = checkin_alerts(api).await.as_slice() {
                let id = a["alert"]["id"].as_str().unwrap().to_owned();
                let d = api.get(&format!("/v1/alerts/{id}/deliveries")).await;
                if d.as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d["state"] == "acknowledged")
                {
                    return Some((a.clone(), d));
                }
            }
            None
        })
        .await;

    // The alert: kind checkin, orange, about F1, with where and when they were last heard.
    let a = &alert["alert"];
    assert_eq!(a["kind"], "checkin");
    assert_eq!(a["grade"], "orange");
    assert_eq!(a["headline"], "外勤组 周三 未按时报到");
    let text = a["text"].as_str().unwrap();
    assert!(
        text.contains("最后位置 北纬40.25000 东经116.25000"),
        "the report's position: {text}"
    );
    assert!(text.contains("最后报到 "), "the report's time: {text}");
    assert!(!text.contains("未收到其报到"), "F1 was heard once: {text}");
    // Its one target is the supervisor, who answered by SMS with the code.
    let d = deliveries.as_array().unwrap();
    assert_eq!(d.len(), 1, "{deliveries}");
    assert_eq!(d[0]["person"], "t1");
    assert_eq!(d[0]["state"], "acknowledged");
    assert!(
        d[0]["ack_evidence"]
            .as_str()
            .unwrap()
            .contains("via modem-0"),
        "{}",
        d[0]
    );
    let sms = sims.modem.submits.lock().unwrap().clone();
    assert!(
        sms.iter()
            .any(|s| s.destination.ends_with("8619900000002") && s.text.contains("未按时报到")),
        "{sms:?}"
    );
    // F2, on an hourly period of its own, is not overdue; F1 is reported once.
    assert_eq!(checkin_alerts(api).await.len(), 1);
    // A check-in alert is not re-planned from its area.
    let id = a["id"].as_str().unwrap();
    let r = api
        .request(reqwest::Method::PATCH, &format!("/v1/alerts/{id}"))
        .json(&json!({"grade": "red"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "{:?}", r.text().await);

    // F1's last reported position is 25 km from their directory location: an alert drawn
    // around it reaches them, and nobody else.
    let body = json!({
        "grade": "blue", "kind": "landslide", "headline": "滑坡蓝色预警",
        "text": "外勤点附近坡体位移，请注意避让",
        "area": {"type": "Circle", "center": F1_REPORTED, "radius_m": 500.0}
    });
    let v = api.issue(&body).await;
    assert_eq!(
        (v["people"].clone(), v["located"].clone()),
        (json!(1), json!(1)),
        "{v}"
    );
    let id = v["id"].as_str().unwrap();
    let d = api.get(&format!("/v1/alerts/{id}/deliveries")).await;
    let people: Vec<&str> = d
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["person"].as_str().unwrap())
        .collect();
    assert_eq!(people, ["F1"]);

    daemon.stop();
    sims.cancel.cancel();
}
