//! The modem conversation as a sans-IO state machine (in the style of `quinn-proto`).
//!
//! Inputs: [`Modem::handle_rx`], [`Modem::handle_timeout`], [`Modem::submit`],
//! [`Modem::handle_port_opened`], [`Modem::handle_port_lost`], each with `now`.
//! Outputs: [`Modem::poll_transmit`] (bytes for the port), [`Modem::poll_event`] (facts for
//! the router), [`Modem::poll_timeout`] (the next instant something is due). No I/O, no
//! clock: the io task feeds it, and tests step it against the simulator on a virtual clock.
//!
//! One command is in flight at a time. The modem is initialised after every port open
//! (sync, echo off, numeric errors, PDU mode, storage, indications, pushed registration
//! reports `AT+CREG=2` / `AT+CGREG=2` / `AT+CEREG=2` where accepted, signal, registration on every domain,
//! then a listing of stored messages so replies that arrived while we were down are
//! reported).
//!
//! No network, no sends: the modem is `up` only when initialised and registered (home or
//! roaming on `+CREG`, `+CGREG` or `+CEREG`, any of them; a modem answering none of the
//! queries is taken at its word by its sends). Registration is polled every
//! `health_interval_secs` and taken from pushed `+CREG:`/`+CGREG:`/`+CEREG:` lines at once
//! (one saying "not registered" while another domain still reads registered from the last
//! poll starts a fresh poll of every domain ahead of any send). While it
//! is missing no submit or dial starts; queued sends and calls wait (they are not failed). A
//! submit answered `+CMS ERROR: 331`/`332` or a dial answered `+CME ERROR: 30` (or `NO
//! DIALTONE`) means the network is gone: the modem reports itself down at once, and the
//! send goes back to the front of the queue (a long text whose first parts went out resumes
//! with the part that failed), the call too. The router, told the device is down, abandons
//! what it holds and sends it elsewhere or holds it, and cancels it here; when registration
//! returns the modem reports up and sends resume. Then internal work (reading, deleting, health polls) goes before sends, and a
//! send goes out part by part: `AT+CMGS=<len>`, the `> ` prompt, the hex PDU and Ctrl-Z,
//! `+CMGS: <mr>`. Each part's TP-MR and recipient are remembered to match the status report
//! later ([`crate::reports`]: both must agree, so a late report after the 8-bit MR wrapped
//! never marks another person's message delivered).
//!
//! Replies are stored by the modem and announced with `+CMTI`. Two or more announced are
//! read with one `AT+CMGL=0` (the unread ones; a burst of 20 is one round trip, not 20
//! `AT+CMGR`); a lone one announced on an idle line waits `inbound_batch_ms` (5 ms) for
//! company, one announced while a command was in flight has waited already, and it is read
//! with `AT+CMGR`. An announced index the listing did not show (read already, by a read whose
//! answer was lost) is read on its own; a listing that never answers is followed by
//! `AT+CMGL=4`, which shows read ones too; a modem refusing `AT+CMGL=0` is listed with
//! `AT+CMGL=4` from then on. A message is deleted only after the router's `Release` (its
//! record is committed), never with the bulk `AT+CMGD=<i>,<flag>` (that would take messages
//! read but not committed): the released indexes waiting go out together as one V.250
//! concatenated line, `AT+CMGD=3;+CMGD=4;+CMGD=7`, at most `delete_batch` per line. After
//! a line that fails (V.250: the commands before the failing one ran; the answer does not
//! say which) each of its indexes is read again with `AT+CMGR` and deleted on its own line
//! only if it still holds the released message (same PDU): gone is done, and a new reply
//! stored in a slot the line freed is reported, not deleted. A bare `ERROR`
//! (a syntax error, as from a modem without concatenation) means one per line for the rest
//! of the session; models not known to concatenate (`Quirks::concatenation`) never do.
//! Every full line of released indexes goes before the next read, so deletions keep pace
//! with a storm (a full storage makes the network refuse replies); a partial line waits
//! while replies wait to be read, so an ack does not wait on deletions. Within a port session an index
//! reported and not yet released is never reported again, even when re-announced; after
//! a reopen the init's `AT+CMGL=4` reports everything not yet deleted. A receipt names its
//! indexes and a fingerprint of the PDUs they held (`3,4@<fnv64>`): a release whose slots
//! hold something else now (one from before a reopen, arriving after the slot was freed and
//! reused) deletes nothing — the message it released was deleted or is reported again.
//!
//! At-least-once, and honest about it: when the port is lost while a submit is in flight
//! (or after some parts of a long text went out), the attempt is reported `Failed`
//! retryable with a reason saying it may have gone out, and the router decides whether to
//! resend. Sends that had not started stay queued and go out after the port reopens.
//! A submit is never re-sent by the driver on its own.
//!
//! Voice (when `voice` is on): the modem serves a second device, the voice side, through
//! [`Modem::submit_voice`] and [`Modem::poll_voice_event`]. One call at a time: `ATD<n>;`,
//! call state from the family's notifications (`+QIND: "ccinfo"`, `+CLCC`, `VOICE CALL:`)
//! or from polling `AT+CLCC`, and `NO CARRIER` / `BUSY` / `NO ANSWER` / `NO DIALTONE`. On
//! answer the attempt is `Sent { reference: "call-<n>" }` and the prompt's PCM frames come
//! out of [`Modem::poll_audio`], paced from the answer time. Key `1` is an `Inbound` "1"
//! (the ack) and ends the call; another key replays the prompt once; after the prompt the
//! driver waits `digit_wait_secs` for a key, then hangs up. Each call ends in exactly one
//! `Delivered` (played through or acknowledged) or `Failed` (busy, no answer, cut off:
//! retryable). A handset without DTMF reports is hung up after the prompt and its call is
//! `Delivered` with evidence starting "reached (no DTMF)": the ack must come by SMS.
//! `DriverCommand::Cancel` (the person acked on another bearer, the record closed, or the
//! router moved the work off this modem because it went down) removes a queued call or
//! SMS without a report (the router has recorded why), and hangs up a call dialling,
//! ringing or active with the family's command (`AT+CHUP`, `ATH`): `Failed { retryable:
//! false }`, reason `cancelled…`, unless the prompt had already played through or key 1
//! came (then `Delivered`). A call dialling or ringing when the network goes is put back
//! in front of the calls waiting and hung up *before* the modem reports itself down, so
//! the router's move-off finds it queued and nothing fails it for good. Cancelling an SMS whose
//! `AT+CMGS` is in flight cannot take it back: its outcome comes as usual.
//!
//! A modem in a call cannot send SMS: sends wait in the queue until the call is over (the
//! driver holds them; it does not fail them). When both kinds wait, a call goes after at
//! most [`SMS_PER_CALL`] messages so neither starves.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tocsin_channel::{DriverCommand, DriverEvent, Health, InboundReceipt, Outbound};
use tocsin_core::{Address, PhoneNumber, Timestamp};

use crate::cms::{CmeError, CmsError};
use crate::config::ModemConfig;
use crate::pdu::{self, SubmitOptions, Tpdu};
use crate::quirks::Quirks;
use crate::registration::{self, Domain, Registration};
use crate::reports::Awaited;
use crate::voice::{Call, CallStat, CallUrc, Phase, PromptSource, ToneSource};
use crate::wire::{self, CTRL_Z, ESC, FinalResult, Frame};

/// SMS sent at most between two calls when both kinds are waiting.
pub const SMS_PER_CALL: u32 = 4;
/// How often call state is polled with `AT+CLCC` on modems that do not push it.
const CALL_POLL: Duration = Duration::from_secs(1);
/// How often it is polled anyway on modems that push it, in case a notification is lost.
const CALL_POLL_SAFETY: Duration = Duration::from_secs(10);

/// One AT command the driver sends, with its timeout and retry count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `AT`: is anyone there? (retries lead with ESC to leave a stuck `> ` prompt).
    Sync,
    /// `ATE0`: no echo.
    EchoOff,
    /// `AT+CMEE=1`: numeric error codes.
    NumericErrors,
    /// `AT+CMGF=0`: PDU mode.
    PduMode,
    /// `AT+CPMS="ME","ME","ME"`: message storage.
    Storage,
    /// `AT+CNMI=2,1,0,1,0`: `+CMTI` for stored messages, `+CDS` for status reports.
    Indications,
    /// `AT+CSQ`: signal quality.
    SignalQuality,
    /// `AT+CREG=2`: report circuit-switched registration changes unsolicited (`+CREG:`).
    RegistrationUrcs,
    /// `AT+CGREG=2`: report GPRS registration changes unsolicited.
    GprsRegistrationUrcs,
    /// `AT+CEREG=2`: report EPS registration changes unsolicited; refused by non-LTE modems.
    EpsRegistrationUrcs,
    /// `AT+CREG?`: circuit-switched registration.
    Registration,
    /// `AT+CGREG?`: GPRS registration; an error just means the modem does not say.
    GprsRegistration,
    /// `AT+CEREG?`: EPS (LTE) registration; an error just means not an LTE modem.
    EpsRegistration,
    /// `AT+CMGL=4`: list every stored message.
    ListAll,
    /// `AT+CMGL=0`: list the stored messages not read yet (the modem marks them read).
    ListUnread,
    /// `AT+CMGR=<idx>`: read one stored message.
    Read(u32),
    /// `AT+CMGD=<idx>`: delete one stored message.
    Delete(u32),
    /// `AT+CMGD=<a>;+CMGD=<b>;...`: delete several on one line (V.250 concatenation).
    DeleteBatch(Vec<u32>),
    /// `AT+CMGR=<idx>` before deleting a released index again after a failed deletion
    /// line: the line may have deleted it already and the slot may hold a new reply.
    Recheck(u32),
    /// `AT+CMGS=<len>`: start a submit; the modem answers with the `> ` prompt.
    SubmitLength(usize),
    /// The hex PDU and Ctrl-Z after the prompt; the modem answers `+CMGS: <mr>`.
    SubmitBody(String),
    /// `ATD<number>;`: place a voice call.
    Dial(String),
    /// `ATH` or `AT+CHUP`: hang up.
    Hangup(&'static str),
    /// `AT+CLCC`: list current calls.
    ListCalls,
    /// A family's setup or audio command (`AT+QPCMV=1,0`, `AT+CPCMREG=1`, ...).
    Setup(&'static str),
}

/// The init sequence, in order.
const INIT: [Command; 14] = [
    Command::Sync,
    Command::EchoOff,
    Command::NumericErrors,
    Command::PduMode,
    Command::Storage,
    Command::Indications,
    Command::RegistrationUrcs,
    Command::GprsRegistrationUrcs,
    Command::EpsRegistrationUrcs,
    Command::SignalQuality,
    Command::Registration,
    Command::GprsRegistration,
    Command::EpsRegistration,
    Command::ListAll,
];

/// One health round: signal, then every registration domain (the last one ends the round).
const HEALTH_ROUND: [Command; 4] = [
    Command::SignalQuality,
    Command::Registration,
    Command::GprsRegistration,
    Command::EpsRegistration,
];

impl Command {
    /// The bytes to write.
    pub fn to_bytes(&self, storage: &str, retry: bool) -> Vec<u8> {
        let text = match self {
            Command::Sync if retry => return format!("{}\rAT\r", ESC as char).into_bytes(),
            Command::Sync => "AT".to_owned(),
            Command::EchoOff => "ATE0".to_owned(),
            Command::NumericErrors => "AT+CMEE=1".to_owned(),
            Command::PduMode => "AT+CMGF=0".to_owned(),
            Command::Storage => format!("AT+CPMS=\"{storage}\",\"{storage}\",\"{storage}\""),
            Command::Indications => "AT+CNMI=2,1,0,1,0".to_owned(),
            Command::SignalQuality => "AT+CSQ".to_owned(),
            Command::RegistrationUrcs => "AT+CREG=2".to_owned(),
            Command::GprsRegistrationUrcs => "AT+CGREG=2".to_owned(),
            Command::EpsRegistrationUrcs => "AT+CEREG=2".to_owned(),
            Command::Registration => "AT+CREG?".to_owned(),
            Command::GprsRegistration => "AT+CGREG?".to_owned(),
            Command::EpsRegistration => "AT+CEREG?".to_owned(),
            Command::ListAll => "AT+CMGL=4".to_owned(),
            Command::ListUnread => "AT+CMGL=0".to_owned(),
            Command::Read(i) | Command::Recheck(i) => format!("AT+CMGR={i}"),
            Command::Delete(i) => format!("AT+CMGD={i}"),
            Command::DeleteBatch(idxs) => {
                let mut line = "AT".to_owned();
                for (n, i) in idxs.iter().enumerate() {
                    if n > 0 {
                        line.push(';');
                    }
                    line.push_str(&format!("+CMGD={i}"));
                }
                line
            }
            Command::SubmitLength(n) => format!("AT+CMGS={n}"),
            Command::SubmitBody(hex) => {
                let mut b = hex.clone().into_bytes();
                b.push(CTRL_Z);
                return b;
            }
            Command::Dial(number) => format!("ATD{number};"),
            Command::Hangup(cmd) | Command::Setup(cmd) => (*cmd).to_owned(),
            Command::ListCalls => "AT+CLCC".to_owned(),
        };
        let mut b = text.into_bytes();
        b.push(b'\r');
        b
    }

    /// How long to wait for the response.
    pub fn timeout(&self, cfg: &ModemConfig) -> Duration {
        match self {
            Command::Sync => Duration::from_secs(2),
            Command::SubmitBody(_) => cfg.cmgs_timeout(),
            // Listing a full storage over a slow line takes a while.
            Command::ListAll | Command::ListUnread => cfg.command_timeout() * 3,
            // Some modems answer ATD only once the call is answered.
            Command::Dial(_) => {
                Duration::from_secs(cfg.quirks().ring_timeout_secs) + cfg.command_timeout()
            }
            _ => cfg.command_timeout(),
        }
    }

    /// How many times to send it again after a timeout. Never for a submit: resending
    /// could put the same warning out twice without the record knowing.
    pub fn retries(&self) -> u8 {
        match self {
            Command::Sync => 4,
            // Dialling twice could ring someone twice: never.
            Command::SubmitLength(_) | Command::SubmitBody(_) | Command::Dial(_) => 0,
            Command::ListAll | Command::ListUnread | Command::ListCalls => 1,
            _ => 2,
        }
    }

    /// The prefix of the information lines this command answers with.
    fn response_prefix(&self) -> Option<&'static str> {
        match self {
            Command::SignalQuality => Some("+CSQ:"),
            Command::Registration => Some("+CREG:"),
            Command::GprsRegistration => Some("+CGREG:"),
            Command::EpsRegistration => Some("+CEREG:"),
            Command::Storage => Some("+CPMS:"),
            Command::SubmitBody(_) => Some("+CMGS:"),
            Command::ListCalls => Some("+CLCC:"),
            _ => None,
        }
    }

    fn is_submit(&self) -> bool {
        matches!(self, Command::SubmitLength(_) | Command::SubmitBody(_))
    }

    /// The registration domain this command queries.
    fn registration_domain(&self) -> Option<Domain> {
        match self {
            Command::Registration => Some(Domain::Cs),
            Command::GprsRegistration => Some(Domain::Ps),
            Command::EpsRegistration => Some(Domain::Eps),
            _ => None,
        }
    }
}

/// The state machine's timers; each indexes one deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// The in-flight command's response is due.
    Response,
    /// Time for the next signal/registration poll.
    Health,
    /// Time to try initialising again after the modem did not answer.
    Reinit,
    /// A concatenated inbound text waits for its remaining parts.
    Reassembly,
    /// A lone announced reply has waited long enough for others: read it.
    InboundBatch,
}

const TIMERS: [Timer; 5] = [
    Timer::Response,
    Timer::Health,
    Timer::Reinit,
    Timer::Reassembly,
    Timer::InboundBatch,
];

/// Where the conversation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// The port is closed.
    Down,
    /// The port is open but the modem did not answer; waiting to try again.
    Backoff,
    /// Running init step `n`.
    Init(usize),
    /// Initialised; sends run.
    Ready,
}

/// The command awaiting its final result.
#[derive(Debug)]
struct InFlight {
    cmd: Command,
    tries_left: u8,
    lines: Vec<String>,
    pdus: Vec<(String, String)>,
    /// For a listing: the announced indexes it was sent for (it answers for them).
    snapshot: Vec<u32>,
}

/// Reads of one stored message that may fail before it is left for the next session's
/// `AT+CMGL=4`.
const READ_TRIES: u8 = 3;

/// What the driver knows of the modem's message storage in this port session: what was
/// announced, reported, released, and is being deleted. The rules that keep a reply from
/// being lost or reported twice live here:
/// - a stored message is deleted only after the router released it (committed);
/// - an index reported and not yet released is never reported again in the session, even
///   when the modem re-announces it;
/// - a listing reports nothing reported or released already.
#[derive(Debug, Default)]
struct Inbox {
    /// Announced by `+CMTI`, not yet read, with when it may be read on its own: at once
    /// when it came while a command was in flight (it has waited for company already),
    /// else after `inbound_batch_ms`.
    unread: BTreeMap<u32, Timestamp>,
    /// To read one by one with `AT+CMGR`: announced, but a listing of unread messages did
    /// not show them (read already, e.g. by an `AT+CMGR` whose answer was lost).
    read_each: BTreeSet<u32>,
    /// Failed reads by index (a `+CMS ERROR` other than an empty index).
    read_failures: HashMap<u32, u8>,
    /// Reported to the router, not yet released.
    reported: HashSet<u32>,
    /// Released (or ours to drop: status reports, operator notices), not yet confirmed
    /// deleted.
    released: HashSet<u32>,
    /// Released indexes waiting for their `AT+CMGD`, in release order.
    to_delete: VecDeque<u32>,
    /// Indexes to delete one per line: checked after a failed line, or the line was
    /// refused.
    delete_singles: VecDeque<u32>,
    /// Released indexes of a failed deletion line, to read again before deleting: the
    /// commands before the failing one ran, so the slot may be empty or hold a new reply.
    recheck: VecDeque<u32>,
    /// The PDU of each reported or released index, to tell the released message from a
    /// new one in the same slot.
    pdu_at: HashMap<u32, String>,
    /// The modem answered a concatenated line with `ERROR`: one command per line.
    concatenation_refused: bool,
    /// The modem refused `AT+CMGL=0`: bursts are listed with `AT+CMGL=4`.
    unread_listing_refused: bool,
}

impl Inbox {
    /// Forgets the port session (indexes mean nothing across a reopen: the listing at
    /// init reports everything stored again). What the modem refused stays known.
    fn reset(&mut self) {
        *self = Inbox {
            concatenation_refused: self.concatenation_refused,
            unread_listing_refused: self.unread_listing_refused,
            ..Inbox::default()
        };
    }

