//! Two Tocsin nodes over Iridium SBD: the district's driver and a field kit's driver, each
//! on its own simulated 9603 of one simulated gateway ([`SimIridium`]), stepped on a
//! virtual clock. The district sends a compact alert, prefixed for the kit's modem; the
//! gateway strips the prefix and queues it for the kit, whose modem rings; the kit answers
//! with an ack batch the same way. Both arrive as `Frame` events with the exact bytes.

use std::time::Duration;

use tocsin_channel::{DriverCommand, DriverEvent, FrameOut};
use tocsin_compact::{AckBatch, AckEntry, AlertFrame, AreaRef, Frame, Imei, ShortAlertId};
use tocsin_core::{AckCode, Address, AttemptId, Grade, Timestamp};
use tocsin_iridium_sbd::config::{Peer, SbdConfig};
use tocsin_iridium_sbd::network::{NetworkConfig, SimIridium, route_prefix};
use tocsin_iridium_sbd::proto::Sbd;
use tocsin_iridium_sbd::sim::{KitReply, SimConfig};

const T0: Timestamp = Timestamp(1_750_000_000_000);
const DISTRICT: &str = "300434063839690";
const KIT: &str = "300234010753370";

struct Pair {
    now: Timestamp,
    net: SimIridium,
    drivers: [Sbd; 2],
    events: [Vec<DriverEvent>; 2],
}

#[allow(clippy::unwrap_used, reason = "a fixed, valid configuration")]
fn driver(peer: &str) -> Sbd {
    let mut cfg = SbdConfig::new("/dev/sim");
    cfg.peers.push(Peer {
        imei: peer.into(),
        prefix: route_prefix(peer),
    });
    cfg.validate().unwrap();
    Sbd::new(cfg, T0)
}

fn modem(imei: &str) -> SimConfig {
    SimConfig {
        imei: imei.into(),
        reply: KitReply::Never,
        ..SimConfig::default()
    }
}

impl Pair {
    fn new() -> Self {
        let mut net = SimIridium::new(
            NetworkConfig {
                latency_min_ms: 2_000,
                latency_max_ms: 8_000,
            },
            4,
        );
        net.add_modem(T0, modem(DISTRICT));
        net.add_modem(T0, modem(KIT));
        let mut p = Pair {
            now: T0,
            net,
            drivers: [driver(KIT), driver(DISTRICT)],
            events: [Vec::new(), Vec::new()],
        };
        for d in &mut p.drivers {
            d.handle_port_opened(T0);
        }
        p.run_until(30, |p| p.drivers.iter().all(Sbd::is_ready));
        assert_eq!(p.drivers[0].imei(), Some(DISTRICT));
        assert_eq!(p.drivers[1].imei(), Some(KIT));
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
                    moved = true;
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

    fn run_until(&mut self, secs: u64, done: impl Fn(&Pair) -> bool) {
        let limit = self.now + Duration::from_secs(secs);
        self.settle();
        while !done(self) {
            let next = self
                .drivers
                .iter()
                .filter_map(Sbd::poll_timeout)
                .chain(self.net.poll_timeout())
                .min()
                .filter(|t| *t <= limit);
            let Some(t) = next else {
                panic!("not reached by {limit}: {:#?}", self.events);
            };
            self.now = self.now.max(t);
            self.net.handle_timeout(self.now);
            for d in &mut self.drivers {
                d.handle_timeout(self.now);
            }
            self.settle();
        }
    }

    /// Driver `i`'s first frame event, taken with its receipt released.
    #[allow(
        clippy::unwrap_used,
        reason = "a test helper: a missing frame fails the test"
    )]
    fn take_frame(&mut self, i: usize) -> (Address, Vec<u8>) {
        let pos = self.events[i]
            .iter()
            .position(|e| matches!(e, DriverEvent::Frame { .. }))
            .unwrap();
        let DriverEvent::Frame {
            from,
            bytes,
            receipt,
            ..
        } = self.events[i].remove(pos)
        else {
            unreachable!()
        };
        self.submit(i, DriverCommand::Release(receipt.unwrap()));
        (from, bytes)
    }
}

fn has_frame(p: &Pair, i: usize) -> bool {
    p.events[i]
        .iter()
        .any(|e| matches!(e, DriverEvent::Frame { .. }))
}

fn frame_to(attempt: u64, imei: &str, bytes: &[u8]) -> DriverCommand {
    DriverCommand::SendFrame(FrameOut {
        attempt: AttemptId(attempt),
        to: Address::SbdImei(imei.to_owned()),
        bytes: bytes.to_vec(),
    })
}

#[test]
fn an_alert_goes_to_the_kit_and_its_ack_batch_comes_back_over_the_gateway() {
    let mut p = Pair::new();
    let alert = Frame::Alert(AlertFrame {
        id: ShortAlertId::new(0xA1B2).unwrap(),
        grade: Grade::Red,
        kind: "flash_flood".into(),
        exercise: false,
        expires: None,
        area: AreaRef::Named("V023".into()),
        code: AckCode::parse("K7XT"),
        text: "【红色预警】沙峪村山洪，沿河住户立即向高处转移".into(),
    })
    .encode()
    .unwrap();
    p.submit(0, frame_to(1, KIT, &alert));
    p.run_until(120, |p| has_frame(p, 1));
    assert!(p.events[0].iter().any(|e| matches!(
        e,
        DriverEvent::Sent {
            attempt: AttemptId(1),
            ..
        }
    )));
    // The district's MO carried the prefix; the kit got the frame alone, from the district
    // (its single peer: an alert frame names no origin).
    let mo = &p.net.modem(0).unwrap().mo_log()[0].payload;
    assert_eq!(mo[..17], *format!("RB{KIT}").as_bytes());
    assert_eq!(mo[17..], alert[..]);
    assert_eq!(p.take_frame(1), (Address::SbdImei(DISTRICT.into()), alert));
    assert!(
        p.net.modem(1).unwrap().mt_buffer().is_empty(),
        "released: cleared"
    );

    // The kit's people answered: an ack batch with the kit's IMEI as origin goes back.
    let acks = Frame::Acks(AckBatch {
        origin: Imei::parse(KIT),
        base_secs: 60_000_000,
        acks: vec![AckEntry {
            alert: ShortAlertId::new(0xA1B2).unwrap(),
            person: "crew-1".into(),
            code: AckCode::parse("K7XT").unwrap(),
            offset_secs: 42,
        }],
    })
    .encode()
    .unwrap();
    p.submit(1, frame_to(2, DISTRICT, &acks));
    p.run_until(120, |p| has_frame(p, 0));
    assert_eq!(p.take_frame(0), (Address::SbdImei(KIT.into()), acks));
    assert_eq!(p.net.routed().len(), 2);
    assert!(
        p.events
            .iter()
            .flatten()
            .all(|e| !matches!(e, DriverEvent::Inbound { .. } | DriverEvent::Failed { .. })),
        "{:#?}",
        p.events
    );
}
