//! The router: handlers that turn inputs into records (and commands), and the send pump.

use crate::plan::{AlertPlan, Contact, TargetReason};
use crate::policy::{Policies, ResolvedPolicy};
use crate::record::{
    DeliveryPlan, DoorKnockTask, NoticeKind, Outcome, Purpose, Record, Rejection, Route, Verdict,
    version_code,
};
use crate::reply::{ReplyForm, read_reply};
use crate::state::{
    CodeRef, Lane, LaneKind, LaneRef, LaneStatus, MAX_CANDIDATES, MAX_LEVELS, QUEUES, State,
    TEXTS_PER_CALL, TimerKind, ix,
};
use crate::text;
use crate::view::{AlertState, DeliveryState};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;
use tocsin_channel::{Capabilities, DeviceEvent, DriverCommand, DriverEvent, Health, Outbound};
use tocsin_core::{
    AckCode, AckKey, Address, AlertId, AttemptId, Bearer, DeviceId, Grade, PersonId, Timestamp,
};

/// What the router needs to run.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// Grade policies.
    pub policies: Policies,
    /// The secret ack codes are derived from.
    pub ack_key: AckKey,
    /// The devices the drivers own, with what they can do.
    pub devices: Vec<DeviceInfo>,
}

/// One device as the router plans with it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceInfo {
    /// Device id (from config).
    pub id: DeviceId,
    /// What it can do; `per_minute` is its send budget.
    pub caps: Capabilities,
    /// The physical line (modem) it shares with other devices, if any: an AT modem with
    /// voice is two devices, `NAME` (SMS) and `NAME-voice` (calls), on line `NAME`. While
    /// a call is in progress on a line (started, accepted or sent; at most
    /// [`LINE_HOLD_MAX`]) no device of the line is handed a new send — the modem could not
    /// send it, and the person's ack window would run while it waits; they are busy, not
    /// down. Between two calls up to four texts due on the line go first. `None` for
    /// a device that is a line of its own.
    pub line: Option<String>,
}

/// What the router asks the daemon to do, in order.
#[derive(Clone, Debug, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "most outputs are records, drained at once; boxing each would allocate per record"
)]
pub enum Output {
    /// Append this record to the durable log (all records of one batch in one transaction).
    Record(crate::record::Record),
    /// After the batch's records are committed, hand this command to the device's driver.
    Command {
        /// Which device.
        device: DeviceId,
        /// What to do.
        command: DriverCommand,
    },
}

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    /// An alert with this id is already known.
    #[error("alert {0} already exists")]
    DuplicateAlert(AlertId),
    /// No alert with this id.
    #[error("no alert {0}")]
    UnknownAlert(AlertId),
    /// The alert is cancelled; it cannot be updated or cancelled again.
    #[error("alert {0} is cancelled")]
    Cancelled(AlertId),
    /// A record in the log does not fit the state built from the records before it.
    #[error("log record {index} cannot be applied: {reason}")]
    Corrupt {
        /// Position of the record in the log (0-based).
        index: usize,
        /// What does not fit.
        reason: String,
    },
}

/// The 叫应 engine. See the crate docs for the contract with the daemon.
pub struct Router {
    pub(crate) config: RouterConfig,
    pub(crate) state: State,
    /// Devices per bearer, in config order (indices into `config.devices`).
    pub(crate) bearer_devices: Vec<(Bearer, Vec<usize>)>,
    /// The latest health each driver reported (telemetry for views, not replayed).
    pub(crate) health: HashMap<DeviceId, Health>,
    /// Per device (index into `config.devices`): the other devices on its line.
    line_mates: Vec<Vec<usize>>,
    /// Indices into `bearer_devices` in the order the pump serves them: as configured,
    /// except that when lines are shared the call bearer goes last, so a line freed by a
    /// call first takes the texts waiting for it rather than the next call.
    pump_order: Vec<usize>,
    outputs: VecDeque<Output>,
}

/// Longest a call holds its line: past this after its start the line is free again even
/// without the call's outcome (a call from before a restart that no driver will report).
/// Above the AT driver's longest ring (60 s) plus its longest call (180 s by default).
pub const LINE_HOLD_MAX: Duration = Duration::from_secs(300);

/// Why a record is escalated when none of its warnings could start within its window.
pub(crate) const NOT_ATTEMPTED: &str = "not attempted: no device could send in time";

/// Why a record is escalated further when an accepted door-knock task's visit was not
/// confirmed within its visit window.
pub(crate) const VISIT_OVERDUE: &str =
    "door knock accepted but the visit was not confirmed in time";

/// Door-knock task codes are derived like the person's own code, for the pseudo-person
/// `{person}/door`: distinct from every person's code and the same at every level.
pub fn door_code(key: &AckKey, alert: &AlertId, person: &PersonId) -> AckCode {
    AckCode::derive(key, alert, &PersonId(format!("{person}/door")))
}

/// The door-knock code of a chain opened for `version` of the person's warning: version 1
/// keeps [`door_code`]; a later version's chain (after an update re-notified a record that
/// had been closed) gets its own, from `{person}#v{version}/door`, so a confirmation of
/// the earlier visit does not confirm the new one.
pub fn door_code_of(key: &AckKey, alert: &AlertId, person: &PersonId, version: u32) -> AckCode {
    if version <= 1 {
        door_code(key, alert, person)
    } else {
        AckCode::derive(key, alert, &PersonId(format!("{person}#v{version}/door")))
    }
}

/// What a record is planned from.
enum Prior {
    /// Nothing: a new record.
    New,
    /// A withdrawn record whose person is back in the area, at this version.
    Back(u32),
    /// An open record re-planned without re-notifying: its plan and window start.
    Keep(DeliveryPlan, Option<Timestamp>),
    /// A record re-notified: the next version after `old`; `open` if it is not final.
    Renotify {
        /// The current plan.
        old: DeliveryPlan,
        /// Whether the record is still open.
        open: bool,
    },
}

impl Router {
    /// A router with no alerts.
    pub fn new(config: RouterConfig) -> Router {
        let mut bearer_devices: Vec<(Bearer, Vec<usize>)> = Vec::new();
        let mut state = State::default();
        for (i, dev) in config.devices.iter().enumerate() {
            match bearer_devices
                .iter_mut()
                .find(|(b, _)| *b == dev.caps.bearer)
            {
                Some((_, list)) => list.push(i),
                None => bearer_devices.push((dev.caps.bearer, vec![i])),
            }
            state
                .intervals
                .insert(dev.id.clone(), interval_us(dev.caps.per_minute));
            if dev.caps.sender_authenticated {
                state.authenticated.insert(dev.id.clone());
            }
            if let Some(line) = &dev.line {
                state.lines.insert(dev.id.clone(), line.clone());
            }
        }
        let line_mates: Vec<Vec<usize>> = config
            .devices
            .iter()
            .enumerate()
            .map(|(i, dev)| {
                let Some(line) = &dev.line else {
                    return Vec::new();
                };
                (config.devices.iter().enumerate())
                    .filter(|(j, o)| *j != i && o.line.as_ref() == Some(line))
                    .map(|(j, _)| j)
                    .collect()
            })
            .collect();
        let shared = line_mates.iter().any(|m| !m.is_empty());
        let mut pump_order: Vec<usize> = (0..bearer_devices.len()).collect();
        if shared {
            pump_order.sort_by_key(|&b| bearer_devices[b].0 == Bearer::Voice);
        }
        Router {
            config,
            state,
            bearer_devices,
            line_mates,
            pump_order,
            health: HashMap::new(),
            outputs: VecDeque::new(),
        }
    }

    /// Rebuilds the state from the log (records in the order they were emitted), then
    /// resumes: attempts started without an outcome are re-issued (marked
    /// `possible_duplicate`), overdue timers fire, sends resume. Every device is assumed up
    /// until its driver reports otherwise. Drain [`Router::poll_output`] afterwards: it
    /// holds the records and commands of the resume itself.
    pub fn restore(
        config: RouterConfig,
        records: impl IntoIterator<Item = Record>,
        now: Timestamp,
    ) -> Result<Router, RouterError> {
        let mut r = Router::new(config);
        for (index, rec) in records.into_iter().enumerate() {
            r.state
                .apply(&rec)
                .map_err(|reason| RouterError::Corrupt { index, reason })?;
        }
        r.state.touched.clear();
        r.state.down.clear();
        // Announcements handed over but never started by the driver are handed over
        // again (the driver forgot them in the restart); planned ones go out now.
        r.resume_announcements(now);
        r.resume_relays();
        let mut lost: Vec<AttemptId> = r
            .state
            .attempts
            .iter()
            .filter(|(id, e)| {
                let lane = r.state.lane(e.lane);
                !e.settled && lane.current == Some(**id) && lane.status == LaneStatus::Active
            })
            .map(|(id, _)| *id)
            .collect();
        lost.sort();
        for id in lost {
            if let Some((alert, person)) = r.attempt_owner(id) {
                r.emit(Record::AttemptAbandoned {
                    at: now,
                    alert,
                    person,
                    attempt: id,
                    reason: "restart: no outcome before the gateway stopped".into(),
                    possible_duplicate: true,
                });
            }
        }
        for (a, entry) in r.state.alerts.iter().enumerate() {
            for (d, del) in entry.deliveries.iter().enumerate() {
                if !del.closed {
                    r.state.touched.push((a as u32, d as u32));
                }
            }
        }
        r.handle_timeout(now);
        Ok(r)
    }

