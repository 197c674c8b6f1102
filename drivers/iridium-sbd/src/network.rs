//! Several simulated 9603 modems sharing one simulated Iridium gateway, as one sans-IO
//! state machine: two Tocsin nodes (a district and a field kit) can talk SBD to each other.
//!
//! Each modem is a [`SimSbd`] with its own IMEI. An MO message whose routing prefix
//! ([`route_prefix`]: `RB` and the destination's IMEI) names another modem of the network
//! is taken by the gateway at the end of the session that carried it, the prefix stripped,
//! and after a seeded latency queued as an MT message for that modem, which rings (ring
//! alerts on) and is found by its next mailbox check as usual. A message longer than the
//! MT limit (270 bytes on a 9603) is not delivered, as the gateway would not. An MO message
//! without such a prefix goes to the modem's scripted kit, as on a lone [`SimSbd`].

use std::time::Duration;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tocsin_core::Timestamp;

pub use crate::sim::route_prefix;
use crate::sim::{SimConfig, SimSbd};

/// Largest MT message the gateway delivers to a 9602/9603.
pub const MT_MAX: usize = 270;

/// The gateway between the modems.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Shortest time from the end of the sending session to the MT message being queued
    /// for the destination, ms.
    #[serde(default = "default_latency_min_ms")]
    pub latency_min_ms: u64,
    /// Longest such time, ms.
    #[serde(default = "default_latency_max_ms")]
    pub latency_max_ms: u64,
}

/// 2 s.
pub fn default_latency_min_ms() -> u64 {
    2_000
}
/// 10 s.
pub fn default_latency_max_ms() -> u64 {
    10_000
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            latency_min_ms: default_latency_min_ms(),
            latency_max_ms: default_latency_max_ms(),
        }
    }
}

/// One MO message the gateway routed from one modem to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    /// The sending modem (index in the network).
    pub from: usize,
    /// The destination modem.
    pub to: usize,
    /// The payload as delivered (routing prefix stripped).
    pub payload: Vec<u8>,
    /// When the sending session ended.
    pub at: Timestamp,
    /// When it is (or was) queued for the destination; `None` when the gateway refused it
    /// (longer than [`MT_MAX`]).
    pub queued_at: Option<Timestamp>,
}

/// The simulated modems and their gateway. See the module documentation.
pub struct SimIridium {
    cfg: NetworkConfig,
    rng: ChaCha8Rng,
    modems: Vec<SimSbd>,
    in_transit: Vec<(Timestamp, u64, usize, Vec<u8>)>,
    seq: u64,
    routed: Vec<Routed>,
}

impl SimIridium {
    /// A network with no modems yet, with its own seeded RNG.
    pub fn new(cfg: NetworkConfig, seed: u64) -> Self {
        SimIridium {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
            modems: Vec::new(),
            in_transit: Vec::new(),
            seq: 0,
            routed: Vec::new(),
        }
    }

    /// Powers on a modem (its RNG seeded from the network's); returns its index.
    pub fn add_modem(&mut self, now: Timestamp, cfg: SimConfig) -> usize {
        let seed = self.rng.next_u64();
        self.modems.push(SimSbd::new(cfg, seed, now));
        let imeis: Vec<String> = self.modems.iter().map(|m| m.imei().to_owned()).collect();
        for m in &mut self.modems {
            let others = imeis.iter().filter(|i| *i != m.imei()).cloned().collect();
            m.set_routes(others);
        }
        self.modems.len() - 1
    }

    /// Modem `idx`.
    pub fn modem(&self, idx: usize) -> Option<&SimSbd> {
        self.modems.get(idx)
    }

    /// Modem `idx`, to queue MT messages or change its faults.
    pub fn modem_mut(&mut self, idx: usize) -> Option<&mut SimSbd> {
        self.modems.get_mut(idx)
    }

    /// How many modems there are.
    pub fn len(&self) -> usize {
        self.modems.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.modems.is_empty()
    }

    /// Every message routed between modems, in order.
    pub fn routed(&self) -> &[Routed] {
        &self.routed
    }

    /// Bytes from the driver of modem `idx`.
    pub fn handle_rx(&mut self, now: Timestamp, idx: usize, bytes: &[u8]) {
        if let Some(m) = self.modems.get_mut(idx) {
            m.handle_rx(now, bytes);
        }
        self.collect(now);
    }

    /// Bytes from modem `idx` for its driver.
    pub fn poll_transmit(&mut self, idx: usize) -> Option<Vec<u8>> {
        self.modems.get_mut(idx)?.poll_transmit()
    }

    /// Modem `idx` was power-cycled or its port reopened.
    pub fn handle_power_cycle(&mut self, idx: usize, now: Timestamp) {
        if let Some(m) = self.modems.get_mut(idx) {
            m.handle_power_cycle(now);
        }
    }

