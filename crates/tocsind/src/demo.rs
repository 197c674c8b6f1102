//! `tocsind demo`: the whole gateway against simulated GSM modems, with no hardware.
//!
//! The simulators play modems *and* the people behind them: each phone in the synthetic
//! district answers the way people do — most reply with their code after a while, some
//! late, some with a wrong code, some from another phone, some never. The real modem
//! driver talks to them over real pseudo-terminals; the router, the store and the API are
//! the production ones. People registered in the warning app get a signed push from the
//! real webhook driver to the simulated app backend on 127.0.0.1, and answer it there.

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

/// How one simulated person answers, drawn once per person from the seed. The same
/// person behaves the same way on every bearer they carry: someone who never answers an
/// SMS does not pick up the call or reply from their BeiDou card either.
#[derive(Clone, Debug, PartialEq)]
enum Conduct {
    /// Not expected to answer (residents): some pick up a call and listen.
    Resident { listens: bool },
    /// Answers in time; `presses` says whether they press 1 when called (otherwise they
    /// listen and answer by message), `bare` whether a BeiDou reply is a bare `1`.
    Prompt { presses: bool, bare: bool },
    /// Answers after the 5-minute deadline (listens to the call, does not press).
    Late,
    /// Replies with a wrong code (listens to the call, does not press).
    WrongCode,
    /// Replies from someone else's phone or card (busy on the other phone when called).
    FromOther,
    /// Never answers anything.
    Never,
}

fn conduct(role: Role, rng: &mut impl Rng) -> Conduct {
    let x: f64 = rng.random();
    let y: f64 = rng.random();
    match role {
        Role::Resident => Conduct::Resident { listens: y < 0.3 },
        Role::TownOfficial | Role::DistrictOfficial => {
            if x < 0.9 {
                Conduct::Prompt {
                    presses: y < 0.5,
                    bare: y < 0.25,
                }
            } else {
                Conduct::Never
            }
        }
        _ => {
            if x < 0.70 {
                Conduct::Prompt {
                    presses: y < 0.45,
                    bare: y < 0.7,
                }
            } else if x < 0.78 {
                Conduct::Late
            } else if x < 0.83 {
                Conduct::WrongCode
            } else if x < 0.86 {
                Conduct::FromOther
            } else {
                Conduct::Never
            }
        }
    }
}

/// The person's SMS behaviour.
fn sms_behaviour(c: &Conduct) -> ReplyBehaviour {
    let reply = |min_secs, max_secs| ReplyBehaviour::Reply { min_secs, max_secs };
    match c {
        Conduct::Resident { .. } | Conduct::Never => ReplyBehaviour::Never,
        Conduct::Prompt { .. } => reply(15.0, 200.0),
        Conduct::Late => reply(330.0, 600.0),
        Conduct::WrongCode => ReplyBehaviour::WrongCode {
            min_secs: 20.0,
            max_secs: 90.0,
        },
        Conduct::FromOther => ReplyBehaviour::FromOther {
            number: "+8619912340000".into(),
            min_secs: 20.0,
            max_secs: 90.0,
        },
    }
}

/// The person's BeiDou card behaviour (delays in simulated seconds).
fn beidou_behaviour(c: &Conduct) -> tocsin_beidou::sim::ReplyBehaviour {
    use tocsin_beidou::sim::ReplyBehaviour as B;
    match c {
        Conduct::Resident { .. } | Conduct::Never => B::Never,
        Conduct::Prompt { bare: true, .. } => B::ReplyOne {
            min_secs: 20.0,
            max_secs: 150.0,
        },
        Conduct::Prompt { bare: false, .. } => B::ReplyCode {
            min_secs: 20.0,
            max_secs: 150.0,
        },
        Conduct::Late => B::ReplyCode {
            min_secs: 330.0,
            max_secs: 600.0,
        },
        Conduct::WrongCode => B::Text {
            text: "1 ZZZZ".into(),
            min_secs: 20.0,
            max_secs: 90.0,
        },
        Conduct::FromOther => B::FromOther {
            card: "9912345".into(),
            min_secs: 20.0,
            max_secs: 90.0,
        },
    }
}

/// The person's mesh node behaviour.
fn mesh_behaviour(c: &Conduct) -> tocsin_meshtastic::sim::ReplyBehaviour {
    use tocsin_meshtastic::sim::ReplyBehaviour as M;
    match c {
        Conduct::Prompt { .. } => M::Reply {
            min_secs: 20.0,
            max_secs: 150.0,
        },
        Conduct::Late => M::Reply {
            min_secs: 330.0,
            max_secs: 600.0,
        },
        Conduct::WrongCode => M::Text {
            text: "1 ZZZZ".into(),
            min_secs: 20.0,
            max_secs: 90.0,
        },
        _ => M::Never,
    }
}

/// The person's phone when the gateway calls; gateway seconds are turned into real time
/// because the SIP far end (like the RTP it receives) runs in real time.
fn call_behaviour(c: &Conduct, speed: f64, rng: &mut impl Rng) -> tocsin_sip::sim::Behaviour {
    let secs = |gateway_secs: f64| Duration::from_secs_f64(gateway_secs / speed);
    let answer = Some(secs(rng.random_range(5.0..25.0)));
    let listen = tocsin_sip::sim::Behaviour {
        reject: None,
        answer_after: answer,
        press: None,
        hangup_after: None,
    };
    match c {
        Conduct::Prompt { presses: true, .. } => tocsin_sip::sim::Behaviour {
            press: Some(('1', secs(rng.random_range(10.0..40.0)))),
            ..listen
        },
        Conduct::Prompt { presses: false, .. }
        | Conduct::Late
        | Conduct::WrongCode
        | Conduct::Resident { listens: true } => listen,
        Conduct::FromOther => tocsin_sip::sim::Behaviour {
            reject: Some(486),
            answer_after: Some(secs(3.0)),
            ..listen
        },
        Conduct::Resident { listens: false } | Conduct::Never => tocsin_sip::sim::Behaviour {
            answer_after: None,
            ..listen
        },
    }
}