    /// A new alert: plans a record per target and sends the first attempts that the send
    /// budgets allow right away.
    pub fn handle_alert(&mut self, now: Timestamp, plan: AlertPlan) -> Result<(), RouterError> {
        if self.state.alert_ix.contains_key(&plan.alert.id) {
            return Err(RouterError::DuplicateAlert(plan.alert.id.clone()));
        }
        let alert_id = plan.alert.id.clone();
        let targets = dedup_targets(&plan);
        self.emit(Record::AlertAccepted { at: now, plan });
        let a = self.alert_index(&alert_id)?;
        for (person, responsible) in targets {
            let dplan = self.plan_delivery(a, &person, responsible, Prior::New);
            self.emit(Record::DeliveryPlanned {
                at: now,
                alert: alert_id.clone(),
                person,
                plan: dplan,
            });
        }
        self.plan_announcements(now, a);
        self.settle(now);
        self.pump(now);
        Ok(())
    }

    /// The same alert with a new grade, text or area: [`Router::handle_update_with`]
    /// without the operator's re-notify mark.
    pub fn handle_update(&mut self, now: Timestamp, plan: AlertPlan) -> Result<(), RouterError> {
        self.handle_update_with(now, plan, false)
    }

    /// The same alert with a new grade, text or area. New targets are planned; people no
    /// longer targeted and not yet final are withdrawn (and told, as are the door-knock
    /// assignees of their record, if already contacted).
    ///
    /// An update that raises the grade, changes the instruction text (`Alert::text`) or
    /// the exercise mark, or that the operator marks `re_notify`, re-notifies: every
    /// person still inside the area — those who already acknowledged, were reached, were
    /// confirmed by a door knock or closed unreached included — gets the new message with
    /// a new version of their record: a fresh code ([`crate::record::version_code`]) and
    /// a new ack window from its first attempt. Their earlier ack stays on record as the
    /// ack of the earlier version, and a reply that still carries the earlier code counts
    /// for that version only. Any other update (a lower grade alone, a new headline) does
    /// not re-open final records; open ones continue, re-planned with the new text in
    /// their running window (under the stronger of the two grades' policies).
    pub fn handle_update_with(
        &mut self,
        now: Timestamp,
        plan: AlertPlan,
        re_notify: bool,
    ) -> Result<(), RouterError> {
        let alert_id = plan.alert.id.clone();
        let a = self.alert_index(&alert_id)?;
        if self.state.alert(a).state == AlertState::Cancelled {
            return Err(RouterError::Cancelled(alert_id));
        }
        let old = self.state.alert(a).plan.alert.clone();
        let changed = old.grade != plan.alert.grade
            || old.headline != plan.alert.headline
            || old.text != plan.alert.text
            || old.exercise != plan.alert.exercise;
        let renotify = re_notify
            || plan.alert.grade > old.grade
            || old.text != plan.alert.text
            || old.exercise != plan.alert.exercise;
        let targets = dedup_targets(&plan);
        let target_set: BTreeSet<&PersonId> = targets.iter().map(|(p, _)| p).collect();
        self.emit(Record::AlertUpdated {
            at: now,
            plan: plan.clone(),
        });

        let n = self.state.alert(a).deliveries.len() as u32;
        for d in 0..n {
            let del = self.state.delivery(a, d);
            if del.closed || target_set.contains(&del.person) {
                continue;
            }
            let person = del.person.clone();
            let (name, town) = (del.name.clone(), del.town.clone());
            let notice = self.notice_route(a, d, |l| l.kind == LaneKind::Alert);
            // Door-knock assignees already sent a task for this person are told the
            // visit is off, as a cancellation tells them; each once, by the route their
            // task went.
            let assignees = self.task_notices(a, d);
            self.emit(Record::DeliveryWithdrawn {
                at: now,
                alert: alert_id.clone(),
                person: person.clone(),
            });
            if let Some(route) = notice {
                self.emit(Record::NoticePlanned {
                    at: now,
                    alert: alert_id.clone(),
                    person: person.clone(),
                    recipient: person.clone(),
                    notice: NoticeKind::Withdrawn,
                    text: text::withdrawn_message(&plan.alert),
                    route,
                });
            }
            for (recipient, route) in assignees {
                self.emit(Record::NoticePlanned {
                    at: now,
                    alert: alert_id.clone(),
                    person: person.clone(),
                    recipient,
                    notice: NoticeKind::Withdrawn,
                    text: text::task_withdrawn_message(&plan.alert, &name, &town),
                    route,
                });
            }
        }
        for (person, responsible) in targets {
            match self.state.alert(a).by_person.get(&person).copied() {
                None => {
                    let dplan = self.plan_delivery(a, &person, responsible, Prior::New);
                    self.emit(Record::DeliveryPlanned {
                        at: now,
                        alert: alert_id.clone(),
                        person,
                        plan: dplan,
                    });
                }
                Some(d) => {
                    let del = self.state.delivery(a, d);
                    let back = del.closed && del.state == DeliveryState::Withdrawn;
                    let prior = if renotify {
                        Prior::Renotify {
                            old: del.plan.clone(),
                            open: !del.closed,
                        }
                    } else if back {
                        Prior::Back(del.plan.version)
                    } else if !del.closed && changed {
                        Prior::Keep(del.plan.clone(), del.window_from)
                    } else {
                        continue;
                    };
                    {
                        let dplan = self.plan_delivery(a, &person, responsible, prior);
                        self.emit(Record::DeliveryReplanned {
                            at: now,
                            alert: alert_id.clone(),
                            person,
                            plan: dplan,
                        });
                    }
                }
            }
        }
        self.plan_announcements(now, a);
        self.settle(now);
        self.pump(now);
        Ok(())
    }

    /// Cancels an alert: queued sends are dropped (drivers are told to cancel what they
    /// hold), open records become cancelled, and everyone already contacted — door-knock
    /// assignees included — gets the cancellation notice.
    pub fn handle_cancel(
        &mut self,
        now: Timestamp,
        alert: &AlertId,
        by: &str,
    ) -> Result<(), RouterError> {
        let a = self.alert_index(alert)?;
        if self.state.alert(a).state == AlertState::Cancelled {
            return Err(RouterError::Cancelled(alert.clone()));
        }
        let n = self.state.alert(a).deliveries.len() as u32;
        let mut notices = Vec::new();
        for d in 0..n {
            let del = self.state.delivery(a, d);
            let person = del.person.clone();
            if let Some(route) = self.notice_route(a, d, |l| l.kind == LaneKind::Alert) {
                notices.push((person.clone(), person.clone(), route));
            }
            for (assignee, route) in self.task_notices(a, d) {
                notices.push((person.clone(), assignee, route));
            }
        }
        let speakers = self.speaker_cancels(a);
        self.emit(Record::AlertCancelled {
            at: now,
            alert: alert.clone(),
            by: by.to_owned(),
        });
        self.cancel_announcements(now, a, speakers);
        let text = text::cancel_message(&self.state.alert(a).plan.alert);
        for (person, recipient, route) in notices {
            self.emit(Record::NoticePlanned {
                at: now,
                alert: alert.clone(),
                person,
                recipient,
                notice: NoticeKind::Cancelled,
                text: text.clone(),
                route,
            });
        }
        self.pump(now);
        Ok(())
    }

