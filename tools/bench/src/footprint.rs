//! `tocsin-bench footprint`: how much memory `tocsind` holds and how long it takes to
//! start with a district's directory loaded.
//!
//! The synthetic demo district (`gen-district`: 16 towns, 310 villages, hazard points and
//! reservoirs, about 2,000 people) is scaled up with synthetic residents placed around the
//! district's people, each with a phone number, to the wanted number of endpoints. The
//! built `tocsind` binary is started on that directory with a fresh data folder; the time
//! to ready is measured from spawning the process until it prints `serving on`, then its
//! resident memory (`VmRSS`) and peak (`VmHWM`) are read from `/proc/<pid>/status`.

use crate::district;
use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Options of the footprint benchmark.
#[derive(Debug, clap::Args)]
pub struct FootprintArgs {
    /// Endpoints (people with a phone) in the directory, one case per value.
    #[arg(long, value_delimiter = ',', default_value = "1000000,5000")]
    pub people: Vec<usize>,
    /// Starts per case; figures are medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// The `tocsind` binary (default: next to this benchmark's binary; build it with
    /// `cargo build --release -p tocsind`).
    #[arg(long)]
    pub tocsind: Option<PathBuf>,
    /// Leave the generated directories and configs in the temp folder (their paths go to
    /// stderr), e.g. to profile the loader.
    #[arg(long)]
    pub keep: bool,
}

/// Longest wait for `serving on`.
const READY_PATIENCE: Duration = Duration::from_secs(120);

/// What one start measured.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Spawn to `serving on`.
    ready: Duration,
    /// Resident memory once ready, in KiB.
    rss_kib: u64,
    /// Peak resident memory up to then, in KiB.
    hwm_kib: u64,
}

/// Runs every case and prints the figures.
pub fn run(args: &FootprintArgs) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be positive");
    }
    let tocsind = tocsind_path(args.tocsind.as_deref())?;
    let mut per_case: Vec<(usize, u64)> = Vec::new();
    for &people in &args.people {
        let dir = crate::sms::scratch_dir(&format!("footprint-{people}"))?;
        let generated = write_directory(&dir.join("district"), people, args.seed)?;
        let config = write_config(&dir)?;
        let mut samples = Vec::new();
        for _ in 0..args.runs {
            let _ = std::fs::remove_dir_all(dir.join("var"));
            samples.push(measure(&tocsind, &config)?);
        }
        if args.keep {
            eprintln!("kept {}", dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let name = format!("footprint.{}", people_label(people));
        let ready = median(
            samples
                .iter()
                .map(|s| s.ready.as_secs_f64() * 1e3)
                .collect(),
        );
        let rss = median(samples.iter().map(|s| s.rss_kib as f64).collect());
        let hwm = median(samples.iter().map(|s| s.hwm_kib as f64).collect());
        println!("{name}.endpoints {} count", generated.people);
        println!("{name}.areas {} count", generated.areas);
        println!(
            "{name}.people_csv {:.1} MB",
            generated.csv_bytes as f64 / 1e6
        );
        println!("{name}.ready {ready:.0} ms");
        println!("{name}.rss {:.1} MB", kib_to_mb(rss));
        println!("{name}.hwm {:.1} MB", kib_to_mb(hwm));
        per_case.push((generated.people, rss as u64));
    }
    // The memory one more endpoint costs, from the two extreme cases.
    if let (Some(small), Some(large)) = (
        per_case.iter().min_by_key(|c| c.0),
        per_case.iter().max_by_key(|c| c.0),
    ) && large.0 > small.0
    {
        let bytes = (large.1.saturating_sub(small.1)) as f64 * 1024.0 / (large.0 - small.0) as f64;
        println!("footprint.bytes_per_endpoint {bytes:.0} bytes");
    }
    Ok(())
}

fn kib_to_mb(kib: f64) -> f64 {
    kib * 1024.0 / 1e6
}

/// `1m`, `5k`, or the plain number.
pub fn people_label(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("people{}m", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("people{}k", n / 1_000)
    } else {
        format!("people{n}")
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v.get(n / 2).copied().unwrap_or(0.0),
        _ => {
            (v.get(n / 2 - 1).copied().unwrap_or(0.0) + v.get(n / 2).copied().unwrap_or(0.0)) / 2.0
        }
    }
}

/// The `tocsind` binary: the given path, or the one built next to this benchmark.
pub fn tocsind_path(given: Option<&Path>) -> Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_owned(),
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("tocsind"),
    };
    if !path.is_file() {
        bail!(
            "no tocsind binary at {}: build it with `cargo build --release -p tocsind` or pass --tocsind",
            path.display()
        );
    }
    Ok(path)
}

