//! Campaign semantics on a virtual clock: upgrades that re-notify people who already
//! acknowledged, drills kept behind live traffic, orange's next bearer on silence, area
//! updates told to door-knock assignees, honest rejected-reply counts and the guessing
//! defence, and in-time counts. Each scenario also survives a restore from its log.

#![allow(clippy::unwrap_used, reason = "test: a failed unwrap is a failed test")]

mod common;

use common::*;
use tocsin_core::{AckCode, Address, AlertId, Bearer, Grade, PersonId};
use tocsin_router::{DeliveryState, Purpose, Record, Router, Verdict, version_code};

fn devices() -> Vec<tocsin_router::DeviceInfo> {
    vec![
        device("gsm-1", Bearer::Sms, 10.0),
        device("voice-1", Bearer::Voice, 2.0),
        device("bd-1", Bearer::Beidou, 1.0),
    ]
}

fn v_code(alert: &str, person: &str, version: u32) -> AckCode {
    version_code(
        &key(),
        &AlertId::from(alert),
        &PersonId::from(person),
        version,
    )
}

fn state_of(sim: &Sim, alert: &str, person: &str) -> DeliveryState {
    sim.router
        .deliveries(&AlertId::from(alert), None)
        .unwrap()
        .into_iter()
        .find(|d| d.person.as_str() == person)
        .unwrap()
        .state
}

/// Verdicts of the replies from `from`, in order.
fn verdicts_from(sim: &Sim, from: &Address) -> Vec<Verdict> {
    sim.records
        .iter()
        .filter_map(|r| match r {
            Record::Reply {
                from: f, verdict, ..
            } if f == from => Some(verdict.clone()),
            _ => None,
        })
        .collect()
}

/// Restoring the whole log gives every record the same state, code, ack and escalation
/// (attempts still out are re-issued by the restore, so attempt lists may differ).
fn assert_restores(sim: &Sim) {
    let restored = Router::restore(config(devices()), sim.records.clone(), sim.now).unwrap();
    for s in sim.router.alerts() {
        let a = &s.alert.id;
        let key = |r: &Router| {
            let mut v: Vec<_> = r
                .deliveries(a, None)
                .unwrap()
                .into_iter()
                .map(|d| {
                    (
                        d.person,
                        d.state,
                        d.code,
                        d.acked_at,
                        d.late,
                        d.escalated_to,
                    )
                })
                .collect();
            v.sort_by(|x, y| x.0.cmp(&y.0));
            v
        };
        assert_eq!(key(&restored), key(&sim.router), "{a}");
        let counts = |r: &Router| {
            let c = r.summary(a).unwrap().counts;
            (
                c.by_state,
                c.late,
                c.escalated,
                c.rejected_replies,
                c.reached,
            )
        };
        assert_eq!(counts(&restored), counts(&sim.router), "{a}");
    }
}

