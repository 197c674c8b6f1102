//! End to end over the mesh, the cases of issue 5 no other test covers: the real `tocsind`
//! binary drives a Meshtastic radio (loopback TCP) and a BeiDou terminal (a pty), each
//! against its simulator run in this test process.
//!
//! Two grid leads of one village, and the district's red policy for grid leads tries the
//! mesh before BeiDou. N's radio is out of reach: the gateway radio NAKs every text to it
//! (no route), and each mesh attempt is recorded as failed with the radio's reason. R's
//! radio is reached and R answers a bare `1` from it: R's ack, naming the mesh device.
//! Meanwhile a node registered to nobody sends `1`: recorded as a rejected reply (unknown
//! sender) that counts for no one.
//!
//! After the NAKs the router moves N on to BeiDou, the next off-grid bearer, where N
//! answers from the card: a text the radio reported queued and then NAKed did not get
//! through, so it does not keep the mesh lane from falling back.
//!
//! Waiting is event-driven: the test follows `/v1/events` and re-checks on every change.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use common::{Api, Daemon, Events, Node};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The daemon's clock and every simulator run this much faster than real time.
const SPEED: f64 = 60.0;
const NODE: Node = Node {
    name: "mesh",
    speed: SPEED,
};
/// N's mesh node: out of reach, every text to it is NAKed.
const N_NODE: u32 = 0x0000_a0a0;
/// N's BeiDou card, the next bearer.
const N_CARD: &str = "9900021";
/// R's mesh node: reached, and R answers a bare `1`.
const R_NODE: u32 = 0x0000_b0b0;
/// A node nobody registered.
const STRANGER: u32 = 0x0000_f00d;
/// Meshtastic's routing error NO_ROUTE.
const NAK_NO_ROUTE: i32 = 1;

/// One town, one village with two grid leads: N with a mesh radio and a BeiDou card, R with
/// a mesh radio only.
fn write_district(dir: &Path) {
    let people = format!(
        "\
id,name,role,supervisor,areas,lon,lat,town,phones,beidou,mesh,sbd,app
d1,赵区长,district_official,,,116.5,40.5,区政府,+8619900000001,,,,
t1,钱镇长,town_official,d1,,116.15,40.15,石门镇,+8619900000002,,,,
N,孙一,grid_lead,t1,v-1,116.07,40.07,石门镇,,{N_CARD},!{N_NODE:08x},,
R,李二,grid_lead,t1,v-1,116.07,40.07,石门镇,,,!{R_NODE:08x},,
"
    );
    common::write_district(dir, &[], &people);
}

/// The simulators; the handles keep them running.
struct Sims {
    beidou: tocsin_beidou::pty::SimHandle,
    mesh: tocsin_meshtastic::runner::SimHandle,
    cancel: CancellationToken,
}

fn start_sims(dir: &Path) -> Sims {
    let cancel = CancellationToken::new();
    use tocsin_beidou::sim::{CardScript, ReplyBehaviour as Bd};
    let beidou = common::start_beidou(
        dir,
        vec![CardScript {
            card: N_CARD.into(),
            behaviour: Bd::ReplyOne {
                min_secs: 20.0,
                max_secs: 40.0,
            },
        }],
        SPEED,
        &cancel,
    );

    use tocsin_meshtastic::sim::ReplyBehaviour as Mr;
    // Both nodes were heard 10 s ago: the gateway reads the radio's ages as real time,
    // ten simulated minutes, well inside the default hour before a node counts as stale.
    // N would answer if a text ever reached their node; none does.
    let mut n = common::mesh_node(
        N_NODE,
        ("孙一", "SY"),
        2,
        Mr::Reply {
            min_secs: 20.0,
            max_secs: 40.0,
        },
        10,
    );
    n.nak = Some(NAK_NO_ROUTE);
    let r = common::mesh_node(
        R_NODE,
        ("李二", "LE"),
        2,
        Mr::Text {
            text: "1".into(),
            min_secs: 20.0,
            max_secs: 40.0,
        },
        10,
    );
    let mesh = common::start_mesh(vec![n, r], SPEED, &cancel);
    Sims {
        beidou,
        mesh,
        cancel,
    }
}

fn write_config(dir: &Path, sims: &Sims) -> PathBuf {
    let rest = format!(
        r#"[speech]
synthesizer = "none"

# Grid leads here carry mesh radios: on red, the mesh is their first off-grid bearer.
[policies.red]
parallel = ["sms", "voice"]
best_of = ["beidou", "mesh", "sbd"]
fallback = ["app"]
attempts_per_bearer = 2
retry_backoff_s = 30
ack_required = true
ack_deadline_s = 300
reminders = 2
escalate = true
door_knock_deadline_s = 900

[policies.red.roles.grid_lead]
best_of = ["mesh", "beidou"]

[devices.beidou-0]
type = "beidou"
path = {beidou:?}
assumed_interval_secs = 60

[devices.mesh-0]
type = "meshtastic"
tcp = {mesh:?}
per_minute = 600
ack_timeout_secs = 5
"#,
        beidou = sims.beidou.paths[0].to_string_lossy(),
        mesh = sims.mesh.address(),
    );
    NODE.write_config(dir, &rest)
}

