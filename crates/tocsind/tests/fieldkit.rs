//! A field kit's uplink, end to end: two real `tocsind` processes — the district's node
//! and a field kit's node — each with its own BeiDou terminal, on one simulated BeiDou
//! network (two terminals on ptys, cards 0242286 and 0242407), and each with its own GSM
//! modem simulator.
//!
//! The valley 上游村 (v-up) has lost its cell network as far as the district can tell:
//! its two village heads never answer the district's SMS. The district relays the red
//! alert to the kit as one compact frame over BeiDou; the kit's node alerts both heads
//! through its own modem, they answer it with their codes, and the kit sends the acks
//! back in a compact batch. The district records them as those people's acks, in time,
//! with the kit as the bearer. A person the kit does not serve (石门村's head, reached by
//! the district's SMS) is unaffected. Then the district cancels, and the kit's alert is
//! cancelled too.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use common::{Api, Events, Node};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tocsin_at_modem::sim::{PhoneScript, ReplyBehaviour};
use tocsin_beidou::sim::{ReplyBehaviour as Bd, SimDialect, TerminalConfig};
use tokio_util::sync::CancellationToken;

const SPEED: f64 = 60.0;
const DISTRICT: Node = Node {
    name: "district",
    speed: SPEED,
};
const KIT: Node = Node {
    name: "kit",
    speed: SPEED,
};
const DISTRICT_CARD: &str = "0242286";
const KIT_CARD: &str = "0242407";

fn areas() -> Vec<Value> {
    vec![
        json!({"type": "Feature", "properties": {"id": "v-up", "kind": "village", "name": "上游村", "town": "石门镇"},
         "geometry": {"type": "Polygon", "coordinates": [[[116.2,40.2],[116.25,40.2],[116.25,40.25],[116.2,40.25],[116.2,40.2]]]}}),
    ]
}

/// The district knows everyone; the kit knows its valley's people, by the district's ids.
fn write_districts(district: &Path, kit: &Path) {
    common::write_district(
        district,
        &areas(),
        "\
id,name,role,supervisor,areas,lon,lat,town,phones,beidou,mesh,sbd,app
t1,钱镇长,town_official,,,116.15,40.15,石门镇,+8619900000002,,,,
o1,孙一,village_head,t1,v-1,116.07,40.07,石门镇,+8619900000101,,,,
k1,上游一,village_head,t1,v-up,116.22,40.22,石门镇,+8619900000201,,,,
k2,上游二,grid_lead,t1,v-up,116.22,40.22,石门镇,+8619900000202,,,,
",
    );
    common::write_district(
        kit,
        &areas(),
        "\
id,name,role,supervisor,areas,lon,lat,town,phones,beidou,mesh,sbd,app
k1,上游一,village_head,,v-up,116.22,40.22,石门镇,+8619900000201,,,,
k2,上游二,grid_lead,,v-up,116.22,40.22,石门镇,+8619900000202,,,,
",
    );
}

fn phone(n: &str, behaviour: ReplyBehaviour) -> PhoneScript {
    PhoneScript {
        number: n.into(),
        behaviour,
    }
}

fn answers() -> ReplyBehaviour {
    ReplyBehaviour::Reply {
        min_secs: 10.0,
        max_secs: 20.0,
    }
}

fn terminal(card: &str) -> TerminalConfig {
    let mut t = TerminalConfig::new(card);
    t.dialect = SimDialect::Bds3;
    // The driver paces in real time from the card's period: one "minute" of gateway time.
    t.frequency_secs = 1;
    t
}

/// The speech section and one GSM modem.
fn gsm(modem: &Path) -> String {
    format!(
        "[speech]\nsynthesizer = \"none\"\n\n[devices.modem-0]\ntype = \"at_modem\"\npath = {:?}\nper_minute = 30\n",
        modem.to_string_lossy()
    )
}

/// Waits on `api`'s event stream until `done` holds for the alert's deliveries.
async fn deliveries_until(
    mut events: Events,
    api: &Api,
    id: &str,
    what: &str,
    done: impl Fn(&BTreeMap<String, Value>) -> bool,
) -> (BTreeMap<String, Value>, Vec<Value>) {
    let d = events
        .until(Duration::from_secs(60), what, async || {
            let d = api.deliveries(id).await;
            done(&d).then_some(d)
        })
        .await;
    (d, events.records())
}

/// The satellite link between the two nodes.
enum Link {
    /// One BeiDou network, cards 0242286 (district) and 0242407 (kit).
    Beidou,
    /// Two 9603 modems on one simulated Iridium gateway, which routes an MO message
    /// prefixed with the other modem's routing prefix to it as an MT message.
    Sbd,
}

