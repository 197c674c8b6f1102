//! Loudspeaker announcements and escalation when nothing could be sent, on a virtual clock.

mod common;

use common::*;
use tocsin_core::{Address, AlertId, Bearer, DeviceId, Grade, SpeakerId};
use tocsin_router::{
    AlertPlan, DeliveryState, Record, Router, SpeakerState, SpeakerTarget, SpeakerView,
};

fn devices() -> Vec<tocsin_router::DeviceInfo> {
    vec![
        device("gsm-1", Bearer::Sms, 10.0),
        device("spk-1", Bearer::Speaker, 6.0),
    ]
}

fn speaker(id: &str, name: &str, group: &str) -> SpeakerTarget {
    SpeakerTarget {
        id: SpeakerId::from(id),
        name: name.into(),
        town: "大庄镇".into(),
        device: DeviceId::from("spk-1"),
        address: Address::Speaker(group.into()),
    }
}

fn with_speakers(mut plan: AlertPlan) -> AlertPlan {
    plan.speakers = vec![
        speaker("s1", "王家沟村广播", "wangjiagou"),
        speaker("s2", "石门村广播", "shimen"),
    ];
    plan
}

#[allow(clippy::unwrap_used, reason = "a missing alert is a failed test")]
fn speaker_lines(router: &Router, alert: &str) -> String {
    let mut s = String::new();
    let a = AlertId::from(alert);
    let sum = router.summary(&a).unwrap();
    s.push_str(&format!("== speakers {:?}\n", sum.speakers));
    for v in router.speakers(&a).unwrap() {
        s.push_str(&format!(
            "   {} {} {:?} reports={} evidence={:?} reason={:?}\n",
            v.id, v.name, v.state, v.reports, v.evidence, v.reason
        ));
    }
    s
}

fn red_with_speakers(sim_fates: bool) -> Sim {
    let contacts = district();
    let script = vec![(
        secs(0),
        Script::Alert(with_speakers(plan(
            alert("red-1", Grade::Red, "山洪红色预警"),
            &["p1", "r1"],
            &contacts,
        ))),
    )];
    let mut sim = Sim::new(config(devices()), script);
    sim.delays.insert(Bearer::Speaker, (1_000, 30_000));
    if sim_fates {
        sim.fates
            .insert(Address::Speaker("shimen".into()), Fate::SentOnly);
    }
    sim.run(secs(3600));
    sim
}

#[test]
fn red_alert_sounds_two_speakers_one_with_evidence_one_without() {
    let sim = red_with_speakers(true);
    let a = AlertId::from("red-1");
    let views: Vec<SpeakerView> = sim.router.speakers(&a).unwrap();
    let state = |id: &str| views.iter().find(|v| v.id.as_str() == id).unwrap().state;
    assert_eq!(state("s1"), SpeakerState::Reached);
    assert_eq!(state("s2"), SpeakerState::NoEvidence);
    let s = sim.router.summary(&a).unwrap();
    assert_eq!(
        (
            s.speakers.speakers,
            s.speakers.reached,
            s.speakers.no_evidence
        ),
        (2, 1, 1)
    );
    // Speakers are never counted as people.
    assert_eq!(s.counts.targets, 2);
    // Each speaker got the warning once, on its own group, without an ack code.
    let to_speakers: Vec<_> = sim
        .sends
        .iter()
        .filter(|s| matches!(s.3, Address::Speaker(_)))
        .collect();
    assert_eq!(to_speakers.len(), 2);
    assert!(
        to_speakers
            .iter()
            .all(|s| s.4.starts_with("【红色预警】") && !s.4.contains("回复"))
    );
    insta::assert_snapshot!(
        "red_alert_speakers",
        format!("{}{}", sim.transcript, speaker_lines(&sim.router, "red-1"))
    );

    // The log alone gives the same speakers, and restoring it sends nothing again.
    let mut restored = Router::restore(config(devices()), sim.records.clone(), secs(3600)).unwrap();
    assert!(restored.poll_output().is_none());
    assert_eq!(restored.speakers(&a), sim.router.speakers(&a));
    assert_eq!(restored.summary(&a), sim.router.summary(&a));
}

