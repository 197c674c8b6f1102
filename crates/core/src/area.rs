//! Areas: what an alert covers and what a person answers for.
//!
//! An alert's area is a list of [`AreaSpec`]s (their union). The GeoJSON geometry types
//! are accepted as they are; coordinates are `[lon, lat]` in WGS84.

use crate::ids::AreaId;
use serde::{Deserialize, Serialize};

/// One piece of an alert's area, as given in the API, CAP or config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AreaSpec {
    /// A GeoJSON Polygon: an outer ring and optional holes, each closed.
    Polygon {
        /// Rings of `[lon, lat]` positions.
        coordinates: Vec<Vec<[f64; 2]>>,
    },
    /// A GeoJSON MultiPolygon.
    MultiPolygon {
        /// Polygons, each a list of rings of `[lon, lat]` positions.
        coordinates: Vec<Vec<Vec<[f64; 2]>>>,
    },
    /// A circle: centre `[lon, lat]` and radius in metres (CAP `<circle>`).
    Circle {
        /// Centre `[lon, lat]`.
        center: [f64; 2],
        /// Radius in metres, greater than zero.
        radius_m: f64,
    },
    /// A named area from the directory (town, village, hazard point, reservoir...).
    Named {
        /// The named area's id.
        id: AreaId,
    },
}

/// What kind of place a named area is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AreaKind {
    /// A town or street (乡镇/街道).
    Town,
    /// A village or community.
    Village,
    /// A geological hazard point (usually a point with a buffer).
    HazardPoint,
    /// A reservoir.
    Reservoir,
    /// A river reach.
    RiverReach,
    /// A road underpass that floods.
    Underpass,
}

/// A named area in the directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedArea {
    /// Id, referenced by people and alerts.
    pub id: AreaId,
    /// What kind of place it is.
    pub kind: AreaKind,
    /// Name as shown to operators, e.g. 王家沟村.
    pub name: String,
    /// Town it belongs to (empty for a town itself).
    pub town: String,
    /// Its geometry; never `Named`.
    pub geometry: AreaSpec,
}
