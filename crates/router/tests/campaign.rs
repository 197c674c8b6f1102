//! Whole campaigns on a virtual clock, compared with golden transcripts.

mod common;

use common::*;
use tocsin_core::{Address, AlertId, Bearer, Grade, Role};
use tocsin_router::{AlertState, DeliveryState, Record, Rejection, Verdict};

fn devices() -> Vec<tocsin_router::DeviceInfo> {
    vec![
        device("gsm-1", Bearer::Sms, 10.0),
        device("voice-1", Bearer::Voice, 2.0),
        device("bd-1", Bearer::Beidou, 1.0),
    ]
}

#[allow(clippy::unwrap_used, reason = "a missing alert is a failed test")]
fn footer(sim: &Sim) -> String {
    let mut s = sim.transcript.clone();
    for a in sim.router.alerts() {
        s.push_str(&format!(
            "== {} {:?} finished_at={:?}\n",
            a.alert.id, a.state, a.finished_at
        ));
        let c = &a.counts;
        let states: Vec<String> = c
            .by_state
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k:?}={n}"))
            .collect();
        s.push_str(&format!(
            "   targets={} {} reached={} late={} escalated={} attempts={} rejected={}\n",
            c.targets,
            states.join(" "),
            c.reached,
            c.late,
            c.escalated,
            c.attempts,
            c.rejected_replies
        ));
        for d in sim.router.deliveries(&a.alert.id, None).unwrap() {
            s.push_str(&format!(
                "   {} {} {:?}{} escalated_to={:?}\n",
                d.person,
                d.name,
                d.state,
                if d.late { " late" } else { "" },
                d.escalated_to.map(|p| p.to_string())
            ));
        }
    }
    s
}

#[test]
fn red_alert_campaign() {
    let mut sim = Sim::new(config(devices()), red_script());
    sim.run(secs(3600));
    let a = AlertId::from("red-1");
    let s = sim.router.summary(&a).unwrap();
    assert_eq!(s.state, AlertState::Done);
    let by = |st| s.counts.by_state[&st];
    assert_eq!(by(DeliveryState::Acknowledged), 4, "p1-p3 in time, p4 late");
    assert_eq!(by(DeliveryState::Confirmed), 1, "p5 by door knock");
    assert_eq!(by(DeliveryState::Reached), 1, "the resident needs no ack");
    assert_eq!((s.counts.late, s.counts.escalated), (1, 2));
    let views = sim.router.deliveries(&a, None).unwrap();
    let p4 = views.iter().find(|d| d.person.as_str() == "p4").unwrap();
    assert!(p4.late && p4.state == DeliveryState::Acknowledged);
    let p5 = views.iter().find(|d| d.person.as_str() == "p5").unwrap();
    assert_eq!(p5.escalated_to.as_ref().map(|p| p.as_str()), Some("t1"));
    // Red means three dials on every first-round bearer for whoever does not answer.
    let p5_sms = sim.sends.iter().filter(|s| s.3 == phone(5)).count();
    // (The window runs from p5's first SMS at 0:24, so the reminders at 2:04 and 3:44
    // each find the voice lane free for another call.)
    assert_eq!(p5_sms, 6, "3 SMS + 3 calls to p5");
    insta::assert_snapshot!("red_alert_campaign", footer(&sim));
}

