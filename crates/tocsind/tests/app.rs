//! End to end through the warning app: the real `tocsind` binary pushes a red alert to the
//! simulated app backend (run in this test process on 127.0.0.1, so it outlives a killed
//! daemon the way a real backend does) alongside the SMS through a GSM simulator on a real
//! pseudo-terminal. App users answer by signed callback and by the ack link; one answer
//! comes with a forged signature and must not count; the daemon is SIGKILLed after the
//! first app ack is committed and the backend's retried callbacks count once.
//!
//! Waiting is event-driven: the test follows the daemon's `/v1/events` stream and checks
//! the alert's state when something happens, with a generous upper bound.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use common::Node;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tocsin_at_modem::sim::{PhoneScript, ReplyBehaviour};
use tocsin_webhook::sign::{self, SIGNATURE_HEADER, Secret, TIMESTAMP_HEADER};
use tocsin_webhook::sim::{Behaviour, Report, Via};
use tocsin_webhook::wire::Callback;
use tokio_util::sync::CancellationToken;

/// The daemon's clock (and the modem simulator's) runs this much faster: the 5-minute red
/// deadline passes in 10 s, room for a restart. The app backend and the webhook driver
/// run in real time.
const SPEED: f64 = 30.0;
const NODE: Node = Node {
    name: "app",
    speed: SPEED,
};
/// The key the gateway and the app backend share.
const APP_KEY: &str = "app-backend-shared-key-0123456789";

/// Four leads of 王家沟村, each with a phone and an app subscriber id, under a town
/// official who has a phone only.
fn write_district(dir: &Path) {
    let people = "\
id,name,role,supervisor,areas,lon,lat,town,phones,app
t1,钱镇长,town_official,,,116.15,40.15,石门镇,+8619900000002,
v1,孙一,village_head,t1,v-1,116.07,40.07,石门镇,+8619900000101,u-v1
v2,李二,grid_lead,t1,v-1,116.07,40.07,石门镇,+8619900000102,u-v2
v3,周三,hazard_warden,t1,v-1,116.07,40.07,石门镇,+8619900000103,u-v3
v4,吴四,grid_lead,t1,v-1,116.07,40.07,石门镇,+8619900000104,u-v4
";
    common::write_district(dir, &[], people);
}

/// Only 吴四 answers the SMS, 3 to 4 s after it arrives; the others leave it to the app.
fn phones() -> Vec<PhoneScript> {
    vec![PhoneScript {
        number: "+8619900000104".into(),
        behaviour: ReplyBehaviour::Reply {
            min_secs: 90.0,
            max_secs: 120.0,
        },
    }]
}

/// The app users: 孙一 answers `1 CODE` by signed callback at once, 李二 taps the ack
/// link, 周三 answers by callback later (while the daemon is down, so the backend
/// retries), 吴四 answers nothing in the app on their own (the test forges their answer).
fn app_users() -> tocsin_webhook::sim::SimConfig {
    let reply = |after_ms, via| Behaviour::Reply {
        after_ms,
        text: None,
        via,
    };
    let mut cfg = tocsin_webhook::sim::SimConfig::new(Secret::new(APP_KEY.as_bytes().to_vec()));
    cfg.people = [
        ("u-v1", reply(200, Via::Callback)),
        ("u-v2", reply(600, Via::Link)),
        ("u-v3", reply(2_000, Via::Callback)),
    ]
    .into_iter()
    .map(|(s, b)| (s.to_owned(), b))
    .collect();
    // A restarting daemon is unreachable for a second or two: keep trying for 30 s.
    cfg.callback_retries = 30;
    cfg
}

/// A loopback port nobody listens on now, for the callback listener: it must be the same
/// across a restart, since the backend calls back the URL the pushes carried.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The modem, the webhook device `app-1`, and red's default policy with the app among
/// its parallel bearers (a grade table must be complete; residents keep their override).
fn write_config(
    dir: &Path,
    modem: &Path,
    push_url: &str,
    callback_port: u16,
) -> std::path::PathBuf {
    let rest = format!(
        r#"
[devices.modem-0]
type = "at_modem"
path = {modem:?}
per_minute = 30

[devices.app-1]
type = "webhook"
url = "{push_url}"
secret = "{APP_KEY}"
callback_bind = "127.0.0.1:{callback_port}"

[policies.red]
parallel = ["sms", "voice", "app"]
best_of = ["beidou", "mesh", "sbd"]
attempts_per_bearer = 3
retry_backoff_s = 30
ack_required = true
ack_deadline_s = 300
reminders = 2
escalate = true
door_knock_deadline_s = 900

[policies.red.roles.resident]
ack_required = false
escalate = false
"#,
        modem = modem.to_string_lossy(),
    );
    NODE.write_config(dir, &rest)
}

