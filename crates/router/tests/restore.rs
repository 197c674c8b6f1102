//! Restart: restore(log prefix) then continue gives the same campaign outcome.

mod common;

use common::*;
use proptest::prelude::*;
use tocsin_core::{AlertId, Bearer, Grade, Role};
use tocsin_router::{Output, Record, Router};

fn devices() -> Vec<tocsin_router::DeviceInfo> {
    vec![
        device("gsm-1", Bearer::Sms, 10.0),
        device("voice-1", Bearer::Voice, 2.0),
        device("bd-1", Bearer::Beidou, 1.0),
    ]
}

fn uninterrupted() -> Sim {
    let mut sim = Sim::new(config(devices()), red_script());
    sim.verbose = false;
    sim.run(secs(3600));
    sim
}

#[test]
fn restoring_the_whole_log_emits_nothing_new_and_gives_the_same_views() {
    let sim = uninterrupted();
    let mut restored = Router::restore(config(devices()), sim.records.clone(), secs(3600)).unwrap();
    let mut extra = Vec::new();
    while let Some(o) = restored.poll_output() {
        extra.push(o);
    }
    assert!(extra.is_empty(), "{extra:?}");
    let a = AlertId::from("red-1");
    assert_eq!(restored.summary(&a), sim.router.summary(&a));
    assert_eq!(
        restored.deliveries(&a, None),
        sim.router.deliveries(&a, None)
    );
    assert_eq!(restored.poll_timeout(), None);
    // Records survive their JSON form.
    let json: Vec<String> = sim
        .records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    let back: Vec<Record> = json
        .iter()
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
    assert_eq!(back, sim.records);
}

#[test]
fn attempts_without_outcome_are_reissued_as_possible_duplicates() {
    let contacts = vec![
        contact(
            "p1",
            "张伟",
            Role::VillageHead,
            "大庄镇",
            vec![phone(1)],
            None,
        ),
        contact("p2", "李娜", Role::GridLead, "大庄镇", vec![phone(2)], None),
    ];
    let script = vec![(
        secs(0),
        Script::Alert(plan(
            alert("red-1", Grade::Red, "山洪红色预警"),
            &["p1", "p2"],
            &contacts,
        )),
    )];
    let mut sim = Sim::new(config(vec![device("gsm-1", Bearer::Sms, 60.0)]), script);
    // Crash after the first batch: the alert and its first send are on disk, the command lost.
    sim.crash_after = Some(1);
    sim.run(secs(2));
    insta::assert_snapshot!("restart_reissues", sim.transcript);
    let dup = sim.records.iter().find(|r| {
        matches!(
            r,
            Record::AttemptStarted {
                possible_duplicate: true,
                ..
            }
        )
    });
    assert!(dup.is_some());
    // After a restart nothing is re-sent twice: the re-issued attempt went to the device.
    let mut restored = Router::restore(
        config(vec![device("gsm-1", Bearer::Sms, 60.0)]),
        sim.records.clone(),
        secs(2),
    )
    .unwrap();
    let mut outs = Vec::new();
    while let Some(o) = restored.poll_output() {
        outs.push(o);
    }
    assert!(outs.iter().all(|o| !matches!(
        o,
        Output::Record(Record::AlertAccepted { .. } | Record::DeliveryPlanned { .. })
    )));
}

fn batches() -> usize {
    uninterrupted().batches
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn restore_at_any_cut_gives_the_same_outcome(cut in 1usize..400) {
        let reference = uninterrupted();
        let cut = 1 + cut % batches();
        let mut sim = Sim::new(config(devices()), red_script());
        sim.verbose = false;
        sim.crash_after = Some(cut);
        sim.run(secs(3600));
        prop_assert!(sim.transcript.contains("CRASH"), "the crash happened");
        prop_assert_eq!(sim.outcome(), reference.outcome());
        let a = AlertId::from("red-1");
        prop_assert_eq!(sim.router.summary(&a).map(|s| s.state), reference.router.summary(&a).map(|s| s.state));
    }
}
