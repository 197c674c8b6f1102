//! The real driver task (`io.rs`: reqwest pushes, axum listener) against the simulated
//! app backend, both on 127.0.0.1: pushes delivered and acknowledged, the retry path
//! after a 503, forged and malformed callbacks refused, a dead backend reported down.

#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::time::Duration;

use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, DriverHandle, Outbound};
use tocsin_core::{Address, AttemptId, DeviceId};
use tocsin_webhook::backend::{BackendHandle, spawn_backend};
use tocsin_webhook::config::WebhookConfig;
use tocsin_webhook::io::spawn_webhook;
use tocsin_webhook::sign::{self, SIGNATURE_HEADER, Secret, TIMESTAMP_HEADER};
use tocsin_webhook::sim::{Behaviour, Faults, Report, SimConfig, Via};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const KEY: &str = "tocsin-integration-key-01";
/// Generous bound on anything awaited: a loaded CI box is slow, a hang is a failure.
const WAIT: Duration = Duration::from_secs(20);

struct Rig {
    driver: DriverHandle,
    events: mpsc::Receiver<DeviceEvent>,
    backend: BackendHandle,
    cancel: CancellationToken,
}

async fn rig(sim: SimConfig, tune: impl FnOnce(&mut WebhookConfig)) -> Rig {
    let cancel = CancellationToken::new();
    let backend = spawn_backend("127.0.0.1:0".parse().unwrap(), sim, cancel.clone())
        .await
        .unwrap();
    let mut cfg = WebhookConfig::new(backend.url.clone(), KEY);
    cfg.callback_bind = "127.0.0.1:0".into();
    tune(&mut cfg);
    cfg.validate().unwrap();
    let (tx, mut events) = mpsc::channel(256);
    let driver = spawn_webhook(DeviceId::from("app-1"), cfg, tx, cancel.clone());
    // The listener is open before anything is sent: its address goes into the pushes.
    let up = next(&mut events, |e| matches!(e, DriverEvent::Health(_))).await;
    assert!(matches!(&up, DriverEvent::Health(h) if h.up), "{up:?}");
    Rig {
        driver,
        events,
        backend,
        cancel,
    }
}

fn sim_config() -> SimConfig {
    SimConfig::new(Secret::new(KEY.as_bytes().to_vec()))
}

async fn send(r: &Rig, attempt: u64, sub: &str, text: &str) {
    r.driver
        .commands
        .send(DriverCommand::Send(Outbound {
            attempt: AttemptId(attempt),
            to: Address::App(sub.into()),
            text: text.into(),
            want_report: false,
        }))
        .await
        .unwrap();
}

