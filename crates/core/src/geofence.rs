//! The geofence index: resolves an alert's area to the people it must reach.
//!
//! [`GeoIndex`] holds located points (people, devices, speakers), each known by a `u32`
//! index, in a packed static R-tree, and the district's named areas (villages, towns,
//! hazard points...) with an R-tree of their bounding boxes.
//!
//! The point tree is built once and only queried, so it is stored flat: the points
//! sorted along a Hilbert curve (neighbours on the curve are neighbours on the map) in
//! two plain arrays, and above them one box per run of [`NODE`] points, one box per run
//! of [`NODE`] boxes, and so on up to a single root. A node is a range of the arrays,
//! so taking a whole node is a slice copy. It costs about 22 bytes a point (exact `f64`
//! coordinates, a `u32` id, the boxes); an rstar tree of the same points took about 60.
//!
//! Geometry is planar in lon/lat for polygons (as GeoJSON is) and spherical for circles
//! (Haversine, as CAP `<circle>` is). A point on a polygon's edge or vertex is inside:
//! a warning must not miss the house on the line. There is no antimeridian handling.
//!
//! A polygon query does not test every point. The polygon is prepared once per query
//! into horizontal bands, each listing the edges that reach into it, so a point test
//! looks at a handful of edges. The point R-tree is then walked top-down: a node whose
//! box no edge touches is wholly inside (all its points are taken without tests) or
//! wholly outside (skipped); only nodes straddling the boundary are opened and their
//! points tested with robust orientation predicates.

use crate::area::{Region, RegionShape, haversine_m};
use geo::kernels::{Kernel, Orientation, RobustKernel};
use geo::{Destination, Haversine, Intersects, Relate};
use geo_types::{Coord, LineString, MultiPolygon, Point, Polygon};
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{AABB, RTree};

/// One named area's bounding box and index.
type AreaEntry = GeomWithData<Rectangle<[f64; 2]>, u32>;

/// Children per node of the point tree (points under a leaf node, nodes under the
/// others). Wide nodes mean few boxes to keep and classify.
const NODE: usize = 16;

/// A box `[min_lon, min_lat, max_lon, max_lat]`.
type BoxF = [f64; 4];

/// Located points in a packed static R-tree (see the module documentation).
struct PointTree {
    /// Positions in tree order.
    coords: Vec<[f64; 2]>,
    /// Ids, same order.
    ids: Vec<u32>,
    /// Node boxes by level: `levels[0][k]` bounds points `k*NODE..(k+1)*NODE`,
    /// `levels[l][k]` bounds boxes `k*NODE..(k+1)*NODE` of level `l - 1`; the last level
    /// has one box. Empty when there are no points.
    levels: Vec<Vec<BoxF>>,
}

/// The Hilbert-curve position of cell `(x, y)` of a 2^16 × 2^16 grid.
fn hilbert(x: u32, y: u32) -> u64 {
    const N: u32 = 1 << 16;
    let (mut x, mut y) = (x.min(N - 1), y.min(N - 1));
    let mut d: u64 = 0;
    let mut s = N / 2;
    while s > 0 {
        let rx = u32::from(x & s > 0);
        let ry = u32::from(y & s > 0);
        d += u64::from(s) * u64::from(s) * u64::from((3 * rx) ^ ry);
        if ry == 0 {
            if rx == 1 {
                x = N - 1 - x;
                y = N - 1 - y;
            }
            std::mem::swap(&mut x, &mut y);
        }
        s /= 2;
    }
    d
}

/// The box around some points (NaN-free: callers pass valid positions).
fn bounds(points: impl IntoIterator<Item = [f64; 2]>) -> BoxF {
    let mut b = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
    for [x, y] in points {
        b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
    }
    b
}

impl PointTree {
    /// Builds the tree over valid positions.
    fn new(entries: Vec<(u32, [f64; 2])>) -> PointTree {
        let all = bounds(entries.iter().map(|(_, p)| *p));
        let cell = |v: f64, lo: f64, hi: f64| -> u32 {
            let span = hi - lo;
            if span > 0.0 {
                // In 0..=65535 for v in lo..=hi; `as` saturates anything else.
                ((v - lo) / span * 65535.0) as u32
            } else {
                0
            }
        };
        let mut keyed: Vec<(u64, u32, [f64; 2])> = entries
            .into_iter()
            .map(|(id, p)| {
                let h = hilbert(cell(p[0], all[0], all[2]), cell(p[1], all[1], all[3]));
                (h, id, p)
            })
            .collect();
        // Ties by id, so the order never depends on the input order.
        keyed.sort_unstable_by_key(|&(h, id, _)| (h, id));
        let coords: Vec<[f64; 2]> = keyed.iter().map(|&(_, _, p)| p).collect();
        let ids: Vec<u32> = keyed.iter().map(|&(_, id, _)| id).collect();
        drop(keyed);

        let mut levels: Vec<Vec<BoxF>> = Vec::new();
        if !coords.is_empty() {
            let mut level: Vec<BoxF> = coords
                .chunks(NODE)
                .map(|c| bounds(c.iter().copied()))
                .collect();
            while level.len() > 1 {
                let up: Vec<BoxF> = level
                    .chunks(NODE)
                    .map(|c| {
                        c.iter()
                            .fold([f64::MAX, f64::MAX, f64::MIN, f64::MIN], |a, b| {
                                [
                                    a[0].min(b[0]),
                                    a[1].min(b[1]),
                                    a[2].max(b[2]),
                                    a[3].max(b[3]),
                                ]
                            })
                    })
                    .collect();
                levels.push(level);
                level = up;
            }
            levels.push(level);
        }
        PointTree {
            coords,
            ids,
            levels,
        }
    }

