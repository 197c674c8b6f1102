//! Scheduling under load: ack windows that start with the first attempt, responsible
//! persons before residents, residents without ack not closed while their SMS waits in the
//! queue, texts that fit each device, and bare acks over bearers that vouch for their
//! sender.

mod common;

use common::*;
use std::collections::HashMap;
use tocsin_channel::DriverEvent;
use tocsin_core::{Address, AlertId, AttemptId, Bearer, Grade, PersonId, Role, Timestamp};
use tocsin_router::{
    AlertState, Contact, DeliveryState, Purpose, Record, Rejection, Router, Target, TargetReason,
    TaskState, Verdict,
};

/// `n` residents located in the area, with phones from 1000 on.
fn residents(n: u32) -> Vec<Contact> {
    (0..n)
        .map(|i| {
            contact(
                &format!("r{i}"),
                "居民",
                Role::Resident,
                "大庄镇",
                vec![phone(1000 + i)],
                None,
            )
        })
        .collect()
}

/// A red alert on one slow modem (6/min): 40 residents listed BEFORE 5 responsible persons
/// who never answer, so the queue is still full of residents when the ack windows end.
fn overloaded() -> Sim {
    let mut contacts = residents(40);
    contacts.extend(district());
    let mut ids: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
    ids.extend(["p1", "p2", "p3", "p4", "p5"].map(String::from));
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let script = vec![(
        secs(0),
        Script::Alert(plan(
            alert("red-1", Grade::Red, "山洪红色预警"),
            &ids,
            &contacts,
        )),
    )];
    let mut sim = Sim::new(config(vec![device("gsm-1", Bearer::Sms, 6.0)]), script);
    sim.verbose = false;
    sim.run(secs(4 * 3600));
    sim
}

/// First warning attempt per person.
fn first_attempts(records: &[Record]) -> HashMap<PersonId, Timestamp> {
    let mut first = HashMap::new();
    for r in records {
        if let Record::AttemptStarted {
            at,
            person,
            purpose: Purpose::Alert,
            ..
        } = r
        {
            first.entry(person.clone()).or_insert(*at);
        }
    }
    first
}

#[test]
fn ack_windows_start_with_the_first_attempt_not_with_planning() {
    let sim = overloaded();
    let first = first_attempts(&sim.records);
    // Every resident was sent to and reached; none was closed before anything went out.
    let s = sim.router.summary(&AlertId::from("red-1")).unwrap();
    assert_eq!(s.counts.by_state[&DeliveryState::Reached], 40);
    assert_eq!(
        s.counts.reached, 45,
        "the five leads' SMS were delivered too"
    );
    let last_resident = (0..40)
        .map(|i| first[&PersonId(format!("r{i}"))])
        .max()
        .unwrap();
    assert!(
        last_resident > secs(300),
        "the queue outlasts the 5-minute window: {last_resident}"
    );
    // Escalations, reminders and closings come exactly one window (or reminder offset)
    // after that person's first attempt, never before it.
    let mut escalated = 0;
    for r in &sim.records {
        match r {
            Record::Escalated {
                at, person, task, ..
            } if task.level == 0 => {
                escalated += 1;
                assert_eq!(*at, first[person] + ms(300_000), "{person}");
            }
            Record::Reminder { at, person, n, .. } => {
                assert_eq!(*at, first[person] + ms(100_000 * i64::from(*n)), "{person}");
            }
            Record::DeliveryClosed {
                at, person, state, ..
            } => {
                assert!(
                    first.get(person).is_some_and(|f| f <= at),
                    "{person} {state:?}"
                );
            }
            _ => {}
        }
    }
    assert_eq!(escalated, 5);
}

#[test]
fn responsible_persons_and_door_knocks_go_before_residents() {
    let sim = overloaded();
    let order: Vec<(Timestamp, String, bool)> = sim
        .records
        .iter()
        .filter_map(|r| match r {
            Record::AttemptStarted {
                at,
                person,
                purpose,
                ..
            } => Some((*at, person.to_string(), *purpose != Purpose::Alert)),
            _ => None,
        })
        .collect();
    // The five leads first, although the plan lists the residents first.
    let firsts: Vec<&str> = order.iter().take(5).map(|o| o.1.as_str()).collect();
    assert_eq!(firsts, ["p1", "p2", "p3", "p4", "p5"]);
    assert_eq!(order[5].1, "r0", "then the residents in plan order");
    // Door-knock tasks jump the residents still queued: each goes out at the first free
    // send after its escalation, while residents are still waiting.
    let escalations: Vec<Timestamp> = sim
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Escalated { at, task, .. } if task.level == 0 => Some(*at),
            _ => None,
        })
        .collect();
    let tasks: Vec<Timestamp> = order.iter().filter(|o| o.2).map(|o| o.0).collect();
    assert!(tasks.len() >= 5);
    let last_resident = order
        .iter()
        .filter(|o| o.1.starts_with('r'))
        .map(|o| o.0)
        .max()
        .unwrap();
    for (e, t) in escalations.iter().zip(&tasks) {
        assert!(*t < *e + ms(10_001), "task at {t}, escalated at {e}");
        assert!(*t < last_resident);
    }
}

