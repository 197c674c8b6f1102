//! Read-only views of the router's state, as the API and reports show them.

use serde::{Deserialize, Serialize};
use tocsin_core::{
    AckCode, Address, Alert, AttemptId, Bearer, DeviceId, PersonId, Role, SpeakerId, Timestamp,
};

/// Where one (alert, person) 叫应 record stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Planned; no attempt has been handed to a device yet (the ack window has not
    /// started: the record waits in the send queue, neither escalated nor closed).
    Planned,
    /// At least one attempt is out; nothing confirmed yet.
    Attempting,
    /// The network confirmed delivery (or a call rang / was listened through).
    Reached,
    /// The person acknowledged (in time or late; see `late`).
    Acknowledged,
    /// Nobody answered in time: the supervisor is notified and a door-knock task is open.
    Escalated,
    /// The door-knock task was confirmed by its assignee.
    Confirmed,
    /// Every attempt is exhausted and nobody confirmed.
    Unreached,
    /// The alert was cancelled before this record finished.
    Cancelled,
    /// The person is no longer inside the updated area and was told so.
    Withdrawn,
}

impl DeliveryState {
    /// Whether this record is finished (no more attempts or timers).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryState::Acknowledged
                | DeliveryState::Confirmed
                | DeliveryState::Unreached
                | DeliveryState::Cancelled
                | DeliveryState::Withdrawn
        )
    }
}

/// Where an alert as a whole stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Records are still open.
    Active,
    /// Every record is final.
    Done,
    /// Cancelled by an operator.
    Cancelled,
}

/// Counts of records per state, plus the ones that need attention.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// People targeted.
    pub targets: u32,
    /// Records in each state (snake_case state name → count; every state present).
    pub by_state: std::collections::BTreeMap<DeliveryState, u32>,
    /// People the warning reached: delivered on some bearer (a delivery report, a call
    /// listened through) or acknowledged by them. Escalated and door-knock-confirmed records
    /// count here only if their own warning was delivered.
    #[serde(default)]
    pub reached: u32,
    /// Records acknowledged by the person after the deadline (included in `acknowledged`:
    /// acknowledged in time = acknowledged − late). A late door-knock confirmation is not
    /// counted here but in `late_door_knocks`.
    pub late: u32,
    /// Door-knock tasks confirmed after their record had closed unreached (included in
    /// `confirmed`). Absent in older summaries: 0.
    #[serde(default)]
    pub late_door_knocks: u32,
    /// Escalated at some point (whatever state they are in now).
    pub escalated: u32,
    /// Escalated records whose door-knock task was accepted and whose visit is not yet
    /// confirmed (included in the `escalated` state: someone is on the way; `confirmed`
    /// counts visits). Absent in older summaries: 0.
    #[serde(default)]
    pub door_knocks_accepted: u32,
    /// Attempts made in all.
    pub attempts: u32,
    /// Replies rejected (wrong number, wrong code) for this alert.
    pub rejected_replies: u32,
}

/// One alert with its counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertSummary {
    /// The alert.
    pub alert: Alert,
    /// Where it stands.
    pub state: AlertState,
    /// Counts.
    pub counts: Counts,
    /// Counts per town (town → counts), for the 叫应 report.
    pub by_town: std::collections::BTreeMap<String, Counts>,
    /// When the last record became final (if `Done`).
    pub finished_at: Option<Timestamp>,
    /// Loudspeaker announcements per state (never counted among the people above).
    #[serde(default)]
    pub speakers: SpeakerCounts,
}

/// Where one loudspeaker announcement stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpeakerState {
    /// Planned; not handed to its device yet (the device is down).
    Planned,
    /// Handed to the device (queued behind a higher grade, or streaming).
    Playing,
    /// A receiver report from the speaker shows it received the programme.
    Reached,
    /// No receiver report within the window, or the programme failed: nobody can say it
    /// was heard.
    NoEvidence,
    /// The alert was cancelled before the announcement finished.
    Cancelled,
}

impl SpeakerState {
    /// Whether nothing more will happen to the announcement (a late receiver report can
    /// still turn `no_evidence` into `reached`).
    pub fn is_final(self) -> bool {
        !matches!(self, SpeakerState::Planned | SpeakerState::Playing)
    }
}

/// Loudspeaker announcements of one alert per state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeakerCounts {
    /// Speakers announced on.
    pub speakers: u32,
    /// Not yet handed to a device.
    pub planned: u32,
    /// Playing or waiting on the device.
    pub playing: u32,
    /// With reception evidence.
    pub reached: u32,
    /// Without reception evidence.
    pub no_evidence: u32,
    /// Cancelled before they finished.
    pub cancelled: u32,
}

