//! The device side: one Meshtastic radio with a mesh of simulated nodes behind it, as a
//! sans-IO state machine that speaks the real framing and messages.
//!
//! The radio answers the handshake (its identity, its node database with names, positions,
//! SNR, last heard and hops away, a config record the client must skip, then
//! `config_complete_id`), takes packets into a transmit queue of `queue_len` slots and says
//! so with a queue status (refusing when full), and puts them on the air one at a time,
//! `airtime_ms` each. A direct text reaches its node after `hop_latency_ms` per hop unless
//! lost (each try succeeds with `(1 - loss)^(2 × hops)`, there and back); the radio
//! retransmits up to three times and then NAKs with `MAX_RETRANSMIT`. The node's ack comes
//! back as a routing packet with the text's id as `request_id`. The person at the node
//! replies after a delay drawn from a seeded RNG (the ack code from the text, a set text,
//! or never). Nodes report their position every `position_interval_secs`.
//!
//! Faults: firmware log lines between frames, garbage bytes, routing packets never sent,
//! handshakes ignored, a reboot or a hang-up after N packets.

use std::collections::VecDeque;
use std::time::Duration;

use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tocsin_core::Timestamp;

use crate::mesh::{
    self, BROADCAST, Data, FromRadio, MeshPacket, NodeInfo, Position, QueueStatus, Routing,
    RoutingError, ToRadio, User, from_radio, mesh_packet, node_id, port, routing, to_radio,
};
use crate::wire::{self, Frame};

/// How the simulated radio and mesh behave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// The radio's own node number.
    #[serde(default = "default_my_node_num")]
    pub my_node_num: u32,
    /// The radio's name.
    #[serde(default = "default_my_name")]
    pub my_name: String,
    /// Time on air of one packet, ms.
    #[serde(default = "default_airtime_ms")]
    pub airtime_ms: u64,
    /// Time per hop for a packet to travel (relay airtime and wait), ms.
    #[serde(default = "default_hop_latency_ms")]
    pub hop_latency_ms: u64,
    /// Transmit queue slots.
    #[serde(default = "default_queue_len")]
    pub queue_len: u32,
    /// The nodes of the mesh.
    #[serde(default)]
    pub nodes: Vec<NodeScript>,
    /// How often nodes with a position report it, seconds (`None`: never on their own).
    #[serde(default)]
    pub position_interval_secs: Option<u64>,
    /// Whether texts from nodes arrive PKI-encrypted (sender authenticated).
    #[serde(default)]
    pub pki: bool,
    /// Injected faults.
    #[serde(default)]
    pub faults: Faults,
}

/// `!deadbeef`.
pub fn default_my_node_num() -> u32 {
    0xdead_beef
}
/// The name of a district gateway radio.
pub fn default_my_name() -> String {
    "Tocsin gateway".to_owned()
}
/// 2 s: a full packet on the LongFast preset.
pub fn default_airtime_ms() -> u64 {
    2_000
}
/// 2.5 s per hop.
pub fn default_hop_latency_ms() -> u64 {
    2_500
}
/// 16 slots, a small radio's transmit queue.
pub fn default_queue_len() -> u32 {
    16
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            my_node_num: default_my_node_num(),
            my_name: default_my_name(),
            airtime_ms: default_airtime_ms(),
            hop_latency_ms: default_hop_latency_ms(),
            queue_len: default_queue_len(),
            nodes: Vec::new(),
            position_interval_secs: None,
            pki: false,
            faults: Faults::default(),
        }
    }
}

/// One node of the mesh and the person carrying it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeScript {
    /// Node number.
    pub num: u32,
    /// Full name.
    pub long_name: String,
    /// Short name.
    #[serde(default)]
    pub short_name: String,
    /// Hops from our radio (1 = a direct neighbour).
    #[serde(default = "default_hops")]
    pub hops: u32,
    /// Probability that one hop loses a packet.
    #[serde(default)]
    pub loss: f64,
    /// NAK every text to this node with this routing error code instead of delivering.
    #[serde(default)]
    pub nak: Option<i32>,
    /// What the person does with a text that reached the node.
    #[serde(default = "default_behaviour")]
    pub behaviour: ReplyBehaviour,
    /// Where the node is: latitude, longitude in degrees.
    #[serde(default)]
    pub position: Option<(f64, f64)>,
    /// How long ago the radio last heard it when the simulation starts, seconds.
    #[serde(default = "default_heard_ago_secs")]
    pub heard_ago_secs: u64,
}