    /// The root node (level and index), if there are points.
    fn root(&self) -> Option<(usize, usize)> {
        self.levels.len().checked_sub(1).map(|top| (top, 0))
    }

    /// The node's box.
    fn node_box(&self, level: usize, k: usize) -> Option<BoxF> {
        self.levels.get(level).and_then(|l| l.get(k)).copied()
    }

    /// The points under a node: a range of `coords` and `ids`.
    fn node_points(&self, level: usize, k: usize) -> std::ops::Range<usize> {
        let per = u32::try_from(level + 1)
            .ok()
            .and_then(|e| NODE.checked_pow(e))
            .unwrap_or(usize::MAX);
        let start = k.saturating_mul(per).min(self.ids.len());
        let end = start.saturating_add(per).min(self.ids.len());
        start..end
    }

    /// The children of a node above the leaves: indices at `level - 1`.
    fn children(&self, level: usize, k: usize) -> std::ops::Range<usize> {
        let below = level
            .checked_sub(1)
            .and_then(|l| self.levels.get(l))
            .map_or(0, Vec::len);
        let start = k.saturating_mul(NODE).min(below);
        start..start.saturating_add(NODE).min(below)
    }

    /// Every id under a node.
    fn take_all(&self, level: usize, k: usize, out: &mut Vec<u32>) {
        if let Some(ids) = self.ids.get(self.node_points(level, k)) {
            out.extend_from_slice(ids);
        }
    }

    /// The ids under a node that lie inside the polygons.
    fn collect_polygons(
        &self,
        level: usize,
        k: usize,
        prepared: &PreparedPolygons,
        out: &mut Vec<u32>,
    ) {
        let Some(b) = self.node_box(level, k) else {
            return;
        };
        match prepared.classify([b[0], b[1]], [b[2], b[3]]) {
            Class::Outside => {}
            Class::Inside => self.take_all(level, k, out),
            Class::Mixed if level == 0 => {
                let range = self.node_points(0, k);
                let coords = self.coords.get(range.clone()).unwrap_or(&[]);
                let ids = self.ids.get(range).unwrap_or(&[]);
                for (&[x, y], &id) in coords.iter().zip(ids) {
                    if prepared.contains(Coord { x, y }) {
                        out.push(id);
                    }
                }
            }
            Class::Mixed => {
                for child in self.children(level, k) {
                    self.collect_polygons(level - 1, child, prepared, out);
                }
            }
        }
    }

    /// The ids under a node whose position lies in `env` and passes `keep`.
    fn collect_in_box(
        &self,
        level: usize,
        k: usize,
        env: BoxF,
        keep: &impl Fn([f64; 2]) -> bool,
        out: &mut Vec<u32>,
    ) {
        let Some(b) = self.node_box(level, k) else {
            return;
        };
        if b[0] > env[2] || b[2] < env[0] || b[1] > env[3] || b[3] < env[1] {
            return;
        }
        if level == 0 {
            let range = self.node_points(0, k);
            let coords = self.coords.get(range.clone()).unwrap_or(&[]);
            let ids = self.ids.get(range).unwrap_or(&[]);
            for (&p, &id) in coords.iter().zip(ids) {
                let [x, y] = p;
                if x >= env[0] && x <= env[2] && y >= env[1] && y <= env[3] && keep(p) {
                    out.push(id);
                }
            }
        } else {
            for child in self.children(level, k) {
                self.collect_in_box(level - 1, child, env, keep, out);
            }
        }
    }
}

/// Number of sides of the polygon that stands in for a circle when a circle is tested
/// against a named area's polygons (not for point tests, which are exact).
const CIRCLE_SIDES: usize = 64;

/// Located points and named areas, indexed for "who is inside this area" queries.
pub struct GeoIndex {
    points: PointTree,
    point_count: usize,
    max_point_id: u32,
    skipped_points: usize,
    /// Named areas sorted by index.
    areas: Vec<(u32, Region)>,
    area_tree: RTree<AreaEntry>,
}

impl std::fmt::Debug for GeoIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIndex")
            .field("points", &self.point_count)
            .field("skipped_points", &self.skipped_points)
            .field("areas", &self.areas.len())
            .finish()
    }
}

