//! The router's in-memory state and the one function that changes it: [`State::apply`].
//!
//! Everything here is a fold over the record log. Handlers in `router.rs` decide which
//! records to emit; they never touch this state except through `apply`.

use crate::plan::{AlertPlan, Contact};
use crate::record::{
    DeliveryPlan, DoorKnockTask, NoticeKind, Outcome, Record, Rejection, Route, Verdict,
};
use crate::reply::{ReplyForm, read_reply};
use crate::view::{AlertState, DeliveryState, SpeakerState};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use tocsin_core::{
    AckCode, Address, AttemptId, Bearer, DeviceId, Grade, PersonId, Role, SpeakerId, Timestamp,
};

/// One lane of one record: a route worked by successive attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct LaneRef {
    pub a: u32,
    pub d: u32,
    pub l: u32,
}

/// Timers of one record; one doc line per variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum TimerKind {
    /// The n-th reminder (1-based) is due.
    Reminder(u32),
    /// The ack deadline (or the delivery-report deadline when no ack is needed); set when
    /// the window starts, at the record's first warning attempt, and for a record without
    /// ack held past it, again at the first attempt of the lane it was held for.
    Deadline,
    /// The door-knock task of this level is due; set at the task's first attempt.
    Task(u32),
    /// The visit of the accepted door-knock task of this level is due; set when the task
    /// is accepted (the `Task` timer is then dropped).
    Visit(u32),
    /// No warning attempt has started one ack window after planning (every device of the
    /// record's bearers down or saturated): a record that escalates is escalated anyway.
    NotAttempted,
}

/// A timer in the global table: when, which record, what.
pub(crate) type TimerEntry = (Timestamp, u32, u32, TimerKind);

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum LaneKind {
    Alert,
    Task(u32),
    Notice(NoticeKind, PersonId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LaneStatus {
    /// May still send or is waiting for an answer.
    Active,
    /// Every attempt failed and none is left.
    Dead,
    /// Stopped by the record's progress (ack, escalation, re-plan, close).
    Stopped,
}

#[derive(Clone, Debug)]
pub(crate) struct Lane {
    pub kind: LaneKind,
    pub route: Route,
    pub text: String,
    pub grade: Grade,
    /// Live traffic (not an exercise): sent before every drill's.
    pub live: bool,
    /// Sent before residents' sends of the same grade: warnings to responsible persons,
    /// door-knock tasks, and notices to them.
    pub urgent: bool,
    pub limit: u32,
    pub used: u32,
    /// Position in the send queue while waiting for a device: (due, seq).
    pub queued: Option<(Timestamp, u64)>,
    /// The latest attempt on this lane.
    pub current: Option<AttemptId>,
    pub status: LaneStatus,
    pub delivered: bool,
    /// Some attempt on this lane was taken by the network and has not failed since
    /// (`ok_count > 0`; kept as a flag for the readers).
    pub ever_ok: bool,
    /// Attempts on this lane that are sent or delivered and did not fail afterwards. A
    /// mesh text "sent" (queued by the radio) and then NAKed did not get through, so
    /// it must not keep the lane from falling back to the next bearer.
    pub ok_count: u32,
    /// Prefer another device for the next attempt (the last one failed on this).
    pub avoid: Option<DeviceId>,
    /// The next attempt re-sends one that may have gone out.
    pub dup_next: bool,
    /// The version of the person's warning current when the lane opened.
    pub version: u32,
    /// The code a reply answering this lane's attempts carries: the warning's code of
    /// `version` for the person's own lanes, the task's code for a door-knock lane.
    pub code: AckCode,
}

/// What became of one superseded version of a person's warning (see
/// `DeliveryPlan::version`): kept so that a late reply to it is judged as its own.
#[derive(Clone, Debug)]
pub(crate) struct EarlierVersion {
    pub version: u32,
    /// The version's code.
    pub code: AckCode,
    /// The door-knock chain that ended with this version (the record was closed when the
    /// update re-opened it); `None` when there was none or it carries on into the next
    /// version (the record was still escalated).
    pub task_code: Option<AckCode>,
    /// The state the record was in when the version was superseded.
    pub state: DeliveryState,
    pub acked_at: Option<Timestamp>,
    pub late: bool,
    /// The end of the version's ack window, if it had started.
    pub window_end: Option<Timestamp>,
}

#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    pub person: PersonId,
    pub name: String,
    pub role: Role,
    pub town: String,
    pub plan: DeliveryPlan,
    pub state: DeliveryState,
    pub since: Timestamp,
    /// No more work: final, or reached when no ack is needed.
    pub closed: bool,
    pub lanes: Vec<Lane>,
    pub next_fallback: usize,
    pub attempts: Vec<AttemptId>,
    pub reminders_done: u32,
    pub acked_at: Option<Timestamp>,
    pub ack_evidence: Option<String>,
    pub late: bool,
    pub escalated: bool,
    pub tasks: Vec<DoorKnockTask>,
    pub timers: Vec<(Timestamp, TimerKind)>,
    /// When the record was planned (for "most recent" among a person's open records).
    pub opened: Timestamp,
    /// Start of the ack window: the first warning attempt handed to a device.
    pub window_from: Option<Timestamp>,
    /// A record without ack held past its deadline for a warning lane still waiting for
    /// its first attempt (see [`State::hold_for_lane`]): the deadline that lane's first
    /// attempt set, at its start plus the window. `None` while the window's own deadline
    /// stands.
    pub held_until: Option<Timestamp>,
    /// When the latest door-knock task was opened.
    pub task_opened: Option<Timestamp>,
    /// Whether the latest door-knock task's deadline runs (its first attempt started).
    pub task_started: bool,
    /// The current door-knock chain's task was accepted (when, by whom): the visit window
    /// runs instead of the answer deadline. Cleared when a new task opens.
    pub task_accepted: Option<(Timestamp, PersonId)>,
    /// The warning reached the person: delivered on some bearer, or they acknowledged.
    pub reached: bool,
    /// When the current plan was made (planned or re-planned): the not-attempted window
    /// runs from here.
    pub planned_at: Timestamp,
    /// Superseded versions of the person's warning, oldest first.
    pub earlier: Vec<EarlierVersion>,
    /// When the current version of the warning was planned (planned, or re-notified): a
    /// field kit's ack answered before the kit can have had it is for the earlier version.
    pub version_since: Timestamp,
    /// Silence fallbacks used in the current version (see `DeliveryPlan::silence_fallbacks`).
    pub silence_used: u32,
    /// Index in `tasks` of the current door-knock chain's first task: tasks before it
    /// belong to a chain that ended with an earlier version.
    pub task_base: usize,
}

impl Delivery {
    /// The tasks of the current door-knock chain.
    pub fn chain(&self) -> &[DoorKnockTask] {
        self.tasks.get(self.task_base..).unwrap_or(&[])
    }

    /// The current chain's task code, if the record has been escalated in it.
    pub fn chain_code(&self) -> Option<AckCode> {
        self.chain().first().map(|t| t.code)
    }
}

/// One loudspeaker announcement of an alert.
#[derive(Clone, Debug)]
pub(crate) struct Announcement {
    pub speaker: SpeakerId,
    pub name: String,
    pub town: String,
    pub device: DeviceId,
    pub to: Address,
    pub text: String,
    pub window_ms: u64,
    pub state: SpeakerState,
    pub since: Timestamp,
    /// The latest warning attempt.
    pub attempt: Option<AttemptId>,
    /// The driver said the programme started streaming.
    pub sent: bool,
    pub evidence: Option<String>,
    pub reports: u32,
    pub reason: Option<String>,
    /// The pending "no evidence" deadline, if any.
    pub deadline: Option<Timestamp>,
    /// The cancellation notice was handed to the device.
    pub notice_sent: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct AlertEntry {
    pub plan: AlertPlan,
    pub state: AlertState,
    pub deliveries: Vec<Delivery>,
    pub by_person: HashMap<PersonId, u32>,
    pub contacts: HashMap<PersonId, Contact>,
    /// Records not yet closed.
    pub open: u32,
    pub finished_at: Option<Timestamp>,
    pub rejected: u32,
    pub announcements: Vec<Announcement>,
    pub by_speaker: HashMap<SpeakerId, u32>,
    /// Field kits the alert is relayed to (district side).
    pub relays: Vec<crate::relays::Relay>,
    /// Acks going up to the district (a kit's side, for an uplinked alert).
    pub uplink: crate::relays::UplinkState,
}

#[derive(Clone, Debug)]
pub(crate) struct AttemptEntry {
    pub lane: LaneRef,
    pub bearer: Bearer,
    pub device: DeviceId,
    pub to: Address,
    pub started_at: Timestamp,
    pub outcome: String,
    pub reference: Option<String>,
    pub possible_duplicate: bool,
    /// Sent, delivered, failed or abandoned: nothing more is expected for the lane.
    pub settled: bool,
    pub accepted: bool,
    /// Abandoned before any device accepted it: it surely never went out.
    pub never_out: bool,
    /// Delivered, failed, abandoned or cancelled: no driver is working on it any more
    /// (unlike `settled`, a `sent` attempt is not done: a call is in progress, an SMS
    /// awaits its report).
    pub done: bool,
    /// The router cancelled it (its record became final); later outcomes change nothing.
    pub cancelled: bool,
    /// The router abandoned it (its device went down) and sends again elsewhere or later;
    /// what its driver says of it afterwards — often a final failure answering the
    /// router's Cancel — is recorded but moves no lane.
    pub abandoned: bool,
    /// Counted in its lane's `ok_count` (sent or delivered, not failed since).
    pub ok: bool,
}

/// Which record a code opens: the person's own, or its door-knock task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CodeRef {
    pub a: u32,
    pub d: u32,
    pub task: bool,
}

/// A device's send budget: a token bucket of burst 1, kept as the theoretical arrival
/// time (GCRA) in microseconds so that fractional intervals do not drift.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Bucket {
    pub tat_us: i64,
}