#[test]
fn responsible_by_target_reason_counts_even_for_a_resident_role() {
    // A resident registered as the warden of a named area is targeted as responsible.
    let mut contacts = residents(3);
    contacts.push(contact(
        "w1",
        "看护人",
        Role::Resident,
        "大庄镇",
        vec![phone(7)],
        None,
    ));
    let mut p = plan(
        alert("blue-1", Grade::Blue, "大风蓝色预警"),
        &["r0", "r1", "r2"],
        &contacts,
    );
    p.targets.push(Target {
        person: PersonId::from("w1"),
        reason: TargetReason::Responsible {
            area: tocsin_core::AreaId::from("v1"),
        },
    });
    let mut sim = Sim::new(
        config(vec![device("gsm-1", Bearer::Sms, 6.0)]),
        vec![(secs(0), Script::Alert(p))],
    );
    sim.verbose = false;
    sim.run(secs(600));
    assert_eq!(sim.sends[0].3, phone(7));
}

#[test]
fn red_still_preempts_a_lower_grade_responsible_queue() {
    let contacts = district();
    let mut more = residents(30);
    more.extend(contacts.clone());
    let ids: Vec<String> = (0..30).map(|i| format!("r{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let script = vec![
        (
            secs(0),
            Script::Alert(plan(
                alert("or-1", Grade::Orange, "暴雨橙色预警"),
                &["p1", "p2", "p3", "p4"],
                &more,
            )),
        ),
        (
            secs(0),
            Script::Alert(plan(
                alert("blue-1", Grade::Blue, "大风蓝色预警"),
                &ids,
                &more,
            )),
        ),
        (
            secs(15),
            Script::Alert(plan(
                alert("red-1", Grade::Red, "山洪红色预警"),
                &["r29"],
                &more,
            )),
        ),
    ];
    let mut sim = Sim::new(config(vec![device("gsm-1", Bearer::Sms, 6.0)]), script);
    sim.verbose = false;
    sim.run(secs(120));
    let to: Vec<&Address> = sim.sends.iter().map(|s| &s.3).collect();
    // Orange leads at 0 and 10 s; at 20 s the red resident beats the orange leads still
    // queued; then orange resumes; the blue residents wait for all of it.
    assert_eq!(to[0], &phone(1));
    assert_eq!(to[1], &phone(2));
    assert_eq!(to[2], &phone(1029));
    assert_eq!(to[3], &phone(3));
    assert_eq!(to[4], &phone(4));
    assert_eq!(to[5], &phone(1000));
}

#[test]
fn texts_fit_each_device() {
    let contacts = district();
    let mut a = alert("red-1", Grade::Red, "山洪红色预警");
    a.text = "山洪已形成，沿河各村立即组织人员向高处转移，切勿涉水过河，关注村广播。".into();
    let mut bd = device("bd-1", Bearer::Beidou, 1.0);
    bd.caps.max_chars = 38;
    let devs = vec![device("gsm-1", Bearer::Sms, 10.0), bd];
    let script = vec![(secs(0), Script::Alert(plan(a, &["p3"], &contacts)))];
    let mut sim = Sim::new(config(devs), script);
    sim.verbose = false;
    sim.run(secs(30));
    let text_on = |dev: &str| {
        sim.sends
            .iter()
            .find(|s| s.1.as_str() == dev)
            .map(|s| s.4.clone())
            .unwrap()
    };
    let c = code("red-1", "p3");
    assert_eq!(
        text_on("gsm-1"),
        format!(
            "【红色预警】山洪红色预警：山洪已形成，沿河各村立即组织人员向高处转移，切勿涉水过河，关注村广播。 回复 1 {c} 确认"
        )
    );
    assert_eq!(
        text_on("bd-1"),
        format!("【红色预警】山洪红色预警 回复1 {c}")
    );
    // The record says what was actually sent.
    let recorded = sim.records.iter().find_map(|r| match r {
        Record::AttemptStarted {
            bearer: Bearer::Beidou,
            text,
            ..
        } => Some(text.clone()),
        _ => None,
    });
    assert_eq!(recorded, Some(text_on("bd-1")));
}

#[test]
fn bare_ack_over_an_authenticated_bearer_goes_to_the_most_urgent_record() {
    let mut contacts = district();
    // Two wardens share one village BeiDou terminal.
    contacts.push(contact(
        "s1",
        "共用甲",
        Role::HazardWarden,
        "石门镇",
        vec![phone(31), Address::BeidouCard("999".into())],
        None,
    ));
    contacts.push(contact(
        "s2",
        "共用乙",
        Role::HazardWarden,
        "石门镇",
        vec![phone(32), Address::BeidouCard("999".into())],
        None,
    ));
    let card = Address::BeidouCard("0412345".into());
    let script = vec![
        (
            secs(0),
            Script::Alert(plan(
                alert("yel-1", Grade::Yellow, "暴雨黄色预警"),
                &["p3", "p1", "s1"],
                &contacts,
            )),
        ),
        (
            secs(1),
            Script::Alert(plan(
                alert("red-1", Grade::Red, "山洪红色预警"),
                &["p3", "p1", "s2"],
                &contacts,
            )),
        ),
        (
            secs(2),
            Script::Alert(plan(
                alert("yel-2", Grade::Yellow, "地质灾害黄色预警"),
                &["p3"],
                &contacts,
            )),
        ),
        // SMS: the strict rule stands.
        reply(30, "gsm-1", phone(1), "1".into()),
        // BeiDou, three open records: the red one, although it is not the newest.
        reply(40, "bd-1", card.clone(), "1".into()),
        // Two yellow left: the more recent one.
        reply(50, "bd-1", card.clone(), "收到".into()),
        // A code still names its own record.
        reply(
            60,
            "bd-1",
            card.clone(),
            format!("1 {}", code("yel-1", "p3")),
        ),
        // A terminal shared by two people: whose ack would be a guess.
        reply(70, "bd-1", Address::BeidouCard("999".into()), "1".into()),
    ];
    let mut sim = Sim::new(
        config(vec![
            device("gsm-1", Bearer::Sms, 60.0),
            device("bd-1", Bearer::Beidou, 60.0),
        ]),
        script,
    );
    sim.verbose = false;
    sim.run(secs(90));
    let verdicts: Vec<Verdict> = sim
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Reply { verdict, .. } => Some(verdict.clone()),
            _ => None,
        })
        .collect();
    assert!(
        matches!(
            &verdicts[0],
            Verdict::Rejected {
                rejection: Rejection::Ambiguous { open: 2 },
                ..
            }
        ),
        "{:?}",
        verdicts[0]
    );
    let acked = |v: &Verdict| match v {
        Verdict::Ack { alert, person, .. } => Some((alert.to_string(), person.to_string())),
        _ => None,
    };
    assert_eq!(acked(&verdicts[1]), Some(("red-1".into(), "p3".into())));
    assert_eq!(acked(&verdicts[2]), Some(("yel-2".into(), "p3".into())));
    assert_eq!(acked(&verdicts[3]), Some(("yel-1".into(), "p3".into())));
    assert!(
        matches!(
            &verdicts[4],
            Verdict::Rejected {
                rejection: Rejection::Ambiguous { open: 2 },
                ..
            }
        ),
        "{:?}",
        verdicts[4]
    );
}

