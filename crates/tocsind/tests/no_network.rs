//! End to end: a red alert issued while the district's only GSM modem has no cell network
//! (the simulator's scripted outage) is delivered and acknowledged once the network returns
//! — not escalated with "every route failed" after three sends that could not go out.
//!
//! The real `tocsind` binary, the real modem driver on a real pseudo-terminal, the real API
//! and log. Waiting is event-driven (`/v1/events`), with a generous upper bound.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use common::Node;
use serde_json::Value;
use std::time::Duration;
use tocsin_at_modem::sim::{Faults, NetworkLoss, PhoneScript, ReplyBehaviour, SimConfig};

/// The daemon's clock (and the simulator's) runs this much faster: the 3-minute outage
/// lasts 3 s, the 5-minute red deadline 5 s.
const SPEED: f64 = 60.0;
const NODE: Node = Node {
    name: "nonet",
    speed: SPEED,
};
/// The outage, from the simulator's start, in simulated seconds.
const OUTAGE_SECS: f64 = 180.0;

/// Six leads of 王家沟村 (v-1) under a town official, and a resident.
fn write_district(dir: &std::path::Path) {
    let people = "\
id,name,role,supervisor,areas,lon,lat,town,phones
t1,钱镇长,town_official,,,116.15,40.15,石门镇,+8619900000002
v1,孙一,village_head,t1,v-1,116.07,40.07,石门镇,+8619900000101
v2,李二,grid_lead,t1,v-1,116.07,40.07,石门镇,+8619900000102
v3,周三,hazard_warden,t1,v-1,116.07,40.07,石门镇,+8619900000103
v4,吴四,grid_lead,t1,v-1,116.07,40.07,石门镇,+8619900000104
v5,郑五,grid_lead,t1,v-1,116.07,40.07,石门镇,+8619900000105
v6,王六,grid_lead,t1,v-1,116.07,40.07,石门镇,+8619900000106
r1,冯七,resident,,,116.08,40.08,石门镇,+8619900000107
";
    common::write_district(dir, &[], people);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_red_alert_issued_during_a_cell_outage_is_delivered_when_the_network_returns() {
    let dir = NODE.tempdir("outage");
    write_district(&dir.join("district"));
    let phones = (101..=106)
        .map(|n| PhoneScript {
            number: format!("+8619900000{n}"),
            behaviour: ReplyBehaviour::Reply {
                min_secs: 20.0,
                max_secs: 40.0,
            },
        })
        .collect();
    let sim_cfg = SimConfig {
        phones,
        default_script: ReplyBehaviour::Never,
        faults: Faults {
            network_loss: vec![NetworkLoss {
                at_secs: 0.0,
                for_secs: OUTAGE_SECS,
            }],
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    let sim = tocsin_at_modem::pty::spawn_sim(
        dir.join("modem0"),
        sim_cfg,
        1,
        SPEED,
        tokio_util::sync::CancellationToken::new(),
    )
    .expect("GSM simulator on a pty");
    let devices = format!(
        "[devices.modem-0]\ntype = \"at_modem\"\npath = {:?}\nper_minute = 30\n",
        sim.path.to_string_lossy()
    );
    let config = NODE.write_config(&dir, &devices);
    let daemon = NODE.start(&config);
    let api = &daemon.api;

    let v = api.issue(&common::red_flood()).await;
    assert_eq!(v["people"], 7, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let s: Value = common::follow(
        api,
        Duration::from_secs(60),
        "the campaign's end",
        async || {
            let s = api.get(&format!("/v1/alerts/{id}")).await;
            (s["state"] != "active").then_some(s)
        },
    )
    .await;
    let d = api.deliveries(&id).await;
    for p in ["v1", "v2", "v3", "v4", "v5", "v6"] {
        assert_eq!(d[p]["state"], "acknowledged", "{p}: {}", d[p]);
        assert!(d[p]["escalated_to"].is_null(), "{p}: {}", d[p]);
        // No attempt was spent on a modem without network (outcomes only: a timestamp's
        // digits may well contain 331).
        for a in d[p]["attempts"].as_array().unwrap() {
            let outcome = a["outcome"].as_str().unwrap_or("");
            assert!(
                !outcome.contains("331") && !outcome.contains("failed"),
                "{p}: {a}"
            );
        }
    }
    // The modem is up and registered again, and said so.
    let devices = api.get("/v1/devices").await;
    assert_eq!(devices[0]["up"], true, "{devices}");
    assert_eq!(devices[0]["registered"], true, "{devices}");
    assert_eq!(d["r1"]["state"], "reached", "{}", d["r1"]);
    assert_eq!(s["counts"]["escalated"], 0, "{s}");
    // Every warning went through the modem, after the outage: the simulator refused none
    // (it would have answered +CMS ERROR: 331) and took one per person.
    let submits = sim.submits.lock().unwrap().clone();
    for n in 101..=107 {
        let to = format!("+8619900000{n}");
        assert!(
            submits.iter().any(|m| m.destination == to),
            "{to}: {submits:?}"
        );
    }
    daemon.stop();
}
