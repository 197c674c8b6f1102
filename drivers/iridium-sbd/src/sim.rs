//! The device side: a 9603 modem and the Iridium network behind it, as a sans-IO state
//! machine.
//!
//! It answers the driver's AT commands (echo on until `ATE0`, like a real modem), takes
//! binary MO messages with `AT+SBDWB` (checking the checksum), runs sessions (`AT+SBDIX`,
//! `AT+SBDIXA`) that take a seeded 5–20 s and end in success, a seeded failure status, or
//! "no network service" (32), keeps the gateway's MT queue (moving one message into the MT
//! buffer per session), rings (`SBDRING`) when an MT message is queued and ring alerts are
//! on, and serves `AT+SBDRB`, `AT+SBDD`, `AT+CSQ`, `AT+CIER`, `AT+CGSN`, `AT-MSSTM`.
//!
//! The field kit at the other end is scripted: a while after each MO message it answers
//! with a compact ack batch carrying the ack code found in the message (or the wrong code,
//! or nothing), which comes back as an MT message. On a network of simulated modems
//! ([`crate::network`]), an MO message whose routing prefix ([`route_prefix`]) names
//! another modem goes to that modem instead (prefix stripped, as the gateway does).
//!
//! Faults, all seeded: session failures with chosen MO statuses, no network, commands never
//! answered, garbage before a response, corrupted SBDRB checksums, SBDWB checksum errors.

use std::collections::VecDeque;
use std::time::Duration;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tocsin_compact::{AckBatch, AckEntry, Frame as Compact, Imei, ShortAlertId, TextFrame};
use tocsin_core::{AckCode, Timestamp};

use crate::wire::{self, DteFrame, FinalResult, Frame, MtBlock, SessionResult};

/// How the simulated modem, network and field kit behave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// The simulated modem's IMEI.
    #[serde(default = "default_imei")]
    pub imei: String,
    /// Shortest session, ms.
    #[serde(default = "default_session_min_ms")]
    pub session_min_ms: u64,
    /// Longest session, ms.
    #[serde(default = "default_session_max_ms")]
    pub session_max_ms: u64,
    /// Signal bars (0–5) the modem reports.
    #[serde(default = "default_bars")]
    pub bars: u8,
    /// The field kit answering MO messages: its IMEI goes in the ack batches' origin.
    #[serde(default = "default_kit_imei")]
    pub kit_imei: String,
    /// The person id the kit reports acks for.
    #[serde(default = "default_kit_person")]
    pub kit_person: String,
    /// What the kit does with a message.
    #[serde(default = "default_reply")]
    pub reply: KitReply,
    /// Whether the network rings the modem when an MT message is queued (a ring can be
    /// missed: then only mailbox checks find the message).
    #[serde(default = "default_rings")]
    pub rings: bool,
    /// Injected faults.
    #[serde(default)]
    pub faults: Faults,
}

/// A RockBLOCK-looking IMEI.
pub fn default_imei() -> String {
    "300434063839690".to_owned()
}
/// 5 s, the short end of a session.
pub fn default_session_min_ms() -> u64 {
    5_000
}
/// 20 s, the long end of a session.
pub fn default_session_max_ms() -> u64 {
    20_000
}
/// Four bars: a clear sky.
pub fn default_bars() -> u8 {
    4
}
/// The kit at the other end.
pub fn default_kit_imei() -> String {
    "300234010753370".to_owned()
}
/// The crew lead the kit answers for.
pub fn default_kit_person() -> String {
    "crew-1".to_owned()
}
/// The kit acks every message within 10 to 60 s.
pub fn default_reply() -> KitReply {
    KitReply::Ack {
        min_secs: 10.0,
        max_secs: 60.0,
    }
}

/// Rings on.
pub fn default_rings() -> bool {
    true
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            imei: default_imei(),
            session_min_ms: default_session_min_ms(),
            session_max_ms: default_session_max_ms(),
            bars: default_bars(),
            kit_imei: default_kit_imei(),
            kit_person: default_kit_person(),
            reply: default_reply(),
            rings: default_rings(),
            faults: Faults::default(),
        }
    }
}