/// The person's warning app, as the simulated backend plays it: most prompt people answer
/// the push in the app (a signed callback with the code, or a tap on the ack link, a few
/// by the push's token) while some leave it to their SMS; late people answer late, people
/// who reply with a wrong code type it in the app too; everyone else reads it and answers
/// nothing. `speed` turns gateway seconds into the backend's real time. Drawn from `rng`,
/// a stream of its own, so the app changes nobody's SMS, call or radio behaviour.
fn app_behaviour(c: &Conduct, speed: f64, rng: &mut impl Rng) -> tocsin_webhook::sim::Behaviour {
    use tocsin_webhook::sim::{Behaviour as A, Via};
    let after = |gateway_secs: f64| (gateway_secs * 1000.0 / speed.max(0.001)) as u64;
    let x: f64 = rng.random();
    let delay: f64 = rng.random();
    let via = if x < 0.15 {
        Via::Token
    } else if x < 0.45 {
        Via::Link
    } else {
        Via::Callback
    };
    match c {
        Conduct::Prompt { .. } if x < 0.8 => A::Reply {
            after_ms: after(10.0 + delay * 140.0),
            text: None,
            via,
        },
        Conduct::Late => A::Reply {
            after_ms: after(330.0 + delay * 270.0),
            text: None,
            via: Via::Callback,
        },
        Conduct::WrongCode => A::Reply {
            after_ms: after(20.0 + delay * 70.0),
            text: Some("1 ZZZZ".into()),
            via: Via::Callback,
        },
        _ => A::Ignore,
    }
}

