//! `tocsin-bench geofence`: how fast an alert area resolves over a district-sized set
//! of endpoints. Figures are printed one per line as `name value unit`; the names are
//! listed in docs/benchmarks.md and must stay stable.

use crate::district;
use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tocsin_core::area::{AreaSpec, Region};
use tocsin_core::directory::load_areas_geojson;
use tocsin_core::{AreaKind, GeoIndex};

/// Options of the geofence benchmark.
#[derive(Debug, clap::Args)]
pub struct GeofenceArgs {
    /// Number of synthetic endpoints (ignored with --endpoints-csv).
    #[arg(long, default_value_t = 1_000_000)]
    pub points: usize,
    /// Timed repetitions per figure.
    #[arg(long, default_value_t = 30)]
    pub runs: usize,
    /// Seed for the synthetic endpoints and polygons.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Endpoints from a file instead: `lon,lat` per line (a non-numeric first line is
    /// taken as a header). Endpoint ids are line order from 0.
    #[arg(long)]
    pub endpoints_csv: Option<PathBuf>,
    /// Village polygons from a GeoJSON FeatureCollection instead (features of kind
    /// `village`, or every Polygon feature if none has a kind).
    #[arg(long)]
    pub areas_geojson: Option<PathBuf>,
    /// Write the alert polygon's matching endpoint ids here, one per line, sorted.
    #[arg(long)]
    pub write_matches: Option<PathBuf>,
    /// Write the 200-vertex alert polygon here as a GeoJSON Polygon.
    #[arg(long)]
    pub write_alert: Option<PathBuf>,
}

/// Wall-clock timing is what a benchmark measures.
#[allow(
    clippy::disallowed_methods,
    reason = "a benchmark binary reads the wall clock"
)]
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median and 99th percentile (nearest rank) in milliseconds.
fn stats(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    let n = samples.len();
    let median = if n % 2 == 1 {
        ms(samples[n / 2])
    } else {
        (ms(samples[n / 2 - 1]) + ms(samples[n / 2])) / 2.0
    };
    let rank = ((0.99 * n as f64).ceil() as usize).clamp(1, n);
    (median, ms(samples[rank - 1]))
}

/// One measured figure: `name value unit`.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// Stable name, e.g. `geofence.polygon200.points1m.median`.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Unit: `ms` or `count`.
    pub unit: &'static str,
}

impl std::fmt::Display for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.name,
            format_value(self.value),
            self.unit
        )
    }
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Endpoints: 70% clustered around village centres (people live in villages), 30%
/// spread over the district (roads, fields, hamlets).
fn synthetic_points(rng: &mut ChaCha8Rng, n: usize, centres: &[[f64; 2]]) -> Vec<[f64; 2]> {
    (0..n)
        .map(|_| {
            if rng.random_bool(0.7) && !centres.is_empty() {
                let c = centres[rng.random_range(0..centres.len())];
                // A rough Gaussian from the sum of uniforms; sigma about 400 m.
                let g = |rng: &mut ChaCha8Rng| {
                    (0..4).map(|_| rng.random_range(-1.0..1.0)).sum::<f64>() * 0.5
                };
                [c[0] + g(rng) * 0.0047, c[1] + g(rng) * 0.0036]
            } else {
                [rng.random_range(115.9..117.0), rng.random_range(40.3..40.9)]
            }
        })
        .collect()
}

/// The 200-vertex alert polygon: a lobed, noisy ring over the middle of the district.
fn alert_polygon(rng: &mut ChaCha8Rng) -> AreaSpec {
    let (cx, cy) = (116.45, 40.6);
    let n = 200;
    let phase = rng.random_range(0.0..std::f64::consts::TAU);
    let mut ring: Vec<[f64; 2]> = (0..n)
        .map(|k| {
            let t = std::f64::consts::TAU * k as f64 / n as f64;
            let r = 1.0 + 0.25 * (3.0 * t + phase).sin() + rng.random_range(-0.08..0.08);
            [cx + 0.24 * r * t.cos(), cy + 0.14 * r * t.sin()]
        })
        .collect();
    ring.push(ring[0]);
    AreaSpec::Polygon {
        coordinates: vec![ring],
    }
}

