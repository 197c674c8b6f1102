//! The router's log records: every state change, as the store keeps it.
//!
//! Records carry every decision that depended on configuration (routes chosen, deadlines,
//! texts), so replaying a log gives the same campaign even if the config changed since.

use crate::plan::AlertPlan;
use crate::view::{DeliveryState, SpeakerState};
use serde::{Deserialize, Serialize};
use tocsin_channel::InboundReceipt;
use tocsin_core::{
    AckCode, AckKey, Address, AlertId, AttemptId, Bearer, DeviceId, Grade, PersonId, SpeakerId,
    Timestamp,
};

/// One bearer and the address used on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Route {
    /// Bearer.
    pub bearer: Bearer,
    /// Address on that bearer.
    pub to: Address,
}

/// How one (alert, person) record will be worked, decided when it is planned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryPlan {
    /// The person's one-time code for this alert.
    pub code: AckCode,
    /// The message text.
    pub message: String,
    /// Grade the record is worked at (send priority).
    pub grade: Grade,
    /// Whether the person must acknowledge.
    pub ack_required: bool,
    /// Whether a missed deadline escalates.
    pub escalate: bool,
    /// First-round routes, used in parallel.
    pub routes: Vec<Route>,
    /// Routes opened one at a time when a route fails for good.
    pub fallback: Vec<Route>,
    /// Attempts per route, the first included.
    pub attempts_per_route: u32,
    /// Wait after a retryable failure, in milliseconds.
    pub backoff_ms: u64,
    /// Whether the person is a responsible person (by role, or targeted for a named area
    /// they answer for): their sends go before residents' sends of the same grade.
    pub responsible: bool,
    /// The ack window in milliseconds (without ack: how long to wait for a delivery
    /// report). It runs from the record's first warning attempt handed to a device (its
    /// `attempt_started` record), not from planning: a person whose first send is still
    /// queued is neither escalated nor closed.
    pub window_ms: u64,
    /// When reminders are resent while no ack has come, in milliseconds from the start of
    /// the window.
    pub reminders_ms: Vec<u64>,
    /// When the window started, if it did before this plan: carried over when an open
    /// record is re-planned without a grade rise. `None`: it starts with the first warning
    /// attempt after this plan.
    pub window_from: Option<Timestamp>,
    /// Door-knock task deadline, in milliseconds from the task's first attempt handed to a
    /// device.
    pub task_deadline_ms: u64,
    /// Which version of the warning this plan sends the person: 1 for the first, one more
    /// each time an update re-notifies them (a grade rise, a new instruction text, or an
    /// operator's re-notify). Each version has its own code ([`version_code`]) and ack
    /// window; an ack of an earlier version stays on record as that version's and does not
    /// close this one. Absent in older logs: 1.
    #[serde(default = "first_version")]
    pub version: u32,
    /// When nobody answers by the deadline: how many fallback routes are tried one after
    /// another before escalating (see `GradePolicy::silence_fallbacks`). Absent in older
    /// logs: 0, escalate at the deadline.
    #[serde(default)]
    pub silence_fallbacks: u32,
    /// How long each silence fallback waits for an answer, in milliseconds.
    #[serde(default)]
    pub silence_wait_ms: u64,
}

/// The first version of a record's warning (see [`DeliveryPlan::version`]).
pub(crate) fn first_version() -> u32 {
    1
}

/// The code of one version of a person's warning: version 1 keeps the code every log
/// written before versions had, `AckCode::derive(key, alert, person)`; later versions
/// derive from the pseudo-person `{person}#v{version}`, so a reply to an earlier message
/// never carries the code of the current one.
pub fn version_code(key: &AckKey, alert: &AlertId, person: &PersonId, version: u32) -> AckCode {
    if version <= 1 {
        AckCode::derive(key, alert, person)
    } else {
        AckCode::derive(key, alert, &PersonId(format!("{person}#v{version}")))
    }
}

impl DeliveryPlan {
    /// The ack (or delivery-report) deadline, once the window has started.
    pub fn deadline(&self) -> Option<Timestamp> {
        self.window_from
            .map(|from| from + std::time::Duration::from_millis(self.window_ms))
    }
}

