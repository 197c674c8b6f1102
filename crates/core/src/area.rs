//! Areas: what an alert covers and what a person answers for.
//!
//! An alert's area is a list of [`AreaSpec`]s (their union). The GeoJSON geometry types
//! are accepted as they are; coordinates are `[lon, lat]` in WGS84.

use crate::ids::AreaId;
use geo::{BoundingRect, Distance, Haversine, Intersects};
use geo_types::{Coord, LineString, MultiPolygon, Point, Polygon, Rect};
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

/// The largest circle radius accepted: 500 km. A warning area wider than that is a
/// mistake in the input (metres given as something else), not a real fence.
pub const MAX_RADIUS_M: f64 = 500_000.0;

/// Why an area could not be used. Messages name the place in the geometry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AreaError {
    /// A coordinate is NaN or infinite.
    #[error("{at}: position [{}, {}] is not a finite number", .position[0], .position[1])]
    NotFinite {
        /// Where in the geometry, e.g. "polygon 0, ring 1, position 3".
        at: String,
        /// The offending `[lon, lat]`.
        position: [f64; 2],
    },
    /// Longitude outside -180..=180 or latitude outside -90..=90.
    #[error(
        "{at}: position [{}, {}] is out of range (lon -180..180, lat -90..90)",
        .position[0], .position[1]
    )]
    OutOfRange {
        /// Where in the geometry.
        at: String,
        /// The offending `[lon, lat]`.
        position: [f64; 2],
    },
    /// A GeoJSON position with fewer than two numbers.
    #[error("{at}: a position needs at least [lon, lat], got {len} number(s)")]
    ShortPosition {
        /// Where in the geometry.
        at: String,
        /// How many numbers it had.
        len: usize,
    },
    /// A ring whose first and last positions differ.
    #[error("{at}: not closed (first [{}, {}] != last [{}, {}])", .first[0], .first[1], .last[0], .last[1])]
    RingNotClosed {
        /// Which polygon and ring.
        at: String,
        /// First position.
        first: [f64; 2],
        /// Last position.
        last: [f64; 2],
    },
    /// A ring with fewer than 4 positions (a closed triangle needs 4).
    #[error("{at}: has {len} position(s), a closed ring needs at least 4")]
    RingTooShort {
        /// Which polygon and ring.
        at: String,
        /// How many positions it had.
        len: usize,
    },
    /// A polygon without any ring, or a multipolygon without any polygon.
    #[error("{at}: is empty")]
    Empty {
        /// Which geometry.
        at: String,
    },
    /// A circle radius that is not a number in (0, 500 km].
    #[error("circle radius {radius_m} m must be greater than 0 and at most 500000 m")]
    BadRadius {
        /// The radius given.
        radius_m: f64,
    },
    /// A `Named` area that the directory does not know.
    #[error("unknown named area {:?}", .id.as_str())]
    UnknownArea {
        /// The id asked for.
        id: AreaId,
    },
    /// A named area whose own geometry is again `Named` (only one level is allowed).
    #[error(
        "named area {:?} is defined as another named area {:?}; it needs a geometry",
        .id.as_str(), .inner.as_str()
    )]
    NestedNamed {
        /// The named area asked for.
        id: AreaId,
        /// The name its geometry refers to.
        inner: AreaId,
    },
    /// An alert area list with no entries.
    #[error("the area list is empty")]
    NoArea,
    /// An error in one entry of an area list.
    #[error("area {index}: {source}")]
    At {
        /// Index of the entry in the list.
        index: usize,
        /// What is wrong with it.
        source: Box<AreaError>,
    },
}

impl AreaError {
    /// Wraps this error with the index of the area list entry it came from.
    pub fn at_index(self, index: usize) -> AreaError {
        AreaError::At {
            index,
            source: Box::new(self),
        }
    }
}

/// Checks one `[lon, lat]`; `at` names it in the error.
pub fn validate_position(position: [f64; 2], at: impl FnOnce() -> String) -> Result<(), AreaError> {
    let [lon, lat] = position;
    if !lon.is_finite() || !lat.is_finite() {
        return Err(AreaError::NotFinite { at: at(), position });
    }
    if !(-180.0..=180.0).contains(&lon) || !(-90.0..=90.0).contains(&lat) {
        return Err(AreaError::OutOfRange { at: at(), position });
    }
    Ok(())
}

