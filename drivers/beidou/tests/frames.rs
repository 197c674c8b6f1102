//! Two Tocsin nodes over BeiDou: the district's driver on a 2.1 terminal and a field kit's
//! driver on a BDS-3 terminal, both stepped with the simulated satellite network on one
//! virtual clock. A compact alert goes to the kit and an ack batch comes back, byte for
//! byte (the simulator carries mixed content as bytes, never as re-encoded text); a frame
//! sent to a person's card by mistake reaches a handset that shows garbage, and nothing
//! breaks.

use std::time::Duration;

use tocsin_beidou::config::BeidouConfig;
use tocsin_beidou::proto::Terminal;
use tocsin_beidou::sim::{
    CardScript, ReplyBehaviour, SimConfig, SimDialect, SimNetwork, TerminalConfig,
};
use tocsin_channel::{DriverCommand, DriverEvent, FrameOut};
use tocsin_compact::{AckBatch, AckEntry, AlertFrame, AreaRef, Frame, Imei, ShortAlertId};
use tocsin_core::{AckCode, Address, AttemptId, Grade, Timestamp};

const T0: Timestamp = Timestamp(1_750_000_000_000);
const DISTRICT: &str = "0242286";
const KIT: &str = "4207733";
const PERSON: &str = "0300001";

/// Two drivers, each on its own simulated terminal of one network.
struct Pair {
    now: Timestamp,
    net: SimNetwork,
    drivers: [Terminal; 2],
    events: [Vec<DriverEvent>; 2],
}