#[test]
fn grades_without_speakers_and_cancellation_on_speakers() {
    let contacts = district();
    let yellow = with_speakers(plan(
        alert("yel-1", Grade::Yellow, "暴雨黄色预警"),
        &["p1"],
        &contacts,
    ));
    let red = with_speakers(plan(
        alert("red-2", Grade::Red, "山洪红色预警"),
        &["p2"],
        &contacts,
    ));
    let script = vec![
        (secs(0), Script::Alert(yellow)),
        (secs(1), Script::Alert(red)),
        // s1 reported, s2 is still streaming (hung) when the alert is cancelled.
        (secs(60), Script::Cancel(AlertId::from("red-2"))),
    ];
    let mut sim = Sim::new(config(devices()), script);
    sim.delays.insert(Bearer::Speaker, (1_000, 30_000));
    sim.fates
        .insert(Address::Speaker("shimen".into()), Fate::Hang);
    sim.run(secs(3600));
    assert!(
        sim.router
            .speakers(&AlertId::from("yel-1"))
            .unwrap()
            .is_empty(),
        "yellow sounds no speaker"
    );
    let views = sim.router.speakers(&AlertId::from("red-2")).unwrap();
    let state = |id: &str| views.iter().find(|v| v.id.as_str() == id).unwrap().state;
    assert_eq!(state("s1"), SpeakerState::Reached, "its evidence stands");
    assert_eq!(state("s2"), SpeakerState::Cancelled);
    // The playing programme is cancelled on the device; the finished one gets the notice.
    assert!(
        sim.transcript.contains("→ spk-1: cancel"),
        "{}",
        sim.transcript
    );
    let notice = sim.records.iter().any(|r| matches!(r, Record::AnnouncementStarted { speaker, notice: true, text, .. } if speaker.as_str() == "s1" && text.contains("预警解除")));
    assert!(notice, "{}", sim.transcript);
}

#[test]
fn a_speaker_device_down_waits_and_an_unknown_device_has_no_evidence() {
    let contacts = district();
    let mut p = with_speakers(plan(
        alert("red-3", Grade::Red, "山洪红色预警"),
        &["r1"],
        &contacts,
    ));
    p.speakers[1].device = DeviceId::from("spk-9");
    let script = vec![
        (
            secs(0),
            Script::Health {
                device: "spk-1".into(),
                up: false,
            },
        ),
        (secs(1), Script::Alert(p)),
        (
            secs(100),
            Script::Health {
                device: "spk-1".into(),
                up: true,
            },
        ),
    ];
    let mut sim = Sim::new(config(devices()), script);
    sim.delays.insert(Bearer::Speaker, (1_000, 30_000));
    sim.run(secs(50));
    let a = AlertId::from("red-3");
    let views = sim.router.speakers(&a).unwrap();
    assert_eq!(
        views[0].state,
        SpeakerState::Planned,
        "waits for its device"
    );
    assert_eq!(views[1].state, SpeakerState::NoEvidence);
    assert_eq!(
        views[1].reason.as_deref(),
        Some("device spk-9 is not configured")
    );
    sim.run(secs(3600));
    let views = sim.router.speakers(&a).unwrap();
    assert_eq!(views[0].state, SpeakerState::Reached);
    assert!(views[0].since >= secs(100));
}

