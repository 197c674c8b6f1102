//! Field kits: Tocsin nodes behind a satellite link (a BeiDou terminal, an Iridium SBD
//! modem) that alert the people of their valley themselves.
//!
//! On the district's node, an alert whose targets include people a kit serves is relayed
//! to that kit as one compact frame (`tocsin-compact`), retried with a growing pause when
//! the link fails; its update and cancellation follow as frames of their own. The kit
//! answers with ack batches naming (short alert id, person, code, time): each entry is
//! judged like a reply from that person, but only for an alert relayed to that kit and a
//! person it serves in that alert — a kit cannot ack for anyone else. An entry for someone
//! the district did not target in the alert (the kit serves its own valley) is recorded as
//! rejected `not_relayed` but is no forgery and does not count among the alert's rejected
//! replies; one for a target the kit does not serve does.
//!
//! An entry counts as answered when the kit says, but never before the relay first went
//! out (a kit with a slow clock is not always in time) and never after now. Frames carry
//! no version of a person's warning: after an update re-notified a record (a new version),
//! an entry answered before the frame carrying it (the update, or the alert itself when it
//! first went out after the update) went out is the earlier version's ack — kept on record,
//! the record stays open — and only one answered after it is the current version's. Only
//! the latter confirms that the kit has the frame in flight. On the kit, a record
//! re-notified by the district's update sends its new ack up too.
//!
//! On a kit's node, an alert that came down the uplink carries [`Uplink`]: the acks of its
//! records go back up in batches, one batch in flight per alert, so that acks arriving
//! while the link waits for its next slot (a BeiDou card sends once a minute) share a frame.
//!
//! Like everything else, relay and uplink state changes only by applying records.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tocsin_channel::{DriverCommand, FrameOut};
use tocsin_compact::{
    AckEntry, AlertFrame, AreaRef, CancelFrame, Frame, ShortAlertId, UpdateFrame, pack_acks,
};
use tocsin_core::{AckCode, Address, AlertId, AttemptId, DeviceId, PersonId, Timestamp};

use crate::plan::{KitTarget, Uplink};
use crate::record::{Outcome, Record, Rejection, RelayFrame, Verdict};
use crate::router::Router;
use crate::state::{CodeRef, State};
use crate::view::DeliveryState;

/// Sends of one frame to one kit before the relay gives up.
const MAX_TRIES: u32 = 6;
/// First pause before a failed relay or uplink batch is tried again; it doubles.
const RETRY_FIRST: Duration = Duration::from_secs(30);
/// Longest pause between tries.
const RETRY_MAX: Duration = Duration::from_secs(600);

/// Where one kit's relay of an alert stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayState {
    /// Not handed to the device yet (it is down, or a retry waits).
    Planned,
    /// Handed to the device; no outcome yet.
    Sending,
    /// The satellite network took the frame.
    Sent,
    /// The kit answered: an ack batch naming the alert came back.
    Confirmed,
    /// Every try failed, or the device refused the frame for good.
    Failed,
    /// The alert was cancelled before the kit got it.
    Cancelled,
}

/// One kit's relay of an alert, as operators see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RelayView {
    /// The kit's name.
    pub kit: String,
    /// The device that reaches it.
    pub device: DeviceId,
    /// Its card id or IMEI.
    pub address: Address,
    /// Where the relay stands.
    pub state: RelayState,
    /// The frame of the latest try.
    pub frame: RelayFrame,
    /// Tries of the current frame.
    pub tries: u32,
    /// People it serves in this alert.
    pub people: u32,
    /// Acks it relayed that counted.
    pub acks: u32,
    /// Since when in this state.
    pub since: Timestamp,
    /// Why it failed, if it did.
    pub reason: Option<String>,
}

