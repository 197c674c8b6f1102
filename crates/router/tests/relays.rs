//! Field-kit relays (district side) and the uplink (kit side), driving the router directly
//! on a virtual clock: the exact frames handed to the link device, the verdicts on a kit's
//! relayed acks, retries, cancellation, and a restart in the middle.

#![allow(clippy::unwrap_used, reason = "test: a failed unwrap is a failed test")]

mod common;

use common::*;
use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent, FrameOut};
use tocsin_compact::{AreaRef, Frame, ShortAlertId};
use tocsin_core::{Address, AlertId, AreaId, Bearer, DeviceId, Grade, PersonId, Role, Timestamp};
use tocsin_router::relays::short_id;
use tocsin_router::{
    AlertPlan, DeliveryState, KitTarget, Output, Record, Rejection, RelayState, RelayedAck, Router,
    Uplink, Verdict,
};

fn devices() -> Vec<tocsin_router::DeviceInfo> {
    vec![
        device("gsm-1", Bearer::Sms, 10.0),
        device("bd-1", Bearer::Beidou, 1.0),
    ]
}

fn kit_card() -> Address {
    Address::BeidouCard("0242407".into())
}

fn district_card() -> Address {
    Address::BeidouCard("0242286".into())
}

fn people() -> Vec<tocsin_router::Contact> {
    (1..=3)
        .map(|n| {
            contact(
                &format!("p{n}"),
                &format!("村民{n}"),
                Role::VillageHead,
                "上游镇",
                vec![phone(n)],
                None,
            )
        })
        .collect()
}

fn district_plan() -> AlertPlan {
    let mut p = plan(
        alert("red-1", Grade::Red, "山洪红色预警"),
        &["p1", "p2", "p3"],
        &people(),
    );
    p.kits = vec![KitTarget {
        kit: "upper".into(),
        device: DeviceId::from("bd-1"),
        address: kit_card(),
        area: Some(AreaId::from("v-upper")),
        people: vec![PersonId::from("p1"), PersonId::from("p2")],
        max_bytes: 77,
    }];
    p
}

/// What the router put out: records, frames handed to devices, other commands.
type Drained = (
    Vec<Record>,
    Vec<(DeviceId, FrameOut)>,
    Vec<(DeviceId, DriverCommand)>,
);

/// Every output so far: the records, and the frames handed to devices.
fn drain(r: &mut Router) -> Drained {
    let (mut recs, mut frames, mut other) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(o) = r.poll_output() {
        match o {
            Output::Record(rec) => recs.push(rec),
            Output::Command {
                device,
                command: DriverCommand::SendFrame(f),
            } => frames.push((device, f)),
            Output::Command { device, command } => other.push((device, command)),
        }
    }
    (recs, frames, other)
}

fn event(r: &mut Router, now: Timestamp, device: &str, event: DriverEvent) {
    r.handle_device_event(
        now,
        DeviceEvent {
            device: DeviceId::from(device),
            at: now,
            event,
        },
    );
}

fn relay_state(r: &Router) -> RelayState {
    r.relays(&AlertId::from("red-1")).unwrap()[0].state
}

fn state_of(r: &Router, person: &str) -> DeliveryState {
    r.deliveries(&AlertId::from("red-1"), None)
        .unwrap()
        .into_iter()
        .find(|d| d.person.as_str() == person)
        .unwrap()
        .state
}

