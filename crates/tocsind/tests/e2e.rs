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

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tocsin_at_modem::sim::{PhoneScript, ReplyBehaviour, SimConfig};

const TOKEN: &str = "e2e-issuer-token-0123456789";
/// The daemon's clock runs this much faster: the 5-minute red deadline passes in 5 s.
const SPEED: f64 = 60.0;

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tocsin-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tiny district: one town, one village with six leads and a resident, a town official
/// who supervises the leads, and a district official above.
fn write_district(dir: &Path) {
    let areas = json!({
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {"id": "t-1", "kind": "town", "name": "石门镇", "town": ""},
             "geometry": {"type": "Polygon", "coordinates": [[[116.0,40.0],[116.3,40.0],[116.3,40.3],[116.0,40.3],[116.0,40.0]]]}},
            {"type": "Feature", "properties": {"id": "v-1", "kind": "village", "name": "王家沟村", "town": "石门镇"},
             "geometry": {"type": "Polygon", "coordinates": [[[116.05,40.05],[116.1,40.05],[116.1,40.1],[116.05,40.1],[116.05,40.05]]]}},
            {"type": "Feature", "properties": {"id": "v-2", "kind": "village", "name": "李家台村", "town": "石门镇"},
             "geometry": {"type": "Polygon", "coordinates": [[[116.2,40.2],[116.25,40.2],[116.25,40.25],[116.2,40.25],[116.2,40.2]]]}}
        ]
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("areas.geojson"),
        serde_json::to_string_pretty(&areas).unwrap(),
    )
    .unwrap();
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
    std::fs::write(dir.join("people.csv"), people).unwrap();
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
    let cfg = format!(
        r#"
[node]
name = "e2e"
data_dir = "data"
clock_speed = {SPEED}

[directory]
path = "district"

[ack]
key = "e2e-secret-key-0123456789"

[api]
listen = "127.0.0.1:0"

[[api.tokens]]
name = "e2e-operator"
token = "{TOKEN}"
role = "issuer"

{devices}"#
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
        // Keep draining stderr so the daemon never blocks on a full pipe.
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                eprintln!("[tocsind] {l}")
            }
        });
        Daemon { child, base }
    }

    fn kill(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let _ = self.child.wait();
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

async fn issue(base: &str) -> String {
    let body = json!({
        "grade": "red", "kind": "flood", "headline": "山洪红色预警",
        "text": "沟道上游强降雨，请立即转移",
        "area": {"type": "Polygon", "coordinates": [[[116.04,40.04],[116.12,40.04],[116.12,40.12],[116.04,40.12],[116.04,40.04]]]}
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
        v["people"], 7,
        "six leads of 王家沟村 and the resident located there: {v}"
    );
    v["id"].as_str().unwrap().to_owned()
}

/// Follows `/v1/events` and returns the alert's summary once `done(summary)` holds.
async fn wait_until(base: &str, id: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let fut = async {
        let mut events = client()
            .get(format!("{base}/v1/events"))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .unwrap();
        loop {
            let s = get(base, &format!("/v1/alerts/{id}")).await;
            if done(&s) {
                return s;
            }
            // Block until the daemon reports any change.
            match events.chunk().await {
                Ok(Some(_)) => {}
                other => panic!("event stream ended: {other:?}"),
            }
        }
    };
    tokio::time::timeout(limit, fut)
        .await
        .expect("the campaign did not reach the expected state in time")
}

fn count(summary: &Value, state: &str) -> u64 {
    summary["counts"]["by_state"][state].as_u64().unwrap_or(0)
}

fn by_person(deliveries: &Value) -> std::collections::BTreeMap<String, Value> {
    deliveries
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["person"].as_str().unwrap().to_owned(), d.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_alert_reaches_people_by_sms_counts_acks_rejects_forgeries_and_escalates() {
    let dir = tempdir("red");
    write_district(&dir.join("district"));
    let sim = start_sim(&dir, phones(false), 1);
    let config = write_config(&dir, &[sim.path.to_string_lossy().into_owned()]);
    let daemon = Daemon::start(&config);
    let id = issue(&daemon.base).await;

    let s = wait_until(&daemon.base, &id, Duration::from_secs(120), |s| {
        s["state"] != "active"
    })
    .await;
    let d = by_person(&get(&daemon.base, &format!("/v1/alerts/{id}/deliveries")).await);

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
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_campaign_loses_nothing_and_the_campaign_finishes() {
    let dir = tempdir("kill");
    write_district(&dir.join("district"));
    let sim = start_sim(&dir, phones(true), 2);
    let config = write_config(&dir, &[sim.path.to_string_lossy().into_owned()]);
    let daemon = Daemon::start(&config);
    let id = issue(&daemon.base).await;

    // Kill as soon as the first acks are committed, with attempts and replies in flight.
    let before = wait_until(&daemon.base, &id, Duration::from_secs(60), |s| {
        count(s, "acknowledged") >= 1
    })
    .await;
    let acked_before: Vec<String> =
        by_person(&get(&daemon.base, &format!("/v1/alerts/{id}/deliveries")).await)
            .into_iter()
            .filter(|(_, d)| d["state"] == "acknowledged")
            .map(|(p, _)| p)
            .collect();
    daemon.kill();

    let daemon = Daemon::start(&config);
    let after = get(&daemon.base, &format!("/v1/alerts/{id}")).await;
    assert_eq!(
        after["counts"]["targets"], before["counts"]["targets"],
        "no planned delivery lost"
    );
    assert!(
        count(&after, "acknowledged") >= count(&before, "acknowledged"),
        "no ack lost: {after}"
    );
    let s = wait_until(&daemon.base, &id, Duration::from_secs(120), |s| {
        s["state"] != "active"
    })
    .await;
    let d = by_person(&get(&daemon.base, &format!("/v1/alerts/{id}/deliveries")).await);
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
    daemon.stop();
}