impl Pair {
    fn new() -> Self {
        let mut net = SimNetwork::new(
            SimConfig {
                latency_min_ms: 1_000,
                latency_max_ms: 4_000,
                cards: vec![CardScript {
                    card: PERSON.into(),
                    behaviour: ReplyBehaviour::ReplyCode {
                        min_secs: 10.0,
                        max_secs: 10.0,
                    },
                }],
                ..SimConfig::default()
            },
            11,
        );
        net.add_terminal(T0, TerminalConfig::new(DISTRICT));
        let mut kit = TerminalConfig::new(KIT);
        kit.dialect = SimDialect::Bds3;
        kit.frequency_secs = 30;
        net.add_terminal(T0, kit);
        let mut drivers = [
            Terminal::new(BeidouConfig::new("district"), T0),
            Terminal::new(BeidouConfig::new("kit"), T0),
        ];
        for d in &mut drivers {
            d.handle_port_opened(T0);
        }
        let mut p = Pair {
            now: T0,
            net,
            drivers,
            events: [Vec::new(), Vec::new()],
        };
        p.settle();
        assert!(p.drivers.iter().all(Terminal::is_ready));
        p
    }

    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for (i, d) in self.drivers.iter_mut().enumerate() {
                while let Some(b) = d.poll_transmit() {
                    self.net.handle_rx(self.now, i, &b);
                    moved = true;
                }
                while let Some(b) = self.net.poll_transmit(i) {
                    d.handle_rx(self.now, &b);
                    moved = true;
                }
                while let Some(e) = d.poll_event() {
                    self.events[i].push(e);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn submit(&mut self, i: usize, cmd: DriverCommand) {
        self.drivers[i].submit(self.now, cmd);
        self.settle();
    }

    /// Runs the clock until `done` holds for driver `i`'s events, at most `secs`.
    fn run_until(&mut self, i: usize, secs: u64, done: impl Fn(&[DriverEvent]) -> bool) {
        let limit = self.now + Duration::from_secs(secs);
        while !done(&self.events[i]) {
            let next = self
                .drivers
                .iter()
                .filter_map(Terminal::poll_timeout)
                .chain(self.net.poll_timeout())
                .min()
                .filter(|t| *t <= limit);
            let Some(t) = next else {
                panic!("not reached by {limit}: {:#?}", self.events[i]);
            };
            self.now = self.now.max(t);
            self.net.handle_timeout(self.now);
            for d in &mut self.drivers {
                d.handle_timeout(self.now);
            }
            self.settle();
        }
    }

    fn frames(&self, i: usize) -> Vec<(Address, Vec<u8>)> {
        self.events[i]
            .iter()
            .filter_map(|e| match e {
                DriverEvent::Frame { from, bytes, .. } => Some((from.clone(), bytes.clone())),
                _ => None,
            })
            .collect()
    }
}

fn frame_to(attempt: u64, card: &str, bytes: &[u8]) -> DriverCommand {
    DriverCommand::SendFrame(FrameOut {
        attempt: AttemptId(attempt),
        to: Address::BeidouCard(card.to_owned()),
        bytes: bytes.to_vec(),
    })
}

#[allow(clippy::unwrap_used, reason = "a fixed, valid frame")]
fn alert() -> Vec<u8> {
    Frame::Alert(AlertFrame {
        id: ShortAlertId::new(0xA1B2).unwrap(),
        grade: Grade::Red,
        kind: "flash_flood".into(),
        exercise: false,
        expires: None,
        area: AreaRef::Named("V023".into()),
        code: AckCode::parse("K7XT"),
        text: "山洪 立即转移".into(),
    })
    .encode()
    .unwrap()
}

#[allow(clippy::unwrap_used, reason = "a fixed, valid frame")]
fn acks() -> Vec<u8> {
    Frame::Acks(AckBatch {
        origin: Imei::parse("300234010753370"),
        base_secs: 60_000_000,
        acks: vec![
            AckEntry {
                alert: ShortAlertId::new(0xA1B2).unwrap(),
                person: "p17".into(),
                code: AckCode::parse("K7XT").unwrap(),
                offset_secs: 300,
            },
            AckEntry {
                alert: ShortAlertId::new(0xA1B2).unwrap(),
                person: "p18".into(),
                code: AckCode::parse("AAAA").unwrap(),
                offset_secs: 0,
            },
        ],
    })
    .encode()
    .unwrap()
}

#[test]
fn an_alert_reaches_the_kit_and_its_ack_batch_comes_back_byte_for_byte() {
    let mut p = Pair::new();
    let alert = alert();
    p.submit(0, frame_to(1, KIT, &alert));
    p.run_until(1, 30, |e| {
        e.iter().any(|e| matches!(e, DriverEvent::Frame { .. }))
    });
    assert_eq!(
        p.frames(1),
        [(Address::BeidouCard(DISTRICT.into()), alert.clone())]
    );
    assert!(p.events[0].iter().any(|e| matches!(
        e,
        DriverEvent::Sent {
            attempt: AttemptId(1),
            ..
        }
    )));
    // The network carried exactly those bytes.
    assert_eq!(p.net.submits()[0].bytes, alert);
    assert!(
        !p.events[1]
            .iter()
            .any(|e| matches!(e, DriverEvent::Inbound { .. })),
        "a frame is never also a text"
    );

    // The kit's ack batch: bytes that are not valid GB2312 (0x8F, 0x00, 0x03, ...) survive.
    let acks = acks();
    p.submit(1, frame_to(2, DISTRICT, &acks));
    p.run_until(0, 30, |e| {
        e.iter().any(|e| matches!(e, DriverEvent::Frame { .. }))
    });
    assert_eq!(
        p.frames(0),
        [(Address::BeidouCard(KIT.into()), acks.clone())]
    );
    let Some(DriverEvent::Frame { evidence, .. }) = p.events[0]
        .iter()
        .find(|e| matches!(e, DriverEvent::Frame { .. }))
    else {
        unreachable!()
    };
    assert!(
        evidence.starts_with("$BDTXR,1,4207733,2,,A412"),
        "{evidence}"
    );
}

#[test]
fn a_frame_to_a_persons_card_reaches_a_handset_that_just_shows_it() {
    let mut p = Pair::new();
    p.submit(0, frame_to(1, PERSON, &alert()));
    // The person's script answers what it read (no code in a binary frame: a bare 1).
    p.run_until(0, 60, |e| {
        e.iter().any(|e| matches!(e, DriverEvent::Inbound { .. }))
    });
    let inbound: Vec<(&Address, &str)> = p.events[0]
        .iter()
        .filter_map(|e| match e {
            DriverEvent::Inbound { from, text, .. } => Some((from, text.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(inbound, [(&Address::BeidouCard(PERSON.into()), "1")]);
    assert!(p.frames(0).is_empty());
}
