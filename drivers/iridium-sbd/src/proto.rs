//! The 9602/9603 conversation as a sans-IO state machine (in the style of `quinn-proto`).
//!
//! Inputs: [`Sbd::handle_rx`], [`Sbd::handle_timeout`], [`Sbd::submit`],
//! [`Sbd::handle_port_opened`], [`Sbd::handle_port_lost`], each with `now`. Outputs:
//! [`Sbd::poll_transmit`], [`Sbd::poll_event`], [`Sbd::poll_timeout`]. No I/O, no clock.
//!
//! One command is in flight at a time. After every port open the modem is initialised:
//! `AT`, `ATE0`, `AT&K0`, `AT&D0`, `AT+SBDMTA=1` (ring alerts), `AT+CIER=1,1,1` (signal
//! and service indications), `AT+CGSN` (the IMEI), `AT+SBDD0` (a stale MO from before a
//! restart is not sent again by the next mailbox check), `AT+CSQ`, and `AT+SBDRB` so an MT
//! message received before a restart and never released is reported again.
//!
//! A send: the router's text becomes a compact text frame (a `SendFrame`'s compact frame
//! goes as it is, after the peer's routing prefix like a text); `AT+SBDWB=<n>`, `READY`, the
//! bytes and the checksum, `0`; then a session, `AT+SBDIX` (or `AT+SBDIXA` when answering a
//! `SBDRING`). MO status 0–4 is `Sent` (reference: the MOMSN) and the MO buffer is cleared so
//! a mailbox check never re-sends it; 12/14/16 are `Failed` for good; anything else is
//! retried with a doubling pause up to `session_attempts` sessions, then `Failed`
//! retryable. A session that never answers may have sent the message: `Failed` retryable,
//! saying so. The driver never resends on its own after that.
//!
//! Every session is also a mailbox check. Sessions without a message run on a schedule,
//! when a ring arrives, and while the gateway says more MT messages are queued. An MT
//! message is read with `AT+SBDRB`, checked, decoded with `tocsin-compact`, and reported: a
//! text frame as `Inbound` from the single configured peer; any other frame (a kit's ack
//! batch, the district's alert, cancel or update) as `Frame` with its exact bytes, from the
//! batch's origin IMEI when it carries one, else the single peer, else `Unrecognized`;
//! the modem has one MT buffer, which the next session overwrites, so no session starts
//! until the message is released (`AT+SBDD1`) or `mt_hold_secs` have passed.

use std::collections::VecDeque;
use std::time::Duration;

use tocsin_channel::{Body, DriverCommand, DriverEvent, Health, InboundReceipt, Job};
use tocsin_compact::{Frame as Compact, TextFrame};
use tocsin_core::{Address, AttemptId, Timestamp};

use crate::config::SbdConfig;
use crate::wire::{self, FinalResult, Frame, MoClass, Mode, MtBlock, SessionResult};

/// One AT command the driver sends, with its timeout and retry count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `AT`: is anyone there?
    Sync,
    /// `ATE0`: no echo.
    EchoOff,
    /// `AT&K0`: no flow control (3-wire serial).
    FlowControlOff,
    /// `AT&D0`: ignore DTR.
    DtrIgnored,
    /// `AT+SBDMTA=1`: `SBDRING` when an MT message waits.
    RingAlerts,
    /// `AT+CIER=1,1,1`: `+CIEV` signal and service indications.
    Indications,
    /// `AT+CGSN`: the modem's IMEI.
    Imei,
    /// `AT+SBDD0`: clear the MO buffer.
    ClearMo,
    /// `AT+SBDD1`: clear the MT buffer.
    ClearMt,
    /// `AT+CSQ`: signal bars 0–5.
    Signal,
    /// `AT+SBDWB=<n>`: write a binary MO message; the modem answers `READY`.
    WriteLength(usize),
    /// The message bytes and checksum after `READY`; the modem answers `0`–`3`.
    WriteBody(Vec<u8>),
    /// `AT+SBDIX`, or `AT+SBDIXA` answering a ring: a session.
    Session {
        /// Answering a ring.
        answer: bool,
    },
    /// `AT+SBDRB`: read the MT buffer (a binary block).
    ReadMt,
}

/// The init sequence, in order.
const INIT: [Command; 10] = [
    Command::Sync,
    Command::EchoOff,
    Command::FlowControlOff,
    Command::DtrIgnored,
    Command::RingAlerts,
    Command::Indications,
    Command::Imei,
    Command::ClearMo,
    Command::Signal,
    Command::ReadMt,
];

impl Command {
    /// The bytes to write.
    pub fn to_bytes(&self) -> Vec<u8> {
        let text = match self {
            Command::Sync => "AT".to_owned(),
            Command::EchoOff => "ATE0".to_owned(),
            Command::FlowControlOff => "AT&K0".to_owned(),
            Command::DtrIgnored => "AT&D0".to_owned(),
            Command::RingAlerts => "AT+SBDMTA=1".to_owned(),
            Command::Indications => "AT+CIER=1,1,1".to_owned(),
            Command::Imei => "AT+CGSN".to_owned(),
            Command::ClearMo => "AT+SBDD0".to_owned(),
            Command::ClearMt => "AT+SBDD1".to_owned(),
            Command::Signal => "AT+CSQ".to_owned(),
            Command::WriteLength(n) => format!("AT+SBDWB={n}"),
            Command::Session { answer: false } => "AT+SBDIX".to_owned(),
            Command::Session { answer: true } => "AT+SBDIXA".to_owned(),
            Command::ReadMt => "AT+SBDRB".to_owned(),
            Command::WriteBody(data) => {
                let mut b = data.clone();
                b.extend_from_slice(&wire::checksum(data).to_be_bytes());
                return b;
            }
        };
        let mut b = text.into_bytes();
        b.push(b'\r');
        b
    }

    /// How long to wait for the final result.
    pub fn timeout(&self, cfg: &SbdConfig) -> Duration {
        match self {
            Command::Sync => Duration::from_secs(2),
            Command::Session { .. } => cfg.session_timeout(),
            // +CSQ can take up to 10 s while the modem measures.
            Command::Signal => cfg.command_timeout() * 2,
            _ => cfg.command_timeout(),
        }
    }

    /// How many times to send it again after a timeout. Never a write or a session:
    /// repeating either could put the same message out twice without the record knowing.
    pub fn retries(&self) -> u8 {
        match self {
            Command::Sync => 4,
            Command::WriteLength(_) | Command::WriteBody(_) | Command::Session { .. } => 0,
            _ => 2,
        }
    }
}

/// The state machine's timers; each indexes one deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// The in-flight command's result is due.
    Response,
    /// Time for the next signal poll.
    Health,
    /// Time for the next scheduled mailbox check.
    Mailbox,
    /// The pause after a failed session is over.
    Retry,
    /// Time to initialise again after the modem did not answer.
    Reinit,
    /// A received MT message has waited long enough for its release.
    MtHold,
}

const TIMERS: [Timer; 6] = [
    Timer::Response,
    Timer::Health,
    Timer::Mailbox,
    Timer::Retry,
    Timer::Reinit,
    Timer::MtHold,
];

/// Where the conversation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// The port is closed.
    Down,
    /// The modem did not answer; waiting to try again.
    Backoff,
    /// Running init step `n`.
    Init(usize),
    /// Initialised.
    Ready,
}

/// The command awaiting its final result.
#[derive(Debug)]
struct InFlight {
    cmd: Command,
    tries_left: u8,
    lines: Vec<String>,
    block: Option<MtBlock>,
}

/// Where a send is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// The message is to be written into the MO buffer.
    Write,
    /// The message is in the MO buffer; a session sends it.
    Session,
}

/// The send being worked on.
#[derive(Debug)]
struct ActiveSend {
    out: Job,
    payload: Vec<u8>,
    stage: Stage,
    sessions: u32,
    writes: u32,
}

