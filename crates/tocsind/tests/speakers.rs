//! Loudspeakers end to end: the real `tocsind` binary streams a red alert's programme to
//! simulated IP speakers (UDP, run in this test process) and takes their RTCP receiver
//! reports as reception evidence.
//!
//! Two villages, three speakers on one speaker device, a group each: in 王家沟村 (inside
//! the alert's polygon) one speaker that reports and one that stays silent; in 李家庄村
//! (outside) one more. The red alert plays on the two inside and on no other: the
//! reporting one is `reached` with its RTCP evidence, the silent one `no_evidence` once
//! the window passes, the outside one never receives a packet and is not in the alert's
//! speaker list.
//!
//! Waiting is event-driven: the test follows `/v1/events` and re-checks on every change.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use common::{Api, Node};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tocsin_speaker::sim::{Faults, SimConfig};
use tocsin_speaker::udp::{SimSpeakerHandle, spawn_sim_speaker};
use tokio_util::sync::CancellationToken;

/// The daemon's clock runs this much faster than real time, so red's default 300 s
/// "no evidence" window passes in 3 s. The speakers' RTP is paced in real time.
const SPEED: f64 = 100.0;
const NODE: Node = Node {
    name: "speakers",
    speed: SPEED,
};

/// One town with two villages side by side; a district official far from both (nobody
/// is inside the alert: this test is about the speakers); three speakers.
fn write_district(dir: &Path) {
    let v2 = json!(
        {"type": "Feature", "properties": {"id": "v-2", "kind": "village", "name": "李家庄村", "town": "石门镇"},
         "geometry": {"type": "Polygon", "coordinates": [[[116.2,40.05],[116.25,40.05],[116.25,40.1],[116.2,40.1],[116.2,40.05]]]}}
    );
    common::write_district(
        dir,
        &[v2],
        "id,name,role,supervisor,areas,lon,lat,town,phones\n\
         d1,赵区长,district_official,,,116.5,40.5,区政府,+8619900000001\n",
    );
    std::fs::write(
        dir.join("speakers.csv"),
        "id,name,town,lon,lat,areas,device,group\n\
         sp-v1-a,王家沟村村委会广播,石门镇,116.07,40.07,v-1,speakers-0,v-1-a\n\
         sp-v1-b,王家沟村河口广播,石门镇,116.08,40.08,v-1,speakers-0,v-1-b\n\
         sp-v2,李家庄村广播,石门镇,116.22,40.07,v-2,speakers-0,v-2\n",
    )
    .unwrap();
}

/// The three simulated speakers; the handles keep them running.
struct Sims {
    /// 王家沟村, reports what it receives.
    inside: SimSpeakerHandle,
    /// 王家沟村, receives but never reports.
    silent: SimSpeakerHandle,
    /// 李家庄村, outside the alert.
    outside: SimSpeakerHandle,
    cancel: CancellationToken,
}

async fn start_sims() -> Sims {
    let cancel = CancellationToken::new();
    let any = "127.0.0.1:0".parse().unwrap();
    let sim = |silent: bool| SimConfig {
        report_interval_ms: 200,
        faults: Faults {
            silent,
            ..Faults::default()
        },
    };
    let inside = spawn_sim_speaker(any, sim(false), 1, None, cancel.child_token())
        .await
        .unwrap();
    let silent = spawn_sim_speaker(any, sim(true), 2, None, cancel.child_token())
        .await
        .unwrap();
    let outside = spawn_sim_speaker(any, sim(false), 3, None, cancel.child_token())
        .await
        .unwrap();
    Sims {
        inside,
        silent,
        outside,
        cancel,
    }
}

fn write_config(dir: &Path, sims: &Sims) -> PathBuf {
    let group = |name: &str, s: &SimSpeakerHandle| {
        format!(
            "[[devices.speakers-0.groups]]\nname = \"{name}\"\nrtp = \"{}\"\nspeakers = [\"{}\"]\n",
            s.rtp, s.rtcp
        )
    };
    let rest = format!(
        r#"# No synthesizer: the programme is the red siren, and the test does not depend on espeak-ng.
[speech]
synthesizer = "none"

[devices.speakers-0]
type = "speaker"
bind = "127.0.0.1:0"
rtcp_bind = "127.0.0.1:0"
repeat = 1
rtcp_interval_secs = 1
report_grace_secs = 1

{}
{}
{}
"#,
        group("v-1-a", &sims.inside),
        group("v-1-b", &sims.silent),
        group("v-2", &sims.outside),
    );
    NODE.write_config(dir, &rest)
}

