//! People in the directory: who they are, what they answer for, how to reach them.

use crate::address::Address;
use crate::ids::{AreaId, PersonId};
use serde::{Deserialize, Serialize};

/// What a person is responsible for; policies can differ per role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A resident located in the area (reached, not escalated).
    Resident,
    /// Village head or village committee member (村两委).
    VillageHead,
    /// Grid lead (网格员).
    GridLead,
    /// Hazard-point warden (群测群防员).
    HazardWarden,
    /// Reservoir or river warden.
    ReservoirWarden,
    /// Town official; usually the supervisor of village leads.
    TownOfficial,
    /// District official.
    DistrictOfficial,
    /// Field crew with a portable kit.
    FieldCrew,
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 8] = [
        Role::Resident,
        Role::VillageHead,
        Role::GridLead,
        Role::HazardWarden,
        Role::ReservoirWarden,
        Role::TownOfficial,
        Role::DistrictOfficial,
        Role::FieldCrew,
    ];

    /// The snake_case name used in config and CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Resident => "resident",
            Role::VillageHead => "village_head",
            Role::GridLead => "grid_lead",
            Role::HazardWarden => "hazard_warden",
            Role::ReservoirWarden => "reservoir_warden",
            Role::TownOfficial => "town_official",
            Role::DistrictOfficial => "district_official",
            Role::FieldCrew => "field_crew",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether this role is a responsible person (must acknowledge, is escalated).
    pub fn is_responsible(self) -> bool {
        !matches!(self, Role::Resident)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One person in the district directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Person {
    /// The district's id for this person.
    pub id: PersonId,
    /// Name as shown to operators.
    pub name: String,
    /// Role; decides the policy and whether they are escalated.
    pub role: Role,
    /// Who is escalated to when this person does not answer.
    pub supervisor: Option<PersonId>,
    /// The named areas (village, hazard point, reservoir...) this person answers for.
    pub areas: Vec<AreaId>,
    /// Where the person lives or works, `[lon, lat]` in WGS84.
    pub location: Option<[f64; 2]>,
    /// Town (乡镇/街道) for per-town reports.
    pub town: String,
    /// Addresses per bearer, in order of preference.
    pub addresses: Vec<Address>,
}