#[test]
fn an_overloaded_campaign_restores_to_the_same_state_from_its_log() {
    let sim = overloaded();
    let a = AlertId::from("red-1");
    let s = sim.router.summary(&a).unwrap();
    assert_eq!(s.state, AlertState::Done);
    assert_eq!(
        s.counts.by_state[&DeliveryState::Unreached],
        5,
        "the leads never answer, nor does their chain"
    );
    // Replaying the log (windows included) gives the same records, views and next timer.
    let devs = vec![device("gsm-1", Bearer::Sms, 6.0)];
    let mut restored = Router::restore(config(devs.clone()), sim.records.clone(), sim.now).unwrap();
    assert!(restored.poll_output().is_none());
    assert_eq!(restored.summary(&a), sim.router.summary(&a));
    assert_eq!(
        restored.deliveries(&a, None),
        sim.router.deliveries(&a, None)
    );
    assert_eq!(restored.poll_timeout(), sim.router.poll_timeout());
    // And from a cut in the middle of the queue, the campaign ends the same way.
    for cut in [3, 40, 120] {
        let mut contacts = residents(40);
        contacts.extend(district());
        let mut ids: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
        ids.extend(["p1", "p2", "p3", "p4", "p5"].map(String::from));
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let script = vec![(
            secs(0),
            Script::Alert(plan(
                alert("red-1", Grade::Red, "山洪红色预警"),
                &ids,
                &contacts,
            )),
        )];
        let mut cut_sim = Sim::new(config(devs.clone()), script);
        cut_sim.verbose = false;
        cut_sim.crash_after = Some(cut);
        cut_sim.run(secs(4 * 3600));
        assert!(cut_sim.transcript.contains("CRASH"));
        assert_eq!(cut_sim.outcome(), sim.outcome(), "cut after batch {cut}");
    }
}

