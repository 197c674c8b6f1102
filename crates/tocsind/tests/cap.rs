//! End to end through CAP intake: the real `tocsind` binary takes CAP 1.2 messages on
//! `POST /v1/cap` as a provincial release system pushes them — an alert, the same alert
//! again, an update raising the grade, a cancel, and an alert whose area is an admin code
//! only — and the GSM simulator on a real pseudo-terminal sees what the village's leads
//! receive.
//!
//! Waiting is event-driven: the test follows the daemon's `/v1/events` stream and checks
//! what the simulator saw when something happens, with a generous upper bound.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use common::{Api, Node};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tocsin_at_modem::pty::SimHandle;
use tocsin_at_modem::sim::{PhoneScript, ReplyBehaviour};
use tokio_util::sync::CancellationToken;

/// The daemon's clock (and the modem simulator's) runs this much faster: the 15-minute
/// orange deadline would pass in 15 s, the test is done long before.
const SPEED: f64 = 60.0;
const NODE: Node = Node {
    name: "cap",
    speed: SPEED,
};
/// A token the config grants the viewer role (a wall display).
const VIEWER: &str = "cap-viewer-token-0123456789";
/// Who sends the CAP messages.
const SENDER: &str = "huairou.weather.example";
/// The admin code the config maps to 李家台村 (v-2).
const GEOCODE: &str = "110116001202";

/// The flood polygon around 王家沟村 in CAP's `lat,lon` order (the village is lon
/// 116.05–116.1, lat 40.05–40.1); read as `lon,lat` it would lie nowhere on Earth.
const POLYGON: &str = "40.04,116.04 40.04,116.12 40.12,116.12 40.12,116.04 40.04,116.04";

const V1: &str = "+8619900000101";
const LEADS: [(&str, &str); 3] = [
    ("v1", V1),
    ("v2", "+8619900000102"),
    ("v3", "+8619900000103"),
];
const X1: &str = "+8619900000201";

/// Three leads of 王家沟村 under a town official, and the head of 李家台村 (v-2).
fn write_district(dir: &Path) {
    let v2 = json!(
        {"type": "Feature", "properties": {"id": "v-2", "kind": "village", "name": "李家台村", "town": "石门镇"},
         "geometry": {"type": "Polygon", "coordinates": [[[116.2,40.2],[116.25,40.2],[116.25,40.25],[116.2,40.25],[116.2,40.2]]]}}
    );
    let people = format!(
        "\
id,name,role,supervisor,areas,lon,lat,town,phones
t1,钱镇长,town_official,,,116.15,40.15,石门镇,+8619900000002
v1,孙一,village_head,t1,v-1,116.07,40.07,石门镇,{V1}
v2,李二,grid_lead,t1,v-1,116.07,40.07,石门镇,+8619900000102
v3,周三,hazard_warden,t1,v-1,116.07,40.07,石门镇,+8619900000103
x1,陈八,village_head,t1,v-2,116.22,40.22,石门镇,{X1}
"
    );
    common::write_district(dir, &[v2], &people);
}

/// 孙一 answers every warning with its code, 0.3 to 0.7 s after it arrives; nobody else
/// answers.
fn phones() -> Vec<PhoneScript> {
    vec![PhoneScript {
        number: V1.into(),
        behaviour: ReplyBehaviour::Reply {
            min_secs: 20.0,
            max_secs: 40.0,
        },
    }]
}

/// The modem, a viewer token, and the geocode table.
fn write_config(dir: &Path, modem: &Path) -> std::path::PathBuf {
    let rest = format!(
        r#"
[[api.tokens]]
name = "cap-wall"
token = "{VIEWER}"
role = "viewer"

[devices.modem-0]
type = "at_modem"
path = {modem:?}
per_minute = 30

[cap.geocodes]
"{GEOCODE}" = ["v-2"]
"#,
        modem = modem.to_string_lossy(),
    );
    NODE.write_config(dir, &rest)
}

