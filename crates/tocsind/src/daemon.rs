//! Starting and stopping the gateway: config → directory → store → restore → drivers →
//! engine → API. Used by `tocsind run` and by the demo.

use crate::clock::Clock;
use crate::config::{Config, DeviceConfig};
use crate::gateway::{EVENT_BROADCAST, Engine, GatewayHandle, Logged, REQUEST_QUEUE, Request};
use crate::speech::CallPrompts;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tocsin_channel::{DeviceEvent, DriverHandle, EVENT_QUEUE};
use tocsin_core::directory::load_from_dir_with;
use tocsin_core::{AckKey, DeviceId};
use tocsin_router::{DeviceInfo, Record, Router, RouterConfig};
use tocsin_store::{Store, StoreOptions};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running gateway.
pub struct Running {
    /// Talk to the engine as the API does.
    pub handle: GatewayHandle,
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// Cancel to stop everything.
    pub shutdown: CancellationToken,
    /// The engine task; its error means the store failed.
    pub engine: JoinHandle<anyhow::Result<()>>,
    /// The API server task.
    pub api: JoinHandle<()>,
    /// The gateway's clock.
    pub clock: Clock,
    /// Records restored from the log at start.
    pub restored: usize,
    /// This node's name.
    pub node: String,
    /// What voice calls say (shared with the SIP drivers).
    pub prompts: Arc<CallPrompts>,
}

/// Validates a config file and its directory, printing what an operator needs to know.
pub fn check(path: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    let (dir, rejected) = load_from_dir_with(&cfg.directory.path, &cfg.directory.default_country)
        .with_context(|| format!("directory {}", cfg.directory.path.display()))?;
    for r in &rejected {
        println!("people.csv line {}: rejected: {}", r.line, r.reason);
    }
    let (crews, _, problems) =
        crate::checkin::watch_crews(&cfg.checkins, &dir, tocsin_core::Timestamp::ZERO);
    for p in &problems {
        println!("check-ins: {p}");
    }
    // An override naming nobody is a config mistake; a crew without a supervisor is the
    // directory's to fix and is only reported.
    if let Some(p) = problems.iter().find(|p| p.starts_with("checkins.")) {
        anyhow::bail!("{}: {p}", path.display());
    }
    check_cap(&cfg, &dir).with_context(|| path.display().to_string())?;
    if cfg.checkins.enabled && !crews.is_empty() {
        println!(
            "check-ins: {} field crew members watched over the mesh",
            crews.len()
        );
    }
    println!(
        "config ok: {} people, {} named areas, {} devices, {} API tokens",
        dir.people().len(),
        dir.areas().len(),
        cfg.devices.len(),
        cfg.api.tokens.len()
    );
    Ok(())
}

/// The CAP geocode table names only areas the directory has: a typo there would make
/// every upstream warning for that county fail at the worst moment.
pub(crate) fn check_cap(
    cfg: &Config,
    dir: &tocsin_core::directory::Directory,
) -> anyhow::Result<()> {
    for (code, areas) in &cfg.cap.geocodes {
        if areas.is_empty() {
            anyhow::bail!("cap.geocodes.{code}: names no area");
        }
        if let Some(a) = areas.iter().find(|a| dir.area(a).is_none()) {
            anyhow::bail!("cap.geocodes.{code}: the directory has no area {a}");
        }
    }
    Ok(())
}

/// Runs the gateway from a config file until Ctrl-C or SIGTERM.
pub async fn run_from_file(path: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    let running = start(cfg).await?;
    eprintln!(
        "tocsind: serving on http://{} (node {}, {} records restored)",
        running.api_addr, running.node, running.restored
    );
    wait_for_signal(&running.shutdown).await;
    stop(running).await
}

/// Waits for Ctrl-C, SIGTERM, or the token being cancelled elsewhere.
pub async fn wait_for_signal(shutdown: &CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        _ = shutdown.cancelled() => {}
    }
}

/// Stops the gateway: the engine finishes its batch and the store is flushed.
pub async fn stop(running: Running) -> anyhow::Result<()> {
    running.shutdown.cancel();
    let engine = running.engine.await.context("engine task")?;
    running.api.abort();
    engine
}