/// What [`write_directory`] wrote.
pub struct Generated {
    /// People in `people.csv`.
    pub people: usize,
    /// Named areas in `areas.geojson`.
    pub areas: usize,
    /// Size of `people.csv`.
    pub csv_bytes: usize,
}

/// A located person of the base district, for placing residents near them.
struct Anchor {
    lon: f64,
    lat: f64,
    town: String,
}

/// Writes `areas.geojson` and `people.csv` to `dir`: the synthetic demo district with
/// synthetic residents added until it holds `people` people (never fewer than the
/// district's own). Residents cluster around the district's people (σ ≈ 400 m), a third
/// of them spread wider (σ ≈ 3 km), all inside the district's box.
pub fn write_directory(dir: &Path, people: usize, seed: u64) -> Result<Generated> {
    let d = district::generate(seed)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("areas.geojson"), &d.areas_geojson)?;
    let areas = d.areas_geojson.matches("\"type\":\"Feature\"").count();

    let mut lines = d.people_csv.lines();
    let header = lines
        .next()
        .context("the generated people.csv has no header")?;
    let cols: Vec<&str> = header.split(',').collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(c_lon), Some(c_lat), Some(c_town)) = (col("lon"), col("lat"), col("town")) else {
        bail!("the generated people.csv lacks lon, lat or town");
    };
    let mut anchors = Vec::new();
    let mut count = 0usize;
    for line in lines {
        count += 1;
        let f: Vec<&str> = line.split(',').collect();
        let get = |i: usize| f.get(i).copied().unwrap_or("");
        if let (Ok(lon), Ok(lat)) = (get(c_lon).parse::<f64>(), get(c_lat).parse::<f64>()) {
            anchors.push(Anchor {
                lon,
                lat,
                town: get(c_town).to_owned(),
            });
        }
    }
    if anchors.is_empty() {
        bail!("the generated district has no located people");
    }

    let mut csv = String::with_capacity(d.people_csv.len() + people.saturating_sub(count) * 90);
    csv.push_str(&d.people_csv);
    if !csv.ends_with('\n') {
        csv.push('\n');
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xf00d);
    const SURNAMES: [&str; 12] = [
        "王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "孙", "马",
    ];
    const GIVEN: [&str; 12] = [
        "伟", "芳", "秀英", "强", "建国", "玉兰", "海燕", "明", "春生", "桂英", "磊", "静",
    ];
    let extra = people.saturating_sub(count);
    for i in 0..extra {
        let a = anchors
            .get(rng.random_range(0..anchors.len()))
            .context("no anchor")?;
        let sigma_m = if i % 3 == 0 { 3_000.0 } else { 400.0 };
        let (dx, dy) = (gauss(&mut rng) * sigma_m, gauss(&mut rng) * sigma_m);
        let lat = (a.lat + dy / 111_195.0).clamp(40.3001, 40.8999);
        let lon = (a.lon + dx / (111_195.0 * a.lat.to_radians().cos())).clamp(115.9001, 116.9999);
        let id = format!("X{i:07}");
        let phone = format!("+86188{i:08}");
        let name = format!(
            "{}{}",
            SURNAMES[rng.random_range(0..SURNAMES.len())],
            GIVEN[rng.random_range(0..GIVEN.len())]
        );
        let mut row = vec![""; cols.len()];
        let lon_s = format!("{lon:.6}");
        let lat_s = format!("{lat:.6}");
        for (slot, name_of) in row.iter_mut().zip(&cols) {
            *slot = match *name_of {
                "id" => id.as_str(),
                "name" => name.as_str(),
                "role" => "resident",
                "lon" => lon_s.as_str(),
                "lat" => lat_s.as_str(),
                "town" => a.town.as_str(),
                "phones" => phone.as_str(),
                _ => "",
            };
        }
        let _ = writeln!(csv, "{}", row.join(","));
    }
    std::fs::write(dir.join("people.csv"), &csv)?;
    Ok(Generated {
        people: count + extra,
        areas,
        csv_bytes: csv.len(),
    })
}