impl GeoIndex {
    /// Builds the index. Points whose position is not finite or out of lon/lat range
    /// are left out (counted in [`GeoIndex::skipped_points`]); callers validate first.
    /// If two areas share an index, the first one is kept.
    pub fn new(
        points: impl IntoIterator<Item = (u32, [f64; 2])>,
        areas: impl IntoIterator<Item = (u32, Region)>,
    ) -> GeoIndex {
        let mut skipped_points = 0;
        let mut max_point_id = 0;
        let entries: Vec<(u32, [f64; 2])> = points
            .into_iter()
            .filter(|(_, p)| {
                let ok = crate::area::validate_position(*p, String::new).is_ok();
                if !ok {
                    skipped_points += 1;
                }
                ok
            })
            .inspect(|(id, _)| max_point_id = max_point_id.max(*id))
            .collect();
        let point_count = entries.len();
        let points = PointTree::new(entries);

        let mut areas: Vec<(u32, Region)> = areas.into_iter().collect();
        areas.sort_by_key(|(id, _)| *id);
        areas.dedup_by_key(|(id, _)| *id);
        let boxes = areas
            .iter()
            .map(|(id, r)| {
                let (lo, hi) = (r.bbox.min(), r.bbox.max());
                GeomWithData::new(Rectangle::from_corners([lo.x, lo.y], [hi.x, hi.y]), *id)
            })
            .collect();
        GeoIndex {
            points,
            point_count,
            max_point_id,
            skipped_points,
            areas,
            area_tree: RTree::bulk_load(boxes),
        }
    }

    /// Number of points indexed.
    pub fn point_count(&self) -> usize {
        self.point_count
    }

    /// Number of points left out because their position was invalid.
    pub fn skipped_points(&self) -> usize {
        self.skipped_points
    }

    /// Number of named areas indexed.
    pub fn area_count(&self) -> usize {
        self.areas.len()
    }

    /// The region of named area `id`.
    pub fn area(&self, id: u32) -> Option<&Region> {
        self.areas
            .binary_search_by_key(&id, |(i, _)| *i)
            .ok()
            .and_then(|at| self.areas.get(at))
            .map(|(_, r)| r)
    }

    /// The points inside `region` (boundary included), each once, sorted.
    pub fn points_in(&self, region: &Region) -> Vec<u32> {
        let mut out = Vec::new();
        match &region.shape {
            RegionShape::Polygons(mp) => {
                if let Some((level, k)) = self.points.root() {
                    let prepared = PreparedPolygons::new(mp);
                    self.points.collect_polygons(level, k, &prepared, &mut out);
                }
            }
            RegionShape::Circle { center, radius_m } => {
                if let Some((level, k)) = self.points.root() {
                    let (lo, hi) = (region.bbox.min(), region.bbox.max());
                    let env = [lo.x, lo.y, hi.x, hi.y];
                    let keep = |p: [f64; 2]| haversine_m(*center, p) <= *radius_m;
                    self.points.collect_in_box(level, k, env, &keep, &mut out);
                }
            }
        }
        sorted_unique(out, self.max_point_id)
    }

    /// The named areas whose interior shares some part with `region`'s interior,
    /// sorted. An area that only touches the region along its border is not included:
    /// villages tile the land, and a warning for one village must not reach the
    /// neighbours that merely share its boundary. Circles are compared with polygons
    /// through a circumscribed 64-gon (overshoot at most 0.13% of the radius).
    pub fn areas_intersecting(&self, region: &Region) -> Vec<u32> {
        let (lo, hi) = (region.bbox.min(), region.bbox.max());
        let env = AABB::from_corners([lo.x, lo.y], [hi.x, hi.y]);
        let query = Overlapper::new(region);
        let mut out: Vec<u32> = self
            .area_tree
            .locate_in_envelope_intersecting(&env)
            .filter(|entry| {
                self.area(entry.data)
                    .is_some_and(|area| query.overlaps(area))
            })
            .map(|entry| entry.data)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Sorts and deduplicates point indices; large dense results go through a bitmap,
/// which is linear rather than n log n.
fn sorted_unique(mut ids: Vec<u32>, max_id: u32) -> Vec<u32> {
    let span = max_id as usize + 1;
    if ids.len() > 4096 && span <= ids.len().saturating_mul(64) {
        let mut bits = vec![0u64; span.div_ceil(64)];
        for &id in &ids {
            if let Some(word) = bits.get_mut(id as usize / 64) {
                *word |= 1 << (id % 64);
            }
        }
        ids.clear();
        for (w, &word) in bits.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                let bit = word.trailing_zeros();
                ids.push(w as u32 * 64 + bit);
                word &= word - 1;
            }
        }
        ids
    } else {
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// Where a box lies relative to the query polygons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Every point of the box is inside.
    Inside,
    /// No point of the box is inside.
    Outside,
    /// Some boundary may pass through the box.
    Mixed,
}

/// Where a point lies relative to a polygon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    /// In the interior.
    Inside,
    /// On an edge or vertex.
    Boundary,
    /// In the exterior (including inside a hole).
    Outside,
}

/// One polygon edge, with its box cached for cheap rejection.
#[derive(Clone, Copy, Debug)]
struct Edge {
    a: Coord<f64>,
    b: Coord<f64>,
    xmin: f64,
    xmax: f64,
    ymin: f64,
    ymax: f64,
    /// 0 for the exterior ring, 1.. for holes.
    ring: u32,
}

/// A polygon split into horizontal bands, each listing (in ring order) the edges whose
/// y-range reaches into it.
struct PreparedPolygon {
    min: Coord<f64>,
    max: Coord<f64>,
    scale: f64,
    bands: usize,
    /// `offsets[k]..offsets[k + 1]` are band `k`'s edges in `edges`.
    offsets: Vec<usize>,
    edges: Vec<Edge>,
}

