//! The device side: a GSM modem and the network behind it, as a sans-IO state machine.
//!
//! It answers the driver's AT commands (echo on until `ATE0`, like a real modem), takes
//! `AT+CMGS` submits in PDU mode, numbers them with TP-MRs, keeps a log of what it was
//! asked to send, and plays the network: a status report some time after each submit, and
//! per destination number a scripted reply (the right ack code, a wrong one, a reply from
//! another number, or silence) after a delay drawn from a seeded ChaCha RNG. Inbound
//! messages are stored with indexes and announced with `+CMTI`; they stay until `AT+CMGD`
//! (an empty index is `+CMS ERROR: 321`). `AT+CMGL=<stat>` lists them (0 unread, 1 read,
//! 4 all; listed unread ones become read, as `AT+CMGR` makes them).
//!
//! Several extended commands on one line (`AT+CMGD=3;+CMGD=4;+CMGD=7`, V.250 §5.2.1 and
//! §5.4) run in order: their information responses in order, then one final `OK`, or the
//! first failure's result code with the commands before it done and the rest not run. The
//! `refuse_concatenation` fault makes it answer such a line `ERROR` and run nothing.
//!
//! Faults, all seeded: `+CMS ERROR` on submits, commands never answered, garbage bytes
//! before a response, a hang-up after N submits (the runner closes the port), a slow
//! modem, inbound parts delivered out of order, and the cell network lost for a while.
//!
//! Network loss (scripted windows in [`Faults::network_loss`], seconds after the simulator
//! starts, or [`SimModem::lose_network`] now): what a SIM7600 or EC20 does when its cell
//! goes. Registration reads `stat` 2 (searching) on `AT+CREG?`, `AT+CGREG?` and
//! `AT+CEREG?`; the change is pushed as `+CREG: 2` / `+CEREG: 2` (and `+CREG: 1,"<lac>",
//! "<ci>",7` when it is back) where `AT+CREG=<n>` / `AT+CEREG=<n>` enabled it; a submit body
//! is answered `+CMS ERROR: 331`, a dial `+CME ERROR: 30`; a call up is dropped (`NO
//! CARRIER`); status reports and replies wait in the network until it is back.
//!
//! Voice: `ATD<n>;` rings the number, whose [`CallBehaviour`] says what the person does
//! (answer after N s, never, busy, answer and press a key after M s, hang up early). The
//! call's progress is announced the way the configured [`Family`] does it (Quectel
//! `ccinfo`, SIMCom `+CLCC` and `VOICE CALL:`, or nothing for a generic modem, which is
//! polled with `AT+CLCC`), keys as `+QTONEDET` / `+RXDTMF` / `+DTMF` unless the handset
//! reports none. The PCM written to the audio port ([`SimModem::handle_audio`]) is
//! measured against a playout clock: an underrun is counted whenever a frame arrives after
//! the listener's buffer ran dry, and the RMS level says whether it was silence. A submit
//! while a call is up is refused with `+CMS ERROR: 500`, as a modem in a call does.
//!
//! Time is `now`, as everywhere: the runner maps it to real time with a speed factor.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tocsin_core::Timestamp;

use crate::pdu::{self, Scts, Tpdu};
use crate::quirks::Family;
use crate::voice::FRAME_BYTES;
use crate::wire::{self, DteFrame, FinalResult, Frame};

/// How the simulated modem and network behave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// How long the network takes to accept one submitted part (`+CMGS: <mr>`), in ms.
    #[serde(default = "default_latency_ms")]
    pub per_message_latency_ms: u64,
    /// How long after a submit its status report arrives, in ms.
    #[serde(default = "default_status_report_delay_ms")]
    pub status_report_delay_ms: u64,
    /// Scripted replies by destination number.
    #[serde(default)]
    pub phones: Vec<PhoneScript>,
    /// What numbers not in `phones` do.
    #[serde(default = "default_script")]
    pub default_script: ReplyBehaviour,
    /// Injected faults.
    #[serde(default)]
    pub faults: Faults,
    /// The service centre address stamped on inbound PDUs.
    #[serde(default = "default_smsc")]
    pub smsc: String,
    /// What people do when called, by number.
    #[serde(default)]
    pub calls: Vec<CallScript>,
    /// What numbers not in `calls` do when called.
    #[serde(default = "default_call")]
    pub default_call: CallBehaviour,
    /// How the simulated modem announces call progress and keys.
    #[serde(default)]
    pub family: Family,
    /// Whether keys pressed are reported at all (a satellite handset may not).
    #[serde(default = "default_dtmf_reports")]
    pub dtmf_reports: bool,
    /// How long the network lets an unanswered call ring before `NO ANSWER`, seconds.
    #[serde(default = "default_network_ring_secs")]
    pub network_ring_secs: f64,
    /// The listener's playout buffer: audio may arrive this late before it is an
    /// underrun, milliseconds.
    #[serde(default = "default_audio_prebuffer_ms")]
    pub audio_prebuffer_ms: u64,
}

/// By default people answer after 5 s, listen, and press 1 after 12 s.
pub fn default_call() -> CallBehaviour {
    CallBehaviour::Press {
        answer_after_secs: 5.0,
        digit: '1',
        press_after_secs: 12.0,
    }
}
/// Keys are reported.
pub fn default_dtmf_reports() -> bool {
    true
}
/// 60 s of ringing before the network gives up.
pub fn default_network_ring_secs() -> f64 {
    60.0
}
/// 200 ms of playout buffer, about what a mobile network's jitter buffer holds.
pub fn default_audio_prebuffer_ms() -> u64 {
    200
}

/// The script for one called number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallScript {
    /// The number, `+` and digits.
    pub number: String,
    /// What the person does when it rings.
    pub behaviour: CallBehaviour,
}

/// What a person does when their phone rings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CallBehaviour {
    /// Answers after a while and listens until the gateway hangs up.
    Answer {
        /// Ringing time before answering, seconds.
        answer_after_secs: f64,
    },
    /// Answers, then presses a key some seconds into the call.
    Press {
        /// Ringing time before answering, seconds.
        answer_after_secs: f64,
        /// The key.
        digit: char,
        /// Seconds after answering.
        press_after_secs: f64,
    },
    /// Answers, then hangs up early.
    HangUp {
        /// Ringing time before answering, seconds.
        answer_after_secs: f64,
        /// Seconds after answering.
        hang_up_after_secs: f64,
    },
    /// Never answers: the network gives `NO ANSWER` after `network_ring_secs`.
    Never,
    /// The line is busy.
    Busy,
}

/// What the simulated listener heard on one call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AudioReport {
    /// Whole 20 ms frames received.
    pub frames: u64,
    /// Times a frame arrived after the playout buffer had run dry.
    pub underruns: u32,
    /// RMS level of every sample received (16-bit scale).
    pub rms: f64,
}

impl AudioReport {
    /// Whether what arrived was silence (or nothing).
    pub fn is_silence(&self) -> bool {
        self.rms < 100.0
    }

    /// Seconds of audio received.
    pub fn secs(&self) -> f64 {
        self.frames as f64 * 0.02
    }
}

/// One call the simulated network carried, once it is over.
#[derive(Clone, Debug, PartialEq)]
pub struct SimCall {
    /// The number as dialled, normalised to `+digits` when it parses.
    pub number: String,
    /// When `ATD` came.
    pub dialled_at: Timestamp,
    /// When the person answered.
    pub answered_at: Option<Timestamp>,
    /// When it ended.
    pub ended_at: Timestamp,
    /// Who or what ended it.
    pub ended_by: String,
    /// Keys the person pressed.
    pub digits: String,
    /// What they heard.
    pub audio: AudioReport,
}