/// A door-knock task: the supervisor goes and checks, and acks with the task's code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DoorKnockTask {
    /// Who is asked to go.
    pub assignee: PersonId,
    /// 0 for the person's own supervisor, 1 for the next one up, and so on.
    pub level: u32,
    /// The task's code (the same at every level of one record's chain).
    pub code: AckCode,
    /// The text sent to the assignee.
    pub text: String,
    /// Routes to the assignee.
    pub routes: Vec<Route>,
    /// How long after the task's first attempt handed to a device it escalates one level
    /// further if nobody answers (neither accepts nor confirms it), in milliseconds.
    pub deadline_ms: u64,
    /// Once the assignee accepted the task (a key 1 in the task's call, a bare 收到 the
    /// router attributes to it), how long they have to confirm the visit (`1 CODE`) before
    /// the task goes one level further, in milliseconds. Absent in older logs: the default
    /// of the policies' `door_knock_visit_s` ([`DEFAULT_VISIT_MS`]).
    #[serde(default = "default_visit_ms")]
    pub visit_ms: u64,
}

/// The visit window of a task from a log written before tasks could be accepted: 30
/// minutes, as the red policy's default `door_knock_visit_s`.
pub const DEFAULT_VISIT_MS: u64 = crate::policy::DEFAULT_DOOR_KNOCK_VISIT_S * 1000;

fn default_visit_ms() -> u64 {
    DEFAULT_VISIT_MS
}

/// What an attempt is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Purpose {
    /// The warning to the person.
    Alert,
    /// A door-knock task to a supervisor.
    DoorKnock {
        /// Level in the chain.
        level: u32,
    },
    /// A notice (cancellation, withdrawal).
    Notice {
        /// Which notice.
        notice: NoticeKind,
    },
}

/// Kinds of notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// The alert was cancelled.
    Cancelled,
    /// The person is no longer in the updated area.
    Withdrawn,
}

/// What a driver said about an attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Queued on the device.
    Accepted,
    /// Taken by the network.
    Sent {
        /// Network reference(s).
        reference: String,
    },
    /// Delivered to the handset.
    Delivered {
        /// Raw evidence.
        evidence: String,
    },
    /// Failed.
    Failed {
        /// Whether the same bearer may succeed later.
        retryable: bool,
        /// Why.
        reason: String,
    },
}

/// Why a reply was not counted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Rejection {
    /// The sender's address is registered to nobody in any open alert.
    UnknownSender,
    /// The code belongs to no record.
    WrongCode {
        /// The code as read.
        code: AckCode,
    },
    /// The code belongs to someone else's record (named for the audit only).
    OthersCode {
        /// The code as read.
        code: AckCode,
        /// Alert of the record the code belongs to.
        alert: AlertId,
        /// Whose record it is.
        person: PersonId,
    },
    /// The code is for a record that is closed (cancelled or withdrawn).
    Closed {
        /// The code as read.
        code: AckCode,
        /// Alert.
        alert: AlertId,
        /// Person.
        person: PersonId,
    },
    /// A bare ack while the sender has several open records that need an ack.
    Ambiguous {
        /// How many are open.
        open: u32,
    },
    /// A bare ack while the sender has no open record that needs an ack.
    NothingOpen,
    /// Neither a code nor a bare ack.
    NotAnAck,
    /// The sender gave five wrong codes within ten minutes: their replies are not tried
    /// until `until` (a defence against guessing codes).
    RateLimited {
        /// When replies are tried again.
        until: Timestamp,
    },
    /// A field kit relayed an ack for an alert it was not sent, or for someone it does
    /// not serve in that alert.
    NotRelayed {
        /// The kit's name, or its address when it is no configured kit.
        kit: String,
        /// The person the kit named.
        person: PersonId,
    },
}

