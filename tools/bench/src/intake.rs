//! `tocsin-bench intake`: durable alerts and acks per second through the real daemon.
//!
//! The built `tocsind` binary runs with its store in its durable mode (`synchronous=FULL`:
//! nothing is answered before its commit is fsynced) on a generated directory: the
//! synthetic demo district plus benchmark people placed outside every named area, so an
//! alert's circle reaches exactly the people meant (1, 100, or the ack-storm crowd). Its
//! modems are GSM simulators on pseudo-terminals run by this process (real time, 0 ms
//! network latency), so replies reach the daemon through its real modem drivers.
//!
//! 1. **Alerts**: many keep-alive connections post exercise alerts as fast as answers come
//!    back, for a bounded time; each latency is from sending the request to reading the
//!    `202` (which the daemon gives only after the commit).
//! 2. **Acks**: one yellow exercise alert to the crowd; the codes are read from
//!    `GET /v1/alerts/{id}/deliveries`; then every person's reply `1 CODE` is injected into
//!    the simulators as fast as they take them, spread over the modems. An ack counts when
//!    its `reply` record with an `ack` verdict arrives on `/v1/events` (published only
//!    after the commit); its latency runs from the injection to that moment.
//! 3. **Paced acks**: a second alert to the crowd, whose replies are offered at a fixed
//!    rate (`--ack-rate`, open loop): reply `i` is due at `start + i / rate`, and its
//!    latency runs from that due time, so a reply held back because its modem's storage
//!    window was full counts its wait too.

use crate::footprint::{Daemon, start_daemon, tocsind_path};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tocsin_at_modem::pty::{SimCommand, SimHandle, spawn_sim};
use tocsin_at_modem::sim::{ReplyBehaviour, SimConfig};
use tokio_util::sync::CancellationToken;

/// Options of the intake benchmark.
#[derive(Debug, clap::Args)]
pub struct IntakeArgs {
    /// Concurrent keep-alive HTTP connections posting alerts.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds of posting per alert phase.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// People in the ack storm (one reply each).
    #[arg(long, default_value_t = 10_000)]
    pub acks: usize,
    /// Simulated modems the replies arrive through.
    #[arg(long, default_value_t = 8)]
    pub modems: usize,
    /// Replies per second offered in the paced storm (a second alert to the crowd); 0
    /// skips it. The first storm is always injected as fast as the modems take replies.
    #[arg(long, default_value_t = 12_500.0)]
    pub ack_rate: f64,
    /// Runs; figures are medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The `tocsind` binary (default: next to this benchmark's binary; build it with
    /// `cargo build --release -p tocsind`).
    #[arg(long)]
    pub tocsind: Option<PathBuf>,
}

const TOKEN: &str = "bench-intake-issuer-token-0123456789";
/// Where the single-recipient people stand: a row outside the district, 0.01° apart.
const SINGLE_AT: [f64; 2] = [117.3, 41.2];
/// How many single-recipient people the alerts rotate over.
const SINGLES: usize = 100;
/// Where the 100 people of the 100-recipient alerts stand (all at one spot).
const HUNDRED_AT: [f64; 2] = [117.5, 41.5];
/// Where the ack-storm crowd stands.
const CROWD_AT: [f64; 2] = [117.7, 41.7];
/// Replies outstanding per modem: well below its 255 storage slots, because a slot is
/// freed only when the driver deletes the message after the commit, which under a storm
/// lags the ack by up to a hundred messages (with 192 the simulated storage overflowed).
const STORAGE_WINDOW: usize = 100;
/// Longest wait for anything the daemon owes us.
const PATIENCE: Duration = Duration::from_secs(120);