/// What the field kit does when a message reaches it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum KitReply {
    /// An ack batch with the code found in the message.
    Ack {
        /// Shortest delay, seconds.
        min_secs: f64,
        /// Longest delay, seconds.
        max_secs: f64,
    },
    /// An ack batch with a code that is not the one sent.
    WrongCode {
        /// Shortest delay, seconds.
        min_secs: f64,
        /// Longest delay, seconds.
        max_secs: f64,
    },
    /// Never answers.
    Never,
}

/// Faults to inject, drawn from the seeded RNG.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Probability that a session fails with one of `failure_statuses`.
    #[serde(default)]
    pub session_failure_rate: f64,
    /// MO statuses of failed sessions (default 18, RF drop).
    #[serde(default)]
    pub failure_statuses: Vec<u8>,
    /// No network: every session ends with MO status 32 and bars are 0.
    #[serde(default)]
    pub no_network: bool,
    /// Probability that a command is never answered.
    #[serde(default)]
    pub silence_rate: f64,
    /// Probability that garbage bytes come before a response.
    #[serde(default)]
    pub garbage_rate: f64,
    /// Probability that an `AT+SBDRB` block carries a wrong checksum.
    #[serde(default)]
    pub corrupt_mt_rate: f64,
    /// Probability that an `AT+SBDWB` message is refused with `2` (checksum mismatch).
    #[serde(default)]
    pub write_error_rate: f64,
}

/// One MO message the network took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoRecord {
    /// The bytes.
    pub payload: Vec<u8>,
    /// Its MOMSN.
    pub momsn: u16,
    /// When the session that carried it ended.
    pub at: Timestamp,
}

/// Something that happens later.
#[derive(Clone, Debug)]
enum Action {
    /// Bytes to the driver (a delayed response).
    Respond(Vec<u8>),
    /// A session ends.
    SessionEnd,
    /// The kit's reply reaches the gateway's MT queue.
    QueueMt(Vec<u8>),
    /// The driver did not send the promised SBDWB bytes in 60 s.
    WriteTimeout(u64),
}

/// Most MT messages the gateway queues for one modem (the real one holds 50).
pub const MT_QUEUE_MAX: usize = 50;

/// The simulated modem, network and kit. See the module documentation.
pub struct SimSbd {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    decoder: wire::Decoder,
    echo: bool,
    ring_alerts: bool,
    indications: bool,
    /// Bytes promised by `AT+SBDWB` after `READY`, and the write's serial.
    awaiting: Option<(usize, u64)>,
    writes: u64,
    mo_buffer: Option<Vec<u8>>,
    mt_buffer: Vec<u8>,
    mt_queue: VecDeque<Vec<u8>>,
    momsn: u16,
    mtmsn: u16,
    busy_until: Timestamp,
    scheduled: Vec<(Timestamp, u64, Action)>,
    seq: u64,
    out: VecDeque<Vec<u8>>,
    mo_log: Vec<MoRecord>,
    commands: Vec<String>,
    /// IMEIs of other modems on the same simulated network (see [`crate::network`]).
    routes: Vec<String>,
    /// MO messages routed to one of them: (IMEI, payload with the prefix stripped).
    routed: VecDeque<(String, Vec<u8>)>,
}

impl SimSbd {
    /// A modem just powered on (echo on, ring alerts off), with its own seeded RNG.
    pub fn new(cfg: SimConfig, seed: u64, now: Timestamp) -> Self {
        SimSbd {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
            decoder: wire::Decoder::new(),
            echo: true,
            ring_alerts: false,
            indications: false,
            awaiting: None,
            writes: 0,
            mo_buffer: None,
            mt_buffer: Vec::new(),
            mt_queue: VecDeque::new(),
            momsn: 0,
            mtmsn: 0,
            busy_until: now,
            scheduled: Vec::new(),
            seq: 0,
            out: VecDeque::new(),
            mo_log: Vec::new(),
            commands: Vec::new(),
            routes: Vec::new(),
            routed: VecDeque::new(),
        }
    }

