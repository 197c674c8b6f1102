//! A deterministic generator for a SYNTHETIC demo district: a mountain district north
//! of Beijing (lon 115.9–117.0, lat 40.3–40.9) with 16 towns, about 310 villages along
//! valleys (64 of them at risk, 8 beyond the mobile network), hazard points with
//! buffers, a few reservoirs, about 2,000 people with roles, supervisors and synthetic
//! addresses (phone numbers; BeiDou cards for off-grid leads, some village heads and
//! the field crew; Meshtastic radios for some leads of at-risk villages; one Iridium
//! SBD field kit), one IP loudspeaker per village (one RTP group per village, one speaker
//! device per town), and a valley polygon for the demo's red flood alert. Nothing in it
//! describes real places, people or devices; the same seed always gives the same files.

use anyhow::{Context, Result, bail};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;
use tocsin_core::area::{AreaSpec, Region};

/// District box.
const LON0: f64 = 115.9;
const LON1: f64 = 117.0;
const LAT0: f64 = 40.3;
const LAT1: f64 = 40.9;
/// Towns form a 4 x 4 lattice of jittered cells.
const GRID: usize = 4;
/// Points added along each lattice edge so town borders are not straight.
const EDGE_STEPS: usize = 4;
/// Villages in total, and how many are at risk.
const VILLAGES: usize = 310;
const AT_RISK: usize = 64;
/// Hazard points per town and reservoirs in the district.
const HAZARDS_PER_TOWN: usize = 6;
const RESERVOIRS: usize = 5;
/// Off-grid villages (no mobile network; leads carry only a BeiDou card): inside the
/// demo flood valley, and elsewhere (one per town).
const REMOTE_IN_VALLEY: usize = 3;
const REMOTE_ELSEWHERE: usize = 5;
/// Share of village heads with a network who also carry a BeiDou card.
const HEAD_BEIDOU_SHARE: f64 = 0.3;
/// Share of leads in at-risk villages who carry a Meshtastic radio.
const MESH_SHARE: f64 = 0.4;
/// People in the field crew.
const CREW: usize = 3;
/// Share of the leads with a phone (village heads, grid leads, hazard and reservoir
/// wardens) who also use the warning app; district and town officials all do.
const LEAD_APP_SHARE: f64 = 0.33;
/// Share of residents who registered in the warning app.
const RESIDENT_APP_SHARE: f64 = 0.05;
/// Lattice row whose main valley is the demo flood valley.
const VALLEY_ROW: usize = 1;
/// Prefix of a town's speaker device name (`speakers-T05`): the daemon names a town's
/// loudspeaker driver `speakers-<town code>`.
const SPEAKER_DEVICE_PREFIX: &str = "speakers-";
/// Metres per degree of latitude (approximately).
const M_PER_DEG: f64 = 111_195.0;

const TOWN_NAMES: [&str; 16] = [
    "青石岭镇",
    "云峪镇",
    "白檀镇",
    "松河镇",
    "枣园镇",
    "栗林镇",
    "燕台镇",
    "石门镇",
    "沙峪镇",
    "柳溪镇",
    "银岭镇",
    "长峪镇",
    "桦林镇",
    "雁栖口镇",
    "黄松镇",
    "泉水镇",
];
const VILLAGE_FIRST: [&str; 40] = [
    "王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "孙", "马", "胡", "郭", "何", "高",
    "罗", "梁", "宋", "郑", "石", "柳", "杏", "枣", "栗", "松", "柏", "桃", "梨", "榆", "大", "小",
    "上", "下", "前", "后", "东", "西", "南", "北",
];
const VILLAGE_LAST: [&str; 16] = [
    "家沟村",
    "家峪村",
    "庄村",
    "家台村",
    "树坡村",
    "岭村",
    "家营村",
    "水峪村",
    "石沟村",
    "家窝村",
    "河村",
    "家湾村",
    "峪口村",
    "子村",
    "园村",
    "岔村",
];
const SURNAMES: [&str; 30] = [
    "王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "林", "高", "罗", "郑", "梁", "谢", "宋", "唐", "许", "韩", "冯", "邓", "曹",
];
const GIVEN: [&str; 40] = [
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明",
    "超", "秀英", "霞", "平", "刚", "桂英", "建国", "建华", "玉兰", "志强", "海燕", "红梅", "春生",
    "淑珍", "国平", "德华", "凤英", "文", "斌", "鹏", "辉", "玲", "雪", "华",
];

/// A village as placed by the generator.
struct Village {
    id: String,
    name: String,
    town: usize,
    center: [f64; 2],
    r_min: f64,
    ring: Vec<[f64; 2]>,
    at_risk: bool,
}

