//! Voice call-out end to end: the real `tocsind` binary drives one simulated Quectel modem
//! with voice — AT commands on one pseudo-terminal, the call's PCM on a second (the audio
//! port) — run in this test process, with the real HTTP API and the real SQLite log.
//!
//! A red alert for one village: an SMS and a call go to each of four leads in parallel.
//! v1 answers the call and presses 1 (acked by voice). v2 lets the call ring and answers
//! the SMS with the code meanwhile (acked by SMS; the router cancels the call and the
//! driver hangs it up). v3 never answers the phone nor the SMS, and v4's line is busy on
//! every dial and v4 never replies: each gets three dials, retried, then is escalated to
//! the town official t1 at the 5-minute deadline.
//!
//! The simulator runs in real time (it measures the call audio against a real playout
//! clock); the daemon's clock runs [`SPEED`] times faster, so the 5-minute red window and
//! the 30-second retry back-off shrink while the modem's ring timeout and key wait, set in
//! real seconds, stay short. Waiting is event-driven: the test follows `/v1/events`.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use common::{Api, Events, Node};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tocsin_at_modem::pty::SimHandle;
use tocsin_at_modem::quirks::Family;
use tocsin_at_modem::sim::{
    CallBehaviour, CallScript, PhoneScript, ReplyBehaviour, SimCall, SimConfig,
};
use tokio_util::sync::CancellationToken;

/// The daemon's clock runs this much faster than real time: the 300 s red window passes
/// in 25 s, the 30 s retry back-off in 2.5 s.
const SPEED: f64 = 12.0;
const NODE: Node = Node {
    name: "voice",
    speed: SPEED,
};
/// Generous upper bound for the whole campaign (it takes about 26 s).
const PATIENCE: Duration = Duration::from_secs(90);

const V1: &str = "+8619900000101";
const V2: &str = "+8619900000102";
const V3: &str = "+8619900000103";
const V4: &str = "+8619900000104";
const T1: &str = "+8619900000002";

/// One town, one village with four leads, the town official above them.
fn write_district(dir: &Path) {
    let people = format!(
        "\
id,name,role,supervisor,areas,lon,lat,town,phones
d1,赵区长,district_official,,,116.5,40.5,区政府,+8619900000001
t1,钱镇长,town_official,d1,,116.15,40.15,石门镇,{T1}
v1,孙一,village_head,t1,v-1,116.07,40.07,石门镇,{V1}
v2,李二,grid_lead,t1,v-1,116.07,40.07,石门镇,{V2}
v3,周三,hazard_warden,t1,v-1,116.07,40.07,石门镇,{V3}
v4,吴四,grid_lead,t1,v-1,116.07,40.07,石门镇,{V4}
"
    );
    common::write_district(dir, &[], &people);
}

/// The modem and the people behind it.
///
/// The modem sends SMS only between calls, and places the calls one at a time in the
/// order the router handed them over (v1 to v4); the warning SMS go just before or just
/// after v1's call (about 1.2 s). So v2's call is dialled 1.5 to 2 s after the alert and
/// rings until the driver's 8 s ring timeout, and v2's reply, 4 to 5 s after v2's SMS,
/// lands while it rings, with seconds to spare either side.
fn start_sim(dir: &Path, cancel: CancellationToken) -> SimHandle {
    let call = |number: &str, behaviour: CallBehaviour| CallScript {
        number: number.into(),
        behaviour,
    };
    let cfg = SimConfig {
        per_message_latency_ms: 100,
        status_report_delay_ms: 200,
        // Nobody answers an SMS except v2; nobody answers a call except v1.
        default_script: ReplyBehaviour::Never,
        phones: vec![PhoneScript {
            number: V2.into(),
            behaviour: ReplyBehaviour::Reply {
                min_secs: 4.0,
                max_secs: 5.0,
            },
        }],
        family: Family::Quectel,
        calls: vec![
            call(
                V1,
                CallBehaviour::Press {
                    answer_after_secs: 0.5,
                    digit: '1',
                    press_after_secs: 0.6,
                },
            ),
            // Would answer only after the driver has given up ringing.
            call(
                V2,
                CallBehaviour::Answer {
                    answer_after_secs: 30.0,
                },
            ),
            call(V3, CallBehaviour::Never),
            call(V4, CallBehaviour::Busy),
        ],
        default_call: CallBehaviour::Never,
        // An unanswered call is given up by the network after 2.5 s (before the
        // driver's own ring timeout), so each of v3's dials is short.
        network_ring_secs: 2.5,
        ..SimConfig::default()
    };
    // Real time: the simulator checks the call audio against a real playout clock.
    tocsin_at_modem::pty::spawn_voice_sim(
        dir.join("modem0"),
        dir.join("modem0-audio"),
        cfg,
        7,
        1.0,
        cancel,
    )
    .expect("GSM simulator with voice on two ptys")
}