/// Measures PCM arrivals against a playout clock.
#[derive(Clone, Debug, Default)]
struct AudioMeter {
    /// When playout (re)started, and frames received since.
    base: Option<Timestamp>,
    since_base: u64,
    bytes: u64,
    sum_sq: f64,
    samples: u64,
    carry: Option<u8>,
    underruns: u32,
}

impl AudioMeter {
    fn push(&mut self, now: Timestamp, bytes: &[u8], prebuffer: Duration) {
        let frames_before = self.bytes / FRAME_BYTES as u64;
        match self.base {
            None => self.base = Some(now + prebuffer),
            Some(base) => {
                // Frames the listener has played by now, counting the one playing.
                let consumed = if now < base {
                    0
                } else {
                    now.since(base).as_millis() as u64 / 20 + 1
                };
                if self.since_base < consumed {
                    self.underruns += 1;
                    self.base = Some(now + prebuffer);
                    self.since_base = 0;
                }
            }
        }
        self.bytes += bytes.len() as u64;
        self.since_base += self.bytes / FRAME_BYTES as u64 - frames_before;
        let mut iter = bytes.iter().copied();
        if let Some(lo) = self.carry.take() {
            match iter.next() {
                Some(hi) => self.sample(i16::from_le_bytes([lo, hi])),
                None => self.carry = Some(lo),
            }
        }
        loop {
            match (iter.next(), iter.next()) {
                (Some(lo), Some(hi)) => self.sample(i16::from_le_bytes([lo, hi])),
                (Some(lo), None) => {
                    self.carry = Some(lo);
                    break;
                }
                _ => break,
            }
        }
    }

    fn sample(&mut self, s: i16) {
        self.sum_sq += f64::from(s) * f64::from(s);
        self.samples += 1;
    }

    fn report(&self) -> AudioReport {
        AudioReport {
            frames: self.bytes / FRAME_BYTES as u64,
            underruns: self.underruns,
            rms: if self.samples == 0 {
                0.0
            } else {
                (self.sum_sq / self.samples as f64).sqrt()
            },
        }
    }
}

/// The call in progress on the simulated modem.
#[derive(Clone, Debug)]
struct LiveCall {
    seq: u64,
    number: String,
    dialled_at: Timestamp,
    answered_at: Option<Timestamp>,
    digits: String,
    meter: AudioMeter,
}

/// 2 s per part: about 30 parts a minute, faster than a real modem, so tests are quick.
pub fn default_latency_ms() -> u64 {
    2_000
}
/// 5 s from submit to status report.
pub fn default_status_report_delay_ms() -> u64 {
    5_000
}
/// By default everyone answers correctly within 10 to 60 s.
pub fn default_script() -> ReplyBehaviour {
    ReplyBehaviour::Reply {
        min_secs: 10.0,
        max_secs: 60.0,
    }
}
/// A Beijing SMSC.
pub fn default_smsc() -> String {
    "+8613800100500".to_owned()
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            per_message_latency_ms: default_latency_ms(),
            status_report_delay_ms: default_status_report_delay_ms(),
            phones: Vec::new(),
            default_script: default_script(),
            faults: Faults::default(),
            smsc: default_smsc(),
            calls: Vec::new(),
            default_call: default_call(),
            family: Family::default(),
            dtmf_reports: default_dtmf_reports(),
            network_ring_secs: default_network_ring_secs(),
            audio_prebuffer_ms: default_audio_prebuffer_ms(),
        }
    }
}

/// The script for one destination number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneScript {
    /// The number, `+` and digits.
    pub number: String,
    /// What the person does when a message arrives.
    pub behaviour: ReplyBehaviour,
}

/// What a person does with a warning that reached their phone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReplyBehaviour {
    /// Replies `1 XXXX` with the code from the message after a uniform delay.
    Reply {
        /// Shortest delay, seconds.
        min_secs: f64,
        /// Longest delay, seconds.
        max_secs: f64,
    },
    /// Never replies.
    Never,
    /// Replies with a code that is not the one sent.
    WrongCode {
        /// Shortest delay, seconds.
        min_secs: f64,
        /// Longest delay, seconds.
        max_secs: f64,
    },
    /// The right reply, but from another (unregistered) number.
    FromOther {
        /// The number the reply comes from.
        number: String,
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

/// Faults to inject, drawn from the seeded RNG.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Probability that a submit is refused with `+CMS ERROR: <cms_error_code>`.
    #[serde(default)]
    pub cms_error_rate: f64,
    /// The code of injected `+CMS ERROR`s (e.g. 42 congestion, 1 unassigned number).
    #[serde(default)]
    pub cms_error_code: u16,
    /// Probability that a command is never answered.
    #[serde(default)]
    pub silence_rate: f64,
    /// Probability that garbage bytes come before a response.
    #[serde(default)]
    pub garbage_rate: f64,
    /// Hang up the port after this many submitted parts (once).
    #[serde(default)]
    pub hangup_after_submits: Option<u32>,
    /// Extra time per submitted part, ms (a slow modem).
    #[serde(default)]
    pub slow_ms_per_message: u64,
    /// Store the parts of long inbound texts in reverse order.
    #[serde(default)]
    pub reorder_inbound: bool,
    /// Refuse command lines holding several commands (`AT+CMGD=1;+CMGD=2`) with `ERROR`
    /// and run none of them, like a modem without V.250 concatenation.
    #[serde(default)]
    pub refuse_concatenation: bool,
    /// When the cell network is gone, as windows after the simulator starts.
    #[serde(default)]
    pub network_loss: Vec<NetworkLoss>,
}

/// The cell network gone for a while: "network lost at `at_secs` for `for_secs`".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkLoss {
    /// Seconds after the simulator started (simulated time).
    pub at_secs: f64,
    /// How long it stays gone, seconds.
    pub for_secs: f64,
}

impl NetworkLoss {
    /// The window as instants, for a simulator started at `started`; `None` when empty or
    /// not finite.
    fn window(&self, started: Timestamp) -> Option<(Timestamp, Timestamp)> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !ok(self.at_secs) || !ok(self.for_secs) || self.for_secs == 0.0 {
            return None;
        }
        let from = started + Duration::from_secs_f64(self.at_secs.min(1.0e9));
        Some((
            from,
            from + Duration::from_secs_f64(self.for_secs.min(1.0e9)),
        ))
    }
}

/// Where the simulated cell network is.
#[derive(Clone, Debug, Default)]
struct Cell {
    /// When the simulator started (loss windows count from here).
    started: Timestamp,
    /// The latest `now` seen (for [`SimModem::poll_timeout`], which takes none).
    seen: Timestamp,
    /// Gone now (the state last announced).
    lost: bool,
    /// Gone until then by [`SimModem::lose_network`].
    lost_until: Option<Timestamp>,
    /// `AT+CREG=<n>`, `AT+CGREG=<n>`, `AT+CEREG=<n>`: 0 no pushed reports, 1 stat, 2 with
    /// location.
    creg_n: u8,
    cgreg_n: u8,
    cereg_n: u8,
}