    /// Time passed: deliver what has arrived at the gateway and run every modem.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        loop {
            let due = self
                .in_transit
                .iter()
                .enumerate()
                .filter(|(_, (t, _, _, _))| *t <= now)
                .min_by_key(|(_, (t, s, _, _))| (*t, *s))
                .map(|(i, _)| i);
            let Some(i) = due else { break };
            let (_, _, to, payload) = self.in_transit.swap_remove(i);
            if let Some(m) = self.modems.get_mut(to) {
                m.queue_mt(payload);
            }
        }
        for m in &mut self.modems {
            m.handle_timeout(now);
        }
        self.collect(now);
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.modems
            .iter()
            .filter_map(SimSbd::poll_timeout)
            .chain(self.in_transit.iter().map(|(t, _, _, _)| *t))
            .min()
    }

    /// Takes the messages the modems' sessions routed to other modems into transit.
    fn collect(&mut self, now: Timestamp) {
        for from in 0..self.modems.len() {
            while let Some((imei, payload)) =
                self.modems.get_mut(from).and_then(SimSbd::poll_routed)
            {
                let Some(to) = self.modems.iter().position(|m| m.imei() == imei) else {
                    continue;
                };
                let queued_at = if payload.len() > MT_MAX {
                    tracing::warn!(
                        len = payload.len(),
                        "simulated gateway refuses an MT message over {MT_MAX} bytes"
                    );
                    None
                } else {
                    let lo = self.cfg.latency_min_ms;
                    let hi = self.cfg.latency_max_ms.max(lo);
                    let ms = if hi > lo {
                        self.rng.random_range(lo..=hi)
                    } else {
                        lo
                    };
                    let at = now + Duration::from_millis(ms);
                    self.seq += 1;
                    self.in_transit.push((at, self.seq, to, payload.clone()));
                    Some(at)
                };
                self.routed.push(Routed {
                    from,
                    to,
                    payload,
                    at: now,
                    queued_at,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::KitReply;
    use crate::wire;

    const T0: Timestamp = Timestamp(1_750_000_000_000);
    const A: &str = "300434063839690";
    const B: &str = "300234010753370";

    fn drain(net: &mut SimIridium, idx: usize) -> String {
        let mut b = Vec::new();
        while let Some(x) = net.poll_transmit(idx) {
            b.extend(x);
        }
        String::from_utf8_lossy(&b).into_owned()
    }

    fn modem(imei: &str) -> SimConfig {
        SimConfig {
            imei: imei.into(),
            reply: KitReply::Never,
            session_min_ms: 5_000,
            session_max_ms: 5_000,
            ..SimConfig::default()
        }
    }

    /// Writes `payload` into modem `idx`'s MO buffer and runs a session to its end.
    fn send(net: &mut SimIridium, now: Timestamp, idx: usize, payload: &[u8]) -> Timestamp {
        net.handle_rx(now, idx, format!("AT+SBDWB={}\r", payload.len()).as_bytes());
        assert!(drain(net, idx).contains("READY"));
        let mut body = payload.to_vec();
        body.extend_from_slice(&wire::checksum(payload).to_be_bytes());
        net.handle_rx(now, idx, &body);
        assert!(drain(net, idx).contains("\r\n0\r\n"));
        net.handle_rx(now, idx, b"AT+SBDIX\r");
        let end = now + Duration::from_secs(5);
        net.handle_timeout(end);
        assert!(drain(net, idx).contains("+SBDIX: 0, "));
        end
    }

    #[test]
    fn a_prefixed_mo_becomes_an_mt_for_the_named_modem_after_the_latency() {
        let mut net = SimIridium::new(
            NetworkConfig {
                latency_min_ms: 3_000,
                latency_max_ms: 3_000,
            },
            9,
        );
        let a = net.add_modem(T0, modem(A));
        let b = net.add_modem(T0, modem(B));
        net.handle_rx(T0, b, b"ATE0\rAT+SBDMTA=1\r");
        drain(&mut net, b);
        let mut payload = b"RB".to_vec();
        payload.extend_from_slice(B.as_bytes());
        payload.extend_from_slice(&[0x13, 0x00, 0x00, 0x05, 0x20, 0xBD, 0xE2, 0xB3, 0xFD]);
        let end = send(&mut net, T0, a, &payload);
        assert_eq!(net.modem(a).unwrap().mo_log()[0].payload, payload);
        let sent = &net.routed()[0];
        assert_eq!((sent.from, sent.to), (a, b));
        assert_eq!(sent.payload, payload[17..]);
        // Not before the latency; then the modem rings and a session fetches it exactly.
        net.handle_timeout(end + Duration::from_millis(2_999));
        assert_eq!(drain(&mut net, b), "");
        net.handle_timeout(end + Duration::from_secs(3));
        assert_eq!(drain(&mut net, b), "\r\nSBDRING\r\n");
        assert_eq!(net.modem(b).unwrap().mt_queued(), 1);
        let t = end + Duration::from_secs(3);
        net.handle_rx(t, b, b"AT+SBDIXA\r");
        net.handle_timeout(t + Duration::from_secs(5));
        assert!(drain(&mut net, b).contains("+SBDIX: 0, 0, 1, 1, 9, 0"));
        assert_eq!(net.modem(b).unwrap().mt_buffer(), &payload[17..]);
    }

    #[test]
    fn unprefixed_and_oversized_messages_are_not_routed() {
        let mut net = SimIridium::new(NetworkConfig::default(), 1);
        let a = net.add_modem(T0, modem(A));
        let b = net.add_modem(T0, modem(B));
        let t = send(&mut net, T0, a, b"\x15\x00hi");
        assert!(net.routed().is_empty());
        // A prefix naming the sender itself or an unknown IMEI is no route either.
        let mut own = b"RB".to_vec();
        own.extend_from_slice(A.as_bytes());
        own.push(0x15);
        let t = send(&mut net, t, a, &own);
        assert!(net.routed().is_empty());
        let mut big = b"RB".to_vec();
        big.extend_from_slice(B.as_bytes());
        big.extend(std::iter::repeat_n(0x15, 300));
        let t = send(&mut net, t, a, &big);
        assert_eq!(net.routed().len(), 1);
        assert_eq!(net.routed()[0].queued_at, None);
        net.handle_timeout(t + Duration::from_secs(600));
        assert_eq!(net.modem(b).unwrap().mt_queued(), 0);
    }
}