/// Writes the district and config, starts the simulators and `tocsind`, and checks that a
/// red alert would try both leads on the mesh first (N's node is fresh in the radio's
/// table, or no table has come yet).
async fn start(test: &str) -> (Sims, Daemon) {
    let dir = NODE.tempdir(test);
    write_district(&dir.join("district"));
    let sims = start_sims(&dir);
    let config = write_config(&dir, &sims);
    let daemon = NODE.start(&config);
    let api = &daemon.api;
    let body = common::red_flood();
    // Were N's node stale in the radio's table, N would be planned on BeiDou straight away.
    let load = common::follow(
        api,
        Duration::from_secs(10),
        "both on the mesh",
        async || {
            let load = preview_load(api, &body).await;
            (load.get("mesh") == Some(&2)).then_some(load)
        },
    )
    .await;
    assert_eq!(
        load,
        BTreeMap::from([("mesh".to_owned(), 2)]),
        "both on the mesh"
    );
    (sims, daemon)
}

/// First attempts planned per bearer by a preview of `body`.
async fn preview_load(api: &Api, body: &Value) -> BTreeMap<String, u64> {
    let r = api.post("/v1/alerts/preview", body).await;
    assert!(r.status().is_success(), "preview: {}", r.status());
    let v: Value = r.json().await.unwrap();
    v["bearers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["bearer"].as_str().unwrap().to_owned(),
                b["messages"].as_u64().unwrap(),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn attempts(d: &Value) -> Vec<Value> {
    d["attempts"].as_array().unwrap().clone()
}

/// N's mesh attempts, once every one allowed (two) was made and NAKed.
fn naked_mesh_attempts(n: &Value) -> Option<Vec<Value>> {
    let mesh: Vec<Value> = attempts(n)
        .into_iter()
        .filter(|a| a["bearer"] == "mesh")
        .collect();
    let failed = |a: &Value| {
        a["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("failed: "))
    };
    (mesh.len() == 2 && mesh.iter().all(failed)).then_some(mesh)
}

/// Every mesh attempt to N went to N's node and failed on the radio's NO_ROUTE NAK.
fn assert_naked(mesh: &[Value]) {
    for a in mesh {
        assert_eq!(a["device"], "mesh-0", "{a}");
        assert_eq!(a["to"]["kind"], "mesh_node", "{a}");
        assert_eq!(a["to"]["value"], N_NODE, "{a}");
        let outcome = a["outcome"].as_str().unwrap();
        assert!(
            outcome.starts_with("failed: mesh NAK NO_ROUTE (1)"),
            "{outcome}"
        );
    }
}

fn is_stranger_rejected(e: &Value) -> bool {
    e["kind"] == "reply"
        && e["data"]["verdict"]["verdict"] == "rejected"
        && e["data"]["verdict"]["reason"] == "unknown_sender"
        && e["data"]["from"]["kind"] == "mesh_node"
        && e["data"]["from"]["value"] == STRANGER
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_1_from_a_leads_node_is_acked_a_nak_fails_the_attempt_and_a_stranger_counts_for_no_one()
 {
    let (sims, daemon) = start("bare").await;
    let api = &daemon.api;

    let mut events = Events::subscribe(api).await;
    let v = api.issue(&common::red_flood()).await;
    assert_eq!(v["people"], 2, "the two leads of 王家沟村: {v}");
    let id = v["id"].as_str().unwrap().to_owned();

    // With the alert open, a node nobody registered answers `1`.
    sims.mesh
        .commands
        .send(tocsin_meshtastic::runner::SimCommand::DeliverText {
            from: STRANGER,
            text: "1".into(),
        })
        .await
        .unwrap();

    // Done when R has acknowledged and both of N's mesh attempts were NAKed, well within
    // red's 5 minutes (5 s here), so nobody is escalated yet.
    let d = events
        .until(Duration::from_secs(4), "R's ack and N's NAKs", async || {
            let d = api.deliveries(&id).await;
            let r_acked = d.get("R").is_some_and(|r| r["state"] == "acknowledged");
            let n_naked = d.get("N").and_then(naked_mesh_attempts).is_some();
            (r_acked && n_naked).then_some(d)
        })
        .await;
    let records = events
        .records_until(
            Duration::from_secs(5),
            "the stranger's reply",
            |r: &[Value]| r.iter().any(is_stranger_rejected),
        )
        .await;

    // N: tried on the mesh first; both attempts failed with the radio's reason.
    let n = &d["N"];
    assert_eq!(
        attempts(n)[0]["bearer"],
        "mesh",
        "the mesh is tried first: {n}"
    );
    assert_naked(&naked_mesh_attempts(n).unwrap());
    // (After the NAKs the router moves N on to BeiDou, where N may already have acked.)
    assert!(
        !n["ack_evidence"]
            .as_str()
            .unwrap_or("")
            .contains("via mesh-0"),
        "N's node only NAKed: {n}"
    );

    // R: reached on the mesh only; the bare `1` from R's node is R's ack, with the node
    // and the mesh device named in the evidence.
    let r = &d["R"];
    let r_attempts = attempts(r);
    assert!(!r_attempts.is_empty(), "{r}");
    assert!(r_attempts.iter().all(|a| a["bearer"] == "mesh"), "{r}");
    assert_eq!(r["late"], false, "{r}");
    let r_ev = r["ack_evidence"].as_str().unwrap();
    assert!(
        r_ev.starts_with(&format!("mesh:!{R_NODE:08x} via mesh-0: 1")),
        "{r_ev}"
    );
    let r_reply: Vec<&Value> = records
        .iter()
        .filter(|e| e["kind"] == "reply" && e["data"]["verdict"]["person"] == "R")
        .collect();
    assert_eq!(r_reply.len(), 1, "{r_reply:?}");
    assert_eq!(r_reply[0]["data"]["verdict"]["verdict"], "ack");
    assert_eq!(r_reply[0]["data"]["device"], "mesh-0");
    assert_eq!(r_reply[0]["data"]["text"], "1");

    // The stranger: recorded once as a reply, rejected as from an unknown sender, for no
    // alert; it counted for no one: only R acknowledged, and the alert rejected no reply.
    let stranger: Vec<&Value> = records.iter().filter(|e| is_stranger_rejected(e)).collect();
    assert_eq!(stranger.len(), 1, "{stranger:?}");
    assert_eq!(stranger[0]["data"]["text"], "1");
    assert_eq!(stranger[0]["data"]["device"], "mesh-0");
    assert_eq!(
        stranger[0]["data"]["verdict"]["alerts"],
        serde_json::json!([])
    );
    assert!(stranger[0]["alert"].is_null(), "{}", stranger[0]);
    // (N may meanwhile be acking over BeiDou after the NAKs, so count who acked how, not
    // how many.)
    let s = api.get(&format!("/v1/alerts/{id}")).await;
    assert_eq!(s["counts"]["rejected_replies"], 0, "{s}");
    let stranger_node = format!("mesh:!{STRANGER:08x}");
    for (p, dp) in api.deliveries(&id).await {
        let ev = dp["ack_evidence"].as_str().unwrap_or("");
        assert!(
            !ev.contains(&stranger_node),
            "{p} acked by the stranger: {dp}"
        );
        if p == "N" {
            assert!(!ev.contains("via mesh-0"), "N's node only NAKed: {dp}");
        }
    }

    // What the radio saw: texts to N's node and R's, never to the stranger.
    let mesh_to: Vec<u32> = sims
        .mesh
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.to)
        .collect();
    assert_eq!(
        mesh_to.iter().filter(|&&t| t == N_NODE).count(),
        2,
        "{mesh_to:?}"
    );
    assert!(mesh_to.contains(&R_NODE), "{mesh_to:?}");
    assert!(!mesh_to.contains(&STRANGER), "{mesh_to:?}");

    daemon.stop();
    sims.cancel.cancel();
}

/// Issue 5: "one node NAKs and the router falls back to the next bearer".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_whose_node_naks_is_moved_on_to_beidou_and_acks_there() {
    let (sims, daemon) = start("nak").await;
    let api = &daemon.api;

    let v = api.issue(&common::red_flood()).await;
    let id = v["id"].as_str().unwrap().to_owned();

    // Done when N has acknowledged, before red's 5 minutes (5 s here) escalate N.
    let d = common::follow(api, Duration::from_secs(4), "N's ack", async || {
        let d = api.deliveries(&id).await;
        d.get("N")
            .is_some_and(|n| n["state"] == "acknowledged")
            .then_some(d)
    })
    .await;

    // N: the mesh first, NAKed; then BeiDou, to N's card, from which the ack came.
    let n = &d["N"];
    let n_attempts = attempts(n);
    assert_eq!(
        n_attempts[0]["bearer"], "mesh",
        "the mesh is tried first: {n}"
    );
    assert_naked(&naked_mesh_attempts(n).unwrap());
    let bd: Vec<&Value> = n_attempts
        .iter()
        .filter(|a| a["bearer"] == "beidou")
        .collect();
    assert!(!bd.is_empty(), "the router moved N on to BeiDou: {n}");
    assert!(bd.iter().all(|a| a["device"] == "beidou-0"), "{n}");
    assert_eq!(n["escalated_to"], Value::Null, "{n}");
    assert!(
        n["ack_evidence"]
            .as_str()
            .unwrap()
            .starts_with(&format!("bd:{N_CARD} via beidou-0")),
        "{n}"
    );
    let bd_to: Vec<String> = sims
        .beidou
        .submits
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.to.clone())
        .collect();
    assert!(bd_to.iter().any(|c| c == N_CARD), "{bd_to:?}");

    daemon.stop();
    sims.cancel.cancel();
}