/// The link's simulator (kept running by the test).
enum LinkSim {
    Beidou(tocsin_beidou::pty::SimHandle),
    Sbd(tocsin_iridium_sbd::pty::NetworkHandle),
}

/// Both nodes' simulators and configs, for one test.
struct Setup {
    link: LinkSim,
    district_cfg: std::path::PathBuf,
    kit_cfg: std::path::PathBuf,
    cancel: CancellationToken,
    _modems: (
        tocsin_at_modem::pty::SimHandle,
        tocsin_at_modem::pty::SimHandle,
    ),
}

const DISTRICT_IMEI: &str = "300434063839690";
const KIT_IMEI: &str = "300234010753370";

/// An `iridium_sbd` device table whose one peer is `peer`, routed through the gateway
/// by its prefix; mailbox checks and retries shrunk for the test's clock.
fn sbd_device(path: &Path, peer: &str) -> String {
    format!(
        r#"
[devices.link-0]
type = "iridium_sbd"
path = {path:?}
mailbox_interval_secs = 5
retry_secs = 1
retry_max_secs = 2
peers = [{{ imei = "{peer}", prefix = "{prefix}" }}]
"#,
        path = path.to_string_lossy(),
        prefix = tocsin_iridium_sbd::sim::route_prefix(peer),
    )
}

/// A `beidou` device table.
fn beidou_device(path: &Path) -> String {
    format!(
        "\n[devices.link-0]\ntype = \"beidou\"\npath = {:?}\nassumed_interval_secs = 60\n",
        path.to_string_lossy()
    )
}

/// The link, both modems and both configs; the kit's people answer its modem after
/// `answer` (gateway seconds), and never answer the district's.
fn setup(test: &str, answer: ReplyBehaviour, link: Link) -> Setup {
    let (ddir, kdir) = (DISTRICT.tempdir(test), KIT.tempdir(test));
    write_districts(&ddir.join("district"), &kdir.join("district"));
    let cancel = CancellationToken::new();
    let (link, district_dev, kit_dev, kit_addr, district_addr) = match link {
        Link::Beidou => {
            let sim = tocsin_beidou::pty::spawn_sim(
                vec![ddir.join("link0"), kdir.join("link0")],
                vec![terminal(DISTRICT_CARD), terminal(KIT_CARD)],
                tocsin_beidou::sim::SimConfig {
                    latency_min_ms: 1_000,
                    latency_max_ms: 3_000,
                    default_script: Bd::Never,
                    ..tocsin_beidou::sim::SimConfig::default()
                },
                2,
                SPEED,
                cancel.child_token(),
            )
            .expect("BeiDou network on ptys");
            let (d, k) = (beidou_device(&sim.paths[0]), beidou_device(&sim.paths[1]));
            (LinkSim::Beidou(sim), d, k, KIT_CARD, DISTRICT_CARD)
        }
        Link::Sbd => {
            let modem = |imei: &str| tocsin_iridium_sbd::sim::SimConfig {
                imei: imei.into(),
                session_min_ms: 2_000,
                session_max_ms: 6_000,
                ..tocsin_iridium_sbd::sim::SimConfig::default()
            };
            let net = tocsin_iridium_sbd::pty::spawn_network(
                vec![ddir.join("link0"), kdir.join("link0")],
                vec![modem(DISTRICT_IMEI), modem(KIT_IMEI)],
                tocsin_iridium_sbd::network::NetworkConfig {
                    latency_min_ms: 2_000,
                    latency_max_ms: 5_000,
                },
                3,
                SPEED,
                cancel.child_token(),
            )
            .expect("Iridium network on ptys");
            let d = sbd_device(&net.paths[0], KIT_IMEI);
            let k = sbd_device(&net.paths[1], DISTRICT_IMEI);
            (LinkSim::Sbd(net), d, k, KIT_IMEI, DISTRICT_IMEI)
        }
    };
    let district_modem = common::start_modem(
        &ddir,
        vec![
            phone("+8619900000101", answers()),
            phone("+8619900000201", ReplyBehaviour::Never),
            phone("+8619900000202", ReplyBehaviour::Never),
        ],
        SPEED,
        &cancel,
    );
    let kit_modem = common::start_modem(
        &kdir,
        vec![
            phone("+8619900000201", answer.clone()),
            phone("+8619900000202", answer),
        ],
        SPEED,
        &cancel,
    );
    let district_cfg = DISTRICT.write_config(
        &ddir,
        &format!(
            "{}{district_dev}\n[kits.upper]\ndevice = \"link-0\"\naddress = \"{kit_addr}\"\nareas = [\"v-up\"]\n",
            gsm(&district_modem.path)
        ),
    );
    let kit_cfg = KIT.write_config(
        &kdir,
        &format!(
            "{}{kit_dev}\n[uplink]\ndevice = \"link-0\"\ndistrict = \"{district_addr}\"\nareas = [\"v-up\"]\n",
            gsm(&kit_modem.path)
        ),
    );
    Setup {
        link,
        district_cfg,
        kit_cfg,
        cancel,
        _modems: (district_modem, kit_modem),
    }
}

