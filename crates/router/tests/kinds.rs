//! Policies per alert kind: a district shortens the red ack window for reservoir alerts
//! (a dam operator's warning leaves minutes, not five) without touching other red alerts.

#![allow(
    clippy::unwrap_used,
    reason = "test harness: a failed unwrap is a failed test"
)]

mod common;

use common::*;
use tocsin_core::{Bearer, Grade, Role};
use tocsin_router::{DeliveryState, KindOverride, KindPolicies, Record};

#[test]
fn a_reservoir_alert_runs_under_its_kind_policy_and_a_flash_flood_does_not() {
    let mut cfg = config(vec![device("gsm-1", Bearer::Sms, 60.0)]);
    cfg.policies.kinds.insert(
        "reservoir".into(),
        KindPolicies {
            red: Some(KindOverride {
                ack_deadline_s: Some(120),
                reminders: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let mut reservoir = alert("a-res", Grade::Red, "水库泄洪红色预警");
    reservoir.kind = "reservoir".into();
    let mut flood = alert("a-ff", Grade::Red, "山洪红色预警");
    flood.kind = "flash_flood".into();
    let people = [
        contact(
            "p1",
            "张伟",
            Role::VillageHead,
            "大庄镇",
            vec![phone(1)],
            None,
        ),
        contact(
            "p2",
            "李娜",
            Role::VillageHead,
            "大庄镇",
            vec![phone(2)],
            None,
        ),
    ];
    let script = vec![
        (secs(0), Script::Alert(plan(reservoir, &["p1"], &people))),
        (secs(0), Script::Alert(plan(flood, &["p2"], &people))),
    ];
    let mut sim = Sim::new(cfg, script);
    sim.run(secs(200));

    let planned: Vec<_> = sim
        .records
        .iter()
        .filter_map(|r| match r {
            Record::DeliveryPlanned {
                alert,
                person,
                plan,
                ..
            } => Some((
                alert.to_string(),
                person.to_string(),
                plan.window_ms,
                plan.reminders_ms.clone(),
                plan.attempts_per_route,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        planned,
        vec![
            ("a-res".into(), "p1".into(), 120_000, vec![60_000], 3),
            (
                "a-ff".into(),
                "p2".into(),
                300_000,
                vec![100_000, 200_000],
                3
            ),
        ]
    );
    // Nobody answers and nobody is above them: the reservoir record closes unreached at
    // its 2 minutes (after the first send), the flash-flood one is still waiting.
    let out = sim.outcome();
    let state = |alert: &str| out.iter().find(|o| o.0 == alert).map(|o| o.2).unwrap();
    assert_eq!(state("a-res"), DeliveryState::Unreached);
    assert_ne!(state("a-ff"), DeliveryState::Unreached);
    // One reminder for the reservoir alert, one so far for the flash flood (at 100 s).
    let sends_to = |n: u32| sim.sends.iter().filter(|s| s.3 == phone(n)).count();
    assert_eq!((sends_to(1), sends_to(2)), (2, 2));
}
