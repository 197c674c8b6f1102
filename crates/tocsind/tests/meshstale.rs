//! End to end: a lead whose mesh node has not been heard lately is tried on their BeiDou
//! card first. The real `tocsind` binary drives a Meshtastic radio (loopback TCP) and a
//! BeiDou terminal (a pty), each against its simulator run in this test process.
//!
//! Two grid leads in one village carry both a mesh radio and a BeiDou card, and the
//! district's red policy for grid leads tries the mesh before BeiDou. The radio's node
//! table says it heard A's node ten hours ago and B's seconds ago; `[mesh]
//! stale_after_secs` is half an hour. A red alert: B is tried on the mesh and answers
//! there, A is tried on BeiDou (never on the mesh) and answers from the card.
//!
//! Waiting is event-driven: the test follows `/v1/events` and re-checks on every change.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use common::{Api, Node};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The daemon's clock and every simulator run this much faster than real time.
const SPEED: f64 = 60.0;
const NODE: Node = Node {
    name: "meshstale",
    speed: SPEED,
};
/// Lead A's mesh node: last heard ten hours ago.
const A_NODE: u32 = 0x0000_a11a;
/// Lead B's mesh node: heard just now.
const B_NODE: u32 = 0x0000_b22b;
const A_CARD: &str = "9900011";
const B_CARD: &str = "9900012";

/// One town, one village with two leads who each have a mesh radio and a BeiDou card.
fn write_district(dir: &Path) {
    let people = format!(
        "\
id,name,role,supervisor,areas,lon,lat,town,phones,beidou,mesh,sbd,app
d1,赵区长,district_official,,,116.5,40.5,区政府,+8619900000001,,,,
t1,钱镇长,town_official,d1,,116.15,40.15,石门镇,+8619900000002,,,,
A,孙一,grid_lead,t1,v-1,116.07,40.07,石门镇,,{A_CARD},!{A_NODE:08x},,
B,李二,grid_lead,t1,v-1,116.07,40.07,石门镇,,{B_CARD},!{B_NODE:08x},,
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
    let answer = |card: &str| CardScript {
        card: card.into(),
        behaviour: Bd::ReplyOne {
            min_secs: 20.0,
            max_secs: 40.0,
        },
    };
    let beidou = common::start_beidou(dir, vec![answer(A_CARD), answer(B_CARD)], SPEED, &cancel);

    use tocsin_meshtastic::sim::ReplyBehaviour as Mr;
    let node = |num: u32, name: &str, heard_ago_secs: u64| {
        // Both would answer over the mesh if a text reached them.
        let reply = Mr::Reply {
            min_secs: 20.0,
            max_secs: 40.0,
        };
        let short: String = name.chars().take(2).collect();
        common::mesh_node(num, (name, &short), 2, reply, heard_ago_secs)
    };
    let mesh = common::start_mesh(
        vec![node(A_NODE, "孙一", 36_000), node(B_NODE, "李二", 10)],
        SPEED,
        &cancel,
    );
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

# Half an hour without a packet and a node is stale.
[mesh]
stale_after_secs = 1800

# Grid leads here carry mesh radios: on red, the mesh is their first off-grid bearer.
[policies.red]
parallel = ["sms", "voice"]
best_of = ["beidou", "mesh", "sbd"]
fallback = ["app"]
attempts_per_bearer = 3
retry_backoff_s = 30
ack_required = true
ack_deadline_s = 300
reminders = 2
escalate = true
door_knock_deadline_s = 900

[policies.red.roles.grid_lead]
best_of = ["mesh", "beidou", "sbd"]

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

fn bearers(d: &Value) -> Vec<String> {
    d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["bearer"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_whose_mesh_node_went_quiet_is_tried_on_beidou_first() {
    let dir = NODE.tempdir("red");
    write_district(&dir.join("district"));
    let sims = start_sims(&dir);
    let config = write_config(&dir, &sims);
    let daemon = NODE.start(&config);
    let api = &daemon.api;

    let body = common::red_flood();

    // Until the radio hands over its node table the gateway judges no node: both leads
    // would be tried on the mesh. Once it has, A's node (ten hours silent) is stale.
    let load = common::follow(api, Duration::from_secs(10), "node table", async || {
        let load = preview_load(api, &body).await;
        (load.get("beidou") == Some(&1)).then_some(load)
    })
    .await;
    assert_eq!(
        load,
        BTreeMap::from([("beidou".to_owned(), 1), ("mesh".to_owned(), 1)]),
        "A on BeiDou, B on the mesh"
    );

    let v = api.issue(&body).await;
    assert_eq!(v["people"], 2, "the two leads of 王家沟村: {v}");
    let id = v["id"].as_str().unwrap().to_owned();

    // Done when both leads have acknowledged (within red's 5 minutes: 5 s here).
    let d = common::follow(api, Duration::from_secs(15), "both acks", async || {
        let d = api.deliveries(&id).await;
        ["A", "B"]
            .iter()
            .all(|p| d.get(*p).is_some_and(|x| x["state"] == "acknowledged"))
            .then_some(d)
    })
    .await;

    // A: every attempt on BeiDou, to A's card; the ack came from the card.
    let a = &d["A"];
    assert!(!bearers(a).is_empty(), "{a}");
    assert!(bearers(a).iter().all(|b| b == "beidou"), "{a}");
    assert!(
        a["ack_evidence"]
            .as_str()
            .unwrap()
            .starts_with(&format!("bd:{A_CARD} via beidou-0")),
        "{a}"
    );
    // B: every attempt on the mesh; the ack came over the mesh from B's node.
    let b = &d["B"];
    assert!(!bearers(b).is_empty(), "{b}");
    assert!(bearers(b).iter().all(|x| x == "mesh"), "{b}");
    assert!(
        b["ack_evidence"]
            .as_str()
            .unwrap()
            .starts_with(&format!("mesh:!{B_NODE:08x} via mesh-0")),
        "{b}"
    );

    // What the devices saw: the radio sent to B's node and never to A's, the terminal
    // to A's card and never to B's.
    let mesh_to: Vec<u32> = sims
        .mesh
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.to)
        .collect();
    assert!(mesh_to.contains(&B_NODE), "{mesh_to:?}");
    assert!(!mesh_to.contains(&A_NODE), "{mesh_to:?}");
    let bd_to: Vec<String> = sims
        .beidou
        .submits
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.to.clone())
        .collect();
    assert!(bd_to.iter().any(|c| c == A_CARD), "{bd_to:?}");
    assert!(bd_to.iter().all(|c| c != B_CARD), "{bd_to:?}");

    daemon.stop();
    sims.cancel.cancel();
}
