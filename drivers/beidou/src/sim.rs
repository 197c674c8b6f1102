//! The device side: BeiDou terminals, their cards, and the satellite network between cards,
//! as one sans-IO state machine.
//!
//! Each simulated terminal holds a card (id, service frequency, level) and speaks the 2.1
//! sentences, the BDS-3 ones, or both. It answers the card query, reports beams (`$BDBSI`
//! once switched on with `$CCRMO`) or satellites (`$BDPWI`, periodically), and takes sends:
//! too early → the real "frequency not reached" `$BDFKI` with the seconds left; no signal →
//! a refusal; otherwise a success feedback, and the network carries the message to its
//! destination card after a seeded latency, or loses it.
//!
//! A message to another simulated terminal's card comes out of that terminal as `$BDTXR`
//! (2.1) or `$BDTCI` (BDS-3, sender zero-padded to 8 digits as observed). A message to any
//! other card reaches a person, whose script decides the reply: `1`, `1 <code>`, a fixed
//! text, nothing, or the reply from another card. Replies travel back through the network
//! with the same latency and loss.
//!
//! Mixed content is carried as bytes, exactly as sent (never decoded as GB2312 and
//! re-encoded), so compact frames between two Tocsin nodes on simulated terminals arrive
//! byte for byte; a person's card shows whatever it got as text.
//!
//! Faults, all seeded: corrupted checksums, garbage between sentences, and feedback that
//! never comes (the message still goes out, as when a feedback is lost on the wire).

use std::collections::VecDeque;
use std::time::Duration;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tocsin_core::Timestamp;

use crate::config::payload_bytes;
use crate::text;
use crate::wire::{
    self, BeamStatus, CardInfo2, CardInfo3, Dialect, Feedback2, Feedback3, Message, PowerStatus,
    Receive2, Receive3,
};

/// Which sentences a simulated terminal speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimDialect {
    /// 2.1 only.
    #[default]
    Bds2,
    /// BDS-3 only.
    Bds3,
    /// Both on the same port (received messages come out as `$BDTCI`).
    Dual,
}

impl SimDialect {
    fn speaks(self, d: Dialect) -> bool {
        matches!(
            (self, d),
            (SimDialect::Dual, _)
                | (SimDialect::Bds2, Dialect::Bds2)
                | (SimDialect::Bds3, Dialect::Bds3)
        )
    }
}

/// One simulated terminal and its card.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalConfig {
    /// The card id, digits (written zero-padded to 7 in 2.1 sentences).
    pub card: String,
    /// Which sentences it speaks.
    #[serde(default)]
    pub dialect: SimDialect,
    /// The card's service frequency, seconds between transmissions.
    #[serde(default = "default_frequency_secs")]
    pub frequency_secs: u32,
    /// The card's communication level (1–4 on BDS-2, up to 5 on BDS-3).
    #[serde(default = "default_level")]
    pub level: u8,
    /// An encrypted card.
    #[serde(default)]
    pub encrypted: bool,
    /// Whether it sees satellites.
    #[serde(default = "default_signal")]
    pub signal: bool,
    /// How often `$BDPWI` is reported, ms (BDS-3 and dual terminals).
    #[serde(default = "default_pwi_interval_ms")]
    pub pwi_interval_ms: u64,
    /// Injected faults.
    #[serde(default)]
    pub faults: Faults,
}

/// 60 s, typical for civil cards.
pub fn default_frequency_secs() -> u32 {
    60
}
/// Level 3.
pub fn default_level() -> u8 {
    3
}
/// Satellites in view.
pub fn default_signal() -> bool {
    true
}
/// 1 Hz, as observed.
pub fn default_pwi_interval_ms() -> u64 {
    1_000
}

impl TerminalConfig {
    /// A 2.1 terminal with card `card` and every default.
    pub fn new(card: impl Into<String>) -> Self {
        TerminalConfig {
            card: card.into(),
            dialect: SimDialect::Bds2,
            frequency_secs: default_frequency_secs(),
            level: default_level(),
            encrypted: false,
            signal: true,
            pwi_interval_ms: default_pwi_interval_ms(),
            faults: Faults::default(),
        }
    }
}

