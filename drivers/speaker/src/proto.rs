//! The loudspeaker driver as a sans-IO state machine (in the style of `quinn-proto`).
//!
//! Inputs, each with `now`: [`Speakers::submit`] (send / cancel), [`Speakers::handle_rendered`]
//! (audio for a programme, rendered off the state machine because synthesis blocks),
//! [`Speakers::handle_rtcp`] (datagrams on the RTCP socket), [`Speakers::handle_timeout`],
//! [`Speakers::handle_sockets_opened`] / [`Speakers::handle_socket_failed`] /
//! [`Speakers::handle_send_failed`]. Outputs: [`Speakers::poll_render`] (what to render),
//! [`Speakers::poll_transmit`] (datagrams), [`Speakers::poll_event`] (facts for the
//! router), [`Speakers::poll_report`] (per-stream reception evidence),
//! [`Speakers::poll_timeout`].
//!
//! **Programme.** A send becomes a programme: the grade's siren and the spoken warning
//! (演练 first and last for an exercise), repeated with pauses; it plays on the group the
//! send addresses (`Address::Speaker(group)`, a `groups[].name` of this driver), one RTP
//! stream (one SSRC) per group. The reserved name [`BROADCAST_GROUP`] (`*`) plays it on
//! every group of the driver at once. A send to a group this driver does not serve, or
//! to any other kind of address, fails at once and is not retried: the router must not
//! believe a village heard a warning that was streamed to another one. A live warning of
//! any grade interrupts a drill on the same group, and a drill never interrupts a live
//! warning; among the same kind, a red programme interrupts a lower-grade one (which
//! then waits and plays again from its start) and any other waits behind higher or equal
//! grades ([`interrupts`], [`Precedence`]). A text is a drill only when it starts with
//! the router's [`EXERCISE_MARK`]. A cancel stops the programme and plays a short
//! cancellation message where it was heard.
//!
//! **Pacing.** Packet `n` of a stream is due at `start + n × 20 ms` and carries timestamp
//! `ts0 + n × 160`: the schedule is computed from the start, never accumulated, so a
//! long programme does not drift. Streams are spread over the 20 ms frame: a stream
//! starts in the nearest of the frame's 20 one-millisecond slots that fewer than
//! [`SLOT_SHARE`] playing streams use, or, when every slot is that busy, the nearest
//! least-used one. A few streams start at once; a broadcast to 500 groups leaves 25
//! packets per millisecond instead of 500 back to back every 20 ms (the 500th of which
//! left after 499 sends), at the cost of starting up to 19 ms later. When the driver falls more than [`MAX_LATE`] behind
//! (the host stalled), the rest of the stream is moved later and its timestamps jump by
//! the gap, so speakers play silence for the stall instead of receiving a burst.
//!
//! **Evidence.** Sender reports go out while streaming. A receiver report naming one of
//! our streams is recorded per speaker (packets received, loss, jitter); the first from
//! each speaker for an attempt is reported as `Delivered` with that evidence. When a
//! stream ends (plus a grace period for late reports) a [`StreamReport`] lists the
//! speakers reached and the expected speakers that sent nothing ("no evidence").

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tocsin_channel::{DriverCommand, DriverEvent, Health, Outbound};
use tocsin_core::{Address, AttemptId, Grade, Timestamp};
use tocsin_voice::Pcm;

use crate::config::SpeakerConfig;
use crate::wire::{
    ReportBlock, RtcpPacket, RtpPacket, SDES_CNAME, SdesChunk, SenderReport, ntp_from_unix_ms,
    parse_compound,
};
use tocsin_serial::pacer::{SLOTS, slot_of, slot_start};

/// One packet's worth of audio.
pub const FRAME: Duration = Duration::from_millis(20);
/// Samples (and G.711 bytes) per packet at 8 kHz.
pub const SAMPLES_PER_PACKET: usize = 160;
/// How far behind schedule the driver may fall before it re-anchors the stream.
pub const MAX_LATE: Duration = Duration::from_millis(200);
/// Streams that may share a 1 ms slot of the 20 ms frame before a new stream is moved to
/// a later slot: 8 sends take well under 0.1 ms, so they may leave together.
pub const SLOT_SHARE: usize = 8;
/// The group name that addresses every group of a driver (`Address::Speaker("*")`): a
/// district-wide broadcast, and the benchmarks that stream to all groups at once. No
/// configured group may carry this name.
pub const BROADCAST_GROUP: &str = "*";

/// Which socket a datagram leaves from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Socket {
    /// The RTP socket (media).
    Rtp,
    /// The RTCP socket (sender reports, goodbyes).
    Rtcp,
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

/// A programme, as the driver numbers them (attempts and cancellation messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProgrammeId(pub u64);

/// What to render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenderJob {
    /// A warning programme.
    Programme {
        /// Its grade (siren pattern).
        grade: Grade,
        /// The text to speak.
        text: String,
        /// 演练 first and last.
        exercise: bool,
        /// How many times.
        repeat: u32,
        /// Silence between repeats.
        pause: Duration,
    },
    /// The short cancellation message.
    Cancellation {
        /// 演练 first and last.
        exercise: bool,
    },
}

/// A request to render audio, answered with [`Speakers::handle_rendered`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderRequest {
    /// Which programme.
    pub id: ProgrammeId,
    /// What to render.
    pub job: RenderJob,
}

/// The mark the router puts first on every text of a drill (`【演练】【红色预警】…`).
/// Only this prefix makes a drill: a live warning may well say 演练 in its body ("按演练路线
/// 立即转移", evacuate along the drill route), and announcing it as an exercise would tell
/// a village that a real evacuation order is practice.
pub const EXERCISE_MARK: &str = "【演练】";

/// A warning text read for a loudspeaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// The grade the text names (`【红色预警】` …), else the configured default.
    pub grade: Grade,
    /// The text is a drill: it starts with [`EXERCISE_MARK`].
    pub exercise: bool,
    /// What to speak: brackets turned into pauses, the exercise mark and any SMS reply
    /// instruction (回复 1 CODE) removed — speakers take no replies, and a code read
    /// out over a village is useless.
    pub spoken: String,
}

impl Announcement {
    /// Reads a text as the router writes it (`【演练】【红色预警】标题：正文 回复 1 K7XT 确认`).
    pub fn from_text(text: &str, default_grade: Grade) -> Announcement {
        let t = text.trim();
        let (exercise, t) = match t.strip_prefix(EXERCISE_MARK) {
            Some(rest) => (true, rest.trim_start()),
            None => (false, t),
        };
        let grade = Grade::ALL
            .iter()
            .rev()
            .copied()
            .filter_map(|g| t.find(g.chinese()).map(|at| (at, g)))
            .min_by_key(|(at, _)| *at)
            .map(|(_, g)| g)
            .unwrap_or(default_grade);
        let cut = ["回复 1", "回复1"]
            .iter()
            .filter_map(|m| t.find(m))
            .min()
            .unwrap_or(t.len());
        let body = t.get(..cut).unwrap_or(t);
        let spoken = body
            .replace('【', "")
            .replace('】', "，")
            .trim()
            .trim_end_matches('，')
            .to_owned();
        Announcement {
            grade,
            exercise,
            spoken,
        }
    }

    /// The programme to render for this announcement: siren and speech, `repeat` times
    /// with `pause` between. The RTP driver and the local sound card build it alike.
    pub fn job(self, repeat: u32, pause: Duration) -> RenderJob {
        RenderJob::Programme {
            grade: self.grade,
            text: self.spoken,
            exercise: self.exercise,
            repeat,
            pause,
        }
    }
}

/// Where a programme stands against others on the same output: every live warning
/// before every drill, then by grade. The derived order compares `live` first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Precedence {
    /// A live warning, not a drill.
    pub live: bool,
    /// Its grade.
    pub grade: Grade,
}

impl Precedence {
    /// The precedence of a programme of `grade`, a drill when `exercise`.
    pub fn of(grade: Grade, exercise: bool) -> Precedence {
        Precedence {
            live: !exercise,
            grade,
        }
    }
}

/// Whether a programme `incoming` stops the one `playing` on the same output. A live
/// warning of any grade stops a drill (people must hear the real warning now, not after
/// a practice run); a drill never stops a live warning, whatever its grade. Among the
/// same kind only red interrupts, and only a lower grade (a red alert never cuts another
/// red). The interrupted programme waits and plays again from its start.
pub fn interrupts(incoming: Precedence, playing: Precedence) -> bool {
    match (incoming.live, playing.live) {
        (true, false) => true,
        (false, true) => false,
        _ => incoming.grade == Grade::Red && playing.grade < Grade::Red,
    }
}

/// Why a programme was interrupted, for the goodbye the speakers get and the logs.
pub fn interruption_reason(incoming: Precedence, playing: Precedence) -> &'static str {
    if incoming.live && !playing.live {
        "drill interrupted by a live warning"
    } else {
        "interrupted by a red alert"
    }
}

/// The programmes waiting for one output (an RTP group, the local sound card): live
/// warnings before drills, the highest grade first, then in order of arrival.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lineup {
    /// (precedence, arrival order, programme), kept sorted.
    waiting: Vec<(Precedence, u64, ProgrammeId)>,
}

impl Lineup {
    /// Puts a programme in its place: behind every higher or equal precedence that came
    /// first.
    pub fn insert(&mut self, precedence: Precedence, order: u64, id: ProgrammeId) {
        let at = self
            .waiting
            .partition_point(|&(p, o, _)| p > precedence || (p == precedence && o <= order));
        self.waiting.insert(at, (precedence, order, id));
    }

