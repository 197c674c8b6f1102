//! The terminal conversation as a sans-IO state machine (in the style of `quinn-proto`).
//!
//! Inputs: [`Terminal::handle_rx`], [`Terminal::handle_timeout`], [`Terminal::submit`],
//! [`Terminal::handle_port_opened`], [`Terminal::handle_port_lost`], each with `now`.
//! Outputs: [`Terminal::poll_transmit`], [`Terminal::poll_event`], [`Terminal::poll_timeout`].
//!
//! After the port opens the card is read (`$CCICA` and/or `$CCICR`; in `auto` the dialect
//! is the one the terminal answers in, or the one it is heard speaking). The card gives the
//! service frequency (minimum seconds between transmissions) and the level that sets the
//! capacity of one message. On BDS-2 the beam report is switched on (`$CCRMO,BSI,2,..`);
//! BDS-3 terminals report `$BDPWI` on their own.
//!
//! One send at a time: the driver waits for the terminal's `$BDFKI` before the next, and
//! paces sends itself by the service frequency. A "frequency not reached" feedback puts the
//! send back at the head of the queue for the seconds the terminal names — it is not a
//! failure. While the beam or satellite status says there is no signal nothing is sent;
//! health says `registered: false` at once and `up: false` once it lasts, so the router
//! moves the sends to another terminal of the pool.
//!
//! Honest outcomes: `Sent` when the terminal's feedback says it transmitted; `Delivered`
//! only from a receipt sentence (`$BDHZR`, when receipts are configured); a feedback that
//! never comes is `Failed` retryable with a reason saying the message may have gone out.
//! Every sentence received has its checksum checked; a bad one is counted and reported as
//! `Unrecognized`, never acted on.
//!
//! Compact frames (`DriverCommand::SendFrame`, a field kit's uplink) travel as one message in
//! mixed mode, `A4` + the frame's bytes in hex, through the same queue, pacing and feedback
//! as text; a frame longer than the card's capacity fails for good (a frame is never split).
//! Received mixed content that is a compact frame (first byte `0x11`–`0x15`, accepted by
//! `tocsin_compact::Frame::decode`) is reported as `DriverEvent::Frame` with its bytes
//! exactly; anything else stays text.

use std::collections::VecDeque;
use std::time::Duration;

use tocsin_channel::{Body, DriverCommand, DriverEvent, Health, Job};
use tocsin_core::{Address, AttemptId, Timestamp};

use crate::config::{BeidouConfig, CodeCoding, payload_bytes};
use crate::text;
use crate::wire::{
    self, CardQuery, Dialect, Feedback2, Feedback3, Malformed, MalformedReason, Message,
    OutputControl, Receive2, Receive3, Send2, Send3,
};

/// The state machine's timers; each indexes one deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// The card's answer or a send's feedback is due.
    Response,
    /// The service frequency allows the next send.
    Pace,
    /// Time to read the card again after the terminal did not answer.
    Reinit,
    /// No signal for long enough: report the terminal down.
    SignalDown,
    /// The last signal report grows stale and stops holding sends back.
    SignalStale,
}

const TIMERS: [Timer; 5] = [
    Timer::Response,
    Timer::Pace,
    Timer::Reinit,
    Timer::SignalDown,
    Timer::SignalStale,
];

/// How many times the card query is sent before the terminal counts as not answering.
const CARD_QUERY_TRIES: u8 = 3;
/// How many "frequency not reached" answers one send may get before it is failed: the
/// terminal's clock and ours disagree for good, and the router should know.
const MAX_RESCHEDULES: u8 = 5;
/// Sends remembered while waiting for a receipt.
const RECEIPT_MEMORY: usize = 256;
/// Backoff between card queries after the terminal stopped answering.
const BACKOFF_MIN: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The card in the terminal, as it describes itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Card {
    /// The card id, canonical (see [`canonical_card`]).
    pub id: String,
    /// The dialect the card was read in.
    pub dialect: Dialect,
    /// Service frequency, seconds (0 when the card did not say).
    pub frequency_secs: u32,
    /// Communication level.
    pub level: u8,
    /// An encrypted card (BDS-2).
    pub encrypted: bool,
}

/// Counts of what the terminal sent that was not acted on, and of rescheduled sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sentences whose checksum did not match (dropped).
    pub bad_checksums: u64,
    /// Other runs of bytes that were not a sentence (dropped).
    pub malformed: u64,
    /// Well-formed sentences the driver does not understand or did not expect.
    pub unrecognized: u64,
    /// Sends put back because the service frequency was not reached.
    pub rescheduled: u64,
}

/// Where the conversation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// The port is closed.
    Down,
    /// Reading the card; this many queries left.
    Identifying(u8),
    /// The terminal did not answer; waiting to ask again.
    Backoff,
    /// The card is read; sends run.
    Ready,
}

/// A send handed to the terminal, awaiting its feedback.
#[derive(Debug)]
struct InFlight {
    out: Job,
    dest: String,
    replaced: usize,
    dialect: Dialect,
}

/// What the last beam or satellite report said.
#[derive(Clone, Copy, Debug, Default)]
struct Signal {
    /// `Some(false)`: the last fresh report said no signal.
    can_send: Option<bool>,
    /// Since when there has been no signal.
    lost_since: Option<Timestamp>,
    /// The no-signal has lasted long enough to report the terminal down.
    down: bool,
}

/// One terminal's conversation. See the module documentation.
pub struct Terminal {
    cfg: BeidouConfig,
    link: Link,
    dialect: Option<Dialect>,
    card: Option<Card>,
    decoder: wire::Decoder,
    queue: VecDeque<(Job, u8)>,
    inflight: Option<(InFlight, u8)>,
    next_send_at: Timestamp,
    signal: Signal,
    awaiting_receipt: VecDeque<(String, AttemptId)>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<DriverEvent>,
    timers: [Option<Timestamp>; 5],
    health: Health,
    last_health: Option<Health>,
    stats: Stats,
    backoff: tocsin_serial::io::Backoff,
}