    /// A fact from a driver: attempt outcomes, replies (judged and recorded, then the
    /// device's receipt released), health changes.
    pub fn handle_device_event(&mut self, now: Timestamp, event: DeviceEvent) {
        let DeviceEvent { device, event, .. } = event;
        match event {
            DriverEvent::Accepted { attempt } => {
                self.outcome(now, &device, attempt, Outcome::Accepted)
            }
            DriverEvent::Sent { attempt, reference } => {
                self.outcome(now, &device, attempt, Outcome::Sent { reference })
            }
            DriverEvent::Delivered { attempt, evidence } => {
                self.outcome(now, &device, attempt, Outcome::Delivered { evidence })
            }
            DriverEvent::Failed {
                attempt,
                retryable,
                reason,
            } => self.outcome(now, &device, attempt, Outcome::Failed { retryable, reason }),
            DriverEvent::Inbound {
                from,
                text,
                evidence,
                sent_at,
                receipt,
                in_reply_to,
            } => {
                let verdict = self.judge(now, &device, &from, &text, in_reply_to);
                self.emit(Record::Reply {
                    at: now,
                    device: device.clone(),
                    from,
                    text,
                    evidence,
                    sent_at,
                    receipt: receipt.clone(),
                    in_reply_to,
                    verdict,
                });
                if let Some(receipt) = receipt {
                    self.command(device, DriverCommand::Release(receipt));
                }
            }
            DriverEvent::Health(h) => {
                let was_up = self.state.is_up(&device);
                let up = h.up;
                let detail = h.last_error.clone();
                self.health.insert(device.clone(), h);
                if up != was_up {
                    self.emit(Record::DeviceHealth {
                        at: now,
                        device: device.clone(),
                        up,
                        detail,
                    });
                    if !up {
                        self.move_off(now, &device);
                        self.close_stranded(now);
                    } else {
                        self.start_announcements(now, Some(&device));
                    }
                }
            }
            // Frames between Tocsin nodes are decoded by the daemon before the router.
            DriverEvent::Unrecognized { .. } | DriverEvent::Frame { .. } => {}
        }
        self.settle(now);
        self.pump(now);
    }

