//! The local loudspeaker as a sans-IO state machine: one output (the sound card feeding
//! the village amplifier) serving one speaker group.
//!
//! Inputs, each with `now`: [`LocalAudio::submit`], [`LocalAudio::handle_rendered`],
//! [`LocalAudio::handle_card_opened`], [`LocalAudio::handle_card_failed`],
//! [`LocalAudio::handle_timeout`]. Outputs: [`LocalAudio::poll_render`],
//! [`LocalAudio::poll_sink`] (what to queue on the card), [`LocalAudio::poll_event`],
//! [`LocalAudio::poll_timeout`].
//!
//! **Programme.** The same as the RTP driver's, from the same pieces of
//! [`crate::proto`]: the text is read by [`Announcement`], rendered as the same
//! [`RenderJob`] (siren and speech, repeated), a live warning interrupts a drill and a
//! red programme a lower grade of its kind ([`interrupts`]; the interrupted one waits and
//! plays again from its start), a drill never interrupts a live warning, others wait in a
//! [`Lineup`], and a cancel stops the programme and plays the short cancellation where it
//! was heard.
//!
//! **Pacing.** The card plays at its own pace; the driver queues 100 ms chunks at most
//! [`LEAD`] ahead of when they are heard, so a red alert or a cancel cuts in within a
//! fraction of a second instead of after everything already handed to the card. Chunk
//! `n` is heard at `start + n × CHUNK`, computed from the start, never accumulated. When
//! the host stalled longer than [`MAX_LATE`] the card ran dry: the rest is re-anchored at
//! `now` rather than pushed in a burst.
//!
//! **Evidence.** `Sent` when a programme first starts; `Delivered` when it has played to
//! its end, with "played N s on CARD" — a local amplifier gives no reception report, so
//! that is all the evidence there is, and the evidence says so. A card that fails fails
//! every attempt it held as retryable; while there is no card, sends fail at once as
//! retryable, so the router can reach the village another way.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tocsin_channel::{DriverCommand, DriverEvent, Health, Outbound};
use tocsin_core::{Address, AttemptId, Grade, Timestamp};
use tocsin_voice::Pcm;

use super::config::LocalAudioConfig;
use super::sink::SinkError;
use crate::proto::{
    Announcement, BROADCAST_GROUP, Lineup, Precedence, ProgrammeId, RenderJob, RenderRequest,
    interruption_reason, interrupts,
};

/// How much audio one sink write carries.
pub const CHUNK: Duration = Duration::from_millis(100);
/// How far ahead of hearing it audio is queued on the card.
pub const LEAD: Duration = Duration::from_millis(200);
/// How far behind the driver may fall before it re-anchors the programme.
pub const MAX_LATE: Duration = Duration::from_millis(500);

/// What to do with the sound card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkOp {
    /// Queue these mono samples after what is queued.
    Play {
        /// Samples per second.
        rate: u32,
        /// The samples.
        samples: Vec<i16>,
    },
    /// Drop what is queued and not yet heard (a red alert or a cancel cuts in).
    Stop,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Card {
    /// Not opened yet: programmes wait for it.
    Opening,
    /// Open, with its name.
    Up(String),
    /// Could not be opened or failed; why.
    Down(String),
}

#[derive(Debug)]
struct Programme {
    attempt: Option<AttemptId>,
    grade: Grade,
    exercise: bool,
    /// Order of arrival, to keep equal grades first come first served.
    order: u64,
    /// Set once rendered.
    audio: Option<Arc<Pcm>>,
    /// Has played at least once (`Sent` reported; it was heard).
    started: bool,
    /// Phrases that could not be spoken.
    missing: Vec<String>,
}

impl Programme {
    fn precedence(&self) -> Precedence {
        Precedence::of(self.grade, self.exercise)
    }
}

#[derive(Debug)]
struct Playing {
    programme: ProgrammeId,
    audio: Arc<Pcm>,
    /// When chunk `anchor` is heard (moved after a stall).
    start: Timestamp,
    anchor: u64,
    /// The next chunk to queue.
    next: u64,
    chunks: u64,
    chunk_len: usize,
}

impl Playing {
    /// When chunk `n` is heard.
    fn heard_at(&self, n: u64) -> Timestamp {
        let frames = u32::try_from(n.saturating_sub(self.anchor)).unwrap_or(u32::MAX);
        self.start.plus(CHUNK.saturating_mul(frames))
    }

