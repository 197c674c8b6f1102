//! The harness every end-to-end test of `tocsind` shares: a temp dir per test, a district
//! on disk, a config, the real `tocsind` binary as a child process, HTTP with the
//! operator's token, the `/v1/events` stream that makes waiting event-driven, and the
//! simulators more than one test starts the same way.
//!
//! Each test binary uses part of it only; the `mod common;` line says so.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One test binary's gateway: its name, from which the node name, the operator's token,
/// the ack key and the temp dirs derive, and how much faster than real time its clock runs.
pub struct Node {
    /// Node name and prefix of the token, key and temp dirs.
    pub name: &'static str,
    /// The daemon's `clock_speed`.
    pub speed: f64,
}

impl Node {
    /// The issuer token the config grants and every request carries.
    pub fn token(&self) -> String {
        format!("{}-issuer-token-0123456789", self.name)
    }

    /// A fresh, empty directory for one test, under the system temp dir.
    pub fn tempdir(&self, test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "tocsin-{}-{test}-{}",
            self.name,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Writes `dir/tocsin.toml`: the node, the `district` directory, the ack key, the API on
    /// a free loopback port with this node's issuer token, then `rest` (devices, policies…).
    pub fn write_config(&self, dir: &Path, rest: &str) -> PathBuf {
        let cfg = format!(
            r#"
[node]
name = "{name}"
data_dir = "data"
clock_speed = {speed}

[directory]
path = "district"

[ack]
key = "{name}-secret-key-0123456789"

[api]
listen = "127.0.0.1:0"

[[api.tokens]]
name = "{name}-operator"
token = "{token}"
role = "issuer"

{rest}"#,
            name = self.name,
            speed = self.speed,
            token = self.token(),
        );
        let path = dir.join("tocsin.toml");
        std::fs::write(&path, cfg).unwrap();
        path
    }

    /// Starts `tocsind --config config` with warnings logged.
    pub fn start(&self, config: &Path) -> Daemon {
        self.start_with(config, |_| {})
    }

    /// Starts `tocsind --config config` after `adjust` has had its say on the command
    /// (working directory, log filter), and waits until it serves.
    pub fn start_with(&self, config: &Path, adjust: impl FnOnce(&mut Command)) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tocsind"));
        cmd.arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("TOCSIN_LOG", "warn");
        adjust(&mut cmd);
        let mut child = cmd.spawn().expect("start tocsind");
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
        // Keep draining stderr so the daemon never blocks on a full pipe.
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                eprintln!("[tocsind] {l}")
            }
        });
        Daemon {
            child,
            api: Api {
                base,
                token: self.token(),
            },
        }
    }
}

/// A running `tocsind` child process.
pub struct Daemon {
    child: Child,
    /// Its HTTP API.
    pub api: Api,
}

impl Daemon {
    /// SIGKILL: the daemon gets no chance to flush or say goodbye.
    pub fn kill(mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM, and the daemon must exit successfully.
    pub fn stop(mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "tocsind exited with {status}");
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }
}