/// What a reply was taken as.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The person acknowledged their record.
    Ack {
        /// Alert.
        alert: AlertId,
        /// Person.
        person: PersonId,
        /// After the deadline (or after escalation / unreached).
        late: bool,
        /// Which version of the warning it acknowledges (the code it carried, or the
        /// attempt it answers). An ack of an earlier version than the record's current one
        /// is kept as that version's and does not close the record. Absent in older logs: 1.
        #[serde(default = "first_version")]
        version: u32,
    },
    /// A supervisor accepted the door-knock task of `person`'s record (a key 1 in the
    /// task's call, or a bare ack the router attributes to the task): they are going. The
    /// task stops escalating for want of an answer; its visit window (`visit_ms`) starts.
    /// The record stays escalated until the visit is confirmed with the task's code.
    DoorKnockAccepted {
        /// Alert.
        alert: AlertId,
        /// Whose record the task belongs to.
        person: PersonId,
        /// Who accepted.
        by: PersonId,
        /// The version of the person's warning current when it was accepted.
        #[serde(default = "first_version")]
        version: u32,
    },
    /// A supervisor confirmed the visit of the door-knock task of `person`'s record (the
    /// task's code, `1 CODE`).
    DoorKnockConfirmed {
        /// Alert.
        alert: AlertId,
        /// Whose record the task belongs to.
        person: PersonId,
        /// Who confirmed.
        by: PersonId,
        /// After the record was closed as unreached.
        late: bool,
        /// The version of the person's warning current when it was confirmed. Absent in
        /// older logs: 1.
        #[serde(default = "first_version")]
        version: u32,
    },
    /// The record was already acknowledged or confirmed: counted once.
    Duplicate {
        /// Alert.
        alert: AlertId,
        /// Person.
        person: PersonId,
    },
    /// Not counted.
    Rejected {
        /// Why.
        #[serde(flatten)]
        rejection: Rejection,
        /// Alerts the reply concerns (for per-alert counts of rejected replies).
        alerts: Vec<AlertId>,
    },
}

/// Which compact frame a relay carried to a field kit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayFrame {
    /// The alert.
    Alert,
    /// Its revision.
    Update,
    /// Its withdrawal.
    Cancel,
}

