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

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tocsin_speaker::sim::{Faults, SimConfig};
use tocsin_speaker::udp::{SimSpeakerHandle, spawn_sim_speaker};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "speakers-issuer-token-0123456789";
/// The daemon's clock runs this much faster than real time, so red's default 300 s
/// "no evidence" window passes in 3 s. The speakers' RTP is paced in real time.
const SPEED: f64 = 100.0;

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tocsin-speakers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One town with two villages side by side; a district official far from both (nobody
/// is inside the alert: this test is about the speakers); three speakers.
fn write_district(dir: &Path) {
    let areas = json!({
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {"id": "t-1", "kind": "town", "name": "石门镇", "town": ""},
             "geometry": {"type": "Polygon", "coordinates": [[[116.0,40.0],[116.3,40.0],[116.3,40.3],[116.0,40.3],[116.0,40.0]]]}},
            {"type": "Feature", "properties": {"id": "v-1", "kind": "village", "name": "王家沟村", "town": "石门镇"},
             "geometry": {"type": "Polygon", "coordinates": [[[116.05,40.05],[116.1,40.05],[116.1,40.1],[116.05,40.1],[116.05,40.05]]]}},
            {"type": "Feature", "properties": {"id": "v-2", "kind": "village", "name": "李家庄村", "town": "石门镇"},
             "geometry": {"type": "Polygon", "coordinates": [[[116.2,40.05],[116.25,40.05],[116.25,40.1],[116.2,40.1],[116.2,40.05]]]}}
        ]
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("areas.geojson"),
        serde_json::to_string_pretty(&areas).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("people.csv"),
        "id,name,role,supervisor,areas,lon,lat,town,phones\n\
         d1,赵区长,district_official,,,116.5,40.5,区政府,+8619900000001\n",
    )
    .unwrap();
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
    let cfg = format!(
        r#"
[node]
name = "speakers"
data_dir = "data"
clock_speed = {SPEED}

[directory]
path = "district"

[ack]
key = "speakers-secret-key-0123456789"

[api]
listen = "127.0.0.1:0"

[[api.tokens]]
name = "speakers-operator"
token = "{TOKEN}"
role = "issuer"

# No synthesizer: the programme is the red siren, and the test does not depend on espeak-ng.
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
            .current_dir(config.parent().unwrap())
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
            eprintln!("[tocsind] {line}");
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
    base: &str,
    id: &str,
    limit: Duration,
    done: impl Fn(&BTreeMap<String, Value>) -> bool,
) -> BTreeMap<String, Value> {
    let fut = async {
        let mut events = client()
            .get(format!("{base}/v1/events"))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .unwrap();
        loop {
            let views = by_speaker(&get(base, &format!("/v1/alerts/{id}/speakers")).await);
            if done(&views) {
                return views;
            }
            match events.chunk().await {
                Ok(Some(_)) => {}
                other => panic!("event stream ended: {other:?}"),
            }
        }
    };
    tokio::time::timeout(limit, fut)
        .await
        .expect("the speakers did not reach the expected state in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_alert_plays_on_the_speakers_inside_the_polygon_and_on_no_other() {
    let dir = tempdir("red");
    write_district(&dir.join("district"));
    let sims = start_sims().await;
    let config = write_config(&dir, &sims);
    let daemon = Daemon::start(&config);

    // Around 王家沟村 only; 李家庄村 is 0.1° further east.
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
    let id = v["id"].as_str().unwrap().to_owned();

    // Done when every announcement is final and the reporting speaker has been reached
    // (a report arriving after the window would still turn no_evidence into reached).
    let views = wait_until(&daemon.base, &id, Duration::from_secs(20), |v| {
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
    let summary = get(&daemon.base, &format!("/v1/alerts/{id}")).await;
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
