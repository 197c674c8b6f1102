//! The radio conversation as a sans-IO state machine (in the style of `quinn-proto`).
//!
//! Inputs: [`Radio::handle_rx`], [`Radio::handle_timeout`], [`Radio::submit`],
//! [`Radio::broadcast`], [`Radio::handle_port_opened`], [`Radio::handle_port_lost`], each
//! with `now`. Outputs: [`Radio::poll_transmit`] (bytes for the port), [`Radio::poll_event`]
//! (facts for the router), [`Radio::poll_timeout`] (the next instant something is due).
//!
//! After the port opens the driver sends wake bytes and `want_config_id = nonce`; the radio
//! streams its identity and node database and ends with `config_complete_id = nonce`. The
//! node table built from that is kept up to date from every packet heard (last heard, SNR,
//! hops away, position, names). Only then do texts go out.
//!
//! A text goes to one node with `want_ack`, one packet at a time: the driver hands the
//! packet to the radio and waits for the radio's queue status before handing the next, so
//! it never overfills the radio's transmit queue, and it paces packets by the configured
//! airtime budget (`per_minute`, `burst`). The queue status is `Sent`. The destination's
//! ack comes back as a routing packet whose `request_id` is our packet id, from the
//! destination node: that is `Delivered`. A routing packet with an error is a NAK:
//! `Failed`, retryable or not by its reason. An ack from our own radio only says a relay
//! rebroadcast the packet (an implicit ack): it is not a delivery, and the driver keeps
//! waiting for the real one until `ack_timeout_secs`, then reports `Failed` retryable.
//!
//! A compact frame (`SendFrame`, another Tocsin node's traffic) goes the same way, one
//! packet with `want_ack` on the private app port (256), its bytes as they are, with the
//! same queue status, ack and NAK handling; one longer than the payload limit fails for
//! good (a frame is never split). Compact frames received on that port are `Frame` events.
//!
//! Texts from other nodes are `Inbound { from: MeshNode(num) }`; the radio keeps nothing,
//! so there is no receipt. A channel broadcast ([`Radio::broadcast`]) is public information
//! and never an attempt: it reaches no one in particular and is never reported as reaching
//! a person.
//!
//! At-least-once, and honest about it: the driver never sends a packet twice on its own.
//! When the link is lost or the radio reboots while it holds a packet not yet confirmed,
//! that attempt is reported `Failed` retryable with a reason that says it may have gone out.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use prost::Message;
use serde::{Deserialize, Serialize};
use tocsin_channel::{Body, DriverCommand, DriverEvent, Health, Job};
use tocsin_core::{Address, AttemptId, Timestamp};

use crate::config::MeshConfig;
use crate::mesh::{
    self, BROADCAST, Data, FromRadio, Heartbeat, MeshPacket, Position, QueueStatus, Routing,
    RoutingError, ToRadio, User, from_radio, mesh_packet, node_id, port, routing, to_radio,
};
use crate::wire::{self, Frame, WAKE};

/// The state machine's timers; each indexes one deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// The handshake must complete by now, or it starts again.
    Handshake,
    /// Time for the next heartbeat.
    Heartbeat,
    /// The airtime budget (or a full radio queue) allows the next packet.
    Pace,
    /// The radio's queue status for the packet handed to it is due.
    QueueStatus,
    /// The earliest routing-ack deadline.
    Ack,
}

const TIMERS: [Timer; 5] = [
    Timer::Handshake,
    Timer::Heartbeat,
    Timer::Pace,
    Timer::QueueStatus,
    Timer::Ack,
];

/// How long to wait after the radio refused a packet (its queue was full).
const QUEUE_FULL_RETRY: Duration = Duration::from_secs(5);
/// How many refusals in a row before the attempt is reported failed.
const MAX_REFUSALS: u32 = 3;
/// Most nodes kept in the table; the least recently heard goes first.
pub const MAX_NODES: usize = 1024;
/// Packets remembered to drop duplicates the radio forwards twice.
const DEDUP: usize = 256;

/// A node of the mesh as the driver knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeshNode {
    /// Node number.
    pub num: u32,
    /// Full name, as its owner set it.
    pub long_name: String,
    /// Short name.
    pub short_name: String,
    /// When a packet from it was last heard (our clock for live packets, the radio's for
    /// its database).
    pub last_heard: Option<Timestamp>,
    /// SNR of the last packet heard from it, dB.
    pub snr: Option<f32>,
    /// Hops away it was last heard.
    pub hops_away: Option<u32>,
    /// Its last reported position.
    pub position: Option<NodePosition>,
    /// Whether it has a PKI key (its direct messages can be authenticated).
    pub has_public_key: bool,
}

/// A reported position.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodePosition {
    /// Degrees north.
    pub latitude: f64,
    /// Degrees east.
    pub longitude: f64,
    /// Metres above sea level, when reported.
    pub altitude: Option<i32>,
}

impl MeshNode {
    fn new(num: u32) -> Self {
        MeshNode {
            num,
            long_name: String::new(),
            short_name: String::new(),
            last_heard: None,
            snr: None,
            hops_away: None,
            position: None,
            has_public_key: false,
        }
    }
}

/// A broadcast that cannot be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BroadcastError {
    /// The channel index is not 0 to 7.
    #[error("channel {0} is not a channel index 0 to 7")]
    BadChannel(u32),
    /// Nothing to say.
    #[error("empty text")]
    Empty,
    /// Too many waiting.
    #[error("broadcast queue full")]
    QueueFull,
}

/// Where the conversation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// The port is closed.
    Down,
    /// `want_config_id = nonce` sent; waiting for `config_complete_id = nonce`.
    Handshake(u32),
    /// The handshake is complete; texts go out.
    Ready,
}

/// Something waiting to go on the air.
#[derive(Clone, Debug)]
enum Item {
    /// A text or a frame to one node, with want_ack.
    Text(Job),
    /// A channel broadcast.
    Broadcast { channel: u32, text: String },
}

/// The packet handed to the radio, awaiting its queue status.
#[derive(Debug)]
struct Handed {
    id: u32,
    item: Item,
}

/// A text the radio queued, awaiting its routing ack.
#[derive(Debug)]
struct Tracking {
    attempt: AttemptId,
    to: u32,
    deadline: Timestamp,
    relayed: bool,
}

/// The radio conversation. See the module documentation.
pub struct Radio {
    cfg: MeshConfig,
    link: Link,
    decoder: wire::Decoder,
    rng: u64,
    my_num: Option<u32>,
    nodes: BTreeMap<u32, MeshNode>,
    nodes_changed: bool,
    queue: VecDeque<Job>,
    broadcasts: VecDeque<Item>,
    handed: Option<Handed>,
    refusals: u32,
    radio_full: bool,
    tracking: HashMap<u32, Tracking>,
    /// Theoretical arrival time of the airtime budget (GCRA).
    tat: Timestamp,
    recent: VecDeque<(u32, u32)>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<DriverEvent>,
    timers: [Option<Timestamp>; 5],
    health: Health,
    last_health: Option<Health>,
}