#[test]
fn an_upgrade_re_notifies_people_who_acked_with_a_fresh_code() {
    let a = "up-1";
    let orange = plan(
        alert(a, Grade::Orange, "山洪橙色预警"),
        &["p1", "p2"],
        &district(),
    );
    let mut red_alert = alert(a, Grade::Red, "山洪红色预警");
    red_alert.text = "立即转移".into();
    let red = plan(red_alert.clone(), &["p1", "p2"], &district());
    // Back to orange with the same text: nothing material for people who acked the red.
    let mut lower_alert = red_alert.clone();
    lower_alert.grade = Grade::Orange;
    lower_alert.headline = "山洪橙色预警（降级）".into();
    let lower = plan(lower_alert, &["p1", "p2"], &district());
    let script = vec![
        (secs(0), Script::Alert(orange)),
        reply(60, "gsm-1", phone(1), format!("1 {}", code(a, "p1"))),
        (secs(120), Script::Update(red)),
        // p1 answers the orange message again: their ack of it is already on record.
        reply(150, "gsm-1", phone(1), format!("1 {}", code(a, "p1"))),
        // p2 answers the orange message only now: it counts for the orange version.
        reply(160, "gsm-1", phone(2), format!("1 {}", code(a, "p2"))),
        reply(200, "gsm-1", phone(1), format!("1 {}", v_code(a, "p1", 2))),
        (secs(400), Script::Update(lower)),
    ];
    let mut sim = Sim::new(config(devices()), script);
    sim.run(secs(130));

    // p1 acked the orange; the red re-opened their record as version 2.
    let replanned: Vec<_> = sim
        .records
        .iter()
        .filter_map(|r| match r {
            Record::DeliveryReplanned { person, plan, .. } => {
                Some((person.to_string(), plan.version, plan.code, plan.grade))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        replanned,
        vec![
            ("p1".into(), 2, v_code(a, "p1", 2), Grade::Red),
            ("p2".into(), 2, v_code(a, "p2", 2), Grade::Red),
        ]
    );
    assert_ne!(v_code(a, "p1", 2), code(a, "p1"));
    assert_ne!(state_of(&sim, a, "p1"), DeliveryState::Acknowledged);
    // The new message with the new code went to p1, and its attempts say version 2.
    let new_sends: Vec<_> = sim
        .sends
        .iter()
        .filter(|s| s.0 >= secs(120) && s.3 == phone(1))
        .collect();
    assert!(!new_sends.is_empty());
    for s in &new_sends {
        assert!(s.4.contains("立即转移"), "{}", s.4);
        assert!(s.4.contains(v_code(a, "p1", 2).as_str()), "{}", s.4);
    }
    let versions: Vec<u32> = sim
        .records
        .iter()
        .filter_map(|r| match r {
            Record::AttemptStarted {
                person,
                version,
                purpose: Purpose::Alert,
                at,
                ..
            } if person.as_str() == "p1" => Some(if *at >= secs(120) {
                *version
            } else {
                *version + 100
            }),
            _ => None,
        })
        .collect();
    assert!(versions.contains(&101), "the orange went out as version 1");
    assert!(
        versions.iter().all(|v| *v == 101 || *v == 2),
        "{versions:?}"
    );

    sim.run(secs(300));
    let p1 = verdicts_from(&sim, &phone(1));
    assert!(
        matches!(
            &p1[0],
            Verdict::Ack {
                version: 1,
                late: false,
                ..
            }
        ),
        "{p1:?}"
    );
    assert!(matches!(&p1[1], Verdict::Duplicate { .. }), "{p1:?}");
    assert!(matches!(&p1[2], Verdict::Ack { version: 2, .. }), "{p1:?}");
    let p2 = verdicts_from(&sim, &phone(2));
    assert!(matches!(&p2[0], Verdict::Ack { version: 1, .. }), "{p2:?}");
    // The orange ack did not answer the red: p2 is still open, p1 acked version 2.
    assert_eq!(state_of(&sim, a, "p1"), DeliveryState::Acknowledged);
    assert!(!state_of(&sim, a, "p2").is_final());
    let s = sim.router.summary(&AlertId::from(a)).unwrap();
    assert_eq!(s.counts.by_state[&DeliveryState::Acknowledged], 1);
    assert_restores(&sim);

    // The lower grade re-opens nobody who acked.
    sim.run(secs(410));
    let after_lower = sim
        .records
        .iter()
        .filter(|r| {
            matches!(r, Record::DeliveryReplanned { person, at, .. }
                if person.as_str() == "p1" && *at >= secs(400))
        })
        .count();
    assert_eq!(after_lower, 0);
    assert_eq!(state_of(&sim, a, "p1"), DeliveryState::Acknowledged);
    assert_restores(&sim);
}

#[test]
fn a_new_headline_alone_does_not_re_open_acked_records_but_re_notify_does() {
    let a = "up-2";
    let first = plan(
        alert(a, Grade::Yellow, "暴雨黄色预警"),
        &["p1"],
        &district(),
    );
    let renamed = plan(
        alert(a, Grade::Yellow, "暴雨黄色预警（更正）"),
        &["p1"],
        &district(),
    );
    let mut sim = Sim::new(
        config(devices()),
        vec![
            (secs(0), Script::Alert(first)),
            reply(30, "gsm-1", phone(1), format!("1 {}", code(a, "p1"))),
            (secs(60), Script::Update(renamed.clone())),
        ],
    );
    sim.run(secs(100));
    assert_eq!(state_of(&sim, a, "p1"), DeliveryState::Acknowledged);
    // The operator marks an update re-notify: the acked record opens again.
    sim.router
        .handle_update_with(secs(100), renamed, true)
        .unwrap();
    while let Some(o) = sim.router.poll_output() {
        if let tocsin_router::Output::Record(r) = o {
            sim.records.push(r);
        }
    }
    assert_eq!(state_of(&sim, a, "p1"), DeliveryState::Attempting);
    let views = sim.router.deliveries(&AlertId::from(a), None).unwrap();
    assert_eq!(views[0].code, v_code(a, "p1", 2));
    assert_restores(&sim);
}

#[test]
fn a_re_opened_record_escalates_from_the_persons_own_supervisor_with_a_new_task_code() {
    let a = "up-3";
    // p5 never answers the orange; t1 confirms the door knock; then the red comes.
    let orange = plan(
        alert(a, Grade::Orange, "山洪橙色预警"),
        &["p5"],
        &district(),
    );
    let red = plan(alert(a, Grade::Red, "山洪红色预警"), &["p5"], &district());
    let mut sim = Sim::new(
        config(vec![device("gsm-1", Bearer::Sms, 10.0)]),
        vec![(secs(0), Script::Alert(orange))],
    );
    sim.run(secs(2000));
    let escalated_at = sim
        .records
        .iter()
        .find_map(|r| match r {
            Record::Escalated { at, task, .. } if task.level == 0 => Some(*at),
            _ => None,
        })
        .unwrap();
    let mut sim = Sim::new(
        config(vec![device("gsm-1", Bearer::Sms, 10.0)]),
        vec![
            (
                secs(0),
                Script::Alert(plan(
                    alert(a, Grade::Orange, "山洪橙色预警"),
                    &["p5"],
                    &district(),
                )),
            ),
            reply(
                escalated_at.0 / 1000 + 30,
                "gsm-1",
                phone(10),
                format!("1 {}", task_code(a, "p5")),
            ),
            (secs(escalated_at.0 / 1000 + 60), Script::Update(red)),
            // t1 repeats the orange visit's confirmation: it does not confirm the red.
            reply(
                escalated_at.0 / 1000 + 90,
                "gsm-1",
                phone(10),
                format!("1 {}", task_code(a, "p5")),
            ),
        ],
    );
    sim.run(secs(escalated_at.0 / 1000 + 1000));
    let tasks: Vec<_> = sim
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Escalated { task, .. } => {
                Some((task.assignee.to_string(), task.level, task.code))
            }
            _ => None,
        })
        .collect();
    let red_code = tocsin_router::door_code_of(&key(), &AlertId::from(a), &PersonId::from("p5"), 2);
    assert_eq!(tasks[0], ("t1".into(), 0, task_code(a, "p5")));
    assert_eq!(tasks[1], ("t1".into(), 0, red_code), "{tasks:?}");
    assert_ne!(red_code, task_code(a, "p5"));
    let t1 = verdicts_from(&sim, &phone(10));
    assert!(
        matches!(&t1[0], Verdict::DoorKnockConfirmed { version: 1, .. }),
        "{t1:?}"
    );
    assert!(matches!(&t1[1], Verdict::Duplicate { .. }), "{t1:?}");
    assert_eq!(state_of(&sim, a, "p5"), DeliveryState::Escalated);
    assert_restores(&sim);
}