impl PreparedPolygon {
    fn new(polygon: &Polygon<f64>) -> PreparedPolygon {
        let mut all = Vec::new();
        let rings = std::iter::once(polygon.exterior()).chain(polygon.interiors());
        for (ring, ls) in rings.enumerate() {
            let ring = u32::try_from(ring).unwrap_or(u32::MAX);
            for line in ls.lines() {
                let (a, b) = (line.start, line.end);
                all.push(Edge {
                    a,
                    b,
                    xmin: a.x.min(b.x),
                    xmax: a.x.max(b.x),
                    ymin: a.y.min(b.y),
                    ymax: a.y.max(b.y),
                    ring,
                });
            }
        }
        let (mut min, mut max) = (
            Coord {
                x: f64::MAX,
                y: f64::MAX,
            },
            Coord {
                x: f64::MIN,
                y: f64::MIN,
            },
        );
        for e in &all {
            min.x = min.x.min(e.xmin);
            min.y = min.y.min(e.ymin);
            max.x = max.x.max(e.xmax);
            max.y = max.y.max(e.ymax);
        }
        // About one band per edge keeps each band to a few edges; a polygon with many
        // tall edges gets fewer bands so the band lists stay near linear in size.
        let mut bands = all.len().clamp(1, 4096);
        let height = max.y - min.y;
        loop {
            let scale = if height > 0.0 {
                bands as f64 / height
            } else {
                0.0
            };
            let mut prepared = PreparedPolygon {
                min,
                max,
                scale,
                bands,
                offsets: Vec::new(),
                edges: Vec::new(),
            };
            let total: usize = all
                .iter()
                .map(|e| prepared.band(e.ymax) - prepared.band(e.ymin) + 1)
                .sum();
            if total > 16 * all.len() + bands && bands > 1 {
                bands /= 2;
                continue;
            }
            let mut counts = vec![0usize; bands + 1];
            for e in &all {
                for k in prepared.band(e.ymin)..=prepared.band(e.ymax) {
                    if let Some(c) = counts.get_mut(k + 1) {
                        *c += 1;
                    }
                }
            }
            for k in 1..counts.len() {
                counts[k] += counts[k - 1];
            }
            let mut fill = counts.clone();
            let mut edges = vec![all.first().copied().unwrap_or(EMPTY_EDGE); total];
            for e in &all {
                for k in prepared.band(e.ymin)..=prepared.band(e.ymax) {
                    if let Some(slot) = fill.get_mut(k)
                        && let Some(dst) = edges.get_mut(*slot)
                    {
                        *dst = *e;
                        *slot += 1;
                    }
                }
            }
            prepared.offsets = counts;
            prepared.edges = edges;
            return prepared;
        }
    }

    /// The band holding latitude `y`. Monotone in `y`, which is what makes the band
    /// lists complete: an edge spanning `[ymin, ymax]` is listed in every band between
    /// `band(ymin)` and `band(ymax)`, so in the band of every `y` it spans.
    fn band(&self, y: f64) -> usize {
        let v = ((y - self.min.y) * self.scale).floor();
        if v >= (self.bands - 1) as f64 {
            self.bands - 1
        } else if v > 0.0 {
            v as usize
        } else {
            0
        }
    }

    fn band_edges(&self, band: usize) -> &[Edge] {
        let start = self.offsets.get(band).copied().unwrap_or(0);
        let end = self.offsets.get(band + 1).copied().unwrap_or(start);
        self.edges.get(start..end).unwrap_or(&[])
    }

    /// Winding number per ring with exact orientation tests; inside means inside the
    /// exterior ring and not inside any hole, whatever the rings' orientation.
    fn locate(&self, c: Coord<f64>) -> Position {
        if c.x < self.min.x || c.x > self.max.x || c.y < self.min.y || c.y > self.max.y {
            return Position::Outside;
        }
        let mut ring = u32::MAX;
        let mut winding = 0i32;
        let mut in_exterior = false;
        let mut in_hole = false;
        let mut close = |ring: u32, winding: i32| {
            if winding != 0 {
                if ring == 0 {
                    in_exterior = true;
                } else if ring != u32::MAX {
                    in_hole = true;
                }
            }
        };
        for e in self.band_edges(self.band(c.y)) {
            if e.ring != ring {
                close(ring, winding);
                ring = e.ring;
                winding = 0;
            }
            if c.y < e.ymin || c.y > e.ymax || c.x > e.xmax {
                continue;
            }
            if c.x < e.xmin {
                // Wholly left of the edge: not on it, and the rightward ray crosses it
                // when the half-open y rule says so. No orientation test needed.
                if e.a.y <= c.y {
                    if e.b.y > c.y {
                        winding += 1;
                    }
                } else if e.b.y <= c.y {
                    winding -= 1;
                }
                continue;
            }
            let o = RobustKernel::orient2d(e.a, e.b, c);
            if o == Orientation::Collinear {
                // On the edge's line and inside its box: on the edge.
                return Position::Boundary;
            }
            if e.a.y <= c.y {
                if e.b.y > c.y && o == Orientation::CounterClockwise {
                    winding += 1;
                }
            } else if e.b.y <= c.y && o == Orientation::Clockwise {
                winding -= 1;
            }
        }
        close(ring, winding);
        if in_exterior && !in_hole {
            Position::Inside
        } else {
            Position::Outside
        }
    }