fn ms(n: i64) -> std::time::Duration {
    std::time::Duration::from_millis(n as u64)
}

#[test]
fn a_first_attempt_that_never_left_a_dead_modem_does_not_start_the_window() {
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
        // gsm-1 dies before it accepts p1's message.
        (
            secs(0),
            Script::Health {
                device: "gsm-1".into(),
                up: false,
            },
        ),
    ];
    let devs = vec![
        device("gsm-1", Bearer::Sms, 6.0),
        device("gsm-2", Bearer::Sms, 6.0),
    ];
    let mut sim = Sim::new(config(devs), script);
    sim.verbose = false;
    sim.run(secs(400));
    let abandoned = sim.records.iter().any(|r| {
        matches!(r, Record::AttemptAbandoned { person, possible_duplicate: false, .. } if person.as_str() == "p1")
    });
    assert!(abandoned);
    let escalated: HashMap<String, Timestamp> = sim
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Escalated { at, person, .. } => Some((person.to_string(), *at)),
            _ => None,
        })
        .collect();
    // p2 went out on gsm-2 at 0 s; p1 only at 10 s, on gsm-2: its window starts there.
    assert_eq!(escalated["p2"], secs(300));
    assert_eq!(escalated["p1"], secs(310));
}

/// A modem that loses its network is moved off; its driver answers the router's Cancel of
/// the send it held with a final failure. That answer is about an attempt the router has
/// already abandoned: the route must stay open and the warning go out again when a modem
/// is back, not be declared dead ("every route failed") and the person escalated.
#[test]
fn a_final_failure_for_an_abandoned_attempt_does_not_kill_the_route() {
    let contacts = district();
    let script = vec![
        (
            secs(0),
            Script::Alert(plan(
                alert("red-1", Grade::Red, "山洪红色预警"),
                &["p1"],
                &contacts,
            )),
        ),
        // The only modem goes down before it reports the SMS sent, and comes back at 60 s.
        (
            secs(1),
            Script::Health {
                device: "gsm-1".into(),
                up: false,
            },
        ),
        (
            secs(60),
            Script::Health {
                device: "gsm-1".into(),
                up: true,
            },
        ),
    ];
    let mut sim = Sim::new(config(vec![device("gsm-1", Bearer::Sms, 6.0)]), script);
    sim.verbose = false;
    sim.cancel_fails = true;
    // Until just before the first reminder (100 s).
    sim.run(secs(95));
    let abandoned = sim
        .records
        .iter()
        .any(|r| matches!(r, Record::AttemptAbandoned { person, .. } if person.as_str() == "p1"));
    assert!(abandoned, "{}", sim.transcript);
    // The failure was recorded, then the warning went out again once the modem was up.
    let sms_to_p1: Vec<Timestamp> = sim
        .sends
        .iter()
        .filter(|(_, _, _, to, _)| *to == phone(1))
        .map(|(at, ..)| *at)
        .collect();
    assert_eq!(sms_to_p1, vec![secs(0), secs(60)], "{}", sim.transcript);
    assert!(
        !sim.records
            .iter()
            .any(|r| matches!(r, Record::Escalated { .. })),
        "escalated before its deadline"
    );
    let views = sim
        .router
        .deliveries(&AlertId::from("red-1"), None)
        .unwrap();
    assert_eq!(views[0].state, DeliveryState::Reached);
}

#[test]
fn a_late_bare_ack_after_the_door_knock_still_counts() {
    let contacts = district();
    let a = "red-1";
    let script = vec![
        (
            secs(0),
            Script::Alert(plan(
                alert(a, Grade::Red, "山洪红色预警"),
                &["p1"],
                &contacts,
            )),
        ),
        // The town official knocks and confirms at 6 min; p1 answers "1" at 8 min.
        reply(360, "gsm-1", phone(10), format!("1 {}", task_code(a, "p1"))),
        reply(480, "gsm-1", phone(1), "1".into()),
    ];
    let mut sim = Sim::new(config(vec![device("gsm-1", Bearer::Sms, 60.0)]), script);
    sim.verbose = false;
    sim.run(secs(600));
    let last = sim.records.iter().rev().find_map(|r| match r {
        Record::Reply { verdict, .. } => Some(verdict.clone()),
        _ => None,
    });
    assert!(
        matches!(&last, Some(Verdict::Ack { person, late: true, .. }) if person.as_str() == "p1"),
        "{last:?}"
    );
    let views = sim.router.deliveries(&AlertId::from(a), None).unwrap();
    assert_eq!(views[0].state, DeliveryState::Acknowledged);
    assert!(views[0].late);
}