/// Faults to inject, drawn from the seeded RNG.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Probability that a sentence goes out with a wrong checksum.
    #[serde(default)]
    pub bad_checksum_rate: f64,
    /// Probability that garbage bytes come before a sentence.
    #[serde(default)]
    pub garbage_rate: f64,
    /// Probability that a send's feedback never comes (the message still goes out).
    #[serde(default)]
    pub lost_feedback_rate: f64,
}

/// The satellite network and the people at the other end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Shortest network latency, card to card, ms.
    #[serde(default = "default_latency_min_ms")]
    pub latency_min_ms: u64,
    /// Longest network latency, ms.
    #[serde(default = "default_latency_max_ms")]
    pub latency_max_ms: u64,
    /// Probability that the network loses a message.
    #[serde(default)]
    pub loss_rate: f64,
    /// Scripted people by card.
    #[serde(default)]
    pub cards: Vec<CardScript>,
    /// What cards not in `cards` (and not on a simulated terminal) do.
    #[serde(default = "default_script")]
    pub default_script: ReplyBehaviour,
}

/// 1 s.
pub fn default_latency_min_ms() -> u64 {
    1_000
}
/// 5 s.
pub fn default_latency_max_ms() -> u64 {
    5_000
}
/// Everyone answers `1 <code>` within 20 to 90 s.
pub fn default_script() -> ReplyBehaviour {
    ReplyBehaviour::ReplyCode {
        min_secs: 20.0,
        max_secs: 90.0,
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            latency_min_ms: default_latency_min_ms(),
            latency_max_ms: default_latency_max_ms(),
            loss_rate: 0.0,
            cards: Vec::new(),
            default_script: default_script(),
        }
    }
}

/// The script for one person's card.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardScript {
    /// The card id.
    pub card: String,
    /// What the person does when a message arrives.
    pub behaviour: ReplyBehaviour,
}

/// What a person does with a warning that reached their card.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReplyBehaviour {
    /// Replies `1` after a uniform delay.
    ReplyOne {
        /// Shortest delay, seconds.
        min_secs: f64,
        /// Longest delay, seconds.
        max_secs: f64,
    },
    /// Replies `1 <code>` with the code from the message.
    ReplyCode {
        /// Shortest delay, seconds.
        min_secs: f64,
        /// Longest delay, seconds.
        max_secs: f64,
    },
    /// Never replies.
    Never,
    /// The right reply, but from another card.
    FromOther {
        /// The card the reply comes from.
        card: String,
        /// Shortest delay, seconds.
        min_secs: f64,
        /// Longest delay, seconds.
        max_secs: f64,
    },
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

/// One message a simulated terminal transmitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitRecord {
    /// The sending terminal's card.
    pub from: String,
    /// The destination card as written in the sentence.
    pub to: String,
    /// The decoded text (GB2312, lossily: a compact frame reads as garbage here).
    pub text: String,
    /// The message's bytes exactly as carried (the mixed content after `A4`).
    pub bytes: Vec<u8>,
    /// The dialect it was sent in.
    pub dialect: Dialect,
    /// When the terminal took it.
    pub at: Timestamp,
    /// Whether the network lost it.
    pub lost: bool,
}

/// Something the network does later.
#[derive(Clone, Debug)]
enum Action {
    /// A message arrives at a card: its bytes exactly (GB2312 text or a compact frame).
    Arrive {
        to: String,
        from: String,
        bytes: Vec<u8>,
    },
    /// A terminal's periodic status report.
    Status(usize),
}

/// One simulated terminal's state.
struct Terminal {
    cfg: TerminalConfig,
    decoder: wire::Decoder,
    out: VecDeque<Vec<u8>>,
    last_tx: Option<Timestamp>,
    bsi_interval: Option<Duration>,
}

/// The simulated terminals and network. See the module documentation.
pub struct SimNetwork {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    terminals: Vec<Terminal>,
    scheduled: Vec<(Timestamp, u64, Action)>,
    seq: u64,
    submits: Vec<SubmitRecord>,
}

impl SimNetwork {
    /// A network with no terminals yet, with its own seeded RNG.
    pub fn new(cfg: SimConfig, seed: u64) -> Self {
        SimNetwork {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
            terminals: Vec::new(),
            scheduled: Vec::new(),
            seq: 0,
            submits: Vec::new(),
        }
    }