    /// Whether any edge may touch the closed box `lo..hi`. May say yes when the answer
    /// is no (the caller then looks closer); never says no when it is yes.
    fn edge_may_touch(&self, lo: [f64; 2], hi: [f64; 2]) -> bool {
        let (b0, b1) = (self.band(lo[1]), self.band(hi[1]));
        let (w, h) = (hi[0] - lo[0], hi[1] - lo[1]);
        for band in b0..=b1 {
            for e in self.band_edges(band) {
                if e.xmax < lo[0] || e.xmin > hi[0] || e.ymax < lo[1] || e.ymin > hi[1] {
                    continue;
                }
                let (dx, dy) = (e.b.x - e.a.x, e.b.y - e.a.y);
                let side = |x: f64, y: f64| dx * (y - e.a.y) - dy * (x - e.a.x);
                let s = [
                    side(lo[0], lo[1]),
                    side(hi[0], lo[1]),
                    side(lo[0], hi[1]),
                    side(hi[0], hi[1]),
                ];
                // Generous rounding allowance: a false "touches" only costs a closer look.
                let tol = (dx.abs() + dy.abs()) * ((w + h + dx.abs() + dy.abs()) * 1e-9 + 1e-12);
                let all_above = s.iter().all(|v| *v > tol);
                let all_below = s.iter().all(|v| *v < -tol);
                if !(all_above || all_below) {
                    return true;
                }
            }
        }
        false
    }

    fn classify(&self, lo: [f64; 2], hi: [f64; 2]) -> Class {
        if hi[0] < self.min.x || lo[0] > self.max.x || hi[1] < self.min.y || lo[1] > self.max.y {
            return Class::Outside;
        }
        if self.edge_may_touch(lo, hi) {
            return Class::Mixed;
        }
        // No edge touches the box, so the whole box is on one side; any corner tells.
        match self.locate(Coord { x: lo[0], y: lo[1] }) {
            Position::Inside | Position::Boundary => Class::Inside,
            Position::Outside => Class::Outside,
        }
    }
}

const EMPTY_EDGE: Edge = Edge {
    a: Coord { x: 0.0, y: 0.0 },
    b: Coord { x: 0.0, y: 0.0 },
    xmin: 0.0,
    xmax: 0.0,
    ymin: 0.0,
    ymax: 0.0,
    ring: 0,
};

/// The union of a multipolygon's parts, each prepared.
struct PreparedPolygons {
    parts: Vec<PreparedPolygon>,
}

impl PreparedPolygons {
    fn new(mp: &MultiPolygon<f64>) -> PreparedPolygons {
        PreparedPolygons {
            parts: mp.0.iter().map(PreparedPolygon::new).collect(),
        }
    }

    fn locate(&self, c: Coord<f64>) -> Position {
        let mut best = Position::Outside;
        for part in &self.parts {
            match part.locate(c) {
                Position::Inside => return Position::Inside,
                Position::Boundary => best = Position::Boundary,
                Position::Outside => {}
            }
        }
        best
    }

    fn contains(&self, c: Coord<f64>) -> bool {
        self.parts.iter().any(|p| p.locate(c) != Position::Outside)
    }

    fn classify(&self, lo: [f64; 2], hi: [f64; 2]) -> Class {
        let mut all_outside = true;
        for part in &self.parts {
            match part.classify(lo, hi) {
                Class::Inside => return Class::Inside,
                Class::Mixed => all_outside = false,
                Class::Outside => {}
            }
        }
        if all_outside {
            Class::Outside
        } else {
            Class::Mixed
        }
    }
}

/// A query region prepared for "do interiors overlap" tests against named areas.
enum Overlapper<'a> {
    /// Polygons, with their prepared form for fast vertex tests.
    Polygons(&'a MultiPolygon<f64>, PreparedPolygons),
    /// A circle, and the polygon standing in for it against polygons.
    Circle {
        center: [f64; 2],
        radius_m: f64,
        polygon: MultiPolygon<f64>,
        prepared: PreparedPolygons,
    },
}

