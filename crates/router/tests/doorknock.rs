//! Door-knock tasks: "accepted" (the supervisor is going) is not "confirmed" (they went).
//! Stepped on the virtual clock; every scenario replays from its log to the same views.

#![allow(clippy::unwrap_used, reason = "test: a failed unwrap is a failed test")]

mod common;

use common::*;
use std::time::Duration;
use tocsin_channel::DriverEvent;
use tocsin_core::{Address, AlertId, Bearer, Grade, Timestamp};
use tocsin_router::{
    DeliveryState, DeliveryView, Record, Router, RouterConfig, TaskState, Verdict,
};

fn inbound(from: Address, text: &str) -> DriverEvent {
    DriverEvent::Inbound {
        from,
        text: text.into(),
        evidence: "pdu".into(),
        sent_at: None,
        receipt: None,
        in_reply_to: None,
    }
}

/// Runs the campaign up to `t` and stands the clock there (for replies sent at `t`).
fn at(sim: &mut Sim, t: Timestamp) {
    sim.run(t);
    sim.now = t;
}

fn view(sim: &Sim, alert: &str, person: &str) -> DeliveryView {
    sim.router
        .deliveries(&AlertId::from(alert), None)
        .unwrap()
        .into_iter()
        .find(|d| d.person.as_str() == person)
        .unwrap()
}

fn last_verdict(sim: &Sim) -> Verdict {
    sim.records
        .iter()
        .rev()
        .find_map(|r| match r {
            Record::Reply { verdict, .. } => Some(verdict.clone()),
            _ => None,
        })
        .expect("a reply was recorded")
}