fn validate_rings(rings: &[Vec<[f64; 2]>], polygon: usize) -> Result<(), AreaError> {
    if rings.is_empty() {
        return Err(AreaError::Empty {
            at: format!("polygon {polygon}"),
        });
    }
    for (r, ring) in rings.iter().enumerate() {
        for (p, pos) in ring.iter().enumerate() {
            validate_position(*pos, || {
                format!("polygon {polygon}, ring {r}, position {p}")
            })?;
        }
        let at = || format!("polygon {polygon}, ring {r}");
        if ring.len() < 4 {
            return Err(AreaError::RingTooShort {
                at: at(),
                len: ring.len(),
            });
        }
        if let (Some(first), Some(last)) = (ring.first(), ring.last())
            && first != last
        {
            return Err(AreaError::RingNotClosed {
                at: at(),
                first: *first,
                last: *last,
            });
        }
    }
    Ok(())
}

impl AreaSpec {
    /// Checks the geometry: finite, in-range positions; closed rings of at least 4
    /// positions; non-empty polygons; a radius in (0, 500 km]. A `Named` spec is valid
    /// here; whether the name exists is checked by [`AreaSpec::to_region`].
    pub fn validate(&self) -> Result<(), AreaError> {
        match self {
            AreaSpec::Polygon { coordinates } => validate_rings(coordinates, 0),
            AreaSpec::MultiPolygon { coordinates } => {
                if coordinates.is_empty() {
                    return Err(AreaError::Empty {
                        at: "multipolygon".to_owned(),
                    });
                }
                for (i, rings) in coordinates.iter().enumerate() {
                    validate_rings(rings, i)?;
                }
                Ok(())
            }
            AreaSpec::Circle { center, radius_m } => {
                validate_position(*center, || "circle centre".to_owned())?;
                if !(radius_m.is_finite() && *radius_m > 0.0 && *radius_m <= MAX_RADIUS_M) {
                    return Err(AreaError::BadRadius {
                        radius_m: *radius_m,
                    });
                }
                Ok(())
            }
            AreaSpec::Named { .. } => Ok(()),
        }
    }

    /// Validates and resolves this spec to a [`Region`]. `named` looks up named areas;
    /// a named area's own geometry must not be `Named` again.
    pub fn to_region<'a>(
        &self,
        named: &impl Fn(&AreaId) -> Option<&'a NamedArea>,
    ) -> Result<Region, AreaError> {
        match self {
            AreaSpec::Named { id } => {
                let area = named(id).ok_or_else(|| AreaError::UnknownArea { id: id.clone() })?;
                if let AreaSpec::Named { id: inner } = &area.geometry {
                    return Err(AreaError::NestedNamed {
                        id: id.clone(),
                        inner: inner.clone(),
                    });
                }
                area.geometry.to_region_unnamed()
            }
            other => other.to_region_unnamed(),
        }
    }

    /// Validates and resolves a geometric spec; a `Named` spec is refused as unknown.
    pub fn to_region_unnamed(&self) -> Result<Region, AreaError> {
        self.validate()?;
        match self {
            AreaSpec::Polygon { coordinates } => Ok(Region::from_polygons(MultiPolygon::new(
                vec![to_polygon(coordinates)],
            ))),
            AreaSpec::MultiPolygon { coordinates } => Ok(Region::from_polygons(MultiPolygon::new(
                coordinates.iter().map(|p| to_polygon(p)).collect(),
            ))),
            AreaSpec::Circle { center, radius_m } => Ok(Region::circle(*center, *radius_m)),
            AreaSpec::Named { id } => Err(AreaError::UnknownArea { id: id.clone() }),
        }
    }
}

fn to_ring(ring: &[[f64; 2]]) -> LineString<f64> {
    LineString::new(ring.iter().map(|&[x, y]| Coord { x, y }).collect())
}

fn to_polygon(rings: &[Vec<[f64; 2]>]) -> Polygon<f64> {
    let mut it = rings.iter();
    let exterior = it
        .next()
        .map(|r| to_ring(r))
        .unwrap_or_else(|| LineString::new(Vec::new()));
    Polygon::new(exterior, it.map(|r| to_ring(r)).collect())
}

/// The shape of a resolved area.
#[derive(Clone, Debug, PartialEq)]
pub enum RegionShape {
    /// Polygons in planar lon/lat; a point on an edge or vertex is inside.
    Polygons(MultiPolygon<f64>),
    /// A circle on the sphere: a point is inside when its Haversine distance to the
    /// centre is at most the radius.
    Circle {
        /// Centre `[lon, lat]`.
        center: [f64; 2],
        /// Radius in metres.
        radius_m: f64,
    },
}