    /// FNV-1a over the PDUs stored at `idxs` (in order), or `None` if one is unknown.
    fn fingerprint(&self, idxs: &[u32]) -> Option<u64> {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for idx in idxs {
            for b in self.pdu_at.get(idx)?.bytes().chain([b'|']) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        Some(h)
    }

    /// Whether `idx` waits for an `AT+CMGD` not yet sent.
    fn delete_queued(&self, idx: u32) -> bool {
        self.to_delete.contains(&idx)
            || self.delete_singles.contains(&idx)
            || self.recheck.contains(&idx)
    }

    /// Whether a listing or read may report the message at `idx`.
    fn reportable(&self, idx: u32) -> bool {
        !self.reported.contains(&idx) && !self.released.contains(&idx)
    }

    /// The message at `idx` was read (reported, or found to be none of ours, or gone).
    fn read_done(&mut self, idx: u32) {
        self.unread.remove(&idx);
        self.read_each.remove(&idx);
        self.read_failures.remove(&idx);
    }
}

/// A lone announced reply waits for others: start nothing.
struct Hold;

/// What to do next about announced replies.
enum ReadPlan {
    /// Send this read or listing now.
    Now(Command),
    /// One reply waits for company until then.
    Wait(Timestamp),
    /// Nothing announced.
    Idle,
}

/// A send whose parts are going out.
#[derive(Debug)]
struct ActiveSend {
    out: Outbound,
    parts: Vec<pdu::SubmitPart>,
    next: usize,
    mrs: Vec<u8>,
    /// The router cancelled it while a part was on the line: if that part finds no
    /// network, the rest is dropped instead of waiting.
    cancelled: bool,
}

/// Stored parts of a concatenated inbound text: which storage indexes and PDUs.
#[derive(Debug, Default)]
struct PartRecords {
    parts: Vec<(u8, u32, String)>,
}

/// How long to wait before initialising again after the modem stopped answering.
const BACKOFF_MIN: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The modem conversation. See the module documentation.
pub struct Modem {
    cfg: ModemConfig,
    link: Link,
    decoder: wire::Decoder,
    current: Option<InFlight>,
    internal: VecDeque<Command>,
    queue: VecDeque<Outbound>,
    active: Option<ActiveSend>,
    /// TP-MR → attempt, for status reports.
    awaited: Awaited,
    reassembler: pdu::Reassembler,
    part_records: HashMap<(String, u16, u8), PartRecords>,
    /// Stored messages: announced, reported, released, being deleted.
    inbox: Inbox,
    /// Commands are being taken in a batch ([`Self::submit_all`]): nothing starts yet.
    taking: bool,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<DriverEvent>,
    timers: [Option<Timestamp>; 5],
    health: Health,
    last_health: Option<Health>,
    /// Network registration: while there is none, no send or call starts.
    reg: Registration,
    /// `health.last_error` says why the network is missing (cleared when it is back).
    reg_error: bool,
    backoff: tocsin_serial::io::Backoff,
    concat_ref: u16,
    /// The init sequence: the SMS steps, then the family's voice setup.
    init: Vec<Command>,
    quirks: Quirks,
    status_reports: bool,
    prompts: Arc<dyn PromptSource>,
    /// Calls waiting.
    voice_queue: VecDeque<Outbound>,
    /// The call in progress (one at a time).
    call: Option<Call>,
    /// Commands of the call in progress, after internal work.
    call_cmds: VecDeque<Command>,
    next_call_poll: Option<Timestamp>,
    call_seq: u64,
    sms_since_call: u32,
    voice_events: VecDeque<DriverEvent>,
    audio: VecDeque<Vec<u8>>,
    audio_up: bool,
    audio_error: Option<String>,
}

impl Modem {
    /// A modem whose port is not open yet; call [`Self::handle_port_opened`] when it is.
    /// Calls play the built-in tone prompt.
    pub fn new(cfg: ModemConfig, now: Timestamp) -> Self {
        let tone = Arc::new(ToneSource::new(cfg.prompt_secs));
        Self::with_prompts(cfg, now, tone)
    }

    /// Like [`Self::new`], with calls playing what `prompts` renders.
    pub fn with_prompts(cfg: ModemConfig, _now: Timestamp, prompts: Arc<dyn PromptSource>) -> Self {
        let mut init = INIT.to_vec();
        if cfg.voice {
            init.extend(cfg.family.voice_setup().iter().map(|c| Command::Setup(c)));
        }
        let quirks = cfg.quirks();
        let status_reports = cfg.status_report && quirks.status_reports;
        let awaited = Awaited::new(&cfg.default_country);
        Modem {
            cfg,
            link: Link::Down,
            decoder: wire::Decoder::new(),
            current: None,
            internal: VecDeque::new(),
            queue: VecDeque::new(),
            active: None,
            awaited,
            reassembler: pdu::Reassembler::default(),
            part_records: HashMap::new(),
            inbox: Inbox::default(),
            taking: false,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            timers: [None; 5],
            health: Health::default(),
            last_health: None,
            reg: Registration::default(),
            reg_error: false,
            backoff: tocsin_serial::io::Backoff::between(BACKOFF_MIN, BACKOFF_MAX),
            concat_ref: 0,
            init,
            quirks,
            status_reports,
            prompts,
            voice_queue: VecDeque::new(),
            call: None,
            call_cmds: VecDeque::new(),
            next_call_poll: None,
            call_seq: 0,
            sms_since_call: 0,
            voice_events: VecDeque::new(),
            audio: VecDeque::new(),
            audio_up: false,
            audio_error: None,
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ModemConfig {
        &self.cfg
    }

    /// Whether the modem is initialised and sends can run.
    pub fn is_ready(&self) -> bool {
        self.link == Link::Ready
    }

    /// Sends waiting (not counting the one going out).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Calls waiting (not counting the one in progress).
    pub fn calls_queued(&self) -> usize {
        self.voice_queue.len()
    }

    /// Whether a call is in progress (SMS wait meanwhile).
    pub fn in_call(&self) -> bool {
        self.call.is_some()
    }

    /// A command for the voice side from the router.
    pub fn submit_voice(&mut self, now: Timestamp, cmd: DriverCommand) {
        match cmd {
            DriverCommand::Send(out) => {
                if !self.cfg.voice {
                    self.voice_events.push_back(DriverEvent::Failed {
                        attempt: out.attempt,
                        retryable: false,
                        reason: "voice is not enabled on this modem".to_owned(),
                    });
                } else if self.voice_queue.len() >= self.cfg.queue_limit {
                    self.voice_events.push_back(DriverEvent::Failed {
                        attempt: out.attempt,
                        retryable: true,
                        reason: format!("call queue full ({} waiting)", self.voice_queue.len()),
                    });
                } else {
                    self.voice_events.push_back(DriverEvent::Accepted {
                        attempt: out.attempt,
                    });
                    self.voice_queue.push_back(out);
                }
            }
            DriverCommand::Cancel(attempt) => {
                // A queued call is dropped without a report, as a queued SMS is.
                if let Some(pos) = self.voice_queue.iter().position(|o| o.attempt == attempt) {
                    self.voice_queue.remove(pos);
                } else if self.call.as_ref().is_some_and(|c| c.out.attempt == attempt) {
                    self.cancel_call(now);
                }
            }
            // A call leaves nothing on the device to release.
            DriverCommand::Release(_) => {}
            DriverCommand::SendFrame(f) => self.voice_events.push_back(f.refused()),
        }
        self.pump(now);
    }

    /// The next fact for the router about the voice side.
    pub fn poll_voice_event(&mut self) -> Option<DriverEvent> {
        self.voice_events.pop_front()
    }

    /// The next 20 ms PCM frame (320 bytes, 16-bit LE, 8 kHz) for the audio port.
    pub fn poll_audio(&mut self) -> Option<Vec<u8>> {
        self.audio.pop_front()
    }

    /// The audio port opened (`Ok`) or failed (`Err` with the reason). Calls are refused
    /// (retryable) while it is not open: a call nobody can hear is no warning.
    pub fn handle_audio_port(&mut self, now: Timestamp, status: Result<(), String>) {
        match status {
            Ok(()) => {
                self.audio_up = true;
                self.audio_error = None;
            }
            Err(e) => {
                self.audio_up = false;
                self.audio_error = Some(e);
            }
        }
        self.pump(now);
    }

    /// The port is open: initialise the modem.
    pub fn handle_port_opened(&mut self, now: Timestamp) {
        self.decoder.clear();
        self.current = None;
        self.internal.clear();
        self.inbox.reset();
        self.timers = [None; 5];
        // Registration is asked again at init; what the last session knew is stale.
        self.reg = Registration::default();
        self.link = Link::Init(0);
        self.pump(now);
    }

    /// The port is gone (read error, EOF, hang-up). Queued sends stay queued; a submit in
    /// flight is reported failed and retryable because it may or may not have gone out.
    pub fn handle_port_lost(&mut self, now: Timestamp) {
        let submitting = self.current.as_ref().map(|c| c.cmd.clone());
        self.current = None;
        if let Some(active) = self.active.take() {
            let body_in_flight = matches!(submitting, Some(Command::SubmitBody(_)));
            if active.mrs.is_empty() && !body_in_flight {
                // Nothing of it reached the modem: it keeps its place in line.
                self.queue.push_front(active.out);
            } else {
                self.awaited.forget(active.out.attempt);
                self.events.push_back(DriverEvent::Failed {
                    attempt: active.out.attempt,
                    retryable: true,
                    reason: "port lost during submit; the message may have gone out".to_owned(),
                });
            }
        }
        if let Some(call) = self.call.as_mut() {
            call.end_media("modem port lost during the call");
            if !(call.acked || call.record.listened) {
                call.failure = Some((true, "modem port lost during the call".to_owned()));
            }
            self.finish_call(now);
        }
        self.link = Link::Down;
        self.internal.clear();
        self.decoder.clear();
        self.timers = [None; 5];
        self.inbox.reset();
        self.part_records.clear();
        self.reassembler = pdu::Reassembler::default();
        self.health.up = false;
        self.health.last_error = Some("port lost".to_owned());
        self.reg_error = false;
        self.note_health();
    }

    /// Opening the port failed: report the device down with the reason (once per reason).
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
        while let Some(frame) = self.decoder.next_frame() {
            match frame {
                Ok(frame) => self.on_frame(now, frame),
                Err(m) => self.events.push_back(DriverEvent::Unrecognized {
                    raw: String::from_utf8_lossy(&m.raw).into_owned(),
                }),
            }
        }
        self.pump(now);
    }

    /// A command from the router.
    pub fn submit(&mut self, now: Timestamp, cmd: DriverCommand) {
        match cmd {
            DriverCommand::Send(out) => {
                if self.queue.len() >= self.cfg.queue_limit {
                    self.events.push_back(DriverEvent::Failed {
                        attempt: out.attempt,
                        retryable: true,
                        reason: format!("modem queue full ({} waiting)", self.queue.len()),
                    });
                } else {
                    self.events.push_back(DriverEvent::Accepted {
                        attempt: out.attempt,
                    });
                    self.queue.push_back(out);
                }
            }
            DriverCommand::Cancel(attempt) => {
                // Dropped without a report: the router has recorded why (the record became
                // final, or the device went down and the send moves elsewhere). A
                // `Failed { retryable: false }` here would end the route of a send that is
                // being moved to another device.
                let on_line = self.current.as_ref().is_some_and(|c| c.cmd.is_submit());
                if let Some(pos) = self.queue.iter().position(|o| o.attempt == attempt) {
                    self.queue.remove(pos);
                } else if let Some(active) = self.active.as_mut()
                    && active.out.attempt == attempt
                {
                    if on_line || self.reg.usable() {
                        // Handed to the modem: it is reported as usual, unless the part on
                        // the line finds no network (then the rest is dropped).
                        active.cancelled = true;
                    } else {
                        // Waiting for the network with some parts out: the rest never goes.
                        self.awaited.forget(attempt);
                        self.active = None;
                    }
                }
            }
            DriverCommand::SendFrame(f) => self.events.push_back(f.refused()),
            DriverCommand::Release(receipt) => {
                let (idxs, fp) = receipt_parts(&receipt);
                if let Some(fp) = fp
                    && self.inbox.fingerprint(&idxs) != Some(fp)
                {
                    // The slots hold something else now (or nothing this session has
                    // read): a release from before a reopen. What it released is either
                    // deleted or listed and reported again, and released again then.
                    tracing::debug!(?idxs, "stale release: the slots hold another message");
                    return self.pump(now);
                }
                for idx in idxs {
                    if self.inbox.unread.contains_key(&idx) {
                        // A new message was announced in that slot: the released one is
                        // gone already, and this one is not committed.
                        tracing::debug!(idx, "stale release for an index holding a new message");
                        continue;
                    }
                    self.release_index(idx);
                }
            }
        }
        self.pump(now);
    }

    /// Several commands from the router at once (what the io task found waiting): taken in
    /// order, then the line is pumped once, so a burst of releases goes out as one
    /// concatenated `AT+CMGD` line instead of one line for the first and one for the rest.
    pub fn submit_all(&mut self, now: Timestamp, cmds: impl IntoIterator<Item = DriverCommand>) {
        // `submit` pumps after each command; hold the line until all are in.
        self.taking = true;
        for cmd in cmds {
            self.submit(now, cmd);
        }
        self.taking = false;
        self.pump(now);
    }

    /// Time passed; act on whatever deadline is due.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        for timer in TIMERS {
            let due = self.timers[timer as usize].is_some_and(|t| t <= now);
            if !due {
                continue;
            }
            self.timers[timer as usize] = None;
            match timer {
                Timer::Response => self.on_response_timeout(now),
                Timer::Health => {
                    if self.link == Link::Ready {
                        for cmd in HEALTH_ROUND {
                            if !self.internal.contains(&cmd) {
                                self.internal.push_back(cmd);
                            }
                        }
                    }
                    self.set_timer(Timer::Health, now + self.cfg.health_interval());
                }
                Timer::Reinit => {
                    if self.link == Link::Backoff {
                        self.link = Link::Init(0);
                    }
                }
                Timer::Reassembly => self.expire_partials(now),
                // The lone reply is read by the pump below.
                Timer::InboundBatch => {}
            }
        }
        if let Some(t) = self.reassembler.poll_timeout() {
            self.set_timer(Timer::Reassembly, t);
        }
        self.call_timeout(now);
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
        let call = self.call.as_ref().and_then(|c| self.call_deadline(c));
        self.timers.iter().flatten().copied().chain(call).min()
    }

    fn set_timer(&mut self, t: Timer, at: Timestamp) {
        self.timers[t as usize] = Some(at);
    }

    /// Starts the next command if none is in flight.
    fn pump(&mut self, now: Timestamp) {
        if self.taking {
            return;
        }
        while self.current.is_none() {
            let next = match self.link {
                Link::Down | Link::Backoff => return,
                Link::Init(i) => match self.init.get(i) {
                    Some(cmd) => cmd.clone(),
                    None => {
                        self.init_done(now);
                        continue;
                    }
                },
                Link::Ready => match self.next_ready_command(now) {
                    Some(cmd) => cmd,
                    None => return,
                },
            };
            self.issue(now, next, None);
        }
    }

    /// Internal work first (sync, health polls), then reading and deleting stored
    /// messages, then the call in progress (SMS wait while it is up), then the next part of
    /// the send going out, then a new call or a new send.
    fn next_ready_command(&mut self, now: Timestamp) -> Option<Command> {
        if let Some(cmd) = self.internal.pop_front() {
            return Some(cmd);
        }
        match self.next_storage_command(now) {
            Ok(Some(cmd)) => return Some(cmd),
            // A lone reply waits a few ms for company; nothing long starts meanwhile.
            Err(Hold) => return None,
            Ok(None) => {}
        }
        if self.call.is_some() {
            return self.call_cmds.pop_front();
        }
        if !self.reg.usable() {
            // No network: every submit would fail with +CMS ERROR 331 and every dial with
            // +CME ERROR 30. Sends and calls wait (a message cut between parts resumes
            // with the part that found no network).
            return None;
        }
        loop {
            if let Some(active) = &self.active {
                let part = active.parts.get(active.next)?;
                return Some(Command::SubmitLength(part.at_length()));
            }
            let call_turn = !self.voice_queue.is_empty()
                && (self.queue.is_empty() || self.sms_since_call >= SMS_PER_CALL);
            if call_turn {
                if let Some(dial) = self.start_call(now) {
                    return Some(dial);
                }
                continue;
            }
            let out = self.queue.pop_front()?;
            self.sms_since_call = self.sms_since_call.saturating_add(1);
            match self.encode(&out) {
                Ok(parts) if !parts.is_empty() => {
                    self.active = Some(ActiveSend {
                        out,
                        parts,
                        next: 0,
                        mrs: Vec::new(),
                        cancelled: false,
                    });
                }
                Ok(_) => self.events.push_back(DriverEvent::Failed {
                    attempt: out.attempt,
                    retryable: false,
                    reason: "nothing to send".to_owned(),
                }),
                Err(reason) => self.events.push_back(DriverEvent::Failed {
                    attempt: out.attempt,
                    retryable: false,
                    reason,
                }),
            }
        }
    }

    fn encode(&mut self, out: &Outbound) -> Result<Vec<pdu::SubmitPart>, String> {
        let Address::Phone(number) = &out.to else {
            return Err(format!("{} is not a phone number", out.to));
        };
        self.concat_ref = self.concat_ref.wrapping_add(1);
        let opts = SubmitOptions {
            status_report: self.status_reports && out.want_report,
            validity: Some(self.cfg.validity),
            concat_ref: self.concat_ref,
            ref16: false,
        };
        pdu::encode_submit(number, &out.text, &opts).map_err(|e| format!("cannot encode SMS: {e}"))
    }

    fn issue(&mut self, now: Timestamp, cmd: Command, tries_left: Option<u8>) {
        let retry = tries_left.is_some();
        let tries_left = tries_left.unwrap_or_else(|| cmd.retries());
        self.transmit
            .push_back(cmd.to_bytes(&self.cfg.storage, retry));
        self.set_timer(Timer::Response, now + cmd.timeout(&self.cfg));
        let snapshot = match cmd {
            Command::ListUnread => self.inbox.unread.keys().copied().collect(),
            Command::ListAll => self
                .inbox
                .unread
                .keys()
                .chain(self.inbox.read_each.iter())
                .copied()
                .collect(),
            _ => Vec::new(),
        };
        self.current = Some(InFlight {
            cmd,
            tries_left,
            lines: Vec::new(),
            pdus: Vec::new(),
            snapshot,
        });
    }

    fn on_frame(&mut self, now: Timestamp, frame: Frame) {
        match frame {
            Frame::Echo(_) => {}
            Frame::Prompt => self.on_prompt(now),
            Frame::Final(result) => match self.current.take() {
                Some(inflight) => {
                    self.timers[Timer::Response as usize] = None;
                    self.complete(now, inflight, result);
                }
                // A late answer to a command that already timed out.
                None => tracing::debug!(?result, "final result with no command in flight"),
            },
            Frame::Line(line) => self.on_line(now, line),
            Frame::Pdu { header, pdu } => self.on_pdu(now, header, pdu),
        }
    }

    fn on_prompt(&mut self, now: Timestamp) {
        let is_length = matches!(
            self.current.as_ref().map(|c| &c.cmd),
            Some(Command::SubmitLength(_))
        );
        let hex = self
            .active
            .as_ref()
            .and_then(|a| a.parts.get(a.next))
            .map(|p| p.hex_with_default_smsc());
        match (is_length, hex) {
            (true, Some(hex)) => {
                self.current = None;
                self.issue(now, Command::SubmitBody(hex), None);
            }
            _ => self.events.push_back(DriverEvent::Unrecognized {
                raw: "> ".to_owned(),
            }),
        }
    }

    fn on_line(&mut self, now: Timestamp, line: String) {
        if let Some(rest) = line
            .strip_prefix("+CMTI:")
            .or_else(|| line.strip_prefix("+CDSI:"))
        {
            // `+CMTI: "ME",3`: a message was stored; read it (with the others waiting).
            match rest
                .rsplit(',')
                .next()
                .and_then(|i| i.trim().parse::<u32>().ok())
            {
                Some(idx) => self.on_announced(now, idx),
                None => self
                    .events
                    .push_back(DriverEvent::Unrecognized { raw: line }),
            }
            return;
        }
        if let Some(domain) = Domain::of_line(&line) {
            let querying = self
                .current
                .as_ref()
                .is_some_and(|c| c.cmd.registration_domain() == Some(domain));
            match registration::parse(&line) {
                Some(r) if r.solicited && querying => {
                    if let Some(current) = &mut self.current {
                        current.lines.push(line);
                    }
                }
                // Pushed (`AT+CREG=2`), or a late answer to a query that timed out: news
                // either way.
                Some(r) => self.on_registration(now, r),
                None => self
                    .events
                    .push_back(DriverEvent::Unrecognized { raw: line }),
            }
            return;
        }
        if let Some(urc) = crate::voice::parse_call_urc(&line) {
            if let Some(current) = &mut self.current
                && current.cmd == Command::ListCalls
                && line.starts_with("+CLCC:")
            {
                current.lines.push(line.clone());
            }
            self.on_call_urc(now, urc, line);
            return;
        }
        if let Some(current) = &mut self.current
            && current
                .cmd
                .response_prefix()
                .is_some_and(|p| line.starts_with(p))
        {
            current.lines.push(line);
            return;
        }
        self.events
            .push_back(DriverEvent::Unrecognized { raw: line });
    }

    fn on_pdu(&mut self, now: Timestamp, header: String, hex: String) {
        if header.starts_with("+CDS:") {
            self.on_status_report_hex(&hex);
            return;
        }
        if header.starts_with("+CMT:") {
            // Routed straight to us (not stored): nothing to release.
            self.on_stored(now, None, &hex);
            return;
        }
        if let Some(current) = &mut self.current {
            let wanted = match current.cmd {
                Command::Read(_) | Command::Recheck(_) => header.starts_with("+CMGR:"),
                Command::ListAll | Command::ListUnread => header.starts_with("+CMGL:"),
                _ => false,
            };
            if wanted {
                current.pdus.push((header, hex));
                return;
            }
        }
        self.events.push_back(DriverEvent::Unrecognized {
            raw: format!("{header} {hex}"),
        });
    }