#[test]
fn replies_are_judged_by_the_ack_rule() {
    let contacts = district();
    let script = vec![
        (
            secs(0),
            Script::Alert(plan(
                alert("red-1", Grade::Red, "山洪红色预警"),
                &["p1", "p2", "p3"],
                &contacts,
            )),
        ),
        (
            secs(1),
            Script::Alert(plan(
                alert("yel-1", Grade::Yellow, "暴雨黄色预警"),
                &["p3"],
                &contacts,
            )),
        ),
        reply(20, "gsm-1", phone(99), format!("1 {}", code("red-1", "p1"))),
        reply(25, "gsm-1", phone(1), "1 AAAA".into()),
        reply(30, "gsm-1", phone(2), format!("1 {}", code("red-1", "p1"))),
        reply(35, "gsm-1", phone(3), "１".into()),
        reply(40, "gsm-1", phone(1), "1".into()),
        reply(
            45,
            "bd-1",
            Address::BeidouCard("0412345".into()),
            "我家进水了".into(),
        ),
        reply(50, "gsm-1", phone(3), format!("1 {}", code("yel-1", "p3"))),
        reply(
            55,
            "bd-1",
            Address::BeidouCard("0412345".into()),
            format!("{}", code("yel-1", "p3")),
        ),
        reply(60, "gsm-1", phone(3), "好".into()),
        reply(70, "gsm-1", phone(2), "OK".into()),
        (secs(80), Script::Cancel(AlertId::from("red-1"))),
        reply(90, "gsm-1", phone(2), format!("1 {}", code("red-1", "p2"))),
    ];
    let mut sim = Sim::new(config(devices()), script);
    sim.verbose = false;
    sim.run(secs(600));
    let verdicts: Vec<&Verdict> = sim
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Reply { verdict, .. } => Some(verdict),
            _ => None,
        })
        .collect();
    assert!(matches!(
        verdicts[0],
        Verdict::Rejected {
            rejection: Rejection::UnknownSender,
            ..
        }
    ));
    assert!(matches!(
        verdicts[1],
        Verdict::Rejected {
            rejection: Rejection::WrongCode { .. },
            ..
        }
    ));
    assert!(
        matches!(verdicts[2], Verdict::Rejected { rejection: Rejection::OthersCode { person, .. }, .. } if person.as_str() == "p1")
    );
    assert!(matches!(
        verdicts[3],
        Verdict::Rejected {
            rejection: Rejection::Ambiguous { open: 2 },
            ..
        }
    ));
    assert!(
        matches!(verdicts[4], Verdict::Ack { person, late: false, .. } if person.as_str() == "p1")
    );
    assert!(matches!(
        verdicts[5],
        Verdict::Rejected {
            rejection: Rejection::NotAnAck,
            ..
        }
    ));
    assert!(matches!(verdicts[6], Verdict::Ack { alert, .. } if alert.as_str() == "yel-1"));
    assert!(
        matches!(verdicts[7], Verdict::Duplicate { .. }),
        "the same ack over BeiDou counts once"
    );
    assert!(
        matches!(verdicts[8], Verdict::Ack { alert, .. } if alert.as_str() == "red-1"),
        "one open record left"
    );
    assert!(matches!(verdicts[9], Verdict::Ack { .. }));
    assert!(
        matches!(
            verdicts[10],
            Verdict::Rejected {
                rejection: Rejection::Closed { .. },
                ..
            }
        ),
        "codes of a cancelled alert no longer count"
    );
    let yel = sim.router.summary(&AlertId::from("yel-1")).unwrap();
    assert_eq!(yel.counts.by_state[&DeliveryState::Acknowledged], 1);
    let red = sim.router.summary(&AlertId::from("red-1")).unwrap();
    assert_eq!(
        red.counts.rejected_replies, 5,
        "wrong, others', ambiguous, not-an-ack, closed; unknown sender is nobody's"
    );
    insta::assert_snapshot!("replies_are_judged", footer(&sim));
}

#[test]
fn cancel_closed_code_is_rejected() {
    let contacts = district();
    let script = vec![
        (
            secs(0),
            Script::Alert(plan(
                alert("red-1", Grade::Red, "山洪红色预警"),
                &["p1", "p2"],
                &contacts,
            )),
        ),
        (secs(30), Script::Cancel(AlertId::from("red-1"))),
        reply(40, "gsm-1", phone(2), format!("1 {}", code("red-1", "p2"))),
    ];
    let mut sim = Sim::new(config(devices()), script);
    sim.verbose = false;
    sim.run(secs(600));
    let last = sim.records.iter().rev().find_map(|r| match r {
        Record::Reply { verdict, .. } => Some(verdict.clone()),
        _ => None,
    });
    assert!(
        matches!(
            last,
            Some(Verdict::Rejected {
                rejection: Rejection::Closed { .. },
                ..
            })
        ),
        "{last:?}"
    );
}