/// The user part the SIP driver dials for a number (national form for Chinese numbers,
/// the driver's default dial plan).
fn dialled(number: &str) -> String {
    number
        .strip_prefix("+86")
        .map(str::to_owned)
        .unwrap_or_else(|| format!("00{}", number.trim_start_matches('+')))
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let district = find_district(args.district.clone())?;
    let (directory, _) =
        load_from_dir(&district).with_context(|| format!("loading {}", district.display()))?;
    let valley_text = std::fs::read_to_string(district.join("valley.geojson"))
        .context("reading valley.geojson")?;
    let valley = valley_area(&valley_text)?;

    // The field kit's valley: the first village in the alert's area whose head has only
    // phones. Its cell network is down: the district's SMS and calls reach nobody there,
    // and only the kit (BeiDou card 0242407, its own modem in the village) gets through.
    let kit_village = kit_village(&directory, &valley);
    let kit_people = match &kit_village {
        Some(v) => crate::uplink::served(&directory, std::slice::from_ref(v))
            .map_err(|e| anyhow::anyhow!(e))?,
        None => Default::default(),
    };
    let mut kit_phones = Vec::new();

    // The people behind the phones, cards, radios and the field kit.
    let speed = args.speed;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut phones = Vec::new();
    let mut cards = Vec::new();
    let mut nodes = Vec::new();
    let mut callees = Vec::new();
    let mut subscribers = std::collections::HashMap::new();
    let mut app_rng = rand::rngs::StdRng::seed_from_u64(args.seed ^ APP_SEED);
    let mut kit: Option<(String, String)> = None;
    for p in directory.people() {
        let c = conduct(p.role, &mut rng);
        // The crew lead carrying the SBD kit is out in the field beyond the cell network
        // and the card's coverage: only the kit's uplink answers for them.
        let c = if p.addresses.iter().any(|a| matches!(a, Address::SbdImei(_))) {
            Conduct::Never
        } else {
            c
        };
        // In the kit's valley people answer the kit's modem as they would have answered
        // the district's; the district's own messages never reach them.
        let c = if kit_people.contains(&p.id) {
            for a in &p.addresses {
                if let Address::Phone(n) = a {
                    kit_phones.push(PhoneScript {
                        number: n.as_str().to_owned(),
                        behaviour: sms_behaviour(&c),
                    });
                }
            }
            Conduct::Never
        } else {
            c
        };
        for a in &p.addresses {
            match a {
                Address::Phone(n) => {
                    phones.push(PhoneScript {
                        number: n.as_str().to_owned(),
                        behaviour: sms_behaviour(&c),
                    });
                    callees.push((dialled(n.as_str()), call_behaviour(&c, speed, &mut rng)));
                }
                Address::BeidouCard(card) => cards.push(tocsin_beidou::sim::CardScript {
                    card: card.clone(),
                    behaviour: beidou_behaviour(&c),
                }),
                Address::MeshNode(num) => nodes.push(tocsin_meshtastic::sim::NodeScript {
                    num: *num,
                    long_name: p.name.clone(),
                    short_name: p.name.chars().take(2).collect(),
                    hops: 1 + (num % 3),
                    loss: 0.0,
                    nak: None,
                    behaviour: mesh_behaviour(&c),
                    position: p.location.map(|[lon, lat]| (lat, lon)),
                    heard_ago_secs: 600,
                }),
                Address::SbdImei(imei) if kit.is_none() => {
                    kit = Some((imei.clone(), p.id.as_str().to_owned()));
                }
                Address::App(id) => {
                    subscribers.insert(id.clone(), app_behaviour(&c, speed, &mut app_rng));
                }
                _ => {}
            }
        }
    }
    // One radio of the mesh is out of reach: every text to it comes back NAKed
    // (no route), so the router moves that lead on to the next bearer.
    if let Some(n) = nodes.first_mut() {
        n.nak = Some(NAK_NO_ROUTE);
    }
    let data_dir = match args.data_dir.clone() {
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
            speed,
            sims_cancel.child_token(),
        )
        .context("starting a modem simulator on a pseudo-terminal")?;
        let path = sim.path.to_string_lossy().into_owned();
        let mut modem = tocsin_at_modem::config::ModemConfig::new(path);
        modem.per_minute = args.per_minute;
        devices.insert(format!("modem-{}", i + 1), DeviceConfig::AtModem(modem));
        sims.push(sim);
    }
    let speakers = speaker_devices(&directory, &valley, args.seed, &sims_cancel, &mut devices)
        .await
        .context("starting the simulated loudspeakers")?;
    let app_users = subscribers.len();
    let app = app_device(subscribers, args.seed, &sims_cancel, &mut devices)
        .await
        .context("starting the simulated app backend")?;
    let bearers = offgrid_devices(
        &data_dir,
        OffGridPeople {
            cards,
            nodes,
            callees,
            kit,
        },
        args.seed,
        speed,
        &sims_cancel,
        &mut devices,
    )
    .await?;

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
        policies: demo_policies(),
        kits: kit_village
            .iter()
            .map(|v| {
                (
                    v.to_string(),
                    crate::config::KitConfig {
                        device: "beidou-1".into(),
                        address: KIT_CARD.into(),
                        areas: vec![v.to_string()],
                        max_bytes: None,
                    },
                )
            })
            .collect(),
        uplink: None,
        speech: tocsin_voice::SpeechConfig::default(),
        checkins: crate::config::CheckinsConfig::default(),
        mesh: crate::config::MeshSection::default(),
        cap: tocsin_cap::CapPolicy::default(),
    };
    // The kit's node starts first: it is out in the valley, waiting for the district.
    let kit = match &kit_village {
        Some(v) => Some(
            start_kit(
                &data_dir,
                &district,
                &directory,
                &kit_people,
                v,
                kit_phones,
                &bearers.kit_beidou,
                &args,
                &sims_cancel,
            )
            .await
            .context("starting the field kit's node")?,
        ),
        None => None,
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
    println!(
        "  off-grid: 2 BeiDou terminals (BDS-2, BDS-3) with the satellite network, 1 Meshtastic radio, \
         1 Iridium 9603 for field kit F01, SIP trunk to 127.0.0.1 (calls play in real time)"
    );
    println!(
        "  app: webhook device app-1 pushing to the simulated app backend {} ({app_users} subscribers)",
        app.url
    );
    if let (Some(v), Some(k)) = (&kit_village, &kit) {
        println!(
            "  field kit for {v} ({} people, cell network down): its own tocsind node with a modem and \
             BeiDou card {KIT_CARD}, API http://{}",
            kit_people.len(),
            k.running.api_addr
        );
    }
    println!("  API http://{}  token {}", running.api_addr, token);
    println!("  log {}", data_dir.join("tocsin.db").display());

    let alert = NewAlert {
        grade: Grade::Red,
        kind: "flood".into(),
        headline: "山洪红色预警".into(),
        text: "沟道上游强降雨，山洪即将到达，请立即组织沿河群众转移到安全地带".into(),
        area: valley,
        exercise: false,
        reference: None,
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
    // Render the spoken warning before the first call rings, off the async threads.
    let spoken = format!(
        "【{}预警】{}：{}",
        alert.grade.chinese(),
        alert.headline,
        alert.text
    );
    let prompts = running.prompts.clone();
    tokio::task::spawn_blocking(move || prompts.warm(&spoken))
        .await
        .context("rendering the spoken warning")?;
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
    // Calls play in real time: wait (a bounded while) for the calls still in progress, so
    // the report knows who listened.
    let mut deliveries;
    let mut waited = 0;
    loop {
        deliveries = running
            .handle
            .deliveries(&accepted.id, None)
            .await
            .unwrap_or_default();
        let in_call = calls_in_progress(&deliveries);
        if in_call == 0 || waited >= 240 {
            break;
        }
        if waited % 8 == 0 {
            println!("waiting for {in_call} answered call(s) still playing the warning…");
        }
        waited += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("\n{}", report::render(&summary, &deliveries));
    let loudspeakers = running
        .handle
        .speakers(&accepted.id)
        .await
        .unwrap_or_default();
    println!("{}", report::render_speakers(&loudspeakers));
    let relays = running
        .handle
        .relays(&accepted.id)
        .await
        .unwrap_or_default();
    print!("{}", report::render_kits(&relays));
    if let Some(k) = &kit {
        for a in k.running.handle.alerts().await {
            let d = k
                .running
                .handle
                .deliveries(&a.alert.id, None)
                .await
                .unwrap_or_default();
            let acked = d
                .iter()
                .filter(|x| x.state == DeliveryState::Acknowledged)
                .count();
            println!(
                "  on the kit's node: alert {} ({}), {} people, {acked} acked on the kit's modem\n",
                a.alert.id,
                format!("{:?}", a.state).to_lowercase(),
                d.len()
            );
        }
    }
    println!("{}", app.seen.summary(&deliveries));
    if !args.until_done {
        println!(
            "API still up on http://{} (token {}); Ctrl-C to stop.",
            running.api_addr, token
        );
        daemon::wait_for_signal(&running.shutdown).await;
    }
    let result = daemon::stop(running).await;
    if let Some(k) = kit {
        daemon::stop(k.running).await?;
        drop(k.modem);
    }
    sims_cancel.cancel();
    drop(sims);
    drop(bearers);
    drop(speakers);
    drop(app);
    result
}

/// The default policies, with the field crew's SBD kit used alongside their phones: the
/// kit is the crew's own uplink, so it is not left waiting behind their BeiDou card. And
/// a red warning goes to the app too, with the SMS and the call, for those registered in
/// it: a push costs no airtime, and many answer the app before they read an SMS (by
/// default the app is red's last fallback, which a demo whose SMS always goes out never
/// reaches). Residents get the push too: their records need no ack, and the router keeps
/// one open past its 5 minutes while the resident's SMS still waits behind the leads' (the
/// push's `sent` is no delivery report), so the SMS is not cancelled with the record.
fn demo_policies() -> tocsin_router::Policies {
    let mut p = tocsin_router::Policies::default();
    p.red.parallel.push(Bearer::App);
    p.red.fallback.retain(|b| *b != Bearer::App);
    p.red.roles.insert(
        Role::FieldCrew,
        tocsin_router::RoleOverride {
            parallel: Some(vec![Bearer::Sms, Bearer::Voice, Bearer::Sbd]),
            ..tocsin_router::RoleOverride::default()
        },
    );
    p
}

/// Voice calls answered and still playing the warning (the SIP driver reports `sent` when
/// a call is answered). Calls still queued or ringing for records already closed are not
/// waited for: they end with the demo.
fn calls_in_progress(deliveries: &[tocsin_router::DeliveryView]) -> usize {
    deliveries
        .iter()
        .flat_map(|d| &d.attempts)
        .filter(|a| a.bearer == Bearer::Voice && a.outcome == "sent")
        .count()
}

/// Meshtastic routing error 1 (NO_ROUTE): the radio found no way to the node.
const NAK_NO_ROUTE: i32 = 1;

/// Mixed into the seed for the app users' own random stream.
const APP_SEED: u64 = 0x0a99_0a99;

/// The simulated app backend while the demo runs.
struct AppSim {
    /// Its push endpoint.
    url: String,
    /// What it saw, counted as its reports come in.
    seen: std::sync::Arc<AppSeen>,
}

/// What the simulated app backend saw: pushes it accepted, and answers the gateway took.
#[derive(Debug, Default)]
struct AppSeen {
    /// Pushes answered 200.
    pushes: std::sync::atomic::AtomicUsize,
    /// Subscribers who got at least one push.
    pushed: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Pushes refused (bad signature, injected fault).
    refused: std::sync::atomic::AtomicUsize,
    /// Answers (callback, token or link) the gateway answered 200.
    answered: std::sync::atomic::AtomicUsize,
    /// Answers the gateway refused or never answered.
    unanswered: std::sync::atomic::AtomicUsize,
}

impl AppSeen {
    fn record(&self, r: &tocsin_webhook::sim::Report) {
        use std::sync::atomic::Ordering::Relaxed;
        use tocsin_webhook::sim::Report;
        match r {
            Report::Pushed {
                subscriber, status, ..
            } if (200..300).contains(status) => {
                self.pushes.fetch_add(1, Relaxed);
                if let (Some(s), Ok(mut set)) = (subscriber, self.pushed.lock()) {
                    set.insert(s.clone());
                }
            }
            Report::Pushed { .. } => {
                self.refused.fetch_add(1, Relaxed);
            }
            Report::Answered { status: 200, .. } => {
                self.answered.fetch_add(1, Relaxed);
            }
            Report::Answered { .. } => {
                self.unanswered.fetch_add(1, Relaxed);
            }
        }
    }

    /// One line for the end of the demo: whom the gateway pushed and whose acks it
    /// counted from the app (from the alert's records), then what the backend saw. The
    /// backend takes more answers than acks are counted: a person answers every reminder
    /// push, supervisors answer door-knock tasks, some answered by SMS first, some typed a
    /// wrong code.
    fn summary(&self, deliveries: &[tocsin_router::DeliveryView]) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let pushed: std::collections::BTreeSet<&Address> = deliveries
            .iter()
            .flat_map(|d| &d.attempts)
            .filter(|a| a.bearer == Bearer::App)
            .map(|a| &a.to)
            .collect();
        let devices = report::device_bearers(deliveries);
        let acked = deliveries
            .iter()
            .filter(|d| report::ack_bearer(d, &devices) == Some(Bearer::App))
            .count();
        let subscribers = self.pushed.lock().map(|s| s.len()).unwrap_or(0);
        format!(
            "app: {} people pushed, {acked} acks counted from the app; the backend accepted {} pushes \
             to {subscribers} subscribers ({} refused) and the gateway took {} of their answers ({} not)",
            pushed.len(),
            self.pushes.load(Relaxed),
            self.refused.load(Relaxed),
            self.answered.load(Relaxed),
            self.unanswered.load(Relaxed),
        )
    }
}

/// Starts the simulated app backend on 127.0.0.1 with `subscribers` scripted, and a
/// `webhook` device `app-1` pushing to it (its callback listener on a port the system
/// picks: the pushes carry its address). The backend's reports are counted as they come.
async fn app_device(
    subscribers: std::collections::HashMap<String, tocsin_webhook::sim::Behaviour>,
    seed: u64,
    cancel: &tokio_util::sync::CancellationToken,
    devices: &mut BTreeMap<String, DeviceConfig>,
) -> anyhow::Result<AppSim> {
    let key: String = {
        let mut r = rand::rngs::StdRng::from_os_rng();
        (0..32)
            .map(|_| char::from(b"abcdefghijkmnpqrstuvwxyz23456789"[r.random_range(0..32)]))
            .collect()
    };
    let secret = tocsin_webhook::sign::Secret::new(key.as_bytes().to_vec());
    let mut sim = tocsin_webhook::sim::SimConfig::new(secret);
    sim.people = subscribers;
    sim.seed = seed;
    let mut backend = tocsin_webhook::backend::spawn_backend(
        ([127, 0, 0, 1], 0).into(),
        sim,
        cancel.child_token(),
    )
    .await?;
    let url = backend.url.clone();
    let mut cfg = tocsin_webhook::config::WebhookConfig::new(url.clone(), key);
    cfg.callback_bind = "127.0.0.1:0".into();
    cfg.validate()?;
    devices.insert("app-1".into(), DeviceConfig::Webhook(cfg));
    let seen = std::sync::Arc::new(AppSeen::default());
    let counter = seen.clone();
    let stop = cancel.child_token();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                r = backend.reports.recv() => match r {
                    Some(r) => counter.record(&r),
                    None => return,
                },
            }
        }
    });
    Ok(AppSim { url, seen })
}