/// One CAP message about the flash flood.
struct Cap<'a> {
    identifier: &'a str,
    sent: &'a str,
    /// `Alert`, `Update` or `Cancel` (which carries no `<info>`).
    msg_type: &'a str,
    /// The `sender,identifier,sent` of the message this one refers to.
    references: Option<String>,
    severity: &'a str,
    headline: &'a str,
    description: &'a str,
    /// The `<area>`'s content after `<areaDesc>`.
    area: String,
}

impl Cap<'_> {
    fn xml(&self) -> String {
        let references = self
            .references
            .as_ref()
            .map(|r| format!("<references>{r}</references>"))
            .unwrap_or_default();
        let info = if self.msg_type == "Cancel" {
            String::new()
        } else {
            format!(
                "<info><language>zh-CN</language><category>Met</category><event>山洪</event>\
                 <responseType>Evacuate</responseType><urgency>Immediate</urgency>\
                 <severity>{}</severity><certainty>Likely</certainty>\
                 <headline>{}</headline><description>{}</description>\
                 <area><areaDesc>石门镇</areaDesc>{}</area></info>",
                self.severity, self.headline, self.description, self.area
            )
        };
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{}</identifier><sender>{SENDER}</sender><sent>{}</sent>
  <status>Actual</status><msgType>{}</msgType><scope>Public</scope>{references}
  {info}
</alert>"#,
            self.identifier, self.sent, self.msg_type
        )
    }

    /// This message's reference, as a later message's `<references>` names it.
    fn reference(&self) -> String {
        format!("{SENDER},{},{}", self.identifier, self.sent)
    }
}