/// One named area feature to write.
struct Feature {
    id: String,
    kind: &'static str,
    name: String,
    town: String,
    geometry: Value,
    extra: Vec<(&'static str, Value)>,
}

/// The generated district, ready to write.
pub struct District {
    /// `areas.geojson` text.
    pub areas_geojson: String,
    /// `people.csv` text.
    pub people_csv: String,
    /// `speakers.csv` text: one loudspeaker per village.
    pub speakers_csv: String,
    /// `valley.geojson` text: a bare GeoJSON Polygon, which is also an `AreaSpec`.
    pub valley_geojson: String,
    /// The village polygons, in file order (used by the geofence benchmark).
    pub village_specs: Vec<AreaSpec>,
    /// Summary lines for the README.
    pub summary: Vec<String>,
}

fn town_name(t: usize) -> &'static str {
    TOWN_NAMES.get(t).copied().unwrap_or("镇")
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

fn rp(p: [f64; 2]) -> [f64; 2] {
    [round6(p[0]), round6(p[1])]
}

/// Metres between two nearby points (equirectangular, good enough for placement).
fn dist_m(a: [f64; 2], b: [f64; 2]) -> f64 {
    let k = ((a[1] + b[1]) / 2.0).to_radians().cos();
    let dx = (a[0] - b[0]) * k * M_PER_DEG;
    let dy = (a[1] - b[1]) * M_PER_DEG;
    (dx * dx + dy * dy).sqrt()
}

/// Metres from `p` to the segment `a..b` (equirectangular).
fn seg_dist_m(p: [f64; 2], a: [f64; 2], b: [f64; 2]) -> f64 {
    let k = p[1].to_radians().cos() * M_PER_DEG;
    let to = |q: [f64; 2]| [(q[0] - p[0]) * k, (q[1] - p[1]) * M_PER_DEG];
    let (a, b) = (to(a), to(b));
    let d = [b[0] - a[0], b[1] - a[1]];
    let len2 = d[0] * d[0] + d[1] * d[1];
    let t = if len2 > 0.0 {
        (-(a[0] * d[0] + a[1] * d[1]) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let c = [a[0] + t * d[0], a[1] + t * d[1]];
    (c[0] * c[0] + c[1] * c[1]).sqrt()
}

fn ring_dist_m(p: [f64; 2], ring: &[[f64; 2]]) -> f64 {
    ring.windows(2)
        .map(|w| seg_dist_m(p, w[0], w[1]))
        .fold(f64::INFINITY, f64::min)
}

/// Degrees of longitude and latitude for `m` metres at latitude `lat`.
fn deg(m: f64, lat: f64) -> (f64, f64) {
    (m / (M_PER_DEG * lat.to_radians().cos()), m / M_PER_DEG)
}

/// The main valley of lattice row `row`: latitude as a function of longitude.
fn valley_lat(row: usize, phase: [f64; 2], x: f64) -> f64 {
    let band = (LAT1 - LAT0) / GRID as f64;
    let centre = LAT0 + (row as f64 + 0.5) * band;
    centre
        + 0.030 * (std::f64::consts::TAU * (x - LON0) / 0.37 + phase[0]).sin()
        + 0.008 * (std::f64::consts::TAU * (x - LON0) / 0.11 + phase[1]).sin()
}

/// A closed, star-shaped ring of `n` vertices around `c` with radii in metres.
fn blob(
    rng: &mut ChaCha8Rng,
    c: [f64; 2],
    n: usize,
    r0: f64,
    r1: f64,
    stretch: f64,
) -> (Vec<[f64; 2]>, f64) {
    let (kx, ky) = deg(1.0, c[1]);
    let turn = rng.random_range(0.0..std::f64::consts::PI);
    let mut r_min = f64::INFINITY;
    let mut ring: Vec<[f64; 2]> = (0..n)
        .map(|k| {
            let t = std::f64::consts::TAU * k as f64 / n as f64;
            let r = rng.random_range(r0..r1);
            r_min = r_min.min(r);
            let (u, v) = (r * t.cos() * stretch, r * t.sin());
            let (x, y) = (
                u * turn.cos() - v * turn.sin(),
                u * turn.sin() + v * turn.cos(),
            );
            rp([c[0] + x * kx, c[1] + y * ky])
        })
        .collect();
    ring.dedup();
    if let Some(first) = ring.first().copied() {
        ring.push(first);
    }
    (ring, r_min.min(r0 * stretch.min(1.0)))
}

fn polygon_value(ring: &[[f64; 2]]) -> Value {
    json!({ "type": "Polygon", "coordinates": [ring] })
}

fn contains(ring: &[[f64; 2]], p: [f64; 2]) -> bool {
    AreaSpec::Polygon {
        coordinates: vec![ring.to_vec()],
    }
    .to_region_unnamed()
    .map(|r: Region| r.contains(p))
    .unwrap_or(false)
}

/// Builds the whole district from `seed`.
pub fn generate(seed: u64) -> Result<District> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cell_w = (LON1 - LON0) / GRID as f64;
    let cell_h = (LAT1 - LAT0) / GRID as f64;

    // Lattice corners, jittered inside the district; the outer corners stay put.
    let mut corner = vec![vec![[0.0f64; 2]; GRID + 1]; GRID + 1];
    for (i, col) in corner.iter_mut().enumerate() {
        for (j, c) in col.iter_mut().enumerate() {
            let jx = if i == 0 || i == GRID {
                0.0
            } else {
                rng.random_range(-0.25..0.25) * cell_w
            };
            let jy = if j == 0 || j == GRID {
                0.0
            } else {
                rng.random_range(-0.15..0.15) * cell_h
            };
            *c = rp([LON0 + i as f64 * cell_w + jx, LAT0 + j as f64 * cell_h + jy]);
        }
    }
    // Points along each lattice edge, shared by the two towns on either side, so that
    // neighbouring towns meet exactly.
    let mut edge_pts = std::collections::HashMap::new();
    let mut edge = |a: (usize, usize), b: (usize, usize), rng: &mut ChaCha8Rng| -> Vec<[f64; 2]> {
        let key = if a <= b { (a, b) } else { (b, a) };
        let pts = edge_pts
            .entry(key)
            .or_insert_with(|| {
                let (p, q) = (corner[key.0.0][key.0.1], corner[key.1.0][key.1.1]);
                let outer = (key.0.0 == key.1.0 && (key.0.0 == 0 || key.0.0 == GRID))
                    || (key.0.1 == key.1.1 && (key.0.1 == 0 || key.0.1 == GRID));
                (1..EDGE_STEPS)
                    .map(|s| {
                        let t = s as f64 / EDGE_STEPS as f64;
                        let wobble = if outer {
                            0.0
                        } else {
                            rng.random_range(-0.04..0.04)
                        };
                        // Perpendicular wobble in degrees, scaled to the edge length.
                        let (dx, dy) = (q[0] - p[0], q[1] - p[1]);
                        rp([p[0] + t * dx - wobble * dy, p[1] + t * dy + wobble * dx])
                    })
                    .collect::<Vec<_>>()
            })
            .clone();
        if a <= b {
            pts
        } else {
            pts.into_iter().rev().collect()
        }
    };
    let mut towns: Vec<Vec<[f64; 2]>> = Vec::new();
    for j in 0..GRID {
        for i in 0..GRID {
            let cs = [(i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)];
            let mut ring = Vec::new();
            for k in 0..4 {
                let (a, b) = (cs[k], cs[(k + 1) % 4]);
                ring.push(corner[a.0][a.1]);
                ring.extend(edge(a, b, &mut rng));
            }
            ring.push(corner[cs[0].0][cs[0].1]);
            towns.push(ring);
        }
    }

    // Valleys: one winding main valley per lattice row, and a side valley per town.
    let phases: Vec<[f64; 2]> = (0..GRID)
        .map(|_| {
            [
                rng.random_range(0.0..std::f64::consts::TAU),
                rng.random_range(0.0..std::f64::consts::TAU),
            ]
        })
        .collect();
    let mut used_names = HashSet::new();
    let mut villages: Vec<Village> = Vec::new();
    let per_town: Vec<usize> = (0..towns.len())
        .map(|t| VILLAGES / towns.len() + usize::from(t < VILLAGES % towns.len()))
        .collect();
    for (t, town) in towns.iter().enumerate() {
        let (col, row) = (t % GRID, t / GRID);
        let x0 = LON0 + col as f64 * cell_w;
        let side_x = x0 + rng.random_range(0.3..0.7) * cell_w;
        let side_dir = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        let side_phase = rng.random_range(0.0..std::f64::consts::TAU);
        let mut placed = 0;
        let mut attempts = 0;
        while placed < per_town[t] && attempts < 20_000 {
            attempts += 1;
            // Two in three villages on the main valley, the rest up the side valley;
            // late attempts anywhere in the town so every town gets its villages.
            let c = if attempts > 15_000 {
                [
                    rng.random_range(x0..x0 + cell_w),
                    rng.random_range(LAT0..LAT1),
                ]
            } else if rng.random_bool(0.66) {
                let x = rng.random_range(x0 - 0.1 * cell_w..x0 + 1.1 * cell_w);
                [
                    x,
                    valley_lat(row, phases[row], x) + rng.random_range(-0.006..0.006),
                ]
            } else {
                let s = rng.random_range(0.0..1.0f64);
                let y = valley_lat(row, phases[row], side_x) + side_dir * s * 0.08;
                [
                    side_x + 0.015 * (s * 7.0 + side_phase).sin() + rng.random_range(-0.003..0.003),
                    y,
                ]
            };
            let c = rp(c);
            let (r0, r1) = (
                rng.random_range(220.0..320.0),
                rng.random_range(380.0..560.0),
            );
            if !contains(town, c) || ring_dist_m(c, town) < r1 + 150.0 {
                continue;
            }
            if villages.iter().any(|v| dist_m(v.center, c) < r1 + 700.0) {
                continue;
            }
            let n = rng.random_range(8..=16);
            let (ring, r_min) = blob(&mut rng, c, n, r0, r1, 1.0);
            let name = loop {
                let n = format!(
                    "{}{}",
                    VILLAGE_FIRST[rng.random_range(0..VILLAGE_FIRST.len())],
                    VILLAGE_LAST[rng.random_range(0..VILLAGE_LAST.len())]
                );
                if used_names.insert(n.clone()) {
                    break n;
                }
            };
            placed += 1;
            villages.push(Village {
                id: format!("T{:02}-V{:02}", t + 1, placed),
                name,
                town: t,
                center: c,
                r_min,
                ring,
                at_risk: false,
            });
        }
    }
    if villages.len() < VILLAGES - 10 {
        bail!("placed only {} villages; try another seed", villages.len());
    }
    let mut order: Vec<usize> = (0..villages.len()).collect();
    order.shuffle(&mut rng);
    for &v in order.iter().take(AT_RISK) {
        villages[v].at_risk = true;
    }
    // The flood valley and the off-grid villages draw nothing from `rng`, so everything
    // placed after them stays where it was before they existed.
    let centres: Vec<[f64; 2]> = villages.iter().map(|v| v.center).collect();
    let valley = flood_valley(&centres, &phases);
    let in_valley: Vec<bool> = centres.iter().map(|c| contains(&valley, *c)).collect();
    let remote = remote_villages(&villages, &phases, &in_valley);
    // The town at the valley's western end, where the field crew is stationed.
    let valley_head_town = villages
        .iter()
        .zip(&in_valley)
        .filter(|(_, inside)| **inside)
        .min_by(|a, b| a.0.center[0].total_cmp(&b.0.center[0]))
        .map(|(v, _)| v.town)
        .unwrap_or(0);

    // Hazard points on the slopes next to villages; reservoirs up side valleys.
    let mut features: Vec<Feature> = Vec::new();
    for (t, ring) in towns.iter().enumerate() {
        features.push(Feature {
            id: format!("T{:02}", t + 1),
            kind: "town",
            name: town_name(t).to_owned(),
            town: String::new(),
            geometry: polygon_value(ring),
            extra: vec![],
        });
    }
    for (v, off_grid) in villages.iter().zip(&remote) {
        let mut extra = vec![("at_risk", json!(v.at_risk))];
        if *off_grid {
            extra.push(("off_grid", json!(true)));
        }
        features.push(Feature {
            id: v.id.clone(),
            kind: "village",
            name: v.name.clone(),
            town: town_name(v.town).to_owned(),
            geometry: polygon_value(&v.ring),
            extra,
        });
    }
    let mut hazards: Vec<(String, usize, [f64; 2])> = Vec::new(); // id, village, centre
    for t in 0..towns.len() {
        let in_town: Vec<usize> = (0..villages.len())
            .filter(|&v| villages[v].town == t)
            .collect();
        for h in 0..HAZARDS_PER_TOWN {
            let Some(&v) = in_town.get((h * 7) % in_town.len().max(1)) else {
                continue;
            };
            let vc = villages[v].center;
            let bearing = rng.random_range(0.0..std::f64::consts::TAU);
            let d = rng.random_range(0.3..0.9) * villages[v].r_min;
            let (kx, ky) = deg(d, vc[1]);
            let c = rp([vc[0] + kx * bearing.cos(), vc[1] + ky * bearing.sin()]);
            let id = format!("T{:02}-H{:02}", t + 1, h + 1);
            let kinds = ["崩塌隐患点", "滑坡隐患点", "泥石流隐患点"];
            features.push(Feature {
                id: id.clone(),
                kind: "hazard_point",
                name: format!(
                    "{}{}",
                    villages[v].name.trim_end_matches('村'),
                    kinds[h % 3]
                ),
                town: town_name(t).to_owned(),
                geometry: json!({ "type": "Point", "coordinates": c }),
                extra: vec![("radius_m", json!(rng.random_range(15..40) * 10))],
            });
            hazards.push((id, v, c));
        }
    }
    let mut reservoirs: Vec<(String, usize, [f64; 2])> = Vec::new(); // id, town, centre
    let mut tries = 0;
    while reservoirs.len() < RESERVOIRS && tries < 5000 {
        tries += 1;
        let t = rng.random_range(0..towns.len());
        let c = rp([rng.random_range(LON0..LON1), rng.random_range(LAT0..LAT1)]);
        if !contains(&towns[t], c) || ring_dist_m(c, &towns[t]) < 2500.0 {
            continue;
        }
        if villages.iter().any(|v| dist_m(v.center, c) < 2200.0)
            || reservoirs.iter().any(|r| dist_m(r.2, c) < 8000.0)
        {
            continue;
        }
        let (ring, _) = blob(&mut rng, c, 16, 500.0, 800.0, 2.2);
        let id = format!("R{:02}", reservoirs.len() + 1);
        let names = ["红旗水库", "卧龙潭水库", "石湖水库", "清泉水库", "东峪水库"];
        features.push(Feature {
            id: id.clone(),
            kind: "reservoir",
            name: names[reservoirs.len() % names.len()].to_owned(),
            town: town_name(t).to_owned(),
            geometry: polygon_value(&ring),
            extra: vec![],
        });
        reservoirs.push((id, t, c));
    }

    let areas_geojson = areas_text(&features)?;

    // People. Everyone's phone numbers are drawn in the same order as before the
    // off-grid bearers were added, even for leads who end up without a phone, so that
    // every other person keeps their number; off-grid addresses come from their own
    // random stream for the same reason.
    let mut csv =
        String::from("id,name,role,supervisor,areas,lon,lat,town,phones,beidou,mesh,sbd,app\n");
    let mut phone = 0u32;
    let mut next_phone = |range: u32| {
        phone += 1;
        format!("+86199000{range}{:04}", phone)
    };
    let mut offgrid = OffGrid::new(seed);
    let mut apps = AppIds::new(seed);
    let mut name_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut person_name = || {
        format!(
            "{}{}",
            SURNAMES[name_rng.random_range(0..SURNAMES.len())],
            GIVEN[name_rng.random_range(0..GIVEN.len())]
        )
    };
    let at_village = |rng: &mut ChaCha8Rng, v: &Village| {
        let bearing = rng.random_range(0.0..std::f64::consts::TAU);
        let d = rng.random_range(0.0..0.7) * v.r_min;
        let (kx, ky) = deg(d, v.center[1]);
        rp([
            v.center[0] + kx * bearing.cos(),
            v.center[1] + ky * bearing.sin(),
        ])
    };
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let mut row = |csv: &mut String,
                   id: &str,
                   name: &str,
                   role: &'static str,
                   sup: &str,
                   areas: &str,
                   loc: Option<[f64; 2]>,
                   town: &str,
                   reach: &Reach| {
        *counts.entry(role).or_default() += 1;
        let (lon, lat) = loc
            .map(|p| (p[0].to_string(), p[1].to_string()))
            .unwrap_or_default();
        let Reach {
            phones,
            beidou,
            mesh,
            sbd,
            app,
        } = reach;
        let _ = writeln!(
            csv,
            "{id},{name},{role},{sup},{areas},{lon},{lat},{town},{phones},{beidou},{mesh},{sbd},{app}"
        );
    };
    let seat = |t: usize| villages.iter().find(|v| v.town == t).map(|v| v.center);
    for d in 0..4 {
        let loc = seat(0).map(|c| [round6(c[0] + 0.001 * d as f64), c[1]]);
        let p = next_phone(0);
        row(
            &mut csv,
            &format!("D{:03}", d + 1),
            &person_name(),
            "district_official",
            "",
            "",
            loc,
            town_name(0),
            &Reach::phone(p).with_app(apps.maybe(1.0)),
        );
    }
    for t in 0..towns.len() {
        for o in 0..2 {
            let loc = seat(t).map(|c| [round6(c[0] + 0.0005 * o as f64), c[1]]);
            let p = next_phone(0);
            let sup = format!("D{:03}", t % 4 + 1);
            row(
                &mut csv,
                &format!("T{:02}-O{}", t + 1, o + 1),
                &person_name(),
                "town_official",
                &sup,
                &format!("T{:02}", t + 1),
                loc,
                town_name(t),
                &Reach::phone(p).with_app(apps.maybe(1.0)),
            );
        }
    }
    for (vi, v) in villages.iter().enumerate() {
        let town = town_name(v.town);
        let official = format!("T{:02}-O1", v.town + 1);
        let off_grid = remote.get(vi).copied().unwrap_or(false);
        // A lead's reach: in an off-grid village a BeiDou card instead of the phone (and
        // no app: there is no mobile data either); elsewhere sometimes the app, and a
        // card; in an at-risk village, sometimes a mesh radio as well.
        let lead = |phones: String, offgrid: &mut OffGrid, apps: &mut AppIds, beidou_share: f64| {
            let mut reach = Reach::phone(phones);
            if off_grid {
                reach.phones.clear();
                reach.beidou = offgrid.card();
            } else {
                reach.app = apps.maybe(LEAD_APP_SHARE);
                if offgrid.chance(beidou_share) {
                    reach.beidou = offgrid.card();
                }
            }
            if v.at_risk && offgrid.chance(MESH_SHARE) {
                reach.mesh = offgrid.node();
            }
            reach
        };
        let head = format!("{}-H", v.id);
        let loc = at_village(&mut rng, v);
        let phones = format!("{};{}", next_phone(0), next_phone(1));
        let reach = lead(phones, &mut offgrid, &mut apps, HEAD_BEIDOU_SHARE);
        row(
            &mut csv,
            &head,
            &person_name(),
            "village_head",
            &official,
            &v.id,
            Some(loc),
            town,
            &reach,
        );
        let grid_leads = if v.at_risk {
            2
        } else {
            rng.random_range(1..=2)
        };
        for g in 0..grid_leads {
            let loc = at_village(&mut rng, v);
            let p = next_phone(0);
            let reach = lead(p, &mut offgrid, &mut apps, 0.0);
            row(
                &mut csv,
                &format!("{}-G{}", v.id, g + 1),
                &person_name(),
                "grid_lead",
                &official,
                &v.id,
                Some(loc),
                town,
                &reach,
            );
        }
        let residents = rng.random_range(3..=4);
        for r in 0..residents {
            let loc = at_village(&mut rng, v);
            let p = next_phone(0);
            row(
                &mut csv,
                &format!("{}-R{}", v.id, r + 1),
                &person_name(),
                "resident",
                "",
                "",
                Some(loc),
                town,
                &Reach::phone(p).with_app(apps.maybe(RESIDENT_APP_SHARE)),
            );
        }
    }
    for (id, v, c) in &hazards {
        let vil = &villages[*v];
        let official = format!("T{:02}-O1", vil.town + 1);
        let p = next_phone(0);
        row(
            &mut csv,
            &format!("{id}-W"),
            &person_name(),
            "hazard_warden",
            &official,
            &format!("{id};{}", vil.id),
            Some(*c),
            town_name(vil.town),
            &Reach::phone(p).with_app(apps.maybe(LEAD_APP_SHARE)),
        );
    }
    for (id, t, c) in &reservoirs {
        for w in 0..2 {
            let official = format!("T{:02}-O1", t + 1);
            let p = next_phone(0);
            let loc = rp([c[0] + 0.001 * w as f64, c[1]]);
            row(
                &mut csv,
                &format!("{id}-W{}", w + 1),
                &person_name(),
                "reservoir_warden",
                &official,
                id,
                Some(loc),
                town_name(*t),
                &Reach::phone(p).with_app(apps.maybe(LEAD_APP_SHARE)),
            );
        }
    }
    // The field crew is stationed at the seat of the town at the valley's head and
    // answers for that town; everyone carries a phone and a BeiDou card, and the lead
    // also the crew's Iridium SBD kit. Written last so nobody else's number moves.
    let crew_town = valley_head_town;
    let crew_sup = format!("D{:03}", crew_town % 4 + 1);
    for k in 0..CREW {
        let id = format!("F01-{}", k + 1);
        let loc = seat(crew_town).map(|c| [round6(c[0] + 0.0004 * (k + 1) as f64), c[1]]);
        let mut reach = Reach::phone(next_phone(0));
        reach.beidou = offgrid.card();
        if k == 0 {
            reach.sbd = offgrid.imei();
        }
        row(
            &mut csv,
            &id,
            &person_name(),
            "field_crew",
            if k == 0 { &crew_sup } else { "F01-1" },
            &format!("T{:02}", crew_town + 1),
            loc,
            town_name(crew_town),
            &reach,
        );
    }

    let speakers_csv = speakers_text(&villages);

    let valley_geojson = serde_json::to_string_pretty(&json!({
        "type": "Polygon",
        "name": "SYNTHETIC demo flood valley (not a real place)",
        "coordinates": [valley],
    }))?;

    let people_total: usize = counts.values().sum();
    let mut summary = vec![
        format!("towns: {}", towns.len()),
        format!(
            "villages: {} ({} at risk, {} off-grid: {} of them in the valley)",
            villages.len(),
            villages.iter().filter(|v| v.at_risk).count(),
            remote.iter().filter(|r| **r).count(),
            remote
                .iter()
                .zip(&in_valley)
                .filter(|(r, i)| **r && **i)
                .count()
        ),
        format!("hazard points: {}", hazards.len()),
        format!("reservoirs: {}", reservoirs.len()),
        format!("people: {people_total}"),
    ];
    for (role, n) in &counts {
        summary.push(format!("  {role}: {n}"));
    }
    let towns_with_villages: HashSet<usize> = villages.iter().map(|v| v.town).collect();
    summary.push(format!(
        "speakers: {} (one per village) on {} speaker devices ({}…{})",
        villages.len(),
        towns_with_villages.len(),
        speaker_device(0),
        speaker_device(towns.len().saturating_sub(1)),
    ));
    summary.push(format!(
        "valley.geojson: {} vertices, {} village centres inside",
        valley.len() - 1,
        in_valley.iter().filter(|i| **i).count()
    ));
    summary.extend(reach_summary(
        &areas_geojson,
        &csv,
        &speakers_csv,
        &valley_geojson,
    )?);

    Ok(District {
        areas_geojson,
        people_csv: csv,
        speakers_csv,
        valley_geojson,
        village_specs: villages
            .iter()
            .map(|v| AreaSpec::Polygon {
                coordinates: vec![v.ring.clone()],
            })
            .collect(),
        summary,
    })
}

/// A town's speaker device (`speakers-T05` for town `T05`), as the daemon names it.
fn speaker_device(town: usize) -> String {
    format!("{SPEAKER_DEVICE_PREFIX}T{:02}", town + 1)
}

/// `speakers.csv`: one IP loudspeaker per village, standing at the village centre and
/// covering the village's area; driven by its town's speaker device, on an RTP group of
/// its own named after the village id, so each village's speaker is sounded and
/// reported on alone. Draws nothing from the random streams.
fn speakers_text(villages: &[Village]) -> String {
    let mut csv = String::from(
        "id,name,town,lon,lat,areas,device,group
",
    );
    for v in villages {
        let _ = writeln!(
            csv,
            "{id}-S,{name}广播,{town},{lon},{lat},{id},{device},{id}",
            id = v.id,
            name = v.name,
            town = town_name(v.town),
            lon = v.center[0],
            lat = v.center[1],
            device = speaker_device(v.town),
        );
    }
    csv
}

/// The addresses written for one person: `;`-separated phone numbers and one BeiDou
/// card, mesh node, SBD IMEI and app subscriber id at most (empty when they have none).
struct Reach {
    phones: String,
    beidou: String,
    mesh: String,
    sbd: String,
    app: String,
}

impl Reach {
    /// Phones only.
    fn phone(phones: String) -> Reach {
        Reach {
            phones,
            beidou: String::new(),
            mesh: String::new(),
            sbd: String::new(),
            app: String::new(),
        }
    }

    /// The same, with the app subscriber id `app` (empty: none).
    fn with_app(mut self, app: String) -> Reach {
        self.app = app;
        self
    }
}

/// Hands out app subscriber ids (`syn-app-0001`, …) from a random stream of their own, so
/// that adding the app moved nobody's phone, card or radio.
struct AppIds {
    rng: ChaCha8Rng,
    issued: u32,
}

impl AppIds {
    fn new(seed: u64) -> AppIds {
        AppIds {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x0a99_5eed),
            issued: 0,
        }
    }

    /// A fresh subscriber id with probability `share`, else empty. One draw per person
    /// asked, whatever the share, so who gets an id never depends on another group's share.
    fn maybe(&mut self, share: f64) -> String {
        let x: f64 = self.rng.random();
        if x < share {
            self.issued += 1;
            format!("syn-app-{:04}", self.issued)
        } else {
            String::new()
        }
    }
}

/// Hands out the off-grid addresses: synthetic BeiDou card numbers, unique Meshtastic
/// node numbers and test-range IMEIs, from a random stream of their own.
struct OffGrid {
    rng: ChaCha8Rng,
    cards: u32,
    nodes: HashSet<u32>,
    kits: u32,
}

impl OffGrid {
    fn new(seed: u64) -> OffGrid {
        OffGrid {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x0ff6_71d0),
            cards: 0,
            nodes: HashSet::new(),
            kits: 0,
        }
    }

