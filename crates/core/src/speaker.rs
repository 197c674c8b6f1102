//! Loudspeakers as endpoints: where they stand, which named areas they cover, and which
//! device and group drive them.

use crate::ids::{AreaId, DeviceId, SpeakerId};
use serde::{Deserialize, Serialize};

/// One loudspeaker (or one speaker group that is heard as one, e.g. a village's horns on
/// one amplifier) in the district directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Speaker {
    /// The district's id for this speaker.
    pub id: SpeakerId,
    /// Name as shown to operators (e.g. 王家沟村村委会广播).
    pub name: String,
    /// Town (乡镇/街道) for per-town reports.
    pub town: String,
    /// Where it stands, `[lon, lat]` in WGS84; `None` when it is targeted only through the
    /// named areas it covers.
    pub location: Option<[f64; 2]>,
    /// The named areas it covers: an alert touching any of them sounds this speaker.
    pub areas: Vec<AreaId>,
    /// The daemon's device that drives it (a `type = "speaker"` device).
    pub device: DeviceId,
    /// The group name in that speaker driver's config. The group is the unit of reception
    /// evidence: a speaker that should be reported on alone needs a group of its own.
    pub group: String,
}