/// `POST /v1/cap` with `token`; the status and the JSON answer.
async fn push(api: &Api, token: &str, xml: &str) -> (u16, Value) {
    let r = common::client()
        .post(format!("{}/v1/cap", api.base))
        .bearer_auth(token)
        .header("content-type", "application/cap+xml")
        .body(xml.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// The texts the simulated network was asked to deliver to `number`, in order.
fn texts_to(sim: &SimHandle, number: &str) -> Vec<String> {
    sim.submits
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.destination == number)
        .map(|m| m.text.clone())
        .collect()
}

fn code(d: &Value) -> String {
    d["code"].as_str().unwrap().to_owned()
}

/// Follows `/v1/events` until `done` holds of what the simulator saw and the alert's
/// deliveries.
async fn wait_for(
    api: &Api,
    sim: &SimHandle,
    id: &str,
    what: &str,
    done: impl Fn(&SimHandle, &std::collections::BTreeMap<String, Value>) -> bool,
) -> std::collections::BTreeMap<String, Value> {
    common::follow(api, Duration::from_secs(20), what, async || {
        let d = api.deliveries(id).await;
        done(sim, &d).then_some(d)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cap_alert_update_and_cancel_reach_the_leads_once_each() {
    let cancel = CancellationToken::new();
    let dir = NODE.tempdir("intake");
    write_district(&dir.join("district"));
    let sim = common::start_modem(&dir, phones(), SPEED, &cancel);
    let config = write_config(&dir, &sim.path);
    let daemon = NODE.start(&config);
    let api = &daemon.api;
    let issuer = NODE.token();

    // An orange (Severe) flash-flood warning for the polygon around 王家沟村.
    let alert = Cap {
        identifier: "11011600000000_20250715063000_0",
        sent: "2025-07-15T06:30:00+08:00",
        msg_type: "Alert",
        references: None,
        severity: "Severe",
        headline: "山洪橙色预警",
        description: "沟道上游强降雨，请做好转移准备",
        area: format!("<polygon>{POLYGON}</polygon>"),
    };
    let (status, v) = push(api, &issuer, &alert.xml()).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["outcome"], "accepted", "{v}");
    assert_eq!(v["reference"], alert.reference(), "{v}");
    assert_eq!(
        v["people"], 3,
        "the three leads of 王家沟村, not 李家台村's head: {v}"
    );
    let id = v["id"].as_str().unwrap().to_owned();
    let s = api.get(&format!("/v1/alerts/{id}")).await;
    assert_eq!(s["alert"]["grade"], "orange", "{s}");
    assert_eq!(
        s["alert"]["area"][0]["coordinates"][0][0],
        json!([116.04, 40.04]),
        "CAP's lat,lon became [lon, lat]: {s}"
    );

    let d = wait_for(api, &sim, &id, "the orange SMS to every lead", |sim, d| {
        LEADS.iter().all(|(p, n)| {
            d.get(*p).is_some_and(|x| {
                texts_to(sim, n)
                    .iter()
                    .any(|t| t.contains("【橙色预警】山洪橙色预警") && t.contains(&code(x)))
            })
        })
    })
    .await;
    let orange: Vec<String> = LEADS.iter().map(|(p, _)| code(&d[*p])).collect();

    // The release system did not hear the 202 and pushes the same message again.
    let (status, again) = push(api, &issuer, &alert.xml()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], id.as_str(), "{again}");
    assert_eq!(again["outcome"], "already_accepted", "{again}");

    // The rain gets worse: Extreme, so red, and every lead is told again with a new code.
    let update = Cap {
        identifier: "11011600000000_20250715070000_0",
        sent: "2025-07-15T07:00:00+08:00",
        msg_type: "Update",
        references: Some(alert.reference()),
        severity: "Extreme",
        headline: "山洪红色预警",
        description: "上游水位继续上涨，请立即转移",
        area: format!("<polygon>{POLYGON}</polygon>"),
    };
    let (status, v) = push(api, &issuer, &update.xml()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["id"], id.as_str(), "{v}");
    assert_eq!(v["outcome"], "updated", "{v}");
    let d = wait_for(
        api,
        &sim,
        &id,
        "the red SMS to every lead, and 孙一's ack of it",
        |sim, d| {
            let red_out = LEADS.iter().all(|(p, n)| {
                d.get(*p).is_some_and(|x| {
                    texts_to(sim, n)
                        .iter()
                        .any(|t| t.contains("【红色预警】山洪红色预警") && t.contains(&code(x)))
                })
            });
            let v1_acked = d.get("v1").is_some_and(|x| {
                x["state"] == "acknowledged"
                    && x["ack_evidence"]
                        .as_str()
                        .is_some_and(|e| e.contains(&code(x)))
            });
            red_out && v1_acked
        },
    )
    .await;
    for ((p, n), old) in LEADS.iter().zip(&orange) {
        assert_ne!(&code(&d[*p]), old, "{p} got a fresh code");
        let texts = texts_to(&sim, n);
        let oranges = texts.iter().filter(|t| t.contains("橙色预警")).count();
        assert_eq!(
            oranges, 1,
            "one orange SMS to {p}, however often it was pushed: {texts:?}"
        );
        assert!(
            !texts
                .iter()
                .any(|t| t.contains("红色预警") && t.contains(old.as_str())),
            "the red SMS to {p} does not carry the orange code: {texts:?}"
        );
    }
    assert!(
        d["v1"]["ack_evidence"]
            .as_str()
            .unwrap()
            .contains("via modem-0"),
        "{}",
        d["v1"]
    );
    let s = api.get(&format!("/v1/alerts/{id}")).await;
    assert_eq!(s["alert"]["grade"], "red", "{s}");
    // The alert now carries both messages' references, as CAP's `<references>` lists them.
    assert_eq!(
        s["alert"]["reference"],
        format!("{} {}", alert.reference(), update.reference()),
        "{s}"
    );
    let alerts = api.get("/v1/alerts").await;
    assert_eq!(
        alerts.as_array().unwrap().len(),
        1,
        "the re-push and the update issued nothing new: {alerts}"
    );

    // A wall display sees the records but no code, not even inside 孙一's ack.
    let wall = Api {
        base: api.base.clone(),
        token: VIEWER.into(),
    };
    let seen = wall.get(&format!("/v1/alerts/{id}/deliveries")).await;
    let text = seen.to_string();
    for c in LEADS
        .iter()
        .map(|(p, _)| code(&d[*p]))
        .chain(orange.iter().cloned())
    {
        assert!(!text.contains(&c), "the viewer sees code {c}: {text}");
    }
    let seen = common::by_person(&seen);
    for (p, _) in LEADS {
        assert!(seen[p].get("code").is_none(), "{p}: {}", seen[p]);
    }
    let masked = seen["v1"]["ack_evidence"].as_str().unwrap();
    assert!(masked.contains("1 ****"), "{masked}");
    // And a viewer cannot push CAP.
    let (status, v) = push(&wall, VIEWER, &update.xml()).await;
    assert_eq!(status, 403, "{v}");

    // All clear: the alert is cancelled and every lead is told.
    let all_clear = Cap {
        identifier: "11011600000000_20250715090000_0",
        sent: "2025-07-15T09:00:00+08:00",
        msg_type: "Cancel",
        references: Some(alert.reference()),
        severity: "",
        headline: "",
        description: "",
        area: String::new(),
    };
    let (status, v) = push(api, &issuer, &all_clear.xml()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["id"], id.as_str(), "{v}");
    assert_eq!(v["outcome"], "cancelled", "{v}");
    wait_for(
        api,
        &sim,
        &id,
        "the all-clear SMS to every lead",
        |sim, _| {
            LEADS.iter().all(|(_, n)| {
                texts_to(sim, n)
                    .iter()
                    .any(|t| t.contains("【预警解除】山洪红色预警 已取消"))
            })
        },
    )
    .await;
    let s = api.get(&format!("/v1/alerts/{id}")).await;
    assert_eq!(s["state"], "cancelled", "{s}");
    let (status, v) = push(api, &issuer, &all_clear.xml()).await;
    assert_eq!((status, &v["outcome"]), (200, &json!("already_cancelled")));

    // A yellow warning given by admin code only, mapped to 李家台村 by the config.
    let by_code = Cap {
        identifier: "11011600000000_20250715100000_0",
        sent: "2025-07-15T10:00:00+08:00",
        msg_type: "Alert",
        references: None,
        severity: "Moderate",
        headline: "山洪黄色预警",
        description: "李家台村沟道水位上涨，请注意防范",
        area: format!("<geocode><valueName>GB/T2260</valueName><value>{GEOCODE}</value></geocode>"),
    };
    let (status, v) = push(api, &issuer, &by_code.xml()).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["people"], 1, "李家台村's head: {v}");
    let yellow = v["id"].as_str().unwrap().to_owned();
    assert_ne!(yellow, id);
    let s = api.get(&format!("/v1/alerts/{yellow}")).await;
    assert_eq!(s["alert"]["grade"], "yellow", "{s}");
    assert_eq!(
        s["alert"]["area"],
        json!([{"type": "Named", "id": "v-2"}]),
        "{s}"
    );
    let d = wait_for(api, &sim, &yellow, "the yellow SMS to 陈八", |sim, d| {
        d.get("x1").is_some_and(|x| {
            texts_to(sim, X1)
                .iter()
                .any(|t| t.contains("【黄色预警】山洪黄色预警") && t.contains(&code(x)))
        })
    })
    .await;
    assert_eq!(d.len(), 1, "{d:?}");
    // An admin code the table does not know is refused, naming it; nothing is issued.
    let unknown = Cap {
        identifier: "11011600000000_20250715110000_0",
        sent: "2025-07-15T11:00:00+08:00",
        area: "<geocode><valueName>GB/T2260</valueName><value>110116999999</value></geocode>"
            .into(),
        ..by_code
    };
    let (status, v) = push(api, &issuer, &unknown.xml()).await;
    assert_eq!(status, 422, "{v}");
    assert!(v.to_string().contains("110116999999"), "{v}");
    assert_eq!(api.get("/v1/alerts").await.as_array().unwrap().len(), 2);
    // 陈八 never got the flood warning for 王家沟村.
    assert!(
        texts_to(&sim, X1).iter().all(|t| t.contains("黄色预警")),
        "{:?}",
        texts_to(&sim, X1)
    );

    daemon.stop();
    cancel.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