/// A direct neighbour.
pub fn default_hops() -> u32 {
    1
}
/// Replies within 10 to 60 s.
pub fn default_behaviour() -> ReplyBehaviour {
    ReplyBehaviour::Reply {
        min_secs: 10.0,
        max_secs: 60.0,
    }
}
/// Heard 5 minutes ago.
pub fn default_heard_ago_secs() -> u64 {
    300
}

impl NodeScript {
    /// A direct neighbour at Beijing with every other default.
    pub fn new(num: u32, long_name: &str, behaviour: ReplyBehaviour) -> Self {
        NodeScript {
            num,
            long_name: long_name.to_owned(),
            short_name: node_id(num).chars().skip(5).collect(),
            hops: default_hops(),
            loss: 0.0,
            nak: None,
            behaviour,
            position: Some((39.9042, 116.4074)),
            heard_ago_secs: default_heard_ago_secs(),
        }
    }
}

/// What a person does with a text that reached their node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReplyBehaviour {
    /// Replies `1 CODE` with the code from the text after a uniform delay.
    Reply {
        /// Shortest delay, seconds.
        min_secs: f64,
        /// Longest delay, seconds.
        max_secs: f64,
    },
    /// Never replies.
    Never,
    /// Replies with this exact text.
    Text {
        /// The reply.
        text: String,
        /// Shortest delay, seconds.
        min_secs: f64,
        /// Longest delay, seconds.
        max_secs: f64,
    },
}

/// Faults to inject.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Print firmware log lines between frames.
    #[serde(default)]
    pub log_lines: bool,
    /// Probability of garbage bytes before a frame.
    #[serde(default)]
    pub garbage_rate: f64,
    /// Never send acks or NAKs (a radio that loses track).
    #[serde(default)]
    pub drop_routing: bool,
    /// Ignore this many handshake requests first.
    #[serde(default)]
    pub ignore_config_requests: u32,
    /// Reboot after taking this many packets (once).
    #[serde(default)]
    pub reboot_after_packets: Option<u32>,
    /// Hang up the link after taking this many packets (once; the runner closes it).
    #[serde(default)]
    pub hangup_after_packets: Option<u32>,
}

/// One packet the radio took from the client.
#[derive(Clone, Debug, PartialEq)]
pub struct SentPacket {
    /// Destination node number.
    pub to: u32,
    /// The client's packet id.
    pub id: u32,
    /// Channel index.
    pub channel: u32,
    /// Hop limit asked for.
    pub hop_limit: u32,
    /// Whether an ack was asked for.
    pub want_ack: bool,
    /// The text (lossily decoded).
    pub text: String,
    /// The application port (1 text, 256 Tocsin's compact frames).
    pub portnum: i32,
    /// The payload exactly as the client gave it.
    pub payload: Vec<u8>,
    /// When the radio took it.
    pub at: Timestamp,
}

/// Something the radio or the mesh does later.
#[derive(Clone, Debug)]
enum Action {
    /// A queued packet has been on the air; route it.
    Transmitted(SentPacket),
    /// A message for the client.
    ToClient(from_radio::Variant),
    /// A person replies from their node.
    Reply { from: u32, text: String },
    /// Nodes report their positions.
    Positions,
}

/// The simulated radio and mesh. See the module documentation.
pub struct SimRadio {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    decoder: wire::Decoder,
    scheduled: Vec<(Timestamp, u64, Action)>,
    seq: u64,
    from_radio_id: u32,
    tx_queue: u32,
    tx_busy_until: Timestamp,
    out: VecDeque<Vec<u8>>,
    sent: Vec<SentPacket>,
    packets_taken: u32,
    refusals: u32,
    config_requests: u32,
    hangup: bool,
}

