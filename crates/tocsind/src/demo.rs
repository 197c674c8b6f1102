//! `tocsind demo`: the whole gateway against simulated GSM modems, with no hardware.
//!
//! The simulators play modems *and* the people behind them: each phone in the synthetic
//! district answers the way people do — most reply with their code after a while, some
//! late, some with a wrong code, some from another phone, some never. The real modem
//! driver talks to them over real pseudo-terminals; the router, the store and the API are
//! the production ones.

use crate::config::{AckConfig, ApiSection, Config, DeviceConfig, DirectoryConfig, NodeConfig};
use crate::daemon;
use crate::report;
use anyhow::Context;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use tocsin_api::{Gateway, NewAlert};
use tocsin_at_modem::sim::{PhoneScript, ReplyBehaviour, SimConfig};
use tocsin_core::area::AreaSpec;
use tocsin_core::directory::load_from_dir;
use tocsin_core::{Address, Bearer, Grade, Role};
use tocsin_router::{AlertState, DeliveryState};

/// Options of `tocsind demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// How many times faster than real time the gateway and the simulated network run.
    #[arg(long, default_value_t = 20.0)]
    speed: f64,
    /// Print the report and exit instead of serving the API on.
    #[arg(long)]
    until_done: bool,
    /// Where the API listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// The demo district (areas.geojson, people.csv, valley.geojson).
    #[arg(long)]
    district: Option<PathBuf>,
    /// Simulated GSM modems in the pool.
    #[arg(long, default_value_t = 6)]
    modems: usize,
    /// SMS per minute each modem may send (the send budget).
    #[arg(long, default_value_t = 8.0)]
    per_minute: f64,
    /// Seed for the simulated people's behaviour.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where the log goes (a fresh temporary folder by default).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn find_district(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = arg {
        return Ok(p);
    }
    let candidates = [
        PathBuf::from("configs/district"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/district"),
    ];
    candidates
        .into_iter()
        .find(|p| p.join("people.csv").exists())
        .context("cannot find configs/district; run from the repository or pass --district")
}