fn write_config(dir: &Path, sim: &SimHandle) -> PathBuf {
    let rest = format!(
        r#"# No synthesizer: calls play the attention tone (about 1.1 s), no espeak-ng needed.
[speech]
synthesizer = "none"

# Budgets high enough that the router hands every send over at once; the modem itself
# serialises them (one call at a time, SMS between calls).
[devices.modem-0]
type = "at_modem"
path = {path:?}
per_minute = 600
voice = true
family = "quectel"
audio_path = {audio:?}
voice_per_minute = 600
# Real seconds, whatever the clock speed; longer than the simulated network's 2.5 s of
# ringing and its BUSY after 2 s, so those are what ends v3's and v4's calls, while v2's
# call rings long enough for v2's SMS reply to come in meanwhile.
ring_timeout_secs = 8
digit_wait_secs = 1
"#,
        path = sim.path.to_string_lossy(),
        audio = sim.audio_path.as_ref().unwrap().to_string_lossy(),
    );
    NODE.write_config(dir, &rest)
}

/// The daemon's `/v1/events` stream, followed from before the alert is issued so that
/// every record of the campaign is seen.
struct Watch {
    api: Api,
    id: String,
    events: Events,
}

impl Watch {
    async fn subscribe(api: &Api) -> Watch {
        Watch {
            api: api.clone(),
            id: String::new(),
            events: Events::subscribe(api).await,
        }
    }

    /// Reads the stream until the records it carried satisfy `done`.
    async fn records_until(&mut self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        self.events.records_until(PATIENCE, what, done).await
    }

    /// Waits for the daemon to report changes until `done(summary, deliveries)` holds.
    async fn until(
        &mut self,
        what: &str,
        done: impl Fn(&Value, &BTreeMap<String, Value>) -> bool,
    ) -> (Value, BTreeMap<String, Value>) {
        let last = std::sync::Mutex::new(Value::Null);
        let (api, id) = (&self.api, &self.id);
        let found = self
            .events
            .within(PATIENCE, async || {
                // Deliveries first, then the summary: the summary is then at least as
                // new as the deliveries the predicate judged (it may not lag behind them).
                let d = api.deliveries(id).await;
                let s = api.get(&format!("/v1/alerts/{id}")).await;
                if done(&s, &d) {
                    return Some((s, d));
                }
                *last.lock().unwrap() = json!({"summary": s, "deliveries": d});
                None
            })
            .await;
        match found {
            Ok(r) => r,
            Err(_) => panic!(
                "timed out waiting for {what}; last seen: {:#}",
                last.lock().unwrap()
            ),
        }
    }
}

async fn issue(api: &Api) -> String {
    let v = api.issue(&common::red_flood()).await;
    assert_eq!(v["people"], 4, "the four leads of 王家沟村: {v}");
    v["id"].as_str().unwrap().to_owned()
}

/// The attempts on `bearer` addressed to `number` (a record's attempts also list its
/// door-knock sends to the supervisor).
fn sends_to<'a>(d: &'a Value, bearer: &str, number: &str) -> Vec<&'a Value> {
    d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["bearer"] == bearer && a["to"]["value"] == number)
        .collect()
}

fn outcome(a: &Value) -> &str {
    a["outcome"].as_str().unwrap_or("")
}

fn calls_to(sim: &SimHandle, number: &str) -> Vec<SimCall> {
    sim.calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.number == number)
        .cloned()
        .collect()
}

/// The records of `kind` about `attempt`.
fn about<'a>(records: &'a [Value], kind: &str, attempt: &Value) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["kind"] == kind && r["data"]["attempt"] == *attempt)
        .collect()
}