/// Starts every part of the gateway.
pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    let (directory, rejected) =
        load_from_dir_with(&cfg.directory.path, &cfg.directory.default_country).with_context(
            || {
                format!(
                    "loading the directory from {}",
                    cfg.directory.path.display()
                )
            },
        )?;
    for r in &rejected {
        tracing::warn!(line = r.line, reason = %r.reason, "people.csv row rejected");
    }
    check_cap(&cfg, &directory)?;
    let directory = Arc::new(directory);

    std::fs::create_dir_all(&cfg.node.data_dir)
        .with_context(|| format!("creating {}", cfg.node.data_dir.display()))?;
    let db = cfg.node.data_dir.join("tocsin.db");
    let mut opts = StoreOptions::default();
    if cfg.node.durability == "normal" {
        opts.durability = tocsin_store::Durability::Normal;
    }
    let store: Store<Logged> =
        Store::open(&db, opts).with_context(|| format!("opening {}", db.display()))?;
    let records = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.load_all())
            .await
            .context("loading the log")??
            .into_iter()
            .map(|l| l.0)
            .collect::<Vec<Record>>()
    };
    let restored = records.len();
    let last_at = records.iter().map(|r| r.at()).max();
    let clock = Clock::new(cfg.node.clock_speed, last_at);

    // Speech is set up before any driver: a missing synthesizer is not an error (calls
    // then play the attention tone), but the operator is told at start, not mid-campaign.
    let speech = {
        let speech_cfg = cfg.speech.clone();
        tokio::task::spawn_blocking(move || {
            tocsin_voice::Speech::from_config(&speech_cfg, Path::new(""))
        })
        .await
        .context("setting up speech")??
    };
    if let Some(notice) = speech.notice() {
        eprintln!("tocsind: {notice}");
        tracing::warn!(%notice, "speech degraded");
    }
    let speech = Arc::new(speech);
    let prompts = Arc::new(CallPrompts::new(speech.clone()));

    let shutdown = CancellationToken::new();
    let (event_tx, event_rx) = mpsc::channel::<DeviceEvent>(EVENT_QUEUE);
    let mut drivers: Vec<DriverHandle> = Vec::new();
    let mut infos = Vec::new();
    // Node tables of the mesh radios: crews check in through them.
    let mut mesh_nodes = Vec::new();
    for (name, dev) in &cfg.devices {
        let id = DeviceId(name.clone());
        let (events, cancel) = (event_tx.clone(), shutdown.child_token());
        // Both devices of a modem with voice name the modem as their line: the router
        // hands its SMS side nothing while a call is up on it.
        let mut line = None;
        let handle = match dev {
            // A modem with voice runs as two devices on one task: `NAME` for SMS and
            // `NAME-voice` for calls (SMS wait while a call is up).
            DeviceConfig::AtModem(m) if m.voice => {
                let pair = tocsin_at_modem::io::spawn_modem_pair(
                    id.clone(),
                    DeviceId(format!("{name}-voice")),
                    m.clone(),
                    Some(prompts.clone() as Arc<dyn tocsin_at_modem::voice::PromptSource>),
                    events,
                    cancel,
                );
                if let Some(voice) = pair.voice {
                    line = Some(name.clone());
                    infos.push(DeviceInfo {
                        id: voice.device.clone(),
                        caps: voice.caps.clone(),
                        line: Some(name.clone()),
                    });
                    drivers.push(voice);
                }
                pair.sms
            }
            DeviceConfig::AtModem(m) => {
                tocsin_at_modem::io::spawn_modem(id.clone(), m.clone(), events, cancel)
            }
            DeviceConfig::Beidou(b) => {
                tocsin_beidou::io::spawn_beidou(id.clone(), b.clone(), events, cancel)
            }
            DeviceConfig::IridiumSbd(b) => {
                tocsin_iridium_sbd::io::spawn_sbd(id.clone(), b.clone(), events, cancel)
            }
            DeviceConfig::Meshtastic(m) => {
                let mesh = tocsin_meshtastic::io::spawn_meshtastic_with_nodes(
                    id.clone(),
                    m.clone(),
                    events,
                    cancel,
                );
                mesh_nodes.push(mesh.nodes);
                mesh.driver
            }
            DeviceConfig::Speaker(c) => tocsin_speaker::io::spawn_speaker(
                id.clone(),
                c.clone(),
                speech.clone() as Arc<dyn tocsin_speaker::io::Renderer>,
                events,
                cancel,
            ),
            DeviceConfig::LocalAudio(c) => tocsin_speaker::local::io::spawn_local_audio(
                id.clone(),
                c.clone(),
                speech.clone() as Arc<dyn tocsin_speaker::io::Renderer>,
                sound_card(name),
                events,
                cancel,
            ),
            DeviceConfig::Webhook(c) => {
                tocsin_webhook::io::spawn_webhook(id.clone(), c.clone(), events, cancel)
            }
            DeviceConfig::Sip(c) => tocsin_sip::io::spawn_sip_with_prompts(
                id.clone(),
                c.clone(),
                Some(prompts.clone() as Arc<dyn tocsin_sip::prompt::PromptSource>),
                events,
                cancel,
            ),
        };
        infos.push(DeviceInfo {
            id,
            caps: handle.caps.clone(),
            line,
        });
        drivers.push(handle);
    }
    let router_config = RouterConfig {
        policies: cfg.policies.clone(),
        ack_key: AckKey::new(cfg.ack.key.as_bytes().to_vec()),
        devices: infos,
    };
    let router = Router::restore(router_config, records, clock.now())
        .context("restoring the 叫应 engine from the log")?;

    let (req_tx, req_rx) = mpsc::channel::<Request>(REQUEST_QUEUE);
    let (events, _) = broadcast::channel(EVENT_BROADCAST);
    let handle = GatewayHandle::new(req_tx, events.clone());
    let links = crate::uplink::Links::from_config(&cfg, &directory)?;
    for k in &links.kits {
        tracing::info!(kit = %k.name, device = %k.device, address = %k.address, people = k.people.len(), "field kit");
    }
    let mut engine = Engine::new(
        router,
        store.clone(),
        directory.clone(),
        drivers,
        clock,
        events,
    )
    .with_links(links);
    // The log's hash chain is checked in the background while the gateway serves: a
    // restart in an emergency must not wait for it. A break is logged loudly and shown in
    // the metrics (`tocsin_audit_chain_intact 0`); `tocsind audit` names the record.
    {
        let (store, audit) = (store.clone(), engine.audit_state());
        tokio::task::spawn_blocking(move || match store.verify() {
            Ok(r) if r.is_intact() => {
                audit.set(true);
                tracing::info!(records = r.records_verified, "log chain intact");
            }
            Ok(r) => {
                audit.set(false);
                if let Some(b) = &r.first_broken {
                    tracing::error!(record = b.seq, reason = ?b.reason, "the log's hash chain is broken: a record was edited, deleted or inserted outside the gateway");
                }
            }
            Err(e) => tracing::error!(error = %e, "the log's hash chain could not be checked"),
        });
    }
    // Every mesh radio's node table feeds the engine: last heard and hops of every node
    // (a stale node lets another off-grid bearer go first) and crews' check-ins.
    if !mesh_nodes.is_empty() {
        let (heard_tx, heard_rx) = mpsc::channel(crate::checkin::RADIO_HEARD_QUEUE);
        for nodes in mesh_nodes {
            tokio::spawn(crate::checkin::forward_radio_nodes(
                nodes,
                heard_tx.clone(),
                shutdown.child_token(),
            ));
        }
        engine = engine.with_mesh_nodes(
            crate::checkin::HeardNodes::new(std::time::Duration::from_secs(
                cfg.mesh.stale_after_secs,
            )),
            cfg.policies.clone(),
            heard_rx,
        );
        // Crews check in over the mesh; without a mesh radio they never could, so they
        // are not watched (a miss would only be the gateway's own deafness).
        if cfg.checkins.enabled {
            let (checkins, radios, problems) =
                crate::checkin::watch_crews(&cfg.checkins, &directory, clock.now());
            for p in &problems {
                eprintln!("tocsind: check-ins: {p}");
                tracing::warn!(problem = %p, "check-ins");
            }
            if !checkins.is_empty() {
                engine = engine.with_check_ins(checkins, radios, cfg.checkins.grade);
            }
        }
    }
    let engine_shutdown = shutdown.clone();
    let engine = tokio::spawn(async move {
        let result = engine.run(req_rx, event_rx, engine_shutdown.clone()).await;
        // Whatever stopped the engine stops the daemon; the store is flushed either way.
        engine_shutdown.cancel();
        let closed = store.close().await;
        result?;
        closed.context("closing the store")?;
        Ok(())
    });

    let listener = tokio::net::TcpListener::bind(&cfg.api.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.api.listen))?;
    let api_addr = listener.local_addr()?;
    let app = tocsin_api::app_with_cap_policy(
        Arc::new(handle.clone()),
        tocsin_api::ApiConfig {
            tokens: cfg.api.tokens.clone(),
            max_body_bytes: cfg.api.max_body_bytes,
        },
        cfg.cap.clone(),
    );
    let api_shutdown = shutdown.clone();
    let api = tokio::spawn(async move {
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(async move { api_shutdown.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "API server stopped");
        }
    });
    Ok(Running {
        handle,
        api_addr,
        shutdown,
        engine,
        api,
        clock,
        restored,
        node: cfg.node.name.clone(),
        prompts,
    })
}

/// The sound card a `local_audio` device plays on: the system's (rodio on ALSA) in a
/// build with the `audio-local` feature.
#[cfg(feature = "audio-local")]
fn sound_card(_device: &str) -> Arc<dyn tocsin_speaker::local::sink::SoundCard> {
    Arc::new(tocsin_speaker::local::alsa::AlsaCard)
}

/// Without the `audio-local` feature there is no sound card: the device says so at start
/// (here and as its health) and its sends fail as retryable, so the router reaches the
/// village another way.
#[cfg(not(feature = "audio-local"))]
fn sound_card(device: &str) -> Arc<dyn tocsin_speaker::local::sink::SoundCard> {
    let notice = format!(
        "device {device} (local_audio): {}",
        tocsin_speaker::local::sink::SinkError::NotBuilt
    );
    eprintln!("tocsind: {notice}");
    tracing::warn!(%notice, "no local loudspeaker output");
    Arc::new(tocsin_speaker::local::sink::NoSoundCard)
}