/// The people the off-grid simulators play.
struct OffGridPeople {
    /// Every BeiDou card in the district.
    cards: Vec<tocsin_beidou::sim::CardScript>,
    /// Every mesh radio in the district.
    nodes: Vec<tocsin_meshtastic::sim::NodeScript>,
    /// Every phone, by the user part the SIP driver dials.
    callees: Vec<(String, tocsin_sip::sim::Behaviour)>,
    /// The field kit's SBD IMEI and the person it answers for.
    kit: Option<(String, String)>,
}

/// Simulators of the off-grid bearers (kept alive until the demo ends).
struct OffGridSims {
    /// The field kit's BeiDou terminal (for the kit's node).
    kit_beidou: PathBuf,
    _beidou: tocsin_beidou::pty::SimHandle,
    _mesh: tocsin_meshtastic::runner::SimHandle,
    _sbd: Option<tocsin_iridium_sbd::pty::SimHandle>,
    _far_end: tocsin_sip::udp::FarEndHandle,
}

/// Starts the BeiDou terminals, the mesh radio, the field kit's SBD modem and the SIP far
/// end, and adds a device for each to `devices`.
///
/// The simulators run on simulated time (`speed` × real time), but the drivers pace their
/// sends in real time from what the devices report; so the simulated cards report a
/// service period shrunk by `speed`, and the router's budgets (on the gateway's clock)
/// are given the real-world figures.
async fn offgrid_devices(
    dir: &std::path::Path,
    people: OffGridPeople,
    seed: u64,
    speed: f64,
    cancel: &tokio_util::sync::CancellationToken,
    devices: &mut BTreeMap<String, DeviceConfig>,
) -> anyhow::Result<OffGridSims> {
    // BeiDou: one BDS-2 (2.1 sentences) and one BDS-3 terminal on one satellite network.
    let period = ((60.0 / speed).ceil() as u32).max(1);
    let mut bds2 = tocsin_beidou::sim::TerminalConfig::new("0242286");
    bds2.frequency_secs = period;
    let mut bds3 = tocsin_beidou::sim::TerminalConfig::new("4207733");
    bds3.dialect = tocsin_beidou::sim::SimDialect::Bds3;
    bds3.frequency_secs = period;
    // The field kit's terminal, on the same network (its node opens it, not this one).
    let mut kit = tocsin_beidou::sim::TerminalConfig::new(KIT_CARD);
    kit.frequency_secs = period;
    let links = [dir.join("beidou-1"), dir.join("beidou-2")];
    let kit_beidou = dir.join("kit-beidou");
    let beidou = tocsin_beidou::pty::spawn_sim(
        links.iter().cloned().chain([kit_beidou.clone()]).collect(),
        vec![bds2, bds3, kit],
        tocsin_beidou::sim::SimConfig {
            cards: people.cards,
            default_script: tocsin_beidou::sim::ReplyBehaviour::Never,
            ..tocsin_beidou::sim::SimConfig::default()
        },
        seed,
        speed,
        cancel.child_token(),
    )
    .context("starting the BeiDou simulator")?;
    for (i, link) in links.iter().enumerate() {
        let mut b = tocsin_beidou::config::BeidouConfig::new(link.to_string_lossy());
        // One send per card per minute on the gateway's clock.
        b.assumed_interval_secs = 60;
        devices.insert(format!("beidou-{}", i + 1), DeviceConfig::Beidou(b));
    }

    // Meshtastic: one radio with every lead's node behind it.
    let mesh = tocsin_meshtastic::runner::spawn_pty_sim(
        dir.join("mesh-1"),
        tocsin_meshtastic::sim::SimConfig {
            nodes: people.nodes,
            ..tocsin_meshtastic::sim::SimConfig::default()
        },
        seed,
        speed,
        cancel.child_token(),
    )
    .context("starting the Meshtastic simulator")?;
    let mut m = tocsin_meshtastic::config::MeshConfig::serial(mesh.address());
    // The driver paces in real time: 4 texts per gateway minute.
    m.per_minute = 4.0 * speed;
    m.burst = 4;
    m.ack_timeout_secs = ((180.0 / speed).ceil() as u64).max(2);
    devices.insert("mesh-1".into(), DeviceConfig::Meshtastic(m));

    // Iridium SBD: the district's 9603, talking to field kit F01's modem.
    let sbd = match people.kit {
        Some((imei, person)) => {
            let sim = tocsin_iridium_sbd::pty::spawn_sim(
                dir.join("sbd-1"),
                tocsin_iridium_sbd::sim::SimConfig {
                    kit_imei: imei,
                    kit_person: person,
                    reply: tocsin_iridium_sbd::sim::KitReply::Ack {
                        min_secs: 20.0,
                        max_secs: 120.0,
                    },
                    ..tocsin_iridium_sbd::sim::SimConfig::default()
                },
                seed,
                speed,
                cancel.child_token(),
            )
            .context("starting the SBD simulator")?;
            let mut c = tocsin_iridium_sbd::config::SbdConfig::new(sim.path.to_string_lossy());
            c.mailbox_interval_secs = ((300.0 / speed).ceil() as u64).max(1);
            c.retry_secs = 1;
            c.retry_max_secs = 2;
            devices.insert("sbd-1".into(), DeviceConfig::IridiumSbd(c));
            Some(sim)
        }
        None => None,
    };

    // SIP: a trunk whose far end is every phone in the district.
    let far_end = tocsin_sip::udp::spawn_far_end(
        "127.0.0.1:0".parse()?,
        tocsin_sip::sim::SimConfig {
            default: tocsin_sip::sim::Behaviour {
                answer_after: None,
                press: None,
                ..tocsin_sip::sim::Behaviour::default()
            },
            phones: people.callees,
            seed,
            ..tocsin_sip::sim::SimConfig::default()
        },
        cancel.child_token(),
    )
    .await
    .context("starting the simulated SIP trunk")?;
    let mut sip = tocsin_sip::config::SipConfig::new(far_end.sip.to_string());
    sip.bind = "127.0.0.1:0".into();
    sip.rtp_port_base = 0;
    // Calls play their prompt in real time however fast the demo's clock runs, so the
    // trunk carries many at once and gives up ringing after 30 s of gateway time.
    sip.concurrent_calls = 48;
    sip.ring_timeout_secs = ((30.0 / speed).ceil() as u64).max(1);
    sip.digit_wait_secs = 2;
    devices.insert("sip-1".into(), DeviceConfig::Sip(sip));

    Ok(OffGridSims {
        kit_beidou,
        _beidou: beidou,
        _mesh: mesh,
        _sbd: sbd,
        _far_end: far_end,
    })
}