impl Radio {
    /// A radio whose port is not open yet; call [`Self::handle_port_opened`] when it is.
    pub fn new(cfg: MeshConfig, now: Timestamp) -> Self {
        // Packet ids must not repeat across restarts (nodes drop a (from, id) they have
        // seen), so the generator is seeded from the clock.
        let seed = (now.as_millis() as u64) ^ 0x9E37_79B9_7F4A_7C15;
        Radio {
            cfg,
            link: Link::Down,
            decoder: wire::Decoder::new(),
            rng: seed | 1,
            my_num: None,
            nodes: BTreeMap::new(),
            nodes_changed: false,
            queue: VecDeque::new(),
            broadcasts: VecDeque::new(),
            handed: None,
            refusals: 0,
            radio_full: false,
            tracking: HashMap::new(),
            tat: now,
            recent: VecDeque::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            timers: [None; 5],
            health: Health::default(),
            last_health: None,
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &MeshConfig {
        &self.cfg
    }

    /// Whether the handshake is complete and texts go out.
    pub fn is_ready(&self) -> bool {
        self.link == Link::Ready
    }

    /// The radio's own node number, once it said.
    pub fn my_node_num(&self) -> Option<u32> {
        self.my_num
    }

    /// Texts waiting in the driver (not counting one handed to the radio).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Texts on the air whose ack has not come yet.
    pub fn awaiting_ack(&self) -> usize {
        self.tracking.len()
    }

    /// The node table, by node number.
    pub fn nodes(&self) -> impl Iterator<Item = &MeshNode> {
        self.nodes.values()
    }

    /// One node.
    pub fn node(&self, num: u32) -> Option<&MeshNode> {
        self.nodes.get(&num)
    }

    /// Whether the node table changed since the last call.
    pub fn take_nodes_changed(&mut self) -> bool {
        std::mem::take(&mut self.nodes_changed)
    }

    /// The port is open: wake the radio and start the handshake.
    pub fn handle_port_opened(&mut self, now: Timestamp) {
        self.decoder.clear();
        self.transmit.clear();
        self.handed = None;
        self.radio_full = false;
        self.start_handshake(now);
    }

    /// The port is gone. Queued texts stay queued; a packet handed to the radio but not
    /// confirmed is failed as retryable (it may have gone out). Texts on the air keep
    /// waiting for their acks: the radio itself may still be running (TCP).
    pub fn handle_port_lost(&mut self, now: Timestamp) {
        self.fail_handed(now, "link lost while the radio took the packet");
        self.link = Link::Down;
        self.decoder.clear();
        // Frames not written yet must not go out on the next link: the packet among them
        // has just been reported failed.
        self.transmit.clear();
        for t in [
            Timer::Handshake,
            Timer::Heartbeat,
            Timer::Pace,
            Timer::QueueStatus,
        ] {
            self.timers[t as usize] = None;
        }
        self.health.up = false;
        self.health.registered = false;
        self.health.last_error = Some("link lost".to_owned());
        self.note_health();
    }

    /// Opening the port failed: report the radio down with the reason.
    pub fn handle_open_failed(&mut self, now: Timestamp, error: &str) {
        let _ = now;
        self.health.up = false;
        self.health.registered = false;
        self.health.last_error = Some(format!("cannot open the radio: {error}"));
        self.note_health();
    }

    /// Bytes read from the port.
    pub fn handle_rx(&mut self, now: Timestamp, bytes: &[u8]) {
        if self.link == Link::Down {
            return;
        }
        self.decoder.push(bytes);
        while let Some(frame) = self.decoder.next_frame() {
            match frame {
                Ok(Frame::Packet(body)) => match FromRadio::decode(body.as_slice()) {
                    Ok(m) => self.on_from_radio(now, m, &body),
                    Err(e) => self.events.push_back(DriverEvent::Unrecognized {
                        raw: format!("undecodable FromRadio ({e}): {}", mesh::hex(&body)),
                    }),
                },
                Ok(Frame::Log(line)) => {
                    if !line.trim().is_empty() {
                        tracing::debug!(target: "meshtastic::firmware", "{}", line.trim_end());
                    }
                }
                Err(m) => self.events.push_back(DriverEvent::Unrecognized {
                    raw: format!("{m}"),
                }),
            }
        }
        self.pump(now);
    }

    /// A command from the router.
    pub fn submit(&mut self, now: Timestamp, cmd: DriverCommand) {
        match cmd {
            DriverCommand::Send(out) => self.on_send(out.into()),
            DriverCommand::SendFrame(f) => self.on_send(f.into()),
            DriverCommand::Cancel(attempt) => {
                if let Some(pos) = self.queue.iter().position(|o| o.attempt == attempt) {
                    self.queue.remove(pos);
                    self.events.push_back(DriverEvent::Failed {
                        attempt,
                        retryable: false,
                        reason: "cancelled".to_owned(),
                    });
                }
                // Already handed to the radio: it is reported as usual.
            }
            // The radio keeps no inbound messages: nothing to release.
            DriverCommand::Release(_) => {}
        }
        self.pump(now);
    }

    /// Queues a text broadcast on `channel`: public information for everyone on it. It
    /// goes out after every waiting person's text, within the same airtime budget, and is
    /// never reported as reaching anyone.
    pub fn broadcast(
        &mut self,
        now: Timestamp,
        channel: u32,
        text: &str,
    ) -> Result<(), BroadcastError> {
        if channel > 7 {
            return Err(BroadcastError::BadChannel(channel));
        }
        if text.trim().is_empty() {
            return Err(BroadcastError::Empty);
        }
        if self.broadcasts.len() >= self.cfg.queue_limit {
            return Err(BroadcastError::QueueFull);
        }
        self.broadcasts.push_back(Item::Broadcast {
            channel,
            text: text.to_owned(),
        });
        self.pump(now);
        Ok(())
    }

    /// Time passed; act on whatever deadline is due.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        for timer in TIMERS {
            if self.timers[timer as usize].is_none_or(|t| t > now) {
                continue;
            }
            self.timers[timer as usize] = None;
            match timer {
                Timer::Handshake => {
                    if matches!(self.link, Link::Handshake(_)) {
                        self.health.up = false;
                        self.health.registered = false;
                        self.health.last_error =
                            Some("no answer to the want_config handshake".to_owned());
                        self.note_health();
                        self.start_handshake(now);
                    }
                }
                Timer::Heartbeat => {
                    if self.link == Link::Ready {
                        self.send_to_radio(&to_radio::Variant::Heartbeat(Heartbeat {}));
                        self.set_timer(Timer::Heartbeat, now + self.cfg.heartbeat());
                    }
                }
                Timer::Pace => self.radio_full = false,
                Timer::QueueStatus => {
                    if let Some(h) = self.handed.take() {
                        // Older firmware sends no queue status: the packet was written,
                        // so take it as queued and wait for its ack.
                        tracing::debug!(id = h.id, "no queue status from the radio");
                        self.on_queued(now, h, "no queue status from the radio");
                    }
                }
                Timer::Ack => self.expire_acks(now),
            }
        }
        self.pump(now);
    }

