//! The trunk conversation as a sans-IO state machine: registration and many concurrent
//! calls, keyed by Call-ID.
//!
//! One call: INVITE with an SDP offer (retransmitted every T1, doubling, until a
//! provisional response; given up after 64×T1, RFC 3261 §17.1.1) → 1xx → 2xx → ACK →
//! the prompt as G.711 RTP, one 20 ms frame per deadline computed from the stream's start
//! so pacing never drifts (the start is the answer time, or up to 19 ms later so that many
//! calls spread over the 20 ms frame, see [`SLOT_SHARE`]) → key `1` (RFC 4733 or SIP INFO) is the ack, any other key replays
//! the prompt once → BYE. A 401/407 is answered once with Digest; no final answer within
//! the ring timeout sends CANCEL. The far end may hang up first (BYE from it).
//!
//! `DriverCommand::Cancel` (the record the call serves became final: an ack on another
//! bearer, an escalation confirmed, the alert cancelled) takes back a queued call; a
//! ringing one gets CANCEL (once a provisional response came, RFC 3261 §9.1) and an
//! answered one stops the prompt and gets BYE. Either ends `Failed { retryable: false }`
//! with a reason starting `cancelled`, except an answered call that had already played
//! the prompt through or taken key 1, which stays `Delivered`.
//!
//! Key presses count only from the far end. RTP on a call's media port is the far end's
//! when it comes from the address and port of the SDP answer (`c=`/`m=`), with the SSRC
//! the answer declares if it declares one (`a=ssrc`); when that address is private or
//! unusable seen from the trunk (the far end is behind NAT), the first packet carrying a
//! negotiated payload type fixes the far end's source and SSRC (symmetric RTP latching)
//! and our prompt goes back there. Anything else on the port is counted in
//! [`CallRecord::stray_media`], reported once per call as `Unrecognized` (and a warning
//! log), and never pressed: one forged datagram must not acknowledge a warning for a
//! person who never heard it. Telephone-events are read only on the answer's payload type
//! (ours when the answer names none).
//!
//! Every request goes to the configured trunk address (it acts as outbound proxy);
//! Record-Route is not honoured, which suits a single-hop trunk. Responses to the far
//! end's requests go back to where the request came from.
//!
//! Events per attempt: `Accepted` when queued, `Sent { reference: Call-ID }` on answer, an
//! `Inbound` "1" for the ack, and exactly one of `Delivered` (answered and the prompt
//! played through, or acknowledged) or `Failed` when the call is over. The full
//! [`CallRecord`] of every call is available from [`Trunk::poll_record`].
//!
//! Every state has a deadline, so an accepted attempt gets its outcome within
//! [`SipConfig::outcome_bound`] of being dialled whatever the far end or the network does
//! (silent, every response lost, a BYE never answered). A BYE from the far end while our
//! INVITE is pending (it answered, its 2xx never reached us) ends the call at once; a 2xx
//! arriving after the call was given up is acknowledged and hung up (§13.2.2.4), so
//! nobody is left on a silent line.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tocsin_channel::{DriverCommand, DriverEvent, Health, Outbound};
use tocsin_core::{Address, AttemptId, Timestamp};

use crate::config::SipConfig;
use crate::digest::Challenge;
use crate::g711::Codec;
use crate::prompt::{FRAME, PromptSource, ToneSource};
use crate::rtp::{DigitDetector, RtpPacket};
use crate::sdp::{self, Negotiated};
use crate::wire::{self, Message, Method, uri_of};
use tocsin_serial::pacer::{SLOTS, slot_of, slot_start};

/// 20 ms, one RTP frame.
const FRAME_MS: i64 = 20;
/// Frames sent back to back at most when the task was late; beyond that the stream skips
/// ahead so it stays in step with the clock (the skipped frames are counted as late).
const MAX_CATCH_UP: u64 = 10;
/// Calls that may send in the same 1 ms slot of the 20 ms frame before a newly answered
/// call's prompt starts in a later slot: 8 sends take well under 0.1 ms.
pub const SLOT_SHARE: usize = 8;
/// Finished call records kept for [`Trunk::poll_record`].
const RECORDS_KEPT: usize = 1024;
/// How long to wait before trying a failed registration again.
const REGISTER_RETRY: Duration = Duration::from_secs(30);

/// Which local socket a datagram came in on or goes out of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Socket {
    /// The SIP signalling socket.
    Sip,
    /// The RTP socket of one call slot, by local port.
    Rtp(u16),
}

/// One datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// From which socket.
    pub socket: Socket,
    /// To where.
    pub to: SocketAddr,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// What happened on one call, for the record.
#[derive(Clone, Debug, PartialEq)]
pub struct CallRecord {
    /// The attempt the call served.
    pub attempt: AttemptId,
    /// The SIP Call-ID.
    pub call_id: String,
    /// Who was called.
    pub callee: Address,
    /// When the first INVITE left.
    pub dialled_at: Timestamp,
    /// When the far end first said it was ringing (180/183).
    pub ringing_at: Option<Timestamp>,
    /// When it answered (2xx).
    pub answered_at: Option<Timestamp>,
    /// When the call was over.
    pub ended_at: Option<Timestamp>,
    /// Length of the prompt, seconds.
    pub prompt_secs: f64,
    /// How far into the prompt playback got, seconds.
    pub listened_secs: f64,
    /// Whether the prompt was played to its end at least once.
    pub listened: bool,
    /// Keys received, in order.
    pub digits: String,
    /// How the call ended, in words.
    pub ended: String,
    /// RTP frames sent.
    pub frames_sent: u64,
    /// Frames that were skipped or sent more than one frame late because the task lagged.
    pub late_frames: u64,
    /// RTP datagrams that reached the call's media port from somewhere other than the far
    /// end (another address or port, another SSRC) and were ignored: a key press among
    /// them is not an ack.
    pub stray_media: u64,
}

impl CallRecord {
    /// The evidence line of a `Delivered` or `Failed` event.
    pub fn evidence(&self) -> String {
        let digits = if self.digits.is_empty() {
            "none"
        } else {
            &self.digits
        };
        let secs = |t: Option<Timestamp>| {
            t.map_or("-".to_owned(), |t| {
                format!("+{:.1} s", t.since(self.dialled_at).as_secs_f64())
            })
        };
        let mut line = format!(
            "listened {:.1} s of {:.1} s; digits: {digits}; {}; ringing {}, answered {}; call {}",
            self.listened_secs,
            self.prompt_secs,
            self.ended,
            secs(self.ringing_at),
            secs(self.answered_at),
            self.call_id
        );
        if self.stray_media > 0 {
            line.push_str(&format!(
                "; ignored {} RTP packets not from the far end",
                self.stray_media
            ));
        }
        line
    }
}

/// Where a call is (RFC 3261 §17.1.1 and the dialog after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// INVITE sent, nothing heard yet.
    Calling,
    /// A provisional response came; waiting for the final one.
    Proceeding,
    /// CANCEL sent after the ring timeout; waiting for the INVITE's final response.
    Cancelling,
    /// Answered and acknowledged: media flows.
    Confirmed,
    /// BYE sent; waiting for its response.
    Terminating,
    /// Over; the call is reaped on the next pass.
    Terminated,
}

/// A request we may have to retransmit over UDP.
#[derive(Clone, Debug)]
struct Retransmit {
    bytes: Vec<u8>,
    next: Timestamp,
    interval: Duration,
    /// Once provisional responses arrive, an INVITE is no longer retransmitted.
    active: bool,
}

/// Whose RTP a call's media port takes: only the far end's, so one datagram from anyone
/// who found the port cannot press a key for the callee.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FarMedia {
    /// The SDP answer's address is usable: RTP from exactly that address and port (and
    /// the declared SSRC, if the answer declares one).
    Fixed(SocketAddr),
    /// The SDP answer's address is private or unusable from here (the far end is behind
    /// NAT): the first packet carrying a negotiated payload type (and the declared SSRC,
    /// if any) fixes the far end — symmetric RTP, as SBCs do it.
    Latching,
    /// Latched: RTP from this source with this SSRC only, and ours goes back to it.
    Latched {
        /// Where the far end's packets come from (its NAT's public side).
        from: SocketAddr,
        /// The far end's SSRC.
        ssrc: u32,
    },
}

/// The media side of an answered call.
#[derive(Debug)]
struct Media {
    neg: Negotiated,
    /// Whose RTP counts.
    far: FarMedia,
    /// Whether a datagram from elsewhere was already reported for this call (once is
    /// enough for operators; the count goes in the call record).
    stray_noted: bool,
    /// Whether a key press from elsewhere was already reported for this call.
    forged_key_noted: bool,
    /// telephone-event PT to listen for (the answer's, or ours when it lists none).
    event_pt: u8,
    ssrc: u32,
    seq0: u16,
    ts0: u32,
    start: Timestamp,
    /// Frames sent or skipped since `start`; the next frame is due at start + 20 ms × this.
    next_frame: u64,
    prompt: Arc<[u8]>,
    /// Frame index into the prompt; `None` once it has played through (silence follows).
    pos: Option<usize>,
    furthest: usize,
    replayed: bool,
    played_through: bool,
    prompt_done_at: Option<Timestamp>,
    /// How long to wait for a key once the prompt has played.
    digit_wait: Duration,
    detector: DigitDetector,
}

/// One call in the table.
#[derive(Debug)]
struct Call {
    attempt: AttemptId,
    callee: Address,
    text: String,
    uri: String,
    call_id: String,
    local_tag: String,
    remote_tag: Option<String>,
    remote_to: Option<String>,
    remote_target: String,
    cseq: u32,
    invite_branch: String,
    invite_via: String,
    invite_sdp: String,
    state: State,
    rtp_port: u16,
    auth_tried: bool,
    invite: Option<Retransmit>,
    /// Timer B: the INVITE is given up when nothing at all came back by then.
    invite_deadline: Timestamp,
    ring_deadline: Timestamp,
    cancel: Option<Retransmit>,
    cancel_deadline: Option<Timestamp>,
    bye: Option<Retransmit>,
    bye_deadline: Option<Timestamp>,
    media: Option<Media>,
    acked: bool,
    max_end: Option<Timestamp>,
    /// The terminal event decided for this call, emitted when it is reaped.
    outcome: Option<(bool, bool, String)>,
    /// The gateway cancelled the attempt (the person acked elsewhere or the record
    /// closed): the call is being torn down and must not be answered into or re-tried.
    cancelled: bool,
    record: CallRecord,
}

/// Registration with the trunk.
#[derive(Debug)]
struct Registration {
    call_id: String,
    tag: String,
    cseq: u32,
    pending: Option<Retransmit>,
    deadline: Option<Timestamp>,
    refresh_at: Option<Timestamp>,
    auth_tried: bool,
    registered: bool,
}

/// The SIP trunk as a state machine. See the module documentation.
pub struct Trunk {
    cfg: SipConfig,
    trunk: SocketAddr,
    local: SocketAddr,
    ip: IpAddr,
    domain: String,
    prompts: Arc<dyn PromptSource>,
    rng: ChaCha8Rng,
    calls: BTreeMap<String, Call>,
    by_port: HashMap<u16, String>,
    free_ports: Vec<u16>,
    queue: VecDeque<Outbound>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<DriverEvent>,
    records: VecDeque<CallRecord>,
    encoded: Vec<(String, Codec, Arc<[u8]>)>,
    registration: Option<Registration>,
    health: Health,
}

/// Why a trunk cannot start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// No RTP ports were given (one per call slot is needed).
    #[error("no RTP ports to place calls from")]
    NoRtpPorts,
}

impl Trunk {
    /// A trunk whose SIP socket is bound at `local` and whose call slots send RTP from
    /// `rtp_ports` (one call per port at a time). `seed` makes tags, branches and SSRCs
    /// reproducible in tests. The built-in tone is played unless [`Trunk::with_prompts`]
    /// plugs in a renderer.
    pub fn new(
        cfg: SipConfig,
        local: SocketAddr,
        rtp_ports: Vec<u16>,
        seed: u64,
        now: Timestamp,
    ) -> Result<Trunk, StartError> {
        cfg.validate()?;
        if rtp_ports.is_empty() {
            return Err(StartError::NoRtpPorts);
        }
        let trunk = cfg.trunk_addr()?;
        let ip = cfg.advertise_ip(local.ip())?;
        let prompts: Arc<dyn PromptSource> = Arc::new(ToneSource::new(cfg.prompt_secs));
        let mut t = Trunk {
            domain: cfg.domain(),
            trunk,
            local,
            ip,
            prompts,
            rng: ChaCha8Rng::seed_from_u64(seed),
            calls: BTreeMap::new(),
            by_port: HashMap::new(),
            free_ports: rtp_ports.into_iter().rev().collect(),
            queue: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            records: VecDeque::new(),
            encoded: Vec::new(),
            registration: None,
            health: Health {
                up: true,
                ..Health::default()
            },
            cfg,
        };
        if t.cfg.register {
            t.start_register(now, None);
        } else {
            // An IP-authenticated trunk needs no registration: ready at once.
            t.health.registered = true;
            t.events.push_back(DriverEvent::Health(t.health.clone()));
        }
        Ok(t)
    }