/// A validated area, ready for geofence queries: its shape and a bounding box that
/// contains every point inside it.
#[derive(Clone, Debug, PartialEq)]
pub struct Region {
    /// The shape.
    pub shape: RegionShape,
    /// A box containing the whole shape (for circles, with a safety margin).
    pub bbox: Rect<f64>,
}

/// Relative margin added to a circle's box so rounding can never cut off a point that
/// the exact Haversine test would accept.
const CIRCLE_BOX_MARGIN: f64 = 1e-6;

impl Region {
    /// A region from polygons that have already been validated.
    pub fn from_polygons(mp: MultiPolygon<f64>) -> Region {
        let bbox = mp
            .bounding_rect()
            .unwrap_or_else(|| Rect::new(Coord { x: 0.0, y: 0.0 }, Coord { x: 0.0, y: 0.0 }));
        Region {
            shape: RegionShape::Polygons(mp),
            bbox,
        }
    }

    /// A circle region from a validated centre and radius.
    pub fn circle(center: [f64; 2], radius_m: f64) -> Region {
        let [lon, lat] = center;
        let r = Haversine.radius();
        // Latitude span of the cap, in degrees, with a margin for rounding.
        let dlat = (radius_m / r).to_degrees() * (1.0 + CIRCLE_BOX_MARGIN) + 1e-9;
        let lat_lo = lat - dlat;
        let lat_hi = lat + dlat;
        let (min_lon, max_lon) = if lat_lo <= -89.0 || lat_hi >= 89.0 {
            // Near a pole every longitude may be inside.
            (-180.0, 180.0)
        } else {
            // The cap is widest in longitude at its most poleward latitude; asin gives
            // the exact half-width at the centre latitude, scaling by the poleward cosine
            // makes it safe.
            let worst = lat_lo.abs().max(lat_hi.abs()).to_radians().cos();
            let dlon = (radius_m / r).to_degrees() / worst * (1.0 + CIRCLE_BOX_MARGIN) + 1e-9;
            let lo = lon - dlon;
            let hi = lon + dlon;
            if lo < -180.0 || hi > 180.0 {
                // No antimeridian handling: widen to every longitude instead of missing
                // the far side.
                (-180.0, 180.0)
            } else {
                (lo, hi)
            }
        };
        let bbox = Rect::new(
            Coord {
                x: min_lon,
                y: lat_lo.max(-90.0),
            },
            Coord {
                x: max_lon,
                y: lat_hi.min(90.0),
            },
        );
        Region {
            shape: RegionShape::Circle { center, radius_m },
            bbox,
        }
    }

    /// Whether `[lon, lat]` is inside (boundary included). This is the exact, unindexed
    /// test; the geofence index gives the same answers, faster.
    pub fn contains(&self, position: [f64; 2]) -> bool {
        let c = Coord {
            x: position[0],
            y: position[1],
        };
        if !self.bbox.intersects(&c) {
            return false;
        }
        match &self.shape {
            RegionShape::Polygons(mp) => mp.intersects(&c),
            RegionShape::Circle { center, radius_m } => haversine_m(*center, position) <= *radius_m,
        }
    }
}