/// A supervisor holds two open door-knock tasks (red-1's for p1, then red-2's for p2) and
/// presses 1 in the call placed for the OLDER one. The key answers that call's task, not
/// the most urgent one — and only accepts it: the record stays escalated until the visit
/// is confirmed with the task's code. The other task stays open and its call still goes
/// out.
#[test]
fn a_key_pressed_in_a_call_answers_that_calls_task() {
    let contacts = district();
    let script = vec![
        (
            secs(0),
            Script::Alert(plan(
                alert("red-1", Grade::Red, "山洪红色预警"),
                &["p1"],
                &contacts,
            )),
        ),
        (
            secs(40),
            Script::Alert(plan(
                alert("red-2", Grade::Red, "泥石流红色预警"),
                &["p2"],
                &contacts,
            )),
        ),
    ];
    let mut voice = device("voice-1", Bearer::Voice, 1.0);
    // The call's far end is the number dialled: the bearer vouches for who pressed the key.
    voice.caps.sender_authenticated = true;
    let mut sim = Sim::new(
        config(vec![device("gsm-1", Bearer::Sms, 60.0), voice]),
        script,
    );
    sim.verbose = false;
    // Calls last two minutes: the key comes while the call is up.
    sim.delays.insert(Bearer::Voice, (20_000, 120_000));
    let escalated_at = |sim: &Sim, who: &str| {
        sim.records.iter().find_map(|r| match r {
            Record::Escalated { at, person, .. } if person.as_str() == who => Some(*at),
            _ => None,
        })
    };
    let task_calls = |sim: &Sim, who: &str| -> Vec<AttemptId> {
        sim.records
            .iter()
            .filter_map(|r| match r {
                Record::AttemptStarted {
                    person,
                    attempt,
                    purpose: Purpose::DoorKnock { .. },
                    bearer: Bearer::Voice,
                    ..
                } if person.as_str() == who => Some(*attempt),
                _ => None,
            })
            .collect()
    };
    // Run until both tasks are open and p1's task call is placed.
    let mut t = 0;
    while (escalated_at(&sim, "p2").is_none() || task_calls(&sim, "p1").is_empty()) && t < 900 {
        t += 5;
        sim.run(secs(t));
    }
    let older = escalated_at(&sim, "p1").expect("p1's record escalated");
    let newer = escalated_at(&sim, "p2").expect("p2's record escalated");
    assert!(older < newer, "{older:?} {newer:?}");
    let call = task_calls(&sim, "p1")[0];
    // p2's task call waits for the line (one call a minute).
    let p2_calls_before = task_calls(&sim, "p2").len();
    assert_eq!(p2_calls_before, 0);
    let t1_phone = phone(10);

    sim.device_event(
        "voice-1",
        DriverEvent::Inbound {
            from: t1_phone.clone(),
            text: "1".into(),
            evidence: "DTMF 1 (+QTONEDET: 49) in call-7 at +3.0 s".into(),
            sent_at: None,
            receipt: None,
            in_reply_to: Some(call),
        },
    );
    sim.run(secs(t + 1));

    let reply = sim.records.iter().rev().find_map(|r| match r {
        Record::Reply {
            verdict,
            in_reply_to,
            ..
        } => Some((verdict.clone(), *in_reply_to)),
        _ => None,
    });
    let Some((verdict, in_reply_to)) = reply else {
        panic!("no reply recorded")
    };
    assert_eq!(
        in_reply_to,
        Some(call),
        "the reply record keeps the attempt"
    );
    assert!(
        matches!(
            &verdict,
            Verdict::DoorKnockAccepted { alert, person, by, .. }
                if alert.as_str() == "red-1" && person.as_str() == "p1" && by.as_str() == "t1"
        ),
        "{verdict:?}"
    );
    let view =
        |sim: &Sim, a: &str| sim.router.deliveries(&AlertId::from(a), None).unwrap()[0].clone();
    let accepted_at = secs(t);
    let v1 = view(&sim, "red-1");
    assert_eq!(
        v1.state,
        DeliveryState::Escalated,
        "accepted is not confirmed"
    );
    assert_eq!(v1.ack_evidence, None);
    let dk = v1.door_knock.expect("the task is shown");
    assert_eq!(dk.state, TaskState::Accepted);
    assert_eq!(dk.accepted_by.as_ref().map(|p| p.as_str()), Some("t1"));
    assert_eq!(dk.accepted_at, Some(accepted_at));
    assert_eq!(
        dk.visit_due,
        Some(accepted_at + std::time::Duration::from_secs(1800)),
        "the red policy's 30-minute visit window"
    );
    let summary = sim.router.summary(&AlertId::from("red-1")).unwrap();
    assert_eq!(summary.counts.door_knocks_accepted, 1);
    assert_eq!(summary.counts.by_state[&DeliveryState::Confirmed], 0);
    assert_eq!(view(&sim, "red-2").state, DeliveryState::Escalated);
    // Nothing of p2's record was cancelled; its task call still goes out.
    let cancelled_p2 = sim
        .records
        .iter()
        .any(|r| matches!(r, Record::AttemptCancelled { person, .. } if person.as_str() == "p2"));
    assert!(!cancelled_p2);
    sim.run(secs(t + 180));
    assert!(
        task_calls(&sim, "p2").len() > p2_calls_before,
        "p2's task call was placed after the key press"
    );
    assert_eq!(view(&sim, "red-2").state, DeliveryState::Escalated);

    // The same key press with no attempt named goes by the old rule, to the most urgent
    // open record: p2's task now (the only one not yet accepted), which it accepts.
    sim.device_event(
        "voice-1",
        DriverEvent::Inbound {
            from: t1_phone,
            text: "1".into(),
            evidence: "DTMF 1".into(),
            sent_at: None,
            receipt: None,
            in_reply_to: None,
        },
    );
    sim.run(secs(t + 181));
    assert_eq!(view(&sim, "red-2").state, DeliveryState::Escalated);
    assert_eq!(
        view(&sim, "red-2").door_knock.map(|k| k.state),
        Some(TaskState::Accepted)
    );
    // t1 went to p1's house and confirms with the task's code, as the task's SMS says.
    sim.device_event(
        "gsm-1",
        DriverEvent::Inbound {
            from: phone(10),
            text: format!("1 {}", task_code("red-1", "p1")),
            evidence: "pdu".into(),
            sent_at: None,
            receipt: None,
            in_reply_to: None,
        },
    );
    sim.run(secs(t + 182));
    let v1 = view(&sim, "red-1");
    assert_eq!(v1.state, DeliveryState::Confirmed);
    assert_eq!(v1.door_knock.map(|k| k.state), Some(TaskState::Confirmed));
    assert!(!v1.late);
    assert_eq!(view(&sim, "red-2").state, DeliveryState::Escalated);

    // The log replays to the same views.
    let restored = Router::restore(
        config(vec![device("gsm-1", Bearer::Sms, 60.0), {
            let mut v = device("voice-1", Bearer::Voice, 1.0);
            v.caps.sender_authenticated = true;
            v
        }]),
        sim.records.clone(),
        sim.now,
    )
    .unwrap();
    for a in ["red-1", "red-2"] {
        let back = restored.deliveries(&AlertId::from(a), None).unwrap();
        assert_eq!(back[0], view(&sim, a), "{a}");
    }
}