impl Bucket {
    /// The first millisecond at which the device may send.
    pub fn next_free(&self) -> Timestamp {
        Timestamp(self.tat_us.div_euclid(1000) + i64::from(self.tat_us.rem_euclid(1000) != 0))
    }

    /// A send at `at` (never earlier than `next_free`).
    pub fn consume(&mut self, at: Timestamp, interval_us: i64) {
        let at_us = at.0.saturating_mul(1000);
        // A send in the first millisecond the budget allowed is on time: rounding to
        // whole milliseconds must not accumulate into a slower rate.
        let base = if at_us.saturating_sub(self.tat_us) < 1000 {
            self.tat_us.max(at_us - 999)
        } else {
            at_us
        };
        self.tat_us = base.saturating_add(interval_us);
    }
}

/// Live or drill, grade and urgency as an index into a bearer's queues: the higher, the
/// sooner. Live traffic of any grade goes before every drill: a red exercise never
/// delays a live blue warning on a shared modem.
pub(crate) fn queue_ix(live: bool, g: Grade, urgent: bool) -> usize {
    let g = match g {
        Grade::Blue => 0,
        Grade::Yellow => 1,
        Grade::Orange => 2,
        Grade::Red => 3,
    };
    usize::from(live) * 8 + g * 2 + usize::from(urgent)
}

/// Number of queues per bearer: one per (live, grade, urgent).
pub(crate) const QUEUES: usize = 16;

/// The send queue of one bearer: per (live, grade, urgent), lanes waiting for a device by
/// (due, seq) — FIFO within a class.
pub(crate) type BearerQueue = [BTreeSet<(Timestamp, u64, LaneRef)>; QUEUES];

#[derive(Clone, Debug, Default)]
pub(crate) struct State {
    pub alerts: Vec<AlertEntry>,
    pub alert_ix: HashMap<tocsin_core::AlertId, u32>,
    pub attempts: HashMap<AttemptId, AttemptEntry>,
    pub next_attempt: u64,
    pub queues: HashMap<Bearer, BearerQueue>,
    pub seq: u64,
    pub timers: BTreeSet<TimerEntry>,
    pub buckets: HashMap<DeviceId, Bucket>,
    /// Devices reported down (absent: assumed up).
    pub down: BTreeSet<DeviceId>,
    pub codes: HashMap<AckCode, Vec<CodeRef>>,
    pub address_people: HashMap<Address, BTreeSet<PersonId>>,
    pub person_targets: HashMap<PersonId, Vec<(u32, u32)>>,
    pub assignee_tasks: HashMap<PersonId, Vec<(u32, u32)>>,
    /// Send interval per device in microseconds (from the config, not the log).
    pub intervals: HashMap<DeviceId, i64>,
    /// Devices whose bearer vouches for the sender (from the config, not the log): an ack
    /// over one keeps the driver's evidence in the record's `ack_evidence`.
    pub authenticated: BTreeSet<DeviceId>,
    /// Records whose progress may call for a follow-up record (scratch, not state).
    pub touched: Vec<(u32, u32)>,
    /// Announcement attempts: attempt -> (alert, announcement, is the cancellation notice).
    pub announce_attempts: HashMap<AttemptId, (u32, u32, bool)>,
    /// "No evidence" deadlines of announcements: (when, alert, announcement).
    pub speaker_timers: BTreeSet<(Timestamp, u32, u32)>,
    /// Relay attempts: attempt -> (alert, relay).
    pub relay_attempts: HashMap<AttemptId, (u32, u32)>,
    /// Relay retries: (when, alert, relay).
    pub relay_timers: BTreeSet<(Timestamp, u32, u32)>,
    /// Uplink batches: attempt -> alert.
    pub uplink_attempts: HashMap<AttemptId, u32>,
    /// Uplink retries: (when, alert).
    pub uplink_timers: BTreeSet<(Timestamp, u32)>,
    /// Alerts with field-kit relays or an uplink (the only ones the relay pump visits).
    pub relay_alerts: BTreeSet<u32>,
    /// Wrong codes per sender within the last [`GUESS_WINDOW`], one entry per code tried.
    pub guesses: HashMap<Address, VecDeque<Timestamp>>,
    /// Senders whose replies are not tried until the given time.
    pub locked: HashMap<Address, Timestamp>,
    /// Calls a driver is still working on (started, accepted or sent; not delivered,
    /// failed, cancelled or abandoned), per device: attempt -> start. Built from the
    /// records alone, so a restore holds the same lines as the live router did.
    pub live_calls: HashMap<DeviceId, BTreeMap<AttemptId, Timestamp>>,
    /// The line each device shares with others (from the config, not the log).
    pub lines: HashMap<DeviceId, String>,
    /// Texts started on each shared line since its last call started (from the log): a
    /// call waits for texts due on its line until [`TEXTS_PER_CALL`] have gone.
    pub line_texts: HashMap<String, u32>,
}

/// Texts a shared line sends before its next call when both wait (what the AT driver
/// itself allows between two calls), so neither kind starves the other.
pub(crate) const TEXTS_PER_CALL: u32 = 4;

/// At most this many candidate codes of one reply are tried.
pub(crate) const MAX_CANDIDATES: usize = 3;
/// Wrong codes from one sender within [`GUESS_WINDOW`] that lock them out.
pub(crate) const GUESS_LIMIT: usize = 5;
/// The window wrong codes are counted in.
pub(crate) const GUESS_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);
/// How long a sender who hit [`GUESS_LIMIT`] is not tried.
pub(crate) const LOCKOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// How many door-knock levels an escalation climbs before the record is unreached.
pub(crate) const MAX_LEVELS: u32 = 6;