    /// Time passed: reminders, deadlines, escalations, and sends whose budget came free.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let mut due = Vec::new();
        while let Some(&first) = self.state.timers.first() {
            if first.0 > now {
                break;
            }
            self.state.timers.remove(&first);
            due.push(first);
        }
        for (_, a, d, kind) in due {
            self.fire(now, a, d, kind);
        }
        while let Some(&first) = self.state.speaker_timers.first() {
            if first.0 > now {
                break;
            }
            self.state.speaker_timers.remove(&first);
            self.announcement_window_over(now, first.1, first.2);
        }
        self.relay_timers_due(now);
        self.settle(now);
        self.pump(now);
    }

    /// The next output, or `None` when drained.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to call [`Router::handle_timeout`] next: the earliest timer or send-budget
    /// instant at which there is work. Exact; no polling.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let mut t = self.state.timers.first().map(|e| e.0);
        if let Some(s) = self.state.speaker_timers.first() {
            t = Some(t.map_or(s.0, |t| t.min(s.0)));
        }
        if let Some(s) = self.relay_timeout() {
            t = Some(t.map_or(s, |t| t.min(s)));
        }
        for (bearer, devs) in &self.bearer_devices {
            let Some(queue) = self.state.queues.get(bearer) else {
                continue;
            };
            let head = queue.iter().filter_map(|s| s.first().map(|e| e.0)).min();
            let Some(head) = head else { continue };
            let free = devs
                .iter()
                .filter_map(|&i| {
                    let at = self.ready_at(i)?.max(self.line_busy_until(i, None)?);
                    Some(self.texts_first_until(i).map_or(at, |t| t.max(at)))
                })
                .min();
            if let Some(free) = free {
                let cand = head.max(free);
                t = Some(t.map_or(cand, |t| t.min(cand)));
            }
        }
        t
    }

    pub(crate) fn emit(&mut self, rec: Record) {
        // Handlers only emit records that fit the state; an error here would be a bug in
        // the router, and refusing the record would lose a fact, so it is kept regardless.
        let applied = self.state.apply(&rec);
        debug_assert!(applied.is_ok(), "{applied:?} for {rec:?}");
        let finals = self.finalised(&rec);
        let at = rec.at();
        self.outputs.push_back(Output::Record(rec));
        for (a, d, reason) in finals {
            self.cancel_open(at, a, d, &reason);
        }
    }

    /// The records a just-applied record made final, with why: their attempts still with
    /// a driver are cancelled. Not an escalation: the person may still answer.
    fn finalised(&self, rec: &Record) -> Vec<(u32, u32, String)> {
        let one = |alert: &AlertId, person: &PersonId, why: String| {
            self.state
                .find(alert, person)
                .ok()
                .map(|(a, d)| vec![(a, d, why)])
                .unwrap_or_default()
        };
        match rec {
            Record::DeliveryClosed {
                alert,
                person,
                state,
                ..
            } => one(
                alert,
                person,
                format!("closed {}", format!("{state:?}").to_lowercase()),
            ),
            Record::DeliveryWithdrawn { alert, person, .. } => {
                one(alert, person, "withdrawn".to_owned())
            }
            Record::Reply {
                verdict: Verdict::Ack { alert, person, .. },
                ..
            } => one(alert, person, "acknowledged".to_owned()),
            Record::Reply {
                verdict: Verdict::DoorKnockConfirmed { alert, person, .. },
                ..
            } => one(alert, person, "confirmed by door knock".to_owned()),
            Record::AlertCancelled { alert, .. } => match self.state.alert_ix.get(alert) {
                Some(&a) => (0..self.state.alert(a).deliveries.len() as u32)
                    .map(|d| (a, d, "alert cancelled".to_owned()))
                    .collect(),
                None => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    pub(crate) fn command(&mut self, device: DeviceId, command: DriverCommand) {
        self.outputs.push_back(Output::Command { device, command });
    }

    fn alert_index(&self, alert: &AlertId) -> Result<u32, RouterError> {
        self.state
            .alert_ix
            .get(alert)
            .copied()
            .ok_or_else(|| RouterError::UnknownAlert(alert.clone()))
    }

    fn attempt_owner(&self, id: AttemptId) -> Option<(AlertId, PersonId)> {
        let e = self.state.attempts.get(&id)?;
        let entry = self.state.alert(e.lane.a);
        let del = self.state.delivery(e.lane.a, e.lane.d);
        Some((entry.plan.alert.id.clone(), del.person.clone()))
    }

    fn outcome(&mut self, now: Timestamp, device: &DeviceId, attempt: AttemptId, outcome: Outcome) {
        // Events about attempts this log never started (another node's, or garbage) change
        // nothing and are dropped.
        if let Some((alert, person)) = self.attempt_owner(attempt) {
            self.emit(Record::AttemptOutcome {
                at: now,
                alert,
                person,
                attempt,
                device: device.clone(),
                outcome,
            });
        } else if let Some((alert, speaker)) = self.announcement_owner(attempt) {
            self.emit(Record::AnnouncementOutcome {
                at: now,
                alert,
                speaker,
                attempt,
                device: device.clone(),
                outcome,
            });
        } else {
            self.relay_outcome(now, device, attempt, outcome);
        }
    }

    /// A device went down: what it holds but has not sent goes to another device.
    fn move_off(&mut self, now: Timestamp, device: &DeviceId) {
        let mut held: Vec<(AttemptId, bool)> = self
            .state
            .attempts
            .iter()
            .filter(|(id, e)| {
                let lane = self.state.lane(e.lane);
                &e.device == device
                    && !e.settled
                    && lane.current == Some(**id)
                    && lane.status == LaneStatus::Active
            })
            .map(|(id, e)| (*id, e.accepted))
            .collect();
        held.sort();
        for (id, accepted) in held {
            if let Some((alert, person)) = self.attempt_owner(id) {
                self.emit(Record::AttemptAbandoned {
                    at: now,
                    alert,
                    person,
                    attempt: id,
                    reason: format!("device {device} down"),
                    possible_duplicate: accepted,
                });
                self.command(device.clone(), DriverCommand::Cancel(id));
            }
        }
    }

    /// The record is final: every warning and door-knock attempt of it still with a driver
    /// (started, accepted or sent; not delivered, failed, abandoned or already cancelled)
    /// is recorded cancelled and its driver told to stop it — a queued send is dropped, a
    /// ringing call cancelled, an answered one hung up. Queued lanes were already stopped
    /// by the closing record itself. Notices are never cancelled: they are what is sent
    /// after the record closes.
    fn cancel_open(&mut self, now: Timestamp, a: u32, d: u32, reason: &str) {
        let del = self.state.delivery(a, d);
        let mut open: Vec<(AttemptId, DeviceId)> = del
            .attempts
            .iter()
            .filter_map(|id| {
                let e = self.state.attempts.get(id)?;
                let notice = matches!(self.state.lane(e.lane).kind, LaneKind::Notice(..));
                (!e.done && !notice).then(|| (*id, e.device.clone()))
            })
            .collect();
        if open.is_empty() {
            return;
        }
        open.sort();
        let alert = self.state.alert(a).plan.alert.id.clone();
        let person = del.person.clone();
        for (attempt, device) in open {
            self.emit(Record::AttemptCancelled {
                at: now,
                alert: alert.clone(),
                person: person.clone(),
                attempt,
                device: device.clone(),
                reason: reason.to_owned(),
            });
            self.command(device, DriverCommand::Cancel(attempt));
        }
    }

    /// Each door-knock assignee of a record that a task was sent to, once, with the route
    /// a notice to them should take.
    fn task_notices(&self, a: u32, d: u32) -> Vec<(PersonId, Route)> {
        let del = self.state.delivery(a, d);
        let mut told = BTreeSet::new();
        let mut out = Vec::new();
        for task in &del.tasks {
            if told.contains(&task.assignee) {
                continue;
            }
            let level = task.level;
            // The lane of this task (levels repeat in a later version's chain; codes do not).
            let this = |l: &Lane| l.kind == LaneKind::Task(level) && l.code == task.code;
            if let Some(route) = self.notice_route(a, d, this) {
                told.insert(task.assignee.clone());
                out.push((task.assignee.clone(), route));
            }
        }
        out
    }

    /// The route a notice should take: the lane (of the given kind) that worked best.
    fn notice_route(&self, a: u32, d: u32, which: impl Fn(&Lane) -> bool) -> Option<Route> {
        let del = self.state.delivery(a, d);
        let tried = || {
            del.lanes
                .iter()
                .filter(|l| which(l) && l.used > 0 && self.has_device(l.route.bearer))
        };
        tried()
            .find(|l| l.delivered)
            .or_else(|| tried().find(|l| l.ever_ok))
            .or_else(|| tried().next())
            .map(|l| l.route.clone())
    }

    fn has_device(&self, bearer: Bearer) -> bool {
        self.bearer_devices.iter().any(|(b, _)| *b == bearer)
    }

    fn route(&self, contact: Option<&Contact>, bearer: Bearer) -> Option<Route> {
        if !self.has_device(bearer) {
            return None;
        }
        let to = contact?.addresses.iter().find(|a| a.serves(bearer))?;
        Some(Route {
            bearer,
            to: to.clone(),
        })
    }

    /// First-round routes (parallel, plus the best of `best_of`) and fallbacks.
    pub(crate) fn routes(
        &self,
        contact: Option<&Contact>,
        pol: &ResolvedPolicy,
    ) -> (Vec<Route>, Vec<Route>) {
        let mut first: Vec<Route> = Vec::new();
        for &b in &pol.parallel {
            if first.iter().all(|r| r.bearer != b)
                && let Some(r) = self.route(contact, b)
            {
                first.push(r);
            }
        }
        if let Some(r) = pol
            .best_of
            .iter()
            .filter(|b| first.iter().all(|r| r.bearer != **b))
            .find_map(|&b| self.route(contact, b))
        {
            first.push(r);
        }
        // The other off-grid candidates come first among the fallbacks: when the best
        // off-grid bearer fails for good (a mesh NAK, a dead card), the next one the
        // person has an address and the gateway a device for is tried, then the
        // policy's own fallbacks.
        let mut fallback: Vec<Route> = Vec::new();
        for &b in pol.best_of.iter().chain(&pol.fallback) {
            if first.iter().chain(&fallback).all(|r| r.bearer != b)
                && let Some(r) = self.route(contact, b)
            {
                fallback.push(r);
            }
        }
        (first, fallback)
    }

    /// Plans one record. `responsible`: targeted for a named area the person answers for.
    /// With [`Prior::Keep`] (an open record re-planned without re-notifying: its plan and
    /// window start), the old window and reminders stand and the stronger of the two
    /// policies applies; otherwise the window starts again with the first attempt of the
    /// new plan. [`Prior::Renotify`] plans the next version, with its own code.
    fn plan_delivery(
        &self,
        a: u32,
        person: &PersonId,
        responsible: bool,
        prior: Prior,
    ) -> DeliveryPlan {
        let entry = self.state.alert(a);
        let alert = &entry.plan.alert;
        let contact = entry.contacts.get(person);
        let role = contact.map_or(tocsin_core::Role::Resident, |c| c.role);
        let (version, grade, keep) = match prior {
            Prior::New => (1, alert.grade, None),
            Prior::Back(v) => (v, alert.grade, None),
            // An open record keeps the stronger policy; a re-opened one takes the new
            // grade's.
            Prior::Renotify { old, open } => (
                old.version.saturating_add(1),
                if open {
                    old.grade.max(alert.grade)
                } else {
                    alert.grade
                },
                None,
            ),
            Prior::Keep(k, from) => {
                let grade = k.grade.max(alert.grade);
                let raised = alert.grade > k.grade;
                (k.version, grade, (!raised).then_some((k, from)))
            }
        };
        let pol = self.config.policies.resolve_for(grade, &alert.kind, role);
        let code = version_code(&self.config.ack_key, &alert.id, person, version);
        let (routes, fallback) = self.routes(contact, &pol);
        let (window_ms, reminders_ms, window_from) = match keep {
            Some((k, from)) => (k.window_ms, k.reminders_ms, from),
            _ => {
                let window_ms = pol.ack_deadline_s.saturating_mul(1000);
                let n = u64::from(pol.reminders);
                let reminders = (1..=n)
                    .map(|k| window_ms.saturating_mul(k) / (n + 1))
                    .collect();
                (window_ms, reminders, None)
            }
        };
        DeliveryPlan {
            code,
            message: text::alert_message(alert, pol.ack_required.then_some(code)),
            grade,
            ack_required: pol.ack_required,
            escalate: pol.escalate,
            routes,
            fallback,
            attempts_per_route: pol.attempts_per_bearer,
            backoff_ms: pol.retry_backoff_s.saturating_mul(1000),
            responsible: responsible || role.is_responsible(),
            window_ms,
            reminders_ms,
            window_from,
            task_deadline_ms: pol.door_knock_deadline_s.saturating_mul(1000),
            version,
            silence_fallbacks: pol.silence_fallbacks,
            silence_wait_ms: pol.silence_wait_s.saturating_mul(1000),
        }
    }

    fn fire(&mut self, now: Timestamp, a: u32, d: u32, kind: TimerKind) {
        let entry = self.state.alert(a);
        let del = self.state.delivery(a, d);
        if del.closed || entry.state != AlertState::Active {
            return;
        }
        let (alert, person) = (entry.plan.alert.id.clone(), del.person.clone());
        match kind {
            TimerKind::Reminder(n) => {
                if del.state != DeliveryState::Escalated && del.reminders_done < n {
                    self.emit(Record::Reminder {
                        at: now,
                        alert,
                        person,
                        n,
                    });
                }
            }
            TimerKind::Deadline => {
                if del.state == DeliveryState::Escalated {
                    return;
                }
                // Silence: the policy may try the next bearer before escalating (orange).
                if del.plan.ack_required
                    && del.silence_used < del.plan.silence_fallbacks
                    && let (_, Some(route)) = self.state.next_fallback(a, d)
                {
                    let wait_ms = del.plan.silence_wait_ms.max(1);
                    self.emit(Record::NextBearer {
                        at: now,
                        alert,
                        person,
                        route,
                        wait_ms,
                    });
                    self.state.touched.push((a, d));
                    return;
                }
                if del.plan.ack_required && del.plan.escalate {
                    self.escalate(now, a, d);
                } else if del.plan.ack_required {
                    self.close(
                        now,
                        a,
                        d,
                        DeliveryState::Unreached,
                        "no ack by the deadline",
                    );
                } else if del.state == DeliveryState::Reached {
                    self.close(now, a, d, DeliveryState::Reached, "delivered");
                } else if self.awaits_first_send(a, d) {
                    // A lane of the warning still waits its turn in the queue (the app
                    // push went out at once, the SMS is behind the leads'): closing now
                    // would cancel the send that may reach the person. Its first attempt
                    // gives the record a new deadline (see `State::hold_for_lane`).
                    return;
                } else {
                    self.close(
                        now,
                        a,
                        d,
                        DeliveryState::Unreached,
                        "no delivery report by the deadline",
                    );
                }
            }
            TimerKind::Task(level) => {
                if del.state == DeliveryState::Escalated
                    && del.task_accepted.is_none()
                    && del.tasks.last().is_some_and(|t| t.level == level)
                {
                    self.escalate(now, a, d);
                }
            }
            TimerKind::Visit(level) => {
                // Accepted, and nobody confirmed the visit in time: the next one up goes.
                if del.state == DeliveryState::Escalated
                    && del.task_accepted.is_some()
                    && del.tasks.last().is_some_and(|t| t.level == level)
                {
                    self.escalate_because(now, a, d, Some(VISIT_OVERDUE));
                }
            }
            TimerKind::NotAttempted => {
                // Nothing went out for a whole window: every device of the person's
                // bearers is down or saturated. The queued sends stay queued; a
                // supervisor goes meanwhile.
                if del.state == DeliveryState::Planned
                    && del.window_from.is_none()
                    && del.plan.ack_required
                    && del.plan.escalate
                {
                    self.escalate_because(now, a, d, Some(NOT_ATTEMPTED));
                }
            }
        }
        self.state.touched.push((a, d));
    }

    /// Whether a warning lane of the record is still waiting for its first attempt on a
    /// bearer with a device that is up (it will be sent when its turn comes). A function
    /// of the state alone: the deadline's decision is the same live and after a restore.
    fn awaits_first_send(&self, a: u32, d: u32) -> bool {
        let del = self.state.delivery(a, d);
        del.lanes.iter().any(|l| {
            l.kind == LaneKind::Alert
                && l.status == LaneStatus::Active
                && l.used == 0
                && l.queued.is_some()
                && self.bearer_up(l.route.bearer)
        })
    }

    /// Records that need no ack, past their deadline and held open only for a lane whose
    /// bearer has just lost its last device: nothing will move them now, so they close as
    /// the deadline would have closed them had the device been down then. Taken when a
    /// device goes down (a recorded fact), so a replay closes the same records.
    fn close_stranded(&mut self, now: Timestamp) {
        let mut stranded = Vec::new();
        for (a, entry) in self.state.alerts.iter().enumerate() {
            if entry.state != AlertState::Active {
                continue;
            }
            for (d, del) in entry.deliveries.iter().enumerate() {
                let Some(from) = del.window_from else {
                    continue;
                };
                let window = std::time::Duration::from_millis(del.plan.window_ms);
                let due = del.held_until.unwrap_or(from + window);
                if !del.plan.ack_required
                    && !del.closed
                    && del.state == DeliveryState::Attempting
                    && due <= now
                {
                    stranded.push((ix(a), ix(d)));
                }
            }
        }
        for (a, d) in stranded {
            if !self.awaits_first_send(a, d) {
                self.close(
                    now,
                    a,
                    d,
                    DeliveryState::Unreached,
                    "no delivery report by the deadline; the bearers it waited for are down",
                );
            }
        }
    }

    /// Some device of `bearer` is up and may send at all.
    fn bearer_up(&self, bearer: Bearer) -> bool {
        self.bearer_devices
            .iter()
            .filter(|(b, _)| *b == bearer)
            .flat_map(|(_, devs)| devs)
            .any(|&i| self.ready_at(i).is_some())
    }

    fn close(&mut self, now: Timestamp, a: u32, d: u32, state: DeliveryState, reason: &str) {
        let alert = self.state.alert(a).plan.alert.id.clone();
        let person = self.state.delivery(a, d).person.clone();
        self.emit(Record::DeliveryClosed {
            at: now,
            alert,
            person,
            state,
            reason: reason.to_owned(),
        });
    }

    /// Opens the next door-knock task up the supervisor chain, or closes the record as
    /// unreached when the chain ends.
    fn escalate(&mut self, now: Timestamp, a: u32, d: u32) {
        self.escalate_because(now, a, d, None);
    }

    /// [`Router::escalate`], with the cause when it is not the missed deadline.
    fn escalate_because(&mut self, now: Timestamp, a: u32, d: u32, cause: Option<&str>) {
        let entry = self.state.alert(a);
        let del = self.state.delivery(a, d);
        // The current chain only: a chain that ended with an earlier version of the
        // warning does not use up the supervisors of this one.
        let chain = del.chain();
        let level = chain.last().map_or(0, |t| t.level + 1);
        let from = chain.last().map_or(&del.person, |t| &t.assignee);
        let sup = entry.contacts.get(from).and_then(|c| c.supervisor.clone());
        let seen = |p: &PersonId| p == &del.person || chain.iter().any(|t| &t.assignee == p);
        let contact = match sup {
            Some(s) if !seen(&s) && level < MAX_LEVELS => entry.contacts.get(&s).cloned(),
            _ => None,
        };
        let Some(contact) = contact else {
            if level == 0 && cause.is_some() {
                // Nothing could be sent and nobody is above this person: closing the
                // record would drop the warning still queued for them. Leave it open;
                // its ack window starts with its first attempt, as for everyone.
                return;
            }
            let reason = match (level, cause) {
                (0, Some(cause)) => format!("{cause}; no supervisor to escalate to"),
                (0, None) => "no ack and no supervisor to escalate to".to_owned(),
                (_, Some(cause)) => format!("{cause}; escalation chain exhausted"),
                _ => "escalation chain exhausted".to_owned(),
            };
            self.close(now, a, d, DeliveryState::Unreached, &reason);
            return;
        };
        let alert = entry.plan.alert.clone();
        // The same code at every level of one chain; a new chain (of a later version of
        // the warning) has its own.
        let code = del.chain_code().unwrap_or_else(|| {
            door_code_of(
                &self.config.ack_key,
                &alert.id,
                &del.person,
                del.plan.version,
            )
        });
        let pol = self
            .config
            .policies
            .resolve_for(del.plan.grade, &alert.kind, contact.role);
        let (routes, _) = self.routes(Some(&contact), &pol);
        let task = DoorKnockTask {
            assignee: contact.person.clone(),
            level,
            code,
            text: text::escalation_message(&alert, &del.name, &del.town, code),
            routes,
            deadline_ms: del.plan.task_deadline_ms,
            visit_ms: pol.door_knock_visit_s.saturating_mul(1000),
        };
        let person = del.person.clone();
        self.emit(Record::Escalated {
            at: now,
            alert: alert.id,
            person,
            task,
            reason: cause.map(str::to_owned),
        });
    }

    /// Follow-ups that the records just applied call for: closing reached no-ack records,
    /// escalating (or closing) records whose every route failed.
    pub(crate) fn settle(&mut self, now: Timestamp) {
        let mut touched = std::mem::take(&mut self.state.touched);
        touched.sort_unstable();
        touched.dedup();
        for (a, d) in touched {
            for _ in 0..=MAX_LEVELS + 1 {
                if !self.settle_one(now, a, d) {
                    break;
                }
            }
        }
        self.state.touched.clear();
    }

    /// One step; returns whether it emitted something that may call for another.
    fn settle_one(&mut self, now: Timestamp, a: u32, d: u32) -> bool {
        let del = self.state.delivery(a, d);
        if del.closed || self.state.alert(a).state != AlertState::Active {
            return false;
        }
        if !del.plan.ack_required && del.state == DeliveryState::Reached {
            self.close(now, a, d, DeliveryState::Reached, "delivered");
            return false;
        }
        let active = |k: &dyn Fn(&LaneKind) -> bool| {
            del.lanes
                .iter()
                .any(|l| k(&l.kind) && l.status == LaneStatus::Active)
        };
        if del.state == DeliveryState::Escalated {
            // An accepted task waits for its visit (its calls are stopped on purpose).
            if del.task_accepted.is_some() {
                return false;
            }
            let level = del.tasks.last().map_or(0, |t| t.level);
            if !active(&|k| k == &LaneKind::Task(level)) {
                self.escalate(now, a, d);
                return true;
            }
            return false;
        }
        if active(&|k| k == &LaneKind::Alert) || del.state == DeliveryState::Reached {
            return false;
        }
        let never = !del.lanes.iter().any(|l| l.kind == LaneKind::Alert);
        if del.plan.ack_required && del.plan.escalate {
            self.escalate(now, a, d);
            return true;
        }
        let reason = if never {
            "no usable address on any bearer"
        } else {
            "every route failed"
        };
        self.close(now, a, d, DeliveryState::Unreached, reason);
        false
    }

    /// When device `i` may send next, or `None` when it cannot send at all.
    fn ready_at(&self, i: usize) -> Option<Timestamp> {
        let dev = self.config.devices.get(i)?;
        if !self.state.is_up(&dev.id) || !usable_rate(dev.caps.per_minute) {
            return None;
        }
        Some(
            self.state
                .buckets
                .get(&dev.id)
                .map_or(Timestamp(i64::MIN), |b| b.next_free()),
        )
    }

    /// Until when device `i` waits for a call on its line (its own calls count too: a
    /// shared line places one call at a time): `Some(Timestamp::MIN)` when no call holds
    /// it, else the latest hold's end ([`LINE_HOLD_MAX`] after the call's
    /// start). With `now`, calls whose hold ended by then are not counted; without it the
    /// answer may lie in the past, which only means "free". Busy is not down: nothing is
    /// moved off, and the device counts as up for every other purpose.
    fn line_busy_until(&self, i: usize, now: Option<Timestamp>) -> Option<Timestamp> {
        let mut until = Timestamp(i64::MIN);
        let mates = self.line_mates.get(i)?;
        // A shared line takes one call at a time: a second call handed to its call side
        // would wait in the driver, its window running, and keep the texts waiting too.
        let own = (!mates.is_empty()).then_some(i);
        for &j in mates.iter().chain(own.iter()) {
            let Some(dev) = self.config.devices.get(j) else {
                continue;
            };
            let Some(calls) = self.state.live_calls.get(&dev.id) else {
                continue;
            };
            for &start in calls.values() {
                let end = start + LINE_HOLD_MAX;
                if now.is_none_or(|now| end > now) {
                    until = until.max(end);
                }
            }
        }
        Some(until)
    }

    /// Until when call device `i` lets the texts of its line go first: the latest time a
    /// text side of the line may send a text already due by then, while fewer than
    /// [`TEXTS_PER_CALL`] texts went since the line's last call. `None` when it need not
    /// wait. Texts take seconds and calls a minute; without this a line busy with calls
    /// would pass one text per call.
    fn texts_first_until(&self, i: usize) -> Option<Timestamp> {
        let dev = self.config.devices.get(i)?;
        let line = dev.line.as_ref()?;
        if dev.caps.bearer != Bearer::Voice
            || self.state.line_texts.get(line).copied().unwrap_or(0) >= TEXTS_PER_CALL
        {
            return None;
        }
        let mut until = None;
        for &j in self.line_mates.get(i)? {
            let Some(mate) = self.config.devices.get(j) else {
                continue;
            };
            if mate.caps.bearer == Bearer::Voice {
                continue;
            }
            let (Some(ready), Some(queue)) =
                (self.ready_at(j), self.state.queues.get(&mate.caps.bearer))
            else {
                continue;
            };
            let head = queue.iter().filter_map(|s| s.first().map(|e| e.0)).min();
            if head.is_some_and(|h| h <= ready) {
                until = until.max(Some(ready));
            }
        }
        until
    }

    /// Whether device `i` is held by a call on its line at `now`, or lets due texts of its
    /// line go first.
    fn line_busy(&self, i: usize, now: Timestamp) -> bool {
        self.line_busy_until(i, Some(now))
            .is_some_and(|t| t != Timestamp(i64::MIN))
            || self.texts_first_until(i).is_some_and(|t| t > now)
    }

    /// Hands queued sends to every device whose budget allows, highest grade first.
    pub(crate) fn pump(&mut self, now: Timestamp) {
        for oi in 0..self.pump_order.len() {
            let bi = self.pump_order[oi];
            let (bearer, devs) = self.bearer_devices[bi].clone();
            loop {
                let ready = devs
                    .iter()
                    .filter(|&&i| !self.line_busy(i, now))
                    .filter_map(|&i| self.ready_at(i).map(|t| (t, i)))
                    .min();
                let Some((free, i)) = ready else { break };
                if free > now {
                    break;
                }
                let up = devs.iter().filter(|&&i| self.ready_at(i).is_some()).count();
                let device = self.config.devices[i].id.clone();
                let Some(lref) = self.pick(bearer, now, &device, up > 1) else {
                    break;
                };
                let max_chars = self.config.devices[i].caps.max_chars;
                self.dispatch(now, lref, device, max_chars);
            }
        }
        if !self.state.relay_alerts.is_empty() {
            self.pump_relays(now);
        }
    }

    fn pick(
        &self,
        bearer: Bearer,
        now: Timestamp,
        device: &DeviceId,
        choice: bool,
    ) -> Option<LaneRef> {
        let queue = self.state.queues.get(&bearer)?;
        for q in (0..QUEUES).rev() {
            let set = queue.get(q)?;
            let mut first = None;
            // A retry prefers another device than the one it failed on, when there is one;
            // looking a few entries ahead is enough for that and keeps picking cheap.
            for (n, &(due, _, lref)) in set.iter().enumerate() {
                if due > now || n >= 16 {
                    break;
                }
                first.get_or_insert(lref);
                if !choice || self.state.lane(lref).avoid.as_ref() != Some(device) {
                    return Some(lref);
                }
            }
            if first.is_some() {
                return first;
            }
        }
        None
    }

    fn dispatch(&mut self, now: Timestamp, lref: LaneRef, device: DeviceId, max_chars: usize) {
        let entry = self.state.alert(lref.a);
        let del = self.state.delivery(lref.a, lref.d);
        let lane = self.state.lane(lref);
        let attempt = AttemptId(self.state.next_attempt.max(1));
        let purpose = match &lane.kind {
            LaneKind::Alert => Purpose::Alert,
            LaneKind::Task(level) => Purpose::DoorKnock { level: *level },
            LaneKind::Notice(notice, _) => Purpose::Notice { notice: *notice },
        };
        // The text as this device takes it in one attempt: the full text when it fits,
        // else the short form, and the code is never cut.
        let alert = &entry.plan.alert;
        let text = match &lane.kind {
            _ if text::fits(&lane.text, max_chars) => lane.text.clone(),
            LaneKind::Alert => {
                text::short_alert(alert, del.plan.ack_required.then_some(lane.code), max_chars)
            }
            LaneKind::Task(_) => text::short_escalation(alert, &del.name, lane.code, max_chars),
            LaneKind::Notice(NoticeKind::Cancelled, _) => text::short_cancel(alert, max_chars),
            LaneKind::Notice(NoticeKind::Withdrawn, to) if to != &del.person => {
                text::short_task_withdrawn(alert, &del.name, max_chars)
            }
            LaneKind::Notice(NoticeKind::Withdrawn, _) => text::short_withdrawn(alert, max_chars),
        };
        let out = Outbound {
            attempt,
            to: lane.route.to.clone(),
            text: text.clone(),
            want_report: true,
        };
        let rec = Record::AttemptStarted {
            at: now,
            alert: entry.plan.alert.id.clone(),
            person: del.person.clone(),
            attempt,
            purpose,
            lane: lref.l,
            bearer: lane.route.bearer,
            device: device.clone(),
            to: lane.route.to.clone(),
            text,
            possible_duplicate: lane.dup_next,
            version: lane.version,
        };
        self.emit(rec);
        self.command(device, DriverCommand::Send(out));
    }

    /// Judges a reply against the ack rule (see the crate docs).
    fn judge(
        &self,
        now: Timestamp,
        device: &DeviceId,
        from: &Address,
        text: &str,
        in_reply_to: Option<AttemptId>,
    ) -> Verdict {
        let empty = BTreeSet::new();
        let people = self.state.address_people.get(from).unwrap_or(&empty);
        let reject = |rejection: Rejection| Verdict::Rejected {
            rejection,
            alerts: self.alerts_of(now, people),
        };
        if people.is_empty() {
            return reject(Rejection::UnknownSender);
        }
        let form = match read_reply(text) {
            // A reply that lists many codes is a guess: only the first few are tried.
            ReplyForm::Codes(mut codes) => {
                codes.truncate(MAX_CANDIDATES);
                ReplyForm::Codes(codes)
            }
            other => other,
        };
        // The bearer knows which attempt this answers (a key pressed in the call placed
        // for it): the answer is for that attempt's record, whatever else the sender has
        // open — not for their most urgent record, which may be another task entirely.
        if let Some((r, code, by)) =
            in_reply_to.and_then(|id| self.answered(id, device, from, people))
        {
            let for_it = match &form {
                ReplyForm::Bare => true,
                ReplyForm::Codes(codes) => codes.contains(&code),
                ReplyForm::Other => false,
            };
            if for_it {
                let bare = matches!(form, ReplyForm::Bare);
                return self.verdict_for(now, r, code, by, bare, &reject);
            }
        }
        // Guessing defence: a sender who gave too many wrong codes is not tried for a
        // while (a key pressed in the gateway's own call, above, is no guess).
        if let Some(until) = self.state.locked_until(from, now) {
            return reject(Rejection::RateLimited { until });
        }
        match form {
            ReplyForm::Codes(codes) => {
                let mut first_rejection = None;
                for code in codes {
                    let refs = self
                        .state
                        .codes
                        .get(&code)
                        .map(Vec::as_slice)
                        .unwrap_or(&[]);
                    for r in refs {
                        if let Some(by) = self.owner_among(*r, code, people) {
                            return self.verdict_for(now, *r, code, by, false, &reject);
                        }
                    }
                    let rejection = match refs.first() {
                        Some(r) => {
                            let del = self.state.delivery(r.a, r.d);
                            Rejection::OthersCode {
                                code,
                                alert: self.state.alert(r.a).plan.alert.id.clone(),
                                person: del.person.clone(),
                            }
                        }
                        None => Rejection::WrongCode { code },
                    };
                    first_rejection.get_or_insert(rejection);
                }
                reject(first_rejection.unwrap_or(Rejection::NotAnAck))
            }
            ReplyForm::Bare => {
                // What a bare ack can still do, best first: acknowledge the sender's own
                // open warning; accept a door-knock task not yet accepted (a bare ack never
                // confirms a visit: that takes the task's code); answer late a warning of
                // theirs that closed without their ack. A supervisor's "1" with their own
                // warning open is about that warning, never about a task.
                let mut own: Vec<(CodeRef, PersonId)> = Vec::new();
                let mut tasks: Vec<(CodeRef, PersonId)> = Vec::new();
                let mut accepted: Vec<(CodeRef, PersonId)> = Vec::new();
                for p in people {
                    for &(a, d) in self.state.person_targets.get(p).into_iter().flatten() {
                        let del = self.state.delivery(a, d);
                        if del.plan.ack_required
                            && !del.closed
                            && self.state.alert(a).state == AlertState::Active
                        {
                            own.push((CodeRef { a, d, task: false }, p.clone()));
                        }
                    }
                    for &(a, d) in self.state.assignee_tasks.get(p).into_iter().flatten() {
                        let del = self.state.delivery(a, d);
                        if del.state == DeliveryState::Escalated && !del.closed {
                            let r = (CodeRef { a, d, task: true }, p.clone());
                            if del.task_accepted.is_some() {
                                accepted.push(r);
                            } else {
                                tasks.push(r);
                            }
                        }
                    }
                }
                // A task stays a candidate only against drills: a live task before a drill
                // warning of one's own, as live traffic always goes first.
                let live = |r: &CodeRef| !self.state.alert(r.a).plan.alert.exercise;
                let own_live = own.iter().any(|(r, _)| live(r));
                tasks.retain(|(r, _)| own.is_empty() || (!own_live && live(r)));
                let mut open = own;
                open.extend(tasks);
                if open.is_empty() {
                    // Nothing open: a late answer to a record that was closed without the
                    // person's ack (unreached, or confirmed by a door knock) still counts,
                    // by the same rule.
                    for p in people {
                        for &(a, d) in self.state.person_targets.get(p).into_iter().flatten() {
                            let del = self.state.delivery(a, d);
                            if del.plan.ack_required
                                && matches!(
                                    del.state,
                                    DeliveryState::Unreached | DeliveryState::Confirmed
                                )
                                && self.state.alert(a).state != AlertState::Cancelled
                            {
                                open.push((CodeRef { a, d, task: false }, p.clone()));
                            }
                        }
                    }
                }
                if open.is_empty()
                    && let Some((r, by)) = accepted.first()
                {
                    // "收到" again for a task already accepted: counted once.
                    let code = self.code_of(*r);
                    return self.verdict_for(now, *r, code, by.clone(), true, &reject);
                }
                match open.as_slice() {
                    [] => reject(Rejection::NothingOpen),
                    [(r, by)] => {
                        let code = self.code_of(*r);
                        self.verdict_for(now, *r, code, by.clone(), true, &reject)
                    }
                    // The bearer vouches for the sender (a BeiDou card, a mesh node): the
                    // bare ack is for the person's most urgent open record. An address
                    // shared by several people keeps the strict rule: it would be a guess
                    // whose ack it is.
                    many if people.len() == 1 && self.sender_authenticated(device) => {
                        let most_urgent = many.iter().max_by_key(|(r, _)| self.urgency(*r));
                        match most_urgent {
                            Some((r, by)) => {
                                let code = self.code_of(*r);
                                self.verdict_for(now, *r, code, by.clone(), true, &reject)
                            }
                            None => reject(Rejection::NothingOpen),
                        }
                    }
                    many => reject(Rejection::Ambiguous {
                        open: many.len() as u32,
                    }),
                }
            }
            ReplyForm::Other => reject(Rejection::NotAnAck),
        }
    }

    /// The record an answer to `attempt` is for, the code that attempt carried (of the
    /// version of the warning it sent, or of its door-knock chain), and who of `people`
    /// answers it: the
    /// attempt's record (the person's warning, or a door-knock task) when it was placed on
    /// `device` to `from` and one of `people` owns that record. A warning record that needs
    /// no ack, a notice, or an attempt the router does not know gives `None` (the ordinary
    /// rules judge the reply). The record may have closed since: the verdict then says
    /// duplicate, late or closed for THAT record rather than spending the key press on
    /// another.
    fn answered(
        &self,
        attempt: AttemptId,
        device: &DeviceId,
        from: &Address,
        people: &BTreeSet<PersonId>,
    ) -> Option<(CodeRef, AckCode, PersonId)> {
        let entry = self.state.attempts.get(&attempt)?;
        if &entry.device != device || &entry.to != from {
            return None;
        }
        let lane = entry.lane;
        let code = self.state.lane(lane).code;
        let r = match self.state.lane(lane).kind {
            LaneKind::Alert => CodeRef {
                a: lane.a,
                d: lane.d,
                task: false,
            },
            LaneKind::Task(_) => CodeRef {
                a: lane.a,
                d: lane.d,
                task: true,
            },
            LaneKind::Notice(..) => return None,
        };
        if !r.task && !self.state.delivery(r.a, r.d).plan.ack_required {
            return None;
        }
        let by = self.owner_among(r, code, people)?;
        Some((r, code, by))
    }

    /// Whether `device` authenticates the sender of what it receives.
    fn sender_authenticated(&self, device: &DeviceId) -> bool {
        self.config
            .devices
            .iter()
            .any(|d| &d.id == device && d.caps.sender_authenticated)
    }

    /// How urgent an open record is for a bare ack over an authenticated bearer: a live
    /// alert's before a drill's, then the person's own warning before a door-knock task,
    /// then the highest grade, then the most recently opened (a record when planned, a
    /// door-knock task when escalated), then the later alert.
    fn urgency(&self, r: CodeRef) -> (bool, bool, Grade, Timestamp, u32) {
        let del = self.state.delivery(r.a, r.d);
        let opened = if r.task {
            del.task_opened.unwrap_or(del.opened)
        } else {
            del.opened
        };
        let live = !self.state.alert(r.a).plan.alert.exercise;
        (live, !r.task, del.plan.grade, opened, r.a)
    }

    /// The current code of a record: its warning's (of the current version), or its
    /// current door-knock chain's.
    pub(crate) fn code_of(&self, r: CodeRef) -> AckCode {
        let del = self.state.delivery(r.a, r.d);
        match (r.task, del.chain_code()) {
            (true, Some(code)) => code,
            _ => del.plan.code,
        }
    }

    /// Which of `people` the record behind a code belongs to (its person, or for a task
    /// code any assignee a task with that code was sent to).
    fn owner_among(
        &self,
        r: CodeRef,
        code: AckCode,
        people: &BTreeSet<PersonId>,
    ) -> Option<PersonId> {
        let del = self.state.delivery(r.a, r.d);
        if r.task {
            del.tasks
                .iter()
                .filter(|t| t.code == code)
                .map(|t| &t.assignee)
                .find(|p| people.contains(*p))
                .cloned()
        } else {
            people.contains(&del.person).then(|| del.person.clone())
        }
    }

    /// What a reply from `by` carrying `code` is for record `r`; `bare`: the reply had no
    /// code (a key 1 in a call, 收到), which accepts a door-knock task but never confirms
    /// the visit.
    pub(crate) fn verdict_for(
        &self,
        now: Timestamp,
        r: CodeRef,
        code: AckCode,
        by: PersonId,
        bare: bool,
        reject: &dyn Fn(Rejection) -> Verdict,
    ) -> Verdict {
        let entry = self.state.alert(r.a);
        let del = self.state.delivery(r.a, r.d);
        let (alert, person) = (entry.plan.alert.id.clone(), del.person.clone());
        let closed = || {
            reject(Rejection::Closed {
                code,
                alert: alert.clone(),
                person: person.clone(),
            })
        };
        if entry.state == AlertState::Cancelled {
            return closed();
        }
        use DeliveryState as S;
        // A code of an earlier version of the warning (or of a door-knock chain that ended
        // with one): the reply answers that message, not the current one.
        let current = if r.task {
            del.chain_code() == Some(code)
        } else {
            del.plan.code == code
        };
        if !current {
            let earlier = del.earlier.iter().find(|e| {
                if r.task {
                    e.task_code == Some(code)
                } else {
                    e.code == code
                }
            });
            return match earlier {
                Some(e) if r.task => match e.state {
                    S::Confirmed | S::Acknowledged => Verdict::Duplicate { alert, person },
                    _ => closed(),
                },
                Some(e) if e.acked_at.is_some() => Verdict::Duplicate { alert, person },
                Some(e) if e.state == S::Withdrawn => closed(),
                Some(e) => Verdict::Ack {
                    alert,
                    person,
                    late: e.window_end.is_none_or(|end| now > end),
                    version: e.version,
                },
                None => closed(),
            };
        }
        let version = del.plan.version;
        if r.task && bare {
            // A bare ack (key 1 in the task's call, 收到) accepts the task: the assignee is
            // going. Only the task's code confirms that they went.
            match del.state {
                S::Confirmed | S::Acknowledged => Verdict::Duplicate { alert, person },
                _ if del.task_accepted.is_some() => Verdict::Duplicate { alert, person },
                S::Escalated => Verdict::DoorKnockAccepted {
                    alert,
                    person,
                    by,
                    version,
                },
                // The chain ran out: the acceptance is kept, nothing is left to escalate.
                S::Unreached if del.escalated => Verdict::DoorKnockAccepted {
                    alert,
                    person,
                    by,
                    version,
                },
                _ => closed(),
            }
        } else if r.task {
            match del.state {
                S::Confirmed | S::Acknowledged => Verdict::Duplicate { alert, person },
                S::Escalated => Verdict::DoorKnockConfirmed {
                    alert,
                    person,
                    by,
                    late: false,
                    version,
                },
                S::Unreached if del.escalated => Verdict::DoorKnockConfirmed {
                    alert,
                    person,
                    by,
                    late: true,
                    version,
                },
                _ => closed(),
            }
        } else {
            match del.state {
                S::Acknowledged => Verdict::Duplicate { alert, person },
                S::Cancelled | S::Withdrawn => closed(),
                // Escalated, closed or confirmed: late — unless the person answers within
                // the window of their own first attempt, which can start after the
                // escalation when nothing could be sent to them in time (an overloaded
                // campaign, every device down): they were not late, the gateway was.
                S::Escalated | S::Unreached | S::Confirmed => Verdict::Ack {
                    alert,
                    person,
                    late: !del.window_from.is_some_and(|from| {
                        now <= from + Duration::from_millis(del.plan.window_ms)
                    }),
                    version,
                },
                _ => Verdict::Ack {
                    alert,
                    person,
                    late: del.plan.ack_required
                        && del.window_from.is_some_and(|from| {
                            now > from + Duration::from_millis(del.plan.window_ms)
                        }),
                    version,
                },
            }
        }
    }

    /// The alerts a rejected reply from `people` counts against: those where one of them
    /// has an open record or an open door-knock task; with none open, the one alert whose
    /// record (or task) of theirs closed most recently, within the last hour; else none. A
    /// "谢谢" after acking does not raise the count of every alert they ever had.
    fn alerts_of(&self, now: Timestamp, people: &BTreeSet<PersonId>) -> Vec<AlertId> {
        let mut ix: Vec<u32> = Vec::new();
        let mut recent: Option<(Timestamp, u32)> = None;
        let horizon = Timestamp(now.0.saturating_sub(3_600_000));
        let mut consider = |a: u32, open: bool, since: Timestamp, ix: &mut Vec<u32>| {
            if open {
                ix.push(a);
            } else if since >= horizon && recent.is_none_or(|r| (since, a) > r) {
                recent = Some((since, a));
            }
        };
        for p in people {
            for &(a, d) in self.state.person_targets.get(p).into_iter().flatten() {
                let del = self.state.delivery(a, d);
                consider(a, !del.closed, del.since, &mut ix);
            }
            for &(a, d) in self.state.assignee_tasks.get(p).into_iter().flatten() {
                let del = self.state.delivery(a, d);
                let open = !del.closed && del.state == DeliveryState::Escalated;
                consider(a, open, del.since, &mut ix);
            }
        }
        if ix.is_empty()
            && let Some((_, a)) = recent
        {
            ix.push(a);
        }
        ix.sort_unstable();
        ix.dedup();
        ix.into_iter()
            .map(|a| self.state.alert(a).plan.alert.id.clone())
            .collect()
    }
}

/// Each person once, in plan order, with whether any of their targets is for a named area
/// they are responsible for.
fn dedup_targets(plan: &AlertPlan) -> Vec<(PersonId, bool)> {
    let mut index: HashMap<&PersonId, usize> = HashMap::new();
    let mut out: Vec<(PersonId, bool)> = Vec::new();
    for t in &plan.targets {
        let responsible = matches!(t.reason, TargetReason::Responsible { .. });
        match index.get(&t.person) {
            Some(&i) => {
                if let Some(entry) = out.get_mut(i) {
                    entry.1 |= responsible;
                }
            }
            None => {
                index.insert(&t.person, out.len());
                out.push((t.person.clone(), responsible));
            }
        }
    }
    out
}

fn usable_rate(per_minute: f64) -> bool {
    per_minute.is_finite() && per_minute > 0.0
}

/// Send interval in microseconds for a rate per minute (0 for an unusable rate; such a
/// device is never picked).
pub(crate) fn interval_us(per_minute: f64) -> i64 {
    if usable_rate(per_minute) {
        // Bounded: at most one minute... times a million sends; rates below that are absurd.
        let us = (60_000_000.0 / per_minute).round();
        if us.is_finite() && us >= 1.0 {
            us.min(6.0e13) as i64
        } else {
            1
        }
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Target, TargetReason};
    use tocsin_core::{Alert, PhoneNumber, Role};

    fn config() -> RouterConfig {
        let caps = Capabilities {
            bearer: Bearer::Sms,
            per_minute: 6.0,
            max_chars: 500,
            sender_authenticated: false,
        };
        RouterConfig {
            policies: Policies::default(),
            ack_key: AckKey::new(b"k".to_vec()),
            devices: vec![DeviceInfo {
                id: DeviceId::from("gsm-1"),
                caps,
                line: None,
            }],
        }
    }

    fn plan(id: &str) -> AlertPlan {
        let phone = PhoneNumber::parse("+8613800000001", "86").unwrap();
        AlertPlan {
            alert: Alert {
                id: AlertId::from(id),
                grade: Grade::Red,
                kind: "flood".into(),
                headline: "山洪红色预警".into(),
                text: "转移".into(),
                area: vec![],
                exercise: true,
                issuer: "op".into(),
                accepted_at: Timestamp::ZERO,
                reference: None,
            },
            targets: vec![
                Target {
                    person: PersonId::from("p1"),
                    reason: TargetReason::Located,
                },
                Target {
                    person: PersonId::from("p1"),
                    reason: TargetReason::Located,
                },
            ],
            contacts: vec![Contact {
                person: PersonId::from("p1"),
                name: "张伟".into(),
                role: Role::VillageHead,
                town: "大庄镇".into(),
                addresses: vec![Address::Phone(phone)],
                supervisor: None,
            }],
            areas: vec![],
            speakers: vec![],
            kits: vec![],
            uplink: None,
        }
    }

    fn drain(r: &mut Router) -> Vec<Output> {
        std::iter::from_fn(|| r.poll_output()).collect()
    }

    #[test]
    fn first_send_goes_out_in_the_same_call_and_drills_are_marked() {
        let mut r = Router::new(config());
        r.handle_alert(Timestamp::ZERO, plan("a1")).unwrap();
        let out = drain(&mut r);
        let planned = out
            .iter()
            .filter(|o| matches!(o, Output::Record(Record::DeliveryPlanned { .. })))
            .count();
        assert_eq!(planned, 1, "a person targeted twice is planned once");
        let send = out.iter().find_map(|o| match o {
            Output::Command {
                command: DriverCommand::Send(s),
                ..
            } => Some(s.clone()),
            _ => None,
        });
        assert!(send.unwrap().text.starts_with("【演练】【红色预警】"));
        // Records come before the commands they justify.
        let last_record = out
            .iter()
            .rposition(|o| matches!(o, Output::Record(_)))
            .unwrap();
        let first_command = out
            .iter()
            .position(|o| matches!(o, Output::Command { .. }))
            .unwrap();
        assert!(last_record < first_command);
        assert_eq!(
            r.handle_alert(Timestamp::ZERO, plan("a1")),
            Err(RouterError::DuplicateAlert(AlertId::from("a1")))
        );
        // No supervisor: the red deadline (5 min) closes the record as unreached.
        assert_eq!(
            r.poll_timeout(),
            Some(Timestamp(100_000)),
            "the first reminder"
        );
    }

    #[test]
    fn unknown_alerts_and_corrupt_logs_are_errors() {
        let mut r = Router::new(config());
        let a = AlertId::from("nope");
        assert_eq!(
            r.handle_cancel(Timestamp::ZERO, &a, "op"),
            Err(RouterError::UnknownAlert(a.clone()))
        );
        assert_eq!(
            r.handle_update(Timestamp::ZERO, plan("nope")),
            Err(RouterError::UnknownAlert(a.clone()))
        );
        let orphan = Record::Reminder {
            at: Timestamp::ZERO,
            alert: a,
            person: PersonId::from("p1"),
            n: 1,
        };
        let Err(RouterError::Corrupt { index, .. }) =
            Router::restore(config(), vec![orphan], Timestamp::ZERO)
        else {
            panic!("a record for an unknown alert must be refused");
        };
        assert_eq!(index, 0);
    }

    #[test]
    fn door_codes_differ_from_the_persons_own() {
        let key = AckKey::new(b"k".to_vec());
        let (a, p) = (AlertId::from("a1"), PersonId::from("p1"));
        assert_ne!(door_code(&key, &a, &p), AckCode::derive(&key, &a, &p));
        assert_eq!(door_code(&key, &a, &p), door_code(&key, &a, &p));
    }
}