/// One loudspeaker announcement as shown to operators and in the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpeakerView {
    /// Speaker id.
    pub id: SpeakerId,
    /// Name.
    pub name: String,
    /// Town.
    pub town: String,
    /// The device that plays it.
    pub device: DeviceId,
    /// Where it stands.
    pub state: SpeakerState,
    /// The first receiver report's evidence (packets received, loss, jitter), if any.
    pub evidence: Option<String>,
    /// How many receiver-report evidences came in.
    pub reports: u32,
    /// Why it ended without evidence, if it did.
    pub reason: Option<String>,
    /// The latest attempt (the warning programme).
    pub attempt: Option<AttemptId>,
    /// When it entered its current state.
    pub since: Timestamp,
}

/// One attempt as shown to operators.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptView {
    /// Id.
    pub attempt: AttemptId,
    /// Bearer used.
    pub bearer: Bearer,
    /// Device used.
    pub device: DeviceId,
    /// Address used.
    pub to: Address,
    /// When it was handed to the driver.
    pub started_at: Timestamp,
    /// Last outcome reported by the driver (`queued`, `sent`, `delivered`, `failed: …`).
    pub outcome: String,
    /// Network reference (e.g. TP-MR).
    pub reference: Option<String>,
    /// Whether this attempt re-sends one that may already have gone out (after a restart).
    pub possible_duplicate: bool,
}

/// One (alert, person) record as shown to operators.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryView {
    /// Who.
    pub person: PersonId,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Town.
    pub town: String,
    /// State.
    pub state: DeliveryState,
    /// The person's one-time ack code for this alert.
    pub code: AckCode,
    /// Attempts so far.
    pub attempts: Vec<AttemptView>,
    /// When the ack was recorded.
    pub acked_at: Option<Timestamp>,
    /// Evidence of the ack (bearer, address, raw text).
    pub ack_evidence: Option<String>,
    /// Acknowledged after the deadline.
    pub late: bool,
    /// The supervisor escalated to, if any.
    pub escalated_to: Option<PersonId>,
    /// When the record entered its current state.
    pub since: Timestamp,
    /// The current door-knock task, if the record was escalated: assigned, accepted (the
    /// assignee is going) or confirmed (the visit). Absent in older views.
    #[serde(default)]
    pub door_knock: Option<DoorKnockView>,
}

/// Where a door-knock task stands: `assigned → accepted → confirmed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Sent to the assignee; nobody has answered it yet.
    Assigned,
    /// The assignee acknowledged the task (key 1 in its call, a bare 收到): they are going;
    /// the visit is not confirmed yet.
    Accepted,
    /// The visit was confirmed with the task's code.
    Confirmed,
}

/// The current door-knock task of a record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DoorKnockView {
    /// Who is asked to go (the latest level).
    pub assignee: PersonId,
    /// 0 for the person's own supervisor, 1 for the next one up, and so on.
    pub level: u32,
    /// Where the task stands.
    pub state: TaskState,
    /// Who accepted it, if it was accepted.
    pub accepted_by: Option<PersonId>,
    /// When it was accepted.
    pub accepted_at: Option<Timestamp>,
    /// When the visit must be confirmed by before the task goes one level further (while
    /// accepted and the record open).
    pub visit_due: Option<Timestamp>,
}

/// The predicted load of an alert on one bearer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BearerLoad {
    /// Bearer.
    pub bearer: Bearer,
    /// First attempts planned on it.
    pub messages: u32,
    /// Devices serving it.
    pub devices: u32,
    /// Seconds until every first attempt on it is out, from the send budgets.
    pub seconds: f64,
}

/// What an alert would do if issued now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    /// People targeted.
    pub people: u32,
    /// Of which responsible persons.
    pub responsible: u32,
    /// Load per bearer.
    pub bearers: Vec<BearerLoad>,
    /// People with no address on any bearer the policy allows (cannot be reached).
    pub unreachable: u32,
    /// Predicted seconds until everyone's first attempt is out.
    pub seconds_to_first_attempt_all: f64,
    /// Loudspeakers in the area (located inside it or covering a named area it touches),
    /// each once; never counted among the people. Absent in older previews: 0.
    #[serde(default)]
    pub speakers: u32,
    /// Whether the policy of the alert's grade (and kind) sounds those speakers (by default
    /// red and orange, unless turned off); `false`: they are in the area but stay silent.
    #[serde(default)]
    pub speakers_sound: bool,
    /// Estimated residents of the named areas the alert touches: villages partly inside
    /// count whole (see `Directory::estimate_population`). `None`: unknown (no counted
    /// area has a figure, or the router was not given one), which is not the same as 0.
    #[serde(default)]
    pub population: Option<u64>,
    /// Counted areas without a population figure: when above 0, `population` is a lower
    /// bound.
    #[serde(default)]
    pub population_unknown_areas: u32,
}
