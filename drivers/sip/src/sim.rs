//! The far end of a SIP trunk as a state machine: a user agent server that rings, answers
//! after a while or never, is busy or declines, presses a key some time after answering,
//! or hangs up early; optionally it demands Digest authentication and drops datagrams.
//!
//! Like a real UAS over UDP it retransmits its final response to an INVITE until the
//! ACK comes (every T1, doubling up to T2, for 64×T1: RFC 3261 §13.3.1.4 for a 2xx,
//! §17.2.1 timer G for a failure), and hangs up with BYE when a 2xx is never
//! acknowledged; a lost 200 OK is therefore recovered, as it is on a real trunk.
//!
//! It checks what the gateway sends: RTP frames are timed against the stream's first
//! frame (a frame more than 40 ms late is an underrun) and decoded to tell tone from
//! silence. [`SimReport`]s say per call what the far end saw.
//!
//! [`crate::udp::spawn_far_end`] runs it on real UDP sockets for integration tests and
//! `tocsin-sim sip`.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tocsin_core::Timestamp;

use crate::digest::md5_hex;
use crate::g711::Codec;
use crate::rtp::{RtpPacket, key_press_packets};
use crate::sdp::{self, Negotiated};
use crate::wire::{self, Message, Method, param};

/// RFC 3261's T1: the first retransmission interval of a final response.
const T1: Duration = Duration::from_millis(500);
/// RFC 3261's T2: the longest retransmission interval.
const T2: Duration = Duration::from_secs(4);

/// Which far-end socket a datagram uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimSocket {
    /// SIP signalling.
    Sip,
    /// RTP (one socket for every simulated phone).
    Rtp,
}

/// How one simulated phone behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct Behaviour {
    /// Rejects the call with this final code after ringing (486 busy, 603 decline, 404).
    pub reject: Option<u16>,
    /// Answers this long after the INVITE; `None` rings forever.
    pub answer_after: Option<Duration>,
    /// Presses this key this long after answering.
    pub press: Option<(char, Duration)>,
    /// Hangs up (BYE) this long after answering.
    pub hangup_after: Option<Duration>,
}

impl Default for Behaviour {
    /// Answers after 1 s, presses `1` 2 s later.
    fn default() -> Self {
        Behaviour {
            reject: None,
            answer_after: Some(Duration::from_secs(1)),
            press: Some(('1', Duration::from_secs(2))),
            hangup_after: None,
        }
    }
}

/// The far end's setup.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Behaviour of numbers not listed in `phones`.
    pub default: Behaviour,
    /// Behaviour by dialled user part (`13800138000`).
    pub phones: Vec<(String, Behaviour)>,
    /// The G.711 codecs it accepts, preferred first.
    pub codecs: Vec<Codec>,
    /// Demand Digest authentication with this user and password.
    pub auth: Option<(String, String)>,
    /// Probability of dropping any SIP datagram from the gateway (seeded).
    pub drop_sip: f64,
    /// RNG seed.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            default: Behaviour::default(),
            phones: Vec::new(),
            codecs: vec![Codec::Pcma, Codec::Pcmu],
            auth: None,
            drop_sip: 0.0,
            seed: 1,
        }
    }
}

/// What the far end saw on one call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimReport {
    /// The Call-ID.
    pub call_id: String,
    /// The dialled user part.
    pub user: String,
    /// Whether it answered.
    pub answered: bool,
    /// Final code it sent when it did not answer (or 487 after CANCEL).
    pub final_code: Option<u16>,
    /// RTP frames received.
    pub frames: u64,
    /// Frames that came more than 40 ms after their due time.
    pub underruns: u64,
    /// Largest lateness of a frame against the stream's start, milliseconds.
    pub max_late_ms: i64,
    /// Frames with tone in them.
    pub loud_frames: u64,
    /// Frames of near silence.
    pub silent_frames: u64,
    /// Keys pressed.
    pub pressed: String,
    /// Who ended the call: `gateway` (BYE or CANCEL), `phone`, or empty while it lasts.
    pub ended_by: String,
    /// INVITEs received for this call (retransmissions and authenticated retries count).
    pub invites: u32,
    /// Times its final response to the INVITE was sent again because no ACK came.
    pub final_retransmits: u32,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum SimState {
    Ringing,
    Answered,
    Ended,
}