    /// Plays what `prompts` renders instead of the built-in tone.
    pub fn with_prompts(mut self, prompts: Arc<dyn PromptSource>) -> Trunk {
        self.prompts = prompts;
        self
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Sends waiting for a free call slot.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// A command from the gateway.
    pub fn submit(&mut self, now: Timestamp, cmd: DriverCommand) {
        match cmd {
            DriverCommand::Send(out) => {
                let attempt = out.attempt;
                if !matches!(out.to, Address::Phone(_)) {
                    self.events.push_back(DriverEvent::Failed {
                        attempt,
                        retryable: false,
                        reason: format!("a voice call needs a phone number, not {}", out.to),
                    });
                    return;
                }
                if self.queue.len() >= self.cfg.queue_limit {
                    self.events.push_back(DriverEvent::Failed {
                        attempt,
                        retryable: true,
                        reason: format!("trunk queue full ({} calls waiting)", self.queue.len()),
                    });
                    return;
                }
                self.events.push_back(DriverEvent::Accepted { attempt });
                self.queue.push_back(out);
                self.start_queued(now);
            }
            DriverCommand::Cancel(attempt) => {
                if let Some(i) = self.queue.iter().position(|o| o.attempt == attempt) {
                    self.queue.remove(i);
                    self.events.push_back(DriverEvent::Failed {
                        attempt,
                        retryable: false,
                        reason: "cancelled before dialling".to_owned(),
                    });
                    return;
                }
                let id = self
                    .calls
                    .iter()
                    .find(|(_, c)| c.attempt == attempt)
                    .map(|(k, _)| k.clone());
                if let Some(id) = id
                    && let Some(mut call) = self.calls.remove(&id)
                {
                    self.cancel_call(now, &mut call);
                    self.calls.insert(id, call);
                    self.reap(now);
                }
            }
            // Key presses are not stored on the trunk: nothing to release.
            DriverCommand::SendFrame(f) => self.events.push_back(f.refused()),
            DriverCommand::Release(_) => {}
        }
    }

    /// A datagram arrived on one of our sockets.
    pub fn handle_datagram(
        &mut self,
        now: Timestamp,
        socket: Socket,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        match socket {
            Socket::Sip => self.handle_sip(now, from, bytes),
            Socket::Rtp(port) => self.handle_rtp(now, port, from, bytes),
        }
        self.reap(now);
    }

    /// Deadlines that passed: retransmissions, ring timeouts, RTP frames, hang-ups.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.register_timeout(now);
        let ids: Vec<String> = self.calls.keys().cloned().collect();
        for id in ids {
            let Some(mut call) = self.calls.remove(&id) else {
                continue;
            };
            self.call_timeout(now, &mut call);
            self.calls.insert(id, call);
        }
        self.reap(now);
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the gateway.
    pub fn poll_event(&mut self) -> Option<DriverEvent> {
        self.events.pop_front()
    }

    /// The record of the next finished call.
    pub fn poll_record(&mut self) -> Option<CallRecord> {
        self.records.pop_front()
    }

    /// The earliest deadline.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let reg = self.registration.as_ref().and_then(|r| {
            [r.pending.as_ref().map(|p| p.next), r.deadline, r.refresh_at]
                .into_iter()
                .flatten()
                .min()
        });
        self.calls
            .values()
            .filter_map(Call::next_deadline)
            .chain(reg)
            .min()
    }

    // ---- calls -------------------------------------------------------------------------

    fn hex(&mut self, bytes: usize) -> String {
        (0..bytes)
            .map(|_| format!("{:02x}", self.rng.random::<u8>()))
            .collect()
    }

    fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.hex(8))
    }

    fn via(&self, branch: &str) -> String {
        format!("SIP/2.0/UDP {};branch={branch};rport", self.sent_by())
    }

    fn sent_by(&self) -> String {
        SocketAddr::new(self.ip, self.local.port()).to_string()
    }

    fn our_from(&self, tag: &str) -> String {
        format!("<sip:{}@{}>;tag={tag}", self.cfg.user, self.domain)
    }

    fn contact(&self) -> String {
        format!("<sip:{}@{}>", self.cfg.user, self.sent_by())
    }

    fn send_sip(&mut self, to: SocketAddr, msg: &Message) -> Vec<u8> {
        let bytes = msg.to_bytes();
        self.transmits.push_back(Transmit {
            socket: Socket::Sip,
            to,
            bytes: bytes.clone(),
        });
        bytes
    }

    fn start_queued(&mut self, now: Timestamp) {
        while self.calls.len() < self.cfg.concurrent_calls {
            let Some(port) = self.free_ports.pop() else {
                return;
            };
            let Some(out) = self.queue.pop_front() else {
                self.free_ports.push(port);
                return;
            };
            self.dial(now, out, port);
        }
    }

    fn dial(&mut self, now: Timestamp, out: Outbound, port: u16) {
        let Address::Phone(number) = &out.to else {
            self.free_ports.push(port);
            return;
        };
        let uri = format!("sip:{}@{}", self.cfg.dial_string(number), self.domain);
        let call_id = format!("{}@{}", self.hex(12), self.ip);
        let local_tag = self.hex(6);
        let session = u64::from(self.rng.random::<u32>());
        let invite_sdp = sdp::offer(
            session,
            self.ip,
            port,
            &self.cfg.codecs,
            self.cfg.telephone_event_pt,
        );
        let t1 = self.cfg.t1();
        let mut call = Call {
            attempt: out.attempt,
            callee: out.to.clone(),
            text: out.text,
            remote_target: uri.clone(),
            uri,
            call_id: call_id.clone(),
            local_tag,
            remote_tag: None,
            remote_to: None,
            cseq: 0,
            invite_branch: String::new(),
            invite_via: String::new(),
            invite_sdp,
            state: State::Calling,
            rtp_port: port,
            auth_tried: false,
            invite: None,
            invite_deadline: now + t1 * 64,
            ring_deadline: now + Duration::from_secs(self.cfg.ring_timeout_secs),
            cancel: None,
            cancel_deadline: None,
            bye: None,
            bye_deadline: None,
            media: None,
            acked: false,
            max_end: None,
            outcome: None,
            cancelled: false,
            record: CallRecord {
                attempt: out.attempt,
                call_id: call_id.clone(),
                callee: out.to,
                dialled_at: now,
                ringing_at: None,
                answered_at: None,
                ended_at: None,
                prompt_secs: 0.0,
                listened_secs: 0.0,
                listened: false,
                digits: String::new(),
                ended: String::new(),
                frames_sent: 0,
                late_frames: 0,
                stray_media: 0,
            },
        };
        self.send_invite(now, &mut call, None);
        self.by_port.insert(port, call_id.clone());
        self.calls.insert(call_id, call);
    }

    fn send_invite(&mut self, now: Timestamp, call: &mut Call, auth: Option<(&str, String)>) {
        call.cseq += 1;
        call.invite_branch = self.branch();
        call.invite_via = self.via(&call.invite_branch);
        let mut m = Message::request(Method::Invite, call.uri.clone())
            .with("Via", call.invite_via.clone())
            .with("Max-Forwards", "70")
            .with("From", self.our_from(&call.local_tag))
            .with("To", format!("<{}>", call.uri))
            .with("Call-ID", call.call_id.clone())
            .with("CSeq", format!("{} INVITE", call.cseq))
            .with("Contact", self.contact());
        if let Some((name, value)) = auth {
            m.push(name, value);
        }
        m.push("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO");
        m.push("User-Agent", "Tocsin");
        m.push("Content-Type", "application/sdp");
        m.body = call.invite_sdp.clone().into_bytes();
        let bytes = self.send_sip(self.trunk, &m);
        let t1 = self.cfg.t1();
        call.invite = Some(Retransmit {
            bytes,
            next: now + t1,
            interval: t1,
            active: true,
        });
        call.invite_deadline = now + t1 * 64;
    }

    /// ACK for a non-2xx final response: the Via (our branch) and CSeq number of the
    /// INVITE it answers, which the response carries (§17.1.1.3).
    fn ack_non_2xx(&mut self, call: &Call, resp: &Message, cseq: u32) {
        let to = resp.header("To").unwrap_or_default().to_owned();
        let via = resp
            .header("Via")
            .map_or_else(|| call.invite_via.clone(), str::to_owned);
        let m = Message::request(Method::Ack, call.uri.clone())
            .with("Via", via)
            .with("Max-Forwards", "70")
            .with("From", self.our_from(&call.local_tag))
            .with("To", to)
            .with("Call-ID", call.call_id.clone())
            .with("CSeq", format!("{cseq} ACK"));
        self.send_sip(self.trunk, &m);
    }

    /// An in-dialog request (ACK for 2xx, BYE): new branch, the dialog's tags and target.
    fn in_dialog(&mut self, call: &Call, method: Method, cseq: u32) -> Message {
        let branch = self.branch();
        let to = call
            .remote_to
            .clone()
            .unwrap_or_else(|| format!("<{}>", call.uri));
        Message::request(method.clone(), call.remote_target.clone())
            .with("Via", self.via(&branch))
            .with("Max-Forwards", "70")
            .with("From", self.our_from(&call.local_tag))
            .with("To", to)
            .with("Call-ID", call.call_id.clone())
            .with("CSeq", format!("{cseq} {method}"))
    }

    fn send_ack_2xx(&mut self, call: &Call) {
        let m = self.in_dialog(call, Method::Ack, call.cseq);
        self.send_sip(self.trunk, &m);
    }

    fn send_bye(&mut self, now: Timestamp, call: &mut Call, why: &str) {
        call.cseq += 1;
        let m = self
            .in_dialog(call, Method::Bye, call.cseq)
            .with("Reason", format!("Q.850;cause=16;text=\"{why}\""));
        let bytes = self.send_sip(self.trunk, &m);
        let t1 = self.cfg.t1();
        call.bye = Some(Retransmit {
            bytes,
            next: now + t1,
            interval: t1,
            active: true,
        });
        call.bye_deadline = Some(now + t1 * 64);
        call.state = State::Terminating;
        self.end_media(now, call, why);
    }

    fn send_cancel(&mut self, now: Timestamp, call: &mut Call) {
        let m = Message::request(Method::Cancel, call.uri.clone())
            .with("Via", call.invite_via.clone())
            .with("Max-Forwards", "70")
            .with("From", self.our_from(&call.local_tag))
            .with("To", format!("<{}>", call.uri))
            .with("Call-ID", call.call_id.clone())
            .with("CSeq", format!("{} CANCEL", call.cseq));
        let bytes = self.send_sip(self.trunk, &m);
        let t1 = self.cfg.t1();
        call.cancel = Some(Retransmit {
            bytes,
            next: now + t1,
            interval: t1,
            active: true,
        });
        call.cancel_deadline = Some(now + t1 * 64);
        call.state = State::Cancelling;
        if let Some(inv) = call.invite.as_mut() {
            inv.active = false;
        }
    }

    /// The gateway no longer wants this call (the record it serves is final). A call
    /// still ringing is cancelled (RFC 3261 §9.1: CANCEL only once a provisional response
    /// came, so one still `Calling` sends it with the first 1xx); an answered one stops
    /// the prompt and hangs up. The outcome is `Failed { retryable: false, "cancelled" }`,
    /// unless the answered call had already delivered the warning (played through or
    /// acked), which stays `Delivered`.
    fn cancel_call(&mut self, now: Timestamp, call: &mut Call) {
        if call.cancelled {
            return;
        }
        call.cancelled = true;
        const WHY: &str = "cancelled by the gateway";
        match call.state {
            State::Calling => {
                call.record.ended = WHY.to_owned();
                call.outcome = Some((false, false, "cancelled".to_owned()));
            }
            State::Proceeding => {
                call.record.ended = WHY.to_owned();
                call.outcome = Some((false, false, "cancelled".to_owned()));
                self.send_cancel(now, call);
            }
            State::Cancelling => {
                // Already being cancelled after the ring timeout: only the verdict changes.
                call.outcome = Some((false, false, "cancelled".to_owned()));
            }
            State::Confirmed => {
                self.send_bye(now, call, "ended by us: cancelled by the gateway");
                if !(call.record.listened || call.acked) && call.outcome.is_none() {
                    call.outcome = Some((false, false, "cancelled".to_owned()));
                }
            }
            // Already hanging up or over: its outcome stands.
            State::Terminating | State::Terminated => {}
        }
    }

    /// Stops the media and fixes the record's listening figures.
    fn end_media(&mut self, now: Timestamp, call: &mut Call, why: &str) {
        if call.record.ended.is_empty() {
            call.record.ended = why.to_owned();
        }
        call.record.ended_at = Some(now);
        if let Some(m) = call.media.take() {
            call.record.listened_secs = m.furthest as f64 * FRAME_MS as f64 / 1000.0;
            call.record.listened = m.played_through;
        }
    }

    /// Decides the call's terminal event (once) and marks it over.
    fn finish(&mut self, now: Timestamp, call: &mut Call, why: &str, fail: Option<(bool, String)>) {
        self.end_media(now, call, why);
        call.state = State::Terminated;
        if call.outcome.is_some() {
            return;
        }
        call.outcome = Some(match fail {
            Some((retryable, reason)) => (false, retryable, reason),
            None => (true, false, String::new()),
        });
    }

    /// Terminal event for an answered call that is over.
    fn answered_outcome(call: &Call) -> (bool, bool, String) {
        if call.record.listened || call.acked {
            (true, false, String::new())
        } else {
            (
                false,
                true,
                format!(
                    "answered but the prompt was cut off after {:.1} s of {:.1} s ({})",
                    call.record.listened_secs, call.record.prompt_secs, call.record.ended
                ),
            )
        }
    }

    fn reap(&mut self, now: Timestamp) {
        let done: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| c.state == State::Terminated)
            .map(|(k, _)| k.clone())
            .collect();
        for id in done {
            let Some(mut call) = self.calls.remove(&id) else {
                continue;
            };
            if call.record.ended_at.is_none() {
                call.record.ended_at = Some(now);
            }
            self.by_port.remove(&call.rtp_port);
            self.free_ports.push(call.rtp_port);
            let (delivered, retryable, reason) = match call.outcome.take() {
                Some((true, _, _)) if call.record.answered_at.is_some() => {
                    Self::answered_outcome(&call)
                }
                Some(o) => o,
                None => (false, true, call.record.ended.clone()),
            };
            let evidence = call.record.evidence();
            self.events.push_back(if delivered {
                DriverEvent::Delivered {
                    attempt: call.attempt,
                    evidence,
                }
            } else {
                DriverEvent::Failed {
                    attempt: call.attempt,
                    retryable,
                    reason: format!("{reason}; {evidence}"),
                }
            });
            tracing::debug!(call_id = %call.call_id, ended = %call.record.ended, "call over");
            if self.records.len() >= RECORDS_KEPT {
                self.records.pop_front();
            }
            self.records.push_back(call.record);
        }
        self.start_queued(now);
    }

    fn call_timeout(&mut self, now: Timestamp, call: &mut Call) {
        // Retransmissions over UDP.
        for which in 0..3 {
            let slot = match which {
                0 => &mut call.invite,
                1 => &mut call.cancel,
                _ => &mut call.bye,
            };
            if let Some(r) = slot
                && r.active
                && r.next <= now
            {
                let bytes = r.bytes.clone();
                // INVITE doubles without cap (Timer A); non-INVITE caps at T2 = 4 s.
                r.interval = if which == 0 {
                    r.interval * 2
                } else {
                    (r.interval * 2).min(Duration::from_secs(4))
                };
                r.next = now + r.interval;
                self.transmits.push_back(Transmit {
                    socket: Socket::Sip,
                    to: self.trunk,
                    bytes,
                });
            }
        }
        match call.state {
            State::Calling if now >= call.invite_deadline => {
                self.finish(
                    now,
                    call,
                    "no response to INVITE",
                    Some((
                        true,
                        format!(
                            "the trunk did not answer the INVITE within {} s (timer B)",
                            (self.cfg.t1() * 64).as_secs()
                        ),
                    )),
                );
            }
            State::Calling | State::Proceeding if now >= call.ring_deadline => {
                call.record.ended = format!(
                    "no answer within {} s, cancelled",
                    self.cfg.ring_timeout_secs
                );
                self.send_cancel(now, call);
            }
            State::Cancelling if call.cancel_deadline.is_some_and(|d| now >= d) => {
                let why = call.record.ended.clone();
                self.finish(now, call, &why, Some((true, "no answer".to_owned())));
            }
            State::Confirmed => self.media_timeout(now, call),
            State::Terminating if call.bye_deadline.is_some_and(|d| now >= d) => {
                let why = call.record.ended.clone();
                self.finish(now, call, &why, None);
            }
            _ => {}
        }
    }

    fn media_timeout(&mut self, now: Timestamp, call: &mut Call) {
        if call.max_end.is_some_and(|t| now >= t) {
            self.send_bye(now, call, "longest call time reached");
            return;
        }
        let Some(m) = call.media.as_mut() else {
            return;
        };
        if let Some(done) = m.prompt_done_at
            && now >= done + m.digit_wait
        {
            self.send_bye(now, call, "ended by us: no key after the prompt");
            return;
        }
        // Before the stream's slot (see `start_media`) nothing is due yet.
        let due = if now < m.start {
            0
        } else {
            now.since(m.start).as_millis() as u64 / FRAME_MS as u64 + 1
        };
        if due > m.next_frame + MAX_CATCH_UP {
            let skip = due - m.next_frame - MAX_CATCH_UP;
            call.record.late_frames += skip;
            for _ in 0..skip {
                advance_prompt(m, now);
            }
            m.next_frame += skip;
        }
        if due > m.next_frame + 1 {
            call.record.late_frames += due - m.next_frame - 1;
        }
        while m.next_frame < due {
            let k = m.next_frame;
            let frame_at = m.start + Duration::from_millis(k * FRAME_MS as u64);
            let payload: Vec<u8> = match m.pos {
                Some(p) => m
                    .prompt
                    .get(p * FRAME..(p + 1) * FRAME)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_else(|| vec![m.neg.codec.silence(); FRAME]),
                None => vec![m.neg.codec.silence(); FRAME],
            };
            let pkt = RtpPacket {
                marker: k == 0,
                payload_type: m.neg.codec.payload_type(),
                seq: m.seq0.wrapping_add(k as u16),
                timestamp: m.ts0.wrapping_add((k as u32).wrapping_mul(FRAME as u32)),
                ssrc: m.ssrc,
                payload,
            };
            self.transmits.push_back(Transmit {
                socket: Socket::Rtp(call.rtp_port),
                to: m.send_to(),
                bytes: pkt.to_bytes(),
            });
            call.record.frames_sent += 1;
            advance_prompt(m, frame_at + Duration::from_millis(FRAME_MS as u64));
            m.next_frame += 1;
        }
    }

    fn start_media(&mut self, now: Timestamp, call: &mut Call, neg: Negotiated) {
        let prompt = self.encoded_prompt(&call.text, neg.codec);
        call.record.prompt_secs = (prompt.len() / FRAME) as f64 * FRAME_MS as f64 / 1000.0;
        let event_pt = neg.telephone_event.unwrap_or(self.cfg.telephone_event_pt);
        // Spread the calls' frames over the 20 ms frame: up to 19 ms after the answer,
        // so 200 calls answered together do not send 200 frames back to back.
        let mut used = [0; SLOTS];
        for m in self.calls.values().filter_map(|c| c.media.as_ref()) {
            if let Some(u) = used.get_mut(slot_of(m.start)) {
                *u += 1;
            }
        }
        let start = slot_start(now, &used, SLOT_SHARE);
        let far = if sdp::media_address_usable(neg.remote.ip(), self.trunk.ip()) {
            FarMedia::Fixed(neg.remote)
        } else {
            FarMedia::Latching
        };
        call.media = Some(Media {
            far,
            stray_noted: false,
            forged_key_noted: false,
            event_pt,
            ssrc: self.rng.random(),
            seq0: self.rng.random(),
            ts0: self.rng.random(),
            start,
            next_frame: 0,
            pos: if prompt.is_empty() { None } else { Some(0) },
            prompt,
            furthest: 0,
            replayed: false,
            played_through: false,
            prompt_done_at: None,
            digit_wait: Duration::from_secs(self.cfg.digit_wait_secs),
            detector: DigitDetector::default(),
            neg,
        });
        call.max_end = Some(now + Duration::from_secs(self.cfg.max_call_secs));
        // The first frame goes out at once when the call's slot is now.
        self.media_timeout(now, call);
    }

    fn encoded_prompt(&mut self, text: &str, codec: Codec) -> Arc<[u8]> {
        if let Some((_, _, a)) = self
            .encoded
            .iter()
            .find(|(t, c, _)| t == text && *c == codec)
        {
            return a.clone();
        }
        let mut pcm = self.prompts.render(text);
        if pcm.is_empty() {
            pcm = ToneSource::new(1.0).render(text);
        }
        let mut bytes: Vec<u8> = pcm.iter().map(|s| codec.encode(*s)).collect();
        let whole = bytes.len().div_ceil(FRAME) * FRAME;
        bytes.resize(whole, codec.silence());
        let a: Arc<[u8]> = bytes.into();
        // A campaign speaks a handful of texts; keep the last few encoded.
        if self.encoded.len() >= 8 {
            self.encoded.remove(0);
        }
        self.encoded.push((text.to_owned(), codec, a.clone()));
        a
    }

    fn on_digit(&mut self, now: Timestamp, call: &mut Call, key: char, how: &str) {
        call.record.digits.push(key);
        let at = call
            .record
            .answered_at
            .map_or(0.0, |a| now.since(a).as_secs_f64());
        if key == '1' {
            if call.acked {
                return;
            }
            call.acked = true;
            self.health.received += 1;
            self.events.push_back(DriverEvent::Inbound {
                from: call.callee.clone(),
                text: "1".to_owned(),
                evidence: format!("DTMF 1 ({how}) in call {} at +{at:.1} s", call.call_id),
                sent_at: Some(now),
                receipt: None,
                // The key answers the warning this call was placed for, not whichever of
                // the callee's records happens to be most urgent.
                in_reply_to: Some(call.attempt),
            });
            if call.state == State::Confirmed {
                self.send_bye(now, call, "ended by us after the key 1 ack");
            }
            return;
        }
        // Any other key: play the prompt again from the start, once per call.
        if let Some(m) = call.media.as_mut()
            && !m.replayed
            && !m.prompt.is_empty()
        {
            m.replayed = true;
            m.pos = Some(0);
            m.prompt_done_at = None;
        }
    }

    // ---- SIP in ------------------------------------------------------------------------

    fn handle_sip(&mut self, now: Timestamp, from: SocketAddr, bytes: &[u8]) {
        // Pure keep-alives (CRLF) are not worth an event.
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return;
        }
        let msg = match wire::parse(bytes) {
            Ok(Some((m, _))) => m,
            Ok(None) => {
                self.events.push_back(DriverEvent::Unrecognized {
                    raw: format!(
                        "truncated SIP datagram from {from}: {}",
                        String::from_utf8_lossy(bytes.get(..200.min(bytes.len())).unwrap_or(&[]))
                    ),
                });
                return;
            }
            Err(e) => {
                self.events.push_back(DriverEvent::Unrecognized {
                    raw: format!("bad SIP from {from}: {e}"),
                });
                return;
            }
        };
        if msg.status().is_some() {
            self.on_response(now, msg);
        } else {
            self.on_request(now, from, msg);
        }
    }

    fn on_response(&mut self, now: Timestamp, resp: Message) {
        let Some(code) = resp.status() else { return };
        let Ok((cseq, method)) = resp.cseq() else {
            return;
        };
        if self
            .registration
            .as_ref()
            .is_some_and(|r| r.call_id == resp.call_id())
        {
            self.on_register_response(now, code, cseq, &resp);
            return;
        }
        let id = resp.call_id().to_owned();
        let Some(mut call) = self.calls.remove(&id) else {
            if method == Method::Invite && (200..300).contains(&code) {
                self.refuse_late_answer(cseq, &resp);
            }
            return; // Any other stray or late response: nothing to do.
        };
        match method {
            Method::Invite if cseq == call.cseq => {
                self.on_invite_response(now, &mut call, code, &resp)
            }
            // A retransmitted challenge to an earlier INVITE still needs its ACK.
            Method::Invite if code >= 300 => self.ack_non_2xx(&call, &resp, cseq),
            Method::Bye if code >= 200 => {
                let why = call.record.ended.clone();
                self.finish(now, &mut call, &why, None);
            }
            Method::Cancel => {
                if let Some(c) = call.cancel.as_mut() {
                    c.active = false;
                }
            }
            _ => {}
        }
        self.calls.insert(id, call);
    }

    /// A 2xx to an INVITE whose call is already over (it came after our CANCEL's or
    /// timer B's wait, or after the far end's own BYE): someone picked up to silence. It is
    /// acknowledged and hung up at once (RFC 3261 §13.2.2.4, §15), so the phone does
    /// not stay off-hook until the far end gives up; each repeat of the 2xx gets the same.
    fn refuse_late_answer(&mut self, cseq: u32, resp: &Message) {
        let (Some(from), Some(to)) = (resp.header("From"), resp.header("To")) else {
            return;
        };
        let (from, to) = (from.to_owned(), to.to_owned());
        let target = resp.header("Contact").map(uri_of).unwrap_or_default();
        let target = if target.is_empty() {
            uri_of(&to).to_owned()
        } else {
            target.to_owned()
        };
        let call_id = resp.call_id().to_owned();
        for (method, n) in [(Method::Ack, cseq), (Method::Bye, cseq.saturating_add(1))] {
            let branch = self.branch();
            let mut m = Message::request(method.clone(), target.clone())
                .with("Via", self.via(&branch))
                .with("Max-Forwards", "70")
                .with("From", from.clone())
                .with("To", to.clone())
                .with("Call-ID", call_id.clone())
                .with("CSeq", format!("{n} {method}"));
            if method == Method::Bye {
                m.push(
                    "Reason",
                    "Q.850;cause=16;text=\"answered after the call was given up\"",
                );
            }
            self.send_sip(self.trunk, &m);
        }
    }

    fn on_invite_response(&mut self, now: Timestamp, call: &mut Call, code: u16, resp: &Message) {
        if code < 200 {
            if let Some(inv) = call.invite.as_mut() {
                inv.active = false;
            }
            if call.state == State::Calling {
                call.state = State::Proceeding;
            }
            if (code == 180 || code == 183) && call.record.ringing_at.is_none() {
                call.record.ringing_at = Some(now);
            }
            // A cancel that came before any provisional response may go now (§9.1).
            if call.cancelled && call.state == State::Proceeding {
                self.send_cancel(now, call);
            }
            return;
        }
        if let Some(inv) = call.invite.as_mut() {
            inv.active = false;
        }
        if code < 300 {
            match call.state {
                State::Calling | State::Proceeding | State::Cancelling => {
                    self.on_answer(now, call, resp);
                }
                // A retransmitted 2xx: our ACK was lost.
                State::Confirmed | State::Terminating
                    if resp.to_tag() == call.remote_tag.as_deref() =>
                {
                    self.send_ack_2xx(call);
                }
                _ => {}
            }
            return;
        }
        // Final failure. Retransmissions of it get the same ACK.
        self.ack_non_2xx(call, resp, call.cseq);
        if !matches!(
            call.state,
            State::Calling | State::Proceeding | State::Cancelling
        ) {
            return;
        }
        if (code == 401 || code == 407)
            && !call.auth_tried
            && !call.cancelled
            && let Some(auth) = self.authorize(resp, code, "INVITE", &call.uri.clone())
        {
            {
                match auth {
                    Ok(header) => {
                        call.auth_tried = true;
                        call.state = State::Calling;
                        let name = if code == 401 {
                            "Authorization"
                        } else {
                            "Proxy-Authorization"
                        };
                        self.send_invite(now, call, Some((name, header)));
                        return;
                    }
                    Err(reason) => {
                        self.finish(now, call, "authentication failed", Some((false, reason)));
                        return;
                    }
                }
            }
        }
        let reason_phrase = match &resp.start {
            wire::StartLine::Response { reason, .. } => reason.clone(),
            wire::StartLine::Request { .. } => String::new(),
        };
        let (retryable, what) = classify(code, call.state == State::Cancelling, call.auth_tried);
        let why = if call.state == State::Cancelling {
            call.record.ended.clone()
        } else {
            format!("{what} ({code} {reason_phrase})")
        };
        self.finish(
            now,
            call,
            &why,
            Some((retryable, format!("{what} ({code} {reason_phrase})"))),
        );
    }

    /// The Authorization header answering a challenge; `None` when no password is set
    /// (the caller then fails the call through [`classify`]).
    fn authorize(
        &mut self,
        resp: &Message,
        code: u16,
        method: &str,
        uri: &str,
    ) -> Option<Result<String, String>> {
        let password = self.cfg.password.clone()?;
        let header = if code == 401 {
            "WWW-Authenticate"
        } else {
            "Proxy-Authenticate"
        };
        let Some(value) = resp.header(header) else {
            return Some(Err(format!("{code} without {header}")));
        };
        let challenge = match Challenge::parse(value) {
            Ok(c) => c,
            Err(e) => return Some(Err(format!("cannot answer the trunk's challenge: {e}"))),
        };
        let user = self
            .cfg
            .auth_user
            .clone()
            .unwrap_or_else(|| self.cfg.user.clone());
        let cnonce = self.hex(8);
        Some(Ok(
            challenge.answer(&user, &password, method, uri, &cnonce, 1)
        ))
    }

    fn on_answer(&mut self, now: Timestamp, call: &mut Call, resp: &Message) {
        call.remote_tag = resp.to_tag().map(str::to_owned);
        call.remote_to = resp.header("To").map(str::to_owned);
        if let Some(c) = resp.header("Contact") {
            let target = uri_of(c);
            if !target.is_empty() {
                call.remote_target = target.to_owned();
            }
        }
        call.record.answered_at = Some(now);
        call.record.ended.clear();
        if let Some(c) = call.cancel.as_mut() {
            c.active = false;
        }
        self.send_ack_2xx(call);
        call.state = State::Confirmed;
        self.health.sent += 1;
        self.events.push_back(DriverEvent::Sent {
            attempt: call.attempt,
            reference: call.call_id.clone(),
        });
        if call.cancelled {
            // Answered while our CANCEL crossed the 200 OK: hang up at once, nothing played.
            self.send_bye(now, call, "ended by us: cancelled by the gateway");
            return;
        }
        match sdp::negotiate(&resp.body, &self.cfg.codecs) {
            Ok(neg) => self.start_media(now, call, neg),
            Err(e) => {
                let why = format!("ended by us: unusable SDP answer: {e}");
                self.send_bye(now, call, &why);
                call.outcome = Some((false, false, why));
            }
        }
    }

    fn on_request(&mut self, now: Timestamp, from: SocketAddr, req: Message) {
        let Some(method) = req.method().cloned() else {
            return;
        };
        let id = req.call_id().to_owned();
        if method == Method::Ack {
            return; // ACKs for our responses need nothing.
        }
        let Some(mut call) = self.calls.remove(&id) else {
            let (code, reason) = match method {
                Method::Options => (200, "OK"),
                Method::Invite => (480, "Temporarily Unavailable"),
                _ => (481, "Call/Transaction Does Not Exist"),
            };
            self.respond(from, &req, code, reason, None);
            return;
        };
        match method {
            Method::Bye => {
                self.respond(from, &req, 200, "OK", None);
                match call.state {
                    State::Confirmed | State::Terminating => {
                        let why = if call.state == State::Terminating {
                            call.record.ended.clone()
                        } else {
                            "ended by far end".to_owned()
                        };
                        self.finish(now, &mut call, &why, None);
                    }
                    // A BYE while our INVITE is pending: the far end answered, its 2xx
                    // never reached us (lost, or never repeated) and it has hung up
                    // since. Nothing was played; waiting for the ring timeout and a
                    // CANCEL would only delay the outcome by a minute.
                    State::Calling | State::Proceeding | State::Cancelling => {
                        if let Some(inv) = call.invite.as_mut() {
                            inv.active = false;
                        }
                        if let Some(c) = call.cancel.as_mut() {
                            c.active = false;
                        }
                        let why = "the far end hung up before its answer reached us";
                        self.finish(now, &mut call, why, Some((true, why.to_owned())));
                    }
                    State::Terminated => {}
                }
            }
            Method::Info => {
                self.respond(from, &req, 200, "OK", None);
                if let Some(key) = info_digit(&req) {
                    self.on_digit(now, &mut call, key, "SIP INFO");
                }
            }
            Method::Options => self.respond(from, &req, 200, "OK", None),
            Method::Invite => {
                // A re-INVITE (session refresh): keep the media as it is.
                let sdp = call.invite_sdp.clone();
                self.respond(from, &req, 200, "OK", Some(sdp));
            }
            _ => self.respond(from, &req, 405, "Method Not Allowed", None),
        }
        self.calls.insert(id, call);
    }

    fn respond(
        &mut self,
        to: SocketAddr,
        req: &Message,
        code: u16,
        reason: &str,
        sdp: Option<String>,
    ) {
        let mut m = Message::response(code, reason);
        for v in req.headers_named("Via") {
            m.push("Via", v.to_owned());
        }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            let mut v = req.header(name).unwrap_or_default().to_owned();
            if name == "To" && wire::param(&v, "tag").is_none() {
                let tag = self.hex(4);
                v.push_str(&format!(";tag={tag}"));
            }
            m.push(name, v);
        }
        if let Some(body) = sdp {
            m.push("Contact", self.contact());
            m.push("Content-Type", "application/sdp");
            m.body = body.into_bytes();
        }
        self.send_sip(to, &m);
    }

    // ---- RTP in ------------------------------------------------------------------------

    fn handle_rtp(&mut self, now: Timestamp, port: u16, from: SocketAddr, bytes: &[u8]) {
        let Some(id) = self.by_port.get(&port).cloned() else {
            return;
        };
        let Ok(pkt) = RtpPacket::parse(bytes) else {
            return; // RTCP or noise on the media port.
        };
        let Some(mut call) = self.calls.remove(&id) else {
            return;
        };
        let admitted = call.media.as_mut().map(|m| m.admits(from, &pkt));
        let key = match (call.media.as_mut(), admitted) {
            // Not answered yet: nobody may press a key before the prompt plays.
            (None, _) => None,
            // The far end's own packets: only the negotiated event type is a key.
            (Some(m), Some(true)) => (pkt.payload_type == m.event_pt)
                .then(|| m.detector.feed(&pkt))
                .flatten(),
            (Some(m), _) => {
                call.record.stray_media += 1;
                let looks_like_key = pkt.payload_type == m.event_pt
                    && crate::rtp::TelephoneEvent::parse(&pkt.payload)
                        .and_then(|e| e.key())
                        .is_some();
                let noted = if looks_like_key {
                    &mut m.forged_key_noted
                } else {
                    &mut m.stray_noted
                };
                if !std::mem::replace(noted, true) {
                    let what = if looks_like_key { "a key press" } else { "RTP" };
                    let raw = format!(
                        "{what} from {from} (ssrc {:#010x}, payload type {}) on the media port of call {} ignored: the far end is {}",
                        pkt.ssrc,
                        pkt.payload_type,
                        call.call_id,
                        m.far.describe()
                    );
                    tracing::warn!(call = %call.call_id, %from, "{raw}");
                    self.events.push_back(DriverEvent::Unrecognized { raw });
                }
                None
            }
        };
        if let Some(key) = key {
            self.on_digit(now, &mut call, key, "RFC 4733");
        }
        self.calls.insert(id, call);
    }

    // ---- registration ------------------------------------------------------------------

    fn start_register(&mut self, now: Timestamp, auth: Option<(&str, String)>) {
        let (call_id, tag, cseq) = match self.registration.as_ref() {
            Some(r) => (r.call_id.clone(), r.tag.clone(), r.cseq + 1),
            None => (format!("{}@{}", self.hex(12), self.ip), self.hex(6), 1),
        };
        let branch = self.branch();
        let uri = format!("sip:{}", self.domain);
        let mut m = Message::request(Method::Register, uri)
            .with("Via", self.via(&branch))
            .with("Max-Forwards", "70")
            .with("From", self.our_from(&tag))
            .with("To", format!("<sip:{}@{}>", self.cfg.user, self.domain))
            .with("Call-ID", call_id.clone())
            .with("CSeq", format!("{cseq} REGISTER"))
            .with("Contact", self.contact())
            .with("Expires", self.cfg.register_expires_secs.to_string());
        if let Some((name, value)) = auth {
            m.push(name, value);
        }
        m.push("User-Agent", "Tocsin");
        let bytes = self.send_sip(self.trunk, &m);
        let t1 = self.cfg.t1();
        let registered = self.registration.as_ref().is_some_and(|r| r.registered);
        self.registration = Some(Registration {
            call_id,
            tag,
            cseq,
            pending: Some(Retransmit {
                bytes,
                next: now + t1,
                interval: t1,
                active: true,
            }),
            deadline: Some(now + t1 * 64),
            refresh_at: None,
            auth_tried: false,
            registered,
        });
    }

    fn register_timeout(&mut self, now: Timestamp) {
        let trunk = self.trunk;
        let Some(r) = self.registration.as_mut() else {
            return;
        };
        if let Some(p) = r.pending.as_mut()
            && p.next <= now
        {
            p.interval = (p.interval * 2).min(Duration::from_secs(4));
            p.next = now + p.interval;
            let bytes = p.bytes.clone();
            self.transmits.push_back(Transmit {
                socket: Socket::Sip,
                to: trunk,
                bytes,
            });
        }
        if r.deadline.is_some_and(|d| now >= d) {
            r.pending = None;
            r.deadline = None;
            r.refresh_at = Some(now + REGISTER_RETRY);
            self.set_registered(false, Some("the trunk did not answer REGISTER".to_owned()));
            return;
        }
        if r.refresh_at.is_some_and(|t| now >= t) {
            r.auth_tried = false;
            self.start_register(now, None);
        }
    }

    fn on_register_response(&mut self, now: Timestamp, code: u16, cseq: u32, resp: &Message) {
        let Some(r) = self.registration.as_mut() else {
            return;
        };
        if cseq != r.cseq || code < 200 || r.pending.is_none() {
            return;
        }
        r.pending = None;
        r.deadline = None;
        if code < 300 {
            let expires = resp
                .header("Contact")
                .and_then(|c| wire::param(c, "expires"))
                .or(resp.header("Expires"))
                .and_then(|e| e.trim().parse::<u64>().ok())
                .unwrap_or(self.cfg.register_expires_secs)
                .max(2);
            r.refresh_at = Some(now + Duration::from_secs(expires / 2));
            r.auth_tried = false;
            self.set_registered(true, None);
            return;
        }
        if (code == 401 || code == 407) && !r.auth_tried {
            r.auth_tried = true;
            let uri = format!("sip:{}", self.domain);
            match self.authorize(resp, code, "REGISTER", &uri) {
                Some(Ok(h)) => {
                    let name = if code == 401 {
                        "Authorization"
                    } else {
                        "Proxy-Authorization"
                    };
                    self.start_register(now, Some((name, h)));
                    if let Some(r) = self.registration.as_mut() {
                        r.auth_tried = true;
                    }
                    return;
                }
                Some(Err(e)) => {
                    self.fail_register(now, e);
                    return;
                }
                None => {}
            }
        }
        let (_, what) = classify(code, false, true);
        self.fail_register(now, format!("REGISTER refused: {what} ({code})"));
    }

    fn fail_register(&mut self, now: Timestamp, why: String) {
        if let Some(r) = self.registration.as_mut() {
            r.refresh_at = Some(now + REGISTER_RETRY);
            r.auth_tried = false;
        }
        self.set_registered(false, Some(why));
    }

    fn set_registered(&mut self, registered: bool, error: Option<String>) {
        if let Some(r) = self.registration.as_mut() {
            r.registered = registered;
        }
        let changed = self.health.registered != registered || error != self.health.last_error;
        self.health.registered = registered;
        if error.is_some() {
            self.health.last_error = error;
        }
        if changed {
            self.events
                .push_back(DriverEvent::Health(self.health.clone()));
        }
    }
}

