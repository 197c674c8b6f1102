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

/// Who is where, acked when and late or not (a restore re-sends attempts in flight, so
/// attempts are left out).
fn acks_of(r: &Router) -> Vec<(String, DeliveryState, Option<Timestamp>, bool)> {
    r.deliveries(&AlertId::from("red-1"), None)
        .unwrap()
        .into_iter()
        .map(|d| (d.person.to_string(), d.state, d.acked_at, d.late))
        .collect()
}

fn relayed(person: &str, at: Timestamp) -> RelayedAck {
    RelayedAck {
        alert: short_id(&AlertId::from("red-1")),
        person: PersonId::from(person),
        code: code("red-1", person),
        answered_at: at,
        evidence: "batch".into(),
    }
}

/// The verdicts of the replies recorded among `recs`.
fn verdicts(recs: &[Record]) -> Vec<Verdict> {
    recs.iter()
        .filter_map(|x| match x {
            Record::Reply { verdict, .. } => Some(verdict.clone()),
            _ => None,
        })
        .collect()
}

/// The link to the kit is down for the first ten minutes: the alert reaches the kit only
/// when the relay goes out at 600 s, long after p1's own SMS window (0–300 s) closed. The
/// kit's clock is slow and says p1 answered at 120 s: the answer cannot be earlier than
/// the relay, so it counts as given at 600 s — late.
#[test]
fn a_relayed_ack_is_never_earlier_than_the_relay() {
    let mut r = Router::new(config(devices()));
    event(
        &mut r,
        secs(0),
        "bd-1",
        DriverEvent::Health(tocsin_channel::Health {
            up: false,
            ..Default::default()
        }),
    );
    r.handle_alert(secs(0), district_plan()).unwrap();
    let (mut log, frames, _) = drain(&mut r);
    assert!(frames.is_empty(), "the link is down");
    event(
        &mut r,
        secs(600),
        "bd-1",
        DriverEvent::Health(tocsin_channel::Health {
            up: true,
            ..Default::default()
        }),
    );
    let (recs, frames, _) = drain(&mut r);
    log.extend(recs);
    assert_eq!(frames.len(), 1, "the relay goes when the link is back");
    r.handle_relayed_acks(
        secs(900),
        &DeviceId::from("bd-1"),
        &kit_card(),
        vec![relayed("p1", secs(120))],
    );
    let (recs, _, _) = drain(&mut r);
    log.extend(recs);
    let v = verdicts(&log);
    assert!(
        matches!(&v[..], [Verdict::Ack { person, late: true, .. }] if person.as_str() == "p1"),
        "{v:?}"
    );
    let p1 = r
        .deliveries(&AlertId::from("red-1"), None)
        .unwrap()
        .into_iter()
        .find(|d| d.person.as_str() == "p1")
        .unwrap();
    assert_eq!(p1.state, DeliveryState::Acknowledged);
    assert!(p1.late);
    // A kit clock ahead of the district's is held to now.
    r.handle_relayed_acks(
        secs(910),
        &DeviceId::from("bd-1"),
        &kit_card(),
        vec![relayed("p2", secs(5000))],
    );
    let (recs, _, _) = drain(&mut r);
    log.extend(recs);
    let at = recs_at_of_ack(&log, "p2");
    assert_eq!(at, Some(secs(910)));
    let back = Router::restore(config(devices()), log, secs(920)).unwrap();
    assert_eq!(acks_of(&back), acks_of(&r));
}

/// When the ack of `person` was recorded (the record's acked_at).
fn recs_at_of_ack(log: &[Record], person: &str) -> Option<Timestamp> {
    log.iter().find_map(|x| match x {
        Record::Reply {
            at,
            verdict: Verdict::Ack { person: p, .. },
            ..
        } if p.as_str() == person => Some(*at),
        _ => None,
    })
}