fn residents(n: u32) -> (Vec<String>, Vec<tocsin_router::Contact>) {
    let ids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    let contacts = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            contact(
                id,
                "居民",
                tocsin_core::Role::Resident,
                "大庄镇",
                vec![phone(1000 + i as u32)],
                None,
            )
        })
        .collect();
    (ids, contacts)
}

fn drill(id: &str, grade: Grade, headline: &str) -> tocsin_core::Alert {
    let mut a = alert(id, grade, headline);
    a.exercise = true;
    a
}

#[test]
fn a_live_blue_goes_before_a_queued_red_drill() {
    let (ids, mut contacts) = residents(20);
    contacts.extend(district());
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let script = vec![
        (
            secs(0),
            Script::Alert(plan(
                drill("drill-1", Grade::Red, "山洪红色预警演练"),
                &ids,
                &contacts,
            )),
        ),
        (
            secs(35),
            Script::Alert(plan(
                alert("live-1", Grade::Blue, "大风蓝色预警"),
                &["p1", "p2"],
                &contacts,
            )),
        ),
    ];
    let mut sim = Sim::new(config(vec![device("gsm-1", Bearer::Sms, 6.0)]), script);
    sim.verbose = false;
    sim.run(secs(80));
    let after: Vec<_> = sim
        .sends
        .iter()
        .filter(|s| s.0 >= secs(35))
        .map(|s| (s.0, s.3.clone(), s.4.starts_with("【演练】")))
        .collect();
    // One modem at 6/min: the slots at 40 s and 50 s carry the live blue warnings, then the
    // drill resumes where it was.
    assert_eq!(after[0], (secs(40), phone(1), false));
    assert_eq!(after[1], (secs(50), phone(2), false));
    assert!(after[2].2, "{after:?}");
    assert_eq!(after[2].1, phone(1004), "the drill resumes in FIFO order");
    assert_restores(&sim);
}