#[test]
fn cancel_mid_campaign() {
    let contacts = district();
    let a = "red-1";
    // A slow modem: at 6/min some people are still queued when the operator cancels.
    let devs = vec![device("gsm-1", Bearer::Sms, 6.0)];
    let script = vec![
        (
            secs(0),
            Script::Alert(plan(
                alert(a, Grade::Red, "山洪红色预警"),
                &["p1", "p2", "p3", "p4", "p5"],
                &contacts,
            )),
        ),
        reply(15, "gsm-1", phone(1), format!("1 {}", code(a, "p1"))),
        (secs(25), Script::Cancel(AlertId::from(a))),
    ];
    let mut sim = Sim::new(config(devs), script);
    sim.run(secs(3600));
    let s = sim.router.summary(&AlertId::from(a)).unwrap();
    assert_eq!(s.state, AlertState::Cancelled);
    assert_eq!(s.counts.by_state[&DeliveryState::Cancelled], 4);
    assert_eq!(s.counts.by_state[&DeliveryState::Acknowledged], 1);
    // p1..p3 were attempted (at 0, 10, 20 s) and are told; p4, p5 never were and are not.
    let told: Vec<_> = sim
        .sends
        .iter()
        .filter(|s| s.4.contains("预警解除"))
        .map(|s| s.3.clone())
        .collect();
    assert_eq!(told, vec![phone(1), phone(2), phone(3)]);
    assert!(sim.sends.iter().all(|s| s.3 != phone(4) && s.3 != phone(5)));
    insta::assert_snapshot!("cancel_mid_campaign", footer(&sim));
}

fn v2_code(alert: &str, person: &str) -> tocsin_core::AckCode {
    tocsin_router::version_code(
        &key(),
        &AlertId::from(alert),
        &tocsin_core::PersonId::from(person),
        2,
    )
}

#[test]
fn update_adds_and_removes_people() {
    let contacts = district();
    let a = "or-1";
    let mut raised = alert(a, Grade::Red, "山洪红色预警");
    raised.text = "水位继续上涨，立即转移".into();
    let script = vec![
        (
            secs(0),
            Script::Alert(plan(
                alert(a, Grade::Orange, "山洪橙色预警"),
                &["p1", "p2", "p3"],
                &contacts,
            )),
        ),
        (
            secs(120),
            Script::Update(plan(raised, &["p2", "p3", "p4"], &contacts)),
        ),
        // The upgrade re-notified p2 and p3 with the red text and a fresh code: they
        // answer the red message with it.
        reply(200, "gsm-1", phone(2), format!("1 {}", v2_code(a, "p2"))),
        reply(210, "gsm-1", phone(3), format!("1 {}", v2_code(a, "p3"))),
        reply(220, "gsm-1", phone(4), format!("1 {}", code(a, "p4"))),
    ];
    let mut sim = Sim::new(config(devices()), script);
    sim.run(secs(3600));
    let s = sim.router.summary(&AlertId::from(a)).unwrap();
    assert_eq!(s.alert.grade, Grade::Red);
    assert_eq!(s.state, AlertState::Done);
    assert_eq!(s.counts.by_state[&DeliveryState::Withdrawn], 1);
    assert_eq!(s.counts.by_state[&DeliveryState::Acknowledged], 3);
    assert!(
        sim.sends
            .iter()
            .any(|s| s.3 == phone(1) && s.4.contains("预警范围调整"))
    );
    // The raised grade re-plans the open records with a new window.
    let replanned = sim.records.iter().find_map(|r| match r {
        Record::DeliveryReplanned { person, plan, .. } if person.as_str() == "p2" => {
            Some(plan.clone())
        }
        _ => None,
    });
    // The window starts again with the first attempt of the re-planned text.
    let replanned = replanned.unwrap();
    assert_eq!(
        (replanned.window_ms, replanned.window_from),
        (300_000, None)
    );
    insta::assert_snapshot!("update_adds_and_removes", footer(&sim));
}