#[test]
fn an_alert_goes_to_its_kit_as_one_frame_and_relayed_acks_count_only_for_its_people() {
    let mut r = Router::new(config(devices()));
    r.handle_alert(secs(0), district_plan()).unwrap();
    let (recs, frames, _) = drain(&mut r);
    assert!(
        recs.iter()
            .any(|x| matches!(x, Record::RelayStarted { kit, .. } if kit == "upper"))
    );
    assert_eq!(frames.len(), 1, "one frame for the kit, not one per person");
    let (dev, f) = &frames[0];
    assert_eq!(dev.as_str(), "bd-1");
    assert_eq!(f.to, kit_card());
    assert!(f.bytes.len() <= 77);
    let Frame::Alert(a) = Frame::decode(&f.bytes).unwrap() else {
        panic!("not an alert frame");
    };
    assert_eq!(a.id, ShortAlertId::derive(&AlertId::from("red-1")));
    assert_eq!(a.grade, Grade::Red);
    assert_eq!(a.area, AreaRef::Named("v-upper".into()));
    assert_eq!(a.text, "请立即组织转移");
    assert_eq!(relay_state(&r), RelayState::Sending);

    event(
        &mut r,
        secs(5),
        "bd-1",
        DriverEvent::Sent {
            attempt: f.attempt,
            reference: "fk".into(),
        },
    );
    assert_eq!(relay_state(&r), RelayState::Sent);
    drain(&mut r);

    let sid = short_id(&AlertId::from("red-1"));
    let ack = |person: &str, alert: u32, at: i64| RelayedAck {
        alert,
        person: PersonId::from(person),
        code: code("red-1", person),
        answered_at: secs(at),
        evidence: "batch".into(),
    };
    // p1 answered at the kit at 60 s; the batch arrives at 700 s, after the 5-minute
    // window: the ack counts as in time, by when they answered.
    r.handle_relayed_acks(
        secs(700),
        &DeviceId::from("bd-1"),
        &kit_card(),
        vec![
            ack("p1", sid, 60),
            ack("p3", sid, 61),
            ack("p2", sid ^ 1, 62),
        ],
    );
    let (recs, _, _) = drain(&mut r);
    let verdicts: Vec<&Verdict> = recs
        .iter()
        .filter_map(|x| match x {
            Record::Reply { verdict, .. } => Some(verdict),
            _ => None,
        })
        .collect();
    assert_eq!(verdicts.len(), 3);
    assert!(
        matches!(verdicts[0], Verdict::Ack { person, late: false, .. } if person.as_str() == "p1"),
        "{:?}",
        verdicts[0]
    );
    // p3 is a target, but not the kit's: a kit cannot ack for them.
    assert!(matches!(
        verdicts[1],
        Verdict::Rejected { rejection: Rejection::NotRelayed { kit, person }, .. }
            if kit == "upper" && person.as_str() == "p3"
    ));
    // An alert this kit was never sent.
    assert!(matches!(
        verdicts[2],
        Verdict::Rejected { rejection: Rejection::NotRelayed { .. }, alerts } if alerts.is_empty()
    ));
    assert_eq!(state_of(&r, "p1"), DeliveryState::Acknowledged);
    assert_ne!(state_of(&r, "p3"), DeliveryState::Acknowledged);
    assert_eq!(relay_state(&r), RelayState::Confirmed);
    let view = &r.relays(&AlertId::from("red-1")).unwrap()[0];
    assert_eq!((view.people, view.acks), (2, 1));

    // The same ack again counts once.
    r.handle_relayed_acks(
        secs(710),
        &DeviceId::from("bd-1"),
        &kit_card(),
        vec![ack("p1", sid, 60)],
    );
    let (recs, _, _) = drain(&mut r);
    assert!(recs.iter().any(|x| matches!(
        x,
        Record::Reply {
            verdict: Verdict::Duplicate { .. },
            ..
        }
    )));

    // Another sender naming the same alert is no kit of this alert.
    r.handle_relayed_acks(
        secs(720),
        &DeviceId::from("bd-1"),
        &Address::BeidouCard("0999999".into()),
        vec![ack("p2", sid, 62)],
    );
    let (recs, _, _) = drain(&mut r);
    assert!(recs.iter().any(|x| matches!(
        x,
        Record::Reply {
            verdict: Verdict::Rejected {
                rejection: Rejection::NotRelayed { .. },
                ..
            },
            ..
        }
    )));
    assert_ne!(state_of(&r, "p2"), DeliveryState::Acknowledged);
}

#[test]
fn a_failed_relay_is_retried_with_a_pause_and_a_cancel_follows_the_alert() {
    let mut r = Router::new(config(devices()));
    r.handle_alert(secs(0), district_plan()).unwrap();
    let (_, frames, _) = drain(&mut r);
    event(
        &mut r,
        secs(2),
        "bd-1",
        DriverEvent::Failed {
            attempt: frames[0].1.attempt,
            retryable: true,
            reason: "no signal".into(),
        },
    );
    assert_eq!(relay_state(&r), RelayState::Planned);
    let (_, frames, _) = drain(&mut r);
    assert!(frames.is_empty(), "no retry before the pause");
    let due = r.poll_timeout().unwrap();
    assert!(due <= secs(32), "{due:?}");
    r.handle_timeout(secs(32));
    let (_, frames, _) = drain(&mut r);
    assert_eq!(frames.len(), 1, "retried after 30 s");
    assert!(matches!(
        Frame::decode(&frames[0].1.bytes),
        Ok(Frame::Alert(_))
    ));
    event(
        &mut r,
        secs(40),
        "bd-1",
        DriverEvent::Sent {
            attempt: frames[0].1.attempt,
            reference: "x".into(),
        },
    );
    drain(&mut r);

    r.handle_cancel(secs(100), &AlertId::from("red-1"), "ops")
        .unwrap();
    let (recs, frames, _) = drain(&mut r);
    assert_eq!(frames.len(), 1);
    let Frame::Cancel(c) = Frame::decode(&frames[0].1.bytes).unwrap() else {
        panic!("not a cancel frame");
    };
    assert_eq!(c.id, ShortAlertId::derive(&AlertId::from("red-1")));
    assert!(recs.iter().any(|x| matches!(
        x,
        Record::RelayStarted {
            frame: tocsin_router::RelayFrame::Cancel,
            ..
        }
    )));
}