/// The driver's final word on `attempt` (delivered or failed), as recorded.
fn ends<'a>(records: &'a [Value], attempt: &Value) -> Vec<&'a Value> {
    about(records, "attempt_outcome", attempt)
        .into_iter()
        .filter(|r| {
            matches!(
                r["data"]["outcome"]["kind"].as_str(),
                Some("delivered" | "failed")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_alert_by_voice_key_1_sms_while_ringing_no_answer_and_busy_escalate() {
    let dir = NODE.tempdir("red");
    write_district(&dir.join("district"));
    let cancel = CancellationToken::new();
    let sim = start_sim(&dir, cancel.clone());
    let config = write_config(&dir, &sim);
    let daemon = NODE.start_with(&config, |cmd| {
        // VOICE_TEST_LOG=tocsin_at_modem=debug shows each call's end when debugging.
        cmd.env(
            "TOCSIN_LOG",
            std::env::var("VOICE_TEST_LOG").unwrap_or("warn".into()),
        );
    });
    let mut watch = Watch::subscribe(&daemon.api).await;
    watch.id = issue(&daemon.api).await;

    // Done when v1 and v2 are acknowledged (and v2's cancelled call is hung up), and v3
    // and v4 are escalated with their three dials over.
    let (s, d) = watch
        .until("the acks and the escalations", |_, d| {
            d["v1"]["state"] == "acknowledged"
                && d["v2"]["state"] == "acknowledged"
                && calls_to(&sim, V2).len() == 1
                && [("v3", V3), ("v4", V4)].iter().all(|(p, n)| {
                    let calls = sends_to(&d[*p], "voice", n);
                    d[*p]["escalated_to"] == "t1"
                        && calls.len() == 3
                        && calls.iter().all(|a| outcome(a).starts_with("failed"))
                })
        })
        .await;
    // Every attempt of the four leads has its driver's final word in the stream, and both
    // escalations are there.
    let attempt_ids: Vec<Value> = [("v1", V1), ("v2", V2), ("v3", V3), ("v4", V4)]
        .iter()
        .flat_map(|(p, n)| sends_to(&d[*p], "voice", n))
        .map(|a| a["attempt"].clone())
        .collect();
    let records = watch
        .records_until("the calls and escalations", |records| {
            attempt_ids.iter().all(|a| !ends(records, a).is_empty())
                && ["v3", "v4"].iter().all(|p| {
                    records
                        .iter()
                        .any(|r| r["kind"] == "escalated" && r["data"]["person"] == *p)
                })
        })
        .await;
    let reply_from = |n: &str| -> Vec<&Value> {
        records
            .iter()
            .filter(|r| r["kind"] == "reply" && r["data"]["from"]["value"] == n)
            .collect()
    };

    // v1: the ack is the key 1 in v1's own call, over the sender-authenticated voice
    // device. The delivery view names the device, the bare "1" and the driver's evidence
    // (the DTMF notice and its call); the reply record keeps it too, and the call's attempt.
    let v1 = &d["v1"];
    assert_eq!(v1["state"], "acknowledged", "{v1}");
    assert_eq!(v1["late"], false);
    let v1_via = v1["ack_evidence"].as_str().unwrap_or("");
    assert!(
        v1_via.starts_with(&format!(
            "{V1} via modem-0-voice: 1 — DTMF 1 (+QTONEDET: 49) in call-"
        )),
        "{v1}"
    );
    let v1_calls = sends_to(v1, "voice", V1);
    assert_eq!(v1_calls.len(), 1, "{v1}");
    assert!(outcome(v1_calls[0]).starts_with("delivered"), "{v1}");
    let v1_reply = reply_from(V1);
    assert_eq!(v1_reply.len(), 1, "{v1_reply:?}");
    assert_eq!(v1_reply[0]["data"]["device"], "modem-0-voice");
    assert_eq!(v1_reply[0]["data"]["text"], "1");
    assert_eq!(v1_reply[0]["data"]["verdict"]["verdict"], "ack");
    assert_eq!(
        v1_reply[0]["data"]["in_reply_to"], v1_calls[0]["attempt"],
        "the key answers the call's own attempt: {v1_reply:?}"
    );
    let evidence = v1_reply[0]["data"]["evidence"].to_string();
    assert!(
        evidence.contains("DTMF 1 (+QTONEDET: 49) in call-"),
        "{evidence}"
    );
    let heard = calls_to(&sim, V1);
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert!(heard[0].answered_at.is_some());
    assert_eq!(heard[0].digits, "1");
    assert_eq!(heard[0].ended_by, "gateway hung up");
    assert!(
        heard[0].audio.frames > 0 && !heard[0].audio.is_silence(),
        "v1 heard the prompt: {:?}",
        heard[0].audio
    );

    // v2: acked by SMS while the call rang; the router cancelled the call and the driver
    // hung it up unanswered.
    let v2 = &d["v2"];
    assert_eq!(v2["state"], "acknowledged", "{v2}");
    assert_eq!(
        v2["ack_evidence"],
        format!("{V2} via modem-0: 1 {}", v2["code"].as_str().unwrap()),
        "{v2}"
    );
    let v2_calls = sends_to(v2, "voice", V2);
    assert_eq!(v2_calls.len(), 1, "one call, not retried: {v2}");
    assert_eq!(outcome(v2_calls[0]), "cancelled: acknowledged", "{v2}");
    let cancelled = about(&records, "attempt_cancelled", &v2_calls[0]["attempt"]);
    assert_eq!(cancelled.len(), 1, "{cancelled:?}");
    assert_eq!(cancelled[0]["data"]["device"], "modem-0-voice");
    assert_eq!(cancelled[0]["data"]["reason"], "acknowledged");
    let v2_reply = reply_from(V2);
    assert_eq!(v2_reply.len(), 1, "{v2_reply:?}");
    assert_eq!(v2_reply[0]["data"]["device"], "modem-0");
    assert_eq!(v2_reply[0]["data"]["verdict"]["verdict"], "ack");
    assert!(
        v2_reply[0]["at"].as_i64() > v2_calls[0]["started_at"].as_i64()
            && v2_reply[0]["at"].as_i64() <= cancelled[0]["at"].as_i64(),
        "the reply came while the call was on"
    );
    // The driver's own outcome follows the cancel: hung up, failed for good.
    let ended = ends(&records, &v2_calls[0]["attempt"]);
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert!(ended[0]["at"].as_i64() >= cancelled[0]["at"].as_i64());
    assert_eq!(ended[0]["data"]["outcome"]["kind"], "failed", "{ended:?}");
    assert_eq!(ended[0]["data"]["outcome"]["retryable"], false, "{ended:?}");
    let reason = ended[0]["data"]["outcome"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("cancelled;") && reason.contains("cancelled by the gateway"),
        "{reason}"
    );
    // The phone was ringing (the network's alerting had come) and nobody had answered.
    assert!(
        reason.contains("ringing +") && reason.contains("answered -"),
        "{reason}"
    );
    let rang = calls_to(&sim, V2);
    assert_eq!(rang[0].answered_at, None);
    assert_eq!(rang[0].ended_by, "gateway hung up");
    assert!(
        rang[0].ended_at.since(rang[0].dialled_at) > Duration::from_millis(500),
        "hung up after the network's alerting: {rang:?}"
    );
    assert_eq!(
        rang[0].audio.frames, 0,
        "nothing played into an unanswered call"
    );

    // v3 (never answers) and v4 (busy): three dials each, every one failed and retried,
    // then the escalation to t1 at the 5-minute deadline, after the third dial.
    for (p, number, name, failure, ended_by) in [
        (
            "v3",
            V3,
            "周三",
            "failed: no answer (NO ANSWER)",
            "network: no answer",
        ),
        ("v4", V4, "吴四", "failed: busy (BUSY)", "busy"),
    ] {
        let dp = &d[p];
        assert_eq!(dp["state"], "escalated", "{dp}");
        assert_eq!(dp["escalated_to"], "t1", "{dp}");
        assert_eq!(dp["ack_evidence"], Value::Null, "{dp}");
        let calls = sends_to(dp, "voice", number);
        assert_eq!(calls.len(), 3, "three dials: {dp}");
        for a in &calls {
            assert!(outcome(a).starts_with(failure), "{p}: {a}");
        }
        let last_dial_over = calls
            .iter()
            .flat_map(|a| ends(&records, &a["attempt"]))
            .map(|r| r["at"].as_i64().unwrap())
            .max()
            .unwrap();
        let escalated: Vec<&Value> = records
            .iter()
            .filter(|r| r["kind"] == "escalated" && r["data"]["person"] == p)
            .collect();
        assert_eq!(escalated.len(), 1, "{escalated:?}");
        assert!(
            escalated[0]["at"].as_i64().unwrap() > last_dial_over,
            "{p} is escalated after the third dial"
        );
        let task = &escalated[0]["data"]["task"];
        assert_eq!(task["assignee"], "t1");
        let text = task["text"].as_str().unwrap();
        assert!(text.contains("叫应升级") && text.contains(name), "{text}");
        let rang = calls_to(&sim, number);
        assert_eq!(rang.len(), 3, "{rang:?}");
        assert!(
            rang.iter()
                .all(|c| c.answered_at.is_none() && c.ended_by == ended_by && c.audio.frames == 0),
            "{rang:?}"
        );
    }

    assert_eq!(s["counts"]["by_state"]["acknowledged"], 2, "{s}");
    assert_eq!(s["counts"]["by_state"]["escalated"], 2, "{s}");
    assert_eq!(s["counts"]["escalated"], 2, "{s}");
    daemon.stop();
    cancel.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