    /// The modem's IMEI.
    pub fn imei(&self) -> &str {
        &self.cfg.imei
    }

    /// The IMEIs of other modems the gateway can deliver to: an MO message whose routing
    /// prefix ([`route_prefix`]) names one of them goes to it instead of the scripted kit.
    pub fn set_routes(&mut self, imeis: Vec<String>) {
        self.routes = imeis;
    }

    /// The next MO message routed to another modem: its IMEI and the payload as the
    /// gateway delivers it (prefix stripped).
    pub fn poll_routed(&mut self) -> Option<(String, Vec<u8>)> {
        self.routed.pop_front()
    }

    /// Replaces the faults (e.g. lose the network mid-test).
    pub fn set_faults(&mut self, faults: Faults) {
        let was = self.cfg.faults.no_network;
        self.cfg.faults = faults;
        if was != self.cfg.faults.no_network && self.indications {
            let svc = u8::from(!self.cfg.faults.no_network);
            let bars = self.bars();
            self.emit(Frame::Line(format!("+CIEV:1,{svc}")));
            self.emit(Frame::Line(format!("+CIEV:0,{bars}")));
        }
    }

    /// Every MO message the network took, in order.
    pub fn mo_log(&self) -> &[MoRecord] {
        &self.mo_log
    }

    /// Every command line read, in order.
    pub fn commands(&self) -> &[String] {
        &self.commands
    }

    /// MT messages waiting at the gateway.
    pub fn mt_queued(&self) -> usize {
        self.mt_queue.len()
    }

    /// The modem's MT buffer.
    pub fn mt_buffer(&self) -> &[u8] {
        &self.mt_buffer
    }

    /// Someone sends the modem an MT message: it is queued at the gateway and, with ring
    /// alerts on, the modem rings.
    pub fn queue_mt(&mut self, payload: Vec<u8>) {
        if self.mt_queue.len() >= MT_QUEUE_MAX {
            tracing::warn!("simulated MT queue full; message dropped by the gateway");
            return;
        }
        self.mt_queue.push_back(payload);
        if self.cfg.rings && self.ring_alerts && !self.cfg.faults.no_network {
            self.emit(Frame::Line("SBDRING".to_owned()));
        }
    }

    /// The modem was power-cycled or its port reopened: echo back on, ring alerts off,
    /// buffers empty; the gateway's MT queue and pending kit replies survive.
    pub fn handle_power_cycle(&mut self, now: Timestamp) {
        self.echo = true;
        self.ring_alerts = false;
        self.indications = false;
        self.awaiting = None;
        self.mo_buffer = None;
        self.mt_buffer.clear();
        self.decoder.clear();
        self.out.clear();
        self.busy_until = now;
        self.scheduled
            .retain(|(_, _, a)| matches!(a, Action::QueueMt(_)));
    }