/// One message the simulated network was asked to deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitRecord {
    /// Destination as encoded in the PDU (`+digits` when international).
    pub destination: String,
    /// The decoded text, all parts joined.
    pub text: String,
    /// How many parts it came in.
    pub parts: usize,
    /// The TP-MRs assigned, in part order.
    pub mrs: Vec<u8>,
    /// Whether a status report was requested.
    pub status_report: bool,
    /// When its last part was taken.
    pub at: Timestamp,
}

/// A message in the modem's storage.
#[derive(Clone, Debug)]
struct Stored {
    unread: bool,
    hex: String,
    tpdu_len: usize,
}

/// Something the network or the modem does later.
#[derive(Clone, Debug)]
enum Action {
    /// Bytes to the driver (a delayed response).
    Respond(Vec<u8>),
    /// A status report for a submitted part.
    StatusReport {
        mr: u8,
        recipient: String,
        submitted: Timestamp,
    },
    /// An SMS arrives.
    Deliver { from: String, text: String },
    /// Call `seq` starts ringing at the far end.
    CallAlerting(u64),
    /// Call `seq` is answered.
    CallAnswer(u64),
    /// Call `seq` meets a busy line.
    CallBusy(u64),
    /// The network gives up ringing call `seq`.
    CallNoAnswer(u64),
    /// The person on call `seq` presses a key.
    CallKey(u64, char),
    /// The person on call `seq` hangs up.
    CallHangUp(u64),
}

/// Parts of a long submit seen so far, by (destination, reference, total).
type PartialSubmits = HashMap<(String, u16, u8), BTreeMap<u8, (String, u8)>>;

/// The simulated modem and network. See the module documentation.
pub struct SimModem {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    decoder: wire::Decoder,
    echo: bool,
    prompt: Option<usize>,
    /// The modem handles one submit at a time: responses queue behind this.
    busy_until: Timestamp,
    next_mr: u8,
    next_ref: u8,
    storage: BTreeMap<u32, Stored>,
    scheduled: Vec<(Timestamp, u64, Action)>,
    seq: u64,
    out: VecDeque<Vec<u8>>,
    submits: Vec<SubmitRecord>,
    partial: PartialSubmits,
    parts_taken: u32,
    hangup: bool,
    commands_seen: u64,
    call: Option<LiveCall>,
    call_seq: u64,
    calls: Vec<SimCall>,
    stray_audio: u64,
    sms_refused_in_call: u32,
    /// `AT+CMGL` commands answered.
    lists: u64,
    /// Messages deleted by `AT+CMGD`.
    deletes: u64,
    /// The cell network behind the modem.
    cell: Cell,
    /// Submits refused with `+CMS ERROR: 331` because the network was gone.
    refused_no_network: u32,
}

/// Most messages the simulated storage holds, like a modem's `ME` memory.
pub const STORAGE_SLOTS: u32 = 255;

impl SimModem {
    /// A modem just powered on (echo on), with its own seeded RNG.
    pub fn new(cfg: SimConfig, seed: u64, now: Timestamp) -> Self {
        let mut sim = SimModem {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
            decoder: wire::Decoder::new(),
            echo: true,
            prompt: None,
            busy_until: now,
            next_mr: 0,
            next_ref: 0,
            storage: BTreeMap::new(),
            scheduled: Vec::new(),
            seq: 0,
            out: VecDeque::new(),
            submits: Vec::new(),
            partial: HashMap::new(),
            parts_taken: 0,
            hangup: false,
            commands_seen: 0,
            call: None,
            call_seq: 0,
            calls: Vec::new(),
            stray_audio: 0,
            sms_refused_in_call: 0,
            lists: 0,
            deletes: 0,
            cell: Cell {
                started: now,
                seen: now,
                ..Cell::default()
            },
            refused_no_network: 0,
        };
        // A network lost from the start is simply not there: nothing to announce.
        sim.cell.lost = sim.network_gone(now);
        sim
    }

    /// Whether the cell network is gone now.
    pub fn network_lost(&self) -> bool {
        self.cell.lost
    }

    /// Submits refused with `+CMS ERROR: 331` because the network was gone.
    pub fn refused_no_network(&self) -> u32 {
        self.refused_no_network
    }

    /// The cell network goes now, for `for_` (simulated time), on top of any scripted
    /// windows.
    pub fn lose_network(&mut self, now: Timestamp, for_: Duration) {
        let until = now + for_;
        self.cell.lost_until = Some(self.cell.lost_until.map_or(until, |u| u.max(until)));
        self.sync_network(now);
    }

    /// Whether the network is gone at `now`, by script or by [`Self::lose_network`].
    fn network_gone(&self, now: Timestamp) -> bool {
        self.cell.lost_until.is_some_and(|u| now < u)
            || self
                .cfg
                .faults
                .network_loss
                .iter()
                .filter_map(|l| l.window(self.cell.started))
                .any(|(from, to)| from <= now && now < to)
    }

    /// When the network state may next change after `after`.
    fn next_network_edge(&self, after: Timestamp) -> Option<Timestamp> {
        self.cfg
            .faults
            .network_loss
            .iter()
            .filter_map(|l| l.window(self.cell.started))
            .flat_map(|(from, to)| [from, to])
            .chain(self.cell.lost_until)
            .filter(|t| *t > after)
            .min()
    }

    /// When a network gone at `now` is back, as far as anyone knows.
    fn network_back_at(&self, now: Timestamp) -> Timestamp {
        let mut t = now;
        // Windows may overlap or abut: follow them to the end.
        for _ in 0..64 {
            if !self.network_gone(t) {
                return t;
            }
            match self.next_network_edge(t) {
                Some(next) => t = next,
                None => break,
            }
        }
        t + Duration::from_secs(1)
    }

    /// Brings the cell state to `now`: on a change, pushes the registration reports the
    /// driver enabled, and drops a call that was up.
    fn sync_network(&mut self, now: Timestamp) {
        self.cell.seen = self.cell.seen.max(now);
        let gone = self.network_gone(now);
        if gone == self.cell.lost {
            return;
        }
        self.cell.lost = gone;
        let stat = self.reg_stat();
        for (n, prefix) in [(self.cell.creg_n, "+CREG"), (self.cell.cereg_n, "+CEREG")] {
            match n {
                1 => self.emit(Frame::Line(format!("{prefix}: {stat}"))),
                2 if !gone => self.emit(Frame::Line(format!(
                    "{prefix}: {stat},\"1A2B\",\"01C3D4E\",7"
                ))),
                2 => self.emit(Frame::Line(format!("{prefix}: {stat}"))),
                _ => {}
            }
        }
        match self.cell.cgreg_n {
            1 => self.emit(Frame::Line(format!("+CGREG: {stat}"))),
            2 if !gone => self.emit(Frame::Line(format!("+CGREG: {stat},\"1A2B\",\"01C3D4E\""))),
            2 => self.emit(Frame::Line(format!("+CGREG: {stat}"))),
            _ => {}
        }
        if gone && self.call.is_some() {
            self.emit(Frame::Line("NO CARRIER".into()));
            self.announce_state(-1);
            self.end_call(now, "network lost");
        }
    }

    /// `<stat>` of every domain: 1 registered (home), 2 searching.
    fn reg_stat(&self) -> u8 {
        if self.cell.lost { 2 } else { 1 }
    }