/// (when, assignee, level, reason) of every escalation of `person`'s record.
fn escalations(sim: &Sim, person: &str) -> Vec<(Timestamp, String, u32, Option<String>)> {
    sim.records
        .iter()
        .filter_map(|r| match r {
            Record::Escalated {
                at,
                person: p,
                task,
                reason,
                ..
            } if p.as_str() == person => {
                Some((*at, task.assignee.to_string(), task.level, reason.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The log replays to the same views (door-knock state and visit deadline included) and
/// the same next timer.
fn assert_restores(sim: &Sim, config: RouterConfig) {
    let restored = Router::restore(config, sim.records.clone(), sim.now).unwrap();
    for s in sim.router.alerts() {
        let a = &s.alert.id;
        assert_eq!(
            restored.deliveries(a, None),
            sim.router.deliveries(a, None),
            "{a}"
        );
        assert_eq!(restored.summary(a).unwrap().counts, s.counts, "{a}");
    }
    assert_eq!(restored.poll_timeout(), sim.router.poll_timeout());
}

fn sms_config() -> RouterConfig {
    config(vec![device("gsm-1", Bearer::Sms, 60.0)])
}

/// p1 never answers the red; the town official t1 gets the door-knock task and answers
/// "收到" by SMS: the task is accepted, the record stays escalated, and the 15-minute
/// "no answer" clock no longer runs. Nobody confirms the visit within the 30-minute visit
/// window, so the task goes to the district official d1, saying why. t1 then confirms
/// with the task's code ("1 CODE"): the visit, and the record is confirmed.
#[test]
fn an_accepted_task_waits_for_the_visit_then_escalates_and_the_code_confirms_it() {
    let a = "dk-1";
    let mut sim = Sim::new(
        sms_config(),
        vec![(
            secs(0),
            Script::Alert(plan(
                alert(a, Grade::Red, "山洪红色预警"),
                &["p1"],
                &district(),
            )),
        )],
    );
    sim.verbose = false;
    sim.run(secs(330));
    let esc = escalations(&sim, "p1");
    assert_eq!(esc.len(), 1, "{esc:?}");
    assert_eq!((esc[0].1.as_str(), esc[0].2), ("t1", 0));
    let v = view(&sim, a, "p1");
    assert_eq!(
        v.door_knock.as_ref().map(|k| k.state),
        Some(TaskState::Assigned)
    );

    // t1: "收到" — the task is all t1 has open, so the bare ack is about it; it accepts.
    at(&mut sim, secs(360));
    sim.device_event("gsm-1", inbound(phone(10), "收到"));
    sim.run(secs(361));
    assert!(
        matches!(
            last_verdict(&sim),
            Verdict::DoorKnockAccepted { ref person, ref by, .. }
                if person.as_str() == "p1" && by.as_str() == "t1"
        ),
        "{:?}",
        last_verdict(&sim)
    );
    let v = view(&sim, a, "p1");
    assert_eq!(
        v.state,
        DeliveryState::Escalated,
        "accepted is not confirmed"
    );
    assert_eq!(v.acked_at, None);
    let dk = v.door_knock.clone().unwrap();
    assert_eq!(dk.state, TaskState::Accepted);
    assert_eq!(dk.accepted_at, Some(secs(360)));
    let due = secs(360) + Duration::from_secs(1800);
    assert_eq!(dk.visit_due, Some(due));
    let counts = sim.router.summary(&AlertId::from(a)).unwrap().counts;
    assert_eq!(counts.door_knocks_accepted, 1);
    assert_eq!(counts.by_state[&DeliveryState::Confirmed], 0);
    assert_restores(&sim, sms_config());

    // Saying it again changes nothing and is no rejected reply.
    sim.device_event("gsm-1", inbound(phone(10), "1"));
    at(&mut sim, secs(400));
    assert!(
        matches!(last_verdict(&sim), Verdict::Duplicate { .. }),
        "{:?}",
        last_verdict(&sim)
    );
    assert_eq!(
        sim.router
            .summary(&AlertId::from(a))
            .unwrap()
            .counts
            .rejected_replies,
        0
    );

    // Past the task's own 15-minute deadline: no escalation, t1 is on the way.
    sim.run(secs(1500));
    assert_eq!(escalations(&sim, "p1").len(), 1);
    assert_eq!(view(&sim, a, "p1").door_knock.unwrap().visit_due, Some(due));

    // The visit window ends unconfirmed: d1 is sent the task, with the reason.
    sim.run(due + Duration::from_secs(1));
    let esc = escalations(&sim, "p1");
    assert_eq!(esc.len(), 2, "{esc:?}");
    assert_eq!(esc[1].0, due);
    assert_eq!((esc[1].1.as_str(), esc[1].2), ("d1", 1));
    assert!(
        esc[1].3.as_deref().is_some_and(|r| r.contains("visit")),
        "{esc:?}"
    );
    let dk = view(&sim, a, "p1").door_knock.unwrap();
    assert_eq!(
        (dk.state, dk.assignee.as_str(), dk.level),
        (TaskState::Assigned, "d1", 1)
    );
    assert_eq!(
        sim.router
            .summary(&AlertId::from(a))
            .unwrap()
            .counts
            .door_knocks_accepted,
        0
    );

    // t1 gets there after all and confirms with the task's code: the visit.
    let t = sim.now + Duration::from_secs(60);
    at(&mut sim, t);
    sim.device_event(
        "gsm-1",
        inbound(phone(10), &format!("1 {}", task_code(a, "p1"))),
    );
    sim.run(sim.now + Duration::from_secs(1));
    assert!(
        matches!(
            last_verdict(&sim),
            Verdict::DoorKnockConfirmed { ref by, late: false, .. } if by.as_str() == "t1"
        ),
        "{:?}",
        last_verdict(&sim)
    );
    let v = view(&sim, a, "p1");
    assert_eq!(v.state, DeliveryState::Confirmed);
    assert_eq!(v.door_knock.map(|k| k.state), Some(TaskState::Confirmed));
    assert_restores(&sim, sms_config());
}

/// A task accepted by its last assignee whose visit is never confirmed closes the record
/// unreached when the chain ends, saying why; a late confirmation still counts.
#[test]
fn an_unconfirmed_visit_at_the_top_of_the_chain_closes_unreached() {
    let a = "dk-2";
    let mut sim = Sim::new(
        sms_config(),
        vec![(
            secs(0),
            // t1's own record: d1 is the only one above.
            Script::Alert(plan(
                alert(a, Grade::Red, "山洪红色预警"),
                &["t1"],
                &district(),
            )),
        )],
    );
    sim.verbose = false;
    at(&mut sim, secs(330));
    assert_eq!(escalations(&sim, "t1").len(), 1);
    sim.device_event("gsm-1", inbound(phone(11), "好"));
    sim.run(secs(331));
    assert!(matches!(
        last_verdict(&sim),
        Verdict::DoorKnockAccepted { .. }
    ));
    at(&mut sim, secs(331 + 1800));
    let v = view(&sim, a, "t1");
    assert_eq!(v.state, DeliveryState::Unreached);
    assert_eq!(v.door_knock.map(|k| k.state), Some(TaskState::Accepted));
    let closed = sim.records.iter().find_map(|r| match r {
        Record::DeliveryClosed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(
        closed
            .as_deref()
            .is_some_and(|r| r.contains("visit") && r.contains("exhausted")),
        "{closed:?}"
    );
    sim.device_event(
        "gsm-1",
        inbound(phone(11), &format!("1 {}", task_code(a, "t1"))),
    );
    sim.run(sim.now + Duration::from_secs(1));
    assert!(matches!(
        last_verdict(&sim),
        Verdict::DoorKnockConfirmed { late: true, .. }
    ));
    assert_eq!(view(&sim, a, "t1").state, DeliveryState::Confirmed);
    assert_restores(&sim, sms_config());
}

/// t1 has their own (orange) warning open and, newer and of a higher grade, p1's red
/// door-knock task. A bare "1" from t1's BeiDou card — a bearer that vouches for the
/// sender — acknowledges t1's own warning, not the task; the task stays assigned. Over SMS
/// the same holds: the own warning is what a bare "1" is about.
#[test]
fn a_bare_ack_from_a_supervisor_goes_to_their_own_warning_before_a_task() {
    let mut contacts = district();
    for c in &mut contacts {
        if c.person.as_str() == "t1" {
            c.addresses.push(Address::BeidouCard("0499999".into()));
        }
    }
    let cfg = || {
        config(vec![
            device("gsm-1", Bearer::Sms, 60.0),
            device("bd-1", Bearer::Beidou, 60.0),
        ])
    };
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
            secs(200),
            Script::Alert(plan(
                alert("or-1", Grade::Orange, "地质灾害橙色预警"),
                &["t1", "p2"],
                &contacts,
            )),
        ),
    ];
    let mut sim = Sim::new(cfg(), script.clone());
    sim.verbose = false;
    at(&mut sim, secs(340));
    assert_eq!(escalations(&sim, "p1").len(), 1, "p1's task is open");
    assert_eq!(view(&sim, "or-1", "t1").state, DeliveryState::Reached);
    sim.device_event("bd-1", inbound(Address::BeidouCard("0499999".into()), "1"));
    at(&mut sim, secs(341));
    assert!(
        matches!(
            last_verdict(&sim),
            Verdict::Ack { ref alert, ref person, late: false, .. }
                if alert.as_str() == "or-1" && person.as_str() == "t1"
        ),
        "{:?}",
        last_verdict(&sim)
    );
    assert_eq!(view(&sim, "or-1", "t1").state, DeliveryState::Acknowledged);
    let p1 = view(&sim, "red-1", "p1");
    assert_eq!(p1.state, DeliveryState::Escalated);
    assert_eq!(p1.door_knock.map(|k| k.state), Some(TaskState::Assigned));
    // Now the task is all t1 has open: the next bare "1" accepts it.
    sim.device_event("bd-1", inbound(Address::BeidouCard("0499999".into()), "1"));
    sim.run(secs(342));
    assert!(
        matches!(last_verdict(&sim), Verdict::DoorKnockAccepted { .. }),
        "{:?}",
        last_verdict(&sim)
    );
    assert_restores(&sim, cfg());

    // Over SMS, with both open: the own warning, no longer "ambiguous".
    let mut sim = Sim::new(cfg(), script);
    sim.verbose = false;
    at(&mut sim, secs(340));
    sim.device_event("gsm-1", inbound(phone(10), "1"));
    sim.run(secs(341));
    assert!(
        matches!(
            last_verdict(&sim),
            Verdict::Ack { ref alert, .. } if alert.as_str() == "or-1"
        ),
        "{:?}",
        last_verdict(&sim)
    );
    assert_eq!(
        view(&sim, "red-1", "p1").door_knock.map(|k| k.state),
        Some(TaskState::Assigned)
    );
}

/// A door-knock task in a log written before tasks could be accepted has no visit window:
/// it reads with the 30-minute default.
#[test]
fn older_logs_without_a_visit_window_still_load() {
    let mut sim = Sim::new(
        sms_config(),
        vec![(
            secs(0),
            Script::Alert(plan(
                alert("old-1", Grade::Red, "山洪红色预警"),
                &["p1"],
                &district(),
            )),
        )],
    );
    sim.verbose = false;
    sim.run(secs(330));
    let old: Vec<Record> = sim
        .records
        .iter()
        .map(|r| {
            let mut j = serde_json::to_value(r).unwrap();
            if let Some(task) = j.get_mut("task").and_then(|t| t.as_object_mut()) {
                assert!(task.remove("visit_ms").is_some());
            }
            serde_json::from_value(j).unwrap()
        })
        .collect();
    let restored = Router::restore(sms_config(), old.clone(), sim.now).unwrap();
    assert_eq!(
        restored.deliveries(&AlertId::from("old-1"), None),
        sim.router.deliveries(&AlertId::from("old-1"), None)
    );
    let task = old.iter().find_map(|r| match r {
        Record::Escalated { task, .. } => Some(task.clone()),
        _ => None,
    });
    assert_eq!(
        task.map(|t| t.visit_ms),
        Some(tocsin_router::DEFAULT_VISIT_MS)
    );
}