/// One state change of the router. Serialized with a `type` tag in snake_case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// An alert was accepted; the plan is carried whole.
    AlertAccepted {
        /// When.
        at: Timestamp,
        /// The whole plan.
        plan: AlertPlan,
    },
    /// An alert was updated (grade, text or area); the new plan is carried whole.
    AlertUpdated {
        /// When.
        at: Timestamp,
        /// The whole new plan.
        plan: AlertPlan,
    },
    /// An operator cancelled the alert.
    AlertCancelled {
        /// When.
        at: Timestamp,
        /// Which alert.
        alert: AlertId,
        /// Who.
        by: String,
    },
    /// A person's record was planned.
    DeliveryPlanned {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// Person.
        person: PersonId,
        /// How it will be worked.
        plan: DeliveryPlan,
    },
    /// An open record was planned again (alert updated, or a withdrawn person is back).
    DeliveryReplanned {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// Person.
        person: PersonId,
        /// The new plan.
        plan: DeliveryPlan,
    },
    /// An attempt was handed to a device.
    AttemptStarted {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// Whose record.
        person: PersonId,
        /// The attempt.
        attempt: AttemptId,
        /// What for.
        purpose: Purpose,
        /// Lane of the record it belongs to (internal, stable under replay).
        lane: u32,
        /// Bearer.
        bearer: Bearer,
        /// Device.
        device: DeviceId,
        /// Address.
        to: Address,
        /// Text.
        text: String,
        /// Re-sends one that may already have gone out.
        possible_duplicate: bool,
        /// Which version of the person's warning the attempt belongs to (see
        /// [`DeliveryPlan::version`]; a door-knock task or notice: the version current when
        /// its lane opened). Absent in older logs: 1.
        #[serde(default = "first_version")]
        version: u32,
    },
    /// A driver reported on an attempt.
    AttemptOutcome {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// Whose record.
        person: PersonId,
        /// The attempt.
        attempt: AttemptId,
        /// Device that reported it.
        device: DeviceId,
        /// What happened.
        outcome: Outcome,
    },
    /// An attempt that did not go out for sure is given up and sent again (device down,
    /// or a restart found it without outcome).
    AttemptAbandoned {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// Whose record.
        person: PersonId,
        /// The attempt.
        attempt: AttemptId,
        /// Why.
        reason: String,
        /// Whether the re-send may duplicate it.
        possible_duplicate: bool,
    },
    /// The record became final (acknowledged, confirmed, cancelled, withdrawn, closed)
    /// while this attempt — a warning or a door-knock task — was still with a driver
    /// without a final outcome (started, accepted or sent, not delivered or failed): the
    /// driver is told to stop it (`DriverCommand::Cancel`). A later driver outcome for it
    /// is recorded and changes nothing, except that a `delivered` still counts as the
    /// warning having reached the person.
    AttemptCancelled {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// Whose record.
        person: PersonId,
        /// The attempt.
        attempt: AttemptId,
        /// The device that holds it (and is told to cancel it).
        device: DeviceId,
        /// Why, e.g. `acknowledged`, `alert cancelled`.
        reason: String,
    },
    /// A reminder is due: every open route sends again.
    Reminder {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// Person.
        person: PersonId,
        /// 1 for the first reminder.
        n: u32,
    },
    /// Nobody answered by the ack deadline: the next fallback route is tried, and the
    /// record escalates (or closes) only if `wait_ms` more pass without an answer.
    NextBearer {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// Person.
        person: PersonId,
        /// The route opened.
        route: Route,
        /// How long it gets, in milliseconds.
        wait_ms: u64,
    },
    /// Nobody answered: a door-knock task is opened for a supervisor.
    Escalated {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// Whose record.
        person: PersonId,
        /// The task.
        task: DoorKnockTask,
        /// Why, when it is not the missed ack deadline (e.g. "not attempted: no device
        /// could send in time"). Absent in older logs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The record is closed without an ack: `reached` (no ack needed) or `unreached`.
    DeliveryClosed {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// Person.
        person: PersonId,
        /// Final state.
        state: DeliveryState,
        /// Why, for operators.
        reason: String,
    },
    /// The updated area no longer covers the person.
    DeliveryWithdrawn {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// Person.
        person: PersonId,
    },
    /// A notice is to be sent to someone already contacted for this record.
    NoticePlanned {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// Whose record.
        person: PersonId,
        /// Who receives it (the person or a door-knock assignee).
        recipient: PersonId,
        /// Which notice.
        notice: NoticeKind,
        /// Text.
        text: String,
        /// Route.
        route: Route,
    },
    /// A message came in, with what it was taken as.
    Reply {
        /// When.
        at: Timestamp,
        /// Device that received it.
        device: DeviceId,
        /// Sender.
        from: Address,
        /// Text.
        text: String,
        /// Raw evidence.
        evidence: String,
        /// When the network says it was sent.
        sent_at: Option<Timestamp>,
        /// The receipt released once this is committed.
        receipt: Option<InboundReceipt>,
        /// The attempt the bearer says this answers (a key pressed in the call placed for
        /// it): the verdict went to that attempt's record. Absent in logs written before
        /// bearers said so.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        in_reply_to: Option<AttemptId>,
        /// Verdict.
        verdict: Verdict,
    },
    /// A loudspeaker announcement was planned (the grade's policy sounds speakers).
    AnnouncementPlanned {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// Speaker.
        speaker: SpeakerId,
        /// The speaker device that plays it.
        device: DeviceId,
        /// Where (`Address::Speaker(group)`).
        to: Address,
        /// The text the driver reads out (grade and exercise marks included).
        text: String,
        /// How long after the programme is handed over or starts a speaker without a
        /// receiver report is "no evidence", in milliseconds.
        window_ms: u64,
    },
    /// An announcement (or, with `notice`, the cancellation after one that played) was
    /// handed to the speaker device.
    AnnouncementStarted {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// Speaker.
        speaker: SpeakerId,
        /// The attempt.
        attempt: AttemptId,
        /// Device.
        device: DeviceId,
        /// Address.
        to: Address,
        /// Text.
        text: String,
        /// The cancellation notice, not the warning.
        #[serde(default)]
        notice: bool,
    },
    /// The speaker driver reported on an announcement.
    AnnouncementOutcome {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// Speaker.
        speaker: SpeakerId,
        /// The attempt.
        attempt: AttemptId,
        /// Device that reported it.
        device: DeviceId,
        /// What happened: `sent` when streaming starts, `delivered` with a speaker's
        /// receiver report as evidence.
        outcome: Outcome,
    },
    /// An announcement ended without evidence (no receiver report in its window, the
    /// driver failed it, or no device can play it).
    AnnouncementClosed {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// Speaker.
        speaker: SpeakerId,
        /// Final state.
        state: SpeakerState,
        /// Why, for operators.
        reason: String,
    },
    /// A compact frame for a field kit was handed to the device that reaches it: the
    /// alert itself, its update, or its cancellation.
    RelayStarted {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// Kit.
        kit: String,
        /// The attempt.
        attempt: AttemptId,
        /// Device.
        device: DeviceId,
        /// The kit's address.
        to: Address,
        /// Which frame.
        frame: RelayFrame,
        /// The frame's bytes in hex, as sent.
        bytes: String,
    },
    /// The device reported on a relay attempt; `delivered` when the kit itself answered
    /// (an ack batch naming the alert).
    RelayOutcome {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// Kit.
        kit: String,
        /// The attempt.
        attempt: AttemptId,
        /// Device that reported it.
        device: DeviceId,
        /// What happened.
        outcome: Outcome,
    },
    /// A relay gave up: the device failed it for good, or every retry failed.
    RelayFailed {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// Kit.
        kit: String,
        /// Why, for operators.
        reason: String,
    },
    /// On a field kit's node: a batch of acks went up to the district (handed to the
    /// uplink device).
    UplinkStarted {
        /// When.
        at: Timestamp,
        /// Alert (the kit's own id for it).
        alert: AlertId,
        /// The attempt.
        attempt: AttemptId,
        /// Device.
        device: DeviceId,
        /// The district's address.
        to: Address,
        /// Whose acks the batch carries.
        people: Vec<PersonId>,
        /// The frame's bytes in hex, as sent.
        bytes: String,
    },
    /// The uplink device reported on a batch.
    UplinkOutcome {
        /// When.
        at: Timestamp,
        /// Alert.
        alert: AlertId,
        /// The attempt.
        attempt: AttemptId,
        /// Device.
        device: DeviceId,
        /// What happened.
        outcome: Outcome,
    },
    /// A device went down or came back up.
    DeviceHealth {
        /// When.
        at: Timestamp,
        /// Device.
        device: DeviceId,
        /// Up or down.
        up: bool,
        /// Last error, if any.
        detail: Option<String>,
    },
}