/// The field kit's BeiDou card.
const KIT_CARD: &str = "0242407";

/// The village the demo's field kit serves: the first village in the alert's area whose
/// head has phones only (no BeiDou card, mesh radio or SBD kit of their own; the app rides
/// on the same cell network as the phones, so it does not count as a way around it).
fn kit_village(
    directory: &tocsin_core::directory::Directory,
    valley: &[AreaSpec],
) -> Option<tocsin_core::AreaId> {
    let regions: Vec<_> = valley
        .iter()
        .filter_map(|a| a.to_region_unnamed().ok())
        .collect();
    directory.people().iter().find_map(|p| {
        let inside = p
            .location
            .is_some_and(|pos| regions.iter().any(|r| r.contains(pos)));
        let phones_only = p
            .addresses
            .iter()
            .all(|a| matches!(a, Address::Phone(_) | Address::App(_)));
        (p.role == Role::VillageHead && inside && phones_only)
            .then(|| p.areas.first().cloned())
            .flatten()
    })
}

/// The field kit's node while the demo runs.
struct KitNode {
    running: daemon::Running,
    modem: tocsin_at_modem::pty::SimHandle,
}

/// Starts the field kit's own gateway: its directory (the village's people, by the
/// district's ids), its modem in the village and its BeiDou terminal, and `[uplink]` to
/// the district's card.
#[allow(clippy::too_many_arguments, reason = "the demo's wiring, in one place")]
async fn start_kit(
    data_dir: &std::path::Path,
    district: &std::path::Path,
    directory: &tocsin_core::directory::Directory,
    people: &std::collections::HashSet<tocsin_core::PersonId>,
    village: &tocsin_core::AreaId,
    phones: Vec<PhoneScript>,
    beidou: &std::path::Path,
    args: &DemoArgs,
    cancel: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<KitNode> {
    let root = data_dir.join("kit");
    let dir = root.join("district");
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(district.join("areas.geojson"), dir.join("areas.geojson"))?;
    let mut csv =
        String::from("id,name,role,supervisor,areas,lon,lat,town,phones,beidou,mesh,sbd,app\n");
    for p in directory.people().iter().filter(|p| people.contains(&p.id)) {
        let join = |v: Vec<String>| v.join(";");
        let (lon, lat) = p
            .location
            .map(|[lon, lat]| (lon.to_string(), lat.to_string()))
            .unwrap_or_default();
        let phones = p
            .addresses
            .iter()
            .filter_map(|a| match a {
                Address::Phone(n) => Some(n.as_str().to_owned()),
                _ => None,
            })
            .collect();
        csv.push_str(&format!(
            "{},{},{},,{},{lon},{lat},{},{},,,,\n",
            p.id,
            p.name,
            p.role.as_str(),
            join(p.areas.iter().map(|a| a.to_string()).collect()),
            p.town,
            join(phones),
        ));
    }
    std::fs::write(dir.join("people.csv"), csv)?;
    let modem = tocsin_at_modem::pty::spawn_sim(
        root.join("modem-1"),
        SimConfig {
            phones,
            default_script: ReplyBehaviour::Never,
            ..SimConfig::default()
        },
        args.seed.wrapping_add(100),
        args.speed,
        cancel.child_token(),
    )
    .context("starting the kit's modem simulator")?;
    let mut devices = BTreeMap::new();
    let mut m = tocsin_at_modem::config::ModemConfig::new(modem.path.to_string_lossy());
    m.per_minute = args.per_minute;
    devices.insert("modem-1".to_owned(), DeviceConfig::AtModem(m));
    let mut b = tocsin_beidou::config::BeidouConfig::new(beidou.to_string_lossy());
    b.assumed_interval_secs = 60;
    devices.insert("bd-1".to_owned(), DeviceConfig::Beidou(b));
    let cfg = Config {
        node: NodeConfig {
            name: "demo-kit".into(),
            data_dir: root.join("data"),
            durability: "full".into(),
            clock_speed: args.speed,
        },
        directory: DirectoryConfig {
            path: dir,
            default_country: "86".into(),
        },
        ack: AckConfig {
            key: "demo-field-kit-secret-0000".into(),
        },
        api: ApiSection {
            listen: "127.0.0.1:0".into(),
            ..ApiSection::default()
        },
        devices,
        policies: tocsin_router::Policies::default(),
        kits: BTreeMap::new(),
        uplink: Some(crate::config::UplinkConfig {
            device: "bd-1".into(),
            district: "0242286".into(),
            areas: vec![village.to_string()],
            max_bytes: None,
        }),
        speech: tocsin_voice::SpeechConfig::default(),
        checkins: crate::config::CheckinsConfig::default(),
        mesh: crate::config::MeshSection::default(),
        cap: tocsin_cap::CapPolicy::default(),
    };
    let _ = std::fs::remove_dir_all(root.join("data"));
    let running = daemon::start(cfg).await?;
    Ok(KitNode { running, modem })
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
    // Per bearer: people attempted on it, delivered on it, and whose counted ack came
    // from it. Every bearer the demo runs has a line, used yet or not.
    let mut per_bearer: BTreeMap<Bearer, (usize, usize, usize)> = report::REPORTED_BEARERS
        .into_iter()
        .map(|b| (b, (0, 0, 0)))
        .collect();
    let devices = report::device_bearers(deliveries);
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
        if let Some(b) = report::ack_bearer(d, &devices) {
            per_bearer.entry(b).or_default().2 += 1;
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
    for (b, (attempted, delivered, acked)) in &per_bearer {
        let bar_total = per_bearer_total(*b, total, *attempted);
        lines.push(format!(
            "  {:<8} {}  sent {:>4}  delivered {:>4}  acked {:>4}",
            b.as_str(),
            // BeiDou and SBD report no delivery: an ack from the bearer shows it arrived.
            bar((*delivered).max(*acked), bar_total),
            attempted,
            delivered,
            acked
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
        // A log or a pipe: the block once per gateway minute, no escape codes.
        let minute = (t / 60) as usize + 1;
        if minute != previous_lines {
            for l in lines.iter().skip(1) {
                let _ = writeln!(out, "t+{:02}:{:02} {}", t / 60, t % 60, l.trim_start());
            }
        }
        minute
    }
}

/// What a bearer's bar is measured against: everyone for SMS and voice (nearly everyone
/// has a phone), the people tried on it for the off-grid bearers.
fn per_bearer_total(b: Bearer, everyone: usize, attempted: usize) -> usize {
    match b {
        Bearer::Sms | Bearer::Voice => everyone,
        _ => attempted,
    }
}

fn bar(n: usize, total: usize) -> String {
    const WIDTH: usize = 30;
    let filled = (n * WIDTH).checked_div(total).unwrap_or(0).min(WIDTH);
    format!("[{}{}]", "█".repeat(filled), "░".repeat(WIDTH - filled))
}

/// Starts one simulated IP loudspeaker (a UDP receiver that sends RTCP receiver reports)
/// for every speaker the valley alert will sound, and one speaker device per town with a
/// group per village, as `configs/district/speakers.csv` names them. Speakers elsewhere in
/// the district are not simulated: the demo's alert never addresses them.
async fn speaker_devices(
    directory: &tocsin_core::directory::Directory,
    area: &[AreaSpec],
    seed: u64,
    cancel: &tokio_util::sync::CancellationToken,
    devices: &mut BTreeMap<String, DeviceConfig>,
) -> anyhow::Result<Vec<tocsin_speaker::udp::SimSpeakerHandle>> {
    let resolution = directory.resolve(area).context("resolving the valley")?;
    let mut groups: BTreeMap<String, Vec<tocsin_speaker::config::GroupConfig>> = BTreeMap::new();
    let mut sims = Vec::new();
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    for (i, id) in resolution.speakers.iter().enumerate() {
        let Some(speaker) = directory.speaker(id) else {
            continue;
        };
        let sim = tocsin_speaker::udp::spawn_sim_speaker(
            any,
            tocsin_speaker::sim::SimConfig::default(),
            seed.wrapping_add(i as u64),
            None,
            cancel.child_token(),
        )
        .await?;
        groups.entry(speaker.device.0.clone()).or_default().push(
            tocsin_speaker::config::GroupConfig {
                name: speaker.group.clone(),
                rtp: sim.rtp,
                rtcp: None,
                speakers: vec![sim.rtcp.to_string()],
            },
        );
        sims.push(sim);
    }
    for (device, groups) in groups {
        let mut cfg = tocsin_speaker::config::SpeakerConfig::new(groups[0].rtp);
        cfg.groups = groups;
        cfg.bind = any;
        cfg.rtcp_bind = any;
        cfg.repeat = 2;
        cfg.rtcp_interval_secs = 1;
        devices.insert(device, DeviceConfig::Speaker(cfg));
    }
    Ok(sims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_webhook::sim::{Behaviour as App, Report, Via};

    fn district() -> tocsin_core::directory::Directory {
        let dir = find_district(None).unwrap();
        load_from_dir(&dir).unwrap().0
    }

    #[test]
    fn app_users_answer_as_they_answer_everything_else_in_the_backends_real_time() {
        let speed = 20.0;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let prompt = Conduct::Prompt {
            presses: false,
            bare: false,
        };
        let (mut replies, mut ignored, mut vias) = (0, 0, Vec::new());
        for _ in 0..200 {
            match app_behaviour(&prompt, speed, &mut rng) {
                App::Reply {
                    after_ms,
                    text,
                    via,
                } => {
                    // 10–150 gateway seconds are 0.5–7.5 s for the backend at ×20.
                    assert!((500..=7500).contains(&after_ms), "{after_ms}");
                    assert_eq!(text, None, "the code comes from the push");
                    if !vias.contains(&via) {
                        vias.push(via);
                    }
                    replies += 1;
                }
                App::Ignore => ignored += 1,
            }
        }
        // Most answer in the app, some leave it to their SMS; by callback, link and token.
        assert!((140..=180).contains(&replies), "{replies}");
        assert_eq!(replies + ignored, 200);
        assert_eq!(vias.len(), 3, "{vias:?}");

        let App::Reply { after_ms, via, .. } = app_behaviour(&Conduct::Late, speed, &mut rng)
        else {
            panic!("late people answer the app late");
        };
        assert!(
            after_ms >= 16_500,
            "{after_ms}: after the 5-minute deadline"
        );
        assert_eq!(via, Via::Callback);
        let App::Reply { text, .. } = app_behaviour(&Conduct::WrongCode, speed, &mut rng) else {
            panic!("a wrong code is typed in the app too");
        };
        assert_eq!(text.as_deref(), Some("1 ZZZZ"));
        for c in [
            Conduct::Never,
            Conduct::FromOther,
            Conduct::Resident { listens: true },
        ] {
            assert_eq!(app_behaviour(&c, speed, &mut rng), App::Ignore, "{c:?}");
        }
    }

    #[test]
    fn red_pushes_the_app_with_the_sms_and_call_residents_included() {
        let p = demo_policies();
        assert_eq!(
            p.red.parallel,
            vec![Bearer::Sms, Bearer::Voice, Bearer::App]
        );
        assert!(!p.red.fallback.contains(&Bearer::App));
        let resident = &p.red.roles[&Role::Resident];
        assert_eq!(
            resident.parallel, None,
            "residents take the grade's bearers"
        );
        // The resident override still needs no ack and never escalates.
        assert_eq!(resident.ack_required, Some(false));
        assert_eq!(resident.escalate, Some(false));
        assert_eq!(
            p.red.roles[&Role::FieldCrew].parallel.as_deref(),
            Some(&[Bearer::Sms, Bearer::Voice, Bearer::Sbd][..])
        );
        // The other grades keep their defaults.
        let d = tocsin_router::Policies::default();
        assert_eq!((p.orange, p.yellow, p.blue), (d.orange, d.yellow, d.blue));
    }

    #[test]
    fn the_field_kit_serves_the_same_village_now_that_leads_have_the_app() {
        let d = district();
        let text =
            std::fs::read_to_string(find_district(None).unwrap().join("valley.geojson")).unwrap();
        let valley = valley_area(&text).unwrap();
        assert_eq!(
            kit_village(&d, &valley).map(|v| v.to_string()).as_deref(),
            Some("T05-V01")
        );
        // And the valley alert has app users among the people it must wake.
        let r = d.resolve(&valley).unwrap();
        let app_users = r
            .responsible
            .iter()
            .filter_map(|(p, _)| d.person(p))
            .filter(|p| p.addresses.iter().any(|a| matches!(a, Address::App(_))))
            .count();
        assert!(app_users >= 30, "{app_users}");
    }

    #[test]
    fn the_app_line_counts_pushes_and_answers_the_backend_saw() {
        let seen = AppSeen::default();
        let pushed = |s: &str, status| Report::Pushed {
            subscriber: Some(s.into()),
            text: Some("【红色预警】… 回复 1 K7XT 确认".into()),
            status,
            note: None,
        };
        let answered = |status| Report::Answered {
            subscriber: "syn-app-0001".into(),
            text: "link".into(),
            status,
            forged: false,
        };
        for r in [
            pushed("syn-app-0001", 200),
            pushed("syn-app-0001", 200),
            pushed("syn-app-0002", 200),
            pushed("syn-app-0003", 503),
            answered(200),
            answered(401),
        ] {
            seen.record(&r);
        }
        assert_eq!(
            seen.summary(&[]),
            "app: 0 people pushed, 0 acks counted from the app; the backend accepted 3 pushes to 2 \
             subscribers (1 refused) and the gateway took 1 of their answers (1 not)"
        );
    }
}