impl SimRadio {
    /// A radio just powered on, with its own seeded RNG.
    pub fn new(cfg: SimConfig, seed: u64, now: Timestamp) -> Self {
        let mut sim = SimRadio {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
            decoder: wire::Decoder::new(),
            scheduled: Vec::new(),
            seq: 0,
            from_radio_id: 0,
            tx_queue: 0,
            tx_busy_until: now,
            out: VecDeque::new(),
            sent: Vec::new(),
            packets_taken: 0,
            refusals: 0,
            config_requests: 0,
            hangup: false,
        };
        if let Some(secs) = sim.cfg.position_interval_secs.filter(|s| *s > 0) {
            sim.schedule(now + Duration::from_secs(secs), Action::Positions);
        }
        sim
    }

    /// Every packet the radio took, in order.
    pub fn sent(&self) -> &[SentPacket] {
        &self.sent
    }

    /// How many packets it refused because its queue was full.
    pub fn refusals(&self) -> u32 {
        self.refusals
    }

    /// How many handshakes were asked for (answered or not).
    pub fn config_requests(&self) -> u32 {
        self.config_requests
    }

    /// Whether texts from nodes arrive PKI-encrypted from now on.
    pub fn set_pki(&mut self, on: bool) {
        self.cfg.pki = on;
    }

    /// Replaces the injected faults.
    pub fn set_faults(&mut self, faults: Faults) {
        self.cfg.faults = faults;
    }

    /// Whether the link should hang up now (the runner closes it).
    pub fn take_hangup(&mut self) -> bool {
        std::mem::take(&mut self.hangup)
    }

    /// A client (re)connected: a half-read frame is gone. Messages not yet written stay
    /// queued for the new client, as the radio keeps them for the next one.
    pub fn handle_client_connected(&mut self, _now: Timestamp) {
        self.decoder.clear();
    }

    /// The radio reboots: it says so, and its transmit queue is lost. Packets already on
    /// the air still reach their nodes.
    pub fn reboot(&mut self, now: Timestamp) {
        self.scheduled
            .retain(|(t, _, a)| !(matches!(a, Action::Transmitted(_)) && *t > now));
        self.tx_queue = 0;
        self.tx_busy_until = now;
        self.decoder.clear();
        self.for_client(from_radio::Variant::Rebooted(true));
    }

    /// A text from node `from` reaches the radio now.
    pub fn deliver_text(&mut self, now: Timestamp, from: u32, text: &str) {
        let p = self.packet_from(now, from, port::TEXT_MESSAGE, text.as_bytes().to_vec(), 0);
        self.for_client(from_radio::Variant::Packet(p));
    }

    /// A packet on `portnum` (e.g. 256, another Tocsin node's compact frame) from node
    /// `from` reaches the radio now.
    pub fn deliver_payload(&mut self, now: Timestamp, from: u32, portnum: i32, payload: Vec<u8>) {
        let p = self.packet_from(now, from, portnum, payload, 0);
        self.for_client(from_radio::Variant::Packet(p));
    }

    /// Node `from` reports its position now.
    pub fn report_position(&mut self, now: Timestamp, from: u32, lat: f64, lon: f64) {
        let pos = Position {
            latitude_i: Some((lat * 1e7).round() as i32),
            longitude_i: Some((lon * 1e7).round() as i32),
            altitude: None,
        };
        let p = self.packet_from(now, from, port::POSITION, pos.encode_to_vec(), 0);
        self.for_client(from_radio::Variant::Packet(p));
    }

    /// A routing packet from `from` about packet `request_id` reaches the client now.
    pub fn inject_routing(
        &mut self,
        now: Timestamp,
        from: u32,
        request_id: u32,
        reason: RoutingError,
    ) {
        let m = self.routing_packet(now, from, request_id, reason);
        self.for_client(m);
    }

    /// Bytes from the client.
    pub fn handle_rx(&mut self, now: Timestamp, bytes: &[u8]) {
        self.decoder.push(bytes);
        while let Some(frame) = self.decoder.next_frame() {
            let Ok(Frame::Packet(body)) = frame else {
                continue; // Wake bytes and noise.
            };
            match ToRadio::decode(body.as_slice()) {
                Ok(ToRadio { variant: Some(v) }) => self.on_to_radio(now, v),
                Ok(_) => {}
                Err(e) => tracing::debug!(%e, "simulated radio: undecodable ToRadio"),
            }
        }
    }

