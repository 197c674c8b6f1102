//! Send budgets: token buckets per device, red first, exact deadlines.

mod common;

use common::*;
use tocsin_core::{AlertId, Bearer, Grade, Role};
use tocsin_router::{Output, Router};

fn residents(prefix: &str, n: u32, first_phone: u32) -> (Vec<String>, Vec<tocsin_router::Contact>) {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let contacts = ids
        .iter()
        .zip(first_phone..)
        .map(|(id, p)| contact(id, "居民", Role::Resident, "大庄镇", vec![phone(p)], None))
        .collect();
    (ids, contacts)
}

#[test]
fn hundred_sends_over_two_devices_follow_the_token_buckets() {
    let (ids, contacts) = residents("r", 100, 1000);
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let devs = vec![
        device("gsm-1", Bearer::Sms, 6.0),
        device("gsm-2", Bearer::Sms, 6.0),
    ];
    let mut router = Router::new(config(devs.clone()));
    router
        .handle_alert(
            secs(0),
            plan(
                alert("blue-1", Grade::Blue, "大风蓝色预警"),
                &ids,
                &contacts,
            ),
        )
        .unwrap();
    // The first sends go out in the same call, one per device (burst 1).
    let mut sends = Vec::new();
    let drain = |router: &mut Router, now, sends: &mut Vec<_>| {
        while let Some(o) = router.poll_output() {
            if let Output::Command {
                device,
                command: tocsin_channel::DriverCommand::Send(_),
            } = o
            {
                sends.push((now, device));
            }
        }
    };
    drain(&mut router, secs(0), &mut sends);
    assert_eq!(sends.len(), 2);
    while let Some(t) = router.poll_timeout() {
        if sends.len() >= 100 {
            break;
        }
        router.handle_timeout(t);
        drain(&mut router, t, &mut sends);
    }
    assert_eq!(sends.len(), 100);
    for (k, (at, _)) in sends.iter().enumerate() {
        assert_eq!(*at, secs((k as i64 / 2) * 10), "send {k}");
    }
    // Each device sends every 10 s exactly.
    for dev in ["gsm-1", "gsm-2"] {
        let times: Vec<_> = sends
            .iter()
            .filter(|s| s.1.as_str() == dev)
            .map(|s| s.0)
            .collect();
        assert_eq!(times.len(), 50);
        assert!(times.windows(2).all(|w| w[1].0 - w[0].0 == 10_000));
    }
    // The preview predicts the same.
    let p = Router::new(config(devs)).preview(&plan(alert("x", Grade::Blue, "x"), &ids, &contacts));
    assert_eq!(p.seconds_to_first_attempt_all, 490.0);
    assert_eq!((p.people, p.responsible, p.unreachable), (100, 0, 0));
}

#[test]
fn red_preempts_queued_blue() {
    let (blue_ids, mut contacts) = residents("r", 100, 1000);
    let blue_ids: Vec<&str> = blue_ids.iter().map(String::as_str).collect();
    contacts.push(contact(
        "v1",
        "张伟",
        Role::VillageHead,
        "大庄镇",
        vec![phone(1)],
        None,
    ));
    contacts.push(contact(
        "v2",
        "李娜",
        Role::GridLead,
        "大庄镇",
        vec![phone(2)],
        None,
    ));
    contacts.push(contact(
        "v3",
        "王强",
        Role::GridLead,
        "大庄镇",
        vec![phone(3)],
        None,
    ));
    let devs = vec![
        device("gsm-1", Bearer::Sms, 6.0),
        device("gsm-2", Bearer::Sms, 6.0),
    ];
    let script = vec![
        (
            secs(0),
            Script::Alert(plan(
                alert("blue-1", Grade::Blue, "大风蓝色预警"),
                &blue_ids,
                &contacts,
            )),
        ),
        (
            secs(35),
            Script::Alert(plan(
                alert("red-1", Grade::Red, "山洪红色预警"),
                &["v1", "v2", "v3"],
                &contacts,
            )),
        ),
    ];
    let mut sim = Sim::new(config(devs), script);
    sim.verbose = false;
    sim.run(secs(60));
    let after: Vec<_> = sim
        .sends
        .iter()
        .filter(|s| s.0 >= secs(35))
        .map(|s| (s.0, s.3.clone()))
        .collect();
    // Sends at 40 s (both devices) and 50 s go to the red alert's people, then blue resumes.
    assert_eq!(after[0], (secs(40), phone(1)));
    assert_eq!(after[1], (secs(40), phone(2)));
    assert_eq!(after[2], (secs(50), phone(3)));
    assert_eq!(after[3].0, secs(50));
    assert_eq!(after[3].1, phone(1008), "blue resumes in FIFO order");
    let s = sim.router.summary(&AlertId::from("red-1")).unwrap();
    assert_eq!(s.counts.by_state[&tocsin_router::DeliveryState::Reached], 3);
}