fn red_alert() -> Value {
    json!({
        "grade": "red", "kind": "flash_flood", "headline": "山洪红色预警",
        "text": "上游强降雨，立即转移",
        "area": [{"type": "Named", "id": "v-1"}, {"type": "Named", "id": "v-up"}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn district_alert_goes_through_a_field_kit_and_its_acks_come_back_over_beidou() {
    let Setup {
        link,
        district_cfg,
        kit_cfg,
        cancel,
        _modems,
    } = setup("uplink", answers(), Link::Beidou);
    let LinkSim::Beidou(beidou) = link else {
        unreachable!()
    };
    let district = DISTRICT.start(&district_cfg);
    let kit = KIT.start(&kit_cfg);

    let alert = red_alert();
    // Subscribed first: the relay is recorded in the same commit as the alert.
    let events = Events::subscribe(&district.api).await;
    let v = district.api.issue(&alert).await;
    assert_eq!(v["people"], 3, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();

    // The district: all three acknowledged, k1 and k2 through the kit.
    let (d, records) =
        deliveries_until(events, &district.api, &id, "every head acknowledged", |d| {
            ["o1", "k1", "k2"]
                .iter()
                .all(|p| d.get(*p).is_some_and(|x| x["state"] == "acknowledged"))
        })
        .await;
    for p in ["k1", "k2"] {
        let via = d[p]["ack_evidence"].as_str().unwrap();
        assert!(
            via.starts_with(&format!("bd:{KIT_CARD} via link-0"))
                && via.contains(&format!("relayed for {p}")),
            "{p}: {via}"
        );
        assert_eq!(d[p]["late"], false, "{}", d[p]);
        // The district's own SMS never got an answer; the kit's relay is what counted.
        assert!(
            d[p]["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["bearer"] == "sms")
        );
    }
    assert!(
        d["o1"]["ack_evidence"]
            .as_str()
            .unwrap()
            .contains("via modem-0")
    );
    assert!(
        records.iter().any(|e| e["kind"] == "relay_started"
            && e["data"]["kit"] == "upper"
            && e["data"]["frame"] == "alert"
            && e["data"]["bytes"].as_str().unwrap().starts_with("11")),
        "the alert went to the kit as a compact alert frame"
    );
    assert!(
        records
            .iter()
            .any(|e| e["kind"] == "relay_outcome" && e["data"]["outcome"]["kind"] == "delivered"),
        "the kit's acks confirm it has the alert: {:?}",
        records
            .iter()
            .filter(|e| e["kind"].as_str().unwrap().starts_with("relay"))
            .collect::<Vec<_>>()
    );

    // The kit: one alert from the district, both heads acknowledged on the kit's modem.
    let kit_alerts = kit.api.get("/v1/alerts").await;
    let kit_alerts = kit_alerts.as_array().unwrap();
    assert_eq!(kit_alerts.len(), 1, "{kit_alerts:?}");
    let local = kit_alerts[0]["alert"]["id"].as_str().unwrap().to_owned();
    assert!(
        local.starts_with(&format!("uplink-bd-{DISTRICT_CARD}-")),
        "{local}"
    );
    assert_eq!(kit_alerts[0]["alert"]["grade"], "red");
    let kd = kit.api.deliveries(&local).await;
    for p in ["k1", "k2"] {
        assert_eq!(kd[p]["state"], "acknowledged", "{}", kd[p]);
        assert!(
            kd[p]["ack_evidence"]
                .as_str()
                .unwrap()
                .contains("via modem-0")
        );
    }

    // What went over the air: mixed-mode compact frames between the two cards only.
    let submits = beidou.submits.lock().unwrap().clone();
    assert!(
        submits.iter().any(|s| format!("{s:?}").contains(KIT_CARD)),
        "{submits:?}"
    );
    assert!(
        submits
            .iter()
            .any(|s| format!("{s:?}").contains(DISTRICT_CARD)),
        "{submits:?}"
    );

    // The district cancels: the kit's alert is cancelled too.
    let r = district
        .api
        .post(&format!("/v1/alerts/{id}/cancel"), &json!({}))
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    let mut events = Events::subscribe(&kit.api).await;
    events
        .until(
            Duration::from_secs(60),
            "the kit's alert cancelled",
            async || {
                let s = kit.api.get(&format!("/v1/alerts/{local}")).await;
                (s["state"] == "cancelled").then_some(())
            },
        )
        .await;

    district.stop();
    kit.stop();
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kit_killed_after_taking_the_alert_still_returns_every_ack() {
    // The heads answer the kit a minute or two after its SMS: time to kill it first.
    let s = setup(
        "killed",
        ReplyBehaviour::Reply {
            min_secs: 60.0,
            max_secs: 120.0,
        },
        Link::Beidou,
    );
    let district = DISTRICT.start(&s.district_cfg);
    let kit = KIT.start(&s.kit_cfg);
    let events = Events::subscribe(&district.api).await;
    let v = district.api.issue(&red_alert()).await;
    let id = v["id"].as_str().unwrap().to_owned();

    // As soon as the kit has committed the district's alert, SIGKILL it.
    let mut kit_events = Events::subscribe(&kit.api).await;
    let local = kit_events
        .until(
            Duration::from_secs(60),
            "the kit took the alert",
            async || {
                let a = kit.api.get("/v1/alerts").await;
                a.as_array()
                    .and_then(|a| a.first())
                    .map(|x| x["alert"]["id"].as_str().unwrap().to_owned())
            },
        )
        .await;
    kit.kill();
    // Replies that arrive while it is dead wait in its modem; after the restart its
    // router re-sends whatever had not gone up.
    let kit = KIT.start(&s.kit_cfg);
    let (d, _) = deliveries_until(
        events,
        &district.api,
        &id,
        "both heads acked via the kit",
        |d| {
            ["k1", "k2"]
                .iter()
                .all(|p| d.get(*p).is_some_and(|x| x["state"] == "acknowledged"))
        },
    )
    .await;
    for p in ["k1", "k2"] {
        let via = d[p]["ack_evidence"].as_str().unwrap();
        assert!(via.contains(&format!("relayed for {p}")), "{p}: {via}");
    }
    // The kit kept the one alert (the restart did not take it twice).
    let kit_alerts = kit.api.get("/v1/alerts").await;
    assert_eq!(kit_alerts.as_array().unwrap().len(), 1, "{kit_alerts}");
    let kd = kit.api.deliveries(&local).await;
    assert!(
        ["k1", "k2"]
            .iter()
            .all(|p| kd[*p]["state"] == "acknowledged"),
        "{kd:?}"
    );
    district.stop();
    kit.stop();
    s.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn district_alert_goes_through_a_field_kit_over_iridium_sbd() {
    let s = setup("sbd", answers(), Link::Sbd);
    let district = DISTRICT.start(&s.district_cfg);
    let kit = KIT.start(&s.kit_cfg);
    let events = Events::subscribe(&district.api).await;
    let v = district.api.issue(&red_alert()).await;
    let id = v["id"].as_str().unwrap().to_owned();
    let (d, _) = deliveries_until(
        events,
        &district.api,
        &id,
        "both heads acked via the kit",
        |d| {
            ["k1", "k2"]
                .iter()
                .all(|p| d.get(*p).is_some_and(|x| x["state"] == "acknowledged"))
        },
    )
    .await;
    for p in ["k1", "k2"] {
        let via = d[p]["ack_evidence"].as_str().unwrap();
        assert!(
            via.starts_with(&format!("sbd:{KIT_IMEI} via link-0"))
                && via.contains(&format!("relayed for {p}")),
            "{p}: {via}"
        );
        assert_eq!(d[p]["late"], false, "{}", d[p]);
    }
    // The gateway routed the alert frame to the kit and ack batches back.
    let LinkSim::Sbd(iridium) = &s.link else {
        unreachable!()
    };
    let routed = iridium.routed.lock().unwrap().clone();
    let first = |from: usize| {
        routed
            .iter()
            .filter(|r| r.from == from)
            .filter_map(|r| r.payload.first().copied())
            .collect::<Vec<u8>>()
    };
    assert_eq!(
        first(0),
        vec![0x11],
        "district → kit: one alert frame: {routed:?}"
    );
    assert!(
        !first(1).is_empty() && first(1).iter().all(|b| *b == 0x12),
        "kit → district: ack batches: {routed:?}"
    );
    let relays = district.api.get(&format!("/v1/alerts/{id}/kits")).await;
    assert_eq!(relays[0]["kit"], "upper", "{relays}");
    assert_eq!(relays[0]["state"], "confirmed", "{relays}");
    assert_eq!(relays[0]["acks"], 2, "{relays}");
    district.stop();
    kit.stop();
    s.cancel.cancel();
}