    /// Time passed: run what is due.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        loop {
            let due = self
                .scheduled
                .iter()
                .enumerate()
                .filter(|(_, (t, _, _))| *t <= now)
                .min_by_key(|(_, (t, s, _))| (*t, *s))
                .map(|(i, _)| i);
            let Some(i) = due else { break };
            let (at, _, action) = self.scheduled.swap_remove(i);
            match action {
                Action::Transmitted(p) => self.route(at, p),
                Action::ToClient(v) => self.for_client(v),
                Action::Reply { from, text } => self.deliver_text(at, from, &text),
                Action::Positions => {
                    let reports: Vec<(u32, f64, f64)> = self
                        .cfg
                        .nodes
                        .iter()
                        .filter_map(|n| n.position.map(|(la, lo)| (n.num, la, lo)))
                        .collect();
                    for (num, la, lo) in reports {
                        self.report_position(at, num, la, lo);
                    }
                    if let Some(secs) = self.cfg.position_interval_secs.filter(|s| *s > 0) {
                        self.schedule(at + Duration::from_secs(secs), Action::Positions);
                    }
                }
            }
        }
    }

    /// Bytes for the client.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.scheduled.iter().map(|(t, _, _)| *t).min()
    }

    fn schedule(&mut self, at: Timestamp, action: Action) {
        self.seq += 1;
        self.scheduled.push((at, self.seq, action));
    }

    fn on_to_radio(&mut self, now: Timestamp, v: to_radio::Variant) {
        match v {
            to_radio::Variant::WantConfigId(nonce) => {
                self.config_requests += 1;
                if self.cfg.faults.ignore_config_requests > 0 {
                    self.cfg.faults.ignore_config_requests -= 1;
                    return;
                }
                self.handshake(now, nonce);
            }
            to_radio::Variant::Packet(p) => self.take_packet(now, p),
            to_radio::Variant::Heartbeat(_) | to_radio::Variant::Disconnect(_) => {}
        }
    }

    fn handshake(&mut self, now: Timestamp, nonce: u32) {
        let me = self.cfg.my_node_num;
        self.for_client(from_radio::Variant::MyInfo(mesh::MyNodeInfo {
            my_node_num: me,
        }));
        let mut infos = vec![NodeInfo {
            num: me,
            user: Some(User {
                id: node_id(me),
                long_name: self.cfg.my_name.clone(),
                short_name: "TCSN".into(),
                public_key: vec![],
            }),
            position: None,
            snr: 0.0,
            last_heard: secs(now),
            hops_away: None,
        }];
        for n in &self.cfg.nodes {
            infos.push(NodeInfo {
                num: n.num,
                user: Some(User {
                    id: node_id(n.num),
                    long_name: n.long_name.clone(),
                    short_name: n.short_name.clone(),
                    public_key: if self.cfg.pki { vec![7; 32] } else { vec![] },
                }),
                position: n.position.map(|(la, lo)| Position {
                    latitude_i: Some((la * 1e7).round() as i32),
                    longitude_i: Some((lo * 1e7).round() as i32),
                    altitude: Some(50),
                }),
                snr: snr_for(n.hops),
                last_heard: secs(now)
                    .saturating_sub(u32::try_from(n.heard_ago_secs).unwrap_or(u32::MAX)),
                hops_away: Some(n.hops.saturating_sub(1)),
            });
        }
        for info in infos {
            self.for_client(from_radio::Variant::NodeInfo(info));
        }
        // A config record (field 5) the client does not know and must skip.
        self.from_radio_id += 1;
        let mut raw = FromRadio {
            id: self.from_radio_id,
            variant: None,
        }
        .encode_to_vec();
        raw.extend_from_slice(&[0x2A, 0x04, 0x0A, 0x02, 0x08, 0x01]);
        self.push_frame(&raw);
        self.for_client(from_radio::Variant::ConfigCompleteId(nonce));
    }

    fn take_packet(&mut self, now: Timestamp, p: MeshPacket) {
        let id = p.id;
        if self.tx_queue >= self.cfg.queue_len {
            self.refusals += 1;
            self.for_client(from_radio::Variant::QueueStatus(QueueStatus {
                res: 1,
                free: 0,
                maxlen: self.cfg.queue_len,
                mesh_packet_id: id,
            }));
            return;
        }
        self.tx_queue += 1;
        self.packets_taken += 1;
        let (portnum, payload) = p
            .data()
            .map(|d| (d.portnum, d.payload.clone()))
            .unwrap_or_default();
        let record = SentPacket {
            to: p.to,
            id,
            channel: p.channel,
            hop_limit: p.hop_limit,
            want_ack: p.want_ack,
            text: String::from_utf8_lossy(&payload).into_owned(),
            portnum,
            payload,
            at: now,
        };
        self.sent.push(record.clone());
        self.for_client(from_radio::Variant::QueueStatus(QueueStatus {
            res: 0,
            free: self.cfg.queue_len - self.tx_queue,
            maxlen: self.cfg.queue_len,
            mesh_packet_id: id,
        }));
        let start = self.tx_busy_until.max(now);
        let done = start + Duration::from_millis(self.cfg.airtime_ms);
        self.tx_busy_until = done;
        self.schedule(done, Action::Transmitted(record));
        if self.cfg.faults.reboot_after_packets == Some(self.packets_taken) {
            self.cfg.faults.reboot_after_packets = None;
            self.reboot(now);
        }
        if self.cfg.faults.hangup_after_packets == Some(self.packets_taken) {
            self.cfg.faults.hangup_after_packets = None;
            self.hangup = true;
        }
    }

    /// A packet has been on the air: deliver it, ack it, NAK it.
    fn route(&mut self, at: Timestamp, p: SentPacket) {
        self.tx_queue = self.tx_queue.saturating_sub(1);
        let me = self.cfg.my_node_num;
        let hop = Duration::from_millis(self.cfg.hop_latency_ms);
        if p.to == BROADCAST {
            if p.want_ack {
                // Implicit ack: the radio heard a neighbour rebroadcast it.
                let m = self.routing_packet(at, me, p.id, RoutingError::None);
                self.schedule(at + hop, Action::ToClient(m));
            }
            return;
        }
        let Some(node) = self.cfg.nodes.iter().find(|n| n.num == p.to).cloned() else {
            // No one answers: the radio retransmits, then gives up.
            let gap = Duration::from_millis(self.cfg.airtime_ms) + hop * 2 + Duration::from_secs(1);
            if p.want_ack && !self.cfg.faults.drop_routing {
                let m = self.routing_packet(at, me, p.id, RoutingError::MaxRetransmit);
                self.schedule(at + gap * 4, Action::ToClient(m));
            }
            return;
        };
        if let Some(code) = node.nak {
            if p.want_ack && !self.cfg.faults.drop_routing {
                let m = self.routing_packet(at, me, p.id, RoutingError::from_code(code));
                self.schedule(at + hop, Action::ToClient(m));
            }
            return;
        }
        let path = hop * node.hops.max(1);
        let gap = Duration::from_millis(self.cfg.airtime_ms) + path * 2 + Duration::from_secs(1);
        let success = (1.0 - node.loss.clamp(0.0, 1.0)).powi(2 * node.hops.max(1) as i32);
        let try_ok = (0..4u32).find(|_| self.rng.random::<f64>() < success);
        let Some(k) = try_ok else {
            if p.want_ack && !self.cfg.faults.drop_routing {
                let m = self.routing_packet(at, me, p.id, RoutingError::MaxRetransmit);
                self.schedule(at + gap * 4, Action::ToClient(m));
            }
            return;
        };
        let arrived = at + gap * k + path;
        if p.want_ack && !self.cfg.faults.drop_routing {
            let m = self.routing_packet(arrived, node.num, p.id, RoutingError::None);
            self.schedule(arrived + path, Action::ToClient(m));
        }
        let reply = match &node.behaviour {
            // A person's app shows texts only: a private-app packet gets no answer.
            _ if p.portnum != port::TEXT_MESSAGE => None,
            ReplyBehaviour::Never => None,
            ReplyBehaviour::Reply { min_secs, max_secs } => {
                let code = extract_code(&p.text);
                let text = code.map_or_else(|| "1".to_owned(), |c| format!("1 {c}"));
                Some((text, self.delay(*min_secs, *max_secs)))
            }
            ReplyBehaviour::Text {
                text,
                min_secs,
                max_secs,
            } => Some((text.clone(), self.delay(*min_secs, *max_secs))),
        };
        if let Some((text, delay)) = reply {
            self.schedule(
                arrived + delay + path,
                Action::Reply {
                    from: node.num,
                    text,
                },
            );
        }
    }

    fn delay(&mut self, min: f64, max: f64) -> Duration {
        let (lo, hi) = (min.max(0.0), max.max(min).max(0.0));
        let secs = if hi > lo {
            self.rng.random_range(lo..hi)
        } else {
            lo
        };
        Duration::from_secs_f64(secs.min(86_400.0))
    }

    fn routing_packet(
        &mut self,
        now: Timestamp,
        from: u32,
        request_id: u32,
        reason: RoutingError,
    ) -> from_radio::Variant {
        let payload = Routing {
            variant: Some(routing::Variant::ErrorReason(reason.code())),
        }
        .encode_to_vec();
        let mut p = self.packet_from(now, from, port::ROUTING, payload, request_id);
        p.want_ack = false;
        from_radio::Variant::Packet(p)
    }

    /// A packet from node `from` to our radio as the radio hands it to the client.
    fn packet_from(
        &mut self,
        now: Timestamp,
        from: u32,
        portnum: i32,
        payload: Vec<u8>,
        request_id: u32,
    ) -> MeshPacket {
        let hops = self
            .cfg
            .nodes
            .iter()
            .find(|n| n.num == from)
            .map_or(0, |n| n.hops.saturating_sub(1));
        let hop_start = 3u32.max(hops);
        let local = from == self.cfg.my_node_num;
        MeshPacket {
            from,
            to: self.cfg.my_node_num,
            channel: 0,
            payload: Some(mesh_packet::Payload::Decoded(Data {
                portnum,
                payload,
                request_id,
                ..Data::default()
            })),
            id: self.rng.random::<u32>() | 1,
            rx_time: secs(now),
            rx_snr: if local { 0.0 } else { snr_for(hops + 1) },
            hop_limit: hop_start - hops,
            want_ack: !local && matches!(portnum, port::TEXT_MESSAGE | port::PRIVATE_APP),
            priority: 0,
            rx_rssi: if local { 0 } else { -90 - 5 * hops as i32 },
            via_mqtt: false,
            hop_start: if local { 0 } else { hop_start },
            pki_encrypted: !local
                && self.cfg.pki
                && matches!(portnum, port::TEXT_MESSAGE | port::PRIVATE_APP),
        }
    }

    fn for_client(&mut self, v: from_radio::Variant) {
        self.from_radio_id += 1;
        let m = FromRadio {
            id: self.from_radio_id,
            variant: Some(v),
        };
        self.emit(&m);
    }

    fn emit(&mut self, m: &FromRadio) {
        self.push_frame(&m.encode_to_vec());
    }

    fn push_frame(&mut self, body: &[u8]) {
        let mut b = Vec::new();
        if self.cfg.faults.log_lines {
            wire::emit(
                &Frame::Log(format!(
                    "\u{1b}[34mDEBUG\u{1b}[0m | ??:??:?? {} [Router] frame of {} bytes for the phone",
                    self.from_radio_id,
                    body.len()
                )),
                &mut b,
            );
        }
        let garbage = self.cfg.faults.garbage_rate;
        if garbage > 0.0 && self.rng.random::<f64>() < garbage {
            let n = self.rng.random_range(1..16);
            for _ in 0..n {
                let byte: u8 = self.rng.random();
                if byte != wire::START1 {
                    b.push(byte);
                }
            }
            b.extend_from_slice(b"\r\n");
        }
        wire::emit(&Frame::Packet(body.to_vec()), &mut b);
        self.out.push_back(b);
    }
}

