//! Shared lines: an AT modem with voice is two devices (`NAME` for SMS, `NAME-voice` for
//! calls) on one line. While a call is up on a line the router hands its SMS side nothing:
//! the texts go to an idle modem of the pool, or wait for the call to end — so nobody's ack
//! window starts while their text sits behind a call.

mod common;

use common::*;
use tocsin_core::{Bearer, DeviceId, Grade, Role, Timestamp};
use tocsin_router::{DeviceInfo, Record};

/// Both devices of modem `name`, on line `name`: SMS at 6 a minute, calls at 2.
fn modem(name: &str) -> [DeviceInfo; 2] {
    let mut sms = device(name, Bearer::Sms, 6.0);
    sms.line = Some(name.to_owned());
    let mut voice = device(&format!("{name}-voice"), Bearer::Voice, 2.0);
    voice.line = Some(name.to_owned());
    voice.caps.sender_authenticated = true;
    [sms, voice]
}

fn people(n: u32) -> Vec<tocsin_router::Contact> {
    (1..=n)
        .map(|i| {
            contact(
                &format!("p{i}"),
                "村民",
                Role::GridLead,
                "大庄镇",
                vec![phone(i)],
                None,
            )
        })
        .collect()
}

/// A red alert to p1 at 0 s (a text and a call, in parallel), then a yellow alert (texts
/// only) to p2..=p`last` at `yellow_at`.
fn script(last: u32, yellow_at: i64) -> Vec<(Timestamp, Script)> {
    let contacts = people(last);
    let yellow: Vec<String> = (2..=last).map(|i| format!("p{i}")).collect();
    let yellow: Vec<&str> = yellow.iter().map(String::as_str).collect();
    vec![
        (
            secs(0),
            Script::Alert(plan(
                alert("red-1", Grade::Red, "山洪红色预警"),
                &["p1"],
                &contacts,
            )),
        ),
        (
            secs(yellow_at),
            Script::Alert(plan(
                alert("yellow-1", Grade::Yellow, "暴雨黄色预警"),
                &yellow,
                &contacts,
            )),
        ),
    ]
}

/// The call placed for the red alert: (device, started, ended).
fn the_call(records: &[Record]) -> (DeviceId, Timestamp, Timestamp) {
    let (attempt, device, start) = records
        .iter()
        .find_map(|r| match r {
            Record::AttemptStarted {
                attempt,
                bearer: Bearer::Voice,
                device,
                at,
                ..
            } => Some((*attempt, device.clone(), *at)),
            _ => None,
        })
        .expect("a call was placed");
    let end = records
        .iter()
        .find_map(|r| match r {
            Record::AttemptOutcome {
                attempt: a,
                at,
                outcome: tocsin_router::Outcome::Delivered { .. },
                ..
            } if *a == attempt => Some(*at),
            _ => None,
        })
        .expect("the call ended");
    (device, start, end)
}

