//! The driver's state machine and the simulated terminals and satellite network stepped
//! together on a virtual clock: a campaign to several people's cards over one terminal,
//! paced by the card's service frequency, with their scripted replies, in both dialects
//! and with corrupted sentences on the line.

use std::time::Duration;

use tocsin_beidou::config::BeidouConfig;
use tocsin_beidou::proto::Terminal;
use tocsin_beidou::sim::{
    CardScript, Faults, ReplyBehaviour, SimConfig, SimDialect, SimNetwork, TerminalConfig,
};
use tocsin_channel::{DriverCommand, DriverEvent, Outbound};
use tocsin_core::{Address, AttemptId, Timestamp};

const T0: Timestamp = Timestamp(1_750_000_000_000);

/// Driver and simulated terminal 0, wired back to back.
struct Bench {
    now: Timestamp,
    driver: Terminal,
    net: SimNetwork,
    events: Vec<(Timestamp, DriverEvent)>,
}

impl Bench {
    fn new(cfg: BeidouConfig, term: TerminalConfig, sim: SimConfig, seed: u64) -> Self {
        let mut net = SimNetwork::new(sim, seed);
        net.add_terminal(T0, term);
        let mut driver = Terminal::new(cfg, T0);
        driver.handle_port_opened(T0);
        let mut b = Bench {
            now: T0,
            driver,
            net,
            events: Vec::new(),
        };
        b.settle();
        b
    }

    /// Moves bytes both ways until both sides are quiet.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            while let Some(bytes) = self.driver.poll_transmit() {
                self.net.handle_rx(self.now, 0, &bytes);
                moved = true;
            }
            while let Some(bytes) = self.net.poll_transmit(0) {
                self.driver.handle_rx(self.now, &bytes);
                moved = true;
            }
            while let Some(e) = self.driver.poll_event() {
                self.events.push((self.now, e));
            }
            if !moved {
                return;
            }
        }
    }

    fn submit(&mut self, cmd: DriverCommand) {
        self.driver.submit(self.now, cmd);
        self.settle();
    }

    /// Runs the clock until `until`, waking both sides at their deadlines.
    fn run_until(&mut self, until: Timestamp) {
        loop {
            let next = [self.driver.poll_timeout(), self.net.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = t.max(self.now);
                    self.net.handle_timeout(self.now);
                    self.driver.handle_timeout(self.now);
                    self.settle();
                }
                _ => {
                    self.now = until;
                    return;
                }
            }
        }
    }

    fn sent(&self) -> Vec<(Timestamp, AttemptId)> {
        self.events
            .iter()
            .filter_map(|(t, e)| match e {
                DriverEvent::Sent { attempt, .. } => Some((*t, *attempt)),
                _ => None,
            })
            .collect()
    }

    fn inbound(&self) -> Vec<(String, String)> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                DriverEvent::Inbound {
                    from: Address::BeidouCard(c),
                    text,
                    ..
                } => Some((c.clone(), text.clone())),
                _ => None,
            })
            .collect()
    }
}

fn send(attempt: u64, card: &str, text: &str) -> DriverCommand {
    DriverCommand::Send(Outbound {
        attempt: AttemptId(attempt),
        to: Address::BeidouCard(card.to_owned()),
        text: text.to_owned(),
        want_report: true,
    })
}

fn people() -> SimConfig {
    SimConfig {
        latency_min_ms: 1_000,
        latency_max_ms: 3_000,
        cards: vec![
            CardScript {
                card: "0300001".into(),
                behaviour: ReplyBehaviour::ReplyCode {
                    min_secs: 20.0,
                    max_secs: 40.0,
                },
            },
            CardScript {
                card: "0300002".into(),
                behaviour: ReplyBehaviour::ReplyOne {
                    min_secs: 20.0,
                    max_secs: 40.0,
                },
            },
            CardScript {
                card: "0300003".into(),
                behaviour: ReplyBehaviour::Never,
            },
            CardScript {
                card: "0300004".into(),
                behaviour: ReplyBehaviour::FromOther {
                    card: "0399999".into(),
                    min_secs: 5.0,
                    max_secs: 5.0,
                },
            },
        ],
        ..SimConfig::default()
    }
}

const WARNING: &str = "【红色预警】山洪，立即转移。回复 1 K7XT";