    /// Bytes from the driver.
    pub fn handle_rx(&mut self, now: Timestamp, bytes: &[u8]) {
        self.decoder.push(bytes);
        loop {
            let binary = self.awaiting.map(|(n, _)| n);
            let Some(frame) = self.decoder.next_dte_frame(binary) else {
                break;
            };
            match frame {
                Ok(DteFrame::Command(cmd)) => self.on_command(now, &cmd),
                Ok(DteFrame::Message { data, checksum }) => self.on_message(now, data, checksum),
                Err(_) => self.respond(now, vec![Frame::Final(FinalResult::Error)], 0),
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
            let (_, _, action) = self.scheduled.swap_remove(i);
            match action {
                Action::Respond(bytes) => self.out.push_back(bytes),
                Action::SessionEnd => self.session_end(now),
                Action::QueueMt(p) => self.queue_mt(p),
                Action::WriteTimeout(serial) => {
                    if self.awaiting.is_some_and(|(_, s)| s == serial) {
                        self.awaiting = None;
                        self.emit(Frame::Line("1".to_owned()));
                        self.emit(Frame::Final(FinalResult::Ok));
                    }
                }
            }
        }
    }

    /// Bytes for the driver.
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

    fn emit(&mut self, frame: Frame) {
        let mut b = Vec::new();
        wire::emit(&frame, &mut b);
        self.out.push_back(b);
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    fn bars(&self) -> u8 {
        if self.cfg.faults.no_network {
            0
        } else {
            self.cfg.bars.min(5)
        }
    }

    /// A response after `delay_ms`, with garbage first if the dice say so.
    fn respond(&mut self, now: Timestamp, frames: Vec<Frame>, delay_ms: u64) {
        let mut b = Vec::new();
        if self.chance(self.cfg.faults.garbage_rate) {
            let mut junk = vec![0u8; 8];
            self.rng.fill_bytes(&mut junk);
            junk.retain(|b| *b != b'\r' && *b != b'\n');
            b.extend_from_slice(b"\r\n\xFF");
            b.extend_from_slice(&junk);
            b.extend_from_slice(b"\r\n");
        }
        for f in frames {
            wire::emit(&f, &mut b);
        }
        let at = self.busy_until.max(now) + Duration::from_millis(delay_ms);
        self.busy_until = at;
        if delay_ms == 0 && at <= now {
            self.out.push_back(b);
        } else {
            self.schedule(at, Action::Respond(b));
        }
    }

    fn ok(&mut self, now: Timestamp, mut lines: Vec<Frame>) {
        lines.push(Frame::Final(FinalResult::Ok));
        self.respond(now, lines, 0);
    }

    fn on_command(&mut self, now: Timestamp, cmd: &str) {
        self.commands.push(cmd.to_owned());
        if self.echo {
            self.emit(Frame::Echo(cmd.to_owned()));
        }
        if self.chance(self.cfg.faults.silence_rate) {
            return;
        }
        let upper = cmd.to_ascii_uppercase();
        match upper.as_str() {
            "AT" | "AT&K0" | "AT&D0" | "AT+SBDMTA=0" => self.ok(now, vec![]),
            "ATE0" => {
                self.echo = false;
                self.ok(now, vec![]);
            }
            "ATE1" => {
                self.echo = true;
                self.ok(now, vec![]);
            }
            "AT+SBDMTA=1" => {
                self.ring_alerts = true;
                self.ok(now, vec![]);
            }
            "AT+CIER=1,1,1" => {
                self.indications = true;
                let bars = self.bars();
                let svc = u8::from(!self.cfg.faults.no_network);
                self.ok(
                    now,
                    vec![
                        Frame::Line(format!("+CIEV:0,{bars}")),
                        Frame::Line(format!("+CIEV:1,{svc}")),
                    ],
                );
            }
            "AT+CGSN" => {
                let imei = self.cfg.imei.clone();
                self.ok(now, vec![Frame::Line(imei)]);
            }
            "AT+CSQ" | "AT+CSQF" => {
                let bars = self.bars();
                let mut frames = vec![Frame::Line(format!("+CSQ:{bars}"))];
                frames.push(Frame::Final(FinalResult::Ok));
                // Measuring takes a couple of seconds.
                let delay = if upper == "AT+CSQ" { 2_000 } else { 0 };
                self.respond(now, frames, delay);
            }
            "AT-MSSTM" => {
                let line = if self.cfg.faults.no_network {
                    "-MSSTM: no network service".to_owned()
                } else {
                    // 90 ms ticks since the Iridium epoch; only the form matters here.
                    let ticks = (now.as_millis().max(0) / 90) as u32;
                    format!("-MSSTM: {ticks:08x}")
                };
                self.ok(now, vec![Frame::Line(line)]);
            }
            "AT+SBDD0" | "AT+SBDD1" | "AT+SBDD2" => {
                if upper != "AT+SBDD1" {
                    self.mo_buffer = None;
                }
                if upper != "AT+SBDD0" {
                    self.mt_buffer.clear();
                }
                self.ok(now, vec![Frame::Line("0".to_owned())]);
            }
            "AT+SBDIX" | "AT+SBDIXA" => {
                let ms = if self.cfg.session_max_ms > self.cfg.session_min_ms {
                    self.rng
                        .random_range(self.cfg.session_min_ms..=self.cfg.session_max_ms)
                } else {
                    self.cfg.session_min_ms
                };
                let at = self.busy_until.max(now) + Duration::from_millis(ms);
                self.busy_until = at;
                self.schedule(at, Action::SessionEnd);
            }
            "AT+SBDRB" => {
                let payload = self.mt_buffer.clone();
                let mut checksum = wire::checksum(&payload);
                if self.chance(self.cfg.faults.corrupt_mt_rate) {
                    checksum ^= 0x5A5A;
                }
                let mut b = Vec::new();
                wire::emit(&Frame::Block(MtBlock { payload, checksum }), &mut b);
                wire::emit(&Frame::Final(FinalResult::Ok), &mut b);
                let at = self.busy_until.max(now);
                if at <= now {
                    self.out.push_back(b);
                } else {
                    self.schedule(at, Action::Respond(b));
                }
            }
            "AT+SBDSX" => {
                let line = format!(
                    "+SBDSX: {}, {}, {}, {}, {}, {}",
                    u8::from(self.mo_buffer.is_some()),
                    self.momsn,
                    u8::from(!self.mt_buffer.is_empty()),
                    self.mtmsn,
                    u8::from(self.ring_alerts && !self.mt_queue.is_empty()),
                    self.mt_queue.len()
                );
                self.ok(now, vec![Frame::Line(line)]);
            }
            _ => {
                if let Some(n) = upper.strip_prefix("AT+SBDWB=") {
                    match n.trim().parse::<usize>() {
                        Ok(n) if (1..=340).contains(&n) => {
                            self.writes += 1;
                            let serial = self.writes;
                            self.awaiting = Some((n, serial));
                            self.respond(now, vec![Frame::Ready], 0);
                            self.schedule(
                                now + Duration::from_secs(60),
                                Action::WriteTimeout(serial),
                            );
                        }
                        Ok(_) => self.ok(now, vec![Frame::Line("3".to_owned())]),
                        Err(_) => self.respond(now, vec![Frame::Final(FinalResult::Error)], 0),
                    }
                    return;
                }
                self.respond(now, vec![Frame::Final(FinalResult::Error)], 0);
            }
        }
    }

    fn on_message(&mut self, now: Timestamp, data: Vec<u8>, checksum: u16) {
        self.awaiting = None;
        let injected = self.chance(self.cfg.faults.write_error_rate);
        let result = if injected || wire::checksum(&data) != checksum {
            "2"
        } else {
            self.mo_buffer = Some(data);
            "0"
        };
        self.ok(now, vec![Frame::Line(result.to_owned())]);
    }

    fn session_end(&mut self, now: Timestamp) {
        let failure = if self.cfg.faults.no_network {
            Some(32)
        } else if self.chance(self.cfg.faults.session_failure_rate) {
            let statuses = &self.cfg.faults.failure_statuses;
            let pick = if statuses.is_empty() {
                18
            } else {
                let i = self.rng.random_range(0..statuses.len());
                statuses.get(i).copied().unwrap_or(18)
            };
            Some(pick)
        } else {
            None
        };
        let result = match failure {
            Some(status) => SessionResult {
                mo_status: status,
                momsn: self.momsn,
                mt_status: 2,
                mtmsn: 0,
                mt_len: 0,
                mt_queued: 0,
            },
            None => {
                let mut mo_status = 0;
                if let Some(payload) = self.mo_buffer.clone() {
                    self.momsn = self.momsn.wrapping_add(1);
                    self.mo_log.push(MoRecord {
                        payload: payload.clone(),
                        momsn: self.momsn,
                        at: now,
                    });
                    match route(&payload, &self.routes) {
                        Some((imei, body)) => self.routed.push_back((imei, body.to_vec())),
                        None => self.kit_receives(now, &payload),
                    }
                } else {
                    mo_status = 0;
                }
                let (mt_status, mtmsn, mt_len) = match self.mt_queue.pop_front() {
                    Some(mt) => {
                        self.mtmsn = self.mtmsn.wrapping_add(1);
                        let len = u16::try_from(mt.len()).unwrap_or(u16::MAX);
                        self.mt_buffer = mt;
                        (1, self.mtmsn, len)
                    }
                    None => (0, 0, 0),
                };
                SessionResult {
                    mo_status,
                    momsn: self.momsn,
                    mt_status,
                    mtmsn,
                    mt_len,
                    mt_queued: u16::try_from(self.mt_queue.len()).unwrap_or(u16::MAX),
                }
            }
        };
        let mut b = Vec::new();
        wire::emit(&Frame::Line(result.to_line()), &mut b);
        wire::emit(&Frame::Final(FinalResult::Ok), &mut b);
        self.out.push_back(b);
    }

    /// The kit gets an MO message and, per its script, answers later.
    fn kit_receives(&mut self, now: Timestamp, payload: &[u8]) {
        let (min, max, wrong) = match self.cfg.reply {
            KitReply::Ack { min_secs, max_secs } => (min_secs, max_secs, false),
            KitReply::WrongCode { min_secs, max_secs } => (min_secs, max_secs, true),
            KitReply::Never => return,
        };
        let Some((alert, code)) = find_code(payload) else {
            return;
        };
        let code = if wrong { other_code(code) } else { code };
        let delay = if max > min {
            self.rng.random_range(min..=max)
        } else {
            min.max(0.0)
        };
        let at = now + Duration::from_secs_f64(delay.clamp(0.0, 86_400.0));
        let base_secs = u32::try_from(
            at.as_millis()
                .saturating_sub(tocsin_compact::frame::EPOCH.as_millis())
                .max(0)
                / 1000,
        )
        .unwrap_or(0);
        let batch = Compact::Acks(AckBatch {
            origin: Imei::parse(&self.cfg.kit_imei),
            base_secs,
            acks: vec![AckEntry {
                alert,
                person: self.cfg.kit_person.clone(),
                code,
                offset_secs: 0,
            }],
        });
        match batch.encode() {
            Ok(bytes) => self.schedule(at, Action::QueueMt(bytes)),
            Err(e) => tracing::warn!(%e, "simulated kit cannot encode its ack"),
        }
    }
}

/// The routing prefix the simulated gateway reads in front of an MO message, as hex (the
/// form of [`crate::config::Peer::prefix`]): `RB` and the destination modem's 15 IMEI
/// digits, in ASCII. Real providers each have their own form **[U]** (RockBLOCK's
/// cross-delivery names the destination's serial number); the driver only needs the bytes.
pub fn route_prefix(imei: &str) -> String {
    format!("RB{imei}")
        .bytes()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// The destination and the rest of an MO message that starts with the routing prefix of
/// one of `imeis`.
fn route<'a>(payload: &'a [u8], imeis: &[String]) -> Option<(String, &'a [u8])> {
    let rest = payload.strip_prefix(b"RB")?;
    imeis.iter().find_map(|imei| {
        rest.strip_prefix(imei.as_bytes())
            .map(|body| (imei.clone(), body))
    })
}

/// The alert and ack code a message carries: an alert frame's code, or in a text the
/// last word that is a code (`… 回复1 K7XT`).
pub fn find_code(payload: &[u8]) -> Option<(ShortAlertId, AckCode)> {
    // A routing prefix may come first: try the frame at every offset up to 8 bytes.
    for skip in 0..=payload.len().min(8) {
        let Some(rest) = payload.get(skip..) else {
            break;
        };
        match Compact::decode(rest) {
            Ok(Compact::Alert(a)) => return a.code.map(|c| (a.id, c)),
            Ok(Compact::Update(u)) => return u.alert.code.map(|c| (u.alert.id, c)),
            Ok(Compact::Text(TextFrame { text })) => {
                return text
                    .split_whitespace()
                    .rev()
                    .find_map(AckCode::parse)
                    .map(|c| (ShortAlertId::UNKNOWN, c));
            }
            _ => {}
        }
    }
    None
}

/// A valid code that is not `code`.
fn other_code(code: AckCode) -> AckCode {
    ["AAAA", "CCCC"]
        .into_iter()
        .filter_map(AckCode::parse)
        .find(|c| *c != code)
        .unwrap_or(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_750_000_000_000);

    fn drain(sim: &mut SimSbd) -> Vec<u8> {
        let mut b = Vec::new();
        while let Some(x) = sim.poll_transmit() {
            b.extend(x);
        }
        b
    }

    #[test]
    fn sbdwb_takes_hello_and_a_session_sends_it() {
        let mut sim = SimSbd::new(
            SimConfig {
                reply: KitReply::Never,
                ..SimConfig::default()
            },
            1,
            T0,
        );
        sim.handle_rx(T0, b"ATE0\r");
        assert_eq!(drain(&mut sim), b"ATE0\r\r\nOK\r\n");
        sim.handle_rx(T0, b"AT+SBDWB=5\r");
        assert_eq!(drain(&mut sim), b"READY\r\n");
        sim.handle_rx(T0, &[0x68, 0x65, 0x6C, 0x6C, 0x6F, 0x02, 0x14]);
        assert_eq!(drain(&mut sim), b"\r\n0\r\n\r\nOK\r\n");
        sim.queue_mt(b"hello".to_vec());
        sim.handle_rx(T0, b"AT+SBDIX\r");
        let t = sim.poll_timeout().unwrap();
        assert!(t >= T0 + Duration::from_secs(5) && t <= T0 + Duration::from_secs(20));
        sim.handle_timeout(t);
        assert_eq!(
            String::from_utf8(drain(&mut sim)).unwrap(),
            "\r\n+SBDIX: 0, 1, 1, 1, 5, 0\r\n\r\nOK\r\n"
        );
        assert_eq!(sim.mo_log()[0].payload, b"hello");
        sim.handle_rx(t, b"AT+SBDRB\r");
        assert_eq!(drain(&mut sim), b"\x00\x05hello\x02\x14\r\nOK\r\n".to_vec());
    }

    #[test]
    fn a_bad_checksum_is_refused_and_no_network_fails_sessions() {
        let mut sim = SimSbd::new(SimConfig::default(), 1, T0);
        sim.handle_rx(T0, b"ATE0\rAT+SBDWB=5\r");
        drain(&mut sim);
        sim.handle_rx(T0, b"hello\x00\x00");
        assert_eq!(drain(&mut sim), b"\r\n2\r\n\r\nOK\r\n");
        sim.set_faults(Faults {
            no_network: true,
            ..Faults::default()
        });
        sim.handle_rx(T0, b"AT+SBDIX\r");
        let t = sim.poll_timeout().unwrap();
        sim.handle_timeout(t);
        assert!(
            String::from_utf8(drain(&mut sim))
                .unwrap()
                .contains("+SBDIX: 32, 0, 2, 0, 0, 0")
        );
    }

    #[test]
    fn codes_are_found_in_text_and_alert_frames() {
        let text = Compact::Text(TextFrame {
            text: "【红色预警】山洪 回复1 K7XT".into(),
        })
        .encode()
        .unwrap();
        assert_eq!(
            find_code(&text),
            Some((ShortAlertId::UNKNOWN, AckCode::parse("K7XT").unwrap()))
        );
        let mut prefixed = b"RB".to_vec();
        prefixed.extend(&text);
        assert!(find_code(&prefixed).is_some());
        assert_eq!(find_code(b"\x15\x00no code 1234"), None);
    }
}
