//! Voice call-out over the modem: the call-progress notifications of each family, the
//! prompt, and one call's media (PCM frames paced from the answer time) and record.
//!
//! The conversation itself (which AT command goes when) lives in [`crate::proto`]; this
//! module holds what a call *is*, so it can be tested on its own.
//!
//! Audio is signed 16-bit little-endian mono at 8 kHz: 320 bytes per 20 ms frame. Frame
//! `k` is due at `answered_at + k × 20 ms`, computed from the answer time so pacing never
//! drifts; a late task sends at most [`MAX_CATCH_UP`] frames back to back and skips the
//! rest (counted as late), so the stream stays in step with the clock.

use std::sync::Arc;
use std::time::Duration;

use tocsin_channel::Outbound;
use tocsin_core::Timestamp;

/// The prompt trait and the built-in tone are shared with every voice bearer; they live
/// in `tocsin-channel` and are re-exported here where the modem's callers look for them.
pub use tocsin_channel::voice::{FRAME_SAMPLES, PromptSource, RATE, ToneSource};

/// Bytes in one 20 ms frame of 16-bit PCM.
pub const FRAME_BYTES: usize = FRAME_SAMPLES * 2;
/// One frame's duration.
pub const FRAME: Duration = Duration::from_millis(20);
/// Frames sent back to back at most when the task was late.
pub const MAX_CATCH_UP: u64 = 10;

/// A final or unsolicited call result code (V.250).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallResult {
    /// `NO CARRIER`: the call failed or the other side hung up.
    NoCarrier,
    /// `BUSY`: the line is busy or the callee rejected the call.
    Busy,
    /// `NO ANSWER`: the network gave up ringing.
    NoAnswer,
    /// `NO DIALTONE`: no network to call over.
    NoDialtone,
}

impl CallResult {
    /// The result code as the modem writes it.
    pub fn text(self) -> &'static str {
        match self {
            CallResult::NoCarrier => "NO CARRIER",
            CallResult::Busy => "BUSY",
            CallResult::NoAnswer => "NO ANSWER",
            CallResult::NoDialtone => "NO DIALTONE",
        }
    }

    /// What it means for a call that was never answered, and whether trying again later
    /// may succeed (every one of them may).
    pub fn meaning(self) -> &'static str {
        match self {
            CallResult::NoCarrier => "call failed or rejected",
            CallResult::Busy => "busy",
            CallResult::NoAnswer => "no answer",
            CallResult::NoDialtone => "no dial tone (no network)",
        }
    }
}

/// The state of our outgoing call as `+CLCC` / `ccinfo` give it (27.007 §7.18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallStat {
    /// 0: answered, media flows.
    Active,
    /// 2: dialling.
    Dialling,
    /// 3: the callee's phone rings.
    Alerting,
    /// −1 or 7 (Quectel `ccinfo`): released.
    Released,
    /// 1 held, 4 incoming, 5 waiting, or anything else.
    Other(i32),
}

/// A call-related line from the modem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallUrc {
    /// Our outgoing voice call's state (`+CLCC:` with dir 0 mode 0, or `+QIND: "ccinfo"`).
    State(CallStat),
    /// SIMCom `VOICE CALL: BEGIN`: answered.
    Begin,
    /// SIMCom `VOICE CALL: END: <duration>`: over.
    End(String),
    /// `NO CARRIER`, `BUSY`, `NO ANSWER`, `NO DIALTONE`.
    Result(CallResult),
    /// A key the callee pressed (`+QTONEDET: 49`, `+RXDTMF: 1`, `+DTMF:1`).
    Dtmf {
        /// The key, `0`–`9`, `*`, `#`, `A`–`D`.
        key: char,
        /// The line, for the evidence.
        raw: String,
    },
    /// Incoming-call noise (`RING`, `+CLIP:`, `MISSED_CALL:`, a `+CLCC` for an incoming
    /// call): the gateway does not take calls.
    Incoming,
}

