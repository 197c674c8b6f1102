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

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "meshstale-issuer-token-0123456789";
/// The daemon's clock and every simulator run this much faster than real time.
const SPEED: f64 = 60.0;
/// Lead A's mesh node: last heard ten hours ago.
const A_NODE: u32 = 0x0000_a11a;
/// Lead B's mesh node: heard just now.
const B_NODE: u32 = 0x0000_b22b;
const A_CARD: &str = "9900011";
const B_CARD: &str = "9900012";

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tocsin-meshstale-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One town, one village with two leads who each have a mesh radio and a BeiDou card.
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
A,孙一,grid_lead,t1,v-1,116.07,40.07,石门镇,,{A_CARD},!{A_NODE:08x},,
B,李二,grid_lead,t1,v-1,116.07,40.07,石门镇,,{B_CARD},!{B_NODE:08x},,
"
    );
    std::fs::write(dir.join("people.csv"), people).unwrap();
}

/// The simulators; the handles keep them running.
struct Sims {
    beidou: tocsin_beidou::pty::SimHandle,
    mesh: tocsin_meshtastic::runner::SimHandle,
    cancel: CancellationToken,
}

fn start_sims(dir: &Path) -> Sims {
    let cancel = CancellationToken::new();
    use tocsin_beidou::sim::{CardScript, ReplyBehaviour as Bd, SimDialect, TerminalConfig};
    let mut terminal = TerminalConfig::new("4207733");
    terminal.dialect = SimDialect::Bds3;
    // The driver paces in real time from the card's period: one "minute" of gateway time.
    terminal.frequency_secs = 1;
    let answer = |card: &str| CardScript {
        card: card.into(),
        behaviour: Bd::ReplyOne {
            min_secs: 20.0,
            max_secs: 40.0,
        },
    };
    let beidou = tocsin_beidou::pty::spawn_sim(
        vec![dir.join("bd0")],
        vec![terminal],
        tocsin_beidou::sim::SimConfig {
            latency_min_ms: 1_000,
            latency_max_ms: 3_000,
            cards: vec![answer(A_CARD), answer(B_CARD)],
            default_script: Bd::Never,
            ..tocsin_beidou::sim::SimConfig::default()
        },
        2,
        SPEED,
        cancel.child_token(),
    )
    .expect("BeiDou simulator on a pty");

    use tocsin_meshtastic::sim::{NodeScript, ReplyBehaviour as Mr};
    let node = |num: u32, name: &str, heard_ago_secs: u64| NodeScript {
        num,
        long_name: name.into(),
        short_name: name.chars().take(2).collect(),
        hops: 2,
        loss: 0.0,
        nak: None,
        // Both would answer over the mesh if a text reached them.
        behaviour: Mr::Reply {
            min_secs: 20.0,
            max_secs: 40.0,
        },
        position: None,
        heard_ago_secs,
    };
    let mesh = tocsin_meshtastic::runner::spawn_tcp_sim(
        0,
        tocsin_meshtastic::sim::SimConfig {
            nodes: vec![node(A_NODE, "孙一", 36_000), node(B_NODE, "李二", 10)],
            ..tocsin_meshtastic::sim::SimConfig::default()
        },
        3,
        SPEED,
        cancel.child_token(),
    )
    .expect("Meshtastic simulator on loopback TCP");
    Sims {
        beidou,
        mesh,
        cancel,
    }
}

fn write_config(dir: &Path, sims: &Sims) -> PathBuf {
    let cfg = format!(
        r#"
[node]
name = "meshstale"
data_dir = "data"
clock_speed = {SPEED}

[directory]
path = "district"

[ack]
key = "meshstale-secret-key-0123456789"

[api]
listen = "127.0.0.1:0"

[[api.tokens]]
name = "meshstale-operator"
token = "{TOKEN}"
role = "issuer"

[speech]
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

async fn post(base: &str, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn by_person(deliveries: &Value) -> BTreeMap<String, Value> {
    deliveries
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["person"].as_str().unwrap().to_owned(), d.clone()))
        .collect()
}

/// Follows `/v1/events`, calling `check` first and after every chunk, until it yields.
async fn follow<T>(
    base: &str,
    limit: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let fut = async {
        let mut events = client()
            .get(format!("{base}/v1/events"))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .unwrap();
        loop {
            if let Some(v) = check().await {
                return v;
            }
            match events.chunk().await {
                Ok(Some(_)) => {}
                other => panic!("event stream ended: {other:?}"),
            }
        }
    };
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not reached in time"))
}

/// First attempts planned per bearer by a preview of `body`.
async fn preview_load(base: &str, body: &Value) -> BTreeMap<String, u64> {
    let r = post(base, "/v1/alerts/preview", body).await;
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
    let dir = tempdir("red");
    write_district(&dir.join("district"));
    let sims = start_sims(&dir);
    let config = write_config(&dir, &sims);
    let daemon = Daemon::start(&config);
    let base = daemon.base.clone();

    let body = json!({
        "grade": "red", "kind": "flood", "headline": "山洪红色预警",
        "text": "沟道上游强降雨，请立即转移",
        "area": {"type": "Polygon", "coordinates": [[[116.04,40.04],[116.12,40.04],[116.12,40.12],[116.04,40.12],[116.04,40.04]]]}
    });

    // Until the radio hands over its node table the gateway judges no node: both leads
    // would be tried on the mesh. Once it has, A's node (ten hours silent) is stale.
    let load = follow(&base, Duration::from_secs(10), "node table", async || {
        let load = preview_load(&base, &body).await;
        (load.get("beidou") == Some(&1)).then_some(load)
    })
    .await;
    assert_eq!(
        load,
        BTreeMap::from([("beidou".to_owned(), 1), ("mesh".to_owned(), 1)]),
        "A on BeiDou, B on the mesh"
    );

    let r = post(&base, "/v1/alerts", &body).await;
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["people"], 2, "the two leads of 王家沟村: {v}");
    let id = v["id"].as_str().unwrap().to_owned();

    // Done when both leads have acknowledged (within red's 5 minutes: 5 s here).
    let d = follow(&base, Duration::from_secs(15), "both acks", async || {
        let d = by_person(&get(&base, &format!("/v1/alerts/{id}/deliveries")).await);
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