/// A standard normal sample (Box–Muller).
fn gauss(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A config with no devices, a fresh data folder and a loopback API on any free port.
fn write_config(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("tocsind.toml");
    let text = "\
[node]
name = \"footprint\"
data_dir = \"var\"
durability = \"full\"

[directory]
path = \"district\"

[ack]
key = \"bench-footprint-secret-0123456789\"

[api]
listen = \"127.0.0.1:0\"

[[api.tokens]]
name = \"bench\"
token = \"bench-footprint-token-0123456789\"
role = \"issuer\"
";
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Wall-clock time is what a benchmark measures.
#[allow(
    clippy::disallowed_methods,
    reason = "a benchmark binary reads the wall clock"
)]
fn now() -> Instant {
    Instant::now()
}

/// A started daemon, killed when dropped.
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// Where its API listens, from its `serving on` line.
    pub addr: String,
    /// Spawn to `serving on`.
    pub ready: Duration,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tocsind --config CONFIG` and waits for `serving on`. Its stderr keeps being
/// drained (and dropped) by a thread so it can never block on a full pipe.
pub fn start_daemon(tocsind: &Path, config: &Path) -> Result<Daemon> {
    let started = now();
    let mut child = Command::new(tocsind)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", tocsind.display()))?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(t) = &tx
                && t.send(line).is_err()
            {
                tx = None;
            }
        }
    });
    let mut daemon = Daemon {
        child,
        addr: String::new(),
        ready: Duration::ZERO,
    };
    let mut seen = Vec::new();
    loop {
        let left = READY_PATIENCE.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.split("serving on http://").nth(1) {
                    daemon.ready = started.elapsed();
                    daemon.addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    return Ok(daemon);
                }
                seen.push(line);
            }
            Err(_) => {
                bail!(
                    "tocsind did not say `serving on` within {READY_PATIENCE:?}; it said:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
pub fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    Ok(parse_status(&status))
}

fn parse_status(status: &str) -> (u64, u64) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn measure(tocsind: &Path, config: &Path) -> Result<Sample> {
    let daemon = start_daemon(tocsind, config)?;
    // What it holds once ready, and again a moment later (allocations settle).
    let (_, _) = memory_kib(daemon.child.id())?;
    std::thread::sleep(Duration::from_millis(500));
    let (rss_kib, hwm_kib) = memory_kib(daemon.child.id())?;
    Ok(Sample {
        ready: daemon.ready,
        rss_kib,
        hwm_kib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(people_label(1_000_000), "people1m");
        assert_eq!(people_label(5_000), "people5k");
        assert_eq!(people_label(1_234), "people1234");
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let s = "Name:\ttocsind\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        assert_eq!(parse_status(s), (102_400, 204_800));
        assert_eq!(parse_status("garbage"), (0, 0));
    }

    #[test]
    fn scaled_directory_loads_with_every_person_and_phone() {
        let dir = crate::sms::scratch_dir("footprint-test").unwrap();
        let g = write_directory(&dir, 5_000, 7).unwrap();
        assert_eq!(g.people, 5_000);
        assert!(g.areas >= 300, "{}", g.areas);
        let (d, rejected) = tocsin_core::directory::load_from_dir_with(&dir, "86").unwrap();
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(d.people().len(), 5_000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