#[derive(Debug)]
struct SimCall {
    peer: SocketAddr,
    invite: Message,
    to_tag: String,
    behaviour: Behaviour,
    state: SimState,
    answer_at: Option<Timestamp>,
    reject_at: Option<Timestamp>,
    press_at: Option<Timestamp>,
    hangup_at: Option<Timestamp>,
    neg: Option<Negotiated>,
    answer_sdp: String,
    first: Option<(Timestamp, u32)>,
    /// The final response to the INVITE, repeated until the ACK comes.
    final_rt: Option<FinalRetransmit>,
    report: SimReport,
}

/// A final response waiting for its ACK (RFC 3261 §13.3.1.4, §17.2.1).
#[derive(Debug)]
struct FinalRetransmit {
    bytes: Vec<u8>,
    next: Timestamp,
    interval: Duration,
    /// After 64×T1 without an ACK the server gives up (and a 2xx's dialog is hung up).
    give_up: Timestamp,
    ok: bool,
}

/// The far end. See the module documentation.
pub struct FarEnd {
    cfg: SimConfig,
    rtp_addr: SocketAddr,
    rng: ChaCha8Rng,
    calls: BTreeMap<String, SimCall>,
    transmits: VecDeque<(SimSocket, SocketAddr, Vec<u8>)>,
    reports: VecDeque<SimReport>,
    nonce: String,
}

impl FarEnd {
    /// A far end whose RTP socket is at `rtp_addr` (written into its SDP answers).
    pub fn new(cfg: SimConfig, rtp_addr: SocketAddr) -> FarEnd {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let nonce = format!("{:016x}", rng.random::<u64>());
        FarEnd {
            cfg,
            rtp_addr,
            rng,
            calls: BTreeMap::new(),
            transmits: VecDeque::new(),
            reports: VecDeque::new(),
            nonce,
        }
    }

    /// Calls not yet over.
    pub fn active(&self) -> usize {
        self.calls
            .values()
            .filter(|c| c.state != SimState::Ended)
            .count()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SimSocket, SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// The report of the next finished call.
    pub fn poll_report(&mut self) -> Option<SimReport> {
        self.reports.pop_front()
    }

    /// The earliest scheduled action.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.calls
            .values()
            .flat_map(|c| {
                let rt = c.final_rt.as_ref().map(|r| r.next.min(r.give_up));
                [c.answer_at, c.reject_at, c.press_at, c.hangup_at, rt]
            })
            .flatten()
            .min()
    }

    /// A datagram from the gateway.
    pub fn handle_datagram(
        &mut self,
        now: Timestamp,
        socket: SimSocket,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        match socket {
            SimSocket::Sip => {
                if self.cfg.drop_sip > 0.0 && self.rng.random_bool(self.cfg.drop_sip.min(1.0)) {
                    return;
                }
                if let Ok(Some((m, _))) = wire::parse(bytes) {
                    if m.status().is_some() {
                        // Responses to our BYE need nothing more.
                        return;
                    }
                    self.on_request(now, from, m);
                }
            }
            SimSocket::Rtp => self.on_rtp(now, from, bytes),
        }
    }

