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

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "checkin-issuer-token-0123456789";
/// The daemon's clock and the simulators run this much faster than real time: the 420 s
/// of period and grace pass in 4.2 s.
const SPEED: f64 = 100.0;
/// The radio of crew member F1 (周三).
const F1_NODE: u32 = 0x0000_f001;
/// The radio of crew member F2, never heard in this test.
const F2_NODE: u32 = 0x0000_f002;
/// Where F1's radio reports from: inside the town, outside every village, and about
/// 25 km from where the directory places them.
const F1_REPORTED: [f64; 2] = [116.25, 40.25];

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tocsin-checkin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One town and one village; a district official, the town official who supervises the
/// crew, and two crew members with mesh radios answering for the village.
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
F1,周三,field_crew,t1,v-1,116.07,40.07,石门镇,,,!{F1_NODE:08x},,
F2,吴四,field_crew,t1,v-1,116.07,40.07,石门镇,,,!{F2_NODE:08x},,
"
    );
    std::fs::write(dir.join("people.csv"), people).unwrap();
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
    let modem = tocsin_at_modem::pty::spawn_sim(
        dir.join("modem0"),
        tocsin_at_modem::sim::SimConfig {
            phones: vec![PhoneScript {
                number: "+8619900000002".into(),
                behaviour: ReplyBehaviour::Reply {
                    min_secs: 20.0,
                    max_secs: 40.0,
                },
            }],
            default_script: ReplyBehaviour::Never,
            ..tocsin_at_modem::sim::SimConfig::default()
        },
        1,
        SPEED,
        cancel.child_token(),
    )
    .expect("GSM simulator on a pty");

    use tocsin_meshtastic::sim::{NodeScript, ReplyBehaviour as Mr};
    // The radio's database heard F1 ten hours ago: old news, which must not count as a
    // check-in after the daemon started.
    let mesh = tocsin_meshtastic::runner::spawn_tcp_sim(
        0,
        tocsin_meshtastic::sim::SimConfig {
            nodes: vec![NodeScript {
                num: F1_NODE,
                long_name: "周三".into(),
                short_name: "ZS".into(),
                hops: 1,
                loss: 0.0,
                nak: None,
                behaviour: Mr::Never,
                position: None,
                heard_ago_secs: 36_000,
            }],
            ..tocsin_meshtastic::sim::SimConfig::default()
        },
        3,
        SPEED,
        cancel.child_token(),
    )
    .expect("Meshtastic simulator on loopback TCP");
    Sims {
        modem,
        mesh,
        cancel,
    }
}

fn write_config(dir: &Path, sims: &Sims) -> PathBuf {
    let cfg = format!(
        r#"
[node]
name = "checkin"
data_dir = "data"
clock_speed = {SPEED}

[directory]
path = "district"

[ack]
key = "checkin-secret-key-0123456789"

[api]
listen = "127.0.0.1:0"

[[api.tokens]]
name = "checkin-operator"
token = "{TOKEN}"
role = "issuer"

[speech]
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

/// The check-in alerts the gateway holds.
async fn checkin_alerts(base: &str) -> Vec<Value> {
    get(base, "/v1/alerts")
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["alert"]["kind"] == "checkin")
        .cloned()
        .collect()
}

/// Follows the gateway's record stream, re-checking after every chunk.
struct Events(reqwest::Response);

impl Events {
    async fn follow(base: &str) -> Events {
        let r = client()
            .get(format!("{base}/v1/events"))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        Events(r)
    }

    async fn next(&mut self) {
        match self.0.chunk().await {
            Ok(Some(_)) => {}
            other => panic!("event stream ended: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crew_gone_quiet_alerts_its_supervisor_who_acks_by_sms_and_its_position_is_geofenced() {
    let dir = tempdir("quiet");
    write_district(&dir.join("district"));
    let sims = start_sims(&dir);
    let config = write_config(&dir, &sims);
    let daemon = Daemon::start(&config);
    let base = daemon.base.clone();
    let mut events = Events::follow(&base).await;

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
    let (alert, deliveries) = tokio::time::timeout(limit, async {
        loop {
            if let [a] = checkin_alerts(&base).await.as_slice() {
                let id = a["alert"]["id"].as_str().unwrap().to_owned();
                let d = get(&base, &format!("/v1/alerts/{id}/deliveries")).await;
                if d.as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d["state"] == "acknowledged")
                {
                    return (a.clone(), d);
                }
            }
            events.next().await;
        }
    })
    .await
    .expect("no acknowledged check-in alert in time");

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
    assert_eq!(checkin_alerts(&base).await.len(), 1);
    // A check-in alert is not re-planned from its area.
    let id = a["id"].as_str().unwrap();
    let r = client()
        .patch(format!("{base}/v1/alerts/{id}"))
        .bearer_auth(TOKEN)
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
    let r = client()
        .post(format!("{base}/v1/alerts"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["people"].clone(), v["located"].clone()),
        (json!(1), json!(1)),
        "{v}"
    );
    let id = v["id"].as_str().unwrap();
    let d = get(&base, &format!("/v1/alerts/{id}/deliveries")).await;
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