impl<'a> Overlapper<'a> {
    fn new(region: &'a Region) -> Overlapper<'a> {
        match &region.shape {
            RegionShape::Polygons(mp) => Overlapper::Polygons(mp, PreparedPolygons::new(mp)),
            RegionShape::Circle { center, radius_m } => {
                let polygon = circle_polygon(*center, *radius_m);
                let prepared = PreparedPolygons::new(&polygon);
                Overlapper::Circle {
                    center: *center,
                    radius_m: *radius_m,
                    polygon,
                    prepared,
                }
            }
        }
    }

    fn overlaps(&self, area: &Region) -> bool {
        match (self, &area.shape) {
            (
                Overlapper::Circle {
                    center, radius_m, ..
                },
                RegionShape::Circle {
                    center: c2,
                    radius_m: r2,
                },
            ) => haversine_m(*center, *c2) < radius_m + r2,
            (
                Overlapper::Circle {
                    polygon, prepared, ..
                },
                RegionShape::Polygons(b),
            ) => interiors_overlap(polygon, prepared, b),
            (Overlapper::Polygons(a, prepared), RegionShape::Polygons(b)) => {
                interiors_overlap(a, prepared, b)
            }
            (Overlapper::Polygons(a, prepared), RegionShape::Circle { center, radius_m }) => {
                interiors_overlap(a, prepared, &circle_polygon(*center, *radius_m))
            }
        }
    }
}

/// Whether the interiors of `a` and `b` share a point. Most answers come from cheap
/// tests (a vertex of `b` strictly inside `a`, or no contact at all); only polygons in
/// contact without such a vertex go to the full DE-9IM relate.
fn interiors_overlap(
    a: &MultiPolygon<f64>,
    prepared: &PreparedPolygons,
    b: &MultiPolygon<f64>,
) -> bool {
    let b_vertex_inside = b.0.iter().any(|p| {
        p.exterior()
            .coords()
            .any(|c| prepared.locate(*c) == Position::Inside)
    });
    if b_vertex_inside {
        return true;
    }
    if !a.intersects(b) {
        return false;
    }
    let im = a.relate(b);
    im.is_intersects() && !im.is_touches()
}

/// A polygon circumscribing the Haversine circle, so it covers every point of it.
fn circle_polygon(center: [f64; 2], radius_m: f64) -> MultiPolygon<f64> {
    let n = CIRCLE_SIDES;
    let outer = radius_m / (std::f64::consts::PI / n as f64).cos();
    let origin = Point::new(center[0], center[1]);
    let mut ring: Vec<Coord<f64>> = (0..n)
        .map(|k| {
            let bearing = 360.0 * k as f64 / n as f64;
            Haversine.destination(origin, bearing, outer).0
        })
        .collect();
    if let Some(first) = ring.first().copied() {
        ring.push(first);
    }
    MultiPolygon::new(vec![Polygon::new(LineString::new(ring), Vec::new())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::area::AreaSpec;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Grid step for test coordinates: a power of two, so edge midpoints are exact
    /// floats and lie exactly on their edge.
    const STEP: f64 = 1.0 / 1024.0;

    fn snap(v: f64) -> f64 {
        (v / STEP).round() * STEP
    }

    /// A star-shaped ring around `c` with `n` vertices, radii in `r0..r1`, snapped to the
    /// grid, optionally clockwise.
    fn star(
        rng: &mut ChaCha8Rng,
        c: [f64; 2],
        n: usize,
        r0: f64,
        r1: f64,
        cw: bool,
    ) -> Vec<[f64; 2]> {
        let mut ring: Vec<[f64; 2]> = (0..n)
            .map(|k| {
                let t = std::f64::consts::TAU * k as f64 / n as f64;
                let r = rng.random_range(r0..r1);
                [snap(c[0] + r * t.cos()), snap(c[1] + r * t.sin())]
            })
            .collect();
        ring.dedup();
        if cw {
            ring.reverse();
        }
        let first = ring[0];
        ring.push(first);
        ring
    }

    fn random_points(
        rng: &mut ChaCha8Rng,
        n: usize,
        lo: [f64; 2],
        hi: [f64; 2],
    ) -> Vec<(u32, [f64; 2])> {
        (0..n)
            .map(|i| {
                (
                    i as u32,
                    [
                        rng.random_range(lo[0]..hi[0]),
                        rng.random_range(lo[1]..hi[1]),
                    ],
                )
            })
            .collect()
    }

    /// Vertices and edge midpoints of every ring: all on the boundary.
    fn boundary_points(spec: &AreaSpec) -> Vec<[f64; 2]> {
        let polys: Vec<&Vec<Vec<[f64; 2]>>> = match spec {
            AreaSpec::Polygon { coordinates } => vec![coordinates],
            AreaSpec::MultiPolygon { coordinates } => coordinates.iter().collect(),
            _ => vec![],
        };
        let mut out = Vec::new();
        for rings in polys {
            for ring in rings {
                for w in ring.windows(2) {
                    out.push(w[0]);
                    out.push([(w[0][0] + w[1][0]) / 2.0, (w[0][1] + w[1][1]) / 2.0]);
                }
            }
        }
        out
    }

    fn brute_force(points: &[(u32, [f64; 2])], region: &Region) -> Vec<u32> {
        points
            .iter()
            .filter(|(_, p)| region.contains(*p))
            .map(|(i, _)| *i)
            .collect()
    }

    fn check(spec: &AreaSpec, mut points: Vec<(u32, [f64; 2])>) {
        let region = spec.to_region_unnamed().unwrap();
        let boundary = boundary_points(spec);
        let base = points.len() as u32;
        for (k, p) in boundary.iter().enumerate() {
            points.push((base + k as u32, *p));
        }
        let index = GeoIndex::new(points.clone(), Vec::new());
        let got = index.points_in(&region);
        let want = brute_force(&points, &region);
        assert_eq!(got, want);
        // Every vertex and edge midpoint counts as inside.
        for k in 0..boundary.len() as u32 {
            assert!(
                got.binary_search(&(base + k)).is_ok(),
                "boundary point {} not inside",
                k
            );
        }
    }

    #[test]
    fn polygon_queries_match_brute_force() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let points = random_points(&mut rng, 20_000, [116.0, 40.3], [117.0, 40.9]);
        for round in 0..6 {
            let outer = star(
                &mut rng,
                [116.5, 40.6],
                40 + round * 30,
                0.1,
                0.28,
                round % 2 == 1,
            );
            let spec = AreaSpec::Polygon {
                coordinates: vec![outer],
            };
            check(&spec, points.clone());
        }
    }

    #[test]
    fn holes_in_either_orientation_are_excluded() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let points = random_points(&mut rng, 20_000, [116.0, 40.3], [117.0, 40.9]);
        for cw_hole in [false, true] {
            let outer = star(&mut rng, [116.5, 40.6], 60, 0.25, 0.28, false);
            let hole1 = star(&mut rng, [116.45, 40.6], 20, 0.05, 0.08, cw_hole);
            let hole2 = star(&mut rng, [116.62, 40.62], 12, 0.03, 0.05, !cw_hole);
            let spec = AreaSpec::Polygon {
                coordinates: vec![outer, hole1, hole2],
            };
            check(&spec, points.clone());
            // The hole's centre is not inside.
            let region = spec.to_region_unnamed().unwrap();
            let index = GeoIndex::new(vec![(0, [116.45, 40.6])], Vec::new());
            assert!(index.points_in(&region).is_empty());
        }
    }

    #[test]
    fn multipolygons_match_brute_force() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let points = random_points(&mut rng, 20_000, [116.0, 40.3], [117.0, 40.9]);
        let a = star(&mut rng, [116.25, 40.5], 30, 0.08, 0.15, false);
        let a_hole = star(&mut rng, [116.25, 40.5], 10, 0.02, 0.04, true);
        let b = star(&mut rng, [116.7, 40.7], 50, 0.1, 0.18, true);
        // Overlapping parts count as a union.
        let c = star(&mut rng, [116.8, 40.75], 16, 0.05, 0.1, false);
        let spec = AreaSpec::MultiPolygon {
            coordinates: vec![vec![a, a_hole], vec![b], vec![c]],
        };
        check(&spec, points);
    }