impl Record {
    /// The record's kind (its `type` tag), e.g. `alert_accepted`.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::AlertAccepted { .. } => "alert_accepted",
            Record::AlertUpdated { .. } => "alert_updated",
            Record::AlertCancelled { .. } => "alert_cancelled",
            Record::DeliveryPlanned { .. } => "delivery_planned",
            Record::DeliveryReplanned { .. } => "delivery_replanned",
            Record::AttemptStarted { .. } => "attempt_started",
            Record::AttemptOutcome { .. } => "attempt_outcome",
            Record::AttemptAbandoned { .. } => "attempt_abandoned",
            Record::AttemptCancelled { .. } => "attempt_cancelled",
            Record::Reminder { .. } => "reminder",
            Record::NextBearer { .. } => "next_bearer",
            Record::Escalated { .. } => "escalated",
            Record::DeliveryClosed { .. } => "delivery_closed",
            Record::DeliveryWithdrawn { .. } => "delivery_withdrawn",
            Record::NoticePlanned { .. } => "notice_planned",
            Record::Reply { .. } => "reply",
            Record::DeviceHealth { .. } => "device_health",
            Record::AnnouncementPlanned { .. } => "announcement_planned",
            Record::AnnouncementStarted { .. } => "announcement_started",
            Record::AnnouncementOutcome { .. } => "announcement_outcome",
            Record::AnnouncementClosed { .. } => "announcement_closed",
            Record::RelayStarted { .. } => "relay_started",
            Record::RelayOutcome { .. } => "relay_outcome",
            Record::RelayFailed { .. } => "relay_failed",
            Record::UplinkStarted { .. } => "uplink_started",
            Record::UplinkOutcome { .. } => "uplink_outcome",
        }
    }

    /// The alert the record belongs to, if any.
    pub fn alert(&self) -> Option<&AlertId> {
        match self {
            Record::AlertAccepted { plan, .. } | Record::AlertUpdated { plan, .. } => {
                Some(&plan.alert.id)
            }
            Record::AlertCancelled { alert, .. }
            | Record::DeliveryPlanned { alert, .. }
            | Record::DeliveryReplanned { alert, .. }
            | Record::AttemptStarted { alert, .. }
            | Record::AttemptOutcome { alert, .. }
            | Record::AttemptAbandoned { alert, .. }
            | Record::AttemptCancelled { alert, .. }
            | Record::Reminder { alert, .. }
            | Record::Escalated { alert, .. }
            | Record::NextBearer { alert, .. }
            | Record::DeliveryClosed { alert, .. }
            | Record::DeliveryWithdrawn { alert, .. }
            | Record::NoticePlanned { alert, .. }
            | Record::AnnouncementPlanned { alert, .. }
            | Record::AnnouncementStarted { alert, .. }
            | Record::AnnouncementOutcome { alert, .. }
            | Record::AnnouncementClosed { alert, .. }
            | Record::RelayStarted { alert, .. }
            | Record::RelayOutcome { alert, .. }
            | Record::RelayFailed { alert, .. }
            | Record::UplinkStarted { alert, .. }
            | Record::UplinkOutcome { alert, .. } => Some(alert),
            Record::Reply { verdict, .. } => match verdict {
                Verdict::Ack { alert, .. }
                | Verdict::DoorKnockAccepted { alert, .. }
                | Verdict::DoorKnockConfirmed { alert, .. }
                | Verdict::Duplicate { alert, .. } => Some(alert),
                Verdict::Rejected { alerts, .. } => alerts.first(),
            },
            Record::DeviceHealth { .. } => None,
        }
    }

    /// When it happened.
    pub fn at(&self) -> Timestamp {
        match self {
            Record::AlertAccepted { at, .. }
            | Record::AlertUpdated { at, .. }
            | Record::AlertCancelled { at, .. }
            | Record::DeliveryPlanned { at, .. }
            | Record::DeliveryReplanned { at, .. }
            | Record::AttemptStarted { at, .. }
            | Record::AttemptOutcome { at, .. }
            | Record::AttemptAbandoned { at, .. }
            | Record::AttemptCancelled { at, .. }
            | Record::Reminder { at, .. }
            | Record::Escalated { at, .. }
            | Record::NextBearer { at, .. }
            | Record::DeliveryClosed { at, .. }
            | Record::DeliveryWithdrawn { at, .. }
            | Record::NoticePlanned { at, .. }
            | Record::Reply { at, .. }
            | Record::DeviceHealth { at, .. }
            | Record::AnnouncementPlanned { at, .. }
            | Record::AnnouncementStarted { at, .. }
            | Record::AnnouncementOutcome { at, .. }
            | Record::AnnouncementClosed { at, .. }
            | Record::RelayStarted { at, .. }
            | Record::RelayOutcome { at, .. }
            | Record::RelayFailed { at, .. }
            | Record::UplinkStarted { at, .. }
            | Record::UplinkOutcome { at, .. } => *at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_serialise_with_a_snake_case_type_tag() {
        let r = Record::Reply {
            at: Timestamp(5),
            device: DeviceId::from("m1"),
            from: Address::MeshNode(7),
            text: "1".into(),
            evidence: "raw".into(),
            sent_at: None,
            receipt: Some(InboundReceipt("3".into())),
            in_reply_to: None,
            verdict: Verdict::Rejected {
                rejection: Rejection::Ambiguous { open: 2 },
                alerts: vec![AlertId::from("a")],
            },
        };
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["type"], "reply");
        assert_eq!(j["verdict"]["verdict"], "rejected");
        assert_eq!(j["verdict"]["reason"], "ambiguous");
        // Written only when a bearer named the attempt, so older logs look the same.
        assert!(j.get("in_reply_to").is_none(), "{j}");
        assert_eq!(serde_json::from_value::<Record>(j).unwrap(), r);
        assert_eq!(r.kind(), "reply");
        assert_eq!(r.alert().map(|a| a.as_str()), Some("a"));
        assert_eq!(r.at(), Timestamp(5));
    }

    #[test]
    fn a_reply_keeps_the_attempt_it_answers_and_older_logs_still_read() {
        let r = Record::Reply {
            at: Timestamp(9),
            device: DeviceId::from("modem-0-voice"),
            from: Address::MeshNode(7),
            text: "1".into(),
            evidence: "DTMF 1 (+QTONEDET: 49) in call-3 at +2.0 s".into(),
            sent_at: None,
            receipt: None,
            in_reply_to: Some(AttemptId(42)),
            verdict: Verdict::Duplicate {
                alert: AlertId::from("a"),
                person: PersonId::from("p"),
            },
        };
        let mut j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["in_reply_to"], 42);
        assert_eq!(serde_json::from_value::<Record>(j.clone()).unwrap(), r);
        // A log line from before the field existed.
        j.as_object_mut().unwrap().remove("in_reply_to");
        let old = serde_json::from_value::<Record>(j).unwrap();
        assert!(
            matches!(
                old,
                Record::Reply {
                    in_reply_to: None,
                    ..
                }
            ),
            "{old:?}"
        );
    }
}