/// Parses a call-related line; `None` for anything else. Malformed call lines come back
/// as `None` too, so they are reported as unrecognized.
pub fn parse_call_urc(line: &str) -> Option<CallUrc> {
    let t = line.trim();
    let result = match t {
        "NO CARRIER" => Some(CallResult::NoCarrier),
        "BUSY" => Some(CallResult::Busy),
        "NO ANSWER" => Some(CallResult::NoAnswer),
        "NO DIALTONE" | "NO DIAL TONE" => Some(CallResult::NoDialtone),
        _ => None,
    };
    if let Some(r) = result {
        return Some(CallUrc::Result(r));
    }
    if t == "RING" || t.starts_with("+CLIP:") || t.starts_with("MISSED_CALL:") {
        return Some(CallUrc::Incoming);
    }
    if t == "VOICE CALL: BEGIN" {
        return Some(CallUrc::Begin);
    }
    if let Some(rest) = t.strip_prefix("VOICE CALL: END") {
        return Some(CallUrc::End(rest.trim_start_matches(':').trim().to_owned()));
    }
    if let Some(rest) = t.strip_prefix("+CLCC:") {
        // <id>,<dir>,<stat>,<mode>,<mpty>[,"<num>",<type>]
        let f: Vec<&str> = rest.split(',').map(str::trim).collect();
        let dir = f.get(1)?.parse::<i32>().ok()?;
        let stat = f.get(2)?.parse::<i32>().ok()?;
        let mode = f.get(3)?.parse::<i32>().ok()?;
        if dir != 0 || mode != 0 {
            return Some(CallUrc::Incoming);
        }
        return Some(CallUrc::State(stat_of(stat)));
    }
    if let Some(rest) = t.strip_prefix("+QIND:") {
        // "ccinfo",<idx>,<dir>,<stat>,<mode>,<mpty>,"<num>",<type>
        let f: Vec<&str> = rest.split(',').map(str::trim).collect();
        if f.first() != Some(&"\"ccinfo\"") {
            return None;
        }
        let dir = f.get(2)?.parse::<i32>().ok()?;
        let stat = f.get(3)?.parse::<i32>().ok()?;
        let mode = f.get(4)?.parse::<i32>().unwrap_or(0);
        if dir != 0 || mode != 0 {
            return Some(CallUrc::Incoming);
        }
        return Some(CallUrc::State(stat_of(stat)));
    }
    if let Some(rest) = t.strip_prefix("+QTONEDET:") {
        let code = rest.trim().parse::<u8>().ok()?;
        let key = char::from(code);
        return is_key(key).then(|| CallUrc::Dtmf {
            key,
            raw: t.to_owned(),
        });
    }
    for prefix in ["+RXDTMF:", "+DTMF:"] {
        if let Some(rest) = t.strip_prefix(prefix) {
            let mut chars = rest.trim().chars();
            let key = chars.next()?.to_ascii_uppercase();
            return (chars.next().is_none() && is_key(key)).then(|| CallUrc::Dtmf {
                key,
                raw: t.to_owned(),
            });
        }
    }
    None
}

fn stat_of(stat: i32) -> CallStat {
    match stat {
        0 => CallStat::Active,
        2 => CallStat::Dialling,
        3 => CallStat::Alerting,
        -1 | 7 => CallStat::Released,
        other => CallStat::Other(other),
    }
}

fn is_key(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D')
}

/// Where a call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `ATD` sent; not answered yet.
    Dialling,
    /// Answered: the prompt plays.
    Active,
    /// We decided to hang up; waiting for the hang-up to be answered.
    HangingUp,
}

/// What happened on one call, for the record and the evidence.
#[derive(Clone, Debug, PartialEq)]
pub struct CallRecord {
    /// The per-modem call number (the `Sent` reference is `call-<n>`).
    pub seq: u64,
    /// What was dialled (after `ATD`).
    pub dialled: String,
    /// When `ATD` went out.
    pub dialled_at: Timestamp,
    /// When the callee's phone was first reported ringing.
    pub ringing_at: Option<Timestamp>,
    /// When the call was answered.
    pub answered_at: Option<Timestamp>,
    /// Length of the prompt, seconds.
    pub prompt_secs: f64,
    /// How far into the prompt playback got, seconds.
    pub listened_secs: f64,
    /// Whether the prompt played to its end at least once.
    pub listened: bool,
    /// Keys received, in order.
    pub digits: String,
    /// How the call ended, in words.
    pub ended: String,
    /// PCM frames handed to the audio port.
    pub frames_sent: u64,
    /// Frames skipped or sent more than one frame late because the task lagged.
    pub late_frames: u64,
    /// Whether the handset reports keys at all.
    pub dtmf_reports: bool,
}

impl CallRecord {
    /// The evidence line of a `Delivered` or `Failed` event.
    pub fn evidence(&self) -> String {
        let digits = if self.digits.is_empty() {
            "none"
        } else {
            &self.digits
        };
        let at = |t: Option<Timestamp>| {
            t.map_or("-".to_owned(), |t| {
                format!("+{:.1} s", t.since(self.dialled_at).as_secs_f64())
            })
        };
        let reached = if self.dtmf_reports {
            ""
        } else {
            "reached (no DTMF); "
        };
        format!(
            "{reached}listened {:.1} s of {:.1} s; digits: {digits}; {}; ringing {}, answered {}; call-{} to {}",
            self.listened_secs,
            self.prompt_secs,
            self.ended,
            at(self.ringing_at),
            at(self.answered_at),
            self.seq,
            self.dialled,
        )
    }
}