fn kit_plan() -> AlertPlan {
    let mut p = plan(
        alert("uplink-bd-0242286-abcdef", Grade::Red, "山洪预警"),
        &["p1", "p2"],
        &people(),
    );
    p.uplink = Some(Box::new(Uplink {
        device: DeviceId::from("bd-1"),
        to: district_card(),
        short_id: 0xABCDEF,
        max_bytes: 77,
    }));
    p
}

fn sms_ack(r: &mut Router, now: Timestamp, n: u32, person: &str) {
    event(
        r,
        now,
        "gsm-1",
        DriverEvent::Inbound {
            from: phone(n),
            text: format!("1 {}", code("uplink-bd-0242286-abcdef", person)),
            evidence: String::new(),
            sent_at: None,
            receipt: None,
            in_reply_to: None,
        },
    );
}

/// Virtual time on a kit: frames count seconds from 2024-01-01, so the kit's clock is
/// after that.
fn t(s: i64) -> Timestamp {
    Timestamp(tocsin_compact::frame::EPOCH.as_millis() + s * 1000)
}

fn acks_in(f: &FrameOut) -> Vec<(u32, String)> {
    let Frame::Acks(b) = Frame::decode(&f.bytes).unwrap() else {
        panic!("not an ack batch");
    };
    b.acks
        .iter()
        .map(|a| (a.alert.get(), a.person.clone()))
        .collect()
}

#[test]
fn a_kit_sends_acks_up_in_batches_one_in_flight_and_again_after_a_restart() {
    let mut r = Router::new(config(devices()));
    let mut p = kit_plan();
    p.alert.accepted_at = t(0);
    r.handle_alert(t(0), p).unwrap();
    let (mut log, frames, _) = drain(&mut r);
    assert!(frames.is_empty(), "nothing goes up before an ack");

    sms_ack(&mut r, t(30), 1, "p1");
    let (recs, frames, _) = drain(&mut r);
    log.extend(recs);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].1.to, district_card());
    assert_eq!(acks_in(&frames[0].1), vec![(0xABCDEF, "p1".to_owned())]);
    let Frame::Acks(b) = Frame::decode(&frames[0].1.bytes).unwrap() else {
        unreachable!()
    };
    assert_eq!(b.time_of(&b.acks[0]), t(30), "the time they answered");
    assert_eq!(b.acks[0].code, code("uplink-bd-0242286-abcdef", "p1"));

    // p2 answers while the first batch waits for the card's next slot: it waits too.
    sms_ack(&mut r, t(35), 2, "p2");
    let (recs, frames2, _) = drain(&mut r);
    log.extend(recs);
    assert!(frames2.is_empty(), "one batch in flight per alert");

    // The gateway restarts before the link reported: both go up again, together.
    let mut r2 = Router::restore(config(devices()), log.clone(), t(40)).unwrap();
    let (recs, frames, _) = drain(&mut r2);
    log.extend(recs);
    assert_eq!(frames.len(), 1);
    let mut got = acks_in(&frames[0].1);
    got.sort();
    assert_eq!(got, vec![(0xABCDEF, "p1".into()), (0xABCDEF, "p2".into())]);
    event(
        &mut r2,
        t(60),
        "bd-1",
        DriverEvent::Sent {
            attempt: frames[0].1.attempt,
            reference: "ok".into(),
        },
    );
    let (recs, frames, _) = drain(&mut r2);
    log.extend(recs);
    assert!(frames.is_empty(), "nothing left to send");
    // After another restart nothing goes up again.
    let mut r3 = Router::restore(config(devices()), log, t(90)).unwrap();
    let (_, frames, _) = drain(&mut r3);
    assert!(frames.is_empty(), "{frames:?}");
}