    /// A 7-digit card number in the synthetic block `99xxxxx` (BDS-2 cards report 7 digits).
    fn card(&mut self) -> String {
        self.cards += 1;
        format!("99{:05}", self.cards)
    }

    /// A node number no one else has, never 0 or the broadcast number, as `!%08x`.
    fn node(&mut self) -> String {
        loop {
            let n: u32 = self.rng.random();
            if n != 0 && n != u32::MAX && self.nodes.insert(n) {
                return format!("!{n:08x}");
            }
        }
    }

    /// A 15-digit IMEI in the test range (reporting body 00) with a valid check digit.
    fn imei(&mut self) -> String {
        self.kits += 1;
        let body = format!("001010{:08}", self.kits);
        let check = luhn_check_digit(&body);
        format!("{body}{check}")
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p.min(1.0))
    }
}

/// The Luhn check digit that completes `digits` (as IMEIs use it).
fn luhn_check_digit(digits: &str) -> u32 {
    let sum: u32 = digits
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

/// The demo's flood valley: a corridor along the row-1 main valley, extended west to
/// east until it holds about 40 village centres.
fn flood_valley(centres: &[[f64; 2]], phases: &[[f64; 2]]) -> Vec<[f64; 2]> {
    let phase = phases.get(VALLEY_ROW).copied().unwrap_or_default();
    let start = LON0 + 0.05;
    let half = 0.009;
    let mut end = start + 0.05;
    let corridor = |end: f64| -> Vec<[f64; 2]> {
        let n = 24;
        let xs: Vec<f64> = (0..n)
            .map(|k| start + (end - start) * k as f64 / (n - 1) as f64)
            .collect();
        let mut ring: Vec<[f64; 2]> = xs
            .iter()
            .map(|&x| rp([x, valley_lat(VALLEY_ROW, phase, x) - half]))
            .collect();
        ring.extend(
            xs.iter()
                .rev()
                .map(|&x| rp([x, valley_lat(VALLEY_ROW, phase, x) + half])),
        );
        if let Some(first) = ring.first().copied() {
            ring.push(first);
        }
        ring
    };
    let mut valley = corridor(end);
    while end < LON1 - 0.05 {
        let inside = centres.iter().filter(|c| contains(&valley, **c)).count();
        if inside >= 40 {
            break;
        }
        end += 0.01;
        valley = corridor(end);
    }
    valley
}

/// Picks the villages with no mobile network: the westernmost villages inside the
/// flood valley (its headwaters) and, elsewhere, the village farthest from its main
/// valley floor (high up a side valley) in a few towns. A town's first village is its
/// seat, where the town officials sit, and always has a network.
fn remote_villages(villages: &[Village], phases: &[[f64; 2]], in_valley: &[bool]) -> Vec<bool> {
    let mut remote = vec![false; villages.len()];
    let seats: HashSet<usize> = (0..villages.len())
        .filter(|&v| villages.iter().position(|x| x.town == villages[v].town) == Some(v))
        .collect();
    let mut inside: Vec<usize> = (0..villages.len())
        .filter(|&v| in_valley.get(v).copied().unwrap_or(false) && !seats.contains(&v))
        .collect();
    inside.sort_by(|&a, &b| villages[a].center[0].total_cmp(&villages[b].center[0]));
    for &v in inside.iter().take(REMOTE_IN_VALLEY) {
        remote[v] = true;
    }
    let mut elsewhere: Vec<(f64, usize)> = (0..villages.len())
        .filter(|&v| !in_valley.get(v).copied().unwrap_or(false) && !seats.contains(&v))
        .map(|v| {
            let row = villages[v].town / GRID;
            let phase = phases.get(row).copied().unwrap_or_default();
            let c = villages[v].center;
            ((c[1] - valley_lat(row, phase, c[0])).abs(), v)
        })
        .collect();
    elsewhere.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut towns = HashSet::new();
    for (_, v) in elsewhere {
        if towns.len() >= REMOTE_ELSEWHERE {
            break;
        }
        if towns.insert(villages[v].town) {
            remote[v] = true;
        }
    }
    remote
}

/// README lines on who can be reached how, from the files as Tocsin loads them, and on
/// whom the valley alert reaches.
fn reach_summary(
    areas_geojson: &str,
    people_csv: &str,
    speakers_csv: &str,
    valley_geojson: &str,
) -> Result<Vec<String>> {
    use tocsin_core::directory::{
        Directory, load_areas_geojson, load_people_csv, load_speakers_csv,
    };
    use tocsin_core::{Bearer, Person};
    let areas = load_areas_geojson(areas_geojson)?;
    let (people, rejected) = load_people_csv(people_csv.as_bytes(), "86");
    if let Some(r) = rejected.first() {
        bail!("generated people.csv line {}: {}", r.line, r.reason);
    }
    let (speakers, rejected) = load_speakers_csv(speakers_csv.as_bytes());
    if let Some(r) = rejected.first() {
        bail!("generated speakers.csv line {}: {}", r.line, r.reason);
    }
    let dir = Directory::new(people, areas)?.with_speakers(speakers)?;
    let serves = |p: &Person, b: Bearer| p.addresses.iter().any(|a| a.serves(b));
    let no_phone = |p: &Person| !serves(p, Bearer::Sms);
    let by_bearer = |people: &[Person]| -> String {
        [
            Bearer::Sms,
            Bearer::Beidou,
            Bearer::Mesh,
            Bearer::Sbd,
            Bearer::App,
        ]
        .iter()
        .map(|&b| format!("{b} {}", people.iter().filter(|p| serves(p, b)).count()))
        .collect::<Vec<_>>()
        .join(", ")
    };
    let everyone: Vec<Person> = dir.people().iter().collect();
    let mut lines = vec![
        format!("reachable by: {}", by_bearer(&everyone)),
        format!(
            "  no phone (BeiDou card only): {}",
            everyone.iter().filter(|p| no_phone(p)).count()
        ),
    ];
    let valley: AreaSpec = serde_json::from_str(valley_geojson)?;
    let r = dir.resolve(&[valley])?;
    let responsible: Vec<Person> = r
        .responsible
        .iter()
        .filter_map(|(p, _)| dir.person(p))
        .collect();
    lines.push(format!(
        "valley alert: {} people ({} responsible, {} located)",
        r.person_count(),
        r.responsible.len(),
        r.located.len()
    ));
    lines.push(format!(
        "  responsible reachable by: {}",
        by_bearer(&responsible)
    ));
    lines.push(format!(
        "  responsible with no phone: {}",
        responsible.iter().filter(|p| no_phone(p)).count()
    ));
    // The valley's loudspeakers, by device: what the demo's speaker devices must serve.
    let mut by_device = std::collections::BTreeMap::<String, Vec<String>>::new();
    for sp in r.speakers.iter().filter_map(|id| dir.speaker(id)) {
        by_device
            .entry(sp.device.to_string())
            .or_default()
            .push(sp.group.clone());
    }
    lines.push(format!(
        "valley alert: {} loudspeakers on {} speaker devices",
        r.speakers.len(),
        by_device.len()
    ));
    for (device, groups) in &by_device {
        lines.push(format!("  {device}: {}", groups.join(" ")));
    }
    Ok(lines)
}

fn areas_text(features: &[Feature]) -> Result<String> {
    // One feature per line keeps the file diffable and small.
    let mut out = String::new();
    out.push_str("{\"type\":\"FeatureCollection\",\n\"name\":\"SYNTHETIC demo district (generated by tocsin-bench gen-district; not real places or people)\",\n\"properties\":{\"synthetic\":true},\n\"features\":[\n");
    for (i, f) in features.iter().enumerate() {
        let mut props = serde_json::Map::new();
        props.insert("id".into(), json!(f.id));
        props.insert("kind".into(), json!(f.kind));
        props.insert("name".into(), json!(f.name));
        if !f.town.is_empty() {
            props.insert("town".into(), json!(f.town));
        }
        for (k, v) in &f.extra {
            props.insert((*k).into(), v.clone());
        }
        let feature = json!({ "type": "Feature", "properties": props, "geometry": f.geometry });
        out.push_str(&serde_json::to_string(&feature)?);
        out.push_str(if i + 1 < features.len() { ",\n" } else { "\n" });
    }
    out.push_str("]}\n");
    Ok(out)
}

/// Writes the district files and a README into `out`.
pub fn write(out: &Path, seed: u64) -> Result<Vec<String>> {
    let d = generate(seed)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("areas.geojson"), &d.areas_geojson)?;
    std::fs::write(out.join("people.csv"), &d.people_csv)?;
    std::fs::write(out.join("speakers.csv"), &d.speakers_csv)?;
    std::fs::write(out.join("valley.geojson"), &d.valley_geojson)?;
    let readme = readme(seed, &d.summary);
    std::fs::write(out.join("README.md"), readme)?;
    Ok(d.summary)
}