    /// The answer to `AT+CREG?` and its kin: `<n>,<stat>`, with the location when `n` is 2
    /// and the modem is registered.
    fn reg_answer(&self, prefix: &str, n: u8) -> Frame {
        let stat = self.reg_stat();
        if n == 2 && !self.cell.lost {
            Frame::Line(format!("{prefix}: {n},{stat},\"1A2B\",\"01C3D4E\",7"))
        } else {
            Frame::Line(format!("{prefix}: {n},{stat}"))
        }
    }

    /// Calls that are over, in order.
    pub fn calls(&self) -> &[SimCall] {
        &self.calls
    }

    /// Whether a call is up (dialled and not over).
    pub fn in_call(&self) -> bool {
        self.call.is_some()
    }

    /// Audio bytes that arrived with no answered call to play them into.
    pub fn stray_audio_bytes(&self) -> u64 {
        self.stray_audio
    }

    /// Submits refused because a call was up.
    pub fn sms_refused_in_call(&self) -> u32 {
        self.sms_refused_in_call
    }

    /// PCM from the audio port (16-bit LE, 8 kHz), arriving at `now`.
    pub fn handle_audio(&mut self, now: Timestamp, bytes: &[u8]) {
        let prebuffer = Duration::from_millis(self.cfg.audio_prebuffer_ms);
        match self.call.as_mut() {
            Some(c) if c.answered_at.is_some() => c.meter.push(now, bytes, prebuffer),
            _ => self.stray_audio += bytes.len() as u64,
        }
    }

    /// Replaces the faults (e.g. make the modem go silent mid-test).
    pub fn set_faults(&mut self, faults: Faults) {
        self.cfg.faults = faults;
    }

    /// The messages the network was asked to deliver, in order.
    pub fn submits(&self) -> &[SubmitRecord] {
        &self.submits
    }

    /// Storage indexes currently holding a message.
    pub fn stored_indexes(&self) -> Vec<u32> {
        self.storage.keys().copied().collect()
    }

    /// How many command lines the modem has read (a concatenated line counts once).
    pub fn commands_seen(&self) -> u64 {
        self.commands_seen
    }

    /// How many `AT+CMGL` listings it answered.
    pub fn lists_answered(&self) -> u64 {
        self.lists
    }

    /// How many stored messages `AT+CMGD` deleted.
    pub fn deleted(&self) -> u64 {
        self.deletes
    }

    /// Whether the modem hung up since the last call (the runner then closes the port).
    pub fn take_hangup(&mut self) -> bool {
        std::mem::take(&mut self.hangup)
    }

    /// The modem was power-cycled or its port reopened: echo back on, no prompt pending,
    /// responses not yet written are gone. Stored messages and the network's pending
    /// status reports and replies survive.
    pub fn handle_power_cycle(&mut self, _now: Timestamp) {
        self.echo = true;
        self.prompt = None;
        // Pushed registration reports are off again until the driver asks.
        self.cell.creg_n = 0;
        self.cell.cgreg_n = 0;
        self.cell.cereg_n = 0;
        self.decoder.clear();
        self.out.clear();
        self.scheduled
            .retain(|(_, _, a)| !matches!(a, Action::Respond(_)));
    }