/// One call in progress.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) out: Outbound,
    pub(crate) phase: Phase,
    pub(crate) record: CallRecord,
    /// `ATD` has been answered `OK` (the call exists on the modem).
    pub(crate) dial_confirmed: bool,
    pub(crate) ring_deadline: Timestamp,
    pub(crate) max_end: Option<Timestamp>,
    pub(crate) acked: bool,
    prompt: Arc<[i16]>,
    next_frame: u64,
    pos: Option<usize>,
    furthest: usize,
    replayed: bool,
    prompt_done_at: Option<Timestamp>,
    /// Failure decided before the hang-up (retryable, reason), e.g. no answer in time.
    pub(crate) failure: Option<(bool, String)>,
    /// The router cancelled it: it ends here, whatever the network does.
    pub(crate) cancelled: bool,
    /// The network went while it rang: its attempt is queued again, and this call only
    /// waits for the hang-up (it reports nothing).
    pub(crate) detached: bool,
}

impl Call {
    pub(crate) fn new(
        out: Outbound,
        seq: u64,
        dialled: String,
        now: Timestamp,
        ring_timeout: Duration,
        prompt: Arc<[i16]>,
        dtmf_reports: bool,
    ) -> Self {
        let frames = prompt.len().div_ceil(FRAME_SAMPLES);
        Call {
            out,
            phase: Phase::Dialling,
            record: CallRecord {
                seq,
                dialled,
                dialled_at: now,
                ringing_at: None,
                answered_at: None,
                prompt_secs: frames as f64 * 0.02,
                listened_secs: 0.0,
                listened: false,
                digits: String::new(),
                ended: String::new(),
                frames_sent: 0,
                late_frames: 0,
                dtmf_reports,
            },
            dial_confirmed: false,
            ring_deadline: now + ring_timeout,
            max_end: None,
            acked: false,
            prompt,
            next_frame: 0,
            pos: None,
            furthest: 0,
            replayed: false,
            prompt_done_at: None,
            failure: None,
            cancelled: false,
            detached: false,
        }
    }

    /// The callee answered: the prompt starts now.
    pub(crate) fn answer(&mut self, now: Timestamp, max_call: Duration) {
        if self.record.answered_at.is_some() {
            return;
        }
        self.phase = Phase::Active;
        self.record.answered_at = Some(now);
        self.max_end = Some(now + max_call);
        self.pos = (!self.prompt.is_empty()).then_some(0);
    }

    /// When the prompt finished playing, if it did.
    pub(crate) fn prompt_done_at(&self) -> Option<Timestamp> {
        self.prompt_done_at
    }

    /// The next frame's deadline while media flows.
    pub(crate) fn next_frame_at(&self) -> Option<Timestamp> {
        let start = self.record.answered_at?;
        (self.phase == Phase::Active).then(|| start + FRAME * self.next_frame as u32)
    }

    /// Appends every frame due by `now` to `out`.
    pub(crate) fn frames_due(&mut self, now: Timestamp, out: &mut Vec<Vec<u8>>) {
        let Some(start) = self.record.answered_at else {
            return;
        };
        if self.phase != Phase::Active {
            return;
        }
        let due = now.since(start).as_millis() as u64 / 20 + 1;
        if due > self.next_frame + MAX_CATCH_UP {
            let skip = due - self.next_frame - MAX_CATCH_UP;
            self.record.late_frames += skip;
            for k in 0..skip {
                let end = start + FRAME * (self.next_frame + k + 1) as u32;
                self.advance(end);
            }
            self.next_frame += skip;
        }
        if due > self.next_frame + 1 {
            self.record.late_frames += due - self.next_frame - 1;
        }
        while self.next_frame < due {
            let mut frame = Vec::with_capacity(FRAME_BYTES);
            match self.pos {
                Some(p) => {
                    let from = p * FRAME_SAMPLES;
                    for i in 0..FRAME_SAMPLES {
                        let s = self.prompt.get(from + i).copied().unwrap_or(0);
                        frame.extend_from_slice(&s.to_le_bytes());
                    }
                }
                None => frame.resize(FRAME_BYTES, 0),
            }
            out.push(frame);
            self.record.frames_sent += 1;
            self.next_frame += 1;
            let end = start + FRAME * self.next_frame as u32;
            self.advance(end);
        }
    }

    /// Moves the prompt one frame on; `at` is when that frame finishes playing.
    fn advance(&mut self, at: Timestamp) {
        let Some(p) = self.pos else { return };
        let next = p + 1;
        self.furthest = self.furthest.max(next);
        if next * FRAME_SAMPLES >= self.prompt.len() {
            self.pos = None;
            self.record.listened = true;
            self.prompt_done_at = Some(at);
        } else {
            self.pos = Some(next);
        }
    }