/// A key press naming an attempt that was not placed to the sender (a confused or forged
/// report) does not pick a record: the ordinary rules judge it.
#[test]
fn a_key_press_naming_someone_elses_call_goes_by_the_ordinary_rules() {
    let contacts = district();
    let script = vec![(
        secs(0),
        Script::Alert(plan(
            alert("red-1", Grade::Red, "山洪红色预警"),
            &["p1", "p2"],
            &contacts,
        )),
    )];
    let mut voice = device("voice-1", Bearer::Voice, 60.0);
    voice.caps.sender_authenticated = true;
    let mut sim = Sim::new(
        config(vec![device("gsm-1", Bearer::Sms, 60.0), voice]),
        script,
    );
    sim.verbose = false;
    sim.run(secs(10));
    let p2_call = sim
        .sends
        .iter()
        .find(|(_, d, _, to, _)| d.as_str() == "voice-1" && *to == phone(2))
        .map(|s| s.2)
        .expect("p2 was called");
    sim.device_event(
        "voice-1",
        DriverEvent::Inbound {
            from: phone(1),
            text: "1".into(),
            evidence: "DTMF 1".into(),
            sent_at: None,
            receipt: None,
            in_reply_to: Some(p2_call),
        },
    );
    sim.run(secs(11));
    let views = sim
        .router
        .deliveries(&AlertId::from("red-1"), None)
        .unwrap();
    let state = |p: &str| views.iter().find(|v| v.person.as_str() == p).unwrap().state;
    // p1's own single open record takes the bare ack; p2's stays open.
    assert_eq!(state("p1"), DeliveryState::Acknowledged);
    assert_ne!(state("p2"), DeliveryState::Acknowledged);
}