/// An update re-notifies everyone (new instruction text) after the kit already had the
/// alert: the district relays the update frame with the new text. The kit's acks carry no
/// version, so an ack answered before the update frame went out is the first version's
/// (kept on record, the record stays open, and it does not confirm the update frame) and
/// one answered after it is the new version's.
#[test]
fn a_re_notified_record_at_a_kit_is_relayed_again_and_acked_by_version() {
    let mut r = Router::new(config(devices()));
    r.handle_alert(secs(0), district_plan()).unwrap();
    let (mut log, frames, _) = drain(&mut r);
    let first = frames[0].1.attempt;
    event(
        &mut r,
        secs(5),
        "bd-1",
        DriverEvent::Sent {
            attempt: first,
            reference: "a".into(),
        },
    );
    let (recs, _, _) = drain(&mut r);
    log.extend(recs);

    let mut updated = district_plan();
    updated.alert.text = "水位继续上涨，立即撤离到高处".into();
    r.handle_update(secs(400), updated).unwrap();
    let (recs, frames, _) = drain(&mut r);
    log.extend(recs);
    let update: Vec<_> = frames
        .iter()
        .filter(|(d, _)| d.as_str() == "bd-1")
        .collect();
    assert_eq!(update.len(), 1, "{frames:?}");
    let Frame::Update(u) = Frame::decode(&update[0].1.bytes).unwrap() else {
        panic!("not an update frame");
    };
    assert_eq!(u.replaces, ShortAlertId::derive(&AlertId::from("red-1")));
    assert!(u.alert.text.starts_with("水位继续上涨"), "{}", u.alert.text);
    event(
        &mut r,
        secs(410),
        "bd-1",
        DriverEvent::Sent {
            attempt: update[0].1.attempt,
            reference: "u".into(),
        },
    );
    let (recs, _, _) = drain(&mut r);
    log.extend(recs);
    assert_eq!(relay_state(&r), RelayState::Sent);

    // p1 answered at the kit at 300 s, before the update; the batch arrives at 500 s.
    r.handle_relayed_acks(
        secs(500),
        &DeviceId::from("bd-1"),
        &kit_card(),
        vec![relayed("p1", secs(300))],
    );
    let (recs, _, _) = drain(&mut r);
    log.extend(recs.clone());
    let v = verdicts(&recs);
    assert!(
        matches!(&v[..], [Verdict::Ack { person, version: 1, .. }] if person.as_str() == "p1"),
        "{v:?}"
    );
    assert_ne!(
        state_of(&r, "p1"),
        DeliveryState::Acknowledged,
        "v2 is open"
    );
    assert_eq!(
        relay_state(&r),
        RelayState::Sent,
        "an answer to the first version says nothing of the update"
    );

    // p2 answered at 450 s, after the update frame went out: the new version's ack.
    r.handle_relayed_acks(
        secs(520),
        &DeviceId::from("bd-1"),
        &kit_card(),
        vec![relayed("p2", secs(450))],
    );
    let (recs, _, _) = drain(&mut r);
    log.extend(recs.clone());
    let v = verdicts(&recs);
    assert!(
        matches!(&v[..], [Verdict::Ack { person, version: 2, late: false, .. }] if person.as_str() == "p2"),
        "{v:?}"
    );
    assert_eq!(state_of(&r, "p2"), DeliveryState::Acknowledged);
    assert_eq!(relay_state(&r), RelayState::Confirmed);

    // p1 answers the new version at the kit too.
    r.handle_relayed_acks(
        secs(530),
        &DeviceId::from("bd-1"),
        &kit_card(),
        vec![relayed("p1", secs(470))],
    );
    let (recs, _, _) = drain(&mut r);
    log.extend(recs.clone());
    assert!(matches!(
        &verdicts(&recs)[..],
        [Verdict::Ack { version: 2, .. }]
    ));
    assert_eq!(state_of(&r, "p1"), DeliveryState::Acknowledged);

    let back = Router::restore(config(devices()), log, secs(540)).unwrap();
    assert_eq!(acks_of(&back), acks_of(&r));
    assert_eq!(
        back.relays(&AlertId::from("red-1")),
        r.relays(&AlertId::from("red-1"))
    );
}

/// A kit's ack for someone the district did not target in the alert (the kit serves its
/// own valley) is recorded as rejected `not_relayed` but is no forgery: it does not raise
/// the alert's rejected replies. One for a target the kit does not serve still does.
#[test]
fn a_kits_ack_for_someone_not_targeted_is_not_counted_as_rejected() {
    let mut r = Router::new(config(devices()));
    r.handle_alert(secs(0), district_plan()).unwrap();
    let (mut log, _, _) = drain(&mut r);
    r.handle_relayed_acks(
        secs(60),
        &DeviceId::from("bd-1"),
        &kit_card(),
        vec![relayed("p9", secs(50)), relayed("p3", secs(51))],
    );
    let (recs, _, _) = drain(&mut r);
    log.extend(recs.clone());
    let v = verdicts(&recs);
    assert!(
        matches!(
            &v[..],
            [
                Verdict::Rejected { rejection: Rejection::NotRelayed { person: a, .. }, .. },
                Verdict::Rejected { rejection: Rejection::NotRelayed { person: b, .. }, .. },
            ] if a.as_str() == "p9" && b.as_str() == "p3"
        ),
        "{v:?}"
    );
    let rejected = |r: &Router| {
        r.summary(&AlertId::from("red-1"))
            .unwrap()
            .counts
            .rejected_replies
    };
    assert_eq!(rejected(&r), 1, "only p3's");
    let back = Router::restore(config(devices()), log, secs(70)).unwrap();
    assert_eq!(rejected(&back), 1);
}