    fn complete(&mut self, now: Timestamp, inflight: InFlight, result: FinalResult) {
        let ok = result == FinalResult::Ok;
        if let Link::Init(step) = self.link {
            if inflight.cmd.is_submit() {
                return;
            }
            self.absorb(now, &inflight, result);
            // Only sync and PDU mode are essential; the rest degrade gracefully (e.g. an
            // older modem without `+CEREG`).
            let essential = matches!(inflight.cmd, Command::Sync | Command::PduMode);
            if essential && !ok && inflight.cmd != Command::Sync {
                self.init_failed(
                    now,
                    format!("{:?} refused: {}", inflight.cmd, wire::final_text(result)),
                );
                return;
            }
            // Registration queries and reports a modem may not offer (not LTE, no GPRS).
            let optional = matches!(
                inflight.cmd,
                Command::RegistrationUrcs
                    | Command::GprsRegistrationUrcs
                    | Command::EpsRegistrationUrcs
                    | Command::GprsRegistration
                    | Command::EpsRegistration
            );
            if !ok && !essential && !optional {
                tracing::warn!(cmd = ?inflight.cmd, result = %wire::final_text(result), "init step refused");
            }
            self.link = Link::Init(step + 1);
            return;
        }
        match &inflight.cmd {
            Command::Dial(_) => self.dial_done(now, result),
            Command::Hangup(_) => {
                if !ok {
                    tracing::warn!(result = %wire::final_text(result), "hang-up refused");
                }
                // Over either way: a refused hang-up means there was no call left.
                if self
                    .call
                    .as_ref()
                    .is_some_and(|c| c.phase == Phase::HangingUp)
                {
                    self.finish_call(now);
                }
            }
            Command::ListCalls => self.calls_listed(now, &inflight, ok),
            Command::Delete(_) | Command::DeleteBatch(_) => self.deleted(&inflight.cmd, result),
            Command::Recheck(i) => self.rechecked(now, *i, &inflight, result),
            Command::ListAll | Command::ListUnread | Command::Read(_) => {
                self.stored_read(now, &inflight, result);
            }
            Command::Setup(cmd) => {
                if !ok {
                    tracing::warn!(%cmd, result = %wire::final_text(result), "voice command refused");
                }
            }
            Command::SubmitLength(_) => {
                // The modem refused the submit instead of prompting.
                self.fail_active(result);
            }
            Command::SubmitBody(_) => {
                if !ok {
                    self.fail_active(result);
                    return;
                }
                let mr = inflight
                    .lines
                    .iter()
                    .find_map(|l| l.strip_prefix("+CMGS:"))
                    .and_then(|v| v.split(',').next())
                    .and_then(|v| v.trim().parse::<u8>().ok());
                self.part_sent(now, mr);
            }
            _ => {
                self.absorb(now, &inflight, result);
                if inflight.cmd == Command::EpsRegistration {
                    // End of a health round.
                    self.reg.round_done();
                    self.requeue_unanswered_call(now);
                    self.refresh_health();
                    self.note_health();
                }
            }
        }
    }

    /// Takes in the information a non-submit command returned.
    fn absorb(&mut self, now: Timestamp, inflight: &InFlight, result: FinalResult) {
        let ok = result == FinalResult::Ok;
        match &inflight.cmd {
            Command::SignalQuality => {
                let rssi = inflight
                    .lines
                    .iter()
                    .find_map(|l| l.strip_prefix("+CSQ:"))
                    .and_then(|v| v.split(',').next())
                    .and_then(|v| v.trim().parse::<u8>().ok());
                self.health.signal = rssi.filter(|r| *r <= 31);
            }
            Command::Registration | Command::GprsRegistration | Command::EpsRegistration => {
                let Some(domain) = inflight.cmd.registration_domain() else {
                    return;
                };
                // A refused query (not an LTE modem, no GPRS) says nothing about the domain.
                let stat = inflight
                    .lines
                    .iter()
                    .filter_map(|l| registration::parse(l))
                    .find(|r| r.domain == domain && r.solicited)
                    .map(|r| r.stat)
                    .filter(|_| ok);
                self.reg.set(domain, stat);
            }
            Command::ListAll | Command::ListUnread | Command::Read(_) => {
                self.stored_read(now, inflight, result);
            }
            _ => {}
        }
    }

    fn part_sent(&mut self, now: Timestamp, mr: Option<u8>) {
        let Some(active) = &mut self.active else {
            return;
        };
        // A modem that omits the MR still sent the part; it just cannot be matched.
        if let Some(mr) = mr {
            active.mrs.push(mr);
            // Awaited from now: a report may come before the last part is out.
            if self.status_reports
                && active.out.want_report
                && let Address::Phone(to) = &active.out.to
            {
                self.awaited.part_sent(active.out.attempt, mr, to, now);
            }
        }
        active.next += 1;
        if active.next < active.parts.len() {
            return;
        }
        let Some(done) = self.active.take() else {
            return;
        };
        let attempt = done.out.attempt;
        let reference = done
            .mrs
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(",");
        self.health.sent += 1;
        self.events
            .push_back(DriverEvent::Sent { attempt, reference });
        // Every report may have come already (they can be quick).
        if let Some(delivered) = self.awaited.complete(attempt) {
            self.events.push_back(delivered);
        }
    }

    fn fail_active(&mut self, result: FinalResult) {
        let Some(active) = self.active.take() else {
            return;
        };
        if let Some(why) = no_network(result) {
            // The part did not go out: there is no network. The modem is down until it
            // registers again; the send waits (the router moves it to another device or
            // holds it) instead of spending one of its tries a second at a time.
            tracing::warn!(%why, attempt = %active.out.attempt, "no network; sends wait");
            self.reg.lost(why);
            if active.cancelled {
                self.awaited.forget(active.out.attempt);
            } else {
                if active.mrs.is_empty() {
                    self.queue.push_front(active.out);
                } else {
                    // Some parts went out: the rest follows, starting with this one, so
                    // the handset can still join them.
                    self.active = Some(active);
                }
            }
            self.refresh_health();
            self.note_health();
            return;
        }
        let (retryable, reason) = match result {
            FinalResult::CmsError(n) => {
                let e = CmsError::from_code(n);
                (e.is_retryable(), format!("+CMS ERROR: {e}"))
            }
            FinalResult::CmeError(n) => {
                let e = CmeError::from_code(n);
                (e.is_retryable(), format!("+CME ERROR: {e}"))
            }
            FinalResult::Error => (true, "ERROR".to_owned()),
            FinalResult::Ok => (true, "OK without +CMGS".to_owned()),
        };
        self.awaited.forget(active.out.attempt);
        let reason = if active.mrs.is_empty() {
            reason
        } else {
            format!(
                "{reason} after {} of {} parts went out",
                active.mrs.len(),
                active.parts.len()
            )
        };
        self.health.last_error = Some(reason.clone());
        self.events.push_back(DriverEvent::Failed {
            attempt: active.out.attempt,
            retryable,
            reason,
        });
    }

    fn on_response_timeout(&mut self, now: Timestamp) {
        let Some(inflight) = self.current.take() else {
            return;
        };
        if inflight.tries_left > 0 {
            let tries = inflight.tries_left - 1;
            self.issue(now, inflight.cmd, Some(tries));
            return;
        }
        let what = format!("no answer to {:?}", short(&inflight.cmd));
        if self.link == Link::Ready {
            match inflight.cmd {
                Command::Dial(_) => {
                    self.hang_up(
                        now,
                        "no answer to ATD",
                        Some((true, "the modem did not answer ATD".to_owned())),
                    );
                }
                Command::Hangup(_) => {
                    if let Some(c) = self.call.as_mut() {
                        c.record.ended.push_str(" (hang-up not confirmed)");
                    }
                    self.finish_call(now);
                }
                _ => {}
            }
        }
        match self.link {
            Link::Init(_) => self.init_failed(now, what),
            _ if inflight.cmd == Command::Sync => self.init_failed(now, what),
            _ => {
                if let Some(active) = self.active.take() {
                    if inflight.cmd.is_submit() {
                        let reason = if matches!(inflight.cmd, Command::SubmitBody(_)) {
                            "timeout waiting for +CMGS; the message may have gone out".to_owned()
                        } else {
                            "timeout waiting for the > prompt".to_owned()
                        };
                        self.awaited.forget(active.out.attempt);
                        self.events.push_back(DriverEvent::Failed {
                            attempt: active.out.attempt,
                            retryable: true,
                            reason,
                        });
                    } else {
                        self.active = Some(active);
                    }
                }
                self.health.last_error = Some(what);
                // A read that never answered must not lose a reply (the modem may have
                // marked it read): list everything stored once the modem is back in step.
                if matches!(inflight.cmd, Command::Read(_) | Command::ListUnread)
                    && !self.internal.contains(&Command::ListAll)
                {
                    self.internal.push_front(Command::ListAll);
                }
                // Deletions not confirmed go again (an index already gone answers 321).
                match &inflight.cmd {
                    Command::Delete(i) => self.inbox.delete_singles.push_front(*i),
                    Command::Recheck(i) => self.inbox.recheck.push_front(*i),
                    Command::DeleteBatch(idxs) => {
                        for i in idxs.iter().rev() {
                            self.inbox.to_delete.push_front(*i);
                        }
                    }
                    _ => {}
                }
                // The modem may be stuck at the prompt or mid-response: resynchronise
                // before anything else goes out.
                self.internal.push_front(Command::Sync);
            }
        }
    }

    fn init_failed(&mut self, now: Timestamp, why: String) {
        tracing::warn!(%why, "modem initialisation failed");
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
        self.set_timer(Timer::Health, now + self.cfg.health_interval());
        self.refresh_health();
        self.note_health();
    }

    /// Recomputes `up` (initialised and on a network: any domain registered, or a modem
    /// that cannot tell and whose last send found a network) and `registered`. Reported by
    /// [`Self::note_health`] once ready; during init only the fields change.
    fn refresh_health(&mut self) {
        self.health.registered = self.reg.registered();
        if self.link != Link::Ready {
            return;
        }
        match self.reg.why_not() {
            Some(why) => {
                self.health.up = false;
                self.health.last_error = Some(why);
                self.reg_error = true;
            }
            None => {
                self.health.up = true;
                if std::mem::take(&mut self.reg_error) {
                    self.health.last_error = None;
                }
            }
        }
    }

    /// The network is gone while a call is dialling or ringing: nobody can answer it now.
    /// Its attempt goes back to the front of the calls waiting and the modem hangs up the
    /// call, before the device is reported down: the router then moves the attempt off
    /// this modem and its cancel finds it queued (dropped, no report). Were the call still
    /// live, the cancel would end it `Failed { retryable: false }` and its route with it.
    fn requeue_unanswered_call(&mut self, now: Timestamp) {
        if self.reg.usable() {
            return;
        }
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.record.answered_at.is_some()
            || call.cancelled
            || call.detached
            || call.phase == Phase::HangingUp
        {
            return;
        }
        call.detached = true;
        tracing::debug!(
            seq = call.record.seq,
            "network gone while ringing; call queued again"
        );
        self.voice_queue.push_front(call.out.clone());
        self.hang_up(now, "network lost before answer", None);
    }

    /// A registration report: a pushed `+CREG: <stat>` or a late query answer. The
    /// network may have gone (sends stop) or come back (they resume).
    fn on_registration(&mut self, now: Timestamp, report: registration::Report) {
        self.reg.set(report.domain, Some(report.stat));
        if self.link == Link::Ready
            && !registration::is_registered(report.stat)
            && self.reg.usable()
        {
            // Another domain still reads registered from the last poll, maybe stale (not
            // every modem pushes every domain): ask them all now, ahead of any send.
            for cmd in HEALTH_ROUND.iter().skip(1).rev() {
                if !self.internal.contains(cmd) {
                    self.internal.push_front(cmd.clone());
                }
            }
        }
        self.requeue_unanswered_call(now);
        self.refresh_health();
        if self.link == Link::Ready {
            self.note_health();
        }
    }

    /// Emits a health event if anything changed since the last one (to both sides: the
    /// voice device is up exactly when the modem is).
    fn note_health(&mut self) {
        if self.last_health.as_ref() != Some(&self.health) {
            self.last_health = Some(self.health.clone());
            self.events
                .push_back(DriverEvent::Health(self.health.clone()));
            if self.cfg.voice {
                self.voice_events
                    .push_back(DriverEvent::Health(self.health.clone()));
            }
        }
    }

    // ---- voice ---------------------------------------------------------------------

    /// Takes the next call off the queue and returns its `ATD`, or fails it and returns
    /// `None` when it cannot be placed.
    fn start_call(&mut self, now: Timestamp) -> Option<Command> {
        let out = self.voice_queue.pop_front()?;
        let Address::Phone(number) = &out.to else {
            self.voice_events.push_back(DriverEvent::Failed {
                attempt: out.attempt,
                retryable: false,
                reason: format!("{} is not a phone number", out.to),
            });
            return None;
        };
        if !self.audio_up {
            let why = self.audio_error.as_deref().unwrap_or("not open yet");
            self.voice_events.push_back(DriverEvent::Failed {
                attempt: out.attempt,
                retryable: true,
                reason: format!("audio port not open ({why}): no call placed"),
            });
            return None;
        }
        let dial = self.quirks.dial_string(number, &self.cfg.default_country);
        let mut prompt = self.prompts.render(&out.text);
        if prompt.is_empty() {
            prompt = ToneSource::new(1.0).render(&out.text);
        }
        self.call_seq += 1;
        self.sms_since_call = 0;
        self.call_cmds.clear();
        self.next_call_poll = None;
        self.call = Some(Call::new(
            out,
            self.call_seq,
            dial.clone(),
            now,
            Duration::from_secs(self.quirks.ring_timeout_secs),
            prompt,
            self.quirks.dtmf_reports,
        ));
        Some(Command::Dial(dial))
    }

    fn call_poll_interval(&self) -> Duration {
        if self.cfg.family.pushes_call_state() {
            CALL_POLL_SAFETY
        } else {
            CALL_POLL
        }
    }