/// The next event that satisfies `pred` (others are skipped).
async fn next(
    rx: &mut mpsc::Receiver<DeviceEvent>,
    pred: impl Fn(&DriverEvent) -> bool,
) -> DriverEvent {
    let wait = async {
        while let Some(e) = rx.recv().await {
            if pred(&e.event) {
                return e.event;
            }
        }
        panic!("driver gone");
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("event in time")
}

async fn report(b: &mut BackendHandle, pred: impl Fn(&Report) -> bool) -> Report {
    let wait = async {
        while let Some(r) = b.reports.recv().await {
            if pred(&r) {
                return r;
            }
        }
        panic!("backend gone");
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("report in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_is_delivered_and_the_apps_ack_comes_back_once_committed() {
    let mut sim = sim_config();
    sim.people.insert(
        "u-1001".into(),
        Behaviour::Reply {
            after_ms: 50,
            text: None,
            via: Via::Callback,
        },
    );
    let mut r = rig(sim, |_| {}).await;
    send(
        &r,
        7,
        "u-1001",
        "【红色预警】山洪红色预警：立即转移 回复 1 K7XT 确认",
    )
    .await;
    assert_eq!(
        next(&mut r.events, |_| true).await,
        DriverEvent::Accepted {
            attempt: AttemptId(7)
        }
    );
    let sent = next(&mut r.events, |e| matches!(e, DriverEvent::Sent { .. })).await;
    assert_eq!(
        sent,
        DriverEvent::Sent {
            attempt: AttemptId(7),
            reference: "n-1".into()
        }
    );
    let pushed = report(&mut r.backend, |r| matches!(r, Report::Pushed { .. })).await;
    assert_eq!(
        pushed,
        Report::Pushed {
            subscriber: Some("u-1001".into()),
            text: Some("【红色预警】山洪红色预警：立即转移 回复 1 K7XT 确认".into()),
            status: 200,
            note: None
        }
    );
    let inbound = next(&mut r.events, |e| matches!(e, DriverEvent::Inbound { .. })).await;
    let DriverEvent::Inbound {
        from,
        text,
        evidence,
        receipt,
        in_reply_to,
        sent_at,
    } = inbound
    else {
        unreachable!()
    };
    assert_eq!(from, Address::App("u-1001".into()));
    assert_eq!(text, "1 K7XT");
    assert!(evidence.contains("HMAC-SHA256 verified"), "{evidence}");
    assert_eq!(in_reply_to, None);
    assert!(sent_at.is_some());
    // The app hears 200 only after the gateway released the receipt (committed).
    r.driver
        .commands
        .send(DriverCommand::Release(receipt.unwrap()))
        .await
        .unwrap();
    let answered = report(&mut r.backend, |r| matches!(r, Report::Answered { .. })).await;
    assert_eq!(
        answered,
        Report::Answered {
            subscriber: "u-1001".into(),
            text: "1 K7XT".into(),
            status: 200,
            forged: false
        }
    );
    r.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_fails_retryably_and_the_next_attempt_goes_through() {
    let mut sim = sim_config();
    sim.faults = Faults {
        fail_first: 1,
        ..Faults::default()
    };
    let mut r = rig(sim, |_| {}).await;
    send(&r, 1, "u-1", "【黄色预警】大风").await;
    let failed = next(&mut r.events, |e| matches!(e, DriverEvent::Failed { .. })).await;
    match failed {
        DriverEvent::Failed {
            attempt,
            retryable,
            reason,
        } => {
            assert_eq!(attempt, AttemptId(1));
            assert!(retryable);
            assert!(reason.starts_with("http 503"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The router's retry is a new attempt on the same device.
    send(&r, 2, "u-1", "【黄色预警】大风").await;
    let sent = next(&mut r.events, |e| {
        matches!(e, DriverEvent::Sent { .. } | DriverEvent::Failed { .. })
    })
    .await;
    assert!(
        matches!(
            sent,
            DriverEvent::Sent {
                attempt: AttemptId(2),
                ..
            }
        ),
        "{sent:?}"
    );
    r.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_signed_with_the_wrong_key_is_refused() {
    let mut sim = sim_config();
    sim.default = Behaviour::Reply {
        after_ms: 10,
        text: None,
        via: Via::Callback,
    };
    sim.faults.bad_signature_rate = 1.0;
    let mut r = rig(sim, |_| {}).await;
    send(&r, 1, "u-1", "【橙色预警】暴雨 回复 1 AB12 确认").await;
    let answered = report(&mut r.backend, |r| matches!(r, Report::Answered { .. })).await;
    assert_eq!(
        answered,
        Report::Answered {
            subscriber: "u-1".into(),
            text: "1 AB12".into(),
            status: 401,
            forged: true
        }
    );
    // No Inbound came of it: the next event is the Sent of a later push.
    send(&r, 2, "u-2", "hi").await;
    let ev = next(&mut r.events, |e| {
        matches!(
            e,
            DriverEvent::Inbound { .. }
                | DriverEvent::Sent {
                    attempt: AttemptId(2),
                    ..
                }
        )
    })
    .await;
    assert!(matches!(ev, DriverEvent::Sent { .. }), "{ev:?}");
    r.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tapped_link_and_a_token_callback_answer_their_attempt() {
    let mut sim = sim_config();
    sim.people.insert(
        "u-link".into(),
        Behaviour::Reply {
            after_ms: 10,
            text: None,
            via: Via::Link,
        },
    );
    sim.people.insert(
        "u-token".into(),
        Behaviour::Reply {
            after_ms: 10,
            text: None,
            via: Via::Token,
        },
    );
    let mut r = rig(sim, |_| {}).await;
    send(&r, 11, "u-link", "【红色预警】山洪 回复 1 K7XT 确认").await;
    send(&r, 12, "u-token", "【红色预警】山洪 回复 1 Q2WE 确认").await;
    for _ in 0..2 {
        let ev = next(&mut r.events, |e| matches!(e, DriverEvent::Inbound { .. })).await;
        let DriverEvent::Inbound {
            from,
            text,
            in_reply_to,
            receipt,
            ..
        } = ev
        else {
            unreachable!()
        };
        let expected = match &from {
            Address::App(s) if s == "u-link" => AttemptId(11),
            Address::App(s) if s == "u-token" => AttemptId(12),
            other => panic!("{other:?}"),
        };
        assert_eq!((text.as_str(), in_reply_to), ("1", Some(expected)));
        r.driver
            .commands
            .send(DriverCommand::Release(receipt.unwrap()))
            .await
            .unwrap();
    }
    for _ in 0..2 {
        let a = report(&mut r.backend, |r| matches!(r, Report::Answered { .. })).await;
        assert!(matches!(a, Report::Answered { status: 200, .. }), "{a:?}");
    }
    r.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_refuses_oversized_garbage_and_uncommitted_callbacks() {
    let listener = free_port();
    let mut r = rig(sim_config(), |c| {
        c.callback_bind = listener.to_string();
        c.max_body_bytes = 256;
        c.commit_wait_ms = 200;
    })
    .await;
    // Play the app backend by hand: sign our own requests.
    let secret = Secret::new(KEY.as_bytes().to_vec());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{listener}/callback");
    let now = unix_secs();
    let post = |body: Vec<u8>, key: &Secret, ts: i64| {
        client
            .post(&url)
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, sign::sign(key, ts, &body))
            .body(body)
            .send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(post(vec![b'x'; 1000], &secret, now).await.unwrap()),
        413
    );
    assert_eq!(
        status(post(b"{garbage".to_vec(), &secret, now).await.unwrap()),
        400
    );
    assert_eq!(
        status(
            post(
                br#"{"subscriber":"u-1","text":"1"}"#.to_vec(),
                &secret,
                now - 3600
            )
            .await
            .unwrap()
        ),
        401
    );
    let unsigned = client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(status(unsigned), 401);
    // Good, but never released: the app is told to try again.
    let held = post(br#"{"subscriber":"u-1","text":"1"}"#.to_vec(), &secret, now)
        .await
        .unwrap();
    assert_eq!(held.status().as_u16(), 503);
    assert_eq!(
        held.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let inbound = next(&mut r.events, |e| matches!(e, DriverEvent::Inbound { .. })).await;
    assert!(matches!(inbound, DriverEvent::Inbound { text, .. } if text == "1"));
    r.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_is_reported_down_and_up_again() {
    // A port nothing listens on.
    let dead = free_port();
    let mut r = rig(sim_config(), |c| {
        c.url = format!("http://{dead}/push");
        c.down_after = 2;
    })
    .await;
    for a in 1..=2 {
        send(&r, a, "u-1", "hi").await;
        let f = next(&mut r.events, |e| matches!(e, DriverEvent::Failed { .. })).await;
        assert!(
            matches!(&f, DriverEvent::Failed { retryable: true, reason, .. } if reason.starts_with("cannot connect")),
            "{f:?}"
        );
    }
    let down = next(&mut r.events, |e| matches!(e, DriverEvent::Health(_))).await;
    assert!(
        matches!(&down, DriverEvent::Health(h) if !h.up && h.last_error.as_deref().is_some_and(|e| e.contains("2 pushes failed in a row"))),
        "{down:?}"
    );
    // The backend comes back on that port: the next push goes through and it is up.
    let _back = spawn_backend(dead, sim_config(), r.cancel.clone())
        .await
        .unwrap();
    send(&r, 3, "u-1", "hi").await;
    let sent = next(&mut r.events, |e| {
        matches!(e, DriverEvent::Sent { .. } | DriverEvent::Failed { .. })
    })
    .await;
    assert!(
        matches!(
            sent,
            DriverEvent::Sent {
                attempt: AttemptId(3),
                ..
            }
        ),
        "{sent:?}"
    );
    let up = next(&mut r.events, |e| matches!(e, DriverEvent::Health(_))).await;
    assert!(
        matches!(&up, DriverEvent::Health(h) if h.up && h.sent == 1),
        "{up:?}"
    );
    r.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_times_out_retryably() {
    let mut sim = sim_config();
    sim.faults.slow = Some(Duration::from_secs(5));
    let mut r = rig(sim, |c| c.timeout_ms = 300).await;
    send(&r, 1, "u-1", "hi").await;
    let f = next(&mut r.events, |e| matches!(e, DriverEvent::Failed { .. })).await;
    assert!(
        matches!(&f, DriverEvent::Failed { retryable: true, reason, .. } if reason.contains("no answer within 300 ms")),
        "{f:?}"
    );
    r.cancel.cancel();
}

#[allow(
    clippy::disallowed_methods,
    reason = "the test signs with the real time"
)]
fn unix_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A loopback port free a moment ago (bound, noted, closed).
fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}