    /// An SMS from `from` arrives now (stored and announced with `+CMTI`).
    pub fn deliver_sms(&mut self, now: Timestamp, from: &str, text: &str) {
        let scts = scts_at(now);
        self.next_ref = self.next_ref.wrapping_add(1);
        let parts =
            match pdu::encode_deliver(Some(&self.cfg.smsc), from, text, &scts, self.next_ref) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(%e, "simulator cannot encode an inbound SMS");
                    return;
                }
            };
        let mut parts: Vec<_> = parts.into_iter().collect();
        if self.cfg.faults.reorder_inbound {
            parts.reverse();
        }
        for part in parts {
            let Some(idx) = (0..STORAGE_SLOTS).find(|i| !self.storage.contains_key(i)) else {
                // A full memory: the network holds the message; a real modem would report
                // +CMS ERROR 322 to the SMSC. The message is lost to this simulation.
                tracing::warn!("simulated storage full");
                return;
            };
            self.storage.insert(
                idx,
                Stored {
                    unread: true,
                    hex: part.to_hex(),
                    tpdu_len: part.tpdu_len(),
                },
            );
            self.emit(Frame::Line(format!("+CMTI: \"ME\",{idx}")));
        }
    }

    /// Bytes from the driver.
    pub fn handle_rx(&mut self, now: Timestamp, bytes: &[u8]) {
        self.sync_network(now);
        self.decoder.push(bytes);
        while let Some(frame) = self.decoder.next_dte_frame() {
            match frame {
                Ok(DteFrame::Command(cmd)) => self.on_command(now, &cmd),
                Ok(DteFrame::Body(hex)) => self.on_body(now, &hex),
                Ok(DteFrame::Cancel) => self.prompt = None,
                Err(_) => self.emit(Frame::Final(FinalResult::Error)),
            }
        }
    }

    /// Time passed: run what is due.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.sync_network(now);
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
            if self.cell.lost
                && matches!(action, Action::StatusReport { .. } | Action::Deliver { .. })
            {
                // The network holds it until the modem is back on it.
                let back = self.network_back_at(now);
                self.schedule(back, action);
                continue;
            }
            match action {
                Action::Respond(bytes) => self.out.push_back(bytes),
                Action::StatusReport {
                    mr,
                    recipient,
                    submitted,
                } => {
                    let report = pdu::encode_status_report(
                        Some(&self.cfg.smsc),
                        mr,
                        &recipient,
                        &scts_at(submitted),
                        &scts_at(now),
                        0x00,
                    );
                    match report {
                        Ok(r) => self.emit(Frame::Pdu {
                            header: format!("+CDS: {}", r.tpdu_len()),
                            pdu: r.to_hex(),
                        }),
                        Err(e) => tracing::warn!(%e, "simulator cannot encode a status report"),
                    }
                }
                Action::Deliver { from, text } => self.deliver_sms(now, &from, &text),
                Action::CallAlerting(seq) => {
                    if self.live(seq) {
                        self.announce_state(3);
                    }
                }
                Action::CallAnswer(seq) => self.call_answer(now, seq),
                Action::CallBusy(seq) => {
                    if self.live(seq) {
                        self.emit(Frame::Line("BUSY".into()));
                        self.announce_state(-1);
                        self.end_call(now, "busy");
                    }
                }
                Action::CallNoAnswer(seq) => {
                    if self.live(seq) {
                        self.emit(Frame::Line("NO ANSWER".into()));
                        self.announce_state(-1);
                        self.end_call(now, "network: no answer");
                    }
                }
                Action::CallKey(seq, key) => self.call_key(seq, key),
                Action::CallHangUp(seq) => {
                    if self.live(seq) {
                        if self.cfg.family == Family::Simcom {
                            self.emit(Frame::Line("VOICE CALL: END: 000005".into()));
                        }
                        self.emit(Frame::Line("NO CARRIER".into()));
                        self.announce_state(-1);
                        self.end_call(now, "callee hung up");
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
        let edge = self.next_network_edge(self.cell.seen);
        self.scheduled.iter().map(|(t, _, _)| *t).chain(edge).min()
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

    /// Frames for one response, with garbage first if the dice say so.
    fn respond(&mut self, frames: Vec<Frame>) {
        let mut b = self.garbage();
        for f in frames {
            wire::emit(&f, &mut b);
        }
        self.out.push_back(b);
    }

    /// A line of junk (never valid UTF-8) if the dice say so, else nothing.
    fn garbage(&mut self) -> Vec<u8> {
        if !self.chance(self.cfg.faults.garbage_rate) {
            return Vec::new();
        }
        let mut junk = vec![0u8; 8];
        self.rng.fill_bytes(&mut junk);
        junk.retain(|b| *b != b'\r' && *b != b'\n');
        let mut b = b"\r\n\xFF".to_vec();
        b.extend_from_slice(&junk);
        b.extend_from_slice(b"\r\n");
        b
    }

    fn on_command(&mut self, now: Timestamp, cmd: &str) {
        self.commands_seen += 1;
        if self.echo {
            self.emit(Frame::Echo(cmd.to_owned()));
        }
        if self.chance(self.cfg.faults.silence_rate) {
            return;
        }
        let upper = cmd.to_ascii_uppercase();
        let Some(parts) = split_concatenated(&upper) else {
            let frames = self.answer(now, &upper);
            // Empty: answered already (a hang-up and its notices).
            if !frames.is_empty() {
                self.respond(frames);
            }
            return;
        };
        if self.cfg.faults.refuse_concatenation {
            // A modem whose parser takes one command per line: a syntax error, nothing done.
            self.respond(vec![Frame::Final(FinalResult::Error)]);
            return;
        }
        // V.250: the commands run in order; their information responses come in order,
        // then one final `OK`, or the first failure's result code with the commands before
        // it done and the rest not run.
        let mut frames = Vec::new();
        for part in parts {
            let mut answer = self.answer(now, &format!("AT{part}"));
            match answer.pop() {
                Some(Frame::Final(FinalResult::Ok)) => frames.extend(answer),
                Some(Frame::Final(err)) => {
                    frames.extend(answer);
                    frames.push(Frame::Final(err));
                    self.respond(frames);
                    return;
                }
                // A submit waits for its body alone on its line: not inside a concatenation.
                Some(Frame::Prompt) => {
                    self.prompt = None;
                    frames.push(Frame::Final(FinalResult::Error));
                    self.respond(frames);
                    return;
                }
                Some(other) => {
                    frames.extend(answer);
                    frames.push(other);
                    frames.push(Frame::Final(FinalResult::Error));
                    self.respond(frames);
                    return;
                }
                // Answered already (a hang-up): the rest of the line is dropped.
                None => {
                    if !frames.is_empty() {
                        self.respond(frames);
                    }
                    return;
                }
            }
        }
        frames.push(Frame::Final(FinalResult::Ok));
        self.respond(frames);
    }

    /// The answer to one command (`upper`, upper-cased, with its `AT`): information frames
    /// then a final result, or the `> ` prompt, or nothing when the answer was already
    /// written (a hang-up followed by the family's notices).
    fn answer(&mut self, now: Timestamp, upper: &str) -> Vec<Frame> {
        if let Some(frames) = self.on_voice_command(now, upper) {
            return frames;
        }
        let ok = Frame::Final(FinalResult::Ok);
        match upper {
            "AT" | "AT+CMEE=1" | "AT+CMGF=0" => vec![ok],
            "ATE0" => {
                self.echo = false;
                vec![ok]
            }
            "ATE1" => {
                self.echo = true;
                vec![ok]
            }
            "AT+CSQ" => vec![Frame::Line("+CSQ: 21,99".into()), ok],
            "AT+CREG?" => vec![self.reg_answer("+CREG", self.cell.creg_n), ok],
            "AT+CGREG?" => vec![self.reg_answer("+CGREG", self.cell.cgreg_n), ok],
            "AT+CEREG?" => vec![self.reg_answer("+CEREG", self.cell.cereg_n), ok],
            _ => {
                let set_n = |v: &str| v.trim().parse::<u8>().ok().filter(|n| *n <= 2);
                if let Some(n) = upper.strip_prefix("AT+CREG=").and_then(set_n) {
                    self.cell.creg_n = n;
                    return vec![ok];
                }
                if let Some(n) = upper.strip_prefix("AT+CGREG=").and_then(set_n) {
                    self.cell.cgreg_n = n;
                    return vec![ok];
                }
                if let Some(n) = upper.strip_prefix("AT+CEREG=").and_then(set_n) {
                    self.cell.cereg_n = n;
                    return vec![ok];
                }
                if upper.starts_with("AT+CMGS=") && self.call.is_some() {
                    self.sms_refused_in_call += 1;
                    vec![Frame::Final(FinalResult::CmsError(500))]
                } else if let Some(n) = upper.strip_prefix("AT+CMGS=") {
                    match n.trim().parse::<usize>() {
                        Ok(len) if (7..=164).contains(&len) => {
                            self.prompt = Some(len);
                            vec![Frame::Prompt]
                        }
                        _ => vec![Frame::Final(FinalResult::CmsError(304))],
                    }
                } else if let Some(stat) = upper.strip_prefix("AT+CMGL=") {
                    self.list(stat)
                } else if let Some(i) = upper.strip_prefix("AT+CMGR=") {
                    match i
                        .trim()
                        .parse::<u32>()
                        .ok()
                        .and_then(|i| self.storage.get_mut(&i))
                    {
                        Some(s) => {
                            let stat = u8::from(!s.unread);
                            s.unread = false;
                            vec![
                                Frame::Pdu {
                                    header: format!("+CMGR: {stat},,{}", s.tpdu_len),
                                    pdu: s.hex.clone(),
                                },
                                ok,
                            ]
                        }
                        None => vec![Frame::Final(FinalResult::CmsError(321))],
                    }
                } else if let Some(i) = upper.strip_prefix("AT+CMGD=") {
                    let idx = i
                        .split(',')
                        .next()
                        .and_then(|v| v.trim().parse::<u32>().ok());
                    // An empty or out-of-range location is an invalid index, as on the
                    // modems that say so (others answer OK; the driver takes both).
                    match idx.and_then(|idx| self.storage.remove(&idx)) {
                        Some(_) => {
                            self.deletes += 1;
                            vec![ok]
                        }
                        None => vec![Frame::Final(FinalResult::CmsError(321))],
                    }
                } else if upper.starts_with("AT+CPMS=") {
                    let n = self.storage.len();
                    vec![
                        Frame::Line(format!(
                            "+CPMS: {n},{STORAGE_SLOTS},{n},{STORAGE_SLOTS},{n},{STORAGE_SLOTS}"
                        )),
                        ok,
                    ]
                } else if upper.starts_with("AT+CNMI=") {
                    vec![ok]
                } else {
                    vec![Frame::Final(FinalResult::Error)]
                }
            }
        }
    }

    /// `AT+CMGL=<stat>` in PDU mode: 0 received unread, 1 received read, 2 and 3 (our
    /// unsent and sent, never stored here), 4 all. Listed unread messages become read.
    fn list(&mut self, stat: &str) -> Vec<Frame> {
        let wanted = match stat.trim().parse::<u8>() {
            Ok(w @ 0..=4) => w,
            _ => return vec![Frame::Final(FinalResult::CmsError(302))],
        };
        let mut frames = Vec::new();
        for (i, s) in &mut self.storage {
            let stat = u8::from(!s.unread);
            if wanted == 4 || wanted == stat {
                frames.push(Frame::Pdu {
                    header: format!("+CMGL: {i},{stat},,{}", s.tpdu_len),
                    pdu: s.hex.clone(),
                });
                s.unread = false;
            }
        }
        self.lists += 1;
        frames.push(Frame::Final(FinalResult::Ok));
        frames
    }

    fn on_body(&mut self, now: Timestamp, hex: &str) {
        let Some(at_length) = self.prompt.take() else {
            self.respond(vec![Frame::Final(FinalResult::Error)]);
            return;
        };
        if self.chance(self.cfg.faults.silence_rate) {
            return;
        }
        let parsed = pdu::hex_decode(hex).and_then(|b| pdu::parse_cmgs_pdu(&b, at_length));
        let submit = match parsed {
            Ok((_, s)) => s,
            Err(e) => {
                tracing::debug!(%e, "simulator refused a PDU");
                self.respond(vec![Frame::Final(FinalResult::CmsError(304))]);
                return;
            }
        };
        if self.cell.lost {
            // No network service: the modem gives up on the submit at once.
            self.refused_no_network += 1;
            self.respond(vec![Frame::Final(FinalResult::CmsError(331))]);
            return;
        }
        let latency = Duration::from_millis(
            self.cfg.per_message_latency_ms + self.cfg.faults.slow_ms_per_message,
        );
        let done = self.busy_until.max(now) + latency;
        self.busy_until = done;
        if self.chance(self.cfg.faults.cms_error_rate) {
            let mut b = Vec::new();
            wire::emit(
                &Frame::Final(FinalResult::CmsError(self.cfg.faults.cms_error_code)),
                &mut b,
            );
            self.schedule(done, Action::Respond(b));
            return;
        }
        let mr = self.next_mr;
        self.next_mr = self.next_mr.wrapping_add(1);
        let mut b = self.garbage();
        wire::emit(&Frame::Line(format!("+CMGS: {mr}")), &mut b);
        wire::emit(&Frame::Final(FinalResult::Ok), &mut b);
        self.schedule(done, Action::Respond(b));
        if submit.status_report {
            let at = done + Duration::from_millis(self.cfg.status_report_delay_ms);
            self.schedule(
                at,
                Action::StatusReport {
                    mr,
                    recipient: submit.destination.clone(),
                    submitted: done,
                },
            );
        }
        self.parts_taken += 1;
        if self.cfg.faults.hangup_after_submits == Some(self.parts_taken) {
            self.hangup = true;
        }
        self.take_part(done, submit, mr);
    }

    /// Voice commands; `None` when `cmd` is not one.
    fn on_voice_command(&mut self, now: Timestamp, cmd: &str) -> Option<Vec<Frame>> {
        let ok = Frame::Final(FinalResult::Ok);
        if let Some(rest) = cmd.strip_prefix("ATD") {
            let Some(number) = rest.strip_suffix(';') else {
                // A data call: not offered.
                return Some(vec![Frame::Line("NO CARRIER".into())]);
            };
            if self.call.is_some() {
                return Some(vec![Frame::Final(FinalResult::CmeError(3))]);
            }
            if self.cell.lost {
                // 27.007 +CME ERROR 30: no network service.
                return Some(vec![Frame::Final(FinalResult::CmeError(30))]);
            }
            self.place_call(now, number.trim());
            return Some(vec![ok]);
        }
        match cmd {
            "ATH" | "AT+CHUP" => {
                if self.call.is_some() {
                    self.end_call(now, "gateway hung up");
                    self.respond(vec![ok]);
                    // The family's own end notices follow the OK.
                    match self.cfg.family {
                        Family::Quectel => {
                            self.emit(Frame::Line("+QIND: \"ccinfo\",1,0,-1,0,0,\"\",129".into()))
                        }
                        Family::Simcom => {
                            self.emit(Frame::Line("VOICE CALL: END: 000020".into()));
                        }
                        Family::Generic => {}
                    }
                    return Some(Vec::new());
                }
                Some(vec![ok])
            }
            "AT+CLCC" => {
                let mut frames = Vec::new();
                if let Some(c) = &self.call {
                    let stat = if c.answered_at.is_some() { 0 } else { 3 };
                    frames.push(Frame::Line(format!(
                        "+CLCC: 1,0,{stat},0,0,\"{}\",145",
                        c.number
                    )));
                }
                frames.push(ok);
                Some(frames)
            }
            "AT+QPCMV=1,0" | "AT+QPCMV=0" | "AT+QINDCFG=\"CCINFO\",1,0" | "AT+QTONEDET=1"
                if self.cfg.family == Family::Quectel =>
            {
                Some(vec![ok])
            }
            "AT+CLCC=1" | "AT+DDET=1" | "AT+CPCMREG=1" | "AT+CPCMREG=0"
                if self.cfg.family == Family::Simcom =>
            {
                Some(vec![ok])
            }
            _ => None,
        }
    }

    fn live(&self, seq: u64) -> bool {
        self.call.as_ref().is_some_and(|c| c.seq == seq)
    }

    fn place_call(&mut self, now: Timestamp, dialled: &str) {
        self.call_seq += 1;
        let seq = self.call_seq;
        let number = tocsin_core::PhoneNumber::parse(dialled, "86")
            .map_or_else(|_| dialled.to_owned(), |n| n.as_str().to_owned());
        let behaviour = self
            .cfg
            .calls
            .iter()
            .find(|c| c.number == number)
            .map(|c| c.behaviour.clone())
            .unwrap_or_else(|| self.cfg.default_call.clone());
        self.call = Some(LiveCall {
            seq,
            number,
            dialled_at: now,
            answered_at: None,
            digits: String::new(),
            meter: AudioMeter::default(),
        });
        self.announce_state(2);
        let secs = |s: f64| {
            Duration::from_secs_f64(if s.is_finite() {
                s.clamp(0.0, 1.0e6)
            } else {
                0.0
            })
        };
        let ring = Duration::from_millis(500);
        match behaviour {
            CallBehaviour::Busy => {
                self.schedule(now + Duration::from_secs(2), Action::CallBusy(seq))
            }
            CallBehaviour::Never => {
                self.schedule(now + ring, Action::CallAlerting(seq));
                self.schedule(
                    now + secs(self.cfg.network_ring_secs),
                    Action::CallNoAnswer(seq),
                );
            }
            CallBehaviour::Answer { answer_after_secs } => {
                self.schedule(now + ring, Action::CallAlerting(seq));
                self.schedule(now + secs(answer_after_secs), Action::CallAnswer(seq));
            }
            CallBehaviour::Press {
                answer_after_secs,
                digit,
                press_after_secs,
            } => {
                let answer = now + secs(answer_after_secs);
                self.schedule(now + ring, Action::CallAlerting(seq));
                self.schedule(answer, Action::CallAnswer(seq));
                self.schedule(answer + secs(press_after_secs), Action::CallKey(seq, digit));
            }
            CallBehaviour::HangUp {
                answer_after_secs,
                hang_up_after_secs,
            } => {
                let answer = now + secs(answer_after_secs);
                self.schedule(now + ring, Action::CallAlerting(seq));
                self.schedule(answer, Action::CallAnswer(seq));
                self.schedule(answer + secs(hang_up_after_secs), Action::CallHangUp(seq));
            }
        }
    }

    /// Announces the call's state the family's way (stat as in `+CLCC`; −1 released).
    fn announce_state(&mut self, stat: i32) {
        let Some(number) = self.call.as_ref().map(|c| c.number.clone()) else {
            return;
        };
        match self.cfg.family {
            Family::Quectel => self.emit(Frame::Line(format!(
                "+QIND: \"ccinfo\",1,0,{stat},0,0,\"{number}\",145"
            ))),
            Family::Simcom if stat >= 0 => self.emit(Frame::Line(format!(
                "+CLCC: 1,0,{stat},0,0,\"{number}\",145"
            ))),
            Family::Simcom | Family::Generic => {}
        }
    }

    fn call_answer(&mut self, now: Timestamp, seq: u64) {
        let Some(c) = self.call.as_mut().filter(|c| c.seq == seq) else {
            return;
        };
        c.answered_at = Some(now);
        if self.cfg.family == Family::Simcom {
            self.emit(Frame::Line("VOICE CALL: BEGIN".into()));
        }
        self.announce_state(0);
    }

    fn call_key(&mut self, seq: u64, key: char) {
        let Some(c) = self
            .call
            .as_mut()
            .filter(|c| c.seq == seq && c.answered_at.is_some())
        else {
            return;
        };
        c.digits.push(key);
        if !self.cfg.dtmf_reports {
            return;
        }
        let line = match self.cfg.family {
            Family::Quectel => format!("+QTONEDET: {}", u32::from(key)),
            Family::Simcom => format!("+RXDTMF: {key}"),
            Family::Generic => format!("+DTMF: {key}"),
        };
        self.emit(Frame::Line(line));
    }

    fn end_call(&mut self, now: Timestamp, by: &str) {
        let Some(c) = self.call.take() else { return };
        self.calls.push(SimCall {
            number: c.number,
            dialled_at: c.dialled_at,
            answered_at: c.answered_at,
            ended_at: now,
            ended_by: by.to_owned(),
            digits: c.digits,
            audio: c.meter.report(),
        });
    }

    /// Logs a submitted part; when its message is complete, the person may reply.
    fn take_part(&mut self, at: Timestamp, submit: pdu::Submit, mr: u8) {
        let (text, parts, mrs) = match submit.user_data.concat.filter(|c| c.total > 1) {
            None => (submit.user_data.text, 1, vec![mr]),
            Some(c) => {
                let key = (submit.destination.clone(), c.reference, c.total);
                let got = self.partial.entry(key.clone()).or_default();
                got.insert(c.seq, (submit.user_data.text, mr));
                if got.len() < usize::from(c.total) {
                    return;
                }
                let got = self.partial.remove(&key).unwrap_or_default();
                let text = got.values().map(|(t, _)| t.as_str()).collect::<String>();
                let mrs = got.values().map(|(_, m)| *m).collect();
                (text, usize::from(c.total), mrs)
            }
        };
        let destination = submit.destination;
        self.submits.push(SubmitRecord {
            destination: destination.clone(),
            text: text.clone(),
            parts,
            mrs,
            status_report: submit.status_report,
            at,
        });
        self.script_reply(at, &destination, &text);
    }

    fn script_reply(&mut self, at: Timestamp, destination: &str, text: &str) {
        let behaviour = self
            .cfg
            .phones
            .iter()
            .find(|p| p.number == destination)
            .map(|p| p.behaviour.clone())
            .unwrap_or_else(|| self.cfg.default_script.clone());
        let code = extract_code(text);
        let answer = format!("1 {}", code.as_deref().unwrap_or(""));
        let (from, reply, min, max) = match behaviour {
            ReplyBehaviour::Never => return,
            ReplyBehaviour::Reply { min_secs, max_secs } => {
                (destination.to_owned(), answer, min_secs, max_secs)
            }
            ReplyBehaviour::WrongCode { min_secs, max_secs } => {
                let wrong = if code.as_deref() == Some("AAAA") {
                    "CCCC"
                } else {
                    "AAAA"
                };
                (
                    destination.to_owned(),
                    format!("1 {wrong}"),
                    min_secs,
                    max_secs,
                )
            }
            ReplyBehaviour::FromOther {
                number,
                min_secs,
                max_secs,
            } => (number, answer, min_secs, max_secs),
            ReplyBehaviour::Text {
                text,
                min_secs,
                max_secs,
            } => (destination.to_owned(), text, min_secs, max_secs),
        };
        let delay = self.uniform_secs(min, max);
        self.schedule(
            at + delay,
            Action::Deliver {
                from,
                text: reply.trim().to_owned(),
            },
        );
    }

    fn uniform_secs(&mut self, min: f64, max: f64) -> Duration {
        let lo = if min.is_finite() { min.max(0.0) } else { 0.0 };
        let hi = if max.is_finite() { max.max(lo) } else { lo };
        let secs = if hi > lo {
            self.rng.random_range(lo..=hi)
        } else {
            lo
        };
        Duration::from_secs_f64(secs.min(1.0e9))
    }
}

/// The commands of a V.250 concatenated line of extended commands, `AT+CMGD=3;+CMGD=4`
/// → `["+CMGD=3", "+CMGD=4"]` (a `;` inside quotes does not split; a trailing one is
/// allowed). `None` for a line with one command, or one that is not all extended commands
/// (`ATD<n>;` is a voice dial, not a concatenation).
pub fn split_concatenated(upper: &str) -> Option<Vec<String>> {
    let rest = upper.strip_prefix("AT")?;
    if !rest.starts_with('+') {
        return None;
    }
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in rest.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ';' if !quoted => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if !current.trim().is_empty() {
        parts.push(current);
    }
    let parts: Vec<String> = parts.into_iter().map(|p| p.trim().to_owned()).collect();
    (parts.len() > 1 && parts.iter().all(|p| p.starts_with('+'))).then_some(parts)
}

/// The ack code in a warning text: the 4 letters or digits after a standalone `1 `, as in
/// `回复 1 K7XT 确认` or `reply 1 K7XT`. Full-width forms are folded first.
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

/// The SCTS for `now` at +08:00, or a fixed date when `now` is outside 2000–2099 (a test
/// clock that starts at zero).
fn scts_at(now: Timestamp) -> Scts {
    Scts::from_timestamp(now, 32).unwrap_or(Scts {
        year: 2024,
        month: 7,
        day: 1,
        hour: 10,
        minute: 30,
        second: 0,
        tz_quarters: 32,
    })
}

/// Whether a stored PDU is an SMS-DELIVER (for tests and the runner's log).
pub fn is_deliver(hex: &str) -> bool {
    pdu::hex_decode(hex)
        .and_then(|b| pdu::parse_pdu(&b, true))
        .is_ok_and(|p| matches!(p.tpdu, Tpdu::Deliver(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(sim: &mut SimModem) -> String {
        let mut s = String::new();
        while let Some(b) = sim.poll_transmit() {
            s.push_str(&String::from_utf8_lossy(&b));
        }
        s
    }

    #[test]
    fn extracts_codes_robustly() {
        assert_eq!(
            extract_code("【红色预警】山洪。回复 1 K7XT 确认"),
            Some("K7XT".into())
        );
        assert_eq!(extract_code("reply 1 k7xt to confirm"), Some("K7XT".into()));
        assert_eq!(
            extract_code("水位 1 米, 回复１ Ｋ７ＸＴ"),
            Some("K7XT".into())
        );
        assert_eq!(extract_code("21 K7XT"), None);
        assert_eq!(extract_code("1 K7XTY"), None);
        assert_eq!(extract_code("1 K7"), None);
        assert_eq!(extract_code(""), None);
    }

    #[test]
    fn echo_until_ate0_and_basic_answers() {
        let mut sim = SimModem::new(SimConfig::default(), 1, Timestamp::ZERO);
        sim.handle_rx(Timestamp::ZERO, b"AT\r");
        assert_eq!(drain(&mut sim), "AT\r\r\nOK\r\n");
        sim.handle_rx(Timestamp::ZERO, b"ATE0\rAT+CSQ\r");
        assert_eq!(
            drain(&mut sim),
            "ATE0\r\r\nOK\r\n\r\n+CSQ: 21,99\r\n\r\nOK\r\n"
        );
        sim.handle_rx(Timestamp::ZERO, b"AT+CMGR=7\rAT+FOO\r");
        assert_eq!(drain(&mut sim), "\r\n+CMS ERROR: 321\r\n\r\nERROR\r\n");
    }

    #[test]
    fn submit_gets_mr_status_report_and_scripted_reply() {
        let t0 = Timestamp(1_750_000_000_000);
        let cfg = SimConfig {
            default_script: ReplyBehaviour::Reply {
                min_secs: 30.0,
                max_secs: 30.0,
            },
            ..SimConfig::default()
        };
        let mut sim = SimModem::new(cfg, 7, t0);
        sim.handle_rx(t0, b"ATE0\r");
        drain(&mut sim);
        // "ACK 1" would carry no code; send a text with one.
        let num = tocsin_core::PhoneNumber::parse("+8613800138000", "86").unwrap();
        let parts =
            pdu::encode_submit(&num, "reply 1 K7XT", &pdu::SubmitOptions::default()).unwrap();
        let part = &parts[0];
        sim.handle_rx(t0, format!("AT+CMGS={}\r", part.at_length()).as_bytes());
        assert_eq!(drain(&mut sim), "\r\n> ");
        sim.handle_rx(
            t0,
            format!("{}\x1a", part.hex_with_default_smsc()).as_bytes(),
        );
        assert_eq!(drain(&mut sim), "", "the network takes its time");
        let t1 = sim.poll_timeout().unwrap();
        assert_eq!(t1, t0 + Duration::from_secs(2));
        sim.handle_timeout(t1);
        assert_eq!(drain(&mut sim), "\r\n+CMGS: 0\r\n\r\nOK\r\n");
        assert_eq!(sim.submits()[0].destination, "+8613800138000");
        assert_eq!(sim.submits()[0].text, "reply 1 K7XT");
        let t2 = sim.poll_timeout().unwrap();
        sim.handle_timeout(t2);
        assert!(drain(&mut sim).starts_with("\r\n+CDS: "));
        let t3 = sim.poll_timeout().unwrap();
        assert_eq!(t3, t1 + Duration::from_secs(30));
        sim.handle_timeout(t3);
        assert_eq!(drain(&mut sim), "\r\n+CMTI: \"ME\",0\r\n");
        sim.handle_rx(t3, b"AT+CMGR=0\r");
        let read = drain(&mut sim);
        assert!(read.starts_with("\r\n+CMGR: 0,,"), "{read}");
        sim.handle_rx(t3, b"AT+CMGD=0\r");
        assert_eq!(drain(&mut sim), "\r\nOK\r\n");
        assert!(sim.stored_indexes().is_empty());
    }

    #[test]
    fn concatenated_commands_run_in_order_with_one_final_result() {
        let mut sim = SimModem::new(SimConfig::default(), 1, Timestamp::ZERO);
        sim.handle_rx(Timestamp::ZERO, b"ATE0\r");
        drain(&mut sim);
        for i in 0..4 {
            sim.deliver_sms(Timestamp::ZERO, "+8613912345678", &format!("1 K00{i}"));
        }
        drain(&mut sim);
        // Information responses in order, then one OK.
        sim.handle_rx(Timestamp::ZERO, b"AT+CSQ;+CREG?\r");
        assert_eq!(
            drain(&mut sim),
            "\r\n+CSQ: 21,99\r\n\r\n+CREG: 0,1\r\n\r\nOK\r\n"
        );
        sim.handle_rx(Timestamp::ZERO, b"AT+CMGD=0;+CMGD=1\r");
        assert_eq!(drain(&mut sim), "\r\nOK\r\n");
        assert_eq!(sim.stored_indexes(), [2, 3]);
        assert_eq!(sim.commands_seen(), 3, "a line counts once");
        // The first failure ends the line: the commands before it ran, the rest did not.
        sim.handle_rx(Timestamp::ZERO, b"AT+CMGD=2;+CMGD=0;+CMGD=3\r");
        assert_eq!(drain(&mut sim), "\r\n+CMS ERROR: 321\r\n");
        assert_eq!(sim.stored_indexes(), [3]);
        assert_eq!(sim.deleted(), 3);
        // A modem without concatenation refuses the whole line and runs nothing.
        sim.set_faults(Faults {
            refuse_concatenation: true,
            ..Faults::default()
        });
        sim.handle_rx(Timestamp::ZERO, b"AT+CMGD=3;+CMGD=3\r");
        assert_eq!(drain(&mut sim), "\r\nERROR\r\n");
        assert_eq!(sim.stored_indexes(), [3]);
        sim.handle_rx(Timestamp::ZERO, b"AT+CMGD=3\r");
        assert_eq!(drain(&mut sim), "\r\nOK\r\n");
    }

    #[test]
    fn only_extended_commands_split_on_semicolons() {
        assert_eq!(
            split_concatenated("AT+CMGD=3;+CMGD=4;"),
            Some(vec!["+CMGD=3".to_owned(), "+CMGD=4".to_owned()])
        );
        assert_eq!(split_concatenated("AT+CMGD=3"), None);
        assert_eq!(split_concatenated("ATD13800138000;"), None, "a voice dial");
        assert_eq!(split_concatenated("AT+QINDCFG=\"A;B\",1"), None);
        assert_eq!(split_concatenated("AT+CSQ;E0"), None);
        assert_eq!(split_concatenated(""), None);
    }

    #[test]
    fn listing_unread_shows_only_unread_and_marks_them_read() {
        let mut sim = SimModem::new(SimConfig::default(), 1, Timestamp::ZERO);
        sim.handle_rx(Timestamp::ZERO, b"ATE0\r");
        for i in 0..3 {
            sim.deliver_sms(Timestamp::ZERO, "+8613912345678", &format!("1 K00{i}"));
        }
        drain(&mut sim);
        sim.handle_rx(Timestamp::ZERO, b"AT+CMGR=1\r");
        drain(&mut sim);
        sim.handle_rx(Timestamp::ZERO, b"AT+CMGL=0\r");
        let listed = drain(&mut sim);
        let headers: Vec<_> = listed.lines().filter(|l| l.starts_with("+CMGL:")).collect();
        assert_eq!(headers.len(), 2, "{listed}");
        assert!(headers[0].starts_with("+CMGL: 0,0,,"));
        assert!(headers[1].starts_with("+CMGL: 2,0,,"));
        assert!(listed.ends_with("\r\nOK\r\n"));
        sim.handle_rx(Timestamp::ZERO, b"AT+CMGL=0\r");
        assert_eq!(drain(&mut sim), "\r\nOK\r\n", "all read now");
        sim.handle_rx(Timestamp::ZERO, b"AT+CMGL=4\r");
        let all = drain(&mut sim);
        assert_eq!(all.lines().filter(|l| l.starts_with("+CMGL: ")).count(), 3);
        assert!(all.contains("+CMGL: 1,1,,"));
        sim.handle_rx(Timestamp::ZERO, b"AT+CMGL=9\r");
        assert_eq!(drain(&mut sim), "\r\n+CMS ERROR: 302\r\n");
        assert_eq!(sim.lists_answered(), 3);
    }
}