    /// Scheduled actions that are due.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let ids: Vec<String> = self.calls.keys().cloned().collect();
        for id in ids {
            let Some(mut c) = self.calls.remove(&id) else {
                continue;
            };
            if c.reject_at.is_some_and(|t| now >= t) {
                c.reject_at = None;
                let code = c.behaviour.reject.unwrap_or(486);
                let inv = c.invite.clone();
                self.respond_final(now, &mut c, &inv, code, None);
                c.report.final_code = Some(code);
                c.state = SimState::Ended;
                c.report.ended_by = "phone".into();
            }
            if c.answer_at.is_some_and(|t| now >= t) {
                c.answer_at = None;
                c.state = SimState::Answered;
                c.report.answered = true;
                let inv = c.invite.clone();
                let sdp = c.answer_sdp.clone();
                self.respond_final(now, &mut c, &inv, 200, Some(sdp));
                c.press_at = c.behaviour.press.map(|(_, d)| now + d);
                c.hangup_at = c.behaviour.hangup_after.map(|d| now + d);
            }
            if c.press_at.is_some_and(|t| now >= t) {
                c.press_at = None;
                if let (Some((key, _)), Some(neg), SimState::Answered) =
                    (c.behaviour.press, c.neg.as_ref(), c.state)
                    && let Some(pt) = neg.telephone_event
                {
                    let ts = c.first.map_or(0, |(_, ts)| ts).wrapping_add(8000);
                    for p in key_press_packets(key, pt, 0x5117_0001, 1000, ts, 100) {
                        self.transmits
                            .push_back((SimSocket::Rtp, neg.remote, p.to_bytes()));
                    }
                    c.report.pressed.push(key);
                }
            }
            self.final_timeout(now, &mut c);
            if c.hangup_at.is_some_and(|t| now >= t) {
                c.hangup_at = None;
                if c.state == SimState::Answered {
                    let bye = self.bye_for(&c);
                    self.transmits
                        .push_back((SimSocket::Sip, c.peer, bye.to_bytes()));
                    c.state = SimState::Ended;
                    c.report.ended_by = "phone".into();
                    c.press_at = None;
                }
            }
            self.finish_if_ended(&mut c);
            self.calls.insert(id, c);
        }
    }

    /// Repeats a final response nobody acknowledged; gives up after 64×T1, hanging up
    /// an answered call whose 2xx never got its ACK (RFC 3261 §13.3.1.4).
    fn final_timeout(&mut self, now: Timestamp, c: &mut SimCall) {
        let Some(rt) = c.final_rt.as_mut() else {
            return;
        };
        if now >= rt.give_up {
            let ok = rt.ok;
            c.final_rt = None;
            if ok && c.state == SimState::Answered {
                let bye = self.bye_for(c);
                self.transmits
                    .push_back((SimSocket::Sip, c.peer, bye.to_bytes()));
                c.state = SimState::Ended;
                c.report.ended_by = "phone (no ACK)".into();
                c.press_at = None;
            }
            return;
        }
        if now >= rt.next {
            rt.interval = (rt.interval * 2).min(T2);
            rt.next = now + rt.interval;
            let bytes = rt.bytes.clone();
            c.report.final_retransmits += 1;
            self.transmits.push_back((SimSocket::Sip, c.peer, bytes));
        }
    }

    /// Sends a final response to the INVITE and keeps it for retransmission until ACK.
    fn respond_final(
        &mut self,
        now: Timestamp,
        c: &mut SimCall,
        inv: &Message,
        code: u16,
        sdp: Option<String>,
    ) {
        let m = self.build_response(c, inv, code, reason_of(code), sdp);
        let bytes = m.to_bytes();
        self.transmits
            .push_back((SimSocket::Sip, c.peer, bytes.clone()));
        c.final_rt = Some(FinalRetransmit {
            bytes,
            next: now + T1,
            interval: T1,
            give_up: now + T1 * 64,
            ok: code < 300,
        });
    }

    fn finish_if_ended(&mut self, c: &mut SimCall) {
        if c.state == SimState::Ended && !c.report.call_id.is_empty() {
            self.reports.push_back(std::mem::take(&mut c.report));
            c.answer_at = None;
            c.press_at = None;
            c.hangup_at = None;
            c.reject_at = None;
        }
    }

    fn behaviour_for(&self, user: &str) -> Behaviour {
        self.cfg
            .phones
            .iter()
            .find(|(u, _)| u == user)
            .map_or_else(|| self.cfg.default.clone(), |(_, b)| b.clone())
    }

    fn on_request(&mut self, now: Timestamp, from: SocketAddr, req: Message) {
        let Some(method) = req.method().cloned() else {
            return;
        };
        let id = req.call_id().to_owned();
        match method {
            Method::Invite => {
                if let Some(c) = self.calls.get_mut(&id) {
                    c.report.invites += 1;
                    let same = c.invite.cseq().ok() == req.cseq().ok();
                    if same {
                        // A retransmission: say again where we are.
                        let c = &self.calls[&id];
                        let code = match c.state {
                            SimState::Ringing => 180,
                            SimState::Answered => 200,
                            SimState::Ended => c.report.final_code.unwrap_or(487),
                        };
                        let sdp = (code == 200).then(|| c.answer_sdp.clone());
                        let inv = c.invite.clone();
                        let c_ref = &self.calls[&id];
                        let msg = self.build_response(c_ref, &inv, code, reason_of(code), sdp);
                        self.transmits
                            .push_back((SimSocket::Sip, from, msg.to_bytes()));
                        return;
                    }
                }
                if let Some((user, pass)) = self.cfg.auth.clone() {
                    let ok = req
                        .header("Authorization")
                        .is_some_and(|h| self.check_auth(h, &user, &pass, "INVITE"));
                    if !ok {
                        let mut m = Message::response(401, "Unauthorized");
                        copy_dialog_headers(&req, &mut m, Some("challenge"));
                        m.push(
                            "WWW-Authenticate",
                            format!(
                                "Digest realm=\"tocsin-sim\", nonce=\"{}\", algorithm=MD5",
                                self.nonce
                            ),
                        );
                        self.transmits
                            .push_back((SimSocket::Sip, from, m.to_bytes()));
                        return;
                    }
                }
                let user = match &req.start {
                    wire::StartLine::Request { uri, .. } => uri
                        .strip_prefix("sip:")
                        .and_then(|u| u.split('@').next())
                        .unwrap_or("")
                        .to_owned(),
                    wire::StartLine::Response { .. } => String::new(),
                };
                let behaviour = self.behaviour_for(&user);
                let to_tag = format!("{:08x}", self.rng.random::<u32>());
                let neg = sdp::negotiate(&req.body, &self.cfg.codecs).ok();
                let answer_sdp = neg
                    .as_ref()
                    .map(|n| {
                        let mine = Negotiated {
                            remote: self.rtp_addr,
                            codec: n.codec,
                            telephone_event: n.telephone_event,
                            ssrc: None,
                        };
                        sdp::answer(1, self.rtp_addr.ip(), self.rtp_addr.port(), &mine)
                    })
                    .unwrap_or_default();
                let invites = self.calls.get(&id).map_or(0, |c| c.report.invites);
                let c = SimCall {
                    peer: from,
                    invite: req.clone(),
                    to_tag,
                    state: SimState::Ringing,
                    answer_at: if behaviour.reject.is_none() {
                        behaviour.answer_after.map(|d| now + d)
                    } else {
                        None
                    },
                    reject_at: behaviour.reject.map(|_| now + Duration::from_millis(200)),
                    press_at: None,
                    hangup_at: None,
                    neg,
                    answer_sdp,
                    first: None,
                    final_rt: None,
                    report: SimReport {
                        call_id: id.clone(),
                        user,
                        invites: invites + 1,
                        ..SimReport::default()
                    },
                    behaviour,
                };
                self.respond(&c, &req, 100, "Trying", None);
                self.respond(&c, &req, 180, "Ringing", None);
                self.calls.insert(id, c);
            }
            Method::Ack => {
                // The final response arrived: stop repeating it.
                if let Some(c) = self.calls.get_mut(&id) {
                    c.final_rt = None;
                }
            }
            Method::Cancel => {
                let mut ok = Message::response(200, "OK");
                copy_dialog_headers(&req, &mut ok, None);
                self.transmits
                    .push_back((SimSocket::Sip, from, ok.to_bytes()));
                if let Some(mut c) = self.calls.remove(&id) {
                    if c.state == SimState::Ringing {
                        let inv = c.invite.clone();
                        c.answer_at = None;
                        self.respond_final(now, &mut c, &inv, 487, None);
                        c.state = SimState::Ended;
                        c.report.final_code = Some(487);
                        c.report.ended_by = "gateway".into();
                        self.finish_if_ended(&mut c);
                    }
                    self.calls.insert(id, c);
                }
            }
            Method::Bye => {
                let mut ok = Message::response(200, "OK");
                copy_dialog_headers(&req, &mut ok, None);
                self.transmits
                    .push_back((SimSocket::Sip, from, ok.to_bytes()));
                if let Some(mut c) = self.calls.remove(&id) {
                    if c.state == SimState::Answered {
                        // The gateway is in the dialog: the 2xx reached it.
                        c.final_rt = None;
                        c.state = SimState::Ended;
                        c.report.ended_by = "gateway".into();
                        self.finish_if_ended(&mut c);
                    }
                    self.calls.insert(id, c);
                }
            }
            _ => {
                let mut m = Message::response(200, "OK");
                copy_dialog_headers(&req, &mut m, None);
                self.transmits
                    .push_back((SimSocket::Sip, from, m.to_bytes()));
            }
        }
    }

    fn check_auth(&self, header: &str, user: &str, pass: &str, method: &str) -> bool {
        let Some(rest) = header.strip_prefix("Digest ") else {
            return false;
        };
        let field = |k: &str| {
            rest.split(',').find_map(|p| {
                let (a, b) = p.split_once('=')?;
                (a.trim() == k).then(|| b.trim().trim_matches('"').to_owned())
            })
        };
        let (Some(u), Some(uri), Some(resp)) = (field("username"), field("uri"), field("response"))
        else {
            return false;
        };
        let ha1 = md5_hex(format!("{user}:tocsin-sim:{pass}").as_bytes());
        let ha2 = md5_hex(format!("{method}:{uri}").as_bytes());
        let want = md5_hex(format!("{ha1}:{}:{ha2}", self.nonce).as_bytes());
        u == user && resp == want
    }

    fn build_response(
        &self,
        c: &SimCall,
        req: &Message,
        code: u16,
        reason: &str,
        sdp: Option<String>,
    ) -> Message {
        let mut m = Message::response(code, reason);
        let tag = (code > 100).then_some(c.to_tag.as_str());
        copy_dialog_headers(req, &mut m, tag);
        if let Some(body) = sdp {
            m.push("Contact", format!("<sip:phone@{}>", self.rtp_addr.ip()));
            m.push("Content-Type", "application/sdp");
            m.body = body.into_bytes();
        }
        m
    }

    fn respond(
        &mut self,
        c: &SimCall,
        req: &Message,
        code: u16,
        reason: &str,
        sdp: Option<String>,
    ) {
        let m = self.build_response(c, req, code, reason, sdp);
        self.transmits
            .push_back((SimSocket::Sip, c.peer, m.to_bytes()));
    }

    fn bye_for(&mut self, c: &SimCall) -> Message {
        let branch = format!("z9hG4bKsim{:08x}", self.rng.random::<u32>());
        let from = c.invite.header("From").unwrap_or_default().to_owned();
        let to = c.invite.header("To").unwrap_or_default().to_owned();
        let target = c
            .invite
            .header("Contact")
            .map_or_else(String::new, |v| wire::uri_of(v).to_owned());
        Message::request(Method::Bye, target)
            .with(
                "Via",
                format!("SIP/2.0/UDP {};branch={branch}", self.rtp_addr.ip()),
            )
            .with("Max-Forwards", "70")
            .with("From", format!("{to};tag={}", c.to_tag))
            .with("To", from)
            .with("Call-ID", c.report.call_id.clone())
            .with("CSeq", "1 BYE")
    }

    fn on_rtp(&mut self, now: Timestamp, from: SocketAddr, bytes: &[u8]) {
        let Ok(pkt) = RtpPacket::parse(bytes) else {
            return;
        };
        let Some(c) = self.calls.values_mut().find(|c| {
            c.neg.as_ref().is_some_and(|n| n.remote == from) && c.state == SimState::Answered
        }) else {
            return;
        };
        let Some(neg) = c.neg.as_ref() else { return };
        if pkt.payload_type != neg.codec.payload_type() {
            return;
        }
        c.report.frames += 1;
        let (t0, ts0) = *c.first.get_or_insert((now, pkt.timestamp));
        let media_ms = i64::from(pkt.timestamp.wrapping_sub(ts0)) / 8;
        let late = now.as_millis() - t0.as_millis() - media_ms;
        c.report.max_late_ms = c.report.max_late_ms.max(late);
        if late > 40 {
            c.report.underruns += 1;
        }
        let loud = pkt
            .payload
            .iter()
            .filter(|b| neg.codec.decode(**b).unsigned_abs() > 1000)
            .count();
        if loud > pkt.payload.len() / 8 {
            c.report.loud_frames += 1;
        } else {
            c.report.silent_frames += 1;
        }
    }
}

/// Via, From, To (tagged when asked and not yet tagged), Call-ID and CSeq of a request.
fn copy_dialog_headers(req: &Message, m: &mut Message, tag: Option<&str>) {
    for v in req.headers_named("Via") {
        m.push("Via", v.to_owned());
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        let mut v = req.header(name).unwrap_or_default().to_owned();
        if name == "To"
            && let Some(t) = tag
            && param(&v, "tag").is_none()
        {
            v.push_str(&format!(";tag={t}"));
        }
        m.push(name, v);
    }
}

fn reason_of(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        404 => "Not Found",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        487 => "Request Terminated",
        603 => "Decline",
        _ => "Failed",
    }
}