impl Terminal {
    /// A terminal whose port is not open yet; call [`Self::handle_port_opened`] when it is.
    pub fn new(cfg: BeidouConfig, now: Timestamp) -> Self {
        Terminal {
            dialect: cfg.dialect.fixed(),
            cfg,
            link: Link::Down,
            card: None,
            decoder: wire::Decoder::new(),
            queue: VecDeque::new(),
            inflight: None,
            next_send_at: now,
            signal: Signal::default(),
            awaiting_receipt: VecDeque::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            timers: [None; 5],
            health: Health::default(),
            last_health: None,
            stats: Stats::default(),
            backoff: tocsin_serial::io::Backoff::between(BACKOFF_MIN, BACKOFF_MAX),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &BeidouConfig {
        &self.cfg
    }

    /// The dialect in use, once known.
    pub fn dialect(&self) -> Option<Dialect> {
        self.dialect
    }

    /// The card, once read.
    pub fn card(&self) -> Option<&Card> {
        self.card.as_ref()
    }

    /// What was dropped or rescheduled so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the card is read and sends can run (signal permitting).
    pub fn is_ready(&self) -> bool {
        self.link == Link::Ready
    }

    /// Sends waiting (not counting one awaiting feedback).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Seconds between transmissions: the override, else the card's, else the assumed one.
    pub fn interval(&self) -> Duration {
        let secs = self
            .cfg
            .service_interval_secs
            .or_else(|| {
                self.card
                    .as_ref()
                    .map(|c| u64::from(c.frequency_secs))
                    .filter(|f| *f > 0)
            })
            .unwrap_or(self.cfg.assumed_interval_secs);
        Duration::from_secs(secs.max(1))
    }

    /// Bytes of text one message carries, once the card is known.
    pub fn capacity_bytes(&self) -> Option<usize> {
        let card = self.card.as_ref()?;
        let dialect = self.dialect.unwrap_or(card.dialect);
        Some(payload_bytes(self.cfg.capacity_bits(
            dialect,
            card.level,
            card.encrypted,
        )))
    }

    /// The port is open: read the card.
    pub fn handle_port_opened(&mut self, now: Timestamp) {
        self.decoder.clear();
        self.timers = [None; 5];
        self.signal = Signal::default();
        self.link = Link::Identifying(CARD_QUERY_TRIES);
        self.query_card(now);
        if self.next_send_at > now {
            self.set_timer(Timer::Pace, self.next_send_at);
        }
    }

    /// The port is gone. Queued sends stay queued; a send awaiting feedback is failed
    /// retryable because it may or may not have gone out.
    pub fn handle_port_lost(&mut self, now: Timestamp) {
        if let Some((f, _)) = self.inflight.take() {
            self.events.push_back(DriverEvent::Failed {
                attempt: f.out.attempt,
                retryable: true,
                reason: "port lost while waiting for the terminal's feedback; the message may have gone out".to_owned(),
            });
            self.next_send_at = now + self.interval();
        }
        self.link = Link::Down;
        self.decoder.clear();
        self.timers = [None; 5];
        self.signal = Signal::default();
        self.health.up = false;
        self.health.registered = false;
        self.health.last_error = Some("port lost".to_owned());
        self.note_health();
    }

    /// Opening the port failed: report the terminal down with the reason.
    pub fn handle_open_failed(&mut self, now: Timestamp, error: &str) {
        let _ = now;
        self.health.up = false;
        self.health.registered = false;
        self.health.last_error = Some(format!("cannot open port: {error}"));
        self.note_health();
    }

    /// Bytes read from the port.
    pub fn handle_rx(&mut self, now: Timestamp, bytes: &[u8]) {
        if self.link == Link::Down {
            return;
        }
        self.decoder.push(bytes);
        while let Some(s) = self.decoder.next_sentence() {
            match s {
                Ok(s) => match Message::parse(&s) {
                    Ok(m) => self.on_message(now, m, &s),
                    Err(e) => self.unrecognized(format!("{e}: {}", s.to_text())),
                },
                Err(m) => self.on_malformed(m),
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
                if let Some(pos) = self.queue.iter().position(|(o, _)| o.attempt == attempt) {
                    self.queue.remove(pos);
                    self.events.push_back(DriverEvent::Failed {
                        attempt,
                        retryable: false,
                        reason: "cancelled".to_owned(),
                    });
                }
                // Already handed to the terminal: reported as usual.
            }
            // The terminal keeps no inbox the driver manages: nothing to release.
            DriverCommand::Release(_) => {}
        }
        self.pump(now);
    }

    /// Time passed; act on whatever deadline is due.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        for timer in TIMERS {
            if self.timers[timer as usize].is_none_or(|t| t > now) {
                continue;
            }
            self.timers[timer as usize] = None;
            match timer {
                Timer::Response => self.on_response_timeout(now),
                // Pumping below sends what is due.
                Timer::Pace => {}
                Timer::Reinit => {
                    if self.link == Link::Backoff {
                        self.link = Link::Identifying(CARD_QUERY_TRIES);
                        self.query_card(now);
                    }
                }
                Timer::SignalDown => {
                    if self.signal.can_send == Some(false) {
                        self.signal.down = true;
                        self.refresh_health();
                    }
                }
                Timer::SignalStale => {
                    // No report for a while: an old "no signal" no longer holds sends
                    // back (a send that fails then says so).
                    self.signal = Signal::default();
                    self.timers[Timer::SignalDown as usize] = None;
                    self.refresh_health();
                }
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

    fn send_message(&mut self, m: &Message) {
        self.transmit.push_back(m.to_bytes());
    }

    fn query_card(&mut self, now: Timestamp) {
        let dialects: &[Dialect] = match self.dialect {
            Some(Dialect::Bds2) => &[Dialect::Bds2],
            Some(Dialect::Bds3) => &[Dialect::Bds3],
            None => &[Dialect::Bds2, Dialect::Bds3],
        };
        for d in dialects {
            self.send_message(&Message::CardQuery(CardQuery { dialect: *d }));
        }
        self.set_timer(Timer::Response, now + self.cfg.feedback_timeout());
    }

    fn on_send(&mut self, out: Job) {
        let refuse = |reason: String| DriverEvent::Failed {
            attempt: out.attempt,
            retryable: false,
            reason,
        };
        let Address::BeidouCard(card) = &out.to else {
            self.events
                .push_back(refuse(format!("{} is not a BeiDou card", out.to)));
            return;
        };
        if canonical_card(card).is_none() {
            self.events
                .push_back(refuse(format!("{card:?} is not a BeiDou card number")));
            return;
        }
        if let Err(reason) = self.check_body(&out.body) {
            self.events.push_back(refuse(reason));
            return;
        }
        if self.queue.len() >= self.cfg.queue_limit {
            self.events.push_back(DriverEvent::Failed {
                attempt: out.attempt,
                retryable: true,
                reason: format!("terminal queue full ({} waiting)", self.queue.len()),
            });
            return;
        }
        self.events.push_back(DriverEvent::Accepted {
            attempt: out.attempt,
        });
        self.queue.push_back((out, 0));
    }

    /// The bytes one message carries for `body` and how many characters were replaced;
    /// refuses what the card cannot carry in one message (never truncated or split).
    fn check_body(&self, body: &Body) -> Result<text::Encoded, String> {
        let (enc, what) = match body {
            Body::Text(t) if t.is_empty() => return Err("nothing to send".to_owned()),
            Body::Text(t) => (text::encode(t, self.cfg.allow_gbk), "text needs"),
            Body::Frame(b) if b.is_empty() => return Err("empty frame: nothing to send".to_owned()),
            Body::Frame(b) => (
                text::Encoded {
                    bytes: b.clone(),
                    replaced: 0,
                },
                "compact frame (never split) needs",
            ),
        };
        if let Some(cap) = self.capacity_bytes()
            && enc.bytes.len() > cap
        {
            let level = self.card.as_ref().map(|c| c.level).unwrap_or(0);
            let unit = match body {
                Body::Text(_) => " of GB2312",
                Body::Frame(_) => "",
            };
            return Err(format!(
                "{what} {} bytes{unit}; this card (level {level}) carries {cap} per message",
                enc.bytes.len()
            ));
        }
        Ok(enc)
    }

    fn signal_blocks(&self) -> bool {
        self.signal.can_send == Some(false)
    }

    /// Sends the next queued message if the card, the signal and the pace allow.
    fn pump(&mut self, now: Timestamp) {
        while self.link == Link::Ready && self.inflight.is_none() && !self.signal_blocks() {
            if self.queue.is_empty() {
                return;
            }
            if now < self.next_send_at {
                self.set_timer(Timer::Pace, self.next_send_at);
                return;
            }
            let Some((out, reschedules)) = self.queue.pop_front() else {
                return;
            };
            let enc = match self.check_body(&out.body) {
                Ok(enc) => enc,
                Err(reason) => {
                    self.events.push_back(DriverEvent::Failed {
                        attempt: out.attempt,
                        retryable: false,
                        reason,
                    });
                    continue;
                }
            };
            let dest = match &out.to {
                Address::BeidouCard(c) => canonical_card(c),
                _ => None,
            };
            let Some(dest) = dest else {
                self.events.push_back(DriverEvent::Failed {
                    attempt: out.attempt,
                    retryable: false,
                    reason: format!("{} is not a BeiDou card", out.to),
                });
                continue;
            };
            let dialect = self.dialect.unwrap_or(Dialect::Bds2);
            let content = text::mixed(&enc.bytes);
            let m = match dialect {
                Dialect::Bds2 => Message::Send2(Send2 {
                    dest: dest.clone(),
                    express: self.cfg.express,
                    mode: 2,
                    content: content.into_bytes(),
                }),
                Dialect::Bds3 => Message::Send3(Send3 {
                    dest: dest.clone(),
                    freq_point: self.cfg.freq_point,
                    receipt: self.cfg.receipts,
                    coding: 3,
                    data: content,
                    repeat: 0,
                }),
            };
            self.send_message(&m);
            self.set_timer(Timer::Response, now + self.cfg.feedback_timeout());
            self.inflight = Some((
                InFlight {
                    out,
                    dest,
                    replaced: enc.replaced,
                    dialect,
                },
                reschedules,
            ));
        }
    }

    fn on_malformed(&mut self, m: Malformed) {
        if m.reason == MalformedReason::BadChecksum {
            self.stats.bad_checksums += 1;
        } else {
            self.stats.malformed += 1;
        }
        tracing::debug!(reason = %m.reason, "dropped bytes from the terminal");
        self.events.push_back(DriverEvent::Unrecognized {
            raw: format!("{}: {}", m.reason, String::from_utf8_lossy(&m.raw)),
        });
    }

    fn unrecognized(&mut self, raw: String) {
        self.stats.unrecognized += 1;
        self.events.push_back(DriverEvent::Unrecognized { raw });
    }

    /// In `auto`, the first sentence that only one dialect has decides.
    fn heard(&mut self, d: Dialect) {
        if self.dialect.is_none() {
            tracing::info!(dialect = %d, "terminal dialect detected");
            self.dialect = Some(d);
        }
    }

    fn on_message(&mut self, now: Timestamp, m: Message, s: &wire::Sentence) {
        match m {
            Message::CardInfo2(c) => {
                self.heard(Dialect::Bds2);
                let card = Card {
                    id: canonical_card(&c.card).unwrap_or(c.card),
                    dialect: Dialect::Bds2,
                    frequency_secs: c.frequency_secs,
                    level: c.level,
                    encrypted: c.encrypted,
                };
                self.on_card(now, card);
            }
            Message::CardInfo3(c) => {
                self.heard(Dialect::Bds3);
                let card = Card {
                    id: canonical_card(c.card()).unwrap_or_else(|| c.card().to_owned()),
                    dialect: Dialect::Bds3,
                    frequency_secs: c.frequency_secs().unwrap_or(0),
                    level: c.level().unwrap_or(0),
                    encrypted: false,
                };
                self.on_card(now, card);
            }
            Message::BeamStatus(b) => {
                self.heard(Dialect::Bds2);
                let can = b.powers.iter().any(|p| *p >= self.cfg.min_beam_power);
                self.on_signal(now, can);
            }
            Message::PowerStatus(p) => {
                self.heard(Dialect::Bds3);
                self.on_signal(now, p.bds3_sats > 0);
            }
            Message::Feedback2(f) => {
                self.heard(Dialect::Bds2);
                self.on_feedback2(now, f, s);
            }
            Message::Feedback3(f) => {
                self.heard(Dialect::Bds3);
                self.on_feedback3(now, f, s);
            }
            Message::Receive2(r) => {
                self.heard(Dialect::Bds2);
                self.on_receive2(r, s);
            }
            Message::Receive3(r) => {
                self.heard(Dialect::Bds3);
                self.on_receive3(r, s);
            }
            Message::Receipt(r) => self.on_receipt(r.fields, s),
            // Our own sentences echoed back (some terminals do): nothing to act on.
            Message::CardQuery(_)
            | Message::OutputControl(_)
            | Message::Send2(_)
            | Message::Send3(_) => {}
            Message::Other(s) => self.unrecognized(s.to_text()),
        }
    }

    fn on_card(&mut self, now: Timestamp, card: Card) {
        tracing::info!(card = %card.id, dialect = %card.dialect, frequency = card.frequency_secs, level = card.level, "BeiDou card read");
        self.card = Some(card);
        if matches!(self.link, Link::Identifying(_) | Link::Backoff) {
            self.timers[Timer::Response as usize] = None;
            self.timers[Timer::Reinit as usize] = None;
            self.backoff.reset();
            self.link = Link::Ready;
            if self.dialect == Some(Dialect::Bds2) {
                self.send_message(&Message::OutputControl(OutputControl {
                    statement: "BSI".to_owned(),
                    mode: 2,
                    interval_secs: self.cfg.bsi_interval_secs,
                }));
            }
            self.health.last_error = None;
            self.refresh_health();
        }
        let _ = now;
    }

    fn on_signal(&mut self, now: Timestamp, can: bool) {
        self.signal.can_send = Some(can);
        if can {
            self.signal.lost_since = None;
            self.signal.down = false;
            self.timers[Timer::SignalDown as usize] = None;
        } else if self.signal.lost_since.is_none() {
            self.signal.lost_since = Some(now);
            self.set_timer(
                Timer::SignalDown,
                now + Duration::from_secs(self.cfg.down_after_no_signal_secs),
            );
        }
        if self.cfg.down_after_no_signal_secs == 0 && !can {
            self.signal.down = true;
        }
        self.set_timer(
            Timer::SignalStale,
            now + Duration::from_secs(self.cfg.signal_stale_secs),
        );
        self.refresh_health();
    }

    /// Recomputes health from the link and the signal and reports a change.
    fn refresh_health(&mut self) {
        let ready = self.link == Link::Ready;
        self.health.registered = ready && !self.signal_blocks();
        self.health.up = ready && !self.signal.down;
        if ready {
            self.health.last_error = match self.signal.lost_since {
                Some(_) if self.signal.down => Some("no satellite signal".to_owned()),
                Some(_) => Some("no satellite signal; sends held".to_owned()),
                None => None,
            };
        }
        self.note_health();
    }

    fn note_health(&mut self) {
        if self.last_health.as_ref() != Some(&self.health) {
            self.last_health = Some(self.health.clone());
            self.events
                .push_back(DriverEvent::Health(self.health.clone()));
        }
    }

    fn on_feedback2(&mut self, now: Timestamp, f: Feedback2, s: &wire::Sentence) {
        if f.command != "TXA" {
            return; // Feedback to a card query or output control: nothing to do.
        }
        if !self.inflight_is(Dialect::Bds2) {
            tracing::debug!(sentence = %s.to_text(), "feedback with no send awaiting it");
            return;
        }
        if f.executed {
            self.sent(now, s);
        } else if !f.frequency_ok {
            self.reschedule(now, f.wait_secs, s);
        } else {
            let why = match f.inhibit {
                1 => "system inhibit",
                2 => "low power",
                3 => "radio silence",
                _ => "refused",
            };
            self.fail_inflight(
                now,
                true,
                format!("terminal did not transmit ({why}): {}", s.to_text()),
            );
        }
    }

    fn on_feedback3(&mut self, now: Timestamp, f: Feedback3, s: &wire::Sentence) {
        if f.command != "TCQ" {
            return;
        }
        if !self.inflight_is(Dialect::Bds3) {
            tracing::debug!(sentence = %s.to_text(), "feedback with no send awaiting it");
            return;
        }
        if f.ok {
            self.sent(now, s);
            return;
        }
        let (retryable, why) = match f.reason {
            1 => {
                self.reschedule(now, f.remaining_secs, s);
                return;
            }
            2 => (true, "transmission inhibited"),
            3 => (true, "radio silence"),
            4 => (true, "power not locked (no signal)"),
            5 => (true, "no IC card module"),
            6 => (false, "no permission"),
            _ => (true, "refused"),
        };
        if f.reason == 5 {
            self.health.last_error = Some("no IC card module".to_owned());
        }
        self.fail_inflight(
            now,
            retryable,
            format!("terminal did not transmit ({why}): {}", s.to_text()),
        );
    }

    fn inflight_is(&self, d: Dialect) -> bool {
        self.inflight.as_ref().is_some_and(|(f, _)| f.dialect == d)
    }

    fn sent(&mut self, now: Timestamp, s: &wire::Sentence) {
        let Some((f, _)) = self.inflight.take() else {
            return;
        };
        self.timers[Timer::Response as usize] = None;
        self.next_send_at = now + self.interval();
        self.health.sent += 1;
        let mut reference = format!("to {} {}", f.dest, s.to_text());
        if f.replaced > 0 {
            reference.push_str(&format!(
                "; {} characters outside GB2312 sent as {}",
                f.replaced,
                text::FALLBACK
            ));
        }
        if self.cfg.receipts {
            if self.awaiting_receipt.len() >= RECEIPT_MEMORY {
                self.awaiting_receipt.pop_front();
            }
            self.awaiting_receipt
                .push_back((f.dest.clone(), f.out.attempt));
        }
        self.events.push_back(DriverEvent::Sent {
            attempt: f.out.attempt,
            reference,
        });
    }

    fn reschedule(&mut self, now: Timestamp, wait_secs: u32, s: &wire::Sentence) {
        let Some((f, n)) = self.inflight.take() else {
            return;
        };
        self.timers[Timer::Response as usize] = None;
        let wait = Duration::from_secs(u64::from(wait_secs.max(1)));
        self.next_send_at = now + wait;
        if n + 1 >= MAX_RESCHEDULES {
            self.events.push_back(DriverEvent::Failed {
                attempt: f.out.attempt,
                retryable: true,
                reason: format!(
                    "service frequency not reached {} times in a row: {}",
                    n + 1,
                    s.to_text()
                ),
            });
            return;
        }
        self.stats.rescheduled += 1;
        tracing::debug!(attempt = %f.out.attempt, wait_secs, "service frequency not reached; send rescheduled");
        self.queue.push_front((f.out, n + 1));
    }

    fn fail_inflight(&mut self, now: Timestamp, retryable: bool, reason: String) {
        let Some((f, _)) = self.inflight.take() else {
            return;
        };
        self.timers[Timer::Response as usize] = None;
        // A refused transmission still waits a service period: the terminal may count it.
        self.next_send_at = now + self.interval();
        self.health.last_error = Some(reason.clone());
        self.events.push_back(DriverEvent::Failed {
            attempt: f.out.attempt,
            retryable,
            reason,
        });
    }

    fn on_response_timeout(&mut self, now: Timestamp) {
        match self.link {
            Link::Identifying(left) if left > 1 => {
                self.link = Link::Identifying(left - 1);
                self.query_card(now);
            }
            Link::Identifying(_) => {
                tracing::warn!("BeiDou terminal does not answer the card query");
                self.link = Link::Backoff;
                let wait = self.backoff.failed();
                self.set_timer(Timer::Reinit, now + wait);
                self.health.up = false;
                self.health.registered = false;
                self.health.last_error = Some("terminal does not answer the card query".to_owned());
                self.note_health();
            }
            _ => {
                let secs = self.cfg.feedback_timeout_secs;
                self.fail_inflight(
                    now,
                    true,
                    format!("no feedback from the terminal within {secs} s; the message may have gone out"),
                );
            }
        }
    }

    fn on_receive2(&mut self, r: Receive2, s: &wire::Sentence) {
        if r.mode == 2 && self.frame_in(&r.sender, &r.content, s) {
            return;
        }
        let text = match r.mode {
            2 => text::decode_mixed(&r.content),
            0 => Some(text::decode(&r.content)),
            _ => None,
        }
        .unwrap_or_else(|| String::from_utf8_lossy(&r.content).into_owned());
        self.inbound(&r.sender, text, s);
    }

    fn on_receive3(&mut self, r: Receive3, s: &wire::Sentence) {
        if r.coding == 3 && self.frame_in(&r.sender, &r.data, s) {
            return;
        }
        let text = match r.coding {
            3 => text::decode_mixed(&r.data),
            1 => text::from_hex(&r.data).map(|b| text::decode(&b)),
            2 if self.cfg.code_coding == CodeCoding::Hex => text::from_hex(&r.data)
                .filter(|b| b.iter().all(|c| c.is_ascii_graphic() || *c == b' '))
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            _ => None,
        }
        .unwrap_or_else(|| String::from_utf8_lossy(&r.data).into_owned());
        self.inbound(&r.sender, text, s);
    }

    /// Mixed content that is a compact frame from another Tocsin node becomes a `Frame`
    /// event with its bytes exactly; returns false (and does nothing) for anything else,
    /// which stays text.
    fn frame_in(&mut self, sender: &str, content: &[u8], s: &wire::Sentence) -> bool {
        let Some(bytes) = compact_frame(content) else {
            return false;
        };
        let Some(card) = canonical_card(sender) else {
            self.unrecognized(format!("frame from a non-card sender: {}", s.to_text()));
            return true;
        };
        self.health.received += 1;
        self.events.push_back(DriverEvent::Frame {
            from: Address::BeidouCard(card),
            bytes,
            evidence: s.to_text(),
            receipt: None,
        });
        true
    }

    fn inbound(&mut self, sender: &str, text: String, s: &wire::Sentence) {
        let Some(card) = canonical_card(sender) else {
            self.unrecognized(format!("message from a non-card sender: {}", s.to_text()));
            return;
        };
        self.health.received += 1;
        self.events.push_back(DriverEvent::Inbound {
            from: Address::BeidouCard(card),
            text,
            evidence: s.to_text(),
            sent_at: None,
            receipt: None,
            in_reply_to: None,
        });
    }

    fn on_receipt(&mut self, fields: Vec<String>, s: &wire::Sentence) {
        if self.cfg.receipts {
            // The layout is unconfirmed: the receipt names the card it is for somewhere;
            // the oldest send to that card awaiting a receipt is the one delivered.
            let cards: Vec<String> = fields.iter().filter_map(|f| canonical_card(f)).collect();
            if let Some(pos) = self
                .awaiting_receipt
                .iter()
                .position(|(dest, _)| cards.contains(dest))
                && let Some((_, attempt)) = self.awaiting_receipt.remove(pos)
            {
                self.events.push_back(DriverEvent::Delivered {
                    attempt,
                    evidence: s.to_text(),
                });
                return;
            }
        }
        self.unrecognized(s.to_text());
    }
}

/// The compact frame in mixed content (`A4` + hex; the marker is optional, as for text):
/// the bytes when the first is a compact header (`0x11`–`0x15`) and
/// `tocsin_compact::Frame::decode` accepts them, else `None` (the content is text).
pub fn compact_frame(content: &[u8]) -> Option<Vec<u8>> {
    let bytes = text::from_hex(content)?;
    let body = bytes.strip_prefix(&[text::MIXED_MARKER]).unwrap_or(&bytes);
    let first = *body.first()?;
    ((0x11..=0x15).contains(&first) && tocsin_compact::Frame::decode(body).is_ok())
        .then(|| body.to_vec())
}

/// A card id in canonical form: digits only, leading zeros dropped, then zero-padded to 7
/// (BDS-2 terminals write `0242286`, BDS-3 ones may write `04207733` for the same width of
/// number). `None` when it is not a card number. The directory should hold card ids in
/// this form.
pub fn canonical_card(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = s.trim_start_matches('0');
    if digits.is_empty() || digits.len() > 10 {
        return None;
    }
    Some(format!("{digits:0>7}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_channel::{FrameOut, Outbound};

    const T0: Timestamp = Timestamp(1_750_000_000_000);

    fn send(attempt: u64, card: &str, text: &str) -> DriverCommand {
        DriverCommand::Send(Outbound {
            attempt: AttemptId(attempt),
            to: Address::BeidouCard(card.to_owned()),
            text: text.to_owned(),
            want_report: true,
        })
    }

    fn drain_tx(t: &mut Terminal) -> String {
        let mut s = String::new();
        while let Some(b) = t.poll_transmit() {
            s.push_str(&String::from_utf8_lossy(&b));
        }
        s
    }

    fn drain_events(t: &mut Terminal) -> Vec<DriverEvent> {
        std::iter::from_fn(|| t.poll_event()).collect()
    }

    /// A 2.1 terminal with its card read (card 0242286, 60 s, level 3).
    fn ready_bds2() -> Terminal {
        let mut t = Terminal::new(BeidouConfig::new("x"), T0);
        t.handle_port_opened(T0);
        assert_eq!(drain_tx(&mut t), "$CCICA,0,00*7B\r\n$CCICR,0,00*68\r\n");
        t.handle_rx(T0, b"$BDICI,0242286,00242286,0000011,6,60,3,N,0*38\r\n");
        assert_eq!(drain_tx(&mut t), "$CCRMO,BSI,2,10*17\r\n");
        t
    }

    #[test]
    fn auto_reads_the_card_in_the_dialect_that_answers() {
        let mut t = ready_bds2();
        assert!(t.is_ready());
        assert_eq!(t.dialect(), Some(Dialect::Bds2));
        assert_eq!(t.card().unwrap().id, "0242286");
        assert_eq!(t.interval(), Duration::from_secs(60));
        assert_eq!(t.capacity_bytes(), Some(77));
        let ev = drain_events(&mut t);
        assert!(matches!(&ev[..], [DriverEvent::Health(h)] if h.up && h.registered));

        let mut t = Terminal::new(BeidouConfig::new("x"), T0);
        t.handle_port_opened(T0);
        drain_tx(&mut t);
        t.handle_rx(
            T0,
            b"$BDICP,15240507,2032472,1,3,0,N,1,Y,1,0,0,3,1,1,5,1,1,2,2,500,100,10,10*65\r\n",
        );
        assert_eq!(t.dialect(), Some(Dialect::Bds3));
        assert_eq!(drain_tx(&mut t), "", "BDS-3 reports PWI on its own");
        assert_eq!(t.card().unwrap().id, "15240507");
        assert_eq!(t.interval(), Duration::from_secs(1));
        assert_eq!(t.capacity_bytes(), Some(1749));
    }

    #[test]
    fn a_send_goes_out_in_mixed_mode_and_the_feedback_makes_it_sent() {
        let mut t = ready_bds2();
        drain_events(&mut t);
        t.submit(T0, send(1, "242286", "hello北斗"));
        assert_eq!(
            drain_tx(&mut t),
            "$CCTXA,0242286,1,2,A468656C6C6FB1B1B6B7*7F\r\n"
        );
        t.handle_rx(T0, b"$BDFKI,TXA,Y,Y,0,0000*13\r\n");
        let ev = drain_events(&mut t);
        assert_eq!(
            ev[0],
            DriverEvent::Accepted {
                attempt: AttemptId(1)
            }
        );
        assert!(
            matches!(&ev[1], DriverEvent::Sent { attempt: AttemptId(1), reference } if reference.contains("0242286")),
            "{ev:?}"
        );
        assert_eq!(ev.len(), 2, "never Delivered without a receipt");
    }

    #[test]
    fn sends_are_paced_by_the_service_frequency() {
        let mut t = ready_bds2();
        t.submit(T0, send(1, "0242286", "一"));
        t.submit(T0, send(2, "0242286", "二"));
        assert!(drain_tx(&mut t).starts_with("$CCTXA"));
        let t1 = T0 + Duration::from_secs(2);
        t.handle_rx(t1, b"$BDFKI,TXA,Y,Y,0,0000*13\r\n");
        assert_eq!(
            drain_tx(&mut t),
            "",
            "the second waits for the service period"
        );
        assert_eq!(t.poll_timeout(), Some(t1 + Duration::from_secs(60)));
        t.handle_timeout(t1 + Duration::from_secs(59));
        assert_eq!(drain_tx(&mut t), "");
        t.handle_timeout(t1 + Duration::from_secs(60));
        assert_eq!(drain_tx(&mut t), "$CCTXA,0242286,1,2,A4B6FE*74\r\n");
    }

    #[test]
    fn frequency_not_reached_reschedules_instead_of_failing() {
        let mut cfg = BeidouConfig::new("x");
        cfg.dialect = crate::config::DialectSetting::Bds3;
        let mut t = Terminal::new(cfg, T0);
        t.handle_port_opened(T0);
        assert_eq!(drain_tx(&mut t), "$CCICR,0,00*68\r\n");
        t.handle_rx(T0, b"$BDICP,4207733,0,1,3,0,N,1,Y,1,0,0,3,1,60,3*64\r\n");
        assert!(t.is_ready(), "{:?}", drain_events(&mut t));
        t.submit(T0, send(7, "4207733", "收到1"));
        assert_eq!(
            drain_tx(&mut t),
            "$CCTCQ,4207733,2,1,3,A4CAD5B5BD31,0*05\r\n"
        );
        t.handle_rx(T0, b"$BDFKI,080432,TCQ,N,1,0045*5B\r\n");
        let ev = drain_events(&mut t);
        assert!(
            !ev.iter().any(|e| matches!(e, DriverEvent::Failed { .. })),
            "{ev:?}"
        );
        assert_eq!(t.queued(), 1);
        assert_eq!(t.stats().rescheduled, 1);
        assert_eq!(t.poll_timeout(), Some(T0 + Duration::from_secs(45)));
        t.handle_timeout(T0 + Duration::from_secs(45));
        assert_eq!(
            drain_tx(&mut t),
            "$CCTCQ,4207733,2,1,3,A4CAD5B5BD31,0*05\r\n"
        );
        t.handle_rx(T0, b"$BDFKI,080517,TCQ,Y,0,0*7A\r\n");
        assert!(matches!(
            drain_events(&mut t).last(),
            Some(DriverEvent::Sent {
                attempt: AttemptId(7),
                ..
            })
        ));
    }

    #[test]
    fn bad_checksums_are_counted_and_never_acted_on() {
        let mut t = ready_bds2();
        drain_events(&mut t);
        // A reply with one wrong checksum digit.
        t.handle_rx(T0, b"$BDTXR,1,0242286,2,,A4CAD5B5BD31*3B\r\n");
        let ev = drain_events(&mut t);
        assert!(
            matches!(&ev[..], [DriverEvent::Unrecognized { raw }] if raw.starts_with("bad checksum"))
        );
        assert_eq!(t.stats().bad_checksums, 1);
        // A feedback with a bad checksum does not make a send Sent.
        t.submit(T0, send(1, "0242286", "x"));
        drain_events(&mut t);
        t.handle_rx(T0, b"$BDFKI,TXA,Y,Y,0,0000*14\r\n");
        assert!(
            !drain_events(&mut t)
                .iter()
                .any(|e| matches!(e, DriverEvent::Sent { .. }))
        );
        assert_eq!(t.stats().bad_checksums, 2);
    }

    #[test]
    fn replies_arrive_from_the_sender_card_in_both_dialects() {
        let mut t = ready_bds2();
        drain_events(&mut t);
        t.handle_rx(T0, b"$BDTXR,1,0242286,2,,A4CAD5B5BD31*3A\r\n");
        let ev = drain_events(&mut t);
        assert_eq!(
            ev,
            vec![DriverEvent::Inbound {
                from: Address::BeidouCard("0242286".into()),
                text: "收到1".into(),
                evidence: "$BDTXR,1,0242286,2,,A4CAD5B5BD31*3A".into(),
                sent_at: None,
                receipt: None,
                in_reply_to: None,
            }]
        );
        // The real BDS-3 trace: coding 2, binary hex data kept as hex text.
        t.handle_rx(
            T0,
            b"$BDTCI,4204986,4204990,2,142204,2,0,3A642B500000000000000A01F35B41EC036542EE74F5*40\r\n",
        );
        let ev = drain_events(&mut t);
        assert!(
            matches!(&ev[..], [DriverEvent::Inbound { from: Address::BeidouCard(c), text, .. }]
            if c == "4204986" && text == "3A642B500000000000000A01F35B41EC036542EE74F5")
        );
        // A zero-padded 8-digit sender is the same card as the 7-digit form.
        let reply = Message::Receive3(Receive3 {
            sender: "04207733".into(),
            receiver: "0242286".into(),
            freq_point: "2".into(),
            time: "142204".into(),
            coding: 3,
            flag: "0".into(),
            data: text::mixed(&text::encode("1 K7XT", false).bytes).into_bytes(),
        });
        t.handle_rx(T0, &reply.to_bytes());
        let ev = drain_events(&mut t);
        assert!(
            matches!(&ev[..], [DriverEvent::Inbound { from: Address::BeidouCard(c), text, .. }]
            if c == "4207733" && text == "1 K7XT")
        );
    }

    #[test]
    fn texts_over_the_card_capacity_are_refused_not_truncated() {
        let mut t = ready_bds2();
        drain_events(&mut t);
        let long = "山".repeat(39); // 78 bytes; level 3 carries 77.
        t.submit(T0, send(1, "0242286", &long));
        let ev = drain_events(&mut t);
        assert!(
            matches!(&ev[..], [DriverEvent::Failed { attempt: AttemptId(1), retryable: false, reason }] if reason.contains("77")),
            "{ev:?}"
        );
        assert_eq!(drain_tx(&mut t), "");
        t.submit(T0, send(2, "0242286", &"山".repeat(38)));
        assert!(drain_tx(&mut t).starts_with("$CCTXA"));
        // Wrong kind of address.
        t.submit(
            T0,
            DriverCommand::Send(Outbound {
                attempt: AttemptId(3),
                to: Address::SbdImei("300234010753370".into()),
                text: "x".into(),
                want_report: false,
            }),
        );
        assert!(matches!(
            drain_events(&mut t).last(),
            Some(DriverEvent::Failed {
                retryable: false,
                ..
            })
        ));
    }

    #[test]
    fn characters_outside_gb2312_are_sent_as_the_fallback_and_recorded() {
        let mut t = ready_bds2();
        drain_events(&mut t);
        t.submit(T0, send(1, "0242286", "张堃"));
        assert_eq!(drain_tx(&mut t), "$CCTXA,0242286,1,2,A4D5C5A3BF*72\r\n");
        t.handle_rx(T0, b"$BDFKI,TXA,Y,Y,0,0000*13\r\n");
        let ev = drain_events(&mut t);
        assert!(
            matches!(ev.last(), Some(DriverEvent::Sent { reference, .. }) if reference.contains("1 characters outside GB2312"))
        );
    }

    #[test]
    fn no_signal_holds_sends_then_reports_the_terminal_down() {
        let mut t = ready_bds2();
        drain_events(&mut t);
        t.handle_rx(T0, &beams(0));
        let ev = drain_events(&mut t);
        assert!(matches!(&ev[..], [DriverEvent::Health(h)] if h.up && !h.registered));
        t.submit(T0, send(1, "0242286", "x"));
        assert_eq!(drain_tx(&mut t), "", "no send without signal");
        drain_events(&mut t);
        let t1 = T0 + Duration::from_secs(10);
        assert_eq!(t.poll_timeout(), Some(t1));
        t.handle_timeout(t1);
        let ev = drain_events(&mut t);
        assert!(
            matches!(&ev[..], [DriverEvent::Health(h)] if !h.up && !h.registered),
            "{ev:?}"
        );
        // The router moves the attempt to another terminal.
        t.submit(t1, DriverCommand::Cancel(AttemptId(1)));
        assert!(matches!(
            drain_events(&mut t)[..],
            [DriverEvent::Failed {
                retryable: false,
                ..
            }]
        ));
        // Signal returns: up again, and a new send goes out.
        t.handle_rx(t1, &beams(3));
        assert!(
            matches!(&drain_events(&mut t)[..], [DriverEvent::Health(h)] if h.up && h.registered)
        );
        t.submit(t1, send(2, "0242286", "y"));
        assert!(drain_tx(&mut t).starts_with("$CCTXA"));
    }

    fn beams(power: u8) -> Vec<u8> {
        Message::BeamStatus(wire::BeamStatus {
            response_beam: "01".into(),
            timediff_beam: "02".into(),
            powers: vec![power; 10],
        })
        .to_bytes()
    }

    #[test]
    fn bds3_power_status_with_no_satellites_holds_sends() {
        let mut cfg = BeidouConfig::new("x");
        cfg.dialect = crate::config::DialectSetting::Bds3;
        let mut t = Terminal::new(cfg, T0);
        t.handle_port_opened(T0);
        t.handle_rx(T0, b"$BDICP,4207733,0,1,3,0,N,1,Y,1,0,0,3,1,60,3*64\r\n");
        t.handle_rx(T0, b"$BDPWI,000000.00,00,00*4A\r\n");
        drain_tx(&mut t);
        t.submit(T0, send(1, "0242286", "x"));
        assert_eq!(drain_tx(&mut t), "");
        t.handle_rx(T0, b"$BDPWI,000000.00,00,01,51,40,33,0*7B\r\n");
        assert!(drain_tx(&mut t).starts_with("$CCTCQ"));
    }

    #[test]
    fn missing_feedback_fails_retryable_and_port_loss_keeps_the_queue() {
        let mut t = ready_bds2();
        t.submit(T0, send(1, "0242286", "a"));
        t.submit(T0, send(2, "0242286", "b"));
        drain_tx(&mut t);
        drain_events(&mut t);
        let t1 = T0 + Duration::from_secs(10);
        t.handle_timeout(t1);
        let ev = drain_events(&mut t);
        assert!(
            matches!(&ev[..], [DriverEvent::Failed { attempt: AttemptId(1), retryable: true, reason }] if reason.contains("may have gone out")),
            "{ev:?}"
        );
        t.handle_port_lost(t1);
        assert_eq!(t.queued(), 1);
        t.handle_port_opened(t1);
        t.handle_rx(t1, b"$BDICI,0242286,00242286,0000011,6,60,3,N,0*38\r\n");
        drain_tx(&mut t);
        t.handle_timeout(t1 + Duration::from_secs(60));
        assert_eq!(drain_tx(&mut t), "$CCTXA,0242286,1,2,A462*07\r\n");
    }

    #[test]
    fn an_unanswering_terminal_is_reported_down_and_asked_again() {
        let mut t = Terminal::new(BeidouConfig::new("x"), T0);
        t.handle_port_opened(T0);
        let mut now = T0;
        for _ in 0..3 {
            drain_tx(&mut t);
            now = t.poll_timeout().unwrap();
            t.handle_timeout(now);
        }
        let ev = drain_events(&mut t);
        assert!(
            matches!(&ev[..], [DriverEvent::Health(h)] if !h.up),
            "{ev:?}"
        );
        assert_eq!(t.poll_timeout(), Some(now + Duration::from_secs(5)));
        t.handle_timeout(now + Duration::from_secs(5));
        assert!(drain_tx(&mut t).contains("$CCICA"));
    }

    #[test]
    fn receipts_make_delivered_only_when_configured() {
        let mut cfg = BeidouConfig::new("x");
        cfg.receipts = true;
        let mut t = Terminal::new(cfg, T0);
        t.handle_port_opened(T0);
        t.handle_rx(T0, b"$BDICI,0242286,00242286,0000011,6,60,3,N,0*38\r\n");
        t.submit(T0, send(1, "4207733", "x"));
        t.handle_rx(T0, b"$BDFKI,TXA,Y,Y,0,0000*13\r\n");
        drain_events(&mut t);
        let hzr = Message::Receipt(wire::Receipt {
            fields: vec!["4207733".into(), "1".into(), "0804".into()],
        })
        .to_bytes();
        t.handle_rx(T0, &hzr);
        assert!(matches!(
            &drain_events(&mut t)[..],
            [DriverEvent::Delivered {
                attempt: AttemptId(1),
                ..
            }]
        ));
        // A second receipt for the same card has nothing to match.
        t.handle_rx(T0, &hzr);
        assert!(matches!(
            &drain_events(&mut t)[..],
            [DriverEvent::Unrecognized { .. }]
        ));
    }

    /// The red flash-flood alert of docs/compact-encoding.md (21 bytes).
    const ALERT: [u8; 21] = [
        0x11, 0x00, 0xA1, 0xB2, 0xC7, 0x02, 0x0F, 0x42, 0x40, 0x04, 0x56, 0x30, 0x32, 0x33, 0x00,
        0xB9, 0xBD, 0xC9, 0xBD, 0xBA, 0xE9,
    ];

    fn frame(attempt: u64, card: &str, bytes: &[u8]) -> DriverCommand {
        DriverCommand::SendFrame(FrameOut {
            attempt: AttemptId(attempt),
            to: Address::BeidouCard(card.to_owned()),
            bytes: bytes.to_vec(),
        })
    }

    fn ready_bds3() -> Terminal {
        let mut cfg = BeidouConfig::new("x");
        cfg.dialect = crate::config::DialectSetting::Bds3;
        let mut t = Terminal::new(cfg, T0);
        t.handle_port_opened(T0);
        assert_eq!(drain_tx(&mut t), "$CCICR,0,00*68\r\n");
        t.handle_rx(T0, b"$BDICP,4207733,0,1,3,0,N,1,Y,1,0,0,3,1,60,3*64\r\n");
        assert!(t.is_ready());
        drain_events(&mut t);
        t
    }

    #[test]
    fn a_frame_goes_out_as_one_mixed_message_in_both_dialects() {
        let mut t = ready_bds2();
        drain_events(&mut t);
        t.submit(T0, frame(1, "242286", &ALERT));
        assert_eq!(
            drain_tx(&mut t),
            "$CCTXA,0242286,1,2,A41100A1B2C7020F4240045630323300B9BDC9BDBAE9*7A\r\n"
        );
        t.handle_rx(T0, b"$BDFKI,TXA,Y,Y,0,0000*13\r\n");
        let ev = drain_events(&mut t);
        assert_eq!(
            ev[0],
            DriverEvent::Accepted {
                attempt: AttemptId(1)
            }
        );
        assert!(
            matches!(&ev[1], DriverEvent::Sent { attempt: AttemptId(1), reference } if reference.contains("to 0242286") && !reference.contains("GB2312")),
            "{ev:?}"
        );
        assert_eq!(t.health.sent, 1);

        let mut t = ready_bds3();
        t.submit(T0, frame(2, "4207733", &ALERT));
        assert_eq!(
            drain_tx(&mut t),
            "$CCTCQ,4207733,2,1,3,A41100A1B2C7020F4240045630323300B9BDC9BDBAE9,0*7C\r\n"
        );
    }

    #[test]
    fn a_frame_waits_for_the_service_frequency_and_is_rescheduled_like_text() {
        let mut t = ready_bds3();
        t.submit(T0, send(1, "4207733", "收到1"));
        assert!(drain_tx(&mut t).starts_with("$CCTCQ"));
        t.handle_rx(T0, b"$BDFKI,080432,TCQ,Y,0,0*7C\r\n");
        t.submit(T0, frame(2, "4207733", &ALERT));
        assert_eq!(drain_tx(&mut t), "", "paced: 60 s between messages");
        assert_eq!(t.poll_timeout(), Some(T0 + Duration::from_secs(60)));
        let t1 = T0 + Duration::from_secs(60);
        t.handle_timeout(t1);
        let sentence = "$CCTCQ,4207733,2,1,3,A41100A1B2C7020F4240045630323300B9BDC9BDBAE9,0*7C\r\n";
        assert_eq!(drain_tx(&mut t), sentence);
        // The terminal's clock disagrees: the frame goes back to the head of the queue.
        t.handle_rx(t1, b"$BDFKI,080432,TCQ,N,1,0045*5B\r\n");
        assert!(
            !drain_events(&mut t)
                .iter()
                .any(|e| matches!(e, DriverEvent::Failed { .. }))
        );
        assert_eq!(t.queued(), 1);
        t.handle_timeout(t1 + Duration::from_secs(45));
        assert_eq!(drain_tx(&mut t), sentence);
        t.handle_rx(t1, b"$BDFKI,080517,TCQ,Y,0,0*7A\r\n");
        assert!(matches!(
            drain_events(&mut t).last(),
            Some(DriverEvent::Sent {
                attempt: AttemptId(2),
                ..
            })
        ));
    }

    #[test]
    fn a_frame_is_held_without_signal_and_its_missing_feedback_fails_retryable() {
        let mut t = ready_bds2();
        drain_events(&mut t);
        t.handle_rx(T0, &beams(0));
        t.submit(T0, frame(1, "0242286", &ALERT));
        assert_eq!(drain_tx(&mut t), "", "no send without signal");
        t.handle_rx(T0, &beams(3));
        assert!(drain_tx(&mut t).starts_with("$CCTXA,0242286,1,2,A411"));
        drain_events(&mut t);
        t.handle_timeout(T0 + Duration::from_secs(10));
        assert!(matches!(
            &drain_events(&mut t)[..],
            [DriverEvent::Failed { attempt: AttemptId(1), retryable: true, reason }] if reason.contains("may have gone out")
        ));
    }

    #[test]
    fn a_frame_over_the_card_capacity_fails_for_good_and_is_never_split() {
        let mut t = ready_bds2();
        drain_events(&mut t);
        let mut big = ALERT.to_vec();
        big.resize(78, 0xB0); // level 3 carries 77
        t.submit(T0, frame(1, "0242286", &big));
        let ev = drain_events(&mut t);
        assert!(
            matches!(&ev[..], [DriverEvent::Failed { attempt: AttemptId(1), retryable: false, reason }]
                if reason.contains("78 bytes") && reason.contains("77") && reason.contains("never split")),
            "{ev:?}"
        );
        assert_eq!(drain_tx(&mut t), "");
        // Exactly the capacity goes, as one message of 77 bytes.
        big.truncate(77);
        t.submit(T0, frame(2, "0242286", &big));
        let tx = drain_tx(&mut t);
        let content = tx
            .split(',')
            .nth(4)
            .and_then(|c| c.split('*').next())
            .unwrap();
        assert_eq!(content.len(), 2 + 77 * 2);
        // Empty frames and wrong addresses are refused for good too.
        t.submit(T0, frame(3, "0242286", &[]));
        t.submit(
            T0,
            DriverCommand::SendFrame(FrameOut {
                attempt: AttemptId(4),
                to: Address::SbdImei("300234010753370".into()),
                bytes: ALERT.to_vec(),
            }),
        );
        let ev = drain_events(&mut t);
        let failed: Vec<AttemptId> = ev
            .iter()
            .filter_map(|e| match e {
                DriverEvent::Failed {
                    attempt,
                    retryable: false,
                    ..
                } => Some(*attempt),
                _ => None,
            })
            .collect();
        assert_eq!(failed, [AttemptId(3), AttemptId(4)], "{ev:?}");
    }

    #[test]
    fn a_frame_that_fits_only_once_the_card_is_read_is_checked_at_send_time() {
        // Before the card is read the capacity is unknown: the frame is queued, then
        // refused for good when the card says it cannot carry it.
        let mut t = Terminal::new(BeidouConfig::new("x"), T0);
        t.handle_port_opened(T0);
        drain_tx(&mut t);
        t.submit(T0, frame(1, "0242286", &[0x15; 100]));
        assert!(matches!(
            &drain_events(&mut t)[..],
            [DriverEvent::Accepted { .. }]
        ));
        t.handle_rx(T0, b"$BDICI,0242286,00242286,0000011,6,60,3,N,0*38\r\n");
        assert!(
            drain_events(&mut t).iter().any(|e| matches!(
                e,
                DriverEvent::Failed { attempt: AttemptId(1), retryable: false, reason } if reason.contains("100 bytes")
            ))
        );
        assert!(!drain_tx(&mut t).contains("CCTXA"));
    }

    #[test]
    fn received_frames_become_frame_events_with_the_exact_bytes() {
        let mut t = ready_bds2();
        drain_events(&mut t);
        t.handle_rx(
            T0,
            b"$BDTXR,1,0242286,2,,A41100A1B2C7020F4240045630323300B9BDC9BDBAE9*43\r\n",
        );
        assert_eq!(
            drain_events(&mut t),
            vec![DriverEvent::Frame {
                from: Address::BeidouCard("0242286".into()),
                bytes: ALERT.to_vec(),
                evidence: "$BDTXR,1,0242286,2,,A41100A1B2C7020F4240045630323300B9BDC9BDBAE9*43"
                    .into(),
                receipt: None,
            }]
        );
        // The ack-batch example, from a kit's card.
        t.handle_rx(
            T0,
            b"$BDTXR,1,0242286,2,,A4120101110FAD8F795A039387000200A1B200B9BDAC020370313700A1B20000000003703138*38\r\n",
        );
        let ev = drain_events(&mut t);
        let [DriverEvent::Frame { bytes, .. }] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert!(matches!(
            tocsin_compact::Frame::decode(bytes),
            Ok(tocsin_compact::Frame::Acks(b)) if b.acks.len() == 2
        ));
        // BDS-3, sender zero-padded to 8 digits.
        t.handle_rx(
            T0,
            b"$BDTCI,04207733,0242286,2,142204,3,0,A41100A1B2C7020F4240045630323300B9BDC9BDBAE9*76\r\n",
        );
        assert!(matches!(
            &drain_events(&mut t)[..],
            [DriverEvent::Frame { from: Address::BeidouCard(c), bytes, receipt: None, .. }]
                if c == "4207733" && bytes[..] == ALERT[..]
        ));
        assert_eq!(t.health.received, 3);
    }

    #[test]
    fn content_that_is_not_a_frame_stays_text() {
        let mut t = ready_bds2();
        drain_events(&mut t);
        // A compact header whose body does not decode.
        t.handle_rx(T0, b"$BDTXR,1,0242286,2,,A411FFFF*3A\r\n");
        let ev = drain_events(&mut t);
        assert!(
            matches!(&ev[..], [DriverEvent::Inbound { from: Address::BeidouCard(c), .. }] if c == "0242286"),
            "{ev:?}"
        );
        // An ordinary reply, and code-mode content, stay text.
        t.handle_rx(T0, b"$BDTXR,1,0242286,2,,A4CAD5B5BD31*3A\r\n");
        assert!(matches!(
            &drain_events(&mut t)[..],
            [DriverEvent::Inbound { text, .. }] if text == "收到1"
        ));
        assert_eq!(compact_frame(b"A4CAD5B5BD31"), None);
        assert_eq!(compact_frame(b"A415"), None, "a header alone is no frame");
        assert_eq!(compact_frame(b"A41500"), Some(vec![0x15, 0x00]));
        assert_eq!(
            compact_frame(b"1500"),
            Some(vec![0x15, 0x00]),
            "marker optional"
        );
        assert_eq!(compact_frame(b"A41"), None);
        assert_eq!(compact_frame(b""), None);
        assert_eq!(compact_frame(b"A4"), None);
    }

    #[test]
    fn card_ids_canonicalise() {
        assert_eq!(canonical_card("242286").as_deref(), Some("0242286"));
        assert_eq!(canonical_card("04207733").as_deref(), Some("4207733"));
        assert_eq!(canonical_card("15240507").as_deref(), Some("15240507"));
        assert_eq!(canonical_card("0000000"), None);
        assert_eq!(canonical_card("12a"), None);
        assert_eq!(canonical_card(""), None);
    }
}