    /// Powers on a terminal; returns its index.
    pub fn add_terminal(&mut self, now: Timestamp, cfg: TerminalConfig) -> usize {
        let idx = self.terminals.len();
        let pwi = (cfg.dialect != SimDialect::Bds2).then(|| cfg.pwi_interval_ms.max(1));
        self.terminals.push(Terminal {
            cfg,
            decoder: wire::Decoder::new(),
            out: VecDeque::new(),
            last_tx: None,
            bsi_interval: None,
        });
        if let Some(ms) = pwi {
            self.schedule(now + Duration::from_millis(ms), Action::Status(idx));
        }
        idx
    }

    /// Every message the terminals transmitted, in order.
    pub fn submits(&self) -> &[SubmitRecord] {
        &self.submits
    }

    /// Satellites come and go for terminal `idx`; it reports the change at once.
    pub fn set_signal(&mut self, idx: usize, signal: bool) {
        if let Some(t) = self.terminals.get_mut(idx) {
            t.cfg.signal = signal;
            self.emit_status(idx);
        }
    }

    /// A person's card sends `text` to card `to` now (it arrives after the latency).
    pub fn send_from_card(&mut self, now: Timestamp, from: &str, to: &str, text: &str) {
        self.carry(now, from, to, &text::encode(text, true).bytes);
    }

    /// Terminal `idx`'s port was reopened: half-read input and unsent output are gone.
    pub fn handle_power_cycle(&mut self, idx: usize) {
        if let Some(t) = self.terminals.get_mut(idx) {
            t.decoder.clear();
            t.out.clear();
        }
    }

    /// Bytes from the driver to terminal `idx`.
    pub fn handle_rx(&mut self, now: Timestamp, idx: usize, bytes: &[u8]) {
        let Some(t) = self.terminals.get_mut(idx) else {
            return;
        };
        t.decoder.push(bytes);
        let mut got = Vec::new();
        while let Some(s) = t.decoder.next_sentence() {
            got.push(s);
        }
        for s in got {
            // A terminal ignores what it cannot read, as real ones do.
            let Ok(s) = s else { continue };
            if let Ok(m) = Message::parse(&s) {
                self.on_message(now, idx, m);
            }
        }
    }