#[test]
fn a_bare_ack_goes_to_the_live_alert_before_a_higher_grade_drill() {
    let card = Address::BeidouCard("0412345".into());
    let script = vec![
        (
            secs(0),
            Script::Alert(plan(
                drill("drill-2", Grade::Red, "山洪红色预警演练"),
                &["p3"],
                &district(),
            )),
        ),
        (
            secs(10),
            Script::Alert(plan(
                alert("live-2", Grade::Orange, "山洪橙色预警"),
                &["p3"],
                &district(),
            )),
        ),
        // The card vouches for the sender: a bare 1 counts for one open record.
        reply(60, "bd-1", card.clone(), "1".into()),
        reply(70, "bd-1", card.clone(), "收到".into()),
    ];
    let mut sim = Sim::new(config(devices()), script);
    sim.run(secs(80));
    let v = verdicts_from(&sim, &card);
    assert!(
        matches!(&v[0], Verdict::Ack { alert, .. } if alert.as_str() == "live-2"),
        "{v:?}"
    );
    assert!(
        matches!(&v[1], Verdict::Ack { alert, .. } if alert.as_str() == "drill-2"),
        "{v:?}"
    );
    assert_eq!(state_of(&sim, "live-2", "p3"), DeliveryState::Acknowledged);
    assert_restores(&sim);
}