    /// When the last sample has been heard.
    fn end(&self) -> Timestamp {
        let from = usize::try_from(self.anchor)
            .unwrap_or(usize::MAX)
            .saturating_mul(self.chunk_len);
        let left = self.audio.samples.len().saturating_sub(from) as u64;
        let rate = u64::from(self.audio.rate.max(1));
        // Rounded up: Delivered never comes before the card can have played it all.
        self.start
            .plus(Duration::from_millis((left * 1000).div_ceil(rate)))
    }
}

/// The local loudspeaker's state machine.
#[derive(Debug)]
pub struct LocalAudio {
    cfg: LocalAudioConfig,
    card: Card,
    programmes: HashMap<ProgrammeId, Programme>,
    lineup: Lineup,
    playing: Option<Playing>,
    next_id: u64,
    renders: VecDeque<RenderRequest>,
    ops: VecDeque<SinkOp>,
    events: VecDeque<DriverEvent>,
    health: Health,
}

impl LocalAudio {
    /// An output for a validated configuration; the card is not open yet.
    pub fn new(cfg: LocalAudioConfig, _now: Timestamp) -> Self {
        LocalAudio {
            cfg,
            card: Card::Opening,
            programmes: HashMap::new(),
            lineup: Lineup::default(),
            playing: None,
            next_id: 1,
            renders: VecDeque::new(),
            ops: VecDeque::new(),
            events: VecDeque::new(),
            health: Health::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LocalAudioConfig {
        &self.cfg
    }

    /// Programmes not finished (rendering, waiting or playing).
    pub fn pending(&self) -> usize {
        self.programmes.len()
    }

    /// What plays now: its attempt (none for a cancellation message) and grade.
    pub fn now_playing(&self) -> Option<(Option<AttemptId>, Grade)> {
        let p = self.programmes.get(&self.playing.as_ref()?.programme)?;
        Some((p.attempt, p.grade))
    }

    /// The card is open as `name`: waiting programmes play.
    pub fn handle_card_opened(&mut self, now: Timestamp, name: &str) {
        self.card = Card::Up(name.to_owned());
        self.health.up = true;
        self.health.registered = true;
        self.health.last_error = None;
        self.events
            .push_back(DriverEvent::Health(self.health.clone()));
        self.start_next(now);
    }

    /// The card could not be opened, or failed while open: every attempt held fails as
    /// retryable (nothing here can play it), and sends fail at once until it is back.
    pub fn handle_card_failed(&mut self, _now: Timestamp, error: &SinkError) {
        let reason = error.to_string();
        self.card = Card::Down(reason.clone());
        self.health.up = false;
        self.health.registered = false;
        self.health.last_error = Some(reason.clone());
        self.events
            .push_back(DriverEvent::Health(self.health.clone()));
        self.playing = None;
        self.lineup = Lineup::default();
        self.renders.clear();
        let mut held: Vec<(u64, AttemptId)> = self
            .programmes
            .drain()
            .filter_map(|(_, p)| p.attempt.map(|a| (p.order, a)))
            .collect();
        held.sort_unstable();
        for (_, attempt) in held {
            self.events.push_back(DriverEvent::Failed {
                attempt,
                retryable: true,
                reason: reason.clone(),
            });
        }
    }

    /// A command from the router.
    pub fn submit(&mut self, now: Timestamp, cmd: DriverCommand) {
        match cmd {
            DriverCommand::Send(out) => self.on_send(out),
            DriverCommand::Cancel(attempt) => self.on_cancel(now, attempt),
            // A loudspeaker holds no inbound messages.
            DriverCommand::SendFrame(f) => self.events.push_back(f.refused()),
            DriverCommand::Release(_) => {}
        }
    }

    fn fresh_id(&mut self) -> ProgrammeId {
        let id = ProgrammeId(self.next_id);
        self.next_id += 1;
        id
    }

    fn fail(&mut self, attempt: AttemptId, retryable: bool, reason: String) {
        self.events.push_back(DriverEvent::Failed {
            attempt,
            retryable,
            reason,
        });
    }

    fn on_send(&mut self, out: Outbound) {
        // The address first: another village is permanent, no card or a full queue not.
        match &out.to {
            Address::Speaker(g) if *g == self.cfg.group || g == BROADCAST_GROUP => {}
            Address::Speaker(g) => {
                let reason = format!(
                    "no speaker group {g:?} on this sound card (it serves {:?})",
                    self.cfg.group
                );
                return self.fail(out.attempt, false, reason);
            }
            other => {
                let reason = format!("a loudspeaker plays only to a speaker group, not to {other}");
                return self.fail(out.attempt, false, reason);
            }
        }
        if let Card::Down(reason) = &self.card {
            let reason = reason.clone();
            return self.fail(out.attempt, true, reason);
        }
        if self.programmes.len() >= self.cfg.queue_limit {
            let reason = format!(
                "speaker queue full ({} programmes waiting)",
                self.programmes.len()
            );
            return self.fail(out.attempt, true, reason);
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
                order: id.0,
                audio: None,
                started: false,
                missing: Vec::new(),
            },
        );
    }

    fn on_cancel(&mut self, now: Timestamp, attempt: AttemptId) {
        let Some(id) = self
            .programmes
            .iter()
            .find(|(_, p)| p.attempt == Some(attempt))
            .map(|(&id, _)| id)
        else {
            return; // Finished or unknown: it was reported as usual.
        };
        let Some(p) = self.programmes.remove(&id) else {
            return;
        };
        self.lineup.remove(id);
        let was_playing = self.playing.as_ref().is_some_and(|s| s.programme == id);
        if was_playing {
            self.playing = None;
            self.ops.push_back(SinkOp::Stop);
        }
        if p.started {
            // It was heard: say that it is cancelled, ahead of what came after it.
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
                    order: p.order,
                    audio: None,
                    started: false,
                    missing: Vec::new(),
                },
            );
        } else {
            self.fail(attempt, false, "cancelled before it played".to_owned());
        }
        if was_playing {
            self.start_next(now);
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
            return; // Cancelled meanwhile, or the card failed.
        };
        if p.audio.is_some() {
            return;
        }
        let pcm = match audio {
            Ok(pcm) if !pcm.samples.is_empty() && pcm.rate > 0 => pcm,
            other => {
                let reason = match other {
                    Err(e) => format!("could not render the programme: {e}"),
                    Ok(_) => "the programme rendered to no audio".to_owned(),
                };
                let attempt = p.attempt;
                self.programmes.remove(&id);
                if let Some(attempt) = attempt {
                    self.fail(attempt, true, reason);
                }
                return;
            }
        };
        p.audio = Some(Arc::new(pcm));
        p.missing = missing;
        let (precedence, order) = (p.precedence(), p.order);
        let playing = self
            .playing
            .as_ref()
            .and_then(|s| self.programmes.get(&s.programme))
            .map(Programme::precedence);
        match playing {
            // No card yet: wait for it.
            _ if !matches!(self.card, Card::Up(_)) => self.lineup.insert(precedence, order, id),
            None => self.start(now, id),
            Some(pp) if interrupts(precedence, pp) => {
                if let Some(old) = self.playing.take() {
                    tracing::info!(
                        programme = old.programme.0,
                        "{}",
                        interruption_reason(precedence, pp)
                    );
                    self.ops.push_back(SinkOp::Stop);
                    if let Some(op) = self.programmes.get(&old.programme) {
                        self.lineup.insert(op.precedence(), op.order, old.programme);
                    }
                }
                self.start(now, id);
            }
            Some(_) => self.lineup.insert(precedence, order, id),
        }
    }

    fn start_next(&mut self, now: Timestamp) {
        if !matches!(self.card, Card::Up(_)) || self.playing.is_some() {
            return;
        }
        if let Some(id) = self.lineup.pop() {
            self.start(now, id);
        }
    }

    fn start(&mut self, now: Timestamp, id: ProgrammeId) {
        let Card::Up(card) = &self.card else {
            return;
        };
        let Some(p) = self.programmes.get_mut(&id) else {
            return;
        };
        let Some(audio) = p.audio.clone() else {
            return;
        };
        let chunk_len =
            usize::try_from(u64::from(audio.rate).saturating_mul(CHUNK.as_millis() as u64) / 1000)
                .unwrap_or(usize::MAX)
                .max(1);
        let chunks = audio.samples.len().div_ceil(chunk_len) as u64;
        self.playing = Some(Playing {
            programme: id,
            audio,
            start: now,
            anchor: 0,
            next: 0,
            chunks,
            chunk_len,
        });
        if !p.started {
            p.started = true;
            self.health.sent += 1;
            if let Some(attempt) = p.attempt {
                let mut reference = format!("playing on {card}");
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
        self.pump(now);
    }

    /// Queues what is due on the card and ends a programme that has been heard through.
    fn pump(&mut self, now: Timestamp) {
        let Some(pl) = self.playing.as_mut() else {
            return;
        };
        if pl.next < pl.chunks && now.since(pl.heard_at(pl.next)) > MAX_LATE {
            pl.anchor = pl.next;
            pl.start = now;
        }
        while pl.next < pl.chunks && pl.heard_at(pl.next) <= now.plus(LEAD) {
            let from = usize::try_from(pl.next)
                .unwrap_or(usize::MAX)
                .saturating_mul(pl.chunk_len);
            let to = from
                .saturating_add(pl.chunk_len)
                .min(pl.audio.samples.len());
            let samples = pl.audio.samples.get(from..to).unwrap_or(&[]).to_vec();
            self.ops.push_back(SinkOp::Play {
                rate: pl.audio.rate,
                samples,
            });
            pl.next += 1;
        }
        if pl.next < pl.chunks || now < pl.end() {
            return;
        }
        let played = pl.audio.duration();
        let id = pl.programme;
        self.playing = None;
        if let Some(attempt) = self.programmes.remove(&id).and_then(|p| p.attempt) {
            let card = match &self.card {
                Card::Up(name) => name.as_str(),
                _ => "the sound card",
            };
            self.events.push_back(DriverEvent::Delivered {
                attempt,
                evidence: format!(
                    "played {:.1} s on {card}; a local amplifier sends no reception report",
                    played.as_secs_f64()
                ),
            });
        }
        // A programme just started cannot have ended (its audio is not empty), so this
        // recursion through `start` is one level deep.
        self.start_next(now);
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.pump(now);
    }

    /// The next audio to render.
    pub fn poll_render(&mut self) -> Option<RenderRequest> {
        self.renders.pop_front()
    }

    /// The next thing to do with the card.
    pub fn poll_sink(&mut self) -> Option<SinkOp> {
        self.ops.pop_front()
    }

    /// The next fact for the router.
    pub fn poll_event(&mut self) -> Option<DriverEvent> {
        self.events.pop_front()
    }

    /// When something is next due: a chunk to queue, or the end of a programme.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let pl = self.playing.as_ref()?;
        if pl.next < pl.chunks {
            let lead = i64::try_from(LEAD.as_millis()).unwrap_or(0);
            Some(Timestamp(pl.heard_at(pl.next).0.saturating_sub(lead)))
        } else {
            Some(pl.end())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_core::PhoneNumber;

    const T0: Timestamp = Timestamp(1_700_000_000_000);

    fn la() -> LocalAudio {
        let mut cfg = LocalAudioConfig::new("T05-V03");
        cfg.repeat = 1;
        let mut la = LocalAudio::new(cfg, T0);
        la.handle_card_opened(T0, "memory");
        events(&mut la);
        la
    }

    fn send_to(attempt: u64, to: Address, text: &str) -> DriverCommand {
        DriverCommand::Send(Outbound {
            attempt: AttemptId(attempt),
            to,
            text: text.to_owned(),
            want_report: false,
        })
    }

    fn send(attempt: u64, text: &str) -> DriverCommand {
        send_to(attempt, Address::Speaker("T05-V03".into()), text)
    }

    fn events(la: &mut LocalAudio) -> Vec<DriverEvent> {
        std::iter::from_fn(|| la.poll_event()).collect()
    }

    /// `ms` of audio at 8 kHz whose every sample is `mark`, so the tape shows which
    /// programme played.
    fn tone(ms: usize, mark: i16) -> Pcm {
        Pcm {
            rate: 8000,
            samples: vec![mark; ms * 8],
        }
    }

    /// Renders every pending job: programmes as `ms` of their grade's mark (blue 1 …
    /// red 4), the cancellation as 300 ms of 9.
    fn render_all(la: &mut LocalAudio, now: Timestamp, ms: usize) -> Vec<RenderJob> {
        let mut jobs = Vec::new();
        while let Some(r) = la.poll_render() {
            let pcm = match &r.job {
                RenderJob::Programme { grade, .. } => tone(ms, *grade as i16 + 1),
                RenderJob::Cancellation { .. } => tone(300, 9),
            };
            la.handle_rendered(now, r.id, Ok(pcm), Vec::new());
            jobs.push(r.job);
        }
        jobs
    }

    /// What the card was asked and what the router was told, each with when.
    type Timeline = (Vec<(Timestamp, SinkOp)>, Vec<(Timestamp, DriverEvent)>);

    /// Runs the virtual clock until nothing is due; returns what the card was asked,
    /// each with when, and the events with when.
    fn run(la: &mut LocalAudio, mut now: Timestamp) -> Timeline {
        let (mut ops, mut evs) = (Vec::new(), Vec::new());
        loop {
            ops.extend(std::iter::from_fn(|| la.poll_sink()).map(|o| (now, o)));
            evs.extend(std::iter::from_fn(|| la.poll_event()).map(|e| (now, e)));
            let Some(t) = la.poll_timeout() else { break };
            now = t.max(now);
            la.handle_timeout(now);
        }
        (ops, evs)
    }

    /// The marks of the samples played, run-length: (mark, milliseconds).
    fn heard(ops: &[(Timestamp, SinkOp)]) -> Vec<(i16, usize)> {
        let mut out: Vec<(i16, usize)> = Vec::new();
        for (_, op) in ops {
            if let SinkOp::Play { samples, .. } = op {
                for &s in samples {
                    match out.last_mut() {
                        Some((m, n)) if *m == s => *n += 1,
                        _ => out.push((s, 1)),
                    }
                }
            }
        }
        out.into_iter().map(|(m, n)| (m, n / 8)).collect()
    }

    #[test]
    fn a_programme_plays_at_real_time_pace_and_is_delivered_at_its_end() {
        let mut la = la();
        la.submit(T0, send(1, "【黄色预警】大风 回复 1 K7XT 确认"));
        let jobs = render_all(&mut la, T0, 2_560);
        assert_eq!(
            jobs,
            vec![RenderJob::Programme {
                grade: Grade::Yellow,
                text: "黄色预警，大风".into(),
                exercise: false,
                repeat: 1,
                pause: Duration::from_secs(10),
            }],
            "the same programme the RTP speakers render"
        );
        let (ops, evs) = run(&mut la, T0);
        // Every sample once, in order, in 100 ms chunks (the last one short).
        assert_eq!(heard(&ops), vec![(Grade::Yellow as i16 + 1, 2_560)]);
        assert_eq!(ops.len(), 26);
        // Never more than LEAD ahead of the card: chunk n goes out at n × 100 ms − 200 ms.
        for (n, (at, _)) in ops.iter().enumerate() {
            let due = (n as i64 * 100 - 200).max(0);
            assert_eq!(at.0 - T0.0, due, "chunk {n}");
        }
        let evs: Vec<(i64, DriverEvent)> = evs.into_iter().map(|(t, e)| (t.0 - T0.0, e)).collect();
        assert_eq!(
            evs,
            vec![
                (
                    0,
                    DriverEvent::Accepted {
                        attempt: AttemptId(1)
                    }
                ),
                (
                    0,
                    DriverEvent::Sent {
                        attempt: AttemptId(1),
                        reference: "playing on memory".into()
                    }
                ),
                (
                    2_560,
                    DriverEvent::Delivered {
                        attempt: AttemptId(1),
                        evidence:
                            "played 2.6 s on memory; a local amplifier sends no reception report"
                                .into()
                    }
                ),
            ]
        );
        assert_eq!(la.pending(), 0);
        assert_eq!(la.poll_timeout(), None);
    }

    #[test]
    fn accepted_then_sent_when_playback_starts_and_programmes_wait_by_grade() {
        let mut la = la();
        la.submit(T0, send(1, "【蓝色预警】降温"));
        la.submit(T0, send(2, "【蓝色预警】降温"));
        la.submit(T0, send(3, "【橙色预警】暴雨"));
        let ev = events(&mut la);
        assert_eq!(
            ev,
            (1..=3)
                .map(|a| DriverEvent::Accepted {
                    attempt: AttemptId(a)
                })
                .collect::<Vec<_>>()
        );
        render_all(&mut la, T0, 500);
        assert_eq!(la.now_playing(), Some((Some(AttemptId(1)), Grade::Blue)));
        let (ops, evs) = run(&mut la, T0);
        // Blue 1 was playing; orange goes next (not red: no interruption), then blue 2.
        assert_eq!(heard(&ops), vec![(1, 500), (3, 500), (1, 500)]);
        let order: Vec<(i64, AttemptId, &str)> = evs
            .iter()
            .map(|(t, e)| match e {
                DriverEvent::Sent { attempt, reference } => {
                    assert_eq!(reference, "playing on memory");
                    (t.0 - T0.0, *attempt, "sent")
                }
                DriverEvent::Delivered { attempt, .. } => (t.0 - T0.0, *attempt, "delivered"),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            order,
            vec![
                (0, AttemptId(1), "sent"),
                (500, AttemptId(1), "delivered"),
                (500, AttemptId(3), "sent"),
                (1_000, AttemptId(3), "delivered"),
                (1_000, AttemptId(2), "sent"),
                (1_500, AttemptId(2), "delivered"),
            ]
        );
    }

    #[test]
    fn red_cuts_in_and_the_interrupted_programme_plays_again_from_its_start() {
        let mut la = la();
        la.submit(T0, send(1, "【橙色预警】暴雨"));
        render_all(&mut la, T0, 1_000);
        assert!(matches!(
            &events(&mut la)[..],
            [
                DriverEvent::Accepted { .. },
                DriverEvent::Sent {
                    attempt: AttemptId(1),
                    ..
                }
            ]
        ));
        let t1 = T0 + Duration::from_millis(400);
        let (before, _) = {
            let mut ops = Vec::new();
            let mut now = T0;
            while now < t1 {
                ops.extend(std::iter::from_fn(|| la.poll_sink()).map(|o| (now, o)));
                now = la.poll_timeout().unwrap();
                la.handle_timeout(now);
            }
            ops.extend(std::iter::from_fn(|| la.poll_sink()).map(|o| (now, o)));
            (ops, ())
        };
        // Orange queued up to 400 ms + LEAD.
        assert_eq!(heard(&before), vec![(3, 700)]);
        la.submit(t1, send(2, "【红色预警】山洪"));
        render_all(&mut la, t1, 600);
        assert_eq!(la.now_playing(), Some((Some(AttemptId(2)), Grade::Red)));
        // The card drops the queued orange at once, then red.
        assert_eq!(la.poll_sink(), Some(SinkOp::Stop));
        let (ops, evs) = run(&mut la, t1);
        assert_eq!(
            heard(&ops),
            vec![(4, 600), (3, 1_000)],
            "red, then orange whole"
        );
        let outcome: Vec<(i64, DriverEvent)> = evs
            .into_iter()
            .filter(|(_, e)| !matches!(e, DriverEvent::Accepted { .. }))
            .map(|(t, e)| (t.0 - T0.0, e))
            .collect();
        assert_eq!(outcome.len(), 3, "{outcome:?}");
        assert!(matches!(
            outcome[0],
            (
                400,
                DriverEvent::Sent {
                    attempt: AttemptId(2),
                    ..
                }
            )
        ));
        assert!(matches!(
            outcome[1],
            (
                1_000,
                DriverEvent::Delivered {
                    attempt: AttemptId(2),
                    ..
                }
            )
        ));
        // Orange was Sent once, at T0; it is delivered only when heard whole.
        assert!(
            matches!(&outcome[2], (2_000, DriverEvent::Delivered { attempt: AttemptId(1), evidence }) if evidence.starts_with("played 1.0 s on memory"))
        );
    }

    #[test]
    fn red_does_not_cut_red_and_lower_grades_never_cut_in() {
        let mut la = la();
        la.submit(T0, send(1, "【红色预警】山洪"));
        render_all(&mut la, T0, 500);
        la.submit(T0, send(2, "【红色预警】泥石流"));
        la.submit(T0, send(3, "【黄色预警】大风"));
        render_all(&mut la, T0, 500);
        assert_eq!(la.now_playing(), Some((Some(AttemptId(1)), Grade::Red)));
        let (ops, _) = run(&mut la, T0);
        assert!(!ops.iter().any(|(_, o)| *o == SinkOp::Stop));
        assert_eq!(heard(&ops), vec![(4, 1_000), (2, 500)]);
    }

    #[test]
    fn a_live_warning_cuts_a_drill_and_a_drill_waits_behind_every_live_one() {
        // Marks: the grade (blue 1 … red 4), plus 10 for a drill.
        let render = |la: &mut LocalAudio, now: Timestamp, ms: usize| {
            while let Some(r) = la.poll_render() {
                let mark = match &r.job {
                    RenderJob::Programme {
                        grade, exercise, ..
                    } => *grade as i16 + 1 + if *exercise { 10 } else { 0 },
                    RenderJob::Cancellation { .. } => 9,
                };
                la.handle_rendered(now, r.id, Ok(tone(ms, mark)), Vec::new());
            }
        };
        let mut la = la();
        la.submit(T0, send(1, "【演练】【红色预警】山洪"));
        render(&mut la, T0, 1_000);
        let t1 = T0 + Duration::from_millis(400);
        while let Some(t) = la.poll_timeout().filter(|t| *t < t1) {
            la.handle_timeout(t);
        }
        while la.poll_sink().is_some() {}
        // Live blue cuts the red drill; an orange drill and a live yellow that come next
        // wait, the live one first.
        la.submit(t1, send(2, "【蓝色预警】降温"));
        render(&mut la, t1, 600);
        assert_eq!(la.now_playing(), Some((Some(AttemptId(2)), Grade::Blue)));
        assert_eq!(la.poll_sink(), Some(SinkOp::Stop));
        la.submit(t1, send(3, "  【演练】【橙色预警】泥石流"));
        la.submit(t1, send(4, "【黄色预警】大风，请按演练路线转移"));
        render(&mut la, t1, 500);
        assert_eq!(la.now_playing(), Some((Some(AttemptId(2)), Grade::Blue)));
        let (ops, evs) = run(&mut la, t1);
        assert!(
            !ops.iter().any(|(_, o)| *o == SinkOp::Stop),
            "nothing else cuts in"
        );
        assert_eq!(
            heard(&ops),
            vec![(1, 600), (2, 500), (14, 1_000), (13, 500)],
            "live blue, live yellow (演练 in its body is no drill), then the drills"
        );
        let sent: Vec<AttemptId> = evs
            .iter()
            .filter_map(|(_, e)| match e {
                DriverEvent::Sent { attempt, .. } => Some(*attempt),
                _ => None,
            })
            .collect();
        // The interrupted drill was Sent once, when first heard; the waiting one only
        // when it played.
        assert_eq!(
            sent,
            vec![AttemptId(1), AttemptId(2), AttemptId(4), AttemptId(3)]
        );
    }

    #[test]
    fn cancel_before_playing_fails_and_cancel_while_playing_says_so_on_the_horn() {
        let mut la = la();
        la.submit(T0, send(1, "【演练】【黄色预警】大风"));
        // Another drill: a live warning would cut the drill off.
        la.submit(T0, send(2, "【演练】【黄色预警】大风"));
        render_all(&mut la, T0, 1_000);
        events(&mut la);
        // 2 waits behind 1; cancelled, it fails for good and is never heard.
        la.submit(T0, DriverCommand::Cancel(AttemptId(2)));
        assert_eq!(
            events(&mut la),
            vec![DriverEvent::Failed {
                attempt: AttemptId(2),
                retryable: false,
                reason: "cancelled before it played".into()
            }]
        );
        let t1 = T0 + Duration::from_millis(300);
        la.handle_timeout(t1);
        la.submit(t1, DriverCommand::Cancel(AttemptId(1)));
        assert_eq!(la.now_playing(), None);
        let jobs = render_all(&mut la, t1, 0);
        assert_eq!(jobs, vec![RenderJob::Cancellation { exercise: true }]);
        assert_eq!(la.now_playing(), Some((None, Grade::Yellow)));
        let (ops, evs) = run(&mut la, t1);
        // 1 was queued up to 300 ms + LEAD, then dropped; the cancellation plays.
        let stop = ops.iter().position(|(_, o)| *o == SinkOp::Stop).unwrap();
        assert_eq!(heard(&ops[..stop]), vec![(2, 600)]);
        assert_eq!(heard(&ops[stop..]), vec![(9, 300)]);
        assert!(
            evs.is_empty(),
            "a cancelled attempt that was heard gets no outcome: {evs:?}"
        );
        assert_eq!(la.pending(), 0);
        // A cancel for something finished or unknown changes nothing.
        la.submit(t1, DriverCommand::Cancel(AttemptId(7)));
        assert!(events(&mut la).is_empty() && la.poll_render().is_none());
    }

    #[test]
    fn a_failing_card_fails_what_it_held_as_retryable_and_refuses_sends_until_back() {
        let mut la = la();
        la.submit(T0, send(1, "【橙色预警】暴雨"));
        la.submit(T0, send(2, "【橙色预警】暴雨"));
        render_all(&mut la, T0, 1_000);
        la.submit(T0, send(3, "【橙色预警】暴雨")); // still rendering
        events(&mut la);
        let t1 = T0 + Duration::from_millis(300);
        la.handle_timeout(t1);
        let err = SinkError::Failed {
            card: "memory".into(),
            reason: "device unplugged".into(),
        };
        la.handle_card_failed(t1, &err);
        let ev = events(&mut la);
        assert!(
            matches!(&ev[0], DriverEvent::Health(h) if !h.up && h.last_error.as_deref() == Some("sound card memory: device unplugged"))
        );
        let failed: Vec<AttemptId> = ev[1..]
            .iter()
            .map(|e| match e {
                DriverEvent::Failed {
                    attempt,
                    retryable: true,
                    reason,
                } if reason == "sound card memory: device unplugged" => *attempt,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(failed, vec![AttemptId(1), AttemptId(2), AttemptId(3)]);
        assert_eq!(la.pending(), 0);
        assert_eq!(la.poll_timeout(), None);
        // Renders not started are dropped; a new send fails at once, retryable.
        assert!(la.poll_render().is_none());
        la.submit(t1, send(4, "x"));
        assert!(matches!(
            &events(&mut la)[..],
            [DriverEvent::Failed {
                attempt: AttemptId(4),
                retryable: true,
                ..
            }]
        ));
        // Back: sends play again.
        la.handle_card_opened(t1, "memory");
        la.submit(t1, send(5, "x"));
        render_all(&mut la, t1, 100);
        let ev = events(&mut la);
        assert!(matches!(&ev[0], DriverEvent::Health(h) if h.up && h.last_error.is_none()));
        assert!(matches!(
            ev[2],
            DriverEvent::Sent {
                attempt: AttemptId(5),
                ..
            }
        ));
    }

    #[test]
    fn no_sound_card_at_start_is_health_down_and_sends_fail_retryable() {
        let mut la = LocalAudio::new(LocalAudioConfig::new("T05-V03"), T0);
        // Before the first open, sends wait for the card.
        la.submit(T0, send(1, "【红色预警】山洪"));
        render_all(&mut la, T0, 100);
        assert_eq!(la.now_playing(), None);
        la.handle_card_failed(T0, &SinkError::NoSoundCard);
        let ev = events(&mut la);
        assert_eq!(
            ev[1],
            DriverEvent::Health(Health {
                up: false,
                last_error: Some("no sound card".into()),
                ..Health::default()
            })
        );
        assert_eq!(
            ev[2],
            DriverEvent::Failed {
                attempt: AttemptId(1),
                retryable: true,
                reason: "no sound card".into()
            }
        );
        la.submit(T0, send(2, "【红色预警】山洪"));
        la.handle_timeout(T0 + Duration::from_secs(60));
        assert_eq!(
            events(&mut la),
            vec![DriverEvent::Failed {
                attempt: AttemptId(2),
                retryable: true,
                reason: "no sound card".into()
            }]
        );
        assert!(la.poll_sink().is_none() && la.poll_timeout().is_none());
    }

    #[test]
    fn another_group_or_kind_of_address_fails_for_good_and_broadcast_plays() {
        let mut la = la();
        la.submit(T0, send_to(1, Address::Speaker("T05-V04".into()), "x"));
        la.submit(
            T0,
            send_to(
                2,
                Address::Phone(PhoneNumber::parse("+8613800138000", "86").unwrap()),
                "x",
            ),
        );
        la.submit(T0, send_to(3, Address::Speaker("*".into()), "x"));
        let ev = events(&mut la);
        assert!(
            matches!(&ev[0], DriverEvent::Failed { attempt: AttemptId(1), retryable: false, reason } if reason.contains("\"T05-V04\"") && reason.contains("\"T05-V03\"")),
            "{ev:?}"
        );
        assert!(
            matches!(&ev[1], DriverEvent::Failed { attempt: AttemptId(2), retryable: false, reason } if reason.contains("+8613800138000"))
        );
        assert_eq!(
            ev[2],
            DriverEvent::Accepted {
                attempt: AttemptId(3)
            }
        );
    }

    #[test]
    fn render_failure_empty_audio_and_a_full_queue_are_retryable() {
        let mut cfg = LocalAudioConfig::new("v");
        cfg.queue_limit = 2;
        let mut la = LocalAudio::new(cfg, T0);
        la.handle_card_opened(T0, "memory");
        for a in 1..=3 {
            la.submit(T0, send_to(a, Address::Speaker("v".into()), "x"));
        }
        let r1 = la.poll_render().unwrap();
        let r2 = la.poll_render().unwrap();
        la.handle_rendered(T0, r1.id, Err("espeak-ng crashed".into()), Vec::new());
        la.handle_rendered(T0, r2.id, Ok(Pcm::empty(8000)), Vec::new());
        let failed: Vec<(AttemptId, String)> = events(&mut la)
            .into_iter()
            .filter_map(|e| match e {
                DriverEvent::Failed {
                    attempt,
                    retryable: true,
                    reason,
                } => Some((attempt, reason)),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 3);
        assert!(failed[0].1.contains("queue full"));
        assert!(failed[1].1.contains("espeak-ng crashed"));
        assert!(failed[2].1.contains("no audio"));
        assert_eq!(la.pending(), 0);
    }

    #[test]
    fn a_stall_re_anchors_instead_of_bursting() {
        let mut la = la();
        la.submit(T0, send(1, "x"));
        render_all(&mut la, T0, 2_000);
        let first: Vec<SinkOp> = std::iter::from_fn(|| la.poll_sink()).collect();
        assert_eq!(first.len(), 3, "chunks 0..=2 (LEAD ahead)");
        // The host freezes for 5 s.
        let later = T0 + Duration::from_secs(5);
        la.handle_timeout(later);
        let got: Vec<SinkOp> = std::iter::from_fn(|| la.poll_sink()).collect();
        assert_eq!(got.len(), 3, "the next LEAD's worth, not the 2 s missed");
        let (ops, evs) = run(&mut la, later);
        assert_eq!(ops.len(), 14);
        // Delivered when the re-anchored rest (1.7 s) has played.
        assert!(
            matches!(evs.last(), Some((t, DriverEvent::Delivered { .. })) if t.0 - later.0 == 1_700)
        );
    }
}