fn readme(seed: u64, summary: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# SYNTHETIC demo district\n");
    let _ = writeln!(
        s,
        "**Everything in this folder is synthetic.** The towns, villages, hazard points, reservoirs, people, \
         names, phone numbers, BeiDou card numbers, Meshtastic node numbers, app subscriber ids and the Iridium \
         IMEI were made up by a deterministic generator; they do not describe real places, real people or real devices. The \
         layout only imitates the kind of district Tocsin is built for: a mountain district north of Beijing \
         (roughly lon 115.9–117.0, lat 40.3–40.9) with villages strung along valleys, some of them beyond the \
         mobile network.\n"
    );
    let _ = writeln!(
        s,
        "Regenerate (same seed, same files):\n\n```\ncargo run -p tocsin-bench -- gen-district --out configs/district --seed {seed}\n```\n"
    );
    let _ = writeln!(s, "## Files\n");
    let _ = writeln!(
        s,
        "- `areas.geojson` — FeatureCollection of named areas: properties `id`, `kind` (`town`, `village`, \
         `hazard_point`, `reservoir`), `name`, `town`; villages also carry `at_risk`, and the villages with no \
         mobile network `off_grid: true` (informative; Tocsin ignores it). Towns and villages are Polygons \
         (villages have 8–16 vertices and lie inside their town); hazard points are Points with a `radius_m` \
         buffer; reservoirs are Polygons.\n\
         - `people.csv` — `id,name,role,supervisor,areas,lon,lat,town,phones,beidou,mesh,sbd,app` (format in \
         `tocsin_core::directory`; `app` is the warning app's subscriber id, see below). Village heads and grid leads, hazard and reservoir \
         wardens report to their town's first official (`Txx-O1`), town officials to a district official \
         (`D00x`). Residents have no supervisor and answer for no area.\n\
         - `speakers.csv` — `id,name,town,lon,lat,areas,device,group` (format in `tocsin_core::directory`): \
         one IP loudspeaker per village (see below).\n\
         - `valley.geojson` — the demo red flood alert's area: a bare GeoJSON Polygon (also a valid \
         `AreaSpec`) along one valley.\n"
    );
    let _ = writeln!(
        s,
        "## Loudspeakers
"
    );
    let _ = writeln!(
        s,
        "One IP loudspeaker per village (`Txx-Vyy-S`, named `<village name>广播`), standing at \
         the village centre and covering the village's area (`areas` = the village id), so an alert sounds it \
         when its area holds the centre or overlaps the village.\n\n\
         - **Device**: one speaker driver per town, named `{SPEAKER_DEVICE_PREFIX}<town code>` — \
         `{}` drives every speaker of town `T05`. This is the name the daemon's config must give the town's \
         `[devices.{}] type = \"speaker\"` section.\n\
         - **Group**: the village id (`T05-V03`): one RTP group per village, i.e. one `[[groups]]` entry with \
         `name = \"T05-V03\"` in that device's config. The router sends each speaker's announcement to its \
         device with the address `speaker:<group>`, and the speaker driver plays it on that group only; the \
         group is also the unit of reception evidence (the speakers expected to report are listed per group).\n\
         - The IP addresses and ports of the groups are not in this file: they belong to the device config \
         (multicast groups or unicast speakers on the village networks, or simulated speakers on \
         127.0.0.1 in the demo).\n",
        speaker_device(4),
        speaker_device(4),
    );
    let _ = writeln!(s, "## Who can be reached how\n");
    let _ = writeln!(
        s,
        "- **Off-grid villages** ({REMOTE_IN_VALLEY} at the head of the flood valley, {REMOTE_ELSEWHERE} high up \
         side valleys elsewhere, one per town; never a town's seat): there is no mobile network, so their \
         village head and grid leads have **no phone** and carry a BeiDou card only. Their residents keep the \
         mobile numbers they registered (reached when they are in coverage).\n\
         - About {:.0}% of the other village heads also carry a BeiDou card besides their phones.\n\
         - About {:.0}% of the leads (head and grid leads) of at-risk villages carry a Meshtastic radio.\n\
         - Field crew `F01` ({CREW} people, role `field_crew`): stationed at the seat of the town at the \
         valley's head and answering for that town; each has a phone and a BeiDou card, and the crew lead \
         `F01-1` also the crew's Iridium SBD field kit.\n\
         - **Warning app** (`app` column, the `webhook` bearer): every district and town official, about \
         {:.0}% of the leads with a phone (village heads, grid leads, hazard and reservoir wardens; leads of \
         off-grid villages have no mobile data) and about {:.0}% of the residents are registered in the app \
         backend under a subscriber id. The field crew is not.\n",
        HEAD_BEIDOU_SHARE * 100.0,
        MESH_SHARE * 100.0,
        LEAD_APP_SHARE * 100.0,
        RESIDENT_APP_SHARE * 100.0
    );
    let _ = writeln!(
        s,
        "Synthetic ranges, unique across the file: phone numbers `+86 19900 0xxxx` / `+86 19900 1xxxx` \
         (village heads have a second number in the latter; the numbers of leads in off-grid villages are \
         skipped, so everyone else keeps theirs); BeiDou cards `99xxxxx` (7 digits, as BDS-2 cards report \
         them); Meshtastic node numbers drawn at random, written `!%08x`; the SBD IMEI in the test-IMEI range \
         (`00…`) with a valid check digit; app subscriber ids \
         `syn-app-xxxx`. Do not point a real modem, terminal, radio or app backend at them.\n"
    );
    let _ = writeln!(s, "## Contents\n\n```");
    for line in summary {
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(s, "```");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_core::directory::{
        Directory, load_areas_geojson, load_people_csv, load_speakers_csv,
    };
    use tocsin_core::{Address, AreaKind, Bearer, Person, Role};

    #[test]
    fn generated_district_loads_and_the_valley_is_meaningful() {
        let d = generate(7).unwrap();
        let areas = load_areas_geojson(&d.areas_geojson).unwrap();
        let (people, rejected) = load_people_csv(d.people_csv.as_bytes(), "86");
        assert!(rejected.is_empty(), "{rejected:?}");
        assert!((1800..=2200).contains(&people.len()), "{}", people.len());
        let villages = areas.iter().filter(|a| a.kind == AreaKind::Village).count();
        assert!((300..=310).contains(&villages), "{villages}");
        let dir = Directory::new(people, areas).unwrap();
        let valley: AreaSpec = serde_json::from_str(&d.valley_geojson).unwrap();
        let r = dir.resolve(&[valley]).unwrap();
        assert!(
            (150..=600).contains(&r.person_count()),
            "{}",
            r.person_count()
        );
        // The valley alert must need the off-grid bearers: responsible persons there
        // with no phone, and the field crew with its satellite kit.
        let responsible: Vec<Person> = r
            .responsible
            .iter()
            .map(|(p, _)| dir.person(p).unwrap())
            .collect();
        let phoneless = responsible
            .iter()
            .filter(|p| !p.addresses.iter().any(|a| a.serves(Bearer::Sms)))
            .count();
        assert!(phoneless >= 3, "{phoneless}");
        assert!(
            responsible
                .iter()
                .any(|p| p.addresses.iter().any(|a| a.serves(Bearer::Sbd)))
        );
        // Same seed, same files; and the committed demo district is what seed 7 makes.
        assert_eq!(generate(7).unwrap().people_csv, d.people_csv);
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/district");
        let read = |f: &str| std::fs::read_to_string(committed.join(f)).unwrap();
        // assert! rather than assert_eq!: a diff of whole files buries the message.
        for (file, generated) in [
            ("areas.geojson", &d.areas_geojson),
            ("people.csv", &d.people_csv),
            ("speakers.csv", &d.speakers_csv),
            ("valley.geojson", &d.valley_geojson),
        ] {
            assert!(
                read(file) == *generated,
                "configs/district/{file} is not what seed 7 generates: regenerate configs/district"
            );
        }
    }

    #[test]
    fn off_grid_addresses_follow_the_district_story() {
        let d = generate(7).unwrap();
        let areas = load_areas_geojson(&d.areas_geojson).unwrap();
        let (people, _) = load_people_csv(d.people_csv.as_bytes(), "86");
        let text: serde_json::Value = serde_json::from_str(&d.areas_geojson).unwrap();
        let off_grid: HashSet<String> = text["features"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["properties"]["off_grid"] == json!(true))
            .map(|f| f["properties"]["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(off_grid.len(), REMOTE_IN_VALLEY + REMOTE_ELSEWHERE);
        // Some of them are inside the flood valley, so its alert needs BeiDou.
        let dir = Directory::new(people.clone(), areas).unwrap();
        let valley: AreaSpec = serde_json::from_str(&d.valley_geojson).unwrap();
        let hit = dir.resolve(&[valley]).unwrap().areas;
        let in_valley = hit.iter().filter(|a| off_grid.contains(a.as_str())).count();
        assert!(in_valley >= 1, "{in_valley}");

        let has = |p: &Person, b: Bearer| p.addresses.iter().any(|a| a.serves(b));
        let is_lead = |p: &Person| matches!(p.role, Role::VillageHead | Role::GridLead);
        let village_of = |p: &Person| p.areas.first().map(|a| a.as_str().to_owned());
        let mut off_grid_leads = 0;
        for p in people.iter().filter(|p| is_lead(p)) {
            let remote = village_of(p).is_some_and(|v| off_grid.contains(&v));
            if remote {
                off_grid_leads += 1;
                assert!(!has(p, Bearer::Sms), "{} has a phone", p.id);
                assert!(has(p, Bearer::Beidou), "{} has no card", p.id);
            } else {
                assert!(has(p, Bearer::Sms), "{} has no phone", p.id);
            }
        }
        assert!(off_grid_leads >= 8, "{off_grid_leads}");
        // Everyone who is not an off-grid lead still has a phone.
        let phoneless = people.iter().filter(|p| !has(p, Bearer::Sms)).count();
        assert_eq!(phoneless, off_grid_leads);

        let heads: Vec<&Person> = people
            .iter()
            .filter(|p| p.role == Role::VillageHead)
            .filter(|p| !village_of(p).is_some_and(|v| off_grid.contains(&v)))
            .collect();
        let share =
            heads.iter().filter(|p| has(p, Bearer::Beidou)).count() as f64 / heads.len() as f64;
        assert!((0.2..=0.4).contains(&share), "{share}");

        let at_risk: HashSet<&str> = text["features"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["properties"]["at_risk"] == json!(true))
            .map(|f| f["properties"]["id"].as_str().unwrap())
            .collect();
        let risk_leads: Vec<&Person> = people
            .iter()
            .filter(|p| is_lead(p) && village_of(p).is_some_and(|v| at_risk.contains(v.as_str())))
            .collect();
        let share = risk_leads.iter().filter(|p| has(p, Bearer::Mesh)).count() as f64
            / risk_leads.len() as f64;
        assert!((0.3..=0.5).contains(&share), "{share}");
        assert!(
            people
                .iter()
                .filter(|p| has(p, Bearer::Mesh))
                .all(|p| is_lead(p) && village_of(p).is_some_and(|v| at_risk.contains(v.as_str())))
        );

        // Every card, node and IMEI belongs to one person only.
        let mut seen = HashSet::new();
        for a in people.iter().flat_map(|p| &p.addresses) {
            assert!(seen.insert(a.clone()), "{a} twice");
        }

        let crew: Vec<&Person> = people
            .iter()
            .filter(|p| p.role == Role::FieldCrew)
            .collect();
        assert_eq!(crew.len(), CREW);
        assert!(
            crew.iter()
                .all(|p| has(p, Bearer::Beidou) && has(p, Bearer::Sms))
        );
        let kits: Vec<&Address> = crew
            .iter()
            .flat_map(|p| &p.addresses)
            .filter(|a| a.serves(Bearer::Sbd))
            .collect();
        assert_eq!(kits.len(), 1);
        assert!(has(crew[0], Bearer::Sbd));
        assert_eq!(
            crew[1].supervisor.as_ref().map(|s| s.as_str()),
            Some("F01-1")
        );
        let Address::SbdImei(imei) = kits[0] else {
            unreachable!()
        };
        let (body, check) = imei.split_at(14);
        assert_eq!(luhn_check_digit(body).to_string(), check);
    }

    #[test]
    fn every_village_has_a_loudspeaker_on_its_towns_device_and_the_valley_sounds_them() {
        let d = generate(7).unwrap();
        let areas = load_areas_geojson(&d.areas_geojson).unwrap();
        let villages: Vec<&tocsin_core::NamedArea> = areas
            .iter()
            .filter(|a| a.kind == AreaKind::Village)
            .collect();
        let (speakers, rejected) = load_speakers_csv(d.speakers_csv.as_bytes());
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(speakers.len(), villages.len());
        let mut groups = HashSet::new();
        for (sp, v) in speakers.iter().zip(&villages) {
            let village = v.id.as_str();
            let town = village.split('-').next().unwrap();
            assert_eq!(sp.id.as_str(), format!("{village}-S"));
            assert_eq!(sp.device.as_str(), format!("speakers-{town}"));
            assert_eq!(sp.group, village);
            assert_eq!(sp.areas, vec![v.id.clone()]);
            assert!(sp.name.ends_with("村广播"), "{}", sp.name);
            // At the village centre, which lies inside the village.
            let at = sp.location.unwrap();
            let region = v.geometry.to_region_unnamed().unwrap();
            assert!(region.contains(at), "{} outside its village", sp.id);
            assert!(groups.insert((sp.device.clone(), sp.group.clone())));
        }
        let devices: HashSet<&str> = speakers.iter().map(|s| s.device.as_str()).collect();
        assert_eq!(devices.len(), 16);

        // The committed district, loaded as the daemon loads it.
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/district");
        let (dir, rejected) = tocsin_core::directory::load_from_dir(&committed).unwrap();
        assert!(rejected.is_empty(), "{rejected:?}");
        let valley: AreaSpec = serde_json::from_str(&d.valley_geojson).unwrap();
        let r = dir.resolve(&[valley]).unwrap();
        // Every village the alert touches is sounded by its own speaker, and no other.
        let touched: HashSet<String> = r
            .areas
            .iter()
            .filter(|a| dir.area(a).is_some_and(|a| a.kind == AreaKind::Village))
            .map(|a| a.as_str().to_owned())
            .collect();
        let sounded: HashSet<String> = r
            .speakers
            .iter()
            .map(|id| dir.speaker(id).unwrap().group.clone())
            .collect();
        assert_eq!(sounded, touched);
        assert!(
            (40..=80).contains(&r.speakers.len()),
            "{}",
            r.speakers.len()
        );
        let line = format!("valley alert: {} loudspeakers on ", r.speakers.len());
        assert!(
            d.summary.iter().any(|l| l.starts_with(&line)),
            "{:?}",
            d.summary
        );
    }

    #[test]
    fn app_subscribers_are_the_officials_a_third_of_the_leads_and_a_few_residents() {
        let d = generate(7).unwrap();
        let (people, _) = load_people_csv(d.people_csv.as_bytes(), "86");
        let apps = |p: &Person| {
            p.addresses
                .iter()
                .filter(|a| matches!(a, Address::App(_)))
                .count()
        };
        let share = |roles: &[Role]| {
            let group: Vec<&Person> = people.iter().filter(|p| roles.contains(&p.role)).collect();
            let with = group.iter().filter(|p| apps(p) == 1).count();
            (with, group.len())
        };
        assert!(people.iter().all(|p| apps(p) <= 1));
        let (with, of) = share(&[Role::DistrictOfficial, Role::TownOfficial]);
        assert_eq!((with, of), (36, 36));
        // Leads with a phone: about a third. Off-grid leads (no phone) have no mobile data.
        let leads: Vec<&Person> = people
            .iter()
            .filter(|p| {
                matches!(
                    p.role,
                    Role::VillageHead | Role::GridLead | Role::HazardWarden | Role::ReservoirWarden
                )
            })
            .collect();
        assert!(
            leads
                .iter()
                .filter(|p| !p.addresses.iter().any(|a| a.serves(Bearer::Sms)))
                .all(|p| apps(p) == 0)
        );
        let with = leads.iter().filter(|p| apps(p) == 1).count() as f64;
        let share_leads = with / leads.len() as f64;
        assert!((0.25..=0.42).contains(&share_leads), "{share_leads}");
        let (with, of) = share(&[Role::Resident]);
        assert!(
            with > 10 && (with as f64) < 0.1 * of as f64,
            "{with} of {of}"
        );
        assert_eq!(share(&[Role::FieldCrew]).0, 0);
        // Ids are unique and in the synthetic range.
        let mut seen = HashSet::new();
        for a in people.iter().flat_map(|p| &p.addresses) {
            if let Address::App(id) = a {
                assert!(id.starts_with("syn-app-"), "{id}");
                assert!(seen.insert(id.clone()), "{id} twice");
            }
        }
        // The valley alert reaches some app users among its responsible persons.
        assert!(
            d.summary
                .iter()
                .any(|l| l.starts_with("  responsible reachable by:") && !l.ends_with("app 0")),
            "{:?}",
            d.summary
        );
    }

    #[test]
    fn luhn_check_digit_matches_known_imeis() {
        // The worked example of the IMEI check digit (3GPP TS 23.003 Annex B style).
        assert_eq!(luhn_check_digit("49015420323751"), 8);
        assert_eq!(luhn_check_digit("35209900176148"), 1);
    }
}