    /// A key other than the ack: play the prompt again from the start, once per call.
    pub(crate) fn replay(&mut self) {
        if !self.replayed && !self.prompt.is_empty() && self.phase == Phase::Active {
            self.replayed = true;
            self.pos = Some(0);
            self.prompt_done_at = None;
        }
    }

    /// Stops the media and fixes the record's figures.
    pub(crate) fn end_media(&mut self, why: &str) {
        if self.record.ended.is_empty() {
            self.record.ended = why.to_owned();
        }
        self.record.listened_secs = self.furthest as f64 * 0.02;
    }

    /// Seconds since the answer (0 before it).
    pub(crate) fn secs_since_answer(&self, now: Timestamp) -> f64 {
        self.record
            .answered_at
            .map_or(0.0, |a| now.since(a).as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_core::{Address, AttemptId, PhoneNumber};

    #[test]
    fn every_family_s_notifications_parse() {
        assert_eq!(
            parse_call_urc("+CLCC: 1,0,3,0,0,\"13800138000\",129"),
            Some(CallUrc::State(CallStat::Alerting))
        );
        assert_eq!(
            parse_call_urc("+QIND: \"ccinfo\",1,0,0,0,0,\"13800138000\",129"),
            Some(CallUrc::State(CallStat::Active))
        );
        assert_eq!(
            parse_call_urc("+QIND: \"ccinfo\",1,0,-1,0,0,\"13800138000\",129"),
            Some(CallUrc::State(CallStat::Released))
        );
        assert_eq!(parse_call_urc("+QIND: \"smsfull\""), None);
        assert_eq!(
            parse_call_urc("+CLCC: 1,1,4,0,0,\"13800138000\",129"),
            Some(CallUrc::Incoming)
        );
        assert_eq!(parse_call_urc("VOICE CALL: BEGIN"), Some(CallUrc::Begin));
        assert_eq!(
            parse_call_urc("VOICE CALL: END: 000012"),
            Some(CallUrc::End("000012".into()))
        );
        assert_eq!(
            parse_call_urc("BUSY"),
            Some(CallUrc::Result(CallResult::Busy))
        );
        for (line, key) in [
            ("+QTONEDET: 49", '1'),
            ("+RXDTMF: 1", '1'),
            ("+DTMF:#", '#'),
            ("+QTONEDET: 35", '#'),
        ] {
            assert_eq!(
                parse_call_urc(line),
                Some(CallUrc::Dtmf {
                    key,
                    raw: line.into()
                })
            );
        }
        // Junk in a call line is not guessed at.
        assert_eq!(parse_call_urc("+QTONEDET: 300"), None);
        assert_eq!(parse_call_urc("+QTONEDET: 10"), None);
        assert_eq!(parse_call_urc("+CLCC: x"), None);
        assert_eq!(parse_call_urc("+RXDTMF: 12"), None);
    }

    #[test]
    fn frames_are_paced_from_the_answer_and_a_late_task_catches_up_boundedly() {
        let t0 = Timestamp(1_000_000);
        let out = Outbound {
            attempt: AttemptId(1),
            to: Address::Phone(PhoneNumber::parse("+8613800138000", "86").unwrap()),
            text: "x".into(),
            want_report: false,
        };
        let prompt = ToneSource::new(1.0).render("");
        let mut c = Call::new(
            out,
            1,
            "13800138000".into(),
            t0,
            Duration::from_secs(30),
            prompt,
            true,
        );
        c.answer(t0, Duration::from_secs(180));
        let mut frames = Vec::new();
        c.frames_due(t0, &mut frames);
        assert_eq!(frames.len(), 1, "the first frame goes at once");
        assert!(frames.iter().all(|f| f.len() == FRAME_BYTES));
        assert_eq!(c.next_frame_at(), Some(t0 + FRAME));
        c.frames_due(t0 + Duration::from_millis(39), &mut frames);
        assert_eq!(frames.len(), 2);
        // 500 ms late: at most MAX_CATCH_UP frames back to back, the rest skipped.
        c.frames_due(t0 + Duration::from_millis(540), &mut frames);
        assert_eq!(frames.len(), 2 + MAX_CATCH_UP as usize);
        assert!(c.record.late_frames > 0);
        c.frames_due(t0 + Duration::from_millis(1000), &mut frames);
        assert_eq!(c.prompt_done_at(), Some(t0 + Duration::from_secs(1)));
        c.end_media("test");
        assert!(c.record.listened);
        assert!((c.record.listened_secs - 1.0).abs() < 1e-9);
    }
}
