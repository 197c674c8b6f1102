//! End to end: the real `tocsind` binary, real modem drivers on real pseudo-terminals
//! against the GSM simulator (run in this test process, so it outlives a killed daemon
//! the way a real modem does), the real HTTP API and the real SQLite log.
//!
//! Waiting is event-driven: the tests follow the daemon's `/v1/events` stream and check
//! the alert's state when something happens, with a generous upper bound.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use common::{Api, Node};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tocsin_at_modem::sim::{PhoneScript, ReplyBehaviour, SimConfig};

/// The daemon's clock runs this much faster: the 5-minute red deadline passes in 5 s.
const SPEED: f64 = 60.0;
const NODE: Node = Node {
    name: "e2e",
    speed: SPEED,
};

/// A tiny district: one town, one village with six leads and a resident, a town official
/// who supervises the leads, and a district official above.
fn write_district(dir: &Path) {
    let v2 = json!(
        {"type": "Feature", "properties": {"id": "v-2", "kind": "village", "name": "李家台村", "town": "石门镇"},
         "geometry": {"type": "Polygon", "coordinates": [[[116.2,40.2],[116.25,40.2],[116.25,40.25],[116.2,40.25],[116.2,40.2]]]}}
    );
    let people = "\
id,name,role,supervisor,areas,lon,lat,town,phones
d1,赵区长,district_official,,,116.5,40.5,区政府,+8619900000001
t1,钱镇长,town_official,d1,,116.15,40.15,石门镇,+8619900000002
v1,孙一,village_head,t1,v-1,116.07,40.07,石门镇,+8619900000101
v2,李二,grid_lead,t1,v-1,116.07,40.07,石门镇,+8619900000102
v3,周三,hazard_warden,t1,v-1,116.07,40.07,石门镇,+8619900000103
v4,吴四,grid_lead,t1,v-1,116.07,40.07,石门镇,+8619900000104
v5,郑五,grid_lead,t1,v-1,116.07,40.07,石门镇,+8619900000105
v6,王六,grid_lead,t1,v-1,116.07,40.07,石门镇,+8619900000106
r1,冯七,resident,,,116.08,40.08,石门镇,+8619900000107
x1,陈八,village_head,t1,v-2,116.22,40.22,石门镇,+8619900000201
";
    common::write_district(dir, &[v2], people);
}

fn reply(min_secs: f64, max_secs: f64) -> ReplyBehaviour {
    ReplyBehaviour::Reply { min_secs, max_secs }
}

fn phones(late_v1: bool) -> Vec<PhoneScript> {
    let p = |n: &str, b: ReplyBehaviour| PhoneScript {
        number: n.into(),
        behaviour: b,
    };
    vec![
        p("+8619900000001", reply(20.0, 40.0)),
        p("+8619900000002", reply(30.0, 60.0)),
        p(
            "+8619900000101",
            if late_v1 {
                reply(120.0, 130.0)
            } else {
                reply(20.0, 60.0)
            },
        ),
        p("+8619900000102", reply(20.0, 60.0)),
        p("+8619900000103", reply(20.0, 60.0)),
        p(
            "+8619900000104",
            ReplyBehaviour::WrongCode {
                min_secs: 20.0,
                max_secs: 40.0,
            },
        ),
        p("+8619900000105", ReplyBehaviour::Never),
        p(
            "+8619900000106",
            ReplyBehaviour::FromOther {
                number: "+8619999999999".into(),
                min_secs: 20.0,
                max_secs: 40.0,
            },
        ),
        p("+8619900000107", ReplyBehaviour::Never),
        p("+8619900000201", reply(20.0, 60.0)),
    ]
}

fn start_sim(dir: &Path, phones: Vec<PhoneScript>, seed: u64) -> tocsin_at_modem::pty::SimHandle {
    let cfg = SimConfig {
        phones,
        ..SimConfig::default()
    };
    tocsin_at_modem::pty::spawn_sim(
        dir.join("modem0"),
        cfg,
        seed,
        SPEED,
        tokio_util::sync::CancellationToken::new(),
    )
    .expect("start the GSM simulator on a pty")
}

fn write_config(dir: &Path, modem_paths: &[String]) -> PathBuf {
    let mut devices = String::new();
    for (i, p) in modem_paths.iter().enumerate() {
        devices.push_str(&format!(
            "[devices.modem-{i}]\ntype = \"at_modem\"\npath = {p:?}\nper_minute = 30\n\n"
        ));
    }
    NODE.write_config(dir, &devices)
}

async fn issue(api: &Api) -> String {
    let v = api.issue(&common::red_flood()).await;
    assert_eq!(
        v["people"], 7,
        "six leads of 王家沟村 and the resident located there: {v}"
    );
    v["id"].as_str().unwrap().to_owned()
}

/// Follows `/v1/events` and returns the alert's summary once `done(summary)` holds.
async fn wait_until(api: &Api, id: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    common::follow(api, limit, "the campaign's expected state", async || {
        let s = api.get(&format!("/v1/alerts/{id}")).await;
        done(&s).then_some(s)
    })
    .await
}