    fn dial_done(&mut self, now: Timestamp, result: FinalResult) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if result == FinalResult::Ok {
            call.dial_confirmed = true;
            self.next_call_poll = Some(now + self.call_poll_interval());
            return;
        }
        if let Some(why) = no_network(result) {
            // Nothing rang: the call waits for the network like a send.
            tracing::warn!(%why, "no network for a call; calls wait");
            self.reg.lost(why);
            self.refresh_health();
            self.note_health();
            self.finish_call(now);
            return;
        }
        let (retryable, reason) = match result {
            FinalResult::CmeError(n) => {
                let e = CmeError::from_code(n);
                (e.is_retryable(), format!("ATD refused: +CME ERROR: {e}"))
            }
            other => (true, format!("ATD refused: {}", wire::final_text(other))),
        };
        call.end_media(&reason);
        call.failure = Some((retryable, reason));
        self.finish_call(now);
    }

    fn calls_listed(&mut self, now: Timestamp, inflight: &InFlight, ok: bool) {
        let listed = inflight.lines.iter().any(|l| {
            matches!(
                crate::voice::parse_call_urc(l),
                Some(CallUrc::State(s)) if s != CallStat::Released
            )
        });
        let gone = ok
            && !listed
            && self
                .call
                .as_ref()
                .is_some_and(|c| c.dial_confirmed && c.phase != Phase::HangingUp);
        if gone {
            self.call_ended(
                now,
                "the call is no longer listed (released)".to_owned(),
                None,
            );
        }
    }

    fn on_call_urc(&mut self, now: Timestamp, urc: CallUrc, line: String) {
        let max_call = Duration::from_secs(self.cfg.max_call_secs);
        match urc {
            CallUrc::Incoming => tracing::debug!(%line, "incoming call ignored"),
            CallUrc::Dtmf { key, raw } => {
                if self.call.as_ref().is_some_and(|c| c.phase == Phase::Active) {
                    self.on_digit(now, key, &raw);
                } else {
                    self.events
                        .push_back(DriverEvent::Unrecognized { raw: line });
                }
            }
            CallUrc::State(stat) => {
                let Some(call) = self.call.as_mut() else {
                    return; // A listing or a late state of a call already over.
                };
                match stat {
                    CallStat::Active => self.answered(now, max_call),
                    CallStat::Dialling | CallStat::Alerting => {
                        if stat == CallStat::Alerting {
                            call.record.ringing_at.get_or_insert(now);
                        }
                    }
                    // Before ATD's own answer a release is the previous call's notice (it
                    // follows that call's hang-up OK), not news about this one.
                    CallStat::Released if call.dial_confirmed => {
                        self.call_ended(now, "released by the network".to_owned(), None);
                    }
                    CallStat::Released => {}
                    CallStat::Other(_) => {}
                }
            }
            CallUrc::Begin => {
                if self.call.is_some() {
                    self.answered(now, max_call);
                }
            }
            CallUrc::End(duration) => {
                if self.call.as_ref().is_some_and(|c| c.dial_confirmed) {
                    self.call_ended(now, format!("call ended (duration {duration})"), None);
                }
            }
            CallUrc::Result(r) => {
                if r == crate::voice::CallResult::NoDialtone
                    && self
                        .call
                        .as_ref()
                        .is_some_and(|c| c.record.answered_at.is_none())
                {
                    // No network to call over: the call waits for it (see finish_call).
                    self.reg.lost("NO DIALTONE".to_owned());
                    self.refresh_health();
                    self.note_health();
                }
                if matches!(
                    self.current.as_ref().map(|c| &c.cmd),
                    Some(Command::Dial(_))
                ) {
                    // The final result of ATD itself.
                    self.current = None;
                    self.timers[Timer::Response as usize] = None;
                }
                if self.call.is_some() {
                    self.call_ended(now, r.text().to_owned(), Some(r));
                } else {
                    // The network's echo of a call already over.
                    tracing::debug!(%line, "call result with no call");
                }
            }
        }
    }

    fn answered(&mut self, now: Timestamp, max_call: Duration) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.record.answered_at.is_some() || call.phase == Phase::HangingUp {
            return;
        }
        call.dial_confirmed = true;
        call.answer(now, max_call);
        let attempt = call.out.attempt;
        let reference = format!("call-{}", call.record.seq);
        if let Some(on) = self.cfg.family.audio_on() {
            self.call_cmds.push_front(Command::Setup(on));
        }
        self.health.sent += 1;
        self.voice_events
            .push_back(DriverEvent::Sent { attempt, reference });
        self.call_timeout(now);
    }

    /// The call ended on the far side or in the network (not by our hang-up, unless we
    /// were already hanging up).
    fn call_ended(
        &mut self,
        now: Timestamp,
        why: String,
        result: Option<crate::voice::CallResult>,
    ) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.phase == Phase::HangingUp {
            // Our hang-up's echo from the network: the call is over.
            self.finish_call(now);
            return;
        }
        if call.record.answered_at.is_some() {
            call.end_media(&format!("hung up by the callee ({why})"));
        } else {
            let meaning = result.map_or("call released before answer", |r| r.meaning());
            let reason = format!("{meaning} ({why})");
            call.end_media(&reason);
            call.failure = Some((true, reason));
        }
        self.finish_call(now);
    }

    /// The router no longer wants the call in progress (its record became final): hang
    /// up with the family's command. It ends `Failed { retryable: false, "cancelled" }`
    /// unless the warning had already got through (the prompt played to its end, or key
    /// 1), which stays `Delivered`. A call already hanging up (e.g. after the ring
    /// timeout) only changes its verdict.
    fn cancel_call(&mut self, now: Timestamp) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        call.cancelled = true;
        let failure =
            (!(call.acked || call.record.listened)).then(|| (false, "cancelled".to_owned()));
        if call.phase == Phase::HangingUp {
            if failure.is_some() {
                call.failure = failure;
            }
            return;
        }
        self.hang_up(now, "cancelled by the gateway", failure);
    }

    /// We end the call: hang up, and report once the modem confirms.
    fn hang_up(&mut self, now: Timestamp, why: &str, failure: Option<(bool, String)>) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.phase == Phase::HangingUp {
            return;
        }
        call.phase = Phase::HangingUp;
        call.end_media(why);
        if failure.is_some() {
            call.failure = failure;
        }
        if matches!(
            self.current.as_ref().map(|c| &c.cmd),
            Some(Command::Dial(_))
        ) {
            // Still dialling: V.250 aborts the dial on the next command.
            self.current = None;
            self.timers[Timer::Response as usize] = None;
        }
        self.call_cmds.clear();
        self.call_cmds
            .push_back(Command::Hangup(self.cfg.family.hangup()));
        self.pump(now);
    }

    /// The call is over: report it once, and let SMS go again.
    fn finish_call(&mut self, now: Timestamp) {
        let _ = now;
        let Some(mut call) = self.call.take() else {
            return;
        };
        self.call_cmds.clear();
        self.next_call_poll = None;
        if call.detached {
            // Its attempt waits in the queue already (the network went while it rang).
            return;
        }
        if call.record.answered_at.is_none() && !call.cancelled && !self.reg.usable() {
            // Never answered and the network is gone (ATD refused for want of it, or the
            // call dropped with it): the call waits for the network in front of the
            // queue, as a send does, rather than spend a try. The router may move it.
            tracing::debug!(seq = call.record.seq, "call back in the queue: no network");
            self.voice_queue.push_front(call.out);
            return;
        }
        if call.record.ended.is_empty() {
            call.end_media("ended");
        }
        if call.record.answered_at.is_some()
            && let Some(off) = self.cfg.family.audio_off()
        {
            self.internal.push_back(Command::Setup(off));
        }
        let attempt = call.out.attempt;
        let evidence = call.record.evidence();
        let event = match call.failure.take() {
            Some((retryable, reason)) if !call.acked => DriverEvent::Failed {
                attempt,
                retryable,
                reason: format!("{reason}; {evidence}"),
            },
            _ if call.record.answered_at.is_none() => DriverEvent::Failed {
                attempt,
                retryable: true,
                reason: format!("{}; {evidence}", call.record.ended),
            },
            _ if call.acked || call.record.listened => DriverEvent::Delivered { attempt, evidence },
            _ => DriverEvent::Failed {
                attempt,
                retryable: true,
                reason: format!(
                    "answered but the prompt was cut off after {:.1} s of {:.1} s; {evidence}",
                    call.record.listened_secs, call.record.prompt_secs
                ),
            },
        };
        tracing::debug!(seq = call.record.seq, ended = %call.record.ended, "call over");
        self.voice_events.push_back(event);
    }

    fn on_digit(&mut self, now: Timestamp, key: char, raw: &str) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        call.record.digits.push(key);
        if key != '1' {
            call.replay();
            return;
        }
        if call.acked {
            return;
        }
        call.acked = true;
        let at = call.secs_since_answer(now);
        let event = DriverEvent::Inbound {
            from: call.out.to.clone(),
            text: "1".to_owned(),
            evidence: format!("DTMF 1 ({raw}) in call-{} at +{at:.1} s", call.record.seq),
            sent_at: Some(now),
            receipt: None,
            // The key answers the warning this call was placed for, not whichever of the
            // callee's records happens to be most urgent.
            in_reply_to: Some(call.out.attempt),
        };
        self.health.received += 1;
        self.voice_events.push_back(event);
        self.hang_up(now, "ended by us after the key 1 ack", None);
    }

    /// The call's next deadline: ring timeout, next frame, end of the key wait, longest
    /// call, next state poll.
    fn call_deadline(&self, call: &Call) -> Option<Timestamp> {
        let poll = self
            .next_call_poll
            .filter(|_| call.phase != Phase::HangingUp);
        let phase = match call.phase {
            Phase::Dialling => Some(call.ring_deadline),
            Phase::Active => {
                let wait = call.prompt_done_at().map(|d| {
                    if self.quirks.dtmf_reports {
                        d + Duration::from_secs(self.cfg.digit_wait_secs)
                    } else {
                        d
                    }
                });
                [call.next_frame_at(), wait, call.max_end]
                    .into_iter()
                    .flatten()
                    .min()
            }
            Phase::HangingUp => None,
        };
        [poll, phase].into_iter().flatten().min()
    }

    /// Acts on the call's due deadlines and produces due audio.
    fn call_timeout(&mut self, now: Timestamp) {
        let digit_wait = Duration::from_secs(self.cfg.digit_wait_secs);
        let dtmf = self.quirks.dtmf_reports;
        let ring_secs = self.quirks.ring_timeout_secs;
        let poll_every = self.call_poll_interval();
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if self.next_call_poll.is_some_and(|t| now >= t) && call.phase != Phase::HangingUp {
            if !self.call_cmds.contains(&Command::ListCalls) {
                self.call_cmds.push_back(Command::ListCalls);
            }
            self.next_call_poll = Some(now + poll_every);
        }
        match call.phase {
            Phase::Dialling if now >= call.ring_deadline => {
                let why = format!("no answer within {ring_secs} s");
                self.hang_up(now, &why, Some((true, why.clone())));
            }
            Phase::Active => {
                let mut frames = Vec::new();
                call.frames_due(now, &mut frames);
                self.audio.extend(frames);
                if call.max_end.is_some_and(|t| now >= t) {
                    self.hang_up(now, "longest call time reached", None);
                } else if let Some(done) = call.prompt_done_at() {
                    if !dtmf {
                        self.hang_up(
                            now,
                            "ended by us after the prompt (the handset reports no keys)",
                            None,
                        );
                    } else if now >= done + digit_wait {
                        self.hang_up(now, "ended by us: no key after the prompt", None);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_status_report_hex(&mut self, hex: &str) {
        let parsed = pdu::hex_decode(hex).and_then(|b| pdu::parse_pdu(&b, true));
        match parsed {
            Ok(p) => match p.tpdu {
                Tpdu::StatusReport(sr) => self.on_status_report(&sr, hex),
                _ => self.events.push_back(DriverEvent::Unrecognized {
                    raw: format!("+CDS {hex}"),
                }),
            },
            Err(e) => self.events.push_back(DriverEvent::Unrecognized {
                raw: format!("+CDS {hex} ({e})"),
            }),
        }
    }

    /// A status report, matched by MR and recipient ([`Awaited`]); one matching nothing is
    /// reported `Unrecognized` (recorded, not applied).
    fn on_status_report(&mut self, sr: &pdu::StatusReport, hex: &str) {
        if let Some(event) = self.awaited.report(sr, hex) {
            self.events.push_back(event);
        }
    }

    /// A message read from storage (`idx`) or routed directly (`None`).
    fn on_stored(&mut self, now: Timestamp, idx: Option<u32>, hex: &str) {
        let parsed = match pdu::hex_decode(hex).and_then(|b| pdu::parse_pdu(&b, true)) {
            Ok(p) => p,
            Err(e) => {
                self.events.push_back(DriverEvent::Unrecognized {
                    raw: format!("stored message {idx:?} undecodable ({e}): {hex}"),
                });
                return;
            }
        };
        match parsed.tpdu {
            Tpdu::Deliver(d) => {
                if let Some(i) = idx {
                    self.inbox.reported.insert(i);
                    self.inbox.pdu_at.insert(i, hex.to_owned());
                }
                let sent_at = d.scts.and_then(|s| s.to_timestamp());
                let concat = d.user_data.concat.filter(|c| c.total > 1);
                let Some(c) = concat else {
                    let text = d.user_data.text;
                    self.inbound(
                        d.originator,
                        text,
                        vec![hex.to_owned()],
                        sent_at,
                        idx.into_iter().collect(),
                    );
                    return;
                };
                let key = (d.originator.clone(), c.reference, c.total);
                let rec = self.part_records.entry(key.clone()).or_default();
                if !rec.parts.iter().any(|(seq, _, _)| *seq == c.seq) {
                    rec.parts
                        .push((c.seq, idx.unwrap_or(u32::MAX), hex.to_owned()));
                }
                if let Some(text) = self.reassembler.insert(now, &d.originator, d.user_data) {
                    let mut rec = self.part_records.remove(&key).unwrap_or_default();
                    rec.parts.sort_by_key(|(seq, _, _)| *seq);
                    let idxs = rec
                        .parts
                        .iter()
                        .map(|(_, i, _)| *i)
                        .filter(|i| *i != u32::MAX)
                        .collect();
                    let evidence = rec.parts.into_iter().map(|(_, _, h)| h).collect();
                    self.inbound(d.originator, text, evidence, sent_at, idxs);
                }
                if let Some(t) = self.reassembler.poll_timeout() {
                    self.set_timer(Timer::Reassembly, t);
                }
            }
            Tpdu::StatusReport(sr) => {
                self.on_status_report(&sr, hex);
                if let Some(i) = idx {
                    self.release_index(i);
                }
            }
            // Our own outbox (or someone's drafts): not ours to report or delete.
            Tpdu::Submit(_) => {}
        }
    }

    // ---- stored messages -------------------------------------------------------------

    /// `+CMTI` (or `+CDSI`) announced a message stored at `idx`.
    fn on_announced(&mut self, now: Timestamp, idx: u32) {
        if self.inbox.reported.contains(&idx) {
            // Re-announced while the router commits it: reported once is enough.
            return;
        }
        if self.inbox.released.contains(&idx) {
            if self.inbox.delete_queued(idx) {
                // The released message, still there until its AT+CMGD.
                return;
            }
            if !self.deleting(idx) {
                // Its deletion failed for good, and the modem announces the slot again:
                // read it (reported twice only because the modem said it twice).
                self.inbox.released.remove(&idx);
            }
            // While its AT+CMGD is in flight the slot may have been freed and refilled:
            // it is read after the deletion is confirmed.
        }
        let due = if self.current.is_some() {
            now
        } else {
            now + self.cfg.inbound_batch()
        };
        self.inbox.unread.entry(idx).or_insert(due);
    }

    /// Marks `idx` for deletion: released by the router, or a stored message that is no
    /// reply (a status report, an operator notice). A second release while its deletion
    /// is queued or on the line adds nothing (a second `AT+CMGD` could take a new reply).
    fn release_index(&mut self, idx: u32) {
        self.inbox.reported.remove(&idx);
        self.inbox.released.insert(idx);
        if !self.inbox.delete_queued(idx) && !self.deleting(idx) {
            self.inbox.to_delete.push_back(idx);
        }
    }

    /// Whether the command on the line deletes or rechecks `idx`.
    fn deleting(&self, idx: u32) -> bool {
        match self.current.as_ref().map(|c| &c.cmd) {
            Some(Command::Delete(i) | Command::Recheck(i)) => *i == idx,
            Some(Command::DeleteBatch(idxs)) => idxs.contains(&idx),
            _ => false,
        }
    }

    /// What to read next: leftovers one by one, two or more announced in one listing of
    /// unread messages, a lone one on its own once it has waited `inbound_batch_ms`.
    fn read_plan(&self, now: Timestamp) -> ReadPlan {
        if let Some(i) = self.inbox.read_each.first() {
            return ReadPlan::Now(Command::Read(*i));
        }
        let mut waiting = self.inbox.unread.iter();
        match (waiting.next(), waiting.next()) {
            (None, _) => ReadPlan::Idle,
            (Some(_), Some(_)) if self.inbox.unread_listing_refused => {
                ReadPlan::Now(Command::ListAll)
            }
            (Some(_), Some(_)) => ReadPlan::Now(Command::ListUnread),
            (Some((i, due)), None) => {
                let due = *due;
                if due <= now {
                    ReadPlan::Now(Command::Read(*i))
                } else {
                    ReadPlan::Wait(due)
                }
            }
        }
    }

    /// Most deletions on one line now: 1 once the modem refused a concatenated line.
    fn deletes_per_line(&self) -> usize {
        if self.inbox.concatenation_refused {
            1
        } else {
            self.cfg.deletes_per_line()
        }
    }

    /// The next deletion line: a single after a refused concatenation, else up to
    /// `delete_batch` released indexes on one line.
    fn delete_plan(&mut self) -> Option<Command> {
        if let Some(i) = self.inbox.delete_singles.pop_front() {
            return Some(Command::Delete(i));
        }
        if let Some(i) = self.inbox.recheck.pop_front() {
            return Some(Command::Recheck(i));
        }
        let n = self.deletes_per_line().min(self.inbox.to_delete.len());
        let batch: Vec<u32> = self.inbox.to_delete.drain(..n).collect();
        match batch.as_slice() {
            [] => None,
            [i] => Some(Command::Delete(*i)),
            _ => Some(Command::DeleteBatch(batch)),
        }
    }

    /// The next read or deletion of stored messages. Every full line of released
    /// indexes goes before the next read, so deletions keep pace with however many a
    /// listing reads (storage stays bounded through a long storm: a full modem makes the
    /// network refuse replies); a line not yet full waits while replies wait to be read (a
    /// reply's ack waits on its read, not on anyone's deletion), and goes once none do.
    /// `Err(Hold)` while a lone reply waits for others (the timer is set).
    fn next_storage_command(&mut self, now: Timestamp) -> Result<Option<Command>, Hold> {
        let read = self.read_plan(now);
        let retries = !self.inbox.delete_singles.is_empty() || !self.inbox.recheck.is_empty();
        let deletes = retries || !self.inbox.to_delete.is_empty();
        let full_line = retries || self.inbox.to_delete.len() >= self.deletes_per_line();
        match read {
            ReadPlan::Now(cmd) if !full_line => return Ok(Some(cmd)),
            ReadPlan::Wait(due) => self.set_timer(Timer::InboundBatch, due),
            ReadPlan::Now(_) | ReadPlan::Idle => {}
        }
        if deletes {
            return Ok(self.delete_plan());
        }
        match read {
            ReadPlan::Wait(_) => Err(Hold),
            ReadPlan::Now(_) | ReadPlan::Idle => Ok(None),
        }
    }

    /// A read or listing of stored messages answered: report what is new, and settle what
    /// it was sent for.
    fn stored_read(&mut self, now: Timestamp, inflight: &InFlight, result: FinalResult) {
        for (header, hex) in &inflight.pdus {
            let idx = match &inflight.cmd {
                Command::Read(i) => Some(*i),
                _ => header
                    .strip_prefix("+CMGL:")
                    .and_then(|v| v.split(',').next())
                    .and_then(|v| v.trim().parse::<u32>().ok()),
            };
            let Some(idx) = idx else {
                self.events.push_back(DriverEvent::Unrecognized {
                    raw: format!("{header} {hex}"),
                });
                continue;
            };
            self.inbox.read_done(idx);
            if self.inbox.reportable(idx) {
                self.on_stored(now, Some(idx), hex);
            }
        }
        let ok = result == FinalResult::Ok;
        match &inflight.cmd {
            Command::Read(i) => {
                let gone = ok || result == FinalResult::CmsError(321);
                if gone {
                    // Read, or nothing there any more (deleted, or never stored).
                    self.inbox.read_done(*i);
                } else {
                    let fails = self.inbox.read_failures.entry(*i).or_insert(0);
                    *fails += 1;
                    let why = format!("AT+CMGR={i} refused: {}", wire::final_text(result));
                    tracing::warn!(idx = i, tries = *fails, %why, "stored message not read");
                    if *fails >= READ_TRIES {
                        // Left in storage: the next session's AT+CMGL=4 reports it.
                        self.inbox.read_done(*i);
                    } else {
                        self.inbox.unread.remove(i);
                        self.inbox.read_each.insert(*i);
                    }
                    self.health.last_error = Some(why);
                }
            }
            Command::ListUnread if !ok => {
                // A modem without AT+CMGL=0 in PDU mode: list everything instead.
                tracing::warn!(result = %wire::final_text(result), "AT+CMGL=0 refused; listing with AT+CMGL=4");
                self.inbox.unread_listing_refused = true;
            }
            Command::ListUnread => {
                // Announced but not among the unread: read already (an AT+CMGR whose
                // answer was lost), so read each on its own.
                for i in &inflight.snapshot {
                    if self.inbox.unread.remove(i).is_some() && self.inbox.reportable(*i) {
                        self.inbox.read_each.insert(*i);
                    }
                }
            }
            Command::ListAll if ok => {
                // Everything stored was listed: what it was sent for and did not show is
                // gone.
                for i in &inflight.snapshot {
                    self.inbox.read_done(*i);
                }
            }
            Command::ListAll => {
                tracing::warn!(result = %wire::final_text(result), "AT+CMGL=4 refused");
                for i in &inflight.snapshot {
                    if self.inbox.unread.remove(i).is_some() {
                        self.inbox.read_each.insert(*i);
                    }
                }
            }
            _ => {}
        }
    }

    /// A deletion line answered.
    fn deleted(&mut self, cmd: &Command, result: FinalResult) {
        match cmd {
            Command::Delete(i) => {
                // 321: nothing there, e.g. deleted by the part of a failed line that ran.
                if matches!(result, FinalResult::Ok | FinalResult::CmsError(321)) {
                    self.inbox.released.remove(i);
                    self.inbox.pdu_at.remove(i);
                } else {
                    // Stays released (never reported again this session); the next
                    // session's listing reports it again, and the router knows it.
                    let why = format!("AT+CMGD={i} refused: {}", wire::final_text(result));
                    tracing::warn!(%why, "stored message not deleted");
                    self.health.last_error = Some(why);
                }
            }
            Command::DeleteBatch(idxs) => {
                if result == FinalResult::Ok {
                    for i in idxs {
                        self.inbox.released.remove(i);
                        self.inbox.pdu_at.remove(i);
                    }
                    return;
                }
                // V.250: the commands before the failing one ran, the rest did not, and
                // the answer does not say which failed: each goes again on its own line.
                if result == FinalResult::Error && !self.inbox.concatenation_refused {
                    // A bare ERROR is a syntax error (CMGD errors are +CMS ERROR with
                    // AT+CMEE=1): this modem takes one command per line.
                    tracing::warn!(
                        "the modem refused a concatenated AT+CMGD line; deleting one per line"
                    );
                    self.inbox.concatenation_refused = true;
                }
                // Each is read again first: deleting blindly could take a new reply
                // stored in a slot the line had already freed.
                self.inbox.recheck.extend(idxs.iter().copied());
            }
            _ => {}
        }
    }

    /// A released index read again after a failed deletion line: still the released
    /// message (delete it, alone), gone (done), or a new reply in the freed slot (report it;
    /// it is not ours to delete).
    fn rechecked(&mut self, now: Timestamp, idx: u32, inflight: &InFlight, result: FinalResult) {
        let found = inflight
            .pdus
            .iter()
            .find(|(h, _)| h.starts_with("+CMGR:"))
            .map(|(_, hex)| hex.clone());
        match (result, found) {
            (FinalResult::Ok, Some(hex)) => {
                if self.inbox.pdu_at.get(&idx) == Some(&hex) {
                    self.inbox.delete_singles.push_front(idx);
                } else {
                    self.inbox.released.remove(&idx);
                    self.inbox.pdu_at.remove(&idx);
                    self.inbox.unread.remove(&idx);
                    self.on_stored(now, Some(idx), &hex);
                }
            }
            (FinalResult::Ok | FinalResult::CmsError(321), None)
            | (FinalResult::CmsError(321), Some(_)) => {
                self.inbox.released.remove(&idx);
                self.inbox.pdu_at.remove(&idx);
            }
            (other, _) => {
                let why = format!("AT+CMGR={idx} refused: {}", wire::final_text(other));
                tracing::warn!(%why, "released message not checked; left in storage");
                self.health.last_error = Some(why);
            }
        }
    }

    /// Reports what arrived of texts whose remaining parts never came, so no reply is lost.
    fn expire_partials(&mut self, now: Timestamp) {
        for inc in self.reassembler.expire(now) {
            let key = (inc.originator.clone(), inc.reference, inc.total);
            let mut rec = self.part_records.remove(&key).unwrap_or_default();
            rec.parts.sort_by_key(|(seq, _, _)| *seq);
            let idxs = rec
                .parts
                .iter()
                .map(|(_, i, _)| *i)
                .filter(|i| *i != u32::MAX)
                .collect();
            let evidence = rec.parts.into_iter().map(|(_, _, h)| h).collect();
            self.inbound(
                inc.originator.clone(),
                inc.partial_text(),
                evidence,
                None,
                idxs,
            );
        }
    }

    fn inbound(
        &mut self,
        from: String,
        text: String,
        evidence: Vec<String>,
        sent_at: Option<Timestamp>,
        idxs: Vec<u32>,
    ) {
        let Ok(number) = PhoneNumber::parse(&from, &self.cfg.default_country) else {
            // An alphanumeric sender (operator notices) cannot be an ack: report it and
            // let the message be released like any other.
            self.events.push_back(DriverEvent::Unrecognized {
                raw: format!("SMS from non-number sender {from:?}: {text}"),
            });
            for i in idxs {
                self.release_index(i);
            }
            return;
        };
        self.health.received += 1;
        // The indexes, and a fingerprint of what they hold now: a release that arrives after
        // the slots were reused (a stale release from before a port reopen) must not delete
        // a newer, uncommitted reply.
        let receipt = (!idxs.is_empty()).then(|| {
            let indexes = idxs
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            match self.inbox.fingerprint(&idxs) {
                Some(fp) => InboundReceipt(format!("{indexes}@{fp:016x}")),
                None => InboundReceipt(indexes),
            }
        });
        self.events.push_back(DriverEvent::Inbound {
            from: Address::Phone(number),
            text,
            evidence: evidence.join(" "),
            sent_at,
            receipt,
            in_reply_to: None,
        });
    }
}

/// The storage indexes in a receipt (`"3"`, `"3,4,5"`, or either with `@<fingerprint>`);
/// junk is ignored.
#[cfg(test)]
fn parse_receipt(receipt: &InboundReceipt) -> Vec<u32> {
    receipt_parts(receipt).0
}

/// The indexes of a receipt and, when it has one, the fingerprint of the message they
/// held when it was reported.
fn receipt_parts(receipt: &InboundReceipt) -> (Vec<u32>, Option<u64>) {
    let (indexes, fp) = match receipt.0.split_once('@') {
        Some((i, fp)) => (i, u64::from_str_radix(fp.trim(), 16).ok()),
        None => (receipt.0.as_str(), None),
    };
    let idxs = indexes
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    (idxs, fp)
}

/// Why a failed submit or dial means the modem has no network (`+CMS ERROR: 331` no
/// network service, `332` network timeout, `+CME ERROR: 30` no network service); `None`
/// for any other result.
fn no_network(result: FinalResult) -> Option<String> {
    match result {
        FinalResult::CmsError(n @ (331 | 332)) => {
            Some(format!("+CMS ERROR: {}", CmsError::from_code(n)))
        }
        FinalResult::CmeError(30) => Some(format!("+CME ERROR: {}", CmeError::from_code(30))),
        _ => None,
    }
}

/// A command's name without its payload, for messages.
fn short(cmd: &Command) -> String {
    match cmd {
        Command::SubmitBody(_) => "SubmitBody".to_owned(),
        Command::Dial(_) => "Dial".to_owned(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Faults, ReplyBehaviour, SimConfig, SimModem};
    use tocsin_core::AttemptId;

    const T0: Timestamp = Timestamp(1_750_000_000_000);
    const WARNING: &str = "【红色预警】北京市防汛指挥部发布山洪灾害红色预警：受强降雨影响，未来六小时内本区沿河村庄可能发生山洪、泥石流等灾害。请立即组织危险区群众向高处转移，关闭涉水道路和下凹式立交桥，确保人员安全。请村干部逐户通知到位，不漏一户一人，并将转移情况报告镇防汛办公室。回复 1 K7XT 确认收到";

    fn phone(n: &str) -> Address {
        Address::Phone(PhoneNumber::parse(n, "86").unwrap())
    }

    fn send(attempt: u64, to: &str, text: &str) -> DriverCommand {
        DriverCommand::Send(Outbound {
            attempt: AttemptId(attempt),
            to: phone(to),
            text: text.to_owned(),
            want_report: true,
        })
    }

    /// The driver and the simulator wired together on a virtual clock.
    struct Bench {
        modem: Modem,
        sim: SimModem,
        now: Timestamp,
        events: Vec<DriverEvent>,
        byte_by_byte: bool,
        /// Every byte the driver wrote to the modem, for asserting on commands.
        wire_out: Vec<u8>,
    }

    impl Bench {
        fn new(sim_cfg: SimConfig) -> Self {
            Self::with(ModemConfig::new("/dev/sim"), sim_cfg)
        }

        fn with(modem_cfg: ModemConfig, sim_cfg: SimConfig) -> Self {
            let mut b = Bench {
                modem: Modem::new(modem_cfg, T0),
                sim: SimModem::new(sim_cfg, 42, T0),
                now: T0,
                events: Vec::new(),
                byte_by_byte: false,
                wire_out: Vec::new(),
            };
            b.modem.handle_port_opened(T0);
            b.modem.handle_audio_port(T0, Ok(()));
            b.run_until(
                |e| {
                    e.iter()
                        .any(|e| matches!(e, DriverEvent::Health(h) if h.up))
                },
                60,
            );
            assert!(b.modem.is_ready());
            b
        }

        fn pump(&mut self) {
            loop {
                let mut moved = false;
                while let Some(bytes) = self.modem.poll_transmit() {
                    self.wire_out.extend_from_slice(&bytes);
                    self.sim.handle_rx(self.now, &bytes);
                    moved = true;
                }
                while let Some(bytes) = self.sim.poll_transmit() {
                    if self.byte_by_byte {
                        for b in bytes {
                            self.modem.handle_rx(self.now, &[b]);
                        }
                    } else {
                        self.modem.handle_rx(self.now, &bytes);
                    }
                    moved = true;
                }
                while let Some(e) = self.modem.poll_event() {
                    self.events.push(e);
                    moved = true;
                }
                // Both devices' events in one list: the voice tests tell them apart by
                // attempt, and without voice there are none.
                while let Some(e) = self.modem.poll_voice_event() {
                    self.events.push(e);
                    moved = true;
                }
                while let Some(frame) = self.modem.poll_audio() {
                    self.sim.handle_audio(self.now, &frame);
                    moved = true;
                }
                if !moved {
                    return;
                }
            }
        }

        fn submit(&mut self, cmd: DriverCommand) {
            self.modem.submit(self.now, cmd);
            self.pump();
        }

        /// Steps the virtual clock until `done` holds, at most `secs` virtual seconds.
        fn run_until(&mut self, done: impl Fn(&[DriverEvent]) -> bool, secs: u64) {
            let limit = self.now + Duration::from_secs(secs);
            self.pump();
            while !done(&self.events) {
                let next = [self.modem.poll_timeout(), self.sim.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                let Some(next) = next.filter(|t| *t <= limit) else {
                    panic!(
                        "condition not reached by {limit}; events: {:#?}",
                        self.events
                    );
                };
                self.now = self.now.max(next);
                self.modem.handle_timeout(self.now);
                self.sim.handle_timeout(self.now);
                self.pump();
            }
        }

        /// Steps the virtual clock `secs` seconds forward.
        fn advance(&mut self, secs: u64) {
            let until = self.now + Duration::from_secs(secs);
            loop {
                self.pump();
                let next = [self.modem.poll_timeout(), self.sim.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                match next.filter(|t| *t <= until) {
                    Some(t) => {
                        self.now = self.now.max(t);
                        self.modem.handle_timeout(self.now);
                        self.sim.handle_timeout(self.now);
                    }
                    None => break,
                }
            }
            self.now = until;
        }

        fn take(&mut self) -> Vec<DriverEvent> {
            self.pump();
            std::mem::take(&mut self.events)
        }
    }

    fn has_inbound(e: &[DriverEvent]) -> bool {
        e.iter().any(|e| matches!(e, DriverEvent::Inbound { .. }))
    }

    #[test]
    fn init_reports_health_up_registered_with_signal() {
        let mut b = Bench::new(SimConfig::default());
        let health: Vec<_> = b
            .take()
            .into_iter()
            .filter_map(|e| match e {
                DriverEvent::Health(h) => Some(h),
                _ => None,
            })
            .collect();
        assert_eq!(health.len(), 1);
        assert!(health[0].up && health[0].registered);
        assert_eq!(health[0].signal, Some(21));
        // Health rounds with nothing changed say nothing, and poll nothing in between.
        let seen = b.sim.commands_seen();
        b.advance(65);
        assert!(b.take().is_empty());
        assert_eq!(
            b.sim.commands_seen(),
            seen + 24,
            "six rounds of CSQ, CREG?, CGREG?, CEREG?"
        );
    }

    #[test]
    fn chinese_three_part_warning_is_sent_delivered_and_answered() {
        let cfg = SimConfig {
            default_script: ReplyBehaviour::Reply {
                min_secs: 20.0,
                max_secs: 40.0,
            },
            ..SimConfig::default()
        };
        let mut b = Bench::new(cfg);
        b.take();
        assert_eq!(
            pdu::count_parts(WARNING, false).unwrap().1,
            3,
            "fixture must need 3 parts"
        );
        b.submit(send(7, "+8613800138000", WARNING));
        b.run_until(
            |e| e.iter().any(|e| matches!(e, DriverEvent::Delivered { .. })),
            120,
        );
        let ev = b.take();
        assert_eq!(
            ev[0],
            DriverEvent::Accepted {
                attempt: AttemptId(7)
            }
        );
        assert!(
            ev.contains(&DriverEvent::Sent {
                attempt: AttemptId(7),
                reference: "0,1,2".into()
            }),
            "{ev:#?}"
        );
        let rec = &b.sim.submits()[0];
        assert_eq!(
            (rec.destination.as_str(), rec.text.as_str(), rec.parts),
            ("+8613800138000", WARNING, 3)
        );
        assert!(rec.status_report);
        let delivered = ev
            .iter()
            .find_map(|e| match e {
                DriverEvent::Delivered { attempt, evidence } => Some((*attempt, evidence.clone())),
                _ => None,
            })
            .unwrap();
        assert_eq!(delivered.0, AttemptId(7));
        assert_eq!(
            delivered.1.split(' ').count(),
            3,
            "one status report per part"
        );

        b.run_until(has_inbound, 120);
        let (from, text, receipt) = b
            .take()
            .into_iter()
            .find_map(|e| match e {
                DriverEvent::Inbound {
                    from,
                    text,
                    receipt,
                    evidence,
                    ..
                } => {
                    assert!(!evidence.is_empty());
                    Some((from, text, receipt))
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(from, phone("+8613800138000"));
        assert_eq!(text, "1 K7XT");
        let receipt = receipt.unwrap();
        assert_eq!(
            b.sim.stored_indexes(),
            vec![0],
            "kept on the modem until released"
        );
        b.submit(DriverCommand::Release(receipt));
        b.pump();
        assert!(b.sim.stored_indexes().is_empty(), "released → AT+CMGD");
    }

    #[test]
    fn cms_errors_fail_retryable_or_permanent() {
        for (code, retryable) in [(42u16, true), (1, false)] {
            let mut b = Bench::new(SimConfig::default());
            b.sim.set_faults(Faults {
                cms_error_rate: 1.0,
                cms_error_code: code,
                ..Faults::default()
            });
            b.take();
            b.submit(send(1, "+8613800138000", "ACK 1"));
            b.run_until(
                |e| e.iter().any(|e| matches!(e, DriverEvent::Failed { .. })),
                30,
            );
            let failed = b
                .take()
                .into_iter()
                .find_map(|e| match e {
                    DriverEvent::Failed {
                        retryable, reason, ..
                    } => Some((retryable, reason)),
                    _ => None,
                })
                .unwrap();
            assert_eq!(failed.0, retryable, "{code}");
            assert!(
                failed.1.starts_with(&format!("+CMS ERROR: {code} (")),
                "{}",
                failed.1
            );
            // The modem is still usable afterwards.
            b.sim.set_faults(Faults::default());
            b.submit(send(2, "+8613800138000", "ACK 1"));
            b.run_until(
                |e| e.iter().any(|e| matches!(e, DriverEvent::Sent { .. })),
                30,
            );
        }
    }

    #[test]
    fn garbage_is_unrecognized_and_the_conversation_goes_on() {
        let mut b = Bench::new(SimConfig::default());
        b.byte_by_byte = true;
        b.sim.set_faults(Faults {
            garbage_rate: 0.5,
            ..Faults::default()
        });
        for i in 0..6 {
            b.submit(send(i, "+8613800138000", "test 1"));
        }
        b.run_until(
            |e| {
                e.iter()
                    .filter(|e| matches!(e, DriverEvent::Sent { .. }))
                    .count()
                    == 6
            },
            120,
        );
        let ev = b.take();
        assert!(
            ev.iter()
                .any(|e| matches!(e, DriverEvent::Unrecognized { .. })),
            "some garbage was injected"
        );
        assert!(!ev.iter().any(|e| matches!(e, DriverEvent::Failed { .. })));
        assert_eq!(b.sim.submits().len(), 6);
    }

    #[test]
    fn a_silent_modem_times_out_the_submit_as_retryable() {
        let mut b = Bench::new(SimConfig::default());
        b.take();
        b.sim.set_faults(Faults {
            silence_rate: 1.0,
            ..Faults::default()
        });
        b.submit(send(3, "+8613800138000", "ACK 1"));
        b.submit(send(4, "+8613800138000", "ACK 2"));
        b.run_until(
            |e| e.iter().any(|e| matches!(e, DriverEvent::Failed { .. })),
            120,
        );
        let ev = b.take();
        let failed = ev
            .iter()
            .find_map(|e| match e {
                DriverEvent::Failed {
                    attempt,
                    retryable,
                    reason,
                } => Some((*attempt, *retryable, reason.clone())),
                _ => None,
            })
            .unwrap();
        assert_eq!((failed.0, failed.1), (AttemptId(3), true));
        assert!(failed.2.contains("timeout"), "{}", failed.2);
        // It stops answering altogether: the driver reports it down, keeps attempt 4 queued,
        // and sends it once the modem answers again.
        b.run_until(
            |e| {
                e.iter()
                    .any(|e| matches!(e, DriverEvent::Health(h) if !h.up))
            },
            120,
        );
        assert_eq!(b.modem.queued(), 1);
        b.sim.set_faults(Faults::default());
        b.run_until(
            |e| {
                e.iter().any(|e| {
                    matches!(
                        e,
                        DriverEvent::Sent {
                            attempt: AttemptId(4),
                            ..
                        }
                    )
                })
            },
            300,
        );
    }

    #[test]
    fn concatenated_inbound_out_of_order_is_reassembled() {
        let cfg = SimConfig {
            faults: Faults {
                reorder_inbound: true,
                ..Faults::default()
            },
            ..SimConfig::default()
        };
        let mut b = Bench::new(cfg);
        b.take();
        b.sim.deliver_sms(b.now, "+8613912345678", WARNING);
        b.run_until(has_inbound, 30);
        let (from, text, receipt) = b
            .take()
            .into_iter()
            .find_map(|e| match e {
                DriverEvent::Inbound {
                    from,
                    text,
                    receipt,
                    ..
                } => Some((from, text, receipt)),
                _ => None,
            })
            .unwrap();
        assert_eq!(from, phone("+8613912345678"));
        assert_eq!(text, WARNING);
        let receipt = receipt.unwrap();
        assert_eq!(parse_receipt(&receipt).len(), 3);
        b.submit(DriverCommand::Release(receipt));
        assert!(b.sim.stored_indexes().is_empty());
    }

    #[test]
    fn stored_replies_are_listed_after_reopen_and_not_lost() {
        let mut b = Bench::new(SimConfig::default());
        b.sim.deliver_sms(b.now, "+8613912345678", "1 K7XT");
        b.run_until(has_inbound, 30);
        b.take();
        // The port drops before the gateway released it: it is reported again.
        b.modem.handle_port_lost(b.now);
        b.sim.handle_power_cycle(b.now);
        b.modem.handle_port_opened(b.now);
        b.run_until(has_inbound, 60);
        assert!(
            b.take()
                .iter()
                .any(|e| matches!(e, DriverEvent::Inbound { text, .. } if text == "1 K7XT"))
        );
    }

    #[test]
    fn a_stale_release_from_before_a_reopen_does_not_delete_a_new_reply_in_its_slot() {
        let mut b = Bench::new(SimConfig::default());
        b.sim.deliver_sms(b.now, "+8613912345678", "1 K7XT");
        let receipt_of = |ev: Vec<DriverEvent>, want: &str| {
            ev.into_iter()
                .find_map(|e| match e {
                    DriverEvent::Inbound { text, receipt, .. } if text == want => receipt,
                    _ => None,
                })
                .unwrap()
        };
        b.run_until(has_inbound, 30);
        let stale = receipt_of(b.take(), "1 K7XT");
        // The port drops before the release; after the reopen the reply is listed again,
        // released again, and deleted.
        b.modem.handle_port_lost(b.now);
        b.sim.handle_power_cycle(b.now);
        b.modem.handle_port_opened(b.now);
        b.run_until(has_inbound, 60);
        let again = receipt_of(b.take(), "1 K7XT");
        b.submit(DriverCommand::Release(again));
        assert!(b.sim.stored_indexes().is_empty());
        // A new reply lands in the freed slot; the first session's release turns up late.
        b.sim.deliver_sms(b.now, "+8613912345678", "1 ACEF");
        b.run_until(has_inbound, 30);
        let fresh = receipt_of(b.take(), "1 ACEF");
        assert_eq!(
            parse_receipt(&fresh),
            parse_receipt(&stale),
            "the same slot"
        );
        b.submit(DriverCommand::Release(stale));
        assert_eq!(
            b.sim.stored_indexes().len(),
            1,
            "the uncommitted reply must stay"
        );
        b.submit(DriverCommand::Release(fresh));
        assert!(b.sim.stored_indexes().is_empty());
    }

    #[test]
    fn cancel_removes_a_queued_send() {
        let mut b = Bench::new(SimConfig::default());
        b.take();
        b.submit(send(1, "+8613800138000", "a 1"));
        b.submit(send(2, "+8613800138000", "b 1"));
        b.submit(DriverCommand::Cancel(AttemptId(2)));
        b.submit(DriverCommand::Cancel(AttemptId(1))); // Already going out: no effect.
        b.run_until(
            |e| e.iter().any(|e| matches!(e, DriverEvent::Sent { .. })),
            30,
        );
        let ev = b.take();
        // Dropped without a report: the router recorded why, and a failure for good would
        // end the route of a send the router is moving to another device.
        assert!(
            !ev.iter().any(
                |e| matches!(e, DriverEvent::Failed { attempt, .. } if *attempt == AttemptId(2))
            ),
            "{ev:#?}"
        );
        assert!(ev.contains(&DriverEvent::Sent {
            attempt: AttemptId(1),
            reference: "0".into()
        }));
        assert_eq!(b.sim.submits().len(), 1);
    }

    #[test]
    fn port_lost_mid_submit_fails_it_and_keeps_the_queue() {
        let mut b = Bench::new(SimConfig::default());
        b.take();
        b.submit(send(1, "+8613800138000", "a 1"));
        b.submit(send(2, "+8613800138000", "b 1"));
        // The body is out; the network has not answered.
        assert!(b.sim.poll_timeout().is_some());
        b.modem.handle_port_lost(b.now);
        let ev = b.take();
        assert!(ev.iter().any(|e| matches!(
            e,
            DriverEvent::Failed {
                attempt: AttemptId(1),
                retryable: true,
                ..
            }
        )));
        assert!(
            ev.iter()
                .any(|e| matches!(e, DriverEvent::Health(h) if !h.up))
        );
        b.sim.handle_power_cycle(b.now);
        b.modem.handle_port_opened(b.now);
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
            60,
        );
    }

    #[test]
    fn throughput_is_bound_by_the_modem_not_the_driver() {
        let mut b = Bench::new(SimConfig::default());
        b.take();
        let start = b.now;
        for i in 0..30 {
            b.submit(send(i, "+8613800138000", "红色预警 回复 1 K7XT"));
        }
        b.run_until(
            |e| {
                e.iter()
                    .filter(|e| matches!(e, DriverEvent::Sent { .. }))
                    .count()
                    == 30
            },
            600,
        );
        // The simulated network takes 2 s per part; the driver adds no waiting of its own.
        let took = b.now.since(start);
        assert!(
            took <= Duration::from_secs(60) + Duration::from_millis(500),
            "{took:?}"
        );
    }

    #[test]
    fn a_full_queue_refuses_as_retryable() {
        let mut cfg = ModemConfig::new("/dev/x");
        cfg.queue_limit = 1;
        let mut m = Modem::new(cfg, T0);
        m.submit(T0, send(1, "+8613800138000", "a"));
        m.submit(T0, send(2, "+8613800138000", "b"));
        assert_eq!(
            m.poll_event(),
            Some(DriverEvent::Accepted {
                attempt: AttemptId(1)
            })
        );
        assert!(matches!(
            m.poll_event(),
            Some(DriverEvent::Failed {
                attempt: AttemptId(2),
                retryable: true,
                ..
            })
        ));
        assert_eq!(
            m.poll_transmit(),
            None,
            "nothing goes out while the port is closed"
        );
    }

    #[test]
    fn unknown_urcs_and_unknown_status_reports_are_unrecognized() {
        let mut b = Bench::new(SimConfig::default());
        b.take();
        b.modem.handle_rx(b.now, b"\r\n+QIND: \"smsfull\"\r\n");
        b.modem.handle_rx(b.now, b"\r\n+CDS: 26\r\n0891683108100005F0062A0D91683108108300F0427010010300234270100103502300\r\n");
        let ev = b.take();
        assert_eq!(ev.len(), 2);
        assert!(matches!(&ev[0], DriverEvent::Unrecognized { raw } if raw == "+QIND: \"smsfull\""));
        assert!(
            matches!(&ev[1], DriverEvent::Unrecognized { raw } if raw.contains("unknown MR 42"))
        );
    }

    /// Sends `attempt` to `to` on a hand-driven modem, the network answering `+CMGS: <mr>`.
    fn send_by_hand(m: &mut Modem, attempt: u64, to: &str, mr: u8) {
        m.submit(T0, send(attempt, to, "ACK 1"));
        assert!(written(m)[0].starts_with("AT+CMGS="));
        m.handle_rx(T0, b"\r\n> ");
        written(m);
        m.handle_rx(T0, format!("\r\n+CMGS: {mr}\r\n\r\nOK\r\n").as_bytes());
    }

    #[test]
    fn a_status_report_applies_only_to_the_message_with_its_mr_and_recipient() {
        // protocols.md §4.6: MR 0x2A to +8613800138000, delivered.
        let cds = b"\r\n+CDS: 26\r\n0891683108100005F0062A0D91683108108300F0427010010300234270100103502300\r\n";
        let mut m = ready_modem(ModemConfig::new("/dev/x"));
        // Someone else got MR 42 (the modem's counter wrapped since).
        send_by_hand(&mut m, 1, "+8613900139000", 42);
        while m.poll_event().is_some() {}
        m.handle_rx(T0, cds);
        let ev: Vec<_> = std::iter::from_fn(|| m.poll_event()).collect();
        assert!(
            matches!(ev.as_slice(), [DriverEvent::Unrecognized { raw }] if raw.contains("MR 42")),
            "recorded, not applied: {ev:#?}"
        );
        // The report's own recipient, national form in the directory: it matches.
        send_by_hand(&mut m, 2, "13800138000", 42);
        while m.poll_event().is_some() {}
        m.handle_rx(T0, cds);
        let ev: Vec<_> = std::iter::from_fn(|| m.poll_event()).collect();
        assert!(
            matches!(ev.as_slice(), [DriverEvent::Delivered { attempt, .. }] if *attempt == AttemptId(2)),
            "{ev:#?}"
        );
        // The first is still awaited as the first person's: its own report applies.
        let sr = pdu::encode_status_report(
            Some("+8613800100500"),
            42,
            "+8613900139000",
            &pdu::Scts::from_timestamp(T0, 32).unwrap(),
            &pdu::Scts::from_timestamp(T0, 32).unwrap(),
            0x00,
        )
        .unwrap();
        m.handle_rx(
            T0,
            format!("\r\n+CDS: {}\r\n{}\r\n", sr.tpdu_len(), sr.to_hex()).as_bytes(),
        );
        let ev: Vec<_> = std::iter::from_fn(|| m.poll_event()).collect();
        assert!(
            matches!(ev.as_slice(), [DriverEvent::Delivered { attempt, .. }] if *attempt == AttemptId(1)),
            "{ev:#?}"
        );
    }

    #[test]
    fn three_hundred_sends_wrap_the_mr_and_every_report_lands_on_its_own_message() {
        let cfg = SimConfig {
            per_message_latency_ms: 100,
            status_report_delay_ms: 60_000,
            default_script: ReplyBehaviour::Never,
            ..SimConfig::default()
        };
        let mut b = Bench::new(cfg);
        b.take();
        for i in 0..300u64 {
            b.submit(send(i, &format!("+86138{i:08}"), "ACK 1"));
        }
        b.run_until(
            |e| {
                e.iter()
                    .filter(|e| matches!(e, DriverEvent::Delivered { .. }))
                    .count()
                    == 300
            },
            600,
        );
        let ev = b.take();
        assert!(
            !ev.iter().any(|e| matches!(
                e,
                DriverEvent::Unrecognized { .. } | DriverEvent::Failed { .. }
            )),
            "{ev:#?}"
        );
        let mut delivered: Vec<u64> = ev
            .iter()
            .filter_map(|e| match e {
                DriverEvent::Delivered { attempt, .. } => Some(attempt.0),
                _ => None,
            })
            .collect();
        delivered.sort_unstable();
        assert_eq!(delivered, (0..300).collect::<Vec<_>>());
    }

    #[test]
    fn init_sends_the_documented_sequence() {
        let mut m = Modem::new(ModemConfig::new("/dev/x"), T0);
        m.handle_port_opened(T0);
        let mut sent = Vec::new();
        for _ in 0..14 {
            let bytes = m.poll_transmit().unwrap();
            sent.push(String::from_utf8(bytes).unwrap());
            m.handle_rx(T0, b"\r\nOK\r\n");
        }
        assert_eq!(
            sent,
            [
                "AT\r",
                "ATE0\r",
                "AT+CMEE=1\r",
                "AT+CMGF=0\r",
                "AT+CPMS=\"ME\",\"ME\",\"ME\"\r",
                "AT+CNMI=2,1,0,1,0\r",
                "AT+CREG=2\r",
                "AT+CGREG=2\r",
                "AT+CEREG=2\r",
                "AT+CSQ\r",
                "AT+CREG?\r",
                "AT+CGREG?\r",
                "AT+CEREG?\r",
                "AT+CMGL=4\r"
            ]
        );
        assert!(m.is_ready());
        // Idle: the only deadline is the next health poll, exactly one interval away.
        assert_eq!(m.poll_timeout(), Some(T0 + Duration::from_secs(10)));
    }

    // ---- reply storms: stored messages read and deleted in batches ------------------

    /// The command lines the driver wrote since `from` (a byte offset in `wire_out`).
    fn lines_since(b: &Bench, from: usize) -> Vec<String> {
        String::from_utf8_lossy(b.wire_out.get(from..).unwrap_or(&[]))
            .split('\r')
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Every inbound (sender, text, receipt) among `events`.
    fn inbound(events: &[DriverEvent]) -> Vec<(String, String, InboundReceipt)> {
        events
            .iter()
            .filter_map(|e| match e {
                DriverEvent::Inbound {
                    from: Address::Phone(p),
                    text,
                    receipt: Some(r),
                    ..
                } => Some((p.as_str().to_owned(), text.clone(), r.clone())),
                _ => None,
            })
            .collect()
    }

    fn count_inbound(n: usize) -> impl Fn(&[DriverEvent]) -> bool {
        move |e| {
            e.iter()
                .filter(|e| matches!(e, DriverEvent::Inbound { .. }))
                .count()
                >= n
        }
    }

    fn storm_sender(i: usize) -> String {
        format!("+86139{i:08}")
    }

    /// Delivers `n` replies into the modem's storage at once (a burst of `+CMTI`).
    fn storm(b: &mut Bench, first: usize, n: usize) {
        for i in first..first + n {
            b.sim
                .deliver_sms(b.now, &storm_sender(i), &format!("1 K{i:03}"));
        }
    }

    #[test]
    fn a_burst_of_twenty_replies_is_one_listing_and_twenty_inbound() {
        let mut b = Bench::new(SimConfig::default());
        b.take();
        let mark = b.wire_out.len();
        let lists_before = b.sim.lists_answered();
        storm(&mut b, 0, 20);
        b.run_until(count_inbound(20), 5);
        let lines = lines_since(&b, mark);
        assert_eq!(lines, ["AT+CMGL=0"], "one listing, no AT+CMGR");
        assert_eq!(b.sim.lists_answered(), lists_before + 1);
        let got = inbound(&b.take());
        assert_eq!(got.len(), 20);
        for (i, (from, text, receipt)) in got.iter().enumerate() {
            assert_eq!(from, &storm_sender(i));
            assert_eq!(text, &format!("1 K{i:03}"));
            assert_eq!(parse_receipt(receipt), vec![i as u32], "its storage index");
        }
        // Nothing is deleted before its release.
        assert_eq!(b.sim.stored_indexes().len(), 20);
        assert_eq!(b.sim.deleted(), 0);
    }

    #[test]
    fn a_lone_reply_waits_a_few_ms_for_company_then_is_read_on_its_own() {
        let mut b = Bench::new(SimConfig::default());
        b.take();
        let mark = b.wire_out.len();
        let start = b.now;
        storm(&mut b, 0, 1);
        b.pump();
        assert!(lines_since(&b, mark).is_empty(), "waiting for company");
        assert_eq!(
            b.modem.poll_timeout(),
            Some(start + Duration::from_millis(5))
        );
        b.run_until(has_inbound, 1);
        assert_eq!(b.now, start + Duration::from_millis(5));
        assert_eq!(lines_since(&b, mark), ["AT+CMGR=0"]);
        // A second one within the wait makes it a listing at once.
        b.take();
        let mark = b.wire_out.len();
        let start = b.now;
        storm(&mut b, 1, 1);
        b.pump();
        b.now = start + Duration::from_millis(2);
        storm(&mut b, 2, 1);
        b.run_until(count_inbound(2), 1);
        assert_eq!(lines_since(&b, mark), ["AT+CMGL=0"]);
        assert_eq!(b.now, start + Duration::from_millis(2));
        // One announced while a command is in flight (a submit the network answers in
        // 1 ms) has waited already: it is read as soon as the line is free, not 5 ms on.
        let mut b = Bench::new(SimConfig {
            per_message_latency_ms: 1,
            ..SimConfig::default()
        });
        b.take();
        b.submit(send(1, "+8613800138000", "test 1"));
        let mark = b.wire_out.len();
        b.now = b.now + Duration::from_micros(500);
        storm(&mut b, 0, 1);
        b.run_until(
            |e| e.iter().any(|e| matches!(e, DriverEvent::Sent { .. })),
            5,
        );
        let sent_at = b.now;
        b.run_until(has_inbound, 1);
        assert_eq!(lines_since(&b, mark), ["AT+CMGR=0"]);
        assert_eq!(b.now, sent_at, "no batch wait after the line was busy");
    }

    #[test]
    fn releases_go_out_as_concatenated_deletions_capped_per_line() {
        let mut b = Bench::new(SimConfig::default());
        storm(&mut b, 0, 23);
        b.run_until(count_inbound(23), 5);
        let receipts: Vec<_> = inbound(&b.take()).into_iter().map(|(_, _, r)| r).collect();
        let mark = b.wire_out.len();
        // One commit's releases arrive together (the io task takes them in one turn).
        b.modem
            .submit_all(b.now, receipts.into_iter().map(DriverCommand::Release));
        b.pump();
        let lines = lines_since(&b, mark);
        let line = |r: std::ops::Range<u32>| {
            let cmds: Vec<String> = r.map(|i| format!("+CMGD={i}")).collect();
            format!("AT{}", cmds.join(";"))
        };
        assert_eq!(lines, [line(0..10), line(10..20), line(20..23)]);
        assert!(b.sim.stored_indexes().is_empty());
        assert_eq!(b.sim.deleted(), 23);
        // The cap is configurable; 1 is one per line.
        let mut cfg = ModemConfig::new("/dev/sim");
        cfg.delete_batch = 1;
        let mut b = Bench::with(cfg, SimConfig::default());
        storm(&mut b, 0, 3);
        b.run_until(count_inbound(3), 5);
        let receipts: Vec<_> = inbound(&b.take()).into_iter().map(|(_, _, r)| r).collect();
        let mark = b.wire_out.len();
        b.modem
            .submit_all(b.now, receipts.into_iter().map(DriverCommand::Release));
        b.pump();
        assert_eq!(
            lines_since(&b, mark),
            ["AT+CMGD=0", "AT+CMGD=1", "AT+CMGD=2"]
        );
    }

    #[test]
    fn releases_arriving_while_the_line_is_busy_share_the_next_line() {
        let mut b = Bench::new(SimConfig::default());
        storm(&mut b, 0, 6);
        b.run_until(count_inbound(6), 5);
        let receipts: Vec<_> = inbound(&b.take()).into_iter().map(|(_, _, r)| r).collect();
        let mark = b.wire_out.len();
        // The first release finds the line idle and goes at once; the rest arrive before
        // its OK is read, and go together.
        let mut receipts = receipts.into_iter();
        b.modem
            .submit(b.now, DriverCommand::Release(receipts.next().unwrap()));
        for r in receipts {
            b.modem.submit(b.now, DriverCommand::Release(r));
        }
        b.pump();
        assert_eq!(
            lines_since(&b, mark),
            ["AT+CMGD=0", "AT+CMGD=1;+CMGD=2;+CMGD=3;+CMGD=4;+CMGD=5"]
        );
        assert!(b.sim.stored_indexes().is_empty());
    }

    #[test]
    fn a_modem_refusing_concatenation_gets_one_deletion_per_line() {
        let cfg = SimConfig {
            faults: Faults {
                refuse_concatenation: true,
                ..Faults::default()
            },
            ..SimConfig::default()
        };
        let mut b = Bench::new(cfg);
        storm(&mut b, 0, 4);
        b.run_until(count_inbound(4), 5);
        let receipts: Vec<_> = inbound(&b.take()).into_iter().map(|(_, _, r)| r).collect();
        let mark = b.wire_out.len();
        b.modem
            .submit_all(b.now, receipts.into_iter().map(DriverCommand::Release));
        b.pump();
        assert_eq!(
            lines_since(&b, mark),
            [
                "AT+CMGD=0;+CMGD=1;+CMGD=2;+CMGD=3",
                "AT+CMGR=0",
                "AT+CMGD=0",
                "AT+CMGR=1",
                "AT+CMGD=1",
                "AT+CMGR=2",
                "AT+CMGD=2",
                "AT+CMGR=3",
                "AT+CMGD=3"
            ],
            "refused (ERROR, nothing done), then each checked and deleted on its own line"
        );
        assert!(b.sim.stored_indexes().is_empty());
        // From then on, one per line straight away.
        storm(&mut b, 4, 2);
        b.run_until(count_inbound(2), 5);
        let receipts: Vec<_> = inbound(&b.take()).into_iter().map(|(_, _, r)| r).collect();
        let mark = b.wire_out.len();
        b.modem
            .submit_all(b.now, receipts.into_iter().map(DriverCommand::Release));
        b.pump();
        assert_eq!(lines_since(&b, mark), ["AT+CMGD=0", "AT+CMGD=1"]);
        assert!(
            !b.take()
                .iter()
                .any(|e| matches!(e, DriverEvent::Inbound { .. }))
        );
    }

    #[test]
    fn a_new_reply_in_a_slot_freed_by_a_failed_line_is_reported_not_deleted() {
        let mut m = ready_modem(ModemConfig::new("/dev/x"));
        m.handle_rx(T0, b"\r\n+CMTI: \"ME\",0\r\n\r\n+CMTI: \"ME\",1\r\n");
        assert_eq!(written(&mut m), ["AT+CMGL=0"]);
        m.handle_rx(T0, &listing(&[0, 1]));
        while m.poll_event().is_some() {}
        m.submit_all(
            T0,
            ["0", "1"].map(|i| DriverCommand::Release(InboundReceipt(i.to_owned()))),
        );
        assert_eq!(written(&mut m), ["AT+CMGD=0;+CMGD=1"]);
        // 0 was deleted, 1 failed; a new reply lands in slot 0 before the driver looks.
        m.handle_rx(T0, b"\r\n+CMS ERROR: 500\r\n\r\n+CMTI: \"ME\",0\r\n");
        assert_eq!(written(&mut m), ["AT+CMGR=0"]);
        let scts = pdu::Scts {
            year: 2024,
            month: 7,
            day: 1,
            hour: 10,
            minute: 31,
            second: 0,
            tz_quarters: 32,
        };
        let new = pdu::encode_deliver(None, "+8613912345678", "1 NEW1", &scts, 1).unwrap();
        let new = new.first().unwrap();
        m.handle_rx(
            T0,
            format!(
                "\r\n+CMGR: 0,,{}\r\n{}\r\n\r\nOK\r\n",
                new.tpdu_len(),
                new.to_hex()
            )
            .as_bytes(),
        );
        let ev: Vec<_> = std::iter::from_fn(|| m.poll_event()).collect();
        assert!(
            ev.iter().any(
                |e| matches!(e, DriverEvent::Inbound { text, receipt: Some(r), .. }
                if text == "1 NEW1" && parse_receipt(r) == vec![0])
            ),
            "{ev:#?}"
        );
        // Slot 1 still holds the released message: checked, then deleted alone; slot 0
        // is left for the new reply's own release.
        assert_eq!(written(&mut m), ["AT+CMGR=1"]);
        let old = "0891683108100005F0040D91683119325476F800004270100103002305C1E1121403";
        m.handle_rx(
            T0,
            format!("\r\n+CMGR: 1,,25\r\n{old}\r\n\r\nOK\r\n").as_bytes(),
        );
        assert_eq!(written(&mut m), ["AT+CMGD=1"]);
        m.handle_rx(T0, b"\r\nOK\r\n");
        assert!(written(&mut m).is_empty());
        assert!(
            !std::iter::from_fn(|| m.poll_event())
                .any(|e| matches!(e, DriverEvent::Inbound { .. }))
        );
    }

    #[test]
    fn a_model_without_concatenation_deletes_one_per_line_from_the_start() {
        let mut cfg = ModemConfig::new("/dev/sim");
        cfg.model = Model::Tiantong;
        assert_eq!(cfg.deletes_per_line(), 1);
        cfg.concatenation = Some(true);
        assert_eq!(cfg.deletes_per_line(), 10, "the config overrides the model");
        cfg.concatenation = None;
        let mut b = Bench::with(cfg, SimConfig::default());
        storm(&mut b, 0, 2);
        b.run_until(count_inbound(2), 5);
        let receipts: Vec<_> = inbound(&b.take()).into_iter().map(|(_, _, r)| r).collect();
        let mark = b.wire_out.len();
        b.modem
            .submit_all(b.now, receipts.into_iter().map(DriverCommand::Release));
        b.pump();
        assert_eq!(lines_since(&b, mark), ["AT+CMGD=0", "AT+CMGD=1"]);
    }

    #[test]
    fn a_failing_deletion_in_a_line_sends_each_again_and_nothing_is_lost() {
        let mut b = Bench::new(SimConfig::default());
        storm(&mut b, 0, 4);
        b.run_until(count_inbound(4), 5);
        let receipts: Vec<_> = inbound(&b.take()).into_iter().map(|(_, _, r)| r).collect();
        // Index 1 vanishes behind the driver's back (someone else deleted it).
        b.sim.handle_rx(b.now, b"AT+CMGD=1\r");
        while b.sim.poll_transmit().is_some() {}
        let mark = b.wire_out.len();
        b.modem
            .submit_all(b.now, receipts.into_iter().map(DriverCommand::Release));
        b.pump();
        assert_eq!(
            lines_since(&b, mark),
            [
                "AT+CMGD=0;+CMGD=1;+CMGD=2;+CMGD=3",
                "AT+CMGR=0",
                "AT+CMGR=1",
                "AT+CMGR=2",
                "AT+CMGD=2",
                "AT+CMGR=3",
                "AT+CMGD=3"
            ],
            "+CMS ERROR: 321 at the second: the first was done; each is read again, and \
             only those still holding the released message are deleted"
        );
        assert!(b.sim.stored_indexes().is_empty());
        // A +CMS ERROR is no refusal of concatenation: the next burst is one line again.
        storm(&mut b, 4, 2);
        b.run_until(count_inbound(2), 5);
        let receipts: Vec<_> = inbound(&b.take()).into_iter().map(|(_, _, r)| r).collect();
        let mark = b.wire_out.len();
        b.modem
            .submit_all(b.now, receipts.into_iter().map(DriverCommand::Release));
        b.pump();
        assert_eq!(lines_since(&b, mark), ["AT+CMGD=0;+CMGD=1"]);
    }

    #[test]
    fn port_lost_between_report_and_release_reports_them_again_after_reopen() {
        let mut b = Bench::new(SimConfig::default());
        storm(&mut b, 0, 8);
        b.run_until(count_inbound(8), 5);
        let first = inbound(&b.take());
        assert_eq!(first.len(), 8);
        // Three committed and released before the crash; their deletion went out.
        b.modem.submit_all(
            b.now,
            first
                .iter()
                .take(3)
                .map(|(_, _, r)| DriverCommand::Release(r.clone())),
        );
        b.pump();
        assert_eq!(b.sim.stored_indexes(), [3, 4, 5, 6, 7]);
        // The port drops before the other five were released.
        b.modem.handle_port_lost(b.now);
        b.sim.handle_power_cycle(b.now);
        b.take();
        b.modem.handle_port_opened(b.now);
        b.run_until(count_inbound(5), 60);
        let again = inbound(&b.take());
        let want: Vec<_> = first.iter().skip(3).cloned().collect();
        assert_eq!(again, want, "everything not yet released, once each");
        let mark = b.wire_out.len();
        b.modem.submit_all(
            b.now,
            again
                .iter()
                .map(|(_, _, r)| DriverCommand::Release(r.clone())),
        );
        b.pump();
        assert_eq!(
            lines_since(&b, mark),
            ["AT+CMGD=3;+CMGD=4;+CMGD=5;+CMGD=6;+CMGD=7"]
        );
        assert!(b.sim.stored_indexes().is_empty());
        b.advance(60);
        assert!(inbound(&b.take()).is_empty());
    }

    #[test]
    fn a_storm_with_releases_interleaved_reports_each_reply_exactly_once() {
        let mut b = Bench::new(SimConfig::default());
        b.take();
        let mut seen: Vec<(String, String, InboundReceipt)> = Vec::new();
        let mut next = 0;
        // Waves of replies; each wave's releases come while the next wave arrives, so
        // slots are freed and refilled and listings run with deletions pending.
        for wave in 0..12 {
            storm(&mut b, next, 17);
            next += 17;
            let pending: Vec<_> = inbound(&b.take());
            for (_, _, r) in &pending {
                b.modem.submit(b.now, DriverCommand::Release(r.clone()));
            }
            seen.extend(pending);
            b.advance(1);
            assert!(b.sim.stored_indexes().len() <= 34, "wave {wave}");
        }
        b.advance(1);
        seen.extend(inbound(&b.take()));
        assert_eq!(seen.len(), next, "every reply reported");
        let mut senders: Vec<_> = seen.iter().map(|(f, _, _)| f.clone()).collect();
        senders.sort();
        senders.dedup();
        assert_eq!(senders.len(), next, "none twice");
        for (from, text, _) in &seen {
            let i: usize = from[6..].parse().unwrap();
            assert_eq!(text, &format!("1 K{i:03}"));
        }
    }

    /// A modem past init, driven by hand: what it writes, answered line by line.
    fn ready_modem(cfg: ModemConfig) -> Modem {
        let mut m = Modem::new(cfg, T0);
        m.handle_port_opened(T0);
        while m.poll_transmit().is_some() {
            m.handle_rx(T0, b"\r\nOK\r\n");
        }
        assert!(m.is_ready());
        while m.poll_event().is_some() {}
        m
    }

    fn written(m: &mut Modem) -> Vec<String> {
        std::iter::from_fn(|| m.poll_transmit())
            .map(|b| String::from_utf8_lossy(&b).trim_end().to_owned())
            .collect()
    }

    /// A `+CMGL` answer listing `idxs` (one stored SMS-DELIVER each), then OK.
    fn listing(idxs: &[u32]) -> Vec<u8> {
        let pdu = "0891683108100005F0040D91683119325476F800004270100103002305C1E1121403";
        let mut out = String::new();
        for i in idxs {
            out.push_str(&format!("\r\n+CMGL: {i},0,,25\r\n{pdu}\r\n"));
        }
        out.push_str("\r\nOK\r\n");
        out.into_bytes()
    }

    #[test]
    fn while_replies_wait_deletions_go_a_full_line_at_a_time() {
        let release = |i: &str| DriverCommand::Release(InboundReceipt(i.to_owned()));
        for per_line in [10, 1] {
            let mut cfg = ModemConfig::new("/dev/x");
            cfg.delete_batch = per_line;
            let mut m = ready_modem(cfg);
            m.handle_rx(T0, b"\r\n+CMTI: \"ME\",0\r\n\r\n+CMTI: \"ME\",1\r\n");
            assert_eq!(written(&mut m), ["AT+CMGL=0"]);
            m.handle_rx(T0, &listing(&[0, 1]));
            // Nothing to read: a release goes at once, alone.
            m.submit(T0, release("0"));
            assert_eq!(written(&mut m), ["AT+CMGD=0"]);
            m.handle_rx(T0, b"\r\nOK\r\n");
            m.handle_rx(T0, b"\r\n+CMTI: \"ME\",2\r\n\r\n+CMTI: \"ME\",3\r\n");
            assert_eq!(written(&mut m), ["AT+CMGL=0"]);
            // While the listing is out: a release, and two more replies.
            m.submit(T0, release("1"));
            m.handle_rx(T0, b"\r\n+CMTI: \"ME\",4\r\n\r\n+CMTI: \"ME\",5\r\n");
            m.handle_rx(T0, &listing(&[2, 3]));
            if per_line == 10 {
                // One deletion is no full line: the waiting replies are read first.
                assert_eq!(written(&mut m), ["AT+CMGL=0"]);
                m.handle_rx(T0, &listing(&[4, 5]));
                assert_eq!(written(&mut m), ["AT+CMGD=1"]);
            } else {
                // One per line is a full line: it goes before the waiting replies.
                assert_eq!(written(&mut m), ["AT+CMGD=1"]);
                m.handle_rx(T0, b"\r\nOK\r\n");
                assert_eq!(written(&mut m), ["AT+CMGL=0"]);
                m.handle_rx(T0, &listing(&[4, 5]));
            }
            let reported = std::iter::from_fn(|| m.poll_event())
                .filter(|e| matches!(e, DriverEvent::Inbound { .. }))
                .count();
            assert_eq!(reported, 6, "delete_batch {per_line}");
        }
    }

    #[test]
    fn deletions_keep_pace_with_a_long_storm_so_storage_never_fills() {
        // Driven by hand: each round 25 replies are announced and the last round's 25
        // releases arrive while a command is out, so every listing reads more than a
        // deletion line holds. Deletions must not fall behind, or a real modem's storage
        // fills and the network's next replies are refused.
        let mut m = ready_modem(ModemConfig::new("/dev/x"));
        let (mut announced, mut deleted) = (0u32, 0u32);
        let mut unread: Vec<u32> = Vec::new();
        let mut to_release: Vec<u32> = Vec::new();
        let mut most = 0;
        let mut out: Vec<String> = Vec::new();
        for _ in 0..40 {
            for _ in 0..25 {
                m.handle_rx(T0, format!("\r\n+CMTI: \"ME\",{announced}\r\n").as_bytes());
                unread.push(announced);
                announced += 1;
            }
            m.submit_all(
                T0,
                to_release
                    .drain(..)
                    .map(|i| DriverCommand::Release(InboundReceipt(i.to_string()))),
            );
            // Answer until a listing was answered; what follows it is out when the next
            // round's replies and releases arrive.
            loop {
                out.extend(written(&mut m));
                let Some(cmd) = (!out.is_empty()).then(|| out.remove(0)) else {
                    break;
                };
                if cmd == "AT+CMGL=0" || cmd.starts_with("AT+CMGR=") {
                    let listed: Vec<u32> = if cmd == "AT+CMGL=0" {
                        std::mem::take(&mut unread)
                    } else {
                        let i: u32 = cmd["AT+CMGR=".len()..].parse().unwrap();
                        unread.retain(|u| *u != i);
                        vec![i]
                    };
                    m.handle_rx(T0, &listing(&listed));
                    to_release.extend(listed);
                    break;
                }
                let n = cmd.matches("+CMGD=").count() as u32;
                assert!(n > 0, "{cmd}");
                deleted += n;
                m.handle_rx(T0, b"\r\nOK\r\n");
            }
            most = most.max(announced - deleted);
        }
        assert!(most <= 25 * 2 + 10, "storage held {most}");
    }

    #[test]
    fn a_re_announced_reply_is_not_reported_again_before_its_release() {
        let mut b = Bench::new(SimConfig::default());
        storm(&mut b, 0, 2);
        b.run_until(count_inbound(2), 5);
        b.take();
        let mark = b.wire_out.len();
        b.modem
            .handle_rx(b.now, b"\r\n+CMTI: \"ME\",0\r\n+CMTI: \"ME\",1\r\n");
        b.advance(1);
        assert!(lines_since(&b, mark).is_empty());
        assert!(inbound(&b.take()).is_empty());
    }

    #[test]
    fn an_announced_reply_read_already_is_read_on_its_own_after_the_listing() {
        let mut b = Bench::new(SimConfig::default());
        b.take();
        storm(&mut b, 0, 3);
        let mut announced = Vec::new();
        while let Some(bytes) = b.sim.poll_transmit() {
            announced.extend(bytes);
        }
        // Someone (an AT+CMGR whose answer was lost) read index 1 before the driver
        // listed: AT+CMGL=0 does not show it.
        b.sim.handle_rx(b.now, b"AT+CMGR=1\r");
        while b.sim.poll_transmit().is_some() {}
        let mark = b.wire_out.len();
        b.modem.handle_rx(b.now, &announced);
        b.run_until(count_inbound(3), 5);
        assert_eq!(lines_since(&b, mark), ["AT+CMGL=0", "AT+CMGR=1"]);
        let got = inbound(&b.take());
        let mut idx: Vec<_> = got.iter().flat_map(|(_, _, r)| parse_receipt(r)).collect();
        idx.sort();
        assert_eq!(idx, [0, 1, 2]);
    }

    #[test]
    fn a_listing_that_never_answers_falls_back_to_listing_everything() {
        let mut b = Bench::new(SimConfig::default());
        b.take();
        b.sim.set_faults(Faults {
            silence_rate: 1.0,
            ..Faults::default()
        });
        storm(&mut b, 0, 3);
        b.pump();
        // Two tries of AT+CMGL=0 go unanswered (the modem may have marked them read).
        b.advance(65);
        b.sim.set_faults(Faults::default());
        b.run_until(count_inbound(3), 120);
        let wire = String::from_utf8_lossy(&b.wire_out).into_owned();
        let after = wire.rsplit("AT+CMGL=0\r").next().unwrap_or("");
        assert!(after.contains("AT+CMGL=4\r"), "{after:?}");
        assert_eq!(inbound(&b.take()).len(), 3);
    }

    // ---- voice ---------------------------------------------------------------------

    use crate::quirks::{Family, Model};
    use crate::sim::{CallBehaviour, CallScript};

    const CALLEE: &str = "+8613800138000";

    fn voice_modem(family: Family) -> ModemConfig {
        let mut c = ModemConfig::new("/dev/sim");
        c.voice = true;
        c.family = family;
        c.audio_path = Some("/dev/sim-audio".into());
        c
    }

    fn voice_sim(family: Family, behaviour: CallBehaviour) -> SimConfig {
        SimConfig {
            family,
            calls: vec![CallScript {
                number: CALLEE.into(),
                behaviour,
            }],
            default_script: ReplyBehaviour::Never,
            ..SimConfig::default()
        }
    }

    fn call(attempt: u64) -> DriverCommand {
        send(attempt, CALLEE, "【红色预警】山洪。按1确认")
    }

    fn terminal(e: &[DriverEvent], attempt: u64) -> Option<DriverEvent> {
        e.iter()
            .find(|e| {
                matches!(e, DriverEvent::Delivered { attempt: a, .. }
                    | DriverEvent::Failed { attempt: a, .. } if a.0 == attempt)
            })
            .cloned()
    }

    fn voice_bench(family: Family, behaviour: CallBehaviour) -> Bench {
        let mut b = Bench::with(voice_modem(family), voice_sim(family, behaviour));
        b.take();
        b
    }

    fn press_1() -> CallBehaviour {
        CallBehaviour::Press {
            answer_after_secs: 4.0,
            digit: '1',
            press_after_secs: 6.0,
        }
    }

    #[test]
    fn answered_and_key_1_is_an_inbound_ack_then_delivered_for_every_family() {
        for family in [Family::Quectel, Family::Simcom, Family::Generic] {
            let mut b = voice_bench(family, press_1());
            b.modem.submit_voice(b.now, call(9));
            b.run_until(|e| terminal(e, 9).is_some(), 120);
            let ev = b.take();
            let kinds: Vec<&str> = ev
                .iter()
                .filter_map(|e| match e {
                    DriverEvent::Accepted { .. } => Some("accepted"),
                    DriverEvent::Sent { .. } => Some("sent"),
                    DriverEvent::Inbound { .. } => Some("inbound"),
                    DriverEvent::Delivered { .. } => Some("delivered"),
                    DriverEvent::Failed { .. } => Some("failed"),
                    _ => None,
                })
                .collect();
            assert_eq!(
                kinds,
                ["accepted", "sent", "inbound", "delivered"],
                "{family:?}: {ev:#?}"
            );
            assert!(ev.contains(&DriverEvent::Sent {
                attempt: AttemptId(9),
                reference: "call-1".into()
            }));
            let (from, text, evidence, in_reply_to) = ev
                .iter()
                .find_map(|e| match e {
                    DriverEvent::Inbound {
                        from,
                        text,
                        evidence,
                        in_reply_to,
                        ..
                    } => Some((from.clone(), text.clone(), evidence.clone(), *in_reply_to)),
                    _ => None,
                })
                .unwrap();
            assert_eq!((from, text.as_str()), (phone(CALLEE), "1"));
            // The key answers the attempt the call was placed for.
            assert_eq!(in_reply_to, Some(AttemptId(9)));
            assert!(evidence.starts_with("DTMF 1 ("), "{evidence}");
            // Generic modems are polled, so the answer may be seen up to a second late.
            assert!(evidence.contains("in call-1 at +"), "{evidence}");
            let Some(DriverEvent::Delivered { evidence, .. }) = terminal(&ev, 9) else {
                unreachable!()
            };
            assert!(evidence.contains("digits: 1;"), "{evidence}");
            assert!(
                evidence.contains("ended by us after the key 1 ack"),
                "{evidence}"
            );
            // The simulated person heard real audio, paced without underruns.
            let heard = &b.sim.calls()[0];
            assert_eq!(heard.number, CALLEE);
            assert_eq!(heard.digits, "1");
            assert_eq!(heard.ended_by, "gateway hung up");
            assert_eq!(heard.audio.underruns, 0, "{family:?}");
            assert!(!heard.audio.is_silence());
            assert!(
                (4.5..=7.1).contains(&heard.audio.secs()),
                "{family:?} {:?}",
                heard.audio
            );
            assert!(!b.modem.in_call());
        }
    }

    #[test]
    fn listened_through_without_a_key_is_delivered_after_the_wait() {
        let mut b = voice_bench(
            Family::Quectel,
            CallBehaviour::Answer {
                answer_after_secs: 3.0,
            },
        );
        b.modem.submit_voice(b.now, call(1));
        b.run_until(|e| terminal(e, 1).is_some(), 120);
        let ev = b.take();
        assert!(!ev.iter().any(|e| matches!(e, DriverEvent::Inbound { .. })));
        let Some(DriverEvent::Delivered { evidence, .. }) = terminal(&ev, 1) else {
            panic!("{ev:#?}")
        };
        assert!(
            evidence.starts_with(
                "listened 20.0 s of 20.0 s; digits: none; ended by us: no key after the prompt"
            ),
            "{evidence}"
        );
        let heard = &b.sim.calls()[0];
        assert_eq!(heard.audio.underruns, 0);
        // 20 s of prompt and 8 s of silence waiting for a key.
        assert!(
            (27.9..=28.1).contains(&heard.audio.secs()),
            "{:?}",
            heard.audio
        );
        assert!(!heard.audio.is_silence());
    }

    #[test]
    fn busy_and_no_answer_fail_retryable_and_nothing_plays() {
        for (behaviour, want) in [
            (CallBehaviour::Busy, "busy (BUSY)"),
            (CallBehaviour::Never, "no answer within 30 s"),
        ] {
            for family in [Family::Quectel, Family::Generic] {
                let mut b = voice_bench(family, behaviour.clone());
                b.modem.submit_voice(b.now, call(2));
                b.run_until(|e| terminal(e, 2).is_some(), 120);
                let ev = b.take();
                let Some(DriverEvent::Failed {
                    retryable, reason, ..
                }) = terminal(&ev, 2)
                else {
                    panic!("{ev:#?}")
                };
                assert!(retryable);
                assert!(reason.starts_with(want), "{family:?}: {reason}");
                assert!(!ev.iter().any(|e| matches!(e, DriverEvent::Sent { .. })));
                assert_eq!(b.sim.calls().len(), 1);
                assert_eq!(b.sim.calls()[0].audio.frames, 0);
                assert_eq!(b.sim.stray_audio_bytes(), 0);
            }
        }
    }

    fn assert_cancelled(ev: &[DriverEvent], attempt: u64, retryable: bool) {
        match terminal(ev, attempt) {
            Some(DriverEvent::Failed {
                retryable: r,
                reason,
                ..
            }) if r == retryable => assert!(reason.starts_with("cancelled; "), "{reason}"),
            other => panic!("{other:?}: {ev:#?}"),
        }
    }

    #[test]
    fn cancelling_a_ringing_call_hangs_up_and_fails_it_for_good() {
        for family in [Family::Quectel, Family::Simcom, Family::Generic] {
            let mut b = voice_bench(family, CallBehaviour::Never);
            b.modem.submit_voice(b.now, call(5));
            b.advance(5);
            assert!(b.modem.in_call(), "{family:?}: still ringing");
            b.modem
                .submit_voice(b.now, DriverCommand::Cancel(AttemptId(5)));
            b.run_until(|e| terminal(e, 5).is_some(), 10);
            let ev = b.take();
            assert_cancelled(&ev, 5, false);
            assert!(!ev.iter().any(|e| matches!(e, DriverEvent::Sent { .. })));
            let hangup = format!("{}\r", family.hangup());
            let wire = String::from_utf8_lossy(&b.wire_out);
            assert!(
                wire.contains(&hangup),
                "{family:?} hangs up with {hangup}: {wire}"
            );
            assert_eq!(b.sim.calls()[0].ended_by, "gateway hung up");
            assert!(!b.modem.in_call());
            // Well before the 30 s ring timeout.
            assert!(b.now < T0 + Duration::from_secs(15), "{}", b.now);
        }
    }

    #[test]
    fn cancelling_an_answered_call_stops_the_prompt() {
        let mut b = voice_bench(
            Family::Quectel,
            CallBehaviour::Answer {
                answer_after_secs: 3.0,
            },
        );
        b.modem.submit_voice(b.now, call(6));
        b.run_until(
            |e| e.iter().any(|e| matches!(e, DriverEvent::Sent { .. })),
            30,
        );
        b.advance(2);
        b.modem
            .submit_voice(b.now, DriverCommand::Cancel(AttemptId(6)));
        b.run_until(|e| terminal(e, 6).is_some(), 10);
        let ev = b.take();
        assert_cancelled(&ev, 6, false);
        let heard = &b.sim.calls()[0];
        assert_eq!(heard.ended_by, "gateway hung up");
        assert!(heard.audio.secs() < 3.0, "{:?}", heard.audio);
        assert!(!b.modem.in_call());
        // The modem is free again: a queued cancel of a call no longer there does nothing.
        b.modem
            .submit_voice(b.now, DriverCommand::Cancel(AttemptId(6)));
        assert_eq!(b.modem.poll_voice_event(), None);
    }

    #[test]
    fn cancelling_a_queued_call_removes_it_and_the_running_one_goes_on() {
        let mut b = voice_bench(Family::Quectel, press_1());
        b.modem.submit_voice(b.now, call(7));
        b.modem.submit_voice(b.now, call(8));
        b.modem
            .submit_voice(b.now, DriverCommand::Cancel(AttemptId(8)));
        b.run_until(|e| terminal(e, 7).is_some(), 120);
        let ev = b.take();
        assert_eq!(terminal(&ev, 8), None, "dropped without a report");
        assert!(matches!(
            terminal(&ev, 7),
            Some(DriverEvent::Delivered { .. })
        ));
        assert_eq!(
            b.sim.calls().len(),
            1,
            "the cancelled call was never dialled"
        );
    }

    #[test]
    fn early_hang_up_cuts_the_prompt_and_fails_retryable() {
        for family in [Family::Quectel, Family::Simcom, Family::Generic] {
            let mut b = voice_bench(
                family,
                CallBehaviour::HangUp {
                    answer_after_secs: 2.0,
                    hang_up_after_secs: 5.0,
                },
            );
            b.modem.submit_voice(b.now, call(3));
            b.run_until(|e| terminal(e, 3).is_some(), 120);
            let ev = b.take();
            let Some(DriverEvent::Failed {
                retryable, reason, ..
            }) = terminal(&ev, 3)
            else {
                panic!("{ev:#?}")
            };
            assert!(retryable);
            assert!(
                reason.starts_with("answered but the prompt was cut off after"),
                "{reason}"
            );
            assert!(reason.contains("hung up by the callee"), "{reason}");
            assert_eq!(b.sim.calls()[0].ended_by, "callee hung up");
            assert!(!b.modem.in_call());
        }
    }

    #[test]
    fn a_handset_without_dtmf_reports_is_reached_only() {
        let mut cfg = voice_modem(Family::Generic);
        cfg.model = Model::Iridium9555;
        let mut sim = voice_sim(Family::Generic, press_1());
        sim.dtmf_reports = false;
        let mut b = Bench::with(cfg, sim);
        b.take();
        b.modem.submit_voice(b.now, call(4));
        b.run_until(|e| terminal(e, 4).is_some(), 200);
        let ev = b.take();
        assert!(!ev.iter().any(|e| matches!(e, DriverEvent::Inbound { .. })));
        let Some(DriverEvent::Delivered { evidence, .. }) = terminal(&ev, 4) else {
            panic!("{ev:#?}")
        };
        assert!(
            evidence.starts_with("reached (no DTMF); listened 20.0 s of 20.0 s; digits: none"),
            "{evidence}"
        );
        // Dialled the Iridium way, and the person did press 1: only SMS can carry the ack.
        assert!(
            evidence.ends_with("call-1 to 008613800138000"),
            "{evidence}"
        );
        assert_eq!(b.sim.calls()[0].digits, "1");
    }

    #[test]
    fn sms_waits_while_a_call_is_up_then_goes() {
        let mut b = voice_bench(Family::Simcom, press_1());
        b.modem.submit_voice(b.now, call(5));
        b.run_until(
            |e| {
                e.iter().any(|e| {
                    matches!(
                        e,
                        DriverEvent::Sent {
                            attempt: AttemptId(5),
                            ..
                        }
                    )
                })
            },
            60,
        );
        b.submit(send(6, CALLEE, "短信 回复 1 K7XT"));
        assert!(b.modem.in_call());
        b.advance(2);
        assert_eq!(b.modem.queued(), 1, "held, not failed, during the call");
        assert!(b.sim.submits().is_empty());
        b.run_until(
            |e| {
                e.iter().any(|e| {
                    matches!(
                        e,
                        DriverEvent::Sent {
                            attempt: AttemptId(6),
                            ..
                        }
                    )
                })
            },
            60,
        );
        let ev = b.take();
        let pos = |f: &dyn Fn(&DriverEvent) -> bool| ev.iter().position(f).unwrap();
        let delivered = pos(&|e| {
            matches!(
                e,
                DriverEvent::Delivered {
                    attempt: AttemptId(5),
                    ..
                }
            )
        });
        let sent = pos(&|e| {
            matches!(
                e,
                DriverEvent::Sent {
                    attempt: AttemptId(6),
                    ..
                }
            )
        });
        assert!(delivered < sent, "{ev:#?}");
        assert_eq!(b.sim.sms_refused_in_call(), 0);
        assert_eq!(b.sim.submits().len(), 1);
    }

    #[test]
    fn a_call_without_an_open_audio_port_is_refused_retryable() {
        let mut b = voice_bench(Family::Quectel, press_1());
        b.modem
            .handle_audio_port(b.now, Err("No such file or directory".into()));
        b.modem.submit_voice(b.now, call(7));
        b.pump();
        let ev = b.take();
        let Some(DriverEvent::Failed {
            retryable, reason, ..
        }) = terminal(&ev, 7)
        else {
            panic!("{ev:#?}")
        };
        assert!(retryable);
        assert!(
            reason.starts_with("audio port not open (No such file"),
            "{reason}"
        );
        assert!(b.sim.calls().is_empty() && !b.sim.in_call());
    }

    #[test]
    fn voice_init_adds_the_family_setup() {
        let mut m = Modem::new(voice_modem(Family::Quectel), T0);
        m.handle_port_opened(T0);
        let mut sent = Vec::new();
        while let Some(bytes) = m.poll_transmit() {
            sent.push(String::from_utf8(bytes).unwrap());
            m.handle_rx(T0, b"\r\nOK\r\n");
        }
        assert_eq!(
            &sent[14..],
            [
                "AT+QPCMV=1,0\r",
                "AT+QINDCFG=\"ccinfo\",1,0\r",
                "AT+QTONEDET=1\r"
            ]
        );
        assert!(m.is_ready());
    }

    // ---- no network, no sends ------------------------------------------------------

    fn health(e: &[DriverEvent]) -> Vec<Health> {
        e.iter()
            .filter_map(|e| match e {
                DriverEvent::Health(h) => Some(h.clone()),
                _ => None,
            })
            .collect()
    }

    fn failed(e: &[DriverEvent]) -> Vec<DriverEvent> {
        e.iter()
            .filter(|e| matches!(e, DriverEvent::Failed { .. }))
            .cloned()
            .collect()
    }

    fn count_sent(n: usize) -> impl Fn(&[DriverEvent]) -> bool {
        move |e| {
            e.iter()
                .filter(|e| matches!(e, DriverEvent::Sent { .. }))
                .count()
                >= n
        }
    }

    #[test]
    fn a_lost_network_holds_sends_until_registration_returns() {
        let mut b = Bench::new(SimConfig::default());
        b.take();
        b.sim.lose_network(b.now, Duration::from_secs(90));
        b.pump();
        // Pushed +CREG: 2 (the driver enabled it at init): down at once.
        let h = health(&b.take());
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(!h[0].up && !h[0].registered);
        assert_eq!(
            h[0].last_error.as_deref(),
            Some("not registered (searching)")
        );
        let wire_from = b.wire_out.len();
        b.submit(send(1, "+8613800138000", "红色预警 回复 1 K7XT"));
        b.submit(send(2, "+8613800138001", "红色预警 回复 1 K7XU"));
        b.advance(60);
        let ev = b.take();
        assert!(failed(&ev).is_empty(), "nothing fails: {ev:#?}");
        assert_eq!(b.modem.queued(), 2);
        let lines = lines_since(&b, wire_from);
        assert!(
            !lines.iter().any(|l| l.starts_with("AT+CMGS")),
            "no submit while unregistered: {lines:?}"
        );
        assert!(b.sim.submits().is_empty() && b.sim.refused_no_network() == 0);
        // The polls go on meanwhile (and find it searching).
        assert!(lines.iter().any(|l| l == "AT+CREG?"), "{lines:?}");
        // Back at 90 s: up again, both go out, and their reports come.
        b.run_until(count_sent(2), 60);
        assert!(b.now >= T0 + Duration::from_secs(90), "{}", b.now);
        let ev = b.take();
        let h = health(&ev);
        assert!(
            h.first()
                .is_some_and(|h| h.up && h.registered && h.last_error.is_none()),
            "{h:?}"
        );
        assert!(failed(&ev).is_empty(), "{ev:#?}");
        b.run_until(
            |e| {
                e.iter()
                    .filter(|e| matches!(e, DriverEvent::Delivered { .. }))
                    .count()
                    == 2
            },
            30,
        );
    }

    /// A modem past init whose health polls say `creg`, `cgreg`, `cereg` (stat or refused).
    fn poll_round(m: &mut Modem, now: Timestamp, answers: [Option<&str>; 3]) {
        m.handle_timeout(now);
        let wrote = written(m);
        assert_eq!(wrote, ["AT+CSQ"], "the round starts with the signal");
        m.handle_rx(now, b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n");
        for (cmd, answer) in ["AT+CREG?", "AT+CGREG?", "AT+CEREG?"]
            .into_iter()
            .zip(answers)
        {
            assert_eq!(written(m), [cmd]);
            let reply = match answer {
                Some(line) => format!("\r\n{line}\r\n\r\nOK\r\n"),
                None => "\r\n+CME ERROR: 3\r\n".to_owned(),
            };
            m.handle_rx(now, reply.as_bytes());
        }
    }

    fn health_events(m: &mut Modem) -> Vec<Health> {
        let ev: Vec<_> = std::iter::from_fn(|| m.poll_event()).collect();
        health(&ev)
    }

    #[test]
    fn polled_registration_on_any_domain_counts_and_none_means_down() {
        let mut m = ready_modem(ModemConfig::new("/dev/x"));
        let mut now = T0;
        let mut round = |m: &mut Modem, answers| {
            now = now + Duration::from_secs(10);
            poll_round(m, now, answers);
            health_events(m)
        };
        // Searching on every domain: down, and why.
        let h = round(
            &mut m,
            [Some("+CREG: 0,2"), Some("+CGREG: 0,2"), Some("+CEREG: 0,2")],
        );
        assert_eq!(h.len(), 1);
        assert!(!h[0].up);
        assert_eq!(
            h[0].last_error.as_deref(),
            Some("not registered (searching)")
        );
        // Denied on CS, no GPRS answer, LTE home: an LTE-only modem is up.
        let h = round(&mut m, [Some("+CREG: 0,3"), None, Some("+CEREG: 0,1")]);
        assert!(
            h.len() == 1 && h[0].up && h[0].registered && h[0].last_error.is_none(),
            "{h:?}"
        );
        // Roaming on CS only: up; nothing changed, nothing said.
        let h = round(
            &mut m,
            [Some("+CREG: 0,5"), Some("+CGREG: 0,0"), Some("+CEREG: 0,4")],
        );
        assert!(h.is_empty(), "{h:?}");
        // Denied everywhere it answers.
        let h = round(&mut m, [Some("+CREG: 0,3"), None, None]);
        assert_eq!(h[0].last_error.as_deref(), Some("registration denied"));
        // Not a single answer: the modem cannot say, so sends may try again.
        let h = round(&mut m, [None, None, None]);
        assert!(h.len() == 1 && h[0].up && !h[0].registered, "{h:?}");
    }

    #[test]
    fn a_pushed_loss_on_one_domain_polls_the_others_before_any_send() {
        let mut m = ready_modem(ModemConfig::new("/dev/x"));
        let now = T0 + Duration::from_secs(10);
        poll_round(&mut m, now, [Some("+CREG: 0,1"), None, Some("+CEREG: 0,1")]);
        assert!(health_events(&mut m).iter().all(|h| h.up));
        m.submit(now, send(1, "+8613800138000", "ACK 1"));
        assert!(written(&mut m)[0].starts_with("AT+CMGS="));
        m.handle_rx(now, b"\r\n> ");
        written(&mut m);
        m.submit(now, send(2, "+8613800138001", "ACK 2"));
        // Only CS is pushed; EPS still reads home from the last poll.
        m.handle_rx(now, b"\r\n+CREG: 2\r\n");
        m.handle_rx(now, b"\r\n+CMGS: 3\r\n\r\nOK\r\n");
        assert_eq!(
            written(&mut m),
            ["AT+CREG?"],
            "asked again before the next send"
        );
        m.handle_rx(now, b"\r\n+CREG: 0,2\r\n\r\nOK\r\n");
        assert_eq!(written(&mut m), ["AT+CGREG?"]);
        m.handle_rx(now, b"\r\n+CME ERROR: 3\r\n");
        assert_eq!(written(&mut m), ["AT+CEREG?"]);
        m.handle_rx(now, b"\r\n+CEREG: 0,2\r\n\r\nOK\r\n");
        let h = health_events(&mut m);
        assert!(h.iter().any(|h| !h.up), "{h:?}");
        assert!(written(&mut m).is_empty(), "send 2 waits");
        assert_eq!(m.queued(), 1);
    }

    #[test]
    fn a_submit_finding_no_network_flips_the_modem_down_and_the_send_waits() {
        for (refusal, want) in [
            ("+CMS ERROR: 331", "331"),
            ("+CMS ERROR: 332", "332"),
            ("+CME ERROR: 30", "30"),
        ] {
            let mut m = ready_modem(ModemConfig::new("/dev/x"));
            m.submit(T0, send(1, "+8613800138000", "ACK 1"));
            m.submit(T0, send(2, "+8613800138001", "ACK 2"));
            let first = written(&mut m);
            assert!(first[0].starts_with("AT+CMGS="), "{first:?}");
            m.handle_rx(T0, b"\r\n> ");
            let body = written(&mut m);
            m.handle_rx(T0, format!("\r\n{refusal}\r\n").as_bytes());
            let ev: Vec<_> = std::iter::from_fn(|| m.poll_event()).collect();
            assert!(failed(&ev).is_empty(), "{refusal}: not failed: {ev:#?}");
            let h = health(&ev);
            assert_eq!(h.len(), 1, "{refusal}: {ev:#?}");
            assert!(!h[0].up && !h[0].registered);
            assert!(
                h[0].last_error.as_deref().is_some_and(|e| e.contains(want)),
                "{h:?}"
            );
            assert_eq!(m.queued(), 2, "{refusal}: back in front of the queue");
            assert!(
                written(&mut m).is_empty(),
                "{refusal}: nothing more goes out"
            );
            // Registration pushed back: up, and the same send goes first.
            m.handle_rx(T0, b"\r\n+CEREG: 1,\"5A1F\",\"0B2C3D4E\",7\r\n");
            let h = health_events(&mut m);
            assert!(h.len() == 1 && h[0].up, "{h:?}");
            assert_eq!(written(&mut m), first);
            m.handle_rx(T0, b"\r\n> ");
            assert_eq!(written(&mut m), body);
        }
    }

    #[test]
    fn a_long_text_cut_by_the_network_resumes_with_the_part_that_failed() {
        let mut m = ready_modem(ModemConfig::new("/dev/x"));
        m.submit(T0, send(7, "+8613800138000", WARNING));
        let mut bodies = Vec::new();
        for mr in 0..2 {
            assert!(written(&mut m)[0].starts_with("AT+CMGS="));
            m.handle_rx(T0, b"\r\n> ");
            bodies.push(written(&mut m));
            if mr == 0 {
                m.handle_rx(T0, b"\r\n+CMGS: 40\r\n\r\nOK\r\n");
            } else {
                m.handle_rx(T0, b"\r\n+CMS ERROR: 331\r\n");
            }
        }
        let ev: Vec<_> = std::iter::from_fn(|| m.poll_event()).collect();
        assert!(
            failed(&ev).is_empty() && health(&ev).iter().any(|h| !h.up),
            "{ev:#?}"
        );
        assert_eq!(m.queued(), 0, "still the send in progress, paused");
        assert!(written(&mut m).is_empty());
        m.handle_rx(T0, b"\r\n+CREG: 1\r\n");
        assert!(written(&mut m)[0].starts_with("AT+CMGS="));
        m.handle_rx(T0, b"\r\n> ");
        assert_eq!(written(&mut m), bodies[1], "part 2 again, same PDU");
        m.handle_rx(T0, b"\r\n+CMGS: 41\r\n\r\nOK\r\n");
        m.handle_rx(T0, b"\r\n> ");
        written(&mut m);
        m.handle_rx(T0, b"\r\n+CMGS: 42\r\n\r\nOK\r\n");
        let ev: Vec<_> = std::iter::from_fn(|| m.poll_event()).collect();
        assert!(
            ev.contains(&DriverEvent::Sent {
                attempt: AttemptId(7),
                reference: "40,41,42".into()
            }),
            "{ev:#?}"
        );
    }

    #[test]
    fn a_send_waiting_for_the_network_is_dropped_when_the_router_moves_it() {
        let mut m = ready_modem(ModemConfig::new("/dev/x"));
        m.submit(T0, send(1, "+8613800138000", "ACK 1"));
        written(&mut m);
        m.handle_rx(T0, b"\r\n> ");
        written(&mut m);
        m.handle_rx(T0, b"\r\n+CMS ERROR: 331\r\n");
        while m.poll_event().is_some() {}
        // The router abandons it (device down) and cancels it here.
        m.submit(T0, DriverCommand::Cancel(AttemptId(1)));
        assert_eq!(
            m.poll_event(),
            None,
            "no report: a failure would end its route"
        );
        assert_eq!(m.queued(), 0);
        m.handle_rx(T0, b"\r\n+CREG: 5\r\n");
        assert!(health_events(&mut m).iter().any(|h| h.up));
        assert!(written(&mut m).is_empty(), "nothing left to send");
    }

    #[test]
    fn a_cancel_while_the_part_is_on_the_line_drops_it_if_the_network_is_gone() {
        let mut m = ready_modem(ModemConfig::new("/dev/x"));
        m.submit(T0, send(1, "+8613800138000", "ACK 1"));
        written(&mut m);
        m.handle_rx(T0, b"\r\n> ");
        written(&mut m);
        m.submit(T0, DriverCommand::Cancel(AttemptId(1)));
        m.handle_rx(T0, b"\r\n+CMS ERROR: 331\r\n");
        let ev: Vec<_> = std::iter::from_fn(|| m.poll_event()).collect();
        assert!(failed(&ev).is_empty(), "{ev:#?}");
        assert_eq!(m.queued(), 0);
        m.handle_rx(T0, b"\r\n+CREG: 1\r\n");
        assert!(written(&mut m).is_empty());
    }

    #[test]
    fn garbage_registration_lines_are_unrecognized_and_change_nothing() {
        let mut m = ready_modem(ModemConfig::new("/dev/x"));
        for junk in [
            "+CREG:",
            "+CREG: ,,,",
            "+CREG: 99999",
            "+CEREG: x",
            "+CGREG: 1,abc",
            "+CREG: 1,999,\"",
        ] {
            m.handle_rx(T0, format!("\r\n{junk}\r\n").as_bytes());
            let ev: Vec<_> = std::iter::from_fn(|| m.poll_event()).collect();
            assert_eq!(
                ev,
                [DriverEvent::Unrecognized {
                    raw: junk.to_owned()
                }]
            );
        }
        m.submit(T0, send(1, "+8613800138000", "ACK 1"));
        assert!(written(&mut m)[0].starts_with("AT+CMGS="), "still sending");
    }

    proptest::proptest! {
        #[test]
        fn registration_bytes_never_panic_the_modem(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let mut m = ready_modem(ModemConfig::new("/dev/x"));
            for prefix in [&b"\r\n+CREG: "[..], b"\r\n+CEREG: ", b"\r\n+CGREG:"] {
                let mut bytes = prefix.to_vec();
                bytes.extend_from_slice(&tail);
                bytes.extend_from_slice(b"\r\n");
                m.handle_rx(T0, &bytes);
            }
            while m.poll_event().is_some() {}
        }
    }

    #[test]
    fn a_call_waits_for_the_network_instead_of_failing() {
        let mut b = voice_bench(Family::Quectel, press_1());
        // The network goes just as the call is placed: ATD meets +CME ERROR: 30.
        b.sim.lose_network(b.now, Duration::from_secs(40));
        b.modem.submit_voice(b.now, call(9));
        b.pump();
        let ev = b.take();
        assert!(terminal(&ev, 9).is_none(), "{ev:#?}");
        assert!(health(&ev).iter().any(|h| !h.up), "{ev:#?}");
        assert_eq!(b.modem.calls_queued(), 1, "back in the queue");
        assert!(b.sim.calls().is_empty());
        b.run_until(|e| terminal(e, 9).is_some(), 120);
        assert!(matches!(
            terminal(&b.take(), 9),
            Some(DriverEvent::Delivered { .. })
        ));
        assert!(b.now >= T0 + Duration::from_secs(40));
    }

    #[test]
    fn a_ringing_call_dropped_with_the_network_is_placed_again_when_it_is_back() {
        let mut b = voice_bench(Family::Simcom, press_1());
        b.sim.set_faults(Faults::default());
        b.modem.submit_voice(b.now, call(10));
        b.advance(2);
        assert!(b.modem.in_call(), "ringing");
        b.sim.lose_network(b.now, Duration::from_secs(30));
        b.pump();
        let ev = b.take();
        assert!(terminal(&ev, 10).is_none(), "{ev:#?}");
        assert_eq!(b.sim.calls()[0].ended_by, "network lost");
        assert_eq!(b.modem.calls_queued(), 1);
        b.run_until(|e| terminal(e, 10).is_some(), 120);
        assert!(matches!(
            terminal(&b.take(), 10),
            Some(DriverEvent::Delivered { .. })
        ));
        assert_eq!(b.sim.calls().len(), 2);
    }

    #[test]
    fn a_ringing_call_moved_off_a_modem_that_lost_its_network_is_not_failed_for_good() {
        let mut b = voice_bench(Family::Quectel, CallBehaviour::Never);
        b.modem.submit_voice(b.now, call(11));
        b.advance(2);
        assert!(b.modem.in_call(), "ringing");
        b.sim.lose_network(b.now, Duration::from_secs(30));
        b.pump();
        // The router, told the device is down, abandons the call and cancels it here.
        assert!(health(&b.take()).iter().any(|h| !h.up));
        b.modem
            .submit_voice(b.now, DriverCommand::Cancel(AttemptId(11)));
        b.advance(60);
        let ev = b.take();
        assert_eq!(terminal(&ev, 11), None, "no failure for good: {ev:#?}");
        assert_eq!(b.modem.calls_queued(), 0);
        assert!(!b.modem.in_call());
        assert_eq!(b.sim.calls().len(), 1, "not dialled again after the cancel");
    }

    #[test]
    fn a_scripted_loss_from_the_sim_config_takes_the_modem_down_and_back() {
        let cfg = SimConfig {
            faults: Faults {
                network_loss: vec![crate::sim::NetworkLoss {
                    at_secs: 20.0,
                    for_secs: 15.0,
                }],
                ..Faults::default()
            },
            ..SimConfig::default()
        };
        let mut b = Bench::new(cfg);
        b.take();
        b.run_until(|e| health(e).iter().any(|h| !h.up), 30);
        assert_eq!(b.now, T0 + Duration::from_secs(20));
        b.run_until(|e| health(e).iter().any(|h| h.up), 30);
        assert_eq!(b.now, T0 + Duration::from_secs(35));
    }
}