/// One kit's relay of an alert (router state).
#[derive(Clone, Debug)]
pub(crate) struct Relay {
    pub target: KitTarget,
    pub people: HashSet<PersonId>,
    pub state: RelayState,
    pub frame: RelayFrame,
    pub attempt: Option<AttemptId>,
    pub tries: u32,
    pub since: Timestamp,
    pub reason: Option<String>,
    /// The next try is due then (a failed try's pause).
    pub retry_at: Option<Timestamp>,
    /// When each alert or update frame was handed to the device (every try), in order: the
    /// first is the earliest the kit can have had the alert; the first at or after a
    /// record's version was planned, the earliest it can have had that version.
    pub starts: Vec<Timestamp>,
    /// When the current frame was first handed to the device (reset by a new frame).
    pub frame_started: Option<Timestamp>,
}

/// A kit's acks of one uplinked alert on their way to the district (router state).
#[derive(Clone, Debug, Default)]
pub(crate) struct UplinkState {
    /// Acked records not yet in a batch the network took.
    pub pending: BTreeSet<u32>,
    /// (record, version of the warning) whose ack a batch the network took carried: a
    /// record re-notified by an update (a new version) sends its new ack up too.
    pub done: HashSet<(u32, u32)>,
    /// The batch in flight and its (record, version) entries.
    pub inflight: Option<(AttemptId, Vec<(u32, u32)>)>,
    /// Failed batches so far in a row (for the pause).
    pub failures: u32,
    /// The next batch waits until then after a failure.
    pub retry_at: Option<Timestamp>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn backoff(tries: u32) -> Duration {
    let pause = RETRY_FIRST.saturating_mul(1u32 << tries.saturating_sub(1).min(10));
    pause.min(RETRY_MAX)
}

impl State {
    /// The relays of an alert's plan that it has no relay for yet.
    pub(crate) fn add_relays(&mut self, a: u32, at: Timestamp) {
        let entry = &mut self.alerts[a as usize];
        if !entry.plan.kits.is_empty() || entry.plan.uplink.is_some() {
            self.relay_alerts.insert(a);
        }
        for t in entry.plan.kits.clone() {
            if let Some(r) = entry.relays.iter_mut().find(|r| r.target.kit == t.kit) {
                // An update may change whom it serves.
                r.people = t.people.iter().cloned().collect();
                r.target = t;
                continue;
            }
            entry.relays.push(Relay {
                people: t.people.iter().cloned().collect(),
                target: t,
                state: RelayState::Planned,
                frame: RelayFrame::Alert,
                attempt: None,
                tries: 0,
                since: at,
                reason: None,
                retry_at: None,
                starts: Vec::new(),
                frame_started: None,
            });
        }
    }

    /// The alert was revised: kits that may have it get the update.
    pub(crate) fn relays_updated(&mut self, a: u32, at: Timestamp) {
        for r in &mut self.alerts[a as usize].relays {
            if r.attempt.is_some() && !matches!(r.state, RelayState::Failed | RelayState::Cancelled)
            {
                r.frame = RelayFrame::Update;
                r.state = RelayState::Planned;
                r.tries = 0;
                r.retry_at = None;
                r.since = at;
                r.frame_started = None;
            }
        }
        self.add_relays(a, at);
    }

    /// The alert was cancelled: kits that may have it get the cancellation; the others
    /// never will.
    pub(crate) fn relays_cancelled(&mut self, a: u32, at: Timestamp) {
        for r in &mut self.alerts[a as usize].relays {
            if r.attempt.is_some() && r.state != RelayState::Failed {
                r.frame = RelayFrame::Cancel;
                r.state = RelayState::Planned;
                r.tries = 0;
                r.frame_started = None;
            } else if r.state == RelayState::Planned {
                r.state = RelayState::Cancelled;
            }
            r.retry_at = None;
            r.since = at;
        }
    }