/// The alert's speaker views by speaker id.
fn by_speaker(views: &Value) -> BTreeMap<String, Value> {
    views
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["id"].as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

/// Follows `/v1/events` until `done(speakers)` holds for the alert's speaker views.
async fn wait_until(
    api: &Api,
    id: &str,
    limit: Duration,
    done: impl Fn(&BTreeMap<String, Value>) -> bool,
) -> BTreeMap<String, Value> {
    common::follow(api, limit, "the speakers' expected state", async || {
        let views = by_speaker(&api.get(&format!("/v1/alerts/{id}/speakers")).await);
        done(&views).then_some(views)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_alert_plays_on_the_speakers_inside_the_polygon_and_on_no_other() {
    let dir = NODE.tempdir("red");
    write_district(&dir.join("district"));
    let sims = start_sims().await;
    let config = write_config(&dir, &sims);
    let daemon = NODE.start_with(&config, |cmd| {
        cmd.current_dir(config.parent().unwrap());
    });
    let api = &daemon.api;

    // Around 王家沟村 only; 李家庄村 is 0.1° further east.
    let v = api.issue(&common::red_flood()).await;
    let id = v["id"].as_str().unwrap().to_owned();

    // Done when every announcement is final and the reporting speaker has been reached
    // (a report arriving after the window would still turn no_evidence into reached).
    let views = wait_until(api, &id, Duration::from_secs(20), |v| {
        v.values()
            .all(|s| !matches!(s["state"].as_str(), Some("planned" | "playing")))
            && v.get("sp-v1-a").is_some_and(|s| s["state"] == "reached")
    })
    .await;

    // The alert's speakers: the two inside the polygon, not the one outside.
    assert_eq!(
        views.keys().cloned().collect::<Vec<_>>(),
        ["sp-v1-a", "sp-v1-b"],
        "{views:?}"
    );
    let reached = &views["sp-v1-a"];
    assert_eq!(reached["device"], "speakers-0");
    assert!(reached["reports"].as_u64().unwrap() >= 1, "{reached}");
    let evidence = reached["evidence"].as_str().unwrap();
    assert!(
        evidence.contains(&format!("RTCP RR from speaker {}", sims.inside.rtcp))
            && evidence.contains("on group v-1-a"),
        "{evidence}"
    );
    let silent = &views["sp-v1-b"];
    assert_eq!(silent["state"], "no_evidence", "{silent}");
    assert!(silent["evidence"].is_null(), "{silent}");
    assert_eq!(silent["reports"], 0, "{silent}");
    assert!(
        silent["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no receiver report")),
        "{silent}"
    );

    // The alert's summary counts them the same way.
    let summary = api.get(&format!("/v1/alerts/{id}")).await;
    assert_eq!(summary["speakers"]["speakers"], 2, "{summary}");
    assert_eq!(summary["speakers"]["reached"], 1, "{summary}");
    assert_eq!(summary["speakers"]["no_evidence"], 1, "{summary}");

    // What the speakers heard: both inside speakers the same red programme (PCMA, from
    // its first packet, marker set); the outside speaker nothing at all, though the
    // same device streamed to its neighbours for seconds.
    let inside = sims.inside.observed.lock().unwrap().clone();
    let quiet = sims.silent.observed.lock().unwrap().clone();
    let outside = sims.outside.observed.lock().unwrap().clone();
    for (name, o) in [("inside", &inside), ("silent", &quiet)] {
        assert_eq!(o.streams.len(), 1, "{name}: {:?}", o.streams);
        let s = &o.streams[0];
        assert!(s.first_marker && s.received > 0, "{name}: {s:?}");
        assert_eq!(s.payload_type, 8, "{name}: PCMA");
        assert_eq!(
            (s.lost(), s.timestamp_errors, s.size_errors),
            (0, 0, 0),
            "{name}: {s:?}"
        );
        assert!(
            o.audio.rms() > 0.1,
            "{name}: the siren is loud: {}",
            o.audio.rms()
        );
    }
    assert!(outside.streams.is_empty(), "{:?}", outside.streams);
    assert!(outside.audio.samples.is_empty());
    assert_eq!(outside.garbage, 0);

    daemon.stop();
    sims.cancel.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