    /// Bytes from terminal `idx` for the driver.
    pub fn poll_transmit(&mut self, idx: usize) -> Option<Vec<u8>> {
        self.terminals.get_mut(idx)?.out.pop_front()
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
            // Act at the instant it was due, so a late wake-up does not shift what follows.
            let (at, _, action) = self.scheduled.swap_remove(i);
            match action {
                Action::Arrive { to, from, bytes } => self.arrive(at, &to, &from, &bytes),
                Action::Status(idx) => {
                    self.emit_status(idx);
                    let next = self.terminals.get(idx).and_then(|t| {
                        if t.cfg.dialect != SimDialect::Bds2 {
                            Some(Duration::from_millis(t.cfg.pwi_interval_ms.max(1)))
                        } else {
                            t.bsi_interval
                        }
                    });
                    if let Some(d) = next {
                        self.schedule((at + d).max(now), Action::Status(idx));
                    }
                }
            }
        }
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.scheduled.iter().map(|(t, _, _)| *t).min()
    }

    fn schedule(&mut self, at: Timestamp, action: Action) {
        self.seq += 1;
        self.scheduled.push((at, self.seq, action));
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    /// Writes a message from terminal `idx`, with the faults its dice call for.
    fn emit(&mut self, idx: usize, m: &Message) {
        let Some(faults) = self.terminals.get(idx).map(|t| t.cfg.faults.clone()) else {
            return;
        };
        let mut b = Vec::new();
        if self.chance(faults.garbage_rate) {
            let mut junk = [0u8; 6];
            self.rng.fill_bytes(&mut junk);
            b.extend(junk.iter().filter(|c| **c != b'$'));
            b.extend_from_slice(b"\r\n");
        }
        let start = b.len();
        m.emit(&mut b);
        if self.chance(faults.bad_checksum_rate) {
            // The last checksum digit, before `\r\n`.
            if let Some(i) = b.len().checked_sub(3).filter(|i| *i >= start)
                && let Some(c) = b.get_mut(i)
            {
                *c = if *c == b'0' { b'1' } else { b'0' };
            }
        }
        if let Some(t) = self.terminals.get_mut(idx) {
            t.out.push_back(b);
        }
    }

    fn emit_status(&mut self, idx: usize) {
        let Some(t) = self.terminals.get(idx) else {
            return;
        };
        let signal = t.cfg.signal;
        let dialect = t.cfg.dialect;
        let bsi_on = t.bsi_interval.is_some();
        if dialect != SimDialect::Bds2 {
            let sats: &[(u8, u8, u8)] = if signal { &[(51, 40, 33)] } else { &[] };
            let m = Message::PowerStatus(PowerStatus::new("000000.00", sats));
            self.emit(idx, &m);
        }
        if dialect != SimDialect::Bds3 && (bsi_on || !signal) {
            let p = if signal { 3 } else { 0 };
            let m = Message::BeamStatus(BeamStatus {
                response_beam: "01".into(),
                timediff_beam: "02".into(),
                powers: vec![p, p, 1, 0, 0, 0, 0, 0, 0, 0],
            });
            self.emit(idx, &m);
        }
    }

    fn on_message(&mut self, now: Timestamp, idx: usize, m: Message) {
        let Some(t) = self.terminals.get(idx) else {
            return;
        };
        let cfg = t.cfg.clone();
        match m {
            Message::CardQuery(q) if cfg.dialect.speaks(q.dialect) => {
                let card = text_card(&cfg.card, 7);
                let reply = match q.dialect {
                    Dialect::Bds2 => Message::CardInfo2(CardInfo2 {
                        serial: format!("0{card}"),
                        card,
                        broadcast: "0000011".into(),
                        user_class: 6,
                        frequency_secs: cfg.frequency_secs,
                        level: cfg.level,
                        encrypted: cfg.encrypted,
                        subordinates: "0".into(),
                    }),
                    Dialect::Bds3 => {
                        let mut fields: Vec<String> = [
                            card.as_str(),
                            "2032472",
                            "1",
                            "3",
                            "0",
                            "N",
                            "1",
                            "Y",
                            "1",
                            "0",
                            "0",
                            "3",
                            "1",
                        ]
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect();
                        fields.push(cfg.frequency_secs.to_string());
                        fields.push(if cfg.level >= 5 { 0 } else { cfg.level }.to_string());
                        fields.extend(
                            ["1", "1", "2", "2", "500", "100", "10", "10"].map(str::to_owned),
                        );
                        Message::CardInfo3(CardInfo3 { fields })
                    }
                };
                self.emit(idx, &reply);
            }
            Message::OutputControl(o)
                if o.statement == "BSI" && cfg.dialect != SimDialect::Bds3 =>
            {
                let on = o.mode == 2;
                let interval = Duration::from_secs(u64::from(o.interval_secs.max(1)));
                if let Some(t) = self.terminals.get_mut(idx) {
                    t.bsi_interval = on.then_some(interval);
                }
                if on {
                    self.emit_status(idx);
                    if cfg.dialect == SimDialect::Bds2 {
                        self.schedule(now + interval, Action::Status(idx));
                    }
                }
            }
            // Mixed content is carried as bytes, never decoded and re-encoded: a compact
            // frame between Tocsin nodes must arrive byte for byte.
            Message::Send2(s) if cfg.dialect.speaks(Dialect::Bds2) => {
                let bytes = (s.mode == 2).then(|| mixed_bytes(&s.content)).flatten();
                self.on_send(now, idx, Dialect::Bds2, &s.dest, bytes);
            }
            Message::Send3(s) if cfg.dialect.speaks(Dialect::Bds3) => {
                let bytes = (s.coding == 3)
                    .then(|| mixed_bytes(s.data.as_bytes()))
                    .flatten();
                self.on_send(now, idx, Dialect::Bds3, &s.dest, bytes);
            }
            _ => {}
        }
    }

    fn feedback(
        &mut self,
        now: Timestamp,
        idx: usize,
        d: Dialect,
        ok: bool,
        reason: u8,
        wait: u32,
    ) {
        let m = match d {
            Dialect::Bds2 => Message::Feedback2(Feedback2 {
                command: "TXA".into(),
                executed: ok,
                frequency_ok: reason != 1,
                inhibit: if reason == 4 { 2 } else { 0 },
                wait_secs: wait,
            }),
            Dialect::Bds3 => Message::Feedback3(Feedback3 {
                time: hhmmss(now),
                command: "TCQ".into(),
                ok,
                reason,
                remaining_secs: wait,
            }),
        };
        self.emit(idx, &m);
    }

    fn on_send(
        &mut self,
        now: Timestamp,
        idx: usize,
        d: Dialect,
        dest: &str,
        bytes: Option<Vec<u8>>,
    ) {
        let Some(t) = self.terminals.get(idx) else {
            return;
        };
        let cfg = t.cfg.clone();
        if !cfg.signal {
            self.feedback(now, idx, d, false, 4, 0);
            return;
        }
        let period = Duration::from_secs(u64::from(cfg.frequency_secs));
        if let Some(last) = t.last_tx {
            let ready = last + period;
            if now < ready {
                let left = ready.since(now).as_millis().div_ceil(1000);
                let left = u32::try_from(left).unwrap_or(u32::MAX);
                self.feedback(now, idx, d, false, 1, left);
                return;
            }
        }
        let capacity = match d {
            Dialect::Bds3 => payload_bytes(14_000),
            Dialect::Bds2 => {
                let table = [110u32, 408, 628, 848];
                let bits = table
                    .get(usize::from(cfg.level.clamp(1, 4)) - 1)
                    .copied()
                    .unwrap_or(110);
                payload_bytes(bits)
            }
        };
        let Some(bytes) = bytes else {
            self.feedback(now, idx, d, false, 0, 0);
            return;
        };
        if bytes.len() > capacity {
            self.feedback(now, idx, d, false, 0, 0);
            return;
        }
        if let Some(t) = self.terminals.get_mut(idx) {
            t.last_tx = Some(now);
        }
        if !self.chance(cfg.faults.lost_feedback_rate) {
            self.feedback(now, idx, d, true, 0, 0);
        }
        let lost = self.carry(now, &cfg.card, dest, &bytes);
        self.submits.push(SubmitRecord {
            from: cfg.card.clone(),
            to: dest.to_owned(),
            text: text::decode(&bytes),
            bytes,
            dialect: d,
            at: now,
            lost,
        });
    }

    /// Puts a message on the network; returns whether it was lost.
    fn carry(&mut self, now: Timestamp, from: &str, to: &str, bytes: &[u8]) -> bool {
        if self.chance(self.cfg.loss_rate) {
            return true;
        }
        let delay = self.uniform_ms(self.cfg.latency_min_ms, self.cfg.latency_max_ms);
        self.schedule(
            now + delay,
            Action::Arrive {
                to: to.to_owned(),
                from: from.to_owned(),
                bytes: bytes.to_vec(),
            },
        );
        false
    }

    fn arrive(&mut self, now: Timestamp, to: &str, from: &str, bytes: &[u8]) {
        let target = self
            .terminals
            .iter()
            .position(|t| same_card(&t.cfg.card, to));
        let Some(idx) = target else {
            // A person's card shows what it got as text; a frame reads as garbage.
            self.person_replies(now, to, from, &text::decode(bytes));
            return;
        };
        let Some(t) = self.terminals.get(idx) else {
            return;
        };
        let content = text::mixed(bytes).into_bytes();
        let m = if t.cfg.dialect == SimDialect::Bds2 {
            Message::Receive2(Receive2 {
                class: 1,
                sender: text_card(from, 7),
                mode: 2,
                time: String::new(),
                content,
            })
        } else {
            Message::Receive3(Receive3 {
                sender: text_card(from, 8),
                receiver: text_card(&t.cfg.card, 7),
                freq_point: "2".into(),
                time: hhmmss(now),
                coding: 3,
                flag: "0".into(),
                data: content,
            })
        };
        self.emit(idx, &m);
    }

    /// A person's card got `text` from `from`; their script decides the reply.
    fn person_replies(&mut self, now: Timestamp, card: &str, from: &str, text: &str) {
        let behaviour = self
            .cfg
            .cards
            .iter()
            .find(|c| same_card(&c.card, card))
            .map(|c| c.behaviour.clone())
            .unwrap_or_else(|| self.cfg.default_script.clone());
        let code = extract_code(text).unwrap_or_default();
        let (sender, reply, min, max) = match behaviour {
            ReplyBehaviour::Never => return,
            ReplyBehaviour::ReplyOne { min_secs, max_secs } => {
                (card.to_owned(), "1".to_owned(), min_secs, max_secs)
            }
            ReplyBehaviour::ReplyCode { min_secs, max_secs } => (
                card.to_owned(),
                format!("1 {code}").trim().to_owned(),
                min_secs,
                max_secs,
            ),
            ReplyBehaviour::FromOther {
                card: other,
                min_secs,
                max_secs,
            } => (
                other,
                format!("1 {code}").trim().to_owned(),
                min_secs,
                max_secs,
            ),
            ReplyBehaviour::Text {
                text,
                min_secs,
                max_secs,
            } => (card.to_owned(), text, min_secs, max_secs),
        };
        let lo = if min.is_finite() {
            min.clamp(0.0, 1.0e6)
        } else {
            0.0
        };
        let hi = if max.is_finite() {
            max.clamp(lo, 1.0e6)
        } else {
            lo
        };
        let secs = if hi > lo {
            self.rng.random_range(lo..=hi)
        } else {
            lo
        };
        let reply = text::encode(&reply, true).bytes;
        self.carry(now + Duration::from_secs_f64(secs), &sender, from, &reply);
    }

    fn uniform_ms(&mut self, min: u64, max: u64) -> Duration {
        let ms = if max > min {
            self.rng.random_range(min..=max)
        } else {
            min
        };
        Duration::from_millis(ms)
    }
}