/// A red alert pushed to the app alongside SMS (as the demo does) on one slow modem
/// (1/min): eight leads with phones who answer their SMS 30 s after it goes out, and two
/// residents with the app and a phone. The app device only ever reports `sent` (a backend's
/// 200 is no delivery report); r1's SMS is only ever `sent` too. `down_at`: gsm-1 goes
/// down for good then.
fn pushed_residents_script() -> (Vec<tocsin_router::DeviceInfo>, Vec<(Timestamp, Script)>) {
    let a = "red-1";
    let mut contacts: Vec<Contact> = (0..8)
        .map(|i| {
            contact(
                &format!("lead{i}"),
                "村干部",
                Role::VillageHead,
                "大庄镇",
                vec![phone(100 + i)],
                None,
            )
        })
        .collect();
    for i in 0..2 {
        contacts.push(contact(
            &format!("r{i}"),
            "居民",
            Role::Resident,
            "大庄镇",
            vec![phone(1000 + i), Address::App(format!("syn-app-{i}"))],
            None,
        ));
    }
    let mut ids: Vec<String> = (0..2).map(|i| format!("r{i}")).collect();
    ids.extend((0..8).map(|i| format!("lead{i}")));
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut script = vec![(
        secs(0),
        Script::Alert(plan(alert(a, Grade::Red, "山洪红色预警"), &ids, &contacts)),
    )];
    // The leads go first, one a minute: lead i's SMS leaves at i minutes.
    for i in 0..8u32 {
        script.push(reply(
            i64::from(i) * 60 + 30,
            "gsm-1",
            phone(100 + i),
            format!("1 {}", code(a, &format!("lead{i}"))),
        ));
    }
    let devs = vec![
        device("gsm-1", Bearer::Sms, 1.0),
        device("app-1", Bearer::App, 600.0),
    ];
    (devs, script)
}

fn pushed_residents(down_at: Option<i64>, crash_after: Option<usize>) -> Sim {
    let (devs, mut script) = pushed_residents_script();
    if let Some(t) = down_at {
        script.push((
            secs(t),
            Script::Health {
                device: "gsm-1".into(),
                up: false,
            },
        ));
    }
    let mut cfg = config(devs);
    cfg.policies.red.parallel.push(Bearer::App);
    let mut sim = Sim::new(cfg, script);
    sim.verbose = false;
    sim.crash_after = crash_after;
    sim.device_fates
        .insert(tocsin_core::DeviceId::from("app-1"), Fate::SentOnly);
    sim.fates.insert(phone(1001), Fate::SentOnly);
    sim
}

/// When `person`'s record was closed, in what state and why.
fn closed(sim: &Sim, person: &str) -> Option<(Timestamp, DeliveryState, String)> {
    sim.records.iter().find_map(|r| match r {
        Record::DeliveryClosed {
            at,
            person: p,
            state,
            reason,
            ..
        } if p.as_str() == person => Some((*at, *state, reason.clone())),
        _ => None,
    })
}

/// When the first SMS to `to` was handed to a device, if ever.
fn first_sms(sim: &Sim, to: &Address) -> Option<Timestamp> {
    sim.sends
        .iter()
        .find(|(_, d, _, a, _)| d.as_str() == "gsm-1" && a == to)
        .map(|s| s.0)
}

#[test]
fn a_resident_pushed_by_app_is_not_closed_while_their_sms_waits_in_the_queue() {
    let mut sim = pushed_residents(None, None);
    sim.run(secs(3600));
    let a = AlertId::from("red-1");
    // The pushes went out at once; the residents' SMS waited behind the eight leads' and
    // left after the residents' own five-minute window had run out.
    let app_push = sim
        .sends
        .iter()
        .find(|(_, d, _, to, _)| d.as_str() == "app-1" && to == &Address::App("syn-app-0".into()))
        .map(|s| s.0);
    assert_eq!(app_push, Some(secs(0)));
    let sms0 = first_sms(&sim, &phone(1000)).expect("r0's SMS went out");
    let sms1 = first_sms(&sim, &phone(1001)).expect("r1's SMS went out");
    assert!(sms0 >= secs(300) && sms1 >= secs(300), "{sms0} {sms1}");
    // r0's SMS is delivered: reached, closed when its report came, not at the deadline.
    let (at, state, reason) = closed(&sim, "r0").unwrap();
    assert_eq!(
        (state, reason.as_str()),
        (DeliveryState::Reached, "delivered")
    );
    assert_eq!(
        at,
        sms0 + std::time::Duration::from_secs(7),
        "sent 2 s, report 5 s later"
    );
    let r0 = sim
        .router
        .deliveries(&a, None)
        .unwrap()
        .into_iter()
        .find(|d| d.person.as_str() == "r0")
        .unwrap();
    assert!(
        r0.attempts
            .iter()
            .any(|x| x.bearer == Bearer::Sms && x.outcome == "delivered"),
        "{:?}",
        r0.attempts
    );
    // r1's SMS only ever says sent: one window after it went out, r1 is unreached.
    let (at, state, reason) = closed(&sim, "r1").unwrap();
    assert_eq!(
        (state, reason.as_str()),
        (
            DeliveryState::Unreached,
            "no delivery report by the deadline"
        )
    );
    assert_eq!(at, sms1 + std::time::Duration::from_secs(300));
    // What the closes cancelled had all gone out (a push, r1's SMS without a report);
    // no SMS was cancelled while it waited in the queue.
    let cancelled: Vec<(&str, &str, Timestamp)> = sim
        .records
        .iter()
        .filter_map(|r| match r {
            Record::AttemptCancelled {
                person, device, at, ..
            } if person.as_str().starts_with('r') => Some((person.as_str(), device.as_str(), *at)),
            _ => None,
        })
        .collect();
    let r0_at = sms0 + std::time::Duration::from_secs(7);
    let r1_at = sms1 + std::time::Duration::from_secs(300);
    assert_eq!(
        cancelled,
        [
            ("r0", "app-1", r0_at),
            ("r1", "app-1", r1_at),
            ("r1", "gsm-1", r1_at)
        ],
        "{}",
        sim.transcript
    );
    let s = sim.router.summary(&a).unwrap();
    assert_eq!(s.state, AlertState::Done);
    assert_eq!(s.counts.by_state[&DeliveryState::Acknowledged], 8);
}