/// On the kit: p1's ack went up; then the district's update re-notified p1 (the kit's
/// record has a new version), and p1's new ack goes up too.
#[test]
fn a_kit_sends_the_new_versions_ack_up_after_an_update() {
    let mut r = Router::new(config(devices()));
    let mut p = kit_plan();
    p.alert.accepted_at = t(0);
    r.handle_alert(t(0), p.clone()).unwrap();
    let (mut log, _, _) = drain(&mut r);
    sms_ack(&mut r, t(30), 1, "p1");
    let (recs, frames, _) = drain(&mut r);
    log.extend(recs);
    assert_eq!(acks_in(&frames[0].1), vec![(0xABCDEF, "p1".to_owned())]);
    event(
        &mut r,
        t(40),
        "bd-1",
        DriverEvent::Sent {
            attempt: frames[0].1.attempt,
            reference: "ok".into(),
        },
    );
    let (recs, _, _) = drain(&mut r);
    log.extend(recs);

    p.alert.text = "水位继续上涨，立即撤离".into();
    r.handle_update(t(100), p).unwrap();
    let (recs, frames, _) = drain(&mut r);
    log.extend(recs);
    assert!(
        frames.iter().all(|(d, _)| d.as_str() != "bd-1"),
        "nothing new to send up yet"
    );
    let v2 = tocsin_router::version_code(
        &key(),
        &AlertId::from("uplink-bd-0242286-abcdef"),
        &PersonId::from("p1"),
        2,
    );
    event(
        &mut r,
        t(160),
        "gsm-1",
        DriverEvent::Inbound {
            from: phone(1),
            text: format!("1 {v2}"),
            evidence: String::new(),
            sent_at: None,
            receipt: None,
            in_reply_to: None,
        },
    );
    let (recs, frames, _) = drain(&mut r);
    log.extend(recs);
    let up: Vec<_> = frames
        .iter()
        .filter(|(d, _)| d.as_str() == "bd-1")
        .collect();
    assert_eq!(up.len(), 1, "the new version's ack goes up");
    assert_eq!(acks_in(&up[0].1), vec![(0xABCDEF, "p1".to_owned())]);
    let Frame::Acks(b) = Frame::decode(&up[0].1.bytes).unwrap() else {
        unreachable!()
    };
    assert_eq!(b.time_of(&b.acks[0]), t(160));
    assert_eq!(b.acks[0].code, v2);
    // A restart with the batch in flight sends it again, and only it.
    let mut back = Router::restore(config(devices()), log, t(170)).unwrap();
    let (_, frames, _) = drain(&mut back);
    let up: Vec<_> = frames
        .iter()
        .filter(|(d, _)| d.as_str() == "bd-1")
        .collect();
    assert_eq!(up.len(), 1);
    assert_eq!(acks_in(&up[0].1), vec![(0xABCDEF, "p1".to_owned())]);
}

#[test]
fn an_update_that_only_adds_a_reference_sends_the_kit_nothing_and_the_cancel_goes_at_once() {
    let id = AlertId::from("red-1");
    let mut issued = district_plan();
    issued.alert.reference = Some("qx,A-1,2024-07-01T10:30:00+08:00".into());
    let mut r = Router::new(config(devices()));
    r.handle_alert(secs(0), issued.clone()).unwrap();
    let (mut log, frames, _) = drain(&mut r);
    event(
        &mut r,
        secs(5),
        "bd-1",
        DriverEvent::Sent {
            attempt: frames[0].1.attempt,
            reference: "fk".into(),
        },
    );
    // The SMS queue has caught up by then: what the update puts out is its own.
    r.handle_timeout(secs(60));
    log.extend(drain(&mut r).0);
    assert_eq!(relay_state(&r), RelayState::Sent);

    // The same plan, now also known under a CAP Update's reference.
    let mut known_as = r.plan(&id).unwrap().clone();
    assert_eq!(known_as, issued);
    known_as.alert.reference =
        Some("qx,A-1,2024-07-01T10:30:00+08:00 qx,U-1,2024-07-01T11:00:00+08:00".into());
    r.handle_update(secs(60), known_as.clone()).unwrap();
    let (recs, frames, other) = drain(&mut r);
    assert!(frames.is_empty(), "nothing new for the kit: {frames:?}");
    assert!(other.is_empty(), "{other:?}");
    assert_eq!(recs.len(), 1, "only the update itself: {recs:?}");
    assert!(matches!(&recs[0], Record::AlertUpdated { plan, .. } if *plan == known_as));
    log.extend(recs);
    assert_eq!(relay_state(&r), RelayState::Sent);
    assert_eq!(r.plan(&id), Some(&known_as));

    // After a restart too: the reference is kept and the kit is owed nothing.
    let mut back = Router::restore(config(devices()), log, secs(61)).unwrap();
    let (_, frames, _) = drain(&mut back);
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(
        back.summary(&id).unwrap().alert.reference,
        known_as.alert.reference
    );
    assert_eq!(relay_state(&back), RelayState::Sent);
    // The cancel is the next frame the kit gets.
    back.handle_cancel(secs(70), &id, "ops").unwrap();
    let (_, frames, _) = drain(&mut back);
    assert_eq!(frames.len(), 1);
    assert!(matches!(
        Frame::decode(&frames[0].1.bytes),
        Ok(Frame::Cancel(_))
    ));
}