fn count(summary: &Value, state: &str) -> u64 {
    summary["counts"]["by_state"][state].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_alert_reaches_people_by_sms_counts_acks_rejects_forgeries_and_escalates() {
    let dir = NODE.tempdir("red");
    write_district(&dir.join("district"));
    let sim = start_sim(&dir, phones(false), 1);
    let config = write_config(&dir, &[sim.path.to_string_lossy().into_owned()]);
    let daemon = NODE.start(&config);
    let api = &daemon.api;
    let id = issue(api).await;

    let s = wait_until(api, &id, Duration::from_secs(120), |s| {
        s["state"] != "active"
    })
    .await;
    let d = api.deliveries(&id).await;

    for p in ["v1", "v2", "v3"] {
        assert_eq!(d[p]["state"], "acknowledged", "{p}: {}", d[p]);
        assert_eq!(d[p]["late"], false, "{p}");
        assert!(
            d[p]["ack_evidence"]
                .as_str()
                .unwrap()
                .contains(d[p]["code"].as_str().unwrap()),
            "{p}"
        );
    }
    // Wrong code, never, and the right code from an unregistered phone: none counts; all
    // three are escalated to the town official, who confirms each door-knock task.
    for p in ["v4", "v5", "v6"] {
        assert_eq!(d[p]["escalated_to"], "t1", "{p}: {}", d[p]);
        assert_eq!(d[p]["state"], "confirmed", "{p}: {}", d[p]);
        assert!(
            d[p]["attempts"].as_array().unwrap().len() >= 2,
            "{p} was retried before escalation"
        );
    }
    assert!(
        s["counts"]["rejected_replies"].as_u64().unwrap() >= 2,
        "{s}"
    );
    assert_eq!(count(&s, "acknowledged"), 3, "{s}");
    assert_eq!(s["counts"]["escalated"], 3);
    assert!(
        !d.contains_key("x1"),
        "a lead of a village outside the area is not targeted"
    );

    // Every message really went through the modem: the simulator decoded them.
    let submits = sim.submits.lock().unwrap().clone();
    let to_v1: Vec<_> = submits
        .iter()
        .filter(|m| m.destination == "+8619900000101")
        .collect();
    assert!(
        to_v1[0].text.contains("山洪红色预警")
            && to_v1[0].text.contains(d["v1"]["code"].as_str().unwrap())
    );
    assert!(
        submits
            .iter()
            .any(|m| m.destination == "+8619900000002" && m.text.contains("叫应升级"))
    );
    // An operator's mistakes get the right answer from the real engine, not a 500.
    let unknown = "01900000-0000-7000-8000-000000000000";
    for (method, path, want) in [
        (
            reqwest::Method::POST,
            format!("/v1/alerts/{unknown}/cancel"),
            404,
        ),
        (reqwest::Method::GET, format!("/v1/alerts/{unknown}"), 404),
        (
            reqwest::Method::POST,
            format!("/v1/alerts/{id}/cancel"),
            200,
        ),
        (
            reqwest::Method::POST,
            format!("/v1/alerts/{id}/cancel"),
            409,
        ),
    ] {
        let r = daemon.api.request(method, &path).send().await.unwrap();
        assert_eq!(r.status().as_u16(), want, "{path}");
    }
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_campaign_loses_nothing_and_the_campaign_finishes() {
    let dir = NODE.tempdir("kill");
    write_district(&dir.join("district"));
    let sim = start_sim(&dir, phones(true), 2);
    let config = write_config(&dir, &[sim.path.to_string_lossy().into_owned()]);
    let daemon = NODE.start(&config);
    let api = &daemon.api;
    let id = issue(api).await;

    // Kill as soon as the first acks are committed, with attempts and replies in flight.
    let before = wait_until(api, &id, Duration::from_secs(60), |s| {
        count(s, "acknowledged") >= 1
    })
    .await;
    let acked_before: Vec<String> = api
        .deliveries(&id)
        .await
        .into_iter()
        .filter(|(_, d)| d["state"] == "acknowledged")
        .map(|(p, _)| p)
        .collect();
    daemon.kill();

    let daemon = NODE.start(&config);
    let api = &daemon.api;
    let after = api.get(&format!("/v1/alerts/{id}")).await;
    assert_eq!(
        after["counts"]["targets"], before["counts"]["targets"],
        "no planned delivery lost"
    );
    assert!(
        count(&after, "acknowledged") >= count(&before, "acknowledged"),
        "no ack lost: {after}"
    );
    let s = wait_until(api, &id, Duration::from_secs(120), |s| {
        s["state"] != "active"
    })
    .await;
    let d = api.deliveries(&id).await;
    for p in &acked_before {
        assert_eq!(
            d[p]["state"], "acknowledged",
            "{p} was acknowledged before the kill"
        );
    }
    // v1 answers after the kill: the reply waited in the modem and still counts.
    assert_eq!(d["v1"]["state"], "acknowledged", "{}", d["v1"]);
    assert_eq!(d.len(), 7);
    assert!(
        d.values()
            .all(|x| !matches!(x["state"].as_str(), Some("planned" | "attempting"))),
        "{s}"
    );
    // The kill left the log's hash chain whole: the restart's background check (a few
    // hundred records, done long before the campaign above finished) says so.
    let r = api
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    let metrics = r.text().await.unwrap();
    assert!(metrics.contains("tocsin_audit_chain_intact 1"), "{metrics}");
    daemon.stop();
}