    /// Bytes to write to the port, in order.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// The next fact for the router.
    pub fn poll_event(&mut self) -> Option<DriverEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.iter().flatten().min().copied()
    }

    fn set_timer(&mut self, t: Timer, at: Timestamp) {
        self.timers[t as usize] = Some(at);
    }

    fn next_random(&mut self) -> u32 {
        // xorshift64*: plenty for packet ids and nonces.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }

    fn next_packet_id(&mut self) -> u32 {
        loop {
            let id = self.next_random();
            if id != 0 && !self.tracking.contains_key(&id) {
                return id;
            }
        }
    }

    fn start_handshake(&mut self, now: Timestamp) {
        let nonce = self.next_packet_id();
        self.link = Link::Handshake(nonce);
        self.transmit.push_back(WAKE.to_vec());
        self.send_to_radio(&to_radio::Variant::WantConfigId(nonce));
        self.set_timer(Timer::Handshake, now + self.cfg.handshake_timeout());
    }

    fn send_to_radio(&mut self, v: &to_radio::Variant) {
        let body = mesh::encode(&ToRadio {
            variant: Some(v.clone()),
        });
        self.transmit.push_back(wire::frame_packet(&body));
    }

    fn on_send(&mut self, out: Job) {
        let refuse = |reason: String| DriverEvent::Failed {
            attempt: out.attempt,
            retryable: false,
            reason,
        };
        let to = match out.to {
            Address::MeshNode(n) => n,
            ref other => {
                self.events
                    .push_back(refuse(format!("{other} is not a mesh node")));
                return;
            }
        };
        if to == BROADCAST || to == 0 {
            self.events.push_back(refuse(format!(
                "{} is not one person's node: a broadcast never counts as reaching a person",
                node_id(to)
            )));
            return;
        }
        if Some(to) == self.my_num {
            self.events
                .push_back(refuse(format!("{} is this radio itself", node_id(to))));
            return;
        }
        match &out.body {
            Body::Frame(b) if b.is_empty() => {
                self.events
                    .push_back(refuse("empty frame: nothing to send".to_owned()));
                return;
            }
            Body::Frame(b) if b.len() > self.cfg.max_payload_bytes => {
                self.events.push_back(refuse(format!(
                    "compact frame (never split) of {} bytes exceeds the {}-byte mesh payload",
                    b.len(),
                    self.cfg.max_payload_bytes
                )));
                return;
            }
            _ => {}
        }
        if self.queue.len() >= self.cfg.queue_limit {
            self.events.push_back(DriverEvent::Failed {
                attempt: out.attempt,
                retryable: true,
                reason: format!("radio queue full ({} waiting)", self.queue.len()),
            });
            return;
        }
        self.events.push_back(DriverEvent::Accepted {
            attempt: out.attempt,
        });
        self.queue.push_back(out);
    }

    /// Hands the next packet to the radio when the link, the radio's queue and the
    /// airtime budget allow.
    fn pump(&mut self, now: Timestamp) {
        if self.link != Link::Ready || self.handed.is_some() {
            return;
        }
        if self.queue.is_empty() && self.broadcasts.is_empty() {
            return;
        }
        if self.radio_full {
            return; // The Pace timer is set; try again then.
        }
        let interval = self.cfg.send_interval();
        let tolerance = interval * self.cfg.burst.saturating_sub(1);
        let earliest = Timestamp(self.tat.as_millis().saturating_sub(millis(tolerance)));
        if earliest > now {
            self.set_timer(Timer::Pace, earliest);
            return;
        }
        let item = match self.queue.pop_front() {
            Some(out) => Item::Text(out),
            None => match self.broadcasts.pop_front() {
                Some(b) => b,
                None => return,
            },
        };
        let id = self.next_packet_id();
        let (to, channel, want_ack, portnum, payload) = match &item {
            Item::Text(out) => {
                let to = match out.to {
                    Address::MeshNode(n) => n,
                    _ => BROADCAST, // refused in on_send; unreachable in practice
                };
                let (portnum, payload) = match &out.body {
                    Body::Text(text) => (
                        port::TEXT_MESSAGE,
                        fit_text(text, self.cfg.max_payload_bytes).into_bytes(),
                    ),
                    Body::Frame(bytes) => (port::PRIVATE_APP, bytes.clone()),
                };
                (to, self.cfg.channel, true, portnum, payload)
            }
            Item::Broadcast { channel, text } => (
                BROADCAST,
                *channel,
                false,
                port::TEXT_MESSAGE,
                fit_text(text, self.cfg.max_payload_bytes).into_bytes(),
            ),
        };
        let packet = MeshPacket {
            to,
            channel,
            id,
            hop_limit: self.cfg.hop_limit,
            want_ack,
            payload: Some(mesh_packet::Payload::Decoded(Data {
                portnum,
                payload,
                ..Data::default()
            })),
            ..MeshPacket::default()
        };
        self.send_to_radio(&to_radio::Variant::Packet(packet));
        self.tat = self.tat.max(now) + interval;
        self.handed = Some(Handed { id, item });
        self.set_timer(Timer::QueueStatus, now + self.cfg.queue_status_timeout());
    }

    fn on_from_radio(&mut self, now: Timestamp, m: FromRadio, body: &[u8]) {
        let Some(variant) = m.variant else {
            return; // Channels, config, metadata...: not ours.
        };
        match variant {
            from_radio::Variant::Packet(p) => self.on_packet(now, p, body),
            from_radio::Variant::MyInfo(info) => self.my_num = Some(info.my_node_num),
            from_radio::Variant::NodeInfo(n) => self.on_node_info(n),
            from_radio::Variant::LogRecord(r) => {
                tracing::debug!(target: "meshtastic::firmware", "{}", r.message.trim_end());
            }
            from_radio::Variant::ConfigCompleteId(nonce) => {
                if self.link == Link::Handshake(nonce) {
                    self.link = Link::Ready;
                    self.timers[Timer::Handshake as usize] = None;
                    self.set_timer(Timer::Heartbeat, now + self.cfg.heartbeat());
                    self.health.up = true;
                    self.health.registered = true;
                    self.note_health();
                } else {
                    tracing::debug!(nonce, "config_complete for an old handshake");
                }
            }
            from_radio::Variant::Rebooted(_) => {
                self.fail_handed(now, "the radio rebooted while it took the packet");
                self.health.up = false;
                self.health.registered = false;
                self.health.last_error = Some("radio rebooted".to_owned());
                self.note_health();
                self.radio_full = false;
                self.timers[Timer::QueueStatus as usize] = None;
                self.start_handshake(now);
            }
            from_radio::Variant::QueueStatus(q) => self.on_queue_status(now, q),
        }
    }

    fn on_queue_status(&mut self, now: Timestamp, q: QueueStatus) {
        let matches = self
            .handed
            .as_ref()
            .is_some_and(|h| q.mesh_packet_id == h.id || q.mesh_packet_id == 0);
        if !matches {
            tracing::debug!(?q, "queue status for a packet not ours");
            return;
        }
        let Some(h) = self.handed.take() else { return };
        self.timers[Timer::QueueStatus as usize] = None;
        if q.res == 0 {
            self.refusals = 0;
            self.on_queued(now, h, "queued by the radio");
            return;
        }
        // Refused (its queue is full): it did not go out. Put it back and wait.
        self.refusals += 1;
        self.radio_full = true;
        self.set_timer(Timer::Pace, now + QUEUE_FULL_RETRY);
        // The budget was spent on a packet that did not go out: give it back.
        self.tat = Timestamp(
            self.tat
                .as_millis()
                .saturating_sub(millis(self.cfg.send_interval())),
        );
        match h.item {
            Item::Text(out) if self.refusals >= MAX_REFUSALS => {
                self.refusals = 0;
                let reason = format!(
                    "the radio refused the packet {MAX_REFUSALS} times (queue status {}, {} of {} free)",
                    q.res, q.free, q.maxlen
                );
                self.health.last_error = Some(reason.clone());
                self.events.push_back(DriverEvent::Failed {
                    attempt: out.attempt,
                    retryable: true,
                    reason,
                });
            }
            Item::Text(out) => self.queue.push_front(out),
            b @ Item::Broadcast { .. } => self.broadcasts.push_front(b),
        }
    }

    fn on_queued(&mut self, now: Timestamp, h: Handed, how: &str) {
        let Item::Text(out) = h.item else {
            return; // A broadcast: nothing to track.
        };
        let to = match out.to {
            Address::MeshNode(n) => n,
            _ => return,
        };
        self.health.sent += 1;
        self.events.push_back(DriverEvent::Sent {
            attempt: out.attempt,
            reference: format!("{} packet 0x{:08x} ({how})", node_id(to), h.id),
        });
        let deadline = now + self.cfg.ack_timeout();
        self.tracking.insert(
            h.id,
            Tracking {
                attempt: out.attempt,
                to,
                deadline,
                relayed: false,
            },
        );
        self.arm_ack_timer();
    }

    fn arm_ack_timer(&mut self) {
        self.timers[Timer::Ack as usize] = self.tracking.values().map(|t| t.deadline).min();
    }

    fn fail_handed(&mut self, _now: Timestamp, why: &str) {
        let Some(h) = self.handed.take() else { return };
        self.timers[Timer::QueueStatus as usize] = None;
        match h.item {
            Item::Text(out) => self.events.push_back(DriverEvent::Failed {
                attempt: out.attempt,
                retryable: true,
                reason: format!("{why}; the message may have gone out"),
            }),
            Item::Broadcast { .. } => {}
        }
    }

    fn expire_acks(&mut self, now: Timestamp) {
        let due: Vec<u32> = self
            .tracking
            .iter()
            .filter(|(_, t)| t.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(t) = self.tracking.remove(&id) else {
                continue;
            };
            let heard = if t.relayed {
                "a relay was heard passing it on"
            } else {
                "no relay was heard"
            };
            self.events.push_back(DriverEvent::Failed {
                attempt: t.attempt,
                retryable: true,
                reason: format!(
                    "no ack from {} for packet 0x{id:08x} within {} s ({heard}); it may have arrived",
                    node_id(t.to),
                    self.cfg.ack_timeout_secs
                ),
            });
        }
        self.arm_ack_timer();
    }

    fn on_packet(&mut self, now: Timestamp, p: MeshPacket, body: &[u8]) {
        if p.id != 0 {
            if self.recent.contains(&(p.from, p.id)) {
                return;
            }
            if self.recent.len() >= DEDUP {
                self.recent.pop_front();
            }
            self.recent.push_back((p.from, p.id));
        }
        if p.from != 0 && Some(p.from) != self.my_num {
            let node = self.node_entry(p.from);
            node.last_heard = Some(now);
            if p.rx_snr != 0.0 && p.rx_snr.is_finite() {
                node.snr = Some(p.rx_snr);
            }
            if let Some(h) = p.hops_away() {
                node.hops_away = Some(h);
            }
            self.nodes_changed = true;
        }
        let Some(data) = p.data() else {
            return; // Encrypted on a channel we lack: not for us.
        };
        match data.portnum {
            port::ROUTING => self.on_routing(now, &p, data, body),
            port::TEXT_MESSAGE | port::ALERT => self.on_text(&p, data, body),
            port::PRIVATE_APP => self.on_frame(&p, data, body),
            port::TEXT_MESSAGE_COMPRESSED => self.events.push_back(DriverEvent::Unrecognized {
                raw: format!(
                    "compressed text the radio did not decompress: {}",
                    describe(&p, body)
                ),
            }),
            _ if p.from == 0 => {}
            port::POSITION => {
                if let Ok(pos) = Position::decode(data.payload.as_slice())
                    && let Some(position) = to_position(&pos)
                {
                    self.node_entry(p.from).position = Some(position);
                }
            }
            port::NODEINFO => {
                if let Ok(user) = User::decode(data.payload.as_slice()) {
                    apply_user(self.node_entry(p.from), &user);
                }
            }
            _ => {}
        }
    }

    fn on_routing(&mut self, now: Timestamp, p: &MeshPacket, data: &Data, body: &[u8]) {
        let reason = match Routing::decode(data.payload.as_slice()) {
            Ok(Routing {
                variant: Some(routing::Variant::ErrorReason(code)),
            }) => RoutingError::from_code(code),
            Ok(_) => return, // Route discovery: not an ack.
            Err(e) => {
                self.events.push_back(DriverEvent::Unrecognized {
                    raw: format!("undecodable routing payload ({e}): {}", describe(p, body)),
                });
                return;
            }
        };
        let id = data.request_id;
        // The answer can overtake the queue status (a NAK the radio makes itself).
        if self.handed.as_ref().is_some_and(|h| h.id == id)
            && let Some(h) = self.handed.take()
        {
            self.timers[Timer::QueueStatus as usize] = None;
            self.on_queued(now, h, "answered before its queue status");
        }
        let Some(track) = self.tracking.get_mut(&id) else {
            tracing::debug!(id, from = p.from, "routing packet for a packet not ours");
            return;
        };
        if reason == RoutingError::None {
            if p.from == track.to {
                let attempt = track.attempt;
                self.tracking.remove(&id);
                self.arm_ack_timer();
                self.events.push_back(DriverEvent::Delivered {
                    attempt,
                    evidence: format!("routing ack for packet 0x{id:08x}: {}", describe(p, body)),
                });
            } else if p.from == 0 || Some(p.from) == self.my_num {
                // Our radio heard a relay pass it on: an implicit ack, not a delivery.
                track.relayed = true;
            } else {
                self.events.push_back(DriverEvent::Unrecognized {
                    raw: format!(
                        "ack for packet 0x{id:08x} to {} came from another node: {}",
                        node_id(track.to),
                        describe(p, body)
                    ),
                });
            }
            return;
        }
        let attempt = track.attempt;
        self.tracking.remove(&id);
        self.arm_ack_timer();
        let reason_text = format!(
            "mesh NAK {} ({}) from {} for packet 0x{id:08x}",
            reason.name(),
            reason.code(),
            node_id(p.from)
        );
        self.health.last_error = Some(reason_text.clone());
        self.events.push_back(DriverEvent::Failed {
            attempt,
            retryable: reason.is_retryable(),
            reason: reason_text,
        });
    }

    fn on_text(&mut self, p: &MeshPacket, data: &Data, body: &[u8]) {
        if p.from == 0 || Some(p.from) == self.my_num {
            return;
        }
        let text = String::from_utf8_lossy(&data.payload).into_owned();
        if self.cfg.sender_authenticated && !p.pki_encrypted {
            // Authentication is promised to the router: a text whose sender the radio
            // could not verify must not pass as one.
            self.events.push_back(DriverEvent::Unrecognized {
                raw: format!(
                    "text {text:?} not PKI-encrypted, so its sender is not authenticated: {}",
                    describe(p, body)
                ),
            });
            return;
        }
        self.health.received += 1;
        self.events.push_back(DriverEvent::Inbound {
            from: Address::MeshNode(p.from),
            text,
            evidence: describe(p, body),
            sent_at: (p.rx_time > 0).then(|| Timestamp::from_millis(i64::from(p.rx_time) * 1000)),
            receipt: None,
            in_reply_to: None,
        });
    }

    /// A packet on the private app port: a compact frame from another Tocsin node, handed
    /// over with its exact bytes. Anything there that is not a compact frame (another
    /// application's) is reported, never guessed at.
    fn on_frame(&mut self, p: &MeshPacket, data: &Data, body: &[u8]) {
        if p.from == 0 || Some(p.from) == self.my_num {
            return;
        }
        if let Err(e) = tocsin_compact::Frame::decode(&data.payload) {
            self.events.push_back(DriverEvent::Unrecognized {
                raw: format!(
                    "private-app payload that is not a compact frame ({e}): {}",
                    describe(p, body)
                ),
            });
            return;
        }
        if self.cfg.sender_authenticated && !p.pki_encrypted {
            self.events.push_back(DriverEvent::Unrecognized {
                raw: format!(
                    "frame not PKI-encrypted, so its sender is not authenticated: {}",
                    describe(p, body)
                ),
            });
            return;
        }
        self.health.received += 1;
        self.events.push_back(DriverEvent::Frame {
            from: Address::MeshNode(p.from),
            bytes: data.payload.clone(),
            evidence: describe(p, body),
            receipt: None,
        });
    }

    fn on_node_info(&mut self, n: mesh::NodeInfo) {
        if n.num == 0 {
            return;
        }
        let node = self.node_entry(n.num);
        if let Some(user) = &n.user {
            apply_user(node, user);
        }
        if let Some(pos) = n.position.as_ref().and_then(to_position) {
            node.position = Some(pos);
        }
        if n.snr != 0.0 && n.snr.is_finite() {
            node.snr = Some(n.snr);
        }
        if n.last_heard > 0 {
            node.last_heard = Some(Timestamp::from_millis(i64::from(n.last_heard) * 1000));
        }
        if n.hops_away.is_some() {
            node.hops_away = n.hops_away;
        }
    }

    /// The table entry for `num`, created (evicting the least recently heard node when
    /// the table is full).
    fn node_entry(&mut self, num: u32) -> &mut MeshNode {
        self.nodes_changed = true;
        if !self.nodes.contains_key(&num) && self.nodes.len() >= MAX_NODES {
            let oldest = self
                .nodes
                .values()
                .min_by_key(|n| n.last_heard)
                .map(|n| n.num);
            if let Some(o) = oldest {
                self.nodes.remove(&o);
            }
        }
        self.nodes.entry(num).or_insert_with(|| MeshNode::new(num))
    }

    /// Emits a health event if anything changed since the last one.
    fn note_health(&mut self) {
        if self.last_health.as_ref() != Some(&self.health) {
            self.last_health = Some(self.health.clone());
            self.events
                .push_back(DriverEvent::Health(self.health.clone()));
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn apply_user(node: &mut MeshNode, user: &User) {
    if !user.long_name.is_empty() {
        node.long_name.clone_from(&user.long_name);
    }
    if !user.short_name.is_empty() {
        node.short_name.clone_from(&user.short_name);
    }
    if !user.public_key.is_empty() {
        node.has_public_key = true;
    }
}

fn to_position(p: &Position) -> Option<NodePosition> {
    let lat = f64::from(p.latitude_i?) * 1e-7;
    let lon = f64::from(p.longitude_i?) * 1e-7;
    // 0,0 is what a node without a fix reports.
    if (lat == 0.0 && lon == 0.0) || lat.abs() > 90.0 || lon.abs() > 180.0 {
        return None;
    }
    Some(NodePosition {
        latitude: lat,
        longitude: lon,
        altitude: p.altitude,
    })
}

/// A packet for the record: who, where, how, and the frame's bytes.
fn describe(p: &MeshPacket, body: &[u8]) -> String {
    let hops = p
        .hops_away()
        .map_or_else(|| "?".to_owned(), |h| h.to_string());
    format!(
        "from={} to={} id=0x{:08x} ch={} hops={hops} snr={} rssi={} pki={} frame={}",
        node_id(p.from),
        node_id(p.to),
        p.id,
        p.channel,
        p.rx_snr,
        p.rx_rssi,
        p.pki_encrypted,
        mesh::hex(body)
    )
}

/// Fits a text into `max` bytes of UTF-8. A longer text keeps its reply instruction
/// (from the last `回复`, which carries the ack code) whole and shortens what comes before
/// it, marking the cut with `…`; without one it is cut at a character boundary.
pub fn fit_text(text: &str, max: usize) -> String {
    const CUT: &str = "…";
    let text = text.trim();
    if text.len() <= max {
        return text.to_owned();
    }
    let tail = text
        .rfind("回复")
        .and_then(|i| text.get(i..))
        .filter(|t| t.len() + CUT.len() <= max / 2);
    match tail {
        Some(tail) => {
            let head_len = text.len() - tail.len();
            let head = text.get(..head_len).unwrap_or("");
            let budget = max - tail.len() - CUT.len();
            format!("{}{CUT}{tail}", cut_at_boundary(head, budget).trim_end())
        }
        None => format!(
            "{}{CUT}",
            cut_at_boundary(text, max.saturating_sub(CUT.len()))
        ),
    }
}

/// The longest prefix of `s` of at most `n` bytes that ends on a character boundary.
fn cut_at_boundary(s: &str, n: usize) -> &str {
    let mut i = n.min(s.len());
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    s.get(..i).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Faults, NodeScript, ReplyBehaviour, SimConfig, SimRadio};
    use tocsin_channel::{FrameOut, Outbound};

    const T0: Timestamp = Timestamp(1_750_000_000_000);
    const LEAD: u32 = 0x0a0b_0c0d;
    const FAR: u32 = 0x1122_3344;
    const WARNING: &str = "【红色预警】山洪红色预警：未来六小时沿河村庄可能发生山洪，请立即组织群众向高处转移。回复 1 K7XT 确认";

    fn send(attempt: u64, to: u32, text: &str) -> DriverCommand {
        DriverCommand::Send(Outbound {
            attempt: AttemptId(attempt),
            to: Address::MeshNode(to),
            text: text.to_owned(),
            want_report: true,
        })
    }

    fn sim_config() -> SimConfig {
        SimConfig {
            nodes: vec![
                NodeScript {
                    hops: 1,
                    ..NodeScript::new(
                        LEAD,
                        "王村长",
                        ReplyBehaviour::Reply {
                            min_secs: 20.0,
                            max_secs: 20.0,
                        },
                    )
                },
                NodeScript {
                    hops: 3,
                    ..NodeScript::new(FAR, "李队长", ReplyBehaviour::Never)
                },
            ],
            ..SimConfig::default()
        }
    }

    /// The driver and the simulated radio wired together on a virtual clock.
    struct Bench {
        radio: Radio,
        sim: SimRadio,
        now: Timestamp,
        events: Vec<DriverEvent>,
        byte_by_byte: bool,
    }

    impl Bench {
        fn new(sim_cfg: SimConfig) -> Self {
            Self::with(MeshConfig::serial("/dev/sim"), sim_cfg)
        }

        fn with(cfg: MeshConfig, sim_cfg: SimConfig) -> Self {
            let mut b = Bench {
                radio: Radio::new(cfg, T0),
                sim: SimRadio::new(sim_cfg, 42, T0),
                now: T0,
                events: Vec::new(),
                byte_by_byte: false,
            };
            b.radio.handle_port_opened(T0);
            b.run_until(
                |e| {
                    e.iter()
                        .any(|e| matches!(e, DriverEvent::Health(h) if h.up))
                },
                60,
            );
            assert!(b.radio.is_ready());
            b
        }

        fn pump(&mut self) {
            loop {
                let mut moved = false;
                while let Some(bytes) = self.radio.poll_transmit() {
                    self.sim.handle_rx(self.now, &bytes);
                    moved = true;
                }
                while let Some(bytes) = self.sim.poll_transmit() {
                    if self.byte_by_byte {
                        for b in bytes {
                            self.radio.handle_rx(self.now, &[b]);
                        }
                    } else {
                        self.radio.handle_rx(self.now, &bytes);
                    }
                    moved = true;
                }
                while let Some(e) = self.radio.poll_event() {
                    self.events.push(e);
                    moved = true;
                }
                if !moved {
                    return;
                }
            }
        }

        fn submit(&mut self, cmd: DriverCommand) {
            self.radio.submit(self.now, cmd);
            self.pump();
        }

        fn step(&mut self, limit: Timestamp) -> bool {
            let next = [self.radio.poll_timeout(), self.sim.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next.filter(|t| *t <= limit) else {
                return false;
            };
            self.now = self.now.max(next);
            self.radio.handle_timeout(self.now);
            self.sim.handle_timeout(self.now);
            self.pump();
            true
        }

        fn run_until(&mut self, done: impl Fn(&[DriverEvent]) -> bool, secs: u64) {
            let limit = self.now + Duration::from_secs(secs);
            self.pump();
            while !done(&self.events) {
                assert!(
                    self.step(limit),
                    "condition not reached by {limit}; events: {:#?}",
                    self.events
                );
            }
        }

        fn advance(&mut self, secs: u64) {
            let until = self.now + Duration::from_secs(secs);
            self.pump();
            while self.step(until) {}
            self.now = until;
            self.radio.handle_timeout(self.now);
            self.sim.handle_timeout(self.now);
            self.pump();
        }

        fn count(&self, pred: impl Fn(&DriverEvent) -> bool) -> usize {
            self.events.iter().filter(|e| pred(e)).count()
        }
    }

    fn delivered(attempt: u64) -> impl Fn(&[DriverEvent]) -> bool {
        move |e| {
            e.iter().any(
                |e| matches!(e, DriverEvent::Delivered { attempt: a, .. } if *a == AttemptId(attempt)),
            )
        }
    }

    fn failed(attempt: u64) -> impl Fn(&[DriverEvent]) -> bool {
        move |e| {
            e.iter().any(
                |e| matches!(e, DriverEvent::Failed { attempt: a, .. } if *a == AttemptId(attempt)),
            )
        }
    }

    #[test]
    fn handshake_builds_the_node_table() {
        let b = Bench::new(sim_config());
        assert_eq!(
            b.radio.my_node_num(),
            Some(crate::sim::default_my_node_num())
        );
        let lead = b.radio.node(LEAD).unwrap();
        assert_eq!(lead.long_name, "王村长");
        assert_eq!(lead.hops_away, Some(0), "a direct neighbour");
        assert!(lead.last_heard.is_some());
        assert!(lead.position.is_some());
        let far = b.radio.node(FAR).unwrap();
        assert_eq!(far.hops_away, Some(2));
        // The radio's own entry is in the table too.
        assert_eq!(b.radio.nodes().count(), 3);
        assert!(b.sim.config_requests() == 1);
    }

    #[test]
    fn a_text_is_sent_delivered_by_routing_ack_and_answered() {
        let mut b = Bench::new(sim_config());
        b.submit(send(1, LEAD, WARNING));
        assert!(matches!(
            b.events.last(),
            Some(DriverEvent::Accepted { .. }) | Some(DriverEvent::Sent { .. })
        ));
        b.run_until(delivered(1), 60);
        let sent = b.sim.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].to, LEAD);
        assert_eq!(sent[0].text, WARNING);
        assert!(sent[0].want_ack);
        assert_eq!(sent[0].hop_limit, 3);
        let Some(DriverEvent::Delivered { evidence, .. }) = b
            .events
            .iter()
            .find(|e| matches!(e, DriverEvent::Delivered { .. }))
        else {
            unreachable!()
        };
        assert!(
            evidence.contains(&format!("for packet 0x{:08x}", sent[0].id))
                && evidence.contains(&format!("from={}", node_id(LEAD)))
                && evidence.contains("frame="),
            "{evidence}"
        );
        b.run_until(
            |e| e.iter().any(|e| matches!(e, DriverEvent::Inbound { .. })),
            60,
        );
        let Some(DriverEvent::Inbound {
            from,
            text,
            receipt,
            sent_at,
            ..
        }) = b
            .events
            .iter()
            .find(|e| matches!(e, DriverEvent::Inbound { .. }))
        else {
            unreachable!()
        };
        assert_eq!(*from, Address::MeshNode(LEAD));
        assert_eq!(text, "1 K7XT");
        assert_eq!(*receipt, None);
        assert!(sent_at.is_some());
        // Order of facts: accepted, sent, delivered.
        let kinds: Vec<&str> = b
            .events
            .iter()
            .filter_map(|e| match e {
                DriverEvent::Accepted { .. } => Some("accepted"),
                DriverEvent::Sent { .. } => Some("sent"),
                DriverEvent::Delivered { .. } => Some("delivered"),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, ["accepted", "sent", "delivered"]);
    }

    /// The red flash-flood alert of docs/compact-encoding.md (21 bytes).
    const ALERT: [u8; 21] = [
        0x11, 0x00, 0xA1, 0xB2, 0xC7, 0x02, 0x0F, 0x42, 0x40, 0x04, 0x56, 0x30, 0x32, 0x33, 0x00,
        0xB9, 0xBD, 0xC9, 0xBD, 0xBA, 0xE9,
    ];

    fn frame(attempt: u64, to: u32, bytes: &[u8]) -> DriverCommand {
        DriverCommand::SendFrame(FrameOut {
            attempt: AttemptId(attempt),
            to: Address::MeshNode(to),
            bytes: bytes.to_vec(),
        })
    }

    #[test]
    fn a_frame_goes_out_on_the_private_port_with_want_ack_and_is_delivered() {
        let mut b = Bench::new(sim_config());
        b.radio.submit(b.now, frame(1, LEAD, &ALERT));
        let tx = b.radio.poll_transmit().unwrap();
        // The exact bytes: ToRadio{packet{to, decoded{portnum 256, payload}, id, hop 3,
        // want_ack}}, framed.
        let id = tx.get(tx.len() - 8..tx.len() - 4).unwrap();
        let mut want = vec![
            0x94, 0xC3, 0x00, 0x2C, 0x0A, 0x2A, 0x15, 0x0D, 0x0C, 0x0B, 0x0A,
        ];
        want.extend_from_slice(&[0x22, 0x1A, 0x08, 0x80, 0x02, 0x12, 0x15]);
        want.extend_from_slice(&ALERT);
        want.push(0x35);
        want.extend_from_slice(id);
        want.extend_from_slice(&[0x48, 0x03, 0x50, 0x01]);
        assert_eq!(tx, want);
        b.sim.handle_rx(b.now, &tx);
        b.pump();
        b.run_until(delivered(1), 60);
        let sent = b.sim.sent();
        assert_eq!(
            (
                sent[0].to,
                sent[0].portnum,
                &sent[0].payload[..],
                sent[0].want_ack
            ),
            (LEAD, 256, &ALERT[..], true)
        );
        let kinds: Vec<&str> = b
            .events
            .iter()
            .filter_map(|e| match e {
                DriverEvent::Accepted { .. } => Some("accepted"),
                DriverEvent::Sent { .. } => Some("sent"),
                DriverEvent::Delivered { .. } => Some("delivered"),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, ["accepted", "sent", "delivered"]);
        // A person's app shows no private-app packet: their script does not answer it.
        b.advance(120);
        assert_eq!(b.count(|e| matches!(e, DriverEvent::Inbound { .. })), 0);
    }

    #[test]
    fn a_frame_nak_is_handled_as_for_text() {
        let mut cfg = sim_config();
        cfg.nodes[0].nak = Some(RoutingError::NoChannel.code());
        let mut b = Bench::new(cfg);
        b.submit(frame(3, LEAD, &ALERT));
        b.run_until(failed(3), 60);
        assert!(b.events.iter().any(|e| matches!(e, DriverEvent::Failed { retryable: false, reason, .. } if reason.contains("NO_CHANNEL"))));
    }

    #[test]
    fn a_frame_over_the_payload_limit_fails_for_good_without_airtime() {
        let mut b = Bench::new(sim_config());
        let mut big = ALERT.to_vec();
        big.resize(234, 0xB0);
        b.submit(frame(1, LEAD, &big));
        b.submit(frame(2, LEAD, &[]));
        b.submit(frame(3, BROADCAST, &ALERT));
        b.submit(DriverCommand::SendFrame(FrameOut {
            attempt: AttemptId(4),
            to: Address::BeidouCard("0242286".into()),
            bytes: ALERT.to_vec(),
        }));
        let failed: Vec<(AttemptId, String)> = b
            .events
            .iter()
            .filter_map(|e| match e {
                DriverEvent::Failed {
                    attempt,
                    retryable: false,
                    reason,
                } => Some((*attempt, reason.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 4, "{:?}", b.events);
        assert!(
            failed[0].1.contains("234 bytes exceeds the 233-byte"),
            "{}",
            failed[0].1
        );
        b.advance(30);
        assert!(b.sim.sent().is_empty());
        big.truncate(233);
        b.submit(frame(5, LEAD, &big));
        b.run_until(delivered(5), 60);
        assert_eq!(b.sim.sent()[0].payload, big);
    }

    #[test]
    fn frames_on_the_private_port_become_frame_events_and_garbage_there_is_unrecognized() {
        let mut b = Bench::new(sim_config());
        b.sim
            .deliver_payload(b.now, FAR, port::PRIVATE_APP, ALERT.to_vec());
        b.pump();
        let frames: Vec<(&Address, &[u8], bool)> = b
            .events
            .iter()
            .filter_map(|e| match e {
                DriverEvent::Frame {
                    from,
                    bytes,
                    evidence,
                    receipt,
                } => Some((
                    from,
                    &bytes[..],
                    receipt.is_none() && evidence.contains(&mesh::hex(&ALERT)),
                )),
                _ => None,
            })
            .collect();
        assert_eq!(
            frames,
            [(&Address::MeshNode(FAR), &ALERT[..], true)],
            "{:?}",
            b.events
        );
        // Not a compact frame: another private application's bytes.
        b.sim
            .deliver_payload(b.now, FAR, port::PRIVATE_APP, vec![0x42, 0x01]);
        b.pump();
        assert_eq!(
            b.count(|e| matches!(e, DriverEvent::Unrecognized { raw } if raw.contains("not a compact frame"))),
            1
        );
        // A text that looks like a frame stays a text on the text port.
        b.sim.deliver_text(b.now, FAR, "\u{15}\u{0}hi");
        b.pump();
        assert_eq!(b.count(|e| matches!(e, DriverEvent::Frame { .. })), 1);
        assert_eq!(b.count(|e| matches!(e, DriverEvent::Inbound { .. })), 1);
        // Authenticated mode: only PKI-encrypted frames pass.
        let mut cfg = MeshConfig::serial("/dev/sim");
        cfg.sender_authenticated = true;
        let mut b = Bench::with(cfg, sim_config());
        b.sim
            .deliver_payload(b.now, FAR, port::PRIVATE_APP, ALERT.to_vec());
        b.pump();
        assert_eq!(b.count(|e| matches!(e, DriverEvent::Frame { .. })), 0);
        b.sim.set_pki(true);
        b.sim
            .deliver_payload(b.now, FAR, port::PRIVATE_APP, ALERT.to_vec());
        b.pump();
        assert_eq!(b.count(|e| matches!(e, DriverEvent::Frame { .. })), 1);
    }

    #[test]
    fn byte_by_byte_input_gives_the_same_outcome() {
        let mut b = Bench::new(SimConfig {
            faults: Faults {
                log_lines: true,
                ..Faults::default()
            },
            ..sim_config()
        });
        b.byte_by_byte = true;
        b.submit(send(1, LEAD, WARNING));
        b.run_until(delivered(1), 60);
        assert_eq!(
            b.count(|e| matches!(e, DriverEvent::Unrecognized { .. })),
            0,
            "{:#?}",
            b.events
        );
    }

    #[test]
    fn an_unreachable_node_is_a_retryable_nak() {
        let mut cfg = sim_config();
        cfg.nodes[1].loss = 1.0;
        let mut b = Bench::new(cfg);
        b.submit(send(2, FAR, WARNING));
        b.run_until(failed(2), 120);
        let Some(DriverEvent::Failed {
            retryable, reason, ..
        }) = b
            .events
            .iter()
            .find(|e| matches!(e, DriverEvent::Failed { .. }))
        else {
            unreachable!()
        };
        assert!(*retryable);
        assert!(reason.contains("MAX_RETRANSMIT"), "{reason}");
        assert_eq!(b.count(|e| matches!(e, DriverEvent::Delivered { .. })), 0);
        assert_eq!(b.radio.awaiting_ack(), 0);
    }

    #[test]
    fn a_permanent_nak_is_not_retryable() {
        let mut cfg = sim_config();
        cfg.nodes[0].nak = Some(RoutingError::NoChannel.code());
        let mut b = Bench::new(cfg);
        b.submit(send(3, LEAD, WARNING));
        b.run_until(failed(3), 60);
        assert!(b.events.iter().any(|e| matches!(e, DriverEvent::Failed { retryable: false, reason, .. } if reason.contains("NO_CHANNEL"))));
    }

    #[test]
    fn sends_are_paced_by_the_airtime_budget() {
        let mut cfg = MeshConfig::serial("/dev/sim");
        cfg.per_minute = 6.0; // one every 10 s
        cfg.burst = 1;
        let mut sim = sim_config();
        sim.nodes[0].behaviour = ReplyBehaviour::Never;
        let mut b = Bench::with(cfg, sim);
        let start = b.now;
        for i in 0..4 {
            b.submit(send(10 + i, LEAD, "测试 回复 1 AAAA"));
        }
        b.run_until(delivered(13), 120);
        let times: Vec<i64> = b
            .sim
            .sent()
            .iter()
            .map(|s| s.at.as_millis() - start.as_millis())
            .collect();
        assert_eq!(times.len(), 4);
        for w in times.windows(2) {
            assert!(w[1] - w[0] >= 10_000, "{times:?}");
        }
        assert_eq!(b.count(|e| matches!(e, DriverEvent::Delivered { .. })), 4);
    }

    #[test]
    fn a_full_radio_queue_holds_sends_back_without_losing_them() {
        let mut cfg = MeshConfig::serial("/dev/sim");
        cfg.per_minute = 600.0;
        cfg.burst = 10;
        let mut sim = sim_config();
        sim.queue_len = 1;
        sim.nodes[0].behaviour = ReplyBehaviour::Never;
        let mut b = Bench::with(cfg, sim);
        for i in 0..5 {
            b.submit(send(20 + i, LEAD, "测试 回复 1 AAAA"));
        }
        b.run_until(|e| (20..25).all(|a| delivered(a)(e)), 300);
        assert_eq!(b.sim.sent().len(), 5);
        assert!(b.sim.refusals() > 0, "the radio's queue never filled");
        assert_eq!(b.count(|e| matches!(e, DriverEvent::Failed { .. })), 0);
    }

    #[test]
    fn no_ack_at_all_times_out_as_retryable() {
        let mut cfg = MeshConfig::serial("/dev/sim");
        cfg.ack_timeout_secs = 30;
        let mut sim = sim_config();
        sim.faults.drop_routing = true;
        let mut b = Bench::with(cfg, sim);
        b.submit(send(4, LEAD, WARNING));
        b.run_until(failed(4), 60);
        assert!(b.events.iter().any(|e| matches!(e, DriverEvent::Failed { retryable: true, reason, .. } if reason.contains("no ack"))));
    }

    #[test]
    fn an_implicit_ack_is_not_a_delivery() {
        let mut b = Bench::new(sim_config());
        b.submit(send(5, LEAD, WARNING));
        b.pump();
        let id = b.sim.sent()[0].id;
        let me = b.radio.my_node_num().unwrap();
        // Our own radio reports hearing a relay: not delivered.
        b.sim.inject_routing(b.now, me, id, RoutingError::None);
        b.pump();
        assert_eq!(b.count(|e| matches!(e, DriverEvent::Delivered { .. })), 0);
        // The destination's own ack is.
        b.run_until(delivered(5), 60);
    }

    #[test]
    fn inbound_texts_and_positions_update_the_node_table() {
        let mut b = Bench::new(sim_config());
        let before = b.radio.node(FAR).unwrap().last_heard;
        b.advance(5);
        b.sim.deliver_text(b.now, FAR, "收到 已转移");
        b.sim.report_position(b.now, FAR, 40.0, 116.5);
        b.pump();
        let far = b.radio.node(FAR).unwrap();
        assert_eq!(far.last_heard, Some(b.now));
        assert_ne!(far.last_heard, before);
        let pos = far.position.unwrap();
        assert!((pos.latitude - 40.0).abs() < 1e-6 && (pos.longitude - 116.5).abs() < 1e-6);
        assert!(b.events.iter().any(|e| matches!(e, DriverEvent::Inbound { from: Address::MeshNode(FAR), text, .. } if text == "收到 已转移")));
    }

    #[test]
    fn authenticated_mode_passes_only_pki_texts() {
        let mut cfg = MeshConfig::serial("/dev/sim");
        cfg.sender_authenticated = true;
        let mut b = Bench::with(cfg, sim_config());
        b.sim.deliver_text(b.now, FAR, "1 K7XT");
        b.pump();
        assert_eq!(b.count(|e| matches!(e, DriverEvent::Inbound { .. })), 0);
        assert_eq!(
            b.count(|e| matches!(e, DriverEvent::Unrecognized { raw } if raw.contains("not PKI"))),
            1
        );
        b.sim.set_pki(true);
        b.sim.deliver_text(b.now, FAR, "1 K7XT");
        b.pump();
        assert_eq!(b.count(|e| matches!(e, DriverEvent::Inbound { .. })), 1);
    }

    #[test]
    fn wrong_addresses_and_broadcasts_are_refused_without_airtime() {
        let mut b = Bench::new(sim_config());
        let me = b.radio.my_node_num().unwrap();
        b.submit(send(6, BROADCAST, "x"));
        b.submit(send(7, me, "x"));
        b.submit(DriverCommand::Send(Outbound {
            attempt: AttemptId(8),
            to: Address::BeidouCard("123".into()),
            text: "x".into(),
            want_report: true,
        }));
        assert_eq!(
            b.count(|e| matches!(
                e,
                DriverEvent::Failed {
                    retryable: false,
                    ..
                }
            )),
            3
        );
        assert_eq!(b.count(|e| matches!(e, DriverEvent::Accepted { .. })), 0);
        assert!(b.sim.sent().is_empty());
    }

    #[test]
    fn a_channel_broadcast_goes_out_after_person_texts_and_is_never_an_attempt() {
        let mut cfg = MeshConfig::serial("/dev/sim");
        cfg.burst = 1;
        let mut b = Bench::with(cfg, sim_config());
        b.submit(send(9, LEAD, WARNING));
        b.submit(send(10, FAR, WARNING));
        // Text 9 is on the air, text 10 waits for the budget; the broadcast queues behind.
        b.radio
            .broadcast(b.now, 0, "【公告】山洪红色预警，沿河群众请转移")
            .unwrap();
        b.advance(60);
        let sent = b.sim.sent();
        let order: Vec<u32> = sent.iter().map(|s| s.to).collect();
        assert_eq!(order, [LEAD, FAR, BROADCAST]);
        assert!(!sent[2].want_ack);
        assert_eq!(b.count(|e| matches!(e, DriverEvent::Sent { .. })), 2);
        assert_eq!(
            b.radio.broadcast(b.now, 9, "x"),
            Err(BroadcastError::BadChannel(9))
        );
    }

    #[test]
    fn cancel_removes_a_queued_text() {
        let mut cfg = MeshConfig::serial("/dev/sim");
        cfg.burst = 1;
        let mut b = Bench::with(cfg, sim_config());
        b.submit(send(30, LEAD, WARNING));
        b.submit(send(31, LEAD, WARNING));
        b.submit(DriverCommand::Cancel(AttemptId(31)));
        assert!(b.events.iter().any(|e| matches!(
            e,
            DriverEvent::Failed {
                attempt: AttemptId(31),
                retryable: false,
                ..
            }
        )));
        b.advance(120);
        assert_eq!(b.sim.sent().len(), 1);
    }

    #[test]
    fn link_loss_fails_the_packet_in_hand_and_keeps_the_queue() {
        let mut cfg = MeshConfig::serial("/dev/sim");
        cfg.burst = 1;
        let mut b = Bench::with(cfg, sim_config());
        b.radio.submit(b.now, send(40, LEAD, WARNING));
        b.radio.submit(b.now, send(41, LEAD, WARNING));
        // The first packet is handed over but the link drops before it is written.
        b.radio.handle_port_lost(b.now);
        assert_eq!(
            b.radio.poll_transmit(),
            None,
            "nothing stale goes out later"
        );
        while let Some(e) = b.radio.poll_event() {
            b.events.push(e);
        }
        assert!(b.events.iter().any(|e| matches!(e, DriverEvent::Failed { attempt: AttemptId(40), retryable: true, reason } if reason.contains("may have gone out"))));
        assert!(
            b.events
                .iter()
                .any(|e| matches!(e, DriverEvent::Health(h) if !h.up))
        );
        assert_eq!(b.radio.queued(), 1);
        // Back: a fresh handshake, then the queued text goes out.
        b.sim.handle_client_connected(b.now);
        b.radio.handle_port_opened(b.now);
        b.run_until(delivered(41), 120);
        assert_eq!(b.sim.config_requests(), 2);
        let sent: Vec<u32> = b.sim.sent().iter().map(|s| s.to).collect();
        assert_eq!(sent, [LEAD], "the failed packet was never written later");
    }

    #[test]
    fn a_radio_reboot_restarts_the_handshake() {
        let mut b = Bench::new(sim_config());
        b.sim.reboot(b.now);
        b.pump();
        assert!(
            b.events
                .iter()
                .any(|e| matches!(e, DriverEvent::Health(h) if !h.up))
        );
        b.run_until(
            |e| {
                e.iter()
                    .filter(|e| matches!(e, DriverEvent::Health(h) if h.up))
                    .count()
                    == 2
            },
            60,
        );
        assert_eq!(b.sim.config_requests(), 2);
        b.submit(send(50, LEAD, WARNING));
        b.run_until(delivered(50), 60);
    }

    #[test]
    fn a_silent_radio_is_asked_again_and_reported_down() {
        let mut cfg = sim_config();
        cfg.faults.ignore_config_requests = 1;
        let mut b = Bench {
            radio: Radio::new(MeshConfig::serial("/dev/sim"), T0),
            sim: SimRadio::new(cfg, 1, T0),
            now: T0,
            events: Vec::new(),
            byte_by_byte: false,
        };
        b.radio.handle_port_opened(T0);
        b.run_until(
            |e| {
                e.iter()
                    .any(|e| matches!(e, DriverEvent::Health(h) if h.up))
            },
            120,
        );
        assert!(b.events.iter().any(|e| matches!(e, DriverEvent::Health(h) if !h.up && h.last_error.as_deref().is_some_and(|s| s.contains("want_config")))));
        assert_eq!(b.sim.config_requests(), 2);
    }

    #[test]
    fn garbage_and_bad_protobufs_are_unrecognized_never_a_panic() {
        let mut b = Bench::new(sim_config());
        b.radio
            .handle_rx(b.now, &[0x94, 0xC3, 0x00, 0x03, 0x12, 0xFF, 0x01]);
        b.radio.handle_rx(b.now, &[0x94, 0xC3, 0x7F, 0xFF]);
        b.radio.handle_rx(b.now, b"DEBUG | some log\r\n");
        b.pump();
        assert_eq!(
            b.count(|e| matches!(e, DriverEvent::Unrecognized { .. })),
            2,
            "{:#?}",
            b.events
        );
        b.submit(send(60, LEAD, WARNING));
        b.run_until(delivered(60), 60);
    }

    #[test]
    fn long_texts_keep_their_reply_code() {
        let long = format!("【红色预警】{}。回复 1 K7XT 确认", "山洪".repeat(100));
        let fitted = fit_text(&long, 233);
        assert!(fitted.len() <= 233, "{}", fitted.len());
        assert!(fitted.ends_with("回复 1 K7XT 确认"), "{fitted}");
        assert!(fitted.contains('…'));
        assert!(fitted.starts_with("【红色预警】山洪"));
        let no_code = "字".repeat(100);
        let fitted = fit_text(&no_code, 233);
        assert!(fitted.len() <= 233);
        assert!(fitted.ends_with('…'));
        assert_eq!(fit_text("短", 233), "短");
        // Every cut lands on a character boundary.
        for max in 40..=233 {
            let f = fit_text(&long, max);
            assert!(f.len() <= max, "{max}");
        }
    }

    #[test]
    fn a_long_warning_goes_out_within_one_packet() {
        let mut b = Bench::new(sim_config());
        let long = format!("【红色预警】{}。回复 1 K7XT 确认", "山洪".repeat(100));
        b.submit(send(70, LEAD, &long));
        b.run_until(delivered(70), 60);
        let sent = &b.sim.sent()[0];
        assert!(sent.text.len() <= 233);
        assert!(sent.text.ends_with("回复 1 K7XT 确认"));
    }
}
