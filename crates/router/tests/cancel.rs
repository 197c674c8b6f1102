//! An ack on one bearer ends every other ladder: when a record becomes final, what its
//! drivers still hold (a call ringing or in progress, a send not yet reported) is recorded
//! cancelled and the drivers are told to stop it — but not when the record merely
//! escalates, since the person may still answer.

#![allow(
    clippy::unwrap_used,
    reason = "test harness: a failed unwrap is a failed test"
)]

mod common;

use common::*;
use tocsin_channel::{DeviceEvent, DriverCommand, DriverEvent};
use tocsin_core::{AlertId, AttemptId, Bearer, DeviceId, Grade, PersonId, Role, Timestamp};
use tocsin_router::{DeliveryState, Output, Purpose, Record, Router};

/// SMS is delivered at once; voice calls ring and never end (until cancelled).
struct Drive {
    router: Router,
    records: Vec<Record>,
    /// Every command, with the index of the record it followed.
    commands: Vec<(usize, DeviceId, DriverCommand)>,
    now: Timestamp,
}

impl Drive {
    fn new(supervisor: Option<&str>) -> Drive {
        let devices = vec![
            device("gsm-1", Bearer::Sms, 60.0),
            device("voice-1", Bearer::Voice, 60.0),
        ];
        let contacts = vec![
            contact(
                "p1",
                "张伟",
                Role::VillageHead,
                "大庄镇",
                vec![phone(1)],
                supervisor,
            ),
            contact(
                "t1",
                "王强",
                Role::TownOfficial,
                "大庄镇",
                vec![phone(9)],
                None,
            ),
        ];
        let mut d = Drive {
            router: Router::new(config(devices)),
            records: Vec::new(),
            commands: Vec::new(),
            now: Timestamp::ZERO,
        };
        let p = plan(
            alert("red-1", Grade::Red, "山洪红色预警"),
            &["p1"],
            &contacts,
        );
        d.router.handle_alert(d.now, p).unwrap();
        d.drain();
        d
    }

    /// Drains the router and plays the fake devices until nothing more happens now.
    fn drain(&mut self) {
        loop {
            let mut events = Vec::new();
            while let Some(o) = self.router.poll_output() {
                match o {
                    Output::Record(r) => self.records.push(r),
                    Output::Command { device, command } => {
                        if let DriverCommand::Send(s) = &command {
                            let ev = if device.as_str() == "gsm-1" {
                                vec![
                                    DriverEvent::Sent {
                                        attempt: s.attempt,
                                        reference: format!("mr{}", s.attempt.0),
                                    },
                                    DriverEvent::Delivered {
                                        attempt: s.attempt,
                                        evidence: "status-report".into(),
                                    },
                                ]
                            } else {
                                vec![DriverEvent::Accepted { attempt: s.attempt }]
                            };
                            events.extend(ev.into_iter().map(|e| (device.clone(), e)));
                        }
                        self.commands.push((self.records.len(), device, command));
                    }
                }
            }
            if events.is_empty() {
                return;
            }
            for (device, event) in events {
                self.event(&device, event);
            }
        }
    }

    fn event(&mut self, device: &DeviceId, event: DriverEvent) {
        self.router.handle_device_event(
            self.now,
            DeviceEvent {
                device: device.clone(),
                at: self.now,
                event,
            },
        );
    }

    fn reply(&mut self, text: &str) {
        self.event(
            &DeviceId::from("gsm-1"),
            DriverEvent::Inbound {
                from: phone(1),
                text: text.into(),
                evidence: "pdu".into(),
                sent_at: None,
                receipt: None,
                in_reply_to: None,
            },
        );
        self.drain();
    }

    /// Steps the virtual clock through every timer up to `until`.
    fn run(&mut self, until: Timestamp) {
        while let Some(t) = self.router.poll_timeout().filter(|t| *t <= until) {
            self.now = self.now.max(t);
            self.router.handle_timeout(self.now);
            self.drain();
        }
        self.now = until;
    }

    fn cancelled(&self) -> Vec<(AttemptId, String, String)> {
        self.records
            .iter()
            .filter_map(|r| match r {
                Record::AttemptCancelled {
                    attempt,
                    device,
                    reason,
                    ..
                } => Some((*attempt, device.to_string(), reason.clone())),
                _ => None,
            })
            .collect()
    }

    fn cancel_commands(&self) -> Vec<(AttemptId, String)> {
        self.commands
            .iter()
            .filter_map(|(_, d, c)| match c {
                DriverCommand::Cancel(a) => Some((*a, d.to_string())),
                _ => None,
            })
            .collect()
    }

    /// Attempts by purpose and device: (attempt, purpose, device).
    fn started(&self) -> Vec<(AttemptId, Purpose, String)> {
        self.records
            .iter()
            .filter_map(|r| match r {
                Record::AttemptStarted {
                    attempt,
                    purpose,
                    device,
                    ..
                } => Some((*attempt, purpose.clone(), device.to_string())),
                _ => None,
            })
            .collect()
    }

    fn state(&self) -> DeliveryState {
        self.router
            .deliveries(&AlertId::from("red-1"), None)
            .unwrap()
            .into_iter()
            .find(|d| d.person == PersonId::from("p1"))
            .unwrap()
            .state
    }
}