#[test]
fn a_campaign_over_a_bds2_terminal_is_paced_and_answered() {
    let mut b = Bench::new(
        BeidouConfig::new("sim"),
        TerminalConfig::new("0242286"),
        people(),
        7,
    );
    assert!(b.driver.is_ready());
    for (i, card) in ["300001", "300002", "300003", "300004"].iter().enumerate() {
        b.submit(send(i as u64 + 1, card, WARNING));
    }
    b.run_until(T0 + Duration::from_secs(400));
    let sent = b.sent();
    assert_eq!(
        sent.iter().map(|(_, a)| a.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    for pair in sent.windows(2) {
        assert!(
            pair[1].0.since(pair[0].0) >= Duration::from_secs(60),
            "sends 60 s apart: {sent:?}"
        );
    }
    let mut replies = b.inbound();
    replies.sort();
    assert_eq!(
        replies,
        vec![
            ("0300001".to_owned(), "1 K7XT".to_owned()),
            ("0300002".to_owned(), "1".to_owned()),
            ("0399999".to_owned(), "1 K7XT".to_owned()),
        ]
    );
    assert!(
        !b.events.iter().any(|(_, e)| matches!(
            e,
            DriverEvent::Delivered { .. } | DriverEvent::Failed { .. }
        )),
        "{:?}",
        b.events
    );
    assert_eq!(b.net.submits().len(), 4);
    assert_eq!(b.net.submits()[0].text, WARNING);
}

#[test]
fn a_bds3_terminal_is_detected_and_its_card_sets_the_pace() {
    let mut term = TerminalConfig::new("4207733");
    term.dialect = SimDialect::Bds3;
    term.frequency_secs = 30;
    term.level = 5;
    let mut b = Bench::new(BeidouConfig::new("sim"), term, people(), 3);
    assert_eq!(b.driver.dialect(), Some(tocsin_beidou::wire::Dialect::Bds3));
    assert_eq!(b.driver.interval(), Duration::from_secs(30));
    let long = "山洪".repeat(200); // 800 bytes: too long for BDS-2, fine on BDS-3.
    b.submit(send(1, "300001", &format!("{long} 回复 1 AB12")));
    b.submit(send(2, "300002", WARNING));
    b.run_until(T0 + Duration::from_secs(200));
    let sent = b.sent();
    assert_eq!(sent.len(), 2, "{:?}", b.events);
    assert_eq!(sent[1].0.since(sent[0].0), Duration::from_secs(30));
    let mut replies = b.inbound();
    replies.sort();
    assert_eq!(
        replies,
        vec![
            ("0300001".to_owned(), "1 AB12".to_owned()),
            ("0300002".to_owned(), "1".to_owned()),
        ]
    );
}

#[test]
fn a_driver_that_thinks_the_card_is_faster_is_held_back_by_the_terminal() {
    // The config claims 10 s; the card enforces 60 s: the terminal's "frequency not
    // reached" feedback reschedules the sends and none fails.
    let mut cfg = BeidouConfig::new("sim");
    cfg.service_interval_secs = Some(10);
    let mut b = Bench::new(cfg, TerminalConfig::new("0242286"), people(), 5);
    b.submit(send(1, "300003", "一"));
    b.submit(send(2, "300003", "二"));
    b.submit(send(3, "300003", "三"));
    b.run_until(T0 + Duration::from_secs(200));
    let sent = b.sent();
    assert_eq!(sent.len(), 3, "{:?}", b.events);
    assert!(sent[1].0.since(sent[0].0) >= Duration::from_secs(60));
    assert!(b.driver.stats().rescheduled >= 2);
    assert!(
        !b.events
            .iter()
            .any(|(_, e)| matches!(e, DriverEvent::Failed { .. }))
    );
}

#[test]
fn corrupted_sentences_are_dropped_and_counted_and_nothing_is_lost_but_what_they_carried() {
    let mut term = TerminalConfig::new("0242286");
    term.faults = Faults {
        bad_checksum_rate: 0.3,
        garbage_rate: 0.3,
        lost_feedback_rate: 0.0,
    };
    let mut b = Bench::new(BeidouConfig::new("sim"), term, people(), 11);
    // The card query may itself be corrupted: the driver asks again.
    b.run_until(T0 + Duration::from_secs(60));
    assert!(b.driver.is_ready());
    for i in 1..=6 {
        b.submit(send(i, "300001", WARNING));
    }
    b.run_until(T0 + Duration::from_secs(900));
    let stats = b.driver.stats();
    assert!(stats.bad_checksums > 0, "{stats:?}");
    assert!(stats.malformed > 0, "{stats:?}");
    // Every attempt has an outcome: Sent, or Failed retryable when its feedback was the
    // corrupted sentence (the message may have gone out — and the record says so).
    for i in 1..=6 {
        let outcome = b.events.iter().find(|(_, e)| {
            matches!(e, DriverEvent::Sent { attempt, .. } | DriverEvent::Failed { attempt, retryable: true, .. } if attempt.0 == i)
        });
        assert!(outcome.is_some(), "attempt {i}: {:?}", b.events);
    }
    // Never an Inbound made up from a corrupted sentence: all replies are real texts.
    for (card, text) in b.inbound() {
        assert_eq!((card.as_str(), text.as_str()), ("0300001", "1 K7XT"));
    }
}

#[test]
fn losing_the_signal_holds_sends_and_reports_the_terminal_down() {
    let mut b = Bench::new(
        BeidouConfig::new("sim"),
        TerminalConfig::new("0242286"),
        people(),
        1,
    );
    b.net.set_signal(0, false);
    b.settle();
    b.submit(send(1, "300001", WARNING));
    b.run_until(T0 + Duration::from_secs(30));
    assert!(b.sent().is_empty());
    assert!(b.net.submits().is_empty());
    let down = b
        .events
        .iter()
        .any(|(_, e)| matches!(e, DriverEvent::Health(h) if !h.up && !h.registered));
    assert!(down, "{:?}", b.events);
    b.net.set_signal(0, true);
    b.settle();
    b.run_until(T0 + Duration::from_secs(60));
    assert_eq!(b.sent().len(), 1);
    assert!(matches!(
        b.events.iter().rev().find(|(_, e)| matches!(e, DriverEvent::Health(_))),
        Some((_, DriverEvent::Health(h))) if h.up && h.registered
    ));
}