/// How one simulated person answers, drawn once per person from the seed.
fn behaviour(role: Role, rng: &mut impl Rng) -> ReplyBehaviour {
    let x: f64 = rng.random();
    let reply = |min_secs, max_secs| ReplyBehaviour::Reply { min_secs, max_secs };
    match role {
        Role::Resident => ReplyBehaviour::Never,
        Role::TownOfficial | Role::DistrictOfficial => {
            if x < 0.9 {
                reply(30.0, 240.0)
            } else {
                ReplyBehaviour::Never
            }
        }
        _ => {
            if x < 0.70 {
                reply(15.0, 200.0)
            } else if x < 0.78 {
                reply(330.0, 600.0) // answers after the 5-minute deadline: late
            } else if x < 0.83 {
                ReplyBehaviour::WrongCode {
                    min_secs: 20.0,
                    max_secs: 90.0,
                }
            } else if x < 0.86 {
                ReplyBehaviour::FromOther {
                    number: "+8619912340000".into(),
                    min_secs: 20.0,
                    max_secs: 90.0,
                }
            } else {
                ReplyBehaviour::Never
            }
        }
    }
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let district = find_district(args.district)?;
    let (directory, _) =
        load_from_dir(&district).with_context(|| format!("loading {}", district.display()))?;
    let valley_text = std::fs::read_to_string(district.join("valley.geojson"))
        .context("reading valley.geojson")?;
    let valley = valley_area(&valley_text)?;

    // The people behind the phones.
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut phones = Vec::new();
    for p in directory.people() {
        let b = behaviour(p.role, &mut rng);
        for a in &p.addresses {
            if let Address::Phone(n) = a {
                phones.push(PhoneScript {
                    number: n.as_str().to_owned(),
                    behaviour: b.clone(),
                });
            }
        }
    }
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("tocsin-demo-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(data_dir.join("tocsin.db"));
    std::fs::create_dir_all(&data_dir)?;

    let mut devices = BTreeMap::new();
    let mut sims = Vec::new();
    let sims_cancel = tokio_util::sync::CancellationToken::new();
    for i in 0..args.modems.max(1) {
        let sim_cfg = SimConfig {
            phones: phones.clone(),
            default_script: ReplyBehaviour::Never,
            ..SimConfig::default()
        };
        let link = data_dir.join(format!("modem-{}", i + 1));
        let sim = tocsin_at_modem::pty::spawn_sim(
            link,
            sim_cfg,
            args.seed.wrapping_add(i as u64),
            args.speed,
            sims_cancel.child_token(),
        )
        .context("starting a modem simulator on a pseudo-terminal")?;
        let path = sim.path.to_string_lossy().into_owned();
        let mut modem = tocsin_at_modem::config::ModemConfig::new(path);
        modem.per_minute = args.per_minute;
        devices.insert(format!("modem-{}", i + 1), DeviceConfig::AtModem(modem));
        sims.push(sim);
    }

    let token: String = {
        let mut r = rand::rngs::StdRng::from_os_rng();
        (0..24)
            .map(|_| char::from(b"abcdefghijkmnpqrstuvwxyz23456789"[r.random_range(0..32)]))
            .collect()
    };
    let cfg = Config {
        node: NodeConfig {
            name: "demo".into(),
            data_dir: data_dir.clone(),
            durability: "full".into(),
            clock_speed: args.speed,
        },
        directory: DirectoryConfig {
            path: district.clone(),
            default_country: "86".into(),
        },
        ack: AckConfig {
            key: format!("demo-secret-{token}"),
        },
        api: ApiSection {
            listen: args.listen.clone(),
            tokens: vec![tocsin_api::ApiToken {
                name: "demo-operator".into(),
                token: token.clone(),
                role: tocsin_api::Role::Issuer,
            }],
            ..ApiSection::default()
        },
        devices,
        policies: tocsin_router::Policies::default(),
    };
    let running = daemon::start(cfg).await?;
    println!(
        "Tocsin demo — SYNTHETIC district: {} people, {} named areas",
        directory.people().len(),
        directory.areas().len()
    );
    println!(
        "  {} simulated GSM modems on pseudo-terminals, clock ×{}",
        args.modems,
        running.clock.speed()
    );
    println!("  API http://{}  token {}", running.api_addr, token);
    println!("  log {}", data_dir.join("tocsin.db").display());

    let alert = NewAlert {
        grade: Grade::Red,
        kind: "flood".into(),
        headline: "山洪红色预警".into(),
        text: "沟道上游强降雨，山洪即将到达，请立即组织沿河群众转移到安全地带".into(),
        area: valley,
        exercise: false,
    };
    let preview = running
        .handle
        .preview(alert.clone())
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    println!(
        "preview: {} people ({} responsible), predicted {:.0} s to first-attempt everyone",
        preview.people, preview.responsible, preview.seconds_to_first_attempt_all
    );
    let accepted = running
        .handle
        .submit(alert, "demo-operator")
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    println!(
        "issued red flood alert {} for the valley: {} people\n",
        accepted.id, accepted.people
    );

    let started = running.clock.now();
    let mut drawn = 0;
    let summary = loop {
        let s = running
            .handle
            .alert(&accepted.id)
            .await
            .context("the alert vanished")?;
        let deliveries = running
            .handle
            .deliveries(&accepted.id, None)
            .await
            .unwrap_or_default();
        drawn = draw_progress(&s, &deliveries, running.clock.now().since(started), drawn);
        if s.state != AlertState::Active {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let deliveries = running
        .handle
        .deliveries(&accepted.id, None)
        .await
        .unwrap_or_default();
    println!("\n{}", report::render(&summary, &deliveries));
    if !args.until_done {
        println!(
            "API still up on http://{} (token {}); Ctrl-C to stop.",
            running.api_addr, token
        );
        daemon::wait_for_signal(&running.shutdown).await;
    }
    let result = daemon::stop(running).await;
    sims_cancel.cancel();
    drop(sims);
    result
}

fn valley_area(text: &str) -> anyhow::Result<Vec<AreaSpec>> {
    let v: serde_json::Value = serde_json::from_str(text).context("valley.geojson is not JSON")?;
    let geometry = match v["type"].as_str() {
        Some("FeatureCollection") => v["features"][0]["geometry"].clone(),
        Some("Feature") => v["geometry"].clone(),
        _ => v,
    };
    let mut g = geometry;
    if let Some(o) = g.as_object_mut() {
        o.retain(|k, _| k == "type" || k == "coordinates");
    }
    Ok(vec![
        serde_json::from_value(g).context("valley.geojson geometry")?,
    ])
}

/// Redraws the progress block in place; returns how many lines it drew.
fn draw_progress(
    s: &tocsin_router::AlertSummary,
    deliveries: &[tocsin_router::DeliveryView],
    elapsed: Duration,
    previous_lines: usize,
) -> usize {
    let total = s.counts.targets.max(1) as usize;
    let mut per_bearer: BTreeMap<Bearer, (usize, usize)> = BTreeMap::new();
    for d in deliveries {
        let mut seen: BTreeMap<Bearer, bool> = BTreeMap::new();
        for a in &d.attempts {
            let delivered = a.outcome.starts_with("delivered");
            let e = seen.entry(a.bearer).or_default();
            *e |= delivered;
        }
        for (b, delivered) in seen {
            let e = per_bearer.entry(b).or_default();
            e.0 += 1;
            e.1 += usize::from(delivered);
        }
    }
    let get = |st: DeliveryState| s.counts.by_state.get(&st).copied().unwrap_or(0) as usize;
    let mut lines = Vec::new();
    let t = elapsed.as_secs();
    lines.push(format!(
        "{} [{}]  t+{:02}:{:02} (gateway clock)  targets {}",
        s.alert.headline,
        s.alert.grade,
        t / 60,
        t % 60,
        s.counts.targets
    ));
    for (b, (attempted, delivered)) in &per_bearer {
        lines.push(format!(
            "  {:<8} {}  sent {:>4}/{}  delivered {:>4}",
            b.as_str(),
            bar(*attempted, total),
            attempted,
            total,
            delivered
        ));
    }
    let acked = get(DeliveryState::Acknowledged);
    lines.push(format!(
        "  {:<8} {}  acked {:>4} (late {})  escalated {}  confirmed {}  unreached {}  rejected replies {}",
        "叫应",
        bar(acked, total),
        acked,
        s.counts.late,
        s.counts.escalated,
        get(DeliveryState::Confirmed),
        get(DeliveryState::Unreached),
        s.counts.rejected_replies
    ));
    let mut out = std::io::stdout().lock();
    if std::io::IsTerminal::is_terminal(&out) {
        // Redraw the block in place.
        if previous_lines > 0 {
            let _ = write!(out, "\x1b[{previous_lines}A");
        }
        for l in &lines {
            let _ = writeln!(out, "\x1b[2K{l}");
        }
        let _ = out.flush();
        lines.len()
    } else {
        // A log or a pipe: one line per gateway minute, no escape codes.
        let minute = (t / 60) as usize + 1;
        if let Some(last) = lines.last().filter(|_| minute != previous_lines) {
            let _ = writeln!(out, "t+{:02}:{:02} {}", t / 60, t % 60, last.trim_start());
        }
        minute
    }
}

fn bar(n: usize, total: usize) -> String {
    const WIDTH: usize = 30;
    let filled = (n * WIDTH).checked_div(total).unwrap_or(0).min(WIDTH);
    format!("[{}{}]", "█".repeat(filled), "░".repeat(WIDTH - filled))
}