/// The bytes of mixed content (`A4` + hex; the marker optional, as terminals vary);
/// `None` when it is not hex.
fn mixed_bytes(content: &[u8]) -> Option<Vec<u8>> {
    let bytes = text::from_hex(content)?;
    Some(match bytes.strip_prefix(&[text::MIXED_MARKER]) {
        Some(body) => body.to_vec(),
        None => bytes,
    })
}

/// Whether two card ids are the same number (zero padding aside).
fn same_card(a: &str, b: &str) -> bool {
    a.trim_start_matches('0') == b.trim_start_matches('0')
}

/// A card id zero-padded to `width` digits.
fn text_card(card: &str, width: usize) -> String {
    let digits = card.trim_start_matches('0');
    format!("{digits:0>width$}")
}

/// Beijing time of day `hhmmss` for `now`.
fn hhmmss(now: Timestamp) -> String {
    let secs = (now.as_millis().div_euclid(1000) + 8 * 3600).rem_euclid(86_400);
    format!("{:02}{:02}{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The ack code in a warning text: the 4 letters or digits after a standalone `1 `, as in
/// `回复 1 K7XT 确认`. Full-width forms are folded first.
pub fn extract_code(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().map(tocsin_core::ackcode::fold_width).collect();
    (0..chars.len()).find_map(|i| {
        let before_ok = i == 0 || chars.get(i - 1).is_some_and(|c| !c.is_ascii_alphanumeric());
        let window = chars.get(i..i + 6)?;
        let after_ok = chars.get(i + 6).is_none_or(|c| !c.is_ascii_alphanumeric());
        let code: String = window.get(2..)?.iter().collect();
        let is_code = window.first() == Some(&'1')
            && window.get(1) == Some(&' ')
            && code.chars().all(|c| c.is_ascii_alphanumeric());
        (before_ok && after_ok && is_code).then(|| code.to_ascii_uppercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_750_000_000_000);

    fn drain(net: &mut SimNetwork, idx: usize) -> String {
        let mut s = String::new();
        while let Some(b) = net.poll_transmit(idx) {
            s.push_str(&String::from_utf8_lossy(&b));
        }
        s
    }

    #[test]
    fn answers_the_card_query_in_its_dialects() {
        let mut net = SimNetwork::new(SimConfig::default(), 1);
        let a = net.add_terminal(T0, TerminalConfig::new("242286"));
        net.handle_rx(T0, a, b"$CCICA,0,00*7B\r\n$CCICR,0,00*68\r\n");
        assert_eq!(
            drain(&mut net, a),
            "$BDICI,0242286,00242286,0000011,6,60,3,N,0*38\r\n",
            "a 2.1 terminal ignores the BDS-3 query"
        );
        let mut cfg = TerminalConfig::new("15240507");
        cfg.dialect = SimDialect::Bds3;
        cfg.frequency_secs = 1;
        cfg.level = 5;
        let b = net.add_terminal(T0, cfg);
        net.handle_rx(T0, b, b"$CCICR,0,00*68\r\n");
        assert_eq!(
            drain(&mut net, b),
            "$BDICP,15240507,2032472,1,3,0,N,1,Y,1,0,0,3,1,1,0,1,1,2,2,500,100,10,10*60\r\n"
        );
    }

    #[test]
    fn enforces_the_service_frequency_with_the_real_feedback() {
        let mut cfg = TerminalConfig::new("4207733");
        cfg.dialect = SimDialect::Bds3;
        let mut net = SimNetwork::new(SimConfig::default(), 1);
        let a = net.add_terminal(T0, cfg);
        let send = b"$CCTCQ,4207733,2,1,3,A4CAD5B5BD31,0*05\r\n";
        net.handle_rx(T0, a, send);
        assert!(drain(&mut net, a).contains("TCQ,Y,0,0*"));
        let t1 = T0 + Duration::from_secs(15);
        net.handle_rx(t1, a, send);
        let fki = drain(&mut net, a);
        assert!(fki.contains(",TCQ,N,1,0045*"), "{fki}");
        let (s, _) = wire::parse(fki.as_bytes()).unwrap().unwrap();
        assert!(matches!(
            Message::parse(&s).unwrap(),
            Message::Feedback3(f) if f.remaining_secs == 45 && f.reason == 1
        ));
        assert_eq!(net.submits().len(), 1);
        assert_eq!(net.submits()[0].text, "收到1");
    }

    #[test]
    fn the_network_carries_between_terminals_and_people_reply() {
        let cfg = SimConfig {
            latency_min_ms: 2_000,
            latency_max_ms: 2_000,
            cards: vec![
                CardScript {
                    card: "0300001".into(),
                    behaviour: ReplyBehaviour::ReplyCode {
                        min_secs: 30.0,
                        max_secs: 30.0,
                    },
                },
                CardScript {
                    card: "0300002".into(),
                    behaviour: ReplyBehaviour::FromOther {
                        card: "0399999".into(),
                        min_secs: 10.0,
                        max_secs: 10.0,
                    },
                },
            ],
            ..SimConfig::default()
        };
        let mut net = SimNetwork::new(cfg, 3);
        let a = net.add_terminal(T0, TerminalConfig::new("0242286"));
        let mut bcfg = TerminalConfig::new("4207733");
        bcfg.dialect = SimDialect::Dual;
        bcfg.pwi_interval_ms = 3_600_000;
        let b = net.add_terminal(T0, bcfg);
        let warn = text::mixed(&text::encode("山洪预警 回复 1 K7XT", false).bytes);
        let txa = |dest: &str| {
            Message::Send2(wire::Send2 {
                dest: dest.into(),
                express: false,
                mode: 2,
                content: warn.clone().into_bytes(),
            })
            .to_bytes()
        };
        net.handle_rx(T0, a, &txa("4207733"));
        assert!(drain(&mut net, a).starts_with("$BDFKI,TXA,Y,Y,0,0000"));
        let t1 = T0 + Duration::from_secs(2);
        net.handle_timeout(t1);
        let got = drain(&mut net, b);
        assert!(got.starts_with("$BDTCI,00242286,4207733,2,"), "{got}");
        // To a person: the code comes back from their card 30 s + 2 × 2 s later.
        let t2 = T0 + Duration::from_secs(60);
        net.handle_rx(t2, a, &txa("0300001"));
        drain(&mut net, a);
        let t3 = t2 + Duration::from_secs(34);
        net.handle_timeout(Timestamp(t3.as_millis() - 1));
        assert_eq!(drain(&mut net, a), "");
        net.handle_timeout(t3);
        let reply = drain(&mut net, a);
        let (s, _) = wire::parse(reply.as_bytes()).unwrap().unwrap();
        let Ok(Message::Receive2(r)) = Message::parse(&s) else {
            panic!("{reply}")
        };
        assert_eq!(r.sender, "0300001");
        assert_eq!(text::decode_mixed(&r.content).as_deref(), Some("1 K7XT"));
        // From another card.
        let t4 = t3 + Duration::from_secs(60);
        net.handle_rx(t4, a, &txa("0300002"));
        drain(&mut net, a);
        net.handle_timeout(t4 + Duration::from_secs(14));
        assert!(drain(&mut net, a).starts_with("$BDTXR,1,0399999,2,,"));
    }

    #[test]
    fn binary_mixed_content_is_carried_byte_for_byte() {
        let cfg = SimConfig {
            latency_min_ms: 1_000,
            latency_max_ms: 1_000,
            cards: vec![CardScript {
                card: "0300001".into(),
                behaviour: ReplyBehaviour::ReplyCode {
                    min_secs: 5.0,
                    max_secs: 5.0,
                },
            }],
            ..SimConfig::default()
        };
        let mut net = SimNetwork::new(cfg, 5);
        let a = net.add_terminal(T0, TerminalConfig::new("0242286"));
        let mut bcfg = TerminalConfig::new("4207733");
        bcfg.dialect = SimDialect::Bds3;
        bcfg.pwi_interval_ms = 3_600_000;
        let b = net.add_terminal(T0, bcfg);
        // Not GB2312 text: NUL, lone lead bytes, 0x80, 0xFF. Decoding and re-encoding it
        // as text would change it.
        let bytes = vec![0x12, 0x00, 0x80, 0xFF, 0xB0, 0x41, 0xC9, 0x00, 0xFE];
        let content = text::mixed(&bytes);
        let tcq = Message::Send3(wire::Send3 {
            dest: "0242286".into(),
            freq_point: 2,
            receipt: false,
            coding: 3,
            data: content.clone(),
            repeat: 0,
        })
        .to_bytes();
        net.handle_rx(T0, b, &tcq);
        assert!(drain(&mut net, b).starts_with("$BDFKI,"));
        assert_eq!(net.submits()[0].bytes, bytes);
        net.handle_timeout(T0 + Duration::from_secs(1));
        let got = drain(&mut net, a);
        let (s, _) = wire::parse(got.as_bytes()).unwrap().unwrap();
        let Ok(Message::Receive2(r)) = Message::parse(&s) else {
            panic!("{got}")
        };
        assert_eq!(r.sender, "4207733");
        assert_eq!(String::from_utf8(r.content).unwrap(), content);

        // The same bytes to a person's card: the handset shows garbage and the person
        // answers what they can (a bare 1); nothing breaks.
        let t1 = T0 + Duration::from_secs(120);
        let txa = Message::Send2(wire::Send2 {
            dest: "0300001".into(),
            express: false,
            mode: 2,
            content: content.into_bytes(),
        })
        .to_bytes();
        net.handle_rx(t1, a, &txa);
        assert!(drain(&mut net, a).starts_with("$BDFKI,TXA,Y"));
        net.handle_timeout(t1 + Duration::from_secs(7));
        let reply = drain(&mut net, a);
        let (s, _) = wire::parse(reply.as_bytes()).unwrap().unwrap();
        let Ok(Message::Receive2(r)) = Message::parse(&s) else {
            panic!("{reply}")
        };
        assert_eq!(text::decode_mixed(&r.content).as_deref(), Some("1"));
    }

    #[test]
    fn no_signal_is_reported_and_refuses_sends() {
        let mut net = SimNetwork::new(SimConfig::default(), 1);
        let a = net.add_terminal(T0, TerminalConfig::new("0242286"));
        net.handle_rx(T0, a, b"$CCRMO,BSI,2,0*26\r\n");
        assert!(drain(&mut net, a).starts_with("$BDBSI,01,02,3,3,1"));
        net.set_signal(a, false);
        assert!(drain(&mut net, a).starts_with("$BDBSI,01,02,0,0,1"));
        net.handle_rx(T0, a, b"$CCTXA,0242286,1,2,A4CAD5B5BD31*03\r\n");
        assert!(drain(&mut net, a).starts_with("$BDFKI,TXA,N,Y,2,"));
        assert!(net.submits().is_empty());
    }
}