/// Writes tried for one message before it is reported failed.
const MAX_WRITES: u32 = 3;
/// Reads of one MT message before it is given up as unreadable.
const MAX_READS: u8 = 3;
/// Pause before initialising again after the modem stopped answering.
const BACKOFF_MIN: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The SBD modem conversation. See the module documentation.
pub struct Sbd {
    cfg: SbdConfig,
    link: Link,
    decoder: wire::Decoder,
    mode: Mode,
    current: Option<InFlight>,
    internal: VecDeque<Command>,
    queue: VecDeque<Job>,
    active: Option<ActiveSend>,
    ring_pending: bool,
    mailbox_due: bool,
    more_queued: bool,
    mtmsn: Option<u16>,
    held_mt: Option<InboundReceipt>,
    reads: u8,
    retry_pause: Duration,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<DriverEvent>,
    timers: [Option<Timestamp>; 6],
    health: Health,
    last_health: Option<Health>,
    service: Option<bool>,
    imei: Option<String>,
    backoff: tocsin_serial::io::Backoff,
}

impl Sbd {
    /// A modem whose port is not open yet; call [`Self::handle_port_opened`] when it is.
    pub fn new(cfg: SbdConfig, _now: Timestamp) -> Self {
        let retry_pause = Duration::from_secs(cfg.retry_secs);
        Sbd {
            cfg,
            link: Link::Down,
            decoder: wire::Decoder::new(),
            mode: Mode::Lines,
            current: None,
            internal: VecDeque::new(),
            queue: VecDeque::new(),
            active: None,
            ring_pending: false,
            mailbox_due: false,
            more_queued: false,
            mtmsn: None,
            held_mt: None,
            reads: 0,
            retry_pause,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            timers: [None; 6],
            health: Health::default(),
            last_health: None,
            service: None,
            imei: None,
            backoff: tocsin_serial::io::Backoff::between(BACKOFF_MIN, BACKOFF_MAX),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &SbdConfig {
        &self.cfg
    }

    /// Whether the modem is initialised.
    pub fn is_ready(&self) -> bool {
        self.link == Link::Ready
    }

    /// The modem's IMEI as `AT+CGSN` gave it.
    pub fn imei(&self) -> Option<&str> {
        self.imei.as_deref()
    }

    /// Sends waiting (not counting the one being worked on).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether an MT message waits for its release (sessions are held back).
    pub fn mt_held(&self) -> bool {
        self.held_mt.is_some()
    }

    /// The port is open: initialise the modem.
    pub fn handle_port_opened(&mut self, now: Timestamp) {
        self.decoder.clear();
        self.mode = Mode::Lines;
        self.current = None;
        self.internal.clear();
        self.timers = [None; 6];
        self.held_mt = None;
        self.link = Link::Init(0);
        self.pump(now);
    }

    /// The port is gone. A message whose session was in flight is reported failed and
    /// retryable (it may have gone out); one not yet in a session keeps its place.
    pub fn handle_port_lost(&mut self, now: Timestamp) {
        let _ = now;
        let in_session = matches!(
            self.current.as_ref().map(|c| &c.cmd),
            Some(Command::Session { .. })
        );
        self.current = None;
        if let Some(active) = self.active.take() {
            if in_session && active.stage == Stage::Session {
                self.events.push_back(DriverEvent::Failed {
                    attempt: active.out.attempt,
                    retryable: true,
                    reason: "port lost during an SBD session; the message may have gone out"
                        .to_owned(),
                });
            } else {
                self.queue.push_front(active.out);
            }
        }
        self.link = Link::Down;
        self.internal.clear();
        self.decoder.clear();
        self.mode = Mode::Lines;
        self.timers = [None; 6];
        self.held_mt = None;
        self.health.up = false;
        self.health.last_error = Some("port lost".to_owned());
        self.note_health();
    }

    /// Opening the port failed: report the device down with the reason.
    pub fn handle_open_failed(&mut self, now: Timestamp, error: &str) {
        let _ = now;
        self.health.up = false;
        self.health.last_error = Some(format!("cannot open port: {error}"));
        self.note_health();
    }

    /// Bytes read from the port.
    pub fn handle_rx(&mut self, now: Timestamp, bytes: &[u8]) {
        if self.link == Link::Down {
            return;
        }
        self.decoder.push(bytes);
        while let Some(frame) = self.decoder.next_frame(self.mode) {
            match frame {
                Ok(frame) => self.on_frame(now, frame),
                Err(m) => self.events.push_back(DriverEvent::Unrecognized {
                    raw: format!("{} ({})", String::from_utf8_lossy(&m.raw), m.reason),
                }),
            }
        }
        self.pump(now);
    }

    /// A command from the router.
    pub fn submit(&mut self, now: Timestamp, cmd: DriverCommand) {
        match cmd {
            DriverCommand::Send(out) => self.enqueue(out.into()),
            DriverCommand::SendFrame(f) => self.enqueue(f.into()),
            DriverCommand::Cancel(attempt) => self.cancel(attempt),
            DriverCommand::Release(receipt) => {
                if self.held_mt.as_ref() == Some(&receipt) {
                    self.held_mt = None;
                    self.timers[Timer::MtHold as usize] = None;
                    self.internal.push_back(Command::ClearMt);
                }
            }
        }
        self.pump(now);
    }

    fn enqueue(&mut self, out: Job) {
        if self.queue.len() >= self.cfg.queue_limit {
            self.events.push_back(DriverEvent::Failed {
                attempt: out.attempt,
                retryable: true,
                reason: format!("SBD queue full ({} waiting)", self.queue.len()),
            });
        } else {
            self.events.push_back(DriverEvent::Accepted {
                attempt: out.attempt,
            });
            self.queue.push_back(out);
        }
    }

    fn cancel(&mut self, attempt: AttemptId) {
        let failed = |attempt| DriverEvent::Failed {
            attempt,
            retryable: false,
            reason: "cancelled".to_owned(),
        };
        if let Some(pos) = self.queue.iter().position(|o| o.attempt == attempt) {
            self.queue.remove(pos);
            self.events.push_back(failed(attempt));
            return;
        }
        // Not yet in a session (being written, or waiting to retry): it has not gone out.
        let busy = matches!(
            self.current.as_ref().map(|c| &c.cmd),
            Some(Command::WriteLength(_) | Command::WriteBody(_) | Command::Session { .. })
        );
        if !busy
            && self
                .active
                .as_ref()
                .is_some_and(|a| a.out.attempt == attempt)
        {
            self.active = None;
            self.timers[Timer::Retry as usize] = None;
            self.internal.push_back(Command::ClearMo);
            self.events.push_back(failed(attempt));
        }
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
                Timer::Health => {
                    if self.link == Link::Ready && !self.internal.contains(&Command::Signal) {
                        self.internal.push_back(Command::Signal);
                    }
                    self.set_timer(
                        Timer::Health,
                        now + Duration::from_secs(self.cfg.health_interval_secs),
                    );
                }
                Timer::Mailbox => {
                    self.mailbox_due = true;
                    self.arm_mailbox(now);
                }
                Timer::Retry => {}
                Timer::Reinit => {
                    if self.link == Link::Backoff {
                        self.link = Link::Init(0);
                    }
                }
                Timer::MtHold => {
                    if self.held_mt.take().is_some() {
                        tracing::warn!("SBD MT message not released in time; sessions resume");
                        self.health.last_error =
                            Some("an MT message was not released in time".to_owned());
                    }
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

    fn arm_mailbox(&mut self, now: Timestamp) {
        if self.cfg.mailbox_interval_secs > 0 {
            self.set_timer(
                Timer::Mailbox,
                now + Duration::from_secs(self.cfg.mailbox_interval_secs),
            );
        }
    }

    fn pump(&mut self, now: Timestamp) {
        while self.current.is_none() {
            let next = match self.link {
                Link::Down | Link::Backoff => return,
                Link::Init(i) => match INIT.get(i) {
                    Some(cmd) => cmd.clone(),
                    None => {
                        self.init_done(now);
                        continue;
                    }
                },
                Link::Ready => match self.next_ready_command() {
                    Some(cmd) => cmd,
                    None => return,
                },
            };
            self.issue(now, next, None);
        }
    }

    /// Internal work first; then the send being worked on; then a new send; then a
    /// session without a message (ring, schedule, more queued at the gateway).
    fn next_ready_command(&mut self) -> Option<Command> {
        if let Some(cmd) = self.internal.pop_front() {
            return Some(cmd);
        }
        // The next session would overwrite an MT message not yet released.
        let may_session = self.held_mt.is_none() && self.timers[Timer::Retry as usize].is_none();
        loop {
            if let Some(a) = &self.active {
                return match a.stage {
                    Stage::Write => Some(Command::WriteLength(a.payload.len())),
                    Stage::Session if may_session => Some(Command::Session {
                        answer: self.ring_pending,
                    }),
                    Stage::Session => None,
                };
            }
            let Some(out) = self.queue.pop_front() else {
                break;
            };
            match self.encode(&out) {
                Ok(payload) => {
                    self.active = Some(ActiveSend {
                        out,
                        payload,
                        stage: Stage::Write,
                        sessions: 0,
                        writes: 0,
                    });
                }
                Err(reason) => self.events.push_back(DriverEvent::Failed {
                    attempt: out.attempt,
                    retryable: false,
                    reason,
                }),
            }
        }
        if may_session && (self.ring_pending || self.mailbox_due || self.more_queued) {
            return Some(Command::Session {
                answer: self.ring_pending,
            });
        }
        None
    }

    /// The bytes of one MO message: the routing prefix of its peer, then a compact text
    /// frame of the router's text, or the compact frame handed over, as it is.
    fn encode(&self, out: &Job) -> Result<Vec<u8>, String> {
        let Address::SbdImei(imei) = &out.to else {
            return Err(format!("{} is not an SBD modem IMEI", out.to));
        };
        let mut payload = if self.cfg.peers.is_empty() {
            Vec::new()
        } else {
            match self.cfg.peer(imei) {
                Some(p) => p.prefix_bytes().unwrap_or_default(),
                None => return Err(format!("no route to {imei}: not a configured peer")),
            }
        };
        let what = match &out.body {
            Body::Text(text) => {
                let frame = Compact::Text(TextFrame { text: text.clone() })
                    .encode()
                    .map_err(|e| format!("cannot encode a compact frame: {e}"))?;
                payload.extend_from_slice(&frame);
                "message"
            }
            Body::Frame(bytes) if bytes.is_empty() => {
                return Err("empty frame: nothing to send".to_owned());
            }
            Body::Frame(bytes) => {
                payload.extend_from_slice(bytes);
                "compact frame (never split)"
            }
        };
        if payload.len() > self.cfg.mo_max {
            return Err(format!(
                "{what} of {} bytes exceeds the {}-byte SBD MO limit",
                payload.len(),
                self.cfg.mo_max
            ));
        }
        Ok(payload)
    }

    fn issue(&mut self, now: Timestamp, cmd: Command, tries_left: Option<u8>) {
        let tries_left = tries_left.unwrap_or_else(|| cmd.retries());
        self.transmit.push_back(cmd.to_bytes());
        self.mode = if cmd == Command::ReadMt {
            Mode::Block
        } else {
            Mode::Lines
        };
        self.set_timer(Timer::Response, now + cmd.timeout(&self.cfg));
        self.current = Some(InFlight {
            cmd,
            tries_left,
            lines: Vec::new(),
            block: None,
        });
    }

    fn on_frame(&mut self, now: Timestamp, frame: Frame) {
        match frame {
            Frame::Echo(_) => {}
            Frame::Ready => self.on_ready(now),
            Frame::Final(result) => match self.current.take() {
                Some(inflight) => {
                    self.timers[Timer::Response as usize] = None;
                    self.mode = Mode::Lines;
                    self.complete(now, inflight, result);
                }
                None => tracing::debug!(?result, "final result with no command in flight"),
            },
            Frame::Line(line) => self.on_line(now, line),
            Frame::Block(block) => {
                self.mode = Mode::Lines;
                match &mut self.current {
                    Some(c) if c.cmd == Command::ReadMt => c.block = Some(block),
                    _ => self.events.push_back(DriverEvent::Unrecognized {
                        raw: format!("unexpected SBDRB block {}", hex(&block.payload)),
                    }),
                }
            }
        }
    }

    fn on_ready(&mut self, now: Timestamp) {
        let writing = matches!(
            self.current.as_ref().map(|c| &c.cmd),
            Some(Command::WriteLength(_))
        );
        let payload = self.active.as_ref().map(|a| a.payload.clone());
        match (writing, payload) {
            (true, Some(p)) => {
                self.current = None;
                self.issue(now, Command::WriteBody(p), None);
            }
            _ => self.events.push_back(DriverEvent::Unrecognized {
                raw: "READY".to_owned(),
            }),
        }
    }

    fn on_line(&mut self, now: Timestamp, line: String) {
        let _ = now;
        if line == "SBDRING" {
            self.ring_pending = true;
            return;
        }
        if let Some(rest) = line.strip_prefix("+CIEV:") {
            let mut f = rest.split(',').map(|v| v.trim().parse::<u8>().ok());
            match (f.next().flatten(), f.next().flatten()) {
                (Some(0), Some(bars)) if bars <= 5 => self.health.signal = Some(bars),
                (Some(1), Some(svc)) if svc <= 1 => self.service = Some(svc == 1),
                _ => {
                    self.events
                        .push_back(DriverEvent::Unrecognized { raw: line });
                    return;
                }
            }
            self.update_registered();
            if self.link == Link::Ready {
                self.note_health();
            }
            return;
        }
        match &mut self.current {
            Some(c) => c.lines.push(line),
            None => self
                .events
                .push_back(DriverEvent::Unrecognized { raw: line }),
        }
    }

    fn update_registered(&mut self) {
        self.health.registered = self
            .service
            .unwrap_or_else(|| self.health.signal.is_some_and(|s| s > 0));
    }

    fn complete(&mut self, now: Timestamp, inflight: InFlight, result: FinalResult) {
        let ok = result == FinalResult::Ok;
        if let Link::Init(step) = self.link {
            self.absorb(now, inflight, ok);
            self.link = Link::Init(step + 1);
            return;
        }
        match &inflight.cmd {
            Command::WriteLength(_) => self.write_failed("modem refused AT+SBDWB", true),
            Command::WriteBody(_) => {
                let code = inflight
                    .lines
                    .iter()
                    .find_map(|l| l.trim().parse::<u8>().ok());
                match (ok, code) {
                    (true, Some(0)) => {
                        if let Some(a) = &mut self.active {
                            a.stage = Stage::Session;
                        }
                    }
                    (_, Some(3)) => {
                        if let Some(a) = self.active.take() {
                            self.internal.push_back(Command::ClearMo);
                            self.events.push_back(DriverEvent::Failed {
                                attempt: a.out.attempt,
                                retryable: false,
                                reason: format!(
                                    "modem refused a {}-byte message (SBDWB 3: bad size)",
                                    a.payload.len()
                                ),
                            });
                        }
                    }
                    (_, Some(1)) => self.write_failed("SBDWB 1: modem timed out reading", true),
                    (_, Some(2)) => self.write_failed("SBDWB 2: checksum mismatch", true),
                    _ => self.write_failed("SBDWB without a result", true),
                }
            }
            Command::Session { answer } => {
                let answer = *answer;
                let r = inflight.lines.iter().find_map(|l| SessionResult::parse(l));
                match (ok, r) {
                    (true, Some(r)) => self.session_done(now, r, answer),
                    _ => {
                        let lines = inflight.lines.join(" | ");
                        self.session_failed(now, format!("session refused: {lines}"));
                    }
                }
            }
            _ => self.absorb(now, inflight, ok),
        }
    }

    /// Takes in what a command other than a write or a session returned.
    fn absorb(&mut self, now: Timestamp, inflight: InFlight, ok: bool) {
        match inflight.cmd {
            Command::Imei => {
                self.imei = inflight
                    .lines
                    .iter()
                    .map(|l| l.trim())
                    .find(|l| l.len() == 15 && l.bytes().all(|b| b.is_ascii_digit()))
                    .map(str::to_owned);
            }
            Command::Signal => {
                let bars = inflight
                    .lines
                    .iter()
                    .find_map(|l| l.strip_prefix("+CSQ:"))
                    .and_then(|v| v.trim().parse::<u8>().ok())
                    .filter(|b| *b <= 5);
                if ok {
                    self.health.signal = bars;
                    self.update_registered();
                }
                if self.link == Link::Ready {
                    self.note_health();
                }
            }
            Command::ReadMt => match inflight.block {
                Some(block) => self.on_mt(now, block),
                // Refused outright: nothing to read (or a modem without SBDRB); the next
                // session result says whether an MT message is really there.
                None if !ok => tracing::warn!("AT+SBDRB refused"),
                None => self.read_failed("AT+SBDRB answered without a message block"),
            },
            Command::Sync if !ok => {
                tracing::warn!("modem answered AT with ERROR");
            }
            cmd if !ok => tracing::warn!(?cmd, "SBD modem refused a command"),
            _ => {}
        }
    }

    fn write_failed(&mut self, why: &str, retryable: bool) {
        let Some(a) = &mut self.active else {
            return;
        };
        a.writes += 1;
        a.stage = Stage::Write;
        self.health.last_error = Some(why.to_owned());
        if a.writes >= MAX_WRITES
            && let Some(a) = self.active.take()
        {
            self.internal.push_back(Command::ClearMo);
            self.events.push_back(DriverEvent::Failed {
                attempt: a.out.attempt,
                retryable,
                reason: format!("{why} ({} writes); the message did not go out", a.writes),
            });
        }
    }

    fn session_done(&mut self, now: Timestamp, r: SessionResult, answer: bool) {
        let class = wire::mo_class(r.mo_status);
        // The MT side first: it is independent of whether a message went.
        if r.mt_status != 2 {
            self.mailbox_due = false;
            if answer {
                self.ring_pending = false;
            }
            self.more_queued = r.mt_queued > 0;
            self.arm_mailbox(now);
        }
        if r.mt_status == 1 {
            self.mtmsn = Some(r.mtmsn);
            self.reads = 0;
            self.internal.push_front(Command::ReadMt);
        }
        self.service = Some(!matches!(r.mo_status, 32..=34));
        self.update_registered();
        let carried = self
            .active
            .as_ref()
            .is_some_and(|a| a.stage == Stage::Session);
        let reason = format!(
            "SBDIX MO status {}: {}",
            r.mo_status,
            wire::mo_meaning(r.mo_status)
        );
        match class {
            MoClass::Success => {
                self.retry_pause = Duration::from_secs(self.cfg.retry_secs);
                if carried && let Some(a) = self.active.take() {
                    self.health.sent += 1;
                    self.internal.push_back(Command::ClearMo);
                    self.events.push_back(DriverEvent::Sent {
                        attempt: a.out.attempt,
                        reference: format!("MOMSN {}", r.momsn),
                    });
                }
            }
            MoClass::Fatal => {
                self.health.last_error = Some(reason.clone());
                if carried && let Some(a) = self.active.take() {
                    self.internal.push_back(Command::ClearMo);
                    self.events.push_back(DriverEvent::Failed {
                        attempt: a.out.attempt,
                        retryable: false,
                        reason,
                    });
                }
            }
            MoClass::Retry => self.session_failed(now, reason),
        }
        self.note_health();
    }

    /// A session that did not get a message through (or a mailbox check that failed).
    fn session_failed(&mut self, now: Timestamp, reason: String) {
        self.health.last_error = Some(reason.clone());
        let carried = self
            .active
            .as_ref()
            .is_some_and(|a| a.stage == Stage::Session);
        if carried && let Some(a) = &mut self.active {
            a.sessions += 1;
            if a.sessions >= self.cfg.session_attempts {
                if let Some(a) = self.active.take() {
                    self.internal.push_back(Command::ClearMo);
                    self.events.push_back(DriverEvent::Failed {
                        attempt: a.out.attempt,
                        retryable: true,
                        reason: format!("{reason} (after {} sessions)", a.sessions),
                    });
                }
                self.retry_pause = Duration::from_secs(self.cfg.retry_secs);
                return;
            }
        }
        // Pause before the next session, whether it carries a message or answers a ring.
        self.set_timer(Timer::Retry, now + self.retry_pause);
        self.retry_pause = (self.retry_pause * 2).min(Duration::from_secs(self.cfg.retry_max_secs));
    }

    fn read_failed(&mut self, why: &str) {
        self.reads += 1;
        if self.reads < MAX_READS {
            self.internal.push_front(Command::ReadMt);
        } else {
            self.reads = 0;
            self.events.push_back(DriverEvent::Unrecognized {
                raw: format!("SBD MT message {:?} unreadable: {why}", self.mtmsn),
            });
            self.internal.push_back(Command::ClearMt);
        }
    }

    fn on_mt(&mut self, now: Timestamp, block: MtBlock) {
        if !block.checksum_ok() {
            self.read_failed(&format!(
                "checksum {:04X} does not match {}",
                block.checksum,
                hex(&block.payload)
            ));
            return;
        }
        self.reads = 0;
        if block.payload.is_empty() {
            return;
        }
        let tag = match self.mtmsn.take() {
            Some(n) => format!("sbd-mt:{n}"),
            None => "sbd-mt:buffer".to_owned(),
        };
        let mut events = self.decode_mt(&tag, &block.payload);
        if block.payload.len() > self.cfg.mt_max {
            tracing::warn!(
                len = block.payload.len(),
                "SBD MT message longer than mt_max"
            );
        }
        // Only the last report carries the receipt: the gateway commits events in order,
        // so releasing after the last means all of them are on disk.
        let last = events.iter_mut().rev().find_map(|e| match e {
            DriverEvent::Inbound { receipt, .. } | DriverEvent::Frame { receipt, .. } => {
                Some(receipt)
            }
            _ => None,
        });
        match last {
            Some(receipt) => {
                let r = InboundReceipt(tag);
                *receipt = Some(r.clone());
                self.held_mt = Some(r);
                self.set_timer(
                    Timer::MtHold,
                    now + Duration::from_secs(self.cfg.mt_hold_secs),
                );
            }
            None => self.internal.push_back(Command::ClearMt),
        }
        self.events.extend(events);
    }

    /// What one MT message means for the router.
    fn decode_mt(&mut self, tag: &str, payload: &[u8]) -> Vec<DriverEvent> {
        let raw = hex(payload);
        let single_peer = match self.cfg.peers.as_slice() {
            [p] => Some(p.imei.clone()),
            _ => None,
        };
        match Compact::decode(payload) {
            Ok(Compact::Text(t)) => match single_peer {
                Some(from) => {
                    self.health.received += 1;
                    vec![DriverEvent::Inbound {
                        from: Address::SbdImei(from),
                        text: t.text,
                        evidence: format!("{tag} text frame {raw}"),
                        sent_at: None,
                        receipt: None,
                        in_reply_to: None,
                    }]
                }
                None => vec![DriverEvent::Unrecognized {
                    raw: format!("{tag}: text from an unknown kit ({}): {raw}", t.text),
                }],
            },
            // Every other frame is for the daemon to judge, undecoded: an ack batch from a
            // kit, or an alert, cancel or update from the district.
            Ok(frame) => {
                let (origin, kind) = match &frame {
                    Compact::Acks(batch) => (batch.origin.map(|i| i.to_string()), "ack batch"),
                    Compact::Alert(_) => (None, "alert"),
                    Compact::Cancel(_) => (None, "cancel"),
                    Compact::Update(_) => (None, "update"),
                    Compact::Text(_) => (None, "text"),
                };
                match origin.or(single_peer) {
                    Some(from) => {
                        self.health.received += 1;
                        vec![DriverEvent::Frame {
                            from: Address::SbdImei(from),
                            bytes: payload.to_vec(),
                            evidence: format!("{tag} {kind} frame {raw}"),
                            receipt: None,
                        }]
                    }
                    None => vec![DriverEvent::Unrecognized {
                        raw: format!(
                            "{tag}: {kind} frame without origin and no single peer configured: {raw}"
                        ),
                    }],
                }
            }
            Err(e) => vec![DriverEvent::Unrecognized {
                raw: format!("{tag}: undecodable ({e}): {raw}"),
            }],
        }
    }

    fn on_response_timeout(&mut self, now: Timestamp) {
        let Some(inflight) = self.current.take() else {
            return;
        };
        self.mode = Mode::Lines;
        if inflight.tries_left > 0 {
            let tries = inflight.tries_left - 1;
            self.issue(now, inflight.cmd, Some(tries));
            return;
        }
        let what = format!("no answer to {}", short(&inflight.cmd));
        match self.link {
            Link::Init(_) => return self.init_failed(now, what),
            _ if inflight.cmd == Command::Sync => return self.init_failed(now, what),
            _ => {}
        }
        self.health.last_error = Some(what.clone());
        match inflight.cmd {
            Command::WriteLength(_) | Command::WriteBody(_) => self.write_failed(&what, true),
            Command::Session { .. } => {
                let carried = self
                    .active
                    .as_ref()
                    .is_some_and(|a| a.stage == Stage::Session);
                if carried && let Some(a) = self.active.take() {
                    self.events.push_back(DriverEvent::Failed {
                        attempt: a.out.attempt,
                        retryable: true,
                        reason: format!(
                            "no session result within {} s; the message may have gone out",
                            self.cfg.session_timeout_secs
                        ),
                    });
                    self.internal.push_back(Command::ClearMo);
                }
                self.set_timer(Timer::Retry, now + self.retry_pause);
            }
            Command::ReadMt => self.read_failed(&what),
            _ => {}
        }
        // The modem may be mid-response or waiting for binary bytes: resynchronise first.
        self.internal.push_front(Command::Sync);
    }

    fn init_failed(&mut self, now: Timestamp, why: String) {
        tracing::warn!(%why, "SBD modem initialisation failed");
        self.current = None;
        self.link = Link::Backoff;
        let wait = self.backoff.failed();
        self.set_timer(Timer::Reinit, now + wait);
        self.health.up = false;
        self.health.last_error = Some(why);
        self.note_health();
    }

    fn init_done(&mut self, now: Timestamp) {
        self.link = Link::Ready;
        self.backoff.reset();
        self.health.up = true;
        self.update_registered();
        self.set_timer(
            Timer::Health,
            now + Duration::from_secs(self.cfg.health_interval_secs),
        );
        self.arm_mailbox(now);
        self.note_health();
    }

    fn note_health(&mut self) {
        if self.last_health.as_ref() != Some(&self.health) {
            self.last_health = Some(self.health.clone());
            self.events
                .push_back(DriverEvent::Health(self.health.clone()));
        }
    }
}

/// A command's name without its payload, for messages.
fn short(cmd: &Command) -> String {
    match cmd {
        Command::WriteBody(b) => format!("SBDWB body ({} bytes)", b.len()),
        other => String::from_utf8_lossy(&other.to_bytes()).trim().to_owned(),
    }
}

/// Bytes as upper-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Faults, KitReply, SimConfig, SimSbd};
    use tocsin_channel::{FrameOut, Outbound};
    use tocsin_compact::{AckBatch, AckEntry, Imei, ShortAlertId};
    use tocsin_core::AckCode;

    const T0: Timestamp = Timestamp(1_750_000_000_000);
    const KIT: &str = "300234010753370";
    const WARNING: &str = "【红色预警】沙峪村山洪，沿河住户立即向高处转移。回复1 K7XT";

    fn send(attempt: u64, text: &str) -> DriverCommand {
        DriverCommand::Send(Outbound {
            attempt: AttemptId(attempt),
            to: Address::SbdImei(KIT.to_owned()),
            text: text.to_owned(),
            want_report: true,
        })
    }

    fn quiet_kit() -> SimConfig {
        SimConfig {
            reply: KitReply::Never,
            ..SimConfig::default()
        }
    }

    /// The driver and the simulator wired together on a virtual clock.
    struct Bench {
        sbd: Sbd,
        sim: SimSbd,
        now: Timestamp,
        events: Vec<DriverEvent>,
        byte_by_byte: bool,
    }

    impl Bench {
        fn new(sim_cfg: SimConfig) -> Self {
            Self::with(SbdConfig::new("/dev/sim"), sim_cfg)
        }

        fn with(cfg: SbdConfig, sim_cfg: SimConfig) -> Self {
            let mut b = Bench {
                sbd: Sbd::new(cfg, T0),
                sim: SimSbd::new(sim_cfg, 7, T0),
                now: T0,
                events: Vec::new(),
                byte_by_byte: false,
            };
            b.sbd.handle_port_opened(T0);
            b.run_until(
                |e| {
                    e.iter()
                        .any(|e| matches!(e, DriverEvent::Health(h) if h.up))
                },
                60,
            );
            assert!(b.sbd.is_ready());
            b
        }

        fn pump(&mut self) {
            loop {
                let mut moved = false;
                while let Some(bytes) = self.sbd.poll_transmit() {
                    self.sim.handle_rx(self.now, &bytes);
                    moved = true;
                }
                while let Some(bytes) = self.sim.poll_transmit() {
                    if self.byte_by_byte {
                        for b in bytes {
                            self.sbd.handle_rx(self.now, &[b]);
                        }
                    } else {
                        self.sbd.handle_rx(self.now, &bytes);
                    }
                    moved = true;
                }
                while let Some(e) = self.sbd.poll_event() {
                    self.events.push(e);
                    moved = true;
                }
                if !moved {
                    return;
                }
            }
        }

        fn submit(&mut self, cmd: DriverCommand) {
            self.sbd.submit(self.now, cmd);
            self.pump();
        }

        fn step(&mut self, limit: Timestamp) -> bool {
            let next = [self.sbd.poll_timeout(), self.sim.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next.filter(|t| *t <= limit) else {
                return false;
            };
            self.now = self.now.max(next);
            self.sbd.handle_timeout(self.now);
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
        }

        fn take(&mut self) -> Vec<DriverEvent> {
            self.pump();
            std::mem::take(&mut self.events)
        }
    }

    /// A message from a kit: a text (`Inbound`) or a compact frame (`Frame`).
    fn inbound(e: &[DriverEvent]) -> bool {
        e.iter()
            .any(|e| matches!(e, DriverEvent::Inbound { .. } | DriverEvent::Frame { .. }))
    }

    fn outcome(e: &[DriverEvent]) -> bool {
        e.iter()
            .any(|e| matches!(e, DriverEvent::Sent { .. } | DriverEvent::Failed { .. }))
    }

    #[test]
    fn init_runs_the_documented_sequence_and_reports_health() {
        let mut b = Bench::new(quiet_kit());
        assert_eq!(
            b.sim.commands(),
            [
                "AT",
                "ATE0",
                "AT&K0",
                "AT&D0",
                "AT+SBDMTA=1",
                "AT+CIER=1,1,1",
                "AT+CGSN",
                "AT+SBDD0",
                "AT+CSQ",
                "AT+SBDRB"
            ]
        );
        assert_eq!(b.sbd.imei(), Some("300434063839690"));
        let health: Vec<Health> = b
            .take()
            .into_iter()
            .filter_map(|e| match e {
                DriverEvent::Health(h) => Some(h),
                _ => None,
            })
            .collect();
        assert_eq!(health.len(), 1);
        assert!(health[0].up && health[0].registered);
        assert_eq!(health[0].signal, Some(4));
    }

    #[test]
    fn a_warning_goes_out_and_the_kits_ack_comes_back_through_a_ring() {
        let mut b = Bench::new(SimConfig {
            reply: KitReply::Ack {
                min_secs: 30.0,
                max_secs: 30.0,
            },
            ..SimConfig::default()
        });
        b.take();
        b.submit(send(1, WARNING));
        b.run_until(outcome, 60);
        let ev = b.take();
        assert_eq!(
            ev[0],
            DriverEvent::Accepted {
                attempt: AttemptId(1)
            }
        );
        assert_eq!(
            ev[1],
            DriverEvent::Sent {
                attempt: AttemptId(1),
                reference: "MOMSN 1".into()
            }
        );
        // What went over the air is a compact text frame of exactly the router's text.
        let mo = &b.sim.mo_log()[0].payload;
        assert_eq!(
            Compact::decode(mo).unwrap(),
            Compact::Text(TextFrame {
                text: WARNING.into()
            })
        );
        assert!(mo.len() < 100, "{} bytes", mo.len());

        // 30 s later the kit answers; the modem rings; the driver answers with SBDIXA.
        b.run_until(inbound, 120);
        assert!(b.sim.commands().iter().any(|c| c == "AT+SBDIXA"));
        let ev = b.take();
        // The kit's ack batch is a frame for the daemon, with the MT's exact bytes.
        let Some(DriverEvent::Frame {
            from,
            bytes,
            evidence,
            receipt,
        }) = ev
            .into_iter()
            .find(|e| matches!(e, DriverEvent::Frame { .. }))
        else {
            unreachable!()
        };
        assert_eq!(from, Address::SbdImei(KIT.into()));
        assert_eq!(bytes, b.sim.mt_buffer());
        let Ok(Compact::Acks(batch)) = Compact::decode(&bytes) else {
            panic!("{bytes:02X?}")
        };
        assert_eq!(batch.acks[0].person, "crew-1");
        assert_eq!(batch.acks[0].code.to_string(), "K7XT");
        assert_eq!(
            evidence,
            format!("sbd-mt:1 ack batch frame {}", hex(&bytes))
        );
        let receipt = receipt.expect("the MT is held until released");
        assert!(b.sbd.mt_held());

        // Nothing overwrites the MT buffer before the release; then it is cleared.
        let before = b.sim.commands().len();
        b.submit(DriverCommand::Release(receipt));
        assert!(!b.sbd.mt_held());
        assert_eq!(b.sim.commands()[before..], ["AT+SBDD1"]);
        assert!(b.sim.mt_buffer().is_empty());
    }

    fn ack_batch(origin: Option<&str>) -> Vec<u8> {
        let code = |s| AckCode::parse(s).unwrap();
        Compact::Acks(AckBatch {
            origin: origin.and_then(Imei::parse),
            base_secs: 60_000_000,
            acks: ["K7XT", "AAAA", "CCCC"]
                .iter()
                .enumerate()
                .map(|(i, c)| AckEntry {
                    alert: ShortAlertId::new(0xA1B2).unwrap(),
                    person: format!("p{i}"),
                    code: code(c),
                    offset_secs: i as u32 * 60,
                })
                .collect(),
        })
        .encode()
        .unwrap()
    }

    fn frames(ev: &[DriverEvent]) -> Vec<(Address, Vec<u8>, bool)> {
        ev.iter()
            .filter_map(|e| match e {
                DriverEvent::Frame {
                    from,
                    bytes,
                    receipt,
                    ..
                } => Some((from.clone(), bytes.clone(), receipt.is_some())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_ack_batch_becomes_one_frame_event_from_its_origin_with_the_receipt() {
        let mut b = Bench::new(quiet_kit());
        b.take();
        let batch = ack_batch(Some("300234010000001"));
        b.sim.queue_mt(batch.clone());
        b.run_until(inbound, 60);
        let ev = b.take();
        assert_eq!(
            frames(&ev),
            [(Address::SbdImei("300234010000001".into()), batch, true)]
        );
        assert!(
            !ev.iter().any(|e| matches!(e, DriverEvent::Inbound { .. })),
            "no Inbound per ack any more: the daemon reads the batch"
        );
        assert!(b.sbd.mt_held());
    }

    #[test]
    fn an_ack_batch_without_origin_is_from_the_single_peer_or_unrecognized() {
        // No origin and no peers: nobody to attribute it to.
        let mut b = Bench::new(quiet_kit());
        b.take();
        b.sim.queue_mt(ack_batch(None));
        b.run_until(
            |e| {
                e.iter()
                    .any(|e| matches!(e, DriverEvent::Unrecognized { raw } if raw.contains("ack batch frame without origin")))
            },
            60,
        );
        assert!(frames(&b.take()).is_empty());
        assert!(!b.sbd.mt_held(), "nothing to release: the MT is cleared");

        // One peer: it is from the peer.
        let mut cfg = SbdConfig::new("/dev/sim");
        cfg.peers.push(crate::config::Peer {
            imei: KIT.into(),
            prefix: String::new(),
        });
        let mut b = Bench::with(cfg, quiet_kit());
        b.take();
        let batch = ack_batch(None);
        b.sim.queue_mt(batch.clone());
        b.run_until(inbound, 60);
        assert_eq!(
            frames(&b.take()),
            [(Address::SbdImei(KIT.into()), batch, true)]
        );
    }

    #[test]
    fn alerts_cancels_and_updates_from_the_district_are_frames_and_text_stays_inbound() {
        let mut cfg = SbdConfig::new("/dev/sim");
        cfg.peers.push(crate::config::Peer {
            imei: KIT.into(),
            prefix: String::new(),
        });
        let mut b = Bench::with(cfg, quiet_kit());
        b.take();
        let cancel = vec![0x13, 0x00, 0x00, 0x05, 0x20, 0xBD, 0xE2, 0xB3, 0xFD];
        let alert = vec![
            0x11, 0x00, 0xA1, 0xB2, 0xC7, 0x02, 0x0F, 0x42, 0x40, 0x04, 0x56, 0x30, 0x32, 0x33,
            0x00, 0xB9, 0xBD, 0xC9, 0xBD, 0xBA, 0xE9,
        ];
        let mut update = vec![0x14, 0x00, 0x00, 0x07];
        update.extend_from_slice(&alert[1..]);
        for f in [&alert, &cancel, &update] {
            b.sim.queue_mt(f.clone());
            b.run_until(inbound, 120);
            let ev = b.take();
            assert_eq!(
                frames(&ev),
                [(Address::SbdImei(KIT.into()), f.clone(), true)],
                "{ev:?}"
            );
            let Some((_, _, _)) = frames(&ev).first().cloned() else {
                unreachable!()
            };
            let receipt = ev.iter().find_map(|e| match e {
                DriverEvent::Frame { receipt, .. } => receipt.clone(),
                _ => None,
            });
            b.submit(DriverCommand::Release(receipt.unwrap()));
        }
        // A text frame stays a text from the peer.
        b.sim.queue_mt(b"\x15\x00hi".to_vec());
        b.run_until(inbound, 120);
        assert!(matches!(
            &b.take().iter().filter(|e| matches!(e, DriverEvent::Inbound { .. } | DriverEvent::Frame { .. })).collect::<Vec<_>>()[..],
            [DriverEvent::Inbound { from: Address::SbdImei(k), text, .. }] if k == KIT && text == "hi"
        ));
        // Garbage stays unrecognized.
        b.sim.queue_mt(vec![0x42, 0x00, 0x01]);
        b.run_until(
            |e| {
                e.iter()
                    .any(|e| matches!(e, DriverEvent::Unrecognized { raw } if raw.contains("undecodable")))
            },
            120,
        );
        assert!(!inbound(&b.take()));
    }

    #[test]
    fn no_network_retries_with_backoff_then_fails_retryable() {
        let mut b = Bench::new(quiet_kit());
        b.take();
        b.sim.set_faults(Faults {
            no_network: true,
            ..Faults::default()
        });
        b.pump();
        b.submit(send(1, "山洪"));
        b.run_until(outcome, 1200);
        let ev = b.take();
        let failed = ev.iter().find_map(|e| match e {
            DriverEvent::Failed {
                retryable, reason, ..
            } => Some((*retryable, reason.clone())),
            _ => None,
        });
        let (retryable, reason) = failed.unwrap();
        assert!(retryable);
        assert!(
            reason.contains("32: no network service") && reason.contains("5 sessions"),
            "{reason}"
        );
        let sessions = b
            .sim
            .commands()
            .iter()
            .filter(|c| c.starts_with("AT+SBDIX"))
            .count();
        assert_eq!(sessions, 5);
        assert!(
            ev.iter()
                .any(|e| matches!(e, DriverEvent::Health(h) if !h.registered))
        );
        // The MO buffer is cleared so a later mailbox check does not send it after all.
        assert_eq!(
            b.sim.commands().last().map(String::as_str),
            Some("AT+SBDD0")
        );

        // The sky clears: the next warning goes.
        b.sim.set_faults(Faults::default());
        b.pump();
        b.submit(send(2, "山洪"));
        b.run_until(outcome, 600);
        assert!(b.take().iter().any(|e| matches!(
            e,
            DriverEvent::Sent {
                attempt: AttemptId(2),
                ..
            }
        )));
    }

    #[test]
    fn a_fatal_mo_status_fails_for_good_and_rf_drops_are_retried() {
        let mut b = Bench::new(SimConfig {
            faults: Faults {
                session_failure_rate: 1.0,
                failure_statuses: vec![16],
                ..Faults::default()
            },
            ..quiet_kit()
        });
        b.take();
        b.submit(send(1, "山洪"));
        b.run_until(outcome, 120);
        assert!(b.take().iter().any(|e| matches!(
            e,
            DriverEvent::Failed { retryable: false, reason, .. } if reason.contains("16: modem locked")
        )));

        // An RF drop half the time: the message still goes, after a retry or a few.
        b.sim.set_faults(Faults {
            session_failure_rate: 0.5,
            failure_statuses: vec![18],
            ..Faults::default()
        });
        for i in 2..8 {
            b.submit(send(i, "山洪"));
            b.run_until(outcome, 1200);
            let ev = b.take();
            assert!(
                ev.iter().any(|e| matches!(
                    e,
                    DriverEvent::Sent { .. }
                        | DriverEvent::Failed {
                            retryable: true,
                            ..
                        }
                )),
                "{ev:?}"
            );
        }
        assert!(b.sim.mo_log().len() >= 4, "{}", b.sim.mo_log().len());
    }

    #[test]
    fn what_cannot_be_sent_is_refused_for_good() {
        let mut b = Bench::new(quiet_kit());
        b.take();
        let long: String = "山".repeat(200);
        b.submit(send(1, &long));
        b.submit(DriverCommand::Send(Outbound {
            attempt: AttemptId(2),
            to: Address::BeidouCard("1234567".into()),
            text: "x".into(),
            want_report: false,
        }));
        let ev = b.take();
        let reasons: Vec<&str> = ev
            .iter()
            .filter_map(|e| match e {
                DriverEvent::Failed {
                    retryable: false,
                    reason,
                    ..
                } => Some(reason.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(reasons.len(), 2, "{ev:?}");
        assert!(
            reasons[0].contains("402 bytes exceeds the 340-byte"),
            "{}",
            reasons[0]
        );
        assert!(reasons[1].contains("not an SBD modem IMEI"));
        assert!(!b.sim.commands().iter().any(|c| c.starts_with("AT+SBDWB")));
    }

    #[test]
    fn peers_route_with_their_prefix_and_unknown_imeis_are_refused() {
        let mut cfg = SbdConfig::new("/dev/sim");
        cfg.peers.push(crate::config::Peer {
            imei: KIT.into(),
            prefix: "5242".into(),
        });
        let mut b = Bench::with(cfg, quiet_kit());
        b.take();
        b.submit(DriverCommand::Send(Outbound {
            attempt: AttemptId(1),
            to: Address::SbdImei("300234010000000".into()),
            text: "x".into(),
            want_report: false,
        }));
        b.submit(send(2, "hi"));
        b.run_until(
            |e| e.iter().any(|e| matches!(e, DriverEvent::Sent { .. })),
            60,
        );
        assert!(b.take().iter().any(|e| matches!(
            e,
            DriverEvent::Failed { attempt: AttemptId(1), retryable: false, reason } if reason.contains("no route")
        )));
        assert_eq!(b.sim.mo_log()[0].payload, b"RB\x15\x00hi");
    }

    fn frame(attempt: u64, imei: &str, bytes: &[u8]) -> DriverCommand {
        DriverCommand::SendFrame(FrameOut {
            attempt: AttemptId(attempt),
            to: Address::SbdImei(imei.to_owned()),
            bytes: bytes.to_vec(),
        })
    }

    #[test]
    fn a_frame_goes_out_as_it_is_after_the_peers_prefix() {
        let mut cfg = SbdConfig::new("/dev/sim");
        cfg.peers.push(crate::config::Peer {
            imei: KIT.into(),
            prefix: "5242".into(),
        });
        let mut b = Bench::with(cfg, quiet_kit());
        b.take();
        let cancel = [0x13, 0x00, 0x00, 0x05, 0x20, 0xBD, 0xE2, 0xB3, 0xFD];
        let before = b.sim.commands().len();
        b.submit(frame(1, KIT, &cancel));
        b.run_until(outcome, 60);
        let ev = b.take();
        assert_eq!(
            ev[..2],
            [
                DriverEvent::Accepted {
                    attempt: AttemptId(1)
                },
                DriverEvent::Sent {
                    attempt: AttemptId(1),
                    reference: "MOMSN 1".into()
                }
            ]
        );
        // Exactly the prefix and the frame: not wrapped in a text frame.
        assert_eq!(
            b.sim.mo_log()[0].payload,
            b"RB\x13\x00\x00\x05\x20\xBD\xE2\xB3\xFD"
        );
        assert_eq!(
            b.sim.commands()[before..before + 2],
            ["AT+SBDWB=11", "AT+SBDIX"]
        );
        assert_eq!(b.sbd.health.sent, 1);
    }

    #[test]
    fn a_frame_over_the_mo_limit_fails_for_good_and_is_never_split() {
        let mut cfg = SbdConfig::new("/dev/sim");
        cfg.peers.push(crate::config::Peer {
            imei: KIT.into(),
            prefix: "5242".into(),
        });
        let mut b = Bench::with(cfg, quiet_kit());
        b.take();
        // 339 bytes and the 2-byte prefix: one over 340.
        let mut big = vec![0x15, 0x00];
        big.resize(339, b'a');
        b.submit(frame(1, KIT, &big));
        b.submit(frame(2, KIT, &[]));
        b.submit(frame(3, "300234010000000", &big[..10]));
        b.submit(DriverCommand::SendFrame(FrameOut {
            attempt: AttemptId(4),
            to: Address::BeidouCard("0242286".into()),
            bytes: big[..10].to_vec(),
        }));
        let ev = b.take();
        let failed: Vec<(AttemptId, &str)> = ev
            .iter()
            .filter_map(|e| match e {
                DriverEvent::Failed {
                    attempt,
                    retryable: false,
                    reason,
                } => Some((*attempt, reason.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 4, "{ev:?}");
        assert_eq!(failed[0].0, AttemptId(1));
        assert!(
            failed[0]
                .1
                .contains("compact frame (never split) of 341 bytes exceeds the 340-byte"),
            "{}",
            failed[0].1
        );
        assert!(failed[1].1.contains("empty frame"));
        assert!(failed[2].1.contains("no route"));
        assert!(failed[3].1.contains("not an SBD modem IMEI"));
        assert!(!b.sim.commands().iter().any(|c| c.starts_with("AT+SBDWB")));
        // One byte less goes.
        big.truncate(338);
        b.submit(frame(5, KIT, &big));
        b.run_until(outcome, 60);
        assert!(b.take().iter().any(|e| matches!(
            e,
            DriverEvent::Sent {
                attempt: AttemptId(5),
                ..
            }
        )));
        assert_eq!(b.sim.mo_log()[0].payload.len(), 340);
    }

    #[test]
    fn a_frame_that_finds_no_network_is_retried_like_text_then_fails_retryable() {
        let mut b = Bench::new(quiet_kit());
        b.take();
        b.sim.set_faults(Faults {
            no_network: true,
            ..Faults::default()
        });
        b.submit(frame(1, KIT, b"\x15\x00hi"));
        b.run_until(outcome, 1200);
        assert!(b.take().iter().any(|e| matches!(
            e,
            DriverEvent::Failed { attempt: AttemptId(1), retryable: true, reason } if reason.contains("5 sessions")
        )));
    }

    #[test]
    fn a_corrupted_mt_is_read_again_and_garbage_is_skipped_byte_by_byte() {
        let mut b = Bench::new(SimConfig {
            faults: Faults {
                corrupt_mt_rate: 0.5,
                garbage_rate: 0.3,
                ..Faults::default()
            },
            reply: KitReply::Ack {
                min_secs: 20.0,
                max_secs: 20.0,
            },
            ..SimConfig::default()
        });
        b.byte_by_byte = true;
        b.take();
        b.submit(send(1, WARNING));
        b.run_until(inbound, 300);
        let ev = b.take();
        // The batch arrives intact: its checksum was checked and it decodes.
        assert!(ev.iter().any(|e| matches!(
            e,
            DriverEvent::Frame { bytes, .. }
                if matches!(Compact::decode(bytes), Ok(Compact::Acks(a)) if a.acks[0].code.to_string() == "K7XT")
        )));
        assert!(
            ev.iter()
                .any(|e| matches!(e, DriverEvent::Unrecognized { .. }))
        );
    }

    #[test]
    fn mailbox_checks_find_replies_when_rings_are_missed() {
        let mut cfg = SbdConfig::new("/dev/sim");
        cfg.mailbox_interval_secs = 120;
        let mut b = Bench::with(
            cfg,
            SimConfig {
                rings: false,
                reply: KitReply::Ack {
                    min_secs: 10.0,
                    max_secs: 10.0,
                },
                ..SimConfig::default()
            },
        );
        b.take();
        b.submit(send(1, WARNING));
        b.run_until(outcome, 60);
        let sent_at = b.now;
        b.run_until(inbound, 300);
        // Found by the scheduled check, not earlier than the interval allows.
        // (the interval counts from the end of the send's session; a session takes ≤ 20 s)
        assert!(
            b.now.since(sent_at) <= Duration::from_secs(145),
            "{:?}",
            b.now.since(sent_at)
        );
        assert!(!b.sim.commands().iter().any(|c| c == "AT+SBDIXA"));
        // Idle: one mailbox check per interval, nothing else.
        let ev = b.take();
        let Some(DriverEvent::Frame {
            receipt: Some(r), ..
        }) = ev
            .into_iter()
            .find(|e| matches!(e, DriverEvent::Frame { .. }))
        else {
            panic!()
        };
        b.submit(DriverCommand::Release(r));
        let before = b.sim.commands().iter().filter(|c| *c == "AT+SBDIX").count();
        b.advance(600);
        let after = b.sim.commands().iter().filter(|c| *c == "AT+SBDIX").count();
        // The interval counts from the end of each check, so 600 s hold 4 or 5 of them.
        assert!((4..=5).contains(&(after - before)), "{}", after - before);
    }

    #[test]
    fn an_unreleased_mt_holds_sessions_back_only_for_a_while() {
        let mut b = Bench::new(quiet_kit());
        b.take();
        b.sim.queue_mt(
            Compact::Text(TextFrame {
                text: "收到".into(),
            })
            .encode()
            .unwrap(),
        );
        b.run_until(
            |e| {
                e.iter().any(|e| {
                    matches!(
                        e,
                        DriverEvent::Unrecognized { .. } | DriverEvent::Inbound { .. }
                    )
                })
            },
            60,
        );
        // No single peer is configured: a text frame has no sender.
        assert!(!b.sbd.mt_held());

        let mut cfg = SbdConfig::new("/dev/sim");
        cfg.peers.push(crate::config::Peer {
            imei: KIT.into(),
            prefix: String::new(),
        });
        let mut b = Bench::with(cfg, quiet_kit());
        b.take();
        b.sim.queue_mt(
            Compact::Text(TextFrame {
                text: "收到".into(),
            })
            .encode()
            .unwrap(),
        );
        b.run_until(inbound, 60);
        assert!(b.sbd.mt_held());
        b.submit(send(1, "第二条"));
        b.advance(20);
        assert!(
            !b.take()
                .iter()
                .any(|e| matches!(e, DriverEvent::Sent { .. })),
            "held back"
        );
        b.run_until(outcome, 60);
        assert!(
            b.take()
                .iter()
                .any(|e| matches!(e, DriverEvent::Sent { .. }))
        );
        assert!(!b.sbd.mt_held());
    }

    #[test]
    fn a_dead_modem_holds_the_message_and_a_silent_session_fails_it_retryable() {
        let mut b = Bench::new(quiet_kit());
        b.take();
        b.sim.set_faults(Faults {
            silence_rate: 1.0,
            ..Faults::default()
        });
        b.submit(send(1, "山洪"));
        // A dead modem: the message waits (nothing went out), the modem is reported down.
        b.advance(60);
        let ev = b.take();
        assert!(!outcome(&ev), "{ev:?}");
        assert!(
            ev.iter()
                .any(|e| matches!(e, DriverEvent::Health(h) if !h.up))
        );
        // It comes back: the message goes.
        b.sim.set_faults(Faults::default());
        b.run_until(outcome, 120);
        assert!(b.take().iter().any(|e| matches!(
            e,
            DriverEvent::Sent {
                attempt: AttemptId(1),
                ..
            }
        )));

        // Now only the session goes silent.
        let mut b = Bench::new(SimConfig {
            session_min_ms: 200_000,
            session_max_ms: 200_000,
            ..quiet_kit()
        });
        b.take();
        b.submit(send(2, "山洪"));
        b.run_until(outcome, 120);
        let ev = b.take();
        assert!(ev.iter().any(|e| matches!(e, DriverEvent::Failed { retryable: true, reason, .. } if reason.contains("may have gone out"))), "{ev:?}");
    }

    #[test]
    fn cancel_stops_a_message_waiting_to_retry() {
        let mut b = Bench::new(SimConfig {
            faults: Faults {
                no_network: true,
                ..Faults::default()
            },
            ..quiet_kit()
        });
        b.take();
        b.submit(send(1, "山洪"));
        b.submit(send(2, "山洪"));
        b.run_until(
            |e| {
                e.iter()
                    .any(|e| matches!(e, DriverEvent::Health(h) if !h.registered))
            },
            60,
        );
        b.submit(DriverCommand::Cancel(AttemptId(2)));
        b.submit(DriverCommand::Cancel(AttemptId(1)));
        let ev = b.take();
        let cancelled: Vec<AttemptId> = ev
            .iter()
            .filter_map(|e| match e {
                DriverEvent::Failed {
                    attempt, reason, ..
                } if reason == "cancelled" => Some(*attempt),
                _ => None,
            })
            .collect();
        assert_eq!(cancelled, [AttemptId(2), AttemptId(1)]);
        let sessions = b
            .sim
            .commands()
            .iter()
            .filter(|c| c.starts_with("AT+SBDIX"))
            .count();
        b.advance(600);
        // Only mailbox checks from here on, no more message sessions.
        assert!(b.sim.mo_log().is_empty());
        assert!(
            b.sim
                .commands()
                .iter()
                .filter(|c| c.starts_with("AT+SBDIX"))
                .count()
                >= sessions
        );
    }

    #[test]
    fn port_lost_mid_session_fails_it_and_the_queued_message_goes_after_reopen() {
        let mut b = Bench::new(quiet_kit());
        b.take();
        b.submit(send(1, "一"));
        b.submit(send(2, "二"));
        // Step until the first session is in flight.
        while !b.sim.commands().iter().any(|c| c == "AT+SBDIX") {
            assert!(b.step(b.now + Duration::from_secs(60)));
        }
        b.sbd.handle_port_lost(b.now);
        b.sim.handle_power_cycle(b.now);
        let ev = b.take();
        assert!(ev.iter().any(|e| matches!(e, DriverEvent::Failed { attempt: AttemptId(1), retryable: true, reason } if reason.contains("may have gone out"))));
        b.sbd.handle_port_opened(b.now);
        b.run_until(
            |e| {
                e.iter().any(|e| {
                    matches!(
                        e,
                        DriverEvent::Sent {
                            attempt: AttemptId(2),
                            ..
                        }
                    )
                })
            },
            120,
        );
    }

    #[test]
    fn an_unreleased_mt_is_reported_again_after_the_driver_restarts() {
        let mut b = Bench::new(SimConfig {
            reply: KitReply::Ack {
                min_secs: 10.0,
                max_secs: 10.0,
            },
            ..SimConfig::default()
        });
        b.take();
        b.submit(send(1, WARNING));
        b.run_until(inbound, 120);
        b.take();
        // The gateway dies before committing: the driver restarts, the modem keeps power.
        b.sbd = Sbd::new(SbdConfig::new("/dev/sim"), b.now);
        b.sbd.handle_port_opened(b.now);
        b.run_until(inbound, 60);
        let again = b.take().into_iter().find_map(|e| match e {
            DriverEvent::Frame { bytes, receipt, .. } => Some((bytes, receipt)),
            _ => None,
        });
        assert_eq!(
            again,
            Some((
                b.sim.mt_buffer().to_vec(),
                Some(InboundReceipt("sbd-mt:buffer".into()))
            ))
        );
    }
}