    /// A frame handed to a device takes a slot of its send budget like any attempt, so
    /// the router does not plan texts into the slot the frame took.
    fn spend_budget(&mut self, device: &DeviceId, at: Timestamp) {
        let interval = self.intervals.get(device).copied().unwrap_or(0);
        self.buckets
            .entry(device.clone())
            .or_default()
            .consume(at, interval);
    }

    fn relay_ix(&self, alert: &AlertId, kit: &str) -> Result<(u32, u32), String> {
        let a = *self
            .alert_ix
            .get(alert)
            .ok_or_else(|| format!("relay of unknown alert {alert}"))?;
        let k = self
            .alert(a)
            .relays
            .iter()
            .position(|r| r.target.kit == kit)
            .ok_or_else(|| format!("alert {alert} has no relay to kit {kit}"))?;
        Ok((a, k as u32))
    }

    /// Applies one relay or uplink record.
    pub(crate) fn apply_relay(&mut self, rec: &Record) -> Result<(), String> {
        match rec {
            Record::RelayStarted {
                at,
                alert,
                kit,
                attempt,
                device,
                frame,
                ..
            } => {
                let (a, k) = self.relay_ix(alert, kit)?;
                self.relay_attempts.insert(*attempt, (a, k));
                self.spend_budget(device, *at);
                self.next_attempt = self.next_attempt.max(attempt.0.saturating_add(1));
                let r = &mut self.alerts[a as usize].relays[k as usize];
                if *frame != RelayFrame::Cancel {
                    r.starts.push(*at);
                }
                if r.frame != *frame || r.frame_started.is_none() {
                    r.frame_started = Some(*at);
                }
                r.frame = *frame;
                r.attempt = Some(*attempt);
                r.tries += 1;
                r.retry_at = None;
                if r.state != RelayState::Confirmed {
                    r.state = RelayState::Sending;
                    r.since = *at;
                }
            }
            Record::RelayOutcome {
                at,
                attempt,
                outcome,
                ..
            } => {
                let &(a, k) = self
                    .relay_attempts
                    .get(attempt)
                    .ok_or_else(|| format!("outcome of unknown relay attempt {attempt}"))?;
                let r = &mut self.alerts[a as usize].relays[k as usize];
                match outcome {
                    Outcome::Accepted => {}
                    Outcome::Sent { .. } => {
                        if r.state == RelayState::Sending && r.attempt == Some(*attempt) {
                            r.state = RelayState::Sent;
                            r.since = *at;
                        }
                    }
                    Outcome::Delivered { .. } => {
                        if r.state != RelayState::Confirmed {
                            r.state = RelayState::Confirmed;
                            r.since = *at;
                            r.reason = None;
                        }
                    }
                    Outcome::Failed { reason, retryable } => {
                        if r.attempt == Some(*attempt) && r.state == RelayState::Sending {
                            if *retryable && r.tries < MAX_TRIES {
                                let due = *at + backoff(r.tries);
                                r.state = RelayState::Planned;
                                r.retry_at = Some(due);
                                r.reason = Some(reason.clone());
                                self.relay_timers.insert((due, a, k));
                            } else {
                                r.state = RelayState::Failed;
                                r.reason = Some(reason.clone());
                            }
                            r.since = *at;
                        }
                    }
                }
            }
            Record::RelayFailed {
                at,
                alert,
                kit,
                reason,
            } => {
                let (a, k) = self.relay_ix(alert, kit)?;
                let r = &mut self.alerts[a as usize].relays[k as usize];
                r.state = RelayState::Failed;
                r.since = *at;
                r.reason = Some(reason.clone());
            }
            Record::UplinkStarted {
                at,
                alert,
                attempt,
                device,
                people,
                ..
            } => {
                self.spend_budget(device, *at);
                let a = *self
                    .alert_ix
                    .get(alert)
                    .ok_or_else(|| format!("uplink of unknown alert {alert}"))?;
                self.next_attempt = self.next_attempt.max(attempt.0.saturating_add(1));
                let ds: Vec<(u32, u32)> = people
                    .iter()
                    .filter_map(|p| self.alert(a).by_person.get(p).copied())
                    .map(|d| (d, self.uplinked_ack(a, d).1))
                    .collect();
                self.uplink_attempts.insert(*attempt, a);
                let up = &mut self.alerts[a as usize].uplink;
                for (d, _) in &ds {
                    up.pending.remove(d);
                }
                up.inflight = Some((*attempt, ds));
                up.retry_at = None;
            }
            Record::UplinkOutcome {
                at,
                attempt,
                outcome,
                ..
            } => {
                let &a = self
                    .uplink_attempts
                    .get(attempt)
                    .ok_or_else(|| format!("outcome of unknown uplink attempt {attempt}"))?;
                let up = &mut self.alerts[a as usize].uplink;
                let Some((current, _)) = &up.inflight else {
                    return Ok(());
                };
                if current != attempt {
                    return Ok(());
                }
                match outcome {
                    Outcome::Accepted => {}
                    Outcome::Sent { .. } | Outcome::Delivered { .. } => {
                        if let Some((_, ds)) = up.inflight.take() {
                            up.done.extend(ds);
                        }
                        up.failures = 0;
                    }
                    Outcome::Failed { .. } => {
                        if let Some((_, ds)) = up.inflight.take() {
                            up.pending.extend(ds.into_iter().map(|(d, _)| d));
                        }
                        up.failures += 1;
                        let due = *at + backoff(up.failures);
                        up.retry_at = Some(due);
                        self.uplink_timers.insert((due, a));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A record of an uplinked alert was acknowledged: its ack goes up.
    pub(crate) fn uplink_acked(&mut self, a: u32, d: u32) {
        let version = self.delivery(a, d).plan.version;
        let entry = &mut self.alerts[a as usize];
        if entry.plan.uplink.is_some() && !entry.uplink.done.contains(&(d, version)) {
            entry.uplink.pending.insert(d);
        }
    }

    /// The ack of a record an uplink batch carries: when it was given and for which
    /// version — the current one's, or, when an update re-notified the record before its
    /// earlier ack went up, that earlier ack (with its own time, so the district judges
    /// it as the earlier version's).
    pub(crate) fn uplinked_ack(&self, a: u32, d: u32) -> (Option<Timestamp>, u32, AckCode) {
        let del = self.delivery(a, d);
        match del.acked_at {
            Some(at) => (Some(at), del.plan.version, del.plan.code),
            None => del
                .earlier
                .iter()
                .rev()
                .find(|e| e.acked_at.is_some())
                .map_or((None, del.plan.version, del.plan.code), |e| {
                    (e.acked_at, e.version, e.code)
                }),
        }
    }
}

impl Router {
    /// Hands every relay and uplink batch that can go now to its device.
    pub(crate) fn pump_relays(&mut self, now: Timestamp) {
        let mut relays = Vec::new();
        let mut uplinks = Vec::new();
        for &a in &self.state.relay_alerts {
            let entry = self.state.alert(a);
            for (k, r) in entry.relays.iter().enumerate() {
                let due = r.retry_at.is_none_or(|t| t <= now);
                if r.state == RelayState::Planned && due && self.state.is_up(&r.target.device) {
                    relays.push((a, k as u32));
                }
            }
            let up = &entry.uplink;
            if entry.plan.uplink.is_some()
                && !up.pending.is_empty()
                && up.inflight.is_none()
                && up.retry_at.is_none_or(|t| t <= now)
            {
                uplinks.push(a);
            }
        }
        for (a, k) in relays {
            self.start_relay(now, a, k);
        }
        for a in uplinks {
            self.start_uplink(now, a);
        }
    }

    /// The frame of a relay, as it goes now.
    fn relay_bytes(&self, a: u32, k: u32, which: RelayFrame) -> Result<Vec<u8>, String> {
        let entry = self.state.alert(a);
        let r = &entry.relays[k as usize];
        let alert = &entry.plan.alert;
        let id = ShortAlertId::derive(&alert.id);
        let area = match &r.target.area {
            Some(area) => AreaRef::Named(area.to_string()),
            None => AreaRef::Unspecified,
        };
        let make = |text: String| -> Frame {
            let alert_frame = AlertFrame {
                id,
                grade: alert.grade,
                kind: alert.kind.clone(),
                exercise: alert.exercise,
                expires: None,
                area: area.clone(),
                code: None,
                text,
            };
            match which {
                RelayFrame::Alert => Frame::Alert(alert_frame),
                RelayFrame::Update => Frame::Update(UpdateFrame {
                    replaces: id,
                    alert: alert_frame,
                }),
                RelayFrame::Cancel => Frame::Cancel(CancelFrame {
                    id,
                    exercise: alert.exercise,
                    text: String::new(),
                }),
            }
        };
        // The full text when it fits; otherwise as much as fits, marked as cut.
        let mut chars: Vec<char> = alert.text.chars().collect();
        let mut cut = false;
        loop {
            let mut text: String = chars.iter().collect();
            if cut {
                text.push('…');
            }
            let bytes = make(text).encode().map_err(|e| e.to_string())?;
            if bytes.len() <= r.target.max_bytes {
                return Ok(bytes);
            }
            if chars.is_empty() || which == RelayFrame::Cancel {
                return Err(format!(
                    "a {}-byte frame does not fit the kit's {}-byte link",
                    bytes.len(),
                    r.target.max_bytes
                ));
            }
            chars.pop();
            cut = true;
        }
    }

    fn start_relay(&mut self, now: Timestamp, a: u32, k: u32) {
        let entry = self.state.alert(a);
        let r = &entry.relays[k as usize];
        let which = r.frame;
        let (alert, kit, device, to) = (
            entry.plan.alert.id.clone(),
            r.target.kit.clone(),
            r.target.device.clone(),
            r.target.address.clone(),
        );
        if !self.config.devices.iter().any(|d| d.id == device) {
            self.emit(Record::RelayFailed {
                at: now,
                alert,
                kit,
                reason: format!("device {device} is not configured"),
            });
            return;
        }
        let bytes = match self.relay_bytes(a, k, which) {
            Ok(b) => b,
            Err(reason) => {
                self.emit(Record::RelayFailed {
                    at: now,
                    alert,
                    kit,
                    reason,
                });
                return;
            }
        };
        let attempt = AttemptId(self.state.next_attempt.max(1));
        self.emit(Record::RelayStarted {
            at: now,
            alert,
            kit,
            attempt,
            device: device.clone(),
            to: to.clone(),
            frame: which,
            bytes: hex(&bytes),
        });
        self.command(
            device,
            DriverCommand::SendFrame(FrameOut { attempt, to, bytes }),
        );
    }

    fn start_uplink(&mut self, now: Timestamp, a: u32) {
        let entry = self.state.alert(a);
        let Some(up) = entry.plan.uplink.as_deref().cloned() else {
            return;
        };
        if !self.state.is_up(&up.device) {
            return;
        }
        let mut acks: Vec<(u32, Timestamp, AckEntry)> = entry
            .uplink
            .pending
            .iter()
            .filter(|&&d| self.state.delivery(a, d).person.as_str().len() <= 32)
            .map(|&d| {
                let del = self.state.delivery(a, d);
                let (acked_at, _, code) = self.state.uplinked_ack(a, d);
                let at = acked_at.unwrap_or(now);
                (
                    d,
                    at,
                    AckEntry {
                        alert: ShortAlertId::new(up.short_id).unwrap_or(ShortAlertId::UNKNOWN),
                        person: del.person.to_string(),
                        code,
                        offset_secs: 0,
                    },
                )
            })
            .collect();
        acks.sort_by_key(|(_, at, _)| *at);
        let Some(base) = acks.first().map(|(_, at, _)| *at) else {
            return;
        };
        let epoch = tocsin_compact::frame::EPOCH.as_millis();
        let base_secs = u32::try_from(base.as_millis().saturating_sub(epoch) / 1000).unwrap_or(0);
        let base_at = epoch + i64::from(base_secs) * 1000;
        for (_, at, e) in &mut acks {
            e.offset_secs = u32::try_from((at.as_millis() - base_at).max(0) / 1000).unwrap_or(0);
        }
        let entries: Vec<AckEntry> = acks.iter().map(|(_, _, e)| e.clone()).collect();
        // A person id longer than a frame allows (32 bytes) cannot go up; nothing else
        // can fail here, and the batch is tried again with the next ack.
        let Ok(frames) = pack_acks(None, base_secs, &entries, up.max_bytes) else {
            return;
        };
        let Some(first) = frames.into_iter().next() else {
            return;
        };
        // The first frame carries the earliest acks, in order.
        let carried = match Frame::decode(&first) {
            Ok(Frame::Acks(b)) => b.acks.len(),
            _ => 0,
        };
        let people: Vec<PersonId> = acks
            .iter()
            .take(carried)
            .map(|(d, _, _)| self.state.delivery(a, *d).person.clone())
            .collect();
        let attempt = AttemptId(self.state.next_attempt.max(1));
        self.emit(Record::UplinkStarted {
            at: now,
            alert: entry.plan.alert.id.clone(),
            attempt,
            device: up.device.clone(),
            to: up.to.clone(),
            people,
            bytes: hex(&first),
        });
        self.command(
            up.device,
            DriverCommand::SendFrame(FrameOut {
                attempt,
                to: up.to,
                bytes: first,
            }),
        );
    }

    /// The (alert, kit) a relay attempt belongs to, or the alert of an uplink batch.
    pub(crate) fn relay_outcome(
        &mut self,
        now: Timestamp,
        device: &DeviceId,
        attempt: AttemptId,
        outcome: Outcome,
    ) -> bool {
        if let Some(&(a, k)) = self.state.relay_attempts.get(&attempt) {
            let entry = self.state.alert(a);
            let kit = entry.relays[k as usize].target.kit.clone();
            let alert = entry.plan.alert.id.clone();
            self.emit(Record::RelayOutcome {
                at: now,
                alert,
                kit,
                attempt,
                device: device.clone(),
                outcome,
            });
            return true;
        }
        if let Some(&a) = self.state.uplink_attempts.get(&attempt) {
            let alert = self.state.alert(a).plan.alert.id.clone();
            self.emit(Record::UplinkOutcome {
                at: now,
                alert,
                attempt,
                device: device.clone(),
                outcome,
            });
            return true;
        }
        false
    }

    /// After a restore: relays and uplink batches handed to a device without an outcome
    /// go again (the kit and the district each count a frame once).
    pub(crate) fn resume_relays(&mut self) {
        for entry in &mut self.state.alerts {
            for r in &mut entry.relays {
                if r.state == RelayState::Sending {
                    r.state = RelayState::Planned;
                }
            }
            let up = &mut entry.uplink;
            if let Some((_, ds)) = up.inflight.take() {
                up.pending.extend(
                    ds.into_iter()
                        .filter(|e| !up.done.contains(e))
                        .map(|(d, _)| d),
                );
            }
        }
    }

    /// Due retries of relays and uplink batches.
    pub(crate) fn relay_timers_due(&mut self, now: Timestamp) {
        while let Some(&first) = self.state.relay_timers.first() {
            if first.0 > now {
                break;
            }
            self.state.relay_timers.remove(&first);
        }
        while let Some(&first) = self.state.uplink_timers.first() {
            if first.0 > now {
                break;
            }
            self.state.uplink_timers.remove(&first);
        }
        self.pump_relays(now);
    }

    /// The next relay or uplink retry.
    pub(crate) fn relay_timeout(&self) -> Option<Timestamp> {
        let r = self.state.relay_timers.first().map(|e| e.0);
        let u = self.state.uplink_timers.first().map(|e| e.0);
        match (r, u) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Acks relayed by a field kit, from one ack-batch frame received on `device` from
    /// `from`. Each entry is judged and recorded as a reply from the kit: counted as the
    /// person's ack (late or not by the time they answered at the kit) only for an alert
    /// relayed to that kit and a person it serves in it. `kit` names the kit for the
    /// record (its address when it is no configured kit).
    pub fn handle_relayed_acks(
        &mut self,
        now: Timestamp,
        device: &DeviceId,
        from: &Address,
        acks: Vec<RelayedAck>,
    ) {
        for ack in acks {
            let (verdict, answered) = self.judge_relayed(now, from, &ack);
            let confirmed = match &verdict {
                Verdict::Ack { alert, .. }
                | Verdict::Duplicate { alert, .. }
                | Verdict::Rejected {
                    rejection: Rejection::Closed { alert, .. },
                    ..
                } => Some(alert.clone()),
                _ => None,
            };
            self.emit(Record::Reply {
                at: now,
                device: device.clone(),
                from: from.clone(),
                text: format!("{} {} (relayed for {})", ack.alert, ack.code, ack.person),
                evidence: ack.evidence.clone(),
                sent_at: Some(ack.answered_at),
                receipt: None,
                in_reply_to: None,
                verdict,
            });
            // The kit answered about the alert: it has it.
            if let Some(alert) = confirmed
                && let Some(&a) = self.state.alert_ix.get(&alert)
                && let Some(r) = self
                    .state
                    .alert(a)
                    .relays
                    .iter()
                    .find(|r| &r.target.address == from)
                && matches!(r.state, RelayState::Sending | RelayState::Sent)
                && r.frame != RelayFrame::Cancel
                // An answer given before this frame went out (to the previous version)
                // says nothing of whether the kit has it.
                && r.frame_started.is_some_and(|t| answered >= t)
                && let Some(attempt) = r.attempt
            {
                let kit = r.target.kit.clone();
                self.emit(Record::RelayOutcome {
                    at: now,
                    alert,
                    kit,
                    attempt,
                    device: device.clone(),
                    outcome: Outcome::Delivered {
                        evidence: "the kit relayed an ack for it".into(),
                    },
                });
            }
        }
        self.settle(now);
        self.pump(now);
    }

    /// The verdict on one relayed ack, and when it counts as answered (the kit's time,
    /// never before the relay first went out, never after now).
    fn judge_relayed(
        &self,
        now: Timestamp,
        from: &Address,
        ack: &RelayedAck,
    ) -> (Verdict, Timestamp) {
        // The most recent alert with that short id relayed to this kit.
        // Only alerts with relays can match (not every alert of the log).
        let found = self.state.relay_alerts.iter().rev().find_map(|&a| {
            let entry = self.state.alert(a);
            if ShortAlertId::derive(&entry.plan.alert.id).get() != ack.alert {
                return None;
            }
            entry
                .relays
                .iter()
                .find(|r| &r.target.address == from)
                .map(|r| (a, r))
        });
        let Some((a, relay)) = found else {
            let verdict = Verdict::Rejected {
                rejection: Rejection::NotRelayed {
                    kit: from.to_string(),
                    person: ack.person.clone(),
                },
                alerts: Vec::new(),
            };
            return (verdict, now);
        };
        // Late or not by when they answered at the kit, not by when the link carried it —
        // but never before the relay went out (a kit with a slow clock is not always in
        // time) and never after now (nor a fast one never late).
        let floor = relay.starts.first().copied().unwrap_or(now);
        let answered = ack.answered_at.max(floor).min(now);
        let entry = self.state.alert(a);
        let alert = entry.plan.alert.id.clone();
        let reject = |rejection: Rejection| Verdict::Rejected {
            rejection,
            alerts: vec![alert.clone()],
        };
        let d = match entry.by_person.get(&ack.person) {
            Some(&d) if relay.people.contains(&ack.person) => d,
            _ => {
                let verdict = reject(Rejection::NotRelayed {
                    kit: relay.target.kit.clone(),
                    person: ack.person.clone(),
                });
                return (verdict, answered);
            }
        };
        let r = CodeRef { a, d, task: false };
        let del = self.state.delivery(a, d);
        // The compact frames carry no version: an ack answered at the kit before the frame
        // with the record's current version went out (the update that re-notified them,
        // or the alert itself when it went out after the update) answers the version
        // before; one answered after it, the current one.
        let current_out = relay
            .starts
            .iter()
            .find(|t| **t >= del.version_since)
            .is_some_and(|t| answered >= *t);
        let code = match del.earlier.last() {
            Some(e) if !current_out => e.code,
            _ => self.code_of(r),
        };
        let verdict = self.verdict_for(answered, r, code, ack.person.clone(), false, &reject);
        (verdict, answered)
    }

    /// The field-kit relays of one alert, or `None` if unknown.
    pub fn relays(&self, alert: &AlertId) -> Option<Vec<RelayView>> {
        let a = *self.state.alert_ix.get(alert)?;
        let entry = self.state.alert(a);
        Some(
            entry
                .relays
                .iter()
                .map(|r| RelayView {
                    kit: r.target.kit.clone(),
                    device: r.target.device.clone(),
                    address: r.target.address.clone(),
                    state: r.state,
                    frame: r.frame,
                    tries: r.tries,
                    people: r.people.len() as u32,
                    acks: {
                        let by_kit = format!("{} via ", r.target.address);
                        entry
                            .deliveries
                            .iter()
                            .filter(|d| {
                                d.state == DeliveryState::Acknowledged
                                    && d.ack_evidence
                                        .as_deref()
                                        .is_some_and(|e| e.starts_with(&by_kit))
                            })
                            .count() as u32
                    },
                    since: r.since,
                    reason: r.reason.clone(),
                })
                .collect(),
        )
    }

    /// The uplink of an alert (on a kit's node), if it came down one.
    pub fn uplink_of(&self, alert: &AlertId) -> Option<Uplink> {
        let a = *self.state.alert_ix.get(alert)?;
        self.state.alert(a).plan.uplink.as_deref().cloned()
    }

    /// On a kit's node: the local id of an alert that came down the uplink from `from`
    /// with short id `short`, if there is one.
    pub fn uplinked_alert(&self, from: &Address, short: u32) -> Option<AlertId> {
        self.state.relay_alerts.iter().rev().find_map(|&a| {
            let e = self.state.alert(a);
            let up = e.plan.uplink.as_ref()?;
            (&up.to == from && up.short_id == short).then(|| e.plan.alert.id.clone())
        })
    }
}

/// One ack a field kit relayed: an entry of its ack batch.
#[derive(Clone, Debug, PartialEq)]
pub struct RelayedAck {
    /// The district's short id of the alert.
    pub alert: u32,
    /// The person (the district's id).
    pub person: PersonId,
    /// The code they gave at the kit.
    pub code: AckCode,
    /// When they answered at the kit.
    pub answered_at: Timestamp,
    /// The frame, for the record.
    pub evidence: String,
}

/// The district's short id of an alert, as frames carry it.
pub fn short_id(alert: &AlertId) -> u32 {
    ShortAlertId::derive(alert).get()
}

/// An [`Uplink`] for an alert that came down a kit's link.
pub fn uplink(device: DeviceId, to: Address, short_id: u32, max_bytes: usize) -> Uplink {
    Uplink {
        device,
        to,
        short_id,
        max_bytes,
    }
}