impl Call {
    fn next_deadline(&self) -> Option<Timestamp> {
        let rt = [&self.invite, &self.cancel, &self.bye]
            .into_iter()
            .flatten()
            .filter(|r| r.active)
            .map(|r| r.next);
        let state = match self.state {
            State::Calling => Some(self.invite_deadline.min(self.ring_deadline)),
            State::Proceeding => Some(self.ring_deadline),
            State::Cancelling => self.cancel_deadline,
            State::Confirmed => {
                let frame = self
                    .media
                    .as_ref()
                    .map(|m| m.start + Duration::from_millis(m.next_frame * FRAME_MS as u64));
                let wait = self
                    .media
                    .as_ref()
                    .and_then(|m| Some(m.prompt_done_at? + m.digit_wait));
                [frame, wait, self.max_end].into_iter().flatten().min()
            }
            State::Terminating => self.bye_deadline,
            State::Terminated => Some(Timestamp::ZERO),
        };
        rt.chain(state).min()
    }
}

impl FarMedia {
    /// The far end as evidence lines name it.
    fn describe(&self) -> String {
        match self {
            FarMedia::Fixed(a) => a.to_string(),
            FarMedia::Latching => {
                "not known yet (its SDP address is not reachable from the trunk)".to_owned()
            }
            FarMedia::Latched { from, ssrc } => format!("{from} ssrc {ssrc:#010x} (latched)"),
        }
    }
}