/// Seconds since the epoch, as the radio's clock gives it.
fn secs(t: Timestamp) -> u32 {
    u32::try_from(t.as_millis() / 1000).unwrap_or(0)
}

/// A plausible SNR for a node so many hops away.
fn snr_for(hops: u32) -> f32 {
    10.0 - 3.5 * hops as f32
}

/// The ack code in a warning: the first code-like word after the last `回复` (`回复 1 K7XT
/// 确认`, `回复1 K7XT`).
pub fn extract_code(text: &str) -> Option<String> {
    let after = text.rfind("回复").and_then(|i| text.get(i..))?;
    let after = after.trim_start_matches("回复");
    after
        .split_whitespace()
        .map(|w| w.trim_start_matches('1'))
        .find(|w| (3..=10).contains(&w.len()) && w.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_750_000_000_000);

    fn decode_all(sim: &mut SimRadio) -> Vec<FromRadio> {
        let mut d = wire::Decoder::new();
        while let Some(b) = sim.poll_transmit() {
            d.push(&b);
        }
        let mut out = Vec::new();
        while let Some(f) = d.next_frame() {
            if let Ok(Frame::Packet(body)) = f {
                out.push(FromRadio::decode(body.as_slice()).unwrap());
            }
        }
        out
    }

    fn frame_to_radio(v: to_radio::Variant) -> Vec<u8> {
        wire::frame_packet(&ToRadio { variant: Some(v) }.encode_to_vec())
    }

    #[test]
    fn codes_are_found_in_both_text_forms() {
        assert_eq!(
            extract_code("【红色预警】山洪 回复 1 K7XT 确认").as_deref(),
            Some("K7XT")
        );
        assert_eq!(
            extract_code("【红色预警】山洪 回复1 K7XT").as_deref(),
            Some("K7XT")
        );
        assert_eq!(extract_code("no code"), None);
    }

    #[test]
    fn the_handshake_streams_state_and_ends_with_the_nonce() {
        let cfg = SimConfig {
            nodes: vec![NodeScript::new(7, "张三", ReplyBehaviour::Never)],
            faults: Faults {
                log_lines: true,
                ..Faults::default()
            },
            ..SimConfig::default()
        };
        let mut sim = SimRadio::new(cfg, 1, T0);
        let mut bytes = wire::WAKE.to_vec();
        bytes.extend(frame_to_radio(to_radio::Variant::WantConfigId(99)));
        sim.handle_rx(T0, &bytes);
        let got = decode_all(&mut sim);
        assert!(matches!(
            got[0].variant,
            Some(from_radio::Variant::MyInfo(_))
        ));
        assert_eq!(
            got.iter()
                .filter(|m| matches!(m.variant, Some(from_radio::Variant::NodeInfo(_))))
                .count(),
            2
        );
        assert!(
            got.iter().any(|m| m.variant.is_none()),
            "the unknown config record"
        );
        assert_eq!(
            got.last().unwrap().variant,
            Some(from_radio::Variant::ConfigCompleteId(99))
        );
    }

    #[test]
    fn a_text_is_queued_aired_acked_and_answered() {
        let cfg = SimConfig {
            nodes: vec![NodeScript::new(
                7,
                "张三",
                ReplyBehaviour::Reply {
                    min_secs: 5.0,
                    max_secs: 5.0,
                },
            )],
            ..SimConfig::default()
        };
        let mut sim = SimRadio::new(cfg, 1, T0);
        let p = MeshPacket {
            to: 7,
            id: 0x101,
            hop_limit: 3,
            want_ack: true,
            payload: Some(mesh_packet::Payload::Decoded(Data {
                portnum: port::TEXT_MESSAGE,
                payload: "预警 回复 1 ABCD 确认".as_bytes().to_vec(),
                ..Data::default()
            })),
            ..MeshPacket::default()
        };
        sim.handle_rx(T0, &frame_to_radio(to_radio::Variant::Packet(p)));
        let got = decode_all(&mut sim);
        assert!(
            matches!(&got[0].variant, Some(from_radio::Variant::QueueStatus(q)) if q.res == 0 && q.mesh_packet_id == 0x101 && q.free == 15)
        );
        let mut now = T0;
        let mut acked = false;
        let mut reply = None;
        while let Some(t) = sim.poll_timeout() {
            now = t;
            sim.handle_timeout(now);
            for m in decode_all(&mut sim) {
                let Some(from_radio::Variant::Packet(p)) = m.variant else {
                    continue;
                };
                let d = p.data().unwrap();
                if d.portnum == port::ROUTING {
                    assert_eq!((p.from, d.request_id), (7, 0x101));
                    acked = true;
                } else if d.portnum == port::TEXT_MESSAGE {
                    reply = Some(String::from_utf8(d.payload.clone()).unwrap());
                }
            }
        }
        assert!(acked);
        assert_eq!(reply.as_deref(), Some("1 ABCD"));
        // 2 s airtime, 2.5 s there, 5 s to reply, 2.5 s back.
        assert_eq!(now, T0 + Duration::from_millis(12_000));
    }
}
