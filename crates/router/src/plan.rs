//! What intake hands the router: an accepted alert with its resolved targets.

use serde::{Deserialize, Serialize};
use tocsin_core::area::NamedArea;
use tocsin_core::{Address, Alert, AreaId, DeviceId, PersonId, Role, SpeakerId};

/// A person as the router needs them, copied into the plan so that replaying the log after
/// a restart gives the same campaign even if the directory changed since.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    /// Directory id.
    pub person: PersonId,
    /// Name, for reports.
    pub name: String,
    /// Role; selects the policy.
    pub role: Role,
    /// Town, for per-town reports.
    pub town: String,
    /// Addresses in order of preference.
    pub addresses: Vec<Address>,
    /// Who is escalated to when this person does not answer.
    pub supervisor: Option<PersonId>,
}

/// Why a person is targeted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum TargetReason {
    /// Located inside the alert's area.
    Located,
    /// Responsible for a named area that intersects the alert's area.
    Responsible {
        /// The first such area (by id), for the record.
        area: AreaId,
    },
}

/// One person to reach.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// Who.
    pub person: PersonId,
    /// Why.
    pub reason: TargetReason,
}

/// An accepted alert, resolved: everything the router needs to run its campaign.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertPlan {
    /// The alert as accepted.
    pub alert: Alert,
    /// Each person to reach, once.
    pub targets: Vec<Target>,
    /// Every person the campaign may contact: the targets and, up their supervisor
    /// chains, everyone an escalation may reach.
    pub contacts: Vec<Contact>,
    /// The named areas the alert's area intersects (for reports).
    pub areas: Vec<NamedAreaRef>,
    /// The loudspeakers in the area, each once; announced when the grade's policy says
    /// so (`GradePolicy::speakers`). Absent in logs written before speakers existed.
    #[serde(default)]
    pub speakers: Vec<SpeakerTarget>,
    /// Field kits serving some of the targets: each gets the alert as one compact frame
    /// and relays its people's acks back. Absent in logs written before kits existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kits: Vec<KitTarget>,
    /// Set on a field kit's node for an alert that came down its uplink: acks of this
    /// alert go back to the district in compact batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<Box<Uplink>>,
}

/// A field kit (a Tocsin node behind a satellite link) that serves some of an alert's
/// targets, copied into the plan like a [`Contact`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KitTarget {
    /// The kit's name in the district's config.
    pub kit: String,
    /// The device that reaches it (a BeiDou terminal, an SBD modem).
    pub device: DeviceId,
    /// Its card id or IMEI.
    pub address: Address,
    /// The named area the frame carries, which the kit resolves against its own
    /// directory; `None`: everyone the kit serves.
    pub area: Option<AreaId>,
    /// The targets it serves: the only people whose acks it may relay for this alert.
    pub people: Vec<PersonId>,
    /// Largest frame its link carries in one message, in bytes.
    pub max_bytes: usize,
}

/// Where a field kit's node sends the acks of an alert that came down its uplink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Uplink {
    /// The kit's own device on the link.
    pub device: DeviceId,
    /// The district node's card id or IMEI.
    pub to: Address,
    /// The district's short id of the alert (what the ack batches name).
    pub short_id: u32,
    /// Largest frame the link carries in one message, in bytes.
    pub max_bytes: usize,
}

/// A loudspeaker to announce the alert on, copied into the plan like a [`Contact`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpeakerTarget {
    /// Directory id.
    pub id: SpeakerId,
    /// Name, for reports.
    pub name: String,
    /// Town, for reports.
    pub town: String,
    /// The speaker device that drives it.
    pub device: DeviceId,
    /// What the announcement is sent to (`Address::Speaker(group)`).
    pub address: Address,
}

/// A named area the alert touches, by id and name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedAreaRef {
    /// Id.
    pub id: AreaId,
    /// Name.
    pub name: String,
}

impl From<&NamedArea> for NamedAreaRef {
    fn from(a: &NamedArea) -> Self {
        NamedAreaRef {
            id: a.id.clone(),
            name: a.name.clone(),
        }
    }
}