/// Great-circle distance in metres between two `[lon, lat]` positions.
pub fn haversine_m(a: [f64; 2], b: [f64; 2]) -> f64 {
    Haversine.distance(Point::new(a[0], a[1]), Point::new(b[0], b[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square() -> Vec<[f64; 2]> {
        vec![
            [116.0, 40.0],
            [116.1, 40.0],
            [116.1, 40.1],
            [116.0, 40.1],
            [116.0, 40.0],
        ]
    }

    fn err(spec: AreaSpec) -> String {
        spec.validate().unwrap_err().to_string()
    }

    #[test]
    fn validation_says_what_and_where() {
        let mut open = square();
        open[4] = [116.0, 40.05];
        assert_eq!(
            err(AreaSpec::Polygon {
                coordinates: vec![square(), open]
            }),
            "polygon 0, ring 1: not closed (first [116, 40] != last [116, 40.05])"
        );
        assert_eq!(
            err(AreaSpec::Polygon {
                coordinates: vec![vec![[116.0, 40.0], [116.1, 40.0], [116.0, 40.0]]]
            }),
            "polygon 0, ring 0: has 3 position(s), a closed ring needs at least 4"
        );
        let mut nan = square();
        nan[2] = [f64::NAN, 40.1];
        assert_eq!(
            err(AreaSpec::MultiPolygon {
                coordinates: vec![vec![square()], vec![nan]]
            }),
            "polygon 1, ring 0, position 2: position [NaN, 40.1] is not a finite number"
        );
        let mut far = square();
        far[1] = [116.1, 91.0];
        assert_eq!(
            err(AreaSpec::Polygon {
                coordinates: vec![far]
            }),
            "polygon 0, ring 0, position 1: position [116.1, 91] is out of range (lon -180..180, lat -90..90)"
        );
        assert_eq!(
            err(AreaSpec::Polygon {
                coordinates: vec![]
            }),
            "polygon 0: is empty"
        );
        assert_eq!(
            err(AreaSpec::MultiPolygon {
                coordinates: vec![]
            }),
            "multipolygon: is empty"
        );
        assert_eq!(
            err(AreaSpec::MultiPolygon {
                coordinates: vec![vec![square()], vec![]]
            }),
            "polygon 1: is empty"
        );
        for r in [0.0, -5.0, 500_001.0, f64::NAN, f64::INFINITY] {
            let e = AreaSpec::Circle {
                center: [116.0, 40.0],
                radius_m: r,
            }
            .validate()
            .unwrap_err();
            assert!(matches!(e, AreaError::BadRadius { .. }), "{r}");
        }
        assert_eq!(
            err(AreaSpec::Circle {
                center: [116.0, 40.0],
                radius_m: -5.0
            }),
            "circle radius -5 m must be greater than 0 and at most 500000 m"
        );
        assert_eq!(
            err(AreaSpec::Circle {
                center: [181.0, 40.0],
                radius_m: 10.0
            }),
            "circle centre: position [181, 40] is out of range (lon -180..180, lat -90..90)"
        );
        assert!(
            AreaSpec::Circle {
                center: [116.0, 40.0],
                radius_m: MAX_RADIUS_M
            }
            .validate()
            .is_ok()
        );
        assert!(
            AreaSpec::Polygon {
                coordinates: vec![square()]
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn named_areas_resolve_one_level_only() {
        let village = NamedArea {
            id: "v1".into(),
            kind: AreaKind::Village,
            name: "王家沟村".to_owned(),
            town: "镇".to_owned(),
            geometry: AreaSpec::Polygon {
                coordinates: vec![square()],
            },
        };
        let alias = NamedArea {
            id: "alias".into(),
            geometry: AreaSpec::Named { id: "v1".into() },
            ..village.clone()
        };
        let lookup = |id: &AreaId| [&village, &alias].into_iter().find(|a| &a.id == id);
        let region = AreaSpec::Named { id: "v1".into() }
            .to_region(&lookup)
            .unwrap();
        assert!(region.contains([116.05, 40.05]));
        assert!(region.contains([116.1, 40.05]), "edge counts as inside");
        assert!(!region.contains([116.2, 40.05]));
        assert_eq!(
            AreaSpec::Named { id: "alias".into() }
                .to_region(&lookup)
                .unwrap_err(),
            AreaError::NestedNamed {
                id: "alias".into(),
                inner: "v1".into()
            }
        );
        assert_eq!(
            AreaSpec::Named { id: "x".into() }
                .to_region(&lookup)
                .unwrap_err()
                .to_string(),
            "unknown named area \"x\""
        );
        assert_eq!(
            AreaError::BadRadius { radius_m: 0.0 }
                .at_index(2)
                .to_string(),
            "area 2: circle radius 0 m must be greater than 0 and at most 500000 m"
        );
    }

    #[test]
    fn circle_contains_uses_haversine_and_keeps_serde_shape() {
        let region = AreaSpec::Circle {
            center: [116.0, 40.0],
            radius_m: 1000.0,
        }
        .to_region_unnamed()
        .unwrap();
        // 1 km north is about 0.008993 degrees of latitude.
        assert!(region.contains([116.0, 40.0 + 0.00899]));
        assert!(!region.contains([116.0, 40.0 + 0.00900]));
        let spec: AreaSpec =
            serde_json::from_str(r#"{"type":"Circle","center":[116.0,40.0],"radius_m":1000.0}"#)
                .unwrap();
        assert_eq!(
            spec,
            AreaSpec::Circle {
                center: [116.0, 40.0],
                radius_m: 1000.0
            }
        );
        let j = serde_json::to_string(&AreaSpec::Named { id: "v1".into() }).unwrap();
        assert_eq!(j, r#"{"type":"Named","id":"v1"}"#);
    }
}