impl Media {
    /// Whether `pkt` from `from` is the far end's, latching on it when the SDP address
    /// could not be used. Only the negotiated voice and telephone-event types latch: a
    /// stray packet of another type must not capture the call.
    fn admits(&mut self, from: SocketAddr, pkt: &RtpPacket) -> bool {
        let declared = self.neg.ssrc.is_none_or(|s| s == pkt.ssrc);
        match self.far {
            FarMedia::Fixed(addr) => from == addr && declared,
            FarMedia::Latched { from: f, ssrc } => from == f && pkt.ssrc == ssrc,
            FarMedia::Latching => {
                let negotiated = pkt.payload_type == self.neg.codec.payload_type()
                    || pkt.payload_type == self.event_pt;
                if negotiated && declared {
                    tracing::debug!(%from, ssrc = pkt.ssrc, "far end's media latched");
                    self.far = FarMedia::Latched {
                        from,
                        ssrc: pkt.ssrc,
                    };
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Where our RTP goes: the SDP address until a NATed far end is latched, then back to
    /// where its packets come from.
    fn send_to(&self) -> SocketAddr {
        match self.far {
            FarMedia::Latched { from, .. } => from,
            FarMedia::Fixed(_) | FarMedia::Latching => self.neg.remote,
        }
    }
}

/// Moves the prompt position one frame on; `at` is when that frame finishes playing.
fn advance_prompt(m: &mut Media, at: Timestamp) {
    let Some(p) = m.pos else { return };
    let next = p + 1;
    m.furthest = m.furthest.max(next);
    if next * FRAME >= m.prompt.len() {
        m.pos = None;
        m.played_through = true;
        m.prompt_done_at = Some(at);
    } else {
        m.pos = Some(next);
    }
}

/// Whether a failed call may succeed later, and what the code means for a person.
fn classify(code: u16, cancelled: bool, auth_tried: bool) -> (bool, &'static str) {
    match code {
        487 if cancelled => (true, "no answer"),
        486 | 600 => (true, "busy"),
        480 | 408 | 487 => (true, "no answer"),
        603 => (true, "declined"),
        404 | 484 | 604 => (false, "number does not exist"),
        401 | 407 if auth_tried => (false, "authentication rejected by the trunk"),
        401 | 407 => (
            false,
            "the trunk wants authentication and no password is configured",
        ),
        403 => (false, "forbidden by the trunk"),
        488 | 606 => (false, "no common codec with the trunk"),
        500..=599 => (true, "trunk or network error"),
        _ => (true, "call failed"),
    }
}

/// The key of a SIP INFO DTMF relay (`application/dtmf-relay` `Signal=1`, or
/// `application/dtmf` `1`).
fn info_digit(req: &Message) -> Option<char> {
    let ct = req.header("Content-Type")?.to_ascii_lowercase();
    let body = std::str::from_utf8(&req.body).ok()?;
    let raw = if ct.starts_with("application/dtmf-relay") {
        body.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim().eq_ignore_ascii_case("signal").then(|| v.trim())
        })?
    } else if ct.starts_with("application/dtmf") {
        body.trim()
    } else {
        return None;
    };
    let mut chars = raw.chars();
    let c = chars.next()?;
    if chars.next().is_some() {
        // Numeric event codes such as "11" for '#'.
        return raw.parse::<u8>().ok().and_then(crate::rtp::key_of_event);
    }
    let c = c.to_ascii_uppercase();
    ("0123456789*#ABCD".contains(c)).then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Behaviour, FarEnd, SimConfig, SimReport, SimSocket};
    use tocsin_core::PhoneNumber;

    const GW: &str = "10.0.0.5:5060";
    const FAR_SIP: &str = "10.0.0.1:5060";
    const FAR_RTP: &str = "10.0.0.1:30000";

    /// Says whether a SIP datagram is lost on the way.
    type Loss = Box<dyn FnMut(&[u8]) -> bool>;

    struct Bench {
        now: Timestamp,
        trunk: Trunk,
        far: FarEnd,
        events: Vec<DriverEvent>,
        reports: Vec<SimReport>,
        max_active: usize,
        /// Every audio frame the gateway sent: when, from which call slot (local port).
        frames: Vec<(Timestamp, u16, RtpPacket)>,
        /// SIP datagrams from the far end that this says are lost on the way.
        lose: Option<Loss>,
        /// SIP datagrams to the far end that this says are lost on the way.
        lose_out: Option<Loss>,
        /// When each attempt's `Delivered` or `Failed` came, and how many came.
        outcomes: HashMap<u64, (Timestamp, usize)>,
        /// Records of finished calls.
        records: Vec<CallRecord>,
    }

    fn cfg() -> SipConfig {
        let mut c = SipConfig::new(FAR_SIP);
        c.bind = GW.into();
        c.prompt_secs = 2.0;
        c.ring_timeout_secs = 10;
        c.digit_wait_secs = 3;
        c.concurrent_calls = 2;
        c
    }

    fn bench(c: SipConfig, sim: SimConfig) -> Bench {
        let ports: Vec<u16> = (0..c.concurrent_calls)
            .map(|i| 40000 + 2 * i as u16)
            .collect();
        let trunk = Trunk::new(c, GW.parse().unwrap(), ports, 7, Timestamp::ZERO).unwrap();
        Bench {
            now: Timestamp::ZERO,
            trunk,
            far: FarEnd::new(sim, FAR_RTP.parse().unwrap()),
            events: Vec::new(),
            reports: Vec::new(),
            max_active: 0,
            frames: Vec::new(),
            lose: None,
            lose_out: None,
            outcomes: HashMap::new(),
            records: Vec::new(),
        }
    }

    fn phone(n: u64) -> Address {
        Address::Phone(PhoneNumber::parse(&format!("+86138001380{n:02}"), "86").unwrap())
    }

    fn send(attempt: u64) -> DriverCommand {
        DriverCommand::Send(Outbound {
            attempt: AttemptId(attempt),
            to: phone(attempt),
            text: "【红色预警】山洪，请立即转移。按1确认。".into(),
            want_report: false,
        })
    }

    impl Bench {
        fn pump(&mut self) {
            let far_sip: SocketAddr = FAR_SIP.parse().unwrap();
            let far_rtp: SocketAddr = FAR_RTP.parse().unwrap();
            let gw: SocketAddr = GW.parse().unwrap();
            loop {
                let mut moved = false;
                while let Some(t) = self.trunk.poll_transmit() {
                    moved = true;
                    let from = match t.socket {
                        Socket::Sip => gw,
                        Socket::Rtp(p) => SocketAddr::new(gw.ip(), p),
                    };
                    if let Socket::Rtp(port) = t.socket
                        && let Ok(pkt) = RtpPacket::parse(&t.bytes)
                        && pkt.payload_type < 96
                    {
                        self.frames.push((self.now, port, pkt));
                    }
                    if t.socket == Socket::Sip
                        && let Some(lose) = self.lose_out.as_mut()
                        && lose(&t.bytes)
                    {
                        continue;
                    }
                    let sock = if t.to == far_sip {
                        SimSocket::Sip
                    } else {
                        assert_eq!(t.to, far_rtp, "media goes to the far end's SDP address");
                        SimSocket::Rtp
                    };
                    self.far.handle_datagram(self.now, sock, from, &t.bytes);
                }
                while let Some((sock, to, bytes)) = self.far.poll_transmit() {
                    moved = true;
                    let (s, from) = match sock {
                        SimSocket::Sip => (Socket::Sip, far_sip),
                        SimSocket::Rtp => (Socket::Rtp(to.port()), far_rtp),
                    };
                    if s == Socket::Sip
                        && let Some(lose) = self.lose.as_mut()
                        && lose(&bytes)
                    {
                        continue;
                    }
                    self.trunk.handle_datagram(self.now, s, from, &bytes);
                }
                while let Some(e) = self.trunk.poll_event() {
                    moved = true;
                    if let DriverEvent::Delivered { attempt, .. }
                    | DriverEvent::Failed { attempt, .. } = &e
                    {
                        let o = self.outcomes.entry(attempt.0).or_insert((self.now, 0));
                        o.1 += 1;
                    }
                    self.events.push(e);
                }
                while let Some(r) = self.trunk.poll_record() {
                    self.records.push(r);
                }
                while let Some(r) = self.far.poll_report() {
                    self.reports.push(r);
                }
                self.max_active = self.max_active.max(self.trunk.active_calls());
                if !moved {
                    return;
                }
            }
        }

        /// Runs on the virtual clock until nothing is left to do or `limit` passes.
        fn run(&mut self, limit: Duration) {
            let end = self.now + limit;
            self.pump();
            // A deadline that handling does not move would spin here forever: fail instead.
            let mut stuck = 0;
            loop {
                let next = [self.trunk.poll_timeout(), self.far.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                let Some(next) = next else { return };
                if next > end {
                    return;
                }
                stuck = if next <= self.now { stuck + 1 } else { 0 };
                assert!(stuck < 1000, "a deadline at {next} is never dealt with");
                self.now = self.now.max(next);
                self.trunk.handle_timeout(self.now);
                self.far.handle_timeout(self.now);
                self.pump();
            }
        }

        fn terminal(&self, attempt: u64) -> &DriverEvent {
            self.events
                .iter()
                .find(|e| matches!(e, DriverEvent::Delivered { attempt: a, .. } | DriverEvent::Failed { attempt: a, .. } if a.0 == attempt))
                .unwrap_or_else(|| panic!("no outcome for attempt {attempt}: {:#?}", self.events))
        }
    }

    #[test]
    fn an_answered_call_plays_the_prompt_in_time_and_takes_key_1_as_the_ack() {
        let mut b = bench(cfg(), SimConfig::default());
        b.trunk.submit(b.now, send(1));
        b.run(Duration::from_secs(60));
        let kinds: Vec<&str> = b
            .events
            .iter()
            .map(|e| match e {
                DriverEvent::Health(_) => "health",
                DriverEvent::Accepted { .. } => "accepted",
                DriverEvent::Sent { .. } => "sent",
                DriverEvent::Inbound { .. } => "inbound",
                DriverEvent::Delivered { .. } => "delivered",
                DriverEvent::Failed { .. } => "failed",
                DriverEvent::Unrecognized { .. } => "unrecognized",
                DriverEvent::Frame { .. } => "frame",
            })
            .collect();
        assert_eq!(
            kinds,
            ["health", "accepted", "sent", "inbound", "delivered"]
        );
        let DriverEvent::Sent { reference, .. } = &b.events[2] else {
            unreachable!()
        };
        let DriverEvent::Inbound {
            from,
            text,
            evidence,
            receipt,
            in_reply_to,
            ..
        } = &b.events[3]
        else {
            unreachable!()
        };
        assert_eq!((from, text.as_str(), receipt), (&phone(1), "1", &None));
        // The key answers the attempt the call was placed for.
        assert_eq!(in_reply_to, &Some(AttemptId(1)));
        assert!(
            evidence.starts_with(&format!("DTMF 1 (RFC 4733) in call {reference} at +2.0 s")),
            "{evidence}"
        );
        let DriverEvent::Delivered { evidence, .. } = &b.events[4] else {
            unreachable!()
        };
        assert!(
            evidence.contains("digits: 1; ended by us after the key 1 ack"),
            "{evidence}"
        );
        // Key 1 after 2 s of a 2 s prompt: it had just played through.
        let rec = b.records.first().cloned().unwrap();
        assert_eq!(rec.digits, "1");
        assert!(rec.answered_at.is_some() && rec.ringing_at.is_some());
        assert!((rec.listened_secs - 2.0).abs() < 0.05, "{rec:?}");
        assert_eq!(rec.late_frames, 0);
        let far = &b.reports[0];
        assert!(far.answered && far.ended_by == "gateway", "{far:?}");
        assert_eq!(far.underruns, 0);
        assert_eq!(far.max_late_ms, 0);
        assert!(far.frames >= 100, "{far:?}");
        assert!(far.loud_frames > 50, "the prompt is not silence: {far:?}");
        assert_eq!(b.trunk.active_calls(), 0);
    }

    #[test]
    fn busy_declined_and_unknown_numbers_fail_with_the_right_retry_rule() {
        let mut sim = SimConfig::default();
        for (n, code) in [(1, 486), (2, 603), (3, 404)] {
            sim.phones.push((
                format!("138001380{n:02}"),
                Behaviour {
                    reject: Some(code),
                    ..Behaviour::default()
                },
            ));
        }
        let mut c = cfg();
        c.concurrent_calls = 3;
        let mut b = bench(c, sim);
        for a in 1..=3 {
            b.trunk.submit(b.now, send(a));
        }
        b.run(Duration::from_secs(60));
        for (a, retry, word) in [
            (1, true, "busy"),
            (2, true, "declined"),
            (3, false, "does not exist"),
        ] {
            match b.terminal(a) {
                DriverEvent::Failed {
                    retryable, reason, ..
                } => {
                    assert_eq!(*retryable, retry, "{reason}");
                    assert!(reason.contains(word), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(
            !b.events
                .iter()
                .any(|e| matches!(e, DriverEvent::Sent { .. }))
        );
    }

    #[test]
    fn nobody_answering_is_cancelled_after_the_ring_timeout() {
        let sim = SimConfig {
            default: Behaviour {
                answer_after: None,
                ..Behaviour::default()
            },
            ..SimConfig::default()
        };
        let mut b = bench(cfg(), sim);
        b.trunk.submit(b.now, send(1));
        b.run(Duration::from_secs(60));
        match b.terminal(1) {
            DriverEvent::Failed {
                retryable: true,
                reason,
                ..
            } => {
                assert!(
                    reason.contains("no answer within 10 s, cancelled"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(b.reports[0].final_code, Some(487));
        assert_eq!(b.reports[0].ended_by, "gateway");
    }

    #[test]
    fn a_far_end_hanging_up_first_is_reached_only_if_it_heard_the_prompt() {
        let mut sim = SimConfig::default();
        sim.phones.push((
            "13800138001".into(),
            Behaviour {
                press: None,
                hangup_after: Some(Duration::from_millis(700)),
                ..Behaviour::default()
            },
        ));
        sim.phones.push((
            "13800138002".into(),
            Behaviour {
                press: None,
                hangup_after: Some(Duration::from_secs(3)),
                ..Behaviour::default()
            },
        ));
        let mut b = bench(cfg(), sim);
        b.trunk.submit(b.now, send(1));
        b.trunk.submit(b.now, send(2));
        b.run(Duration::from_secs(60));
        match b.terminal(1) {
            DriverEvent::Failed {
                retryable: true,
                reason,
                ..
            } => {
                assert!(
                    reason.contains("cut off after 0.7 s of 2.0 s (ended by far end)"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        match b.terminal(2) {
            DriverEvent::Delivered { evidence, .. } => {
                assert!(
                    evidence.starts_with("listened 2.0 s of 2.0 s; digits: none; ended by far end"),
                    "{evidence}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(
            !b.events
                .iter()
                .any(|e| matches!(e, DriverEvent::Inbound { .. }))
        );
    }

    #[test]
    fn no_key_after_the_prompt_hangs_up_and_counts_as_listened() {
        let sim = SimConfig {
            default: Behaviour {
                press: None,
                ..Behaviour::default()
            },
            ..SimConfig::default()
        };
        let mut b = bench(cfg(), sim);
        b.trunk.submit(b.now, send(1));
        b.run(Duration::from_secs(60));
        match b.terminal(1) {
            DriverEvent::Delivered { evidence, .. } => {
                assert!(
                    evidence.contains("ended by us: no key after the prompt"),
                    "{evidence}"
                )
            }
            other => panic!("{other:?}"),
        }
        // 2 s of prompt and 3 s of waiting, frame by frame.
        let rec = b.records.first().cloned().unwrap();
        assert_eq!(rec.frames_sent, 250);
        assert_eq!(b.reports[0].frames, 250);
        assert_eq!(b.reports[0].underruns, 0);
    }

    #[test]
    fn another_key_replays_the_prompt_once() {
        let sim = SimConfig {
            default: Behaviour {
                press: Some(('5', Duration::from_secs(1))),
                ..Behaviour::default()
            },
            ..SimConfig::default()
        };
        let mut b = bench(cfg(), sim);
        b.trunk.submit(b.now, send(1));
        b.run(Duration::from_secs(60));
        let rec = b.records.first().cloned().unwrap();
        assert_eq!(rec.digits, "5");
        assert!(rec.listened);
        // 51 frames until the key at +1 s, the whole 2 s prompt again, then the 3 s wait.
        assert_eq!(rec.frames_sent, 51 + 100 + 150, "{rec:?}");
        assert!(matches!(b.terminal(1), DriverEvent::Delivered { .. }));
        assert!(
            !b.events
                .iter()
                .any(|e| matches!(e, DriverEvent::Inbound { .. }))
        );
    }

    #[test]
    fn digest_challenges_are_answered_once() {
        let sim = SimConfig {
            auth: Some(("tocsin".into(), "s3cret".into())),
            ..SimConfig::default()
        };
        let mut c = cfg();
        c.password = Some("s3cret".into());
        let mut b = bench(c, sim.clone());
        b.trunk.submit(b.now, send(1));
        b.run(Duration::from_secs(60));
        assert!(
            matches!(b.terminal(1), DriverEvent::Delivered { .. }),
            "{:?}",
            b.events
        );
        assert_eq!(
            b.reports[0].invites, 1,
            "the challenged INVITE made no call"
        );

        let mut c = cfg();
        c.password = Some("wrong".into());
        let mut b = bench(c, sim.clone());
        b.trunk.submit(b.now, send(1));
        b.run(Duration::from_secs(60));
        match b.terminal(1) {
            DriverEvent::Failed {
                retryable: false,
                reason,
                ..
            } => {
                assert!(reason.contains("authentication rejected"), "{reason}")
            }
            other => panic!("{other:?}"),
        }

        let mut b = bench(cfg(), sim);
        b.trunk.submit(b.now, send(1));
        b.run(Duration::from_secs(60));
        match b.terminal(1) {
            DriverEvent::Failed {
                retryable: false,
                reason,
                ..
            } => {
                assert!(reason.contains("no password is configured"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn calls_beyond_the_limit_wait_their_turn_and_a_queued_one_can_be_cancelled() {
        let mut b = bench(cfg(), SimConfig::default());
        for a in 1..=6 {
            b.trunk.submit(b.now, send(a));
        }
        assert_eq!((b.trunk.active_calls(), b.trunk.queued()), (2, 4));
        b.trunk.submit(b.now, DriverCommand::Cancel(AttemptId(6)));
        b.run(Duration::from_secs(120));
        assert_eq!(b.max_active, 2);
        for a in 1..=5 {
            assert!(
                matches!(b.terminal(a), DriverEvent::Delivered { .. }),
                "{a}"
            );
        }
        assert!(matches!(
            b.terminal(6),
            DriverEvent::Failed {
                retryable: false,
                ..
            }
        ));
        let acks = b
            .events
            .iter()
            .filter(|e| matches!(e, DriverEvent::Inbound { .. }))
            .count();
        assert_eq!(acks, 5);
    }

    /// Runs the bench until the virtual clock reaches `at`.
    fn run_until(b: &mut Bench, at: Timestamp) {
        let left = at.since(b.now);
        b.run(left);
        b.now = b.now.max(at);
        b.trunk.handle_timeout(b.now);
        b.far.handle_timeout(b.now);
        b.pump();
    }

    fn assert_cancelled(b: &Bench, attempt: u64) {
        match b.terminal(attempt) {
            DriverEvent::Failed {
                retryable: false,
                reason,
                ..
            } => assert!(reason.starts_with("cancelled; "), "{reason}"),
            other => panic!("{other:?}"),
        }
        let outcomes = b
            .events
            .iter()
            .filter(|e| matches!(e, DriverEvent::Delivered { attempt: a, .. } | DriverEvent::Failed { attempt: a, .. } if a.0 == attempt))
            .count();
        assert_eq!(outcomes, 1, "exactly one outcome: {:#?}", b.events);
    }

    #[test]
    fn cancelling_a_ringing_call_sends_cancel_and_fails_it_for_good() {
        let sim = SimConfig {
            default: Behaviour {
                answer_after: None,
                ..Behaviour::default()
            },
            ..SimConfig::default()
        };
        let mut b = bench(cfg(), sim);
        b.trunk.submit(b.now, send(1));
        run_until(&mut b, Timestamp(3_000));
        assert_eq!(b.trunk.active_calls(), 1, "still ringing");
        b.trunk.submit(b.now, DriverCommand::Cancel(AttemptId(1)));
        b.run(Duration::from_secs(60));
        assert_cancelled(&b, 1);
        assert_eq!(b.reports[0].final_code, Some(487));
        assert_eq!(b.reports[0].ended_by, "gateway");
        assert!(!b.reports[0].answered);
        // Cancelled at 3 s, long before the 10 s ring timeout.
        let rec = b.records.first().cloned().unwrap();
        assert_eq!(rec.ended, "cancelled by the gateway");
        assert!(rec.ended_at.unwrap() < Timestamp(4_000), "{rec:?}");
        assert_eq!(b.trunk.active_calls(), 0);
        // A second cancel of a finished call does nothing.
        b.trunk.submit(b.now, DriverCommand::Cancel(AttemptId(1)));
        assert_eq!(b.trunk.poll_event(), None);
    }

    #[test]
    fn a_cancel_before_any_provisional_response_waits_for_one() {
        let mut b = bench(cfg(), SimConfig::default());
        b.trunk.submit(b.now, send(1));
        // The INVITE is still in our transmit queue: nothing came back yet.
        b.trunk.submit(b.now, DriverCommand::Cancel(AttemptId(1)));
        let first = b.trunk.poll_transmit().unwrap();
        assert!(first.bytes.starts_with(b"INVITE"));
        assert_eq!(b.trunk.poll_transmit(), None, "no CANCEL before a 1xx");
        b.far
            .handle_datagram(b.now, SimSocket::Sip, GW.parse().unwrap(), &first.bytes);
        b.run(Duration::from_secs(60));
        assert_cancelled(&b, 1);
        assert_eq!(b.reports[0].final_code, Some(487));
        assert!(!b.reports[0].answered, "the CANCEL beat the 1 s answer");
    }

    #[test]
    fn cancelling_an_answered_call_stops_the_prompt_and_hangs_up() {
        let sim = SimConfig {
            default: Behaviour {
                press: None,
                ..Behaviour::default()
            },
            ..SimConfig::default()
        };
        let mut b = bench(cfg(), sim);
        b.trunk.submit(b.now, send(1));
        // Answered at 1 s; half a second into the 2 s prompt.
        run_until(&mut b, Timestamp(1_500));
        assert!(
            b.events
                .iter()
                .any(|e| matches!(e, DriverEvent::Sent { .. }))
        );
        b.trunk.submit(b.now, DriverCommand::Cancel(AttemptId(1)));
        b.pump();
        b.run(Duration::from_secs(60));
        assert_cancelled(&b, 1);
        let far = &b.reports[0];
        assert!(far.answered && far.ended_by == "gateway", "{far:?}");
        assert!(far.frames < 40, "the prompt stopped at once: {far:?}");
        let rec = b.records.first().cloned().unwrap();
        assert!(!rec.listened && rec.listened_secs < 0.6, "{rec:?}");
        assert_eq!(rec.ended, "ended by us: cancelled by the gateway");
    }

    #[test]
    fn cancelling_a_call_that_already_played_through_keeps_it_delivered() {
        let sim = SimConfig {
            default: Behaviour {
                press: None,
                ..Behaviour::default()
            },
            ..SimConfig::default()
        };
        let mut b = bench(cfg(), sim);
        b.trunk.submit(b.now, send(1));
        // The 2 s prompt played through at 3 s; we wait 3 s for a key after it.
        run_until(&mut b, Timestamp(3_500));
        assert_eq!(b.trunk.active_calls(), 1);
        b.trunk.submit(b.now, DriverCommand::Cancel(AttemptId(1)));
        b.pump();
        b.run(Duration::from_secs(60));
        match b.terminal(1) {
            DriverEvent::Delivered { evidence, .. } => assert!(
                evidence.contains("ended by us: cancelled by the gateway"),
                "{evidence}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(b.reports[0].ended_by == "gateway");
    }

    #[test]
    fn lost_datagrams_are_retransmitted() {
        let sim = SimConfig {
            drop_sip: 0.3,
            seed: 3,
            ..SimConfig::default()
        };
        let mut b = bench(cfg(), sim);
        for a in 1..=2 {
            b.trunk.submit(b.now, send(a));
        }
        b.run(Duration::from_secs(120));
        for a in 1..=2 {
            // Whatever was lost, each attempt ends with exactly one outcome.
            let n = b
                .events
                .iter()
                .filter(|e| matches!(e, DriverEvent::Delivered { attempt, .. } | DriverEvent::Failed { attempt, .. } if attempt.0 == a))
                .count();
            assert_eq!(n, 1, "{:#?}", b.events);
        }
        assert!(
            b.events
                .iter()
                .any(|e| matches!(e, DriverEvent::Inbound { .. }))
        );
    }

    #[test]
    fn a_silent_trunk_fails_the_call_after_timer_b() {
        let mut b = bench(cfg(), SimConfig::default());
        b.trunk.submit(b.now, send(1));
        let mut invites = 0;
        while let Some(t) = b.trunk.poll_transmit() {
            invites += usize::from(t.bytes.starts_with(b"INVITE"));
        }
        let mut now = Timestamp::ZERO;
        while let Some(t) = b.trunk.poll_timeout() {
            now = t;
            b.trunk.handle_timeout(now);
            while let Some(t) = b.trunk.poll_transmit() {
                invites += usize::from(t.bytes.starts_with(b"INVITE"));
            }
            if b.trunk.active_calls() == 0 {
                break;
            }
        }
        // Ring timeout (10 s) comes before timer B (32 s): INVITE at 0, .5, 1.5, 3.5, 7.5.
        assert_eq!(invites, 5);
        let events: Vec<DriverEvent> = std::iter::from_fn(|| b.trunk.poll_event()).collect();
        assert!(
            matches!(
                events.last(),
                Some(DriverEvent::Failed {
                    retryable: true,
                    ..
                })
            ),
            "{events:?} at {now}"
        );
    }

    #[test]
    fn garbage_info_dtmf_and_stray_requests_are_handled() {
        let mut b = bench(cfg(), SimConfig::default());
        let far: SocketAddr = FAR_SIP.parse().unwrap();
        b.trunk
            .handle_datagram(b.now, Socket::Sip, far, b"\x00\x01garbage\r\n\r\n");
        b.trunk
            .handle_datagram(b.now, Socket::Sip, far, b"\r\n\r\n");
        b.trunk
            .handle_datagram(b.now, Socket::Rtp(40000), far, &[0x80; 3]);
        let events: Vec<DriverEvent> = std::iter::from_fn(|| b.trunk.poll_event()).collect();
        assert!(
            matches!(&events[1], DriverEvent::Unrecognized { raw } if raw.contains("bad start line")),
            "{events:?}"
        );
        assert_eq!(events.len(), 2);
        let opts = "OPTIONS sip:tocsin@10.0.0.5 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKo\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:tocsin@10.0.0.5>\r\nCall-ID: opt1\r\nCSeq: 1 OPTIONS\r\n\r\n";
        b.trunk
            .handle_datagram(b.now, Socket::Sip, far, opts.as_bytes());
        let t = b.trunk.poll_transmit().unwrap();
        assert!(t.bytes.starts_with(b"SIP/2.0 200 OK"));
        assert_eq!(t.to, far);

        let info = |ct: &str, body: &str| {
            let mut m = Message::request(Method::Info, "sip:x");
            m.push("Content-Type", ct);
            m.body = body.as_bytes().to_vec();
            info_digit(&m)
        };
        assert_eq!(
            info("application/dtmf-relay", "Signal=1\r\nDuration=160\r\n"),
            Some('1')
        );
        assert_eq!(info("application/dtmf-relay", "Signal= 11\r\n"), Some('#'));
        assert_eq!(info("application/dtmf", "5"), Some('5'));
        assert_eq!(info("text/plain", "1"), None);
        assert_eq!(info("application/dtmf", "x"), None);
    }

    #[test]
    fn registration_is_sent_answered_and_refreshed() {
        let mut c = cfg();
        c.register = true;
        c.register_expires_secs = 60;
        let mut t = Trunk::new(c, GW.parse().unwrap(), vec![40000], 1, Timestamp::ZERO).unwrap();
        let reg = t.poll_transmit().unwrap();
        let (m, _) = wire::parse(&reg.bytes).unwrap().unwrap();
        assert_eq!(m.method(), Some(&Method::Register));
        assert_eq!(m.header("Expires"), Some("60"));
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=r\r\nCall-ID: {}\r\nCSeq: 1 REGISTER\r\nContact: <sip:tocsin@10.0.0.5:5060>;expires=40\r\n\r\n",
            m.header("Via").unwrap(),
            m.header("From").unwrap(),
            m.header("To").unwrap(),
            m.call_id()
        );
        t.handle_datagram(
            Timestamp::from_millis(50),
            Socket::Sip,
            FAR_SIP.parse().unwrap(),
            ok.as_bytes(),
        );
        let h = std::iter::from_fn(|| t.poll_event()).last();
        assert!(
            matches!(
                h,
                Some(DriverEvent::Health(Health {
                    registered: true,
                    ..
                }))
            ),
            "{h:?}"
        );
        // Refreshed at half the granted 40 s.
        assert_eq!(t.poll_timeout(), Some(Timestamp::from_millis(20_050)));
        t.handle_timeout(Timestamp::from_millis(20_050));
        let again = t.poll_transmit().unwrap();
        assert!(again.bytes.starts_with(b"REGISTER"));
        assert!(String::from_utf8_lossy(&again.bytes).contains("CSeq: 2 REGISTER"));
    }

    /// Checks every call's frames against its own schedule: frame `n` sent exactly at its
    /// first frame's time + 20 ms × n, with consecutive sequence numbers and timestamps.
    /// Returns each call slot's first frame time.
    fn on_schedule(frames: &[(Timestamp, u16, RtpPacket)]) -> HashMap<u16, Timestamp> {
        let mut first: HashMap<u16, (Timestamp, RtpPacket, u64)> = HashMap::new();
        for (t, port, p) in frames {
            let f = first.entry(*port).or_insert((*t, p.clone(), 0));
            let n = f.2;
            assert_eq!(
                *t,
                f.0 + Duration::from_millis(20 * n),
                "slot {port} frame {n}"
            );
            assert_eq!(p.seq, f.1.seq.wrapping_add(n as u16));
            assert_eq!(p.timestamp, f.1.timestamp.wrapping_add(160 * n as u32));
            assert_eq!(p.marker, n == 0);
            f.2 += 1;
        }
        first.into_iter().map(|(port, f)| (port, f.0)).collect()
    }

    fn answered_at_once(calls: usize, prompt_secs: f64) -> Bench {
        let mut c = cfg();
        c.concurrent_calls = calls;
        c.queue_limit = calls;
        c.prompt_secs = prompt_secs;
        c.digit_wait_secs = 1;
        c.max_call_secs = 3600;
        let sim = SimConfig {
            default: Behaviour {
                answer_after: Some(Duration::ZERO),
                press: None,
                hangup_after: None,
                ..Behaviour::default()
            },
            ..SimConfig::default()
        };
        let mut b = bench(c, sim);
        for a in 1..=calls as u64 {
            b.trunk.submit(b.now, send(a));
        }
        b
    }

    #[test]
    fn two_hundred_calls_answered_together_spread_their_frames_over_the_frame() {
        let mut b = answered_at_once(200, 1.0);
        b.run(Duration::from_secs(60));
        for a in 1..=200 {
            assert!(matches!(b.terminal(a), DriverEvent::Delivered { .. }));
        }
        let first = on_schedule(&b.frames);
        assert_eq!(first.len(), 200);
        // Answered together: 10 calls start in each millisecond of the 20 ms frame.
        let answered = b.frames.iter().map(|f| f.0).min().unwrap();
        let mut per_ms = [0; SLOTS];
        for t in first.values() {
            let d = t.since(answered).as_millis() as usize;
            assert!(d < SLOTS, "prompt started {d} ms after the answer");
            per_ms[d] += 1;
        }
        assert_eq!(per_ms, [10; SLOTS]);
        let mut at_once: HashMap<Timestamp, usize> = HashMap::new();
        for (t, _, _) in &b.frames {
            *at_once.entry(*t).or_default() += 1;
        }
        assert_eq!(at_once.values().max(), Some(&10));
        assert!(b.reports.iter().all(|r| r.answered && r.underruns == 0));
    }

    #[test]
    fn staggered_calls_do_not_drift_over_ten_minutes() {
        // Nine calls: eight share the answer's slot, the ninth starts 1 ms later.
        let mut b = answered_at_once(9, 600.0);
        b.run(Duration::from_secs(700));
        let first = on_schedule(&b.frames);
        let answered = b.frames.iter().map(|f| f.0).min().unwrap();
        let mut starts: Vec<u128> = first
            .values()
            .map(|t| t.since(answered).as_millis())
            .collect();
        starts.sort_unstable();
        assert_eq!(starts, [0, 0, 0, 0, 0, 0, 0, 0, 1]);
        // The whole 600 s prompt, plus silence while waiting for a key, on schedule.
        for port in first.keys() {
            let n = b.frames.iter().filter(|f| f.1 == *port).count();
            assert!(n >= 30_000, "slot {port}: {n} frames");
        }
    }

    /// A 200 OK answering an INVITE (not a BYE's or a CANCEL's).
    fn is_invite_ok(bytes: &[u8]) -> bool {
        let text = String::from_utf8_lossy(bytes);
        text.starts_with("SIP/2.0 200") && text.contains(" INVITE\r\n")
    }

    #[test]
    fn a_lost_200_ok_is_repeated_by_the_far_end_and_the_call_goes_on() {
        // Many answers at once overflowed the SIP socket's receive buffer: the 200 OK of
        // a call that had already seen its 180 was lost. The far end repeats it until
        // our ACK (RFC 3261 §13.3.1.4), so the call is answered half a second later.
        let mut b = bench(cfg(), SimConfig::default());
        let mut lost = 0;
        b.lose = Some(Box::new(move |bytes| {
            let first = is_invite_ok(bytes) && lost == 0;
            lost += usize::from(first);
            first
        }));
        b.trunk.submit(b.now, send(1));
        b.run(Duration::from_secs(60));
        assert!(
            matches!(b.terminal(1), DriverEvent::Delivered { evidence, .. } if evidence.contains("digits: 1")),
            "{:?}",
            b.terminal(1)
        );
        let rec = &b.records[0];
        let answered = rec.answered_at.unwrap().since(rec.dialled_at);
        // Answered at 1 s, the repeat at 1.5 s.
        assert_eq!(answered, Duration::from_millis(1500));
        assert_eq!(b.reports[0].final_retransmits, 1);
        assert_eq!(b.reports[0].ended_by, "gateway");
    }

    #[test]
    fn a_far_end_whose_answer_never_arrives_hangs_up_and_the_attempt_fails_at_once() {
        // Every 200 OK to the INVITE is lost (the 180 came): the far end repeats it for
        // 64×T1 = 32 s, then hangs up with BYE (§13.3.1.4). Its BYE ends our pending
        // INVITE at once instead of after the ring timeout and the CANCEL's 32 s.
        let mut c = cfg();
        c.ring_timeout_secs = 60;
        let mut b = bench(c, SimConfig::default());
        b.lose = Some(Box::new(is_invite_ok));
        b.trunk.submit(b.now, send(1));
        b.run(Duration::from_secs(200));
        match b.terminal(1) {
            DriverEvent::Failed {
                retryable: true,
                reason,
                ..
            } => assert!(reason.contains("hung up before its answer"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // Answered at 1 s, given up 32 s later.
        assert_eq!(b.outcomes[&1], (Timestamp::from_millis(33_000), 1));
        assert_eq!(b.reports[0].ended_by, "phone (no ACK)");
        assert_eq!(b.trunk.active_calls(), 0);
    }

    #[test]
    fn every_accepted_attempt_ends_within_the_bound_whatever_the_far_end_and_network_do() {
        let never_answers = Behaviour {
            answer_after: None,
            ..Behaviour::default()
        };
        let quiet = Behaviour {
            press: None,
            ..Behaviour::default()
        };
        let seeded = |seed: u64, p: f64| -> Loss {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            Box::new(move |_| rng.random_bool(p))
        };
        // (what, far end's behaviour, loss gateway → far end, loss far end → gateway)
        let cases: Vec<(&str, Behaviour, f64, Loss)> = vec![
            ("far end silent", quiet.clone(), 1.0, Box::new(|_| false)),
            (
                "every response lost",
                quiet.clone(),
                0.0,
                Box::new(|_| true),
            ),
            (
                "BYE never answered",
                quiet.clone(),
                0.0,
                Box::new(|b| String::from_utf8_lossy(b).contains(" BYE\r\n")),
            ),
            (
                "200 OK always lost",
                quiet.clone(),
                0.0,
                Box::new(is_invite_ok),
            ),
            (
                "rings forever, half lost",
                never_answers.clone(),
                0.5,
                seeded(1, 0.5),
            ),
            (
                "half lost both ways",
                Behaviour::default(),
                0.5,
                seeded(2, 0.5),
            ),
            ("90% lost both ways", quiet.clone(), 0.9, seeded(3, 0.9)),
            (
                "30% lost both ways",
                Behaviour::default(),
                0.3,
                seeded(4, 0.3),
            ),
        ];
        for (what, behaviour, drop_sip, lose) in cases {
            let mut c = cfg();
            // Production defaults for the timers the bound is made of.
            c.ring_timeout_secs = 30;
            c.max_call_secs = 180;
            c.concurrent_calls = 2;
            let bound = c.outcome_bound();
            let sim = SimConfig {
                default: behaviour,
                drop_sip,
                seed: 9,
                ..SimConfig::default()
            };
            let mut b = bench(c, sim);
            b.lose = Some(lose);
            // Five calls on two slots: three wait in the queue.
            for a in 1..=5 {
                b.trunk.submit(b.now, send(a));
            }
            b.run(Duration::from_secs(3 * 274 + 60));
            for a in 1..=5 {
                let Some(&(at, n)) = b.outcomes.get(&a) else {
                    panic!("{what}: attempt {a} has no outcome: {:#?}", b.events);
                };
                assert_eq!(n, 1, "{what}: attempt {a} ended {n} times");
                let rec = b.records.iter().find(|r| r.attempt.0 == a).unwrap();
                let took = at.since(rec.dialled_at);
                assert!(took <= bound, "{what}: attempt {a} took {took:?}");
            }
            assert_eq!(b.trunk.active_calls() + b.trunk.queued(), 0, "{what}");
        }
    }

    #[test]
    fn an_answer_after_the_call_was_given_up_is_acknowledged_and_hung_up() {
        // Our CANCEL never reaches the far end, which answers at 45 s: the call was
        // failed at 42 s (ring timeout 10 s + the CANCEL's 64×T1). Its 200 OK is ACKed
        // and hung up at once rather than leaving the person on a silent line.
        let sim = SimConfig {
            default: Behaviour {
                answer_after: Some(Duration::from_secs(45)),
                press: None,
                ..Behaviour::default()
            },
            ..SimConfig::default()
        };
        let mut b = bench(cfg(), sim);
        b.lose_out = Some(Box::new(|bytes| bytes.starts_with(b"CANCEL")));
        b.trunk.submit(b.now, send(1));
        b.run(Duration::from_secs(120));
        assert!(
            matches!(b.terminal(1), DriverEvent::Failed { retryable: true, reason, .. } if reason.contains("no answer")),
            "{:?}",
            b.terminal(1)
        );
        assert_eq!(b.outcomes[&1], (Timestamp::from_millis(42_000), 1));
        let r = &b.reports[0];
        assert!(r.answered);
        assert_eq!(r.ended_by, "gateway");
        // Our ACK stopped the far end repeating its 200 OK.
        assert_eq!(r.final_retransmits, 0);
        assert_eq!(b.far.active(), 0);
    }

    // ---- whose key presses count ---------------------------------------------------------

    /// RFC 4733 key `1`, start of the press: PT 101, seq 100, ts 16000, SSRC 0x12345678,
    /// event 1, volume 10, duration 160 (the brief's vector).
    const KEY_1_START: [u8; 16] = [
        0x80, 0xE5, 0x00, 0x64, 0x00, 0x00, 0x3E, 0x80, 0x12, 0x34, 0x56, 0x78, 0x01, 0x0A, 0x00,
        0xA0,
    ];
    /// Its end packet (sent three times): seq 105, E bit, duration 800.
    const KEY_1_END: [u8; 16] = [
        0x80, 0x65, 0x00, 0x69, 0x00, 0x00, 0x3E, 0x80, 0x12, 0x34, 0x56, 0x78, 0x01, 0x8A, 0x03,
        0x20,
    ];

    /// A public trunk (documentation range, so not private).
    const PUBLIC_TRUNK: &str = "203.0.113.1:5060";
    /// Someone who found the call's media port.
    const STRANGER: &str = "198.51.100.66:30000";

    /// An answer naming `ip:port` for media, PCMA and telephone-event 101, and `extra`
    /// lines (an `a=ssrc:`).
    fn answer_sdp(ip: &str, port: u16, extra: &str) -> String {
        format!(
            "v=0\r\no=far 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n{extra}a=ptime:20\r\n"
        )
    }

    /// The 200 OK a far end sends for `req`, with `sdp` as body.
    fn ok_for(req: &Message, sdp: Option<&str>) -> Vec<u8> {
        let mut ok = Message::response(200, "OK");
        for v in req.headers_named("Via") {
            ok.push("Via", v.to_owned());
        }
        ok.push("From", req.header("From").unwrap_or_default().to_owned());
        let to = req.header("To").unwrap_or_default();
        ok.push(
            "To",
            if wire::param(to, "tag").is_some() {
                to.to_owned()
            } else {
                format!("{to};tag=far1")
            },
        );
        ok.push("Call-ID", req.call_id().to_owned());
        ok.push("CSeq", req.header("CSeq").unwrap_or_default().to_owned());
        if let Some(sdp) = sdp {
            ok.push("Contact", "<sip:phone@203.0.113.9>");
            ok.push("Content-Type", "application/sdp");
            ok.body = sdp.as_bytes().to_vec();
        }
        ok.to_bytes()
    }

    /// One call on a trunk at `trunk`, answered by hand with `sdp` one second after the
    /// INVITE; every transmit and event up to then is drained.
    fn answered_by_hand(trunk: &str, sdp: &str) -> (Trunk, Timestamp) {
        let mut c = SipConfig::new(trunk);
        c.bind = GW.into();
        c.prompt_secs = 2.0;
        c.digit_wait_secs = 3;
        let mut t = Trunk::new(c, GW.parse().unwrap(), vec![40000], 7, Timestamp::ZERO).unwrap();
        t.submit(Timestamp::ZERO, send(1));
        let invite = std::iter::from_fn(|| t.poll_transmit())
            .find(|x| x.bytes.starts_with(b"INVITE"))
            .expect("an INVITE");
        let (req, _) = wire::parse(&invite.bytes).unwrap().unwrap();
        let now = Timestamp::from_millis(1000);
        t.handle_datagram(
            now,
            Socket::Sip,
            trunk.parse().unwrap(),
            &ok_for(&req, Some(sdp)),
        );
        while t.poll_event().is_some() {}
        while t.poll_transmit().is_some() {}
        (t, now)
    }

    /// The events that have come out.
    fn drain(t: &mut Trunk) -> Vec<DriverEvent> {
        std::iter::from_fn(|| t.poll_event()).collect()
    }

    fn acks(events: &[DriverEvent]) -> usize {
        events
            .iter()
            .filter(|e| matches!(e, DriverEvent::Inbound { text, .. } if text == "1"))
            .count()
    }

    /// `bytes` with the SSRC replaced.
    fn with_ssrc(bytes: &[u8], ssrc: u32) -> Vec<u8> {
        let mut b = bytes.to_vec();
        if let Some(s) = b.get_mut(8..12) {
            s.copy_from_slice(&ssrc.to_be_bytes());
        }
        b
    }

    /// One PCMA frame of silence (PT 8) with `ssrc`.
    fn voice_frame(ssrc: u32, seq: u16) -> Vec<u8> {
        RtpPacket {
            marker: false,
            payload_type: 8,
            seq,
            timestamp: u32::from(seq) * 160,
            ssrc,
            payload: vec![0xD5; 160],
        }
        .to_bytes()
    }

    #[test]
    fn a_key_press_from_anyone_but_the_far_end_is_not_an_ack() {
        let far: SocketAddr = "203.0.113.20:30000".parse().unwrap();
        let (mut t, mut now) =
            answered_by_hand(PUBLIC_TRUNK, &answer_sdp("203.0.113.20", 30000, ""));
        let stranger: SocketAddr = STRANGER.parse().unwrap();
        // A forged key 1 from a stranger, the whole press; and one from the far end's IP
        // but another port.
        now = now + Duration::from_millis(100);
        for bytes in [&KEY_1_START, &KEY_1_END, &KEY_1_END, &KEY_1_END] {
            t.handle_datagram(now, Socket::Rtp(40000), stranger, bytes);
        }
        let next_port: SocketAddr = "203.0.113.20:30002".parse().unwrap();
        t.handle_datagram(now, Socket::Rtp(40000), next_port, &KEY_1_START);
        // Audio from a stranger too.
        t.handle_datagram(now, Socket::Rtp(40000), stranger, &voice_frame(9, 1));
        let events = drain(&mut t);
        assert_eq!(acks(&events), 0, "{events:?}");
        // Surfaced once per kind per call, not once per packet.
        let raws: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                DriverEvent::Unrecognized { raw } => Some(raw.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(raws.len(), 2, "{raws:?}");
        assert!(
            raws[0].starts_with(
                "a key press from 198.51.100.66:30000 (ssrc 0x12345678, payload type 101)"
            ) && raws[0].ends_with("ignored: the far end is 203.0.113.20:30000"),
            "{raws:?}"
        );
        assert!(
            raws[1].starts_with("RTP from 198.51.100.66:30000"),
            "{raws:?}"
        );
        // The far end's own telephone-event of another payload type is no key either.
        let mut other_pt = KEY_1_START;
        other_pt[1] = 0x80 | 100;
        t.handle_datagram(now, Socket::Rtp(40000), far, &other_pt);
        assert_eq!(acks(&drain(&mut t)), 0);
        // The same press from the far end is the ack: the stranger's copies did not use
        // it up.
        now = now + Duration::from_millis(100);
        t.handle_datagram(now, Socket::Rtp(40000), far, &KEY_1_START);
        let events = drain(&mut t);
        assert!(
            matches!(&events[..], [DriverEvent::Inbound { text, in_reply_to: Some(AttemptId(1)), .. }] if text == "1"),
            "{events:?}"
        );
        // The record counts what was ignored: 4 + 1 + 1 datagrams.
        let bye = std::iter::from_fn(|| t.poll_transmit())
            .find(|x| x.bytes.starts_with(b"BYE"))
            .expect("a BYE after the ack");
        let (req, _) = wire::parse(&bye.bytes).unwrap().unwrap();
        t.handle_datagram(
            now,
            Socket::Sip,
            PUBLIC_TRUNK.parse().unwrap(),
            &ok_for(&req, None),
        );
        let rec = t.poll_record().expect("the call's record");
        assert_eq!((rec.digits.as_str(), rec.stray_media), ("1", 6));
        let events = drain(&mut t);
        assert!(
            matches!(&events[..], [DriverEvent::Delivered { evidence, .. }]
                if evidence.ends_with("; ignored 6 RTP packets not from the far end")),
            "{events:?}"
        );
    }

    #[test]
    fn a_far_end_declaring_its_ssrc_is_heard_only_with_it() {
        let far: SocketAddr = "203.0.113.20:30000".parse().unwrap();
        let sdp = answer_sdp("203.0.113.20", 30000, "a=ssrc:4207869953 cname:phone\r\n");
        let (mut t, now) = answered_by_hand(PUBLIC_TRUNK, &sdp);
        // From the right address, but not the declared source.
        t.handle_datagram(now, Socket::Rtp(40000), far, &KEY_1_START);
        let events = drain(&mut t);
        assert_eq!(acks(&events), 0);
        assert!(
            matches!(&events[..], [DriverEvent::Unrecognized { .. }]),
            "{events:?}"
        );
        t.handle_datagram(
            now,
            Socket::Rtp(40000),
            far,
            &with_ssrc(&KEY_1_START, 4_207_869_953),
        );
        assert_eq!(acks(&drain(&mut t)), 1);
    }

    #[test]
    fn a_far_end_behind_nat_is_latched_on_its_first_negotiated_packet() {
        // The phone writes its private address; its packets come from its NAT.
        let nat: SocketAddr = "198.51.100.7:41000".parse().unwrap();
        let private: SocketAddr = "192.168.1.20:30000".parse().unwrap();
        let stranger: SocketAddr = STRANGER.parse().unwrap();
        let (mut t, mut now) =
            answered_by_hand(PUBLIC_TRUNK, &answer_sdp("192.168.1.20", 30000, ""));
        const FAR_SSRC: u32 = 0xFA4E_0001;
        let sent_to = |t: &mut Trunk| -> Vec<SocketAddr> {
            std::iter::from_fn(|| t.poll_transmit())
                .filter(|x| x.socket == Socket::Rtp(40000))
                .map(|x| x.to)
                .collect()
        };
        // Until the far end is heard from, our prompt goes where its SDP says.
        now = now + Duration::from_millis(40);
        t.handle_timeout(now);
        let to = sent_to(&mut t);
        assert!(!to.is_empty() && to.iter().all(|a| *a == private), "{to:?}");
        // A stranger's packet of a type not negotiated (PCMU, PT 0) does not latch.
        let mut pcmu = voice_frame(7, 1);
        pcmu[1] = 0;
        t.handle_datagram(now, Socket::Rtp(40000), stranger, &pcmu);
        // The far end's first voice frame latches its NAT address and SSRC.
        t.handle_datagram(now, Socket::Rtp(40000), nat, &voice_frame(FAR_SSRC, 1));
        now = now + Duration::from_millis(40);
        t.handle_timeout(now);
        let to = sent_to(&mut t);
        assert!(!to.is_empty() && to.iter().all(|a| *a == nat), "{to:?}");
        // Thereafter: a stranger's key 1, and a key 1 from the NAT address under another
        // SSRC (someone else behind the same NAT, or a guess), are not acks.
        t.handle_datagram(now, Socket::Rtp(40000), stranger, &KEY_1_START);
        t.handle_datagram(now, Socket::Rtp(40000), nat, &KEY_1_START);
        let events = drain(&mut t);
        assert_eq!(acks(&events), 0, "{events:?}");
        assert!(
            events
                .iter()
                .any(|e| matches!(e, DriverEvent::Unrecognized { raw }
                if raw.contains("the far end is 198.51.100.7:41000 ssrc 0xfa4e0001 (latched)"))),
            "{events:?}"
        );
        // The far end's own press is.
        t.handle_datagram(
            now,
            Socket::Rtp(40000),
            nat,
            &with_ssrc(&KEY_1_START, FAR_SSRC),
        );
        assert_eq!(acks(&drain(&mut t)), 1);
    }
}