/// A daemon's HTTP API, reached with the operator's token.
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:port`, as the daemon announced it.
    pub base: String,
    /// The bearer token every request carries.
    pub token: String,
}

/// An HTTP client with a timeout no healthy request comes near.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

impl Api {
    /// A request to `path` carrying the token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        client()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// GETs `path`, which must succeed, as JSON.
    pub async fn get(&self, path: &str) -> Value {
        let r = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// POSTs `body` to `path`; the caller judges the response.
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Issues an alert, which must be accepted (202); returns the API's answer.
    pub async fn issue(&self, body: &Value) -> Value {
        let r = self.post("/v1/alerts", body).await;
        assert_eq!(r.status(), 202, "{:?}", r.text().await);
        r.json().await.unwrap()
    }

    /// The alert's deliveries by person.
    pub async fn deliveries(&self, id: &str) -> BTreeMap<String, Value> {
        by_person(&self.get(&format!("/v1/alerts/{id}/deliveries")).await)
    }
}

/// The red flash-flood warning for the box around 王家沟村 most tests issue.
pub fn red_flood() -> Value {
    json!({
        "grade": "red", "kind": "flood", "headline": "山洪红色预警",
        "text": "沟道上游强降雨，请立即转移",
        "area": {"type": "Polygon", "coordinates": [[[116.04,40.04],[116.12,40.04],[116.12,40.12],[116.04,40.12],[116.04,40.04]]]}
    })
}

/// Delivery views keyed by person id.
pub fn by_person(deliveries: &Value) -> BTreeMap<String, Value> {
    deliveries
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["person"].as_str().unwrap().to_owned(), d.clone()))
        .collect()
}

/// Writes a district into `dir`: `areas.geojson` with the town 石门镇 (t-1) and its village
/// 王家沟村 (v-1), followed by `more_areas`; and `people` as `people.csv`.
pub fn write_district(dir: &Path, more_areas: &[Value], people: &str) {
    let mut features = vec![
        json!({"type": "Feature", "properties": {"id": "t-1", "kind": "town", "name": "石门镇", "town": ""},
         "geometry": {"type": "Polygon", "coordinates": [[[116.0,40.0],[116.3,40.0],[116.3,40.3],[116.0,40.3],[116.0,40.0]]]}}),
        json!({"type": "Feature", "properties": {"id": "v-1", "kind": "village", "name": "王家沟村", "town": "石门镇"},
         "geometry": {"type": "Polygon", "coordinates": [[[116.05,40.05],[116.1,40.05],[116.1,40.1],[116.05,40.1],[116.05,40.05]]]}}),
    ];
    features.extend_from_slice(more_areas);
    let areas = json!({"type": "FeatureCollection", "features": features});
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("areas.geojson"),
        serde_json::to_string_pretty(&areas).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("people.csv"), people).unwrap();
}

/// The daemon's `/v1/events` stream, and everything it has carried so far.
pub struct Events {
    response: reqwest::Response,
    stream: String,
}

impl Events {
    /// Subscribes; records from now on are seen.
    pub async fn subscribe(api: &Api) -> Events {
        let response = api
            .request(reqwest::Method::GET, "/v1/events")
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        Events {
            response,
            stream: String::new(),
        }
    }

    /// Blocks until the daemon reports any change.
    pub async fn next(&mut self) {
        match self.response.chunk().await {
            Ok(Some(bytes)) => self.stream.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("event stream ended: {other:?}"),
        }
    }

    /// Every record the stream carried so far.
    pub fn records(&self) -> Vec<Value> {
        self.stream
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|l| serde_json::from_str(l.trim()).ok())
            .collect()
    }

    /// Calls `check` now and after every change until it yields, or `limit` passes.
    pub async fn within<T>(
        &mut self,
        limit: Duration,
        mut check: impl AsyncFnMut() -> Option<T>,
    ) -> Result<T, tokio::time::error::Elapsed> {
        tokio::time::timeout(limit, async {
            loop {
                if let Some(v) = check().await {
                    return v;
                }
                self.next().await;
            }
        })
        .await
    }

    /// As [`Events::within`], failing the test with `what` if `limit` passes.
    pub async fn until<T>(
        &mut self,
        limit: Duration,
        what: &str,
        check: impl AsyncFnMut() -> Option<T>,
    ) -> T {
        self.within(limit, check)
            .await
            .unwrap_or_else(|_| panic!("{what}: not reached in time"))
    }

    /// Reads the stream until the records it carried satisfy `done`: the API's views can
    /// be a chunk ahead of the stream, so records of changes already seen are waited for.
    pub async fn records_until(
        &mut self,
        limit: Duration,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let fut = async {
            loop {
                let records = self.records();
                if done(&records) {
                    return records;
                }
                self.next().await;
            }
        };
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => panic!("timed out waiting for the records of {what}"),
        }
    }
}

/// Subscribes to `/v1/events` and calls `check` now and after every change until it
/// yields; fails the test with `what` if `limit` passes.
pub async fn follow<T>(
    api: &Api,
    limit: Duration,
    what: &str,
    check: impl AsyncFnMut() -> Option<T>,
) -> T {
    Events::subscribe(api).await.until(limit, what, check).await
}

/// A GSM modem simulator on a pty at `dir/modem0` (seed 1) where the scripted `phones`
/// behave as told and every other number never answers.
pub fn start_modem(
    dir: &Path,
    phones: Vec<tocsin_at_modem::sim::PhoneScript>,
    speed: f64,
    cancel: &CancellationToken,
) -> tocsin_at_modem::pty::SimHandle {
    tocsin_at_modem::pty::spawn_sim(
        dir.join("modem0"),
        tocsin_at_modem::sim::SimConfig {
            phones,
            default_script: tocsin_at_modem::sim::ReplyBehaviour::Never,
            ..tocsin_at_modem::sim::SimConfig::default()
        },
        1,
        speed,
        cancel.child_token(),
    )
    .expect("GSM simulator on a pty")
}

/// A BDS-3 BeiDou terminal simulator on a pty at `dir/bd0` (seed 2), 1 to 3 s of network
/// latency, where the scripted `cards` behave as told and every other card never answers.
pub fn start_beidou(
    dir: &Path,
    cards: Vec<tocsin_beidou::sim::CardScript>,
    speed: f64,
    cancel: &CancellationToken,
) -> tocsin_beidou::pty::SimHandle {
    use tocsin_beidou::sim::{ReplyBehaviour, SimDialect, TerminalConfig};
    let mut terminal = TerminalConfig::new("4207733");
    terminal.dialect = SimDialect::Bds3;
    // The driver paces in real time from the card's period: one "minute" of gateway time.
    terminal.frequency_secs = 1;
    tocsin_beidou::pty::spawn_sim(
        vec![dir.join("bd0")],
        vec![terminal],
        tocsin_beidou::sim::SimConfig {
            latency_min_ms: 1_000,
            latency_max_ms: 3_000,
            cards,
            default_script: ReplyBehaviour::Never,
            ..tocsin_beidou::sim::SimConfig::default()
        },
        2,
        speed,
        cancel.child_token(),
    )
    .expect("BeiDou simulator on a pty")
}

/// A lossless mesh node `hops` away that the radio heard `heard_ago_secs` ago and that
/// answers texts as `behaviour` says.
pub fn mesh_node(
    num: u32,
    (long_name, short_name): (&str, &str),
    hops: u32,
    behaviour: tocsin_meshtastic::sim::ReplyBehaviour,
    heard_ago_secs: u64,
) -> tocsin_meshtastic::sim::NodeScript {
    tocsin_meshtastic::sim::NodeScript {
        num,
        long_name: long_name.into(),
        short_name: short_name.into(),
        hops,
        loss: 0.0,
        nak: None,
        behaviour,
        position: None,
        heard_ago_secs,
    }
}

/// A Meshtastic radio simulator on a free loopback TCP port (seed 3) with `nodes`.
pub fn start_mesh(
    nodes: Vec<tocsin_meshtastic::sim::NodeScript>,
    speed: f64,
    cancel: &CancellationToken,
) -> tocsin_meshtastic::runner::SimHandle {
    tocsin_meshtastic::runner::spawn_tcp_sim(
        0,
        tocsin_meshtastic::sim::SimConfig {
            nodes,
            ..tocsin_meshtastic::sim::SimConfig::default()
        },
        3,
        speed,
        cancel.child_token(),
    )
    .expect("Meshtastic simulator on loopback TCP")
}