#[test]
fn orange_silence_tries_the_next_bearer_then_escalates() {
    let a = "or-s";
    let script = vec![(
        secs(0),
        Script::Alert(plan(
            alert(a, Grade::Orange, "山洪橙色预警"),
            &["p1", "p3"],
            &district(),
        )),
    )];
    let mut sim = Sim::new(config(devices()), script);
    sim.verbose = false;
    sim.run(secs(1000));
    // p3 has a BeiDou card: at their deadline the card is tried, with 5 more minutes.
    let next: Vec<_> = sim
        .records
        .iter()
        .filter_map(|r| match r {
            Record::NextBearer {
                at,
                person,
                route,
                wait_ms,
                ..
            } => Some((*at, person.to_string(), route.bearer, *wait_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(next.len(), 1, "{next:?}");
    let (at, who, bearer, wait) = next[0].clone();
    assert_eq!(
        (who.as_str(), bearer, wait),
        ("p3", Bearer::Beidou, 300_000)
    );
    let first_p3 = sim.sends.iter().find(|s| s.3 == phone(3)).unwrap().0;
    assert_eq!(at, first_p3 + std::time::Duration::from_secs(900));
    assert!(
        sim.sends
            .iter()
            .any(|s| s.3 == Address::BeidouCard("0412345".into()) && s.0 >= at)
    );
    // p1 has no further bearer: escalated at their deadline. p3 is not, yet.
    assert_eq!(state_of(&sim, a, "p1"), DeliveryState::Escalated);
    assert_ne!(state_of(&sim, a, "p3"), DeliveryState::Escalated);
    // A restart in the wait keeps its end.
    let restored = Router::restore(config(devices()), sim.records.clone(), sim.now).unwrap();
    assert_eq!(restored.poll_timeout(), sim.router.poll_timeout());
    assert_restores(&sim);
    sim.run(secs(1300));
    let escalated_p3 = sim.records.iter().find_map(|r| match r {
        Record::Escalated { at, person, .. } if person.as_str() == "p3" => Some(*at),
        _ => None,
    });
    assert_eq!(
        escalated_p3,
        Some(at + std::time::Duration::from_secs(300)),
        "then escalated"
    );
    assert_restores(&sim);
}

#[test]
fn an_answer_on_the_next_bearer_stops_the_escalation_and_red_escalates_at_once() {
    let card = Address::BeidouCard("0412345".into());
    let script = vec![
        (
            secs(0),
            Script::Alert(plan(
                alert("or-t", Grade::Orange, "山洪橙色预警"),
                &["p3"],
                &district(),
            )),
        ),
        reply(1000, "bd-1", card.clone(), "1".into()),
        (
            secs(2000),
            Script::Alert(plan(
                alert("red-t", Grade::Red, "山洪红色预警"),
                &["p3"],
                &district(),
            )),
        ),
    ];
    let mut sim = Sim::new(config(devices()), script);
    sim.verbose = false;
    sim.run(secs(2600));
    let v = verdicts_from(&sim, &card);
    assert!(matches!(&v[0], Verdict::Ack { late: true, .. }), "{v:?}");
    assert_eq!(state_of(&sim, "or-t", "p3"), DeliveryState::Acknowledged);
    // Red sends on every bearer at once and escalates at its deadline: no next bearer.
    assert_eq!(state_of(&sim, "red-t", "p3"), DeliveryState::Escalated);
    let next: Vec<_> = sim
        .records
        .iter()
        .filter(|r| matches!(r, Record::NextBearer { .. }))
        .map(|r| r.alert().unwrap().to_string())
        .collect();
    assert_eq!(next, vec!["or-t".to_string()]);
    assert_restores(&sim);
}

#[test]
fn an_area_update_tells_the_door_knock_assignee_the_visit_is_off() {
    let a = "area-1";
    let script = vec![
        (
            secs(0),
            Script::Alert(plan(
                alert(a, Grade::Red, "山洪红色预警"),
                &["p5"],
                &district(),
            )),
        ),
        // The area shrinks after p5 was escalated to t1: p5 is out.
        (
            secs(500),
            Script::Update(plan(
                alert(a, Grade::Red, "山洪红色预警"),
                &["p1"],
                &district(),
            )),
        ),
    ];
    let mut sim = Sim::new(config(devices()), script);
    sim.run(secs(600));
    let notices: Vec<_> = sim
        .records
        .iter()
        .filter_map(|r| match r {
            Record::NoticePlanned {
                person,
                recipient,
                notice: tocsin_router::NoticeKind::Withdrawn,
                text,
                ..
            } => Some((person.to_string(), recipient.to_string(), text.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert_eq!((notices[0].0.as_str(), notices[0].1.as_str()), ("p5", "p5"));
    assert_eq!((notices[1].0.as_str(), notices[1].1.as_str()), ("p5", "t1"));
    assert!(notices[1].2.contains("陈静"), "{}", notices[1].2);
    let to_t1: Vec<_> = sim
        .sends
        .iter()
        .filter(|s| s.3 == phone(10) && s.0 >= secs(500))
        .map(|s| s.4.clone())
        .collect();
    assert!(
        to_t1.iter().any(|t| t.contains("上门确认任务取消")),
        "{to_t1:?}"
    );
    assert_eq!(state_of(&sim, a, "p5"), DeliveryState::Withdrawn);
    assert_restores(&sim);
}

fn rejected(sim: &Sim, alert: &str) -> u32 {
    sim.router
        .summary(&AlertId::from(alert))
        .unwrap()
        .counts
        .rejected_replies
}

#[test]
fn a_rejected_reply_counts_only_against_open_or_just_closed_alerts() {
    let script = vec![
        (
            secs(0),
            Script::Alert(plan(
                alert("old-1", Grade::Yellow, "暴雨黄色预警"),
                &["p1"],
                &district(),
            )),
        ),
        reply(10, "gsm-1", phone(1), format!("1 {}", code("old-1", "p1"))),
        (
            secs(4000),
            Script::Alert(plan(
                alert("new-1", Grade::Red, "山洪红色预警"),
                &["p1"],
                &district(),
            )),
        ),
        // Open: counts for the open alert only, not the one acked an hour ago.
        reply(4100, "gsm-1", phone(1), "谢谢".into()),
        reply(
            4200,
            "gsm-1",
            phone(1),
            format!("1 {}", code("new-1", "p1")),
        ),
        // Nothing open: counts for the alert whose record just closed.
        reply(4300, "gsm-1", phone(1), "谢谢".into()),
        // More than an hour after it closed: counts for none.
        reply(4200 + 3700, "gsm-1", phone(1), "谢谢".into()),
    ];
    let mut sim = Sim::new(config(devices()), script);
    sim.verbose = false;
    sim.run(secs(8000));
    assert_eq!(rejected(&sim, "old-1"), 0);
    assert_eq!(rejected(&sim, "new-1"), 2);
    let v = verdicts_from(&sim, &phone(1));
    assert!(
        matches!(v.last(), Some(Verdict::Rejected { alerts, .. }) if alerts.is_empty()),
        "{v:?}"
    );
    assert_restores(&sim);
}

#[test]
fn many_codes_in_one_reply_and_repeated_wrong_codes_are_not_tried() {
    let a = "guess-1";
    let mine = code(a, "p2");
    let script = vec![
        (
            secs(0),
            Script::Alert(plan(
                alert(a, Grade::Orange, "山洪橙色预警"),
                &["p2"],
                &district(),
            )),
        ),
        // The right code fourth in a list: only three candidates are tried.
        reply(30, "gsm-1", phone(2), format!("AAAA CCCC EEEE {mine}")),
        reply(40, "gsm-1", phone(2), "1 FFFF".into()),
        // The fifth wrong code within ten minutes: the sender is locked out.
        reply(50, "gsm-1", phone(2), "1 HHHH".into()),
        reply(60, "gsm-1", phone(2), format!("1 {mine}")),
        // Ten minutes after the fifth wrong code: tried again.
        reply(50 + 601, "gsm-1", phone(2), format!("1 {mine}")),
    ];
    let mut sim = Sim::new(config(devices()), script);
    sim.verbose = false;
    sim.run(secs(61));
    let v = verdicts_from(&sim, &phone(2));
    assert!(
        matches!(&v[0], Verdict::Rejected { rejection: tocsin_router::Rejection::WrongCode { code }, .. } if code.as_str() == "AAAA"),
        "{v:?}"
    );
    let until = secs(50) + std::time::Duration::from_secs(600);
    assert!(
        matches!(&v[3], Verdict::Rejected { rejection: tocsin_router::Rejection::RateLimited { until: u }, .. } if *u == until),
        "{v:?}"
    );
    assert_ne!(state_of(&sim, a, "p2"), DeliveryState::Acknowledged);
    assert_eq!(rejected(&sim, a), 4, "every rejected reply counts");

    // The lockout survives a restart: restored from the log, the same reply is refused.
    let mut restored = Router::restore(config(devices()), sim.records.clone(), sim.now).unwrap();
    while restored.poll_output().is_some() {}
    restored.handle_device_event(
        secs(62),
        tocsin_channel::DeviceEvent {
            device: "gsm-1".into(),
            at: secs(62),
            event: tocsin_channel::DriverEvent::Inbound {
                from: phone(2),
                text: format!("1 {mine}"),
                evidence: "pdu".into(),
                sent_at: None,
                receipt: None,
                in_reply_to: None,
            },
        },
    );
    let verdict = std::iter::from_fn(|| restored.poll_output()).find_map(|o| match o {
        tocsin_router::Output::Record(Record::Reply { verdict, .. }) => Some(verdict),
        _ => None,
    });
    assert!(
        matches!(
            verdict,
            Some(Verdict::Rejected {
                rejection: tocsin_router::Rejection::RateLimited { .. },
                ..
            })
        ),
        "{verdict:?}"
    );

    sim.run(secs(700));
    let v = verdicts_from(&sim, &phone(2));
    assert!(matches!(&v[4], Verdict::Ack { .. }), "{v:?}");
    assert_eq!(state_of(&sim, a, "p2"), DeliveryState::Acknowledged);
    assert_restores(&sim);
}

#[test]
fn a_late_door_knock_is_counted_apart_from_late_acks() {
    let a = "late-1";
    // p5's chain: t1, then d1, neither answers in time; the record closes unreached and
    // d1 confirms the visit afterwards. p1 acks in time.
    let script = vec![
        (
            secs(0),
            Script::Alert(plan(
                alert(a, Grade::Red, "山洪红色预警"),
                &["p1", "p5"],
                &district(),
            )),
        ),
        reply(30, "gsm-1", phone(1), format!("1 {}", code(a, "p1"))),
        reply(
            4000,
            "gsm-1",
            phone(11),
            format!("1 {}", task_code(a, "p5")),
        ),
    ];
    let mut sim = Sim::new(config(devices()), script);
    sim.verbose = false;
    sim.run(secs(4100));
    assert_eq!(state_of(&sim, a, "p5"), DeliveryState::Confirmed);
    let c = sim.router.summary(&AlertId::from(a)).unwrap().counts;
    assert_eq!(c.by_state[&DeliveryState::Acknowledged], 1);
    assert_eq!((c.late, c.late_door_knocks), (0, 1));
    assert_restores(&sim);
}