/// The yellow alert's sends: (when, device).
fn yellow_sends(records: &[Record]) -> Vec<(Timestamp, DeviceId)> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::AttemptStarted {
                alert, at, device, ..
            } if alert.as_str() == "yellow-1" => Some((*at, device.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn texts_go_to_the_idle_modem_while_the_other_is_in_a_call() {
    let [a, av] = modem("gsm-1");
    let [b, bv] = modem("gsm-2");
    let mut sim = Sim::new(config(vec![a, av, b, bv]), script(9, 5));
    sim.verbose = false;
    sim.run(secs(120));
    let (call_dev, start, end) = the_call(&sim.records);
    assert_eq!(start, secs(0));
    // The sim's call is answered after 20 s and played through 25 s later.
    assert_eq!(end, secs(45));
    let busy = DeviceId(
        call_dev
            .as_str()
            .strip_suffix("-voice")
            .expect("a modem's voice side")
            .to_owned(),
    );
    let idle = if busy.as_str() == "gsm-1" {
        DeviceId::from("gsm-2")
    } else {
        DeviceId::from("gsm-1")
    };
    let sends = yellow_sends(&sim.records);
    assert_eq!(sends.len(), 8, "{sends:?}");
    // While the call is up every text goes to the idle modem, one per 10 s of its budget.
    let during: Vec<_> = sends.iter().filter(|(t, _)| *t < end).collect();
    assert!(during.iter().all(|(_, d)| *d == idle), "{sends:?}");
    let times: Vec<Timestamp> = during.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, vec![secs(5), secs(15), secs(25), secs(35)]);
    // When the call ends the busy modem takes texts again, at once.
    assert!(
        sends.contains(&(end, busy.clone())),
        "{sends:?} (call ended at {end:?})"
    );
    // Busy is not down: no move-off, no health record.
    assert!(
        !sim.records.iter().any(|r| matches!(
            r,
            Record::DeviceHealth { .. } | Record::AttemptAbandoned { .. }
        )),
        "{:?}",
        sim.records
    );
}

#[test]
fn with_one_modem_a_text_waits_for_the_call_to_end() {
    let mut sim = Sim::new(config(modem("gsm-1").to_vec()), script(2, 5));
    sim.verbose = false;
    sim.run(secs(120));
    let (_, start, end) = the_call(&sim.records);
    assert_eq!((start, end), (secs(0), secs(45)));
    // The red alert's text went first, before the call was placed.
    let red_text = sim
        .records
        .iter()
        .find_map(|r| match r {
            Record::AttemptStarted {
                alert,
                bearer: Bearer::Sms,
                at,
                ..
            } if alert.as_str() == "red-1" => Some(*at),
            _ => None,
        })
        .expect("the red text");
    assert_eq!(red_text, secs(0));
    assert_eq!(
        yellow_sends(&sim.records),
        vec![(secs(45), DeviceId::from("gsm-1"))],
        "the text goes when the call ends, not when the budget allows (10 s)"
    );
}

#[test]
fn without_a_shared_line_the_text_goes_at_its_budget() {
    // The same devices with no line named: the router does not know they share a modem.
    let mut devs = modem("gsm-1").to_vec();
    for d in &mut devs {
        d.line = None;
    }
    let mut sim = Sim::new(config(devs), script(2, 5));
    sim.verbose = false;
    sim.run(secs(120));
    assert_eq!(
        yellow_sends(&sim.records),
        vec![(secs(10), DeviceId::from("gsm-1"))]
    );
}

#[test]
fn a_call_that_never_ends_holds_its_line_for_at_most_five_minutes() {
    let mut sim = Sim::new(config(modem("gsm-1").to_vec()), script(2, 5));
    sim.verbose = false;
    // The call is answered and then nothing more is heard of it (a driver restarted).
    sim.device_fates
        .insert(DeviceId::from("gsm-1-voice"), Fate::SentOnly);
    sim.run(secs(400));
    let sends = yellow_sends(&sim.records);
    assert_eq!(
        sends.first(),
        Some(&(secs(300), DeviceId::from("gsm-1"))),
        "{sends:?}"
    );
}

#[test]
fn a_restore_mid_call_gives_the_same_sends() {
    let config = || config(modem("gsm-1").to_vec());
    let mut whole = Sim::new(config(), script(4, 25));
    whole.verbose = false;
    whole.run(secs(200));
    // The batch that takes the yellow alert, 5 s into the answered call.
    let mut probe = Sim::new(config(), script(4, 25));
    probe.verbose = false;
    probe.run(secs(25));
    let mut crashed = Sim::new(config(), script(4, 25));
    crashed.verbose = false;
    crashed.crash_after = Some(probe.batches);
    crashed.run(secs(200));
    assert!(
        crashed.transcript.contains("CRASH"),
        "{}",
        crashed.transcript
    );
    // Nothing is abandoned: the call was answered, the texts had not been handed over.
    assert!(
        !crashed
            .records
            .iter()
            .any(|r| matches!(r, Record::AttemptAbandoned { .. })),
        "{}",
        crashed.transcript
    );
    let sends = |sim: &Sim| -> Vec<_> {
        sim.sends
            .iter()
            .map(|(t, d, _, to, text)| (*t, d.clone(), to.clone(), text.clone()))
            .collect()
    };
    assert_eq!(sends(&crashed), sends(&whole));
    let yellow = yellow_sends(&whole.records);
    let times: Vec<Timestamp> = yellow.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, vec![secs(45), secs(55), secs(65)]);
}

#[test]
fn a_shared_line_places_one_call_at_a_time_and_lets_four_texts_go_between_calls() {
    // A red alert to five people on one modem: five texts and five calls wait.
    let contacts = people(5);
    let all: Vec<String> = (1..=5).map(|i| format!("p{i}")).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let script = vec![(
        secs(0),
        Script::Alert(plan(
            alert("red-1", Grade::Red, "山洪红色预警"),
            &all,
            &contacts,
        )),
    )];
    let mut sim = Sim::new(config(modem("gsm-1").to_vec()), script);
    sim.verbose = false;
    sim.run(secs(600));
    // Walk the log in order: what the line was doing at each hand-off.
    let mut live = std::collections::BTreeSet::new();
    let mut texts_since_call = 0;
    let mut runs = Vec::new();
    for r in &sim.records {
        match r {
            Record::AttemptStarted {
                attempt,
                bearer,
                at,
                ..
            } => {
                assert!(live.is_empty(), "a hand-off at {at:?} during a call");
                if *bearer == Bearer::Voice {
                    live.insert(*attempt);
                    runs.push(texts_since_call);
                    texts_since_call = 0;
                } else {
                    texts_since_call += 1;
                }
            }
            Record::AttemptOutcome {
                attempt,
                outcome:
                    tocsin_router::Outcome::Delivered { .. } | tocsin_router::Outcome::Failed { .. },
                ..
            }
            | Record::AttemptCancelled { attempt, .. }
            | Record::AttemptAbandoned { attempt, .. } => {
                live.remove(attempt);
            }
            _ => {}
        }
    }
    // Four texts, a call, the fifth text, a call, ... (reminders are texts too, and
    // wait for the calls like the rest): never more than four between two calls.
    assert_eq!(runs.get(..2), Some(&[4, 1][..]), "{runs:?}");
    assert!(runs.iter().all(|&n| n <= 4), "{runs:?}");
    assert!(runs.len() >= 5, "every person is called: {runs:?}");
    // The first call waits for the fourth text (6 texts a minute: at 30 s), not longer.
    let first_call = sim.records.iter().find_map(|r| match r {
        Record::AttemptStarted {
            bearer: Bearer::Voice,
            at,
            ..
        } => Some(*at),
        _ => None,
    });
    assert_eq!(first_call, Some(secs(30)));
}