    #[test]
    fn rectangle_boundary_and_grid_points_count() {
        // Axis-aligned edges exercise horizontal edges and box classification on lines.
        let ring = vec![
            [116.0, 40.0],
            [117.0, 40.0],
            [117.0, 41.0],
            [116.0, 41.0],
            [116.0, 40.0],
        ];
        let spec = AreaSpec::Polygon {
            coordinates: vec![ring],
        };
        let mut points = Vec::new();
        let mut id = 0;
        for i in 0..=40 {
            for j in 0..=40 {
                points.push((id, [115.75 + i as f64 * 0.0375, 39.75 + j as f64 * 0.0375]));
                id += 1;
            }
        }
        check(&spec, points);
    }

    #[test]
    fn circles_match_brute_force_haversine() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let points = random_points(&mut rng, 20_000, [115.5, 40.0], [117.5, 41.2]);
        for radius_m in [50.0, 2_000.0, 15_000.0, 60_000.0] {
            let center = [116.4, 40.6];
            let region = AreaSpec::Circle { center, radius_m }
                .to_region_unnamed()
                .unwrap();
            let index = GeoIndex::new(points.clone(), Vec::new());
            let got = index.points_in(&region);
            let want: Vec<u32> = points
                .iter()
                .filter(|(_, p)| haversine_m(center, *p) <= radius_m)
                .map(|(i, _)| *i)
                .collect();
            assert_eq!(got, want, "radius {radius_m}");
        }
    }

    #[test]
    fn circle_box_never_cuts_off_an_inside_point() {
        // Points placed on the circle in every direction, at many latitudes, must pass
        // the box prefilter.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..300 {
            let center = [
                rng.random_range(-170.0..170.0),
                rng.random_range(-85.0..85.0),
            ];
            let radius_m = rng.random_range(1.0..500_000.0);
            let region = Region::circle(center, radius_m);
            for k in 0..36 {
                let p = Haversine.destination(
                    Point::new(center[0], center[1]),
                    k as f64 * 10.0,
                    radius_m * 0.999_999,
                );
                let pos = [p.x(), p.y()];
                if (-180.0..=180.0).contains(&pos[0]) {
                    assert!(
                        region.contains(pos),
                        "{center:?} r={radius_m} bearing {}",
                        k * 10
                    );
                }
            }
        }
    }

    #[test]
    fn duplicate_ids_and_bad_points() {
        let pts = vec![
            (7, [116.5, 40.5]),
            (7, [116.51, 40.51]),
            (3, [f64::NAN, 40.0]),
            (4, [200.0, 40.0]),
        ];
        let index = GeoIndex::new(pts, Vec::new());
        assert_eq!(index.point_count(), 2);
        assert_eq!(index.skipped_points(), 2);
        let region = Region::circle([116.5, 40.5], 10_000.0);
        assert_eq!(index.points_in(&region), vec![7]);
    }

    #[test]
    fn large_dense_results_are_sorted_and_unique() {
        let ids: Vec<u32> = (0..10_000u32).rev().chain(0..5000).collect();
        let out = sorted_unique(ids, 9_999);
        assert_eq!(out, (0..10_000).collect::<Vec<_>>());
    }

    #[test]
    fn packed_tree_answers_like_brute_force_at_every_node_boundary() {
        // Sizes around a full leaf (16), a full second level (256) and a full third
        // level (4096): the last node of each level is partial.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let polygon = square(116.2, 40.4, 0.35);
        let circle = AreaSpec::Circle {
            center: [116.5, 40.6],
            radius_m: 15_000.0,
        };
        for n in [0usize, 1, 15, 16, 17, 255, 256, 257, 4_095, 4_096, 4_097] {
            let points = random_points(&mut rng, n, [116.0, 40.3], [117.0, 40.9]);
            let index = GeoIndex::new(points.clone(), Vec::new());
            assert_eq!(index.point_count(), n);
            for spec in [&polygon, &circle] {
                let region = spec.to_region_unnamed().unwrap();
                assert_eq!(
                    index.points_in(&region),
                    brute_force(&points, &region),
                    "{n} points, {spec:?}"
                );
            }
            // A region holding everything takes whole nodes without testing points.
            let all = square(115.0, 39.0, 3.0).to_region_unnamed().unwrap();
            let ids: Vec<u32> = (0..n as u32).collect();
            assert_eq!(index.points_in(&all), ids, "{n} points");
        }
        // Every point at one spot: the Hilbert grid has no extent to divide.
        let same: Vec<(u32, [f64; 2])> = (0..40).map(|i| (i, [116.5, 40.5])).collect();
        let index = GeoIndex::new(same, Vec::new());
        let hit = Region::circle([116.5, 40.5], 1.0);
        assert_eq!(index.points_in(&hit), (0..40).collect::<Vec<_>>());
        let miss = Region::circle([116.6, 40.5], 1.0);
        assert!(index.points_in(&miss).is_empty());
    }

    fn square(x0: f64, y0: f64, s: f64) -> AreaSpec {
        AreaSpec::Polygon {
            coordinates: vec![vec![
                [x0, y0],
                [x0 + s, y0],
                [x0 + s, y0 + s],
                [x0, y0 + s],
                [x0, y0],
            ]],
        }
    }

    #[test]
    fn areas_touching_only_at_the_border_are_not_intersecting() {
        // A 3x3 grid of village squares; the side is a power of two so shared borders
        // are exactly equal floats.
        let side = 1.0 / 128.0;
        let at = |i: u32, j: u32| (116.0 + i as f64 * side, 40.0 + j as f64 * side);
        let mut areas = Vec::new();
        for i in 0..3 {
            for j in 0..3 {
                let (x, y) = at(i, j);
                areas.push((i * 3 + j, square(x, y, side).to_region_unnamed().unwrap()));
            }
        }
        let index = GeoIndex::new(Vec::new(), areas);
        // The centre village itself: only itself, not the 8 that share its border.
        let (cx, cy) = at(1, 1);
        let centre = square(cx, cy, side).to_region_unnamed().unwrap();
        assert_eq!(index.areas_intersecting(&centre), vec![4]);
        // A box over the centre village and into its right neighbour.
        let wide = AreaSpec::Polygon {
            coordinates: vec![vec![
                [cx + side * 0.2, cy + side * 0.2],
                [cx + side * 1.5, cy + side * 0.2],
                [cx + side * 1.5, cy + side * 0.8],
                [cx + side * 0.2, cy + side * 0.8],
                [cx + side * 0.2, cy + side * 0.2],
            ]],
        };
        assert_eq!(
            index.areas_intersecting(&wide.to_region_unnamed().unwrap()),
            vec![4, 7]
        );
        // A tiny polygon wholly inside one village (no vertex of the village inside it).
        let tiny = square(cx + side * 0.5, cy + side * 0.5, side * 0.01)
            .to_region_unnamed()
            .unwrap();
        assert_eq!(index.areas_intersecting(&tiny), vec![4]);
        // A circle at the shared corner of four villages overlaps all four.
        let (kx, ky) = at(2, 2);
        let circle = Region::circle([kx, ky], 100.0);
        assert_eq!(index.areas_intersecting(&circle), vec![4, 5, 7, 8]);
        // Far away: nothing.
        assert!(
            index
                .areas_intersecting(&Region::circle([117.0, 41.0], 100.0))
                .is_empty()
        );
    }

    #[test]
    fn circle_areas_intersect_circles_and_polygons() {
        let areas = vec![
            (10, Region::circle([116.5, 40.5], 500.0)),
            (11, square(116.6, 40.6, 0.01).to_region_unnamed().unwrap()),
        ];
        let index = GeoIndex::new(Vec::new(), areas);
        // 800 m away: circles of 500 m and 400 m overlap, 200 m do not.
        let east = Haversine.destination(Point::new(116.5, 40.5), 90.0, 800.0);
        assert_eq!(
            index.areas_intersecting(&Region::circle([east.x(), east.y()], 400.0)),
            vec![10]
        );
        assert!(
            index
                .areas_intersecting(&Region::circle([east.x(), east.y()], 200.0))
                .is_empty()
        );
        // A polygon over the hazard point's centre.
        assert_eq!(
            index.areas_intersecting(&square(116.499, 40.499, 0.002).to_region_unnamed().unwrap()),
            vec![10]
        );
        // A circle inside the square area.
        assert_eq!(
            index.areas_intersecting(&Region::circle([116.605, 40.605], 50.0)),
            vec![11]
        );
        assert!(index.area(11).is_some());
        assert!(index.area(12).is_none());
    }
}