#[test]
fn an_sms_ack_cancels_the_call_still_ringing_and_its_late_outcome_changes_nothing() {
    let mut d = Drive::new(None);
    let started = d.started();
    assert_eq!(started.len(), 2, "SMS and voice in parallel: {started:?}");
    let call = started
        .iter()
        .find(|(_, _, dev)| dev == "voice-1")
        .unwrap()
        .0;
    assert!(d.cancelled().is_empty());

    d.now = secs(30);
    d.reply(&format!("1 {}", code("red-1", "p1")));
    assert_eq!(d.state(), DeliveryState::Acknowledged);
    // The delivered SMS is left alone; the ringing call is cancelled, once.
    assert_eq!(
        d.cancelled(),
        vec![(call, "voice-1".to_owned(), "acknowledged".to_owned())]
    );
    assert_eq!(d.cancel_commands(), vec![(call, "voice-1".to_owned())]);
    // The cancel command comes after its record (records are committed first).
    let rec_ix = d
        .records
        .iter()
        .position(|r| matches!(r, Record::AttemptCancelled { .. }))
        .unwrap();
    let (after, ..) = d
        .commands
        .iter()
        .find(|(_, _, c)| matches!(c, DriverCommand::Cancel(_)))
        .unwrap();
    assert!(*after > rec_ix);

    // The driver hangs up and says so: recorded, and nothing else happens.
    let before = d.records.len();
    d.now = secs(31);
    d.event(
        &DeviceId::from("voice-1"),
        DriverEvent::Failed {
            attempt: call,
            retryable: false,
            reason: "cancelled; listened 0.0 s".into(),
        },
    );
    d.drain();
    assert_eq!(d.records.len(), before + 1);
    assert!(matches!(
        d.records.last(),
        Some(Record::AttemptOutcome { attempt, .. }) if *attempt == call
    ));
    d.run(secs(3600));
    assert_eq!(d.started().len(), 2, "no retry, no fallback, no reminder");
    assert_eq!(d.state(), DeliveryState::Acknowledged);
    let view = d
        .router
        .deliveries(&AlertId::from("red-1"), None)
        .unwrap()
        .remove(0);
    let a = view.attempts.iter().find(|a| a.attempt == call).unwrap();
    assert_eq!(a.outcome, "cancelled: acknowledged");

    // Replaying the log agrees, and the cancelled call is not re-issued.
    let mut r = Router::restore(
        config(vec![
            device("gsm-1", Bearer::Sms, 60.0),
            device("voice-1", Bearer::Voice, 60.0),
        ]),
        d.records.clone(),
        d.now,
    )
    .unwrap();
    assert_eq!(r.poll_output(), None);
    assert_eq!(
        r.deliveries(&AlertId::from("red-1"), None),
        d.router.deliveries(&AlertId::from("red-1"), None)
    );
}

#[test]
fn escalation_keeps_calls_going_and_a_late_ack_cancels_them_and_the_door_knock() {
    let mut d = Drive::new(Some("t1"));
    // Red: 5-minute window; the person's calls ring on through the escalation.
    d.run(secs(301));
    assert!(
        d.records
            .iter()
            .any(|r| matches!(r, Record::Escalated { .. }))
    );
    assert!(d.cancelled().is_empty(), "escalation cancels nothing");
    assert!(d.cancel_commands().is_empty());
    let task_calls: Vec<AttemptId> = d
        .started()
        .into_iter()
        .filter(|(_, p, dev)| matches!(p, Purpose::DoorKnock { .. }) && dev == "voice-1")
        .map(|(a, ..)| a)
        .collect();
    assert!(!task_calls.is_empty(), "{:?}", d.started());
    // Every call still ringing: the person's and the supervisor's.
    let ringing: Vec<AttemptId> = d
        .started()
        .into_iter()
        .filter(|(_, _, dev)| dev == "voice-1")
        .map(|(a, ..)| a)
        .collect();

    d.now = secs(320);
    d.reply(&format!("1 {}", code("red-1", "p1")));
    assert_eq!(d.state(), DeliveryState::Acknowledged);
    let cancelled: Vec<AttemptId> = d.cancelled().into_iter().map(|(a, ..)| a).collect();
    assert_eq!(
        cancelled, ringing,
        "every call of the record, task included"
    );
    for t in &task_calls {
        assert!(cancelled.contains(t));
    }
    assert!(
        d.cancelled()
            .iter()
            .all(|(_, dev, why)| dev == "voice-1" && why == "acknowledged")
    );
    let commands: Vec<AttemptId> = d.cancel_commands().into_iter().map(|(a, _)| a).collect();
    assert_eq!(commands, cancelled);
}

#[test]
fn closing_unreached_cancels_what_is_still_ringing() {
    let mut d = Drive::new(None);
    d.run(secs(400));
    assert_eq!(d.state(), DeliveryState::Unreached);
    let ringing: Vec<AttemptId> = d
        .started()
        .into_iter()
        .filter(|(_, _, dev)| dev == "voice-1")
        .map(|(a, ..)| a)
        .collect();
    assert!(!ringing.is_empty());
    let cancelled = d.cancelled();
    assert_eq!(
        cancelled.iter().map(|(a, ..)| *a).collect::<Vec<_>>(),
        ringing
    );
    assert!(
        cancelled
            .iter()
            .all(|(_, _, why)| why == "closed unreached")
    );
    // Cancelling the alert afterwards cancels nothing twice.
    d.router
        .handle_cancel(d.now, &AlertId::from("red-1"), "district-ops")
        .unwrap();
    d.drain();
    assert_eq!(d.cancelled().len(), ringing.len());
}