#[test]
fn failures_move_to_the_next_bearer_and_escalate_when_exhausted() {
    let contacts = vec![
        contact(
            "p1",
            "张伟",
            Role::VillageHead,
            "大庄镇",
            vec![phone(1), Address::BeidouCard("77".into())],
            Some("t1"),
        ),
        contact(
            "t1",
            "赵敏",
            Role::TownOfficial,
            "大庄镇",
            vec![phone(10)],
            None,
        ),
        contact("p6", "吴刚", Role::GridLead, "大庄镇", vec![], Some("t1")),
    ];
    let script = vec![(
        secs(0),
        Script::Alert(plan(
            alert("or-1", Grade::Orange, "山洪橙色预警"),
            &["p1", "p6"],
            &contacts,
        )),
    )];
    let mut sim = Sim::new(config(devices()), script);
    sim.fates.insert(phone(1), Fate::Fail { retryable: false });
    sim.fates.insert(
        Address::BeidouCard("77".into()),
        Fate::Fail { retryable: true },
    );
    sim.run(secs(600));
    let views = sim.router.deliveries(&AlertId::from("or-1"), None).unwrap();
    // p1: SMS and voice fail for good → BeiDou fallback, retried once → escalated early.
    assert_eq!(views[0].state, DeliveryState::Escalated);
    assert_eq!(
        views[0]
            .attempts
            .iter()
            .filter(|a| a.bearer == Bearer::Beidou)
            .count(),
        2
    );
    // p6 has no address at all: escalated at once, never silently dropped.
    assert_eq!(views[1].state, DeliveryState::Escalated);
    insta::assert_snapshot!("failures_fall_back_then_escalate", footer(&sim));
}

#[test]
fn device_down_moves_sends_to_the_other_device() {
    let contacts: Vec<_> = (1..=6)
        .map(|i| {
            contact(
                &format!("r{i}"),
                "居民",
                Role::Resident,
                "大庄镇",
                vec![phone(100 + i)],
                None,
            )
        })
        .collect();
    let ids: Vec<String> = (1..=6).map(|i| format!("r{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let devs = vec![
        device("gsm-1", Bearer::Sms, 6.0),
        device("gsm-2", Bearer::Sms, 6.0),
    ];
    let script = vec![
        (
            secs(0),
            Script::Alert(plan(
                alert("blue-1", Grade::Blue, "大风蓝色预警"),
                &ids,
                &contacts,
            )),
        ),
        (
            secs(12),
            Script::Health {
                device: "gsm-1".into(),
                up: false,
            },
        ),
    ];
    let mut sim = Sim::new(config(devs), script);
    // gsm-1 takes sends but never gets them out.
    sim.device_fates
        .insert(tocsin_core::DeviceId::from("gsm-1"), Fate::Hang);
    sim.run(secs(3600));
    let s = sim.router.summary(&AlertId::from("blue-1")).unwrap();
    assert_eq!(
        s.counts.by_state[&DeliveryState::Reached],
        6,
        "everyone reached in the end"
    );
    let after: Vec<_> = sim
        .sends
        .iter()
        .filter(|s| s.0 > secs(12))
        .map(|s| s.1.as_str().to_owned())
        .collect();
    assert!(after.iter().all(|d| d == "gsm-2"), "{after:?}");
    insta::assert_snapshot!("device_down_moves_sends", footer(&sim));
}