#[test]
fn nothing_sent_in_the_window_escalates_anyway() {
    let contacts = district();
    let script = vec![
        (
            secs(0),
            Script::Health {
                device: "gsm-1".into(),
                up: false,
            },
        ),
        (
            secs(1),
            Script::Alert(plan(
                alert("red-4", Grade::Red, "山洪红色预警"),
                &["p1", "r1"],
                &contacts,
            )),
        ),
    ];
    let mut sim = Sim::new(config(vec![device("gsm-1", Bearer::Sms, 10.0)]), script);
    sim.run(secs(900));
    let a = AlertId::from("red-4");
    let escalated = sim.records.iter().find_map(|r| match r {
        Record::Escalated {
            at,
            person,
            task,
            reason,
            ..
        } => Some((
            *at,
            person.to_string(),
            task.assignee.to_string(),
            reason.clone(),
        )),
        _ => None,
    });
    assert_eq!(
        escalated,
        Some((
            secs(301),
            "p1".into(),
            "t1".into(),
            Some("not attempted: no device could send in time".into())
        ))
    );
    let views = sim.router.deliveries(&a, None).unwrap();
    let p1 = views.iter().find(|d| d.person.as_str() == "p1").unwrap();
    assert_eq!(p1.state, DeliveryState::Escalated);
    assert_eq!(p1.escalated_to.as_ref().map(|p| p.as_str()), Some("t1"));
    assert!(
        p1.attempts.is_empty(),
        "nothing could go out, not even the door-knock task"
    );
    // The resident needs no ack: never closed before an attempt.
    let r1 = views.iter().find(|d| d.person.as_str() == "r1").unwrap();
    assert_eq!(r1.state, DeliveryState::Planned);
    assert!(sim.sends.is_empty());
    // The log alone gives the same state.
    let restored = Router::restore(
        config(vec![device("gsm-1", Bearer::Sms, 10.0)]),
        sim.records.clone(),
        secs(900),
    );
    let p1_again = restored
        .unwrap()
        .deliveries(&a, None)
        .unwrap()
        .into_iter()
        .find(|d| d.person.as_str() == "p1")
        .unwrap();
    assert_eq!(p1_again.state, DeliveryState::Escalated);

    // The modem comes back: the queued warning and the task both go out.
    let mut sim = Sim::new(
        config(vec![device("gsm-1", Bearer::Sms, 10.0)]),
        vec![
            (
                secs(0),
                Script::Health {
                    device: "gsm-1".into(),
                    up: false,
                },
            ),
            (
                secs(1),
                Script::Alert(plan(
                    alert("red-4", Grade::Red, "山洪红色预警"),
                    &["p1", "r1"],
                    &contacts,
                )),
            ),
            (
                secs(400),
                Script::Health {
                    device: "gsm-1".into(),
                    up: true,
                },
            ),
            // p1 answers 30 s after the warning finally reached them: in time for them,
            // though the record was escalated before anything could be sent.
            reply(430, "gsm-1", phone(1), format!("1 {}", code("red-4", "p1"))),
        ],
    );
    sim.run(secs(410));
    let to: Vec<String> = sim.sends.iter().map(|s| s.3.to_string()).collect();
    assert!(to.contains(&phone(1).to_string()), "{to:?}");
    assert!(
        to.contains(&phone(10).to_string()),
        "the task to t1: {to:?}"
    );
    sim.run(secs(440));
    let late = sim.records.iter().find_map(|r| match r {
        Record::Reply {
            verdict: tocsin_router::Verdict::Ack { person, late, .. },
            ..
        } if person.as_str() == "p1" => Some(*late),
        _ => None,
    });
    assert_eq!(late, Some(false), "answered within their own window");
}

#[test]
fn nothing_sent_and_no_supervisor_keeps_the_warning_queued() {
    let alone = vec![contact(
        "h1",
        "孤村村长",
        tocsin_core::Role::VillageHead,
        "大庄镇",
        vec![phone(901)],
        None,
    )];
    let dev = || config(vec![device("gsm-1", Bearer::Sms, 10.0)]);
    let script = vec![
        (
            secs(0),
            Script::Health {
                device: "gsm-1".into(),
                up: false,
            },
        ),
        (
            secs(1),
            Script::Alert(plan(
                alert("red-5", Grade::Red, "山洪红色预警"),
                &["h1"],
                &alone,
            )),
        ),
        (
            secs(600),
            Script::Health {
                device: "gsm-1".into(),
                up: true,
            },
        ),
    ];
    let mut sim = Sim::new(dev(), script);
    sim.run(secs(599));
    let a = AlertId::from("red-5");
    let h1 = |sim: &Sim| {
        sim.router
            .deliveries(&a, None)
            .unwrap()
            .into_iter()
            .find(|d| d.person.as_str() == "h1")
            .unwrap()
    };
    // Past the window with nothing sent and nobody to escalate to: still open, not
    // closed unreached (which would drop the queued warning).
    assert_eq!(h1(&sim).state, DeliveryState::Planned);
    assert!(sim.sends.is_empty());
    // The modem comes back: the warning goes out after all.
    sim.run(secs(700));
    assert!(!sim.sends.is_empty(), "the queued warning was sent");
    assert!(!h1(&sim).attempts.is_empty());
}