pub(crate) fn ix(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl State {
    pub fn alert(&self, a: u32) -> &AlertEntry {
        &self.alerts[a as usize]
    }

    pub fn delivery(&self, a: u32, d: u32) -> &Delivery {
        &self.alerts[a as usize].deliveries[d as usize]
    }

    fn delivery_mut(&mut self, a: u32, d: u32) -> &mut Delivery {
        &mut self.alerts[a as usize].deliveries[d as usize]
    }

    /// What the driver saw, appended to an ack's evidence when its device vouches for the
    /// sender: there the driver's account (the DTMF notice and the call it came in, the
    /// BeiDou sentence) is what shows the ack is the person's. Elsewhere it is a raw PDU
    /// that says nothing more to an operator. Bounded, on one line.
    fn ack_said(&self, device: &DeviceId, evidence: &str) -> String {
        const MAX_CHARS: usize = 160;
        let evidence = evidence.trim();
        if evidence.is_empty() || !self.authenticated.contains(device) {
            return String::new();
        }
        let mut said: String = evidence
            .chars()
            .take(MAX_CHARS)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if evidence.chars().nth(MAX_CHARS).is_some() {
            said.push('…');
        }
        format!(" — {said}")
    }

    pub fn lane(&self, r: LaneRef) -> &Lane {
        &self.alerts[r.a as usize].deliveries[r.d as usize].lanes[r.l as usize]
    }

    fn lane_mut(&mut self, r: LaneRef) -> &mut Lane {
        &mut self.alerts[r.a as usize].deliveries[r.d as usize].lanes[r.l as usize]
    }

    /// Finds a record by ids (checked: records come from the log).
    pub fn find(
        &self,
        alert: &tocsin_core::AlertId,
        person: &PersonId,
    ) -> Result<(u32, u32), String> {
        let a = *self
            .alert_ix
            .get(alert)
            .ok_or_else(|| format!("unknown alert {alert}"))?;
        let d = *self
            .alert(a)
            .by_person
            .get(person)
            .ok_or_else(|| format!("alert {alert} has no record for {person}"))?;
        Ok((a, d))
    }

    pub fn is_up(&self, device: &DeviceId) -> bool {
        !self.down.contains(device)
    }

    fn enqueue(&mut self, r: LaneRef, due: Timestamp) {
        self.dequeue(r);
        self.seq += 1;
        let seq = self.seq;
        let lane = self.lane_mut(r);
        lane.queued = Some((due, seq));
        let (bearer, g) = (
            lane.route.bearer,
            queue_ix(lane.live, lane.grade, lane.urgent),
        );
        if let Some(set) = self.queues.entry(bearer).or_default().get_mut(g) {
            set.insert((due, seq, r));
        }
    }

    fn dequeue(&mut self, r: LaneRef) {
        let lane = self.lane_mut(r);
        if let Some((due, seq)) = lane.queued.take() {
            let (bearer, g) = (
                lane.route.bearer,
                queue_ix(lane.live, lane.grade, lane.urgent),
            );
            if let Some(set) = self.queues.get_mut(&bearer).and_then(|q| q.get_mut(g)) {
                set.remove(&(due, seq, r));
            }
        }
    }

    fn add_lane(
        &mut self,
        a: u32,
        d: u32,
        kind: LaneKind,
        route: Route,
        text: String,
        due: Timestamp,
    ) {
        let live = !self.alert(a).plan.alert.exercise;
        let del = self.delivery_mut(a, d);
        let urgent = match &kind {
            LaneKind::Alert => del.plan.responsible,
            LaneKind::Task(_) => true,
            LaneKind::Notice(_, recipient) => del.plan.responsible || recipient != &del.person,
        };
        let code = match &kind {
            LaneKind::Task(_) => del.tasks.last().map_or(del.plan.code, |t| t.code),
            LaneKind::Alert | LaneKind::Notice(..) => del.plan.code,
        };
        let version = del.plan.version;
        let lane = Lane {
            kind,
            route,
            text,
            grade: del.plan.grade,
            live,
            urgent,
            limit: del.plan.attempts_per_route.max(1),
            used: 0,
            queued: None,
            current: None,
            status: LaneStatus::Active,
            delivered: false,
            ever_ok: false,
            ok_count: 0,
            avoid: None,
            dup_next: false,
            version,
            code,
        };
        del.lanes.push(lane);
        let l = ix(del.lanes.len() - 1);
        self.enqueue(LaneRef { a, d, l }, due);
    }

    /// Stops lanes of the given kinds (`notices` too when asked).
    fn stop_lanes(&mut self, a: u32, d: u32, alert: bool, tasks: bool) {
        let n = self.delivery(a, d).lanes.len();
        for l in 0..ix(n) {
            let r = LaneRef { a, d, l };
            let lane = self.lane(r);
            let hit = match lane.kind {
                LaneKind::Alert => alert,
                LaneKind::Task(_) => tasks,
                LaneKind::Notice(..) => false,
            };
            if hit && lane.status == LaneStatus::Active {
                self.dequeue(r);
                self.lane_mut(r).status = LaneStatus::Stopped;
            }
        }
    }

    fn add_timer(&mut self, a: u32, d: u32, at: Timestamp, kind: TimerKind) {
        self.timers.insert((at, a, d, kind));
        self.delivery_mut(a, d).timers.push((at, kind));
    }

    /// Removes the record's timers that `keep` refuses.
    fn remove_timers(&mut self, a: u32, d: u32, drop: impl Fn(TimerKind) -> bool) {
        let timers = std::mem::take(&mut self.delivery_mut(a, d).timers);
        let mut kept = Vec::with_capacity(timers.len());
        for (at, kind) in timers {
            if drop(kind) {
                self.timers.remove(&(at, a, d, kind));
            } else {
                kept.push((at, kind));
            }
        }
        self.delivery_mut(a, d).timers = kept;
    }

    fn close(&mut self, a: u32, d: u32, state: DeliveryState, at: Timestamp) {
        let del = self.delivery_mut(a, d);
        del.state = state;
        del.since = at;
        let was_closed = std::mem::replace(&mut del.closed, true);
        self.stop_lanes(a, d, true, true);
        self.remove_timers(a, d, |_| true);
        let entry = &mut self.alerts[a as usize];
        if !was_closed {
            entry.open = entry.open.saturating_sub(1);
        }
        if entry.state == AlertState::Active && entry.open == 0 {
            entry.state = AlertState::Done;
            entry.finished_at = Some(at);
        }
    }

    fn reopen(&mut self, a: u32) {
        let entry = &mut self.alerts[a as usize];
        entry.open += 1;
        if entry.state == AlertState::Done {
            entry.state = AlertState::Active;
            entry.finished_at = None;
        }
    }

    fn index_contacts(&mut self, a: u32) {
        let contacts: Vec<Contact> = self.alert(a).plan.contacts.clone();
        for c in contacts {
            for addr in &c.addresses {
                self.address_people
                    .entry(addr.clone())
                    .or_default()
                    .insert(c.person.clone());
            }
            self.alerts[a as usize].contacts.insert(c.person.clone(), c);
        }
    }

    /// The record's warning is superseded by a new version (an update re-notifies the
    /// person): what became of the current version is kept, its ack no longer stands for
    /// the record, and a chain of door-knock tasks that ended with it (the record was
    /// closed) is over — an escalation of the new version starts from the person's own
    /// supervisor. A chain still running (the record is escalated) carries on.
    fn supersede(&mut self, a: u32, d: u32, at: Timestamp) {
        let del = self.delivery_mut(a, d);
        let chain_ended = del.closed || del.state != DeliveryState::Escalated;
        let window_end = del
            .window_from
            .map(|f| f + std::time::Duration::from_millis(del.plan.window_ms));
        let task_code = if chain_ended { del.chain_code() } else { None };
        del.earlier.push(EarlierVersion {
            version: del.plan.version,
            code: del.plan.code,
            task_code,
            state: del.state,
            acked_at: del.acked_at,
            late: del.late,
            window_end,
        });
        del.acked_at = None;
        del.ack_evidence = None;
        del.late = false;
        del.version_since = at;
        if chain_ended {
            del.task_base = del.tasks.len();
            del.task_opened = None;
            del.task_started = false;
            del.task_accepted = None;
            if !del.closed {
                // Reached or attempting with the old text: the new one has not gone out.
                del.state = DeliveryState::Planned;
                del.since = at;
            }
        }
    }

    /// Lanes and timers of a (re)planned record. The deadline and reminders are set only
    /// when the window already runs (a re-plan that keeps it); otherwise the first warning
    /// attempt starts it (see [`State::start_window`]), and a record that escalates gets a
    /// not-attempted timer one window from now.
    fn start_plan(&mut self, a: u32, d: u32, at: Timestamp) {
        let plan = self.delivery(a, d).plan.clone();
        let del = self.delivery_mut(a, d);
        del.window_from = plan.window_from;
        del.held_until = None;
        del.planned_at = at;
        for route in plan.routes {
            self.add_lane(a, d, LaneKind::Alert, route, plan.message.clone(), at);
        }
        match plan.window_from {
            Some(from) => self.window_timers(a, d, from, at),
            None => self.not_attempted_timer(a, d, at),
        }
    }

    /// Arms the not-attempted timer of a record that needs an ack and escalates, one
    /// window after its plan (never before `now`).
    fn not_attempted_timer(&mut self, a: u32, d: u32, now: Timestamp) {
        let del = self.delivery(a, d);
        if !(del.plan.ack_required && del.plan.escalate)
            || del.closed
            || del.state == DeliveryState::Escalated
        {
            return;
        }
        let due = (del.planned_at + std::time::Duration::from_millis(del.plan.window_ms)).max(now);
        self.remove_timers(a, d, |k| k == TimerKind::NotAttempted);
        self.add_timer(a, d, due, TimerKind::NotAttempted);
    }

    /// The first warning attempt of a record whose window has not started: it starts now.
    fn start_window(&mut self, a: u32, d: u32, at: Timestamp) {
        let del = self.delivery_mut(a, d);
        if del.window_from.is_some() || del.closed {
            return;
        }
        del.window_from = Some(at);
        self.remove_timers(a, d, |k| k == TimerKind::NotAttempted);
        self.window_timers(a, d, at, at);
    }

    /// The first attempt of a warning lane of a record that needs no ack, started at or
    /// after the record's deadline: the record is still open, so at its deadline it was
    /// held for this lane (see the router's `Deadline` timer), and its wait for a delivery
    /// report now runs one window from this attempt. Derived from the attempt's record
    /// alone, so a replay moves the deadline the same way (and drops the window's own
    /// deadline timer, which must not fire again after a restart).
    fn hold_for_lane(&mut self, a: u32, d: u32, at: Timestamp) {
        let del = self.delivery_mut(a, d);
        if del.plan.ack_required || del.closed || del.state != DeliveryState::Attempting {
            return;
        }
        let Some(from) = del.window_from else {
            return;
        };
        let window = std::time::Duration::from_millis(del.plan.window_ms);
        let deadline = del.held_until.unwrap_or(from + window);
        if at < deadline {
            return;
        }
        let due = at + window;
        del.held_until = Some(due);
        self.remove_timers(a, d, |k| k == TimerKind::Deadline);
        self.add_timer(a, d, due, TimerKind::Deadline);
    }

    /// The window started with an attempt that never went out (its device went down
    /// before accepting it): when no warning attempt of the record is left that may have
    /// gone out, the window has not really started and waits for the next attempt.
    fn unstart_window(&mut self, a: u32, d: u32, at: Timestamp) {
        let del = self.delivery(a, d);
        if del.window_from.is_none()
            || del.plan.window_from.is_some()
            || del.closed
            || del.state != DeliveryState::Attempting
        {
            return;
        }
        let any_out = del.attempts.iter().any(|id| {
            self.attempts
                .get(id)
                .is_some_and(|e| !e.never_out && self.lane(e.lane).kind == LaneKind::Alert)
        });
        if any_out {
            return;
        }
        self.remove_timers(a, d, |k| {
            matches!(k, TimerKind::Deadline | TimerKind::Reminder(_))
        });
        let del = self.delivery_mut(a, d);
        del.window_from = None;
        del.held_until = None;
        del.reminders_done = 0;
        del.state = DeliveryState::Planned;
        del.since = at;
        self.not_attempted_timer(a, d, at);
    }

    fn announcement_mut(&mut self, a: u32, s: u32) -> Option<&mut Announcement> {
        self.alerts
            .get_mut(a as usize)
            .and_then(|e| e.announcements.get_mut(s as usize))
    }

    /// Sets (or with `None` clears) an announcement's "no evidence" deadline.
    fn speaker_deadline(&mut self, a: u32, s: u32, due: Option<Timestamp>) {
        let Some(ann) = self.announcement_mut(a, s) else {
            return;
        };
        let old = std::mem::replace(&mut ann.deadline, due);
        if let Some(old) = old {
            self.speaker_timers.remove(&(old, a, s));
        }
        if let Some(due) = due {
            self.speaker_timers.insert((due, a, s));
        }
    }

    /// Finds an announcement by ids (checked: records come from the log).
    fn find_announcement(
        &self,
        alert: &tocsin_core::AlertId,
        speaker: &SpeakerId,
    ) -> Result<(u32, u32), String> {
        let a = *self
            .alert_ix
            .get(alert)
            .ok_or_else(|| format!("unknown alert {alert}"))?;
        let s = *self
            .alert(a)
            .by_speaker
            .get(speaker)
            .ok_or_else(|| format!("alert {alert} has no announcement on speaker {speaker}"))?;
        Ok((a, s))
    }

    /// Applies one announcement record.
    fn apply_announcement(&mut self, rec: &Record) -> Result<(), String> {
        match rec {
            Record::AnnouncementPlanned {
                at,
                alert,
                speaker,
                device,
                to,
                text,
                window_ms,
            } => {
                let a = *self
                    .alert_ix
                    .get(alert)
                    .ok_or("announcement of an unknown alert")?;
                if self.alert(a).by_speaker.contains_key(speaker) {
                    return Err(format!("speaker {speaker} planned twice for {alert}"));
                }
                let target = self
                    .alert(a)
                    .plan
                    .speakers
                    .iter()
                    .find(|t| &t.id == speaker);
                let (name, town) = target
                    .map(|t| (t.name.clone(), t.town.clone()))
                    .unwrap_or_else(|| (speaker.to_string(), String::new()));
                let entry = &mut self.alerts[a as usize];
                let s = ix(entry.announcements.len());
                entry.announcements.push(Announcement {
                    speaker: speaker.clone(),
                    name,
                    town,
                    device: device.clone(),
                    to: to.clone(),
                    text: text.clone(),
                    window_ms: *window_ms,
                    state: SpeakerState::Planned,
                    since: *at,
                    attempt: None,
                    sent: false,
                    evidence: None,
                    reports: 0,
                    reason: None,
                    deadline: None,
                    notice_sent: false,
                });
                entry.by_speaker.insert(speaker.clone(), s);
            }
            Record::AnnouncementStarted {
                at,
                alert,
                speaker,
                attempt,
                notice,
                ..
            } => {
                let (a, s) = self.find_announcement(alert, speaker)?;
                self.announce_attempts.insert(*attempt, (a, s, *notice));
                self.next_attempt = self.next_attempt.max(attempt.0.saturating_add(1));
                let Some(ann) = self.announcement_mut(a, s) else {
                    return Ok(());
                };
                if *notice {
                    ann.notice_sent = true;
                    return Ok(());
                }
                ann.attempt = Some(*attempt);
                ann.sent = false;
                ann.state = SpeakerState::Playing;
                ann.since = *at;
                // Covers a programme that waits on the device behind a higher grade, or
                // a driver that never says it started.
                let due = *at + std::time::Duration::from_millis(ann.window_ms);
                self.speaker_deadline(a, s, Some(due));
            }
            Record::AnnouncementOutcome {
                at,
                attempt,
                outcome,
                ..
            } => {
                let &(a, s, notice) = self
                    .announce_attempts
                    .get(attempt)
                    .ok_or_else(|| format!("outcome of unknown announcement {attempt}"))?;
                let Some(ann) = self.announcement_mut(a, s) else {
                    return Ok(());
                };
                if notice || ann.attempt != Some(*attempt) {
                    return Ok(());
                }
                match outcome {
                    Outcome::Accepted => {}
                    Outcome::Sent { .. } => {
                        ann.sent = true;
                        if ann.state == SpeakerState::Playing {
                            let due = *at + std::time::Duration::from_millis(ann.window_ms);
                            self.speaker_deadline(a, s, Some(due));
                        }
                    }
                    Outcome::Delivered { evidence } => {
                        ann.reports = ann.reports.saturating_add(1);
                        if ann.evidence.is_none() {
                            ann.evidence = Some(evidence.clone());
                        }
                        // A late report is still evidence that it was heard.
                        if matches!(ann.state, SpeakerState::Playing | SpeakerState::NoEvidence) {
                            ann.state = SpeakerState::Reached;
                            ann.since = *at;
                            ann.reason = None;
                        }
                        self.speaker_deadline(a, s, None);
                    }
                    Outcome::Failed { reason, .. } => {
                        if ann.state == SpeakerState::Playing {
                            ann.state = SpeakerState::NoEvidence;
                            ann.since = *at;
                            ann.reason = Some(format!("failed: {reason}"));
                            self.speaker_deadline(a, s, None);
                        }
                    }
                }
            }
            Record::AnnouncementClosed {
                at,
                alert,
                speaker,
                state,
                reason,
            } => {
                let (a, s) = self.find_announcement(alert, speaker)?;
                if let Some(ann) = self.announcement_mut(a, s) {
                    ann.state = *state;
                    ann.since = *at;
                    ann.reason = Some(reason.clone());
                }
                self.speaker_deadline(a, s, None);
            }
            _ => {}
        }
        Ok(())
    }

    /// Deadline and reminders of a window started at `from`; reminders already past at
    /// `after` (a re-plan that keeps the window) are skipped.
    fn window_timers(&mut self, a: u32, d: u32, from: Timestamp, after: Timestamp) {
        let del = self.delivery(a, d);
        if del.state == DeliveryState::Escalated || del.closed {
            return;
        }
        let ms = |m: u64| from + std::time::Duration::from_millis(m);
        let deadline = ms(del.plan.window_ms);
        let reminders: Vec<(u32, Timestamp)> = del
            .plan
            .reminders_ms
            .iter()
            .enumerate()
            .map(|(n, m)| (ix(n + 1), ms(*m)))
            .filter(|(_, t)| *t > after)
            .collect();
        self.add_timer(a, d, deadline, TimerKind::Deadline);
        for (n, t) in reminders {
            self.add_timer(a, d, t, TimerKind::Reminder(n));
        }
    }

    /// The next fallback route not already in use, if any, with the index after it.
    pub fn next_fallback(&self, a: u32, d: u32) -> (usize, Option<Route>) {
        let del = self.delivery(a, d);
        let in_use = |r: &Route| {
            del.lanes.iter().any(|l| {
                l.kind == LaneKind::Alert && l.status != LaneStatus::Stopped && &l.route == r
            })
        };
        let mut next = del.next_fallback;
        while let Some(r) = del.plan.fallback.get(next) {
            next += 1;
            if !in_use(r) {
                return (next, Some(r.clone()));
            }
        }
        (next, None)
    }

    /// Opens the next fallback route not already in use, if any.
    fn open_fallback(&mut self, a: u32, d: u32, at: Timestamp) {
        let (next, found) = self.next_fallback(a, d);
        let message = self.delivery(a, d).plan.message.clone();
        self.delivery_mut(a, d).next_fallback = next;
        if let Some(route) = found {
            self.add_lane(a, d, LaneKind::Alert, route, message, at);
        }
    }

    /// The current door-knock task of a record was accepted by `by`: its answer deadline
    /// stops and its visit window starts; the task's calls are not redialled (its texts,
    /// which carry the code the visit is confirmed with, still go out). A record already
    /// closed (the chain ran out) keeps the fact only.
    fn task_accepted(&mut self, a: u32, d: u32, at: Timestamp, by: &PersonId) {
        let del = self.delivery_mut(a, d);
        if del.task_accepted.is_some() {
            return;
        }
        del.task_accepted = Some((at, by.clone()));
        if del.closed || del.state != DeliveryState::Escalated {
            return;
        }
        let Some((level, visit_ms)) = del.tasks.last().map(|t| (t.level, t.visit_ms)) else {
            return;
        };
        self.remove_timers(a, d, |k| matches!(k, TimerKind::Task(_)));
        let due = at + std::time::Duration::from_millis(visit_ms);
        self.add_timer(a, d, due, TimerKind::Visit(level));
        for l in 0..ix(self.delivery(a, d).lanes.len()) {
            let r = LaneRef { a, d, l };
            let lane = self.lane(r);
            if matches!(lane.kind, LaneKind::Task(_))
                && lane.route.bearer == Bearer::Voice
                && lane.status == LaneStatus::Active
            {
                self.dequeue(r);
                self.lane_mut(r).status = LaneStatus::Stopped;
            }
        }
        self.touched.push((a, d));
    }

    /// Wrong codes from `from` at `at`: the sender is locked out for [`LOCKOUT`] once
    /// [`GUESS_LIMIT`] fall within [`GUESS_WINDOW`].
    fn note_wrong_codes(&mut self, from: &Address, at: Timestamp, tried: usize) {
        let q = self.guesses.entry(from.clone()).or_default();
        while q.front().is_some_and(|t| *t + GUESS_WINDOW <= at) {
            q.pop_front();
        }
        for _ in 0..tried {
            q.push_back(at);
        }
        if q.len() >= GUESS_LIMIT {
            self.guesses.remove(from);
            self.locked.insert(from.clone(), at + LOCKOUT);
        }
    }

    /// Until when replies from `from` are not tried, if they are locked out at `now`.
    pub fn locked_until(&self, from: &Address, now: Timestamp) -> Option<Timestamp> {
        self.locked.get(from).copied().filter(|t| *t > now)
    }

    /// Applies one record. Errors name what in the log does not fit the state.
    pub fn apply(&mut self, rec: &Record) -> Result<(), String> {
        let applied = self.apply_record(rec);
        self.track_call(rec);
        applied
    }

    /// Keeps [`State::live_calls`] and [`State::line_texts`] in step with the attempt
    /// entries after `rec`.
    fn track_call(&mut self, rec: &Record) {
        if let Record::AttemptStarted { device, bearer, .. } = rec
            && let Some(line) = self.lines.get(device)
        {
            let texts = self.line_texts.entry(line.clone()).or_default();
            *texts = if *bearer == Bearer::Voice {
                0
            } else {
                texts.saturating_add(1)
            };
        }
        let attempt = match rec {
            Record::AttemptStarted {
                attempt,
                bearer: Bearer::Voice,
                ..
            }
            | Record::AttemptOutcome { attempt, .. }
            | Record::AttemptAbandoned { attempt, .. }
            | Record::AttemptCancelled { attempt, .. } => attempt,
            _ => return,
        };
        let Some(entry) = self.attempts.get(attempt) else {
            return;
        };
        if entry.bearer != Bearer::Voice {
            return;
        }
        if entry.done {
            if let Some(calls) = self.live_calls.get_mut(&entry.device) {
                calls.remove(attempt);
                if calls.is_empty() {
                    self.live_calls.remove(&entry.device);
                }
            }
        } else if matches!(rec, Record::AttemptStarted { .. }) {
            self.live_calls
                .entry(entry.device.clone())
                .or_default()
                .insert(*attempt, entry.started_at);
        }
    }

    /// [`State::apply`] without the call bookkeeping.
    fn apply_record(&mut self, rec: &Record) -> Result<(), String> {
        match rec {
            Record::AlertAccepted { plan, .. } => {
                if self.alert_ix.contains_key(&plan.alert.id) {
                    return Err(format!("alert {} accepted twice", plan.alert.id));
                }
                let a = ix(self.alerts.len());
                self.alerts.push(AlertEntry {
                    plan: plan.clone(),
                    state: AlertState::Active,
                    deliveries: Vec::new(),
                    by_person: HashMap::new(),
                    contacts: HashMap::new(),
                    open: 0,
                    finished_at: None,
                    rejected: 0,
                    announcements: Vec::new(),
                    by_speaker: HashMap::new(),
                    relays: Vec::new(),
                    uplink: Default::default(),
                });
                self.alert_ix.insert(plan.alert.id.clone(), a);
                self.index_contacts(a);
                self.add_relays(a, plan.alert.accepted_at);
                // An alert with nobody to reach is done at once.
                if plan.targets.is_empty() {
                    let entry = &mut self.alerts[a as usize];
                    entry.state = AlertState::Done;
                    entry.finished_at = Some(plan.alert.accepted_at);
                }
            }
            Record::AlertUpdated { at, plan, .. } => {
                let a = *self
                    .alert_ix
                    .get(&plan.alert.id)
                    .ok_or("update of an unknown alert")?;
                // An update that only adds an upstream reference (a CAP Update or Cancel
                // the alert is now also known under) has nothing for the kits: re-sending
                // the frame would take their link's slots, the cancel's among them.
                let old = &self.alerts[a as usize].plan;
                let only_known_as = old.alert.reference != plan.alert.reference && {
                    let mut same = old.clone();
                    same.alert.reference.clone_from(&plan.alert.reference);
                    same == *plan
                };
                self.alerts[a as usize].plan = plan.clone();
                self.index_contacts(a);
                if !only_known_as {
                    self.relays_updated(a, *at);
                }
            }
            Record::AlertCancelled { at, alert, .. } => {
                let a = *self
                    .alert_ix
                    .get(alert)
                    .ok_or("cancel of an unknown alert")?;
                let n = ix(self.alert(a).deliveries.len());
                for d in 0..n {
                    if !self.delivery(a, d).closed {
                        self.close(a, d, DeliveryState::Cancelled, *at);
                    } else {
                        self.stop_lanes(a, d, true, true);
                    }
                }
                for s in 0..ix(self.alert(a).announcements.len()) {
                    if let Some(ann) = self.announcement_mut(a, s)
                        && !ann.state.is_final()
                    {
                        ann.state = SpeakerState::Cancelled;
                        ann.since = *at;
                        self.speaker_deadline(a, s, None);
                    }
                }
                self.relays_cancelled(a, *at);
                let entry = &mut self.alerts[a as usize];
                entry.state = AlertState::Cancelled;
                entry.finished_at = Some(*at);
            }
            Record::DeliveryPlanned {
                at,
                alert,
                person,
                plan,
            } => {
                let a = *self
                    .alert_ix
                    .get(alert)
                    .ok_or("delivery of an unknown alert")?;
                if self.alert(a).by_person.contains_key(person) {
                    return Err(format!("{person} planned twice for {alert}"));
                }
                let contact = self.alert(a).contacts.get(person);
                let (name, role, town) = match contact {
                    Some(c) => (c.name.clone(), c.role, c.town.clone()),
                    None => (person.to_string(), Role::Resident, String::new()),
                };
                let entry = &mut self.alerts[a as usize];
                let d = ix(entry.deliveries.len());
                entry.deliveries.push(Delivery {
                    person: person.clone(),
                    name,
                    role,
                    town,
                    plan: plan.clone(),
                    state: DeliveryState::Planned,
                    since: *at,
                    closed: false,
                    lanes: Vec::new(),
                    next_fallback: 0,
                    attempts: Vec::new(),
                    reminders_done: 0,
                    acked_at: None,
                    ack_evidence: None,
                    late: false,
                    escalated: false,
                    tasks: Vec::new(),
                    timers: Vec::new(),
                    opened: *at,
                    window_from: None,
                    held_until: None,
                    task_opened: None,
                    task_started: false,
                    task_accepted: None,
                    reached: false,
                    planned_at: *at,
                    earlier: Vec::new(),
                    version_since: *at,
                    task_base: 0,
                    silence_used: 0,
                });
                entry.by_person.insert(person.clone(), d);
                self.reopen(a);
                self.person_targets
                    .entry(person.clone())
                    .or_default()
                    .push((a, d));
                self.codes
                    .entry(plan.code)
                    .or_default()
                    .push(CodeRef { a, d, task: false });
                self.start_plan(a, d, *at);
                self.touched.push((a, d));
            }
            Record::DeliveryReplanned {
                at,
                alert,
                person,
                plan,
            } => {
                let (a, d) = self.find(alert, person)?;
                self.stop_lanes(a, d, true, false);
                self.remove_timers(a, d, |k| {
                    !matches!(k, TimerKind::Task(_) | TimerKind::Visit(_))
                });
                let del = self.delivery(a, d);
                let renotified = plan.version > del.plan.version;
                let reopened = del.closed
                    && (del.state == DeliveryState::Withdrawn
                        || (renotified && del.state != DeliveryState::Cancelled));
                if renotified {
                    self.supersede(a, d, *at);
                }
                let del = self.delivery_mut(a, d);
                del.plan = plan.clone();
                del.reminders_done = 0;
                del.next_fallback = 0;
                del.silence_used = 0;
                if reopened {
                    del.closed = false;
                    del.state = DeliveryState::Planned;
                    del.since = *at;
                    self.reopen(a);
                }
                let refs = self.codes.entry(plan.code).or_default();
                let r = CodeRef { a, d, task: false };
                if !refs.contains(&r) {
                    refs.push(r);
                }
                self.start_plan(a, d, *at);
                self.touched.push((a, d));
            }
            Record::AttemptStarted {
                at,
                alert,
                person,
                attempt,
                lane,
                bearer,
                device,
                to,
                possible_duplicate,
                ..
            } => {
                let (a, d) = self.find(alert, person)?;
                let r = LaneRef { a, d, l: *lane };
                if self.delivery(a, d).lanes.len() <= *lane as usize {
                    return Err(format!(
                        "attempt {attempt} names lane {lane} that {person} does not have"
                    ));
                }
                self.dequeue(r);
                let l = self.lane_mut(r);
                // No attempt of this lane went out before (an abandoned one that never
                // left gave its use back).
                let first_on_lane = l.used == 0;
                l.used += 1;
                l.current = Some(*attempt);
                l.avoid = None;
                l.dup_next = false;
                let kind = l.kind.clone();
                let is_alert = kind == LaneKind::Alert;
                self.attempts.insert(
                    *attempt,
                    AttemptEntry {
                        lane: r,
                        bearer: *bearer,
                        device: device.clone(),
                        to: to.clone(),
                        started_at: *at,
                        outcome: "started".into(),
                        reference: None,
                        possible_duplicate: *possible_duplicate,
                        settled: false,
                        accepted: false,
                        never_out: false,
                        done: false,
                        cancelled: false,
                        abandoned: false,
                        ok: false,
                    },
                );
                let del = self.delivery_mut(a, d);
                del.attempts.push(*attempt);
                if is_alert && del.state == DeliveryState::Planned {
                    del.state = DeliveryState::Attempting;
                    del.since = *at;
                }
                match kind {
                    LaneKind::Alert => {
                        self.start_window(a, d, *at);
                        if first_on_lane {
                            self.hold_for_lane(a, d, *at);
                        }
                    }
                    LaneKind::Task(level) => {
                        let del = self.delivery_mut(a, d);
                        let current = del.tasks.last().filter(|t| t.level == level);
                        // An accepted task's clock is its visit window, not this one.
                        if let Some(task) = current
                            && !del.task_started
                            && del.task_accepted.is_none()
                            && !del.closed
                            && del.state == DeliveryState::Escalated
                        {
                            let due = *at + std::time::Duration::from_millis(task.deadline_ms);
                            del.task_started = true;
                            self.add_timer(a, d, due, TimerKind::Task(level));
                        }
                    }
                    LaneKind::Notice(..) => {}
                }
                let interval = self.intervals.get(device).copied().unwrap_or(0);
                self.buckets
                    .entry(device.clone())
                    .or_default()
                    .consume(*at, interval);
                self.next_attempt = self.next_attempt.max(attempt.0.saturating_add(1));
            }
            Record::AttemptOutcome {
                at,
                attempt,
                outcome,
                ..
            } => {
                let entry = self
                    .attempts
                    .get_mut(attempt)
                    .ok_or_else(|| format!("outcome of unknown attempt {attempt}"))?;
                let r = entry.lane;
                let device = entry.device.clone();
                if entry.cancelled || entry.abandoned {
                    // Recorded, changes nothing: the record is final and its lanes are
                    // stopped, or the lane has moved on to a new attempt. A delivery
                    // report is still a fact about the person.
                    let after = if entry.cancelled { "cancel" } else { "abandon" };
                    match outcome {
                        Outcome::Sent { reference } => entry.reference = Some(reference.clone()),
                        Outcome::Delivered { .. } => {
                            entry.outcome = format!("delivered after {after}");
                            entry.done = true;
                            let lane = self.lane_mut(r);
                            lane.ever_ok = true;
                            lane.delivered = true;
                            let is_alert = lane.kind == LaneKind::Alert;
                            self.delivery_mut(r.a, r.d).reached |= is_alert;
                        }
                        Outcome::Failed { .. } => entry.done = true,
                        Outcome::Accepted => {}
                    }
                    return Ok(());
                }
                if matches!(outcome, Outcome::Delivered { .. } | Outcome::Failed { .. }) {
                    entry.done = true;
                }
                match outcome {
                    Outcome::Accepted => {
                        entry.accepted = true;
                        if !entry.settled {
                            entry.outcome = "accepted".into();
                        }
                        return Ok(());
                    }
                    Outcome::Sent { reference } => {
                        entry.reference = Some(reference.clone());
                        if entry.outcome != "delivered" {
                            entry.outcome = "sent".into();
                        }
                        entry.settled = true;
                        let newly = !std::mem::replace(&mut entry.ok, true);
                        let lane = self.lane_mut(r);
                        lane.ok_count += u32::from(newly);
                        lane.ever_ok = true;
                    }
                    Outcome::Delivered { .. } => {
                        entry.outcome = "delivered".into();
                        entry.settled = true;
                        let newly = !std::mem::replace(&mut entry.ok, true);
                        let lane = self.lane_mut(r);
                        lane.ok_count += u32::from(newly);
                        lane.ever_ok = true;
                        lane.delivered = true;
                        let is_alert = lane.kind == LaneKind::Alert;
                        let del = self.delivery_mut(r.a, r.d);
                        del.reached |= is_alert;
                        if is_alert
                            && matches!(
                                del.state,
                                DeliveryState::Planned | DeliveryState::Attempting
                            )
                        {
                            del.state = DeliveryState::Reached;
                            del.since = *at;
                        }
                    }
                    Outcome::Failed { retryable, reason } => {
                        entry.outcome = format!("failed: {reason}");
                        entry.settled = true;
                        // Sent and then failed (a NAK, a permanent status report, a call
                        // cut off): that attempt did not get through after all.
                        if std::mem::replace(&mut entry.ok, false) {
                            let lane = self.lane_mut(r);
                            lane.ok_count = lane.ok_count.saturating_sub(1);
                            lane.ever_ok = lane.ok_count > 0 || lane.delivered;
                        }
                        let lane = self.lane(r);
                        if lane.current == Some(*attempt) && lane.status == LaneStatus::Active {
                            if *retryable && lane.used < lane.limit {
                                let backoff = self.delivery(r.a, r.d).plan.backoff_ms;
                                let due = *at + std::time::Duration::from_millis(backoff);
                                self.lane_mut(r).avoid = Some(device);
                                self.enqueue(r, due);
                            } else if !lane.ever_ok {
                                let is_alert = lane.kind == LaneKind::Alert;
                                self.lane_mut(r).status = LaneStatus::Dead;
                                if is_alert {
                                    self.open_fallback(r.a, r.d, *at);
                                }
                            }
                        }
                    }
                }
                self.touched.push((r.a, r.d));
            }
            Record::AttemptAbandoned {
                at,
                attempt,
                reason,
                possible_duplicate,
                ..
            } => {
                let entry = self
                    .attempts
                    .get_mut(attempt)
                    .ok_or_else(|| format!("unknown attempt {attempt} abandoned"))?;
                entry.outcome = format!("abandoned: {reason}");
                entry.settled = true;
                entry.done = true;
                entry.abandoned = true;
                entry.never_out = !*possible_duplicate;
                let (r, device) = (entry.lane, entry.device.clone());
                let lane = self.lane(r);
                if lane.current == Some(*attempt) && lane.status == LaneStatus::Active {
                    let lane = self.lane_mut(r);
                    // It never went out for sure, so it does not count against the limit.
                    lane.used = lane.used.saturating_sub(1);
                    lane.dup_next = *possible_duplicate;
                    lane.avoid = Some(device);
                    self.enqueue(r, *at);
                }
                if !*possible_duplicate {
                    self.unstart_window(r.a, r.d, *at);
                }
            }
            Record::AttemptCancelled {
                attempt, reason, ..
            } => {
                let entry = self
                    .attempts
                    .get_mut(attempt)
                    .ok_or_else(|| format!("unknown attempt {attempt} cancelled"))?;
                entry.outcome = format!("cancelled: {reason}");
                entry.settled = true;
                entry.done = true;
                entry.cancelled = true;
            }
            Record::Reminder {
                at,
                alert,
                person,
                n,
            } => {
                let (a, d) = self.find(alert, person)?;
                self.delivery_mut(a, d).reminders_done = *n;
                let n = *n;
                self.remove_timers(a, d, |k| matches!(k, TimerKind::Reminder(m) if m <= n));
                let lanes = self.delivery(a, d).lanes.len();
                for l in 0..ix(lanes) {
                    let r = LaneRef { a, d, l };
                    let lane = self.lane(r);
                    if lane.kind == LaneKind::Alert
                        && lane.status == LaneStatus::Active
                        && lane.used < lane.limit
                        && lane.queued.is_none()
                    {
                        self.enqueue(r, *at);
                    }
                }
            }
            Record::Escalated {
                at,
                alert,
                person,
                task,
                ..
            } => {
                let (a, d) = self.find(alert, person)?;
                // The person's own sends still queued carry on (under overload a first
                // attempt may not have left yet); only the reminders and deadline stop.
                self.remove_timers(a, d, |_| true);
                let del = self.delivery_mut(a, d);
                if del.state != DeliveryState::Escalated {
                    del.state = DeliveryState::Escalated;
                    del.since = *at;
                }
                del.escalated = true;
                del.tasks.push(task.clone());
                del.task_opened = Some(*at);
                del.task_started = false;
                del.task_accepted = None;
                let refs = self.codes.entry(task.code).or_default();
                let r = CodeRef { a, d, task: true };
                if !refs.contains(&r) {
                    refs.push(r);
                }
                let list = self
                    .assignee_tasks
                    .entry(task.assignee.clone())
                    .or_default();
                if !list.contains(&(a, d)) {
                    list.push((a, d));
                }
                for route in &task.routes {
                    self.add_lane(
                        a,
                        d,
                        LaneKind::Task(task.level),
                        route.clone(),
                        task.text.clone(),
                        *at,
                    );
                }
                // The task's deadline starts with its first attempt (see AttemptStarted).
                self.touched.push((a, d));
            }
            Record::NextBearer {
                at,
                alert,
                person,
                route,
                wait_ms,
            } => {
                let (a, d) = self.find(alert, person)?;
                self.remove_timers(a, d, |k| k == TimerKind::Deadline);
                let del = self.delivery_mut(a, d);
                del.silence_used = del.silence_used.saturating_add(1);
                // Past the route in the plan's fallback list, so that a permanent failure
                // later opens the one after it.
                if let Some(i) = del.plan.fallback.iter().position(|r| r == route) {
                    del.next_fallback = del.next_fallback.max(i + 1);
                }
                let message = del.plan.message.clone();
                self.add_lane(a, d, LaneKind::Alert, route.clone(), message, *at);
                let due = *at + std::time::Duration::from_millis(*wait_ms);
                self.add_timer(a, d, due, TimerKind::Deadline);
                self.touched.push((a, d));
            }
            Record::DeliveryClosed {
                at,
                alert,
                person,
                state,
                ..
            } => {
                let (a, d) = self.find(alert, person)?;
                self.close(a, d, *state, *at);
            }
            Record::DeliveryWithdrawn { at, alert, person } => {
                let (a, d) = self.find(alert, person)?;
                self.close(a, d, DeliveryState::Withdrawn, *at);
            }
            Record::NoticePlanned {
                at,
                alert,
                person,
                recipient,
                notice,
                text,
                route,
            } => {
                let (a, d) = self.find(alert, person)?;
                self.add_lane(
                    a,
                    d,
                    LaneKind::Notice(*notice, recipient.clone()),
                    route.clone(),
                    text.clone(),
                    *at,
                );
            }
            Record::Reply {
                at,
                device,
                from,
                text,
                evidence,
                verdict,
                ..
            } => match verdict {
                Verdict::Ack {
                    alert,
                    person,
                    late,
                    version,
                } => {
                    let (a, d) = self.find(alert, person)?;
                    let said = self.ack_said(device, evidence);
                    let del = self.delivery_mut(a, d);
                    if *version < del.plan.version {
                        // An answer to a message since superseded: it stays on record as
                        // that version's ack and leaves the current one open.
                        del.reached = true;
                        if let Some(e) = del.earlier.iter_mut().find(|e| e.version == *version)
                            && e.acked_at.is_none()
                        {
                            e.acked_at = Some(*at);
                            e.late = *late;
                        }
                        return Ok(());
                    }
                    del.acked_at = Some(*at);
                    del.ack_evidence = Some(format!("{from} via {device}: {text}{said}"));
                    del.late = *late;
                    del.reached = true;
                    self.close(a, d, DeliveryState::Acknowledged, *at);
                    self.uplink_acked(a, d);
                }
                Verdict::DoorKnockAccepted {
                    alert, person, by, ..
                } => {
                    let (a, d) = self.find(alert, person)?;
                    self.task_accepted(a, d, *at, by);
                }
                Verdict::DoorKnockConfirmed {
                    alert,
                    person,
                    by,
                    late,
                    ..
                } => {
                    let (a, d) = self.find(alert, person)?;
                    let said = self.ack_said(device, evidence);
                    let del = self.delivery_mut(a, d);
                    del.acked_at = Some(*at);
                    del.ack_evidence = Some(format!(
                        "door knock confirmed by {by}, {from} via {device}: {text}{said}"
                    ));
                    del.late = *late;
                    self.close(a, d, DeliveryState::Confirmed, *at);
                }
                Verdict::Duplicate { .. } => {}
                Verdict::Rejected {
                    alerts,
                    rejection: Rejection::WrongCode { .. } | Rejection::OthersCode { .. },
                } => {
                    // Every candidate tried was wrong (one that matched the sender's own
                    // record would have given another verdict).
                    let tried = match read_reply(text) {
                        ReplyForm::Codes(c) => c.len().min(MAX_CANDIDATES),
                        _ => 1,
                    };
                    self.note_wrong_codes(from, *at, tried);
                    for alert in alerts {
                        if let Some(&a) = self.alert_ix.get(alert) {
                            self.alerts[a as usize].rejected += 1;
                        }
                    }
                }
                Verdict::Rejected {
                    alerts,
                    rejection: Rejection::NotRelayed { person, .. },
                } => {
                    // A kit's ack for someone of its own whom the district did not target
                    // in the alert is no forgery: recorded, not counted as a rejected
                    // reply. One for a target the kit does not serve still counts.
                    for alert in alerts {
                        if let Some(&a) = self.alert_ix.get(alert)
                            && self.alerts[a as usize].by_person.contains_key(person)
                        {
                            self.alerts[a as usize].rejected += 1;
                        }
                    }
                }
                Verdict::Rejected { alerts, .. } => {
                    for alert in alerts {
                        if let Some(&a) = self.alert_ix.get(alert) {
                            self.alerts[a as usize].rejected += 1;
                        }
                    }
                }
            },
            Record::AnnouncementPlanned { .. }
            | Record::AnnouncementStarted { .. }
            | Record::AnnouncementOutcome { .. }
            | Record::AnnouncementClosed { .. } => self.apply_announcement(rec)?,
            Record::RelayStarted { .. }
            | Record::RelayOutcome { .. }
            | Record::RelayFailed { .. }
            | Record::UplinkStarted { .. }
            | Record::UplinkOutcome { .. } => self.apply_relay(rec)?,
            Record::DeviceHealth { device, up, .. } => {
                if *up {
                    self.down.remove(device);
                } else {
                    self.down.insert(device.clone());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_keeps_exact_fractional_rates() {
        // 7 per minute: 8571.428... ms apart; the k-th send must stay on the exact grid.
        let interval_us = 60_000_000 / 7;
        let mut b = Bucket::default();
        let mut t = Timestamp(0);
        for _ in 0..700 {
            assert!(b.next_free() <= t);
            b.consume(t, interval_us);
            t = b.next_free();
        }
        // 700 sends: the 701st may go at 700 intervals, within a millisecond.
        assert!((t.0 - 700 * interval_us / 1000).abs() <= 1, "{t}");
        // An idle device does not bank sends (burst 1).
        let mut idle = Bucket::default();
        idle.consume(Timestamp(0), 10_000_000);
        idle.consume(Timestamp(60_000), 10_000_000);
        assert_eq!(idle.next_free(), Timestamp(70_000));
    }
}