fn read_endpoints(path: &PathBuf) -> Result<Vec<[f64; 2]>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split(',').map(str::trim);
        let parsed = match (parts.next(), parts.next()) {
            (Some(a), Some(b)) => a.parse::<f64>().ok().zip(b.parse::<f64>().ok()),
            _ => None,
        };
        match parsed {
            Some((lon, lat)) => out.push([lon, lat]),
            None if i == 0 => continue,
            None => bail!("{}: line {}: expected lon,lat", path.display(), i + 1),
        }
    }
    Ok(out)
}

fn read_villages(path: &PathBuf) -> Result<Vec<AreaSpec>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let areas = load_areas_geojson(&text)?;
    let villages: Vec<AreaSpec> = areas
        .iter()
        .filter(|a| a.kind == AreaKind::Village)
        .map(|a| a.geometry.clone())
        .collect();
    if villages.is_empty() {
        bail!("{}: no village features", path.display());
    }
    Ok(villages)
}

/// Runs the benchmark, printing each figure as soon as it is measured; returns them.
pub fn run(args: &GeofenceArgs) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let mut figure = |name: &str, value: f64, unit: &'static str| {
        let f = Figure {
            name: name.to_owned(),
            value,
            unit,
        };
        println!("{f}");
        figures.push(f);
    };
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let runs = args.runs.max(1);
    let generated = district::generate(args.seed)?;
    let villages: Vec<AreaSpec> = match &args.areas_geojson {
        Some(path) => read_villages(path)?,
        None => generated.village_specs.iter().take(300).cloned().collect(),
    };
    let village_regions: Vec<Region> = villages
        .iter()
        .map(AreaSpec::to_region_unnamed)
        .collect::<Result<_, _>>()?;
    let points = match &args.endpoints_csv {
        Some(path) => read_endpoints(path)?,
        None => {
            let centres: Vec<[f64; 2]> = village_regions
                .iter()
                .map(|r| {
                    let (lo, hi) = (r.bbox.min(), r.bbox.max());
                    [(lo.x + hi.x) / 2.0, (lo.y + hi.y) / 2.0]
                })
                .collect();
            synthetic_points(&mut rng, args.points, &centres)
        }
    };
    let alert = alert_polygon(&mut rng);
    let alert_region = alert.to_region_unnamed()?;
    let label = points_label(points.len());
    let nv = village_regions.len();

    figure(
        &format!("geofence.input.points{label}"),
        points.len() as f64,
        "count",
    );
    figure(&format!("geofence.input.villages{nv}"), nv as f64, "count");

    let entries: Vec<(u32, [f64; 2])> = points
        .iter()
        .enumerate()
        .map(|(i, p)| (u32::try_from(i).unwrap_or(u32::MAX), *p))
        .collect();
    let area_entries: Vec<(u32, Region)> = village_regions
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, r)| (i as u32, r))
        .collect();
    let (index, build) = timed(|| GeoIndex::new(entries.clone(), area_entries.clone()));
    figure(&format!("geofence.build.points{label}"), ms(build), "ms");

    // One 200-vertex alert polygon over every endpoint.
    let mut samples = Vec::with_capacity(runs);
    let mut matches = Vec::new();
    for _ in 0..runs {
        let (m, d) = timed(|| index.points_in(&alert_region));
        samples.push(d);
        matches = m;
    }
    let (median, p99) = stats(samples);
    figure(
        &format!("geofence.polygon200.points{label}.median"),
        median,
        "ms",
    );
    figure(&format!("geofence.polygon200.points{label}.p99"), p99, "ms");
    figure(
        &format!("geofence.polygon200.points{label}.matches"),
        matches.len() as f64,
        "count",
    );

    // The same answer by brute force (geo's Intersects on every point), fewer runs.
    let brute_runs = runs.min(3);
    let mut samples = Vec::new();
    let mut brute = Vec::new();
    for _ in 0..brute_runs {
        let (b, d) = timed(|| {
            points
                .iter()
                .enumerate()
                .filter(|(_, p)| alert_region.contains(**p))
                .map(|(i, _)| i as u32)
                .collect::<Vec<u32>>()
        });
        samples.push(d);
        brute = b;
    }
    let (median, _) = stats(samples);
    figure(
        &format!("geofence.polygon200.points{label}.bruteforce_median"),
        median,
        "ms",
    );
    let mismatches = brute.len().abs_diff(matches.len())
        + brute.iter().zip(&matches).filter(|(a, b)| a != b).count();
    figure(
        &format!("geofence.polygon200.points{label}.mismatches"),
        mismatches as f64,
        "count",
    );

    // Each village polygon over every endpoint, all villages per run.
    let mut samples = Vec::with_capacity(runs);
    let mut total = 0;
    for _ in 0..runs {
        let (t, d) = timed(|| {
            village_regions
                .iter()
                .map(|r| index.points_in(r).len())
                .sum::<usize>()
        });
        samples.push(d);
        total = t;
    }
    let (median, p99) = stats(samples);
    figure(
        &format!("geofence.villages{nv}.points{label}.median"),
        median,
        "ms",
    );
    figure(
        &format!("geofence.villages{nv}.points{label}.p99"),
        p99,
        "ms",
    );
    figure(
        &format!("geofence.villages{nv}.points{label}.matches"),
        total as f64,
        "count",
    );

    // Which villages the alert polygon overlaps.
    let mut samples = Vec::with_capacity(runs);
    let mut hit = 0;
    for _ in 0..runs {
        let (h, d) = timed(|| index.areas_intersecting(&alert_region).len());
        samples.push(d);
        hit = h;
    }
    let (median, p99) = stats(samples);
    figure(
        &format!("geofence.polygon200.villages{nv}.median"),
        median,
        "ms",
    );
    figure(&format!("geofence.polygon200.villages{nv}.p99"), p99, "ms");
    figure(
        &format!("geofence.polygon200.villages{nv}.matches"),
        hit as f64,
        "count",
    );

    // A 5 km CAP circle.
    let circle = Region::circle([116.45, 40.6], 5_000.0);
    let mut samples = Vec::with_capacity(runs);
    let mut n = 0;
    for _ in 0..runs {
        let (c, d) = timed(|| index.points_in(&circle).len());
        samples.push(d);
        n = c;
    }
    let (median, p99) = stats(samples);
    figure(
        &format!("geofence.circle5km.points{label}.median"),
        median,
        "ms",
    );
    figure(&format!("geofence.circle5km.points{label}.p99"), p99, "ms");
    figure(
        &format!("geofence.circle5km.points{label}.matches"),
        n as f64,
        "count",
    );

    if let Some(path) = &args.write_matches {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for m in &matches {
            writeln!(f, "{m}")?;
        }
        f.flush()?;
    }
    if let Some(path) = &args.write_alert {
        std::fs::write(path, serde_json::to_string(&alert)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(figures)
}

/// "1m" for 1,000,000, "20k" for 20,000, else the number.
fn points_label(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}m", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_median_and_nearest_rank_p99() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(stats(s), (50.5, 99.0));
        assert_eq!(stats(vec![Duration::from_millis(3)]), (3.0, 3.0));
        assert_eq!(points_label(1_000_000), "1m");
        assert_eq!(points_label(20_000), "20k");
        assert_eq!(points_label(1234), "1234");
        assert_eq!(format_value(7.25), "7.250");
        assert_eq!(format_value(12.0), "12");
    }

    #[test]
    fn small_run_matches_brute_force() {
        let args = GeofenceArgs {
            points: 20_000,
            runs: 1,
            seed: 3,
            endpoints_csv: None,
            areas_geojson: None,
            write_matches: None,
            write_alert: None,
        };
        let figures = run(&args).unwrap();
        let get = |name: &str| figures.iter().find(|f| f.name == name).map(|f| f.value);
        assert_eq!(get("geofence.polygon200.points20k.mismatches"), Some(0.0));
        let matches = get("geofence.polygon200.points20k.matches").unwrap();
        assert!(matches > 1000.0, "{matches}");
        assert!(get("geofence.polygon200.villages300.matches").unwrap() > 10.0);
        assert!(get("geofence.circle5km.points20k.matches").unwrap() > 0.0);
        // The alert polygon has 200 vertices plus the closing one.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let AreaSpec::Polygon { coordinates } = alert_polygon(&mut rng) else {
            panic!()
        };
        assert_eq!(coordinates[0].len(), 201);
    }
}