    /// The programmes waiting, in the order they will play.
    pub fn waiting(&self) -> impl Iterator<Item = ProgrammeId> + '_ {
        self.waiting.iter().map(|&(_, _, id)| id)
    }

    /// Takes a programme out (cancelled).
    pub fn remove(&mut self, id: ProgrammeId) {
        self.waiting.retain(|&(_, _, w)| w != id);
    }

    /// The programme to play next, taken out of the line.
    pub fn pop(&mut self) -> Option<ProgrammeId> {
        if self.waiting.is_empty() {
            return None;
        }
        Some(self.waiting.remove(0).2)
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// What one speaker reported about one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpeakerEvidence {
    /// Where the report came from.
    pub speaker: SocketAddr,
    /// The speaker's own SSRC.
    pub reporter: u32,
    /// Receiver reports received from it.
    pub reports: u32,
    /// When the first arrived.
    pub first_at: Timestamp,
    /// The latest report block about our stream.
    pub last: ReportBlock,
}

impl SpeakerEvidence {
    /// Packets the speaker received, from the report (highest sequence seen, less the
    /// first, plus one, less lost).
    pub fn describe(&self, group: &str, ssrc: u32, first_seq: u16) -> String {
        let expected = self
            .last
            .highest_sequence
            .wrapping_sub(u32::from(first_seq))
            .wrapping_add(1);
        let received = i64::from(expected) - i64::from(self.last.cumulative_lost);
        format!(
            "RTCP RR from speaker {} (ssrc {:#010x}) on group {group}, stream {ssrc:#010x}: {received} packets received, {} lost, loss fraction {}/256, jitter {} ({:.1} ms)",
            self.speaker,
            self.reporter,
            self.last.cumulative_lost,
            self.last.fraction_lost,
            self.last.jitter,
            f64::from(self.last.jitter) / 8.0,
        )
    }
}

/// The reception evidence of one stream, once it has ended and its grace period passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamReport {
    /// The attempt it played (none for a cancellation message).
    pub attempt: Option<AttemptId>,
    /// The group's name.
    pub group: String,
    /// The stream's SSRC.
    pub ssrc: u32,
    /// RTP packets sent.
    pub packets: u64,
    /// Stopped before its end (interrupted by a red alert or, for a drill, a live warning;
    /// cancelled; or a send failed).
    pub stopped_early: bool,
    /// Speakers that reported: "reached".
    pub reached: Vec<SpeakerEvidence>,
    /// Expected speakers (from config) that sent no report: "no evidence".
    pub no_evidence: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for its audio.
    Rendering,
    /// Audio ready; waiting or playing on its groups.
    Ready,
}

#[derive(Debug)]
struct Programme {
    attempt: Option<AttemptId>,
    grade: Grade,
    exercise: bool,
    phase: Phase,
    /// G.711 bytes, a whole number of packets.
    audio: Arc<Vec<u8>>,
    /// Groups it plays on.
    groups: Vec<usize>,
    /// Groups where it has not finished yet.
    remaining: HashSet<usize>,
    /// Groups where it has started at least once (it was heard there).
    heard: HashSet<usize>,
    /// `Sent` reported.
    started: bool,
    /// Order of arrival, to keep equal grades first come first served.
    order: u64,
    /// Phrases that could not be spoken.
    missing: Vec<String>,
    /// Speakers already reported `Delivered` for this attempt.
    delivered: HashSet<SocketAddr>,
}

impl Programme {
    fn precedence(&self) -> Precedence {
        Precedence::of(self.grade, self.exercise)
    }
}

#[derive(Debug)]
struct Stream {
    programme: ProgrammeId,
    ssrc: u32,
    seq0: u16,
    ts0: u32,
    /// Packet 0 is due here (moved later after a stall).
    start: Timestamp,
    /// Index of the packet that `start` anchors.
    anchor: u64,
    /// Timestamp units added by stalls.
    ts_gap: u32,
    next: u64,
    total: u64,
    octets: u64,
    next_sr: Timestamp,
}

impl Stream {
    fn due(&self, n: u64) -> Timestamp {
        let frames = n.saturating_sub(self.anchor);
        self.start.plus(Duration::from_millis(
            frames.saturating_mul(FRAME.as_millis() as u64),
        ))
    }

    fn timestamp(&self, n: u64) -> u32 {
        self.ts0
            .wrapping_add((n as u32).wrapping_mul(SAMPLES_PER_PACKET as u32))
            .wrapping_add(self.ts_gap)
    }

    /// RTP time of `now`, for sender reports.
    fn rtp_at(&self, now: Timestamp) -> u32 {
        let ms = now.since(self.start).as_millis() as u64;
        let units = self.anchor * SAMPLES_PER_PACKET as u64 + ms * 8;
        self.ts0
            .wrapping_add(units as u32)
            .wrapping_add(self.ts_gap)
    }
}

#[derive(Debug)]
struct Group {
    name: String,
    rtp: SocketAddr,
    rtcp: SocketAddr,
    speakers: Vec<String>,
    playing: Option<Stream>,
    /// Programmes waiting for this group.
    waiting: Lineup,
}

/// Evidence kept per stream until its report is out.
#[derive(Debug)]
struct StreamRecord {
    programme: ProgrammeId,
    attempt: Option<AttemptId>,
    group: usize,
    seq0: u16,
    packets: u64,
    stopped_early: bool,
    speakers: BTreeMap<SocketAddr, SpeakerEvidence>,
    /// Set when the stream ends: the report is due then.
    report_at: Option<Timestamp>,
}

/// The loudspeaker driver's state machine.
#[derive(Debug)]
pub struct Speakers {
    cfg: SpeakerConfig,
    cname: String,
    rng: ChaCha8Rng,
    groups: Vec<Group>,
    programmes: HashMap<ProgrammeId, Programme>,
    records: HashMap<u32, StreamRecord>,
    next_id: u64,
    forced_ids: Option<(u32, u16, u32)>,
    renders: VecDeque<RenderRequest>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<DriverEvent>,
    reports: VecDeque<StreamReport>,
    health: Health,
    /// While many streams start at once: the slots in use, counted once and kept up to
    /// date as each starts (sending waits until all have started).
    starting: Option<[usize; SLOTS]>,
}