/// Stands in for the killed daemon's callback listener on `port`, the way a proxy in
/// front of a gateway that is down answers: every request gets `503`, so the backend
/// keeps what it was sending and tries again. Returns once a callback from `subscriber`
/// came (and was refused), with the listener closed again.
async fn refuse_until_callback_from(port: u16, subscriber: &str, limit: Duration) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let (seen_tx, mut seen) = tokio::sync::mpsc::channel::<(String, String)>(64);
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let seen_tx = seen_tx.clone();
        async move {
            let path = req.uri().path().to_owned();
            let body = axum::body::to_bytes(req.into_body(), 64 * 1024)
                .await
                .unwrap_or_default();
            let _ = seen_tx
                .send((path, String::from_utf8_lossy(&body).into_owned()))
                .await;
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                [(axum::http::header::CONNECTION, "close")],
                "",
            )
        }
    });
    let stop = CancellationToken::new();
    let serve = axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
    let server = tokio::spawn(async move { serve.await });
    let wanted = format!("\"subscriber\":\"{subscriber}\"");
    tokio::time::timeout(limit, async {
        while let Some((path, body)) = seen.recv().await {
            if path == "/callback" && body.contains(&wanted) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no callback from {subscriber} while the daemon was down"));
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the stand-in listener closes")
        .unwrap()
        .unwrap();
}

/// `POST /callback` as an app backend sends it, signed with `key` at the webhook driver's
/// (real-time) clock; returns the HTTP status.
async fn callback(port: u16, key: &[u8], subscriber: &str, text: &str) -> u16 {
    let now = tocsin_webhook::io::Clock::start().now();
    let cb = Callback {
        subscriber: subscriber.into(),
        text: Some(text.into()),
        token: None,
        sent_at: Some(now.as_millis()),
    };
    let mut body = Vec::new();
    cb.emit(&mut body);
    let secs = now.as_millis().div_euclid(1000);
    let signature = sign::sign(&Secret::new(key.to_vec()), secs, &body);
    common::client()
        .post(format!("http://127.0.0.1:{port}/callback"))
        .header("content-type", "application/json")
        .header(TIMESTAMP_HEADER, secs.to_string())
        .header(SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn acked_via(d: &Value, device: &str) -> bool {
    d["state"] == "acknowledged"
        && d["ack_evidence"]
            .as_str()
            .is_some_and(|e| e.contains(&format!(" via {device}: ")))
}

fn code(d: &Value) -> String {
    d["code"].as_str().unwrap().to_owned()
}

/// The ack verdicts in the daemon's log, by person: how many times each record of the
/// alert was acknowledged, and how many duplicates were recorded for it.
fn verdicts_in_log(db: &Path, id: &str) -> (BTreeMap<String, u32>, BTreeMap<String, u32>) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT body FROM events ORDER BY seq")
        .unwrap();
    let bodies: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let (mut acks, mut dups) = (BTreeMap::new(), BTreeMap::new());
    for body in bodies {
        let r: Value = serde_json::from_str(&body).unwrap();
        if r["type"] != "reply" {
            continue;
        }
        let v = &r["verdict"];
        let person = v["person"].as_str().unwrap_or_default().to_owned();
        match v["verdict"].as_str() {
            Some("ack") if v["alert"] == id => *acks.entry(person).or_default() += 1,
            Some("duplicate") => *dups.entry(person).or_default() += 1,
            _ => {}
        }
    }
    (acks, dups)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_acks_count_once_through_a_sigkill_and_a_forged_answer_does_not_count() {
    let cancel = CancellationToken::new();
    let dir = NODE.tempdir("acks");
    write_district(&dir.join("district"));
    let modem = common::start_modem(&dir, phones(), SPEED, &cancel);
    let mut backend = tocsin_webhook::backend::spawn_backend(
        ([127, 0, 0, 1], 0).into(),
        app_users(),
        cancel.child_token(),
    )
    .await
    .unwrap();
    let port = free_port();
    let config = write_config(&dir, &modem.path, &backend.url, port);
    let daemon = NODE.start(&config);
    let api = &daemon.api;

    let v = api.issue(&common::red_flood()).await;
    assert_eq!(v["people"], 4, "the four leads of 王家沟村: {v}");
    let id = v["id"].as_str().unwrap().to_owned();

    // 吴四's push reached the backend; an answer in their name carrying their code, but
    // signed with a key the gateway never had, is refused before the router sees it.
    let d = common::follow(
        api,
        Duration::from_secs(20),
        "the push to 吴四 answered",
        async || {
            let d = api.deliveries(&id).await;
            let pushed = d["v4"]["attempts"]
                .as_array()?
                .iter()
                .any(|a| a["bearer"] == "app" && a["outcome"] == "sent");
            pushed.then_some(d)
        },
    )
    .await;
    let forged = callback(
        port,
        b"not-the-key-of-this-gateway-0000",
        "u-v4",
        &format!("1 {}", code(&d["v4"])),
    )
    .await;
    assert_eq!(forged, 401, "a forged signature is refused");

    // Kill as soon as the first app ack (孙一's, the quickest to answer) is committed.
    let before = common::follow(
        api,
        Duration::from_secs(20),
        "孙一's ack from the app",
        async || {
            let d = api.deliveries(&id).await;
            acked_via(&d["v1"], "app-1").then_some(d)
        },
    )
    .await;
    assert_ne!(
        before["v3"]["state"], "acknowledged",
        "周三 answers after the kill: {}",
        before["v3"]
    );
    daemon.kill();
    // 周三 answers while the daemon is down: the backend is told to try again.
    refuse_until_callback_from(port, "u-v3", Duration::from_secs(20)).await;

    let daemon = NODE.start(&config);
    let api = &daemon.api;
    let after = api.deliveries(&id).await;
    for (p, d) in before.iter().filter(|(_, d)| acked_via(d, "app-1")) {
        assert!(
            acked_via(&after[p], "app-1"),
            "{p} lost its ack: {}",
            after[p]
        );
        assert_eq!(after[p]["acked_at"], d["acked_at"], "{p}");
        assert_eq!(after[p]["ack_evidence"], d["ack_evidence"], "{p}");
    }
    // The backend never heard the 200 for 孙一's callback (say the kill came first) and
    // sends it again: the restarted daemon answers 200 and counts nothing new.
    let again = callback(
        port,
        APP_KEY.as_bytes(),
        "u-v1",
        &format!("1 {}", code(&after["v1"])),
    )
    .await;
    assert_eq!(again, 200, "a retried callback is answered once committed");

    let s = common::follow(
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
    for p in ["v1", "v2", "v3"] {
        assert!(acked_via(&d[p], "app-1"), "{p}: {}", d[p]);
        assert_eq!(d[p]["late"], false, "{p}");
        assert!(d[p]["escalated_to"].is_null(), "{p}: {}", d[p]);
    }
    for p in ["v1", "v3"] {
        let evidence = d[p]["ack_evidence"].as_str().unwrap();
        assert!(
            evidence.contains("signed callback: HMAC-SHA256 verified")
                && evidence.contains(&code(&d[p])),
            "{p}: {evidence}"
        );
    }
    let evidence = d["v2"]["ack_evidence"].as_str().unwrap();
    assert!(
        evidence.contains("ack link tapped and confirmed"),
        "{evidence}"
    );
    // 吴四's forged app answer did not count; their SMS did.
    assert!(acked_via(&d["v4"], "modem-0"), "{}", d["v4"]);
    assert!(
        d["v4"]["ack_evidence"]
            .as_str()
            .unwrap()
            .contains(&code(&d["v4"])),
        "{}",
        d["v4"]
    );
    // The summary agrees with the records.
    assert_eq!(s["counts"]["targets"], 4, "{s}");
    assert_eq!(s["counts"]["by_state"]["acknowledged"], 4, "{s}");
    assert_eq!(s["counts"]["escalated"], 0, "{s}");
    assert_eq!(s["counts"]["late"], 0, "{s}");
    assert_eq!(
        s["counts"]["rejected_replies"], 0,
        "the forged answer never reached the router: {s}"
    );
    let reached = d.values().filter(|x| x["state"] == "acknowledged").count();
    assert_eq!(reached, 4);
    daemon.stop();

    // The log holds one ack per person, whatever the backend retried; the callback sent
    // again after the restart is on record as a duplicate.
    let (acks, dups) = verdicts_in_log(&dir.join("data").join("tocsin.db"), &id);
    for p in ["v1", "v2", "v3", "v4"] {
        assert_eq!(acks.get(p), Some(&1), "{p}: {acks:?}");
    }
    assert!(dups.get("v1").is_some_and(|&n| n >= 1), "{dups:?}");

    // What the backend saw: every lead pushed, and each app answer taken with a 200.
    let mut reports = Vec::new();
    while let Ok(r) = backend.reports.try_recv() {
        reports.push(r);
    }
    for sub in ["u-v1", "u-v2", "u-v3", "u-v4"] {
        assert!(
            reports.iter().any(|r| matches!(r,
                Report::Pushed { subscriber: Some(s), status: 200, .. } if s == sub)),
            "{sub} was pushed: {reports:?}"
        );
    }
    for (sub, how) in [("u-v1", None), ("u-v2", Some("link")), ("u-v3", None)] {
        assert!(
            reports.iter().any(|r| matches!(r,
                Report::Answered { subscriber, text, status: 200, forged: false }
                    if subscriber == sub && how.is_none_or(|h| text == h))),
            "{sub} answered: {reports:?}"
        );
    }
    cancel.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