/// Figures of one run.
#[derive(Default, Clone, Debug)]
struct RunFigures {
    values: Vec<(String, f64, &'static str)>,
}

impl RunFigures {
    fn push(&mut self, name: &str, value: f64, unit: &'static str) {
        self.values.push((name.to_owned(), value, unit));
    }
}

/// Runs the benchmark and prints the figures (medians over the runs).
pub fn run(args: &IntakeArgs) -> Result<()> {
    if args.runs == 0 || args.connections == 0 || args.modems == 0 || args.acks == 0 {
        bail!("--runs, --connections, --modems and --acks must be positive");
    }
    let tocsind = tocsind_path(args.tocsind.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut runs = Vec::new();
    for run in 0..args.runs {
        let dir = crate::sms::scratch_dir(&format!("intake-{run}"))?;
        let result = runtime.block_on(one_run(args, &tocsind, &dir));
        let _ = std::fs::remove_dir_all(&dir);
        runs.push(result?);
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    let Some(first) = runs.first() else {
        return Ok(());
    };
    for (i, (name, _, unit)) in first.values.iter().enumerate() {
        let mut v: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.values.get(i).map(|x| x.1))
            .collect();
        v.sort_by(f64::total_cmp);
        let median = v.get(v.len() / 2).copied().unwrap_or(0.0);
        println!("{name} {} {unit}", format_value(median));
    }
    Ok(())
}

fn format_value(v: f64) -> String {
    if (v.fract() == 0.0 && v.abs() < 1e15) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Wall-clock time is what a benchmark measures.
#[allow(
    clippy::disallowed_methods,
    reason = "a benchmark binary reads the wall clock"
)]
fn now() -> Instant {
    Instant::now()
}

/// The directory: the demo district, the single-recipient row, the 100 and the crowd.
fn write_directory(dir: &Path, crowd: usize) -> Result<()> {
    crate::footprint::write_directory(dir, 0, 7)?;
    let path = dir.join("people.csv");
    let mut csv = std::fs::read_to_string(&path)?;
    let header = csv.lines().next().unwrap_or("").to_owned();
    let cols: Vec<&str> = header.split(',').collect();
    let row = |csv: &mut String, id: &str, at: [f64; 2], phone: &str| {
        let lon = format!("{:.6}", at[0]);
        let lat = format!("{:.6}", at[1]);
        let fields: Vec<&str> = cols
            .iter()
            .map(|c| match *c {
                "id" => id,
                "name" => "基准",
                "role" => "resident",
                "lon" => lon.as_str(),
                "lat" => lat.as_str(),
                "town" => "基准镇",
                "phones" => phone,
                _ => "",
            })
            .collect();
        let _ = writeln!(csv, "{}", fields.join(","));
    };
    for i in 0..SINGLES {
        let at = [SINGLE_AT[0] + 0.01 * i as f64, SINGLE_AT[1]];
        row(&mut csv, &format!("S{i:04}"), at, &format!("+86177{i:08}"));
    }
    for i in 0..100 {
        row(
            &mut csv,
            &format!("H{i:04}"),
            HUNDRED_AT,
            &format!("+86176{i:08}"),
        );
    }
    for i in 0..crowd {
        row(&mut csv, &format!("C{i:06}"), CROWD_AT, &crowd_phone(i));
    }
    std::fs::write(&path, csv)?;
    Ok(())
}

/// The number in a crowd person's id (`C000123` → 123).
fn person_number(person: &str) -> usize {
    person.get(1..).and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn crowd_phone(i: usize) -> String {
    format!("+86175{i:08}")
}

fn write_config(dir: &Path, modems: &[String]) -> Result<PathBuf> {
    let mut text = format!(
        "[node]\nname = \"intake-bench\"\ndata_dir = \"var\"\ndurability = \"full\"\n\n\
         [directory]\npath = \"district\"\n\n[ack]\nkey = \"bench-intake-secret-0123456789\"\n\n\
         [api]\nlisten = \"127.0.0.1:0\"\n\n[[api.tokens]]\nname = \"bench\"\ntoken = \"{TOKEN}\"\nrole = \"issuer\"\n"
    );
    for (i, path) in modems.iter().enumerate() {
        let _ = write!(
            text,
            "\n[devices.modem{i}]\ntype = \"at_modem\"\npath = \"{path}\"\nper_minute = 8\n"
        );
    }
    let path = dir.join("tocsind.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Median time of one `fsync` of a small append in `dir`: the physical floor under every
/// durable commit on this disk.
fn fsync_ms(dir: &Path) -> Result<f64> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let mut samples = Vec::new();
    for i in 0..50u32 {
        f.write_all(&i.to_le_bytes())?;
        let t = now();
        f.sync_all()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(percentile(&samples, 0.5))
}

async fn one_run(args: &IntakeArgs, tocsind: &Path, dir: &Path) -> Result<RunFigures> {
    let fsync = fsync_ms(dir)?;
    write_directory(&dir.join("district"), args.acks)?;
    let cancel = CancellationToken::new();
    let mut sims = Vec::new();
    let mut paths = Vec::new();
    for m in 0..args.modems {
        let link = dir.join(format!("modem{m}"));
        let cfg = SimConfig {
            per_message_latency_ms: 0,
            status_report_delay_ms: 1_000,
            default_script: ReplyBehaviour::Never,
            ..SimConfig::default()
        };
        sims.push(spawn_sim(
            link.clone(),
            cfg,
            m as u64 + 1,
            1.0,
            cancel.child_token(),
        )?);
        paths.push(link.to_str().context("temp path is not UTF-8")?.to_owned());
    }
    let config = write_config(dir, &paths)?;
    let daemon = tokio::task::block_in_place(|| start_daemon(tocsind, &config))?;
    let result = measure(args, &daemon, &sims).await;
    drop(daemon);
    cancel.cancel();
    let mut figures = result?;
    figures.push("intake.fsync.p50", fsync, "ms");
    Ok(figures)
}

async fn measure(args: &IntakeArgs, daemon: &Daemon, sims: &[SimHandle]) -> Result<RunFigures> {
    let base = format!("http://{}", daemon.addr);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut figures = RunFigures::default();

    // Wait for every modem to be up, so the storm does not race the drivers' start.
    let deadline = now() + PATIENCE;
    loop {
        let v: Value = client
            .get(format!("{base}/v1/devices"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .context("GET /v1/devices")?
            .json()
            .await
            .context("GET /v1/devices body")?;
        let up = v
            .as_array()
            .map(|a| a.iter().filter(|d| d["up"] == true).count())
            .unwrap_or(0);
        if up >= sims.len() {
            break;
        }
        if now() > deadline {
            bail!("only {up} of {} modems came up", sims.len());
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            now() + Duration::from_millis(50),
        ))
        .await;
    }

    for (label, recipients) in [("alert1", 1usize), ("alert100", 100)] {
        let (rate, lat, errors) = post_alerts(args, &client, &base, recipients)
            .await
            .with_context(|| format!("posting {label}"))?;
        figures.push(&format!("intake.{label}.rate"), rate, "alerts/s");
        figures.push(&format!("intake.{label}.p50"), percentile(&lat, 0.50), "ms");
        figures.push(&format!("intake.{label}.p99"), percentile(&lat, 0.99), "ms");
        figures.push(
            &format!("intake.{label}.accepted"),
            lat.len() as f64,
            "count",
        );
        figures.push(&format!("intake.{label}.errors"), errors as f64, "count");
    }

    let (rate, lat, counted) = ack_storm(args, &client, &base, sims, None)
        .await
        .context("the ack storm")?;
    figures.push("intake.ack.rate", rate, "acks/s");
    figures.push("intake.ack.p50", percentile(&lat, 0.50), "ms");
    figures.push("intake.ack.p99", percentile(&lat, 0.99), "ms");
    figures.push("intake.ack.counted", counted as f64, "count");
    if args.ack_rate > 0.0 {
        let (rate, lat, counted) = ack_storm(args, &client, &base, sims, Some(args.ack_rate))
            .await
            .context("the paced ack storm")?;
        figures.push("intake.ack_paced.offered", args.ack_rate, "acks/s");
        figures.push("intake.ack_paced.rate", rate, "acks/s");
        figures.push("intake.ack_paced.p50", percentile(&lat, 0.50), "ms");
        figures.push("intake.ack_paced.p99", percentile(&lat, 0.99), "ms");
        figures.push("intake.ack_paced.counted", counted as f64, "count");
    }
    Ok(figures)
}

fn alert_body(recipients: usize, n: usize) -> Value {
    let center = if recipients == 1 {
        [SINGLE_AT[0] + 0.01 * (n % SINGLES) as f64, SINGLE_AT[1]]
    } else {
        HUNDRED_AT
    };
    json!({
        "grade": "blue",
        "kind": "flood",
        "headline": "基准测试 intake",
        "text": "这是一次基准测试演练，无需行动。",
        "area": {"type": "Circle", "center": center, "radius_m": 100.0},
        "exercise": true,
    })
}

/// Posts alerts from `connections` tasks for `seconds`; returns alerts/s, latencies (ms)
/// of the accepted ones, and the number of errors.
async fn post_alerts(
    args: &IntakeArgs,
    client: &reqwest::Client,
    base: &str,
    recipients: usize,
) -> Result<(f64, Vec<f64>, usize)> {
    let url = Arc::new(format!("{base}/v1/alerts"));
    let start = now();
    let end = start + Duration::from_secs_f64(args.seconds);
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut n = c;
            while now() < end {
                let body = alert_body(recipients, n);
                n += 1;
                let sent = now();
                let resp = client
                    .post(url.as_str())
                    .bearer_auth(TOKEN)
                    .json(&body)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let ok = r.bytes().await.is_ok();
                        if ok {
                            lat.push(sent.elapsed().as_secs_f64() * 1e3);
                        } else {
                            errors += 1;
                        }
                    }
                    Ok(r) => {
                        errors += 1;
                        if errors == 1 {
                            let status = r.status();
                            let text = r.text().await.unwrap_or_default();
                            eprintln!("intake: alert refused: {status} {text}");
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("intake: alert failed: {e}");
                        }
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await?;
        all.extend(lat);
        errors += e;
    }
    let took = start.elapsed().as_secs_f64();
    Ok((all.len() as f64 / took, all, errors))
}

/// Nearest-rank percentile of latencies in ms.
fn percentile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v.get(rank - 1).copied().unwrap_or(0.0)
}

/// One alert to the crowd, then every reply injected, as fast as the modems take them
/// (`pace` `None`) or at `pace` replies a second; returns acks/s, latencies (ms) and how
/// many acks were counted.
async fn ack_storm(
    args: &IntakeArgs,
    client: &reqwest::Client,
    base: &str,
    sims: &[SimHandle],
    pace: Option<f64>,
) -> Result<(f64, Vec<f64>, usize)> {
    let body = json!({
        "grade": "yellow",
        "kind": "flood",
        "headline": "基准测试 ack storm",
        "text": "这是一次基准测试演练，请回复确认。",
        "area": {"type": "Circle", "center": CROWD_AT, "radius_m": 100.0},
        "exercise": true,
    });
    let resp = client
        .post(format!("{base}/v1/alerts"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .context("POST the ack-storm alert")?;
    if resp.status().as_u16() != 202 {
        bail!("the ack-storm alert was refused: {}", resp.text().await?);
    }
    let accepted: Value = resp.json().await.context("the ack-storm alert's answer")?;
    let id = accepted["id"].as_str().context("no alert id")?.to_owned();
    let deliveries: Value = client
        .get(format!("{base}/v1/alerts/{id}/deliveries"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .context("GET deliveries")?
        .json()
        .await
        .context("GET deliveries body")?;
    let mut codes: Vec<(String, String)> = Vec::new();
    for d in deliveries.as_array().context("deliveries is not a list")? {
        let (Some(person), Some(code)) = (d["person"].as_str(), d["code"].as_str()) else {
            continue;
        };
        if person.starts_with('C') {
            codes.push((person.to_owned(), format!("1 {code}")));
        }
    }
    if codes.len() != args.acks {
        bail!(
            "the crowd alert reached {} of {} people",
            codes.len(),
            args.acks
        );
    }

    // Follow the committed events before the first reply goes in.
    // Its own client: a client-wide timeout would cut the stream.
    let mut events = reqwest::Client::new()
        .get(format!("{base}/v1/events"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    let injected: Arc<std::sync::Mutex<HashMap<String, Instant>>> =
        Arc::new(std::sync::Mutex::new(HashMap::with_capacity(codes.len())));
    // A modem stores at most 255 messages and frees a slot only once the reply is
    // committed and released; beyond that a real SMSC holds the message and retries. The
    // injector keeps at most STORAGE_WINDOW replies outstanding per modem.
    let slots: Arc<Vec<tokio::sync::Semaphore>> = Arc::new(
        (0..sims.len())
            .map(|_| tokio::sync::Semaphore::new(STORAGE_WINDOW))
            .collect(),
    );
    let start = now();
    // One injector per modem, as each modem's SMSC holds and retries on its own: a modem
    // whose storage window is full does not hold back the replies for the others.
    let mut per_modem: Vec<Vec<(usize, String, String)>> = vec![Vec::new(); sims.len()];
    for (n, (person, text)) in codes.into_iter().enumerate() {
        let m = person_number(&person) % sims.len();
        if let Some(list) = per_modem.get_mut(m) {
            list.push((n, person, text));
        }
    }
    let mut injectors = Vec::new();
    for (m, replies) in per_modem.into_iter().enumerate() {
        let injected = injected.clone();
        let slots = slots.clone();
        let Some(sim) = sims.get(m).map(|s| s.commands.clone()) else {
            continue;
        };
        injectors.push(tokio::spawn(async move {
            let Some(slot) = slots.get(m) else { return };
            for (n, person, text) in replies {
                // Paced: the reply is due at its place in the schedule, and its latency
                // counts from then, whatever held it back.
                let due = pace.map(|rate| start + Duration::from_secs_f64(n as f64 / rate));
                if let Some(due) = due {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
                }
                match slot.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => break,
                }
                if let Ok(mut map) = injected.lock() {
                    map.insert(person.clone(), due.unwrap_or_else(now));
                }
                let cmd = SimCommand::DeliverSms {
                    from: crowd_phone(person_number(&person)),
                    text,
                };
                if sim.send(cmd).await.is_err() {
                    break;
                }
            }
        }));
    }

    let mut latencies = Vec::with_capacity(args.acks);
    let mut buf = String::new();
    let mut last = start;
    let deadline = start + PATIENCE;
    while latencies.len() < args.acks && now() < deadline {
        let chunk = tokio::time::timeout(Duration::from_secs(20), events.chunk())
            .await
            .context("no event for 20 s")?
            .with_context(|| format!("reading events after {} acks", latencies.len()))?;
        let Some(chunk) = chunk else {
            bail!("the event stream ended");
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if event.contains("event: lagged") {
                eprintln!("intake: the event stream lagged; some acks were not seen");
            }
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            // Parse only what may be a reply: the bench shares the two cores with the
            // daemon, and parsing every delivery event would tax the figure it measures.
            if !data.contains("reply") {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            if v["kind"] != "reply" || v["data"]["verdict"]["verdict"] != "ack" {
                continue;
            }
            let Some(person) = v["data"]["verdict"]["person"].as_str() else {
                continue;
            };
            let at = now();
            let sent = injected.lock().ok().and_then(|m| m.get(person).copied());
            if let Some(slot) = slots.get(person_number(person) % slots.len().max(1)) {
                slot.add_permits(1);
            }
            if let Some(sent) = sent {
                latencies.push(at.duration_since(sent).as_secs_f64() * 1e3);
                last = at;
            }
        }
    }
    for injector in injectors {
        injector.abort();
    }
    let took = last.duration_since(start).as_secs_f64();
    let counted = latencies.len();
    let rate = if took > 0.0 {
        counted as f64 / took
    } else {
        0.0
    };
    Ok((rate, latencies, counted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn benchmark_people_resolve_to_exactly_whom_each_alert_means() {
        let dir = crate::sms::scratch_dir("intake-test").unwrap();
        write_directory(&dir, 300).unwrap();
        let (d, rejected) = tocsin_core::directory::load_from_dir_with(&dir, "86").unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(rejected.is_empty(), "{rejected:?}");
        let area = |v: Value| -> Vec<tocsin_core::area::AreaSpec> {
            vec![serde_json::from_value(v["area"].clone()).unwrap()]
        };
        let one = d.resolve(&area(alert_body(1, 7))).unwrap();
        assert_eq!(one.person_count(), 1);
        assert_eq!(one.located[0].as_str(), "S0007");
        assert_eq!(
            d.resolve(&area(alert_body(100, 0))).unwrap().person_count(),
            100
        );
        let crowd = json!({"area": {"type": "Circle", "center": CROWD_AT, "radius_m": 100.0}});
        assert_eq!(d.resolve(&area(crowd)).unwrap().person_count(), 300);
    }
}