#[test]
fn a_resident_whose_sms_modem_is_down_at_the_deadline_closes_unreached_as_before() {
    // gsm-1 dies at 4:00: lead4..lead7 and both residents' SMS are stuck in its queue.
    let mut sim = pushed_residents(Some(240), None);
    sim.run(secs(3600));
    for (r, push) in [("r0", secs(0)), ("r1", Timestamp(100))] {
        let (at, state, reason) = closed(&sim, r).unwrap();
        assert_eq!(
            (at, state, reason.as_str()),
            (
                push + std::time::Duration::from_secs(300),
                DeliveryState::Unreached,
                "no delivery report by the deadline"
            ),
            "{r}"
        );
    }
    assert_eq!(first_sms(&sim, &phone(1000)), None);
    assert_eq!(first_sms(&sim, &phone(1001)), None);
}

#[test]
fn a_held_resident_closes_when_the_modem_it_waits_for_goes_down() {
    // Held at 5:00 for their queued SMS; gsm-1 dies at 5:30, before either resident's SMS
    // left: nothing will move them now, so they close then, not never.
    let mut sim = pushed_residents(Some(330), None);
    sim.run(secs(3600));
    for r in ["r0", "r1"] {
        let (at, state, reason) = closed(&sim, r).unwrap_or_else(|| panic!("{r} never closed"));
        assert_eq!(
            (at, state, reason.as_str()),
            (
                secs(330),
                DeliveryState::Unreached,
                "no delivery report by the deadline; the bearers it waited for are down"
            ),
            "{r}"
        );
    }
    assert_eq!(first_sms(&sim, &phone(1000)), None);
    let s = sim.router.summary(&AlertId::from("red-1")).unwrap();
    assert!(
        s.counts.by_state[&DeliveryState::Unreached] >= 2,
        "{:?}",
        s.counts
    );
}

#[test]
fn a_held_resident_restores_to_the_same_outcome_at_every_cut() {
    let mut sim = pushed_residents(None, None);
    // Batches at landmarks: before the deadline, while held, as the SMS goes, after.
    let mut cuts = Vec::new();
    for t in [100, 299, 300, 301, 420, 479, 480, 481, 485, 600, 780] {
        sim.run(secs(t));
        cuts.push(sim.batches);
    }
    sim.run(secs(3600));
    let want = sim.outcome();
    assert!(
        want.iter()
            .any(|o| o.1 == "r0" && o.2 == DeliveryState::Reached),
        "{want:?}"
    );
    cuts.extend([1, 2, 3]);
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts {
        // Crash after the batch that follows the landmark (its commands are lost).
        let mut cut_sim = pushed_residents(None, Some(cut + 1));
        cut_sim.run(secs(3600));
        assert!(cut_sim.transcript.contains("CRASH"), "cut {cut}");
        assert_eq!(cut_sim.outcome(), want, "cut after batch {}", cut + 1);
        let (_, state, _) = closed(&cut_sim, "r0").unwrap();
        assert_eq!(state, DeliveryState::Reached, "cut {cut}");
    }
    // Replaying the whole log gives the same views and the same next timer.
    let a = AlertId::from("red-1");
    let (devs, _) = pushed_residents_script();
    let mut cfg = config(devs);
    cfg.policies.red.parallel.push(Bearer::App);
    let mut restored = Router::restore(cfg, sim.records.clone(), sim.now).unwrap();
    assert!(restored.poll_output().is_none());
    assert_eq!(restored.summary(&a), sim.router.summary(&a));
    assert_eq!(
        restored.deliveries(&a, None),
        sim.router.deliveries(&a, None)
    );
    assert_eq!(restored.poll_timeout(), sim.router.poll_timeout());
}