impl Speakers {
    /// A driver for a validated configuration. `cname` names this gateway in RTCP SDES;
    /// `seed` seeds SSRCs and initial sequence numbers and timestamps (random per RFC 3550).
    pub fn new(cfg: SpeakerConfig, cname: &str, seed: u64, _now: Timestamp) -> Self {
        let groups = cfg
            .groups
            .iter()
            .map(|g| Group {
                name: g.name.clone(),
                rtp: g.rtp,
                rtcp: g.rtcp_addr(),
                speakers: g.speakers.clone(),
                playing: None,
                waiting: Lineup::default(),
            })
            .collect();
        Speakers {
            cfg,
            cname: cname.to_owned(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            groups,
            programmes: HashMap::new(),
            records: HashMap::new(),
            next_id: 1,
            forced_ids: None,
            renders: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            reports: VecDeque::new(),
            health: Health::default(),
            starting: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SpeakerConfig {
        &self.cfg
    }

    /// Fixes the SSRC, first sequence number and first timestamp of the next stream, for
    /// tests (sequence wrap-around) and interop checks against known captures.
    pub fn set_next_stream_ids(&mut self, ssrc: u32, seq: u16, ts: u32) {
        self.forced_ids = Some((ssrc, seq, ts));
    }

    /// Programmes not finished (rendering, waiting or playing).
    pub fn pending(&self) -> usize {
        self.programmes.len()
    }

    /// What is playing on each group: (group name, attempt, SSRC).
    pub fn playing(&self) -> Vec<(String, Option<AttemptId>, u32)> {
        self.groups
            .iter()
            .filter_map(|g| {
                let s = g.playing.as_ref()?;
                let attempt = self.programmes.get(&s.programme).and_then(|p| p.attempt);
                Some((g.name.clone(), attempt, s.ssrc))
            })
            .collect()
    }

    /// The sockets are open: the driver can stream; programmes that were ready wait no
    /// longer.
    pub fn handle_sockets_opened(&mut self, now: Timestamp) {
        self.health.up = true;
        self.health.registered = true;
        self.health.last_error = None;
        self.events
            .push_back(DriverEvent::Health(self.health.clone()));
        for gi in 0..self.groups.len() {
            self.start_next(now, gi);
        }
    }

    /// The sockets could not be opened or broke.
    pub fn handle_socket_failed(&mut self, _now: Timestamp, reason: &str) {
        self.health.up = false;
        self.health.registered = false;
        self.health.last_error = Some(reason.to_owned());
        self.events
            .push_back(DriverEvent::Health(self.health.clone()));
    }

    /// A command from the router.
    pub fn submit(&mut self, now: Timestamp, cmd: DriverCommand) {
        match cmd {
            DriverCommand::Send(out) => self.on_send(now, out),
            DriverCommand::Cancel(attempt) => self.on_cancel(now, attempt),
            // Speakers hold no inbound messages.
            DriverCommand::SendFrame(f) => self.events.push_back(f.refused()),
            DriverCommand::Release(_) => {}
        }
    }

    /// The groups a send plays on, or why it cannot play anywhere (a permanent failure:
    /// retrying the same address on this driver can never work).
    fn targets(&self, to: &Address) -> Result<Vec<usize>, String> {
        let Address::Speaker(name) = to else {
            return Err(format!(
                "a loudspeaker driver plays only to a speaker group, not to {to}"
            ));
        };
        if name == BROADCAST_GROUP {
            return Ok((0..self.groups.len()).collect());
        }
        match self.groups.iter().position(|g| g.name == *name) {
            Some(gi) => Ok(vec![gi]),
            None => Err(format!(
                "no speaker group {name:?} on this driver (groups: {})",
                self.groups
                    .iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    fn fresh_id(&mut self) -> ProgrammeId {
        let id = ProgrammeId(self.next_id);
        self.next_id += 1;
        id
    }

    fn on_send(&mut self, _now: Timestamp, out: Outbound) {
        // The address first: a wrong group is permanent, a full queue is not.
        let groups = match self.targets(&out.to) {
            Ok(groups) => groups,
            Err(reason) => {
                self.events.push_back(DriverEvent::Failed {
                    attempt: out.attempt,
                    retryable: false,
                    reason,
                });
                return;
            }
        };
        if self.programmes.len() >= self.cfg.queue_limit {
            self.events.push_back(DriverEvent::Failed {
                attempt: out.attempt,
                retryable: true,
                reason: format!(
                    "speaker queue full ({} programmes waiting)",
                    self.programmes.len()
                ),
            });
            return;
        }
        let a = Announcement::from_text(&out.text, self.cfg.default_grade);
        let id = self.fresh_id();
        self.events.push_back(DriverEvent::Accepted {
            attempt: out.attempt,
        });
        let (grade, exercise) = (a.grade, a.exercise);
        self.renders.push_back(RenderRequest {
            id,
            job: a.job(self.cfg.repeat, self.cfg.pause()),
        });
        self.programmes.insert(
            id,
            Programme {
                attempt: Some(out.attempt),
                grade,
                exercise,
                phase: Phase::Rendering,
                audio: Arc::new(Vec::new()),
                remaining: groups.iter().copied().collect(),
                groups,
                heard: HashSet::new(),
                started: false,
                order: id.0,
                missing: Vec::new(),
                delivered: HashSet::new(),
            },
        );
    }

    fn on_cancel(&mut self, now: Timestamp, attempt: AttemptId) {
        let Some((&id, _)) = self
            .programmes
            .iter()
            .find(|(_, p)| p.attempt == Some(attempt))
        else {
            return; // Finished or unknown: it was reported as usual.
        };
        let Some(p) = self.programmes.remove(&id) else {
            return;
        };
        for g in &mut self.groups {
            g.waiting.remove(id);
        }
        let mut was_playing = Vec::new();
        for gi in 0..self.groups.len() {
            if self
                .groups
                .get(gi)
                .and_then(|g| g.playing.as_ref())
                .map(|s| s.programme)
                == Some(id)
            {
                self.stop_stream(now, gi, true, "cancelled");
                was_playing.push(gi);
            }
        }
        if !p.started {
            self.events.push_back(DriverEvent::Failed {
                attempt,
                retryable: false,
                reason: "cancelled before it played".to_owned(),
            });
        }
        // Where it was heard, say that it is cancelled.
        let mut heard: Vec<usize> = p.heard.iter().copied().collect();
        heard.sort_unstable();
        if !heard.is_empty() {
            let cid = self.fresh_id();
            self.renders.push_back(RenderRequest {
                id: cid,
                job: RenderJob::Cancellation {
                    exercise: p.exercise,
                },
            });
            self.programmes.insert(
                cid,
                Programme {
                    attempt: None,
                    grade: p.grade,
                    exercise: p.exercise,
                    phase: Phase::Rendering,
                    audio: Arc::new(Vec::new()),
                    remaining: heard.iter().copied().collect(),
                    groups: heard,
                    heard: HashSet::new(),
                    started: false,
                    // Ahead of everything of its grade that came after the cancelled one.
                    order: p.order,
                    missing: Vec::new(),
                    delivered: HashSet::new(),
                },
            );
        }
        for gi in was_playing {
            self.start_next(now, gi);
        }
    }

    /// The audio of a programme, or why it could not be rendered. `missing` lists the
    /// phrases that could not be spoken (the rest still plays).
    pub fn handle_rendered(
        &mut self,
        now: Timestamp,
        id: ProgrammeId,
        audio: Result<Pcm, String>,
        missing: Vec<String>,
    ) {
        let Some(p) = self.programmes.get_mut(&id) else {
            return; // Cancelled meanwhile.
        };
        if p.phase != Phase::Rendering {
            return;
        }
        let pcm = match audio {
            Ok(pcm) if !pcm.samples.is_empty() => pcm,
            other => {
                let reason = match other {
                    Err(e) => format!("could not render the programme: {e}"),
                    Ok(_) => "the programme rendered to no audio".to_owned(),
                };
                let attempt = p.attempt;
                self.programmes.remove(&id);
                if let Some(attempt) = attempt {
                    self.events.push_back(DriverEvent::Failed {
                        attempt,
                        retryable: true,
                        reason,
                    });
                }
                return;
            }
        };
        let pcm = if pcm.rate == tocsin_voice::RATE {
            pcm
        } else {
            pcm.resampled(tocsin_voice::RATE)
        };
        let mut bytes = self.cfg.codec.encode(&pcm.samples);
        // A whole number of packets: the last one is padded with silence.
        let rem = bytes.len() % SAMPLES_PER_PACKET;
        if rem != 0 {
            bytes.resize(
                bytes.len() + SAMPLES_PER_PACKET - rem,
                self.cfg.codec.silence(),
            );
        }
        p.audio = Arc::new(bytes);
        p.phase = Phase::Ready;
        p.missing = missing;
        let (precedence, order, groups) = (p.precedence(), p.order, p.groups.clone());
        // A broadcast starts hundreds of streams here: count the slots once and send
        // once, after all have started, instead of scanning every group for each start
        // (quadratic: 750 groups kept the task from sending for milliseconds).
        self.starting = Some(self.slot_use());
        for gi in groups {
            self.enqueue(now, gi, id, precedence, order);
        }
        self.starting = None;
        self.pump(now);
    }

    fn enqueue(
        &mut self,
        now: Timestamp,
        gi: usize,
        id: ProgrammeId,
        precedence: Precedence,
        order: u64,
    ) {
        let playing = self
            .groups
            .get(gi)
            .and_then(|g| g.playing.as_ref())
            .and_then(|s| self.programmes.get(&s.programme))
            .map(Programme::precedence);
        match playing {
            // No sockets yet: nothing would leave; wait for them.
            None if !self.health.up => self.insert_waiting(gi, precedence, order, id),
            None => {
                self.start_stream(now, gi, id);
            }
            Some(pp) if interrupts(precedence, pp) => {
                // Interrupt: the interrupted one plays again, from its start, afterwards.
                let interrupted = self
                    .groups
                    .get(gi)
                    .and_then(|g| g.playing.as_ref())
                    .map(|s| s.programme);
                self.stop_stream(now, gi, false, interruption_reason(precedence, pp));
                if let Some(old) = interrupted
                    && let Some(op) = self.programmes.get(&old)
                {
                    let (opp, oo) = (op.precedence(), op.order);
                    self.insert_waiting(gi, opp, oo, old);
                }
                self.start_stream(now, gi, id);
            }
            Some(_) => self.insert_waiting(gi, precedence, order, id),
        }
    }

    fn insert_waiting(&mut self, gi: usize, precedence: Precedence, order: u64, id: ProgrammeId) {
        if let Some(g) = self.groups.get_mut(gi) {
            g.waiting.insert(precedence, order, id);
        }
    }

    fn start_next(&mut self, now: Timestamp, gi: usize) {
        let up = self.health.up;
        let next = self.groups.get_mut(gi).and_then(|g| {
            if !up || g.playing.is_some() {
                None
            } else {
                g.waiting.pop()
            }
        });
        if let Some(id) = next {
            self.start_stream(now, gi, id);
        }
    }

    fn start_stream(&mut self, now: Timestamp, gi: usize, id: ProgrammeId) {
        let slot_use = match &self.starting {
            Some(used) => *used,
            None => self.slot_use(),
        };
        let Some(p) = self.programmes.get_mut(&id) else {
            return;
        };
        let Some(g) = self.groups.get_mut(gi) else {
            return;
        };
        let (mut ssrc, seq0, ts0) = self
            .forced_ids
            .take()
            .unwrap_or_else(|| (self.rng.random(), self.rng.random(), self.rng.random()));
        while self.records.contains_key(&ssrc) {
            ssrc = self.rng.random();
        }
        let total = (p.audio.len() / SAMPLES_PER_PACKET) as u64;
        let start = slot_start(now, &slot_use, SLOT_SHARE);
        if let Some(used) = self.starting.as_mut()
            && let Some(u) = used.get_mut(slot_of(start))
        {
            *u += 1;
        }
        g.playing = Some(Stream {
            programme: id,
            ssrc,
            seq0,
            ts0,
            start,
            anchor: 0,
            ts_gap: 0,
            next: 0,
            total,
            octets: 0,
            // The first report goes out with the first packet, so speakers learn where
            // to send theirs.
            next_sr: start,
        });
        p.heard.insert(gi);
        self.records.insert(
            ssrc,
            StreamRecord {
                programme: id,
                attempt: p.attempt,
                group: gi,
                seq0,
                packets: 0,
                stopped_early: false,
                speakers: BTreeMap::new(),
                report_at: None,
            },
        );
        if !p.started {
            p.started = true;
            self.health.sent += 1;
            if let Some(attempt) = p.attempt {
                let mut reference = format!("group {} ssrc {ssrc:#010x}", g.name);
                if !p.missing.is_empty() {
                    reference.push_str(&format!(
                        "; not spoken (no synthesizer or clip): {}",
                        p.missing.join(" / ")
                    ));
                }
                self.events
                    .push_back(DriverEvent::Sent { attempt, reference });
            }
        }
        if self.starting.is_none() {
            self.pump(now);
        }
    }

    /// Playing streams per 1 ms slot of the 20 ms frame (by the phase of their schedule).
    fn slot_use(&self) -> [usize; SLOTS] {
        let mut used = [0; SLOTS];
        for s in self.groups.iter().filter_map(|g| g.playing.as_ref()) {
            if let Some(u) = used.get_mut(slot_of(s.start)) {
                *u += 1;
            }
        }
        used
    }

    /// Ends the stream on group `gi`: a goodbye, its evidence kept for the grace period.
    fn stop_stream(&mut self, now: Timestamp, gi: usize, finished_programme: bool, why: &str) {
        let Some(g) = self.groups.get_mut(gi) else {
            return;
        };
        let Some(s) = g.playing.take() else {
            return;
        };
        let early = s.next < s.total;
        let rtcp = g.rtcp;
        let bytes = self.sender_report(now, &s, Some(why));
        self.transmits.push_back(Transmit {
            socket: Socket::Rtcp,
            to: rtcp,
            bytes,
        });
        if let Some(r) = self.records.get_mut(&s.ssrc) {
            r.packets = s.next;
            r.stopped_early = early;
            r.report_at = Some(now + self.cfg.report_grace());
        }
        if finished_programme && let Some(p) = self.programmes.get_mut(&s.programme) {
            p.remaining.remove(&gi);
            if p.remaining.is_empty() {
                self.programmes.remove(&s.programme);
            }
        }
    }

    fn sender_report(&self, now: Timestamp, s: &Stream, bye: Option<&str>) -> Vec<u8> {
        let mut out = Vec::with_capacity(80);
        RtcpPacket::SenderReport(SenderReport {
            ssrc: s.ssrc,
            ntp: ntp_from_unix_ms(now.as_millis()),
            rtp_timestamp: s.rtp_at(now),
            packet_count: s.next as u32,
            octet_count: s.octets as u32,
            reports: Vec::new(),
        })
        .emit(&mut out);
        RtcpPacket::SourceDescription(vec![SdesChunk {
            ssrc: s.ssrc,
            items: vec![(SDES_CNAME, self.cname.clone())],
        }])
        .emit(&mut out);
        if let Some(reason) = bye {
            RtcpPacket::Goodbye {
                sources: vec![s.ssrc],
                reason: Some(reason.to_owned()),
            }
            .emit(&mut out);
        }
        out
    }

    /// Sends what is due on every stream, ends finished ones, and reports expired records.
    fn pump(&mut self, now: Timestamp) {
        let codec = self.cfg.codec;
        let interval = self.cfg.rtcp_interval();
        // Sender reports wait until every packet due now is queued: a packet has a slot
        // to keep, a report does not.
        let mut reports = Vec::new();
        for gi in 0..self.groups.len() {
            let mut finished = false;
            let mut sr = None;
            if let Some(g) = self.groups.get_mut(gi)
                && let Some(s) = g.playing.as_mut()
                && let Some(p) = self.programmes.get(&s.programme)
            {
                // A stall: move the rest of the stream to now, timestamps following.
                if s.next < s.total && now.since(s.due(s.next)) > MAX_LATE {
                    let late = now.since(s.due(s.next));
                    let frames = late.as_millis() as u64 / FRAME.as_millis() as u64;
                    s.ts_gap = s
                        .ts_gap
                        .wrapping_add((frames as u32).wrapping_mul(SAMPLES_PER_PACKET as u32));
                    s.start = s.due(s.next).plus(FRAME * frames as u32);
                    s.anchor = s.next;
                }
                while s.next < s.total && s.due(s.next) <= now {
                    let n = s.next;
                    let from = (n as usize).saturating_mul(SAMPLES_PER_PACKET);
                    let payload = p
                        .audio
                        .get(from..from + SAMPLES_PER_PACKET)
                        .map(<[u8]>::to_vec)
                        .unwrap_or_else(|| vec![codec.silence(); SAMPLES_PER_PACKET]);
                    let pkt = RtpPacket {
                        marker: n == 0,
                        payload_type: codec.payload_type(),
                        sequence: s.seq0.wrapping_add(n as u16),
                        timestamp: s.timestamp(n),
                        ssrc: s.ssrc,
                        csrc: Vec::new(),
                        payload,
                    };
                    let mut bytes = Vec::with_capacity(12 + SAMPLES_PER_PACKET);
                    pkt.emit(&mut bytes);
                    self.transmits.push_back(Transmit {
                        socket: Socket::Rtp,
                        to: g.rtp,
                        bytes,
                    });
                    s.next += 1;
                    s.octets += SAMPLES_PER_PACKET as u64;
                }
                // The first report goes right after the first packet (`next_sr` starts
                // at the stream's start), the next ones every interval on the stream's
                // own schedule, not from `now`: after a late wake that served several
                // slots at once, reports timed from `now` would all fall due together
                // 5 s later (hundreds of reports in one wake, delaying every packet
                // behind them), where the stream's own times stay spread over the frame.
                if s.next_sr <= now && s.next < s.total {
                    sr = Some(g.rtcp);
                    s.next_sr = next_report(s.next_sr, interval, now);
                }
                finished = s.next >= s.total;
            }
            if let Some(to) = sr
                && let Some(s) = self.groups.get(gi).and_then(|g| g.playing.as_ref())
            {
                let bytes = self.sender_report(now, s, None);
                reports.push(Transmit {
                    socket: Socket::Rtcp,
                    to,
                    bytes,
                });
            }
            if finished {
                self.stop_stream(now, gi, true, "end of programme");
                self.start_next(now, gi);
            }
        }
        self.transmits.extend(reports);
        self.expire_records(now);
    }

    fn expire_records(&mut self, now: Timestamp) {
        let due: Vec<u32> = self
            .records
            .iter()
            .filter(|(_, r)| r.report_at.is_some_and(|t| t <= now))
            .map(|(&ssrc, _)| ssrc)
            .collect();
        let mut due = due;
        due.sort_unstable();
        for ssrc in due {
            let Some(r) = self.records.remove(&ssrc) else {
                continue;
            };
            let Some(g) = self.groups.get(r.group) else {
                continue;
            };
            let no_evidence = g
                .speakers
                .iter()
                .filter(|want| !r.speakers.keys().any(|got| speaker_matches(want, got)))
                .cloned()
                .collect();
            self.reports.push_back(StreamReport {
                attempt: r.attempt,
                group: g.name.clone(),
                ssrc,
                packets: r.packets,
                stopped_early: r.stopped_early,
                reached: r.speakers.into_values().collect(),
                no_evidence,
            });
        }
    }

    /// A datagram arrived on the RTCP socket from `from`.
    pub fn handle_rtcp(&mut self, now: Timestamp, from: SocketAddr, bytes: &[u8]) {
        let (packets, err) = parse_compound(bytes);
        if let Some(e) = err {
            self.events.push_back(DriverEvent::Unrecognized {
                raw: format!("RTCP from {from}: {e}: {}", hex(bytes)),
            });
        }
        for p in packets {
            let (reporter, blocks) = match p {
                RtcpPacket::ReceiverReport(rr) => (rr.ssrc, rr.reports),
                RtcpPacket::SenderReport(sr) => (sr.ssrc, sr.reports),
                _ => continue,
            };
            for b in blocks {
                self.record_block(now, from, reporter, b);
            }
        }
    }

    fn record_block(&mut self, now: Timestamp, from: SocketAddr, reporter: u32, b: ReportBlock) {
        let Some(r) = self.records.get_mut(&b.ssrc) else {
            return; // Another sender's stream, or long gone.
        };
        self.health.received += 1;
        let first = !r.speakers.contains_key(&from);
        let e = r.speakers.entry(from).or_insert(SpeakerEvidence {
            speaker: from,
            reporter,
            reports: 0,
            first_at: now,
            last: b,
        });
        e.reports += 1;
        e.last = b;
        e.reporter = reporter;
        if !first {
            return;
        }
        let Some(attempt) = r.attempt else { return };
        let group = self
            .groups
            .get(r.group)
            .map(|g| g.name.clone())
            .unwrap_or_default();
        let evidence = e.describe(&group, b.ssrc, r.seq0);
        // Once per speaker per attempt, even when an interrupted programme plays again.
        let new = self
            .programmes
            .get_mut(&r.programme)
            .is_none_or(|p| p.delivered.insert(from));
        if new {
            self.events
                .push_back(DriverEvent::Delivered { attempt, evidence });
        }
    }

    /// Sending to a group failed: its stream stops; the attempt fails if it played on no
    /// other group.
    pub fn handle_send_failed(&mut self, now: Timestamp, to: SocketAddr, reason: &str) {
        let Some(gi) = self
            .groups
            .iter()
            .position(|g| g.rtp == to && g.playing.is_some())
        else {
            return;
        };
        let programme = self
            .groups
            .get(gi)
            .and_then(|g| g.playing.as_ref())
            .map(|s| s.programme);
        self.stop_stream(now, gi, true, "send failed");
        self.health.last_error = Some(format!("{to}: {reason}"));
        self.events
            .push_back(DriverEvent::Health(self.health.clone()));
        if let Some(id) = programme {
            let playing_elsewhere = self
                .groups
                .iter()
                .any(|g| g.playing.as_ref().is_some_and(|s| s.programme == id));
            let attempt = self
                .programmes
                .get(&id)
                .and_then(|p| p.attempt)
                .or_else(|| {
                    self.records
                        .values()
                        .find(|r| r.programme == id)
                        .and_then(|r| r.attempt)
                });
            if !playing_elsewhere && let Some(attempt) = attempt {
                self.events.push_back(DriverEvent::Failed {
                    attempt,
                    retryable: true,
                    reason: format!("could not stream to {to}: {reason}"),
                });
            }
        }
        self.start_next(now, gi);
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.pump(now);
    }

    /// The next audio to render.
    pub fn poll_render(&mut self) -> Option<RenderRequest> {
        self.renders.pop_front()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next fact for the router.
    pub fn poll_event(&mut self) -> Option<DriverEvent> {
        self.events.pop_front()
    }

    /// The next finished stream's reception evidence.
    pub fn poll_report(&mut self) -> Option<StreamReport> {
        self.reports.pop_front()
    }

    /// When something is next due: a packet, a sender report, a stream's report.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let streams = self
            .groups
            .iter()
            .filter_map(|g| g.playing.as_ref())
            .flat_map(|s| {
                let pkt = (s.next < s.total).then(|| s.due(s.next));
                [pkt, Some(s.next_sr)]
            });
        let records = self.records.values().map(|r| r.report_at);
        streams.chain(records).flatten().min()
    }
}

/// When the sender report after one due at `last` is due: an interval later, on the
/// stream's own schedule; after a stall longer than the interval, the first such time
/// after `now` (one report, not one for each interval missed).
fn next_report(last: Timestamp, interval: Duration, now: Timestamp) -> Timestamp {
    let step = interval.as_millis().max(1) as i64;
    let behind = now.as_millis() - last.as_millis();
    let intervals = if behind < 0 { 1 } else { behind / step + 1 };
    Timestamp(last.as_millis() + intervals * step)
}

/// Whether a configured speaker (`ip` or `ip:port`) is the address a report came from.
fn speaker_matches(want: &str, got: &SocketAddr) -> bool {
    if let Ok(a) = want.parse::<SocketAddr>() {
        return a == *got;
    }
    want.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip == got.ip())
}

fn hex(b: &[u8]) -> String {
    b.iter().take(64).map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GroupConfig;
    use crate::wire::ReceiverReport;
    use tocsin_channel::Outbound;
    use tocsin_core::PhoneNumber;
    use tocsin_voice::Codec;

    const T0: Timestamp = Timestamp(1_700_000_000_000);

    fn cfg(groups: usize) -> SpeakerConfig {
        let mut c = SpeakerConfig::new("127.0.0.1:5004".parse().unwrap());
        c.groups = (0..groups)
            .map(|i| GroupConfig {
                name: format!("village{i}"),
                rtp: SocketAddr::from(([127, 0, 0, 1], 5004 + 10 * i as u16)),
                rtcp: None,
                speakers: vec![format!("127.0.0.{}", 10 + i)],
            })
            .collect();
        c
    }

    /// A driver whose sockets are open (its Health event drained).
    fn driver(c: SpeakerConfig, seed: u64) -> Speakers {
        let mut s = Speakers::new(c, "t", seed, T0);
        s.handle_sockets_opened(T0);
        s.poll_event();
        s
    }

    /// A warning to every group of the driver.
    fn send(attempt: u64, text: &str) -> DriverCommand {
        send_to(attempt, Address::Speaker(BROADCAST_GROUP.into()), text)
    }

    fn send_to(attempt: u64, to: Address, text: &str) -> DriverCommand {
        DriverCommand::Send(Outbound {
            attempt: AttemptId(attempt),
            to,
            text: text.into(),
            want_report: true,
        })
    }

    fn group(name: &str) -> Address {
        Address::Speaker(name.into())
    }

    /// `ms` of a constant level, 8 kHz.
    fn audio(ms: u64, level: i16) -> Pcm {
        Pcm {
            rate: 8000,
            samples: vec![level; (ms * 8) as usize],
        }
    }

    fn events(s: &mut Speakers) -> Vec<DriverEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn rtp(s: &mut Speakers) -> Vec<(SocketAddr, RtpPacket)> {
        let mut out = Vec::new();
        while let Some(t) = s.poll_transmit() {
            if t.socket == Socket::Rtp {
                out.push((t.to, RtpPacket::parse(&t.bytes).unwrap()));
            }
        }
        out
    }

    /// Renders every pending request with `ms` of audio.
    fn render_all(s: &mut Speakers, now: Timestamp, ms: u64) -> Vec<RenderJob> {
        let mut jobs = Vec::new();
        while let Some(r) = s.poll_render() {
            s.handle_rendered(now, r.id, Ok(audio(ms, 1000)), Vec::new());
            jobs.push(r.job);
        }
        jobs
    }

    #[test]
    fn the_text_is_read_for_a_loudspeaker() {
        let a = Announcement::from_text(
            "【演练】【红色预警】山洪红色预警：立即转移到安全地带。 回复 1 K7XT 确认",
            Grade::Orange,
        );
        assert_eq!(a.grade, Grade::Red);
        assert!(a.exercise);
        assert_eq!(a.spoken, "红色预警，山洪红色预警：立即转移到安全地带。");
        let b = Announcement::from_text("【预警解除】山洪 已取消。", Grade::Orange);
        assert_eq!((b.grade, b.exercise), (Grade::Orange, false));
        assert_eq!(b.spoken, "预警解除，山洪 已取消。");
        // The grade named first wins ("蓝色预警升级为黄色").
        let c = Announcement::from_text("蓝色预警升级为黄色预警", Grade::Red);
        assert_eq!(c.grade, Grade::Blue);
    }

    #[test]
    fn only_the_routers_mark_makes_a_drill() {
        // A live red order to evacuate along the drill route is a live warning.
        let live = "【红色预警】山洪红色预警：请按演练路线立即转移。 回复 1 K7XT 确认";
        let a = Announcement::from_text(live, Grade::Orange);
        assert_eq!((a.grade, a.exercise), (Grade::Red, false));
        assert_eq!(a.spoken, "红色预警，山洪红色预警：请按演练路线立即转移。");
        // The drill of the same text, as the router marks it (leading space allowed).
        let a = Announcement::from_text(&format!("  {EXERCISE_MARK}{live}"), Grade::Orange);
        assert_eq!((a.grade, a.exercise), (Grade::Red, true));
        assert_eq!(a.spoken, "红色预警，山洪红色预警：请按演练路线立即转移。");
        // 演练 anywhere else, even bracketed, is just words.
        let a = Announcement::from_text("【黄色预警】明日【演练】取消，大风", Grade::Blue);
        assert!(!a.exercise);
        assert_eq!(a.spoken, "黄色预警，明日演练，取消，大风");
        // And the driver renders what it read.
        let mut s = driver(cfg(1), 5);
        s.submit(T0, send(1, live));
        s.submit(T0, send(2, &format!("{EXERCISE_MARK}{live}")));
        let exercise: Vec<bool> = render_all(&mut s, T0, 100)
            .into_iter()
            .map(|j| matches!(j, RenderJob::Programme { exercise: true, .. }))
            .collect();
        assert_eq!(exercise, vec![false, true]);
    }

    #[test]
    fn a_live_warning_interrupts_a_drill_and_a_drill_never_interrupts_a_live_one() {
        let pr = |grade, exercise| Precedence::of(grade, exercise);
        assert!(interrupts(pr(Grade::Blue, false), pr(Grade::Red, true)));
        assert!(!interrupts(pr(Grade::Red, true), pr(Grade::Blue, false)));
        assert!(interrupts(pr(Grade::Red, true), pr(Grade::Orange, true)));
        assert!(interrupts(pr(Grade::Red, false), pr(Grade::Orange, false)));
        assert!(!interrupts(
            pr(Grade::Orange, false),
            pr(Grade::Blue, false)
        ));
        assert!(!interrupts(pr(Grade::Red, false), pr(Grade::Red, false)));

        let mut s = driver(cfg(1), 5);
        s.submit(T0, send(1, "【演练】【红色预警】山洪"));
        render_all(&mut s, T0, 1000);
        let drill_ssrc = s.playing()[0].2;
        let t1 = T0 + Duration::from_millis(200);
        s.handle_timeout(t1);
        // A live blue cuts the red drill off.
        s.submit(t1, send(2, "【蓝色预警】降温"));
        render_all(&mut s, t1, 300);
        assert_eq!(s.playing()[0].1, Some(AttemptId(2)), "live blue interrupts");
        let byes: Vec<(u32, Option<String>)> = std::iter::from_fn(|| s.poll_transmit())
            .filter(|t| t.socket == Socket::Rtcp)
            .flat_map(|t| parse_compound(&t.bytes).0)
            .filter_map(|p| match p {
                RtcpPacket::Goodbye { sources, reason } => {
                    Some((sources.first().copied()?, reason))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            byes,
            vec![(
                drill_ssrc,
                Some("drill interrupted by a live warning".to_owned())
            )]
        );
        // Another red drill waits behind live blue; a live orange does not cut live blue
        // (only red interrupts its own kind) but goes ahead of both drills.
        s.submit(t1, send(3, "【演练】【红色预警】泥石流"));
        s.submit(t1, send(4, "【橙色预警】暴雨"));
        render_all(&mut s, t1, 300);
        assert_eq!(s.playing()[0].1, Some(AttemptId(2)));
        let attempt_of =
            |s: &Speakers, id: ProgrammeId| s.programmes.get(&id).and_then(|p| p.attempt);
        let line: Vec<Option<AttemptId>> = s.groups[0]
            .waiting
            .waiting()
            .map(|id| attempt_of(&s, id))
            .collect();
        assert_eq!(
            line,
            vec![Some(AttemptId(4)), Some(AttemptId(1)), Some(AttemptId(3))]
        );
        let mut starts = Vec::new();
        // Until the last stream's report is out (its grace period after the end).
        while let Some(now) = s.poll_timeout() {
            s.handle_timeout(now);
            for (_, p) in rtp(&mut s) {
                if p.marker {
                    starts.push(p.ssrc);
                }
            }
        }
        assert_eq!(s.pending(), 0);
        // The waiting ones played in that order, each once more from its start.
        assert_eq!(starts.len(), 3);
        assert!(!starts.contains(&drill_ssrc));
        let sent: Vec<AttemptId> = events(&mut s)
            .into_iter()
            .filter_map(|e| match e {
                DriverEvent::Sent { attempt, .. } => Some(attempt),
                _ => None,
            })
            .collect();
        // Sent once each when first heard: the interrupted drill is not sent again, the
        // waiting drill only when it played.
        assert_eq!(
            sent,
            vec![AttemptId(1), AttemptId(2), AttemptId(4), AttemptId(3)]
        );
        let reports: Vec<StreamReport> = std::iter::from_fn(|| s.poll_report()).collect();
        let attempt_of_stream = |ssrc: u32| {
            reports
                .iter()
                .find(|r| r.ssrc == ssrc)
                .and_then(|r| r.attempt)
        };
        let played: Vec<Option<AttemptId>> =
            starts.iter().map(|&ssrc| attempt_of_stream(ssrc)).collect();
        assert_eq!(
            played,
            vec![Some(AttemptId(4)), Some(AttemptId(1)), Some(AttemptId(3))]
        );
        // The interrupted drill's first stream is on record as stopped early; every
        // other stream played to its end.
        let early: Vec<(Option<AttemptId>, u32)> = reports
            .iter()
            .filter(|r| r.stopped_early)
            .map(|r| (r.attempt, r.ssrc))
            .collect();
        assert_eq!(early, vec![(Some(AttemptId(1)), drill_ssrc)]);
    }

    #[test]
    fn packets_are_paced_on_the_schedule_with_exact_headers() {
        let mut s = Speakers::new(cfg(1), "tocsin@test", 1, T0);
        s.set_next_stream_ids(0x1234_5678, 1, 0);
        s.handle_sockets_opened(T0);
        s.submit(T0, send(1, "【红色预警】山洪"));
        let jobs = render_all(&mut s, T0, 100);
        assert_eq!(
            jobs,
            vec![RenderJob::Programme {
                grade: Grade::Red,
                text: "红色预警，山洪".into(),
                exercise: false,
                repeat: 3,
                pause: Duration::from_secs(10),
            }]
        );
        let ev = events(&mut s);
        assert!(matches!(ev[1], DriverEvent::Accepted { .. }));
        assert_eq!(
            ev[2],
            DriverEvent::Sent {
                attempt: AttemptId(1),
                reference: "group village0 ssrc 0x12345678".into()
            }
        );
        // Packet 0 went at once; then one every 20 ms; 100 ms = 5 packets.
        let mut got = rtp(&mut s);
        let mut times = vec![T0];
        while let Some(t) = s.poll_timeout() {
            if s.pending() == 0 {
                break;
            }
            s.handle_timeout(t);
            let p = rtp(&mut s);
            times.extend(std::iter::repeat_n(t, p.len()));
            got.extend(p);
        }
        assert_eq!(got.len(), 5);
        let pcma_1000 = Codec::Pcma.encode_sample(1000);
        for (i, (to, p)) in got.iter().enumerate() {
            assert_eq!(*to, "127.0.0.1:5004".parse().unwrap());
            assert_eq!(p.marker, i == 0);
            assert_eq!(p.payload_type, 8);
            assert_eq!(p.sequence, 1 + i as u16);
            assert_eq!(p.timestamp, 160 * i as u32);
            assert_eq!(p.payload, vec![pcma_1000; 160]);
            assert_eq!(times[i], T0 + Duration::from_millis(20 * i as u64));
        }
    }

    #[test]
    fn programmes_wait_for_the_sockets() {
        let mut s = Speakers::new(cfg(1), "t", 1, T0);
        s.submit(T0, send(1, "x"));
        render_all(&mut s, T0, 100);
        assert!(s.playing().is_empty());
        assert!(rtp(&mut s).is_empty());
        let later = T0 + Duration::from_secs(2);
        s.handle_sockets_opened(later);
        let got = rtp(&mut s);
        assert_eq!(got.len(), 1);
        assert!(got[0].1.marker);
    }

    #[test]
    fn sequence_and_timestamp_wrap_around() {
        let mut s = driver(cfg(1), 1);
        s.set_next_stream_ids(7, 65534, u32::MAX - 159);
        s.submit(T0, send(1, "x"));
        render_all(&mut s, T0, 80);
        let mut got = rtp(&mut s);
        while let Some(t) = s.poll_timeout() {
            s.handle_timeout(t);
            got.extend(rtp(&mut s));
            if got.len() >= 4 {
                break;
            }
        }
        let seqs: Vec<u16> = got.iter().map(|(_, p)| p.sequence).collect();
        let ts: Vec<u32> = got.iter().map(|(_, p)| p.timestamp).collect();
        assert_eq!(seqs, vec![65534, 65535, 0, 1]);
        assert_eq!(ts, vec![u32::MAX - 159, 0, 160, 320]);
    }

    #[test]
    fn ten_minutes_of_programme_do_not_drift() {
        let mut s = driver(cfg(1), 9);
        s.set_next_stream_ids(1, 100, 5000);
        s.submit(T0, send(1, "x"));
        render_all(&mut s, T0, 600_000);
        let mut n = 0u64;
        let mut srs = 0;
        let mut now = T0;
        loop {
            while let Some(t) = s.poll_transmit() {
                match t.socket {
                    Socket::Rtp => {
                        let p = RtpPacket::parse(&t.bytes).unwrap();
                        // Sent exactly on its slot, with its exact timestamp.
                        assert_eq!(now, T0 + Duration::from_millis(20 * n));
                        assert_eq!(p.sequence, 100u16.wrapping_add(n as u16));
                        assert_eq!(p.timestamp, 5000 + 160 * n as u32);
                        n += 1;
                    }
                    Socket::Rtcp => {
                        let (pk, _) = parse_compound(&t.bytes);
                        if let Some(RtcpPacket::SenderReport(sr)) = pk.first() {
                            // RTP time in the report tracks the wall clock exactly.
                            let ms = now.since(T0).as_millis() as u32;
                            assert_eq!(sr.rtp_timestamp, 5000 + ms * 8);
                            srs += 1;
                        }
                    }
                }
            }
            if s.playing().is_empty() {
                break;
            }
            now = s.poll_timeout().unwrap();
            s.handle_timeout(now);
        }
        assert_eq!(n, 30_000);
        // One at the start, one every 5 s, one with the goodbye.
        assert_eq!(srs, 121);
        assert_eq!(now, T0 + Duration::from_millis(20 * 29_999));
    }

    #[test]
    fn a_stall_moves_the_stream_later_instead_of_bursting() {
        let mut s = driver(cfg(1), 9);
        s.set_next_stream_ids(1, 0, 0);
        s.submit(T0, send(1, "x"));
        render_all(&mut s, T0, 2000);
        rtp(&mut s);
        // The host freezes for 1 s after packet 0.
        let later = T0 + Duration::from_millis(1000);
        s.handle_timeout(later);
        let got = rtp(&mut s);
        assert_eq!(got.len(), 1, "no burst");
        assert_eq!(got[0].1.sequence, 1);
        // 50 frames of gap in the timestamps: the speaker plays silence for the stall.
        assert_eq!(got[0].1.timestamp, 160 + 49 * 160);
        s.handle_timeout(later + FRAME);
        assert_eq!(rtp(&mut s)[0].1.timestamp, 160 * 51);
    }

    #[test]
    fn many_groups_stream_at_once_with_their_own_ssrcs() {
        let mut s = driver(cfg(3), 5);
        s.submit(T0, send(1, "【黄色预警】大风"));
        render_all(&mut s, T0, 40);
        let got = rtp(&mut s);
        assert_eq!(got.len(), 3);
        let ssrcs: HashSet<u32> = got.iter().map(|(_, p)| p.ssrc).collect();
        assert_eq!(ssrcs.len(), 3);
        let dests: HashSet<SocketAddr> = got.iter().map(|(a, _)| *a).collect();
        assert_eq!(dests.len(), 3);
        // Sent once for the attempt.
        let sent = events(&mut s)
            .into_iter()
            .filter(|e| matches!(e, DriverEvent::Sent { .. }))
            .count();
        assert_eq!(sent, 1);
    }

    #[test]
    fn a_programme_plays_only_on_the_addressed_group() {
        let mut c = cfg(3);
        c.groups[1].speakers = vec!["127.0.0.11".into()];
        let mut s = driver(c, 5);
        s.set_next_stream_ids(0xB0B, 0, 0);
        s.submit(T0, send_to(1, group("village1"), "【红色预警】山洪"));
        render_all(&mut s, T0, 100);
        assert_eq!(
            s.playing(),
            vec![("village1".to_owned(), Some(AttemptId(1)), 0xB0B)]
        );
        let ev = events(&mut s);
        assert!(ev.contains(&DriverEvent::Sent {
            attempt: AttemptId(1),
            reference: "group village1 ssrc 0x00000b0b".into()
        }));
        // Every packet and sender report goes to village1's address only.
        let village1: SocketAddr = "127.0.0.1:5014".parse().unwrap();
        let mut rtp_dests = HashSet::new();
        let mut rtcp_dests = HashSet::new();
        let mut packets = 0;
        loop {
            while let Some(t) = s.poll_transmit() {
                match t.socket {
                    Socket::Rtp => {
                        packets += 1;
                        rtp_dests.insert(t.to);
                    }
                    Socket::Rtcp => {
                        rtcp_dests.insert(t.to);
                    }
                }
            }
            if s.playing().is_empty() {
                break;
            }
            let t = s.poll_timeout().unwrap();
            s.handle_timeout(t);
        }
        assert_eq!(packets, 5);
        assert_eq!(rtp_dests, HashSet::from([village1]));
        assert_eq!(
            rtcp_dests,
            HashSet::from(["127.0.0.1:5015".parse::<SocketAddr>().unwrap()])
        );
        // A report from village1's speaker is its evidence, naming the group.
        let mut b = Vec::new();
        RtcpPacket::ReceiverReport(ReceiverReport {
            ssrc: 0x5EA4,
            reports: vec![ReportBlock {
                ssrc: 0xB0B,
                fraction_lost: 0,
                cumulative_lost: 0,
                highest_sequence: 4,
                jitter: 0,
                last_sr: 0,
                delay_since_last_sr: 0,
            }],
        })
        .emit(&mut b);
        s.handle_rtcp(T0, "127.0.0.11:5015".parse().unwrap(), &b);
        let ev = events(&mut s);
        assert!(
            matches!(&ev[..], [DriverEvent::Delivered { attempt: AttemptId(1), evidence }] if evidence.contains("on group village1")),
            "{ev:?}"
        );
        // One stream report, for village1 alone.
        let mut reports = Vec::new();
        while let Some(t) = s.poll_timeout() {
            s.handle_timeout(t);
            reports.extend(std::iter::from_fn(|| s.poll_report()));
        }
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].group, "village1");
        assert_eq!(reports[0].reached.len(), 1);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn groups_play_their_own_programmes_side_by_side() {
        let mut s = driver(cfg(2), 5);
        s.submit(T0, send_to(1, group("village0"), "【橙色预警】暴雨"));
        s.submit(T0, send_to(2, group("village1"), "【蓝色预警】降温"));
        render_all(&mut s, T0, 100);
        let playing: Vec<(String, Option<AttemptId>)> =
            s.playing().into_iter().map(|(g, a, _)| (g, a)).collect();
        assert_eq!(
            playing,
            vec![
                ("village0".to_owned(), Some(AttemptId(1))),
                ("village1".to_owned(), Some(AttemptId(2)))
            ],
            "the blue warning does not wait behind orange on another group"
        );
        // A red one for village1 interrupts blue there and leaves village0's orange alone.
        s.submit(T0, send_to(3, group("village1"), "【红色预警】山洪"));
        render_all(&mut s, T0, 100);
        let playing: Vec<Option<AttemptId>> = s.playing().into_iter().map(|p| p.1).collect();
        assert_eq!(playing, vec![Some(AttemptId(1)), Some(AttemptId(3))]);
    }

    #[test]
    fn an_unknown_group_or_another_kind_of_address_fails_for_good() {
        let mut s = driver(cfg(2), 5);
        s.submit(T0, send_to(1, group("T05-V03"), "【红色预警】山洪"));
        s.submit(
            T0,
            send_to(
                2,
                Address::Phone(PhoneNumber::parse("+8613800138000", "86").unwrap()),
                "【红色预警】山洪",
            ),
        );
        // Names are exact: not trimmed, not case-folded.
        s.submit(T0, send_to(3, group("Village0"), "x"));
        let ev = events(&mut s);
        assert_eq!(ev.len(), 3, "{ev:?}");
        assert!(
            matches!(&ev[0], DriverEvent::Failed { attempt: AttemptId(1), retryable: false, reason }
                if reason.contains("\"T05-V03\"") && reason.contains("village0, village1")),
            "{ev:?}"
        );
        assert!(
            matches!(&ev[1], DriverEvent::Failed { attempt: AttemptId(2), retryable: false, reason }
                if reason.contains("+8613800138000")),
            "{ev:?}"
        );
        assert!(matches!(
            &ev[2],
            DriverEvent::Failed {
                attempt: AttemptId(3),
                retryable: false,
                ..
            }
        ));
        assert!(s.poll_render().is_none());
        assert_eq!(s.pending(), 0);
        assert!(rtp(&mut s).is_empty());
    }

    #[test]
    fn red_interrupts_a_lower_grade_which_then_plays_again_and_lower_grades_wait() {
        let mut s = driver(cfg(1), 5);
        s.submit(T0, send(1, "【橙色预警】暴雨"));
        render_all(&mut s, T0, 1000);
        let orange_ssrc = s.playing()[0].2;
        let t1 = T0 + Duration::from_millis(200);
        s.handle_timeout(t1);
        s.submit(t1, send(2, "【蓝色预警】降温"));
        render_all(&mut s, t1, 100);
        assert_eq!(s.playing()[0].1, Some(AttemptId(1)), "blue waits");
        s.submit(t1, send(3, "【红色预警】山洪"));
        render_all(&mut s, t1, 100);
        assert_eq!(s.playing()[0].1, Some(AttemptId(3)), "red interrupts");
        // The orange stream said goodbye.
        let byes: Vec<u32> = std::iter::from_fn(|| s.poll_transmit())
            .filter(|t| t.socket == Socket::Rtcp)
            .flat_map(|t| parse_compound(&t.bytes).0)
            .filter_map(|p| match p {
                RtcpPacket::Goodbye { sources, .. } => sources.first().copied(),
                _ => None,
            })
            .collect();
        assert_eq!(byes, vec![orange_ssrc]);
        // After red: orange again (from its start, a new stream), then blue.
        let mut order = Vec::new();
        while s.pending() > 0 {
            let now = s.poll_timeout().unwrap();
            s.handle_timeout(now);
            for (_, p) in rtp(&mut s) {
                if p.marker {
                    order.push(p.ssrc);
                }
            }
        }
        assert_eq!(order.len(), 2);
        assert_ne!(order[0], orange_ssrc);
        let sent: Vec<AttemptId> = events(&mut s)
            .into_iter()
            .filter_map(|e| match e {
                DriverEvent::Sent { attempt, .. } => Some(attempt),
                _ => None,
            })
            .collect();
        // Sent once each, in the order they first played.
        assert_eq!(sent, vec![AttemptId(1), AttemptId(3), AttemptId(2)]);
    }

    #[test]
    fn cancel_before_playing_fails_the_attempt_and_cancel_while_playing_says_so() {
        let mut s = driver(cfg(1), 5);
        s.submit(T0, send(1, "【黄色预警】大风"));
        s.submit(T0, send(2, "【演练】【黄色预警】大风"));
        // 1 is rendering; cancel it.
        s.submit(T0, DriverCommand::Cancel(AttemptId(1)));
        render_all(&mut s, T0, 1000);
        let ev = events(&mut s);
        assert!(ev.contains(&DriverEvent::Failed {
            attempt: AttemptId(1),
            retryable: false,
            reason: "cancelled before it played".into()
        }));
        assert_eq!(s.playing()[0].1, Some(AttemptId(2)));
        s.handle_timeout(T0 + Duration::from_millis(100));
        s.submit(
            T0 + Duration::from_millis(100),
            DriverCommand::Cancel(AttemptId(2)),
        );
        assert!(s.playing().is_empty());
        // A cancellation message is rendered (an exercise: 演练 too) and plays.
        let jobs = render_all(&mut s, T0 + Duration::from_millis(100), 60);
        assert_eq!(jobs, vec![RenderJob::Cancellation { exercise: true }]);
        assert_eq!(s.playing()[0].1, None);
        assert!(
            events(&mut s)
                .iter()
                .all(|e| !matches!(e, DriverEvent::Failed { .. }))
        );
    }

    #[test]
    fn receiver_reports_are_evidence_once_per_speaker() {
        let mut c = cfg(1);
        c.groups[0].speakers = vec!["127.0.0.10".into(), "127.0.0.11:7000".into()];
        let mut s = driver(c, 5);
        s.set_next_stream_ids(0xABCD, 10, 0);
        s.submit(T0, send(1, "【红色预警】山洪"));
        render_all(&mut s, T0, 100);
        events(&mut s);
        let rr = |lost: i32| {
            let mut b = Vec::new();
            RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: 0x5EA4,
                reports: vec![ReportBlock {
                    ssrc: 0xABCD,
                    fraction_lost: 0,
                    cumulative_lost: lost,
                    highest_sequence: 14,
                    jitter: 24,
                    last_sr: 0,
                    delay_since_last_sr: 0,
                }],
            })
            .emit(&mut b);
            b
        };
        let speaker: SocketAddr = "127.0.0.10:5005".parse().unwrap();
        let t = T0 + Duration::from_millis(60);
        s.handle_rtcp(t, speaker, &rr(1));
        s.handle_rtcp(t, speaker, &rr(1));
        let ev = events(&mut s);
        assert_eq!(ev.len(), 1, "{ev:?}");
        let DriverEvent::Delivered { attempt, evidence } = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(*attempt, AttemptId(1));
        assert_eq!(
            evidence,
            "RTCP RR from speaker 127.0.0.10:5005 (ssrc 0x00005ea4) on group village0, stream 0x0000abcd: 4 packets received, 1 lost, loss fraction 0/256, jitter 24 (3.0 ms)"
        );
        // A report about someone else's stream, and garbage.
        let mut other = rr(0);
        other[8..12].copy_from_slice(&[0, 0, 0, 1]);
        s.handle_rtcp(t, speaker, &other);
        s.handle_rtcp(t, speaker, b"\x00junk");
        let ev = events(&mut s);
        assert_eq!(ev.len(), 1);
        assert!(matches!(&ev[0], DriverEvent::Unrecognized { raw } if raw.contains("version 0")));
    }

    #[test]
    fn the_stream_report_lists_reached_and_no_evidence() {
        let mut c = cfg(1);
        c.groups[0].speakers = vec!["127.0.0.10".into(), "127.0.0.11".into()];
        let mut s = driver(c, 5);
        s.set_next_stream_ids(0xABCD, 0, 0);
        s.submit(T0, send(1, "x"));
        render_all(&mut s, T0, 40);
        let mut b = Vec::new();
        RtcpPacket::ReceiverReport(ReceiverReport {
            ssrc: 9,
            reports: vec![ReportBlock {
                ssrc: 0xABCD,
                fraction_lost: 0,
                cumulative_lost: 0,
                highest_sequence: 1,
                jitter: 0,
                last_sr: 0,
                delay_since_last_sr: 0,
            }],
        })
        .emit(&mut b);
        s.handle_rtcp(T0, "127.0.0.10:5005".parse().unwrap(), &b);
        let report = loop {
            if let Some(r) = s.poll_report() {
                break r;
            }
            let t = s.poll_timeout().expect("a report is due");
            s.handle_timeout(t);
        };
        assert_eq!(report.attempt, Some(AttemptId(1)));
        assert_eq!(report.packets, 2);
        assert!(!report.stopped_early);
        assert_eq!(report.reached.len(), 1);
        assert_eq!(report.no_evidence, vec!["127.0.0.11".to_owned()]);
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn render_failure_queue_limit_and_send_failure() {
        let mut c = cfg(1);
        c.queue_limit = 1;
        let mut s = driver(c, 5);
        s.submit(T0, send(1, "x"));
        s.submit(T0, send(2, "y"));
        let r = s.poll_render().unwrap();
        s.handle_rendered(T0, r.id, Err("espeak-ng crashed".into()), Vec::new());
        let ev = events(&mut s);
        assert!(
            matches!(&ev[1], DriverEvent::Failed { attempt: AttemptId(2), retryable: true, reason } if reason.contains("queue full"))
        );
        assert!(
            matches!(&ev[2], DriverEvent::Failed { attempt: AttemptId(1), retryable: true, reason } if reason.contains("espeak-ng crashed"))
        );
        s.submit(T0, send(3, "z"));
        let r = s.poll_render().unwrap();
        s.handle_rendered(T0, r.id, Ok(audio(1000, 5)), vec!["山洪".into()]);
        let ev = events(&mut s);
        assert!(
            matches!(&ev[1], DriverEvent::Sent { reference, .. } if reference.contains("not spoken") && reference.contains("山洪"))
        );
        s.handle_send_failed(T0, "127.0.0.1:5004".parse().unwrap(), "network unreachable");
        let ev = events(&mut s);
        assert!(
            matches!(
                &ev[1],
                DriverEvent::Failed {
                    attempt: AttemptId(3),
                    retryable: true,
                    ..
                }
            ),
            "{ev:?}"
        );
        assert!(s.playing().is_empty());
    }

    /// `n` groups on their own ports, no expected speakers.
    fn many(n: u16) -> SpeakerConfig {
        let mut c = cfg(0);
        c.groups = (0..n)
            .map(|i| GroupConfig {
                name: format!("g{i}"),
                rtp: SocketAddr::from(([127, 0, 0, 1], 10_000 + 2 * i)),
                rtcp: None,
                speakers: Vec::new(),
            })
            .collect();
        c
    }

    /// Runs `s` on its own deadlines until nothing plays: every RTP packet and sender
    /// report with the time it was sent.
    #[allow(clippy::type_complexity)]
    fn play_out(
        s: &mut Speakers,
        from: Timestamp,
    ) -> (
        Vec<(Timestamp, SocketAddr, RtpPacket)>,
        Vec<(Timestamp, SocketAddr)>,
    ) {
        let (mut pkts, mut srs) = (Vec::new(), Vec::new());
        let mut now = from;
        loop {
            while let Some(t) = s.poll_transmit() {
                match t.socket {
                    Socket::Rtp => pkts.push((now, t.to, RtpPacket::parse(&t.bytes).unwrap())),
                    Socket::Rtcp => srs.push((now, t.to)),
                }
            }
            if s.playing().is_empty() {
                return (pkts, srs);
            }
            let next = s.poll_timeout().unwrap();
            assert!(next >= now, "deadlines never go back");
            now = next;
            s.handle_timeout(now);
        }
    }

    /// Checks every stream against its own schedule: packet `n` sent exactly at its first
    /// packet's time + 20 ms × n, with the exact sequence number, timestamp and marker.
    /// Returns each destination's first send time.
    fn on_schedule(pkts: &[(Timestamp, SocketAddr, RtpPacket)]) -> HashMap<SocketAddr, Timestamp> {
        let mut first: HashMap<SocketAddr, (Timestamp, RtpPacket, u64)> = HashMap::new();
        for (t, to, p) in pkts {
            let f = first.entry(*to).or_insert((*t, p.clone(), 0));
            let n = f.2;
            assert_eq!(*t, f.0 + FRAME * n as u32, "{to} packet {n}");
            assert_eq!(p.sequence, f.1.sequence.wrapping_add(n as u16));
            assert_eq!(p.timestamp, f.1.timestamp.wrapping_add(160 * n as u32));
            assert_eq!(p.ssrc, f.1.ssrc);
            assert_eq!(p.marker, n == 0);
            f.2 += 1;
        }
        first.into_iter().map(|(to, f)| (to, f.0)).collect()
    }

    #[test]
    fn five_hundred_streams_are_spread_over_the_frame_each_on_its_own_schedule() {
        let mut s = driver(many(500), 3);
        s.submit(T0, send(1, "x"));
        render_all(&mut s, T0, 1000);
        let (pkts, srs) = play_out(&mut s, T0);
        assert_eq!(pkts.len(), 500 * 50);
        let first = on_schedule(&pkts);
        assert_eq!(first.len(), 500);
        // First packets: 25 in each millisecond of the first frame, none later.
        let mut per_ms = [0; SLOTS];
        for t in first.values() {
            let d = t.since(T0).as_millis() as usize;
            assert!(d < SLOTS, "started {d} ms late");
            per_ms[d] += 1;
        }
        assert_eq!(per_ms, [25; SLOTS]);
        // No instant sends more than its share: at most 25 packets at once.
        let mut at_once: HashMap<Timestamp, usize> = HashMap::new();
        for (t, _, _) in &pkts {
            *at_once.entry(*t).or_default() += 1;
        }
        assert_eq!(at_once.values().max(), Some(&25));
        // Each group's first sender report goes with its first packet, not before.
        for (t, rtcp) in &srs {
            let rtp = SocketAddr::new(rtcp.ip(), rtcp.port() - 1);
            assert!(
                *t >= first[&rtp],
                "{rtcp}: report before the stream started"
            );
        }
        let first_srs: HashSet<SocketAddr> = srs
            .iter()
            .filter(|(t, rtcp)| *t == first[&SocketAddr::new(rtcp.ip(), rtcp.port() - 1)])
            .map(|(_, rtcp)| *rtcp)
            .collect();
        assert_eq!(first_srs.len(), 500);
    }

    #[test]
    fn sender_reports_stay_spread_after_a_late_wake_and_follow_the_packets() {
        let mut s = driver(many(500), 5);
        s.submit(T0, send(1, "x"));
        render_all(&mut s, T0, 12_000);
        // The broadcast started 25 streams in the first millisecond: in one batch.
        let first: Vec<Transmit> = std::iter::from_fn(|| s.poll_transmit()).collect();
        assert_eq!(first.iter().filter(|t| t.socket == Socket::Rtp).count(), 25);
        // The task wakes 19 ms late: every other stream's first packet and first report
        // go in this one wake, all packets before any report.
        let late = T0 + Duration::from_millis(19);
        s.handle_timeout(late);
        let burst: Vec<Socket> = std::iter::from_fn(|| s.poll_transmit())
            .map(|t| t.socket)
            .collect();
        assert_eq!(burst.len(), 2 * 475);
        assert!(burst[..475].iter().all(|k| *k == Socket::Rtp));
        assert!(burst[475..].iter().all(|k| *k == Socket::Rtcp));
        let (pkts, srs) = play_out(&mut s, late);
        // Each stream's start: its packet 1 (the first one played out here) less a frame.
        let mut starts: HashMap<SocketAddr, Timestamp> = HashMap::new();
        for (t, to, p) in &pkts {
            assert!(!p.marker);
            starts.entry(*to).or_insert(Timestamp(t.as_millis() - 20));
        }
        assert_eq!(starts.len(), 500);
        // Later reports: every 5 s on each stream's own slot (not 5 s after the late
        // wake, all at once), so no instant carries more than the slot's 25.
        assert_eq!(srs.iter().filter(|(t, _)| *t > late).count(), 500 * 3);
        let mut at_once: HashMap<Timestamp, usize> = HashMap::new();
        for (t, rtcp) in srs.iter().filter(|(t, _)| *t > late) {
            let rtp = SocketAddr::new(rtcp.ip(), rtcp.port() - 1);
            let since = t.since(starts[&rtp]).as_millis();
            assert!(
                // Or the goodbye with the last of its 600 packets.
                since % 5_000 == 0 || since == 599 * 20,
                "{rtcp}: report {since} ms after its stream's start"
            );
            *at_once.entry(*t).or_default() += 1;
        }
        assert_eq!(at_once.values().max(), Some(&25));
    }

    #[test]
    fn staggered_streams_do_not_drift_over_ten_minutes() {
        // Nine groups: eight share the first slot, the ninth moves to the next one. They
        // start at an odd millisecond, and a second programme on one group starts mid-way
        // in whatever slot is free then.
        let mut s = driver(many(9), 11);
        let start = T0 + Duration::from_millis(7);
        s.submit(start, send(1, "x"));
        render_all(&mut s, start, 600_000);
        let (pkts, _) = play_out(&mut s, start);
        assert_eq!(pkts.len(), 9 * 30_000);
        let first = on_schedule(&pkts);
        let mut starts: Vec<u128> = first.values().map(|t| t.since(start).as_millis()).collect();
        starts.sort_unstable();
        assert_eq!(starts, [0, 0, 0, 0, 0, 0, 0, 0, 1]);
        // The last packet of every stream is exactly 29,999 frames after its first.
        let last = pkts.iter().map(|(t, _, _)| *t).max().unwrap();
        assert_eq!(last, start + Duration::from_millis(1 + 20 * 29_999));
    }

    #[test]
    fn a_stream_started_later_takes_a_free_slot_and_keeps_it_through_a_stall() {
        let mut s = driver(many(10), 4);
        // Eight groups fill slot 0 of the frame (T0 is slot 0).
        for i in 0..8 {
            s.submit(T0, send_to(i + 1, group(&format!("g{i}")), "x"));
        }
        render_all(&mut s, T0, 2000);
        assert_eq!(rtp(&mut s).len(), 8);
        // Group 8's warning arrives 40 ms later (slot 0 again): it moves to slot 1.
        let t1 = T0 + Duration::from_millis(40);
        s.handle_timeout(t1);
        rtp(&mut s);
        s.submit(t1, send_to(9, group("g8"), "y"));
        render_all(&mut s, t1, 2000);
        assert!(rtp(&mut s).is_empty(), "slot 0 is full");
        s.handle_timeout(t1 + Duration::from_millis(1));
        let got = rtp(&mut s);
        assert_eq!(got.len(), 1);
        assert!(got[0].1.marker);
        // A 300 ms stall: the stream re-anchors later but stays in its slot.
        let t2 = t1 + Duration::from_millis(1 + 20 + 300);
        s.handle_timeout(t2);
        let got: Vec<_> = rtp(&mut s)
            .into_iter()
            .filter(|(to, _)| to.port() == 10_016)
            .collect();
        assert_eq!(got.len(), 1, "no burst after the stall");
        let next = loop {
            let t = s.poll_timeout().unwrap();
            s.handle_timeout(t);
            if rtp(&mut s).iter().any(|(to, _)| to.port() == 10_016) {
                break t;
            }
        };
        assert_eq!(slot_of(next), slot_of(t1 + Duration::from_millis(1)));
        assert!(next > t2);
    }
}
